//! Request heads: read, classified, and what the fast path needs copied out.
//!
//! ```text
//!   bytes so far -> parse(buf, max_head):
//!     empty or a partial head under max_head   -> Partial (read more)
//!     "PRI " (h2c preface), not an upper-case
//!     method letter, or a head httparse refuses -> Other (hyper's to serve)
//!     a partial head of max_head bytes or more  -> TooLarge (431)
//!     a whole head of len bytes                 -> Complete(len, Some(request)) when the fast
//!                                                  path takes it, Complete(len, None) for hyper
//! ```
//! The fast path takes plain HTTP/1.1 GET/HEAD without a body, and PUT/POST
//! with one Content-Length; anything else (HTTP/1.0, chunked, upgrades,
//! absolute-form targets, other methods) goes to hyper with the bytes read,
//! so the rare shapes of HTTP are served by a library that knows them all.

/// What a buffer holds so far.
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per request and moved out at once; a Box would be an allocation per request"
)]
#[derive(Debug)]
pub enum Parsed {
    /// No whole head yet: read more.
    Partial,
    /// A whole head of `len` bytes, and what the fast path needs of it (None:
    /// hyper's to serve), taken from the one parse of it.
    Complete(usize, Option<Request>),
    /// Not a request head the fast path reads: let hyper have the bytes.
    Other,
    /// `max_head` bytes and still no end of the head.
    TooLarge,
}

/// Classifies what has been read of a connection's next request.
pub fn parse(buf: &[u8], max_head: usize) -> Parsed {
    let Some(first) = buf.first() else {
        return Parsed::Partial;
    };
    // Upper-case method letters start every HTTP/1 request; "PRI " is the h2c preface.
    if buf.starts_with(b"PRI ") || !first.is_ascii_uppercase() {
        return Parsed::Other;
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => Parsed::Complete(n, Request::from_httparse(&req)),
        Ok(httparse::Status::Partial) if buf.len() >= max_head => Parsed::TooLarge,
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(_) => Parsed::Other,
    }
}

/// The parts of a request head the fast path needs, copied out of the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub head: bool,
    /// A PUT or POST with a Content-Length: the body's length and whether it
    /// waits for `100 Continue`.
    pub upload: Option<(u64, bool)>,
    pub content_type: Option<Vec<u8>>,
    pub method: &'static str,
    pub path: String,
    /// The target's query (after `?`), when it has one: a signed URL's parameters.
    pub query: Option<String>,
    pub host: Option<String>,
    pub keep_alive: bool,
    pub authorization: Option<Vec<u8>>,
    pub api_key: Option<Vec<u8>>,
    pub range: Option<Vec<u8>>,
    pub if_match: Option<Vec<u8>>,
    pub if_none_match: Option<Vec<u8>>,
    pub if_modified_since: Option<Vec<u8>>,
    pub if_unmodified_since: Option<Vec<u8>>,
    pub if_range: Option<Vec<u8>>,
    /// `Origin`: decides the CORS headers of the answer (a preflight is an
    /// OPTIONS, which hyper serves).
    pub origin: Option<Vec<u8>>,
}

