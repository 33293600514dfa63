//! The `tokenstore` command, driven as a real binary on real files made here:
//! Zoho FileStore CSVs, a SQLite database with the published sample's schema
//! and damage, export files, hostile inputs.

#[cfg(unix)]
#[path = "support/cli_seed.rs"]
mod cli_seed;
#[path = "support/files.rs"]
mod files;

use std::path::{Path, PathBuf};

use assert_cmd::cargo::cargo_bin_cmd;
use assert_cmd::Command;
use cli_seed::{assert_counter_carried, hand_out_and_delete_id_4, seed_csv, HEADER, MARK};
use predicates::prelude::*;
use serde_json::Value;
use tokenstore::{OAuthToken, SledStore, TokenStore};

/// The command on the store `db`, with no store from the environment.
fn ts(db: &Path) -> Command {
    let mut command = cargo_bin_cmd!("tokenstore");
    command.env_remove("TOKENSTORE_DB").arg("--db").arg(db);
    command
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn db(&self) -> PathBuf {
        self.path("db")
    }
}

/// CRLF lines.
fn crlf(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("{l}\r\n")).collect()
}

fn records(db: &Path) -> Vec<OAuthToken> {
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

fn stdout_json(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A store with three users, made by importing a CSV.
fn seeded(f: &Fixture) -> PathBuf {
    let csv = seed_csv(f.dir.path());
    ts(&f.db())
        .args(["import"])
        .arg(&csv)
        .args(["--from", "zoho-csv"])
        .assert()
        .success();
    f.db()
}

#[test]
fn filestore_csv_with_crlf_quotes_and_commas_imports_every_field() {
    let f = Fixture::new();
    let csv = f.write(
        "tokens.csv",
        crlf(&[
            HEADER,
            "7,\"O'Brien, Pat\",1000.CID,cs,1000.r7,1000.a7,,1763800000000,\"https://app/cb?a=1,b=\"\"2\"\"\",https://www.zohoapis.com",
            "12,ana@example.com,1000.CID,cs,,,1000.g12,,,",
        ]),
    );
    ts(&f.db())
        .arg("import")
        .arg(&csv)
        .args(["--from", "zoho-csv"])
        .assert()
        .success()
        .stdout(predicate::str::contains("2 new records"));
    let stored = records(&f.db());
    assert_eq!(
        stored,
        vec![
            OAuthToken::new()
                .with_id("7")
                .with_user_name("O'Brien, Pat")
                .with_client_id("1000.CID")
                .with_client_secret("cs")
                .with_refresh_token("1000.r7")
                .with_access_token("1000.a7")
                .with_expiry_time(1_763_800_000_000)
                .with_redirect_url("https://app/cb?a=1,b=\"2\"")
                .with_api_domain("https://www.zohoapis.com"),
            OAuthToken::new()
                .with_id("12")
                .with_user_name("ana@example.com")
                .with_client_id("1000.CID")
                .with_client_secret("cs")
                .with_grant_token("1000.g12"),
        ]
    );
}

#[test]
fn legacy_nine_column_and_java_headers_are_read() {
    let f = Fixture::new();
    let legacy = f.write(
        "legacy.csv",
        crlf(&[
            "id,user_mail,client_id,client_secret,refresh_token,access_token,grant_token,expiry_time,redirect_uri",
            "1,ana@example.com,c,s,1000.r1,1000.a1,,5,https://cb",
        ]),
    );
    let java = f.write(
        "java.csv",
        // LF line ends too.
        "id,user_name,client_id,client_secret,refresh_token,access_token,grant_token,expiry_time,redirect_url,api_domain\n\
         2,bob@example.com,c,s,1000.r2,,,,https://cb2,https://www.zohoapis.in\n",
    );
    for (file, _) in [(&legacy, 1), (&java, 2)] {
        ts(&f.db())
            .arg("import")
            .arg(file)
            .args(["--from", "zoho-csv"])
            .assert()
            .success();
    }
    let stored = records(&f.db());
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].redirect_url.as_deref(), Some("https://cb"));
    assert_eq!(stored[0].api_domain, None);
    assert_eq!(stored[0].user_name.as_deref(), Some("ana@example.com"));
    assert_eq!(stored[1].redirect_url.as_deref(), Some("https://cb2"));
    assert_eq!(
        stored[1].api_domain.as_deref(),
        Some("https://www.zohoapis.in")
    );
}

