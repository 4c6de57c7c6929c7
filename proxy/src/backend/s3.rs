//! The S3 backend: SigV4-presigned requests (rusty-s3, sans-IO) sent with the
//! shared hyper client.
//!
//! ```text
//!   bytes -> part buffer (from PartPool) --full--> UploadPart (one in flight)
//!                                                  while the next buffer fills
//!   finish: never filled one part -> PutObject with the buffer
//!           otherwise             -> last UploadPart, CompleteMultipartUpload
//!   dropped before finish         -> AbortMultipartUpload
//! ```
//! Memory per upload is at most two part buffers (one filling, one sending),
//! and all uploads together at most what the pool holds: an upload that
//! cannot get a second buffer waits for its own part in flight and reuses
//! that buffer, so the pool can run dry without deadlocking.
//!
//! Every presign takes the target's current keys (`S3Target::keys`): a
//! policy's static keys by reference, or the process's credential chain's
//! (`credentials::Chain`), whose session token goes out as `X-Amz-Security-Token`.

use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderValue, Method, Request};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::credentials::{Chain, Loaded};
use super::http::{Client, exchange, expect_success, full_body};
use super::{Remotes, Undo, Written};
use crate::error::Reject;

/// How long a presigned URL stays valid: long enough for one request on a slow link.
const SIGN_FOR: Duration = Duration::from_secs(3600);
/// S3's smallest part (except the last).
pub const MIN_PART: usize = 5 << 20;

pub struct S3Target {
    pub bucket: Bucket,
    pub keys: Keys,
    pub key_prefix: String,
}

/// Where a target's signing keys come from.
pub enum Keys {
    /// The policy's `credentialsSecret`.
    Static(Credentials),
    /// The process's AWS credential chain.
    Chain(Arc<Chain>),
}

/// Keys to presign one request with.
pub enum Signing<'a> {
    Static(&'a Credentials),
    Chain(Arc<Loaded>),
}

impl Deref for Signing<'_> {
    type Target = Credentials;

    fn deref(&self) -> &Credentials {
        match self {
            Signing::Static(c) => c,
            Signing::Chain(l) => &l.keys,
        }
    }
}

impl S3Target {
    pub fn new(
        endpoint: &str,
        bucket: &str,
        region: &str,
        key_prefix: &str,
        path_style: bool,
        keys: Keys,
    ) -> Result<Self, String> {
        let url: url::Url = endpoint
            .parse()
            .map_err(|e| format!("s3 endpoint {endpoint:?}: {e}"))?;
        let style = if path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(url, style, bucket.to_string(), region.to_string())
            .map_err(|e| format!("s3 bucket {bucket:?} at {endpoint}: {e}"))?;
        if let Keys::Chain(c) = &keys {
            c.start();
        }
        Ok(Self {
            bucket,
            keys,
            key_prefix: key_prefix.to_string(),
        })
    }

    /// The keys to sign with now. Static keys: a reference, no cost. The chain's:
    /// an `ArcSwap` load while they are valid, else a wait of at most `wait` for
    /// fresh ones; none to be had is `502 backend_error` saying why.
    pub async fn keys(&self, wait: Duration) -> Result<Signing<'_>, Reject> {
        match &self.keys {
            Keys::Static(c) => Ok(Signing::Static(c)),
            Keys::Chain(chain) => {
                chain
                    .current(wait)
                    .await
                    .map(Signing::Chain)
                    .map_err(|message| Reject::Backend {
                        status: None,
                        message,
                    })
            }
        }
    }

    pub fn object(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }

    pub async fn get_url(&self, key: &str, head: bool, wait: Duration) -> Result<url::Url, Reject> {
        let object = self.object(key);
        let keys = self.keys(wait).await?;
        Ok(if head {
            self.bucket.head_object(Some(&keys), &object).sign(SIGN_FOR)
        } else {
            self.bucket.get_object(Some(&keys), &object).sign(SIGN_FOR)
        })
    }
}

