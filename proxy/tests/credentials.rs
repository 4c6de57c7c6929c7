//! The AWS credential chain of S3 policies without `credentialsSecret`,
//! against s3s-fs (a real S3 server that checks every SigV4 signature) and
//! stand-ins for the AWS credential services.
//!
//! ```text
//!   curl -> sluice-proxy --presigned, X-Amz-Security-Token--> S3 gate -> s3s-fs
//!              |  chain: env | web identity | container | IMDSv2        (checks the
//!              v                                                         token was issued
//!          STS / container / IMDS stand-ins: issue s3s-fs's keys with   and has not
//!          a fresh session token and a short Expiration each time       expired)
//! ```
//! The stand-ins are hyper servers on 127.0.0.1 written here, because no real
//! STS, EKS Pod Identity agent or instance metadata service can run on a
//! build machine; they speak the real wire formats (STS's form POST and XML
//! answer, the container endpoints' JSON with `Token` and `Expiration`,
//! IMDSv2's token PUT) and check what the SDKs send (Action, RoleArn, the
//! token file's content as WebIdentityToken or Authorization). The S3 gate
//! in front of s3s-fs plays AWS's part of refusing a session token it did not
//! issue or that has expired; s3s-fs checks the signature, which covers the
//! token in the presigned query (`the_gate_and_s3s_fs_refuse_what_aws_would`
//! shows both bite). One STS stand-in speaks TLS with a test CA, so the
//! chain's HTTPS client and its platform roots are exercised too. s3s-fs or
//! openssl missing fails these tests: they never skip.

mod common;
mod engines;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use common::*;
use engines::{Engine, S3_ACCESS, S3_BUCKET, S3_SECRET, files_under};
use http::{Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

const ROLE_ARN: &str = "arn:aws:iam::111122223333:role/sluice-uploads";
/// Part size asked of the proxy, so a 6 MiB upload is a multipart upload (every presign site).
const PART: &str = "5242880";
const BIG: usize = 6 << 20;

type Body = BoxBody<Bytes, hyper::Error>;

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> http::Response<Body> {
    http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()).map_err(|e| match e {}).boxed())
        .expect("response")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("stand-in runtime")
}

/// Serves `handler` over HTTP/1.1 on a loopback port of the stand-in runtime.
fn serve<F, Fut>(rt: &tokio::runtime::Runtime, handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = http::Response<Body>> + Send + 'static,
{
    serve_on(rt, None, handler)
}

/// `serve`, over TLS when given an acceptor.
fn serve_on<F, Fut>(
    rt: &tokio::runtime::Runtime,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: F,
) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = http::Response<Body>> + Send + 'static,
{
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("stand-in port");
    let addr = listener.local_addr().expect("stand-in addr");
    rt.spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (h, tls) = (handler.clone(), tls.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let h = h.clone();
                    async move { Ok::<_, Infallible>(h(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new();
                let _ = match tls {
                    None => conn.serve_connection(TokioIo::new(s), svc).await,
                    Some(a) => match a.accept(s).await {
                        Ok(t) => conn.serve_connection(TokioIo::new(t), svc).await,
                        Err(e) => {
                            eprintln!("stand-in TLS handshake: {e}");
                            return;
                        }
                    },
                };
            });
        }
    });
    addr
}

/// A test CA (`ca.pem`) and a server certificate it signed for localhost and
/// 127.0.0.1 (`server.pem`, `server.key`), made with the openssl CLI.
#[allow(deprecated)] // rustls 0.23.48's ring provider: see backend::credentials::https_client
fn test_pki(dir: &std::path::Path) -> (PathBuf, tokio_rustls::TlsAcceptor) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let f = |n: &str| dir.join(n);
    let p = |n: &str| path_str(&dir.join(n)).to_string();
    let (ca_key, ca_pem, key, csr, cert, ext) = (
        p("ca.key"),
        p("ca.pem"),
        p("server.key"),
        p("server.csr"),
        p("server.pem"),
        p("ext.cnf"),
    );
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let run = |args: String| openssl(&args.split(' ').collect::<Vec<_>>());
    run(format!(
        "req -x509 {ec} -keyout {ca_key} -out {ca_pem} -days 2 -subj /CN=sluice-test-CA"
    ));
    run(format!(
        "req {ec} -keyout {key} -out {csr} -subj /CN=localhost"
    ));
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext.cnf");
    run(format!(
        "x509 -req -in {csr} -CA {ca_pem} -CAkey {ca_key} -CAcreateserial -days 2 -out {cert} -extfile {ext}"
    ));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(f("server.pem"))
        .expect("server.pem")
        .collect::<Result<_, _>>()
        .expect("server.pem certificates");
    let key = PrivateKeyDer::from_pem_file(f("server.key")).expect("server.key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server certificate");
    (
        f("ca.pem"),
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    )
}

