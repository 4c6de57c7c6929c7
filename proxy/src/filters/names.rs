//! Names a client chooses: the filename of a multipart part
//! ([`sanitize_filename`], [`extension`]) and the object key in a request path
//! ([`parse_key`]). Either may become a path segment on a filesystem backend,
//! so each is reduced to one checked spelling before anything uses it.
//!
//! Trade-off: a filename is repaired (last component kept, control and bidi
//! chars dropped, truncated) because the client only suggests it; a key is
//! refused rather than repaired ([`KeyError`]) because it names the object
//! asked for, so every spelling must map to one checked key and no key may
//! have two meanings.

use percent_encoding::percent_decode_str;

/// Longest filename kept after sanitising, in bytes. Filesystems cap a name
/// at 255 bytes; the rest is left for the temp-file prefix and suffix we add
/// while a part is being written.
pub const MAX_FILENAME_BYTES: usize = 200;

/// An extension at most this long survives truncation; longer "extensions"
/// are more likely part of the name than a real type suffix.
const MAX_KEPT_EXTENSION_BYTES: usize = 16;

/// Prefix of our own temp files; clients may not name anything like it, so an
/// upload can never collide with or masquerade as one.
const RESERVED_PREFIX: &str = ".sluice-";

const MAX_KEY_BYTES: usize = 1024;
const MAX_KEY_SEGMENTS: usize = 16;
/// Same cap as a filesystem name, since each segment may become one.
const MAX_SEGMENT_BYTES: usize = 255;

/// Client-supplied filename -> safe single path segment, or None when nothing
/// usable remains.
///
/// Takes the last component after either '/' or '\\' (browsers on Windows send
/// full paths), removes control characters (C0, DEL, C1) and bidi overrides
/// (they make "evil\u{202E}gpj.exe" display as "evilexe.jpg"), trims
/// whitespace and dots at both ends (Windows drops trailing ones anyway, and
/// leading dots would hide the file), rejects "." and "..", rejects names
/// starting with ".sluice-", and truncates to [`MAX_FILENAME_BYTES`] on a char
/// boundary, keeping a short extension. Never returns an empty string.
pub fn sanitize_filename(raw: &str) -> Option<String> {
    // rsplit always yields at least one item; the fallback is never used.
    let last = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    let cleaned: String = last
        .chars()
        .filter(|&c| !c.is_control() && !is_bidi_control(c))
        .collect();
    // Checked before trimming: trimming strips the leading dot, but a client
    // naming a file like our temp files is up to no good, so refuse it.
    if is_reserved(cleaned.trim_start()) {
        return None;
    }
    let trimmed = cleaned.trim_matches(is_trimmed_edge);
    if trimmed.is_empty() || trimmed == "." || trimmed == ".." {
        return None;
    }
    let out = truncate_keeping_extension(trimmed);
    // Defence in depth: the steps above already rule these out.
    if out.is_empty() || is_reserved(&out) {
        return None;
    }
    Some(out)
}

fn is_trimmed_edge(c: char) -> bool {
    c == '.' || c.is_whitespace()
}

/// Unicode bidi embedding/override/isolate marks (category Cf, so not caught
/// by `char::is_control`).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Case-insensitive, because macOS and Windows filesystems are.
fn is_reserved(name: &str) -> bool {
    name.get(..RESERVED_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_PREFIX))
}

/// `name` is already trimmed, so its first char is neither a dot nor
/// whitespace and survives any truncation: the result is never empty.
fn truncate_keeping_extension(name: &str) -> String {
    if name.len() <= MAX_FILENAME_BYTES {
        return name.to_string();
    }
    if let Some((stem, ext)) = name.rsplit_once('.')
        && !stem.is_empty()
        && !ext.is_empty()
        && ext.len() <= MAX_KEPT_EXTENSION_BYTES
    {
        let stem = floor_char_boundary(stem, MAX_FILENAME_BYTES - 1 - ext.len())
            .trim_end_matches(is_trimmed_edge);
        if !stem.is_empty() {
            return format!("{stem}.{ext}");
        }
    }
    floor_char_boundary(name, MAX_FILENAME_BYTES)
        .trim_end_matches(is_trimmed_edge)
        .to_string()
}

/// Longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn floor_char_boundary(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    // Terminates: 0 is always a boundary.
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

