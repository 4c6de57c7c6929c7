//! Downloads through remote backends (http, s3): the engine's answer is
//! relayed, Range and conditional headers passed through.
//!
//! ```text
//!   fast path (client on plaintext HTTP/1.1):
//!     upstream::request -> status check -> our head to the client
//!     Content-Length + identity encoding -> bytes read with the head, then
//!        splice(2) engine socket -> pooled pipe -> client socket
//!     otherwise -> copy through a pooled buffer (chunked framing tracked so
//!        the engine connection can be reused)
//!   hyper path (HTTP/2, HTTP/1.0, and every https engine: its TLS stream
//!     cannot be spliced, so `server` leaves those to hyper): the route's
//!     hyper client, body streamed through (metrics path "copy")
//! ```
//! Either way the byte count is checked against the engine's Content-Length:
//! a short body is an error and the client connection is closed, never a
//! silently truncated file.

use std::io;
use std::net::SocketAddr;

use bytes::Buf;
use futures_util::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::Frame;
use sluice_policy::Backend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::semantics::RequestHeaders;
use crate::app::App;
use crate::backend::http::{empty_body, encode_key, exchange, expect_success};
use crate::backend::upstream::{self, Framing, Upstream};
use crate::body::Body;
use crate::error::Reject;
use crate::gate;
use crate::http1::chunked::Chunked;
use crate::http1::response::{finish_head, push_header, push_headers, status_line};
use crate::runtime::RouteRt;

/// Engine response headers a client gets.
const RELAYED: &[&str] = &[
    "content-type",
    "content-length",
    "content-range",
    "etag",
    "last-modified",
    "accept-ranges",
    "cache-control",
    "content-encoding",
    "content-disposition",
    "expires",
];

/// The engine URL of `key` and the extra headers the policy sends it.
pub async fn upstream_url(
    route: &RouteRt,
    key: &str,
    head: bool,
    wait: std::time::Duration,
) -> Result<(url::Url, Vec<(String, String)>), Reject> {
    match &route.route.backend {
        Backend::Http {
            download_url,
            headers,
            ..
        } => {
            let u = format!("{download_url}/{}", encode_key(key))
                .parse()
                .map_err(|e| Reject::Storage(format!("engine URL for {key:?}: {e}")))?;
            Ok((u, headers.clone()))
        }
        Backend::S3 { .. } => {
            let t = route
                .s3
                .as_ref()
                .ok_or_else(|| Reject::Storage("s3 route without a bucket".into()))?;
            Ok((t.get_url(key, head, wait).await?, vec![]))
        }
        Backend::Fs { .. } => Err(Reject::Storage("not a remote backend".into())),
    }
}

fn passthrough<'a>(rh: &RequestHeaders<'a>) -> Vec<(&'static str, &'a [u8])> {
    [
        ("range", rh.range),
        ("if-match", rh.if_match),
        ("if-none-match", rh.if_none_match),
        ("if-modified-since", rh.if_modified_since),
        ("if-unmodified-since", rh.if_unmodified_since),
        ("if-range", rh.if_range),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect()
}

/// Statuses relayed as they are; the rest become our own rejections.
fn check_status(status: u16, content_range: Option<&[u8]>) -> Result<(), Reject> {
    match status {
        200 | 206 | 304 => Ok(()),
        404 => Err(Reject::NotFound),
        412 => Err(Reject::PreconditionFailed),
        416 => {
            let len = content_range
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.rsplit('/').next())
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            Err(Reject::RangeNotSatisfiable { len })
        }
        s => Err(Reject::Backend {
            status: Some(s),
            message: format!("engine answered {s} to a download"),
        }),
    }
}

