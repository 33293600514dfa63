//! Access tokens on demand (docs/SPEC.md §7) against a fake Zoho accounts server
//! on 127.0.0.1: login, refresh at the margin, single flight across
//! threads, rotation, the legacy answer, every error with the store
//! unchanged and no secret shown, revoke.

#[path = "support/fake_zoho.rs"]
mod fake_zoho;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use fake_zoho::{Behaviour, FakeZoho};
use tokenstore::oauth::{AccessToken, Config, Login, OAuthClient};
use tokenstore::{now_ms, Error, MemoryStore, OAuthToken, SledStore, TokenStore};

const USER: &str = "ana@example.com";
const CLIENT_ID: &str = "1000.CLIENTID";
const CLIENT_SECRET: &str = "client-secret-S3CRET";
const GRANT: &str = "1000.grant-S3CRET";

type Store = Arc<dyn TokenStore + Send + Sync>;

fn sled() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path().join("tokens")).unwrap();
    (dir, Arc::new(store))
}

fn client(store: &Store, server: &FakeZoho) -> OAuthClient {
    let config = Config::default()
        .accounts_url(server.url())
        .timeout(Duration::from_secs(2));
    OAuthClient::with_config(Arc::clone(store), config).unwrap()
}

/// A record whose refresh token the fake server accepts, expiring at `expiry`.
fn saved(store: &Store, user: &str, expiry: i64) -> OAuthToken {
    let mut token = OAuthToken::new()
        .with_user_name(user)
        .with_client_id(CLIENT_ID)
        .with_client_secret(CLIENT_SECRET)
        .with_refresh_token(format!("1000.refresh-{user}-S3CRET"))
        .with_access_token(format!("1000.access-{user}-S3CRET"))
        .with_expiry_time(expiry)
        .with_api_domain("https://www.zohoapis.com");
    store.save_token(&mut token).unwrap();
    token
}

/// Every secret the store holds, plus the fixture's.
fn secrets(store: &Store) -> Vec<String> {
    let mut all = vec![CLIENT_SECRET.to_owned(), GRANT.to_owned()];
    for token in store.get_tokens().unwrap() {
        all.extend(token.access_token);
        all.extend(token.refresh_token);
        all.extend(token.client_secret);
        all.extend(token.grant_token);
    }
    all
}

fn assert_no_secret(shown: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !shown.contains(secret.as_str()),
            "a secret shows in: {shown}"
        );
    }
}

fn sorted(store: &Store) -> Vec<OAuthToken> {
    let mut tokens = store.get_tokens().unwrap();
    tokens.sort_by(|a, b| a.id.cmp(&b.id));
    tokens
}

#[test]
fn login_exchanges_the_grant_code_and_saves_under_the_user_name() {
    let server = FakeZoho::start();
    server.set_api_domain("https://www.zohoapis.eu");
    let (_dir, store) = sled();
    let client = client(&store, &server);
    let before = now_ms();
    let login =
        Login::new(USER, CLIENT_ID, CLIENT_SECRET, GRANT).redirect_url("https://example.com/cb");
    let record = client.login(&login).unwrap();
    assert_eq!(server.logins(), 1);

    let stored = store
        .find_token(&OAuthToken::new().with_user_name(USER))
        .unwrap()
        .expect("saved under the user name");
    assert_eq!(stored, record);
    assert_eq!(stored.client_id.as_deref(), Some(CLIENT_ID));
    assert_eq!(stored.client_secret.as_deref(), Some(CLIENT_SECRET));
    assert!(stored.refresh_token.is_some() && stored.access_token.is_some());
    assert_eq!(
        stored.grant_token, None,
        "the single-use grant code is not kept"
    );
    assert_eq!(
        stored.api_domain.as_deref(),
        Some("https://www.zohoapis.eu")
    );
    assert_eq!(
        stored.redirect_url.as_deref(),
        Some("https://example.com/cb")
    );
    let expiry = stored.expiry_time.unwrap();
    assert!(expiry >= before + 3_600_000 - 1_000 && expiry <= now_ms() + 3_600_000);

    // The token just issued is handed out without another request.
    let token = client.access_token_for_user(USER).unwrap();
    assert_eq!(Some(token.secret()), stored.access_token.as_deref());
    assert_eq!(server.requests(), 1);
    assert_no_secret(&format!("{token:?} {login:?} {client:?}"), &secrets(&store));
}

