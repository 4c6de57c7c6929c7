//! TLS to storage engines: one hyper client per distinct `tls` setting of
//! the policies, each verifying the engine's certificate, and what became of
//! the last handshake with each engine (for the 502 reasons and /readyz).
//!
//! ```text
//!   start: the platform's roots (rustls-native-certs), loaded once, shared
//!   route with backend.{http,s3}.tls = T  -> Clients::get(T) -> EngineClient
//!       ClientConfig: roots + T.caPem; client cert T.clientCert; TLS 1.3/1.2 (ring)
//!       HttpsConnector(serverName T.serverName or the URL's host) -> Watched -> hyper Client (pool)
//!   every connect: Watched records per engine (host:port) Ok -> cleared, TLS error -> reason;
//!   every read: a TLS alert after the handshake (client certificate refused) -> reason
//!   hyper error -> explain(): walks the source chain to the rustls::Error -> "name mismatch: ..."
//! ```
//! Roots: the platform's store, not webpki-roots, so engines are trusted as
//! the node and the cluster trust them: the image's ca-certificates,
//! `SSL_CERT_FILE`/`SSL_CERT_DIR`, and a corporate CA added to the OS store,
//! without a rebuild when Mozilla's list changes. The policy adds to them
//! (`caSecretRef`); nothing turns verification off.
//!
//! One client per setting rather than one connector choosing the config per
//! request: hyper's pool keys connections by scheme and authority only, so a
//! shared pool would hand a connection made with one policy's client
//! certificate (or trust) to another policy's request for the same engine.
//! Policies without `tls` share the default client (plain http and https).
//! The hyper client speaks HTTP/1.1 only and offers no ALPN (hyper-rustls'
//! choice for h1-only clients; a server then speaks HTTP/1.1).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Uri;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rustls::ClientConfig;
pub use rustls::RootCertStore;
use sluice_policy::config::EngineTls;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tower_service::Service;

use super::http::OutBody;
use crate::metrics::EngineTlsLabels;

/// Failed TLS connections to engines by reason (`sluice_engine_tls_failures_total`).
pub type FailureCounter = Family<EngineTlsLabels, Counter>;

pub type Client = hyper_util::client::legacy::Client<Watched, OutBody>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Shortest time between two probes of an engine whose last handshake failed.
const REPROBE_AFTER: Duration = Duration::from_secs(5);
/// A probe's connect and handshake.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a probe listens after its handshake for the engine's refusal.
const PROBE_READ: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.caSecretRef: {0}")]
    Ca(String),
    #[error("tls.clientCertSecretRef: {0}")]
    ClientCert(String),
    #[error("tls.serverName: {0}")]
    ServerName(String),
    #[error("TLS settings: {0}")]
    Config(#[source] rustls::Error),
}

/// The platform's root certificates, loaded once.
pub fn system_roots() -> Arc<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "reading the system's root certificates");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!(
            "no system root certificates found: https engines are trusted only through tls.caSecretRef (install ca-certificates or set SSL_CERT_FILE)"
        );
    } else {
        tracing::info!(roots = added, ignored, "system root certificates loaded");
    }
    Arc::new(roots)
}

/// A client for engines of one TLS setting, with the record of its handshakes.
#[derive(Clone)]
pub struct EngineClient {
    pub http: Client,
    connector: Watched,
}

