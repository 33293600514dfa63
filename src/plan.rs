//! What an operation means, decided once for every backend: which record a
//! query designates (docs/SPEC.md §2, through [`crate::rules`]) and what a save or a
//! delete writes, as a [`WriteSet`] that the backend's engine applies
//! atomically (see [`crate::engine`]).
//!
//! A backend only provides storage: it answers "which record has this id"
//! and "which record has this unique value" through [`StoreView`]. Writes
//! are planned over the committed state as the storage holds it, under the
//! engine's write exclusion: never over a read cache, so "one record per
//! user name" never rests on a cache being right.

use std::collections::{BTreeMap, HashMap};

use crate::codec;
use crate::error::{Error, Result};
use crate::rules::{lookup_key, LookupKey};
use crate::token::{present, IndexedField, OAuthToken};

/// What a backend lets the shared logic read. Implementations must return
/// only records that really hold the asked value: an index hit is verified
/// against the record before it is returned.
pub trait StoreView {
    /// The record stored under `id`.
    fn record(&self, id: &str) -> Result<Option<OAuthToken>>;
    /// Whether a record is stored under `id` (without decoding it).
    fn contains(&self, id: &str) -> Result<bool>;
    /// The record whose unique `field` equals `value`.
    fn record_with(&self, field: IndexedField, value: &str) -> Result<Option<OAuthToken>>;
}

/// The two reads the lookup rules make, in whatever form a view hands its
/// records out: every [`StoreView`] gives owned records; the embedded
/// store's server reads its record cache's entries as they are, to encode
/// an answer without copying the record first.
pub(crate) trait Lookups {
    type Record;
    /// As [`StoreView::record`].
    fn by_id(&self, id: &str) -> Result<Option<Self::Record>>;
    /// As [`StoreView::record_with`].
    fn by_field(&self, field: IndexedField, value: &str) -> Result<Option<Self::Record>>;
}

impl<V: StoreView + ?Sized> Lookups for V {
    type Record = OAuthToken;

    fn by_id(&self, id: &str) -> Result<Option<OAuthToken>> {
        self.record(id)
    }

    fn by_field(&self, field: IndexedField, value: &str) -> Result<Option<OAuthToken>> {
        self.record_with(field, value)
    }
}

/// `find_token`, for any backend.
pub(crate) fn find<V: Lookups + ?Sized>(view: &V, query: &OAuthToken) -> Result<Option<V::Record>> {
    match lookup_key(query) {
        None => Ok(None),
        Some(LookupKey::UserName(user)) => view.by_field(IndexedField::UserName, user),
        Some(LookupKey::AccessToken(access)) => view.by_field(IndexedField::AccessToken, access),
        Some(LookupKey::GrantOrRefresh { grant, refresh }) => {
            if let Some(grant) = grant {
                if let Some(found) = view.by_field(IndexedField::GrantToken, grant)? {
                    return Ok(Some(found));
                }
            }
            match refresh {
                Some(refresh) => view.by_field(IndexedField::RefreshToken, refresh),
                None => Ok(None),
            }
        }
        Some(LookupKey::Id(id)) => view.by_id(id),
    }
}

/// `find_token_by_id`, for any backend.
pub(crate) fn find_by_id<V: Lookups + ?Sized>(view: &V, id: &str) -> Result<Option<V::Record>> {
    if id.is_empty() {
        return Ok(None);
    }
    view.by_id(id)
}

/// A record as the committed state held it before a write set touched it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one per touched record, short-lived
pub enum Stored {
    /// No record under that id.
    Absent,
    /// This record.
    Record(OAuthToken),
    /// Bytes that cannot be decoded: only a delete touches such a record,
    /// and the engine finds its index entries by its id.
    Damaged,
}

impl Stored {
    pub fn record(&self) -> Option<&OAuthToken> {
        match self {
            Stored::Record(record) => Some(record),
            Stored::Absent | Stored::Damaged => None,
        }
    }
}

/// One record a write set changes.
#[derive(Debug, Clone)]
pub struct Change {
    /// What the committed state holds under the id.
    pub previous: Stored,
    /// What it will hold: `None` when the record is deleted.
    pub next: Option<OAuthToken>,
}

