//! The one error type of the crate.
//!
//! Every variant can be matched by callers, and no variant ever carries a
//! secret: conflicts name the field and the id holding the value, corruption
//! names the record id, never the token values involved.

use std::path::PathBuf;
use std::sync::Arc;

use crate::token::IndexedField;

/// The result type of every fallible operation in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a token store.
///
/// Neither `Display` nor `Debug` of an `Error` ever contains a secret.
/// Messages name the library's own remedies; front ends (the command, the
/// Python package) add theirs, by [`Error::kind`] or variant.
///
/// ```
/// use tokenstore::{Error, MemoryStore, OAuthToken, TokenStore};
///
/// let store = MemoryStore::new();
/// // A token without any of access, refresh or grant token is refused.
/// let mut token = OAuthToken::new().with_user_name("ana@example.com");
/// match store.save_token(&mut token) {
///     Err(Error::InvalidToken { reason }) => assert!(reason.contains("access_token")),
///     other => panic!("expected InvalidToken, got {other:?}"),
/// }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The token passed to `save_token` cannot be stored as it is.
    #[error("invalid token: {reason}")]
    InvalidToken {
        /// Why the token was refused.
        reason: String,
    },

    /// The save would give a unique value (a user name, or an access, refresh
    /// or grant token) to a second record. Nothing was written.
    #[error(
        "conflict: the {field} of this token is already held by record {id:?}; \
         save with id {id:?} to update that record, or delete it first"
    )]
    Conflict {
        /// The unique field whose value is taken.
        field: IndexedField,
        /// The id of the record that already holds the value.
        id: String,
    },

    /// Stored bytes could not be decoded or contradict each other.
    #[error("corruption{}: {detail}; run the store's check (Backend::check) to list every problem, restore from a backup if it persists", match id { Some(id) => format!(" in record {id:?}"), None => String::new() })]
    Corruption {
        /// The id of the damaged record, when one is concerned.
        id: Option<String>,
        /// What is wrong (never a secret value).
        detail: String,
    },

    /// The database is open in another process or through another handle.
    #[error(
        "the token store at {} is locked by another process or handle, and one of the two \
         opened it for itself alone (SledStore::open, or OpenOptions::exclusive); close the \
         other first, or open both with tokenstore::open, which shares an embedded store \
         between the local processes of one user (for several machines, use a postgres:// \
         URL)",
        path.display()
    )]
    Locked {
        /// The database directory.
        path: PathBuf,
    },

    /// The database was written by a format version this build cannot read.
    #[error(
        "unsupported on-disk format version {found} (this build reads versions 1 to {supported}); \
         open it with the tokenstore version that wrote it"
    )]
    UnsupportedVersion {
        /// The version found on disk.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },

    /// The store is encrypted and the key given is not its key. Nothing was
    /// decrypted.
    #[error(
        "wrong key for the encrypted token store at {}: it was encrypted with another key; give the key it was created or last rekeyed with",
        path.display()
    )]
    WrongKey {
        /// The database directory (for a PostgreSQL store, its URL without
        /// the password).
        path: PathBuf,
    },

    /// The store is encrypted and was opened without a key.
    #[error(
        "the token store at {} is encrypted; open it with its key (OpenOptions::encryption or SledOptions::encryption)",
        path.display()
    )]
    KeyRequired {
        /// The database directory (for a PostgreSQL store, its URL without
        /// the password).
        path: PathBuf,
    },

    /// A key was given for a store that is not encrypted.
    #[error(
        "the token store at {} is not encrypted; open it without a key, or encrypt it first (Backend::set_encryption)",
        path.display()
    )]
    NotEncrypted {
        /// The database directory (for a PostgreSQL store, its URL without
        /// the password).
        path: PathBuf,
    },

    /// The encrypted store has sealed as many records as one key safely can
    /// (2^32: AES-GCM's random nonces would risk repeating). Reads still
    /// work; writes need the key changed first.
    #[error(
        "the token store at {} has sealed 2^32 records with its current key, the most one key \
         safely seals; change the key (Backend::set_encryption) to write again",
        path.display()
    )]
    RekeyRequired {
        /// The database directory.
        path: PathBuf,
    },

    /// A key could not be read or has the wrong form (the message never
    /// holds key material).
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// Why the key was refused.
        reason: String,
    },

    /// The database server of a shared store (PostgreSQL), or the process
    /// that owns a shared embedded store, cannot be reached, or the
    /// connection to it broke, or it did not answer in time.
    ///
    /// Unless `maybe_committed` is true nothing was written. When it is true
    /// the connection broke while the server was committing: the write may
    /// or may not have landed, so read the record back before repeating it.
    /// The store reconnects by itself on the next call.
    #[error(
        "the token store is unavailable while {what}: {detail}; {}",
        if *maybe_committed {
            "the connection broke during the commit, so the write may or may not have landed: \
             read the record back before repeating it"
        } else {
            "nothing was written; check that the database server (or the process that owns a \
             shared embedded store) is running and reachable (the next call tries again)"
        }
    )]
    Unavailable {
        /// What the store was doing.
        what: String,
        /// What went wrong (never a secret: no password, no token value).
        detail: String,
        /// True when the connection broke during a commit.
        maybe_committed: bool,
    },

    /// The database server of a shared store refused an operation for a
    /// reason other than being unavailable (for example missing privileges).
    /// Nothing was written.
    #[error(
        "the database server refused the operation (SQLSTATE {code}): {detail}; \
         check the database user's privileges and the server's log"
    )]
    Database {
        /// The SQLSTATE error code.
        code: String,
        /// The server's message (never holds a token value).
        detail: String,
    },

    /// A TLS connection to a database server could not be made as the
    /// connection string asks: the server's certificate is not signed by
    /// a trusted CA or does not name the host, the server has no TLS where
    /// it is required, it refused the client certificate, or it accepts
    /// only TLS where none was asked for. Nothing was written; trying again
    /// does not help until the server or the connection string changes.
    #[error("TLS to the database server {target} failed: {reason}")]
    Tls {
        /// The server, as a URL without its password.
        target: String,
        /// What failed and what to change (one line, never a secret).
        reason: String,
    },

    /// The store named does not exist, and opening was asked not to create
    /// it ([`OpenOptions::create`](crate::OpenOptions::create)`(false)`).
    #[error("no token store at {location}; check the path or URL (nothing was created)")]
    StoreNotFound {
        /// The store as named (a directory, or a URL without its password).
        location: String,
    },

    /// A database URL (`postgres://…`) that cannot be used. The message
    /// never repeats a password.
    #[error("invalid database URL: {reason}")]
    InvalidUrl {
        /// Why the URL was refused.
        reason: String,
    },

    /// A store string of the form `scheme://…` that this build cannot open:
    /// a scheme tokenstore does not know (`sqlite://`, `postgress://`), or
    /// one this build was compiled without (its cargo feature is named).
    /// Nothing was created: such a string is never taken for a directory.
    #[error("cannot open {location}: {}; this build opens {known}", scheme_problem(.scheme, *.feature))]
    UnknownScheme {
        /// The store string as given, without its password.
        location: String,
        /// The scheme, as written (without `://`).
        scheme: String,
        /// The cargo feature that would open it, when tokenstore knows the
        /// scheme but this build lacks it.
        feature: Option<&'static str>,
        /// What this build opens, e.g. `a directory path, memory:, postgres://`.
        known: String,
    },

    /// The store's backend cannot do what was asked (changing a key in place
    /// on a server database, encrypting a memory store, a backend this build
    /// lacks). Nothing was changed.
    #[error("{operation} is not supported by {backend}; {instead}")]
    Unsupported {
        /// What was asked.
        operation: String,
        /// The backend (or build) that cannot do it.
        backend: &'static str,
        /// What to do instead.
        instead: String,
    },

    /// No record matches what an access token was asked for (a user name,
    /// an id, or a query). Nothing was sent to the accounts server.
    #[error("no token record for {what}; log the user in first (OAuthClient::login)")]
    NotFound {
        /// What was looked for, e.g. `user "ana@example.com"` or `id "3"`
        /// (never a token value).
        what: String,
    },

    /// The record cannot be refreshed: it lacks the refresh token or the
    /// client credentials the refresh needs. The store is unchanged.
    #[error(
        "record {id:?} has no {missing}, so its access token cannot be refreshed; \
         log the user in again (OAuthClient::login)"
    )]
    NotRefreshable {
        /// The record's id.
        id: String,
        /// The missing field: `refresh_token`, `client_id` or `client_secret`.
        missing: &'static str,
    },

    /// The accounts server refused the grant code or the refresh token
    /// (`invalid_code`): it expired, was revoked or was already used. Only a
    /// new login helps. The store is unchanged.
    #[error(
        "the accounts server refused the {credential} ({code}): it expired, was revoked \
         or was already used; log the user in again with a new grant code \
         (OAuthClient::login)"
    )]
    GrantRefused {
        /// `grant code` or `refresh token`.
        credential: &'static str,
        /// The server's error code, e.g. `invalid_code`.
        code: String,
    },

    /// The accounts server does not know this client id and secret
    /// (`invalid_client`). The store is unchanged.
    #[error(
        "the accounts server refused the client credentials (invalid_client); check the \
         client id and secret in the Zoho API console, and that the accounts server \
         ({accounts}) is the data center the client was registered in"
    )]
    InvalidClient {
        /// The accounts server's base URL (no secret, no query string).
        accounts: String,
    },

    /// The accounts server limits token requests (Zoho allows about 10 per
    /// refresh token per 10 minutes, then answers `Access Denied` for the
    /// rest of the window). The store is unchanged; retrying at once makes
    /// it worse.
    #[error(
        "the accounts server ({accounts}) is rate limiting token requests ({detail}); \
         try again in a few minutes, do not retry in a loop"
    )]
    RateLimited {
        /// The accounts server's base URL.
        accounts: String,
        /// What the server said: its error code or HTTP status.
        detail: String,
    },

    /// The accounts server could not be reached or did not answer in time.
    /// The store is unchanged.
    #[error(
        "could not reach the accounts server {accounts}: {reason}; check the network and \
         the accounts URL (or data center), then try again"
    )]
    Network {
        /// The accounts server's base URL.
        accounts: String,
        /// What failed (connection refused, timed out after N s, ...).
        reason: String,
    },

    /// The accounts server answered something that is not a token response
    /// (not JSON, no `access_token`, an unknown error code). The store is
    /// unchanged.
    #[error(
        "the answer of the accounts server {accounts} is not a usable token response \
         ({reason}); check that the accounts URL points to a Zoho accounts server"
    )]
    MalformedResponse {
        /// The accounts server's base URL.
        accounts: String,
        /// What is wrong with it (never the answer's content).
        reason: String,
    },

    /// An accounts URL that cannot be used: not `http(s)://host[:port][/path]`,
    /// or carrying credentials or a query string.
    #[error("invalid accounts URL: {reason}; give a base URL such as https://accounts.zoho.com")]
    InvalidAccountsUrl {
        /// What is wrong with it.
        reason: String,
    },

    /// A thread of the store panicked while it applied a write on behalf of
    /// this call (a bug: please report it). The write may or may not have
    /// been applied; read the record back before repeating it. The store
    /// stays usable.
    #[error(
        "a thread of the token store panicked while {what}; the write may or may not have \
         been applied: read the record back before repeating it"
    )]
    Panicked {
        /// What the thread was doing.
        what: String,
    },

    /// An I/O error from the file system or the storage engine (shared, so
    /// that an error can be handed to every caller a failed write concerned).
    #[error("I/O error: {0}")]
    Io(Arc<std::io::Error>),
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(Arc::new(e))
    }
}

