//! Zero-copy transfer: sendfile(2) from a file to a socket, and splice(2)
//! from a backend socket through a pipe to a client socket.
//!
//! ```text
//!   fs:     file --sendfile--> client socket
//!   remote: backend socket --splice--> pipe (pooled) --splice--> client socket
//!   PUT:    client socket  --splice--> pipe (pooled) --splice--> engine socket
//!   POST:   the same for file data, once peeked at (`upload::form`)
//! ```
//! This is the one module that talks to the kernel's zero-copy calls. rustix
//! wraps both safely; the two `unsafe` blocks set SO_RCVLOWAT and read a
//! socket's unacknowledged bytes (SIOCOUTQ), which no safe wrapper offers.
//!
//! The socket is non-blocking (tokio): we wait for writability, then let the
//! kernel move as much as the socket buffer takes. A page-cache miss makes
//! sendfile read the disk on the runtime thread, as nginx does without aio;
//! the chunk cap keeps any one call short.
//!
//! Where neither call can go (a chunked or close-delimited engine body, hyper's
//! connections), bytes are copied through pooled buffers of `COPY_CHUNK`.

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

/// Which end of a splice stopped it.
#[derive(Debug)]
pub enum SpliceError {
    /// Reading `from`: it closed early, failed, went quiet for its timeout, or `progress` refused.
    Read(io::Error),
    /// Writing `to`: it failed or stopped taking bytes for its timeout.
    Write(io::Error),
}

impl From<SpliceError> for io::Error {
    fn from(e: SpliceError) -> Self {
        match e {
            SpliceError::Read(e) | SpliceError::Write(e) => e,
        }
    }
}

/// How long each end of a splice may stall, and what each is called in errors.
#[derive(Debug, Clone, Copy)]
pub struct Ends {
    /// The reading end's low-water mark (`Lowat`): `--splice-window`.
    pub window: usize,
    pub read_idle: Duration,
    pub write_idle: Duration,
    /// "backend" / "client": who stopped sending.
    pub reader: &'static str,
    /// "client" / "engine": who stopped reading.
    pub writer: &'static str,
}

/// Moves exactly `len` bytes from `from` to `to` through `pipe`, never into user space.
/// `progress` sees the bytes read so far after every read and may stop the move
/// (a rate limit). On error the pipe may hold bytes: the caller must drop it, not pool it.
pub async fn splice_exact(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &Pipe,
    len: u64,
    ends: Ends,
    progress: impl FnMut(u64) -> io::Result<()>,
) -> Result<u64, SpliceError> {
    let mut lowat = Lowat::new(from, ends.window);
    transfer(from, to, pipe, len, ends, progress, Some(&mut lowat)).await
}

/// `splice_exact` for `len` bytes the caller saw queued on `from` (MSG_PEEK):
/// no low-water mark is set, the caller keeps its own.
pub async fn splice_queued(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &Pipe,
    len: u64,
    ends: Ends,
    progress: impl FnMut(u64) -> io::Result<()>,
) -> Result<u64, SpliceError> {
    transfer(from, to, pipe, len, ends, progress, None).await
}

async fn transfer(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &Pipe,
    len: u64,
    ends: Ends,
    mut progress: impl FnMut(u64) -> io::Result<()>,
    mut lowat: Option<&mut Lowat<'_>>,
) -> Result<u64, SpliceError> {
    let mut moved = 0u64;
    let patience = PATIENCE.min(ends.read_idle);
    while moved < len {
        if let Some(l) = lowat.as_deref_mut() {
            l.want(len - moved);
        }
        let want = usize::try_from(len - moved)
            .unwrap_or(pipe.capacity)
            .min(pipe.capacity);
        let quiet_since = std::time::Instant::now();
        let filled = loop {
            // With a low-water mark, a slow sender is not an idle one: past the
            // patience, whatever has arrived is taken; past `read_idle` with
            // nothing, it is idle.
            let looked = match tokio::time::timeout(patience, from.readable()).await {
                Ok(r) => {
                    r.map_err(SpliceError::Read)?;
                    false
                }
                Err(_) => true,
            };
            let idle = looked && quiet_since.elapsed() >= ends.read_idle;
            let fill = || {
                rustix::pipe::splice(
                    from,
                    None,
                    &pipe.write,
                    None,
                    want,
                    SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
                )
                .map_err(io::Error::from)
            };
            // Past the patience the reactor may not call the socket readable
            // (fewer bytes than the low-water mark): ask the kernel itself.
            let got = if looked {
                fill()
            } else {
                from.try_io(Interest::READABLE, fill)
            };
            match got {
                Ok(0) => {
                    return Err(SpliceError::Read(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{} closed before the advertised length", ends.reader),
                    )));
                }
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && idle => {
                    return Err(SpliceError::Read(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{} stopped sending", ends.reader),
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(SpliceError::Read(e)),
            }
        };
        progress(moved + filled as u64).map_err(SpliceError::Read)?;
        let mut left = filled;
        while left > 0 {
            tokio::time::timeout(ends.write_idle, to.writable())
                .await
                .map_err(|_| {
                    SpliceError::Write(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{} stopped reading", ends.writer),
                    ))
                })?
                .map_err(SpliceError::Write)?;
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
                Err(e) => return Err(SpliceError::Write(e)),
            }
        }
        moved += filled as u64;
    }
    Ok(moved)
}

