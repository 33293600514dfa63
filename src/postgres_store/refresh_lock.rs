//! The refresh lock across processes: an advisory lock per record, held
//! by a thread of its own until the guard drops.

use super::*;

impl PostgresStore {
    /// Takes a transaction-scoped advisory lock keyed on `id`, on a
    /// connection of its own (from a second pool) held by a thread of its
    /// own, which also keeps the blocking client off any async runtime of
    /// the caller: exclusive across every process sharing the database, for
    /// this id only. It is released when the guard drops (also when the
    /// caller panics), and by the server if this process dies. Waiting for
    /// it is bounded by the statement timeout ([`Error::Unavailable`] past
    /// it).
    ///
    /// The pool does not test its connections either: one found lost
    /// before the lock is held is discarded and the lock taken on another
    /// (`crate::retry::reading`: nothing was done on it). If the lock's
    /// connection breaks while it is held, the server releases the lock
    /// early; the refresher's re-read before it asks the accounts server
    /// keeps that harmless in practice.
    pub(super) fn take_refresh_lock(&self, id: &str) -> Result<RefreshLock<'_>> {
        let key = refresh_lock_key(id);
        let lock_pool = self
            .lock_pool
            .clone()
            .expect("the pool lives as long as the store");
        let pool_size = self.options.pool_size;
        let (acquired_tx, acquired) = mpsc::channel::<Result<()>>();
        let (release, release_rx) = mpsc::channel::<()>();
        let holder = std::thread::Builder::new()
            .name("tokenstore-refresh-lock".into())
            .spawn(move || {
                let what = "taking the refresh lock";
                let locked =
                    crate::retry::reading(pool_size, crate::logging::POSTGRES, what, || {
                        attempt_on(&lock_pool, what, |conn, lost| {
                            hold(conn, key, lost, what, || {
                                let _ = acquired_tx.send(Ok(()));
                                // Until the guard drops `release`.
                                let _ = release_rx.recv();
                            })
                        })
                    });
                if let Err(e) = locked {
                    let _ = acquired_tx.send(Err(e));
                }
            })
            .map_err(|e| unavailable("taking the refresh lock", e.to_string(), false))?;
        let guard = HeldLock {
            release: Some(release),
            holder: Some(holder),
        };
        match acquired.recv() {
            Ok(Ok(())) => Ok(RefreshLock::held_by(guard)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(unavailable(
                "taking the refresh lock",
                "the lock's thread ended early".into(),
                false,
            )),
        }
    }
}

/// Takes the refresh lock `key` in a transaction on `conn`, runs `held`,
/// and ends the transaction; a connection that does not end it cleanly
/// (it broke meanwhile) never goes back to the pool, which could hand out
/// a session still holding the lock.
fn hold(
    conn: &mut Conn,
    key: i32,
    lost: &Cell<bool>,
    what: &'static str,
    held: impl FnOnce(),
) -> Result<()> {
    let mut tx = conn.transaction().map_err(noting(what, lost))?;
    tx.query_typed(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[(&REFRESH_LOCK_CLASS, Type::INT4), (&key, Type::INT4)],
    )
    .map_err(noting(what, lost))?;
    held();
    if tx.rollback().is_err() {
        pool::discard(conn);
    }
    Ok(())
}

/// The thread holding a refresh lock's transaction, told to end it (and
/// waited for) when this drops.
pub(super) struct HeldLock {
    release: Option<mpsc::Sender<()>>,
    holder: Option<std::thread::JoinHandle<()>>,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(holder) = self.holder.take() {
            let _ = holder.join();
        }
    }
}

/// The second key of the refresh lock of record `id`. Two ids sharing a
/// key only make one refresh wait for the other.
pub(super) fn refresh_lock_key(id: &str) -> i32 {
    let hash = blake3::derive_key("tokenstore 2026-11 refresh lock v1", id.as_bytes());
    i32::from_le_bytes([hash[0], hash[1], hash[2], hash[3]])
}
