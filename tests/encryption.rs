//! Encryption at rest: no plaintext token on disk, keys checked at open,
//! tampering and moved records detected, encryption turned on, rotated and
//! off in place.

#[cfg(unix)]
#[path = "support/files.rs"]
mod files;

use std::path::Path;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use tokenstore::{Error, Key, OAuthToken, Options, SledStore, TokenStore};

const USERS: usize = 50;

/// A token whose every text field carries a unique marker.
fn marked(n: usize) -> OAuthToken {
    OAuthToken::new()
        .with_user_name(format!("MARKUSER{n:04}@example.com"))
        .with_client_id(format!("1000.MARKCLIENTID{n:04}"))
        .with_client_secret(format!("MARKCLIENTSECRET{n:04}"))
        .with_refresh_token(format!("1000.MARKREFRESH{n:04}"))
        .with_access_token(format!("1000.MARKACCESS{n:04}"))
        .with_grant_token(format!("1000.MARKGRANT{n:04}"))
        .with_redirect_url(format!("https://MARKREDIRECT{n:04}.example.com/cb"))
        .with_expiry_time(1_763_800_000_000)
}

const FIELDS: [&str; 7] = [
    "MARKUSER",
    "MARKCLIENTID",
    "MARKCLIENTSECRET",
    "MARKREFRESH",
    "MARKACCESS",
    "MARKGRANT",
    "MARKREDIRECT",
];

fn fill(path: &Path, options: Options) {
    let store = SledStore::open_with(path, options).unwrap();
    for n in 0..USERS {
        store.save_token(&mut marked(n)).unwrap();
    }
    // An update and a rotation, so that old versions exist in the log too.
    store
        .save_token(
            &mut OAuthToken::new()
                .with_user_name("MARKUSER0000@example.com")
                .with_access_token("1000.MARKACCESSROTATED"),
        )
        .unwrap();
}

/// Every byte of every file under `dir`.
fn all_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    assert!(files.iter().map(|(_, b)| b.len()).sum::<usize>() > 0);
    files
}

