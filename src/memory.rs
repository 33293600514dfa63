//! [`MemoryStore`]: tokens kept in process memory only.
//!
//! It is also the reference model that property tests and fuzzers compare
//! the sled engine against, so it is kept as plain as possible: a map of
//! records and one exact-value map per unique field.

use std::collections::{BTreeMap, HashMap};

use parking_lot::RwLock;

use crate::batch::Batch;
use crate::error::Result;
use crate::store::{self, SavePlan, StoreView, TokenStore};
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

    /// Runs `stage` over a [`Batch`] and applies what it staged at once,
    /// holding the write lock throughout.
    pub(crate) fn apply_batch(
        &self,
        stage: &mut dyn FnMut(&mut Batch<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut inner = self.inner.write();
        let last_issued = inner.last_issued;
        let changes = {
            let mut batch = Batch::new(&*inner, last_issued);
            stage(&mut batch)?;
            batch.finish(last_issued)
        };
        let Some(changes) = changes else {
            return Ok(());
        };
        for (id, new) in changes.records {
            let previous = inner.records.get(&id).cloned();
            let diff: Vec<(IndexedField, Option<String>, Option<String>)> =
                store::index_diff(previous.as_ref(), new.as_ref())
                    .map(|(field, old, new)| {
                        (field, old.map(str::to_owned), new.map(str::to_owned))
                    })
                    .collect();
            for (field, old, new) in diff {
                if let Some(old) = old {
                    inner.index(field).remove(&old);
                }
                if let Some(new) = new {
                    inner.index(field).insert(new, id.clone());
                }
            }
            match new {
                Some(record) => inner.records.insert(id, record),
                None => inner.records.remove(&id),
            };
        }
        inner.last_issued = changes.last_issued;
        Ok(())
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

    fn apply(&mut self, plan: &SavePlan) {
        let id = plan.id();
        for (field, old, new) in plan.index_changes() {
            if let Some(old) = old {
                self.index(field).remove(old);
            }
            if let Some(new) = new {
                self.index(field).insert(new.to_owned(), id.to_owned());
            }
        }
        self.records.insert(id.to_owned(), plan.record.clone());
        if let Some(issued) = plan.issued {
            self.last_issued = issued;
        }
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

impl TokenStore for MemoryStore {
    fn find_token(&self, query: &OAuthToken) -> Result<Option<OAuthToken>> {
        store::find(&*self.inner.read(), query)
    }

    fn save_token(&self, token: &mut OAuthToken) -> Result<()> {
        let mut inner = self.inner.write();
        let plan = store::plan_save(&*inner, token, inner.last_issued)?;
        inner.apply(&plan);
        *token = plan.record;
        Ok(())
    }

    fn delete_token(&self, id: &str) -> Result<bool> {
        let mut inner = self.inner.write();
        let Some(record) = inner.records.remove(id) else {
            return Ok(false);
        };
        for field in IndexedField::ALL {
            if let Some(value) = record.indexed(field) {
                inner.index(field).remove(value);
            }
        }
        Ok(true)
    }

    fn get_tokens(&self) -> Result<Vec<OAuthToken>> {
        Ok(self.inner.read().records.values().cloned().collect())
    }

    fn delete_tokens(&self) -> Result<usize> {
        let mut inner = self.inner.write();
        let count = inner.records.len();
        inner.records.clear();
        inner.indexes.iter_mut().for_each(HashMap::clear);
        Ok(count)
    }

    fn find_token_by_id(&self, id: &str) -> Result<Option<OAuthToken>> {
        store::find_by_id(&*self.inner.read(), id)
    }
}
