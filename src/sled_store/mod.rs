//! [`SledStore`]: the durable engine on sled 0.34.
//!
//! Trees: `records` (id → encoded record), one index tree per unique field
//! (digest of the value → ids), and `meta` (format version, id counter).
//! Writers are serialized by one lock; each save or delete is planned from
//! the committed state under that lock and applied in one sled transaction
//! across all trees. In durable mode the writer then waits, outside the
//! lock, for a flush that covers its write; concurrent writers share flushes
//! (group commit), and concurrent `save_token` calls share the transaction
//! too (write combining, see `combine`).

mod backend;
mod batch;
mod cache;
mod check;
mod combine;
mod filter;
mod layout;
mod rekey;

use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Batch as SledBatch, Transactional, Tree};

use crate::codec::{self, Sealing};
use crate::engine::{Engine as StorageEngine, Plan, Replay};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::plan::{StoreView, Stored, WriteSet};
use crate::token::{IndexedField, OAuthToken};
use cache::{Cached, RecordCache};
use filter::IndexFilter;

const RECORDS_TREE: &str = "records";
const META_TREE: &str = "meta";
const LOCK_FILE: &str = "tokenstore.lock";
const FORMAT_VERSION_KEY: &[u8] = b"format_version";
const LAST_ISSUED_KEY: &[u8] = b"last_issued_id";
const KEY_CHECK_KEY: &[u8] = b"key_check";
/// How many records the current key has sealed (encrypted stores).
const SEALED_KEY: &[u8] = b"sealed_records";

/// The record cache's bound in a plain store with default options. It is a
/// bound, not an allocation: the cache holds what was read (or warmed), so
/// its memory follows the store's size up to this (it weighs a Zoho-sized
/// token with its index hints at about 0.95 KB: some 2.2 million tokens;
/// the process pays about 1.3 KB each, see BENCHMARKS.md).
const DEFAULT_RECORD_CACHE: u64 = 2 << 30;
/// The record cache's bound in an encrypted store with default options:
/// decrypted records in memory are kept to what the cache held before it
/// followed the store's size (about 70,000 tokens).
const DEFAULT_ENCRYPTED_RECORD_CACHE: u64 = 64 << 20;
/// A clean close after at least this many records written since the open
/// reopens the database once, so that the next open does not replay them
/// (see [`Resnapshot`]).
const RESNAPSHOT_AFTER_WRITES: u64 = 50_000;

/// The record codec, for the fuzz targets only.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::codec::{decode_ids, decode_record, encode_record};
}

fn index_tree_name(field: IndexedField) -> String {
    format!("index_{}", field.name())
}

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
    durability: Durability,
    cache_capacity: u64,
    /// `None`: the default, which depends on encryption.
    record_cache: Option<u64>,
    /// `None`: the default (warm plain stores whose record cache is on).
    warm_on_open: Option<bool>,
    encryption: Option<Key>,
    lock_wait: Duration,
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

/// A durable [`TokenStore`] in a sled database directory.
///
/// Only one handle may have a database open at a time; a second open (from
/// another process or this one) fails with [`Error::Locked`].
///
/// ```
/// use tokenstore::{OAuthToken, SledStore, TokenStore};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("tokens");
/// {
///     let store = SledStore::open(&path)?;
///     let mut token = OAuthToken::new().with_user_name("ana").with_refresh_token("1000.r");
///     store.save_token(&mut token)?; // flushed to disk before it returns
/// }
/// let store = SledStore::open(&path)?;
/// let found = store.find_token(&OAuthToken::new().with_user_name("ana"))?;
/// assert_eq!(found.and_then(|t| t.refresh_token).as_deref(), Some("1000.r"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SledStore {
    db: sled::Db,
    records: Tree,
    indexes: [Tree; 4],
    meta: Tree,
    /// Serializes writers; holds the id counter and the seal count.
    /// Shared with the background warm-up, which reads under it (see
    /// [`warm_records`]).
    writer: Arc<Mutex<Counters>>,
    /// Concurrent `save_token` calls, applied as one batch.
    combiner: combine::Combiner,
    /// Durable writers sharing flushes (see `durable_through`).
    group_commit: GroupCommit,
    /// Decoded records and index hints (`None` when turned off).
    cache: Option<Arc<RecordCache>>,
    /// The background warm-up of the cache, while it runs.
    warming: Warming,
    /// Answers lookups for absent values once the warm-up has walked the
    /// index trees; set by the warm-up (never in a store that does not warm
    /// at open).
    filter: Arc<OnceLock<IndexFilter>>,
    /// Plain, or the ciphers of an encrypted store.
    sealing: Arc<Sealing>,
    /// Which data directory holds the sled database (see `layout`).
    generation: u64,
    /// Records written since the open (see [`RESNAPSHOT_AFTER_WRITES`]).
    written: AtomicU64,
    /// [`RESNAPSHOT_AFTER_WRITES`] (a field so a test can lower it).
    resnapshot_after: u64,
    options: SledOptions,
    path: PathBuf,
    /// Dropped after every handle on the sled database (fields drop in
    /// order) and before the directory lock.
    resnapshot: Resnapshot,
    /// Held for the life of the store: the process-level lock on the directory.
    _lock: File,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The name [`SledOptions`] had before the opener took options for every
/// backend ([`OpenOptions`](crate::OpenOptions)).
pub type Options = SledOptions;

/// Maps sled's errors to ours; sled's types never reach the public API.
fn storage(e: sled::Error) -> Error {
    match e {
        sled::Error::Io(io) => Error::from(plain_io(io)),
        sled::Error::Corruption { at, .. } => Error::corruption(
            None,
            format!("the storage engine found damaged data at {at:?}"),
        ),
        other => Error::from(std::io::Error::other(format!("storage engine: {other}"))),
    }
}

/// sled wraps some OS errors in their `Debug` text; say the common ones
/// plainly, with what to do.
fn plain_io(io: std::io::Error) -> std::io::Error {
    use std::io::ErrorKind;
    let advice = match io.kind() {
        ErrorKind::StorageFull => {
            "no space left on the device holding the token store; free some space \
             (writes acknowledged before this error are safe)"
        }
        ErrorKind::ReadOnlyFilesystem => {
            "the token store is on a read-only file system; open it from a writable location"
        }
        ErrorKind::PermissionDenied => {
            "permission denied on the token store's files; run as the user that owns them"
        }
        _ => return io,
    };
    std::io::Error::new(io.kind(), advice)
}

fn transaction_error(e: TransactionError<Error>) -> Error {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => storage(e),
    }
}

