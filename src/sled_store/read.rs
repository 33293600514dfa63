//! The read side: the records and index trees, through the record cache
//! for readers and straight from the trees for planning writes.

use super::*;

/// A record, and its entry in the record cache when it has one.
pub(super) type Entry = (OAuthToken, Option<Arc<Cached>>);

impl SledStore {
    pub(super) fn record_uncached(&self, id: &str) -> Result<Option<OAuthToken>> {
        match self.engine().records.get(id.as_bytes()).map_err(storage)? {
            Some(bytes) => self.sealing.decode(id, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The record `id`: from the cache, else read from sled (and cached).
    pub(super) fn record_entry(&self, id: &str) -> Result<Option<Entry>> {
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
pub(super) struct Committed<'a>(pub(super) &'a SledStore);

impl StoreView for Committed<'_> {
    fn record(&self, id: &str) -> Result<Option<OAuthToken>> {
        self.0.record_uncached(id)
    }

    fn contains(&self, id: &str) -> Result<bool> {
        self.0
            .engine()
            .records
            .contains_key(id.as_bytes())
            .map_err(storage)
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
        self.engine()
            .records
            .contains_key(id.as_bytes())
            .map_err(storage)
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