/// The forms a marker could take on disk: as is, hex (either case), and
/// base64 (standard and URL-safe, at each of the three alignments; the
/// characters that depend on neighbouring bytes are left out).
fn encodings(marker: &str) -> Vec<Vec<u8>> {
    let mut forms = vec![
        marker.as_bytes().to_vec(),
        hex(marker.as_bytes()).into_bytes(),
        hex(marker.as_bytes()).to_uppercase().into_bytes(),
    ];
    for pad in 0..3 {
        let shifted = [vec![0u8; pad], marker.as_bytes().to_vec()].concat();
        for encoded in [
            STANDARD.encode(&shifted),
            STANDARD_NO_PAD.encode(&shifted),
            URL_SAFE_NO_PAD.encode(&shifted),
        ] {
            let inner = &encoded[4..encoded.len() - 4];
            forms.push(inner.as_bytes().to_vec());
        }
    }
    forms
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Which markers appear, in any form, in any file.
fn markers_found(dir: &Path) -> Vec<String> {
    let files = all_bytes(dir);
    let mut found = Vec::new();
    for field in FIELDS {
        for n in [0, 7, USERS - 1] {
            let marker = format!("{field}{n:04}");
            for form in encodings(&marker) {
                for (file, bytes) in &files {
                    if contains(bytes, &form) {
                        found.push(format!("{marker} in {file}"));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn an_encrypted_store_writes_no_marker_in_any_form() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    fill(
        &path,
        Options::default().encryption(Key::generate().unwrap()),
    );
    let found = markers_found(&path);
    assert!(found.is_empty(), "plaintext on disk: {found:?}");
}

/// Documents what a plain store holds: every record's fields in plaintext
/// (index trees hold only digests, but records are bincode).
#[test]
fn a_plain_store_holds_its_records_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    fill(&path, Options::default());
    let found = markers_found(&path);
    for field in FIELDS {
        assert!(
            found.iter().any(|f| f.starts_with(field)),
            "{field} not found in a plain store: the scan would miss it when encrypted too"
        );
    }
}

#[test]
fn keys_are_checked_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let encrypted = dir.path().join("encrypted");
    let plain = dir.path().join("plain");
    let key = Key::generate().unwrap();
    fill(&encrypted, Options::default().encryption(key.clone()));
    fill(&plain, Options::default());

    let open = |path: &Path, key: Option<Key>| {
        let options = match key {
            Some(key) => Options::default().encryption(key),
            None => Options::default(),
        };
        SledStore::open_with(path, options)
    };
    let wrong = open(&encrypted, Some(Key::generate().unwrap())).unwrap_err();
    assert!(matches!(wrong, Error::WrongKey { .. }), "{wrong:?}");
    assert!(wrong.to_string().contains("wrong key"));
    let missing = open(&encrypted, None).unwrap_err();
    assert!(matches!(missing, Error::KeyRequired { .. }), "{missing:?}");
    assert!(missing.to_string().contains("is encrypted"));
    let unexpected = open(&plain, Some(key.clone())).unwrap_err();
    assert!(
        matches!(unexpected, Error::NotEncrypted { .. }),
        "{unexpected:?}"
    );
    assert!(unexpected.to_string().contains("not encrypted"));

    let store = open(&encrypted, Some(key)).unwrap();
    assert!(store.is_encrypted());
    assert_eq!(store.format_version(), 2);
    assert_eq!(store.len(), USERS);
    assert_eq!(store.find_token_by_id("8").unwrap(), {
        let mut t = marked(7);
        t.id = Some("8".into());
        Some(t)
    });
    assert!(store.check().unwrap().is_ok());
}

/// Opens the raw sled database (the store must be closed), retrying while a
/// just-dropped handle still holds sled's lock.
fn raw(path: &Path) -> sled::Db {
    for _ in 0..500 {
        if let Ok(db) = sled::open(path) {
            return db;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("cannot open the raw database")
}

#[test]
fn tampered_or_moved_ciphertext_is_corruption_never_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let key = Key::generate().unwrap();
    fill(&path, Options::default().encryption(key.clone()));
    {
        let db = raw(&path);
        let records = db.open_tree("records").unwrap();
        // One flipped byte in the middle of record 3.
        let mut bytes = records.get("3").unwrap().unwrap().to_vec();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        records.insert("3", bytes).unwrap();
        // Record 5's sealed bytes copied over record 6.
        let five = records.get("5").unwrap().unwrap();
        records.insert("6", five).unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open_with(&path, Options::default().encryption(key)).unwrap();
    for id in ["3", "6"] {
        match store.find_token_by_id(id) {
            Err(Error::Corruption {
                id: Some(named),
                detail,
            }) => {
                assert_eq!(named, id);
                assert!(detail.contains("fails authentication"), "{detail}");
            }
            other => panic!("record {id}: expected Corruption, got {other:?}"),
        }
    }
    // Lookups through the indexes never return another record.
    let by_user = store.find_token(&OAuthToken::new().with_user_name("MARKUSER0005@example.com"));
    assert!(
        matches!(by_user, Err(Error::Corruption { .. })),
        "{by_user:?}"
    );
    let five = store
        .find_token(&OAuthToken::new().with_user_name("MARKUSER0004@example.com"))
        .unwrap()
        .unwrap();
    assert_eq!(five.id.as_deref(), Some("5"));
    let report = store.check().unwrap();
    assert!(!report.is_ok());
    let text = report.to_string();
    assert!(text.contains("\"3\"") && text.contains("\"6\""), "{text}");
    assert!(!text.contains("MARK"), "{text}");
    // Damage can be removed through the API.
    assert!(store.delete_token("3").unwrap());
    assert!(store.delete_token("6").unwrap());
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn encryption_is_turned_on_rotated_and_off_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    fill(&path, Options::default());
    let expected = {
        let store = SledStore::open(&path).unwrap();
        let mut all = store.get_tokens().unwrap();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    };
    let contents = |store: &SledStore| {
        assert!(store.check().unwrap().is_ok());
        let mut all = store.get_tokens().unwrap();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    };
    let first = Key::generate().unwrap();
    let second = Key::generate().unwrap();
    {
        let mut store = SledStore::open(&path).unwrap();
        let mut calls = 0;
        store
            .set_encryption_with_progress(Some(first.clone()), |done, total| {
                calls += 1;
                assert_eq!((done, total), (calls, USERS));
            })
            .unwrap();
        assert_eq!(calls, USERS);
        assert_eq!(contents(&store), expected);
        // The indexes work under the new key right away.
        let found = store
            .find_token(&OAuthToken::new().with_access_token("1000.MARKACCESS0009"))
            .unwrap();
        assert_eq!(found.and_then(|t| t.id).as_deref(), Some("10"));
    }
    // The old generation, plaintext pages and all, is gone.
    let found = markers_found(&path);
    assert!(
        found.is_empty(),
        "plaintext left after encrypting: {found:?}"
    );
    {
        let mut store =
            SledStore::open_with(&path, Options::default().encryption(first.clone())).unwrap();
        assert_eq!(contents(&store), expected);
        store.set_encryption(Some(second.clone())).unwrap();
    }
    assert!(matches!(
        SledStore::open_with(&path, Options::default().encryption(first)),
        Err(Error::WrongKey { .. })
    ));
    {
        let mut store = SledStore::open_with(&path, Options::default().encryption(second)).unwrap();
        assert_eq!(contents(&store), expected);
        store.set_encryption(None).unwrap();
        assert!(!store.is_encrypted());
    }
    let store = SledStore::open(&path).unwrap();
    assert_eq!(contents(&store), expected);
    let mut new = OAuthToken::new()
        .with_user_name("after")
        .with_refresh_token("1000.after");
    store.save_token(&mut new).unwrap();
    assert_eq!(new.id.as_deref(), Some(&*(USERS + 1).to_string()));
}

#[cfg(unix)]
#[test]
fn every_file_is_owner_only_in_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    for (name, options) in [
        ("plain", Options::default()),
        (
            "encrypted",
            Options::default().encryption(Key::generate().unwrap()),
        ),
    ] {
        let path = dir.path().join(name);
        fill(&path, options);
        assert!(files::assert_owner_only(&path) >= 3, "{name}");
    }
}
