//! Access tokens on demand (SPEC.md §7): log a user in at Zoho's accounts
//! server, hand out a valid access token with exactly one refresh request per
//! expiry however many callers ask at once, and revoke at logout.
//!
//! [`OAuthClient`] works over any [`TokenStore`]; it never re-derives the
//! lookup rules, it asks the store. The refresh path, for a record found by
//! user name, id or any query:
//!
//! 1. read the record; valid past the margin → return it (no lock, no
//!    request);
//! 2. join the record's flight if one is running (wait for its outcome), or
//!    lead one: take the store's [`TokenStore::with_refresh_lock`] (a no-op
//!    for one-process stores, an advisory lock for shared ones), **re-read**
//!    the record, and only if it still needs it, refresh and save through
//!    [`TokenStore::save_token`];
//! 3. every error leaves the store as it was.
//!
//! ```no_run
//! use std::sync::Arc;
//! use tokenstore::oauth::{Login, OAuthClient};
//! use tokenstore::SledStore;
//!
//! let store = Arc::new(SledStore::open("tokens")?);
//! let client = OAuthClient::new(store);
//! // Once, with the grant code from Zoho's consent page:
//! client.login(&Login::new("ana@example.com", "1000.CLIENTID", "client-secret", "1000.grantcode"))?;
//! // Before each API call:
//! let token = client.access_token_for_user("ana@example.com")?;
//! let header = token.authorization(); // "Zoho-oauthtoken 1000.…"
//! # Ok::<(), tokenstore::Error>(())
//! ```

mod datacenter;
mod refresher;
mod response;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use datacenter::DataCenter;

use crate::error::{Error, Result};
use crate::rules::{lookup_key, LookupKey};
use crate::store::TokenStore;
use crate::token::{now_ms, present, OAuthToken, DEFAULT_EXPIRY_MARGIN_MS};
use refresher::{Flights, Joined};
use response::{parse_revoke, parse_token, Exchange, Grant};

/// How long connecting to the accounts server may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole token request (connect, send, answer) may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The most bytes read of an answer; a token response is a few hundred.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;
/// The token endpoint, under the accounts server's base URL.
const TOKEN_PATH: &str = "/oauth/v2/token";
/// After a background refresh failed, how long a record is left alone by
/// refresh-ahead (callers still refresh in the foreground once it is due):
/// never retry in a loop, least of all when rate limited.
const BACKGROUND_BACKOFF: Duration = Duration::from_secs(60);
/// The revoke endpoint, under the accounts server's base URL.
const REVOKE_PATH: &str = "/oauth/v2/token/revoke";

/// How an [`OAuthClient`] reaches the accounts server and when it refreshes.
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
    accounts_url: Option<String>,
    data_center: Option<DataCenter>,
    margin_ms: i64,
    ahead_ms: Option<i64>,
    connect_timeout: Duration,
    timeout: Duration,
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
    /// [`OAuthClient::with_config`].
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
fn check_accounts_url(url: &str) -> Result<()> {
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

/// What a login sends: the user name to save the record under, the client's
/// credentials and the grant code from Zoho's consent page. `Debug` shows
/// no secret.
///
/// ```
/// use tokenstore::oauth::Login;
/// let login = Login::new("ana@example.com", "1000.CLIENT", "client-secret", "1000.code")
///     .redirect_url("https://example.com/callback");
/// let shown = format!("{login:?}");
/// assert!(shown.contains("ana@example.com") && !shown.contains("client-secret") && !shown.contains("1000.code"));
/// ```
#[derive(Clone)]
pub struct Login {
    user_name: String,
    client_id: String,
    client_secret: String,
    grant_code: String,
    redirect_url: Option<String>,
}

impl Login {
    /// A login for `user_name` with the client's id and secret and the
    /// one-time grant code.
    pub fn new(
        user_name: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        grant_code: impl Into<String>,
    ) -> Self {
        Login {
            user_name: user_name.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            grant_code: grant_code.into(),
            redirect_url: None,
        }
    }

    /// The redirect URL registered for the client (sent as `redirect_uri`,
    /// and stored in the record).
    #[must_use]
    pub fn redirect_url(mut self, url: impl Into<String>) -> Self {
        self.redirect_url = Some(url.into());
        self
    }
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("user_name", &self.user_name)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("grant_code", &"[redacted]")
            .field("redirect_url", &self.redirect_url)
            .finish()
    }
}

