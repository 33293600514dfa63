//! What encryption at rest costs a lookup: a plain and an encrypted store of
//! the same tokens (100,000 by default), looked up side by side in one run.
//!
//! `cargo run --release --example encryption_cost -- [TOKENS] [LOOKUPS]`
//!
//! Prints a markdown table of p50/p99 per lookup kind and the difference.

use std::time::Instant;

use tokenstore::{Key, OAuthToken, Options, SledStore, TokenStore};

fn token(n: u64) -> OAuthToken {
    OAuthToken::new()
        .with_user_name(format!("user{n}@example.com"))
        .with_client_id("1000.ABCDEFGHIJKLMNOPQRSTUVWXYZ0123")
        .with_client_secret("0123456789abcdef0123456789abcdef0123456789")
        .with_refresh_token(format!("1000.{n:032x}.{n:032x}"))
        .with_access_token(format!("1000.{:032x}.{n:032x}", n ^ 0x5555))
        .with_expiry_time(1_763_800_000_000 + n as i64)
        .with_redirect_url("https://app.example.com/oauth/callback")
        .with_api_domain("https://www.zohoapis.com")
}

/// A small xorshift generator: the same lookup sequence for both stores.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at] as f64 / 1000.0
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
            SledStore::open_with(dir.path().join("plain"), Options::default())?,
        ),
        (
            "encrypted",
            SledStore::open_with(
                dir.path().join("encrypted"),
                Options::default().encryption(Key::generate()?),
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
        (
            "find_token_by_id",
            |n| OAuthToken::new().with_id((n + 1).to_string()),
            true,
        ),
        (
            "find_token by user_name",
            |n| OAuthToken::new().with_user_name(format!("user{n}@example.com")),
            false,
        ),
        (
            "find_token by refresh_token",
            |n| {
                OAuthToken::new()
                    .with_client_id("c")
                    .with_client_secret("s")
                    .with_refresh_token(token(n).refresh_token.unwrap())
            },
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
