//! Connection strings as libpq reads them: the TLS parameters rust-postgres
//! does not know (`sslmode=verify-full`, `sslrootcert`, ...) are taken out
//! here, the rest goes to `postgres::Config`, and the `PG*` variables fill
//! in what the string leaves out.
//!
//! Both forms libpq takes are read: a URL (`postgres://user@host/db?k=v`)
//! and a key=value string (`host=db user=app sslmode=verify-full`).
//!
//! Variables read when the string leaves the parameter out (the string
//! always wins): `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`,
//! `PGCONNECT_TIMEOUT`, `PGAPPNAME`, `PGSSLMODE`, `PGSSLROOTCERT`,
//! `PGSSLCERT`, `PGSSLKEY`, `PGCHANNELBINDING`. No others (no
//! `~/.pgpass`, no `PGSERVICE`).

use std::path::PathBuf;
use std::str::FromStr;

use postgres::config::ChannelBinding;

use crate::error::{Error, Result};

/// `sslmode`, with libpq's six values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(invalid(format!(
                    "sslmode={other:?} is not one of disable, allow, prefer, require, verify-ca, \
                     verify-full"
                )))
            }
        })
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The CAs the server's certificate is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RootCerts {
    /// A PEM file of one or more CA certificates.
    File(PathBuf),
    /// `sslrootcert=system`: the Mozilla roots compiled in (webpki-roots).
    System,
}

/// What the connection string asks of TLS, resolved against the
/// environment and libpq's default files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TlsRequest {
    pub(super) mode: SslMode,
    /// `None`: the server's certificate is not checked (disable, allow,
    /// prefer and require without a root file).
    pub(super) roots: Option<RootCerts>,
    /// The client certificate chain and its key (`sslcert`, `sslkey`).
    pub(super) client: Option<(PathBuf, PathBuf)>,
    /// `sslsni=0` turns the server name indication off.
    pub(super) sni: bool,
}

/// A connection string taken apart.
pub(super) struct Conninfo {
    pub(super) config: postgres::Config,
    pub(super) tls: TlsRequest,
}

/// The parameters read here and not handed to `postgres::Config`.
const OURS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslsni",
    "channel_binding",
];

/// libpq's TLS parameters this crate does not implement: refused by name
/// rather than ignored, since each of them tightens security.
const UNSUPPORTED: &[&str] = &[
    "sslcrl",
    "sslcrldir",
    "sslpassword",
    "sslcertmode",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "requirepeer",
];

/// Reads `conn` (a URL or key=value string) with `env` for the `PG*`
/// variables and `home` for libpq's default files under `~/.postgresql/`.
pub(super) fn parse(
    conn: &str,
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<PathBuf>,
) -> Result<Conninfo> {
    let (rest, ours) = split(conn)?;
    let mut config = postgres::Config::from_str(&rest).map_err(|e| {
        // The causes name an option or a byte offset, never a value.
        invalid(format!(
            "{} (expected postgres://user:password@host:port/dbname?sslmode=verify-full&sslrootcert=ca.pem, \
             or key=value pairs)",
            super::errors::with_causes(&e)
        ))
    })?;
    let given = |key: &str| {
        ours.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .or_else(|| env_name(key).and_then(env))
            .filter(|v| !v.is_empty())
    };
    apply_env_defaults(&mut config, env)?;
    if let Some(binding) = given("channel_binding") {
        config.channel_binding(match binding.as_str() {
            "disable" => ChannelBinding::Disable,
            "prefer" => ChannelBinding::Prefer,
            "require" => ChannelBinding::Require,
            other => {
                return Err(invalid(format!(
                    "channel_binding={other:?} is not one of disable, prefer, require"
                )))
            }
        });
    }
    let tls = resolve_tls(&given, home)?;
    Ok(Conninfo { config, tls })
}

/// The `PG*` variable standing in for one of our parameters.
fn env_name(key: &str) -> Option<&'static str> {
    Some(match key {
        "sslmode" => "PGSSLMODE",
        "sslrootcert" => "PGSSLROOTCERT",
        "sslcert" => "PGSSLCERT",
        "sslkey" => "PGSSLKEY",
        "channel_binding" => "PGCHANNELBINDING",
        _ => return None,
    })
}

/// libpq's rules for the mode, the root file and the client certificate.
fn resolve_tls(
    given: &dyn Fn(&str) -> Option<String>,
    home: Option<PathBuf>,
) -> Result<TlsRequest> {
    let explicit_mode = given("sslmode").map(|m| SslMode::parse(&m)).transpose()?;
    let default_file = |name: &str| {
        home.as_ref()
            .map(|home| home.join(".postgresql").join(name))
            .filter(|path| path.exists())
    };
    let roots = match given("sslrootcert") {
        Some(value) if value == "system" => Some(RootCerts::System),
        Some(path) => {
            // Stricter than libpq, which skips a named file that is
            // missing and then checks nothing under prefer or require.
            let path = PathBuf::from(path);
            if !path.exists() {
                return Err(invalid(format!(
                    "sslrootcert {} does not exist",
                    path.display()
                )));
            }
            Some(RootCerts::File(path))
        }
        None => default_file("root.crt").map(RootCerts::File),
    };
    let mode = match (explicit_mode, &roots) {
        (None, Some(RootCerts::System)) => SslMode::VerifyFull,
        (Some(mode), Some(RootCerts::System)) if mode != SslMode::VerifyFull => {
            return Err(invalid(format!(
                "sslmode={} may not be used with sslrootcert=system (use sslmode=verify-full, \
                 as libpq requires)",
                mode.name()
            )))
        }
        (mode, _) => mode.unwrap_or(SslMode::Prefer),
    };
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && roots.is_none() {
        return Err(invalid(format!(
            "sslmode={} needs the CA that signed the server's certificate: give \
             sslrootcert=/path/to/ca.pem (or PGSSLROOTCERT), or sslrootcert=system for the \
             public CAs (there is no ~/.postgresql/root.crt)",
            mode.name()
        )));
    }
    let client = match given("sslcert") {
        Some(cert) => Some(PathBuf::from(cert)),
        None => default_file("postgresql.crt"),
    };
    let client = match client {
        None => None,
        Some(cert) => {
            let key = given("sslkey")
                .map(PathBuf::from)
                .or_else(|| home.map(|home| home.join(".postgresql").join("postgresql.key")))
                .ok_or_else(|| invalid("sslcert is given without sslkey".into()))?;
            for (what, path) in [("sslcert", &cert), ("sslkey", &key)] {
                if !path.exists() {
                    return Err(invalid(format!("{what} {} does not exist", path.display())));
                }
            }
            Some((cert, key))
        }
    };
    let sni = match given("sslsni").as_deref() {
        None | Some("1") => true,
        Some("0") => false,
        Some(other) => return Err(invalid(format!("sslsni={other:?} is not 0 or 1"))),
    };
    Ok(TlsRequest {
        mode,
        roots,
        client,
        sni,
    })
}

