//! Test fixtures shared by the integration tests.

use tokenstore::OAuthToken;

/// A Zoho-shaped token for `user` whose secrets all carry `tag`.
pub fn zoho(user: &str, tag: &str) -> OAuthToken {
    OAuthToken::new()
        .with_user_name(user)
        .with_client_id("1000.CLIENTID")
        .with_client_secret(format!("client-secret-{tag}"))
        .with_refresh_token(format!("1000.refresh-{tag}"))
        .with_access_token(format!("1000.access-{tag}"))
        .with_grant_token(format!("1000.grant-{tag}"))
        .with_expiry_time(1_700_000_000_000)
        .with_redirect_url("https://example.com/callback")
        .with_api_domain("https://www.zohoapis.com")
}
