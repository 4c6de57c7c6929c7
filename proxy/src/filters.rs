//! Per-part checks for uploads: pure functions over strings and bytes, no IO
//! and no async, so the proxy's streaming code stays thin and these rules
//! can be tested exhaustively on their own.
//!
//! A multipart part flows through them in this order: the client's filename
//! goes through [`sanitize_filename`] and the route's [`Allowlists`] (its
//! extension); its declared Content-Type through the same lists; the first
//! [`SNIFF_LEN`] bytes are buffered and [`sniff`]ed, and the part is kept
//! only if the sniffed type is allowed too (via [`sniffed_mime`]) and
//! [`declared_agrees`] with it. Object keys in download/upload paths go
//! through [`parse_key`].
//!
//! Trade-offs: sniffing looks only at the head of a part, so a polyglot
//! (valid PNG header, script later on) still passes; some of `infer`'s
//! signatures are short (GIF is 3 bytes, PDF's `%PDF` may sit anywhere in
//! the first KiB), so text that starts like one is classed as that type.
//! Both checks lean towards rejecting: an odd but honest file may be refused,
//! a mislabelled one should not get through.

use std::borrow::Cow;

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

const OCTET_STREAM: &str = "application/octet-stream";

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
fn extension_of(filename: &str) -> Option<&str> {
    // Only the last component counts: "v1.2/README" has no extension.
    let base = filename.rsplit(['/', '\\']).next().unwrap_or(filename);
    let (stem, ext) = base.rsplit_once('.')?;
    // A stem of only dots means a hidden file (".bashrc", "..bashrc").
    if ext.is_empty() || stem.trim_start_matches('.').is_empty() {
        return None;
    }
    Some(ext)
}

/// A route's type and extension allowlists, normalised once when its
/// configuration loads rather than on every request (callgrind: parsing
/// them on every request was about 2k of a small PUT's 40k instructions).
/// Built from the compiled [`sluice_policy::UploadRules`] lists, which are
/// lowercase already; case, spaces, dots and params are tolerated anyway.
#[derive(Debug, Clone)]
pub struct Allowlists {
    /// None: any type. Some(patterns): only those; a pattern that does not
    /// parse is dropped, so a list of only such patterns allows nothing.
    types: Option<Vec<TypePattern>>,
    /// None: any name. Some(extensions): lowercase, without the dot.
    extensions: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TypePattern {
    /// `*/*`: any concrete type.
    Any,
    /// `image/*`: the lowercase top-level type.
    Top(String),
    /// `image/png`.
    Exact(String, String),
}

impl Allowlists {
    pub fn new(types: &[String], extensions: &[String]) -> Self {
        let types =
            (!types.is_empty()).then(|| types.iter().filter_map(|p| type_pattern(p)).collect());
        let extensions = (!extensions.is_empty()).then(|| {
            extensions
                .iter()
                .map(|a| {
                    a.trim()
                        .trim_start_matches('.')
                        .chars()
                        .flat_map(char::to_lowercase)
                        .collect()
                })
                .collect()
        });
        Self { types, extensions }
    }

    /// Does content type `ct` (e.g. "image/png; charset=x", any case, params
    /// ignored) match one pattern: "image/png", "image/*", "*/*"? `ct` must
    /// be a concrete type: a wildcard such as "image/*" in `ct` is not
    /// allowed by a non-empty list.
    pub fn type_allowed(&self, ct: &str) -> bool {
        let Some(patterns) = &self.types else {
            return true;
        };
        let Some(essence) = essence(ct) else {
            return false;
        };
        let Some((ty, sub)) = split_type(&essence) else {
            return false;
        };
        if ty == "*" || sub == "*" {
            return false;
        }
        patterns.iter().any(|p| match p {
            TypePattern::Any => true,
            TypePattern::Top(t) => t == ty,
            TypePattern::Exact(t, s) => t == ty && s == sub,
        })
    }

