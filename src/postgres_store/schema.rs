//! The tables of a PostgreSQL token store, created on first use.
//!
//! ```text
//! tokenstore_meta     one row: schema_version, format (1 plain, 2 sealed),
//!                     key_check (the key check value of a sealed store),
//!                     last_issued_id (the id counter)
//! tokenstore_seals    a sequence: how many records the current key sealed
//!                     (encrypted stores; created by this version, also in
//!                     a store an older one made, whose seals went uncounted)
//! tokenstore_records  id text PRIMARY KEY, record bytea (the codec's bytes),
//!                     user_name_digest, access_token_digest,
//!                     refresh_token_digest, grant_token_digest bytea UNIQUE
//! ```
//!
//! The digest columns hold the codec's 16-byte digests of the four unique
//! values (keyed in a sealed store), so the server never sees a token or a
//! user name, and the UNIQUE constraints are the last line of defence
//! behind the planning in `plan.rs`. They are DEFERRABLE so that a batch
//! may move a value from one record to another within one transaction.

use postgres::types::Type;
use postgres::Client;

use super::{col, map_pg, WRITE_LOCK};
use crate::codec::Sealing;
use crate::error::{Error, Result};

/// The schema version this build creates, reads and writes.
pub(crate) const SCHEMA_VERSION: i32 = 1;

/// Serializes schema creation across every process connecting at once.
const SCHEMA_LOCK: i64 = 0x746f_6b65_6e73_0001;

const CREATE: &str = "
CREATE TABLE IF NOT EXISTS tokenstore_meta (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    schema_version integer NOT NULL,
    format smallint NOT NULL,
    key_check bytea,
    last_issued_id bigint NOT NULL DEFAULT 0 CHECK (last_issued_id >= 0)
);
CREATE TABLE IF NOT EXISTS tokenstore_records (
    id text PRIMARY KEY,
    record bytea NOT NULL,
    user_name_digest bytea,
    access_token_digest bytea,
    refresh_token_digest bytea,
    grant_token_digest bytea,
    CONSTRAINT tokenstore_unique_user_name UNIQUE (user_name_digest) DEFERRABLE INITIALLY IMMEDIATE,
    CONSTRAINT tokenstore_unique_access_token UNIQUE (access_token_digest) DEFERRABLE INITIALLY IMMEDIATE,
    CONSTRAINT tokenstore_unique_refresh_token UNIQUE (refresh_token_digest) DEFERRABLE INITIALLY IMMEDIATE,
    CONSTRAINT tokenstore_unique_grant_token UNIQUE (grant_token_digest) DEFERRABLE INITIALLY IMMEDIATE
);
CREATE SEQUENCE IF NOT EXISTS tokenstore_seals;
";

/// What a store needs to know from the meta row.
struct Meta {
    schema_version: i32,
    format: i16,
    key_check: Option<Vec<u8>>,
}

/// Creates the tables if they are missing (under an advisory lock, so any
/// number of processes may connect at once), stamps a new store with the
/// format of `sealing`, and checks an existing one against it.
///
/// `target` names the store in errors (its URL without the password).
pub(crate) fn ensure(
    client: &mut Client,
    sealing: &Sealing,
    target: &str,
    create: bool,
) -> Result<()> {
    let what = "creating or checking the schema";
    let mut tx = client.transaction().map_err(map_pg(what))?;
    tx.query_typed(
        "SELECT pg_advisory_xact_lock($1)",
        &[(&SCHEMA_LOCK, Type::INT8)],
    )
    .map_err(map_pg(what))?;
    // A newer schema is refused before anything is created or changed.
    let exists: bool = tx
        .query_one("SELECT to_regclass('tokenstore_meta') IS NOT NULL", &[])
        .map_err(map_pg(what))?
        .get(0);
    if !exists && !create {
        return Err(Error::StoreNotFound {
            location: target.to_owned(),
        });
    }
    if exists {
        if let Some(meta) = read_meta(&mut tx, what)? {
            if meta.schema_version > SCHEMA_VERSION {
                return Err(unsupported(meta.schema_version));
            }
        }
    }
    tx.batch_execute(CREATE).map_err(map_pg(what))?;
    let format = i16::from(sealing.format_version());
    let key_check = sealing.key_check().map(|check| check.to_vec());
    tx.query_typed(
        "INSERT INTO tokenstore_meta (schema_version, format, key_check) VALUES ($1, $2, $3) \
         ON CONFLICT (singleton) DO NOTHING",
        &[
            (&SCHEMA_VERSION, Type::INT4),
            (&format, Type::INT2),
            (&key_check, Type::BYTEA),
        ],
    )
    .map_err(map_pg(what))?;
    let meta = read_meta(&mut tx, what)?
        .ok_or_else(|| Error::corruption(None, "the tokenstore_meta row is missing"))?;
    tx.commit().map_err(map_pg(what))?;

    let target = || std::path::PathBuf::from(target);
    if meta.schema_version > SCHEMA_VERSION || meta.schema_version < 1 {
        return Err(unsupported(meta.schema_version));
    }
    let format = u32::try_from(meta.format).unwrap_or(0);
    sealing.check_stored(format, meta.key_check.as_deref(), &target())
}

fn unsupported(found: i32) -> Error {
    Error::UnsupportedVersion {
        found: u32::try_from(found).unwrap_or(0),
        supported: SCHEMA_VERSION as u32,
    }
}

fn read_meta(tx: &mut postgres::Transaction<'_>, what: &'static str) -> Result<Option<Meta>> {
    let row = tx
        .query_opt(
            "SELECT schema_version, format, key_check FROM tokenstore_meta",
            &[],
        )
        .map_err(map_pg(what))?;
    row.map(|row| {
        Ok(Meta {
            schema_version: col(&row, 0)?,
            format: col(&row, 1)?,
            key_check: col(&row, 2)?,
        })
    })
    .transpose()
}

/// Takes the lock every write holds from its first read to its commit.
pub(crate) fn lock_writes(tx: &mut postgres::Transaction<'_>, what: &'static str) -> Result<()> {
    tx.query_typed(
        "SELECT pg_advisory_xact_lock($1)",
        &[(&WRITE_LOCK, Type::INT8)],
    )
    .map_err(map_pg(what))?;
    Ok(())
}
