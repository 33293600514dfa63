//! The index filter: a Bloom filter of every index key (a field and the
//! digest of a value) the store holds, so that a lookup for a value no
//! record holds is answered from memory instead of a sled get (issue 14).
//!
//! It may say "maybe" for a key the store does not hold (a false positive,
//! or a key since removed: removals never clear bits), which only costs the
//! sled get it saves otherwise. It must never say "no" for a key the store
//! holds, so:
//!
//! - every write that links a key inserts it first, inside its transaction
//!   (`Trees::link_digest`), before the commit; an aborted or retried
//!   transaction only leaves a false positive behind;
//! - the keys already on disk are inserted by the background warm-up's walk
//!   of the index trees, and the filter answers "no" only once that walk has
//!   covered all four trees ([`complete`](IndexFilter::complete)). A key
//!   linked while the walk runs is inserted by its writer, whether or not
//!   the walk's iterator sees it (the filter is set under the writer lock,
//!   before the walk starts: a write either commits before it, and the walk
//!   sees its keys, or after it, and inserts them);
//! - a key change (`set_encryption`) changes every digest: the store drops
//!   its filter then.
//!
//! Until it is complete (and in stores that do not warm at open) every
//! lookup goes to sled, as without it.

use std::sync::atomic::{AtomicBool, Ordering};

use fastbloom::AtomicBloomFilter;

use crate::token::IndexedField;

/// False positives at the expected number of keys.
const FALSE_POSITIVES: f64 = 0.01;
/// Keys it is sized for at least.
const MIN_KEYS: usize = 1 << 16;

pub(crate) struct IndexFilter {
    keys: AtomicBloomFilter,
    complete: AtomicBool,
}

impl IndexFilter {
    /// A filter for about `keys` index keys (it still works past them, with
    /// more false positives); empty and not complete.
    pub fn new(keys: usize) -> IndexFilter {
        IndexFilter {
            keys: AtomicBloomFilter::with_false_pos(FALSE_POSITIVES)
                .expected_items(keys.max(MIN_KEYS)),
            complete: AtomicBool::new(false),
        }
    }

    /// Records that the store holds (or is about to hold) `digest` in
    /// `field`'s index.
    pub fn insert(&self, field: IndexedField, digest: &[u8]) {
        self.keys.insert_hash(key(field, digest));
    }

    /// Whether `field`'s index may hold `digest`: `false` only when it
    /// certainly does not.
    pub fn may_hold(&self, field: IndexedField, digest: &[u8]) -> bool {
        !self.complete.load(Ordering::Acquire) || self.keys.contains_hash(key(field, digest))
    }

    #[cfg(test)]
    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    /// Every key on disk has been inserted: "no" answers start.
    pub fn complete(&self) {
        self.complete.store(true, Ordering::Release);
    }
}

/// The filter's hash of an index key: the digest is already uniform (BLAKE3,
/// keyed in an encrypted store); the field is mixed in so that one value in
/// two fields makes two keys.
fn key(field: IndexedField, digest: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    let n = digest.len().min(8);
    first[..n].copy_from_slice(&digest[..n]);
    u64::from_le_bytes(first) ^ (field as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u32) -> [u8; 32] {
        *blake3::hash(&n.to_le_bytes()).as_bytes()
    }

    #[test]
    fn says_no_only_once_complete_and_never_for_an_inserted_key() {
        let filter = IndexFilter::new(10_000);
        for n in 0..10_000 {
            filter.insert(IndexedField::UserName, &digest(n));
        }
        // Not complete: everything may be held.
        assert!(filter.may_hold(IndexedField::UserName, &digest(20_000)));
        filter.complete();
        for n in 0..10_000 {
            assert!(filter.may_hold(IndexedField::UserName, &digest(n)), "{n}");
        }
        let absent = (10_000..20_000)
            .filter(|&n| !filter.may_hold(IndexedField::UserName, &digest(n)))
            .count();
        assert!(
            absent > 9_500,
            "only {absent} of 10,000 absent keys ruled out"
        );
        // The same digest in another field is another key.
        let other_field = (0..10_000)
            .filter(|&n| !filter.may_hold(IndexedField::AccessToken, &digest(n)))
            .count();
        assert!(other_field > 9_500, "{other_field}");
    }
}
