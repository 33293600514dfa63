//! [`MysqlStore::check`]: records that do not decode, and digest columns
//! that disagree with their record.

use mysql::prelude::Queryable;

use super::{id_text, map_my, MysqlStore};
use crate::check::{CheckReport, DigestColumns};
use crate::error::Result;

type Row = (
    Vec<u8>,
    Vec<u8>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
);

impl MysqlStore {
    /// Reads every record and reports each one that cannot be decoded (or
    /// decrypted with this store's key), each digest column that does not
    /// hold the digest of its record's value, and unique values held
    /// twice. `index_entries` counts the non-null digest columns. One
    /// statement, so one consistent snapshot; writers do not wait.
    ///
    /// ```no_run
    /// use tokenstore::MysqlStore;
    ///
    /// let store = MysqlStore::connect("mysql://app:secret@127.0.0.1:3306/tokens")?;
    /// let report = store.check()?;
    /// assert!(report.is_ok(), "{report}");
    /// # Ok::<(), tokenstore::Error>(())
    /// ```
    ///
    /// # Errors
    /// Only server errors; damage is reported in the [`CheckReport`].
    pub fn check(&self) -> Result<CheckReport> {
        let what = "checking every record";
        let rows: Vec<Row> = self
            .conn(what)?
            .query(
                "SELECT id, record, user_name_digest, access_token_digest, \
                 refresh_token_digest, grant_token_digest FROM tokenstore_records",
            )
            .map_err(map_my(what))?;
        let mut check = DigestColumns::new(&self.sealing);
        for (id, record, user, access, refresh, grant) in rows {
            let stored = [
                user.as_deref(),
                access.as_deref(),
                refresh.as_deref(),
                grant.as_deref(),
            ];
            check.row(id_text(id)?, &record, stored);
        }
        Ok(check.finish())
    }
}
