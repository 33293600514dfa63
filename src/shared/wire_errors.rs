//! The wire format's errors and check reports: [`WireError`] rebuilt on
//! the client as the same [`Error`] variant, [`WireCheck`] as the same
//! [`CheckReport`].

use std::io;

use serde::{Deserialize, Serialize};

use super::WireField;
use crate::check::{CheckReport, Problem};
use crate::error::Error;
use crate::token::IndexedField;

/// A problem of a check report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireProblem {
    UndecodableRecord {
        id: String,
        detail: String,
    },
    MissingIndexEntry {
        id: String,
        field: WireField,
    },
    DanglingIndexEntry {
        field: WireField,
        id: String,
    },
    WrongIndexEntry {
        field: WireField,
        id: String,
    },
    UndecodableIndexEntry {
        field: WireField,
        key: String,
    },
    DuplicateValue {
        field: WireField,
        ids: Vec<String>,
    },
    /// A problem this version has no name for, as text.
    Other(String),
}

/// A check report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireCheck {
    pub records: u64,
    pub index_entries: u64,
    pub problems: Vec<WireProblem>,
}

/// An [`Error`] on the wire. The client rebuilds the same variant, with its
/// own name for the store where the variant carries one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireError {
    InvalidToken {
        reason: String,
    },
    Conflict {
        field: WireField,
        id: String,
    },
    Corruption {
        id: Option<String>,
        detail: String,
    },
    Locked,
    UnsupportedVersion {
        found: u32,
        supported: u32,
    },
    WrongKey,
    KeyRequired,
    NotEncrypted,
    RekeyRequired,
    InvalidKey {
        reason: String,
    },
    Unavailable {
        what: String,
        detail: String,
        maybe_committed: bool,
    },
    Unsupported {
        operation: String,
        instead: String,
    },
    Panicked {
        what: String,
    },
    /// An I/O error (its kind as `io::ErrorKind`'s name, and its text).
    Io {
        message: String,
    },
    /// Any other error, as text.
    Other {
        message: String,
    },
}

impl WireError {
    /// The owner's error, for the wire.
    pub fn from_error(error: &Error) -> WireError {
        match error {
            Error::InvalidToken { reason } => WireError::InvalidToken {
                reason: reason.clone(),
            },
            Error::Conflict { field, id } => WireError::Conflict {
                field: (*field).into(),
                id: id.clone(),
            },
            Error::Corruption { id, detail } => WireError::Corruption {
                id: id.clone(),
                detail: detail.clone(),
            },
            Error::Locked { .. } => WireError::Locked,
            Error::UnsupportedVersion { found, supported } => WireError::UnsupportedVersion {
                found: *found,
                supported: *supported,
            },
            Error::WrongKey { .. } => WireError::WrongKey,
            Error::KeyRequired { .. } => WireError::KeyRequired,
            Error::NotEncrypted { .. } => WireError::NotEncrypted,
            Error::RekeyRequired { .. } => WireError::RekeyRequired,
            Error::InvalidKey { reason } => WireError::InvalidKey {
                reason: reason.clone(),
            },
            Error::Unavailable {
                what,
                detail,
                maybe_committed,
            } => WireError::Unavailable {
                what: what.clone(),
                detail: detail.clone(),
                maybe_committed: *maybe_committed,
            },
            Error::Unsupported {
                operation, instead, ..
            } => WireError::Unsupported {
                operation: operation.clone(),
                instead: instead.clone(),
            },
            Error::Panicked { what } => WireError::Panicked { what: what.clone() },
            Error::Io(io) => WireError::Io {
                message: io.to_string(),
            },
            other => WireError::Other {
                message: other.to_string(),
            },
        }
    }

