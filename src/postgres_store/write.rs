//! The write side: a plan run in a SERIALIZABLE transaction under the
//! shared write lock (and run again when the server asks), or once under
//! the exclusive lock; its write set applied as rows, digests, the id
//! counter and the seal count.

use super::*;

pub(super) fn read_last_issued(
    conn: &mut postgres::Client,
    what: &'static str,
    lost: &Cell<bool>,
) -> Result<u64> {
    let row = conn
        .query_one("SELECT last_issued_id FROM tokenstore_meta", &[])
        .map_err(noting(what, lost))?;
    let last: i64 = col(&row, 0)?;
    u64::try_from(last).map_err(|_| Error::corruption(None, "the stored id counter is negative"))
}

impl PostgresStore {
    /// The conflict a unique constraint reported for `field`, completed
    /// with the id of the row whose digest column holds the value one of
    /// `candidates` wanted (the failed transaction is rolled back by then).
    pub(super) fn conflict_holder<'r>(
        &self,
        conn: &mut postgres::Client,
        violation: Error,
        field: IndexedField,
        candidates: impl IntoIterator<Item = &'r OAuthToken>,
    ) -> Error {
        for record in candidates {
            let Some(value) = record.indexed(field) else {
                continue;
            };
            let digest = self.sealing.digest(value);
            let digest: &[u8] = &digest;
            let holder = conn
                .query_typed_opt(select_by_digest(field), &[(&digest, Type::BYTEA)])
                .ok()
                .flatten()
                .and_then(|row| col::<String>(&row, 0).ok());
            if let Some(holder) = holder {
                if Some(holder.as_str()) != record.id.as_deref() {
                    return Error::Conflict { field, id: holder };
                }
            }
        }
        // No row holds it any more: the server's own report.
        violation
    }

    /// Under the write lock: the id counter, after checking that the store
    /// still has this handle's key (another process may have changed it
    /// with [`Backend::set_encryption`]; writing with the old one would
    /// mix keys).
    pub(super) fn begin_write(
        &self,
        tx: &mut postgres::Transaction<'_>,
        what: &'static str,
    ) -> Result<u64> {
        schema::lock_writes(tx, what)?;
        self.counter_and_key(tx, what)
    }

    /// A write whose plan may run again (a save, a delete): the write lock
    /// in shared mode (taken at session level before `BEGIN`, so the
    /// snapshot includes every exclusive writer's commit), then the plan
    /// and its writes in a SERIALIZABLE transaction, run again (with a
    /// growing, jittered pause) while the server reports a serialization
    /// failure, a deadlock, or a unique value taken by a concurrent write:
    /// the plan then sees the other write. On a connection found lost
    /// before the COMMIT was sent, all of it runs again on another
    /// (`crate::retry::writing`); one lost during the COMMIT is
    /// `Unavailable { maybe_committed: true }`, never run again.
    pub(super) fn write_shared<T>(&self, plan: &mut Plan<'_, T>) -> Result<T> {
        let what = "saving a token";
        self.writing(what, |conn, lost| {
            conn.query_typed(
                "SELECT pg_advisory_lock_shared($1)",
                &[(&WRITE_LOCK, Type::INT8)],
            )
            .map_err(noting(what, lost))?;
            let written = self.write_serializable(conn, plan, lost, what);
            let unlocked = conn.query_typed(
                "SELECT pg_advisory_unlock_shared($1)",
                &[(&WRITE_LOCK, Type::INT8)],
            );
            if unlocked.is_err() {
                // Never hand a connection holding the lock back to the pool.
                if !conn.is_closed() {
                    let _ = conn.batch_execute("SELECT pg_terminate_backend(pg_backend_pid())");
                }
                pool::discard(conn);
            }
            written
        })
    }

    /// The SERIALIZABLE part of [`write_shared`](Self::write_shared), on
    /// `conn`, which holds the shared write lock; `lost` notes a query that
    /// found the connection gone.
    pub(super) fn write_serializable<T>(
        &self,
        conn: &mut postgres::Client,
        plan: &mut Plan<'_, T>,
        lost: &Cell<bool>,
        what: &'static str,
    ) -> Result<T> {
        const ATTEMPTS: u32 = 200;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut planned = None;
            let outcome = (|| {
                let mut tx = conn
                    .build_transaction()
                    .isolation_level(postgres::IsolationLevel::Serializable)
                    .start()
                    .map_err(noting(what, lost))?;
                let last_issued = self.counter_and_key(&mut tx, what)?;
                let (out, writes) = plan(&View::new(&mut tx, &self.sealing, lost), last_issued)?;
                // Kept for the conflict's holder if the server refuses it.
                planned = writes;
                if let Some(writes) = &planned {
                    self.apply_writes(&mut tx, writes, last_issued, what)?;
                }
                commit(tx, what)?;
                Ok(out)
            })();
            let retry = match &outcome {
                Ok(_) => false,
                Err(Error::Database { code, .. }) if code == "40001" || code == "40P01" => true,
                // Raised by a constraint (planned conflicts name the holder):
                // a concurrent write took the value, and planning again sees
                // it; a violation that persists is real (rows changed behind
                // the store's back) and is reported with its holder.
                Err(e) => unique_violation(e).is_some() && attempt < 3,
            };
            if !retry {
                return match outcome {
                    Err(e) => match unique_violation(&e) {
                        Some(field) => {
                            let staged: Vec<OAuthToken> = planned
                                .iter()
                                .flat_map(|w| w.changes.values())
                                .filter_map(|c| c.next.clone())
                                .collect();
                            Err(self.conflict_holder(conn, e, field, &staged))
                        }
                        None => Err(e),
                    },
                    ok => ok,
                };
            }
            let cause = match &outcome {
                Err(Error::Database { code, .. }) if code == "40001" => "a serialization failure",
                Err(Error::Database { code, .. }) if code == "40P01" => "a deadlock",
                _ => "a unique value a concurrent write took",
            };
            if attempt >= ATTEMPTS {
                log::warn!(
                    target: crate::logging::POSTGRES,
                    "{what}: gave up after {attempt} attempts, the last ended in {cause}"
                );
                return Err(unavailable(
                    what,
                    format!(
                        "gave up after {ATTEMPTS} attempts that conflicted with concurrent saves"
                    ),
                    false,
                ));
            }
            log::info!(
                target: crate::logging::POSTGRES,
                "{what}: attempt {attempt} ended in {cause}; running it again"
            );
            crate::retry::pause(attempt);
        }
    }

    /// A write whose plan runs a caller's closure once (a batch): the write
    /// lock exclusively, READ COMMITTED, never run again once the plan has
    /// run; on a connection found lost before that (at `BEGIN`, or taking
    /// the lock), it runs on another (`crate::retry::writing`).
    pub(super) fn write_exclusive<T>(&self, plan: &mut Plan<'_, T>) -> Result<T> {
        let what = "applying a batch";
        crate::retry::writing(
            self.options.pool_size,
            crate::logging::POSTGRES,
            what,
            || {
                let mut ran = false;
                let written = self.attempt(what, |conn, lost| {
                    self.write_once(conn, plan, lost, &mut ran, what)
                });
                // A stage that ran never runs again.
                written.map_err(|failed| Failed {
                    lost: failed.lost && !ran,
                    ..failed
                })
            },
        )
    }

    /// One attempt of [`write_exclusive`](Self::write_exclusive); `ran`
    /// tells whether the plan was run.
    fn write_once<T>(
        &self,
        conn: &mut postgres::Client,
        plan: &mut Plan<'_, T>,
        lost: &Cell<bool>,
        ran: &mut bool,
        what: &'static str,
    ) -> Result<T> {
        let mut tx = conn.transaction().map_err(noting(what, lost))?;
        let last_issued = self.begin_write(&mut tx, what)?;
        *ran = true;
        let (out, writes) = plan(&View::new(&mut tx, &self.sealing, lost), last_issued)?;
        let Some(writes) = writes else {
            return Ok(out);
        };
        // A value may move from one record to another within the batch.
        tx.batch_execute("SET CONSTRAINTS ALL DEFERRED")
            .map_err(map_pg(what))?;
        self.apply_writes(&mut tx, &writes, last_issued, what)?;
        match commit(tx, what) {
            Ok(()) => Ok(out),
            Err(e) => match unique_violation(&e) {
                Some(field) => {
                    let candidates = writes.changes.values().filter_map(|c| c.next.as_ref());
                    Err(self.conflict_holder(conn, e, field, candidates))
                }
                None => Err(e),
            },
        }
    }

    /// Writes `writes` in `tx`: each record (sealed and counted by the
    /// codec) with its digests, each deletion, the id counter and the seal
    /// count.
    pub(super) fn apply_writes(
        &self,
        tx: &mut postgres::Transaction<'_>,
        writes: &WriteSet,
        last_issued: u64,
        what: &'static str,
    ) -> Result<()> {
        let stored = writes.changes.values().filter(|c| c.next.is_some()).count();
        let sealed_after = if self.sealing.counts_seals() && stored > 0 {
            reserve_seals(tx, stored, what)?
        } else {
            0
        };
        let sealed_before = sealed_after.saturating_sub(stored as u64);
        let location = std::path::PathBuf::from(&self.target);
        let encoded = self.sealing.encode_writes(
            writes.changes.values().map(|c| c.next.as_ref()),
            sealed_before,
            &location,
        )?;
        for ((id, change), bytes) in writes.changes.iter().zip(&encoded.records) {
            match (bytes, &change.next) {
                (Some(bytes), Some(record)) => write_row(tx, &self.sealing, record, bytes, what)?,
                _ => {
                    tx.query_typed(
                        "DELETE FROM tokenstore_records WHERE id = $1",
                        &[(id, Type::TEXT)],
                    )
                    .map_err(map_pg(what))?;
                }
            }
        }
        if writes.last_issued != last_issued {
            write_last_issued(tx, writes.last_issued, what)?;
        }
        Ok(())
    }

    /// The id counter, after checking that the store still has this
    /// handle's key.
    pub(super) fn counter_and_key(
        &self,
        tx: &mut postgres::Transaction<'_>,
        what: &'static str,
    ) -> Result<u64> {
        let row = tx
            .query_one(
                "SELECT last_issued_id, format, key_check FROM tokenstore_meta",
                &[],
            )
            .map_err(map_pg(what))?;
        let format: i16 = col(&row, 1)?;
        let stored: Option<&[u8]> = col(&row, 2)?;
        let location = std::path::PathBuf::from(&self.target);
        self.sealing
            .check_stored(u32::try_from(format).unwrap_or(0), stored, &location)?;
        let last: i64 = col(&row, 0)?;
        u64::try_from(last)
            .map_err(|_| Error::corruption(None, "the stored id counter is negative"))
    }
}

