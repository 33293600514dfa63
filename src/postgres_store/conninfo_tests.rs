use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::*;

fn parse_with(conn: &str, env: &[(&str, &str)], home: Option<&Path>) -> Result<Conninfo> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    parse(
        conn,
        &|name| env.get(name).cloned(),
        home.map(Path::to_path_buf),
    )
}

fn reason(result: Result<Conninfo>) -> String {
    match result {
        Err(Error::InvalidUrl { reason }) => reason,
        Err(other) => panic!("expected InvalidUrl, got {other}"),
        Ok(_) => panic!("expected InvalidUrl, got a connection"),
    }
}

/// A directory with a CA file, and its path.
fn ca_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not read here").unwrap();
    (dir, ca)
}

#[test]
fn the_default_mode_is_prefer_without_checking_and_the_rest_reaches_rust_postgres() {
    let info = parse_with(
        "postgres://app:pw@db.internal:6543/tokens?application_name=x",
        &[],
        None,
    )
    .unwrap();
    assert_eq!(info.tls.mode, SslMode::Prefer);
    assert_eq!(info.tls.roots, None);
    assert_eq!(info.config.get_user(), Some("app"));
    assert_eq!(info.config.get_password(), Some(&b"pw"[..]));
    assert_eq!(info.config.get_ports(), &[6543]);
    assert_eq!(info.config.get_dbname(), Some("tokens"));
    assert_eq!(info.config.get_application_name(), Some("x"));
}

#[test]
fn verify_full_with_a_root_file_is_taken_out_of_the_url() {
    let (_dir, ca) = ca_dir();
    let url = format!(
        "postgres://app@db/tokens?sslmode=verify-full&connect_timeout=3&sslrootcert={}",
        ca.display()
    );
    let info = parse_with(&url, &[], None).unwrap();
    assert_eq!(info.tls.mode, SslMode::VerifyFull);
    assert_eq!(info.tls.roots, Some(RootCerts::File(ca)));
    assert_eq!(
        info.config.get_connect_timeout(),
        Some(&std::time::Duration::from_secs(3))
    );
}

#[test]
fn percent_encoded_values_are_decoded() {
    let (_dir, ca) = ca_dir();
    let encoded = ca.display().to_string().replace('/', "%2F");
    let info = parse_with(
        &format!("postgresql://app@db/tokens?sslrootcert={encoded}&sslmode=verify-ca"),
        &[],
        None,
    )
    .unwrap();
    assert_eq!(info.tls.roots, Some(RootCerts::File(ca)));
    assert_eq!(info.tls.mode, SslMode::VerifyCa);
}

#[test]
fn key_value_strings_are_read_with_libpqs_quoting() {
    let (_dir, ca) = ca_dir();
    let conn = format!(
        "host=db.internal port=5433 user=app password='it\\'s a pw' dbname = tokens sslmode=verify-full sslrootcert='{}'",
        ca.display()
    );
    let info = parse_with(&conn, &[], None).unwrap();
    assert_eq!(info.tls.mode, SslMode::VerifyFull);
    assert_eq!(info.tls.roots, Some(RootCerts::File(ca)));
    assert_eq!(info.config.get_password(), Some(&b"it's a pw"[..]));
    assert_eq!(info.config.get_dbname(), Some("tokens"));
    assert_eq!(info.config.get_ports(), &[5433]);
}

#[test]
fn pg_variables_fill_in_what_the_url_leaves_out_and_the_url_wins() {
    let (_dir, ca) = ca_dir();
    let env = [
        ("PGSSLMODE", "verify-ca"),
        ("PGSSLROOTCERT", ca.to_str().unwrap()),
        ("PGHOST", "from-env"),
        ("PGPORT", "7777"),
        ("PGUSER", "env_user"),
        ("PGPASSWORD", "env_pw"),
        ("PGDATABASE", "env_db"),
        ("PGCONNECT_TIMEOUT", "4"),
        ("PGCHANNELBINDING", "require"),
    ];
    let info = parse_with("postgres:///", &env, None).unwrap();
    assert_eq!(info.tls.mode, SslMode::VerifyCa);
    assert_eq!(info.tls.roots, Some(RootCerts::File(ca.clone())));
    assert_eq!(
        info.config.get_hosts(),
        &[postgres::config::Host::Tcp("from-env".into())]
    );
    assert_eq!(info.config.get_ports(), &[7777]);
    assert_eq!(info.config.get_user(), Some("env_user"));
    assert_eq!(info.config.get_password(), Some(&b"env_pw"[..]));
    assert_eq!(info.config.get_dbname(), Some("env_db"));
    assert_eq!(
        info.config.get_channel_binding(),
        postgres::config::ChannelBinding::Require
    );

    let info = parse_with(
        "postgres://app:pw@db:5432/tokens?sslmode=require&channel_binding=disable",
        &env,
        None,
    )
    .unwrap();
    assert_eq!(info.tls.mode, SslMode::Require);
    assert_eq!(
        info.tls.roots,
        Some(RootCerts::File(ca)),
        "require with a root file checks the chain, as in libpq"
    );
    assert_eq!(info.config.get_user(), Some("app"));
    assert_eq!(info.config.get_password(), Some(&b"pw"[..]));
    assert_eq!(info.config.get_ports(), &[5432]);
    assert_eq!(
        info.config.get_channel_binding(),
        postgres::config::ChannelBinding::Disable
    );
}

