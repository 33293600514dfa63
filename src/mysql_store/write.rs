//! The write side: every write takes the write lock (the meta row, `FOR
//! UPDATE`), plans over the transaction, applies its write set as rows,
//! digests, the id counter and the seal count, and commits; an attempt the
//! server aborted is run again when the plan allows it.

use mysql::prelude::Queryable;
use mysql::{PooledConn, Transaction, TxOpts};

use super::*;

/// Attempts of a write whose transaction the server broke to end a
/// deadlock (none happens between the store's own writers, which take one
/// lock first; rows locked by others can).
const DEADLOCK_ATTEMPTS: u32 = 200;

/// The meta row, read under its lock: what a write starts from.
pub(super) struct Locked {
    pub(super) last_issued: u64,
    pub(super) seals: u64,
}

/// Runs `plan` on one transaction, applies what it planned, commits.
struct Attempt<'p, 'a, T> {
    plan: &'p mut Plan<'a, T>,
    /// The plan ran (a batch's must not run again).
    ran: bool,
    /// How the attempt failed, when the client said.
    failed: Cell<Option<Failure>>,
    /// What the plan staged: the candidates of a unique key's holder.
    planned: Option<WriteSet>,
}

impl MysqlStore {
    /// A write: under the write lock, planned from the committed state,
    /// applied and committed; run again (with a growing, jittered pause)
    /// after a deadlock, a lock wait time-out or a connection lost before
    /// the commit, unless the plan already ran and must not run again
    /// (`Replay::Never`).
    pub(super) fn write_locked<T>(&self, replay: Replay, plan: &mut Plan<'_, T>) -> Result<T> {
        let what = match replay {
            Replay::Allowed => "saving a token",
            Replay::Never => "applying a batch",
        };
        let mut attempt = Attempt {
            plan,
            ran: false,
            failed: Cell::new(None),
            planned: None,
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            attempt.ran = false;
            attempt.failed.set(None);
            let mut conn = self.conn(what)?;
            let e = match self.run(&mut conn, &mut attempt, what) {
                Ok(out) => return Ok(out),
                Err(e) => e,
            };
            let again = replay == Replay::Allowed || !attempt.ran;
            // A lost connection may be one the server closed while it sat
            // in the pool (connections are not pinged when taken): it is
            // discarded, and the attempt runs again as `crate::retry` says.
            let pooled = self.options.pool_size_value();
            let lost = attempt.failed.get() == Some(Failure::Lost);
            if lost {
                discard(&mut conn);
            }
            let limit = match attempt.failed.get() {
                Some(Failure::Deadlock) => DEADLOCK_ATTEMPTS,
                Some(Failure::Lost) => crate::retry::lost_attempts(pooled),
                Some(Failure::LockWait) => crate::retry::LOST_ATTEMPTS,
                _ => 0,
            };
            let cause = attempt.failed.get().unwrap_or(Failure::Other).describe();
            if !again || attempts >= limit {
                if again && limit > 0 {
                    log::warn!(
                        target: crate::logging::MYSQL,
                        "{what}: gave up after {attempts} attempts, the last ended in {cause}"
                    );
                }
                if limit == DEADLOCK_ATTEMPTS && again {
                    return Err(unavailable(
                        what,
                        format!("gave up after {attempts} attempts that deadlocked"),
                        false,
                    ));
                }
                return Err(match unique_violation(&e) {
                    Some(field) => {
                        let staged: Vec<&OAuthToken> = attempt
                            .planned
                            .iter()
                            .flat_map(|w| w.changes.values())
                            .filter_map(|c| c.next.as_ref())
                            .collect();
                        self.conflict_holder(&mut conn, e, field, staged)
                    }
                    None => e,
                });
            }
            log::info!(
                target: crate::logging::MYSQL,
                "{what}: attempt {attempts} ended in {cause}; running it again"
            );
            drop(conn);
            if lost {
                crate::retry::pause_after_loss(attempts, pooled);
            } else {
                crate::retry::pause(attempts);
            }
        }
    }

