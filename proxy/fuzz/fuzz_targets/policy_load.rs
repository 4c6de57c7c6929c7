//! The policy loader: a folder's YAML files (multi-document UploadPolicies and
//! Secrets) -> compile_texts -> ProxyConfig -> Active::build, as `--policies`
//! loads them. Input: the files' texts separated by NUL bytes (YAML cannot
//! hold one). A valid config or an error, never a panic; and what compile
//! makes must pass the check a pushed config gets (`ProxyConfig::check`) and
//! survive a JSON round trip, since the operator pushes it and the proxy
//! persists it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_proxy_fuzz::{assert_json_round_trip, build_sandboxed};

/// A folder of a few files is enough to mix policies and Secrets across files.
const MAX_FILES: usize = 4;

fuzz_target!(|data: &[u8]| {
    let texts: Vec<(String, String)> = data
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
    let Ok(cfg) = sluice_proxy::runtime::compile_texts(&texts) else {
        return;
    };
    if let Err(e) = cfg.check() {
        panic!("compile made a config that its own check refuses: {e}\n{cfg:#?}");
    }
    assert_json_round_trip(&cfg);
    let _ = build_sandboxed(cfg);
});
