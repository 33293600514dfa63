"""tokenstore: an embedded, crash-safe store for OAuth tokens.

The plain API, for code without the Zoho SDK::

    import tokenstore

    with tokenstore.open("/var/lib/myapp/tokens") as store:
        saved = store.save(tokenstore.Token(user_name="ana@example.com",
                                            refresh_token="1000.r", client_id="1000.C",
                                            client_secret="s"))
        same = store.find(user_name="ana@example.com")
        assert same == saved

For the Zoho CRM Python SDK, ``from tokenstore.zoho import Store`` gives a
drop-in ``TokenStore`` (see ``tokenstore.zoho``).

Which stored record a query designates, how a save merges, and which values
must be unique are decided by the Rust engine (docs/SPEC.md §2, §3), never here.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Union

from . import _native
from ._native import (
    ClosedError,
    ConflictError,
    CorruptionError,
    EncryptionKeyError,
    Error,
    ForkedError,
    GrantRefusedError,
    InvalidTokenError,
    LockedError,
    NotFoundError,
    NotRefreshableError,
    OAuthError,
    StorageError,
    UnsupportedError,
    UnsupportedVersionError,
)

__all__ = [
    "Token",
    "Store",
    "open",
    "KEY_ENV",
    "Error",
    "InvalidTokenError",
    "ConflictError",
    "CorruptionError",
    "LockedError",
    "UnsupportedVersionError",
    "EncryptionKeyError",
    "StorageError",
    "UnsupportedError",
    "ClosedError",
    "ForkedError",
    "NotFoundError",
    "NotRefreshableError",
    "OAuthError",
    "GrantRefusedError",
    "AccessToken",
]

#: The package's version (the same as the wheel's and the crate's).
__version__: str = _native.__version__

#: The environment variable holding the base64 key of an encrypted store,
#: used when no key is given.
KEY_ENV = "TOKENSTORE_KEY"

#: The fields that hold secrets: never shown by ``repr``. From the engine's
#: one list of a token's fields, ``_native.FIELDS``.
SECRET_FIELDS = frozenset(name for name, secret in _native.FIELDS if secret)

Key = Union[str, bytes]


@dataclasses.dataclass(repr=False)
class Token:
    """One stored OAuth token. Every field is optional; an empty string means
    the same as ``None``.

    ``expiry_time`` is when the access token expires, in milliseconds since
    the Unix epoch. ``repr`` never shows the four secrets (``client_secret``,
    ``refresh_token``, ``access_token``, ``grant_token``), only whether they
    are present::

        >>> Token(user_name="ana", refresh_token="1000.secret")
        Token(user_name='ana', refresh_token=[redacted])
    """

    id: Optional[str] = None
    user_name: Optional[str] = None
    client_id: Optional[str] = None
    client_secret: Optional[str] = None
    refresh_token: Optional[str] = None
    access_token: Optional[str] = None
    grant_token: Optional[str] = None
    expiry_time: Optional[int] = None
    redirect_url: Optional[str] = None
    api_domain: Optional[str] = None

    def __repr__(self) -> str:
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            shown.append(f"{f.name}=[redacted]" if f.name in SECRET_FIELDS else f"{f.name}={value!r}")
        return f"Token({', '.join(shown)})"

    __str__ = __repr__

    def to_dict(self) -> Dict[str, Any]:
        """The fields as a dict (secrets included: handle with care)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> "Token":
        """A token from a mapping of its field names."""
        return cls(**fields)


# Token spells its fields out, for type checkers and readers; they must be
# the engine's, in its order: the native module converts by these names.
_TOKEN_FIELDS = tuple(f.name for f in dataclasses.fields(Token))
_ENGINE_FIELDS = tuple(name for name, _ in _native.FIELDS)
if _TOKEN_FIELDS != _ENGINE_FIELDS:
    raise ImportError(
        f"tokenstore.Token has the fields {', '.join(_TOKEN_FIELDS)}, its native module "
        f"{', '.join(_ENGINE_FIELDS)}: the package's Python files and native module "
        "disagree (reinstall it, or give Token the engine's fields in the engine's order)"
    )


