//! The engines the benchmarks compare, behind one small trait, and the
//! Zoho-shaped data they all hold. Shared by `benches/lookup.rs` (criterion)
//! and `examples/bench_report.rs` (the report), so both measure the same
//! code.
//!
//! - `tokenstore`: this crate's `SledStore` (durable, default options: the
//!   record cache is filled by the background warm-up opening starts;
//!   `Engine::warm` waits for it through `SledStore::warm_cache`).
//! - `tokenstore-before` (the report only): the defaults before issue 14, a
//!   64 MiB record cache and no warm-up.
//! - `sqlite`: the published sample's table done right: rusqlite (bundled),
//!   WAL, `synchronous=FULL` (durable commits), a unique index per looked-up
//!   column, cached prepared statements, one connection per thread.
//! - `sample`: the published sample's approach redone in Rust: the same
//!   table without secondary indexes, a new connection per call.
//! - `redb`: a records table (id → bincode record) and one index table per
//!   unique field (value → id), a read transaction per lookup, a durable
//!   write transaction per save.
//! - `hashmap`: decoded records in a `HashMap` with four index maps behind an
//!   `RwLock`: no I/O, no durability; the physical limit of a lookup that
//!   returns an owned record.

#![allow(dead_code)] // each of the two users takes a different part

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;
use tokenstore::{lookup_key, LookupKey, OAuthToken, Options, SledStore, TokenStore};

/// Token `n` of a data set: the shape of what the Zoho SDK stores (an email
/// user name, `1000.`-prefixed 70-character tokens, a 35-character client
/// id), with pseudo-random token bytes so no engine gains from sorted keys.
pub fn token(n: u64) -> OAuthToken {
    OAuthToken::new()
        .with_id(id(n))
        .with_user_name(user(n))
        .with_client_id("1000.7XKQ2M0B5WZJ8T3R1YHC6VPLNEDGAF")
        .with_client_secret("4f1c9a0b7e2d5c8f3a6b9e0d1c4f7a2b5e8d3c6f9a")
        .with_refresh_token(secret("refresh", n))
        .with_access_token(secret("access", n))
        .with_grant_token(secret("grant", n))
        .with_expiry_time(1_763_800_000_000 + n as i64)
        .with_redirect_url("https://app.example.com/oauth/zoho/callback")
        .with_api_domain("https://www.zohoapis.com")
}

pub fn id(n: u64) -> String {
    (n + 1).to_string()
}

pub fn user(n: u64) -> String {
    format!("crm.user{n}@example-company.com")
}

/// A 70-character token: `1000.` and 65 hex digits derived from `n`.
pub fn secret(kind: &str, n: u64) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(kind.as_bytes());
    hasher.update(&n.to_le_bytes());
    let hex = hasher.finalize().to_hex();
    format!("1000.{}{}", &hex[..64], &hex[..1])
}

/// A small xorshift generator: the same pseudo-random sequence for every
/// engine and every run.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// What a lookup asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    ById,
    User,
    Access,
    Refresh,
    Grant,
    Miss,
}

impl Lookup {
    pub const ALL: [Lookup; 6] = [
        Lookup::ById,
        Lookup::User,
        Lookup::Access,
        Lookup::Refresh,
        Lookup::Grant,
        Lookup::Miss,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Lookup::ById => "find_token_by_id",
            Lookup::User => "find_token by user_name",
            Lookup::Access => "find_token by access_token",
            Lookup::Refresh => "find_token by refresh_token",
            Lookup::Grant => "find_token by grant_token",
            Lookup::Miss => "find_token, no such user",
        }
    }

    /// The query the SDK would pass for token `n` (a miss ignores `n`'s
    /// record and asks for a user that does not exist).
    pub fn query(self, n: u64) -> OAuthToken {
        let creds = |t: OAuthToken| {
            t.with_client_id("1000.7XKQ2M0B5WZJ8T3R1YHC6VPLNEDGAF")
                .with_client_secret("4f1c9a0b7e2d5c8f3a6b9e0d1c4f7a2b5e8d3c6f9a")
        };
        match self {
            Lookup::ById => OAuthToken::new().with_id(id(n)),
            Lookup::User => OAuthToken::new().with_user_name(user(n)),
            Lookup::Access => OAuthToken::new().with_access_token(secret("access", n)),
            Lookup::Refresh => creds(OAuthToken::new().with_refresh_token(secret("refresh", n))),
            Lookup::Grant => creds(OAuthToken::new().with_grant_token(secret("grant", n))),
            Lookup::Miss => {
                OAuthToken::new().with_user_name(format!("nobody{n}@example-company.com"))
            }
        }
    }

    pub fn expects_hit(self) -> bool {
        self != Lookup::Miss
    }
}

