//! `tokenstore._native`: the thin pyo3 layer between Python and the engine.
//!
//! It converts tokens (Python dicts ⇄ [`OAuthToken`]), maps errors to Python
//! exceptions, and releases the GIL around every call into the engine. It
//! decides nothing: the lookup rules, the upsert and the unique values are
//! the engine's (`tokenstore::TokenStore`). The Pythonic surface (the `Token`
//! dataclass, `tokenstore.open`, the Zoho SDK adapter) lives in
//! `tokenstore/*.py`.

mod logging;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};
use tokenstore::oauth::{AccessToken, Config, Login, OAuthClient};
use tokenstore::{AnyStore, Field, Key, OAuthToken, OpenOptions, Role, TokenStore};
use zeroize::Zeroizing;

type DynStore = dyn TokenStore + Send + Sync;

/// The OAuth clients of a store, one per accounts URL, with the process
/// they were made in.
struct Clients {
    pid: u32,
    by_url: Vec<(Option<String>, Arc<OAuthClient>)>,
}

create_exception!(
    tokenstore,
    Error,
    PyException,
    "Every error of a token store. Messages say what happened and what to do, and never hold a secret."
);
create_exception!(
    tokenstore,
    InvalidTokenError,
    Error,
    "The token cannot be stored as it is (it has no access, refresh or grant token, or a field is malformed)."
);
create_exception!(
    tokenstore,
    ConflictError,
    Error,
    "The save would give a unique value (user name, access, refresh or grant token) to a second record; nothing was written. `field` names the field, `holder_id` the record holding the value."
);
create_exception!(
    tokenstore,
    CorruptionError,
    Error,
    "Stored data could not be decoded or contradicts itself."
);
create_exception!(
    tokenstore,
    LockedError,
    Error,
    "The embedded store is held exclusively: opened with exclusive=True here while another process has it, or held by a process that opened it with exclusive=True. Without exclusive=True every local process shares it."
);
create_exception!(
    tokenstore,
    UnsupportedVersionError,
    Error,
    "The store was written by an on-disk format this version cannot read."
);
create_exception!(
    tokenstore,
    EncryptionKeyError,
    Error,
    "The encryption key is missing, wrong, malformed, or given for a store that is not encrypted."
);
create_exception!(
    tokenstore,
    StorageError,
    Error,
    "An I/O error from the file system or the storage engine, a database server that is unreachable or refused a statement, or a thread of the store that failed while writing (read the record back before repeating the write)."
);
create_exception!(
    tokenstore,
    UnsupportedError,
    Error,
    "The backend cannot do this (for example postgres:// in a build without PostgreSQL support); the message says what to do instead."
);
create_exception!(
    tokenstore,
    NotFoundError,
    Error,
    "No record matches what an access token was asked for; log the user in first."
);
create_exception!(
    tokenstore,
    NotRefreshableError,
    Error,
    "The record lacks the refresh token or client credentials a refresh needs."
);
create_exception!(
    tokenstore,
    OAuthError,
    Error,
    "The accounts server refused a request, could not be reached, or answered nonsense; the store is unchanged."
);
create_exception!(
    tokenstore,
    GrantRefusedError,
    OAuthError,
    "The accounts server refused the refresh token or grant code: the user must log in again."
);
create_exception!(tokenstore, ClosedError, Error, "The store was closed.");
create_exception!(
    tokenstore,
    ForkedError,
    Error,
    "A store that cannot cross a fork (opened with exclusive=True, a postgres:// or memory: store) was opened in a parent process before os.fork(); the child must open its own. A store opened as usual (shared) works in the child."
);

