//! MysqlStore in numbers, beside the Zoho DBStore's approach on the same
//! MySQL/MariaDB server: p50/p99 per lookup rule and durable saves per
//! second with 1 and 8 writers.
//!
//! ```text
//! cargo run --release --features mysql --example bench_mysql -- \
//!     --url 'mysql://user:password@127.0.0.1:3306/bench?ssl-mode=DISABLED' \
//!     [--tokens 10000] [--lookups 2000] [--saves 400]
//! ```
//!
//! The database named by `--url` is emptied of the tables it uses
//! (`tokenstore_*`, `oauthtoken`). The DBStore approach is the SDK's own
//! table as DBStore creates it (`id` the only key: no index on the user or
//! the tokens), its `SELECT * FROM oauthtoken WHERE user_name = ?` (and
//! the other rules' columns), and its save: UPDATE by user name, and when
//! no row changed, INSERT with `max(id) + 1`. Both commit durably (InnoDB's
//! defaults: `innodb_flush_log_at_trx_commit = 1`). Both connect with the
//! same URL (TLS as its `ssl-mode` says).

#[path = "../benches/engines/mod.rs"]
mod engines;
#[path = "../benches/engines/server.rs"]
mod server;

use engines::{token, Engine, Lookup, Rng};
use mysql::prelude::Queryable;
use mysql::{Conn, Value};
use tokenstore::{MysqlStore, OAuthToken, TokenStore};

struct Args {
    url: String,
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
        tokens: 10_000,
        lookups: 2_000,
        saves: 400,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--url" => args.url = value,
            "--tokens" => args.tokens = value.parse().expect("--tokens N"),
            "--lookups" => args.lookups = value.parse().expect("--lookups N"),
            "--saves" => args.saves = value.parse().expect("--saves N"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!args.url.is_empty(), "--url mysql://... is required");
    args
}

/// MysqlStore through the same `Engine` interface as the other peers.
struct Ours(MysqlStore);

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
        let mut n = range.start;
        while n < range.end {
            let stop = (n + 1_000).min(range.end);
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

/// The Zoho DBStore's approach on MySQL: its table and statements, on
/// connections kept between calls (one per caller at a time), or, as the
/// SDK's `db_store.py` runs them, on a new connection for every call
/// (`mysql.connector.connect(...)`, the statement, `close()`).
struct DbStore {
    opts: mysql::Opts,
    idle: std::sync::Mutex<Vec<Conn>>,
    connect_per_call: bool,
}

const DBSTORE_TABLE: &str = "CREATE TABLE oauthtoken (
    id varchar(10) NOT NULL, user_name varchar(255) NOT NULL, client_id varchar(255),
    client_secret varchar(255), refresh_token varchar(255), access_token varchar(255),
    grant_token varchar(255), expiry_time varchar(20), redirect_url varchar(255),
    api_domain varchar(255), primary key (id))";

impl DbStore {
    fn with<T>(&self, f: impl FnOnce(&mut Conn) -> T) -> T {
        if self.connect_per_call {
            let mut conn = Conn::new(self.opts.clone()).expect("connect");
            let out = f(&mut conn);
            drop(conn); // COM_QUIT, then the socket closed
            return out;
        }
        let idle = self.idle.lock().unwrap().pop();
        let mut conn = idle.unwrap_or_else(|| Conn::new(self.opts.clone()).expect("connect"));
        let out = f(&mut conn);
        self.idle.lock().unwrap().push(conn);
        out
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::Bytes(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        _ => None,
    }
}

fn row_token(row: mysql::Row) -> OAuthToken {
    let values: Vec<Option<String>> = row.unwrap().iter().map(text).collect();
    // Field by field: the struct is non-exhaustive.
    let mut token = OAuthToken::new();
    token.id = values[0].clone();
    token.user_name = values[1].clone();
    token.client_id = values[2].clone();
    token.client_secret = values[3].clone();
    token.refresh_token = values[4].clone();
    token.access_token = values[5].clone();
    token.grant_token = values[6].clone();
    token.expiry_time = values[7].as_deref().and_then(|t| t.parse().ok());
    token.redirect_url = values[8].clone();
    token.api_domain = values[9].clone();
    token
}

impl Engine for DbStore {
    fn find(&self, query: &OAuthToken) -> Option<OAuthToken> {
        let (sql, value) = if let Some(user) = &query.user_name {
            ("SELECT * FROM oauthtoken WHERE user_name = ?", user)
        } else if let (Some(access), None) = (&query.access_token, &query.client_id) {
            ("SELECT * FROM oauthtoken WHERE access_token = ?", access)
        } else if let Some(grant) = &query.grant_token {
            ("SELECT * FROM oauthtoken WHERE grant_token = ?", grant)
        } else if let Some(refresh) = &query.refresh_token {
            ("SELECT * FROM oauthtoken WHERE refresh_token = ?", refresh)
        } else {
            (
                "SELECT * FROM oauthtoken WHERE id = ?",
                query.id.as_ref().unwrap(),
            )
        };
        self.with(|conn| conn.exec_first::<mysql::Row, _, _>(sql, (value,)).unwrap())
            .map(row_token)
    }

