//! Looking at a client's queued body bytes without taking them: MSG_PEEK into
//! one window per runtime thread. The fast upload paths see each byte once
//! this way (to find a boundary, sniff or hash it), then splice exactly the
//! bytes they looked at; none is copied into a buffer of ours and out again.
//!
//! ```text
//!   low-water mark set (wake after `wake` bytes, at most the window)
//!   -> readable, or PATIENCE passed (a slow sender's bytes still move)
//!   -> recv(MSG_PEEK) of up to a window of bytes -> look(bytes, all_left)
//!        Some(t): done, the bytes are still queued for the caller
//!        None: not enough to decide, wait for more
//!   nothing new for pace.idle: idle; below the minimum rate: too slow
//! ```

use std::cell::RefCell;
use std::io;
use std::time::Instant;

use rustix::net::RecvFlags;
use tokio::io::Interest;

use crate::error::Reject;
use crate::limits::{BodyError, Pace};
use crate::zerocopy::{Lowat, PATIENCE};

thread_local! {
    /// What a peek copies out, looked at synchronously and left there: one
    /// window per runtime thread, whatever the number of uploads.
    static PEEKED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's window, at least `size` bytes (one peek looks
/// at what one low-water wakeup brings: `--splice-window`).
pub(super) fn with_window<R>(size: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    PEEKED.with_borrow_mut(|buf| {
        if buf.len() < size {
            buf.resize(size, 0);
        }
        f(buf)
    })
}

/// Waits until `look` can decide on the bytes queued on the low-water mark's
/// socket. `look` gets a peek at up to `left` bytes (and a window), and
/// whether they are all that is left of the body; it answers `None` for "not
/// enough yet". `wake`: how many queued bytes are worth a wakeup. `read`
/// bytes of the body came before, since `started` (for the pace rules).
pub(super) async fn peek<T>(
    lowat: &mut Lowat<'_>,
    wake: u64,
    left: u64,
    pace: Pace,
    read: u64,
    started: Instant,
    mut look: impl FnMut(&[u8], bool) -> Result<Option<T>, Reject>,
) -> Result<T, Reject> {
    let client = lowat.socket();
    let window = lowat.window();
    let want = usize::try_from(left).unwrap_or(window).min(window);
    let mut quiet_since = Instant::now();
    let mut seen = 0usize;
    loop {
        lowat.want(wake);
        let woke = match tokio::time::timeout(PATIENCE.min(pace.idle), client.readable()).await {
            Ok(r) => {
                r.map_err(|e| Reject::ClientAborted(e.to_string()))?;
                true
            }
            Err(_) => false,
        };
        let mut got = 0usize;
        let mut once = || -> io::Result<Result<T, Reject>> {
            with_window(want, |buf| {
                let (_, n) = rustix::net::recv(client, &mut buf[..want], RecvFlags::PEEK)?;
                got = n;
                if n == 0 {
                    return Ok(Err(Reject::ClientAborted(
                        "client closed before the end of the body".into(),
                    )));
                }
                match look(&buf[..n], n as u64 == left) {
                    // Readiness is cleared only if nothing arrived meanwhile.
                    Ok(None) => Err(io::ErrorKind::WouldBlock.into()),
                    Ok(Some(t)) => Ok(Ok(t)),
                    Err(r) => Ok(Err(r)),
                }
            })
        };
        // Past the patience the reactor may not call the socket readable
        // (fewer bytes than the low-water mark): ask the kernel itself.
        let r = if woke {
            client.try_io(Interest::READABLE, once)
        } else {
            once()
        };
        match r {
            Ok(r) => return r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(Reject::ClientAborted(e.to_string())),
        }
        if got > seen {
            seen = got;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= pace.idle {
            return Err(BodyError::Idle(pace.idle).into());
        }
        pace.check(read + got as u64, started.elapsed())?;
    }
}
