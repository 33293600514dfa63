//! [`MemoryStore`]: tokens kept in process memory only.
//!
//! It is also the reference model that property tests and fuzzers compare
//! the sled engine against, so it is kept as plain as possible: a map of
//! records and one exact-value map per unique field.

use std::collections::{BTreeMap, HashMap};

use parking_lot::RwLock;

use crate::backend::{Backend, StoreInfo};
use crate::check::CheckReport;
use crate::engine::{self, Engine, Plan, Replay, Stage};
use crate::error::Result;
use crate::plan::{StoreView, WriteSet};
use crate::token::{IndexedField, OAuthToken};

/// An in-memory [`TokenStore`], like the Zoho sample's `:memory:` store but
/// indexed, atomic and without duplicate rows. Everything is lost when it is
/// dropped.
///
/// ```
/// use tokenstore::{MemoryStore, OAuthToken, TokenStore};
///
/// let store = MemoryStore::new();
/// let mut token = OAuthToken::new().with_user_name("ana").with_access_token("a1");
/// store.save_token(&mut token)?;
/// assert_eq!(token.id.as_deref(), Some("1"));
/// # Ok::<(), tokenstore::Error>(())
/// ```
#[derive(Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    records: BTreeMap<String, OAuthToken>,
    /// For each unique field (indexed by `IndexedField as usize`): value → id.
    indexes: [HashMap<String, String>; 4],
    last_issued: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many records are stored.
    pub fn len(&self) -> usize {
        self.inner.read().records.len()
    }

    /// Whether no record is stored.
    pub fn is_empty(&self) -> bool {
        self.inner.read().records.is_empty()
    }

    /// The last id the counter issued.
    pub(crate) fn last_issued_id(&self) -> u64 {
        self.inner.read().last_issued
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("records", &self.inner.read().records.len())
            .finish()
    }
}

impl Inner {
    fn index(&mut self, field: IndexedField) -> &mut HashMap<String, String> {
        &mut self.indexes[field as usize]
    }

    fn apply(&mut self, writes: WriteSet) {
        for (id, change) in writes.changes {
            let diff: Vec<(IndexedField, Option<String>, Option<String>)> = change
                .index_changes()
                .map(|(field, old, new)| (field, old.map(str::to_owned), new.map(str::to_owned)))
                .collect();
            for (field, old, new) in diff {
                if let Some(old) = old {
                    self.index(field).remove(&old);
                }
                if let Some(new) = new {
                    self.index(field).insert(new, id.clone());
                }
            }
            match change.next {
                Some(record) => self.records.insert(id, record),
                None => self.records.remove(&id),
            };
        }
        self.last_issued = writes.last_issued;
    }
}

impl StoreView for Inner {
    fn record(&self, id: &str) -> Result<Option<OAuthToken>> {
        Ok(self.records.get(id).cloned())
    }

    fn contains(&self, id: &str) -> Result<bool> {
        Ok(self.records.contains_key(id))
    }

    fn record_with(&self, field: IndexedField, value: &str) -> Result<Option<OAuthToken>> {
        Ok(self.indexes[field as usize]
            .get(value)
            .and_then(|id| self.records.get(id))
            .cloned())
    }
}

impl Engine for MemoryStore {
    fn read<T: Send>(&self, read: impl Fn(&dyn StoreView) -> Result<T> + Send) -> Result<T> {
        read(&*self.inner.read())
    }

    fn write<T: Send>(&self, _replay: Replay, plan: &mut Plan<'_, T>) -> Result<T> {
        let mut inner = self.inner.write();
        let (out, writes) = plan(&*inner, inner.last_issued)?;
        if let Some(writes) = writes {
            inner.apply(writes);
        }
        Ok(out)
    }

    fn records(&self) -> Result<Vec<OAuthToken>> {
        Ok(self.inner.read().records.values().cloned().collect())
    }

    fn clear(&self) -> Result<usize> {
        let mut inner = self.inner.write();
        let count = inner.records.len();
        inner.records.clear();
        inner.indexes.iter_mut().for_each(HashMap::clear);
        Ok(count)
    }
}

impl Backend for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }
    fn location(&self) -> String {
        "memory:".to_owned()
    }
    fn count(&self) -> Result<usize> {
        Ok(self.len())
    }
    fn last_issued_id(&self) -> Result<u64> {
        Ok(MemoryStore::last_issued_id(self))
    }
    fn check(&self) -> Result<CheckReport> {
        Ok(CheckReport {
            records: self.len(),
            ..CheckReport::default()
        })
    }
    fn apply_batch(&self, stage: &mut Stage<'_>) -> Result<()> {
        engine::apply_batch(self, stage)
    }
    fn info(&self) -> Result<StoreInfo> {
        Ok(StoreInfo::new(None, 1, false))
    }
}
