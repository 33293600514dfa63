//! Running an attempt again, alike in the server backends: the pause
//! between attempts of a transaction that a database server aborted (a
//! serialization failure, a deadlock, a lock wait), and the attempts that
//! found their pooled connection lost.
//!
//! Pools do not test a connection when they hand it out (that was a second
//! round trip on every lookup), so a connection may be one the server
//! closed while it sat idle: a restart closes them all, an idle time-out or
//! an administrator some. An attempt that finds its connection lost, before
//! anything could have been committed, discards it and runs again on
//! another: at once, as often as the pool may hold such connections, and
//! then once more on a new one (a read) or a few more times with the pause
//! (a write, which the server may be restarting under).

use std::time::Duration;

use crate::error::Error;

/// Attempts of a write that lost its connection before the commit, beyond
/// one per pooled connection; also the attempts of a MySQL write whose
/// lock wait timed out.
pub(crate) const LOST_ATTEMPTS: u32 = 3;

/// How an attempt on a pooled connection failed.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) error: Error,
    /// The connection was found lost (and discarded) before anything could
    /// have been committed: the attempt may run again on another.
    pub(crate) lost: bool,
}

impl From<Error> for Failed {
    /// A failure that running again would not mend.
    fn from(error: Error) -> Failed {
        Failed { error, lost: false }
    }
}

/// How many attempts a write may make that lose their connection before
/// the commit.
pub(crate) fn lost_attempts(pool_size: u32) -> u32 {
    pool_size + LOST_ATTEMPTS
}

/// Sleeps, as [`pause`], before attempt `attempt + 1` of a write that lost
/// its connection, unless the attempts so far may all have met a pooled
/// connection the server had closed: those run again at once.
pub(crate) fn pause_after_loss(attempt: u32, pool_size: u32) {
    if attempt > pool_size {
        pause(attempt);
    }
}

/// Runs `attempt` (which takes a pooled connection each time) until it
/// succeeds, fails otherwise than on a lost connection, or has lost its
/// connection once per pooled connection and once more on a new one. For
/// work that changes nothing, run again at once.
pub(crate) fn reading<T>(
    pool_size: u32,
    log_target: &str,
    what: &str,
    attempt: impl FnMut() -> Result<T, Failed>,
) -> Result<T, Error> {
    again(Work::Read, pool_size, log_target, what, attempt)
}

/// Runs `attempt` (a write that takes a pooled connection each time) until
/// it succeeds, fails otherwise than on a connection lost before the
/// commit, or has lost its connection [`lost_attempts`] times; again at
/// once while every attempt may have met a connection the server closed
/// while it was pooled, then after [`pause_after_loss`].
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn writing<T>(
    pool_size: u32,
    log_target: &str,
    what: &str,
    attempt: impl FnMut() -> Result<T, Failed>,
) -> Result<T, Error> {
    again(Work::Write, pool_size, log_target, what, attempt)
}

/// What [`again`] runs: its bound, its pause and its log lines.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Work {
    Read,
    Write,
}

/// The loop of [`reading`] and [`writing`].
fn again<T>(
    work: Work,
    pool_size: u32,
    log_target: &str,
    what: &str,
    mut attempt: impl FnMut() -> Result<T, Failed>,
) -> Result<T, Error> {
    let most = match work {
        Work::Read => pool_size + 1,
        Work::Write => lost_attempts(pool_size),
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = match attempt() {
            Ok(out) => return Ok(out),
            Err(Failed { error, lost: false }) => return Err(error),
            Err(Failed { error, lost: true }) => error,
        };
        if attempts >= most {
            if work == Work::Write {
                log::warn!(
                    target: log_target,
                    "{what}: gave up after {attempts} attempts, the last ended in a lost connection"
                );
            }
            return Err(error);
        }
        match work {
            Work::Read => log::info!(
                target: log_target,
                "{what}: attempt {attempts} found its connection lost; running it again on another"
            ),
            Work::Write => {
                log::info!(
                    target: log_target,
                    "{what}: attempt {attempts} ended in a lost connection; running it again"
                );
                pause_after_loss(attempts, pool_size);
            }
        }
    }
}

/// Sleeps before attempt `attempt + 1`: nothing for the first two retries
/// (most conflicts clear at once), then a jittered pause whose ceiling
/// doubles up to ~12.8 ms, so that processes that collided do not collide
/// again in step.
pub(crate) fn pause(attempt: u32) {
    if attempt <= 2 {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let jitter = u64::from(now.subsec_nanos() % 97) + u64::from(std::process::id() % 89);
    let ceiling = 50u64 << attempt.min(8);
    std::thread::sleep(Duration::from_micros(jitter * ceiling / 186));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn lost() -> Failed {
        Failed {
            error: Error::Unavailable {
                what: "test".into(),
                detail: "connection closed".into(),
                maybe_committed: false,
            },
            lost: true,
        }
    }

    #[test]
    fn a_read_runs_again_once_per_pooled_connection_and_once_more() {
        let tries = Cell::new(0);
        let out = reading(3, "test", "test", || {
            tries.set(tries.get() + 1);
            Err::<(), _>(lost())
        });
        assert!(out.is_err());
        assert_eq!(tries.get(), 4);
        tries.set(0);
        let out = reading(3, "test", "test", || {
            tries.set(tries.get() + 1);
            if tries.get() < 4 {
                Err(lost())
            } else {
                Ok(7)
            }
        });
        assert_eq!(out.unwrap(), 7);
    }

    #[test]
    fn a_write_runs_again_up_to_its_bound() {
        let tries = Cell::new(0);
        let out = writing(2, "test", "test", || {
            tries.set(tries.get() + 1);
            Err::<(), _>(lost())
        });
        assert!(out.is_err());
        assert_eq!(tries.get(), lost_attempts(2));
    }

    #[test]
    fn other_failures_never_run_again() {
        let tries = Cell::new(0);
        let out = reading(2, "test", "test", || {
            tries.set(tries.get() + 1);
            Err::<(), _>(Failed::from(Error::invalid("no")))
        });
        assert!(out.is_err());
        assert_eq!(tries.get(), 1);
        tries.set(0);
        let out = writing(2, "test", "test", || {
            tries.set(tries.get() + 1);
            Err::<(), _>(Failed::from(Error::invalid("no")))
        });
        assert!(matches!(out, Err(Error::InvalidToken { .. })));
        assert_eq!(tries.get(), 1);
    }
}
