//! [`PostgresOptions`]: how a [`PostgresStore`] connects and pools.

use super::*;

/// How [`PostgresStore::connect_with`] connects.
///
/// Every wait is bounded by default: 5 s to connect, 10 s to get a
/// connection from the pool, 30 s per statement (including waiting for a
/// lock held by another process).
///
/// ```
/// use std::time::Duration;
/// use tokenstore::PostgresOptions;
///
/// let options = PostgresOptions::default()
///     .pool_size(4)
///     .connect_timeout(Duration::from_secs(2))
///     .statement_timeout(Duration::from_secs(10));
/// assert_eq!(options.pool_size_value(), 4);
/// ```
///
/// TLS is asked for in the connection string, as libpq's parameters
/// (docs/SPEC.md §6), not here; the connect timeout bounds the handshake
/// too:
///
/// ```no_run
/// use std::time::Duration;
/// use tokenstore::{PostgresOptions, PostgresStore};
///
/// let store = PostgresStore::connect_with(
///     "postgres://app@db.internal/tokens?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem",
///     PostgresOptions::default().connect_timeout(Duration::from_secs(2)),
/// )?;
/// # Ok::<(), tokenstore::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    pub(super) pool_size: u32,
    pub(super) connect_timeout: Duration,
    pub(super) pool_wait: Duration,
    pub(super) statement_timeout: Duration,
    pub(super) encryption: Option<Key>,
    pub(super) create: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            pool_wait: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
            encryption: None,
            create: true,
        }
    }
}

impl PostgresOptions {
    /// The most connections the store opens for its operations (at least
    /// 1; default 8). [`TokenStore::refresh_lock`] holds connections
    /// of a second pool of the same size, so that a refresh holding a lock
    /// can always still save.
    #[must_use]
    pub fn pool_size(mut self, connections: u32) -> Self {
        self.pool_size = connections.max(1);
        self
    }

    /// How long connecting to the server may take (default 5 s). A URL's
    /// own `connect_timeout` wins.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an operation waits for a pooled connection, connecting
    /// included, before it fails with [`Error::Unavailable`] (default 10 s).
    #[must_use]
    pub fn pool_wait(mut self, timeout: Duration) -> Self {
        self.pool_wait = timeout;
        self
    }

    /// How long the server lets one statement run, waiting for a lock
    /// included (default 30 s; PostgreSQL's `statement_timeout`).
    #[must_use]
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Seals every record with this key, as
    /// [`Options::encryption`](crate::Options::encryption) does for the
    /// embedded store: the server receives sealed records and keyed
    /// digests, never a token, secret or user name.
    #[must_use]
    pub fn encryption(mut self, key: Key) -> Self {
        self.encryption = Some(key);
        self
    }

    /// Whether a database without the store's tables gets them (the
    /// default) or is refused with [`Error::StoreNotFound`].
    #[must_use]
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// The number of connections the store keeps.
    pub fn pool_size_value(&self) -> u32 {
        self.pool_size
    }

    /// The master key, when records are sealed.
    pub fn encryption_key(&self) -> Option<&Key> {
        self.encryption.as_ref()
    }
}
