//! A streaming multipart/form-data parser (RFC 7578, RFC 2046 §5.1) that
//! hands out part data as slices of the body's own chunks.
//!
//! ```text
//!   body chunk (Bytes) -> Scanner::feed (pure, synchronous) -> events:
//!     Data(slice of the chunk) | PartEnd | Head(name, filename, type) | End
//!   part data: memmem for "\r\n--boundary"; what may be the start of a
//!     delimiter cut by the chunk's end is held back (a slice, not a copy)
//!     and checked against the next chunk in a scratch of under 2 x its length
//!   after a delimiter: "--" ends the body; else padding, CRLF, then the
//!     part's header block (copied, at most `max_head` bytes), parsed by httparse
//!   Multipart (async): pulls chunks, queues events, next_part() / chunk()
//! ```
//! Written by hand because multer, used before, appends every incoming chunk
//! to a buffer of its own: a memcpy of every upload byte and a reallocation as
//! that buffer grows, most of the CPU sluice's POST spent beyond a proxy that
//! forwards blindly. The preamble is scanned as the data of a part nobody
//! reads, the body prefixed by a virtual "\r\n" so that its first delimiter
//! looks like every other one.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use memchr::memmem;

/// Why a body is not acceptable multipart, or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MultipartError<E> {
    #[error("malformed multipart body: {0}")]
    Malformed(&'static str),
    /// A part's header block, or the preamble, is over the limit.
    #[error("multipart framing exceeds {0} bytes")]
    FramingTooLarge(usize),
    #[error("the body exceeds {0} bytes")]
    TooLarge(u64),
    #[error(transparent)]
    Body(E),
}

/// A part's headers, as far as uploads need them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartHead {
    pub name: Option<String>,
    pub filename: Option<String>,
    /// The Content-Type's essence ("type/subtype"), lower-cased, when it has one.
    pub content_type: Option<String>,
}

/// What the scanner refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    Malformed(&'static str),
    /// A part header block over `max_head`.
    HeadTooLarge,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Data(Bytes),
    PartEnd,
    Head(PartHead),
    End,
}

#[derive(Debug)]
enum State {
    /// In a part's data, or the preamble; `held` may be the start of a delimiter.
    Data { held: Bytes },
    /// Just past a delimiter: "--" (the end) or padding and CRLF come next.
    Delimiter,
    /// Collecting a part's header block into `framing`.
    Headers,
    /// The close delimiter was seen; what follows (the epilogue) is ignored.
    Done,
}

/// The pure core: bytes in, events out.
pub struct Scanner {
    /// "\r\n--" + boundary.
    delimiter: Vec<u8>,
    finder: memmem::Finder<'static>,
    state: State,
    framing: BytesMut,
    /// Where a delimiter cut by a chunk's end is looked for (reused).
    scratch: Vec<u8>,
    max_head: usize,
}

/// Longest run of transport padding accepted after a delimiter.
const MAX_PADDING: usize = 256;
const MAX_PART_HEADERS: usize = 32;

impl Scanner {
    pub fn new(boundary: &str, max_head: usize) -> Self {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        let finder = memmem::Finder::new(&delimiter).into_owned();
        Self {
            delimiter,
            finder,
            state: State::Data {
                held: Bytes::from_static(b"\r\n"),
            },
            framing: BytesMut::new(),
            scratch: Vec::new(),
            max_head,
        }
    }

