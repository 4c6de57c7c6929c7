//! Request handling shared by both HTTP paths, and the hyper service.
//!
//! ```text
//!   route (host, path) -> auth -> method:
//!     GET/HEAD -> download::answer -> file body (hyper) | sendfile (server.rs)
//!     POST     -> early 413 from Content-Length -> admit -> upload::multipart
//!     PUT      -> 411/early 413 -> admit -> upload::put
//!   every outcome -> one access-log line + request/rejection metrics
//! ```
//! Checks on Content-Length happen before the body is polled, so a client
//! that sent `Expect: 100-continue` gets its 413 without sending a byte.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, BodyStream, Full, StreamBody};
use hyper::body::{Frame, Incoming};

use crate::App;
use crate::download::{self, Answer, FileChunks, remote, semantics::RequestHeaders};
use crate::error::Reject;
use crate::limits::{BodyError, Paced};
use crate::metrics::RequestLabels;
use crate::runtime::RouteRt;
use crate::upload::{self, Ctx, Stored};
use sluice_policy::Backend;

pub type Body = UnsyncBoxBody<Bytes, io::Error>;

pub const ALLOW: &str = "GET, HEAD, POST, PUT";

/// The route for a request, with the part of the path after its prefix.
pub fn route_for(
    app: &App,
    host: Option<&str>,
    path: &str,
) -> Result<(Arc<RouteRt>, usize), Reject> {
    let active = app.current.load().ok_or_else(|| {
        Reject::NoConfig("the proxy has no configuration yet; see /readyz on the admin port".into())
    })?;
    let route = active.route(host, path).ok_or(Reject::NoRoute)?.clone();
    let prefix = route.route.path_prefix.len();
    Ok((route, prefix))
}

pub fn authorize(
    route: &RouteRt,
    authorization: Option<&[u8]>,
    api_key: Option<&[u8]>,
) -> Result<(), Reject> {
    match &route.auth {
        None => Ok(()),
        Some(a) => a.check(authorization, api_key),
    }
}

/// What the access log and metrics need about one finished request.
pub struct Done<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub policy: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub rule: Option<&'static str>,
    pub peer: SocketAddr,
    pub via: &'static str,
    pub started: Instant,
}

pub fn record(app: &App, d: Done<'_>) {
    app.metrics
        .requests
        .get_or_create(&RequestLabels {
            method: method_label(d.method),
            policy: d.policy.to_string(),
            status: d.status,
        })
        .inc();
    if let Some(rule) = d.rule {
        app.metrics.reject(rule);
    }
    tracing::info!(
        target: "access",
        method = d.method,
        path = d.path,
        policy = d.policy,
        status = d.status,
        bytes = d.bytes,
        duration_ms = d.started.elapsed().as_secs_f64() * 1e3,
        rule = d.rule.unwrap_or(""),
        peer = %d.peer,
        via = d.via,
        "request"
    );
}

/// A request's method as a label: extension methods are a client's choice,
/// and a label must not be (each value is a series kept for the process's life).
fn method_label(m: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ];
    KNOWN.iter().find(|k| **k == m).copied().unwrap_or("other")
}

fn full(status: StatusCode, headers: Vec<(&'static str, String)>, body: Vec<u8>) -> Response<Body> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(k, v);
    }
    b.body(
        Full::new(Bytes::from(body))
            .map_err(|e: Infallible| match e {})
            .boxed_unsync(),
    )
    .unwrap_or_else(|_| Response::new(empty()))
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

pub fn reject_response(r: &Reject) -> Response<Body> {
    let mut h = r.headers();
    h.push(("content-type", "application/json".into()));
    full(r.status(), h, r.body())
}

/// The hyper service: one call per request on the connections hyper owns.
pub async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let mut policy = String::new();
    let req = BodySlot::wrap(req);
    let slot = req.body().clone();
    let (resp, bytes, rule) = match dispatch(&app, peer, req, &mut policy).await {
        Ok((resp, bytes)) => (resp, bytes, None),
        Err(r) => {
            slot.linger();
            if matches!(r, Reject::Storage(_)) {
                tracing::error!(error = %r, %path, "storage failure");
            }
            (reject_response(&r), 0, Some(r.rule()))
        }
    };
    record(
        &app,
        Done {
            method: &method,
            path: &path,
            policy: &policy,
            status: resp.status().as_u16(),
            bytes,
            rule,
            peer,
            via: "hyper",
            started,
        },
    );
    Ok(resp)
}

