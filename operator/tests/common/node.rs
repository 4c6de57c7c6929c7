//! A real one-node Kubernetes cluster on this machine, for tests that run
//! pods for real (the chart, the operator and proxy images).
//!
//! ```text
//!   Node::start(&[images]) --spawn--> kube-harness --node --images DIR... --dir D
//!        etcd, kube-apiserver 198.18.0.1:6443, controller-manager, scheduler,
//!        kube-proxy (nftables), kubelet, containerd (images imported), CNI ptp
//!        pods 198.18.16.0/20, Services 198.19.0.0/16, no DNS, nothing off the machine
//!   <--stdout-- "kube-harness: ready kubeconfig=... node=sluice-node node_ready_ms=..."
//!   node.kubectl(..) / node.helm(..) / node.apply(..)   (Deref to Kube)
//!   node.stop() -> stdin closed -> pods, processes, mounts, veths, nftables,
//!        sysctls, cgroups undone -> host compared with its state before
//!   <--stdout-- "host before: ...", "host after: ...", "leftover ...", "teardown clean"
//! ```
//!
//! The harness needs root and the Debian packages scripts/test installs
//! (containerd, runc, containernetworking-plugins, nftables); without them,
//! or without the binaries of tests/kube/build.sh, `Node::start` panics
//! with the harness's message: the tests fail, they do not skip. One node
//! runs per machine at a time (a lock the harness waits for). The test
//! process reaches pods by pod IP and Services by ClusterIP directly.

// Only the node tests use this module.
#![allow(dead_code)]

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::kube::{Kube, fresh_dir, spawn_harness, workspace_root};

/// Lock wait (another node on this machine) plus an up of 5-10 s, with
/// headroom for a loaded CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(12 * 60);
const LOCK_WAIT: &str = "8m";
/// The harness bounds each teardown step; the sum of their bounds.
const STOP_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// A running node and its control plane. Derefs to [`Kube`] for kubectl,
/// helm and the waits; [`Node::stop`] (or drop) tears it down.
pub struct Node {
    kube: Kube,
    /// The Node object's name (`sluice-node`).
    pub name: String,
    /// From the kubelet's start to the Node's Ready condition.
    pub node_ready: Duration,
    /// From the harness's start to its ready line (control plane, containerd,
    /// images imported, node Ready, `kubernetes` Service programmed).
    pub up: Duration,
    /// Pod addresses, e.g. `198.18.16.0/20`.
    pub pod_cidr: String,
    /// ClusterIP range, e.g. `198.19.0.0/16` (the `kubernetes` Service is its `.1`).
    pub service_cidr: String,
    report: Mutex<Option<Teardown>>,
}

/// What the harness reported after stopping.
#[derive(Clone, Debug)]
pub struct Teardown {
    /// The harness exited 0 and found the host as before.
    pub clean: bool,
    /// Counts per category of the host snapshot before the node started,
    /// e.g. `mounts=20 links=4 addrs=5 routes=14 nftables=0 ...`.
    pub before: String,
    /// The same after the teardown.
    pub after: String,
    /// One line per difference, `CATEGORY +|- LINE`.
    pub leftovers: Vec<String>,
    /// How long the teardown took, as the harness measured it.
    pub down: Option<Duration>,
    /// The harness's exit status and whole stderr (its errors, teardown notes).
    pub status: String,
    pub stderr: String,
}

