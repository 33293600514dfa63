"""The real Zoho CRM SDK's token flow against a fake accounts and CRM server
on 127.0.0.1, once with ``tokenstore.zoho.Store`` and once with the SDK's
own ``FileStore``: the same HTTP requests and the same token in use after
each scenario, except where tokenstore differs on purpose (listed in
``DELIBERATE_DIFFERENCES``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from conftest import ACCESS, CLIENT_ID, CLIENT_SECRET, GRANT, REFRESH, SECRETS, USER, now_ms
from fake_zoho import ORG_ZGID, FakeZoho

from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
from zohocrmsdk.src.com.zoho.api.authenticator.store.file_store import FileStore
from zohocrmsdk.src.com.zoho.crm.api import HeaderMap, ParameterMap
from zohocrmsdk.src.com.zoho.crm.api.exception.sdk_exception import SDKException
from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer
from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature
from zohocrmsdk.src.com.zoho.crm.api.users import GetUsersParam, UsersOperations

from tokenstore.zoho import Store

FULL_USER = f"{USER}:{ORG_ZGID}"

#: Scenarios whose outcome differs between tokenstore and FileStore on
#: purpose, and why. Every other scenario must match exactly.
DELIBERATE_DIFFERENCES = {
    "revoke": "the SDK's revoke(id) looks the token up by id alone: FileStore finds "
    "nothing and never calls the accounts server; tokenstore finds it and revokes",
}


@dataclass
class Outcome:
    requests: List[Tuple] = field(default_factory=list)
    bearer: Optional[str] = None  # the access token the final API call sent
    stored: List[Tuple] = field(default_factory=list)
    result: Any = None  # what the scenario's last step returned or raised

    def comparable(self) -> Tuple:
        return (self.requests, self.bearer, self.stored, self.result)


def open_store(kind: str, tmp_path) -> Any:
    if kind == "tokenstore":
        return Store(str(tmp_path / "tokens"))
    return FileStore(str(tmp_path / "tokens.csv"))


def seed(store, *, expires_in_ms: Optional[int] = 3_600_000, access: Optional[str] = ACCESS, user=USER) -> None:
    """Stores one complete token through the store's own save_token."""
    token = OAuthToken(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        refresh_token=REFRESH,
        access_token=access,
        user_signature=UserSignature(user) if user else None,
    )
    if expires_in_ms is not None:
        token.set_expires_in(str(now_ms() + expires_in_ms))
    store.save_token(token)
    assert token.get_id() == "1"


def initialize(server: FakeZoho, store, token, tmp_path) -> None:
    Initializer.initialize(environment=server.environment(), token=token, store=store, resource_path=str(tmp_path))


def api_call() -> str:
    """A CRM API call through the SDK; returns the e-mails it lists."""
    params = ParameterMap()
    params.add(GetUsersParam.type, "AllUsers")
    response = UsersOperations().get_users(params, HeaderMap())
    assert response.get_status_code() == 200
    return ",".join(u.get_email() for u in response.get_object().get_users())


def stored(store) -> List[Tuple]:
    rows = []
    for t in store.get_tokens():
        signature = t.get_user_signature()
        expires = t.get_expires_in()
        assert expires is None or (isinstance(expires, str) and expires.isdigit())
        assert isinstance(t.get_id(), str)
        rows.append(
            (
                t.get_id(),
                signature.get_name() if signature else None,
                t.get_client_id(),
                t.get_client_secret(),
                t.get_refresh_token(),
                t.get_access_token(),
                t.get_grant_token(),
                expires is not None and int(expires) > now_ms(),
                t.get_redirect_url(),
                t.get_api_domain() is not None,
            )
        )
    return sorted(rows)


def sdk_token() -> OAuthToken:
    return Initializer.get_initializer().token


# -- the scenarios: each runs on a fresh server and an empty store -----------


def init_with_refresh_token_on_empty_store(server, store, tmp_path):
    server.add_refresh_token(CLIENT_ID, REFRESH, USER)
    initialize(server, store, OAuthToken(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=REFRESH), tmp_path)
    return api_call()


