//! What the command-line tests of the embedded store (tests/cli_*.rs)
//! share: the command on a store, a temporary directory, the records of a
//! store, and the source files they import (the seeded CSV, the published
//! sample's SQLite table, damaged). Needs `cli_seed` (tests/support/cli_seed.rs)
//! declared next to it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::cargo::cargo_bin_cmd;
use assert_cmd::Command;
use serde_json::Value;
use tokenstore::{OAuthToken, SledStore, TokenStore};

use crate::cli_seed::seed_csv;

/// The command on the store `db`, with no store from the environment.
pub fn ts(db: &Path) -> Command {
    let mut command = cargo_bin_cmd!("tokenstore");
    command.env_remove("TOKENSTORE_DB").arg("--db").arg(db);
    command
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    pub fn db(&self) -> PathBuf {
        self.path("db")
    }
}

/// CRLF lines.
pub fn crlf(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("{l}\r\n")).collect()
}

pub fn records(db: &Path) -> Vec<OAuthToken> {
    let store = SledStore::open(db).unwrap();
    let mut tokens = store.get_tokens().unwrap();
    tokens.sort_by_key(|t| {
        t.id.clone()
            .unwrap_or_default()
            .parse::<u64>()
            .unwrap_or(u64::MAX)
    });
    tokens
}

pub fn stdout_json(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes `value` under `key` in the storage engine's tree `tree` of the
/// closed store `db`, behind the store's back (in the live data directory:
/// the one `CURRENT` names after a key change, else the store's own).
pub fn raw_insert(db: &Path, tree: &str, key: &[u8], value: &[u8]) {
    let data = match std::fs::read_to_string(db.join("CURRENT")) {
        Ok(name) => db.join(name.trim()),
        Err(_) => db.to_path_buf(),
    };
    // A store this process just dropped releases sled's own lock when its
    // background threads end (SledStore::open waits for it the same way).
    let started = std::time::Instant::now();
    let raw = loop {
        match sled::open(&data) {
            Ok(raw) => break raw,
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < std::time::Duration::from_secs(5) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("opening {} with sled: {e}", data.display()),
        }
    };
    raw.open_tree(tree).unwrap().insert(key, value).unwrap();
    raw.flush().unwrap();
}

/// Overwrites record `id`'s bytes, so that it no longer decodes.
pub fn damage_record(db: &Path, id: &str) {
    raw_insert(db, "records", id.as_bytes(), &[1, 0xFF, 0xFF]);
}

/// A store with three users, made by importing a CSV.
pub fn seeded(f: &Fixture) -> PathBuf {
    let csv = seed_csv(f.dir.path());
    ts(&f.db())
        .args(["import"])
        .arg(&csv)
        .args(["--from", "zoho-csv"])
        .assert()
        .success();
    f.db()
}

/// The published sample's table, as its code creates it (`expiry_time` as
/// text, ids as text), holding the damage such tables collect.
pub fn sample_sqlite(f: &Fixture, rows: &[[Option<&str>; 10]]) -> PathBuf {
    let path = f.path("zohooauth.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE oauthtoken (id varchar(10), user_name varchar(255), client_id varchar(255), \
         client_secret varchar(255), refresh_token varchar(255), access_token varchar(255), \
         grant_token varchar(255), expiry_time varchar(20), redirect_url varchar(255), \
         api_domain varchar(255))",
    )
    .unwrap();
    for row in rows {
        conn.execute(
            "INSERT INTO oauthtoken VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            rusqlite::params_from_iter(row.iter()),
        )
        .unwrap();
    }
    path
}

pub const INJECTION: &str = "1000.x'); DROP TABLE oauthtoken; --";

pub fn damaged_sample(f: &Fixture) -> PathBuf {
    sample_sqlite(
        f,
        &[
            // Two rows for one user (a login stored twice): the newest wins.
            [
                Some("1"),
                Some("ana@example.com"),
                Some("c"),
                Some("s"),
                Some("1000.r-old"),
                Some("1000.a-old"),
                None,
                Some("1000"),
                None,
                None,
            ],
            [
                Some("2"),
                Some("ana@example.com"),
                Some("c"),
                Some("s"),
                Some("1000.r-new"),
                Some("1000.a-new"),
                None,
                Some("2000"),
                None,
                Some("https://www.zohoapis.com"),
            ],
            // Rows differing only in case are two users (compared byte for byte).
            [
                Some("3"),
                Some("Bob@example.com"),
                Some("c"),
                Some("s"),
                Some("1000.r-bob1"),
                None,
                None,
                Some("10"),
                None,
                None,
            ],
            [
                Some("4"),
                Some("bob@example.com"),
                Some("c"),
                Some("s"),
                Some("1000.r-bob2"),
                None,
                None,
                Some("20"),
                None,
                None,
            ],
            // An injection string as a value is just a value.
            [
                Some("5"),
                Some("O'Brien"),
                Some("c"),
                Some("s"),
                Some(INJECTION),
                None,
                None,
                None,
                None,
                None,
            ],
            // An empty user name: found by its refresh token (rule 3).
            [
                Some("6"),
                Some(""),
                Some("c"),
                Some("s"),
                Some("1000.r-anon"),
                None,
                None,
                Some(""),
                None,
                None,
            ],
            // Ids past 10, stored as text.
            [
                Some("11"),
                Some("dan@example.com"),
                Some("c"),
                Some("s"),
                None,
                Some("1000.a-dan"),
                None,
                Some("3000"),
                None,
                None,
            ],
            [
                Some("12"),
                Some("eve@example.com"),
                Some("c"),
                Some("s"),
                None,
                None,
                Some("1000.g-eve"),
                None,
                None,
                None,
            ],
        ],
    )
}

/// `keygen` into a new owner-only file.
pub fn keygen(f: &Fixture, name: &str) -> PathBuf {
    let path = f.path(name);
    cargo_bin_cmd!("tokenstore")
        .args(["keygen", "--output"])
        .arg(&path)
        .assert()
        .success()
        .stdout("");
    path
}
