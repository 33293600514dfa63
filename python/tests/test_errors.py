"""Every family of engine errors raises its own exception class (the
engine's ``ErrorKind``), checked exactly: a subclass or the base class in
place of the right one fails."""

from __future__ import annotations

import os

import pytest
from conftest import CLIENT_ID, CLIENT_SECRET, REFRESH, USER, now_ms
from fake_zoho import FakeZoho

import tokenstore
from tokenstore import Token


def _invalid_token(tmp_path):
    with tokenstore.open(tmp_path / "db") as store:
        store.save(Token(user_name="carl"))


def _conflict(tmp_path):
    with tokenstore.open(tmp_path / "db") as store:
        store.save(Token(user_name="ana", refresh_token="1000.r"))
        store.save(Token(user_name="bob", refresh_token="1000.r"))


def _locked(tmp_path):
    # Only an exclusive open is ever refused: a shared one joins the owner.
    with tokenstore.open(tmp_path / "db", exclusive=True):
        tokenstore.open(tmp_path / "db", exclusive=True)


def _wrong_key(tmp_path):
    tokenstore.open(tmp_path / "db", key=os.urandom(32)).close()
    tokenstore.open(tmp_path / "db", key=os.urandom(32))


def _malformed_key(tmp_path):
    tokenstore.open(tmp_path / "db", key="not-base64-key!!")


def _invalid_url(tmp_path):
    tokenstore.open("postgres://nobody@127.0.0.1:not-a-port/none")


def _store_not_found(tmp_path):
    tokenstore.open(tmp_path / "missing", create=False)


def _unknown_scheme(tmp_path):
    tokenstore.open("sqlite:///tokens.db")


def _unreachable_server(tmp_path):
    tokenstore.open("postgres://nobody:pw@127.0.0.1:1/none")


def _unreachable_mysql(tmp_path):
    # The package opens mysql:// (not an unknown scheme): nobody listens there.
    tokenstore.open("mysql://nobody:pw@127.0.0.1:1/none")


def _unsupported(tmp_path):
    tokenstore.open("memory:", key=os.urandom(32))


def _not_found(tmp_path):
    with tokenstore.open("memory:") as store:
        store.access_token(user_name="nobody@example.com")


def _not_refreshable(tmp_path):
    with tokenstore.open("memory:") as store:
        store.save(Token(user_name=USER, access_token="1000.a", expiry_time=now_ms() - 1))
        store.access_token(user_name=USER)


def _invalid_accounts_url(tmp_path):
    with tokenstore.open("memory:") as store:
        store.access_token(user_name=USER, accounts_url="ftp://accounts.example.com")


def _grant_refused(tmp_path):
    with FakeZoho() as zoho, tokenstore.open("memory:") as store:
        zoho.add_client(CLIENT_ID, CLIENT_SECRET)  # which knows no refresh token
        store.save(Token(user_name=USER, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=REFRESH,
                         access_token="1000.a", expiry_time=now_ms() - 1))
        store.access_token(user_name=USER, accounts_url=zoho.base)


CASES = [
    (_invalid_token, tokenstore.InvalidTokenError),
    (_conflict, tokenstore.ConflictError),
    (_locked, tokenstore.LockedError),
    (_wrong_key, tokenstore.EncryptionKeyError),
    (_malformed_key, tokenstore.EncryptionKeyError),
    (_invalid_url, tokenstore.Error),
    (_store_not_found, tokenstore.Error),
    (_unknown_scheme, tokenstore.Error),
    (_unreachable_server, tokenstore.StorageError),
    (_unreachable_mysql, tokenstore.StorageError),
    (_unsupported, tokenstore.UnsupportedError),
    (_not_found, tokenstore.NotFoundError),
    (_not_refreshable, tokenstore.NotRefreshableError),
    (_invalid_accounts_url, tokenstore.OAuthError),
    (_grant_refused, tokenstore.GrantRefusedError),
]


@pytest.mark.parametrize("cause, expected", CASES, ids=[cause.__name__.lstrip("_") for cause, _ in CASES])
def test_each_kind_of_error_raises_its_class(tmp_path, cause, expected):
    with pytest.raises(tokenstore.Error) as raised:
        cause(tmp_path)
    assert type(raised.value) is expected, f"{type(raised.value).__name__}: {raised.value}"


def test_a_conflict_names_its_field_and_holder(tmp_path):
    with pytest.raises(tokenstore.ConflictError) as raised:
        _conflict(tmp_path)
    assert (raised.value.field, raised.value.holder_id) == ("refresh_token", "1")


def test_a_store_string_with_an_unknown_scheme_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for spec in ("sqlite:///tokens.db", "mysql-x://app:hunter2@db.internal/app"):
        with pytest.raises(tokenstore.Error) as raised:
            tokenstore.open(spec)
        message = str(raised.value)
        assert f"tokenstore knows no `{spec.split(':')[0]}://` stores" in message, message
        assert "hunter2" not in message, message
    assert list(tmp_path.iterdir()) == [], "a store string with a scheme was taken for a directory"
