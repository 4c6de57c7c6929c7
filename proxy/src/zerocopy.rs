//! Zero-copy transfer: sendfile(2) from a file to a socket.
//!
//! This is the one module that talks to the kernel's zero-copy calls. rustix
//! wraps sendfile(2) safely, so no `unsafe` is needed here; splice(2) for
//! backend sockets joins this module with the remote backends.
//!
//! The socket is non-blocking (tokio): we wait for writability, then let the
//! kernel move as much as the socket buffer takes. A page-cache miss makes
//! sendfile read the disk on the runtime thread, as nginx does without aio;
//! the chunk cap keeps any one call short.

use std::fs::File;
use std::io;
use std::time::Duration;

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
