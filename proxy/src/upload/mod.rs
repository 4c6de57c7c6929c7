//! Uploads: multipart/form-data POST and raw PUT, filtered as they stream.
//!
//! ```text
//!   body -> Paced (idle, min rate) -> multipart::Multipart (zero-copy parts,
//!           framing bounded) or the raw PUT body
//!        -> per file part: name/extension/declared type checks
//!           -> first SNIFF_LEN bytes held, sniffed, checked (verify_content)
//!           -> size counted mid-stream -> backend Part (pipe -> fs | http | s3)
//!   every part done and every rule passed -> commit all -> 201
//!   any failure -> nothing of the request stays (see backend: temp files
//!   unlinked, engine requests aborted mid-body, S3 uploads aborted)
//! ```
//! A request stores all of its files or none: a 4xx never leaves some of
//! them behind. Uploads to an http engine skip hyper and move file data with
//! splice(2): raw PUTs past the sniff window (`splice`), multipart POSTs once
//! peeked at for the next boundary (`form`).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::HeaderMap;
use serde::Serialize;
use sluice_policy::{Checksum, Naming, UploadRules};

use crate::backend::{NewObject, Part, Remotes, Staged};
use crate::error::Reject;
use crate::filters::{self, Allowlists, SNIFF_LEN};
use crate::gate::{self, FormCheck};
use crate::limits::BodyError;
use crate::metrics::Metrics;
use crate::runtime::RouteRt;
use crate::signed::{self, FormPolicy};
use multipart::{Multipart, MultipartError};

pub mod form;
pub mod multipart;
mod peek;
pub mod splice;

/// Largest part header block, and largest preamble.
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

#[derive(Debug, Default, Serialize)]
pub struct Stored {
    pub objects: Vec<StoredObject>,
    /// A signed form's `success_action_redirect`: answer 303 to it.
    #[serde(skip)]
    pub redirect: Option<String>,
    /// A signed form's `success_action_status` (200, 201 or 204).
    #[serde(skip)]
    pub status: Option<u16>,
}

