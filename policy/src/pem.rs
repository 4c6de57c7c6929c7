//! The TLS material a policy names for an https engine, checked where the
//! policy compiles so a bad Secret is the policy's `Invalid` condition, not a
//! proxy that refuses the whole configuration later.
//!
//! ```text
//!   caSecretRef          PEM bundle  -> certificates, each a usable trust anchor
//!   clientCertSecretRef  tls.crt     -> chain (leaf first)
//!                        tls.key     -> private key (PKCS#8, PKCS#1 or SEC1), matching the leaf
//!   serverName                       -> a DNS name or an IP address
//! ```
//! The proxy parses the same PEMs with these functions when it builds its
//! engine clients. Pure: rustls' parsers and ring's key loading, no IO.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The ring provider: the only one sluice builds (aws-lc-rs needs a C toolchain and cmake).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate of a PEM bundle; an error when there is none, or one is
/// not a CA certificate rustls can anchor trust in.
pub fn ca_bundle(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = certificates(pem)?;
    let mut roots = rustls::RootCertStore::empty();
    for (i, c) in certs.iter().enumerate() {
        roots
            .add(c.clone())
            .map_err(|e| format!("certificate {} of the bundle: {e}", i + 1))?;
    }
    Ok(certs)
}

/// A client certificate chain and its key; an error when either does not
/// parse or the key is not the leaf certificate's.
pub fn client_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain = certificates(cert_pem).map_err(|e| format!("tls.crt: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("tls.key: no private key in PEM form ({e})"))?;
    rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider()).map_err(
        |e| match e {
            rustls::Error::InconsistentKeys(_) => {
                "tls.key does not match the certificate in tls.crt".to_string()
            }
            e => format!("tls.crt/tls.key: {e}"),
        },
    )?;
    Ok((chain, key))
}

/// A name rustls can verify a certificate for and send as SNI.
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string())
        .map_err(|_| format!("{name:?} is not a DNS name or an IP address"))
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle ({e})"))?;
    if certs.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    // Parse each as X.509 now: a corrupt base64 body must not wait for a handshake.
    for (i, c) in certs.iter().enumerate() {
        webpki_parse(c).map_err(|e| format!("certificate {}: {e}", i + 1))?;
    }
    Ok(certs)
}

fn webpki_parse(c: &CertificateDer<'_>) -> Result<(), String> {
    rustls::server::ParsedCertificate::try_from(c)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
