//! The backend-neutral layer: `tokenstore::open` picks the backend from a
//! string, and every backend's `AnyStore` offers the same batch, count,
//! counter and check; what a backend cannot do is `Error::Unsupported`.

#[path = "support/tokens.rs"]
mod tokens;

use tokens::zoho;
use tokenstore::{AnyStore, Error, Key, OAuthToken, OpenOptions, StoreKind, TokenStore};

/// Every backend that needs no server, opened through `tokenstore::open`.
fn stores() -> Vec<(AnyStore, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    vec![
        (tokenstore::open("memory:").unwrap(), None),
        (tokenstore::open(path.to_str().unwrap()).unwrap(), Some(dir)),
    ]
}

#[test]
fn open_picks_the_backend_from_the_string() {
    assert_eq!(StoreKind::of("memory:").unwrap(), StoreKind::Memory);
    assert_eq!(
        StoreKind::of("postgres://u:p@127.0.0.1/db").unwrap(),
        StoreKind::Postgres
    );
    assert_eq!(
        StoreKind::of("POSTGRESQL://127.0.0.1/db").unwrap(),
        StoreKind::Postgres
    );
    assert_eq!(
        StoreKind::of("mysql://u@127.0.0.1/db").unwrap(),
        StoreKind::Mysql
    );
    assert_eq!(StoreKind::of("./postgres-backup").unwrap(), StoreKind::Sled);
    let kinds: Vec<&str> = stores().iter().map(|(s, _)| s.kind()).collect();
    assert_eq!(kinds, ["memory", "sled"]);
}

#[test]
fn batches_apply_everything_or_nothing_on_every_backend() {
    for (store, _dir) in stores() {
        batches_are_all_or_nothing(&store);
    }
}

/// A batch through a shared store's client: its stage runs in the client,
/// over reads the owner answers, and the owner applies what it staged.
#[test]
fn batches_through_a_client_apply_everything_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let owner = tokenstore::open(path.to_str().unwrap()).unwrap();
    let client = tokenstore::open(path.to_str().unwrap()).unwrap();
    assert_eq!(
        client.info().unwrap().sharing.map(|s| s.role),
        Some(tokenstore::Role::Client)
    );
    batches_are_all_or_nothing(&client);
    // The owner sees what the client's batches applied.
    assert_eq!(owner.count().unwrap(), 4);
    assert_eq!(owner.last_issued_id().unwrap(), 42);
}

fn batches_are_all_or_nothing(store: &AnyStore) {
    let kind = store.kind();
    let saved = store
        .batch(|batch| {
            for n in 0..3 {
                batch.save_token(&mut zoho(&format!("user{n}"), &n.to_string()))?;
            }
            Ok::<_, Error>(batch.changed())
        })
        .unwrap();
    assert_eq!(saved, 3, "{kind}");
    assert_eq!(store.count().unwrap(), 3, "{kind}");
    assert_eq!(store.last_issued_id().unwrap(), 3, "{kind}");

    // A conflict in the middle undoes the whole batch.
    let err = store
        .batch(|batch| {
            batch.save_token(&mut zoho("user9", "9"))?;
            batch.delete_token("1")?;
            batch.save_token(&mut zoho("mallory", "2"))
        })
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{kind}: {err:?}");
    assert_eq!(store.count().unwrap(), 3, "{kind}");
    assert!(store.find_token_by_id("1").unwrap().is_some(), "{kind}");

    // A caller's own error type passes through, and writes nothing.
    let err = store
        .batch(|batch| {
            batch.save_token(&mut zoho("user8", "8"))?;
            Err::<(), _>(Failure::Caller)
        })
        .unwrap_err();
    assert!(matches!(err, Failure::Caller), "{kind}");
    assert_eq!(store.count().unwrap(), 3, "{kind}");

    // A discarded batch writes nothing either.
    store
        .batch(|batch| {
            batch.save_token(&mut zoho("user7", "7"))?;
            batch.discard();
            Ok::<_, Error>(())
        })
        .unwrap();
    assert_eq!(store.count().unwrap(), 3, "{kind}");

    // Skipped ids move the counter even when no record changes.
    store
        .batch(|batch| {
            batch.skip_ids_through(41);
            Ok::<_, Error>(())
        })
        .unwrap();
    assert_eq!(store.last_issued_id().unwrap(), 41, "{kind}");
    let mut next = OAuthToken::new()
        .with_user_name("next")
        .with_access_token("a-next");
    store.save_token(&mut next).unwrap();
    assert_eq!(next.id.as_deref(), Some("42"), "{kind}");
    assert!(store.check().unwrap().is_ok(), "{kind}");
}

#[derive(Debug)]
enum Failure {
    Caller,
    Store(#[allow(dead_code)] Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Store(e)
    }
}

