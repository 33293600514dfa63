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

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::SledStore;
#[cfg(test)]
use crate::codec;
use crate::engine::{save_into, Engine as _, Replay};
use crate::error::{Error, Result};
use crate::plan::Overlay;
use crate::token::OAuthToken;

/// One enqueued save and, once applied, its outcome.
struct Pending {
    token: OAuthToken,
    outcome: Mutex<Option<Result<OAuthToken>>>,
}

#[derive(Default)]
pub(crate) struct Combiner {
    queue: Mutex<Vec<Arc<Pending>>>,
    /// Signalled when a save is queued while a leader lingers.
    arrived: Condvar,
    /// How many saves the last two rounds took (see [`LINGER`]).
    last_rounds: Mutex<[usize; 2]>,
    /// Held by the save applying the queue.
    leader: Mutex<()>,
    /// Counts finished batches; `applied` wakes the waiting saves.
    rounds: Mutex<u64>,
    applied: Condvar,
    /// Called by a leader before and after it takes the queue (tests hold
    /// it there, or make it panic).
    #[cfg(test)]
    on_lead: Mutex<Option<LeadHook>>,
}

/// A test's hook into a leader: `(taken, queued)` where `queued` tells how
/// many saves wait in the queue (before the take) or were taken (after).
#[cfg(test)]
type LeadHook = Box<dyn Fn(bool, &dyn Fn() -> usize) + Send>;

impl SledStore {
    /// `save_token` through the combiner; returns the stored record.
    pub(super) fn save_combined(&self, token: &OAuthToken) -> Result<OAuthToken> {
        self.save_together(vec![token.clone()], true)
            .pop()
            .unwrap_or_else(|| Err(panicked()))
    }

    /// Saves `tokens` through the combiner, in their order, in one round
    /// (with whatever else is queued); each one's outcome, as
    /// `save_token` would give it. A shared store's owner applies the
    /// saves its save loop gathered from clients this way (`linger` off:
    /// the loop waited for them itself).
    pub(crate) fn save_together(
        &self,
        tokens: Vec<OAuthToken>,
        linger: bool,
    ) -> Vec<Result<OAuthToken>> {
        let mine: Vec<Arc<Pending>> = tokens
            .into_iter()
            .map(|token| {
                Arc::new(Pending {
                    token,
                    outcome: Mutex::new(None),
                })
            })
            .collect();
        {
            let mut queue = self.combiner.queue.lock();
            queue.extend(mine.iter().cloned());
            self.combiner.arrived.notify_one();
        }
        // Queued together, so taken by one leader, which sets their
        // outcomes one after the other: none is taken before all are set.
        let answered = || {
            if !mine.iter().all(|pending| pending.outcome.lock().is_some()) {
                return None;
            }
            mine.iter()
                .map(|pending| pending.outcome.lock().take())
                .collect::<Option<Vec<_>>>()
        };
        let leader = loop {
            let seen = *self.combiner.rounds.lock();
            if let Some(outcomes) = answered() {
                return outcomes;
            }
            if let Some(leader) = self.combiner.leader.try_lock() {
                if let Some(outcomes) = answered() {
                    return outcomes;
                }
                break leader;
            }
            // A leader is writing: wait until it is done, then look again.
            let mut rounds = self.combiner.rounds.lock();
            while *rounds == seen {
                self.combiner.applied.wait(&mut rounds);
            }
        };
        #[cfg(test)]
        if let Some(on_lead) = &*self.combiner.on_lead.lock() {
            on_lead(false, &|| self.combiner.queue.lock().len());
        }
        if linger {
            self.linger();
        }
        // Everything queued so far, in arrival order; `mine` is among them.
        let round = Round {
            combiner: &self.combiner,
            saves: std::mem::take(&mut *self.combiner.queue.lock()),
            leader: Some(leader),
        };
        #[cfg(test)]
        if let Some(on_lead) = &*self.combiner.on_lead.lock() {
            on_lead(true, &|| round.saves.len());
        }
        // Each save is planned on its own: one that fails (a conflict, an
        // invalid or oversized token) stages nothing and fails alone.
        let applied = self.write(Replay::Allowed, &mut |view, last_issued| {
            let mut overlay = Overlay::new(view, last_issued);
            let outcomes: Vec<Result<OAuthToken>> = round
                .saves
                .iter()
                .map(|pending| save_into(&mut overlay, &pending.token))
                .collect();
            Ok((outcomes, overlay.into_writes()))
        });
        match applied {
            Ok(outcomes) => {
                for (pending, outcome) in round.saves.iter().zip(outcomes) {
                    *pending.outcome.lock() = Some(outcome);
                }
            }
            // The write failed as a whole: every save in it failed.
            Err(e) => {
                for pending in &round.saves {
                    *pending.outcome.lock() = Some(Err(e.clone()));
                }
            }
        }
        {
            let mut last = self.combiner.last_rounds.lock();
            *last = [last[1], round.saves.len()];
        }
        drop(round);
        answered().unwrap_or_else(|| mine.iter().map(|_| Err(panicked())).collect())
    }

    /// How many saves a durable leader waits for ([`LINGER`]): the larger
    /// of the last two rounds; 1 (none to wait for) when not durable.
    pub(crate) fn round_target(&self) -> usize {
        if !matches!(self.options.durability, super::Durability::Durable) {
            return 1;
        }
        let last = self.combiner.last_rounds.lock();
        last[0].max(last[1]).max(1)
    }
}