/// The `PG*` variables for what the string left out.
fn apply_env_defaults(
    config: &mut postgres::Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<()> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        if let Some(hosts) = var("PGHOST") {
            for host in hosts.split(',') {
                #[cfg(unix)]
                if host.starts_with('/') {
                    config.host_path(host);
                    continue;
                }
                config.host(host);
            }
        }
    }
    if config.get_ports().is_empty() {
        if let Some(ports) = var("PGPORT") {
            for port in ports.split(',') {
                config.port(
                    port.trim()
                        .parse()
                        .map_err(|_| invalid(format!("PGPORT={port:?} is not a port number")))?,
                );
            }
        }
    }
    if config.get_user().is_none() {
        if let Some(user) = var("PGUSER") {
            config.user(&user);
        }
    }
    if config.get_password().is_none() {
        if let Some(password) = var("PGPASSWORD") {
            config.password(password);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(dbname) = var("PGDATABASE") {
            config.dbname(&dbname);
        }
    }
    if config.get_connect_timeout().is_none() {
        if let Some(seconds) = var("PGCONNECT_TIMEOUT") {
            let seconds: u64 = seconds.trim().parse().map_err(|_| {
                invalid(format!(
                    "PGCONNECT_TIMEOUT={seconds:?} is not a number of seconds"
                ))
            })?;
            if seconds > 0 {
                config.connect_timeout(std::time::Duration::from_secs(seconds));
            }
        }
    }
    if config.get_application_name().is_none() {
        if let Some(name) = var("PGAPPNAME") {
            config.application_name(&name);
        }
    }
    Ok(())
}

/// `conn` without our parameters, and our parameters (decoded, in order).
fn split(conn: &str) -> Result<(String, Vec<(String, String)>)> {
    let mut ours = Vec::new();
    let mut take = |key: &str, value: String| -> Result<bool> {
        if UNSUPPORTED.contains(&key) {
            return Err(invalid(format!(
                "{key} is not supported by tokenstore (its TLS parameters are sslmode, \
                 sslrootcert, sslcert, sslkey, sslsni and channel_binding)"
            )));
        }
        if OURS.contains(&key) {
            ours.push((key.to_owned(), value));
            return Ok(true);
        }
        Ok(false)
    };
    let lower = conn.to_ascii_lowercase();
    if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
        let mut kept = Vec::new();
        for (key, value) in key_values(conn)? {
            if !take(&key, value.clone())? {
                kept.push(format!(
                    "{key}='{}'",
                    value.replace('\\', "\\\\").replace('\'', "\\'")
                ));
            }
        }
        return Ok((kept.join(" "), ours));
    }
    // As rust-postgres reads a URL: the credentials end at the first '@',
    // the parameters start at the first '?' after them.
    let after_credentials = conn.find('@').map_or(0, |at| at + 1);
    let Some(query_at) = conn[after_credentials..]
        .find('?')
        .map(|q| q + after_credentials)
    else {
        return Ok((conn.to_owned(), ours));
    };
    let mut kept = Vec::new();
    for pair in conn[query_at + 1..].split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !take(&decode(key)?, decode(value)?)? {
            kept.push(pair);
        }
    }
    let mut rest = conn[..query_at].to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok((rest, ours))
}

fn decode(s: &str) -> Result<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| invalid("a URL parameter is not UTF-8 once percent-decoded".into()))
}

/// The pairs of a key=value string, with libpq's quoting: `'…'` around a
/// value with spaces, `\` before a quote or a backslash.
fn key_values(conn: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut chars = conn.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(invalid(format!(
                "expected key=value pairs, but {key:?} has no '=' (or a URL: postgres://…)"
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let quoted = chars.next_if_eq(&'\'').is_some();
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\'') if quoted => break,
                Some(c) if !quoted && c.is_whitespace() => break,
                Some('\\') => value.extend(chars.next()),
                Some(c) => value.push(c),
                None if quoted => {
                    return Err(invalid(format!("the value of {key} has no closing quote")))
                }
                None => break,
            }
        }
        pairs.push((key, value));
    }
}

fn invalid(reason: String) -> Error {
    Error::InvalidUrl { reason }
}

#[cfg(test)]
#[path = "conninfo_tests.rs"]
mod tests;
