//! The hyper service: every request on a connection hyper owns (HTTP/2,
//! HTTP/1.0, chunked uploads, and whatever else the fast path leaves).
//!
//! ```text
//!   gate: route (host, path) -> CORS (an allowed preflight: 204 here) -> auth -> method:
//!     GET/HEAD -> download::answer -> file body | download::remote::via_hyper
//!     POST     -> early 413 from Content-Length -> admit -> upload::multipart
//!     PUT      -> 411/early 413 -> admit -> upload::put
//!   every answer  -> the gate's CORS headers appended (`Visit::cors_headers`)
//!   every outcome -> the gate's record (one access-log line, metrics; via "hyper",
//!                    or "tls-copy" on a TLS connection: `gate::Transport`)
//! ```
//! Checks on Content-Length happen before the body is polled, so a client
//! that sent `Expect: 100-continue` gets its 413 without sending a byte.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::{Frame, Incoming};

use crate::app::App;
use crate::body::{Body, empty, full, reject_response};
use crate::download::{self, Answer, FileChunks, remote, semantics::RequestHeaders};
use crate::error::Reject;
use crate::gate::{self, Ask, Outcome, Transport, Visit};
use crate::http1::{LINGER_BYTES, LINGER_TIME};
use crate::limits::Paced;
use crate::runtime::RouteRt;
use crate::upload::{self, Ctx, Stored};
use sluice_policy::Backend;

pub const ALLOW: &str = "GET, HEAD, POST, PUT";

/// The hyper service: one call per request on the connections hyper owns.
pub async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    transport: Transport,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let mut visit = Visit::new(&method, &path, peer);
    let req = BodySlot::wrap(req);
    let slot = req.body().clone();
    let (mut resp, bytes, rule) = match dispatch(&app, peer, transport, req, &mut visit).await {
        Ok((resp, bytes)) => (resp, bytes, None),
        Err(r) => {
            slot.linger();
            if matches!(r, Reject::Storage(_)) {
                tracing::error!(error = %r, %path, "storage failure");
            }
            (reject_response(&r), 0, Some(r.rule()))
        }
    };
    // Successes and refusals alike, so a page can read why it was refused.
    for (k, v) in visit.cors_headers().as_slice() {
        if let Ok(v) = http::HeaderValue::from_str(v) {
            resp.headers_mut().append(*k, v);
        }
    }
    visit.record(
        &app,
        Outcome {
            status: resp.status().as_u16(),
            bytes,
            rule,
            via: transport.hyper_via(),
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
    transport: Transport,
    req: Request<BodySlot>,
    visit: &mut Visit<'_>,
) -> Result<(Response<Body>, u64), Reject> {
    // :authority (HTTP/2, absolute-form) with its port, as a Host header has
    // it: a signed URL signs the host as the client sent it.
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().rsplit('@').next().unwrap_or("").to_string())
        .or_else(|| {
            header(&req, "host")
                .and_then(|h| std::str::from_utf8(h).ok())
                .map(str::to_string)
        });
    let pass = visit.enter(
        app,
        &Ask {
            host: host.as_deref(),
            authorization: header(&req, "authorization"),
            api_key: header(&req, "x-api-key"),
            origin: header(&req, "origin"),
            request_method: header(&req, "access-control-request-method"),
            request_headers: header(&req, "access-control-request-headers"),
            query: req.uri().query(),
        },
    )?;
    if let Some(headers) = pass.preflight {
        return Ok((full(StatusCode::NO_CONTENT, headers, Vec::new()), 0));
    }
    let (route, rel) = (pass.route.clone(), pass.rel);
    match *req.method() {
        Method::GET | Method::HEAD => download_hyper(app, &route, rel, req, peer, transport).await,
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
            let _permit = gate::admit(app, peer)?;
            let ctx = Ctx {
                route: route.clone(),
                remotes: &app.remotes,
                fsync: app.settings.fsync,
            };
            let stored =
                upload::multipart(&ctx, rel, &ct, pass.form.as_ref(), body_stream(app, req))
                    .await?;
            Ok(created(app, stored, transport))
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
            let _permit = gate::admit(app, peer)?;
            let ctx = Ctx {
                route: route.clone(),
                remotes: &app.remotes,
                fsync: app.settings.fsync,
            };
            let ct = header(&req, "content-type")
                .and_then(|c| std::str::from_utf8(c).ok())
                .map(str::to_string);
            let stored = upload::put(&ctx, rel, ct.as_deref(), len, body_stream(app, req)).await?;
            Ok(created(app, stored, transport))
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

fn created(app: &App, stored: Stored, transport: Transport) -> (Response<Body>, u64) {
    let bytes = stored.bytes();
    let body = stored.counted(&app.metrics, transport.copy_path());
    if let Some(to) = &stored.redirect {
        // As S3 does: the stored keys (and their sha256 as etag) in the query.
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for o in &stored.objects {
            q.append_pair("key", &o.key);
            if let Some(h) = &o.sha256 {
                q.append_pair("etag", h);
            }
        }
        let sep = if to.contains('?') { '&' } else { '?' };
        return (
            full(
                StatusCode::SEE_OTHER,
                vec![("location", format!("{to}{sep}{}", q.finish()))],
                Vec::new(),
            ),
            bytes,
        );
    }
    if let Some(s) = stored.status
        && s != 201
    {
        let status = StatusCode::from_u16(s).unwrap_or(StatusCode::CREATED);
        let body = if s == 204 { Vec::new() } else { body };
        return (
            full(
                status,
                vec![("content-type", "application/json".into())],
                body,
            ),
            bytes,
        );
    }
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
    transport: Transport,
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
        return remote::via_hyper(app, route, &key, &rh, head, peer, transport.copy_path()).await;
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
    let permit = gate::admit(app, peer)?;
    let counter = app.metrics.download_bytes.counter(transport.copy_path());
    app.metrics.download_responses.inc(transport.copy_path());
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
