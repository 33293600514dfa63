"""The plain API (``tokenstore.open``, ``Token``) without the Zoho SDK:
hostile values stored as plain data, encryption at rest, errors."""

from __future__ import annotations

import base64
import os

import pytest

import tokenstore
from tokenstore import Token

HOSTILE = [
    "o'brien@example.com",
    'say "hi"',
    "'; DROP TABLE oauthtoken; --",
    "\" OR 1=1 --",
    "a,b\r\nc,d",  # breaks a CSV row
    "ünïcödé ✓ 漢字 🔑",
    "\x00nul\x00",
    "x" * 65536,
]


def test_save_find_get_all_delete_clear(tmp_path):
    with tokenstore.open(tmp_path / "db") as store:
        saved = store.save(Token(user_name="ana", client_id="c", client_secret="s", refresh_token="1000.r", expiry_time=123))
        assert saved.id == "1" and saved.expiry_time == 123
        assert store.find(user_name="ana") == saved
        assert store.find(refresh_token="1000.r", client_id="c", client_secret="s") == saved
        assert store.find(id="1") == saved
        assert store.get("1") == saved
        assert store.get("2") is None
        assert store.find(user_name="bob") is None
        assert store.find() is None  # no rule holds: nothing, never "the first record"
        # An update merges: absent fields keep their stored values.
        updated = store.save(Token(id="1", access_token="1000.a"))
        assert (updated.user_name, updated.refresh_token, updated.access_token) == ("ana", "1000.r", "1000.a")
        store.save(Token(user_name="bob", refresh_token="1000.r2"))
        assert sorted(t.id for t in store.all()) == ["1", "2"]
        assert store.delete("1") is True and store.delete("1") is False
        assert store.clear() == 1 and store.all() == []
    assert store.closed
    with pytest.raises(tokenstore.ClosedError):
        store.all()
    store.close()  # twice is harmless


def test_save_returns_a_new_token_and_leaves_the_argument(tmp_path):
    with tokenstore.open(tmp_path / "db") as store:
        token = Token(user_name="ana", refresh_token="1000.r")
        saved = store.save(token)
        assert token.id is None and saved.id == "1"


def test_errors_are_matchable_and_secret_free(tmp_path):
    with tokenstore.open(tmp_path / "db") as store:
        store.save(Token(user_name="ana", refresh_token="1000.secret-r"))
        with pytest.raises(tokenstore.ConflictError) as raised:
            store.save(Token(user_name="bob", refresh_token="1000.secret-r"))
        assert raised.value.field == "refresh_token" and raised.value.holder_id == "1"
        assert "1000.secret-r" not in str(raised.value)
        with pytest.raises(tokenstore.InvalidTokenError):
            store.save(Token(user_name="carl"))
        with pytest.raises(tokenstore.InvalidTokenError):
            store.save(Token(user_name="carl", refresh_token=42))  # type: ignore[arg-type]
        assert issubclass(tokenstore.ConflictError, tokenstore.Error)
        assert [t.user_name for t in store.all()] == ["ana"]


def test_repr_redacts_secrets():
    token = Token(id="1", user_name="ana", client_secret="cs-1", refresh_token="rt-1", access_token="at-1", grant_token="gt-1")
    shown = repr(token) + str(token) + repr([token]) + f"{token}" + format(token) + "%s" % (token,)
    for secret in ("cs-1", "rt-1", "at-1", "gt-1"):
        assert secret not in shown
    assert "ana" in shown and "[redacted]" in shown


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_values_are_plain_data(tmp_path, value):
    with tokenstore.open(tmp_path / "db") as store:
        other = store.save(Token(user_name="innocent", refresh_token="1000.innocent"))
        saved = store.save(
            Token(user_name=value, refresh_token=value + "-r", access_token=value + "-a", client_id=value, api_domain=value)
        )
        assert saved.id == "2"
        assert store.find(user_name=value) == saved
        assert store.find(access_token=value + "-a") == saved
        assert store.find(refresh_token=value + "-r", client_id="c", client_secret="s") == saved
        # Near misses find nothing: values compare byte for byte.
        assert store.find(user_name=value[:-1]) is None
        assert store.get("1") == other
    with tokenstore.open(tmp_path / "db") as store:
        assert store.get("2") == saved


