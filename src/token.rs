//! The record: [`OAuthToken`], its redacted `Debug`, normalization, merging
//! and expiry.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The margin the Zoho SDKs use when deciding that an access token must be
/// refreshed: a token expiring within 5 seconds counts as expired.
pub const DEFAULT_EXPIRY_MARGIN_MS: i64 = 5_000;

/// One stored OAuth token, with the fields of the Zoho CRM SDKs' `OAuthToken`.
///
/// All fields are optional. An empty string means the same as `None` on every
/// input and is stored as `None`. `Debug` never shows the four secrets
/// (`client_secret`, `refresh_token`, `access_token`, `grant_token`); it only
/// says whether they are present.
///
/// ```
/// use tokenstore::OAuthToken;
///
/// let token = OAuthToken::new()
///     .with_user_name("ana@example.com")
///     .with_refresh_token("1000.secret-refresh")
///     .with_expiry_time(1_700_000_000_000);
/// let shown = format!("{token:?}");
/// assert!(shown.contains("ana@example.com"));
/// assert!(shown.contains("[redacted]"));
/// assert!(!shown.contains("secret-refresh"));
/// ```
///
/// Adding a field to this struct breaks neither stored data nor callers
/// that build tokens with [`OAuthToken::new`] and the `with_*` setters (or
/// a struct expression ending in `..Default::default()`): what is stored
/// is the codec's own versioned layout, not this struct, and [`Field`]
/// lists the fields for everything that walks them. (It stays a plain
/// struct, not `#[non_exhaustive]`, so that struct expressions with
/// `..Default::default()` keep working in other crates, as the Zoho
/// SDK's own code reads.)
#[derive(Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthToken {
    /// The record's unique key; assigned by the store on insert when absent.
    pub id: Option<String>,
    /// The user signature's name (the Zoho SDK stores `email` or `email:zgid`).
    pub user_name: Option<String>,
    /// OAuth client id.
    pub client_id: Option<String>,
    /// OAuth client secret (secret).
    pub client_secret: Option<String>,
    /// OAuth refresh token (secret).
    pub refresh_token: Option<String>,
    /// OAuth access token (secret).
    pub access_token: Option<String>,
    /// The one-time authorization code (secret).
    pub grant_token: Option<String>,
    /// When the access token expires, in milliseconds since the Unix epoch.
    pub expiry_time: Option<i64>,
    /// OAuth redirect URL.
    pub redirect_url: Option<String>,
    /// The API domain, e.g. `https://www.zohoapis.com`.
    pub api_domain: Option<String>,
}

/// The four fields whose values belong to at most one record each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndexedField {
    /// `user_name`
    UserName,
    /// `access_token`
    AccessToken,
    /// `refresh_token`
    RefreshToken,
    /// `grant_token`
    GrantToken,
}

impl IndexedField {
    /// Every unique field, in the order conflicts are checked and reported.
    pub const ALL: [IndexedField; 4] = [
        IndexedField::UserName,
        IndexedField::AccessToken,
        IndexedField::RefreshToken,
        IndexedField::GrantToken,
    ];

    /// Where the field stands in [`OAuthToken::string_fields`].
    pub(crate) fn string_field(self) -> usize {
        match self {
            IndexedField::UserName => 1,
            IndexedField::RefreshToken => 4,
            IndexedField::AccessToken => 5,
            IndexedField::GrantToken => 6,
        }
    }

    /// The field's name as it appears in [`OAuthToken`].
    ///
    /// ```
    /// assert_eq!(tokenstore::IndexedField::RefreshToken.name(), "refresh_token");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            IndexedField::UserName => "user_name",
            IndexedField::AccessToken => "access_token",
            IndexedField::RefreshToken => "refresh_token",
            IndexedField::GrantToken => "grant_token",
        }
    }

    /// Whether the field holds a secret (every indexed field but `user_name`).
    ///
    /// ```
    /// use tokenstore::IndexedField;
    /// assert!(!IndexedField::UserName.is_secret());
    /// assert!(IndexedField::GrantToken.is_secret());
    /// ```
    pub fn is_secret(self) -> bool {
        self != IndexedField::UserName
    }
}