    fn run<T>(
        &self,
        conn: &mut PooledConn,
        attempt: &mut Attempt<'_, '_, T>,
        what: &'static str,
    ) -> Result<T> {
        let failed = &attempt.failed;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .map_err(noting(what, failed))?;
        let locked = self.lock_writes(&mut tx, what, failed)?;
        attempt.ran = true;
        let (out, writes) = {
            let view = View::new(&mut tx, &self.sealing);
            let planned = (attempt.plan)(&view, locked.last_issued);
            if planned.is_err() {
                failed.set(view.failed.get());
            }
            planned?
        };
        attempt.planned = writes;
        if let Some(writes) = &attempt.planned {
            self.apply_writes(&mut tx, writes, &locked, what, failed)?;
        }
        commit(tx, what, failed)?;
        Ok(out)
    }

    /// Takes the write lock (the meta row's, until the commit) and reads the
    /// id counter and the seal count, after checking that the store still
    /// has this handle's key (another process may have changed it with
    /// [`Backend::set_encryption`]; writing with the old one would mix
    /// keys).
    pub(super) fn lock_writes(
        &self,
        tx: &mut Transaction<'_>,
        what: &'static str,
        failed: &Cell<Option<Failure>>,
    ) -> Result<Locked> {
        let row: Option<(u64, u16, Option<Vec<u8>>, u64)> = tx
            .query_first(
                "SELECT last_issued_id, format, key_check, seals FROM tokenstore_meta \
                 WHERE singleton = 1 FOR UPDATE",
            )
            .map_err(noting(what, failed))?;
        let (last_issued, format, key_check, seals) =
            row.ok_or_else(|| Error::corruption(None, "the tokenstore_meta row is missing"))?;
        self.sealing.check_stored(
            u32::from(format),
            key_check.as_deref(),
            std::path::Path::new(&self.target),
        )?;
        Ok(Locked { last_issued, seals })
    }

    /// Writes `writes` in `tx`: each record (sealed and counted by the
    /// codec) with its digests, each deletion, the id counter and the seal
    /// count.
    pub(super) fn apply_writes(
        &self,
        tx: &mut Transaction<'_>,
        writes: &WriteSet,
        locked: &Locked,
        what: &'static str,
        failed: &Cell<Option<Failure>>,
    ) -> Result<()> {
        let location = std::path::PathBuf::from(&self.target);
        let encoded = self.sealing.encode_writes(
            writes.changes.values().map(|c| c.next.as_ref()),
            locked.seals,
            &location,
        )?;
        // MySQL checks a UNIQUE key at each row, not at the commit: a value
        // moving from one record to another within a batch would collide
        // with itself, so the touched rows give up their digests first.
        if writes.changes.len() > 1 {
            let present: Vec<&String> = writes
                .changes
                .iter()
                .filter(|(_, c)| c.previous != Stored::Absent)
                .map(|(id, _)| id)
                .collect();
            for ids in present.chunks(500) {
                let marks = vec!["?"; ids.len()].join(", ");
                let params: Vec<mysql::Value> = ids.iter().map(|id| id.as_bytes().into()).collect();
                tx.exec_drop(
                    format!(
                        "UPDATE tokenstore_records SET user_name_digest = NULL, \
                         access_token_digest = NULL, refresh_token_digest = NULL, \
                         grant_token_digest = NULL WHERE id IN ({marks})"
                    ),
                    params,
                )
                .map_err(noting(what, failed))?;
            }
        }
        for ((id, change), bytes) in writes.changes.iter().zip(&encoded.records) {
            match (bytes, &change.next) {
                (Some(bytes), Some(record)) => {
                    let exists = change.previous != Stored::Absent;
                    write_row(tx, &self.sealing, record, bytes, exists, what, failed)?;
                }
                _ => tx
                    .exec_drop(
                        "DELETE FROM tokenstore_records WHERE id = ?",
                        (id.as_bytes(),),
                    )
                    .map_err(noting(what, failed))?,
            }
        }
        let seals = if self.sealing.counts_seals() {
            encoded.sealed
        } else {
            locked.seals
        };
        if writes.last_issued != locked.last_issued || seals != locked.seals {
            tx.exec_drop(
                "UPDATE tokenstore_meta SET last_issued_id = ?, seals = ? WHERE singleton = 1",
                (writes.last_issued, seals),
            )
            .map_err(noting(what, failed))?;
        }
        Ok(())
    }