def test_encrypted_store_leaves_no_secret_on_disk(tmp_path):
    key = base64.b64encode(os.urandom(32)).decode()
    secrets = {
        "user_name": "marker-user@example.com",
        "client_secret": "marker-client-secret",
        "refresh_token": "marker-refresh-token",
        "access_token": "marker-access-token",
        "grant_token": "marker-grant-token",
        "api_domain": "https://marker-domain.example",
    }
    with tokenstore.open(tmp_path / "db", key=key) as store:
        for i in range(50):
            store.save(Token(**{k: f"{v}-{i}" for k, v in secrets.items()}))
        assert store.find(user_name="marker-user@example.com-7").refresh_token == "marker-refresh-token-7"
    scanned = 0
    for root, _, files in os.walk(tmp_path / "db"):
        for name in files:
            data = open(os.path.join(root, name), "rb").read()
            scanned += len(data)
            for value in secrets.values():
                for form in (value.encode(), value.encode("utf-16-le")):
                    assert form not in data, f"{value!r} found in {name}"
    assert scanned > 0
    # Without the key, or with another key: a clear error, nothing decrypted.
    with pytest.raises(tokenstore.EncryptionKeyError, match="encrypted"):
        tokenstore.open(tmp_path / "db")
    with pytest.raises(tokenstore.EncryptionKeyError, match="wrong key"):
        tokenstore.open(tmp_path / "db", key=os.urandom(32))
    with tokenstore.open(tmp_path / "db", key=base64.b64decode(key)) as store:
        assert len(store.all()) == 50


def test_the_plain_store_holds_the_marker_on_disk(tmp_path):
    # The counter-check of the scan above: unencrypted, the marker is found.
    with tokenstore.open(tmp_path / "db") as store:
        store.save(Token(user_name="u", refresh_token="marker-refresh-token"))
    found = False
    for root, _, files in os.walk(tmp_path / "db"):
        for name in files:
            found |= b"marker-refresh-token" in open(os.path.join(root, name), "rb").read()
    assert found


def test_bad_keys_are_refused_without_echoing_them(tmp_path):
    with pytest.raises(tokenstore.EncryptionKeyError) as raised:
        tokenstore.open(tmp_path / "db", key="not-base64-key!!")
    assert "not-base64-key" not in str(raised.value)
    with pytest.raises(tokenstore.EncryptionKeyError, match="32 bytes"):
        tokenstore.open(tmp_path / "db2", key=b"short")


def test_one_string_names_the_backend(tmp_path):
    with tokenstore.open(tmp_path / "db") as store:
        assert (store.kind, store.db) == ("sled", str(tmp_path / "db"))
    with tokenstore.open("memory:") as store:
        assert store.kind == "memory"
        assert store.save(Token(user_name="ana", refresh_token="r")).id == "1"
        assert store.find(user_name="ana").refresh_token == "r"
    with pytest.raises(tokenstore.UnsupportedError):
        tokenstore.open("memory:", key=os.urandom(32))
    # Without the PostgreSQL backend in the engine: UnsupportedError; with
    # it, a connection error (nothing listens on port 1). Never a crash.
    with pytest.raises(tokenstore.Error) as raised:
        tokenstore.open("postgres://nobody:pw-secret-1@127.0.0.1:1/none")
    assert "pw-secret-1" not in str(raised.value)


def test_docstring_examples_run():
    import doctest

    result = doctest.testmod(tokenstore)
    assert result.attempted > 0 and result.failed == 0


