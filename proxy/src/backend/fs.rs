//! The disk backend: one object = one temp file, renamed into place on commit.
//!
//! ```text
//!   upload task --Bytes--> mpsc(PIPE_DEPTH) --> blocking writer thread
//!                                               write(2) (+ sha256), fsync
//!   finish(): end marker -> writer returns size/hash -> Staged
//!   Staged::commit(): rename(.sluice-tmp-*, key)     (atomic on one filesystem)
//!   anything else (error, rejection, drop): the temp file is unlinked
//! ```
//! The writer runs on the blocking pool so disk latency never stalls the
//! runtime; the channel's depth is the whole per-object buffer, whatever the
//! file size. Hashing happens on the writer thread, beside the write, so it
//! overlaps with parsing on the other core.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Written;
use crate::error::Reject;

/// Chunks in flight between the network and the disk for one object.
pub const PIPE_DEPTH: usize = 4;

/// Our temp files start with this; `filters` refuses keys that do.
pub const TEMP_PREFIX: &str = ".sluice-tmp-";

/// Unlinks a temp file when dropped, unless disarmed by a commit.
pub struct TempGuard(Option<PathBuf>);

impl TempGuard {
    pub fn new(path: PathBuf) -> Self {
        Self(Some(path))
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take()
            && let Err(e) = std::fs::remove_file(&p)
        {
            tracing::warn!(path = %p.display(), error = %e, "could not remove temp file");
        }
    }
}

/// An object being written.
pub struct FsPart {
    tx: Option<mpsc::Sender<Bytes>>,
    writer: Option<JoinHandle<std::io::Result<Written>>>,
    temp: TempGuard,
    final_path: PathBuf,
}

/// A complete object, not yet visible under its key.
pub struct Staged {
    temp: TempGuard,
    final_path: PathBuf,
    pub written: Written,
}

pub fn object_path(root: &Path, key: &str) -> PathBuf {
    // `key` went through filters::parse_key / sanitize_filename: no "..", no empty segments.
    root.join(key)
}

impl FsPart {
    pub fn create(root: &Path, key: &str, checksum: bool, fsync: bool) -> Result<Self, Reject> {
        let final_path = object_path(root, key);
        let dir = final_path.parent().unwrap_or(root);
        std::fs::create_dir_all(dir).map_err(|e| storage("create directory", dir, e))?;
        if final_path.is_dir() {
            return Err(Reject::InvalidKey(format!("{key:?} is a directory")));
        }
        let temp_path = dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&temp_path)
            .map_err(|e| storage("create", &temp_path, e))?;
        let temp = TempGuard(Some(temp_path));
        let (tx, rx) = mpsc::channel(PIPE_DEPTH);
        let writer = tokio::task::spawn_blocking(move || write_all(file, rx, checksum, fsync));
        Ok(Self {
            tx: Some(tx),
            writer: Some(writer),
            temp,
            final_path,
        })
    }

    /// Waits while the pipe is full: backpressure reaches the client's socket.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), Reject> {
        if chunk.is_empty() {
            return Ok(()); // empty is the end marker
        }
        let sent = match &self.tx {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The writer stopped early: it failed; its error says why.
        Err(self
            .join()
            .await
            .err()
            .unwrap_or_else(|| Reject::Storage("writer stopped".into())))
    }

    pub async fn finish(mut self) -> Result<Staged, Reject> {
        if let Some(tx) = self.tx.take() {
            // A closed channel here means the writer failed; join reports it.
            let _ = tx.send(Bytes::new()).await;
        }
        let written = self.join().await?;
        Ok(Staged {
            temp: TempGuard(self.temp.0.take()),
            final_path: std::mem::take(&mut self.final_path),
            written,
        })
    }

    async fn join(&mut self) -> Result<Written, Reject> {
        self.tx = None;
        match self.writer.take() {
            Some(h) => match h.await {
                Ok(Ok(w)) => Ok(w),
                Ok(Err(e)) => Err(Reject::Storage(format!(
                    "write {}: {e}",
                    self.final_path.display()
                ))),
                Err(e) => Err(Reject::Storage(format!("writer task: {e}"))),
            },
            None => Err(Reject::Storage("writer already joined".into())),
        }
    }
}

impl Staged {
    /// Makes the object visible under its key, replacing any previous one atomically.
    pub fn commit(mut self) -> Result<(), Reject> {
        let Some(temp) = self.temp.0.take() else {
            return Err(Reject::Storage("nothing staged".into()));
        };
        match std::fs::rename(&temp, &self.final_path) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.temp.0 = Some(temp);
                Err(storage("rename into", &self.final_path, e))
            }
        }
    }
}

fn storage(what: &str, p: &Path, e: std::io::Error) -> Reject {
    Reject::Storage(format!("{what} {}: {e}", p.display()))
}

/// Runs on the blocking pool. Ends at the end marker (commit path) or when the
/// sender goes away without one (abort: skip the fsync, the guard unlinks).
fn write_all(
    mut file: File,
    mut rx: mpsc::Receiver<Bytes>,
    checksum: bool,
    fsync: bool,
) -> std::io::Result<Written> {
    let mut hasher = checksum.then(Sha256::new);
    let mut size = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        if chunk.is_empty() {
            if fsync {
                file.sync_all()?;
            }
            return Ok(Written {
                size,
                sha256: hasher.map(|h| hex::encode(h.finalize())),
            });
        }
        if let Some(h) = hasher.as_mut() {
            h.update(&chunk);
        }
        file.write_all(&chunk)?;
        size += chunk.len() as u64;
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::Interrupted,
        "upload aborted",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn commit_makes_object_visible_with_hash() {
        let d = tempfile::tempdir().unwrap();
        let mut p = FsPart::create(d.path(), "a/b.txt", true, true).unwrap();
        p.write(Bytes::from_static(b"hello ")).await.unwrap();
        p.write(Bytes::from_static(b"world")).await.unwrap();
        let s = p.finish().await.unwrap();
        assert_eq!(s.written.size, 11);
        assert_eq!(
            s.written.sha256.as_deref(),
            Some("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9")
        );
        // Not visible before commit.
        assert_eq!(entries(&d.path().join("a")).len(), 1);
        assert!(!d.path().join("a/b.txt").exists());
        s.commit().unwrap();
        assert_eq!(
            std::fs::read(d.path().join("a/b.txt")).unwrap(),
            b"hello world"
        );
        assert_eq!(entries(&d.path().join("a")), vec!["b.txt"]);
    }

    #[tokio::test]
    async fn drop_before_finish_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let mut p = FsPart::create(d.path(), "x", false, false).unwrap();
        p.write(Bytes::from_static(b"partial")).await.unwrap();
        drop(p);
        assert!(entries(d.path()).is_empty());
    }

    #[tokio::test]
    async fn staged_but_not_committed_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let mut p = FsPart::create(d.path(), "x", false, false).unwrap();
        p.write(Bytes::from_static(b"whole")).await.unwrap();
        let s = p.finish().await.unwrap();
        drop(s);
        assert!(entries(d.path()).is_empty());
    }
}
