//! CPU and memory of a process tree around one piece of work, from /proc.
//!
//! ```text
//!   Procs::of(root): root + every descendant (nginx master + workers, ...)
//!   measure(): VmRSS sum at start, CPU (utime+stime, every thread) before,
//!              VmRSS sum every 10 ms, work, CPU after, VmHWM sum at the end
//! ```
//! VmHWM is the kernel's own peak RSS of each process since it started: the
//! benches start a fresh proxy per measurement, so it is that measurement's
//! peak. Summed over processes it overstates a tree's peak a little (each
//! process peaks at its own moment); for one process it is exact.

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::{GIB, MIB};

/// One phase's figures; memory in MiB.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub bytes: u64,
    pub wall_s: f64,
    pub cpu_s: f64,
    pub rss_start: f64,
    pub rss_max: f64,
    pub hwm: f64,
    /// Requests completed, for request-rate phases.
    pub ops: u64,
}

impl Sample {
    pub fn mib_s(&self) -> f64 {
        self.bytes as f64 / MIB as f64 / self.wall_s
    }
    pub fn cpu_per_gib(&self) -> f64 {
        self.cpu_s / (self.bytes as f64 / GIB as f64)
    }
    pub fn ops_s(&self) -> f64 {
        self.ops as f64 / self.wall_s
    }
    /// CPU microseconds per request.
    pub fn cpu_us_per_op(&self) -> f64 {
        self.cpu_s * 1e6 / self.ops as f64
    }
}

/// The processes of one server: its root and the root's descendants, as they
/// are when taken (servers fork their workers at start, not per request).
#[derive(Clone, Debug)]
pub struct Procs {
    pub pids: Vec<u32>,
    clk_tck: f64,
}

impl Procs {
    pub fn of(root: u32, clk_tck: f64) -> Self {
        let mut pids = vec![root];
        let parents: Vec<(u32, u32)> = fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| Some((pid, stat_fields(pid).ok()?.get(1)?.parse().ok()?)))
            .collect();
        // Breadth-first down the tree; bounded by the number of processes.
        let mut i = 0;
        while i < pids.len() {
            let p = pids[i];
            pids.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
            i += 1;
        }
        Self { pids, clk_tck }
    }

    /// utime + stime of every thread, live or exited, of every process.
    pub fn cpu_s(&self) -> anyhow::Result<f64> {
        let mut ticks = 0u64;
        for &pid in &self.pids {
            let f = stat_fields(pid)?;
            ticks += f[11].parse::<u64>()? + f[12].parse::<u64>()?;
        }
        Ok(ticks as f64 / self.clk_tck)
    }

    /// A "Key:" line of /proc/PID/status summed over the processes, in MiB.
    pub fn status_mib(&self, key: &str) -> anyhow::Result<f64> {
        self.pids.iter().map(|&p| status_mib(p, key)).sum()
    }
}

/// Fields of /proc/PID/stat after "(comm)": state is [0], ppid [1], utime [11], stime [12].
fn stat_fields(pid: u32) -> anyhow::Result<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let f: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
    anyhow::ensure!(f.len() > 13, "short /proc/{pid}/stat");
    Ok(f)
}

/// A "Key:   1234 kB" line of /proc/PID/status, in MiB.
pub fn status_mib(pid: u32, key: &str) -> anyhow::Result<f64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = s.lines().find(|l| l.starts_with(key));
    let kib: u64 = line
        .and_then(|l| l.split_whitespace().nth(1))
        .context(key.to_string())?
        .parse()?;
    Ok(kib as f64 / 1024.0)
}

/// Highest summed VmRSS seen every 10 ms until `stop`: a per-phase peak beside VmHWM.
fn sample_rss(procs: Procs, stop: Arc<AtomicBool>) -> JoinHandle<f64> {
    thread::spawn(move || {
        let mut max = 0f64;
        while !stop.load(Ordering::Relaxed) {
            max = max.max(procs.status_mib("VmRSS:").unwrap_or(0.0));
            thread::sleep(Duration::from_millis(10));
        }
        max
    })
}

/// Measures `work`, which moves `bytes` through the processes `procs`.
pub fn measure(
    procs: &Procs,
    bytes: u64,
    work: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Sample> {
    let rss_start = procs.status_mib("VmRSS:")?;
    let cpu0 = procs.cpu_s()?;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(procs.clone(), stop.clone());
    let t0 = Instant::now();
    let done = work();
    let wall_s = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let rss_max = sampler.join().unwrap_or(f64::NAN);
    done?;
    Ok(Sample {
        bytes,
        wall_s,
        cpu_s: procs.cpu_s()? - cpu0,
        rss_start,
        rss_max,
        hwm: procs.status_mib("VmHWM:")?,
        ops: 0,
    })
}

/// Wall time only, for work that involves no proxy (direct transfers).
pub fn wall(bytes: u64, work: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<Sample> {
    let t0 = Instant::now();
    work()?;
    Ok(Sample {
        bytes,
        wall_s: t0.elapsed().as_secs_f64(),
        ..Sample::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_tree_has_cpu_and_memory() {
        let me = Procs::of(std::process::id(), 100.0);
        assert_eq!(me.pids[0], std::process::id());
        assert!(me.cpu_s().unwrap() >= 0.0);
        assert!(me.status_mib("VmHWM:").unwrap() > 0.0);
    }
}
