//! Many processes, one store (issue 18): what sharing an embedded store
//! between local processes costs, measured side by side in one run.
//!
//! ```text
//! cargo run --release --example bench_shared -- [--tokens 100000]
//!     [--takeover-tokens 100000,1000000] [--lookups 10000] [--secs 3]
//!     [--rounds 2] [--reps 5] [--idle 64] [--dir PATH] [--pg-url URL]
//!     [--sections lookups,saves,idle,takeover]
//! ```
//!
//! Every figure comes from child processes of this run (the program runs
//! itself with `--child ROLE`); the parent only starts, signals and reads
//! them, and never opens the store:
//!
//! 1. lookups: an owner process holds `--tokens` records; a client process
//!    measures, interleaved round by round, a raw Unix-socket round trip
//!    with a lookup's message sizes (a 120-byte request, a 640-byte answer,
//!    blocking std `UnixStream`, against an echo process), `find_token`
//!    through the owner for every lookup rule, SQLite (indexed, WAL)
//!    opened in the client process, and `PostgresStore` over loopback when
//!    `--pg-url` (or `TOKENSTORE_TEST_PG_URL`) is set and the build has the
//!    `postgres` feature;
//! 2. durable saves: the owner's own 8 writer threads, then 8 client
//!    processes, alternated `--rounds` times, each for `--secs`;
//! 3. idle clients: the owner's VmRSS before and after `--idle` client
//!    processes connect, answer one lookup and go idle;
//! 4. take-over: `--reps` times per size in `--takeover-tokens`, a fresh
//!    owner, a client looping `find_token`, SIGKILL of the owner; the time
//!    from the kill to the client's first answer as the new owner.

mod children;
#[path = "../../benches/engines/mod.rs"]
mod engines;
mod parent;

use children::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use engines::{token, Engine, Lookup, Rng, Sqlite};
use tokenstore::{lookup_key, Durability, LookupKey, OAuthToken, Options, Role, TokenStore};

/// The raw round trip's messages: a lookup's request and answer sizes.
const REQUEST_BYTES: usize = 120;
const ANSWER_BYTES: usize = 640;
/// Records each writer cycles through (its own: writer `k` updates the
/// records `k`, `k + 8`, `k + 16`, ...).
const RECORDS_PER_WRITER: u64 = 1_000;
const WRITERS: usize = 8;
const SECTIONS: [&str; 4] = ["lookups", "saves", "idle", "takeover"];

#[derive(Clone)]
struct Args {
    tokens: u64,
    takeover_tokens: Vec<u64>,
    lookups: usize,
    secs: f64,
    rounds: usize,
    reps: usize,
    idle: usize,
    sections: Vec<String>,
    dir: Option<PathBuf>,
    pg_url: Option<String>,
    child: Option<String>,
    store: PathBuf,
    socket: PathBuf,
    index: usize,
    /// `same`: every process on CPU 0; `split`: the serving processes
    /// (owner, echo) on CPU 1 and the others on CPU 0; `None`: wherever
    /// the scheduler puts them. Round-trip times depend on it: on a VM a
    /// wake-up on the other CPU costs tens of µs (see BENCHMARKS.md).
    cpus: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        tokens: 100_000,
        takeover_tokens: vec![100_000, 1_000_000],
        lookups: 10_000,
        secs: 3.0,
        rounds: 2,
        reps: 5,
        idle: 64,
        sections: SECTIONS.iter().map(|s| s.to_string()).collect(),
        dir: None,
        pg_url: std::env::var("TOKENSTORE_TEST_PG_URL")
            .ok()
            .filter(|u| !u.is_empty()),
        child: None,
        store: PathBuf::new(),
        socket: PathBuf::new(),
        index: 0,
        cpus: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--tokens" => args.tokens = number(&value()?)?.max(16),
            "--takeover-tokens" => {
                let list = value()?;
                args.takeover_tokens = if list.is_empty() || list == "none" {
                    Vec::new()
                } else {
                    list.split(',').map(number).collect::<Result<_, _>>()?
                }
            }
            "--lookups" => args.lookups = number(&value()?)?.max(10) as usize,
            "--secs" => args.secs = value()?.parse().map_err(|e| format!("--secs: {e}"))?,
            "--rounds" => args.rounds = number(&value()?)?.max(1) as usize,
            "--reps" => args.reps = number(&value()?)? as usize,
            "--idle" => args.idle = number(&value()?)? as usize,
            "--sections" => {
                args.sections = value()?.split(',').map(str::to_owned).collect();
                if let Some(bad) = args
                    .sections
                    .iter()
                    .find(|s| !SECTIONS.contains(&s.as_str()))
                {
                    return Err(format!(
                        "unknown section {bad:?}; known: {}",
                        SECTIONS.join(",")
                    ));
                }
            }
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            "--pg-url" => args.pg_url = Some(value()?).filter(|u| !u.is_empty()),
            "--child" => args.child = Some(value()?),
            "--store" => args.store = PathBuf::from(value()?),
            "--socket" => args.socket = PathBuf::from(value()?),
            "--index" => args.index = number(&value()?)? as usize,
            "--cpus" => {
                let cpus = value()?;
                if cpus != "same" && cpus != "split" {
                    return Err(format!("--cpus is same or split, not {cpus:?}"));
                }
                args.cpus = Some(cpus);
            }
            "-h" | "--help" => {
                return Err(
                    "usage: bench_shared [--tokens N] [--takeover-tokens N,N|none] \
                            [--lookups N] [--secs S] [--rounds N] [--reps N] [--idle N] \
                            [--dir PATH] [--pg-url URL] [--sections lookups,saves,idle,takeover] \
                            [--cpus same|split]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("bench_shared: {message}");
            std::process::exit(2);
        }
    };
    if let (Some(cpus), Some(role)) = (&args.cpus, &args.child) {
        let serving = matches!(role.as_str(), "owner" | "echo");
        pin_to_cpu(usize::from(cpus == "split" && serving));
    }
    match args.child.as_deref() {
        None => parent::parent(&args),
        Some("load") => child_load(&args),
        Some("echo") => child_echo(&args),
        Some("owner") => child_owner(&args),
        Some("lookups") => child_lookups(&args),
        Some("saver") => child_saver(&args),
        Some("idle") => child_idle(&args),
        Some("waiter") => child_waiter(&args),
        Some(other) => panic!("unknown child role {other}"),
    }
}

