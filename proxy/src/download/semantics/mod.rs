//! Conditional-request and byte-range decisions for GET/HEAD of a stored file.
//!
//! Pure logic: callers hand over raw header bytes plus file metadata and get a [`Plan`]
//! back, so the httparse fast path and the hyper path share one implementation.
//! [`plan`] walks RFC 9110 §13.2.2 (evaluation order) over the parsers next to it:
//!
//! ```text
//!   RequestHeaders -> plan: conditional (§13.1: If-Match, If-Unmodified-Since  -> 412,
//!                                        If-None-Match, If-Modified-Since  -> 304)
//!                           range       (§14: Range, If-Range -> 206 / 416 / 200)
//!   FileMeta, Plan -> headers (§8.8 ETag, Last-Modified; §14.4 Content-Range)
//! ```
//! Trade-offs: dates compare at whole-second precision; Range is evaluated for HEAD
//! exactly as for GET so a HEAD mirrors the headers its GET would get. The parsers are
//! `pub` and take any bytes, so a fuzz target can call them one by one as well as
//! through [`plan`].

mod conditional;
mod headers;
mod range;

use std::time::{SystemTime, UNIX_EPOCH};

pub use conditional::{
    EntityTag, etag_list_matches, if_match_passes, if_none_match_hits, if_range_passes, parse_date,
    parse_entity_tag,
};
pub use headers::content_range;
pub use range::{RangeSpec, parse_range, resolve_range};

/// What the server knows about the stored file; enough to derive validators
/// ([`FileMeta::etag`], [`FileMeta::last_modified`], in `headers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    pub len: u64,
    pub mtime: SystemTime,
    pub inode: u64,
}

/// Raw values of the request headers that matter here, as they came off the wire.
///
/// A header sent on several field lines should be joined with ", " by the caller
/// (RFC 9110 §5.3); for the list-valued If-Match/If-None-Match that is equivalent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestHeaders<'a> {
    pub range: Option<&'a [u8]>,
    pub if_match: Option<&'a [u8]>,
    pub if_none_match: Option<&'a [u8]>,
    pub if_modified_since: Option<&'a [u8]>,
    pub if_unmodified_since: Option<&'a [u8]>,
    pub if_range: Option<&'a [u8]>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// 200 with the whole file
    Full,
    /// 206, bytes start..=end (inclusive), Content-Range "bytes {start}-{end}/{len}"
    Partial { start: u64, end: u64 },
    /// 304 Not Modified (no body)
    NotModified,
    /// 412 Precondition Failed
    PreconditionFailed,
    /// 416 with Content-Range "bytes */{len}"
    RangeNotSatisfiable,
}

/// Decide the response for a GET or HEAD, following RFC 9110 §13.2.2 step by step.
///
/// `is_head` is reserved: ranges are evaluated for HEAD identically to GET and the
/// caller decides whether to send a body.
#[must_use]
pub fn plan(meta: &FileMeta, req: &RequestHeaders<'_>, is_head: bool) -> Plan {
    let _ = is_head;
    let etag = meta.etag();
    let etag = etag.as_bytes();
    let mtime = unix_secs(meta.mtime);

    // Steps 1-2: If-Unmodified-Since only counts when If-Match is absent (§13.1.4).
    let preconditions_hold = match req.if_match {
        Some(v) => if_match_passes(v, etag),
        None => req
            .if_unmodified_since
            .and_then(parse_date)
            .is_none_or(|date| mtime <= date),
    };
    if !preconditions_hold {
        return Plan::PreconditionFailed;
    }

    // Steps 3-4: If-Modified-Since only counts when If-None-Match is absent (§13.1.3).
    let not_modified = match req.if_none_match {
        Some(v) => if_none_match_hits(v, etag),
        None => req
            .if_modified_since
            .and_then(parse_date)
            .is_some_and(|date| mtime <= date),
    };
    if not_modified {
        return Plan::NotModified;
    }

    // Step 5: an unusable Range is ignored (§14.2), and If-Range only means
    // anything alongside a Range we would honour.
    let Some(spec) = req.range.and_then(parse_range) else {
        return Plan::Full;
    };
    if req
        .if_range
        .is_some_and(|v| !if_range_passes(v, etag, mtime))
    {
        return Plan::Full;
    }
    resolve_range(spec, meta.len)
}

/// Whole seconds since the epoch, floored; i128 so pre-epoch times need no special case.
fn unix_secs(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::from(d.as_secs()),
        // Floor rather than truncate toward zero so ordering survives across the epoch.
        Err(e) => {
            let d = e.duration();
            -i128::from(d.as_secs()) - i128::from(d.subsec_nanos() > 0)
        }
    }
}

