//! The benchmark report: tokenstore against SQLite (indexed, WAL), the
//! published sample's approach, redb and a HashMap, on the same Zoho-shaped
//! data, in one run, as markdown tables (BENCHMARKS.md is its output).
//!
//! ```text
//! cargo run --release --example bench_report -- [--tokens 10000,100000,1000000]
//!     [--lookups 20000] [--saves 2000] [--engines tokenstore,sqlite,...] [--dir PATH]
//! ```
//!
//! Each engine runs in child processes of this run, one engine after the
//! other: one process loads the data set and closes it, a fresh one reopens
//! it (timed, twice) and serves (so each peak-memory figure is that engine's
//! serving alone): per lookup kind a warm-up pass and a
//! measured pass of `--lookups` uniformly random lookups, a hot-set pass
//! (1,000 users), `get_tokens`, durable saves, concurrent readers and
//! writers. The parent prints the tables.

#[path = "../benches/engines/mod.rs"]
mod engines;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engines::{token, Engine, InMemory, Lookup, Ours, Redb, Rng, Sample, Sqlite};
use tokenstore::{Durability, Key, Options};

const ENGINES: [&str; 7] = [
    "tokenstore",
    "tokenstore-before",
    "tokenstore-encrypted",
    "sqlite",
    "redb",
    "hashmap",
    "sample",
];
/// The record cache bound `tokenstore-before` sets: the default before it
/// followed the store's size (issue 14).
const BEFORE_RECORD_CACHE: u64 = 64 << 20;
/// The sample scans the whole table per lookup: it runs at 100,000 tokens
/// at most, with this many lookups per kind.
const SAMPLE_MAX_TOKENS: u64 = 100_000;
const SAMPLE_LOOKUPS: usize = 200;
const HOT_SET: u64 = 1_000;

struct Args {
    tokens: Vec<u64>,
    lookups: usize,
    saves: usize,
    engines: Vec<String>,
    dir: Option<PathBuf>,
    child: Option<String>,
    /// In a child: `load` (build the store at `store`, then exit) or `serve`
    /// (open it and measure).
    phase: String,
    store: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        tokens: vec![10_000, 100_000, 1_000_000],
        lookups: 20_000,
        saves: 2_000,
        engines: ENGINES.iter().map(|e| e.to_string()).collect(),
        dir: None,
        child: None,
        phase: String::from("serve"),
        store: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--tokens" => {
                args.tokens = value()?
                    .split(',')
                    .map(number)
                    .collect::<Result<_, _>>()?
            }
            "--lookups" => args.lookups = number(&value()?)? as usize,
            "--saves" => args.saves = number(&value()?)?.max(8) as usize,
            "--engines" => {
                let list = value()?;
                args.engines = list.split(',').map(str::to_owned).collect();
                if let Some(bad) = args.engines.iter().find(|e| !ENGINES.contains(&e.as_str())) {
                    return Err(format!("unknown engine {bad:?}; known: {}", ENGINES.join(",")));
                }
            }
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            "--child" => args.child = Some(value()?),
            "--phase" => args.phase = value()?,
            "--store" => args.store = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                return Err("usage: bench_report [--tokens N,N,..] [--lookups N] [--saves N] \
                            [--engines tokenstore,tokenstore-encrypted,sqlite,redb,hashmap,sample] [--dir PATH]"
                    .into())
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
            eprintln!("bench_report: {message}");
            std::process::exit(2);
        }
    };
    match &args.child {
        Some(engine) => child(engine, &args),
        None => parent(&args),
    }
}

// ------------------------------------------------------------- measuring

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at].as_secs_f64() * 1e6
}

/// Runs `op` `count` times; prints `row <name> <p50 µs> <p99 µs> <ops/s>`.
fn timed(name: &str, count: usize, mut op: impl FnMut(usize)) {
    let mut times = Vec::with_capacity(count);
    let started = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        op(i);
        times.push(t.elapsed());
    }
    let total = started.elapsed();
    times.sort_unstable();
    println!(
        "row\t{name}\t{:.2}\t{:.2}\t{:.0}",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        count as f64 / total.as_secs_f64()
    );
}

