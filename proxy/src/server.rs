//! The listener: accepts connections, serves plain HTTP/1.1 on the fast path
//! (sendfile and splice), and hands everything else to hyper.
//!
//! ```text
//!   accept -> read a request head into a per-connection buffer (http1::parse)
//!     -> the gate (route, auth) for every request the fast path serves
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
//! With TLS (`tls`), every connection is handshaken first and then goes to
//! hyper whole (HTTP/2 when ALPN picked `h2`, HTTP/1.1 otherwise): user-space
//! TLS leaves nothing for sendfile or splice, so its bodies are copied through
//! the same pooled buffers as hyper's plaintext ones (`via` "tls-copy").
//!
//! The fast path answers with the same `download::answer` and `Reject`s as
//! hyper and goes through the same gate, so the two differ only in how bytes
//! reach the socket. This module moves bytes; what they mean is decided in
//! `http1` (heads), `gate` (who may), `upload` and `download` (transfers).

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::app::App;
use crate::download::{self, Answer, remote, semantics::RequestHeaders};
use crate::error::Reject;
use crate::filters;
use crate::gate::{self, Ask, Outcome, Transport, Visit};
use crate::http1::response::{self, finish_head, push_header, push_headers, status_line};
use crate::http1::{self, LINGER_BYTES, LINGER_TIME, Parsed, replay::Replay};
use crate::service;
use crate::tls::Tls;
use crate::upload::{
    self,
    splice::{Body as BodyRead, Failed, UploadHead},
};
use crate::zerocopy;
use sluice_policy::Backend;

/// Accepts until `shutdown` turns true, then drains in-flight connections for
/// up to the grace period. With `tls`, every connection speaks TLS.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    tls: Option<Arc<Tls>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match &tls {
                    Some(tls) => {
                        tracker.spawn(tls_connection(app.clone(), tls.clone(), stream, peer, graceful.watcher(), shutdown.clone()));
                    }
                    None => {
                        tracker.spawn(connection(app.clone(), stream, peer, graceful.watcher(), shutdown.clone()));
                    }
                },
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
                HeadRead::Closed => {
                    // Idle between requests when the stop came: the last
                    // response may still be queued.
                    if *shutdown.borrow() {
                        close_at_shutdown(stream, app.settings.shutdown_grace).await;
                    }
                    return;
                }
                HeadRead::TooLarge => {
                    let r = Reject::HeadTooLarge(app.settings.max_head);
                    write_reject(&mut stream, &mut scratch, &r, false, &[]).await;
                    return;
                }
                HeadRead::Other | HeadRead::Complete(_, None) => break,
                HeadRead::Complete(n, Some(req)) => {
                    let keep = if let Some((len, expect_continue)) = req.upload {
                        // The fast upload paths splice: with splice off they take nothing,
                        // and the request goes to hyper untouched (no gate work twice).
                        if !app.settings.splice {
                            break;
                        }
                        let mut visit = Visit::new(req.method, &req.path, peer);
                        // Refused at the gate, or not for this path: hyper reads the head
                        // again, and answers (or refuses) the same.
                        let Ok(pass) = visit.enter(&app, &ask(&req)) else {
                            break;
                        };
                        let head = UploadHead {
                            content_type: req.content_type.as_deref(),
                            len,
                            expect_continue,
                        };
                        let plan = if req.method == "PUT" {
                            upload::splice::plan(&app, &pass, &head, peer).map(Upload::Put)
                        } else {
                            upload::form::plan(&app, &pass, &head, peer).map(Upload::Post)
                        };
                        let Some(plan) = plan else {
                            break;
                        };
                        buf.advance(n);
                        serve_upload(&app, &mut stream, &mut buf, &mut scratch, visit, &req, plan)
                            .await
                    } else {
                        // An https engine's bytes are copied by hyper's client: the
                        // fast path (raw client, splice) leaves those downloads to hyper.
                        if engine_over_tls(&app, &req) {
                            break;
                        }
                        buf.advance(n);
                        serve_fast(&app, &mut stream, &mut scratch, peer, &req).await
                    };
                    if *shutdown.borrow() {
                        close_at_shutdown(stream, app.settings.shutdown_grace).await;
                        return;
                    }
                    if !keep {
                        return;
                    }
                }
            }
        }
    }
    let held = stream.as_fd().try_clone_to_owned().ok();
    let io = TokioIo::new(Replay::new(buf.freeze(), stream));
    serve_hyper(app.clone(), io, peer, watcher, Transport::Plain, None).await;
    if *shutdown.borrow() {
        close_held_at_shutdown(held, app.settings.shutdown_grace).await;
    }
}

