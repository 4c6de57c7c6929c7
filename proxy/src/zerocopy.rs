//! Zero-copy transfer: sendfile(2) from a file to a socket, and splice(2)
//! from a backend socket through a pipe to a client socket.
//!
//! ```text
//!   fs:     file --sendfile--> client socket
//!   remote: backend socket --splice--> pipe (pooled) --splice--> client socket
//! ```
//! This is the one module that talks to the kernel's zero-copy calls. rustix
//! wraps both safely, so no `unsafe` is needed here at all.
//!
//! The socket is non-blocking (tokio): we wait for writability, then let the
//! kernel move as much as the socket buffer takes. A page-cache miss makes
//! sendfile read the disk on the runtime thread, as nginx does without aio;
//! the chunk cap keeps any one call short.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::time::Duration;

use rustix::pipe::{PipeFlags, SpliceFlags};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Most bytes asked of one sendfile(2) call.
const CHUNK: usize = 1 << 20;

/// Sends `len` bytes of `file` from `offset`. Returns the bytes sent; an error
/// if the client stops reading for `idle` or the file is shorter than promised.
pub async fn sendfile(
    stream: &TcpStream,
    file: &File,
    offset: u64,
    len: u64,
    idle: Duration,
) -> io::Result<u64> {
    let mut off = offset;
    let end = offset + len;
    while off < end {
        tokio::time::timeout(idle, stream.writable())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"))??;
        let want = usize::try_from(end - off).unwrap_or(CHUNK).min(CHUNK);
        match stream.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(stream, file, Some(&mut off), want).map_err(io::Error::from)
        }) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file ended before its advertised length",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(off - offset)
}

/// A pipe used as the kernel-side buffer of splice(2). Only ever pooled empty.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

/// Pipes kept for reuse, so a download costs no pipe(2)/fcntl(2) calls.
pub struct PipePool {
    free: Mutex<Vec<Pipe>>,
    size: usize,
    max_idle: usize,
}

impl PipePool {
    /// `size`: the capacity asked with F_SETPIPE_SZ (the kernel may round it up,
    /// or refuse past /proc/sys/fs/pipe-max-size; then the default stays).
    pub fn new(size: usize, max_idle: usize) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            size,
            max_idle,
        }
    }

    pub fn get(&self) -> io::Result<Pipe> {
        if let Some(p) = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(p);
        }
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        let capacity = rustix::pipe::fcntl_setpipe_size(&write, self.size)
            .or_else(|_| rustix::pipe::fcntl_getpipe_size(&write))?;
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// Only pipes that were fully drained come back; others are closed.
    pub fn put(&self, pipe: Pipe) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < self.max_idle {
            free.push(pipe);
        }
    }

    pub fn idle(&self) -> usize {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Moves exactly `len` bytes from `from` to `to` through `pipe`, never into user space.
/// On error the pipe may hold bytes: the caller must drop it, not pool it.
pub async fn splice_exact(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &Pipe,
    len: u64,
    idle: Duration,
) -> io::Result<u64> {
    let mut moved = 0u64;
    while moved < len {
        let want = usize::try_from(len - moved)
            .unwrap_or(pipe.capacity)
            .min(pipe.capacity);
        let filled = loop {
            tokio::time::timeout(idle, from.readable())
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "backend stopped sending")
                })??;
            match from.try_io(Interest::READABLE, || {
                rustix::pipe::splice(
                    from,
                    None,
                    &pipe.write,
                    None,
                    want,
                    SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
                )
                .map_err(io::Error::from)
            }) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "backend closed before the advertised length",
                    ));
                }
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        };
        let mut left = filled;
        while left > 0 {
            tokio::time::timeout(idle, to.writable())
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"))??;
            let more = if moved + (filled as u64) < len {
                SpliceFlags::MORE
            } else {
                SpliceFlags::empty()
            };
            match to.try_io(Interest::WRITABLE, || {
                rustix::pipe::splice(
                    &pipe.read,
                    None,
                    to,
                    None,
                    left,
                    SpliceFlags::NONBLOCK | SpliceFlags::MOVE | more,
                )
                .map_err(io::Error::from)
            }) {
                Ok(n) => left -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        moved += filled as u64;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn splice_moves_exact_bytes_and_pipe_is_reusable() {
        let pool = PipePool::new(1 << 16, 4);
        // backend_w -> backend_r (proxy side) ; client_w (proxy side) -> client_r
        let (mut backend_w, backend_r) = pair().await;
        let (client_w, mut client_r) = pair().await;
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let expect = data.clone();
        let writer = tokio::spawn(async move {
            backend_w.write_all(&data).await.unwrap();
            backend_w
        });
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 300_000];
            client_r.read_exact(&mut got).await.unwrap();
            got
        });
        let pipe = pool.get().unwrap();
        let n = splice_exact(
            &backend_r,
            &client_w,
            &pipe,
            300_000,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(n, 300_000);
        pool.put(pipe);
        assert_eq!(pool.idle(), 1);
        assert_eq!(reader.await.unwrap(), expect);
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn early_close_is_an_error() {
        let pool = PipePool::new(1 << 16, 4);
        let (mut backend_w, backend_r) = pair().await;
        let (client_w, _client_r) = pair().await;
        backend_w.write_all(b"short").await.unwrap();
        drop(backend_w);
        let pipe = pool.get().unwrap();
        let e = splice_exact(&backend_r, &client_w, &pipe, 100, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
