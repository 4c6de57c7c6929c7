//! Uploads: multipart/form-data POST and raw PUT, filtered as they stream.
//!
//! ```text
//!   body -> Paced (idle, min rate) -> Metered (framing budget) -> multer
//!        -> per file part: name/extension/declared type checks
//!           -> first SNIFF_LEN bytes held, sniffed, checked (verify_content)
//!           -> size counted mid-stream -> backend Part (pipe -> fs | http | s3)
//!   every part done and every rule passed -> commit all -> 201
//!   any failure -> nothing of the request stays (see backend: temp files
//!   unlinked, engine requests aborted mid-body, S3 uploads aborted)
//! ```
//! A request stores all of its files or none: a 4xx never leaves some of
//! them behind. multer buffers part headers and any preamble until it finds
//! their end, without a limit of its own; `Metered` bounds that buffer by
//! refusing to feed multer more than FRAMING_BUDGET bytes ahead of what it
//! has handed back as field data.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::HeaderMap;
use serde::Serialize;
use sluice_policy::{Checksum, Naming, UploadRules};

use crate::backend::{NewObject, Part, Remotes, Staged};
use crate::error::Reject;
use crate::filters::{self, SNIFF_LEN};
use crate::limits::BodyError;
use crate::runtime::RouteRt;

pub mod splice;

/// multer may hold this much framing (part headers, boundaries, preamble) beyond what it returned as data.
pub const FRAMING_BUDGET: u64 = 64 * 1024;
/// Extra framing allowance per part seen: headers of a well-formed part are a few hundred bytes.
pub const FRAMING_PER_PART: u64 = 8 * 1024;
/// Non-file form fields: how many, and how big each.
pub const MAX_FIELDS: u32 = 64;
pub const MAX_FIELD_BYTES: u64 = 64 * 1024;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredObject {
    pub key: String,
    pub size: u64,
    pub content_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Stored {
    pub objects: Vec<StoredObject>,
}

impl Stored {
    pub fn bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.size).sum()
    }
}

pub struct Ctx<'a> {
    pub route: Arc<RouteRt>,
    pub remotes: &'a Remotes,
    pub fsync: bool,
}

/// Upper bound of a multipart body this route can accept, for the early 413.
pub fn multipart_limit(rules: &UploadRules) -> u64 {
    let per_file = rules.max_file_size.saturating_add(FRAMING_PER_PART);
    u64::from(rules.max_files)
        .saturating_mul(per_file)
        .saturating_add(u64::from(MAX_FIELDS) * (MAX_FIELD_BYTES + FRAMING_PER_PART))
        .saturating_add(FRAMING_BUDGET)
}

pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Reject> {
    match headers.get(http::header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| Reject::BadRequest("Content-Length is not a number".into())),
    }
}