/// The Python exception for an engine error: one class per
/// [`ErrorKind`](tokenstore::ErrorKind), the family the engine files each
/// variant under, so that a new variant needs no change here. A kind newer
/// than this module raises the base `Error`. The engine's messages never
/// hold a secret, so they pass through as they are.
fn to_py(err: tokenstore::Error) -> PyErr {
    use tokenstore::ErrorKind as K;
    let message = err.to_string();
    match err.kind() {
        K::InvalidToken => InvalidTokenError::new_err(message),
        K::Conflict => {
            let err_py = ConflictError::new_err(message);
            if let tokenstore::Error::Conflict { field, id } = err {
                Python::attach(|py| {
                    let value = err_py.value(py);
                    // Attributes are a convenience; failing to set them must
                    // not hide the conflict itself.
                    let _ = value.setattr("field", field.name());
                    let _ = value.setattr("holder_id", id);
                });
            }
            err_py
        }
        K::Corruption => CorruptionError::new_err(message),
        K::Locked => LockedError::new_err(message),
        K::UnsupportedVersion => UnsupportedVersionError::new_err(message),
        K::Key => EncryptionKeyError::new_err(message),
        // A store string that cannot be used or names no store: no class of
        // its own (NotFoundError is about records), the base class.
        K::InvalidLocation => Error::new_err(message),
        K::Storage => StorageError::new_err(message),
        K::Unsupported => UnsupportedError::new_err(message),
        K::NotFound => NotFoundError::new_err(message),
        K::NotRefreshable => NotRefreshableError::new_err(message),
        K::GrantRefused => GrantRefusedError::new_err(message),
        K::OAuth => OAuthError::new_err(message),
        _ => Error::new_err(message),
    }
}

/// How Python asked to open a store.
struct Opening {
    key: Option<Key>,
    create: bool,
    /// Today's exclusive open of an embedded store (`Error::Locked` when
    /// another process has it) instead of sharing it.
    exclusive: bool,
    /// How long a client waits for an owner (to answer, or to take over).
    owner_timeout: Option<Duration>,
}

/// Opens the store named by `db` through the engine's one entry point: a
/// directory is the embedded store (shared by every local process that opens
/// it, unless `exclusive`), `postgres://…` the database backend (when the
/// engine is built with it), `memory:` a store in memory. Unless `create`, a
/// store that does not exist is refused (`StoreNotFound`) and nothing is
/// created.
fn open_store(db: &str, opening: Opening) -> tokenstore::Result<AnyStore> {
    let mut options = OpenOptions::new()
        .maybe_key(opening.key)
        .create(opening.create)
        .exclusive(opening.exclusive);
    if let Some(timeout) = opening.owner_timeout {
        options = options.owner_timeout(timeout);
    }
    tokenstore::open_with(db, options)
}

/// What `info()["role"]` says for a process's part in a shared store.
fn role_name(role: Role) -> &'static str {
    match role {
        Role::Owner => "owner",
        Role::Client => "client",
        // A part newer than this module.
        _ => "other",
    }
}

/// `owner_timeout` in seconds from Python: positive and finite.
fn owner_timeout_from_py(seconds: f64) -> PyResult<Duration> {
    if seconds > 0.0 {
        if let Ok(timeout) = Duration::try_from_secs_f64(seconds) {
            return Ok(timeout);
        }
    }
    Err(pyo3::exceptions::PyValueError::new_err(format!(
        "owner_timeout must be a positive, finite number of seconds, not {seconds:?}"
    )))
}

/// A key given from Python: base64 text (the form of `TOKENSTORE_KEY`) or
/// the 32 raw bytes.
fn key_from_py(key: &Bound<'_, PyAny>) -> PyResult<Key> {
    if key.is_instance_of::<PyString>() {
        // Wiped once parsed: this is the secret itself.
        let text = Zeroizing::new(key.extract::<String>()?);
        return Key::from_base64(&text).map_err(to_py);
    }
    if let Ok(bytes) = key.cast::<PyBytes>() {
        let raw: [u8; Key::LEN] = bytes.as_bytes().try_into().map_err(|_| {
            EncryptionKeyError::new_err(format!(
                "invalid key: a key is {} bytes, this one is {}",
                Key::LEN,
                bytes.as_bytes().len()
            ))
        })?;
        return Ok(Key::from_bytes(raw));
    }
    Err(EncryptionKeyError::new_err(
        "invalid key: give the base64 text (str) or the 32 raw bytes (bytes)",
    ))
}

