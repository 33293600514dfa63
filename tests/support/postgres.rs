//! A throw-away PostgreSQL database per test, on the server that
//! tests/postgres/run.sh starts (its admin URL in `TOKENSTORE_TEST_PG_URL`).
//!
//! The URL under test may ask for TLS (`sslmode=verify-full&sslrootcert=…`,
//! which rust-postgres cannot read): then `TOKENSTORE_TEST_PG_ADMIN_URL`
//! names a plaintext way in (run.sh gives the server's Unix socket), used
//! to create and drop the databases and for [`TestDb::client`]; each
//! test's URL is the URL under test with its database replaced, its TLS
//! parameters kept.
//!
//! Without that variable every PostgreSQL test prints SKIPPED and passes,
//! unless `CI=true`, where it fails: CI must run them.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

/// The variable naming the test server's admin URL.
pub const URL_VAR: &str = "TOKENSTORE_TEST_PG_URL";

/// The variable naming a plaintext admin URL for direct clients, when the
/// URL under test asks for TLS.
pub const ADMIN_URL_VAR: &str = "TOKENSTORE_TEST_PG_ADMIN_URL";

/// The URL for direct `postgres::Client`s (plaintext): the admin URL when
/// given, else the URL under test.
fn direct_admin_url(url: &str) -> String {
    std::env::var(ADMIN_URL_VAR)
        .ok()
        .filter(|admin| !admin.is_empty())
        .unwrap_or_else(|| url.to_owned())
}

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
        let url = admin_url(test)?;
        let admin = direct_admin_url(&url);
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
            url: with_dbname(&url, &name),
            name,
            admin,
        })
    }

    /// A direct client on the test database (plaintext, through the admin
    /// URL), for inspecting or damaging it.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&with_dbname(&self.admin, &self.name), postgres::NoTls)
            .expect("connect to the test database")
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

/// `url` with its database name replaced by `dbname`, its parameters kept
/// (URLs of the form `postgres://user@host:port/db?params`, as run.sh
/// exports).
pub fn with_dbname(url: &str, dbname: &str) -> String {
    let (path, params) = match url.split_once('?') {
        Some((path, params)) => (path, format!("?{params}")),
        None => (url, String::new()),
    };
    let (base, _) = path
        .rsplit_once('/')
        .expect("a postgres:// URL with a database");
    format!("{base}/{dbname}{params}")
}
