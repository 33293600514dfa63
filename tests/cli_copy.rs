//! `tokenstore copy` between embedded stores: every record, its id and the
//! id counter kept; a non-empty target merged only when told how; a copy
//! to a new key re-encrypted.

#[path = "support/cli_fixture.rs"]
mod cli_fixture;
#[path = "support/cli_seed.rs"]
mod cli_seed;

use cli_fixture::{keygen, records, seeded, stdout_json, text, ts, Fixture};
use cli_seed::{assert_counter_carried, hand_out_and_delete_id_4, MARK};
use predicates::prelude::*;
use tokenstore::{OAuthToken, SledStore, TokenStore};

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
