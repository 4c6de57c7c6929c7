//! Media types: what a part says it is (its Content-Type, parsed by hand into
//! an essence; `allow` shares the parser) and what its first [`SNIFF_LEN`]
//! bytes look like ([`sniff`]), and whether the two agree
//! ([`declared_agrees`], through alias and container tables).
//!
//! Trade-offs: sniffing looks only at the head of a part, so a polyglot
//! (valid PNG header, script later on) still passes; some of `infer`'s
//! signatures are short (GIF is 3 bytes, PDF's `%PDF` may sit anywhere in
//! the first KiB), so text that starts like one is classed as that type.
//! Both checks lean towards rejecting: an odd but honest file may be refused,
//! a mislabelled one should not get through.

use std::borrow::Cow;

const OCTET_STREAM: &str = "application/octet-stream";

/// Lowercase "type/subtype[+suffix]" of a content type, params dropped; None
/// when it isn't `token/token`. Parsed by hand rather than with the `mime`
/// crate, which refuses common header spellings like "image/png ; q=1".
pub(super) fn essence(ct: &str) -> Option<Cow<'_, str>> {
    let essence = before_params(ct);
    // One pass over the bytes: each a token char but for a single '/' with
    // a token on both sides (a table lookup per byte; this runs a few times
    // per upload).
    let mut slash = None;
    let mut upper = false;
    for (i, &b) in essence.as_bytes().iter().enumerate() {
        if b == b'/' && slash.is_none() {
            slash = Some(i);
        } else if TCHAR[usize::from(b)] {
            upper |= b.is_ascii_uppercase();
        } else {
            return None;
        }
    }
    let slash = slash?;
    if slash == 0 || slash + 1 == essence.len() {
        return None;
    }
    Some(if upper {
        Cow::Owned(essence.to_ascii_lowercase())
    } else {
        Cow::Borrowed(essence)
    })
}

/// A media type without its parameters, trimmed. Byte loops here rather
/// than `split(';')` and `split_once('/')`: these strings are a few dozen
/// bytes, looked at several times per upload, and the `char` searcher's
/// setup costs more than such a scan (callgrind: about 175 instructions a
/// call, 1.2k per small PUT).
pub(crate) fn before_params(s: &str) -> &str {
    let end = s.bytes().position(|b| b == b';').unwrap_or(s.len());
    s[..end].trim()
}

/// "type/subtype" split at its first '/'.
pub(super) fn split_type(s: &str) -> Option<(&str, &str)> {
    let i = s.bytes().position(|b| b == b'/')?;
    Some((&s[..i], &s[i + 1..]))
}

/// RFC 9110 token characters, by byte.
const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = matches!(b as u8,
            b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z'
            | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_'
            | b'`' | b'|' | b'~');
        b += 1;
    }
    t
};

/// Bytes of a part to buffer before sniffing. Most of `infer`'s signatures
/// sit in the first few hundred bytes (tar's, the furthest fixed one, at
/// 257), but telling docx/xlsx/pptx from a plain zip means scanning the
/// first zip entries, which can take a few KiB; 8 KiB covers that and gives
/// the text check a fair sample while staying cheap per part.
pub const SNIFF_LEN: usize = 8192;

/// What the head of a part looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// A format `infer` recognised; its mime type.
    Known(&'static str),
    /// Not recognised, but reads as UTF-8 text.
    Text,
    /// Neither.
    Binary,
}

/// Sniff the first bytes (up to [`SNIFF_LEN`]; may be shorter when the part
/// is short; bytes past it are ignored). Known when `infer::get` recognises
/// it; else Text when the bytes are valid UTF-8 (a multi-byte sequence cut
/// short at the end is allowed, since we can't tell a cut head from a whole
/// part) with no NUL and few other control chars; else Binary. UTF-16 text
/// comes out Binary (it is full of NULs): uploads are expected in UTF-8.
/// An empty head is Text: there is nothing in it that isn't.
pub fn sniff(head: &[u8]) -> Sniffed {
    let head = head.get(..SNIFF_LEN).unwrap_or(head);
    if let Some(kind) = infer::get(head) {
        return Sniffed::Known(kind.mime_type());
    }
    if looks_like_text(head) {
        Sniffed::Text
    } else {
        Sniffed::Binary
    }
}

