//! The [`TokenStore`] trait, and the find/save logic every backend shares.
//!
//! A backend only provides storage: it answers "which record has this id" and
//! "which record has this unique value" through [`StoreView`], and applies a
//! [`SavePlan`] atomically. What a query designates and what a save writes is
//! decided here, once, from the rules of [`crate::rules`].

use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Result};
use crate::rules::{lookup_key, LookupKey};
use crate::token::{present, IndexedField, OAuthToken};

/// The six operations of the Zoho CRM SDKs' `TokenStore`, with their
/// semantics made exact (see SPEC.md).
///
/// The trait is object-safe; callers hold a `dyn TokenStore + Send + Sync`
/// and never need to know which backend is behind it.
///
/// ```
/// use tokenstore::{MemoryStore, OAuthToken, TokenStore};
///
/// let store: Box<dyn TokenStore + Send + Sync> = Box::new(MemoryStore::new());
/// let mut token = OAuthToken::new()
///     .with_user_name("ana@example.com")
///     .with_client_id("1000.CLIENT")
///     .with_client_secret("secret")
///     .with_refresh_token("1000.refresh")
///     .with_access_token("1000.access");
/// store.save_token(&mut token)?;
/// let id = token.id.clone().expect("save assigns an id");
///
/// let query = OAuthToken::new().with_user_name("ana@example.com");
/// assert_eq!(store.find_token(&query)?, Some(token.clone()));
/// assert_eq!(store.find_token_by_id(&id)?, Some(token));
/// assert!(store.delete_token(&id)?);
/// assert_eq!(store.get_tokens()?, vec![]);
/// # Ok::<(), tokenstore::Error>(())
/// ```
pub trait TokenStore {
    /// The stored record chosen by the lookup key of `query`
    /// ([`lookup_key`](crate::lookup_key)), as stored, or `None`.
    fn find_token(&self, query: &OAuthToken) -> Result<Option<OAuthToken>>;

    /// Inserts or updates (upserts) `token`.
    ///
    /// The target is the record with `token.id` if it is present (inserted
    /// under that id when missing), otherwise the record the lookup key finds,
    /// otherwise a new record with a generated id. Fields present in `token`
    /// overwrite the stored ones, absent fields keep them. On success `token`
    /// equals what is now stored; on failure neither the store nor `token`
    /// changed.
    ///
    /// # Errors
    /// [`Error::InvalidToken`] when `token` has none of access, refresh or
    /// grant token; [`Error::Conflict`] when a unique value is held by another
    /// record; storage errors from the backend.
    fn save_token(&self, token: &mut OAuthToken) -> Result<()>;

    /// Removes the record `id` and its index entries. `true` if it existed.
    fn delete_token(&self, id: &str) -> Result<bool>;

    /// Every stored record, in no particular order.
    fn get_tokens(&self) -> Result<Vec<OAuthToken>>;

    /// Removes every record; returns how many there were.
    fn delete_tokens(&self) -> Result<usize>;

    /// The record with this id, or `None` (also for the empty id).
    fn find_token_by_id(&self, id: &str) -> Result<Option<OAuthToken>>;

    /// Runs `critical` while holding this store's lock for refreshing the
    /// record `id`, exclusive across every process that shares the store.
    ///
    /// This is the seam that extends single-flight refresh (SPEC.md §7)
    /// beyond one process: the refresher takes its in-process lock first,
    /// then this one, re-reads the record, and only then asks the accounts
    /// server. A store that belongs to one process (the embedded
    /// [`SledStore`](crate::SledStore), [`MemoryStore`](crate::MemoryStore))
    /// needs nothing more than the in-process lock, so the default just runs
    /// `critical`; a shared backend (PostgreSQL) overrides it with a lock the
    /// server holds (an advisory lock on the record).
    ///
    /// ```
    /// use tokenstore::{MemoryStore, TokenStore};
    ///
    /// let store = MemoryStore::new();
    /// let mut ran = false;
    /// store.with_refresh_lock("1", &mut || {
    ///     ran = true;
    ///     Ok(())
    /// })?;
    /// assert!(ran);
    /// # Ok::<(), tokenstore::Error>(())
    /// ```
    fn with_refresh_lock(&self, id: &str, critical: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        let _ = id;
        critical()
    }
}

