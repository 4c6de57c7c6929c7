//! `peers`: sluice side by side with nginx and HAProxy, same machine, same run.
//!
//! ```text
//!   backends: nginx (sendfile) serving /dl/<file>; a sink reading every body
//!   per run, per size:  PUT (curl -T)  POST (curl -F)  GET (curl)
//!                       each: direct to the backend, then through a fresh sluice,
//!                       (sluice sha256 for POST), nginx, HAProxy
//!   per run: 64 concurrent 64 MiB POSTs; 4 KiB PUTs with wrk (requests/s)
//!   per proxy measurement: wall, MiB/s, CPU s/GiB (utime+stime of all of the
//!   proxy's processes), peak RSS (VmHWM summed over them)
//!   -> tables (medians) with sluice/peer ratios, the targets of issue 6,
//!      target/bench-peers.json, target/bench-peers.png
//!   --tls: every proxy terminates TLS (same certificate, HTTP/1.1 over TLS
//!      from curl and wrk), the targets of issue 20 instead, and
//!      target/bench-peers-tls.{json,png}
//! ```
//! Proxies run in turn, never at once, and the same run interleaves them so
//! each sees the same machine. curl and wrk are the clients: their CPU is not
//! the proxy's, but on a 2-core machine they compete with it for cores, which
//! is why throughput is compared with a direct transfer made the same way.
#![forbid(unsafe_code)]

mod plot;
mod servers;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, bail, ensure};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use sluice_bench::data::{data_file, ensure_data, label, parse_size};
use sluice_bench::measure::{self, Sample};
use sluice_bench::sluice::Env;
use sluice_bench::{GIB, MIB, get_with, paired_ratio, stats};

use servers::{Backends, Peer, Running, Tls};

/// Runs the peer benchmark (or, as `peers sink`, the upload sink it starts).
#[derive(Parser, Debug)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Runs; tables show medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// File sizes of the PUT, POST and GET transfers (K, M or G suffix).
    #[arg(long, value_delimiter = ',', default_value = "64M,1G,4G", value_parser = parse_size)]
    sizes: Vec<u64>,
    /// Peers beside sluice.
    #[arg(long, value_delimiter = ',', default_value = "nginx,haproxy")]
    peers: Vec<Peer>,
    /// Skip the concurrent uploads.
    #[arg(long)]
    skip_concurrent: bool,
    /// How many uploads at once, and their size.
    #[arg(long, default_value_t = 64)]
    concurrent: usize,
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    concurrent_size: u64,
    /// Skip the small-file request rate (wrk).
    #[arg(long)]
    skip_small: bool,
    /// wrk's duration and connections for the 4 KiB PUTs.
    #[arg(long, default_value_t = 5)]
    small_seconds: u32,
    #[arg(long, default_value_t = 32)]
    small_connections: u32,
    /// The proxies terminate TLS (a certificate made for the run); the
    /// backends and the direct transfers stay plaintext.
    #[arg(long)]
    tls: bool,
    /// Copy the PNG to docs/ (bench-peers.png, or bench-peers-tls.png; what the README shows).
    #[arg(long)]
    publish: bool,
    /// TTF used for the plot's text.
    #[arg(long, default_value = plot::FONT)]
    font: PathBuf,
    /// Keep target/bench-data for the next run.
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

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The upload sink: reads every request body to its end, then answers 201.
    Sink {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
}

/// What is moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Put,
    Post,
    Get,
    Concurrent,
    Small,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Put => "PUT",
            Kind::Post => "POST",
            Kind::Get => "GET",
            Kind::Concurrent => "concurrent POST",
            Kind::Small => "4K PUT",
        }
    }
    fn about(self) -> &'static str {
        match self {
            Kind::Put => "raw body (curl -T); sluice: sniff + type/extension checks, checksum none",
            Kind::Post => {
                "multipart (curl -F); sluice: parse, sniff, checks, re-encode; sha256 row: checksum sha256"
            }
            Kind::Get => "download; backend nginx sendfile; sluice: splice",
            Kind::Concurrent => "multipart uploads at once (curl -F each)",
            Kind::Small => "wrk, 4 KiB PUT bodies, keep-alive",
        }
    }
}

/// Who moves it: the client straight to the backend, or a proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    Direct,
    Sluice,
    SluiceSha256,
    /// The 4 KiB PUTs to a signed URL (`/sput/`).
    SluiceSigned,
    Peer(Peer),
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::Direct => "direct",
            Who::Sluice => "sluice",
            Who::SluiceSha256 => "sluice sha256",
            Who::SluiceSigned => "sluice signed URL",
            Who::Peer(p) => p.name(),
        }
    }
    fn peer(self) -> Option<Peer> {
        match self {
            Who::Direct => None,
            Who::Sluice | Who::SluiceSha256 | Who::SluiceSigned => Some(Peer::Sluice),
            Who::Peer(p) => Some(p),
        }
    }
    /// Route prefix: every proxy has the same routes, the backends ignore the path.
    fn prefix(self, kind: Kind) -> &'static str {
        match (kind, self) {
            (Kind::Get, _) => "/dl/",
            (Kind::Small, Who::SluiceSigned) => "/sput/",
            (Kind::Put | Kind::Small, _) => "/put/",
            (_, Who::SluiceSha256) => "/mpsha/",
            _ => "/mp/",
        }
    }
}

