//! [`SledStore::check`]: every record/index disagreement, listed.

use std::collections::HashMap;

use super::{storage, SledStore};
use crate::check::{duplicate_values, CheckReport, Problem};
use crate::codec;
use crate::error::Result;
use crate::token::{IndexedField, OAuthToken};

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

        for entry in self.engine().records.iter() {
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
