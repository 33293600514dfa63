"""Shared fixtures: a fake Zoho server on 127.0.0.1, and the SDK's stores."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from fake_zoho import FakeZoho  # noqa: E402

CLIENT_ID = "1000.CLIENTID"
CLIENT_SECRET = "client-secret-0123456789"
REFRESH = "1000.refresh.seed"
ACCESS = "1000.access.seed"
GRANT = "1000.grant.seed"
USER = "ana@example.com"

#: Every secret a fixture uses: scanned for in logs, errors and files.
SECRETS = (CLIENT_SECRET, REFRESH, ACCESS, GRANT)

#: Figures a test reports (dicts), printed once more at the end of the run,
#: where `pytest -q` shows them too.
REPORT: list = []


def pytest_terminal_summary(terminalreporter):
    if REPORT:
        terminalreporter.section("figures")
        for figures in REPORT:
            terminalreporter.write_line(", ".join(f"{k}: {v}" for k, v in figures.items()))


def now_ms() -> int:
    return int(time.time() * 1000)


def together(threads: int, work):
    """Runs ``work(n)`` on ``threads`` threads, released at once by a
    barrier; returns what they returned and what they raised."""
    barrier = threading.Barrier(threads)
    results, errors = [], []

    def run(n: int) -> None:
        barrier.wait()
        try:
            results.append(work(n))
        except BaseException as e:  # noqa: BLE001 - returned to the test
            errors.append(e)

    started = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for t in started:
        t.start()
    for t in started:
        t.join()
    return results, errors


@pytest.fixture
def server():
    with FakeZoho() as zoho:
        zoho.add_client(CLIENT_ID, CLIENT_SECRET)
        yield zoho


@pytest.fixture(autouse=True)
def _no_key_from_env(monkeypatch):
    # A key in the developer's environment must not change what tests open.
    monkeypatch.delenv("TOKENSTORE_KEY", raising=False)


def _pg_bindir():
    import glob
    import shutil

    config = shutil.which("pg_config")
    if config:
        import subprocess

        bindir = subprocess.run([config, "--bindir"], capture_output=True, text=True).stdout.strip()
        if os.path.exists(os.path.join(bindir, "initdb")):
            return bindir
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


@pytest.fixture(scope="session")
def pg_server():
    """An admin URL of a PostgreSQL server on 127.0.0.1: $TOKENSTORE_TEST_PG_URL,
    else a throw-away cluster started here (as the postgres user when root).
    Skipped, loudly, when there is none; with CI=true that is a failure."""
    import shutil
    import socket
    import subprocess
    import tempfile

    url = os.environ.get("TOKENSTORE_TEST_PG_URL")
    if url:
        yield url
        return
    bindir = _pg_bindir()
    if bindir is None or shutil.which("psql") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no PostgreSQL server for the postgres:// tests (CI=true)")
        pytest.skip("SKIPPED: no PostgreSQL server (install postgresql) for the postgres:// tests")
    as_server = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = tempfile.mkdtemp(prefix="tokenstore-pg-py.")
    os.chmod(data, 0o755)
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = os.path.join(data, "db")
    subprocess.run(as_server + [f"{bindir}/initdb", "-D", db, "-A", "trust", "-U", "postgres", "--no-sync"], check=True, capture_output=True)
    subprocess.run(
        as_server
        + [f"{bindir}/pg_ctl", "-D", db, "-l", os.path.join(data, "server.log"), "-w", "-t", "60", "-o",
           f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=300", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgres://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_server + [f"{bindir}/pg_ctl", "-D", db, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server):
    """A fresh, empty database on the test server, as a postgres:// URL."""
    import subprocess
    import uuid

    name = "t_" + uuid.uuid4().hex[:12]
    subprocess.run(["psql", pg_server, "-q", "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return pg_server.rsplit("/", 1)[0] + "/" + name
