//! Every `tokenstore` command against a `postgres://` store, and `copy`
//! between the embedded store and PostgreSQL both ways. Needs a server:
//! run tests/postgres/run.sh (without `TOKENSTORE_TEST_PG_URL` every test
//! prints SKIPPED). With the `oauth` feature: eight processes on one
//! expired token in a shared database make one refresh request.

#[path = "support/cli_seed.rs"]
mod cli_seed;
#[cfg(feature = "oauth")]
#[path = "support/fake_zoho.rs"]
mod fake_zoho;
#[path = "support/postgres.rs"]
mod postgres_db;

use std::path::{Path, PathBuf};

use assert_cmd::cargo::cargo_bin_cmd;
use assert_cmd::Command;
use cli_seed::{assert_counter_carried, hand_out_and_delete_id_4, seed_csv, MARK};
use postgres_db::TestDb;
use predicates::prelude::*;
use serde_json::Value;
use tokenstore::{Key, OAuthToken, PostgresOptions, PostgresStore, SledStore, TokenStore};

/// The URLs carry a password (the test server trusts any), which no output
/// may show.
const PASSWORD: &str = "pgpass-NEVERSHOWN";

/// `db.url` with a password in it.
fn url(db: &TestDb) -> String {
    db.url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{PASSWORD}@"),
        1,
    )
}

fn ts(store: &str) -> Command {
    let mut command = cargo_bin_cmd!("tokenstore");
    command
        .env_remove("TOKENSTORE_DB")
        .env_remove("TOKENSTORE_KEY");
    command.arg("--db").arg(store);
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `command`, expects exit `code`, checks that neither stream shows a
/// secret or the password, and returns stdout.
fn run(command: &mut Command, code: i32) -> String {
    let output = command.output().unwrap();
    let (out, err) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {out}\nstderr: {err}"
    );
    assert!(
        !out.contains(MARK) && !err.contains(MARK),
        "a secret was shown: {out}{err}"
    );
    assert!(
        !out.contains(PASSWORD) && !err.contains(PASSWORD),
        "the password was shown: {out}{err}"
    );
    out
}

fn sorted(mut tokens: Vec<OAuthToken>) -> Vec<OAuthToken> {
    tokens.sort_by_key(|t| {
        t.id.clone()
            .unwrap_or_default()
            .parse::<u64>()
            .unwrap_or(u64::MAX)
    });
    tokens
}

fn pg_records(db: &TestDb) -> Vec<OAuthToken> {
    sorted(
        PostgresStore::connect(&db.url)
            .unwrap()
            .get_tokens()
            .unwrap(),
    )
}

fn sled_records(path: &Path) -> Vec<OAuthToken> {
    sorted(SledStore::open(path).unwrap().get_tokens().unwrap())
}

/// Imports the seed into `store` (`dir` holds its CSV); returns the output.
fn import_seed(store: &str, dir: &Path) -> String {
    let csv = seed_csv(dir);
    run(
        ts(store)
            .arg("import")
            .arg(&csv)
            .args(["--from", "zoho-csv"]),
        0,
    )
}

fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    cargo_bin_cmd!("tokenstore")
        .args(["keygen", "--output"])
        .arg(&path)
        .assert()
        .success();
    path
}

#[test]
fn a_database_without_tables_is_no_store_until_import_makes_one() {
    let Some(db) = TestDb::new("cli no store") else {
        return;
    };
    let store = url(&db);
    for args in [&["list"][..], &["stats"], &["check"], &["export"]] {
        let output = ts(&store).args(args).output().unwrap();
        let err = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with("tokenstore: no token store at postgres://"),
            "{err}"
        );
        assert!(!err.contains(PASSWORD), "the password was shown: {err}");
    }
    let tables: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "a read command created the tables");
    let dir = tempfile::tempdir().unwrap();
    import_seed(&store, dir.path());
    run(ts(&store).arg("list"), 0);
}

/// Needs no server: nothing listens on the port.
#[test]
fn an_unreachable_server_is_a_failing_store_exit_three() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/tokens");
    let output = ts(&store).arg("list").output().unwrap();
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{err}");
    assert!(err.contains("unavailable"), "{err}");
    assert!(!err.contains(PASSWORD), "the password was shown: {err}");
}

