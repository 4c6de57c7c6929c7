//! The listener: accepts connections, serves plain HTTP/1.1 GET/HEAD on the
//! sendfile fast path, and hands everything else to hyper.
//!
//! ```text
//!   accept -> read a request head into a per-connection buffer (httparse)
//!     GET/HEAD, HTTP/1.1, no body, sendfile on -> fast path: head + sendfile(2)
//!                                                 (fs) or splice(2) (remote)
//!     PUT, HTTP/1.1, Content-Length, a route upload::splice takes
//!                                              -> fast path: sniff window, then
//!                                                 splice(2) to the engine
//!     POST, HTTP/1.1, Content-Length, multipart, a route upload::form takes
//!                                              -> fast path: framing peeked and
//!                                                 parsed, file data spliced
//!     then the next head (keep-alive)
//!     anything else (other POSTs, chunked PUT, HTTP/1.0, h2c preface, odd requests)
//!       -> hyper (HTTP/1.1 and HTTP/2) with the bytes already read, for the
//!          rest of the connection's life
//! ```
//! The fast path answers with the same `download::answer` and `Reject`s as
//! hyper, so the two differ only in how bytes reach the socket.

use std::cell::RefCell;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::App;
use crate::download::{self, Answer, remote, semantics::RequestHeaders};
use crate::error::Reject;
use crate::filters;
use crate::service::{self, Done};
use crate::upload::{
    self,
    splice::{Body as BodyRead, Failed, UploadHead},
};
use crate::zerocopy;
use sluice_policy::Backend;

/// Accepts until `shutdown` turns true, then drains in-flight connections for up to the grace period.
pub async fn serve(listener: TcpListener, app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracker.spawn(connection(app.clone(), stream, peer, graceful.watcher(), shutdown.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    tracker.close();
    tracing::info!(
        connections = tracker.len(),
        grace_s = app.settings.shutdown_grace.as_secs(),
        "stopped accepting; letting in-flight transfers finish"
    );
    let drain = async {
        graceful.shutdown().await;
        tracker.wait().await;
    };
    if tokio::time::timeout(app.settings.shutdown_grace, drain)
        .await
        .is_err()
    {
        tracing::warn!(
            connections = tracker.len(),
            "grace period over; closing the remaining connections"
        );
    }
}

struct OpenConn(Arc<App>);
impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.metrics.connections_open.dec();
    }
}

