//! S3 signing keys for policies that name no `credentialsSecret`: the AWS
//! SDKs' default credential chain, loaded once per process, kept in an
//! `ArcSwap` and refreshed before it expires.
//!
//! ```text
//!   main: Settings::from_env(|k| std::env::var(k))    (the only env read)
//!   first S3 route without keys -> Chain::start: one background task
//!     load, in the SDKs' order; the first source that is configured answers:
//!       environment   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN)
//!       web identity  AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE (IRSA) -> STS
//!                     AssumeRoleWithWebIdentity (token file re-read every time)
//!       container     AWS_CONTAINER_CREDENTIALS_{RELATIVE,FULL}_URI (ECS, EKS Pod
//!                     Identity), Authorization from ..._AUTHORIZATION_TOKEN_FILE
//!       imds          IMDSv2: PUT token, GET role, GET keys
//!     ok  -> ArcSwap, waiters woken; next load at min(expiry - 5 min, half the lifetime)
//!     err -> error recorded, retried after 1 s, 2 s, ... 30 s; keys in hand serve on
//!   presign: Chain::current(): one ArcSwap load while the keys are valid; else wait
//!            (bounded by the backend timeout) for the task's next answer, or 502
//! ```
//!
//! A source whose variables are absent is skipped; a source that is configured
//! but fails stops the chain, as in the SDKs (an IRSA pod whose STS call fails
//! must not fall through to the node's instance role).
//!
//! Hand-written rather than a crate, measured against this workspace's lock
//! (cargo tree, Linux target, December 2026):
//! - `aws-config` 1.13 (no default features, `rt-tokio`, with
//!   `aws-smithy-http-client/rustls-ring` to keep aws-lc out): 23 crates new to
//!   the lock, about 230k lines of Rust (aws-sdk-sts is a generated client),
//!   a second HTTP stack beside ours, and rust-version 1.94.1 against our 1.88.
//! - `reqsign-aws-core` 3.2 (+ reqsign-core): 15 new crates, about 95k lines
//!   (quick-xml 0.42, rust-ini and its helpers, asyncband), pluggable HTTP and
//!   env; but its web identity source always calls `https://{endpoint}` and
//!   ignores `AWS_ENDPOINT_URL_STS`, and its chain drops each source's error
//!   into `log` (we use tracing), so "which sources were tried" is lost.
//! - `object_store` 0.14 `aws`: pulls aws-lc-rs/aws-lc-sys (cmake); its
//!   providers are private behind its own S3 client, picked by which variables
//!   are set rather than tried in order, and its web identity refuses http.
//!
//! This module adds no crate to the lock: hyper-util's client with
//! hyper-rustls (ring, platform roots; through kube already), serde_json, and
//! jiff (already compiled for rusty-s3) for `Expiration`. The proxy binary's
//! own tree grows by 9 crates (hyper-rustls, rustls, ring, rustls-webpki,
//! rustls-pki-types, rustls-native-certs, openssl-probe, tokio-rustls,
//! untrusted), the same the HTTPS engines need, with the features kube
//! already builds them with. The cost is this file: about 850 lines of code
//! and 200 of unit tests.
//!
//! Where it differs from the SDKs: no shared config files, SSO or
//! `credential_process` (a pod has none); no IMDSv1 fallback; STS only at its
//! regional endpoint or `AWS_ENDPOINT_URL_STS` (not `AWS_ENDPOINT_URL`, which
//! people set for their S3 endpoint); no "static stability" (the SDK's IMDS
//! source keeps using expired keys when IMDS is down; here expired keys are
//! never used); an authorization token file's trailing newline is trimmed
//! (the SDK refuses it); and keys are refreshed ahead of expiry by a task,
//! not lazily on the request that finds them stale.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use crate::metrics::{CredentialLabels, Metrics};

/// Refresh no later than this before expiry (the SDKs' usual buffer).
const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
/// Keys count as expired this long before their expiry (a presigned request must
/// reach S3 in time), or a quarter of their lifetime when that is shorter.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// Never load more often than this, whatever expiry a source claims.
const MIN_REFRESH: Duration = Duration::from_secs(1);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// The SDKs give metadata endpoints 1-2 s to connect; they are link-local or loopback.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Whole exchange with one endpoint (STS, container, one IMDS step).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read from a credential endpoint.
const MAX_ANSWER: usize = 64 << 10;
const ECS_HOST: &str = "http://169.254.170.2";
const IMDS_V4: &str = "http://169.254.169.254";
const IMDS_V6: &str = "http://[fd00:ec2::254]";
/// IMDSv2 session token lifetime asked for (the SDKs' 6 hours).
const IMDS_TOKEN_TTL: &str = "21600";

