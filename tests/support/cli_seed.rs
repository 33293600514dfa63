//! What the command-line tests of the embedded store (tests/cli_*.rs) and of
//! PostgreSQL (tests/cli_postgres.rs) share: the three-user seed, and the
//! checks that a copy carries the id counter.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use tokenstore::{OAuthToken, SledStore, TokenStore};

/// Every secret in the fixtures contains this, so that output can be
/// searched for leaks.
pub const MARK: &str = "SECRETMARK";

/// FileStore's CSV header.
pub const HEADER: &str = "id,user_name,client_id,client_secret,refresh_token,access_token,grant_token,expiry_time,redirect_uri,api_domain";

/// Writes `seed.csv` into `dir`: three users in FileStore's format (CRLF).
pub fn seed_csv(dir: &Path) -> PathBuf {
    let path = dir.join("seed.csv");
    let lines = [
        HEADER.to_owned(),
        format!("1,ana@example.com,1000.CID,{MARK}-cs,1000.{MARK}-r1,1000.{MARK}-a1,,4102444800000,https://app/cb,https://www.zohoapis.com"),
        format!("2,bob@example.com,1000.CID,{MARK}-cs,1000.{MARK}-r2,1000.{MARK}-a2,,1000,,https://www.zohoapis.eu"),
        format!("3,carol@example.com,1000.CID,{MARK}-cs,,,1000.{MARK}-g3,,,"),
    ];
    let body: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
    std::fs::write(&path, body).unwrap();
    path
}

/// Moves the counter of the seeded store at `path` past its records: id 4
/// is handed out and deleted, so no copy may hand it out again.
pub fn hand_out_and_delete_id_4(path: &Path) {
    let store = SledStore::open(path).unwrap();
    let mut gone = OAuthToken::new()
        .with_user_name("gone@example.com")
        .with_refresh_token(format!("1000.{MARK}-gone"));
    store.save_token(&mut gone).unwrap();
    assert_eq!(gone.id.as_deref(), Some("4"));
    assert!(store.delete_token("4").unwrap());
}

/// `store`, a copy of such a store, carries its counter: it hands out 5.
pub fn assert_counter_carried(store: &SledStore) {
    assert_eq!(store.last_issued_id(), 4);
    let mut next = OAuthToken::new()
        .with_user_name("dan@example.com")
        .with_access_token("1000.a-dan");
    store.save_token(&mut next).unwrap();
    assert_eq!(
        next.id.as_deref(),
        Some("5"),
        "a deleted id is never reused"
    );
}
