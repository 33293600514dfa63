//! `tokenstore login`, `token`, `refresh`, `revoke` as real processes
//! against a fake Zoho accounts server on 127.0.0.1: outputs scanned for
//! every secret, the store unchanged on every error, and 8 concurrent
//! processes on one expired token making one refresh request.

#[path = "support/fake_zoho.rs"]
mod fake_zoho;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use assert_cmd::cargo::cargo_bin_cmd;
use assert_cmd::Command;
use fake_zoho::{Behaviour, FakeZoho};
use tokenstore::{now_ms, OAuthToken, Options, SledStore, TokenStore};

const USER: &str = "ana@example.com";
const CLIENT_ID: &str = "1000.CLIENTID";
const CLIENT_SECRET: &str = "client-secret-S3CRET";
const GRANT: &str = "1000.grant-S3CRET";
const REFRESH: &str = "1000.refresh-S3CRET";
const ACCESS: &str = "1000.access-S3CRET";

struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
    server: FakeZoho,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("tokens");
        Fixture {
            _dir: dir,
            db,
            server: FakeZoho::start(),
        }
    }

    /// The command on this store and server, nothing from the environment.
    fn ts(&self) -> Command {
        let mut command = cargo_bin_cmd!("tokenstore");
        command
            .env_remove("TOKENSTORE_DB")
            .env_remove("TOKENSTORE_KEY")
            .env("TOKENSTORE_ACCOUNTS_URL", self.server.url())
            .arg("--db")
            .arg(&self.db);
        command
    }

    /// Opens the store, waiting for a moment: a child process another test
    /// is forking may hold a copy of the lock file's descriptor until it
    /// execs.
    fn open(&self) -> SledStore {
        let options = Options::default().wait_for_lock(Duration::from_secs(10));
        SledStore::open_with(&self.db, options).unwrap()
    }

    /// Saves one record whose access token expires at `expiry`.
    fn saved(&self, expiry: i64) -> OAuthToken {
        let store = self.open();
        let mut token = OAuthToken::new()
            .with_user_name(USER)
            .with_client_id(CLIENT_ID)
            .with_client_secret(CLIENT_SECRET)
            .with_refresh_token(REFRESH)
            .with_access_token(ACCESS)
            .with_expiry_time(expiry);
        store.save_token(&mut token).unwrap();
        token
    }

    fn records(&self) -> Vec<OAuthToken> {
        let store = self.open();
        let mut tokens = store.get_tokens().unwrap();
        tokens.sort_by(|a, b| a.id.cmp(&b.id));
        tokens
    }

    /// The fixture's secrets and every secret the store holds now.
    fn secrets(&self) -> Vec<String> {
        let mut all: Vec<String> = [CLIENT_SECRET, GRANT, REFRESH, ACCESS]
            .map(String::from)
            .to_vec();
        if self.db.exists() {
            for t in self.records() {
                all.extend(t.access_token);
                all.extend(t.refresh_token);
            }
        }
        all
    }
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_no_secret(shown: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !shown.contains(secret.as_str()),
            "a secret shows in: {shown}"
        );
    }
}