/// What a backend lets the shared logic read. Implementations must return
/// only records that really hold the asked value: an index hit is verified
/// against the record before it is returned.
pub(crate) trait StoreView {
    /// The record stored under `id`.
    fn record(&self, id: &str) -> Result<Option<OAuthToken>>;
    /// Whether a record is stored under `id` (without decoding it).
    fn contains(&self, id: &str) -> Result<bool>;
    /// The record whose unique `field` equals `value`.
    fn record_with(&self, field: IndexedField, value: &str) -> Result<Option<OAuthToken>>;
}

/// `find_token`, for any backend.
pub(crate) fn find(view: &impl StoreView, query: &OAuthToken) -> Result<Option<OAuthToken>> {
    match lookup_key(query) {
        None => Ok(None),
        Some(LookupKey::UserName(user)) => view.record_with(IndexedField::UserName, user),
        Some(LookupKey::AccessToken(access)) => view.record_with(IndexedField::AccessToken, access),
        Some(LookupKey::GrantOrRefresh { grant, refresh }) => {
            if let Some(grant) = grant {
                if let Some(found) = view.record_with(IndexedField::GrantToken, grant)? {
                    return Ok(Some(found));
                }
            }
            match refresh {
                Some(refresh) => view.record_with(IndexedField::RefreshToken, refresh),
                None => Ok(None),
            }
        }
        Some(LookupKey::Id(id)) => view.record(id),
    }
}

/// `find_token_by_id`, for any backend.
pub(crate) fn find_by_id(view: &impl StoreView, id: &str) -> Result<Option<OAuthToken>> {
    if id.is_empty() {
        return Ok(None);
    }
    view.record(id)
}

/// The writes one `save_token` makes, decided before anything is written.
#[derive(Debug)]
pub(crate) struct SavePlan {
    /// The record as it will be stored: normalized, id set.
    pub record: OAuthToken,
    /// The record it replaces, if any.
    pub previous: Option<OAuthToken>,
    /// The new value of the id counter, when the id was generated.
    pub issued: Option<u64>,
}

impl SavePlan {
    pub fn id(&self) -> &str {
        self.record
            .id
            .as_deref()
            .expect("a planned record always has an id")
    }

    /// The index changes: for each unique field whose value changes, the
    /// value to unlink (if any) and the value to link (if any).
    pub fn index_changes(
        &self,
    ) -> impl Iterator<Item = (IndexedField, Option<&str>, Option<&str>)> {
        index_diff(self.previous.as_ref(), Some(&self.record))
    }
}

/// Decides what `save_token(token)` writes, given the store's current state
/// and the last id the counter issued. Must run under the backend's write
/// lock so that nothing changes between this plan and its application.
pub(crate) fn plan_save(
    view: &impl StoreView,
    token: &OAuthToken,
    last_issued: u64,
) -> Result<SavePlan> {
    if !token.has_any_token() {
        return Err(Error::invalid(
            "a token needs at least one of access_token, refresh_token or grant_token",
        ));
    }
    let mut incoming = token.clone();
    incoming.normalize();

    let previous = match present(&incoming.id) {
        Some(id) => view.record(id)?,
        None => find(view, &incoming)?,
    };
    let (mut record, issued) = match (&previous, &incoming.id) {
        (Some(previous), _) => (previous.clone(), None),
        (None, Some(id)) => (OAuthToken::new().with_id(id.as_str()), None),
        (None, None) => {
            let (id, issued) = next_free_id(view, last_issued)?;
            (OAuthToken::new().with_id(id), Some(issued))
        }
    };
    record.merge_from(&incoming);

    let plan = SavePlan {
        record,
        previous,
        issued,
    };
    for (field, _, new) in plan.index_changes() {
        let Some(value) = new else { continue };
        if let Some(holder) = view.record_with(field, value)? {
            if holder.id.as_deref() != Some(plan.id()) {
                return Err(Error::Conflict {
                    field,
                    id: holder.id.unwrap_or_default(),
                });
            }
        }
    }
    Ok(plan)
}

