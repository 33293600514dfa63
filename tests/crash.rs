//! Crash consistency and multi-process locking, with real processes.
//!
//! The test binary re-executes itself as a child (the ignored test
//! `child_process`, selected by the `TOKENSTORE_CHILD` environment variable)
//! that runs a deterministic sequence of operations on a store and prints
//! `ack N` after operation N returned `Ok`. The parent kills it with SIGKILL
//! at a random moment, reopens the store and checks:
//! - `check()` is clean (no write is half-applied: record and indexes agree);
//! - durable mode: the state is exactly the acknowledged operations, plus
//!   perhaps the one in flight when the child died;
//! - buffered mode: the state is the result of a prefix of the operations that
//!   includes at least everything acknowledged before the child's last
//!   explicit `flush()`;
//! - one record per user, and an id once seen deleted never comes back.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use tokenstore::{Durability, Error, Key, OAuthToken, Options, SledStore, TokenStore};

const USERS: u64 = 12;
/// Marks the child's protocol lines; libtest writes its own text around them
/// (its `test child_process ... ` has no line end, so the first line of the
/// child shares a line with it).
const MARK: &str = "@@ ";
/// Buffered children flush explicitly every this many operations.
const FLUSH_EVERY_OPS: u64 = 16;

// ---- the workload, shared by child and parent ----

#[derive(Debug, Clone, Copy)]
enum Op {
    /// Save user's access and refresh token (rotation when the user exists).
    Upsert { user: u64, n: u64 },
    /// Save a new access token only (what a token refresh does).
    Refresh { user: u64, n: u64 },
    /// Delete the user's record, looked up by user name.
    Delete { user: u64 },
}

fn mix(mut x: u64) -> u64 {
    // splitmix64: a fixed, well-spread choice of operation per number
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn op(n: u64) -> Op {
    let roll = mix(n);
    let user = roll % USERS;
    match (roll >> 8) % 8 {
        0..=3 => Op::Upsert { user, n },
        4..=6 => Op::Refresh { user, n },
        _ => Op::Delete { user },
    }
}

fn user_name(user: u64) -> String {
    format!("user{user}@example.com")
}

fn run_op(store: &SledStore, op: Op) -> tokenstore::Result<()> {
    match op {
        Op::Upsert { user, n } => store.save_token(
            &mut OAuthToken::new()
                .with_user_name(user_name(user))
                .with_client_id("1000.CLIENT")
                .with_client_secret("secret")
                .with_access_token(format!("1000.access-{n}"))
                .with_refresh_token(format!("1000.refresh-{n}"))
                .with_expiry_time(n as i64),
        ),
        Op::Refresh { user, n } => store.save_token(
            &mut OAuthToken::new()
                .with_user_name(user_name(user))
                .with_access_token(format!("1000.access-{n}"))
                .with_expiry_time(n as i64),
        ),
        Op::Delete { user } => {
            let query = OAuthToken::new().with_user_name(user_name(user));
            if let Some(found) = store.find_token(&query)? {
                store.delete_token(found.id.as_deref().unwrap())?;
            }
            Ok(())
        }
    }
}

/// What the parent expects of one user's record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    access: String,
    refresh: Option<String>,
    expiry: i64,
}

type State = BTreeMap<u64, Rec>;

fn apply(state: &mut State, op: Op) {
    match op {
        Op::Upsert { user, n } => {
            state.insert(
                user,
                Rec {
                    access: format!("1000.access-{n}"),
                    refresh: Some(format!("1000.refresh-{n}")),
                    expiry: n as i64,
                },
            );
        }
        Op::Refresh { user, n } => {
            let rec = state.entry(user).or_insert(Rec {
                access: String::new(),
                refresh: None,
                expiry: 0,
            });
            rec.access = format!("1000.access-{n}");
            rec.expiry = n as i64;
        }
        Op::Delete { user } => {
            state.remove(&user);
        }
    }
}

// ---- the child ----

fn buffered_options() -> Options {
    Options::default().durability(Durability::Buffered {
        flush_every: Duration::from_millis(20),
    })
}

