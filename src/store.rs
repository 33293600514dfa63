//! The [`TokenStore`] trait: the six operations of the Zoho CRM SDKs'
//! `TokenStore`. Every backend of this crate gets it from
//! [`crate::engine`], written once over the planning of [`crate::plan`].

use crate::error::Result;
use crate::token::OAuthToken;

/// The six operations of the Zoho CRM SDKs' `TokenStore`, with their
/// semantics made exact (see docs/SPEC.md).
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

    /// Takes this store's lock for refreshing the record `id`, exclusive
    /// across every process that shares the store, for that record only;
    /// it is held until the returned guard is dropped.
    ///
    /// This is the seam that extends single-flight refresh (docs/SPEC.md §7)
    /// beyond one process: the refresher takes its in-process lock first,
    /// then this one, re-reads the record, and only then asks the accounts
    /// server. A store that belongs to one process (the embedded
    /// [`SledStore`](crate::SledStore), [`MemoryStore`](crate::MemoryStore))
    /// needs nothing more than the in-process lock, so the default is
    /// [`RefreshLock::local`]; a shared backend (PostgreSQL) returns a lock
    /// the server holds (an advisory lock on the record).
    ///
    /// ```
    /// use tokenstore::{MemoryStore, OAuthToken, TokenStore};
    ///
    /// let store = MemoryStore::new();
    /// let lock = store.refresh_lock("1")?;
    /// // ... re-read record 1, refresh it, save it ...
    /// drop(lock);
    /// # Ok::<(), tokenstore::Error>(())
    /// ```
    ///
    /// # Errors
    /// A shared backend's errors taking the lock (its server unavailable,
    /// or the wait past its time-out).
    fn refresh_lock(&self, id: &str) -> Result<RefreshLock<'_>> {
        let _ = id;
        Ok(RefreshLock::local())
    }
}

/// A held refresh lock ([`TokenStore::refresh_lock`]): released when
/// dropped.
#[must_use = "the refresh lock is released as soon as the guard is dropped"]
pub struct RefreshLock<'a> {
    held: Option<Box<dyn Send + 'a>>,
}

impl<'a> RefreshLock<'a> {
    /// The lock of a store that belongs to one process: nothing to hold
    /// beyond the refresher's own in-process lock.
    pub fn local() -> Self {
        RefreshLock { held: None }
    }

    /// A lock that `guard` holds and releases when it is dropped (for a
    /// store implementation).
    pub fn held_by(guard: impl Send + 'a) -> Self {
        RefreshLock {
            held: Some(Box::new(guard)),
        }
    }
}

impl std::fmt::Debug for RefreshLock<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshLock")
            .field("shared", &self.held.is_some())
            .finish()
    }
}
