//! Criterion benchmarks: every lookup rule, a miss, saves (durable and
//! buffered, update and insert), `get_tokens` and reopening, for tokenstore
//! and its peers (SQLite done right, redb, a HashMap), at 10,000 and
//! 100,000 tokens; set `TOKENSTORE_BENCH_1M=1` to add 1,000,000.
//!
//! `cargo bench --bench lookup [-- FILTER]`. For the one-table report with
//! percentiles, memory and disk, see `examples/bench_report.rs`.

mod engines;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use engines::{token, Engine, InMemory, Lookup, Ours, Redb, Rng, Sqlite};
use tokenstore::{Durability, Options, SledStore};

fn sizes() -> Vec<u64> {
    let mut sizes = vec![10_000, 100_000];
    if std::env::var_os("TOKENSTORE_BENCH_1M").is_some() {
        sizes.push(1_000_000);
    }
    sizes
}

fn lookups(c: &mut Criterion) {
    for size in sizes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engines: Vec<(&str, Box<dyn Engine>)> = vec![
            (
                "tokenstore",
                Box::new(Ours::open(&dir.path().join("ours"), Options::default())),
            ),
            ("sqlite", Box::new(Sqlite::open(&dir.path().join("sqlite")))),
            ("redb", Box::new(Redb::open(&dir.path().join("redb")))),
            ("hashmap", Box::new(InMemory::default())),
        ];
        for (_, engine) in &engines {
            engine.load(0..size);
        }
        let mut group = c.benchmark_group(format!("find/{size}"));
        for kind in Lookup::ALL {
            for (name, engine) in &engines {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
                group.bench_function(BenchmarkId::new(kind.label(), name), |b| {
                    b.iter_batched(
                        || kind.query(rng.below(size)),
                        |query| {
                            let found = engine.find(&query);
                            assert_eq!(found.is_some(), kind.expects_hit());
                            black_box(found)
                        },
                        BatchSize::SmallInput,
                    )
                });
            }
        }
        group.finish();

        let mut group = c.benchmark_group(format!("save/{size}"));
        for (name, engine) in &engines {
            let mut rng = Rng(0x2545_F491_4F6C_DD1D);
            let mut round = 0u64;
            group.bench_function(BenchmarkId::new("update", name), |b| {
                b.iter(|| {
                    round += 1;
                    let mut t = token(rng.below(size));
                    t.access_token = Some(engines::secret("renewed", round));
                    engine.save(&t);
                })
            });
            let mut next = size;
            group.bench_function(BenchmarkId::new("insert", name), |b| {
                b.iter(|| {
                    engine.save(&token(next));
                    next += 1;
                })
            });
        }
        group.finish();

        if size <= 100_000 {
            let mut group = c.benchmark_group(format!("get_tokens/{size}"));
            group.sample_size(10);
            for (name, engine) in &engines {
                group.bench_function(*name, |b| b.iter(|| black_box(engine.get_all())));
            }
            group.finish();
        }
        drop(engines);

        // Buffered saves and reopening: tokenstore only (the peers' figures
        // for these are in the report).
        let path = dir.path().join("ours");
        let mut group = c.benchmark_group(format!("tokenstore/{size}"));
        group.sample_size(10);
        group.bench_function("reopen", |b| {
            b.iter(|| drop(black_box(SledStore::open(&path).expect("reopen"))))
        });
        let buffered = Ours::open(&path, Options::default().durability(Durability::BUFFERED));
        let mut rng = Rng(7);
        group.bench_function("save update (buffered)", |b| {
            b.iter(|| buffered.save(&token(rng.below(size))))
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = lookups
}
criterion_main!(benches);
