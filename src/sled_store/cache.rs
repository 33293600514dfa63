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
//! - Index hints (a 64-bit hash of a field value → the id it led to) are
//!   only guesses: every hit is checked against the record's value, like an
//!   index hit on disk, so a stale hint or a hash collision costs a miss and
//!   is never an answer. They need no invalidation. The hash is SipHash with
//!   a random key per process (`RandomState`), cheaper than the index digest.

use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use quick_cache::{sync::Cache, Equivalent, Weighter};
use zeroize::Zeroize;

use crate::token::{IndexedField, OAuthToken};

/// A cached record, wiped when the cache drops it.
pub(crate) struct Cached(OAuthToken);

impl Drop for Cached {
    fn drop(&mut self) {
        self.0.zeroize();
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
    Index(Arc<str>),
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
                let t = &record.0;
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
            Value::Index(id) => id.len() + 16,
        };
        (ENTRY + key + value) as u64
    }
}

pub(crate) struct RecordCache {
    entries: Cache<Key, Value, Bytes>,
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
            entries: Cache::with_weighter(estimated_items, bytes, Bytes),
            hint_hasher: RandomState::new(),
            epoch: AtomicU64::new(0),
            fills: Mutex::new(()),
        }
    }

    pub fn record(&self, id: &str) -> Option<OAuthToken> {
        match self.entries.get(&KeyRef::Record(id)) {
            Some(Value::Record(record)) => Some(record.0.clone()),
            _ => None,
        }
    }

    fn hint_key(&self, value: &str) -> u64 {
        self.hint_hasher.hash_one(value)
    }

    /// The id a field value last led to (a hint, to be verified).
    pub fn hint(&self, field: IndexedField, value: &str) -> Option<Arc<str>> {
        match self
            .entries
            .get(&KeyRef::Index(field as u8, self.hint_key(value)))
        {
            Some(Value::Index(id)) => Some(id),
            _ => None,
        }
    }

    pub fn remember_hint(&self, field: IndexedField, value: &str, id: &str) {
        self.entries.insert(
            Key::Index(field as u8, self.hint_key(value)),
            Value::Index(Arc::from(id)),
        );
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot(self.epoch.load(Ordering::Acquire))
    }

    /// Caches `record`, read from sled after `seen` was taken, unless a
    /// write began since.
    pub fn fill(&self, seen: Snapshot, record: &OAuthToken) {
        let Some(id) = record.id.as_deref() else {
            return;
        };
        let _fills = self.fills.lock();
        let now = self.epoch.load(Ordering::Acquire);
        if now == seen.0 && now.is_multiple_of(2) {
            self.entries.insert(
                Key::Record(Box::from(id)),
                Value::Record(Arc::new(Cached(record.clone()))),
            );
        }
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
        match ids {
            Some(ids) => {
                for id in ids {
                    self.entries.remove(&KeyRef::Record(id));
                }
            }
            None => self.entries.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, access: &str) -> OAuthToken {
        OAuthToken::new().with_id(id).with_access_token(access)
    }

    #[test]
    fn borrowed_keys_find_owned_ones() {
        let cache = RecordCache::new(1 << 20);
        cache.fill(cache.snapshot(), &record("7", "a"));
        assert_eq!(cache.record("7"), Some(record("7", "a")));
        assert_eq!(cache.record("8"), None);
        cache.remember_hint(IndexedField::AccessToken, "1000.a", "7");
        assert_eq!(
            cache.hint(IndexedField::AccessToken, "1000.a").as_deref(),
            Some("7")
        );
        assert_eq!(cache.hint(IndexedField::UserName, "1000.a"), None);
        assert_eq!(cache.hint(IndexedField::AccessToken, "1000.b"), None);
    }

    #[test]
    fn a_fill_that_raced_a_write_is_dropped() {
        let cache = RecordCache::new(1 << 20);
        // Read before the write began, filled after it ended: dropped.
        let before = cache.snapshot();
        cache.begin_write(Some(&["7"]));
        // Read while the write is in flight: dropped too.
        let during = cache.snapshot();
        cache.fill(during, &record("7", "old"));
        cache.end_write(Some(&["7"]));
        cache.fill(before, &record("7", "old"));
        assert_eq!(cache.record("7"), None);
        // Read after the write: kept.
        cache.fill(cache.snapshot(), &record("7", "new"));
        assert_eq!(cache.record("7"), Some(record("7", "new")));
        // A write removes it; a clear removes everything.
        cache.begin_write(Some(&["7"]));
        assert_eq!(cache.record("7"), None);
        cache.end_write(Some(&["7"]));
        cache.fill(cache.snapshot(), &record("8", "x"));
        cache.begin_write(None);
        cache.end_write(None);
        assert_eq!(cache.record("8"), None);
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
