//! The record cache: decoded records by id, and index digests by the id they
//! led to, in one bounded cache in front of sled (`Options::record_cache`).
//!
//! Coherence with writers, without readers taking the writer lock:
//!
//! - `epoch` is a sequence counter, odd while a write is under way. A writer
//!   (holding the writer lock) calls [`begin_write`](RecordCache::begin_write)
//!   before its sled commit and [`end_write`](RecordCache::end_write) after
//!   it; both remove the records it touches.
//! - A reader that misses takes [`snapshot`](RecordCache::snapshot) before it
//!   reads sled, and [`fill`](RecordCache::fill) inserts what it read only if
//!   the epoch is unchanged and even. Fills and the writer's epoch changes
//!   take one small lock, so a record read before a commit can never be
//!   inserted after it, and nothing is inserted while a write is in flight:
//!   once `end_write` returns, no reader can see the old record from the
//!   cache, and no reader sees it from the cache during the write either
//!   (it was removed before the commit).
//! - Index hints (a 64-bit hash of a field value → the record it led to)
//!   are only guesses: every hit is checked against the record's value, like
//!   an index hit on disk, so a hash collision or a value the record no
//!   longer holds costs a miss and is never an answer. The hash is SipHash
//!   with a random key per process (`RandomState`), cheaper than the index
//!   digest.
//! - A hint holds the record itself (weakly), so a hit is one probe, not
//!   two. A record a hint leads to must then be current: each cached record
//!   has a `live` flag, cleared whenever it leaves the record entries (a
//!   writer removing it, a clear, an eviction, an insert the cache refused),
//!   and a hint whose record is not live is a miss. Every record a hint is
//!   given was in the entries when it was given (see
//!   [`fill`](RecordCache::fill)), so a live one is the current one.

use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use quick_cache::{sync::Cache, DefaultHashBuilder, Equivalent, Lifecycle, Weighter};
use zeroize::Zeroize;

use crate::token::{IndexedField, OAuthToken};

/// A cached record, wiped when the last reference to it goes.
pub(crate) struct Cached {
    record: OAuthToken,
    /// Whether it is (still) the record entry for its id: see the module
    /// documentation.
    live: AtomicBool,
}

impl Cached {
    pub fn record(&self) -> &OAuthToken {
        &self.record
    }

    fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    fn retire(&self) {
        self.live.store(false, Ordering::Release);
    }
}

impl Drop for Cached {
    fn drop(&mut self) {
        self.record.zeroize();
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Record(Box<str>),
    Index(u8, u64),
}

/// A borrowed [`Key`]: looks entries up without allocating. Hashes exactly
/// as the `Key` it stands for (same variants, same field hashes).
#[derive(PartialEq, Eq)]
enum KeyRef<'a> {
    Record(&'a str),
    Index(u8, u64),
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            KeyRef::Record(id) => {
                std::mem::discriminant(&Key::Record(Box::from(""))).hash(state);
                id.hash(state);
            }
            KeyRef::Index(field, digest) => {
                std::mem::discriminant(&Key::Index(0, 0)).hash(state);
                field.hash(state);
                digest.hash(state);
            }
        }
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        match (self, key) {
            (KeyRef::Record(a), Key::Record(b)) => *a == &**b,
            (KeyRef::Index(f, d), Key::Index(g, e)) => f == g && d == e,
            _ => false,
        }
    }
}

#[derive(Clone)]
enum Value {
    Record(Arc<Cached>),
    Index(Weak<Cached>),
}

/// Retires records the cache evicts (or refuses to admit).
#[derive(Clone)]
struct Retire;

impl Lifecycle<Key, Value> for Retire {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _: &mut Self::RequestState, _: Key, value: Value) {
        if let Value::Record(record) = value {
            record.retire();
        }
    }
}

/// Approximate bytes an entry holds: what the budget counts.
#[derive(Clone)]
struct Bytes;

impl Weighter<Key, Value> for Bytes {
    fn weight(&self, key: &Key, value: &Value) -> u64 {
        const ENTRY: usize = 64; // the cache's own bookkeeping, roughly
        let key = match key {
            Key::Record(id) => id.len(),
            Key::Index(..) => 9,
        };
        let value = match value {
            Value::Record(record) => {
                let t = &record.record;
                std::mem::size_of::<OAuthToken>()
                    + [
                        &t.id,
                        &t.user_name,
                        &t.client_id,
                        &t.client_secret,
                        &t.refresh_token,
                        &t.access_token,
                        &t.grant_token,
                        &t.redirect_url,
                        &t.api_domain,
                    ]
                    .iter()
                    .map(|s| s.as_ref().map_or(0, String::capacity))
                    .sum::<usize>()
            }
            Value::Index(_) => 16,
        };
        (ENTRY + key + value) as u64
    }
}