/// Part buffers shared by every S3 upload of the process.
pub struct PartPool {
    permits: Arc<Semaphore>,
    free: Mutex<Vec<BytesMut>>,
    pub part_size: usize,
}

pub struct PartBuf {
    buf: BytesMut,
    _permit: OwnedSemaphorePermit,
    pool: Arc<PartPool>,
}

impl Drop for PartBuf {
    fn drop(&mut self) {
        let mut b = std::mem::take(&mut self.buf);
        if b.capacity() >= self.pool.part_size {
            b.clear();
            self.pool
                .free
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(b);
        }
    }
}

impl PartPool {
    pub fn new(part_size: usize, buffers: usize) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(buffers.max(1))),
            free: Mutex::new(Vec::new()),
            part_size: part_size.max(MIN_PART),
        })
    }

    fn wrap(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> PartBuf {
        let buf = self
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(self.part_size));
        PartBuf {
            buf,
            _permit: permit,
            pool: self.clone(),
        }
    }

    fn try_get(self: &Arc<Self>) -> Option<PartBuf> {
        self.permits
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|p| self.wrap(p))
    }

    async fn get(self: &Arc<Self>) -> Result<PartBuf, Reject> {
        let p = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Reject::Storage("part pool closed".into()))?;
        Ok(self.wrap(p))
    }
}

type PartResult = Result<(String, PartBuf), Reject>;

struct Upload {
    id: String,
    etags: Vec<String>,
    inflight: Option<JoinHandle<PartResult>>,
}

pub struct S3Part {
    t: Arc<S3Target>,
    client: Client,
    pool: Arc<PartPool>,
    timeout: Duration,
    object: String,
    content_type: String,
    buf: Option<PartBuf>,
    spare: Option<PartBuf>,
    upload: Option<Upload>,
    size: u64,
    hasher: Option<Sha256>,
    done: bool,
}

impl S3Part {
    pub fn new(
        t: Arc<S3Target>,
        client: &Client,
        remotes: &Remotes,
        key: &str,
        content_type: &str,
        _known_len: Option<u64>,
        checksum: bool,
    ) -> Self {
        Self {
            object: t.object(key),
            t,
            client: client.clone(),
            pool: remotes.parts.clone(),
            timeout: remotes.timeout,
            content_type: content_type.to_string(),
            buf: None,
            spare: None,
            upload: None,
            size: 0,
            hasher: checksum.then(Sha256::new),
            done: false,
        }
    }

    pub async fn write(&mut self, mut chunk: Bytes) -> Result<(), Reject> {
        if let Some(h) = self.hasher.as_mut() {
            h.update(&chunk);
        }
        self.size += chunk.len() as u64;
        let part_size = self.pool.part_size;
        while !chunk.is_empty() {
            let buf = match self.buf.as_mut() {
                Some(b) => b,
                None => {
                    let mut b = self.next_buf().await?;
                    b.buf.reserve(part_size);
                    self.buf.insert(b)
                }
            };
            let take = (part_size - buf.buf.len()).min(chunk.len());
            buf.buf.extend_from_slice(&chunk[..take]);
            chunk.advance(take);
            if buf.buf.len() >= part_size {
                self.ship().await?;
            }
        }
        Ok(())
    }

    /// A buffer to fill: our spare, a free one, or the one our part in flight frees.
    async fn next_buf(&mut self) -> Result<PartBuf, Reject> {
        if let Some(b) = self.spare.take() {
            return Ok(b);
        }
        if let Some(b) = self.pool.try_get() {
            return Ok(b);
        }
        if self.upload.as_ref().is_some_and(|u| u.inflight.is_some()) {
            self.wait_inflight().await?;
            if let Some(b) = self.spare.take() {
                return Ok(b);
            }
        }
        self.pool.get().await
    }

