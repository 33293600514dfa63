//! The Zoho SDK's token lifecycle, played against an on-disk store.
//!
//! ```text
//! cargo run --release --example demo [-- DIRECTORY]
//! ```
//!
//! DIRECTORY defaults to `./demo-tokenstore`. Secrets are never printed:
//! tokens show through their redacting `Debug`.
//!
//! Login, refresh and revoke go through the real code path
//! ([`tokenstore::oauth::OAuthClient`], HTTP included) against a fake Zoho
//! accounts server started in this process on 127.0.0.1 (the one of
//! `cargo run --example fake_zoho`); no real Zoho host is contacted.

#[path = "../tests/support/fake_zoho.rs"]
mod fake_zoho;

use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use tokenstore::oauth::{Config, Login, OAuthClient};
use tokenstore::{now_ms, Durability, Error, OAuthToken, Options, SledStore, TokenStore};

/// How many other users' tokens the store holds while lookups are timed.
const BACKGROUND_USERS: usize = 10_000;
/// How many lookups of each kind are timed.
const TIMED_LOOKUPS: usize = 10_000;
const CLIENT_ID: &str = "1000.DEMOCLIENTID";
const CLIENT_SECRET: &str = "demo-client-secret";

/// A Zoho-shaped token value: `1000.` and 64 hex digits derived from `seed`.
fn fake_token(seed: &str) -> String {
    format!("1000.{}", blake3::hash(seed.as_bytes()).to_hex())
}

