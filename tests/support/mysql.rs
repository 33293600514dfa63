//! A throw-away MySQL/MariaDB database per test, on the server that
//! tests/mysql/run.sh starts (its admin URL in `TOKENSTORE_TEST_MYSQL_URL`;
//! the user may create databases).
//!
//! Without that variable every MySQL test prints SKIPPED and passes,
//! unless `CI=true`, where it fails: CI must run them.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use mysql::prelude::Queryable;

/// The variable naming the test server's admin URL.
pub const URL_VAR: &str = "TOKENSTORE_TEST_MYSQL_URL";

/// The admin URL of the test server, or `None` after a loud SKIPPED (and
/// a panic under `CI=true`).
pub fn admin_url(test: &str) -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let message = format!(
                "SKIPPED {test}: no MySQL server ({URL_VAR} is not set); run tests/mysql/run.sh"
            );
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{message} (CI=true: MySQL tests must run)");
            }
            eprintln!("{message}");
            None
        }
    }
}

/// A direct connection (TCP, not the Unix socket) to `url`.
pub fn connect(url: &str) -> mysql::Conn {
    let opts = mysql::OptsBuilder::from_opts(mysql::Opts::from_url(url).expect("a mysql:// URL"))
        .prefer_socket(false);
    mysql::Conn::new(opts).expect("connect to the test server")
}

/// A database created for one test and dropped after it.
pub struct TestDb {
    pub url: String,
    pub name: String,
    admin: String,
}

impl TestDb {
    /// A new empty database, or `None` when MySQL tests are skipped.
    pub fn new(test: &str) -> Option<TestDb> {
        static N: AtomicU64 = AtomicU64::new(0);
        let admin = admin_url(test)?;
        let name = format!(
            "tokenstore_test_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            tokenstore::now_ms()
        );
        connect(&admin)
            .query_drop(format!("CREATE DATABASE {name}"))
            .expect("create the test database");
        Some(TestDb {
            url: with_dbname(&admin, &name),
            name,
            admin,
        })
    }

    /// A direct client on the test database, for inspecting or damaging it.
    pub fn client(&self) -> mysql::Conn {
        connect(&self.url)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let opts = mysql::Opts::from_url(&self.admin).expect("a mysql:// URL");
        if let Ok(mut conn) =
            mysql::Conn::new(mysql::OptsBuilder::from_opts(opts).prefer_socket(false))
        {
            let _ = conn.query_drop(format!("DROP DATABASE IF EXISTS {}", self.name));
        }
    }
}

/// `url` with its database name replaced by `dbname` (URLs of the form
/// `mysql://user:password@host:port/db`, as run.sh exports), its
/// parameters kept.
pub fn with_dbname(url: &str, dbname: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((url, query)) => (url, format!("?{query}")),
        None => (url, String::new()),
    };
    let (base, _) = url
        .rsplit_once('/')
        .expect("a mysql:// URL with a database");
    format!("{base}/{dbname}{query}")
}