/// Runs operations `start..` until killed (or `limit` operations), printing
/// `ack N` after each, and `flushed N` after each explicit flush.
fn child_workload(path: &Path, buffered: bool, start: u64, limit: u64, out: &mut impl Write) {
    let options = if buffered {
        buffered_options()
    } else {
        Options::default()
    };
    let store = SledStore::open_with(path, options).expect("child open");
    writeln!(out, "{MARK}ready").unwrap();
    for n in start..start + limit {
        run_op(&store, op(n)).expect("child op");
        writeln!(out, "{MARK}ack {n}").unwrap();
        if buffered && n % FLUSH_EVERY_OPS == 0 {
            store.flush().expect("child flush");
            writeln!(out, "{MARK}flushed {n}").unwrap();
        }
    }
}

/// The child process of the tests below, selected by `TOKENSTORE_CHILD`.
/// Run by hand (without it), it runs a short workload in a temporary
/// directory and checks the result against the model.
#[test]
#[ignore = "the child process of the crash tests; they start it"]
fn child_process() {
    match std::env::var("TOKENSTORE_CHILD").as_deref() {
        Ok("crash") => {
            let path = std::env::var("TOKENSTORE_DB").unwrap();
            let buffered = std::env::var("TOKENSTORE_BUFFERED").is_ok();
            let start: u64 = std::env::var("TOKENSTORE_START").unwrap().parse().unwrap();
            child_workload(
                Path::new(&path),
                buffered,
                start,
                u64::MAX - start,
                &mut std::io::stdout(),
            );
        }
        Ok("hold") => hold_child(Path::new(&std::env::var("TOKENSTORE_DB").unwrap())),
        Ok("batch") => batch_child(Path::new(&std::env::var("TOKENSTORE_DB").unwrap())),
        Ok("writers") => writers_child(Path::new(&std::env::var("TOKENSTORE_DB").unwrap())),
        Ok("rekey") => rekey_child(Path::new(&std::env::var("TOKENSTORE_DB").unwrap())),
        _ => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("db");
            let mut out = Vec::new();
            child_workload(&path, false, 1, 200, &mut out);
            let mut expected = State::new();
            (1..=200).for_each(|n| apply(&mut expected, op(n)));
            let store = SledStore::open(&path).unwrap();
            assert_eq!(read_state(&store), expected);
        }
    }
}

/// Opens the store, says `ready`, saves a token when told `save` on stdin,
/// and exits at end of input.
fn hold_child(path: &Path) {
    let store = SledStore::open(path).expect("hold child open");
    println!("{MARK}ready");
    for line in std::io::stdin().lines() {
        if line.unwrap() == "save" {
            let mut token = OAuthToken::new()
                .with_user_name("held@example.com")
                .with_access_token("1000.held");
            store.save_token(&mut token).unwrap();
            println!("{MARK}saved {}", token.id.unwrap());
        }
    }
}

/// Records per batch in `batch_child`.
const BATCH_SIZE: u64 = 300;

/// Commits batches of `BATCH_SIZE` new users (batch k: users `b{k}-{i}`),
/// each also rotating the refresh token of every user of batch k-1, and
/// says `committed k` after each.
fn batch_child(path: &Path) {
    let store = SledStore::open(path).expect("batch child open");
    println!("{MARK}ready");
    let start = (0u64..).find(|k| store.find_token(&batch_user(*k, 0)).unwrap().is_none());
    for k in start.unwrap().. {
        store
            .batch(|batch| {
                for i in 0..BATCH_SIZE {
                    let mut token = batch_user(k, i)
                        .with_refresh_token(format!("1000.r-{k}-{i}"))
                        .with_access_token(format!("1000.a-{k}-{i}"));
                    batch.save_token(&mut token)?;
                    if k > 0 {
                        let mut rotated = batch_user(k - 1, i)
                            .with_refresh_token(format!("1000.r-{k}-{i}-rotated"));
                        batch.save_token(&mut rotated)?;
                    }
                }
                Ok::<_, Error>(())
            })
            .unwrap();
        println!("{MARK}committed {k}");
    }
}

/// Threads in `writers_child`.
const WRITERS: u64 = 8;