impl fmt::Display for IndexedField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Treats `Some("")` as absent: the one place the "empty means absent" rule lives.
pub(crate) fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

macro_rules! with_setters {
    ($($(#[$doc:meta])* $method:ident => $field:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub fn $method(mut self, value: impl Into<$ty>) -> Self {
                self.$field = Some(value.into());
                self
            }
        )*
    };
}

impl OAuthToken {
    /// An empty token, the same as `OAuthToken::default()`.
    pub fn new() -> Self {
        Self::default()
    }

    with_setters! {
        /// Sets `id`.
        with_id => id: String,
        /// Sets `user_name`.
        with_user_name => user_name: String,
        /// Sets `client_id`.
        with_client_id => client_id: String,
        /// Sets `client_secret`.
        with_client_secret => client_secret: String,
        /// Sets `refresh_token`.
        with_refresh_token => refresh_token: String,
        /// Sets `access_token`.
        with_access_token => access_token: String,
        /// Sets `grant_token`.
        with_grant_token => grant_token: String,
        /// Sets `redirect_url`.
        with_redirect_url => redirect_url: String,
        /// Sets `api_domain`.
        with_api_domain => api_domain: String,
    }

    /// Sets `expiry_time` (milliseconds since the Unix epoch).
    #[must_use]
    pub fn with_expiry_time(mut self, epoch_ms: i64) -> Self {
        self.expiry_time = Some(epoch_ms);
        self
    }

    /// The value of one of the unique fields, `None` when absent or empty.
    ///
    /// ```
    /// use tokenstore::{IndexedField, OAuthToken};
    /// let token = OAuthToken::new().with_user_name("");
    /// assert_eq!(token.indexed(IndexedField::UserName), None);
    /// ```
    pub fn indexed(&self, field: IndexedField) -> Option<&str> {
        present(match field {
            IndexedField::UserName => &self.user_name,
            IndexedField::AccessToken => &self.access_token,
            IndexedField::RefreshToken => &self.refresh_token,
            IndexedField::GrantToken => &self.grant_token,
        })
    }

    /// Replaces every `Some("")` by `None`, as the store does on every input.
    ///
    /// ```
    /// use tokenstore::OAuthToken;
    /// let mut token = OAuthToken::new().with_user_name("").with_client_id("abc");
    /// token.normalize();
    /// assert_eq!(token, OAuthToken::new().with_client_id("abc"));
    /// ```
    pub fn normalize(&mut self) {
        for field in self.string_fields_mut() {
            if field.as_deref() == Some("") {
                *field = None;
            }
        }
    }

    /// Whether the token is in normal form: no field is `Some("")`.
    ///
    /// ```
    /// use tokenstore::OAuthToken;
    /// assert!(OAuthToken::new().with_user_name("ana").is_normalized());
    /// assert!(!OAuthToken::new().with_user_name("").is_normalized());
    /// ```
    pub fn is_normalized(&self) -> bool {
        self.string_fields()
            .iter()
            .all(|f| f.as_deref() != Some(""))
    }

    /// Whether any of the access, refresh or grant token is present: the
    /// condition `save_token` requires of its input.
    ///
    /// ```
    /// use tokenstore::OAuthToken;
    /// assert!(OAuthToken::new().with_grant_token("1000.grant").has_any_token());
    /// assert!(!OAuthToken::new().with_user_name("ana").with_access_token("").has_any_token());
    /// ```
    pub fn has_any_token(&self) -> bool {
        present(&self.access_token).is_some()
            || present(&self.refresh_token).is_some()
            || present(&self.grant_token).is_some()
    }

