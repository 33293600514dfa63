//! What a login sends.

use std::fmt;

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
    pub(super) user_name: String,
    pub(super) client_id: String,
    pub(super) client_secret: String,
    pub(super) grant_code: String,
    pub(super) redirect_url: Option<String>,
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