fn abort(e: Error) -> ConflictableTransactionError<Error> {
    ConflictableTransactionError::Abort(e)
}

impl SledStore {
    /// Opens (creating if needed) the database directory `path` with the
    /// default [`SledOptions`]: durable writes.
    ///
    /// # Errors
    /// [`Error::Locked`] if the database is open elsewhere,
    /// [`Error::UnsupportedVersion`] if it was written by an unknown format
    /// version, [`Error::Io`] if the path cannot be used (for example it is a
    /// file), [`Error::Corruption`] if its metadata is damaged.
    pub fn open(path: impl AsRef<Path>) -> Result<SledStore> {
        Self::open_with(path, SledOptions::default())
    }

    /// Opens (creating if needed) the database directory `path`.
    ///
    /// # Errors
    /// As for [`open`](Self::open).
    pub fn open_with(path: impl AsRef<Path>, options: SledOptions) -> Result<SledStore> {
        let path = path.as_ref().to_path_buf();
        create_private_dir(&path)?;
        let lock = lock_directory(&path, options.lock_wait)?;

        let generation = layout::current_generation(&path)?;
        layout::remove_stale(&path, generation)?;
        let data_dir = layout::data_dir(&path, generation);
        let Engine {
            db,
            records,
            indexes,
            meta,
        } = Engine::open(&options, &data_dir, &path)?;

        let sealing = Sealing::new(options.encryption.as_ref());
        check_format(&db, &meta, &records, &sealing, &path)?;
        secure_permissions(&path)?;
        let last_issued = match meta.get(LAST_ISSUED_KEY).map_err(storage)? {
            None => 0,
            Some(bytes) => u64::from_be_bytes(bytes.as_ref().try_into().map_err(|_| {
                Error::corruption(None, "the stored id counter is not 8 bytes long")
            })?),
        };

        let sealed = read_sealed(&db, &meta, &sealing)?;

        let record_cache = options.record_cache_bytes();
        let store = SledStore {
            db,
            records,
            indexes,
            meta,
            writer: Arc::new(Mutex::new(Counters {
                last_issued,
                sealed,
            })),
            combiner: combine::Combiner::default(),
            group_commit: GroupCommit::default(),
            cache: (record_cache > 0).then(|| Arc::new(RecordCache::new(record_cache))),
            warming: Warming::default(),
            filter: Arc::default(),
            sealing: Arc::new(sealing),
            generation,
            written: AtomicU64::new(0),
            resnapshot_after: RESNAPSHOT_AFTER_WRITES,
            resnapshot: Resnapshot::default(),
            options,
            path,
            _lock: lock,
        };
        if store.options.warms_on_open() {
            store.start_warming();
        }
        Ok(store)
    }

    /// Whether `path` holds a token store (a directory a store was opened
    /// in), without opening it.
    ///
    /// ```
    /// use tokenstore::SledStore;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("tokens");
    /// assert!(!SledStore::exists(&path));
    /// drop(SledStore::open(&path)?);
    /// assert!(SledStore::exists(&path));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn exists(path: impl AsRef<Path>) -> bool {
        let path = path.as_ref();
        path.is_dir() && path.join(LOCK_FILE).is_file()
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &SledOptions {
        &self.options
    }

    /// How many records are stored.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is stored.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The last id the id counter issued (`0` before the first): generated
    /// ids are always greater.
    pub fn last_issued_id(&self) -> u64 {
        self.writer.lock().last_issued
    }

