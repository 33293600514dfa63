//! `MysqlStore` beyond the conformance suite, in one process: binary
//! comparisons (`Ana` is not `ana`), what reaches the server with a key,
//! the id counter, keys and schema versions at connect, the refresh lock,
//! failures, `check()`, unique keys, batches, and TLS. Needs a server: run
//! tests/mysql/run.sh (without `TOKENSTORE_TEST_MYSQL_URL` every test
//! prints SKIPPED). Many processes: tests/mysql_processes.rs.

#[path = "support/mysql.rs"]
mod mysql_db;
#[path = "support/tokens.rs"]
mod tokens;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use mysql::prelude::Queryable;
use mysql_db::TestDb;
use tokenstore::{
    Error, IndexedField, Key, MysqlOptions, MysqlStore, OAuthToken, Problem, TokenStore,
};

fn connect(db: &TestDb) -> MysqlStore {
    MysqlStore::connect(&db.url).expect("connect")
}

fn save_marked(store: &MysqlStore, tag: &str) -> OAuthToken {
    let mut token = tokens::zoho(&format!("ana-{tag}@example.com"), tag);
    store.save_token(&mut token).unwrap();
    token
}

// ---- binary comparisons ----

#[test]
fn ana_and_ana_in_another_case_are_two_users_and_two_ids() {
    let Some(db) = TestDb::new("case") else {
        return;
    };
    let store = connect(&db);
    let mut upper = OAuthToken::new()
        .with_user_name("Ana")
        .with_access_token("1000.access-UPPER");
    let mut lower = OAuthToken::new()
        .with_user_name("ana")
        .with_access_token("1000.access-upper");
    store.save_token(&mut upper).unwrap();
    store.save_token(&mut lower).unwrap();
    assert_ne!(upper.id, lower.id, "two users, two records");
    let find = |user: &str| {
        store
            .find_token(&OAuthToken::new().with_user_name(user))
            .unwrap()
    };
    assert_eq!(find("Ana"), Some(upper.clone()));
    assert_eq!(find("ana"), Some(lower.clone()));
    assert_eq!(find("ANA"), None);
    let by_access = OAuthToken::new().with_access_token("1000.ACCESS-UPPER");
    assert_eq!(store.find_token(&by_access).unwrap(), None);

    // Ids too: `Ana` and `ana` are two records, `ANA` none.
    let mut a = OAuthToken::new()
        .with_id("Ana")
        .with_refresh_token("1000.r-A");
    let mut b = OAuthToken::new()
        .with_id("ana")
        .with_refresh_token("1000.r-a");
    store.save_token(&mut a).unwrap();
    store.save_token(&mut b).unwrap();
    assert_eq!(store.len().unwrap(), 4);
    assert_eq!(store.find_token_by_id("Ana").unwrap(), Some(a));
    assert_eq!(store.find_token_by_id("ana").unwrap(), Some(b));
    assert_eq!(store.find_token_by_id("ANA").unwrap(), None);
    assert!(store.delete_token("ana").unwrap());
    assert!(store.find_token_by_id("Ana").unwrap().is_some());
    assert!(store.check().unwrap().is_ok());
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
    let mut forms = vec![marker.to_owned(), hex];
    forms.push(b64[..b64.len().saturating_sub(4)].to_owned());
    for skip in 1..3 {
        let shifted = base64::engine::general_purpose::STANDARD.encode(&marker[skip..]);
        forms.push(shifted[4..shifted.len().saturating_sub(4)].to_owned());
    }
    forms
}

/// Every byte of both tables, each column raw and as hex.
fn raw_rows(db: &TestDb) -> String {
    let mut conn = db.client();
    let mut all = String::new();
    for table in ["tokenstore_records", "tokenstore_meta"] {
        let rows: Vec<mysql::Row> = conn.query(format!("SELECT * FROM {table}")).unwrap();
        for row in rows {
            for value in row.unwrap() {
                if let mysql::Value::Bytes(bytes) = value {
                    all.push_str(&String::from_utf8_lossy(&bytes));
                    all.push('\n');
                    all.extend(bytes.iter().map(|b| format!("{b:02x}")));
                    all.push('\n');
                }
            }
        }
    }
    all
}

