//! A route's upload allowlists: which media types (`image/png`, `image/*`,
//! `*/*`) and which filename extensions it accepts. A part's filename, its
//! declared type and its sniffed type are each checked against them.
//!
//! Trade-off: the lists are parsed once when the route's configuration loads
//! rather than per request, and an entry that does not parse is dropped
//! rather than failing the load: config validation refuses such entries
//! first, so here they can only narrow a list (one of only such entries
//! allows nothing).

use super::names::extension_of;
use super::types::{before_params, essence, split_type};

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
    /// A signature's types (signed URL, form policy): a type must match
    /// `types` and these too. None: no further narrowing.
    also: Option<Vec<TypePattern>>,
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
        Self {
            types,
            extensions,
            also: None,
        }
    }

    /// These lists, further narrowed to `types` (a signature's conditions):
    /// a type passes only when both allow it.
    pub fn narrowed(&self, types: &[String]) -> Self {
        let mut out = self.clone();
        if !types.is_empty() {
            out.also = Some(types.iter().filter_map(|p| type_pattern(p)).collect());
        }
        out
    }

    /// Does content type `ct` (e.g. "image/png; charset=x", any case, params
    /// ignored) match one pattern: "image/png", "image/*", "*/*"? `ct` must
    /// be a concrete type: a wildcard such as "image/*" in `ct` is not
    /// allowed by a non-empty list.
    pub fn type_allowed(&self, ct: &str) -> bool {
        if let Some(also) = &self.also
            && !matches_any(also, ct)
        {
            return false;
        }
        let Some(patterns) = &self.types else {
            return true;
        };
        matches_any(patterns, ct)
    }
}

/// Does concrete type `ct` match one of `patterns`?
fn matches_any(patterns: &[TypePattern], ct: &str) -> bool {
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

impl Allowlists {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::tests::{extension_allowed, list, type_allowed};

    // ---- type_allowed / extension_allowed ----

    #[test]
    fn narrowed_allows_what_both_lists_allow() {
        let route = Allowlists::new(&list(&["image/*", "application/pdf"]), &[]);
        let signed = route.narrowed(&list(&["image/png", "text/plain"]));
        assert!(signed.type_allowed("image/png"));
        assert!(!signed.type_allowed("image/jpeg"), "not signed");
        assert!(!signed.type_allowed("text/plain"), "not the route's");
        assert!(!signed.type_allowed("application/pdf"));
        let open = Allowlists::new(&[], &[]).narrowed(&list(&["image/*"]));
        assert!(open.type_allowed("image/gif") && !open.type_allowed("text/html"));
        let same = route.narrowed(&[]);
        assert!(same.type_allowed("application/pdf"));
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
}
