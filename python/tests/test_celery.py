"""Real Celery (from PyPI), the prefork pool with 4 worker processes, the real
Zoho SDK on ``tokenstore.zoho.Store(dir, refresh=True)`` (``celery_app.py``)
against the fake Zoho server on 127.0.0.1. Its access tokens live 8 s;
``refresh=True`` hands out only tokens valid for 6 s more, so each token
serves 2 s and then expires (is refreshed).

Two ways of opening the store:

* when the task module is imported, which the worker's main process does
  before it forks the pool (as gunicorn ``--preload`` does): the main
  process owns the store, every pool process is its client;
* in each pool process after the fork (Celery's ``worker_process_init``
  signal): the first pool process to open it owns it, and as pool processes
  are recycled, the owner among them, another takes over.

The broker needs no server: Celery's ``filesystem://`` transport, folders
under tmp_path. The test sends tasks for 15 s (a few in flight at a time,
never a backlog); each makes the SDK's API call (and ``get_token()`` for the
second user) and writes what it did, and what its process says about the
store, to a file. Pool processes are recycled after 25 tasks
(``--max-tasks-per-child``), so new children are forked from the main
process all along. Every task succeeds; the store's owner is the process
expected, the same for every task at a time; the fake server sees one
refresh per expiry, not one per worker.

The figures (tasks, failed, refreshes, expiries) are printed, and listed
again at the end of the pytest run.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time

import pytest
from conftest import REPORT
from real_servers import (HERE, app_env, children, expiries_due, fake_zoho, missing, refreshes_needed, seed,
                          stop)

WORKERS = 4
SUBMIT_S = 15.0
#: Tasks sent and not yet done, at most: the pool busy, no backlog.
IN_FLIGHT = 2 * WORKERS
MAX_TASKS_PER_CHILD = 25

try:
    from celery import Celery
except ImportError:
    missing("celery is not installed (tests/python/run.sh installs it)")

from celery_app import broker  # noqa: E402 - needs celery


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("open_in", ["import", "worker_process_init"])
def test_celery_prefork_workers_share_one_store(tmp_path, open_in):
    db = str(tmp_path / "tokens")
    resources = tmp_path / "sdk"
    resources.mkdir()
    seed(db)
    folders = {name: tmp_path / name for name in ("queue", "queue.taken", "queue.control", "sent", "results")}
    for folder in folders.values():
        folder.mkdir()
    log_path = tmp_path / "celery.log"
    variant = "store opened at import, before the fork" if open_in == "import" else "store opened in worker_process_init"
    figures = {"variant": f"Celery prefork, {variant}", "workers": WORKERS, "max tasks per child": MAX_TASKS_PER_CHILD}
    with fake_zoho() as zoho, open(log_path, "w") as log:
        pythonpath = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p)
        env = app_env(db, zoho, str(resources), CELERY_QUEUE=str(folders["queue"]), CELERY_RESULTS=str(folders["results"]),
                      CELERY_OPEN_STORE=open_in, PYTHONPATH=pythonpath)
        command = [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool", "prefork",
                   "--concurrency", str(WORKERS), "--max-tasks-per-child", str(MAX_TASKS_PER_CHILD),
                   "--without-gossip", "--without-mingle", "--without-heartbeat", "--hostname", "tokenstore-test@%h",
                   "--loglevel", "INFO"]
        master = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            run(master, zoho, folders, figures, open_in, log_path)
        except BaseException:
            print(f"--- celery's log ---\n{log_path.read_text()[-6000:]}")
            raise
        finally:
            stop(master)
    REPORT.append(figures)


def done_count(results) -> int:
    return len(glob.glob(os.path.join(results, "*.json")))


def run(master, zoho, folders, figures, open_in, log_path) -> None:
    # The pool up and the worker consuming.
    deadline = time.monotonic() + 60
    while not (len(children(master.pid)) == WORKERS and " ready." in log_path.read_text()):
        assert master.poll() is None, "the celery worker exited"
        assert time.monotonic() < deadline, f"celery's pool did not start: {children(master.pid)}"
        time.sleep(0.2)

    # The test sends through a Celery app of its own (it does not import
    # the tasks, so it never opens the store). The producer writes each
    # message to `sent`; it is moved into the queue once written, so the
    # worker never reads a message half written.
    sender = Celery("sender")
    sender.conf.update(broker(str(folders["sent"]), str(folders["sent"]), str(folders["queue.control"])))
    results = str(folders["results"])
    sent = 0
    t0 = time.monotonic()
    with sender.connection_for_write() as connection:
        while time.monotonic() < t0 + SUBMIT_S:
            if sent - done_count(results) >= IN_FLIGHT:
                time.sleep(0.01)
                continue
            sender.send_task("celery_app.crm", args=[sent], connection=connection)
            sent += 1
            for name in os.listdir(folders["sent"]):
                os.rename(folders["sent"] / name, folders["queue"] / name)
    submitted = time.monotonic()
    deadline = submitted + 30
    while done_count(results) < sent and time.monotonic() < deadline:
        assert master.poll() is None, "the celery worker exited"
        time.sleep(0.05)
    ended = time.monotonic()

    done = [json.loads(open(path).read()) for path in glob.glob(os.path.join(results, "*.json"))]
    failed = [d for d in done if not d["ok"]]
    pids = {d["pid"] for d in done}
    owners = {d["owner_pid"] for d in done}
    refreshes = len(zoho.refreshes())
    expiries = expiries_due(zoho, ended)
    log_text = log_path.read_text()
    figures.update(
        {
            "seconds driven": round(ended - t0, 1),
            "tasks sent": sent,
            "succeeded": len(done) - len(failed),
            "failed": len(failed),
            "missing": sent - len(done),
            "refreshes": refreshes,
            "expiries": expiries,
            "worker processes": len(pids),
            "owners": len(owners),
            "refreshes left to the SDK": log_text.count("could not refresh the token before handing it to the SDK"),
        }
    )
    print("celery " + json.dumps(figures))
    for d in failed[:20]:
        print("failed:", d)
    assert sent > 100, figures
    assert sorted(d["n"] for d in done) == list(range(sent)), f"{sent - len(done)} tasks never reported"
    assert not failed, failed[:5]
    # Every task ran in a pool process forked from the main process.
    assert {d["ppid"] for d in done} == {master.pid}
    assert master.pid not in pids
    assert len(pids) > WORKERS, "the pool's processes were recycled (--max-tasks-per-child)"
    if open_in == "import":
        # The main process (which imported the tasks) owns the store; every
        # pool process is a client of it.
        assert owners == {master.pid}, owners
        assert {d["role"] for d in done} == {"client"}
    else:
        # A pool process owns it (one at a time: the role each reported
        # agrees with the owner it named); recycled, it hands it over.
        assert owners <= pids, owners
        for d in done:
            assert d["role"] == ("owner" if d["owner_pid"] == d["pid"] else "client"), d
        assert len(owners) > 1, "the owner was recycled: another pool process took over"
    # One refresh per expiry across the pool: not one per worker.
    assert refreshes <= expiries + 1, figures
    # And refreshes do happen: at least half of those the tasks' times need
    # (the tasks' tokens were valid: the fake CRM refuses an expired one).
    needed = refreshes_needed(zoho, [d["at"] for d in done])
    figures["refreshes needed"] = needed
    assert refreshes >= needed / 2, figures
    assert master.poll() is None, "the celery worker exited"
