//! The engine's own tests: the warm-up, the index filter, the record
//! cache's collisions, the entries the server encodes, key changes,
//! snapshots, the seal budget, planning from the trees.

use super::*;
use crate::store::TokenStore;

thread_local! {
    /// A barrier the next warm-up started from this thread meets twice
    /// between its walk of the index trees and completing the filter.
    pub(super) static WALKED: std::cell::RefCell<Option<Arc<std::sync::Barrier>>> =
        const { std::cell::RefCell::new(None) };
}

fn user(n: u32) -> OAuthToken {
    OAuthToken::new()
        .with_user_name(format!("user{n}"))
        .with_refresh_token(format!("1000.r{n}"))
}

#[test]
fn opening_warms_the_record_cache_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    {
        let store =
            SledStore::open_with(&path, SledOptions::default().warm_on_open(false)).unwrap();
        assert!(store.warming.thread.lock().is_none());
        for n in 0..50 {
            store.save_token(&mut user(n)).unwrap();
        }
    }
    let store = SledStore::open(&path).unwrap();
    let thread = store
        .warming
        .thread
        .lock()
        .take()
        .expect("a warm-up thread");
    assert_eq!(thread.join().unwrap().unwrap(), 50);
    let cache = store.cache.as_ref().unwrap();
    for id in 1..=50 {
        assert!(cache.record(&id.to_string()).is_some(), "record {id}");
    }
    // Encrypted stores keep decrypted records to what lookups bring in.
    drop(store);
    let key = Key::from_bytes([3; 32]);
    let mut store = SledStore::open(&path).unwrap();
    store.set_encryption(Some(key.clone())).unwrap();
    drop(store);
    let store = SledStore::open_with(&path, SledOptions::default().encryption(key)).unwrap();
    assert!(store.warming.thread.lock().is_none());
    assert_eq!(store.cache.as_ref().unwrap().weight(), 0);
}

fn lookups(n: u32) -> [OAuthToken; 2] {
    [
        OAuthToken::new().with_user_name(format!("user{n}")),
        OAuthToken::new()
            .with_client_id("c")
            .with_client_secret("s")
            .with_refresh_token(format!("1000.r{n}")),
    ]
}

/// Lookups that miss the record cache's hints go through the index
/// filter: once the warm-up completed it, every key on disk (written
/// before the open, during the warm-up, after it) is found, and absent
/// values are ruled out without sled.
#[test]
fn the_index_filter_never_rules_out_a_stored_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let before = 3_000;
    {
        let store =
            SledStore::open_with(&path, SledOptions::default().warm_on_open(false)).unwrap();
        store
            .batch(|b| (0..before).try_for_each(|n| b.save_token(&mut user(n))))
            .unwrap();
    }
    // A record cache too small for the hints to answer most lookups.
    let options = SledOptions::default()
        .record_cache(16 << 10)
        .warm_on_open(true);
    let store = Arc::new(SledStore::open_with(&path, options).unwrap());
    // Saves racing the warm-up's walk of the index trees.
    let writer = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            for n in before..before + 300 {
                store.save_token(&mut user(n)).unwrap();
            }
        })
    };
    writer.join().unwrap();
    store.warm_cache().unwrap();
    let filter = store.filter.get().expect("a filter");
    assert!(filter.is_complete(), "the walk completed");
    for n in before + 300..before + 400 {
        store.save_token(&mut user(n)).unwrap();
    }
    for n in 0..before + 400 {
        for query in lookups(n) {
            let found = store.find_token(&query).unwrap();
            assert_eq!(found.and_then(|t| t.user_name), Some(format!("user{n}")));
        }
    }
    let ruled_out = (0..1_000)
        .filter(|n| {
            !filter.may_hold(
                IndexedField::UserName,
                &store.sealing.digest(&format!("nobody{n}")),
            )
        })
        .count();
    assert!(
        ruled_out > 950,
        "{ruled_out} of 1,000 absent users ruled out"
    );
    for n in 0..100 {
        let absent = OAuthToken::new().with_user_name(format!("nobody{n}"));
        assert_eq!(store.find_token(&absent).unwrap(), None);
    }
}

/// Writes after the walk has passed their keys, before the filter is
/// complete: only their writers can have inserted them (a filter set
/// after the walk, or writers that do not insert, would rule them out).
#[test]
fn writes_between_the_walk_and_completion_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    drop(SledStore::open(&path).unwrap());
    let walked = Arc::new(std::sync::Barrier::new(2));
    WALKED.with(|w| *w.borrow_mut() = Some(Arc::clone(&walked)));
    let options = SledOptions::default()
        .record_cache(16 << 10)
        .warm_on_open(true);
    let store = SledStore::open_with(&path, options).unwrap();
    walked.wait();
    for n in 0..200 {
        store.save_token(&mut user(n)).unwrap();
    }
    walked.wait();
    store.warm_cache().unwrap();
    assert!(store.filter.get().unwrap().is_complete());
    for n in 0..200 {
        for query in lookups(n) {
            assert!(store.find_token(&query).unwrap().is_some(), "user{n}");
        }
    }
}

