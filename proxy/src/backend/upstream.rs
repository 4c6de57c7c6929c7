//! A minimal HTTP/1.1 client for GET/HEAD to a storage engine, written by
//! hand because splice(2) needs the engine's socket itself once the response
//! head is read, and no HTTP client library hands its socket back.
//!
//! ```text
//!   pool (idle keep-alive sockets per authority) -> write head -> read head
//!   (httparse) -> Upstream { status, headers, framing, socket, bytes read past the head }
//!   body fully relayed and the engine allows keep-alive -> socket back to the pool
//! ```
//! It only speaks what a GET of a stored object and a spliced PUT
//! (`upload::splice`) need: no chunked request bodies, no 1xx, no upgrades.
//! A pooled socket the engine closed meanwhile fails on first use; the
//! request is then retried once on a new connection (GET is idempotent; a
//! PUT only when its whole body is still in hand).

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use crate::error::Reject;

/// Longest response head accepted from an engine.
const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// Until the engine closes.
    Close,
}

pub struct Upstream {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub framing: Framing,
    pub stream: TcpStream,
    /// Body bytes read together with the head.
    pub buffered: BytesMut,
    pub authority: String,
    pub keep_alive: bool,
}

impl Upstream {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

#[derive(Default)]
pub struct RawPool {
    idle: Mutex<HashMap<String, Vec<TcpStream>>>,
}

/// Idle sockets kept per engine.
const MAX_IDLE_PER_AUTHORITY: usize = 32;

impl RawPool {
    /// An idle socket the engine has not closed meanwhile. An idle socket has
    /// nothing to read: one that reads EOF or bytes nobody asked for is dropped.
    /// The reactor is asked first, which costs no system call; only a socket it
    /// calls readable (closed, or readiness left from the last response) is
    /// read to tell. A close it has not seen yet is caught by the callers' retry.
    fn take(&self, authority: &str) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let free = idle.get_mut(authority)?;
        while let Some(s) = free.pop() {
            if s.ready(Interest::READABLE).now_or_never().is_none() {
                return Some(s);
            }
            match s.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(s),
                _ => {}
            }
        }
        None
    }

    pub fn put(&self, authority: &str, stream: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        match idle.get_mut(authority) {
            Some(v) if v.len() < MAX_IDLE_PER_AUTHORITY => v.push(stream),
            Some(_) => {}
            None => {
                idle.insert(authority.to_string(), vec![stream]);
            }
        }
    }
}

/// An engine's address: where to connect and what its `host` header says.
#[derive(Debug, Clone)]
pub struct Origin {
    host: String,
    port: u16,
    pub authority: String,
}

impl Origin {
    pub fn of(url: &url::Url) -> Result<Self, Reject> {
        let host = url
            .host_str()
            .ok_or_else(|| Reject::Storage(format!("{url}: no host")))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Ok(Self {
            host: host.to_string(),
            port,
            authority,
        })
    }