    /// Writes everything buffered to disk. Durable stores do this after
    /// every write; buffered ones can call it at chosen points.
    ///
    /// ```
    /// use tokenstore::{Durability, OAuthToken, SledOptions, SledStore, TokenStore};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let options = SledOptions::default().durability(Durability::BUFFERED);
    /// let store = SledStore::open_with(dir.path().join("tokens"), options)?;
    /// for n in 0..100 {
    ///     let mut token = OAuthToken::new().with_user_name(format!("user{n}")).with_access_token(format!("a{n}"));
    ///     store.save_token(&mut token)?; // in memory only
    /// }
    /// store.flush()?; // all 100 are on disk now
    /// assert_eq!(store.len(), 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] when the flush fails.
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map(drop).map_err(storage)
    }

    /// Fills the record cache from disk: every record (and the index hints
    /// that lead to it) until the cache is full, so that lookups start from
    /// memory instead of warming it one miss at a time. Returns how many
    /// records it read. Safe to run while the store is in use (for example
    /// from a thread of its own right after opening): writes that race it
    /// are never shadowed by what it read. When the store started this
    /// warm-up itself at open ([`SledOptions::warm_on_open`], the default for a
    /// plain store), this waits for that one to finish instead.
    ///
    /// ```
    /// use tokenstore::{OAuthToken, SledOptions, SledStore, TokenStore};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let options = SledOptions::default().warm_on_open(false);
    /// let store = SledStore::open_with(dir.path().join("tokens"), options)?;
    /// store.save_token(&mut OAuthToken::new().with_user_name("ana").with_refresh_token("1000.r"))?;
    /// assert_eq!(store.warm_cache()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// Storage errors, and [`Error::Corruption`] for a record that cannot
    /// be decoded (after which the cache holds what was read before it).
    pub fn warm_cache(&self) -> Result<usize> {
        if let Some(thread) = self.warming.thread.lock().take() {
            return thread.join().unwrap_or_else(|_| {
                Err(Error::from(std::io::Error::other(
                    "the background warm-up of the record cache panicked",
                )))
            });
        }
        let Some(cache) = &self.cache else {
            return Ok(0);
        };
        warm_records(
            &self.records,
            cache,
            &self.sealing,
            &self.writer,
            &AtomicBool::new(false),
        )
    }

    /// Starts the background warm-up: the records into the record cache,
    /// then the index trees' pages into sled's cache (user names last, the
    /// most used), which answer what the record cache cannot: misses.
    fn start_warming(&self) {
        let Some(cache) = self.cache.clone() else {
            return;
        };
        let records = self.records.clone();
        let indexes = self.indexes.clone();
        let filter_slot = Arc::clone(&self.filter);
        #[cfg(test)]
        let walked = tests::WALKED.with(|w| w.borrow_mut().take());
        let db = self.db.clone();
        let sealing = Arc::clone(&self.sealing);
        let stop = Arc::clone(&self.warming.stop);
        let writer = Arc::clone(&self.writer);
        let spawned = std::thread::Builder::new()
            .name("tokenstore-warm".into())
            .spawn(move || {
                let read = warm_records(&records, &cache, &sealing, &writer, &stop)?;
                // The index filter, sized for four keys per record read (or
                // per 1 KiB on disk, when the cache filled before the end),
                // is set under the writer lock: every write from then on
                // inserts the keys it links, every earlier one is on disk
                // before the walk below starts.
                let mut keys = read as u64 * 4;
                if cache.weight() + 4096 > cache.capacity() {
                    keys = keys.max(db.size_on_disk().unwrap_or(0) / 256);
                }
                let keys = keys.saturating_mul(3) / 2;
                let filter = IndexFilter::new(usize::try_from(keys).unwrap_or(usize::MAX));
                let filter = {
                    let _writer = writer.lock();
                    filter_slot.get_or_init(|| filter)
                };
                // Nothing is cached from what is read here (sled's pages
                // are warmed, the filter learns the keys on disk), so no
                // writer lock is needed: writers go on.
                for (tree, field) in indexes.iter().zip(IndexedField::ALL).rev() {
                    for entry in tree.iter() {
                        if stop.load(Ordering::Relaxed) {
                            return Ok(read);
                        }
                        let (key, _) = entry.map_err(storage)?;
                        filter.insert(field, &key);
                    }
                }
                #[cfg(test)]
                if let Some(walked) = walked {
                    walked.wait(); // the walk is done
                    walked.wait(); // the test's writes are done
                }
                filter.complete();
                Ok(read)
            });
        // Without a thread the store works as well, warming as it is used.
        if let Ok(thread) = spawned {
            *self.warming.thread.lock() = Some(thread);
        }
    }

    /// Stops the background warm-up, if it runs, and waits for its thread
    /// (which holds handles on the sled database).
    fn stop_warming(&self) {
        self.warming.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.warming.thread.lock().take() {
            let _ = thread.join();
        }
        self.warming.stop.store(false, Ordering::Relaxed);
    }

    /// The size of the database on disk, in bytes, as sled accounts it.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.db.size_on_disk().map_err(storage)
    }

    fn index(&self, field: IndexedField) -> &Tree {
        &self.indexes[field as usize]
    }

    /// Ends a write that was committed to sled: takes its ticket while
    /// `locks` (the writer lock and the queue guard) are still held, so
    /// tickets follow commit order, releases them, then waits until the
    /// write is durable ([`durable_through`](Self::durable_through)).
    fn finish_write<L>(&self, locks: L) -> Result<()> {
        let ticket = {
            let mut state = self.group_commit.state.lock();
            state.committed += 1;
            state.committed
        };
        drop(locks);
        self.durable_through(ticket)
    }

    /// In durable mode, returns once the write holding `ticket` is on disk.
    ///
    /// Group commit: writers wait for the disk outside the writer lock, and
    /// one flush covers every write committed before it started. sled's
    /// flush holds off its transactions while it writes, so a writer that
    /// flushed at once would make the queued writers commit one flush at a
    /// time: a writer whose write is not covered waits while other writers
    /// are still on their way to a commit (at most `GROUP_COMMIT_WAIT`), and
    /// the last of them flushes for all. A lone writer flushes at once.
    fn durable_through(&self, ticket: u64) -> Result<()> {
        if let Durability::Buffered { .. } = self.options.durability {
            return Ok(());
        }
        let group = &self.group_commit;
        let waiting_since = Instant::now();
        let mut state = group.state.lock();
        loop {
            if state.durable >= ticket {
                return Ok(());
            }
            if state.flushing {
                group.flushed.wait(&mut state);
                continue;
            }
            if group.queued.load(Ordering::Acquire) > 0
                && waiting_since.elapsed() < GROUP_COMMIT_WAIT
            {
                group
                    .flushed
                    .wait_until(&mut state, waiting_since + GROUP_COMMIT_WAIT);
                continue;
            }
            state.flushing = true;
            let covers = state.committed;
            drop(state);
            let flushed = self.flush();
            state = group.state.lock();
            state.flushing = false;
            if flushed.is_ok() {
                state.durable = state.durable.max(covers);
            }
            group.flushed.notify_all();
            // On failure the waiting writers retry the flush themselves, and
            // each gets its own error if it fails again.
            flushed?;
        }
    }

    /// Runs `write` in one transaction over every tree; `touched` names the
    /// records it may change (`None`: any), which leave the record cache.
    fn transact<A>(
        &self,
        touched: Option<&[&str]>,
        write: impl Fn(&Trees<'_>) -> std::result::Result<A, ConflictableTransactionError<Error>>,
    ) -> Result<A> {
        let records = touched.map_or(1, |ids| ids.len() as u64);
        self.written.fetch_add(records, Ordering::Relaxed);
        match &self.cache {
            Some(cache) => {
                cache.begin_write(touched);
                let written = self.transact_uncached(write);
                cache.end_write(touched);
                written
            }
            None => self.transact_uncached(write),
        }
    }

    fn transact_uncached<A>(
        &self,
        write: impl Fn(&Trees<'_>) -> std::result::Result<A, ConflictableTransactionError<Error>>,
    ) -> Result<A> {
        let [user, access, refresh, grant] = &self.indexes;
        (&self.records, user, access, refresh, grant, &self.meta)
            .transaction(|(records, user, access, refresh, grant, meta)| {
                write(&Trees {
                    records,
                    indexes: [user, access, refresh, grant],
                    meta,
                    sealing: &self.sealing,
                    filter: self.filter.get(),
                })
            })
            .map_err(transaction_error)
    }

    /// The ids of every index entry that lists `id`, per field: the slow path
    /// for removing a record whose bytes cannot be decoded.
    fn index_entries_naming(&self, id: &str) -> Result<Vec<(IndexedField, Vec<u8>)>> {
        let mut found = Vec::new();
        for field in IndexedField::ALL {
            for entry in self.index(field).iter() {
                let (key, value) = entry.map_err(storage)?;
                if codec::decode_ids(&value).is_ok_and(|ids| ids.iter().any(|i| i == id)) {
                    found.push((field, key.to_vec()));
                }
            }
        }
        Ok(found)
    }
}

/// The state of group commit: writes counted in commit order, and how many
/// of them a finished flush covers.
#[derive(Default)]
struct GroupCommit {
    state: Mutex<GroupCommitState>,
    flushed: Condvar,
    /// Writers between asking for the writer lock and their commit.
    queued: AtomicUsize,
}

/// How long a committed durable write waits for writers queued behind it
/// to commit too, so that one flush covers them all.
const GROUP_COMMIT_WAIT: Duration = Duration::from_millis(1);

impl GroupCommit {
    /// Counts a writer as on its way to a commit until the guard drops.
    fn queue(&self) -> Queued<'_> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        Queued(self)
    }
}

