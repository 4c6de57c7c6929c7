//! Server-side TLS of the client listener and the admin port: certificates
//! from PEM files, chosen by SNI, re-read when the files change, and the
//! handshake with its failures counted by reason.
//!
//! ```text
//!   Tls::load(files)    PEM chain + key per pair -> CertifiedKey (key checked
//!                       against the certificate), SAN DNS names, not-after
//!   accept(tcp)         peek: not a TLS record -> not_tls (plain HTTP: a 400)
//!                       handshake (rustls, TLS 1.2/1.3, ALPN) within the timeout
//!                         -> resolver: SNI against each pair's SAN names
//!                            (`*.a.b` matches one label), else the first pair
//!                       failure -> tls_handshake_failures{reason}, a debug line
//!   watch(interval)     re-read the files; a changed pair that loads replaces
//!                       its slot in the resolver (one ArcSwap); one that does
//!                       not keeps the old pair (warn line + reloads{error})
//! ```
//! Reading the files every interval and comparing their digests follows
//! symlinks, so a Kubernetes TLS Secret's `..data` swap is seen without
//! inotify; new handshakes get the new pair, connections already up keep
//! the session they have. A changed client CA rebuilds the `ServerConfig`
//! (and with it the resumption cache: a session from before the change
//! cannot skip the new CA). The handshake runs in user space: the stream
//! handed on is rustls's, so its bytes are copied (no splice/sendfile);
//! `detect_offload` says whether the kernel could take over (kTLS), which
//! this build does not do.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;

use crate::metrics::{
    TlsCertLabels, TlsMetrics, TlsOffloadLabels, TlsReasonLabels, TlsReloadLabels,
};

/// Why a handshake failed: the `reason` label of `sluice_tls_handshake_failures_total`.
pub const REASONS: &[&str] = &[
    "no_client_certificate",
    "bad_certificate",
    "unknown_ca",
    "protocol_version",
    "no_shared_cipher",
    "no_application_protocol",
    "not_tls",
    "timeout",
    "eof",
    "other",
];

/// ALPN of the client listener, in order of preference.
pub const ALPN_CLIENT: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN of the admin port (HTTP/1.1 only).
pub const ALPN_ADMIN: &[&[u8]] = &[b"http/1.1"];

/// Why a certificate, key or CA could not be loaded. Variant names are stable:
/// they name the failure in logs.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "{certs} certificate file(s) and {keys} key file(s): they go in pairs, in the same order"
    )]
    Unpaired { certs: usize, keys: usize },
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: not valid PEM: {reason}", path.display())]
    BadPem { path: PathBuf, reason: String },
    #[error("{}: the certificate does not parse: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{}: the key cannot be used: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("the key in {} does not belong to the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("client CA {}: {reason}", path.display())]
    ClientCa { path: PathBuf, reason: String },
    #[error("building the TLS configuration: {0}")]
    Config(String),
}

/// What a TLS endpoint is built from.
#[derive(Debug, Clone)]
pub struct Config {
    /// `client` or `admin`: the `listener` label of its metrics.
    pub listener: &'static str,
    /// Certificate chains (PEM, leaf first); the first is the default.
    pub certs: Vec<PathBuf>,
    /// Their keys, in the same order.
    pub keys: Vec<PathBuf>,
    /// With it, clients must present a certificate this CA bundle issued.
    pub client_ca: Option<PathBuf>,
    pub alpn: &'static [&'static [u8]],
    /// A handshake must finish within this (the header timeout).
    pub handshake_timeout: Duration,
}

/// One loaded pair.
#[derive(Debug)]
struct Cert {
    key: Arc<CertifiedKey>,
    /// SAN DNS names, lowercased.
    names: Vec<String>,
    not_after: i64,
}

/// The pairs new handshakes choose from, swapped whole.
#[derive(Debug)]
struct Resolver {
    certs: ArcSwap<Vec<Arc<Cert>>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.load();
        let chosen = hello
            .server_name()
            .and_then(|sni| {
                certs
                    .iter()
                    .find(|c| c.names.iter().any(|n| name_matches(n, sni)))
            })
            .or_else(|| certs.first())?;
        Some(chosen.key.clone())
    }
}