fn writer_user(thread: u64, n: u64) -> OAuthToken {
    OAuthToken::new().with_user_name(format!("w{thread}-{n}@example.com"))
}

/// `WRITERS` threads saving new users durably (thread t: `w{t}-{n}` for n =
/// 0, 1, ...), each saying `saved t n` once its save has returned: the
/// flushes they share (group commit) must cover every one of them.
fn writers_child(path: &Path) {
    let store = SledStore::open(path).expect("writers child open");
    println!("{MARK}ready");
    std::thread::scope(|scope| {
        for t in 0..WRITERS {
            let store = &store;
            scope.spawn(move || {
                let start = (0u64..)
                    .find(|n| store.find_token(&writer_user(t, *n)).unwrap().is_none())
                    .unwrap();
                for n in start.. {
                    let mut token = writer_user(t, n).with_refresh_token(format!("1000.w-{t}-{n}"));
                    store.save_token(&mut token).unwrap();
                    println!("{MARK}saved {t} {n}");
                }
            });
        }
    });
}

/// The two keys the rekey test alternates between.
fn rekey_keys() -> [Key; 2] {
    [Key::from_bytes([0xA1; 32]), Key::from_bytes([0xB2; 32])]
}

/// Opens the store with whichever of the two keys is its key.
fn open_with_either_key(path: &Path) -> (SledStore, usize) {
    let keys = rekey_keys();
    for (which, key) in keys.iter().enumerate() {
        match SledStore::open_with(path, Options::default().encryption(key.clone())) {
            Ok(store) => {
                let other = keys[1 - which].clone();
                drop(store);
                // The other key must be refused, never half-accepted.
                match SledStore::open_with(path, Options::default().encryption(other)) {
                    Err(Error::WrongKey { .. }) => {}
                    other => panic!("the other key was not refused: {other:?}"),
                }
                let store =
                    SledStore::open_with(path, Options::default().encryption(key.clone())).unwrap();
                return (store, which);
            }
            Err(Error::WrongKey { .. }) => continue,
            Err(other) => panic!("open: {other}"),
        }
    }
    panic!("neither key opens the store")
}

/// Changes the store's key back and forth, saying `rekeyed` after each.
fn rekey_child(path: &Path) {
    let (mut store, mut which) = open_with_either_key(path);
    println!("{MARK}ready");
    loop {
        which = 1 - which;
        store
            .set_encryption(Some(rekey_keys()[which].clone()))
            .unwrap();
        println!("{MARK}rekeyed");
    }
}

fn batch_user(k: u64, i: u64) -> OAuthToken {
    OAuthToken::new().with_user_name(format!("b{k}-{i}@example.com"))
}

fn spawn_child(mode: &str, path: &Path, envs: &[(&str, String)]) -> Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--ignored",
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TOKENSTORE_CHILD", mode)
        .env("TOKENSTORE_DB", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (key, value) in envs {
        command.env(key, value);
    }
    command.spawn().expect("spawn child")
}

/// The protocol message in one line of a child's output, if it has one.
fn protocol(line: &str) -> Option<&str> {
    line.find(MARK).map(|at| &line[at + MARK.len()..])
}

/// Every protocol message of a child's output, until it ends.
fn protocol_lines(output: BufReader<ChildStdout>) -> Vec<String> {
    output
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| protocol(&l).map(str::to_owned))
        .collect()
}

/// The protocol messages up to and including `ready`.
/// Starts a child in `mode`, lets it work for `after` once it is ready,
/// kills it (SIGKILL) and returns the protocol lines it printed.
fn run_then_kill(mode: &str, path: &Path, after: Duration) -> Vec<String> {
    let mut child = spawn_child(mode, path, &[]);
    let mut output = BufReader::new(child.stdout.take().unwrap());
    let mut lines = read_until_ready(&mut output);
    std::thread::sleep(after);
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    lines.extend(protocol_lines(output));
    lines
}

fn read_until_ready(output: &mut BufReader<ChildStdout>) -> Vec<String> {
    let mut messages = Vec::new();
    let mut line = String::new();
    while output.read_line(&mut line).expect("child output") > 0 {
        if let Some(message) = protocol(line.trim_end()) {
            messages.push(message.to_owned());
            if message == "ready" {
                break;
            }
        }
        line.clear();
    }
    messages
}