/// The AWS variables the chain reads, taken from the process environment once
/// by `main` (`Settings::from_env`). Empty values count as unset, as in the SDKs.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub role_arn: Option<String>,
    pub web_identity_token_file: Option<PathBuf>,
    pub role_session_name: Option<String>,
    /// `AWS_ENDPOINT_URL_STS`; else `https://sts.{region}.amazonaws.com`.
    pub sts_endpoint: Option<String>,
    /// `AWS_REGION`, else `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    pub container_full_uri: Option<String>,
    pub container_relative_uri: Option<String>,
    pub container_token_file: Option<PathBuf>,
    pub container_token: Option<String>,
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else by `..._ENDPOINT_MODE` (IPv4 or IPv6).
    pub imds_endpoint: Option<String>,
    pub imds_ipv6: bool,
    pub imds_disabled: bool,
}

impl Settings {
    /// The chain's variables through `get` (main passes `std::env::var`).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Self {
        let var = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        Settings {
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
            session_token: var("AWS_SESSION_TOKEN"),
            role_arn: var("AWS_ROLE_ARN"),
            web_identity_token_file: var("AWS_WEB_IDENTITY_TOKEN_FILE").map(PathBuf::from),
            role_session_name: var("AWS_ROLE_SESSION_NAME"),
            sts_endpoint: var("AWS_ENDPOINT_URL_STS"),
            region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
            container_full_uri: var("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
            container_relative_uri: var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
            container_token_file: var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE").map(PathBuf::from),
            container_token: var("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
            imds_endpoint: var("AWS_EC2_METADATA_SERVICE_ENDPOINT"),
            imds_ipv6: var("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE")
                .is_some_and(|m| m.eq_ignore_ascii_case("ipv6")),
            imds_disabled: var("AWS_EC2_METADATA_DISABLED")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
        }
    }
}

/// Where a set of keys came from; the `source` label of the refresh metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Environment,
    WebIdentity,
    Container,
    Imds,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Environment => "environment",
            Source::WebIdentity => "web_identity",
            Source::Container => "container",
            Source::Imds => "imds",
        }
    }
}

/// Why a source gave no keys. Variant names are stable: they name the failure in logs.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The source's variables are absent (or, for IMDS, nothing answers): the chain moves on.
    #[error("{0}")]
    NotConfigured(String),
    #[error("{0}")]
    Config(String),
    #[error("reading {path}: {source}")]
    ReadFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {message}")]
    Request { what: String, message: String },
    #[error("{what} answered {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what}: unexpected answer: {message}")]
    Answer { what: String, message: String },
}

/// Keys ready to sign with.
#[derive(Debug)]
pub struct Loaded {
    pub keys: rusty_s3::Credentials,
    /// None: keys that do not expire (environment without a session).
    pub expires: Option<SystemTime>,
    /// Past this the keys are not used (expiry minus the margin).
    usable_until: Option<SystemTime>,
    pub source: Source,
}

impl Loaded {
    fn new(
        source: Source,
        id: String,
        secret: String,
        token: Option<String>,
        expires: Option<SystemTime>,
        now: SystemTime,
    ) -> Self {
        let keys = match token {
            Some(t) if !t.is_empty() => rusty_s3::Credentials::new_with_token(id, secret, t),
            _ => rusty_s3::Credentials::new(id, secret),
        };
        let usable_until = expires.map(|e| {
            let life = e.duration_since(now).unwrap_or_default();
            e - EXPIRY_MARGIN.min(life / 4)
        });
        Loaded {
            keys,
            expires,
            usable_until,
            source,
        }
    }

    pub fn usable(&self, now: SystemTime) -> bool {
        self.usable_until.is_none_or(|u| now < u)
    }
}

/// When to load again after keys expiring at `expires` were loaded at `now`:
/// the earlier of 5 minutes before expiry and half the remaining lifetime;
/// keys with 5 minutes or less to live at half their remaining life, so
/// short-lived keys (seconds, in a test) refresh well before the boundary, and
/// a source that hands out the same keys until close to their expiry (IMDS
/// does) is asked a few times, not in a loop.
pub fn refresh_in(expires: Option<SystemTime>, now: SystemTime) -> Option<Duration> {
    let left = expires?.duration_since(now).unwrap_or_default();
    let before = left.saturating_sub(REFRESH_BEFORE);
    let half = left / 2;
    let at = if before.is_zero() {
        half
    } else {
        before.min(half)
    };
    Some(at.max(MIN_REFRESH))
}

#[derive(Default)]
struct State {
    loaded: Option<Arc<Loaded>>,
    /// The last load's failure, while no load has succeeded since.
    error: Option<Arc<str>>,
    /// A load has finished (either way).
    answered: bool,
}