fn looks_like_text(head: &[u8]) -> bool {
    let text = match std::str::from_utf8(head) {
        Ok(s) => s,
        // error_len() is None only when the input ends mid-sequence: that is
        // the cut, not bad data. Anything else is invalid UTF-8.
        Err(e) if e.error_len().is_none() => {
            match head.get(..e.valid_up_to()).map(std::str::from_utf8) {
                Some(Ok(s)) => s,
                _ => return false,
            }
        }
        Err(_) => return false,
    };
    let mut chars = 0usize;
    let mut controls = 0usize;
    for c in text.chars() {
        chars += 1;
        if c == '\0' {
            return false;
        }
        // Tab, LF, CR and form feed are ordinary in text files.
        if c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\u{0C}') {
            controls += 1;
        }
    }
    // "Few": at most about 3%, so a stray ESC or BEL in a log passes but
    // binary data that happens to be valid UTF-8 does not.
    controls * 32 <= chars
}

/// The mime a sniff stands for when checked against the allowlist.
pub fn sniffed_mime(s: &Sniffed) -> &'static str {
    match s {
        Sniffed::Known(m) => m,
        Sniffed::Text => "text/plain",
        Sniffed::Binary => OCTET_STREAM,
    }
}

/// Names for the same format. The first of each group is what `infer` says;
/// the rest are what clients and OSes send. A name appears in one group only.
const ALIASES: &[&[&str]] = &[
    &["image/jpeg", "image/jpg", "image/pjpeg"],
    &["image/png", "image/x-png"],
    &["image/bmp", "image/x-bmp", "image/x-ms-bmp"],
    &["image/vnd.microsoft.icon", "image/x-icon", "image/ico"],
    &[
        "image/heif",
        "image/heic",
        "image/heif-sequence",
        "image/heic-sequence",
    ],
    &[
        "image/vnd.adobe.photoshop",
        "image/x-photoshop",
        "image/psd",
        "application/x-photoshop",
    ],
    &["audio/x-wav", "audio/wav", "audio/wave", "audio/vnd.wave"],
    &["audio/mpeg", "audio/mp3", "audio/mpeg3", "audio/x-mpeg"],
    &["audio/x-flac", "audio/flac"],
    &["audio/m4a", "audio/x-m4a"],
    &["audio/x-aiff", "audio/aiff"],
    &["audio/midi", "audio/x-midi", "audio/mid"],
    &["audio/aac", "audio/x-aac"],
    &["audio/ogg", "application/ogg"],
    &["video/x-msvideo", "video/avi", "video/msvideo"],
    &[
        "application/zip",
        "application/x-zip-compressed",
        "application/x-zip",
        "multipart/x-zip",
    ],
    &["application/gzip", "application/x-gzip"],
    &[
        "application/vnd.rar",
        "application/x-rar-compressed",
        "application/x-rar",
    ],
    &["application/x-bzip2", "application/x-bzip"],
    &["application/zstd", "application/x-zstd"],
    &["application/pdf", "application/x-pdf"],
    &["application/rtf", "text/rtf"],
    &["application/font-woff", "font/woff", "font/woff2"],
    &[
        "application/font-sfnt",
        "font/ttf",
        "font/otf",
        "font/sfnt",
        "application/x-font-ttf",
        "application/x-font-otf",
    ],
    &["application/vnd.sqlite3", "application/x-sqlite3"],
    &[
        "application/x-shockwave-flash",
        "application/vnd.adobe.flash-movie",
    ],
    &["application/x-x509-ca-cert", "application/pkix-cert"],
    &[
        "application/vnd.microsoft.portable-executable",
        "application/x-msdownload",
        "application/x-dosexec",
        "application/x-msdos-program",
    ],
    &["text/xml", "application/xml"],
    &["text/html", "application/xhtml+xml"],
    &[
        "text/x-shellscript",
        "application/x-sh",
        "application/x-shellscript",
        "text/x-sh",
    ],
    // infer reports Embedded OpenType fonts as plain octet-stream.
    &["application/octet-stream", "application/vnd.ms-fontobject"],
];

