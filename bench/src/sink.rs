//! The upload sink of the peer benchmark: an HTTP/1.1 server that reads every
//! request body to its end, drops it, and only then answers.
//!
//! ```text
//!   accept -> thread per connection (keep-alive):
//!     head (httparse) -> "Expect: 100-continue"? -> 100 Continue
//!     body: Content-Length | chunked, read into one reused buffer, counted
//!     -> 201 {"bytes": N}   (N: body bytes, so the bench checks nothing was lost)
//! ```
//! Real and cheap: blocking reads into a 256 KiB buffer, no disk, so the
//! backend costs each proxy the same and little. nginx's WebDAV PUT would
//! write to disk, and `return 201` answers before the body is read.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

const BUF: usize = 256 * 1024;
const MAX_HEAD: usize = 64 * 1024;

/// Serves forever on `listener`.
pub fn serve(listener: TcpListener) -> io::Result<()> {
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        thread::spawn(move || {
            let _ = connection(stream);
        });
    }
    Ok(())
}

/// Bytes read from the socket but not yet consumed.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Conn {
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads more; false at end of stream.
    fn fill(&mut self) -> io::Result<bool> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
        let n = self.stream.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n > 0)
    }

    /// Consumes and drops `n` body bytes.
    fn discard(&mut self, mut n: u64) -> io::Result<()> {
        while n > 0 {
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
                if !self.fill()? {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            let take = (self.end - self.start).min(usize::try_from(n).unwrap_or(usize::MAX));
            self.start += take;
            n -= take as u64;
        }
        Ok(())
    }

    /// Consumes a CRLF-terminated line (chunk sizes, trailers); returns its length.
    fn line(&mut self) -> io::Result<usize> {
        loop {
            if let Some(i) = self.pending().windows(2).position(|w| w == b"\r\n") {
                self.start += i + 2;
                return Ok(i);
            }
            if !self.fill()? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

struct Head {
    length: Option<u64>,
    chunked: bool,
    expect_continue: bool,
    close: bool,
}

fn parse_head(bytes: &[u8]) -> Result<Option<(usize, Head)>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(bytes)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let mut h = Head {
        length: None,
        chunked: false,
        expect_continue: false,
        close: req.version == Some(0),
    };
    for x in req.headers.iter() {
        let v = String::from_utf8_lossy(x.value).trim().to_ascii_lowercase();
        match x.name.to_ascii_lowercase().as_str() {
            "content-length" => h.length = v.parse().ok(),
            "transfer-encoding" => h.chunked = v.ends_with("chunked"),
            "expect" => h.expect_continue = v == "100-continue",
            "connection" => h.close = v.split(',').any(|t| t.trim() == "close"),
            _ => {}
        }
    }
    Ok(Some((n, h)))
}

fn connection(stream: TcpStream) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut c = Conn {
        stream,
        buf: vec![0; BUF],
        start: 0,
        end: 0,
    };
    loop {
        let (n, head) = loop {
            match parse_head(c.pending()) {
                Ok(Some(x)) => break x,
                Ok(None) if c.pending().len() < MAX_HEAD => {
                    if !c.fill()? {
                        return Ok(());
                    }
                }
                _ => {
                    c.stream
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")?;
                    return Ok(());
                }
            }
        };
        c.start += n;
        if head.expect_continue {
            c.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let mut bytes = 0u64;
        if head.chunked {
            loop {
                let len = c.line()?;
                let line = &c.buf[c.start - len - 2..c.start - 2];
                let size = match httparse::parse_chunk_size(&[line, b"\r\n"].concat()) {
                    Ok(httparse::Status::Complete((_, s))) => s,
                    _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "chunk size")),
                };
                if size == 0 {
                    // Trailers, then the empty line.
                    while c.line()? > 0 {}
                    break;
                }
                c.discard(size)?;
                bytes += size;
                if c.line()? != 0 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "chunk end"));
                }
            }
        } else if let Some(n) = head.length {
            c.discard(n)?;
            bytes = n;
        }
        let body = format!("{{\"bytes\":{bytes}}}");
        let conn = if head.close {
            "connection: close\r\n"
        } else {
            ""
        };
        write!(
            c.stream,
            "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{conn}\r\n{body}",
            body.len()
        )?;
        if head.close {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    fn answer(r: &mut io::BufReader<TcpStream>) -> String {
        let mut len = 0;
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        loop {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            if l == "\r\n" {
                break;
            }
            if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        format!("{} {}", status.trim(), String::from_utf8(body).unwrap())
    }

    #[test]
    fn counts_length_and_chunked_bodies_on_one_connection() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || serve(l));
        let mut s = TcpStream::connect(addr).unwrap();
        let mut r = io::BufReader::new(s.try_clone().unwrap());
        let big = vec![7u8; 1_000_000];
        write!(
            s,
            "PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            big.len()
        )
        .unwrap();
        s.write_all(&big).unwrap();
        assert_eq!(answer(&mut r), "HTTP/1.1 201 Created {\"bytes\":1000000}");
        s.write_all(b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
            .unwrap();
        let mut cont = String::new();
        r.read_line(&mut cont).unwrap();
        assert_eq!(cont, "HTTP/1.1 100 Continue\r\n");
        r.read_line(&mut cont).unwrap();
        s.write_all(b"5\r\nhello\r\n10;x=y\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n")
            .unwrap();
        assert_eq!(answer(&mut r), "HTTP/1.1 201 Created {\"bytes\":21}");
    }
}