/// Why an object key from a request path was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyError {
    /// Nothing after the route prefix.
    Empty,
    /// A segment that is empty ("a//b", trailing or leading '/'), ".", "..",
    /// reserved (".sluice-*"), holds a control char or backslash, or has a
    /// malformed '%' escape. Carries the segment with control chars escaped,
    /// so it is safe to log or echo.
    BadSegment(String),
    /// Key over 1024 bytes, more than 16 segments, or a segment over 255 bytes.
    TooLong,
    /// Percent-decoding produced bytes that are not UTF-8.
    NotUtf8,
}

/// A stored object's key from the request path after the route prefix (still
/// percent-encoded), e.g. "a/b%20c.txt" -> "a/b c.txt".
///
/// The whole key is decoded once and then split on '/', so "%2F" is a
/// separator like '/' and "%2e%2e" is caught as "..": every spelling of a key
/// maps to one checked string. A '%' not followed by two hex digits is
/// refused instead of passed through, so no key has two meanings.
pub fn parse_key(encoded: &str) -> Result<String, KeyError> {
    if encoded.is_empty() {
        return Err(KeyError::Empty);
    }
    // A decoded byte takes at most 3 encoded bytes; anything longer cannot
    // fit, so don't spend time decoding it.
    if encoded.len() > MAX_KEY_BYTES * 3 {
        return Err(KeyError::TooLong);
    }
    // Keys are short: a plain char loop beats the `char` searcher's setup.
    let slash = |c: char| c == '/';
    if let Some(seg) = encoded.split(slash).find(|s| !escapes_well_formed(s)) {
        return Err(KeyError::BadSegment(printable(seg)));
    }
    let key = percent_decode_str(encoded)
        .decode_utf8()
        .map_err(|_| KeyError::NotUtf8)?;
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong);
    }
    if key.split(slash).count() > MAX_KEY_SEGMENTS {
        return Err(KeyError::TooLong);
    }
    for seg in key.split(slash) {
        check_segment(seg)?;
    }
    Ok(key.into_owned())
}

fn check_segment(seg: &str) -> Result<(), KeyError> {
    if seg.len() > MAX_SEGMENT_BYTES {
        return Err(KeyError::TooLong);
    }
    let bad = seg.is_empty()
        || seg == "."
        || seg == ".."
        || is_reserved(seg)
        // Backslash is a separator on Windows and for some tools; NUL would
        // cut the name short in C APIs.
        || seg.chars().any(|c| c.is_control() || c == '\\');
    if bad {
        return Err(KeyError::BadSegment(printable(seg)));
    }
    Ok(())
}

fn escapes_well_formed(s: &str) -> bool {
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = bytes.next().is_some_and(|h| h.is_ascii_hexdigit());
            let lo = bytes.next().is_some_and(|l| l.is_ascii_hexdigit());
            if !(hi && lo) {
                return false;
            }
        }
    }
    true
}