/// How long a durable leader waits, before it takes the queue, for as many
/// saves as the larger of the last two rounds took, when fewer are queued.
///
/// Writers a socket away (a shared store's clients) come back after a flush
/// spread over a few hundred µs: a leader that took the queue at once would
/// write the first alone, and the others would wait for that flush and form
/// the next round, so rounds alternated small and large. A writer left
/// alone after a burst waits at most twice (two rounds of one end it);
/// in-process writers, queued again at once, hardly wait. Measured with 8
/// durable writers (BENCHMARKS.md, issue 18): rounds of 8 instead of
/// alternating, +17 to 20 % saves/s both for a shared store's client
/// processes and for threads of the owner.
pub(crate) const LINGER: std::time::Duration = std::time::Duration::from_micros(500);

impl SledStore {
    /// See [`LINGER`].
    fn linger(&self) {
        let want = self.round_target();
        if want <= 1 {
            return;
        }
        let deadline = std::time::Instant::now() + LINGER;
        let mut queue = self.combiner.queue.lock();
        while queue.len() < want {
            if self
                .combiner
                .arrived
                .wait_until(&mut queue, deadline)
                .timed_out()
            {
                break;
            }
        }
    }
}

/// What a leader holds while it applies the saves it took. Dropped on the
/// way out, also when the leader panics: then every save it took and had
/// not answered is answered with [`Error::Panicked`], and the round ends, so
/// no waiting writer is left hanging and the next one can lead.
struct Round<'a> {
    combiner: &'a Combiner,
    saves: Vec<Arc<Pending>>,
    leader: Option<MutexGuard<'a, ()>>,
}

impl Drop for Round<'_> {
    fn drop(&mut self) {
        for pending in &self.saves {
            let mut outcome = pending.outcome.lock();
            if outcome.is_none() {
                *outcome = Some(Err(panicked()));
            }
        }
        // Release the leader lock before announcing the round, so a save
        // that found the lock taken always sees a round end after it.
        drop(self.leader.take());
        *self.combiner.rounds.lock() += 1;
        self.combiner.applied.notify_all();
    }
}

/// The error of a save whose round's leader panicked.
pub(crate) fn panicked() -> Error {
    Error::Panicked {
        what: "applying the saves combined with this one".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::store::TokenStore;
    use crate::Options;

    fn store() -> (tempfile::TempDir, Arc<SledStore>) {
        let dir = tempfile::tempdir().unwrap();
        let options = Options::default().warm_on_open(false);
        let store = SledStore::open_with(dir.path().join("s"), options).unwrap();
        (dir, Arc::new(store))
    }

    fn user(n: u32) -> OAuthToken {
        OAuthToken::new()
            .with_user_name(format!("user{n}"))
            .with_refresh_token(format!("1000.r{n}"))
    }

    /// Holds the next leader until `n` saves are queued, then calls
    /// `after_take` with how many it took.
    fn hold_leader_until(store: &SledStore, n: usize, after_take: impl Fn(usize) + Send + 'static) {
        *store.combiner.on_lead.lock() = Some(Box::new(move |taken, queued| {
            if taken {
                after_take(queued());
            } else {
                while queued() < n {
                    std::thread::yield_now();
                }
            }
        }));
    }

    /// Saves `token` on a thread of its own; its outcome arrives on the
    /// channel.
    fn save_on_thread(
        store: &Arc<SledStore>,
        token: OAuthToken,
    ) -> mpsc::Receiver<Result<OAuthToken>> {
        let (tx, rx) = mpsc::channel();
        let store = Arc::clone(store);
        std::thread::spawn(move || {
            let mut token = token;
            let saved = store.save_token(&mut token).map(|()| token);
            let _ = tx.send(saved);
        });
        rx
    }

    /// A hang shows as a failed test, not a stuck run.
    const HANG: Duration = Duration::from_secs(60);

    #[test]
    fn a_token_too_large_to_store_fails_alone_in_a_combined_write() {
        let (_dir, store) = store();
        hold_leader_until(&store, 2, |taken| assert_eq!(taken, 2));
        let huge = user(1).with_access_token("x".repeat(codec::MAX_RECORD_BYTES));
        let first = save_on_thread(&store, huge);
        let second = save_on_thread(&store, user(2));
        let huge_saved = first.recv_timeout(HANG).unwrap();
        assert!(
            matches!(huge_saved, Err(Error::InvalidToken { .. })),
            "{huge_saved:?}"
        );
        let saved = second
            .recv_timeout(HANG)
            .unwrap()
            .expect("the other save succeeds");
        assert_eq!(saved.user_name.as_deref(), Some("user2"));
        *store.combiner.on_lead.lock() = None;
        assert_eq!(store.len(), 1);
        assert!(store.check().unwrap().is_ok());
    }

    #[test]
    fn a_leader_that_panics_answers_every_save_it_took_and_ends_its_round() {
        let (_dir, store) = store();
        // The first leader takes two saves, then panics; a third save,
        // queued after the take, waits for the round to end.
        hold_leader_until(&store, 2, |_| panic!("a leader's bug"));
        let first = save_on_thread(&store, user(1));
        let second = save_on_thread(&store, user(2));
        let mut outcomes = Vec::new();
        for rx in [&first, &second] {
            match rx.recv_timeout(HANG) {
                Ok(outcome) => outcomes.push(outcome),
                // The panicking leader's own thread sends nothing.
                Err(mpsc::RecvTimeoutError::Disconnected) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("a save hangs"),
            }
        }
        assert_eq!(outcomes.len(), 1, "the save that did not lead is answered");
        let err = outcomes.pop().unwrap().unwrap_err();
        assert!(matches!(err, Error::Panicked { .. }), "{err:?}");
        // The store stays usable: the next save leads and is applied.
        *store.combiner.on_lead.lock() = None;
        let third = save_on_thread(&store, user(3));
        let saved = third.recv_timeout(HANG).unwrap().unwrap();
        assert_eq!(saved.user_name.as_deref(), Some("user3"));
    }
}
