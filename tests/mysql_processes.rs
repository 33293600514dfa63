//! `MysqlStore` shared by many processes: eight processes saving the same
//! new users at the same moment make one record each, and eight
//! `tokenstore token` processes on one expired token make one refresh
//! (`GET_LOCK`). Needs a server: run tests/mysql/run.sh (without
//! `TOKENSTORE_TEST_MYSQL_URL` every test prints SKIPPED).
//!
//! The first test re-executes this binary as a child (the ignored test
//! `child_process`, selected by `TOKENSTORE_MYSQL_CHILD`).

#[path = "support/fake_zoho.rs"]
mod fake_zoho;
#[path = "support/mysql.rs"]
mod mysql_db;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fake_zoho::FakeZoho;
use mysql_db::TestDb;
use tokenstore::{now_ms, MysqlStore, OAuthToken, TokenStore};

const CHILD_VAR: &str = "TOKENSTORE_MYSQL_CHILD";
const PROCESSES: usize = 8;
const SHARED: usize = 24;

fn shared_user(k: usize) -> String {
    format!("shared{k}@example.com")
}

/// Runs as a child process of the tests below; does nothing otherwise.
#[test]
#[ignore = "a child process of the multi-process tests, started by them"]
fn child_process() {
    let Ok(process) = std::env::var(CHILD_VAR) else {
        return;
    };
    let url = std::env::var("CHILD_URL").unwrap();
    let start_at: i64 = std::env::var("CHILD_START_AT").unwrap().parse().unwrap();
    let store = MysqlStore::connect(&url).unwrap();
    while now_ms() < start_at {
        std::thread::sleep(Duration::from_millis(1));
    }
    for k in 0..SHARED {
        // Every process saves the same new users at the same moment, and
        // one of its own.
        let mut token = OAuthToken::new()
            .with_user_name(shared_user(k))
            .with_client_id("1000.CLIENT")
            .with_refresh_token(format!("1000.refresh-s{k}-p{process}"))
            .with_access_token(format!("1000.access-s{k}-p{process}"));
        store.save_token(&mut token).unwrap();
        let mut own = OAuthToken::new()
            .with_user_name(format!("p{process}-own{k}@example.com"))
            .with_access_token(format!("1000.access-o{process}-{k}"));
        store.save_token(&mut own).unwrap();
    }
}

fn spawn_child(process: usize, url: &str, start_at: i64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_process", "--nocapture"])
        .env(CHILD_VAR, process.to_string())
        .env("CHILD_URL", url)
        .env("CHILD_START_AT", start_at.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child")
}

#[test]
fn eight_processes_saving_one_new_user_make_one_record() {
    let Some(db) = TestDb::new("eight_processes") else {
        return;
    };
    let store = MysqlStore::connect(&db.url).unwrap();
    let start_at = now_ms() + 2_000;
    let children: Vec<Child> = (0..PROCESSES)
        .map(|p| spawn_child(p, &db.url, start_at))
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a child failed");
    }
    let records = store.get_tokens().unwrap();
    assert_eq!(records.len(), SHARED + PROCESSES * SHARED);
    let mut per_user: HashMap<String, usize> = HashMap::new();
    for record in &records {
        *per_user
            .entry(record.user_name.clone().unwrap())
            .or_default() += 1;
    }
    for k in 0..SHARED {
        assert_eq!(per_user[&shared_user(k)], 1, "one record per shared user");
        // Its refresh token is the last save's: one of the processes'.
        let found = store
            .find_token(&OAuthToken::new().with_user_name(shared_user(k)))
            .unwrap()
            .unwrap();
        let refresh = found.refresh_token.unwrap();
        assert!(
            refresh.starts_with(&format!("1000.refresh-s{k}-p")),
            "{refresh}"
        );
    }
    let ids: HashSet<&str> = records.iter().filter_map(|r| r.id.as_deref()).collect();
    assert_eq!(ids.len(), records.len());
    assert_eq!(store.last_issued_id().unwrap(), records.len() as u64);
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{report}");
}

#[test]
fn eight_token_processes_on_an_expired_token_make_one_refresh() {
    let Some(db) = TestDb::new("one_refresh") else {
        return;
    };
    let store = MysqlStore::connect(&db.url).unwrap();
    let mut token = OAuthToken::new()
        .with_user_name("ana@example.com")
        .with_client_id("1000.CLIENTID")
        .with_client_secret("client-secret-S3CRET")
        .with_refresh_token("1000.refresh-S3CRET")
        .with_access_token("1000.access-S3CRET")
        .with_expiry_time(now_ms() - 1);
    store.save_token(&mut token).unwrap();
    let server = FakeZoho::start();
    server.set_delay(Duration::from_millis(200));
    let bin = assert_cmd::cargo::cargo_bin!("tokenstore");
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(bin)
                .env_remove("TOKENSTORE_KEY")
                .env("TOKENSTORE_ACCOUNTS_URL", server.url())
                .args(["--db", &db.url, "token", "--user", "ana@example.com"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for output in &outputs {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(server.refreshes(), 1, "one refresh across 8 processes");
    let printed: HashSet<&[u8]> = outputs.iter().map(|o| o.stdout.as_slice()).collect();
    assert_eq!(printed.len(), 1, "all print the same token");
    let stored = store.find_token_by_id("1").unwrap().unwrap();
    assert_eq!(
        String::from_utf8_lossy(outputs[0].stdout.as_slice()).trim(),
        stored.access_token.unwrap()
    );
}
