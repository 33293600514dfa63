//! `PostgresStore` shared by many processes: eight processes writing one
//! database at once, and clients killed mid-transaction. Needs a server: run
//! tests/postgres/run.sh (without `TOKENSTORE_TEST_PG_URL` every test prints
//! SKIPPED).
//!
//! The tests re-execute this binary as a child (the ignored test
//! `child_process`, selected by `TOKENSTORE_PG_CHILD`).

#[path = "support/postgres.rs"]
mod postgres_db;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use postgres_db::TestDb;
use tokenstore::{Error, OAuthToken, PostgresStore, TokenStore};

const CHILD_VAR: &str = "TOKENSTORE_PG_CHILD";
const MARK: &str = "@@ ";

fn connect(db: &TestDb) -> PostgresStore {
    PostgresStore::connect(&db.url).expect("connect")
}

fn spawn_child(role: &str, url: &str, env: &[(&str, String)]) -> Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--ignored",
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_VAR, role)
        .env("CHILD_URL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (name, value) in env {
        command.env(name, value);
    }
    command.spawn().expect("spawn the child")
}

/// Runs as a child process of the tests below; does nothing otherwise.
#[test]
#[ignore = "a child process of the multi-process tests, started by them"]
fn child_process() {
    let Ok(role) = std::env::var(CHILD_VAR) else {
        return;
    };
    let url = std::env::var("CHILD_URL").unwrap();
    match role.as_str() {
        "worker" => worker(&url),
        "batcher" => batcher(&url),
        other => panic!("unknown child role {other}"),
    }
}

// ---- 8 processes × 200 operations on 32 shared users ----

const PROCESSES: usize = 8;
const OPS: usize = 200;
const SHARED: usize = 32;

fn shared_user(k: usize) -> String {
    format!("shared{k}@example.com")
}

fn own_user(process: usize, k: usize) -> String {
    format!("p{process}-own{k}@example.com")
}

/// One child: waits for the common start, then 200 operations, logging each
/// acknowledged one to its log file (one line, written before the next op).
fn worker(url: &str) {
    let process: usize = std::env::var("CHILD_P").unwrap().parse().unwrap();
    let start_at: i64 = std::env::var("CHILD_START_AT").unwrap().parse().unwrap();
    let mut log = std::fs::File::create(std::env::var("CHILD_LOG").unwrap()).unwrap();
    let store = PostgresStore::connect(url).unwrap();
    while tokenstore::now_ms() < start_at {
        std::thread::sleep(Duration::from_millis(1));
    }
    let save_shared = |k: usize, i: usize, log: &mut std::fs::File| {
        let refresh = format!("1000.refresh-s{k}-p{process}-{i}");
        let mut token = OAuthToken::new()
            .with_user_name(shared_user(k))
            .with_client_id("1000.CLIENT")
            .with_refresh_token(refresh.clone())
            .with_access_token(format!("1000.access-s{k}-p{process}-{i}"));
        store.save_token(&mut token).unwrap();
        writeln!(log, "shared {k} {refresh}").unwrap();
    };
    for i in 0..OPS {
        if i < SHARED {
            // Every process saves the same new users at the same moment.
            save_shared(i, i, &mut log);
        } else if i % 10 == 9 {
            let k = (i * 7 + process) % SHARED;
            let query = OAuthToken::new().with_user_name(shared_user(k));
            if let Some(found) = store.find_token(&query).unwrap() {
                store.delete_token(found.id.as_deref().unwrap()).unwrap();
            }
            writeln!(log, "delshared {k}").unwrap();
        } else if i % 4 == 0 {
            let k = (i / 4) % 8;
            let user = own_user(process, k);
            if i % 3 == 0 {
                let query = OAuthToken::new().with_user_name(user);
                if let Some(found) = store.find_token(&query).unwrap() {
                    assert!(store.delete_token(found.id.as_deref().unwrap()).unwrap());
                }
                writeln!(log, "delown {k}").unwrap();
            } else {
                let access = format!("1000.access-o{process}-{k}-{i}");
                let mut token = OAuthToken::new()
                    .with_user_name(user)
                    .with_access_token(access.clone());
                store.save_token(&mut token).unwrap();
                writeln!(log, "own {k} {access}").unwrap();
            }
        } else {
            save_shared((i * 5 + process) % SHARED, i, &mut log);
        }
    }
}