    fn save(&self, t: &OAuthToken) {
        let expiry = t.expiry_time.map(|e| e.to_string());
        self.with(|conn| {
            conn.exec_drop(
                "UPDATE oauthtoken SET client_id = ?, client_secret = ?, refresh_token = ?, \
                 access_token = ?, grant_token = ?, expiry_time = ?, redirect_url = ?, \
                 api_domain = ? WHERE user_name = ?",
                (
                    &t.client_id,
                    &t.client_secret,
                    &t.refresh_token,
                    &t.access_token,
                    &t.grant_token,
                    &expiry,
                    &t.redirect_url,
                    &t.api_domain,
                    &t.user_name,
                ),
            )
            .unwrap();
            if conn.affected_rows() == 0 {
                conn.exec_drop(
                    "INSERT INTO oauthtoken SELECT COALESCE(MAX(CAST(id AS UNSIGNED)), 0) + 1, \
                     ?, ?, ?, ?, ?, ?, ?, ?, ? FROM oauthtoken",
                    (
                        &t.user_name,
                        &t.client_id,
                        &t.client_secret,
                        &t.refresh_token,
                        &t.access_token,
                        &t.grant_token,
                        &expiry,
                        &t.redirect_url,
                        &t.api_domain,
                    ),
                )
                .unwrap();
            }
        });
    }

    fn load(&self, range: std::ops::Range<u64>) {
        self.with(|conn| {
            let mut tx = conn.start_transaction(mysql::TxOpts::default()).unwrap();
            for n in range {
                let t = token(n);
                let values: Vec<Value> = vec![
                    t.id.into(),
                    t.user_name.into(),
                    t.client_id.into(),
                    t.client_secret.into(),
                    t.refresh_token.into(),
                    t.access_token.into(),
                    t.grant_token.into(),
                    t.expiry_time.map(|e| e.to_string()).into(),
                    t.redirect_url.into(),
                    t.api_domain.into(),
                ];
                tx.exec_drop(
                    "INSERT INTO oauthtoken VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    values,
                )
                .unwrap();
            }
            tx.commit().unwrap();
        });
    }