/// Session credentials handed out by a stand-in: s3s-fs's keys, a new token each time.
struct Issuer {
    lifetime: Duration,
    /// (session token, expiry), in the order issued.
    issued: Mutex<Vec<(String, SystemTime)>>,
    /// What a stand-in found wrong in a request it was sent.
    problems: Mutex<Vec<String>>,
    /// The container endpoint answers 500 while set (an agent outage).
    down: AtomicBool,
}

impl Issuer {
    fn new(lifetime: Duration) -> Arc<Self> {
        Arc::new(Issuer {
            lifetime,
            issued: Mutex::new(Vec::new()),
            problems: Mutex::new(Vec::new()),
            down: AtomicBool::new(false),
        })
    }

    /// A fresh token expiring `lifetime` from now, on a whole second as AWS writes it.
    fn issue(&self, who: &str) -> (String, String) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let exp = now + self.lifetime.as_secs();
        let mut issued = self.issued.lock().expect("issued");
        let token = format!("{who}-session-{}-{}", issued.len() + 1, exp);
        issued.push((
            token.clone(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(exp),
        ));
        let when = jiff::Timestamp::from_second(exp as i64).expect("timestamp");
        (token, when.to_string())
    }

    fn count(&self) -> usize {
        self.issued.lock().expect("issued").len()
    }

    /// None when `token` was issued here and has not expired.
    fn refuse(&self, token: &str) -> Option<String> {
        let issued = self.issued.lock().expect("issued");
        match issued.iter().find(|(t, _)| t == token) {
            None => Some(format!("session token {token:?} was never issued")),
            Some((_, exp)) if SystemTime::now() >= *exp => {
                Some(format!("session token {token:?} has expired"))
            }
            Some(_) => None,
        }
    }

    fn problem(&self, p: String) {
        eprintln!("stand-in: {p}");
        self.problems.lock().expect("problems").push(p);
    }

    fn problems(&self) -> Vec<String> {
        self.problems.lock().expect("problems").clone()
    }
}

async fn form(req: Request<Incoming>) -> (http::request::Parts, HashMap<String, String>) {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut f: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if let Some(q) = parts.uri.query() {
        f.extend(url::form_urlencoded::parse(q.as_bytes()).into_owned());
    }
    (parts, f)
}

fn sts_error(status: StatusCode, code: &str, message: &str) -> http::Response<Body> {
    full(
        status,
        "text/xml",
        format!(
            r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>r</RequestId></ErrorResponse>"#
        ),
    )
}

/// STS answering `AssumeRoleWithWebIdentity` as AWS does.
struct Sts {
    url: String,
    /// Every WebIdentityToken it was sent.
    tokens: Arc<Mutex<Vec<String>>>,
    /// Refuse with AccessDenied while set.
    deny: Arc<AtomicBool>,
}

impl Sts {
    fn start(rt: &tokio::runtime::Runtime, issuer: Arc<Issuer>, token_file: PathBuf) -> Sts {
        Self::start_on(rt, None, issuer, token_file)
    }

    /// `start`, over TLS when given an acceptor: `https://localhost:{port}`.
    fn start_on(
        rt: &tokio::runtime::Runtime,
        tls: Option<tokio_rustls::TlsAcceptor>,
        issuer: Arc<Issuer>,
        token_file: PathBuf,
    ) -> Sts {
        let https = tls.is_some();
        let tokens = Arc::new(Mutex::new(Vec::new()));
        let deny = Arc::new(AtomicBool::new(false));
        let (i, t, d) = (issuer, tokens.clone(), deny.clone());
        let addr = serve_on(rt, tls, move |req| {
            let (issuer, tokens, deny, token_file) =
                (i.clone(), t.clone(), d.clone(), token_file.clone());
            async move {
                let (parts, f) = form(req).await;
                let want = std::fs::read_to_string(&token_file).unwrap_or_default();
                let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
                let mut wrong = Vec::new();
                if parts.method != http::Method::POST {
                    wrong.push(format!("method {}", parts.method));
                }
                if get("Action") != "AssumeRoleWithWebIdentity" {
                    wrong.push(format!("Action {:?}", get("Action")));
                }
                if get("Version") != "2011-06-15" {
                    wrong.push(format!("Version {:?}", get("Version")));
                }
                if get("RoleArn") != ROLE_ARN {
                    wrong.push(format!("RoleArn {:?}", get("RoleArn")));
                }
                if get("RoleSessionName").is_empty() {
                    wrong.push("no RoleSessionName".into());
                }
                if get("WebIdentityToken") != want.trim() {
                    wrong.push(format!(
                        "WebIdentityToken {:?} is not the token file's {:?}",
                        get("WebIdentityToken"),
                        want.trim()
                    ));
                }
                if !wrong.is_empty() {
                    issuer.problem(format!("STS request: {}", wrong.join(", ")));
                    return sts_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidParameterValue",
                        &wrong.join(", "),
                    );
                }
                tokens
                    .lock()
                    .expect("tokens")
                    .push(get("WebIdentityToken").to_string());
                if deny.load(Ordering::SeqCst) {
                    return sts_error(
                        StatusCode::FORBIDDEN,
                        "AccessDenied",
                        "Not authorized to perform sts:AssumeRoleWithWebIdentity",
                    );
                }
                let (token, exp) = issuer.issue("sts");
                full(
                    StatusCode::OK,
                    "text/xml",
                    format!(
                        r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:sluice:sluice-proxy</SubjectFromWebIdentityToken>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::111122223333:assumed-role/sluice-uploads/{session}</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:{session}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>{token}</SessionToken>
      <SecretAccessKey>{S3_SECRET}</SecretAccessKey>
      <Expiration>{exp}</Expiration>
      <AccessKeyId>{S3_ACCESS}</AccessKeyId>
    </Credentials>
    <Provider>arn:aws:iam::111122223333:oidc-provider/oidc.eks.example</Provider>
    <Audience>sts.amazonaws.com</Audience>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#,
                        session = get("RoleSessionName"),
                    ),
                )
            }
        });
        Sts {
            url: if https {
                format!("https://localhost:{}", addr.port())
            } else {
                format!("http://{addr}")
            },
            tokens,
            deny,
        }
    }

    fn tokens(&self) -> Vec<String> {
        self.tokens.lock().expect("tokens").clone()
    }
}

