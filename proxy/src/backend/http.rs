//! The HTTP backend: each accepted file becomes one request to a storage
//! engine, `PUT {url}/{key}` or a re-encoded multipart/form-data `POST`.
//!
//! ```text
//!   upload task --Bytes--> mpsc(PIPE_DEPTH) --> PipeBody --> hyper client --> engine
//!   end marker  -> body ends cleanly (chunked terminator / full length) -> engine answers
//!   no marker   -> PipeBody yields an error -> hyper aborts the request mid-body,
//!                  so the engine sees a truncated body and stores nothing
//!   spool       -> memory up to `memory`, then a temp file up to `disk`,
//!                  sent with Content-Length once the part is complete
//! ```
//! Connections to an engine are pooled and kept alive by hyper-util's client,
//! over TLS for https engines (`tls`: one client per TLS setting).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Incoming;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use sha2::{Digest, Sha256};
use sluice_policy::{HttpMode, config::Spool};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::fs::{PIPE_DEPTH, TempGuard};
use super::{Undo, Written};
use crate::error::Reject;

pub type OutBody = UnsyncBoxBody<Bytes, io::Error>;
pub use super::tls::Client;

/// Characters escaped in a key's path segments (RFC 3986 pchar, minus what needs escaping).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'|');

pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    push_encoded_key(&mut out, key);
    out
}

/// Appends `key` percent-encoded segment by segment (its slashes kept).
pub fn push_encoded_key(out: &mut String, key: &str) {
    for (i, s) in key.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.extend(utf8_percent_encode(s, SEGMENT));
    }
}

pub fn empty_body() -> OutBody {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

pub fn full_body(b: impl Into<Bytes>) -> OutBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

/// A request body fed through the pipe. It ends cleanly only at the end
/// marker (an empty chunk); a sender dropped without one is an abort.
pub struct PipeBody {
    rx: mpsc::Receiver<Bytes>,
    len: Option<u64>,
    done: bool,
}

impl Body for PipeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(b)) if b.is_empty() => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(None) => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "upload aborted by the proxy",
            )))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        self.len.map(SizeHint::with_exact).unwrap_or_default()
    }
}

/// Sends a request and waits for the engine's answer: 2xx is Ok, anything else a `Reject`.
pub async fn exchange(
    client: &Client,
    req: Request<OutBody>,
    timeout: Duration,
) -> Result<Response<Incoming>, Reject> {
    let what = format!("{} {}", req.method(), redact(req.uri()));
    match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => Err(Reject::BackendTimeout(what)),
        Ok(Err(e)) => Err(Reject::Backend {
            status: None,
            message: format!("{what}: {}", super::tls::explain(&e)),
        }),
        Ok(Ok(resp)) => Ok(resp),
    }
}

/// Turns a non-2xx answer into a `Reject` naming the engine's status and the start of its body.
pub async fn expect_success(
    resp: Response<Incoming>,
    what: &str,
) -> Result<Response<Incoming>, Reject> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut snippet = Vec::new();
    while snippet.len() < 512 {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    snippet.extend_from_slice(&d[..d.len().min(512 - snippet.len())]);
                }
            }
            _ => break,
        }
    }
    Err(Reject::Backend {
        status: Some(status),
        message: format!(
            "{what}: engine answered {status}: {}",
            String::from_utf8_lossy(&snippet).trim()
        ),
    })
}

/// Did the engine store the object? 2xx; and for multipart upload servers also
/// 303 See Other, their browser-style "stored, now look here" answer.
async fn stored(resp: Response<Incoming>, what: &str, mode: HttpMode) -> Result<(), Reject> {
    if mode == HttpMode::Multipart && resp.status() == http::StatusCode::SEE_OTHER {
        return Ok(());
    }
    expect_success(resp, what).await.map(|_| ())
}

fn redact(uri: &http::Uri) -> String {
    // Presigned URLs carry signatures in the query: keep them out of logs and replies.
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().map(|a| a.as_str()).unwrap_or(""),
        uri.path()
    )
}

pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Where and how one object goes to the engine.
pub struct Target<'a> {
    pub url: &'a str,
    pub mode: HttpMode,
    pub field_name: &'a str,
    pub headers: &'a [(String, String)],
    pub spool: Option<Spool>,
    pub spool_dir: &'a Path,
    pub timeout: Duration,
}

enum Sending {
    /// Streaming: chunks go straight to the engine.
    Pipe {
        tx: mpsc::Sender<Bytes>,
        response: JoinHandle<Result<(), Reject>>,
        suffix: Bytes,
        /// Set once the whole body is queued: from then on the engine has
        /// `timeout` to answer.
        body_done: watch::Sender<bool>,
    },
    /// Buffering until the part is complete.
    Spool(Box<Spooler>, Box<Request<()>>, Bytes, Bytes),
}

pub struct HttpPart {
    sending: Option<Sending>,
    mode: HttpMode,
    client: Client,
    timeout: Duration,
    hasher: Option<Sha256>,
    size: u64,
    /// Content-Length of the object when the client gave one.
    known_len: Option<u64>,
    undo: Option<Undo>,
}

impl HttpPart {
    pub fn create(
        client: &Client,
        t: &Target<'_>,
        key: &str,
        content_type: &str,
        known_len: Option<u64>,
        checksum: bool,
    ) -> Result<Self, Reject> {
        let (method, uri, prefix, suffix, undo) = match t.mode {
            HttpMode::Put => {
                let uri = format!("{}/{}", t.url, encode_key(key));
                let undo = Undo::HttpDelete {
                    client: client.clone(),
                    uri: uri.clone(),
                    headers: t.headers.to_vec(),
                };
                (Method::PUT, uri, Bytes::new(), Bytes::new(), Some(undo))
            }
            HttpMode::Multipart => {
                // The engine files it by name under `url`: there is no directory to send.
                if key.contains('/') {
                    return Err(Reject::InvalidKey(format!(
                        "{key:?}: a multipart backend stores files flat; post to the route's prefix itself"
                    )));
                }
                let name = key;
                let uri = t.url.to_string();
                let boundary = format!("sluice-{}", uuid::Uuid::new_v4().simple());
                let prefix = format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\nContent-Type: {content_type}\r\n\r\n",
                    t.field_name,
                    name.replace(['"', '\r', '\n'], "_"),
                );
                let suffix = format!("\r\n--{boundary}--\r\n");
                (
                    Method::POST,
                    uri,
                    Bytes::from(prefix),
                    Bytes::from(suffix),
                    // A multipart engine has no standard delete: nothing to undo with.
                    None,
                )
            }
        };
        let mut req = Request::builder().method(method).uri(uri.as_str());
        for (k, v) in t.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req = match t.mode {
            HttpMode::Put => req.header("content-type", content_type),
            HttpMode::Multipart => {
                let b = std::str::from_utf8(
                    &prefix[2..prefix.iter().position(|c| *c == b'\r').unwrap_or(2)],
                )
                .unwrap_or("")
                .to_string();
                req.header("content-type", format!("multipart/form-data; boundary={b}"))
            }
        };
        let req = req
            .body(())
            .map_err(|e| Reject::Storage(format!("building the request to {}: {e}", t.url)))?;

