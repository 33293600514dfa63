//! [`PostgresStore::check`]: records that do not decode, and digest columns
//! that disagree with their record.

use super::{col, noting, PostgresStore};
use crate::check::{CheckReport, DigestColumns};
use crate::error::Result;

impl PostgresStore {
    /// Reads every record and reports each one that cannot be decoded (or
    /// decrypted with this store's key), each digest column that does not
    /// hold the digest of its record's value (the record cannot be found
    /// by that value: [`Problem::MissingIndexEntry`]; the column leads to a
    /// record without that value: [`Problem::WrongIndexEntry`]), and unique
    /// values held twice. `index_entries` counts the non-null digest
    /// columns. Reads one consistent snapshot; writers do not wait. Run
    /// again on another connection when it finds its connection lost.
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
        self.reading("checking every record", |conn, what, lost| {
            let mut tx = conn
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(noting(what, lost))?;
            let rows = tx
                .query(
                    "SELECT id, record, user_name_digest, access_token_digest, \
                     refresh_token_digest, grant_token_digest FROM tokenstore_records",
                    &[],
                )
                .map_err(noting(what, lost))?;
            tx.commit().map_err(noting(what, lost))?;

            let mut check = DigestColumns::new(&self.sealing);
            for row in &rows {
                let stored: [Option<&[u8]>; 4] =
                    [col(row, 2)?, col(row, 3)?, col(row, 4)?, col(row, 5)?];
                check.row(col(row, 0)?, col(row, 1)?, stored);
            }
            Ok(check.finish())
        })
    }
}