struct Queued<'a>(&'a GroupCommit);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.0.queued.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Under the state lock, so a writer about to wait for the queue
            // cannot miss this.
            let _state = self.0.state.lock();
            self.0.flushed.notify_all();
        }
    }
}

#[derive(Default)]
struct GroupCommitState {
    /// Writes committed to sled so far (tickets).
    committed: u64,
    /// Writes known to be on disk: every ticket up to this one.
    durable: u64,
    /// Whether a writer is flushing now.
    flushing: bool,
}

/// What the writer lock guards: the counters every write reads and moves.
#[derive(Debug, Clone, Copy)]
pub(super) struct Counters {
    /// The last id the id counter issued.
    last_issued: u64,
    /// How many records the current key sealed (0 in a plain store).
    sealed: u64,
}

/// The seal count of an encrypted store: kept in the metadata since the
/// count moved into the write transaction; a store written before keeps
/// it in sled's id generator, read once here.
fn read_sealed(db: &sled::Db, meta: &Tree, sealing: &Sealing) -> Result<u64> {
    if !sealing.counts_seals() {
        return Ok(0);
    }
    match meta.get(SEALED_KEY).map_err(storage)? {
        Some(bytes) => Ok(u64::from_be_bytes(bytes.as_ref().try_into().map_err(
            |_| Error::corruption(None, "the stored seal count is not 8 bytes long"),
        )?)),
        None => db.generate_id().map_err(storage),
    }
}

/// The background warm-up of the record cache (see
/// [`SledStore::warm_cache`]).
#[derive(Default)]
struct Warming {
    /// Asks the thread to stop (a close, or a key change).
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<Result<usize>>>>,
}

/// How many entries the warm-up reads per hold of the writer lock.
const WARM_CHUNK: usize = 256;

/// Reads records into `cache` until it is full, `stop` is set, or all are
/// read; returns how many it read.
///
/// It reads under the writer lock, `WARM_CHUNK` records at a time, with a
/// new iterator per chunk (from the last key read): a sled iterator hands
/// out entries of a node it read earlier, so a record it yields can predate
/// a commit made since, whatever epoch was taken just before `next()`. With
/// one iterator and no lock, such stale records reached the cache, the
/// writers' planning read them, and the SIGKILL crash tests' `check()`
/// found index entries that disagree with records (issue 14). Under the
/// lock no write commits during a chunk, so what a chunk reads is current.
fn warm_records(
    records: &Tree,
    cache: &RecordCache,
    sealing: &Sealing,
    writer: &Mutex<Counters>,
    stop: &AtomicBool,
) -> Result<usize> {
    use std::ops::Bound;
    let mut read = 0;
    let mut last: Option<sled::IVec> = None;
    while !stop.load(Ordering::Relaxed) {
        // Let a waiting writer in between chunks.
        let _writer = writer.lock();
        let seen = cache.snapshot();
        let mut chunk = match &last {
            None => records.iter(),
            Some(key) => records.range((Bound::Excluded(key.clone()), Bound::Unbounded)),
        };
        for _ in 0..WARM_CHUNK {
            let Some(entry) = chunk.next() else {
                return Ok(read);
            };
            let (key, bytes) = entry.map_err(storage)?;
            let id = std::str::from_utf8(&key)
                .map_err(|_| Error::corruption(None, "a record key is not UTF-8"))?;
            let record = sealing.decode(id, &bytes)?;
            if let Some(cached) = cache.fill(seen, &record) {
                for field in IndexedField::ALL {
                    if let Some(value) = record.indexed(field) {
                        cache.remember_hint(field, value, &cached);
                    }
                }
            }
            read += 1;
            last = Some(key);
            // Full (eviction keeps the weight just under the capacity):
            // reading on would only replace records with others.
            if cache.weight() + 4096 > cache.capacity() {
                return Ok(read);
            }
        }
    }
    Ok(read)
}

/// sled 0.34 writes its recovery snapshot only while opening: the first
/// open after N writes replays them from the log (3.4 s after loading 1M
/// tokens). Armed by a clean close that wrote many records since the open,
/// this opens the database once more after every handle on it is gone, so
/// the replay (and a fresh snapshot) happens at the close instead, and the
/// next open only reads the snapshot.
#[derive(Default)]
struct Resnapshot {
    armed: Option<(sled::Config, PathBuf)>,
}

impl Drop for Resnapshot {
    fn drop(&mut self) {
        if let Some((config, path)) = self.armed.take() {
            // A failure leaves the replay to the next open, as before.
            drop(open_sled(&config, &path));
            // The snapshot it wrote gets owner-only modes too.
            let _ = secure_permissions(&path);
        }
    }
}

fn sled_config(options: &SledOptions, data_dir: &Path) -> sled::Config {
    let flush_every = match options.durability {
        Durability::Durable => Some(500),
        Durability::Buffered { flush_every } => Some(
            u64::try_from(flush_every.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        ),
    };
    sled::Config::new()
        .path(data_dir)
        .cache_capacity(options.cache_capacity)
        .flush_every_ms(flush_every)
}

/// An open sled database and its trees.
struct Engine {
    db: sled::Db,
    records: Tree,
    indexes: [Tree; 4],
    meta: Tree,
}

impl Engine {
    /// Opens (creating) the sled database in `data_dir`; `path` is the
    /// store directory, for messages.
    fn open(options: &SledOptions, data_dir: &Path, path: &Path) -> Result<Engine> {
        let db = open_sled(&sled_config(options, data_dir), path)?;
        let open_tree = |name: &str| db.open_tree(name).map_err(storage);
        Ok(Engine {
            records: open_tree(RECORDS_TREE)?,
            indexes: [
                open_tree(&index_tree_name(IndexedField::UserName))?,
                open_tree(&index_tree_name(IndexedField::AccessToken))?,
                open_tree(&index_tree_name(IndexedField::RefreshToken))?,
                open_tree(&index_tree_name(IndexedField::GrantToken))?,
            ],
            meta: open_tree(META_TREE)?,
            db,
        })
    }
}

/// The transactional view of every tree.
struct Trees<'a> {
    records: &'a TransactionalTree,
    indexes: [&'a TransactionalTree; 4],
    meta: &'a TransactionalTree,
    sealing: &'a Sealing,
    filter: Option<&'a IndexFilter>,
}

type TxResult<T = ()> = std::result::Result<T, ConflictableTransactionError<Error>>;

impl Trees<'_> {
    fn link(&self, field: IndexedField, value: &str, id: &str) -> TxResult {
        self.link_digest(field, &self.sealing.digest(value), id)
    }

    fn unlink(&self, field: IndexedField, value: &str, id: &str) -> TxResult {
        self.unlink_digest(field, &self.sealing.digest(value), id)
    }

    fn link_digest(&self, field: IndexedField, key: &[u8], id: &str) -> TxResult {
        // Before the commit: the filter never rules out a key on disk.
        if let Some(filter) = self.filter {
            filter.insert(field, key);
        }
        let tree = self.indexes[field as usize];
        let mut ids = match tree.get(key)? {
            Some(bytes) => codec::decode_ids(&bytes).map_err(abort)?,
            None => Vec::new(),
        };
        if !ids.iter().any(|i| i == id) {
            ids.push(id.to_owned());
        }
        tree.insert(key, codec::encode_ids(&ids))?;
        Ok(())
    }

    fn unlink_digest(&self, field: IndexedField, key: &[u8], id: &str) -> TxResult {
        let tree = self.indexes[field as usize];
        let Some(bytes) = tree.get(key)? else {
            return Ok(());
        };
        let mut ids = codec::decode_ids(&bytes).map_err(abort)?;
        ids.retain(|i| i != id);
        if ids.is_empty() {
            tree.remove(key)?;
        } else {
            tree.insert(key, codec::encode_ids(&ids))?;
        }
        Ok(())
    }
}