impl EngineClient {
    fn new(
        config: ClientConfig,
        server_name: Option<&str>,
        connect_timeout: Duration,
        failures: FailureCounter,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http();
        let builder = match server_name.and_then(|n| sluice_policy::pem::server_name(n).ok()) {
            Some(n) => builder.with_server_name_resolver(FixedServerNameResolver::new(n)),
            None => builder,
        }
        .enable_http1();
        let connector = Watched {
            inner: builder.wrap_connector(http),
            health: Arc::new(Health {
                seen: Mutex::default(),
                failures,
            }),
        };
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector.clone());
        Self { http, connector }
    }

    /// Why the last handshake with the engine at `url` failed, unless one
    /// succeeded since.
    pub fn failure(&self, url: &Uri) -> Option<String> {
        let key = endpoint(url)?;
        let seen = self.connector.health.lock();
        seen.get(&key).and_then(|s| s.failure.clone())
    }

    /// Has a handshake with `url` been tried (by a request or a probe)?
    pub fn seen(&self, url: &Uri) -> bool {
        endpoint(url).is_some_and(|k| self.connector.health.lock().contains_key(&k))
    }

    /// Starts a handshake with the engine at `url` in the background, unless
    /// one is under way or it was probed within `REPROBE_AFTER`; its outcome
    /// is recorded like a request's. Needs a tokio runtime (else does nothing).
    pub fn probe(&self, url: &Uri) {
        let Some(key) = endpoint(url) else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut seen = self.connector.health.lock();
            let s = seen.entry(key).or_default();
            if s.probing || s.probed.is_some_and(|t| t.elapsed() < REPROBE_AFTER) {
                return;
            }
            s.probing = true;
            s.probed = Some(Instant::now());
        }
        let mut c = self.connector.clone();
        let url = url.clone();
        rt.spawn(async move {
            let key = endpoint(&url);
            if std::future::poll_fn(|cx| c.poll_ready(cx)).await.is_ok()
                && let Ok(Ok(conn)) = tokio::time::timeout(PROBE_TIMEOUT, c.call(url)).await
            {
                // A moment's read: a TLS 1.3 engine refusing our client
                // certificate sends its alert just after the handshake (a
                // content one sends nothing until asked). Then the
                // connection is dropped: only the handshake was wanted.
                let mut io = TokioIo::new(conn);
                let _ = tokio::time::timeout(PROBE_READ, io.read(&mut [0u8; 1])).await;
            }
            if let Some(key) = key
                && let Some(s) = c.health.lock().get_mut(&key)
            {
                s.probing = false;
            }
        });
    }
}

/// The clients of every TLS setting in use, and the default one.
pub struct Clients {
    roots: Arc<RootCertStore>,
    connect_timeout: Duration,
    failures: FailureCounter,
    default: EngineClient,
    by_tls: Mutex<HashMap<EngineTls, EngineClient>>,
}

impl Clients {
    pub fn new(
        roots: Arc<RootCertStore>,
        connect_timeout: Duration,
        failures: FailureCounter,
    ) -> Self {
        let default = EngineClient::new(
            default_config(&roots),
            None,
            connect_timeout,
            failures.clone(),
        );
        Self {
            roots,
            connect_timeout,
            failures,
            default,
            by_tls: Mutex::default(),
        }
    }

    /// The TLS setting of policies without `tls`: system roots, no client
    /// certificate (also what the AWS credential chain speaks to STS with).
    pub fn default_config(&self) -> ClientConfig {
        default_config(&self.roots)
    }

    /// The client of policies without `tls`: system roots, no client certificate.
    pub fn default_client(&self) -> &EngineClient {
        &self.default
    }

    /// The client for `tls`, made on first use and kept (with its pool) for as
    /// long as a configuration uses it.
    pub fn get(&self, tls: Option<&EngineTls>) -> Result<EngineClient, TlsError> {
        let Some(tls) = tls else {
            return Ok(self.default.clone());
        };
        if let Some(c) = self.lock().get(tls) {
            return Ok(c.clone());
        }
        let c = EngineClient::new(
            self.config(tls)?,
            tls.server_name.as_deref(),
            self.connect_timeout,
            self.failures.clone(),
        );
        self.lock().insert(tls.clone(), c.clone());
        Ok(c)
    }

