//! One way to open any store: [`open`] reads a string — a directory path
//! (the embedded [`SledStore`]), `postgres://…` (the shared PostgreSQL
//! backend, with the `postgres` feature) or `memory:` — and returns an
//! [`AnyStore`]: the six [`TokenStore`] operations plus what tools need
//! ([`Backend`]: check, batches, counts, size, key changes where supported).
//!
//! The CLI, the Python bindings and the demo hold an `AnyStore` and never ask
//! which backend is behind it; an operation a backend cannot do is
//! [`Error::Unsupported`], never a silent no-op.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use crate::batch::Batch;
use crate::engine::{self, Stage};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::memory::MemoryStore;
use crate::sled_store::{CheckReport, Options, SledStore};
use crate::store::TokenStore;
use crate::token::OAuthToken;

/// What every backend offers beyond the six operations of [`TokenStore`]:
/// the capabilities the `tokenstore` command, `copy` and the bindings need.
///
/// Object-safe: tools hold a `dyn Backend` (through [`AnyStore`]).
pub trait Backend: TokenStore + Send + Sync + fmt::Debug {
    /// Which backend this is: `"sled"`, `"postgres"` or `"memory"`.
    fn kind(&self) -> &'static str;

    /// Where the store is, for messages: a directory, or a URL without its
    /// password. Never a secret.
    fn location(&self) -> String;

    /// How many records are stored.
    fn count(&self) -> Result<usize>;

    /// The last id the id counter issued (`0` before the first). Generated
    /// ids are always greater; `copy` carries it over so that the target
    /// never hands out an id the source already gave away.
    fn last_issued_id(&self) -> Result<u64>;

    /// Every record/index disagreement and undecodable record.
    fn check(&self) -> Result<CheckReport>;

    /// Runs `stage` with a [`Batch`] and applies what it staged in one
    /// atomic write (all of it or none of it, also across a crash). Nothing
    /// is written when `stage` fails or calls [`Batch::discard`]. `stage`
    /// runs exactly once. Callers use the generic [`batch`](#method.batch)
    /// on `dyn Backend`.
    fn apply_batch(&self, stage: &mut Stage<'_>) -> Result<()>;

    /// Size, format and encryption, for `stats`.
    fn info(&self) -> Result<StoreInfo>;

    /// Encrypts the store with `key`, re-encrypts it with a new one, or
    /// decrypts it (`None`), calling `progress(done, total)` as records are
    /// rewritten. Backends that cannot change a key in place say so with
    /// [`Error::Unsupported`] (copy the store to a new one with the new key
    /// instead: `tokenstore copy`).
    fn set_encryption(
        &mut self,
        key: Option<Key>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        let _ = (key, progress);
        Err(Error::Unsupported {
            operation: "changing the encryption key in place".into(),
            backend: self.kind(),
            instead: "copy the store to a new one opened with the new key (`tokenstore copy`)"
                .into(),
        })
    }
}

impl dyn Backend + '_ {
    /// [`Backend::apply_batch`] with any result and error type: runs `stage`
    /// with a [`Batch`], then applies everything it staged in one atomic
    /// write. If `stage` returns `Err` or discards the batch, nothing is
    /// written.
    ///
    /// ```
    /// use tokenstore::{OAuthToken, TokenStore};
    ///
    /// let store = tokenstore::open("memory:")?;
    /// let saved = store.batch(|batch| {
    ///     for n in 0..3 {
    ///         let mut token = OAuthToken::new()
    ///             .with_user_name(format!("user{n}@example.com"))
    ///             .with_refresh_token(format!("1000.refresh{n}"));
    ///         batch.save_token(&mut token)?;
    ///     }
    ///     Ok::<_, tokenstore::Error>(batch.changed())
    /// })?;
    /// assert_eq!(saved, 3);
    /// assert_eq!(store.get_tokens()?.len(), 3);
    /// # Ok::<(), tokenstore::Error>(())
    /// ```
    ///
    /// # Errors
    /// The first error `stage` returns, or the backend's error applying the
    /// batch (then nothing was applied).
    pub fn batch<T, E>(
        &self,
        stage: impl FnOnce(&mut Batch<'_>) -> std::result::Result<T, E> + Send,
    ) -> std::result::Result<T, E>
    where
        T: Send,
        E: From<Error> + Send,
    {
        let mut stage = Some(stage);
        let mut outcome = None;
        self.apply_batch(&mut |batch| {
            if let Some(stage) = stage.take() {
                let staged = stage(batch);
                if staged.is_err() {
                    // The caller's error: nothing of the batch is written.
                    batch.discard();
                }
                outcome = Some(staged);
            }
            Ok(())
        })?;
        outcome.expect("apply_batch runs the stage")
    }
}

/// Size, format and encryption of a store, as `tokenstore stats` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreInfo {
    /// Bytes the store takes (on disk, or on the server); `None` when the
    /// backend cannot tell.
    pub size_bytes: Option<u64>,
    /// The storage format or schema version.
    pub format_version: u32,
    /// Whether records are sealed with a key.
    pub encrypted: bool,
}