/// The published sample's table, as its code creates it (`expiry_time` as
/// text, ids as text), holding the damage such tables collect.
fn sample_sqlite(f: &Fixture, rows: &[[Option<&str>; 10]]) -> PathBuf {
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

const INJECTION: &str = "1000.x'); DROP TABLE oauthtoken; --";

fn damaged_sample(f: &Fixture) -> PathBuf {
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

#[test]
fn the_samples_sqlite_table_imports_with_its_damage_repaired() {
    let f = Fixture::new();
    let sample = damaged_sample(&f);
    let output = ts(&f.db())
        .args(["--json", "import"])
        .arg(&sample)
        .args(["--from", "sqlite"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let summary = stdout_json(&output);
    assert_eq!(summary["read"], 8);
    assert_eq!(summary["imported"], 7);
    assert_eq!(summary["merged"], 1);

    let store = SledStore::open(f.db()).unwrap();
    assert_eq!(store.len(), 7);
    let ana = store
        .find_token(&OAuthToken::new().with_user_name("ana@example.com"))
        .unwrap()
        .unwrap();
    assert_eq!(ana.refresh_token.as_deref(), Some("1000.r-new"));
    assert_eq!(ana.access_token.as_deref(), Some("1000.a-new"));
    assert_eq!(ana.expiry_time, Some(2000));
    assert_eq!(
        ana.id.as_deref(),
        Some("1"),
        "the merged record keeps the first row's id"
    );
    // The replaced token of the older row finds nothing.
    let old = OAuthToken::new()
        .with_client_id("c")
        .with_client_secret("s")
        .with_refresh_token("1000.r-old");
    assert_eq!(store.find_token(&old).unwrap(), None);

    let bob = |name: &str| {
        store
            .find_token(&OAuthToken::new().with_user_name(name))
            .unwrap()
            .unwrap()
    };
    assert_ne!(bob("Bob@example.com").id, bob("bob@example.com").id);

    let by_refresh = |refresh: &str| {
        store
            .find_token(
                &OAuthToken::new()
                    .with_client_id("x")
                    .with_client_secret("y")
                    .with_refresh_token(refresh),
            )
            .unwrap()
    };
    assert_eq!(
        by_refresh(INJECTION).and_then(|t| t.user_name).as_deref(),
        Some("O'Brien")
    );
    let anon = by_refresh("1000.r-anon").unwrap();
    assert_eq!((anon.user_name, anon.expiry_time), (None, None));
    assert_eq!(
        store
            .find_token_by_id("12")
            .unwrap()
            .and_then(|t| t.grant_token)
            .as_deref(),
        Some("1000.g-eve")
    );
    // Ids keep going after the imported ones.
    let mut new = OAuthToken::new()
        .with_user_name("new")
        .with_access_token("1000.new");
    store.save_token(&mut new).unwrap();
    assert_eq!(new.id.as_deref(), Some("13"));
    assert!(store.check().unwrap().is_ok());
}

/// Rows for two users sharing one refresh token (a copy-paste in the sample
/// table): the three conflict policies.
#[test]
fn conflicts_fail_by_default_and_can_be_skipped_or_overwritten() {
    let f = Fixture::new();
    let sample = sample_sqlite(
        &f,
        &[
            [
                Some("1"),
                Some("ana@example.com"),
                Some("c"),
                Some("s"),
                Some("1000.shared"),
                None,
                None,
                Some("100"),
                None,
                None,
            ],
            [
                Some("2"),
                Some("zed@example.com"),
                Some("c"),
                Some("s"),
                Some("1000.zed"),
                None,
                None,
                Some("150"),
                None,
                None,
            ],
            [
                Some("3"),
                Some("Ana@example.com"),
                Some("c"),
                Some("s"),
                Some("1000.shared"),
                None,
                None,
                Some("200"),
                None,
                None,
            ],
        ],
    );
    let import = |policy: &str, db: &Path| {
        ts(db)
            .arg("import")
            .arg(&sample)
            .args(["--from", "sqlite", "--on-conflict", policy])
            .assert()
    };

    let failed = import("fail", &f.path("fail"))
        .code(1)
        .stderr(predicate::str::contains(
        "row 3: its refresh_token is already held by record 1 (from row 1); nothing was imported",
    ));
    assert!(!text(&failed.get_output().stderr).contains("1000.shared"));
    assert!(
        records(&f.path("fail")).is_empty(),
        "a failed import wrote something"
    );

    import("skip", &f.path("skip"))
        .success()
        .stdout(predicate::str::contains("2 new records"))
        .stdout(predicate::str::contains(
            "row 3: refresh_token already held by record 1 (from row 1): skipped",
        ));
    let users: Vec<_> = records(&f.path("skip"))
        .into_iter()
        .map(|t| t.user_name.unwrap())
        .collect();
    assert_eq!(users, ["ana@example.com", "zed@example.com"]);

    import("overwrite", &f.path("overwrite"))
        .success()
        .stdout(predicate::str::contains("removed the holder"));
    let users: Vec<_> = records(&f.path("overwrite"))
        .into_iter()
        .map(|t| t.user_name.unwrap())
        .collect();
    assert_eq!(users, ["zed@example.com", "Ana@example.com"]);
}

#[test]
fn a_source_id_held_by_another_user_is_renumbered_never_merged() {
    let f = Fixture::new();
    let db = seeded(&f);
    let csv = f.write(
        "other.csv",
        crlf(&[HEADER, "1,zoe@example.com,c,s,1000.zoe,,,,,"]),
    );
    ts(&db)
        .arg("import")
        .arg(&csv)
        .args(["--from", "zoho-csv"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "row 1: id \"1\" belongs to another record; saved as id 4",
        ));
    let store = SledStore::open(&db).unwrap();
    assert_eq!(
        store
            .find_token_by_id("1")
            .unwrap()
            .unwrap()
            .user_name
            .as_deref(),
        Some("ana@example.com")
    );
    assert_eq!(
        store
            .find_token_by_id("4")
            .unwrap()
            .unwrap()
            .user_name
            .as_deref(),
        Some("zoe@example.com")
    );
}

#[test]
fn dry_run_reports_and_writes_nothing() {
    let f = Fixture::new();
    let db = seeded(&f);
    let before = records(&db);
    let sample = damaged_sample(&f);
    ts(&db)
        .arg("import")
        .arg(&sample)
        .args(["--from", "sqlite", "--dry-run"])
        .assert()
        .success()
        .stdout(predicate::str::contains("dry run: read 8 rows"))
        .stdout(predicate::str::contains("nothing was written"));
    assert_eq!(records(&db), before);
}

#[test]
fn hostile_inputs_give_one_clear_line_and_change_nothing() {
    let f = Fixture::new();
    let db = seeded(&f);
    let before = records(&db);
    let not_sqlite = f.write("not.db", b"this is not a database, just text\n".repeat(200));
    let empty = f.write("empty", b"");
    let cases: Vec<(&str, PathBuf, Vec<&str>, &str)> = vec![
        (
            "wrong column count",
            f.write("short.csv", crlf(&[HEADER, "1,a,c,s,1000.r"])),
            vec!["--from", "zoho-csv"],
            "found record with 5 fields",
        ),
        (
            "unbalanced quote",
            f.write("quote.csv", crlf(&[HEADER, "1,\"ana,c,s,1000.r,,,,,"])),
            vec!["--from", "zoho-csv"],
            "line",
        ),
        (
            "not UTF-8",
            f.write(
                "latin1.csv",
                [format!("{HEADER}\r\n1,").as_bytes(), b"Jos\xe9", b",c,s,1000.r,,,,,\r\n"].concat(),
            ),
            vec!["--from", "zoho-csv"],
            "invalid utf-8",
        ),
        (
            "headerless file",
            f.write("noheader.csv", crlf(&[&format!("1,ana,c,s,1000.{MARK},,,,,")])),
            vec!["--from", "zoho-csv"],
            "is not a token store column",
        ),
        (
            "bad expiry",
            f.write("expiry.csv", crlf(&[HEADER, "1,ana,c,s,1000.r,,,soon,,"])),
            vec!["--from", "zoho-csv"],
            "row 1: expiry_time is not a whole number",
        ),
        ("empty csv", empty.clone(), vec!["--from", "zoho-csv"], "is empty"),
        ("not sqlite", not_sqlite, vec!["--from", "sqlite"], "is not a SQLite database"),
        ("empty sqlite", empty.clone(), vec!["--from", "sqlite"], "has no table \"oauthtoken\" (it has: no tables)"),
        (
            "missing table",
            sample_sqlite(&f, &[]),
            vec!["--from", "sqlite", "--table", "tokens"],
            "has no table \"tokens\" (it has: oauthtoken)",
        ),
        ("missing file", f.path("absent.csv"), vec!["--from", "zoho-csv"], "cannot open"),
        ("empty json", empty, vec!["--from", "json"], "is not valid JSON"),
        (
            "json of the wrong shape",
            f.write("shape.json", format!(r#"{{"tokens": [{{"user_name": "a", "refresh_token": true, "access_token": "{MARK}"}}]}}"#)),
            vec!["--from", "json"],
            "token 1: refresh_token must be a string",
        ),
    ];
    for (name, file, args, expected) in cases {
        let assert = ts(&db)
            .arg("import")
            .arg(&file)
            .args(&args)
            .assert()
            .code(2);
        let stderr = text(&assert.get_output().stderr);
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{name}: {stderr}");
        assert!(!stderr.contains(MARK), "{name} printed a secret: {stderr}");
        assert_eq!(records(&db), before, "{name} changed the store");
    }
}

#[test]
fn export_then_import_gives_identical_records() {
    let f = Fixture::new();
    let db = seeded(&f);
    let sample = damaged_sample(&f);
    ts(&db)
        .arg("import")
        .arg(&sample)
        .args(["--from", "sqlite"])
        .assert()
        .success();
    let original = records(&db);
    // ana's and bob's rows merged into the seeded records.
    assert_eq!(original.len(), 8);

    for (format, name) in [("json", "export.json"), ("zoho-csv", "export.csv")] {
        let file = f.path(name);
        ts(&db)
            .args([
                "export",
                "--include-secrets",
                "--format",
                format,
                "--output",
            ])
            .arg(&file)
            .assert()
            .success();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name} is readable by others");
        }
        let copy = f.path(&format!("copy-{format}"));
        let from = if format == "json" { "json" } else { "zoho-csv" };
        ts(&copy)
            .arg("import")
            .arg(&file)
            .args(["--from", from])
            .assert()
            .success();
        assert_eq!(records(&copy), original, "round trip through {format}");
    }
    // The CSV is what the FileStore writes: header, CRLF line ends.
    let csv = std::fs::read_to_string(f.path("export.csv")).unwrap();
    assert!(csv.starts_with(&format!("{HEADER}\r\n")));
    assert_eq!(csv.matches("\r\n").count(), 9);
}

#[test]
fn export_leaves_secrets_out_unless_asked() {
    let f = Fixture::new();
    let db = seeded(&f);
    let plain = ts(&db).arg("export").assert().success();
    let document: Value = serde_json::from_slice(&plain.get_output().stdout).unwrap();
    assert_eq!(document["secrets_included"], false);
    assert_eq!(document["tokens"].as_array().unwrap().len(), 3);
    assert!(!text(&plain.get_output().stdout).contains(MARK));
    ts(&db)
        .args(["export", "--format", "zoho-csv"])
        .assert()
        .success()
        .stdout(predicate::str::contains(MARK).not())
        .stderr(predicate::str::contains("--include-secrets"));
    ts(&db)
        .args(["export", "--include-secrets"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("1000.{MARK}-r1")));
}

#[test]
fn no_command_prints_a_secret_unless_asked() {
    let f = Fixture::new();
    let db = seeded(&f);
    let runs: &[&[&str]] = &[
        &["list"],
        &["--json", "list"],
        &["show", "1"],
        &["--json", "show", "1"],
        &["find", "--user", "ana@example.com"],
        &["--json", "find", "--user", "ana@example.com"],
        &["stats"],
        &["--json", "stats"],
        &["check"],
        &["purge", "--idle-days", "1", "--dry-run"],
        &["--json", "purge", "--idle-days", "1", "--dry-run"],
        &["show", "404"],
        &["find", "--access", "1000.nothing"],
    ];
    for args in runs {
        let output = ts(&db).args(*args).output().unwrap();
        let all = text(&output.stdout) + &text(&output.stderr);
        assert!(!all.contains(MARK), "{args:?} printed a secret:\n{all}");
    }
    // The secret used as the query is not echoed either.
    let output = ts(&db)
        .args(["find", "--access", &format!("1000.{MARK}-nope")])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(!text(&output.stderr).contains(MARK));

    ts(&db)
        .args(["list", "--show-secrets"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("1000.{MARK}-a1")));
    ts(&db)
        .args(["show", "3", "--show-secrets"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("1000.{MARK}-g3")));
}

#[test]
fn list_shows_ids_users_token_kinds_and_expiry_in_words() {
    let f = Fixture::new();
    let db = seeded(&f);
    let assert = ts(&db).arg("list").assert().success();
    let out = text(&assert.get_output().stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("EXPIRES"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("1 ") && lines[1].contains("ana@example.com"),
        "{out}"
    );
    assert!(
        lines[1].contains("access refresh -") && lines[1].contains(" days"),
        "{out}"
    );
    assert!(
        lines[2].contains("expired") && lines[2].contains("ago"),
        "{out}"
    );
    assert!(
        lines[3].contains("- - grant") && lines[3].contains("no expiry"),
        "{out}"
    );
    assert_eq!(lines[4], "(3 record(s))");

    let output = ts(&db).args(["--json", "list"]).output().unwrap();
    let list = stdout_json(&output);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["user_name"], "ana@example.com");
    assert_eq!(list[0]["has_refresh_token"], true);
    assert_eq!(list[2]["has_access_token"], false);
    assert!(list[0].get("refresh_token").is_none());
}

#[test]
fn find_applies_the_lookup_rules_and_reads_secrets_from_stdin() {
    let f = Fixture::new();
    let db = seeded(&f);
    let found_id = |args: &[&str], stdin: &str| {
        let output = ts(&db)
            .arg("--json")
            .arg("find")
            .args(args)
            .write_stdin(stdin)
            .output()
            .unwrap();
        match output.status.code() {
            Some(0) => stdout_json(&output)["id"].as_str().map(str::to_owned),
            Some(1) => None,
            code => panic!("{args:?}: exit {code:?}: {}", text(&output.stderr)),
        }
    };
    let r2 = format!("1000.{MARK}-r2\n");
    // Rule 3 needs both client credentials; their values are not compared.
    assert_eq!(
        found_id(
            &[
                "--refresh",
                "-",
                "--client-id",
                "any",
                "--client-secret",
                "-"
            ],
            &format!("{r2}whatever\n")
        ),
        Some("2".into())
    );
    // Rule 1 decides even when it finds nothing.
    assert_eq!(
        found_id(
            &["--user", "nobody", "--access", &format!("1000.{MARK}-a1")],
            ""
        ),
        None
    );
    // Rule 2: an access token without client credentials.
    assert_eq!(
        found_id(&["--access", "-"], &format!("1000.{MARK}-a1\r\n")),
        Some("1".into())
    );
    // Grant first, then refresh.
    assert_eq!(
        found_id(
            &[
                "--grant",
                &format!("1000.{MARK}-g3"),
                "--refresh",
                "-",
                "--client-id",
                "c",
                "--client-secret",
                "s"
            ],
            &r2
        ),
        Some("3".into())
    );
    assert_eq!(
        found_id(
            &[
                "--grant",
                "1000.none",
                "--refresh",
                "-",
                "--client-id",
                "c",
                "--client-secret",
                "s"
            ],
            &r2
        ),
        Some("2".into())
    );
    assert_eq!(found_id(&["--id", "3"], ""), Some("3".into()));
    // The empty user name is absent: no rule, so a usage error.
    ts(&db)
        .args(["find", "--user", ""])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("select no record"));
    // A refresh token alone selects nothing under the SDK's rules.
    ts(&db)
        .args(["find", "--refresh", "1000.x"])
        .assert()
        .code(2);
    // `-` with nothing on stdin.
    ts(&db)
        .args(["find", "--access", "-"])
        .write_stdin("")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("stdin has no line"));
}

#[test]
fn delete_clear_and_their_refusals() {
    let f = Fixture::new();
    let db = seeded(&f);
    ts(&db)
        .args(["delete", "2"])
        .assert()
        .success()
        .stdout("deleted record 2\n");
    ts(&db)
        .args(["delete", "2"])
        .assert()
        .code(1)
        .stderr("tokenstore: no record with id \"2\"\n");
    ts(&db)
        .arg("clear")
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "refusing to delete all 2 records without --yes",
        ));
    assert_eq!(records(&db).len(), 2);
    ts(&db)
        .args(["clear", "--yes"])
        .assert()
        .success()
        .stdout("deleted 2 records\n");
    assert!(records(&db).is_empty());
}

