//! Concurrency stress: 8 threads mixing saves, deletes and reads on 16 shared
//! users. Afterwards `check()` is clean and each user's final state is one a
//! serial order of the logged operations produces; every read during the run
//! returns a whole record, never a mix of two saves.

use std::collections::BTreeMap;

use tokenstore::{MemoryStore, OAuthToken, Options, SledStore, TokenStore};

const THREADS: u64 = 8;
const USERS: u64 = 16;
const OPS_PER_THREAD: u64 = 150;

/// What one thread did to one user, in its own order.
#[derive(Debug, Clone, PartialEq)]
enum Logged {
    /// A successful save; the record then carried this stamp in every field.
    Saved(String),
    /// A delete that removed the user's record.
    Deleted,
    /// Anything that did not change the store (a read, a delete of nothing).
    Read,
}

fn user_name(user: u64) -> String {
    format!("user{user}@example.com")
}

/// Every field of a save carries the same stamp, so a torn record shows.
fn stamped(user: u64, stamp: &str) -> OAuthToken {
    OAuthToken::new()
        .with_user_name(user_name(user))
        .with_client_id(format!("client-{stamp}"))
        .with_client_secret(format!("secret-{stamp}"))
        .with_access_token(format!("1000.access-{stamp}"))
        .with_refresh_token(format!("1000.refresh-{stamp}"))
        .with_api_domain(format!("https://{stamp}.example"))
}

/// The stamp of a whole record; panics on a record mixing two saves.
fn stamp_of(token: &OAuthToken) -> String {
    let stamp = token
        .client_id
        .as_deref()
        .and_then(|c| c.strip_prefix("client-"))
        .expect("stamped client id")
        .to_owned();
    assert_eq!(token, &stamped_like(token, &stamp), "a torn record");
    stamp
}

fn stamped_like(token: &OAuthToken, stamp: &str) -> OAuthToken {
    let user = token.user_name.clone().unwrap();
    let mut expected = stamped(0, stamp).with_user_name(user);
    expected.id = token.id.clone();
    expected
}

fn worker(store: &(dyn TokenStore + Sync), thread: u64) -> BTreeMap<u64, Vec<Logged>> {
    let mut log: BTreeMap<u64, Vec<Logged>> = BTreeMap::new();
    let mut roll = thread.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in 0..OPS_PER_THREAD {
        roll ^= roll << 13;
        roll ^= roll >> 7;
        roll ^= roll << 17;
        let user = roll % USERS;
        let query = OAuthToken::new().with_user_name(user_name(user));
        let logged = match (roll >> 16) % 10 {
            0..=5 => {
                let stamp = format!("{thread}-{i}");
                store.save_token(&mut stamped(user, &stamp)).expect("save");
                Logged::Saved(stamp)
            }
            6 | 7 => match store.find_token(&query).expect("find") {
                Some(found) => {
                    let deleted = store
                        .delete_token(found.id.as_deref().unwrap())
                        .expect("delete");
                    if deleted {
                        Logged::Deleted
                    } else {
                        Logged::Read
                    }
                }
                None => Logged::Read,
            },
            _ => {
                if let Some(found) = store.find_token(&query).expect("find") {
                    stamp_of(&found);
                    let by_id = store
                        .find_token_by_id(found.id.as_deref().unwrap())
                        .expect("find by id");
                    if let Some(by_id) = by_id {
                        stamp_of(&by_id);
                    }
                }
                Logged::Read
            }
        };
        log.entry(user).or_default().push(logged);
    }
    log
}

fn stress(store: &(dyn TokenStore + Sync)) {
    let logs: Vec<BTreeMap<u64, Vec<Logged>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| scope.spawn(move || worker(store, t)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let all = store.get_tokens().unwrap();
    let mut finals: BTreeMap<String, String> = BTreeMap::new();
    for token in &all {
        let user = token.user_name.clone().unwrap();
        assert!(
            finals.insert(user.clone(), stamp_of(token)).is_none(),
            "two records for {user}"
        );
    }
    for user in 0..USERS {
        // The last mutation of a serial order is the last mutation of some
        // thread, after which that thread changed nothing of this user.
        let last_mutations: Vec<&Logged> = logs
            .iter()
            .filter_map(|log| log.get(&user))
            .filter_map(|ops| ops.iter().rev().find(|op| **op != Logged::Read))
            .collect();
        match finals.get(&user_name(user)) {
            Some(stamp) => assert!(
                last_mutations.contains(&&Logged::Saved(stamp.clone())),
                "user {user}: final stamp {stamp} is no thread's last save: {last_mutations:?}"
            ),
            None => assert!(
                last_mutations.is_empty() || last_mutations.contains(&&Logged::Deleted),
                "user {user} is gone but no thread deleted it last: {last_mutations:?}"
            ),
        }
    }
}

#[test]
fn eight_threads_on_shared_users_sled() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path().join("db")).unwrap();
    stress(&store);
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{report}");
}