async fn connection(
    app: Arc<App>,
    mut stream: TcpStream,
    peer: SocketAddr,
    watcher: Watcher,
    mut shutdown: watch::Receiver<bool>,
) {
    app.metrics.connections_open.inc();
    let _open = OpenConn(app.clone());
    let _ = stream.set_nodelay(true);
    // Room for a head and a small body (a 4 KiB PUT) in one read.
    let mut buf = BytesMut::with_capacity(CONN_BUF);
    if app.settings.sendfile {
        let mut scratch = Vec::with_capacity(512);
        let mut first = true;
        loop {
            let got = read_head(&mut stream, &mut buf, &app, first, &mut shutdown).await;
            first = false;
            match got {
                HeadRead::Closed => return,
                HeadRead::TooLarge => {
                    let r = Reject::HeadTooLarge(app.settings.max_head);
                    let _ = write_reject(&mut stream, &mut scratch, &r, false).await;
                    return;
                }
                HeadRead::Other => break,
                HeadRead::Complete(n, req) => {
                    let Some(req) = req else {
                        break;
                    };
                    let keep = if let Some((len, expect_continue)) = req.upload {
                        let head = UploadHead {
                            path: &req.path,
                            host: req.host.as_deref(),
                            authorization: req.authorization.as_deref(),
                            api_key: req.api_key.as_deref(),
                            content_type: req.content_type.as_deref(),
                            len,
                            expect_continue,
                        };
                        // Not for this path (or refused): hyper reads the head again.
                        let plan = if req.method == "PUT" {
                            upload::splice::plan(&app, &head, peer).map(Upload::Put)
                        } else {
                            upload::form::plan(&app, &head, peer).map(Upload::Post)
                        };
                        let Some(plan) = plan else {
                            break;
                        };
                        buf.advance(n);
                        serve_upload(&app, &mut stream, &mut buf, &mut scratch, peer, &req, plan)
                            .await
                    } else {
                        buf.advance(n);
                        serve_fast(&app, &mut stream, &mut scratch, peer, req).await
                    };
                    if !keep || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
    let io = TokioIo::new(Prefixed {
        prefix: buf.freeze(),
        inner: stream,
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(app.settings.header_timeout)
        // Body chunks are slices of hyper's read buffer, and every chunk still queued
        // (multipart parts, the backend pipe) pins the whole buffer it came from. hyper lets that
        // buffer grow to ~400 KiB on a fast upload; capped, an upload pins a few
        // READ_BUF_MAX at most, which is what keeps 64 concurrent uploads small.
        .max_buf_size(READ_BUF_MAX)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let svc_app = app.clone();
    let svc = service_fn(move |req| service::handle(svc_app.clone(), peer, req));
    if let Err(e) = watcher.watch(builder.serve_connection(io, svc)).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// A connection's first read buffer, kept while it stays on the fast path.
const CONN_BUF: usize = 8 * 1024;

/// Largest read buffer hyper may grow for one HTTP/1 connection.
const READ_BUF_MAX: usize = 64 * 1024;

#[allow(
    clippy::large_enum_variant,
    reason = "returned once per request and moved out at once; a Box would be an allocation per request"
)]
enum HeadRead {
    /// A whole head of `n` bytes, and what the fast path needs of it (None:
    /// hyper's to serve), taken from the one parse of it.
    Complete(usize, Option<FastReq>),
    /// Not a request head the fast path reads: let hyper have the bytes.
    Other,
    TooLarge,
    Closed,
}

async fn read_head(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    app: &App,
    first: bool,
    shutdown: &mut watch::Receiver<bool>,
) -> HeadRead {
    let settings = &app.settings;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if !buf.is_empty() {
            // Upper-case method letters start every HTTP/1 request; "PRI " is the h2c preface.
            if buf.starts_with(b"PRI ") || !buf[0].is_ascii_uppercase() {
                return HeadRead::Other;
            }
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(n)) => {
                    return HeadRead::Complete(n, FastReq::from_request(&req));
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return HeadRead::Other,
            }
            if buf.len() >= settings.max_head {
                return HeadRead::TooLarge;
            }
        }
        // A new connection must send its head within the header timeout; a kept-alive
        // one may stay quiet for the idle timeout, then has the header timeout too.
        let wait_until = *deadline.get_or_insert_with(|| {
            tokio::time::Instant::now()
                + if first {
                    settings.header_timeout
                } else {
                    settings.idle_timeout
                }
        });
        // Empty, it takes back its whole allocation (the previous request's
        // bytes are gone), so this rarely allocates.
        if buf.capacity() - buf.len() < 1024 || (buf.is_empty() && buf.capacity() < CONN_BUF) {
            buf.reserve(CONN_BUF);
        }
        let was_empty = buf.is_empty();
        tokio::select! {
            r = stream.read_buf(buf) => match r {
                Ok(0) | Err(_) => return HeadRead::Closed,
                Ok(_) => {
                    if was_empty {
                        deadline = Some(tokio::time::Instant::now() + settings.header_timeout);
                    }
                }
            },
            _ = tokio::time::sleep_until(wait_until) => return HeadRead::Closed,
            _ = shutdown.changed(), if was_empty => return HeadRead::Closed,
        }
    }
}

/// The parts of a request head the fast path needs, copied out of the read buffer.
struct FastReq {
    head: bool,
    /// A PUT or POST with a Content-Length: the body's length and whether it
    /// waits for `100 Continue`.
    upload: Option<(u64, bool)>,
    content_type: Option<Vec<u8>>,
    method: &'static str,
    path: String,
    host: Option<String>,
    keep_alive: bool,
    authorization: Option<Vec<u8>>,
    api_key: Option<Vec<u8>>,
    range: Option<Vec<u8>>,
    if_match: Option<Vec<u8>>,
    if_none_match: Option<Vec<u8>>,
    if_modified_since: Option<Vec<u8>>,
    if_unmodified_since: Option<Vec<u8>>,
    if_range: Option<Vec<u8>>,
}

impl FastReq {
    /// `from_request` of a head in bytes (the tests' way in).
    #[cfg(test)]
    fn parse(bytes: &[u8]) -> Option<Self> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(req.parse(bytes), Ok(httparse::Status::Complete(_))) {
            return None;
        }
        Self::from_request(&req)
    }

    /// What the fast path needs of a whole parsed head. None when hyper should
    /// serve it: not GET/HEAD/PUT/POST, not HTTP/1.1, a GET with a body, a PUT
    /// or POST without Content-Length, an upgrade.
    fn from_request(req: &httparse::Request<'_, '_>) -> Option<Self> {
        if req.version != Some(1) {
            return None;
        }
        let (head, method) = match req.method? {
            "GET" => (false, "GET"),
            "HEAD" => (true, "HEAD"),
            "PUT" => (false, "PUT"),
            "POST" => (false, "POST"),
            _ => return None,
        };
        let upload = matches!(method, "PUT" | "POST");
        let mut length = None;
        let mut expect_continue = false;
        let target = req.path?;
        if !target.starts_with('/') {
            return None; // absolute-form or asterisk: rare, hyper handles them
        }
        let path = target.split('?').next().unwrap_or(target).to_string();
        let mut r = FastReq {
            head,
            upload: None,
            content_type: None,
            method,
            path,
            host: None,
            keep_alive: true,
            authorization: None,
            api_key: None,
            range: None,
            if_match: None,
            if_none_match: None,
            if_modified_since: None,
            if_unmodified_since: None,
            if_range: None,
        };
        for h in req.headers.iter() {
            let v = h.value;
            let name = h.name;
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            if is("content-length") {
                let n: u64 = std::str::from_utf8(v).ok()?.trim().parse().ok()?;
                if length.replace(n).is_some_and(|m| m != n) || (n != 0 && !upload) {
                    return None;
                }
            } else if is("expect") {
                if !upload || !v.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                    return None;
                }
                expect_continue = true;
            } else if is("transfer-encoding") || is("upgrade") {
                return None;
            } else if is("content-type") {
                r.content_type = Some(v.to_vec());
            } else if is("connection") {
                if v.split(|b| *b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
                {
                    r.keep_alive = false;
                }
            } else if is("host") {
                r.host = std::str::from_utf8(v).ok().map(str::to_string);
            } else if is("authorization") {
                r.authorization = Some(v.to_vec());
            } else if is("x-api-key") {
                r.api_key = Some(v.to_vec());
            } else if is("range") {
                r.range = Some(v.to_vec());
            } else if is("if-match") {
                r.if_match = Some(v.to_vec());
            } else if is("if-none-match") {
                r.if_none_match = Some(v.to_vec());
            } else if is("if-modified-since") {
                r.if_modified_since = Some(v.to_vec());
            } else if is("if-unmodified-since") {
                r.if_unmodified_since = Some(v.to_vec());
            } else if is("if-range") {
                r.if_range = Some(v.to_vec());
            }
        }
        if upload {
            r.upload = Some((length?, expect_continue));
        }
        Some(r)
    }
}

/// Serves one request; false when the connection must close.
async fn serve_fast(
    app: &App,
    stream: &mut TcpStream,
    scratch: &mut Vec<u8>,
    peer: SocketAddr,
    req: FastReq,
) -> bool {
    let started = Instant::now();
    let mut policy = String::new();
    let rh = RequestHeaders {
        range: req.range.as_deref(),
        if_match: req.if_match.as_deref(),
        if_none_match: req.if_none_match.as_deref(),
        if_modified_since: req.if_modified_since.as_deref(),
        if_unmodified_since: req.if_unmodified_since.as_deref(),
        if_range: req.if_range.as_deref(),
    };
    let mut via = "sendfile";
    let outcome: Result<(u16, u64, bool), Reject> = async {
        let (route, prefix) = service::route_for(app, req.host.as_deref(), &req.path)?;
        policy.clone_from(&route.route.policy);
        service::authorize(&route, req.authorization.as_deref(), req.api_key.as_deref())?;
        let rel = &req.path[prefix..];
        if !matches!(route.route.backend, Backend::Fs { .. }) {
            via = "relay";
            if !route.route.download_enabled {
                return Err(Reject::DownloadDisabled(route.route.policy.clone()));
            }
            let key = filters::parse_key(rel).map_err(|_| Reject::NotFound)?;
            let r = remote::via_fast(
                app,
                &route,
                &key,
                &rh,
                req.head,
                stream,
                scratch,
                req.keep_alive,
                peer,
            )
            .await?;
            via = r.via;
            return Ok((r.status, r.bytes, r.keep_alive));
        }
        let answer = download::answer(&route, rel, &rh, req.head)?;
        let _permit = match (&answer, req.head) {
            (Answer::Body { .. }, false) => Some(app.limits.admit(peer.ip())?),
            _ => None,
        };
        Ok(send_file(app, stream, scratch, peer, answer, req.head, req.keep_alive).await)
    }
    .await;
    let (status, bytes, rule, keep) = match outcome {
        Ok((status, bytes, keep)) => (status, bytes, None, keep),
        Err(r) => {
            if matches!(r, Reject::Storage(_) | Reject::Backend { .. }) {
                tracing::error!(error = %r, path = %req.path, "backend failure");
            }
            let keep = req.keep_alive && !req.head;
            let ok = write_reject(stream, scratch, &r, keep).await.is_ok();
            (r.status().as_u16(), 0, Some(r.rule()), ok && keep)
        }
    };
    service::record(
        app,
        Done {
            method: req.method,
            path: &req.path,
            policy: &policy,
            status,
            bytes,
            rule,
            peer,
            via,
            started,
        },
    );
    keep
}

/// An upload the fast path takes.
enum Upload {
    Put(upload::splice::Plan),
    Post(upload::form::Plan),
}

/// An upload on the fast path (see `upload::splice`, `upload::form`); false
/// when the connection must close.
async fn serve_upload(
    app: &App,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    scratch: &mut Vec<u8>,
    peer: SocketAddr,
    req: &FastReq,
    plan: Upload,
) -> bool {
    let started = Instant::now();
    let (route, ran) = match plan {
        Upload::Put(p) => (p.route(), upload::splice::run(app, stream, buf, p).await),
        Upload::Post(p) => (p.route(), upload::form::run(app, stream, buf, p).await),
    };
    let (status, bytes, rule, keep, via) = match ran {
        Ok((stored, spliced)) => {
            let body = service::stored(app, &stored, if spliced { "splice" } else { "copy" });
            scratch.clear();
            status_line(scratch, 201);
            push_header(scratch, "content-type", "application/json");
            push_number(scratch, "content-length", body.len() as u64);
            finish_head(scratch, req.keep_alive);
            scratch.extend_from_slice(&body);
            let ok = stream.write_all(scratch).await.is_ok();
            let via = if spliced { "splice" } else { "fast" };
            (201, stored.bytes(), None, ok && req.keep_alive, via)
        }
        Err(Failed { reject, body }) => {
            if matches!(
                reject,
                Reject::Storage(_) | Reject::Backend { .. } | Reject::BackendTimeout(_)
            ) {
                tracing::error!(error = %reject, path = %req.path, "backend failure");
            }
            let keep = req.keep_alive && body == BodyRead::Read;
            let ok = write_reject(stream, scratch, &reject, keep).await.is_ok();
            if ok && body == BodyRead::Partial {
                linger(stream, scratch).await;
            }
            let status = reject.status().as_u16();
            (status, 0, Some(reject.rule()), ok && keep, "splice")
        }
    };
    service::record(
        app,
        Done {
            method: req.method,
            path: &req.path,
            policy: &route.route.policy,
            status,
            bytes,
            rule,
            peer,
            via,
            started,
        },
    );
    keep
}

/// Reads and drops what the client still sends after an early answer, so that
/// closing does not reset the connection before it has read that answer
/// (nginx's lingering close; hyper's path does the same in `service`).
async fn linger(stream: &mut TcpStream, scratch: &mut Vec<u8>) {
    scratch.clear();
    scratch.resize(16 * 1024, 0);
    let drain = async {
        let mut n = 0u64;
        while n <= service::LINGER_BYTES {
            match stream.read(scratch).await {
                Ok(0) | Err(_) => return,
                Ok(k) => n += k as u64,
            }
        }
    };
    let _ = tokio::time::timeout(service::LINGER_TIME, drain).await;
}

/// The fs answer on the fast path: head, then sendfile(2). Returns (status, bytes, keep-alive).
async fn send_file(
    app: &App,
    stream: &mut TcpStream,
    scratch: &mut Vec<u8>,
    peer: SocketAddr,
    answer: Answer,
    head: bool,
    keep_alive: bool,
) -> (u16, u64, bool) {
    let status = answer.status();
    scratch.clear();
    status_line(scratch, status);
    for (k, v) in answer.headers() {
        push_header(scratch, k, &v);
    }
    finish_head(scratch, keep_alive);
    if stream.write_all(scratch).await.is_err() {
        return (status, 0, false);
    }
    let (start, len) = answer.span();
    let Answer::Body { file, .. } = answer else {
        return (status, 0, keep_alive);
    };
    if head {
        return (status, 0, keep_alive);
    }
    app.metrics.download_responses.inc("sendfile");
    match zerocopy::sendfile(stream, &file, start, len, app.settings.idle_timeout).await {
        Ok(n) => {
            app.metrics.download_bytes.inc_by("sendfile", n);
            (status, n, keep_alive)
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "sendfile stopped");
            (status, 0, false)
        }
    }
}

pub(crate) fn status_line(out: &mut Vec<u8>, status: u16) {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A header whose value is a number, written without a String or the
/// formatting machinery in between (both run for every answer).
pub(crate) fn push_number(out: &mut Vec<u8>, k: &str, v: u64) {
    push_header(out, k, itoa::Buffer::new().format(v));
}

pub(crate) fn push_header(out: &mut Vec<u8>, k: &str, v: &str) {
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(v.as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub(crate) fn finish_head(out: &mut Vec<u8>, keep_alive: bool) {
    out.extend_from_slice(b"date: ");
    http_date(out);
    out.extend_from_slice(b"\r\n");
    if !keep_alive {
        push_header(out, "connection", "close");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes the current IMF-fixdate, formatted once per second per thread.
fn http_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((0, Vec::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs || text.is_empty() {
            text.clear();
            let _ = write!(text, "{}", httpdate::HttpDate::from(now));
            *at = secs;
        }
        out.extend_from_slice(text);
    });
}

async fn write_reject(
    stream: &mut TcpStream,
    scratch: &mut Vec<u8>,
    r: &Reject,
    keep_alive: bool,
) -> io::Result<()> {
    let body = r.body();
    scratch.clear();
    status_line(scratch, r.status().as_u16());
    for (k, v) in r.headers() {
        push_header(scratch, k, &v);
    }
    push_header(scratch, "content-type", "application/json");
    push_number(scratch, "content-length", body.len() as u64);
    finish_head(scratch, keep_alive);
    scratch.extend_from_slice(&body);
    stream.write_all(scratch).await
}

/// A stream that first yields bytes already read from it.
struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(out.remaining());
            out.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, b)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_takes_plain_gets_and_sized_uploads_only() {
        let r = FastReq::parse(b"GET /files/a?x=1 HTTP/1.1\r\nHost: h\r\nRange: bytes=0-1\r\n\r\n")
            .unwrap();
        assert_eq!(r.path, "/files/a");
        assert_eq!(r.host.as_deref(), Some("h"));
        assert_eq!(r.range.as_deref(), Some(&b"bytes=0-1"[..]));
        assert!(r.keep_alive && !r.head);
        assert!(
            !FastReq::parse(b"HEAD / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        let put = FastReq::parse(
            b"PUT /f/a.bin HTTP/1.1\r\nContent-Length: 7\r\nExpect: 100-continue\r\nContent-Type: image/png\r\n\r\n",
        )
        .unwrap();
        assert_eq!(put.upload, Some((7, true)));
        assert_eq!(put.content_type.as_deref(), Some(&b"image/png"[..]));
        let post = FastReq::parse(
            b"POST /f/ HTTP/1.1\r\nContent-Length: 9\r\nContent-Type: multipart/form-data; boundary=x\r\n\r\n",
        )
        .unwrap();
        assert_eq!((post.method, post.upload), ("POST", Some((9, false))));
        for not_fast in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"DELETE / HTTP/1.1\r\n\r\n",
            b"PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"PUT /a HTTP/1.1\r\n\r\n",
            b"PUT /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"PUT /a HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"PUT /a HTTP/1.1\r\nContent-Length: 1\r\nExpect: teapot\r\n\r\n",
            b"GET /a HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"GET http://h/ HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                FastReq::parse(not_fast).is_none(),
                "{:?}",
                String::from_utf8_lossy(not_fast)
            );
        }
    }
}
