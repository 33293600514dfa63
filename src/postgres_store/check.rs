//! [`PostgresStore::check`]: records that do not decode, and digest columns
//! that disagree with their record.

use std::collections::HashMap;

use super::{col, map_pg, PostgresStore};
use crate::check::{duplicate_values, CheckReport, Problem};
use crate::error::{Error, Result};
use crate::token::IndexedField;

impl PostgresStore {
    /// Reads every record and reports each one that cannot be decoded (or
    /// decrypted with this store's key), each digest column that does not
    /// hold the digest of its record's value (the record cannot be found
    /// by that value: [`Problem::MissingIndexEntry`]; the column leads to a
    /// record without that value: [`Problem::WrongIndexEntry`]), and unique
    /// values held twice. `index_entries` counts the non-null digest
    /// columns. Reads one consistent snapshot; writers do not wait.
    ///
    /// ```no_run
    /// use tokenstore::PostgresStore;
    ///
    /// let store = PostgresStore::connect("postgres://app@127.0.0.1/tokens")?;
    /// let report = store.check()?;
    /// assert!(report.is_ok(), "{report}");
    /// # Ok::<(), tokenstore::Error>(())
    /// ```
    ///
    /// # Errors
    /// Only server errors; damage is reported in the [`CheckReport`].
    pub fn check(&self) -> Result<CheckReport> {
        self.off_runtime(|| {
            let what = "checking every record";
            let mut conn = self.conn(what)?;
            let mut tx = conn
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(map_pg(what))?;
            let rows = tx
                .query(
                    "SELECT id, record, user_name_digest, access_token_digest, \
                     refresh_token_digest, grant_token_digest FROM tokenstore_records",
                    &[],
                )
                .map_err(map_pg(what))?;
            tx.commit().map_err(map_pg(what))?;

            let mut report = CheckReport::default();
            let mut holders: HashMap<(IndexedField, blake3::Hash), Vec<String>> = HashMap::new();
            for row in &rows {
                report.records += 1;
                let id: String = col(row, 0)?;
                let stored: [Option<&[u8]>; 4] =
                    [col(row, 2)?, col(row, 3)?, col(row, 4)?, col(row, 5)?];
                report.index_entries += stored.iter().flatten().count();
                let record = match self.sealing.decode(&id, col(row, 1)?) {
                    Ok(record) => record,
                    Err(e) => {
                        let detail = match e {
                            Error::Corruption { detail, .. } => detail,
                            other => other.to_string(),
                        };
                        report
                            .problems
                            .push(Problem::UndecodableRecord { id, detail });
                        continue;
                    }
                };
                for field in IndexedField::ALL {
                    let value = record.indexed(field);
                    if let Some(value) = value {
                        holders
                            .entry((field, blake3::hash(value.as_bytes())))
                            .or_default()
                            .push(id.clone());
                    }
                    let expected = value.map(|v| self.sealing.digest(v));
                    let column = stored[field as usize];
                    if column == expected.as_ref().map(|d| d.as_slice()) {
                        continue;
                    }
                    if expected.is_some() {
                        report.problems.push(Problem::MissingIndexEntry {
                            id: id.clone(),
                            field,
                        });
                    }
                    if column.is_some() {
                        report.problems.push(Problem::WrongIndexEntry {
                            field,
                            id: id.clone(),
                        });
                    }
                }
            }
            report.problems.extend(duplicate_values(holders));
            Ok(report)
        })
    }
}
