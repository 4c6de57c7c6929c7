//! The client side of the proxies' push API: `PUT /v1/config` with the
//! compiled ProxyConfig, `GET /v1/config/version`, bearer token auth.
//!
//! ```text
//!   Pusher::new       http://<pod IP>:<admin port>
//!   Pusher::with_tls  https://<pod IP>:<admin port>, trusting only the CA of
//!                     --proxy-ca, and checking the certificate names
//!                     --proxy-server-name (default sluice-proxy-admin)
//! ```
//! Proxies are reached by pod IP, which no certificate can list ahead of
//! time, so the name verified is a fixed one every proxy's admin
//! certificate carries as a SAN (`FixedName`: webpki's own verification,
//! chain and expiry included, with that name in place of the IP). No SNI is
//! sent (an IP is not a server name); the proxy serves its only admin pair.
//! The rustls config uses the ring provider: reqwest is built without one
//! (`rustls-no-provider`, so no aws-lc), and every client here is handed its
//! config (`tls_backend_preconfigured`), plaintext ones too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sluice_policy::ProxyConfig;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("the proxy refused the admin token (401)")]
    Unauthorized,
    #[error("the proxy refused the config ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the proxy answered {0}")]
    Unexpected(String),
    #[error("the proxy is unreachable: {0}")]
    Unreachable(String),
    #[error("TLS to the proxies: {0}")]
    Tls(String),
}

impl PushError {
    /// For the errors-by-kind metric and log lines.
    pub fn kind(&self) -> &'static str {
        match self {
            PushError::Unauthorized => "unauthorized",
            PushError::Refused { .. } => "refused",
            PushError::Unexpected(_) => "unexpected",
            PushError::Unreachable(_) => "unreachable",
            PushError::Tls(_) => "tls",
        }
    }
}

/// One config, serialized once, pushed to many proxies.
#[derive(Clone, Debug)]
pub struct Payload {
    pub version: String,
    pub body: Bytes,
}

impl Payload {
    pub fn new(config: &ProxyConfig) -> Self {
        Payload {
            version: config.version.clone(),
            // Plain data: serializing cannot fail.
            body: serde_json::to_vec(config).unwrap_or_default().into(),
        }
    }
}

/// How the admin ports are reached over TLS.
#[derive(Clone, Debug)]
pub struct AdminTls {
    /// PEM bundle: the only trust roots for the proxies' admin certificates.
    pub ca_pem: Vec<u8>,
    /// The name every proxy's admin certificate carries (a SAN).
    pub server_name: String,
}

/// The admin certificates' name when none is given (`--proxy-server-name`).
pub const DEFAULT_SERVER_NAME: &str = "sluice-proxy-admin";

#[derive(Clone)]
pub struct Pusher {
    client: reqwest::Client,
    token: String,
    scheme: &'static str,
}

impl Pusher {
    /// Pushes over plain HTTP.
    pub fn new(token: &str, timeout: Duration) -> Result<Self, PushError> {
        Self::build(token, timeout, None)
    }

    /// Pushes over HTTPS, trusting only `tls.ca_pem`, for `tls.server_name`.
    pub fn with_tls(token: &str, timeout: Duration, tls: &AdminTls) -> Result<Self, PushError> {
        Self::build(token, timeout, Some(tls))
    }

    fn build(token: &str, timeout: Duration, tls: Option<&AdminTls>) -> Result<Self, PushError> {
        let config = match tls {
            Some(t) => client_config(t)?,
            None => plaintext_config()?,
        };
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .timeout(timeout)
            .https_only(tls.is_some())
            .tls_backend_preconfigured(config)
            .build()
            .map_err(|e| PushError::Unexpected(format!("building the HTTP client: {e}")))?;
        Ok(Pusher {
            client,
            token: token.trim().to_string(),
            scheme: if tls.is_some() { "https" } else { "http" },
        })
    }

    /// Pushes `payload`; `Ok` carries the version the proxy now serves.
    pub async fn push(&self, admin: SocketAddr, payload: &Payload) -> Result<String, PushError> {
        let r = self
            .client
            .put(format!("{}://{admin}/v1/config", self.scheme))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(payload.body.clone())
            .send()
            .await
            .map_err(|e| PushError::Unreachable(e.to_string()))?;
        version_from(r)
            .await?
            .ok_or_else(|| PushError::Unexpected("a push answered without a version".into()))
    }

    /// The version a proxy serves (None before it has any).
    pub async fn served(&self, admin: SocketAddr) -> Result<Option<String>, PushError> {
        let r = self
            .client
            .get(format!("{}://{admin}/v1/config/version", self.scheme))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| PushError::Unreachable(e.to_string()))?;
        version_from(r).await
    }
}

