//! `PostgresStore` beyond the conformance suite, in one process: what
//! reaches the server with a key, the refresh lock, async callers, failures,
//! keys and schema versions at connect, `check()`, the unique constraints
//! and batches. Needs a server: run tests/postgres/run.sh (without
//! `TOKENSTORE_TEST_PG_URL` every test prints SKIPPED). The tests with many
//! processes, and with the server restarted, are tests/postgres_processes.rs
//! and tests/postgres_restart.rs.

#[path = "support/postgres.rs"]
mod postgres_db;
#[path = "support/tokens.rs"]
mod tokens;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use postgres_db::TestDb;
use tokenstore::{
    Error, IndexedField, Key, OAuthToken, PostgresOptions, PostgresStore, Problem, TokenStore,
};

fn connect(db: &TestDb) -> PostgresStore {
    PostgresStore::connect(&db.url).expect("connect")
}

// ---- with a key, nothing readable reaches the server ----

fn markers(tag: &str) -> Vec<String> {
    vec![
        format!("ana-{tag}@example.com"),
        format!("client-secret-{tag}"),
        format!("1000.refresh-{tag}"),
        format!("1000.access-{tag}"),
        format!("1000.grant-{tag}"),
    ]
}

fn encodings(marker: &str) -> Vec<String> {
    let hex: String = marker.bytes().map(|b| format!("{b:02x}")).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(marker);
    // base64 of the marker at each of the three alignments, minus the edges.
    let mut forms = vec![marker.to_owned(), hex];
    forms.push(b64[..b64.len().saturating_sub(4)].to_owned());
    for skip in 1..3 {
        let shifted = base64::engine::general_purpose::STANDARD.encode(&marker[skip..]);
        forms.push(shifted[4..shifted.len().saturating_sub(4)].to_owned());
    }
    forms
}

fn dump(db: &TestDb) -> String {
    let pg_dump = std::env::var("TOKENSTORE_TEST_PG_DUMP").unwrap_or_else(|_| "pg_dump".to_owned());
    let out = Command::new(pg_dump)
        .arg(format!("--dbname={}", db.url))
        .output()
        .expect("run pg_dump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn save_marked(store: &PostgresStore, tag: &str) {
    let mut token = tokens::zoho(&format!("ana-{tag}@example.com"), tag);
    store.save_token(&mut token).unwrap();
}

#[test]
fn with_a_key_a_dump_holds_no_marker_in_any_encoding() {
    let Some(plain_db) = TestDb::new("dump plain") else {
        return;
    };
    let Some(sealed_db) = TestDb::new("dump sealed") else {
        return;
    };
    // The control: a plain store's dump shows its values, so the scan works.
    save_marked(&connect(&plain_db), "PLAINMARK");
    let plain = dump(&plain_db).to_lowercase();
    for marker in markers("PLAINMARK") {
        let hex: String = marker.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(plain.contains(&hex), "the control finds {marker}");
    }

    let key = Key::generate().unwrap();
    let store =
        PostgresStore::connect_with(&sealed_db.url, PostgresOptions::default().encryption(key))
            .unwrap();
    save_marked(&store, "SEALMARK");
    let mut scanned = scan_for_markers(&dump(&sealed_db), &markers("SEALMARK"));
    // An update (a refresh) seals again.
    let mut update = OAuthToken::new()
        .with_user_name("ana-SEALMARK@example.com")
        .with_access_token("1000.access-SEALMARK2");
    store.save_token(&mut update).unwrap();
    let mut all = markers("SEALMARK");
    all.push("1000.access-SEALMARK2".to_owned());
    scanned += scan_for_markers(&dump(&sealed_db), &all);
    assert!(scanned >= 50);
}

/// Asserts that no marker shows in `dump` in any encoding; returns how
/// many forms were looked for.
fn scan_for_markers(dump: &str, markers: &[String]) -> usize {
    assert!(
        dump.contains("tokenstore_records"),
        "the dump has the table"
    );
    let lower = dump.to_lowercase();
    let mut scanned = 0;
    for marker in markers {
        for form in encodings(marker) {
            scanned += 1;
            assert!(
                !dump.contains(&form) && !lower.contains(&form.to_lowercase()),
                "{marker} reached the server as {form}"
            );
        }
    }
    scanned
}

// ---- the refresh lock ----

#[test]
fn refresh_locks_exclude_across_connections_for_one_id_only() {
    let Some(db) = TestDb::new("refresh_locks") else {
        return;
    };
    // One store per thread: separate connections, as separate processes have.
    let stores: Vec<PostgresStore> = (0..6).map(|_| connect(&db)).collect();
    let inside = AtomicUsize::new(0);
    let overlaps = AtomicUsize::new(0);
    let entered = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for store in &stores {
            let (inside, overlaps, entered) = (&inside, &overlaps, &entered);
            scope.spawn(move || {
                for _ in 0..3 {
                    let lock = store.refresh_lock("42").unwrap();
                    if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    entered.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    inside.fetch_sub(1, Ordering::SeqCst);
                    drop(lock);
                }
            });
        }
    });
    assert_eq!(entered.load(Ordering::SeqCst), 18);
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "one id, one holder");

    // Different ids: all six are inside at the same time.
    let inside = AtomicUsize::new(0);
    let arrived = AtomicUsize::new(0);
    let most = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for (n, store) in stores.iter().enumerate() {
            let (inside, arrived, most) = (&inside, &arrived, &most);
            scope.spawn(move || {
                let lock = store.refresh_lock(&format!("id-{n}")).unwrap();
                inside.fetch_add(1, Ordering::SeqCst);
                arrived.fetch_add(1, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(5);
                while arrived.load(Ordering::SeqCst) < 6 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(2));
                }
                most.fetch_max(inside.load(Ordering::SeqCst), Ordering::SeqCst);
                inside.fetch_sub(1, Ordering::SeqCst);
                drop(lock);
            });
        }
    });
    assert_eq!(most.load(Ordering::SeqCst), 6, "different ids do not wait");

    // The store can be used while the lock is held (a refresh saves), and
    // a holder that fails (or panics) releases it when the guard drops.
    let store = &stores[0];
    let holder = || -> tokenstore::Result<()> {
        let _lock = store.refresh_lock("7")?;
        let mut token = OAuthToken::new()
            .with_id("7")
            .with_access_token("1000.access-refreshed");
        store.save_token(&mut token)?;
        Err(Error::InvalidToken {
            reason: "the refresh failed".into(),
        })
    };
    assert!(matches!(holder(), Err(Error::InvalidToken { .. })));
    assert!(store.find_token_by_id("7").unwrap().is_some());
    drop(stores[1].refresh_lock("7").unwrap());
}