/// With every id and value hashing alike, record entries and hints
/// lead to the wrong records all the time: lookups still answer with
/// the right one (each is checked against the id or value asked).
#[test]
fn colliding_cache_keys_never_answer_for_another_user() {
    let dir = tempfile::tempdir().unwrap();
    let options = SledOptions::default().warm_on_open(false);
    let mut store = SledStore::open_with(dir.path().join("s"), options).unwrap();
    Arc::get_mut(store.cache.as_mut().unwrap()).unwrap().collide = true;
    for n in 0..20 {
        store.save_token(&mut user(n)).unwrap();
    }
    for _ in 0..2 {
        for n in 0..20 {
            for query in lookups(n) {
                let found = store.find_token(&query).unwrap().unwrap();
                assert_eq!(found.user_name, Some(format!("user{n}")));
            }
            let id = (n + 1).to_string();
            let by_id = store.find_token_by_id(&id).unwrap().unwrap();
            assert_eq!(by_id.id.as_deref(), Some(id.as_str()));
        }
    }
}

/// A key change changes every digest: the filter learned the old ones,
/// so it goes, and lookups go to sled.
#[test]
fn a_key_change_drops_the_index_filter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let options = || {
        SledOptions::default()
            .record_cache(16 << 10)
            .warm_on_open(true)
    };
    {
        let store = SledStore::open_with(&path, options()).unwrap();
        for n in 0..200 {
            store.save_token(&mut user(n)).unwrap();
        }
    }
    let mut store = SledStore::open_with(&path, options()).unwrap();
    store.warm_cache().unwrap();
    store
        .set_encryption(Some(Key::from_bytes([4; 32])))
        .unwrap();
    for n in 0..200 {
        for query in lookups(n) {
            assert!(store.find_token(&query).unwrap().is_some(), "user{n}");
        }
    }
}

/// The newest recovery snapshot sled wrote in `dir`.
fn newest_snapshot(dir: &Path) -> Option<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("snap.") && !name.ends_with(".generating"))
        .max()
}

#[test]
fn a_close_after_many_writes_leaves_a_fresh_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = SledStore::open(&path).unwrap();
    store.resnapshot_after = 10;
    for n in 0..9 {
        store.save_token(&mut user(n)).unwrap();
    }
    let before = newest_snapshot(&path);
    drop(store);
    // Fewer writes than the threshold: the close leaves the replay to the
    // next open, which is short.
    assert_eq!(newest_snapshot(&path), before);

    let mut store = SledStore::open(&path).unwrap();
    store.resnapshot_after = 10;
    let before = newest_snapshot(&path);
    for n in 10..30 {
        store.save_token(&mut user(n)).unwrap();
    }
    drop(store);
    let after = newest_snapshot(&path);
    assert!(after > before, "{after:?} after {before:?}");
    let store = SledStore::open(&path).unwrap();
    assert_eq!(store.len(), 29);
    assert!(store.find_token(&user(29)).unwrap().is_some());
}