/// Whether a certificate name (`a.example.com`, `*.example.com`) covers a
/// server name: case-insensitive; a wildcard is a whole left-most label and
/// stands for exactly one non-empty label (RFC 6125 6.4.3).
pub fn name_matches(cert_name: &str, server_name: &str) -> bool {
    let server_name = server_name.strip_suffix('.').unwrap_or(server_name);
    if let Some(parent) = cert_name.strip_prefix("*.") {
        let Some((label, rest)) = server_name.split_once('.') else {
            return false;
        };
        return !label.is_empty() && !parent.is_empty() && rest.eq_ignore_ascii_case(parent);
    }
    cert_name.eq_ignore_ascii_case(server_name)
}

/// What was last read from one pair's files (digests, never the bytes).
#[derive(Default, Clone, PartialEq, Eq)]
struct Seen([u8; 32]);

struct State {
    /// Per pair: the files as last read, loaded or not (a broken pair warns once).
    pairs: Vec<Seen>,
    client_ca: Seen,
}

/// A TLS endpoint: its current configuration, its certificates, its counters.
pub struct Tls {
    cfg: Config,
    provider: Arc<CryptoProvider>,
    resolver: Arc<Resolver>,
    server: ArcSwap<ServerConfig>,
    state: Mutex<State>,
    metrics: TlsMetrics,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn digest(parts: &[&Result<Vec<u8>, TlsError>]) -> Seen {
    let mut h = Sha256::new();
    for p in parts {
        match p {
            Ok(b) => {
                h.update(b"ok");
                h.update((b.len() as u64).to_le_bytes());
                h.update(b);
            }
            Err(e) => {
                h.update(b"err");
                h.update(e.to_string().as_bytes());
            }
        }
    }
    Seen(h.finalize().into())
}

/// Parses one pair: chain, key, key against certificate, names, expiry.
fn load_pair(
    provider: &CryptoProvider,
    cert_path: &Path,
    key_path: &Path,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Cert, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    };
    let (names, not_after) = leaf_facts(leaf).map_err(|reason| TlsError::BadCertificate {
        path: cert_path.to_path_buf(),
        reason,
    })?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: key_path.to_path_buf(),
        },
        e => TlsError::BadPem {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        },
    })?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::BadKey {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let key = CertifiedKey::new(chain, signer);
    match key.keys_match() {
        Ok(()) => {}
        // The provider cannot tell (no public key to compare): the handshake will.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(TlsError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            });
        }
    }
    Ok(Cert {
        key: Arc::new(key),
        names,
        not_after,
    })
}

/// The leaf's SAN DNS names (lowercased) and its not-after (Unix seconds).
/// x509-parser, because rustls and webpki check certificates but expose
/// neither their names nor their validity.
fn leaf_facts(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, i64), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Some(san) = cert.subject_alternative_name().map_err(|e| e.to_string())? {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    Ok((names, cert.validity().not_after.timestamp()))
}