// ---- async callers ----

#[test]
fn calls_from_inside_an_async_runtime_work_and_do_not_panic() {
    let Some(db) = TestDb::new("async_runtime") else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = PostgresStore::connect(&db.url).unwrap();
        let mut token = OAuthToken::new()
            .with_user_name("ana")
            .with_access_token("1000.a");
        store.save_token(&mut token).unwrap();
        let query = OAuthToken::new().with_user_name("ana");
        assert_eq!(store.find_token(&query).unwrap(), Some(token));
        drop(store.refresh_lock("1").unwrap());
        assert!(store.check().unwrap().is_ok());
        drop(store);
    });
}

// ---- failures ----

#[test]
fn an_unreachable_server_is_a_prompt_clear_error_without_the_password() {
    let Some(admin) = postgres_db::admin_url("unreachable") else {
        return;
    };
    // A database that does not exist: the server's reason, at once.
    let missing = postgres_db::with_dbname(&admin, "tokenstore_no_such_database").replacen(
        "postgres://postgres@",
        "postgres://postgres:pg-secret-password@",
        1,
    );
    let started = Instant::now();
    let err = PostgresStore::connect(&missing).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "no pool retries"
    );
    let shown = format!("{err} {err:?}");
    assert!(
        matches!(&err, Error::Database { code, .. } if code == "3D000"),
        "{shown}"
    );
    assert!(shown.contains("does not exist"), "{shown}");
    assert!(!shown.contains("pg-secret-password"), "{shown}");

    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("postgres://app:pg-secret-password@127.0.0.1:{port}/tokens");
    let options = PostgresOptions::default()
        .connect_timeout(Duration::from_secs(1))
        .pool_wait(Duration::from_secs(2));
    let started = Instant::now();
    let err = PostgresStore::connect_with(&url, options).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(6), "bounded wait");
    let shown = format!("{err} {err:?}");
    assert!(
        matches!(
            err,
            Error::Unavailable {
                maybe_committed: false,
                ..
            }
        ),
        "{shown}"
    );
    assert!(shown.contains("unavailable"), "{shown}");
    assert!(!shown.contains("pg-secret-password"), "{shown}");
    let err = PostgresStore::connect("postgres://app:pg-secret-password@/x?port=notaport")
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid database URL"), "{err}");
    assert!(!err.contains("pg-secret-password"), "{err}");
}

