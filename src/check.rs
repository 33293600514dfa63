//! What an integrity check reports, for every backend: [`CheckReport`]
//! and its [`Problem`]s (`SledStore::check`, `PostgresStore::check`,
//! [`Backend::check`](crate::Backend::check)).

use std::collections::HashMap;
use std::fmt;

use crate::token::IndexedField;

/// One disagreement found by a store's `check`. No variant carries a
/// secret: values are named by field and record id only.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The record's bytes cannot be decoded.
    UndecodableRecord {
        /// The record's key.
        id: String,
        /// Why decoding failed.
        detail: String,
    },
    /// The record holds a value its field's index does not lead to.
    MissingIndexEntry {
        /// The record.
        id: String,
        /// The field whose index lacks the entry.
        field: IndexedField,
    },
    /// An index entry names a record that does not exist.
    DanglingIndexEntry {
        /// The index.
        field: IndexedField,
        /// The missing record's id.
        id: String,
    },
    /// An index entry names a record whose value for the field is another
    /// one (or none).
    WrongIndexEntry {
        /// The index.
        field: IndexedField,
        /// The record named by the entry.
        id: String,
    },
    /// An index entry's bytes cannot be decoded.
    UndecodableIndexEntry {
        /// The index.
        field: IndexedField,
        /// The entry's key (a digest, not a secret), in hex.
        key: String,
    },
    /// Two records hold the same value of a unique field.
    DuplicateValue {
        /// The unique field.
        field: IndexedField,
        /// The records sharing one value.
        ids: Vec<String>,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::UndecodableRecord { id, detail } => {
                write!(f, "record {id:?} cannot be decoded: {detail}")
            }
            Problem::MissingIndexEntry { id, field } => {
                write!(
                    f,
                    "record {id:?} has a {field} that the {field} index does not lead to"
                )
            }
            Problem::DanglingIndexEntry { field, id } => {
                write!(
                    f,
                    "the {field} index names record {id:?}, which does not exist"
                )
            }
            Problem::WrongIndexEntry { field, id } => write!(
                f,
                "the {field} index names record {id:?} under a value that record does not hold"
            ),
            Problem::UndecodableIndexEntry { field, key } => {
                write!(f, "the {field} index entry {key} cannot be decoded")
            }
            Problem::DuplicateValue { field, ids } => {
                write!(f, "records {ids:?} share one {field}, which must be unique")
            }
        }
    }
}

/// What a store's `check` found.
///
/// ```
/// use tokenstore::{OAuthToken, SledStore, TokenStore};
///
/// let dir = tempfile::tempdir()?;
/// let store = SledStore::open(dir.path().join("tokens"))?;
/// store.save_token(&mut OAuthToken::new().with_user_name("ana").with_access_token("a"))?;
/// let report = store.check()?;
/// assert!(report.is_ok(), "{report}");
/// assert_eq!(report.records, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// How many records were examined.
    pub records: usize,
    /// How many index entries were examined.
    pub index_entries: usize,
    /// Every problem found.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The values of a unique field held by more than one record (each keyed by
/// its field and its digest), as problems in a stable order.
pub(crate) fn duplicate_values(
    holders: HashMap<(IndexedField, blake3::Hash), Vec<String>>,
) -> Vec<Problem> {
    let mut duplicates: Vec<_> = holders
        .into_iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|((field, _), mut ids)| {
            ids.sort();
            Problem::DuplicateValue { field, ids }
        })
        .collect();
    duplicates.sort_by_key(ToString::to_string);
    duplicates
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} records, {} index entries: ",
            self.records, self.index_entries
        )?;
        if self.is_ok() {
            return f.write_str("no problems");
        }
        write!(f, "{} problems", self.problems.len())?;
        for problem in &self.problems {
            write!(f, "\n- {problem}")?;
        }
        Ok(())
    }
}

/// The check of a database-server backend (PostgreSQL, MySQL): each row's
/// record against the digest columns stored beside it, and unique values
/// held twice. The backend reads the rows; what a row must hold is decided
/// here once.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) struct DigestColumns<'s> {
    sealing: &'s crate::codec::Sealing,
    report: CheckReport,
    holders: HashMap<(IndexedField, blake3::Hash), Vec<String>>,
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
impl<'s> DigestColumns<'s> {
    pub(crate) fn new(sealing: &'s crate::codec::Sealing) -> Self {
        DigestColumns {
            sealing,
            report: CheckReport::default(),
            holders: HashMap::new(),
        }
    }

    /// One row: its id, its record's bytes and its four digest columns (in
    /// [`IndexedField::ALL`] order).
    pub(crate) fn row(&mut self, id: String, bytes: &[u8], stored: [Option<&[u8]>; 4]) {
        self.report.records += 1;
        self.report.index_entries += stored.iter().flatten().count();
        let record = match self.sealing.decode(&id, bytes) {
            Ok(record) => record,
            Err(e) => {
                let detail = match e {
                    crate::error::Error::Corruption { detail, .. } => detail,
                    other => other.to_string(),
                };
                self.report
                    .problems
                    .push(Problem::UndecodableRecord { id, detail });
                return;
            }
        };
        for field in IndexedField::ALL {
            let value = record.indexed(field);
            if let Some(value) = value {
                self.holders
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
                self.report.problems.push(Problem::MissingIndexEntry {
                    id: id.clone(),
                    field,
                });
            }
            if column.is_some() {
                self.report.problems.push(Problem::WrongIndexEntry {
                    field,
                    id: id.clone(),
                });
            }
        }
    }

    /// The report, with the duplicated values.
    pub(crate) fn finish(mut self) -> CheckReport {
        self.report.problems.extend(duplicate_values(self.holders));
        self.report
    }
}
