//! Refresh ahead: a token still valid past the margin but inside the
//! ahead window is refreshed once in a background thread.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::OAuthClient;

/// After a background refresh failed, how long a record is left alone by
/// refresh-ahead (callers still refresh in the foreground once it is due):
/// never retry in a loop, least of all when rate limited.
const BACKGROUND_BACKOFF: Duration = Duration::from_secs(60);

impl OAuthClient {
    /// Starts a background refresh of `id` unless one is in the air or the
    /// last one failed less than [`BACKGROUND_BACKOFF`] ago.
    ///
    /// The flight is claimed here, before the thread is spawned: every call
    /// that comes while the thread starts or runs joins it or returns, so a
    /// record gets one thread however many callers are in the window.
    pub(super) fn refresh_behind(&self, id: &str, ahead_ms: i64) {
        let landing = {
            // Checked and claimed under the backoff lock, under which a
            // failed flight notes its failure before it lands: a caller finds
            // a failed record still in the air or backed off, never free.
            let mut backoff = self.backoff.lock();
            if backing_off(&mut backoff, id) {
                return;
            }
            match self.flights.claim(id) {
                Some(landing) => landing,
                None => return,
            }
        };
        let behind = OAuthClient {
            store: Arc::clone(&self.store),
            config: self.config.clone(),
            agent: self.agent.clone(),
            flights: Arc::clone(&self.flights),
            backoff: Arc::clone(&self.backoff),
        };
        let id = id.to_owned();
        let spawned = std::thread::Builder::new()
            .name("tokenstore-refresh-ahead".into())
            .spawn(move || {
                // The outcome is for whoever joined; a failure is noted.
                let _ = landing.fly(|| {
                    let outcome = behind.refresh_record(&id, ahead_ms, false);
                    if outcome.is_err() {
                        note_failure(&mut behind.backoff.lock(), &id, Instant::now());
                    }
                    outcome
                });
            });
        // No thread to spare: the flight landed as the closure was dropped
        // (whoever joined it gets an error), and the foreground refresh will
        // do it when due.
        drop(spawned);
    }
}

/// Whether the background refresh of `id` failed less than
/// [`BACKGROUND_BACKOFF`] ago; an older failure is forgotten.
fn backing_off(backoff: &mut HashMap<String, Instant>, id: &str) -> bool {
    match backoff.get(id) {
        Some(failed) if failed.elapsed() < BACKGROUND_BACKOFF => true,
        Some(_) => {
            backoff.remove(id);
            false
        }
        None => false,
    }
}

