//! Profiling harness (issue 14): one engine, one lookup kind, many random
//! lookups in a tight loop, so `perf record` / `valgrind --tool=callgrind`
//! see only the lookup path.
//!
//! ```text
//! cargo run --release --example lookup_profile -- ENGINE KIND TOKENS LOOKUPS DIR [SLED_CACHE_MIB]
//! ```
//! ENGINE: tokenstore | hashmap | both (side by side in one process, passes
//! alternating); KIND: id | user | access | refresh | grant | miss. The
//! tokenstore store is loaded into DIR once and reused; SLED_CACHE_MIB sets
//! `Options::cache_capacity` (default options otherwise). Prints the mean,
//! p50 and p99 of each pass.

#[path = "../benches/engines/mod.rs"]
mod engines;

use std::time::Instant;

use engines::{Engine, InMemory, Lookup, Ours, Rng};
use tokenstore::Options;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (engine, kind, tokens, lookups, dir, sled_cache) = match &args[..] {
        [e, k, t, l, d] => (e, k, t, l, d, None),
        [e, k, t, l, d, c] => (
            e,
            k,
            t,
            l,
            d,
            Some(c.parse::<u64>().expect("SLED_CACHE_MIB")),
        ),
        _ => {
            eprintln!("usage: lookup_profile ENGINE KIND TOKENS LOOKUPS DIR [SLED_CACHE_MIB]");
            std::process::exit(2);
        }
    };
    let options = || match sled_cache {
        Some(mib) => Options::default().cache_capacity(mib << 20),
        None => Options::default(),
    };
    let tokens: u64 = tokens.parse().expect("TOKENS");
    let lookups: usize = lookups.parse().expect("LOOKUPS");
    let kind = match kind.as_str() {
        "id" => Lookup::ById,
        "user" => Lookup::User,
        "access" => Lookup::Access,
        "refresh" => Lookup::Refresh,
        "grant" => Lookup::Grant,
        _ => Lookup::Miss,
    };
    let open_ours = || {
        let path = std::path::Path::new(dir).join(format!("store-{tokens}"));
        if !path.exists() {
            Ours::open(&path, Options::default()).load(0..tokens);
        }
        let e = Ours::open(&path, options());
        e.warm();
        Box::new(e) as Box<dyn Engine>
    };
    let open_map = || {
        let e = InMemory::default();
        e.load(0..tokens);
        Box::new(e) as Box<dyn Engine>
    };
    // `both`: the two side by side in one process, passes alternating.
    let engines: Vec<(&str, Box<dyn Engine>)> = match engine.as_str() {
        "hashmap" => vec![("hashmap", open_map())],
        "both" => vec![("hashmap", open_map()), ("tokenstore", open_ours())],
        _ => vec![("tokenstore", open_ours())],
    };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let queries: Vec<_> = (0..lookups)
        .map(|_| kind.query(rng.below(tokens)))
        .collect();
    for pass in 0..3 {
        for (name, engine) in &engines {
            let mut times = Vec::with_capacity(lookups);
            let started = Instant::now();
            let mut found = 0usize;
            for q in &queries {
                let t = Instant::now();
                found += usize::from(run(engine.as_ref(), q));
                times.push(t.elapsed());
            }
            let per = started.elapsed().as_secs_f64() * 1e6 / lookups as f64;
            times.sort_unstable();
            let at = |p: f64| times[((lookups - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
            eprintln!(
                "pass {pass} {name}: mean {per:.3} µs, p50 {:.2} µs, p99 {:.2} µs, {found} found",
                at(0.5),
                at(0.99)
            );
        }
    }
}

#[inline(never)]
fn run(engine: &dyn Engine, q: &tokenstore::OAuthToken) -> bool {
    engine.find(q).is_some()
}
