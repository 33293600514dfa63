//! The refresh lock across processes: `GET_LOCK` on a name derived from
//! the database and the record id, held by one connection of its own until
//! the guard drops.

use mysql::prelude::Queryable;
use mysql::PooledConn;

use super::*;

/// MySQL's error for a statement a Galera cluster refuses (`GET_LOCK`
/// among them).
const NOT_SUPPORTED_YET: u16 = 1235;

impl MysqlStore {
    /// Takes the server's named lock for record `id` on a connection of its
    /// own (from a second pool, so that a refresh holding a lock never
    /// waits for a connection held by one waiting for it): exclusive across
    /// every process using the database, for this record only. Released
    /// with `RELEASE_LOCK` when the guard drops (also when the caller
    /// panics); if that fails the connection is closed, which releases it
    /// as well, as does the server when this process dies. Waiting for it
    /// is bounded by [`MysqlOptions::lock_timeout`].
    ///
    /// If the lock's connection breaks while it is held, the server
    /// releases the lock early; the refresher's re-read before it asks the
    /// accounts server keeps that harmless in practice.
    pub(super) fn take_refresh_lock(&self, id: &str) -> Result<RefreshLock<'_>> {
        let what = "taking the refresh lock";
        let name = refresh_lock_name(&self.database, id);
        let mut conn = self
            .lock_pool
            .try_get_conn(self.options.pool_wait)
            .map_err(map_my(what))?;
        let got: Option<Option<i64>> = conn
            .exec_first(
                "SELECT GET_LOCK(?, ?)",
                (&name, self.options.lock_wait_secs()),
            )
            .map_err(|e| match &e {
                mysql::Error::MySqlError(server) if server.code == NOT_SUPPORTED_YET => {
                    Error::Unsupported {
                        operation: "refresh locks across processes (GET_LOCK)".into(),
                        backend: "this MySQL server (a Galera cluster?)",
                        instead: "refresh from one process, or use a server that allows GET_LOCK"
                            .into(),
                    }
                }
                _ => my_error(what, e, false),
            })?;
        match got.flatten() {
            Some(1) => Ok(RefreshLock::held_by(HeldLock {
                conn: Some(conn),
                name,
            })),
            Some(_) => Err(unavailable(
                what,
                format!(
                    "another process held the refresh lock of record {id:?} for more than {} s \
                     (MysqlOptions::lock_timeout)",
                    self.options.lock_wait_secs()
                ),
                false,
            )),
            None => Err(Error::Database {
                code: "HY000".into(),
                detail: format!("GET_LOCK returned NULL while {what}"),
            }),
        }
    }
}

/// A held refresh lock: its connection, released when this drops.
pub(super) struct HeldLock {
    conn: Option<PooledConn>,
    name: String,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let released: mysql::Result<Option<Option<i64>>> =
            conn.exec_first("SELECT RELEASE_LOCK(?)", (&self.name,));
        if !matches!(released, Ok(Some(Some(1)))) {
            // Never hand a connection that may hold the lock back to the
            // pool: closing the session releases every lock it held.
            drop(conn.unwrap());
        }
    }
}

/// The lock name of record `id` in `database` (`GET_LOCK` names are
/// server-wide and at most 64 characters): `tokenstore-refresh-` and 32 hex
/// digits of a hash of both. Two records sharing a name only make one
/// refresh wait for the other.
pub(super) fn refresh_lock_name(database: &str, id: &str) -> String {
    let mut hasher = blake3::Hasher::new_derive_key("tokenstore 2026-12 mysql refresh lock v1");
    hasher.update(&(database.len() as u64).to_le_bytes());
    hasher.update(database.as_bytes());
    hasher.update(id.as_bytes());
    let hash = hasher.finalize();
    let hex: String = hash.as_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("tokenstore-refresh-{hex}")
}

#[cfg(test)]
mod tests {
    use super::refresh_lock_name;

    #[test]
    fn lock_names_fit_and_differ_by_database_and_id() {
        let name = refresh_lock_name("app", "1");
        assert!(name.len() <= 64, "{name}");
        assert_ne!(name, refresh_lock_name("app", "2"));
        assert_ne!(name, refresh_lock_name("other", "1"));
        assert_ne!(refresh_lock_name("ab", "c"), refresh_lock_name("a", "bc"));
    }
}
