"""8 workers refreshing short-lived tokens through the real Zoho SDK, against
the fake Zoho server on 127.0.0.1: what each store loses or corrupts.

    python python/benches/shared_refresh.py [--seconds 10] [--workers 8] [--users 4]

* FileStore, 8 processes sharing one CSV file (what a gunicorn/Celery
  deployment of the SDK does by default);
* tokenstore's embedded store, 8 processes sharing it (the first to open it
  owns it and serves the others);
* tokenstore's embedded store, 8 threads in one process;
* tokenstore with postgres:// (8 processes), the SDK alone and with
  ``Store(db, refresh=True)`` (single-flight refresh across processes), when
  TOKENSTORE_BENCH_PG is set to an admin URL of a PostgreSQL server (a fresh
  database is made for each run with psql).

By default every access token lives 1 s, under the SDK's 5 s margin, so
every get_token refreshes and saves: the worst case for a store's writes.
With ``--lifetime 7`` a token is good for ~2 s after each refresh: the case
where N workers notice the same expiry at once (the SDK alone then refreshes
N times; ``refresh=True`` once).
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

CLIENT_ID, CLIENT_SECRET = "1000.BENCH", "bench-secret"


def users(n: int):
    return [f"user{i}@example.com" for i in range(n)]


def open_store(kind: str, where: str):
    if kind == "filestore":
        from zohocrmsdk.src.com.zoho.api.authenticator.store.file_store import FileStore

        return FileStore(where)
    from tokenstore.zoho import Store

    return Store(where, refresh=kind == "tokenstore-refresh")


def pg_database(admin_url: str) -> str:
    import subprocess
    import uuid

    name = "bench_" + uuid.uuid4().hex[:10]
    subprocess.run(["psql", admin_url, "-q", "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return admin_url.rsplit("/", 1)[0] + "/" + name


def seed(kind: str, where: str, n_users: int) -> None:
    from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
    from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature

    store = open_store(kind, where)
    for i, user in enumerate(users(n_users)):
        token = OAuthToken(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=f"1000.refresh.{i}",
                           access_token=f"1000.access.seed.{i}", user_signature=UserSignature(user))
        token.set_expires_in("1")  # long expired
        store.save_token(token)
    if hasattr(store, "close"):
        store.close()


def work(kind, where, base, seconds, n_users, results, store=None):
    """One worker: get_token for every user, round and round, for `seconds`."""
    import logging

    from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
    from zohocrmsdk.src.com.zoho.crm.api.dc.data_center import DataCenter
    from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer
    from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature

    calls, errors, swallowed = 0, Counter(), Counter()

    class Swallowed(logging.Handler):
        def emit(self, record):  # the SDK logs the save_token errors it swallows
            if record.levelno >= logging.ERROR:
                swallowed[str(record.args[0] if record.args else record.getMessage())[:60]] += 1

    logging.getLogger("SDKLogger").addHandler(Swallowed())
    try:
        if store is None:
            store = open_store(kind, where)
        env = DataCenter.Environment(base, base + "/oauth/v2/token", base)
        if Initializer.get_initializer() is None:
            Initializer.initialize(environment=env, token=OAuthToken(user_signature=UserSignature(users(1)[0])), store=store)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for user in users(n_users):
                calls += 1
                try:
                    OAuthToken(user_signature=UserSignature(user)).get_token()
                except Exception as e:  # noqa: BLE001 - counted and reported
                    errors[f"{type(e).__name__}: {str(e)[:70]}"] += 1
    except Exception as e:  # noqa: BLE001
        errors[f"at start: {type(e).__name__}: {str(e)[:90]}"] += 1
    results.put((calls, dict(errors), dict(swallowed)))


def check_filestore(path: str, n_users: int) -> dict:
    rows, bad = [], 0
    with open(path, newline="") as f:
        reader = list(csv.reader(f))
    header_ok = bool(reader) and reader[0][:2] == ["id", "user_name"]
    for row in reader[1:]:
        if len(row) != 10:
            bad += 1
            continue
        rows.append(row)
    per_user = Counter(r[1] for r in rows)
    return {
        "header intact": header_ok,
        "malformed rows": bad,
        "users with no row (token lost)": sum(1 for u in users(n_users) if per_user[u] == 0),
        "users with 2+ rows": sum(1 for u in users(n_users) if per_user[u] > 1),
        "rows": len(rows),
    }


def check_tokenstore(where: str, n_users: int) -> dict:
    import tokenstore

    with tokenstore.open(where) as store:
        tokens = store.all()
    per_user = Counter(t.user_name for t in tokens)
    return {
        "users with no record (token lost)": sum(1 for u in users(n_users) if per_user[u] == 0),
        "users with 2+ records": sum(1 for u in users(n_users) if per_user[u] > 1),
        "records": len(tokens),
    }


def run(label, kind, where, mode, workers, seconds, n_users, lifetime=1):
    from fake_zoho import FakeZoho

    seed(kind, where, n_users)
    with FakeZoho(expires_in=lifetime) as zoho:
        zoho.add_client(CLIENT_ID, CLIENT_SECRET)
        for i, user in enumerate(users(n_users)):
            zoho.add_refresh_token(CLIENT_ID, f"1000.refresh.{i}", user)
        if mode == "processes":
            ctx = multiprocessing.get_context("spawn")
            results = ctx.Queue()
            procs = [ctx.Process(target=work, args=(kind, where, zoho.base, seconds, n_users, results)) for _ in range(workers)]
            for p in procs:
                p.start()
            outcomes = [results.get(timeout=seconds * 10 + 120) for _ in procs]
            for p in procs:
                p.join()
        else:
            import queue

            results = queue.Queue()
            store = open_store(kind, where)
            threads = [threading.Thread(target=work, args=(kind, where, zoho.base, seconds, n_users, results, store)) for _ in range(workers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            outcomes = [results.get() for _ in threads]
            store.close()
        refreshes = len(zoho.refreshes())
    calls = sum(o[0] for o in outcomes)
    errors, swallowed = Counter(), Counter()
    for o in outcomes:
        errors.update(o[1])
        swallowed.update(o[2])
    state = check_filestore(where, n_users) if kind == "filestore" else check_tokenstore(where, n_users)
    print(f"\n## {label}")
    print(f"get_token calls: {calls}; refresh requests: {refreshes}")
    print(f"exceptions raised to the caller: {sum(errors.values())}")
    for msg, n in errors.most_common(6):
        print(f"    {n:6d} × {msg}")
    print(f"save errors the SDK swallowed (logged only): {sum(swallowed.values())}")
    for msg, n in swallowed.most_common(4):
        print(f"    {n:6d} × {msg}")
    print("store afterwards: " + "; ".join(f"{k}: {v}" for k, v in state.items()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--lifetime", type=int, default=1, help="seconds an access token lives (the SDK refreshes 5 s early)")
    parser.add_argument("--only-postgres", action="store_true")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    w, s, u, life = args.workers, args.seconds, args.users, args.lifetime
    pg = os.environ.get("TOKENSTORE_BENCH_PG")
    if pg:
        run(f"tokenstore postgres://, {w} processes, the SDK alone", "tokenstore", pg_database(pg), "processes", w, s, u, life)
        run(f"tokenstore postgres://, {w} processes, refresh=True", "tokenstore-refresh", pg_database(pg), "processes", w, s, u, life)
    if args.only_postgres:
        return
    run(f"FileStore, {w} processes", "filestore", os.path.join(tmp, "tokens.csv"), "processes", w, s, u, life)
    run(f"tokenstore embedded, {w} processes", "tokenstore", os.path.join(tmp, "ts-procs"), "processes", w, s, u, life)
    run(f"tokenstore embedded, {w} threads in one process", "tokenstore", os.path.join(tmp, "ts-threads"), "threads", w, s, u, life)


if __name__ == "__main__":
    main()