def stored_valid_token(server, store, tmp_path):
    server.add_refresh_token(CLIENT_ID, REFRESH, USER)
    server.add_access_token(ACCESS, USER)
    seed(store)
    initialize(server, store, OAuthToken(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=REFRESH), tmp_path)
    return api_call()


def expired_token(server, store, tmp_path):
    server.add_refresh_token(CLIENT_ID, REFRESH, USER)
    seed(store, expires_in_ms=-60_000)
    token = OAuthToken(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=REFRESH)
    initialize(server, store, token, tmp_path)
    # Refreshed, then saved by id onto the same record.
    return (token.get_id(), api_call())


def margin_6s_kept(server, store, tmp_path):
    server.add_refresh_token(CLIENT_ID, REFRESH, USER)
    server.add_access_token(ACCESS, USER)
    seed(store, expires_in_ms=6_000)
    initialize(server, store, OAuthToken(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=REFRESH), tmp_path)
    return api_call()


def margin_4s_refreshed(server, store, tmp_path):
    server.add_refresh_token(CLIENT_ID, REFRESH, USER)
    server.add_access_token(ACCESS, USER)
    seed(store, expires_in_ms=4_000)
    initialize(server, store, OAuthToken(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=REFRESH), tmp_path)
    return api_call()


def id_only_token(server, store, tmp_path):
    server.add_refresh_token(CLIENT_ID, REFRESH, USER)
    server.add_access_token(ACCESS, USER)
    seed(store)
    token = OAuthToken(id="1")
    initialize(server, store, token, tmp_path)
    return (token.get_client_id(), api_call())


def id_only_expired_token(server, store, tmp_path):
    server.add_refresh_token(CLIENT_ID, REFRESH, USER)
    seed(store, expires_in_ms=-1)
    initialize(server, store, OAuthToken(id="1"), tmp_path)
    return api_call()


def user_signature_only_token(server, store, tmp_path):
    server.add_refresh_token(CLIENT_ID, REFRESH, USER)
    server.add_access_token(ACCESS, USER)
    seed(store)
    token = OAuthToken(user_signature=UserSignature(USER))
    initialize(server, store, token, tmp_path)
    # find_token filled the very object the SDK passed.
    return (token.get_id(), token.get_refresh_token() == REFRESH, api_call())


def unknown_user_signature(server, store, tmp_path):
    seed(store)
    try:
        initialize(server, store, OAuthToken(user_signature=UserSignature("nobody@example.com")), tmp_path)
    except SDKException as e:
        return ("raised", e.code)
    return "no error"


def grant_token_flow(server, store, tmp_path):
    server.add_grant_code(CLIENT_ID, GRANT, USER)
    token = OAuthToken(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        grant_token=GRANT,
        redirect_url="https://app.example.com/callback",
    )
    initialize(server, store, token, tmp_path)
    return (token.get_id(), api_call())


def access_token_only(server, store, tmp_path):
    server.add_access_token(ACCESS, USER)
    token = OAuthToken(access_token=ACCESS)
    initialize(server, store, token, tmp_path)
    return (token.get_id(), api_call())


def rejected_refresh_token(server, store, tmp_path):
    # The server does not know this refresh token.
    try:
        initialize(
            server, store, OAuthToken(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token="1000.unknown"), tmp_path
        )
    except SDKException as e:
        return ("raised", e.code)
    return "no error"


def rotating_server(server, store, tmp_path):
    server.rotate = True
    server.add_refresh_token(CLIENT_ID, REFRESH, USER)
    seed(store, expires_in_ms=-1)
    initialize(server, store, OAuthToken(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=REFRESH), tmp_path)
    first = api_call()
    # The next process starts with the refresh token it has in its config:
    # retired by the rotation, so only the stored (rotated) one works.
    rotated = store.find_token_by_id("1").get_refresh_token()
    assert rotated != REFRESH
    token = OAuthToken(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=rotated)
    initialize(server, store, token, tmp_path)
    return (first, token.get_id(), api_call())


