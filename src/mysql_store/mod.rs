//! [`MysqlStore`]: the same [`TokenStore`] on a MySQL or MariaDB server
//! that any number of processes, on any number of machines, share.
//!
//! # How it keeps docs/SPEC.md across processes
//!
//! Every write is one InnoDB transaction that plans with the shared
//! planning of `plan.rs` (an overlay over a [`StoreView`] of the
//! transaction, staging a write set), applies the write set and commits;
//! `Ok` means committed. No lookup rule is written in SQL.
//!
//! Writers are serialized by one lock: the row of `tokenstore_meta`, read
//! `FOR UPDATE` as each write's first statement (it holds the id counter
//! and the seal count, which most writes change anyway). A writer holding
//! it plans from the latest commit of every other writer, so two processes
//! saving the same new user make one record: the second waits, then finds
//! the first's record and merges into it. The row always exists, so the
//! lock is a record lock, never the gap lock that `SELECT … FOR UPDATE` on
//! a missing row takes under REPEATABLE READ (two writers holding the same
//! gap and then inserting into it deadlock). Reads take no lock and see
//! committed data.
//!
//! Why one lock rather than optimistic concurrency (as `PostgresStore`
//! does with SERIALIZABLE): InnoDB's SERIALIZABLE is two-phase locking with
//! next-key locks, so concurrent saves of new users lock overlapping gaps
//! of the digest indexes and the counter row and end in deadlocks that
//! must be retried; and InnoDB releases a transaction's row locks when it
//! commits in memory, before the log flush, so commits queued behind the
//! lock still share one flush (group commit). `GET_LOCK` would serialize
//! the same way, but is refused by Galera clusters and is not part of the
//! transaction. Measured at 10,000 tokens on MariaDB 10.11 over loopback
//! on a 2-core machine (`examples/bench_mysql.rs`, BENCHMARKS.md): 229
//! durable saves/s with 1 writer, 1,098 with 8 (new users: 120 and 1,099),
//! so commits queued behind the lock do share flushes.
//!
//! A deadlock (1213; only rows locked by someone else can cause one), a
//! lock wait time-out (1205; the server rolls back only the statement, the
//! store rolls back the transaction) and a connection lost before the
//! commit are retried, bounded (200 attempts, 3, and one per pooled
//! connection and 3 more, as `crate::retry` bounds them; with a growing
//! jittered pause), then [`Error::Unavailable`]; a batch whose stage ran
//! is never run again. A connection that breaks during the COMMIT is
//! `Unavailable { maybe_committed: true }`.
//!
//! UNIQUE keys on the digests of the four unique values are the last line
//! of defence: planning refuses a taken value with [`Error::Conflict`]
//! naming its holder; a violation (rows changed behind the store's back)
//! is looked up and reported the same way. Rows are written with `INSERT`
//! or `UPDATE … WHERE id`, never `ON DUPLICATE KEY UPDATE`, which updates
//! whichever row holds a duplicated digest.
//!
//! # Refresh locks
//!
//! [`TokenStore::refresh_lock`] takes `GET_LOCK` on a name hashed from the
//! database and the record id (names are server-wide and at most 64
//! characters), on a connection of its own held for the whole refresh, and
//! releases it with `RELEASE_LOCK`. Chosen over a lease column claimed by a
//! conditional UPDATE because the server releases it the moment the
//! holder's connection goes (a crashed refresher never blocks the others
//! until a lease expires), a waiter sleeps in the server instead of
//! polling, and taking it writes nothing. Galera refuses `GET_LOCK`: there
//! the lock is [`Error::Unsupported`]. The refresher re-reads the record
//! after acquiring it.
//!
//! # TLS
//!
//! rustls (ring), with MySQL's URL parameters:
//!
//! | `ssl-mode` | what happens |
//! |---|---|
//! | `DISABLED` | plaintext |
//! | `PREFERRED` (default, as the `mysql` client) | TLS if the server offers it, else plaintext; the certificate is not verified (it is with `ssl-ca`) |
//! | `REQUIRED` | TLS or no connection; the certificate is not verified, unless `ssl-ca` is given (then the chain is, as libpq's `require` with a root file) |
//! | `VERIFY_CA` | TLS, the chain verified against `ssl-ca` (required), not the host name |
//! | `VERIFY_IDENTITY` | TLS, the chain and the host name verified, against `ssl-ca` or the webpki roots |
//!
//! Where it differs from MySQL's client: the `mysql` crate always trusts
//! the webpki (public) roots in addition to `ssl-ca`, so `VERIFY_CA` also
//! accepts a certificate of any public CA; use `VERIFY_IDENTITY` against a
//! server reachable from the Internet. A loopback host still connects over
//! TCP (the crate would otherwise switch to the Unix socket and skip TLS).
//!
//! # Failures
//!
//! A server that is down or unreachable is [`Error::Unavailable`] within
//! the connect timeout; a lock held too long within the lock timeout; a
//! connection that stops answering within the lock timeout plus 10 s.
//! The next call reconnects (pooled connections are pinged before use).
//! The password never appears in an error, a `Debug` output or a log.
//!
//! # Server settings
//!
//! InnoDB tables; any binlog format but `STATEMENT` (MIXED and ROW, the
//! defaults, are fine). A record may be as large as the server's
//! `max_allowed_packet` (16 MiB by default).

