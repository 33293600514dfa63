//! The store as seen through one connection or transaction: what reads
//! and the planning of writes ask of it.

use super::*;

/// The store as seen through one connection or transaction, noting in
/// `lost` when a query finds the connection gone (so that a read, or a
/// write's attempt, can run again on another).
pub(crate) struct View<'a, C> {
    conn: RefCell<&'a mut C>,
    sealing: &'a Sealing,
    lost: &'a Cell<bool>,
}

impl<'a, C: GenericClient> View<'a, C> {
    pub(super) fn new(conn: &'a mut C, sealing: &'a Sealing, lost: &'a Cell<bool>) -> Self {
        View {
            conn: RefCell::new(conn),
            sealing,
            lost,
        }
    }
}

pub(super) fn select_by_digest(field: IndexedField) -> &'static str {
    match field {
        IndexedField::UserName => {
            "SELECT id, record FROM tokenstore_records WHERE user_name_digest = $1"
        }
        IndexedField::AccessToken => {
            "SELECT id, record FROM tokenstore_records WHERE access_token_digest = $1"
        }
        IndexedField::RefreshToken => {
            "SELECT id, record FROM tokenstore_records WHERE refresh_token_digest = $1"
        }
        IndexedField::GrantToken => {
            "SELECT id, record FROM tokenstore_records WHERE grant_token_digest = $1"
        }
    }
}

impl<C: GenericClient> StoreView for View<'_, C> {
    fn record(&self, id: &str) -> Result<Option<OAuthToken>> {
        let what = "reading a record";
        let row = self
            .conn
            .borrow_mut()
            .query_typed_opt(
                "SELECT record FROM tokenstore_records WHERE id = $1",
                &[(&id, Type::TEXT)],
            )
            .map_err(noting(what, self.lost))?;
        match row {
            Some(row) => self.sealing.decode(id, col(&row, 0)?).map(Some),
            None => Ok(None),
        }
    }

    fn contains(&self, id: &str) -> Result<bool> {
        let what = "reading a record";
        let row = self
            .conn
            .borrow_mut()
            .query_typed_opt(
                "SELECT 1 FROM tokenstore_records WHERE id = $1",
                &[(&id, Type::TEXT)],
            )
            .map_err(noting(what, self.lost))?;
        Ok(row.is_some())
    }

    fn record_with(&self, field: IndexedField, value: &str) -> Result<Option<OAuthToken>> {
        let what = "looking a record up";
        let digest = self.sealing.digest(value);
        let digest: &[u8] = &digest;
        let row = self
            .conn
            .borrow_mut()
            .query_typed_opt(select_by_digest(field), &[(&digest, Type::BYTEA)])
            .map_err(noting(what, self.lost))?;
        let Some(row) = row else { return Ok(None) };
        let id: &str = col(&row, 0)?;
        let record = self.sealing.decode(id, col(&row, 1)?)?;
        // Another value with the same digest is not this value.
        Ok((record.indexed(field) == Some(value)).then_some(record))
    }
}
