//! A real Kubernetes control plane for integration tests, and the CLIs to
//! drive it.
//!
//! ```text
//!   Kube::start() --spawn--> target/kube/bin/kube-harness --dir D
//!                               |- etcd (embedded, loopback)
//!                               `- kube-apiserver (RBAC, SA tokens, 127.0.0.1)
//!                 <--stdout-- "kube-harness: ready kubeconfig=D/admin.kubeconfig ..."
//!   kube.kubectl(..) / kube.helm(..) --> the binaries in target/kube/bin, admin kubeconfig
//!   drop(kube) -> stdin closed -> harness stops apiserver and etcd, removes D
//! ```
//!
//! The binaries come from `tests/kube/build.sh` (`scripts/test` runs it);
//! without them every test using this module fails, naming the script.
//! There is no kubelet and no controller-manager: objects are stored and
//! served, nothing runs them (see tests/kube/cmd/kube-harness; `node.rs`
//! starts the same harness with a real node). Pods can be
//! created directly (the ServiceAccount admission plugin is off) and their
//! status patched with `kubectl patch --subresource=status`.
//!
//! Every call here blocks (std::process); from async tests wrap them in
//! `tokio::task::spawn_blocking` or call them outside the runtime's hot path.
//! Every wait is bounded.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// How long the harness may take to print its ready line: etcd plus an API
/// server start in 5-20 s on two cores; a loaded CI machine gets headroom.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the harness may take to stop after its stdin closes.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Passed to every kubectl call (`--request-timeout`).
const REQUEST_TIMEOUT: &str = "60s";
/// Interval between two checks of a `wait_until` condition.
const POLL: Duration = Duration::from_millis(100);

/// A running control plane: etcd and kube-apiserver on loopback, with an
/// admin kubeconfig (static token, group `system:masters`).
pub struct Kube {
    /// Admin kubeconfig (JSON, which is YAML) for kubectl, helm and kube-rs.
    pub kubeconfig: PathBuf,
    /// The API server's URL, `https://127.0.0.1:PORT`.
    pub server: String,
    /// PEM of the CA that signed the API server's certificate.
    pub ca_pem: String,
    /// Folder of this control plane's files (kubeconfigs, helm's homes);
    /// removed by the harness when it stops.
    pub dir: PathBuf,
    /// The API server's log, readable while it runs.
    pub apiserver_log: PathBuf,
    child: Mutex<Option<(Child, ChildStdin)>>,
    /// The harness's stdout after its ready line (node mode reports its
    /// teardown there).
    stdout: Mutex<Option<mpsc::Receiver<String>>>,
    stderr: Arc<Mutex<String>>,
    /// How long [`Kube::stop`] waits for the harness before killing it.
    stop_timeout: Duration,
    counter: AtomicUsize,
}

/// A kube-harness process that printed its ready line.
pub(crate) struct Spawned {
    pub child: Child,
    pub stdin: ChildStdin,
    /// The ready line, `kube-harness: ready key=value ...`.
    pub ready: String,
    /// Its stdout lines after the ready line.
    pub stdout: mpsc::Receiver<String>,
    /// All it wrote to stderr so far (read by a thread).
    pub stderr: Arc<Mutex<String>>,
}

