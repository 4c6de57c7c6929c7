//! The policy loader: a folder's YAML files (multi-document UploadPolicies,
//! Secrets, other kinds) -> `sluice_policy::compile_folder` -> ProxyConfig ->
//! Active::build, as `--policies` loads them. Input: the files' texts
//! separated by NUL bytes (YAML cannot hold one).
//!
//! A config plus the documents left out, never a panic; what compile makes
//! passes the check a pushed config gets (`ProxyConfig::check`: the operator
//! pushes it, the proxy persists and reloads it) and survives a JSON round
//! trip; the policies said accepted are the routes served, and what is left
//! out is placed in a file that was given.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use sluice_proxy_fuzz::{assert_json_round_trip, build_sandboxed};

/// A folder of a few files is enough to mix policies and Secrets across files.
const MAX_FILES: usize = 4;

fuzz_target!(|data: &[u8]| {
    let files: Vec<(String, String)> = data
        .split(|b| *b == 0)
        .take(MAX_FILES)
        .enumerate()
        .map(|(i, t)| {
            (
                format!("policies/{i}.yaml"),
                String::from_utf8_lossy(t).into_owned(),
            )
        })
        .collect();
    let folder = sluice_policy::compile_folder(&files);
    let cfg = folder.config;
    if let Err(e) = cfg.check() {
        panic!("compile made a config that its own check refuses: {e}\n{cfg:#?}");
    }
    assert_json_round_trip(&cfg);

    let accepted: BTreeSet<&str> = folder.accepted.iter().map(|(k, _)| k.as_str()).collect();
    let served: BTreeSet<&str> = cfg.routes.iter().map(|r| r.policy.as_str()).collect();
    assert_eq!(
        accepted, served,
        "accepted policies are not the routes served"
    );
    for n in &folder.not_accepted {
        assert!(
            files.iter().any(|(f, _)| *f == n.file),
            "left out at an unknown place: {n:?}"
        );
    }
    if !folder.nothing_read {
        let _ = build_sandboxed(cfg);
    }
});