def revoke(server, store, tmp_path):
    server.add_refresh_token(CLIENT_ID, REFRESH, USER)
    server.add_access_token(ACCESS, USER)
    seed(store)
    token = OAuthToken(id="1")
    initialize(server, store, token, tmp_path)
    return token.revoke("1")


def remove(server, store, tmp_path):
    server.add_access_token(ACCESS, USER)
    seed(store)
    token = OAuthToken(id="1")
    initialize(server, store, token, tmp_path)
    first = token.remove()
    again = token.remove()  # unknown id now: delete_token raises, remove() says False
    return (first, again)


def get_tokens(server, store, tmp_path):
    seed(store)
    store.save_token(OAuthToken(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token="1000.refresh.bob", user_signature=UserSignature("bob@example.com")))
    tokens = store.get_tokens()
    # New, complete objects, usable by the SDK.
    return sorted((t.get_id(), type(t).__name__, t.get_user_signature().get_name()) for t in tokens)


def delete_tokens(server, store, tmp_path):
    seed(store)
    store.delete_tokens()
    return len(store.get_tokens())


SCENARIOS: Dict[str, Callable] = {
    f.__name__: f
    for f in (
        init_with_refresh_token_on_empty_store,
        stored_valid_token,
        expired_token,
        margin_6s_kept,
        margin_4s_refreshed,
        id_only_token,
        id_only_expired_token,
        user_signature_only_token,
        unknown_user_signature,
        grant_token_flow,
        access_token_only,
        rejected_refresh_token,
        rotating_server,
        revoke,
        remove,
        get_tokens,
        delete_tokens,
    )
}


def run(name: str, kind: str, tmp_path) -> Outcome:
    tmp_path.mkdir(parents=True, exist_ok=True)
    store = open_store(kind, tmp_path)
    try:
        with FakeZoho() as server:
            server.add_client(CLIENT_ID, CLIENT_SECRET)
            result = SCENARIOS[name](server, store, tmp_path)
            last_api = [r for r in server.requests if r.path.startswith("/crm/")]
            return Outcome(
                requests=[r.key() for r in server.requests],
                bearer=last_api[-1].bearer if last_api else None,
                stored=stored(store),
                result=result,
            )
    finally:
        if kind == "tokenstore":
            store.close()


# -- what each scenario must show with tokenstore ------------------------------

EXPECTED: Dict[str, Callable[[Outcome, FakeZoho], None]] = {}


def expect(name):
    def register(check):
        EXPECTED[name] = check
        return check

    return register


def grant_types(outcome: Outcome) -> List[str]:
    return [dict(r[2]).get("grant_type") for r in outcome.requests if r[1] == "/oauth/v2/token"]


@expect("init_with_refresh_token_on_empty_store")
def _(o: Outcome):
    assert grant_types(o) == ["refresh_token"]
    assert o.bearer == "1000.access.1"
    assert o.result == USER
    assert o.stored == [("1", FULL_USER, CLIENT_ID, CLIENT_SECRET, REFRESH, "1000.access.1", None, True, None, True)]


@expect("stored_valid_token")
def _(o: Outcome):
    assert grant_types(o) == []
    assert o.bearer == ACCESS
    assert [r[1] for r in o.requests] == ["/crm/v8/users"]


@expect("expired_token")
def _(o: Outcome):
    assert grant_types(o) == ["refresh_token"]
    assert o.result == ("1", USER)
    assert o.bearer == "1000.access.1"
    assert o.stored == [("1", USER, CLIENT_ID, CLIENT_SECRET, REFRESH, "1000.access.1", None, True, None, True)]


@expect("margin_6s_kept")
def _(o: Outcome):
    assert grant_types(o) == []
    assert o.bearer == ACCESS


@expect("margin_4s_refreshed")
def _(o: Outcome):
    assert grant_types(o) == ["refresh_token"]
    assert o.bearer == "1000.access.1"
    assert len(o.stored) == 1


