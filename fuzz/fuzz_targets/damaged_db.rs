//! A small valid database, damaged by the fuzzer (bytes of its files
//! overwritten or cut, or tree values replaced through sled), then opened and
//! queried. Errors are fine; a panic, or an answer holding another value than
//! the one asked for, is a bug.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tokenstore::{IndexedField, OAuthToken, SledStore, TokenStore};

const USERS: usize = 6;

fn user(n: usize) -> OAuthToken {
    OAuthToken::new()
        .with_user_name(format!("user{n}@example.com"))
        .with_client_id("1000.CLIENT")
        .with_client_secret("secret")
        .with_refresh_token(format!("1000.refresh-{n}"))
        .with_access_token(format!("1000.access-{n}"))
        .with_grant_token(format!("1000.grant-{n}"))
        .with_expiry_time(1_700_000_000_000 + n as i64)
}

/// The undamaged database, made once per process.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &TEMPLATE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("db");
            let store = SledStore::open(&path).unwrap();
            for n in 0..USERS {
                store.save_token(&mut user(n)).unwrap();
            }
            store.delete_token("3").unwrap();
            drop(store);
            (dir, path)
        })
        .1
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else if !path.ends_with("tokenstore.lock") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Damage {
    /// Overwrite bytes of one of sled's files.
    Overwrite { file: u8, offset: u32, bytes: Vec<u8> },
    /// Cut one of sled's files short.
    Truncate { file: u8, len: u32 },
    /// Replace the value of an existing key of a tree.
    Value { tree: u8, key: u8, value: Vec<u8> },
    /// Insert a new key into a tree.
    Insert { tree: u8, key: Vec<u8>, value: Vec<u8> },
    /// Remove a key of a tree.
    Remove { tree: u8, key: u8 },
}

const TREES: [&str; 6] = [
    "records",
    "index_user_name",
    "index_access_token",
    "index_refresh_token",
    "index_grant_token",
    "meta",
];

fn damage(path: &Path, damages: &[Damage]) -> Option<()> {
    let tree_damage = damages.iter().any(|d| {
        matches!(d, Damage::Value { .. } | Damage::Insert { .. } | Damage::Remove { .. })
    });
    if tree_damage {
        let db = sled::open(path).ok()?;
        for d in damages {
            let nth_key = |tree: &sled::Tree, key: u8| {
                let len = tree.len();
                (len > 0)
                    .then(|| tree.iter().keys().nth(usize::from(key) % len))
                    .flatten()
                    .and_then(Result::ok)
            };
            match d {
                Damage::Value { tree, key, value } => {
                    let tree = db.open_tree(TREES[usize::from(*tree) % 6]).ok()?;
                    if let Some(k) = nth_key(&tree, *key) {
                        tree.insert(k, value.as_slice()).ok()?;
                    }
                }
                Damage::Insert { tree, key, value } => {
                    let tree = db.open_tree(TREES[usize::from(*tree) % 6]).ok()?;
                    tree.insert(key.as_slice(), value.as_slice()).ok()?;
                }
                Damage::Remove { tree, key } => {
                    let tree = db.open_tree(TREES[usize::from(*tree) % 6]).ok()?;
                    if let Some(k) = nth_key(&tree, *key) {
                        tree.remove(k).ok()?;
                    }
                }
                _ => {}
            }
        }
        db.flush().ok()?;
    }
    let files = files_under(path);
    for d in damages {
        match d {
            Damage::Overwrite { file, offset, bytes } => {
                use std::io::{Seek, SeekFrom, Write};
                let file = &files[usize::from(*file) % files.len()];
                let len = std::fs::metadata(file).ok()?.len();
                let mut f = std::fs::OpenOptions::new().write(true).open(file).ok()?;
                f.seek(SeekFrom::Start(u64::from(*offset) % len.max(1))).ok()?;
                f.write_all(bytes).ok()?;
            }
            Damage::Truncate { file, len } => {
                let file = &files[usize::from(*file) % files.len()];
                let size = std::fs::metadata(file).ok()?.len();
                let f = std::fs::OpenOptions::new().write(true).open(file).ok()?;
                f.set_len(u64::from(*len) % size.max(1)).ok()?;
            }
            _ => {}
        }
    }
    Some(())
}

/// Every answer must hold what was asked for, or be an error or nothing.
fn query_everything(store: &SledStore) {
    let _ = store.get_tokens();
    let _ = store.check();
    for n in 0..USERS + 2 {
        let id = (n + 1).to_string();
        if let Ok(Some(found)) = store.find_token_by_id(&id) {
            assert_eq!(found.id.as_deref(), Some(id.as_str()));
        }
        let wanted = user(n);
        let queries = [
            (IndexedField::UserName, OAuthToken::new().with_user_name(wanted.user_name.clone().unwrap())),
            (IndexedField::AccessToken, OAuthToken::new().with_access_token(wanted.access_token.clone().unwrap())),
            (
                IndexedField::RefreshToken,
                OAuthToken::new()
                    .with_client_id("c")
                    .with_client_secret("s")
                    .with_refresh_token(wanted.refresh_token.clone().unwrap()),
            ),
            (
                IndexedField::GrantToken,
                OAuthToken::new()
                    .with_client_id("c")
                    .with_client_secret("s")
                    .with_grant_token(wanted.grant_token.clone().unwrap()),
            ),
        ];
        for (field, query) in queries {
            if let Ok(Some(found)) = store.find_token(&query) {
                assert_eq!(found.indexed(field), query.indexed(field), "a wrong token for {field}");
            }
        }
    }
    // Writes on a damaged store may fail, but must not panic.
    let _ = store.save_token(&mut user(USERS + 1));
    let _ = store.delete_token("2");
}

fuzz_target!(|damages: Vec<Damage>| {
    if damages.is_empty() || damages.len() > 8 {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    copy_dir(template(), &path);
    if damage(&path, &damages).is_none() {
        return;
    }
    if let Ok(store) = SledStore::open(&path) {
        query_everything(&store);
    }
});