// ---- connections the server closed ----

/// How many sessions the store holds on its database (both pools), as the
/// server counts them.
fn store_sessions(admin: &mut postgres::Client) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0)
}

/// Ends every session of the store on the server, as a restart or an idle
/// session time-out would while the connections sit in the pools, and
/// waits until they are gone.
fn terminate_the_store_sessions(admin: &mut postgres::Client) {
    let ended = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap();
    assert!(!ended.is_empty(), "the store holds no connection");
    let deadline = Instant::now() + Duration::from_secs(10);
    while store_sessions(admin) > 0 {
        assert!(Instant::now() < deadline, "the terminated sessions linger");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pool does not test connections when it hands them out: work that
/// meets one the server closed runs again on another, and the caller sees
/// nothing. Every pooled connection is closed before each step, so a step
/// meets as many closed connections as the pool holds.
#[test]
fn reads_and_writes_run_again_on_connections_the_server_closed() {
    let Some(db) = TestDb::new("terminated") else {
        return;
    };
    let store =
        PostgresStore::connect_with(&db.url, PostgresOptions::default().pool_size(2)).unwrap();
    let mut token = tokens::zoho("ana-terminated@example.com", "terminated");
    store.save_token(&mut token).unwrap();
    let id = token.id.clone().unwrap();
    let mut admin = db.client();
    // Both pooled connections made, then idle in the pool.
    let fill_the_pool = |admin: &mut postgres::Client| {
        for _ in 0..50 {
            if store_sessions(admin) >= 2 {
                return;
            }
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for _ in 0..20 {
                            store.find_token_by_id(&id).unwrap();
                        }
                    });
                }
            });
        }
        panic!("the pool never held two connections");
    };

    fill_the_pool(&mut admin);
    terminate_the_store_sessions(&mut admin);
    assert_eq!(store.find_token_by_id(&id).unwrap().as_ref(), Some(&token));
    fill_the_pool(&mut admin);
    terminate_the_store_sessions(&mut admin);
    let by_user = OAuthToken::new().with_user_name("ana-terminated@example.com");
    assert_eq!(store.find_token(&by_user).unwrap().as_ref(), Some(&token));

    // A save (its plan may run again).
    fill_the_pool(&mut admin);
    terminate_the_store_sessions(&mut admin);
    token.access_token = Some("1000.access-after-terminate".into());
    store.save_token(&mut token).unwrap();
    assert_eq!(store.find_token_by_id(&id).unwrap().as_ref(), Some(&token));

    // A batch: its stage runs once, on the connection that took the lock.
    fill_the_pool(&mut admin);
    terminate_the_store_sessions(&mut admin);
    let stages = AtomicUsize::new(0);
    store
        .batch(|batch| {
            stages.fetch_add(1, Ordering::SeqCst);
            batch.save_token(&mut tokens::zoho("bob-terminated@example.com", "bob"))
        })
        .unwrap();
    assert_eq!(stages.load(Ordering::SeqCst), 1);

    // Every record, the count, the check.
    fill_the_pool(&mut admin);
    terminate_the_store_sessions(&mut admin);
    assert_eq!(store.get_tokens().unwrap().len(), 2);
    fill_the_pool(&mut admin);
    terminate_the_store_sessions(&mut admin);
    assert_eq!(store.len().unwrap(), 2);
    fill_the_pool(&mut admin);
    terminate_the_store_sessions(&mut admin);
    assert!(store.check().unwrap().is_ok());

    // The refresh lock's pool: its connection closed while idle too.
    drop(store.refresh_lock(&id).unwrap());
    terminate_the_store_sessions(&mut admin);
    let lock = store.refresh_lock(&id).unwrap();
    store.save_token(&mut token).unwrap();
    drop(lock);

    // A delete, and the records as they stand after all of it; then all.
    fill_the_pool(&mut admin);
    terminate_the_store_sessions(&mut admin);
    assert!(store.delete_token(&id).unwrap());
    assert_eq!(store.find_token_by_id(&id).unwrap(), None);
    assert_eq!(store.len().unwrap(), 1);
    fill_the_pool(&mut admin);
    terminate_the_store_sessions(&mut admin);
    store.delete_tokens().unwrap();
    assert_eq!(store.len().unwrap(), 0);
}

