//! The write side: one sled transaction over every tree applies a write
//! set (records, index entries, the id counter, the seal count).

use super::*;

impl SledStore {
    /// Runs `write` in one transaction over every tree; `touched` names the
    /// records it may change (`None`: any), which leave the record cache.
    pub(super) fn transact<A>(
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

    pub(super) fn transact_uncached<A>(
        &self,
        write: impl Fn(&Trees<'_>) -> std::result::Result<A, ConflictableTransactionError<Error>>,
    ) -> Result<A> {
        let [user, access, refresh, grant] = &self.engine().indexes;
        (
            &self.engine().records,
            user,
            access,
            refresh,
            grant,
            &self.engine().meta,
        )
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
    pub(super) fn index_entries_naming(&self, id: &str) -> Result<Vec<(IndexedField, Vec<u8>)>> {
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

/// What the writer lock guards: the counters every write reads and moves.
#[derive(Debug, Clone, Copy)]
pub(super) struct Counters {
    /// The last id the id counter issued.
    pub(super) last_issued: u64,
    /// How many records the current key sealed (0 in a plain store).
    pub(super) sealed: u64,
}

/// The transactional view of every tree.
pub(super) struct Trees<'a> {
    pub(super) records: &'a TransactionalTree,
    pub(super) indexes: [&'a TransactionalTree; 4],
    pub(super) meta: &'a TransactionalTree,
    pub(super) sealing: &'a Sealing,
    pub(super) filter: Option<&'a IndexFilter>,
}

pub(super) type TxResult<T = ()> = std::result::Result<T, ConflictableTransactionError<Error>>;

impl Trees<'_> {
    pub(super) fn link(&self, field: IndexedField, value: &str, id: &str) -> TxResult {
        self.link_digest(field, &self.sealing.digest(value), id)
    }

    pub(super) fn unlink(&self, field: IndexedField, value: &str, id: &str) -> TxResult {
        self.unlink_digest(field, &self.sealing.digest(value), id)
    }

    pub(super) fn link_digest(&self, field: IndexedField, key: &[u8], id: &str) -> TxResult {
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

    pub(super) fn unlink_digest(&self, field: IndexedField, key: &[u8], id: &str) -> TxResult {
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

impl SledStore {
    /// Applies `writes`, planned under the writer lock (held as `counters`),
    /// in one transaction over every tree: records, index entries, the id
    /// counter and the seal count change together or not at all.
    pub(super) fn apply(&self, counters: &mut Counters, writes: &WriteSet) -> Result<()> {
        let encoded = self.sealing.encode_writes(
            writes.changes.values().map(|c| c.next.as_ref()),
            counters.sealed,
            &self.path,
        )?;
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
