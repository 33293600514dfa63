//! What only the on-disk engine promises (docs/SPEC.md §4): persistence across
//! reopen, the directory lock, the format version, and damaged data reported
//! as `Error::Corruption` and by `check()`, never as a panic or a wrong token.
//!
//! Damage is made by opening the database directly with sled, using the tree
//! names ARCHITECTURE.md documents.

use std::path::{Path, PathBuf};

mod support {
    pub mod tokens;
}

use support::tokens::zoho;
use tokenstore::{
    Durability, Error, IndexedField, OAuthToken, Options, Problem, SledStore, TokenStore,
};

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("tokens")
}

fn saved(store: &SledStore, mut token: OAuthToken) -> OAuthToken {
    store.save_token(&mut token).expect("save");
    token
}

/// Opens the database underneath the store, for damage. sled releases its
/// file lock when the background tasks of a dropped handle end, so the open
/// is retried for a while.
fn with_raw_db(path: &Path, damage: impl FnOnce(&sled::Db)) {
    let started = std::time::Instant::now();
    let db = loop {
        match sled::open(path) {
            Ok(db) => break db,
            Err(_) if started.elapsed() < std::time::Duration::from_secs(10) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("raw open: {e:?}"),
        }
    };
    damage(&db);
    db.flush().expect("raw flush");
}

fn sorted(mut tokens: Vec<OAuthToken>) -> Vec<OAuthToken> {
    tokens.sort_by(|a, b| a.id.cmp(&b.id));
    tokens
}

#[test]
fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let store = SledStore::open(db_path(&dir)).unwrap();
        let ana = saved(&store, zoho("ana@example.com", "a"));
        let bob = saved(&store, zoho("bob@example.com", "b"));
        let carol = saved(&store, zoho("carol@example.com", "c"));
        // rotate ana's refresh token, delete bob
        let mut rotated = OAuthToken::new()
            .with_id(ana.id.clone().unwrap())
            .with_refresh_token("1000.refresh-a2");
        store.save_token(&mut rotated).unwrap();
        assert!(store.delete_token(bob.id.as_deref().unwrap()).unwrap());
        vec![rotated, carol]
    };
    let store = SledStore::open(db_path(&dir)).unwrap();
    assert_eq!(
        sorted(store.get_tokens().unwrap()),
        sorted(expected.clone())
    );
    let query = OAuthToken::new()
        .with_client_id("c")
        .with_client_secret("s")
        .with_refresh_token("1000.refresh-a2");
    assert_eq!(store.find_token(&query).unwrap(), Some(expected[0].clone()));
    let old = query.clone().with_refresh_token("1000.refresh-a");
    assert_eq!(store.find_token(&old).unwrap(), None);
    let bob = OAuthToken::new().with_user_name("bob@example.com");
    assert_eq!(store.find_token(&bob).unwrap(), None);
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.records, 2);
}

#[test]
fn a_clean_close_of_a_buffered_store_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().durability(Durability::Buffered {
        flush_every: std::time::Duration::from_secs(3600),
    });
    let expected = {
        let store = SledStore::open_with(db_path(&dir), options).unwrap();
        (0..50)
            .map(|n| saved(&store, zoho(&format!("u{n}@example.com"), &n.to_string())))
            .collect::<Vec<_>>()
    };
    let store = SledStore::open(db_path(&dir)).unwrap();
    assert_eq!(sorted(store.get_tokens().unwrap()), sorted(expected));
}

#[test]
fn generated_ids_never_repeat_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(db_path(&dir)).unwrap();
        for n in 1..=12 {
            let token = saved(&store, zoho(&format!("u{n}"), &n.to_string()));
            assert_eq!(token.id, Some(n.to_string()));
        }
        assert!(store.delete_token("12").unwrap());
        assert!(store.delete_token("11").unwrap());
    }
    {
        let store = SledStore::open(db_path(&dir)).unwrap();
        assert_eq!(saved(&store, zoho("u13", "13")).id.as_deref(), Some("13"));
        assert_eq!(store.delete_tokens().unwrap(), 11);
    }
    let store = SledStore::open(db_path(&dir)).unwrap();
    assert_eq!(saved(&store, zoho("u14", "14")).id.as_deref(), Some("14"));
}

#[test]
fn a_second_open_is_locked_and_the_first_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let first = SledStore::open(db_path(&dir)).unwrap();
    let started = std::time::Instant::now();
    let err = SledStore::open(db_path(&dir)).unwrap_err();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "no hang"
    );
    assert!(matches!(err, Error::Locked { .. }), "{err:?}");
    assert!(
        err.to_string().contains("locked by another process"),
        "{err}"
    );
    // docs/SPEC.md §4: the message names the shared backend as the answer.
    assert!(err.to_string().contains("postgres://"), "{err}");
    saved(&first, zoho("ana@example.com", "a"));
    drop(first);
    let again = SledStore::open(db_path(&dir)).unwrap();
    assert_eq!(again.len(), 1);
}

