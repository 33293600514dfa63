//! TLS to PostgreSQL as libpq's connection strings ask for it: every
//! sslmode against the right CA, an unrelated CA, a wrong host name and a
//! server without TLS; client certificates; the `PG*` variables; channel
//! binding; and the one-line errors, fast and without the password.
//!
//! Needs the two servers tests/postgres/tls.sh starts (run it through
//! tests/postgres/run.sh): one that takes only TLS on 127.0.0.1 with a
//! certificate for `localhost` alone, and the plaintext one. Without them
//! every test prints SKIPPED and passes (fails under `CI=true`).

use std::process::Command;
use std::time::{Duration, Instant};

use tokenstore::{Error, OAuthToken, PostgresStore, TokenStore};

/// The TLS server and the files tls.sh made.
struct Servers {
    certs: String,
    port: String,
    password: String,
    /// The plaintext-only server's admin URL (trust authentication).
    plain: String,
    /// The TLS server's Unix socket, as a URL without TLS parameters.
    socket: String,
}

fn servers(test: &str) -> Option<Servers> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (
        var("TOKENSTORE_TEST_PG_TLS_DIR"),
        var("TOKENSTORE_TEST_PG_TLS_PORT"),
        var("TOKENSTORE_TEST_PG_TLS_PASSWORD"),
        var("TOKENSTORE_TEST_PG_PLAIN_URL"),
        var("TOKENSTORE_TEST_PG_ADMIN_URL"),
    ) {
        (Some(certs), Some(port), Some(password), Some(plain), Some(socket)) => Some(Servers {
            certs,
            port,
            password,
            plain,
            socket,
        }),
        _ => {
            let message = format!(
                "SKIPPED {test}: no TLS PostgreSQL server (TOKENSTORE_TEST_PG_TLS_DIR is not set); \
                 run tests/postgres/run.sh"
            );
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{message} (CI=true: PostgreSQL tests must run)");
            }
            eprintln!("{message}");
            None
        }
    }
}

impl Servers {
    /// The TLS server as `postgres` with its password, at `host`.
    fn url(&self, host: &str, params: &str) -> String {
        format!(
            "postgres://postgres:{}@{host}:{}/postgres?{params}",
            self.password, self.port
        )
    }

    fn file(&self, name: &str) -> String {
        format!("{}/{name}", self.certs)
    }

    /// `sslmode=MODE&sslrootcert=CA` for the CA file `ca`.
    fn mode(&self, mode: &str, ca: &str) -> String {
        format!("sslmode={mode}&sslrootcert={}", self.file(ca))
    }

    /// The plaintext server with `params`.
    fn plain(&self, params: &str) -> String {
        format!("{}?{params}", self.plain)
    }
}

/// Connects with a short pool wait, so that nothing hides behind the pool.
fn connect(url: &str) -> tokenstore::Result<PostgresStore> {
    PostgresStore::connect_with(
        url,
        tokenstore::PostgresOptions::default()
            .pool_size(2)
            .pool_wait(Duration::from_secs(2)),
    )
}

/// Saves and finds a token of its own: the connection is usable.
fn round_trip(store: &PostgresStore, user: &str) {
    let mut token = OAuthToken::new()
        .with_user_name(user)
        .with_refresh_token(format!("1000.refresh-{user}"));
    store.save_token(&mut token).expect("save over TLS");
    let found = store
        .find_token(&OAuthToken::new().with_user_name(user))
        .expect("find over TLS");
    assert_eq!(found.and_then(|t| t.refresh_token), token.refresh_token);
}

/// Connects to `url`, expects [`Error::Tls`] within the connect timeout
/// (5 s), and returns its message, checked for the password.
fn tls_error(url: &str, password: &str) -> String {
    let started = Instant::now();
    let outcome = connect(url);
    let took = started.elapsed();
    let message = match outcome {
        Err(e @ Error::Tls { .. }) => e.to_string(),
        Err(other) => panic!("{url}: expected Error::Tls, got {other:?}"),
        Ok(_) => panic!("{url}: expected Error::Tls, but it connected"),
    };
    assert!(
        took < Duration::from_secs(5),
        "{url}: the error took {took:?}"
    );
    assert!(!message.contains(password), "the password in: {message}");
    assert!(!message.contains('\n'), "more than one line: {message}");
    assert!(
        !message.contains("timed out waiting"),
        "the pool's time-out instead of the cause: {message}"
    );
    println!("refused in {took:?}: {message}");
    message
}

