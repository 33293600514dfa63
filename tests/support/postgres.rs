//! A throw-away PostgreSQL database per test, on the server that
//! tests/postgres/run.sh starts (its admin URL in `TOKENSTORE_TEST_PG_URL`).
//!
//! Without that variable every PostgreSQL test prints SKIPPED and passes,
//! unless `CI=true`, where it fails: CI must run them.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

/// The variable naming the test server's admin URL.
pub const URL_VAR: &str = "TOKENSTORE_TEST_PG_URL";

/// The admin URL of the test server, or `None` after a loud SKIPPED (and
/// a panic under `CI=true`).
pub fn admin_url(test: &str) -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let message = format!(
                "SKIPPED {test}: no PostgreSQL server ({URL_VAR} is not set); run tests/postgres/run.sh"
            );
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{message} (CI=true: PostgreSQL tests must run)");
            }
            eprintln!("{message}");
            None
        }
    }
}

/// A database created for one test and dropped after it.
pub struct TestDb {
    pub url: String,
    pub name: String,
    admin: String,
}

impl TestDb {
    /// A new empty database, or `None` when PostgreSQL tests are skipped.
    pub fn new(test: &str) -> Option<TestDb> {
        static N: AtomicU64 = AtomicU64::new(0);
        let admin = admin_url(test)?;
        let name = format!(
            "tokenstore_test_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            tokenstore::now_ms()
        );
        let mut client =
            postgres::Client::connect(&admin, postgres::NoTls).expect("connect as admin");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create the test database");
        Some(TestDb {
            url: with_dbname(&admin, &name),
            name,
            admin,
        })
    }

    /// A direct client on the test database, for inspecting or damaging it.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// `url` with its database name replaced by `dbname` (URLs of the form
/// `postgres://user@host:port/db`, as run.sh exports).
pub fn with_dbname(url: &str, dbname: &str) -> String {
    let (base, _) = url
        .rsplit_once('/')
        .expect("a postgres:// URL with a database");
    format!("{base}/{dbname}")
}