fn create_private_dir(path: &Path) -> Result<()> {
    if path.exists() && !path.is_dir() {
        return Err(Error::from(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a directory; a token store is a directory",
                path.display()
            ),
        )));
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path).map_err(|e| {
        Error::from(std::io::Error::new(
            e.kind(),
            format!(
                "cannot create the token store directory {}: {e}",
                path.display()
            ),
        ))
    })
}

/// How long a sled lock still held after our own directory lock was taken
/// is waited for: see [`open_sled`].
const SLED_LOCK_GRACE: Duration = Duration::from_secs(5);

/// Opens sled. Our directory lock is already held, so no other tokenstore
/// handle is live; if sled's own lock is still taken, it is a handle of this
/// process that was just dropped and whose background tasks are finishing
/// (sled releases its lock when they end), or a foreign sled user. Wait a
/// bounded time for the first, then report `Locked`.
fn open_sled(config: &sled::Config, path: &Path) -> Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock") => {
                if started.elapsed() >= SLED_LOCK_GRACE {
                    return Err(Error::Locked {
                        path: path.to_path_buf(),
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(other) => return Err(storage(other)),
        }
    }
}

/// How long even a fail-fast open waits out a lock held for an instant: a
/// child process of this one, between its fork and its exec, briefly holds a
/// copy of the lock file's descriptor after the handle that took the lock
/// was dropped. Another process's open store holds the lock far longer.
const LOCK_GRACE: Duration = Duration::from_millis(250);

/// Takes the store directory's lock file, waiting up to `wait` (at least
/// [`LOCK_GRACE`]) for another process to release it.
fn lock_directory(path: &Path, wait: Duration) -> Result<File> {
    let wait = wait.max(LOCK_GRACE);
    let lock_path = path.join(LOCK_FILE);
    let mut open = OpenOptions::new();
    open.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    let file = open.open(&lock_path).map_err(|e| {
        Error::from(std::io::Error::new(
            e.kind(),
            format!("cannot open the lock file {}: {e}", lock_path.display()),
        ))
    })?;
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) => {
                let waited = started.elapsed();
                if waited >= wait {
                    return Err(Error::Locked {
                        path: path.to_path_buf(),
                    });
                }
                std::thread::sleep(pause.min(wait - waited));
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(TryLockError::Error(e)) => return Err(Error::from(e)),
        }
    }
}