type HttpsClient =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The process's credential chain: one per process, shared by every S3 route
/// without static keys.
pub struct Chain {
    settings: Settings,
    state: ArcSwap<State>,
    /// Woken after every load, for requests waiting on one.
    changed: Notify,
    /// A request found the keys expired: load now rather than at the planned time.
    kick: Notify,
    started: AtomicBool,
    refreshes: Family<CredentialLabels, Counter>,
    expiry: Gauge,
    /// TLS to STS and container endpoints: the engines' default setting
    /// (the platform's roots, read once at start by `backend::tls`).
    tls: rustls::ClientConfig,
}

impl Chain {
    pub fn new(settings: Settings, metrics: &Metrics, tls: rustls::ClientConfig) -> Arc<Self> {
        Arc::new(Chain {
            settings,
            tls,
            state: ArcSwap::from_pointee(State::default()),
            changed: Notify::new(),
            kick: Notify::new(),
            started: AtomicBool::new(false),
            refreshes: metrics.s3_credentials_refresh.clone(),
            expiry: metrics.s3_credentials_expiry.clone(),
        })
    }

    /// Starts the loading task, once; a no-op outside a tokio runtime (the
    /// first request starts it then).
    pub fn start(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        rt.spawn(self.clone().run());
    }

    /// Keys to sign with now. Valid keys cost one `ArcSwap` load; otherwise
    /// this waits up to `wait` for the loading task's next answer.
    pub async fn current(self: &Arc<Self>, wait: Duration) -> Result<Arc<Loaded>, String> {
        let now = SystemTime::now();
        if let Some(l) = self.state.load().loaded.as_ref()
            && l.usable(now)
        {
            return Ok(l.clone());
        }
        self.start();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let st = self.state.load();
            if let Some(l) = st.loaded.as_ref()
                && l.usable(SystemTime::now())
            {
                return Ok(l.clone());
            }
            if let Some(e) = &st.error {
                return Err(match &st.loaded {
                    Some(l) => format!(
                        "S3 credentials from {} expired{} and refreshing them failed: {e}",
                        l.source.label(),
                        l.expires
                            .map(|t| format!(" at {}", rfc3339(t)))
                            .unwrap_or_default()
                    ),
                    None => e.to_string(),
                });
            }
            self.kick.notify_one();
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(format!(
                    "no S3 credentials within {wait:?}: the AWS credential chain has not answered yet"
                ));
            }
        }
    }

    fn usable(&self) -> bool {
        self.state
            .load()
            .loaded
            .as_ref()
            .is_some_and(|l| l.usable(SystemTime::now()))
    }

    /// For /readyz: why requests would fail now, if they would.
    pub fn problem(&self) -> Option<String> {
        let st = self.state.load();
        if st
            .loaded
            .as_ref()
            .is_some_and(|l| l.usable(SystemTime::now()))
        {
            return None;
        }
        Some(match (&st.error, st.answered) {
            (Some(e), _) => e.to_string(),
            (None, false) => "loading S3 credentials from the AWS credential chain".into(),
            (None, true) => "S3 credentials expired; refreshing".into(),
        })
    }

    async fn run(self: Arc<Self>) {
        let client = https_client(self.tls.clone());
        let mut last: Option<Source> = None;
        let mut backoff = FIRST_RETRY;
        loop {
            match self.load(&client).await {
                Ok(l) => {
                    let now = SystemTime::now();
                    self.count(Some(l.source), "ok");
                    let next = refresh_in(l.expires, now);
                    let expires_in = l
                        .expires
                        .map(|e| e.duration_since(now).unwrap_or_default().as_secs());
                    if last != Some(l.source) {
                        tracing::info!(
                            source = l.source.label(),
                            expires_in_s = expires_in,
                            session = l.keys.token().is_some(),
                            "S3 credentials loaded from the AWS credential chain"
                        );
                    } else {
                        tracing::info!(
                            source = l.source.label(),
                            expires_in_s = expires_in,
                            "S3 credentials refreshed"
                        );
                    }
                    last = Some(l.source);
                    self.expiry.set(
                        l.expires
                            .and_then(|e| e.duration_since(SystemTime::UNIX_EPOCH).ok())
                            .map_or(0, |d| d.as_secs() as i64),
                    );
                    self.state.store(Arc::new(State {
                        loaded: Some(Arc::new(l)),
                        error: None,
                        answered: true,
                    }));
                    self.changed.notify_waiters();
                    backoff = FIRST_RETRY;
                    // Keys without expiry (the environment's) never change in this process.
                    let Some(next) = next else { return };
                    let until = tokio::time::Instant::now() + next;
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep_until(until) => break,
                            // A kick left from before this load is stale while the keys are valid.
                            _ = self.kick.notified() => if !self.usable() { break },
                        }
                    }
                }
                Err((source, e)) => {
                    self.count(source, "error");
                    let cur = self.state.load_full();
                    let still = cur
                        .loaded
                        .as_ref()
                        .filter(|l| l.usable(SystemTime::now()))
                        .map(|l| l.source.label());
                    tracing::warn!(
                        error = %e,
                        retry_in_ms = backoff.as_millis() as u64,
                        serving_keys_from = still,
                        "loading S3 credentials failed"
                    );
                    self.state.store(Arc::new(State {
                        loaded: cur.loaded.clone(),
                        error: Some(e.into()),
                        answered: true,
                    }));
                    self.changed.notify_waiters();
                    // Not woken by requests: a failing source is retried on its own schedule.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_RETRY);
                }
            }
        }
    }

    fn count(&self, source: Option<Source>, result: &'static str) {
        self.refreshes
            .get_or_create(&CredentialLabels {
                source: source.map_or("none", Source::label),
                result,
            })
            .inc();
    }

    /// One pass down the chain: the first configured source's keys, or why none.
    async fn load(&self, client: &HttpsClient) -> Result<Loaded, (Option<Source>, String)> {
        let s = &self.settings;
        let mut skipped = Vec::new();
        for source in [
            Source::Environment,
            Source::WebIdentity,
            Source::Container,
            Source::Imds,
        ] {
            let r = match source {
                Source::Environment => environment(s),
                Source::WebIdentity => web_identity(s, client).await,
                Source::Container => container(s, client).await,
                Source::Imds => imds(s, client).await,
            };
            match r {
                Ok(l) => return Ok(l),
                Err(LoadError::NotConfigured(why)) => {
                    skipped.push(format!("{}: {why}", source.label()))
                }
                Err(e) => {
                    return Err((
                        Some(source),
                        format!("S3 credentials from {}: {e}", source.label()),
                    ));
                }
            }
        }
        Err((
            None,
            format!(
                "no AWS credentials for S3 (the policy names no credentialsSecret); tried {}",
                skipped.join("; ")
            ),
        ))
    }
}

