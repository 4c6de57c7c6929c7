//! Raw PUT on the fast path: past the sniff window the body moves client
//! socket -> pipe -> engine socket with splice(2), never entering user space
//! (or, with `checksum: sha256`, entering it once, read-only, to be hashed).
//!
//! ```text
//!   server.rs parsed a plain HTTP/1.1 PUT with Content-Length; the gate
//!   found its route and let it in
//!   plan: route is backend.http put, no spool, splice on; key, declared
//!         type and extension, Content-Length within maxFileSize, admission
//!         -- anything else: None, hyper serves the request (and gives the
//!         same answer, or the same rejection)
//!   100 Continue if asked -> first SNIFF_LEN bytes read, sniffed, checked
//!   -> engine socket (RawPool): PUT head with Content-Length, the bytes read
//!   -> the rest: checksum none: spliced client socket -> pooled pipe -> engine
//!                socket in one go
//!                sha256: per window, a peek at what is queued (upload::peek),
//!                hashed, then exactly those bytes spliced
//!   -> the engine's answer: 2xx -> 201 {"objects": [...]}, else 502 / 504
//! ```
//! Exactly Content-Length bytes are moved, so the size rule holds without
//! looking at them. On any failure the engine socket is closed mid-body: the
//! engine sees a truncated request and stores nothing, as with hyper's abort.
//! A PUT body that fits in what was read with the head (small files) goes out
//! in one write; it is the common case for request rate, and it skips hyper's
//! connection, task and body channel on both sides.

use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sha2::{Digest, Sha256};
use sluice_policy::{Backend, Checksum, HttpMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::peek;
use super::{Stored, StoredObject, check_declared, verify_head};
use crate::app::App;
use crate::backend::http::push_encoded_key;
use crate::backend::upstream::{self, Framing, Head, Origin};
use crate::error::Reject;
use crate::filters::{self, SNIFF_LEN};
use crate::gate::{self, Pass};
use crate::http1::response::CONTINUE;
use crate::limits::{BodyError, Permit};
use crate::runtime::{Engine, RouteRt};
use crate::zerocopy::{Ends, Lowat, SpliceError};

/// What the fast path read from an upload's head (PUT or POST), beside what
/// the gate took.
pub struct UploadHead<'a> {
    pub content_type: Option<&'a [u8]>,
    pub len: u64,
    pub expect_continue: bool,
}

/// A PUT the fast path takes: every check that needs no body byte has passed.
pub struct Plan {
    route: Arc<RouteRt>,
    engine: Arc<Engine>,
    key: String,
    declared: String,
    /// The request target on the engine: `{path}/{key}`, percent-encoded.
    target: String,
    len: u64,
    expect_continue: bool,
    /// `checksum: sha256`: every byte is peeked at (and hashed) before it is spliced.
    hash: bool,
    _permit: Permit,
}

/// None when hyper should serve the request (a route this path does not
/// take, or a check that fails: hyper then answers with the rejection).
pub fn plan(app: &App, pass: &Pass<'_>, h: &UploadHead<'_>, peer: SocketAddr) -> Option<Plan> {
    let (engine, mode) = engine_route(pass)?;
    let route = pass.route.clone();
    let rules = &route.route.upload;
    if mode != HttpMode::Put || h.len > rules.max_file_size {
        return None;
    }
    let key = filters::parse_key(pass.rel).ok()?;
    let name = key.rsplit('/').next().unwrap_or(&key);
    let declared =
        super::declared_put_type(h.content_type.and_then(|c| std::str::from_utf8(c).ok()));
    check_declared(&route.allow, name, &declared).ok()?;
    let mut target = String::with_capacity(engine.path.len() + key.len() + 16);
    target.push_str(&engine.path);
    target.push('/');
    push_encoded_key(&mut target, &key);
    let hash = rules.checksum == Checksum::Sha256;
    let permit = gate::admit(app, peer).ok()?;
    Some(Plan {
        engine,
        route,
        key,
        declared,
        target,
        len: h.len,
        expect_continue: h.expect_continue,
        hash,
        _permit: permit,
    })
}