/// `dir` is the request path after the route prefix ("" or "sub/dir/").
pub async fn multipart<S>(
    ctx: &Ctx<'_>,
    dir: &str,
    content_type: &str,
    body: S,
) -> Result<Stored, Reject>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Send + Unpin + 'static,
{
    let rules = &ctx.route.route.upload;
    let boundary = multer::parse_boundary(content_type)
        .map_err(|_| Reject::UnsupportedMediaType(content_type.to_string()))?;
    let dir = match dir.trim_end_matches('/') {
        "" => String::new(),
        d => format!(
            "{}/",
            filters::parse_key(d).map_err(|e| Reject::InvalidKey(format!("{e:?}")))?
        ),
    };

    let meter = Arc::new(Meter::default());
    let metered = Metered {
        inner: body,
        meter: meter.clone(),
        stalled_at: None,
    };
    let limit = multipart_limit(rules);
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(limit)
            // Backstop only: file parts are counted below with the rule's own error.
            .per_field(rules.max_file_size.max(MAX_FIELD_BYTES).saturating_add(1)),
    );
    let mut mp = multer::Multipart::with_constraints(metered, boundary, constraints);

    let mut staged: Vec<(Staged, StoredObject)> = Vec::new();
    let mut fields = 0u32;
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(from_multer(e, rules, limit)),
        };
        meter.credit.fetch_add(FRAMING_PER_PART, Ordering::Relaxed);
        let mut field = field;
        let Some(raw_name) = field.file_name().map(str::to_string) else {
            fields += 1;
            if fields > MAX_FIELDS {
                return Err(Reject::TooManyFields { limit: MAX_FIELDS });
            }
            let mut n = 0u64;
            while let Some(chunk) = field
                .chunk()
                .await
                .map_err(|e| from_multer(e, rules, limit))?
            {
                meter
                    .credit
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                n += chunk.len() as u64;
                if n > MAX_FIELD_BYTES {
                    return Err(Reject::FieldTooLarge {
                        limit: MAX_FIELD_BYTES,
                    });
                }
            }
            continue;
        };
        if staged.len() as u32 >= rules.max_files {
            return Err(Reject::TooManyFiles {
                limit: rules.max_files,
            });
        }
        let name = filters::sanitize_filename(&raw_name)
            .ok_or_else(|| Reject::InvalidFilename(raw_name.clone()))?;
        // RFC 7578: a part without Content-Type is text/plain.
        let declared = field
            .content_type()
            .map(|m| m.essence_str().to_ascii_lowercase())
            .unwrap_or_else(|| "text/plain".into());
        let key = match rules.naming {
            Naming::Original => format!("{dir}{name}"),
            Naming::Uuid => match filters::extension(&name) {
                Some(ext) => format!("{dir}{}.{ext}", uuid::Uuid::new_v4()),
                None => format!("{dir}{}", uuid::Uuid::new_v4()),
            },
        };
        check_declared(rules, &name, &declared)?;
        let mut part = open(ctx, &key, &declared, None)?;
        let mut chunks = (&mut field).map(|r| {
            r.inspect(|c| {
                meter.credit.fetch_add(c.len() as u64, Ordering::Relaxed);
            })
            .map_err(|e| from_multer(e, rules, limit))
        });
        pump(&mut chunks, rules, &declared, &mut part).await?;
        staged.push(finish(part, key, declared).await?);
    }
    if staged.is_empty() {
        return Err(Reject::NoFiles);
    }
    commit(staged)
}

/// Raw `PUT {prefix}{key}`: one object, the request body is the file.
pub async fn put<S>(
    ctx: &Ctx<'_>,
    key: &str,
    content_type: Option<&str>,
    known_len: Option<u64>,
    body: S,
) -> Result<Stored, Reject>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
{
    let rules = &ctx.route.route.upload;
    let key = filters::parse_key(key).map_err(|e| Reject::InvalidKey(format!("{e:?}")))?;
    let name = key.rsplit('/').next().unwrap_or(&key).to_string();
    let declared = declared_put_type(content_type);
    check_declared(rules, &name, &declared)?;
    let mut part = open(ctx, &key, &declared, known_len)?;
    let mut chunks = body.map(|r| r.map_err(Reject::from));
    pump(&mut chunks, rules, &declared, &mut part).await?;
    commit(vec![finish(part, key, declared).await?])
}

/// A PUT's declared type: its Content-Type's essence, lower-cased; octet-stream when absent.
fn declared_put_type(content_type: Option<&str>) -> String {
    content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "application/octet-stream".into())
}

fn open(
    ctx: &Ctx<'_>,
    key: &str,
    content_type: &str,
    known_len: Option<u64>,
) -> Result<Part, Reject> {
    Part::open(
        &ctx.route,
        ctx.remotes,
        &NewObject {
            key,
            content_type,
            known_len,
            checksum: ctx.route.route.upload.checksum == Checksum::Sha256,
            fsync: ctx.fsync,
        },
    )
}

fn check_declared(rules: &UploadRules, name: &str, declared: &str) -> Result<(), Reject> {
    if !filters::extension_allowed(&rules.allowed_extensions, name) {
        return Err(Reject::ExtensionNotAllowed(name.to_string()));
    }
    if !filters::type_allowed(&rules.allowed_types, declared) {
        return Err(Reject::TypeNotAllowed(declared.to_string()));
    }
    Ok(())
}

fn verify_head(rules: &UploadRules, declared: &str, head: &[u8]) -> Result<(), Reject> {
    let s = filters::sniff(head);
    let sniffed = filters::sniffed_mime(&s);
    if !filters::type_allowed(&rules.allowed_types, sniffed) {
        return Err(Reject::TypeNotAllowed(sniffed.to_string()));
    }
    if !filters::declared_agrees(declared, &s) {
        return Err(Reject::ContentMismatch {
            declared: declared.to_string(),
            sniffed,
        });
    }
    Ok(())
}

