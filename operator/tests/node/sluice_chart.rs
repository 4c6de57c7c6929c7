//! The chart on a real node: the images of `scripts/images` run by the
//! kubelet, installed with the real helm into a namespace that enforces the
//! restricted Pod Security Standard, serving uploads through their pods.
//!
//! ```text
//!   scripts/images -> target/images/sluice-{proxy,operator}.tar
//!   Node::start(target/images)  (containerd imports them; see common/node.rs)
//!   s3s-fs on 198.18.0.1 (the node's address): the storage engine the pods reach
//!   helm install sluice charts/sluice -n sluice     (1 operator, 2 proxies)
//!   kubectl apply UploadPolicy files, probe         -> Programmed on 2/2
//!   multipart POST via the Service's ClusterIP; GET via each pod IP (sha256)
//!   20 changes of probe's limit: apply -> enforced in both pods (p50, p99)
//!   rollout restart during a 256 MiB download from an old pod: it completes
//!   operator pod deleted while uploads run: none fails; the new one pushes
//!   kubectl logs: the JSON access line of each transfer
//!   node.stop(): everything undone, the host as before
//! ```
//! One test, in story order; every wait has a deadline and shows the pods
//! when it fails. Figures are printed (`--nocapture`), never asserted on time
//! except the functional deadlines.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::kube::workspace_root;
use crate::common::node::Node;

const NS: &str = "sluice";
const APPS: &str = "apps";
const PROXIES: &str = "app.kubernetes.io/instance=sluice,app.kubernetes.io/component=proxy";
const OPERATORS: &str = "app.kubernetes.io/instance=sluice,app.kubernetes.io/component=operator";
/// The node's address (on lo, for the run): pods reach the host there.
const HOST: &str = "198.18.0.1";
const S3_ACCESS: &str = "sluice-node-access";
const S3_SECRET: &str = "sluice-node-secret-key";
/// Functional deadline of each wait (image start, rollouts, status writes),
/// with headroom for a loaded CI machine.
const DEADLINE: Duration = Duration::from_secs(180);
const SHOW: &[&str] = &["pods -n sluice", "uploadpolicies -n apps"];
/// The probe policy's two limits and the probe between them.
const LOW: &str = "100Ki";
const HIGH: &str = "200Ki";
const PROBE: usize = 150 << 10;
const CHANGES: usize = 20;
const BIG: usize = 256 << 20;

/// s3s-fs (SigV4 checked) on the node's address, from target/tools.
struct Engine {
    child: Child,
    port: u16,
    _root: tempfile::TempDir,
}

