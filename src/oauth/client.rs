//! The client's public operations: login, access tokens (single flight),
//! refresh and revoke.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::config::check_accounts_url;
use super::events;
use super::exchange::{REVOKE_PATH, TOKEN_PATH};
use super::refresher::{Flights, Joined};
use super::response::{parse_revoke, parse_token, Exchange, Grant};
use super::{AccessToken, Config, Login};
use crate::error::{Error, Result};
use crate::rules::{lookup_key, LookupKey};
use crate::store::TokenStore;
use crate::token::{now_ms, present, OAuthToken};

/// Hands out valid access tokens from any [`TokenStore`], refreshing them at
/// Zoho's accounts server single-flight: one request per record however
/// many threads ask at once (see the [module docs](super)).
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
    pub(super) store: Arc<dyn TokenStore + Send + Sync>,
    pub(super) config: Config,
    pub(super) agent: ureq::Agent,
    pub(super) flights: Arc<Flights<(AccessToken, bool)>>,
    /// Records whose background refresh failed, and when.
    pub(super) backoff: Arc<Mutex<HashMap<String, Instant>>>,
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
        let clock = Instant::now();
        let started = now_ms();
        let outcome = self
            .post(&accounts, TOKEN_PATH, &form)
            .and_then(|(status, body)| parse_token(status, &body, &accounts, Exchange::GrantCode))
            .and_then(|grant| {
                let mut record = OAuthToken {
                    user_name: Some(login.user_name.clone()),
                    client_id: Some(login.client_id.clone()),
                    client_secret: Some(login.client_secret.clone()),
                    redirect_url: login.redirect_url.clone(),
                    ..granted(grant, started)
                };
                self.store.save_token(&mut record)?;
                Ok(record)
            });
        events::logged_in(&login.user_name, &accounts, clock.elapsed(), &outcome);
        outcome
    }

    /// A valid access token for the record `query` finds (docs/SPEC.md §2 rules,
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
        let clock = Instant::now();
        let mut accounts = None;
        let outcome = (|| {
            let _lock = events::refresh_lock(&*self.store, id)?;
            let record = self.stored(id)?;
            let mut asked = false;
            if let Some(refresh) = present(&record.refresh_token) {
                let server = accounts.insert(self.config.accounts_url_for(Some(&record)));
                // In the body, as the Zoho SDKs send it: a URL's query
                // string is what proxies, servers and HTTP clients log.
                let (status, body) = self.post(server, REVOKE_PATH, &[("token", refresh)])?;
                parse_revoke(status, &body, server)?;
                asked = true;
            }
            self.store.delete_token(id)?;
            Ok(asked)
        })();
        events::revoked(id, accounts.as_deref(), clock.elapsed(), &outcome);
        outcome
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

    /// The record `id` as stored now, or [`Error::NotFound`].
    pub(super) fn stored(&self, id: &str) -> Result<OAuthToken> {
        self.store
            .find_token_by_id(id)?
            .ok_or_else(|| Error::NotFound {
                what: format!("id {id:?}"),
            })
    }

    /// The leader's work: under the store's refresh lock, re-read the record
    /// (another process may have refreshed it), and refresh it if it still
    /// needs it. Returns the token and whether a request was made.
    pub(super) fn refresh_record(
        &self,
        id: &str,
        margin_ms: i64,
        force: bool,
    ) -> Result<(AccessToken, bool)> {
        let clock = Instant::now();
        let mut accounts = None;
        let outcome = (|| {
            let _lock = events::refresh_lock(&*self.store, id)?;
            let record = self.stored(id)?;
            if !force && !needs_refresh(&record, margin_ms) {
                return Ok((AccessToken::from_record(&record)?, false));
            }
            let server = accounts.insert(self.config.accounts_url_for(Some(&record)));
            let started = now_ms();
            let grant = self.request_refresh(&record, server)?;
            let mut update = OAuthToken {
                id: Some(id.to_owned()),
                ..granted(grant, started)
            };
            self.store.save_token(&mut update)?;
            Ok((AccessToken::from_record(&update)?, true))
        })();
        events::refreshed(id, accounts.as_deref(), clock.elapsed(), &outcome);
        outcome
    }
}

/// docs/SPEC.md §7: no access token, or one expiring within the margin. An access
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
