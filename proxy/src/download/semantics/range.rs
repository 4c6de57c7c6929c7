//! Range (RFC 9110 §14.1-14.2): parse a `bytes` range-spec from raw header bytes,
//! then resolve it against the representation length into a 206 or a 416 [`Plan`].
//!
//! Trade-offs: only a single `bytes` range is served; a multi-range request gets 200,
//! never multipart/byteranges, since a 200 is always a valid answer. Malformed or
//! unknown-unit Range headers are ignored (200) rather than rejected.

use super::{Plan, trim_ows};

/// A syntactically valid single byte-range-spec, not yet checked against the length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `a-b`, with a <= b guaranteed by [`parse_range`]; [`resolve_range`] relies on it
    FromTo(u64, u64),
    /// `a-`
    From(u64),
    /// `-n`
    Suffix(u64),
}

/// Parse a Range value; None means "ignore it and send 200" (malformed, other unit,
/// or more than one range).
pub fn parse_range(raw: &[u8]) -> Option<RangeSpec> {
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
pub fn resolve_range(spec: RangeSpec, len: u64) -> Plan {
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
    use crate::download::semantics::tests::{get, meta, partial};
    use crate::download::semantics::{FileMeta, RequestHeaders, content_range, plan};

    // ---- rule 4: Range ----

    fn range(m: &FileMeta, r: &str) -> Plan {
        get(
            m,
            RequestHeaders {
                range: Some(r.as_bytes()),
                ..Default::default()
            },
        )
    }

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

    // ---- generated ----

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
