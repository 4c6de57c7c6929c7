//! `operator-bench`: from a policy change at the API server to every proxy
//! serving it, through the whole control plane.
//!
//! ```text
//!   kube-harness (real kube-apiserver + etcd, target/kube/bin) + the UploadPolicy CRD
//!   N release sluice-proxy processes on 127.0.0.2.., each a Pod object patched Ready
//!   P UploadPolicies created through the API; release sluice-operator run (admin kubeconfig)
//!   per change: PATCH one policy's maxFileSize (t0)
//!       -> watch event -> compile all P -> push to N   => "served": every proxy's
//!          GET /v1/config/version moved off the old version (polled every 2 ms)
//!       -> status of that policy Programmed for its new generation => "status"
//! ```
//! Status carries the config version, so every change rewrites all P
//! statuses; "status" shows what that costs, "served" that pushes never wait
//! for it. Needs tests/kube/build.sh's binaries (./scripts/test builds them).
#![forbid(unsafe_code)]

#[path = "../../../operator/tests/common/kube.rs"]
mod kube_harness;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Parser;
use futures_util::StreamExt;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube_harness::{Kube, common_port, wait_until};
use sluice_bench::{KillOnDrop, percentile, print_latencies};
use sluice_operator::push::Pusher;
use sluice_policy::UploadPolicy;

#[derive(Parser, Debug)]
struct Args {
    /// Proxy processes (and Pod objects).
    #[arg(long, default_value_t = 10)]
    proxies: usize,
    /// UploadPolicies in the API server.
    #[arg(long, default_value_t = 1000)]
    policies: usize,
    /// Policy changes measured.
    #[arg(long, default_value_t = 30)]
    changes: usize,
}

const TOKEN: &str = "operator-bench-token";
const NS: &str = "sluice";
const APPS: &str = "bench";

fn quiet(mut cmd: Command) -> anyhow::Result<KillOnDrop> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let out = child.stdout.take().context("stdout")?;
    // Drain its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in BufReader::new(out).lines() {});
    Ok(KillOnDrop(child))
}

fn policy(i: usize, max: &str) -> anyhow::Result<UploadPolicy> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "UploadPolicy",
        "metadata": {"name": format!("p{i}"), "namespace": APPS},
        "spec": {"pathPrefix": format!("/p{i}/"), "backend": {"fs": {"root": format!("p{i}")}},
            "upload": {"maxFileSize": max, "allowedTypes": ["image/*", "application/pdf"], "verifyContent": true}},
    }))?)
}

fn build(root: &Path) -> anyhow::Result<PathBuf> {
    let st = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "-p",
            "sluice-proxy",
            "-p",
            "sluice-operator",
        ])
        .current_dir(root)
        .status()?;
    ensure!(st.success(), "building the release binaries failed");
    Ok(root.join("target/release"))
}

async fn served_versions(pusher: &Pusher, admins: &[SocketAddr]) -> Vec<Option<String>> {
    futures_util::future::join_all(
        admins
            .iter()
            .map(|a| async move { pusher.served(*a).await.ok().flatten() }),
    )
    .await
}