impl Stored {
    pub fn bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.size).sum()
    }

    /// Counts the stored upload (`path`: splice or copy) and gives its 201 body.
    pub fn counted(&self, metrics: &Metrics, path: &'static str) -> Vec<u8> {
        metrics.upload_bytes.inc_by(self.bytes());
        metrics.objects_stored.inc_by(self.objects.len() as u64);
        metrics.uploads.inc(path);
        serde_json::to_vec(self).unwrap_or_default()
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

/// A signed form's fields, as they arrive before its first file part.
#[derive(Default)]
struct FormFields {
    policy: Option<String>,
    signature: Option<String>,
    algorithm: Option<String>,
    redirect: Option<String>,
    status: Option<String>,
}

impl FormFields {
    /// Where a field of this name goes; None: a field sluice does not read.
    fn slot(&mut self, name: Option<&str>) -> Option<&mut Option<String>> {
        let name = name?.to_ascii_lowercase();
        match name.as_str() {
            signed::F_POLICY => Some(&mut self.policy),
            signed::F_SIGNATURE => Some(&mut self.signature),
            signed::F_ALGORITHM => Some(&mut self.algorithm),
            signed::F_REDIRECT => Some(&mut self.redirect),
            signed::F_STATUS => Some(&mut self.status),
            _ => None,
        }
    }

    /// The policy, checked (signature, expiry, host, path, the redirect and
    /// status fields it covers), before the first file part is accepted.
    fn check(&self, route: &RouteRt, at: &FormCheck) -> Result<FormPolicy, Reject> {
        let (Some(policy), Some(sig)) = (&self.policy, &self.signature) else {
            return Err(if self.policy.is_none() {
                Reject::FormPolicyMissing
            } else {
                Reject::SignatureInvalid(format!("no {} field", signed::F_SIGNATURE))
            });
        };
        if let Some(a) = &self.algorithm
            && a.trim() != signed::ALGORITHM
        {
            return Err(Reject::SignatureInvalid(format!(
                "{} must be {}",
                signed::F_ALGORITHM,
                signed::ALGORITHM
            )));
        }
        let keys = route.auth.as_ref().map_or(&[][..], |a| a.signing_keys());
        let p = signed::verify_form(keys, policy, sig, gate::unix_now()).map_err(gate::refusal)?;
        let outside =
            |what: &str| Reject::SignatureInvalid(format!("{what} is not allowed by the policy"));
        if !p.host.as_ref().is_some_and(|m| m.allows(&at.host)) {
            return Err(outside("this host"));
        }
        if !p.path.as_ref().is_some_and(|m| m.allows(&at.path)) {
            return Err(outside("this path"));
        }
        // A field the page sends must be one the policy names, as S3 requires:
        // else anyone could send the signed form's visitors anywhere.
        for (value, cond, name) in [
            (&self.redirect, &p.redirect, signed::F_REDIRECT),
            (&self.status, &p.status, signed::F_STATUS),
        ] {
            if let Some(v) = value
                && !cond.as_ref().is_some_and(|m| m.allows(v))
            {
                return Err(outside(&format!("{name} {v:?}")));
            }
        }
        Ok(p)
    }
}

/// `dir` is the request path after the route prefix ("" or "sub/dir/").
/// `form`: the request came in on a signed form policy still to be read
/// (`gate::Pass::form`): its fields must come before the first file part.
pub async fn multipart<S>(
    ctx: &Ctx<'_>,
    dir: &str,
    content_type: &str,
    form: Option<&FormCheck>,
    body: S,
) -> Result<Stored, Reject>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Send + Unpin + 'static,
{
    let mut route = ctx.route.clone();
    let mut fields_seen = FormFields::default();
    let mut policy: Option<FormPolicy> = None;
    let rules = &ctx.route.route.upload;
    let boundary = multipart::boundary(content_type)
        .ok_or_else(|| Reject::UnsupportedMediaType(content_type.to_string()))?;
    let dir = upload_dir(dir)?;

    let limit = multipart_limit(rules);
    let mut mp = Multipart::new(body, &boundary, FRAMING_BUDGET as usize, limit);
    let fail = |e: MultipartError<BodyError>| match e {
        MultipartError::Malformed(m) => Reject::MalformedMultipart(m.to_string()),
        MultipartError::FramingTooLarge(_) => Reject::PartHeadersTooLarge {
            limit: FRAMING_BUDGET,
        },
        MultipartError::TooLarge(_) => Reject::RequestTooLarge { limit },
        MultipartError::Body(b) => Reject::from(b),
    };

    let mut staged: Vec<(Staged, StoredObject)> = Vec::new();
    let mut fields = 0u32;
    while let Some(head) = mp.next_part().await.map_err(fail)? {
        let Some(raw_name) = head.filename else {
            fields += 1;
            if fields > MAX_FIELDS {
                return Err(Reject::TooManyFields { limit: MAX_FIELDS });
            }
            let mut n = 0u64;
            let mut value = Vec::new();
            let keep = form.is_some() && policy.is_none();
            while let Some(chunk) = mp.chunk().await.map_err(fail)? {
                n += chunk.len() as u64;
                if n > MAX_FIELD_BYTES {
                    return Err(Reject::FieldTooLarge {
                        limit: MAX_FIELD_BYTES,
                    });
                }
                if keep {
                    value.extend_from_slice(&chunk);
                }
            }
            if keep && let Some(slot) = fields_seen.slot(head.name.as_deref()) {
                *slot = Some(String::from_utf8_lossy(&value).into_owned());
            }
            continue;
        };
        if let Some(at) = form
            && policy.is_none()
        {
            let p = fields_seen.check(&route, at)?;
            route = Arc::new(route.narrowed(p.max_size, &p.types));
            policy = Some(p);
        }
        if staged.len() as u32 >= rules.max_files {
            return Err(Reject::TooManyFiles {
                limit: rules.max_files,
            });
        }
        let (key, declared) = file_part(&route, &dir, &raw_name, head.content_type)?;
        if let Some(m) = policy.as_ref().and_then(|p| p.key.as_ref())
            && !m.allows(&key)
        {
            return Err(Reject::KeyNotAllowed(key));
        }
        let mut part = open(ctx, &key, &declared, None)?;
        let chunks = futures_util::stream::unfold(&mut mp, |mp| async {
            match mp.chunk().await {
                Ok(Some(b)) => Some((Ok(b), mp)),
                Ok(None) => None,
                Err(e) => Some((Err(fail(e)), mp)),
            }
        });
        let mut chunks = std::pin::pin!(chunks);
        pump(&mut chunks, &route, &declared, &mut part).await?;
        let done = finish(part, key, declared).await?;
        if let Some(p) = &policy
            && done.1.size < p.min_size
        {
            // Dropped uncommitted: nothing of it stays.
            return Err(Reject::FileTooSmall { min: p.min_size });
        }
        staged.push(done);
    }
    if staged.is_empty() {
        return Err(Reject::NoFiles);
    }
    let mut stored = commit(staged)?;
    stored.redirect = fields_seen.redirect.filter(|_| policy.is_some());
    stored.status = fields_seen
        .status
        .filter(|_| policy.is_some())
        .and_then(|s| s.trim().parse().ok())
        .filter(|s| matches!(s, 200 | 201 | 204));
    Ok(stored)
}

/// The directory a POST's files go to: the request path after the route
/// prefix ("" or "sub/dir/"), checked as a key.
fn upload_dir(rel: &str) -> Result<String, Reject> {
    Ok(match rel.trim_end_matches('/') {
        "" => String::new(),
        d => format!(
            "{}/",
            filters::parse_key(d).map_err(|e| Reject::InvalidKey(format!("{e:?}")))?
        ),
    })
}

/// A file part's key and declared type, once its name, extension and type pass.
fn file_part(
    route: &RouteRt,
    dir: &str,
    raw_name: &str,
    content_type: Option<String>,
) -> Result<(String, String), Reject> {
    let name = filters::sanitize_filename(raw_name)
        .ok_or_else(|| Reject::InvalidFilename(raw_name.to_string()))?;
    // RFC 7578: a part without Content-Type is text/plain.
    let declared = content_type.unwrap_or_else(|| "text/plain".into());
    let key = match route.route.upload.naming {
        Naming::Original => format!("{dir}{name}"),
        Naming::Uuid => match filters::extension(&name) {
            Some(ext) => format!("{dir}{}.{ext}", uuid::Uuid::new_v4()),
            None => format!("{dir}{}", uuid::Uuid::new_v4()),
        },
    };
    check_declared(&route.allow, &name, &declared)?;
    Ok((key, declared))
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
    let key = filters::parse_key(key).map_err(|e| Reject::InvalidKey(format!("{e:?}")))?;
    let name = key.rsplit('/').next().unwrap_or(&key).to_string();
    let declared = declared_put_type(content_type);
    check_declared(&ctx.route.allow, &name, &declared)?;
    let mut part = open(ctx, &key, &declared, known_len)?;
    let mut chunks = body.map(|r| r.map_err(Reject::from));
    pump(&mut chunks, &ctx.route, &declared, &mut part).await?;
    commit(vec![finish(part, key, declared).await?])
}

/// A PUT's declared type: its Content-Type's essence, lower-cased; octet-stream when absent.
fn declared_put_type(content_type: Option<&str>) -> String {
    content_type
        .map(|c| filters::before_params(c).to_ascii_lowercase())
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
        &ctx.route.dest(),
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

fn check_declared(allow: &Allowlists, name: &str, declared: &str) -> Result<(), Reject> {
    if !allow.extension_allowed(name) {
        return Err(Reject::ExtensionNotAllowed(name.to_string()));
    }
    if !allow.type_allowed(declared) {
        return Err(Reject::TypeNotAllowed(declared.to_string()));
    }
    Ok(())
}

fn verify_head(allow: &Allowlists, declared: &str, head: &[u8]) -> Result<(), Reject> {
    let s = filters::sniff(head);
    let sniffed = filters::sniffed_mime(&s);
    if !allow.type_allowed(sniffed) {
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
    route: &RouteRt,
    declared: &str,
    part: &mut Part,
) -> Result<(), Reject>
where
    S: Stream<Item = Result<Bytes, Reject>> + Unpin,
{
    let rules = &route.route.upload;
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
        verify_head(&route.allow, declared, buf)?;
        part.write(buf.split().freeze()).await?;
        head = None;
        if chunk.len() > need {
            part.write(chunk.slice(need..)).await?;
        }
    }
    if let Some(buf) = head {
        // The whole part was shorter than the sniff window.
        verify_head(&route.allow, declared, &buf)?;
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
    Ok(Stored {
        objects,
        ..Stored::default()
    })
}
