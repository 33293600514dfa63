//! `tokenstore import`: rows from a Zoho FileStore CSV, the published SQLite
//! sample's table, the DBStore's MySQL table or a `tokenstore export` JSON
//! file (read by the `sources` module), saved through the store's own rules
//! in one atomic batch; and `tokenstore copy`, which saves another store's
//! records the same way.
//!
//! Messages name rows, columns and fields, never a value: a value may be a
//! secret.

mod sources;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use indicatif::ProgressBar;
use serde_json::json;
use tokenstore::{Backend, Batch, Error};

use crate::{CliError, CliResult, Output};
pub use sources::{column_field, EXPORT_VERSION, ZOHO_CSV_HEADER};
use sources::{read_json, read_mysql, read_sqlite, read_zoho_csv, Row};

#[derive(Args)]
pub struct ImportArgs {
    /// The file to read (not used with --from mysql).
    #[arg(required_unless_present = "url")]
    file: Option<PathBuf>,
    /// What the source is.
    #[arg(long, value_enum)]
    from: Source,
    /// The table to read (sqlite, mysql).
    #[arg(long, default_value = "oauthtoken", value_name = "NAME")]
    table: String,
    /// The MySQL/MariaDB server, as mysql://user:password@host:port/database
    /// (--from mysql; needs a build with the `mysql` feature).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Read and check everything, report, and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// When a row's user name or token is held by another record: stop and
    /// import nothing (fail), leave the row out (skip), or remove the other
    /// record (overwrite).
    #[arg(long, value_enum, default_value_t = OnConflict::Fail)]
    on_conflict: OnConflict,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Source {
    /// A Zoho SDK FileStore CSV file.
    ZohoCsv,
    /// A SQLite database with the Zoho sample's `oauthtoken` table.
    Sqlite,
    /// A file written by `tokenstore export`.
    Json,
    /// The Zoho SDK DBStore table on a MySQL or MariaDB server (--url).
    Mysql,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
pub enum OnConflict {
    /// Import nothing and exit 1.
    Fail,
    /// Leave the row out and go on.
    Skip,
    /// The row wins: the record holding the value is removed.
    Overwrite,
}

/// A row the import left out or that removed a record.
struct Issue {
    row: String,
    field: String,
    held_by: Option<String>,
    action: &'static str,
}

/// What an import did (or, in a dry run, would do).
#[derive(Default)]
struct Summary {
    read: usize,
    imported: usize,
    updated: usize,
    merged: usize,
    /// (row, source id, id given)
    renumbered: Vec<(String, String, String)>,
    issues: Vec<Issue>,
}

impl Summary {
    fn skipped(&self) -> usize {
        self.issues.iter().filter(|i| i.action == "skipped").count()
    }

    /// The renumbered ids and the conflicts as JSON arrays, each entry
    /// naming its source as `item` ("row", or "record" for a copy).
    fn json_details(&self, item: &str) -> (serde_json::Value, serde_json::Value) {
        let renumbered = self
            .renumbered
            .iter()
            .map(|(row, from, to)| json!({ item: row, "source_id": from, "id": to }))
            .collect();
        let conflicts = self
            .issues
            .iter()
            .map(|i| {
                json!({ item: i.row, "field": i.field, "held_by": i.held_by, "action": i.action })
            })
            .collect();
        (renumbered, conflicts)
    }

    /// One line per renumbered id and per conflict.
    fn text_details(&self, other_record: &str) -> String {
        let mut text = String::new();
        for (row, from, to) in &self.renumbered {
            text.push_str(&format!(
                "{row}: id {from:?} belongs to {other_record}; saved as id {to}\n"
            ));
        }
        for issue in &self.issues {
            match &issue.held_by {
                Some(holder) => text.push_str(&format!(
                    "{}: {} already held by {holder}: {}\n",
                    issue.row, issue.field, issue.action
                )),
                None => text.push_str(&format!(
                    "{}: {}: {}\n",
                    issue.row, issue.field, issue.action
                )),
            }
        }
        text
    }
}

/// Why an all-or-nothing import stopped.
fn stopped(row: &Row, what: &str, advice: &str) -> CliError {
    let verb = if row.from_store { "copied" } else { "imported" };
    CliError::refused(format!(
        "{}: {what}; nothing was {verb} ({advice})",
        row.label()
    ))
}

/// Saves every row in `batch`, in order of expiry time (oldest first, so
/// that for duplicate rows of one user the newest wins).
fn import_rows(
    batch: &mut Batch<'_>,
    rows: &[Row],
    on_conflict: OnConflict,
    progress: &ProgressBar,
) -> CliResult<Summary> {
    // Ids the source used are never given to another user's record: new
    // records get ids past the highest numeric one.
    if let Some(highest) = rows
        .iter()
        .filter_map(|r| r.token.id.as_deref()?.parse::<u64>().ok())
        .max()
    {
        batch.skip_ids_through(highest);
    }
    let mut order: Vec<&Row> = rows.iter().collect();
    order.sort_by_key(|r| r.token.expiry_time);
    let mut summary = Summary {
        read: rows.len(),
        ..Summary::default()
    };
    // Records this import created, and the row each came from.
    let mut created: HashMap<String, String> = HashMap::new();
    let held_by = |created: &HashMap<String, String>, id: &str| match created.get(id) {
        Some(row) => format!("record {id} (from {row})"),
        None => format!("record {id}"),
    };

    for row in order {
        progress.inc(1);
        let mut token = row.token.clone();
        token.normalize();
        if !token.has_any_token() {
            if on_conflict != OnConflict::Skip {
                return Err(stopped(
                    row,
                    "it has no access, refresh or grant token",
                    "use --on-conflict skip to leave such rows out",
                ));
            }
            summary.issues.push(Issue {
                row: row.label(),
                field: "no token".into(),
                held_by: None,
                action: "skipped",
            });
            continue;
        }
        // The row's record is the one its lookup key finds; its own id is
        // kept only for a new record, and only if no other record has it.
        let source_id = token.id.take();
        let existing = batch.find_token(&token)?;
        let mut renumbered = None;
        match &existing {
            Some(record) => token.id = record.id.clone(),
            None => {
                if let Some(id) = source_id {
                    if batch.find_token_by_id(&id)?.is_none() {
                        token.id = Some(id);
                    } else {
                        renumbered = Some(id);
                    }
                }
            }
        }
        let mut replaced = HashSet::new();
        loop {
            let mut saving = token.clone();
            match batch.save_token(&mut saving) {
                Ok(()) => {
                    let id = saving.id.unwrap_or_default();
                    match &existing {
                        Some(_) if created.contains_key(&id) => summary.merged += 1,
                        Some(_) => summary.updated += 1,
                        None => {
                            summary.imported += 1;
                            if let Some(source) = renumbered.take() {
                                summary.renumbered.push((row.label(), source, id.clone()));
                            }
                            created.insert(id, row.label());
                        }
                    }
                    break;
                }
                Err(Error::Conflict { field, id }) => {
                    let holder = held_by(&created, &id);
                    match on_conflict {
                        OnConflict::Fail => {
                            return Err(stopped(
                                row,
                                &format!("its {field} is already held by {holder}"),
                                "use --on-conflict skip or overwrite",
                            ))
                        }
                        OnConflict::Skip => {
                            summary.issues.push(Issue {
                                row: row.label(),
                                field: field.to_string(),
                                held_by: Some(holder),
                                action: "skipped",
                            });
                            break;
                        }
                        OnConflict::Overwrite => {
                            // Each round removes one record; a row has at most
                            // four unique values.
                            if !replaced.insert(id.clone()) || replaced.len() > 4 {
                                return Err(CliError::input(format!(
                                    "{}: the conflict with {holder} persists after removing it",
                                    row.label()
                                )));
                            }
                            batch.delete_token(&id)?;
                            created.remove(&id);
                            summary.issues.push(Issue {
                                row: row.label(),
                                field: field.to_string(),
                                held_by: Some(holder),
                                action: "removed the holder",
                            });
                        }
                    }
                }
                Err(e) => return Err(CliError::from(e).within(&row.label())),
            }
        }
    }
    Ok(summary)
}

pub fn run(store: &dyn Backend, args: &ImportArgs, out: Output) -> CliResult {
    let (rows, source) = match args.from {
        Source::Mysql => {
            let url = args
                .url
                .as_deref()
                .ok_or_else(|| CliError::input("--from mysql needs --url mysql://…"))?;
            (read_mysql(url, &args.table)?, "MySQL".to_owned())
        }
        from => {
            let file = args.file.as_deref().ok_or_else(|| {
                CliError::input(format!("--from {} needs a FILE", from_name(from)))
            })?;
            let rows = match from {
                Source::ZohoCsv => read_zoho_csv(file)?,
                Source::Sqlite => read_sqlite(file, &args.table)?,
                _ => read_json(file)?,
            };
            (rows, file.display().to_string())
        }
    };

    let progress = crate::progress_bar(
        rows.len(),
        "{msg:10} [{bar:40}] {pos}/{len} rows ({per_sec}, {eta} left)",
    );
    progress.set_message("importing");
    let summary = store.batch(|batch| {
        let summary = import_rows(batch, &rows, args.on_conflict, &progress)?;
        if args.dry_run {
            batch.discard();
        }
        progress.set_message("writing");
        Ok::<_, CliError>(summary)
    });
    progress.finish_and_clear();
    let summary = summary?;
    report(&summary, &source, args, out);
    Ok(())
}

fn from_name(source: Source) -> &'static str {
    match source {
        Source::ZohoCsv => "zoho-csv",
        Source::Sqlite => "sqlite",
        Source::Json => "json",
        Source::Mysql => "mysql",
    }
}

fn report(summary: &Summary, source: &str, args: &ImportArgs, out: Output) {
    let skipped = summary.skipped();
    let (renumbered, conflicts) = summary.json_details("row");
    out.print(
        json!({
            "source": source,
            "from": from_name(args.from),
            "dry_run": args.dry_run,
            "read": summary.read,
            "imported": summary.imported,
            "updated": summary.updated,
            "merged": summary.merged,
            "skipped": skipped,
            "renumbered": renumbered,
            "conflicts": conflicts,
        }),
        || {
            let mut text = format!(
                "{}read {} rows from {source}: {} new records, {} updated, {} merged duplicate rows, {} skipped\n",
                if args.dry_run { "dry run: " } else { "" },
                summary.read,
                summary.imported,
                summary.updated,
                summary.merged,
                skipped,
            );
            text.push_str(&summary.text_details("another record"));
            if args.dry_run {
                text.push_str("nothing was written (--dry-run)\n");
            }
            text
        },
    );
}

#[derive(Args)]
pub struct CopyArgs {
    /// The store to copy from: a directory or a postgres:// URL.
    #[arg(long, value_name = "DIR|URL")]
    pub from: String,
    /// The store to copy into (created if it is a directory that does not
    /// exist): a directory or a postgres:// URL.
    #[arg(long, value_name = "DIR|URL")]
    pub to: String,
    /// The key of an encrypted source (default: --key-file / TOKENSTORE_KEY).
    #[arg(long, value_name = "PATH")]
    pub from_key_file: Option<PathBuf>,
    /// The key to open or create the target with (default: --key-file /
    /// TOKENSTORE_KEY): copying to a new store with another key re-encrypts.
    #[arg(long, value_name = "PATH")]
    pub to_key_file: Option<PathBuf>,
    /// A target that already holds records is refused unless this says how
    /// to resolve a user name or token held by one of its records: stop and
    /// copy nothing (fail), leave the source record out (skip), or remove the
    /// target's record (overwrite). A source id that the target already uses
    /// for another user gets a new id.
    #[arg(long, value_enum)]
    on_conflict: Option<OnConflict>,
    /// Read and check everything, report, and write nothing.
    #[arg(long)]
    dry_run: bool,
}

/// `tokenstore copy`: every record of `source` into `target` in one atomic
/// batch, ids and the id counter kept.
pub fn copy(source: &dyn Backend, target: &dyn Backend, args: &CopyArgs, out: Output) -> CliResult {
    let existing = target.count()?;
    let on_conflict = match (args.on_conflict, existing) {
        (Some(policy), _) => policy,
        (None, 0) => OnConflict::Fail,
        (None, n) => {
            return Err(CliError::refused(format!(
                "the target {} already holds {n} record(s); copy into an empty store, or pass \
                 --on-conflict fail|skip|overwrite to merge into it",
                target.location()
            )))
        }
    };
    let mut tokens = source.get_tokens()?;
    tokens.sort_by(|a, b| crate::render::id_order(a.id.as_deref(), b.id.as_deref()));
    let rows: Vec<Row> = tokens
        .into_iter()
        .enumerate()
        .map(|(n, token)| Row {
            number: n + 1,
            token,
            from_store: true,
        })
        .collect();
    let counter = source.last_issued_id()?;

    let progress = crate::progress_bar(
        rows.len(),
        "{msg:10} [{bar:40}] {pos}/{len} records ({per_sec}, {eta} left)",
    );
    progress.set_message("copying");
    let summary = target.batch(|batch| {
        let summary = import_rows(batch, &rows, on_conflict, &progress)?;
        // Ids the source gave away are never handed out again by the target.
        batch.skip_ids_through(counter);
        if args.dry_run {
            batch.discard();
        }
        progress.set_message("writing");
        Ok::<_, CliError>(summary)
    });
    progress.finish_and_clear();
    let summary = summary?;
    let skipped = summary.skipped();
    let (renumbered, conflicts) = summary.json_details("record");
    out.print(
        json!({
            "from": source.location(),
            "to": target.location(),
            "dry_run": args.dry_run,
            "read": summary.read,
            "copied": summary.imported,
            "merged_into_existing": summary.updated,
            "skipped": skipped,
            "id_counter": target.last_issued_id()?,
            "renumbered": renumbered,
            "conflicts": conflicts,
        }),
        || {
            let mut text = format!(
                "{}copied {} of {} records from {} to {}: {} new, {} merged into existing records, {} skipped\n",
                if args.dry_run { "dry run: " } else { "" },
                summary.imported + summary.updated,
                summary.read,
                source.location(),
                target.location(),
                summary.imported,
                summary.updated,
                skipped,
            );
            text.push_str(&summary.text_details("another record of the target"));
            if args.dry_run {
                text.push_str("nothing was written (--dry-run)\n");
            }
            text
        },
    );
    Ok(())
}