/// Whether a field's Python value is an `int` rather than a `str`: only
/// `expiry_time`, whose text in the engine's registry is decimal
/// milliseconds.
fn holds_int(field: Field) -> bool {
    field.name() == "expiry_time"
}

/// A token from a dict of its fields, every field of the engine's registry
/// ([`Field::ALL`]) by its name (missing keys and `None` are absent).
fn token_from_py(fields: &Bound<'_, PyDict>) -> PyResult<OAuthToken> {
    let mut token = OAuthToken::default();
    for field in Field::ALL {
        let Some(value) = fields.get_item(field.name())? else {
            continue;
        };
        if value.is_none() {
            continue;
        }
        // Wiped once set: it may be a secret.
        let text = Zeroizing::new(if holds_int(field) {
            value
                .extract::<i64>()
                .map_err(|_| {
                    InvalidTokenError::new_err(format!(
                        "invalid token: {field} must be an int (milliseconds since the Unix epoch)"
                    ))
                })?
                .to_string()
        } else {
            value.extract::<String>().map_err(|_| {
                InvalidTokenError::new_err(format!(
                    "invalid token: {field} must be a str, not {}",
                    value
                        .get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default()
                ))
            })?
        });
        field.set_text(&mut token, Some(&text)).map_err(to_py)?;
    }
    Ok(token)
}

/// The dict of a token: every field of the registry, `None` when absent.
fn token_to_py<'py>(py: Python<'py>, token: &OAuthToken) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for field in Field::ALL {
        let text = Zeroizing::new(field.text(token));
        if holds_int(field) {
            let number = text
                .as_deref()
                .map(str::parse::<i64>)
                .transpose()
                .map_err(|_| CorruptionError::new_err(format!("{field} is not a number")))?;
            dict.set_item(field.name(), number)?;
        } else {
            dict.set_item(field.name(), text.as_deref())?;
        }
    }
    Ok(dict)
}

fn access_token_to_py<'py>(py: Python<'py>, token: &AccessToken) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("access_token", token.secret())?;
    dict.set_item("id", token.id())?;
    dict.set_item("expiry_time", token.expiry_time())?;
    dict.set_item("api_domain", token.api_domain())?;
    Ok(dict)
}

/// One open store, shared by any number of Python threads.
///
/// A shared embedded store (the default for a directory) works in a child
/// made by `os.fork()`: the engine notices the fork and makes the child a
/// client of the owner. Any other store (opened `exclusive=True`, a
/// `postgres://` pool, `memory:`) belongs to the process that opened it:
/// every call checks that it runs there, since the child's copy shares the
/// parent's files, locks or connections and using it could corrupt them.
#[pyclass(frozen, module = "tokenstore._native")]
struct NativeStore {
    /// `None` once closed. The `Arc` lets a call run without holding the
    /// lock, so `close()` never waits for a slow call.
    store: RwLock<Option<Arc<AnyStore>>>,
    /// The process that opened the store.
    pid: u32,
    /// Whether the store is an embedded one shared between local processes
    /// (and so usable across a fork).
    shared: bool,
    /// Where the store is, for messages: a directory, or a URL without its
    /// password (the backend's `location`).
    db: String,
    /// Which backend: "sled", "postgres" or "memory".
    kind: &'static str,
    /// One OAuth client per accounts URL (`None`: Zoho's, from each
    /// record's API domain). Single flight is per client, so every thread
    /// asking through this store shares it.
    /// The clients hold HTTP connections: a forked child makes its own
    /// rather than write to its parent's.
    clients: Mutex<Clients>,
}

impl NativeStore {
    /// The open store, if this process may use it.
    fn open_handle(&self) -> PyResult<Arc<AnyStore>> {
        self.check_process()?;
        self.store.read().clone().ok_or_else(|| {
            ClosedError::new_err(format!(
                "the token store at {} is closed; open it again",
                self.db
            ))
        })
    }

