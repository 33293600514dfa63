//! PostgresStore in numbers, beside the Zoho DBStore's approach on the same
//! server and SQLite (indexed, WAL) on local disk: p50/p99 per lookup rule
//! and durable saves per second with 1 and 8 writers.
//!
//! ```text
//! cargo run --release --features postgres --example bench_postgres -- \
//!     --url postgres://postgres@127.0.0.1:5432/bench [--tokens 10000] [--lookups 2000] [--saves 400] \
//!     [--tls-url 'postgres://postgres:pw@localhost:5432/bench?sslmode=verify-full&sslrootcert=ca.pem']
//! ```
//!
//! With `--tls-url` (the same server and database over TLS), PostgresStore's
//! lookups over TLS are measured beside the same lookups in plaintext
//! (`--url` with `sslmode=disable`), interleaved in rounds so that both see
//! the same machine, on pooled connections opened before the clock starts.
//!
//! The database named by `--url` is emptied of the tables it uses
//! (`tokenstore_*`, `oauthtoken`). The DBStore approach is Zoho's table
//! (`id` the only key: no unique index on the user or the tokens) with its
//! save: UPDATE by user name, and when no row changed, INSERT with
//! `max(id) + 1`. Both PostgreSQL engines commit durably (the server's
//! defaults: `fsync` and `synchronous_commit` on).

#[path = "../benches/engines/mod.rs"]
mod engines;
#[path = "../benches/engines/server.rs"]
mod server;

use std::time::Instant;

use engines::{token, Engine, Lookup, Rng, Sqlite};
use postgres::{Client, NoTls};
use tokenstore::{OAuthToken, PostgresStore, TokenStore};

struct Args {
    url: String,
    tls_url: Option<String>,
    tokens: u64,
    lookups: usize,
    saves: usize,
}

impl Args {
    fn sizes(&self) -> server::Sizes {
        server::Sizes {
            tokens: self.tokens,
            lookups: self.lookups,
            saves: self.saves,
        }
    }
}