/// Closes a connection that ends while the proxy stops without losing the
/// end of its last response. Those bytes may still sit in the socket's send
/// queue when the connection's task is done, and a process that exits then
/// loses them if its network namespace goes with it: a pod's does, as soon
/// as its containers have stopped, and the client is left waiting for bytes
/// that never come (seen on the test node: a 256 MiB download whose last
/// 2.5 MB were queued when the drain ended). So: FIN after the queued bytes,
/// then wait, bounded, until the client has acknowledged them all (or has
/// closed); what it sends meanwhile is dropped.
async fn close_at_shutdown(mut stream: TcpStream, within: Duration) {
    const POLL: Duration = Duration::from_millis(20);
    if stream.shutdown().await.is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + within;
    let mut sink = [0u8; 4096];
    while !matches!(zerocopy::unacked(&stream), Ok(0) | Err(_))
        && tokio::time::Instant::now() < deadline
    {
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(POLL, stream.read(&mut sink)).await {
            return;
        }
    }
}

/// `close_at_shutdown` for a socket hyper had: the descriptor duplicated
/// before hyper took it keeps the socket open past hyper's close.
async fn close_held_at_shutdown(held: Option<std::os::fd::OwnedFd>, within: Duration) {
    let Some(fd) = held else { return };
    // The duplicate shares the original's O_NONBLOCK (one open file).
    if let Ok(stream) = TcpStream::from_std(std::net::TcpStream::from(fd)) {
        close_at_shutdown(stream, within).await;
    }
}

/// A TLS connection: the handshake (bounded by the header timeout, given up
/// at shutdown), then hyper for the connection's life.
async fn tls_connection(
    app: Arc<App>,
    tls: Arc<Tls>,
    stream: TcpStream,
    peer: SocketAddr,
    watcher: Watcher,
    mut shutdown: watch::Receiver<bool>,
) {
    app.metrics.connections_open.inc();
    let _open = OpenConn(app.clone());
    let _ = stream.set_nodelay(true);
    let held = stream.as_fd().try_clone_to_owned().ok();
    let stream = tokio::select! {
        s = tls.accept(stream, peer) => match s {
            Some(s) => s,
            None => return,
        },
        _ = shutdown.changed() => return,
    };
    let proto = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Some(Proto::H2),
        Some(_) => Some(Proto::H1),
        None => None,
    };
    serve_hyper(
        app.clone(),
        TokioIo::new(stream),
        peer,
        watcher,
        Transport::Tls,
        proto,
    )
    .await;
    if *shutdown.borrow() {
        close_held_at_shutdown(held, app.settings.shutdown_grace).await;
    }
}

/// The protocol ALPN settled on.
#[derive(Clone, Copy)]
enum Proto {
    H1,
    H2,
}

