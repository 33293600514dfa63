//! [`SledStore::batch`]: many saves and deletes applied as one atomic write.

use crate::batch::Batch;
use crate::engine;
use crate::error::Error;

use super::SledStore;

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
        stage: impl FnOnce(&mut Batch<'_>) -> std::result::Result<T, E> + Send,
    ) -> std::result::Result<T, E>
    where
        T: Send,
        E: From<Error> + Send,
    {
        engine::batch(self, stage)
    }
}