    async fn wait_inflight(&mut self) -> Result<(), Reject> {
        let Some(up) = self.upload.as_mut() else {
            return Ok(());
        };
        let Some(h) = up.inflight.take() else {
            return Ok(());
        };
        match h.await {
            Ok(Ok((etag, buf))) => {
                up.etags.push(etag);
                self.spare = Some(buf);
                Ok(())
            }
            Ok(Err(r)) => Err(r),
            Err(e) => Err(Reject::Storage(format!("part upload task: {e}"))),
        }
    }

    /// Sends the current buffer as the next part; at most one part is in flight.
    async fn ship(&mut self) -> Result<(), Reject> {
        let Some(buf) = self.buf.take() else {
            return Ok(());
        };
        if self.upload.is_none() {
            let id = self.create().await?;
            self.upload = Some(Upload {
                id,
                etags: Vec::new(),
                inflight: None,
            });
        }
        self.wait_inflight().await?;
        let Some(up) = self.upload.as_mut() else {
            return Ok(());
        };
        let part_no = u16::try_from(up.etags.len() + 1)
            .ok()
            .filter(|n| *n <= 10_000)
            .ok_or_else(|| {
                Reject::Storage("more than 10000 S3 parts: raise the part size".into())
            })?;
        let keys = self.t.keys(self.timeout).await?;
        let url = self
            .t
            .bucket
            .upload_part(Some(&keys), &self.object, part_no, &up.id)
            .sign(SIGN_FOR);
        drop(keys);
        let client = self.client.clone();
        let timeout = self.timeout;
        up.inflight = Some(tokio::spawn(put_part(client, url, buf, timeout)));
        Ok(())
    }

    async fn create(&self) -> Result<String, Reject> {
        let keys = self.t.keys(self.timeout).await?;
        let action = self
            .t
            .bucket
            .create_multipart_upload(Some(&keys), &self.object);
        let url = action.sign(SIGN_FOR);
        let req = Request::builder()
            .method(Method::POST)
            .uri(url.as_str())
            .header("content-type", self.content_type.as_str())
            .body(super::http::empty_body())
            .map_err(|e| Reject::Storage(format!("CreateMultipartUpload request: {e}")))?;
        let text = send_text(&self.client, req, "CreateMultipartUpload", self.timeout).await?;
        rusty_s3::actions::CreateMultipartUpload::parse_response(&text)
            .map(|r| r.upload_id().to_string())
            .map_err(|e| Reject::Backend {
                status: None,
                message: format!("CreateMultipartUpload answer: {e}"),
            })
    }

    pub async fn finish(mut self) -> Result<(Written, Option<Undo>), Reject> {
        if self.upload.is_none() {
            let body = self
                .buf
                .as_mut()
                .map(|b| b.buf.split().freeze())
                .unwrap_or_default();
            let url = self
                .t
                .bucket
                .put_object(Some(&*self.t.keys(self.timeout).await?), &self.object)
                .sign(SIGN_FOR);
            let req = Request::builder()
                .method(Method::PUT)
                .uri(url.as_str())
                .header("content-type", self.content_type.as_str())
                .header("content-length", HeaderValue::from(body.len()))
                .body(full_body(body))
                .map_err(|e| Reject::Storage(format!("PutObject request: {e}")))?;
            send_text(&self.client, req, "PutObject", self.timeout).await?;
        } else {
            if self.buf.as_ref().is_some_and(|b| !b.buf.is_empty()) {
                self.ship().await?;
            }
            self.wait_inflight().await?;
            let Some(up) = self.upload.as_ref() else {
                return Err(Reject::Storage("multipart upload vanished".into()));
            };
            let keys = self.t.keys(self.timeout).await?;
            let action = self.t.bucket.complete_multipart_upload(
                Some(&keys),
                &self.object,
                &up.id,
                up.etags.iter().map(String::as_str),
            );
            let url = action.sign(SIGN_FOR);
            let body = action.body();
            let req = Request::builder()
                .method(Method::POST)
                .uri(url.as_str())
                .header("content-length", HeaderValue::from(body.len()))
                .body(full_body(body))
                .map_err(|e| Reject::Storage(format!("CompleteMultipartUpload request: {e}")))?;
            let text =
                send_text(&self.client, req, "CompleteMultipartUpload", self.timeout).await?;
            // S3 may answer 200 and still report an error in the body.
            if text.contains("<Error>") {
                return Err(Reject::Backend {
                    status: Some(200),
                    message: format!(
                        "CompleteMultipartUpload failed: {}",
                        text.chars().take(300).collect::<String>()
                    ),
                });
            }
        }
        self.done = true;
        let undo = Undo::S3Delete {
            client: self.client.clone(),
            url: self
                .t
                .bucket
                .delete_object(Some(&*self.t.keys(self.timeout).await?), &self.object)
                .sign(SIGN_FOR),
        };
        Ok((
            Written {
                size: self.size,
                sha256: self.hasher.take().map(|h| hex::encode(h.finalize())),
            },
            Some(undo),
        ))
    }
}

