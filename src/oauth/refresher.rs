//! Single flight: at most one refresh per record at a time in this process,
//! and every caller that asked while it ran gets its outcome.
//!
//! Go's `oauth2.ReuseTokenSource` holds one mutex per token source across
//! the refresh, so waiters re-check the token once it is released; that
//! alone would make each waiter refresh again after a *failed* refresh. Here
//! the first caller (the leader) runs the refresh and publishes its outcome,
//! success or error, to everyone who joined while it ran (as
//! google-auth-library-java's shared refresh task does). A caller arriving
//! after the flight ended starts a new one, which re-reads the store first.
//!
//! A flight can also be claimed first and flown later, in another thread
//! (refresh ahead claims it before spawning the thread that flies it):
//! callers arriving in between join it.
//!
//! Entries live only from the claim to the landing, so the map holds at
//! most one entry per record being refreshed right now.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};

/// The flights in the air, by record id.
type Running<T> = Arc<Mutex<HashMap<String, Arc<Flight<T>>>>>;

/// The flights running now, by record id.
pub(crate) struct Flights<T> {
    running: Running<T>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            running: Arc::default(),
        }
    }
}

struct Flight<T> {
    outcome: Mutex<Option<Result<T>>>,
    landed: Condvar,
}

/// What a caller of [`Flights::run`] got.
pub(crate) enum Joined<T> {
    /// This caller ran `work`: its outcome.
    Led(Result<T>),
    /// Another caller ran it: a copy of its outcome.
    Waited(Result<T>),
}

/// A caller arriving at a record's flight: it leads a new one or joins the
/// one in the air.
enum Entry<T> {
    Lead(Landing<T>),
    Join(Arc<Flight<T>>),
}

impl<T: Clone> Flights<T> {
    /// Runs `work` for `id` unless a flight for `id` is running; then waits
    /// for that flight and returns a copy of its outcome.
    pub fn run(&self, id: &str, work: impl FnOnce() -> Result<T>) -> Joined<T> {
        match self.enter(id) {
            Entry::Lead(landing) => Joined::Led(landing.fly(work)),
            Entry::Join(flight) => Joined::Waited(flight.wait()),
        }
    }

    /// Starts the flight for `id` now, to be flown later, by this thread or
    /// another, with [`Landing::fly`]; `None` if one is in the air. Callers
    /// arriving meanwhile join it as if its work were running.
    pub fn claim(&self, id: &str) -> Option<Landing<T>> {
        match self.enter(id) {
            Entry::Lead(landing) => Some(landing),
            Entry::Join(_) => None,
        }
    }

    fn enter(&self, id: &str) -> Entry<T> {
        let mut running = self.running.lock();
        if let Some(flight) = running.get(id) {
            return Entry::Join(Arc::clone(flight));
        }
        let flight = Arc::new(Flight {
            outcome: Mutex::new(None),
            landed: Condvar::new(),
        });
        running.insert(id.to_owned(), Arc::clone(&flight));
        Entry::Lead(Landing {
            running: Arc::clone(&self.running),
            id: id.to_owned(),
            flight,
            landed: false,
        })
    }

    /// How many flights are running (for tests of the map's size).
    #[cfg(test)]
    fn running(&self) -> usize {
        self.running.lock().len()
    }
}

impl<T: Clone> Flight<T> {
    /// Waits for the flight to land; a copy of its outcome.
    fn wait(&self) -> Result<T> {
        let mut outcome = self.outcome.lock();
        while outcome.is_none() {
            self.landed.wait(&mut outcome);
        }
        copy(outcome.as_ref().expect("checked above"))
    }
}

fn copy<T: Clone>(result: &Result<T>) -> Result<T> {
    match result {
        Ok(value) => Ok(value.clone()),
        Err(e) => Err(e.clone()),
    }
}

/// A flight led by its holder, who lands it with [`fly`](Self::fly). Landed
/// even if dropped unflown or if its work panics, so no waiter hangs.
pub(crate) struct Landing<T> {
    running: Running<T>,
    id: String,
    flight: Arc<Flight<T>>,
    landed: bool,
}

