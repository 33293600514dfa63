//! `tokenstore import --from mysql` against a real MariaDB server holding the
//! Zoho SDK DBStore's table. Needs a server: `tests/mysql/run.sh` installs
//! and starts one and runs these tests with `TOKENSTORE_TEST_MYSQL_URL` set.

#[path = "support/mysql.rs"]
mod mysql_db;

use std::path::Path;

use assert_cmd::cargo::cargo_bin_cmd;
use assert_cmd::Command;
use mysql::prelude::Queryable;
use predicates::prelude::*;
use tokenstore::{MysqlStore, OAuthToken, SledStore, TokenStore};

fn url() -> String {
    std::env::var("TOKENSTORE_TEST_MYSQL_URL").expect(
        "TOKENSTORE_TEST_MYSQL_URL is not set: run these tests with tests/mysql/run.sh, \
         which starts a MariaDB server for them",
    )
}

/// A DBStore table named `table` (the Java SDK's schema) holding `rows`.
fn dbstore_table(table: &str, rows: &[[Option<&str>; 10]]) {
    let mut conn = mysql::Conn::new(mysql::Opts::from_url(&url()).unwrap()).unwrap();
    conn.query_drop(format!("DROP TABLE IF EXISTS {table}"))
        .unwrap();
    conn.query_drop(format!(
        "CREATE TABLE {table} (id varchar(10) NOT NULL, user_name varchar(255) NOT NULL, \
         client_id varchar(255), client_secret varchar(255), refresh_token varchar(255), \
         access_token varchar(255), grant_token varchar(255), expiry_time varchar(20), \
         redirect_url varchar(255), api_domain varchar(255), primary key (id))"
    ))
    .unwrap();
    for row in rows {
        conn.exec_drop(
            format!("INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            row.to_vec(),
        )
        .unwrap();
    }
}

fn ts(db: &Path) -> Command {
    let mut command = cargo_bin_cmd!("tokenstore");
    command.env_remove("TOKENSTORE_DB").arg("--db").arg(db);
    command
}

/// `tokenstore import --from mysql` of `table` into the store `db`.
fn import_mysql(db: &Path, table: &str) -> Command {
    let mut command = ts(db);
    command.args([
        "import",
        "--from",
        "mysql",
        "--table",
        table,
        "--url",
        &url(),
    ]);
    command
}

const INJECTION: &str = "1000.x'); DROP TABLE oauthtoken; --";

#[test]
fn the_dbstore_table_imports_through_the_store_rules() {
    dbstore_table(
        "oauthtoken_rules",
        &[
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
                None,
                None,
                Some("2000"),
                None,
                Some("https://www.zohoapis.com"),
            ],
            [
                Some("3"),
                Some("O'Brien"),
                Some("c"),
                Some("s"),
                Some(INJECTION),
                None,
                None,
                None,
                Some("https://app/cb"),
                None,
            ],
            [
                Some("11"),
                Some(""),
                Some("c"),
                Some("s"),
                None,
                None,
                Some("1000.grant"),
                Some(""),
                None,
                None,
            ],
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    import_mysql(&db, "oauthtoken_rules")
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "read 4 rows from MySQL: 3 new records, 0 updated, 1 merged",
        ));

    let store = SledStore::open(&db).unwrap();
    assert_eq!(store.len(), 3);
    let ana = store
        .find_token(&OAuthToken::new().with_user_name("ana@example.com"))
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            ana.refresh_token.as_deref(),
            ana.access_token.as_deref(),
            ana.expiry_time
        ),
        (Some("1000.r-new"), Some("1000.a-old"), Some(2000)),
        "the newer row wins, the older fills what it lacks"
    );
    let obrien = store.find_token_by_id("3").unwrap().unwrap();
    assert_eq!(obrien.refresh_token.as_deref(), Some(INJECTION));
    assert_eq!(obrien.redirect_url.as_deref(), Some("https://app/cb"));
    let anon = store.find_token_by_id("11").unwrap().unwrap();
    assert_eq!(
        (anon.user_name, anon.grant_token.as_deref()),
        (None, Some("1000.grant"))
    );
}