/// Checks the stored format version against the key given: a plain store
/// (version 1) opens without a key, an encrypted one (version 2) only with
/// the key whose check value it holds. A new store is stamped with the
/// version (and key check value) of `sealing`.
fn check_format(
    db: &sled::Db,
    meta: &Tree,
    records: &Tree,
    sealing: &Sealing,
    path: &Path,
) -> Result<()> {
    let path_buf = || path.to_path_buf();
    match meta.get(FORMAT_VERSION_KEY).map_err(storage)? {
        Some(bytes) => {
            let found = u32::from_be_bytes(bytes.as_ref().try_into().map_err(|_| {
                Error::corruption(None, "the stored format version is not 4 bytes long")
            })?);
            match (found, sealing.key_check()) {
                (1, None) => Ok(()),
                (1, Some(_)) => Err(Error::NotEncrypted { path: path_buf() }),
                (2, None) => Err(Error::KeyRequired { path: path_buf() }),
                (2, Some(expected)) => match meta.get(KEY_CHECK_KEY).map_err(storage)? {
                    Some(stored) if stored.as_ref() == expected.as_slice() => Ok(()),
                    Some(_) => Err(Error::WrongKey { path: path_buf() }),
                    None => Err(Error::corruption(
                        None,
                        "the store is encrypted but its key check value is missing",
                    )),
                },
                (found, _) => Err(Error::UnsupportedVersion {
                    found,
                    supported: u32::from(codec::SEALED_VERSION),
                }),
            }
        }
        None if records.is_empty() => {
            meta.transaction(|meta| {
                meta.insert(
                    FORMAT_VERSION_KEY,
                    &u32::from(sealing.format_version()).to_be_bytes(),
                )?;
                if let Some(check) = sealing.key_check() {
                    meta.insert(KEY_CHECK_KEY, check.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<Error>>(())
            })
            .map_err(transaction_error)?;
            db.flush().map_err(storage)?;
            Ok(())
        }
        None => Err(Error::corruption(
            None,
            "the database holds records but no format version; it was not written by tokenstore",
        )),
    }
}

/// Makes the store directory (and its subdirectories) 0700 and every file
/// in it 0600, whatever the umask the storage engine created them under.
#[cfg(unix)]
fn secure_permissions(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |e: std::io::Error, at: &Path| {
        Error::from(std::io::Error::new(
            e.kind(),
            format!("cannot restrict the permissions of {}: {e}", at.display()),
        ))
    };
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(|e| fail(e, &dir))?;
        for entry in fs::read_dir(&dir).map_err(|e| fail(e, &dir))? {
            let entry = entry.map_err(|e| fail(e, &dir))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| fail(e, &path))?;
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                let mode = entry
                    .metadata()
                    .map_err(|e| fail(e, &path))?
                    .permissions()
                    .mode();
                if mode & 0o777 != 0o600 {
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                        .map_err(|e| fail(e, &path))?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn secure_permissions(_dir: &Path) -> Result<()> {
    Ok(())
}

/// A record, and its entry in the record cache when it has one.
type Entry = (OAuthToken, Option<Arc<Cached>>);

impl SledStore {
    fn record_uncached(&self, id: &str) -> Result<Option<OAuthToken>> {
        match self.records.get(id.as_bytes()).map_err(storage)? {
            Some(bytes) => self.sealing.decode(id, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The record `id`: from the cache, else read from sled (and cached).
    fn record_entry(&self, id: &str) -> Result<Option<Entry>> {
        let Some(cache) = &self.cache else {
            return Ok(self.record_uncached(id)?.map(|record| (record, None)));
        };
        if let Some(cached) = cache.record(id) {
            return Ok(Some((cached.to_token(), Some(cached))));
        }
        let seen = cache.snapshot();
        Ok(self.record_uncached(id)?.map(|record| {
            let cached = cache.fill(seen, &record);
            (record, cached)
        }))
    }
}

/// The committed state as sled's trees hold it, with no cache in between:
/// what writes are planned from, under the writer lock.
struct Committed<'a>(&'a SledStore);

impl StoreView for Committed<'_> {
    fn record(&self, id: &str) -> Result<Option<OAuthToken>> {
        self.0.record_uncached(id)
    }

    fn contains(&self, id: &str) -> Result<bool> {
        self.0.records.contains_key(id.as_bytes()).map_err(storage)
    }

    fn record_with(&self, field: IndexedField, value: &str) -> Result<Option<OAuthToken>> {
        let digest = self.0.sealing.digest(value);
        let Some(entry) = self.0.index(field).get(digest).map_err(storage)? else {
            return Ok(None);
        };
        for id in codec::decode_ids(&entry)? {
            if let Some(record) = self.0.record_uncached(&id)? {
                if record.indexed(field) == Some(value) {
                    return Ok(Some(record));
                }
            }
        }
        Ok(None)
    }
}

/// Reads: through the record cache, its hints and the index filter.
impl StoreView for SledStore {
    fn record(&self, id: &str) -> Result<Option<OAuthToken>> {
        Ok(self.record_entry(id)?.map(|(record, _)| record))
    }

    fn contains(&self, id: &str) -> Result<bool> {
        self.records.contains_key(id.as_bytes()).map_err(storage)
    }

    fn record_with(&self, field: IndexedField, value: &str) -> Result<Option<OAuthToken>> {
        // A hint is only a guess: the (current) record must hold the value.
        if let Some(cached) = self.cache.as_ref().and_then(|c| c.hint(field, value)) {
            if cached.indexed(field) == Some(value) {
                return Ok(Some(cached.to_token()));
            }
        }
        let digest = self.sealing.digest(value);
        if let Some(filter) = self.filter.get() {
            if !filter.may_hold(field, &digest) {
                return Ok(None);
            }
        }
        let Some(entry) = self.index(field).get(digest).map_err(storage)? else {
            return Ok(None);
        };
        for id in codec::decode_ids(&entry)? {
            // The record is compared with the value: a digest collision, or a
            // reader racing a writer, never yields a record without it.
            if let Some((record, cached)) = self.record_entry(&id)? {
                if record.indexed(field) == Some(value) {
                    if let (Some(cache), Some(cached)) = (&self.cache, &cached) {
                        cache.remember_hint(field, value, cached);
                    }
                    return Ok(Some(record));
                }
            }
        }
        Ok(None)
    }
}

impl SledStore {
    /// Applies `writes`, planned under the writer lock (held as `counters`),
    /// in one transaction over every tree: records, index entries, the id
    /// counter and the seal count change together or not at all.
    fn apply(&self, counters: &mut Counters, writes: &WriteSet) -> Result<()> {
        let encoded = self
            .sealing
            .encode_writes(writes, counters.sealed, &self.path)?;
        // The index entries of records that cannot be decoded, found by
        // scanning for their ids (outside the transaction, which may rerun).
        let mut damaged = Vec::new();
        for (id, change) in &writes.changes {
            if change.previous == Stored::Damaged {
                damaged.push((id.as_str(), self.index_entries_naming(id)?));
            }
        }
        let touched: Vec<&str> = writes.changes.keys().map(String::as_str).collect();
        let before = *counters;
        self.transact(Some(&touched), |trees| {
            for (id, entries) in &damaged {
                for (field, key) in entries {
                    trees.unlink_digest(*field, key, id)?;
                }
            }
            for ((id, change), bytes) in writes.changes.iter().zip(&encoded.records) {
                match bytes {
                    Some(bytes) => trees.records.insert(id.as_bytes(), bytes.as_slice())?,
                    None => trees.records.remove(id.as_bytes())?,
                };
                for (field, old, new) in change.index_changes() {
                    if let Some(old) = old {
                        trees.unlink(field, old, id)?;
                    }
                    if let Some(new) = new {
                        trees.link(field, new, id)?;
                    }
                }
            }
            if writes.last_issued != before.last_issued {
                trees
                    .meta
                    .insert(LAST_ISSUED_KEY, &writes.last_issued.to_be_bytes())?;
            }
            if encoded.sealed != before.sealed {
                trees
                    .meta
                    .insert(SEALED_KEY, &encoded.sealed.to_be_bytes())?;
            }
            Ok(())
        })?;
        counters.last_issued = writes.last_issued;
        counters.sealed = encoded.sealed;
        Ok(())
    }
}

impl StorageEngine for SledStore {
    fn read<T: Send>(&self, read: impl FnOnce(&dyn StoreView) -> Result<T> + Send) -> Result<T> {
        read(self)
    }

    fn write<T: Send>(&self, _replay: Replay, plan: &mut Plan<'_, T>) -> Result<T> {
        let queued = self.group_commit.queue();
        let mut counters = self.writer.lock();
        let (out, writes) = plan(&Committed(self), counters.last_issued)?;
        let Some(writes) = writes else {
            return Ok(out);
        };
        self.apply(&mut counters, &writes)?;
        self.finish_write((counters, queued))?;
        Ok(out)
    }

    fn save(&self, token: &OAuthToken) -> Result<OAuthToken> {
        // Concurrent saves are applied together (see `combine`).
        self.save_combined(token)
    }

    fn records(&self) -> Result<Vec<OAuthToken>> {
        self.records
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(storage)?;
                self.sealing.decode(&String::from_utf8_lossy(&key), &value)
            })
            .collect()
    }

    fn clear(&self) -> Result<usize> {
        let queued = self.group_commit.queue();
        let writer = self.writer.lock();
        // The removal of every key of a tree, and how many there are.
        let keys_of = |tree: &Tree| -> Result<(SledBatch, usize)> {
            let mut batch = SledBatch::default();
            let mut count = 0;
            for key in tree.iter().keys() {
                batch.remove(key.map_err(storage)?);
                count += 1;
            }
            Ok((batch, count))
        };
        let (records, count) = keys_of(&self.records)?;
        let indexes = [
            keys_of(&self.indexes[0])?.0,
            keys_of(&self.indexes[1])?.0,
            keys_of(&self.indexes[2])?.0,
            keys_of(&self.indexes[3])?.0,
        ];
        // One transaction, so a crash leaves all records or none.
        self.transact(None, |trees| {
            trees.records.apply_batch(&records)?;
            for (tree, batch) in trees.indexes.iter().zip(&indexes) {
                tree.apply_batch(batch)?;
            }
            Ok(())
        })?;
        self.finish_write((writer, queued))?;
        Ok(count)
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // Its thread holds handles on the database.
        self.stop_warming();
        // A clean close loses nothing, also in buffered mode. A failure here
        // has nowhere to go; what was acknowledged durably is already on disk.
        let flushed = self.db.flush().is_ok();
        if flushed && *self.written.get_mut() >= self.resnapshot_after {
            let data_dir = layout::data_dir(&self.path, self.generation);
            self.resnapshot.armed =
                Some((sled_config(&self.options, &data_dir), self.path.clone()));
        }
        // Files sled created since the open (snapshots) get owner-only
        // modes too; the 0700 directory already keeps others out.
        let _ = secure_permissions(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TokenStore;

    thread_local! {
        /// A barrier the next warm-up started from this thread meets twice
        /// between its walk of the index trees and completing the filter.
        pub(super) static WALKED: std::cell::RefCell<Option<Arc<std::sync::Barrier>>> =
            const { std::cell::RefCell::new(None) };
    }

    fn user(n: u32) -> OAuthToken {
        OAuthToken::new()
            .with_user_name(format!("user{n}"))
            .with_refresh_token(format!("1000.r{n}"))
    }

    #[test]
    fn opening_warms_the_record_cache_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        {
            let store =
                SledStore::open_with(&path, SledOptions::default().warm_on_open(false)).unwrap();
            assert!(store.warming.thread.lock().is_none());
            for n in 0..50 {
                store.save_token(&mut user(n)).unwrap();
            }
        }
        let store = SledStore::open(&path).unwrap();
        let thread = store
            .warming
            .thread
            .lock()
            .take()
            .expect("a warm-up thread");
        assert_eq!(thread.join().unwrap().unwrap(), 50);
        let cache = store.cache.as_ref().unwrap();
        for id in 1..=50 {
            assert!(cache.record(&id.to_string()).is_some(), "record {id}");
        }
        // Encrypted stores keep decrypted records to what lookups bring in.
        drop(store);
        let key = Key::from_bytes([3; 32]);
        let mut store = SledStore::open(&path).unwrap();
        store.set_encryption(Some(key.clone())).unwrap();
        drop(store);
        let store = SledStore::open_with(&path, SledOptions::default().encryption(key)).unwrap();
        assert!(store.warming.thread.lock().is_none());
        assert_eq!(store.cache.as_ref().unwrap().weight(), 0);
    }

    fn lookups(n: u32) -> [OAuthToken; 2] {
        [
            OAuthToken::new().with_user_name(format!("user{n}")),
            OAuthToken::new()
                .with_client_id("c")
                .with_client_secret("s")
                .with_refresh_token(format!("1000.r{n}")),
        ]
    }

    /// Lookups that miss the record cache's hints go through the index
    /// filter: once the warm-up completed it, every key on disk (written
    /// before the open, during the warm-up, after it) is found, and absent
    /// values are ruled out without sled.
    #[test]
    fn the_index_filter_never_rules_out_a_stored_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let before = 3_000;
        {
            let store =
                SledStore::open_with(&path, SledOptions::default().warm_on_open(false)).unwrap();
            store
                .batch(|b| (0..before).try_for_each(|n| b.save_token(&mut user(n))))
                .unwrap();
        }
        // A record cache too small for the hints to answer most lookups.
        let options = SledOptions::default()
            .record_cache(16 << 10)
            .warm_on_open(true);
        let store = Arc::new(SledStore::open_with(&path, options).unwrap());
        // Saves racing the warm-up's walk of the index trees.
        let writer = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for n in before..before + 300 {
                    store.save_token(&mut user(n)).unwrap();
                }
            })
        };
        writer.join().unwrap();
        store.warm_cache().unwrap();
        let filter = store.filter.get().expect("a filter");
        assert!(filter.is_complete(), "the walk completed");
        for n in before + 300..before + 400 {
            store.save_token(&mut user(n)).unwrap();
        }
        for n in 0..before + 400 {
            for query in lookups(n) {
                let found = store.find_token(&query).unwrap();
                assert_eq!(found.and_then(|t| t.user_name), Some(format!("user{n}")));
            }
        }
        let ruled_out = (0..1_000)
            .filter(|n| {
                !filter.may_hold(
                    IndexedField::UserName,
                    &store.sealing.digest(&format!("nobody{n}")),
                )
            })
            .count();
        assert!(
            ruled_out > 950,
            "{ruled_out} of 1,000 absent users ruled out"
        );
        for n in 0..100 {
            let absent = OAuthToken::new().with_user_name(format!("nobody{n}"));
            assert_eq!(store.find_token(&absent).unwrap(), None);
        }
    }

    /// Writes after the walk has passed their keys, before the filter is
    /// complete: only their writers can have inserted them (a filter set
    /// after the walk, or writers that do not insert, would rule them out).
    #[test]
    fn writes_between_the_walk_and_completion_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        drop(SledStore::open(&path).unwrap());
        let walked = Arc::new(std::sync::Barrier::new(2));
        WALKED.with(|w| *w.borrow_mut() = Some(Arc::clone(&walked)));
        let options = SledOptions::default()
            .record_cache(16 << 10)
            .warm_on_open(true);
        let store = SledStore::open_with(&path, options).unwrap();
        walked.wait();
        for n in 0..200 {
            store.save_token(&mut user(n)).unwrap();
        }
        walked.wait();
        store.warm_cache().unwrap();
        assert!(store.filter.get().unwrap().is_complete());
        for n in 0..200 {
            for query in lookups(n) {
                assert!(store.find_token(&query).unwrap().is_some(), "user{n}");
            }
        }
    }

    /// With every id and value hashing alike, record entries and hints
    /// lead to the wrong records all the time: lookups still answer with
    /// the right one (each is checked against the id or value asked).
    #[test]
    fn colliding_cache_keys_never_answer_for_another_user() {
        let dir = tempfile::tempdir().unwrap();
        let options = SledOptions::default().warm_on_open(false);
        let mut store = SledStore::open_with(dir.path().join("s"), options).unwrap();
        Arc::get_mut(store.cache.as_mut().unwrap()).unwrap().collide = true;
        for n in 0..20 {
            store.save_token(&mut user(n)).unwrap();
        }
        for _ in 0..2 {
            for n in 0..20 {
                for query in lookups(n) {
                    let found = store.find_token(&query).unwrap().unwrap();
                    assert_eq!(found.user_name, Some(format!("user{n}")));
                }
                let id = (n + 1).to_string();
                let by_id = store.find_token_by_id(&id).unwrap().unwrap();
                assert_eq!(by_id.id.as_deref(), Some(id.as_str()));
            }
        }
    }

    /// A key change changes every digest: the filter learned the old ones,
    /// so it goes, and lookups go to sled.
    #[test]
    fn a_key_change_drops_the_index_filter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let options = || {
            SledOptions::default()
                .record_cache(16 << 10)
                .warm_on_open(true)
        };
        {
            let store = SledStore::open_with(&path, options()).unwrap();
            for n in 0..200 {
                store.save_token(&mut user(n)).unwrap();
            }
        }
        let mut store = SledStore::open_with(&path, options()).unwrap();
        store.warm_cache().unwrap();
        store
            .set_encryption(Some(Key::from_bytes([4; 32])))
            .unwrap();
        for n in 0..200 {
            for query in lookups(n) {
                assert!(store.find_token(&query).unwrap().is_some(), "user{n}");
            }
        }
    }

    /// The newest recovery snapshot sled wrote in `dir`.
    fn newest_snapshot(dir: &Path) -> Option<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("snap.") && !name.ends_with(".generating"))
            .max()
    }

    #[test]
    fn a_close_after_many_writes_leaves_a_fresh_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut store = SledStore::open(&path).unwrap();
        store.resnapshot_after = 10;
        for n in 0..9 {
            store.save_token(&mut user(n)).unwrap();
        }
        let before = newest_snapshot(&path);
        drop(store);
        // Fewer writes than the threshold: the close leaves the replay to the
        // next open, which is short.
        assert_eq!(newest_snapshot(&path), before);

        let mut store = SledStore::open(&path).unwrap();
        store.resnapshot_after = 10;
        let before = newest_snapshot(&path);
        for n in 10..30 {
            store.save_token(&mut user(n)).unwrap();
        }
        drop(store);
        let after = newest_snapshot(&path);
        assert!(after > before, "{after:?} after {before:?}");
        let store = SledStore::open(&path).unwrap();
        assert_eq!(store.len(), 29);
        assert!(store.find_token(&user(29)).unwrap().is_some());
    }

    /// Writes are planned from the trees: a read cache that is wrong (here
    /// a filter that rules out every value, and a stale cached record)
    /// misleads lookups, never the uniqueness of a save.
    #[test]
    fn saves_are_planned_from_the_trees_not_the_read_caches() {
        let dir = tempfile::tempdir().unwrap();
        let options = SledOptions::default().warm_on_open(false);
        let mut store = SledStore::open_with(dir.path().join("s"), options).unwrap();
        store.save_token(&mut user(1)).unwrap();
        let wrong = IndexFilter::new(16);
        wrong.complete();
        store.filter = Arc::new(OnceLock::from(wrong));
        assert_eq!(
            store.find_token(&lookups(1)[0]).unwrap(),
            None,
            "the filter misleads reads"
        );
        // The same user again (no id): it must update record 1, not add one.
        let mut again = user(1).with_access_token("1000.a1");
        store.save_token(&mut again).unwrap();
        assert_eq!(again.id.as_deref(), Some("1"));
        // A stale cached record (before the save above) must not let another
        // record take the access token record 1 now holds.
        let cache = store.cache.as_ref().unwrap();
        let stale = cache.fill(cache.snapshot(), &user(1).with_id("1"));
        assert!(stale.is_some());
        let mut thief = user(2).with_access_token("1000.a1");
        let err = store.save_token(&mut thief).unwrap_err();
        assert!(
            matches!(err, Error::Conflict { ref id, .. } if id == "1"),
            "{err:?}"
        );
        assert_eq!(store.len(), 1);
        assert!(store.check().unwrap().is_ok());
    }

    #[test]
    fn a_key_that_sealed_its_budget_refuses_writes_until_changed() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::from_bytes([7; 32]);
        let mut store =
            SledStore::open_with(dir.path().join("s"), SledOptions::default().encryption(key))
                .unwrap();
        Arc::get_mut(&mut store.sealing).unwrap().set_seal_budget(3);
        let token = |n: u32| {
            OAuthToken::new()
                .with_user_name(format!("user{n}"))
                .with_refresh_token(format!("1000.r{n}"))
        };
        for n in 0..3 {
            store.save_token(&mut token(n)).unwrap();
        }
        let err = store.save_token(&mut token(3)).unwrap_err();
        assert!(matches!(err, Error::RekeyRequired { .. }), "{err}");
        assert!(err.to_string().contains("Backend::set_encryption"), "{err}");
        let refused = store.batch(|b| b.save_token(&mut token(4)));
        assert!(matches!(refused, Err(Error::RekeyRequired { .. })));
        // Nothing was written by the refused saves; reads still work.
        assert_eq!(store.len(), 3);
        assert!(store.find_token(&token(1)).unwrap().is_some());
        // A new key starts a new count: the 3 records it sealed, then one
        // more within a budget of 4.
        store
            .set_encryption(Some(Key::from_bytes([8; 32])))
            .unwrap();
        Arc::get_mut(&mut store.sealing).unwrap().set_seal_budget(4);
        store.save_token(&mut token(3)).unwrap();
        assert_eq!(store.len(), 4);
        let err = store.save_token(&mut token(5)).unwrap_err();
        assert!(matches!(err, Error::RekeyRequired { .. }), "{err}");
    }
}
