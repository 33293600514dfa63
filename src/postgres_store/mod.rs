//! [`PostgresStore`]: the same [`TokenStore`] on a PostgreSQL server that
//! any number of processes, on any number of machines, share.
//!
//! # How it keeps SPEC.md across processes
//!
//! Every write is one transaction that plans with the shared planning of
//! `store.rs` (`plan_save`, or a [`Batch`]'s overlay, over a [`StoreView`]
//! of the transaction), applies the plan and commits; `Ok` means
//! committed. No lookup rule is written in SQL. Writers are serialized in
//! two ways, both around one advisory lock key:
//!
//! - `save_token` holds the lock in shared mode (taken at session level
//!   before `BEGIN`, so its snapshot includes every exclusive writer's
//!   commit) and runs `SERIALIZABLE`: concurrent saves run side by side and
//!   share commits, and the server aborts any that would not be
//!   serializable; the store then plans again from the newer state
//!   (serialization failures and deadlocks: up to 200 attempts, with a
//!   growing jittered pause). Two processes saving the same new user make
//!   one record: the second plans again, finds the first's record, and
//!   merges into it.
//! - `delete_token`, `delete_tokens`, batches and key changes hold it
//!   exclusively (`pg_advisory_xact_lock`) in READ COMMITTED: a batch's
//!   stage runs once and cannot be retried, so it must never be aborted.
//!
//! Reads take no lock and see committed data. UNIQUE constraints on the
//! digests of the four unique values are the last line of defence: a
//! violation that planning again does not explain is [`Error::Conflict`]
//! naming the field and the holding record.
//!
//! Why not one exclusive lock for saves too (the first version): the
//! commit's WAL flush happens while the lock is held, so every save in
//! every process waited for the previous one's fsync. Measured at 10,000
//! tokens over loopback on a 2-core machine, 8 writers updating existing
//! users: ~220 saves/s with the exclusive lock, ~1,700 with SERIALIZABLE
//! saves (`examples/bench_postgres.rs`).
//!
//! # Why the synchronous `postgres` client with an `r2d2` pool
//!
//! The [`TokenStore`] trait is synchronous, like the Zoho SDKs that call
//! it, so the store uses the synchronous `postgres` crate (the
//! `tokio-postgres` project's blocking front, well kept, no C library) and
//! `r2d2_postgres`, its pool: connections are reused, tested before each
//! use, and a broken one is dropped and replaced, so after a server restart
//! the next call reconnects. Driving `tokio-postgres` from a private
//! runtime would be the same thing written by hand.
//!
//! # Async callers
//!
//! The `postgres` client blocks the calling thread, and it panics when it
//! is used on a thread that is driving a tokio runtime ("Cannot start a
//! runtime from within a runtime"). `PostgresStore` never lets that
//! happen: called from inside a runtime, it moves the blocking work to a
//! short-lived thread of its own and waits for it, so it works, but it
//! still blocks the runtime's worker while it waits. In async code call it
//! through `tokio::task::spawn_blocking`.
//!
//! # Failures
//!
//! A server that is down, restarting or unreachable is
//! [`Error::Unavailable`], after at most the connect timeout (or the pool
//! wait); nothing was written unless `maybe_committed` says the connection
//! broke during the commit. Statements are bounded by the statement
//! timeout. The next call reconnects.
//!
//! TLS is not supported yet: use it on loopback, a private network, or
//! through a TLS tunnel.

mod check;
mod schema;

use std::cell::RefCell;
use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::Type;
use postgres::{GenericClient, NoTls};
use r2d2_postgres::PostgresConnectionManager;

use crate::backend::{Backend, StoreInfo};
use crate::batch::Batch;
use crate::check::CheckReport;
use crate::codec::Sealing;
use crate::engine::{self, Engine, Plan, Replay, Stage};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::plan::{StoreView, WriteSet};
use crate::store::RefreshLock;
use crate::token::{IndexedField, OAuthToken};