/// A valid access token and what goes with it. `Debug` shows no secret; the
/// token itself is read with [`secret`](Self::secret) or
/// [`authorization`](Self::authorization).
///
/// ```
/// # use tokenstore::oauth::AccessToken;
/// # fn show(token: &AccessToken) {
/// println!("{token:?}"); // AccessToken { id: "3", token: "[redacted]", expiry_time: Some(…), … }
/// let header = token.authorization(); // "Zoho-oauthtoken 1000.…"
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    token: String,
    id: String,
    expiry_time: Option<i64>,
    api_domain: Option<String>,
}

impl AccessToken {
    fn from_record(record: &OAuthToken) -> Result<AccessToken> {
        let (Some(token), Some(id)) = (present(&record.access_token), present(&record.id)) else {
            return Err(Error::invalid("the record has no access token to hand out"));
        };
        Ok(AccessToken {
            token: token.to_owned(),
            id: id.to_owned(),
            expiry_time: record.expiry_time,
            api_domain: record.api_domain.clone(),
        })
    }

    /// The access token (a secret: do not log it).
    pub fn secret(&self) -> &str {
        &self.token
    }

    /// The `Authorization` header value Zoho's APIs expect:
    /// `Zoho-oauthtoken <token>`.
    pub fn authorization(&self) -> String {
        format!("Zoho-oauthtoken {}", self.token)
    }

    /// The id of the record it belongs to.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// When it expires, in milliseconds since the Unix epoch (`None`: the
    /// record has no expiry time and is used as it is).
    pub fn expiry_time(&self) -> Option<i64> {
        self.expiry_time
    }

    /// The API domain to call with it, e.g. `https://www.zohoapis.eu`.
    pub fn api_domain(&self) -> Option<&str> {
        self.api_domain.as_deref()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("id", &self.id)
            .field("token", &"[redacted]")
            .field("expiry_time", &self.expiry_time)
            .field("api_domain", &self.api_domain)
            .finish()
    }
}

impl Drop for AccessToken {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.token);
    }
}

/// Hands out valid access tokens from any [`TokenStore`], refreshing them at
/// Zoho's accounts server single-flight: one request per record however
/// many threads ask at once (see the [module docs](self)).
///
/// Cheap to share: put it in an `Arc` and call it from every thread.
///
/// ```
/// use std::sync::Arc;
/// use tokenstore::oauth::OAuthClient;
/// use tokenstore::{now_ms, Error, MemoryStore, OAuthToken, TokenStore};
///
/// let store = Arc::new(MemoryStore::new());
/// let mut saved = OAuthToken::new()
///     .with_user_name("ana@example.com")
///     .with_access_token("1000.access")
///     .with_expiry_time(now_ms() + 3_600_000);
/// store.save_token(&mut saved)?;
///
/// let client = OAuthClient::new(store);
/// // Valid for an hour: no request is made.
/// let token = client.access_token_for_user("ana@example.com")?;
/// assert_eq!(token.secret(), "1000.access");
/// assert!(matches!(client.access_token_for_user("bob@example.com"), Err(Error::NotFound { .. })));
/// # Ok::<(), tokenstore::Error>(())
/// ```
pub struct OAuthClient {
    store: Arc<dyn TokenStore + Send + Sync>,
    config: Config,
    agent: ureq::Agent,
    flights: Arc<Flights<(AccessToken, bool)>>,
    /// Records whose background refresh failed, and when.
    backoff: Arc<Mutex<HashMap<String, Instant>>>,
}

impl fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OAuthClient {
    /// A client over `store` with the default [`Config`].
    pub fn new(store: Arc<dyn TokenStore + Send + Sync>) -> OAuthClient {
        Self::with_config(store, Config::default()).expect("the default config is valid")
    }