fn assert_contains(message: &str, wanted: &str) {
    assert!(
        message.contains(wanted),
        "expected {wanted:?} in: {message}"
    );
}

#[test]
fn every_mode_connects_with_the_right_ca() {
    let Some(s) = servers("every_mode_connects_with_the_right_ca") else {
        return;
    };
    for mode in ["allow", "prefer", "require", "verify-ca", "verify-full"] {
        let store = connect(&s.url("localhost", &s.mode(mode, "ca.pem")))
            .unwrap_or_else(|e| panic!("sslmode={mode}: {e}"));
        round_trip(&store, &format!("right-ca-{mode}"));
        let shown = format!("{store:?} {}", store.target());
        assert!(!shown.contains(&s.password), "the password in {shown}");
    }
    // Without a root file nothing is checked: encrypted, not verified.
    for mode in ["allow", "prefer", "require"] {
        let store = connect(&s.url("127.0.0.1", &format!("sslmode={mode}")))
            .unwrap_or_else(|e| panic!("sslmode={mode} without a root file: {e}"));
        round_trip(&store, &format!("no-root-{mode}"));
    }
}

#[test]
fn an_unrelated_ca_is_refused_by_every_mode_that_has_a_root_file() {
    let Some(s) = servers("an_unrelated_ca_is_refused_by_every_mode_that_has_a_root_file") else {
        return;
    };
    for mode in ["allow", "prefer", "require", "verify-ca", "verify-full"] {
        let message = tls_error(
            &s.url("localhost", &s.mode(mode, "wrong-ca.pem")),
            &s.password,
        );
        assert_contains(&message, "not signed by a CA in sslrootcert=");
        assert_contains(&message, "wrong-ca.pem (UnknownIssuer)");
        println!("sslmode={mode} against an unrelated CA: {message}");
    }
    let message = tls_error(
        &s.url("localhost", &s.mode("disable", "wrong-ca.pem")),
        &s.password,
    );
    assert_contains(&message, "accepts only TLS connections");
    assert_contains(&message, "sslmode=disable made none");
    println!("sslmode=disable against an unrelated CA: {message}");
}

#[test]
fn a_host_name_the_certificate_does_not_name_fails_verify_full_only() {
    let Some(s) = servers("a_host_name_the_certificate_does_not_name_fails_verify_full_only")
    else {
        return;
    };
    // The certificate names DNS:localhost only.
    let message = tls_error(
        &s.url("127.0.0.1", &s.mode("verify-full", "ca.pem")),
        &s.password,
    );
    assert_contains(&message, "does not name the host connected to");
    assert_contains(&message, "127.0.0.1");
    for mode in ["require", "verify-ca"] {
        let store = connect(&s.url("127.0.0.1", &s.mode(mode, "ca.pem")))
            .unwrap_or_else(|e| panic!("sslmode={mode} at 127.0.0.1: {e}"));
        round_trip(&store, &format!("chain-only-{mode}"));
    }
}

#[test]
fn a_server_without_tls() {
    let Some(s) = servers("a_server_without_tls") else {
        return;
    };
    for params in [
        "sslmode=require".to_owned(),
        s.mode("verify-ca", "ca.pem"),
        s.mode("verify-full", "ca.pem"),
    ] {
        let message = tls_error(&s.plain(&params), &s.password);
        assert_contains(&message, "the server does not support TLS, and sslmode=");
    }
    for mode in ["disable", "allow", "prefer"] {
        let store = connect(&s.plain(&format!("sslmode={mode}")))
            .unwrap_or_else(|e| panic!("sslmode={mode} without TLS: {e}"));
        round_trip(&store, &format!("plain-{mode}"));
    }
}

#[test]
fn a_unix_socket_never_uses_tls() {
    let Some(s) = servers("a_unix_socket_never_uses_tls") else {
        return;
    };
    let store = connect(&format!("{}?sslmode=require", s.socket)).expect("require on a socket");
    round_trip(&store, "socket-require");
}