/// Formats that are a more specific use of a container format; a trailing
/// '.' makes the entry a prefix. Agreement holds both ways: infer may see
/// only the container (the telling entry is past the head), or it may name
/// the specific type while the client declared the container.
const CONTAINERS: &[(&str, &[&str])] = &[
    (
        "application/zip",
        &[
            "application/vnd.openxmlformats-officedocument.",
            "application/epub+zip",
            "application/java-archive",
            "application/vnd.oasis.opendocument.",
            "application/vnd.android.package-archive",
        ],
    ),
    (
        // OLE2 compound files: legacy Office and MSI.
        "application/x-ole-storage",
        &[
            "application/msword",
            "application/vnd.ms-excel",
            "application/vnd.ms-powerpoint",
            "application/vnd.ms-outlook",
            "application/x-msi",
            "application/vnd.visio",
        ],
    ),
    ("audio/ogg", &["audio/opus", "audio/vorbis", "video/ogg"]),
    ("video/mp4", &["audio/mp4", "audio/m4a", "application/mp4"]),
    (
        "video/x-matroska",
        &["video/webm", "audio/webm", "audio/x-matroska"],
    ),
];

/// Types accepted for text that `infer` does not name. Deliberately not
/// image/svg+xml (nor other +xml types): SVG can carry script, so a text
/// upload may not pass as an image just by saying so.
const TEXTUAL_APPLICATION_TYPES: &[&str] = &[
    "application/json",
    "application/xml",
    "application/javascript",
    "application/x-yaml",
    "application/yaml",
    "application/csv",
    "application/x-ndjson",
    "application/toml",
];

fn canonical(m: &str) -> &str {
    ALIASES
        .iter()
        .find(|group| group.contains(&m))
        .and_then(|group| group.first().copied())
        .unwrap_or(m)
}

fn specialises(specific: &str, generic: &str) -> bool {
    CONTAINERS.iter().any(|(container, kinds)| {
        *container == generic
            && kinds.iter().any(|k| {
                if k.ends_with('.') {
                    specific.starts_with(k)
                } else {
                    specific == *k
                }
            })
    })
}

fn is_textual(declared: &str) -> bool {
    declared.starts_with("text/")
        || TEXTUAL_APPLICATION_TYPES.contains(&declared)
        // JSON dialects (ld+json, geo+json, ...) are data, never executed.
        || (declared.starts_with("application/") && declared.ends_with("+json"))
}

