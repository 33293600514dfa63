"""The Celery app ``test_celery.py`` runs under a real Celery worker (prefork
pool): the app of ``gunicorn_app.py`` as a task. Importing ``gunicorn_app``
opens ``tokenstore.zoho.Store(TOKENS_DB, refresh=True)`` and initializes the
Zoho SDK on it. Where, ``CELERY_OPEN_STORE`` says:

* ``import`` (the default): when this module is imported, which ``celery -A
  celery_app worker`` does in the worker's main process, before the pool
  forks its children (as gunicorn ``--preload`` does);
* ``worker_process_init``: in each pool process, after the fork (Celery's
  signal for it, as gunicorn's ``post_fork`` hook).

Configured by the environment: what ``gunicorn_app.py`` reads,
``CELERY_OPEN_STORE``, ``CELERY_QUEUE`` (the folder the ``filesystem://``
broker reads messages from), ``CELERY_RESULTS`` (where each task writes what
it did, as ``<n>.json``). There is no result backend.

Also used, without importing ``gunicorn_app``, by the test to send the tasks:
``broker(queue, out)`` is the broker configuration both sides use.
"""

from __future__ import annotations

import json
import os
import time

from celery import Celery


def broker(queue: str, out: str, control: str) -> dict:
    """The Celery configuration of a ``filesystem://`` broker that reads
    messages from ``queue`` and writes them to ``out``."""
    return {
        "broker_url": "filesystem://",
        "broker_transport_options": {
            "data_folder_in": queue,
            "data_folder_out": out,
            "control_folder": control,
            # Taken messages are kept here (the same file system), not
            # moved to the system's temporary directory.
            "store_processed": True,
            "processed_folder": queue + ".taken",
            "polling_interval": 0.05,
        },
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "worker_enable_remote_control": False,
        "worker_prefetch_multiplier": 1,
    }


if "CELERY_QUEUE" in os.environ:
    if os.environ.get("CELERY_OPEN_STORE", "import") == "import":
        import gunicorn_app  # noqa: F401 - opens the store
    else:
        from celery.signals import worker_process_init

        @worker_process_init.connect
        def open_store(**_) -> None:
            import gunicorn_app  # noqa: F401 - opens the store

    queue = os.environ["CELERY_QUEUE"]
    app = Celery("celery_app")
    app.conf.update(broker(queue, queue, queue + ".control"))
    RESULTS = os.environ["CELERY_RESULTS"]

    @app.task(name="celery_app.crm")
    def crm_task(n: int) -> None:
        """The SDK's API call of ``GET /crm`` (through the store, which
        refreshes the token single-flight), reported in ``RESULTS/<n>.json``
        with what this process says about the store."""
        import gunicorn_app

        started = time.monotonic()
        try:
            gunicorn_app.crm()
            done = {"ok": True}
        except Exception as e:  # noqa: BLE001 - reported to the test
            cause = getattr(e, "cause", None) or e.__cause__
            done = {"ok": False, "error": f"{e!r}"[:300], "cause": f"{cause!r}"[:300]}
        done.update(gunicorn_app.whoami(), n=n, at=started)
        path = os.path.join(RESULTS, f"{n}.json")
        with open(path + ".part", "w") as f:
            json.dump(done, f)
        os.rename(path + ".part", path)
