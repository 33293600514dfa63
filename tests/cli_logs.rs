//! The log records of the `tokenstore` command with every level turned on
//! (`-vvv` and `RUST_LOG=trace`): a login, tokens, refreshes, a refused
//! refresh, a rate limit, an unreachable server, a lock wait, a take-over
//! and a revoke, on a plain and on an encrypted store. Every line of stderr
//! is scanned for every secret of the fixtures (plain and percent-encoded),
//! every record's level is checked against its target's ceiling, and the
//! records an operator expects are asserted present.

#[path = "support/fake_zoho.rs"]
mod fake_zoho;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fake_zoho::{Behaviour, FakeZoho};
use log::Level;
use tokenstore::logging::ceiling;
use tokenstore::{Key, SledOptions, SledStore, TokenStore};

const USER: &str = "ana@example.com";
const CLIENT_ID: &str = "1000.CLIENTID";
// Characters that percent-encoding changes, so that both forms are looked for.
const CLIENT_SECRET: &str = "client-secret/S3CRET+x=y";
const GRANT: &str = "1000.grant-S3CRET&z";

/// One log record: the lines env_logger writes, `[LEVEL target] message`.
struct Record {
    level: Level,
    target: String,
    message: String,
}

fn parse(line: &str) -> Option<Record> {
    let rest = line.strip_prefix('[')?;
    let (head, message) = rest.split_once("] ")?;
    let (level, target) = head.split_once(' ')?;
    Some(Record {
        level: level.trim().parse().ok()?,
        target: target.trim().to_owned(),
        message: message.to_owned(),
    })
}

/// Everything the commands wrote on stderr, line by line, with the records
/// among them.
#[derive(Default)]
struct Logs {
    commands: usize,
    lines: Vec<String>,
    records: Vec<Record>,
}

impl Logs {
    fn add(&mut self, output: &Output) {
        self.commands += 1;
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            if let Some(record) = parse(line) {
                assert!(
                    record.level <= ceiling(&record.target),
                    "a record past its target's ceiling: {line}"
                );
                assert!(
                    !record.message.contains(USER),
                    "a user name in full: {line}"
                );
                self.records.push(record);
            }
            self.lines.push(line.to_owned());
        }
    }

    /// The record at `level` whose message contains every one of `words`.
    #[track_caller]
    fn expect(&self, level: Level, target: &str, words: &[&str]) {
        let found = self.records.iter().any(|r| {
            r.level == level && r.target == target && words.iter().all(|w| r.message.contains(w))
        });
        assert!(
            found,
            "no {level} record of {target} with {words:?} among:\n{}",
            self.lines.join("\n")
        );
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
    server: FakeZoho,
    key: Option<String>,
    /// Every secret seen: the fixtures' and every token the store held.
    secrets: Vec<String>,
    logs: Logs,
}

impl Fixture {
    fn new(key: Option<String>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut secrets = vec![CLIENT_SECRET.to_owned(), GRANT.to_owned()];
        secrets.extend(key.clone());
        Fixture {
            db: dir.path().join("tokens"),
            _dir: dir,
            server: FakeZoho::start(),
            key,
            secrets,
            logs: Logs::default(),
        }
    }

