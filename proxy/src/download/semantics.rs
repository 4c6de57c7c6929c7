//! Conditional-request and byte-range decisions for GET/HEAD of a stored file.
//!
//! Pure logic: callers hand over raw header bytes plus file metadata and get a [`Plan`]
//! back, so the httparse fast path and the hyper path share one implementation.
//! Follows RFC 9110 §8.8 (validators), §13.1 (preconditions), §13.2.2 (evaluation order)
//! and §14 (Range, If-Range, Content-Range). Trade-offs: only a single `bytes` range is
//! served (multi-range requests get 200, never multipart/byteranges); malformed or
//! unknown-unit Range headers are ignored rather than rejected; a malformed entity-tag
//! list matches nothing; dates compare at whole-second precision; Range is evaluated for
//! HEAD exactly as for GET so a HEAD mirrors the headers its GET would get.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the server knows about the stored file; enough to derive validators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    pub len: u64,
    pub mtime: SystemTime,
    pub inode: u64,
}

impl FileMeta {
    /// Strong validator: format "\"{inode:x}-{len:x}-{mtime_nanos_since_epoch:x}\"" (quoted).
    ///
    /// Nanosecond mtime makes a rewrite within the same second still change the tag,
    /// which is what lets us call it strong. Pre-epoch mtimes use 0 for that part.
    #[must_use]
    pub fn etag(&self) -> String {
        let nanos = self
            .mtime
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("\"{:x}-{:x}-{:x}\"", self.inode, self.len, nanos)
    }

    /// IMF-fixdate of mtime (`httpdate::fmt_http_date`).
    ///
    /// Clamped to 1970..=9999 because httpdate panics outside that span.
    #[must_use]
    pub fn last_modified(&self) -> String {
        httpdate::fmt_http_date(clamp_for_http_date(self.mtime))
    }
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

/// Content-Range value for a plan, if that status carries one.
#[must_use]
pub fn content_range(plan: &Plan, len: u64) -> Option<String> {
    match plan {
        Plan::Partial { start, end } => Some(format!("bytes {start}-{end}/{len}")),
        Plan::RangeNotSatisfiable => Some(format!("bytes */{len}")),
        Plan::Full | Plan::NotModified | Plan::PreconditionFailed => None,
    }
}

/// Latest instant an IMF-fixdate can show: 9999-12-31T23:59:59Z.
const MAX_HTTP_DATE_SECS: u64 = 253_402_300_799;

fn clamp_for_http_date(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d.as_secs() <= MAX_HTTP_DATE_SECS => t,
        Ok(_) => UNIX_EPOCH + Duration::from_secs(MAX_HTTP_DATE_SECS),
        Err(_) => UNIX_EPOCH,
    }
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

/// HTTP-date (any of the three §5.6.7 formats) as whole epoch seconds; None if unusable.
fn parse_date(raw: &[u8]) -> Option<i128> {
    let s = std::str::from_utf8(trim_ows(raw)).ok()?;
    httpdate::parse_http_date(s).ok().map(unix_secs)
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

fn if_match_passes(raw: &[u8], etag: &[u8]) -> bool {
    let v = trim_ows(raw);
    // "*" only asks whether a current representation exists; we are serving one.
    v == b"*" || etag_list_matches(v, etag, true) == Some(true)
}

fn if_none_match_hits(raw: &[u8], etag: &[u8]) -> bool {
    let v = trim_ows(raw);
    v == b"*" || etag_list_matches(v, etag, false) == Some(true)
}

/// If-Range holds for a strong, equal entity-tag or an HTTP-date equal to mtime (§13.1.5).
fn if_range_passes(raw: &[u8], etag: &[u8], mtime: i128) -> bool {
    let v = trim_ows(raw);
    // §13.1.5: a DQUOTE (or the W/ prefix) tells an entity-tag apart from a date.
    if v.starts_with(b"\"") || v.starts_with(b"W/") {
        return matches!(
            parse_entity_tag(v),
            Some((tag, rest)) if trim_ows(rest).is_empty() && !tag.weak && tag.opaque == etag
        );
    }
    parse_date(v) == Some(mtime)
}

struct EntityTag<'a> {
    weak: bool,
    /// The quoted opaque-tag, quotes included, so it compares directly with our etag.
    opaque: &'a [u8],
}

/// Parse one entity-tag at the start of `s`; returns it and the unparsed remainder.
fn parse_entity_tag(s: &[u8]) -> Option<(EntityTag<'_>, &[u8])> {
    let (weak, s) = match s.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let inner = s.strip_prefix(b"\"")?;
    let close = inner.iter().position(|&b| b == b'"')?;
    let (body, rest) = inner.split_at(close);
    // etagc = %x21 / %x23-7E / obs-text: anything else (CTLs, spaces) is malformed.
    if !body
        .iter()
        .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
    {
        return None;
    }
    // `close + 2` spans both quotes; `rest` still starts at the closing quote.
    let opaque = s.get(..close + 2)?;
    let rest = rest.get(1..)?;
    Some((EntityTag { weak, opaque }, rest))
}

/// Whether any tag in a `#entity-tag` list matches `etag` (strong or weak comparison).
///
/// None when the list is malformed or empty: callers treat that as "no match", which
/// fails If-Match closed and makes If-None-Match fall through to a normal response.
fn etag_list_matches(list: &[u8], etag: &[u8], strong: bool) -> Option<bool> {
    let mut rest = list;
    let mut found = false;
    let mut any = false;
    loop {
        rest = trim_ows(rest);
        // §5.6.1: recipients must tolerate empty list elements.
        if let Some(r) = rest.strip_prefix(b",") {
            rest = r;
            continue;
        }
        if rest.is_empty() {
            break;
        }
        let (tag, after) = parse_entity_tag(rest)?;
        // Our own etag is always strong, so strong comparison only needs the other side.
        found |= tag.opaque == etag && !(strong && tag.weak);
        any = true;
        rest = trim_ows(after);
        if !rest.is_empty() && !rest.starts_with(b",") {
            return None;
        }
    }
    any.then_some(found)
}

/// A syntactically valid single byte-range-spec, not yet checked against the length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeSpec {
    /// `a-b`, with a <= b guaranteed by the parser
    FromTo(u64, u64),
    /// `a-`
    From(u64),
    /// `-n`
    Suffix(u64),
}