/// hyper for the rest of a connection's life: HTTP/1.1 and HTTP/2 (told
/// apart by the preface, or fixed by ALPN), drained gracefully at shutdown.
async fn serve_hyper<I>(
    app: Arc<App>,
    io: TokioIo<I>,
    peer: SocketAddr,
    watcher: Watcher,
    transport: Transport,
    proto: Option<Proto>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder = match proto {
        Some(Proto::H1) => builder.http1_only(),
        Some(Proto::H2) => builder.http2_only(),
        None => builder,
    };
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
    let svc = service_fn(move |req| service::handle(svc_app.clone(), peer, transport, req));
    if let Err(e) = watcher.watch(builder.serve_connection(io, svc)).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// A connection's first read buffer, kept while it stays on the fast path.
const CONN_BUF: usize = 8 * 1024;

/// Largest read buffer hyper may grow for one HTTP/1 connection.
const READ_BUF_MAX: usize = 64 * 1024;

/// What `read_head` got: a connection's next head, classified (`http1::parse`).
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per request and moved out at once; a Box would be an allocation per request"
)]
enum HeadRead {
    /// A whole head of `n` bytes, and the fast path's request when it takes it.
    Complete(usize, Option<http1::Request>),
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
        match http1::parse(buf, settings.max_head) {
            Parsed::Complete(n, req) => return HeadRead::Complete(n, req),
            Parsed::Other => return HeadRead::Other,
            Parsed::TooLarge => return HeadRead::TooLarge,
            Parsed::Partial => {}
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

/// Does the request's route download from an https engine?
fn engine_over_tls(app: &App, req: &http1::Request) -> bool {
    app.current.load().is_some_and(|a| {
        a.any_tls_engine
            && a.route(req.host.as_deref(), &req.path)
                .is_some_and(|r| r.downloads_over_tls())
    })
}

/// What a fast-path request presents at the gate. Never a CORS preflight:
/// that is an OPTIONS, which hyper serves.
fn ask(req: &http1::Request) -> Ask<'_> {
    Ask {
        host: req.host.as_deref(),
        authorization: req.authorization.as_deref(),
        api_key: req.api_key.as_deref(),
        origin: req.origin.as_deref(),
        request_method: None,
        request_headers: None,
        query: req.query.as_deref(),
    }
}

/// Serves one request; false when the connection must close.
async fn serve_fast(
    app: &App,
    stream: &mut TcpStream,
    scratch: &mut Vec<u8>,
    peer: SocketAddr,
    req: &http1::Request,
) -> bool {
    let mut visit = Visit::new(req.method, &req.path, peer);
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
        let pass = visit.enter(app, &ask(req))?;
        let (route, rel) = (&pass.route, pass.rel);
        let cors = visit.cors_headers();
        if !matches!(route.route.backend, Backend::Fs { .. }) {
            via = "relay";
            if !route.route.download_enabled {
                return Err(Reject::DownloadDisabled(route.route.policy.clone()));
            }
            let key = filters::parse_key(rel).map_err(|_| Reject::NotFound)?;
            let r = remote::via_fast(
                app,
                route,
                &key,
                &rh,
                req.head,
                stream,
                scratch,
                req.keep_alive,
                peer,
                cors.as_slice(),
            )
            .await?;
            via = r.via;
            return Ok((r.status, r.bytes, r.keep_alive));
        }
        let answer = download::answer(route, rel, &rh, req.head)?;
        let _permit = match (&answer, req.head) {
            (Answer::Body { .. }, false) => Some(gate::admit(app, peer)?),
            _ => None,
        };
        Ok(send_file(
            app,
            stream,
            scratch,
            peer,
            answer,
            req.head,
            req.keep_alive,
            cors.as_slice(),
        )
        .await)
    }
    .await;
    let (status, bytes, rule, keep) = match outcome {
        Ok((status, bytes, keep)) => (status, bytes, None, keep),
        Err(r) => {
            if matches!(r, Reject::Storage(_) | Reject::Backend { .. }) {
                tracing::error!(error = %r, path = %req.path, "backend failure");
            }
            let keep = req.keep_alive && !req.head;
            let ok = write_reject(stream, scratch, &r, keep, visit.cors_headers().as_slice()).await;
            (r.status().as_u16(), 0, Some(r.rule()), ok && keep)
        }
    };
    visit.record(
        app,
        Outcome {
            status,
            bytes,
            rule,
            via,
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
    visit: Visit<'_>,
    req: &http1::Request,
    plan: Upload,
) -> bool {
    let cors = visit.cors_headers();
    let ran = match plan {
        Upload::Put(p) => upload::splice::run(app, stream, buf, p).await,
        Upload::Post(p) => upload::form::run(app, stream, buf, p).await,
    };
    let (status, bytes, rule, keep, via) = match ran {
        Ok((stored, spliced)) => {
            let body = stored.counted(&app.metrics, if spliced { "splice" } else { "copy" });
            response::json(scratch, 201, &body, req.keep_alive, cors.as_slice());
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
            let ok = write_reject(stream, scratch, &reject, keep, cors.as_slice()).await;
            if ok && body == BodyRead::Partial {
                linger(stream, scratch).await;
            }
            let status = reject.status().as_u16();
            (status, 0, Some(reject.rule()), ok && keep, "splice")
        }
    };
    visit.record(
        app,
        Outcome {
            status,
            bytes,
            rule,
            via,
        },
    );
    keep
}

/// Writes a refusal whole, with the request's CORS headers; false when the client is gone.
async fn write_reject(
    stream: &mut TcpStream,
    scratch: &mut Vec<u8>,
    r: &Reject,
    keep: bool,
    cors: &[(&str, &str)],
) -> bool {
    response::reject(scratch, r, keep, cors);
    stream.write_all(scratch).await.is_ok()
}

/// Reads and drops what the client still sends after an early answer, so that
/// closing does not reset the connection before it has read that answer
/// (nginx's lingering close; hyper's path does the same in `service`).
async fn linger(stream: &mut TcpStream, scratch: &mut Vec<u8>) {
    scratch.clear();
    scratch.resize(16 * 1024, 0);
    let drain = async {
        let mut n = 0u64;
        while n <= LINGER_BYTES {
            match stream.read(scratch).await {
                Ok(0) | Err(_) => return,
                Ok(k) => n += k as u64,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// The fs answer on the fast path: head (with the request's CORS headers),
/// then sendfile(2). Returns (status, bytes, keep-alive).
#[allow(clippy::too_many_arguments)]
async fn send_file(
    app: &App,
    stream: &mut TcpStream,
    scratch: &mut Vec<u8>,
    peer: SocketAddr,
    answer: Answer,
    head: bool,
    keep_alive: bool,
    cors: &[(&str, &str)],
) -> (u16, u64, bool) {
    let status = answer.status();
    scratch.clear();
    status_line(scratch, status);
    for (k, v) in answer.headers() {
        push_header(scratch, k, &v);
    }
    push_headers(scratch, cors);
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