    pub fn done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Bytes the scanner keeps between two `feed`s: the held-back tail (a
    /// slice of the last chunk, shorter than the delimiter) plus the buffers
    /// it owns (framing, scratch) at their capacity. Bounded by `max_head`
    /// and the boundary's length, whatever the body: the fuzz target
    /// `multipart_split` checks it after every chunk.
    pub fn retained(&self) -> usize {
        let held = match &self.state {
            State::Data { held } => held.len(),
            _ => 0,
        };
        held + self.framing.capacity() + self.scratch.capacity()
    }

    /// Scans one chunk of the body, pushing what it finds to `out`.
    pub fn feed(&mut self, mut c: Bytes, out: &mut Vec<Event>) -> Result<(), Bad> {
        let d = self.delimiter.len();
        while !c.is_empty() {
            match &mut self.state {
                State::Done => return Ok(()),
                State::Data { held } if !held.is_empty() => {
                    // A delimiter may start in `held` (shorter than one) and end in `c`.
                    let h = std::mem::take(held);
                    let take = c.len().min(d - 1);
                    let scratch = &mut self.scratch;
                    scratch.clear();
                    scratch.extend_from_slice(&h);
                    scratch.extend_from_slice(&c[..take]);
                    if let Some(i) = self.finder.find(scratch) {
                        push_prefix(out, &h, &c, i);
                        out.push(Event::PartEnd);
                        c.advance(i + d - h.len());
                        self.state = State::Delimiter;
                    } else if c.len() >= d - 1 {
                        // No delimiter starts in `h`: it is all data.
                        push_data(out, h);
                    } else {
                        // A tiny chunk: all of it is in `scratch`.
                        let keep = partial_suffix(scratch, &self.delimiter);
                        let cut = scratch.len() - keep;
                        push_prefix(out, &h, &c, cut);
                        self.state = State::Data {
                            held: Bytes::copy_from_slice(&scratch[cut..]),
                        };
                        return Ok(());
                    }
                }
                State::Data { held } => {
                    if let Some(i) = self.finder.find(&c) {
                        push_data(out, c.slice(..i));
                        out.push(Event::PartEnd);
                        c.advance(i + d);
                        self.state = State::Delimiter;
                    } else {
                        let cut = c.len() - partial_suffix(&c, &self.delimiter);
                        *held = c.split_off(cut);
                        push_data(out, c);
                        return Ok(());
                    }
                }
                State::Delimiter => {
                    // A few bytes: taken one at a time.
                    let b = c[0];
                    c.advance(1);
                    self.framing.extend_from_slice(&[b]);
                    let f = &self.framing[..];
                    if f == b"--" {
                        self.framing.clear();
                        self.state = State::Done;
                        out.push(Event::End);
                        return Ok(());
                    }
                    if f == b"-" {
                        continue;
                    }
                    if f.ends_with(b"\r\n") {
                        if !f[..f.len() - 2].iter().all(|b| *b == b' ' || *b == b'\t') {
                            return Err(Bad::Malformed("unexpected bytes after a boundary"));
                        }
                        self.framing.clear();
                        self.state = State::Headers;
                    } else if !matches!(b, b' ' | b'\t' | b'\r') || f.len() > MAX_PADDING {
                        return Err(Bad::Malformed("unexpected bytes after a boundary"));
                    }
                }
                State::Headers => {
                    let old = self.framing.len();
                    let room = (self.max_head + 4).saturating_sub(old).min(c.len());
                    self.framing.extend_from_slice(&c[..room]);
                    // An empty block is a lone CRLF; else it ends at CRLF CRLF.
                    let end = if self.framing.starts_with(b"\r\n") {
                        Some(2)
                    } else {
                        memmem::find(&self.framing[old.saturating_sub(3)..], b"\r\n\r\n")
                            .map(|i| old.saturating_sub(3) + i + 4)
                    };
                    match end {
                        Some(e) if e <= self.max_head + 4 => {
                            let head = parse_head(&self.framing[..e]).map_err(Bad::Malformed)?;
                            c.advance(e - old);
                            self.framing.clear();
                            out.push(Event::Head(head));
                            self.state = State::Data { held: Bytes::new() };
                        }
                        // Full and no end in it: only then is the block too long. Judging
                        // by `max_head` alone would refuse, when a chunk ends inside the
                        // final CRLF CRLF, a block that arriving whole is accepted.
                        _ if self.framing.len() >= self.max_head + 4 => {
                            return Err(Bad::HeadTooLarge);
                        }
                        _ => return Ok(()),
                    }
                }
            }
        }
        Ok(())
    }
}

fn push_data(out: &mut Vec<Event>, b: Bytes) {
    if !b.is_empty() {
        out.push(Event::Data(b));
    }
}

/// Pushes bytes `..to` of `h` followed by `c`, as slices of them.
fn push_prefix(out: &mut Vec<Event>, h: &Bytes, c: &Bytes, to: usize) {
    let hl = h.len();
    push_data(out, h.slice(..to.min(hl)));
    if to > hl {
        push_data(out, c.slice(..to - hl));
    }
}

/// The length of the longest suffix of `buf` that is a proper prefix of `delim`.
pub(crate) fn partial_suffix(buf: &[u8], delim: &[u8]) -> usize {
    let max = buf.len().min(delim.len() - 1);
    // Every candidate starts with the delimiter's first byte, '\r'.
    let tail = &buf[buf.len() - max..];
    for (i, _) in tail.iter().enumerate().filter(|(_, b)| **b == delim[0]) {
        if delim.starts_with(&tail[i..]) {
            return max - i;
        }
    }
    0
}

fn parse_head(block: &[u8]) -> Result<PartHead, &'static str> {
    let mut hs = [httparse::EMPTY_HEADER; MAX_PART_HEADERS];
    let headers = match httparse::parse_headers(block, &mut hs) {
        Ok(httparse::Status::Complete((_, h))) => h,
        Ok(httparse::Status::Partial) => return Err("unfinished part headers"),
        Err(httparse::Error::TooManyHeaders) => return Err("too many part headers"),
        Err(_) => return Err("invalid part headers"),
    };
    let mut head = PartHead::default();
    for h in headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        if h.name.eq_ignore_ascii_case("content-disposition") {
            for (k, v) in params(&value) {
                if k.eq_ignore_ascii_case("name") {
                    head.name = Some(v);
                } else if k.eq_ignore_ascii_case("filename") {
                    head.filename = Some(v);
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-type") {
            let essence = crate::filters::before_params(&value);
            if essence.contains('/') {
                head.content_type = Some(essence.to_ascii_lowercase());
            }
        }
    }
    Ok(head)
}

/// The boundary of a `multipart/form-data; boundary=...` Content-Type
/// (RFC 2046: 1 to 70 characters).
pub fn boundary(content_type: &str) -> Option<String> {
    let essence = crate::filters::before_params(content_type);
    if !essence.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params(content_type)
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v)
        .filter(|b| (1..=70).contains(&b.len()) && !b.contains(['\r', '\n']))
}