fn parse_args() -> Args {
    let mut args = Args {
        url: String::new(),
        tls_url: None,
        tokens: 10_000,
        lookups: 2_000,
        saves: 400,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--url" => args.url = value,
            "--tls-url" => args.tls_url = Some(value),
            "--tokens" => args.tokens = value.parse().expect("--tokens N"),
            "--lookups" => args.lookups = value.parse().expect("--lookups N"),
            "--saves" => args.saves = value.parse().expect("--saves N"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!args.url.is_empty(), "--url postgres://... is required");
    args
}

/// PostgresStore through the same `Engine` interface as the other peers.
struct Ours(PostgresStore);

impl Engine for Ours {
    fn find(&self, query: &OAuthToken) -> Option<OAuthToken> {
        match query.id.as_deref() {
            Some(id) if query.user_name.is_none() => self.0.find_token_by_id(id).unwrap(),
            _ => self.0.find_token(query).unwrap(),
        }
    }

    fn save(&self, token: &OAuthToken) {
        self.0.save_token(&mut token.clone()).unwrap();
    }

    fn load(&self, range: std::ops::Range<u64>) {
        let start = range.start;
        let end = range.end;
        let mut n = start;
        while n < end {
            let stop = (n + 1_000).min(end);
            self.0
                .batch(|batch| {
                    for k in n..stop {
                        batch.save_token(&mut token(k))?;
                    }
                    Ok::<_, tokenstore::Error>(())
                })
                .unwrap();
            n = stop;
        }
    }

    fn get_all(&self) -> usize {
        self.0.get_tokens().unwrap().len()
    }
}

/// The Zoho DBStore's approach on PostgreSQL: a connection per caller at a
/// time (kept in a list, not in thread-locals, whose destructors run after
/// tokio's own and cannot drop a client).
struct DbStore {
    url: String,
    idle: std::sync::Mutex<Vec<Client>>,
}

const DBSTORE_TABLE: &str = "
DROP TABLE IF EXISTS oauthtoken;
CREATE TABLE oauthtoken (
    id varchar(10) PRIMARY KEY, user_name varchar(255), client_id varchar(255),
    client_secret varchar(255), refresh_token varchar(255), access_token varchar(255),
    grant_token varchar(255), expiry_time varchar(20), redirect_url varchar(255),
    api_domain varchar(255)
);";

impl DbStore {
    fn with<T>(&self, f: impl FnOnce(&mut Client) -> T) -> T {
        let idle = self.idle.lock().unwrap().pop();
        let mut client =
            idle.unwrap_or_else(|| Client::connect(&self.url, NoTls).expect("connect"));
        let out = f(&mut client);
        self.idle.lock().unwrap().push(client);
        out
    }
}

fn row_token(row: &postgres::Row) -> OAuthToken {
    // Field by field: the struct is non-exhaustive.
    let mut token = OAuthToken::new();
    token.id = row.get(0);
    token.user_name = row.get(1);
    token.client_id = row.get(2);
    token.client_secret = row.get(3);
    token.refresh_token = row.get(4);
    token.access_token = row.get(5);
    token.grant_token = row.get(6);
    token.expiry_time = row.get::<_, Option<String>>(7).and_then(|t| t.parse().ok());
    token.redirect_url = row.get(8);
    token.api_domain = row.get(9);
    token
}

impl Engine for DbStore {
    fn find(&self, query: &OAuthToken) -> Option<OAuthToken> {
        let (sql, value) = if let Some(user) = &query.user_name {
            ("SELECT * FROM oauthtoken WHERE user_name = $1", user)
        } else if let (Some(access), None) = (&query.access_token, &query.client_id) {
            ("SELECT * FROM oauthtoken WHERE access_token = $1", access)
        } else if let Some(grant) = &query.grant_token {
            ("SELECT * FROM oauthtoken WHERE grant_token = $1", grant)
        } else if let Some(refresh) = &query.refresh_token {
            ("SELECT * FROM oauthtoken WHERE refresh_token = $1", refresh)
        } else {
            (
                "SELECT * FROM oauthtoken WHERE id = $1",
                query.id.as_ref().unwrap(),
            )
        };
        self.with(|client| client.query_opt(sql, &[value]).unwrap())
            .map(|row| row_token(&row))
    }

    fn save(&self, token: &OAuthToken) {
        let expiry = token.expiry_time.map(|t| t.to_string());
        // The update's and the insert's parameters, in the same order.
        let params: [&(dyn postgres::types::ToSql + Sync); 9] = [
            &token.user_name,
            &token.client_id,
            &token.client_secret,
            &token.refresh_token,
            &token.access_token,
            &token.grant_token,
            &expiry,
            &token.redirect_url,
            &token.api_domain,
        ];
        self.with(|client| {
            let updated = client
                .execute(
                    "UPDATE oauthtoken SET client_id = $2, client_secret = $3, refresh_token = $4, \
                     access_token = $5, grant_token = $6, expiry_time = $7, redirect_url = $8, \
                     api_domain = $9 WHERE user_name = $1",
                    &params,
                )
                .unwrap();
            if updated == 0 {
                client
                    .execute(
                        "INSERT INTO oauthtoken SELECT coalesce(max(id::bigint), 0) + 1, $1, $2, $3, \
                         $4, $5, $6, $7, $8, $9 FROM oauthtoken",
                        &params,
                    )
                    .unwrap();
            }
        });
    }

    fn load(&self, range: std::ops::Range<u64>) {
        self.with(|client| {
            let mut tx = client.transaction().unwrap();
            for n in range {
                let t = token(n);
                tx.execute(
                    "INSERT INTO oauthtoken VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    &[
                        &t.id,
                        &t.user_name,
                        &t.client_id,
                        &t.client_secret,
                        &t.refresh_token,
                        &t.access_token,
                        &t.grant_token,
                        &t.expiry_time.map(|e| e.to_string()),
                        &t.redirect_url,
                        &t.api_domain,
                    ],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        });
    }

    fn get_all(&self) -> usize {
        self.with(|client| client.query("SELECT * FROM oauthtoken", &[]).unwrap().len())
    }
}

fn main() {
    let args = parse_args();
    let mut admin = Client::connect(&args.url, NoTls).expect("connect to --url");
    admin
        .batch_execute("DROP TABLE IF EXISTS tokenstore_records, tokenstore_meta")
        .unwrap();
    admin.batch_execute(DBSTORE_TABLE).unwrap();
    println!(
        "{} tokens, {} lookups per rule (µs p50 / p99), {} durable saves per writer count\n",
        args.tokens, args.lookups, args.saves
    );
    println!("| engine | load | by id | by user_name | by access_token | by refresh_token | by grant_token | saves/s, 1 writer | saves/s, 8 writers |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let ours = Ours(PostgresStore::connect(&args.url).unwrap());
    server::measure("PostgresStore (loopback)", &ours, &args.sizes());
    println!(
        "\nPostgresStore, new users (the counter issues each id): {:.0} saves/s with 1 writer, \
         {:.0} with 8\n",
        server::new_users_per_second(&ours, 1, args.saves),
        server::new_users_per_second(&ours, 8, args.saves)
    );
    drop(ours);
    if let Some(tls_url) = &args.tls_url {
        tls_beside_plaintext(&args, tls_url);
    }
    if std::env::var("BENCH_POSTGRES_ONLY_OURS").is_ok() {
        return;
    }
    let dbstore = DbStore {
        url: args.url.clone(),
        idle: std::sync::Mutex::new(Vec::new()),
    };
    server::measure(
        "Zoho DBStore approach, same server",
        &dbstore,
        &args.sizes(),
    );
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Sqlite::open(dir.path());
    server::measure("SQLite (indexed, WAL, local disk)", &sqlite, &args.sizes());
}

/// PostgresStore's lookups over TLS beside plaintext on the same server and
/// records (loaded by `measure`): rounds of lookups alternating between
/// the two stores, each rule's p50/p99 per connection and the TLS/plaintext
/// ratio of the p50s.
fn tls_beside_plaintext(args: &Args, tls_url: &str) {
    const ROUNDS: usize = 20;
    let separator = if args.url.contains('?') { '&' } else { '?' };
    let plain = PostgresStore::connect(&format!("{}{separator}sslmode=disable", args.url)).unwrap();
    let tls = PostgresStore::connect(tls_url).unwrap();
    let stores = [&plain, &tls];
    let rules = [
        Lookup::ById,
        Lookup::User,
        Lookup::Access,
        Lookup::Refresh,
        Lookup::Grant,
    ];
    let per_round = (args.lookups / ROUNDS).max(1);
    let mut rng = Rng(0x5DEE_CE66);
    // Both pools' connections are open (and TLS's handshake done) first.
    for store in stores {
        for _ in 0..200 {
            store
                .find_token(&Lookup::User.query(rng.below(args.tokens)))
                .unwrap();
        }
    }
    let mut rows = [
        "| plaintext (sslmode=disable) |".to_owned(),
        "| TLS (as --tls-url asks) |".to_owned(),
        "| TLS / plaintext, p50 (p99) |".to_owned(),
    ];
    for rule in rules {
        let mut times = [Vec::new(), Vec::new()];
        for round in 0..ROUNDS {
            // Which goes first alternates, so neither always follows the other.
            for turn in 0..2 {
                let which = (round + turn) % 2;
                let store = stores[which];
                for _ in 0..per_round {
                    let query = rule.query(rng.below(args.tokens));
                    let t = Instant::now();
                    let found = match query.id.as_deref() {
                        Some(id) if query.user_name.is_none() => store.find_token_by_id(id),
                        _ => store.find_token(&query),
                    };
                    times[which].push(t.elapsed());
                    // The saves above rotated some access tokens: those
                    // lookups miss, alike on both connections.
                    found.unwrap();
                }
            }
        }
        let mut p = [(0.0, 0.0); 2];
        for (which, times) in times.iter_mut().enumerate() {
            times.sort();
            p[which] = (
                server::percentile(times, 0.5),
                server::percentile(times, 0.99),
            );
            rows[which] += &format!(" {:.0} / {:.0} |", p[which].0, p[which].1);
        }
        rows[2] += &format!(" {:.2}x ({:.2}x) |", p[1].0 / p[0].0, p[1].1 / p[0].1);
    }
    println!(
        "PostgresStore lookups, TLS beside plaintext on the same server ({} per rule each, \
         in {ROUNDS} alternating rounds; µs p50 / p99)\n",
        per_round * ROUNDS
    );
    println!("| connection | by id | by user_name | by access_token | by refresh_token | by grant_token |");
    println!("|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    println!();
}