fn environment(s: &Settings) -> Result<Loaded, LoadError> {
    match (&s.access_key_id, &s.secret_access_key) {
        (Some(id), Some(secret)) => Ok(Loaded::new(
            Source::Environment,
            id.clone(),
            secret.clone(),
            s.session_token.clone(),
            None,
            SystemTime::now(),
        )),
        (Some(_), None) => Err(LoadError::NotConfigured(
            "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into(),
        )),
        (None, Some(_)) => Err(LoadError::NotConfigured(
            "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into(),
        )),
        (None, None) => Err(LoadError::NotConfigured("AWS_ACCESS_KEY_ID not set".into())),
    }
}

/// The STS endpoint: `AWS_ENDPOINT_URL_STS`, else the region's.
fn sts_endpoint(s: &Settings) -> Result<String, LoadError> {
    if let Some(e) = &s.sts_endpoint {
        return Ok(e.clone());
    }
    let region = s.region.as_deref().ok_or_else(|| {
        LoadError::Config(
            "AWS_REGION (or AWS_DEFAULT_REGION) is needed for the regional STS endpoint; or set AWS_ENDPOINT_URL_STS"
                .into(),
        )
    })?;
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    Ok(format!("https://sts.{region}.{suffix}"))
}

async fn web_identity(s: &Settings, client: &HttpsClient) -> Result<Loaded, LoadError> {
    let Some(token_file) = &s.web_identity_token_file else {
        return Err(LoadError::NotConfigured(
            "AWS_WEB_IDENTITY_TOKEN_FILE not set".into(),
        ));
    };
    let Some(role_arn) = &s.role_arn else {
        return Err(LoadError::NotConfigured(
            "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not".into(),
        ));
    };
    let endpoint = sts_endpoint(s)?;
    // Re-read every time: the kubelet rotates the projected token.
    let token = read_token(token_file).await?;
    let now = SystemTime::now();
    let session = s.role_session_name.clone().unwrap_or_else(|| {
        let ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        format!("sluice-web-identity-{ms}")
    });
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("Action", "AssumeRoleWithWebIdentity")
        .append_pair("Version", "2011-06-15")
        .append_pair("RoleArn", role_arn)
        .append_pair("RoleSessionName", &session)
        .append_pair("WebIdentityToken", &token)
        .finish();
    let url = format!("{}/", endpoint.trim_end_matches('/'));
    let req = Request::builder()
        .method(Method::POST)
        .uri(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/xml")
        .body(Full::new(Bytes::from(form)))
        .map_err(|e| LoadError::Config(format!("STS endpoint {url:?}: {e}")))?;
    let what = format!("STS AssumeRoleWithWebIdentity at {url}");
    let (status, body) = fetch(client, req, &what).await?;
    if !status.is_success() {
        return Err(LoadError::Status {
            what,
            status: status.as_u16(),
            body: sts_error(&body),
        });
    }
    let c = parse_sts(&body).map_err(|m| LoadError::Answer {
        what: what.clone(),
        message: m,
    })?;
    let expires = parse_time(&c.expiration).map_err(|m| LoadError::Answer { what, message: m })?;
    Ok(Loaded::new(
        Source::WebIdentity,
        c.access_key_id,
        c.secret_access_key,
        Some(c.session_token),
        Some(expires),
        SystemTime::now(),
    ))
}

async fn container(s: &Settings, client: &HttpsClient) -> Result<Loaded, LoadError> {
    // The relative URI (ECS) wins over the full one, as in the SDKs.
    let url = match (&s.container_relative_uri, &s.container_full_uri) {
        (Some(rel), _) => format!("{ECS_HOST}{rel}"),
        (None, Some(full)) => {
            check_full_uri(full).await?;
            full.clone()
        }
        (None, None) => {
            return Err(LoadError::NotConfigured(
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and AWS_CONTAINER_CREDENTIALS_FULL_URI not set"
                    .into(),
            ));
        }
    };
    // The file wins over the variable, and is re-read every time (EKS rotates it).
    let auth = match (&s.container_token_file, &s.container_token) {
        (Some(f), _) => Some(read_token(f).await?),
        (None, Some(t)) => Some(t.clone()),
        (None, None) => None,
    };
    let mut req = Request::builder().method(Method::GET).uri(&url);
    if let Some(a) = &auth {
        let v = http::HeaderValue::from_str(a).map_err(|_| {
            // Never the token itself in a message.
            LoadError::Config(format!(
                "the container authorization token ({} bytes) is not a valid header value",
                a.len()
            ))
        })?;
        req = req.header("authorization", v);
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| LoadError::Config(format!("container credentials URI {url:?}: {e}")))?;
    let what = format!("container credentials at {url}");
    let (status, body) = fetch(client, req, &what).await?;
    if !status.is_success() {
        return Err(LoadError::Status {
            what,
            status: status.as_u16(),
            body: snippet(&body),
        });
    }
    json_keys(Source::Container, &body, &what)
}

/// The SDKs' rule for a full URI: https, or http to a loopback address or to
/// the ECS/EKS agents' link-local addresses.
async fn check_full_uri(full: &str) -> Result<(), LoadError> {
    let u: url::Url = full.parse().map_err(|e| {
        LoadError::Config(format!("AWS_CONTAINER_CREDENTIALS_FULL_URI {full:?}: {e}"))
    })?;
    if u.scheme() == "https" {
        return Ok(());
    }
    let allowed = |ip: IpAddr| {
        ip.is_loopback()
            || ip == IpAddr::from([169, 254, 170, 2])
            || ip == IpAddr::from([169, 254, 170, 23])
            || ip == IpAddr::from([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23])
    };
    let ok = match u.host() {
        _ if u.scheme() != "http" => false,
        Some(url::Host::Ipv4(a)) => allowed(a.into()),
        Some(url::Host::Ipv6(a)) => allowed(a.into()),
        Some(url::Host::Domain(d)) => {
            let port = u.port_or_known_default().unwrap_or(80);
            match tokio::net::lookup_host((d, port)).await {
                Ok(addrs) => {
                    let addrs: Vec<_> = addrs.collect();
                    !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
                }
                Err(_) => false,
            }
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(LoadError::Config(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI {full:?} must be https, or http to a loopback address, 169.254.170.2, 169.254.170.23 or fd00:ec2::23"
        )))
    }
}

async fn imds(s: &Settings, client: &HttpsClient) -> Result<Loaded, LoadError> {
    if s.imds_disabled {
        return Err(LoadError::NotConfigured(
            "disabled by AWS_EC2_METADATA_DISABLED".into(),
        ));
    }
    let base = s
        .imds_endpoint
        .clone()
        .unwrap_or_else(|| if s.imds_ipv6 { IMDS_V6 } else { IMDS_V4 }.into());
    let base = base.trim_end_matches('/');
    let token_url = format!("{base}/latest/api/token");
    let req = Request::builder()
        .method(Method::PUT)
        .uri(&token_url)
        .header("x-aws-ec2-metadata-token-ttl-seconds", IMDS_TOKEN_TTL)
        .body(Full::new(Bytes::new()))
        .map_err(|e| LoadError::Config(format!("IMDS endpoint {base:?}: {e}")))?;
    let what = format!("IMDSv2 token at {token_url}");
    let (status, token) = match send(client, req, &what).await {
        Ok(r) => r,
        // Nothing listening: not on EC2, as the SDKs read it.
        Err(Sent::Unreachable(m)) => {
            return Err(LoadError::NotConfigured(format!("{what}: {m}")));
        }
        Err(Sent::Failed(e)) => return Err(e),
    };
    if !status.is_success() {
        return Err(LoadError::Status {
            what,
            status: status.as_u16(),
            body: snippet(&token),
        });
    }
    let token = String::from_utf8(token.to_vec()).map_err(|_| LoadError::Answer {
        what: what.clone(),
        message: "token is not text".into(),
    })?;
    let get = |path: String| {
        let token = token.trim().to_string();
        async move {
            let url = format!("{base}{path}");
            let req = Request::builder()
                .method(Method::GET)
                .uri(&url)
                .header("x-aws-ec2-metadata-token", token)
                .body(Full::new(Bytes::new()))
                .map_err(|e| LoadError::Config(format!("IMDS URL {url:?}: {e}")))?;
            let what = format!("IMDS {url}");
            let (status, body) = fetch(client, req, &what).await?;
            Ok::<_, LoadError>((what, status, body))
        }
    };
    let (what, status, body) = get("/latest/meta-data/iam/security-credentials/".into()).await?;
    if status == StatusCode::NOT_FOUND {
        return Err(LoadError::NotConfigured(format!(
            "{what} answered 404: this instance has no IAM role"
        )));
    }
    if !status.is_success() {
        return Err(LoadError::Status {
            what,
            status: status.as_u16(),
            body: snippet(&body),
        });
    }
    let role = String::from_utf8_lossy(&body)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
        .ok_or_else(|| LoadError::Answer {
            what: what.clone(),
            message: "no role name".into(),
        })?;
    let role_path: String =
        url::form_urlencoded::byte_serialize(role.as_bytes()).collect::<String>();
    let (what, status, body) = get(format!(
        "/latest/meta-data/iam/security-credentials/{role_path}"
    ))
    .await?;
    if !status.is_success() {
        return Err(LoadError::Status {
            what,
            status: status.as_u16(),
            body: snippet(&body),
        });
    }
    json_keys(Source::Imds, &body, &what)
}

/// The JSON both container endpoints and IMDS answer with.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JsonKeys {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    expiration: Option<String>,
}