/// Through hyper's client, for clients that are not on the fast path; the
/// body's bytes count under `path` (copy, or tls-copy on a TLS connection).
pub async fn via_hyper(
    app: &App,
    route: &RouteRt,
    key: &str,
    rh: &RequestHeaders<'_>,
    head: bool,
    peer: SocketAddr,
    path: &'static str,
) -> Result<(Response<Body>, u64), Reject> {
    let (url, extra) = upstream_url(route, key, head, app.remotes.timeout).await?;
    let mut req = Request::builder()
        .method(if head { Method::HEAD } else { Method::GET })
        .uri(url.as_str());
    for (k, v) in &extra {
        req = req.header(k.as_str(), v.as_str());
    }
    for (k, v) in passthrough(rh) {
        req = req.header(k, v);
    }
    let req = req
        .body(empty_body())
        .map_err(|e| Reject::Storage(format!("engine request: {e}")))?;
    let resp = exchange(&route.client.http, req, app.remotes.timeout).await?;
    if !matches!(resp.status().as_u16(), 200 | 206 | 304 | 404 | 412 | 416) {
        // The engine's own words (an https engine refusing a client certificate
        // answers 400 with why) make the 502 something a person can act on.
        // Not the query: a presigned URL carries its signature there.
        let what = format!("GET {}", &url[..url::Position::AfterPath]);
        return Err(expect_success(resp, &what)
            .await
            .err()
            .unwrap_or_else(|| Reject::Backend {
                status: None,
                message: format!("{what}: unexpected answer"),
            }));
    }
    check_status(
        resp.status().as_u16(),
        resp.headers().get("content-range").map(|v| v.as_bytes()),
    )?;
    let status = resp.status();
    let mut b = Response::builder().status(status);
    for name in RELAYED {
        if let Some(v) = resp.headers().get(*name) {
            b = b.header(*name, v);
        }
    }
    let len: u64 = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    if head || status == StatusCode::NOT_MODIFIED {
        let empty = http_body_util::Empty::new()
            .map_err(|e| match e {})
            .boxed_unsync();
        return Ok((b.body(empty).unwrap_or_default(), 0));
    }
    let permit = gate::admit(app, peer)?;
    app.metrics.download_responses.inc(path);
    let counter = app.metrics.download_bytes.counter(path);
    let stream = BodyStream::new(resp.into_body()).map(move |r| {
        let _held = &permit;
        match r {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    counter.inc_by(d.len() as u64);
                }
                Ok(f)
            }
            Err(e) => Err(io::Error::other(e)),
        }
    });
    let body = StreamBody::new(stream.filter_map(
        |r: io::Result<Frame<bytes::Bytes>>| async move {
            match r {
                Ok(f) if f.is_data() => Some(Ok(f)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            }
        },
    ))
    .boxed_unsync();
    Ok((b.body(body).unwrap_or_default(), len))
}

/// What the fast path did, for the access log.
pub struct Relayed {
    pub status: u16,
    pub bytes: u64,
    pub keep_alive: bool,
    /// How the body moved, for the access log: splice, copy, or relay (no body).
    pub via: &'static str,
}

/// On the fast path: the client socket is ours, so the body can be spliced.
/// `cors`: the gate's CORS headers, for the client's head.
/// An `Err` means nothing was written to the client yet.
#[allow(clippy::too_many_arguments)]
pub async fn via_fast(
    app: &App,
    route: &RouteRt,
    key: &str,
    rh: &RequestHeaders<'_>,
    head: bool,
    client: &mut TcpStream,
    scratch: &mut Vec<u8>,
    keep_alive: bool,
    peer: SocketAddr,
    cors: &[(&str, &str)],
) -> Result<Relayed, Reject> {
    let (url, extra) = upstream_url(route, key, head, app.remotes.timeout).await?;
    let mut hdrs: Vec<(&str, &[u8])> = extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    hdrs.extend(passthrough(rh));
    let mut up = upstream::request(
        &app.raw,
        &url,
        if head { "HEAD" } else { "GET" },
        &hdrs,
        app.remotes.connect_timeout,
        app.remotes.timeout,
    )
    .await?;
    check_status(up.status, up.header("content-range"))?;
    let _permit = match up.framing {
        Framing::None => None,
        _ => Some(gate::admit(app, peer)?),
    };
    let mut keep_alive = keep_alive && up.framing != Framing::Close;

    scratch.clear();
    status_line(scratch, up.status);
    for (k, v) in &up.headers {
        if RELAYED.contains(&k.as_str())
            && !(k == "content-length" && up.framing == Framing::Chunked)
        {
            scratch.extend_from_slice(k.as_bytes());
            scratch.extend_from_slice(b": ");
            scratch.extend_from_slice(v);
            scratch.extend_from_slice(b"\r\n");
        }
    }
    if up.framing == Framing::Chunked {
        push_header(scratch, "transfer-encoding", "chunked");
    }
    push_headers(scratch, cors);
    finish_head(scratch, keep_alive);
    let status = up.status;
    if client.write_all(scratch).await.is_err() {
        return Ok(Relayed {
            status,
            bytes: 0,
            keep_alive: false,
            via: "relay",
        });
    }

    let identity = up
        .header("content-encoding")
        .is_none_or(|v| v.trim_ascii().eq_ignore_ascii_case(b"identity"));
    let (path, result) = match up.framing {
        Framing::None => ("none", Ok(0)),
        Framing::Length(n) if app.settings.splice && identity => {
            ("splice", relay_length(app, &mut up, client, n, true).await)
        }
        Framing::Length(n) => ("copy", relay_length(app, &mut up, client, n, false).await),
        Framing::Chunked => ("copy", relay_chunked(app, &mut up, client).await),
        Framing::Close => ("copy", relay_until_close(app, &mut up, client).await),
    };
    let via = if path == "none" { "relay" } else { path };
    if path != "none" {
        app.metrics.download_responses.inc(path);
        if let Ok(n) = &result {
            app.metrics.download_bytes.inc_by(path, *n);
        }
    }
    match result {
        Ok(bytes) => {
            if up.keep_alive && up.buffered.is_empty() {
                app.raw.put(&up.authority, up.stream);
            }
            Ok(Relayed {
                status,
                bytes,
                keep_alive,
                via,
            })
        }
        Err(e) => {
            tracing::warn!(%peer, key, error = %e, "download from the engine broke off; closing the client connection");
            keep_alive = false;
            Ok(Relayed {
                status,
                bytes: 0,
                keep_alive,
                via,
            })
        }
    }
}

