//! [`PostgresStore::check`]: records that do not decode, and digest columns
//! that disagree with their record.

use super::{col, map_pg, PostgresStore};
use crate::check::{CheckReport, DigestColumns};
use crate::error::Result;

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