type Key = (Kind, u64, Who);

struct Bench {
    env: Env,
    backends: Backends,
    args: Args,
    results: BTreeMap<Key, Vec<Sample>>,
    failures: Vec<String>,
    wrk_script: PathBuf,
    tls: Option<Tls>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Cmd::Sink { listen }) = &args.cmd {
        let l = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
        sluice_bench::sink::serve(l)?;
        return Ok(());
    }
    ensure!(args.runs > 0, "--runs must be at least 1");
    let target = sluice_bench::target_dir(args.target_dir.clone());
    let bin = sluice_bench::proxy_binary(args.proxy.clone(), &args.cargo, &target)?;
    plot::register_font(&args.font)?;
    for p in &args.peers {
        servers::which(p.name())?;
    }
    if !args.skip_small {
        servers::which("wrk")?;
    }
    let data_dir = target.join("bench-data");
    let tmp_dir = target.join("bench-tmp");
    fs::create_dir_all(&data_dir)?;
    fs::create_dir_all(&tmp_dir)?;
    let mut files = args.sizes.clone();
    if !args.skip_concurrent && !files.contains(&args.concurrent_size) {
        files.push(args.concurrent_size);
    }
    for &s in &files {
        ensure_data(&data_dir, s)?;
    }
    let env = Env {
        bin,
        clk_tck: sluice_bench::clk_tck()?,
        data_dir: data_dir.clone(),
        tmp_dir: tmp_dir.clone(),
    };
    let backends = Backends::start(&data_dir, &args.sizes)?;
    let wrk_script = tmp_dir.join("put-4k.lua");
    fs::write(&wrk_script, WRK_PUT_4K)?;
    let tls = if args.tls {
        Some(Tls::make(&tmp_dir)?)
    } else {
        None
    };
    println!(
        "proxy {}  peers {:?}  runs {}  workers {} each  CPUs {}{}",
        env.bin.display(),
        args.peers,
        args.runs,
        servers::WORKERS,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if args.tls {
            "  proxies terminate TLS"
        } else {
            ""
        },
    );
    let sha = sha256_cost()?;
    println!(
        "sha256 alone on this machine: {sha:.2} CPU s/GiB (sha2 crate, one thread, in memory)"
    );

    let mut bench = Bench {
        env,
        backends,
        args,
        results: BTreeMap::new(),
        failures: Vec::new(),
        wrk_script,
        tls,
    };
    bench.run_all();
    drop(bench.backends);

    println!();
    let a = &bench.args;
    let whos = |kind: Kind| {
        let mut w = vec![Who::Direct, Who::Sluice];
        if kind == Kind::Post {
            w.push(Who::SluiceSha256);
        }
        if kind == Kind::Small {
            w.push(Who::SluiceSigned);
        }
        w.extend(a.peers.iter().map(|&p| Who::Peer(p)));
        w
    };
    for kind in [Kind::Put, Kind::Post, Kind::Get] {
        for &size in &a.sizes {
            table(&bench.results, kind, size, &whos(kind));
        }
    }
    if !a.skip_concurrent {
        table(
            &bench.results,
            Kind::Concurrent,
            a.concurrent_size,
            &whos(Kind::Concurrent),
        );
    }
    if !a.skip_small {
        table(&bench.results, Kind::Small, 4096, &whos(Kind::Small));
    }
    let targets = if a.tls {
        tls_targets(&bench.results, a)
    } else {
        targets(&bench.results, a, sha)
    };
    println!(
        "targets (medians; CPU and throughput at the largest size, {})",
        label(largest(a))
    );
    for t in &targets {
        println!("  {:<4}  {:<70} {}", t.verdict, t.name, t.detail);
    }

    let stem = if a.tls {
        "bench-peers-tls"
    } else {
        "bench-peers"
    };
    let json_path = target.join(format!("{stem}.json"));
    let summary = json!({
        "proxy": bench.env.bin,
        "runs": a.runs,
        "tls": a.tls,
        "workers": servers::WORKERS,
        "sha256_cpu_s_per_gib": sha,
        "results": results_json(&bench.results),
        "targets": targets.iter().map(|t| json!({"target": t.name, "verdict": t.verdict, "detail": t.detail})).collect::<Vec<_>>(),
        "failures": bench.failures,
    });
    fs::write(&json_path, serde_json::to_vec_pretty(&summary)?)?;
    println!("\nwrote {}", json_path.display());
    let png = target.join(format!("{stem}.png"));
    let (panels, bars) = plot_data(&bench.results, a);
    plot::draw(&png, &panels, &bars)?;
    println!("wrote {}", png.display());
    if a.publish {
        let docs = sluice_bench::workspace_root().join("docs");
        fs::create_dir_all(&docs)?;
        let published = docs.join(format!("{stem}.png"));
        fs::copy(&png, &published)?;
        println!("copied to {}", published.display());
    }

    if !a.keep_data {
        fs::remove_dir_all(&data_dir)?;
    }
    let _ = fs::remove_file(tmp_dir.join("put-4k.lua"));
    if let Some(t) = &bench.tls {
        for f in [&t.cert, &t.key, &t.combined] {
            let _ = fs::remove_file(f);
        }
    }
    let _ = fs::remove_dir(&tmp_dir);
    for f in &bench.failures {
        eprintln!("FAILED: {f}");
    }
    ensure!(
        bench.failures.is_empty(),
        "{} functional failure(s)",
        bench.failures.len()
    );
    Ok(())
}