/// The write lock of every process sharing the database: held shared by
/// saves, exclusively by every other write.
const WRITE_LOCK: i64 = 0x746f_6b65_6e73_0002;
/// The first key of the two-key advisory locks taken by
/// [`TokenStore::refresh_lock`] (the second is a hash of the record id).
const REFRESH_LOCK_CLASS: i32 = 0x746f_6b65;

type Manager = PostgresConnectionManager<NoTls>;
type Pool = r2d2_postgres::r2d2::Pool<Manager>;
type Conn = r2d2_postgres::r2d2::PooledConnection<Manager>;

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
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    pool_size: u32,
    connect_timeout: Duration,
    pool_wait: Duration,
    statement_timeout: Duration,
    encryption: Option<Key>,
    create: bool,
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

    /// The pool size.
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

/// A [`TokenStore`] in a PostgreSQL database, shared by any number of
/// processes (feature `postgres`).
///
/// ```no_run
/// use tokenstore::{OAuthToken, PostgresStore, TokenStore};
///
/// let store = PostgresStore::connect("postgres://app@127.0.0.1:5432/tokens")?;
/// let mut token = OAuthToken::new().with_user_name("ana").with_refresh_token("1000.r");
/// store.save_token(&mut token)?; // committed before it returns
/// let found = store.find_token(&OAuthToken::new().with_user_name("ana"))?;
/// assert_eq!(found, Some(token));
/// # Ok::<(), tokenstore::Error>(())
/// ```
pub struct PostgresStore {
    /// `None` only while being dropped (see `Drop`).
    pool: Option<Pool>,
    /// Connections that hold refresh locks, apart so that a refresh holding
    /// a lock never waits for a connection held by a refresh waiting for it.
    lock_pool: Option<Pool>,
    sealing: Sealing,
    /// The URL without its password, for messages.
    target: String,
    options: PostgresOptions,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects with the default [`PostgresOptions`], creating the schema
    /// if the database has none.
    ///
    /// `url` is a libpq-style URL or key=value string, e.g.
    /// `postgres://user:password@host:5432/dbname`.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`], [`Error::Unavailable`] when the server cannot
    /// be reached, [`Error::UnsupportedVersion`] for a schema written by a
    /// newer version, [`Error::KeyRequired`] for an encrypted store,
    /// [`Error::Database`] when the server refuses (e.g. no privilege to
    /// create the tables).
    pub fn connect(url: &str) -> Result<PostgresStore> {
        Self::connect_with(url, PostgresOptions::default())
    }

    /// Connects with `options`.
    ///
    /// # Errors
    /// As for [`connect`](Self::connect), plus [`Error::WrongKey`] and
    /// [`Error::NotEncrypted`] for a key that does not fit the store.
    pub fn connect_with(url: &str, options: PostgresOptions) -> Result<PostgresStore> {
        let mut config = postgres::Config::from_str(url).map_err(|e| Error::InvalidUrl {
            reason: format!("{e} (expected postgres://user:password@host:port/dbname)"),
        })?;
        let target = describe(&config);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("tokenstore");
        }
        // A dead peer is noticed within a minute, not the kernel's 2 hours.
        config.keepalives_idle(Duration::from_secs(30));
        config.keepalives_interval(Duration::from_secs(10));
        config.keepalives_retries(3);
        let statement_ms = options.statement_timeout.as_millis().max(1);
        let server_options = match config.get_options() {
            Some(given) => format!("{given} -c statement_timeout={statement_ms}"),
            None => format!("-c statement_timeout={statement_ms}"),
        };
        config.options(&server_options);

