//! The background warm-up of the record cache and the index filter.

use super::*;

impl SledStore {
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
            &self.engine().records,
            cache,
            &self.sealing,
            &self.writer,
            &AtomicBool::new(false),
        )
    }

    /// Starts the background warm-up: the records into the record cache,
    /// then the index trees' pages into sled's cache (user names last, the
    /// most used), which answer what the record cache cannot: misses.
    pub(super) fn start_warming(&self) {
        let Some(cache) = self.cache.clone() else {
            return;
        };
        let records = self.engine().records.clone();
        let indexes = self.engine().indexes.clone();
        let filter_slot = Arc::clone(&self.filter);
        #[cfg(test)]
        let walked = tests::WALKED.with(|w| w.borrow_mut().take());
        let db = self.engine().db.clone();
        let sealing = Arc::clone(&self.sealing);
        let stop = Arc::clone(&self.warming.stop);
        let writer = Arc::clone(&self.writer);
        let path = self.path.clone();
        let spawned = std::thread::Builder::new()
            .name("tokenstore-warm".into())
            .spawn(move || {
                log::debug!(target: STORE, "warm-up of the store {} started", path.display());
                let started = Instant::now();
                let warmed = (|| {
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
                })();
                let took = Secs(started.elapsed());
                match &warmed {
                    Ok(read) if stop.load(Ordering::Relaxed) => log::debug!(
                        target: STORE,
                        "warm-up of the store {} stopped by the close: {read} records cached in {took}",
                        path.display()
                    ),
                    Ok(read) => log::debug!(
                        target: STORE,
                        "warm-up of the store {} done: {read} records cached in {took}",
                        path.display()
                    ),
                    Err(e) => log::warn!(
                        target: STORE,
                        "warm-up of the store {} failed after {took} (the store works, warming \
                         as it is used): {e}",
                        path.display()
                    ),
                }
                warmed
            });
        // Without a thread the store works as well, warming as it is used.
        if let Ok(thread) = spawned {
            *self.warming.thread.lock() = Some(thread);
        }
    }

    /// Stops the background warm-up, if it runs, and waits for its thread
    /// (which holds handles on the sled database).
    pub(super) fn stop_warming(&self) {
        self.warming.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.warming.thread.lock().take() {
            let _ = thread.join();
        }
        self.warming.stop.store(false, Ordering::Relaxed);
    }
}

/// The background warm-up of the record cache (see
/// [`SledStore::warm_cache`]).
#[derive(Default)]
pub(super) struct Warming {
    /// Asks the thread to stop (a close, or a key change).
    pub(super) stop: Arc<AtomicBool>,
    pub(super) thread: Mutex<Option<JoinHandle<Result<usize>>>>,
}

/// How many entries the warm-up reads per hold of the writer lock.
pub(super) const WARM_CHUNK: usize = 256;

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
pub(super) fn warm_records(
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
