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
//! - Entries are keyed by a 64-bit hash: records by their id's, index hints
//!   (a field value → the record it led to) by the value's. A key is only a
//!   guess: every hit is checked against the record's id or value, like an
//!   index hit on disk, so a hash collision or a value the record no longer
//!   holds costs a miss and is never an answer. The hash is SipHash with a
//!   random key per process (`RandomState`), cheaper than the index digest.
//! - A hint holds the record itself (weakly), so a hit is one probe, not
//!   two. A record a hint leads to must then be current: each cached record
//!   has a `live` flag, cleared whenever it leaves the record entries (a
//!   writer removing it, a clear, an eviction, an insert the cache refused),
//!   and a hint whose record is not live is a miss. Every record a hint is
//!   given was in the entries when it was given (see
//!   [`fill`](RecordCache::fill)), so a live one is the current one.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use quick_cache::{sync::Cache, DefaultHashBuilder, Lifecycle, Weighter};
use zeroize::Zeroize;

use crate::token::{IndexedField, OAuthToken};

/// A cached record, packed: its nine text fields end to end in one
/// allocation, so that a hit reads a few adjacent cache lines instead of
/// nine scattered strings (and weighs about half as much). Wiped when the
/// last reference to it goes.
pub(crate) struct Cached {
    /// Whether it is (still) the record entry for its id: see the module
    /// documentation.
    live: AtomicBool,
    /// Which of the text fields are `Some` (bit `i` for field `i`).
    present: u16,
    /// Where text field `i` ends in `text` (it starts where `i - 1` ends).
    ends: [u32; TEXT_FIELDS],
    expiry_time: Option<i64>,
    text: String,
}

/// The record's text fields, packed in the order of
/// [`OAuthToken::string_fields`] (the id first).
const TEXT_FIELDS: usize = 9;
const ID: usize = 0;

impl Cached {
    /// `None` for a record whose text does not fit 4 GiB (never cached).
    fn pack(record: &OAuthToken) -> Option<Cached> {
        let fields = record.string_fields();
        let len: usize = fields
            .iter()
            .map(|f| f.as_ref().map_or(0, String::len))
            .sum();
        u32::try_from(len).ok()?;
        let mut text = String::with_capacity(len);
        let mut present = 0;
        let mut ends = [0; TEXT_FIELDS];
        for (i, field) in fields.into_iter().enumerate() {
            if let Some(value) = field {
                text.push_str(value);
                present |= 1 << i;
            }
            ends[i] = text.len() as u32; // fits: checked above
        }
        Some(Cached {
            live: AtomicBool::new(true),
            present,
            ends,
            expiry_time: record.expiry_time,
            text,
        })
    }

    fn field(&self, i: usize) -> Option<&str> {
        if self.present & (1 << i) == 0 {
            return None;
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some(&self.text[start..self.ends[i] as usize])
    }

    pub fn id(&self) -> Option<&str> {
        self.field(ID)
    }

    /// As [`OAuthToken::indexed`].
    pub fn indexed(&self, field: IndexedField) -> Option<&str> {
        self.field(field.string_field()).filter(|v| !v.is_empty())
    }

    /// The text fields in the order of [`OAuthToken::string_fields`].
    pub fn text_fields(&self) -> [Option<&str>; TEXT_FIELDS] {
        std::array::from_fn(|i| self.field(i))
    }

    pub fn expiry_time(&self) -> Option<i64> {
        self.expiry_time
    }

    /// The record, owned (what a lookup returns).
    pub fn to_token(&self) -> OAuthToken {
        let mut token = OAuthToken {
            expiry_time: self.expiry_time,
            ..OAuthToken::default()
        };
        for (i, field) in token.string_fields_mut().into_iter().enumerate() {
            *field = self.field(i).map(str::to_owned);
        }
        token
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
        self.text.zeroize();
    }
}

/// Every key is a field (or "the id") and a 64-bit hash of the value: held
/// inline in the cache's table, compared without following a pointer (an
/// id kept as a string cost a cache miss per lookup, issue 14). A hash is
/// only a guess: what an entry holds is checked against the id or value
/// asked for (see [`RecordCache::record`] and the hints).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Record(u64),
    Index(u8, u64),
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
        let key = std::mem::size_of_val(key);
        let value = match value {
            Value::Record(record) => std::mem::size_of::<Cached>() + 16 + record.text.capacity(),
            Value::Index(_) => 16,
        };
        (ENTRY + key + value) as u64
    }
}

