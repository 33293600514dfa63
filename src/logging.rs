//! What the store logs, and how: the one place holding the conventions of
//! every log record this crate emits.
//!
//! # Why `log`
//!
//! Records go through the [`log`] facade, which sled and ureq already speak:
//! an application routes this crate's records and theirs with the one
//! logger it installs (`env_logger`, `simple_logger`, `tracing`'s
//! `tracing-log` bridge, `pyo3-log` for the Python package), and a library
//! user who installs none pays one relaxed atomic load per record.
//! `tracing`'s spans would add little here: the events are few and
//! self-contained (a refresh, a login, a lock wait), each one line that
//! carries its own duration, and no request crosses threads that a span
//! would have to follow.
//!
//! # Targets
//!
//! | target | what |
//! |---|---|
//! | `tokenstore::oauth` | refreshes, logins, revokes, the refresh lock's wait |
//! | `tokenstore::store` | opening and closing a store, the directory lock's wait, the warm-up |
//! | `tokenstore::shared` | the shared embedded store: waiting for an owner, owner changes |
//! | `tokenstore::postgres` | PostgreSQL: writes run again after a serialization failure, a deadlock or a lost connection; reads run again on a lost connection |
//! | `tokenstore::mysql` | MySQL and MariaDB: writes run again after a deadlock, a lock wait time-out or a lost connection; reads run again on a lost connection |
//!
//! # What a record shows
//!
//! - A record by its **id** (`record 7`; an id that is not plain letters,
//!   digits, `.`, `_` or `-` is quoted, so no id can forge a line).
//! - The **accounts server** by its base URL (`https://accounts.zoho.eu`),
//!   which never carries credentials (`Config` refuses such URLs).
//! - A **user name** never in full, at any level: it is personal data, and
//!   logs are kept, shipped and read by more people than the store. It
//!   shows masked, its first character and its domain (`a***@example.com`;
//!   a name without `@` as `a***`), enough to tell two users apart in a
//!   log; `tokenstore show ID` gives the full name to whoever may read the
//!   store.
//! - **Never a secret**: no token, client secret, grant code, key, or
//!   anything that holds one (a request body, a record's bytes, a database
//!   URL's password). Errors are logged through their `Display`, which is
//!   secret-free by construction ([`Error`](crate::Error)).
//! - Durations in seconds with millisecond precision (`0.153 s`).
//!
//! # Dependencies' records
//!
//! Below some level, dependencies log what this crate never does: sled's
//! TRACE records print keys and values being written (a plain store's
//! records, secrets included), ureq's TRACE records are hex dumps of the
//! bytes sent and received (request bodies: refresh tokens, client secrets),
//! tokio-postgres's DEBUG records print every statement's parameters (the
//! stored records), and the mysql client's records are not read line by
//! line. [`ceiling`] is the most verbose level at which a
//! target's records are safe; the `tokenstore` command and the Python
//! package drop everything above it, whatever `RUST_LOG` or Python's
//! logging configuration asks for. An application installing its own logger
//! should do the same:
//!
//! ```
//! use log::LevelFilter;
//! use tokenstore::logging::ceiling;
//!
//! assert_eq!(ceiling("tokenstore::oauth"), LevelFilter::Trace);
//! assert_eq!(ceiling("ureq::run"), LevelFilter::Debug);
//! assert_eq!(ceiling("sled::tree"), LevelFilter::Info);
//! assert_eq!(ceiling("tokio_postgres::query"), LevelFilter::Info);
//! // In a logger's `enabled`:
//! let safe = |metadata: &log::Metadata| metadata.level() <= ceiling(metadata.target());
//! # let _ = safe;
//! ```

use std::fmt;
use std::time::Duration;

use log::LevelFilter;

/// Refreshes, logins, revokes, the refresh lock's wait.
#[cfg_attr(not(feature = "oauth"), allow(dead_code))]
pub(crate) const OAUTH: &str = "tokenstore::oauth";
/// Opening and closing, the directory lock's wait, the warm-up.
pub(crate) const STORE: &str = "tokenstore::store";
/// The shared embedded store: waiting for an owner, owner changes.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) const SHARED: &str = "tokenstore::shared";
/// PostgreSQL: writes run again, reads run again on a lost connection.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) const POSTGRES: &str = "tokenstore::postgres";
/// MySQL and MariaDB: writes run again, reads run again on a lost connection.
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
pub(crate) const MYSQL: &str = "tokenstore::mysql";