/// One engine under test. Every method panics on an engine error: a
/// benchmark that fails must stop, not report.
pub trait Engine: Send + Sync {
    /// `find_token` with the SDK's rules (`find_token_by_id` for id queries).
    fn find(&self, query: &OAuthToken) -> Option<OAuthToken>;
    /// Inserts or replaces the record with `token`'s id (an upsert by id: the
    /// peers' simplest correct save; ours runs the full `save_token` rules).
    fn save(&self, token: &OAuthToken);
    /// Stores tokens `range` in as few, large transactions as the engine
    /// allows (loading, not measured per operation).
    fn load(&self, range: std::ops::Range<u64>);
    /// Reads every record (`get_tokens`); returns how many.
    fn get_all(&self) -> usize;
    /// Fills the engine's caches after opening, if it has a way to.
    fn warm(&self) {}
    /// Whether a save is on disk when it returns.
    fn durable(&self) -> bool {
        true
    }
}

/// How many tokens a loading transaction holds.
pub const LOAD_CHUNK: u64 = 10_000;

fn chunks(range: std::ops::Range<u64>) -> impl Iterator<Item = std::ops::Range<u64>> {
    let end = range.end;
    range
        .step_by(LOAD_CHUNK as usize)
        .map(move |start| start..(start + LOAD_CHUNK).min(end))
}

// ---------------------------------------------------------------- ours

pub struct Ours(pub SledStore);

impl Ours {
    pub fn open(path: &Path, options: Options) -> Ours {
        Ours(SledStore::open_with(path, options).expect("open tokenstore"))
    }
}

impl Engine for Ours {
    fn find(&self, query: &OAuthToken) -> Option<OAuthToken> {
        match lookup_key(query) {
            Some(LookupKey::Id(id)) => self.0.find_token_by_id(id),
            _ => self.0.find_token(query),
        }
        .expect("tokenstore lookup")
    }

    fn save(&self, token: &OAuthToken) {
        self.0
            .save_token(&mut token.clone())
            .expect("tokenstore save");
    }

    fn load(&self, range: std::ops::Range<u64>) {
        for chunk in chunks(range) {
            self.0
                .batch(|b| chunk.clone().try_for_each(|n| b.save_token(&mut token(n))))
                .expect("tokenstore load");
        }
    }

    fn get_all(&self) -> usize {
        self.0.get_tokens().expect("tokenstore get_tokens").len()
    }

    fn warm(&self) {
        self.0.warm_cache().expect("tokenstore warm_cache");
    }
}

// ---------------------------------------------------------------- SQLite

const SQLITE_COLUMNS: &str = "id, user_name, client_id, client_secret, refresh_token, \
     access_token, grant_token, expiry_time, redirect_url, api_domain";

/// The sample's table (its column names), with the id as primary key.
const SQLITE_TABLE: &str = "CREATE TABLE IF NOT EXISTS oauthtoken (
    id TEXT PRIMARY KEY, user_name TEXT, client_id TEXT, client_secret TEXT,
    refresh_token TEXT, access_token TEXT, grant_token TEXT, expiry_time INTEGER,
    redirect_url TEXT, api_domain TEXT)";

const SQLITE_INDEXES: &str = "
    CREATE UNIQUE INDEX IF NOT EXISTS by_user ON oauthtoken(user_name);
    CREATE UNIQUE INDEX IF NOT EXISTS by_access ON oauthtoken(access_token);
    CREATE UNIQUE INDEX IF NOT EXISTS by_refresh ON oauthtoken(refresh_token);
    CREATE UNIQUE INDEX IF NOT EXISTS by_grant ON oauthtoken(grant_token);";