fn json_keys(source: Source, body: &[u8], what: &str) -> Result<Loaded, LoadError> {
    let answer = |message: String| LoadError::Answer {
        what: what.to_string(),
        message,
    };
    let j: JsonKeys = serde_json::from_slice(body).map_err(|e| answer(format!("not JSON: {e}")))?;
    if let Some(code) = j.code.as_deref().filter(|c| *c != "Success") {
        return Err(answer(format!(
            "{code}: {}",
            j.message.as_deref().unwrap_or("")
        )));
    }
    let (Some(id), Some(secret)) = (j.access_key_id, j.secret_access_key) else {
        return Err(answer("no AccessKeyId or SecretAccessKey".into()));
    };
    let expires = match &j.expiration {
        Some(e) => Some(parse_time(e).map_err(answer)?),
        None => None,
    };
    Ok(Loaded::new(
        source,
        id,
        secret,
        j.token,
        expires,
        SystemTime::now(),
    ))
}

struct StsKeys {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: String,
}

/// `AssumeRoleWithWebIdentityResponse/AssumeRoleWithWebIdentityResult/Credentials`.
/// Four leaf elements of a fixed document: read by name rather than with an XML
/// crate (rusty-s3's instant-xml wants typed structs per document).
fn parse_sts(body: &[u8]) -> Result<StsKeys, String> {
    let text = std::str::from_utf8(body).map_err(|_| "not UTF-8".to_string())?;
    let creds = element(text, "Credentials").ok_or("no <Credentials> element")?;
    let get = |name: &str| {
        element(creds, name)
            .map(|v| unescape(v.trim()))
            .ok_or_else(|| format!("no <{name}> in <Credentials>"))
    };
    Ok(StsKeys {
        access_key_id: get("AccessKeyId")?,
        secret_access_key: get("SecretAccessKey")?,
        session_token: get("SessionToken")?,
        expiration: get("Expiration")?,
    })
}

