//! Response header values: the validators ETag and Last-Modified of a [`FileMeta`]
//! (RFC 9110 §8.8) and the Content-Range of a [`Plan`] (§14.4).
//!
//! Trade-off: the ETag is strong because it carries the mtime in nanoseconds (with the
//! inode and length), so a rewrite within the same second still changes it, while
//! Last-Modified and every date comparison stay at whole seconds. Last-Modified is
//! clamped to the span an IMF-fixdate can show rather than risking a panic in httpdate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{FileMeta, Plan};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::semantics::tests::{DATE, SECS, meta, partial};

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
}
