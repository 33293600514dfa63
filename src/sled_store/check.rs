//! [`SledStore::check`]: every record/index disagreement, listed.

use std::collections::HashMap;
use std::fmt;

use super::{storage, SledStore};
use crate::codec;
use crate::error::Result;
use crate::token::{IndexedField, OAuthToken};

/// One disagreement found by [`SledStore::check`]. No variant carries a
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

/// What [`SledStore::check`] found.
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

impl SledStore {
    /// Walks every record and every index entry and reports each
    /// disagreement: undecodable records or entries, record values the index
    /// does not lead to, entries naming missing records or records with
    /// another value, and unique values held twice. Writers wait while it
    /// runs; readers do not.
    ///
    /// # Errors
    /// Only storage errors; damage is reported in the [`CheckReport`].
    pub fn check(&self) -> Result<CheckReport> {
        let _writer = self.writer.lock();
        let mut report = CheckReport::default();
        let mut records: HashMap<String, Option<OAuthToken>> = HashMap::new();
        let mut holders: HashMap<(IndexedField, blake3::Hash), Vec<String>> = HashMap::new();

        for entry in self.records.iter() {
            let (key, bytes) = entry.map_err(storage)?;
            report.records += 1;
            let id = String::from_utf8_lossy(&key).into_owned();
            let record = match self.sealing.decode(&id, &bytes) {
                Ok(record) => record,
                Err(e) => {
                    let detail = match e {
                        crate::Error::Corruption { detail, .. } => detail,
                        other => other.to_string(),
                    };
                    report.problems.push(Problem::UndecodableRecord {
                        id: id.clone(),
                        detail,
                    });
                    records.insert(id, None);
                    continue;
                }
            };
            for field in IndexedField::ALL {
                let Some(value) = record.indexed(field) else {
                    continue;
                };
                holders
                    .entry((field, blake3::hash(value.as_bytes())))
                    .or_default()
                    .push(id.clone());
                let indexed = self
                    .index(field)
                    .get(self.sealing.digest(value))
                    .map_err(storage)?
                    .and_then(|entry| codec::decode_ids(&entry).ok())
                    .is_some_and(|ids| ids.contains(&id));
                if !indexed {
                    report.problems.push(Problem::MissingIndexEntry {
                        id: id.clone(),
                        field,
                    });
                }
            }
            records.insert(id, Some(record));
        }

        report.problems.extend(duplicate_values(holders));

        for field in IndexedField::ALL {
            for entry in self.index(field).iter() {
                let (key, bytes) = entry.map_err(storage)?;
                report.index_entries += 1;
                let Ok(ids) = codec::decode_ids(&bytes) else {
                    report.problems.push(Problem::UndecodableIndexEntry {
                        field,
                        key: hex(&key),
                    });
                    continue;
                };
                for id in ids {
                    let problem = match records.get(&id) {
                        None => Some(Problem::DanglingIndexEntry { field, id }),
                        // Already reported as undecodable.
                        Some(None) => None,
                        Some(Some(record)) => {
                            let holds = record
                                .indexed(field)
                                .is_some_and(|v| self.sealing.digest(v).as_slice() == key.as_ref());
                            (!holds).then_some(Problem::WrongIndexEntry { field, id })
                        }
                    };
                    report.problems.extend(problem);
                }
            }
        }
        Ok(report)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