        let sending = match t.spool {
            Some(s) => Sending::Spool(
                Box::new(Spooler::new(s, t.spool_dir)),
                Box::new(req),
                prefix,
                suffix,
            ),
            None => {
                let (tx, rx) = mpsc::channel(PIPE_DEPTH);
                let len = known_len.map(|n| n + prefix.len() as u64 + suffix.len() as u64);
                let (parts, ()) = req.into_parts();
                let mut req = Request::from_parts(
                    parts,
                    PipeBody {
                        rx,
                        len,
                        done: false,
                    }
                    .boxed_unsync(),
                );
                if let Some(n) = len {
                    req.headers_mut()
                        .insert("content-length", HeaderValue::from(n));
                }
                if !prefix.is_empty() && tx.try_send(prefix).is_err() {
                    return Err(Reject::Storage("pipe refused the first chunk".into()));
                }
                let client2 = client.clone();
                let timeout = t.timeout;
                let mode = t.mode;
                let (body_done, mut done_rx) = watch::channel(false);
                let response = tokio::spawn(async move {
                    let what = format!("{} {}", req.method(), redact(req.uri()));
                    // The body streams for as long as the client sends it (its
                    // own idle and rate limits apply there; `write` times the
                    // engine's reading): `timeout` starts when it is all sent.
                    let answer = async {
                        client2.request(req).await.map_err(|e| Reject::Backend {
                            status: None,
                            message: format!("{what}: {}", super::tls::explain(&e)),
                        })
                    };
                    let expired = async {
                        let _ = done_rx.wait_for(|d| *d).await;
                        tokio::time::sleep(timeout).await;
                    };
                    let resp = tokio::select! {
                        r = answer => r?,
                        () = expired => return Err(Reject::BackendTimeout(what)),
                    };
                    stored(resp, &what, mode).await
                });
                Sending::Pipe {
                    tx,
                    response,
                    suffix,
                    body_done,
                }
            }
        };
        Ok(Self {
            sending: Some(sending),
            mode: t.mode,
            client: client.clone(),
            timeout: t.timeout,
            hasher: checksum.then(Sha256::new),
            size: 0,
            known_len,
            undo,
        })
    }

    pub async fn write(&mut self, chunk: Bytes) -> Result<(), Reject> {
        if chunk.is_empty() {
            return Ok(());
        }
        if let Some(h) = self.hasher.as_mut() {
            h.update(&chunk);
        }
        self.size += chunk.len() as u64;
        match self.sending.as_mut() {
            Some(Sending::Pipe { tx, .. }) => {
                match tokio::time::timeout(self.timeout, tx.send(chunk)).await {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(_)) => {}
                    Err(_) => {
                        return Err(Reject::BackendTimeout(format!(
                            "the engine read nothing for {:?}",
                            self.timeout
                        )));
                    }
                }
                // The request ended early: the engine answered or the connection broke.
                Err(self.fail().await)
            }
            Some(Sending::Spool(s, ..)) => s.push(chunk).await,
            None => Err(Reject::Storage("part already finished".into())),
        }
    }

    async fn fail(&mut self) -> Reject {
        match self.sending.take() {
            Some(Sending::Pipe { response, .. }) => match response.await {
                Ok(Err(r)) => r,
                Ok(Ok(())) => Reject::Backend {
                    status: None,
                    message: "engine answered before the body was complete".into(),
                },
                Err(e) => Reject::Storage(format!("backend task: {e}")),
            },
            _ => Reject::Storage("backend request already gone".into()),
        }
    }

    pub async fn finish(mut self) -> Result<(Written, Option<Undo>), Reject> {
        match self.sending.take() {
            Some(Sending::Pipe {
                tx,
                response,
                suffix,
                body_done,
            }) => {
                let sent = (suffix.is_empty() || tx.send(suffix).await.is_ok())
                    && tx.send(Bytes::new()).await.is_ok();
                drop(tx);
                body_done.send_replace(true);
                match response.await {
                    Ok(Ok(())) => {}
                    Ok(Err(r)) => return Err(r),
                    Err(e) => return Err(Reject::Storage(format!("backend task: {e}"))),
                }
                // With a Content-Length, hyper drops the body as soon as that many
                // bytes are written, without waiting for the end marker: a closed
                // pipe then means complete, not aborted.
                if !sent && self.known_len != Some(self.size) {
                    return Err(Reject::Storage("pipe closed before the end".into()));
                }
            }
            Some(Sending::Spool(spool, req, prefix, suffix)) => {
                let (parts, ()) = req.into_parts();
                let total = prefix.len() as u64 + spool.len() + suffix.len() as u64;
                let body = spool.into_body(prefix, suffix).await?;
                let mut req = Request::from_parts(parts, body);
                req.headers_mut()
                    .insert("content-length", HeaderValue::from(total));
                let what = format!("{} {}", req.method(), redact(req.uri()));
                let resp = exchange(&self.client, req, self.timeout).await?;
                stored(resp, &what, self.mode).await?;
            }
            None => return Err(Reject::Storage("part already finished".into())),
        }
        Ok((
            Written {
                size: self.size,
                sha256: self.hasher.take().map(|h| hex::encode(h.finalize())),
            },
            self.undo.take(),
        ))
    }
}

