//! Turning encryption on, changing its key, or turning it off: every record
//! and index entry rewritten into a new generation of the database, which
//! becomes live atomically (see `layout`).

use std::collections::BTreeMap;
use std::sync::Arc;

use sled::Batch as SledBatch;

use super::{
    layout, secure_permissions, storage, Engine, SledStore, FORMAT_VERSION_KEY, KEY_CHECK_KEY,
    LAST_ISSUED_KEY, SEALED_KEY,
};
use crate::codec::{self, Sealing, DIGEST_LEN};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::token::IndexedField;

impl SledStore {
    /// Whether the store is encrypted (opened with [`Options::encryption`](crate::Options::encryption)).
    pub fn is_encrypted(&self) -> bool {
        self.sealing.key_check().is_some()
    }

    /// The on-disk format version of this store: 1 plain, 2 encrypted.
    pub fn format_version(&self) -> u32 {
        u32::from(self.sealing.format_version())
    }

    /// Encrypts the store with `key`, re-encrypts it with a new key, or (with
    /// `None`) decrypts it. Every record and index entry is written into a
    /// new database inside the store directory, which then replaces the old
    /// one atomically; the old one's files are deleted, so no page written
    /// under the old key (or in plaintext) stays in the store. A crash at any
    /// point leaves the store as it was (openable with the old key) or
    /// finished (openable with the new one), never in between.
    ///
    /// ```
    /// use tokenstore::{Key, OAuthToken, Options, SledStore, TokenStore};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("tokens");
    /// let key = Key::generate()?;
    /// {
    ///     let mut store = SledStore::open(&path)?; // a plain store...
    ///     let mut token = OAuthToken::new().with_user_name("ana").with_refresh_token("1000.r");
    ///     store.save_token(&mut token)?;
    ///     store.set_encryption(Some(key.clone()))?; // ...encrypted in place
    /// }
    /// let store = SledStore::open_with(&path, Options::default().encryption(key))?;
    /// assert!(store.is_encrypted());
    /// assert_eq!(store.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Corruption`] if a record cannot be decoded (remove it first:
    /// [`check`](Self::check) lists it, `delete_token` removes it); storage
    /// errors, in which case nothing changed.
    pub fn set_encryption(&mut self, key: Option<Key>) -> Result<()> {
        self.set_encryption_with_progress(key, |_, _| {})
    }

    /// [`set_encryption`](Self::set_encryption), calling `progress(done,
    /// total)` after each record is re-encoded.
    ///
    /// # Errors
    /// As for [`set_encryption`](Self::set_encryption).
    pub fn set_encryption_with_progress(
        &mut self,
        key: Option<Key>,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<()> {
        // Its thread reads the old generation with the old key.
        self.stop_warming();
        let new = Sealing::new(key.as_ref());
        let last_issued = self.writer.lock().last_issued;
        let generation = self.generation + 1;
        let data_dir = layout::data_dir(&self.path, generation);
        // A leftover of an interrupted change is never live: start afresh.
        layout::remove(&data_dir)?;
        let mut options = self.options.clone();
        options.encryption = key;
        let engine = Engine::open(&options, &data_dir, &self.path)?;

        // Copy every record, re-encoded, with index entries for the new
        // digests. Nothing points at the new database until `switch_to`.
        let total = self.engine().records.len();
        let mut records = SledBatch::default();
        let mut entries: BTreeMap<(usize, [u8; DIGEST_LEN]), Vec<String>> = BTreeMap::new();
        for (done, entry) in self.engine().records.iter().enumerate() {
            let (raw_id, bytes) = entry.map_err(storage)?;
            let id = std::str::from_utf8(&raw_id)
                .map_err(|_| Error::corruption(None, "a record key is not UTF-8"))?;
            let record = self.sealing.decode(id, &bytes)?;
            records.insert(raw_id.clone(), new.encode(&record)?);
            for field in IndexedField::ALL {
                if let Some(value) = record.indexed(field) {
                    entries
                        .entry((field as usize, new.digest(value)))
                        .or_default()
                        .push(id.to_owned());
                }
            }
            progress(done + 1, total);
        }
        engine.records.apply_batch(records).map_err(storage)?;
        let mut indexes: [SledBatch; 4] = Default::default();
        for ((field, digest), ids) in &entries {
            indexes[*field].insert(digest.as_slice(), codec::encode_ids(ids));
        }
        for (tree, batch) in engine.indexes.iter().zip(indexes) {
            tree.apply_batch(batch).map_err(storage)?;
        }
        let mut meta = SledBatch::default();
        meta.insert(
            FORMAT_VERSION_KEY,
            &u32::from(new.format_version()).to_be_bytes(),
        );
        meta.insert(LAST_ISSUED_KEY, &last_issued.to_be_bytes());
        // The new key's seal count starts with the records it sealed here.
        let sealed = if new.counts_seals() { total as u64 } else { 0 };
        if let Some(check) = new.key_check() {
            meta.insert(KEY_CHECK_KEY, check.as_slice());
            meta.insert(SEALED_KEY, &sealed.to_be_bytes());
        }
        engine.meta.apply_batch(meta).map_err(storage)?;
        engine.db.flush().map_err(storage)?;

        // The commit point.
        layout::switch_to(&self.path, generation)?;

        let old = self.engine.replace(engine);
        self.sealing = Arc::new(new);
        self.writer.lock().sealed = sealed;
        // Every digest changed: the filter would rule out keys on disk.
        self.filter = Arc::default();
        if let Some(cache) = &self.cache {
            // Same records, but they were read under the old key: start afresh,
            // within the new key's default bound if it is the default.
            cache.begin_write(None);
            cache.end_write(None);
            cache.set_capacity(options.record_cache_bytes().max(1));
        }
        self.options = options;
        self.generation = generation;
        drop(old);
        // The old generation's files go now (or at the next open if this
        // fails): no page of the old key, or of plaintext, stays behind.
        let _ = layout::remove_stale(&self.path, generation);
        secure_permissions(&self.path)
    }
}