    /// Overwrites every field of `self` with the fields present in `update`,
    /// keeping the rest: a merge never clears a field.
    ///
    /// ```
    /// use tokenstore::OAuthToken;
    /// let mut stored = OAuthToken::new().with_user_name("ana").with_refresh_token("r1");
    /// stored.merge_from(&OAuthToken::new().with_access_token("a2").with_refresh_token(""));
    /// assert_eq!(stored.refresh_token.as_deref(), Some("r1"));
    /// assert_eq!(stored.access_token.as_deref(), Some("a2"));
    /// ```
    pub fn merge_from(&mut self, update: &OAuthToken) {
        for (into, from) in self
            .string_fields_mut()
            .into_iter()
            .zip(update.string_fields())
        {
            if let Some(v) = present(from) {
                *into = Some(v.to_owned());
            }
        }
        if let Some(t) = update.expiry_time {
            self.expiry_time = Some(t);
        }
    }

    /// Whether the access token expires within `margin_ms` of `now_ms` (both in
    /// milliseconds since the Unix epoch), the test the Zoho SDKs apply before
    /// every call. A token without `expiry_time` is not considered expired.
    ///
    /// ```
    /// use tokenstore::{OAuthToken, DEFAULT_EXPIRY_MARGIN_MS};
    /// let token = OAuthToken::new().with_expiry_time(10_000);
    /// assert!(!token.is_expired(4_000, DEFAULT_EXPIRY_MARGIN_MS));
    /// assert!(token.is_expired(6_000, DEFAULT_EXPIRY_MARGIN_MS));
    /// ```
    pub fn is_expired(&self, now_ms: i64, margin_ms: i64) -> bool {
        self.expiry_time
            .is_some_and(|expiry| expiry.saturating_sub(now_ms) < margin_ms)
    }

    /// [`is_expired`](Self::is_expired) against the system clock with the
    /// SDK's 5-second margin.
    ///
    /// ```
    /// use tokenstore::{now_ms, OAuthToken};
    /// assert!(OAuthToken::new().with_expiry_time(now_ms() - 1).is_expired_now());
    /// assert!(!OAuthToken::new().with_expiry_time(now_ms() + 60_000).is_expired_now());
    /// ```
    pub fn is_expired_now(&self) -> bool {
        self.is_expired(now_ms(), DEFAULT_EXPIRY_MARGIN_MS)
    }

    /// The nine text fields, in declaration order (`expiry_time` left out).
    pub(crate) fn string_fields(&self) -> [&Option<String>; 9] {
        [
            &self.id,
            &self.user_name,
            &self.client_id,
            &self.client_secret,
            &self.refresh_token,
            &self.access_token,
            &self.grant_token,
            &self.redirect_url,
            &self.api_domain,
        ]
    }

    /// [`string_fields`](Self::string_fields), to change them.
    pub(crate) fn string_fields_mut(&mut self) -> [&mut Option<String>; 9] {
        [
            &mut self.id,
            &mut self.user_name,
            &mut self.client_id,
            &mut self.client_secret,
            &mut self.refresh_token,
            &mut self.access_token,
            &mut self.grant_token,
            &mut self.redirect_url,
            &mut self.api_domain,
        ]
    }
}

/// The current time in milliseconds since the Unix epoch, the unit of
/// [`OAuthToken::expiry_time`].
///
/// ```
/// // what the Zoho SDK stores after a token response with expires_in = 3600
/// let expiry_time = tokenstore::now_ms() + 3600 * 1000;
/// assert!(expiry_time > 1_700_000_000_000);
/// ```
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

struct Redacted<'a>(&'a Option<String>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(_) => f.write_str("Some([redacted])"),
            None => f.write_str("None"),
        }
    }
}

impl fmt::Debug for OAuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = f.debug_struct("OAuthToken");
        for field in Field::ALL {
            match field.slot {
                Slot::Text(at) if field.secret => {
                    shown.field(field.name, &Redacted(self.string_fields()[at]))
                }
                Slot::Text(at) => shown.field(field.name, self.string_fields()[at]),
                Slot::ExpiryTime => shown.field(field.name, &self.expiry_time),
            };
        }
        shown.finish()
    }
}