/// Buffers a part: memory first, then a temp file, each up to its limit.
struct Spooler {
    limits: Spool,
    dir: PathBuf,
    mem: Vec<Bytes>,
    mem_len: u64,
    file: Option<(tokio::fs::File, TempGuard)>,
    file_len: u64,
}

impl Spooler {
    fn new(limits: Spool, dir: &Path) -> Self {
        Self {
            limits,
            dir: dir.to_path_buf(),
            mem: Vec::new(),
            mem_len: 0,
            file: None,
            file_len: 0,
        }
    }

    fn len(&self) -> u64 {
        self.mem_len + self.file_len
    }

    async fn push(&mut self, chunk: Bytes) -> Result<(), Reject> {
        let n = chunk.len() as u64;
        if self.file.is_none() && self.mem_len + n <= self.limits.memory {
            self.mem_len += n;
            self.mem.push(chunk);
            return Ok(());
        }
        if self.file_len + n > self.limits.disk {
            return Err(Reject::SpoolFull {
                limit: self.limits.memory + self.limits.disk,
            });
        }
        if self.file.is_none() {
            std::fs::create_dir_all(&self.dir)
                .map_err(|e| Reject::Storage(format!("spool dir: {e}")))?;
            let path = self.dir.join(format!(
                "{}spool-{}",
                super::fs::TEMP_PREFIX,
                uuid::Uuid::new_v4().simple()
            ));
            // Read back when sending: open for both.
            let f = tokio::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .await
                .map_err(|e| Reject::Storage(format!("spool file {}: {e}", path.display())))?;
            self.file = Some((f, TempGuard::new(path)));
        }
        if let Some((f, _)) = self.file.as_mut() {
            f.write_all(&chunk)
                .await
                .map_err(|e| Reject::Storage(format!("spool write: {e}")))?;
        }
        self.file_len += n;
        Ok(())
    }

    async fn into_body(self, prefix: Bytes, suffix: Bytes) -> Result<OutBody, Reject> {
        let head = futures_util::stream::iter(
            std::iter::once(prefix)
                .chain(self.mem)
                .filter(|b| !b.is_empty())
                .map(Ok::<_, io::Error>),
        );
        let tail = futures_util::stream::iter(
            [Ok::<_, io::Error>(suffix)]
                .into_iter()
                .filter(|r| r.as_ref().is_ok_and(|b| !b.is_empty())),
        );
        let file_part = match self.file {
            None => futures_util::stream::empty().boxed(),
            Some((mut f, guard)) => {
                f.flush()
                    .await
                    .map_err(|e| Reject::Storage(format!("spool flush: {e}")))?;
                let mut std = f.into_std().await;
                use std::io::Seek;
                std.seek(io::SeekFrom::Start(0))
                    .map_err(|e| Reject::Storage(format!("spool seek: {e}")))?;
                let reader = tokio_util::io::ReaderStream::with_capacity(
                    tokio::fs::File::from_std(std),
                    64 * 1024,
                );
                // The guard rides along with the stream: the file goes when the body does.
                reader
                    .map(move |r| {
                        let _keep = &guard;
                        r
                    })
                    .boxed()
            }
        };
        let stream = head
            .chain(file_part)
            .chain(tail)
            .map(|r| r.map(Frame::data));
        Ok(BodyExt::boxed_unsync(StreamBody::new(stream)))
    }
}