#[test]
fn what_a_backend_cannot_do_is_unsupported() {
    let mut memory = tokenstore::open("memory:").unwrap();
    let err = memory
        .set_encryption(Some(Key::generate().unwrap()), &mut |_, _| {})
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("a new store opened with the new key"),
        "{err}"
    );

    let err = tokenstore::open_with("memory:", OpenOptions::new().key(Key::generate().unwrap()))
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");

    #[cfg(not(feature = "postgres"))]
    {
        let err = tokenstore::open("postgres://tokenstore:pw@127.0.0.1:1/none").unwrap_err();
        assert!(
            matches!(
                err,
                Error::UnknownScheme {
                    feature: Some("postgres"),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("cargo feature `postgres`"),
            "{err}"
        );
        assert!(!err.to_string().contains("pw@"), "{err}");
    }
}

#[test]
fn a_sled_store_changes_its_key_through_the_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let path = path.to_str().unwrap();
    let key = Key::generate().unwrap();
    {
        let mut store = tokenstore::open(path).unwrap();
        store.save_token(&mut zoho("ana", "a")).unwrap();
        let mut calls = 0;
        store
            .set_encryption(Some(key.clone()), &mut |_, _| calls += 1)
            .unwrap();
        assert!(calls > 0);
        assert!(store.info().unwrap().encrypted);
    }
    let err = tokenstore::open(path).unwrap_err();
    assert!(matches!(err, Error::KeyRequired { .. }), "{err:?}");
    let store = tokenstore::open_with(path, OpenOptions::new().key(key)).unwrap();
    assert_eq!(store.count().unwrap(), 1);
    // The handle is a TokenStore like any other.
    let shared: &(dyn TokenStore + Send + Sync) = &store;
    assert!(shared
        .find_token(&OAuthToken::new().with_user_name("ana"))
        .unwrap()
        .is_some());
}

#[test]
fn open_waits_for_a_locked_embedded_store_only_when_asked() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let path = path.to_str().unwrap().to_owned();
    let exclusive = || OpenOptions::new().exclusive(true);
    let first = tokenstore::open_with(&path, exclusive()).unwrap();

    let started = Instant::now();
    let err = tokenstore::open_with(&path, exclusive()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "fails fast");

    // Released while the second opener waits: it gets the store.
    let waiter = {
        let path = path.clone();
        std::thread::spawn(move || {
            tokenstore::open_with(
                &path,
                OpenOptions::new()
                    .exclusive(true)
                    .wait_for_lock(Duration::from_secs(10)),
            )
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    drop(first);
    let second = waiter.join().unwrap().expect("opened once released");
    assert_eq!(second.kind(), "sled");
    assert!(second.info().unwrap().sharing.is_none());
}

/// Without `exclusive`, a second open of an embedded store shares it with
/// the first (docs/SPEC.md §8): both see every write, and when the owner
/// closes, the other takes the store over. (Between processes:
/// tests/shared_processes.rs.)
#[test]
fn a_second_open_shares_the_store_and_takes_it_over() {
    use tokenstore::Role;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let path = path.to_str().unwrap();
    let first = tokenstore::open(path).unwrap();
    let second = tokenstore::open(path).unwrap();
    let role = |store: &tokenstore::AnyStore| store.info().unwrap().sharing.unwrap().role;
    assert_eq!(role(&first), Role::Owner);
    assert_eq!(role(&second), Role::Client);

    let mut ana = OAuthToken::new()
        .with_user_name("ana")
        .with_refresh_token("1000.r");
    second.save_token(&mut ana).unwrap();
    let query = OAuthToken::new().with_user_name("ana");
    assert_eq!(first.find_token(&query).unwrap(), Some(ana.clone()));
    let mut bob = OAuthToken::new()
        .with_user_name("bob")
        .with_access_token("1000.a");
    first.save_token(&mut bob).unwrap();
    assert_eq!(second.get_tokens().unwrap().len(), 2);
    // The same errors through the owner.
    let mut thief = OAuthToken::new()
        .with_user_name("eve")
        .with_access_token("1000.a");
    let stolen = second.save_token(&mut thief);
    assert!(matches!(stolen, Err(Error::Conflict { .. })), "{stolen:?}");

    drop(first);
    assert_eq!(second.find_token(&query).unwrap(), Some(ana));
    assert_eq!(role(&second), Role::Owner);
    assert_eq!(second.count().unwrap(), 2);
}

/// `create(false)` opens only a store that exists: a missing directory, an
/// empty one, or one whose database file is gone is `StoreNotFound`, and
/// nothing is created.
#[test]
fn an_existing_store_is_required_when_creating_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    let spec = path.to_str().unwrap();
    let existing = || OpenOptions::new().create(false);
    let missing = tokenstore::open_with(spec, existing()).unwrap_err();
    assert!(
        matches!(missing, Error::StoreNotFound { .. }),
        "{missing:?}"
    );
    assert!(!path.exists(), "nothing was created");
    std::fs::create_dir(&path).unwrap();
    let empty = tokenstore::open_with(spec, existing()).unwrap_err();
    assert!(matches!(empty, Error::StoreNotFound { .. }), "{empty:?}");

    let store = tokenstore::open(spec).unwrap();
    let mut ana = OAuthToken::new()
        .with_user_name("ana")
        .with_refresh_token("1000.r");
    store.save_token(&mut ana).unwrap();
    drop(store);
    assert_eq!(
        tokenstore::open_with(spec, existing())
            .unwrap()
            .count()
            .unwrap(),
        1
    );

    std::fs::remove_file(path.join("db")).unwrap();
    let gone = tokenstore::open_with(spec, existing()).unwrap_err();
    assert!(matches!(gone, Error::StoreNotFound { .. }), "{gone:?}");
}
