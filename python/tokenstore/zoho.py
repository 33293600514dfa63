"""A drop-in ``TokenStore`` for the Zoho CRM Python SDK (``zohocrmsdk8-0``,
also ``zohocrmsdk7-0`` and ``zohocrmsdk6-0``)::

    from tokenstore.zoho import Store

    Initializer.initialize(environment=environment, token=token,
                           store=Store("/var/lib/myapp/tokens"))

``Store`` behaves as the SDK's own ``FileStore`` does, with these deliberate
differences:

* **Rule precedence done right.** A query designates a record by the first
  rule whose condition holds (user name; else access token without client
  credentials; else grant/refresh token with client credentials; else id)
  and a rule that holds decides, even when it finds nothing. FileStore
  agrees; the SDK's DBStore gets the precedence wrong.
* **Unique values.** A user name, access, refresh or grant token belongs to
  at most one record: a save that would give one to a second record fails
  (``SDKException`` ``TOKEN_STORE``, and a warning in the ``tokenstore`` log)
  instead of writing a duplicate row that a later lookup might return for
  the wrong user.
* **Id-only lookups.** ``find_token`` of a token carrying only an id finds
  that record (FileStore finds nothing), so the SDK's ``revoke(id)`` really
  reaches the accounts server.
* **Saves need a token.** A token with none of access, refresh or grant token
  is refused in every case (FileStore refuses it only for new records).
* **Crash-safe and atomic.** Every save is flushed before it returns; two
  threads never interleave their writes.
* **Many workers, one store.** Every local process that opens the same
  directory shares it (gunicorn and uWSGI workers, with or without
  ``--preload``; Celery prefork; a cron job); nothing to configure.
* **Opt-in: one refresh instead of N.** ``Store(db, refresh=True)`` makes
  ``find_token`` and ``find_token_by_id`` hand the SDK a token valid past
  its 5-second margin, refreshing it first at the accounts server of the
  SDK's environment, single-flight: N threads or N worker processes asking
  at once cause one refresh request, where the SDK alone makes N and saves
  N times. The token ``find_token`` fills then takes the
  stored access token, expiry and refresh token even where it had its own.
  Tokens are handed out valid for at least 6 s (the SDK's 5 s margin plus
  one, so the SDK never refreshes right after), so a token that lives less
  than that is refreshed on every call.

This is the only module of the package that imports the SDK.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Union

try:
    from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
    from zohocrmsdk.src.com.zoho.api.authenticator.store.token_store import TokenStore
    from zohocrmsdk.src.com.zoho.crm.api.exception.sdk_exception import SDKException
    from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer
    from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature
except ImportError as _missing:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "tokenstore.zoho needs the Zoho CRM Python SDK, which is not installed; "
        "install it with `pip install zohocrmsdk8-0` (or `pip install 'tokenstore[zoho]'`). "
        "Without the SDK, use the plain API: `tokenstore.open(db)`."
    ) from _missing

import tokenstore
from tokenstore import Token

__all__ = ["Store", "TOKEN_STORE"]

#: The ``SDKException`` code of every error this store raises (the SDK's own
#: stores use the same).
TOKEN_STORE = "TOKEN_STORE"

log = logging.getLogger("tokenstore")

#: With ``refresh=True``, how long a token handed to the SDK stays valid at
#: least: the SDK's own 5-second margin plus a second, so that the SDK,
#: checking a moment later, never finds it due and refreshes it again.
_MIN_VALID_S = 6.0



def _error(message: str, cause: Optional[BaseException] = None) -> SDKException:
    # SDKException appends str(cause) to its message; tokenstore's messages
    # never hold a secret, so that is safe.
    err = SDKException(code=TOKEN_STORE, message=message, cause=cause)
    err.__cause__ = cause
    return err


def _check_id(id: Any) -> None:
    # FileStore compares ids as strings: anything else matches nothing.
    if not isinstance(id, str):
        raise _error(f"no token with id {id!r}: ids are strings")


def _expiry_from_sdk(expires_in: Any) -> Optional[int]:
    # The SDK keeps the expiry as epoch milliseconds in a str.
    if expires_in is None or str(expires_in) == "":
        return None
    try:
        return int(expires_in)
    except (TypeError, ValueError):
        raise _error(
            "the token's expires_in is not an expiry time in milliseconds since the Unix epoch"
        ) from None


#: The SDK's OAuthToken names two fields differently: the user is its user
#: signature, the expiry ``expires_in``.
_SDK_NAMES = {"user_name": "user_signature", "expiry_time": "expires_in"}

#: Every field of a token (the engine's list, in its order), with the name
#: of the SDK's ``get_``/``set_`` methods for it.
_FIELDS = tuple((name, _SDK_NAMES.get(name, name)) for name, _ in tokenstore._native.FIELDS)

#: The conversions of the two fields the SDK holds in another form.
_FROM_SDK = {
    "user_name": lambda signature: None if signature is None else signature.get_name(),
    "expiry_time": _expiry_from_sdk,
}
_TO_SDK = {"user_name": UserSignature, "expiry_time": str}

_missing_accessors = [
    f"{verb}_{sdk}" for _, sdk in _FIELDS for verb in ("get", "set") if not hasattr(OAuthToken, f"{verb}_{sdk}")
]
if _missing_accessors:  # pragma: no cover - an SDK that is not a drop-in target
    raise ImportError(
        f"the installed Zoho CRM SDK's OAuthToken lacks {', '.join(_missing_accessors)}, "
        "which tokenstore.zoho needs for the fields of a token; install zohocrmsdk8-0"
    )


def _to_token(oauth_token: Any, *, with_expiry: bool = True) -> Token:
    """The SDK's OAuthToken as a plain Token: the user is the user
    signature's name, ``expires_in`` (epoch ms as a str) the expiry, left
    out when ``with_expiry`` is false. Only reads ``oauth_token``."""
    fields: Dict[str, Any] = {}
    for name, sdk in _FIELDS:
        if name == "expiry_time" and not with_expiry:
            continue
        value = getattr(oauth_token, f"get_{sdk}")()
        convert = _FROM_SDK.get(name)
        fields[name] = convert(value) if convert else value
    return Token(**fields)


def _fill(oauth_token: Any, stored: Token) -> None:
    """Sets the fields ``oauth_token`` lacks (``None``) from ``stored``, as
    FileStore's ``set_merge_data`` does."""
    for name, sdk in _FIELDS:
        if getattr(oauth_token, f"get_{sdk}")() is not None:
            continue
        value = getattr(stored, name)
        convert = _TO_SDK.get(name)
        if convert is not None:
            if value is None:
                continue  # no UserSignature(None), no "None"
            value = convert(value)
        getattr(oauth_token, f"set_{sdk}")(value)