    /// Whether this process may use the store: any process may use a
    /// shared one, only the opener any other.
    fn check_process(&self) -> PyResult<()> {
        let here = std::process::id();
        if here == self.pid || self.shared {
            return Ok(());
        }
        let why = match self.kind {
            "sled" => "it was opened with exclusive=True, which keeps it to one process; \
                       open it without exclusive=True to share it between processes, or"
                .to_owned(),
            kind => {
                format!("a {kind} store's connections and state cannot be shared across a fork;")
            }
        };
        Err(ForkedError::new_err(format!(
            "this token store ({}) was opened in process {} and is used in process {here}, \
             a child made by os.fork(): {why} open the store in each worker after the fork \
             (with gunicorn --preload: in a post_fork hook)",
            self.db, self.pid
        )))
    }

    /// The OAuth client for `accounts_url`, made on first use.
    fn client(&self, accounts_url: Option<String>) -> PyResult<Arc<OAuthClient>> {
        let store: Arc<DynStore> = self.open_handle()?;
        let mut clients = self.clients.lock();
        let here = std::process::id();
        if clients.pid != here {
            // Made before a fork: their kept-alive connections are the
            // parent's sockets (dropping them could even write a TLS close
            // to them), and a flight led by a parent's thread never ends
            // here. Leak them; this process makes its own.
            std::mem::forget(std::mem::take(&mut clients.by_url));
            clients.pid = here;
        }
        if let Some((_, client)) = clients.by_url.iter().find(|(url, _)| *url == accounts_url) {
            return Ok(client.clone());
        }
        let mut config = Config::default();
        if let Some(url) = &accounts_url {
            config = config.accounts_url(url.as_str());
        }
        let client = Arc::new(OAuthClient::with_config(store, config).map_err(to_py)?);
        clients.by_url.push((accounts_url, client.clone()));
        Ok(client)
    }

    /// Runs `op` on the store with the GIL released.
    fn call<T: Send>(
        &self,
        py: Python<'_>,
        op: impl FnOnce(&AnyStore) -> tokenstore::Result<T> + Send,
    ) -> PyResult<T> {
        let store = self.open_handle()?;
        py.detach(|| op(&store)).map_err(to_py)
    }
}

#[pymethods]
impl NativeStore {
    /// Opens `db` (a directory: the embedded store, shared with every
    /// local process that opens it unless `exclusive`), encrypted with `key`
    /// when given (base64 str or 32 bytes); creates it when missing unless
    /// `create` is false. `owner_timeout` (seconds): how long a client of a
    /// shared store waits for its owner.
    #[new]
    #[pyo3(signature = (db, key=None, create=true, exclusive=false, owner_timeout=None))]
    fn new(
        py: Python<'_>,
        db: String,
        key: Option<&Bound<'_, PyAny>>,
        create: bool,
        exclusive: bool,
        owner_timeout: Option<f64>,
    ) -> PyResult<Self> {
        let opening = Opening {
            key: key.map(key_from_py).transpose()?,
            create,
            exclusive,
            owner_timeout: owner_timeout.map(owner_timeout_from_py).transpose()?,
        };
        let (store, shared) = py
            .detach(|| {
                let store = open_store(&db, opening)?;
                let shared = store.info()?.sharing.is_some();
                Ok((store, shared))
            })
            .map_err(to_py)?;
        let pid = std::process::id();
        Ok(NativeStore {
            db: store.location(),
            kind: store.kind(),
            store: RwLock::new(Some(Arc::new(store))),
            pid,
            shared,
            clients: Mutex::new(Clients {
                pid,
                by_url: Vec::new(),
            }),
        })
    }

