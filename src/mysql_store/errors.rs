//! The client's errors mapped to ours, and what a failed attempt means for
//! retrying it; the client's types never reach the public API.

use mysql::{DriverError, Error as MyError};

use super::*;

/// MySQL's error numbers that change what the store does.
pub(super) const DUPLICATE_KEY: u16 = 1062;
pub(super) const LOCK_WAIT_TIMEOUT: u16 = 1205;
pub(super) const DEADLOCK: u16 = 1213;

/// What a failed attempt at a transaction allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// The server rolled the transaction back to break a deadlock.
    Deadlock,
    /// A lock wait timed out (only the statement was rolled back; the store
    /// rolls back the rest).
    LockWait,
    /// The connection broke before the commit: nothing landed.
    Lost,
    /// Anything else: not retried.
    Other,
}

impl Failure {
    /// How a log record names it.
    pub(super) fn describe(self) -> &'static str {
        match self {
            Failure::Deadlock => "a deadlock",
            Failure::LockWait => "a lock wait time-out",
            Failure::Lost => "a lost connection",
            Failure::Other => "an error",
        }
    }
}

pub(super) fn failure(e: &MyError) -> Failure {
    match e {
        MyError::MySqlError(e) if e.code == DEADLOCK => Failure::Deadlock,
        MyError::MySqlError(e) if e.code == LOCK_WAIT_TIMEOUT => Failure::LockWait,
        MyError::MySqlError(e) if going_away(e.code) => Failure::Lost,
        MyError::IoError(_) | MyError::CodecError(_) => Failure::Lost,
        MyError::DriverError(DriverError::ConnectTimeout | DriverError::CouldNotConnect(_)) => {
            Failure::Lost
        }
        _ => Failure::Other,
    }
}

/// Server errors that mean the connection is going away (shutdown, killed,
/// server gone, lost during a query, read or write time-out).
fn going_away(code: u16) -> bool {
    matches!(
        code,
        1053 | 1077 | 1078 | 1079 | 1080 | 1152 | 1158..=1161 | 1927 | 2006 | 2013 | 4031
    )
}

pub(super) fn unavailable(what: &str, detail: String, maybe_committed: bool) -> Error {
    Error::Unavailable {
        what: what.to_owned(),
        detail,
        maybe_committed,
    }
}

/// Maps the client's errors to ours.
pub(super) fn map_my(what: &'static str) -> impl Fn(MyError) -> Error {
    move |e| my_error(what, e, false)
}

/// Maps the client's errors to ours, noting in `failed` what the failure
/// allows (for the write loop's retries).
pub(super) fn noting<'c>(
    what: &'static str,
    failed: &'c Cell<Option<Failure>>,
) -> impl Fn(MyError) -> Error + 'c {
    move |e| {
        failed.set(Some(failure(&e)));
        my_error(what, e, false)
    }
}

/// `committing`: the error came from COMMIT, where a broken connection
/// leaves the outcome unknown.
pub(super) fn my_error(what: &'static str, e: MyError, committing: bool) -> Error {
    match &e {
        MyError::MySqlError(server) => match server.code {
            LOCK_WAIT_TIMEOUT => unavailable(
                what,
                "a lock wait timed out (MySQL error 1205, MysqlOptions::lock_timeout): another \
                 process holds the store's write lock too long"
                    .into(),
                false,
            ),
            // The server's message quotes the duplicated value: never shown.
            DUPLICATE_KEY => Error::Database {
                code: server.state.clone(),
                detail: format!(
                    "a duplicate value for key {} (MySQL error 1062) while {what}",
                    duplicated_key(&server.message)
                ),
            },
            code if going_away(code) => unavailable(
                what,
                format!("{} (MySQL error {code})", server.message),
                committing,
            ),
            code => Error::Database {
                code: server.state.clone(),
                detail: format!("{} (MySQL error {code}) while {what}", server.message),
            },
        },
        MyError::DriverError(DriverError::Timeout) => unavailable(
            what,
            "no pooled connection became free within MysqlOptions::pool_wait".into(),
            false,
        ),
        _ => match tls_failure(&e) {
            Some(reason) => unavailable(what, format!("TLS: {reason}"), false),
            None => unavailable(what, e.to_string(), committing),
        },
    }
}

/// Why TLS failed, when it did: the server offers none where `ssl-mode`
/// asks for it, the handshake failed, or rustls refused the server's
/// certificate (reported through an I/O error). `None` for any other error.
pub(super) fn tls_failure(e: &MyError) -> Option<String> {
    match e {
        MyError::DriverError(DriverError::TlsNotSupported) => Some(
            "the server does not offer TLS, which ssl-mode asks for (set up TLS on the server, \
             or use ssl-mode=PREFERRED or DISABLED)"
                .into(),
        ),
        MyError::TlsError(tls) => Some(format!("the handshake failed: {tls}")),
        _ => {
            let text = e.to_string();
            let at = text.find("invalid peer certificate")?;
            Some(format!(
                "the server's certificate was refused ({})",
                text[at..].trim_end_matches(['\'', ' ', '}', '`'])
            ))
        }
    }
}

/// The key a 1062 message names (`for key 'tokenstore_unique_user_name'`,
/// MySQL 8 prefixing the table), without the duplicated value.
fn duplicated_key(message: &str) -> String {
    message
        .rsplit_once("for key ")
        .map(|(_, key)| key.trim_matches(|c| c == '\'' || c == '`').to_owned())
        .unwrap_or_else(|| "(unnamed)".into())
}

/// The field whose unique key `e` reports violated, if it is one.
pub(super) fn unique_violation(e: &Error) -> Option<IndexedField> {
    match e {
        Error::Database { detail, .. } if detail.contains("(MySQL error 1062)") => {
            IndexedField::ALL
                .into_iter()
                .find(|field| detail.contains(&format!("tokenstore_unique_{}", field.name())))
        }
        _ => None,
    }
}