pub(crate) struct RecordCache {
    entries: Cache<Key, Value, Bytes, DefaultHashBuilder, Retire>,
    hint_hasher: RandomState,
    epoch: AtomicU64,
    fills: Mutex<()>,
}

/// What a reader saw of the epoch before reading sled.
#[derive(Clone, Copy)]
pub(crate) struct Snapshot(u64);

impl RecordCache {
    /// A cache holding about `bytes` of records and index hints.
    pub fn new(bytes: u64) -> RecordCache {
        // quick_cache grows its tables as entries come (the estimate only
        // bounds its record of recently evicted keys), so a large bound costs
        // nothing until it is used.
        let estimated_items = usize::try_from(bytes / 700).unwrap_or(usize::MAX).max(16);
        RecordCache {
            entries: Cache::with(
                estimated_items,
                bytes,
                Bytes,
                DefaultHashBuilder::default(),
                Retire,
            ),
            hint_hasher: RandomState::new(),
            epoch: AtomicU64::new(0),
            fills: Mutex::new(()),
        }
    }

    pub fn record(&self, id: &str) -> Option<Arc<Cached>> {
        match self.entries.get(&KeyRef::Record(id)) {
            Some(Value::Record(record)) => Some(record),
            _ => None,
        }
    }

    fn hint_key(&self, value: &str) -> u64 {
        self.hint_hasher.hash_one(value)
    }

    /// The current record a field value last led to, if it is still
    /// cached (a hint: whether it holds the value is the caller's check).
    pub fn hint(&self, field: IndexedField, value: &str) -> Option<Arc<Cached>> {
        match self
            .entries
            .get(&KeyRef::Index(field as u8, self.hint_key(value)))
        {
            Some(Value::Index(record)) => record.upgrade().filter(|r| r.is_live()),
            _ => None,
        }
    }

    /// Remembers that `value` led to `record`, which [`fill`](Self::fill)
    /// or [`record`](Self::record) returned.
    pub fn remember_hint(&self, field: IndexedField, value: &str, record: &Arc<Cached>) {
        self.entries.insert(
            Key::Index(field as u8, self.hint_key(value)),
            Value::Index(Arc::downgrade(record)),
        );
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot(self.epoch.load(Ordering::Acquire))
    }

    /// Caches `record`, read from sled after `seen` was taken, unless a
    /// write began since; returns the cached entry for its id (which hints
    /// may then lead to), or `None` when it was not cached.
    pub fn fill(&self, seen: Snapshot, record: &OAuthToken) -> Option<Arc<Cached>> {
        let id = record.id.as_deref()?;
        let _fills = self.fills.lock();
        let now = self.epoch.load(Ordering::Acquire);
        if now != seen.0 || !now.is_multiple_of(2) {
            return None;
        }
        // Never replace an entry: a replaced one would stay live for the
        // hints that lead to it, and no writer could retire it. (Both hold
        // the current record: no write began since either was read.)
        if let Some(cached) = self.record(id) {
            return Some(cached);
        }
        let cached = Arc::new(Cached {
            record: record.clone(),
            live: AtomicBool::new(true),
        });
        self.entries.insert(
            Key::Record(Box::from(id)),
            Value::Record(Arc::clone(&cached)),
        );
        // A refused insert was retired (`Retire`); so was an entry evicted
        // since.
        cached.is_live().then_some(cached)
    }

    /// How many bytes the cache may hold.
    pub fn capacity(&self) -> u64 {
        self.entries.capacity()
    }

    /// Changes the bound (evicting down to it).
    pub fn set_capacity(&self, bytes: u64) {
        self.entries.set_capacity(bytes);
    }

    /// How many bytes it holds now.
    pub fn weight(&self) -> u64 {
        self.entries.weight()
    }

    /// Before a commit that changes the records `ids` (`None`: all).
    pub fn begin_write(&self, ids: Option<&[&str]>) {
        let _fills = self.fills.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.forget(ids);
    }