#[test]
fn a_missing_table_or_bad_credentials_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    import_mysql(&db, "no_such_table")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("has no table \"no_such_table\""));
    let wrong = url().replace("test-only-password", "wrong-password");
    let assert = ts(&db)
        .args(["import", "--from", "mysql", "--url", &wrong])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "cannot connect to the MySQL server",
        ));
    assert!(!String::from_utf8_lossy(&assert.get_output().stderr).contains("wrong-password"));
    ts(&db)
        .args(["import", "--from", "mysql", "--url", "not a url"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--url is not a valid"));
    let store = SledStore::open(&db).unwrap();
    assert!(store.is_empty());
}

#[test]
fn dry_run_and_conflicts_write_nothing() {
    dbstore_table(
        "oauthtoken_conflict",
        &[
            [
                Some("1"),
                Some("ana@example.com"),
                Some("c"),
                Some("s"),
                Some("1000.shared"),
                None,
                None,
                Some("1"),
                None,
                None,
            ],
            [
                Some("2"),
                Some("bob@example.com"),
                Some("c"),
                Some("s"),
                Some("1000.shared"),
                None,
                None,
                Some("2"),
                None,
                None,
            ],
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let import = |extra: &[&str]| {
        import_mysql(&db, "oauthtoken_conflict")
            .args(extra)
            .assert()
    };
    import(&[]).code(1).stderr(predicate::str::contains(
        "row 2: its refresh_token is already held by record 1",
    ));
    import(&["--on-conflict", "skip", "--dry-run"])
        .success()
        .stdout(predicate::str::contains("nothing was written"));
    assert!(SledStore::open(&db).unwrap().is_empty());
    import(&["--on-conflict", "skip"]).success();
    assert_eq!(SledStore::open(&db).unwrap().len(), 1);
}

fn sorted(mut tokens: Vec<OAuthToken>) -> Vec<OAuthToken> {
    tokens.sort_by(|a, b| a.id.cmp(&b.id));
    tokens
}

#[test]
fn copy_a_directory_to_mysql_and_back_keeps_records_ids_and_counter() {
    let Some(db) = mysql_db::TestDb::new("cli copy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    {
        let store = SledStore::open(&source).unwrap();
        for n in 0..4 {
            let mut token = OAuthToken::new()
                .with_user_name(format!("user{n}@example.com"))
                .with_refresh_token(format!("1000.refresh-{n}"));
            store.save_token(&mut token).unwrap();
        }
        assert!(store.delete_token("4").unwrap());
    }
    let original = sorted(SledStore::open(&source).unwrap().get_tokens().unwrap());
    let source = source.to_str().unwrap().to_owned();
    ts(Path::new(&source))
        .args(["copy", "--from", &source, "--to", &db.url])
        .assert()
        .success()
        .stdout(predicate::str::contains("copied 3 of 3 records"))
        .stdout(predicate::str::contains("test-only-password").not());
    let store = MysqlStore::connect(&db.url).unwrap();
    assert_eq!(sorted(store.get_tokens().unwrap()), original);
    assert_eq!(store.last_issued_id().unwrap(), 4, "the counter is carried");
    assert!(store.check().unwrap().is_ok());
    drop(store);
    // A non-empty target is refused.
    ts(Path::new(&source))
        .args(["copy", "--from", &source, "--to", &db.url])
        .assert()
        .code(1);

    let back = dir.path().join("back");
    let back = back.to_str().unwrap().to_owned();
    ts(Path::new(&back))
        .args(["copy", "--from", &db.url, "--to", &back])
        .assert()
        .success()
        .stdout(predicate::str::contains("copied 3 of 3 records"));
    let store = SledStore::open(&back).unwrap();
    assert_eq!(sorted(store.get_tokens().unwrap()), original);
    let mut next = OAuthToken::new()
        .with_user_name("new")
        .with_access_token("1000.a");
    store.save_token(&mut next).unwrap();
    assert_eq!(
        next.id.as_deref(),
        Some("5"),
        "id 4 is never handed out again"
    );
}
