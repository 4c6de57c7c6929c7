//! The layering check: no module of the data plane imports one on a floor
//! above its own, and modules that share a floor do not import each other.
//!
//! The floors are the table in `docs/architecture.md` (between the
//! `floors:begin` and `floors:end` markers), so the design document and this
//! check cannot disagree: moving a module means editing that table. Every
//! `crate::` and `super::` path in `proxy/src` is resolved to the top-level
//! module it names, in the spirit of rustc's and rust-analyzer's tidy checks:
//! a textual check, cheap and without a compiler plugin. A module missing
//! from the table, or a table naming a module that does not exist, fails too.

use std::collections::BTreeMap;
use std::path::Path;

/// floor number -> top-level modules on it, read from the design document.
fn floors(doc: &str) -> Result<BTreeMap<String, u32>, String> {
    let begin = doc
        .find("<!-- floors:begin -->")
        .ok_or("docs/architecture.md has no <!-- floors:begin --> marker")?;
    let end = doc
        .find("<!-- floors:end -->")
        .ok_or("docs/architecture.md has no <!-- floors:end --> marker")?;
    let mut out = BTreeMap::new();
    for line in doc[begin..end].lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | floor | modules | what lives there |
        let (Some(floor), Some(mods)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Ok(floor) = floor.parse::<u32>() else {
            continue; // the header and its rule
        };
        for m in mods.split(',') {
            let m = m.trim().trim_matches('`');
            if m.is_empty() {
                continue;
            }
            if out.insert(m.to_string(), floor).is_some() {
                return Err(format!("module {m} is on two floors"));
            }
        }
    }
    if out.is_empty() {
        return Err("the floors table is empty".into());
    }
    Ok(out)
}

/// The module path of a source file: `upload/form.rs` -> [upload, form],
/// `upload/mod.rs` -> [upload].
fn module_path(rel: &str) -> Vec<String> {
    let rel = rel.trim_end_matches(".rs");
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The identifiers that follow `at` in `code`: `x` for `x::`, every head of a
/// `{a, b::c}` group.
fn heads(code: &str, at: usize) -> Vec<String> {
    let rest = &code[at..];
    if let Some(group) = rest.strip_prefix('{') {
        // Top level of the group only: nested groups belong to their head.
        let mut out = Vec::new();
        let (mut depth, mut start) = (0usize, 0usize);
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    out.push(group[start..i].to_string());
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(group[start..i].to_string());
                    start = i + 1;
                }
                _ => {}
            }
        }
        return out
            .iter()
            .filter_map(|s| {
                let s = s.trim();
                let end = s.bytes().position(|b| !is_ident(b)).unwrap_or(s.len());
                (end > 0).then(|| s[..end].to_string())
            })
            .collect();
    }
    let end = rest
        .bytes()
        .position(|b| !is_ident(b))
        .unwrap_or(rest.len());
    if end == 0 {
        return Vec::new();
    }
    vec![rest[..end].to_string()]
}

/// Every top-level module a file's code names through `crate::` or a
/// `super::` that climbs to the crate root, with its line number.
fn references(module: &[String], text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let bytes = code.as_bytes();
        let mut i = 0;
        while i < code.len() {
            let word_start = i == 0 || !is_ident(bytes[i - 1]);
            // Bytes, not chars: the keywords are ASCII, the lines need not be.
            if word_start && bytes[i..].starts_with(b"crate::") {
                for h in heads(code, i + "crate::".len()) {
                    out.push((n + 1, h));
                }
                i += "crate::".len();
            } else if word_start && bytes[i..].starts_with(b"super::") {
                let mut depth = module.len();
                let mut j = i;
                while bytes[j..].starts_with(b"super::") {
                    depth = depth.saturating_sub(1);
                    j += "super::".len();
                }
                // A file's own module is the last element; `super` from
                // `upload/form.rs` is `upload`, from `upload/mod.rs` the root.
                if depth == 0 {
                    for h in heads(code, j) {
                        out.push((n + 1, h));
                    }
                }
                i = j;
            } else {
                i += 1;
            }
        }
    }
    out
}