mod check;
mod errors;
mod options;
mod refresh_lock;
mod schema;
mod view;
mod write;

use errors::map_my;
use errors::{failure, my_error, noting, unavailable, unique_violation, Failure};
pub use options::MysqlOptions;
use options::{SslMode, Url};
use view::{id_text, select_by_digest, View};
use write::write_row;

use std::cell::{Cell, RefCell};
use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{Conn, Pool, PooledConn, TxOpts};

use crate::backend::{Backend, StoreInfo};
use crate::batch::Batch;
use crate::check::CheckReport;
use crate::codec::Sealing;
use crate::engine::{self, Engine, Plan, Replay, Stage};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::plan::{StoreView, Stored, WriteSet};
use crate::retry::Failed;
use crate::store::RefreshLock;
use crate::token::{IndexedField, OAuthToken};

/// The longest id a MySQL store keeps (its primary key is a VARBINARY of
/// this many bytes, InnoDB's limit for a key).
const MAX_ID_BYTES: usize = 3072;

/// A [`TokenStore`] in a MySQL or MariaDB database, shared by any number
/// of processes (feature `mysql`).
///
/// ```no_run
/// use tokenstore::{MysqlStore, OAuthToken, TokenStore};
///
/// let store = MysqlStore::connect("mysql://app:secret@db.internal:3306/tokens?ssl-mode=VERIFY_IDENTITY&ssl-ca=/etc/ssl/db-ca.pem")?;
/// let mut token = OAuthToken::new().with_user_name("ana").with_refresh_token("1000.r");
/// store.save_token(&mut token)?; // committed before it returns
/// let found = store.find_token(&OAuthToken::new().with_user_name("ana"))?;
/// assert_eq!(found, Some(token));
/// // `Ana` is another user: every compared column is binary.
/// assert_eq!(store.find_token(&OAuthToken::new().with_user_name("Ana"))?, None);
/// # Ok::<(), tokenstore::Error>(())
/// ```
pub struct MysqlStore {
    pool: Pool,
    /// Connections that hold refresh locks, apart so that a refresh holding
    /// a lock never waits for a connection held by a refresh waiting for it.
    lock_pool: Pool,
    sealing: Sealing,
    /// The URL without its password, for messages.
    target: String,
    /// The database name, part of every refresh lock's name.
    database: String,
    /// Whether connections use TLS (`PREFERRED` decided at connect).
    tls: bool,
    options: MysqlOptions,
}

