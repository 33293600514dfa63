//! `tokenstore import`: rows from a Zoho FileStore CSV, the published SQLite
//! sample's table, the DBStore's MySQL table or a `tokenstore export` JSON
//! file, saved through the store's own rules in one atomic batch.
//!
//! Messages name rows, columns and fields, never a value: a value may be a
//! secret.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use indicatif::ProgressBar;
use serde_json::{json, Value};
use tokenstore::{Backend, Batch, Error, OAuthToken};

use crate::{CliError, CliResult, Output};

/// The FileStore CSV header, in the column order the Zoho SDKs read by
/// position; `export --format zoho-csv` writes it.
pub const ZOHO_CSV_HEADER: [&str; 10] = [
    "id",
    "user_name",
    "client_id",
    "client_secret",
    "refresh_token",
    "access_token",
    "grant_token",
    "expiry_time",
    "redirect_uri",
    "api_domain",
];

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

/// A field of the record, as source columns name it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Field {
    Id,
    UserName,
    ClientId,
    ClientSecret,
    RefreshToken,
    AccessToken,
    GrantToken,
    ExpiryTime,
    RedirectUrl,
    ApiDomain,
}

impl Field {
    /// The field a column name means: the names of Zoho's stores, old and new.
    fn from_column(name: &str) -> Option<Field> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "id" => Field::Id,
            "user_name" | "user_mail" | "useremail" | "user_email" => Field::UserName,
            "client_id" => Field::ClientId,
            "client_secret" => Field::ClientSecret,
            "refresh_token" => Field::RefreshToken,
            "access_token" => Field::AccessToken,
            "grant_token" => Field::GrantToken,
            "expiry_time" => Field::ExpiryTime,
            "redirect_uri" | "redirect_url" => Field::RedirectUrl,
            "api_domain" => Field::ApiDomain,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Field::Id => "id",
            Field::UserName => "user_name",
            Field::ClientId => "client_id",
            Field::ClientSecret => "client_secret",
            Field::RefreshToken => "refresh_token",
            Field::AccessToken => "access_token",
            Field::GrantToken => "grant_token",
            Field::ExpiryTime => "expiry_time",
            Field::RedirectUrl => "redirect_url",
            Field::ApiDomain => "api_domain",
        }
    }

    fn is_token(self) -> bool {
        matches!(
            self,
            Field::RefreshToken | Field::AccessToken | Field::GrantToken
        )
    }

    /// Sets this field of `token` from a source value; empty means absent.
    fn set(self, token: &mut OAuthToken, value: Option<String>) -> Result<(), String> {
        let value = value.filter(|v| !v.is_empty());
        let slot = match self {
            Field::Id => &mut token.id,
            Field::UserName => &mut token.user_name,
            Field::ClientId => &mut token.client_id,
            Field::ClientSecret => &mut token.client_secret,
            Field::RefreshToken => &mut token.refresh_token,
            Field::AccessToken => &mut token.access_token,
            Field::GrantToken => &mut token.grant_token,
            Field::RedirectUrl => &mut token.redirect_url,
            Field::ApiDomain => &mut token.api_domain,
            Field::ExpiryTime => {
                token.expiry_time = match value {
                    None => None,
                    Some(v) => Some(v.trim().parse::<i64>().map_err(|_| {
                        "expiry_time is not a whole number of milliseconds".to_owned()
                    })?),
                };
                return Ok(());
            }
        };
        *slot = value;
        Ok(())
    }
}

/// A column name safe to repeat in a message: a word, not a value that
/// could be a secret (a headerless file's first line is data).
fn shown_column(name: &str) -> String {
    let word = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphabetic() || c == '_' || c == ' ');
    if word {
        format!("{name:?}")
    } else {
        "(not shown: it does not look like a column name)".into()
    }
}

/// One source row, read.
struct Row {
    /// 1-based among the source's data rows (a CSV's header is not a row).
    number: usize,
    token: OAuthToken,
    /// A record of another store (`copy`), named by its id, not a row.
    from_store: bool,
}

impl Row {
    fn new(number: usize, token: OAuthToken) -> Row {
        Row {
            number,
            token,
            from_store: false,
        }
    }

    fn label(&self) -> String {
        match (&self.token.id, self.from_store) {
            (Some(id), true) => format!("source record {id:?}"),
            _ => format!("row {}", self.number),
        }
    }
}

/// Maps a table's or file's column names to fields.
struct Columns(Vec<Option<Field>>);

