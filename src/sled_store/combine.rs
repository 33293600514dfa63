//! Write combining for `save_token`: concurrent saves are applied together,
//! in arrival order, as one batch: one sled transaction and one flush.
//!
//! Why: sled 0.34 makes every atomic multi-key write with a batch manifest,
//! rolling its IO buffer before and after reserving it: two synchronous
//! `pwrite` + `sync_file_range` per transaction, under a lock that keeps other
//! transactions out. Sharing only the flush (group commit) cannot share
//! those; sharing the transaction does.
//!
//! How (flat combining): a save enqueues itself. If no save is being applied
//! it becomes the leader: it takes every queued save (its own among them) and
//! applies them through [`SledStore::batch`]; otherwise it waits for the
//! current leader to finish, and returns the outcome that leader (or a later
//! one) set for it, or becomes the next leader. While a leader writes, the
//! saves that arrive queue up for the next batch. Each save is planned
//! with the `save_token` rules and sees the ones before it, and a save that
//! fails (a conflict, an invalid token) stages nothing and fails alone, as
//! [`Batch::save_token`](super::Batch::save_token) guarantees. A lone writer
//! makes batches of one.

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::SledStore;
use crate::error::{Error, Result};
use crate::token::OAuthToken;

/// One enqueued save and, once applied, its outcome.
struct Pending {
    token: OAuthToken,
    outcome: Mutex<Option<Result<OAuthToken>>>,
}

#[derive(Default)]
pub(crate) struct Combiner {
    queue: Mutex<Vec<Arc<Pending>>>,
    /// Held by the save applying the queue.
    leader: Mutex<()>,
    /// Counts finished batches; `applied` wakes the waiting saves.
    rounds: Mutex<u64>,
    applied: Condvar,
}

impl SledStore {
    /// `save_token` through the combiner; returns the stored record.
    pub(super) fn save_combined(&self, token: &OAuthToken) -> Result<OAuthToken> {
        let mine = Arc::new(Pending {
            token: token.clone(),
            outcome: Mutex::new(None),
        });
        self.combiner.queue.lock().push(Arc::clone(&mine));
        let leader = loop {
            let seen = *self.combiner.rounds.lock();
            if let Some(outcome) = mine.outcome.lock().take() {
                return outcome;
            }
            if let Some(leader) = self.combiner.leader.try_lock() {
                if let Some(outcome) = mine.outcome.lock().take() {
                    return outcome;
                }
                break leader;
            }
            // A leader is writing: wait until it is done, then look again.
            let mut rounds = self.combiner.rounds.lock();
            while *rounds == seen {
                self.combiner.applied.wait(&mut rounds);
            }
        };
        // Everything queued so far, in arrival order; `mine` is among them.
        let saves = std::mem::take(&mut *self.combiner.queue.lock());
        let applied = self.batch(|batch| {
            Ok::<_, Error>(
                saves
                    .iter()
                    .map(|pending| {
                        let mut token = pending.token.clone();
                        batch.save_token(&mut token).map(|()| token)
                    })
                    .collect::<Vec<_>>(),
            )
        });
        let outcomes: Vec<Result<OAuthToken>> = match applied {
            Ok(outcomes) => outcomes,
            // The batch could not be written: every save in it failed.
            Err(e) => saves.iter().map(|_| Err(duplicate(&e))).collect(),
        };
        for (pending, outcome) in saves.iter().zip(outcomes) {
            *pending.outcome.lock() = Some(outcome);
        }
        // Release the leader lock before announcing the round, so a save
        // that found the lock taken always sees a round end after it.
        drop(leader);
        *self.combiner.rounds.lock() += 1;
        self.combiner.applied.notify_all();
        let outcome = mine.outcome.lock().take();
        outcome.expect("the leader applied its own save")
    }
}

/// The same error again, for each save of a batch that failed as a whole.
fn duplicate(e: &Error) -> Error {
    match e {
        Error::Corruption { id, detail } => Error::Corruption {
            id: id.clone(),
            detail: detail.clone(),
        },
        Error::RekeyRequired { path } => Error::RekeyRequired { path: path.clone() },
        Error::Io(io) => Error::Io(std::io::Error::new(io.kind(), io.to_string())),
        other => Error::Io(std::io::Error::other(other.to_string())),
    }
}