impl Drop for S3Part {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Some(up) = self.upload.take() else { return };
        if let Some(h) = &up.inflight {
            h.abort();
        }
        let t = self.t.clone();
        let client = self.client.clone();
        let object = self.object.clone();
        let timeout = self.timeout;
        // Drop may run outside a runtime only at process exit; then the upload is left for the bucket's lifecycle rules.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let url = match t.keys(timeout).await {
                    Ok(keys) => t
                        .bucket
                        .abort_multipart_upload(Some(&keys), &object, &up.id)
                        .sign(SIGN_FOR),
                    Err(e) => {
                        tracing::warn!(%object, error = %e, "AbortMultipartUpload not sent: no S3 credentials");
                        return;
                    }
                };
                let req = Request::builder()
                    .method(Method::DELETE)
                    .uri(url.as_str())
                    .body(super::http::empty_body());
                let Ok(req) = req else { return };
                match client.request(req).await {
                    Ok(r) if r.status().is_success() => tracing::info!(%object, "aborted multipart upload"),
                    Ok(r) => tracing::warn!(%object, status = r.status().as_u16(), "AbortMultipartUpload refused"),
                    Err(e) => tracing::warn!(%object, error = %e, "AbortMultipartUpload failed"),
                }
            });
        }
    }
}

async fn put_part(
    client: Client,
    url: url::Url,
    mut buf: PartBuf,
    timeout: Duration,
) -> PartResult {
    let bytes = buf.buf.split().freeze();
    let req = Request::builder()
        .method(Method::PUT)
        .uri(url.as_str())
        .header("content-length", HeaderValue::from(bytes.len()))
        .body(full_body(bytes.clone()))
        .map_err(|e| Reject::Storage(format!("UploadPart request: {e}")))?;
    let resp = exchange(&client, req, timeout).await?;
    let resp = expect_success(resp, "UploadPart").await?;
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| Reject::Backend {
            status: Some(resp.status().as_u16()),
            message: "UploadPart answer has no ETag".into(),
        })?;
    drop(resp);
    // The request has been written: our handle is the last one, so the allocation comes back.
    if let Ok(mut m) = bytes.try_into_mut() {
        m.clear();
        buf.buf = m;
    }
    Ok((etag, buf))
}

async fn send_text(
    client: &Client,
    req: Request<super::http::OutBody>,
    what: &str,
    timeout: Duration,
) -> Result<String, Reject> {
    use http_body_util::BodyExt;
    let resp = exchange(client, req, timeout).await?;
    let resp = expect_success(resp, what).await?;
    // S3 control answers are small XML documents; cap what we read anyway.
    let body = http_body_util::Limited::new(resp.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| Reject::Backend {
            status: None,
            message: format!("{what} answer: {e}"),
        })?
        .to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}
