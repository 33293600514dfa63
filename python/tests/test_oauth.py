"""Access tokens on demand from Python (the engine's single-flight refresh),
and the opt-in refresh inside ``zoho.Store.find_token``: N threads, one
refresh."""

from __future__ import annotations

import pytest
from conftest import CLIENT_ID, CLIENT_SECRET, REFRESH, SECRETS, USER, now_ms, together
from fake_zoho import FakeZoho

import tokenstore
from tokenstore import Token

THREADS = 16


@pytest.fixture
def zoho():
    with FakeZoho() as server:
        server.add_client(CLIENT_ID, CLIENT_SECRET)
        server.add_refresh_token(CLIENT_ID, REFRESH, USER)
        yield server


def seed(store, expires_in_ms: int, access: str = "1000.access.seed") -> Token:
    return store.save(
        Token(user_name=USER, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=REFRESH,
              access_token=access, expiry_time=now_ms() + expires_in_ms)
    )


def test_a_valid_token_is_handed_out_without_a_request(tmp_path, zoho):
    with tokenstore.open(tmp_path / "db") as store:
        seed(store, 60_000)
        got = store.access_token(user_name=USER, accounts_url=zoho.base)
        assert got.token == "1000.access.seed" and got.id == "1"
        assert got.authorization == "Zoho-oauthtoken 1000.access.seed"
        for shown in (repr(got), str(got), f"{got}", format(got)):
            assert "1000.access.seed" not in shown and "[redacted]" in shown
        assert zoho.requests == []


@pytest.mark.parametrize("left_ms", [4_000, -1])
def test_within_the_margin_it_is_refreshed_and_saved_first(tmp_path, zoho, left_ms):
    with tokenstore.open(tmp_path / "db") as store:
        seed(store, left_ms)
        got = store.access_token(user_name=USER, accounts_url=zoho.base)
        assert len(zoho.refreshes()) == 1
        assert got.token == "1000.access.1"
        assert store.get("1").access_token == "1000.access.1"
        assert store.get("1").expiry_time > now_ms() + 3_000_000


def test_16_threads_one_refresh(tmp_path, zoho):
    with tokenstore.open(tmp_path / "db") as store:
        seed(store, -1)
        got, errors = together(THREADS, lambda _: store.access_token(user_name=USER, accounts_url=zoho.base).token)
        assert errors == []
        assert got == ["1000.access.1"] * THREADS
        assert len(zoho.refreshes()) == 1


def test_refused_refresh_leaves_the_store_unchanged(tmp_path, zoho):
    with tokenstore.open(tmp_path / "db") as store:
        before = seed(store, -1)
        zoho.clients[CLIENT_ID].refresh_tokens.clear()  # the server no longer knows it
        with pytest.raises(tokenstore.GrantRefusedError) as raised:
            store.access_token(user_name=USER, accounts_url=zoho.base)
        assert isinstance(raised.value, tokenstore.OAuthError)
        for secret in SECRETS:
            assert secret not in str(raised.value)
        assert store.get("1") == before
        with pytest.raises(tokenstore.NotFoundError):
            store.access_token(user_name="nobody@example.com", accounts_url=zoho.base)


def test_login_and_revoke(tmp_path, zoho):
    zoho.add_grant_code(CLIENT_ID, "1000.grant.x", "bob@example.com")
    with tokenstore.open(tmp_path / "db") as store:
        record = store.login("bob@example.com", CLIENT_ID, CLIENT_SECRET, "1000.grant.x", accounts_url=zoho.base)
        assert record.user_name == "bob@example.com" and record.refresh_token and record.grant_token is None
        assert store.revoke(record.id, accounts_url=zoho.base) is True
        assert zoho.revoked == [record.refresh_token]
        assert store.get(record.id) is None


def test_zoho_store_refresh_opt_in_makes_16_threads_cause_one_refresh(tmp_path, zoho):
    from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
    from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer
    from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature

    from tokenstore.zoho import Store

    def run(refresh: bool, where) -> int:
        before = len(zoho.refreshes())
        with Store(where, refresh=refresh) as store:
            seed(store.tokens, 60_000)
            Initializer.initialize(environment=zoho.environment(), token=OAuthToken(user_signature=UserSignature(USER)), store=store)
            record = store.tokens.get("1")
            store.tokens.save(Token(id="1", access_token="1000.access.expiring", expiry_time=now_ms() - 1))
            tokens, errors = together(THREADS, lambda _: OAuthToken(user_signature=UserSignature(USER)).get_token())
            assert errors == []
            assert "1000.access.expiring" not in tokens
            assert store.tokens.get("1").refresh_token == record.refresh_token
            if refresh:
                assert len(set(tokens)) == 1  # every thread got the one refreshed token
        return len(zoho.refreshes()) - before

    assert run(True, tmp_path / "opt-in") == 1
    without = run(False, tmp_path / "sdk-alone")
    assert without >= 1  # the SDK alone: typically one refresh per thread
    print(f"16 threads, one expired token: SDK alone {without} refreshes, with refresh=True 1")


def test_zoho_store_refresh_opt_in_through_an_id(tmp_path, zoho):
    from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
    from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer

    from tokenstore.zoho import Store

    with Store(tmp_path / "db", refresh=True) as store:
        seed(store.tokens, -1)
        token = OAuthToken(id="1")
        Initializer.initialize(environment=zoho.environment(), token=token, store=store)
        assert len(zoho.refreshes()) == 1
        assert store.tokens.get("1").access_token == "1000.access.1"


def test_zoho_store_refresh_opt_in_with_an_access_token_only_sdk_token(tmp_path, zoho):
    """The SDK's token carries its own (expired) access token: with
    refresh=True it is found, refreshed, and the SDK uses the new token."""
    from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
    from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer

    from tokenstore.zoho import Store

    with Store(tmp_path / "db", refresh=True) as store:
        seed(store.tokens, -1, access="1000.access.expired")
        token = OAuthToken(access_token="1000.access.expired")
        Initializer.initialize(environment=zoho.environment(), token=token, store=store)
        assert len(zoho.refreshes()) == 1
        assert token.get_access_token() == "1000.access.1"
        assert token.get_id() == "1"
        assert [t.access_token for t in store.tokens.all()] == ["1000.access.1"]