/// Who goes first moves on by one each run, so that no proxy always runs
/// right after the same neighbour (or always first, on a cold machine): on a
/// shared host the slot in the order shows in the figures.
fn rotate(whos: &mut [Who], run: usize) {
    if !whos.is_empty() {
        let n = whos.len();
        whos.rotate_left((run - 1) % n);
    }
}

fn largest(a: &Args) -> u64 {
    a.sizes.iter().copied().max().unwrap_or(0)
}

/// 4 KiB of fixed pseudo-random bytes (sniffed as application/octet-stream), PUT.
const WRK_PUT_4K: &str = r#"wrk.method = "PUT"
wrk.headers["Content-Type"] = "application/octet-stream"
math.randomseed(42)
local t = {}
for i = 1, 4096 do t[i] = string.char(math.random(0, 255)) end
wrk.body = table.concat(t)
"#;

impl Bench {
    fn run_all(&mut self) {
        let runs = self.args.runs;
        let peers = self.args.peers.clone();
        for run in 1..=runs {
            for &size in &self.args.sizes.clone() {
                for kind in [Kind::Put, Kind::Post, Kind::Get] {
                    let mut whos = vec![Who::Direct, Who::Sluice];
                    if kind == Kind::Post {
                        whos.push(Who::SluiceSha256);
                    }
                    whos.extend(peers.iter().map(|&p| Who::Peer(p)));
                    rotate(&mut whos, run);
                    for who in whos {
                        eprintln!(
                            "[run {run}/{runs}] {} {} {}",
                            kind.name(),
                            label(size),
                            who.name()
                        );
                        let r = self.one(kind, size, who);
                        self.record((kind, size, who), r, run);
                    }
                }
            }
            let mut whos = vec![Who::Direct, Who::Sluice];
            whos.extend(peers.iter().map(|&p| Who::Peer(p)));
            rotate(&mut whos, run);
            if !self.args.skip_concurrent {
                let size = self.args.concurrent_size;
                for &who in &whos {
                    eprintln!(
                        "[run {run}/{runs}] {}x{} {}",
                        self.args.concurrent,
                        label(size),
                        who.name()
                    );
                    let r = self.concurrent(size, who);
                    self.record((Kind::Concurrent, size, who), r, run);
                }
            }
            if !self.args.skip_small {
                let mut whos = vec![Who::Direct, Who::Sluice, Who::SluiceSigned];
                whos.extend(peers.iter().map(|&p| Who::Peer(p)));
                rotate(&mut whos, run);
                for &who in &whos {
                    eprintln!("[run {run}/{runs}] 4K PUT rate {}", who.name());
                    let r = self.small(who);
                    self.record((Kind::Small, 4096, who), r, run);
                }
            }
        }
    }

    fn record(&mut self, key: Key, r: anyhow::Result<Sample>, run: usize) {
        match r {
            Ok(s) => self.results.entry(key).or_default().push(s),
            Err(e) => self.failures.push(format!(
                "{} {} {} run {run}: {e:#}",
                key.0.name(),
                label(key.1),
                key.2.name()
            )),
        }
    }

    /// The backend's base URL for a direct transfer of `kind`.
    fn direct_base(&self, kind: Kind) -> String {
        match kind {
            Kind::Get => self.backends.files_url(),
            _ => self.backends.sink_url(),
        }
    }