#[test]
fn eight_processes_share_one_database() {
    let Some(db) = TestDb::new("eight_processes_share_one_database") else {
        return;
    };
    let store = connect(&db);
    let logs = tempfile::tempdir().unwrap();
    let start_at = tokenstore::now_ms() + 3_000;
    let children: Vec<Child> = (0..PROCESSES)
        .map(|p| {
            spawn_child(
                "worker",
                &db.url,
                &[
                    ("CHILD_P", p.to_string()),
                    ("CHILD_START_AT", start_at.to_string()),
                    (
                        "CHILD_LOG",
                        logs.path().join(p.to_string()).display().to_string(),
                    ),
                ],
            )
        })
        .collect();
    for mut child in children {
        let status = child.wait().unwrap();
        assert!(status.success(), "a worker failed: {status}");
    }

    let mut acknowledged = 0;
    let mut shared_refresh: HashMap<usize, HashSet<String>> = HashMap::new();
    let mut own_expected: BTreeMap<(usize, usize), Option<String>> = BTreeMap::new();
    for p in 0..PROCESSES {
        let log = std::fs::read_to_string(logs.path().join(p.to_string())).unwrap();
        assert_eq!(
            log.lines().count(),
            OPS,
            "process {p} acknowledged every op"
        );
        for line in log.lines() {
            acknowledged += 1;
            let parts: Vec<&str> = line.split(' ').collect();
            let k: usize = parts[1].parse().unwrap();
            match parts[0] {
                "shared" => {
                    shared_refresh
                        .entry(k)
                        .or_default()
                        .insert(parts[2].to_owned());
                }
                "own" => {
                    own_expected.insert((p, k), Some(parts[2].to_owned()));
                }
                "delown" => {
                    own_expected.insert((p, k), None);
                }
                "delshared" => {}
                other => panic!("unknown log line {other}"),
            }
        }
    }

    let tokens = store.get_tokens().unwrap();
    let mut by_user: HashMap<String, Vec<OAuthToken>> = HashMap::new();
    for token in &tokens {
        by_user
            .entry(token.user_name.clone().unwrap())
            .or_default()
            .push(token.clone());
    }
    let mut lost = 0;
    for (user, records) in &by_user {
        assert_eq!(records.len(), 1, "one record per user: {user}");
    }
    for k in 0..SHARED {
        if let Some(records) = by_user.get(&shared_user(k)) {
            let refresh = records[0].refresh_token.clone().unwrap();
            if !shared_refresh[&k].contains(&refresh) {
                lost += 1;
            }
        }
    }
    for ((p, k), expected) in &own_expected {
        let found = by_user
            .get(&own_user(*p, *k))
            .and_then(|r| r[0].access_token.clone());
        if &found != expected {
            lost += 1;
        }
    }
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{report}");
    let last = store.last_issued_id().unwrap();
    let ids: HashSet<&str> = tokens.iter().map(|t| t.id.as_deref().unwrap()).collect();
    assert_eq!(ids.len(), tokens.len());
    assert!(tokens
        .iter()
        .all(|t| t.id.as_deref().unwrap().parse::<u64>().unwrap() <= last));
    eprintln!(
        "FIGURES eight processes: {} records, {acknowledged} acknowledged writes, {lost} lost, \
         id counter at {last}",
        tokens.len()
    );
    assert_eq!(lost, 0);
}

// ---- a client killed mid-transaction ----

const BATCH: usize = 10;

fn batch_user(round: usize, n: usize, j: usize) -> String {
    format!("r{round}-b{n}-{j}@example.com")
}

/// Saves batches of ten new users, each followed by one single save, and
/// prints `ack N` after batch N committed, until it is killed.
fn batcher(url: &str) {
    let round: usize = std::env::var("CHILD_ROUND").unwrap().parse().unwrap();
    let store = PostgresStore::connect(url).unwrap();
    let mut out = std::io::stdout();
    for n in 0.. {
        store
            .batch(|batch| {
                for j in 0..BATCH {
                    let mut token = OAuthToken::new()
                        .with_user_name(batch_user(round, n, j))
                        .with_refresh_token(format!("1000.refresh-{round}-{n}-{j}"));
                    batch.save_token(&mut token)?;
                }
                Ok::<_, Error>(())
            })
            .unwrap();
        let mut single = OAuthToken::new()
            .with_user_name(format!("r{round}-single{n}@example.com"))
            .with_access_token(format!("1000.access-{round}-{n}"));
        store.save_token(&mut single).unwrap();
        writeln!(out, "{MARK}ack {n}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn a_client_killed_mid_transaction_leaves_nothing_half_applied() {
    let Some(db) = TestDb::new("a_client_killed_mid_transaction_leaves_nothing_half_applied")
    else {
        return;
    };
    let store = connect(&db);
    let mut rounds_with_partial_work = 0;
    for round in 0..4 {
        let mut child = spawn_child("batcher", &db.url, &[("CHILD_ROUND", round.to_string())]);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked = None;
        while acked.is_none_or(|n: usize| n < 2 + round) {
            let line = lines.next().expect("the child acknowledges").unwrap();
            if let Some(n) = line.split(MARK).nth(1) {
                acked = Some(n.trim_start_matches("ack ").parse().unwrap());
            }
        }
        std::thread::sleep(Duration::from_millis(7 * round as u64));
        child.kill().unwrap();
        child.wait().unwrap();
        let acked = acked.unwrap();

        let report = store.check().unwrap();
        assert!(report.is_ok(), "{report}");
        let users: HashSet<String> = store
            .get_tokens()
            .unwrap()
            .into_iter()
            .map(|t| t.user_name.unwrap())
            .collect();
        for n in 0..=acked + 2 {
            let present = (0..BATCH)
                .filter(|j| users.contains(&batch_user(round, n, *j)))
                .count();
            assert!(present == 0 || present == BATCH, "batch {n}: {present}");
            if n <= acked {
                assert_eq!(present, BATCH, "acknowledged batch {n} is present");
            } else if present > 0 {
                rounds_with_partial_work += 1;
            }
        }
        // The killed client's lock is gone: the next write goes through.
        let started = Instant::now();
        let mut token = OAuthToken::new()
            .with_user_name(format!("after-kill-{round}"))
            .with_access_token(format!("1000.after-{round}"));
        store.save_token(&mut token).unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        let last = store.last_issued_id().unwrap();
        assert!(store.get_tokens().unwrap().iter().all(|t| t
            .id
            .as_deref()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            <= last));
    }
    eprintln!(
        "FIGURES kill: batches committed after the last ack seen: {rounds_with_partial_work}"
    );
}
