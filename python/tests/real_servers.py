"""What the tests that run real servers (gunicorn, uWSGI, Celery) share: the
seeded users, the fake server's token lifetime, finding processes, driving
requests, counting the expiries due, and stopping a server whatever happened.

The fake server grants access tokens living ``LIFETIME_S``; ``refresh=True``
hands out only tokens valid for ``MARGIN_S`` more, so each token serves
``LIFETIME_S - MARGIN_S`` seconds and then expires (is refreshed).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Set

import pytest
from conftest import CLIENT_ID, CLIENT_SECRET, now_ms
from fake_zoho import FakeZoho

HERE = os.path.dirname(os.path.abspath(__file__))

#: What the fake server grants (expires_in), and what ``refresh=True``
#: wants left when it hands a token out: a token serves LIFETIME - MARGIN.
LIFETIME_S = 8
MARGIN_S = 6
USERS = ["ana@example.com", "bob@example.com"]


def missing(what: str) -> None:
    """Skips the calling test module, loudly; with CI=true, fails it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (CI=true: these tests must run)", pytrace=False)
    print(f"SKIPPED: {what}")
    pytest.skip(f"SKIPPED: {what}", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> Set[int]:
    """The live child processes of ``pid`` (a server's workers)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after it.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def tokenstore_bin() -> Optional[str]:
    """The ``tokenstore`` command: $TOKENSTORE_BIN (tests/python/run.sh
    builds it and sets it), else a debug or release build of this checkout,
    else one on PATH."""
    candidates = [os.environ.get("TOKENSTORE_BIN")]
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(HERE, "..", "..", "target")
    candidates += [os.path.join(target, profile, "tokenstore") for profile in ("debug", "release")]
    candidates.append(shutil.which("tokenstore"))
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    return None


def get(url: str, timeout: float = 20) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return json.load(answer)


def seed(db: str) -> None:
    """The users' records, with long-expired access tokens, saved through
    the SDK's store and closed again: no process of the test holds it."""
    from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
    from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature

    from tokenstore.zoho import Store

    with Store(db) as store:
        for i, user in enumerate(USERS):
            token = OAuthToken(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=f"1000.refresh.{i}",
                               access_token=f"1000.access.seed.{i}", user_signature=UserSignature(user))
            token.set_expires_in(str(now_ms() - 60_000))
            store.save_token(token)


def fake_zoho() -> FakeZoho:
    """The fake server (not started) knowing the seeded users' refresh
    tokens, its access tokens living ``LIFETIME_S``."""
    zoho = FakeZoho(expires_in=LIFETIME_S)
    zoho.add_client(CLIENT_ID, CLIENT_SECRET)
    for i, user in enumerate(USERS):
        zoho.add_refresh_token(CLIENT_ID, f"1000.refresh.{i}", user)
    return zoho


def app_env(db: str, zoho: FakeZoho, resources: str, **more: str) -> Dict[str, str]:
    """The environment ``gunicorn_app.py`` and ``celery_app.py`` read."""
    return dict(os.environ, TOKENS_DB=db, FAKE_ZOHO=zoho.base, ZOHO_USERS=",".join(USERS), SDK_RESOURCES=resources, **more)


def expiries_due(zoho: FakeZoho, ended: float) -> int:
    """How many times the users' tokens could expire: each refresh makes a
    token good for LIFETIME - MARGIN seconds, from a user's first refresh
    (at boot) to ``ended`` (time.monotonic())."""
    expiries = 0
    for i in range(len(USERS)):
        first = min(r.at for r in zoho.refreshes() if r.form.get("refresh_token") == f"1000.refresh.{i}")
        expiries += math.floor((ended - first) / (LIFETIME_S - MARGIN_S)) + 1
    return expiries


def refreshes_needed(zoho: FakeZoho, times: List[float]) -> int:
    """The fewest refreshes that serve calls at ``times`` (time.monotonic())
    for every user: from a user's first refresh, a token is handed out for
    LIFETIME - MARGIN seconds; the first call after that needs a new one.
    Where calls stall (pool processes starting on a loaded machine), fewer
    refreshes are due than the seconds driven would say."""
    needed = 0
    for i in range(len(USERS)):
        issued = min(r.at for r in zoho.refreshes() if r.form.get("refresh_token") == f"1000.refresh.{i}")
        needed += 1
        for at in sorted(times):
            if at > issued + (LIFETIME_S - MARGIN_S):
                issued = at
                needed += 1
    return needed


class Drive:
    """``threads`` threads sending ``GET /crm`` until stopped."""

    def __init__(self, base: str, threads: int) -> None:
        self.base = base
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.served = 0
        self.failures: List[str] = []
        self.slowest = 0.0
        self.served_by: Dict[int, int] = {}
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                body = get(self.base + "/crm")
                ok, why = True, None
            except urllib.error.HTTPError as e:
                ok, why = False, f"HTTP {e.code}: {e.read()[:400]!r}"
            except Exception as e:  # noqa: BLE001 - counted and reported
                ok, why = False, f"{type(e).__name__}: {e}"
            took = time.monotonic() - started
            with self.lock:
                self.slowest = max(self.slowest, took)
                if ok:
                    self.served += 1
                    self.served_by[body["pid"]] = self.served_by.get(body["pid"], 0) + 1
                else:
                    self.failures.append(f"{time.strftime('%H:%M:%S')} after {took:.2f} s: {why}")

    def __enter__(self) -> "Drive":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def whoami(base: str, tries: int) -> List[dict]:
    """What the workers say about the store, asked a few times (each answer
    comes from whichever worker accepts)."""
    return [get(base + "/whoami") for _ in range(tries)]


def owner_of(answers: List[dict]) -> int:
    owners = {a["owner_pid"] for a in answers}
    assert len(owners) == 1, f"the workers disagree about the owner: {answers}"
    return owners.pop()


def print_failures(failures: List[str]) -> None:
    for failure in failures[:20]:
        print("failed:", failure)
    if len(failures) > 20:
        print(f"... and {len(failures) - 20} more failures")


def stop(master: subprocess.Popen) -> None:
    """A server (started with ``start_new_session=True``) and all its
    workers stopped, whatever happened: SIGTERM, then SIGKILL to the whole
    process group."""
    if master.poll() is None:
        master.terminate()
        try:
            master.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(master.pid, signal.SIGKILL)  # any worker left behind
    except ProcessLookupError:
        pass
    if master.poll() is None:
        master.kill()
    master.wait(timeout=15)
