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
import os
import signal
import subprocess
import sys
import time
from typing import List

import pytest
from conftest import REPORT
from real_servers import (HERE, LIFETIME_S, MARGIN_S, USERS, Drive, app_env, children, expiries_due, fake_zoho, free_port,
                          missing, owner_of, print_failures, seed, stop, tokenstore_bin, whoami)

WORKERS = 4
CLIENT_THREADS = 4
DRIVE_S = 22.0

try:
    from gunicorn.config import KNOWN_SETTINGS
except ImportError:
    missing("gunicorn is not installed (tests/python/run.sh installs it)")


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
    with fake_zoho() as zoho, open(log_path, "w") as log:
        env = app_env(db, zoho, str(resources))
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
    with Drive(base, CLIENT_THREADS) as drive:
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
    expiries = expiries_due(zoho, ended)
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
    print_failures(drive.failures)
    assert drive.served > 100
    assert len(drive.failures) <= CLIENT_THREADS, drive.failures
    # One refresh per expiry (a request lost with a killed worker may be
    # made again): not one per worker.
    assert refreshes <= expiries + len(victims) + 1, figures
    assert refreshes >= len(USERS) * (ended - t0) / (LIFETIME_S - MARGIN_S) / 2, figures
    assert "Worker failed to boot" not in log_text