impl Engine {
    fn start() -> Engine {
        let bin = workspace_root().join("target/tools/bin/s3s-fs");
        assert!(
            bin.is_file(),
            "{} is missing: ./scripts/test builds it",
            bin.display()
        );
        let root = tempfile::tempdir().expect("engine root");
        std::fs::create_dir_all(root.path().join("uploads")).expect("bucket dir");
        let port = TcpListener::bind((HOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port on the node's address")
            .port();
        let child = Command::new(&bin)
            .args(["--host", HOST, "--port", &port.to_string()])
            .args(["--access-key", S3_ACCESS, "--secret-key", S3_SECRET])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let up = crate::common::kube::wait_until(Instant::now() + Duration::from_secs(20), || {
            std::net::TcpStream::connect((HOST, port)).ok()
        });
        assert!(up.is_some(), "s3s-fs did not listen on {HOST}:{port}");
        Engine {
            child,
            port,
            _root: root,
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn policies(engine: &Engine, probe_limit: &str) -> String {
    let backend = |prefix: &str| {
        format!(
            "{{s3: {{endpoint: 'http://{HOST}:{}', bucket: uploads, region: us-east-1, keyPrefix: {prefix}, credentialsSecret: {{name: s3}}}}}}",
            engine.port
        )
    };
    format!(
        "apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {{name: files, namespace: {APPS}}}
spec:
  pathPrefix: /files/
  backend: {files}
  upload: {{maxFileSize: 1Gi}}
---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {{name: probe, namespace: {APPS}}}
spec:
  pathPrefix: /probe/
  backend: {probe}
  upload: {{maxFileSize: {probe_limit}}}
",
        files = backend("files/"),
        probe = backend("probe/"),
    )
}

/// Pods matching `selector` that are Ready and not terminating: (name, IP).
fn ready_pods(node: &Node, selector: &str) -> Vec<(String, String)> {
    let out = node.kubectl(&["get", "pods", "-n", NS, "-l", selector, "-o", "json"]);
    let Ok(list) = serde_json::from_slice::<Value>(&out.stdout) else {
        return Vec::new();
    };
    let mut pods: Vec<(String, String)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| {
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .filter_map(|p| {
            Some((
                p["metadata"]["name"].as_str()?.to_string(),
                p["status"]["podIP"].as_str()?.to_string(),
            ))
        })
        .collect();
    pods.sort();
    pods
}

fn all_pods(node: &Node, selector: &str) -> usize {
    let out = node.kubectl(&["get", "pods", "-n", NS, "-l", selector, "-o", "name"]);
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// curl with `args`, the body written to `to`; the HTTP status (0 when curl
/// failed).
fn curl_to(to: &Path, args: &[&str]) -> u16 {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "120",
            "-w",
            "%{http_code}",
            "-o",
        ])
        .arg(to)
        .args(args)
        .output()
        .expect("curl (installed by scripts/test)");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// curl with `args`; (HTTP status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let body = tempfile::NamedTempFile::new().expect("temp file");
    let status = curl_to(body.path(), args);
    (
        status,
        std::fs::read_to_string(body.path()).unwrap_or_default(),
    )
}

fn put(url: &str, file: &Path) -> u16 {
    curl(&["-T", file.to_str().unwrap(), url]).0
}

/// A file of `len` bytes whose content depends on `seed` (no two blocks alike).
fn data_file(dir: &Path, name: &str, len: usize, seed: u64) -> PathBuf {
    let path = dir.join(name);
    let mut x = seed | 1;
    let mut block = vec![0u8; 1 << 20];
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("data file"));
    let mut left = len;
    while left > 0 {
        for b in block.chunks_mut(8) {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        let n = left.min(block.len());
        std::io::Write::write_all(&mut f, &block[..n]).expect("write data file");
        left -= n;
    }
    std::io::Write::flush(&mut f).expect("flush data file");
    path
}

fn sha256_of(path: &Path) -> String {
    let mut f = std::fs::File::open(path).expect("open for sha256");
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).expect("read for sha256");
    hex::encode(h.finalize())
}

/// Applies the probe policy with `limit` and returns how long after the start
/// of `kubectl apply` each pod enforced it (a 150 KiB PUT refused with 413
/// under LOW, stored with 201 under HIGH).
fn change_probe(
    node: &Node,
    engine: &Engine,
    pods: &[(String, String)],
    limit: &str,
    probe: &Path,
) -> Vec<Duration> {
    let want = if limit == LOW { 413 } else { 201 };
    let yaml = policies(engine, limit);
    let t0 = Instant::now();
    node.apply(&yaml);
    let mut enforced: Vec<Option<Duration>> = vec![None; pods.len()];
    let mut last = vec![0u16; pods.len()];
    let deadline = t0 + Duration::from_secs(30);
    while enforced.iter().any(Option::is_none) {
        assert!(
            Instant::now() < deadline,
            "probe limit {limit} not enforced within 30 s: {pods:?} answered {last:?}"
        );
        for (i, (_, ip)) in pods.iter().enumerate() {
            if enforced[i].is_none() {
                last[i] = put(&format!("http://{ip}:8080/probe/p.bin"), probe);
                if last[i] == want {
                    enforced[i] = Some(t0.elapsed());
                }
            }
        }
    }
    enforced.into_iter().map(Option::unwrap).collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The access-log lines (JSON, target "access") in a pod's log.
fn access_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "access")
        .collect()
}

fn has_access(lines: &[Value], method: &str, path: &str, status: u16) -> bool {
    lines
        .iter()
        .any(|v| v["method"] == method && v["path"] == path && v["status"] == status)
}

#[test]
fn the_chart_on_a_real_node_serves_uploads_through_its_pods() {
    let images = workspace_root().join("target/images");
    let mut sizes = Vec::new();
    for archive in ["sluice-proxy.tar", "sluice-operator.tar"] {
        let path = images.join(archive);
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}: run scripts/images (./scripts/test runs it) to build the images",
                path.display()
            )
        });
        sizes.push(format!(
            "{archive} {:.1} MiB",
            meta.len() as f64 / 1048576.0
        ));
    }
    println!("image archives: {}", sizes.join(", "));
    let scratch = tempfile::tempdir().expect("scratch dir");

    let node = Node::start(&[&images]);
    println!(
        "node {}: Ready {:?} after the kubelet started; harness up in {:?}",
        node.name, node.node_ready, node.up
    );
    let engine = Engine::start();

    // The chart into a namespace that enforces restricted Pod Security.
    node.apply(&format!(
        "apiVersion: v1
kind: Namespace
metadata:
  name: {NS}
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/enforce-version: latest
    pod-security.kubernetes.io/warn: restricted
"
    ));
    let chart = workspace_root().join("charts/sluice");
    let t_install = Instant::now();
    let out = node.helm_ok(&[
        "install",
        "sluice",
        chart.to_str().unwrap(),
        "-n",
        NS,
        "--set",
        "operator.replicas=1",
        // Imported into containerd by the harness; never pulled.
        "--set",
        "operator.image.pullPolicy=Never",
        "--set",
        "proxy.image.pullPolicy=Never",
    ]);
    assert!(
        !out.contains("would violate PodSecurity"),
        "the chart's pods are restricted: {out}"
    );
    let (operator, proxies) = node.wait_until(
        "the operator and both proxies are Ready",
        DEADLINE,
        SHOW,
        || {
            let op = ready_pods(&node, OPERATORS);
            let px = ready_pods(&node, PROXIES);
            (op.len() == 1 && px.len() == 2).then(|| (op[0].clone(), px))
        },
    );
    let install_ready = t_install.elapsed();
    println!(
        "helm install to all pods Ready: {install_ready:?} (operator {operator:?}, proxies {proxies:?})"
    );
    for (_, ip) in proxies.iter().chain([&operator]) {
        assert!(
            ip.starts_with("198.18.") || ip.starts_with("198.19."),
            "pod address {ip} outside 198.18.0.0/15"
        );
    }

    // The policies, with the engine's keys in a Secret beside them.
    node.apply(&format!(
        "apiVersion: v1
kind: Namespace
metadata: {{name: {APPS}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: s3, namespace: {APPS}}}
stringData: {{accessKeyId: {S3_ACCESS}, secretAccessKey: {S3_SECRET}}}
"
    ));
    node.apply(&policies(&engine, HIGH));
    for name in ["files", "probe"] {
        node.wait_until(
            &format!("{name} is Programmed on 2/2"),
            DEADLINE,
            SHOW,
            || node.policy_programmed(APPS, name, 2),
        );
    }

    // A multipart upload through the Service, downloads from each pod.
    let svc = node.get_json(&["service", "sluice-proxy", "-n", NS]);
    let service = format!(
        "{}:{}",
        svc["spec"]["clusterIP"].as_str().expect("clusterIP"),
        svc["spec"]["ports"][0]["port"]
    );
    let doc = data_file(scratch.path(), "report.bin", 8 << 20, 7);
    let (status, body) = curl(&[
        "-F",
        &format!("file=@{};filename=report.bin", doc.display()),
        &format!("http://{service}/files/docs/"),
    ]);
    assert_eq!(status, 201, "multipart upload through the Service: {body}");
    let want = sha256_of(&doc);
    assert!(
        body.contains(&want),
        "the answer carries the sha256: {body}"
    );
    for (name, ip) in &proxies {
        let got = scratch.path().join(format!("report-{name}.bin"));
        let status = curl_to(&got, &[&format!("http://{ip}:8080/files/docs/report.bin")]);
        assert_eq!(status, 200, "download from {name}");
        assert_eq!(
            sha256_of(&got),
            want,
            "download from {name} is byte-identical"
        );
    }

    // 20 policy changes, each enforced by both pods.
    let probe = data_file(scratch.path(), "probe.bin", PROBE, 11);
    let mut each = Vec::new();
    for i in 0..CHANGES {
        let limit = if i % 2 == 0 { LOW } else { HIGH };
        let per_pod = change_probe(&node, &engine, &proxies, limit, &probe);
        each.push(*per_pod.iter().max().unwrap());
    }
    println!(
        "each change, in order (ms): {:?}",
        each.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );
    each.sort();
    println!(
        "policy apply to enforced in both pods, {CHANGES} changes: p50 {:?}, p99 {:?}, min {:?} (from the start of kubectl apply)",
        percentile(&each, 50.0),
        percentile(&each, 99.0),
        each[0]
    );

    // A rollout restart while a 256 MiB download runs from an old pod: the
    // pod leaves the Service, sleeps (preStop), gets SIGTERM, and drains.
    let big = data_file(scratch.path(), "big.bin", BIG, 13);
    let (old, old_ip) = proxies[0].clone();
    assert_eq!(
        put(&format!("http://{old_ip}:8080/files/big.bin"), &big),
        201
    );
    let logs = Arc::new(Mutex::new(String::new()));
    let mut follow = node
        .kubectl_command(&node.kubeconfig)
        .args(["logs", "-f", "-n", NS, &old])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f");
    let reader = {
        let logs = logs.clone();
        let pipe = follow.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut l = logs.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        })
    };
    let got = scratch.path().join("big-download.bin");
    let t_download = Instant::now();
    let mut download = Command::new("curl")
        .args([
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "170",
            "--limit-rate",
            "12M",
            "-o",
        ])
        .arg(&got)
        .args(["-w", "%{http_code}"])
        .arg(format!("http://{old_ip}:8080/files/big.bin"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    std::thread::sleep(Duration::from_secs(1));
    node.kubectl_ok(&["rollout", "restart", "deployment/sluice-proxy", "-n", NS]);
    let terminating = node.wait_until(&format!("{old} is terminating"), DEADLINE, SHOW, || {
        let out = node.kubectl(&["get", "pod", &old, "-n", NS, "-o", "json"]);
        let gone = !out.status.success();
        let p: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (gone || !p["metadata"]["deletionTimestamp"].is_null()).then(|| t_download.elapsed())
    });
    let status = download.wait().expect("curl exit");
    let done = t_download.elapsed();
    let mut code = String::new();
    std::io::Read::read_to_string(download.stdout.as_mut().unwrap(), &mut code).unwrap();
    if !(status.success() && code.trim() == "200") {
        let _ = follow.kill();
        let _ = follow.wait();
        let kubelet: Vec<String> = std::fs::read_to_string(node.log("kubelet"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(old.as_str()))
            .map(str::to_string)
            .collect();
        panic!(
            "the download from {old} did not complete ({status}, HTTP {code}) {done:?} after it started; {old} began terminating at {terminating:?}; its log:\n{}\nthe kubelet on {old}:\n{}",
            logs.lock().unwrap(),
            kubelet.join("\n")
        );
    }
    assert_eq!(
        sha256_of(&got),
        sha256_of(&big),
        "the download is byte-identical"
    );
    assert!(
        done > terminating + Duration::from_secs(6),
        "the download ({done:?}) must outlast the preStop sleep after {old} began terminating ({terminating:?}), or this step proves nothing"
    );
    println!(
        "rollout restart: {old} terminating {terminating:?} into a {done:?} download of 256 MiB, which completed"
    );
    let _ = follow.wait();
    reader.join().unwrap();
    println!(
        "{old}'s container exited {:?} into the download (its log stream ended)",
        t_download.elapsed()
    );
    let old_log = logs.lock().unwrap().clone();
    let stop_at = old_log
        .find("shutdown requested")
        .unwrap_or_else(|| panic!("{old} logged no SIGTERM:\n{old_log}"));
    let served = old_log[stop_at..].lines().any(|l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| {
            v["target"] == "access"
                && v["method"] == "GET"
                && v["path"] == "/files/big.bin"
                && v["status"] == 200
                && v["bytes"] == BIG as u64
        })
    });
    assert!(
        served,
        "{old} finished the download after SIGTERM:\n{old_log}"
    );

    let proxies = node.wait_until("the restarted proxies are Ready", DEADLINE, SHOW, || {
        let px = ready_pods(&node, PROXIES);
        (px.len() == 2 && all_pods(&node, PROXIES) == 2 && !px.iter().any(|(n, _)| *n == old))
            .then_some(px)
    });
    // The new pods got the configuration from the operator.
    node.wait_until(
        "files is Programmed on the new pods",
        DEADLINE,
        SHOW,
        || node.policy_programmed(APPS, "files", 2),
    );

    // The operator pod deleted while uploads run through the Service.
    let stop = Arc::new(AtomicBool::new(false));
    let results = Arc::new(Mutex::new(Vec::new()));
    let uploader = {
        let (stop, results) = (stop.clone(), results.clone());
        let file = data_file(scratch.path(), "during.bin", 64 << 10, 17);
        let service = service.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let code = put(&format!("http://{service}/files/during/{n}.bin"), &file);
                results.lock().unwrap().push(code);
                n += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    node.kubectl_ok(&["delete", "pod", "-n", NS, "-l", OPERATORS, "--wait=false"]);
    let new_operator = node.wait_until("a new operator pod is Ready", DEADLINE, SHOW, || {
        ready_pods(&node, OPERATORS)
            .into_iter()
            .find(|(n, _)| *n != operator.0)
    });
    let per_pod = change_probe(&node, &engine, &proxies, LOW, &probe);
    stop.store(true, Ordering::Relaxed);
    uploader.join().unwrap();
    let results = results.lock().unwrap().clone();
    let failed: Vec<&u16> = results.iter().filter(|c| **c != 201).collect();
    assert!(
        failed.is_empty() && results.len() >= 5,
        "uploads while the operator was replaced: {} of {} failed: {failed:?}",
        failed.len(),
        results.len()
    );
    println!(
        "operator {} deleted: {} uploads meanwhile, none failed; {} pushed the next change, enforced after {per_pod:?}",
        operator.0,
        results.len(),
        new_operator.0
    );

    // kubectl logs: each pod's JSON access line of a transfer it served.
    let small = data_file(scratch.path(), "small.bin", 10 << 10, 19);
    for (name, ip) in &proxies {
        let path = format!("/files/logs/{name}.bin");
        assert_eq!(put(&format!("http://{ip}:8080{path}"), &small), 201);
        assert_eq!(curl(&[&format!("http://{ip}:8080{path}")]).0, 200);
        let lines = node.wait_until(
            &format!("kubectl logs {name} shows the access lines"),
            Duration::from_secs(30),
            SHOW,
            || {
                let out = node.kubectl(&["logs", "-n", NS, name]);
                let lines = access_lines(&String::from_utf8_lossy(&out.stdout));
                (has_access(&lines, "PUT", &path, 201) && has_access(&lines, "GET", &path, 200))
                    .then_some(lines)
            },
        );
        println!("kubectl logs {name}: {} access lines", lines.len());
    }

    drop(engine);
    let report = node.stop();
    println!("{report}");
    assert!(
        report.clean,
        "the node left the host as it found it:\n{report}"
    );
}
