//! What encryption at rest costs a lookup: a plain and an encrypted store of
//! the same tokens (100,000 by default; the benchmarks' Zoho-shaped data),
//! looked up side by side in one run.
//!
//! `cargo run --release --example encryption_cost -- [TOKENS] [LOOKUPS]`
//!
//! Prints a markdown table of p50/p99 per lookup kind and the difference.

use std::time::Instant;

#[path = "../benches/engines/mod.rs"]
mod engines;

use engines::{token, Lookup, Rng};
use tokenstore::{Key, OAuthToken, Options, SledStore, TokenStore};

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at] as f64 / 1000.0
}

/// Both stores without the record cache: a cached record is not decrypted
/// again, so the cache would hide the cost measured here.
fn uncached() -> Options {
    Options::default().record_cache(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let tokens: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let lookups: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(50_000);
    let dir = tempfile::tempdir()?;
    let stores = [
        (
            "plain",
            SledStore::open_with(dir.path().join("plain"), uncached())?,
        ),
        (
            "encrypted",
            SledStore::open_with(
                dir.path().join("encrypted"),
                uncached().encryption(Key::generate()?),
            )?,
        ),
    ];
    for (name, store) in &stores {
        let started = Instant::now();
        store.batch(|batch| (0..tokens).try_for_each(|n| batch.save_token(&mut token(n))))?;
        eprintln!(
            "{name}: {tokens} tokens stored in {:.1?}",
            started.elapsed()
        );
    }

    /// (name, the query for token n, whether it is a lookup by id)
    type Kind = (&'static str, fn(u64) -> OAuthToken, bool);
    let kinds: [Kind; 3] = [
        ("find_token_by_id", |n| Lookup::ById.query(n), true),
        ("find_token by user_name", |n| Lookup::User.query(n), false),
        (
            "find_token by refresh_token",
            |n| Lookup::Refresh.query(n),
            false,
        ),
    ];
    println!("| lookup ({tokens} tokens, {lookups} lookups) | plain p50 | plain p99 | encrypted p50 | encrypted p99 | p50 cost |");
    println!("|---|---|---|---|---|---|");
    for (kind, make, by_id) in kinds {
        let mut times = [Vec::with_capacity(lookups), Vec::with_capacity(lookups)];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        // Warm both caches, then alternate stores lookup by lookup.
        for round in 0..2 {
            for _ in 0..lookups {
                let query = make(rng.below(tokens));
                for (i, (_, store)) in stores.iter().enumerate() {
                    let started = Instant::now();
                    let found = if by_id {
                        store.find_token_by_id(query.id.as_deref().unwrap_or_default())?
                    } else {
                        store.find_token(&query)?
                    };
                    let elapsed = started.elapsed().as_nanos() as u64;
                    assert!(found.is_some());
                    if round == 1 {
                        times[i].push(elapsed);
                    }
                }
            }
        }
        times.iter_mut().for_each(|t| t.sort_unstable());
        let (p50, p99) = (percentile(&times[0], 0.5), percentile(&times[0], 0.99));
        let (e50, e99) = (percentile(&times[1], 0.5), percentile(&times[1], 0.99));
        println!(
            "| {kind} | {p50:.2} µs | {p99:.2} µs | {e50:.2} µs | {e99:.2} µs | {:+.2} µs |",
            e50 - p50
        );
    }
    Ok(())
}
