//! The HTTP exchange with the accounts server: the refresh request, the
//! POST itself, and transport errors described without leaking.

use super::response::{parse_token, Exchange, Grant};
use super::OAuthClient;
use crate::error::{Error, Result};
use crate::token::{present, OAuthToken};

/// The most bytes read of an answer; a token response is a few hundred.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;
/// The token endpoint, under the accounts server's base URL.
pub(super) const TOKEN_PATH: &str = "/oauth/v2/token";
/// The revoke endpoint, under the accounts server's base URL.
pub(super) const REVOKE_PATH: &str = "/oauth/v2/token/revoke";

impl OAuthClient {
    /// Exchanges the record's refresh token (`grant_type=refresh_token`).
    pub(super) fn request_refresh(&self, record: &OAuthToken, accounts: &str) -> Result<Grant> {
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
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", client_id.as_str()),
            ("client_secret", client_secret.as_str()),
            ("refresh_token", refresh.as_str()),
        ];
        let (status, body) = self.post(accounts, TOKEN_PATH, &form)?;
        parse_token(status, &body, accounts, Exchange::RefreshToken)
    }

    /// POSTs `form`: secrets travel in the body, never in the URL, which
    /// HTTP clients (ureq's TRACE records), proxies and servers log. Returns
    /// the status and the body.
    pub(super) fn post(
        &self,
        accounts: &str,
        path: &str,
        form: &[(&str, &str)],
    ) -> Result<(u16, Vec<u8>)> {
        let network = |reason: String| Error::Network {
            accounts: accounts.to_owned(),
            reason,
        };
        let mut response = self
            .agent
            .post(format!("{accounts}{path}"))
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
