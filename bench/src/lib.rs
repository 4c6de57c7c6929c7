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

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

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

/// `a` over `b` run by run, where each run measured the two back to back:
/// the median of those ratios, and the ratios as "48% 42% 64%". A run whose
/// machine was slower for both counts against neither, where a ratio of
/// medians may take its two medians from different runs. None when there
/// are no runs or they do not pair up (one side failed in some run).
pub fn paired_ratio(
    a: &[measure::Sample],
    b: &[measure::Sample],
    f: fn(&measure::Sample) -> f64,
) -> Option<(f64, String)> {
    if a.is_empty() || a.len() != b.len() {
        return None;
    }
    let ratios: Vec<f64> = a.iter().zip(b).map(|(x, y)| f(x) / f(y)).collect();
    let each = ratios
        .iter()
        .map(|q| format!("{:.0}%", 100.0 * q))
        .collect::<Vec<_>>()
        .join(" ");
    Some((stats(ratios).0, each))
}

/// A child process, killed and reaped when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `curl` GET of `url`, which must answer 200 with exactly `size` bytes.
pub fn get(url: &str, size: u64) -> anyhow::Result<()> {
    get_with(url, size, &[])
}

/// `get` with more curl arguments (`--cacert`, `--http1.1`).
pub fn get_with(url: &str, size: u64, curl_args: &[&OsStr]) -> anyhow::Result<()> {
    let out = Command::new("curl")
        .args(curl_args)
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
        ])
        .arg(url)
        .output()?;
    let got = String::from_utf8_lossy(&out.stdout);
    ensure!(
        got == format!("200 {size}"),
        "GET {url}: {got:?}, want \"200 {size}\""
    );
    Ok(())
}

/// The `p` quantile (0..=1, nearest rank) of ascending samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Sorts each row's latencies (ms) and prints p50, p90, p99 and max under a
/// header; `width` is the label column's.
pub fn print_latencies(width: usize, rows: &mut [(&str, &mut Vec<f64>)]) {
    println!(
        "{:<width$} {:>8} {:>8} {:>8} {:>8}",
        "", "p50", "p90", "p99", "max"
    );
    for (name, v) in rows.iter_mut() {
        v.sort_by(f64::total_cmp);
        println!(
            "{name:<width$} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            percentile(v, 0.5),
            percentile(v, 0.9),
            percentile(v, 0.99),
            v[v.len() - 1]
        );
    }
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

    #[test]
    fn paired_ratio_is_the_median_of_run_ratios() {
        let s = |wall_s: f64| measure::Sample {
            bytes: 1 << 20,
            wall_s,
            ..measure::Sample::default()
        };
        // Run 2 was slow for both: its ratio is 1, as is every run's.
        let a = [s(1.0), s(4.0), s(2.0)];
        let b = [s(1.0), s(4.0), s(2.0)];
        assert_eq!(
            paired_ratio(&a, &b, measure::Sample::mib_s),
            Some((1.0, "100% 100% 100%".into()))
        );
        // Every run, the first side took twice as long: 50%.
        let a = [s(2.0), s(8.0), s(4.0)];
        assert_eq!(
            paired_ratio(&a, &b, measure::Sample::mib_s).map(|r| r.0),
            Some(0.5)
        );
        assert_eq!(paired_ratio(&a[..2], &b, measure::Sample::mib_s), None);
        assert_eq!(paired_ratio(&[], &[], measure::Sample::mib_s), None);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }
}