fn stat(name: &str, value: impl std::fmt::Display) {
    println!("stat\t{name}\t{value}");
}

/// `VmHWM` or `VmRSS` of this process, in bytes.
fn memory(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resets `VmHWM` to the current RSS (Linux: `clear_refs` 5).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Bytes allocated on disk under `dir`.
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

fn open(engine: &str, dir: &Path, durability: Durability) -> Box<dyn Engine> {
    let key = || Key::from_bytes([0x5A; 32]);
    match engine {
        "tokenstore" => Box::new(Ours::open(dir, Options::default().durability(durability))),
        "tokenstore-before" => Box::new(Ours::open(
            dir,
            Options::default()
                .durability(durability)
                .record_cache(BEFORE_RECORD_CACHE)
                .warm_on_open(false),
        )),
        "tokenstore-encrypted" => Box::new(Ours::open(
            dir,
            Options::default().durability(durability).encryption(key()),
        )),
        "sqlite" => Box::new(Sqlite::open(dir)),
        "redb" => Box::new(Redb::open(dir)),
        "hashmap" => Box::new(InMemory::default()),
        "sample" => Box::new(Sample::open(dir)),
        other => unreachable!("engine {other}"),
    }
}

/// One engine, one data set, one phase, printed as TSV lines. Loading and
/// serving run in separate processes, so the serving process's memory is
/// what serving takes, not what the load left allocated.
fn child(name: &str, args: &Args) {
    let tokens = args.tokens[0];
    let dir = args.store.clone().expect("--store");
    let lookups = if name == "sample" {
        SAMPLE_LOOKUPS
    } else {
        args.lookups
    };
    let saves = if name == "sample" {
        SAMPLE_LOOKUPS
    } else {
        args.saves
    };

    let load = || {
        let started = Instant::now();
        let engine = open(name, &dir, Durability::Durable);
        engine.load(0..tokens);
        stat("load_s", format!("{:.1}", started.elapsed().as_secs_f64()));
        stat("load_peak_rss", memory("VmHWM:"));
        engine
    };
    if args.phase == "load" {
        let engine = load();
        // What closing costs after the load (tokenstore: the log replay sled
        // would otherwise do at the next open, see `Resnapshot`).
        let started = Instant::now();
        drop(engine);
        stat(
            "close_ms",
            format!("{:.0}", started.elapsed().as_secs_f64() * 1e3),
        );
        return;
    }

    // Reopen after a clean close: the time until the first lookup has
    // answered; then once more (an engine may do its recovery work at the
    // first open). Peak memory from here on is what serving takes, caches
    // included.
    let engine = if name == "hashmap" {
        let engine = load();
        reset_peak();
        engine
    } else {
        reset_peak();
        let mut reopened = None;
        let mut opened = Instant::now();
        for key in ["reopen_ms", "reopen2_ms"] {
            drop(reopened.take());
            if name == "sqlite" {
                Sqlite::open(&dir).close();
            }
            opened = Instant::now();
            let engine = open(name, &dir, Durability::Durable);
            assert!(engine.find(&Lookup::User.query(tokens / 2)).is_some());
            stat(key, format!("{:.1}", opened.elapsed().as_secs_f64() * 1e3));
            reopened = Some(engine);
        }
        let engine = reopened.expect("reopened");
        if name == "tokenstore" {
            // The default warms the record cache in the background from the
            // open on: measure once it is done, and say when that was.
            engine.warm();
            stat(
                "warm_ms",
                format!("{:.0}", opened.elapsed().as_secs_f64() * 1e3),
            );
        }
        engine
    };
    stat("disk_bytes", disk_usage(&dir));

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for kind in Lookup::ALL {
        for pass in 0..2 {
            let queries: Vec<_> = (0..lookups)
                .map(|_| kind.query(rng.below(tokens)))
                .collect();
            let label = if pass == 0 { "warmup" } else { kind.label() };
            timed(label, lookups, |i| {
                let found = engine.find(&queries[i]);
                assert_eq!(found.is_some(), kind.expects_hit(), "{kind:?}");
            });
        }
    }
    let hot: Vec<_> = (0..lookups)
        .map(|_| Lookup::User.query(rng.below(HOT_SET.min(tokens))))
        .collect();
    for label in ["warmup", "find_token by user_name, 1,000 hot users"] {
        timed(label, lookups, |i| assert!(engine.find(&hot[i]).is_some()));
    }
    // What serving lookups holds (caches filled), before `get_tokens`
    // allocates a copy of every record.
    stat("lookup_rss", memory("VmRSS:"));

    if name != "sample" || tokens <= 10_000 {
        let started = Instant::now();
        assert_eq!(engine.get_all(), tokens as usize);
        stat(
            "get_tokens_ms",
            format!("{:.0}", started.elapsed().as_secs_f64() * 1e3),
        );
    }

    // Durable saves: the SDK saving a refreshed token, and a new user.
    let updates: Vec<_> = (0..saves)
        .map(|i| {
            let mut t = token(rng.below(tokens));
            t.access_token = Some(engines::secret("renewed", i as u64));
            t
        })
        .collect();
    timed("save_token, update", saves, |i| engine.save(&updates[i]));
    timed("save_token, insert", saves, |i| {
        engine.save(&token(tokens + i as u64))
    });

    // Concurrent readers and durable writers: aggregate operations per second.
    let engine: Arc<dyn Engine> = Arc::from(engine);
    for threads in [1usize, 2, 4] {
        let per_thread = lookups;
        let rate = run_threads(threads, per_thread, &engine, move |engine, t, i| {
            let n = (t as u64 * 7_919 + i as u64 * 104_729) % tokens;
            assert!(engine.find(&Lookup::User.query(n)).is_some());
        });
        stat(&format!("readers_{threads}"), format!("{rate:.0}"));
    }
    for threads in [1usize, 8] {
        let per_thread = (saves / threads).max(1) / 2;
        let rate = run_threads(threads, per_thread, &engine, move |engine, t, i| {
            let n = (t + threads * i) as u64 % tokens;
            let mut update = token(n);
            update.access_token = Some(engines::secret(
                &format!("concurrent{threads}"),
                (t * 1_000_000 + i) as u64,
            ));
            engine.save(&update);
        });
        stat(&format!("writers_{threads}"), format!("{rate:.0}"));
    }
    stat("serving_peak_rss", memory("VmHWM:"));
    stat("durable", engine.durable());

    // Buffered saves (tokenstore only: the peers' comparable modes differ).
    if name.starts_with("tokenstore") {
        drop(engine);
        let engine = open(name, &dir, Durability::BUFFERED);
        timed("save_token, update (buffered)", saves, |i| {
            engine.save(&updates[i])
        });
    }
}

/// Runs `op` `per_thread` times on each of `threads` threads; returns the
/// operations per second from the first thread's start to the last one's end.
fn run_threads(
    threads: usize,
    per_thread: usize,
    engine: &Arc<dyn Engine>,
    op: impl Fn(&dyn Engine, usize, usize) + Send + Sync + Copy + 'static,
) -> f64 {
    let barrier = Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let engine = Arc::clone(engine);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let started = Instant::now();
                for i in 0..per_thread {
                    op(engine.as_ref(), t, i);
                }
                (started, Instant::now())
            })
        })
        .collect();
    let spans: Vec<(Instant, Instant)> = handles
        .into_iter()
        .map(|h| h.join().expect("worker"))
        .collect();
    let first = spans.iter().map(|s| s.0).min().expect("a thread");
    let last = spans.iter().map(|s| s.1).max().expect("a thread");
    (threads * per_thread) as f64 / (last - first).as_secs_f64()
}