def test_an_access_token_shows_redacted_everywhere_but_its_explicit_accessors(caplog, capsys):
    import logging

    secret = "1000.access-token-secret-7"
    token = tokenstore.AccessToken(secret, "3", 1_700_000_000_000, "https://www.zohoapis.com")
    caplog.set_level(logging.INFO, logger="tokenstore-test")
    logging.getLogger("tokenstore-test").info("token %s", token)
    logging.getLogger("tokenstore-test").info("token %r", token)
    print(token, [token])
    shown = {
        "str": str(token),
        "repr": repr(token),
        "format": format(token),
        "f-string": f"{token}",
        "f-string !s": f"{token!s}",
        "f-string !r": f"{token!r}",
        "%s": "%s" % (token,),
        "str.format": "{}".format(token),
        "a list": str([token]),
        "print": capsys.readouterr().out,
        "log": caplog.text,
    }
    for how, text in shown.items():
        assert secret not in text, f"{how} shows the access token"
        assert "[redacted]" in text and "'3'" in text, f"{how}: {text!r}"
    assert len(caplog.records) == 2
    # The explicit ways still give the value.
    assert token.token == secret
    assert token.authorization == f"Zoho-oauthtoken {secret}"


def test_errors_about_a_secret_never_echo_it(tmp_path):
    with tokenstore.open(tmp_path / "db") as store:
        store.save(Token(user_name="ana", client_id="c", client_secret="cs-secret-1", refresh_token="rt-secret-1", access_token="at-secret-1"))
        raised = []
        for query in (
            Token(access_token="at-secret-2"),
            Token(refresh_token="rt-secret-2", client_id="c", client_secret="cs-secret-2"),
            Token(grant_token="gt-secret-2", client_id="c", client_secret="cs-secret-2"),
        ):
            with pytest.raises(tokenstore.NotFoundError) as e:
                store.access_token(query=query)
            raised.append(e.value)
        with pytest.raises(tokenstore.ConflictError) as e:
            store.save(Token(user_name="bob", access_token="at-secret-1"))
        raised.append(e.value)
        with pytest.raises(tokenstore.InvalidTokenError) as e:
            store.save(Token(user_name="bob", refresh_token="rt-secret-3", client_secret=b"cs-secret-3"))  # type: ignore[arg-type]
        raised.append(e.value)
        for err in raised:
            shown = str(err) + repr(err) + repr(err.args)
            for secret in ("cs-secret-1", "rt-secret-1", "at-secret-1", "at-secret-2", "rt-secret-2", "cs-secret-2", "gt-secret-2", "rt-secret-3", "cs-secret-3"):
                assert secret not in shown, f"{type(err).__name__} shows {secret}: {shown}"


def test_a_stores_repr_shows_where_it_is_never_its_key(tmp_path):
    key = base64.b64encode(os.urandom(32)).decode()
    with tokenstore.open(tmp_path / "db", key=key) as store:
        shown = repr(store) + str(store) + f"{store}"
        assert str(tmp_path / "db") in shown and key not in shown


ENGINE_FIELDS = (
    ("id", False),
    ("user_name", False),
    ("client_id", False),
    ("client_secret", True),
    ("refresh_token", True),
    ("access_token", True),
    ("grant_token", True),
    ("expiry_time", False),
    ("redirect_url", False),
    ("api_domain", False),
)


def test_token_has_the_engines_fields_and_secrets():
    import dataclasses

    assert tokenstore._native.FIELDS == ENGINE_FIELDS
    assert tuple(f.name for f in dataclasses.fields(Token)) == tuple(name for name, _ in ENGINE_FIELDS)
    assert tokenstore.SECRET_FIELDS == {"client_secret", "refresh_token", "access_token", "grant_token"}


