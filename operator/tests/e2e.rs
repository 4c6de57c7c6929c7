//! The whole product against a real kube-apiserver (with etcd, RBAC on): the
//! chart installed with the real helm, two `sluice-operator` processes that
//! authenticate as the chart's operator ServiceAccount (so a missing RBAC
//! rule fails this test), two real `sluice-proxy` processes on 127.0.0.2 and
//! 127.0.0.3 standing in for the two proxy Pods (API objects only: no kubelet).
//!
//! ```text
//!   helm install sluice charts/sluice -n sluice   (CRD, RBAC, SAs, token Secret)
//!   Pod objects proxy-a/-b, status patched Running+Ready, podIP 127.0.0.2/.3
//!   sluice-proxy x2  --listen 127.0.0.{2,3}:P --admin-listen 127.0.0.{2,3}:A --admin-token-file
//!   sluice-operator run x2  (KUBECONFIG = the operator ServiceAccount's token)
//!   kubectl apply UploadPolicy -> status Accepted+Programmed 2/2 -> uploads enforced ...
//! ```
//! One test, in story order: each step depends on the state the last left.
//! Every wait polls with a deadline and prints the objects when it fails.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::kube::{Kube, common_port, condition, wait_until, workspace_root};
use serde_json::Value;

const NS: &str = "sluice";
const APPS: &str = "apps";
/// The chart's proxy pod labels, and the operator's selector of them.
const POD_LABELS: &str = "app.kubernetes.io/name: sluice, app.kubernetes.io/instance: sluice, app.kubernetes.io/component: proxy";
const SELECTOR: &str = "app.kubernetes.io/name=sluice,app.kubernetes.io/instance=sluice,app.kubernetes.io/component=proxy";
/// Deadline of every wait on the control plane (a loaded CI machine gets headroom).
const DEADLINE: Duration = Duration::from_secs(30);
const SHOW: &[&str] = &["uploadpolicies -A", "pods -n sluice", "leases -n sluice"];

/// A child process whose output is kept (and printed when the test fails).
struct Proc {
    name: String,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> Proc {
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SLUICE_") {
                cmd.env_remove(k);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let logs = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    logs.lock().unwrap().push(line);
                }
            });
        }
        Proc {
            name: name.to_string(),
            child,
            logs,
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then its exit status (bounded wait).
    fn terminate(&mut self) -> std::process::ExitStatus {
        let st = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill(1)");
        assert!(st.success());
        wait_until(Instant::now() + Duration::from_secs(15), || {
            self.child.try_wait().ok().flatten()
        })
        .unwrap_or_else(|| panic!("{} did not exit within 15 s of SIGTERM", self.name))
    }

    /// A field of its first JSON log line whose message is `message`.
    fn log_field(&self, message: &str, field: &str) -> Option<String> {
        self.logs.lock().unwrap().iter().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["message"] == message).then(|| v[field].as_str().map(str::to_string))?
        })
    }

    fn has_log(&self, needle: &str) -> bool {
        self.logs.lock().unwrap().iter().any(|l| l.contains(needle))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let logs = self.logs.lock().unwrap();
            let tail = &logs[logs.len().saturating_sub(60)..];
            eprintln!("--- last output of {}:\n{}", self.name, tail.join("\n"));
        }
    }
}