/// The default of `--splice-window`: bytes a socket should hold before a
/// splice (or an upload's peek) is worth a wakeup. Each wakeup costs more
/// than its two system calls: moving bytes on wakes the process at the other
/// end too (the engine, or a client whose send buffer was full). Side by side on 4 GiB uploads (CPU s/GiB, 3 runs
/// each): multipart with sha256 1.39-1.42 at 256 KiB, 1.15-1.20 at 1 MiB,
/// 1.02-1.17 at 2 MiB; without a checksum 0.40-0.52, 0.30-0.35, 0.26-0.31.
/// The kernel caps the mark at half of `tcp_rmem`'s maximum (6 MiB by
/// default) and grows the socket's receive buffer to hold it, which receive
/// autotuning would grant any fast connection anyway.
pub const DEFAULT_WINDOW: usize = 2 << 20;

/// The smallest `--splice-window`: a multipart POST on the fast path decides
/// on a delimiter and the header block after it within one peek, which may
/// take twice its 64 KiB framing budget (`upload::form`).
pub const MIN_WINDOW: usize = 256 * 1024;

/// How long a wait for a window of bytes trusts the low-water mark before
/// looking anyway: a slow sender's bytes move within this, not after an idle
/// timeout (by which time the engine may have given up on the body).
pub const PATIENCE: Duration = Duration::from_millis(200);

/// SO_RCVLOWAT on the socket a splice reads: epoll reports it readable only
/// once a window of bytes is queued (or fewer when that is all that is left, or at
/// EOF), so a fast sender's bytes move in a few large splices rather than many
/// small ones, each a wakeup and two system calls. Reset to 1 when dropped: the
/// socket goes on to carry requests (keep-alive, the engine pool).
pub struct Lowat<'a> {
    socket: &'a TcpStream,
    window: usize,
    set: usize,
}

impl<'a> Lowat<'a> {
    /// Marks of at most `window` bytes on `socket`.
    pub fn new(socket: &'a TcpStream, window: usize) -> Self {
        let window = window.max(1);
        Self {
            socket,
            window,
            set: 1,
        }
    }

    /// The largest mark, which is also what one peek looks at.
    pub fn window(&self) -> usize {
        self.window
    }

    /// The socket whose low-water mark this is.
    pub fn socket(&self) -> &'a TcpStream {
        self.socket
    }

    /// A wakeup once `left` bytes, or the window if fewer, are queued.
    pub fn want(&mut self, left: u64) {
        let w = self.window;
        let n = usize::try_from(left).unwrap_or(w).clamp(1, w);
        if n != self.set && set_rcvlowat(self.socket, n).is_ok() {
            self.set = n;
        }
    }
}

impl Drop for Lowat<'_> {
    /// Also when the splice's future is dropped halfway.
    fn drop(&mut self) {
        if self.set != 1 {
            let _ = set_rcvlowat(self.socket, 1);
        }
    }
}

fn set_rcvlowat(socket: &TcpStream, n: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let v = libc::c_int::try_from(n).unwrap_or(libc::c_int::MAX);
    // rustix and socket2 have no SO_RCVLOWAT setter, hence libc.
    // SAFETY: the fd is an open socket borrowed for the whole call; `v` outlives
    // the call and the length passed is exactly its size.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bytes of a socket's send queue the peer has not acknowledged yet (sent or
/// not; a queued FIN counts one): 0 once the client has everything.
pub fn unacked(socket: &TcpStream) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // rustix and socket2 have no SIOCOUTQ (TIOCOUTQ) getter, hence libc.
    // SAFETY: the fd is an open socket borrowed for the whole call; the ioctl
    // writes one c_int, and `n` is one that outlives the call.
    let r = unsafe {
        libc::ioctl(
            socket.as_raw_fd(),
            libc::TIOCOUTQ,
            &mut n as *mut libc::c_int,
        )
    };
    if r == 0 {
        Ok(usize::try_from(n).unwrap_or(0))
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Read size of the copying path, where splice and sendfile cannot go.
pub const COPY_CHUNK: usize = 64 * 1024;

/// Copy buffers for the non-splice path, reused across responses.
pub struct BufPool {
    free: Mutex<Vec<Vec<u8>>>,
    size: usize,
}

impl BufPool {
    pub fn new(size: usize) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            size,
        }
    }

    pub fn get(&self) -> Vec<u8> {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_else(|| vec![0; self.size])
    }

    pub fn put(&self, b: Vec<u8>) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < 64 {
            free.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const ENDS: Ends = Ends {
        window: DEFAULT_WINDOW,
        read_idle: Duration::from_secs(5),
        write_idle: Duration::from_secs(5),
        reader: "backend",
        writer: "client",
    };

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
        let n = splice_exact(&backend_r, &client_w, &pipe, 300_000, ENDS, |_| Ok(()))
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
        let e = splice_exact(&backend_r, &client_w, &pipe, 100, ENDS, |_| Ok(()))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, SpliceError::Read(e) if e.kind() == io::ErrorKind::UnexpectedEof),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn progress_can_stop_the_move() {
        let pool = PipePool::new(1 << 16, 4);
        let (mut backend_w, backend_r) = pair().await;
        let (client_w, _client_r) = pair().await;
        backend_w.write_all(&[7u8; 1000]).await.unwrap();
        let pipe = pool.get().unwrap();
        let e = splice_exact(&backend_r, &client_w, &pipe, 5000, ENDS, |n| {
            assert!(n <= 1000);
            Err(io::Error::other("too slow"))
        })
        .await
        .unwrap_err();
        assert!(
            matches!(&e, SpliceError::Read(e) if e.to_string() == "too slow"),
            "{e:?}"
        );
    }
}