impl Change {
    /// The index changes that turn `previous` into `next` (the entries of a
    /// damaged previous record are the engine's to find).
    pub fn index_changes(
        &self,
    ) -> impl Iterator<Item = (IndexedField, Option<&str>, Option<&str>)> {
        index_diff(self.previous.record(), self.next.as_ref())
    }
}

/// A set of writes planned from a store's committed state: each touched id
/// with its previous and next record, and the id counter after them. The
/// one description of a write every engine applies (saves, deletes and
/// batches alike), atomically.
#[derive(Debug, Clone)]
pub struct WriteSet {
    pub changes: BTreeMap<String, Change>,
    /// The id counter's value after the writes (never below the value they
    /// were planned from).
    pub last_issued: u64,
}

/// Saves and deletes staged over a store's committed state: reads see the
/// staged changes, nothing reaches the store until the engine applies
/// [`Overlay::into_writes`] in one atomic write.
pub struct Overlay<'a, V: ?Sized> {
    base: &'a V,
    changes: BTreeMap<String, Change>,
    /// Values the overlay linked, per field (`IndexedField as usize`): value
    /// → id. A candidate only; every hit is verified against the record.
    linked: [HashMap<String, String>; 4],
    planned_from: u64,
    last_issued: u64,
}

impl<'a, V: StoreView + ?Sized> Overlay<'a, V> {
    /// An overlay over `base`, whose id counter last issued `last_issued`.
    pub fn new(base: &'a V, last_issued: u64) -> Self {
        Overlay {
            base,
            changes: BTreeMap::new(),
            linked: Default::default(),
            planned_from: last_issued,
            last_issued,
        }
    }

    /// `save_token` against the staged state: on success `token` equals what
    /// the record will be; on failure nothing was staged and `token` is
    /// unchanged.
    pub fn save(&mut self, token: &mut OAuthToken) -> Result<()> {
        if !token.has_any_token() {
            return Err(Error::invalid(
                "a token needs at least one of access_token, refresh_token or grant_token",
            ));
        }
        let mut incoming = token.clone();
        incoming.normalize();

        let previous = match present(&incoming.id) {
            Some(id) => self.record(id)?,
            None => find(self, &incoming)?,
        };
        let (mut record, issued) = match (&previous, &incoming.id) {
            (Some(previous), _) => (previous.clone(), None),
            (None, Some(id)) => (OAuthToken::new().with_id(id.as_str()), None),
            (None, None) => {
                let (id, issued) = self.next_free_id()?;
                (OAuthToken::new().with_id(id), Some(issued))
            }
        };
        record.merge_from(&incoming);
        let id = record.id.clone().expect("a planned record has an id");

        for (field, _, new) in index_diff(previous.as_ref(), Some(&record)) {
            let Some(value) = new else { continue };
            if let Some(holder) = self.record_with(field, value)? {
                if let Some(holder_id) = holder.id.filter(|holder_id| *holder_id != id) {
                    return Err(Error::Conflict {
                        field,
                        id: holder_id,
                    });
                }
            }
        }
        // Checked per save, so that one record too large to store fails
        // alone, not the writes combined with it.
        codec::check_encodable(&record)?;

        for (field, _, new) in index_diff(previous.as_ref(), Some(&record)) {
            if let Some(new) = new {
                self.linked[field as usize].insert(new.to_owned(), id.clone());
            }
        }
        if let Some(issued) = issued {
            self.last_issued = issued;
        }
        // What the committed state holds under the id, when the overlay has
        // not touched it yet: the record this save read (or none).
        let committed = match previous {
            Some(previous) => Stored::Record(previous),
            None => Stored::Absent,
        };
        self.stage(&id, Some(record.clone()), Some(committed))?;
        *token = record;
        Ok(())
    }

    /// `delete_token` against the staged state: `true` if the record exists
    /// at this point (also when its bytes cannot be decoded).
    pub fn delete(&mut self, id: &str) -> Result<bool> {
        if id.is_empty() {
            return Ok(false);
        }
        let exists = match self.changes.get(id) {
            Some(change) => change.next.is_some(),
            None => self.base.contains(id)?,
        };
        if exists {
            self.stage(id, None, None)?;
        }
        Ok(exists)
    }