@dataclasses.dataclass(frozen=True, repr=False)
class AccessToken:
    """A valid access token, from :meth:`Store.access_token`.

    ``str``, ``repr`` and ``format`` (so ``print``, f-strings and logging)
    never show the token itself, only its record's id, expiry and API
    domain; :attr:`token` is the value and :attr:`authorization` the header
    value Zoho's APIs expect::

        >>> token = AccessToken("1000.secret", "3", None, None)
        >>> print(token)
        AccessToken(id='3', token=[redacted], expiry_time=None, api_domain=None)
        >>> f"{token}" == str(token) == repr(token)
        True
        >>> token.authorization
        'Zoho-oauthtoken 1000.secret'
    """

    token: str
    id: str
    expiry_time: Optional[int]
    api_domain: Optional[str]

    @property
    def authorization(self) -> str:
        """``Zoho-oauthtoken <token>``: the ``Authorization`` header value."""
        return f"Zoho-oauthtoken {self.token}"

    def __repr__(self) -> str:
        return f"AccessToken(id={self.id!r}, token=[redacted], expiry_time={self.expiry_time!r}, api_domain={self.api_domain!r})"

    __str__ = __repr__


def _resolve_key(key: Optional[Key]) -> Optional[Key]:
    if key is not None:
        return key
    from_env = os.environ.get(KEY_ENV)
    return from_env if from_env else None


class Store:
    """An open token store. Use :func:`open` to get one.

    Safe to share between threads (every call releases the GIL) and, for an
    embedded store opened as usual, between processes: every local process
    that opens the directory uses the same store, and a store opened before
    ``os.fork()`` works in the child. A store opened with ``exclusive=True``,
    a ``postgres://`` and a ``memory:`` store belong to the process that
    opened them: after ``os.fork()`` the child gets :class:`ForkedError` and
    must open its own.
    """

    __slots__ = ("_native",)

    def __init__(
        self,
        db: Union[str, "os.PathLike[str]"],
        key: Optional[Key] = None,
        *,
        create: bool = True,
        exclusive: bool = False,
        owner_timeout: Optional[float] = None,
    ) -> None:
        self._native = _native.NativeStore(os.fspath(db), _resolve_key(key), create, exclusive, owner_timeout)

    def find(
        self,
        *,
        user_name: Optional[str] = None,
        access_token: Optional[str] = None,
        refresh_token: Optional[str] = None,
        grant_token: Optional[str] = None,
        client_id: Optional[str] = None,
        client_secret: Optional[str] = None,
        id: Optional[str] = None,
    ) -> Optional[Token]:
        """The stored token the query designates, or ``None``.

        The engine picks the record by the first rule that holds: the user
        name; else the access token (when no client id/secret is given);
        else the grant or refresh token (with client id and secret); else
        the id. Values compare exactly.
        """
        query = Token(
            id=id,
            user_name=user_name,
            client_id=client_id,
            client_secret=client_secret,
            refresh_token=refresh_token,
            access_token=access_token,
            grant_token=grant_token,
        )
        return self.find_token(query)

    def find_token(self, query: Token) -> Optional[Token]:
        """Like :meth:`find`, with the query as a :class:`Token`."""
        found = self._native.find(query.to_dict())
        return None if found is None else Token(**found)

    def get(self, id: str) -> Optional[Token]:
        """The token with this id, or ``None``."""
        found = self._native.get(id)
        return None if found is None else Token(**found)

    def save(self, token: Token) -> Token:
        """Inserts or updates ``token`` and returns it as now stored (id set,
        fields it lacked filled from the stored record). ``token`` itself is
        not changed.

        Raises :class:`InvalidTokenError` when it has no access, refresh or
        grant token, :class:`ConflictError` when a unique value (user name,
        access, refresh or grant token) belongs to another record.
        """
        return Token(**self._native.save(token.to_dict()))

    def delete(self, id: str) -> bool:
        """Removes the token ``id``; whether it existed."""
        return self._native.delete(id)

    def all(self) -> List[Token]:
        """Every stored token, in no particular order."""
        return [Token(**fields) for fields in self._native.all()]

    def __iter__(self) -> Iterator[Token]:
        return iter(self.all())

    def clear(self) -> int:
        """Removes every token; how many there were."""
        return self._native.clear()

    def access_token(
        self,
        *,
        user_name: Optional[str] = None,
        id: Optional[str] = None,
        query: Optional[Token] = None,
        accounts_url: Optional[str] = None,
        refresh: bool = False,
        min_valid: Optional[float] = None,
    ) -> AccessToken:
        """A valid access token for the record of ``user_name`` (or ``id``,
        or any ``query``): the stored one while it is valid for more than
        the Zoho SDK's 5-second margin, else a new one from the accounts
        server, saved before it is returned.

        Single flight: however many threads ask for the same record at
        once, one refresh request is made and every caller gets its result
        (across the processes sharing an embedded store, or a ``postgres://`` one, too).
        ``refresh=True`` refreshes even a valid token; ``min_valid`` (seconds)
        replaces the 5-second margin, e.g. for a long job.

        ``accounts_url`` is the accounts server's base URL (e.g.
        ``https://accounts.zoho.eu``); by default the one of the record's
        API domain. Raises :class:`NotFoundError`,
        :class:`NotRefreshableError`, :class:`GrantRefusedError` (log in
        again), :class:`OAuthError`; the store is unchanged on each.
        """
        if query is None:
            query = Token(user_name=user_name, id=id)
        min_valid_ms = None if min_valid is None else int(min_valid * 1000)
        got = self._native.access_token(query.to_dict(), accounts_url, refresh, min_valid_ms)
        return AccessToken(got["access_token"], got["id"], got["expiry_time"], got["api_domain"])

    def login(
        self,
        user_name: str,
        client_id: str,
        client_secret: str,
        grant_code: str,
        *,
        redirect_url: Optional[str] = None,
        accounts_url: Optional[str] = None,
    ) -> Token:
        """Exchanges a grant code from Zoho's consent page and saves the
        tokens under ``user_name``; returns the record as stored."""
        return Token(**self._native.login(user_name, client_id, client_secret, grant_code, redirect_url, accounts_url))

    def revoke(self, id: str, *, accounts_url: Optional[str] = None) -> bool:
        """Revokes the refresh token of record ``id`` at the accounts server,
        then deletes the record; whether the server was asked."""
        return self._native.revoke(id, accounts_url)

    def info(self) -> Dict[str, Any]:
        """What the store is and who serves it, as a dict: ``kind``, ``db``,
        ``size_bytes`` (``None`` when the backend cannot tell),
        ``format_version``, ``encrypted``, ``shared``, and for a shared
        embedded store ``role`` (``"owner"``: this process holds the files
        and serves the others; ``"client"``: it reaches them through the
        owner), ``owner_pid`` and ``clients`` (how many processes the owner
        serves). Those three are ``None`` when the store is not shared. A
        snapshot: when the owner goes away, another process takes over."""
        return self._native.info()

    def close(self) -> None:
        """Closes the store. An owner of a shared store hands it over to
        another process that has it open (or releases it); an exclusive
        store is released for another process. Harmless when already
        closed."""
        self._native.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._native.closed

    @property
    def db(self) -> str:
        """Where the store is: its directory, or its URL without the
        password."""
        return self._native.db

    @property
    def kind(self) -> str:
        """Which backend holds it: ``"sled"`` (a directory),
        ``"postgres"`` or ``"memory"``."""
        return self._native.kind

    @property
    def shared(self) -> bool:
        """Whether this is an embedded store shared with the other local
        processes that open it (``False`` with ``exclusive=True``, and for
        ``postgres://`` and ``memory:``, which are not files to share)."""
        return self._native.shared

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"tokenstore.Store({self.db!r}{', closed' if self.closed else ''})"


