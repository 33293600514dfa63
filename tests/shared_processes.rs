//! One embedded store shared by the local processes that open it
//! (docs/SPEC.md §8, issue 18): kill -9 cycles of four writers any of which
//! may be the owner, fork, another uid, keys through a client, a long path,
//! a stale socket, foreign and garbage frames, a stopped owner, take-over,
//! the exclusive open, the refresh lock across processes, and `tokenstore
//! serve`.
//!
//! The tests re-execute this binary as their other processes (the ignored
//! test `child_process`, selected by `TOKENSTORE_SHARED_CHILD`; see
//! tests/support/shared.rs for the scripted child and its commands).

#[path = "support/shared.rs"]
mod shared;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shared::{access_of, say, sharing, token, variant, Proc, DIR_VAR};
use tokenstore::{Error, Key, OpenOptions, SledStore, TokenStore};

/// Runs as a child process of the tests below; does nothing otherwise.
#[test]
#[ignore = "a child process of the multi-process tests, started by them"]
fn child_process() {
    let Ok(role) = std::env::var(shared::CHILD_VAR) else {
        return;
    };
    match role.as_str() {
        "owner" | "client" => shared::run_scripted(),
        "writer" => writer(),
        "fork" => fork_children(),
        "fork_orphan" => fork_orphan(),
        "intruder" => intruder(),
        "raw_hello" => raw_hello(),
        other => panic!("unknown child role {other}"),
    }
}

fn child_dir() -> String {
    std::env::var(DIR_VAR).unwrap()
}

/// A temporary directory and the store path inside it.
fn store_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("db");
    (dir, path)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// A scripted child that owns the store at `path`.
fn owner(path: &Path, env: &[(&str, String)]) -> Proc {
    let mut owner = Proc::spawn("owner", path, env);
    let (role, owner_pid) = owner.ready();
    assert_eq!(
        (role.as_str(), owner_pid),
        ("owner", owner.pid()),
        "the first process to open the store owns it"
    );
    owner
}

/// A scripted child that must be a client of `owner_pid`.
fn client(path: &Path, owner_pid: u32) -> Proc {
    let mut client = Proc::spawn("client", path, &[]);
    assert_eq!(client.ready(), ("client".to_owned(), owner_pid));
    client
}

/// Opens `path` in this process, which must become a client of `owner_pid`.
fn open_client(path: &Path, options: OpenOptions, owner_pid: u32) -> tokenstore::AnyStore {
    let store = tokenstore::open_with(path_str(path), options).expect("open as a client");
    assert_eq!(store.kind(), "sled");
    let (role, pid, _) = sharing(&store);
    assert_eq!((role, pid), ("client", owner_pid));
    store
}

/// The store's records as (user, access token) pairs, sorted.
fn contents(store: &dyn TokenStore) -> Vec<(String, String)> {
    let mut records: Vec<(String, String)> = store
        .get_tokens()
        .expect("get_tokens")
        .into_iter()
        .map(|t| {
            (
                t.user_name.unwrap_or_default(),
                t.access_token.unwrap_or_default(),
            )
        })
        .collect();
    records.sort();
    records
}

/// Kills process `pid` with SIGKILL when dropped (for grandchildren, which
/// the test cannot reap).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        shared::signal_pid(self.0, libc::SIGKILL);
    }
}

/// A child killed and reaped when dropped, unless it was reaped already
/// (then nothing is signalled: its pid may belong to another process by
/// now).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

// ---- kill -9 cycles ----

const WRITERS: usize = 4;
/// Each writer cycles through this many users of its own.
const USERS_PER_WRITER: u64 = 4;

fn writer_user(process: usize, n: u64) -> String {
    format!("w{process}-u{}@example.com", n % USERS_PER_WRITER)
}