fn keys_json(token: &str, exp: &str) -> String {
    serde_json::json!({
        "AccessKeyId": S3_ACCESS,
        "SecretAccessKey": S3_SECRET,
        "Token": token,
        "Expiration": exp,
        "AccountId": "111122223333",
    })
    .to_string()
}

/// The EKS Pod Identity agent (or ECS's): GET with the token file's content as Authorization.
fn container_endpoint(
    rt: &tokio::runtime::Runtime,
    issuer: Arc<Issuer>,
    token_file: PathBuf,
) -> String {
    let addr = serve(rt, move |req: Request<Incoming>| {
        let (issuer, token_file) = (issuer.clone(), token_file.clone());
        async move {
            let want = std::fs::read_to_string(&token_file).unwrap_or_default();
            let got = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if req.method() != http::Method::GET || got != want {
                issuer.problem(format!(
                    "container request {} with Authorization {got:?}, not the token file's {want:?}",
                    req.method()
                ));
                return full(
                    StatusCode::UNAUTHORIZED,
                    "application/json",
                    r#"{"message":"invalid authorization token"}"#,
                );
            }
            if issuer.down.load(Ordering::SeqCst) {
                return full(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "application/json",
                    r#"{"message":"agent unavailable"}"#,
                );
            }
            let (token, exp) = issuer.issue("pod-identity");
            full(StatusCode::OK, "application/json", keys_json(&token, &exp))
        }
    });
    format!("http://{addr}/v1/credentials")
}