/// What breaks the floors in these files (path relative to `src`, text).
fn violations(files: &[(String, String)], floors: &BTreeMap<String, u32>) -> Vec<String> {
    let mut bad = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (rel, text) in files {
        if rel == "lib.rs" || rel == "main.rs" {
            continue; // the crate roots declare the modules; the binary sits above all
        }
        let module = module_path(rel);
        let top = &module[0];
        seen.insert(top.clone());
        let Some(&own) = floors.get(top) else {
            bad.push(format!(
                "{rel}: module `{top}` is on no floor: add it to the table in docs/architecture.md"
            ));
            continue;
        };
        for (line, target) in references(&module, text) {
            if &target == top {
                continue;
            }
            match floors.get(&target) {
                None => bad.push(format!(
                    "{rel}:{line}: `crate::{target}` is not a module on a floor (an item of the crate root sits above every module; import it from its module)"
                )),
                Some(&t) if t > own => bad.push(format!(
                    "{rel}:{line}: `{top}` (floor {own}) imports `{target}` (floor {t}), a floor above it"
                )),
                Some(&t) if t == own => bad.push(format!(
                    "{rel}:{line}: `{top}` imports `{target}`, beside it on floor {own}: modules on one floor do not import each other"
                )),
                Some(_) => {}
            }
        }
    }
    for m in floors.keys() {
        if !seen.contains(m) {
            bad.push(format!(
                "docs/architecture.md names module `{m}`, which proxy/src does not have"
            ));
        }
    }
    bad
}

fn sources(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, base, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

#[test]
fn no_module_imports_a_floor_above_its_own() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("../docs/architecture.md")).unwrap();
    let floors = floors(&doc).unwrap();
    let mut files = Vec::new();
    sources(&root.join("src"), &root.join("src"), &mut files);
    files.sort();
    let bad = violations(&files, &floors);
    assert!(
        bad.is_empty(),
        "the data plane's floors (docs/architecture.md) are broken:\n  {}",
        bad.join("\n  ")
    );
}

const TABLE: &str = "<!-- floors:begin -->
| floor | modules | what |
| --- | --- | --- |
| 3 | server | top |
| 2 | gate, upload | middle |
| 1 | http1, error | bottom |
<!-- floors:end -->";

fn check(files: &[(&str, &str)]) -> Vec<String> {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    violations(&files, &floors(TABLE).unwrap())
}

/// The check fails on what it exists to catch.
#[test]
fn an_upward_import_is_caught() {
    let ok = [
        (
            "server.rs",
            "use crate::gate::Visit;\nuse crate::{http1, upload::form};",
        ),
        (
            "gate.rs",
            "use crate::http1::parse; // crate::server in a comment",
        ),
        ("upload/mod.rs", "pub mod form;\nuse super::http1;"),
        (
            "upload/form.rs",
            "use super::peek; use crate::error::Reject;",
        ),
        ("http1/mod.rs", ""),
        ("error.rs", ""),
    ];
    assert_eq!(check(&ok), Vec::<String>::new());
    let mut planted = ok.to_vec();
    planted[3] = ("upload/form.rs", "fn f() { crate::server::serve(); }");
    assert_eq!(
        check(&planted),
        ["upload/form.rs:1: `upload` (floor 2) imports `server` (floor 3), a floor above it"]
    );
    planted[3] = ("upload/form.rs", "use crate::{error, gate::Visit};");
    assert_eq!(
        check(&planted),
        [
            "upload/form.rs:1: `upload` imports `gate`, beside it on floor 2: modules on one floor do not import each other"
        ]
    );
    planted[3] = ("upload/form.rs", "use super::super::server;");
    assert_eq!(check(&planted).len(), 1);
    planted[3] = ("upload/form.rs", "use crate::App;");
    assert!(check(&planted)[0].contains("not a module on a floor"));
    planted[3] = ("upload/form.rs", "");
    planted.push(("admin.rs", ""));
    assert!(check(&planted)[0].contains("module `admin` is on no floor"));
    planted.pop();
    planted.retain(|(p, _)| *p != "error.rs");
    assert_eq!(
        check(&planted),
        ["docs/architecture.md names module `error`, which proxy/src does not have"]
    );
}