/// Writes are planned from the trees: a read cache that is wrong (here
/// a filter that rules out every value, and a stale cached record)
/// misleads lookups, never the uniqueness of a save.
#[test]
fn saves_are_planned_from_the_trees_not_the_read_caches() {
    let dir = tempfile::tempdir().unwrap();
    let options = SledOptions::default().warm_on_open(false);
    let mut store = SledStore::open_with(dir.path().join("s"), options).unwrap();
    store.save_token(&mut user(1)).unwrap();
    let wrong = IndexFilter::new(16);
    wrong.complete();
    store.filter = Arc::new(OnceLock::from(wrong));
    assert_eq!(
        store.find_token(&lookups(1)[0]).unwrap(),
        None,
        "the filter misleads reads"
    );
    // The same user again (no id): it must update record 1, not add one.
    let mut again = user(1).with_access_token("1000.a1");
    store.save_token(&mut again).unwrap();
    assert_eq!(again.id.as_deref(), Some("1"));
    // A stale cached record (before the save above) must not let another
    // record take the access token record 1 now holds.
    let cache = store.cache.as_ref().unwrap();
    let stale = cache.fill(cache.snapshot(), &user(1).with_id("1"));
    assert!(stale.is_some());
    let mut thief = user(2).with_access_token("1000.a1");
    let err = store.save_token(&mut thief).unwrap_err();
    assert!(
        matches!(err, Error::Conflict { ref id, .. } if id == "1"),
        "{err:?}"
    );
    assert_eq!(store.len(), 1);
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn a_key_that_sealed_its_budget_refuses_writes_until_changed() {
    let dir = tempfile::tempdir().unwrap();
    let key = Key::from_bytes([7; 32]);
    let mut store =
        SledStore::open_with(dir.path().join("s"), SledOptions::default().encryption(key)).unwrap();
    Arc::get_mut(&mut store.sealing).unwrap().set_seal_budget(3);
    let token = |n: u32| {
        OAuthToken::new()
            .with_user_name(format!("user{n}"))
            .with_refresh_token(format!("1000.r{n}"))
    };
    for n in 0..3 {
        store.save_token(&mut token(n)).unwrap();
    }
    let err = store.save_token(&mut token(3)).unwrap_err();
    assert!(matches!(err, Error::RekeyRequired { .. }), "{err}");
    assert!(err.to_string().contains("Backend::set_encryption"), "{err}");
    let refused = store.batch(|b| b.save_token(&mut token(4)));
    assert!(matches!(refused, Err(Error::RekeyRequired { .. })));
    // Nothing was written by the refused saves; reads still work.
    assert_eq!(store.len(), 3);
    assert!(store.find_token(&token(1)).unwrap().is_some());
    // A new key starts a new count: the 3 records it sealed, then one
    // more within a budget of 4.
    store
        .set_encryption(Some(Key::from_bytes([8; 32])))
        .unwrap();
    Arc::get_mut(&mut store.sealing).unwrap().set_seal_budget(4);
    store.save_token(&mut token(3)).unwrap();
    assert_eq!(store.len(), 4);
    let err = store.save_token(&mut token(5)).unwrap_err();
    assert!(matches!(err, Error::RekeyRequired { .. }), "{err}");
}

/// The record a found entry holds, rebuilt from its borrowed fields (what
/// the server encodes).
fn from_fields(found: &Found) -> OAuthToken {
    let (text, expiry_time) = found.fields();
    let mut token = OAuthToken {
        expiry_time,
        ..OAuthToken::default()
    };
    for (field, value) in token.string_fields_mut().into_iter().zip(text) {
        *field = value.map(str::to_owned);
    }
    token
}

#[test]
fn found_entries_are_the_records_lookups_return() {
    for record_cache in [0, 64 << 20] {
        let dir = tempfile::tempdir().unwrap();
        let options = SledOptions::default()
            .warm_on_open(false)
            .record_cache(record_cache);
        let store = SledStore::open_with(dir.path().join("s"), options).unwrap();
        let mut saved = Vec::new();
        for n in 0..20 {
            let mut token = user(n)
                .with_access_token(format!("1000.a{n}"))
                .with_grant_token(format!("1000.g{n}"))
                .with_client_id("1000.C")
                .with_client_secret(format!("s{n}"))
                .with_redirect_url("https://app.example/cb")
                .with_api_domain("https://www.zohoapis.com")
                .with_expiry_time(1_700_000_000_000 + i64::from(n));
            store.save_token(&mut token).unwrap();
            saved.push(token);
        }
        // Twice: the first reads fill the cache (when it has one), the
        // second are answered from it.
        for _ in 0..2 {
            for (n, token) in (0..).zip(&saved) {
                let id = token.id.as_deref().unwrap();
                let found = store.find_found_by_id(id).unwrap().expect("by id");
                assert_eq!(
                    matches!(found, Found::Cached(_)),
                    record_cache > 0,
                    "a cached store hands out its entries"
                );
                assert_eq!(&from_fields(&found), token);
                assert_eq!(&found.into_token(), token);
                let by_tokens = [
                    OAuthToken::new().with_access_token(format!("1000.a{n}")),
                    OAuthToken::new()
                        .with_client_id("c")
                        .with_client_secret("s")
                        .with_grant_token(format!("1000.g{n}")),
                ];
                for query in lookups(n).into_iter().chain(by_tokens) {
                    let found = store.find_found(&query).unwrap().map(|f| from_fields(&f));
                    assert_eq!(found, store.find_token(&query).unwrap(), "{query:?}");
                    assert_eq!(found.as_ref(), Some(token), "{query:?}");
                }
            }
            let absent = OAuthToken::new().with_user_name("nobody");
            assert!(store.find_found(&absent).unwrap().is_none());
            assert!(store.find_found_by_id("999").unwrap().is_none());
        }
    }
}
