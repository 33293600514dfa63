"""The engine's log records in Python's ``logging``, with every level on
(the root logger at 1, so TRACE, ureq's and sled's records included), during
the real Zoho SDK's flow with ``refresh=True``: a refresh, a refused
refresh, a revoke and a failed save. Every record is scanned for every
secret of the fixtures, plain and percent-encoded; the records an operator
expects are asserted present, under the ``tokenstore`` logger.
"""

from __future__ import annotations

import logging
import urllib.parse

import pytest
from conftest import CLIENT_ID, CLIENT_SECRET, GRANT, REFRESH, REPORT, SECRETS, USER, now_ms
from fake_zoho import FakeZoho

import tokenstore
from tokenstore.zoho import Store
from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
from zohocrmsdk.src.com.zoho.crm.api import HeaderMap, ParameterMap
from zohocrmsdk.src.com.zoho.crm.api.exception.sdk_exception import SDKException
from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer
from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature
from zohocrmsdk.src.com.zoho.crm.api.users import GetUsersParam, UsersOperations

BOB_REFRESH = "1000.refresh/bob+S3CRET="

#: The engine's ceilings (tokenstore.logging.ceiling): what may reach Python.
FLOOR = {"tokenstore": 5, "ureq": logging.DEBUG}


def floor(name: str) -> int:
    for root, level in FLOOR.items():
        if name == root or name.startswith(root + "."):
            return level
    return logging.INFO


def forms(secret: str):
    return {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}


def seed(store: Store, user: str, refresh: str) -> str:
    token = OAuthToken(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        refresh_token=refresh,
        access_token=f"1000.access.expired.{user}",
        user_signature=UserSignature(user),
    )
    token.set_expires_in(str(now_ms() - 60_000))
    store.save_token(token)
    return token.get_id()


def api_call() -> None:
    params = ParameterMap()
    params.add(GetUsersParam.type, "AllUsers")
    assert UsersOperations().get_users(params, HeaderMap()).get_status_code() == 200


def expect(records, name: str, level: int, *words: str) -> None:
    for r in records:
        if r.name == name and r.levelno == level and all(w in r.getMessage() for w in words):
            return
    shown = "\n".join(f"{r.name} {r.levelname} {r.getMessage()}" for r in records)
    pytest.fail(f"no {logging.getLevelName(level)} record of {name} with {words} among:\n{shown}")


def test_the_sdk_flow_with_every_level_on_logs_each_event_and_no_secret(tmp_path, caplog):
    caplog.set_level(1)
    with FakeZoho(rotate=True) as server:
        server.add_client(CLIENT_ID, CLIENT_SECRET)
        server.add_refresh_token(CLIENT_ID, REFRESH, USER)
        store = Store(tmp_path / "tokens", refresh=True)
        ana = seed(store, USER, REFRESH)
        bob = seed(store, "bob@example.com", BOB_REFRESH)  # a refresh token the server never issued

        # The SDK's call: refresh=True refreshes the expired token first.
        Initializer.initialize(
            environment=server.environment(),
            token=OAuthToken(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=REFRESH),
            store=store,
            resource_path=str(tmp_path),
        )
        api_call()
        assert len(server.refreshes()) == 1

        with pytest.raises(tokenstore.GrantRefusedError):
            store._store.access_token(id=bob, accounts_url=server.base)

        # The SDK swallows a failed save; tokenstore's warning says so.
        with pytest.raises(SDKException):
            store.save_token(OAuthToken(user_signature=UserSignature(USER)))

        # The SDK's revoke (its own request), then a login and a revoke of
        # the package's own.
        assert OAuthToken(id=ana).revoke(ana) is True
        base = server.base
        server.add_grant_code(CLIENT_ID, GRANT, "carol@example.com")
        carol = store._store.login("carol@example.com", CLIENT_ID, CLIENT_SECRET, GRANT, accounts_url=base).id
        assert store._store.revoke(carol, accounts_url=base) is True
        revokes = [r for r in server.requests if r.path.endswith("/revoke")]
        assert len(revokes) == 2 and all("token" in r.form and not r.query for r in revokes)
        store._store.close()

        secrets = set(SECRETS) | {BOB_REFRESH} | set(server.access_tokens) | set(server.revoked)
        for client in server.clients.values():
            secrets |= set(client.refresh_tokens)

    records = list(caplog.records)
    expect(records, "tokenstore.oauth", logging.DEBUG, f"refresh of record {ana} at {base}", "refreshed in")
    expect(records, "tokenstore.oauth", logging.WARNING, f"refresh of record {bob} at {base}", "refused after")
    expect(records, "tokenstore.oauth", logging.INFO, "login of c***@example.com at", f"saved as record {carol}")
    expect(records, "tokenstore.oauth", logging.INFO, f"revoke of record {carol} at {base}", "revoked and deleted")
    expect(records, "tokenstore.store", logging.DEBUG, "opened the sled store")
    expect(records, "tokenstore.store", logging.DEBUG, "closed the sled store")
    expect(records, "tokenstore", logging.WARNING, "NOT saved")
    assert any(r.name.startswith("ureq.") for r in records), "ureq's DEBUG records reach Python"

    every_form = set().union(*(forms(s) for s in secrets))
    found = [(r.name, r.getMessage()) for r in records for s in every_form if s in r.getMessage()]
    assert found == [], found
    # The engine's records carry the Rust source file as their pathname.
    bridged = [r for r in records if str(r.pathname).endswith(".rs")]
    past = [(r.name, r.levelname) for r in bridged if r.levelno < floor(r.name)]
    assert past == [], past
    users = [r.getMessage() for r in records if r.name.startswith("tokenstore.") and USER in r.getMessage()]
    assert users == [], users

    figures = {
        "python log scan": "every level",
        "records": len(records),
        "engine records": len(bridged),
        "secrets": len(secrets),
        "forms": len(every_form),
        "found": len(found),
    }
    REPORT.append(figures)
    print(figures)


def test_a_store_dropped_while_its_threads_log_does_not_hang(tmp_path):
    # Dropped without close(): its warm-up thread, started at the open, logs
    # (and so waits for the GIL) while the store's drop joins it. In a child,
    # so that a hang fails the test instead of stalling the suite.
    import subprocess
    import sys

    script = f"""
import logging, tokenstore
logging.basicConfig(level=logging.DEBUG)
for _ in range(20):
    store = tokenstore.open({str(tmp_path / "tokens")!r})
    del store
print("done")
"""
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0 and child.stdout == "done\n", child.stderr[-2000:]
    assert "warm-up of the store" in child.stderr