// ------------------------------------------------------------- helpers

/// Keeps this process (and the threads it starts) on one CPU.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is the empty set; the calls only read and
    // write the set passed by pointer.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!(
                "bench_shared: cannot pin to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process here.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is valid for writes; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at].as_secs_f64() * 1e6
}

/// `VmRSS` of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// Whether a thread of this process is called `name`.
fn thread_running(name: &str) -> bool {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .any(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim() == name)
        })
}

fn open_shared(store: &Path, want: Role) -> tokenstore::AnyStore {
    let opened = tokenstore::open(store.to_str().expect("a UTF-8 path")).expect("open the store");
    let role = opened
        .info()
        .expect("info")
        .sharing
        .expect("a shared store")
        .role;
    assert_eq!(role, want, "this process should be the store's {want:?}");
    opened
}

fn find(store: &dyn TokenStore, query: &OAuthToken) -> Option<OAuthToken> {
    match lookup_key(query) {
        Some(LookupKey::Id(id)) => store.find_token_by_id(id),
        _ => store.find_token(query),
    }
    .expect("find_token")
}

/// Writer `k`'s `i`-th update: one of its own records, a new access token.
fn update(k: usize, i: u64, tag: &str, tokens: u64) -> OAuthToken {
    let mine = (tokens / WRITERS as u64).clamp(1, RECORDS_PER_WRITER);
    let n = (k as u64 + WRITERS as u64 * (i % mine)) % tokens;
    let mut t = token(n);
    t.access_token = Some(engines::secret(&format!("{tag}/{k}"), i));
    t
}

/// One writer's run: saves, its start and end (mono_ns), and the p50 and
/// p99 of its saves' latencies (µs).
struct Span {
    count: u64,
    start: u64,
    end: u64,
    p50: f64,
    p99: f64,
}

/// Saves updates for `secs`.
fn save_for(store: &dyn TokenStore, k: usize, tag: &str, tokens: u64, secs: f64) -> Span {
    let start = mono_ns();
    let end_at = start + (secs * 1e9) as u64;
    let mut times = Vec::new();
    loop {
        let t = Instant::now();
        store
            .save_token(&mut update(k, times.len() as u64, tag, tokens))
            .expect("durable save");
        times.push(t.elapsed());
        let now = mono_ns();
        if now >= end_at {
            times.sort_unstable();
            return Span {
                count: times.len() as u64,
                start,
                end: now,
                p50: percentile(&times, 0.5),
                p99: percentile(&times, 0.99),
            };
        }
    }
}

/// A child process with piped stdin and stdout.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    fn start(role: &str, args: &Args, extra: &[String]) -> Proc {
        let mut command = Command::new(std::env::current_exe().expect("current exe"));
        command
            .args(["--child", role, "--tokens", &args.tokens.to_string()])
            .args(["--lookups", &args.lookups.to_string()])
            .args(["--store".as_ref(), args.store.as_os_str()])
            .args(["--socket".as_ref(), args.socket.as_os_str()])
            .args(args.cpus.iter().flat_map(|c| ["--cpus", c.as_str()]))
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        match &args.pg_url {
            Some(url) => command.args(["--pg-url", url]),
            None => command.args(["--pg-url", ""]),
        };
        let mut child = command.spawn().expect("start a child");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Proc {
            child,
            stdin,
            stdout,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).expect("read a child");
        assert!(n > 0, "a child ({}) ended early", self.child.id());
        line.trim_end().to_owned()
    }

    /// The next line that starts with `tag`, split on tabs after it.
    fn expect(&mut self, tag: &str) -> Vec<String> {
        loop {
            let line = self.line();
            let mut fields = line.split('\t');
            if fields.next() == Some(tag) {
                return fields.map(str::to_owned).collect();
            }
        }
    }

    fn say(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}").expect("write a child");
        stdin.flush().expect("flush");
    }

    /// Closes stdin (the child's signal to finish) and waits for it.
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "a child failed: {status}");
    }
}

/// Blocks until stdin closes (or says anything), the children's "go on".
fn wait_stdin_line() -> Option<String> {
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end().to_owned()),
    }
}