/// `ErrorResponse/Error/{Code,Message}` in words, else the start of the body.
fn sts_error(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match (element(&text, "Code"), element(&text, "Message")) {
        (Some(c), Some(m)) => format!("{}: {}", unescape(c.trim()), unescape(m.trim())),
        (Some(c), None) => unescape(c.trim()),
        _ => snippet(body),
    }
}

/// The content of the first `<name>...</name>` (also with attributes or a namespace prefix-free name).
fn element<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(i) = text[from..].find(&format!("<{name}")) {
        let start = from + i + 1 + name.len();
        let rest = &text[start..];
        // `<Name>` or `<Name attr=...>`, not `<NameLonger>`.
        match rest.chars().next() {
            Some('>') | Some(' ') | Some('\t') | Some('\r') | Some('\n') => {
                let open_end = start + rest.find('>')? + 1;
                let close = text[open_end..].find(&format!("</{name}>"))?;
                return Some(&text[open_end..open_end + close]);
            }
            _ => from = start,
        }
    }
    None
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn parse_time(s: &str) -> Result<SystemTime, String> {
    let t: jiff::Timestamp = s
        .trim()
        .parse()
        .map_err(|e| format!("Expiration {s:?}: {e}"))?;
    Ok(SystemTime::from(t))
}

fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(300).collect()
}