async fn relay_length(
    app: &App,
    up: &mut Upstream,
    client: &mut TcpStream,
    n: u64,
    splice: bool,
) -> io::Result<u64> {
    let pre = up
        .buffered
        .len()
        .min(usize::try_from(n).unwrap_or(usize::MAX));
    client.write_all(&up.buffered[..pre]).await?;
    up.buffered.advance(pre);
    let rest = n - pre as u64;
    if rest == 0 {
        return Ok(n);
    }
    if splice {
        let pipe = app.pipes.get()?;
        let ends = crate::zerocopy::Ends {
            window: app.settings.splice_window,
            read_idle: app.settings.idle_timeout,
            write_idle: app.settings.idle_timeout,
            reader: "engine",
            writer: "client",
        };
        crate::zerocopy::splice_exact(&up.stream, client, &pipe, rest, ends, |_| Ok(())).await?;
        // Only a fully drained pipe goes back.
        app.pipes.put(pipe);
    } else {
        copy_exact(app, up, client, rest).await?;
    }
    Ok(n)
}

async fn copy_exact(
    app: &App,
    up: &mut Upstream,
    client: &mut TcpStream,
    mut left: u64,
) -> io::Result<()> {
    let mut buf = app.bufs.get();
    let idle = app.settings.idle_timeout;
    let result = async {
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = tokio::time::timeout(idle, up.stream.read(&mut buf[..want]))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "engine stopped sending"))??;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "engine closed before the advertised length",
                ));
            }
            tokio::time::timeout(idle, client.write_all(&buf[..n]))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"))??;
            left -= n as u64;
        }
        Ok(())
    }
    .await;
    app.bufs.put(buf);
    result
}

async fn fill(up: &mut Upstream) -> io::Result<()> {
    if up.buffered.len() > 64 * 1024 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "chunk framing line too long",
        ));
    }
    if up.stream.read_buf(&mut up.buffered).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "engine closed mid-body",
        ));
    }
    Ok(())
}

/// Forwards a chunked body as is, following its framing to find where it ends.
async fn relay_chunked(app: &App, up: &mut Upstream, client: &mut TcpStream) -> io::Result<u64> {
    let mut framing = Chunked::default();
    loop {
        let n = framing
            .scan(&up.buffered)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        client.write_all(&up.buffered[..n]).await?;
        up.buffered.advance(n);
        if framing.done() {
            return Ok(framing.data_len());
        }
        match framing.pending() {
            0 => fill(up).await?,
            // Everything buffered was taken: the rest of the chunk comes straight off the socket.
            left => {
                copy_exact(app, up, client, left).await?;
                framing.skip(left);
            }
        }
    }
}

async fn relay_until_close(
    app: &App,
    up: &mut Upstream,
    client: &mut TcpStream,
) -> io::Result<u64> {
    let mut n = up.buffered.len() as u64;
    client.write_all(&up.buffered).await?;
    up.buffered.clear();
    let mut buf = app.bufs.get();
    let result = async {
        loop {
            let k = tokio::time::timeout(app.settings.idle_timeout, up.stream.read(&mut buf))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "engine stopped sending"))??;
            if k == 0 {
                return Ok(n);
            }
            client.write_all(&buf[..k]).await?;
            n += k as u64;
        }
    }
    .await;
    app.bufs.put(buf);
    result
}