        let pool = |size: u32| {
            Pool::builder()
                .max_size(size)
                .min_idle(Some(0))
                .connection_timeout(options.pool_wait)
                .error_handler(Box::new(r2d2_postgres::r2d2::NopErrorHandler))
                .build_unchecked(PostgresConnectionManager::new(config.clone(), NoTls))
        };
        let store = PostgresStore {
            pool: Some(pool(options.pool_size)),
            lock_pool: Some(pool(options.pool_size)),
            sealing: Sealing::new(options.encryption.as_ref()),
            target,
            options,
        };
        // The first connection is made directly, not through the pool,
        // which would retry a refused login or a missing database until
        // the pool wait ends: those fail at once, with the server's reason.
        store.off_runtime(|| {
            let mut first = config.connect(NoTls).map_err(map_pg("connecting"))?;
            schema::ensure(
                &mut first,
                &store.sealing,
                &store.target,
                store.options.create,
            )
        })?;
        Ok(store)
    }

    /// The database, as a URL without its password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The options the store was connected with.
    pub fn options(&self) -> &PostgresOptions {
        &self.options
    }

    /// How many records are stored.
    ///
    /// # Errors
    /// [`Error::Unavailable`] and other server errors.
    pub fn len(&self) -> Result<usize> {
        self.off_runtime(|| {
            let what = "counting records";
            let count: i64 = self
                .conn(what)?
                .query_one("SELECT count(*) FROM tokenstore_records", &[])
                .map_err(map_pg(what))?
                .get(0);
            Ok(usize::try_from(count).unwrap_or(usize::MAX))
        })
    }

    /// Whether no record is stored.
    ///
    /// # Errors
    /// As for [`len`](Self::len).
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The space the store's tables and indexes take on the server, in
    /// bytes.
    ///
    /// # Errors
    /// As for [`len`](Self::len).
    pub fn size_on_disk(&self) -> Result<u64> {
        self.off_runtime(|| {
            let what = "measuring the tables";
            let size: i64 = self
                .conn(what)?
                .query_one(
                    "SELECT pg_total_relation_size('tokenstore_records') \
                     + pg_total_relation_size('tokenstore_meta')",
                    &[],
                )
                .map_err(map_pg(what))?
                .get(0);
            Ok(u64::try_from(size).unwrap_or(0))
        })
    }

    /// The last id the id counter issued (0 when none was).
    ///
    /// # Errors
    /// As for [`len`](Self::len).
    pub fn last_issued_id(&self) -> Result<u64> {
        self.off_runtime(|| {
            let what = "reading the id counter";
            let mut conn = self.conn(what)?;
            read_last_issued(&mut *conn, what)
        })
    }

    /// Runs `stage` with a [`Batch`] and applies what it staged in one
    /// transaction: all of it or, when `stage` fails (or calls
    /// [`Batch::discard`]), none. Other writers, in every process, wait
    /// meanwhile; readers see none of it until it commits.
    ///
    /// ```no_run
    /// use tokenstore::{OAuthToken, PostgresStore};
    ///
    /// let store = PostgresStore::connect("postgres://app@127.0.0.1/tokens")?;
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

    /// A pooled connection, tested before it is handed out.
    fn conn(&self, what: &str) -> Result<Conn> {
        self.pool
            .as_ref()
            .expect("the pool lives as long as the store")
            .get()
            .map_err(|e| unavailable(what, e.to_string(), false))
    }

    /// The conflict a unique constraint reported for `field`, completed
    /// with the id of the row whose digest column holds the value one of
    /// `candidates` wanted (the failed transaction is rolled back by then).
    fn conflict_holder<'r>(
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

    /// Runs `work` here, or, when this thread drives a tokio runtime (where
    /// the blocking client would panic), on a thread of its own.
    fn off_runtime<T: Send>(&self, work: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        self.off_runtime_any(work)
    }

    fn off_runtime_any<T: Send, E: Send>(
        &self,
        work: impl FnOnce() -> std::result::Result<T, E> + Send,
    ) -> std::result::Result<T, E> {
        if !in_runtime() {
            return work();
        }
        std::thread::scope(|scope| match scope.spawn(work).join() {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    }
}

fn in_runtime() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Dropping a connection drops its private runtime, which tokio
        // refuses (with a panic) on a thread driving another runtime.
        if in_runtime() {
            let pools = (self.pool.take(), self.lock_pool.take());
            std::thread::scope(|scope| {
                scope.spawn(move || drop(pools));
            });
        }
    }
}

