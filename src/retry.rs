//! The pause between attempts of a transaction that a database server
//! aborted (a serialization failure, a deadlock, a lock wait): shared by the
//! server backends so that they back off alike.

use std::time::Duration;

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
