//! The commands that look inside a store, repair it and clean it up
//! (`list`, `show`, `find`, `stats`, `check`, `delete`, `clear`, `purge`),
//! driven as a real binary: what they print (never a secret unless asked),
//! their exit codes, and usage errors.

#[path = "support/cli_fixture.rs"]
mod cli_fixture;
#[path = "support/cli_seed.rs"]
mod cli_seed;

use assert_cmd::cargo::cargo_bin_cmd;
use cli_fixture::{
    crlf, damage_record, keygen, raw_insert, records, seeded, stdout_json, text, ts, Fixture,
};
use cli_seed::{HEADER, MARK};
use predicates::prelude::*;
use tokenstore::SledStore;

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
fn a_damaged_record_an_unknown_format_or_a_failing_disk_exits_three() {
    let f = Fixture::new();
    let db = seeded(&f);
    damage_record(&db, "2");
    ts(&db)
        .args(["show", "2"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("corruption in record \"2\""));
    ts(&db).args(["show", "1"]).assert().success();
    // A store written by a later format version.
    raw_insert(&db, "meta", b"format_version", &99u32.to_be_bytes());
    ts(&db)
        .arg("list")
        .assert()
        .code(3)
        .stderr(predicate::str::contains(
            "unsupported on-disk format version 99",
        ));

    // The storage engine's data file cannot be read: an I/O error.
    let f = Fixture::new();
    let db = seeded(&f);
    std::fs::remove_file(db.join("db")).unwrap();
    std::fs::create_dir(db.join("db")).unwrap();
    ts(&db)
        .arg("list")
        .assert()
        .code(3)
        .stderr(predicate::str::contains("I/O error"));
}

#[test]
fn library_errors_end_with_the_command_that_helps() {
    let f = Fixture::new();
    let db = seeded(&f);
    let held = SledStore::open(&db).unwrap();
    ts(&db)
        .args(["--lock-timeout", "0", "list"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "\nhint: wait longer for the other process with --lock-timeout SECS (this run waited 0 s)\n",
        ));
    drop(held);
    damage_record(&db, "2");
    let output = ts(&db).args(["show", "2"]).output().unwrap();
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("tokenstore: corruption in record \"2\""),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("\nhint: run `tokenstore check` to list every problem\n"),
        "{stderr}"
    );
    // The command's own refusals need no hint.
    ts(&db)
        .args(["show", "404"])
        .assert()
        .code(1)
        .stderr("tokenstore: no record with id \"404\"\n");
}

#[test]
fn a_directory_without_a_store_is_not_opened_as_an_empty_one() {
    let f = Fixture::new();
    let dir = f.path("empty");
    std::fs::create_dir(&dir).unwrap();
    let key = keygen(&f, "new.key");
    let key = key.to_str().unwrap();
    let expected = format!(
        "tokenstore: no token store at {}; pass --db DIR|URL or set TOKENSTORE_DB \
         (`tokenstore import` or `tokenstore login` creates one)\n",
        dir.display()
    );
    let runs: &[&[&str]] = &[
        &["list"],
        &["stats"],
        &["check"],
        &["export"],
        &["delete", "1"],
        &["encrypt", "--new-key-file", key],
    ];
    for args in runs {
        ts(&dir)
            .args(*args)
            .assert()
            .code(2)
            .stderr(expected.clone());
    }
    let target = f.path("target");
    ts(&dir)
        .args(["copy", "--from"])
        .arg(&dir)
        .arg("--to")
        .arg(&target)
        .assert()
        .code(2)
        .stderr(expected);
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "a command wrote into the directory"
    );
    assert!(!target.exists(), "copy created its target from no source");
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

#[test]
fn a_store_string_with_an_unknown_scheme_is_refused_and_creates_nothing() {
    let f = Fixture::new();
    let work = f.path("work");
    std::fs::create_dir(&work).unwrap();
    let csv = f.path("tokens.csv");
    std::fs::write(&csv, format!("{HEADER}\n")).unwrap();
    for spec in [
        "sqlite:///tokens.db",
        "postgress://app:hunter2@db.internal/app",
        "redis://:hunter2@127.0.0.1:6379/0",
    ] {
        let scheme = spec.split("://").next().unwrap();
        for args in [&["list"][..], &["stats"], &["import", "--from", "zoho-csv"]] {
            let mut command = cargo_bin_cmd!("tokenstore");
            command.env_remove("TOKENSTORE_DB").current_dir(&work);
            command.arg("--db").arg(spec).args(args);
            if args[0] == "import" {
                command.arg(&csv);
            }
            let output = command.output().unwrap();
            let stderr = text(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{spec} {args:?}: {stderr}");
            assert!(
                stderr.contains(&format!("tokenstore knows no `{scheme}://` stores")),
                "{spec} {args:?}: {stderr}"
            );
            assert!(
                stderr.contains("a directory path, memory:, postgres://"),
                "{stderr}"
            );
            assert!(
                !stderr.contains("hunter2"),
                "{spec}: the password was shown: {stderr}"
            );
        }
    }
    assert_eq!(
        std::fs::read_dir(&work).unwrap().count(),
        0,
        "a store string with a scheme was taken for a directory"
    );
}