/// The store as seen through one connection or transaction.
pub(crate) struct View<'a, C> {
    conn: RefCell<&'a mut C>,
    sealing: &'a Sealing,
}

impl<'a, C: GenericClient> View<'a, C> {
    fn new(conn: &'a mut C, sealing: &'a Sealing) -> Self {
        View {
            conn: RefCell::new(conn),
            sealing,
        }
    }
}

fn select_by_digest(field: IndexedField) -> &'static str {
    match field {
        IndexedField::UserName => {
            "SELECT id, record FROM tokenstore_records WHERE user_name_digest = $1"
        }
        IndexedField::AccessToken => {
            "SELECT id, record FROM tokenstore_records WHERE access_token_digest = $1"
        }
        IndexedField::RefreshToken => {
            "SELECT id, record FROM tokenstore_records WHERE refresh_token_digest = $1"
        }
        IndexedField::GrantToken => {
            "SELECT id, record FROM tokenstore_records WHERE grant_token_digest = $1"
        }
    }
}

impl<C: GenericClient> StoreView for View<'_, C> {
    fn record(&self, id: &str) -> Result<Option<OAuthToken>> {
        let what = "reading a record";
        let row = self
            .conn
            .borrow_mut()
            .query_typed_opt(
                "SELECT record FROM tokenstore_records WHERE id = $1",
                &[(&id, Type::TEXT)],
            )
            .map_err(map_pg(what))?;
        match row {
            Some(row) => self.sealing.decode(id, col(&row, 0)?).map(Some),
            None => Ok(None),
        }
    }

    fn contains(&self, id: &str) -> Result<bool> {
        let what = "reading a record";
        let row = self
            .conn
            .borrow_mut()
            .query_typed_opt(
                "SELECT 1 FROM tokenstore_records WHERE id = $1",
                &[(&id, Type::TEXT)],
            )
            .map_err(map_pg(what))?;
        Ok(row.is_some())
    }

    fn record_with(&self, field: IndexedField, value: &str) -> Result<Option<OAuthToken>> {
        let what = "looking a record up";
        let digest = self.sealing.digest(value);
        let digest: &[u8] = &digest;
        let row = self
            .conn
            .borrow_mut()
            .query_typed_opt(select_by_digest(field), &[(&digest, Type::BYTEA)])
            .map_err(map_pg(what))?;
        let Some(row) = row else { return Ok(None) };
        let id: &str = col(&row, 0)?;
        let record = self.sealing.decode(id, col(&row, 1)?)?;
        // Another value with the same digest is not this value.
        Ok((record.indexed(field) == Some(value)).then_some(record))
    }
}

impl Engine for PostgresStore {
    fn read<T: Send>(&self, read: impl FnOnce(&dyn StoreView) -> Result<T> + Send) -> Result<T> {
        self.off_runtime(|| {
            let mut conn = self.conn("looking a record up")?;
            read(&View::new(&mut *conn, &self.sealing))
        })
    }

    fn write<T: Send>(&self, replay: Replay, plan: &mut Plan<'_, T>) -> Result<T> {
        self.off_runtime(|| match replay {
            Replay::Allowed => self.write_shared(plan),
            Replay::Never => self.write_exclusive(plan),
        })
    }

    fn records(&self) -> Result<Vec<OAuthToken>> {
        self.off_runtime(|| {
            let what = "reading every record";
            let rows = self
                .conn(what)?
                .query("SELECT id, record FROM tokenstore_records", &[])
                .map_err(map_pg(what))?;
            rows.iter()
                .map(|row| self.sealing.decode(col(row, 0)?, col(row, 1)?))
                .collect()
        })
    }