/// IMDSv2: a session token from PUT first, then the role and its keys.
fn imds_endpoint(
    rt: &tokio::runtime::Runtime,
    issuer: Arc<Issuer>,
    puts: Arc<AtomicUsize>,
) -> String {
    let api_tokens = Arc::new(Mutex::new(Vec::<String>::new()));
    let addr = serve(rt, move |req: Request<Incoming>| {
        let (issuer, puts, api_tokens) = (issuer.clone(), puts.clone(), api_tokens.clone());
        async move {
            let path = req.uri().path().to_string();
            if req.method() == http::Method::PUT && path == "/latest/api/token" {
                let ttl = req
                    .headers()
                    .get("x-aws-ec2-metadata-token-ttl-seconds")
                    .and_then(|v| v.to_str().ok()?.parse::<u32>().ok());
                if !ttl.is_some_and(|t| (1..=21600).contains(&t)) {
                    issuer.problem(format!("IMDS token PUT with TTL {ttl:?}"));
                    return full(StatusCode::BAD_REQUEST, "text/plain", "");
                }
                let n = puts.fetch_add(1, Ordering::SeqCst) + 1;
                let t = format!("imds-api-token-{n}");
                api_tokens.lock().expect("api tokens").push(t.clone());
                return full(StatusCode::OK, "text/plain", t);
            }
            let token = req
                .headers()
                .get("x-aws-ec2-metadata-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !api_tokens
                .lock()
                .expect("api tokens")
                .iter()
                .any(|t| t == token)
            {
                issuer.problem(format!(
                    "IMDS {path} without a valid session token ({token:?})"
                ));
                return full(StatusCode::UNAUTHORIZED, "text/plain", "");
            }
            match path.as_str() {
                "/latest/meta-data/iam/security-credentials/" => {
                    full(StatusCode::OK, "text/plain", "sluice-node-role")
                }
                "/latest/meta-data/iam/security-credentials/sluice-node-role" => {
                    let (token, exp) = issuer.issue("imds");
                    let now = jiff::Timestamp::now().to_string();
                    let mut v: serde_json::Value =
                        serde_json::from_str(&keys_json(&token, &exp)).expect("json");
                    v["Code"] = "Success".into();
                    v["LastUpdated"] = now.into();
                    v["Type"] = "AWS-HMAC".into();
                    full(StatusCode::OK, "text/plain", v.to_string())
                }
                _ => full(StatusCode::NOT_FOUND, "text/plain", ""),
            }
        }
    });
    format!("http://{addr}")
}

/// In front of s3s-fs: refuses a session token the issuer did not hand out or
/// that has expired (as AWS does), records each request's token, forwards the
/// rest untouched (Host included, which the signature covers).
struct S3Gate {
    url: String,
    /// The session token of each request let through (None: none sent).
    seen: Arc<Mutex<Vec<Option<String>>>>,
    refused: Arc<Mutex<Vec<String>>>,
}

impl S3Gate {
    fn start(rt: &tokio::runtime::Runtime, s3: &Engine, issuer: Option<Arc<Issuer>>) -> S3Gate {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let target = s3.port;
        let client: Client<HttpConnector, Incoming> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let (s, r) = (seen.clone(), refused.clone());
        let addr = serve(rt, move |req: Request<Incoming>| {
            let (seen, refused, issuer, client) =
                (s.clone(), r.clone(), issuer.clone(), client.clone());
            async move {
                let token = req.uri().query().and_then(|q| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == "X-Amz-Security-Token")
                        .map(|(_, v)| v.into_owned())
                });
                let why = match (&issuer, &token) {
                    (Some(i), Some(t)) => i.refuse(t),
                    (Some(_), None) => Some("no session token".to_string()),
                    (None, Some(t)) => Some(format!("unexpected session token {t:?}")),
                    (None, None) => None,
                };
                if let Some(why) = why {
                    eprintln!(
                        "S3 gate refused {} {}: {why}",
                        req.method(),
                        req.uri().path()
                    );
                    refused.lock().expect("refused").push(why.clone());
                    return full(
                        StatusCode::FORBIDDEN,
                        "application/xml",
                        format!("<Error><Code>ExpiredToken</Code><Message>{why}</Message></Error>"),
                    );
                }
                seen.lock().expect("seen").push(token);
                let (mut parts, body) = req.into_parts();
                let pq = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                parts.uri = format!("http://127.0.0.1:{target}{pq}")
                    .parse()
                    .expect("s3 uri");
                match client.request(Request::from_parts(parts, body)).await {
                    Ok(resp) => resp.map(|b| b.boxed()),
                    Err(e) => full(
                        StatusCode::BAD_GATEWAY,
                        "text/plain",
                        format!("s3s-fs: {e}"),
                    ),
                }
            }
        });
        S3Gate {
            url: format!("http://{addr}"),
            seen,
            refused,
        }
    }

    fn seen(&self) -> Vec<Option<String>> {
        self.seen.lock().expect("seen").clone()
    }

    fn refused(&self) -> Vec<String> {
        self.refused.lock().expect("refused").clone()
    }
}

fn policy(gate: &S3Gate) -> String {
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {{name: s3}}
spec:
  pathPrefix: /s3/
  backend: {{s3: {{endpoint: "{u}", bucket: {S3_BUCKET}, region: us-east-1, keyPrefix: "in/"}}}}
  upload: {{maxFileSize: 16Mi}}
"#,
        u = gate.url
    )
}

/// Upload (PutObject, or a multipart upload past the part size), then
/// download through the fast path (HTTP/1.1, spliced) and hyper (h2): the
/// same bytes, stored by s3s-fs.
fn round_trip(p: &Proxy, s3: &Engine, name: &str, data: &[u8]) {
    assert_created_one(&put(p, &format!("/s3/{name}"), data), name, data);
    for proto in ["--http1.1", "--http2-prior-knowledge"] {
        let r = curl(&[proto, &p.url(&format!("/s3/{name}"))]);
        assert_eq!(r.status, 200, "GET {name} {proto}: {}", r.text());
        assert!(
            r.body == data,
            "downloaded bytes of {name} differ ({proto})"
        );
    }
    let stored = format!("{S3_BUCKET}/in/{name}");
    assert!(
        files_under(&s3.root).contains(&stored),
        "{stored} not in s3s-fs: {:?}",
        files_under(&s3.root)
    );
}

/// Every S3 request carried a session token the issuer handed out, and none was refused.
fn all_signed_with_issued_tokens(gate: &S3Gate, issuer: &Issuer, at_least: usize) {
    let seen = gate.seen();
    assert!(seen.len() >= at_least, "S3 requests: {seen:?}");
    for t in &seen {
        let t = t
            .as_deref()
            .expect("every S3 request carries X-Amz-Security-Token");
        assert!(
            issuer
                .issued
                .lock()
                .expect("issued")
                .iter()
                .any(|(i, _)| i == t),
            "{t} was not issued by the stand-in"
        );
    }
    assert_eq!(gate.refused(), Vec::<String>::new(), "S3 gate refusals");
    assert_eq!(
        issuer.problems(),
        Vec::<String>::new(),
        "stand-in saw bad requests"
    );
}