#[test]
fn reopening_right_after_a_close_is_never_locked() {
    let dir = tempfile::tempdir().unwrap();
    for n in 0..30 {
        let store = SledStore::open(db_path(&dir)).unwrap_or_else(|e| panic!("open {n}: {e}"));
        saved(&store, zoho(&format!("u{n}"), &n.to_string()));
        assert_eq!(store.len(), n + 1);
    }
}

#[test]
fn an_unknown_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SledStore::open(db_path(&dir)).unwrap());
    with_raw_db(&db_path(&dir), |db| {
        let meta = db.open_tree("meta").unwrap();
        meta.insert("format_version", &99u32.to_be_bytes()).unwrap();
    });
    let err = SledStore::open(db_path(&dir)).unwrap_err();
    match &err {
        Error::UnsupportedVersion { found, supported } => {
            assert_eq!(
                (*found, *supported),
                (99, 2),
                "this build reads versions 1 and 2"
            );
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    assert!(err.to_string().contains("version 99"), "{err}");
}

#[test]
fn records_without_a_format_version_are_not_adopted() {
    let dir = tempfile::tempdir().unwrap();
    with_raw_db(&db_path(&dir), |db| {
        db.open_tree("records").unwrap().insert("1", "x").unwrap();
    });
    let err = SledStore::open(db_path(&dir)).unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }), "{err:?}");
}

#[test]
fn a_path_that_is_a_file_is_a_clear_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"hello").unwrap();
    let err = SledStore::open(&file).unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err:?}");
    assert!(err.to_string().contains("not a directory"), "{err}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"hello",
        "the file is untouched"
    );
}

/// Saves ana (id 1) and bob (id 2), then replaces ana's record bytes.
fn store_with_damaged_record(
    damage: impl FnOnce(&[u8]) -> Vec<u8>,
) -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(db_path(&dir)).unwrap();
        saved(&store, zoho("ana@example.com", "SECRET-A"));
        saved(&store, zoho("bob@example.com", "b"));
    }
    with_raw_db(&db_path(&dir), |db| {
        let records = db.open_tree("records").unwrap();
        let bytes = records.get("1").unwrap().unwrap();
        records.insert("1", damage(&bytes)).unwrap();
    });
    let store = SledStore::open(db_path(&dir)).unwrap();
    (dir, store)
}

fn assert_corruption_of_record_1(result: tokenstore::Result<impl std::fmt::Debug>) {
    match result {
        Err(Error::Corruption { id, detail }) => {
            assert_eq!(id.as_deref(), Some("1"));
            assert!(!detail.contains("SECRET"), "{detail}");
        }
        other => panic!("expected Corruption of record 1, got {other:?}"),
    }
}

/// Turns a record's bytes into damaged ones.
type Damage = fn(&[u8]) -> Vec<u8>;

#[test]
fn damaged_record_bytes_are_corruption_never_a_wrong_token() {
    let damages: [(&str, Damage); 5] = [
        ("garbage", |_| {
            b"\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec()
        }),
        ("truncated", |b| b[..b.len() / 2].to_vec()),
        ("empty", |_| Vec::new()),
        ("unknown version byte", |b| {
            let mut b = b.to_vec();
            b[0] = 200;
            b
        }),
        ("trailing byte", |b| {
            let mut b = b.to_vec();
            b.push(0);
            b
        }),
    ];
    for (what, damage) in damages {
        let (_dir, store) = store_with_damaged_record(damage);
        assert_corruption_of_record_1(store.find_token_by_id("1"));
        let by_user = OAuthToken::new().with_user_name("ana@example.com");
        assert_corruption_of_record_1(store.find_token(&by_user));
        assert_corruption_of_record_1(store.get_tokens());
        // a save that would touch the record refuses rather than guessing
        let mut update = OAuthToken::new().with_id("1").with_access_token("new");
        assert_corruption_of_record_1(store.save_token(&mut update));
        // the other record is intact
        let bob = OAuthToken::new().with_user_name("bob@example.com");
        assert_eq!(
            store.find_token(&bob).unwrap().unwrap().id.as_deref(),
            Some("2"),
            "{what}"
        );

        let report = store.check().unwrap();
        assert!(!report.is_ok(), "{what}");
        assert!(
            report
                .problems
                .iter()
                .any(|p| matches!(p, Problem::UndecodableRecord { id, .. } if id == "1")),
            "{what}: {report}"
        );
        assert!(
            report
                .to_string()
                .contains("record \"1\" cannot be decoded"),
            "{report}"
        );
        assert!(!report.to_string().contains("SECRET"), "{report}");
    }
}

#[test]
fn a_damaged_record_can_be_deleted_and_frees_its_values() {
    let (_dir, store) = store_with_damaged_record(|b| b[..b.len() / 2].to_vec());
    assert!(store.delete_token("1").unwrap());
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{report}");
    // ana's old values are free again
    saved(&store, zoho("ana@example.com", "SECRET-A"));
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn a_record_copied_under_another_id_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(db_path(&dir)).unwrap();
        saved(&store, zoho("ana@example.com", "a"));
    }
    with_raw_db(&db_path(&dir), |db| {
        let records = db.open_tree("records").unwrap();
        let bytes = records.get("1").unwrap().unwrap();
        records.insert("7", bytes).unwrap();
    });
    let store = SledStore::open(db_path(&dir)).unwrap();
    match store.find_token_by_id("7") {
        Err(Error::Corruption { id, .. }) => assert_eq!(id.as_deref(), Some("7")),
        other => panic!("expected corruption, got {other:?}"),
    }
    assert!(!store.check().unwrap().is_ok());
}