impl StoreInfo {
    /// A report of `size_bytes`, `format_version` and `encrypted`.
    pub fn new(size_bytes: Option<u64>, format_version: u32, encrypted: bool) -> Self {
        StoreInfo {
            size_bytes,
            format_version,
            encrypted,
        }
    }
}

/// How [`open_with`] opens a store. The defaults: no key, fail at once if an
/// embedded store is locked by another process.
///
/// ```
/// use std::time::Duration;
/// use tokenstore::{Key, OpenOptions};
///
/// let options = OpenOptions::new()
///     .key(Key::generate()?)
///     .wait_for_lock(Duration::from_secs(10));
/// let dir = tempfile::tempdir()?;
/// let store = tokenstore::open_with(dir.path().join("tokens").to_str().unwrap(), options)?;
/// assert!(store.info()?.encrypted);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct OpenOptions {
    key: Option<Key>,
    wait_for_lock: Option<Duration>,
}

impl fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenOptions")
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .field("wait_for_lock", &self.wait_for_lock)
            .finish()
    }
}

impl OpenOptions {
    /// The defaults.
    pub fn new() -> Self {
        OpenOptions::default()
    }

    /// Opens (or creates) an encrypted store with this key.
    pub fn key(mut self, key: Key) -> Self {
        self.key = Some(key);
        self
    }

    /// Opens with this key if it is `Some`, without one otherwise.
    pub fn maybe_key(mut self, key: Option<Key>) -> Self {
        self.key = key;
        self
    }

    /// When an embedded store is locked by another process, waits up to
    /// `timeout` for it to be released instead of failing at once with
    /// [`Error::Locked`]. Shared backends ignore it.
    pub fn wait_for_lock(mut self, timeout: Duration) -> Self {
        self.wait_for_lock = Some(timeout);
        self
    }

    /// The key, if one was given.
    pub fn encryption_key(&self) -> Option<&Key> {
        self.key.as_ref()
    }

    /// How long to wait for a locked embedded store, if at all.
    pub fn lock_timeout(&self) -> Option<Duration> {
        self.wait_for_lock
    }

    /// The embedded engine's options that these stand for.
    fn sled_options(&self) -> Options {
        let mut options = Options::default();
        if let Some(wait) = self.wait_for_lock {
            options = options.wait_for_lock(wait);
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
    /// `postgres://…` or `postgresql://…`: the shared PostgreSQL backend.
    Postgres,
    /// `memory:`: a store in this process's memory, gone when dropped.
    Memory,
}

impl StoreKind {
    /// The backend `spec` names (see [`open`]).
    ///
    /// ```
    /// use tokenstore::StoreKind;
    ///
    /// assert_eq!(StoreKind::of("./tokens"), StoreKind::Sled);
    /// assert_eq!(StoreKind::of("postgres://app@db.internal/tokens"), StoreKind::Postgres);
    /// assert_eq!(StoreKind::of("memory:"), StoreKind::Memory);
    /// ```
    pub fn of(spec: &str) -> StoreKind {
        let lower = spec.trim_start().to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            StoreKind::Postgres
        } else if lower == "memory:" {
            StoreKind::Memory
        } else {
            StoreKind::Sled
        }
    }
}

/// A store of any backend, opened from a string by [`open`]: dereferences to
/// [`dyn Backend`](Backend) and is itself a [`TokenStore`].
pub struct AnyStore {
    inner: Box<dyn Backend>,
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
        AnyStore { inner }
    }