    /// The request head: request line, host, user-agent, `headers`, blank line.
    pub fn head<'h>(
        &self,
        method: &str,
        target: &str,
        headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
    ) -> Vec<u8> {
        let mut head = Vec::with_capacity(256);
        for part in [
            method,
            " ",
            target,
            " HTTP/1.1\r\nhost: ",
            &self.authority,
            "\r\nuser-agent: sluice\r\n",
        ] {
            head.extend_from_slice(part.as_bytes());
        }
        for (k, v) in headers {
            head.extend_from_slice(k.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(v);
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        head
    }

    /// A pooled socket (`true`) unless `fresh`, else a new connection.
    pub async fn connect(
        &self,
        pool: &RawPool,
        fresh: bool,
        timeout: Duration,
    ) -> Result<(TcpStream, bool), Reject> {
        if !fresh && let Some(s) = pool.take(&self.authority) {
            return Ok((s, true));
        }
        let s = tokio::time::timeout(timeout, TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(|_| Reject::BackendTimeout(format!("connect to {}", self.authority)))?
            .map_err(|e| Reject::Backend {
                status: None,
                message: format!("connect to {}: {e}", self.authority),
            })?;
        let _ = s.set_nodelay(true);
        Ok((s, false))
    }
}

/// The request target (path and query) of `url`.
pub fn target(url: &url::Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

/// Sends `method url` with `headers` and reads the response head.
pub async fn request(
    pool: &RawPool,
    url: &url::Url,
    method: &str,
    headers: &[(&str, &[u8])],
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<Upstream, Reject> {
    let origin = Origin::of(url)?;
    let head = origin.head(method, &target(url), headers.iter().copied());
    let what = || {
        format!(
            "{method} {}://{}{}",
            url.scheme(),
            origin.authority,
            url.path()
        )
    };

    for attempt in 0..2 {
        let (mut stream, pooled) = origin.connect(pool, attempt > 0, connect_timeout).await?;
        let exchange = async {
            stream.write_all(&head).await?;
            read_head(&mut stream, method == "HEAD").await
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => return Err(Reject::BackendTimeout(what())),
            Ok(Ok(head)) => return Ok(head.into_upstream(stream, origin.authority)),
            Ok(Err(e)) if pooled => {
                tracing::debug!(error = %e, authority = %origin.authority, "pooled engine connection was stale; retrying");
            }
            Ok(Err(e)) => {
                return Err(Reject::Backend {
                    status: None,
                    message: format!("{}: {e}", what()),
                });
            }
        }
    }
    Err(Reject::Backend {
        status: None,
        message: format!("{}: no usable connection", what()),
    })
}

/// A response head as read, before it is tied to its socket.
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub framing: Framing,
    /// Body bytes read together with the head.
    pub buffered: BytesMut,
    pub keep_alive: bool,
}

impl Head {
    fn into_upstream(self, stream: TcpStream, authority: String) -> Upstream {
        Upstream {
            status: self.status,
            headers: self.headers,
            framing: self.framing,
            stream,
            buffered: self.buffered,
            authority,
            keep_alive: self.keep_alive,
        }
    }
}

/// Reads a response head; `is_head`: the request was HEAD, so no body follows.
pub async fn read_head(stream: &mut TcpStream, is_head: bool) -> io::Result<Head> {
    read(stream, is_head, true).await
}

/// Reads an engine's answer to an upload: its status, framing and first body
/// bytes, not its headers (nothing of them is passed on). Small answers cost
/// one small buffer.
pub async fn read_answer(stream: &mut TcpStream) -> io::Result<Head> {
    read(stream, false, false).await
}

async fn read(stream: &mut TcpStream, is_head: bool, keep_headers: bool) -> io::Result<Head> {
    // A download's head comes with body bytes worth taking in the same read.
    let mut buf = BytesMut::with_capacity(if keep_headers { 4096 } else { 512 });
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "engine closed the connection",
            ));
        }
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut hs);
        match resp.parse(&buf) {
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "engine response head too large",
                    ));
                }
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(4096);
                }
            }
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("engine response: {e}"),
                ));
            }
            Ok(httparse::Status::Complete(n)) => {
                let status = resp.code.unwrap_or(0);
                let http10 = resp.version == Some(0);
                let get = |name: &str| {
                    resp.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| h.value)
                };
                let close = get("connection").is_some_and(|v| {
                    v.split(|b| *b == b',')
                        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
                });
                let chunked = get("transfer-encoding").is_some_and(|v| {
                    v.split(|b| *b == b',')
                        .next_back()
                        .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
                });
                let length = get("content-length")
                    .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
                let framing =
                    if is_head || status == 204 || status == 304 || (100..200).contains(&status) {
                        Framing::None
                    } else if chunked {
                        Framing::Chunked
                    } else if let Some(n) = length {
                        Framing::Length(n)
                    } else {
                        Framing::Close
                    };
                let keep_alive = !close && !http10 && framing != Framing::Close;
                let headers: Vec<(String, Vec<u8>)> = if keep_headers {
                    resp.headers
                        .iter()
                        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                        .collect()
                } else {
                    Vec::new()
                };
                // Not split_to: that would make the buffer shared (an allocation).
                buf.advance(n);
                return Ok(Head {
                    status,
                    headers,
                    framing,
                    buffered: buf,
                    keep_alive,
                });
            }
        }
    }
}