fn found_markers(rows: &str, tag: &str) -> usize {
    markers(tag)
        .iter()
        .filter(|marker| encodings(marker).iter().any(|form| rows.contains(form)))
        .count()
}

#[test]
fn with_a_key_the_server_never_sees_a_token_or_user_name() {
    let Some(db) = TestDb::new("sealed") else {
        return;
    };
    let key = Key::generate().unwrap();
    let store = MysqlStore::connect_with(&db.url, MysqlOptions::default().encryption(key)).unwrap();
    for n in 0..3 {
        save_marked(&store, &format!("S{n}"));
    }
    let rows = raw_rows(&db);
    assert!(rows.len() > 1000, "the rows were read");
    for n in 0..3 {
        assert_eq!(
            found_markers(&rows, &format!("S{n}")),
            0,
            "sealed rows hold no marker"
        );
    }
    // The same scan finds every marker in a plain store: it can fail.
    let Some(plain) = TestDb::new("plain") else {
        return;
    };
    save_marked(&connect(&plain), "P");
    assert_eq!(found_markers(&raw_rows(&plain), "P"), 5);
}

// ---- the id counter ----

#[test]
fn the_id_counter_never_hands_an_id_out_twice() {
    let Some(db) = TestDb::new("counter") else {
        return;
    };
    let store = connect(&db);
    let ids: Vec<String> = (0..3)
        .map(|n| save_marked(&store, &format!("N{n}")).id.unwrap())
        .collect();
    assert_eq!(ids, ["1", "2", "3"]);
    assert!(store.delete_token("3").unwrap());
    assert_eq!(store.delete_tokens().unwrap(), 2);
    assert_eq!(store.last_issued_id().unwrap(), 3);
    drop(store);
    // Another connection (another process) continues the counter.
    let store = connect(&db);
    assert_eq!(save_marked(&store, "N3").id.as_deref(), Some("4"));
    // An explicit id ahead of the counter is skipped when its turn comes.
    let mut explicit = OAuthToken::new().with_id("5").with_access_token("1000.a5");
    store.save_token(&mut explicit).unwrap();
    assert_eq!(save_marked(&store, "N5").id.as_deref(), Some("6"));
    assert_eq!(store.last_issued_id().unwrap(), 6);
}

// ---- keys, schema versions, create(false) ----

