//! How a client reaches the accounts server and when it refreshes.

use std::time::Duration;

use super::DataCenter;
use crate::error::{Error, Result};
use crate::token::{present, OAuthToken, DEFAULT_EXPIRY_MARGIN_MS};

/// How long connecting to the accounts server may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole token request (connect, send, answer) may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How an [`OAuthClient`](super::OAuthClient) reaches the accounts server and when it refreshes.
///
/// The accounts server used for a record is, first that applies: the
/// [`accounts_url`](Self::accounts_url) given here; the
/// [`data_center`](Self::data_center) given here; the data center named by
/// the record's `api_domain`; the US data center.
///
/// ```
/// use std::time::Duration;
/// use tokenstore::oauth::{Config, DataCenter};
///
/// let config = Config::default()
///     .data_center(DataCenter::Eu)
///     .expiry_margin(Duration::from_secs(60))
///     .timeout(Duration::from_secs(5));
/// assert_eq!(config.accounts_url_for(None), "https://accounts.zoho.eu");
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    pub(super) accounts_url: Option<String>,
    pub(super) data_center: Option<DataCenter>,
    pub(super) margin_ms: i64,
    pub(super) ahead_ms: Option<i64>,
    pub(super) connect_timeout: Duration,
    pub(super) timeout: Duration,
}

impl Default for Config {
    /// Accounts server from the record's `api_domain` (else US), the SDK's
    /// 5-second margin, [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_TIMEOUT`].
    fn default() -> Self {
        Config {
            accounts_url: None,
            data_center: None,
            margin_ms: DEFAULT_EXPIRY_MARGIN_MS,
            ahead_ms: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl Config {
    /// Uses this accounts server for every record (a test server, a proxy):
    /// its base URL, e.g. `https://accounts.zoho.com`. Checked by
    /// [`OAuthClient::with_config`](super::OAuthClient::with_config).
    #[must_use]
    pub fn accounts_url(mut self, url: impl Into<String>) -> Self {
        self.accounts_url = Some(url.into());
        self
    }

    /// Uses this data center's accounts server for every record.
    #[must_use]
    pub fn data_center(mut self, data_center: DataCenter) -> Self {
        self.data_center = Some(data_center);
        self
    }

    /// Refreshes access tokens that expire within `margin` (default 5 s,
    /// [`DEFAULT_EXPIRY_MARGIN_MS`]).
    #[must_use]
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.margin_ms = i64::try_from(margin.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// Refresh ahead: a token that is still valid past the margin but
    /// expires within `ahead` is returned at once, and refreshed once in a
    /// background thread, so callers never wait on the network while their
    /// token is still good. Off by default. A background refresh that fails
    /// changes nothing and is not retried for a minute (the foreground
    /// refresh still happens once the token is within the margin).
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = tokenstore::oauth::Config::default().refresh_ahead(Duration::from_secs(300));
    /// ```
    #[must_use]
    pub fn refresh_ahead(mut self, ahead: Duration) -> Self {
        self.ahead_ms = Some(i64::try_from(ahead.as_millis()).unwrap_or(i64::MAX));
        self
    }

    /// Bounds the time to connect to the accounts server (default 10 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Bounds the time of a whole request, connect included (default 30 s).
    /// A server that accepts and never answers fails with
    /// [`Error::Network`] after this long.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The accounts server's base URL for `record` (or for a login, `None`).
    ///
    /// ```
    /// use tokenstore::{oauth::Config, OAuthToken};
    /// let record = OAuthToken::new().with_api_domain("https://www.zohoapis.com.au");
    /// assert_eq!(Config::default().accounts_url_for(Some(&record)), "https://accounts.zoho.com.au");
    /// assert_eq!(Config::default().accounts_url_for(None), "https://accounts.zoho.com");
    /// ```
    pub fn accounts_url_for(&self, record: Option<&OAuthToken>) -> String {
        if let Some(url) = &self.accounts_url {
            return url.trim_end_matches('/').to_owned();
        }
        let from_record = record
            .and_then(|r| present(&r.api_domain))
            .and_then(DataCenter::from_api_domain);
        self.data_center
            .or(from_record)
            .unwrap_or(DataCenter::Us)
            .accounts_url()
            .to_owned()
    }
}

/// Checks that `url` is a base URL that can be shown: `http(s)://host…`,
/// no credentials, no query string or fragment.
pub(super) fn check_accounts_url(url: &str) -> Result<()> {
    let invalid = |reason: &str| Error::InvalidAccountsUrl {
        reason: reason.to_owned(),
    };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid("it must start with https:// or http://"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(invalid("it has no host"));
    }
    if authority.contains('@') {
        return Err(invalid("it must not carry credentials"));
    }
    if rest.contains(['?', '#']) {
        return Err(invalid("it must not carry a query string or fragment"));
    }
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("it contains spaces or control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_urls_that_could_leak_are_refused() {
        for bad in [
            "accounts.zoho.com",
            "ftp://x",
            "https://",
            "https://user:pw@accounts.zoho.com",
            "https://accounts.zoho.com/?client_secret=x",
            "https://accounts.zoho.com/#x",
            "https://accounts zoho.com",
        ] {
            assert!(
                matches!(
                    check_accounts_url(bad),
                    Err(Error::InvalidAccountsUrl { .. })
                ),
                "{bad}"
            );
        }
        check_accounts_url("http://127.0.0.1:8765").unwrap();
        check_accounts_url("https://accounts.zoho.com/").unwrap();
    }

    #[test]
    fn config_order_is_url_then_data_center_then_api_domain_then_us() {
        let eu = OAuthToken::new().with_api_domain("https://www.zohoapis.eu");
        let config = Config::default();
        assert_eq!(
            config.accounts_url_for(Some(&eu)),
            "https://accounts.zoho.eu"
        );
        let config = config.data_center(DataCenter::Jp);
        assert_eq!(
            config.accounts_url_for(Some(&eu)),
            "https://accounts.zoho.jp"
        );
        let config = config.accounts_url("http://127.0.0.1:9/");
        assert_eq!(config.accounts_url_for(Some(&eu)), "http://127.0.0.1:9");
    }
}