    /// A client over `store` with `config`.
    ///
    /// # Errors
    /// [`Error::InvalidAccountsUrl`] when the config's accounts URL is not a
    /// plain `http(s)://` base URL.
    pub fn with_config(
        store: Arc<dyn TokenStore + Send + Sync>,
        config: Config,
    ) -> Result<OAuthClient> {
        if let Some(url) = &config.accounts_url {
            check_accounts_url(url)?;
        }
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(config.connect_timeout))
            .timeout_global(Some(config.timeout))
            // Errors are read from the answer's body (Zoho sends them with
            // 200 or 400), never from the status alone.
            .http_status_as_error(false)
            // A token request is never redirected: secrets go to the server
            // asked, nowhere else.
            .max_redirects(0)
            .user_agent(concat!("tokenstore/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(OAuthClient {
            store,
            config,
            agent,
            flights: Arc::default(),
            backoff: Arc::default(),
        })
    }

    /// The store the client reads and saves to.
    pub fn store(&self) -> &Arc<dyn TokenStore + Send + Sync> {
        &self.store
    }

    /// The client's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Exchanges a grant code (`grant_type=authorization_code`) and saves the
    /// answer under the login's user name (updating that user's record if
    /// there is one). Returns the record as stored; the grant code is not
    /// kept (it is single-use).
    ///
    /// # Errors
    /// [`Error::InvalidToken`] when a field of the login is empty (nothing
    /// is sent); [`Error::GrantRefused`], [`Error::InvalidClient`],
    /// [`Error::RateLimited`], [`Error::Network`],
    /// [`Error::MalformedResponse`], or the store's errors; on any of them
    /// nothing was saved.
    pub fn login(&self, login: &Login) -> Result<OAuthToken> {
        for (value, name) in [
            (&login.user_name, "user name"),
            (&login.client_id, "client id"),
            (&login.client_secret, "client secret"),
            (&login.grant_code, "grant code"),
        ] {
            if value.trim().is_empty() {
                return Err(Error::invalid(format!(
                    "a login needs a {name}; it is empty"
                )));
            }
        }
        let accounts = self.config.accounts_url_for(None);
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("client_id", login.client_id.as_str()),
            ("client_secret", login.client_secret.as_str()),
            ("code", login.grant_code.as_str()),
        ];
        if let Some(redirect) = &login.redirect_url {
            form.push(("redirect_uri", redirect.as_str()));
        }
        let started = now_ms();
        let (status, body) = self.post(&accounts, TOKEN_PATH, None, &form)?;
        let grant = parse_token(status, &body, &accounts, Exchange::GrantCode)?;
        let mut record = OAuthToken {
            user_name: Some(login.user_name.clone()),
            client_id: Some(login.client_id.clone()),
            client_secret: Some(login.client_secret.clone()),
            redirect_url: login.redirect_url.clone(),
            ..granted(grant, started)
        };
        self.store.save_token(&mut record)?;
        Ok(record)
    }

    /// A valid access token for the record `query` finds (SPEC.md §2 rules,
    /// as [`TokenStore::find_token`]): the stored one when it is valid past
    /// the margin, else a refreshed one, saved first.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotRefreshable`], and the errors of a
    /// refresh ([`refresh`](Self::refresh)); the store is unchanged on all.
    pub fn access_token(&self, query: &OAuthToken) -> Result<AccessToken> {
        self.get(query, self.config.margin_ms, false)
    }

    /// [`access_token`](Self::access_token) for the record of `user_name`.
    pub fn access_token_for_user(&self, user_name: &str) -> Result<AccessToken> {
        self.access_token(&OAuthToken::new().with_user_name(user_name))
    }

    /// [`access_token`](Self::access_token) for the record `id`.
    pub fn access_token_by_id(&self, id: &str) -> Result<AccessToken> {
        self.access_token(&OAuthToken::new().with_id(id))
    }

    /// [`access_token`](Self::access_token) that stays valid for at least
    /// `min_valid` (instead of the configured margin), for a long job.
    pub fn access_token_valid_for(
        &self,
        query: &OAuthToken,
        min_valid: Duration,
    ) -> Result<AccessToken> {
        let margin = i64::try_from(min_valid.as_millis()).unwrap_or(i64::MAX);
        self.get(query, margin, false)
    }

    /// Refreshes the record `query` finds now, valid or not, and returns the
    /// new access token. Callers that ask at the same time share one request.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotRefreshable`],
    /// [`Error::GrantRefused`] (the user must log in again),
    /// [`Error::InvalidClient`], [`Error::RateLimited`], [`Error::Network`],
    /// [`Error::MalformedResponse`], or the store's errors; the store is
    /// unchanged on all.
    pub fn refresh(&self, query: &OAuthToken) -> Result<AccessToken> {
        self.get(query, self.config.margin_ms, true)
    }

    /// Revokes the refresh token of record `id` at the accounts server, then
    /// deletes the record. Returns whether the server was asked: a record
    /// without a refresh token has nothing to revoke and is only deleted.
    ///
    /// # Errors
    /// [`Error::NotFound`]; the errors of a request ([`Error::GrantRefused`],
    /// [`Error::RateLimited`], [`Error::Network`], ...), on which the record
    /// is kept.
    pub fn revoke(&self, id: &str) -> Result<bool> {
        let mut asked = false;
        self.store.with_refresh_lock(id, &mut || {
            let record = self.stored(id)?;
            if let Some(refresh) = present(&record.refresh_token) {
                let accounts = self.config.accounts_url_for(Some(&record));
                let (status, body) =
                    self.post(&accounts, REVOKE_PATH, Some(("token", refresh)), &[])?;
                parse_revoke(status, &body, &accounts)?;
                asked = true;
            }
            self.store.delete_token(id)?;
            Ok(())
        })?;
        Ok(asked)
    }

    /// The record `query` designates, or `NotFound`.
    fn locate(&self, query: &OAuthToken) -> Result<OAuthToken> {
        let found = match lookup_key(query) {
            Some(LookupKey::Id(id)) => self.store.find_token_by_id(id)?,
            Some(_) => self.store.find_token(query)?,
            None => None,
        };
        found.ok_or_else(|| Error::NotFound {
            what: match lookup_key(query) {
                Some(LookupKey::UserName(user)) => format!("user {user:?}"),
                Some(LookupKey::Id(id)) => format!("id {id:?}"),
                Some(_) => "the token given".to_owned(),
                None => "a query without user name, token or id".to_owned(),
            },
        })
    }

    fn get(&self, query: &OAuthToken, margin_ms: i64, force: bool) -> Result<AccessToken> {
        loop {
            let record = self.locate(query)?;
            let id = record.id.clone().unwrap_or_default();
            if !force && !needs_refresh(&record, margin_ms) {
                if let Some(ahead_ms) = self.config.ahead_ms {
                    if needs_refresh(&record, ahead_ms) {
                        self.refresh_behind(&id, ahead_ms);
                    }
                }
                return AccessToken::from_record(&record);
            }
            match self
                .flights
                .run(&id, || self.refresh_record(&id, margin_ms, force))
            {
                Joined::Led(outcome) => return outcome.map(|(token, _)| token),
                Joined::Waited(Ok((token, false)))
                    if force
                        || token
                            .expiry_time
                            .is_some_and(|e| e.saturating_sub(now_ms()) < margin_ms) =>
                {
                    // Joined a flight that found the token valid for its own
                    // margin and kept it, but this caller asked for a
                    // refresh or a longer margin: fly again. (A token the
                    // flight did refresh is taken as it is, so a server
                    // granting less than the margin cannot make this loop.)
                    continue;
                }
                Joined::Waited(outcome) => return outcome.map(|(token, _)| token),
            }
        }
    }

    /// Starts a background refresh of `id` unless one is in the air or the
    /// last one failed less than [`BACKGROUND_BACKOFF`] ago.
    fn refresh_behind(&self, id: &str, ahead_ms: i64) {
        if self.flights.is_running(id) {
            return;
        }
        {
            let mut backoff = self.backoff.lock();
            if backoff
                .get(id)
                .is_some_and(|failed| failed.elapsed() < BACKGROUND_BACKOFF)
            {
                return;
            }
            backoff.remove(id);
        }
        let behind = OAuthClient {
            store: Arc::clone(&self.store),
            config: self.config.clone(),
            agent: self.agent.clone(),
            flights: Arc::clone(&self.flights),
            backoff: Arc::clone(&self.backoff),
        };
        let id = id.to_owned();
        let spawned = std::thread::Builder::new()
            .name("tokenstore-refresh-ahead".into())
            .spawn(move || {
                let outcome = match behind
                    .flights
                    .run(&id, || behind.refresh_record(&id, ahead_ms, false))
                {
                    Joined::Led(outcome) | Joined::Waited(outcome) => outcome,
                };
                if outcome.is_err() {
                    behind.backoff.lock().insert(id, Instant::now());
                }
            });
        // No thread to spare: the foreground refresh will do it when due.
        drop(spawned);
    }

    /// The record `id` as stored now, or [`Error::NotFound`].
    fn stored(&self, id: &str) -> Result<OAuthToken> {
        self.store
            .find_token_by_id(id)?
            .ok_or_else(|| Error::NotFound {
                what: format!("id {id:?}"),
            })
    }

    /// The leader's work: under the store's refresh lock, re-read the record
    /// (another process may have refreshed it), and refresh it if it still
    /// needs it. Returns the token and whether a request was made.
    fn refresh_record(&self, id: &str, margin_ms: i64, force: bool) -> Result<(AccessToken, bool)> {
        let mut outcome = None;
        self.store.with_refresh_lock(id, &mut || {
            let record = self.stored(id)?;
            if !force && !needs_refresh(&record, margin_ms) {
                outcome = Some((AccessToken::from_record(&record)?, false));
                return Ok(());
            }
            let started = now_ms();
            let grant = self.request_refresh(&record)?;
            let mut update = OAuthToken {
                id: Some(id.to_owned()),
                ..granted(grant, started)
            };
            self.store.save_token(&mut update)?;
            outcome = Some((AccessToken::from_record(&update)?, true));
            Ok(())
        })?;
        outcome.ok_or_else(|| {
            Error::from(std::io::Error::other(
                "the store's refresh lock did not run the refresh; this is a bug in the backend",
            ))
        })
    }

    /// Exchanges the record's refresh token (`grant_type=refresh_token`).
    fn request_refresh(&self, record: &OAuthToken) -> Result<Grant> {
        let id = record.id.clone().unwrap_or_default();
        let need = |value: &Option<String>, missing: &'static str| {
            present(value)
                .map(str::to_owned)
                .ok_or(Error::NotRefreshable {
                    id: id.clone(),
                    missing,
                })
        };
        let refresh = need(&record.refresh_token, "refresh_token")?;
        let client_id = need(&record.client_id, "client_id")?;
        let client_secret = need(&record.client_secret, "client_secret")?;
        let accounts = self.config.accounts_url_for(Some(record));
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", client_id.as_str()),
            ("client_secret", client_secret.as_str()),
            ("refresh_token", refresh.as_str()),
        ];
        let (status, body) = self.post(&accounts, TOKEN_PATH, None, &form)?;
        parse_token(status, &body, &accounts, Exchange::RefreshToken)
    }

    /// POSTs `form` (secrets travel in the body, never in the URL, except the
    /// revoke endpoint's `token` parameter, which Zoho defines in the query
    /// string and which is never shown). Returns the status and the body.
    fn post(
        &self,
        accounts: &str,
        path: &str,
        query: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> Result<(u16, Vec<u8>)> {
        let network = |reason: String| Error::Network {
            accounts: accounts.to_owned(),
            reason,
        };
        let mut request = self.agent.post(format!("{accounts}{path}"));
        if let Some((name, value)) = query {
            request = request.query(name, value);
        }
        let mut response = request
            .send_form(form.iter().copied())
            .map_err(|e| self.describe(e, accounts))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => Error::MalformedResponse {
                    accounts: accounts.to_owned(),
                    reason: format!("the answer is longer than {MAX_ANSWER_BYTES} bytes"),
                },
                other => match self.describe(other, accounts) {
                    Error::Network { reason, .. } => network(reason),
                    e => e,
                },
            })?;
        Ok((status, body))
    }

    /// A request failure as an error that names no URL beyond the accounts
    /// server's base and quotes nothing the transport saw.
    fn describe(&self, error: ureq::Error, accounts: &str) -> Error {
        let reason = match &error {
            ureq::Error::Timeout(ureq::Timeout::Connect) => format!(
                "connecting timed out after {:.1?}",
                self.config.connect_timeout
            ),
            ureq::Error::Timeout(_) => {
                format!("no answer within {:.1?}", self.config.timeout)
            }
            ureq::Error::HostNotFound => "host not found".to_owned(),
            ureq::Error::ConnectionFailed => "connection failed".to_owned(),
            ureq::Error::Io(io) => io.kind().to_string(),
            ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) => {
                "TLS failure".to_owned()
            }
            ureq::Error::BadUri(_) | ureq::Error::Http(_) => {
                return Error::InvalidAccountsUrl {
                    reason: format!("{accounts} does not make a valid request URL"),
                }
            }
            _ => "HTTP protocol error".to_owned(),
        };
        Error::Network {
            accounts: accounts.to_owned(),
            reason,
        }
    }
}

/// SPEC.md §7: no access token, or one expiring within the margin. An access
/// token without an expiry time is used as it is.
fn needs_refresh(record: &OAuthToken, margin_ms: i64) -> bool {
    present(&record.access_token).is_none() || record.is_expired(now_ms(), margin_ms)
}

/// The record fields a grant sets; `started` is when the request was sent,
/// so the stored expiry errs early.
fn granted(grant: Grant, started: i64) -> OAuthToken {
    OAuthToken {
        access_token: Some(grant.access_token),
        refresh_token: grant.refresh_token,
        expiry_time: Some(started.saturating_add(grant.lifetime_ms)),
        api_domain: grant.api_domain,
        ..OAuthToken::default()
    }
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