fn step(title: &str) {
    println!("\n== {title}");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some(CHILD_FLAG) {
        return child();
    }
    let path = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("demo-tokenstore"));
    println!(
        "tokenstore demo: the Zoho SDK's token lifecycle on {}",
        path.display()
    );

    step("1. Open the store and fill it with other users' tokens");
    let started = Instant::now();
    let ids = {
        // Bulk loading with background flushes, then one flush at the end.
        let options = Options::default().durability(Durability::BUFFERED);
        let store = SledStore::open_with(&path, options)?;
        let leftover = store.delete_tokens()?;
        if leftover > 0 {
            println!(
                "   removed {leftover} tokens left by an earlier run (they survived its exit)"
            );
        }
        let mut ids = Vec::with_capacity(BACKGROUND_USERS);
        for n in 0..BACKGROUND_USERS {
            let mut token = OAuthToken::new()
                .with_user_name(format!("user{n}@example.com"))
                .with_client_id(CLIENT_ID)
                .with_client_secret(CLIENT_SECRET)
                .with_refresh_token(fake_token(&format!("refresh{n}")))
                .with_access_token(fake_token(&format!("access{n}")))
                .with_expiry_time(now_ms() + 3_600_000)
                .with_api_domain("https://www.zohoapis.com");
            store.save_token(&mut token)?;
            ids.extend(token.id);
        }
        store.flush()?;
        ids
    };
    println!(
        "   saved {BACKGROUND_USERS} tokens in {:.2?} (buffered, flushed once)",
        started.elapsed()
    );
    let started = Instant::now();
    // As apps open it: shared with any other local process that opens it.
    let spec = path.to_str().ok_or("the demo's directory must be UTF-8")?;
    let store = Arc::new(tokenstore::open(spec)?);
    println!(
        "   reopened with durable writes in {:.2?}: {} tokens",
        started.elapsed(),
        store.count()?
    );

    let server = fake_zoho::FakeZoho::start();
    // Simulated delay of a real accounts server, so concurrent callers overlap.
    server.set_delay(Duration::from_millis(150));
    let client =
        OAuthClient::with_config(store.clone(), Config::default().accounts_url(server.url()))?;

    step("2. Login: exchange a grant code at the accounts server and save the result");
    println!("   fake Zoho accounts server on {}", server.url());
    let grant = fake_token("ana-grant");
    let login_query = OAuthToken::new()
        .with_client_id(CLIENT_ID)
        .with_client_secret(CLIENT_SECRET)
        .with_grant_token(grant.as_str());
    println!(
        "   find_token(grant token + client credentials) -> {:?}",
        store.find_token(&login_query)?.and_then(|t| t.id)
    );
    let started = Instant::now();
    let token = client.login(
        &Login::new("ana@example.com", CLIENT_ID, CLIENT_SECRET, grant.as_str())
            .redirect_url("https://example.com/oauth/callback"),
    )?;
    println!(
        "   OAuthClient::login (HTTP exchange + durable save_token) took {:.2?}; {} request(s) seen",
        started.elapsed(),
        server.logins()
    );
    let id = token.id.clone().expect("saved tokens have an id");
    println!("   stored as id {id}: {token:?}");

    step("3. Before every API call: find_token_by_id, timed");
    report_latency("find_token_by_id (any of 10,000)", |i| {
        store
            .find_token_by_id(&ids[i % ids.len()])
            .map(|t| t.is_some())
    })?;
    report_latency("find_token by user_name (rule 1)", |i| {
        let query =
            OAuthToken::new().with_user_name(format!("user{}@example.com", i % BACKGROUND_USERS));
        store.find_token(&query).map(|t| t.is_some())
    })?;
    report_latency("find_token by refresh token (rule 3)", |i| {
        let query = OAuthToken::new()
            .with_client_id(CLIENT_ID)
            .with_client_secret(CLIENT_SECRET)
            .with_refresh_token(fake_token(&format!("refresh{}", i % BACKGROUND_USERS)));
        store.find_token(&query).map(|t| t.is_some())
    })?;

    step("4. An hour later the access token has expired: 16 threads ask for it at once");
    let current = store.find_token_by_id(&id)?.expect("ana is stored");
    // Play the hour forward: the stored access token now expires in 1 s,
    // inside the SDK's 5-second margin.
    let mut an_hour_later = OAuthToken::new()
        .with_id(id.clone())
        .with_expiry_time(now_ms() + 1_000);
    an_hour_later.access_token = current.access_token.clone();
    store.save_token(&mut an_hour_later)?;
    let before = server.refreshes();
    let barrier = Arc::new(Barrier::new(16));
    let started = Instant::now();
    let tokens: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                let client = &client;
                let id = id.as_str();
                s.spawn(move || {
                    barrier.wait();
                    client.access_token_by_id(id)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect()
    });
    let tokens = tokens.into_iter().collect::<tokenstore::Result<Vec<_>>>()?;
    println!(
        "   16 callers, {} refresh request(s) to the accounts server, {:.2?}; all got the same token: {}",
        server.refreshes() - before,
        started.elapsed(),
        tokens.iter().all(|t| t == &tokens[0])
    );
    let refreshed = store.find_token_by_id(&id)?.expect("ana is stored");
    println!(
        "   saved before it was handed out: {}; expires {}; refresh token kept: {}",
        refreshed.access_token.as_deref() == Some(tokens[0].secret()),
        if refreshed.expiry_time > current.expiry_time {
            "later"
        } else {
            "NOT later"
        },
        refreshed.refresh_token == current.refresh_token
    );
    println!("   {:?}", tokens[0]);

    step("5. The server rotates the refresh token on the next refresh");
    server.set_rotate(true);
    let old_refresh = refreshed.refresh_token.clone().unwrap_or_default();
    client.refresh(&OAuthToken::new().with_id(id.as_str()))?;
    let new_refresh = store
        .find_token_by_id(&id)?
        .and_then(|t| t.refresh_token)
        .unwrap_or_default();
    let by_refresh = |refresh: &str| {
        OAuthToken::new()
            .with_client_id(CLIENT_ID)
            .with_client_secret(CLIENT_SECRET)
            .with_refresh_token(refresh)
    };
    println!(
        "   old refresh token finds {:?}; new one finds {:?}",
        store
            .find_token(&by_refresh(&old_refresh))?
            .and_then(|t| t.id),
        store
            .find_token(&by_refresh(&new_refresh))?
            .and_then(|t| t.id)
    );

    step("6. Bad input gets a clear error and changes nothing");
    let mut obrien = OAuthToken::new()
        .with_user_name("o'brien@example.com")
        .with_refresh_token(new_refresh.as_str());
    match store.save_token(&mut obrien) {
        Err(e) => println!("   O'Brien with Ana's refresh token: {e}"),
        Ok(()) => println!("   unexpected: the save went through"),
    }
    let mut injection = OAuthToken::new()
        .with_user_name("x' OR '1'='1")
        .with_access_token("'; DROP TABLE oauthtoken; --");
    store.save_token(&mut injection)?;
    println!(
        "   an SQL-injection string is just a user name: saved as id {}",
        injection.id.as_deref().unwrap_or("?")
    );
    let empty_user = OAuthToken::new()
        .with_user_name("")
        .with_client_id(CLIENT_ID);
    println!(
        "   find_token with an empty user name -> {:?} (never another user's token)",
        store.find_token(&empty_user)?.and_then(|t| t.id)
    );

    step("7. A second process uses the store while this one holds it");
    let (line, took) = run_child("use", &path, None)?;
    println!("   {line} ({took:.2?}, process start included)");
    // The engine alone, opened for one process only, is refused meanwhile.
    match SledStore::open(&path) {
        Err(Error::Locked { .. }) => {
            println!("   SledStore::open (one process only) meanwhile: Error::Locked")
        }
        Err(e) => println!("   unexpected error: {e}"),
        Ok(_) => println!("   unexpected: opened twice"),
    }

    step("8. Logout: revoke the refresh token at the accounts server, then delete");
    let revoke = OAuthToken::new().with_id(id.as_str());
    let found = store.find_token(&revoke)?;
    println!("   find_token(id only) -> {:?}", found.and_then(|t| t.id));
    println!(
        "   OAuthClient::revoke({id}) -> revoked at the server: {} ({} revoke request(s))",
        client.revoke(&id)?,
        server.revokes()
    );
    println!(
        "   find_token_by_id({id}) -> {:?}",
        store.find_token_by_id(&id)?.and_then(|t| t.id)
    );

    println!(
        "   the accounts server saw {} request(s) in all: {} login, {} refresh, {} revoke",
        server.requests(),
        server.logins(),
        server.refreshes(),
        server.revokes()
    );
    drop(client);
    drop(store);

    step("9. The owner is killed: another process takes over");
    take_over(&path)?;

    step("10. Close, reopen, check");
    let started = Instant::now();
    let store = SledStore::open(&path)?;
    let opened_in = started.elapsed();
    let report = store.check()?;
    println!("   reopened in {opened_in:.2?}; check: {report}");
    println!(
        "   {} tokens, {:.1} MiB on disk in {}",
        store.len(),
        store.size_on_disk()? as f64 / (1 << 20) as f64,
        path.display()
    );
    if !report.is_ok() {
        return Err("the integrity check found problems".into());
    }
    Ok(())
}

