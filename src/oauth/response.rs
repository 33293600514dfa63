//! The accounts server's answer to a token request, read into a [`Grant`] or
//! a matchable [`Error`]. Takes any bytes: whatever the server (or something
//! pretending to be it) sends, the result is a value, never a panic, and no
//! error message quotes the answer (it may hold tokens).

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// What a successful token response grants.
pub(crate) struct Grant {
    pub access_token: String,
    /// Present when the server issued (or rotated) a refresh token.
    pub refresh_token: Option<String>,
    /// The access token's lifetime in milliseconds.
    pub lifetime_ms: i64,
    pub api_domain: Option<String>,
}

/// What the answer is about, for the messages: a login exchanges a grant
/// code, a refresh a refresh token.
#[derive(Clone, Copy)]
pub(crate) enum Exchange {
    GrantCode,
    RefreshToken,
    Revoke,
}

impl Exchange {
    fn credential(self) -> &'static str {
        match self {
            Exchange::GrantCode => "grant code",
            Exchange::RefreshToken | Exchange::Revoke => "refresh token",
        }
    }
}

/// Reads a token endpoint answer (HTTP `status`, `body`) from `accounts`.
pub(crate) fn parse_token(
    status: u16,
    body: &[u8],
    accounts: &str,
    exchange: Exchange,
) -> Result<Grant> {
    let object = parse_object(status, body, accounts, exchange)?;
    let malformed = |reason: &str| Error::MalformedResponse {
        accounts: accounts.to_owned(),
        reason: reason.to_owned(),
    };
    let access_token =
        non_empty_string(&object, "access_token").ok_or_else(|| malformed("no access_token"))?;
    // Zoho's legacy answer gives `expires_in` in milliseconds beside
    // `expires_in_sec`; the current one gives `expires_in` in seconds only.
    // The Zoho SDKs read it the same way: with `expires_in_sec` present,
    // `expires_in` is not seconds.
    let seconds = match integer(&object, "expires_in_sec") {
        Some(seconds) => Some(seconds),
        None => integer(&object, "expires_in"),
    }
    .ok_or_else(|| malformed("no expires_in"))?;
    let lifetime_ms = seconds
        .checked_mul(1000)
        .filter(|ms| *ms > 0)
        .ok_or_else(|| malformed("expires_in is not a positive number of seconds"))?;
    Ok(Grant {
        access_token,
        refresh_token: non_empty_string(&object, "refresh_token"),
        lifetime_ms,
        api_domain: non_empty_string(&object, "api_domain"),
    })
}

/// Reads a revoke answer: a 2xx JSON object without an error. Anything
/// else is an error, and the caller keeps the record: better a record
/// revoked twice than one deleted while its refresh token still works.
pub(crate) fn parse_revoke(status: u16, body: &[u8], accounts: &str) -> Result<()> {
    parse_object(status, body, accounts, Exchange::Revoke).map(drop)
}

/// The answer as a JSON object, or the error it reports.
fn parse_object(
    status: u16,
    body: &[u8],
    accounts: &str,
    exchange: Exchange,
) -> Result<Map<String, Value>> {
    let rate_limited = |detail: String| Error::RateLimited {
        accounts: accounts.to_owned(),
        detail,
    };
    let parsed: Option<Map<String, Value>> = serde_json::from_slice(body).ok();
    let Some(object) = parsed else {
        if status == 429 || contains_ignore_case(body, b"too many requests") {
            return Err(rate_limited(format!("HTTP {status}")));
        }
        return Err(Error::MalformedResponse {
            accounts: accounts.to_owned(),
            reason: format!("HTTP {status}, not a JSON object"),
        });
    };
    if let Some(code) = object.get("error") {
        let code = match code {
            Value::String(code) => shown_code(code),
            _ => "unrecognized error".to_owned(),
        };
        let lower = code.to_ascii_lowercase();
        return Err(match lower.as_str() {
            "invalid_code" | "invalid_grant" | "invalid_token" => Error::GrantRefused {
                credential: exchange.credential(),
                code,
            },
            "invalid_client" | "invalid_client_secret" => Error::InvalidClient {
                accounts: accounts.to_owned(),
            },
            _ if lower.contains("access denied") || lower.contains("too many") || status == 429 => {
                rate_limited(code)
            }
            _ => Error::MalformedResponse {
                accounts: accounts.to_owned(),
                reason: format!("HTTP {status}, error {code:?}"),
            },
        });
    }
    if status == 429 {
        return Err(rate_limited("HTTP 429".to_owned()));
    }
    if !(200..300).contains(&status) {
        return Err(Error::MalformedResponse {
            accounts: accounts.to_owned(),
            reason: format!("HTTP {status} without an error code"),
        });
    }
    Ok(object)
}

/// An error code fit to show: short, plain characters only. Anything else
/// (it could be an echo of a token) is replaced.
fn shown_code(code: &str) -> String {
    let plain = code.len() <= 64
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '-' | '.'));
    if plain && !code.is_empty() {
        code.to_owned()
    } else {
        "unrecognized error".to_owned()
    }
}

