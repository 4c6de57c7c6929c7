//! Chunked transfer coding (RFC 9112 §7.1): size lines written for bodies
//! the proxy frames, and the framing of a body it relays as is followed to
//! find where that body ends.
//!
//! ```text
//!   write: size_line(n) before each chunk's bytes (the previous chunk's CRLF first)
//!   relay: Chunked::scan(buffered) -> how many bytes belong to the body
//!            size line -> data + CRLF (may run past the buffer: pending())
//!            -> ... -> "0" -> trailer lines -> empty line: done
//! ```
//! Data is never looked at: a relay moves `pending()` bytes without scanning
//! them, and the scanner only reads size and trailer lines.

use std::io::Write;

/// A chunk's size line, after the previous chunk's CRLF when one is open;
/// into a Vec, or a slice on the stack (at most 20 bytes: a step of the
/// form POST allocates nothing).
pub fn size_line(out: &mut impl Write, crlf: bool, n: usize) {
    if crlf {
        let _ = out.write_all(b"\r\n");
    }
    let _ = write!(out, "{n:x}\r\n");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("bad chunk size from engine")]
    BadSize,
}

/// Where a relayed chunked body is in its framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum At {
    #[default]
    Size,
    /// Data bytes and their CRLF still to come.
    Data(u64),
    Trailer,
    Done,
}

/// Follows a chunked body's framing through the bytes relayed.
#[derive(Debug, Default)]
pub struct Chunked {
    at: At,
    /// Data bytes announced so far (the body without its framing).
    data: u64,
}

impl Chunked {
    /// How many bytes at the start of `buf` belong to the body, as far as
    /// they can be told from `buf`: a size or trailer line cut by its end
    /// stays for the next call, with more bytes behind it. Stops where the
    /// body ends.
    pub fn scan(&mut self, buf: &[u8]) -> Result<usize, ChunkError> {
        let mut at = 0;
        loop {
            match self.at {
                At::Size => match httparse::parse_chunk_size(&buf[at..]) {
                    Ok(httparse::Status::Complete((line, size))) => {
                        at += line;
                        self.data = self.data.saturating_add(size);
                        self.at = if size == 0 {
                            At::Trailer
                        } else {
                            At::Data(size.saturating_add(2))
                        };
                    }
                    Ok(httparse::Status::Partial) => return Ok(at),
                    Err(_) => return Err(ChunkError::BadSize),
                },
                At::Data(left) => {
                    let take = left.min((buf.len() - at) as u64);
                    at += take as usize;
                    if take < left {
                        self.at = At::Data(left - take);
                        return Ok(at);
                    }
                    self.at = At::Size;
                }
                At::Trailer => match memchr::memmem::find(&buf[at..], b"\r\n") {
                    Some(0) => {
                        self.at = At::Done;
                        return Ok(at + 2);
                    }
                    Some(end) => at += end + 2,
                    None => return Ok(at),
                },
                At::Done => return Ok(at),
            }
        }
    }

    /// Bytes of the current chunk (data and CRLF) past what was scanned: the
    /// relay may move them without looking, then call `skip`.
    pub fn pending(&self) -> u64 {
        match self.at {
            At::Data(left) => left,
            _ => 0,
        }
    }

    /// `n` of the pending bytes went by unscanned.
    pub fn skip(&mut self, n: u64) {
        if let At::Data(left) = self.at {
            self.at = if n >= left {
                At::Size
            } else {
                At::Data(left - n)
            };
        }
    }

    pub fn done(&self) -> bool {
        self.at == At::Done
    }

    /// The body's length without its framing, so far.
    pub fn data_len(&self) -> u64 {
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nExpires: never\r\n\r\n";

    #[test]
    fn size_lines() {
        let mut out = Vec::new();
        size_line(&mut out, false, 4096);
        size_line(&mut out, true, 1);
        assert_eq!(out, b"1000\r\n\r\n1\r\n");
        let mut line = [0u8; 20];
        let mut w = &mut line[..];
        size_line(&mut w, true, usize::MAX);
        assert!(w.is_empty(), "the longest line fills 20 bytes exactly");
        assert_eq!(&line, b"\r\nffffffffffffffff\r\n");
    }

    #[test]
    fn a_body_is_followed_to_its_end_however_it_arrives() {
        // Whole, with the next response's bytes behind it.
        let mut c = Chunked::default();
        let mut buf = BODY.to_vec();
        buf.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(c.scan(&buf), Ok(BODY.len()));
        assert!(c.done());
        assert_eq!(c.data_len(), 9);
        // In pieces of every size: the relay keeps what was not taken.
        for step in 1..BODY.len() {
            let mut c = Chunked::default();
            let (mut held, mut fed, mut relayed) = (Vec::new(), 0, 0);
            while !c.done() {
                assert!(fed < BODY.len(), "step {step}: ran out at {relayed}");
                let end = (fed + step).min(BODY.len());
                held.extend_from_slice(&BODY[fed..end]);
                fed = end;
                let n = c.scan(&held).unwrap();
                held.drain(..n);
                relayed += n;
            }
            assert_eq!((relayed, c.data_len()), (BODY.len(), 9), "step {step}");
        }
    }

    #[test]
    fn data_past_the_buffer_is_pending() {
        let mut c = Chunked::default();
        assert_eq!(c.scan(b"10\r\nabc"), Ok(7));
        assert_eq!(c.pending(), 15);
        c.skip(15);
        assert_eq!(c.scan(b"0\r\n\r\n"), Ok(5));
        assert!(c.done());
        assert_eq!(c.data_len(), 16);
    }

    #[test]
    fn a_bad_size_line_is_refused() {
        assert_eq!(Chunked::default().scan(b"zz\r\n"), Err(ChunkError::BadSize));
    }
}