    /// Drops the clients of settings no longer used (routes still serving
    /// hold their own handle, so their transfers are not disturbed).
    pub fn retain(&self, used: &HashSet<&EngineTls>) {
        self.lock().retain(|k, _| used.contains(k));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EngineTls, EngineClient>> {
        self.by_tls.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn config(&self, tls: &EngineTls) -> Result<ClientConfig, TlsError> {
        let mut roots = (*self.roots).clone();
        if let Some(pem) = &tls.ca_pem {
            for c in sluice_policy::pem::ca_bundle(pem.as_bytes()).map_err(TlsError::Ca)? {
                roots.add(c).map_err(|e| TlsError::Ca(e.to_string()))?;
            }
        }
        if let Some(n) = &tls.server_name {
            sluice_policy::pem::server_name(n).map_err(TlsError::ServerName)?;
        }
        let builder = base_config().with_root_certificates(roots);
        match (&tls.client_cert_pem, &tls.client_key_pem) {
            (Some(crt), Some(key)) => {
                let (chain, key) = sluice_policy::pem::client_pair(crt.as_bytes(), key.as_bytes())
                    .map_err(TlsError::ClientCert)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(TlsError::Config)
            }
            (None, None) => Ok(builder.with_no_client_auth()),
            _ => Err(TlsError::ClientCert(
                "a certificate without its key, or a key without its certificate".into(),
            )),
        }
    }
}

/// The platform's roots, no client certificate.
fn default_config(roots: &Arc<RootCertStore>) -> ClientConfig {
    base_config()
        .with_root_certificates(roots.clone())
        .with_no_client_auth()
}

/// TLS 1.3 and 1.2 with the ring provider.
fn base_config() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(sluice_policy::pem::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("the ring provider has cipher suites and groups for TLS 1.3 and 1.2")
}

/// What the last handshakes with each engine (`host:port`) came to.
struct Health {
    seen: Mutex<HashMap<String, Seen>>,
    failures: FailureCounter,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct Seen {
    failure: Option<String>,
    probed: Option<Instant>,
    probing: bool,
}

/// `host:port` of an https URL; None for anything else.
fn endpoint(url: &Uri) -> Option<String> {
    if url.scheme_str() != Some("https") {
        return None;
    }
    Some(format!("{}:{}", url.host()?, url.port_u16().unwrap_or(443)))
}

/// The https connector, recording each handshake's outcome per engine.
#[derive(Clone)]
pub struct Watched {
    inner: HttpsConnector<HttpConnector>,
    health: Arc<Health>,
}

impl Health {
    fn clear(&self, key: &str) {
        if let Some(s) = self.lock().get_mut(key) {
            s.failure = None;
        }
    }

    /// Records `e` against the engine when a TLS reason is in it.
    fn fail(&self, key: &str, e: &(dyn std::error::Error + 'static)) {
        if let Some(reason) = reason(e) {
            self.failures
                .get_or_create(&EngineTlsLabels {
                    reason: reason.what,
                })
                .inc();
            let message = reason.to_string();
            tracing::warn!(engine = %key, reason = %message, "TLS to an engine failed");
            self.lock().entry(key.to_string()).or_default().failure = Some(message);
        }
    }
}

impl Service<Uri> for Watched {
    type Response = Watching;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let key = endpoint(&dst);
        let health = self.health.clone();
        let connecting = self.inner.call(dst);
        Box::pin(async move {
            let r = connecting.await;
            if let Some(key) = &key {
                match &r {
                    Ok(_) => health.clear(key),
                    Err(e) => health.fail(key, &**e),
                }
            }
            r.map(|inner| Watching {
                inner,
                watch: key.map(|k| (health, k)),
            })
        })
    }
}

/// An engine connection that records a TLS failure seen after the
/// handshake: with TLS 1.3 an engine refusing the client certificate says
/// so with an alert the client reads only once its handshake is done.
pub struct Watching {
    inner: MaybeHttpsStream<TokioIo<TcpStream>>,
    watch: Option<(Arc<Health>, String)>,
}

impl hyper::rt::Read for Watching {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let (Poll::Ready(Err(e)), Some((health, key))) = (&r, &self.watch) {
            health.fail(key, e);
        }
        r
    }
}

impl hyper::rt::Write for Watching {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}

impl Connection for Watching {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

/// Why a TLS connection to an engine failed, in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// `certificate not trusted`, `name mismatch`, `expired`, `not yet valid`,
    /// `client certificate refused`, or `TLS error`.
    pub what: &'static str,
    pub detail: String,
    pub hint: &'static str,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.detail)?;
        if !self.hint.is_empty() {
            write!(f, " ({})", self.hint)?;
        }
        Ok(())
    }
}

/// The TLS reason behind an error, if one is in its source chain. rustls'
/// error sits inside `io::Error`s (tokio-rustls, then hyper-rustls wrap it),
/// whose `source()` skips their inner error: those are unwrapped with `get_ref`.
pub fn reason(e: &(dyn std::error::Error + 'static)) -> Option<Reason> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(describe(r));
        }
        cur = match e.downcast_ref::<io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|i| i as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

fn describe(e: &rustls::Error) -> Reason {
    use rustls::CertificateError as C;
    let detail = e.to_string();
    let (what, hint) = match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer | C::BadSignature | C::BadEncoding => (
                "certificate not trusted",
                "its chain does not lead to the system's roots or to tls.caSecretRef",
            ),
            C::NotValidForName | C::NotValidForNameContext { .. } => (
                "name mismatch",
                "the certificate does not name the engine's host; fix the URL or set tls.serverName",
            ),
            C::Expired | C::ExpiredContext { .. } => {
                ("expired", "the engine must renew its certificate")
            }
            C::NotValidYet | C::NotValidYetContext { .. } => (
                "not yet valid",
                "the engine's certificate starts later: check its dates and the clocks",
            ),
            _ => ("certificate not trusted", ""),
        },
        rustls::Error::AlertReceived(a) => {
            use rustls::AlertDescription as A;
            match a {
                A::CertificateRequired
                | A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::AccessDenied => (
                    "client certificate refused",
                    "the engine wants a client certificate it trusts: set tls.clientCertSecretRef",
                ),
                _ => ("TLS error", "the engine refused the handshake"),
            }
        }
        _ => ("TLS error", ""),
    };
    Reason { what, detail, hint }
}