#[test]
fn check_reports_damage_and_exits_one() {
    let f = Fixture::new();
    let db = seeded(&f);
    ts(&db)
        .arg("check")
        .assert()
        .success()
        .stdout("3 records, 8 index entries: no problems\n");
    {
        // Damage one record's bytes behind the store's back.
        let raw = sled::open(&db).unwrap();
        raw.open_tree("records")
            .unwrap()
            .insert("2", &[1u8, 0xFF, 0xFF][..])
            .unwrap();
        raw.flush().unwrap();
    }
    let output = ts(&db).arg("check").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("record \"2\""), "{stdout}");
    assert!(text(&output.stderr).contains("problem(s) found"));
    let report = stdout_json(&ts(&db).args(["--json", "check"]).output().unwrap());
    assert_eq!(report["ok"], false);
    assert!(!report["problems"].as_array().unwrap().is_empty());
    // The damaged record can be removed, and the store is clean again.
    ts(&db).args(["delete", "2"]).assert().success();
    ts(&db).arg("check").assert().success();
}

#[test]
fn stats_counts_token_kinds_and_expiry() {
    let f = Fixture::new();
    let db = seeded(&f);
    let stats = stdout_json(&ts(&db).args(["--json", "stats"]).output().unwrap());
    assert_eq!(stats["records"], 3);
    assert_eq!(stats["with_access_token"], 2);
    assert_eq!(stats["with_refresh_token"], 2);
    assert_eq!(stats["with_grant_token"], 1);
    assert_eq!(stats["access_expired"], 1);
    assert_eq!(stats["access_expiring_within_1h"], 0);
    assert_eq!(stats["without_expiry"], 1);
    assert_eq!(stats["format_version"], 1);
    assert!(stats["disk_bytes"].as_u64().unwrap() > 0);
    ts(&db)
        .arg("stats")
        .assert()
        .success()
        .stdout(predicate::str::contains("access expired              1"));
}