#[test]
fn client_certificates() {
    let Some(s) = servers("client_certificates") else {
        return;
    };
    let cert_url = |cert: &str| {
        format!(
            "postgres://certuser@localhost:{}/postgres?{}&sslcert={}&sslkey={}",
            s.port,
            s.mode("verify-full", "ca.pem"),
            s.file(&format!("{cert}.crt")),
            s.file(&format!("{cert}.key")),
        )
    };
    let store = connect(&cert_url("client")).expect("the CA's client certificate");
    round_trip(&store, "client-cert");

    let message = tls_error(&cert_url("wrong-client"), &s.password);
    assert_contains(
        &message,
        "the server refused the client certificate sslcert=",
    );
    assert_contains(&message, "wrong-client.crt");

    let message = tls_error(
        &format!(
            "postgres://certuser@localhost:{}/postgres?{}",
            s.port,
            s.mode("verify-full", "ca.pem")
        ),
        &s.password,
    );
    assert_contains(&message, "the server refused the client certificate");
    assert_contains(&message, "requires a valid client certificate");
}

#[test]
fn channel_binding_is_used_over_tls() {
    let Some(s) = servers("channel_binding_is_used_over_tls") else {
        return;
    };
    // scram-sha-256 over TLS: SCRAM-SHA-256-PLUS, or no connection.
    for mode in ["require", "verify-full"] {
        let url = s.url(
            "localhost",
            &format!("{}&channel_binding=require", s.mode(mode, "ca.pem")),
        );
        let store =
            connect(&url).unwrap_or_else(|e| panic!("{mode}, channel_binding=require: {e}"));
        round_trip(&store, &format!("bound-{mode}"));
    }
    // Without TLS there is nothing to bind to.
    let message = tls_error(
        &s.plain("sslmode=prefer&channel_binding=require"),
        &s.password,
    );
    assert_contains(
        &message,
        "channel_binding=require, but the server did not use channel binding",
    );
}

/// What [`env_child`] printed: `OK` or the error.
fn in_child(url: &str, env: &[(&str, String)]) -> String {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--ignored",
            "--exact",
            "env_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TOKENSTORE_TLS_CHILD_URL", url);
    for name in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGSSLCERT",
        "PGSSLKEY",
        "PGCHANNELBINDING",
        "PGCONNECT_TIMEOUT",
        "PGAPPNAME",
    ] {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("run the child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|line| line.split_once("@@ ").map(|(_, outcome)| outcome))
        .unwrap_or_else(|| {
            panic!(
                "the child printed no outcome: {stdout} {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
        .to_owned()
}

/// Runs in a child process of the test below (the variables are its own).
#[test]
#[ignore = "a child process of pg_variables_are_read_and_the_url_wins, started by it"]
fn env_child() {
    let Ok(url) = std::env::var("TOKENSTORE_TLS_CHILD_URL") else {
        return;
    };
    match connect(&url) {
        Ok(store) => {
            round_trip(&store, "env-child");
            println!("@@ OK");
        }
        Err(e) => println!("@@ {e}"),
    }
}

#[test]
fn pg_variables_are_read_and_the_url_wins() {
    let Some(s) = servers("pg_variables_are_read_and_the_url_wins") else {
        return;
    };
    let right = s.file("ca.pem");
    let wrong = s.file("wrong-ca.pem");
    let bare = s.url("localhost", "");
    let vars = |mode: &str, ca: &str| {
        vec![
            ("PGSSLMODE", mode.to_owned()),
            ("PGSSLROOTCERT", ca.to_owned()),
        ]
    };

    assert_eq!(in_child(&bare, &vars("verify-full", &right)), "OK");
    let refused = in_child(&bare, &vars("verify-full", &wrong));
    assert_contains(&refused, "wrong-ca.pem (UnknownIssuer)");
    let refused = in_child(&s.url("127.0.0.1", ""), &vars("verify-full", &right));
    assert_contains(&refused, "does not name the host");

    // The URL's parameters win over the variables.
    let url_ca = s.url("localhost", &format!("sslrootcert={right}"));
    assert_eq!(in_child(&url_ca, &vars("verify-full", &wrong)), "OK");
    let url_mode = s.url("localhost", "sslmode=disable");
    assert_contains(
        &in_child(&url_mode, &vars("verify-full", &right)),
        "sslmode=disable made none",
    );

    // The other defaults: the host, port, user and password from PG*.
    let env = [
        ("PGHOST", "localhost".to_owned()),
        ("PGPORT", s.port.clone()),
        ("PGUSER", "postgres".to_owned()),
        ("PGPASSWORD", s.password.clone()),
        ("PGDATABASE", "postgres".to_owned()),
        ("PGSSLMODE", "verify-full".to_owned()),
        ("PGSSLROOTCERT", right.clone()),
        ("PGCHANNELBINDING", "require".to_owned()),
    ];
    assert_eq!(in_child("postgres://", &env), "OK");
    assert_eq!(in_child("", &env), "OK", "an empty key=value string");
}