def _new_oauth_token(stored: Token) -> Any:
    """A new, complete OAuthToken built as FileStore builds one (its
    ``__init__`` refuses some field combinations, so it is bypassed)."""
    oauth_token = object.__new__(OAuthToken)
    for _, sdk in _FIELDS:
        getattr(oauth_token, f"set_{sdk}")(None)
    _fill(oauth_token, stored)
    return oauth_token


class Store(TokenStore):
    """The Zoho SDK's ``TokenStore``, kept in tokenstore.

    ``db`` is a directory, the embedded store, which every local process
    (every worker) that opens it shares, or a ``postgres://`` URL, for
    workers on several machines (see :func:`tokenstore.open`).
    ``exclusive=True`` keeps an embedded store to this process alone;
    ``owner_timeout`` (seconds) is how long a process sharing it waits for
    the process serving it.
    ``key`` encrypts it: the base64 text or the 32 raw bytes; when not given,
    ``TOKENSTORE_KEY`` from the environment, if set. ``refresh=True``: hand
    the SDK tokens refreshed single-flight (see the module's docs). Like
    FileStore, a missing store is created; ``create=False`` refuses it
    instead (nothing is created), for a worker that must find the tokens
    another process saved.

    Every error is an ``SDKException`` with code ``TOKEN_STORE``, a message
    that never holds a secret, and the tokenstore error as its cause.
    """

    def __init__(
        self,
        db: Union[str, "os.PathLike[str]"],
        *,
        key: Union[str, bytes, None] = None,
        refresh: bool = False,
        create: bool = True,
        exclusive: bool = False,
        owner_timeout: Optional[float] = None,
    ) -> None:
        try:
            self._store = tokenstore.open(db, key=key, create=create, exclusive=exclusive, owner_timeout=owner_timeout)
        except tokenstore.Error as e:
            raise _error(f"cannot open the token store: {e}", e) from e
        self._refresh = refresh

    def _refreshed(self, query: Token) -> Optional[str]:
        """With ``refresh=True``: makes the record ``query`` designates valid
        past the SDK's margin (single flight), at the accounts server of the
        SDK's environment, and returns its id; ``None`` when it did not, and
        the SDK then decides as it always does."""
        if not self._refresh:
            return None
        initializer = Initializer.get_initializer()
        accounts_url = getattr(getattr(initializer, "environment", None), "accounts_url", None)
        suffix = "/oauth/v2/token"
        if not isinstance(accounts_url, str) or not accounts_url.endswith(suffix):
            return None  # never guess an accounts server
        try:
            got = self._store.access_token(query=query, accounts_url=accounts_url[: -len(suffix)], min_valid=_MIN_VALID_S)
        except (tokenstore.NotFoundError, tokenstore.NotRefreshableError, tokenstore.InvalidTokenError):
            return None
        except tokenstore.Error as e:
            log.warning("tokenstore: could not refresh the token before handing it to the SDK (%s); the SDK will try", e)
            return None
        return got.id

    # -- the SDK's six methods -------------------------------------------

    def find_token(self, token: Any) -> Any:
        """Fills the fields ``token`` lacks from the stored record it
        designates and returns that same object; ``None`` when there is no
        such record. Like FileStore, anything but an OAuthToken is returned
        as it is. Unlike FileStore, a token carrying only an id finds its
        record (so ``revoke(id)`` works)."""
        if not isinstance(token, OAuthToken):
            return token
        # The expiry plays no part in a lookup; a malformed one is the
        # SDK's business until the token is saved. The query is built
        # without writing to ``token``: the SDK shares it between threads.
        query = _to_token(token, with_expiry=False)
        fresh = self._refreshed(query)
        try:
            # After a refresh the query's own access token may no longer
            # designate the record: read it by id.
            stored = self._store.get(fresh) if fresh else self._store.find_token(query)
        except tokenstore.Error as e:
            raise _error(f"cannot find the token: {e}", e) from e
        if stored is None:
            return None
        if fresh:
            # What the store holds now is newer than what the SDK's object
            # remembers from an earlier call.
            token.set_access_token(stored.access_token)
            token.set_expires_in(None if stored.expiry_time is None else str(stored.expiry_time))
            if stored.refresh_token is not None:
                token.set_refresh_token(stored.refresh_token)
            if stored.api_domain is not None:
                token.set_api_domain(stored.api_domain)
        _fill(token, stored)
        return token

    def save_token(self, token: Any) -> None:
        """Inserts or updates ``token``, then sets its id (and fills the
        fields it lacks from the stored record, as FileStore does).

        The SDK catches every exception from ``save_token`` and only logs
        it; a failure is therefore also logged here, as a warning on the
        ``tokenstore`` logger, so it is never silent."""
        if not isinstance(token, OAuthToken):
            return
        try:
            saved = self._store.save(_to_token(token))
        except tokenstore.Error as e:
            log.warning("tokenstore: the Zoho SDK's token was NOT saved: %s", e)
            raise _error(f"cannot save the token: {e}", e) from e
        except SDKException as e:
            log.warning("tokenstore: the Zoho SDK's token was NOT saved: %s", e)
            raise
        token.set_id(saved.id)
        _fill(token, saved)

    def delete_token(self, id: str) -> None:
        """Removes the token ``id``; an unknown id raises SDKException, as
        with FileStore."""
        _check_id(id)
        try:
            existed = self._store.delete(id)
        except tokenstore.Error as e:
            raise _error(f"cannot delete the token: {e}", e) from e
        if not existed:
            raise _error(f"no token with id {id!r}: given id not found")

    def get_tokens(self) -> List[Any]:
        """Every stored token, as new complete OAuthToken objects."""
        try:
            return [_new_oauth_token(t) for t in self._store.all()]
        except tokenstore.Error as e:
            raise _error(f"cannot read the tokens: {e}", e) from e

    def delete_tokens(self) -> None:
        """Removes every token."""
        try:
            self._store.clear()
        except tokenstore.Error as e:
            raise _error(f"cannot delete the tokens: {e}", e) from e

    def find_token_by_id(self, id: str) -> Any:
        """A new, complete OAuthToken for the record ``id``; an unknown id
        raises SDKException, as with FileStore."""
        _check_id(id)
        self._refreshed(Token(id=id))
        try:
            stored = self._store.get(id)
        except tokenstore.Error as e:
            raise _error(f"cannot find the token: {e}", e) from e
        if stored is None:
            raise _error(f"no token with id {id!r}: given id is invalid")
        return _new_oauth_token(stored)

    # -- beyond the SDK ---------------------------------------------------

    @property
    def tokens(self) -> tokenstore.Store:
        """The underlying plain store (``tokenstore.Store``)."""
        return self._store

    def close(self) -> None:
        """Closes the store (see :meth:`tokenstore.Store.close`)."""
        self._store.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"tokenstore.zoho.Store({self._store.db!r})"