    /// The command with every level on.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(assert_cmd::cargo::cargo_bin!("tokenstore"));
        command
            .env_remove("TOKENSTORE_DB")
            .env_remove("TOKENSTORE_KEY")
            .env("RUST_LOG", "trace")
            .env("TOKENSTORE_ACCOUNTS_URL", self.server.url())
            .arg("-vvv")
            .arg("--db")
            .arg(&self.db)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(key) = &self.key {
            command.env("TOKENSTORE_KEY", key);
        }
        command
    }

    /// Runs the command, keeps its stderr, notes the store's secrets.
    fn run(&mut self, args: &[&str], stdin: &str, succeeds: bool) -> Output {
        let mut child = self.command(args).spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        self.finish(args, output, succeeds)
    }

    fn finish(&mut self, args: &[&str], output: Output, succeeds: bool) -> Output {
        assert_eq!(
            output.status.success(),
            succeeds,
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.logs.add(&output);
        self.note_secrets();
        output
    }

    fn open(&self) -> SledStore {
        let mut options = SledOptions::default().wait_for_lock(Duration::from_secs(10));
        if let Some(key) = &self.key {
            options = options.encryption(Key::from_base64(key).unwrap());
        }
        SledStore::open_with(&self.db, options).unwrap()
    }

    fn note_secrets(&mut self) {
        if !self.db.exists() {
            return;
        }
        for token in self.open().get_tokens().unwrap() {
            for secret in [token.access_token, token.refresh_token, token.client_secret]
                .into_iter()
                .flatten()
            {
                if !self.secrets.contains(&secret) {
                    self.secrets.push(secret);
                }
            }
        }
    }

    fn login(&mut self) {
        let stdin = format!("{CLIENT_SECRET}\n{GRANT}\n");
        let args = ["login", "--user", USER, "--client-id", CLIENT_ID];
        self.run(
            &[&args[..], &["--client-secret", "-", "--grant-token", "-"]].concat(),
            &stdin,
            true,
        );
    }

    /// Scans every line for every secret, plain and percent-encoded (each
    /// record's level and user names were checked as it came). Returns
    /// (lines, records, forms of secrets looked for).
    fn scan(&self) -> (usize, usize, usize) {
        let mut forms: Vec<String> = Vec::new();
        for secret in &self.secrets {
            forms.push(secret.clone());
            forms.push(form_urlencoded::byte_serialize(secret.as_bytes()).collect());
        }
        forms.sort();
        forms.dedup();
        let mut found = Vec::new();
        for line in &self.logs.lines {
            for form in &forms {
                if line.contains(form.as_str()) {
                    found.push(line.clone());
                }
            }
        }
        assert!(found.is_empty(), "secrets in the logs: {found:#?}");
        if let Some(dump) = std::env::var_os("TOKENSTORE_LOG_DUMP") {
            std::fs::write(dump, self.logs.lines.join("\n")).unwrap();
        }
        (self.logs.lines.len(), self.logs.records.len(), forms.len())
    }
}

const OAUTH: &str = "tokenstore::oauth";
const STORE: &str = "tokenstore::store";
const SHARED: &str = "tokenstore::shared";