/// The family of an [`Error`]: what the command's exit codes and the Python
/// exception classes follow, so that a new variant is placed once, here.
///
/// ```
/// use tokenstore::{Error, ErrorKind};
///
/// let err = Error::from(std::io::Error::other("disk on fire"));
/// assert_eq!(err.kind(), ErrorKind::Storage);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A token that cannot be stored as it is ([`Error::InvalidToken`]).
    InvalidToken,
    /// A unique value held by another record ([`Error::Conflict`]).
    Conflict,
    /// Damaged or contradictory stored data ([`Error::Corruption`]).
    Corruption,
    /// The store is open in another process ([`Error::Locked`]).
    Locked,
    /// Written by a format version this build cannot read
    /// ([`Error::UnsupportedVersion`]).
    UnsupportedVersion,
    /// A missing, wrong or unusable key, or one that must be changed
    /// ([`Error::WrongKey`], [`Error::KeyRequired`], [`Error::NotEncrypted`],
    /// [`Error::RekeyRequired`], [`Error::InvalidKey`]).
    Key,
    /// A store string or URL that cannot be used, or names no store
    /// ([`Error::InvalidUrl`], [`Error::StoreNotFound`], [`Error::UnknownScheme`]).
    InvalidLocation,
    /// The storage failed: the file system, the engine, a database server
    /// that is down or refused, TLS to it failed, a panicked writer
    /// ([`Error::Io`], [`Error::Unavailable`], [`Error::Database`],
    /// [`Error::Tls`], [`Error::Panicked`]).
    Storage,
    /// The backend or build cannot do what was asked ([`Error::Unsupported`]).
    Unsupported,
    /// No record for what was asked ([`Error::NotFound`]).
    NotFound,
    /// The record lacks what a refresh needs ([`Error::NotRefreshable`]).
    NotRefreshable,
    /// The accounts server refused the grant code or refresh token
    /// ([`Error::GrantRefused`]).
    GrantRefused,
    /// Any other failure talking to the accounts server
    /// ([`Error::InvalidClient`], [`Error::RateLimited`], [`Error::Network`],
    /// [`Error::MalformedResponse`], [`Error::InvalidAccountsUrl`]).
    OAuth,
}