fn header<'a, B>(req: &'a Request<B>, name: &str) -> Option<&'a [u8]> {
    req.headers().get(name).map(|v| v.as_bytes())
}

async fn dispatch(
    app: &Arc<App>,
    peer: SocketAddr,
    req: Request<BodySlot>,
    policy: &mut String,
) -> Result<(Response<Body>, u64), Reject> {
    let host = req.uri().host().map(str::to_string).or_else(|| {
        header(&req, "host")
            .and_then(|h| std::str::from_utf8(h).ok())
            .map(str::to_string)
    });
    let path = req.uri().path().to_string();
    let (route, prefix) = route_for(app, host.as_deref(), &path)?;
    policy.clone_from(&route.route.policy);
    authorize(
        &route,
        header(&req, "authorization"),
        header(&req, "x-api-key"),
    )?;
    let rel = &path[prefix..];
    match *req.method() {
        Method::GET | Method::HEAD => download_hyper(app, &route, rel, req, peer).await,
        Method::POST => {
            let ct = header(&req, "content-type")
                .and_then(|c| std::str::from_utf8(c).ok())
                .unwrap_or("")
                .to_string();
            if !ct.to_ascii_lowercase().starts_with("multipart/form-data") {
                return Err(Reject::UnsupportedMediaType(ct));
            }
            let limit = upload::multipart_limit(&route.route.upload);
            if upload::content_length(req.headers())?.is_some_and(|n| n > limit) {
                return Err(Reject::RequestTooLarge { limit });
            }
            let _permit = app.limits.admit(peer.ip())?;
            let ctx = Ctx {
                route: route.clone(),
                remotes: &app.remotes,
                fsync: app.settings.fsync,
            };
            let stored = upload::multipart(&ctx, rel, &ct, body_stream(app, req)).await?;
            Ok(created(app, stored))
        }
        Method::PUT => {
            let len = upload::content_length(req.headers())?;
            let chunked = header(&req, "transfer-encoding").is_some();
            if len.is_none() && !chunked && req.version() < Version::HTTP_2 {
                return Err(Reject::LengthRequired);
            }
            let limit = route.route.upload.max_file_size;
            if len.is_some_and(|n| n > limit) {
                return Err(Reject::FileTooLarge { limit });
            }
            let _permit = app.limits.admit(peer.ip())?;
            let ctx = Ctx {
                route: route.clone(),
                remotes: &app.remotes,
                fsync: app.settings.fsync,
            };
            let ct = header(&req, "content-type")
                .and_then(|c| std::str::from_utf8(c).ok())
                .map(str::to_string);
            let stored = upload::put(&ctx, rel, ct.as_deref(), len, body_stream(app, req)).await?;
            Ok(created(app, stored))
        }
        ref m => Err(Reject::MethodNotAllowed {
            method: m.to_string(),
            allow: ALLOW,
        }),
    }
}

fn body_stream(
    app: &App,
    req: Request<BodySlot>,
) -> Paced<futures_util::stream::BoxStream<'static, Result<Bytes, hyper::Error>>> {
    let frames = BodyStream::new(req.into_body())
        .try_filter_map(|f| futures_util::future::ready(Ok(f.into_data().ok())))
        .boxed();
    Paced::new(frames, app.settings.pace)
}

/// Most of what is left of a request body that is read after an early answer.
pub(crate) const LINGER_BYTES: u64 = 4 << 20;
/// How long that reading may take.
pub(crate) const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// A request body, shared between whoever reads it and `linger`.
///
/// A request can be refused while the client is still sending its body: before it
/// is read (no route, auth, a Content-Length over the limit) or mid-stream (a file
/// too large, a wrong type). Closing a socket that has unread bytes makes the kernel
/// send a reset, and a client still writing then sees a broken pipe instead of the
/// JSON answer. So after a rejection the rest of the body is read and dropped, up to
/// `LINGER_BYTES` or `LINGER_TIME` (nginx's "lingering close"), while hyper writes the
/// answer; past either bound the connection is closed. HTTP/2 needs none of this (a
/// stream reset leaves the connection alone), and neither does a client that sent
/// `Expect: 100-continue` and was answered before it got its `100 Continue`.
#[derive(Clone)]
struct BodySlot(Arc<std::sync::Mutex<SlotState>>);

struct SlotState {
    /// Taken by `linger`.
    body: Option<Incoming>,
    /// False over HTTP/2.
    linger: bool,
    polled: bool,
    expect_continue: bool,
}