/// A writer: opens the store (becoming its owner or a client), then saves
/// `1000.P.N` to user `N % 4` of its own for N = START, START+1, ...,
/// durably, printing `ack N` after each save returned `Ok`, its role and
/// owner when they change (`role ROLE OWNER_PID`), and every error
/// (`unavailable MAYBE_COMMITTED ...` or `error VARIANT ...`; it then
/// repeats the same save), until it is killed.
fn writer() {
    let dir = child_dir();
    let process: usize = std::env::var("W_PROC").unwrap().parse().unwrap();
    let start: u64 = std::env::var("W_START").unwrap().parse().unwrap();
    let opening = Instant::now();
    let store = loop {
        match tokenstore::open(&dir) {
            Ok(store) => break store,
            Err(e) => {
                say(&format!("error open {} {e}", variant(&e)));
                assert!(opening.elapsed() < Duration::from_secs(60), "cannot open");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let mut role: Option<(&str, u32)> = None;
    let mut n = start;
    loop {
        let mut t = token(&writer_user(process, n), &format!("1000.{process}.{n}"));
        match store.save_token(&mut t) {
            Ok(()) => {
                say(&format!("ack {n}"));
                if n == start || n.is_multiple_of(5) {
                    match store.info() {
                        Ok(info) => match info.sharing {
                            Some(s) => {
                                let now = (shared::role_name(s.role), s.owner_pid);
                                if role != Some(now) {
                                    say(&format!("role {} {}", now.0, now.1));
                                    role = Some(now);
                                }
                            }
                            None => say("error info: sharing is None"),
                        },
                        Err(e) => say(&format!("error info {} {e}", variant(&e))),
                    }
                }
                n += 1;
            }
            Err(Error::Unavailable {
                maybe_committed,
                detail,
                ..
            }) => {
                say(&format!("unavailable {maybe_committed} {detail}"));
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                say(&format!("error save {} {e}", variant(&e)));
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A small xorshift generator: reproducible choices from a printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the parent learns from the writers.
#[derive(Default)]
struct Cycles {
    /// The last acknowledged N of each writer (any incarnation).
    last_ack: [Option<u64>; WRITERS],
    /// The last acknowledged N of each writer's user.
    user_ack: HashMap<(usize, u64), u64>,
    acks: u64,
    /// The latest `role` line of each writer's running incarnation.
    roles: [Option<(String, u32)>; WRITERS],
    maybe_committed: u64,
    /// Errors other than `Unavailable { maybe_committed: true }`.
    errors: Vec<String>,
    last_progress: Option<Instant>,
    path: PathBuf,
}

impl Cycles {
    fn line(&mut self, process: usize, line: &str) {
        let words: Vec<&str> = line.splitn(3, ' ').collect();
        match words[0] {
            "ack" => {
                let n: u64 = words[1].parse().unwrap();
                assert!(
                    self.last_ack[process].is_none_or(|last| n > last),
                    "writer {process} acknowledged {n} after {:?}",
                    self.last_ack[process]
                );
                self.last_ack[process] = Some(n);
                self.user_ack.insert((process, n % USERS_PER_WRITER), n);
                self.acks += 1;
                self.last_progress = Some(Instant::now());
            }
            "role" => {
                self.roles[process] = Some((words[1].to_owned(), words[2].parse().unwrap()));
            }
            "unavailable" if words[1] == "true" => self.maybe_committed += 1,
            _ => self.errors.push(format!("writer {process}: {line}")),
        }
    }

    fn pump(&mut self, procs: &mut [Proc], for_at_least: Duration) {
        let until = Instant::now() + for_at_least;
        loop {
            let mut any = false;
            for (p, proc) in procs.iter_mut().enumerate() {
                while let Some(line) = proc.try_line() {
                    self.line(p, &line);
                    any = true;
                }
            }
            if Instant::now() >= until {
                break;
            }
            if !any {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // A writer that ended by itself (a panic, an exit) is an error; it is
        // restarted like a killed one.
        for (p, proc) in procs.iter_mut().enumerate() {
            if !proc.running() {
                for line in proc.drain() {
                    self.line(p, &line);
                }
                self.errors
                    .push(format!("writer {p} (pid {}) ended by itself", proc.pid()));
                self.roles[p] = None;
                let start = self.last_ack[p].map_or(0, |n| n + 1);
                *proc = spawn_writer(&self.path, p, start);
            }
        }
        let stalled = self.last_progress.map_or(Duration::ZERO, |at| at.elapsed());
        assert!(
            stalled < Duration::from_secs(20),
            "no writer acknowledged a save for {stalled:?}; errors: {:?}",
            self.errors
        );
    }
}

fn spawn_writer(path: &Path, process: usize, start: u64) -> Proc {
    Proc::spawn(
        "writer",
        path,
        &[
            ("W_PROC", process.to_string()),
            ("W_START", start.to_string()),
        ],
    )
}

fn kill_cycles(cycles: usize) {
    let (_dir, path) = store_dir();
    let seed = std::env::var("TOKENSTORE_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| tokenstore::now_ms() as u64 | 1);
    eprintln!("kill cycles: {cycles}, seed {seed} (TOKENSTORE_KILL_SEED)");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut state = Cycles {
        last_progress: Some(Instant::now()),
        path: path.clone(),
        ..Cycles::default()
    };
    let mut procs: Vec<Proc> = (0..WRITERS).map(|p| spawn_writer(&path, p, 0)).collect();
    let mut owner_kills = 0;
    for _ in 0..cycles {
        state.pump(&mut procs, Duration::from_millis(150 + rng.below(200)));
        let victim = rng.below(WRITERS as u64) as usize;
        let pid = procs[victim].pid();
        if state.roles.iter().flatten().any(|(_, owner)| *owner == pid) {
            owner_kills += 1;
        }
        for line in procs[victim].kill9() {
            state.line(victim, &line);
        }
        state.roles[victim] = None;
        let start = state.last_ack[victim].map_or(0, |n| n + 1);
        procs[victim] = spawn_writer(&path, victim, start);
    }

    // Every writer recovers: ten more acknowledged saves each.
    let targets: Vec<u64> = state
        .last_ack
        .iter()
        .map(|a| a.map_or(10, |n| n + 10))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (0..WRITERS).any(|p| state.last_ack[p].is_none_or(|n| n < targets[p])) {
        assert!(
            Instant::now() < deadline,
            "the writers did not all recover: acked {:?}, wanted {targets:?}; errors: {:?}",
            state.last_ack,
            state.errors
        );
        state.pump(&mut procs, Duration::from_millis(20));
    }
    // Exactly one owner, and every client follows it.
    let pids: Vec<u32> = procs.iter().map(Proc::pid).collect();
    let roles: Vec<(String, u32)> = state
        .roles
        .iter()
        .map(|r| r.clone().expect("every writer reported its role"))
        .collect();
    let owners: Vec<usize> = (0..WRITERS).filter(|p| roles[*p].0 == "owner").collect();
    assert_eq!(
        owners.len(),
        1,
        "exactly one owner: {roles:?} (pids {pids:?})"
    );
    for (p, (_, owner_pid)) in roles.iter().enumerate() {
        assert_eq!(
            *owner_pid, pids[owners[0]],
            "writer {p} follows the owner: {roles:?}"
        );
    }
    for (p, proc) in procs.iter_mut().enumerate() {
        for line in proc.kill9() {
            state.line(p, &line);
        }
    }
    drop(procs);

    let store = tokenstore::open(path_str(&path)).expect("open after the cycles");
    assert_eq!(sharing(&store).0, "owner");
    let report = store.check().expect("check");
    assert!(report.is_ok(), "{report}");
    let records = contents(&store);
    let mut lost = Vec::new();
    let mut users = 0;
    for (user, access) in &records {
        let (process, k) = parse_user(user);
        let n: u64 = access
            .strip_prefix(&format!("1000.{process}."))
            .unwrap_or_else(|| panic!("{user} holds {access}"))
            .parse()
            .unwrap();
        assert_eq!(n % USERS_PER_WRITER, k, "{user} holds {access}");
        let attempted = state.last_ack[process].map_or(0, |n| n + 1);
        assert!(
            n <= attempted,
            "{user} holds {access}, never saved (last ack {attempted})"
        );
        if let Some(acked) = state.user_ack.get(&(process, k)) {
            if n < *acked {
                lost.push(format!("{user}: {access}, acknowledged {acked}"));
            }
        }
        users += 1;
    }
    for ((process, k), acked) in &state.user_ack {
        let user = format!("w{process}-u{k}@example.com");
        if !records.iter().any(|(u, _)| *u == user) {
            lost.push(format!("{user}: missing, acknowledged {acked}"));
        }
    }
    eprintln!(
        "FIGURES kill cycles: {cycles} cycles in {:.1?}, {owner_kills} of the owner, {} \
         acknowledged saves, {} maybe-committed answers, {users} records, {} lost, {} other \
         errors",
        started.elapsed(),
        state.acks,
        state.maybe_committed,
        lost.len(),
        state.errors.len()
    );
    assert!(lost.is_empty(), "acknowledged saves lost: {lost:?}");
    assert!(state.errors.is_empty(), "errors: {:?}", state.errors);
    assert!(state.acks >= cycles as u64, "too few saves: {}", state.acks);
    if cycles >= 40 {
        assert!(owner_kills > 0, "no cycle killed the owner");
    }
}

fn parse_user(user: &str) -> (usize, u64) {
    let rest = user.strip_prefix('w').unwrap();
    let (process, rest) = rest.split_once("-u").unwrap();
    let k = rest.strip_suffix("@example.com").unwrap();
    (process.parse().unwrap(), k.parse().unwrap())
}

#[test]
fn kill_9_cycles_lose_no_acknowledged_save() {
    let cycles = std::env::var("TOKENSTORE_KILL_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    kill_cycles(cycles);
}

#[test]
#[ignore = "1,000 kill cycles take several minutes: cargo test --test shared_processes -- --ignored kill_9_cycles_1000"]
fn kill_9_cycles_1000() {
    kill_cycles(1000);
}

// ---- fork ----

const FORKED: usize = 3;

/// Waits for process `pid` (a child of this one) up to `timeout`; its exit
/// code, or 100 + the signal that ended it, or -1 if it had to be killed.
fn wait_pid(pid: libc::pid_t, timeout: Duration) -> i32 {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only `status`.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            return if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                100 + libc::WTERMSIG(status)
            };
        }
        if Instant::now() >= deadline {
            // SAFETY: as above; the child is ours.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return -1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// In a forked child: uses the store its parent opened; the exit code says
/// what failed (0: nothing).
fn in_forked_child(store: &tokenstore::AnyStore, parent: u32, n: usize) -> i32 {
    match store.find_token(&tokenstore::OAuthToken::new().with_user_name("parent@example.com")) {
        Ok(Some(t)) if t.access_token.as_deref() == Some("1000.parent") => {}
        other => {
            eprintln!("forked child {n}: find gave {other:?}");
            return 1;
        }
    }
    match store.info().map(|info| info.sharing) {
        Ok(Some(s)) if shared::role_name(s.role) == "client" && s.owner_pid == parent => {}
        other => {
            eprintln!("forked child {n}: sharing {other:?}");
            return 2;
        }
    }
    let mut t = token(&format!("child{n}@example.com"), &format!("1000.child{n}"));
    if let Err(e) = store.save_token(&mut t) {
        eprintln!("forked child {n}: save gave {e:?}");
        return 3;
    }
    0
}

/// Opens the store, saves, forks three children that use it (find, save)
/// at once, and reports their exit codes and what it sees of their saves.
fn fork_children() {
    let store = tokenstore::open(&child_dir()).unwrap();
    say(&format!("role {}", sharing(&store).0));
    store
        .save_token(&mut token("parent@example.com", "1000.parent"))
        .unwrap();
    let parent = std::process::id();
    let mut children = Vec::new();
    for n in 0..FORKED {
        // SAFETY: the child only uses the store and then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                in_forked_child(&store, parent, n)
            }))
            .unwrap_or(90);
            // SAFETY: ends the child without running the parent's
            // destructors or atexit handlers.
            unsafe { libc::_exit(code) }
        }
        children.push(pid);
    }
    for (n, pid) in children.into_iter().enumerate() {
        say(&format!(
            "child {n} {}",
            wait_pid(pid, Duration::from_secs(30))
        ));
    }
    for n in 0..FORKED {
        let seen = access_of(&store, &format!("child{n}@example.com"));
        say(&format!(
            "sees {n} {}",
            seen.unwrap_or_else(|| "none".into())
        ));
    }
    let (role, owner_pid, _) = sharing(&store);
    say(&format!("after {role} {owner_pid}"));
}

#[test]
fn forked_children_use_the_store_through_the_owner() {
    let (_dir, path) = store_dir();
    let mut forker = Proc::spawn("fork", &path, &[]);
    assert_eq!(forker.expect("role", shared::READY), "owner");
    for n in 0..FORKED {
        assert_eq!(
            forker.expect("child", Duration::from_secs(40)),
            format!("{n} 0"),
            "forked child {n}'s exit code (1: find, 2: role, 3: save, 90: panic, -1: hung)"
        );
    }
    for n in 0..FORKED {
        assert_eq!(
            forker.expect("sees", shared::ANSWER),
            format!("{n} 1000.child{n}")
        );
    }
    assert_eq!(
        forker.expect("after", shared::ANSWER),
        format!("owner {}", forker.pid())
    );
    assert!(forker
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    let store = tokenstore::open(path_str(&path)).unwrap();
    assert_eq!(contents(&store).len(), 1 + FORKED);
}

/// Opens the store, saves, forks, and exits at once (without closing the
/// store), leaving the child: it waits until it is an orphan, then uses the
/// store (which it must take over: its inherited descriptors must not keep
/// the dead parent's lock), says `orphan ROLE PID OWNER_PID` (or `orphan
/// failed ...`), and stays until its stdin ends.
fn fork_orphan() {
    let options = OpenOptions::new().owner_timeout(Duration::from_secs(2));
    let store = tokenstore::open_with(&child_dir(), options).unwrap();
    store
        .save_token(&mut token("parent@example.com", "1000.parent"))
        .unwrap();
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: both sides end with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid > 0 {
        say(&format!("forked {pid}"));
        // SAFETY: the owner vanishes without closing anything.
        unsafe { libc::_exit(0) }
    }
    let waiting = Instant::now();
    // SAFETY: getppid cannot fail.
    while unsafe { libc::getppid() } == parent {
        if waiting.elapsed() > Duration::from_secs(20) {
            say("orphan failed the parent did not exit");
            unsafe { libc::_exit(1) }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let query = tokenstore::OAuthToken::new().with_user_name("parent@example.com");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Nobody serves the store, and a fork's child of its owner cannot
        // run the engine: a clear error, within the owner time-out.
        let started = Instant::now();
        match store.find_token(&query) {
            Err(e @ tokenstore::Error::Unavailable { .. }) => say(&format!(
                "orphan refused {} ms {e}",
                started.elapsed().as_millis()
            )),
            other => return Err(format!("expected Unavailable, got {other:?}")),
        }
        // Once a process started anew owns the store, the orphan follows it.
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut line)
            .map_err(|e| e.to_string())?;
        let found = store
            .find_token(&query)
            .map_err(|e| format!("find: {e:?}"))?
            .and_then(|t| t.access_token);
        if found.as_deref() != Some("1000.parent") {
            return Err(format!("find: {found:?}"));
        }
        store
            .save_token(&mut token("orphan@example.com", "1000.orphan"))
            .map_err(|e| format!("save: {e:?}"))?;
        let info = store.info().map_err(|e| format!("info: {e:?}"))?;
        let s = info.sharing.ok_or("no sharing")?;
        Ok::<_, String>(format!(
            "{} {} {}",
            shared::role_name(s.role),
            std::process::id(),
            s.owner_pid
        ))
    }));
    match outcome {
        Ok(Ok(line)) => say(&format!("orphan {line}")),
        Ok(Err(why)) => say(&format!("orphan failed {why}")),
        Err(_) => say("orphan failed a panic"),
    }
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    unsafe { libc::_exit(0) }
}

/// A fork's child of the owner outlives it: it cannot take the store over
/// (the engine's IO threads do not survive a fork, docs/SPEC.md §8), says
/// so within its owner time-out, and follows the process started anew that
/// does; nothing the parent acknowledged is lost.
#[test]
fn a_forked_child_whose_owner_died_says_so_and_follows_a_new_owner() {
    let (_dir, path) = store_dir();
    let mut forker = Proc::spawn("fork_orphan", &path, &[]);
    let orphan: u32 = forker.expect("forked", shared::READY).parse().unwrap();
    let _guard = KillOnDrop(orphan);
    assert!(forker.wait_exit(Duration::from_secs(10)).is_some());
    let refused = forker.expect("orphan", Duration::from_secs(30));
    assert!(refused.starts_with("refused"), "{refused}");
    assert!(refused.contains("fork"), "{refused}");
    let waited: u64 = refused.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(waited < 10_000, "bounded by the owner time-out: {refused}");

    // A process started anew takes the store over (the orphan keeps no
    // lock of its parent's), and the orphan becomes its client.
    let store = tokenstore::open(path.to_str().unwrap()).unwrap();
    assert_eq!(shared::sharing(&store).0, "owner");
    forker.send("go");
    let outcome = forker.expect("orphan", Duration::from_secs(30));
    assert_eq!(
        outcome,
        format!("client {orphan} {}", std::process::id()),
        "the orphan follows the new owner"
    );
    assert_eq!(
        access_of(&store, "parent@example.com").as_deref(),
        Some("1000.parent")
    );
    assert_eq!(
        access_of(&store, "orphan@example.com").as_deref(),
        Some("1000.orphan")
    );
}

// ---- another uid ----

/// Opens the store (as whoever this process runs as) and tries to read and
/// write it, saying what happened.
fn intruder() {
    let options = OpenOptions::new().owner_timeout(Duration::from_secs(3));
    match tokenstore::open_with(&child_dir(), options) {
        Err(e) => say(&format!("openerr {} {e}", variant(&e))),
        Ok(store) => {
            say("opened");
            match store.find_token(&tokenstore::OAuthToken::new().with_user_name("ana@example.com"))
            {
                Ok(found) => say(&format!("found {found:?}")),
                Err(e) => say(&format!("finderr {} {e}", variant(&e))),
            }
            match store.save_token(&mut token("intruder@example.com", "1000.intruder")) {
                Ok(()) => say("saved"),
                Err(e) => say(&format!("saveerr {} {e}", variant(&e))),
            }
        }
    }
    say("done");
}

/// Connects to the socket, says hello (this build's version, no key), and reports
/// whether the owner closed the connection within 3 s (`raw closed ...`)
/// or kept it open (`raw open ...`), and whether its first frame was a
/// greeting of this build's version.
fn raw_hello() {
    let socket = shared::socket_of(Path::new(&child_dir()));
    let mut stream = match UnixStream::connect(&socket) {
        Ok(stream) => stream,
        Err(e) => {
            say(&format!("raw connecterr {e}"));
            return;
        }
    };
    let _ = stream.write_all(&shared::hello(shared::PROTOCOL));
    let seen = shared::read_until_closed(&mut stream, Duration::from_secs(3));
    let greeted = shared::first_frame(&seen.bytes)
        .is_some_and(|f| f.starts_with(&shared::header(shared::PROTOCOL)));
    say(&format!(
        "raw {} greeted={greeted} bytes={}",
        if seen.closed { "closed" } else { "open" },
        seen.bytes.len()
    ));
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Opens every directory under `dir` (and `dir`) to everyone, and every
/// file (sockets included) to reading and writing by everyone.
fn open_to_everyone(dir: &Path) {
    chmod(dir, 0o777);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            open_to_everyone(&path);
        } else {
            chmod(&path, 0o777);
        }
    }
}

#[test]
fn another_uid_is_refused() {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let runuser = Path::new("/usr/sbin/runuser").exists() || Path::new("/sbin/runuser").exists();
    let nobody = std::process::Command::new("id")
        .args(["-u", "nobody"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !(root && runuser && nobody) {
        eprintln!("SKIPPED another_uid_is_refused: needs root, runuser and a `nobody` user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let path = dir.path().join("db");
    // A copy of this binary that `nobody` may run.
    let exe = dir.path().join("test-binary");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    chmod(&exe, 0o755);

    let owner = owner(&path, &[]);
    let store = open_client(&path, OpenOptions::new(), owner.pid());
    store
        .save_token(&mut token("ana@example.com", "1000.ana"))
        .unwrap();
    let before = contents(&store);
    let as_nobody = |role: &str| {
        let mut command = std::process::Command::new("runuser");
        command.args(["-u", "nobody", "--"]).arg(&exe);
        let inner = shared::child_command_of(&exe, role, &path);
        command.args(inner.get_args());
        for (name, value) in inner.get_envs() {
            command.env(name, value.unwrap());
        }
        Proc::start(command, &format!("{role} as nobody"))
    };
    let mut outcomes = Vec::new();

    // As created: the store directory is its owner's alone.
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the store directory is owner-only");
    let mut intruder = as_nobody("intruder");
    intruder.expect("done", Duration::from_secs(30));
    outcomes.push(format!("owner-only directory: {:?}", intruder.seen));
    assert!(
        intruder.seen[0].starts_with("openerr "),
        "a process of another uid cannot open the store: {:?}",
        intruder.seen
    );

    // Every permission opened: only the owner's check of the peer's uid
    // (SO_PEERCRED) stands between `nobody` and the store.
    open_to_everyone(&path);
    let mut raw = as_nobody("raw_hello");
    let seen = raw.expect("raw", Duration::from_secs(30));
    outcomes.push(format!("raw hello as nobody: {seen}"));
    assert!(
        seen.starts_with("closed greeted=true"),
        "the owner refuses and disconnects a process of another uid: {seen}"
    );
    // The same hello from this uid is served (the check is about the uid).
    let mut same = Proc::start(
        shared::child_command_of(&exe, "raw_hello", &path),
        "raw_hello",
    );
    let seen = same.expect("raw", Duration::from_secs(30));
    assert!(
        seen.starts_with("open greeted=true"),
        "the same hello from the owner's uid: {seen}"
    );
    let mut intruder = as_nobody("intruder");
    intruder.expect("done", Duration::from_secs(30));
    outcomes.push(format!("every permission opened: {:?}", intruder.seen));
    let first = &intruder.seen[0];
    assert!(
        first.starts_with("openerr ") && first.len() > "openerr X ".len(),
        "a process of another uid gets a clear error: {:?}",
        intruder.seen
    );
    assert!(!intruder
        .seen
        .iter()
        .any(|l| l == "saved" || l.starts_with("found")));
    eprintln!("another uid: {outcomes:#?}");

    // The owner still serves, its socket untouched, the store unchanged.
    use std::os::unix::fs::MetadataExt;
    let socket = std::fs::metadata(shared::socket_of(&path)).unwrap();
    assert_eq!(socket.uid(), 0, "the socket is still the owner's");
    assert_eq!(contents(&store), before);
    let (role, owner_pid, _) = sharing(&store);
    assert_eq!((role, owner_pid), ("client", owner.pid()));
    let mut owner = owner;
    assert_eq!(
        owner.ask("role"),
        format!("role owner {} 1", owner.pid()),
        "the owner counts one client: this process, not the refused ones"
    );
    store
        .save_token(&mut token("bob@example.com", "1000.bob"))
        .unwrap();
    assert_eq!(
        access_of(&store, "bob@example.com").as_deref(),
        Some("1000.bob")
    );
}

// ---- keys through a client ----

#[test]
fn a_client_needs_the_owners_key() {
    let (_dir, path) = store_dir();
    let key = Key::generate().unwrap();
    let owner = owner(&path, &[(shared::KEY_VAR, key.to_base64())]);
    let open = |options: OpenOptions| tokenstore::open_with(path_str(&path), options);

    let wrong = open(OpenOptions::new().encryption(Key::generate().unwrap()));
    assert!(
        matches!(wrong, Err(Error::WrongKey { .. })),
        "wrong key: {wrong:?}"
    );
    let none = open(OpenOptions::new());
    assert!(
        matches!(none, Err(Error::KeyRequired { .. })),
        "no key: {none:?}"
    );
    for result in [&wrong, &none] {
        let text = result.as_ref().unwrap_err().to_string();
        assert!(!text.contains(&key.to_base64()), "{text}");
    }

    let store = open_client(
        &path,
        OpenOptions::new().encryption(key.clone()),
        owner.pid(),
    );
    assert!(store.info().unwrap().encrypted);
    store
        .save_token(&mut token("ana@example.com", "1000.ana"))
        .unwrap();
    assert_eq!(
        access_of(&store, "ana@example.com").as_deref(),
        Some("1000.ana")
    );
    drop(store);
    drop(owner);

    // A key for a plain store.
    let (_plain_dir, plain) = store_dir();
    let owner = self::owner(&plain, &[]);
    let keyed = tokenstore::open_with(path_str(&plain), OpenOptions::new().encryption(key));
    assert!(
        matches!(keyed, Err(Error::NotEncrypted { .. })),
        "a key for a plain store: {keyed:?}"
    );
    let store = open_client(&plain, OpenOptions::new(), owner.pid());
    assert_eq!(store.count().unwrap(), 0);
}

// ---- a long path ----

#[test]
fn a_store_path_too_long_for_a_socket_address_is_shared() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join("a".repeat(60))
        .join("b".repeat(60))
        .join("db");
    assert!(path.as_os_str().len() > 120);
    let mut owner = owner(&path, &[]);
    let store = open_client(&path, OpenOptions::new(), owner.pid());
    store
        .save_token(&mut token("ana@example.com", "1000.ana"))
        .unwrap();
    assert_eq!(owner.ask("find ana@example.com"), "found 1000.ana");
    // A take-over binds the long path again, and a new client follows.
    owner.kill9();
    assert_eq!(
        access_of(&store, "ana@example.com").as_deref(),
        Some("1000.ana")
    );
    assert_eq!(sharing(&store).0, "owner");
    let mut other = client(&path, std::process::id());
    assert_eq!(other.ask("find ana@example.com"), "found 1000.ana");
}

// ---- a stale socket ----

#[test]
fn a_stale_socket_is_replaced_by_the_next_owner() {
    let (_dir, path) = store_dir();
    let mut first = owner(&path, &[]);
    assert!(first
        .ask("save ana@example.com 1000.ana")
        .starts_with("saved "));
    first.kill9();
    assert!(
        shared::socket_of(&path).exists(),
        "a SIGKILLed owner leaves its socket file"
    );
    let second = owner(&path, &[]);
    let store = open_client(&path, OpenOptions::new(), second.pid());
    assert_eq!(
        access_of(&store, "ana@example.com").as_deref(),
        Some("1000.ana")
    );

    // A socket file nobody listens on, before the store exists.
    let (_dir, path) = store_dir();
    std::fs::create_dir(&path).unwrap();
    chmod(&path, 0o700);
    drop(std::os::unix::net::UnixListener::bind(shared::socket_of(&path)).unwrap());
    assert!(UnixStream::connect(shared::socket_of(&path)).is_err());
    let store = tokenstore::open(path_str(&path)).expect("open beside a stale socket");
    assert_eq!(sharing(&store).0, "owner");
    let mut other = client(&path, std::process::id());
    assert!(other
        .ask("save bob@example.com 1000.bob")
        .starts_with("saved "));
    assert_eq!(
        access_of(&store, "bob@example.com").as_deref(),
        Some("1000.bob")
    );
}

// ---- foreign versions and garbage ----

fn connect(path: &Path) -> UnixStream {
    UnixStream::connect(shared::socket_of(path)).expect("connect to the owner's socket")
}

/// Sends `bytes` on a new connection (closing our side afterwards if
/// `then_close`) and returns what the owner did within 5 s.
fn send_raw(path: &Path, bytes: &[u8], then_close: bool) -> shared::Seen {
    let mut stream = connect(path);
    // The owner may close before everything is written.
    let _ = stream.write_all(bytes);
    if then_close {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    shared::read_until_closed(&mut stream, Duration::from_secs(5))
}

#[test]
fn foreign_versions_and_garbage_disconnect_only_their_sender() {
    let (_dir, path) = store_dir();
    let mut owner = owner(&path, &[]);
    let store = open_client(&path, OpenOptions::new(), owner.pid());
    store
        .save_token(&mut token("ana@example.com", "1000.ana"))
        .unwrap();
    let before = contents(&store);
    // An idle connection stays open throughout: it holds nothing up.
    let idle = connect(&path);
    let mut still_serves = |what: &str| {
        assert!(owner.running(), "the owner survived {what}");
        // The same token again: saved (through the owner's save loop),
        // the contents unchanged.
        store
            .save_token(&mut token("ana@example.com", "1000.ana"))
            .unwrap_or_else(|e| panic!("a client saves after {what}: {e}"));
        assert_eq!(contents(&store), before, "unchanged after {what}");
        assert_eq!(
            access_of(&store, "ana@example.com").as_deref(),
            Some("1000.ana"),
            "a client is served after {what}"
        );
        assert_eq!(
            owner.ask("count"),
            "count 1",
            "the owner works after {what}"
        );
    };

    // A client of version 99: told the owner's version, then disconnected.
    let seen = send_raw(&path, &shared::hello(99), false);
    assert!(seen.closed, "version 99 is disconnected: {seen:?}");
    let greeting = shared::first_frame(&seen.bytes).expect("the owner's first frame");
    assert!(
        greeting.starts_with(&shared::header(shared::PROTOCOL)),
        "{greeting:?}"
    );
    still_serves("a version-99 hello");

    let mut garbage = vec![0u8; 4096];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for byte in &mut garbage {
        *byte = rng.next() as u8;
    }
    let mut http = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
    http.resize(64, b' ');
    let after_hello = |second: &[u8]| {
        let mut bytes = shared::hello(shared::PROTOCOL);
        bytes.extend_from_slice(second);
        bytes
    };
    let oversized_after_hello = after_hello(&[0xFF; 4]);
    let undecodable_after_hello = after_hello(&shared::frame(&[0xEE; 16]));
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "a first frame that is not tokenstore's",
            shared::frame(&http),
            false,
        ),
        ("an oversized length prefix", vec![0xFF; 4], false),
        (
            "a magic with a truncated version",
            shared::frame(b"TOKSTORE\x01"),
            false,
        ),
        (
            "an oversized frame after a valid hello",
            oversized_after_hello,
            false,
        ),
        (
            "an undecodable request after a valid hello",
            undecodable_after_hello,
            false,
        ),
        ("random bytes", garbage, true),
        (
            "a truncated frame, then close",
            [&100u32.to_le_bytes()[..], &[7; 10]].concat(),
            true,
        ),
    ];
    for (what, bytes, then_close) in cases {
        let seen = send_raw(&path, &bytes, then_close);
        assert!(
            seen.closed,
            "{what}: the owner closes the connection ({seen:?})"
        );
        still_serves(what);
    }
    // A connection that asked to carry only saves (`Request::SavesOnly`,
    // bincode variant 18) is the save loop's: answered `Done` (variant 8),
    // then closed by the loop for anything but a save.
    let saves_only_then = |third: &[u8]| after_hello(&[&shared::frame(&[18])[..], third].concat());
    let loop_cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a request other than a save on a save connection (a count)",
            saves_only_then(&shared::frame(&[6])),
        ),
        (
            "an undecodable frame on a save connection",
            saves_only_then(&shared::frame(&[0xEE; 16])),
        ),
        (
            "an oversized length prefix on a save connection",
            saves_only_then(&[0xFF; 4]),
        ),
    ];
    for (what, bytes) in loop_cases {
        let seen = send_raw(&path, &bytes, false);
        assert!(
            seen.closed,
            "{what}: the owner closes the connection ({seen:?})"
        );
        assert!(
            seen.bytes.ends_with(&shared::frame(&[8])),
            "{what}: the connection went to the save loop first ({seen:?})"
        );
        still_serves(what);
    }
    // A hello and nothing more is served: the idle connection, too.
    let seen = send_raw(&path, &shared::hello(shared::PROTOCOL), false);
    assert!(!seen.closed, "a valid hello is served: {seen:?}");
    drop(idle);
    still_serves("all of it");
}

/// Serves `greeting` (a whole first frame) to every connection to the
/// socket of `path` until dropped, as a fake owner would.
struct FakeOwner {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl FakeOwner {
    fn start(path: &Path, greeting: Vec<u8>) -> FakeOwner {
        let _ = std::fs::remove_file(shared::socket_of(path));
        let listener = std::os::unix::net::UnixListener::bind(shared::socket_of(path)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut served = 0;
            while !stopping.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        served += 1;
                        let _ = stream.write_all(&greeting);
                        // Keeps it until the client gives up.
                        let _ = shared::read_until_closed(&mut stream, Duration::from_secs(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            served
        });
        FakeOwner {
            stop,
            thread: Some(thread),
        }
    }

    fn served(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for FakeOwner {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_client_of_another_version_is_told_both_versions() {
    let (_dir, path) = store_dir();
    // The store's lock held here, without serving: a process opening it
    // looks for an owner on the socket, and finds a fake one.
    let engine = SledStore::open(&path).unwrap();
    let mut greeting = shared::header(99);
    greeting.extend_from_slice(&[0, 1, 2, 3]);
    let fake = FakeOwner::start(&path, shared::frame(&greeting));
    let mut other = Proc::spawn("client", &path, &[(shared::TIMEOUT_VAR, "3000".into())]);
    let said = other.expect("openerr", Duration::from_secs(20));
    assert!(
        said.contains("version 99") && said.contains(&format!("version {}", shared::PROTOCOL)),
        "the error names both versions: {said}"
    );
    assert!(fake.served() >= 1);

    // A peer that does not speak the protocol at all: refused at once.
    let fake = FakeOwner::start(&path, shared::frame(&[0xAB; 40]));
    let mut other = Proc::spawn("client", &path, &[(shared::TIMEOUT_VAR, "2000".into())]);
    let said = other.expect("openerr", Duration::from_secs(20));
    assert!(
        said.starts_with("Unsupported ") && said.contains("protocol"),
        "{said}"
    );
    assert!(fake.served() >= 1);

    // A greeting of this version that does not decode: no owner, so the client
    // gives up after its owner_timeout, with an error (not a hang, not a
    // panic).
    let mut greeting = shared::header(shared::PROTOCOL);
    greeting.extend_from_slice(&[0xAB; 40]);
    let fake = FakeOwner::start(&path, shared::frame(&greeting));
    let started = Instant::now();
    let mut other = Proc::spawn("client", &path, &[(shared::TIMEOUT_VAR, "2000".into())]);
    let said = other.expect("openerr", Duration::from_secs(20));
    let waited = started.elapsed();
    eprintln!("beside an owner that answers garbage: {said} after {waited:?}");
    assert!(waited < Duration::from_secs(10), "gave up after {waited:?}");
    assert!(fake.served() >= 1);
    drop(engine);
}

// ---- a stopped owner ----

/// Waits until every thread of process `pid` is stopped (state `T` in
/// /proc/PID/task/*/stat).
fn wait_until_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the owner's threads");
        let all_stopped = tasks.flatten().all(|task| {
            std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
                // The state follows the command name's closing parenthesis.
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with(['T', 't']))
            })
        });
        if all_stopped {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_stopped_owner_times_out_its_clients_then_serves_again() {
    let (_dir, path) = store_dir();
    let owner = owner(&path, &[]);
    let timeout = Duration::from_secs(2);
    let store = open_client(
        &path,
        OpenOptions::new().owner_timeout(timeout),
        owner.pid(),
    );
    store
        .save_token(&mut token("ana@example.com", "1000.ana"))
        .unwrap();

    owner.signal(libc::SIGSTOP);
    // kill() returns before every thread of the target has stopped (a
    // thread running on the other CPU stops when the kernel's interrupt
    // reaches it, which on a loaded VM takes a while): a request sent at
    // once could still be answered. Wait until each thread is stopped.
    wait_until_stopped(owner.pid());
    let started = Instant::now();
    let found = store.find_token(&tokenstore::OAuthToken::new().with_user_name("ana@example.com"));
    let waited = started.elapsed();
    assert!(
        matches!(found, Err(Error::Unavailable { .. })),
        "{found:?} after {waited:?}"
    );
    assert!(
        waited >= timeout - Duration::from_millis(500) && waited < Duration::from_secs(6),
        "a find gave up after {waited:?} (owner_timeout {timeout:?})"
    );
    let started = Instant::now();
    let saved = store.save_token(&mut token("stopped@example.com", "1000.stopped"));
    let waited = started.elapsed();
    let Err(Error::Unavailable {
        maybe_committed, ..
    }) = saved
    else {
        panic!(
            "a save to a stopped owner, after {waited:?}: {saved:?} (docs/SPEC.md §8: \
             Error::Unavailable after owner_timeout, maybe_committed: true for a write)"
        );
    };
    assert!(
        waited < Duration::from_secs(6),
        "a save gave up after {waited:?}"
    );

    owner.signal(libc::SIGCONT);
    assert_eq!(
        access_of(&store, "ana@example.com").as_deref(),
        Some("1000.ana"),
        "served again once the owner continues"
    );
    std::thread::sleep(Duration::from_millis(500));
    let landed = access_of(&store, "stopped@example.com");
    eprintln!(
        "the save to the stopped owner: maybe_committed={maybe_committed}, landed={landed:?}"
    );
    assert!(
        maybe_committed || landed.is_none(),
        "a save reported as not committed (maybe_committed: false) landed later"
    );
    let (role, owner_pid, _) = sharing(&store);
    assert_eq!((role, owner_pid), ("client", owner.pid()));
}

// ---- take-over ----

#[test]
fn a_killed_owner_is_replaced_by_exactly_one_client() {
    let (_dir, path) = store_dir();
    let mut owner = owner(&path, &[]);
    let mut other = client(&path, owner.pid());
    let store = open_client(&path, OpenOptions::new(), owner.pid());
    store
        .save_token(&mut token("ana@example.com", "1000.ana"))
        .unwrap();

    owner.kill9();
    let started = Instant::now();
    other.send("find ana@example.com");
    assert_eq!(
        access_of(&store, "ana@example.com").as_deref(),
        Some("1000.ana")
    );
    let paused = started.elapsed();
    assert_eq!(other.expect("found", shared::ANSWER), "1000.ana");
    let both = started.elapsed();
    eprintln!("FIGURES take-over: this client answered after {paused:?}, both after {both:?}");
    assert!(paused < Duration::from_secs(2), "the pause was {paused:?}");

    let (mine, my_owner, _) = sharing(&store);
    let theirs = other.ask("role");
    let expected_owner = match mine {
        "owner" => std::process::id(),
        _ => other.pid(),
    };
    assert_eq!(my_owner, expected_owner);
    let want = format!(
        "role {} {expected_owner}",
        if mine == "owner" { "client" } else { "owner" }
    );
    assert!(
        theirs.starts_with(&want),
        "exactly one owner: mine {mine}, theirs {theirs}"
    );
    // A new process follows the new owner, and sees everything.
    let mut third = client(&path, expected_owner);
    assert_eq!(third.ask("find ana@example.com"), "found 1000.ana");
    assert!(third
        .ask("save bob@example.com 1000.bob")
        .starts_with("saved "));
    assert_eq!(
        access_of(&store, "bob@example.com").as_deref(),
        Some("1000.bob")
    );
}

#[test]
fn an_owner_that_closes_hands_over() {
    let (_dir, path) = store_dir();
    let mut owner = owner(&path, &[]);
    let store = open_client(&path, OpenOptions::new(), owner.pid());
    store
        .save_token(&mut token("ana@example.com", "1000.ana"))
        .unwrap();
    assert_eq!(owner.ask("drop"), "dropped");
    let started = Instant::now();
    assert_eq!(
        access_of(&store, "ana@example.com").as_deref(),
        Some("1000.ana")
    );
    let paused = started.elapsed();
    assert!(paused < Duration::from_secs(2), "the pause was {paused:?}");
    assert_eq!(sharing(&store), ("owner", std::process::id(), 0));
    // The process that dropped it opens it again, as a client now.
    owner.close_stdin();
    assert!(owner
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    let mut again = client(&path, std::process::id());
    assert_eq!(again.ask("find ana@example.com"), "found 1000.ana");
}

// ---- the exclusive open ----

#[test]
fn an_exclusive_open_of_an_owned_store_is_locked() {
    let (_dir, path) = store_dir();
    let mut owner = owner(&path, &[]);
    let exclusive = tokenstore::open_with(path_str(&path), OpenOptions::new().exclusive(true));
    assert!(
        matches!(exclusive, Err(Error::Locked { .. })),
        "{exclusive:?}"
    );
    let engine = SledStore::open(&path);
    assert!(matches!(engine, Err(Error::Locked { .. })), "{engine:?}");
    assert!(owner
        .ask("save ana@example.com 1000.ana")
        .starts_with("saved "));
    let store = open_client(&path, OpenOptions::new(), owner.pid());
    assert_eq!(
        access_of(&store, "ana@example.com").as_deref(),
        Some("1000.ana")
    );
    drop(store);
    owner.kill9();

    // Held exclusively, the store is not shared.
    let store = tokenstore::open_with(path_str(&path), OpenOptions::new().exclusive(true))
        .expect("an exclusive open of a free store");
    let mut other = Proc::spawn("client", &path, &[(shared::TIMEOUT_VAR, "2000".into())]);
    let said = other.next_line(Duration::from_secs(20));
    eprintln!("a default open beside an exclusive one: {said:?}");
    assert!(
        said.as_deref().is_some_and(|l| l.starts_with("openerr ")),
        "a store held exclusively serves nobody: {said:?}"
    );
    assert_eq!(
        access_of(&store, "ana@example.com").as_deref(),
        Some("1000.ana")
    );
}

// ---- the refresh lock across processes ----

fn millis(line: &str) -> i64 {
    line.parse().unwrap()
}

#[test]
fn the_refresh_lock_spans_every_process() {
    let (_dir, path) = store_dir();
    let mut owner = owner(&path, &[]);
    let mut a = client(&path, owner.pid());
    let mut b = client(&path, owner.pid());

    // Held by one client, the other waits for its release.
    a.send("lock 1 800");
    millis(&a.expect("locked", shared::ANSWER));
    let asked = tokenstore::now_ms();
    b.send("lock 1 0");
    let b_locked = millis(&b.expect("locked", shared::ANSWER));
    let a_unlocking = millis(&a.expect("unlocking", shared::ANSWER));
    assert!(
        b_locked >= a_unlocking && b_locked - asked >= 500,
        "b got the lock at {b_locked}, asked at {asked}, a released it at {a_unlocking}"
    );
    b.expect("unlocking", shared::ANSWER);

    // Another record's lock is not held up.
    a.send("lock 1 800");
    a.expect("locked", shared::ANSWER);
    let asked = tokenstore::now_ms();
    b.send("lock 2 0");
    let b_locked = millis(&b.expect("locked", shared::ANSWER));
    assert!(
        b_locked - asked < 400,
        "another id waited {} ms",
        b_locked - asked
    );
    b.expect("unlocking", shared::ANSWER);
    a.expect("unlocking", shared::ANSWER);

    // Held by the owner, a client waits.
    owner.send("lock 1 800");
    owner.expect("locked", shared::ANSWER);
    a.send("lock 1 0");
    let a_locked = millis(&a.expect("locked", shared::ANSWER));
    let owner_unlocking = millis(&owner.expect("unlocking", shared::ANSWER));
    assert!(
        a_locked >= owner_unlocking,
        "a: {a_locked}, the owner released at {owner_unlocking}"
    );
    a.expect("unlocking", shared::ANSWER);

    // Held by a client that dies: released then.
    a.send("lock 1 60000");
    a.expect("locked", shared::ANSWER);
    b.send("lock 1 0");
    assert_eq!(
        b.next_line(Duration::from_millis(500)),
        None,
        "b waits while a holds it"
    );
    let killed = tokenstore::now_ms();
    a.kill9();
    let b_locked = millis(&b.expect("locked", Duration::from_secs(5)));
    assert!(b_locked >= killed, "b: {b_locked}, a killed at {killed}");
    b.expect("unlocking", shared::ANSWER);
}

// ---- tokenstore serve ----

#[cfg(feature = "cli")]
#[test]
fn tokenstore_serve_owns_the_store_until_a_signal() {
    let (_dir, path) = store_dir();
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tokenstore"));
        command
            .args(["serve", "--db"])
            .arg(&path)
            .env_remove("TOKENSTORE_DB")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped());
        let mut serve = Reaped(command.spawn().unwrap());
        let pid = serve.0.id();
        let stdout = serve.0.stdout.take().unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = send.send(line);
            }
        });
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("serve prints a line once it serves");
        assert!(line.contains(&pid.to_string()), "its pid in {line:?}");

        let store = open_client(&path, OpenOptions::new(), pid);
        store
            .save_token(&mut token("ana@example.com", "1000.ana"))
            .unwrap();
        // `tokenstore list` beside it answers at once, as another client.
        let started = Instant::now();
        let list = std::process::Command::new(env!("CARGO_BIN_EXE_tokenstore"))
            .args(["--db", path_str(&path), "list"])
            .env_remove("TOKENSTORE_DB")
            .output()
            .unwrap();
        assert!(
            list.status.success(),
            "{}",
            String::from_utf8_lossy(&list.stderr)
        );
        assert!(String::from_utf8_lossy(&list.stdout).contains("ana@example.com"));
        assert!(started.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            serve.0.try_wait().unwrap().is_none(),
            "serve never exits on its own"
        );

        assert!(shared::signal_pid(pid, signal));
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = serve.0.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not stop on signal {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "serve after signal {signal}: {status}");
        // Its client takes over.
        assert_eq!(
            access_of(&store, "ana@example.com").as_deref(),
            Some("1000.ana")
        );
        assert_eq!(sharing(&store).0, "owner");
    }
}