    /// The backend, to keep or to downcast-free pass on.
    pub fn into_inner(self) -> Box<dyn Backend> {
        self.inner
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
    fn with_refresh_lock(&self, id: &str, critical: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        self.inner.with_refresh_lock(id, critical)
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
/// - `memory:`: an empty store in this process's memory;
/// - anything else: a directory holding the embedded sled store (created if
///   missing), which one process owns at a time.
///
/// # Errors
/// [`Error::Locked`] when an embedded store is open in another process
/// (after [`OpenOptions::wait_for_lock`], if set); [`Error::Unsupported`]
/// for `postgres://` in a build without the `postgres` feature; the
/// backend's errors opening it ([`Error::WrongKey`], [`Error::KeyRequired`],
/// [`Error::UnsupportedVersion`], I/O, ...).
pub fn open_with(spec: &str, options: OpenOptions) -> Result<AnyStore> {
    match StoreKind::of(spec) {
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
        StoreKind::Postgres => open_postgres(spec, options),
        StoreKind::Sled => Ok(AnyStore::new(Box::new(SledStore::open_with(
            spec,
            options.sled_options(),
        )?))),
    }
}

#[cfg(feature = "postgres")]
fn open_postgres(url: &str, options: OpenOptions) -> Result<AnyStore> {
    crate::postgres_store::open_backend(url, options)
}

#[cfg(not(feature = "postgres"))]
fn open_postgres(_url: &str, _options: OpenOptions) -> Result<AnyStore> {
    Err(Error::Unsupported {
        operation: "postgres:// stores".into(),
        backend: "this build of tokenstore",
        instead: "build tokenstore with the `postgres` feature (cargo build --features postgres)"
            .into(),
    })
}

impl Backend for SledStore {
    fn kind(&self) -> &'static str {
        "sled"
    }
    fn location(&self) -> String {
        self.path().display().to_string()
    }
    fn count(&self) -> Result<usize> {
        Ok(self.len())
    }
    fn last_issued_id(&self) -> Result<u64> {
        Ok(SledStore::last_issued_id(self))
    }
    fn check(&self) -> Result<CheckReport> {
        SledStore::check(self)
    }
    fn apply_batch(&self, stage: &mut Stage<'_>) -> Result<()> {
        engine::apply_batch(self, stage)
    }
    fn info(&self) -> Result<StoreInfo> {
        Ok(StoreInfo::new(
            Some(self.size_on_disk()?),
            self.format_version(),
            self.is_encrypted(),
        ))
    }
    fn set_encryption(
        &mut self,
        key: Option<Key>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        self.set_encryption_with_progress(key, progress)
    }
}

impl Backend for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }
    fn location(&self) -> String {
        "memory:".to_owned()
    }
    fn count(&self) -> Result<usize> {
        Ok(self.len())
    }
    fn last_issued_id(&self) -> Result<u64> {
        Ok(MemoryStore::last_issued_id(self))
    }
    fn check(&self) -> Result<CheckReport> {
        Ok(CheckReport {
            records: self.len(),
            ..CheckReport::default()
        })
    }
    fn apply_batch(&self, stage: &mut Stage<'_>) -> Result<()> {
        engine::apply_batch(self, stage)
    }
    fn info(&self) -> Result<StoreInfo> {
        Ok(StoreInfo::new(None, 1, false))
    }
}