/// Strip optional whitespace (SP / HTAB), the only padding HTTP allows around values.
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    //! The fixtures every file's tests share, and the tests of [`plan`] itself:
    //! which header wins when several are sent (§13.2.2), and hostile bytes.

    use std::time::Duration;

    use super::*;

    // 2001-09-09T01:46:40Z plus a sub-second part, to exercise whole-second truncation.
    pub(super) const SECS: u64 = 1_000_000_000;
    pub(super) const DATE: &str = "Sun, 09 Sep 2001 01:46:40 GMT";
    pub(super) const DATE_BEFORE: &str = "Sun, 09 Sep 2001 01:46:39 GMT";
    pub(super) const DATE_AFTER: &str = "Sun, 09 Sep 2001 01:46:41 GMT";

    pub(super) fn meta(len: u64) -> FileMeta {
        FileMeta {
            len,
            mtime: UNIX_EPOCH + Duration::new(SECS, 123_456_789),
            inode: 0xabc,
        }
    }

    pub(super) fn get(m: &FileMeta, req: RequestHeaders<'_>) -> Plan {
        let p = plan(m, &req, false);
        // HEAD must decide identically; checking here covers every test case.
        assert_eq!(p, plan(m, &req, true), "HEAD differs from GET for {req:?}");
        p
    }

    pub(super) fn partial(start: u64, end: u64) -> Plan {
        Plan::Partial { start, end }
    }

    #[test]
    fn unix_secs_floors_before_epoch() {
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_millis(1)), -1);
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_secs(2)), -2);
        assert_eq!(unix_secs(UNIX_EPOCH + Duration::from_millis(1999)), 1);
    }

    #[test]
    fn no_headers_is_full() {
        assert_eq!(get(&meta(10), RequestHeaders::default()), Plan::Full);
    }

    // ---- evaluation order ----

    #[test]
    fn if_match_beats_if_none_match_and_range() {
        let m = meta(10);
        let req = RequestHeaders {
            if_match: Some(b"\"other\""),
            if_none_match: Some(b"*"),
            range: Some(b"bytes=0-1"),
            ..Default::default()
        };
        assert_eq!(get(&m, req), Plan::PreconditionFailed);
    }

    #[test]
    fn ius_ignored_when_if_match_present() {
        let m = meta(5);
        let e = m.etag();
        let req = RequestHeaders {
            if_match: Some(e.as_bytes()),
            if_unmodified_since: Some(DATE_BEFORE.as_bytes()),
            ..Default::default()
        };
        assert_eq!(get(&m, req), Plan::Full);
    }

    #[test]
    fn inm_beats_range() {
        let req = RequestHeaders {
            if_none_match: Some(b"*"),
            range: Some(b"bytes=0-1"),
            ..Default::default()
        };
        assert_eq!(get(&meta(5), req), Plan::NotModified);
    }

    #[test]
    fn ims_ignored_when_inm_present() {
        let req = RequestHeaders {
            if_none_match: Some(b"\"other\""),
            if_modified_since: Some(DATE_AFTER.as_bytes()),
            ..Default::default()
        };
        assert_eq!(get(&meta(5), req), Plan::Full);
    }

    #[test]
    fn ius_pass_then_ims_hit() {
        let req = RequestHeaders {
            if_unmodified_since: Some(DATE.as_bytes()),
            if_modified_since: Some(DATE.as_bytes()),
            ..Default::default()
        };
        assert_eq!(get(&meta(5), req), Plan::NotModified);
    }

    // ---- hostile bytes ----

    #[test]
    fn non_utf8_never_panics() {
        let m = meta(10);
        let bad: &[&[u8]] = &[
            b"\xff\xfe",
            b"bytes=\xff-1",
            b"bytes=0-\xc3",
            b"\xc3\xa9bytes=0-1",
            b"\"\xff\"",
            b"W/\"\x80\x81\"",
            b"Sun, 09 Sep 2001 01:46:40 \xff",
            b"\x00\r\n",
        ];
        for &v in bad {
            for req in [
                RequestHeaders {
                    range: Some(v),
                    ..Default::default()
                },
                RequestHeaders {
                    if_match: Some(v),
                    ..Default::default()
                },
                RequestHeaders {
                    if_none_match: Some(v),
                    ..Default::default()
                },
                RequestHeaders {
                    if_modified_since: Some(v),
                    ..Default::default()
                },
                RequestHeaders {
                    if_unmodified_since: Some(v),
                    ..Default::default()
                },
                RequestHeaders {
                    range: Some(b"bytes=0-1"),
                    if_range: Some(v),
                    ..Default::default()
                },
            ] {
                let p = get(&m, req);
                assert!(
                    matches!(p, Plan::Full | Plan::PreconditionFailed),
                    "{req:?} -> {p:?}"
                );
            }
        }
    }
}