#[test]
fn eight_threads_on_shared_users_sled_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().durability(tokenstore::Durability::BUFFERED);
    let store = SledStore::open_with(dir.path().join("db"), options).unwrap();
    stress(&store);
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{report}");
}

#[test]
fn eight_threads_on_shared_users_memory() {
    stress(&MemoryStore::new());
}

/// Readers racing one writer through the record cache: once a save has
/// returned, no reader that starts afterwards sees an older version, by id,
/// by user name or by the new access token, and an access token the writer
/// has replaced is never found again. A cache that kept a record read before
/// a commit (or refilled one during it) fails this.
#[test]
fn a_finished_save_is_seen_by_every_later_read() {
    use std::sync::atomic::{AtomicU64, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open_with(
        dir.path().join("s"),
        Options::default().durability(tokenstore::Durability::BUFFERED),
    )
    .unwrap();
    let version = |v: u64| {
        OAuthToken::new()
            .with_id("1")
            .with_user_name("ana@example.com")
            .with_access_token(format!("1000.access.{v}"))
            .with_expiry_time(v as i64)
    };
    store.save_token(&mut version(0)).unwrap();
    // The last version whose save began, and the last whose save returned.
    let started = AtomicU64::new(0);
    let published = AtomicU64::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for reader in 0..3u64 {
            let (store, started, published, done) = (&store, &started, &published, &done);
            scope.spawn(move || {
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) || reads < 1_000 {
                    let floor = published.load(Ordering::Acquire);
                    let by_access = reads % 3 == 2;
                    let found = match reads % 3 {
                        0 => store.find_token_by_id("1").unwrap(),
                        1 => store
                            .find_token(&OAuthToken::new().with_user_name("ana@example.com"))
                            .unwrap(),
                        _ => store
                            .find_token(
                                &OAuthToken::new()
                                    .with_access_token(format!("1000.access.{floor}")),
                            )
                            .unwrap(),
                    };
                    reads += 1;
                    let Some(seen) = found else {
                        // Only the access token can have been replaced, by a
                        // save begun since.
                        assert!(
                            by_access && started.load(Ordering::Acquire) > floor,
                            "reader {reader}: version {floor} not found (by access: {by_access})"
                        );
                        continue;
                    };
                    let seen = seen.expiry_time.unwrap() as u64;
                    assert!(
                        seen >= floor,
                        "reader {reader} saw {seen} after {floor} was saved"
                    );
                    if floor > 0 {
                        let replaced = OAuthToken::new()
                            .with_access_token(format!("1000.access.{}", floor - 1));
                        assert_eq!(
                            store.find_token(&replaced).unwrap(),
                            None,
                            "reader {reader}"
                        );
                    }
                }
            });
        }
        for v in 1..=3_000 {
            started.store(v, Ordering::Release);
            store.save_token(&mut version(v)).unwrap();
            published.store(v, Ordering::Release);
        }
        done.store(true, Ordering::Release);
    });
}

