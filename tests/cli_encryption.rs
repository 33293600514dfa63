//! Encrypted stores from the command line: `keygen`, keys from a file or
//! the environment, `encrypt`, `rekey`, `decrypt`, and owner-only files
//! whatever the umask.

#[path = "support/cli_fixture.rs"]
mod cli_fixture;
#[path = "support/cli_seed.rs"]
mod cli_seed;
#[cfg(unix)]
#[path = "support/files.rs"]
mod files;

use std::path::Path;

use assert_cmd::cargo::cargo_bin_cmd;
use cli_fixture::{crlf, keygen, raw_insert, records, seeded, ts, Fixture};
use cli_seed::{HEADER, MARK};
use predicates::prelude::*;

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
fn a_key_past_its_seal_budget_points_to_rekey_and_a_missing_key_to_key_file() {
    let f = Fixture::new();
    let db = seeded(&f);
    let first = keygen(&f, "first.key");
    let second = keygen(&f, "second.key");
    ts(&db)
        .args(["encrypt", "--new-key-file"])
        .arg(&first)
        .assert()
        .success();
    ts(&db)
        .arg("list")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "\nhint: give the store's key: --key-file FILE or TOKENSTORE_KEY\n",
        ));
    // The key has sealed all it safely can (2^32 records).
    raw_insert(&db, "meta", b"sealed_records", &(1u64 << 32).to_be_bytes());
    let csv = f.write(
        "more.csv",
        crlf(&[HEADER, "9,dan@example.com,c,s,1000.r9,,,,,"]),
    );
    let import = |key: &Path| {
        let mut command = ts(&db);
        command
            .arg("--key-file")
            .arg(key)
            .arg("import")
            .arg(&csv)
            .args(["--from", "zoho-csv"]);
        command
    };
    import(&first)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("has sealed 2^32 records"))
        .stderr(predicate::str::contains(
            "\nhint: give the store a new key: `tokenstore keygen --output new.key`, then \
             `tokenstore --key-file CURRENT.key rekey --new-key-file new.key`\n",
        ));
    // Following the hint makes writes possible again.
    ts(&db)
        .arg("--key-file")
        .arg(&first)
        .args(["rekey", "--new-key-file"])
        .arg(&second)
        .assert()
        .success();
    import(&second).assert().success();
    ts(&db)
        .arg("--key-file")
        .arg(&second)
        .arg("list")
        .assert()
        .success()
        .stdout(predicate::str::contains("dan@example.com"));
}

#[test]
fn a_key_file_that_cannot_be_read_is_bad_input() {
    let f = Fixture::new();
    let db = seeded(&f);
    ts(&db)
        .arg("--key-file")
        .arg(f.path("absent.key"))
        .arg("list")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot read the key file"));
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