#[test]
fn a_token_is_refreshed_only_within_the_margin() {
    let server = FakeZoho::start();
    let (_dir, store) = sled();
    let client = client(&store, &server);

    let far = saved(&store, "far@example.com", now_ms() + 3_600_000);
    let six = saved(&store, "six@example.com", now_ms() + 6_000);
    let four = saved(&store, "four@example.com", now_ms() + 4_000);
    let gone = saved(&store, "gone@example.com", now_ms() - 60_000);

    for kept in [&far, &six] {
        let token = client
            .access_token_by_id(kept.id.as_deref().unwrap())
            .unwrap();
        assert_eq!(Some(token.secret()), kept.access_token.as_deref());
    }
    assert_eq!(
        server.refreshes(),
        0,
        "valid past the 5 s margin: no request"
    );

    for due in [&four, &gone] {
        let before = now_ms();
        let token = client
            .access_token_by_id(due.id.as_deref().unwrap())
            .unwrap();
        assert_ne!(Some(token.secret()), due.access_token.as_deref());
        let stored = store.find_token_by_id(token.id()).unwrap().unwrap();
        assert_eq!(
            stored.access_token.as_deref(),
            Some(token.secret()),
            "saved before returned"
        );
        assert!(stored.expiry_time.unwrap() >= before + 3_600_000);
        assert_eq!(token.expiry_time(), stored.expiry_time);
        // Kept fields stay.
        assert_eq!(stored.refresh_token, due.refresh_token);
        assert_eq!(stored.user_name, due.user_name);
    }
    assert_eq!(server.refreshes(), 2);

    // A longer margin asked for by the caller.
    let token = client
        .access_token_valid_for(
            &OAuthToken::new().with_user_name("six@example.com"),
            Duration::from_secs(60),
        )
        .unwrap();
    assert_ne!(Some(token.secret()), six.access_token.as_deref());
    assert_eq!(server.refreshes(), 3);
}