/// The segment as it may appear in a log line or error body: control chars
/// escaped, length capped.
fn printable(seg: &str) -> String {
    let mut out = String::new();
    for c in floor_char_boundary(seg, MAX_SEGMENT_BYTES).chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Lowercased extension without the dot ("photo.JPG" -> Some("jpg")); None
/// when there is none ("README", ".bashrc", "name.").
pub fn extension(filename: &str) -> Option<String> {
    extension_of(filename).map(str::to_lowercase)
}

/// [`extension`] as written, not lowercased.
pub(super) fn extension_of(filename: &str) -> Option<&str> {
    // Only the last component counts: "v1.2/README" has no extension.
    let base = filename.rsplit(['/', '\\']).next().unwrap_or(filename);
    let (stem, ext) = base.rsplit_once('.')?;
    // A stem of only dots means a hidden file (".bashrc", "..bashrc").
    if ext.is_empty() || stem.trim_start_matches('.').is_empty() {
        return None;
    }
    Some(ext)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::tests::{XorShift, extension_allowed, list, type_allowed};
    use crate::filters::{Sniffed, declared_agrees, sniff};

    // ---- sanitize_filename ----

    #[test]
    fn sanitize_keeps_plain_names() {
        assert_eq!(
            sanitize_filename("report.pdf").as_deref(),
            Some("report.pdf")
        );
        assert_eq!(
            sanitize_filename("my photo (1).JPG").as_deref(),
            Some("my photo (1).JPG")
        );
        assert_eq!(
            sanitize_filename("résumé.docx").as_deref(),
            Some("résumé.docx")
        );
        assert_eq!(
            sanitize_filename("sluice-notes.txt").as_deref(),
            Some("sluice-notes.txt")
        );
    }

    #[test]
    fn sanitize_takes_last_component() {
        assert_eq!(
            sanitize_filename("../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(
            sanitize_filename("..\\..\\boot.ini").as_deref(),
            Some("boot.ini")
        );
        assert_eq!(
            sanitize_filename("C:\\Users\\me\\Desktop\\report.pdf").as_deref(),
            Some("report.pdf")
        );
        assert_eq!(
            sanitize_filename("/abs/path/x.txt").as_deref(),
            Some("x.txt")
        );
        assert_eq!(sanitize_filename("a/b\\c/d.txt").as_deref(), Some("d.txt"));
        assert_eq!(sanitize_filename("dir/"), None);
        assert_eq!(sanitize_filename("dir\\"), None);
        assert_eq!(sanitize_filename("../.."), None);
        assert_eq!(sanitize_filename("..\\.."), None);
    }

    #[test]
    fn sanitize_rejects_only_dots_and_spaces() {
        for raw in [
            "",
            ".",
            "..",
            "...",
            " ",
            "   ",
            " . . ",
            ". .",
            "\t",
            "\u{0}",
            "\u{3000}.",
            "\u{202E}",
        ] {
            assert_eq!(sanitize_filename(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn sanitize_trims_edges() {
        assert_eq!(
            sanitize_filename("  report.pdf  ").as_deref(),
            Some("report.pdf")
        );
        assert_eq!(
            sanitize_filename("report.pdf.").as_deref(),
            Some("report.pdf")
        );
        assert_eq!(
            sanitize_filename("report.pdf. . ").as_deref(),
            Some("report.pdf")
        );
        assert_eq!(sanitize_filename(".bashrc").as_deref(), Some("bashrc"));
        assert_eq!(sanitize_filename("...x...").as_deref(), Some("x"));
        assert_eq!(sanitize_filename("a. .b").as_deref(), Some("a. .b"));
    }

    #[test]
    fn sanitize_removes_control_chars() {
        assert_eq!(
            sanitize_filename("a\u{0}b\u{7f}c\u{85}d\u{9f}.txt").as_deref(),
            Some("abcd.txt")
        );
        assert_eq!(
            sanitize_filename("line\r\nbreak.txt").as_deref(),
            Some("linebreak.txt")
        );
        assert_eq!(
            sanitize_filename("\u{1b}[31mred.txt").as_deref(),
            Some("[31mred.txt")
        );
        // Control chars can't be used to smuggle a dot-dot either.
        assert_eq!(sanitize_filename(".\u{0}."), None);
        assert_eq!(sanitize_filename("\u{1}..\u{2}"), None);
    }

    #[test]
    fn sanitize_removes_bidi_overrides() {
        assert_eq!(
            sanitize_filename("evil\u{202E}gpj.exe").as_deref(),
            Some("evilgpj.exe")
        );
        assert_eq!(
            sanitize_filename("a\u{2066}b\u{2069}\u{200F}.txt").as_deref(),
            Some("ab.txt")
        );
    }

    #[test]
    fn sanitize_rejects_reserved_prefix() {
        assert_eq!(sanitize_filename(".sluice-upload-1"), None);
        assert_eq!(sanitize_filename(".SLUICE-upload-1"), None);
        assert_eq!(sanitize_filename("  .sluice-x"), None);
        assert_eq!(sanitize_filename("dir/.sluice-x"), None);
        assert_eq!(sanitize_filename(".\u{0}sluice-x"), None);
        assert_eq!(sanitize_filename(".sluice").as_deref(), Some("sluice"));
    }

    #[test]
    fn sanitize_truncates_long_names_without_extension() {
        let out = sanitize_filename(&"a".repeat(300)).unwrap();
        assert_eq!(out, "a".repeat(MAX_FILENAME_BYTES));
        // Multi-byte chars: cut on a boundary, never mid-char.
        let out = sanitize_filename(&"😀".repeat(100)).unwrap();
        assert_eq!(out.len(), MAX_FILENAME_BYTES);
        let out = sanitize_filename(&format!("x{}", "é".repeat(150))).unwrap();
        assert!(out.len() <= MAX_FILENAME_BYTES && out.len() >= MAX_FILENAME_BYTES - 1);
        assert!(out.starts_with('x'));
    }

    #[test]
    fn sanitize_truncates_long_names_keeping_short_extension() {
        let out = sanitize_filename(&format!("{}.txt", "a".repeat(300))).unwrap();
        assert_eq!(out.len(), MAX_FILENAME_BYTES);
        assert!(out.ends_with(".txt"));
        let out = sanitize_filename(&format!("{}.tar.gz", "é".repeat(200))).unwrap();
        assert!(out.len() <= MAX_FILENAME_BYTES);
        assert!(out.ends_with("é.gz"));
        let ext16 = "e".repeat(16);
        let out = sanitize_filename(&format!("{}.{ext16}", "a".repeat(300))).unwrap();
        assert_eq!(out.len(), MAX_FILENAME_BYTES);
        assert!(out.ends_with(&format!(".{ext16}")));
    }

    #[test]
    fn sanitize_truncates_long_extension_plainly() {
        let raw = format!("{}.{}", "a".repeat(300), "b".repeat(17));
        let out = sanitize_filename(&raw).unwrap();
        assert_eq!(out, "a".repeat(MAX_FILENAME_BYTES));
        // The "extension" is most of the name: plain cut.
        let raw = format!("a.{}", "b".repeat(300));
        let out = sanitize_filename(&raw).unwrap();
        assert_eq!(out.len(), MAX_FILENAME_BYTES);
        assert!(out.starts_with("a.b"));
    }

    #[test]
    fn sanitize_truncation_leaves_no_trailing_dots_or_spaces() {
        let raw = format!("a{}.txt", " .".repeat(200));
        assert_eq!(sanitize_filename(&raw).as_deref(), Some("a.txt"));
        let raw = format!("a{}b", ".".repeat(300));
        assert_eq!(sanitize_filename(&raw).as_deref(), Some("a.b"));
        let raw = format!("a{}", " ".repeat(300));
        assert_eq!(sanitize_filename(&raw).as_deref(), Some("a"));
        let raw = format!("a{}x", " ".repeat(300));
        assert_eq!(sanitize_filename(&raw).as_deref(), Some("a"));
    }

    #[test]
    fn sanitize_exactly_at_limit_is_untouched() {
        let raw = format!("{}.txt", "a".repeat(MAX_FILENAME_BYTES - 4));
        assert_eq!(sanitize_filename(&raw).as_deref(), Some(raw.as_str()));
    }

    // ---- parse_key ----

    #[test]
    fn parse_key_decodes() {
        assert_eq!(parse_key("a/b%20c.txt"), Ok("a/b c.txt".to_string()));
        assert_eq!(parse_key("plain"), Ok("plain".to_string()));
        assert_eq!(parse_key("caf%C3%A9/%e2%82%ac"), Ok("café/€".to_string()));
        assert_eq!(parse_key("raw-é"), Ok("raw-é".to_string()));
        // An encoded slash is a separator like any other.
        assert_eq!(parse_key("a%2Fb"), Ok("a/b".to_string()));
        // Decoded once only: a double-encoded dot-dot stays literal text.
        assert_eq!(parse_key("%252e%252e"), Ok("%2e%2e".to_string()));
        assert_eq!(parse_key("...").as_deref(), Ok("..."));
        assert_eq!(parse_key(".hidden").as_deref(), Ok(".hidden"));
    }

    #[test]
    fn parse_key_rejects_empty() {
        assert_eq!(parse_key(""), Err(KeyError::Empty));
    }

    #[test]
    fn parse_key_rejects_traversal() {
        let dots = KeyError::BadSegment("..".into());
        assert_eq!(parse_key(".."), Err(dots));
        assert_eq!(parse_key("../x"), Err(KeyError::BadSegment("..".into())));
        assert_eq!(parse_key("a/../b"), Err(KeyError::BadSegment("..".into())));
        assert_eq!(
            parse_key("%2e%2e/x"),
            Err(KeyError::BadSegment("..".into()))
        );
        assert_eq!(
            parse_key("%2E%2E/x"),
            Err(KeyError::BadSegment("..".into()))
        );
        assert_eq!(parse_key(".%2e"), Err(KeyError::BadSegment("..".into())));
        assert_eq!(
            parse_key("a%2F..%2Fb"),
            Err(KeyError::BadSegment("..".into()))
        );
        assert_eq!(parse_key("a/./b"), Err(KeyError::BadSegment(".".into())));
        assert_eq!(parse_key("a/%2e"), Err(KeyError::BadSegment(".".into())));
        assert_eq!(
            parse_key("..\\..\\boot.ini"),
            Err(KeyError::BadSegment("..\\..\\boot.ini".into()))
        );
        assert_eq!(parse_key("a%5Cb"), Err(KeyError::BadSegment("a\\b".into())));
    }

    #[test]
    fn parse_key_rejects_empty_segments() {
        let empty = || Err(KeyError::BadSegment(String::new()));
        assert_eq!(parse_key("a//b"), empty());
        assert_eq!(parse_key("a/"), empty());
        assert_eq!(parse_key("/a"), empty());
        assert_eq!(parse_key("/"), empty());
        assert_eq!(parse_key("a%2F"), empty());
    }

    #[test]
    fn parse_key_rejects_reserved_and_controls() {
        assert_eq!(
            parse_key(".sluice-tmp1"),
            Err(KeyError::BadSegment(".sluice-tmp1".into()))
        );
        assert_eq!(
            parse_key("a/.SLUICE-x"),
            Err(KeyError::BadSegment(".SLUICE-x".into()))
        );
        assert_eq!(
            parse_key("%2Esluice-x"),
            Err(KeyError::BadSegment(".sluice-x".into()))
        );
        assert_eq!(
            parse_key("a/%00b"),
            Err(KeyError::BadSegment("\\u{0}b".into()))
        );
        assert_eq!(
            parse_key("a/b%0A"),
            Err(KeyError::BadSegment("b\\n".into()))
        );
        assert_eq!(
            parse_key("a%7F"),
            Err(KeyError::BadSegment("a\\u{7f}".into()))
        );
        assert_eq!(
            parse_key("a%C2%85"),
            Err(KeyError::BadSegment("a\\u{85}".into()))
        );
        assert_eq!(
            parse_key("raw\u{1}"),
            Err(KeyError::BadSegment("raw\\u{1}".into()))
        );
    }

    #[test]
    fn parse_key_rejects_bad_escapes_and_non_utf8() {
        assert_eq!(parse_key("%ff"), Err(KeyError::NotUtf8));
        assert_eq!(parse_key("a/%C3"), Err(KeyError::NotUtf8));
        assert_eq!(parse_key("%C3%28"), Err(KeyError::NotUtf8));
        assert_eq!(parse_key("%"), Err(KeyError::BadSegment("%".into())));
        assert_eq!(parse_key("a/b%2"), Err(KeyError::BadSegment("b%2".into())));
        assert_eq!(parse_key("%zz"), Err(KeyError::BadSegment("%zz".into())));
        assert_eq!(parse_key("100%"), Err(KeyError::BadSegment("100%".into())));
        assert_eq!(parse_key("%%41"), Err(KeyError::BadSegment("%%41".into())));
    }

    #[test]
    fn parse_key_length_limits() {
        // 1024 bytes exactly is fine.
        let seg = "a".repeat(MAX_SEGMENT_BYTES);
        let key = format!("{seg}/{seg}/{seg}/{}/bb", "a".repeat(MAX_SEGMENT_BYTES - 2));
        assert_eq!(key.len(), MAX_KEY_BYTES);
        assert_eq!(parse_key(&key), Ok(key.clone()));
        assert_eq!(parse_key(&format!("{key}b")), Err(KeyError::TooLong));
        // Counted after decoding: 1004 bytes from 3004 encoded ones.
        let encoded = vec!["%C3%A9".repeat(100); 5].join("/");
        assert_eq!(encoded.len(), 3004);
        assert_eq!(parse_key(&encoded), Ok(vec!["é".repeat(100); 5].join("/")));
        // Too long to ever fit, refused before decoding.
        assert_eq!(parse_key(&"a".repeat(5000)), Err(KeyError::TooLong));
        assert_eq!(parse_key(&"%41".repeat(400)), Err(KeyError::TooLong));
    }

    #[test]
    fn parse_key_segment_limits() {
        let ok = vec!["s"; MAX_KEY_SEGMENTS].join("/");
        assert_eq!(parse_key(&ok), Ok(ok.clone()));
        let too_many = vec!["s"; MAX_KEY_SEGMENTS + 1].join("/");
        assert_eq!(parse_key(&too_many), Err(KeyError::TooLong));
        let seg = "a".repeat(MAX_SEGMENT_BYTES);
        assert_eq!(parse_key(&seg), Ok(seg.clone()));
        assert_eq!(parse_key(&format!("{seg}a")), Err(KeyError::TooLong));
        assert_eq!(parse_key(&format!("x/{seg}a/y")), Err(KeyError::TooLong));
    }

    // ---- extension ----

    #[test]
    fn extension_cases() {
        assert_eq!(extension("photo.JPG").as_deref(), Some("jpg"));
        assert_eq!(extension("archive.tar.gz").as_deref(), Some("gz"));
        assert_eq!(extension("README"), None);
        assert_eq!(extension(".bashrc"), None);
        assert_eq!(extension("..bashrc"), None);
        assert_eq!(extension("name."), None);
        assert_eq!(extension(""), None);
        assert_eq!(extension("."), None);
        assert_eq!(extension(".."), None);
        assert_eq!(extension("v1.2/README"), None);
        assert_eq!(extension("C:\\dir.d\\file"), None);
        assert_eq!(extension("dir/.config.yml").as_deref(), Some("yml"));
        assert_eq!(extension("Ünïcode.ÉXT").as_deref(), Some("éxt"));
    }

    // ---- robustness ----

    /// The invariants of the names above, plus the other filters' string
    /// functions run on the same input for panics only.
    fn check_all_string_fns(s: &str) {
        if let Some(name) = sanitize_filename(s) {
            assert!(!name.is_empty());
            assert!(name.len() <= MAX_FILENAME_BYTES, "{s:?}");
            assert!(name != "." && name != "..");
            assert!(!name.contains(['/', '\\']));
            assert!(!name.chars().any(|c| c.is_control() || is_bidi_control(c)));
            assert!(!is_reserved(&name));
            assert!(!name.starts_with(is_trimmed_edge) && !name.ends_with(is_trimmed_edge));
            // Sanitising is idempotent.
            assert_eq!(sanitize_filename(&name).as_deref(), Some(name.as_str()));
        }
        if let Ok(key) = parse_key(s) {
            assert!(!key.is_empty() && key.len() <= MAX_KEY_BYTES);
            assert!(key.split('/').count() <= MAX_KEY_SEGMENTS);
            for seg in key.split('/') {
                assert!(!seg.is_empty() && seg != "." && seg != "..");
                assert!(seg.len() <= MAX_SEGMENT_BYTES);
                assert!(!seg.chars().any(|c| c.is_control() || c == '\\'));
                assert!(!is_reserved(seg));
            }
        }
        let _ = extension(s);
        let allow = list(&["image/*", "text/plain", "*/*", s]);
        let _ = type_allowed(&allow, s);
        let _ = extension_allowed(&list(&[s, "txt"]), s);
        for sniffed in [
            Sniffed::Text,
            Sniffed::Binary,
            Sniffed::Known("application/zip"),
        ] {
            let _ = declared_agrees(s, &sniffed);
        }
        let _ = sniff(s.as_bytes());
    }

    #[test]
    fn never_panics_on_odd_inputs() {
        let odd = [
            "",
            "/",
            "\\",
            "//",
            "\\\\",
            ".",
            "..",
            "...",
            "%",
            "%%",
            "%2",
            "%2e",
            "%00",
            "%ff%fe",
            "\0",
            "\u{7f}",
            "\u{85}",
            "\u{202E}",
            "\u{FEFF}",
            "\u{10FFFF}",
            "😀",
            "é",
            ";",
            ";;",
            "/;",
            "a/b;c=d",
            "*/*;q=0.5",
            "text/plain; charset=\"",
            "text/plain;=",
            "image/png;;;",
            " ",
            "\t\n\r",
            ".sluice-",
            ".sluice",
            "..\\..\\..",
            "../../../",
            "a/./b/../c",
            "C:",
            "C:\\",
            "\\\\server\\share\\f.txt",
            "con",
            "nul.txt",
        ];
        for s in odd {
            check_all_string_fns(s);
            check_all_string_fns(&s.repeat(300));
        }
        // Random strings over an alphabet rich in separators, dots, escapes,
        // controls and multi-byte chars.
        let alphabet = b"./\\%2eEfF0aZ ;*\x00\x01\x7f";
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for i in 0..3000 {
            let len = (rng.next() % 64) as usize + if i % 50 == 0 { 1100 } else { 0 };
            let bytes = rng.bytes(len, alphabet);
            let mut s = String::from_utf8_lossy(&bytes).into_owned();
            if i % 3 == 0 {
                s.push_str("é€😀\u{85}\u{202E}");
            }
            check_all_string_fns(&s);
        }
    }
}