/// What both fast upload paths ask first, of a request the gate let in (and
/// that `server` sends here only with splice on): a `backend.http` without
/// spool whose URL the fast path can use. Returns the engine and the mode.
pub(super) fn engine_route(pass: &Pass<'_>) -> Option<(Arc<Engine>, HttpMode)> {
    match (&pass.route.route.backend, &pass.route.engine) {
        (
            Backend::Http {
                mode, spool: None, ..
            },
            Some(engine),
        ) => Some((engine.clone(), *mode)),
        _ => None,
    }
}

impl Plan {
    /// The route, for the access log once the plan is spent.
    pub fn route(&self) -> Arc<RouteRt> {
        self.route.clone()
    }
}

/// How far the client's body got when a PUT failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Read to its end: the connection can go on.
    Read,
    /// Partly read: the rest must be drained (lingering close).
    Partial,
    /// The client waits for `100 Continue`, which was not sent: nothing to drain.
    Withheld,
}

pub struct Failed {
    pub reject: Reject,
    pub body: Body,
}

pub(super) fn failed(body: Body) -> impl FnOnce(Reject) -> Failed {
    move |reject| Failed { reject, body }
}

/// `100 Continue` when `due`: the client asked for it and no body byte has come.
pub(super) async fn send_continue(stream: &mut TcpStream, due: bool) -> Result<(), Failed> {
    if !due {
        return Ok(());
    }
    stream
        .write_all(CONTINUE)
        .await
        .map_err(|e| Reject::ClientAborted(e.to_string()))
        .map_err(failed(Body::Withheld))
}

/// Moves the body to the engine; true when part of it was spliced. `buf` holds
/// bytes read past the head; what is left in it afterwards belongs to the next request.
pub async fn run(
    app: &App,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    plan: Plan,
) -> Result<(Stored, bool), Failed> {
    let started = Instant::now();
    let len = plan.len;
    let pace = app.settings.pace;
    let mut held = buf.split_to(buf.len().min(usize::try_from(len).unwrap_or(usize::MAX)));
    let window = usize::try_from(len).unwrap_or(usize::MAX).min(SNIFF_LEN);
    let partial = |held: &BytesMut| {
        if held.is_empty() && plan.expect_continue {
            Body::Withheld
        } else {
            Body::Partial
        }
    };

    // The sniff window comes into user space; the client may need a 100 first.
    if held.len() < window {
        send_continue(stream, held.is_empty() && plan.expect_continue).await?;
        while held.len() < window {
            let room = len - held.len() as u64;
            let n = tokio::time::timeout(pace.idle, (&mut *stream).take(room).read_buf(&mut held))
                .await
                .map_err(|_| Reject::from(BodyError::Idle(pace.idle)))
                .and_then(|r| r.map_err(|e| Reject::ClientAborted(e.to_string())))
                .map_err(failed(Body::Partial))?;
            if n == 0 {
                return Err(failed(Body::Partial)(Reject::ClientAborted(
                    "client closed before the end of the body".into(),
                )));
            }
        }
    }
    if plan.route.route.upload.verify_content {
        verify_head(&plan.route.allow, &plan.declared, &held[..window])
            .map_err(failed(partial(&held)))?;
    }

    let mut hasher = plan.hash.then(Sha256::new);
    if let Some(h) = hasher.as_mut() {
        h.update(&held);
    }

    let origin = &plan.engine.origin;
    let what = || format!("PUT http://{}{}", origin.authority, plan.target);
    let head = request_head(origin, &plan);
    let rest = len - held.len() as u64;
    let timeout = app.remotes.timeout;

    // A body held whole can be sent again: a pooled socket the engine closed
    // just now gets one retry on a new connection.
    for attempt in 0..2 {
        let (mut engine, pooled) = origin
            .connect(&app.raw, attempt > 0, app.remotes.connect_timeout)
            .await
            .map_err(failed(partial(&held)))?;
        match tokio::time::timeout(timeout, write_both(&mut engine, &head, &held)).await {
            Err(_) => {
                return Err(failed(partial(&held))(Reject::BackendTimeout(format!(
                    "{}: the engine read nothing for {timeout:?}",
                    what()
                ))));
            }
            Ok(Err(_)) if pooled && rest == 0 => continue,
            Ok(Err(e)) => {
                return Err(failed(partial(&held))(Reject::Backend {
                    status: None,
                    message: format!("{}: {e}", what()),
                }));
            }
            Ok(Ok(())) => {}
        }
        if rest > 0 {
            let already = held.len() as u64;
            match hasher.as_mut() {
                None => {
                    splice_rest(
                        app,
                        stream,
                        &mut engine,
                        already,
                        rest,
                        started,
                        &what,
                        false,
                    )
                    .await?
                }
                Some(h) => {
                    hash_and_splice(app, stream, &mut engine, h, already, rest, started, &what)
                        .await?
                }
            }
        }
        let answer = tokio::time::timeout(timeout, upstream::read_answer(&mut engine)).await;
        let head = match answer {
            Err(_) => {
                return Err(failed(Body::Read)(Reject::BackendTimeout(format!(
                    "{}: no answer within {timeout:?}",
                    what()
                ))));
            }
            Ok(Err(_)) if pooled && rest == 0 => continue,
            Ok(Err(e)) => {
                return Err(failed(Body::Read)(Reject::Backend {
                    status: None,
                    message: format!("{}: {e}", what()),
                }));
            }
            Ok(Ok(h)) => h,
        };
        let status = head.status;
        if !(200..300).contains(&status) {
            return Err(failed(Body::Read)(Reject::Backend {
                status: Some(status),
                message: format!("{}: engine answered {status}: {}", what(), snippet(&head)),
            }));
        }
        reuse(app, &origin.authority, engine, head).await;
        let stored = Stored {
            objects: vec![StoredObject {
                key: plan.key,
                size: len,
                content_type: plan.declared,
                sha256: hasher.map(|h| hex::encode(h.finalize())),
            }],
            ..Stored::default()
        };
        return Ok((stored, rest > 0));
    }
    Err(failed(Body::Read)(Reject::Backend {
        status: None,
        message: format!("{}: no usable connection", what()),
    }))
}