    /// Runs `work(base_url)` straight against the backend or through a fresh proxy.
    fn with_target(
        &self,
        kind: Kind,
        who: Who,
        bytes: u64,
        work: impl FnOnce(&str) -> anyhow::Result<()>,
    ) -> anyhow::Result<Sample> {
        let Some(peer) = who.peer() else {
            let base = self.direct_base(kind);
            return measure::wall(bytes, || work(&base));
        };
        let proxy = Running::start(peer, &self.env, &self.backends, self.tls.as_ref())?;
        let base = proxy.base_url();
        let sample = measure::measure(proxy.procs(), bytes, || work(&base))?;
        if kind == Kind::Get && peer == Peer::Sluice {
            // The access log is off: the counters say how the bytes went.
            let want = if self.tls.is_some() {
                "tls-copy"
            } else {
                "splice"
            };
            let got = proxy.downloads_by(want)?.unwrap_or(0.0);
            ensure!(
                got >= 1.0,
                "sluice served no download via {want} (download_responses_total{{path=\"{want}\"}} = {got})"
            );
        }
        Ok(sample)
    }

    fn one(&self, kind: Kind, size: u64, who: Who) -> anyhow::Result<Sample> {
        let file = data_file(&self.env.data_dir, size);
        let name = file_name(&file)?;
        let prefix = who.prefix(kind);
        let tls = self.tls_args(who);
        self.with_target(kind, who, size, |base| match kind {
            Kind::Put => put(&format!("{base}{prefix}{name}"), &file, size, who, &tls),
            Kind::Post => post(&format!("{base}{prefix}"), &file, size, who, &tls),
            Kind::Get => get_with(&format!("{base}{prefix}{name}"), size, &tls),
            Kind::Concurrent | Kind::Small => bail!("not a single transfer"),
        })
    }

    fn concurrent(&self, size: u64, who: Who) -> anyhow::Result<Sample> {
        let file = data_file(&self.env.data_dir, size);
        let n = self.args.concurrent;
        let prefix = who.prefix(Kind::Concurrent);
        let tls = self.tls_args(who);
        self.with_target(Kind::Concurrent, who, size * n as u64, |base| {
            let url = format!("{base}{prefix}");
            let children = (0..n)
                .map(|_| post_cmd(&url, &file, &tls).stdout(Stdio::piped()).spawn())
                .collect::<Result<Vec<_>, _>>()?;
            let mut bad = Vec::new();
            for (i, c) in children.into_iter().enumerate() {
                let out = c.wait_with_output()?;
                if let Err(e) = check_upload(&out, size, who, true) {
                    bad.push(format!("#{i}: {e:#}"));
                }
            }
            ensure!(bad.is_empty(), "{} of {n} failed: {bad:?}", bad.len());
            Ok(())
        })
    }