    fn get_all(&self) -> usize {
        self.with(|conn| {
            conn.query::<mysql::Row, _>("SELECT * FROM oauthtoken")
                .unwrap()
                .len()
        })
    }
}

fn main() {
    let args = parse_args();
    let ours = Ours(MysqlStore::connect(&args.url).unwrap());
    // The DBStore side connects as the store does: TCP, TLS as asked.
    let (plain_url, _) = args.url.split_once('?').unwrap_or((&args.url, ""));
    let mut opts = mysql::OptsBuilder::from_opts(mysql::Opts::from_url(plain_url).unwrap())
        .prefer_socket(false);
    if ours.0.uses_tls() {
        opts = opts.ssl_opts(Some(
            mysql::SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        ));
    }
    let opts: mysql::Opts = opts.into();
    let mut admin = Conn::new(opts.clone()).expect("connect to --url");
    admin
        .query_drop("DROP TABLE IF EXISTS tokenstore_records, tokenstore_meta, oauthtoken")
        .unwrap();
    admin.query_drop(DBSTORE_TABLE).unwrap();
    drop(ours);
    let ours = Ours(MysqlStore::connect(&args.url).unwrap());
    let server: Option<String> = admin.query_first("SELECT VERSION()").unwrap();
    println!(
        "{} tokens, {} lookups per rule (µs p50 / p99), {} durable saves per writer count, \
         server {}, TLS {}\n",
        args.tokens,
        args.lookups,
        args.saves,
        server.unwrap_or_default(),
        if ours.0.uses_tls() { "on" } else { "off" }
    );
    println!("| engine | load | by id | by user_name | by access_token | by refresh_token | by grant_token | saves/s, 1 writer | saves/s, 8 writers |");
    println!("|---|---|---|---|---|---|---|---|---|");
    server::measure("MysqlStore (loopback)", &ours, &args.sizes());
    println!(
        "\nMysqlStore, new users (the counter issues each id): {:.0} saves/s with 1 writer, \
         {:.0} with 8\n",
        server::new_users_per_second(&ours, 1, args.saves),
        server::new_users_per_second(&ours, 8, args.saves)
    );
    drop(ours);
    let dbstore = DbStore {
        opts: opts.clone(),
        idle: std::sync::Mutex::new(Vec::new()),
        connect_per_call: false,
    };
    server::measure(
        "Zoho DBStore approach, same server",
        &dbstore,
        &args.sizes(),
    );
    // By id both are one primary-key lookup, one round trip: measured again
    // side by side, each store's tables as the runs above left them.
    let ours = Ours(MysqlStore::connect(&args.url).unwrap());
    let engines: [&dyn Engine; 2] = [&ours, &dbstore];
    for engine in engines {
        // Connections open and statements prepared before the clock starts.
        for n in 0..100 {
            engine.find(&Lookup::ById.query(n));
        }
    }
    const ROUNDS: usize = 20;
    let [a, b] = server::interleaved(engines, Lookup::ById, args.tokens, args.lookups, ROUNDS);
    println!(
        "\nBy id, side by side ({} lookups each in {ROUNDS} alternating rounds): MysqlStore \
         {:.0} / {:.0} µs, DBStore approach {:.0} / {:.0} µs (p50 / p99); MysqlStore's p50 is \
         {:.2}x DBStore's",
        args.lookups / ROUNDS * ROUNDS,
        a.0,
        a.1,
        b.0,
        b.1,
        a.0 / b.0
    );
    // And against DBStore as the SDK runs it: a new connection for every
    // call. Fewer lookups: each pays a TCP connect and a login (and, but by
    // id, a scan of the table). Not by access token: the save rows above
    // rotated some of them.
    let per_call = DbStore {
        opts,
        idle: std::sync::Mutex::new(Vec::new()),
        connect_per_call: true,
    };
    let lookups = (args.lookups / 10).clamp(ROUNDS, 1000);
    println!(
        "\nBeside DBStore as the SDK's db_store.py runs it (a new connection per call), \
         {lookups} lookups each in {ROUNDS} alternating rounds (µs p50 / p99; not by \
         access_token, which the save rows rotated):\n"
    );
    println!("| rule | MysqlStore | DBStore, a connection per call | MysqlStore / DBStore (p50) |");
    println!("|---|---|---|---|");
    let rules = Lookup::ALL
        .into_iter()
        .filter(|r| r.expects_hit() && *r != Lookup::Access);
    for rule in rules {
        let [a, b] = server::interleaved([&ours, &per_call], rule, args.tokens, lookups, ROUNDS);
        println!(
            "| {} | {:.0} / {:.0} | {:.0} / {:.0} | {:.3}x |",
            rule.label(),
            a.0,
            a.1,
            b.0,
            b.1,
            a.0 / b.0
        );
    }
}
