//! [`Batch`]: saves and deletes staged over a store's committed state, then
//! applied by the backend in one atomic write. Backend-neutral: every
//! backend's batch hands its closure this same type.

use crate::error::Result;
use crate::plan::{self, Overlay, StoreView, WriteSet};
use crate::token::OAuthToken;

/// Saves and deletes staged inside a batch ([`SledStore::batch`](crate::SledStore::batch),
/// or [`Backend::batch`](crate::Backend::batch) for any store): each follows
/// the same rules as the [`TokenStore`](crate::TokenStore) operation of the
/// same name and sees the ones before it, but nothing reaches the store until
/// the batch ends, and then everything does, in one atomic (and, in durable
/// mode, flushed) write.
pub struct Batch<'a> {
    overlay: Overlay<'a, dyn StoreView + 'a>,
    discard: bool,
    /// What was staged, in order, when the batch runs in a client of a
    /// shared store (its owner replays it).
    journal: Option<Vec<Staged>>,
}

/// One operation a batch staged successfully (see [`Batch::journaled`]).
pub(crate) enum Staged {
    Save(Box<OAuthToken>),
    Delete(String),
    SkipIdsThrough(u64),
}

impl<'a> Batch<'a> {
    /// A batch over `base`, whose id counter last issued `last_issued`.
    pub(crate) fn new(base: &'a (dyn StoreView + 'a), last_issued: u64) -> Self {
        Batch {
            overlay: Overlay::new(base, last_issued),
            discard: false,
            journal: None,
        }
    }

    /// A batch that also records what it stages, for a shared store's
    /// owner to replay over the same state ([`into_journal`](Self::into_journal)).
    pub(crate) fn journaled(base: &'a (dyn StoreView + 'a), last_issued: u64) -> Self {
        Batch {
            journal: Some(Vec::new()),
            ..Batch::new(base, last_issued)
        }
    }

    /// What a journaled batch staged, or `None` when it was discarded.
    pub(crate) fn into_journal(self) -> Option<Vec<Staged>> {
        if self.discard {
            return None;
        }
        self.journal
    }

    fn record(&mut self, staged: impl FnOnce() -> Staged) {
        if let Some(journal) = &mut self.journal {
            journal.push(staged());
        }
    }

    /// What the engine must write when the batch ends: `None` when it was
    /// discarded or changed nothing (neither a record nor the id counter).
    pub(crate) fn finish(self) -> Option<WriteSet> {
        if self.discard {
            return None;
        }
        self.overlay.into_writes()
    }
}

impl Batch<'_> {
    /// Stages `save_token(token)`. On success `token` equals what the record
    /// will be; on failure nothing was staged and `token` is unchanged.
    ///
    /// # Errors
    /// As for [`TokenStore::save_token`](crate::TokenStore::save_token).
    pub fn save_token(&mut self, token: &mut OAuthToken) -> Result<()> {
        let asked = self.journal.is_some().then(|| token.clone());
        self.overlay.save(token)?;
        if let Some(asked) = asked {
            self.record(|| Staged::Save(Box::new(asked)));
        }
        Ok(())
    }

    /// Stages `delete_token(id)`; `true` if the record exists at this point
    /// of the batch.
    ///
    /// A record whose stored bytes cannot be decoded is deleted too.
    ///
    /// # Errors
    /// Storage errors reading the store.
    pub fn delete_token(&mut self, id: &str) -> Result<bool> {
        let deleted = self.overlay.delete(id)?;
        self.record(|| Staged::Delete(id.to_owned()));
        Ok(deleted)
    }

    /// `find_token`, seeing what the batch staged so far.
    ///
    /// # Errors
    /// As for [`TokenStore::find_token`](crate::TokenStore::find_token).
    pub fn find_token(&self, query: &OAuthToken) -> Result<Option<OAuthToken>> {
        plan::find(&self.overlay, query)
    }

    /// `find_token_by_id`, seeing what the batch staged so far.
    ///
    /// # Errors
    /// As for [`TokenStore::find_token_by_id`](crate::TokenStore::find_token_by_id).
    pub fn find_token_by_id(&self, id: &str) -> Result<Option<OAuthToken>> {
        plan::find_by_id(&self.overlay, id)
    }

    /// Makes every id the store generates from now on greater than `n`
    /// (the counter never goes back: a smaller `n` does nothing). An import
    /// uses it so that no id of its source is handed to another record.
    pub fn skip_ids_through(&mut self, n: u64) {
        self.overlay.skip_ids_through(n);
        self.record(|| Staged::SkipIdsThrough(n));
    }

    /// How many distinct records the batch has changed so far.
    pub fn changed(&self) -> usize {
        self.overlay.changed()
    }

    /// Drops everything staged when the batch ends, even if its closure
    /// returns `Ok`: a dry run.
    pub fn discard(&mut self) {
        self.discard = true;
    }
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("changed", &self.changed())
            .field("discard", &self.discard)
            .finish_non_exhaustive()
    }
}