#[test]
fn login_token_refresh_revoke() {
    let f = Fixture::new();
    // Secrets from stdin; the store is created.
    let output = f
        .ts()
        .args(["login", "--user", USER, "--client-id", CLIENT_ID])
        .args(["--client-secret", "-", "--grant-token", "-"])
        .write_stdin(format!("{CLIENT_SECRET}\n{GRANT}\n"))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stdout.contains("logged in ana@example.com: record 1"),
        "{stdout}"
    );
    assert_eq!(f.server.logins(), 1);
    let record = f.records().pop().unwrap();
    assert_eq!(record.client_secret.as_deref(), Some(CLIENT_SECRET));
    let access = record.access_token.clone().unwrap();
    assert_no_secret(&format!("{stdout}{stderr}"), &f.secrets());

    // `token` prints the access token alone.
    let output = f.ts().args(["token", "--user", USER]).output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("{access}\n")
    );
    assert!(output.stderr.is_empty());
    let output = f
        .ts()
        .args(["token", "--id", "1", "--json"])
        .output()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["access_token"], access.as_str());
    assert_eq!(value["api_domain"], "https://www.zohoapis.com");
    assert!(value["expiry_time"].as_i64().unwrap() > now_ms());
    assert_eq!(f.server.refreshes(), 0);

    // `token --min-valid` longer than the token's life refreshes.
    let output = f
        .ts()
        .args(["token", "--user", USER, "--min-valid", "7200"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_ne!(String::from_utf8(output.stdout).unwrap().trim(), access);
    assert_eq!(f.server.refreshes(), 1);

    // `refresh` refreshes now and prints no secret.
    let output = f.ts().args(["refresh", "--user", USER]).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.starts_with("refreshed record 1"), "{stdout}");
    assert_eq!(f.server.refreshes(), 2);
    assert_no_secret(&format!("{stdout}{stderr}"), &f.secrets());

    // `revoke` revokes at the server, then deletes.
    let secrets = f.secrets();
    let output = f.ts().args(["revoke", "1"]).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("revoked"), "{stdout}");
    assert_eq!(f.server.revokes(), 1);
    assert_eq!(
        f.server.secrets_in_urls(),
        0,
        "the token travels in the body"
    );
    assert!(f.records().is_empty());
    assert_no_secret(&format!("{stdout}{stderr}"), &secrets);
}

#[test]
fn every_error_exits_non_zero_changes_nothing_and_shows_no_secret() {
    let cases: [(Behaviour, &str, i32); 5] = [
        (Behaviour::Refuse, "log the user in again", 1),
        (Behaviour::InvalidClient, "invalid_client", 1),
        (Behaviour::RateLimit, "try again in a few minutes", 1),
        (Behaviour::Malformed, "not a usable token response", 2),
        (Behaviour::Hang, "no answer within", 2),
    ];
    for (behaviour, says, code) in cases {
        let f = Fixture::new();
        f.saved(now_ms() - 1);
        f.server.set_behaviour(behaviour);
        let before = f.records();
        for args in [
            &["token", "--user", USER, "--timeout", "1"][..],
            &["refresh", "--id", "1", "--timeout", "1"],
            &["revoke", "1", "--timeout", "1"],
            &[
                "login",
                "--user",
                "bob@example.com",
                "--client-id",
                CLIENT_ID,
                "--client-secret",
                CLIENT_SECRET,
                "--grant-token",
                GRANT,
                "--timeout",
                "1",
            ],
        ] {
            let output = f.ts().args(args).output().unwrap();
            let (stdout, stderr) = text(&output);
            assert_eq!(
                output.status.code(),
                Some(code),
                "{behaviour:?} {args:?}: {stderr}"
            );
            assert!(stdout.is_empty(), "{stdout}");
            assert!(stderr.contains(says), "{behaviour:?} {args:?}: {stderr}");
            assert_no_secret(&stderr, &f.secrets());
            assert_eq!(
                f.records(),
                before,
                "{behaviour:?} {args:?} changed the store"
            );
        }
    }
}

#[test]
fn refusals_end_with_the_command_that_helps() {
    let f = Fixture::new();
    f.saved(now_ms() - 1);
    let login = "`tokenstore login --user USER --client-id ID --client-secret - --grant-token -`\n";
    let stderr = |args: &[&str]| {
        let output = f.ts().args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        text(&output).1
    };
    let missing = stderr(&["token", "--user", "nobody@example.com"]);
    assert!(
        missing.ends_with(&format!("\nhint: log the user in first: {login}")),
        "{missing}"
    );
    let missing = stderr(&["revoke", "7"]);
    assert!(
        missing.ends_with("\nhint: `tokenstore list` shows the records' ids\n"),
        "{missing}"
    );
    f.server.set_behaviour(Behaviour::Refuse);
    let refused = stderr(&["refresh", "--user", USER]);
    assert!(
        refused.ends_with(&format!(
            "\nhint: log the user in again with a new grant code: {login}"
        )),
        "{refused}"
    );
    let refused = stderr(&["revoke", "1"]);
    assert!(
        refused.ends_with("\nhint: the refresh token no longer works anyway: `tokenstore delete ID` removes the record\n"),
        "{refused}"
    );
    assert_eq!(f.records().len(), 1);
}

