//! Shared pieces of the sluice benchmarks (`sluice-bench`, `peers`).
//!
//! ```text
//!   data     target/bench-data/data-{64M,1G,...}.bin: xorshift bytes, made once
//!   measure  a process tree's CPU (/proc/PID/stat utime+stime) and memory
//!            (VmHWM, VmRSS summed over the tree) around one piece of work
//!   sluice   a fresh sluice-proxy on a policies folder, its access-log `via`s
//!   engines  the storage engines of the end-to-end tests (proxy/tests/engines)
//! ```
//! The benches measure other processes from the outside: curl and wrk are the
//! clients, so the bench's own CPU and memory never mix with a proxy's.
#![forbid(unsafe_code)]

pub mod data;
/// The storage engines of the end-to-end tests, shared rather than copied.
#[path = "../../proxy/tests/engines/mod.rs"]
pub mod engines;
pub mod measure;
pub mod sink;
pub mod sluice;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, ensure};

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// The workspace root (bench/..).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `$CARGO_TARGET_DIR` when set (as cargo itself resolves it), else `target/` of the workspace.
pub fn target_dir(from_env: Option<PathBuf>) -> PathBuf {
    from_env.unwrap_or_else(|| workspace_root().join("target"))
}

/// `proxy` when given, else builds the release proxy and returns its path under `target`.
pub fn proxy_binary(
    proxy: Option<PathBuf>,
    cargo: &Path,
    target: &Path,
) -> anyhow::Result<PathBuf> {
    if let Some(p) = proxy {
        return Ok(p);
    }
    let st = Command::new(cargo)
        .args(["build", "--release", "-p", "sluice-proxy"])
        .current_dir(workspace_root())
        .status()
        .context("running cargo build")?;
    ensure!(st.success(), "cargo build --release -p sluice-proxy failed");
    Ok(target.join("release/sluice-proxy"))
}

/// Ticks per second of utime/stime in /proc/PID/stat.
pub fn clk_tck() -> anyhow::Result<f64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// (median, min, max); NaN for no values.
pub fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (med, v[0], v[n - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max() {
        assert_eq!(stats(vec![3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(stats(vec![4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
        assert!(stats(vec![]).0.is_nan());
    }
}
