//! `tokenstore export`: JSON and FileStore CSV that import back into the
//! same records, written owner-only, secrets left out unless asked.

#[path = "support/cli_fixture.rs"]
mod cli_fixture;
#[path = "support/cli_seed.rs"]
mod cli_seed;

use cli_fixture::{damaged_sample, records, seeded, text, ts, Fixture};
use cli_seed::{HEADER, MARK};
use predicates::prelude::*;
use serde_json::Value;

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
