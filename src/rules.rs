//! The lookup key of docs/SPEC.md §2: which stored record a query (or an id-less
//! save) designates. This is the one place the rules live; every backend asks
//! [`lookup_key`] and only resolves the answer with its own indexes.

use crate::token::{present, OAuthToken};

/// What a query designates, decided by the first rule whose condition holds.
///
/// A rule that holds decides even when the store has no matching record:
/// later rules are never tried, and there is no "first record" fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKey<'a> {
    /// Rule 1: the record with this `user_name`.
    UserName(&'a str),
    /// Rule 2: the record with this `access_token` (the query carries neither
    /// `client_id` nor `client_secret`).
    AccessToken(&'a str),
    /// Rule 3: the record with this `grant_token` if there is one, otherwise
    /// the record with this `refresh_token` (the query carries both
    /// `client_id` and `client_secret`, and at least one of the two tokens).
    GrantOrRefresh {
        /// The grant token, if the query has one.
        grant: Option<&'a str>,
        /// The refresh token, if the query has one.
        refresh: Option<&'a str>,
    },
    /// Rule 4: the record with this `id`.
    Id(&'a str),
}

/// The lookup key of `query`, or `None` when no rule holds (rule 5: no match).
///
/// Empty strings count as absent. `client_id` and `client_secret` are only
/// checked for presence, never compared.
///
/// ```
/// use tokenstore::{lookup_key, LookupKey, OAuthToken};
///
/// let by_user = OAuthToken::new().with_user_name("ana@example.com").with_access_token("a");
/// assert_eq!(lookup_key(&by_user), Some(LookupKey::UserName("ana@example.com")));
///
/// // An access token with client credentials is not rule 2; with no grant or
/// // refresh token it is not rule 3 either, and without an id nothing matches.
/// let neither = OAuthToken::new().with_access_token("a").with_client_id("c").with_client_secret("s");
/// assert_eq!(lookup_key(&neither), None);
/// ```
pub fn lookup_key(query: &OAuthToken) -> Option<LookupKey<'_>> {
    let client_id = present(&query.client_id);
    let client_secret = present(&query.client_secret);
    let grant = present(&query.grant_token);
    let refresh = present(&query.refresh_token);

    if let Some(user) = present(&query.user_name) {
        return Some(LookupKey::UserName(user));
    }
    if let Some(access) = present(&query.access_token) {
        if client_id.is_none() && client_secret.is_none() {
            return Some(LookupKey::AccessToken(access));
        }
    }
    if (grant.is_some() || refresh.is_some()) && client_id.is_some() && client_secret.is_some() {
        return Some(LookupKey::GrantOrRefresh { grant, refresh });
    }
    present(&query.id).map(LookupKey::Id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(t: OAuthToken) -> OAuthToken {
        t.with_client_id("cid").with_client_secret("csecret")
    }

    #[test]
    fn user_name_wins_over_everything() {
        let q = creds(
            OAuthToken::new()
                .with_user_name("u")
                .with_access_token("a")
                .with_id("7"),
        );
        assert_eq!(lookup_key(&q), Some(LookupKey::UserName("u")));
    }

    #[test]
    fn access_token_needs_both_credentials_absent() {
        let q = OAuthToken::new().with_access_token("a").with_id("7");
        assert_eq!(lookup_key(&q), Some(LookupKey::AccessToken("a")));
        let one_cred = OAuthToken::new()
            .with_access_token("a")
            .with_client_id("c")
            .with_id("7");
        assert_eq!(lookup_key(&one_cred), Some(LookupKey::Id("7")));
    }

    #[test]
    fn grant_or_refresh_needs_both_credentials() {
        let q = creds(
            OAuthToken::new()
                .with_grant_token("g")
                .with_refresh_token("r"),
        );
        assert_eq!(
            lookup_key(&q),
            Some(LookupKey::GrantOrRefresh {
                grant: Some("g"),
                refresh: Some("r")
            })
        );
        let only_secret = OAuthToken::new()
            .with_refresh_token("r")
            .with_client_secret("s");
        assert_eq!(lookup_key(&only_secret), None);
    }

    #[test]
    fn empty_strings_are_absent() {
        let q = OAuthToken::new()
            .with_user_name("")
            .with_access_token("")
            .with_id("");
        assert_eq!(lookup_key(&q), None);
        let q = OAuthToken::new()
            .with_access_token("a")
            .with_client_id("")
            .with_client_secret("");
        assert_eq!(lookup_key(&q), Some(LookupKey::AccessToken("a")));
    }

    #[test]
    fn nothing_present_is_no_match() {
        assert_eq!(lookup_key(&OAuthToken::new()), None);
        assert_eq!(lookup_key(&creds(OAuthToken::new())), None);
    }
}