    /// After that commit (whether it succeeded or not).
    pub fn end_write(&self, ids: Option<&[&str]>) {
        let _fills = self.fills.lock();
        self.forget(ids);
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    fn forget(&self, ids: Option<&[&str]>) {
        let retire = |entry: Option<(Key, Value)>| {
            if let Some((_, Value::Record(record))) = entry {
                record.retire();
            }
        };
        match ids {
            Some(ids) => {
                for id in ids {
                    retire(self.entries.remove(&KeyRef::Record(id)));
                }
            }
            None => self.entries.drain().for_each(|entry| retire(Some(entry))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, access: &str) -> OAuthToken {
        OAuthToken::new().with_id(id).with_access_token(access)
    }

    fn cached(cache: &RecordCache, id: &str) -> Option<OAuthToken> {
        cache.record(id).map(|c| c.record().clone())
    }

    fn hinted(cache: &RecordCache, field: IndexedField, value: &str) -> Option<OAuthToken> {
        cache.hint(field, value).map(|c| c.record().clone())
    }

    #[test]
    fn borrowed_keys_find_owned_ones() {
        let cache = RecordCache::new(1 << 20);
        let entry = cache.fill(cache.snapshot(), &record("7", "a")).unwrap();
        assert_eq!(cached(&cache, "7"), Some(record("7", "a")));
        assert_eq!(cached(&cache, "8"), None);
        cache.remember_hint(IndexedField::AccessToken, "1000.a", &entry);
        assert_eq!(
            hinted(&cache, IndexedField::AccessToken, "1000.a"),
            Some(record("7", "a"))
        );
        assert_eq!(hinted(&cache, IndexedField::UserName, "1000.a"), None);
        assert_eq!(hinted(&cache, IndexedField::AccessToken, "1000.b"), None);
    }

    #[test]
    fn a_fill_that_raced_a_write_is_dropped() {
        let cache = RecordCache::new(1 << 20);
        // Read before the write began, filled after it ended: dropped.
        let before = cache.snapshot();
        cache.begin_write(Some(&["7"]));
        // Read while the write is in flight: dropped too.
        let during = cache.snapshot();
        assert!(cache.fill(during, &record("7", "old")).is_none());
        cache.end_write(Some(&["7"]));
        assert!(cache.fill(before, &record("7", "old")).is_none());
        assert_eq!(cached(&cache, "7"), None);
        // Read after the write: kept.
        cache.fill(cache.snapshot(), &record("7", "new"));
        assert_eq!(cached(&cache, "7"), Some(record("7", "new")));
        // A write removes it; a clear removes everything.
        cache.begin_write(Some(&["7"]));
        assert_eq!(cached(&cache, "7"), None);
        cache.end_write(Some(&["7"]));
        cache.fill(cache.snapshot(), &record("8", "x"));
        cache.begin_write(None);
        cache.end_write(None);
        assert_eq!(cached(&cache, "8"), None);
    }

    /// A hint holds its record: it must never lead to one a write replaced,
    /// a clear dropped or the cache evicted, even while something else (a
    /// reader) still holds that record.
    #[test]
    fn a_hint_never_leads_to_a_record_that_left_the_cache() {
        let cache = RecordCache::new(1 << 20);
        let field = IndexedField::AccessToken;
        let old = cache.fill(cache.snapshot(), &record("7", "a")).unwrap();
        cache.remember_hint(field, "a", &old);
        // A second fill of the same id returns the entry, never replaces it.
        let again = cache.fill(cache.snapshot(), &record("7", "a")).unwrap();
        assert!(Arc::ptr_eq(&old, &again));
        cache.begin_write(Some(&["7"]));
        cache.end_write(Some(&["7"]));
        assert_eq!(hinted(&cache, field, "a"), None, "after a write");

        let new = cache.fill(cache.snapshot(), &record("7", "a")).unwrap();
        cache.remember_hint(field, "a", &new);
        assert_eq!(hinted(&cache, field, "a"), Some(record("7", "a")));
        cache.begin_write(None);
        cache.end_write(None);
        cache.remember_hint(field, "a", &new); // a reader racing the clear
        assert_eq!(hinted(&cache, field, "a"), None, "after a clear");

        // Evicted: a tiny cache, and records held outside it all along.
        let small = RecordCache::new(16 << 10);
        let held: Vec<_> = (0..200)
            .filter_map(|n| {
                let id = n.to_string();
                let entry = small.fill(small.snapshot(), &record(&id, &id))?;
                small.remember_hint(field, &id, &entry);
                Some((id, entry))
            })
            .collect();
        assert!(held.len() > 100);
        for (id, _) in &held {
            assert_eq!(
                hinted(&small, field, id).is_some(),
                cached(&small, id).is_some(),
                "record {id}"
            );
        }
        // Heavier than the whole cache: an entry is returned only if the
        // cache holds it.
        let huge = record("9", &"x".repeat(64 << 10));
        let entry = small.fill(small.snapshot(), &huge);
        assert_eq!(entry.is_some(), cached(&small, "9").is_some());
    }

    #[test]
    fn the_budget_bounds_what_is_kept() {
        let cache = RecordCache::new(64 << 10);
        for n in 0..10_000 {
            cache.fill(cache.snapshot(), &record(&n.to_string(), &"x".repeat(100)));
        }
        let kept = (0..10_000)
            .filter(|n| cache.record(&n.to_string()).is_some())
            .count();
        assert!(kept > 0 && kept < 1_000, "{kept} records kept in 64 KiB");
    }
}