#[test]
fn every_level_on_shows_each_event_and_no_secret() {
    let mut f = Fixture::new(None);
    // Every refresh brings a new refresh token: more secrets to look for.
    f.server.set_rotate(true);
    f.login();
    f.logs.expect(
        Level::Info,
        OAUTH,
        &["login of a***@example.com at", "record 1"],
    );
    f.logs
        .expect(Level::Debug, STORE, &["opened the sled store"]);
    f.logs
        .expect(Level::Debug, STORE, &["closing the sled store"]);
    f.logs
        .expect(Level::Debug, STORE, &["closed the sled store"]);
    f.logs
        .expect(Level::Debug, SHARED, &["owns the shared store"]);

    f.run(&["token", "--user", USER], "", true);
    f.logs
        .expect(Level::Debug, STORE, &["warm-up of the store", "started"]);
    f.run(&["token", "--user", USER, "--min-valid", "7200"], "", true);
    // A command as short as `token` may close the store before its
    // warm-up ends (logged as stopped by the close): this one waits a
    // second for the accounts server, so the warm-up of one record ends
    // first.
    f.server.set_delay(Duration::from_secs(1));
    f.run(&["refresh", "--user", USER], "", true);
    f.server.set_delay(Duration::ZERO);
    f.logs.expect(
        Level::Debug,
        STORE,
        &["warm-up of the store", "done: 1 records cached"],
    );
    let url = f.server.url().to_owned();
    f.logs.expect(
        Level::Debug,
        OAUTH,
        &["refresh of record 1 at", &url, ": refreshed in"],
    );
    assert_eq!(f.server.refreshes(), 2);

    f.server.set_behaviour(Behaviour::Refuse);
    f.run(&["refresh", "--id", "1"], "", false);
    f.logs.expect(
        Level::Warn,
        OAUTH,
        &["refresh of record 1 at", "refused after"],
    );
    f.server.set_behaviour(Behaviour::RateLimit);
    f.run(&["refresh", "--id", "1"], "", false);
    f.logs.expect(
        Level::Warn,
        OAUTH,
        &["refresh of record 1", "rate limited after"],
    );
    f.server.set_behaviour(Behaviour::Normal);
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    f.run(
        &["refresh", "--id", "1", "--accounts-url", &dead],
        "",
        false,
    );
    f.logs.expect(
        Level::Warn,
        OAUTH,
        &["refresh of record 1", "unreachable after"],
    );

    // A process holding the store for itself: the command waits for it.
    let held = f.open();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(600));
        drop(held);
    });
    f.run(&["token", "--user", USER], "", true);
    release.join().unwrap();
    f.logs.expect(
        Level::Info,
        SHARED,
        &["waited", "for the shared store", "this process owns it"],
    );

    // Two refreshes at once: the second process waits for the first one's
    // refresh lock through it, then takes the store over when it exits.
    f.server.set_delay(Duration::from_millis(1500));
    let first = f.command(&["refresh", "--id", "1"]).spawn().unwrap();
    let started = Instant::now();
    while f.server.refreshes() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no refresh came"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = f.command(&["refresh", "--id", "1"]).spawn().unwrap();
    let first = first.wait_with_output().unwrap();
    f.finish(&["refresh (first)"], first, true);
    let second = second.wait_with_output().unwrap();
    f.finish(&["refresh (second)"], second, true);
    f.server.set_delay(Duration::ZERO);
    f.logs.expect(
        Level::Info,
        OAUTH,
        &["record 1: waited", "for its refresh lock", "took it"],
    );
    f.logs.expect(
        Level::Info,
        SHARED,
        &["went away; this process", "took over in"],
    );

    f.run(&["revoke", "1"], "", true);
    f.logs.expect(
        Level::Info,
        OAUTH,
        &["revoke of record 1 at", &url, "revoked and deleted"],
    );
    assert_eq!(f.server.revokes(), 1);
    assert_eq!(f.server.secrets_in_urls(), 0, "a secret in a request's URL");

    let (lines, records, forms) = f.scan();
    println!(
        "log scan (plain store): {} commands, {lines} lines ({records} records), {} secrets \
         in {forms} forms: 0 found",
        f.logs.commands,
        f.secrets.len()
    );
}

#[test]
fn an_encrypted_store_logs_neither_its_key_nor_its_tokens() {
    let key = Key::generate().unwrap().to_base64();
    let mut f = Fixture::new(Some(key));
    f.login();
    f.run(&["token", "--user", USER, "--min-valid", "7200"], "", true);
    f.logs.expect(
        Level::Debug,
        OAUTH,
        &["refresh of record 1 at", "refreshed in"],
    );
    f.run(&["revoke", "1"], "", true);
    f.logs.expect(
        Level::Info,
        OAUTH,
        &["revoke of record 1", "revoked and deleted"],
    );
    let (lines, records, forms) = f.scan();
    println!(
        "log scan (encrypted store): {} commands, {lines} lines ({records} records), {} \
         secrets in {forms} forms: 0 found",
        f.logs.commands,
        f.secrets.len()
    );
}

#[test]
fn quiet_by_default() {
    let mut f = Fixture::new(None);
    f.login();
    let output = Command::new(assert_cmd::cargo::cargo_bin!("tokenstore"))
        .env_remove("RUST_LOG")
        .env_remove("TOKENSTORE_KEY")
        .env("TOKENSTORE_ACCOUNTS_URL", f.server.url())
        .arg("--db")
        .arg(&f.db)
        .args(["refresh", "--user", USER])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // -v: INFO and up, no DEBUG.
    let output = Command::new(assert_cmd::cargo::cargo_bin!("tokenstore"))
        .env_remove("RUST_LOG")
        .env("TOKENSTORE_ACCOUNTS_URL", f.server.url())
        .args(["-v", "--db"])
        .arg(&f.db)
        .args(["revoke", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("[INFO  tokenstore::oauth] revoke of record 1"),
        "{stderr}"
    );
    assert!(!stderr.contains("DEBUG"), "{stderr}");
}
