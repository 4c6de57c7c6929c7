//! Storage backends. Each takes an object as a stream of `Bytes` through a
//! bounded channel (the pipe) and either commits it whole or leaves nothing.
//!
//! ```text
//!   Part::write(Bytes)*  -> Part::finish() -> Staged -> Staged::commit()
//!      fs:   temp file, renamed into place at commit
//!      http: one streamed request; stored by the engine when the body ends
//!      s3:   PutObject, or a multipart upload completed at finish
//!   dropped before finish: temp file unlinked / request aborted mid-body /
//!   multipart upload aborted. Dropped after finish but before commit (another
//!   file of the same request failed): the object is deleted again where the
//!   engine has a delete (fs, http put, s3).
//! ```
//! `upstream` is the raw HTTP/1.1 client of the splice paths: pooled
//! keep-alive sockets to plain-http engines, handed to splice(2) once a head
//! is read. `tls` makes the hyper clients https engines are reached with
//! (userspace TLS: their bytes are copied, never spliced, so the splice paths
//! leave https engines to hyper). `credentials` hands the S3 signer fresh keys
//! when a policy names no Secret (the AWS credential chain: environment, web
//! identity, container, IMDSv2).

pub mod credentials;
pub mod fs;
pub mod http;
pub mod s3;
pub mod tls;
pub mod upstream;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_policy::Backend;

use crate::error::Reject;

#[derive(Debug, Clone)]
pub struct Written {
    pub size: u64,
    pub sha256: Option<String>,
}

/// Shared clients and pools of the remote backends.
pub struct Remotes {
    /// The engine clients: the default one and one per TLS setting in use.
    pub engines: tls::Clients,
    pub parts: Arc<s3::PartPool>,
    /// The AWS credential chain, shared by every S3 route without static keys.
    pub credentials: Arc<credentials::Chain>,
    pub connect_timeout: Duration,
    /// Longest wait for an engine's answer.
    pub timeout: Duration,
    pub spool_dir: PathBuf,
}

/// How to take back an object stored before its request failed.
pub enum Undo {
    HttpDelete {
        client: http::Client,
        uri: String,
        headers: Vec<(String, String)>,
    },
    S3Delete {
        client: http::Client,
        url: url::Url,
    },
}

impl Undo {
    fn spawn(self) {
        let (client, uri, headers) = match self {
            Undo::HttpDelete {
                client,
                uri,
                headers,
            } => (client, uri, headers),
            Undo::S3Delete { client, url } => (client, url.to_string(), vec![]),
        };
        tokio::spawn(async move {
            let mut req = ::http::Request::delete(uri.as_str());
            for (k, v) in &headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let Ok(req) = req.body(http::empty_body()) else {
                return;
            };
            match client.request(req).await {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(%uri, "deleted an object whose request failed")
                }
                Ok(r) => {
                    tracing::warn!(%uri, status = r.status().as_u16(), "could not delete an object whose request failed")
                }
                Err(e) => {
                    tracing::warn!(%uri, error = %e, "could not delete an object whose request failed")
                }
            }
        });
    }
}

pub enum Part {
    Fs(fs::FsPart),
    Http(Box<http::HttpPart>),
    S3(Box<s3::S3Part>),
}

pub enum Staged {
    Fs(fs::Staged),
    Remote { written: Written, undo: UndoGuard },
}

/// Runs its undo when dropped, unless the request committed.
pub struct UndoGuard(Option<Box<Undo>>);

impl UndoGuard {
    pub fn new(undo: Option<Undo>) -> Self {
        Self(undo.map(Box::new))
    }
}

impl Drop for UndoGuard {
    fn drop(&mut self) {
        if let Some(u) = self.0.take() {
            u.spawn();
        }
    }
}

/// Where a route stores: its policy's backend, with what was prepared for it
/// when the configuration loaded.
pub struct Dest<'a> {
    pub backend: &'a Backend,
    /// fs: the directory objects live in.
    pub fs_root: Option<&'a Path>,
    /// s3: bucket and credentials, ready to sign.
    pub s3: Option<&'a Arc<s3::S3Target>>,
    /// http, s3: the client for the engine's TLS setting.
    pub client: &'a http::Client,
}

/// What an object is, for the backend to open it.
pub struct NewObject<'a> {
    pub key: &'a str,
    pub content_type: &'a str,
    pub known_len: Option<u64>,
    pub checksum: bool,
    pub fsync: bool,
}

impl Part {
    pub fn open(dest: &Dest<'_>, remotes: &Remotes, o: &NewObject<'_>) -> Result<Self, Reject> {
        match dest.backend {
            Backend::Fs { .. } => {
                let root = dest
                    .fs_root
                    .ok_or_else(|| Reject::Storage("fs route without a root".into()))?;
                Ok(Part::Fs(fs::FsPart::create(
                    root, o.key, o.checksum, o.fsync,
                )?))
            }
            Backend::Http {
                url,
                mode,
                field_name,
                headers,
                spool,
                ..
            } => Ok(Part::Http(Box::new(http::HttpPart::create(
                dest.client,
                &http::Target {
                    url,
                    mode: *mode,
                    field_name,
                    headers,
                    spool: *spool,
                    spool_dir: &remotes.spool_dir,
                    timeout: remotes.timeout,
                },
                o.key,
                o.content_type,
                o.known_len,
                o.checksum,
            )?))),
            Backend::S3 { .. } => {
                let target = dest
                    .s3
                    .cloned()
                    .ok_or_else(|| Reject::Storage("s3 route without a bucket".into()))?;
                Ok(Part::S3(Box::new(s3::S3Part::new(
                    target,
                    dest.client,
                    remotes,
                    o.key,
                    o.content_type,
                    o.known_len,
                    o.checksum,
                ))))
            }
        }
    }

    pub async fn write(&mut self, chunk: Bytes) -> Result<(), Reject> {
        match self {
            Part::Fs(p) => p.write(chunk).await,
            Part::Http(p) => p.write(chunk).await,
            Part::S3(p) => p.write(chunk).await,
        }
    }

    pub async fn finish(self) -> Result<Staged, Reject> {
        match self {
            Part::Fs(p) => Ok(Staged::Fs(p.finish().await?)),
            Part::Http(p) => {
                let (written, undo) = (*p).finish().await?;
                Ok(Staged::Remote {
                    written,
                    undo: UndoGuard(undo.map(Box::new)),
                })
            }
            Part::S3(p) => {
                let (written, undo) = (*p).finish().await?;
                Ok(Staged::Remote {
                    written,
                    undo: UndoGuard(undo.map(Box::new)),
                })
            }
        }
    }
}

impl Staged {
    pub fn written(&self) -> &Written {
        match self {
            Staged::Fs(s) => &s.written,
            Staged::Remote { written, .. } => written,
        }
    }

    pub fn commit(self) -> Result<(), Reject> {
        match self {
            Staged::Fs(s) => s.commit(),
            Staged::Remote { mut undo, .. } => {
                undo.0 = None;
                Ok(())
            }
        }
    }
}
