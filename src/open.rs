//! One way to open any store, and the only module that names the backends:
//! [`open`] reads a string — a directory path (the embedded
//! [`SledStore`]), `postgres://…` (the shared PostgreSQL backend, with the
//! `postgres` feature) or `memory:` — and returns an [`AnyStore`]: the six
//! [`TokenStore`] operations plus what tools need ([`Backend`]).
//!
//! The CLI, the Python bindings and the demo hold an `AnyStore` and never ask
//! which backend is behind it.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::logging::{Secs, STORE};
use crate::memory::MemoryStore;
#[cfg(target_os = "linux")]
use crate::shared::SharedStore;
use crate::sled_store::{Durability, SledOptions, SledStore};
use crate::store::{RefreshLock, TokenStore};
use crate::token::OAuthToken;

/// How [`open_with`] opens a store, whatever its backend: each setting
/// reaches the backends it means something to (named as in
/// [`SledOptions`] and `PostgresOptions`), and the others ignore it. The
/// defaults: no key, create a missing store, fail at once if an embedded
/// store is locked by another process, each backend's own defaults for
/// the rest.
///
/// ```
/// use std::time::Duration;
/// use tokenstore::{Durability, Error, Key, OpenOptions};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("tokens");
/// let path = path.to_str().unwrap();
/// // A mistyped path is an error, not a new empty store...
/// let existing = OpenOptions::new().create(false);
/// assert!(matches!(tokenstore::open_with(path, existing), Err(Error::StoreNotFound { .. })));
/// // ...unless creating it is what is asked.
/// let options = OpenOptions::new()
///     .encryption(Key::generate()?)
///     .durability(Durability::BUFFERED)
///     .wait_for_lock(Duration::from_secs(10));
/// let store = tokenstore::open_with(path, options)?;
/// assert!(store.info()?.encrypted);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct OpenOptions {
    key: Option<Key>,
    wait_for_lock: Option<Duration>,
    create: bool,
    durability: Option<Durability>,
    record_cache: Option<u64>,
    pool_size: Option<u32>,
    exclusive: bool,
    owner_timeout: Option<Duration>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            key: None,
            wait_for_lock: None,
            create: true,
            durability: None,
            record_cache: None,
            pool_size: None,
            exclusive: false,
            owner_timeout: None,
        }
    }
}

impl fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenOptions")
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .field("wait_for_lock", &self.wait_for_lock)
            .field("create", &self.create)
            .field("durability", &self.durability)
            .field("record_cache", &self.record_cache)
            .field("pool_size", &self.pool_size)
            .field("exclusive", &self.exclusive)
            .field("owner_timeout", &self.owner_timeout)
            .finish()
    }
}

impl OpenOptions {
    /// The defaults.
    pub fn new() -> Self {
        OpenOptions::default()
    }

    /// Opens (or creates) an encrypted store with this key
    /// ([`SledOptions::encryption`], `PostgresOptions::encryption`).
    #[must_use]
    pub fn encryption(mut self, key: Key) -> Self {
        self.key = Some(key);
        self
    }

    /// The same as [`encryption`](Self::encryption).
    #[must_use]
    pub fn key(self, key: Key) -> Self {
        self.encryption(key)
    }

    /// Opens with this key if it is `Some`, without one otherwise.
    #[must_use]
    pub fn maybe_key(mut self, key: Option<Key>) -> Self {
        self.key = key;
        self
    }

    /// Whether a store that does not exist yet is created (the default) or
    /// refused with [`Error::StoreNotFound`]: tools that expect an existing
    /// store pass `false`, so that a mistyped path is an error.
    #[must_use]
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// When an embedded store is locked by another process, waits up to
    /// `timeout` for it to be released instead of failing at once with
    /// [`Error::Locked`] ([`SledOptions::wait_for_lock`]).
    #[must_use]
    pub fn wait_for_lock(mut self, timeout: Duration) -> Self {
        self.wait_for_lock = Some(timeout);
        self
    }

