//! [`MysqlOptions`], and the URL read into the client's options: MySQL's
//! own parameter names (`ssl-mode`, `ssl-ca`), the password never repeated.

use std::path::PathBuf;

use mysql::{OptsBuilder, PoolConstraints, PoolOpts, SslOpts};

use super::*;

/// How [`MysqlStore::connect_with`] connects.
///
/// Every wait is bounded by default: 5 s to connect, 10 s to get a
/// connection from the pool, 30 s for a lock held by another process
/// (`innodb_lock_wait_timeout`, and the wait for a refresh lock); a
/// connection that stops answering is given up after that plus 10 s.
///
/// ```
/// use std::time::Duration;
/// use tokenstore::MysqlOptions;
///
/// let options = MysqlOptions::default()
///     .pool_size(4)
///     .connect_timeout(Duration::from_secs(2))
///     .lock_timeout(Duration::from_secs(10));
/// assert_eq!(options.pool_size_value(), 4);
/// ```
#[derive(Debug, Clone)]
pub struct MysqlOptions {
    pub(super) pool_size: u32,
    pub(super) connect_timeout: Duration,
    pub(super) pool_wait: Duration,
    pub(super) lock_timeout: Duration,
    pub(super) encryption: Option<Key>,
    pub(super) create: bool,
}

impl Default for MysqlOptions {
    fn default() -> Self {
        MysqlOptions {
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            pool_wait: Duration::from_secs(10),
            lock_timeout: Duration::from_secs(30),
            encryption: None,
            create: true,
        }
    }
}

impl MysqlOptions {
    /// The most connections the store opens for its operations (at least
    /// 1; default 8; none is opened before it is needed).
    /// [`TokenStore::refresh_lock`] holds connections of a second pool of
    /// the same size, so that a refresh holding a lock can always still
    /// save.
    #[must_use]
    pub fn pool_size(mut self, connections: u32) -> Self {
        self.pool_size = connections.max(1);
        self
    }

    /// How long connecting to the server may take (default 5 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an operation waits for a pooled connection, connecting
    /// included, before it fails with [`Error::Unavailable`] (default 10 s).
    #[must_use]
    pub fn pool_wait(mut self, timeout: Duration) -> Self {
        self.pool_wait = timeout;
        self
    }

    /// How long a write waits for the write lock and a refresh for its
    /// refresh lock, held by another process, before [`Error::Unavailable`]
    /// (default 30 s; whole seconds, at least 1: the server's
    /// `innodb_lock_wait_timeout` and `GET_LOCK`'s time-out).
    #[must_use]
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Seals every record with this key, as
    /// [`Options::encryption`](crate::Options::encryption) does for the
    /// embedded store: the server receives sealed records and keyed
    /// digests, never a token, secret or user name.
    #[must_use]
    pub fn encryption(mut self, key: Key) -> Self {
        self.encryption = Some(key);
        self
    }

    /// Whether a database without the store's tables gets them (the
    /// default) or is refused with [`Error::StoreNotFound`].
    #[must_use]
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// The number of connections the store keeps at most.
    pub fn pool_size_value(&self) -> u32 {
        self.pool_size
    }

    /// The master key, when records are sealed.
    pub fn encryption_key(&self) -> Option<&Key> {
        self.encryption.as_ref()
    }

    /// The lock wait in whole seconds, as the server takes it.
    pub(super) fn lock_wait_secs(&self) -> u64 {
        self.lock_timeout.as_secs().max(1)
    }
}

/// `ssl-mode`, with MySQL's names and meanings (as far as the client
/// allows: see [`MysqlStore`]'s TLS section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SslMode {
    Disabled,
    Preferred,
    Required,
    VerifyCa,
    VerifyIdentity,
}

/// A `mysql://` URL, read.
pub(super) struct Url {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
    pub(super) database: String,
    pub(super) ssl_mode: SslMode,
    ssl_ca: Option<PathBuf>,
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidUrl {
        reason: format!(
            "{} (expected mysql://user:password@host:port/database[?ssl-mode=...&ssl-ca=...])",
            reason.into()
        ),
    }
}

