//! The tables of a MySQL/MariaDB token store, created on first use.
//!
//! ```text
//! tokenstore_meta     one row (singleton = 1): schema_version, format
//!                     (1 plain, 2 sealed), key_check (sealed only),
//!                     last_issued_id (the id counter), seals (how many
//!                     records the current key sealed); its row lock is
//!                     the write lock
//! tokenstore_records  id VARBINARY(3072) PRIMARY KEY, record LONGBLOB (the
//!                     codec's bytes), user_name_digest, access_token_digest,
//!                     refresh_token_digest, grant_token_digest BINARY(16),
//!                     each UNIQUE (tokenstore_unique_<field>)
//! ```
//!
//! Every compared column is binary: MySQL's and MariaDB's default
//! collations (`utf8mb4_0900_ai_ci`, `utf8mb4_general_ci`) are case- and
//! accent-insensitive and would make the ids `Ana` and `ana` one row. The
//! digest columns hold the codec's 16-byte digests of the four unique
//! values (keyed in a sealed store), so the server never sees a token or a
//! user name, and the UNIQUE keys are the last line of defence behind the
//! planning in `plan.rs`.
//!
//! No lock is taken to create them: `CREATE TABLE IF NOT EXISTS` and
//! `INSERT IGNORE` of the one meta row are safe for any number of
//! processes connecting at once (MySQL commits each DDL statement on its
//! own, so a transaction would not hold them together anyway).

use mysql::prelude::Queryable;
use mysql::Conn;

use super::{map_my, Result};
use crate::codec::Sealing;
use crate::error::Error;

/// The schema version this build creates, reads and writes.
pub(crate) const SCHEMA_VERSION: u32 = 1;

const CREATE_META: &str = "
CREATE TABLE IF NOT EXISTS tokenstore_meta (
    singleton TINYINT UNSIGNED NOT NULL PRIMARY KEY,
    schema_version INT UNSIGNED NOT NULL,
    format SMALLINT UNSIGNED NOT NULL,
    key_check VARBINARY(32) NULL,
    last_issued_id BIGINT UNSIGNED NOT NULL DEFAULT 0,
    seals BIGINT UNSIGNED NOT NULL DEFAULT 0,
    CHECK (singleton = 1)
) ENGINE = InnoDB";

const CREATE_RECORDS: &str = "
CREATE TABLE IF NOT EXISTS tokenstore_records (
    id VARBINARY(3072) NOT NULL PRIMARY KEY,
    record LONGBLOB NOT NULL,
    user_name_digest BINARY(16) NULL,
    access_token_digest BINARY(16) NULL,
    refresh_token_digest BINARY(16) NULL,
    grant_token_digest BINARY(16) NULL,
    UNIQUE KEY tokenstore_unique_user_name (user_name_digest),
    UNIQUE KEY tokenstore_unique_access_token (access_token_digest),
    UNIQUE KEY tokenstore_unique_refresh_token (refresh_token_digest),
    UNIQUE KEY tokenstore_unique_grant_token (grant_token_digest)
) ENGINE = InnoDB";

/// What a store needs to know from the meta row.
type Meta = (u32, u16, Option<Vec<u8>>);

/// Creates the tables if they are missing, stamps a new store with the
/// format of `sealing`, and checks an existing one against it (a newer
/// schema is refused before anything is created or changed).
///
/// `target` names the store in errors (its URL without the password).
pub(crate) fn ensure(conn: &mut Conn, sealing: &Sealing, target: &str, create: bool) -> Result<()> {
    let what = "creating or checking the schema";
    let exists: Option<u8> = conn
        .query_first(
            "SELECT 1 FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = 'tokenstore_meta'",
        )
        .map_err(map_my(what))?;
    if exists.is_none() && !create {
        return Err(Error::StoreNotFound {
            location: target.to_owned(),
        });
    }
    if exists.is_some() {
        if let Some((version, ..)) = read_meta(conn, what)? {
            if version > SCHEMA_VERSION {
                return Err(unsupported(version));
            }
        }
    }
    conn.query_drop(CREATE_META).map_err(map_my(what))?;
    conn.query_drop(CREATE_RECORDS).map_err(map_my(what))?;
    let key_check = sealing.key_check().map(|check| check.to_vec());
    conn.exec_drop(
        "INSERT IGNORE INTO tokenstore_meta (singleton, schema_version, format, key_check) \
         VALUES (1, ?, ?, ?)",
        (SCHEMA_VERSION, sealing.format_version(), key_check),
    )
    .map_err(map_my(what))?;
    let (version, format, key_check) = read_meta(conn, what)?
        .ok_or_else(|| Error::corruption(None, "the tokenstore_meta row is missing"))?;
    if version > SCHEMA_VERSION || version < 1 {
        return Err(unsupported(version));
    }
    sealing.check_stored(
        u32::from(format),
        key_check.as_deref(),
        std::path::Path::new(target),
    )
}

fn unsupported(found: u32) -> Error {
    Error::UnsupportedVersion {
        found,
        supported: SCHEMA_VERSION,
    }
}

fn read_meta(conn: &mut Conn, what: &'static str) -> Result<Option<Meta>> {
    conn.query_first("SELECT schema_version, format, key_check FROM tokenstore_meta")
        .map_err(map_my(what))
}