/// Moves `rest` body bytes to the engine, each hashed on the way: a peek at
/// what is queued (up to a window), hashed, then exactly those bytes spliced.
#[allow(clippy::too_many_arguments)]
async fn hash_and_splice(
    app: &App,
    client: &TcpStream,
    engine: &mut TcpStream,
    hasher: &mut Sha256,
    already: u64,
    rest: u64,
    started: Instant,
    what: &(dyn Fn() -> String + Sync),
) -> Result<(), Failed> {
    let pace = app.settings.pace;
    let mut lowat = Lowat::new(client, app.settings.splice_window);
    let mut read = already;
    let end = already + rest;
    while read < end {
        let left = end - read;
        let n = peek::peek(&mut lowat, left, left, pace, read, started, |b, _| {
            hasher.update(b);
            Ok(Some(b.len() as u64))
        })
        .await
        .map_err(failed(Body::Partial))?;
        splice_rest(app, client, engine, read, n, started, what, true).await?;
        read += n;
    }
    Ok(())
}

/// Writes `a` then `b`, in one writev(2) when the socket takes both.
async fn write_both(s: &mut TcpStream, a: &[u8], b: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < a.len() + b.len() {
        let n = if done < a.len() {
            s.write_vectored(&[IoSlice::new(&a[done..]), IoSlice::new(b)])
                .await?
        } else {
            s.write(&b[done - a.len()..]).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        done += n;
    }
    Ok(())
}

/// The engine request's head.
fn request_head(origin: &Origin, plan: &Plan) -> Vec<u8> {
    let mut length = [0u8; 20];
    let n = {
        let mut w = &mut length[..];
        let _ = write!(w, "{}", plan.len);
        20 - w.len()
    };
    let extra = match &plan.route.route.backend {
        Backend::Http { headers, .. } => &headers[..],
        _ => &[],
    };
    let headers = [
        ("content-type", plan.declared.as_bytes()),
        ("content-length", &length[..n]),
    ]
    .into_iter()
    .chain(extra.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
    origin.head("PUT", &plan.target, headers)
}

/// Splices `rest` body bytes from the client to the engine; `already` were
/// read before (the pace counts them). `queued`: the caller saw the bytes
/// queued (MSG_PEEK) and keeps the socket's low-water mark itself.
#[allow(clippy::too_many_arguments)]
pub(super) async fn splice_rest(
    app: &App,
    client: &TcpStream,
    engine: &mut TcpStream,
    already: u64,
    rest: u64,
    started: Instant,
    what: &(dyn Fn() -> String + Sync),
    queued: bool,
) -> Result<(), Failed> {
    let pace = app.settings.pace;
    let pipe = app
        .pipes
        .get()
        .map_err(|e| Reject::Storage(format!("pipe: {e}")))
        .map_err(failed(Body::Partial))?;
    let ends = Ends {
        window: app.settings.splice_window,
        read_idle: pace.idle,
        write_idle: app.remotes.timeout,
        reader: "client",
        writer: "engine",
    };
    let progress = |n: u64| {
        pace.check(already + n, started.elapsed())
            .map_err(io::Error::other)
    };
    let moved = if queued {
        crate::zerocopy::splice_queued(client, &*engine, &pipe, rest, ends, progress).await
    } else {
        crate::zerocopy::splice_exact(client, &*engine, &pipe, rest, ends, progress).await
    };
    match moved {
        Ok(_) => {
            app.pipes.put(pipe);
            Ok(())
        }
        Err(SpliceError::Read(e)) => Err(failed(Body::Partial)(client_error(e))),
        Err(SpliceError::Write(e)) if e.kind() == io::ErrorKind::TimedOut => {
            Err(failed(Body::Partial)(Reject::BackendTimeout(format!(
                "{}: the engine read nothing for {:?}",
                what(),
                app.remotes.timeout
            ))))
        }
        Err(SpliceError::Write(e)) => {
            // The engine stopped reading: it may have answered (a 4xx/5xx of its own).
            let early =
                tokio::time::timeout(Duration::from_millis(200), upstream::read_answer(engine))
                    .await;
            Err(failed(Body::Partial)(match early {
                Ok(Ok(head)) => Reject::Backend {
                    status: Some(head.status),
                    message: format!(
                        "{}: engine answered {} before the body was complete: {}",
                        what(),
                        head.status,
                        snippet(&head)
                    ),
                },
                _ => Reject::Backend {
                    status: None,
                    message: format!("{}: {e}", what()),
                },
            }))
        }
    }
}

/// The start of an engine's answer body, for error messages.
pub(super) fn snippet(head: &Head) -> String {
    String::from_utf8_lossy(&head.buffered[..head.buffered.len().min(512)])
        .trim()
        .to_string()
}

pub(super) fn client_error(e: io::Error) -> Reject {
    if let Some(b) = e.get_ref().and_then(|i| i.downcast_ref::<BodyError>()) {
        return Reject::from(b.clone());
    }
    match e.kind() {
        io::ErrorKind::TimedOut => Reject::TooSlow { min_rate: 0 },
        _ => Reject::ClientAborted(e.to_string()),
    }
}

/// Longest answer body read just to keep the engine connection.
const DRAIN_MAX: u64 = 64 * 1024;

/// Pools the engine connection when its answer can be read to the end cheaply.
pub(super) async fn reuse(app: &App, authority: &str, mut engine: TcpStream, mut head: Head) {
    if !head.keep_alive {
        return;
    }
    let left = match head.framing {
        Framing::None => 0,
        Framing::Length(n) if n <= DRAIN_MAX => n.saturating_sub(head.buffered.len() as u64),
        _ => return,
    };
    if matches!(head.framing, Framing::Length(n) if (head.buffered.len() as u64) > n) {
        return; // bytes past the answer: not ours to interpret
    }
    if left > 0 {
        let drain = async {
            let mut got = 0u64;
            while got < left {
                head.buffered.clear();
                match (&mut engine)
                    .take(left - got)
                    .read_buf(&mut head.buffered)
                    .await
                {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => got += n as u64,
                }
            }
            true
        };
        if !matches!(
            tokio::time::timeout(app.remotes.timeout, drain).await,
            Ok(true)
        ) {
            return;
        }
    }
    app.raw.put(authority, engine);
}