    /// The error as the client reports it; `path` is the store as the
    /// client named it.
    pub fn into_error(self, path: &std::path::Path) -> Error {
        let path = path.to_path_buf();
        match self {
            WireError::InvalidToken { reason } => Error::InvalidToken { reason },
            WireError::Conflict { field, id } => match field.field() {
                Some(field) => Error::Conflict { field, id },
                None => Error::corruption(None, "the owner named an unknown field"),
            },
            WireError::Corruption { id, detail } => Error::Corruption { id, detail },
            WireError::Locked => Error::Locked { path },
            WireError::UnsupportedVersion { found, supported } => {
                Error::UnsupportedVersion { found, supported }
            }
            WireError::WrongKey => Error::WrongKey { path },
            WireError::KeyRequired => Error::KeyRequired { path },
            WireError::NotEncrypted => Error::NotEncrypted { path },
            WireError::RekeyRequired => Error::RekeyRequired { path },
            WireError::InvalidKey { reason } => Error::InvalidKey { reason },
            WireError::Unavailable {
                what,
                detail,
                maybe_committed,
            } => Error::Unavailable {
                what,
                detail,
                maybe_committed,
            },
            WireError::Unsupported { operation, instead } => Error::Unsupported {
                operation,
                backend: "sled",
                instead,
            },
            WireError::Panicked { what } => Error::Panicked { what },
            WireError::Io { message } | WireError::Other { message } => {
                Error::from(io::Error::other(message))
            }
        }
    }
}

impl From<&CheckReport> for WireCheck {
    fn from(report: &CheckReport) -> Self {
        let problems = report
            .problems
            .iter()
            .map(|problem| match problem {
                Problem::UndecodableRecord { id, detail } => WireProblem::UndecodableRecord {
                    id: id.clone(),
                    detail: detail.clone(),
                },
                Problem::MissingIndexEntry { id, field } => WireProblem::MissingIndexEntry {
                    id: id.clone(),
                    field: (*field).into(),
                },
                Problem::DanglingIndexEntry { field, id } => WireProblem::DanglingIndexEntry {
                    field: (*field).into(),
                    id: id.clone(),
                },
                Problem::WrongIndexEntry { field, id } => WireProblem::WrongIndexEntry {
                    field: (*field).into(),
                    id: id.clone(),
                },
                Problem::UndecodableIndexEntry { field, key } => {
                    WireProblem::UndecodableIndexEntry {
                        field: (*field).into(),
                        key: key.clone(),
                    }
                }
                Problem::DuplicateValue { field, ids } => WireProblem::DuplicateValue {
                    field: (*field).into(),
                    ids: ids.clone(),
                },
                #[allow(unreachable_patterns)]
                other => WireProblem::Other(other.to_string()),
            })
            .collect();
        WireCheck {
            records: report.records as u64,
            index_entries: report.index_entries as u64,
            problems,
        }
    }
}

impl WireCheck {
    /// The report as the client returns it.
    pub fn into_report(self) -> CheckReport {
        let field = |f: WireField| f.field().unwrap_or(IndexedField::UserName);
        let problems = self
            .problems
            .into_iter()
            .map(|problem| match problem {
                WireProblem::UndecodableRecord { id, detail } => {
                    Problem::UndecodableRecord { id, detail }
                }
                WireProblem::MissingIndexEntry { id, field: f } => Problem::MissingIndexEntry {
                    id,
                    field: field(f),
                },
                WireProblem::DanglingIndexEntry { field: f, id } => Problem::DanglingIndexEntry {
                    field: field(f),
                    id,
                },
                WireProblem::WrongIndexEntry { field: f, id } => Problem::WrongIndexEntry {
                    field: field(f),
                    id,
                },
                WireProblem::UndecodableIndexEntry { field: f, key } => {
                    Problem::UndecodableIndexEntry {
                        field: field(f),
                        key,
                    }
                }
                WireProblem::DuplicateValue { field: f, ids } => Problem::DuplicateValue {
                    field: field(f),
                    ids,
                },
                WireProblem::Other(text) => Problem::UndecodableRecord {
                    id: String::new(),
                    detail: text,
                },
            })
            .collect();
        CheckReport {
            records: self.records as usize,
            index_entries: self.index_entries as usize,
            problems,
        }
    }
}
