//! The store as seen through one connection or transaction: what reads
//! and the planning of writes ask of it.

use mysql::prelude::Queryable;

use super::*;

/// The store as seen through one connection or transaction. The failure
/// class of the last client error is kept, so that a write knows whether
/// its attempt may be retried after the plan's read failed.
pub(crate) struct View<'a, Q> {
    conn: RefCell<&'a mut Q>,
    sealing: &'a Sealing,
    pub(super) failed: Cell<Option<Failure>>,
}

impl<'a, Q: Queryable> View<'a, Q> {
    pub(super) fn new(conn: &'a mut Q, sealing: &'a Sealing) -> Self {
        View {
            conn: RefCell::new(conn),
            sealing,
            failed: Cell::new(None),
        }
    }

    fn mapped(&self, what: &'static str) -> impl Fn(mysql::Error) -> Error + '_ {
        noting(what, &self.failed)
    }
}

/// The row holding `field`'s digest.
pub(super) fn select_by_digest(field: IndexedField) -> &'static str {
    match field {
        IndexedField::UserName => {
            "SELECT id, record FROM tokenstore_records WHERE user_name_digest = ?"
        }
        IndexedField::AccessToken => {
            "SELECT id, record FROM tokenstore_records WHERE access_token_digest = ?"
        }
        IndexedField::RefreshToken => {
            "SELECT id, record FROM tokenstore_records WHERE refresh_token_digest = ?"
        }
        IndexedField::GrantToken => {
            "SELECT id, record FROM tokenstore_records WHERE grant_token_digest = ?"
        }
    }
}

/// An id column's bytes as the id they are.
pub(super) fn id_text(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes)
        .map_err(|_| Error::corruption(None, "a tokenstore_records id is not UTF-8"))
}

impl<Q: Queryable> StoreView for View<'_, Q> {
    fn record(&self, id: &str) -> Result<Option<OAuthToken>> {
        let what = "reading a record";
        let row: Option<Vec<u8>> = self
            .conn
            .borrow_mut()
            .exec_first(
                "SELECT record FROM tokenstore_records WHERE id = ?",
                (id.as_bytes(),),
            )
            .map_err(self.mapped(what))?;
        row.map(|bytes| self.sealing.decode(id, &bytes)).transpose()
    }

    fn contains(&self, id: &str) -> Result<bool> {
        let what = "reading a record";
        let row: Option<u8> = self
            .conn
            .borrow_mut()
            .exec_first(
                "SELECT 1 FROM tokenstore_records WHERE id = ?",
                (id.as_bytes(),),
            )
            .map_err(self.mapped(what))?;
        Ok(row.is_some())
    }

    fn record_with(&self, field: IndexedField, value: &str) -> Result<Option<OAuthToken>> {
        let what = "looking a record up";
        let digest = self.sealing.digest(value);
        let row: Option<(Vec<u8>, Vec<u8>)> = self
            .conn
            .borrow_mut()
            .exec_first(select_by_digest(field), (&digest[..],))
            .map_err(self.mapped(what))?;
        let Some((id, bytes)) = row else {
            return Ok(None);
        };
        let record = self.sealing.decode(&id_text(id)?, &bytes)?;
        // Another value with the same digest is not this value.
        Ok((record.indexed(field) == Some(value)).then_some(record))
    }
}