impl Columns {
    /// `strict`: every column must be known (a CSV file); otherwise unknown
    /// columns are ignored (a database table may carry more).
    fn new<'a>(
        names: impl IntoIterator<Item = &'a str>,
        strict: bool,
        what: &str,
    ) -> CliResult<Columns> {
        let mut fields = Vec::new();
        for (i, name) in names.into_iter().enumerate() {
            let field = Field::from_column(name);
            if field.is_none() && strict {
                return Err(CliError::input(format!(
                    "{what}: column {} of the header, {}, is not a token store column \
                     (expected {}); is this a Zoho FileStore CSV with its header line?",
                    i + 1,
                    shown_column(name),
                    ZOHO_CSV_HEADER.join(",")
                )));
            }
            if let Some(f) = field {
                if fields.contains(&Some(f)) {
                    return Err(CliError::input(format!(
                        "{what}: two columns mean {}",
                        f.name()
                    )));
                }
            }
            fields.push(field);
        }
        if !fields.iter().flatten().any(|f| f.is_token()) {
            return Err(CliError::input(format!(
                "{what} has no refresh_token, access_token or grant_token column"
            )));
        }
        Ok(Columns(fields))
    }

    /// The token from one row's values, in column order.
    fn token(
        &self,
        values: impl IntoIterator<Item = Option<String>>,
    ) -> Result<OAuthToken, String> {
        let mut token = OAuthToken::new();
        for (field, value) in self.0.iter().zip(values) {
            if let Some(field) = field {
                field.set(&mut token, value)?;
            }
        }
        Ok(token)
    }
}

fn open_file(path: &Path) -> CliResult<File> {
    File::open(path).map_err(|e| CliError::input(format!("cannot open {}: {e}", path.display())))
}

/// A Zoho FileStore CSV: header line, CRLF or LF, RFC 4180 quoting.
fn read_zoho_csv(path: &Path) -> CliResult<Vec<Row>> {
    let what = path.display().to_string();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(BufReader::new(open_file(path)?));
    let mut records = reader.records();
    let csv_error = |e: csv::Error| CliError::input(format!("{what}: {e}"));
    let header = records.next().ok_or_else(|| {
        CliError::input(format!(
            "{what} is empty: a Zoho FileStore CSV starts with its header line"
        ))
    })?;
    let columns = Columns::new(header.map_err(csv_error)?.iter(), true, &what)?;
    let mut rows = Vec::new();
    for (i, record) in records.enumerate() {
        let record = record.map_err(csv_error)?;
        let number = i + 1;
        let token = columns
            .token(record.iter().map(|v| Some(v.to_owned())))
            .map_err(|e| CliError::input(format!("{what}: row {number}: {e}")))?;
        rows.push(Row::new(number, token));
    }
    Ok(rows)
}

/// The sample's SQLite database: a table (default `oauthtoken`) with Zoho's
/// columns, values as text or numbers. Opened read-only.
fn read_sqlite(path: &Path, table: &str) -> CliResult<Vec<Row>> {
    use rusqlite::{types::ValueRef, Connection, OpenFlags};

    let what = path.display().to_string();
    if !path.is_file() {
        return Err(CliError::input(format!("cannot open {what}: no such file")));
    }
    let db_error = |e: rusqlite::Error| CliError::input(format!("{what}: {e}"));
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(db_error)?;
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
                CliError::input(format!("{what} is not a SQLite database"))
            }
            e => db_error(e),
        })?;
    if !tables.iter().any(|t| t == table) {
        return Err(CliError::input(format!(
            "{what} has no table {table:?} (it has: {}); pass --table NAME",
            if tables.is_empty() {
                "no tables".to_owned()
            } else {
                tables.join(", ")
            }
        )));
    }
    // The name was checked against the schema, and is quoted as an identifier.
    let sql = format!("SELECT * FROM \"{}\"", table.replace('"', "\"\""));
    let mut statement = conn.prepare(&sql).map_err(db_error)?;
    let names: Vec<String> = statement.column_names().map(str::to_owned).collect();
    let columns = Columns::new(
        names.iter().map(String::as_str),
        false,
        &format!("table {table:?} of {what}"),
    )?;
    let mut result = statement.query([]).map_err(db_error)?;
    let mut rows = Vec::new();
    while let Some(record) = result.next().map_err(db_error)? {
        let number = rows.len() + 1;
        let mut values = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let value = match record.get_ref(i).map_err(db_error)? {
                ValueRef::Null => None,
                ValueRef::Integer(n) => Some(n.to_string()),
                ValueRef::Real(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => {
                    Some((x as i64).to_string())
                }
                ValueRef::Real(_) => {
                    return Err(CliError::input(format!(
                        "{what}: row {number}: column {name:?} holds a fraction"
                    )))
                }
                ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
                    Some(String::from_utf8(bytes.to_vec()).map_err(|_| {
                        CliError::input(format!(
                            "{what}: row {number}: column {name:?} is not valid UTF-8"
                        ))
                    })?)
                }
            };
            values.push(value);
        }
        let token = columns
            .token(values)
            .map_err(|e| CliError::input(format!("{what}: row {number}: {e}")))?;
        rows.push(Row::new(number, token));
    }
    Ok(rows)
}