    /// The conflict a unique key reported for `field`, completed with the
    /// id of the row whose digest column holds the value one of
    /// `candidates` wanted (the failed transaction is rolled back by then).
    pub(super) fn conflict_holder<'r>(
        &self,
        conn: &mut PooledConn,
        violation: Error,
        field: IndexedField,
        candidates: impl IntoIterator<Item = &'r OAuthToken>,
    ) -> Error {
        for record in candidates {
            let Some(value) = record.indexed(field) else {
                continue;
            };
            let digest = self.sealing.digest(value);
            let holder = conn
                .exec_first::<(Vec<u8>, Vec<u8>), _, _>(select_by_digest(field), (&digest[..],))
                .ok()
                .flatten()
                .and_then(|(id, _)| id_text(id).ok());
            if let Some(holder) = holder {
                if Some(holder.as_str()) != record.id.as_deref() {
                    return Error::Conflict { field, id: holder };
                }
            }
        }
        // No row holds it any more: the server's own report.
        violation
    }
}

/// Commits: a server's refusal means nothing landed, a broken connection
/// means the outcome is unknown (and the write is not run again).
pub(super) fn commit(
    tx: Transaction<'_>,
    what: &'static str,
    failed: &Cell<Option<Failure>>,
) -> Result<()> {
    tx.commit().map_err(|e| {
        failed.set(Some(match failure(&e) {
            Failure::Lost => Failure::Other,
            other => other,
        }));
        my_error(what, e, true)
    })
}

/// Inserts (`exists` false) or updates `record` (normalized, id set),
/// encoded as `bytes`, with its digests: the one way a record row is
/// written (saves, batches and key changes). Never `ON DUPLICATE KEY
/// UPDATE`, which would update whichever row holds a duplicated digest.
pub(super) fn write_row(
    tx: &mut Transaction<'_>,
    sealing: &Sealing,
    record: &OAuthToken,
    bytes: &[u8],
    exists: bool,
    what: &'static str,
    failed: &Cell<Option<Failure>>,
) -> Result<()> {
    let id = record.id.as_deref().unwrap_or_default();
    if id.len() > MAX_ID_BYTES {
        return Err(Error::invalid(format!(
            "an id of {} bytes is longer than the {MAX_ID_BYTES} a MySQL store keeps",
            id.len()
        )));
    }
    let digests: Vec<Option<Vec<u8>>> = IndexedField::ALL
        .into_iter()
        .map(|field| record.indexed(field).map(|v| sealing.digest(v).to_vec()))
        .collect();
    let [user, access, refresh, grant]: [Option<Vec<u8>>; 4] =
        digests.try_into().expect("four unique fields");
    let sql = if exists {
        "UPDATE tokenstore_records SET record = ?, user_name_digest = ?, \
         access_token_digest = ?, refresh_token_digest = ?, grant_token_digest = ? \
         WHERE id = ?"
    } else {
        "INSERT INTO tokenstore_records (record, user_name_digest, access_token_digest, \
         refresh_token_digest, grant_token_digest, id) VALUES (?, ?, ?, ?, ?, ?)"
    };
    tx.exec_drop(sql, (bytes, user, access, refresh, grant, id.as_bytes()))
        .map_err(noting(what, failed))
}
