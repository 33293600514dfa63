//! [`Backend`]: what every store offers beyond the six operations of
//! [`TokenStore`] (check, batches, counts, size, key changes where
//! supported). Each backend implements it in its own module; opening one
//! from a string is [`crate::open`]'s. An operation a backend cannot do is
//! [`Error::Unsupported`], never a silent no-op.

use std::fmt;

use crate::batch::Batch;
use crate::check::CheckReport;
use crate::engine::Stage;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::store::TokenStore;

/// What every backend offers beyond the six operations of [`TokenStore`]:
/// the capabilities the `tokenstore` command, `copy` and the bindings need.
///
/// Object-safe: tools hold a `dyn Backend` (through [`AnyStore`]).
pub trait Backend: TokenStore + Send + Sync + fmt::Debug {
    /// Which backend this is: `"sled"`, `"postgres"` or `"memory"`.
    fn kind(&self) -> &'static str;

    /// Where the store is, for messages: a directory, or a URL without its
    /// password. Never a secret.
    fn location(&self) -> String;

    /// How many records are stored.
    fn count(&self) -> Result<usize>;

    /// The last id the id counter issued (`0` before the first). Generated
    /// ids are always greater; `copy` carries it over so that the target
    /// never hands out an id the source already gave away.
    fn last_issued_id(&self) -> Result<u64>;

    /// Every record/index disagreement and undecodable record.
    fn check(&self) -> Result<CheckReport>;

    /// Runs `stage` with a [`Batch`] and applies what it staged in one
    /// atomic write (all of it or none of it, also across a crash). Nothing
    /// is written when `stage` fails or calls [`Batch::discard`]. `stage`
    /// runs exactly once. Callers use the generic [`batch`](#method.batch)
    /// on `dyn Backend`.
    fn apply_batch(&self, stage: &mut Stage<'_>) -> Result<()>;

    /// Size, format and encryption, for `stats`.
    fn info(&self) -> Result<StoreInfo>;

    /// Encrypts the store with `key`, re-encrypts it with a new one, or
    /// decrypts it (`None`), calling `progress(done, total)` as records are
    /// rewritten. Backends that cannot change a key in place say so with
    /// [`Error::Unsupported`] (copy the store to a new one with the new key
    /// instead: `tokenstore copy`).
    fn set_encryption(
        &mut self,
        key: Option<Key>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        let _ = (key, progress);
        Err(Error::Unsupported {
            operation: "changing the encryption key in place".into(),
            backend: self.kind(),
            instead: "copy the records into a new store opened with the new key".into(),
        })
    }
}

impl dyn Backend + '_ {
    /// [`Backend::apply_batch`] with any result and error type: runs `stage`
    /// with a [`Batch`], then applies everything it staged in one atomic
    /// write. If `stage` returns `Err` or discards the batch, nothing is
    /// written.
    ///
    /// ```
    /// use tokenstore::{OAuthToken, TokenStore};
    ///
    /// let store = tokenstore::open("memory:")?;
    /// let saved = store.batch(|batch| {
    ///     for n in 0..3 {
    ///         let mut token = OAuthToken::new()
    ///             .with_user_name(format!("user{n}@example.com"))
    ///             .with_refresh_token(format!("1000.refresh{n}"));
    ///         batch.save_token(&mut token)?;
    ///     }
    ///     Ok::<_, tokenstore::Error>(batch.changed())
    /// })?;
    /// assert_eq!(saved, 3);
    /// assert_eq!(store.get_tokens()?.len(), 3);
    /// # Ok::<(), tokenstore::Error>(())
    /// ```
    ///
    /// # Errors
    /// The first error `stage` returns, or the backend's error applying the
    /// batch (then nothing was applied).
    pub fn batch<T, E>(
        &self,
        stage: impl FnOnce(&mut Batch<'_>) -> std::result::Result<T, E> + Send,
    ) -> std::result::Result<T, E>
    where
        T: Send,
        E: From<Error> + Send,
    {
        let mut stage = Some(stage);
        let mut outcome = None;
        self.apply_batch(&mut |batch| {
            if let Some(stage) = stage.take() {
                let staged = stage(batch);
                if staged.is_err() {
                    // The caller's error: nothing of the batch is written.
                    batch.discard();
                }
                outcome = Some(staged);
            }
            Ok(())
        })?;
        outcome.expect("apply_batch runs the stage")
    }
}

/// Size, format and encryption of a store, as `tokenstore stats` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreInfo {
    /// Bytes the store takes (on disk, or on the server); `None` when the
    /// backend cannot tell.
    pub size_bytes: Option<u64>,
    /// The storage format or schema version.
    pub format_version: u32,
    /// Whether records are sealed with a key.
    pub encrypted: bool,
    /// For an embedded store shared by local processes
    /// ([`SharedStore`](crate::SharedStore)): who owns it and how many use
    /// it; `None` for other stores.
    pub sharing: Option<Sharing>,
}

/// Which part a process plays in a shared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// This process holds the store and serves the others.
    Owner,
    /// This process uses the store through its owner.
    Client,
}

/// Who shares an embedded store, as [`StoreInfo::sharing`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sharing {
    /// The part this process plays.
    pub role: Role,
    /// The process that owns the store.
    pub owner_pid: u32,
    /// How many other processes use it through the owner.
    pub clients: usize,
}

impl StoreInfo {
    /// A report of `size_bytes`, `format_version` and `encrypted`.
    pub fn new(size_bytes: Option<u64>, format_version: u32, encrypted: bool) -> Self {
        StoreInfo {
            size_bytes,
            format_version,
            encrypted,
            sharing: None,
        }
    }
}
