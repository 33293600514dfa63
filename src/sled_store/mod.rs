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
pub(crate) use combine::{panicked as combined_panicked, LINGER};
mod filter;
mod group_commit;
mod layout;
mod open;
mod options;
mod read;
mod rekey;
mod resnapshot;
#[cfg(test)]
mod tests;
mod warm;
mod write;

use group_commit::GroupCommit;
use open::Engine;
use open::{open_sled, secure_permissions, sled_config};
pub use options::{Durability, Options, SledOptions};
use read::Committed;
pub(crate) use read::Found;
use resnapshot::RESNAPSHOT_AFTER_WRITES;
use warm::Warming;
use write::Counters;

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
use crate::logging::{Secs, LOCK_WAIT_NOTICE, STORE};
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

/// The record codec, for the fuzz targets only.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::codec::{decode_ids, decode_record, encode_record};
    /// The shared store's wire decoder (see `wire::fuzz_frames`).
    #[cfg(target_os = "linux")]
    pub use crate::shared::wire::fuzz_frames;
}

fn index_tree_name(field: IndexedField) -> String {
    format!("index_{}", field.name())
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
    /// The sled database and its trees; `None` once closed (only `close`
    /// and the drop take it, so no method sees it gone).
    engine: Option<Engine>,
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
    /// Held for the life of the store: the process-level lock on the
    /// directory (released by `shut_down` after every handle on the
    /// database is gone, not by field order).
    lock: Option<File>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

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
    /// Whether `path` holds a token store (its lock file and its live
    /// database), without opening it.
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
        path.is_dir()
            && path.join(LOCK_FILE).is_file()
            && layout::current_generation(path)
                .is_ok_and(|generation| layout::data_dir(path, generation).join("db").exists())
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
        self.engine().records.len()
    }

    /// Whether no record is stored.
    pub fn is_empty(&self) -> bool {
        self.engine().records.is_empty()
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
        self.engine().db.flush().map(drop).map_err(storage)
    }

    /// The size of the database on disk, in bytes, as sled accounts it.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.engine().db.size_on_disk().map_err(storage)
    }

    fn index(&self, field: IndexedField) -> &Tree {
        &self.engine().indexes[field as usize]
    }
}

impl StorageEngine for SledStore {
    fn read<T: Send>(&self, read: impl Fn(&dyn StoreView) -> Result<T> + Send) -> Result<T> {
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
        self.engine()
            .records
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
        let (records, count) = keys_of(&self.engine().records)?;
        let indexes = [
            keys_of(&self.engine().indexes[0])?.0,
            keys_of(&self.engine().indexes[1])?.0,
            keys_of(&self.engine().indexes[2])?.0,
            keys_of(&self.engine().indexes[3])?.0,
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

impl SledStore {
    /// The sled database and its trees.
    fn engine(&self) -> &Engine {
        self.engine
            .as_ref()
            .expect("a store is open until it is closed or dropped")
    }

    /// Closes the store and reports what failed: the background warm-up is
    /// stopped, everything is flushed (also in buffered mode), the database
    /// handles are dropped (after many writes the database is reopened once
    /// so that the next open does not replay them, see [`RESNAPSHOT_AFTER_WRITES`]),
    /// the files get owner-only modes, and the directory lock is released.
    /// Dropping the store does the same, ignoring failures.
    ///
    /// ```
    /// use tokenstore::{Durability, OAuthToken, SledOptions, SledStore, TokenStore};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("tokens");
    /// let store = SledStore::open_with(&path, SledOptions::default().durability(Durability::BUFFERED))?;
    /// store.save_token(&mut OAuthToken::new().with_user_name("ana").with_refresh_token("1000.r"))?;
    /// store.close()?; // flushed, or an error saying why not
    /// assert_eq!(SledStore::open(&path)?.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] when the final flush or the permission change fails
    /// (what was acknowledged durably is on disk all the same).
    pub fn close(mut self) -> Result<()> {
        self.shut_down()
    }

    /// The close, once: explicit steps in order, whatever the order of
    /// the fields.
    fn shut_down(&mut self) -> Result<()> {
        let Some(engine) = self.engine.take() else {
            return Ok(());
        };
        let started = Instant::now();
        // Its thread holds handles on the database.
        self.stop_warming();
        // A clean close loses nothing, also in buffered mode.
        let flushed = engine.db.flush().map(drop).map_err(storage);
        let data_dir = layout::data_dir(&self.path, self.generation);
        let config = sled_config(&self.options, &data_dir);
        drop(engine);
        if flushed.is_ok() && *self.written.get_mut() >= self.resnapshot_after {
            resnapshot::resnapshot(&config, &self.path);
        }
        // Files sled created since the open (snapshots) get owner-only
        // modes too; the 0700 directory already keeps others out.
        let secured = secure_permissions(&self.path);
        drop(self.lock.take());
        let closed = flushed.and(secured);
        match &closed {
            Ok(()) => log::debug!(
                target: STORE,
                "closed the sled store {} in {}",
                self.path.display(),
                Secs(started.elapsed())
            ),
            Err(e) => log::warn!(
                target: STORE,
                "closing the sled store {} failed (what was acknowledged durably is on disk): {e}",
                self.path.display()
            ),
        }
        closed
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // A failure here has nowhere to go; what was acknowledged durably
        // is already on disk.
        let _ = self.shut_down();
    }
}