/// Parse a Range value; None means "ignore it and send 200" (malformed, other unit,
/// or more than one range).
fn parse_range(raw: &[u8]) -> Option<RangeSpec> {
    let eq = raw.iter().position(|&b| b == b'=')?;
    let (unit, set) = raw.split_at(eq);
    if !trim_ows(unit).eq_ignore_ascii_case(b"bytes") {
        return None;
    }
    let set = set.get(1..)?;
    let mut specs = set
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|s| !s.is_empty());
    let spec = specs.next()?;
    // Several ranges would need multipart/byteranges; a 200 is always a valid answer.
    if specs.next().is_some() {
        return None;
    }
    let dash = spec.iter().position(|&b| b == b'-')?;
    let (first, last) = spec.split_at(dash);
    let first = trim_ows(first);
    let last = trim_ows(last.get(1..)?);
    match (first.is_empty(), last.is_empty()) {
        (true, true) => None,
        (true, false) => Some(RangeSpec::Suffix(parse_u64(last)?)),
        (false, true) => Some(RangeSpec::From(parse_u64(first)?)),
        (false, false) => {
            let (a, b) = (parse_u64(first)?, parse_u64(last)?);
            // §14.1.1: last-pos < first-pos makes the spec invalid, not unsatisfiable.
            (a <= b).then_some(RangeSpec::FromTo(a, b))
        }
    }
}