impl Spawned {
    /// The value of `key=` in the ready line; panics if it is not there.
    pub fn field(&self, key: &str) -> String {
        let prefix = format!("{key}=");
        self.ready
            .split_whitespace()
            .find_map(|f| f.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {key} in {:?}", self.ready))
            .to_string()
    }
}

/// Starts kube-harness with `args` and waits (at most `timeout`) for its
/// ready line; panics with its output if it exits or times out first (after
/// closing its stdin and waiting up to `stop_timeout` for it to undo what it
/// started).
pub(crate) fn spawn_harness(
    args: &[&std::ffi::OsStr],
    timeout: Duration,
    stop_timeout: Duration,
) -> Spawned {
    let harness = bin("kube-harness");
    let mut child = Command::new(&harness)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", harness.display()));
    let mut stdin = Some(child.stdin.take().expect("piped stdin"));

    let stderr = Arc::new(Mutex::new(String::new()));
    let err_pipe = child.stderr.take().expect("piped stderr");
    let sink = stderr.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    let (tx, rx) = mpsc::channel();
    let out_pipe = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out_pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let deadline = Instant::now() + timeout;
    let mut before = String::new();
    let ready = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("kube-harness: ready ") => break line,
            Ok(line) => {
                before.push_str(&line);
                before.push('\n');
            }
            Err(e) => {
                // A harness that gave up has undone its work and may still be
                // reporting it; one still starting stops when its stdin
                // closes. Either way, wait for its exit before killing it.
                drop(stdin.take());
                let status = match wait_until(Instant::now() + stop_timeout, || {
                    child.try_wait().ok().flatten()
                }) {
                    Some(status) => Ok(status),
                    None => {
                        let _ = child.kill();
                        child.wait()
                    }
                };
                // Let the readers drain what the harness said last.
                std::thread::sleep(Duration::from_millis(200));
                while let Ok(line) = rx.try_recv() {
                    before.push_str(&line);
                    before.push('\n');
                }
                panic!(
                    "kube-harness did not get ready ({e}; exit: {status:?})\nits stdout:\n{before}its stderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
        }
    };
    Spawned {
        child,
        stdin: stdin.expect("kept until ready"),
        ready,
        stdout: rx,
        stderr,
    }
}

/// The status condition of `obj` of type `kind`.
pub fn condition<'a>(obj: &'a serde_json::Value, kind: &str) -> Option<&'a serde_json::Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// `target/kube/bin`, where `tests/kube/build.sh` puts kube-apiserver,
/// kubectl, kube-harness and helm.
pub fn bin_dir() -> PathBuf {
    workspace_root().join("target/kube/bin")
}

/// The repository root (the workspace holding this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the operator crate sits in the workspace root")
        .to_path_buf()
}

/// The path of one of the built binaries; panics, naming the build script,
/// when it is missing, so the tests fail rather than skip.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run tests/kube/build.sh (./scripts/test runs it) to build \
         kube-apiserver, kubectl, kube-harness and helm",
        path.display()
    );
    path
}

impl Kube {
    /// Starts a fresh control plane and waits until its /readyz is ok.
    /// Dropping the `Kube` stops it.
    ///
    /// With `SLUICE_TEST_KUBECONFIG` set, no control plane is started: the
    /// tests run against that cluster (kind, k3d, ...) as its kubeconfig's
    /// current context allows, with the kubectl and helm built here.
    pub fn start() -> Kube {
        if let Some(path) = std::env::var_os("SLUICE_TEST_KUBECONFIG") {
            return Kube::external(PathBuf::from(path));
        }
        let apiserver = bin("kube-apiserver");
        let dir = fresh_dir("sluice-kube");
        let spawned = spawn_harness(
            &[
                "--dir".as_ref(),
                dir.as_os_str(),
                "--apiserver".as_ref(),
                apiserver.as_os_str(),
                "--remove-dir".as_ref(),
            ],
            START_TIMEOUT,
            STOP_TIMEOUT,
        );
        Kube::from_harness(spawned, dir, STOP_TIMEOUT)
    }

    /// The handle of a harness that is ready; `dir` is its `--dir`.
    pub(crate) fn from_harness(spawned: Spawned, dir: PathBuf, stop_timeout: Duration) -> Kube {
        let kubeconfig = PathBuf::from(spawned.field("kubeconfig"));
        let server = spawned.field("server");
        let ca_pem = std::fs::read_to_string(dir.join("ca.crt")).expect("harness wrote ca.crt");
        Kube {
            kubeconfig,
            server,
            ca_pem,
            apiserver_log: dir.join("kube-apiserver.log"),
            dir,
            child: Mutex::new(Some((spawned.child, spawned.stdin))),
            stdout: Mutex::new(Some(spawned.stdout)),
            stderr: spawned.stderr,
            stop_timeout,
            counter: AtomicUsize::new(0),
        }
    }

