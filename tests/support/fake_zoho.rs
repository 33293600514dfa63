//! A fake Zoho accounts server on 127.0.0.1, for the tests, the README and
//! the demo (`cargo run --example fake_zoho`). It speaks the token endpoint
//! (`POST /oauth/v2/token`, grant types `authorization_code` and
//! `refresh_token`) and the revoke endpoint (`POST
//! /oauth/v2/token/revoke`, `token` in the form or the query), counts every request, and can be told
//! to misbehave. It stops when dropped.
//!
//! Every refresh token it issued (or any other one) is accepted until it is
//! revoked or rotated away; then it answers `invalid_code`, as Zoho does.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How the server answers token requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Issues tokens (`expires_in` in seconds).
    Normal,
    /// Issues tokens with Zoho's legacy answer: `expires_in` in milliseconds
    /// beside `expires_in_sec`.
    Legacy,
    /// `{"error":"invalid_code"}`: the grant code or refresh token refused.
    Refuse,
    /// `{"error":"invalid_client"}`.
    InvalidClient,
    /// HTTP 400 `{"error":"Access Denied", ...too many requests...}`.
    RateLimit,
    /// HTTP 200 with an HTML page.
    Malformed,
    /// Accepts the request and never answers.
    Hang,
}

impl std::str::FromStr for Behaviour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "normal" => Behaviour::Normal,
            "legacy" => Behaviour::Legacy,
            "refuse" => Behaviour::Refuse,
            "invalid-client" => Behaviour::InvalidClient,
            "rate-limit" => Behaviour::RateLimit,
            "malformed" => Behaviour::Malformed,
            "hang" => Behaviour::Hang,
            other => return Err(format!("unknown behaviour {other:?} (normal, legacy, refuse, invalid-client, rate-limit, malformed, hang)")),
        })
    }
}

struct State {
    behaviour: Mutex<Behaviour>,
    lifetime_secs: AtomicI64,
    rotate: AtomicBool,
    delay_ms: AtomicU64,
    api_domain: Mutex<String>,
    issued: AtomicU64,
    logins: AtomicUsize,
    refreshes: AtomicUsize,
    revokes: AtomicUsize,
    /// Requests that carried a secret in the URL's query string.
    secrets_in_urls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Refresh tokens revoked or rotated away.
    dead: Mutex<HashSet<String>>,
    /// Requests held open by `Hang`, answered never (dropped at shutdown).
    held: Mutex<Vec<tiny_http::Request>>,
    log: AtomicBool,
}