#[test]
fn keys_and_schema_versions_are_checked_on_connect() {
    let Some(db) = TestDb::new("keys_and_versions") else {
        return;
    };
    let missing = MysqlStore::connect_with(&db.url, MysqlOptions::default().create(false));
    assert!(
        matches!(missing, Err(Error::StoreNotFound { .. })),
        "{missing:?}"
    );
    let key = Key::generate().unwrap();
    let sealed = MysqlOptions::default().encryption(key.clone());
    let store = MysqlStore::connect_with(&db.url, sealed.clone()).unwrap();
    save_marked(&store, "K");
    drop(store);
    let wrong = MysqlOptions::default().encryption(Key::generate().unwrap());
    let err = MysqlStore::connect_with(&db.url, wrong).unwrap_err();
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
    assert!(!err.to_string().contains("test-only-password"), "{err}");
    assert!(matches!(
        MysqlStore::connect(&db.url),
        Err(Error::KeyRequired { .. })
    ));
    let store = MysqlStore::connect_with(&db.url, sealed).unwrap();
    assert_eq!(store.len().unwrap(), 1);
    drop(store);

    let Some(plain_db) = TestDb::new("plain") else {
        return;
    };
    drop(connect(&plain_db));
    let keyed = MysqlOptions::default().encryption(key);
    assert!(matches!(
        MysqlStore::connect_with(&plain_db.url, keyed),
        Err(Error::NotEncrypted { .. })
    ));
    plain_db
        .client()
        .query_drop("UPDATE tokenstore_meta SET schema_version = 2")
        .unwrap();
    match MysqlStore::connect(&plain_db.url) {
        Err(Error::UnsupportedVersion {
            found: 2,
            supported: 1,
        }) => {}
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

#[test]
fn many_connecting_at_once_create_the_schema_once() {
    let Some(db) = TestDb::new("connect_at_once") else {
        return;
    };
    std::thread::scope(|scope| {
        for n in 0..8 {
            let url = &db.url;
            scope.spawn(move || {
                let store = MysqlStore::connect(url).unwrap();
                let mut token = OAuthToken::new()
                    .with_user_name(format!("u{n}"))
                    .with_access_token(format!("1000.a{n}"));
                store.save_token(&mut token).unwrap();
            });
        }
    });
    let store = connect(&db);
    assert_eq!(store.len().unwrap(), 8);
    let rows: Vec<u8> = db
        .client()
        .query("SELECT singleton FROM tokenstore_meta")
        .unwrap();
    assert_eq!(rows, [1]);
}

// ---- the refresh lock ----

#[test]
fn refresh_locks_exclude_across_connections_for_one_id_only() {
    let Some(db) = TestDb::new("refresh_locks") else {
        return;
    };
    // One store per thread: separate connections, as separate processes have.
    let stores: Vec<MysqlStore> = (0..6).map(|_| connect(&db)).collect();
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
    let arrived = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for (n, store) in stores.iter().enumerate() {
            let arrived = &arrived;
            scope.spawn(move || {
                let lock = store.refresh_lock(&format!("id-{n}")).unwrap();
                arrived.fetch_add(1, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(5);
                while arrived.load(Ordering::SeqCst) < 6 {
                    assert!(Instant::now() < deadline, "different ids never wait");
                    std::thread::sleep(Duration::from_millis(1));
                }
                drop(lock);
            });
        }
    });

    // The same id in another database is another lock (names are
    // server-wide); a held lock makes a waiter time out, clearly.
    let Some(other_db) = TestDb::new("refresh_locks_other") else {
        return;
    };
    let held = stores[0].refresh_lock("42").unwrap();
    drop(connect(&other_db).refresh_lock("42").unwrap());
    let impatient = MysqlStore::connect_with(
        &db.url,
        MysqlOptions::default().lock_timeout(Duration::from_secs(1)),
    )
    .unwrap();
    let started = Instant::now();
    let err = impatient.refresh_lock("42").unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("refresh lock"), "{err}");
    drop(held);
    drop(impatient.refresh_lock("42").unwrap());
}

// ---- failures ----

#[test]
fn a_server_that_is_down_is_a_prompt_clear_error_without_the_password() {
    let Some(admin) = mysql_db::admin_url("down") else {
        return;
    };
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let options = MysqlOptions::default().connect_timeout(Duration::from_secs(1));
    {
        let url = format!("mysql://app:my-secret-password@127.0.0.1:{port}/tokens");
        let started = Instant::now();
        let err = MysqlStore::connect_with(&url, options.clone()).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "{err}");
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
        assert!(shown.contains("unavailable while connecting"), "{shown}");
        assert!(shown.contains("mysql://app@"), "{shown}");
        assert!(!shown.contains("my-secret-password"), "{shown}");
    }
    // A wrong password: the server's reason, at once, without it.
    let wrong = admin.replacen("test-only-password", "my-secret-password", 1);
    let err = MysqlStore::connect(&wrong).unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(matches!(&err, Error::Database { .. }), "{shown}");
    assert!(shown.contains("Access denied"), "{shown}");
    assert!(!shown.contains("my-secret-password"), "{shown}");
    // URLs the store cannot use, named without the password.
    for (url, says) in [
        ("mysql://app:my-secret-password@host:notaport/db", "port"),
        (
            "mysql://app:my-secret-password@host/db?pool_max=3",
            "unknown parameter",
        ),
        (
            "mysql://app:my-secret-password@host/db?ssl-mode=VERIFY_CA",
            "ssl-ca",
        ),
        (
            "mysql://app:my-secret-password@host/db?ssl-mode=SOMETIMES",
            "ssl-mode",
        ),
        ("mysql://app:my-secret-password@host/", "database"),
    ] {
        let err = MysqlStore::connect(url).unwrap_err().to_string();
        assert!(
            err.contains("invalid database URL") && err.contains(says),
            "{err}"
        );
        assert!(!err.contains("my-secret-password"), "{err}");
    }
    // The store's Debug never shows it either.
    let Some(db) = TestDb::new("debug") else {
        return;
    };
    let shown = format!("{:?}", connect(&db));
    assert!(shown.contains("mysql://tokenstore@127.0.0.1"), "{shown}");
    assert!(!shown.contains("test-only-password"), "{shown}");
}