    /// Size, format and encryption of the store, and for a shared embedded
    /// store who serves it: `role` ("owner" or "client": this process's),
    /// `owner_pid` and `clients` (how many processes the owner serves).
    /// Those three are `None` for a store that is not shared.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let info = self.call(py, |s| s.info())?;
        let dict = PyDict::new(py);
        dict.set_item("kind", self.kind)?;
        dict.set_item("db", &self.db)?;
        dict.set_item("size_bytes", info.size_bytes)?;
        dict.set_item("format_version", info.format_version)?;
        dict.set_item("encrypted", info.encrypted)?;
        dict.set_item("shared", info.sharing.is_some())?;
        let sharing = info.sharing.as_ref();
        dict.set_item("role", sharing.map(|s| role_name(s.role)))?;
        dict.set_item("owner_pid", sharing.map(|s| s.owner_pid))?;
        dict.set_item("clients", sharing.map(|s| s.clients))?;
        Ok(dict)
    }

    /// The stored record the engine's lookup key of `query` designates.
    fn find<'py>(
        &self,
        py: Python<'py>,
        query: &Bound<'py, PyDict>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let query = token_from_py(query)?;
        let found = self.call(py, |s| s.find_token(&query))?;
        found.map(|t| token_to_py(py, &t)).transpose()
    }

    /// The record with this id.
    fn get<'py>(&self, py: Python<'py>, id: String) -> PyResult<Option<Bound<'py, PyDict>>> {
        let found = self.call(py, |s| s.find_token_by_id(&id))?;
        found.map(|t| token_to_py(py, &t)).transpose()
    }

    /// Upserts `token`; returns the record as now stored (id set).
    fn save<'py>(
        &self,
        py: Python<'py>,
        token: &Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let mut token = token_from_py(token)?;
        self.call(py, |s| s.save_token(&mut token))?;
        token_to_py(py, &token)
    }

    /// Removes the record `id`; whether it existed.
    fn delete(&self, py: Python<'_>, id: String) -> PyResult<bool> {
        self.call(py, |s| s.delete_token(&id))
    }

    /// Every record.
    fn all<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let tokens = self.call(py, |s| s.get_tokens())?;
        tokens.iter().map(|t| token_to_py(py, t)).collect()
    }

    /// Removes every record; how many there were.
    fn clear(&self, py: Python<'_>) -> PyResult<usize> {
        self.call(py, |s| s.delete_tokens())
    }

    /// A valid access token for the record `query` finds: the stored one
    /// when valid past the margin (the SDK's 5 s), else one refreshed at the
    /// accounts server and saved first; one request however many threads
    /// ask at once. `refresh=True` refreshes even a valid one;
    /// `min_valid_ms` replaces the margin.
    #[pyo3(signature = (query, accounts_url=None, refresh=false, min_valid_ms=None))]
    fn access_token<'py>(
        &self,
        py: Python<'py>,
        query: &Bound<'py, PyDict>,
        accounts_url: Option<String>,
        refresh: bool,
        min_valid_ms: Option<u64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let query = token_from_py(query)?;
        let client = self.client(accounts_url)?;
        let token = py
            .detach(|| match (refresh, min_valid_ms) {
                (true, _) => client.refresh(&query),
                (false, Some(ms)) => {
                    client.access_token_valid_for(&query, Duration::from_millis(ms))
                }
                (false, None) => client.access_token(&query),
            })
            .map_err(to_py)?;
        access_token_to_py(py, &token)
    }

    /// Exchanges a grant code and saves the answer under `user_name`;
    /// returns the record as stored.
    #[pyo3(signature = (user_name, client_id, client_secret, grant_code, redirect_url=None, accounts_url=None))]
    #[allow(clippy::too_many_arguments)]
    fn login<'py>(
        &self,
        py: Python<'py>,
        user_name: String,
        client_id: String,
        client_secret: String,
        grant_code: String,
        redirect_url: Option<String>,
        accounts_url: Option<String>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let mut login = Login::new(user_name, client_id, client_secret, grant_code);
        if let Some(url) = redirect_url {
            login = login.redirect_url(url);
        }
        let client = self.client(accounts_url)?;
        let record = py.detach(|| client.login(&login)).map_err(to_py)?;
        token_to_py(py, &record)
    }

    /// Revokes the refresh token of record `id` at the accounts server, then
    /// deletes the record; whether the server was asked.
    #[pyo3(signature = (id, accounts_url=None))]
    fn revoke(&self, py: Python<'_>, id: String, accounts_url: Option<String>) -> PyResult<bool> {
        let client = self.client(accounts_url)?;
        py.detach(|| client.revoke(&id)).map_err(to_py)
    }

    /// Closes the store (releases the directory's lock, or hands a shared
    /// store to another process, once running calls finish). Closing twice
    /// is harmless.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.check_process()?;
        let store = self.store.write().take();
        // The clients hold the store too; a parent's are leaked (see
        // `client`).
        let clients = {
            let mut clients = self.clients.lock();
            let mine = std::mem::take(&mut clients.by_url);
            if clients.pid != std::process::id() {
                std::mem::forget(mine);
                Vec::new()
            } else {
                mine
            }
        };
        // Dropping a sled store flushes it: not under the GIL.
        py.detach(move || drop((clients, store)));
        Ok(())
    }

    /// Whether the store is closed.
    #[getter]
    fn closed(&self) -> bool {
        (self.shared || self.pid == std::process::id()) && self.store.read().is_none()
    }

    /// Whether the store is an embedded one shared with other local
    /// processes (`False` for `exclusive=True`, `postgres://`, `memory:`).
    #[getter]
    fn shared(&self) -> bool {
        self.shared
    }

    /// Where the store is: its directory, or its URL without the password.
    #[getter]
    fn db(&self) -> &str {
        &self.db
    }

    /// Which backend holds the store: "sled", "postgres" or "memory".
    #[getter]
    fn kind(&self) -> &'static str {
        self.kind
    }
}