pub(super) fn write_last_issued(
    tx: &mut postgres::Transaction<'_>,
    issued: u64,
    what: &'static str,
) -> Result<()> {
    let issued = i64::try_from(issued).map_err(|_| {
        Error::invalid("the id counter is exhausted in this backend; save with an explicit id")
    })?;
    tx.query_typed(
        "UPDATE tokenstore_meta SET last_issued_id = $1",
        &[(&issued, Type::INT8)],
    )
    .map_err(map_pg(what))?;
    Ok(())
}

/// The seal count after reserving `n` seals from the store's sequence,
/// which never goes back (a rolled-back write keeps its reservation, so the
/// count errs on the safe side) and takes no row lock, so concurrent saves
/// do not conflict over it.
pub(super) fn reserve_seals(
    tx: &mut postgres::Transaction<'_>,
    n: usize,
    what: &'static str,
) -> Result<u64> {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let row = tx
        .query_typed_one(
            "SELECT max(nextval('tokenstore_seals')) FROM generate_series(1, $1)",
            &[(&n, Type::INT8)],
        )
        .map_err(map_pg(what))?;
    let after: i64 = col(&row, 0)?;
    Ok(u64::try_from(after).unwrap_or(0))
}

/// The field whose UNIQUE constraint `e` reports violated, if it is one.
pub(super) fn unique_violation(e: &Error) -> Option<IndexedField> {
    match e {
        Error::Database { code, detail } if code == "23505" => IndexedField::ALL
            .into_iter()
            .find(|field| detail.contains(&format!("tokenstore_unique_{}", field.name()))),
        _ => None,
    }
}

