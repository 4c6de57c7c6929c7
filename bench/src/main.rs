//! `sluice-bench`: throughput, CPU and peak memory of the release `sluice-proxy`.
//!
//! ```text
//!   cargo build --release -p sluice-proxy -> target/release/sluice-proxy
//!   target/bench-data/data-{64M,1G,4G}.bin (xorshift bytes: nothing compresses)
//!   per size, per run:  fresh proxy -> curl -F (multipart POST)  -> 201, size on disk
//!                       fresh proxy -> curl GET (sendfile path)  -> 200, byte count
//!   concurrent, per run: fresh proxy -> 64 x curl -F of the 64M file at once
//!   each phase: wall time, MiB/s, proxy CPU (/proc/PID/stat) per GiB,
//!               VmRSS sampled every 10 ms, VmHWM at the end
//! ```
//! A fresh proxy per measurement makes VmHWM (the kernel's own peak RSS) that
//! measurement's peak and nothing else's; the 10 ms samples add the resident
//! size at start, so baseline and growth can be told apart. curl is the client
//! so the bench's own memory and CPU never mix with the proxy's. Timing
//! targets print PASS/MISS; only functional failures (a status other than
//! 201/200, a wrong size) make the exit code non-zero.
#![forbid(unsafe_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, ensure};
use clap::Parser;
use serde_json::{Value, json};
use sluice_bench::data::{data_file, ensure_data, label, parse_size};
use sluice_bench::measure::Sample;
use sluice_bench::sluice::{Env, Proxy, Workdir};
use sluice_bench::{GIB, MIB, stats};

mod backends;

const CONCURRENT: usize = 64;
/// The project's memory targets, MiB.
const PEAK_TARGET: f64 = 32.0;
const GROWTH_TARGET: f64 = 4.0;
const CONCURRENT_TARGET: f64 = 96.0;
/// Peak RSS of a 4 GiB upload through a remote backend, MiB.
const BACKEND_PEAK_TARGET: f64 = 48.0;
/// Proxied download throughput over direct, through the splice path.
const SPLICE_RATIO_TARGET: f64 = 0.9;

/// Measures sluice-proxy uploads and downloads with curl as the client.
#[derive(Parser, Debug)]
struct Args {
    /// File sizes to move (K, M or G suffix, powers of 1024).
    #[arg(long, value_delimiter = ',', default_value = "64M,1G,4G", value_parser = parse_size)]
    sizes: Vec<u64>,
    /// Runs per scenario; tables show the median with min..max.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Skip the 64 concurrent uploads.
    #[arg(long)]
    skip_concurrent: bool,
    /// Skip the remote backends.
    #[arg(long)]
    skip_backends: bool,
    /// Remote backends to measure, each in front of its engine.
    #[arg(long, value_delimiter = ',', default_value = "put,multipart,s3")]
    backends: Vec<backends::Kind>,
    /// File sizes for the remote backends.
    #[arg(long, value_delimiter = ',', default_value = "64M,4G", value_parser = parse_size)]
    backend_sizes: Vec<u64>,
    /// Keep target/bench-data for the next run (it is reused when sizes match).
    #[arg(long)]
    keep_data: bool,
    /// Use this proxy binary instead of building target/release/sluice-proxy.
    #[arg(long)]
    proxy: Option<PathBuf>,
    #[arg(long, env = "CARGO_TARGET_DIR", hide = true)]
    target_dir: Option<PathBuf>,
    #[arg(long, env = "CARGO", default_value = "cargo", hide = true)]
    cargo: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let Args {
        sizes,
        runs,
        skip_concurrent,
        skip_backends,
        backends: kinds,
        backend_sizes,
        keep_data,
        proxy,
        target_dir,
        cargo,
    } = Args::parse();
    ensure!(runs > 0, "--runs must be at least 1");
    let target = sluice_bench::target_dir(target_dir);
    let bin = sluice_bench::proxy_binary(proxy, &cargo, &target)?;
    let clk_tck = sluice_bench::clk_tck()?;

    let data_dir = target.join("bench-data");
    let tmp_dir = target.join("bench-tmp");
    fs::create_dir_all(&data_dir)?;
    fs::create_dir_all(&tmp_dir)?;
    let kinds = if skip_backends { Vec::new() } else { kinds };
    let mut files = sizes.clone();
    if !kinds.is_empty() {
        files.extend(backend_sizes.iter().filter(|s| !sizes.contains(s)));
    }
    if !skip_concurrent && !files.contains(&(64 * MIB)) {
        files.push(64 * MIB);
    }
    for &size in &files {
        ensure_data(&data_dir, size)?;
    }
    let env = Env {
        bin,
        clk_tck,
        data_dir: data_dir.clone(),
        tmp_dir: tmp_dir.clone(),
    };
    println!(
        "proxy {}  runs {runs}  CLK_TCK {clk_tck}  data {}",
        env.bin.display(),
        data_dir.display()
    );