/// Strict 1*DIGIT to u64; rejects signs (which `str::parse` would accept) and overflow.
fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Apply a valid spec to the representation length (§14.1.2 satisfiability).
fn resolve_range(spec: RangeSpec, len: u64) -> Plan {
    // Every branch below needs a last byte; an empty file satisfies no range.
    let Some(last) = len.checked_sub(1) else {
        return Plan::RangeNotSatisfiable;
    };
    match spec {
        RangeSpec::Suffix(0) => Plan::RangeNotSatisfiable,
        RangeSpec::Suffix(n) => Plan::Partial {
            start: len.saturating_sub(n),
            end: last,
        },
        RangeSpec::From(a) | RangeSpec::FromTo(a, _) if a >= len => Plan::RangeNotSatisfiable,
        RangeSpec::From(a) => Plan::Partial {
            start: a,
            end: last,
        },
        RangeSpec::FromTo(a, b) => Plan::Partial {
            start: a,
            end: b.min(last),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2001-09-09T01:46:40Z plus a sub-second part, to exercise whole-second truncation.
    const SECS: u64 = 1_000_000_000;
    const DATE: &str = "Sun, 09 Sep 2001 01:46:40 GMT";
    const DATE_BEFORE: &str = "Sun, 09 Sep 2001 01:46:39 GMT";
    const DATE_AFTER: &str = "Sun, 09 Sep 2001 01:46:41 GMT";

    fn meta(len: u64) -> FileMeta {
        FileMeta {
            len,
            mtime: UNIX_EPOCH + Duration::new(SECS, 123_456_789),
            inode: 0xabc,
        }
    }

    fn get(m: &FileMeta, req: RequestHeaders<'_>) -> Plan {
        let p = plan(m, &req, false);
        // HEAD must decide identically; checking here covers every test case.
        assert_eq!(p, plan(m, &req, true), "HEAD differs from GET for {req:?}");
        p
    }

    fn range(m: &FileMeta, r: &str) -> Plan {
        get(
            m,
            RequestHeaders {
                range: Some(r.as_bytes()),
                ..Default::default()
            },
        )
    }

    fn partial(start: u64, end: u64) -> Plan {
        Plan::Partial { start, end }
    }

    // ---- validators ----

    #[test]
    fn etag_format() {
        let m = meta(0x10);
        let nanos = u128::from(SECS) * 1_000_000_000 + 123_456_789;
        assert_eq!(m.etag(), format!("\"abc-10-{nanos:x}\""));
    }

    #[test]
    fn etag_pre_epoch_does_not_panic() {
        let m = FileMeta {
            len: 1,
            mtime: UNIX_EPOCH - Duration::from_secs(5),
            inode: 1,
        };
        assert_eq!(m.etag(), "\"1-1-0\"");
    }

    #[test]
    fn last_modified_format() {
        assert_eq!(meta(1).last_modified(), DATE);
    }

    #[test]
    fn last_modified_clamps_out_of_range_times() {
        let early = FileMeta {
            mtime: UNIX_EPOCH - Duration::from_secs(1),
            ..meta(1)
        };
        assert_eq!(early.last_modified(), "Thu, 01 Jan 1970 00:00:00 GMT");
        let late = FileMeta {
            mtime: UNIX_EPOCH + Duration::from_secs(MAX_HTTP_DATE_SECS + 1_000),
            ..meta(1)
        };
        assert_eq!(late.last_modified(), "Fri, 31 Dec 9999 23:59:59 GMT");
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

    // ---- rule 1: If-Match ----

    fn if_match(m: &FileMeta, v: &[u8]) -> Plan {
        get(
            m,
            RequestHeaders {
                if_match: Some(v),
                ..Default::default()
            },
        )
    }

    #[test]
    fn if_match_star_passes() {
        assert_eq!(if_match(&meta(5), b"*"), Plan::Full);
        assert_eq!(if_match(&meta(5), b" * "), Plan::Full);
    }

    #[test]
    fn if_match_strong_equal_passes() {
        let m = meta(5);
        assert_eq!(if_match(&m, m.etag().as_bytes()), Plan::Full);
    }

    #[test]
    fn if_match_in_list_passes() {
        let m = meta(5);
        let v = format!("\"x\", W/\"y\" ,{},\"z\"", m.etag());
        assert_eq!(if_match(&m, v.as_bytes()), Plan::Full);
        let v = format!(", ,{} ,", m.etag());
        assert_eq!(if_match(&m, v.as_bytes()), Plan::Full);
    }

    #[test]
    fn if_match_weak_never_matches() {
        let m = meta(5);
        let v = format!("W/{}", m.etag());
        assert_eq!(if_match(&m, v.as_bytes()), Plan::PreconditionFailed);
    }

    #[test]
    fn if_match_mismatch_fails() {
        assert_eq!(if_match(&meta(5), b"\"nope\""), Plan::PreconditionFailed);
        assert_eq!(
            if_match(&meta(5), b"\"a\", \"b\""),
            Plan::PreconditionFailed
        );
    }

    #[test]
    fn if_match_malformed_fails_closed() {
        let m = meta(5);
        let e = m.etag();
        let unquoted = e.trim_matches('"').to_string();
        let junk_after = format!("{e} junk");
        let no_comma = format!("{e} {e}");
        let star_in_list = format!("*, {e}");
        for v in [
            "",
            " ",
            ",",
            unquoted.as_str(),
            "\"unterminated",
            junk_after.as_str(),
            no_comma.as_str(),
            star_in_list.as_str(),
            "w/\"x\"",
            "\"sp ace\"",
        ] {
            assert_eq!(
                if_match(&m, v.as_bytes()),
                Plan::PreconditionFailed,
                "{v:?}"
            );
        }
    }

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

    // ---- rule 2: If-Unmodified-Since ----

    fn ius(m: &FileMeta, v: &str) -> Plan {
        get(
            m,
            RequestHeaders {
                if_unmodified_since: Some(v.as_bytes()),
                ..Default::default()
            },
        )
    }

    #[test]
    fn ius_same_second_passes_despite_subsecond_mtime() {
        assert_eq!(ius(&meta(5), DATE), Plan::Full);
        assert_eq!(ius(&meta(5), DATE_AFTER), Plan::Full);
    }

    #[test]
    fn ius_older_date_fails() {
        assert_eq!(ius(&meta(5), DATE_BEFORE), Plan::PreconditionFailed);
    }

    #[test]
    fn ius_other_date_formats() {
        // RFC 850 and asctime are obsolete but must be accepted (§5.6.7).
        assert_eq!(
            ius(&meta(5), "Sunday, 09-Sep-01 01:46:39 GMT"),
            Plan::PreconditionFailed
        );
        assert_eq!(
            ius(&meta(5), "Sun Sep  9 01:46:39 2001"),
            Plan::PreconditionFailed
        );
        assert_eq!(ius(&meta(5), &format!("  {DATE}\t")), Plan::Full);
    }

    #[test]
    fn ius_unparsable_is_ignored() {
        for v in ["", "yesterday", "Sun, 32 Sep 2001 01:46:39 GMT", "0"] {
            assert_eq!(ius(&meta(5), v), Plan::Full, "{v:?}");
        }
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
    fn ius_pre_epoch_mtime_passes() {
        let m = FileMeta {
            mtime: UNIX_EPOCH - Duration::from_secs(10),
            ..meta(5)
        };
        assert_eq!(ius(&m, "Thu, 01 Jan 1970 00:00:00 GMT"), Plan::Full);
    }

    // ---- rule 3: If-None-Match / If-Modified-Since ----

    fn inm(m: &FileMeta, v: &[u8]) -> Plan {
        get(
            m,
            RequestHeaders {
                if_none_match: Some(v),
                ..Default::default()
            },
        )
    }

    #[test]
    fn inm_star_is_not_modified() {
        assert_eq!(inm(&meta(5), b"*"), Plan::NotModified);
    }

    #[test]
    fn inm_strong_and_weak_match() {
        let m = meta(5);
        let e = m.etag();
        assert_eq!(inm(&m, e.as_bytes()), Plan::NotModified);
        assert_eq!(inm(&m, format!("W/{e}").as_bytes()), Plan::NotModified);
        assert_eq!(
            inm(&m, format!("\"a\", W/{e}, \"b\"").as_bytes()),
            Plan::NotModified
        );
    }

    #[test]
    fn inm_mismatch_proceeds() {
        let m = meta(5);
        assert_eq!(inm(&m, b"\"a\", W/\"b\""), Plan::Full);
        let req = RequestHeaders {
            if_none_match: Some(b"\"a\""),
            range: Some(b"bytes=1-2"),
            ..Default::default()
        };
        assert_eq!(get(&m, req), partial(1, 2));
    }

    #[test]
    fn inm_malformed_proceeds() {
        let m = meta(5);
        let e = m.etag();
        assert_eq!(inm(&m, format!("{e} junk").as_bytes()), Plan::Full);
        assert_eq!(inm(&m, b""), Plan::Full);
        assert_eq!(inm(&m, b"**"), Plan::Full);
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

    fn ims(m: &FileMeta, v: &str) -> Plan {
        get(
            m,
            RequestHeaders {
                if_modified_since: Some(v.as_bytes()),
                ..Default::default()
            },
        )
    }

    #[test]
    fn ims_not_modified_when_mtime_not_after() {
        assert_eq!(ims(&meta(5), DATE), Plan::NotModified);
        assert_eq!(ims(&meta(5), DATE_AFTER), Plan::NotModified);
    }

    #[test]
    fn ims_modified_is_full() {
        assert_eq!(ims(&meta(5), DATE_BEFORE), Plan::Full);
    }

    #[test]
    fn ims_unparsable_ignored() {
        assert_eq!(ims(&meta(5), "not a date"), Plan::Full);
        assert_eq!(ims(&meta(5), &format!("{DATE}, {DATE}")), Plan::Full);
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

    // ---- rule 4: Range ----

    #[test]
    fn range_first_last() {
        let m = meta(10);
        assert_eq!(range(&m, "bytes=0-0"), partial(0, 0));
        assert_eq!(range(&m, "bytes=2-5"), partial(2, 5));
        assert_eq!(range(&m, "bytes=0-9"), partial(0, 9));
        assert_eq!(range(&m, "bytes=9-9"), partial(9, 9));
    }

    #[test]
    fn range_last_clamped() {
        let m = meta(10);
        assert_eq!(range(&m, "bytes=3-100"), partial(3, 9));
        assert_eq!(range(&m, &format!("bytes=0-{}", u64::MAX)), partial(0, 9));
    }

    #[test]
    fn range_open_ended() {
        assert_eq!(range(&meta(10), "bytes=4-"), partial(4, 9));
        assert_eq!(range(&meta(10), "bytes=9-"), partial(9, 9));
    }

    #[test]
    fn range_suffix() {
        let m = meta(10);
        assert_eq!(range(&m, "bytes=-3"), partial(7, 9));
        assert_eq!(range(&m, "bytes=-10"), partial(0, 9));
        assert_eq!(range(&m, "bytes=-11"), partial(0, 9));
        assert_eq!(range(&m, &format!("bytes=-{}", u64::MAX)), partial(0, 9));
        assert_eq!(range(&m, "bytes=-0"), Plan::RangeNotSatisfiable);
    }

    #[test]
    fn range_start_past_end_unsatisfiable() {
        let m = meta(10);
        assert_eq!(range(&m, "bytes=10-"), Plan::RangeNotSatisfiable);
        assert_eq!(range(&m, "bytes=10-20"), Plan::RangeNotSatisfiable);
        assert_eq!(
            range(&m, &format!("bytes={}-", u64::MAX)),
            Plan::RangeNotSatisfiable
        );
    }

    #[test]
    fn range_empty_file_unsatisfiable() {
        let m = meta(0);
        for r in ["bytes=0-0", "bytes=0-", "bytes=-1", "bytes=-0", "bytes=5-9"] {
            assert_eq!(range(&m, r), Plan::RangeNotSatisfiable, "{r:?}");
        }
        // Malformed stays ignored even for an empty file.
        assert_eq!(range(&m, "bytes=5-1"), Plan::Full);
    }

    #[test]
    fn range_reversed_is_malformed() {
        assert_eq!(range(&meta(10), "bytes=5-4"), Plan::Full);
        assert_eq!(range(&meta(10), "bytes=50-40"), Plan::Full);
    }

    #[test]
    fn range_whitespace_and_case() {
        let m = meta(10);
        assert_eq!(range(&m, " bytes=1-2 "), partial(1, 2));
        assert_eq!(range(&m, "bytes = 1 - 2"), partial(1, 2));
        assert_eq!(range(&m, "BYTES=1-2"), partial(1, 2));
        assert_eq!(range(&m, "Bytes=\t-2\t"), partial(8, 9));
        assert_eq!(range(&m, "bytes=1-2,"), partial(1, 2));
        assert_eq!(range(&m, "bytes=, 1-2 ,,"), partial(1, 2));
        assert_eq!(range(&m, "bytes=007-008"), partial(7, 8));
    }

    #[test]
    fn range_other_unit_ignored() {
        for r in ["items=0-1", "byte=0-1", "bytesx=0-1", "=0-1", "0-1"] {
            assert_eq!(range(&meta(10), r), Plan::Full, "{r:?}");
        }
    }

    #[test]
    fn range_multiple_ignored() {
        for r in [
            "bytes=0-1,5-6",
            "bytes=0-1, 3-",
            "bytes=-1,-2",
            "bytes=0-1,junk",
        ] {
            assert_eq!(range(&meta(10), r), Plan::Full, "{r:?}");
        }
    }

    #[test]
    fn range_malformed_ignored() {
        for r in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=--1",
            "bytes=1--",
            "bytes=1",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes=-+2",
            "bytes=1 2-3",
            "bytes=0x1-2",
            "bytes=1-2=3",
            "bytes=1.5-2",
            "bytes=,",
            "bytes=\r1-2",
        ] {
            assert_eq!(range(&meta(10), r), Plan::Full, "{r:?}");
        }
    }

    #[test]
    fn range_overflow_is_malformed() {
        let big = "18446744073709551616"; // u64::MAX + 1
        let huge = "9".repeat(100);
        for r in [
            format!("bytes={big}-"),
            format!("bytes=0-{big}"),
            format!("bytes=-{big}"),
            format!("bytes={huge}-{huge}"),
        ] {
            assert_eq!(range(&meta(10), &r), Plan::Full, "{r:?}");
        }
        // Leading zeros do not count toward overflow.
        let padded = format!("bytes={}1-2", "0".repeat(100));
        assert_eq!(range(&meta(10), &padded), partial(1, 2));
    }

    #[test]
    fn range_evaluated_for_head() {
        let req = RequestHeaders {
            range: Some(b"bytes=1-2"),
            ..Default::default()
        };
        assert_eq!(plan(&meta(10), &req, true), partial(1, 2));
    }

    // ---- If-Range ----

    fn with_if_range(m: &FileMeta, r: &str, ir: &[u8]) -> Plan {
        get(
            m,
            RequestHeaders {
                range: Some(r.as_bytes()),
                if_range: Some(ir),
                ..Default::default()
            },
        )
    }

    #[test]
    fn if_range_strong_etag_match_applies_range() {
        let m = meta(10);
        let e = m.etag();
        assert_eq!(with_if_range(&m, "bytes=1-2", e.as_bytes()), partial(1, 2));
        let padded = format!(" {e} ");
        assert_eq!(
            with_if_range(&m, "bytes=1-2", padded.as_bytes()),
            partial(1, 2)
        );
    }

    #[test]
    fn if_range_weak_or_other_etag_is_full() {
        let m = meta(10);
        let weak = format!("W/{}", m.etag());
        let listed = format!("{}, \"x\"", m.etag());
        for ir in [
            weak.as_str(),
            "\"other\"",
            listed.as_str(),
            "\"unterminated",
        ] {
            assert_eq!(
                with_if_range(&m, "bytes=1-2", ir.as_bytes()),
                Plan::Full,
                "{ir:?}"
            );
        }
    }

    #[test]
    fn if_range_date_must_equal_mtime() {
        let m = meta(10);
        assert_eq!(
            with_if_range(&m, "bytes=1-2", DATE.as_bytes()),
            partial(1, 2)
        );
        assert_eq!(
            with_if_range(&m, "bytes=1-2", DATE_AFTER.as_bytes()),
            Plan::Full
        );
        assert_eq!(
            with_if_range(&m, "bytes=1-2", DATE_BEFORE.as_bytes()),
            Plan::Full
        );
        assert_eq!(with_if_range(&m, "bytes=1-2", b"garbage"), Plan::Full);
        assert_eq!(with_if_range(&m, "bytes=1-2", b""), Plan::Full);
    }

    #[test]
    fn if_range_failure_hides_unsatisfiable_range() {
        // A failed If-Range means "send it all", even if the range could not be met.
        let m = meta(10);
        assert_eq!(with_if_range(&m, "bytes=50-", b"\"other\""), Plan::Full);
        let e = m.etag();
        assert_eq!(
            with_if_range(&m, "bytes=50-", e.as_bytes()),
            Plan::RangeNotSatisfiable
        );
    }

    #[test]
    fn if_range_without_range_ignored() {
        let req = RequestHeaders {
            if_range: Some(b"\"other\""),
            ..Default::default()
        };
        assert_eq!(get(&meta(10), req), Plan::Full);
    }

    #[test]
    fn if_range_with_malformed_range_is_full() {
        let m = meta(10);
        let e = m.etag();
        assert_eq!(with_if_range(&m, "bytes=5-1", e.as_bytes()), Plan::Full);
    }

    // ---- content_range ----

    #[test]
    fn content_range_values() {
        assert_eq!(
            content_range(&partial(0, 4), 10).as_deref(),
            Some("bytes 0-4/10")
        );
        assert_eq!(
            content_range(&Plan::RangeNotSatisfiable, 10).as_deref(),
            Some("bytes */10")
        );
        for p in [Plan::Full, Plan::NotModified, Plan::PreconditionFailed] {
            assert_eq!(content_range(&p, 10), None);
        }
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

    #[test]
    fn obs_text_etags_compare_bytewise() {
        // obs-text is legal inside an opaque-tag; it just never equals ours.
        assert_eq!(inm(&meta(5), b"W/\"\xff\", *"), Plan::Full);
        assert_eq!(inm(&meta(5), b"W/\"\xff\""), Plan::Full);
        assert_eq!(
            etag_list_matches(b"\"\xff\"", b"\"\xff\"", true),
            Some(true)
        );
    }

    /// Tiny deterministic xorshift so the property test needs no extra crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            // n is small, so the modulo bias is irrelevant here.
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn property_generated_ranges() {
        const PIECES: &[&[u8]] = &[
            b"bytes",
            b"BYTES",
            b"items",
            b"=",
            b"-",
            b",",
            b" ",
            b"\t",
            b"0",
            b"1",
            b"7",
            b"10",
            b"99",
            b"18446744073709551615",
            b"18446744073709551616",
            b"+",
            b"\xff",
            b"\"",
            b"W/",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let lens = [0, 1, 2, 9, 10, 11, 1 << 20, u64::MAX - 1, u64::MAX];
        let mut partials = 0;
        for _ in 0..50_000 {
            let mut raw = Vec::new();
            if rng.below(2) == 0 {
                // Shaped "bytes=[a]-[b]" with noise, so many cases reach the numeric logic.
                raw.extend_from_slice(b"bytes=");
                for part in 0..3 {
                    if rng.below(4) == 0 {
                        raw.extend_from_slice(PIECES[rng.below(PIECES.len())]);
                    }
                    if part == 1 {
                        raw.push(b'-');
                    } else if rng.below(5) != 0 {
                        let n = match rng.below(3) {
                            0 => rng.next(),
                            1 => rng.next() % 32,
                            _ => rng.next() >> rng.below(64),
                        };
                        raw.extend_from_slice(n.to_string().as_bytes());
                    }
                }
            } else {
                if rng.below(4) != 0 {
                    raw.extend_from_slice(b"bytes=");
                }
                for _ in 0..rng.below(8) {
                    if rng.below(10) == 0 {
                        raw.push(rng.next() as u8);
                    } else {
                        raw.extend_from_slice(PIECES[rng.below(PIECES.len())]);
                    }
                }
            }
            let len = if rng.below(3) == 0 {
                rng.next()
            } else {
                lens[rng.below(lens.len())]
            };
            let m = meta(len);
            let req = RequestHeaders {
                range: Some(&raw),
                // Exercise the other parsers with the same hostile bytes.
                if_range: (rng.below(4) == 0).then_some(raw.as_slice()),
                if_none_match: (rng.below(8) == 0).then_some(raw.as_slice()),
                ..Default::default()
            };
            match get(&m, req) {
                Plan::Partial { start, end } => {
                    partials += 1;
                    assert!(start <= end && end < len, "{raw:?} len={len}");
                    let cr = content_range(&Plan::Partial { start, end }, len);
                    assert!(cr.is_some());
                }
                // NotModified is reachable when a random byte makes If-None-Match "*".
                Plan::RangeNotSatisfiable | Plan::Full | Plan::NotModified => {}
                other @ Plan::PreconditionFailed => {
                    panic!("range alone produced {other:?} for {raw:?}")
                }
            }
        }
        // Guard against a generator that never reaches the interesting branch.
        eprintln!("partials={partials}");
        assert!(partials > 2_000, "only {partials} partials generated");
    }
}