/// A token file's content: trimmed (a trailing newline is not part of a token).
async fn read_token(path: &std::path::Path) -> Result<String, LoadError> {
    let t = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| LoadError::ReadFile {
            path: path.display().to_string(),
            source: e,
        })?;
    let t = t.trim();
    if t.is_empty() {
        return Err(LoadError::Config(format!("{} is empty", path.display())));
    }
    Ok(t.to_string())
}

/// `send`, where even an endpoint that cannot be reached is a failure.
async fn fetch(
    client: &HttpsClient,
    req: Request<Full<Bytes>>,
    what: &str,
) -> Result<(StatusCode, Bytes), LoadError> {
    send(client, req, what).await.map_err(|e| match e {
        Sent::Failed(e) => e,
        Sent::Unreachable(message) => LoadError::Request {
            what: what.to_string(),
            message,
        },
    })
}

enum Sent {
    /// No connection could be made (refused, unreachable, timed out connecting).
    Unreachable(String),
    Failed(LoadError),
}

async fn send(
    client: &HttpsClient,
    req: Request<Full<Bytes>>,
    what: &str,
) -> Result<(StatusCode, Bytes), Sent> {
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| {
            let msg = super::http::error_chain(&e);
            if e.is_connect() {
                Sent::Unreachable(msg)
            } else {
                Sent::Failed(LoadError::Request {
                    what: what.to_string(),
                    message: msg,
                })
            }
        })?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| {
                Sent::Failed(LoadError::Request {
                    what: what.to_string(),
                    message: format!("reading the answer: {e}"),
                })
            })?
            .to_bytes();
        Ok((status, body))
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(r) => r,
        Err(_) => Err(Sent::Failed(LoadError::Request {
            what: what.to_string(),
            message: format!("no answer within {REQUEST_TIMEOUT:?}"),
        })),
    }
}

