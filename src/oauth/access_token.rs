//! What a caller gets: a valid access token, its secret never shown.

use std::fmt;

use crate::error::{Error, Result};
use crate::token::{present, OAuthToken};

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
    pub(super) expiry_time: Option<i64>,
    api_domain: Option<String>,
}

impl AccessToken {
    pub(super) fn from_record(record: &OAuthToken) -> Result<AccessToken> {
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