    fn clear(&self) -> Result<usize> {
        self.off_runtime(|| {
            let what = "deleting every token";
            let mut conn = self.conn(what)?;
            let mut tx = conn.transaction().map_err(map_pg(what))?;
            schema::lock_writes(&mut tx, what)?;
            let deleted = tx
                .execute("DELETE FROM tokenstore_records", &[])
                .map_err(map_pg(what))?;
            commit(tx, what)?;
            Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
        })
    }

    /// Takes a transaction-scoped advisory lock keyed on `id`, on a
    /// connection of its own (from a second pool) held by a thread of its
    /// own, which also keeps the blocking client off any async runtime of
    /// the caller: exclusive across every process sharing the database, for
    /// this id only. It is released when the guard drops (also when the
    /// caller panics), and by the server if this process dies. Waiting for
    /// it is bounded by the statement timeout ([`Error::Unavailable`] past
    /// it).
    ///
    /// If the lock's connection breaks while it is held, the server
    /// releases the lock early; the refresher's re-read before it asks the
    /// accounts server keeps that harmless in practice.
    fn refresh_lock(&self, id: &str) -> Result<RefreshLock<'_>> {
        let key = refresh_lock_key(id);
        let lock_pool = self
            .lock_pool
            .clone()
            .expect("the pool lives as long as the store");
        let (acquired_tx, acquired) = mpsc::channel::<Result<()>>();
        let (release, release_rx) = mpsc::channel::<()>();
        let holder = std::thread::Builder::new()
            .name("tokenstore-refresh-lock".into())
            .spawn(move || {
                let what = "taking the refresh lock";
                let locked = (|| {
                    let mut conn = lock_pool
                        .get()
                        .map_err(|e| unavailable(what, e.to_string(), false))?;
                    let mut tx = conn.transaction().map_err(map_pg(what))?;
                    tx.query_typed(
                        "SELECT pg_advisory_xact_lock($1, $2)",
                        &[(&REFRESH_LOCK_CLASS, Type::INT4), (&key, Type::INT4)],
                    )
                    .map_err(map_pg(what))?;
                    let _ = acquired_tx.send(Ok(()));
                    // Until the guard drops `release`.
                    let _ = release_rx.recv();
                    let _ = tx.rollback();
                    Ok(())
                })();
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

/// The thread holding a refresh lock's transaction, told to end it (and
/// waited for) when this drops.
struct HeldLock {
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
fn refresh_lock_key(id: &str) -> i32 {
    let hash = blake3::derive_key("tokenstore 2026-11 refresh lock v1", id.as_bytes());
    i32::from_le_bytes([hash[0], hash[1], hash[2], hash[3]])
}

fn read_last_issued(conn: &mut impl GenericClient, what: &'static str) -> Result<u64> {
    let row = conn
        .query_one("SELECT last_issued_id FROM tokenstore_meta", &[])
        .map_err(map_pg(what))?;
    let last: i64 = col(&row, 0)?;
    u64::try_from(last).map_err(|_| Error::corruption(None, "the stored id counter is negative"))
}

impl PostgresStore {
    /// Under the write lock: the id counter, after checking that the store
    /// still has this handle's key (another process may have changed it
    /// with [`Backend::set_encryption`]; writing with the old one would
    /// mix keys).
    fn begin_write(&self, tx: &mut postgres::Transaction<'_>, what: &'static str) -> Result<u64> {
        schema::lock_writes(tx, what)?;
        self.counter_and_key(tx, what)
    }

    /// A write whose plan may run again (a save, a delete): the write lock
    /// in shared mode (taken at session level before `BEGIN`, so the
    /// snapshot includes every exclusive writer's commit), then the plan
    /// and its writes in a SERIALIZABLE transaction, run again (with a
    /// growing, jittered pause) while the server reports a serialization
    /// failure, a deadlock, or a unique value taken by a concurrent write:
    /// the plan then sees the other write.
    fn write_shared<T>(&self, plan: &mut Plan<'_, T>) -> Result<T> {
        let what = "saving a token";
        let mut conn = self.conn(what)?;
        conn.query_typed(
            "SELECT pg_advisory_lock_shared($1)",
            &[(&WRITE_LOCK, Type::INT8)],
        )
        .map_err(map_pg(what))?;
        let written = self.write_serializable(&mut conn, plan, what);
        let unlocked = conn.query_typed(
            "SELECT pg_advisory_unlock_shared($1)",
            &[(&WRITE_LOCK, Type::INT8)],
        );
        if unlocked.is_err() && !conn.is_closed() {
            // Never hand a connection holding the lock back to the pool.
            let _ = conn.batch_execute("SELECT pg_terminate_backend(pg_backend_pid())");
        }
        written
    }

    fn write_serializable<T>(
        &self,
        conn: &mut postgres::Client,
        plan: &mut Plan<'_, T>,
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
                    .map_err(map_pg(what))?;
                let last_issued = self.counter_and_key(&mut tx, what)?;
                let (out, writes) = plan(&View::new(&mut tx, &self.sealing), last_issued)?;
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
            if attempt >= ATTEMPTS {
                return Err(unavailable(
                    what,
                    format!(
                        "gave up after {ATTEMPTS} attempts that conflicted with concurrent saves"
                    ),
                    false,
                ));
            }
            if attempt > 2 {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let jitter =
                    u64::from(now.subsec_nanos() % 97) + u64::from(std::process::id() % 89);
                let ceiling = 50u64 << attempt.min(8);
                std::thread::sleep(Duration::from_micros(jitter * ceiling / 186));
            }
        }
    }

    /// A write whose plan runs a caller's closure once (a batch): the write
    /// lock exclusively, READ COMMITTED, never retried.
    fn write_exclusive<T>(&self, plan: &mut Plan<'_, T>) -> Result<T> {
        let what = "applying a batch";
        let mut conn = self.conn(what)?;
        let mut tx = conn.transaction().map_err(map_pg(what))?;
        let last_issued = self.begin_write(&mut tx, what)?;
        let (out, writes) = plan(&View::new(&mut tx, &self.sealing), last_issued)?;
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
                    Err(self.conflict_holder(&mut conn, e, field, candidates))
                }
                None => Err(e),
            },
        }
    }