/// An error of the engine client, in words: the TLS reason when there is
/// one (rustls' own message is in it), else the whole source chain.
pub fn explain(e: &(dyn std::error::Error + 'static)) -> String {
    match reason(e) {
        Some(r) => r.to_string(),
        None => super::http::error_chain(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_found_inside_wrapped_io_errors() {
        let inner = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let outer = io::Error::other(inner);
        let r = reason(&outer).unwrap();
        assert_eq!(r.what, "certificate not trusted");
        let r = reason(&rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName,
        ))
        .unwrap();
        assert_eq!(r.what, "name mismatch");
        let r = reason(&rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired,
        ))
        .unwrap();
        assert_eq!(r.what, "client certificate refused");
        assert!(reason(&io::Error::other("refused")).is_none());
        assert_eq!(
            endpoint(&"https://a.test/x".parse().unwrap()).as_deref(),
            Some("a.test:443")
        );
        assert_eq!(endpoint(&"http://a.test/x".parse().unwrap()), None);
    }

    #[test]
    fn a_client_per_setting_and_bad_material_refused() {
        let clients = Clients::new(
            Arc::new(RootCertStore::empty()),
            Duration::from_secs(1),
            FailureCounter::default(),
        );
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["c.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let good = EngineTls {
            ca_pem: Some(cert.pem()),
            client_cert_pem: Some(cert.pem()),
            client_key_pem: Some(key.serialize_pem()),
            server_name: Some("storage.test".into()),
        };
        clients.get(Some(&good)).unwrap();
        clients.get(Some(&good)).unwrap();
        assert_eq!(clients.lock().len(), 1, "one client per distinct setting");
        let bad_ca = EngineTls {
            ca_pem: Some("not a pem".into()),
            ..EngineTls::default()
        };
        assert!(matches!(clients.get(Some(&bad_ca)), Err(TlsError::Ca(_))));
        let half = EngineTls {
            client_cert_pem: Some(cert.pem()),
            ..EngineTls::default()
        };
        assert!(matches!(
            clients.get(Some(&half)),
            Err(TlsError::ClientCert(_))
        ));
        clients.retain(&HashSet::new());
        assert_eq!(clients.lock().len(), 0, "unused settings are dropped");
    }
}
