//! `login`, `token`, `refresh`, `revoke`: the commands that talk to Zoho's
//! accounts server, through [`tokenstore::oauth::OAuthClient`] over any
//! backend. Only `token` prints a secret: the access token, its one job.

use std::sync::Arc;
use std::time::Duration;

use clap::{ArgGroup, Args};
use serde_json::json;
use tokenstore::oauth::{AccessToken, Config, DataCenter, Login, OAuthClient, DEFAULT_TIMEOUT};
use tokenstore::{now_ms, OAuthToken, TokenStore};

use crate::{read_secret_line, render, CliError, CliResult, Output};

/// The store, whatever the backend.
pub type Store = Arc<dyn TokenStore + Send + Sync>;

/// Where the accounts server is: `--accounts-url`, else
/// `TOKENSTORE_ACCOUNTS_URL`, else `--dc`, else the record's `api_domain`,
/// else US.
#[derive(Args)]
pub struct ZohoArgs {
    /// The accounts server's base URL, e.g. https://accounts.zoho.com (a
    /// proxy, a test server).
    #[arg(long, env = "TOKENSTORE_ACCOUNTS_URL", value_name = "URL")]
    accounts_url: Option<String>,
    /// The Zoho data center: us, eu, in, au, jp, ca, cn, sa.
    #[arg(long, value_name = "DC")]
    dc: Option<String>,
    /// Give up on the accounts server after SECS (connect and answer).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT.as_secs_f64())]
    timeout: f64,
}

/// One record: by user name or by id.
#[derive(Args)]
#[command(group(ArgGroup::new("record").required(true).args(["user", "id"])))]
pub struct RecordArgs {
    /// The record's user name.
    #[arg(long)]
    user: Option<String>,
    /// The record's id.
    #[arg(long)]
    id: Option<String>,
}

#[derive(Args)]
pub struct LoginArgs {
    /// The user name to save the record under.
    #[arg(long)]
    user: String,
    /// The OAuth client id.
    #[arg(long)]
    client_id: String,
    /// The OAuth client secret, or `-` to read it from stdin.
    #[arg(long)]
    client_secret: String,
    /// The grant code from Zoho's consent page (or the API console's self
    /// client), or `-` to read it from stdin.
    #[arg(long)]
    grant_token: String,
    /// The redirect URL registered for the client.
    #[arg(long)]
    redirect_url: Option<String>,
    #[command(flatten)]
    zoho: ZohoArgs,
}

#[derive(Args)]
pub struct TokenArgs {
    #[command(flatten)]
    record: RecordArgs,
    /// Refresh first unless the token stays valid this long (default: the
    /// Zoho SDK's 5 s).
    #[arg(long, value_name = "SECS")]
    min_valid: Option<u64>,
    #[command(flatten)]
    zoho: ZohoArgs,
}

#[derive(Args)]
pub struct RefreshArgs {
    #[command(flatten)]
    record: RecordArgs,
    #[command(flatten)]
    zoho: ZohoArgs,
}

#[derive(Args)]
pub struct RevokeArgs {
    /// The record's id.
    id: String,
    #[command(flatten)]
    zoho: ZohoArgs,
}

fn client(store: Store, zoho: &ZohoArgs) -> CliResult<OAuthClient> {
    let timeout = Duration::try_from_secs_f64(zoho.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| CliError::input("--timeout must be a positive number of seconds"))?;
    let mut config = Config::default()
        .timeout(timeout)
        .connect_timeout(timeout.min(tokenstore::oauth::DEFAULT_CONNECT_TIMEOUT));
    match (
        zoho.accounts_url.as_deref().filter(|u| !u.is_empty()),
        &zoho.dc,
    ) {
        (Some(url), _) => config = config.accounts_url(url),
        (None, Some(dc)) => config = config.data_center(dc.parse::<DataCenter>()?),
        (None, None) => {}
    }
    Ok(OAuthClient::with_config(store, config)?)
}

fn query(record: &RecordArgs) -> OAuthToken {
    match (&record.user, &record.id) {
        (Some(user), _) => OAuthToken::new().with_user_name(user.as_str()),
        (None, Some(id)) => OAuthToken::new().with_id(id.as_str()),
        (None, None) => OAuthToken::new(),
    }
}

fn token_facts(token: &AccessToken) -> serde_json::Value {
    json!({
        "id": token.id(),
        "expiry_time": token.expiry_time(),
        "expires_in_secs": token.expiry_time().map(|e| (e - now_ms()) / 1000),
        "api_domain": token.api_domain(),
    })
}

pub fn login(store: Store, args: &LoginArgs, out: Output) -> CliResult {
    let mut stdin = std::io::stdin().lock();
    let mut secret = |value: &str, name: &str| -> CliResult<String> {
        match value {
            "-" => read_secret_line(&mut stdin, name),
            other => Ok(other.to_owned()),
        }
    };
    // Read in the documented order: client secret, then grant token.
    let client_secret = secret(&args.client_secret, "--client-secret")?;
    let grant = secret(&args.grant_token, "--grant-token")?;
    let mut login = Login::new(&args.user, &args.client_id, client_secret, grant);
    if let Some(url) = &args.redirect_url {
        login = login.redirect_url(url);
    }
    let record = client(store, &args.zoho)?.login(&login)?;
    let id = record.id.clone().unwrap_or_default();
    let now = now_ms();
    out.print(
        json!({
            "id": id,
            "user_name": record.user_name,
            "expiry_time": record.expiry_time,
            "api_domain": record.api_domain,
            "has_refresh_token": record.refresh_token.is_some(),
        }),
        || {
            format!(
                "logged in {}: record {id}, access token expires {}{}",
                args.user,
                render::expiry_words(record.expiry_time, now),
                if record.refresh_token.is_some() {
                    ""
                } else {
                    " (no refresh token: log in with access_type=offline to refresh later)"
                }
            )
        },
    );
    Ok(())
}

pub fn token(store: Store, args: &TokenArgs, out: Output) -> CliResult {
    let client = client(store, &args.zoho)?;
    let query = query(&args.record);
    let token = match args.min_valid {
        Some(secs) => client.access_token_valid_for(&query, Duration::from_secs(secs)),
        None => client.access_token(&query),
    }?;
    if out.json {
        let mut value = token_facts(&token);
        value["access_token"] = json!(token.secret());
        println!("{value:#}");
    } else {
        // Printing the access token is this command's one job.
        println!("{}", token.secret());
    }
    Ok(())
}

pub fn refresh(store: Store, args: &RefreshArgs, out: Output) -> CliResult {
    let token = client(store, &args.zoho)?.refresh(&query(&args.record))?;
    out.print(token_facts(&token), || {
        format!(
            "refreshed record {}: access token expires {}",
            token.id(),
            render::expiry_words(token.expiry_time(), now_ms())
        )
    });
    Ok(())
}

pub fn revoke(store: Store, args: &RevokeArgs, out: Output) -> CliResult {
    let asked = client(store, &args.zoho)?.revoke(&args.id)?;
    out.print(json!({ "deleted": args.id, "revoked": asked }), || {
        if asked {
            format!(
                "revoked the refresh token of record {} and deleted it",
                args.id
            )
        } else {
            format!(
                "deleted record {} (it had no refresh token to revoke)",
                args.id
            )
        }
    });
    Ok(())
}