#[test]
fn every_command_works_on_a_postgres_url() {
    let Some(db) = TestDb::new("cli every command") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = url(&db);
    let out = import_seed(&store, dir.path());
    assert!(out.contains('3'), "{out}");
    assert_eq!(pg_records(&db).len(), 3);

    let out = run(ts(&store).arg("list"), 0);
    assert!(
        out.contains("ana@example.com") && out.contains("(3 record(s))"),
        "{out}"
    );
    let list: Value = serde_json::from_str(&run(ts(&store).args(["--json", "list"]), 0)).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
    // Secrets only when asked for, the password never.
    let output = ts(&store)
        .args(["list", "--show-secrets"])
        .output()
        .unwrap();
    let shown = text(&output.stdout);
    assert!(output.status.success());
    assert!(shown.contains(&format!("1000.{MARK}-a1")), "{shown}");
    assert!(!shown.contains(PASSWORD) && !text(&output.stderr).contains(PASSWORD));

    let out = run(ts(&store).args(["show", "2"]), 0);
    assert!(out.contains("bob@example.com"), "{out}");
    run(ts(&store).args(["show", "9"]), 1);

    let found: Value = serde_json::from_str(&run(
        ts(&store).args(["--json", "find", "--user", "carol@example.com"]),
        0,
    ))
    .unwrap();
    assert_eq!(found["id"], "3");
    let found: Value = serde_json::from_str(&run(
        ts(&store)
            .args(["--json", "find", "--access", "-"])
            .write_stdin(format!("1000.{MARK}-a2\n")),
        0,
    ))
    .unwrap();
    assert_eq!(found["id"], "2");
    run(ts(&store).args(["find", "--user", "nobody"]), 1);

    let stats: Value = serde_json::from_str(&run(ts(&store).args(["--json", "stats"]), 0)).unwrap();
    assert_eq!(stats["records"], 3);
    assert_eq!(stats["with_grant_token"], 1);
    assert!(stats["disk_bytes"].as_u64().unwrap() > 0);
    run(ts(&store).arg("stats"), 0);

    let out = run(ts(&store).arg("check"), 0);
    assert!(out.contains("no problems"), "{out}");

    // Export, then import the export into a second database: identical.
    let export = dir.path().join("export.json");
    run(
        ts(&store)
            .args(["export", "--include-secrets", "--output"])
            .arg(&export),
        0,
    );
    let out = run(ts(&store).arg("export"), 0);
    assert!(out.contains("bob@example.com"));
    let Some(second) = TestDb::new("cli every command, import target") else {
        return;
    };
    run(
        ts(&url(&second))
            .arg("import")
            .arg(&export)
            .args(["--from", "json"]),
        0,
    );
    assert_eq!(pg_records(&second), pg_records(&db));

    let out = run(
        ts(&store).args(["purge", "--idle-days", "1", "--dry-run"]),
        0,
    );
    assert!(out.contains("bob@example.com"), "{out}");
    assert_eq!(pg_records(&db).len(), 3);
    run(ts(&store).args(["purge", "--idle-days", "1"]), 0);
    assert_eq!(pg_records(&db).len(), 2);

    run(ts(&store).args(["delete", "3"]), 0);
    run(ts(&store).args(["delete", "3"]), 1);
    run(ts(&store).arg("clear"), 1);
    assert_eq!(pg_records(&db).len(), 1);
    // TOKENSTORE_DB names a postgres:// store as well as --db does.
    let mut command = cargo_bin_cmd!("tokenstore");
    command
        .env("TOKENSTORE_DB", &store)
        .args(["clear", "--yes"]);
    run(&mut command, 0);
    assert!(pg_records(&db).is_empty());
}

#[test]
fn check_on_postgres_reports_damage_and_exits_one() {
    let Some(db) = TestDb::new("cli check") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = url(&db);
    import_seed(&store, dir.path());
    db.client()
        .batch_execute("UPDATE tokenstore_records SET record = '\\x01ffff' WHERE id = '2'")
        .unwrap();
    let out = run(ts(&store).arg("check"), 1);
    assert!(out.contains("record \"2\""), "{out}");
    run(ts(&store).args(["delete", "2"]), 0);
    run(ts(&store).arg("check"), 0);
}

#[test]
fn encrypt_rekey_and_decrypt_a_postgres_store() {
    let Some(db) = TestDb::new("cli keys") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = url(&db);
    import_seed(&store, dir.path());
    let before = pg_records(&db);
    let first = keygen(dir.path(), "first.key");
    let second = keygen(dir.path(), "second.key");
    let out = run(
        ts(&store).args(["encrypt", "--new-key-file"]).arg(&first),
        0,
    );
    assert!(out.contains("encrypted 3 records"), "{out}");
    ts(&store)
        .arg("list")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("encrypted"));
    let with = |key: &Path| {
        let mut command = ts(&store);
        command.arg("--key-file").arg(key);
        command
    };
    run(with(&first).arg("check"), 0);
    let out = run(
        with(&first).args(["rekey", "--new-key-file"]).arg(&second),
        0,
    );
    assert!(out.contains("re-encrypted 3 records"), "{out}");
    with(&first)
        .arg("list")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("wrong key"));
    let key = Key::from_file(&second).unwrap();
    let sealed =
        PostgresStore::connect_with(&db.url, PostgresOptions::default().encryption(key)).unwrap();
    assert_eq!(sorted(sealed.get_tokens().unwrap()), before);
    drop(sealed);
    run(with(&second).args(["decrypt", "--yes"]), 0);
    assert_eq!(pg_records(&db), before);
    run(ts(&store).arg("check"), 0);
}

