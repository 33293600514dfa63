//! [`Batch`]: many saves and deletes applied as one atomic write.

use crate::error::{Error, Result};
use crate::store::{self, Overlay};
use crate::token::OAuthToken;

use super::{SledStore, LAST_ISSUED_KEY};

/// Saves and deletes staged inside [`SledStore::batch`]: each follows the
/// same rules as the [`TokenStore`](crate::TokenStore) operation of the same
/// name and sees the ones before it, but nothing reaches the store until the
/// batch ends, and then everything does, in one atomic (and, in durable mode,
/// flushed) write.
pub struct Batch<'a> {
    overlay: Overlay<'a, SledStore>,
    discard: bool,
}

impl Batch<'_> {
    /// Stages `save_token(token)`. On success `token` equals what the record
    /// will be; on failure nothing was staged and `token` is unchanged.
    ///
    /// # Errors
    /// As for [`TokenStore::save_token`](crate::TokenStore::save_token).
    pub fn save_token(&mut self, token: &mut OAuthToken) -> Result<()> {
        self.overlay.save(token)
    }

    /// Stages `delete_token(id)`; `true` if the record exists at this point
    /// of the batch.
    ///
    /// # Errors
    /// [`Error::Corruption`] if the stored record cannot be decoded (use
    /// [`TokenStore::delete_token`](crate::TokenStore::delete_token) to
    /// remove a damaged record).
    pub fn delete_token(&mut self, id: &str) -> Result<bool> {
        self.overlay.delete(id)
    }

    /// `find_token`, seeing what the batch staged so far.
    ///
    /// # Errors
    /// As for [`TokenStore::find_token`](crate::TokenStore::find_token).
    pub fn find_token(&self, query: &OAuthToken) -> Result<Option<OAuthToken>> {
        store::find(&self.overlay, query)
    }

    /// `find_token_by_id`, seeing what the batch staged so far.
    ///
    /// # Errors
    /// As for [`TokenStore::find_token_by_id`](crate::TokenStore::find_token_by_id).
    pub fn find_token_by_id(&self, id: &str) -> Result<Option<OAuthToken>> {
        store::find_by_id(&self.overlay, id)
    }

    /// Makes every id the store generates from now on greater than `n`
    /// (the counter never goes back: a smaller `n` does nothing). An import
    /// uses it so that no id of its source is handed to another record.
    pub fn skip_ids_through(&mut self, n: u64) {
        self.overlay.skip_ids_through(n);
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

impl SledStore {
    /// Runs `stage` with a [`Batch`], then applies everything it staged as
    /// one atomic write: after a crash the store holds all of it or none of
    /// it. If `stage` returns `Err`, or calls [`Batch::discard`], nothing is
    /// written. Other writers wait while the batch runs; readers do not, and
    /// see none of it until it is applied.
    ///
    /// ```
    /// use tokenstore::{OAuthToken, SledStore, TokenStore};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = SledStore::open(dir.path().join("tokens"))?;
    /// store.batch(|batch| {
    ///     for n in 0..3 {
    ///         let mut token = OAuthToken::new()
    ///             .with_user_name(format!("user{n}@example.com"))
    ///             .with_refresh_token(format!("1000.refresh{n}"));
    ///         batch.save_token(&mut token)?;
    ///     }
    ///     // A conflict inside the batch undoes the whole batch.
    ///     let mut clash = OAuthToken::new()
    ///         .with_user_name("mallory@example.com")
    ///         .with_refresh_token("1000.refresh0");
    ///     batch.save_token(&mut clash)
    /// })
    /// .unwrap_err();
    /// assert_eq!(store.len(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// The first error `stage` returns, or a storage error applying the
    /// batch (then nothing was applied).
    pub fn batch<T, E>(
        &self,
        stage: impl FnOnce(&mut Batch<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E>
    where
        E: From<Error>,
    {
        let queued = self.group_commit.queue();
        let mut last_issued = self.writer.lock();
        let mut batch = Batch {
            overlay: Overlay::new(self, *last_issued),
            discard: false,
        };
        let out = stage(&mut batch)?;
        if batch.discard || (batch.changed() == 0 && batch.overlay.last_issued() == *last_issued) {
            return Ok(out);
        }
        let changes = batch.overlay.into_changes();

        // Encode everything before the transaction, which may run more than
        // once; the writer lock keeps the committed state as it was read.
        let mut writes = Vec::with_capacity(changes.records.len());
        for (id, new) in changes.records {
            let previous = store::StoreView::record(self, &id)?;
            let encoded = new.as_ref().map(|record| self.encode(record)).transpose()?;
            writes.push((id, previous, new, encoded));
        }
        let touched: Vec<&str> = writes.iter().map(|(id, ..)| id.as_str()).collect();
        self.transact(Some(&touched), |trees| {
            for (id, previous, new, encoded) in &writes {
                match encoded {
                    Some(bytes) => trees.records.insert(id.as_bytes(), bytes.as_slice())?,
                    None => trees.records.remove(id.as_bytes())?,
                };
                for (field, old, new) in store::index_diff(previous.as_ref(), new.as_ref()) {
                    if let Some(old) = old {
                        trees.unlink(field, old, id)?;
                    }
                    if let Some(new) = new {
                        trees.link(field, new, id)?;
                    }
                }
            }
            if changes.last_issued != *last_issued {
                trees
                    .meta
                    .insert(LAST_ISSUED_KEY, &changes.last_issued.to_be_bytes())?;
            }
            Ok(())
        })?;
        *last_issued = changes.last_issued;
        self.finish_write((last_issued, queued))?;
        Ok(out)
    }
}
