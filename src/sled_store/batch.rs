//! [`SledStore::batch`]: many saves and deletes applied as one atomic write.

use crate::batch::Batch;
use crate::error::Error;
use crate::store;

use super::{SledStore, LAST_ISSUED_KEY};

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
        let mut batch = Batch::new(self, *last_issued);
        let out = stage(&mut batch)?;
        let Some(changes) = batch.finish(*last_issued) else {
            return Ok(out);
        };

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