    /// Records `next` as the staged state of `id`, remembering what the
    /// committed state held the first time the id is touched (`committed`,
    /// when the caller read it already).
    fn stage(
        &mut self,
        id: &str,
        next: Option<OAuthToken>,
        committed: Option<Stored>,
    ) -> Result<()> {
        if let Some(change) = self.changes.get_mut(id) {
            change.next = next;
            return Ok(());
        }
        let previous = match committed {
            Some(known) => Ok(known),
            None => self.base.record(id).map(|found| match found {
                Some(record) => Stored::Record(record),
                None => Stored::Absent,
            }),
        };
        let previous = match previous {
            Ok(stored) => stored,
            // Only a delete reaches a damaged record: a save read it first.
            Err(Error::Corruption {
                id: Some(damaged), ..
            }) if damaged == id && next.is_none() => Stored::Damaged,
            Err(e) => return Err(e),
        };
        self.changes
            .insert(id.to_owned(), Change { previous, next });
        Ok(())
    }

    /// The next counter value after the last issued one whose decimal id
    /// is free.
    fn next_free_id(&self) -> Result<(String, u64)> {
        let mut n = self.last_issued;
        loop {
            n = n.checked_add(1).ok_or_else(|| {
                Error::invalid("the id counter is exhausted; save with an explicit id")
            })?;
            let id = n.to_string();
            if !self.contains(&id)? {
                return Ok((id, n));
            }
        }
    }

    /// Makes every id generated from now on greater than `n`.
    pub fn skip_ids_through(&mut self, n: u64) {
        self.last_issued = self.last_issued.max(n);
    }

    /// How many records the overlay changed so far.
    pub fn changed(&self) -> usize {
        self.changes.len()
    }

    /// What the engine must write: `None` when nothing changed (neither a
    /// record nor the id counter).
    pub fn into_writes(self) -> Option<WriteSet> {
        if self.changes.is_empty() && self.last_issued == self.planned_from {
            return None;
        }
        Some(WriteSet {
            changes: self.changes,
            last_issued: self.last_issued,
        })
    }

    /// The current version of `record` if the overlay changed it.
    fn current(&self, record: OAuthToken) -> Option<OAuthToken> {
        match record.id.as_deref().and_then(|id| self.changes.get(id)) {
            Some(change) => change.next.clone(),
            None => Some(record),
        }
    }
}

impl<V: StoreView + ?Sized> StoreView for Overlay<'_, V> {
    fn record(&self, id: &str) -> Result<Option<OAuthToken>> {
        match self.changes.get(id) {
            Some(change) => Ok(change.next.clone()),
            None => self.base.record(id),
        }
    }

    fn contains(&self, id: &str) -> Result<bool> {
        match self.changes.get(id) {
            Some(change) => Ok(change.next.is_some()),
            None => self.base.contains(id),
        }
    }

    fn record_with(&self, field: IndexedField, value: &str) -> Result<Option<OAuthToken>> {
        // Uniqueness holds in the staged state, so the first candidate whose
        // current version still holds the value is the answer.
        let holds = |record: &OAuthToken| record.indexed(field) == Some(value);
        if let Some(id) = self.linked[field as usize].get(value) {
            if let Some(record) = self.record(id)?.filter(holds) {
                return Ok(Some(record));
            }
        }
        Ok(self
            .base
            .record_with(field, value)?
            .and_then(|record| self.current(record))
            .filter(holds))
    }
}

/// The index changes that turn `old` into `new` (either may be absent): for
/// each unique field whose value changes, the value to unlink and the value
/// to link.
pub(crate) fn index_diff<'t>(
    old: Option<&'t OAuthToken>,
    new: Option<&'t OAuthToken>,
) -> impl Iterator<Item = (IndexedField, Option<&'t str>, Option<&'t str>)> {
    IndexedField::ALL.into_iter().filter_map(move |field| {
        let old = old.and_then(|r| r.indexed(field));
        let new = new.and_then(|r| r.indexed(field));
        (old != new).then_some((field, old, new))
    })
}