    /// An existing cluster, reached with `kubeconfig` (its current context).
    fn external(kubeconfig: PathBuf) -> Kube {
        let dir = std::env::temp_dir().join(format!("sluice-kube-ext-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut cmd = Command::new(bin("kubectl"));
        cmd.arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["config", "view", "--raw", "--minify", "-o", "json"])
            .env("HOME", &dir);
        let view: serde_json::Value =
            serde_json::from_str(&ok("kubectl config view", run(cmd, None)))
                .expect("kubectl config view JSON");
        let cluster = &view["clusters"][0]["cluster"];
        let server = cluster["server"].as_str().expect("server").to_string();
        let ca_pem = cluster["certificate-authority-data"]
            .as_str()
            .map(|b64| {
                let mut cmd = Command::new("base64");
                cmd.arg("-d");
                ok("base64 -d", run(cmd, Some(b64)))
            })
            .unwrap_or_default();
        // The admin kubeconfig as JSON, which the rest of this module reads.
        let admin = dir.join("admin.kubeconfig");
        std::fs::write(&admin, serde_json::to_vec_pretty(&view).unwrap()).expect("kubeconfig");
        Kube {
            kubeconfig: admin,
            server,
            ca_pem,
            apiserver_log: dir.join("no-apiserver-log"),
            dir,
            child: Mutex::new(None),
            stdout: Mutex::new(None),
            stderr: Arc::new(Mutex::new(String::new())),
            stop_timeout: STOP_TIMEOUT,
            counter: AtomicUsize::new(0),
        }
    }

    /// One control plane for the whole test binary, started by the first
    /// caller. Statics are never dropped: it stops when the test process
    /// exits, because the harness's stdin (a pipe only this process holds)
    /// closes then.
    pub fn shared() -> &'static Kube {
        static SHARED: OnceLock<Kube> = OnceLock::new();
        SHARED.get_or_init(Kube::start)
    }

