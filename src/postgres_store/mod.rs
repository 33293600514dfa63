//! [`PostgresStore`]: the same [`TokenStore`] on a PostgreSQL server that
//! any number of processes, on any number of machines, share.
//!
//! # How it keeps docs/SPEC.md across processes
//!
//! Every write is one transaction that plans with the shared planning of
//! `plan.rs` (an overlay over a [`StoreView`] of the transaction, staging a
//! write set), applies the write set and commits; `Ok` means committed. No
//! lookup rule is written in SQL. Writers are serialized in two ways, both
//! around one advisory lock key (`write.rs`):
//!
//! - `save_token` and `delete_token`, whose plans may run again, hold the
//!   lock in shared mode (taken at session level
//!   before `BEGIN`, so its snapshot includes every exclusive writer's
//!   commit) and runs `SERIALIZABLE`: concurrent saves run side by side and
//!   share commits, and the server aborts any that would not be
//!   serializable; the store then plans again from the newer state
//!   (serialization failures and deadlocks: up to 200 attempts, with a
//!   growing jittered pause). Two processes saving the same new user make
//!   one record: the second plans again, finds the first's record, and
//!   merges into it.
//! - `delete_tokens`, batches and key changes hold it exclusively
//!   (`pg_advisory_xact_lock`) in READ COMMITTED: a batch's stage runs
//!   once and cannot be retried, so it must never be aborted.
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
//! `r2d2_postgres`, its pool: connections are reused and a broken one is
//! dropped and replaced. Driving `tokio-postgres` from a private runtime
//! would be the same thing written by hand.
//!
//! The pool does not test a connection when it hands it out (r2d2's
//! default, an empty query, made every lookup two round trips). A
//! connection may then be one the server closed while it sat in the pool
//! (a restart closes them all; `pg_terminate_backend` or an idle session
//! time-out some): work that finds its connection lost before anything
//! could have been committed discards it and runs again on another, at
//! once as often as the pool may hold such connections (`crate::retry`,
//! shared with MySQL). Reads always may; a save or a delete whenever the
//! COMMIT was not sent; a batch only when its stage has not run yet; a
//! refresh lock before it is held.
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
//! broke during the commit (never run again: it may have landed).
//! Statements are bounded by the statement timeout. The next call
//! reconnects; connections lost while pooled are not seen (above).
//!
//!
//! # TLS
//!
//! Connection strings are read as libpq reads them (`conninfo.rs`):
//! `sslmode` (disable, allow, prefer — the default —, require, verify-ca,
//! verify-full), `sslrootcert` (a PEM file, or `system` for the public
//! CAs), `sslcert`/`sslkey`, `channel_binding`, and the `PG*` variables for
//! what the string leaves out. TLS is rustls with the ring provider
//! (`tls.rs`, which tabulates what each mode does here and where it differs
//! from libpq). A certificate that is not trusted or does not name the host,
//! a server without TLS where it is required, a refused client certificate,
//! or a server that wants TLS where none was asked for is [`Error::Tls`],
//! from the first connection, within the connect timeout.

mod check;
mod conninfo;
mod errors;
mod options;
mod pool;
mod refresh_lock;
mod schema;
mod tls;
mod view;
mod write;

pub(crate) use errors::{col, map_pg};
use errors::{commit, noting, unavailable};
pub use options::PostgresOptions;
use view::{select_by_digest, View};
use write::read_last_issued;
use write::write_row;

use std::cell::{Cell, RefCell};
use std::sync::mpsc;
use std::time::Duration;

use pool::{Conn, Pool};
use postgres::error::SqlState;
use postgres::types::Type;
use postgres::GenericClient;

use crate::backend::{Backend, StoreInfo};
use crate::batch::Batch;
use crate::check::CheckReport;
use crate::codec::Sealing;
use crate::engine::{self, Engine, Plan, Replay, Stage};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::plan::{StoreView, WriteSet};
use crate::retry::Failed;
use crate::store::RefreshLock;
use crate::token::{IndexedField, OAuthToken};