fn load_client_ca(
    path: &Path,
    pem: &[u8],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let bad = |reason: String| TlsError::ClientCa {
        path: path.to_path_buf(),
        reason,
    };
    // The same checks as an engine's caSecretRef: PEM, at least one
    // certificate, each usable as a trust anchor.
    let mut roots = RootCertStore::empty();
    for c in sluice_policy::pem::ca_bundle(pem).map_err(bad)? {
        roots.add(c).map_err(|e| bad(e.to_string()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| bad(e.to_string()))
}

/// A loaded certificate already past its not-after still loads (the
/// operator may be mid-rotation), with a warning: clients will refuse it.
fn warn_if_expired(listener: &str, path: &Path, not_after: i64) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if not_after < now {
        tracing::warn!(listener, cert = %path.display(), not_after = %rfc3339(not_after), "TLS certificate expired");
    }
}

fn rfc3339(unix: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Tls {
    /// Loads every pair and the client CA; any error is fatal at start.
    pub fn load(cfg: Config, metrics: &TlsMetrics) -> Result<Arc<Tls>, TlsError> {
        if cfg.certs.len() != cfg.keys.len() || cfg.certs.is_empty() {
            return Err(TlsError::Unpaired {
                certs: cfg.certs.len(),
                keys: cfg.keys.len(),
            });
        }
        let provider = sluice_policy::pem::provider();
        let mut certs = Vec::new();
        let mut seen = Vec::new();
        for (c, k) in cfg.certs.iter().zip(&cfg.keys) {
            let (cb, kb) = (read(c), read(k));
            seen.push(digest(&[&cb, &kb]));
            let cert = load_pair(&provider, c, k, &cb?, &kb?)?;
            tracing::info!(
                listener = cfg.listener,
                cert = %c.display(),
                names = ?cert.names,
                not_after = %rfc3339(cert.not_after),
                "TLS certificate loaded"
            );
            warn_if_expired(cfg.listener, c, cert.not_after);
            certs.push(Arc::new(cert));
        }
        let (ca_seen, verifier) = match &cfg.client_ca {
            Some(p) => {
                let b = read(p);
                let s = digest(&[&b]);
                (s, Some(load_client_ca(p, &b?, &provider)?))
            }
            None => (Seen::default(), None),
        };
        let resolver = Arc::new(Resolver {
            certs: ArcSwap::from_pointee(certs),
        });
        let server = build_server(&provider, &resolver, verifier, cfg.alpn)?;
        for reason in REASONS {
            let _ = metrics.handshake_failures.get_or_create(&TlsReasonLabels {
                listener: cfg.listener,
                reason,
            });
        }
        for result in ["ok", "error"] {
            let _ = metrics.reloads.get_or_create(&TlsReloadLabels {
                listener: cfg.listener,
                result,
            });
        }
        let tls = Tls {
            cfg,
            provider,
            resolver,
            server: ArcSwap::from_pointee(server),
            state: Mutex::new(State {
                pairs: seen,
                client_ca: ca_seen,
            }),
            metrics: metrics.clone(),
        };
        tls.export_not_after();
        Ok(Arc::new(tls))
    }

    /// Whether clients must present a certificate.
    pub fn client_auth(&self) -> bool {
        self.cfg.client_ca.is_some()
    }

    fn export_not_after(&self) {
        let certs = self.resolver.certs.load();
        for (path, c) in self.cfg.certs.iter().zip(certs.iter()) {
            self.metrics
                .not_after
                .get_or_create(&TlsCertLabels {
                    listener: self.cfg.listener,
                    cert: path.display().to_string(),
                })
                .set(c.not_after);
        }
    }

    /// Re-reads the files every `interval` until `shutdown`.
    pub async fn watch(self: Arc<Self>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => self.reload(),
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One look at the files: pairs whose bytes changed are loaded and swapped
    /// in, or kept as they were with a warning.
    pub fn reload(&self) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let l = self.cfg.listener;
        let mut next: Option<Vec<Arc<Cert>>> = None;
        for (i, (c, k)) in self.cfg.certs.iter().zip(&self.cfg.keys).enumerate() {
            let (cb, kb) = (read(c), read(k));
            let now = digest(&[&cb, &kb]);
            if state.pairs[i] == now {
                continue;
            }
            state.pairs[i] = now;
            let loaded =
                cb.and_then(|cb| kb.and_then(|kb| load_pair(&self.provider, c, k, &cb, &kb)));
            match loaded {
                Ok(cert) => {
                    tracing::info!(
                        listener = l,
                        cert = %c.display(),
                        names = ?cert.names,
                        not_after = %rfc3339(cert.not_after),
                        "TLS certificate reloaded; new handshakes use it"
                    );
                    warn_if_expired(l, c, cert.not_after);
                    let set = next.get_or_insert_with(|| self.resolver.certs.load().to_vec());
                    set[i] = Arc::new(cert);
                    self.count_reload("ok");
                }
                Err(e) => {
                    tracing::warn!(
                        listener = l,
                        cert = %c.display(),
                        key = %k.display(),
                        error = %e,
                        "TLS certificate not reloaded; keeping the one loaded before"
                    );
                    self.count_reload("error");
                }
            }
        }
        if let Some(set) = next {
            self.resolver.certs.store(Arc::new(set));
            self.export_not_after();
        }
        if let Some(p) = &self.cfg.client_ca {
            let b = read(p);
            let now = digest(&[&b]);
            if state.client_ca != now {
                state.client_ca = now;
                let rebuilt = b
                    .and_then(|b| load_client_ca(p, &b, &self.provider))
                    .and_then(|v| {
                        build_server(&self.provider, &self.resolver, Some(v), self.cfg.alpn)
                    });
                match rebuilt {
                    Ok(server) => {
                        self.server.store(Arc::new(server));
                        tracing::info!(listener = l, client_ca = %p.display(), "client CA reloaded; new handshakes use it");
                        self.count_reload("ok");
                    }
                    Err(e) => {
                        tracing::warn!(listener = l, client_ca = %p.display(), error = %e, "client CA not reloaded; keeping the one loaded before");
                        self.count_reload("error");
                    }
                }
            }
        }
    }

    fn count_reload(&self, result: &'static str) {
        self.metrics
            .reloads
            .get_or_create(&TlsReloadLabels {
                listener: self.cfg.listener,
                result,
            })
            .inc();
    }

    /// The handshake, within the handshake timeout. `None`: it failed, and was
    /// counted and logged (debug) with its reason.
    pub async fn accept(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<TlsStream<TcpStream>> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server.load_full());
        let handshake = async {
            let mut stream = stream;
            let mut first = [0u8; 1];
            match stream.peek(&mut first).await {
                Ok(0) => return Err(Failure::Reason("eof")),
                Err(e) => return Err(Failure::Io(e)),
                Ok(_) => {}
            }
            // 22: a TLS handshake record. Anything else is not TLS; a letter is
            // most likely a plain HTTP request sent to the HTTPS port.
            if first[0] != 22 {
                if first[0].is_ascii_uppercase() {
                    refuse_plain_http(&mut stream).await;
                }
                return Err(Failure::Reason("not_tls"));
            }
            acceptor.accept(stream).await.map_err(Failure::Io)
        };
        let failure = match tokio::time::timeout(self.cfg.handshake_timeout, handshake).await {
            Ok(Ok(s)) => return Some(s),
            Ok(Err(f)) => f,
            Err(_) => Failure::Reason("timeout"),
        };
        let (reason, detail) = match &failure {
            Failure::Reason(r) => (*r, String::new()),
            Failure::Io(e) => (reason_of(e), e.to_string()),
        };
        self.metrics
            .handshake_failures
            .get_or_create(&TlsReasonLabels {
                listener: self.cfg.listener,
                reason,
            })
            .inc();
        tracing::debug!(listener = self.cfg.listener, %peer, reason, error = %detail, "TLS handshake failed");
        None
    }
}

enum Failure {
    Reason(&'static str),
    Io(io::Error),
}

fn build_server(
    provider: &Arc<CryptoProvider>,
    resolver: &Arc<Resolver>,
    verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    alpn: &[&[u8]],
) -> Result<ServerConfig, TlsError> {
    let b = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let b = match verifier {
        Some(v) => b.with_client_cert_verifier(v),
        None => b.with_no_client_auth(),
    };
    let mut c = b.with_cert_resolver(resolver.clone());
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(c)
}

/// What a plain HTTP client gets on the HTTPS port, before the close.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 79\r\nconnection: close\r\n\r\n{\"error\":\"tls_required\",\"message\":\"this port speaks HTTPS only: use https://\"}\n";

/// Answers a plain HTTP request with a 400 and closes, reading what the
/// client sent first so the close does not reset the connection under it.
async fn refuse_plain_http(stream: &mut TcpStream) {
    let mut scratch = [0u8; 4096];
    let _ = stream.read(&mut scratch).await;
    if stream.write_all(PLAIN_HTTP_ANSWER).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let drain = async { while let Ok(1..) = stream.read(&mut scratch).await {} };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// The reason label of a failed handshake.
fn reason_of(e: &io::Error) -> &'static str {
    if let Some(t) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return tls_reason(t);
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => "eof",
        _ => "other",
    }
}

fn tls_reason(e: &rustls::Error) -> &'static str {
    use rustls::AlertDescription as A;
    use rustls::CertificateError as C;
    use rustls::Error as E;
    use rustls::PeerIncompatible as P;
    match e {
        E::NoCertificatesPresented => "no_client_certificate",
        E::InvalidCertificate(C::UnknownIssuer) => "unknown_ca",
        E::InvalidCertificate(_) => "bad_certificate",
        E::NoApplicationProtocol => "no_application_protocol",
        E::PeerIncompatible(
            P::NoCipherSuitesInCommon
            | P::NoKxGroupsInCommon
            | P::NoSignatureSchemesInCommon
            | P::NoCertificateRequestSignatureSchemesInCommon,
        ) => "no_shared_cipher",
        E::PeerIncompatible(
            P::ServerTlsVersionIsDisabledByOurConfig
            | P::SupportedVersionsExtensionRequired
            | P::Tls12NotOffered
            | P::Tls12NotOfferedOrEnabled
            | P::ServerDoesNotSupportTls12Or13
            // Only TLS 1.0/1.1 hellos lack it: the first thing rustls misses in them.
            | P::SignatureAlgorithmsExtensionRequired,
        ) => "protocol_version",
        // The client refused us: our certificate, mostly.
        E::AlertReceived(A::UnknownCA) => "unknown_ca",
        E::AlertReceived(
            A::BadCertificate
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::CertificateExpired
            | A::CertificateRevoked,
        ) => "bad_certificate",
        E::AlertReceived(A::ProtocolVersion) => "protocol_version",
        E::AlertReceived(A::NoApplicationProtocol) => "no_application_protocol",
        E::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => "not_tls",
        _ => "other",
    }
}