    /// Runs kubectl with the admin kubeconfig; returns whatever happened.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_as(&self.kubeconfig, args, None)
    }

    /// Runs kubectl with `input` on its standard input.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        self.kubectl_as(&self.kubeconfig, args, Some(input))
    }

    /// Runs kubectl with another kubeconfig (e.g. from
    /// [`Kube::kubeconfig_for_token`]) and optional standard input.
    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str], input: Option<&str>) -> Output {
        let mut cmd = self.kubectl_command(kubeconfig);
        cmd.arg(format!("--request-timeout={REQUEST_TIMEOUT}"))
            .args(args);
        run(cmd, input)
    }

    /// A kubectl command with `kubeconfig`, not yet run and without a request
    /// timeout: for the long-lived ones (`logs -f`) a test spawns itself.
    pub fn kubectl_command(&self, kubeconfig: &Path) -> Command {
        let mut cmd = Command::new(bin("kubectl"));
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .env("HOME", &self.dir);
        cmd
    }

    /// The UploadPolicy `ns/name` once Accepted, and Programmed on `proxies`
    /// ready and synced proxies, for its current generation.
    pub fn policy_programmed(
        &self,
        ns: &str,
        name: &str,
        proxies: u64,
    ) -> Option<serde_json::Value> {
        let out = self.kubectl(&["get", "uploadpolicy", name, "-n", ns, "-o", "json"]);
        let p: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let generation = p["metadata"]["generation"].as_i64()?;
        let ok = p["status"]["observedGeneration"].as_i64() == Some(generation)
            && condition(&p, "Accepted")?["status"] == "True"
            && condition(&p, "Programmed")?["status"] == "True"
            && condition(&p, "Programmed")?["observedGeneration"].as_i64() == Some(generation)
            && p["status"]["proxies"] == serde_json::json!({"ready": proxies, "synced": proxies});
        ok.then_some(p)
    }

    /// Runs kubectl as admin; panics with its output unless it succeeds.
    /// Returns its standard output.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        ok(&format!("kubectl {}", args.join(" ")), self.kubectl(args))
    }

    /// `kubectl get ARGS -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl_ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl get output: {e}\n{out}"))
    }

    /// `kubectl apply -f -` of the given YAML (one or more documents) as
    /// admin; panics unless it succeeds. Returns kubectl's output.
    pub fn apply(&self, yaml: &str) -> String {
        ok(
            "kubectl apply -f -",
            self.kubectl_stdin(&["apply", "-f", "-"], yaml),
        )
    }

    /// A Pod object standing in for a proxy that runs as a local process at
    /// `ip`: created with `labels` (a YAML flow-map body), bound to
    /// [`FAKE_NODE`] (created too, and run by no kubelet, so in a real cluster
    /// nothing else touches the pod), then its status patched Running and
    /// Ready with that pod IP.
    pub fn ready_pod(&self, ns: &str, name: &str, labels: &str, ip: &str) {
        self.apply(&format!(
            "apiVersion: v1
kind: Node
metadata: {{name: {FAKE_NODE}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels: {{{labels}}}
spec:
  nodeName: {FAKE_NODE}
  containers: [{{name: proxy, image: sluice/sluice-proxy}}]
"
        ));
        let status = format!(
            r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"conditions":[{{"type":"Ready","status":"True"}}]}}}}"#
        );
        self.kubectl_ok(&[
            "patch",
            "pod",
            name,
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ]);
    }

    /// Creates a namespace (no error if it exists).
    pub fn create_namespace(&self, name: &str) {
        self.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n"
        ));
    }

    /// A token of ServiceAccount `ns/name` (TokenRequest, valid one hour).
    /// The ServiceAccount must exist.
    pub fn sa_token(&self, ns: &str, name: &str) -> String {
        self.kubectl_ok(&["create", "token", name, "-n", ns, "--duration=1h"])
            .trim()
            .to_string()
    }

    /// Writes a kubeconfig for this API server that authenticates with
    /// `token` (e.g. from [`Kube::sa_token`]): server URL, CA data and the
    /// token, current namespace `default`. kubectl, helm and kube-rs
    /// (`kube::Config::from_custom_kubeconfig` or `KUBECONFIG`) read it.
    pub fn kubeconfig_for_token(&self, token: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("token-{n}.kubeconfig"));
        let admin: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&self.kubeconfig).expect("admin kubeconfig"))
                .expect("the harness writes its kubeconfig as JSON");
        let ca_data = admin["clusters"][0]["cluster"]["certificate-authority-data"].clone();
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "harness", "cluster": {
                "server": self.server, "certificate-authority-data": ca_data}}],
            "users": [{"name": "token", "user": {"token": token}}],
            "contexts": [{"name": "harness", "context": {
                "cluster": "harness", "user": "token", "namespace": "default"}}],
            "current-context": "harness",
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap())
            .expect("write kubeconfig");
        path
    }

    /// Runs helm against this API server as admin, with its cache, config
    /// and data homes inside [`Kube::dir`].
    pub fn helm(&self, args: &[&str]) -> Output {
        run(helm_command(&self.dir, Some(&self.kubeconfig), args), None)
    }

    /// Runs helm; panics with its output unless it succeeds. Returns stdout.
    pub fn helm_ok(&self, args: &[&str]) -> String {
        ok(&format!("helm {}", args.join(" ")), self.helm(args))
    }

    /// Polls `cond` every 100 ms until it returns `Some`, for at most
    /// `timeout`. On time-out, panics with `what`, and the output of
    /// `kubectl get <show...> -o yaml` for each entry of `show` (e.g.
    /// `&["uploadpolicies -A", "pods -n sluice"]`), so the failure shows
    /// the objects' state.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        show: &[&str],
        cond: impl FnMut() -> Option<T>,
    ) -> T {
        match wait_until(Instant::now() + timeout, cond) {
            Some(v) => v,
            None => {
                let mut state = String::new();
                for s in show {
                    let mut args = vec!["get"];
                    args.extend(s.split_whitespace());
                    args.extend(["-o", "yaml"]);
                    let out = self.kubectl(&args);
                    state.push_str(&format!(
                        "--- kubectl get {s}\n{}{}\n",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                panic!("timed out after {timeout:?} waiting until {what}\n{state}");
            }
        }
    }

    /// The last `n` lines of the API server's log.
    pub fn apiserver_log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(&self.apiserver_log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Stops the control plane and waits (bounded) for it to exit.
    pub fn stop(&self) {
        self.stop_harness();
    }

    /// Closes the harness's stdin, waits for it to exit (killing it after
    /// the stop time-out) and returns its exit status, the stdout lines it
    /// printed after its ready line and its whole stderr; `None` when there
    /// is no harness (an external cluster) or it was already stopped.
    pub(crate) fn stop_harness(&self) -> Option<(std::process::ExitStatus, Vec<String>, String)> {
        let (mut child, stdin) = self.child.lock().unwrap().take()?;
        drop(stdin);
        let status = match wait_until(Instant::now() + self.stop_timeout, || {
            child.try_wait().ok().flatten()
        }) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                child.wait().expect("wait for the killed harness")
            }
        };
        // The reader thread ends at EOF, once the harness and its children
        // (which inherit nothing of its stdout) are gone.
        let mut lines = Vec::new();
        if let Some(rx) = self.stdout.lock().unwrap().take() {
            while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
                lines.push(line);
            }
        }
        let stderr = self.stderr.lock().unwrap().clone();
        Some((status, lines, stderr))
    }
}

