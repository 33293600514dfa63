//! The client's errors mapped to ours; its types never reach the public API.

use super::*;

/// Column `index` of `row`: an error, never a panic, when the tables were
/// altered behind the store's back.
pub(crate) fn col<'r, T: postgres::types::FromSql<'r>>(
    row: &'r postgres::Row,
    index: usize,
) -> Result<T> {
    row.try_get(index).map_err(|e| {
        Error::corruption(
            None,
            format!("column {index} of a tokenstore_ table has an unexpected type: {e}"),
        )
    })
}

/// Commits: a server's refusal means nothing landed, a broken connection
/// means the outcome is unknown.
pub(super) fn commit(tx: postgres::Transaction<'_>, what: &'static str) -> Result<()> {
    tx.commit().map_err(|e| pg_error(what, e, true))
}

pub(super) fn unavailable(what: &str, detail: String, maybe_committed: bool) -> Error {
    Error::Unavailable {
        what: what.to_owned(),
        detail,
        maybe_committed,
    }
}

/// Maps the client's errors to ours; its types never reach the public API.
pub(crate) fn map_pg(what: &'static str) -> impl Fn(postgres::Error) -> Error {
    move |e| pg_error(what, e, false)
}

/// As [`map_pg`], noting in `lost` when the error means that the connection
/// is gone (for the callers that run an attempt again on another).
pub(super) fn noting<'c>(
    what: &'static str,
    lost: &'c Cell<bool>,
) -> impl Fn(postgres::Error) -> Error + 'c {
    move |e| {
        if connection_gone(&e) {
            lost.set(true);
        }
        pg_error(what, e, false)
    }
}

/// Whether `e` means that the connection is gone: the client found it
/// closed or could not read or write it, or the server said it is ending
/// the session (a shutdown or restart, `pg_terminate_backend`, an idle
/// session time-out), which it does just before it closes it, so the client
/// may not have seen the close yet.
pub(super) fn connection_gone(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        Some(db) => going_away(db.code()),
        None => std::error::Error::source(e).is_some_and(|cause| cause.is::<std::io::Error>()),
    }
}

/// Codes of a server ending the session: the connection exceptions (class
/// 08) and the shutdowns and terminations of class 57.
fn going_away(code: &SqlState) -> bool {
    code.code().starts_with("08")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::IDLE_SESSION_TIMEOUT
}

pub(super) fn pg_error(what: &'static str, e: postgres::Error, committing: bool) -> Error {
    let Some(db) = e.as_db_error() else {
        // The connection broke, timed out or was closed: during a commit
        // the server may have committed before it went.
        return unavailable(what, with_causes(&e), committing);
    };
    let code = db.code();
    if *code == SqlState::QUERY_CANCELED {
        return unavailable(
            what,
            "the server cancelled the statement after the statement timeout \
             (PostgresOptions::statement_timeout); another process may hold a lock too long"
                .into(),
            false,
        );
    }
    if going_away(code) {
        return unavailable(what, db.message().to_owned(), committing);
    }
    Error::Database {
        code: code.code().to_owned(),
        detail: format!("{} while {what}", db.message()),
    }
}

/// `e` with its causes: the client's own message is only its kind ("error
/// connecting to server"), the reason ("Connection refused") is a cause.
pub(super) fn with_causes(e: &postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(current) = cause {
        let more = current.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = current.source();
    }
    text
}