/// `key=value` parameters after a Content-Disposition's type; values quoted
/// (with backslash escapes) or bare, as browsers and curl send them.
fn params(v: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = match v.find(';') {
        Some(i) => &v[i + 1..],
        None => return out,
    };
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().to_string();
        let after = rest[eq + 1..].trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, ch)) = chars.next() {
                match ch {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            value.push(e);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &q[end.min(q.len())..])
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.push((key, value));
        rest = next;
    }
    out
}

/// The async side: pulls the body's chunks through a `Scanner`.
pub struct Multipart<S> {
    body: S,
    scanner: Scanner,
    events: VecDeque<Event>,
    scratch: Vec<Event>,
    /// Preamble and unread data of skipped parts count against this.
    max_skip: usize,
    limit: u64,
    fed: u64,
    started: bool,
}

impl<S, E> Multipart<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    /// `max_framing`: largest part header block, and largest preamble;
    /// `limit`: the whole body.
    pub fn new(body: S, boundary: &str, max_framing: usize, limit: u64) -> Self {
        Self {
            body,
            scanner: Scanner::new(boundary, max_framing),
            events: VecDeque::new(),
            scratch: Vec::new(),
            max_skip: max_framing,
            limit,
            fed: 0,
            started: false,
        }
    }

    /// Reads the next chunk into events; false at the end of the body.
    async fn more(&mut self) -> Result<bool, MultipartError<E>> {
        let chunk = loop {
            match self.body.next().await {
                Some(Ok(b)) if b.is_empty() => continue,
                Some(Ok(b)) => break b,
                Some(Err(e)) => return Err(MultipartError::Body(e)),
                None => return Ok(false),
            }
        };
        self.fed += chunk.len() as u64;
        if self.fed > self.limit {
            return Err(MultipartError::TooLarge(self.limit));
        }
        let max = self.scanner.max_head;
        self.scanner
            .feed(chunk, &mut self.scratch)
            .map_err(|b| match b {
                Bad::HeadTooLarge => MultipartError::FramingTooLarge(max),
                Bad::Malformed(m) => MultipartError::Malformed(m),
            })?;
        self.events.extend(self.scratch.drain(..));
        Ok(true)
    }

    fn ended_early(&self) -> MultipartError<E> {
        MultipartError::Malformed(if self.started {
            "the body ended before the closing boundary"
        } else {
            "no boundary found"
        })
    }

    /// The next part's headers; None after the close delimiter. Whatever is
    /// left of the current part (or the preamble) is skipped.
    pub async fn next_part(&mut self) -> Result<Option<PartHead>, MultipartError<E>> {
        let mut skipped = 0usize;
        loop {
            match self.events.pop_front() {
                Some(Event::Head(h)) => {
                    self.started = true;
                    return Ok(Some(h));
                }
                Some(Event::End) => return Ok(None),
                Some(Event::Data(b)) => {
                    if !self.started {
                        skipped += b.len();
                        if skipped > self.max_skip {
                            return Err(MultipartError::FramingTooLarge(self.max_skip));
                        }
                    }
                }
                Some(Event::PartEnd) => {}
                None => {
                    if self.scanner.done() {
                        return Ok(None);
                    }
                    if !self.more().await? {
                        return Err(self.ended_early());
                    }
                }
            }
        }
    }

    /// The next slice of the current part's data; None at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, MultipartError<E>> {
        loop {
            match self.events.front() {
                Some(Event::Data(_)) => {
                    if let Some(Event::Data(b)) = self.events.pop_front() {
                        return Ok(Some(b));
                    }
                }
                Some(Event::PartEnd) => {
                    self.events.pop_front();
                    return Ok(None);
                }
                Some(_) => return Ok(None),
                None => {
                    if self.scanner.done() {
                        return Ok(None);
                    }
                    if !self.more().await? {
                        return Err(self.ended_early());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "XyZzY-42";

    fn body() -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(b"preamble, ignored\r\n");
        v.extend_from_slice(format!("--{B}\r\n").as_bytes());
        v.extend_from_slice(b"Content-Disposition: form-data; name=\"note\"\r\n\r\n");
        v.extend_from_slice(b"hello\r\n-- not a boundary\r\n--XyZ");
        v.extend_from_slice(format!("\r\n--{B}  \r\n").as_bytes());
        v.extend_from_slice(
            b"content-disposition: form-data; name=\"file\"; filename=\"a \\\"q\\\".png\"\r\n\
              Content-Type: Image/PNG; charset=x\r\n\r\n",
        );
        v.extend((0..3000u32).map(|i| (i * 31 % 253) as u8));
        v.extend_from_slice(
            format!("\r\n--{B}\r\n\r\nheaderless\r\n--{B}--\r\nepilogue").as_bytes(),
        );
        v
    }

    fn expected() -> Vec<(PartHead, Vec<u8>)> {
        vec![
            (
                PartHead {
                    name: Some("note".into()),
                    ..Default::default()
                },
                b"hello\r\n-- not a boundary\r\n--XyZ".to_vec(),
            ),
            (
                PartHead {
                    name: Some("file".into()),
                    filename: Some("a \"q\".png".into()),
                    content_type: Some("image/png".into()),
                },
                (0..3000u32).map(|i| (i * 31 % 253) as u8).collect(),
            ),
            (PartHead::default(), b"headerless".to_vec()),
        ]
    }

    /// Feeds `chunks` and gathers each part's head and data (the preamble dropped).
    fn run(chunks: &[Bytes]) -> Result<Vec<(PartHead, Vec<u8>)>, Bad> {
        let mut s = Scanner::new(B, 1024);
        let mut events = Vec::new();
        for c in chunks {
            s.feed(c.clone(), &mut events)?;
        }
        if !s.done() {
            return Err(Bad::Malformed("not done"));
        }
        let mut parts: Vec<(PartHead, Vec<u8>)> = Vec::new();
        let mut started = false;
        for e in events {
            match e {
                Event::Head(h) => {
                    started = true;
                    parts.push((h, Vec::new()));
                }
                Event::Data(b) if started => parts.last_mut().unwrap().1.extend_from_slice(&b),
                Event::Data(_) | Event::PartEnd | Event::End => {}
            }
        }
        Ok(parts)
    }

    #[test]
    fn every_split_point_gives_the_same_parts() {
        let whole = Bytes::from(body());
        assert_eq!(run(std::slice::from_ref(&whole)).unwrap(), expected());
        for at in 0..whole.len() {
            let chunks = [whole.slice(..at), whole.slice(at..)];
            assert_eq!(run(&chunks).unwrap(), expected(), "split at {at}");
        }
        // One byte at a time, and chunks of 7.
        for size in [1, 7] {
            let chunks: Vec<Bytes> = (0..whole.len())
                .step_by(size)
                .map(|i| whole.slice(i..(i + size).min(whole.len())))
                .collect();
            assert_eq!(run(&chunks).unwrap(), expected(), "chunks of {size}");
        }
    }

    #[test]
    fn data_is_not_copied() {
        let whole = Bytes::from(body());
        let (a, b) = (whole.slice(..2000), whole.slice(2000..));
        let mut s = Scanner::new(B, 1024);
        let mut events = Vec::new();
        s.feed(a.clone(), &mut events).unwrap();
        s.feed(b.clone(), &mut events).unwrap();
        let inside = |x: &Bytes| {
            [&a, &b].iter().any(|c| {
                let r = c.as_ptr_range();
                r.contains(&x.as_ptr()) || (x.is_empty())
            })
        };
        let big: Vec<&Bytes> = events
            .iter()
            .filter_map(|e| match e {
                Event::Data(x) if x.len() > 64 => Some(x),
                _ => None,
            })
            .collect();
        assert!(!big.is_empty());
        assert!(big.iter().all(|x| inside(x)), "a data slice was copied");
    }

    #[test]
    fn bad_bodies() {
        let feed = |body: &[u8]| {
            let mut s = Scanner::new(B, 64);
            let mut ev = Vec::new();
            s.feed(Bytes::copy_from_slice(body), &mut ev)
                .map(|()| s.done())
        };
        // No boundary at all: never done.
        assert_eq!(feed(b"this is not a multipart body at all"), Ok(false));
        assert_eq!(
            feed(format!("--{B}x\r\n").as_bytes()),
            Err(Bad::Malformed("unexpected bytes after a boundary"))
        );
        let big = format!("--{B}\r\nX: {}\r\n\r\n", "y".repeat(100));
        assert_eq!(feed(big.as_bytes()), Err(Bad::HeadTooLarge));
        assert_eq!(
            feed(format!("--{B}\r\nno colon here\r\n\r\n").as_bytes()),
            Err(Bad::Malformed("invalid part headers"))
        );
        // Truncated inside a part: not done.
        assert_eq!(feed(format!("--{B}\r\n\r\nabc").as_bytes()), Ok(false));
    }

    /// Found by the fuzz target `multipart_split` (corpus file
    /// `regression-head-limit-cut`): a 18-byte header block, within a
    /// `max_head` of 16 plus its CRLF CRLF, was refused when cut before its end.
    #[test]
    fn a_head_at_the_limit_is_accepted_however_it_is_cut() {
        let body = Bytes::from_static(b"--q\r\nAb: 0123456789\r\n\r\nx\r\n--q--");
        for at in 0..=body.len() {
            let mut s = Scanner::new("q", 16);
            let mut events = Vec::new();
            s.feed(body.slice(..at), &mut events).unwrap();
            s.feed(body.slice(at..), &mut events).unwrap();
            assert!(s.done(), "cut at {at}");
            assert_eq!(events[1], Event::Head(PartHead::default()), "cut at {at}");
        }
    }

    #[test]
    fn disposition_params() {
        assert_eq!(
            params(r#"form-data; name=file; filename="x; y.txt""#),
            vec![
                ("name".to_string(), "file".to_string()),
                ("filename".to_string(), "x; y.txt".to_string())
            ]
        );
        assert_eq!(
            params("form-data;name=\"你好\"; FILENAME=\"a.png\""),
            vec![
                ("name".to_string(), "你好".to_string()),
                ("FILENAME".to_string(), "a.png".to_string())
            ]
        );
        assert!(params("form-data").is_empty());
    }

    #[test]
    fn boundaries() {
        assert_eq!(
            boundary("multipart/form-data; boundary=----abc").as_deref(),
            Some("----abc")
        );
        assert_eq!(
            boundary("Multipart/Form-Data; charset=x; Boundary=\"a b\"").as_deref(),
            Some("a b")
        );
        assert_eq!(boundary("multipart/form-data"), None);
        assert_eq!(boundary("multipart/form-data; boundary="), None);
        assert_eq!(boundary("text/plain; boundary=x"), None);
    }

    #[test]
    fn partial_suffixes() {
        let d = b"\r\n--ab";
        assert_eq!(partial_suffix(b"xx\r\n-", d), 3);
        assert_eq!(partial_suffix(b"xx\r", d), 1);
        assert_eq!(partial_suffix(b"xx\r\n--a", d), 5);
        assert_eq!(
            partial_suffix(b"xx\r\n--ab", d),
            0,
            "a whole delimiter is found, not held"
        );
        assert_eq!(partial_suffix(b"\rx", d), 0);
        assert_eq!(partial_suffix(b"", d), 0);
    }
}