    let mut failures = Vec::new();
    let (mut uploads, mut downloads) = (Vec::new(), Vec::new());
    for &size in &sizes {
        let mut up = Row::new(label(size), size);
        let mut down = Row::new(label(size), size);
        for run in 1..=runs {
            eprintln!("[{}] run {run}/{runs}", up.name);
            match single(&env, size) {
                Ok((u, d)) => {
                    up.runs.push(u);
                    down.runs.push(d);
                }
                Err(e) => failures.push(format!("{} run {run}: {e:#}", up.name)),
            }
        }
        uploads.push(up);
        downloads.push(down);
    }
    let mut concurrent = Row::new(format!("{CONCURRENT}x64M"), 64 * MIB);
    for run in (1..=runs).filter(|_| !skip_concurrent) {
        eprintln!("[{}] run {run}/{runs}", concurrent.name);
        match many(&env, 64 * MIB) {
            Ok(s) => concurrent.runs.push(s),
            Err(e) => failures.push(format!("concurrent run {run}: {e:#}")),
        }
    }

    let remote: Vec<backends::Rows> = kinds
        .iter()
        .map(|&k| backends::run(&env, k, &backend_sizes, runs, &mut failures))
        .collect();

    println!();
    table("upload: multipart POST, curl -F", &uploads);
    table(
        "download: GET over HTTP/1.1 (sendfile fast path)",
        &downloads,
    );
    let concurrent = (!skip_concurrent).then_some(concurrent);
    if let Some(c) = &concurrent {
        table(
            "concurrent: 64 multipart uploads of 64M at once",
            std::slice::from_ref(c),
        );
    }
    for r in &remote {
        let name = r.kind.name();
        table(
            &format!("{name}: upload, curl -F through the proxy"),
            &r.upload,
        );
        table(
            &format!("{name}: download through the proxy (splice)"),
            &r.download,
        );
        table(
            &format!("{name}: download straight from the engine"),
            &r.direct,
        );
    }
    let mut targets = targets(&uploads, &downloads, concurrent.as_ref());
    targets.extend(remote.iter().flat_map(backend_targets));
    println!("targets (peaks: worst VmHWM of the runs; growth: of the medians)");
    for t in &targets {
        println!("  {:<4}  {:<62} {}", t.verdict, t.name, t.detail);
    }

    let summary = json!({
        "proxy": env.bin,
        "runs": runs,
        "clk_tck": clk_tck,
        "upload": rows_json(&uploads),
        "download": rows_json(&downloads),
        "concurrent": concurrent.as_ref().map(|c| rows_json(std::slice::from_ref(c))),
        "backends": remote.iter().map(|r| json!({
            "backend": r.kind.name(),
            "upload": rows_json(&r.upload),
            "download": rows_json(&r.download),
            "direct": rows_json(&r.direct),
        })).collect::<Vec<_>>(),
        "targets": targets.iter().map(|t| json!({"target": t.name, "verdict": t.verdict, "detail": t.detail})).collect::<Vec<_>>(),
        "failures": failures,
    });
    let json_path = target.join("bench-results.json");
    fs::write(&json_path, serde_json::to_vec_pretty(&summary)?)?;
    println!("\nwrote {}", json_path.display());

    if !keep_data {
        fs::remove_dir_all(&data_dir)?;
    }
    let _ = fs::remove_dir(&tmp_dir);
    for f in &failures {
        eprintln!("FAILED: {f}");
    }
    ensure!(
        failures.is_empty(),
        "{} functional failure(s)",
        failures.len()
    );
    Ok(())
}

pub(crate) fn upload_cmd(file: &Path, url: &str) -> Command {
    let mut c = Command::new("curl");
    c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-F"])
        .arg(format!("file=@{}", file.display()))
        .arg(url);
    c
}

fn expect_stored(path: &Path, size: u64) -> anyhow::Result<()> {
    let got = fs::metadata(path)
        .with_context(|| format!("stored object {}", path.display()))?
        .len();
    ensure!(got == size, "{}: {got} bytes, want {size}", path.display());
    Ok(())
}

