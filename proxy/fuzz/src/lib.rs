//! Helpers shared by the fuzz targets of sluice-proxy.
//!
//! ```text
//!   fuzz bytes -> target (fuzz_targets/*.rs) -> code under test -> invariants
//!   configs that parse -> build_sandboxed -> Active::build in a scratch dir
//! ```
//! `Active::build` creates each fs route's root with `create_dir_all`, and an
//! absolute root is used as is (`--data-dir` is the base of relative roots
//! only). A fuzzer that could name any path would litter the machine, so
//! roots are made relative to a scratch dir that is emptied after each build.
#![forbid(unsafe_code)]

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use sluice_policy::{Backend, ProxyConfig};
use sluice_proxy::backend::credentials::{Chain, Settings};
use sluice_proxy::metrics::Metrics;
use sluice_proxy::runtime::Active;

/// A scratch data dir, one per fuzzing process.
fn data_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::temp_dir().join(format!("sluice-fuzz-data-{}", std::process::id()))
    })
}

/// `root` with its root and prefix components dropped, so it resolves under a
/// data dir. `None` when it would climb out of it: `ProxyConfig::check`
/// refuses those before `build` sees them.
fn contained(root: &str) -> Option<String> {
    let mut out = PathBuf::new();
    for c in Path::new(root).components() {
        match c {
            Component::Prefix(_) | Component::RootDir => {}
            Component::ParentDir => return None,
            Component::CurDir => out.push("."),
            Component::Normal(n) => out.push(n),
        }
    }
    out.into_os_string().into_string().ok()
}

/// `Active::build` with every fs root kept under a scratch dir, which is
/// removed afterwards. `Ok` or `Err`, as the proxy would see it; a panic is
/// the fuzzer's finding.
pub fn build_sandboxed(mut cfg: ProxyConfig) -> Result<(), String> {
    for r in &mut cfg.routes {
        if let Backend::Fs { root } = &mut r.backend {
            match contained(root) {
                Some(c) => *root = c,
                None => return Err(format!("fs root {root:?} climbs out of the data dir")),
            }
        }
    }
    let dir = data_dir();
    // Empty roots: building a client must not depend on the machine's trust store.
    static CLIENTS: std::sync::OnceLock<sluice_proxy::backend::tls::Clients> =
        std::sync::OnceLock::new();
    let clients = CLIENTS.get_or_init(|| {
        sluice_proxy::backend::tls::Clients::new(
            std::sync::Arc::new(sluice_proxy::backend::tls::RootCertStore::empty()),
            std::time::Duration::from_secs(1),
            Default::default(),
        )
    });
    // No runtime here, so the chain never starts loading: building is all that is fuzzed.
    static CHAIN: OnceLock<std::sync::Arc<Chain>> = OnceLock::new();
    let chain = CHAIN.get_or_init(|| {
        Chain::new(
            Settings::default(),
            &Metrics::default(),
            clients.default_config(),
        )
    });
    let built = Active::build(cfg, dir, clients, chain).map(drop);
    if dir.exists() {
        std::fs::remove_dir_all(dir).expect("scratch data dir is removable");
    }
    built
}

/// `cfg` as JSON and back gives `cfg`: what is persisted is what is served.
pub fn assert_json_round_trip(cfg: &ProxyConfig) {
    let json = serde_json::to_vec(cfg).expect("a ProxyConfig serializes");
    let back = sluice_proxy::runtime::parse_config(&json).expect("serialized config parses");
    assert_eq!(&back, cfg, "JSON round trip changed the config");
}