impl Error {
    /// The family of this error (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        use ErrorKind as K;
        match self {
            Error::InvalidToken { .. } => K::InvalidToken,
            Error::Conflict { .. } => K::Conflict,
            Error::Corruption { .. } => K::Corruption,
            Error::Locked { .. } => K::Locked,
            Error::UnsupportedVersion { .. } => K::UnsupportedVersion,
            Error::WrongKey { .. }
            | Error::KeyRequired { .. }
            | Error::NotEncrypted { .. }
            | Error::RekeyRequired { .. }
            | Error::InvalidKey { .. } => K::Key,
            Error::InvalidUrl { .. }
            | Error::StoreNotFound { .. }
            | Error::UnknownScheme { .. } => K::InvalidLocation,
            Error::Io(_)
            | Error::Unavailable { .. }
            | Error::Database { .. }
            | Error::Tls { .. }
            | Error::Panicked { .. } => K::Storage,
            Error::Unsupported { .. } => K::Unsupported,
            Error::NotFound { .. } => K::NotFound,
            Error::NotRefreshable { .. } => K::NotRefreshable,
            Error::GrantRefused { .. } => K::GrantRefused,
            Error::InvalidClient { .. }
            | Error::RateLimited { .. }
            | Error::Network { .. }
            | Error::MalformedResponse { .. }
            | Error::InvalidAccountsUrl { .. } => K::OAuth,
        }
    }

    pub(crate) fn corruption(id: Option<&str>, detail: impl Into<String>) -> Self {
        Error::Corruption {
            id: id.map(str::to_owned),
            detail: detail.into(),
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidToken {
            reason: reason.into(),
        }
    }
}

/// The middle of [`Error::UnknownScheme`]'s message.
fn scheme_problem(scheme: &str, feature: Option<&'static str>) -> String {
    match feature {
        Some(feature) => format!(
            "this build of tokenstore was compiled without `{scheme}://` stores (cargo feature `{feature}`)"
        ),
        None => format!("tokenstore knows no `{scheme}://` stores"),
    }
}