/// Moves one part's bytes into the backend, enforcing size and content rules mid-stream.
async fn pump<S>(
    chunks: &mut S,
    rules: &UploadRules,
    declared: &str,
    part: &mut Part,
) -> Result<(), Reject>
where
    S: Stream<Item = Result<Bytes, Reject>> + Unpin,
{
    let mut size = 0u64;
    let mut head = rules
        .verify_content
        .then(|| BytesMut::with_capacity(SNIFF_LEN));
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        if size > rules.max_file_size {
            return Err(Reject::FileTooLarge {
                limit: rules.max_file_size,
            });
        }
        let Some(buf) = head.as_mut() else {
            part.write(chunk).await?;
            continue;
        };
        let need = SNIFF_LEN - buf.len();
        if chunk.len() < need {
            buf.extend_from_slice(&chunk);
            continue;
        }
        buf.extend_from_slice(&chunk[..need]);
        verify_head(rules, declared, buf)?;
        part.write(buf.split().freeze()).await?;
        head = None;
        if chunk.len() > need {
            part.write(chunk.slice(need..)).await?;
        }
    }
    if let Some(buf) = head {
        // The whole part was shorter than the sniff window.
        verify_head(rules, declared, &buf)?;
        part.write(buf.freeze()).await?;
    }
    Ok(())
}

/// Completes a part's backend object (not yet visible) and describes it for the answer.
async fn finish(
    part: Part,
    key: String,
    declared: String,
) -> Result<(Staged, StoredObject), Reject> {
    let s = part.finish().await?;
    let obj = StoredObject {
        key,
        size: s.written().size,
        content_type: declared,
        sha256: s.written().sha256.clone(),
    };
    Ok((s, obj))
}

fn commit(staged: Vec<(Staged, StoredObject)>) -> Result<Stored, Reject> {
    let mut objects = Vec::with_capacity(staged.len());
    for (s, obj) in staged {
        s.commit()?;
        objects.push(obj);
    }
    Ok(Stored { objects })
}

fn from_multer(e: multer::Error, rules: &UploadRules, limit: u64) -> Reject {
    match e {
        multer::Error::FieldSizeExceeded { .. } => Reject::FileTooLarge {
            limit: rules.max_file_size,
        },
        multer::Error::StreamSizeExceeded { .. } => Reject::RequestTooLarge { limit },
        multer::Error::StreamReadFailed(inner) => match inner.downcast::<MeterError>() {
            Ok(m) => match *m {
                MeterError::Framing => Reject::PartHeadersTooLarge {
                    limit: FRAMING_BUDGET,
                },
                MeterError::Body(b) => Reject::from(b),
            },
            Err(other) => Reject::ClientAborted(other.to_string()),
        },
        other => Reject::MalformedMultipart(other.to_string()),
    }
}

#[derive(Default)]
struct Meter {
    fed: AtomicU64,
    /// Bytes multer has handed back as field data, plus per-part framing allowances.
    credit: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
enum MeterError {
    #[error("multipart framing exceeds the budget")]
    Framing,
    #[error(transparent)]
    Body(BodyError),
}

/// Counts what goes into multer and bounds what it holds.
///
/// multer's `poll_stream` drains every ready chunk into its buffer before
/// parsing. Past the budget we answer Pending (waking ourselves at once), which
/// makes multer parse what it has: field data then flows out and earns credit.
/// If multer is still over budget with no new credit, it is stuck on framing
/// (a huge part header or preamble): that is an error, not more buffering.
struct Metered<S> {
    inner: S,
    meter: Arc<Meter>,
    stalled_at: Option<u64>,
}

impl<S> Stream for Metered<S>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
{
    type Item = Result<Bytes, MeterError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let fed = self.meter.fed.load(Ordering::Relaxed);
        let credit = self.meter.credit.load(Ordering::Relaxed);
        if fed.saturating_sub(credit) > FRAMING_BUDGET {
            if self.stalled_at == Some(credit) {
                return Poll::Ready(Some(Err(MeterError::Framing)));
            }
            self.stalled_at = Some(credit);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => {
                self.meter.fed.fetch_add(b.len() as u64, Ordering::Relaxed);
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(MeterError::Body(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