impl<T: Clone> Landing<T> {
    /// Runs `work` as the flight's leader and lands it with the outcome.
    pub fn fly(mut self, work: impl FnOnce() -> Result<T>) -> Result<T> {
        let result = work();
        self.publish(copy(&result));
        result
    }
}

impl<T> Landing<T> {
    fn publish(&mut self, outcome: Result<T>) {
        // Removed before it is published: a caller arriving now starts a
        // new flight, which re-reads the store the leader just saved to.
        self.running.lock().remove(&self.id);
        *self.flight.outcome.lock() = Some(outcome);
        self.flight.landed.notify_all();
        self.landed = true;
    }
}

impl<T> Drop for Landing<T> {
    fn drop(&mut self) {
        if self.landed {
            return;
        }
        let reason = if std::thread::panicking() {
            "the refresh this call waited for was interrupted (the refreshing thread panicked); try again"
        } else {
            "the refresh this call waited for could not start; try again"
        };
        self.publish(Err(Error::from(std::io::Error::other(reason))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;
    use std::time::Duration;

    #[test]
    fn concurrent_callers_share_one_run_and_its_error() {
        let flights = Flights::<u32>::default();
        let runs = AtomicUsize::new(0);
        let barrier = Barrier::new(8);
        let results: Vec<Result<u32>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        match flights.run("1", || {
                            runs.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(200));
                            Err(Error::invalid("refused"))
                        }) {
                            Joined::Led(r) | Joined::Waited(r) => r,
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(results
            .iter()
            .all(|r| matches!(r, Err(Error::InvalidToken { .. }))));
        assert_eq!(flights.running(), 0, "landed flights leave the map");
    }

    #[test]
    fn a_panicking_leader_releases_its_waiters() {
        let flights = Flights::<u32>::default();
        std::thread::scope(|s| {
            let leader = s.spawn(|| {
                flights.run("1", || {
                    std::thread::sleep(Duration::from_millis(200));
                    panic!("boom")
                })
            });
            std::thread::sleep(Duration::from_millis(50));
            let waited = flights.run("1", || Ok(7));
            assert!(leader.join().is_err());
            // Either joined the panicking flight (an error) or came after it.
            match waited {
                Joined::Waited(r) => assert!(r.is_err()),
                Joined::Led(r) => assert_eq!(r.unwrap(), 7),
            }
        });
        assert_eq!(flights.running(), 0);
    }

    /// Waits until a caller has joined the flight `landing` leads (it holds
    /// the flight, beside the map and the landing).
    fn joined(landing: &Landing<u32>) {
        while Arc::strong_count(&landing.flight) < 3 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_claimed_flight_is_joined_until_another_thread_flies_it() {
        let flights = Flights::<u32>::default();
        let landing = flights.claim("1").expect("nothing in the air");
        assert!(flights.claim("1").is_none(), "claimed once");
        std::thread::scope(|s| {
            let waiter = s.spawn(|| flights.run("1", || Ok(0)));
            joined(&landing);
            let flown = std::thread::spawn(move || landing.fly(|| Ok(7)));
            assert_eq!(flown.join().unwrap().unwrap(), 7);
            match waiter.join().unwrap() {
                Joined::Waited(r) => assert_eq!(r.unwrap(), 7),
                Joined::Led(_) => panic!("the waiter led its own flight"),
            }
        });
        assert_eq!(flights.running(), 0);
    }

    #[test]
    fn a_claim_dropped_unflown_releases_its_waiters() {
        let flights = Flights::<u32>::default();
        let landing = flights.claim("1").expect("nothing in the air");
        std::thread::scope(|s| {
            let waiter = s.spawn(|| flights.run("1", || Ok(0)));
            joined(&landing);
            drop(landing);
            match waiter.join().unwrap() {
                Joined::Waited(r) => assert!(matches!(r, Err(Error::Io(_)))),
                Joined::Led(_) => panic!("the waiter led its own flight"),
            }
        });
        assert_eq!(flights.running(), 0);
        assert!(flights.claim("1").is_some(), "free to claim again");
    }
}