#[test]
fn purge_removes_only_records_idle_past_the_limit() {
    let f = Fixture::new();
    let now = tokenstore::now_ms();
    let day = 86_400_000;
    let csv = f.write(
        "ages.csv",
        crlf(&[
            HEADER,
            &format!("1,old@example.com,c,s,1000.r1,,,{},,", now - 100 * day),
            &format!("2,recent@example.com,c,s,1000.r2,,,{},,", now - 10 * day),
            "3,noexpiry@example.com,c,s,1000.r3,,,,,",
            &format!("4,live@example.com,c,s,1000.r4,,,{},,", now + day),
        ]),
    );
    let db = f.db();
    ts(&db)
        .arg("import")
        .arg(&csv)
        .args(["--from", "zoho-csv"])
        .assert()
        .success();
    ts(&db)
        .args(["purge", "--idle-days", "30", "--dry-run"])
        .assert()
        .success()
        .stdout(predicate::str::contains("would purge 1 record(s)"))
        .stdout(predicate::str::contains("old@example.com"));
    assert_eq!(records(&db).len(), 4);
    let output = ts(&db)
        .args(["--json", "purge", "--idle-days", "30"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let report = stdout_json(&output);
    assert_eq!(report["purged"][0]["id"], "1");
    // No other writer here: nothing was refreshed or deleted meanwhile.
    assert_eq!(report["kept_refreshed_meanwhile"], 0);
    assert_eq!(report["deleted_meanwhile"], 0);
    let users: Vec<_> = records(&db)
        .into_iter()
        .map(|t| t.user_name.unwrap())
        .collect();
    assert_eq!(
        users,
        [
            "recent@example.com",
            "noexpiry@example.com",
            "live@example.com"
        ]
    );
    ts(&db)
        .args(["purge", "--idle-days", "5"])
        .assert()
        .success();
    assert_eq!(records(&db).len(), 2);
}

#[test]
fn usage_missing_store_and_locked_store_exit_two() {
    let f = Fixture::new();
    ts(&f.db())
        .arg("list")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no token store at"));
    assert!(!f.db().exists(), "a read command created a store");
    ts(&f.db()).args(["list", "--bogus"]).assert().code(2);
    ts(&f.db()).args(["purge"]).assert().code(2);

    let db = seeded(&f);
    let held = SledStore::open(&db).unwrap();
    ts(&db)
        .arg("list")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is locked by another process"));
    drop(held);
    // TOKENSTORE_DB names the store when --db is not given.
    cargo_bin_cmd!("tokenstore")
        .env("TOKENSTORE_DB", &db)
        .arg("list")
        .assert()
        .success()
        .stdout(predicate::str::contains("(3 record(s))"));
}

/// 100,000 rows from a FileStore CSV, timed. In release mode:
/// `cargo test --release --test cli -- --ignored hundred_thousand --nocapture`.
#[test]
#[ignore = "slow in debug builds; run in release to time it"]
fn hundred_thousand_row_import() {
    let f = Fixture::new();
    let mut csv = String::with_capacity(100_000 * 200);
    csv.push_str(HEADER);
    csv.push_str("\r\n");
    for n in 1..=100_000u64 {
        csv.push_str(&format!(
            "{n},user{n}@example.com,1000.CLIENTID,secret,1000.{n:0>32}refresh{n:0>30},1000.{n:0>32}access{n:0>31},,{},,https://www.zohoapis.com\r\n",
            1_763_800_000_000u64 + n
        ));
    }
    let file = f.write("big.csv", csv);
    let started = std::time::Instant::now();
    ts(&f.db())
        .arg("import")
        .arg(&file)
        .args(["--from", "zoho-csv"])
        .assert()
        .success()
        .stdout(predicate::str::contains("100000 new records"));
    let elapsed = started.elapsed();
    eprintln!("imported 100,000 rows in {elapsed:.2?}");
    let store = SledStore::open(f.db()).unwrap();
    assert_eq!(store.len(), 100_000);
    assert!(store.check().unwrap().is_ok());
}

/// `keygen` into a new owner-only file.
fn keygen(f: &Fixture, name: &str) -> PathBuf {
    let path = f.path(name);
    cargo_bin_cmd!("tokenstore")
        .args(["keygen", "--output"])
        .arg(&path)
        .assert()
        .success()
        .stdout("");
    path
}

#[test]
fn an_encrypted_store_needs_its_key_from_a_file_or_the_environment() {
    let f = Fixture::new();
    let key = keygen(&f, "store.key");
    let csv = f.write(
        "t.csv",
        crlf(&[
            HEADER,
            &format!("1,ana@example.com,c,{MARK}-cs,1000.{MARK}-r,,,,,"),
        ]),
    );
    ts(&f.db())
        .arg("--key-file")
        .arg(&key)
        .arg("import")
        .arg(&csv)
        .args(["--from", "zoho-csv"])
        .assert()
        .success();
    ts(&f.db())
        .arg("list")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "is encrypted; open it with its key",
        ));
    let other = keygen(&f, "other.key");
    ts(&f.db())
        .arg("--key-file")
        .arg(&other)
        .arg("list")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("wrong key"));
    let base64 = std::fs::read_to_string(&key).unwrap();
    ts(&f.db())
        .env("TOKENSTORE_KEY", base64.trim())
        .args(["--json", "stats"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"encrypted\": true"));
    ts(&f.db())
        .env("TOKENSTORE_KEY", "not-a-key")
        .arg("list")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("TOKENSTORE_KEY: invalid key"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        ts(&f.db())
            .arg("--key-file")
            .arg(&key)
            .arg("list")
            .assert()
            .code(2)
            .stderr(predicate::str::contains("chmod 600"));
    }
    // keygen never overwrites a key.
    cargo_bin_cmd!("tokenstore")
        .args(["keygen", "--output"])
        .arg(&other)
        .assert()
        .code(2);
}