// ---- the parent ----

fn read_state(store: &SledStore) -> State {
    let mut state = State::new();
    for token in store.get_tokens().expect("get_tokens after crash") {
        let user = user_of(&token);
        let rec = Rec {
            access: token.access_token.clone().unwrap_or_default(),
            refresh: token.refresh_token.clone(),
            expiry: token.expiry_time.unwrap_or_default(),
        };
        assert!(
            state.insert(user, rec).is_none(),
            "two records for user {user}"
        );
    }
    state
}

/// A small xorshift generator: reproducible kill delays from a printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// What a crash run observed.
#[derive(Debug, Default)]
struct Totals {
    cycles: usize,
    acked: u64,
    in_flight_applied: usize,
    /// Buffered mode: acknowledged operations lost in a crash.
    lost: u64,
}

fn kill_cycles(cycles: usize, buffered: bool, seed: u64) -> Totals {
    eprintln!("kill cycles: {cycles}, buffered: {buffered}, seed: {seed}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut rng = Rng(seed | 1);
    let mut state = State::new();
    let mut ids: BTreeMap<u64, String> = BTreeMap::new();
    let mut retired: BTreeSet<String> = BTreeSet::new();
    let mut next = 1u64;
    let mut totals = Totals::default();

    for cycle in 0..cycles {
        let mut envs = vec![("TOKENSTORE_START", next.to_string())];
        if buffered {
            envs.push(("TOKENSTORE_BUFFERED", "1".into()));
        }
        let mut child = spawn_child("crash", &path, &envs);
        let mut output = BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        if rng.below(5) == 0 {
            // Kill during start-up: while sled opens and recovers.
            std::thread::sleep(Duration::from_millis(rng.below(40)));
        } else {
            // Kill anywhere in the first 60 ms of the workload.
            lines.extend(read_until_ready(&mut output));
            std::thread::sleep(Duration::from_millis(rng.below(60)));
        }
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        lines.extend(protocol_lines(output));
        let acked: Vec<u64> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("ack ")?.parse().ok())
            .collect();
        let flushed = lines
            .iter()
            .filter_map(|l| l.strip_prefix("flushed ")?.parse::<u64>().ok())
            .max();
        let last_acked = acked.last().copied().unwrap_or(next - 1);
        assert_eq!(
            acked,
            (next..=last_acked).collect::<Vec<_>>(),
            "acks in order"
        );
        totals.acked += acked.len() as u64;

        let store = SledStore::open(&path).unwrap_or_else(|e| panic!("cycle {cycle}: reopen: {e}"));
        let report = store.check().unwrap();
        assert!(report.is_ok(), "cycle {cycle}: {report}");
        let found = read_state(&store);

        // The states the store may be in: `state` after ops next..next+k.
        let mut candidate = state.clone();
        let mut matched = None;
        let least = if buffered {
            flushed.map_or(0, |f| f + 1 - next)
        } else {
            last_acked + 1 - next
        };
        for k in 0..=(last_acked + 1 - next + 1) {
            if k > 0 {
                apply(&mut candidate, op(next + k - 1));
            }
            if k >= least && candidate == found {
                matched = Some(k);
            }
        }
        let applied = matched.unwrap_or_else(|| {
            panic!(
                "cycle {cycle} (seed {seed}): the store matches no allowed prefix; ops {next}..={last_acked} acked, flushed {flushed:?}\nfound {found:?}\nbefore {state:?}"
            )
        });
        let acked_count = last_acked + 1 - next;
        if applied > acked_count {
            totals.in_flight_applied += 1;
        }
        totals.lost += acked_count.saturating_sub(applied);
        state = found;

        // ids: one per user while it lives; a deleted or replaced id never returns
        let mut now_ids = BTreeMap::new();
        for token in store.get_tokens().unwrap() {
            let id = token.id.clone().unwrap();
            assert!(!retired.contains(&id), "cycle {cycle}: id {id} came back");
            let user = user_of(&token);
            now_ids.insert(user, id);
        }
        for (user, id) in &ids {
            if now_ids.get(user) != Some(id) {
                retired.insert(id.clone());
            }
        }
        ids = now_ids;
        next = last_acked + 2;
        totals.cycles += 1;
        drop(store);
    }
    eprintln!("{totals:?}");
    totals
}