/// One upload, then one download, each on a fresh proxy.
fn single(env: &Env, size: u64) -> anyhow::Result<(Sample, Sample)> {
    let work = Workdir::new(env)?;
    let file = data_file(&env.data_dir, size);
    let name = file.file_name().context("file name")?.to_string_lossy();
    let stored = work.store().join(&*name);

    let proxy = Proxy::start(env, &work, &[])?;
    let up = proxy.measure(size, || {
        let out = upload_cmd(&file, &proxy.url("")).output()?;
        let code = String::from_utf8_lossy(&out.stdout);
        ensure!(code == "201", "upload answered {code}, want 201");
        expect_stored(&stored, size)
    })?;
    drop(proxy);

    let proxy = Proxy::start(env, &work, &[])?;
    let down = proxy.measure(size, || {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w"])
            .arg("%{http_code} %{size_download}")
            .arg(proxy.url(&name))
            .output()?;
        let got = String::from_utf8_lossy(&out.stdout);
        ensure!(
            got == format!("200 {size}"),
            "download got {got:?}, want \"200 {size}\""
        );
        Ok(())
    })?;
    let vias = proxy.vias();
    if vias.iter().any(|v| v != "sendfile") {
        eprintln!("note: download served via {vias:?}, not only sendfile");
    }
    drop(proxy);
    fs::remove_file(&stored)?;
    Ok((up, down))
}