fn row_token(row: &rusqlite::Row<'_>) -> rusqlite::Result<OAuthToken> {
    // Field by field: the struct is non-exhaustive.
    let mut token = OAuthToken::new();
    token.id = row.get(0)?;
    token.user_name = row.get(1)?;
    token.client_id = row.get(2)?;
    token.client_secret = row.get(3)?;
    token.refresh_token = row.get(4)?;
    token.access_token = row.get(5)?;
    token.grant_token = row.get(6)?;
    token.expiry_time = row.get(7)?;
    token.redirect_url = row.get(8)?;
    token.api_domain = row.get(9)?;
    Ok(token)
}

/// The column a query looks up, by the SDK's rules; `None` for no rule.
fn sql_lookups(query: &OAuthToken) -> Vec<(&'static str, &str)> {
    match lookup_key(query) {
        None => vec![],
        Some(LookupKey::Id(id)) => vec![("id", id)],
        Some(LookupKey::UserName(u)) => vec![("user_name", u)],
        Some(LookupKey::AccessToken(a)) => vec![("access_token", a)],
        Some(LookupKey::GrantOrRefresh { grant, refresh }) => grant
            .map(|g| ("grant_token", g))
            .into_iter()
            .chain(refresh.map(|r| ("refresh_token", r)))
            .collect(),
    }
}

fn sql_find(conn: &rusqlite::Connection, query: &OAuthToken) -> Option<OAuthToken> {
    for (column, value) in sql_lookups(query) {
        let sql = format!("SELECT {SQLITE_COLUMNS} FROM oauthtoken WHERE {column} = ?1");
        let mut statement = conn.prepare_cached(&sql).expect("prepare");
        let mut rows = statement.query([value]).expect("query");
        if let Some(row) = rows.next().expect("row") {
            return Some(row_token(row).expect("decode row"));
        }
    }
    None
}