#[test]
fn missing_records_bad_flags_and_unreachable_servers() {
    let f = Fixture::new();
    f.saved(now_ms() - 1);
    let output = f
        .ts()
        .args(["token", "--user", "nobody@example.com"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).1.contains("no token record for user"));

    let output = f
        .ts()
        .env_remove("TOKENSTORE_ACCOUNTS_URL")
        .args(["token", "--user", USER, "--dc", "mars"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).1.contains("unknown data center"));

    let output = f
        .ts()
        .args([
            "token",
            "--user",
            USER,
            "--accounts-url",
            "https://u:p@host/",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));

    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let before = f.records();
    let output = f
        .ts()
        .args(["token", "--user", USER])
        .args(["--accounts-url", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("could not reach the accounts server"),
        "{stderr}"
    );
    assert!(stdout.is_empty());
    assert_no_secret(&stderr, &f.secrets());
    assert_eq!(f.records(), before);
    assert_eq!(f.server.requests(), 0);
}

#[test]
fn eight_concurrent_processes_on_an_expired_token_make_one_refresh() {
    let f = Fixture::new();
    f.saved(now_ms() - 1);
    f.server.set_delay(Duration::from_millis(200));
    let bin = assert_cmd::cargo::cargo_bin!("tokenstore");
    let children: Vec<_> = (0..8)
        .map(|_| {
            std::process::Command::new(bin)
                .env_remove("TOKENSTORE_KEY")
                .env("TOKENSTORE_ACCOUNTS_URL", f.server.url())
                .arg("--db")
                .arg(&f.db)
                .args(["token", "--user", USER])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    println!(
        "8 concurrent `tokenstore token` processes, 1 expired token: {} refresh request(s)",
        f.server.refreshes()
    );
    for output in &outputs {
        assert!(output.status.success(), "{}", text(output).1);
    }
    assert_eq!(f.server.refreshes(), 1);
    let printed: Vec<&[u8]> = outputs.iter().map(|o| o.stdout.as_slice()).collect();
    assert!(
        printed.iter().all(|p| *p == printed[0]),
        "all print the same token"
    );
    let stored = f.records().pop().unwrap();
    assert_eq!(
        String::from_utf8_lossy(printed[0]).trim(),
        stored.access_token.unwrap()
    );
}

#[test]
fn lock_timeout_zero_fails_fast_when_the_store_is_busy() {
    let f = Fixture::new();
    f.saved(now_ms() + 3_600_000);
    let held = f.open();
    let output = f
        .ts()
        .args(["--lock-timeout", "0", "token", "--user", USER])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).1.contains("locked by another process"));
    drop(held);
}

#[test]
fn accounts_url_beats_the_environment_which_beats_dc() {
    let f = Fixture::new();
    f.saved(now_ms() - 1);
    // The environment's URL wins over --dc: the request reaches the fake
    // server, never accounts.zoho.eu.
    let output = f
        .ts()
        .args(["refresh", "--user", USER, "--dc", "eu"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    assert_eq!(f.server.refreshes(), 1);

    // --accounts-url wins over the environment (which points nowhere here).
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let output = f
        .ts()
        .env("TOKENSTORE_ACCOUNTS_URL", &dead)
        .args(["refresh", "--user", USER, "--accounts-url", f.server.url()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    assert_eq!(f.server.refreshes(), 2);
}