impl Drop for NativeStore {
    fn drop(&mut self) {
        let here = std::process::id();
        if self.clients.get_mut().pid != here {
            // HTTP connections and flights of the parent: see `client`.
            std::mem::forget(std::mem::take(&mut self.clients.get_mut().by_url));
        }
        if here != self.pid && !self.shared {
            // A forked child's copy of a store that is not shared: dropping
            // it would flush and unlock the parent's files (or close its
            // connections) from the wrong process. Leak it instead. A shared
            // store knows it was forked and drops only what is the child's.
            if let Some(store) = self.store.get_mut().take() {
                std::mem::forget(store);
            }
        }
        // As in `close`: closing joins the store's threads, one of which may
        // be waiting for the GIL to log a record (src/logging.rs).
        let clients = std::mem::take(&mut self.clients.get_mut().by_url);
        let store = self.store.get_mut().take();
        if store.is_some() || !clients.is_empty() {
            Python::attach(|py| py.detach(move || drop((clients, store))));
        }
    }
}

/// The native core of the `tokenstore` package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // The wheel's version (maturin takes it from this crate's Cargo.toml):
    // `tokenstore.__version__`.
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    logging::install(m)?;
    m.add_class::<NativeStore>()?;
    // The engine's one list of a token's fields: (name, holds a secret), in
    // declaration order. `tokenstore.Token` is checked against it.
    let fields = Field::ALL.map(|field| (field.name(), field.is_secret()));
    m.add("FIELDS", PyTuple::new(py, fields)?)?;
    m.add("Error", py.get_type::<Error>())?;
    m.add("InvalidTokenError", py.get_type::<InvalidTokenError>())?;
    m.add("ConflictError", py.get_type::<ConflictError>())?;
    m.add("CorruptionError", py.get_type::<CorruptionError>())?;
    m.add("LockedError", py.get_type::<LockedError>())?;
    m.add(
        "UnsupportedVersionError",
        py.get_type::<UnsupportedVersionError>(),
    )?;
    m.add("EncryptionKeyError", py.get_type::<EncryptionKeyError>())?;
    m.add("StorageError", py.get_type::<StorageError>())?;
    m.add("UnsupportedError", py.get_type::<UnsupportedError>())?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("NotRefreshableError", py.get_type::<NotRefreshableError>())?;
    m.add("OAuthError", py.get_type::<OAuthError>())?;
    m.add("GrantRefusedError", py.get_type::<GrantRefusedError>())?;
    m.add("ClosedError", py.get_type::<ClosedError>())?;
    m.add("ForkedError", py.get_type::<ForkedError>())?;
    Ok(())
}
