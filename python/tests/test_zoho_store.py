"""``tokenstore.zoho.Store`` method by method, beside the SDK's FileStore
where the issue asks for the same behaviour."""

from __future__ import annotations

import logging

import pytest
from conftest import ACCESS, CLIENT_ID, CLIENT_SECRET, REFRESH, SECRETS, USER, now_ms

from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
from zohocrmsdk.src.com.zoho.api.authenticator.store.file_store import FileStore
from zohocrmsdk.src.com.zoho.api.authenticator.store.token_store import TokenStore
from zohocrmsdk.src.com.zoho.crm.api.exception.sdk_exception import SDKException
from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature

import tokenstore
from tokenstore.zoho import TOKEN_STORE, Store


@pytest.fixture(params=["tokenstore", "filestore"])
def any_store(request, tmp_path):
    if request.param == "tokenstore":
        store = Store(tmp_path / "tokens")
        yield store
        store.close()
    else:
        yield FileStore(str(tmp_path / "tokens.csv"))


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "tokens") as store:
        yield store


def full_token(**overrides) -> OAuthToken:
    token = OAuthToken(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        refresh_token=overrides.pop("refresh_token", REFRESH),
        access_token=overrides.pop("access_token", ACCESS),
        user_signature=UserSignature(overrides.pop("user", USER)),
    )
    token.set_expires_in(str(now_ms() + 3_600_000))
    token.set_api_domain("https://www.zohoapis.com")
    assert not overrides
    return token


def test_is_the_sdks_token_store(store):
    assert isinstance(store, TokenStore)


def test_save_token_sets_the_id_on_the_passed_token(any_store):
    token = full_token()
    assert any_store.save_token(token) is None
    assert token.get_id() == "1"
    second = full_token(user="bob@example.com", refresh_token="1000.r.bob", access_token="1000.a.bob")
    any_store.save_token(second)
    assert second.get_id() == "2"


def test_find_token_fills_and_returns_the_same_object(any_store):
    any_store.save_token(full_token())
    query = OAuthToken(user_signature=UserSignature(USER))
    found = any_store.find_token(query)
    assert found is query
    assert query.get_id() == "1"
    assert query.get_refresh_token() == REFRESH
    assert query.get_access_token() == ACCESS
    assert isinstance(query.get_expires_in(), str) and int(query.get_expires_in()) > now_ms()
    assert query.get_api_domain() == "https://www.zohoapis.com"


def test_find_token_keeps_the_fields_the_token_has(any_store):
    any_store.save_token(full_token())
    query = OAuthToken(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=REFRESH)
    query.set_access_token("1000.access.mine")
    assert any_store.find_token(query) is query
    assert query.get_access_token() == "1000.access.mine"
    assert query.get_user_signature().get_name() == USER


def test_find_token_of_nothing_is_none(any_store):
    any_store.save_token(full_token())
    assert any_store.find_token(OAuthToken(user_signature=UserSignature("bob@example.com"))) is None
    # A rule that holds decides: the right refresh token under another user finds nothing.
    other = OAuthToken(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=REFRESH, user_signature=UserSignature("bob@example.com"))
    assert any_store.find_token(other) is None


def test_find_token_by_id_builds_a_new_complete_token(any_store):
    original = full_token()
    any_store.save_token(original)
    found = any_store.find_token_by_id("1")
    assert isinstance(found, OAuthToken) and found is not original
    assert found.get_id() == "1"
    assert found.get_user_signature().get_name() == USER
    assert found.get_expires_in() == original.get_expires_in()
    assert (found.get_client_id(), found.get_client_secret(), found.get_refresh_token(), found.get_access_token()) == (
        CLIENT_ID,
        CLIENT_SECRET,
        REFRESH,
        ACCESS,
    )
    assert found.get_grant_token() is None and found.get_redirect_url() is None


def test_unknown_ids_raise_sdk_exception(any_store):
    any_store.save_token(full_token())
    with pytest.raises(SDKException) as raised:
        any_store.find_token_by_id("42")
    assert raised.value.code == TOKEN_STORE
    with pytest.raises(SDKException) as raised:
        any_store.delete_token("42")
    assert raised.value.code == TOKEN_STORE
    assert len(any_store.get_tokens()) == 1


def test_delete_token_and_delete_tokens(any_store):
    any_store.save_token(full_token())
    any_store.save_token(full_token(user="bob@example.com", refresh_token="1000.r.bob", access_token="1000.a.bob"))
    any_store.delete_token("1")
    assert [t.get_id() for t in any_store.get_tokens()] == ["2"]
    any_store.delete_tokens()
    assert any_store.get_tokens() == []