/// A running fake accounts server.
pub struct FakeZoho {
    url: String,
    state: Arc<State>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl FakeZoho {
    /// Starts a server on 127.0.0.1 on a free port.
    pub fn start() -> FakeZoho {
        FakeZoho::start_on(0).expect("bind 127.0.0.1")
    }

    /// Starts a server on 127.0.0.1:`port` (0: any free port).
    pub fn start_on(port: u16) -> std::io::Result<FakeZoho> {
        let server = tiny_http::Server::http(("127.0.0.1", port))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let server = Arc::new(server);
        let port = server.server_addr().to_ip().expect("an IP listener").port();
        let state = Arc::new(State {
            behaviour: Mutex::new(Behaviour::Normal),
            lifetime_secs: AtomicI64::new(3600),
            rotate: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            api_domain: Mutex::new("https://www.zohoapis.com".to_owned()),
            issued: AtomicU64::new(0),
            logins: AtomicUsize::new(0),
            refreshes: AtomicUsize::new(0),
            revokes: AtomicUsize::new(0),
            secrets_in_urls: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            dead: Mutex::new(HashSet::new()),
            held: Mutex::new(Vec::new()),
            log: AtomicBool::new(false),
        });
        let thread = {
            let server = Arc::clone(&server);
            let state = Arc::clone(&state);
            std::thread::spawn(move || {
                // Ends when `unblock` is called on drop.
                for request in server.incoming_requests() {
                    let state = Arc::clone(&state);
                    std::thread::spawn(move || {
                        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
                        answer(&state, request);
                        state.in_flight.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            })
        };
        Ok(FakeZoho {
            url: format!("http://127.0.0.1:{port}"),
            state,
            server,
            thread: Some(thread),
        })
    }

    /// The base URL to use as the accounts URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sets how token requests are answered from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().unwrap() = behaviour;
    }

    /// Sets the lifetime of the access tokens it issues (default 3600 s).
    pub fn set_lifetime_secs(&self, secs: i64) {
        self.state.lifetime_secs.store(secs, Ordering::SeqCst);
    }

    /// Issues a new refresh token with every refresh, killing the old one.
    pub fn set_rotate(&self, rotate: bool) {
        self.state.rotate.store(rotate, Ordering::SeqCst);
    }

    /// Waits this long before answering (to make concurrent callers overlap).
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// The `api_domain` it returns (default `https://www.zohoapis.com`).
    pub fn set_api_domain(&self, api_domain: &str) {
        *self.state.api_domain.lock().unwrap() = api_domain.to_owned();
    }

    /// Prints one line per request on stderr (no secrets).
    pub fn set_log(&self, log: bool) {
        self.state.log.store(log, Ordering::SeqCst);
    }

    /// Grant-code exchanges seen.
    pub fn logins(&self) -> usize {
        self.state.logins.load(Ordering::SeqCst)
    }

    /// Refresh requests seen.
    pub fn refreshes(&self) -> usize {
        self.state.refreshes.load(Ordering::SeqCst)
    }

    /// Revoke requests seen.
    pub fn revokes(&self) -> usize {
        self.state.revokes.load(Ordering::SeqCst)
    }

    /// Requests whose URL carried a token, code or secret in its query
    /// string (which servers, proxies and HTTP clients log).
    pub fn secrets_in_urls(&self) -> usize {
        self.state.secrets_in_urls.load(Ordering::SeqCst)
    }

    /// The most requests it was answering at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Every request seen.
    pub fn requests(&self) -> usize {
        self.logins() + self.refreshes() + self.revokes()
    }
}

impl Drop for FakeZoho {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.state.held.lock().unwrap().clear();
    }
}

fn answer(state: &State, mut request: tiny_http::Request) {
    let mut body = String::new();
    let _ = std::io::Read::read_to_string(request.as_reader(), &mut body);
    let url = request.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    // Empty counts as absent, as at Zoho.
    let field = |name: &str| {
        form.iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let secret_in_url = form_urlencoded::parse(query.as_bytes()).any(|(k, _)| {
        matches!(
            &*k,
            "token" | "refresh_token" | "code" | "client_secret" | "access_token"
        )
    });
    if secret_in_url {
        state.secrets_in_urls.fetch_add(1, Ordering::SeqCst);
    }
    let grant_type = field("grant_type").unwrap_or_default();
    let kind = match (request.method(), path) {
        (tiny_http::Method::Post, "/oauth/v2/token/revoke") => "revoke",
        (tiny_http::Method::Post, "/oauth/v2/token") if grant_type == "authorization_code" => {
            "login"
        }
        (tiny_http::Method::Post, "/oauth/v2/token") if grant_type == "refresh_token" => "refresh",
        _ => "other",
    };
    match kind {
        "login" => state.logins.fetch_add(1, Ordering::SeqCst),
        "refresh" => state.refreshes.fetch_add(1, Ordering::SeqCst),
        "revoke" => state.revokes.fetch_add(1, Ordering::SeqCst),
        _ => 0,
    };
    let behaviour = *state.behaviour.lock().unwrap();
    if state.log.load(Ordering::SeqCst) {
        eprintln!("fake_zoho: {kind} request ({behaviour:?})");
    }
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        std::thread::sleep(Duration::from_millis(delay));
    }
    if kind == "other" {
        return respond(request, 404, r#"{"error":"not_found"}"#);
    }
    if behaviour == Behaviour::Hang {
        state.held.lock().unwrap().push(request);
        return;
    }
    if kind == "revoke" {
        // The Zoho SDKs send the token in the form, Zoho's docs in the query.
        let token = field("token").or_else(|| {
            form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
        });
        return match (behaviour, token) {
            (Behaviour::Normal | Behaviour::Legacy, Some(token)) => {
                state.dead.lock().unwrap().insert(token);
                respond(request, 200, r#"{"status":"success"}"#)
            }
            _ => error_answer(request, behaviour),
        };
    }
    match behaviour {
        Behaviour::Normal | Behaviour::Legacy => {}
        other => return error_answer(request, other),
    }
    if field("client_id").is_none() || field("client_secret").is_none() {
        return respond(request, 200, r#"{"error":"invalid_client"}"#);
    }
    if kind == "login" && field("code").is_none() {
        return respond(request, 200, r#"{"error":"invalid_code"}"#);
    }
    let refresh_token = field("refresh_token");
    if kind == "refresh" {
        let known = refresh_token
            .as_ref()
            .is_some_and(|t| !state.dead.lock().unwrap().contains(t));
        if !known {
            return respond(request, 200, r#"{"error":"invalid_code"}"#);
        }
    }
    let n = state.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let unique = format!(
        "{}{:x}{n}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let lifetime = state.lifetime_secs.load(Ordering::SeqCst);
    let mut answer = serde_json::json!({
        "access_token": format!("1000.fakeaccess.{unique}"),
        "api_domain": state.api_domain.lock().unwrap().clone(),
        "token_type": "Bearer",
    });
    if behaviour == Behaviour::Legacy {
        answer["expires_in_sec"] = lifetime.into();
        answer["expires_in"] = (lifetime * 1000).into();
    } else {
        answer["expires_in"] = lifetime.into();
    }
    let rotate = state.rotate.load(Ordering::SeqCst);
    if kind == "login" || rotate {
        answer["refresh_token"] = format!("1000.fakerefresh.{unique}").into();
        if let (true, Some(old)) = (kind == "refresh", refresh_token) {
            state.dead.lock().unwrap().insert(old);
        }
    }
    respond(request, 200, &answer.to_string())
}

fn error_answer(request: tiny_http::Request, behaviour: Behaviour) {
    match behaviour {
        Behaviour::Refuse => respond(request, 200, r#"{"error":"invalid_code"}"#),
        Behaviour::InvalidClient => respond(request, 200, r#"{"error":"invalid_client"}"#),
        Behaviour::RateLimit => respond(
            request,
            400,
            r#"{"error_description":"You have made too many requests continuously. Please try again after some time.","error":"Access Denied","status":"failure"}"#,
        ),
        _ => respond(
            request,
            200,
            "<html><body>Service Unavailable</body></html>",
        ),
    }
}

fn respond(request: tiny_http::Request, status: u16, body: &str) {
    let header = tiny_http::Header::from_bytes("Content-Type", "application/json;charset=UTF-8")
        .expect("a valid header");
    let response = tiny_http::Response::from_string(body)
        .with_status_code(status)
        .with_header(header);
    let _ = request.respond(response);
}