#[test]
fn index_damage_is_reported_and_never_returns_a_wrong_token() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(db_path(&dir)).unwrap();
        saved(&store, zoho("ana@example.com", "a"));
        saved(&store, zoho("bob@example.com", "b"));
    }
    with_raw_db(&db_path(&dir), |db| {
        let users = db.open_tree("index_user_name").unwrap();
        let access = db.open_tree("index_access_token").unwrap();
        let refresh = db.open_tree("index_refresh_token").unwrap();
        let entries: Vec<_> = users.iter().map(Result::unwrap).collect();
        let (ana_key, bob_key) = {
            // which entry names which record
            let names = |v: &sled::IVec| String::from_utf8_lossy(v).contains('1');
            if names(&entries[0].1) {
                (entries[0].0.clone(), entries[1].0.clone())
            } else {
                (entries[1].0.clone(), entries[0].0.clone())
            }
        };
        // ana's user entry now names bob's record: a wrong entry
        let bob_value = users.get(&bob_key).unwrap().unwrap();
        users.insert(ana_key, bob_value).unwrap();
        // an access token entry disappears: a missing entry
        let first_access = access.iter().next().unwrap().unwrap().0;
        access.remove(first_access).unwrap();
        // a refresh entry names a record that does not exist: dangling
        let first_refresh = refresh.iter().next().unwrap().unwrap();
        let dangling = first_refresh
            .1
            .to_vec()
            .iter()
            .map(|&b| if b == b'1' || b == b'2' { b'9' } else { b })
            .collect::<Vec<_>>();
        refresh.insert(b"0123456789abcdef", dangling).unwrap();
    });
    // Without the background warm-up, whose hints could answer the lookup
    // below from the record itself before the damaged index is read.
    let options = tokenstore::SledOptions::default().warm_on_open(false);
    let store = SledStore::open_with(db_path(&dir), options).unwrap();
    // the damaged user entry never yields bob's record for ana's name
    let ana = OAuthToken::new().with_user_name("ana@example.com");
    assert_eq!(store.find_token(&ana).unwrap(), None);
    let report = store.check().unwrap();
    let has = |wanted: fn(&Problem) -> bool| report.problems.iter().any(wanted);
    assert!(
        has(|p| matches!(
            p,
            Problem::WrongIndexEntry {
                field: IndexedField::UserName,
                ..
            }
        )),
        "{report}"
    );
    assert!(
        has(|p| matches!(
            p,
            Problem::MissingIndexEntry {
                field: IndexedField::UserName,
                ..
            }
        )),
        "{report}"
    );
    assert!(
        has(|p| matches!(
            p,
            Problem::MissingIndexEntry {
                field: IndexedField::AccessToken,
                ..
            }
        )),
        "{report}"
    );
    assert!(
        has(
            |p| matches!(p, Problem::DanglingIndexEntry { field: IndexedField::RefreshToken, id } if id == "9")
        ),
        "{report}"
    );
}

#[test]
fn a_duplicated_unique_value_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(db_path(&dir)).unwrap();
        saved(&store, zoho("ana@example.com", "a"));
    }
    // copy ana's record under id 2, rewriting the id inside it, as a buggy
    // writer might
    with_raw_db(&db_path(&dir), |db| {
        let records = db.open_tree("records").unwrap();
        let mut bytes = records.get("1").unwrap().unwrap().to_vec();
        // layout: version byte, Some tag, varint length 1, b'1'
        assert_eq!(&bytes[..4], &[1, 1, 1, b'1']);
        bytes[3] = b'2';
        records.insert("2", bytes).unwrap();
    });
    let store = SledStore::open(db_path(&dir)).unwrap();
    let report = store.check().unwrap();
    let duplicated: Vec<_> = report
        .problems
        .iter()
        .filter_map(|p| match p {
            Problem::DuplicateValue { field, ids } => Some((*field, ids.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(duplicated.len(), 4, "{report}");
    assert!(duplicated.iter().all(|(_, ids)| ids == &["1", "2"]));
}

#[test]
fn wait_for_lock_opens_once_the_other_handle_closes() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    let first = SledStore::open(&path).unwrap();
    // Without waiting: fails at once.
    let started = Instant::now();
    assert!(matches!(
        SledStore::open(&path),
        Err(tokenstore::Error::Locked { .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(2));

    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(first);
    });
    let waiting = tokenstore::Options::default().wait_for_lock(Duration::from_secs(20));
    let second = SledStore::open_with(&path, waiting).expect("opens once the first closes");
    closer.join().unwrap();
    assert!(second.is_empty());
}