/// Concurrent saves are applied together (write combining); a save that
/// fails in a combined batch fails alone. Eight threads each save 50 users
/// of their own and try, in between, to take a refresh token another user
/// already holds: every such save is a `Conflict` naming the holder, every
/// other save succeeds, and the store holds exactly the 400 users.
#[test]
fn a_failing_save_among_concurrent_ones_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path().join("s")).unwrap();
    let mut holder = OAuthToken::new()
        .with_user_name("holder@example.com")
        .with_refresh_token("1000.taken");
    store.save_token(&mut holder).unwrap();
    let holder_id = holder.id.unwrap();
    std::thread::scope(|scope| {
        for thread in 0..8u64 {
            let (store, holder_id) = (&store, &holder_id);
            scope.spawn(move || {
                for n in 0..50u64 {
                    let mut own = OAuthToken::new()
                        .with_user_name(format!("u{thread}.{n}@example.com"))
                        .with_refresh_token(format!("1000.r.{thread}.{n}"));
                    store.save_token(&mut own).unwrap();
                    assert!(own.id.is_some());
                    let mut thief = OAuthToken::new()
                        .with_user_name(format!("thief{thread}.{n}@example.com"))
                        .with_refresh_token("1000.taken");
                    let before = thief.clone();
                    match store.save_token(&mut thief) {
                        Err(tokenstore::Error::Conflict { id, .. }) => assert_eq!(&id, holder_id),
                        other => panic!("thread {thread}: expected a conflict, got {other:?}"),
                    }
                    assert_eq!(thief, before, "a failed save leaves the token as it was");
                }
            });
        }
    });
    assert_eq!(store.len(), 401);
    assert!(store.check().unwrap().is_ok());
    for thread in 0..8u64 {
        for n in 0..50u64 {
            let query = OAuthToken::new().with_user_name(format!("u{thread}.{n}@example.com"));
            assert!(store.find_token(&query).unwrap().is_some());
        }
    }
}

/// The background warm-up that opening starts (the default) races writers
/// and stays coherent: records the writers replaced while it read are never
/// served, by id or by any indexed value, after the warm-up and during it.
/// Two writers update records from both ends of the key space while it
/// reads them in key order.
#[test]
fn the_background_warm_up_never_serves_a_replaced_record() {
    const RECORDS: u64 = 4_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let buffered = Options::default().durability(tokenstore::Durability::BUFFERED);
    let original = |n: u64| stamped(n, &format!("old{n}"));
    {
        let store = SledStore::open_with(&path, buffered.clone().warm_on_open(false)).unwrap();
        store
            .batch(|b| (0..RECORDS).try_for_each(|n| b.save_token(&mut original(n))))
            .unwrap();
    }
    let store = SledStore::open_with(&path, buffered).unwrap();
    assert!(store.options().warms_on_open());
    let updated = |n: u64| stamped(n, &format!("new{n}"));
    let check = |n: u64| {
        let old = original(n);
        let by_user = store
            .find_token(&OAuthToken::new().with_user_name(user_name(n)))
            .unwrap()
            .expect("every user stays stored");
        assert_eq!(stamp_of(&by_user), format!("new{n}"), "by user name");
        let by_id = store
            .find_token_by_id(by_user.id.as_deref().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(by_id, by_user, "by id");
        let by_access = store
            .find_token(&OAuthToken::new().with_access_token(updated(n).access_token.unwrap()))
            .unwrap();
        assert_eq!(
            by_access.as_ref(),
            Some(&by_user),
            "by the new access token"
        );
        for replaced in [
            OAuthToken::new().with_access_token(old.access_token.unwrap()),
            OAuthToken::new().with_refresh_token(old.refresh_token.unwrap()),
        ] {
            assert_eq!(
                store.find_token(&replaced).unwrap(),
                None,
                "by an old value"
            );
        }
    };
    std::thread::scope(|scope| {
        for from_the_end in [false, true] {
            let (store, updated, check) = (&store, &updated, &check);
            scope.spawn(move || {
                for i in 0..RECORDS / 4 {
                    let n = if from_the_end {
                        RECORDS - 2 - i * 2
                    } else {
                        i * 2
                    };
                    // Read first (the warm-up may have cached it), then replace.
                    let found = store
                        .find_token(&OAuthToken::new().with_user_name(user_name(n)))
                        .unwrap()
                        .unwrap();
                    let mut token = updated(n);
                    token.id = found.id;
                    store.save_token(&mut token).unwrap();
                    check(n);
                }
            });
        }
    });
    // Joins the warm-up, which read every record once.
    assert_eq!(store.warm_cache().unwrap(), RECORDS as usize);
    for n in (0..RECORDS).filter(|n| n % 2 == 0) {
        check(n);
    }
    // And the untouched ones are whole and as saved.
    for n in (0..RECORDS).filter(|n| n % 2 == 1) {
        let found = store
            .find_token(&OAuthToken::new().with_user_name(user_name(n)))
            .unwrap()
            .unwrap();
        assert_eq!(stamp_of(&found), format!("old{n}"));
    }
}