#[test]
fn sixteen_threads_on_one_expired_record_make_one_request() {
    let server = FakeZoho::start();
    server.set_delay(Duration::from_millis(300));
    let (_dir, store) = sled();
    let client = Arc::new(client(&store, &server));
    saved(&store, USER, now_ms() - 1);

    let barrier = Arc::new(Barrier::new(16));
    let tokens: Vec<AccessToken> = (0..16)
        .map(|_| {
            let client = Arc::clone(&client);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                client.access_token_for_user(USER).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    println!(
        "16 threads, 1 expired record: {} refresh request(s)",
        server.refreshes()
    );
    assert_eq!(server.refreshes(), 1);
    assert!(
        tokens.iter().all(|t| t == &tokens[0]),
        "every caller gets the same token"
    );
    let stored = store.find_token_by_id(tokens[0].id()).unwrap().unwrap();
    assert_eq!(stored.access_token.as_deref(), Some(tokens[0].secret()));
}

#[test]
fn four_records_by_eight_threads_make_four_requests_in_parallel() {
    let server = FakeZoho::start();
    server.set_delay(Duration::from_millis(500));
    let store: Store = Arc::new(MemoryStore::new());
    let client = Arc::new(client(&store, &server));
    let users: Vec<String> = (0..4).map(|n| format!("user{n}@example.com")).collect();
    for user in &users {
        saved(&store, user, now_ms() - 1);
    }
    let barrier = Arc::new(Barrier::new(32));
    let started = Instant::now();
    let handles: Vec<_> = (0..32)
        .map(|n| {
            let client = Arc::clone(&client);
            let barrier = Arc::clone(&barrier);
            let user = users[n % 4].clone();
            std::thread::spawn(move || {
                barrier.wait();
                (user.clone(), client.access_token_for_user(&user).unwrap())
            })
        })
        .collect();
    let results: Vec<(String, AccessToken)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    println!(
        "4 records x 8 threads: {} refresh request(s), at most {} at once, {:.2?}",
        server.refreshes(),
        server.max_in_flight(),
        started.elapsed()
    );
    assert_eq!(server.refreshes(), 4);
    assert!(
        server.max_in_flight() >= 2,
        "different records refresh in parallel"
    );
    for user in &users {
        let mine: Vec<_> = results
            .iter()
            .filter(|(u, _)| u == user)
            .map(|(_, t)| t)
            .collect();
        assert_eq!(mine.len(), 8);
        assert!(mine.iter().all(|t| *t == mine[0]));
    }
}

#[test]
fn waiters_share_the_leaders_error_and_make_no_request_of_their_own() {
    let server = FakeZoho::start();
    server.set_delay(Duration::from_millis(300));
    server.set_behaviour(Behaviour::Refuse);
    let (_dir, store) = sled();
    let client = Arc::new(client(&store, &server));
    saved(&store, USER, now_ms() - 1);
    let before = sorted(&store);
    let barrier = Arc::new(Barrier::new(8));
    let errors: Vec<Error> = (0..8)
        .map(|_| {
            let client = Arc::clone(&client);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                client.access_token_for_user(USER).unwrap_err()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(server.refreshes(), 1);
    assert!(
        errors
            .iter()
            .all(|e| matches!(e, Error::GrantRefused { .. })),
        "{errors:?}"
    );
    assert_eq!(sorted(&store), before);
}

#[test]
fn a_rotated_refresh_token_replaces_the_old_one() {
    let server = FakeZoho::start();
    server.set_rotate(true);
    let (_dir, store) = sled();
    let client = client(&store, &server);
    let old = saved(&store, USER, now_ms() - 1);
    let by_refresh = |refresh: &str| {
        OAuthToken::new()
            .with_refresh_token(refresh)
            .with_client_id(CLIENT_ID)
            .with_client_secret(CLIENT_SECRET)
    };
    let old_refresh = old.refresh_token.clone().unwrap();
    assert!(store
        .find_token(&by_refresh(&old_refresh))
        .unwrap()
        .is_some());

    let token = client.refresh(&by_refresh(&old_refresh)).unwrap();
    let stored = store.find_token_by_id(token.id()).unwrap().unwrap();
    let new_refresh = stored.refresh_token.clone().unwrap();
    assert_ne!(new_refresh, old_refresh);
    assert_eq!(store.find_token(&by_refresh(&old_refresh)).unwrap(), None);
    assert_eq!(
        store.find_token(&by_refresh(&new_refresh)).unwrap(),
        Some(stored)
    );
    assert_eq!(store.get_tokens().unwrap().len(), 1);

    // The old one is dead at the server too; the new one works.
    client.refresh(&by_refresh(&new_refresh)).unwrap();
    assert_eq!(server.refreshes(), 2);
}

#[test]
fn the_legacy_answer_in_milliseconds_gives_an_hour_not_forty_days() {
    let server = FakeZoho::start();
    server.set_behaviour(Behaviour::Legacy);
    let (_dir, store) = sled();
    let client = client(&store, &server);
    saved(&store, USER, now_ms() - 1);
    let before = now_ms();
    let token = client.access_token_for_user(USER).unwrap();
    let expiry = token.expiry_time().unwrap();
    assert!(
        expiry >= before + 3_600_000 && expiry <= now_ms() + 3_600_000,
        "{expiry}"
    );
}

/// Runs `call` against a store holding one expired record (and a valid
/// one), with the server answering `behaviour`; checks the store did not
/// change and no secret shows; returns the error.
fn failing(behaviour: Behaviour, call: impl Fn(&OAuthClient) -> Error) -> Error {
    let server = FakeZoho::start();
    server.set_behaviour(behaviour);
    let (_dir, store) = sled();
    let config = Config::default()
        .accounts_url(server.url())
        .timeout(Duration::from_millis(700));
    let client = OAuthClient::with_config(Arc::clone(&store), config).unwrap();
    saved(&store, USER, now_ms() - 1);
    saved(&store, "other@example.com", now_ms() + 3_600_000);
    let before = sorted(&store);
    let error = call(&client);
    assert_eq!(
        sorted(&store),
        before,
        "the store is unchanged on {error:?}"
    );
    assert_no_secret(&format!("{error} {error:?}"), &secrets(&store));
    error
}

#[test]
fn every_refused_refresh_is_its_own_error_and_changes_nothing() {
    let refresh = |c: &OAuthClient| c.access_token_for_user(USER).unwrap_err();
    let e = failing(Behaviour::Refuse, refresh);
    assert!(
        matches!(&e, Error::GrantRefused { code, .. } if code == "invalid_code"),
        "{e}"
    );
    assert!(e.to_string().contains("log the user in again"));

    let e = failing(Behaviour::InvalidClient, refresh);
    assert!(matches!(e, Error::InvalidClient { .. }), "{e}");

    let e = failing(Behaviour::RateLimit, refresh);
    assert!(matches!(e, Error::RateLimited { .. }), "{e}");
    assert!(e.to_string().contains("try again in a few minutes"));

    let e = failing(Behaviour::Malformed, refresh);
    assert!(matches!(e, Error::MalformedResponse { .. }), "{e}");
}

#[test]
fn a_server_that_never_answers_fails_within_the_timeout() {
    let started = Instant::now();
    let e = failing(Behaviour::Hang, |c| {
        c.access_token_for_user(USER).unwrap_err()
    });
    assert!(
        matches!(&e, Error::Network { reason, .. } if reason.contains("no answer")),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the timeout"
    );
}

#[test]
fn an_unreachable_server_is_a_network_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (_dir, store) = sled();
    saved(&store, USER, now_ms() - 1);
    let before = sorted(&store);
    let config = Config::default().accounts_url(format!("http://127.0.0.1:{port}"));
    let client = OAuthClient::with_config(Arc::clone(&store), config).unwrap();
    let e = client.access_token_for_user(USER).unwrap_err();
    assert!(matches!(e, Error::Network { .. }), "{e}");
    assert_eq!(sorted(&store), before);
    assert_no_secret(&format!("{e} {e:?}"), &secrets(&store));
}

#[test]
fn a_refused_login_saves_nothing() {
    for (behaviour, check) in [
        (
            Behaviour::Refuse,
            (|e: &Error| matches!(e, Error::GrantRefused { .. })) as fn(&Error) -> bool,
        ),
        (Behaviour::InvalidClient, |e| {
            matches!(e, Error::InvalidClient { .. })
        }),
        (Behaviour::RateLimit, |e| {
            matches!(e, Error::RateLimited { .. })
        }),
        (Behaviour::Malformed, |e| {
            matches!(e, Error::MalformedResponse { .. })
        }),
    ] {
        let e = failing(behaviour, |c| {
            c.login(&Login::new(
                "new@example.com",
                CLIENT_ID,
                CLIENT_SECRET,
                GRANT,
            ))
            .unwrap_err()
        });
        assert!(check(&e), "{behaviour:?}: {e}");
    }
}

#[test]
fn missing_records_and_credentials_are_reported_without_a_request() {
    let server = FakeZoho::start();
    let (_dir, store) = sled();
    let client = client(&store, &server);
    assert!(matches!(
        client.access_token_for_user("nobody@example.com"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        client.access_token_by_id("42"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(client.revoke("42"), Err(Error::NotFound { .. })));

    let mut bare = OAuthToken::new()
        .with_user_name(USER)
        .with_access_token("1000.access-S3CRET")
        .with_expiry_time(now_ms() - 1);
    store.save_token(&mut bare).unwrap();
    let e = client.access_token_for_user(USER).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotRefreshable {
                missing: "refresh_token",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(server.requests(), 0);
    assert_no_secret(&format!("{e} {e:?}"), &secrets(&store));
}

#[test]
fn revoke_revokes_at_the_server_then_deletes() {
    let server = FakeZoho::start();
    let (_dir, store) = sled();
    let client = client(&store, &server);
    let record = saved(&store, USER, now_ms() + 3_600_000);
    let id = record.id.clone().unwrap();

    server.set_behaviour(Behaviour::RateLimit);
    assert!(matches!(client.revoke(&id), Err(Error::RateLimited { .. })));
    assert!(
        store.find_token_by_id(&id).unwrap().is_some(),
        "kept when the server refused"
    );

    server.set_behaviour(Behaviour::Normal);
    assert!(client.revoke(&id).unwrap());
    assert_eq!(server.revokes(), 2);
    assert_eq!(store.find_token_by_id(&id).unwrap(), None);

    // The revoked refresh token is dead at the server.
    let mut again = record.clone();
    again.id = None;
    again.expiry_time = Some(now_ms() - 1);
    store.save_token(&mut again).unwrap();
    assert!(matches!(
        client.access_token_for_user(USER),
        Err(Error::GrantRefused { .. })
    ));
}

#[test]
fn a_record_names_its_data_center_by_api_domain() {
    // Without an accounts URL, an EU record would go to accounts.zoho.eu;
    // here only the resolution is checked: no real host is contacted.
    let record = OAuthToken::new().with_api_domain("https://www.zohoapis.eu");
    assert_eq!(
        Config::default().accounts_url_for(Some(&record)),
        "https://accounts.zoho.eu"
    );
}

/// A store standing for a shared backend: before it runs the refresh under
/// its lock, "another process" (holding that lock first) refreshes the
/// record.
struct RacedStore {
    inner: MemoryStore,
    locked: std::sync::Mutex<Vec<String>>,
    /// How long the other process's token lives.
    other_lifetime_ms: i64,
    /// How long the other process holds the lock (first time only).
    other_holds: Duration,
}

impl TokenStore for RacedStore {
    fn find_token(&self, query: &OAuthToken) -> tokenstore::Result<Option<OAuthToken>> {
        self.inner.find_token(query)
    }
    fn save_token(&self, token: &mut OAuthToken) -> tokenstore::Result<()> {
        self.inner.save_token(token)
    }
    fn delete_token(&self, id: &str) -> tokenstore::Result<bool> {
        self.inner.delete_token(id)
    }
    fn get_tokens(&self) -> tokenstore::Result<Vec<OAuthToken>> {
        self.inner.get_tokens()
    }
    fn delete_tokens(&self) -> tokenstore::Result<usize> {
        self.inner.delete_tokens()
    }
    fn find_token_by_id(&self, id: &str) -> tokenstore::Result<Option<OAuthToken>> {
        self.inner.find_token_by_id(id)
    }
    fn refresh_lock(&self, id: &str) -> tokenstore::Result<tokenstore::RefreshLock<'_>> {
        let first = {
            let mut locked = self.locked.lock().unwrap();
            locked.push(id.to_owned());
            locked.len() == 1
        };
        if first {
            std::thread::sleep(self.other_holds);
            let mut other = OAuthToken::new()
                .with_id(id)
                .with_access_token("1000.access-from-the-other-process-S3CRET")
                .with_expiry_time(now_ms() + self.other_lifetime_ms);
            self.inner.save_token(&mut other)?;
        }
        self.inner.refresh_lock(id)
    }
}

#[test]
fn the_record_is_read_again_under_the_stores_refresh_lock() {
    let server = FakeZoho::start();
    let raced = Arc::new(RacedStore {
        inner: MemoryStore::new(),
        locked: std::sync::Mutex::new(Vec::new()),
        other_lifetime_ms: 3_600_000,
        other_holds: Duration::ZERO,
    });
    let store: Store = raced.clone();
    let record = saved(&store, USER, now_ms() - 1);
    let client = client(&store, &server);
    let token = client.access_token_for_user(USER).unwrap();
    assert_eq!(token.secret(), "1000.access-from-the-other-process-S3CRET");
    assert_eq!(
        server.refreshes(),
        0,
        "refreshed elsewhere while waiting for the lock"
    );
    assert_eq!(*raced.locked.lock().unwrap(), vec![record.id.unwrap()]);
}

#[test]
fn a_login_with_an_empty_field_is_refused_before_any_request() {
    let server = FakeZoho::start();
    let (_dir, store) = sled();
    let client = client(&store, &server);
    for login in [
        Login::new("", CLIENT_ID, CLIENT_SECRET, GRANT),
        Login::new(USER, "", CLIENT_SECRET, GRANT),
        Login::new(USER, CLIENT_ID, " ", GRANT),
        Login::new(USER, CLIENT_ID, CLIENT_SECRET, ""),
    ] {
        assert!(matches!(
            client.login(&login),
            Err(Error::InvalidToken { .. })
        ));
    }
    assert_eq!(server.requests(), 0);
    assert!(store.get_tokens().unwrap().is_empty());
}

#[test]
fn a_waiter_needing_a_longer_margin_than_its_flight_got_flies_again() {
    let server = FakeZoho::start();
    // Another process refreshes while holding the lock for 300 ms, and its
    // token lives 30 s: enough for the 5 s margin, not for 60 s.
    let raced = Arc::new(RacedStore {
        inner: MemoryStore::new(),
        locked: std::sync::Mutex::new(Vec::new()),
        other_lifetime_ms: 30_000,
        other_holds: Duration::from_millis(300),
    });
    let store: Store = raced.clone();
    saved(&store, USER, now_ms() - 1);
    let client = client(&store, &server);
    let query = OAuthToken::new().with_user_name(USER);
    let (short, long) = std::thread::scope(|s| {
        let short = s.spawn(|| client.access_token(&query).unwrap());
        std::thread::sleep(Duration::from_millis(100));
        let long = s.spawn(|| {
            client
                .access_token_valid_for(&query, Duration::from_secs(60))
                .unwrap()
        });
        (short.join().unwrap(), long.join().unwrap())
    });
    assert_eq!(short.secret(), "1000.access-from-the-other-process-S3CRET");
    assert_eq!(server.refreshes(), 1, "the 60 s caller refreshed once");
    assert!(long.expiry_time().unwrap() > now_ms() + 60_000);
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "waited in vain for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn refresh_ahead_returns_at_once_and_refreshes_once_behind() {
    let server = FakeZoho::start();
    server.set_delay(Duration::from_millis(200));
    let (_dir, store) = sled();
    let config = Config::default()
        .accounts_url(server.url())
        .refresh_ahead(Duration::from_secs(120));
    let client = Arc::new(OAuthClient::with_config(Arc::clone(&store), config).unwrap());
    let old = saved(&store, USER, now_ms() + 60_000);

    // 8 callers: the still-valid token at once, one refresh behind them.
    let tokens: Vec<AccessToken> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| client.access_token_for_user(USER).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(tokens
        .iter()
        .all(|t| Some(t.secret()) == old.access_token.as_deref()));
    wait_until("the background refresh", || {
        store
            .find_token_by_id(old.id.as_deref().unwrap())
            .unwrap()
            .unwrap()
            .access_token
            != old.access_token
    });
    let fresh = client.access_token_for_user(USER).unwrap();
    assert_ne!(Some(fresh.secret()), old.access_token.as_deref());
    assert!(fresh.expiry_time().unwrap() > now_ms() + 3_000_000);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.refreshes(), 1);
}

#[test]
fn a_failed_refresh_ahead_changes_nothing_and_is_not_retried_in_a_loop() {
    let server = FakeZoho::start();
    server.set_behaviour(Behaviour::RateLimit);
    let (_dir, store) = sled();
    let config = Config::default()
        .accounts_url(server.url())
        .refresh_ahead(Duration::from_secs(120));
    let client = OAuthClient::with_config(Arc::clone(&store), config).unwrap();
    let old = saved(&store, USER, now_ms() + 60_000);
    let before = sorted(&store);
    for _ in 0..20 {
        let token = client.access_token_for_user(USER).unwrap();
        assert_eq!(Some(token.secret()), old.access_token.as_deref());
        std::thread::sleep(Duration::from_millis(25));
    }
    wait_until("the one background attempt", || server.refreshes() >= 1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.refreshes(), 1, "backed off after the failure");
    assert_eq!(sorted(&store), before);
}