/// The policy's status says Programmed for `generation`.
fn programmed(p: &UploadPolicy, generation: i64) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.observed_generation == Some(generation)
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Programmed" && c.status == "True")
    })
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
    let bin = build(&root)?;

    let kube = tokio::task::spawn_blocking(Kube::start).await?;
    kube.kubectl_ok(&[
        "apply",
        "-f",
        root.join("crds/uploadpolicy.yaml").to_str().unwrap(),
    ]);
    kube.create_namespace(NS);
    kube.create_namespace(APPS);
    kube.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/uploadpolicies.sluice.dev",
        "--timeout=60s",
    ]);
    let dir = tempfile::tempdir()?;
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN)?;

    // Proxies and their Pod objects.
    let ips: Vec<String> = (0..args.proxies)
        .map(|i| format!("127.0.0.{}", i + 2))
        .collect();
    let ip_refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    let (port, admin_port) = (common_port(&ip_refs), common_port(&ip_refs));
    let mut procs = Vec::new();
    let mut admins = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let mut cmd = Command::new(bin.join("sluice-proxy"));
        cmd.args(["--listen", &format!("{ip}:{port}")])
            .args(["--admin-listen", &format!("{ip}:{admin_port}")])
            .arg("--admin-token-file")
            .arg(&token)
            .arg("--state-dir")
            .arg(dir.path().join(format!("state-{i}")))
            .arg("--data-dir")
            .arg(dir.path().join(format!("data-{i}")))
            .args(["--log-format", "json"])
            .env("RUST_LOG", "warn");
        procs.push(quiet(cmd)?);
        let admin: SocketAddr = format!("{ip}:{admin_port}").parse()?;
        wait_until(Instant::now() + Duration::from_secs(10), || {
            TcpStream::connect(admin).ok()
        })
        .with_context(|| format!("proxy {ip} did not listen"))?;
        admins.push(admin);
        kube.ready_pod(
            NS,
            &format!("proxy-{i}"),
            "app.kubernetes.io/name: sluice, app.kubernetes.io/component: proxy",
            ip,
        );
    }

    // The policies, through the API server.
    let client = {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kube.kubeconfig)?,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        kube::Client::try_from(config)?
    };
    let api: Api<UploadPolicy> = Api::namespaced(client, APPS);
    let t = Instant::now();
    let created = futures_util::stream::iter(0..args.policies)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &policy(i, "1Mi")?)
                    .await
                    .map_err(anyhow::Error::from)
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    for r in created {
        r?;
    }
    println!(
        "{} policies created in {:.1} s",
        args.policies,
        t.elapsed().as_secs_f64()
    );

    // The operator.
    let mut cmd = Command::new(bin.join("sluice-operator"));
    cmd.args([
        "run",
        "--namespace",
        NS,
        "--proxy-admin-port",
        &admin_port.to_string(),
    ])
    .args([
        "--proxy-selector",
        "app.kubernetes.io/name=sluice,app.kubernetes.io/component=proxy",
    ])
    .arg("--admin-token-file")
    .arg(&token)
    .args([
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--identity",
        "bench",
    ])
    .env("KUBECONFIG", &kube.kubeconfig)
    .env("RUST_LOG", "warn");
    let _operator = quiet(cmd)?;

    let pusher = Pusher::new(TOKEN, Duration::from_secs(5))?;
    // Converged: every proxy serves one version and the last policy says Programmed.
    let t = Instant::now();
    let deadline = t + Duration::from_secs(300);
    loop {
        let v = served_versions(&pusher, &admins).await;
        let same = v[0].is_some() && v.iter().all(|x| x == &v[0]);
        let last = api.get(&format!("p{}", args.policies - 1)).await?;
        if same && programmed(&last, last.metadata.generation.unwrap_or(0)) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no convergence within 300 s: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cm = kube.get_json(&["configmap", "sluice-config", "-n", NS]);
    let config_bytes = cm["data"]["config.json"].as_str().map_or(0, str::len);
    println!(
        "converged (all {} statuses written) in {:.1} s; config {} KiB",
        args.policies,
        t.elapsed().as_secs_f64(),
        config_bytes / 1024
    );

    let (mut served, mut status) = (Vec::new(), Vec::new());
    for change in 0..args.changes {
        let old = served_versions(&pusher, &admins).await;
        let name = format!("p{}", change % args.policies);
        let patch = serde_json::json!({"spec": {"upload": {"maxFileSize": format!("{}Ki", 2048 + change)}}});
        let t0 = Instant::now();
        let after = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let generation = after.metadata.generation.unwrap_or(0);
        let deadline = t0 + Duration::from_secs(60);
        loop {
            let v = served_versions(&pusher, &admins).await;
            if v.iter().zip(&old).all(|(n, o)| n.is_some() && n != o) {
                served.push(t0.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "change {change} not served within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        loop {
            if programmed(&api.get(&name).await?, generation) {
                status.push(t0.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "change {change}: status not Programmed within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(procs);

    println!(
        "policy change (PATCH at the API server) -> ... ({} proxies, {} policies, {} changes), ms:",
        args.proxies, args.policies, args.changes
    );
    print_latencies(
        44,
        &mut [
            ("served by every proxy", &mut served),
            (
                "its status Programmed (all statuses rewritten)",
                &mut status,
            ),
        ],
    );
    let p99 = percentile(&served, 0.99);
    println!(
        "target p99 < 1000 ms (served by every proxy): {} ({p99:.1} ms)",
        if p99 < 1000.0 { "PASS" } else { "MISS" }
    );
    Ok(())
}
