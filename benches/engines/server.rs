//! What the server backends' benchmarks (examples/bench_postgres.rs,
//! examples/bench_mysql.rs) measure alike: lookups per rule (p50/p99) and
//! durable saves with 1 and 8 writers, one Markdown row per engine.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use super::{token, Engine, Lookup, Rng};

/// How much a run measures.
pub struct Sizes {
    pub tokens: u64,
    pub lookups: usize,
    pub saves: usize,
}

pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at].as_secs_f64() * 1e6
}

/// Durable saves per second with `writers` threads, each rotating the
/// access token of its own users.
pub fn saves_per_second(engine: &dyn Engine, tokens: u64, writers: u64, saves: usize) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for w in 0..writers {
            scope.spawn(move || {
                let mut rng = Rng(0x9E37_79B9 + w);
                for s in 0..saves / writers as usize {
                    let n = (rng.below(tokens / writers) * writers) + w;
                    let mut t = token(n);
                    t.access_token = Some(format!("1000.rotated-{writers}-{w}-{s}"));
                    engine.save(&t);
                }
            });
        }
    });
    (saves / writers as usize * writers as usize) as f64 / started.elapsed().as_secs_f64()
}

/// New users (no id: the counter issues one) per second.
pub fn new_users_per_second(engine: &dyn Engine, writers: u64, saves: usize) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for w in 0..writers {
            scope.spawn(move || {
                for s in 0..saves / writers as usize {
                    let mut t = token(10_000_000 + writers * 100_000 + w * 10_000 + s as u64);
                    t.id = None;
                    engine.save(&t);
                }
            });
        }
    });
    (saves / writers as usize * writers as usize) as f64 / started.elapsed().as_secs_f64()
}

pub fn measure(name: &str, engine: &dyn Engine, args: &Sizes) {
    let started = Instant::now();
    engine.load(0..args.tokens);
    let load = started.elapsed();
    let mut row = format!("| {name} | {:.1} s |", load.as_secs_f64());
    let mut rng = Rng(0x2545_F491);
    for lookup in [
        Lookup::ById,
        Lookup::User,
        Lookup::Access,
        Lookup::Refresh,
        Lookup::Grant,
    ] {
        let mut times = Vec::with_capacity(args.lookups);
        for _ in 0..args.lookups {
            let n = rng.below(args.tokens);
            let query = lookup.query(n);
            let t = Instant::now();
            let found = engine.find(&query);
            times.push(t.elapsed());
            assert!(found.is_some(), "{name}: {lookup:?} {n} missing");
        }
        times.sort();
        row += &format!(
            " {:.0} / {:.0} |",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
    for writers in [1, 8] {
        row += &format!(
            " {:.0} |",
            saves_per_second(engine, args.tokens, writers, args.saves)
        );
    }
    println!("{row}");
}

/// One rule's lookups on engines holding the same records, in `rounds`
/// rounds that take turns between them (which goes first rotates too), so
/// that all see the same moments of a shared machine: each engine's p50 /
/// p99 (µs).
pub fn interleaved<const N: usize>(
    engines: [&dyn Engine; N],
    rule: Lookup,
    tokens: u64,
    lookups: usize,
    rounds: usize,
) -> [(f64, f64); N] {
    let per_round = (lookups / rounds).max(1);
    let mut rng = Rng(0x5DEE_CE66);
    let mut times: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::new());
    for round in 0..rounds {
        for turn in 0..N {
            let which = (round + turn) % N;
            for _ in 0..per_round {
                let query = rule.query(rng.below(tokens));
                let t = Instant::now();
                let found = engines[which].find(&query);
                times[which].push(t.elapsed());
                assert!(found.is_some(), "{rule:?} missing");
            }
        }
    }
    times.map(|mut times| {
        times.sort();
        (percentile(&times, 0.5), percentile(&times, 0.99))
    })
}