    /// `url` signed for PUT for an hour with `sluice-proxy sign`, as an
    /// application would hand it to a client.
    fn sign_put(&self, url: &str) -> anyhow::Result<String> {
        let key = self.env.tmp_dir.join("bench-sign.key");
        fs::write(&key, servers::SIGNING_KEY)?;
        let out = Command::new(&self.env.bin)
            .args(["sign", "--method", "PUT", "--expires", "1h", "--url", url])
            .arg("--secret-file")
            .arg(&key)
            .output()
            .context("running sluice-proxy sign")?;
        let _ = fs::remove_file(&key);
        ensure!(
            out.status.success(),
            "sluice-proxy sign: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    /// curl's arguments for a transfer by `who`: HTTP/1.1 over TLS, trusting
    /// the run's certificate, when the proxies terminate TLS (curl would take
    /// h2 from sluice's ALPN, and nginx and HAProxy offer only HTTP/1.1 here).
    fn tls_args(&self, who: Who) -> Vec<&OsStr> {
        match (&self.tls, who.peer()) {
            (Some(t), Some(_)) => vec![
                OsStr::new("--http1.1"),
                OsStr::new("--cacert"),
                t.cert.as_os_str(),
            ],
            _ => Vec::new(),
        }
    }

    fn small(&self, who: Who) -> anyhow::Result<Sample> {
        let mut wrk = WrkOut::default();
        let mut sample = self.with_target(Kind::Small, who, 0, |base| {
            let mut url = format!("{base}{}small.bin", who.prefix(Kind::Small));
            if who == Who::SluiceSigned {
                url = self.sign_put(&url)?;
            }
            let out = Command::new("wrk")
                .args(["-t", "1", "-c"])
                .arg(self.args.small_connections.to_string())
                .arg("-d")
                .arg(format!("{}s", self.args.small_seconds))
                .arg("-s")
                .arg(&self.wrk_script)
                .arg(&url)
                .output()
                .context("running wrk")?;
            let text = String::from_utf8_lossy(&out.stdout);
            ensure!(out.status.success(), "wrk failed: {text}");
            wrk = WrkOut::parse(&text)?;
            ensure!(wrk.non_2xx == 0, "{} answers were not 2xx", wrk.non_2xx);
            ensure!(wrk.errors == 0, "{} socket errors:\n{text}", wrk.errors);
            Ok(())
        })?;
        sample.ops = wrk.requests;
        sample.wall_s = wrk.seconds;
        sample.bytes = wrk.requests * 4096;
        Ok(sample)
    }
}

fn file_name(file: &Path) -> anyhow::Result<String> {
    Ok(file
        .file_name()
        .context("file name")?
        .to_string_lossy()
        .into_owned())
}

/// curl, answer body on stdout, then a line "status uploaded-bytes".
fn curl(tls: &[&OsStr]) -> Command {
    let mut c = Command::new("curl");
    c.args(tls);
    // No "Expect: 100-continue": every proxy would handle it its own way.
    c.args([
        "-s",
        "-S",
        "-H",
        "Expect:",
        "-w",
        "\n%{http_code} %{size_upload}",
    ]);
    c
}

fn post_cmd(url: &str, file: &Path, tls: &[&OsStr]) -> Command {
    let mut c = curl(tls);
    c.arg("-F")
        .arg(format!(
            "file=@{};type=application/octet-stream",
            file.display()
        ))
        .arg(url);
    c
}

fn put(url: &str, file: &Path, size: u64, who: Who, tls: &[&OsStr]) -> anyhow::Result<()> {
    let out = curl(tls).arg("-T").arg(file).arg(url).output()?;
    check_upload(&out, size, who, false)
}

fn post(url: &str, file: &Path, size: u64, who: Who, tls: &[&OsStr]) -> anyhow::Result<()> {
    let out = post_cmd(url, file, tls).output()?;
    check_upload(&out, size, who, true)
}

/// 201, and the whole file arrived: sluice answers with the stored size, the
/// sink (directly or behind a peer) with the body bytes it read.
fn check_upload(out: &Output, size: u64, who: Who, multipart: bool) -> anyhow::Result<()> {
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, last) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut it = last.split_whitespace();
    let code = it.next().unwrap_or("");
    let sent: u64 = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    ensure!(
        code == "201",
        "answered {code}: {body} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(body).with_context(|| format!("answer {body:?}"))?;
    let got = match who.peer() {
        Some(Peer::Sluice) => v["objects"][0]["size"].as_u64(),
        _ => v["bytes"].as_u64(),
    };
    let want = match (who.peer(), multipart) {
        (Some(Peer::Sluice), _) | (_, false) => size,
        // The sink read the whole multipart body: what curl sent.
        (_, true) => sent,
    };
    ensure!(got == Some(want), "{body}: want {want} bytes");
    Ok(())
}

#[derive(Default, Debug)]
struct WrkOut {
    requests: u64,
    seconds: f64,
    non_2xx: u64,
    errors: u64,
}

impl WrkOut {
    /// "  12345 requests in 5.00s, 1.23MB read", "Non-2xx or 3xx responses: N",
    /// "Socket errors: connect 0, read 0, write 0, timeout 0".
    fn parse(text: &str) -> anyhow::Result<Self> {
        let mut w = WrkOut::default();
        for line in text.lines().map(str::trim) {
            if let Some((n, rest)) = line.split_once(" requests in ") {
                w.requests = n.trim().parse()?;
                let d = rest.split(',').next().unwrap_or("").trim();
                w.seconds = if let Some(ms) = d.strip_suffix("ms") {
                    ms.parse::<f64>()? / 1e3
                } else if let Some(s) = d.strip_suffix('s') {
                    s.parse()?
                } else if let Some(m) = d.strip_suffix('m') {
                    m.parse::<f64>()? * 60.0
                } else {
                    bail!("wrk duration {d:?}")
                };
            } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
                w.non_2xx = n.trim().parse()?;
            } else if let Some(e) = line.strip_prefix("Socket errors:") {
                w.errors = e
                    .split(',')
                    .filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .sum();
            }
        }
        ensure!(
            w.requests > 0 && w.seconds > 0.0,
            "no request count in wrk output:\n{text}"
        );
        Ok(w)
    }
}

/// CPU seconds sha256 takes per GiB here, hashing 1 GiB of memory on this thread.
fn sha256_cost() -> anyhow::Result<f64> {
    use sha2::{Digest, Sha256};
    let buf = vec![0x5au8; 16 << 20];
    let clk = sluice_bench::clk_tck()?;
    let cpu = || -> anyhow::Result<f64> {
        let s = fs::read_to_string("/proc/thread-self/stat")?;
        let f: Vec<&str> = s
            .rsplit_once(')')
            .context("stat")?
            .1
            .split_whitespace()
            .collect();
        Ok((f[11].parse::<u64>()? + f[12].parse::<u64>()?) as f64 / clk)
    };
    let c0 = cpu()?;
    let mut h = Sha256::new();
    for _ in 0..(GIB / buf.len() as u64) {
        h.update(&buf);
    }
    std::hint::black_box(h.finalize());
    Ok(cpu()? - c0)
}

fn median(r: &BTreeMap<Key, Vec<Sample>>, key: Key, f: fn(&Sample) -> f64) -> Option<f64> {
    let v = r.get(&key)?;
    (!v.is_empty()).then(|| stats(v.iter().map(f).collect()).0)
}

type Col = (&'static str, fn(&Sample) -> f64);
const TRANSFER_COLS: [Col; 4] = [
    ("wall s", |s| s.wall_s),
    ("MiB/s", Sample::mib_s),
    ("CPU s/GiB", Sample::cpu_per_gib),
    ("peak RSS MiB", |s| s.hwm),
];
const RATE_COLS: [Col; 3] = [
    ("req/s", Sample::ops_s),
    ("CPU us/req", Sample::cpu_us_per_op),
    ("peak RSS MiB", |s| s.hwm),
];

fn table(r: &BTreeMap<Key, Vec<Sample>>, kind: Kind, size: u64, whos: &[Who]) {
    let cols: &[Col] = if kind == Kind::Small {
        &RATE_COLS
    } else {
        &TRANSFER_COLS
    };
    // Wall time and throughput: the only figures a direct transfer (no proxy) has.
    let speed = |i: usize| i < if kind == Kind::Small { 1 } else { 2 };
    let runs = whos
        .iter()
        .filter_map(|&w| r.get(&(kind, size, w)).map(Vec::len))
        .max()
        .unwrap_or(0);
    println!(
        "{} {}: {}  (median of {runs})",
        kind.name(),
        label(size),
        kind.about()
    );
    print!("  {:<22}", "");
    for (h, _) in cols {
        print!("{h:>14}");
    }
    println!();
    for &w in whos {
        print!("  {:<22}", w.name());
        for (i, (_, f)) in cols.iter().enumerate() {
            match median(r, (kind, size, w), *f) {
                Some(_) if w == Who::Direct && !speed(i) => print!("{:>14}", "-"),
                Some(v) => print!("{v:>14.2}"),
                None => print!("{:>14}", "n/a"),
            }
        }
        println!();
    }
    for &s in whos.iter().filter(|w| w.peer() == Some(Peer::Sluice)) {
        for &p in whos
            .iter()
            .filter(|w| matches!(w, Who::Peer(_) | Who::Direct))
        {
            print!("  {:<22}", format!("{}/{}", s.name(), p.name()));
            for (i, (_, f)) in cols.iter().enumerate() {
                let ratio = median(r, (kind, size, s), *f)
                    .zip(median(r, (kind, size, p), *f))
                    .filter(|_| p != Who::Direct || speed(i));
                match ratio {
                    Some((a, b)) if b > 0.0 => print!("{:>13.2}x", a / b),
                    _ => print!("{:>14}", "-"),
                }
            }
            println!();
        }
    }
    println!();
}

struct Target {
    name: String,
    verdict: &'static str,
    detail: String,
}

fn targets(r: &BTreeMap<Key, Vec<Sample>>, a: &Args, sha: f64) -> Vec<Target> {
    let big = largest(a);
    let cpu = |k: Kind, w: Who| median(r, (k, big, w), Sample::cpu_per_gib);
    let mut out = Vec::new();
    let mut push = |name: String, m: Option<(bool, String)>| {
        let (verdict, detail) = match m {
            Some((true, d)) => ("PASS", d),
            Some((false, d)) => ("MISS", d),
            None => ("n/a", "not measured".into()),
        };
        out.push(Target {
            name,
            verdict,
            detail,
        });
    };
    let hap = Who::Peer(Peer::Haproxy);
    let ngx = Who::Peer(Peer::Nginx);
    push(
        "POST, every filter, checksum none: CPU/GiB <= HAProxy's".into(),
        cpu(Kind::Post, Who::Sluice)
            .zip(cpu(Kind::Post, hap))
            .map(|(s, h)| (s <= h, format!("{s:.2} vs {h:.2} s/GiB"))),
    );
    push(
        "POST, checksum sha256: CPU/GiB <= HAProxy's + sha256 alone".into(),
        cpu(Kind::Post, Who::SluiceSha256)
            .zip(cpu(Kind::Post, hap))
            .map(|(s, h)| {
                (
                    s <= h + sha,
                    format!("{s:.2} vs {h:.2} + {sha:.2} = {:.2} s/GiB", h + sha),
                )
            }),
    );
    for kind in [Kind::Put, Kind::Get] {
        for (peer, factor) in [(hap, 0.7), (ngx, 0.5)] {
            push(
                format!("{}: CPU/GiB <= {factor} x {}'s", kind.name(), peer.name()),
                cpu(kind, Who::Sluice).zip(cpu(kind, peer)).map(|(s, p)| {
                    (
                        s <= factor * p,
                        format!("{s:.2} vs {factor} x {p:.2} = {:.2} s/GiB", factor * p),
                    )
                }),
            );
        }
    }
    push(
        "GET: throughput >= 95% of direct".into(),
        paired(
            r,
            (Kind::Get, big, Who::Sluice),
            (Kind::Get, big, Who::Direct),
            Sample::mib_s,
        )
        .map(|(ratio, d)| (ratio >= 0.95, d)),
    );
    let (lo, hi) = (
        a.sizes.iter().copied().min().unwrap_or(0),
        a.sizes.iter().copied().max().unwrap_or(0),
    );
    for kind in [Kind::Put, Kind::Post, Kind::Get] {
        let hwm = |s: u64| median(r, (kind, s, Who::Sluice), |x| x.hwm);
        push(
            format!(
                "{}: peak RSS flat, {} - {} < 4 MiB",
                kind.name(),
                label(hi),
                label(lo)
            ),
            hwm(hi)
                .zip(hwm(lo))
                .filter(|_| hi > lo)
                .map(|(h, l)| (h - l < 4.0, format!("{h:.1} - {l:.1} = {:.1} MiB", h - l))),
        );
    }
    let worst_hwm = r
        .get(&(Kind::Concurrent, a.concurrent_size, Who::Sluice))
        .and_then(|v| v.iter().map(|s| s.hwm).max_by(f64::total_cmp));
    push(
        format!(
            "{} concurrent {} uploads: peak RSS < 96 MiB (worst run)",
            a.concurrent,
            label(a.concurrent_size)
        ),
        worst_hwm.map(|h| (h < 96.0, format!("{h:.1} MiB"))),
    );
    push(
        "4K PUT to a signed URL: CPU us/req <= 1.05 x unauthenticated".into(),
        paired(
            r,
            (Kind::Small, 4096, Who::SluiceSigned),
            (Kind::Small, 4096, Who::Sluice),
            Sample::cpu_us_per_op,
        )
        .map(|(ratio, d)| (ratio <= 1.05, d)),
    );
    push(
        "4K PUT: requests/s >= nginx's".into(),
        paired(
            r,
            (Kind::Small, 4096, Who::Sluice),
            (Kind::Small, 4096, ngx),
            Sample::ops_s,
        )
        .map(|(ratio, d)| (ratio >= 1.0, d)),
    );
    out
}

/// Issue 20's goal with every proxy terminating TLS: sluice's CPU per GiB at
/// most 0.8 x the better peer's on each of PUT, POST and GET, and memory flat.
fn tls_targets(r: &BTreeMap<Key, Vec<Sample>>, a: &Args) -> Vec<Target> {
    let big = largest(a);
    let cpu = |k: Kind, w: Who| median(r, (k, big, w), Sample::cpu_per_gib);
    let mut out = Vec::new();
    for kind in [Kind::Put, Kind::Post, Kind::Get] {
        let better = a
            .peers
            .iter()
            .filter(|&&p| p != Peer::Sluice)
            .filter_map(|&p| Some((p, cpu(kind, Who::Peer(p))?)))
            .min_by(|x, y| x.1.total_cmp(&y.1));
        let m = cpu(kind, Who::Sluice).zip(better).map(|(s, (p, c))| {
            (
                s <= 0.8 * c,
                format!(
                    "{s:.2} vs 0.8 x {c:.2} ({}) = {:.2} s/GiB",
                    p.name(),
                    0.8 * c
                ),
            )
        });
        let (verdict, detail) = match m {
            Some((true, d)) => ("PASS", d),
            Some((false, d)) => ("MISS", d),
            None => ("n/a", "not measured".into()),
        };
        out.push(Target {
            name: format!("TLS {}: CPU/GiB <= 0.8 x the better peer's", kind.name()),
            verdict,
            detail,
        });
    }
    out
}

/// `a` over `b` as the median of each run's ratio (`paired_ratio`), falling
/// back to the ratio of medians when a run failed and the runs no longer
/// pair up. Returns the ratio and a detail line.
fn paired(
    r: &BTreeMap<Key, Vec<Sample>>,
    a: Key,
    b: Key,
    f: fn(&Sample) -> f64,
) -> Option<(f64, String)> {
    let (ma, mb) = (median(r, a, f)?, median(r, b, f)?);
    let Some((ratio, each)) = paired_ratio(r.get(&a)?, r.get(&b)?, f) else {
        let ratio = ma / mb;
        return Some((
            ratio,
            format!(
                "{ma:.0} / {mb:.0} = {:.0}% (medians; runs failed)",
                100.0 * ratio
            ),
        ));
    };
    Some((
        ratio,
        format!(
            "median of runs {:.0}% ({each}); medians {ma:.0} / {mb:.0}",
            100.0 * ratio
        ),
    ))
}

fn results_json(r: &BTreeMap<Key, Vec<Sample>>) -> Value {
    let cols: [Col; 8] = [
        ("wall_s", |s| s.wall_s),
        ("mib_s", Sample::mib_s),
        ("cpu_s", |s| s.cpu_s),
        ("cpu_s_per_gib", Sample::cpu_per_gib),
        ("vm_hwm_mib", |s| s.hwm),
        ("rss_max_sampled_mib", |s| s.rss_max),
        ("rss_start_mib", |s| s.rss_start),
        ("requests_per_s", Sample::ops_s),
    ];
    r.iter()
        .map(|(&(kind, size, who), samples)| {
            let mut o = json!({
                "kind": kind.name(), "size": label(size), "bytes": size,
                "who": who.name(), "runs": samples.len(),
            });
            for (k, f) in cols {
                let all: Vec<f64> = samples.iter().map(f).filter(|v| v.is_finite()).collect();
                if all.is_empty()
                    || (who == Who::Direct && !matches!(k, "wall_s" | "mib_s" | "requests_per_s"))
                {
                    continue;
                }
                let (median, min, max) = stats(all.clone());
                o[k] = json!({"median": median, "min": min, "max": max, "all": all});
            }
            o
        })
        .collect()
}

fn plot_data(r: &BTreeMap<Key, Vec<Sample>>, a: &Args) -> (Vec<plot::Panel>, plot::Bars) {
    let proxies = |kind: Kind| {
        let mut w = vec![Who::Sluice];
        if kind == Kind::Post {
            w.push(Who::SluiceSha256);
        }
        w.extend(a.peers.iter().map(|&p| Who::Peer(p)));
        w
    };
    let mut sizes = a.sizes.clone();
    sizes.sort_unstable();
    let panels = [Kind::Put, Kind::Post, Kind::Get]
        .into_iter()
        .map(|kind| plot::Panel {
            title: format!("peak RSS vs file size: {}", kind.name()),
            lines: proxies(kind)
                .into_iter()
                .map(|w| plot::Line {
                    name: w.name().into(),
                    points: sizes
                        .iter()
                        .filter_map(|&s| {
                            Some((s as f64 / MIB as f64, median(r, (kind, s, w), |x| x.hwm)?))
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    let big = largest(a);
    let mut groups: Vec<(Kind, u64)> = [Kind::Put, Kind::Post, Kind::Get]
        .into_iter()
        .map(|k| (k, big))
        .collect();
    if !a.skip_concurrent {
        groups.push((Kind::Concurrent, a.concurrent_size));
    }
    let bars = plot::Bars {
        title: format!(
            "proxy CPU per GiB moved ({} transfers, medians)",
            label(big)
        ),
        groups: groups
            .iter()
            .map(|(k, s)| match k {
                Kind::Concurrent => format!("{}x{} POST", a.concurrent, label(*s)),
                _ => k.name().to_string(),
            })
            .collect(),
        series: proxies(Kind::Post)
            .into_iter()
            .map(|w| {
                let v = groups
                    .iter()
                    .map(|&(k, s)| {
                        // The sha256 variant exists for POST only; sluice's own bar elsewhere.
                        let who = if w == Who::SluiceSha256 && k != Kind::Post {
                            None
                        } else {
                            Some(w)
                        };
                        who.and_then(|w| median(r, (k, s, w), Sample::cpu_per_gib))
                    })
                    .collect();
                (w.name().to_string(), v)
            })
            .collect(),
    };
    (panels, bars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_runs_first_once_in_as_many_runs() {
        let all = [Who::Direct, Who::Sluice, Who::SluiceSha256];
        let firsts: Vec<Who> = (1..=3)
            .map(|run| {
                let mut w = all;
                rotate(&mut w, run);
                w[0]
            })
            .collect();
        assert_eq!(firsts, all);
        let mut w = all;
        rotate(&mut w, 4);
        assert_eq!(w, all);
    }

    #[test]
    fn wrk_output() {
        let t = "Running 5s test @ http://127.0.0.1:1/put/small.bin\n  1 threads and 32 connections\n  \
                 12345 requests in 5.01s, 1.23MB read\n  Non-2xx or 3xx responses: 3\n\
                 Socket errors: connect 0, read 2, write 0, timeout 1\nRequests/sec:   2464.07\n";
        let w = WrkOut::parse(t).unwrap();
        assert_eq!((w.requests, w.non_2xx, w.errors), (12345, 3, 3));
        assert!((w.seconds - 5.01).abs() < 1e-9);
        assert!(WrkOut::parse("nothing").is_err());
    }
}