/// The sluice-proxy binary, built by `cargo test --workspace` next to this
/// crate's binary (a cargo test cannot run cargo: the build lock is held).
fn proxy_bin() -> PathBuf {
    let op = PathBuf::from(env!("CARGO_BIN_EXE_sluice-operator"));
    let p = op.with_file_name("sluice-proxy");
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build -p sluice-proxy` (cargo test --workspace builds it)",
        p.display()
    );
    p
}

struct ProxyNode {
    ip: &'static str,
    port: u16,
    admin_port: u16,
    dir: PathBuf,
    token_file: PathBuf,
    proc: Option<Proc>,
}

impl ProxyNode {
    fn start(&mut self) {
        let data = self.dir.join("data");
        let state = self.dir.join("state");
        std::fs::create_dir_all(&data).expect("data dir");
        std::fs::create_dir_all(&state).expect("state dir");
        let mut cmd = Command::new(proxy_bin());
        cmd.args([
            "--listen",
            &format!("{}:{}", self.ip, self.port),
            "--admin-listen",
            &format!("{}:{}", self.ip, self.admin_port),
            "--log-format",
            "json",
        ])
        .arg("--admin-token-file")
        .arg(&self.token_file)
        .arg("--config-snapshot")
        .arg(self.dir.join("config.json")) // the ConfigMap mount; absent here
        .arg("--state-dir")
        .arg(&state)
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "info");
        self.proc = Some(Proc::spawn(&format!("sluice-proxy {}", self.ip), cmd));
        let admin: SocketAddr = format!("{}:{}", self.ip, self.admin_port).parse().unwrap();
        wait_until(Instant::now() + Duration::from_secs(10), || {
            TcpStream::connect(admin).ok()
        })
        .unwrap_or_else(|| panic!("sluice-proxy on {} did not listen", self.ip));
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.ip, self.port)
    }
}

/// `curl -T` of `size` bytes to `url`; the HTTP status.
fn put(url: &str, size: usize, scratch: &Path) -> u16 {
    let file = scratch.join(format!("upload-{size}.bin"));
    if !file.exists() {
        std::fs::write(&file, vec![b'x'; size]).expect("write upload file");
    }
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
            "-T",
        ])
        .arg(&file)
        .arg(url)
        .output()
        .expect("curl (installed by scripts/test)");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn operator(
    kube: &Kube,
    kubeconfig: &Path,
    token_file: &Path,
    identity: &str,
    admin_port: u16,
) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-operator"));
    cmd.args([
        "run",
        "--namespace",
        NS,
        "--proxy-selector",
        SELECTOR,
        "--proxy-admin-port",
        &admin_port.to_string(),
        "--configmap",
        "sluice-config",
        "--lease-name",
        "sluice-operator",
        "--identity",
        identity,
        "--lease-duration",
        "4s",
        "--lease-renew",
        "1s",
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ])
    .arg("--admin-token-file")
    .arg(token_file)
    .env("KUBECONFIG", kubeconfig)
    .env("HOME", &kube.dir)
    .env("RUST_LOG", "info,kube=warn");
    Proc::spawn(identity, cmd)
}

fn policy_yaml(name: &str, prefix: &str, max: &str, root: &str) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {{name: {name}, namespace: {APPS}}}
spec:
  pathPrefix: {prefix}
  backend: {{fs: {{root: {root}}}}}
  upload: {{maxFileSize: {max}}}
"
    )
}

fn accepted_reason(kube: &Kube, name: &str) -> Option<String> {
    let out = kube.kubectl(&["get", "uploadpolicy", name, "-n", APPS, "-o", "json"]);
    let p: Value = serde_json::from_slice(&out.stdout).ok()?;
    let generation = p["metadata"]["generation"].as_i64()?;
    (p["status"]["observedGeneration"].as_i64() == Some(generation))
        .then(|| condition(&p, "Accepted"))
        .flatten()
        .and_then(|c| c["reason"].as_str().map(str::to_string))
}

fn lease_holder(kube: &Kube) -> Option<String> {
    let out = kube.kubectl(&["get", "lease", "sluice-operator", "-n", NS, "-o", "json"]);
    let l: Value = serde_json::from_slice(&out.stdout).ok()?;
    l["spec"]["holderIdentity"].as_str().map(str::to_string)
}

#[test]
fn the_chart_the_operator_and_two_proxies_on_a_real_api_server() {
    let kube = Kube::start();
    let scratch = tempfile::tempdir().expect("scratch dir");

    // The chart: CRD, ServiceAccounts, RBAC, the admin token Secret.
    let chart = workspace_root().join("charts/sluice");
    kube.helm_ok(&[
        "install",
        "sluice",
        chart.to_str().unwrap(),
        "-n",
        NS,
        "--create-namespace",
    ]);
    kube.create_namespace(APPS);
    kube.wait_until(
        "the UploadPolicy CRD is established",
        DEADLINE,
        &["crd"],
        || {
            let out = kube.kubectl(&[
                "get",
                "crd",
                "uploadpolicies.sluice.dev",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
            ]);
            (String::from_utf8_lossy(&out.stdout) == "True").then_some(())
        },
    );
    let token = kube.kubectl_ok(&[
        "get",
        "secret",
        "sluice-admin-token",
        "-n",
        NS,
        "-o",
        "go-template={{.data.token | base64decode}}",
    ]);
    assert!(token.len() >= 32, "the chart generates a long token");
    let token_file = scratch.path().join("token");
    std::fs::write(&token_file, &token).expect("token file");

    // Two proxies, each a Pod object (status patched by hand: no kubelet) and a process.
    let ips = ["127.0.0.2", "127.0.0.3"];
    let (port, admin_port) = (common_port(&ips), common_port(&ips));
    let mut proxies: Vec<ProxyNode> = ips
        .into_iter()
        .map(|ip| {
            let dir = scratch.path().join(ip);
            std::fs::create_dir_all(&dir).expect("proxy dir");
            ProxyNode {
                ip,
                port,
                admin_port,
                dir,
                token_file: token_file.clone(),
                proc: None,
            }
        })
        .collect();
    for (p, name) in proxies.iter_mut().zip(["proxy-a", "proxy-b"]) {
        p.start();
        kube.ready_pod(NS, name, POD_LABELS, p.ip);
    }
    // Before any policy the proxies have nothing: every route 503.
    assert_eq!(put(&proxies[0].url("/files/x"), 10, scratch.path()), 503);

    // Two operator replicas as the chart's ServiceAccount.
    let sa_kubeconfig = kube.kubeconfig_for_token(&kube.sa_token(NS, "sluice-operator"));
    let mut ops = vec![
        operator(&kube, &sa_kubeconfig, &token_file, "op-1", admin_port),
        operator(&kube, &sa_kubeconfig, &token_file, "op-2", admin_port),
    ];
    let leader = kube.wait_until("one operator holds the Lease", DEADLINE, SHOW, || {
        lease_holder(&kube).filter(|h| h == "op-1" || h == "op-2")
    });
    println!("leader: {leader}");

    // A policy: Accepted, Programmed on 2/2, enforced by both.
    kube.apply(&policy_yaml("files", "/files/", "1Mi", "files"));
    let p = kube.wait_until(
        "files is Accepted and Programmed on 2/2",
        DEADLINE,
        SHOW,
        || kube.policy_programmed(APPS, "files", 2),
    );
    let version = p["status"]["configVersion"]
        .as_str()
        .expect("configVersion")
        .to_string();
    let cm = kube.get_json(&["configmap", "sluice-config", "-n", NS]);
    let snapshot: Value =
        serde_json::from_str(cm["data"]["config.json"].as_str().expect("config.json"))
            .expect("json");
    assert_eq!(
        snapshot["version"],
        version.as_str(),
        "the ConfigMap holds the served config"
    );
    for px in &proxies {
        assert_eq!(
            put(&px.url("/files/small.bin"), 512 << 10, scratch.path()),
            201,
            "{}",
            px.ip
        );
        assert_eq!(
            put(&px.url("/files/big.bin"), 2 << 20, scratch.path()),
            413,
            "{}",
            px.ip
        );
    }

    // A lower limit: both proxies enforce it within a second of the apply
    // (printed; the push benchmark measures it; the deadline is for a loaded machine).
    let t0 = Instant::now();
    kube.apply(&policy_yaml("files", "/files/", "256Ki", "files"));
    let mut enforced = [None, None];
    kube.wait_until("both proxies refuse 512 KiB", DEADLINE, SHOW, || {
        for (i, px) in proxies.iter().enumerate() {
            if enforced[i].is_none()
                && put(&px.url("/files/mid.bin"), 512 << 10, scratch.path()) == 413
            {
                enforced[i] = Some(t0.elapsed());
            }
        }
        enforced.iter().all(Option::is_some).then_some(())
    });
    println!(
        "new limit enforced {:?} after kubectl apply was started (127.0.0.2, 127.0.0.3)",
        enforced.map(|d| d.unwrap())
    );
    kube.wait_until("files generation 2 is Programmed", DEADLINE, SHOW, || {
        kube.policy_programmed(APPS, "files", 2)
            .filter(|p| p["status"]["observedGeneration"] == 2)
    });

    // Refused at apply time by the CRD's CEL rules.
    let out = kube.kubectl_stdin(
        &["apply", "-f", "-"],
        &policy_yaml("nope", "files/", "1Mi", "nope"),
    );
    assert!(
        !out.status.success(),
        "a pathPrefix without slashes is refused"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("start and end"), "{err}");
    // Valid for the schema, invalid for compile: status says so, the rest keeps working.
    kube.apply(&policy_yaml("escape", "/escape/", "1Mi", "../etc"));
    kube.wait_until("escape is Invalid", DEADLINE, SHOW, || {
        accepted_reason(&kube, "escape").filter(|r| r == "Invalid")
    });
    // A newer policy claiming the same prefix: Conflicted; the older keeps it.
    kube.apply(&policy_yaml("files-copy", "/files/", "10Mi", "other"));
    kube.wait_until("files-copy is Conflicted", DEADLINE, SHOW, || {
        accepted_reason(&kube, "files-copy").filter(|r| r == "Conflicted")
    });
    assert!(
        kube.policy_programmed(APPS, "files", 2).is_some(),
        "files keeps its route"
    );
    for px in &proxies {
        assert_eq!(
            put(&px.url("/files/ok.bin"), 100 << 10, scratch.path()),
            201
        );
        assert_eq!(
            put(&px.url("/files/mid.bin"), 512 << 10, scratch.path()),
            413
        );
    }

    // Failover: kill the leader; the other replica takes the Lease and programs a change.
    let (leader_idx, other) = if leader == "op-1" {
        (0, "op-2")
    } else {
        (1, "op-1")
    };
    ops[leader_idx].kill();
    kube.wait_until("the other operator takes the Lease", DEADLINE, SHOW, || {
        lease_holder(&kube).filter(|h| h == other)
    });
    kube.apply(&policy_yaml("files", "/files/", "200Ki", "files"));
    kube.wait_until(
        "generation 3 is Programmed by the new leader",
        DEADLINE,
        SHOW,
        || {
            kube.policy_programmed(APPS, "files", 2)
                .filter(|p| p["status"]["observedGeneration"] == 3)
        },
    );

    // The operator gone altogether: the proxies keep serving (fail-static)...
    for op in &mut ops {
        op.kill();
    }
    for px in &proxies {
        assert_eq!(
            put(&px.url("/files/ok.bin"), 100 << 10, scratch.path()),
            201
        );
        assert_eq!(
            put(&px.url("/files/mid.bin"), 300 << 10, scratch.path()),
            413
        );
    }
    // ...and one restarted without it serves its persisted config.
    proxies[0].proc.as_mut().expect("running").kill();
    proxies[0].start();
    assert_eq!(
        put(&proxies[0].url("/files/ok.bin"), 100 << 10, scratch.path()),
        201
    );
    assert_eq!(
        put(&proxies[0].url("/files/mid.bin"), 300 << 10, scratch.path()),
        413
    );

    // A change made while no operator runs is programmed once one is back.
    kube.apply(&policy_yaml("files", "/files/", "150Ki", "files"));
    let op = operator(&kube, &sa_kubeconfig, &token_file, "op-3", admin_port);
    kube.wait_until(
        "status converges under a restarted operator",
        DEADLINE,
        SHOW,
        || {
            kube.policy_programmed(APPS, "files", 2)
                .filter(|p| p["status"]["observedGeneration"] == 4)
        },
    );
    for px in &proxies {
        assert_eq!(
            put(&px.url("/files/ok.bin"), 100 << 10, scratch.path()),
            201
        );
        assert_eq!(
            put(&px.url("/files/mid.bin"), 170 << 10, scratch.path()),
            413
        );
    }
    // Events tell the transitions.
    let events = kube.kubectl_ok(&["get", "events", "-n", APPS, "-o", "json"]);
    assert!(
        events.contains("Conflicted") && events.contains("Invalid"),
        "{events}"
    );

    // Deleted: the route is gone from both proxies (files-copy, the conflicting
    // one, takes /files/ over as the only claim left: delete it too).
    kube.kubectl_ok(&["delete", "uploadpolicy", "files", "files-copy", "-n", APPS]);
    kube.wait_until("/files/ is gone from both proxies", DEADLINE, SHOW, || {
        proxies
            .iter()
            .all(|px| put(&px.url("/files/ok.bin"), 10, scratch.path()) == 404)
            .then_some(())
    });
    assert!(op.has_log("pushed"), "the operator logs its pushes");

    // Its health and metrics endpoints.
    let listen = op
        .log_field("sluice-operator listening", "listen")
        .expect("a listening line with the address");
    let get = |path: &str| -> String {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", &format!("http://{listen}{path}")])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(get("/healthz").starts_with("ok"));
    assert!(get("/readyz").contains(r#""ready":true"#));
    let metrics = get("/metrics");
    for want in [
        "sluice_operator_leader 1",
        "sluice_operator_pods_ready 2",
        "sluice_operator_pods_synced 2",
        "sluice_operator_reconciles_total",
        "sluice_operator_push_duration_seconds_count",
        "sluice_operator_status_writes_total",
    ] {
        assert!(metrics.contains(want), "no {want:?} in\n{metrics}");
    }

    // SIGTERM: a clean exit that hands the Lease over at once.
    let mut op = op;
    let status = op.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(op.has_log("sluice-operator stopped"));
    kube.wait_until("the Lease is released", DEADLINE, SHOW, || {
        lease_holder(&kube).is_none().then_some(())
    });
}
