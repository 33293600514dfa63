//! The conformance suite of docs/SPEC.md §1–§3, written once over
//! `&dyn TokenStore` and run against every backend.

mod cases;
#[cfg(all(feature = "mysql", feature = "server-tests"))]
#[path = "../support/mysql.rs"]
mod mysql_db;
#[cfg(all(feature = "postgres", feature = "server-tests"))]
#[path = "../support/postgres.rs"]
mod postgres_db;
#[path = "../support/shared.rs"]
mod shared;
#[path = "../support/tokens.rs"]
mod tokens;

use std::ops::Deref;

use tokenstore::{MemoryStore, Options, SledStore, TokenStore};

/// A store under test, with whatever must live as long as it.
pub struct Fixture {
    store: Box<dyn TokenStore + Send + Sync>,
    /// Other processes on the store (the owner of a shared one), declared
    /// after it so that the store closes first; killed and reaped on drop.
    _procs: Vec<shared::Proc>,
    _dir: Option<tempfile::TempDir>,
    /// Declared after the store, so the store's connections close before
    /// the database is dropped.
    #[cfg(all(feature = "postgres", feature = "server-tests"))]
    _db: Option<postgres_db::TestDb>,
    #[cfg(all(feature = "mysql", feature = "server-tests"))]
    _mysql: Option<mysql_db::TestDb>,
}

impl Deref for Fixture {
    type Target = dyn TokenStore + Send + Sync;
    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

fn memory() -> Fixture {
    Fixture {
        _procs: Vec::new(),
        store: Box::new(MemoryStore::new()),
        _dir: None,
        #[cfg(all(feature = "postgres", feature = "server-tests"))]
        _db: None,
        #[cfg(all(feature = "mysql", feature = "server-tests"))]
        _mysql: None,
    }
}

fn sled_with(options: Options) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open_with(dir.path().join("db"), options).expect("open sled store");
    Fixture {
        _procs: Vec::new(),
        store: Box::new(store),
        _dir: Some(dir),
        #[cfg(all(feature = "postgres", feature = "server-tests"))]
        _db: None,
        #[cfg(all(feature = "mysql", feature = "server-tests"))]
        _mysql: None,
    }
}

fn sled() -> Fixture {
    sled_with(Options::default())
}

fn sled_buffered() -> Fixture {
    sled_with(Options::default().durability(tokenstore::Durability::BUFFERED))
}

fn sled_encrypted() -> Fixture {
    let key = tokenstore::Key::generate().expect("a random key");
    sled_with(Options::default().encryption(key))
}

/// Without the record cache: every read goes to sled.
fn sled_uncached() -> Fixture {
    sled_with(Options::default().record_cache(0))
}

/// A `PostgresStore` on a database of its own, or `None` (SKIPPED) without
/// a test server.
#[cfg(all(feature = "postgres", feature = "server-tests"))]
fn postgres_with(test: &str, options: tokenstore::PostgresOptions) -> Option<Fixture> {
    let db = postgres_db::TestDb::new(test)?;
    let store = tokenstore::PostgresStore::connect_with(&db.url, options).expect("connect");
    Some(Fixture {
        _procs: Vec::new(),
        store: Box::new(store),
        _dir: None,
        _db: Some(db),
        #[cfg(all(feature = "mysql", feature = "server-tests"))]
        _mysql: None,
    })
}

#[cfg(all(feature = "postgres", feature = "server-tests"))]
fn postgres(test: &str) -> Option<Fixture> {
    postgres_with(test, tokenstore::PostgresOptions::default())
}

#[cfg(all(feature = "postgres", feature = "server-tests"))]
fn postgres_encrypted(test: &str) -> Option<Fixture> {
    let key = tokenstore::Key::generate().expect("a random key");
    postgres_with(test, tokenstore::PostgresOptions::default().encryption(key))
}

/// The embedded store as `tokenstore::open` hands it out: behind `AnyStore`.
fn opened_sled() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("db");
    let store = tokenstore::open(path.to_str().expect("UTF-8 temp path")).expect("open");
    Fixture {
        _procs: Vec::new(),
        store: Box::new(store),
        _dir: Some(dir),
        #[cfg(all(feature = "postgres", feature = "server-tests"))]
        _db: None,
        #[cfg(all(feature = "mysql", feature = "server-tests"))]
        _mysql: None,
    }
}

/// The owner of a shared store: another process (this test binary run as
/// the ignored test `child_process`) that opened `path` with
/// `tokenstore::open` and serves it until its stdin closes.
fn owner_process(path: &std::path::Path) -> shared::Proc {
    let mut owner = shared::Proc::spawn("owner", path, &[]);
    let (role, owner_pid) = owner.ready();
    assert_eq!((role.as_str(), owner_pid), ("owner", owner.pid()));
    owner
}