    /// When an embedded store's writes reach the disk
    /// ([`SledOptions::durability`]; a database server decides its own).
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = Some(durability);
        self
    }

    /// The bound of an embedded store's record cache, in bytes
    /// ([`SledOptions::record_cache`]).
    #[must_use]
    pub fn record_cache(mut self, bytes: u64) -> Self {
        self.record_cache = Some(bytes);
        self
    }

    /// How many connections a database backend keeps
    /// (`PostgresOptions::pool_size`).
    #[must_use]
    pub fn pool_size(mut self, connections: u32) -> Self {
        self.pool_size = Some(connections);
        self
    }

    /// Opens an embedded store for this process alone, as
    /// [`SledStore::open_with`] does: if another process has it open, the
    /// open fails with [`Error::Locked`] (after
    /// [`wait_for_lock`](Self::wait_for_lock), if set) instead of using it
    /// through that process. By default (`false`) every local process that
    /// opens the directory shares it (docs/SPEC.md §8).
    ///
    /// ```
    /// use tokenstore::{Error, OpenOptions};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("tokens");
    /// let path = path.to_str().unwrap();
    /// let mine = tokenstore::open_with(path, OpenOptions::new().exclusive(true))?;
    /// assert!(mine.info()?.sharing.is_none());
    /// // Another open, from this process or another, is refused meanwhile.
    /// assert!(matches!(
    ///     tokenstore::open_with(path, OpenOptions::new().exclusive(true)),
    ///     Err(Error::Locked { .. })
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = exclusive;
        self
    }

    /// How long a process using a shared embedded store through its owner
    /// waits for the owner's answer, and for a new owner after the last one
    /// went away, before [`Error::Unavailable`] (default 10 s). A killed
    /// owner is noticed within 0.1 s whatever this is; this bounds the wait
    /// on an owner that lives but does not answer (stopped, or overloaded).
    #[must_use]
    pub fn owner_timeout(mut self, timeout: Duration) -> Self {
        self.owner_timeout = Some(timeout);
        self
    }

    /// Whether an embedded store is opened for this process alone.
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    /// The key, if one was given.
    pub fn encryption_key(&self) -> Option<&Key> {
        self.key.as_ref()
    }

    /// How long to wait for a locked embedded store, if at all.
    pub fn lock_wait(&self) -> Option<Duration> {
        self.wait_for_lock
    }

    /// Whether a missing store is created.
    pub fn creates(&self) -> bool {
        self.create
    }

    /// The embedded engine's options that these stand for.
    fn sled_options(&self) -> SledOptions {
        let mut options = SledOptions::default();
        if let Some(wait) = self.wait_for_lock {
            options = options.wait_for_lock(wait);
        }
        if let Some(durability) = self.durability {
            options = options.durability(durability);
        }
        if let Some(bytes) = self.record_cache {
            options = options.record_cache(bytes);
        }
        match &self.key {
            Some(key) => options.encryption(key.clone()),
            None => options,
        }
    }
}

/// Which backend a store string names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreKind {
    /// A directory: the embedded sled store.
    Sled,
    /// `postgres://…` or `postgresql://…`: the shared PostgreSQL backend
    /// (cargo feature `postgres`).
    Postgres,
    /// `mysql://…` or `mariadb://…`: the shared MySQL / MariaDB backend
    /// (cargo feature `mysql`).
    Mysql,
    /// `memory:`: a store in this process's memory, gone when dropped.
    Memory,
}

/// Every `scheme://` tokenstore knows, with its backend.
const SCHEMES: [(&str, StoreKind); 4] = [
    ("postgres", StoreKind::Postgres),
    ("postgresql", StoreKind::Postgres),
    ("mysql", StoreKind::Mysql),
    ("mariadb", StoreKind::Mysql),
];

