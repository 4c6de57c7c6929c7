//! Range and conditional headers of a GET/HEAD of a stored file:
//! `download::semantics::plan` and `content_range`.
//!
//! Input: 28 bytes of file metadata (len u64, mtime seconds i64 and nanos u32,
//! inode u64; little-endian, zero-filled when short), then header lines
//! `name: value` for range, if-match, if-none-match, if-modified-since,
//! if-unmodified-since and if-range (repeats joined with ", " as RFC 9110 §5.3
//! says). `$ETAG` and `$DATE` in a value stand for the file's own validators,
//! so matching tags and dates are reachable.
//!
//! Invariants: HEAD plans as GET; a 206 range lies in the file and its
//! Content-Range says so; a 416 carries `bytes */len`; no Range, no 206/416;
//! 412 needs If-Match or If-Unmodified-Since, 304 If-None-Match or
//! If-Modified-Since; a canonical `bytes=A-B`, `bytes=A-` or `bytes=-N` (and
//! no If-Range) gives the range a plain reading of RFC 9110 §14.1.2 gives.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use sluice_proxy::download::semantics::{FileMeta, Plan, RequestHeaders, content_range, plan};

const META: usize = 28;

fn le<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0; N];
    a.copy_from_slice(b);
    a
}

/// Reference reading of a canonical single range: digits only, no spaces.
fn reference(range: &[u8], len: u64) -> Option<Plan> {
    let set = range.strip_prefix(b"bytes=")?;
    let s = std::str::from_utf8(set).ok()?;
    let (a, b) = s.split_once('-')?;
    let num = |x: &str| -> Option<u64> {
        (!x.is_empty() && x.bytes().all(|c| c.is_ascii_digit()))
            .then(|| x.parse().ok())
            .flatten()
    };
    let unsatisfiable = Some(Plan::RangeNotSatisfiable);
    match (a.is_empty(), b.is_empty()) {
        (true, false) => {
            let n = num(b)?;
            if n == 0 || len == 0 {
                return unsatisfiable;
            }
            Some(Plan::Partial {
                start: len - n.min(len),
                end: len - 1,
            })
        }
        (false, true) => {
            let a = num(a)?;
            if a >= len {
                return unsatisfiable;
            }
            Some(Plan::Partial {
                start: a,
                end: len - 1,
            })
        }
        (false, false) => {
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Some(Plan::Full);
            }
            if a >= len {
                return unsatisfiable;
            }
            Some(Plan::Partial {
                start: a,
                end: b.min(len - 1),
            })
        }
        (true, true) => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut meta = [0u8; META];
    let n = data.len().min(META);
    meta[..n].copy_from_slice(&data[..n]);
    let text = &data[n..];

    let len = u64::from_le_bytes(le(&meta[0..8]));
    let secs = i64::from_le_bytes(le(&meta[8..16]));
    let nanos = u32::from_le_bytes(le(&meta[16..20])) % 1_000_000_000;
    let inode = u64::from_le_bytes(le(&meta[20..28]));
    let offset = Duration::new(secs.unsigned_abs(), nanos);
    let mtime = if secs >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    };
    let Some(mtime) = mtime else { return };
    let file = FileMeta { len, mtime, inode };
    let etag = file.etag();
    let date = file.last_modified();

    // Header lines; unknown names are ignored, repeats joined.
    let mut values: [Option<Vec<u8>>; 6] = Default::default();
    for line in text.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = line[..colon].to_ascii_lowercase();
        let i = match name.as_slice() {
            b"range" => 0,
            b"if-match" => 1,
            b"if-none-match" => 2,
            b"if-modified-since" => 3,
            b"if-unmodified-since" => 4,
            b"if-range" => 5,
            _ => continue,
        };
        let raw = line[colon + 1..].trim_ascii_start();
        let value = String::from_utf8_lossy(raw)
            .replace("$ETAG", &etag)
            .replace("$DATE", &date);
        let v = values[i].get_or_insert_with(Vec::new);
        if !v.is_empty() {
            v.extend_from_slice(b", ");
        }
        // Non-UTF-8 bytes matter too: keep the raw value when it had no token.
        if raw.windows(5).any(|w| w == b"$ETAG" || w == b"$DATE") {
            v.extend_from_slice(value.as_bytes());
        } else {
            v.extend_from_slice(raw);
        }
    }
    let req = RequestHeaders {
        range: values[0].as_deref(),
        if_match: values[1].as_deref(),
        if_none_match: values[2].as_deref(),
        if_modified_since: values[3].as_deref(),
        if_unmodified_since: values[4].as_deref(),
        if_range: values[5].as_deref(),
    };

    let p = plan(&file, &req, false);
    assert_eq!(
        p,
        plan(&file, &req, true),
        "HEAD plans differently from GET"
    );
    let cr = content_range(&p, len);
    match p {
        Plan::Partial { start, end } => {
            assert!(
                start <= end && end < len,
                "range {start}-{end} outside a file of {len}"
            );
            assert_eq!(cr, Some(format!("bytes {start}-{end}/{len}")));
            assert!(req.range.is_some(), "206 without a Range");
        }
        Plan::RangeNotSatisfiable => {
            assert_eq!(cr, Some(format!("bytes */{len}")));
            assert!(req.range.is_some(), "416 without a Range");
        }
        Plan::PreconditionFailed => {
            assert_eq!(cr, None);
            assert!(req.if_match.is_some() || req.if_unmodified_since.is_some());
        }
        Plan::NotModified => {
            assert_eq!(cr, None);
            assert!(req.if_none_match.is_some() || req.if_modified_since.is_some());
        }
        Plan::Full => assert_eq!(cr, None),
    }

    // Only the Range header: a canonical one reads as the RFC says.
    if let (Some(r), [None, None, None, None, None]) = (req.range, &values[1..]) {
        if let Some(want) = reference(r, len) {
            assert_eq!(
                p,
                want,
                "Range {:?} of a file of {len}",
                String::from_utf8_lossy(r)
            );
        }
    }
});