def open(  # noqa: A001
    db: Union[str, "os.PathLike[str]"],
    key: Optional[Key] = None,
    *,
    create: bool = True,
    exclusive: bool = False,
    owner_timeout: Optional[float] = None,
) -> Store:
    """Opens (creating it if needed, unless ``create=False``) the token store
    ``db`` names:

    * a directory: the embedded store, shared by every process of this
      machine and user that opens it (gunicorn, uWSGI and Celery workers,
      a cron job, the ``tokenstore`` command): the first one to open it owns
      it and serves the others over a Unix socket in the directory; when the
      owner goes away, another takes over. A store opened before
      ``os.fork()`` (gunicorn ``--preload``, ``multiprocessing``) works in
      the child;
    * ``postgres://user:password@host/db``: the PostgreSQL store, for
      processes on several machines (the database must exist; the tables
      are made on first use);
    * ``memory:``: a store in this process's memory, gone when closed.

    ``exclusive=True`` opens an embedded store for this process alone, as
    before sharing existed: :class:`LockedError` at once when another
    process has it open, and :class:`ForkedError` when used after a fork.
    ``owner_timeout`` (seconds, default 10): how long a process sharing the
    store waits for the owner to answer or for a take-over before an error.

    ``key`` encrypts the store: the base64 text (what ``tokenstore keygen``
    prints) or the 32 raw bytes; when not given, ``TOKENSTORE_KEY`` from the
    environment, if set.

    ``create=False`` opens only a store that exists: a missing directory,
    or a ``postgres://`` database without tokenstore's tables, raises
    :class:`Error` and nothing is created, so that a mistyped path is an
    error rather than a new, empty store.

    Raises :class:`LockedError` when ``exclusive=True`` and another process
    has it open (or another process holds it exclusively),
    :class:`EncryptionKeyError` for a missing or wrong key.
    """
    return Store(db, key, create=create, exclusive=exclusive, owner_timeout=owner_timeout)