/// Does the declared content type agree with what was sniffed?
///
/// - Declared "application/octet-stream" agrees with everything: a client
///   that doesn't know the type says so, and the allowlist check on the
///   sniffed type still applies.
/// - Known(m): declared is m, an alias of m (image/jpg ~ image/jpeg, ...), or
///   m and the declared type are container and specialisation either way
///   round (application/zip ~ docx, epub, jar, odf). When m is one of infer's
///   text types (html, xml, shell script: weak prefix checks), the bytes are
///   still text, so any textual declaration agrees as for Text.
/// - Text: declared is text/*, or JSON/XML/JS/YAML/CSV/NDJSON/TOML under
///   application/. Never image/svg+xml (script risk).
/// - Binary: only octet-stream.
///
/// A declared type that doesn't parse, or holds a wildcard, never agrees;
/// the caller substitutes RFC 7578's text/plain when a part has none.
pub fn declared_agrees(declared: &str, sniffed: &Sniffed) -> bool {
    let Some(declared) = essence(declared) else {
        return false;
    };
    if declared.contains('*') {
        return false;
    }
    if declared == OCTET_STREAM {
        return true;
    }
    match sniffed {
        Sniffed::Known(m) => {
            let m = m.to_ascii_lowercase();
            let (d, m) = (canonical(&declared), canonical(&m));
            d == m
                || specialises(d, m)
                || specialises(m, d)
                || (m.starts_with("text/") && is_textual(d))
        }
        Sniffed::Text => is_textual(&declared),
        Sniffed::Binary => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::tests::{XorShift, list, type_allowed};

    // ---- sniff ----

    fn png() -> Vec<u8> {
        let mut v = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
        v.extend_from_slice(&[0, 0, 0, 13]);
        v.extend_from_slice(b"IHDR");
        v.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0]);
        v.extend_from_slice(&[0x1F, 0x15, 0xC4, 0x89]);
        v
    }

    fn jpeg() -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
        v.extend_from_slice(b"JFIF\0");
        v.extend_from_slice(&[1, 1, 0, 0, 1, 0, 1, 0, 0]);
        v
    }

    fn gif() -> Vec<u8> {
        let mut v = b"GIF89a".to_vec();
        v.extend_from_slice(&[1, 0, 1, 0, 0x80, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, b';']);
        v
    }

    fn pdf() -> Vec<u8> {
        b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n".to_vec()
    }

    /// A zip local file header (signature, version, flags, method, time,
    /// date, crc, sizes, name length, extra length) followed by the name.
    fn zip_entry(name: &str) -> Vec<u8> {
        let mut v = vec![b'P', b'K', 0x03, 0x04, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        v.extend_from_slice(&[0; 12]); // crc32, compressed and plain size
        v.extend_from_slice(&(name.len() as u16).to_le_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(name.as_bytes());
        v.extend_from_slice(b"hello");
        v
    }

    #[test]
    fn sniff_magic_bytes() {
        assert_eq!(sniff(&png()), Sniffed::Known("image/png"));
        assert_eq!(sniff(&jpeg()), Sniffed::Known("image/jpeg"));
        assert_eq!(sniff(&gif()), Sniffed::Known("image/gif"));
        assert_eq!(sniff(&pdf()), Sniffed::Known("application/pdf"));
        assert_eq!(
            sniff(&zip_entry("hello.txt")),
            Sniffed::Known("application/zip")
        );
        assert_eq!(
            sniff(&zip_entry("word/document.xml")),
            Sniffed::Known(
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            )
        );
        let mut epub = zip_entry("mimetype");
        epub.truncate(38);
        epub.extend_from_slice(b"application/epub+zip");
        assert_eq!(sniff(&epub), Sniffed::Known("application/epub+zip"));
        // Only the head is looked at: trailing junk doesn't change anything.
        let mut long_png = png();
        long_png.extend(std::iter::repeat_n(0u8, SNIFF_LEN * 2));
        assert_eq!(sniff(&long_png), Sniffed::Known("image/png"));
    }

    #[test]
    fn sniff_text() {
        assert_eq!(sniff(b"hello, world\n"), Sniffed::Text);
        assert_eq!(sniff(b"a,b,c\r\n1,2,3\r\n"), Sniffed::Text);
        assert_eq!(sniff(b"col1\tcol2\x0cpage2"), Sniffed::Text);
        assert_eq!(sniff("naïve café ☕ 日本語".as_bytes()), Sniffed::Text);
        assert_eq!(sniff(b"{\"json\": true}"), Sniffed::Text);
        assert_eq!(sniff(b"\xEF\xBB\xBFwith BOM"), Sniffed::Text);
        assert_eq!(sniff(b""), Sniffed::Text);
        // A stray control char in plenty of text is fine.
        let mut log = "x".repeat(100).into_bytes();
        log.push(0x1B);
        assert_eq!(sniff(&log), Sniffed::Text);
    }

    #[test]
    fn sniff_truncated_utf8_at_cut_is_text() {
        let euro = "€".as_bytes(); // 3 bytes
        let mut head = b"price: ".to_vec();
        head.extend_from_slice(&euro[..2]);
        assert_eq!(sniff(&head), Sniffed::Text);
        let emoji = "😀".as_bytes(); // 4 bytes
        for cut in 1..4 {
            let mut head = b"smile ".to_vec();
            head.extend_from_slice(&emoji[..cut]);
            assert_eq!(sniff(&head), Sniffed::Text, "cut {cut}");
        }
        // A head longer than SNIFF_LEN is cut there, maybe mid-char.
        let mut long = "a".repeat(SNIFF_LEN - 1).into_bytes();
        long.extend_from_slice("€€€".as_bytes());
        assert_eq!(sniff(&long), Sniffed::Text);
    }

    #[test]
    fn sniff_binary() {
        assert_eq!(sniff(b"text\0with nul"), Sniffed::Binary);
        assert_eq!(sniff(&[0u8; 16]), Sniffed::Binary);
        // Invalid UTF-8 in the middle is not a cut.
        assert_eq!(sniff(b"abc\xFFdef"), Sniffed::Binary);
        assert_eq!(sniff(b"abc\xC3\x28def"), Sniffed::Binary);
        // A lone continuation byte at the end is invalid, not truncated.
        assert_eq!(sniff(b"abc\x80"), Sniffed::Binary);
        // Many control chars: not text, even though valid UTF-8.
        assert_eq!(sniff(b"\x01\x02\x03\x04abc\x05\x06"), Sniffed::Binary);
        let few_too_many: Vec<u8> = (0..64)
            .map(|i| if i % 16 == 0 { 0x07 } else { b'a' })
            .collect();
        assert_eq!(sniff(&few_too_many), Sniffed::Binary);
        // UTF-16 is NUL-heavy: binary by our rules.
        assert_eq!(sniff(b"\xFF\xFEh\0i\0"), Sniffed::Binary);
    }

    #[test]
    fn sniffed_mime_values() {
        assert_eq!(sniffed_mime(&Sniffed::Known("image/png")), "image/png");
        assert_eq!(sniffed_mime(&Sniffed::Text), "text/plain");
        assert_eq!(sniffed_mime(&Sniffed::Binary), "application/octet-stream");
        assert_eq!(sniffed_mime(&sniff(&gif())), "image/gif");
    }

    // ---- declared_agrees ----

    #[test]
    fn agreement_table() {
        use Sniffed::*;
        let docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
        let cases: &[(&str, Sniffed, bool)] = &[
            // exact, with case and params
            ("image/png", Known("image/png"), true),
            ("IMAGE/PNG; name=x", Known("image/png"), true),
            ("image/jpeg", Known("image/png"), false),
            ("text/plain", Known("image/png"), false),
            ("image/svg+xml", Known("image/png"), false),
            // aliases, both ways
            ("image/jpg", Known("image/jpeg"), true),
            ("image/pjpeg", Known("image/jpeg"), true),
            ("image/x-png", Known("image/png"), true),
            ("audio/wav", Known("audio/x-wav"), true),
            ("audio/mp3", Known("audio/mpeg"), true),
            (
                "application/x-zip-compressed",
                Known("application/zip"),
                true,
            ),
            ("application/x-gzip", Known("application/gzip"), true),
            ("image/x-icon", Known("image/vnd.microsoft.icon"), true),
            ("font/woff2", Known("application/font-woff"), true),
            ("application/xml", Known("text/xml"), true),
            ("image/jpg", Known("image/png"), false),
            // containers and their specialisations, both ways
            (docx, Known("application/zip"), true),
            (
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                Known("application/zip"),
                true,
            ),
            ("application/epub+zip", Known("application/zip"), true),
            ("application/java-archive", Known("application/zip"), true),
            (
                "application/vnd.oasis.opendocument.text",
                Known("application/zip"),
                true,
            ),
            ("application/zip", Known(docx), true),
            ("application/x-zip-compressed", Known(docx), true),
            (docx, Known(docx), true),
            (
                "application/msword",
                Known("application/x-ole-storage"),
                true,
            ),
            ("audio/ogg", Known("audio/opus"), true),
            ("application/pdf", Known("application/zip"), false),
            (
                "application/vnd.openxmlformats-officedocument",
                Known("application/zip"),
                false,
            ),
            ("application/epub+zip", Known(docx), false),
            // infer's text kinds: any textual declaration, never svg
            ("text/html", Known("text/html"), true),
            ("text/plain", Known("text/html"), true),
            ("text/x-python", Known("text/x-shellscript"), true),
            ("image/svg+xml", Known("text/xml"), false),
            ("image/png", Known("text/html"), false),
            // text
            ("text/plain", Text, true),
            ("text/csv; charset=utf-8", Text, true),
            ("TEXT/Markdown", Text, true),
            ("application/json", Text, true),
            ("application/ld+json", Text, true),
            ("application/xml", Text, true),
            ("application/javascript", Text, true),
            ("application/x-yaml", Text, true),
            ("application/yaml", Text, true),
            ("application/csv", Text, true),
            ("application/x-ndjson", Text, true),
            ("image/svg+xml", Text, false),
            ("application/xhtml+xml", Text, false),
            ("image/png", Text, false),
            ("application/pdf", Text, false),
            // binary
            ("application/pdf", Binary, false),
            ("text/plain", Binary, false),
            ("image/png", Binary, false),
            // octet-stream agrees with everything
            ("application/octet-stream", Binary, true),
            ("application/octet-stream", Text, true),
            ("application/octet-stream", Known("image/png"), true),
            (
                "Application/Octet-Stream; x=y",
                Known("application/pdf"),
                true,
            ),
            // unparseable or wildcard declarations never agree
            ("", Text, false),
            ("garbage", Text, false),
            ("text/*", Text, false),
            ("*/*", Binary, false),
            ("image/*", Known("image/png"), false),
        ];
        for (declared, sniffed, want) in cases {
            assert_eq!(
                declared_agrees(declared, sniffed),
                *want,
                "{declared:?} vs {sniffed:?}"
            );
        }
    }

    #[test]
    fn alias_tables_are_consistent() {
        let mut seen = std::collections::HashSet::new();
        for group in ALIASES {
            assert!(group.len() >= 2);
            for m in *group {
                assert_eq!(*m, m.to_ascii_lowercase());
                assert!(seen.insert(*m), "{m} in two alias groups");
                assert!(essence(m).is_some(), "{m} does not parse");
            }
        }
        for (container, kinds) in CONTAINERS {
            assert_eq!(
                canonical(container),
                *container,
                "container must be canonical"
            );
            for k in *kinds {
                assert_eq!(*k, k.to_ascii_lowercase());
            }
        }
        assert!(!TEXTUAL_APPLICATION_TYPES.contains(&"image/svg+xml"));
    }

    #[test]
    fn sniff_then_check_end_to_end() {
        let allow = list(&["image/*", "application/pdf"]);
        let s = sniff(&png());
        assert!(type_allowed(&allow, sniffed_mime(&s)));
        assert!(declared_agrees("image/png", &s));
        // A script dressed up as a PNG: sniffed text, refused twice over.
        let s = sniff(b"<svg onload=alert(1)>");
        assert!(!type_allowed(&allow, sniffed_mime(&s)));
        assert!(!declared_agrees("image/png", &s));
        assert!(!declared_agrees("image/svg+xml", &s));
    }

    // ---- robustness ----

    #[test]
    fn sniff_never_panics_on_odd_bytes() {
        let magics: &[&[u8]] = &[
            b"",
            b"PK\x03\x04",
            b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1",
            b"\x89PNG\r\n\x1a\n",
            b"\xFF\xD8\xFF",
            b"GIF8",
            b"%PDF",
            b"\x1F\x8B",
            b"RIFF",
            b"\x00\x00\x00\x18ftyp",
            b"\x1A\x45\xDF\xA3",
            b"OggS",
            b"<?xml",
            b"#!",
        ];
        let mut rng = XorShift(42);
        for magic in magics {
            for len in [
                0usize, 1, 2, 3, 4, 7, 8, 21, 22, 29, 30, 31, 57, 58, 261, 262, 600, 6000, 9000,
            ] {
                for _ in 0..4 {
                    let mut head = magic.to_vec();
                    head.extend(rng.bytes(len, &[]));
                    let s = sniff(&head);
                    let _ = sniffed_mime(&s);
                    let _ = declared_agrees("application/zip", &s);
                    // Every prefix too: the proxy may sniff any short part.
                    if len <= 64 {
                        for cut in 0..head.len() {
                            let _ = sniff(&head[..cut]);
                        }
                    }
                }
            }
        }
    }
}