/// http and https, HTTP/1.1, certificates checked against the platform's
/// root store (what the SDKs use on Linux: the image's CA bundle).
fn https_client(tls: rustls::ClientConfig) -> HttpsClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn settings_read_the_sdk_names_and_skip_empty_values() {
        let env: HashMap<&str, &str> = [
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/t"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://169.254.170.23/v1/credentials",
            ),
            ("AWS_EC2_METADATA_DISABLED", "TRUE"),
        ]
        .into();
        let s = Settings::from_env(|k| env.get(k).map(|v| v.to_string()));
        assert_eq!(s.access_key_id, None);
        assert_eq!(s.role_arn.as_deref(), Some("arn:aws:iam::1:role/r"));
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert!(s.imds_disabled);
        assert_eq!(
            sts_endpoint(&s).unwrap(),
            "https://sts.eu-west-1.amazonaws.com"
        );
        let cn = Settings {
            region: Some("cn-north-1".into()),
            ..Settings::default()
        };
        assert_eq!(
            sts_endpoint(&cn).unwrap(),
            "https://sts.cn-north-1.amazonaws.com.cn"
        );
        assert!(matches!(
            sts_endpoint(&Settings::default()),
            Err(LoadError::Config(_))
        ));
    }

    #[test]
    fn refresh_at_the_earlier_of_five_minutes_before_and_half_the_life() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |secs| refresh_in(Some(now + Duration::from_secs(secs)), now);
        assert_eq!(at(3600), Some(Duration::from_secs(1800)));
        assert_eq!(at(900), Some(Duration::from_secs(450)));
        assert_eq!(at(301), Some(Duration::from_secs(1)));
        assert_eq!(at(240), Some(Duration::from_secs(120)));
        assert_eq!(at(6), Some(Duration::from_secs(3)));
        assert_eq!(at(0), Some(Duration::from_secs(1)));
        assert_eq!(refresh_in(None, now), None);
        // A 6 s key is usable for 4.5 s (a quarter of its life as the margin), an hour's until 10 s before.
        let l = Loaded::new(
            Source::Container,
            "a".into(),
            "b".into(),
            Some("t".into()),
            Some(now + Duration::from_secs(6)),
            now,
        );
        assert!(l.usable(now + Duration::from_millis(4400)));
        assert!(!l.usable(now + Duration::from_millis(4600)));
        let l = Loaded::new(
            Source::Imds,
            "a".into(),
            "b".into(),
            None,
            Some(now + Duration::from_secs(3600)),
            now,
        );
        assert!(l.usable(now + Duration::from_secs(3589)));
        assert!(!l.usable(now + Duration::from_secs(3591)));
        assert_eq!(l.keys.token(), None);
    }

    #[test]
    fn sts_answer_and_error() {
        let ok = br#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:ns:sa</SubjectFromWebIdentityToken>
    <Credentials>
      <SessionToken>FwoG&amp;token</SessionToken>
      <SecretAccessKey>wJalr</SecretAccessKey>
      <Expiration>2026-12-07T16:00:00Z</Expiration>
      <AccessKeyId>ASIA1</AccessKeyId>
    </Credentials>
    <AssumedRoleUser><Arn>arn:aws:sts::1:assumed-role/r/s</Arn><AssumedRoleId>AROA:s</AssumedRoleId></AssumedRoleUser>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"#;
        let k = parse_sts(ok).unwrap();
        assert_eq!(k.access_key_id, "ASIA1");
        assert_eq!(k.secret_access_key, "wJalr");
        assert_eq!(k.session_token, "FwoG&token");
        let t = parse_time(&k.expiration).unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_796_659_200
        );
        assert!(parse_sts(b"<x/>").is_err());
        let err = br#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>Token expired</Message></Error></ErrorResponse>"#;
        assert_eq!(sts_error(err), "InvalidIdentityToken: Token expired");
    }

    #[test]
    fn container_and_imds_json() {
        let j = br#"{"AccessKeyId":"ASIA2","SecretAccessKey":"s","Token":"t","Expiration":"2026-12-07T16:00:00Z","RoleArn":"arn"}"#;
        let l = json_keys(Source::Container, j, "x").unwrap();
        assert_eq!(l.keys.key(), "ASIA2");
        assert_eq!(l.keys.token(), Some("t"));
        assert!(l.expires.is_some());
        let imds = br#"{"Code":"Success","LastUpdated":"2026-12-07T15:00:00Z","Type":"AWS-HMAC","AccessKeyId":"ASIA3","SecretAccessKey":"s","Token":"t","Expiration":"2026-12-07T21:00:00Z"}"#;
        assert_eq!(
            json_keys(Source::Imds, imds, "x").unwrap().source,
            Source::Imds
        );
        let failed = br#"{"Code":"AssumeRoleUnauthorizedAccess","Message":"no"}"#;
        let e = json_keys(Source::Imds, failed, "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("AssumeRoleUnauthorizedAccess"), "{e}");
        assert!(json_keys(Source::Container, b"{}", "x").is_err());
        assert!(json_keys(Source::Container, b"<html>", "x").is_err());
    }

    #[tokio::test]
    async fn full_uri_rule() {
        for ok in [
            "https://creds.example.com/x",
            "http://127.0.0.1:8080/creds",
            "http://169.254.170.23/v1/credentials",
            "http://[fd00:ec2::23]/v1/credentials",
            "http://localhost:1/x",
        ] {
            assert!(check_full_uri(ok).await.is_ok(), "{ok}");
        }
        for bad in [
            "http://169.254.171.23/c",
            "http://10.0.0.1/c",
            "ftp://127.0.0.1/c",
        ] {
            assert!(check_full_uri(bad).await.is_err(), "{bad}");
        }
    }

    fn no_roots() -> rustls::ClientConfig {
        crate::backend::tls::Clients::new(
            Arc::new(rustls::RootCertStore::empty()),
            Duration::from_secs(1),
            Default::default(),
        )
        .default_config()
    }

    #[tokio::test]
    async fn no_source_says_what_was_tried() {
        let s = Settings {
            imds_disabled: true,
            ..Settings::default()
        };
        let chain = Chain::new(s, &Metrics::default(), no_roots());
        let Err((source, e)) = chain.load(&https_client(no_roots())).await else {
            panic!("loaded from nothing")
        };
        assert_eq!(source, None);
        for s in [
            "environment: AWS_ACCESS_KEY_ID not set",
            "web_identity: AWS_WEB_IDENTITY_TOKEN_FILE not set",
            "container: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "imds: disabled by AWS_EC2_METADATA_DISABLED",
        ] {
            assert!(e.contains(s), "{s:?} in {e}");
        }
        // Environment keys win, and carry their session token.
        let s = Settings {
            access_key_id: Some("AKIA".into()),
            secret_access_key: Some("s".into()),
            session_token: Some("t".into()),
            role_arn: Some("arn".into()),
            web_identity_token_file: Some("/nonexistent".into()),
            ..Settings::default()
        };
        let chain = Chain::new(s, &Metrics::default(), no_roots());
        let l = chain.load(&https_client(no_roots())).await.ok().unwrap();
        assert_eq!(l.source, Source::Environment);
        assert_eq!(l.keys.token(), Some("t"));
        assert_eq!(l.expires, None);
    }
}