/// The embedded store opened with `tokenstore::open` while another process
/// owns it: every case runs through a client.
fn shared_client() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("db");
    let owner = owner_process(&path);
    let store = tokenstore::open(path.to_str().expect("UTF-8 temp path")).expect("open");
    assert_eq!(store.kind(), "sled");
    let (role, owner_pid, _) = shared::sharing(&store);
    assert_eq!(
        (role, owner_pid),
        ("client", owner.pid()),
        "a second process opening an owned store is its client"
    );
    Fixture {
        store: Box::new(store),
        _procs: vec![owner],
        _dir: Some(dir),
        #[cfg(all(feature = "postgres", feature = "server-tests"))]
        _db: None,
        #[cfg(all(feature = "mysql", feature = "server-tests"))]
        _mysql: None,
    }
}

/// A shared store after a take-over: an owner process and two clients (a
/// child process and this one); the owner is SIGKILLed; one of the clients
/// takes over and the other follows it. The cases then run on this
/// process's store, whichever role it got.
fn shared_after_takeover() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("db");
    let mut owner = owner_process(&path);
    let mut other = shared::Proc::spawn("client", &path, &[]);
    assert_eq!(other.ready(), ("client".to_owned(), owner.pid()));
    let store = tokenstore::open(path.to_str().expect("UTF-8 temp path")).expect("open");
    assert_eq!(shared::sharing(&store).0, "client");
    owner.kill9();

    let started = std::time::Instant::now();
    assert_eq!(other.ask("count"), "count 0");
    assert_eq!(store.count().expect("count after the owner was killed"), 0);
    let paused = started.elapsed();
    assert!(
        paused < std::time::Duration::from_secs(5),
        "take-over took {paused:?}"
    );
    let (mine, my_owner, _) = shared::sharing(&store);
    let theirs = other.ask("role");
    let mut words = theirs.split(' ').skip(1);
    let (their_role, their_owner) = (words.next().unwrap(), words.next().unwrap());
    let their_owner: u32 = their_owner.parse().unwrap();
    assert_eq!(my_owner, their_owner, "both follow one owner ({theirs})");
    match (mine, their_role) {
        ("owner", "client") => assert_eq!(my_owner, std::process::id()),
        ("client", "owner") => assert_eq!(my_owner, other.pid()),
        roles => panic!("exactly one of the two takes over, got {roles:?}"),
    }
    Fixture {
        store: Box::new(store),
        _procs: vec![other, owner],
        _dir: Some(dir),
        #[cfg(all(feature = "postgres", feature = "server-tests"))]
        _db: None,
        #[cfg(all(feature = "mysql", feature = "server-tests"))]
        _mysql: None,
    }
}

/// Runs as a process of the shared fixtures (selected by
/// `TOKENSTORE_SHARED_CHILD`); does nothing otherwise.
#[test]
#[ignore = "a child process of the shared fixtures, started by them"]
fn child_process() {
    if std::env::var(shared::CHILD_VAR).is_ok() {
        shared::run_scripted();
    }
}

/// PostgreSQL as `tokenstore::open("postgres://…")` hands it out.
#[cfg(all(feature = "postgres", feature = "server-tests"))]
fn opened_postgres(test: &str) -> Option<Fixture> {
    let db = postgres_db::TestDb::new(test)?;
    let store = tokenstore::open(&db.url).expect("open");
    assert_eq!(store.kind(), "postgres");
    Some(Fixture {
        _procs: Vec::new(),
        store: Box::new(store),
        _dir: None,
        _db: Some(db),
        #[cfg(all(feature = "mysql", feature = "server-tests"))]
        _mysql: None,
    })
}

/// A `MysqlStore` on a database of its own, or `None` (SKIPPED) without a
/// test server.
#[cfg(all(feature = "mysql", feature = "server-tests"))]
fn mysql_with(test: &str, options: tokenstore::MysqlOptions) -> Option<Fixture> {
    let db = mysql_db::TestDb::new(test)?;
    let store = tokenstore::MysqlStore::connect_with(&db.url, options).expect("connect");
    Some(mysql_fixture(Box::new(store), db))
}

#[cfg(all(feature = "mysql", feature = "server-tests"))]
fn mysql_fixture(store: Box<dyn TokenStore + Send + Sync>, db: mysql_db::TestDb) -> Fixture {
    Fixture {
        _procs: Vec::new(),
        store,
        _dir: None,
        #[cfg(all(feature = "postgres", feature = "server-tests"))]
        _db: None,
        _mysql: Some(db),
    }
}

#[cfg(all(feature = "mysql", feature = "server-tests"))]
fn mysql(test: &str) -> Option<Fixture> {
    mysql_with(test, tokenstore::MysqlOptions::default())
}