impl Drop for Kube {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A folder path under the temp dir, unique in this process and not yet
/// created: harnesses remove their `--dir` when they stop, so it must be fresh.
pub fn fresh_dir(prefix: &str) -> PathBuf {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

/// The Node that [`Kube::ready_pod`] binds its pods to; no kubelet runs it.
pub const FAKE_NODE: &str = "sluice-e2e-node";

/// A TCP port free on every one of `ips` (loopback addresses), so processes
/// standing in for pods can share one port as pods do.
pub fn common_port(ips: &[&str]) -> u16 {
    for _ in 0..50 {
        let first = std::net::TcpListener::bind((ips[0], 0)).expect("bind a loopback address");
        let port = first.local_addr().expect("local addr").port();
        if ips[1..]
            .iter()
            .all(|ip| std::net::TcpListener::bind((*ip, port)).is_ok())
        {
            return port;
        }
    }
    panic!("no port free on all of {ips:?}");
}

/// Polls `cond` every 100 ms until it returns `Some` or `deadline` passes
/// (then `None`). The bounded way to wait for something in these tests.
pub fn wait_until<T>(deadline: Instant, mut cond: impl FnMut() -> Option<T>) -> Option<T> {
    loop {
        if let Some(v) = cond() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// A helm command with its homes under `home` and, if given, a kubeconfig.
/// Commands that need no cluster (lint, template) work without one.
pub fn helm_command(home: &Path, kubeconfig: Option<&Path>, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("helm"));
    cmd.args(args)
        .env("HOME", home)
        .env("HELM_CACHE_HOME", home.join("helm/cache"))
        .env("HELM_CONFIG_HOME", home.join("helm/config"))
        .env("HELM_DATA_HOME", home.join("helm/data"));
    match kubeconfig {
        Some(k) => cmd.env("KUBECONFIG", k),
        // Nothing to reach: an address no one listens on rather than ~/.kube/config.
        None => cmd.env("KUBECONFIG", home.join("no-kubeconfig")),
    };
    cmd
}

/// Runs a command to completion with optional standard input.
pub fn run(mut cmd: Command, input: Option<&str>) -> Output {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        let input = input.to_string();
        // A thread, so a child that writes a lot before reading cannot deadlock us.
        std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait {:?}: {e}", cmd.get_program()))
}

/// Stdout of a successful command; otherwise a panic showing both streams.
pub fn ok(what: &str, out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