#[test]
fn keys_and_schema_versions_are_checked_on_connect() {
    let Some(db) = TestDb::new("keys_and_versions") else {
        return;
    };
    let key = Key::generate().unwrap();
    let sealed = PostgresOptions::default().encryption(key.clone());
    let store = PostgresStore::connect_with(&db.url, sealed.clone()).unwrap();
    save_marked(&store, "K");
    drop(store);
    let wrong = PostgresOptions::default().encryption(Key::generate().unwrap());
    let err = PostgresStore::connect_with(&db.url, wrong).unwrap_err();
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
    assert!(matches!(
        PostgresStore::connect(&db.url),
        Err(Error::KeyRequired { .. })
    ));
    let store = PostgresStore::connect_with(&db.url, sealed).unwrap();
    assert_eq!(store.len().unwrap(), 1);
    drop(store);

    let Some(plain_db) = TestDb::new("plain") else {
        return;
    };
    drop(connect(&plain_db));
    let keyed = PostgresOptions::default().encryption(key);
    assert!(matches!(
        PostgresStore::connect_with(&plain_db.url, keyed),
        Err(Error::NotEncrypted { .. })
    ));
    plain_db
        .client()
        .batch_execute("UPDATE tokenstore_meta SET schema_version = 2")
        .unwrap();
    match PostgresStore::connect(&plain_db.url) {
        Err(Error::UnsupportedVersion { found: 2, .. }) => {}
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

#[test]
fn many_processes_connecting_at_once_create_the_schema_once() {
    let Some(db) = TestDb::new("connect_at_once") else {
        return;
    };
    std::thread::scope(|scope| {
        for n in 0..8 {
            let url = &db.url;
            scope.spawn(move || {
                let store = PostgresStore::connect(url).unwrap();
                let mut token = OAuthToken::new()
                    .with_user_name(format!("u{n}"))
                    .with_access_token(format!("1000.a{n}"));
                store.save_token(&mut token).unwrap();
            });
        }
    });
    let store = connect(&db);
    assert_eq!(store.len().unwrap(), 8);
    assert_eq!(store.last_issued_id().unwrap(), 8);
}

// ---- check(), and the unique constraints as the last line of defence ----

#[test]
fn check_reports_undecodable_records_and_wrong_digests() {
    let Some(db) = TestDb::new("check") else {
        return;
    };
    let store = connect(&db);
    for n in 0..3 {
        save_marked(&store, &format!("C{n}"));
    }
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!((report.records, report.index_entries), (3, 12));

    let mut client = db.client();
    client
        .batch_execute("UPDATE tokenstore_records SET record = '\\x01ff' WHERE id = '1'")
        .unwrap();
    client
        .batch_execute(
            "UPDATE tokenstore_records SET access_token_digest = '\\x00112233' WHERE id = '2'",
        )
        .unwrap();
    client
        .batch_execute("UPDATE tokenstore_records SET grant_token_digest = NULL WHERE id = '3'")
        .unwrap();
    let report = store.check().unwrap();
    let problems = report.problems;
    assert!(
        matches!(&problems[0], Problem::UndecodableRecord { id, .. } if id == "1"),
        "{problems:?}"
    );
    assert!(problems.contains(&Problem::MissingIndexEntry {
        id: "2".into(),
        field: IndexedField::AccessToken
    }));
    assert!(problems.contains(&Problem::WrongIndexEntry {
        field: IndexedField::AccessToken,
        id: "2".into()
    }));
    assert!(problems.contains(&Problem::MissingIndexEntry {
        id: "3".into(),
        field: IndexedField::GrantToken
    }));
    assert_eq!(problems.len(), 4, "{problems:?}");
    // A damaged record is an error when read, never a wrong answer.
    assert!(matches!(
        store.find_token_by_id("1"),
        Err(Error::Corruption { .. })
    ));
}

#[test]
fn a_unique_violation_is_a_conflict_naming_the_holder_and_writes_nothing() {
    let Some(db) = TestDb::new("unique_violation") else {
        return;
    };
    let store = connect(&db);
    save_marked(&store, "A");
    // Damage: row 1 claims the digest of a value its record does not hold,
    // so the planning cannot see the clash; only the constraint can.
    let hash = blake3::hash(b"1000.access-X");
    let digest = &hash.as_bytes()[..16];
    db.client()
        .execute(
            "UPDATE tokenstore_records SET access_token_digest = $1 WHERE id = '1'",
            &[&digest],
        )
        .unwrap();
    let before = store.last_issued_id().unwrap();
    let mut token = OAuthToken::new()
        .with_user_name("bob")
        .with_access_token("1000.access-X");
    match store.save_token(&mut token) {
        Err(Error::Conflict {
            field: IndexedField::AccessToken,
            id,
        }) => assert_eq!(id, "1"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(token.id, None, "the token is unchanged");
    assert_eq!(store.len().unwrap(), 1);
    assert_eq!(store.last_issued_id().unwrap(), before);
}

#[test]
fn batches_apply_all_or_nothing() {
    let Some(db) = TestDb::new("batches") else {
        return;
    };
    let store = connect(&db);
    save_marked(&store, "A");
    // A value moves from one record to another inside one batch.
    store
        .batch(|batch| {
            let mut a = OAuthToken::new()
                .with_id("1")
                .with_user_name("renamed@example.com")
                .with_access_token("1000.access-renamed");
            batch.save_token(&mut a)?;
            let mut b = OAuthToken::new()
                .with_user_name("ana-A@example.com")
                .with_access_token("1000.access-new");
            batch.save_token(&mut b)?;
            assert_eq!(b.id.as_deref(), Some("2"));
            Ok::<_, Error>(())
        })
        .unwrap();
    assert_eq!(store.len().unwrap(), 2);
    // A failing stage writes nothing.
    let err = store
        .batch(|batch| {
            batch.save_token(
                &mut OAuthToken::new()
                    .with_user_name("c")
                    .with_access_token("1000.c"),
            )?;
            batch.delete_token("1")?;
            batch.save_token(&mut OAuthToken::new().with_user_name("d"))?;
            Ok::<_, Error>(())
        })
        .unwrap_err();
    assert!(matches!(err, Error::InvalidToken { .. }));
    assert_eq!(store.len().unwrap(), 2);
    assert_eq!(store.last_issued_id().unwrap(), 2);
    assert!(store.find_token_by_id("1").unwrap().is_some());
    // skip_ids_through keeps a copied counter.
    store
        .batch(|batch| {
            batch.skip_ids_through(40);
            Ok::<_, Error>(())
        })
        .unwrap();
    let mut next = OAuthToken::new()
        .with_user_name("e")
        .with_access_token("1000.e");
    store.save_token(&mut next).unwrap();
    assert_eq!(next.id.as_deref(), Some("41"));
}

// ---- the seal budget of a key holds for this backend too ----

/// Every backend counts its seals against the key's budget (2^32 for
/// AES-GCM with random nonces): a store whose count is at the budget
/// refuses writes with `RekeyRequired`, writes nothing, and still reads.
#[test]
fn a_key_at_its_seal_budget_refuses_writes() {
    let Some(db) = TestDb::new("seal_budget") else {
        return;
    };
    let key = Key::generate().unwrap();
    let store =
        PostgresStore::connect_with(&db.url, PostgresOptions::default().encryption(key)).unwrap();
    let mut ana = tokens::zoho("ana@example.com", "seals");
    store.save_token(&mut ana).unwrap();
    // Seals counted so far: that one record.
    let mut client = db.client();
    let sealed: i64 = client
        .query_one("SELECT last_value FROM tokenstore_seals", &[])
        .unwrap()
        .get(0);
    assert_eq!(sealed, 1);
    client
        .execute("SELECT setval('tokenstore_seals', 4294967296)", &[])
        .unwrap();
    let mut bob = tokens::zoho("bob@example.com", "seals-bob");
    let err = store.save_token(&mut bob).unwrap_err();
    assert!(matches!(err, Error::RekeyRequired { .. }), "{err:?}");
    assert_eq!(bob.id, None, "a refused save leaves the token as it was");
    let batch =
        store.batch(|b| b.save_token(&mut tokens::zoho("carol@example.com", "seals-carol")));
    assert!(
        matches!(batch, Err(Error::RekeyRequired { .. })),
        "{batch:?}"
    );
    assert_eq!(store.len().unwrap(), 1);
    let query = OAuthToken::new().with_user_name("ana@example.com");
    assert_eq!(store.find_token(&query).unwrap(), Some(ana));
    // A delete seals nothing and still works.
    assert!(store.delete_token("1").unwrap());
}