// ------------------------------------------------------------- reporting

#[derive(Default)]
struct Measured {
    /// operation → (p50 µs, p99 µs, ops/s)
    rows: BTreeMap<String, (f64, f64, f64)>,
    stats: BTreeMap<String, String>,
}

fn run_child(engine: &str, tokens: u64, args: &Args) -> Measured {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let temp = tempfile::tempdir_in(&base).expect("temp dir");
    let store = temp.path().join(engine);
    let started = Instant::now();
    let phases: &[&str] = if engine == "hashmap" {
        &["serve"]
    } else {
        &["load", "serve"]
    };
    let mut stdout = String::new();
    for phase in phases {
        let exe = std::env::current_exe().expect("current exe");
        let output = Command::new(exe)
            .args([
                "--child",
                engine,
                "--phase",
                phase,
                "--tokens",
                &tokens.to_string(),
            ])
            .args(["--lookups", &args.lookups.to_string()])
            .args(["--saves", &args.saves.to_string()])
            .arg("--store")
            .arg(&store)
            .output()
            .expect("run child");
        if !output.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&output.stderr));
            panic!(
                "{engine} ({phase}) at {tokens} tokens failed: {}",
                output.status
            );
        }
        stdout += &String::from_utf8_lossy(&output.stdout);
    }
    eprintln!(
        "bench_report: {engine} at {tokens} tokens: {:.0?}",
        started.elapsed()
    );
    let mut measured = Measured::default();
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["row", "warmup", ..] => {}
            ["row", name, p50, p99, rate] => {
                let f = |s: &str| s.parse::<f64>().expect("number");
                measured
                    .rows
                    .insert(name.to_string(), (f(p50), f(p99), f(rate)));
            }
            ["stat", name, value] => {
                measured.stats.insert(name.to_string(), value.to_string());
            }
            _ => {}
        }
    }
    measured
}

