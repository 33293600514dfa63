"""Shared fixtures: a fake Zoho server on 127.0.0.1, and the SDK's stores."""

from __future__ import annotations

import os
import sys
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


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def server():
    with FakeZoho() as zoho:
        zoho.add_client(CLIENT_ID, CLIENT_SECRET)
        yield zoho


@pytest.fixture(autouse=True)
def _no_key_from_env(monkeypatch):
    # A key in the developer's environment must not change what tests open.
    monkeypatch.delenv("TOKENSTORE_KEY", raising=False)
