//! Access tokens on demand (docs/SPEC.md §7): log a user in at Zoho's accounts
//! server, hand out a valid access token with exactly one refresh request per
//! expiry however many callers ask at once, and revoke at logout.
//!
//! [`OAuthClient`] works over any [`TokenStore`](crate::TokenStore); it never re-derives the
//! lookup rules, it asks the store. The refresh path, for a record found by
//! user name, id or any query:
//!
//! 1. read the record; valid past the margin → return it (no lock, no
//!    request);
//! 2. join the record's flight if one is running (wait for its outcome), or
//!    lead one: take the store's [`TokenStore::refresh_lock`](crate::TokenStore::refresh_lock) (a no-op
//!    for one-process stores, an advisory lock for shared ones), **re-read**
//!    the record, and only if it still needs it, refresh and save through
//!    [`TokenStore::save_token`](crate::TokenStore::save_token);
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

mod access_token;
mod client;
mod config;
mod datacenter;
mod events;
mod exchange;
mod login;
mod refresh_ahead;
mod refresher;
mod response;

pub use access_token::AccessToken;
pub use client::OAuthClient;
pub use config::{Config, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT};
pub use datacenter::DataCenter;
pub use login::Login;