impl Node {
    /// Starts a node with the image archives (`*.tar`) of each folder in
    /// `images` imported, and waits until it is Ready. Panics, with the
    /// harness's output, if it cannot start.
    pub fn start(images: &[&Path]) -> Node {
        let dir = fresh_dir("sluice-node");
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "--node".as_ref(),
            "--dir".as_ref(),
            dir.as_os_str(),
            "--remove-dir".as_ref(),
            "--lock-wait".as_ref(),
            LOCK_WAIT.as_ref(),
        ];
        for d in images {
            args.push("--images".as_ref());
            args.push(d.as_os_str());
        }
        let spawned = spawn_harness(&args, START_TIMEOUT, STOP_TIMEOUT);
        let ms = |key: &str| {
            Duration::from_millis(
                spawned
                    .field(key)
                    .parse()
                    .unwrap_or_else(|e| panic!("{key}: {e}")),
            )
        };
        let (name, node_ready, up) = (spawned.field("node"), ms("node_ready_ms"), ms("up_ms"));
        let (pod_cidr, service_cidr) = (spawned.field("pod_cidr"), spawned.field("service_cidr"));
        Node {
            kube: Kube::from_harness(spawned, dir, STOP_TIMEOUT),
            name,
            node_ready,
            up,
            pod_cidr,
            service_cidr,
            report: Mutex::new(None),
        }
    }

    /// `target/kube/images`: the pause image and the probe image
    /// (`sluice.test/probe:0.1.0`, see tests/kube/cmd/probe) of build.sh.
    pub fn test_images() -> PathBuf {
        workspace_root().join("target/kube/images")
    }

    /// The log of a component (`kubelet`, `containerd`, `kube-proxy`,
    /// `kube-scheduler`, `kube-controller-manager`, `kube-apiserver`),
    /// readable until the node stops.
    pub fn log(&self, component: &str) -> PathBuf {
        self.kube.dir.join(format!("{component}.log"))
    }

    /// The last `n` lines of a component's log.
    pub fn log_tail(&self, component: &str, n: usize) -> String {
        let log = std::fs::read_to_string(self.log(component)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Stops the node and returns the harness's teardown report; a second
    /// call returns the same report.
    pub fn stop(&self) -> Teardown {
        let mut report = self.report.lock().unwrap();
        if let Some(r) = report.as_ref() {
            return r.clone();
        }
        let r = match self.kube.stop_harness() {
            Some((status, lines, stderr)) => Teardown::parse(status, &lines, stderr),
            None => Teardown {
                clean: false,
                before: String::new(),
                after: String::new(),
                leftovers: vec!["the harness was already stopped".into()],
                down: None,
                status: "unknown".into(),
                stderr: String::new(),
            },
        };
        *report = Some(r.clone());
        r
    }
}

impl Teardown {
    fn parse(status: std::process::ExitStatus, lines: &[String], stderr: String) -> Teardown {
        let after_prefix = |prefix: &str| {
            lines
                .iter()
                .find_map(|l| l.strip_prefix(prefix))
                .map(str::to_string)
        };
        let before = after_prefix("kube-harness: host before: ").unwrap_or_default();
        let after = after_prefix("kube-harness: host after: ").unwrap_or_default();
        let leftovers: Vec<String> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("kube-harness: leftover "))
            .map(str::to_string)
            .collect();
        let down = lines
            .iter()
            .filter(|l| l.starts_with("kube-harness: teardown "))
            .find_map(|l| {
                l.split_whitespace()
                    .find_map(|f| f.strip_prefix("down_ms="))
            })
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis);
        let reported_clean = lines
            .iter()
            .any(|l| l.starts_with("kube-harness: teardown clean"));
        Teardown {
            clean: status.success() && reported_clean && leftovers.is_empty(),
            before,
            after,
            leftovers,
            down,
            status: status.to_string(),
            stderr,
        }
    }
}

impl std::fmt::Display for Teardown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "teardown clean: {} (harness {})",
            self.clean, self.status
        )?;
        writeln!(f, "host before: {}", self.before)?;
        writeln!(f, "host after:  {}", self.after)?;
        if let Some(d) = self.down {
            writeln!(f, "down in {d:?}")?;
        }
        for l in &self.leftovers {
            writeln!(f, "leftover {l}")?;
        }
        if !self.clean {
            write!(f, "harness stderr:\n{}", self.stderr)?;
        }
        Ok(())
    }
}

impl Deref for Node {
    type Target = Kube;
    fn deref(&self) -> &Kube {
        &self.kube
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A test that asserts on the report has called stop already; a test
        // that panicked before still gets the host restored, and is told
        // what the teardown left.
        if self.report.lock().unwrap().is_some() {
            return;
        }
        let r = self.stop();
        if !r.clean {
            eprintln!("sluice test node: {r}");
        }
    }
}