pub(crate) struct RecordCache {
    entries: Cache<Key, Value, Bytes, DefaultHashBuilder, Retire>,
    /// Hashes ids and field values into keys: SipHash with a random key
    /// per process.
    hasher: RandomState,
    /// Tests: every id and value hashes alike.
    #[cfg(test)]
    pub(super) collide: bool,
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
            hasher: RandomState::new(),
            #[cfg(test)]
            collide: false,
            epoch: AtomicU64::new(0),
            fills: Mutex::new(()),
        }
    }

    /// The cached record `id`, if any.
    pub fn record(&self, id: &str) -> Option<Arc<Cached>> {
        match self.entries.get(&self.record_key(id)) {
            // Another id with the same hash is a miss, never an answer.
            Some(Value::Record(record)) if record.id() == Some(id) => Some(record),
            _ => None,
        }
    }

    fn record_key(&self, id: &str) -> Key {
        Key::Record(self.hash(id))
    }

    #[cfg(not(test))]
    fn hash(&self, value: &str) -> u64 {
        self.hasher.hash_one(value)
    }

    /// Tests can make every value collide, to show a hash is never trusted.
    #[cfg(test)]
    fn hash(&self, value: &str) -> u64 {
        if self.collide {
            return 7;
        }
        self.hasher.hash_one(value)
    }

    /// The current record a field value last led to, if it is still
    /// cached (a hint: whether it holds the value is the caller's check).
    pub fn hint(&self, field: IndexedField, value: &str) -> Option<Arc<Cached>> {
        match self.entries.get(&Key::Index(field as u8, self.hash(value))) {
            Some(Value::Index(record)) => record.upgrade().filter(|r| r.is_live()),
            _ => None,
        }
    }

    /// Remembers that `value` led to `record`, which [`fill`](Self::fill)
    /// or [`record`](Self::record) returned.
    pub fn remember_hint(&self, field: IndexedField, value: &str, record: &Arc<Cached>) {
        self.entries.insert(
            Key::Index(field as u8, self.hash(value)),
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
        // Never replace an entry: both hold the current record (no write
        // began since either was read), and the one replaced would be
        // retired (quick_cache evicts it), turning the hints that lead to
        // it into misses for nothing. An entry of another id with the same
        // hash keeps its place too.
        let key = self.record_key(id);
        if let Some(Value::Record(cached)) = self.entries.get(&key) {
            return (cached.id() == Some(id)).then_some(cached);
        }
        let cached = Arc::new(Cached::pack(record)?);
        self.entries.insert(key, Value::Record(Arc::clone(&cached)));
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
                // Whatever the id's key holds leaves: the id's record, or
                // (a hash collision) another one, which is then read again.
                for id in ids {
                    retire(self.entries.remove(&self.record_key(id)));
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
        cache.record(id).map(|c| c.to_token())
    }

    fn hinted(cache: &RecordCache, field: IndexedField, value: &str) -> Option<OAuthToken> {
        cache.hint(field, value).map(|c| c.to_token())
    }

    /// Packing keeps every field as it was: its value, `None` apart from
    /// `Some("")`, the expiry; `indexed` reads as `OAuthToken::indexed`.
    #[test]
    fn packing_keeps_every_field() {
        let full = OAuthToken::new()
            .with_id("42")
            .with_user_name("ana@example.com")
            .with_client_id("1000.client")
            .with_client_secret("secret")
            .with_refresh_token("1000.refresh")
            .with_access_token("1000.access")
            .with_grant_token("1000.grant")
            .with_expiry_time(-7)
            .with_redirect_url("https://app.example.com/cb")
            .with_api_domain("https://www.zohoapis.eu");
        let sparse = OAuthToken::new()
            .with_id("43")
            .with_user_name("")
            .with_refresh_token("1000.r")
            .with_api_domain("");
        for record in [full, sparse, OAuthToken::new().with_id("44")] {
            let packed = Cached::pack(&record).unwrap();
            assert_eq!(packed.to_token(), record);
            assert_eq!(packed.id(), record.id.as_deref());
            for field in IndexedField::ALL {
                assert_eq!(packed.indexed(field), record.indexed(field), "{field:?}");
            }
        }
    }

    /// Ids and values whose hashes collide never answer for each other: a
    /// collision is a miss.
    #[test]
    fn colliding_keys_are_misses_never_answers() {
        let mut cache = RecordCache::new(1 << 20);
        cache.collide = true;
        let seven = cache.fill(cache.snapshot(), &record("7", "a")).unwrap();
        assert_eq!(cached(&cache, "7"), Some(record("7", "a")));
        // "8" hashes as "7" does: not cached over it, not answered by it.
        assert!(cache.fill(cache.snapshot(), &record("8", "b")).is_none());
        assert_eq!(cached(&cache, "8"), None);
        assert_eq!(cached(&cache, "7"), Some(record("7", "a")));
        // A hint whose value collides with another's is checked by the
        // caller against the record (`record_with`); the cache only keys.
        cache.remember_hint(IndexedField::AccessToken, "a", &seven);
        let hint = cache.hint(IndexedField::AccessToken, "b").unwrap();
        assert_ne!(hint.indexed(IndexedField::AccessToken), Some("b"));
        // A write to "8" removes what its key holds ("7"): retired, so the
        // hint leading to it is a miss, and "7" is read again later.
        cache.begin_write(Some(&["8"]));
        cache.end_write(Some(&["8"]));
        assert_eq!(cached(&cache, "7"), None);
        assert!(cache.hint(IndexedField::AccessToken, "a").is_none());
    }

    #[test]
    fn records_and_hints_are_found_by_their_keys() {
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
        // A hint may be evicted before its record; a record evicted before
        // its hint must make the hint a miss.
        let mut hints_outliving_records = 0;
        for (id, _) in &held {
            let hint_kept = small
                .entries
                .get(&Key::Index(field as u8, small.hash(id)))
                .is_some();
            let record_kept = cached(&small, id).is_some();
            hints_outliving_records += usize::from(hint_kept && !record_kept);
            assert!(
                hinted(&small, field, id).is_none() || record_kept,
                "record {id}"
            );
        }
        assert!(hints_outliving_records > 0, "no hint outlived its record");
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
