//! Response heads written into a caller's buffer, to go out in one write.
//!
//! ```text
//!   status_line -> push_header / push_number ... -> finish_head (Date, Connection: close)
//!   reject / json: a whole answer (head and body) in one go, with the
//!   caller's extra headers (the gate's CORS headers)
//! ```
//! Numbers go through itoa and the Date is formatted once a second per
//! thread: both run for every answer, and a small PUT's cost is counted in
//! instructions (`bench/scripts/callgrind-small-put`).

use std::cell::RefCell;
use std::io::Write;
use std::time::SystemTime;

use http::StatusCode;

use crate::error::Reject;

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

pub fn status_line(out: &mut Vec<u8>, status: u16) {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A header whose value is a number, written without a String or the
/// formatting machinery in between (both run for every answer).
pub fn push_number(out: &mut Vec<u8>, k: &str, v: u64) {
    push_header(out, k, itoa::Buffer::new().format(v));
}

pub fn push_header(out: &mut Vec<u8>, k: &str, v: &str) {
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(v.as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub fn push_headers(out: &mut Vec<u8>, headers: &[(&str, &str)]) {
    for (k, v) in headers {
        push_header(out, k, v);
    }
}

/// Date, `connection: close` unless kept alive, and the blank line.
pub fn finish_head(out: &mut Vec<u8>, keep_alive: bool) {
    out.extend_from_slice(b"date: ");
    http_date(out);
    out.extend_from_slice(b"\r\n");
    if !keep_alive {
        push_header(out, "connection", "close");
    }
    out.extend_from_slice(b"\r\n");
}

/// A whole answer with a JSON body (a 201's list of stored objects).
pub fn json(out: &mut Vec<u8>, status: u16, body: &[u8], keep_alive: bool, extra: &[(&str, &str)]) {
    out.clear();
    status_line(out, status);
    push_headers(out, extra);
    push_header(out, "content-type", "application/json");
    push_number(out, "content-length", body.len() as u64);
    finish_head(out, keep_alive);
    out.extend_from_slice(body);
}

/// A refusal: its status, its headers (Allow, Retry-After...), the caller's
/// extra ones and its JSON body.
pub fn reject(out: &mut Vec<u8>, r: &Reject, keep_alive: bool, extra: &[(&str, &str)]) {
    let body = r.body();
    out.clear();
    status_line(out, r.status().as_u16());
    for (k, v) in r.headers() {
        push_header(out, k, &v);
    }
    push_headers(out, extra);
    push_header(out, "content-type", "application/json");
    push_number(out, "content-length", body.len() as u64);
    finish_head(out, keep_alive);
    out.extend_from_slice(&body);
}

/// Writes the current IMF-fixdate, formatted once per second per thread.
fn http_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((0, Vec::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs || text.is_empty() {
            text.clear();
            let _ = write!(text, "{}", httpdate::HttpDate::from(now));
            *at = secs;
        }
        out.extend_from_slice(text);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head up to the Date header's value, which changes every second.
    fn without_date(out: &[u8]) -> String {
        let s = String::from_utf8(out.to_vec()).unwrap();
        let (before, after) = s.split_once("date: ").unwrap();
        let (date, rest) = after.split_once("\r\n").unwrap();
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        format!("{before}date: -\r\n{rest}")
    }

    #[test]
    fn heads_are_written_whole() {
        let mut out = Vec::new();
        status_line(&mut out, 206);
        push_header(&mut out, "content-range", "bytes 0-1/10");
        push_number(&mut out, "content-length", 2);
        finish_head(&mut out, true);
        assert_eq!(
            without_date(&out),
            "HTTP/1.1 206 Partial Content\r\ncontent-range: bytes 0-1/10\r\ncontent-length: 2\r\ndate: -\r\n\r\n"
        );
        out.clear();
        status_line(&mut out, 599);
        finish_head(&mut out, false);
        assert_eq!(
            without_date(&out),
            "HTTP/1.1 599 \r\ndate: -\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn answers_carry_their_json_body() {
        let mut out = b"left over".to_vec();
        json(&mut out, 201, br#"{"objects":[]}"#, true, &[]);
        assert_eq!(
            without_date(&out),
            "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 14\r\ndate: -\r\n\r\n{\"objects\":[]}"
        );
        let r = Reject::MethodNotAllowed {
            method: "DELETE".into(),
            allow: "GET, HEAD, POST, PUT",
        };
        reject(&mut out, &r, false, &[("vary", "Origin")]);
        let text = without_date(&out);
        let body = String::from_utf8(r.body()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\nallow: GET, HEAD, POST, PUT\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nvary: Origin\r\n"), "{text}");
        assert!(
            text.ends_with(&format!("connection: close\r\n\r\n{body}")),
            "{text}"
        );
        assert!(text.contains(&format!("content-length: {}\r\n", body.len())));
    }
}