/// The write lock of every process sharing the database: held shared by
/// saves, exclusively by every other write.
const WRITE_LOCK: i64 = 0x746f_6b65_6e73_0002;
/// The first key of the two-key advisory locks taken by
/// [`TokenStore::refresh_lock`] (the second is a hash of the record id).
const REFRESH_LOCK_CLASS: i32 = 0x746f_6b65;

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
///
/// Over TLS, the server's certificate checked against a CA bundle and its
/// host name (libpq's parameters; the password from `PGPASSWORD`), with
/// the causes a caller may meet:
///
/// ```no_run
/// use tokenstore::{Error, PostgresStore};
///
/// let url = "postgres://app@mydb.xxxx.eu-west-1.rds.amazonaws.com:5432/tokens\
///            ?sslmode=verify-full&sslrootcert=/etc/ssl/rds-global-bundle.pem";
/// match PostgresStore::connect(url) {
///     Ok(store) => println!("connected to {}", store.target()),
///     // Untrusted certificate, wrong host name, no TLS on the server, ...
///     Err(e @ Error::Tls { .. }) => eprintln!("{e}"),
///     // No such file, verify-full without a root file, an unknown sslmode.
///     Err(e @ Error::InvalidUrl { .. }) => eprintln!("{e}"),
///     Err(e) => eprintln!("cannot connect: {e}"),
/// }
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
    /// `postgres://user:password@host:5432/dbname`, or with TLS checked
    /// against a CA bundle:
    /// `postgres://app@db.example.com/tokens?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem`
    /// (see the module's TLS section and docs/SPEC.md §6).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] (also for a missing `sslrootcert` file),
    /// [`Error::Unavailable`] when the server cannot be reached,
    /// [`Error::Tls`] when TLS fails as asked, [`Error::UnsupportedVersion`] for a schema written by a
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
        let conninfo::Conninfo { mut config, tls } = conninfo::parse(
            url,
            &|name| std::env::var(name).ok(),
            std::env::var_os("HOME").map(Into::into),
        )?;
        let target: std::sync::Arc<str> = describe(&config).into();
        let (ssl_mode, connector) = tls::connector(&tls, &config)?;
        let tls = std::sync::Arc::new(tls);
        config.ssl_mode(ssl_mode);
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
                // Lost connections are found by the work that meets them.
                .test_on_check_out(false)
                .connection_timeout(options.pool_wait)
                .error_handler(Box::new(r2d2_postgres::r2d2::NopErrorHandler))
                .build_unchecked(pool::Manager::new(
                    config.clone(),
                    connector.clone(),
                    tls.clone(),
                    target.clone(),
                ))
        };
        let store = PostgresStore {
            pool: Some(pool(options.pool_size)),
            lock_pool: Some(pool(options.pool_size)),
            sealing: Sealing::new(options.encryption.as_ref()),
            target: target.to_string(),
            options,
        };
        // The first connection is made directly, not through the pool,
        // which would retry a refused login, a missing database or a
        // certificate it does not trust until the pool wait ends, and then
        // say only that it timed out: those fail at once, with the reason.
        store.off_runtime(|| {
            let mut first = config.connect(connector.clone()).map_err(|e| {
                tls::explain(&e, &tls, &store.target).unwrap_or_else(|| map_pg("connecting")(e))
            })?;
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
        self.reading("counting records", |conn, what, lost| {
            let count: i64 = conn
                .query_one("SELECT count(*) FROM tokenstore_records", &[])
                .map_err(noting(what, lost))?
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
        self.reading("measuring the tables", |conn, what, lost| {
            let size: i64 = conn
                .query_one(
                    "SELECT pg_total_relation_size('tokenstore_records') \
                     + pg_total_relation_size('tokenstore_meta')",
                    &[],
                )
                .map_err(noting(what, lost))?
                .get(0);
            Ok(u64::try_from(size).unwrap_or(0))
        })
    }

    /// The last id the id counter issued (0 when none was).
    ///
    /// # Errors
    /// As for [`len`](Self::len).
    pub fn last_issued_id(&self) -> Result<u64> {
        self.reading("reading the id counter", read_last_issued)
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

    /// The store's pool: its connections are not tested when taken, work
    /// that finds one lost runs again on another (`reading`, `writing`).
    fn pool(&self) -> &Pool {
        self.pool
            .as_ref()
            .expect("the pool lives as long as the store")
    }

    /// Runs `query`, which changes nothing, on a pooled connection, off any
    /// runtime, and again on another while it finds its connection lost
    /// (`crate::retry::reading`). `query` notes a lost connection in the
    /// cell it is given (with [`noting`]); a connection that the client has
    /// seen closed counts too.
    fn reading<T: Send>(
        &self,
        what: &'static str,
        query: impl Fn(&mut postgres::Client, &'static str, &Cell<bool>) -> Result<T> + Send,
    ) -> Result<T> {
        self.off_runtime(move || {
            crate::retry::reading(
                self.options.pool_size,
                crate::logging::POSTGRES,
                what,
                || self.attempt(what, |conn, lost| query(conn, what, lost)),
            )
        })
    }

    /// Runs `write` on a pooled connection, and again on another while it
    /// finds its connection lost before anything could have been committed
    /// (`crate::retry::writing`). `write` notes a lost connection in the
    /// cell it is given (with [`noting`]); a connection that the client has
    /// seen closed counts too, unless the error says the COMMIT was sent.
    fn writing<T>(
        &self,
        what: &'static str,
        mut write: impl FnMut(&mut Conn, &Cell<bool>) -> Result<T>,
    ) -> Result<T> {
        crate::retry::writing(
            self.options.pool_size,
            crate::logging::POSTGRES,
            what,
            || self.attempt(what, &mut write),
        )
    }

    /// One attempt of `work` on a pooled connection. `work` notes a lost
    /// connection in the cell it is given (with [`noting`]); the failure
    /// says whether the attempt may run again on another (see [`failed`]).
    fn attempt<T>(
        &self,
        what: &'static str,
        work: impl FnOnce(&mut Conn, &Cell<bool>) -> Result<T>,
    ) -> std::result::Result<T, Failed> {
        attempt_on(self.pool(), what, work)
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

/// A connection from `pool`, not tested.
fn take(pool: &Pool, what: &str) -> Result<Conn> {
    pool.get()
        .map_err(|e| unavailable(what, e.to_string(), false))
}

/// One attempt of `work` on a connection from `pool` (the store's, or the
/// refresh locks'): see [`PostgresStore::attempt`].
fn attempt_on<T>(
    pool: &Pool,
    what: &'static str,
    work: impl FnOnce(&mut Conn, &Cell<bool>) -> Result<T>,
) -> std::result::Result<T, Failed> {
    let mut conn = take(pool, what)?;
    let lost = Cell::new(false);
    work(&mut conn, &lost).map_err(|e| failed(&mut conn, e, lost.get()))
}

/// How an attempt on `conn` failed with `error`. When the connection is
/// gone (an error said so, `noted`, or the client has seen it close since:
/// at the latest when it rolled back the attempt's transaction) it is
/// discarded, and the attempt may run again, unless `error` says that a
/// COMMIT may have landed.
fn failed(conn: &mut Conn, error: Error, noted: bool) -> Failed {
    let gone = noted || conn.is_closed();
    if gone {
        pool::discard(conn);
    }
    let maybe_committed = matches!(
        error,
        Error::Unavailable {
            maybe_committed: true,
            ..
        }
    );
    Failed {
        error,
        lost: gone && !maybe_committed,
    }
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

impl Engine for PostgresStore {
    fn read<T: Send>(&self, read: impl Fn(&dyn StoreView) -> Result<T> + Send) -> Result<T> {
        self.reading("looking a record up", move |conn, _, lost| {
            read(&View::new(conn, &self.sealing, lost))
        })
    }

    fn write<T: Send>(&self, replay: Replay, plan: &mut Plan<'_, T>) -> Result<T> {
        self.off_runtime(|| match replay {
            Replay::Allowed => self.write_shared(plan),
            Replay::Never => self.write_exclusive(plan),
        })
    }

    fn records(&self) -> Result<Vec<OAuthToken>> {
        self.reading("reading every record", |conn, what, lost| {
            let rows = conn
                .query("SELECT id, record FROM tokenstore_records", &[])
                .map_err(noting(what, lost))?;
            rows.iter()
                .map(|row| self.sealing.decode(col(row, 0)?, col(row, 1)?))
                .collect()
        })
    }

    fn clear(&self) -> Result<usize> {
        let what = "deleting every token";
        self.off_runtime(|| {
            // Nothing is deleted unless the COMMIT lands: run again on a
            // connection lost before it.
            self.writing(what, |conn, lost| {
                let mut tx = conn.transaction().map_err(noting(what, lost))?;
                schema::lock_writes(&mut tx, what)?;
                let deleted = tx
                    .execute("DELETE FROM tokenstore_records", &[])
                    .map_err(map_pg(what))?;
                commit(tx, what)?;
                Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
            })
        })
    }

    fn refresh_lock(&self, id: &str) -> Result<RefreshLock<'_>> {
        self.take_refresh_lock(id)
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
        // Nothing changes unless the COMMIT lands: run again (progress
        // from the start) on a connection lost before it.
        self.writing(what, |conn, lost| {
            let mut tx = conn.transaction().map_err(noting(what, lost))?;
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
            commit(tx, what)
        })?;
        self.sealing = new;
        self.options.encryption = key;
        Ok(())
    }
}