impl StoreKind {
    /// The backend `spec` names (see [`open`]): `memory:`, a `scheme://`
    /// URL tokenstore knows, or else a directory. A string that starts
    /// like a URL (`letters://`) is never taken for a directory; a path
    /// that merely holds a colon (`./backup:old`, `C:\\tokens`) is one.
    ///
    /// ```
    /// use tokenstore::{ErrorKind, StoreKind};
    ///
    /// assert_eq!(StoreKind::of("./tokens")?, StoreKind::Sled);
    /// assert_eq!(StoreKind::of("./tokens:old")?, StoreKind::Sled);
    /// assert_eq!(StoreKind::of("postgres://app@db.internal/tokens")?, StoreKind::Postgres);
    /// assert_eq!(StoreKind::of("mysql://app@db.internal/tokens")?, StoreKind::Mysql);
    /// assert_eq!(StoreKind::of("memory:")?, StoreKind::Memory);
    ///
    /// let unknown = StoreKind::of("sqlite://app:hunter2@/tokens.db").unwrap_err();
    /// assert_eq!(unknown.kind(), ErrorKind::InvalidLocation);
    /// assert!(unknown.to_string().contains("`sqlite://`"));
    /// assert!(!unknown.to_string().contains("hunter2"));
    /// # Ok::<(), tokenstore::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownScheme`] for a `scheme://` tokenstore does not know,
    /// naming what this build opens and showing `spec` without its password.
    pub fn of(spec: &str) -> Result<StoreKind> {
        let spec = spec.trim_start();
        let Some(scheme) = url_scheme(spec) else {
            return Ok(if spec.eq_ignore_ascii_case("memory:") {
                StoreKind::Memory
            } else {
                StoreKind::Sled
            });
        };
        SCHEMES
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(scheme))
            .map(|&(_, kind)| kind)
            .ok_or_else(|| unknown_scheme(spec, scheme, None))
    }

    /// The cargo feature this backend needs, if any.
    pub fn feature(self) -> Option<&'static str> {
        match self {
            StoreKind::Postgres => Some("postgres"),
            StoreKind::Mysql => Some("mysql"),
            StoreKind::Sled | StoreKind::Memory => None,
        }
    }

    /// Whether this build of tokenstore opens stores of this kind.
    pub fn is_built(self) -> bool {
        match self {
            StoreKind::Postgres => cfg!(feature = "postgres"),
            StoreKind::Mysql => cfg!(feature = "mysql"),
            StoreKind::Sled | StoreKind::Memory => true,
        }
    }
}

