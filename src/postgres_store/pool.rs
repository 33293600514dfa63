//! The pools' connection manager: rust-postgres's, with errors that say
//! why (r2d2 keeps only the `Display` of the last error, and the client's
//! names only its kind, "error performing TLS handshake", so a pool that
//! cannot connect would report that it timed out and nothing more), and
//! connections that the store can discard.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use r2d2_postgres::r2d2::ManageConnection;
use r2d2_postgres::PostgresConnectionManager;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::conninfo::TlsRequest;
use super::errors::with_causes;
use super::tls;

pub(super) type Pool = r2d2_postgres::r2d2::Pool<Manager>;
pub(super) type Conn = r2d2_postgres::r2d2::PooledConnection<Manager>;

pub(super) struct Manager {
    inner: PostgresConnectionManager<MakeRustlsConnect>,
    tls: Arc<TlsRequest>,
    target: Arc<str>,
}

impl Manager {
    pub(super) fn new(
        config: postgres::Config,
        connector: MakeRustlsConnect,
        tls: Arc<TlsRequest>,
        target: Arc<str>,
    ) -> Manager {
        Manager {
            inner: PostgresConnectionManager::new(config, connector),
            tls,
            target,
        }
    }
}

/// A pooled client, and whether the store found it lost. r2d2 drops a
/// connection that comes back broken (`has_broken`), which for the client
/// is `is_closed()`: true once it has seen the close, which a server's
/// "terminating connection" error can precede. A lost one is marked, so it
/// never goes back into the pool whatever the client has seen.
pub(super) struct Client {
    client: postgres::Client,
    lost: bool,
}

impl Deref for Client {
    type Target = postgres::Client;

    fn deref(&self) -> &postgres::Client {
        &self.client
    }
}

impl DerefMut for Client {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        &mut self.client
    }
}

/// Makes `conn` leave the pool when it is dropped, instead of going back.
pub(super) fn discard(conn: &mut Conn) {
    conn.lost = true;
}

/// A connection error as one line with its cause.
#[derive(Debug)]
pub(super) struct ConnectError(String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

impl ManageConnection for Manager {
    type Connection = Client;
    type Error = ConnectError;

    fn connect(&self) -> Result<Client, ConnectError> {
        let client = self.inner.connect().map_err(|e| {
            ConnectError(match tls::explain(&e, &self.tls, &self.target) {
                Some(explained) => explained.to_string(),
                None => with_causes(&e),
            })
        })?;
        Ok(Client {
            client,
            lost: false,
        })
    }

    /// Not called on check-out (the pools are built without that test):
    /// the callers run an attempt again when they find a connection lost.
    fn is_valid(&self, conn: &mut Client) -> Result<(), ConnectError> {
        self.inner
            .is_valid(&mut conn.client)
            .map_err(|e| ConnectError(with_causes(&e)))
    }

    fn has_broken(&self, conn: &mut Client) -> bool {
        conn.lost || self.inner.has_broken(&mut conn.client)
    }
}