/// `%XX` escapes decoded (user names, passwords and paths may hold any
/// byte that way).
fn decode(part: &str, what: &str) -> Result<String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = part
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| invalid(format!("a bad %-escape in the {what}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid(format!("the {what} is not UTF-8")))
}

impl Url {
    /// Reads `url`; errors never repeat the password.
    pub(super) fn parse(url: &str) -> Result<Url> {
        let url = url.trim();
        let rest = ["mysql://", "mariadb://"]
            .iter()
            .find_map(|scheme| {
                url.get(..scheme.len())
                    .filter(|s| s.eq_ignore_ascii_case(scheme))
                    .map(|_| &url[scheme.len()..])
            })
            .ok_or_else(|| invalid("not a mysql:// or mariadb:// URL"))?;
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => match info.split_once(':') {
                Some((user, password)) => (
                    Some(decode(user, "user name")?),
                    Some(decode(password, "password")?),
                ),
                None => (Some(decode(info, "user name")?), None),
            },
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| invalid("an IPv6 host without its closing ]"))?;
            (host.to_owned(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port)),
                None => (hostport.to_owned(), None),
            }
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let port = match port {
            None | Some("") => 3306,
            Some(port) => port
                .parse()
                .map_err(|_| invalid(format!("the port {port:?} is not a number")))?,
        };
        let database = decode(path.trim_end_matches('/'), "database name")?;
        if database.is_empty() {
            return Err(invalid("no database name"));
        }
        let mut ssl_mode = None;
        let mut ssl_ca = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value, "parameter")?;
            match name.replace('_', "-").to_ascii_lowercase().as_str() {
                "ssl-mode" | "sslmode" => {
                    ssl_mode = Some(match value.to_ascii_uppercase().as_str() {
                        "DISABLED" => SslMode::Disabled,
                        "PREFERRED" => SslMode::Preferred,
                        "REQUIRED" => SslMode::Required,
                        "VERIFY_CA" => SslMode::VerifyCa,
                        "VERIFY_IDENTITY" => SslMode::VerifyIdentity,
                        _ => {
                            return Err(invalid(format!(
                                "ssl-mode={value:?} is not one of DISABLED, PREFERRED, \
                                 REQUIRED, VERIFY_CA, VERIFY_IDENTITY"
                            )))
                        }
                    })
                }
                "ssl-ca" => ssl_ca = Some(PathBuf::from(value)),
                _ => {
                    return Err(invalid(format!(
                        "unknown parameter {name:?} (known: ssl-mode, ssl-ca)"
                    )))
                }
            }
        }
        // As the mysql client: PREFERRED unless asked otherwise.
        let ssl_mode = ssl_mode.unwrap_or(SslMode::Preferred);
        if ssl_mode == SslMode::VerifyCa && ssl_ca.is_none() {
            return Err(invalid(
                "ssl-mode=VERIFY_CA needs ssl-ca=/path/to/ca.pem (the CA to verify against)",
            ));
        }
        if let Some(ca) = &ssl_ca {
            if ssl_mode == SslMode::Disabled {
                return Err(invalid("ssl-ca is given but ssl-mode=DISABLED"));
            }
            if !ca.is_file() {
                return Err(invalid(format!("ssl-ca: no file {}", ca.display())));
            }
        }
        Ok(Url {
            host,
            port,
            user,
            password,
            database,
            ssl_mode,
            ssl_ca,
        })
    }

    /// `mysql://user@host:port/database`: the URL without its password
    /// (and with the TLS mode, when not the default).
    pub(super) fn describe(&self) -> String {
        let user = self
            .user
            .as_deref()
            .map(|user| format!("{user}@"))
            .unwrap_or_default();
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("mysql://{user}{host}:{}/{}", self.port, self.database)
    }

    /// The TLS settings of `mode` (`None`: plaintext).
    fn ssl_opts(&self, mode: SslMode) -> Option<SslOpts> {
        let verified = |opts: SslOpts| match &self.ssl_ca {
            Some(ca) => opts.with_root_cert_path(Some(ca.clone())),
            None => opts,
        };
        match mode {
            SslMode::Disabled => None,
            // MySQL's PREFERRED and REQUIRED encrypt without verifying,
            // unless a CA is given (then the chain is verified, as libpq's
            // `require` with a root file).
            SslMode::Preferred | SslMode::Required if self.ssl_ca.is_none() => Some(
                SslOpts::default()
                    .with_danger_accept_invalid_certs(true)
                    .with_danger_skip_domain_validation(true),
            ),
            SslMode::Preferred | SslMode::Required | SslMode::VerifyCa => Some(verified(
                SslOpts::default().with_danger_skip_domain_validation(true),
            )),
            SslMode::VerifyIdentity => Some(verified(SslOpts::default())),
        }
    }

    /// The client's options for `mode`: TCP always (the client would
    /// otherwise switch a loopback host to the Unix socket and skip TLS
    /// without a word), bounded time-outs, no connection opened eagerly.
    pub(super) fn opts(&self, options: &MysqlOptions, mode: SslMode) -> mysql::Opts {
        let read_timeout = options.lock_timeout + Duration::from_secs(10);
        let max = usize::try_from(options.pool_size)
            .unwrap_or(usize::MAX)
            .max(1);
        let constraints = PoolConstraints::new(0, max).expect("0 <= max");
        OptsBuilder::new()
            .ip_or_hostname(Some(self.host.clone()))
            .tcp_port(self.port)
            .user(self.user.clone())
            .pass(self.password.clone())
            .db_name(Some(self.database.clone()))
            .prefer_socket(false)
            .ssl_opts(self.ssl_opts(mode))
            .tcp_connect_timeout(Some(options.connect_timeout))
            .read_timeout(Some(read_timeout))
            .write_timeout(Some(read_timeout))
            .tcp_keepalive_time_ms(Some(30_000))
            .init(vec![format!(
                "SET SESSION innodb_lock_wait_timeout = {}",
                options.lock_wait_secs()
            )])
            .pool_opts(
                PoolOpts::default()
                    .with_constraints(constraints)
                    // Sessions are never left changed (transactions end
                    // before a connection goes back): no reset round trip.
                    .with_reset_connection(false),
            )
            .into()
    }
}

impl std::fmt::Debug for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