/// Notes that the background refresh of `id` failed at `now`, and forgets
/// every failure older than [`BACKGROUND_BACKOFF`], so the map holds at most
/// the records that failed within the last backoff period. (The walk comes
/// after a request to the accounts server, which costs far more.)
fn note_failure(backoff: &mut HashMap<String, Instant>, id: &str, now: Instant) {
    backoff.retain(|_, failed| now.duration_since(*failed) < BACKGROUND_BACKOFF);
    backoff.insert(id.to_owned(), now);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    use parking_lot::{Condvar, Mutex};

    use super::*;
    use crate::error::{Error, Result};
    use crate::oauth::Config;
    use crate::token::{now_ms, OAuthToken};
    use crate::{MemoryStore, TokenStore};

    /// A store whose refresh lock holds every caller until the gate opens,
    /// then fails: the background refresh stays in the air as long as the
    /// test needs, and never reaches the network.
    #[derive(Default)]
    struct Gated {
        inner: MemoryStore,
        open: Mutex<bool>,
        opened: Condvar,
        entered: AtomicUsize,
    }

    impl Gated {
        fn open(&self) {
            *self.open.lock() = true;
            self.opened.notify_all();
        }
    }

    impl TokenStore for Gated {
        fn find_token(&self, query: &OAuthToken) -> Result<Option<OAuthToken>> {
            self.inner.find_token(query)
        }
        fn save_token(&self, token: &mut OAuthToken) -> Result<()> {
            self.inner.save_token(token)
        }
        fn delete_token(&self, id: &str) -> Result<bool> {
            self.inner.delete_token(id)
        }
        fn get_tokens(&self) -> Result<Vec<OAuthToken>> {
            self.inner.get_tokens()
        }
        fn delete_tokens(&self) -> Result<usize> {
            self.inner.delete_tokens()
        }
        fn find_token_by_id(&self, id: &str) -> Result<Option<OAuthToken>> {
            self.inner.find_token_by_id(id)
        }
        fn refresh_lock(&self, _id: &str) -> Result<crate::RefreshLock<'_>> {
            self.entered.fetch_add(1, Ordering::SeqCst);
            let mut open = self.open.lock();
            while !*open {
                self.opened.wait(&mut open);
            }
            Err(Error::invalid("the test's store refuses every refresh"))
        }
    }

    /// Opens the gate when the test ends, passed or failed, so that no
    /// thread is left waiting at it.
    struct OpenAtEnd<'a>(&'a Gated);

    impl Drop for OpenAtEnd<'_> {
        fn drop(&mut self) {
            self.0.open();
        }
    }

    /// A client over `store` refreshing ahead within two minutes; its
    /// accounts server is never reached (the store refuses first).
    fn client(store: &Arc<Gated>) -> OAuthClient {
        let config = Config::default()
            .accounts_url("http://127.0.0.1:9")
            .refresh_ahead(Duration::from_secs(120));
        OAuthClient::with_config(Arc::clone(store) as _, config).unwrap()
    }

    /// A record valid for a minute: past the margin, inside the window.
    fn in_the_window(store: &Gated, user: &str) -> String {
        let mut token = OAuthToken::new()
            .with_user_name(user)
            .with_access_token(format!("1000.access-{user}"))
            .with_expiry_time(now_ms() + 60_000);
        store.save_token(&mut token).unwrap();
        token.id.unwrap()
    }

    /// Background threads alive (or about to start): each holds a clone of
    /// the client's backoff map, as the client does.
    fn background_threads(client: &OAuthClient) -> usize {
        Arc::strong_count(&client.backoff) - 1
    }

    /// Polls `done`; the deadline only turns a hang into a failure.
    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "waited in vain for {what}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn calls_in_the_window_start_one_background_thread_per_record() {
        let store = Arc::new(Gated::default());
        let ids = [in_the_window(&store, "ana"), in_the_window(&store, "bob")];
        let client = client(&store);
        let _open_at_end = OpenAtEnd(&store);
        let barrier = Barrier::new(4);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    barrier.wait();
                    for i in 0..50 {
                        let id = &ids[i % 2];
                        assert_eq!(client.access_token_by_id(id).unwrap().id(), id);
                    }
                });
            }
        });
        // The gate is shut: no background refresh has ended, so every
        // thread started is still counted.
        assert_eq!(background_threads(&client), 2, "one per record");
        store.open();
        wait_until("the background threads to end", || {
            background_threads(&client) == 0
        });
        assert_eq!(store.entered.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_backoff_map_forgets_failures_older_than_the_backoff() {
        let store = Arc::new(Gated::default());
        store.open();
        let id = in_the_window(&store, "ana");
        let client = client(&store);
        let stale = Instant::now()
            .checked_sub(BACKGROUND_BACKOFF * 2)
            .expect("the monotonic clock has run for two minutes");
        {
            let mut backoff = client.backoff.lock();
            for n in 0..1000 {
                backoff.insert(format!("gone-{n}"), stale);
            }
            backoff.insert("recent".to_owned(), Instant::now());
        }
        client.access_token_by_id(&id).unwrap();
        wait_until("the failure to be noted", || {
            client.backoff.lock().contains_key(&id)
        });
        let backoff = client.backoff.lock();
        assert_eq!(backoff.len(), 2, "only the new failure and the recent one");
        assert!(backoff.contains_key("recent"));
        drop(backoff);
        wait_until("the background thread to end", || {
            background_threads(&client) == 0
        });
    }
}
