//! Downloads from the fs backend: GET and HEAD with ranges and conditionals.
//!
//! ```text
//!   request -> answer(): open key, stat, semantics::plan -> Answer
//!   Answer -> fast path (HTTP/1.1 plaintext): head bytes + sendfile(2)
//!          -> hyper path (HTTP/2, HTTP/1.0, --no-sendfile): `FileChunks`,
//!             pread(2) into one reused buffer (its BytesMut is reclaimed once
//!             hyper has written the previous chunk), streamed as the body
//! ```
//! Both paths share `answer` and `headers`, so they cannot disagree on
//! status, headers or bytes.

pub mod remote;
pub mod semantics;

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;

use semantics::{FileMeta, Plan, RequestHeaders};

use crate::backend::fs::object_path;
use crate::error::Reject;
use crate::filters;
use crate::runtime::RouteRt;

use crate::zerocopy::COPY_CHUNK;

pub enum Answer {
    NotModified {
        meta: FileMeta,
        content_type: String,
    },
    Body {
        file: File,
        meta: FileMeta,
        content_type: String,
        partial: Option<(u64, u64)>,
    },
}

impl Answer {
    pub fn status(&self) -> u16 {
        match self {
            Answer::NotModified { .. } => 304,
            Answer::Body {
                partial: Some(_), ..
            } => 206,
            Answer::Body { .. } => 200,
        }
    }

    /// (offset, length) of the bytes to send.
    pub fn span(&self) -> (u64, u64) {
        match self {
            Answer::NotModified { .. } => (0, 0),
            Answer::Body {
                partial: Some((s, e)),
                ..
            } => (*s, e - s + 1),
            Answer::Body { meta, .. } => (0, meta.len),
        }
    }

    /// Response headers, without Date/Connection (each path adds its own).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let (meta, ct) = match self {
            Answer::NotModified { meta, content_type }
            | Answer::Body {
                meta, content_type, ..
            } => (meta, content_type),
        };
        let mut h = vec![
            ("etag", meta.etag()),
            ("last-modified", meta.last_modified()),
            ("accept-ranges", "bytes".to_string()),
            // Stored files are user content: never let a browser guess a riskier type.
            ("x-content-type-options", "nosniff".to_string()),
        ];
        if let Answer::Body { partial, .. } = self {
            h.push(("content-type", ct.clone()));
            h.push(("content-length", self.span().1.to_string()));
            if let Some((s, e)) = partial {
                h.push(("content-range", format!("bytes {s}-{e}/{}", meta.len)));
            }
        }
        h
    }
}

/// `len` bytes of a file from `start`, as body chunks of up to COPY_CHUNK.
///
/// Reads are positional and happen on the runtime thread, as sendfile's do on
/// the fast path: a page-cache miss stalls that thread for one read. tokio's
/// `File` would send every read to the blocking pool, which costs a task
/// allocation per chunk. Each chunk is split off one of a few BytesMut, and
/// once hyper has written and dropped that chunk, its buffer takes the same
/// memory back (`try_reclaim`), so a transfer allocates a few times, not per
/// chunk. A few, not one: while the client's socket drains slowly, hyper may
/// still hold the last chunk (or two) when it asks for the next.
pub struct FileChunks {
    file: File,
    pos: u64,
    end: u64,
    bufs: Vec<BytesMut>,
}

/// Chunk buffers one transfer keeps: hyper's write buffer (capped at 64 KiB
/// by `server`) holds at most two chunks when it asks for the next.
const CHUNK_BUFFERS: usize = 3;

impl FileChunks {
    pub fn new(file: File, start: u64, len: u64) -> Self {
        Self {
            file,
            pos: start,
            end: start.saturating_add(len),
            bufs: Vec::with_capacity(CHUNK_BUFFERS),
        }
    }
}

impl Stream for FileChunks {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.pos >= this.end {
            return Poll::Ready(None);
        }
        let want = usize::try_from(this.end - this.pos)
            .unwrap_or(COPY_CHUNK)
            .min(COPY_CHUNK);
        // A buffer whose chunks hyper has dropped takes its memory back; if
        // every buffer still has one in flight, a new one (up to CHUNK_BUFFERS),
        // else the first allocates afresh.
        let free = this.bufs.iter_mut().position(|b| {
            b.clear();
            b.try_reclaim(want)
        });
        let i = match free {
            Some(i) => i,
            None if this.bufs.len() < CHUNK_BUFFERS => {
                this.bufs.push(BytesMut::with_capacity(COPY_CHUNK));
                this.bufs.len() - 1
            }
            None => 0,
        };
        let buf = &mut this.bufs[i];
        buf.resize(want, 0);
        let mut read = this.file.read_at(buf, this.pos);
        // EINTR: try again, a few times at most.
        for _ in 0..8 {
            match &read {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    read = this.file.read_at(buf, this.pos);
                }
                _ => break,
            }
        }
        match read {
            Ok(0) => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file ended before its advertised length",
            )))),
            Ok(n) => {
                this.pos += n as u64;
                Poll::Ready(Some(Ok(buf.split_to(n).freeze())))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Poll::Ready(Some(Ok(Bytes::new()))),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }
}

/// Decides the response to a GET/HEAD of `rel` (the path after the route prefix).
pub fn answer(
    route: &RouteRt,
    rel: &str,
    req: &RequestHeaders<'_>,
    head: bool,
) -> Result<Answer, Reject> {
    if !route.route.download_enabled {
        return Err(Reject::DownloadDisabled(route.route.policy.clone()));
    }
    let key = filters::parse_key(rel).map_err(|_| Reject::NotFound)?;
    let root = route
        .fs_root
        .as_deref()
        .ok_or_else(|| Reject::Storage("route has no fs backend".into()))?;
    let path = object_path(root, &key);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Err(Reject::NotFound);
        }
        Err(e) => return Err(Reject::Storage(format!("open {}: {e}", path.display()))),
    };
    let md = file
        .metadata()
        .map_err(|e| Reject::Storage(format!("stat {}: {e}", path.display())))?;
    if !md.is_file() {
        return Err(Reject::NotFound);
    }
    let meta = FileMeta {
        len: md.len(),
        mtime: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        inode: md.ino(),
    };
    let content_type = mime_guess::from_path(&key)
        .first_raw()
        .unwrap_or("application/octet-stream")
        .to_string();
    match semantics::plan(&meta, req, head) {
        Plan::Full => Ok(Answer::Body {
            file,
            meta,
            content_type,
            partial: None,
        }),
        Plan::Partial { start, end } => Ok(Answer::Body {
            file,
            meta,
            content_type,
            partial: Some((start, end)),
        }),
        Plan::NotModified => Ok(Answer::NotModified { meta, content_type }),
        Plan::PreconditionFailed => Err(Reject::PreconditionFailed),
        Plan::RangeNotSatisfiable => Err(Reject::RangeNotSatisfiable { len: meta.len }),
    }
}
