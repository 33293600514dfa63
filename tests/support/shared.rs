//! What the multi-process tests of the shared embedded store (docs/SPEC.md
//! §8) have in common: a child process re-executed from the test binary (the
//! ignored test `child_process`, selected by [`CHILD_VAR`]) that opens a
//! store directory with `tokenstore::open` and then obeys one-line commands
//! on its stdin, answering on stdout with lines marked [`MARK`]; and the
//! parent's handle on such a child, which reads its answers with deadlines
//! (a hang fails the test instead of blocking it) and kills and reaps it
//! when dropped.
//!
//! The scripted child ([`run_scripted`]) understands, one per line:
//!
//! - `save USER ACCESS` → `saved ID` or `err VARIANT MESSAGE`
//! - `find USER` → `found ACCESS`, `none` or `err ...`
//! - `count` → `count N`
//! - `role` → `role owner|client OWNER_PID CLIENTS`
//! - `lock ID HOLD_MS` → `locked T_MS` once `refresh_lock(ID)` returned,
//!   then after HOLD_MS `unlocking T_MS` and the lock is released;
//! - `drop` → the store is dropped, `dropped`;
//! - end of stdin: the store is dropped and the child exits.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokenstore::{AnyStore, Error, Key, OAuthToken, OpenOptions, Role, TokenStore};

/// Selects the child's role.
pub const CHILD_VAR: &str = "TOKENSTORE_SHARED_CHILD";
/// The store directory the child opens.
pub const DIR_VAR: &str = "TOKENSTORE_SHARED_DIR";
/// The store's key (base64), if it is encrypted.
pub const KEY_VAR: &str = "TOKENSTORE_SHARED_KEY";
/// `OpenOptions::owner_timeout` in milliseconds, if set.
pub const TIMEOUT_VAR: &str = "TOKENSTORE_SHARED_TIMEOUT_MS";
/// Marks the child's protocol lines: libtest writes its own text around
/// them (its `test child_process ... ` has no line end).
pub const MARK: &str = "@@ ";

/// How long a child may take to start and open a store.
pub const READY: Duration = Duration::from_secs(20);
/// How long a command may take to be answered.
pub const ANSWER: Duration = Duration::from_secs(15);

// ---- the parent's side ----

/// A child process of the test, killed and reaped when dropped.
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    reader: Option<JoinHandle<()>>,
    /// Every protocol line read so far, for failure messages.
    pub seen: Vec<String>,
    exited: Option<ExitStatus>,
    name: String,
}

/// The test binary run as the child `role` on the store `dir`.
pub fn child_command(role: &str, dir: &Path) -> Command {
    child_command_of(&std::env::current_exe().unwrap(), role, dir)
}