#[test]
fn encrypt_rekey_and_decrypt_keep_every_record() {
    let f = Fixture::new();
    let db = seeded(&f);
    let before = records(&db);
    let first = keygen(&f, "first.key");
    let second = keygen(&f, "second.key");
    ts(&db)
        .args(["encrypt", "--new-key-file"])
        .arg(&first)
        .assert()
        .success()
        .stdout(predicate::str::contains("encrypted 3 records"));
    let with = |key: &Path| {
        let mut command = ts(&db);
        command.arg("--key-file").arg(key);
        command
    };
    with(&first).arg("check").assert().success();
    with(&first)
        .args(["rekey", "--new-key-file"])
        .arg(&second)
        .assert()
        .success()
        .stdout(predicate::str::contains("re-encrypted 3 records"));
    with(&first)
        .arg("list")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("wrong key"));
    ts(&db)
        .args(["rekey", "--new-key-file"])
        .arg(&first)
        .assert()
        .code(2);
    with(&second).args(["decrypt"]).assert().code(1);
    with(&second).args(["decrypt", "--yes"]).assert().success();
    assert_eq!(records(&db), before);
    ts(&db).arg("check").assert().success();
    // A plain store refuses a key rather than guessing.
    with(&second)
        .arg("list")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is not encrypted"));
}

