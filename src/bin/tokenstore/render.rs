//! How records are shown: tables, details, JSON, expiry in words. Secrets
//! appear only when the caller passes `show_secrets`.

use std::cmp::Ordering;

use comfy_table::{presets, Table};
use serde_json::{json, Value};
use tokenstore::{Field, LookupKey, OAuthToken};

/// What stands in for a secret that is present but not shown.
pub const REDACTED: &str = "[redacted]";

/// Orders ids numerically when both are numbers, numbers first, then by text.
pub fn id_order(a: Option<&str>, b: Option<&str>) -> Ordering {
    let key = |id: Option<&str>| {
        let id = id.unwrap_or_default();
        (id.parse::<u64>().map_or((1, 0), |n| (0, n)), id.to_owned())
    };
    key(a).cmp(&key(b))
}

/// "in 41 min", "expired 3 h ago", "no expiry".
pub fn expiry_words(expiry_time: Option<i64>, now_ms: i64) -> String {
    let Some(expiry) = expiry_time else {
        return "no expiry".into();
    };
    let delta = expiry.saturating_sub(now_ms);
    let span = duration_words(delta.unsigned_abs() / 1000);
    if delta > 0 {
        format!("in {span}")
    } else {
        format!("expired {span} ago")
    }
}

fn duration_words(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3_600 => format!("{} min", seconds / 60),
        3_600..172_800 => format!("{} h", seconds / 3_600),
        _ => format!("{} days", seconds / 86_400),
    }
}

/// A secret's value if it is to be shown, `[redacted]` if present and not,
/// `-` if absent.
fn secret(value: Option<&str>, show: bool) -> String {
    match value {
        Some(v) if show => v.to_owned(),
        Some(_) => REDACTED.to_owned(),
        None => "-".to_owned(),
    }
}

fn plain(value: Option<&str>) -> String {
    value.unwrap_or("-").to_owned()
}

/// Which of access, refresh, grant a record holds: "access refresh -".
fn token_kinds(token: &OAuthToken) -> String {
    [
        (token.access_token.is_some(), "access"),
        (token.refresh_token.is_some(), "refresh"),
        (token.grant_token.is_some(), "grant"),
    ]
    .iter()
    .map(|(has, name)| if *has { *name } else { "-" })
    .collect::<Vec<_>>()
    .join(" ")
}

/// The table of `list`.
pub fn token_table(tokens: &[OAuthToken], show_secrets: bool, now_ms: i64) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    let mut header = vec!["ID", "USER", "CLIENT ID", "TOKENS", "EXPIRES"];
    if show_secrets {
        header.extend([
            "CLIENT SECRET",
            "ACCESS TOKEN",
            "REFRESH TOKEN",
            "GRANT TOKEN",
        ]);
    }
    table.set_header(header);
    for t in tokens {
        let mut row = vec![
            plain(t.id.as_deref()),
            plain(t.user_name.as_deref()),
            plain(t.client_id.as_deref()),
            token_kinds(t),
            expiry_words(t.expiry_time, now_ms),
        ];
        if show_secrets {
            row.extend([
                secret(t.client_secret.as_deref(), true),
                secret(t.access_token.as_deref(), true),
                secret(t.refresh_token.as_deref(), true),
                secret(t.grant_token.as_deref(), true),
            ]);
        }
        table.add_row(row);
    }
    let mut text = table
        .lines()
        .map(|l| l.trim().to_owned())
        .collect::<Vec<_>>()
        .join("\n");
    text.push_str(&format!("\n({} record(s))", tokens.len()));
    text
}

/// Aligned `key  value` lines.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

/// The details of `show` and `find`: every field of the record, in order.
pub fn token_details(t: &OAuthToken, show_secrets: bool, now_ms: i64) -> String {
    let pairs: Vec<(&str, String)> = Field::ALL
        .iter()
        .map(|field| {
            let value = if field.name() == "expiry_time" {
                match t.expiry_time {
                    Some(e) => format!("{e} ({})", expiry_words(Some(e), now_ms)),
                    None => "-".into(),
                }
            } else if field.is_secret() {
                secret(field.text(t).as_deref(), show_secrets)
            } else {
                plain(field.text(t).as_deref())
            };
            (field.name(), value)
        })
        .collect();
    key_values(&pairs)
}

/// A record as JSON: every field, the secrets' values only with
/// `show_secrets` (their presence always, as `has_<field>`), and the expiry
/// in words.
pub fn token_json(t: &OAuthToken, show_secrets: bool, now_ms: i64) -> Value {
    let mut object = serde_json::Map::new();
    for field in Field::ALL {
        let name = field.name();
        if name == "expiry_time" {
            object.insert(name.into(), json!(t.expiry_time));
            object.insert("expires".into(), json!(expiry_words(t.expiry_time, now_ms)));
        } else if field.is_secret() {
            let value = field.text(t);
            object.insert(format!("has_{name}"), json!(value.is_some()));
            if show_secrets {
                object.insert(name.into(), json!(value));
            }
        } else {
            object.insert(name.into(), json!(field.text(t)));
        }
    }
    Value::Object(object)
}

/// Which lookup rule a query used, in words.
pub fn rule_name(key: &LookupKey<'_>) -> &'static str {
    match key {
        LookupKey::UserName(_) => "user_name (rule 1)",
        LookupKey::AccessToken(_) => "access_token (rule 2)",
        LookupKey::GrantOrRefresh {
            grant: Some(_),
            refresh: Some(_),
        } => "grant_token, then refresh_token (rule 3)",
        LookupKey::GrantOrRefresh { grant: Some(_), .. } => "grant_token (rule 3)",
        LookupKey::GrantOrRefresh { .. } => "refresh_token (rule 3)",
        LookupKey::Id(_) => "id (rule 4)",
    }
}

/// "1.2 MiB (1234567 bytes)".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut value = n as f64;
    let mut unit = "bytes";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    format!("{value:.1} {unit} ({n} bytes)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_in_words() {
        let now = 1_000_000_000;
        assert_eq!(expiry_words(None, now), "no expiry");
        assert_eq!(expiry_words(Some(now + 41 * 60_000 + 5), now), "in 41 min");
        assert_eq!(
            expiry_words(Some(now - 3 * 3_600_000), now),
            "expired 3 h ago"
        );
        assert_eq!(expiry_words(Some(now + 30_000), now), "in 30 s");
        assert_eq!(
            expiry_words(Some(now - 5 * 86_400_000), now),
            "expired 5 days ago"
        );
        assert_eq!(expiry_words(Some(now), now), "expired 0 s ago");
    }

    #[test]
    fn ids_sort_numerically_then_by_text() {
        let mut ids = vec!["10", "b", "2", "1", "a", "11"];
        ids.sort_by(|a, b| id_order(Some(a), Some(b)));
        assert_eq!(ids, ["1", "2", "10", "11", "a", "b"]);
    }

    #[test]
    fn sizes_in_words() {
        assert_eq!(bytes(12), "12 bytes");
        assert_eq!(bytes(1536), "1.5 KiB (1536 bytes)");
        assert_eq!(bytes(3 << 20), "3.0 MiB (3145728 bytes)");
    }
}
