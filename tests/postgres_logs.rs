//! The PostgreSQL backend's log records: eight threads saving one user's
//! token at once make the server refuse serializable transactions, and
//! every write run again is an INFO record of `tokenstore::postgres` with
//! its attempt number, as is a lookup or a save run again after meeting a
//! connection the server closed; no record up to its target's ceiling
//! holds a secret. Needs a server: run tests/postgres/run.sh (without
//! `TOKENSTORE_TEST_PG_URL` it prints SKIPPED).

#[path = "support/postgres.rs"]
mod postgres_db;

use std::sync::{Barrier, Mutex};

use log::{Level, LevelFilter, Log, Metadata, Record};
use postgres_db::TestDb;
use tokenstore::logging::ceiling;
use tokenstore::{OAuthToken, PostgresStore, TokenStore};

/// Every record of this process, whatever its level and target.
struct Capture(Mutex<Vec<(Level, String, String)>>);

impl Log for Capture {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }
    fn log(&self, record: &Record) {
        let line = (
            record.level(),
            record.target().to_owned(),
            record.args().to_string(),
        );
        self.0.lock().unwrap().push(line);
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

#[test]
fn every_retry_is_an_info_record_and_no_record_holds_a_secret() {
    let Some(db) = TestDb::new("every_retry_is_an_info_record") else {
        return;
    };
    log::set_logger(&CAPTURE).unwrap();
    log::set_max_level(LevelFilter::Trace);
    let store = PostgresStore::connect(&db.url).expect("connect");
    let secret = |t: usize, i: usize| format!("1000.access-S3CRET/{t}+{i}");
    let retried = |records: &[(Level, String, String)]| {
        records.iter().any(|(level, target, message)| {
            *level == Level::Info
                && target == "tokenstore::postgres"
                && message.contains("saving a token: attempt ")
                && message.contains("; running it again")
        })
    };
    let mut secrets = vec!["1000.refresh-S3CRET".to_owned(), "client-S3CRET".to_owned()];
    let mut rounds = 0;
    while !retried(&CAPTURE.0.lock().unwrap()) {
        rounds += 1;
        assert!(rounds <= 20, "no save was run again in 20 rounds");
        let barrier = Barrier::new(8);
        std::thread::scope(|s| {
            for t in 0..8 {
                let (store, barrier) = (&store, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    for i in 0..10 {
                        let mut token = OAuthToken::new()
                            .with_user_name("ana@example.com")
                            .with_client_id("1000.CLIENT")
                            .with_client_secret("client-S3CRET")
                            .with_refresh_token("1000.refresh-S3CRET")
                            .with_access_token(secret(t, rounds * 100 + i));
                        store.save_token(&mut token).expect("a save");
                    }
                });
            }
        });
        secrets.extend((0..8).flat_map(|t| (0..10).map(move |i| secret(t, rounds * 100 + i))));
    }
    // A lookup and a save that meet connections the server closed while
    // they sat in the pool: each attempt run again is an INFO record.
    let mut admin = db.client();
    terminate_the_store_sessions(&mut admin);
    let ana = OAuthToken::new().with_user_name("ana@example.com");
    assert!(store.find_token(&ana).unwrap().is_some());
    terminate_the_store_sessions(&mut admin);
    let mut token = ana.with_access_token(secret(9, 9));
    store.save_token(&mut token).expect("a save");
    secrets.push(secret(9, 9));
    let logged = |prefix: &str| {
        CAPTURE
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|(level, target, message)| {
                *level == Level::Info
                    && target == "tokenstore::postgres"
                    && message.starts_with(prefix)
            })
    };
    assert!(logged(
        "looking a record up: attempt 1 found its connection lost; running it again on another"
    ));
    assert!(logged(
        "saving a token: attempt 1 ended in a lost connection; running it again"
    ));
    drop(store);
    let records = CAPTURE.0.lock().unwrap();
    let forms: Vec<String> = secrets
        .iter()
        .flat_map(|s| {
            [
                s.clone(),
                form_urlencoded::byte_serialize(s.as_bytes()).collect(),
            ]
        })
        .collect();
    let shown: Vec<&(Level, String, String)> = records
        .iter()
        .filter(|(level, target, _)| *level <= ceiling(target))
        .collect();
    let leaks: Vec<_> = shown
        .iter()
        .filter(|(_, _, message)| forms.iter().any(|f| message.contains(f.as_str())))
        .collect();
    assert!(leaks.is_empty(), "secrets in records: {leaks:#?}");
    let retries = records
        .iter()
        .filter(|(_, target, _)| target == "tokenstore::postgres")
        .count();
    println!(
        "FIGURES postgres log scan: {} records ({} within their ceiling, {retries} retries \
         logged), {} secrets in {} forms: 0 found",
        records.len(),
        shown.len(),
        secrets.len(),
        forms.len()
    );
}

/// Ends every session of the store on the server and waits until they are
/// gone.
fn terminate_the_store_sessions(admin: &mut postgres::Client) {
    let others = "FROM pg_stat_activity \
                  WHERE datname = current_database() AND pid <> pg_backend_pid()";
    admin
        .execute(&format!("SELECT pg_terminate_backend(pid) {others}"), &[])
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left: i64 = admin
            .query_one(&format!("SELECT count(*) {others}"), &[])
            .unwrap()
            .get(0);
        if left == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the terminated sessions linger"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
