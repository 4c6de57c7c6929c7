//! Request preconditions (RFC 9110 §13.1): If-Match, If-None-Match, If-Modified-Since,
//! If-Unmodified-Since and If-Range, each parsed from raw header bytes and checked
//! against our entity-tag and whole-second mtime. Which of them count, and in what
//! order, is [`super::plan`]'s business (§13.2.2); these only say whether one holds.
//!
//! Trade-offs: a malformed entity-tag list matches nothing, which fails If-Match closed
//! (412) and lets If-None-Match fall through to a normal response; an unparsable date
//! is no date (If-(Un)Modified-Since is then ignored, If-Range fails to a 200); dates
//! compare at whole-second precision.

use super::{trim_ows, unix_secs};

/// HTTP-date (any of the three §5.6.7 formats) as whole epoch seconds; None if unusable.
pub fn parse_date(raw: &[u8]) -> Option<i128> {
    let s = std::str::from_utf8(trim_ows(raw)).ok()?;
    httpdate::parse_http_date(s).ok().map(unix_secs)
}

/// If-Match holds for "*" or a listed tag equal by strong comparison (§13.1.1); a
/// malformed list never holds, so the request fails closed.
pub fn if_match_passes(raw: &[u8], etag: &[u8]) -> bool {
    let v = trim_ows(raw);
    // "*" only asks whether a current representation exists; we are serving one.
    v == b"*" || etag_list_matches(v, etag, true) == Some(true)
}

/// If-None-Match hits for "*" or a listed tag equal by weak comparison (§13.1.2); a
/// malformed list never hits.
pub fn if_none_match_hits(raw: &[u8], etag: &[u8]) -> bool {
    let v = trim_ows(raw);
    v == b"*" || etag_list_matches(v, etag, false) == Some(true)
}

/// If-Range holds for a strong, equal entity-tag or an HTTP-date equal to mtime (§13.1.5).
pub fn if_range_passes(raw: &[u8], etag: &[u8], mtime: i128) -> bool {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityTag<'a> {
    pub weak: bool,
    /// The quoted opaque-tag, quotes included, so it compares directly with our etag.
    pub opaque: &'a [u8],
}

/// Parse one entity-tag at the start of `s`; returns it and the unparsed remainder.
pub fn parse_entity_tag(s: &[u8]) -> Option<(EntityTag<'_>, &[u8])> {
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
pub fn etag_list_matches(list: &[u8], etag: &[u8], strong: bool) -> Option<bool> {
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::download::semantics::tests::{DATE, DATE_AFTER, DATE_BEFORE, get, meta, partial};
    use crate::download::semantics::{FileMeta, Plan, RequestHeaders};

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

    // ---- hostile bytes ----

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
}
