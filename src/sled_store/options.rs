//! How a [`SledStore`] is opened: [`SledOptions`] and [`Durability`].

use super::*;

/// The record cache's bound in a plain store with default options. It is a
/// bound, not an allocation: the cache holds what was read (or warmed), so
/// its memory follows the store's size up to this (it weighs a Zoho-sized
/// token with its index hints at about 0.95 KB: some 2.2 million tokens;
/// the process pays about 1.3 KB each, see BENCHMARKS.md).
pub(super) const DEFAULT_RECORD_CACHE: u64 = 2 << 30;
/// The record cache's bound in an encrypted store with default options:
/// decrypted records in memory are kept to what the cache held before it
/// followed the store's size (about 70,000 tokens).
pub(super) const DEFAULT_ENCRYPTED_RECORD_CACHE: u64 = 64 << 20;
/// When a successful write reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Every `save_token`, `delete_token` and `delete_tokens` flushes the
    /// database before it returns `Ok`: an acknowledged write survives the
    /// process being killed or the machine losing power (as far as the disk
    /// honours `fsync`). The default.
    #[default]
    Durable,
    /// Writes return once they are in memory and a background thread flushes
    /// them every `flush_every`. A crash (process killed, power lost) can lose
    /// the writes acknowledged during the last `flush_every` before it, but
    /// never tears one: after reopening, the store holds the writes up to
    /// some point, each whole, and records and indexes agree. An id handed
    /// out by a lost write may be handed out again. A clean drop of the
    /// store, or [`SledStore::flush`], writes everything.
    Buffered {
        /// How often the background flush runs.
        flush_every: Duration,
    },
}

impl Durability {
    /// Buffered with sled's default background flush of 500 ms.
    pub const BUFFERED: Durability = Durability::Buffered {
        flush_every: Duration::from_millis(500),
    };
}

/// How [`SledStore::open_with`] opens a database.
///
/// ```
/// use std::time::Duration;
/// use tokenstore::{Durability, SledOptions, SledStore};
///
/// let dir = tempfile::tempdir()?;
/// let options = SledOptions::default()
///     .durability(Durability::Buffered { flush_every: Duration::from_millis(100) })
///     .cache_capacity(64 << 20);
/// let store = SledStore::open_with(dir.path().join("tokens"), options.clone())?;
/// assert_eq!(store.options().durability_mode(), options.durability_mode());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct SledOptions {
    pub(super) durability: Durability,
    pub(super) cache_capacity: u64,
    /// `None`: the default, which depends on encryption.
    pub(super) record_cache: Option<u64>,
    /// `None`: the default (warm plain stores whose record cache is on).
    pub(super) warm_on_open: Option<bool>,
    pub(super) encryption: Option<Key>,
    pub(super) lock_wait: Duration,
    /// Whether even a fail-fast open waits out a lock held for an instant
    /// (see `open::LOCK_GRACE`); a shared store's election does not.
    pub(super) lock_grace: bool,
}

impl Default for SledOptions {
    /// Durable writes, a 256 MiB page cache, a record cache of up to 2 GiB
    /// (64 MiB in an encrypted store) filled in the background after
    /// opening, no encryption.
    fn default() -> Self {
        SledOptions {
            durability: Durability::Durable,
            cache_capacity: 256 << 20,
            record_cache: None,
            warm_on_open: None,
            encryption: None,
            lock_wait: Duration::ZERO,
            lock_grace: true,
        }
    }
}

impl SledOptions {
    /// Sets when writes reach the disk (see [`Durability`]).
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets the upper bound, in bytes, of sled's page cache: the main part of
    /// the store's memory use.
    #[must_use]
    pub fn cache_capacity(mut self, bytes: u64) -> Self {
        self.cache_capacity = bytes;
        self
    }

    /// Sets the bound, in bytes, of the record cache: decoded records (and
    /// hints from the indexed values that led to them) kept in memory in
    /// front of the storage engine, so a token is found without reading or
    /// decoding (or decrypting) it again. It holds only what was read, so
    /// its memory follows the store's size up to this bound, in bytes as it
    /// weighs them: about 0.95 KB per Zoho-sized token, which costs the
    /// process about 1.3 KB. The default is 2 GiB (some 2.2 million tokens:
    /// a 1M-token store fits whole, adding about 1.3 GB to the process); in
    /// an encrypted store 64 MiB (about 70,000 tokens). `0` turns it off. It is on top of
    /// [`cache_capacity`](Self::cache_capacity); both bound the store's
    /// memory. In an encrypted store it holds decrypted records (wiped when
    /// evicted); turn it off if plaintext in memory matters more than
    /// latency.
    #[must_use]
    pub fn record_cache(mut self, bytes: u64) -> Self {
        self.record_cache = Some(bytes);
        self
    }