#[test]
fn copy_sled_to_postgres_and_back_keeps_records_ids_and_counter() {
    let Some(db) = TestDb::new("cli copy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let source_str = source.to_str().unwrap().to_owned();
    import_seed(&source_str, dir.path());
    hand_out_and_delete_id_4(&source);
    let original = sled_records(&source);
    let pg = url(&db);

    let out = run(
        ts(&source_str).args(["copy", "--from", &source_str, "--to", &pg]),
        0,
    );
    assert!(out.contains("copied 3 of 3 records"), "{out}");
    assert_eq!(pg_records(&db), original);
    let store = PostgresStore::connect(&db.url).unwrap();
    assert_eq!(store.last_issued_id().unwrap(), 4);
    assert!(store.check().unwrap().is_ok());
    drop(store);

    // A non-empty target is refused.
    run(
        ts(&pg).args(["copy", "--from", &source_str, "--to", &pg]),
        1,
    );

    let back = dir.path().join("back");
    let back_str = back.to_str().unwrap().to_owned();
    let out = run(ts(&pg).args(["copy", "--from", &pg, "--to", &back_str]), 0);
    assert!(out.contains("copied 3 of 3 records"), "{out}");
    assert_eq!(sled_records(&back), original);
    let store = SledStore::open(&back).unwrap();
    assert_counter_carried(&store);

    // Into an encrypted PostgreSQL store, and out of it.
    let Some(sealed_db) = TestDb::new("cli copy sealed") else {
        return;
    };
    let key = keygen(dir.path(), "pg.key");
    let sealed = url(&sealed_db);
    run(
        ts(&source_str)
            .args([
                "copy",
                "--from",
                &source_str,
                "--to",
                &sealed,
                "--to-key-file",
            ])
            .arg(&key),
        0,
    );
    let opened = PostgresStore::connect_with(
        &sealed_db.url,
        PostgresOptions::default().encryption(Key::from_file(&key).unwrap()),
    )
    .unwrap();
    assert_eq!(sorted(opened.get_tokens().unwrap()), original);
    assert_eq!(opened.last_issued_id().unwrap(), 4);
}

/// Unlike the embedded store, which one process holds at a time, the
/// shared store lets all eight run at once: only `refresh_lock` (the
/// server's advisory lock on the record) keeps them to one request.
#[cfg(feature = "oauth")]
#[test]
fn eight_processes_on_one_expired_token_make_one_refresh() {
    let Some(db) = TestDb::new("cli eight refreshers") else {
        return;
    };
    let server = fake_zoho::FakeZoho::start();
    server.set_delay(std::time::Duration::from_millis(200));
    let store = PostgresStore::connect(&db.url).unwrap();
    let mut token = OAuthToken::new()
        .with_user_name("ana@example.com")
        .with_client_id("1000.CLIENTID")
        .with_client_secret(format!("client-secret-{MARK}"))
        .with_refresh_token(format!("1000.refresh-{MARK}"))
        .with_access_token(format!("1000.access-{MARK}"))
        .with_expiry_time(tokenstore::now_ms() - 1);
    store.save_token(&mut token).unwrap();
    let bin = assert_cmd::cargo::cargo_bin!("tokenstore");
    let children: Vec<_> = (0..8)
        .map(|_| {
            std::process::Command::new(bin)
                .env_remove("TOKENSTORE_KEY")
                .env("TOKENSTORE_ACCOUNTS_URL", server.url())
                .args(["--db", &url(&db), "token", "--user", "ana@example.com"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<std::process::Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    eprintln!(
        "FIGURES 8 concurrent `tokenstore token` processes on postgres://, 1 expired token: \
         {} refresh request(s)",
        server.refreshes()
    );
    for output in &outputs {
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert!(!text(&output.stderr).contains(PASSWORD));
    }
    assert_eq!(server.refreshes(), 1);
    let stored = store.find_token_by_id("1").unwrap().unwrap();
    let access = stored.access_token.unwrap();
    assert_ne!(access, format!("1000.access-{MARK}"), "refreshed");
    for output in &outputs {
        assert_eq!(
            text(&output.stdout).trim(),
            access,
            "all print the new token"
        );
    }
}
