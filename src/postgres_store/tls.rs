//! TLS to the server with rustls (ring): the connector a [`TlsRequest`]
//! asks for, and the connection errors that TLS explains, as one line
//! each.
//!
//! What each `sslmode` does here, and where that differs from libpq, is
//! docs/SPEC.md §6 ("TLS to PostgreSQL"). In short: verify-full checks the
//! chain and the host name (rustls' webpki verifier); verify-ca, and
//! require or prefer with a root file, the chain only ([`Check`]); without
//! a root file nothing is checked. A Unix-socket host never uses TLS.
//! Channel binding (SCRAM-SHA-256-PLUS) is tokio-postgres-rustls's: used
//! whenever the connection is TLS and the server offers it.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::conninfo::{RootCerts, SslMode, TlsRequest};
use crate::error::{Error, Result};

/// The connector every connection of a store uses, and the mode to hand
/// to `postgres::Config` (rust-postgres knows disable, prefer, require).
pub(super) fn connector(
    request: &TlsRequest,
    config: &postgres::Config,
) -> Result<(postgres::config::SslMode, MakeRustlsConnect)> {
    use postgres::config::SslMode as Pg;
    let unix_only = !config.get_hosts().is_empty()
        && config.get_hostaddrs().is_empty()
        && config
            .get_hosts()
            .iter()
            .all(|host| !matches!(host, postgres::config::Host::Tcp(_)));
    let negotiation = match request.mode {
        _ if unix_only => Pg::Disable,
        SslMode::Disable => Pg::Disable,
        SslMode::Allow | SslMode::Prefer => Pg::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Pg::Require,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS: {e}")))?;
    // Without TLS the files are not read: a broken one cannot matter.
    let uses_tls = negotiation != Pg::Disable;
    let roots = request.roots.as_ref().filter(|_| uses_tls);
    let verifier: Arc<dyn ServerCertVerifier> = match (roots, request.mode) {
        (None, _) => Arc::new(Check {
            roots: None,
            provider,
        }),
        (Some(roots), SslMode::VerifyFull) => {
            WebPkiServerVerifier::builder_with_provider(Arc::new(root_store(roots)?), provider)
                .build()
                .map_err(|e| invalid(format!("TLS: {e}")))?
        }
        (Some(roots), _) => Arc::new(Check {
            roots: Some(Arc::new(root_store(roots)?)),
            provider,
        }),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut tls = match request.client.as_ref().filter(|_| uses_tls) {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| invalid(format!("sslcert {}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| invalid(format!("sslkey {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| invalid(format!("sslcert and sslkey: {e}")))?
        }
    };
    tls.enable_sni = request.sni;
    Ok((negotiation, MakeRustlsConnect::new(tls)))
}

/// The CA certificates of `roots`.
fn root_store(roots: &RootCerts) -> Result<RootCertStore> {
    match roots {
        RootCerts::System => Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }),
        RootCerts::File(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| invalid(format!("sslrootcert {}: {e}", path.display())))?;
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(invalid(format!(
                    "sslrootcert {} holds no usable CA certificate (PEM expected)",
                    path.display()
                )));
            }
            Ok(store)
        }
    }
}

fn invalid(reason: String) -> Error {
    Error::InvalidUrl { reason }
}

/// The server's certificate checked against `roots` without its host
/// name (verify-ca, and prefer/require with a root file), or not checked
/// at all (`roots: None`). The handshake's signatures are verified either
/// way, so the channel-binding data still belongs to this connection.
#[derive(Debug)]
struct Check {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Check {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A failed first connection that TLS (or its absence) explains, as
/// [`Error::Tls`]; `None` for every other failure.
pub(super) fn explain(e: &postgres::Error, request: &TlsRequest, target: &str) -> Option<Error> {
    let mode = request.mode.name();
    let roots = match &request.roots {
        Some(RootCerts::File(path)) => format!("sslrootcert={}", path.display()),
        Some(RootCerts::System) => "the public CAs of sslrootcert=system (webpki-roots)".into(),
        None => "no root file".into(),
    };
    let reason = if let Some(tls) = rustls_error(e) {
        use rustls::AlertDescription as Alert;
        match tls {
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
                "the server's certificate is not signed by a CA in {roots} (UnknownIssuer); \
                 give sslrootcert the CA certificate or bundle that signed it"
            ),
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => format!(
                "the server's certificate does not name the host connected to ({tls}); connect \
                 with a host name the certificate names, or use sslmode=verify-ca to check \
                 only the CA"
            ),
            rustls::Error::InvalidCertificate(_) => {
                format!("the server's certificate was refused ({tls}), checked against {roots}")
            }
            rustls::Error::AlertReceived(
                Alert::UnknownCA
                | Alert::BadCertificate
                | Alert::CertificateUnknown
                | Alert::CertificateRequired
                | Alert::AccessDenied
                | Alert::UnsupportedCertificate
                | Alert::CertificateExpired
                | Alert::DecryptError,
            ) => match &request.client {
                Some((cert, _)) => format!(
                    "the server refused the client certificate sslcert={} ({tls}); give one \
                     signed by the CA in the server's ssl_ca_file",
                    cert.display()
                ),
                None => format!(
                    "the server refused the handshake ({tls}); it may require a client \
                     certificate: give sslcert and sslkey"
                ),
            },
            other => format!("the TLS handshake failed ({other}) with sslmode={mode}"),
        }
    } else if let Some(db) = e.as_db_error() {
        let message = db.message();
        if message.contains("no encryption") {
            format!(
                "the server accepts only TLS connections from here ({message}), and \
                 sslmode={mode} made none; use sslmode=verify-full with sslrootcert (or \
                 sslmode=require)"
            )
        } else if message.contains("client certificate")
            || message.contains("certificate authentication")
        {
            format!(
                "the server refused the client certificate ({message}); give sslcert and \
                 sslkey for a certificate whose CN is the user name"
            )
        } else {
            return None;
        }
    } else {
        let text = super::errors::with_causes(e);
        if text.contains("server does not support TLS") {
            format!(
                "the server does not support TLS, and sslmode={mode} requires it; turn ssl on \
                 in the server, or use sslmode=prefer on a network you trust"
            )
        } else if text.contains("channel binding") {
            format!(
                "channel_binding=require, but the server did not use channel binding ({text}); \
                 it needs TLS (sslmode={mode} here) and a SCRAM-SHA-256 password"
            )
        } else {
            return None;
        }
    };
    Some(Error::Tls {
        target: target.to_owned(),
        reason,
    })
}

/// The rustls error behind `e`, however deep. `io::Error::source` skips
/// the error it wraps, so each `io::Error` is looked into as well.
fn rustls_error(e: &postgres::Error) -> Option<&rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(current) = next {
        if let Some(found) = current.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if let Some(found) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return Some(found);
            }
        }
        next = current.source();
    }
    None
}