    /// Writes `writes` in `tx`: each record (sealed and counted by the
    /// codec) with its digests, each deletion, the id counter and the seal
    /// count.
    fn apply_writes(
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
        let encoded = self
            .sealing
            .encode_writes(writes, sealed_before, &location)?;
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
    fn counter_and_key(
        &self,
        tx: &mut postgres::Transaction<'_>,
        what: &'static str,
    ) -> Result<u64> {
        let row = tx
            .query_one("SELECT last_issued_id, key_check FROM tokenstore_meta", &[])
            .map_err(map_pg(what))?;
        let stored: Option<&[u8]> = col(&row, 1)?;
        let ours = self.sealing.key_check().map(|check| check.as_slice());
        if stored != ours {
            let path = std::path::PathBuf::from(&self.target);
            return Err(match (stored, ours) {
                (Some(_), None) => Error::KeyRequired { path },
                (None, Some(_)) => Error::NotEncrypted { path },
                _ => Error::WrongKey { path },
            });
        }
        let last: i64 = col(&row, 0)?;
        u64::try_from(last)
            .map_err(|_| Error::corruption(None, "the stored id counter is negative"))
    }
}

fn write_last_issued(
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
fn commit(tx: postgres::Transaction<'_>, what: &'static str) -> Result<()> {
    tx.commit().map_err(|e| pg_error(what, e, true))
}

fn unavailable(what: &str, detail: String, maybe_committed: bool) -> Error {
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

fn pg_error(what: &'static str, e: postgres::Error, committing: bool) -> Error {
    let Some(db) = e.as_db_error() else {
        // The connection broke, timed out or was closed: during a commit
        // the server may have committed before it went.
        return unavailable(what, e.to_string(), committing);
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
    let going_away = code.code().starts_with("08")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW;
    if going_away {
        return unavailable(what, db.message().to_owned(), committing);
    }
    Error::Database {
        code: code.code().to_owned(),
        detail: format!("{} while {what}", db.message()),
    }
}

/// `postgres://user@host:port/dbname`: the URL without its password.
fn describe(config: &postgres::Config) -> String {
    use postgres::config::Host;
    let user = config
        .get_user()
        .map(|user| format!("{user}@"))
        .unwrap_or_default();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            Host::Tcp(name) => format!("{name}:{port}"),
            #[cfg(unix)]
            Host::Unix(path) => format!("{}:{port}", path.display()),
        })
        .collect();
    let dbname = config.get_dbname().unwrap_or_default();
    format!("postgres://{user}{}/{dbname}", hosts.join(","))
}

impl Backend for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn location(&self) -> String {
        self.target.clone()
    }

    fn count(&self) -> Result<usize> {
        self.len()
    }

    fn last_issued_id(&self) -> Result<u64> {
        PostgresStore::last_issued_id(self)
    }

    fn check(&self) -> Result<CheckReport> {
        PostgresStore::check(self)
    }

    fn apply_batch(&self, stage: &mut Stage<'_>) -> Result<()> {
        engine::apply_batch(self, stage)
    }

    fn info(&self) -> Result<StoreInfo> {
        Ok(StoreInfo::new(
            Some(self.size_on_disk()?),
            schema::SCHEMA_VERSION as u32,
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
        if in_runtime() {
            return Err(Error::Unsupported {
                operation: "changing the key from inside an async runtime".into(),
                backend: "postgres",
                instead: "call it from tokio::task::spawn_blocking".into(),
            });
        }
        let what = "changing the encryption key";
        let new = Sealing::new(key.as_ref());
        {
            let mut conn = self.conn(what)?;
            let mut tx = conn.transaction().map_err(map_pg(what))?;
            self.begin_write(&mut tx, what)?;
            tx.batch_execute("SET CONSTRAINTS ALL DEFERRED")
                .map_err(map_pg(what))?;
            let rows = tx
                .query("SELECT id, record FROM tokenstore_records", &[])
                .map_err(map_pg(what))?;
            let total = rows.len();
            for (done, row) in rows.iter().enumerate() {
                let record = self.sealing.decode(col(row, 0)?, col(row, 1)?)?;
                write_row(&mut tx, &new, &record, &new.encode(&record)?, what)?;
                progress(done + 1, total);
            }
            // The new key's seal count starts with the records it sealed.
            let sealed = i64::try_from(total).unwrap_or(i64::MAX);
            tx.query_typed(
                "SELECT setval('tokenstore_seals', greatest($1, 1), $1 > 0)",
                &[(&sealed, Type::INT8)],
            )
            .map_err(map_pg(what))?;
            let format = i16::from(new.format_version());
            let key_check = new.key_check().map(|check| check.to_vec());
            tx.query_typed(
                "UPDATE tokenstore_meta SET format = $1, key_check = $2",
                &[(&format, Type::INT2), (&key_check, Type::BYTEA)],
            )
            .map_err(map_pg(what))?;
            commit(tx, what)?;
        }
        self.sealing = new;
        self.options.encryption = key;
        Ok(())
    }
}

/// The seal count after reserving `n` seals from the store's sequence,
/// which never goes back (a rolled-back write keeps its reservation, so the
/// count errs on the safe side) and takes no row lock, so concurrent saves
/// do not conflict over it.
fn reserve_seals(tx: &mut postgres::Transaction<'_>, n: usize, what: &'static str) -> Result<u64> {
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
fn unique_violation(e: &Error) -> Option<IndexedField> {
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
fn write_row(
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