/// The workload user a stored record belongs to.
fn user_of(token: &OAuthToken) -> u64 {
    token
        .user_name
        .as_deref()
        .and_then(|u| u.strip_prefix("user"))
        .and_then(|u| u.strip_suffix("@example.com"))
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("a record without a workload user: {token:?}"))
}

fn seed() -> u64 {
    std::env::var("TOKENSTORE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

#[test]
fn durable_writes_survive_sigkill() {
    let totals = kill_cycles(50, false, seed());
    assert_eq!(totals.cycles, 50);
    assert!(
        totals.acked > 0,
        "the children acknowledged nothing: {totals:?}"
    );
}

#[test]
fn buffered_writes_lose_only_unflushed_whole_operations() {
    let totals = kill_cycles(25, true, seed());
    assert!(
        totals.acked > 0,
        "the children acknowledged nothing: {totals:?}"
    );
}

/// The long run: `cargo test --release --test crash -- --ignored thousand`.
#[test]
#[ignore = "long: about a minute in release mode"]
fn thousand_kill_cycles_durable() {
    kill_cycles(1000, false, seed());
}

/// The long run for buffered mode, reporting how much a crash lost.
#[test]
#[ignore = "long: about a minute in release mode"]
fn thousand_kill_cycles_buffered() {
    kill_cycles(1000, true, seed());
}

/// A batch is atomic across a crash: after each kill, every batch is wholly
/// there (its users, and the rotation it made in the batch before) or wholly
/// absent, and every batch the child reported committed is there.
#[test]
fn batches_are_all_or_nothing_across_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut rng = Rng(seed() | 1);
    let mut committed = 0u64;
    for cycle in 0..12 {
        let lines = run_then_kill("batch", &path, Duration::from_millis(50 + rng.below(250)));
        for line in &lines {
            if let Some(k) = line.strip_prefix("committed ") {
                committed = committed.max(k.parse::<u64>().unwrap() + 1);
            }
        }
        let store = SledStore::open(&path).unwrap();
        let report = store.check().unwrap();
        assert!(report.is_ok(), "cycle {cycle}: {report}");
        let present = |k: u64, i: u64| store.find_token(&batch_user(k, i)).unwrap();
        let mut k = 0;
        while present(k, 0).is_some() {
            for i in 0..BATCH_SIZE {
                let token = present(k, i).unwrap_or_else(|| panic!("batch {k} is torn at {i}"));
                let rotated = present(k + 1, 0).is_some();
                let want = if rotated {
                    format!("1000.r-{}-{i}-rotated", k + 1)
                } else {
                    format!("1000.r-{k}-{i}")
                };
                assert_eq!(
                    token.refresh_token.as_deref(),
                    Some(want.as_str()),
                    "cycle {cycle}"
                );
            }
            k += 1;
        }
        assert_eq!(
            store.len() as u64,
            k * BATCH_SIZE,
            "cycle {cycle}: stray records"
        );
        assert!(
            k >= committed,
            "cycle {cycle}: batch {committed} was acknowledged but lost"
        );
        committed = k;
    }
    eprintln!("batches committed over 12 kills: {committed}");
    assert!(committed > 0, "no batch was ever committed");
}

/// Eight durable writers killed mid-run, ten times: every save that
/// returned is on disk (group commit never acknowledges a write before a
/// flush that covers it), and the store is consistent.
#[test]
fn concurrent_durable_writers_lose_no_acknowledged_save() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut rng = Rng(seed() | 1);
    let mut acknowledged = std::collections::HashSet::new();
    for cycle in 0..10 {
        let lines = run_then_kill("writers", &path, Duration::from_millis(50 + rng.below(200)));
        for line in &lines {
            if let Some(rest) = line.strip_prefix("saved ") {
                let (t, n) = rest.split_once(' ').unwrap();
                acknowledged.insert((t.parse::<u64>().unwrap(), n.parse::<u64>().unwrap()));
            }
        }
        let store = SledStore::open(&path).unwrap();
        let report = store.check().unwrap();
        assert!(report.is_ok(), "cycle {cycle}: {report}");
        for (t, n) in &acknowledged {
            let found = store.find_token(&writer_user(*t, *n)).unwrap();
            assert!(
                found.is_some(),
                "cycle {cycle}: acknowledged save {t} {n} lost"
            );
        }
    }
    eprintln!("acknowledged saves over 10 kills: {}", acknowledged.len());
    assert!(acknowledged.len() > 100, "too few saves to show anything");
}