/// `exe` (a copy of the test binary) run as the child `role` on `dir`.
pub fn child_command_of(exe: &Path, role: &str, dir: &Path) -> Command {
    let mut command = Command::new(exe);
    command
        .args([
            "--ignored",
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_VAR, role)
        .env(DIR_VAR, dir);
    command
}

impl Proc {
    /// Starts the child `role` on `dir` with extra environment `env`.
    pub fn spawn(role: &str, dir: &Path, env: &[(&str, String)]) -> Proc {
        let mut command = child_command(role, dir);
        for (name, value) in env {
            command.env(name, value);
        }
        Proc::start(command, role)
    }

    /// Starts `command` with piped stdin and stdout (stderr inherited, so
    /// that a child's panic shows).
    pub fn start(mut command: Command, name: &str) -> Proc {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("spawn a child process");
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find(MARK) {
                    if send.send(line[at + MARK.len()..].to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        Proc {
            stdin: child.stdin.take(),
            child,
            lines,
            reader: Some(reader),
            seen: Vec::new(),
            exited: None,
            name: name.to_owned(),
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next protocol line, or `None` if none comes within `timeout` (or
    /// the child's output ended).
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// The next protocol line that is available now, if any.
    pub fn try_line(&mut self) -> Option<String> {
        let line = self.lines.try_recv().ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// Reads protocol lines until one starts with `word` (a whole word)
    /// and returns the rest of it; panics after `timeout` or at the end of
    /// the child's output.
    pub fn expect(&mut self, word: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Some(line) => {
                    if line == word {
                        return String::new();
                    }
                    if let Some(rest) = line.strip_prefix(word).and_then(|r| r.strip_prefix(' ')) {
                        return rest.to_owned();
                    }
                }
                None => panic!(
                    "child {} (pid {}): no `{word}` line within {timeout:?}; lines so far: {:?}",
                    self.name,
                    self.pid(),
                    self.seen
                ),
            }
        }
    }

    /// Waits for the scripted child's `ready` line; returns its role
    /// (`owner` or `client`) and the owner's pid as it reported them.
    pub fn ready(&mut self) -> (String, u32) {
        let rest = self.expect("ready", READY);
        let mut words = rest.split(' ');
        let role = words.next().unwrap().to_owned();
        let owner: u32 = words.next().unwrap().parse().unwrap();
        (role, owner)
    }

    /// Sends one command line.
    pub fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("the child's stdin is open");
        writeln!(stdin, "{command}").expect("write to the child");
        stdin.flush().expect("flush to the child");
    }

    /// Sends a command and returns its answer line (the next protocol line).
    pub fn ask(&mut self, command: &str) -> String {
        self.send(command);
        match self.next_line(ANSWER) {
            Some(line) => line,
            None => panic!(
                "child {} (pid {}): no answer to `{command}` within {ANSWER:?}; lines so far: {:?}",
                self.name,
                self.pid(),
                self.seen
            ),
        }
    }

    /// Closes the child's stdin (the scripted child then drops its store and
    /// exits).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill touches no memory; the pid is our unreaped child's.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// Kills the child with SIGKILL, reaps it, and returns the protocol
    /// lines it printed that were not read yet.
    pub fn kill9(&mut self) -> Vec<String> {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = Some(self.child.wait().expect("reap the child"));
        }
        self.drain()
    }

    /// Every protocol line left, once the child's output has ended.
    pub fn drain(&mut self) -> Vec<String> {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let rest: Vec<String> = self.lines.try_iter().collect();
        self.seen.extend(rest.iter().cloned());
        rest
    }

    /// Waits up to `timeout` for the child to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exited.is_some() {
            return self.exited;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exited = Some(status);
                return self.exited;
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the child is still running.
    pub fn running(&mut self) -> bool {
        self.exited.is_none() && self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited.is_some() {
            return;
        }
        // A graceful end first (the scripted child drops its store at the end
        // of its stdin), then SIGKILL.
        self.stdin = None;
        if self.wait_exit(Duration::from_secs(3)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The role and owner a store reports (`info().sharing`), as `("owner" |
/// "client", owner_pid, clients)`.
pub fn sharing(store: &AnyStore) -> (&'static str, u32, usize) {
    let info = store.info().expect("info");
    let sharing = info
        .sharing
        .expect("an embedded store opened with tokenstore::open reports its sharing");
    (role_name(sharing.role), sharing.owner_pid, sharing.clients)
}

/// `owner` or `client`.
pub fn role_name(role: Role) -> &'static str {
    #[allow(unreachable_patterns)]
    match role {
        Role::Owner => "owner",
        Role::Client => "client",
        _ => "other",
    }
}

/// The name of an error's variant (`WrongKey`, `Unavailable`, ...).
pub fn variant(error: &Error) -> String {
    let debug = format!("{error:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A record for `user` holding `access`.
pub fn token(user: &str, access: &str) -> OAuthToken {
    OAuthToken::new()
        .with_user_name(user)
        .with_client_id("1000.CLIENT")
        .with_access_token(access)
}

/// The access token of `user`'s record, if it has one.
pub fn access_of(store: &dyn TokenStore, user: &str) -> Option<String> {
    store
        .find_token(&OAuthToken::new().with_user_name(user))
        .expect("find")
        .and_then(|t| t.access_token)
}

/// Sends `signal` to process `pid`.
pub fn signal_pid(pid: u32, signal: i32) -> bool {
    // SAFETY: kill touches no memory.
    unsafe { libc::kill(pid as libc::pid_t, signal) == 0 }
}

// ---- raw connections to the socket ----

/// The socket of the store at `dir`.
pub fn socket_of(dir: &Path) -> std::path::PathBuf {
    dir.join("tokenstore.sock")
}

/// The magic bytes that open the first frame each way.
pub const MAGIC: &[u8; 8] = b"TOKSTORE";

/// One frame: the little-endian length, then `payload`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// The wire protocol's version this build speaks (`wire::PROTOCOL_VERSION`).
pub const PROTOCOL: u32 = 2;

/// A first frame's header: the magic and `version`.
pub fn header(version: u32) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out
}

/// A client's hello of `version` without a key proof, as the owner of
/// versions 1 and 2 expects it: the header, then the client's pid and "no proof"
/// (bincode's varint encoding: pid 1, then `None`).
pub fn hello(version: u32) -> Vec<u8> {
    let mut payload = header(version);
    payload.extend_from_slice(&[1, 0]);
    frame(&payload)
}

/// What a raw connection saw.
#[derive(Debug)]
pub struct Seen {
    /// Every byte the owner sent.
    pub bytes: Vec<u8>,
    /// Whether the owner closed the connection (end of stream, or reset)
    /// before the deadline.
    pub closed: bool,
}

/// Reads from `stream` until the owner closes it or `timeout` passes.
pub fn read_until_closed(stream: &mut std::os::unix::net::UnixStream, timeout: Duration) -> Seen {
    let deadline = Instant::now() + timeout;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Seen {
                bytes,
                closed: false,
            };
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => {
                return Seen {
                    bytes,
                    closed: true,
                }
            }
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Seen {
                    bytes,
                    closed: false,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A reset is the owner closing too.
            Err(_) => {
                return Seen {
                    bytes,
                    closed: true,
                }
            }
        }
    }
}

/// The payload of the first whole frame in `bytes`, if there is one.
pub fn first_frame(bytes: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    bytes.get(4..4 + len)
}

// ---- the child's side ----

/// The options the child opens with, from its environment.
pub fn child_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    if let Ok(key) = std::env::var(KEY_VAR) {
        options = options.encryption(Key::from_base64(&key).expect("the key from the parent"));
    }
    if let Ok(ms) = std::env::var(TIMEOUT_VAR) {
        options = options.owner_timeout(Duration::from_millis(ms.parse().unwrap()));
    }
    options
}

/// Prints one protocol line and flushes it.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{MARK}{line}").unwrap();
    out.flush().unwrap();
}

fn error_line(error: &Error) -> String {
    format!("err {} {error}", variant(error))
}

/// The scripted child (see the module's doc): opens the store named by the
/// environment, says `ready ROLE OWNER_PID` (or `openerr VARIANT MESSAGE`
/// and returns), then obeys commands until its stdin ends.
pub fn run_scripted() {
    let dir = std::env::var(DIR_VAR).unwrap();
    let store = match tokenstore::open_with(&dir, child_options()) {
        Ok(store) => store,
        Err(e) => {
            say(&format!("openerr {} {e}", variant(&e)));
            return;
        }
    };
    let (role, owner, _) = sharing(&store);
    say(&format!("ready {role} {owner}"));
    let mut store = Some(store);
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut drop_it = false;
        let Some(live) = store.as_ref() else {
            say("err Dropped the store was dropped");
            continue;
        };
        match words.as_slice() {
            ["save", user, access] => {
                let mut t = token(user, access);
                match live.save_token(&mut t) {
                    Ok(()) => say(&format!("saved {}", t.id.unwrap())),
                    Err(e) => say(&error_line(&e)),
                }
            }
            ["find", user] => match live.find_token(&OAuthToken::new().with_user_name(*user)) {
                Ok(Some(t)) => say(&format!("found {}", t.access_token.unwrap_or_default())),
                Ok(None) => say("none"),
                Err(e) => say(&error_line(&e)),
            },
            ["count"] => match live.count() {
                Ok(n) => say(&format!("count {n}")),
                Err(e) => say(&error_line(&e)),
            },
            ["role"] => match live.info() {
                Ok(info) => match info.sharing {
                    Some(s) => say(&format!(
                        "role {} {} {}",
                        role_name(s.role),
                        s.owner_pid,
                        s.clients
                    )),
                    None => say("role none 0 0"),
                },
                Err(e) => say(&error_line(&e)),
            },
            ["lock", id, hold] => {
                let hold = Duration::from_millis(hold.parse().unwrap());
                match live.refresh_lock(id) {
                    Ok(guard) => {
                        say(&format!("locked {}", tokenstore::now_ms()));
                        std::thread::sleep(hold);
                        say(&format!("unlocking {}", tokenstore::now_ms()));
                        drop(guard);
                    }
                    Err(e) => say(&error_line(&e)),
                }
            }
            ["drop"] => drop_it = true,
            other => say(&format!("err Usage unknown command {other:?}")),
        }
        if drop_it {
            store = None;
            say("dropped");
        }
    }
}