/// The next counter value after `last_issued` whose decimal id is free.
fn next_free_id(view: &impl StoreView, last_issued: u64) -> Result<(String, u64)> {
    let mut n = last_issued;
    loop {
        n = n.checked_add(1).ok_or_else(|| {
            Error::invalid("the id counter is exhausted; save with an explicit id")
        })?;
        let id = n.to_string();
        if !view.contains(&id)? {
            return Ok((id, n));
        }
    }
}

/// Saves and deletes staged over a store's committed state: reads see the
/// staged changes, nothing reaches the store until the backend applies
/// [`Overlay::into_changes`] in one atomic write. Used by batches.
pub(crate) struct Overlay<'a, V: ?Sized> {
    base: &'a V,
    /// Every record the batch changed: `None` when it was deleted.
    records: BTreeMap<String, Option<OAuthToken>>,
    /// Values the batch linked, per field (`IndexedField as usize`): value →
    /// id. A candidate only; every hit is verified against the record.
    linked: [HashMap<String, String>; 4],
    last_issued: u64,
}

/// What a batch changed: each touched id with its final record (`None` when
/// deleted), and the id counter's final value.
pub(crate) struct Changes {
    pub records: BTreeMap<String, Option<OAuthToken>>,
    pub last_issued: u64,
}

impl<'a, V: StoreView + ?Sized> Overlay<'a, V> {
    pub fn new(base: &'a V, last_issued: u64) -> Self {
        Overlay {
            base,
            records: BTreeMap::new(),
            linked: Default::default(),
            last_issued,
        }
    }

    /// `save_token` against the staged state.
    pub fn save(&mut self, token: &mut OAuthToken) -> Result<()> {
        let plan = plan_save(self, token, self.last_issued)?;
        let id = plan.id().to_owned();
        for (field, _, new) in plan.index_changes() {
            if let Some(new) = new {
                self.linked[field as usize].insert(new.to_owned(), id.clone());
            }
        }
        if let Some(issued) = plan.issued {
            self.last_issued = issued;
        }
        self.records.insert(id, Some(plan.record.clone()));
        *token = plan.record;
        Ok(())
    }

    /// `delete_token` against the staged state.
    pub fn delete(&mut self, id: &str) -> Result<bool> {
        if id.is_empty() || !self.contains(id)? {
            return Ok(false);
        }
        self.records.insert(id.to_owned(), None);
        Ok(true)
    }

    pub fn skip_ids_through(&mut self, n: u64) {
        self.last_issued = self.last_issued.max(n);
    }

    pub fn last_issued(&self) -> u64 {
        self.last_issued
    }

    /// How many records the batch changed so far.
    pub fn changed(&self) -> usize {
        self.records.len()
    }

    pub fn into_changes(self) -> Changes {
        Changes {
            records: self.records,
            last_issued: self.last_issued,
        }
    }

    /// The current version of `record` if the batch changed it.
    fn current(&self, record: OAuthToken) -> Option<OAuthToken> {
        match record.id.as_deref().and_then(|id| self.records.get(id)) {
            Some(staged) => staged.clone(),
            None => Some(record),
        }
    }
}

impl<V: StoreView + ?Sized> StoreView for Overlay<'_, V> {
    fn record(&self, id: &str) -> Result<Option<OAuthToken>> {
        match self.records.get(id) {
            Some(staged) => Ok(staged.clone()),
            None => self.base.record(id),
        }
    }

    fn contains(&self, id: &str) -> Result<bool> {
        match self.records.get(id) {
            Some(staged) => Ok(staged.is_some()),
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
