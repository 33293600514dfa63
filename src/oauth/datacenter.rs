//! Zoho's data centers: each has its own accounts server, and a record's
//! `api_domain` tells which one issued its tokens.
//!
//! Hosts as Zoho documents them (checked November 2026):
//! <https://www.zoho.com/accounts/protocol/oauth/multi-dc.html> (US, EU, IN,
//! AU, JP, CA, SA), <https://www.zoho.com/crm/developer/docs/api/v8/multi-dc.html>
//! (CN), and the accounts/API domain pairs of
//! <https://www.bigin.com/developer/docs/apis/multi-dc.html>.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A Zoho data center.
///
/// ```
/// use tokenstore::oauth::DataCenter;
///
/// let eu: DataCenter = "eu".parse()?;
/// assert_eq!(eu.accounts_url(), "https://accounts.zoho.eu");
/// assert_eq!(DataCenter::from_api_domain("https://www.zohoapis.eu"), Some(eu));
/// # Ok::<(), tokenstore::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataCenter {
    /// United States (`.com`), the default.
    Us,
    /// Europe (`.eu`).
    Eu,
    /// India (`.in`).
    In,
    /// Australia (`.com.au`).
    Au,
    /// Japan (`.jp`).
    Jp,
    /// Canada (`zohocloud.ca`).
    Ca,
    /// China (`.com.cn`).
    Cn,
    /// Saudi Arabia (`.sa`).
    Sa,
}

impl DataCenter {
    /// Every data center, in the order of [`DataCenter::code`]s shown to users.
    pub const ALL: [DataCenter; 8] = [
        DataCenter::Us,
        DataCenter::Eu,
        DataCenter::In,
        DataCenter::Au,
        DataCenter::Jp,
        DataCenter::Ca,
        DataCenter::Cn,
        DataCenter::Sa,
    ];

    /// The short code: `us`, `eu`, `in`, `au`, `jp`, `ca`, `cn`, `sa`.
    ///
    /// ```
    /// assert_eq!(tokenstore::oauth::DataCenter::Ca.code(), "ca");
    /// ```
    pub fn code(self) -> &'static str {
        match self {
            DataCenter::Us => "us",
            DataCenter::Eu => "eu",
            DataCenter::In => "in",
            DataCenter::Au => "au",
            DataCenter::Jp => "jp",
            DataCenter::Ca => "ca",
            DataCenter::Cn => "cn",
            DataCenter::Sa => "sa",
        }
    }

    /// The base URL of the data center's accounts server.
    ///
    /// ```
    /// use tokenstore::oauth::DataCenter;
    /// assert_eq!(DataCenter::Ca.accounts_url(), "https://accounts.zohocloud.ca");
    /// ```
    pub fn accounts_url(self) -> &'static str {
        match self {
            DataCenter::Us => "https://accounts.zoho.com",
            DataCenter::Eu => "https://accounts.zoho.eu",
            DataCenter::In => "https://accounts.zoho.in",
            DataCenter::Au => "https://accounts.zoho.com.au",
            DataCenter::Jp => "https://accounts.zoho.jp",
            DataCenter::Ca => "https://accounts.zohocloud.ca",
            DataCenter::Cn => "https://accounts.zoho.com.cn",
            DataCenter::Sa => "https://accounts.zoho.sa",
        }
    }

    /// The data center's API domain, as the token endpoint returns it in
    /// `api_domain`.
    ///
    /// ```
    /// use tokenstore::oauth::DataCenter;
    /// assert_eq!(DataCenter::Au.api_domain(), "https://www.zohoapis.com.au");
    /// ```
    pub fn api_domain(self) -> &'static str {
        match self {
            DataCenter::Us => "https://www.zohoapis.com",
            DataCenter::Eu => "https://www.zohoapis.eu",
            DataCenter::In => "https://www.zohoapis.in",
            DataCenter::Au => "https://www.zohoapis.com.au",
            DataCenter::Jp => "https://www.zohoapis.jp",
            DataCenter::Ca => "https://www.zohoapis.ca",
            DataCenter::Cn => "https://www.zohoapis.com.cn",
            DataCenter::Sa => "https://www.zohoapis.sa",
        }
    }

    /// The data center an `api_domain` belongs to: its host is
    /// `zohoapis.<tld>` or a subdomain of it (`www.`, `sandbox.`,
    /// `developer.`), with or without scheme, port or path. `None` for
    /// anything else (a proxy, a test server).
    ///
    /// ```
    /// use tokenstore::oauth::DataCenter;
    /// assert_eq!(DataCenter::from_api_domain("https://www.zohoapis.com.cn"), Some(DataCenter::Cn));
    /// assert_eq!(DataCenter::from_api_domain("https://sandbox.zohoapis.eu/"), Some(DataCenter::Eu));
    /// assert_eq!(DataCenter::from_api_domain("https://www.zohoapis.com"), Some(DataCenter::Us));
    /// assert_eq!(DataCenter::from_api_domain("http://127.0.0.1:8765"), None);
    /// assert_eq!(DataCenter::from_api_domain("https://zohoapis.eu.evil.example"), None);
    /// ```
    pub fn from_api_domain(api_domain: &str) -> Option<DataCenter> {
        let rest = api_domain
            .split_once("://")
            .map_or(api_domain, |(_, rest)| rest);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => authority,
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        DataCenter::ALL.into_iter().find(|dc| {
            let domain = dc.api_domain().trim_start_matches("https://www.");
            host == domain || host.ends_with(&format!(".{domain}"))
        })
    }
}

impl fmt::Display for DataCenter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for DataCenter {
    type Err = Error;

    /// Parses a code (`us`, `EU`, ...), case-insensitively.
    fn from_str(code: &str) -> Result<Self> {
        DataCenter::ALL
            .into_iter()
            .find(|dc| dc.code().eq_ignore_ascii_case(code.trim()))
            .ok_or_else(|| Error::InvalidAccountsUrl {
                reason: format!(
                    "unknown data center {code:?} (known: us, eu, in, au, jp, ca, cn, sa)"
                ),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_data_center_maps_its_api_domain_back_to_itself() {
        for dc in DataCenter::ALL {
            assert_eq!(DataCenter::from_api_domain(dc.api_domain()), Some(dc));
            assert_eq!(dc.code().parse::<DataCenter>().unwrap(), dc);
        }
    }

    #[test]
    fn longer_suffixes_are_not_mistaken_for_shorter_ones() {
        // zohoapis.com.au and zohoapis.com.cn end neither with ".zohoapis.com".
        assert_eq!(
            DataCenter::from_api_domain("www.zohoapis.com.au:443"),
            Some(DataCenter::Au)
        );
        assert_eq!(DataCenter::from_api_domain("notzohoapis.com"), None);
        assert_eq!(DataCenter::from_api_domain(""), None);
    }
}
