//! The read side: the records and index trees, through the record cache
//! for readers and straight from the trees for planning writes.

use super::*;
use crate::plan::{self, Lookups};

/// A record a read found: the record cache's entry, or (no cache, or one
/// that refused it) the record as decoded from sled.
#[allow(clippy::large_enum_variant)] // one per lookup, short-lived
pub(crate) enum Found {
    Cached(Arc<Cached>),
    Read(OAuthToken),
}

impl Found {
    /// The record, owned (what a lookup returns).
    pub(crate) fn into_token(self) -> OAuthToken {
        match self {
            Found::Cached(cached) => cached.to_token(),
            Found::Read(record) => record,
        }
    }

    /// As [`OAuthToken::indexed`].
    fn indexed(&self, field: IndexedField) -> Option<&str> {
        match self {
            Found::Cached(cached) => cached.indexed(field),
            Found::Read(record) => record.indexed(field),
        }
    }

    /// The text fields in the order of [`OAuthToken::string_fields`], and
    /// the expiry time: the record, borrowed.
    pub(crate) fn fields(&self) -> ([Option<&str>; 9], Option<i64>) {
        match self {
            Found::Cached(cached) => (cached.text_fields(), cached.expiry_time()),
            Found::Read(record) => (
                record.string_fields().map(|f| f.as_deref()),
                record.expiry_time,
            ),
        }
    }
}

impl SledStore {
    pub(super) fn record_uncached(&self, id: &str) -> Result<Option<OAuthToken>> {
        match self.engine().records.get(id.as_bytes()).map_err(storage)? {
            Some(bytes) => self.sealing.decode(id, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// `find_token`, the record as the cache holds it: for the server,
    /// which encodes it in place instead of copying it out first.
    pub(crate) fn find_found(&self, query: &OAuthToken) -> Result<Option<Found>> {
        plan::find(&CachedReads(self), query)
    }

    /// `find_token_by_id`, as [`find_found`](Self::find_found).
    pub(crate) fn find_found_by_id(&self, id: &str) -> Result<Option<Found>> {
        plan::find_by_id(&CachedReads(self), id)
    }
}

/// Reads through the record cache, its hints and the index filter, handing
/// out the cache's entries as they are.
struct CachedReads<'a>(&'a SledStore);

impl Lookups for CachedReads<'_> {
    type Record = Found;

    /// The record `id`: from the cache, else read from sled (and cached).
    fn by_id(&self, id: &str) -> Result<Option<Found>> {
        let store = self.0;
        let Some(cache) = &store.cache else {
            return Ok(store.record_uncached(id)?.map(Found::Read));
        };
        if let Some(cached) = cache.record(id) {
            return Ok(Some(Found::Cached(cached)));
        }
        let seen = cache.snapshot();
        Ok(store
            .record_uncached(id)?
            .map(|record| match cache.fill(seen, &record) {
                Some(cached) => Found::Cached(cached),
                None => Found::Read(record),
            }))
    }

    fn by_field(&self, field: IndexedField, value: &str) -> Result<Option<Found>> {
        let store = self.0;
        // A hint is only a guess: the (current) record must hold the value.
        if let Some(cached) = store.cache.as_ref().and_then(|c| c.hint(field, value)) {
            if cached.indexed(field) == Some(value) {
                return Ok(Some(Found::Cached(cached)));
            }
        }
        let digest = store.sealing.digest(value);
        if let Some(filter) = store.filter.get() {
            if !filter.may_hold(field, &digest) {
                return Ok(None);
            }
        }
        let Some(entry) = store.index(field).get(digest).map_err(storage)? else {
            return Ok(None);
        };
        for id in codec::decode_ids(&entry)? {
            // The record is compared with the value: a digest collision, or a
            // reader racing a writer, never yields a record without it.
            if let Some(found) = self.by_id(&id)? {
                if found.indexed(field) == Some(value) {
                    if let (Some(cache), Found::Cached(cached)) = (&store.cache, &found) {
                        cache.remember_hint(field, value, cached);
                    }
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
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
        Ok(CachedReads(self).by_id(id)?.map(Found::into_token))
    }

    fn contains(&self, id: &str) -> Result<bool> {
        self.engine()
            .records
            .contains_key(id.as_bytes())
            .map_err(storage)
    }

    fn record_with(&self, field: IndexedField, value: &str) -> Result<Option<OAuthToken>> {
        Ok(CachedReads(self)
            .by_field(field, value)?
            .map(Found::into_token))
    }
}
