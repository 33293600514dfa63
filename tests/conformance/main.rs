//! The conformance suite of docs/SPEC.md §1–§3, written once over
//! `&dyn TokenStore` and run against every backend.

mod cases;
#[cfg(feature = "postgres")]
#[path = "../support/postgres.rs"]
mod postgres_db;
#[path = "../support/tokens.rs"]
mod tokens;

use std::ops::Deref;

use tokenstore::{MemoryStore, Options, SledStore, TokenStore};

/// A store under test, with whatever must live as long as it.
pub struct Fixture {
    store: Box<dyn TokenStore + Send + Sync>,
    _dir: Option<tempfile::TempDir>,
    /// Declared after the store, so the store's connections close before
    /// the database is dropped.
    #[cfg(feature = "postgres")]
    _db: Option<postgres_db::TestDb>,
}

impl Deref for Fixture {
    type Target = dyn TokenStore + Send + Sync;
    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

fn memory() -> Fixture {
    Fixture {
        store: Box::new(MemoryStore::new()),
        _dir: None,
        #[cfg(feature = "postgres")]
        _db: None,
    }
}

fn sled_with(options: Options) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open_with(dir.path().join("db"), options).expect("open sled store");
    Fixture {
        store: Box::new(store),
        _dir: Some(dir),
        #[cfg(feature = "postgres")]
        _db: None,
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
#[cfg(feature = "postgres")]
fn postgres_with(test: &str, options: tokenstore::PostgresOptions) -> Option<Fixture> {
    let db = postgres_db::TestDb::new(test)?;
    let store = tokenstore::PostgresStore::connect_with(&db.url, options).expect("connect");
    Some(Fixture {
        store: Box::new(store),
        _dir: None,
        _db: Some(db),
    })
}

#[cfg(feature = "postgres")]
fn postgres(test: &str) -> Option<Fixture> {
    postgres_with(test, tokenstore::PostgresOptions::default())
}

#[cfg(feature = "postgres")]
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
        store: Box::new(store),
        _dir: Some(dir),
        #[cfg(feature = "postgres")]
        _db: None,
    }
}

/// PostgreSQL as `tokenstore::open("postgres://…")` hands it out.
#[cfg(feature = "postgres")]
fn opened_postgres(test: &str) -> Option<Fixture> {
    let db = postgres_db::TestDb::new(test)?;
    let store = tokenstore::open(&db.url).expect("open");
    assert_eq!(store.kind(), "postgres");
    Some(Fixture {
        store: Box::new(store),
        _dir: None,
        _db: Some(db),
    })
}

/// Instantiates every case of `cases` for one backend that may be skipped.
#[cfg(feature = "postgres")]
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
        #[cfg(feature = "postgres")]
        conformance_optional!(postgres, crate::postgres, [$($case),*]);
        #[cfg(feature = "postgres")]
        conformance_optional!(postgres_encrypted, crate::postgres_encrypted, [$($case),*]);
        #[cfg(feature = "postgres")]
        conformance_optional!(opened_postgres, crate::opened_postgres, [$($case),*]);
        conformance!(opened_sled, crate::opened_sled, [$($case),*]);
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