/// Inserts or replaces `record` (normalized, id set), encoded as `bytes`,
/// with its digests: the one way a record row is written (saves, batches
/// and key changes).
pub(super) fn write_row(
    tx: &mut postgres::Transaction<'_>,
    sealing: &Sealing,
    record: &OAuthToken,
    bytes: &[u8],
    what: &'static str,
) -> Result<()> {
    let id = record.id.as_deref().unwrap_or_default();
    let digests: Vec<Option<Vec<u8>>> = IndexedField::ALL
        .into_iter()
        .map(|field| record.indexed(field).map(|v| sealing.digest(v).to_vec()))
        .collect();
    tx.query_typed(
        "INSERT INTO tokenstore_records \
           (id, record, user_name_digest, access_token_digest, refresh_token_digest, grant_token_digest) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record, \
           user_name_digest = EXCLUDED.user_name_digest, \
           access_token_digest = EXCLUDED.access_token_digest, \
           refresh_token_digest = EXCLUDED.refresh_token_digest, \
           grant_token_digest = EXCLUDED.grant_token_digest",
        &[
            (&id, Type::TEXT),
            (&bytes, Type::BYTEA),
            (&digests[0], Type::BYTEA),
            (&digests[1], Type::BYTEA),
            (&digests[2], Type::BYTEA),
            (&digests[3], Type::BYTEA),
        ],
    )
    .map_err(map_pg(what))?;
    Ok(())
}