impl BodySlot {
    fn wrap(req: Request<Incoming>) -> Request<BodySlot> {
        let expect_continue =
            header(&req, "expect").is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
        let linger = req.version() < Version::HTTP_2;
        req.map(|body| {
            BodySlot(Arc::new(std::sync::Mutex::new(SlotState {
                linger,
                body: Some(body),
                polled: false,
                expect_continue,
            })))
        })
    }

    fn linger(&self) {
        let Ok(mut s) = self.0.lock() else { return };
        if !s.linger || (s.expect_continue && !s.polled) {
            return;
        }
        let Some(mut body) = s.body.take() else {
            return;
        };
        drop(s);
        if hyper::body::Body::is_end_stream(&body) {
            return;
        }
        tokio::spawn(async move {
            let drain = async {
                let mut n = 0u64;
                while let Some(Ok(f)) = body.frame().await {
                    n += f.data_ref().map_or(0, |d| d.len() as u64);
                    if n > LINGER_BYTES {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER_TIME, drain).await;
        });
    }
}

impl hyper::body::Body for BodySlot {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Ok(mut s) = self.0.lock() else {
            return std::task::Poll::Ready(None);
        };
        s.polled = true;
        match s.body.as_mut() {
            Some(b) => std::pin::Pin::new(b).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }
}

/// Counts a stored upload and gives its 201 body.
pub fn stored(app: &App, stored: &Stored, path: &'static str) -> Vec<u8> {
    app.metrics.upload_bytes.inc_by(stored.bytes());
    app.metrics
        .objects_stored
        .inc_by(stored.objects.len() as u64);
    app.metrics.uploads.inc(path);
    serde_json::to_vec(stored).unwrap_or_default()
}

fn created(app: &App, stored: Stored) -> (Response<Body>, u64) {
    let bytes = stored.bytes();
    let body = self::stored(app, &stored, "copy");
    (
        full(
            StatusCode::CREATED,
            vec![("content-type", "application/json".into())],
            body,
        ),
        bytes,
    )
}

async fn download_hyper(
    app: &Arc<App>,
    route: &RouteRt,
    rel: &str,
    req: Request<BodySlot>,
    peer: SocketAddr,
) -> Result<(Response<Body>, u64), Reject> {
    let head = req.method() == Method::HEAD;
    let rh = RequestHeaders {
        range: header(&req, "range"),
        if_match: header(&req, "if-match"),
        if_none_match: header(&req, "if-none-match"),
        if_modified_since: header(&req, "if-modified-since"),
        if_unmodified_since: header(&req, "if-unmodified-since"),
        if_range: header(&req, "if-range"),
    };
    if !matches!(route.route.backend, Backend::Fs { .. }) {
        if !route.route.download_enabled {
            return Err(Reject::DownloadDisabled(route.route.policy.clone()));
        }
        let key = crate::filters::parse_key(rel).map_err(|_| Reject::NotFound)?;
        return remote::via_hyper(app, route, &key, &rh, head, peer).await;
    }
    let answer = download::answer(route, rel, &rh, head)?;
    let status = StatusCode::from_u16(answer.status()).unwrap_or(StatusCode::OK);
    let (start, len) = answer.span();
    let mut b = Response::builder().status(status);
    for (k, v) in answer.headers() {
        b = b.header(k, v);
    }
    let Answer::Body { file, .. } = answer else {
        return Ok((
            b.body(empty()).unwrap_or_else(|_| Response::new(empty())),
            0,
        ));
    };
    if head {
        return Ok((
            b.body(empty()).unwrap_or_else(|_| Response::new(empty())),
            0,
        ));
    }
    let permit = app.limits.admit(peer.ip())?;
    let counter = app.metrics.download_bytes.counter("copy");
    app.metrics.download_responses.inc("copy");
    let stream = FileChunks::new(file, start, len).map(move |r| {
        // The permit lives as long as the body does.
        let _held = &permit;
        r.inspect(|c| {
            counter.inc_by(c.len() as u64);
        })
        .map(Frame::data)
    });
    let body = StreamBody::new(stream).boxed_unsync();
    Ok((b.body(body).unwrap_or_else(|_| Response::new(empty())), len))
}

impl From<BodyError> for Reject {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::Idle(_) => Reject::TooSlow { min_rate: 0 },
            BodyError::TooSlow { min_rate, .. } => Reject::TooSlow { min_rate },
            BodyError::Client(m) => Reject::ClientAborted(m),
        }
    }
}