fn engine_title(engine: &str) -> &'static str {
    match engine {
        "tokenstore" => "tokenstore",
        "tokenstore-before" => "tokenstore (before: 64 MiB record cache, no warm-up)",
        "tokenstore-encrypted" => "tokenstore (encrypted)",
        "sqlite" => "SQLite (indexed, WAL)",
        "redb" => "redb",
        "hashmap" => "HashMap (limit)",
        "sample" => "sample approach",
        _ => "?",
    }
}

fn micros(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.2} µs")
    }
}

fn bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.1} KB", b / 1e3)
    }
}

fn parent(args: &Args) {
    println!("{}", machine());
    for &tokens in &args.tokens {
        let engines: Vec<&str> = args
            .engines
            .iter()
            .map(String::as_str)
            .filter(|e| *e != "sample" || tokens <= SAMPLE_MAX_TOKENS)
            .collect();
        let results: Vec<(&str, Measured)> = engines
            .iter()
            .map(|e| (*e, run_child(e, tokens, args)))
            .collect();
        print_tables(tokens, args, &results);
    }
}

fn print_tables(tokens: u64, args: &Args, results: &[(&str, Measured)]) {
    let ours = results
        .iter()
        .find(|(e, _)| *e == "tokenstore")
        .map(|(_, m)| m);
    let peers: Vec<&(&str, Measured)> = results
        .iter()
        .filter(|(e, _)| ["sqlite", "redb", "hashmap"].contains(e))
        .collect();
    println!("\n## {tokens} tokens\n");
    println!(
        "p50 / p99 per operation ({} uniformly random lookups per kind after a warm-up pass; \
         {} saves; the sample approach: {SAMPLE_LOOKUPS} each). \
         Ratios: the peer's p50 (p99) divided by tokenstore's; above 1, tokenstore is faster.\n",
        args.lookups, args.saves
    );
    let mut header = String::from("| operation |");
    let mut rule = String::from("|---|");
    for (engine, _) in results {
        header += &format!(" {} |", engine_title(engine));
        rule += "---|";
    }
    if ours.is_some() {
        for (engine, _) in &peers {
            header += &format!(" {} ÷ ours |", engine_title(engine));
            rule += "---|";
        }
    }
    println!("{header}\n{rule}");
    let operations: Vec<String> = Lookup::ALL
        .iter()
        .map(|k| k.label().to_string())
        .chain(
            [
                "find_token by user_name, 1,000 hot users",
                "save_token, update",
                "save_token, insert",
                "save_token, update (buffered)",
            ]
            .map(String::from),
        )
        .collect();
    for op in &operations {
        let mut line = format!("| {op} |");
        for (_, m) in results {
            line += &match m.rows.get(op) {
                Some((p50, p99, _)) => format!(" {} / {} |", micros(*p50), micros(*p99)),
                None => " n/a |".to_string(),
            };
        }
        if let Some(ours) = ours {
            for (_, peer) in &peers {
                line += &match (ours.rows.get(op), peer.rows.get(op)) {
                    (Some(o), Some(p)) => format!(" {:.2} ({:.2}) |", p.0 / o.0, p.1 / o.1),
                    _ => " n/a |".to_string(),
                };
            }
        }
        println!("{line}");
    }

    println!("\nWhole-store figures:\n");
    let mut header = String::from("| measure |");
    let mut rule = String::from("|---|");
    for (engine, _) in results {
        header += &format!(" {} |", engine_title(engine));
        rule += "---|";
    }
    println!("{header}\n{rule}");
    let stat_rows: [(&str, &str); 17] = [
        ("load (10,000 per transaction)", "load_s"),
        ("close after loading", "close_ms"),
        (
            "reopen after a clean close, to the first answer",
            "reopen_ms",
        ),
        ("second reopen, nothing written since", "reopen2_ms"),
        (
            "background cache warm-up done, after the open began",
            "warm_ms",
        ),
        ("disk", "disk_bytes"),
        ("disk per token", "disk_per_token"),
        ("peak RSS while loading", "load_peak_rss"),
        ("RSS after the lookups (caches filled)", "lookup_rss"),
        (
            "peak RSS from reopen on (serving, get_tokens included)",
            "serving_peak_rss",
        ),
        ("get_tokens (all records)", "get_tokens_ms"),
        ("durable saves/s, 1 thread (update)", "save_rate"),
        ("lookups/s, 1 reader", "readers_1"),
        ("lookups/s, 2 readers", "readers_2"),
        ("lookups/s, 4 readers", "readers_4"),
        ("saves/s, 1 writer", "writers_1"),
        ("saves/s, 8 writers", "writers_8"),
    ];
    for (title, key) in stat_rows {
        let mut line = format!("| {title} |");
        for (_, m) in results {
            let value = match key {
                "disk_per_token" => m
                    .stats
                    .get("disk_bytes")
                    .map(|b| bytes(b.parse::<f64>().unwrap_or(0.0) / tokens as f64)),
                "save_rate" => m
                    .rows
                    .get("save_token, update")
                    .map(|r| format!("{:.0}", r.2)),
                "disk_bytes" | "load_peak_rss" | "serving_peak_rss" | "lookup_rss" => m
                    .stats
                    .get(key)
                    .map(|b| bytes(b.parse::<f64>().unwrap_or(0.0))),
                "load_s" => m.stats.get(key).map(|s| format!("{s} s")),
                "reopen_ms" | "reopen2_ms" | "get_tokens_ms" | "warm_ms" | "close_ms" => {
                    m.stats.get(key).map(|s| format!("{s} ms"))
                }
                _ => m.stats.get(key).cloned(),
            };
            let durable = m.stats.get("durable").map(String::as_str) != Some("false");
            let value = match (
                value,
                key.starts_with("writers") || key == "save_rate",
                durable,
            ) {
                (Some(v), true, false) => format!("{v} (not durable)"),
                (Some(v), _, _) => v,
                (None, _, _) => "n/a".to_string(),
            };
            line += &format!(" {value} |");
        }
        println!("{line}");
    }
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".into(), |m| m.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(str::to_owned))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!(
        "Machine: {model}, {cores} cores, {total:.0} GiB RAM, Linux; release build; \
         each engine in its own child processes of one run (one loads, one reopens and serves), \
         one after another."
    )
}