/// The scheme of a string that starts like a URL: letters, digits, `+`,
/// `-` or `.` after a first letter, then `://`. One letter is a Windows
/// drive (`C://tokens`), not a scheme.
fn url_scheme(spec: &str) -> Option<&str> {
    let (scheme, _) = spec.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && scheme.len() > 1
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

/// [`Error::UnknownScheme`] for `spec`, listing what this build opens.
fn unknown_scheme(spec: &str, scheme: &str, feature: Option<&'static str>) -> Error {
    let mut known = vec!["a directory path".to_owned(), "memory:".to_owned()];
    known.extend(
        SCHEMES
            .iter()
            .filter(|(_, kind)| kind.is_built())
            .map(|(name, _)| format!("{name}://")),
    );
    Error::UnknownScheme {
        location: without_password(spec),
        scheme: scheme.to_owned(),
        feature,
        known: known.join(", "),
    }
}

/// `spec` with any password masked: the one in `user:password@` and any
/// `password=` parameter (`***`). For messages; never parsed again.
///
/// Written out rather than parsed with a URL crate: a PostgreSQL URL may
/// name several `host:port` pairs, which URL parsers refuse, and a string
/// that fails to parse must still be shown without its password.
pub(crate) fn without_password(spec: &str) -> String {
    let Some((scheme, rest)) = spec.split_once("://") else {
        return spec.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                        format!("{name}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// A store of any backend, opened from a string by [`open`]: dereferences to
/// [`dyn Backend`](Backend) and is itself a [`TokenStore`].
pub struct AnyStore {
    /// Before `inner`: fields drop in order, so the record comes first.
    closing: ClosingNote,
    inner: Box<dyn Backend>,
}

/// Logs the close of the store it describes (DEBUG) when dropped; `None`
/// once the backend was handed over.
struct ClosingNote(Option<(&'static str, String)>);

impl Drop for ClosingNote {
    fn drop(&mut self) {
        if let Some((kind, location)) = &self.0 {
            log::debug!(target: STORE, "closing the {kind} store {location}");
        }
    }
}

impl AnyStore {
    /// Wraps an opened backend.
    ///
    /// ```
    /// use tokenstore::{AnyStore, MemoryStore};
    ///
    /// let store = AnyStore::new(Box::new(MemoryStore::new()));
    /// assert_eq!(store.kind(), "memory");
    /// ```
    pub fn new(inner: Box<dyn Backend>) -> Self {
        AnyStore {
            closing: ClosingNote(Some((inner.kind(), inner.location()))),
            inner,
        }
    }

    /// The backend, to keep or to downcast-free pass on.
    pub fn into_inner(self) -> Box<dyn Backend> {
        let AnyStore { mut closing, inner } = self;
        closing.0 = None;
        inner
    }
}

impl fmt::Debug for AnyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl Deref for AnyStore {
    type Target = dyn Backend;
    fn deref(&self) -> &Self::Target {
        &*self.inner
    }
}

impl DerefMut for AnyStore {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut *self.inner
    }
}

impl TokenStore for AnyStore {
    fn find_token(&self, query: &OAuthToken) -> Result<Option<OAuthToken>> {
        self.inner.find_token(query)
    }
    fn save_token(&self, token: &mut OAuthToken) -> Result<()> {
        self.inner.save_token(token)
    }
    fn delete_token(&self, id: &str) -> Result<bool> {
        self.inner.delete_token(id)
    }
    fn get_tokens(&self) -> Result<Vec<OAuthToken>> {
        self.inner.get_tokens()
    }
    fn delete_tokens(&self) -> Result<usize> {
        self.inner.delete_tokens()
    }
    fn find_token_by_id(&self, id: &str) -> Result<Option<OAuthToken>> {
        self.inner.find_token_by_id(id)
    }
    fn refresh_lock(&self, id: &str) -> Result<RefreshLock<'_>> {
        self.inner.refresh_lock(id)
    }
}

/// Opens the store `spec` names with default options (see [`open_with`]).
///
/// ```
/// use tokenstore::{OAuthToken, TokenStore};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("tokens");
/// let store = tokenstore::open(path.to_str().unwrap())?; // the embedded store, created
/// assert_eq!(store.kind(), "sled");
/// store.save_token(&mut OAuthToken::new().with_user_name("ana").with_refresh_token("1000.r"))?;
/// assert_eq!(store.count()?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// As for [`open_with`].
pub fn open(spec: &str) -> Result<AnyStore> {
    open_with(spec, OpenOptions::default())
}

/// Opens the store `spec` names:
///
/// - `postgres://user:password@host:port/database` (or `postgresql://`):
///   the shared PostgreSQL backend (cargo feature `postgres`), which any
///   number of processes on any number of machines may use at once;
/// - `mysql://user:password@host:port/database` (or `mariadb://`): the
///   shared MySQL/MariaDB backend (cargo feature `mysql`), with
///   `?ssl-mode=…&ssl-ca=…` as the `mysql` client reads them;
/// - `memory:`: an empty store in this process's memory;
/// - any other `scheme://…`: refused ([`Error::UnknownScheme`]), never taken
///   for a directory;
/// - anything else: a directory holding the embedded sled store (created if
///   missing, unless [`OpenOptions::create`] is `false`), shared by every
///   local process of the same user that opens it: the first owns it and
///   serves the others over a Unix socket in the directory, and another
///   takes over when it goes away ([`SharedStore`]; docs/SPEC.md §8).
///   [`OpenOptions::exclusive`] opens it for this process alone.
///
/// # Errors
/// [`Error::StoreNotFound`] when the store does not exist and
/// [`OpenOptions::create`] is `false`; [`Error::Locked`] when an embedded
/// store opened [`exclusive`](OpenOptions::exclusive)ly is open in another
/// process (after [`OpenOptions::wait_for_lock`], if set);
/// [`Error::Unavailable`] when a shared store's owner does not answer in
/// time; [`Error::Unsupported`] for sharing a store on a network file
/// system; [`Error::UnknownScheme`] for a `scheme://` tokenstore does not
/// know, or one this build was compiled without (`postgres://` without the
/// `postgres` feature); the
/// backend's errors opening it ([`Error::WrongKey`], [`Error::KeyRequired`],
/// [`Error::UnsupportedVersion`], I/O, ...).
pub fn open_with(spec: &str, options: OpenOptions) -> Result<AnyStore> {
    let started = Instant::now();
    let opened = open_kind(spec, options);
    match &opened {
        Ok(store) => log::debug!(
            target: STORE,
            "opened the {} store {} in {}",
            store.kind(),
            store.location(),
            Secs(started.elapsed())
        ),
        Err(e) => log::debug!(
            target: STORE,
            "opening the store {} failed after {}: {e}",
            without_password(spec),
            Secs(started.elapsed())
        ),
    }
    opened
}

fn open_kind(spec: &str, options: OpenOptions) -> Result<AnyStore> {
    match StoreKind::of(spec)? {
        StoreKind::Memory => {
            if options.key.is_some() {
                return Err(Error::Unsupported {
                    operation: "encryption".into(),
                    backend: "memory",
                    instead: "open it without a key (nothing of a memory store reaches a disk)"
                        .into(),
                });
            }
            Ok(AnyStore::new(Box::new(MemoryStore::new())))
        }
        #[cfg(feature = "postgres")]
        StoreKind::Postgres => open_postgres(spec, options),
        #[cfg(feature = "mysql")]
        StoreKind::Mysql => open_mysql(spec, options),
        StoreKind::Sled => {
            if !options.create && !SledStore::exists(Path::new(spec)) {
                return Err(Error::StoreNotFound {
                    location: spec.to_owned(),
                });
            }
            open_embedded(spec, &options)
        }
        // A backend this build was compiled without.
        #[allow(unreachable_patterns)]
        kind => {
            let spec = spec.trim_start();
            let scheme = url_scheme(spec).unwrap_or_default();
            Err(unknown_scheme(spec, scheme, kind.feature()))
        }
    }
}

/// The embedded store: shared (Linux), or for this process alone.
fn open_embedded(spec: &str, options: &OpenOptions) -> Result<AnyStore> {
    #[cfg(target_os = "linux")]
    if !options.exclusive {
        let timeout = options
            .owner_timeout
            .unwrap_or(crate::shared::DEFAULT_OWNER_TIMEOUT);
        // Waiting for a process that holds the lock to serve the store: as
        // long as asked to wait for a lock, else the owner's time-out.
        let wait = options.wait_for_lock.unwrap_or(timeout);
        return Ok(AnyStore::new(Box::new(SharedStore::open_waiting(
            spec,
            options.sled_options(),
            timeout,
            wait,
        )?)));
    }
    Ok(AnyStore::new(Box::new(SledStore::open_with(
        spec,
        options.sled_options(),
    )?)))
}

#[cfg(feature = "postgres")]
fn open_postgres(url: &str, options: OpenOptions) -> Result<AnyStore> {
    let mut pg = crate::postgres_store::PostgresOptions::default().create(options.create);
    if let Some(key) = options.key {
        pg = pg.encryption(key);
    }
    if let Some(size) = options.pool_size {
        pg = pg.pool_size(size);
    }
    Ok(AnyStore::new(Box::new(
        crate::postgres_store::PostgresStore::connect_with(url, pg)?,
    )))
}

#[cfg(feature = "mysql")]
fn open_mysql(url: &str, options: OpenOptions) -> Result<AnyStore> {
    let mut my = crate::mysql_store::MysqlOptions::default().create(options.create);
    if let Some(key) = options.key {
        my = my.encryption(key);
    }
    if let Some(size) = options.pool_size {
        my = my.pool_size(size);
    }
    Ok(AnyStore::new(Box::new(
        crate::mysql_store::MysqlStore::connect_with(url, my)?,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_that_starts_like_a_url_has_a_scheme() {
        assert_eq!(url_scheme("sqlite:///tokens.db"), Some("sqlite"));
        assert_eq!(url_scheme("postgress://db/x"), Some("postgress"));
        assert_eq!(url_scheme("git+ssh://host/x"), Some("git+ssh"));
        for path in [
            "./tokens",
            "tokens:old",
            "./a://b",
            "/srv/x://y",
            "C://tokens",
            "C:\\tokens",
            "1abc://x",
            "my dir://x",
            "",
        ] {
            assert_eq!(url_scheme(path), None, "{path}");
        }
    }

    #[test]
    fn unknown_schemes_are_refused_and_paths_with_colons_are_paths() {
        for spec in [
            "sqlite:///tokens.db",
            "postgress://app@db/x",
            "memory://",
            "FILE:///x",
        ] {
            let error = StoreKind::of(spec).unwrap_err();
            assert!(
                matches!(error, Error::UnknownScheme { feature: None, .. }),
                "{spec}"
            );
            assert_eq!(error.kind(), crate::ErrorKind::InvalidLocation);
        }
        assert_eq!(StoreKind::of("./backup:old").unwrap(), StoreKind::Sled);
        assert_eq!(StoreKind::of("MEMORY:").unwrap(), StoreKind::Memory);
        assert_eq!(StoreKind::of("  MySQL://h/db").unwrap(), StoreKind::Mysql);
        let message = StoreKind::of("sqlite://me:hunter2@/t.db")
            .unwrap_err()
            .to_string();
        assert!(message.contains("`sqlite://`"), "{message}");
        assert!(message.contains("a directory path, memory:"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn a_backend_this_build_lacks_is_named_with_its_feature() {
        let error = unknown_scheme("postgres://app:pw@db/x", "postgres", Some("postgres"));
        let message = error.to_string();
        assert!(
            message.contains("compiled without `postgres://` stores (cargo feature `postgres`)"),
            "{message}"
        );
        assert!(!message.contains("pw@"), "{message}");
        // What a build lists is what it opens.
        for (spec, kind) in [
            ("postgres://app:pw@127.0.0.1:1/x", StoreKind::Postgres),
            ("mysql://app:pw@127.0.0.1:1/x", StoreKind::Mysql),
        ] {
            let listed = message.contains(&format!("{}://", kind.feature().unwrap()));
            assert_eq!(listed, kind.is_built(), "{message}");
            match open(spec) {
                Err(Error::UnknownScheme { feature, .. }) => {
                    assert!(!kind.is_built());
                    assert_eq!(feature, kind.feature());
                }
                _ => assert!(
                    kind.is_built(),
                    "{spec}: a backend this build lacks was opened"
                ),
            }
        }
    }

    #[test]
    fn passwords_are_masked_wherever_they_are() {
        for (spec, shown) in [
            (
                "mysql://app:s3cret@db.internal/app",
                "mysql://app:***@db.internal/app",
            ),
            (
                "postgres://app@h1:5432,h2:5433/db",
                "postgres://app@h1:5432,h2:5433/db",
            ),
            (
                "postgres://a:p@w@h/db?sslmode=require",
                "postgres://a:***@h/db?sslmode=require",
            ),
            (
                "postgres://h/db?user=a&password=s3cret&x=1",
                "postgres://h/db?user=a&password=***&x=1",
            ),
            ("sqlite:///tokens.db", "sqlite:///tokens.db"),
            ("./tokens", "./tokens"),
        ] {
            assert_eq!(without_password(spec), shown);
        }
    }
}