fn non_empty_string(object: &Map<String, Value>, name: &str) -> Option<String> {
    match object.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// A whole number given as a JSON number or a numeric string.
fn integer(object: &Map<String, Value>, name: &str) -> Option<i64> {
    match object.get(name)? {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ACCOUNTS: &str = "http://127.0.0.1:1";

    fn token(body: &str) -> Result<Grant> {
        parse_token(200, body.as_bytes(), ACCOUNTS, Exchange::RefreshToken)
    }

    #[test]
    fn current_answer_gives_seconds() {
        let grant = token(
            r#"{"access_token":"1000.a","expires_in":3600,"api_domain":"https://www.zohoapis.eu","token_type":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!(grant.access_token, "1000.a");
        assert_eq!(grant.lifetime_ms, 3_600_000);
        assert_eq!(grant.api_domain.as_deref(), Some("https://www.zohoapis.eu"));
        assert!(grant.refresh_token.is_none());
    }

    #[test]
    fn legacy_answer_gives_milliseconds_beside_seconds() {
        let grant =
            token(r#"{"access_token":"1000.a","expires_in_sec":3600,"expires_in":3600000}"#)
                .unwrap();
        assert_eq!(grant.lifetime_ms, 3_600_000);
    }

    #[test]
    fn error_codes_map_to_their_variants() {
        assert!(matches!(
            token(r#"{"error":"invalid_code"}"#),
            Err(Error::GrantRefused { .. })
        ));
        assert!(matches!(
            token(r#"{"error":"invalid_client"}"#),
            Err(Error::InvalidClient { .. })
        ));
        assert!(matches!(
            parse_token(400, br#"{"error_description":"You have made too many requests continuously. Please try again after some time.","error":"Access Denied","status":"failure"}"#, ACCOUNTS, Exchange::RefreshToken),
            Err(Error::RateLimited { .. })
        ));
        assert!(matches!(
            parse_token(429, b"Too Many Requests", ACCOUNTS, Exchange::RefreshToken),
            Err(Error::RateLimited { .. })
        ));
        assert!(matches!(
            token("<html>"),
            Err(Error::MalformedResponse { .. })
        ));
        assert!(matches!(
            token(r#"{"expires_in":3600}"#),
            Err(Error::MalformedResponse { .. })
        ));
        assert!(matches!(
            token(r#"{"access_token":"a"}"#),
            Err(Error::MalformedResponse { .. })
        ));
        assert!(matches!(
            token(r#"{"access_token":"a","expires_in":-5}"#),
            Err(Error::MalformedResponse { .. })
        ));
    }

    #[test]
    fn an_error_code_that_echoes_a_secret_is_not_shown() {
        let Err(err) = token(r#"{"error":"1000.secret/with=odd?chars&more"}"#) else {
            panic!("an error answer gives an error");
        };
        assert!(!err.to_string().contains("1000.secret"), "{err}");
    }

    #[test]
    fn no_error_quotes_the_answer() {
        let secret = "1000.abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
        for (status, body) in [
            (200, format!("<html>{secret}</html>")),
            (500, format!("oops {secret}")),
            (200, format!(r#"{{"error":"{secret}"}}"#)),
            (400, format!(r#"{{"error":{{"token":"{secret}"}}}}"#)),
            (200, format!(r#"{{"access_token":"{secret}"}}"#)),
        ] {
            let Err(err) = parse_token(status, body.as_bytes(), ACCOUNTS, Exchange::RefreshToken)
            else {
                panic!("{body} is refused");
            };
            assert!(!format!("{err} {err:?}").contains(secret), "{err}");
        }
    }

    proptest! {
        #[test]
        fn any_bytes_give_a_value_never_a_panic(status in 0u16..600, body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_token(status, &body, ACCOUNTS, Exchange::GrantCode);
            let _ = parse_revoke(status, &body, ACCOUNTS);
        }

        #[test]
        fn any_json_object_gives_a_value_never_a_panic(
            access in proptest::option::of(".{0,8}"),
            expires in proptest::option::of(any::<i64>()),
            expires_sec in proptest::option::of(any::<f64>()),
            error in proptest::option::of(".{0,80}"),
        ) {
            let mut object = Map::new();
            if let Some(a) = access { object.insert("access_token".into(), Value::from(a)); }
            if let Some(e) = expires { object.insert("expires_in".into(), Value::from(e)); }
            if let Some(e) = expires_sec { object.insert("expires_in_sec".into(), Value::from(e)); }
            if let Some(e) = &error { object.insert("error".into(), Value::from(e.as_str())); }
            let body = serde_json::to_vec(&object).unwrap();
            if let Err(e) = parse_token(200, &body, ACCOUNTS, Exchange::RefreshToken) {
                // An odd error text is never echoed.
                if let Some(error) = error.filter(|e| e.len() > 64) {
                    prop_assert!(!e.to_string().contains(&error));
                }
            }
        }
    }
}
