//! A pushed (or persisted) ProxyConfig: JSON bytes -> parse_config -> check ->
//! Active::build, as `source::apply` does. Never a panic; what parses survives
//! a JSON round trip; a config that passes `check` builds or says why not.
//!
//! `check` refuses a version that is not the hash of the routes, which a
//! fuzzer cannot forge, so each config is also checked re-stamped
//! (`ProxyConfig::new`), to reach `build` with the fuzzer's routes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_policy::ProxyConfig;
use sluice_proxy_fuzz::{assert_json_round_trip, build_sandboxed};

fuzz_target!(|data: &[u8]| {
    let Ok(cfg) = sluice_proxy::runtime::parse_config(data) else {
        return;
    };
    assert_json_round_trip(&cfg);
    if cfg.check().is_ok() {
        let _ = build_sandboxed(cfg.clone());
    }
    let restamped = ProxyConfig::new(cfg.routes);
    // The version is the routes' hash: re-stamping is idempotent.
    assert_eq!(ProxyConfig::new(restamped.routes.clone()), restamped);
    if restamped.check().is_ok() {
        let _ = build_sandboxed(restamped);
    }
});
