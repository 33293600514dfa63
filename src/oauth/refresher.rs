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
//! Entries live only while a flight runs, so the map holds at most one
//! entry per record being refreshed right now.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};

/// The flights running now, by record id.
pub(crate) struct Flights<T> {
    running: Mutex<HashMap<String, Arc<Flight<T>>>>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            running: Mutex::new(HashMap::new()),
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

impl<T: Clone> Flights<T> {
    /// Runs `work` for `id` unless a flight for `id` is running; then waits
    /// for that flight and returns a copy of its outcome.
    pub fn run(&self, id: &str, work: impl FnOnce() -> Result<T>) -> Joined<T> {
        let (flight, leader) = {
            let mut running = self.running.lock();
            match running.get(id) {
                Some(flight) => (Arc::clone(flight), false),
                None => {
                    let flight = Arc::new(Flight {
                        outcome: Mutex::new(None),
                        landed: Condvar::new(),
                    });
                    running.insert(id.to_owned(), Arc::clone(&flight));
                    (flight, true)
                }
            }
        };
        if !leader {
            let mut outcome = flight.outcome.lock();
            while outcome.is_none() {
                flight.landed.wait(&mut outcome);
            }
            return Joined::Waited(copy(outcome.as_ref().expect("checked above")));
        }
        // Lands the flight even if `work` panics, so no waiter hangs.
        let landing = Landing {
            flights: self,
            id,
            flight: &flight,
        };
        let result = work();
        landing.land(copy(&result));
        Joined::Led(result)
    }

    /// Whether a flight for `id` is in the air.
    pub fn is_running(&self, id: &str) -> bool {
        self.running.lock().contains_key(id)
    }

    /// How many flights are running (for tests of the map's size).
    #[cfg(test)]
    fn running(&self) -> usize {
        self.running.lock().len()
    }
}

fn copy<T: Clone>(result: &Result<T>) -> Result<T> {
    match result {
        Ok(value) => Ok(value.clone()),
        Err(e) => Err(e.clone()),
    }
}

struct Landing<'a, T> {
    flights: &'a Flights<T>,
    id: &'a str,
    flight: &'a Arc<Flight<T>>,
}

impl<T> Landing<'_, T> {
    fn land(self, outcome: Result<T>) {
        self.publish(outcome);
        std::mem::forget(self);
    }

    fn publish(&self, outcome: Result<T>) {
        // Removed before it is published: a caller arriving now starts a
        // new flight, which re-reads the store the leader just saved to.
        self.flights.running.lock().remove(self.id);
        *self.flight.outcome.lock() = Some(outcome);
        self.flight.landed.notify_all();
    }
}

impl<T> Drop for Landing<'_, T> {
    fn drop(&mut self) {
        self.publish(Err(Error::from(std::io::Error::other(
            "the refresh this call waited for was interrupted (the refreshing thread panicked); try again",
        ))));
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
}