impl Request {
    /// What the fast path needs of a whole parsed head. None when hyper should
    /// serve it: not GET/HEAD/PUT/POST, not HTTP/1.1, a GET with a body, a PUT
    /// or POST without Content-Length, an upgrade.
    pub fn from_httparse(req: &httparse::Request<'_, '_>) -> Option<Self> {
        if req.version != Some(1) {
            return None;
        }
        let (head, method) = match req.method? {
            "GET" => (false, "GET"),
            "HEAD" => (true, "HEAD"),
            "PUT" => (false, "PUT"),
            "POST" => (false, "POST"),
            _ => return None,
        };
        let upload = matches!(method, "PUT" | "POST");
        let mut length = None;
        let mut expect_continue = false;
        let target = req.path?;
        if !target.starts_with('/') {
            return None; // absolute-form or asterisk: rare, hyper handles them
        }
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (target.to_string(), None),
        };
        let mut r = Request {
            head,
            upload: None,
            content_type: None,
            method,
            path,
            query,
            host: None,
            keep_alive: true,
            authorization: None,
            api_key: None,
            range: None,
            if_match: None,
            if_none_match: None,
            if_modified_since: None,
            if_unmodified_since: None,
            if_range: None,
            origin: None,
        };
        for h in req.headers.iter() {
            let v = h.value;
            let name = h.name;
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            if is("content-length") {
                let n: u64 = std::str::from_utf8(v).ok()?.trim().parse().ok()?;
                if length.replace(n).is_some_and(|m| m != n) || (n != 0 && !upload) {
                    return None;
                }
            } else if is("expect") {
                if !upload || !v.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                    return None;
                }
                expect_continue = true;
            } else if is("transfer-encoding") || is("upgrade") {
                return None;
            } else if is("content-type") {
                r.content_type = Some(v.to_vec());
            } else if is("connection") {
                if v.split(|b| *b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
                {
                    r.keep_alive = false;
                }
            } else if is("host") {
                r.host = std::str::from_utf8(v).ok().map(str::to_string);
            } else if is("authorization") {
                r.authorization = Some(v.to_vec());
            } else if is("x-api-key") {
                r.api_key = Some(v.to_vec());
            } else if is("range") {
                r.range = Some(v.to_vec());
            } else if is("if-match") {
                r.if_match = Some(v.to_vec());
            } else if is("if-none-match") {
                r.if_none_match = Some(v.to_vec());
            } else if is("if-modified-since") {
                r.if_modified_since = Some(v.to_vec());
            } else if is("if-unmodified-since") {
                r.if_unmodified_since = Some(v.to_vec());
            } else if is("if-range") {
                r.if_range = Some(v.to_vec());
            } else if is("origin") {
                r.origin = Some(v.to_vec());
            }
        }
        if upload {
            r.upload = Some((length?, expect_continue));
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast request of a whole head in bytes.
    fn fast(bytes: &[u8]) -> Option<Request> {
        match parse(bytes, 64 * 1024) {
            Parsed::Complete(n, r) => {
                assert_eq!(n, bytes.len());
                r
            }
            other => panic!("not a whole head: {other:?}"),
        }
    }

    #[test]
    fn fast_path_takes_plain_gets_and_sized_uploads_only() {
        let r = fast(b"GET /files/a?x=1 HTTP/1.1\r\nHost: h\r\nRange: bytes=0-1\r\n\r\n").unwrap();
        assert_eq!(r.origin, None);
        assert_eq!(r.path, "/files/a");
        assert_eq!(r.query.as_deref(), Some("x=1"));
        assert_eq!(r.host.as_deref(), Some("h"));
        assert_eq!(r.range.as_deref(), Some(&b"bytes=0-1"[..]));
        assert!(r.keep_alive && !r.head);
        assert!(
            !fast(b"HEAD / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        let put = fast(
            b"PUT /f/a.bin HTTP/1.1\r\nContent-Length: 7\r\nExpect: 100-continue\r\nContent-Type: image/png\r\n\r\n",
        )
        .unwrap();
        assert_eq!(put.upload, Some((7, true)));
        let r = fast(b"GET /f/a HTTP/1.1\r\norigin: https://a.example\r\n\r\n").unwrap();
        assert_eq!(r.origin.as_deref(), Some(&b"https://a.example"[..]));
        assert_eq!(put.content_type.as_deref(), Some(&b"image/png"[..]));
        let post = fast(
            b"POST /f/ HTTP/1.1\r\nContent-Length: 9\r\nContent-Type: multipart/form-data; boundary=x\r\n\r\n",
        )
        .unwrap();
        assert_eq!((post.method, post.upload), ("POST", Some((9, false))));
        for not_fast in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"DELETE / HTTP/1.1\r\n\r\n",
            b"PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"PUT /a HTTP/1.1\r\n\r\n",
            b"PUT /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"PUT /a HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"PUT /a HTTP/1.1\r\nContent-Length: 1\r\nExpect: teapot\r\n\r\n",
            b"GET /a HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"GET http://h/ HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                fast(not_fast).is_none(),
                "{:?}",
                String::from_utf8_lossy(not_fast)
            );
        }
    }

    #[test]
    fn classifies_what_has_been_read() {
        let head = b"GET /f/a HTTP/1.1\r\nHost: h\r\n\r\n";
        assert!(matches!(parse(b"", 64), Parsed::Partial));
        for cut in 1..head.len() {
            assert!(
                matches!(parse(&head[..cut], 1024), Parsed::Partial),
                "prefix of {cut} bytes"
            );
        }
        // The next request's bytes after a head do not change it.
        let mut two = head.to_vec();
        two.extend_from_slice(b"PUT /x HTTP/1.1\r\n");
        assert!(matches!(parse(&two, 1024), Parsed::Complete(n, Some(_)) if n == head.len()));
        assert!(matches!(
            parse(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 1024),
            Parsed::Other
        ));
        assert!(matches!(
            parse(b"get / HTTP/1.1\r\n\r\n", 1024),
            Parsed::Other
        ));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 1024),
            Parsed::Other
        ));
        assert!(matches!(parse(&head[..20], 20), Parsed::TooLarge));
        assert!(matches!(parse(&head[..19], 20), Parsed::Partial));
        // 64 headers fit; the 65th sends the request to hyper.
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..65 {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&many, 1 << 20), Parsed::Other));
    }
}
