//! `push-bench`: how long a policy change takes to be served by every proxy.
//!
//! ```text
//!   N release sluice-proxy processes, operator-managed, proxy i on 127.0.0.(i+2)
//!   P policies (one route each) parsed once, as the operator holds them
//!   per change: bump one policy's maxFileSize -> compile all P -> serialize once
//!               -> PUT /v1/config to every proxy at once (the operator's Pusher
//!                  and Tracker) -> the last proxy's answer ends the sample
//! ```
//! A proxy answers a push only after the new routes are being served, so the
//! last answer is the moment every proxy serves the change. Not included: the
//! API server's watch latency (the Kubernetes end-to-end tests cover that path).
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use sluice_bench::{KillOnDrop, percentile, print_latencies};
use sluice_operator::push::{Payload, Pusher};
use sluice_operator::sync::Tracker;

#[derive(Parser, Debug)]
struct Args {
    /// Proxy processes.
    #[arg(long, default_value_t = 10)]
    proxies: usize,
    /// Policies compiled into each config.
    #[arg(long, default_value_t = 1000)]
    policies: usize,
    /// Policy changes measured.
    #[arg(long, default_value_t = 200)]
    changes: usize,
    /// The proxy binary (default: build target/release/sluice-proxy).
    #[arg(long)]
    proxy: Option<PathBuf>,
}

const TOKEN: &str = "push-bench-token";

fn start_proxy(
    bin: &PathBuf,
    i: usize,
    dir: &std::path::Path,
) -> anyhow::Result<(KillOnDrop, SocketAddr)> {
    let ip = format!("127.0.0.{}", i + 2);
    let state = dir.join(format!("state-{i}"));
    let mut child = Command::new(bin)
        .args([
            "--listen",
            &format!("{ip}:0"),
            "--admin-listen",
            &format!("{ip}:0"),
        ])
        .arg("--admin-token-file")
        .arg(dir.join("token"))
        .arg("--state-dir")
        .arg(&state)
        .arg("--data-dir")
        .arg(dir.join(format!("data-{i}")))
        .args(["--log-format", "json"])
        .env("RUST_LOG", "warn,sluice_proxy=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let out = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(out).lines();
    let admin = loop {
        let Some(line) = lines.next() else {
            bail!("proxy {i} exited before listening");
        };
        let v: serde_json::Value = serde_json::from_str(&line?).unwrap_or_default();
        if v["message"] == "listening" {
            break v["admin"].as_str().context("admin addr")?.parse()?;
        }
    };
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok((KillOnDrop(child), admin))
}

fn policy_yaml(i: usize) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\n\
         metadata: {{name: p{i}, namespace: bench, creationTimestamp: \"2026-01-01T00:00:00Z\"}}\n\
         spec:\n  pathPrefix: /p{i}/\n  backend: {{fs: {{root: p{i}}}}}\n\
         \x20 upload: {{maxFileSize: 1Mi, allowedTypes: [\"image/*\", \"application/pdf\"], verifyContent: true}}\n---\n"
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.proxies > 0 && args.policies > 0 && args.changes > 0,
        "counts must be positive"
    );
    ensure!(args.proxies <= 250, "at most 250 proxies (127.0.0.2..=251)");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = match args.proxy {
        Some(p) => p,
        None => {
            let st = Command::new(env!("CARGO"))
                .args(["build", "--release", "-p", "sluice-proxy"])
                .current_dir(&root)
                .status()?;
            ensure!(st.success(), "building sluice-proxy failed");
            root.join("target/release/sluice-proxy")
        }
    };
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("token"), TOKEN)?;
    let mut procs = Vec::new();
    let mut admins = Vec::new();
    for i in 0..args.proxies {
        let (p, a) = start_proxy(&bin, i, dir.path())?;
        procs.push(p);
        admins.push(a);
    }

    let yaml: String = (0..args.policies).map(policy_yaml).collect();
    let (mut policies, secrets) =
        sluice_proxy::runtime::parse_manifests(&yaml, "bench").map_err(anyhow::Error::msg)?;
    ensure!(
        policies.len() == args.policies,
        "parsed {} policies",
        policies.len()
    );

    let pusher = Pusher::new(TOKEN, Duration::from_secs(10))?;
    let mut tracker = Tracker::default();
    for (i, a) in admins.iter().enumerate() {
        tracker.pod_seen(&format!("proxy-{i}"), *a, true, true, Instant::now());
    }

    let (mut total, mut compile, mut fanout) = (Vec::new(), Vec::new(), Vec::new());
    let mut payload_bytes = 0;
    // One warm-up change (connections, first config) outside the figures.
    for change in 0..=args.changes {
        let t0 = Instant::now();
        let which = change % policies.len();
        let size = format!("{}Ki", 1024 + change);
        policies[which].spec.upload.max_file_size = Some(size);
        let compiled = sluice_policy::compile(&policies, &secrets);
        ensure!(
            compiled.config.routes.len() == args.policies,
            "{} routes compiled",
            compiled.config.routes.len()
        );
        let payload = Payload::new(&compiled.config);
        let t1 = Instant::now();
        tracker.set_desired(&payload.version, t1);
        let due = tracker.take_due(t1);
        ensure!(due.len() == args.proxies, "{} pushes due", due.len());
        let pushes = due.into_iter().map(|d| {
            let pusher = pusher.clone();
            let payload = payload.clone();
            async move { (d.pod.clone(), pusher.push(d.admin, &payload).await) }
        });
        for (pod, r) in futures_util::future::join_all(pushes).await {
            let ok = r.as_ref().map(|v| v == &payload.version).unwrap_or(false);
            ensure!(ok, "push to {pod}: {r:?}");
            tracker.pushed(&pod, r.map_err(|_| ()), Instant::now());
        }
        let t2 = Instant::now();
        let fleet = tracker.fleet();
        ensure!(fleet.synced as usize == args.proxies, "synced {fleet:?}");
        payload_bytes = payload.body.len();
        if change > 0 {
            total.push((t2 - t0).as_secs_f64() * 1000.0);
            compile.push((t1 - t0).as_secs_f64() * 1000.0);
            fanout.push((t2 - t1).as_secs_f64() * 1000.0);
        }
    }
    // Every proxy serves the last version (asked separately, after the fact).
    for a in &admins {
        let v = pusher.served(*a).await?;
        ensure!(v.as_deref() == tracker.desired(), "{a} serves {v:?}");
    }
    drop(procs);

    println!(
        "policy change -> served by all {} proxies ({} policies, {} KiB config, {} changes), ms:",
        args.proxies,
        args.policies,
        payload_bytes / 1024,
        args.changes
    );
    print_latencies(
        28,
        &mut [
            ("compile + serialize", &mut compile),
            ("push to all (parallel)", &mut fanout),
            ("total", &mut total),
        ],
    );
    let p99 = percentile(&total, 0.99);
    println!(
        "target p99 < 1000 ms: {} ({p99:.1} ms)",
        if p99 < 1000.0 { "PASS" } else { "MISS" }
    );
    Ok(())
}
