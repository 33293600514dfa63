"""find_token latency through the Zoho SDK's store object at 10,000 tokens:
tokenstore.zoho.Store beside the SDK's FileStore, p50/p99.

    python python/benches/find_token_latency.py [--tokens 10000] [--lookups 2000]

Each lookup is what OAuthToken.get_token does without an id: a new
OAuthToken with the user signature, passed to store.find_token (building the
query object is outside the timed call). Users are picked at random.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import tempfile
import time

from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
from zohocrmsdk.src.com.zoho.api.authenticator.store.file_store import FileStore
from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature

import tokenstore
from tokenstore.zoho import Store

HEADER = ["id", "user_name", "client_id", "client_secret", "refresh_token", "access_token", "grant_token",
          "expiry_time", "redirect_url", "api_domain"]


def row(i: int):
    return [str(i + 1), f"user{i}@example.com", "1000.CLIENT", "secret", f"1000.refresh.{i}",
            f"1000.access.{i}", "", str(int(time.time() * 1000) + 3_600_000), "", "https://www.zohoapis.com"]


def percentile(samples, p):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def measure(store, n_tokens, lookups, seed=7):
    rng = random.Random(seed)
    samples = []
    for _ in range(lookups):
        query = OAuthToken(user_signature=UserSignature(f"user{rng.randrange(n_tokens)}@example.com"))
        start = time.perf_counter()
        found = store.find_token(query)
        samples.append(time.perf_counter() - start)
        assert found is query and query.get_access_token() is not None
    return samples


def report(label, samples):
    us = [s * 1e6 for s in samples]
    print(f"{label:34s} p50 {percentile(us, 50):10.1f} µs   p99 {percentile(us, 99):10.1f} µs   "
          f"mean {statistics.fmean(us):10.1f} µs   ({len(us)} lookups)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--lookups", type=int, default=2_000)
    parser.add_argument("--filestore-lookups", type=int, default=300, help="FileStore scans the whole file per lookup")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()

    # The FileStore CSV written directly in FileStore's own format (saving
    # 10,000 tokens through it rewrites the whole file each time).
    csv_path = os.path.join(tmp, "tokens.csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for i in range(args.tokens):
            writer.writerow(row(i))
    filestore = FileStore(csv_path)

    db = os.path.join(tmp, "tokens")
    started = time.perf_counter()
    with tokenstore.open(db) as plain:
        for i in range(args.tokens):
            r = row(i)
            plain.save(tokenstore.Token(user_name=r[1], client_id=r[2], client_secret=r[3], refresh_token=r[4],
                                        access_token=r[5], expiry_time=int(r[7]), api_domain=r[9]))
    load = time.perf_counter() - started
    print(f"{args.tokens} tokens; tokenstore loaded through save() in {load:.1f} s (durable: flushed per save)")

    with Store(db) as store:
        measure(store, args.tokens, 200)  # warm up
        report("tokenstore.zoho.Store.find_token", measure(store, args.tokens, args.lookups))
    measure(filestore, args.tokens, 5)
    report("FileStore.find_token", measure(filestore, args.tokens, args.filestore_lookups))


if __name__ == "__main__":
    main()
