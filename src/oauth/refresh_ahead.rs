//! Refresh ahead: a token still valid past the margin but inside the
//! ahead window is refreshed once in a background thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::refresher::Joined;
use super::OAuthClient;

/// After a background refresh failed, how long a record is left alone by
/// refresh-ahead (callers still refresh in the foreground once it is due):
/// never retry in a loop, least of all when rate limited.
const BACKGROUND_BACKOFF: Duration = Duration::from_secs(60);

impl OAuthClient {
    /// Starts a background refresh of `id` unless one is in the air or the
    /// last one failed less than [`BACKGROUND_BACKOFF`] ago.
    pub(super) fn refresh_behind(&self, id: &str, ahead_ms: i64) {
        if self.flights.is_running(id) {
            return;
        }
        {
            let mut backoff = self.backoff.lock();
            if backoff
                .get(id)
                .is_some_and(|failed| failed.elapsed() < BACKGROUND_BACKOFF)
            {
                return;
            }
            backoff.remove(id);
        }
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
                let outcome = match behind
                    .flights
                    .run(&id, || behind.refresh_record(&id, ahead_ms, false))
                {
                    Joined::Led(outcome) | Joined::Waited(outcome) => outcome,
                };
                if outcome.is_err() {
                    behind.backoff.lock().insert(id, Instant::now());
                }
            });
        // No thread to spare: the foreground refresh will do it when due.
        drop(spawned);
    }
}