#[cfg(all(feature = "mysql", feature = "server-tests"))]
fn mysql_encrypted(test: &str) -> Option<Fixture> {
    let key = tokenstore::Key::generate().expect("a random key");
    mysql_with(test, tokenstore::MysqlOptions::default().encryption(key))
}

/// MySQL as `tokenstore::open("mysql://…")` hands it out.
#[cfg(all(feature = "mysql", feature = "server-tests"))]
fn opened_mysql(test: &str) -> Option<Fixture> {
    let db = mysql_db::TestDb::new(test)?;
    let store = tokenstore::open(&db.url).expect("open");
    assert_eq!(store.kind(), "mysql");
    Some(mysql_fixture(Box::new(store), db))
}

/// Instantiates every case of `cases` for one backend that may be skipped.
#[cfg(all(any(feature = "postgres", feature = "mysql"), feature = "server-tests"))]
macro_rules! conformance_optional {
    ($backend:ident, $fixture:path, [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[test]
                fn $case() {
                    let name = concat!(stringify!($backend), "::", stringify!($case));
                    let Some(fixture) = $fixture(name) else { return };
                    crate::cases::$case(&*fixture);
                }
            )*
        }
    };
}

/// Instantiates every case of `cases` for one backend.
macro_rules! conformance {
    ($backend:ident, $fixture:path, [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[test]
                fn $case() {
                    crate::cases::$case(&*$fixture());
                }
            )*
        }
    };
}

/// Every case, for every backend.
macro_rules! all_backends {
    ($($case:ident),* $(,)?) => {
        conformance!(memory, crate::memory, [$($case),*]);
        conformance!(sled, crate::sled, [$($case),*]);
        conformance!(sled_buffered, crate::sled_buffered, [$($case),*]);
        conformance!(sled_encrypted, crate::sled_encrypted, [$($case),*]);
        conformance!(sled_uncached, crate::sled_uncached, [$($case),*]);
        #[cfg(all(feature = "postgres", feature = "server-tests"))]
        conformance_optional!(postgres, crate::postgres, [$($case),*]);
        #[cfg(all(feature = "postgres", feature = "server-tests"))]
        conformance_optional!(postgres_encrypted, crate::postgres_encrypted, [$($case),*]);
        #[cfg(all(feature = "postgres", feature = "server-tests"))]
        conformance_optional!(opened_postgres, crate::opened_postgres, [$($case),*]);
        #[cfg(all(feature = "mysql", feature = "server-tests"))]
        conformance_optional!(mysql, crate::mysql, [$($case),*]);
        #[cfg(all(feature = "mysql", feature = "server-tests"))]
        conformance_optional!(mysql_encrypted, crate::mysql_encrypted, [$($case),*]);
        #[cfg(all(feature = "mysql", feature = "server-tests"))]
        conformance_optional!(opened_mysql, crate::opened_mysql, [$($case),*]);
        conformance!(opened_sled, crate::opened_sled, [$($case),*]);
        conformance!(shared_client, crate::shared_client, [$($case),*]);
        conformance!(shared_after_takeover, crate::shared_after_takeover, [$($case),*]);
    };
}

all_backends!(
    rule1_user_name_decides_even_without_a_match,
    rule2_access_token_without_client_credentials,
    rule2_does_not_hold_with_client_credentials,
    rule3_grant_token_first,
    rule3_falls_back_to_refresh_when_grant_misses,
    rule3_needs_both_client_credentials,
    rule3_grant_miss_without_refresh_finds_nothing,
    rule4_id_only_query,
    rule5_never_the_first_record,
    empty_strings_are_absent,
    empty_user_name_never_finds_another_user,
    empty_id_finds_and_deletes_nothing,
    hostile_values_are_plain_data,
    large_values_round_trip,
    lookups_are_case_sensitive,
    find_returns_the_stored_record_not_the_query,
    save_sets_the_token_to_what_is_stored,
    save_merges_and_never_clears,
    save_without_any_token_is_rejected_and_writes_nothing,
    save_with_unknown_id_inserts_under_that_id,
    save_without_id_upserts_by_lookup_key,
    conflicting_unique_value_writes_nothing,
    conflict_through_an_id_targeted_save,
    conflict_errors_never_show_the_secret,
    rotated_values_no_longer_find_the_record,
    generated_ids_pass_ten_and_skip_taken_ids,
    deleted_ids_are_never_handed_out_again,
    delete_frees_every_key,
    delete_tokens_removes_everything_and_counts,
    get_tokens_returns_every_record,
    concurrent_saves_of_one_new_user_make_one_record,
    concurrent_saves_of_distinct_users_all_land,
    debug_never_shows_a_secret,
);
