//! The seam between the operations and the storage engines: an [`Engine`]
//! reads and applies [`WriteSet`]s; [`TokenStore`] is written once, here,
//! on top of it, for every backend.
//!
//! What an operation means (the lookup key, the upsert, the conflicts, the
//! id counter) is [`crate::plan`]'s. How it is made atomic and durable is
//! each engine's: sled plans under its writer lock and applies with one
//! transaction and a shared flush (and combines concurrent saves into one
//! write set); PostgreSQL plans inside a SERIALIZABLE transaction and runs
//! the plan again when the server asks for a retry; memory plans under a
//! lock. None of them re-derives what a save is.

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::plan::{self, Overlay, StoreView, WriteSet};
use crate::store::{RefreshLock, TokenStore};
use crate::token::OAuthToken;

/// Whether an engine may run a write's plan more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// The plan has no side effects outside the write set (a save, a
    /// delete): an engine may run it again, from a newer committed state,
    /// to retry a transaction.
    Allowed,
    /// The plan runs a caller's closure (a batch's stage), which must run
    /// exactly once: the engine excludes every other writer instead.
    Never,
}

/// A plan: from the committed state and the id counter, a value for the
/// caller and the writes to apply (`None`: nothing to write).
pub type Plan<'p, T> = dyn FnMut(&dyn StoreView, u64) -> Result<(T, Option<WriteSet>)> + Send + 'p;

/// A batch's stage, as [`Backend::apply_batch`](crate::Backend::apply_batch) takes it
/// (re-exported as `tokenstore::BatchStage`).
pub type Stage<'s> = dyn FnMut(&mut Batch<'_>) -> Result<()> + Send + 's;

/// A storage engine: the crate-private seam every backend implements (the
/// trait is public only inside a private module, so nothing outside the
/// crate names or implements it).
pub trait Engine: Send + Sync {
    /// Runs `read` over the state readers see (read caches allowed).
    fn read<T: Send>(&self, read: impl Fn(&dyn StoreView) -> Result<T> + Send) -> Result<T>;

    /// Runs `plan` under this engine's write exclusion over the committed
    /// state as the storage holds it (never a read cache) and the id
    /// counter, then applies the writes it returns atomically (and, if the
    /// engine is durable, durably) before returning its value. On error
    /// nothing was written.
    fn write<T: Send>(&self, replay: Replay, plan: &mut Plan<'_, T>) -> Result<T>;

    /// Every stored record.
    fn records(&self) -> Result<Vec<OAuthToken>>;

    /// Removes every record; returns how many there were.
    fn clear(&self) -> Result<usize>;

    /// `save_token`: plans one save and applies it. Engines that combine
    /// concurrent saves into one write set (sled) override it, planning
    /// each save the same way ([`save_into`]).
    fn save(&self, token: &OAuthToken) -> Result<OAuthToken> {
        self.write(Replay::Allowed, &mut |view, last_issued| {
            let mut overlay = Overlay::new(view, last_issued);
            let saved = save_into(&mut overlay, token)?;
            Ok((saved, overlay.into_writes()))
        })
    }

    /// [`TokenStore::refresh_lock`]: the default suits a store that
    /// belongs to one process, where the refresher's in-process lock is all
    /// there is.
    fn refresh_lock(&self, id: &str) -> Result<RefreshLock<'_>> {
        let _ = id;
        Ok(RefreshLock::local())
    }
}

/// Stages one save of `token` in `overlay`; returns the record it will be.
pub fn save_into<V: StoreView + ?Sized>(
    overlay: &mut Overlay<'_, V>,
    token: &OAuthToken,
) -> Result<OAuthToken> {
    let mut saved = token.clone();
    overlay.save(&mut saved)?;
    Ok(saved)
}

/// [`Backend::apply_batch`](crate::Backend::apply_batch), for any engine:
/// the stage runs once, with every other writer excluded, and what it staged
/// is applied as one write set.
pub fn apply_batch<E: Engine + ?Sized>(engine: &E, stage: &mut Stage<'_>) -> Result<()> {
    engine.write(Replay::Never, &mut |view, last_issued| {
        let mut batch = Batch::new(view, last_issued);
        stage(&mut batch)?;
        Ok(((), batch.finish()))
    })
}

/// The batch of every engine (`SledStore::batch`, `PostgresStore::batch`):
/// `stage` runs once with a [`Batch`], every other writer excluded; what it
/// staged is applied as one write set, unless it fails (its error is
/// returned) or discards the batch.
pub fn batch<En, T, E>(
    engine: &En,
    stage: impl FnOnce(&mut Batch<'_>) -> std::result::Result<T, E> + Send,
) -> std::result::Result<T, E>
where
    En: Engine + ?Sized,
    T: Send,
    E: From<Error> + Send,
{
    let mut stage = Some(stage);
    engine.write(Replay::Never, &mut |view, last_issued| {
        let stage = stage
            .take()
            .expect("a plan that must not be replayed runs once");
        let mut batch = Batch::new(view, last_issued);
        Ok(match stage(&mut batch) {
            Ok(value) => (Ok(value), batch.finish()),
            Err(e) => (Err(e), None),
        })
    })?
}

impl<E: Engine> TokenStore for E {
    fn find_token(&self, query: &OAuthToken) -> Result<Option<OAuthToken>> {
        self.read(|view| plan::find(view, query))
    }

    fn save_token(&self, token: &mut OAuthToken) -> Result<()> {
        *token = self.save(token)?;
        Ok(())
    }

    fn delete_token(&self, id: &str) -> Result<bool> {
        if id.is_empty() {
            return Ok(false);
        }
        self.write(Replay::Allowed, &mut |view, last_issued| {
            let mut overlay = Overlay::new(view, last_issued);
            let deleted = overlay.delete(id)?;
            Ok((deleted, overlay.into_writes()))
        })
    }

    fn get_tokens(&self) -> Result<Vec<OAuthToken>> {
        self.records()
    }

    fn delete_tokens(&self) -> Result<usize> {
        self.clear()
    }

    fn find_token_by_id(&self, id: &str) -> Result<Option<OAuthToken>> {
        self.read(|view| plan::find_by_id(view, id))
    }

    fn refresh_lock(&self, id: &str) -> Result<RefreshLock<'_>> {
        Engine::refresh_lock(self, id)
    }
}