    /// Sets whether opening the store starts filling the record cache from
    /// disk in a background thread (see [`SledStore::warm_cache`]), so
    /// lookups soon come from memory instead of warming it one miss at a
    /// time. Opening does not wait for it: the first lookup is answered
    /// at once, and lookups and writes during the warm-up see the same
    /// data as without it. The default: on for a plain store, off for an
    /// encrypted one (it would decrypt every record it can hold).
    ///
    /// ```
    /// use tokenstore::{Key, SledOptions};
    ///
    /// assert!(SledOptions::default().warms_on_open());
    /// assert!(!SledOptions::default().warm_on_open(false).warms_on_open());
    /// assert!(!SledOptions::default().encryption(Key::from_bytes([1; 32])).warms_on_open());
    /// assert!(!SledOptions::default().record_cache(0).warm_on_open(true).warms_on_open());
    /// ```
    #[must_use]
    pub fn warm_on_open(mut self, warm: bool) -> Self {
        self.warm_on_open = Some(warm);
        self
    }

    /// Opens (or creates) an encrypted store with this master key: every
    /// record is sealed with AES-256-GCM under a subkey of it, and
    /// index keys are digests keyed with another subkey, so no token, user
    /// name or client secret is written to disk in plaintext. An existing
    /// store must have been created (or last rekeyed) with the same key:
    /// otherwise [`Error::WrongKey`].
    ///
    /// ```
    /// use tokenstore::{Error, Key, OAuthToken, SledOptions, SledStore, TokenStore};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("tokens");
    /// let key = Key::generate()?;
    /// {
    ///     let store = SledStore::open_with(&path, SledOptions::default().encryption(key.clone()))?;
    ///     let mut token = OAuthToken::new().with_user_name("ana").with_refresh_token("1000.r");
    ///     store.save_token(&mut token)?;
    /// }
    /// let wrong = SledOptions::default().encryption(Key::generate()?);
    /// assert!(matches!(SledStore::open_with(&path, wrong), Err(Error::WrongKey { .. })));
    /// assert!(matches!(SledStore::open(&path), Err(Error::KeyRequired { .. })));
    /// let store = SledStore::open_with(&path, SledOptions::default().encryption(key))?;
    /// assert!(store.find_token(&OAuthToken::new().with_user_name("ana"))?.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn encryption(mut self, key: Key) -> Self {
        self.encryption = Some(key);
        self
    }

    /// When the store is open in another process, waits up to `wait` for it
    /// to be closed (polling with a growing pause, at most 100 ms) instead
    /// of failing at once; [`Error::Locked`] after that. The default,
    /// `Duration::ZERO`, fails fast: within a quarter of a second (a lock
    /// held only for an instant, as by a child process between fork and
    /// exec, is waited out; an open store is not). For scripts that run short `tokenstore`
    /// commands side by side: each waits its turn.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use tokenstore::{Error, SledOptions, SledStore};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("tokens");
    /// let first = SledStore::open(&path)?;
    /// // Fails fast by default...
    /// assert!(matches!(SledStore::open(&path), Err(Error::Locked { .. })));
    /// // ...or waits, here in vain: the first handle stays open.
    /// let started = Instant::now();
    /// let waiting = SledOptions::default().wait_for_lock(Duration::from_millis(300));
    /// assert!(matches!(SledStore::open_with(&path, waiting), Err(Error::Locked { .. })));
    /// assert!(started.elapsed() >= Duration::from_millis(300));
    /// # drop(first);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn wait_for_lock(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// The same options without a key.
    pub(crate) fn without_encryption(mut self) -> Self {
        self.encryption = None;
        self
    }

    /// Fails at once when the lock is taken, without the short grace
    /// (a shared store, which then connects to the lock's holder).
    pub(crate) fn without_lock_grace(mut self) -> Self {
        self.lock_wait = Duration::ZERO;
        self.lock_grace = false;
        self
    }

    /// How long `open` waits for another process to close the store.
    pub fn lock_wait(&self) -> Duration {
        self.lock_wait
    }

    /// The master key, when the store is to be encrypted.
    pub fn encryption_key(&self) -> Option<&Key> {
        self.encryption.as_ref()
    }

    /// The durability choice.
    pub fn durability_mode(&self) -> Durability {
        self.durability
    }

    /// The page cache bound in bytes.
    pub fn cache_capacity_bytes(&self) -> u64 {
        self.cache_capacity
    }

    /// The record cache bound in bytes (0: off).
    pub fn record_cache_bytes(&self) -> u64 {
        self.record_cache.unwrap_or(match self.encryption {
            None => DEFAULT_RECORD_CACHE,
            Some(_) => DEFAULT_ENCRYPTED_RECORD_CACHE,
        })
    }

    /// Whether opening starts the background warm-up of the record cache
    /// (never when the cache is off).
    pub fn warms_on_open(&self) -> bool {
        self.record_cache_bytes() > 0 && self.warm_on_open.unwrap_or(self.encryption.is_none())
    }
}

/// The name [`SledOptions`] had before the opener took options for every
/// backend ([`OpenOptions`](crate::OpenOptions)).
pub type Options = SledOptions;
