//! The parent of bench_shared: starts the children, reads them, prints the tables.

use super::*;

/// Writers' lines (`count start end p50 p99`): the aggregate saves/s from
/// the first start to the last end, and the median writer's p50 and p99.
fn combine(lines: &[Vec<String>]) -> (f64, f64, f64) {
    let field = |k: usize| -> Vec<f64> {
        let mut v: Vec<f64> = lines
            .iter()
            .map(|l| l[k].parse().expect("a number"))
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let count: f64 = field(0).iter().sum();
    let (starts, ends) = (field(1), field(2));
    let span = (ends[ends.len() - 1] - starts[0]) / 1e9;
    let median = |v: Vec<f64>| v[v.len() / 2];
    (count / span, median(field(3)), median(field(4)))
}

fn load(args: &Args, tokens: u64, with_peers: bool) -> Vec<String> {
    let mut args = args.clone();
    args.tokens = tokens;
    if !with_peers {
        args.pg_url = None;
    }
    let index = if with_peers { "1" } else { "0" };
    let mut loader = Proc::start("load", &args, &["--index".into(), index.into()]);
    let mut notes = Vec::new();
    loop {
        let line = loader.line();
        if line == "done" {
            break;
        }
        notes.push(line.trim_start_matches("stat\t").replace('\t', ": "));
    }
    loader.finish();
    notes
}

pub fn parent(args: &Args) {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let temp = tempfile::tempdir_in(&base).expect("temp dir");
    let started = Instant::now();
    println!("# Many processes, one store: bench_shared");
    println!();
    println!("{}", machine());
    let mut args = args.clone();
    args.store = temp.path().join(format!("store-{}", args.tokens));
    args.socket = temp.path().join("echo.sock");
    let peers = args.sections.iter().any(|s| s == "lookups");
    let notes = load(&args, args.tokens, peers);
    println!("- setup at {} tokens: {}", args.tokens, notes.join(", "));

    let on = |section: &str| args.sections.iter().any(|s| s == section);
    let mut owner = Proc::start("owner", &args, &[]);
    let ready = owner.expect("ready");
    println!(
        "- owner pid {}: opened in {} ms, warm after {} s",
        owner.pid(),
        ready[0],
        ready[1]
    );
    if on("lookups") {
        lookups(&args);
    }
    if on("saves") {
        saves(&args, &mut owner);
    }
    if on("idle") {
        idle(&args, &owner);
    }
    owner.finish();
    if on("takeover") {
        takeover(&args, temp.path());
    }
    println!();
    println!("(whole run: {:.0} s)", started.elapsed().as_secs_f64());
}

/// Section 1: the lookup rows, from a client process of the running owner.
fn lookups(args: &Args) {
    let mut echo = Proc::start("echo", args, &[]);
    echo.expect("ready");
    let mut lookups = Proc::start("lookups", args, &[]);
    let mut rows: Vec<(String, f64, f64, String)> = Vec::new();
    loop {
        let line = lookups.line();
        let fields: Vec<&str> = line.split('\t').collect();
        match fields[0] {
            "done" => break,
            "row" => rows.push((
                fields[1].to_owned(),
                fields[2].parse().expect("p50"),
                fields[3].parse().expect("p99"),
                fields[4].to_owned(),
            )),
            _ => println!("- {}", fields[1..].join(": ")),
        }
    }
    lookups.finish();
    echo.finish();
    if args.pg_url.is_none() {
        println!("- PostgresStore: skipped (no --pg-url and no TOKENSTORE_TEST_PG_URL)");
    }
    println!();
    println!(
        "## Lookups at {} tokens: p50 / p99 (µs), interleaved in one client process",
        args.tokens
    );
    println!();
    println!("| row | p50 | p99 | p50 / raw | p99 / raw | lookups |");
    println!("|---|---|---|---|---|---|");
    let (raw50, raw99) = (rows[0].1, rows[0].2);
    for (label, p50, p99, n) in &rows {
        println!(
            "| {label} | {p50:.1} | {p99:.1} | {:.2}x | {:.2}x | {n} |",
            p50 / raw50,
            p99 / raw99
        );
    }
}

/// Section 2: durable saves, the owner's threads and client processes alternated.
fn saves(args: &Args, owner: &mut Proc) {
    println!();
    println!(
        "## Durable saves: aggregate saves/s, {WRITERS} writers, {} s each, alternated",
        args.secs
    );
    println!();
    println!(
        "| round | owner's own {WRITERS} threads: saves/s (save p50 / p99) | {WRITERS} client \
         processes: saves/s (save p50 / p99) | clients / owner |"
    );
    println!("|---|---|---|---|");
    for round in 1..=args.rounds {
        owner.say(&format!("writers {}", args.secs));
        let mut lines = Vec::new();
        while let Some(line) = owner_line(owner) {
            lines.push(line);
        }
        let own = combine(&lines);
        let mut savers: Vec<Proc> = (0..WRITERS)
            .map(|k| Proc::start("saver", args, &["--index".into(), k.to_string()]))
            .collect();
        for saver in &mut savers {
            saver.expect("ready");
        }
        for saver in &mut savers {
            saver.say(&format!("go {} clients{round}", args.secs));
        }
        let lines: Vec<Vec<String>> = savers.iter_mut().map(|s| s.expect("saves")).collect();
        for saver in savers {
            saver.finish();
        }
        let theirs = combine(&lines);
        println!(
            "| {round} | {:.0} ({:.0} / {:.0} µs) | {:.0} ({:.0} / {:.0} µs) | {:.2}x |",
            own.0,
            own.1,
            own.2,
            theirs.0,
            theirs.1,
            theirs.2,
            theirs.0 / own.0
        );
    }
}

/// The owner's next `saves` line, `None` at its `end`.
fn owner_line(owner: &mut Proc) -> Option<Vec<String>> {
    let line = owner.line();
    let mut fields = line.split('\t');
    match fields.next() {
        Some("saves") => Some(fields.map(str::to_owned).collect()),
        _ => None,
    }
}

/// Section 3: the owner's memory with idle clients.
fn idle(args: &Args, owner: &Proc) {
    println!();
    println!("## {} idle client processes: the owner's VmRSS", args.idle);
    println!();
    std::thread::sleep(Duration::from_millis(500));
    let (before, threads_before) = (rss(owner.pid()), threads_of(owner.pid()));
    let mut idle: Vec<Proc> = (0..args.idle)
        .map(|k| Proc::start("idle", args, &["--index".into(), k.to_string()]))
        .collect();
    let client_rss: Vec<u64> = idle
        .iter_mut()
        .map(|p| p.expect("idle")[0].parse().expect("rss"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (during, threads_during) = (rss(owner.pid()), threads_of(owner.pid()));
    for p in idle {
        p.finish();
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss(owner.pid());
    let mb = |b: u64| b as f64 / 1e6;
    println!("| owner VmRSS | MB | owner threads |");
    println!("|---|---|---|");
    println!("| before | {:.1} | {threads_before} |", mb(before));
    println!(
        "| with {} idle clients connected | {:.1} ({:+.2} MB, {:+.1} KB per client) | {threads_during} |",
        args.idle,
        mb(during),
        (during as f64 - before as f64) / 1e6,
        (during as f64 - before as f64) / 1e3 / args.idle.max(1) as f64
    );
    println!(
        "| after they exited | {:.1} | {} |",
        mb(after),
        threads_of(owner.pid())
    );
    if !client_rss.is_empty() {
        let mean = client_rss.iter().sum::<u64>() / client_rss.len() as u64;
        println!();
        println!(
            "(each idle client process: {:.1} MB VmRSS on average)",
            mb(mean)
        );
    }
}

/// Section 4: take-over after SIGKILL, at each size.
fn takeover(args: &Args, temp: &Path) {
    println!();
    println!("## Take-over after SIGKILL of the owner: kill to the first answer as the new owner");
    println!();
    println!("| tokens | reps | min | median | max | a fresh owner's open before the kill (ms, each rep) |");
    println!("|---|---|---|---|---|---|");
    for &tokens in &args.takeover_tokens {
        if args.reps == 0 {
            break;
        }
        let mut args = args.clone();
        args.tokens = tokens;
        args.store = temp.join(format!("store-{tokens}"));
        let mut setup = String::new();
        if !args.store.exists() {
            setup = load(&args, tokens, false).join(", ");
        }
        let mut times = Vec::new();
        let mut opens = Vec::new();
        for _ in 0..args.reps {
            let mut owner = Proc::start("owner", &args, &[]);
            opens.push(owner.expect("ready")[0].clone());
            let mut waiter = Proc::start("waiter", &args, &[]);
            let owner_pid: u32 = waiter.expect("ready")[0].parse().expect("pid");
            assert_eq!(owner_pid, owner.pid());
            std::thread::sleep(Duration::from_millis(300));
            let killed = mono_ns();
            owner.child.kill().expect("SIGKILL the owner");
            owner.child.wait().expect("reap the owner");
            let answered: u64 = waiter.expect("answered")[0].parse().expect("time");
            times.push(Duration::from_nanos(answered.saturating_sub(killed)));
            waiter.finish();
        }
        times.sort_unstable();
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
        println!(
            "| {tokens} | {} | {} | {} | {} | {} |",
            times.len(),
            ms(times[0]),
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1]),
            opens.join(", ")
        );
        if !setup.is_empty() {
            println!("| (setup at {tokens}: {setup}) | | | | | |");
        }
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown CPU".into(), |s| s.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    format!("- machine: {cpu}, {cores} cores; load average at start {load}")
}
