//! The sources `tokenstore import` reads, each into [`Row`]s: a Zoho
//! FileStore CSV, the published SQLite sample's table, the DBStore's MySQL
//! table and a `tokenstore export` JSON file; and how their column names map
//! to the record's fields.
//!
//! Messages name rows, columns and fields, never a value: a value may be a
//! secret.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use serde_json::Value;
use tokenstore::{Field, OAuthToken};

use crate::{CliError, CliResult};

/// The version of the export JSON document.
pub const EXPORT_VERSION: u64 = 1;

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

/// The field of the record a column name means: the record's own field
/// names, and the other names of Zoho's stores, old and new.
pub fn column_field(name: &str) -> Option<Field> {
    let name = name.trim().to_ascii_lowercase();
    Field::named(match name.as_str() {
        "user_mail" | "useremail" | "user_email" => "user_name",
        "redirect_uri" => "redirect_url",
        other => other,
    })
}

/// The fields of which a row needs one: the three tokens.
const TOKEN_FIELDS: [&str; 3] = ["refresh_token", "access_token", "grant_token"];

/// Sets `field` of `token` from a source value; empty means absent.
fn set(field: Field, token: &mut OAuthToken, value: Option<&str>) -> Result<(), String> {
    // Only a number can be refused: the expiry time.
    field
        .set_text(token, value)
        .map_err(|_| format!("{field} is not a whole number of milliseconds"))
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
pub struct Row {
    /// 1-based among the source's data rows (a CSV's header is not a row).
    pub number: usize,
    pub token: OAuthToken,
    /// A record of another store (`copy`), named by its id, not a row.
    pub from_store: bool,
}

impl Row {
    fn new(number: usize, token: OAuthToken) -> Row {
        Row {
            number,
            token,
            from_store: false,
        }
    }

    pub fn label(&self) -> String {
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
            let field = column_field(name);
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
        if !fields
            .iter()
            .flatten()
            .any(|f| TOKEN_FIELDS.contains(&f.name()))
        {
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
                set(*field, &mut token, value.as_deref())?;
            }
        }
        Ok(token)
    }
}

fn open_file(path: &Path) -> CliResult<File> {
    File::open(path).map_err(|e| CliError::input(format!("cannot open {}: {e}", path.display())))
}

/// A Zoho FileStore CSV: header line, CRLF or LF, RFC 4180 quoting.
pub fn read_zoho_csv(path: &Path) -> CliResult<Vec<Row>> {
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
pub fn read_sqlite(path: &Path, table: &str) -> CliResult<Vec<Row>> {
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
pub fn read_json(path: &Path) -> CliResult<Vec<Row>> {
    let what = path.display().to_string();
    // serde_json's syntax errors give a position, never the text.
    let document: Value = serde_json::from_reader(BufReader::new(open_file(path)?))
        .map_err(|e| CliError::input(format!("{what} is not valid JSON: {e}")))?;
    let tokens = match &document {
        Value::Array(tokens) => tokens,
        Value::Object(object) => {
            if let Some(version) = object.get("version").and_then(Value::as_u64) {
                if version != EXPORT_VERSION {
                    return Err(CliError::input(format!(
                        "{what} is export version {version}; this build reads version {}",
                        EXPORT_VERSION
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
            let Some(field) = column_field(key) else {
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
                        if field.name() == "expiry_time" {
                            " or a whole number"
                        } else {
                            ""
                        }
                    )))
                }
            };
            set(field, &mut token, text.as_deref()).map_err(bad)?;
        }
        rows.push(Row::new(number, token));
    }
    Ok(rows)
}

/// The Zoho SDK DBStore table on MySQL or MariaDB.
#[cfg(feature = "mysql")]
pub fn read_mysql(url: &str, table: &str) -> CliResult<Vec<Row>> {
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
pub fn read_mysql(_url: &str, _table: &str) -> CliResult<Vec<Row>> {
    Err(CliError::input(
        "this tokenstore was built without MySQL support; rebuild with \
         `cargo install tokenstore --features mysql`",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filestore_columns_are_the_record_fields_in_order() {
        let fields: Vec<Field> = ZOHO_CSV_HEADER
            .iter()
            .map(|column| column_field(column).expect(column))
            .collect();
        assert_eq!(fields, Field::ALL);
    }

    #[test]
    fn columns_are_named_as_in_any_of_zohos_stores() {
        for (column, field) in [
            ("user_mail", "user_name"),
            (" UserEmail ", "user_name"),
            ("user_email", "user_name"),
            ("redirect_uri", "redirect_url"),
            ("REDIRECT_URL", "redirect_url"),
            ("Expiry_Time", "expiry_time"),
        ] {
            assert_eq!(
                column_field(column).map(Field::name),
                Some(field),
                "{column}"
            );
        }
        assert_eq!(column_field("scopes"), None);
        for field in TOKEN_FIELDS {
            assert!(Field::named(field).is_some_and(Field::is_secret), "{field}");
        }
    }
}