/// A key change killed at random points: the store always opens with the
/// old key or the new one (the other refused), holds every record intact,
/// and `check()` is clean.
#[test]
fn rekey_killed_anywhere_leaves_the_old_key_or_the_new() {
    const RECORDS: u64 = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let record = |n: u64| {
        OAuthToken::new()
            .with_user_name(format!("user{n}@example.com"))
            .with_refresh_token(format!("1000.refresh{n}"))
            .with_access_token(format!("1000.access{n}"))
    };
    {
        let store = SledStore::open_with(
            &path,
            Options::default().encryption(rekey_keys()[0].clone()),
        )
        .unwrap();
        store
            .batch(|batch| (0..RECORDS).try_for_each(|n| batch.save_token(&mut record(n))))
            .unwrap();
    }
    let mut rng = Rng(seed() | 1);
    let mut rekeys = 0;
    for cycle in 0..10 {
        let lines = run_then_kill("rekey", &path, Duration::from_millis(rng.below(1_500)));
        rekeys += lines.iter().filter(|l| *l == "rekeyed").count();

        let (store, _) = open_with_either_key(&path);
        let report = store.check().unwrap();
        assert!(report.is_ok(), "cycle {cycle}: {report}");
        assert_eq!(store.len() as u64, RECORDS, "cycle {cycle}");
        for n in [0, RECORDS / 2, RECORDS - 1] {
            let query = OAuthToken::new()
                .with_client_id("c")
                .with_client_secret("s")
                .with_refresh_token(format!("1000.refresh{n}"));
            let found = store
                .find_token(&query)
                .unwrap()
                .expect("record found by refresh token");
            assert_eq!(found.user_name, record(n).user_name, "cycle {cycle}");
            assert_eq!(found.access_token, record(n).access_token, "cycle {cycle}");
        }
        drop(store);
        // Only the live generation is left in the directory.
        let mut names: Vec<String> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let data_dirs = names.iter().filter(|n| n.starts_with("data-")).count();
        assert!(data_dirs <= 1, "cycle {cycle}: {names:?}");
        if data_dirs == 1 {
            assert!(
                !names.iter().any(|n| n == "conf" || n == "db"),
                "cycle {cycle}: {names:?}"
            );
        }
    }
    eprintln!("rekeys completed over 10 kills: {rekeys}");
    assert!(rekeys > 0, "no key change ever completed");
}

#[test]
fn a_second_process_gets_locked_promptly_and_the_first_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut child = spawn_child("hold", &path, &[]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = move || loop {
        let line = lines.next().expect("child output").unwrap();
        if let Some(message) = protocol(&line) {
            return message.to_owned();
        }
    };
    assert_eq!(next_line(), "ready");

    let started = Instant::now();
    let err = SledStore::open(&path).unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, Error::Locked { .. }), "{err:?}");
    assert!(
        err.to_string().contains("locked by another process"),
        "{err}"
    );
    assert!(waited < Duration::from_secs(2), "answered after {waited:?}");

    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "save").unwrap();
    assert_eq!(next_line(), "saved 1", "the first process keeps working");
    drop(stdin);
    assert!(child.wait().unwrap().success());

    let store = SledStore::open(&path).unwrap();
    let query = OAuthToken::new().with_user_name("held@example.com");
    assert_eq!(
        store.find_token(&query).unwrap().unwrap().id.as_deref(),
        Some("1")
    );
}
