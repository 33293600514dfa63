//! The pools' connection manager: rust-postgres's, with errors that say
//! why. r2d2 keeps only the `Display` of the last error, and the client's
//! names only its kind ("error performing TLS handshake"), so a pool that
//! cannot connect would report that it timed out and nothing more.

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
    type Connection = postgres::Client;
    type Error = ConnectError;

    fn connect(&self) -> Result<postgres::Client, ConnectError> {
        self.inner.connect().map_err(|e| {
            ConnectError(match tls::explain(&e, &self.tls, &self.target) {
                Some(explained) => explained.to_string(),
                None => with_causes(&e),
            })
        })
    }

    fn is_valid(&self, conn: &mut postgres::Client) -> Result<(), ConnectError> {
        self.inner
            .is_valid(conn)
            .map_err(|e| ConnectError(with_causes(&e)))
    }

    fn has_broken(&self, conn: &mut postgres::Client) -> bool {
        self.inner.has_broken(conn)
    }
}