/// The config of a plaintext client: never used for a handshake (http://
/// only), but reqwest needs one, having no provider of its own.
fn plaintext_config() -> Result<ClientConfig, PushError> {
    Ok(
        ClientConfig::builder_with_provider(sluice_policy::pem::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| PushError::Tls(e.to_string()))?
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
    )
}

/// The rustls config of the HTTPS pushes: `tls.ca_pem` the only roots, the
/// certificate checked for `tls.server_name` whatever address was dialled.
pub fn client_config(tls: &AdminTls) -> Result<ClientConfig, PushError> {
    let mut config = ClientConfig::builder_with_provider(sluice_policy::pem::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| PushError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(fixed_name(tls)?)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn fixed_name(tls: &AdminTls) -> Result<Arc<FixedName>, PushError> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&tls.ca_pem) {
        let c = c.map_err(|e| PushError::Tls(format!("the proxy CA is not valid PEM: {e}")))?;
        roots
            .add(c)
            .map_err(|e| PushError::Tls(format!("the proxy CA cannot be a trust root: {e}")))?;
    }
    if roots.is_empty() {
        return Err(PushError::Tls(
            "the proxy CA file holds no PEM certificate".into(),
        ));
    }
    let name = ServerName::try_from(tls.server_name.clone())
        .map_err(|e| PushError::Tls(format!("server name {:?}: {e}", tls.server_name)))?;
    let inner = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        sluice_policy::pem::provider(),
    )
    .build()
    .map_err(|e| PushError::Tls(e.to_string()))?;
    Ok(Arc::new(FixedName { inner, name }))
}

/// webpki's verification of the proxy's certificate (chain to the CA, validity,
/// signatures), for a fixed name instead of the address dialled.
#[derive(Debug)]
struct FixedName {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

async fn version_from(r: reqwest::Response) -> Result<Option<String>, PushError> {
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or(serde_json::Value::Null);
    match status {
        200 => Ok(body["version"].as_str().map(str::to_string)),
        401 => Err(PushError::Unauthorized),
        400..=499 => Err(PushError::Refused {
            status,
            message: body["message"].as_str().unwrap_or("").to_string(),
        }),
        _ => Err(PushError::Unexpected(format!("{status}: {body}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    struct Ca {
        pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca() -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    fn leaf(ca: &Ca, names: &[&str]) -> CertificateDer<'static> {
        let p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
        let key = KeyPair::generate().unwrap();
        p.signed_by(&key, &ca.issuer).unwrap().der().clone()
    }

    fn tls(ca: &Ca) -> AdminTls {
        AdminTls {
            ca_pem: ca.pem.clone().into_bytes(),
            server_name: DEFAULT_SERVER_NAME.into(),
        }
    }

    fn check(
        v: &FixedName,
        cert: &CertificateDer<'_>,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let dialled = ServerName::IpAddress("10.1.2.3".parse::<std::net::IpAddr>().unwrap().into());
        v.verify_server_cert(cert, &[], &dialled, &[], UnixTime::now())
    }

    #[test]
    fn the_fixed_name_is_verified_whatever_address_was_dialled() {
        let ca = ca();
        let v = fixed_name(&tls(&ca)).expect("verifier");
        check(&v, &leaf(&ca, &[DEFAULT_SERVER_NAME])).expect("the admin certificate is accepted");
        // Another name, even the IP dialled, is refused: only the fixed name counts.
        assert!(check(&v, &leaf(&ca, &["other-name"])).is_err());
        assert!(check(&v, &leaf(&ca, &["10.1.2.3"])).is_err());
        // Another CA: refused.
        assert!(check(&v, &leaf(&self::ca(), &[DEFAULT_SERVER_NAME])).is_err());
    }

    #[test]
    fn https_and_plain_clients_build_without_a_process_wide_provider() {
        let ca = ca();
        let p = Pusher::with_tls("t", Duration::from_secs(1), &tls(&ca)).expect("https pusher");
        assert_eq!(p.scheme, "https");
        let p = Pusher::new("t", Duration::from_secs(1)).expect("plain pusher");
        assert_eq!(p.scheme, "http");
        let cfg = client_config(&tls(&ca)).expect("client config");
        assert_eq!(cfg.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let bad = AdminTls {
            ca_pem: b"not a certificate".to_vec(),
            server_name: DEFAULT_SERVER_NAME.into(),
        };
        let e = Pusher::with_tls("t", Duration::from_secs(1), &bad)
            .err()
            .expect("refused");
        assert_eq!(e.kind(), "tls");
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }
}