impl std::fmt::Debug for MysqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlStore")
            .field("target", &self.target)
            .field("tls", &self.tls)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl MysqlStore {
    /// Connects with the default [`MysqlOptions`], creating the schema if
    /// the database has none.
    ///
    /// `url` is `mysql://user:password@host:port/database` (or
    /// `mariadb://`), with optional `ssl-mode` and `ssl-ca` parameters
    /// (see the TLS section of [`MysqlStore`]); user and password may be
    /// %-encoded.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`], [`Error::Unavailable`] when the server cannot
    /// be reached (or TLS cannot be set up as asked), [`Error::Database`]
    /// when it refuses (a wrong password, a missing database, no privilege
    /// to create the tables), [`Error::UnsupportedVersion`] for a schema
    /// written by a newer version, [`Error::KeyRequired`] for an encrypted
    /// store.
    pub fn connect(url: &str) -> Result<MysqlStore> {
        Self::connect_with(url, MysqlOptions::default())
    }

    /// Connects with `options`.
    ///
    /// # Errors
    /// As for [`connect`](Self::connect), plus [`Error::WrongKey`] and
    /// [`Error::NotEncrypted`] for a key that does not fit the store.
    pub fn connect_with(url: &str, options: MysqlOptions) -> Result<MysqlStore> {
        let url = Url::parse(url)?;
        let target = url.describe();
        let what = "connecting";
        let located = |e: Error| match e {
            Error::Unavailable {
                what,
                detail,
                maybe_committed,
            } => Error::Unavailable {
                what,
                detail: format!("{target}: {detail}"),
                maybe_committed,
            },
            other => other,
        };
        // A TLS failure at connect is `Error::Tls`, as PostgreSQL's.
        let connect_error = |e: mysql::Error| match errors::tls_failure(&e) {
            Some(reason) => Error::Tls {
                target: target.clone(),
                reason,
            },
            None => located(my_error(what, e, false)),
        };
        // The first connection is made directly, not through the pool, so
        // that its error is the server's own; under PREFERRED it also
        // decides whether the pool uses TLS.
        let (mode, mut first) = match Conn::new(url.opts(&options, url.ssl_mode)) {
            Ok(conn) => (url.ssl_mode, conn),
            Err(mysql::Error::DriverError(mysql::DriverError::TlsNotSupported))
                if url.ssl_mode == SslMode::Preferred =>
            {
                let conn =
                    Conn::new(url.opts(&options, SslMode::Disabled)).map_err(connect_error)?;
                (SslMode::Disabled, conn)
            }
            Err(e) => return Err(connect_error(e)),
        };
        let sealing = Sealing::new(options.encryption.as_ref());
        schema::ensure(&mut first, &sealing, &target, options.create)?;
        let pool = |check_health: bool| {
            let opts = url.opts(&options, mode);
            let pool_opts = opts.get_pool_opts().clone().with_check_health(check_health);
            Pool::new(mysql::OptsBuilder::from_opts(opts).pool_opts(pool_opts))
                .map_err(|e| located(my_error(what, e, false)))
        };
        Ok(MysqlStore {
            // Reads and writes run again on a lost connection: no ping.
            pool: pool(false)?,
            // A refresh lock is taken rarely and must hold: pinged.
            lock_pool: pool(true)?,
            sealing,
            database: url.database.clone(),
            tls: mode != SslMode::Disabled,
            target,
            options,
        })
    }

    /// The database, as a URL without its password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Whether the connections are encrypted (TLS).
    pub fn uses_tls(&self) -> bool {
        self.tls
    }

    /// The options the store was connected with.
    pub fn options(&self) -> &MysqlOptions {
        &self.options
    }

    /// How many records are stored.
    ///
    /// # Errors
    /// [`Error::Unavailable`] and other server errors.
    pub fn len(&self) -> Result<usize> {
        let what = "counting records";
        let count: Option<u64> = self
            .conn(what)?
            .query_first("SELECT COUNT(*) FROM tokenstore_records")
            .map_err(map_my(what))?;
        Ok(usize::try_from(count.unwrap_or(0)).unwrap_or(usize::MAX))
    }

    /// Whether no record is stored.
    ///
    /// # Errors
    /// As for [`len`](Self::len).
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The space the store's tables and indexes take on the server, in
    /// bytes (InnoDB's estimate, as `information_schema` reports it).
    ///
    /// # Errors
    /// As for [`len`](Self::len).
    pub fn size_on_disk(&self) -> Result<u64> {
        let what = "measuring the tables";
        let size: Option<Option<u64>> = self
            .conn(what)?
            .query_first(
                "SELECT CAST(SUM(data_length + index_length) AS UNSIGNED) \
                 FROM information_schema.tables WHERE table_schema = DATABASE() \
                 AND table_name IN ('tokenstore_records', 'tokenstore_meta')",
            )
            .map_err(map_my(what))?;
        Ok(size.flatten().unwrap_or(0))
    }

    /// The last id the id counter issued (0 when none was).
    ///
    /// # Errors
    /// As for [`len`](Self::len).
    pub fn last_issued_id(&self) -> Result<u64> {
        let what = "reading the id counter";
        let last: Option<u64> = self
            .conn(what)?
            .query_first("SELECT last_issued_id FROM tokenstore_meta WHERE singleton = 1")
            .map_err(map_my(what))?;
        last.ok_or_else(|| Error::corruption(None, "the tokenstore_meta row is missing"))
    }

    /// Runs `stage` with a [`Batch`] and applies what it staged in one
    /// transaction: all of it or, when `stage` fails (or calls
    /// [`Batch::discard`]), none. Other writers, in every process, wait
    /// meanwhile; readers see none of it until it commits.
    ///
    /// ```no_run
    /// use tokenstore::{MysqlStore, OAuthToken};
    ///
    /// let store = MysqlStore::connect("mysql://app:secret@127.0.0.1/tokens")?;
    /// store.batch(|batch| {
    ///     for n in 0..3 {
    ///         let mut token = OAuthToken::new().with_user_name(format!("user{n}")).with_access_token(format!("a{n}"));
    ///         batch.save_token(&mut token)?;
    ///     }
    ///     Ok::<_, tokenstore::Error>(())
    /// })?;
    /// assert_eq!(store.len()?, 3);
    /// # Ok::<(), tokenstore::Error>(())
    /// ```
    ///
    /// # Errors
    /// What `stage` returns, [`Error::Conflict`], and server errors.
    pub fn batch<T, E>(
        &self,
        stage: impl FnOnce(&mut Batch<'_>) -> std::result::Result<T, E> + Send,
    ) -> std::result::Result<T, E>
    where
        T: Send,
        E: From<Error> + Send,
    {
        engine::batch(self, stage)
    }

    /// A pooled connection within the pool wait. Not pinged: a read that
    /// finds it lost runs again on another (`read`), a write's attempt is
    /// retried by the write loop.
    fn conn(&self, what: &'static str) -> Result<PooledConn> {
        self.pool
            .try_get_conn(self.options.pool_wait)
            .map_err(map_my(what))
    }
}

/// Makes a lost connection leave the pool when it is dropped. The pool
/// returns every connection it gets back unless resetting it fails (and
/// connections are not reset by default: transactions end before one goes
/// back), so a broken one is marked for a reset, which fails.
pub(super) fn discard(conn: &mut PooledConn) {
    conn.reset_connection(true);
}

impl Engine for MysqlStore {
    fn read<T: Send>(&self, read: impl Fn(&dyn StoreView) -> Result<T> + Send) -> Result<T> {
        // Connections are not pinged when taken from the pool (that was a
        // second round trip on every lookup): a read that finds its
        // connection lost (the server restarted, or closed it while idle)
        // runs again on another, the lost one discarded (`crate::retry`).
        // Reads change nothing.
        let what = "looking a record up";
        crate::retry::reading(
            self.options.pool_size_value(),
            crate::logging::MYSQL,
            what,
            || {
                let mut conn = self.conn(what)?;
                let view = View::new(&mut conn, &self.sealing);
                let done = read(&view);
                let lost = view.failed.get() == Some(Failure::Lost);
                done.map_err(|error| {
                    if lost {
                        discard(&mut conn);
                    }
                    Failed { error, lost }
                })
            },
        )
    }

    fn write<T: Send>(&self, replay: Replay, plan: &mut Plan<'_, T>) -> Result<T> {
        self.write_locked(replay, plan)
    }

    fn records(&self) -> Result<Vec<OAuthToken>> {
        let what = "reading every record";
        let rows: Vec<(Vec<u8>, Vec<u8>)> = self
            .conn(what)?
            .query("SELECT id, record FROM tokenstore_records")
            .map_err(map_my(what))?;
        rows.into_iter()
            .map(|(id, record)| self.sealing.decode(&id_text(id)?, &record))
            .collect()
    }

    fn clear(&self) -> Result<usize> {
        let what = "deleting every token";
        let failed = Cell::new(None);
        let mut conn = self.conn(what)?;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .map_err(map_my(what))?;
        self.lock_writes(&mut tx, what, &failed)?;
        tx.query_drop("DELETE FROM tokenstore_records")
            .map_err(map_my(what))?;
        let deleted = tx.affected_rows();
        write::commit(tx, what, &failed)?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    fn refresh_lock(&self, id: &str) -> Result<RefreshLock<'_>> {
        self.take_refresh_lock(id)
    }
}

impl Backend for MysqlStore {
    fn kind(&self) -> &'static str {
        "mysql"
    }

    fn location(&self) -> String {
        self.target.clone()
    }

    fn count(&self) -> Result<usize> {
        self.len()
    }

    fn last_issued_id(&self) -> Result<u64> {
        MysqlStore::last_issued_id(self)
    }

    fn check(&self) -> Result<CheckReport> {
        MysqlStore::check(self)
    }

    fn apply_batch(&self, stage: &mut Stage<'_>) -> Result<()> {
        engine::apply_batch(self, stage)
    }

    fn info(&self) -> Result<StoreInfo> {
        Ok(StoreInfo::new(
            Some(self.size_on_disk()?),
            schema::SCHEMA_VERSION,
            self.sealing.key_check().is_some(),
        ))
    }

    /// Re-seals every record with `key` (or stores them plain with `None`)
    /// in one transaction under the write lock: all records or none. Other
    /// processes still holding the old key get [`Error::WrongKey`] on
    /// their next write (and cannot decode records): reconnect them with
    /// the new key.
    fn set_encryption(
        &mut self,
        key: Option<Key>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        let what = "changing the encryption key";
        let new = Sealing::new(key.as_ref());
        let failed = Cell::new(None);
        {
            let mut conn = self.conn(what)?;
            let mut tx = conn
                .start_transaction(TxOpts::default())
                .map_err(map_my(what))?;
            self.lock_writes(&mut tx, what, &failed)?;
            let rows: Vec<(Vec<u8>, Vec<u8>)> = tx
                .query("SELECT id, record FROM tokenstore_records")
                .map_err(map_my(what))?;
            let total = rows.len();
            for (done, (id, bytes)) in rows.into_iter().enumerate() {
                let record = self.sealing.decode(&id_text(id)?, &bytes)?;
                write_row(
                    &mut tx,
                    &new,
                    &record,
                    &new.encode(&record)?,
                    true,
                    what,
                    &failed,
                )?;
                progress(done + 1, total);
            }
            // The new key's seal count starts with the records it sealed.
            let seals = if new.counts_seals() { total as u64 } else { 0 };
            let key_check = new.key_check().map(|check| check.to_vec());
            tx.exec_drop(
                "UPDATE tokenstore_meta SET format = ?, key_check = ?, seals = ? \
                 WHERE singleton = 1",
                (new.format_version(), key_check, seals),
            )
            .map_err(map_my(what))?;
            write::commit(tx, what, &failed)?;
        }
        self.sealing = new;
        self.options.encryption = key;
        Ok(())
    }
}