/// The argument that makes this binary one of the demo's other processes.
const CHILD_FLAG: &str = "--demo-child";

/// Starts this binary as another process on the store (`role`: `use`
/// finds and saves, then exits; `own` opens the store and holds it until
/// killed) and returns the line it prints once it did its part, and how
/// long that took.
fn run_child(
    role: &str,
    path: &std::path::Path,
    keep: Option<&mut Option<std::process::Child>>,
) -> Result<(String, Duration), Box<dyn std::error::Error>> {
    use std::io::BufRead;
    let started = Instant::now();
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg(CHILD_FLAG)
        .arg(role)
        .arg(path)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let took = started.elapsed();
    match keep {
        Some(slot) => *slot = Some(child),
        None => {
            let status = child.wait()?;
            if !status.success() {
                return Err(format!("the {role} process failed: {status}").into());
            }
        }
    }
    Ok((line.trim_end().to_owned(), took))
}

/// One of the demo's other processes (see [`run_child`]).
fn child() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(2);
    let role = args.next().ok_or("a role")?;
    let path = args.next().ok_or("a store directory")?;
    let store = tokenstore::open(&path)?;
    let sharing = store.info()?.sharing.ok_or("the store is shared")?;
    let me = std::process::id();
    match role.as_str() {
        "use" => {
            let ana = store
                .find_token(&OAuthToken::new().with_user_name("ana@example.com"))?
                .ok_or("ana is stored")?;
            let mut bob = OAuthToken::new()
                .with_user_name("bob@example.com")
                .with_refresh_token(fake_token("bob-refresh"));
            store.save_token(&mut bob)?;
            println!(
                "process {me} ({:?} of pid {}) found ana as record {} and saved bob as record {}",
                sharing.role,
                sharing.owner_pid,
                ana.id.as_deref().unwrap_or("?"),
                bob.id.as_deref().unwrap_or("?")
            );
        }
        "own" => {
            println!("process {me} opened the store: {:?}", sharing.role);
            // Held until the demo kills this process.
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        other => return Err(format!("unknown role {other}").into()),
    }
    Ok(())
}