// ---- check, unique keys, batches ----

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
        .query_drop("UPDATE tokenstore_records SET record = x'01ff' WHERE id = '1'")
        .unwrap();
    client
        .query_drop(
            "UPDATE tokenstore_records SET access_token_digest = x'00112233' WHERE id = '2'",
        )
        .unwrap();
    client
        .query_drop("UPDATE tokenstore_records SET grant_token_digest = NULL WHERE id = '3'")
        .unwrap();
    let problems = store.check().unwrap().problems;
    assert!(
        matches!(&problems[0], Problem::UndecodableRecord { id, .. } if id == "1"),
        "{problems:?}"
    );
    for problem in [
        Problem::MissingIndexEntry {
            id: "2".into(),
            field: IndexedField::AccessToken,
        },
        Problem::WrongIndexEntry {
            field: IndexedField::AccessToken,
            id: "2".into(),
        },
        Problem::MissingIndexEntry {
            id: "3".into(),
            field: IndexedField::GrantToken,
        },
    ] {
        assert!(problems.contains(&problem), "{problems:?}");
    }
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(matches!(
        store.find_token_by_id("1"),
        Err(Error::Corruption { .. })
    ));
}

#[test]
fn a_unique_key_violation_is_a_conflict_naming_the_holder_and_writes_nothing() {
    let Some(db) = TestDb::new("unique_violation") else {
        return;
    };
    let store = connect(&db);
    save_marked(&store, "A");
    // Damage: row 1 claims the digest of a value its record does not hold,
    // so the planning cannot see the clash; only the unique key can.
    let hash = blake3::hash(b"1000.access-X");
    db.client()
        .exec_drop(
            "UPDATE tokenstore_records SET access_token_digest = ? WHERE id = '1'",
            (&hash.as_bytes()[..16],),
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
fn batches_apply_all_or_nothing_and_may_move_a_value() {
    let Some(db) = TestDb::new("batches") else {
        return;
    };
    let store = connect(&db);
    let a = save_marked(&store, "A");
    let b = save_marked(&store, "B");
    // A failing stage writes nothing.
    let failed: Result<(), Error> = store.batch(|batch| {
        batch.save_token(
            &mut OAuthToken::new()
                .with_user_name("c")
                .with_access_token("1000.c"),
        )?;
        Err(Error::InvalidToken {
            reason: "stop".into(),
        })
    });
    assert!(failed.is_err());
    assert_eq!(store.len().unwrap(), 2);
    // One batch moves a's access token to b (a unique key checked per row
    // would refuse it in this order).
    store
        .batch(|batch| {
            let mut to_b = OAuthToken::new()
                .with_id(b.id.clone().unwrap())
                .with_access_token(a.access_token.clone().unwrap());
            let mut from_a = OAuthToken::new()
                .with_id(a.id.clone().unwrap())
                .with_access_token("1000.access-new-A");
            batch.save_token(&mut from_a)?;
            batch.save_token(&mut to_b)?;
            Ok::<_, Error>(())
        })
        .unwrap();
    let holder = store
        .find_token(&OAuthToken::new().with_access_token(a.access_token.clone().unwrap()))
        .unwrap()
        .unwrap();
    assert_eq!(holder.id, b.id);
    assert!(store.check().unwrap().is_ok());
}

// ---- TLS (the server run.sh starts has a certificate of its test CA) ----

/// The test CA and a CA that did not sign the server's certificate.
fn cas(test: &str) -> Option<(String, String)> {
    match (
        std::env::var("TOKENSTORE_TEST_MYSQL_CA"),
        std::env::var("TOKENSTORE_TEST_MYSQL_WRONG_CA"),
    ) {
        (Ok(ca), Ok(wrong)) => Some((ca, wrong)),
        _ => {
            let message = format!("SKIPPED {test}: no TLS test server (run tests/mysql/run.sh)");
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{message}");
            }
            eprintln!("{message}");
            None
        }
    }
}

#[test]
fn tls_modes_verify_as_asked() {
    let Some(db) = TestDb::new("tls") else {
        return;
    };
    let Some((ca, wrong_ca)) = cas("tls") else {
        return;
    };
    let by_name = db.url.replacen("@127.0.0.1:", "@localhost:", 1);
    let with = |url: &str, params: &str| {
        let sep = if url.contains('?') { '&' } else { '?' };
        MysqlStore::connect(&format!("{url}{sep}{params}"))
    };
    let works = |url: &str, params: &str| {
        let store = with(url, params).unwrap_or_else(|e| panic!("{params}: {e}"));
        save_marked(&store, "T");
        assert_eq!(store.len().unwrap(), 1);
        store.uses_tls()
    };
    assert!(!works(&db.url, "ssl-mode=DISABLED"));
    assert!(works(&db.url, "ssl-mode=PREFERRED"));
    assert!(works(&db.url, "ssl-mode=REQUIRED"));
    assert!(works(&db.url, &format!("ssl-mode=VERIFY_CA&ssl-ca={ca}")));
    assert!(works(
        &by_name,
        &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}")
    ));

    let refused = |url: &str, params: &str, says: &str| {
        let started = Instant::now();
        let err = with(url, params).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{params}: {err}"
        );
        let shown = err.to_string();
        assert!(matches!(err, Error::Tls { .. }), "{params}: {shown}");
        assert!(shown.contains(says), "{params}: {shown}");
        assert!(!shown.contains("test-only-password"), "{shown}");
    };
    // A CA that did not sign the certificate.
    refused(
        &db.url,
        &format!("ssl-mode=VERIFY_CA&ssl-ca={wrong_ca}"),
        "UnknownIssuer",
    );
    refused(
        &by_name,
        &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={wrong_ca}"),
        "UnknownIssuer",
    );
    refused(
        &db.url,
        &format!("ssl-mode=REQUIRED&ssl-ca={wrong_ca}"),
        "UnknownIssuer",
    );
    // The right CA, another name (the certificate is for localhost).
    refused(
        &db.url,
        &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"),
        "certificate not valid for name",
    );
}

