"""Real uWSGI (from PyPI, compiled by ``pip install uwsgi``), ``--master
--processes 4`` behind its ``--http`` router, running the WSGI app of
``gunicorn_app.py`` (the real Zoho SDK on ``tokenstore.zoho.Store(dir,
refresh=True)`` opened at import) against the fake Zoho server on 127.0.0.1.
Its access tokens live 8 s; ``refresh=True`` hands out only tokens valid for
6 s more, so each token serves 2 s and then expires (is refreshed).

Two modes, as uWSGI runs apps:

* default: the master loads the app, then forks the workers (as gunicorn
  ``--preload`` does): the master owns the store, the workers are its
  clients. A client worker is SIGKILLed midway; the master forks another.
* ``--lazy-apps``: each worker loads the app after the fork: the first one
  to open the store owns it. That owner is SIGKILLed midway; another worker
  takes over and the master starts a new worker, which loads the app anew.

Client threads send requests for 15 s. Every request is served except those
in flight on the killed worker; the fake server sees one refresh per expiry,
not one per worker. The figures (served, failed, refreshes, expiries) are
printed, and listed again at the end of the pytest run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import List

import pytest
from conftest import REPORT
from real_servers import (HERE, LIFETIME_S, MARGIN_S, USERS, Drive, app_env, expiries_due, fake_zoho, free_port, missing,
                          owner_of, print_failures, seed, stop, whoami)

WORKERS = 4
CLIENT_THREADS = 4
DRIVE_S = 15.0

UWSGI = shutil.which("uwsgi", path=os.path.dirname(sys.executable)) or shutil.which("uwsgi")
if UWSGI is None:
    missing("uWSGI is not installed: `pip install uwsgi` compiles it and needs a C compiler and the Python "
            "headers (tests/python/run.sh tries, and prints why it failed)")


def worker_pids(stats_socket: str) -> List[int]:
    """The pids of uWSGI's workers, from its stats server (0 for a worker
    not running)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(stats_socket)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return [w["pid"] for w in json.loads(data)["workers"]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("lazy", [False, True], ids=["master-loads", "lazy-apps"])
def test_uwsgi_workers_share_one_store(tmp_path, lazy):
    db = str(tmp_path / "tokens")
    resources = tmp_path / "sdk"
    resources.mkdir()
    seed(db)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    stats = str(tmp_path / "stats.sock")
    log_path = tmp_path / "uwsgi.log"
    figures = {"variant": "uWSGI --lazy-apps" if lazy else "uWSGI (master loads the app)", "workers": WORKERS,
               "client threads": CLIENT_THREADS}
    with fake_zoho() as zoho, open(log_path, "w") as log:
        env = app_env(db, zoho, str(resources))
        command = [UWSGI, "--master", "--processes", str(WORKERS), "--http", f"127.0.0.1:{port}",
                   "--virtualenv", sys.prefix, "--pythonpath", HERE, "--wsgi-file", os.path.join(HERE, "gunicorn_app.py"),
                   "--callable", "application", "--need-app", "--die-on-term", "--stats", stats]
        if lazy:
            command.append("--lazy-apps")
        master = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            run(master, base, stats, zoho, figures, lazy, log_path)
        except BaseException:
            print(f"--- uWSGI's log ---\n{log_path.read_text()[-6000:]}")
            raise
        finally:
            stop(master)
    REPORT.append(figures)


def run(master, base, stats, zoho, figures, lazy, log_path) -> None:
    # Every worker up and answering.
    deadline = time.monotonic() + 60
    while True:
        assert master.poll() is None, "uWSGI exited"
        try:
            workers = set(worker_pids(stats)) - {0}
            if len(workers) == WORKERS:
                answers = whoami(base, tries=8)
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "uWSGI's workers did not all start"
        time.sleep(0.2)
    owner = owner_of(answers)
    if lazy:
        assert owner in workers, "with --lazy-apps the first worker to open the store owns it"
    else:
        assert owner == master.pid, "the master loaded the app, so opened the store, first"
    for a in answers:
        assert a["pid"] in workers
        assert a["role"] == ("owner" if a["pid"] == owner else "client")

    victims: List[int] = []
    with Drive(base, CLIENT_THREADS) as drive:
        t0 = time.monotonic()
        # One worker SIGKILLed halfway: with --lazy-apps the owner itself.
        time.sleep(DRIVE_S / 2)
        workers = set(worker_pids(stats)) - {0}
        owner = owner_of(whoami(base, tries=4))
        victim = owner if lazy else min(workers)
        assert victim in workers
        os.kill(victim, signal.SIGKILL)
        victims.append(victim)
        print(f"SIGKILLed worker {victim} ({'the owner' if victim == owner else 'a client'}) at {time.monotonic() - t0:.1f} s")
        time.sleep(max(0.0, t0 + DRIVE_S - time.monotonic()))
    ended = time.monotonic()

    # The store is owned by a live process the workers agree on, and the
    # master replaced the killed worker.
    answers = whoami(base, tries=12)
    owner = owner_of(answers)
    assert owner not in victims
    workers = set(worker_pids(stats)) - {0}
    assert len(workers) == WORKERS and not workers & set(victims), workers
    assert owner in workers if lazy else owner == master.pid

    refreshes = len(zoho.refreshes())
    expiries = expiries_due(zoho, ended)
    log_text = log_path.read_text()
    figures.update(
        {
            "seconds driven": round(ended - t0, 1),
            "served": drive.served,
            "failed": len(drive.failures),
            "refreshes": refreshes,
            "expiries": expiries,
            "workers killed": len(victims),
            "slowest request s": round(drive.slowest, 2),
            "refreshes left to the SDK": log_text.count("could not refresh the token before handing it to the SDK"),
            "workers serving": len(drive.served_by),
        }
    )
    print("uwsgi " + json.dumps(figures))
    print_failures(drive.failures)
    assert drive.served > 100
    assert len(drive.failures) <= CLIENT_THREADS, drive.failures
    # One refresh per expiry (a request lost with a killed worker may be
    # made again): not one per worker.
    assert refreshes <= expiries + len(victims) + 1, figures
    assert refreshes >= len(USERS) * (ended - t0) / (LIFETIME_S - MARGIN_S) / 2, figures
    assert "Traceback" not in log_text