#[test]
fn verify_modes_without_a_root_file_are_refused() {
    for mode in ["verify-ca", "verify-full"] {
        let why = reason(parse_with(
            &format!("postgres://app:secret@db/tokens?sslmode={mode}"),
            &[],
            None,
        ));
        assert!(why.contains(&format!("sslmode={mode} needs")), "{why}");
        assert!(why.contains("sslrootcert"), "{why}");
        assert!(!why.contains("secret"), "{why}");
    }
}

#[test]
fn the_default_root_file_is_libpqs() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".postgresql")).unwrap();
    let root = home.path().join(".postgresql/root.crt");
    std::fs::write(&root, "x").unwrap();
    let info = parse_with(
        "postgres://app@db/tokens?sslmode=verify-full",
        &[],
        Some(home.path()),
    )
    .unwrap();
    assert_eq!(info.tls.roots, Some(RootCerts::File(root.clone())));
    let info = parse_with("postgres://app@db/tokens", &[], Some(home.path())).unwrap();
    assert_eq!(info.tls.mode, SslMode::Prefer);
    assert_eq!(info.tls.roots, Some(RootCerts::File(root)));
}

#[test]
fn a_named_root_file_that_is_missing_is_refused_in_every_mode() {
    for mode in ["prefer", "require", "verify-full"] {
        let why = reason(parse_with(
            &format!("postgres://app@db/tokens?sslmode={mode}&sslrootcert=/no/such/ca.pem"),
            &[],
            None,
        ));
        assert!(why.contains("/no/such/ca.pem does not exist"), "{why}");
    }
}

#[test]
fn sslrootcert_system_means_verify_full_and_refuses_weaker_modes() {
    let info = parse_with("postgres://app@db/tokens?sslrootcert=system", &[], None).unwrap();
    assert_eq!(info.tls.mode, SslMode::VerifyFull);
    assert_eq!(info.tls.roots, Some(RootCerts::System));
    let why = reason(parse_with(
        "postgres://app@db/tokens?sslrootcert=system&sslmode=require",
        &[],
        None,
    ));
    assert!(
        why.contains("sslmode=require may not be used with sslrootcert=system"),
        "{why}"
    );
}

#[test]
fn unknown_modes_and_unsupported_parameters_are_named() {
    let why = reason(parse_with(
        "postgres://app@db/t?sslmode=verify_full",
        &[],
        None,
    ));
    assert!(why.contains("\"verify_full\" is not one of"), "{why}");
    let why = reason(parse_with("postgres://app@db/t?sslcrl=/x.crl", &[], None));
    assert!(why.contains("sslcrl is not supported"), "{why}");
    let why = reason(parse_with(
        "postgres://app@db/t?channel_binding=yes",
        &[],
        None,
    ));
    assert!(why.contains("channel_binding=\"yes\""), "{why}");
}

#[test]
fn a_client_certificate_needs_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("client.crt");
    std::fs::write(&cert, "x").unwrap();
    let why = reason(parse_with(
        &format!(
            "postgres://app@db/t?sslcert={}&sslkey={}/client.key",
            cert.display(),
            dir.path().display()
        ),
        &[],
        None,
    ));
    assert!(why.contains("client.key does not exist"), "{why}");
    let key = dir.path().join("client.key");
    std::fs::write(&key, "x").unwrap();
    let info = parse_with(
        "postgres://app@db/t",
        &[
            ("PGSSLCERT", cert.to_str().unwrap()),
            ("PGSSLKEY", key.to_str().unwrap()),
        ],
        None,
    )
    .unwrap();
    assert_eq!(info.tls.client, Some((cert, key)));
}

#[test]
fn rust_postgress_refusals_name_the_option() {
    let why = reason(parse_with("postgres://app@db:notaport/t", &[], None));
    assert!(why.contains("invalid value for option `port`"), "{why}");
    let why = reason(parse_with("postgres://app@db/t?nosuchoption=1", &[], None));
    assert!(why.contains("unknown option `nosuchoption`"), "{why}");
}

#[test]
fn errors_never_repeat_the_password() {
    for conn in [
        "postgres://app:hunter2@db/t?sslmode=nope",
        "postgres://app:hunter2@db:notaport/t",
        "host=db password=hunter2 sslmode",
        "host=db password='hunter2",
    ] {
        let why = reason(parse_with(conn, &[], None));
        assert!(!why.contains("hunter2"), "{conn}: {why}");
    }
}