// ---- connections the server closed ----

#[test]
fn reads_and_writes_run_again_on_connections_the_server_closed() {
    let Some(db) = TestDb::new("killed") else {
        return;
    };
    let store = MysqlStore::connect_with(&db.url, MysqlOptions::default().pool_size(2)).unwrap();
    let mut token = save_marked(&store, "killed");
    let id = token.id.clone().unwrap();
    // Both pooled connections used once, then idle in the pool.
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| assert!(store.find_token_by_id(&id).unwrap().is_some()));
        }
    });
    let mut client = db.client();
    let mut kill_the_store_connections = || {
        let ids: Vec<u64> = client
            .exec(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
                (&db.name,),
            )
            .unwrap();
        assert!(!ids.is_empty(), "the store holds no connection");
        for id in ids {
            client.exec_drop("KILL ?", (id,)).unwrap();
        }
    };
    kill_the_store_connections();
    // The pool hands out a connection the server closed: the lookup runs
    // again on a new one.
    assert_eq!(store.find_token_by_id(&id).unwrap().as_ref(), Some(&token));
    let by_user = OAuthToken::new().with_user_name(token.user_name.clone().unwrap());
    assert_eq!(store.find_token(&by_user).unwrap().as_ref(), Some(&token));
    kill_the_store_connections();
    token.access_token = Some("1000.access-after-kill".into());
    store.save_token(&mut token).unwrap();
    assert_eq!(store.find_token_by_id(&id).unwrap(), Some(token));
}
