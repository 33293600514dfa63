"""Real gunicorn (from PyPI), 4 sync workers, the real Zoho SDK on
``tokenstore.zoho.Store(dir, refresh=True)`` opened at import
(``gunicorn_app.py``), against the fake Zoho server on 127.0.0.1. Its
access tokens live 8 s; ``refresh=True`` hands out only tokens valid for 6 s
more, so each token serves 2 s and then expires (is refreshed).

Without and with ``--preload``, client threads send requests for 22 s while
workers are SIGKILLed (without ``--preload`` the first one killed is the
store's owner; with it the master owns the store and workers are its
clients). Every request is served except those in flight on a killed
worker; the fake server sees one refresh per expiry, not one per worker;
``tokenstore list`` beside the running app answers at once.

The figures (served, failed, refreshes, expiries) are printed, and listed
again at the end of the pytest run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Set

import pytest
from conftest import CLIENT_ID, CLIENT_SECRET, REPORT, now_ms
from fake_zoho import FakeZoho

HERE = os.path.dirname(os.path.abspath(__file__))

WORKERS = 4
CLIENT_THREADS = 4
DRIVE_S = 22.0
#: What the fake server grants (expires_in), and what ``refresh=True``
#: wants left when it hands a token out: a token serves LIFETIME - MARGIN.
LIFETIME_S = 8
MARGIN_S = 6
USERS = ["ana@example.com", "bob@example.com"]

try:
    from gunicorn.config import KNOWN_SETTINGS
except ImportError:
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("SKIPPED: gunicorn is not installed (tests/python/run.sh installs it)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> Set[int]:
    """The live child processes of ``pid`` (gunicorn's workers)."""
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


class Drive:
    """``CLIENT_THREADS`` threads sending ``GET /crm`` until stopped."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.served = 0
        self.failures: List[str] = []
        self.slowest = 0.0
        self.served_by: Dict[int, int] = {}
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(CLIENT_THREADS)]

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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("preload", [False, True], ids=["workers-open", "preload"])
def test_gunicorn_workers_share_one_store(tmp_path, preload):
    db = str(tmp_path / "tokens")
    resources = tmp_path / "sdk"
    resources.mkdir()
    seed(db)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "gunicorn.log"
    figures = {"variant": "--preload" if preload else "no --preload", "workers": WORKERS, "client threads": CLIENT_THREADS}
    with FakeZoho(expires_in=LIFETIME_S) as zoho, open(log_path, "w") as log:
        zoho.add_client(CLIENT_ID, CLIENT_SECRET)
        for i, user in enumerate(USERS):
            zoho.add_refresh_token(CLIENT_ID, f"1000.refresh.{i}", user)
        env = dict(os.environ, TOKENS_DB=db, FAKE_ZOHO=zoho.base, ZOHO_USERS=",".join(USERS), SDK_RESOURCES=str(resources))
        command = [sys.executable, "-m", "gunicorn", "--workers", str(WORKERS), "--bind", f"127.0.0.1:{port}",
                   "--pythonpath", HERE, "--timeout", "60", "--graceful-timeout", "5", "--log-level", "info"]
        if preload:
            command.append("--preload")
        if any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS):
            command.append("--no-control-socket")  # gunicorn 25+ would make one in $HOME
        command.append("gunicorn_app:application")
        master = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            run(master, base, db, zoho, figures, preload, log_path)
        except BaseException:
            print(f"--- gunicorn's log ---\n{log_path.read_text()[-6000:]}")
            raise
        finally:
            stop(master)
    REPORT.append(figures)


def run(master, base, db, zoho, figures, preload, log_path) -> None:
    # Every worker up and answering.
    deadline = time.monotonic() + 60
    while True:
        assert master.poll() is None, "gunicorn exited"
        workers = children(master.pid)
        if len(workers) == WORKERS:
            try:
                answers = whoami(base, tries=8)
                break
            except OSError:
                pass
        assert time.monotonic() < deadline, f"gunicorn's workers did not all start: {workers}"
        time.sleep(0.2)
    owner = owner_of(answers)
    if preload:
        assert owner == master.pid, "with --preload the master opened the store first and owns it"
    else:
        assert owner in workers, "without --preload the first worker to open the store owns it"
    for a in answers:
        assert a["role"] == ("owner" if a["pid"] == owner else "client")

    victims: List[int] = []
    with Drive(base) as drive:
        t0 = time.monotonic()
        # `tokenstore list` beside the running app.
        time.sleep(3)
        cli = tokenstore_bin()
        if cli is None:
            figures["tokenstore list"] = "SKIPPED: no tokenstore binary (set TOKENSTORE_BIN)"
            print(figures["tokenstore list"])
        else:
            listed = time.monotonic()
            out = subprocess.run([cli, "list", "--db", db, "--json"], capture_output=True, text=True, timeout=30)
            took = time.monotonic() - listed
            assert out.returncode == 0, out.stderr
            for user in USERS:
                assert user in out.stdout
            assert took < 2, f"tokenstore list took {took:.2f} s beside the running app"
            figures["tokenstore list s"] = round(took, 3)
        # Two workers SIGKILLed, a third and two thirds of the way.
        for n, at in enumerate((DRIVE_S / 3, 2 * DRIVE_S / 3)):
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            workers = children(master.pid)
            owner = owner_of(whoami(base, tries=4))
            if not preload and n == 0:
                victim = owner  # the owner itself
            else:
                victim = min(workers - {owner})
            assert victim in workers
            os.kill(victim, signal.SIGKILL)
            victims.append(victim)
            print(f"SIGKILLed worker {victim} ({'the owner' if victim == owner else 'a client'}) at {time.monotonic() - t0:.1f} s")
        time.sleep(max(0.0, t0 + DRIVE_S - time.monotonic()))
    ended = time.monotonic()

    # The store is owned by a live process the workers agree on.
    answers = whoami(base, tries=12)
    owner = owner_of(answers)
    assert owner not in victims
    assert owner == master.pid if preload else owner in children(master.pid)

    refreshes = len(zoho.refreshes())
    # Each refresh makes a token good for LIFETIME - MARGIN seconds: from a
    # user's first refresh (at boot) to the end, it can expire this many
    # times.
    expiries = 0
    for i in range(len(USERS)):
        first = min(r.at for r in zoho.refreshes() if r.form.get("refresh_token") == f"1000.refresh.{i}")
        expiries += math.floor((ended - first) / (LIFETIME_S - MARGIN_S)) + 1
    log_text = log_path.read_text()
    sdk_fallbacks = log_text.count("could not refresh the token before handing it to the SDK")
    figures.update(
        {
            "seconds driven": round(ended - t0, 1),
            "served": drive.served,
            "failed": len(drive.failures),
            "refreshes": refreshes,
            "expiries": expiries,
            "workers killed": len(victims),
            "slowest request s": round(drive.slowest, 2),
            "refreshes left to the SDK": sdk_fallbacks,
            "workers serving": len(drive.served_by),
        }
    )
    print("gunicorn " + json.dumps(figures))
    for failure in drive.failures[:20]:
        print("failed:", failure)
    if len(drive.failures) > 20:
        print(f"... and {len(drive.failures) - 20} more failures")
    assert drive.served > 100
    assert len(drive.failures) <= CLIENT_THREADS, drive.failures
    # One refresh per expiry (a request lost with a killed worker may be
    # made again): not one per worker.
    assert refreshes <= expiries + len(victims) + 1, figures
    assert refreshes >= len(USERS) * (ended - t0) / (LIFETIME_S - MARGIN_S) / 2, figures
    assert "Worker failed to boot" not in log_text


def stop(master: subprocess.Popen) -> None:
    """gunicorn and all its workers stopped, whatever happened."""
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