/// Wipes every field's bytes (then leaves them absent): for callers that
/// want a token's secrets gone from memory before it is dropped.
///
/// ```
/// use zeroize::Zeroize;
/// let mut token = tokenstore::OAuthToken::new().with_refresh_token("1000.r");
/// token.zeroize();
/// assert_eq!(token, tokenstore::OAuthToken::new());
/// ```
impl zeroize::Zeroize for OAuthToken {
    fn zeroize(&mut self) {
        for field in self.string_fields_mut() {
            field.zeroize();
        }
        self.expiry_time.zeroize();
    }
}

/// Where a [`Field`]'s value lives in the struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slot {
    /// At this place of [`OAuthToken::string_fields`].
    Text(usize),
    /// `expiry_time`.
    ExpiryTime,
}

/// One field of [`OAuthToken`]: its name, whether it holds a secret, and
/// its value as text. [`Field::ALL`] is the one list of the record's
/// fields that the redacting `Debug`, the command's CSV and JSON, and the
/// Python bindings follow; a field added to the record is added here.
///
/// ```
/// use tokenstore::{Field, OAuthToken};
///
/// let mut token = OAuthToken::new().with_user_name("ana");
/// let expiry = Field::named("expiry_time").unwrap();
/// expiry.set_text(&mut token, Some("1700000000000"))?;
/// assert_eq!(token.expiry_time, Some(1_700_000_000_000));
/// assert_eq!(Field::named("user_name").unwrap().text(&token).as_deref(), Some("ana"));
/// let secrets: Vec<&str> = Field::ALL.iter().filter(|f| f.is_secret()).map(|f| f.name()).collect();
/// assert_eq!(secrets, ["client_secret", "refresh_token", "access_token", "grant_token"]);
/// # Ok::<(), tokenstore::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Field {
    name: &'static str,
    secret: bool,
    slot: Slot,
}

impl Field {
    const fn string(name: &'static str, secret: bool, at: usize) -> Field {
        Field {
            name,
            secret,
            slot: Slot::Text(at),
        }
    }

    /// Every field of the record, in declaration order.
    pub const ALL: [Field; 10] = [
        Field::string("id", false, 0),
        Field::string("user_name", false, 1),
        Field::string("client_id", false, 2),
        Field::string("client_secret", true, 3),
        Field::string("refresh_token", true, 4),
        Field::string("access_token", true, 5),
        Field::string("grant_token", true, 6),
        Field {
            name: "expiry_time",
            secret: false,
            slot: Slot::ExpiryTime,
        },
        Field::string("redirect_url", false, 7),
        Field::string("api_domain", false, 8),
    ];

    /// The field called `name` (as in [`OAuthToken`]).
    pub fn named(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|field| field.name == name)
    }

    /// The field's name, as in [`OAuthToken`].
    pub fn name(self) -> &'static str {
        self.name
    }

    /// Whether the field holds a secret, never shown unless asked for.
    pub fn is_secret(self) -> bool {
        self.secret
    }

    /// The field's value as text (`expiry_time` in decimal milliseconds),
    /// `None` when absent or empty.
    pub fn text(self, token: &OAuthToken) -> Option<String> {
        match self.slot {
            Slot::Text(at) => present(token.string_fields()[at]).map(str::to_owned),
            Slot::ExpiryTime => token.expiry_time.map(|t| t.to_string()),
        }
    }

    /// Sets the field from text (`None` or empty: absent).
    ///
    /// # Errors
    /// [`Error::InvalidToken`](crate::Error::InvalidToken) when
    /// `expiry_time` is not a whole number of milliseconds.
    pub fn set_text(self, token: &mut OAuthToken, value: Option<&str>) -> crate::Result<()> {
        let value = value.filter(|v| !v.is_empty());
        match self.slot {
            Slot::Text(at) => *token.string_fields_mut()[at] = value.map(str::to_owned),
            Slot::ExpiryTime => {
                token.expiry_time = value
                    .map(|v| {
                        v.trim().parse::<i64>().map_err(|_| {
                            crate::Error::invalid(
                                "expiry_time must be a whole number of milliseconds since the Unix epoch",
                            )
                        })
                    })
                    .transpose()?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}