@expect("id_only_token")
def _(o: Outcome):
    assert grant_types(o) == []
    assert o.result == (CLIENT_ID, USER)
    assert o.bearer == ACCESS


@expect("id_only_expired_token")
def _(o: Outcome):
    assert grant_types(o) == ["refresh_token"]
    assert o.bearer == "1000.access.1"
    assert [row[5] for row in o.stored] == ["1000.access.1"]


@expect("user_signature_only_token")
def _(o: Outcome):
    assert o.result == ("1", True, USER)
    assert o.bearer == ACCESS


@expect("unknown_user_signature")
def _(o: Outcome):
    assert o.result == ("raised", "MANDATORY VALUE ERROR")
    assert o.requests == []


@expect("grant_token_flow")
def _(o: Outcome):
    assert grant_types(o) == ["authorization_code"]
    assert o.result == ("1", USER)
    assert o.bearer == "1000.access.1"
    assert o.stored == [
        ("1", FULL_USER, CLIENT_ID, CLIENT_SECRET, "1000.refresh.2", "1000.access.1", GRANT, True, "https://app.example.com/callback", True)
    ]


@expect("access_token_only")
def _(o: Outcome):
    assert grant_types(o) == []
    assert o.result == ("1", USER)
    assert o.bearer == ACCESS
    assert o.stored == [("1", FULL_USER, None, None, None, ACCESS, None, False, None, True)]


@expect("rejected_refresh_token")
def _(o: Outcome):
    assert grant_types(o) == ["refresh_token"]
    assert o.result == ("raised", "INVALID TOKEN ERROR")
    assert o.stored == []


@expect("rotating_server")
def _(o: Outcome):
    assert grant_types(o) == ["refresh_token"]
    first, token_id, second = o.result
    assert (first, token_id, second) == (USER, "1", USER)
    assert o.stored == [("1", USER, CLIENT_ID, CLIENT_SECRET, "1000.refresh.2", "1000.access.1", None, True, None, True)]


@expect("revoke")
def _(o: Outcome):
    assert o.result is True
    assert [r[1] for r in o.requests if r[0] == "POST"] == ["/oauth/v2/token/revoke"]
    assert [dict(r[2]) for r in o.requests if r[0] == "POST"] == [{"token": REFRESH}]


@expect("remove")
def _(o: Outcome):
    assert o.result == (True, False)
    assert o.stored == []


@expect("get_tokens")
def _(o: Outcome):
    assert o.result == [("1", "OAuthToken", USER), ("2", "OAuthToken", "bob@example.com")]


@expect("delete_tokens")
def _(o: Outcome):
    assert o.result == 0
    assert o.stored == []


def test_every_scenario_has_expectations():
    assert set(EXPECTED) == set(SCENARIOS)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_sdk_flow_with_tokenstore(name, tmp_path):
    outcome = run(name, "tokenstore", tmp_path)
    EXPECTED[name](outcome)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_same_as_filestore(name, tmp_path):
    ours = run(name, "tokenstore", tmp_path / "ours")
    theirs = run(name, "filestore", tmp_path / "theirs")
    if name in DELIBERATE_DIFFERENCES:
        assert ours.comparable() != theirs.comparable(), "a listed difference that no longer differs"
        return
    assert ours.requests == theirs.requests
    assert ours.bearer == theirs.bearer
    assert ours.stored == theirs.stored
    assert ours.result == theirs.result


def test_filestore_revoke_never_reaches_the_server(tmp_path):
    # The deliberate difference, shown on FileStore itself.
    theirs = run("revoke", "filestore", tmp_path)
    assert theirs.result is False
    assert [r for r in theirs.requests if r[0] == "POST"] == []


def test_secrets_never_logged(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("expired_token", "grant_token_flow", "revoke"):
        run(name, "tokenstore", tmp_path / name)
    ours = [r for r in caplog.records if r.name == "tokenstore"]
    for record in ours:
        for secret in SECRETS:
            assert secret not in record.getMessage()