fn loaded_line(p: &Proxy) -> serde_json::Value {
    let mut line = None;
    wait_until(
        DEADLINE,
        || {
            line = p
                .log_json()
                .into_iter()
                .find(|l| l["message"] == "S3 credentials loaded from the AWS credential chain");
            line.is_some()
        },
        || p.logs_text(),
    );
    let line = line.unwrap_or_default();
    // Which source, never what it gave.
    let text = line.to_string();
    assert!(
        !text.contains(S3_SECRET) && !text.contains("session-"),
        "{text}"
    );
    line
}

fn write(path: &PathBuf, text: &str) {
    // Rename into place, as the kubelet swaps a projected token.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("token file");
    std::fs::rename(&tmp, path).expect("token file");
}

#[test]
fn web_identity_signs_with_sts_session_keys_and_rereads_the_token_file() {
    let rt = runtime();
    let s3 = engines::s3();
    let dir = tempfile::tempdir().expect("dir");
    let token_file = dir.path().join("token");
    write(&token_file, "eyJhbGciOiJSUzI1NiJ9.first.sig");
    // Short-lived, so the token file is read again within seconds.
    let issuer = Issuer::new(Duration::from_secs(6));
    let sts = Sts::start(&rt, issuer.clone(), token_file.clone());
    let gate = S3Gate::start(&rt, &s3, Some(issuer.clone()));
    let p = Proxy::start_with_env(
        Some(&policy(&gate)),
        &["--s3-part-size", PART],
        &[
            ("AWS_ROLE_ARN", ROLE_ARN),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", path_str(&token_file)),
            ("AWS_ROLE_SESSION_NAME", "sluice-test"),
            ("AWS_ENDPOINT_URL_STS", &sts.url),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    round_trip(&p, &s3, "irsa.bin", &random_bytes(BIG, 1));
    round_trip(&p, &s3, "small.bin", &random_bytes(1000, 2));
    // CreateMultipartUpload, 2 UploadParts, Complete, PutObject and 4 GETs.
    all_signed_with_issued_tokens(&gate, &issuer, 9);
    assert_eq!(loaded_line(&p)["source"], "web_identity");
    assert_eq!(sts.tokens()[0], "eyJhbGciOiJSUzI1NiJ9.first.sig");

    // The kubelet rotates the token: the next refresh sends the new one.
    write(&token_file, "eyJhbGciOiJSUzI1NiJ9.second.sig");
    wait_until(
        DEADLINE,
        || sts.tokens().iter().any(|t| t.ends_with(".second.sig")),
        || format!("STS saw {:?}\n{}", sts.tokens(), p.logs_text()),
    );
    round_trip(&p, &s3, "after-rotation.bin", &random_bytes(2000, 3));
    all_signed_with_issued_tokens(&gate, &issuer, 12);
    assert!(
        p.metric(r#"sluice_s3_credentials_refresh_total{source="web_identity",result="ok"}"#)
            >= 2.0,
        "{}",
        p.metrics()
    );
    assert!(p.metric("sluice_s3_credentials_expiry_timestamp_seconds") > 1.7e9);
    let ready = p.admin_get("/readyz").json();
    assert_eq!(ready["notReady"], serde_json::json!([]), "{ready}");
}

#[test]
fn pod_identity_container_credentials_with_the_authorization_token_file() {
    let rt = runtime();
    let s3 = engines::s3();
    let dir = tempfile::tempdir().expect("dir");
    let token_file = dir.path().join("eks-pod-identity-token");
    write(&token_file, "eks-pod-identity-token-1");
    let issuer = Issuer::new(Duration::from_secs(3600));
    let uri = container_endpoint(&rt, issuer.clone(), token_file.clone());
    let gate = S3Gate::start(&rt, &s3, Some(issuer.clone()));
    let p = Proxy::start_with_env(
        Some(&policy(&gate)),
        &["--s3-part-size", PART],
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                path_str(&token_file),
            ),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    round_trip(&p, &s3, "pod.bin", &random_bytes(BIG, 4));
    all_signed_with_issued_tokens(&gate, &issuer, 6);
    assert_eq!(issuer.count(), 1, "an hour's keys are loaded once");
    assert_eq!(loaded_line(&p)["source"], "container");
}

#[test]
fn imds_v2_is_the_last_source() {
    let rt = runtime();
    let s3 = engines::s3();
    let issuer = Issuer::new(Duration::from_secs(3600));
    let puts = Arc::new(AtomicUsize::new(0));
    let imds = imds_endpoint(&rt, issuer.clone(), puts.clone());
    let gate = S3Gate::start(&rt, &s3, Some(issuer.clone()));
    let p = Proxy::start_with_env(
        Some(&policy(&gate)),
        &["--s3-part-size", PART],
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds)],
    );
    round_trip(&p, &s3, "node.bin", &random_bytes(BIG, 5));
    all_signed_with_issued_tokens(&gate, &issuer, 6);
    assert_eq!(
        puts.load(Ordering::SeqCst),
        1,
        "one IMDSv2 session token, PUT first"
    );
    assert_eq!(loaded_line(&p)["source"], "imds");
}

#[test]
fn keys_are_refreshed_across_a_short_expiry_while_uploads_run() {
    let rt = runtime();
    let s3 = engines::s3();
    let dir = tempfile::tempdir().expect("dir");
    let token_file = dir.path().join("token");
    write(&token_file, "eks-pod-identity-token");
    // Each set of keys lives 5-6 s (Expiration is on a whole second).
    let issuer = Issuer::new(Duration::from_secs(6));
    let uri = container_endpoint(&rt, issuer.clone(), token_file.clone());
    let gate = S3Gate::start(&rt, &s3, Some(issuer.clone()));
    let p = Proxy::start_with_env(
        Some(&policy(&gate)),
        &[],
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                path_str(&token_file),
            ),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    let run_for = Duration::from_secs(14);
    let started = Instant::now();
    let failures = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for w in 0..4u64 {
            let (p, failures, done) = (&p, failures.clone(), done.clone());
            scope.spawn(move || {
                let mut i = 0u64;
                while started.elapsed() < run_for {
                    i += 1;
                    let name = format!("w{w}-{i}.bin");
                    let data = random_bytes(64 << 10, w * 10_000 + i);
                    let r = put(p, &format!("/s3/{name}"), &data);
                    if r.status != 201 {
                        failures.lock().expect("failures").push(format!(
                            "{name} at {:?}: {} {}",
                            started.elapsed(),
                            r.status,
                            r.text()
                        ));
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    let failures = failures.lock().expect("failures").clone();
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "uploads failed\n{}",
        p.logs_text()
    );
    let done = done.load(Ordering::SeqCst);
    assert!(done >= 20, "only {done} uploads in {run_for:?}");
    // A 14 s run over keys that live under 6 s: at least three sets, refreshed
    // ahead of time (no request was refused for an expired token).
    assert!(issuer.count() >= 3, "keys issued: {}", issuer.count());
    all_signed_with_issued_tokens(&gate, &issuer, done);
    let distinct: std::collections::BTreeSet<_> = gate.seen().into_iter().flatten().collect();
    assert!(
        distinct.len() >= 3,
        "session tokens used at S3: {distinct:?}"
    );
    let refreshed = p
        .log_json()
        .into_iter()
        .filter(|l| l["message"] == "S3 credentials refreshed")
        .count();
    assert!(
        refreshed >= 2,
        "refresh log lines: {refreshed}\n{}",
        p.logs_text()
    );
    eprintln!(
        "{done} uploads in {run_for:?}, {} key sets issued, {} distinct tokens used",
        issuer.count(),
        distinct.len()
    );
}

#[test]
fn environment_keys_win_over_web_identity() {
    let rt = runtime();
    let s3 = engines::s3();
    let dir = tempfile::tempdir().expect("dir");
    let token_file = dir.path().join("token");
    write(&token_file, "eyJ.unused.sig");
    let issuer = Issuer::new(Duration::from_secs(3600));
    let sts = Sts::start(&rt, issuer.clone(), token_file.clone());
    // Long-lived keys carry no session token.
    let gate = S3Gate::start(&rt, &s3, None);
    let p = Proxy::start_with_env(
        Some(&policy(&gate)),
        &[],
        &[
            ("AWS_ACCESS_KEY_ID", S3_ACCESS),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET),
            ("AWS_ROLE_ARN", ROLE_ARN),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", path_str(&token_file)),
            ("AWS_ENDPOINT_URL_STS", &sts.url),
        ],
    );
    round_trip(&p, &s3, "env.bin", &random_bytes(3000, 6));
    assert_eq!(loaded_line(&p)["source"], "environment");
    assert_eq!(sts.tokens(), Vec::<String>::new(), "STS was not asked");
    assert!(gate.seen().iter().all(Option::is_none), "{:?}", gate.seen());
    assert_eq!(gate.refused(), Vec::<String>::new());
}

#[test]
fn no_source_is_a_502_naming_what_was_tried_and_readyz_says_so() {
    let s3 = engines::s3();
    let rt = runtime();
    let gate = S3Gate::start(&rt, &s3, None);
    // Nothing listens at the metadata endpoint, as off EC2.
    let closed = format!("http://127.0.0.1:{}", engines::free_port());
    let p = Proxy::start_with_env(
        Some(&policy(&gate)),
        &[],
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &closed)],
    );
    let r = put(&p, "/s3/x.bin", b"data");
    let msg = assert_reject(&r, 502, "backend_error");
    for s in [
        "no AWS credentials",
        "environment: AWS_ACCESS_KEY_ID not set",
        "web_identity: AWS_WEB_IDENTITY_TOKEN_FILE not set",
        "container: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "imds: IMDSv2 token at",
    ] {
        assert!(msg.contains(s), "{s:?} in {msg:?}");
    }
    let dl = curl(&["--http1.1", &p.url("/s3/x.bin")]);
    assert_reject(&dl, 502, "backend_error");
    assert_eq!(
        gate.seen(),
        Vec::<Option<String>>::new(),
        "nothing reached S3"
    );
    let ready = p.admin_get("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
    let v = ready.json();
    assert_eq!(v["notReady"][0]["policy"], "default/s3", "{v}");
    assert!(
        v["notReady"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no AWS credentials")),
        "{v}"
    );
    assert!(
        p.metric(r#"sluice_s3_credentials_refresh_total{source="none",result="error"}"#) >= 1.0
    );
    assert!(
        p.log_json()
            .iter()
            .any(|l| l["message"] == "loading S3 credentials failed" && l["level"] == "WARN"),
        "{}",
        p.logs_text()
    );
}

#[test]
fn a_configured_source_that_fails_stops_the_chain_and_recovers() {
    let rt = runtime();
    let s3 = engines::s3();
    let dir = tempfile::tempdir().expect("dir");
    let token_file = dir.path().join("token");
    write(&token_file, "eyJ.denied.sig");
    let issuer = Issuer::new(Duration::from_secs(3600));
    let sts = Sts::start(&rt, issuer.clone(), token_file.clone());
    sts.deny.store(true, Ordering::SeqCst);
    // The node's role is there too: IRSA failing must not fall through to it.
    let node = Issuer::new(Duration::from_secs(3600));
    let puts = Arc::new(AtomicUsize::new(0));
    let imds = imds_endpoint(&rt, node.clone(), puts.clone());
    let gate = S3Gate::start(&rt, &s3, Some(issuer.clone()));
    let p = Proxy::start_with_env(
        Some(&policy(&gate)),
        &[],
        &[
            ("AWS_ROLE_ARN", ROLE_ARN),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", path_str(&token_file)),
            ("AWS_ENDPOINT_URL_STS", &sts.url),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds),
        ],
    );
    let r = put(&p, "/s3/denied.bin", b"data");
    let msg = assert_reject(&r, 502, "backend_error");
    assert!(
        msg.contains("web_identity") && msg.contains("AccessDenied"),
        "{msg}"
    );
    assert_eq!(puts.load(Ordering::SeqCst), 0, "IMDS was not asked");
    assert_eq!(node.count(), 0);
    assert!(
        p.metric(r#"sluice_s3_credentials_refresh_total{source="web_identity",result="error"}"#)
            >= 1.0
    );

    // STS lets the role in again: the retries (1 s, 2 s, 4 s...) pick it up.
    sts.deny.store(false, Ordering::SeqCst);
    let data = random_bytes(5000, 7);
    let last = Mutex::new(Response::default());
    wait_until(
        Duration::from_secs(20),
        || {
            let r = put(&p, "/s3/recovered.bin", &data);
            let ok = r.status == 201;
            *last.lock().expect("last") = r;
            ok
        },
        || {
            let r = last.lock().expect("last");
            format!("last: {} {}\n{}", r.status, r.text(), p.logs_text())
        },
    );
    assert_created_one(&last.lock().expect("last"), "recovered.bin", &data);
    assert_eq!(issuer.count(), 1);
    assert_eq!(puts.load(Ordering::SeqCst), 0, "IMDS was never asked");
}

/// The chain's HTTPS: STS over TLS, its certificate checked against the
/// platform's roots (rustls-native-certs, which honours SSL_CERT_FILE as
/// OpenSSL does): trusted, the keys load; not trusted, a 502 that says so.
#[test]
fn web_identity_over_https_checks_the_certificate_against_the_platform_roots() {
    let rt = runtime();
    let s3 = engines::s3();
    let dir = tempfile::tempdir().expect("dir");
    let (ca, acceptor) = test_pki(dir.path());
    let token_file = dir.path().join("token");
    write(&token_file, "eyJ.tls.sig");
    let issuer = Issuer::new(Duration::from_secs(3600));
    let sts = Sts::start_on(&rt, Some(acceptor), issuer.clone(), token_file.clone());
    assert!(sts.url.starts_with("https://localhost:"), "{}", sts.url);
    let gate = S3Gate::start(&rt, &s3, Some(issuer.clone()));
    let env = |roots: &str| {
        vec![
            ("AWS_ROLE_ARN", ROLE_ARN.to_string()),
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                path_str(&token_file).to_string(),
            ),
            ("AWS_ENDPOINT_URL_STS", sts.url.clone()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
            ("SSL_CERT_FILE", roots.to_string()),
        ]
    };
    let start = |env: Vec<(&str, String)>| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Proxy::start_with_env(Some(&policy(&gate)), &[], &env)
    };

    let p = start(env(path_str(&ca)));
    round_trip(&p, &s3, "tls.bin", &random_bytes(4000, 8));
    all_signed_with_issued_tokens(&gate, &issuer, 3);
    assert_eq!(sts.tokens(), ["eyJ.tls.sig"]);
    drop(p);

    // The system's roots do not include the test CA: refused, and said so.
    let p = start(env("/etc/ssl/certs/ca-certificates.crt"));
    let msg = assert_reject(&put(&p, "/s3/untrusted.bin", b"x"), 502, "backend_error");
    assert!(
        msg.contains("web_identity") && msg.to_ascii_lowercase().contains("certificate"),
        "{msg}"
    );
    assert_eq!(sts.tokens().len(), 1, "no request got past the handshake");
}

/// The checks the other tests lean on, shown to bite: the gate refuses a
/// session token it did not issue or that has expired, and s3s-fs refuses a
/// presigned URL whose token was changed after signing.
#[test]
fn the_gate_and_s3s_fs_refuse_what_aws_would() {
    let rt = runtime();
    let s3 = engines::s3();
    let issuer = Issuer::new(Duration::from_secs(1));
    let gate = S3Gate::start(&rt, &s3, Some(issuer.clone()));
    let (token, _) = issuer.issue("control");
    let sign = |endpoint: &str, token: &str| {
        let bucket = rusty_s3::Bucket::new(
            endpoint.parse().expect("url"),
            rusty_s3::UrlStyle::Path,
            S3_BUCKET,
            "us-east-1",
        )
        .expect("bucket");
        let creds = rusty_s3::Credentials::new_with_token(S3_ACCESS, S3_SECRET, token);
        use rusty_s3::S3Action;
        bucket
            .list_objects_v2(Some(&creds))
            .sign(Duration::from_secs(60))
            .to_string()
    };
    // Issued and fresh: through the gate, and s3s-fs takes the signature.
    let ok = curl(&[&sign(&gate.url, &token)]);
    assert_eq!(ok.status, 200, "{}", ok.text());
    // Never issued: the gate refuses.
    let r = curl(&[&sign(&gate.url, "forged-token")]);
    assert_eq!(r.status, 403, "{}", r.text());
    // Signed, then the token swapped in the URL: s3s-fs refuses the signature.
    let url = sign(&s3.url(), &token).replace(&token, "other-token");
    let r = curl(&[&url]);
    assert_eq!(r.status, 403, "s3s-fs took a changed token: {}", r.text());
    // Expired: the gate refuses.
    wait_until(
        Duration::from_secs(5),
        || issuer.refuse(&token).is_some(),
        || "the token did not expire".into(),
    );
    let r = curl(&[&sign(&gate.url, &token)]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(gate.refused().len(), 2, "{:?}", gate.refused());
}

/// A refresh that fails keeps the keys in hand serving until they expire,
/// never past; then requests get 502 saying so, and the next successful
/// retry brings them back.
#[test]
fn failed_refreshes_serve_the_keys_in_hand_until_they_expire_then_502() {
    let rt = runtime();
    let s3 = engines::s3();
    let dir = tempfile::tempdir().expect("dir");
    let token_file = dir.path().join("token");
    write(&token_file, "eks-pod-identity-token");
    // 11-12 s keys: refreshed after about 6 s, unusable 3 s before they expire.
    let issuer = Issuer::new(Duration::from_secs(12));
    let uri = container_endpoint(&rt, issuer.clone(), token_file.clone());
    let gate = S3Gate::start(&rt, &s3, Some(issuer.clone()));
    let p = Proxy::start_with_env(
        Some(&policy(&gate)),
        &[],
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                path_str(&token_file),
            ),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    let data = random_bytes(3000, 9);
    assert_created_one(&put(&p, "/s3/before.bin", &data), "before.bin", &data);
    issuer.down.store(true, Ordering::SeqCst);

    // The refresh fails: the keys in hand still serve.
    let failed_while_valid = |l: &serde_json::Value| {
        l["message"] == "loading S3 credentials failed" && l["serving_keys_from"] == "container"
    };
    wait_until(
        Duration::from_secs(15),
        || p.log_json().iter().any(failed_while_valid),
        || p.logs_text(),
    );
    assert_created_one(&put(&p, "/s3/during.bin", &data), "during.bin", &data);

    // Then they expire: 502, saying so, and nothing signed with them reaches S3.
    let last = Mutex::new(Response::default());
    wait_until(
        Duration::from_secs(15),
        || {
            let r = put(&p, "/s3/after.bin", &data);
            let refused = r.status == 502;
            *last.lock().expect("last") = r;
            refused
        },
        || p.logs_text(),
    );
    let msg = assert_reject(&last.lock().expect("last"), 502, "backend_error");
    assert!(
        msg.contains("expired at") && msg.contains("refreshing them failed") && msg.contains("500"),
        "{msg}"
    );
    let v = p.admin_get("/readyz").json();
    assert_eq!(v["notReady"][0]["policy"], "default/s3", "{v}");
    assert!(
        p.metric(r#"sluice_s3_credentials_refresh_total{source="container",result="error"}"#)
            >= 1.0
    );
    assert_eq!(
        gate.refused(),
        Vec::<String>::new(),
        "signed with expired keys"
    );

    // The agent is back: the next retry (at most 30 s apart) loads fresh keys.
    issuer.down.store(false, Ordering::SeqCst);
    wait_until(
        Duration::from_secs(40),
        || put(&p, "/s3/recovered.bin", &data).status == 201,
        || p.logs_text(),
    );
    assert_eq!(issuer.count(), 2);
    all_signed_with_issued_tokens(&gate, &issuer, 3);
}
