//! The request-head parser and classifier of the HTTP/1 fast path
//! (`http1::head::parse`): what has been read of a connection -> Partial,
//! Complete(len, fast-path request or None), Other (hyper's), TooLarge.
//!
//! Input: byte 0 picks `max_head` (16 + 16 x b, so TooLarge is reachable),
//! byte 1 a prefix length to check; the rest is what was read.
//!
//! Invariants: Partial and TooLarge are on either side of `max_head`; a
//! Complete head of n bytes has 0 < n <= len and ends its last line, and
//! classifies the same alone and with more bytes after it (pipelined
//! requests or a body); a proper prefix of a Complete head is Partial, or
//! TooLarge at `max_head` bytes or more: never Other, which would hand a
//! slow client's request to the wrong server; a fast-path request is one of
//! GET/HEAD/PUT/POST with an origin-form path, a length on every upload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_proxy::http1::head::{Parsed, Request, parse};

fn same(a: &Parsed, b: &Parsed) -> bool {
    match (a, b) {
        (Parsed::Complete(n, r), Parsed::Complete(m, s)) => n == m && r == s,
        (Parsed::Partial, Parsed::Partial)
        | (Parsed::Other, Parsed::Other)
        | (Parsed::TooLarge, Parsed::TooLarge) => true,
        _ => false,
    }
}

fn check_request(r: &Request) {
    assert!(
        r.path.starts_with('/') && !r.path.contains('?'),
        "path {:?}",
        r.path
    );
    assert_eq!(r.head, r.method == "HEAD");
    match r.method {
        "GET" | "HEAD" => assert!(r.upload.is_none(), "{} with an upload", r.method),
        "PUT" | "POST" => assert!(r.upload.is_some(), "{} without a length", r.method),
        m => panic!("fast path took method {m}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let [sel, cut, buf @ ..] = data else { return };
    let max_head = 16 + 16 * usize::from(*sel);
    let parsed = parse(buf, max_head);
    match &parsed {
        Parsed::Partial => assert!(buf.len() < max_head, "Partial at {} bytes", buf.len()),
        Parsed::TooLarge => assert!(buf.len() >= max_head),
        Parsed::Other => {}
        Parsed::Complete(n, r) => {
            let n = *n;
            assert!(
                0 < n && n <= buf.len(),
                "Complete({n}) of {} bytes",
                buf.len()
            );
            assert_eq!(buf[n - 1], b'\n', "a head ends with its last line");
            if let Some(r) = r {
                check_request(r);
            }
            let alone = parse(&buf[..n], max_head);
            assert!(same(&parsed, &alone), "{parsed:?} vs alone {alone:?}");
            let mut more = buf.to_vec();
            more.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n\x00\xff");
            let with_more = parse(&more, max_head);
            assert!(
                same(&parsed, &with_more),
                "{parsed:?} vs with more {with_more:?}"
            );
            for k in [n - 1, n / 2, usize::from(*cut) % n] {
                match parse(&buf[..k], max_head) {
                    Parsed::Partial => {}
                    Parsed::TooLarge if k >= max_head => {}
                    p => panic!("a prefix of {k} bytes of a whole head of {n}: {p:?}"),
                }
            }
        }
    }
});