def test_update_by_id_keeps_one_record(any_store):
    any_store.save_token(full_token())
    update = any_store.find_token_by_id("1")
    update.set_access_token("1000.access.new")
    update.set_expires_in(str(now_ms() + 10_000))
    any_store.save_token(update)
    (only,) = any_store.get_tokens()
    assert only.get_access_token() == "1000.access.new"
    assert only.get_refresh_token() == REFRESH


def test_id_only_find_token_is_a_deliberate_difference(tmp_path):
    theirs = FileStore(str(tmp_path / "t.csv"))
    with Store(tmp_path / "tokens") as ours:
        for store in (ours, theirs):
            store.save_token(full_token())
        assert theirs.find_token(OAuthToken(id="1")) is None
        found = ours.find_token(OAuthToken(id="1"))
        assert found is not None and found.get_refresh_token() == REFRESH


def test_errors_are_sdk_exceptions_with_the_cause_and_no_secret(store, caplog):
    store.save_token(full_token())
    # Another record with this user: a unique value held by record 1.
    clash = full_token(refresh_token="1000.r.other", access_token="1000.a.other")
    clash.set_id("7")
    caplog.set_level(logging.WARNING, logger="tokenstore")
    with pytest.raises(SDKException) as raised:
        store.save_token(clash)
    err = raised.value
    assert err.code == TOKEN_STORE
    assert isinstance(err.__cause__, tokenstore.ConflictError)
    assert err.__cause__.field == "user_name" and err.__cause__.holder_id == "1"
    assert clash.get_id() == "7"  # as passed: the failed save set nothing
    text = str(err) + repr(err) + caplog.text
    assert "record \"1\"" in text
    for secret in SECRETS + ("1000.r.other", "1000.a.other"):
        assert secret not in text
    # The SDK swallows save_token errors: ours are logged as a warning too.
    warnings = [r for r in caplog.records if r.name == "tokenstore" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "NOT saved" in warnings[0].getMessage()


def test_a_token_without_any_token_is_refused_and_logged(store, caplog):
    caplog.set_level(logging.WARNING, logger="tokenstore")
    token = OAuthToken(user_signature=UserSignature(USER))
    with pytest.raises(SDKException) as raised:
        store.save_token(token)
    assert isinstance(raised.value.__cause__, tokenstore.InvalidTokenError)
    assert token.get_id() is None
    assert "NOT saved" in caplog.text
    assert store.get_tokens() == []


def test_a_malformed_expiry_is_refused(store):
    token = full_token()
    token.set_expires_in("soon")
    with pytest.raises(SDKException) as raised:
        store.save_token(token)
    assert raised.value.code == TOKEN_STORE
    assert store.get_tokens() == []


def test_non_tokens_pass_through_find_token(store):
    marker = object()
    assert store.find_token(marker) is marker


def test_opening_an_exclusively_held_store_is_an_sdk_exception(tmp_path):
    with Store(tmp_path / "tokens", exclusive=True):
        with pytest.raises(SDKException) as raised:
            Store(tmp_path / "tokens", exclusive=True)
    assert raised.value.code == TOKEN_STORE
    assert isinstance(raised.value.__cause__, tokenstore.LockedError)


def test_key_from_argument_and_environment(tmp_path, monkeypatch):
    import base64

    key = base64.b64encode(bytes(range(32))).decode()
    with Store(tmp_path / "tokens", key=key) as store:
        store.save_token(full_token())
    with pytest.raises(SDKException) as raised:
        Store(tmp_path / "tokens")
    assert isinstance(raised.value.__cause__, tokenstore.EncryptionKeyError)
    with Store(tmp_path / "tokens", key=bytes(range(32))) as store:
        assert len(store.get_tokens()) == 1
    monkeypatch.setenv("TOKENSTORE_KEY", key)
    with Store(tmp_path / "tokens") as store:
        assert store.find_token_by_id("1").get_refresh_token() == REFRESH


def test_ids_that_are_not_strings_are_unknown_ids(any_store):
    any_store.save_token(full_token())
    for bad in (None, 1):
        with pytest.raises(SDKException) as raised:
            any_store.delete_token(bad)
        assert raised.value.code == TOKEN_STORE
    with pytest.raises(SDKException):
        any_store.find_token_by_id(None)
    assert len(any_store.get_tokens()) == 1


def test_a_malformed_expiry_does_not_break_a_lookup(any_store):
    any_store.save_token(full_token())
    query = OAuthToken(user_signature=UserSignature(USER))
    query.set_expires_in("soon")
    assert any_store.find_token(query) is query
    assert query.get_expires_in() == "soon" and query.get_id() == "1"


class WatchedToken(OAuthToken):
    """An OAuthToken that records every attribute written to it once
    ``watch()`` is called: the SDK shares its token between threads, so a
    lookup must not write anything it does not mean to leave there."""

    def __init__(self, *args, **kwargs):
        object.__setattr__(self, "writes", None)
        super().__init__(*args, **kwargs)

    def watch(self) -> "WatchedToken":
        object.__setattr__(self, "writes", [])
        return self

    def __setattr__(self, name, value):
        if self.writes is not None:
            # "_OAuthToken__expires_in" -> "expires_in"
            self.writes.append((name.rsplit("__", 1)[-1], value))
        super().__setattr__(name, value)


def test_find_token_writes_nothing_when_it_fills_nothing(store):
    store.save_token(full_token())
    expiry = str(now_ms() + 60_000)
    # A miss: nothing to fill.
    miss = WatchedToken(user_signature=UserSignature("bob@example.com"))
    miss.set_expires_in(expiry)
    assert store.find_token(miss.watch()) is None
    assert miss.writes == []
    assert miss.get_expires_in() == expiry
    # A hit with every field present: nothing to fill either.
    full = WatchedToken(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, grant_token="1000.grant.mine",
                        refresh_token=REFRESH, redirect_url="https://example.com/cb", id="1",
                        access_token="1000.access.mine", user_signature=UserSignature(USER),
                        api_domain="https://www.zohoapis.eu")
    full.set_expires_in(expiry)
    assert store.find_token(full.watch()) is full
    assert full.writes == []
    assert (full.get_expires_in(), full.get_access_token()) == (expiry, "1000.access.mine")


@pytest.mark.parametrize("own_expiry", [None, "soon"])
def test_find_token_writes_only_the_fields_it_fills(store, own_expiry):
    stored = full_token()
    store.save_token(stored)
    query = WatchedToken(user_signature=UserSignature(USER))
    query.set_expires_in(own_expiry)
    assert store.find_token(query.watch()) is query
    filled = [("id", "1"), ("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET), ("refresh_token", REFRESH),
              ("access_token", ACCESS), ("grant_token", None)]
    if own_expiry is None:
        filled.append(("expires_in", stored.get_expires_in()))
    filled += [("redirect_url", None), ("api_domain", "https://www.zohoapis.com")]
    assert query.writes == filled
    assert query.get_expires_in() == (own_expiry or stored.get_expires_in())


def test_every_field_reaches_the_sdks_token(store):
    token = OAuthToken(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, grant_token="1000.grant.all",
                       refresh_token=REFRESH, redirect_url="https://example.com/cb", access_token=ACCESS,
                       user_signature=UserSignature(USER), api_domain="https://www.zohoapis.eu")
    token.set_expires_in(str(now_ms() + 60_000))
    store.save_token(token)
    getters = ["get_id", "get_client_id", "get_client_secret", "get_grant_token", "get_refresh_token",
               "get_redirect_url", "get_access_token", "get_expires_in", "get_api_domain"]
    expected = [getattr(token, g)() for g in getters] + [USER]
    assert None not in expected
    for found in (store.find_token_by_id(token.get_id()), store.get_tokens()[0],
                  store.find_token(OAuthToken(user_signature=UserSignature(USER)))):
        assert [getattr(found, g)() for g in getters] + [found.get_user_signature().get_name()] == expected
    stored = store.tokens.get(token.get_id())
    assert (stored.user_name, stored.grant_token, stored.expiry_time) == (USER, "1000.grant.all", int(token.get_expires_in()))


def test_a_store_string_with_an_unknown_scheme_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SDKException) as raised:
        Store("sqlite:///tokens.db")
    assert raised.value.code == TOKEN_STORE
    assert type(raised.value.__cause__) is tokenstore.Error
    assert "`sqlite://`" in str(raised.value.__cause__)
    assert list(tmp_path.iterdir()) == [], "sqlite:///tokens.db was taken for a directory"


def test_create_false_refuses_a_missing_store(tmp_path):
    with pytest.raises(SDKException) as raised:
        Store(tmp_path / "mistyped", create=False)
    assert raised.value.code == TOKEN_STORE
    assert type(raised.value.__cause__) is tokenstore.Error
    assert not (tmp_path / "mistyped").exists()
    with Store(tmp_path / "tokens") as store:  # as FileStore, creating it by default
        store.save_token(full_token())
    with Store(tmp_path / "tokens", create=False) as store:
        assert store.find_token_by_id("1").get_refresh_token() == REFRESH