/// Store files, key files and exports are owner-only even under umask 000.
#[cfg(unix)]
#[test]
fn files_are_owner_only_under_umask_000() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    let bin = assert_cmd::cargo::cargo_bin!("tokenstore");
    let csv = f.write(
        "t.csv",
        crlf(&[HEADER, "1,ana@example.com,c,s,1000.r,1000.a,,,,"]),
    );
    let sh = |args: &str| {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("umask 000 && exec \"$0\" {args}"))
            .arg(bin)
            .env_remove("TOKENSTORE_DB")
            .env_remove("TOKENSTORE_KEY")
            .current_dir(f.dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "{args}");
    };
    sh("keygen --output k.key");
    sh(&format!(
        "--db plain import {} --from zoho-csv",
        csv.display()
    ));
    sh(&format!(
        "--db sealed --key-file k.key import {} --from zoho-csv",
        csv.display()
    ));
    sh("--db plain export --include-secrets --output out.json");
    sh("--db plain encrypt --new-key-file k.key");
    for name in ["k.key", "out.json"] {
        let mode = std::fs::metadata(f.path(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
    for store in ["plain", "sealed"] {
        let files = files::assert_owner_only(&f.path(store));
        assert!(files >= 3, "{store}: {files} files");
    }
}

#[test]
fn copy_keeps_every_record_its_id_and_the_id_counter() {
    let f = Fixture::new();
    let source = seeded(&f);
    hand_out_and_delete_id_4(&source);
    let target = f.path("copy");
    let output = ts(&source)
        .args(["copy", "--from"])
        .arg(&source)
        .arg("--to")
        .arg(&target)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let shown = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(shown.contains("copied 3 of 3 records"), "{shown}");
    assert!(!shown.contains(MARK), "a secret was printed: {shown}");
    assert_eq!(records(&target), records(&source));

    let store = SledStore::open(&target).unwrap();
    assert_counter_carried(&store);
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn copy_refuses_a_non_empty_target_unless_told_how_to_merge() {
    let f = Fixture::new();
    let source = seeded(&f);
    let target = f.path("target");
    {
        // The target already has ana, with another refresh token, and a
        // record whose refresh token is bob's.
        let store = SledStore::open(&target).unwrap();
        for mut token in [
            OAuthToken::new()
                .with_user_name("ana@example.com")
                .with_refresh_token("1000.other-ana"),
            OAuthToken::new()
                .with_user_name("mallory@example.com")
                .with_refresh_token(format!("1000.{MARK}-r2")),
        ] {
            store.save_token(&mut token).unwrap();
        }
    }
    let before = records(&target);
    let copy = |extra: &[&str]| {
        ts(&source)
            .args(["copy", "--from"])
            .arg(&source)
            .arg("--to")
            .arg(&target)
            .args(extra)
            .output()
            .unwrap()
    };

    let refused = copy(&[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("already holds 2 record(s)"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(records(&target), before, "a refused copy writes nothing");

    // fail: bob's refresh token is held by mallory's record → nothing at all.
    let failed = copy(&["--on-conflict", "fail"]);
    assert_eq!(failed.status.code(), Some(1));
    let message = text(&failed.stderr);
    assert!(message.contains("nothing was copied"), "{message}");
    assert!(!message.contains(MARK), "{message}");
    assert_eq!(records(&target), before, "all or nothing");

    // skip: bob is left out, ana merges into the target's ana, carol is new.
    let skipped = copy(&["--on-conflict", "skip", "--json"]);
    assert!(skipped.status.success(), "{}", text(&skipped.stderr));
    let report = stdout_json(&skipped);
    assert_eq!(report["skipped"], 1, "{report}");
    assert_eq!(report["merged_into_existing"], 1, "{report}");
    let after = records(&target);
    assert_eq!(after.len(), 3, "{after:?}");
    let ana = after
        .iter()
        .find(|t| t.user_name.as_deref() == Some("ana@example.com"))
        .unwrap();
    assert_eq!(
        ana.refresh_token.as_deref(),
        Some(format!("1000.{MARK}-r1").as_str())
    );
    assert!(after
        .iter()
        .all(|t| t.user_name.as_deref() != Some("bob@example.com")));
}

#[test]
fn copy_to_a_new_key_re_encrypts_and_refuses_the_same_store() {
    let f = Fixture::new();
    let source = seeded(&f);
    let key = keygen(&f, "new.key");
    let target = f.path("sealed");
    ts(&source)
        .args(["copy", "--from"])
        .arg(&source)
        .arg("--to")
        .arg(&target)
        .arg("--to-key-file")
        .arg(&key)
        .assert()
        .success();
    // Without its key the copy does not open; with it, it holds the same.
    ts(&target)
        .arg("list")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("encrypted"));
    let listed = ts(&target)
        .args(["--key-file"])
        .arg(&key)
        .args(["list", "--json"])
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert_eq!(stdout_json(&listed).as_array().unwrap().len(), 3);
    let mut pending = vec![target.clone()];
    let mut scanned = 0;
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            scanned += bytes.len();
            for marker in [MARK, "ana@example.com"] {
                assert!(
                    !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
                    "{marker} in plaintext in {path:?}"
                );
            }
        }
    }
    assert!(scanned > 0, "the copy wrote nothing to scan");

    ts(&source)
        .args(["copy", "--from"])
        .arg(&source)
        .arg("--to")
        .arg(&source)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("same store"));
}