/// Where TLS records are encrypted, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offload {
    /// `kernel` or `user`.
    pub mode: &'static str,
    pub why: String,
}

/// The kernel's list of TCP upper-layer protocols; `tls` in it means kTLS.
pub const ULP_FILE: &str = "/proc/sys/net/ipv4/tcp_available_ulp";

/// Reads `ULP_FILE` and decides (`decide_offload`); sets the gauge.
pub fn detect_offload(wanted: bool, metrics: &TlsMetrics) -> Offload {
    let ulp = std::fs::read_to_string(ULP_FILE);
    let o = decide_offload(wanted, ulp.as_deref().map_err(|e| e.to_string()));
    for mode in ["kernel", "user"] {
        metrics
            .offload
            .get_or_create(&TlsOffloadLabels { mode })
            .set(i64::from(mode == o.mode));
    }
    o
}

/// kTLS needs the kernel's `tls` ULP and a build that hands the session keys
/// to it after the handshake. This build has no such handoff (the `ktls`
/// crate consumes the stream when the handoff fails, and the fast path would
/// need to read TLS control records), so the answer is always `user`; the
/// reason says whether the kernel would have allowed `kernel`.
pub fn decide_offload(wanted: bool, ulp: Result<&str, String>) -> Offload {
    let why = match (wanted, ulp) {
        (false, _) => "kernel TLS off (--ktls off)".to_string(),
        (true, Err(e)) => format!("kernel TLS not available: cannot read {ULP_FILE}: {e}"),
        (true, Ok(list)) if list.split_whitespace().any(|u| u == "tls") => format!(
            "the kernel offers kernel TLS ({ULP_FILE}: {}), but this build does not hand TLS sessions to the kernel",
            list.trim()
        ),
        (true, Ok(list)) => format!(
            "kernel TLS not offered by this kernel ({ULP_FILE}: {:?}; `modprobe tls` adds it)",
            list.trim()
        ),
    };
    Offload { mode: "user", why }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_stand_for_one_label() {
        assert!(name_matches("a.example.com", "A.Example.COM"));
        assert!(name_matches("a.example.com", "a.example.com."));
        assert!(!name_matches("a.example.com", "b.example.com"));
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(name_matches("*.example.com", "X.EXAMPLE.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", ".example.com"));
        assert!(!name_matches("*.", "a."));
        assert!(!name_matches("a*.example.com", "ab.example.com"));
    }

    #[test]
    fn offload_follows_the_ulp_list() {
        let o = decide_offload(true, Ok("mptcp\n"));
        assert_eq!(o.mode, "user");
        assert!(o.why.contains("not offered"), "{}", o.why);
        let o = decide_offload(true, Ok("mptcp tls\n"));
        assert_eq!(o.mode, "user");
        assert!(o.why.contains("does not hand"), "{}", o.why);
        let o = decide_offload(false, Ok("tls"));
        assert!(o.why.contains("--ktls off"), "{}", o.why);
        let o = decide_offload(true, Err("gone".into()));
        assert!(o.why.contains("cannot read"), "{}", o.why);
    }

    #[test]
    fn rustls_errors_map_to_a_few_reasons() {
        assert_eq!(
            tls_reason(&rustls::Error::NoCertificatesPresented),
            "no_client_certificate"
        );
        assert_eq!(
            tls_reason(&rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            )),
            "unknown_ca"
        );
        assert_eq!(
            tls_reason(&rustls::Error::AlertReceived(
                rustls::AlertDescription::UnknownCA
            )),
            "unknown_ca"
        );
        assert_eq!(
            tls_reason(&rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::NoCipherSuitesInCommon
            )),
            "no_shared_cipher"
        );
        for r in [
            "no_client_certificate",
            "unknown_ca",
            "no_shared_cipher",
            "not_tls",
            "timeout",
            "eof",
            "other",
        ] {
            assert!(REASONS.contains(&r), "{r}");
        }
        assert_eq!(
            tls_reason(&rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::SignatureAlgorithmsExtensionRequired
            )),
            "protocol_version"
        );
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(reason_of(&eof), "eof");
    }

    #[test]
    fn plain_http_answer_has_the_right_length() {
        let s = std::str::from_utf8(PLAIN_HTTP_ANSWER).unwrap();
        let (head, body) = s.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{}",
            body.len()
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "tls_required");
    }
}