/// Section 9: a process owns the store, this one is its client; the owner
/// is SIGKILLed and this process takes the store over.
fn take_over(path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut owner = None;
    let (line, _) = run_child("own", path, Some(&mut owner))?;
    println!("   {line}");
    let Some(mut owner) = owner else {
        return Err("the owner process was not kept".into());
    };
    let outcome = follow_and_take_over(path, &mut owner);
    // Reaped whatever happened (already killed when all went well).
    let _ = owner.kill();
    let _ = owner.wait();
    outcome
}

fn follow_and_take_over(
    path: &std::path::Path,
    owner: &mut std::process::Child,
) -> Result<(), Box<dyn std::error::Error>> {
    let spec = path.to_str().ok_or("UTF-8")?;
    let store = tokenstore::open(spec)?;
    let sharing = store.info()?.sharing.ok_or("shared")?;
    println!(
        "   this process ({}) opened it too: {:?} of pid {}",
        std::process::id(),
        sharing.role,
        sharing.owner_pid
    );
    let bob = OAuthToken::new().with_user_name("bob@example.com");
    store.find_token(&bob)?.ok_or("bob is stored")?;
    owner.kill()?; // SIGKILL: no chance to close anything
    let killed = Instant::now();
    owner.wait()?;
    let found = store.find_token(&bob)?;
    let took = killed.elapsed();
    let sharing = store.info()?.sharing.ok_or("shared")?;
    println!(
        "   owner SIGKILLed; the next find_token answered in {took:.2?} ({}): this process is now the {:?}",
        if found.is_some() { "bob found" } else { "bob MISSING" },
        sharing.role
    );
    if found.is_none() {
        return Err("an acknowledged save was lost".into());
    }
    Ok(())
}

/// Runs `lookup` TIMED_LOOKUPS times and prints p50/p99; every lookup must hit.
fn report_latency(
    what: &str,
    mut lookup: impl FnMut(usize) -> tokenstore::Result<bool>,
) -> tokenstore::Result<()> {
    let mut times: Vec<Duration> = Vec::with_capacity(TIMED_LOOKUPS);
    for i in 0..TIMED_LOOKUPS {
        let started = Instant::now();
        let hit = lookup(i)?;
        times.push(started.elapsed());
        assert!(hit, "lookup {i} of {what} found nothing");
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize];
    println!(
        "   {what:<38} p50 {:>8.2?}  p99 {:>8.2?}  ({TIMED_LOOKUPS} lookups)",
        at(0.50),
        at(0.99)
    );
    Ok(())
}
