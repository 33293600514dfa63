//! The log records of the refresh path (target `tokenstore::oauth`; the
//! conventions are [`crate::logging`]'s): one per refresh, login and
//! revoke, naming the record, the accounts server, the time it took and
//! the outcome, and one per long wait for a record's refresh lock.

use std::time::{Duration, Instant};

use log::Level;

use crate::error::{Error, Result};
use crate::logging::{Id, Secs, User, LOCK_WAIT_NOTICE, OAUTH};
use crate::store::{RefreshLock, TokenStore};
use crate::token::OAuthToken;

/// What went wrong, in the words of an operator's dashboard.
fn failure(error: &Error) -> &'static str {
    match error {
        Error::GrantRefused { .. } | Error::InvalidClient { .. } => "refused",
        Error::RateLimited { .. } => "rate limited",
        Error::Network { .. } => "unreachable",
        Error::MalformedResponse { .. } => "answered nonsense",
        Error::NotRefreshable { .. } => "not refreshable",
        Error::NotFound { .. } => "record gone",
        _ => "failed",
    }
}

/// A refresh the leader of a flight made (or found unneeded): DEBUG when it
/// worked, WARN when it failed. `asked` is whether a request was sent.
/// `accounts` is `None` when no request was prepared.
pub(super) fn refreshed<T>(
    id: &str,
    accounts: Option<&str>,
    elapsed: Duration,
    outcome: &Result<(T, bool)>,
) {
    let at = accounts.map(|a| format!(" at {a}")).unwrap_or_default();
    match outcome {
        Ok((_, true)) => log::debug!(
            target: OAUTH,
            "refresh of record {}{at}: refreshed in {}",
            Id(id),
            Secs(elapsed)
        ),
        Ok((_, false)) => log::debug!(
            target: OAUTH,
            "refresh of record {}: not needed (another caller or process refreshed it), {}",
            Id(id),
            Secs(elapsed)
        ),
        Err(e) => log::warn!(
            target: OAUTH,
            "refresh of record {}{at}: {} after {}: {e}",
            Id(id),
            failure(e),
            Secs(elapsed)
        ),
    }
}

/// A login (a grant code exchanged and saved): INFO, WARN when it failed.
pub(super) fn logged_in(
    user: &str,
    accounts: &str,
    elapsed: Duration,
    outcome: &Result<OAuthToken>,
) {
    match outcome {
        Ok(record) => log::info!(
            target: OAUTH,
            "login of {} at {accounts}: saved as record {} in {}",
            User(user),
            Id(record.id.as_deref().unwrap_or_default()),
            Secs(elapsed)
        ),
        Err(e) => log::warn!(
            target: OAUTH,
            "login of {} at {accounts}: {} after {}: {e}",
            User(user),
            failure(e),
            Secs(elapsed)
        ),
    }
}

/// A revoke: INFO, WARN when it failed. `accounts` is `None` when the
/// record had no refresh token (nothing was sent).
pub(super) fn revoked(id: &str, accounts: Option<&str>, elapsed: Duration, outcome: &Result<bool>) {
    let at = accounts.map(|a| format!(" at {a}")).unwrap_or_default();
    match outcome {
        Ok(true) => log::info!(
            target: OAUTH,
            "revoke of record {}{at}: revoked and deleted in {}",
            Id(id),
            Secs(elapsed)
        ),
        Ok(false) => log::info!(
            target: OAUTH,
            "revoke of record {}: it had no refresh token; deleted",
            Id(id)
        ),
        Err(e) => log::warn!(
            target: OAUTH,
            "revoke of record {}{at}: {} after {}: {e}; the record is kept",
            Id(id),
            failure(e),
            Secs(elapsed)
        ),
    }
}

/// Takes the store's refresh lock of `id`, logging a wait longer than
/// [`LOCK_WAIT_NOTICE`]: INFO when the lock came, WARN when the wait ended
/// in an error.
pub(super) fn refresh_lock<'s>(
    store: &'s (dyn TokenStore + Send + Sync),
    id: &str,
) -> Result<RefreshLock<'s>> {
    let started = Instant::now();
    let lock = store.refresh_lock(id);
    let waited = started.elapsed();
    if waited > LOCK_WAIT_NOTICE {
        let (level, outcome) = match &lock {
            Ok(_) => (Level::Info, "took it".to_owned()),
            Err(e) => (Level::Warn, format!("gave up: {e}")),
        };
        log::log!(
            target: OAUTH,
            level,
            "record {}: waited {} for its refresh lock (another thread or process held it); {outcome}",
            Id(id),
            Secs(waited)
        );
    }
    lock
}