fn sql_save(conn: &rusqlite::Connection, t: &OAuthToken) {
    let sql = format!(
        "INSERT OR REPLACE INTO oauthtoken ({SQLITE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    );
    conn.prepare_cached(&sql)
        .expect("prepare")
        .execute(rusqlite::params![
            t.id,
            t.user_name,
            t.client_id,
            t.client_secret,
            t.refresh_token,
            t.access_token,
            t.grant_token,
            t.expiry_time,
            t.redirect_url,
            t.api_domain
        ])
        .expect("sqlite save");
}

fn sql_load(conn: &rusqlite::Connection, range: std::ops::Range<u64>) {
    for chunk in chunks(range) {
        conn.execute_batch("BEGIN").expect("begin");
        for n in chunk {
            sql_save(conn, &token(n));
        }
        conn.execute_batch("COMMIT").expect("commit");
    }
}

fn sql_all(conn: &rusqlite::Connection) -> usize {
    let mut statement = conn
        .prepare_cached(&format!("SELECT {SQLITE_COLUMNS} FROM oauthtoken"))
        .expect("prepare");
    let all: Vec<OAuthToken> = statement
        .query_map([], row_token)
        .expect("query")
        .map(|row| row.expect("row"))
        .collect();
    all.len()
}

thread_local! {
    /// This thread's connection to the SQLite database at a path.
    static SQLITE: RefCell<Option<(PathBuf, rusqlite::Connection)>> = const { RefCell::new(None) };
}

pub struct Sqlite {
    path: PathBuf,
}

impl Sqlite {
    pub fn open(dir: &Path) -> Sqlite {
        std::fs::create_dir_all(dir).expect("sqlite dir");
        let sqlite = Sqlite {
            path: dir.join("tokens.sqlite"),
        };
        sqlite.with(|conn| {
            conn.execute_batch(SQLITE_TABLE).expect("create table");
            conn.execute_batch(SQLITE_INDEXES).expect("create indexes");
        });
        sqlite
    }

    fn with<T>(&self, f: impl FnOnce(&rusqlite::Connection) -> T) -> T {
        SQLITE.with_borrow_mut(|slot| {
            if slot.as_ref().is_none_or(|(path, _)| path != &self.path) {
                let conn = rusqlite::Connection::open(&self.path).expect("open sqlite");
                conn.execute_batch(
                    "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=60000;",
                )
                .expect("pragmas");
                *slot = Some((self.path.clone(), conn));
            }
            f(&slot.as_ref().expect("just opened").1)
        })
    }

    /// Closes this thread's connection (the others close with their threads).
    pub fn close(&self) {
        SQLITE.with_borrow_mut(|slot| *slot = None);
    }
}

impl Engine for Sqlite {
    fn find(&self, query: &OAuthToken) -> Option<OAuthToken> {
        self.with(|conn| sql_find(conn, query))
    }

    fn save(&self, token: &OAuthToken) {
        self.with(|conn| sql_save(conn, token));
    }

    fn load(&self, range: std::ops::Range<u64>) {
        self.with(|conn| sql_load(conn, range));
    }

    fn get_all(&self) -> usize {
        self.with(sql_all)
    }
}

/// The published sample's approach: no secondary index, a connection per
/// call (its Python store opens one per operation).
pub struct Sample {
    path: PathBuf,
}

impl Sample {
    pub fn open(dir: &Path) -> Sample {
        std::fs::create_dir_all(dir).expect("sample dir");
        let sample = Sample {
            path: dir.join("tokens.sqlite"),
        };
        sample
            .connect()
            .execute_batch(SQLITE_TABLE)
            .expect("create table");
        sample
    }

    fn connect(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(&self.path).expect("open sqlite");
        conn.busy_timeout(std::time::Duration::from_secs(60))
            .expect("timeout");
        conn
    }
}

impl Engine for Sample {
    fn find(&self, query: &OAuthToken) -> Option<OAuthToken> {
        sql_find(&self.connect(), query)
    }

    fn save(&self, token: &OAuthToken) {
        sql_save(&self.connect(), token);
    }

    fn load(&self, range: std::ops::Range<u64>) {
        sql_load(&self.connect(), range);
    }

    fn get_all(&self) -> usize {
        sql_all(&self.connect())
    }
}

// ---------------------------------------------------------------- redb

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

const REDB_RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
const REDB_INDEXES: [TableDefinition<&str, &str>; 4] = [
    TableDefinition::new("by_user"),
    TableDefinition::new("by_access"),
    TableDefinition::new("by_refresh"),
    TableDefinition::new("by_grant"),
];

fn redb_encode(t: &OAuthToken) -> Vec<u8> {
    bincode::serde::encode_to_vec(t, bincode::config::standard()).expect("encode")
}

fn redb_decode(bytes: &[u8]) -> OAuthToken {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .expect("decode")
        .0
}

fn indexed_values(t: &OAuthToken) -> [Option<&str>; 4] {
    [
        t.user_name.as_deref(),
        t.access_token.as_deref(),
        t.refresh_token.as_deref(),
        t.grant_token.as_deref(),
    ]
}

pub struct Redb(pub redb::Database);

impl Redb {
    pub fn open(dir: &Path) -> Redb {
        std::fs::create_dir_all(dir).expect("redb dir");
        let db = redb::Database::create(dir.join("tokens.redb")).expect("open redb");
        let txn = db.begin_write().expect("begin");
        txn.open_table(REDB_RECORDS).expect("table");
        for table in REDB_INDEXES {
            txn.open_table(table).expect("table");
        }
        txn.commit().expect("commit");
        Redb(db)
    }

    fn write(&self, tokens: impl Iterator<Item = OAuthToken>) {
        let txn = self.0.begin_write().expect("begin");
        {
            let mut records = txn.open_table(REDB_RECORDS).expect("table");
            let mut indexes = REDB_INDEXES.map(|t| txn.open_table(t).expect("table"));
            for t in tokens {
                let id = t.id.as_deref().expect("id");
                let old = records
                    .get(id)
                    .expect("get")
                    .map(|v| redb_decode(v.value()));
                if let Some(old) = &old {
                    for (index, value) in indexes.iter_mut().zip(indexed_values(old)) {
                        if let Some(value) = value {
                            index.remove(value).expect("unlink");
                        }
                    }
                }
                records
                    .insert(id, redb_encode(&t).as_slice())
                    .expect("insert");
                for (index, value) in indexes.iter_mut().zip(indexed_values(&t)) {
                    if let Some(value) = value {
                        index.insert(value, id).expect("link");
                    }
                }
            }
        }
        txn.commit().expect("commit");
    }
}

impl Engine for Redb {
    fn find(&self, query: &OAuthToken) -> Option<OAuthToken> {
        let txn = self.0.begin_read().expect("begin read");
        let records = txn.open_table(REDB_RECORDS).expect("table");
        let record = |id: &str| {
            records
                .get(id)
                .expect("get")
                .map(|v| redb_decode(v.value()))
        };
        for (column, value) in sql_lookups(query) {
            let found = match column {
                "id" => record(value),
                _ => {
                    let at = ["user_name", "access_token", "refresh_token", "grant_token"]
                        .iter()
                        .position(|c| *c == column)
                        .expect("column");
                    let index = txn.open_table(REDB_INDEXES[at]).expect("table");
                    let id = index.get(value).expect("get").map(|v| v.value().to_owned());
                    id.and_then(|id| record(&id))
                }
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }

    fn save(&self, token: &OAuthToken) {
        self.write(std::iter::once(token.clone()));
    }

    fn load(&self, range: std::ops::Range<u64>) {
        for chunk in chunks(range) {
            self.write(chunk.map(token));
        }
    }

    fn get_all(&self) -> usize {
        let txn = self.0.begin_read().expect("begin read");
        let records = txn.open_table(REDB_RECORDS).expect("table");
        records
            .iter()
            .expect("iter")
            .map(|entry| redb_decode(entry.expect("entry").1.value()))
            .collect::<Vec<_>>()
            .len()
    }
}

// ---------------------------------------------------------------- HashMap

#[derive(Default)]
struct Maps {
    records: HashMap<String, OAuthToken>,
    indexes: [HashMap<String, String>; 4],
}

/// Decoded records in memory: the limit any lookup returning an owned
/// record can reach.
#[derive(Default)]
pub struct InMemory(RwLock<Maps>);

impl InMemory {
    fn insert(maps: &mut Maps, t: OAuthToken) {
        let id = t.id.clone().expect("id");
        if let Some(old) = maps.records.get(&id) {
            for (index, value) in maps.indexes.iter_mut().zip(indexed_values(old)) {
                if let Some(value) = value {
                    index.remove(value);
                }
            }
        }
        for (index, value) in maps.indexes.iter_mut().zip(indexed_values(&t)) {
            if let Some(value) = value {
                index.insert(value.to_owned(), id.clone());
            }
        }
        maps.records.insert(id, t);
    }
}

impl Engine for InMemory {
    fn find(&self, query: &OAuthToken) -> Option<OAuthToken> {
        let maps = self.0.read();
        for (column, value) in sql_lookups(query) {
            let id = match column {
                "id" => Some(value),
                "user_name" => maps.indexes[0].get(value).map(String::as_str),
                "access_token" => maps.indexes[1].get(value).map(String::as_str),
                "refresh_token" => maps.indexes[2].get(value).map(String::as_str),
                _ => maps.indexes[3].get(value).map(String::as_str),
            };
            if let Some(found) = id.and_then(|id| maps.records.get(id)) {
                return Some(found.clone());
            }
        }
        None
    }

    fn save(&self, token: &OAuthToken) {
        Self::insert(&mut self.0.write(), token.clone());
    }

    fn load(&self, range: std::ops::Range<u64>) {
        let mut maps = self.0.write();
        for n in range {
            Self::insert(&mut maps, token(n));
        }
    }

    fn get_all(&self) -> usize {
        // Owned copies, as get_tokens returns.
        let all: Vec<OAuthToken> = self.0.read().records.values().cloned().collect();
        all.len()
    }

    fn durable(&self) -> bool {
        false
    }
}