/// CONCURRENT uploads of the same file at once, each into its own directory.
fn many(env: &Env, size: u64) -> anyhow::Result<Sample> {
    let work = Workdir::new(env)?;
    let file = data_file(&env.data_dir, size);
    let name = file.file_name().context("file name")?.to_string_lossy();
    // The default per-client cap is 64 and every curl comes from 127.0.0.1.
    let proxy = Proxy::start(env, &work, &["--max-transfers-per-client", "128"])?;
    let total = size * CONCURRENT as u64;
    let sample = proxy.measure(total, || {
        let children = (0..CONCURRENT)
            .map(|i| {
                upload_cmd(&file, &proxy.url(&format!("c{i}/")))
                    .stdout(Stdio::piped())
                    .spawn()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut bad = Vec::new();
        for (i, c) in children.into_iter().enumerate() {
            let code = String::from_utf8_lossy(&c.wait_with_output()?.stdout).into_owned();
            if code != "201" {
                bad.push(format!("c{i}: {code}"));
            }
        }
        ensure!(
            bad.is_empty(),
            "{} of {CONCURRENT} not 201: {bad:?}",
            bad.len()
        );
        Ok(())
    });
    for i in 0..CONCURRENT {
        let stored = work.store().join(format!("c{i}")).join(&*name);
        if sample.is_ok() {
            expect_stored(&stored, size)?;
        }
        let _ = fs::remove_file(&stored);
    }
    sample
}

/// One scenario at one size: every run's figures.
pub(crate) struct Row {
    pub(crate) name: String,
    /// Per transfer; a concurrent sample moves CONCURRENT times this.
    bytes: u64,
    runs: Vec<Sample>,
}

impl Row {
    fn new(name: String, bytes: u64) -> Self {
        let runs = Vec::new();
        Self { name, bytes, runs }
    }
    fn stats(&self, f: fn(&Sample) -> f64) -> (f64, f64, f64) {
        stats(self.runs.iter().map(f).collect())
    }
    fn worst_hwm(&self) -> Option<f64> {
        self.runs.iter().map(|s| s.hwm).max_by(f64::total_cmp)
    }
}

type Metric = (&'static str, &'static str, fn(&Sample) -> f64);
const METRICS: [Metric; 6] = [
    ("wall_s", "wall s", |s| s.wall_s),
    ("mib_s", "MiB/s", Sample::mib_s),
    ("cpu_s_per_gib", "CPU s/GiB", Sample::cpu_per_gib),
    ("rss_start_mib", "RSS start MiB", |s| s.rss_start),
    ("rss_max_sampled_mib", "RSS max MiB", |s| s.rss_max),
    ("vm_hwm_mib", "VmHWM MiB", |s| s.hwm),
];

fn table(title: &str, rows: &[Row]) {
    println!("{title}  (median [min..max])");
    print!("{:<7}", "size");
    for (_, head, _) in METRICS {
        print!(" {head:<23}");
    }
    println!();
    for row in rows {
        print!("{:<7}", row.name);
        for (_, _, f) in METRICS {
            let (med, lo, hi) = row.stats(f);
            print!(" {:<23}", format!("{med:.2} [{lo:.2}..{hi:.2}]"));
        }
        println!();
    }
    println!();
}

fn rows_json(rows: &[Row]) -> Value {
    let row = |r: &Row| {
        let mut o = json!({"size": r.name, "bytes": r.bytes, "runs": r.runs.len()});
        for (key, _, f) in METRICS {
            let (median, min, max) = r.stats(f);
            let all: Vec<f64> = r.runs.iter().map(f).collect();
            o[key] = json!({"median": median, "min": min, "max": max, "all": all});
        }
        o
    };
    rows.iter().map(row).collect()
}

struct Target {
    name: String,
    verdict: &'static str,
    detail: String,
}

fn targets(uploads: &[Row], downloads: &[Row], concurrent: Option<&Row>) -> Vec<Target> {
    let check = |name: String, figure: Option<(bool, String)>| {
        let (verdict, detail) = match figure {
            Some((true, d)) => ("PASS", d),
            Some((false, d)) => ("MISS", d),
            None => ("n/a", "not measured".into()),
        };
        Target {
            name,
            verdict,
            detail,
        }
    };
    let peak = |name: String, row: Option<&Row>, limit: f64| {
        let h = row.and_then(Row::worst_hwm);
        check(name, h.map(|h| (h < limit, format!("{h:.1} MiB"))))
    };
    let mut out = Vec::new();
    for (what, rows) in [("upload", uploads), ("download", downloads)] {
        for r in rows {
            let name = format!("{what} {} peak RSS < 32 MiB", r.name);
            out.push(peak(name, Some(r), PEAK_TARGET));
        }
        let median = |bytes: u64| {
            let r = rows.iter().find(|r| r.bytes == bytes && !r.runs.is_empty());
            r.map(|r| r.stats(|s| s.hwm).0)
        };
        let growth = median(4 * GIB).zip(median(64 * MIB)).map(|(big, small)| {
            let d = big - small;
            (
                d < GROWTH_TARGET,
                format!("{big:.1} - {small:.1} = {d:.1} MiB"),
            )
        });
        out.push(check(format!("{what} RSS(4G) - RSS(64M) < 4 MiB"), growth));
    }
    let name = format!("{CONCURRENT} concurrent 64M uploads peak RSS < 96 MiB");
    out.push(peak(name, concurrent, CONCURRENT_TARGET));
    out
}

/// Issue 3's targets for one remote backend.
fn backend_targets(r: &backends::Rows) -> Vec<Target> {
    let name = r.kind.name();
    let mut out = Vec::new();
    let hwm = |bytes: u64| {
        let row = r
            .upload
            .iter()
            .find(|x| x.bytes == bytes && !x.runs.is_empty());
        row.map(|x| (x.worst_hwm().unwrap_or(f64::NAN), x.stats(|s| s.hwm).0))
    };
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    let na = |name: String| Target {
        name,
        verdict: "n/a",
        detail: "not measured".into(),
    };
    let t = format!("{name}: upload 4G peak RSS < {BACKEND_PEAK_TARGET} MiB");
    out.push(match hwm(4 * GIB) {
        Some((worst, _)) => Target {
            name: t,
            verdict: verdict(worst < BACKEND_PEAK_TARGET),
            detail: format!("{worst:.1} MiB"),
        },
        None => na(t),
    });
    let t = format!("{name}: upload RSS(4G) - RSS(64M) < {GROWTH_TARGET} MiB");
    out.push(match hwm(4 * GIB).zip(hwm(64 * MIB)) {
        Some(((_, big), (_, small))) => Target {
            name: t,
            verdict: verdict(big - small < GROWTH_TARGET),
            detail: format!("{big:.1} - {small:.1} = {:.1} MiB", big - small),
        },
        None => na(t),
    });
    for (down, direct) in r.download.iter().zip(&r.direct) {
        let t = format!(
            "{name}: {} splice download >= {:.0}% of direct",
            down.name,
            SPLICE_RATIO_TARGET * 100.0
        );
        if down.runs.is_empty() || direct.runs.is_empty() {
            out.push(na(t));
            continue;
        }
        // Runs pushed both samples or neither, so index i is one side-by-side pair.
        let Some((ratio, list)) =
            sluice_bench::paired_ratio(&down.runs, &direct.runs, Sample::mib_s)
        else {
            out.push(na(t));
            continue;
        };
        let (p, d) = (down.stats(Sample::mib_s).0, direct.stats(Sample::mib_s).0);
        out.push(Target {
            name: t,
            verdict: verdict(ratio >= SPLICE_RATIO_TARGET),
            detail: format!(
                "median of pairs {:.0}% ({list}); medians {p:.0} / {d:.0} MiB/s",
                100.0 * ratio
            ),
        });
    }
    out
}