def test_every_field_round_trips_with_its_type():
    import dataclasses

    full = Token(user_name="ana", client_id="1000.C", client_secret="cs", refresh_token="1000.r",
                 access_token="1000.a", grant_token="1000.g", expiry_time=1_700_000_000_123,
                 redirect_url="https://example.com/cb", api_domain="https://www.zohoapis.eu")
    with tokenstore.open("memory:") as store:
        saved = store.save(full)
        assert saved == dataclasses.replace(full, id=saved.id) and saved.id
        assert store.get(saved.id) == saved == store.all()[0]
        assert type(saved.expiry_time) is int
        # Empty strings are absent, and a record comes back with every field.
        other = store.save(Token(user_name="bob", refresh_token="1000.r2", client_secret=""))
        assert other == Token(id=other.id, user_name="bob", refresh_token="1000.r2")
        for bad in ("1700000000000", 1.5):
            with pytest.raises(tokenstore.InvalidTokenError, match="expiry_time must be an int"):
                store.save(Token(user_name="carl", refresh_token="1000.r3", expiry_time=bad))  # type: ignore[arg-type]
        with pytest.raises(tokenstore.InvalidTokenError, match="api_domain must be a str"):
            store.save(Token(user_name="carl", refresh_token="1000.r3", api_domain=b"x"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields",
    [
        ENGINE_FIELDS + (("refresh_expiry_time", False),),  # a field the engine gained
        ENGINE_FIELDS[1:] + ENGINE_FIELDS[:1],  # the same fields in another order
    ],
    ids=["one-more", "reordered"],
)
def test_a_token_that_is_not_the_engines_fails_the_import(fields):
    import subprocess
    import sys

    # The native module is loaded by hand, its FIELDS changed, then the
    # package imported over it.
    code = f"""
import importlib.machinery, importlib.util, sys
package = importlib.util.find_spec("tokenstore").submodule_search_locations[0]
found = importlib.machinery.PathFinder.find_spec("_native", [package])
spec = importlib.util.spec_from_file_location("tokenstore._native", found.origin)
native = importlib.util.module_from_spec(spec)
spec.loader.exec_module(native)
native.FIELDS = {fields!r}
sys.modules["tokenstore._native"] = native
try:
    import tokenstore
except ImportError as e:
    print("ImportError:", e)
else:
    print("imported")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ImportError: tokenstore.Token has the fields id, user_name"), out.stdout


def test_create_false_opens_only_an_existing_store(tmp_path):
    missing = tmp_path / "mistyped" / "db"
    empty = tmp_path / "empty"
    empty.mkdir()
    for where in (missing, empty):
        for opening in (lambda: tokenstore.open(where, create=False), lambda: tokenstore.Store(where, create=False)):
            with pytest.raises(tokenstore.Error) as raised:
                opening()
            assert type(raised.value) is tokenstore.Error
            assert str(where) in str(raised.value) and "nothing was created" in str(raised.value)
    assert not (tmp_path / "mistyped").exists()
    assert list(empty.iterdir()) == []
    # An existing store opens as always; the default still creates.
    with tokenstore.open(tmp_path / "db") as store:
        saved = store.save(Token(user_name="ana", refresh_token="1000.r"))
    with tokenstore.open(tmp_path / "db", create=False) as store:
        assert store.get(saved.id) == saved


def test_info_says_what_the_store_is_and_who_serves_it(tmp_path):
    with tokenstore.open(tmp_path / "shared") as store:
        info = store.info()
        assert (info["kind"], info["shared"], info["role"], info["owner_pid"]) == ("sled", True, "owner", os.getpid())
        assert info["clients"] == 0
        assert info["encrypted"] is False and info["format_version"] >= 1
        assert store.shared
    with tokenstore.open(tmp_path / "alone", exclusive=True) as store:
        info = store.info()
        assert (info["kind"], info["shared"], info["role"], info["owner_pid"], info["clients"]) == ("sled", False, None, None, None)
        assert not store.shared
    with tokenstore.open("memory:") as store:
        assert (store.info()["shared"], store.info()["role"], store.shared) == (False, None, False)


def test_a_second_open_in_the_same_process_shares_the_store(tmp_path):
    with tokenstore.open(tmp_path / "db") as first, tokenstore.open(tmp_path / "db", owner_timeout=5) as second:
        saved = second.save(Token(user_name="ana", refresh_token="1000.r"))
        assert first.find(user_name="ana") == saved
        assert second.info()["role"] == "client" and first.info()["role"] == "owner"


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), 1e300])
def test_owner_timeout_must_be_a_positive_finite_number_of_seconds(tmp_path, timeout):
    with pytest.raises(ValueError, match="owner_timeout"):
        tokenstore.open(tmp_path / "db", owner_timeout=timeout)
    assert not (tmp_path / "db").exists()
    tokenstore.open(tmp_path / "db", owner_timeout=2.5).close()