/// What `tokenstore export` writes (or a bare array of tokens).
fn read_json(path: &Path) -> CliResult<Vec<Row>> {
    let what = path.display().to_string();
    // serde_json's syntax errors give a position, never the text.
    let document: Value = serde_json::from_reader(BufReader::new(open_file(path)?))
        .map_err(|e| CliError::input(format!("{what} is not valid JSON: {e}")))?;
    let tokens = match &document {
        Value::Array(tokens) => tokens,
        Value::Object(object) => {
            if let Some(version) = object.get("version").and_then(Value::as_u64) {
                if version != crate::export::EXPORT_VERSION {
                    return Err(CliError::input(format!(
                        "{what} is export version {version}; this build reads version {}",
                        crate::export::EXPORT_VERSION
                    )));
                }
            }
            object
                .get("tokens")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    CliError::input(format!(
                        "{what} has no \"tokens\" array: it was not written by `tokenstore export`"
                    ))
                })?
        }
        _ => {
            return Err(CliError::input(format!(
                "{what} holds neither a tokenstore export nor an array of tokens"
            )))
        }
    };
    let mut rows = Vec::with_capacity(tokens.len());
    for (i, value) in tokens.iter().enumerate() {
        let number = i + 1;
        let bad = |e: String| CliError::input(format!("{what}: token {number}: {e}"));
        let object = value
            .as_object()
            .ok_or_else(|| bad("is not an object".into()))?;
        let mut token = OAuthToken::new();
        for (key, value) in object {
            // Other keys (such as `list --json`'s has_* flags) are ignored.
            let Some(field) = Field::from_column(key) else {
                continue;
            };
            let text = match value {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                Value::Number(n) if n.is_i64() => n.as_i64().map(|n| n.to_string()),
                _ => {
                    return Err(bad(format!(
                        "{} must be a string{}",
                        field.name(),
                        if field == Field::ExpiryTime {
                            " or a whole number"
                        } else {
                            ""
                        }
                    )))
                }
            };
            field.set(&mut token, text).map_err(bad)?;
        }
        rows.push(Row::new(number, token));
    }
    Ok(rows)
}

/// The Zoho SDK DBStore table on MySQL or MariaDB.
#[cfg(feature = "mysql")]
fn read_mysql(url: &str, table: &str) -> CliResult<Vec<Row>> {
    use mysql::prelude::Queryable;
    use mysql::Value as My;

    // Neither the URL nor the driver's echo of it is printed: it may hold a
    // password.
    let opts = mysql::Opts::from_url(url).map_err(|_| {
        CliError::input("--url is not a valid mysql://user:password@host:port/database URL")
    })?;
    let mut conn = mysql::Conn::new(opts)
        .map_err(|e| CliError::input(format!("cannot connect to the MySQL server: {e}")))?;
    let db_error = |e: mysql::Error| CliError::input(format!("MySQL: {e}"));
    let found: Option<String> = conn
        .exec_first(
            "SELECT table_name FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = ?",
            (table,),
        )
        .map_err(db_error)?;
    if found.is_none() {
        return Err(CliError::input(format!(
            "the MySQL database has no table {table:?}; pass --table NAME"
        )));
    }
    let sql = format!("SELECT * FROM `{}`", table.replace('`', "``"));
    let result: Vec<mysql::Row> = conn.query(sql).map_err(db_error)?;
    let mut rows = Vec::with_capacity(result.len());
    let mut columns: Option<Columns> = None;
    for (i, record) in result.into_iter().enumerate() {
        let number = i + 1;
        let names: Vec<String> = record
            .columns_ref()
            .iter()
            .map(|c| c.name_str().into_owned())
            .collect();
        if columns.is_none() {
            columns = Some(Columns::new(
                names.iter().map(String::as_str),
                false,
                &format!("MySQL table {table:?}"),
            )?);
        }
        let mut values = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let bad = |what: &str| {
                CliError::input(format!("MySQL: row {number}: column {name:?} {what}"))
            };
            values.push(match record.as_ref(i) {
                None | Some(My::NULL) => None,
                Some(My::Bytes(bytes)) => {
                    Some(String::from_utf8(bytes.clone()).map_err(|_| bad("is not valid UTF-8"))?)
                }
                Some(My::Int(n)) => Some(n.to_string()),
                Some(My::UInt(n)) => Some(n.to_string()),
                Some(_) => {
                    return Err(bad("holds a value that is neither text nor a whole number"))
                }
            });
        }
        let token = columns
            .as_ref()
            .expect("set above")
            .token(values)
            .map_err(|e| CliError::input(format!("MySQL: row {number}: {e}")))?;
        rows.push(Row::new(number, token));
    }
    Ok(rows)
}

#[cfg(not(feature = "mysql"))]
fn read_mysql(_url: &str, _table: &str) -> CliResult<Vec<Row>> {
    Err(CliError::input(
        "this tokenstore was built without MySQL support; rebuild with \
         `cargo install tokenstore --features mysql`",
    ))
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
                Err(e) => return Err(CliError::input(format!("{}: {e}", row.label()))),
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