    /// A name with no extension is refused by a non-empty list.
    pub fn extension_allowed(&self, filename: &str) -> bool {
        let Some(allowed) = &self.extensions else {
            return true;
        };
        let Some(ext) = extension_of(filename) else {
            return false;
        };
        if ext.is_ascii() {
            // The list is lowercase: no lowercased copy of `ext` is needed.
            allowed.iter().any(|a| a.eq_ignore_ascii_case(ext))
        } else {
            let ext = ext.to_lowercase();
            allowed.contains(&ext)
        }
    }
}

/// One allowlist entry, parsed; None when it is not `type/sub`, `type/*` or
/// `*/*` (config validation refuses those, this is the backstop).
fn type_pattern(pattern: &str) -> Option<TypePattern> {
    let (pt, ps) = split_type(before_params(pattern))?;
    let (pt, ps) = (pt.trim(), ps.trim());
    match (pt, ps) {
        ("*", "*") => Some(TypePattern::Any),
        // "*/png" is meaningless; only "*/*" is a valid type wildcard.
        ("*", _) => None,
        (t, "*") => Some(TypePattern::Top(t.to_ascii_lowercase())),
        (t, s) => Some(TypePattern::Exact(
            t.to_ascii_lowercase(),
            s.to_ascii_lowercase(),
        )),
    }
}

/// Lowercase "type/subtype[+suffix]" of a content type, params dropped; None
/// when it isn't `token/token`. Parsed by hand rather than with the `mime`
/// crate, which refuses common header spellings like "image/png ; q=1".
fn essence(ct: &str) -> Option<Cow<'_, str>> {
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
fn split_type(s: &str) -> Option<(&str, &str)> {
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

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

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

    // ---- type_allowed / extension_allowed ----

    fn type_allowed(list: &[String], ct: &str) -> bool {
        Allowlists::new(list, &[]).type_allowed(ct)
    }

    fn extension_allowed(list: &[String], name: &str) -> bool {
        Allowlists::new(&[], list).extension_allowed(name)
    }

    #[test]
    fn type_allowed_empty_list_allows_all() {
        assert!(type_allowed(&[], "image/png"));
        assert!(type_allowed(&[], "garbage"));
        assert!(type_allowed(&[], ""));
    }

    #[test]
    fn type_allowed_matching() {
        let allow = list(&["image/png", "text/*"]);
        assert!(type_allowed(&allow, "image/png"));
        assert!(type_allowed(&allow, "IMAGE/PNG"));
        assert!(type_allowed(&allow, "image/png; charset=x"));
        assert!(type_allowed(&allow, "  Image/Png ;Foo=\"bar\""));
        assert!(type_allowed(&allow, "text/plain"));
        assert!(type_allowed(&allow, "Text/CSV; charset=utf-8"));
        assert!(!type_allowed(&allow, "image/jpeg"));
        assert!(!type_allowed(&allow, "image/pngx"));
        assert!(!type_allowed(&allow, "image/png+xml"));
        assert!(!type_allowed(&allow, "texts/plain"));
        assert!(!type_allowed(&allow, "application/octet-stream"));
        assert!(!type_allowed(&allow, "not a type"));
        assert!(!type_allowed(&allow, ""));
        assert!(!type_allowed(&allow, "image/"));
        assert!(!type_allowed(&allow, "/png"));
        // Header spellings seen in the wild; junk around the slash is not.
        assert!(type_allowed(&allow, "image/png ; q=1"));
        assert!(type_allowed(&allow, "image/png;"));
        assert!(type_allowed(&allow, "\timage/png"));
        assert!(!type_allowed(&allow, "image / png"));
        assert!(!type_allowed(&allow, "image/png/x"));
        assert!(!type_allowed(&allow, "image/p\u{e9}ng"));
    }

    #[test]
    fn type_allowed_wildcards() {
        let any = list(&["*/*"]);
        assert!(type_allowed(&any, "application/x-whatever"));
        assert!(!type_allowed(&any, "nonsense"));
        let images = list(&["image/*"]);
        assert!(type_allowed(&images, "image/svg+xml"));
        assert!(!type_allowed(&images, "imagex/png"));
        assert!(!type_allowed(&images, "video/mp4"));
        // A wildcard in the checked type is not a concrete type.
        assert!(!type_allowed(&images, "image/*"));
        assert!(!type_allowed(&images, "*/*"));
        assert!(!type_allowed(&any, "*/*"));
        // Meaningless patterns match nothing.
        assert!(!type_allowed(&list(&["*/png"]), "image/png"));
        assert!(!type_allowed(&list(&["png"]), "image/png"));
        assert!(!type_allowed(&list(&[""]), "image/png"));
        // Config written loosely still works.
        assert!(type_allowed(&list(&[" Image/PNG ; q=1"]), "image/png"));
        assert!(type_allowed(&list(&["IMAGE/*"]), "image/gif"));
    }

    #[test]
    fn extension_allowed_cases() {
        assert!(extension_allowed(&[], "anything"));
        assert!(extension_allowed(&[], ""));
        let allow = list(&["jpg", "png", ".PDF"]);
        assert!(extension_allowed(&allow, "a.jpg"));
        assert!(extension_allowed(&allow, "A.JPG"));
        assert!(extension_allowed(&allow, "doc.pdf"));
        assert!(!extension_allowed(&allow, "a.jpeg"));
        assert!(!extension_allowed(&allow, "a.jpg.exe"));
        assert!(!extension_allowed(&allow, "jpg"));
        assert!(!extension_allowed(&allow, ".jpg"));
        assert!(!extension_allowed(&allow, "a."));
        assert!(!extension_allowed(&allow, ""));
        // Beyond ASCII, case is folded the Unicode way, on both sides.
        let allow = list(&[" .ÉXT", "png"]);
        assert!(extension_allowed(&allow, "Ünïcode.éxt"));
        assert!(extension_allowed(&allow, "Ünïcode.ÉXT"));
        assert!(!extension_allowed(&allow, "Ünïcode.ext"));
        assert!(extension_allowed(&allow, "dir.v2/IMG.PnG"));
        // Entries that cannot be an extension leave a list that allows none.
        assert!(!extension_allowed(&list(&[""]), "a.jpg"));
    }

    #[test]
    fn allowlists_parse_once() {
        let a = Allowlists::new(
            &list(&[" Image/PNG ; q=1", "TEXT/*", "*/png", "", "*/*"]),
            &list(&["JPG"]),
        );
        assert_eq!(
            a.types,
            Some(vec![
                TypePattern::Exact("image".into(), "png".into()),
                TypePattern::Top("text".into()),
                TypePattern::Any,
            ])
        );
        assert_eq!(a.extensions, Some(vec!["jpg".to_string()]));
        let none = Allowlists::new(&[], &[]);
        assert!(none.types.is_none() && none.extensions.is_none());
        assert!(none.type_allowed("not a type") && none.extension_allowed("README"));
    }

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

    /// Small deterministic generator so the test needs no extra crates.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn bytes(&mut self, len: usize, alphabet: &[u8]) -> Vec<u8> {
            (0..len)
                .map(|_| {
                    let r = self.next() as usize;
                    if alphabet.is_empty() {
                        r as u8
                    } else {
                        alphabet[r % alphabet.len()]
                    }
                })
                .collect()
        }
    }

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