/// A wait for a lock longer than this is logged (INFO), so that an operator
/// sees who is holding things up; shorter waits are routine.
pub(crate) const LOCK_WAIT_NOTICE: Duration = Duration::from_millis(100);

/// The most verbose level at which records of `target` (a module path,
/// as [`log::Record::target`]) are free of secrets: `Trace` for this
/// crate's own records; `Debug` for ureq (its DEBUG records show the
/// method, host and headers of a request, never the path, query or body;
/// this crate's requests carry no secret in a header); `Info` for every
/// other crate (sled and tokio-postgres print stored data below it, and a
/// crate not read line by line is not trusted below it either).
///
/// ```
/// use log::LevelFilter;
/// assert_eq!(tokenstore::logging::ceiling("tokenstore"), LevelFilter::Trace);
/// assert_eq!(tokenstore::logging::ceiling("ureq_proto::util"), LevelFilter::Info);
/// assert_eq!(tokenstore::logging::ceiling("tokenstore_other"), LevelFilter::Info);
/// ```
pub fn ceiling(target: &str) -> LevelFilter {
    if within(target, "tokenstore") {
        LevelFilter::Trace
    } else if within(target, "ureq") {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    }
}

/// Whether `target` is the module `root` or one under it.
fn within(target: &str, root: &str) -> bool {
    target
        .strip_prefix(root)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

/// A record id as records show it: plain when it is letters, digits, `.`,
/// `_` and `-`, else quoted and escaped (an id is any string a caller gave).
#[cfg_attr(not(feature = "oauth"), allow(dead_code))]
pub(crate) struct Id<'a>(pub &'a str);

impl fmt::Display for Id<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.0.is_empty()
            && self
                .0
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if plain {
            f.write_str(self.0)
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

/// A user name as records show it: masked, `a***@example.com`.
#[cfg_attr(not(feature = "oauth"), allow(dead_code))]
pub(crate) struct User<'a>(pub &'a str);

impl fmt::Display for User<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.0.trim();
        let (local, domain) = match name.rsplit_once('@') {
            Some((local, domain)) => (local, Some(domain)),
            None => (name, None),
        };
        let first: String = local
            .chars()
            .next()
            .filter(|c| !c.is_control())
            .into_iter()
            .collect();
        write!(f, "{first}***")?;
        if let Some(domain) = domain {
            write!(f, "@{}", domain.escape_debug())?;
        }
        Ok(())
    }
}

/// A duration as records show it: seconds, to the millisecond.
pub(crate) struct Secs(pub Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3} s", self.0.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_forge_a_line_are_quoted() {
        assert_eq!(Id("17").to_string(), "17");
        assert_eq!(Id("ana.1_x-2").to_string(), "ana.1_x-2");
        assert_eq!(Id("a b").to_string(), "\"a b\"");
        assert_eq!(Id("1\nWARN fake").to_string(), "\"1\\nWARN fake\"");
        assert_eq!(Id("").to_string(), "\"\"");
    }

    #[test]
    fn user_names_are_masked() {
        assert_eq!(User("ana@example.com").to_string(), "a***@example.com");
        assert_eq!(User("ana").to_string(), "a***");
        assert_eq!(User("").to_string(), "***");
        assert_eq!(User("a@b@evil\n.com").to_string(), "a***@evil\\n.com");
    }

    #[test]
    fn dependencies_are_capped() {
        assert_eq!(ceiling("tokenstore::oauth"), LevelFilter::Trace);
        assert_eq!(ceiling("ureq"), LevelFilter::Debug);
        assert_eq!(ceiling("ureq::unversioned::transport"), LevelFilter::Debug);
        assert_eq!(ceiling("ureq_proto::util"), LevelFilter::Info);
        assert_eq!(ceiling("sled::tree"), LevelFilter::Info);
        assert_eq!(ceiling("tokio_postgres::query"), LevelFilter::Info);
        assert_eq!(ceiling("tokenstorex"), LevelFilter::Info);
    }

    #[test]
    fn durations_in_seconds() {
        assert_eq!(Secs(Duration::from_millis(1534)).to_string(), "1.534 s");
    }
}
