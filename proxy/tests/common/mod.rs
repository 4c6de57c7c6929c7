//! Harness of the end-to-end tests: starts the real `sluice-proxy` binary and
//! talks to it over loopback sockets.
//!
//! ```text
//!   Proxy::start(yaml, args) -> temp data dir (+ policies dir), child process,
//!        stdout/stderr drained by threads into `logs` (the pipe never fills)
//!        -> waits for the JSON "listening" line (addr, admin) or fails with the output
//!   clients: curl (subprocess), reqwest, `Raw` (a bare TcpStream for what
//!            well-behaved clients never send: stalls, aborts, odd heads)
//!   waits:   `wait_until(deadline, cond, state)`, never a bare sleep
//! ```
//! Each test owns its proxy (own ports, own data dir), so tests run in
//! parallel; dropping the `Proxy` kills the child. When a test fails, the
//! proxy's last log lines are printed with it.
#![allow(dead_code)] // every test binary uses a different part of the harness

pub mod pki;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// How long the proxy may take to print its "listening" line.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// Default deadline for anything a test waits on.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub struct Proxy {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// Holds `data/` and, with policies, `policies/`; removed on drop.
    dir: tempfile::TempDir,
    logs: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
    exited: Option<ExitStatus>,
}

impl Proxy {
    /// Starts `sluice-proxy` on ephemeral loopback ports with JSON logs. `policies_yaml`
    /// becomes `policies/policies.yaml` (`--policies`); None serves the embedded default.
    pub fn start(policies_yaml: Option<&str>, extra_args: &[&str]) -> Proxy {
        Self::start_with_env(policies_yaml, extra_args, &[])
    }

    /// `start`, with these variables in the proxy's environment (the AWS
    /// credential chain's, for one): the only `AWS_*` it sees.
    pub fn start_with_env(
        policies_yaml: Option<&str>,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Proxy {
        install_crypto();
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-proxy"));
        cmd.arg("--data-dir")
            .arg(&data)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .args(extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Settings come from our flags only, never from the environment of whoever runs the tests.
        for (k, _) in std::env::vars_os() {
            let name = k.to_string_lossy();
            if name.starts_with("SLUICE_") || name.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().copied());
        if let Some(yaml) = policies_yaml {
            let pdir = dir.path().join("policies");
            std::fs::create_dir_all(&pdir).expect("policies dir");
            std::fs::write(pdir.join("policies.yaml"), yaml).expect("write policies");
            cmd.arg("--policies").arg(&pdir);
        }
        let mut child = cmd.spawn().expect("spawn sluice-proxy");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(drain(out, logs.clone(), ""));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(drain(err, logs.clone(), "stderr: "));
        }
        let mut proxy = Proxy {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            logs,
            readers,
            exited: None,
        };
        let started = Instant::now();
        loop {
            if let Some(line) = proxy
                .log_json()
                .into_iter()
                .find(|l| l["message"] == "listening")
            {
                let parse = |k: &str| -> SocketAddr {
                    line[k]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| panic!("listening line without {k}: {line}"))
                };
                proxy.addr = parse("addr");
                proxy.admin = parse("admin");
                return proxy;
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                proxy.exited = Some(status);
                // Let the readers take in the last output before showing it.
                for r in std::mem::take(&mut proxy.readers) {
                    let _ = r.join();
                }
                panic!(
                    "sluice-proxy exited ({status}) before listening; output:\n{}",
                    proxy.logs_text()
                );
            }
            if started.elapsed() > START_DEADLINE {
                panic!(
                    "sluice-proxy did not log \"listening\" within {START_DEADLINE:?}; output:\n{}",
                    proxy.logs_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `https://{host}:{port}{path}`: for curl, with `--resolve host:port:127.0.0.1`
    /// (`Proxy::resolve`), or for reqwest with `.resolve(host, p.addr)`.
    pub fn https_url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.addr.port())
    }

    /// curl's `--resolve` value sending `host` to the client listener.
    pub fn resolve(&self, host: &str) -> String {
        format!("{host}:{}:127.0.0.1", self.addr.port())
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn policies_file(&self) -> PathBuf {
        self.dir.path().join("policies").join("policies.yaml")
    }

    /// Replaces the policies file atomically (write a dotfile the proxy ignores, rename),
    /// so a reload never sees half a file.
    pub fn write_policies(&self, yaml: &str) {
        let dir = self.dir.path().join("policies");
        assert!(dir.is_dir(), "proxy was started without --policies");
        let tmp = dir.join(".policies.yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write policies");
        std::fs::rename(&tmp, self.policies_file()).expect("rename policies");
    }

    /// Every file under the data dir, relative, sorted, dotfiles (`.sluice-tmp-*`) included.
    pub fn files_in_data_dir(&self) -> Vec<String> {
        let root = self.data_dir();
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue; // removed while we walked
            };
            for e in entries.flatten() {
                let p = e.path();
                match e.file_type() {
                    Ok(t) if t.is_dir() => stack.push(p),
                    Ok(_) => out.push(
                        p.strip_prefix(&root)
                            .unwrap_or(&p)
                            .to_string_lossy()
                            .into_owned(),
                    ),
                    Err(_) => {}
                }
            }
        }
        out.sort();
        out
    }

    /// Asserts the data dir holds exactly these files (no temp files either).
    pub fn assert_files(&self, expected: &[&str]) {
        let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(self.files_in_data_dir(), want, "files in the data dir");
    }

    pub fn read_stored(&self, key: &str) -> Vec<u8> {
        std::fs::read(self.data_dir().join(key))
            .unwrap_or_else(|e| panic!("stored object {key}: {e}"))
    }

    /// GET on the admin port.
    pub fn admin_get(&self, path: &str) -> Response {
        let mut raw = Raw::connect(self.admin);
        raw.send(
            format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        raw.read_response()
    }

    pub fn metrics(&self) -> String {
        let r = self.admin_get("/metrics");
        assert_eq!(r.status, 200, "/metrics: {}", r.text());
        r.text()
    }

    /// The value of one sample, e.g. `sluice_rejections_total{rule="no_route"}`; 0 when
    /// absent (a counter family has no sample until first incremented).
    pub fn metric(&self, name_with_labels: &str) -> f64 {
        metric_in(&self.metrics(), name_with_labels).unwrap_or(0.0)
    }

    pub fn in_flight(&self) -> f64 {
        self.metric("sluice_transfers_in_flight")
    }

    /// Waits until the proxy counts `n` transfers in flight.
    pub fn wait_in_flight(&self, n: f64) {
        wait_until(
            DEADLINE,
            || self.in_flight() == n,
            || format!("transfers in flight, want {n}:\n{}", self.metrics()),
        );
    }

    /// Waits until a `.sluice-tmp-*` file exists: an upload reached the backend.
    pub fn wait_temp_file(&self) {
        wait_until(
            DEADLINE,
            || self.files_in_data_dir().iter().any(|f| is_temp(f)),
            || format!("no temp file yet; files: {:?}", self.files_in_data_dir()),
        );
    }

    /// Every output line so far (stderr lines start with "stderr: ").
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn logs_text(&self) -> String {
        self.logs().join("\n")
    }

    pub fn log_json(&self) -> Vec<Value> {
        self.logs()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Access-log lines (target "access").
    pub fn access_logs(&self) -> Vec<Value> {
        self.log_json()
            .into_iter()
            .filter(|l| l["target"] == "access")
            .collect()
    }

    /// Waits for the access-log line of `method path` (the line is written once the
    /// response has gone out, so it may trail the client's view by a moment).
    pub fn wait_access(&self, method: &str, path: &str, status: u16) -> Value {
        self.wait_access_where(|l| {
            l["method"] == method && l["path"] == path && l["status"] == status
        })
    }

    pub fn wait_access_where(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let mut found = None;
        wait_until(
            DEADLINE,
            || {
                found = self.access_logs().into_iter().find(|l| pred(l));
                found.is_some()
            },
            || {
                format!(
                    "no matching access-log line; access log:\n{}",
                    self.access_text()
                )
            },
        );
        found.unwrap_or_default()
    }

    pub fn access_text(&self) -> String {
        self.access_logs()
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `kill -TERM <pid>`.
    pub fn sigterm(&self) {
        let st = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill(1)");
        assert!(st.success(), "kill -TERM failed: {st}");
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                self.exited = Some(s);
                return s;
            }
            assert!(
                started.elapsed() < deadline,
                "sluice-proxy still running {deadline:?} after being asked to stop; output:\n{}",
                self.logs_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        if std::thread::panicking() {
            let logs = self.logs();
            let tail = &logs[logs.len().saturating_sub(60)..];
            eprintln!(
                "--- last sluice-proxy output ({} lines) ---\n{}",
                logs.len(),
                tail.join("\n")
            );
        }
    }
}

fn drain(
    r: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
    tag: &'static str,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { return };
            into.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("{tag}{line}"));
        }
    })
}

pub fn is_temp(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|n| n.starts_with(".sluice-tmp-"))
}

pub fn metric_in(text: &str, name_with_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name_with_labels)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Polls `cond` every 20 ms until it holds; past `deadline`, fails with `state()`.
pub fn wait_until(
    deadline: Duration,
    mut cond: impl FnMut() -> bool,
    state: impl FnOnce() -> String,
) {
    let started = Instant::now();
    while !cond() {
        if started.elapsed() > deadline {
            panic!("condition not met within {deadline:?}; state:\n{}", state());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTP response as any of our clients saw it.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status: u16,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Request body bytes sent (curl's `size_upload`; 0 for other clients).
    pub uploaded: u64,
    /// The protocol the response came in: `HTTP/1.1`, `HTTP/2` (curl's status
    /// line; reqwest's `HTTP/1.1`, `HTTP/2.0`); empty from `Raw`.
    pub version: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    pub async fn from_reqwest(r: reqwest::Response) -> Response {
        let status = r.status().as_u16();
        let version = format!("{:?}", r.version());
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = r.bytes().await.expect("read response body").to_vec();
        Response {
            status,
            headers,
            body,
            uploaded: 0,
            version,
        }
    }
}

/// Asserts a rejection: its status, a JSON body `{"error": rule, "message": "..."}`.
/// Returns the message.
pub fn assert_reject(r: &Response, status: u16, rule: &str) -> String {
    assert_eq!(
        r.status,
        status,
        "want {status} {rule}; got {} {:?}",
        r.status,
        r.text()
    );
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "rejection content-type: {:?}",
        r.headers
    );
    let v = r.json();
    assert_eq!(v["error"], rule, "error field of {v}");
    let msg = v["message"].as_str().unwrap_or_default().to_string();
    assert!(!msg.is_empty(), "message field of {v}");
    msg
}

/// Asserts a 201 for one object and returns its JSON entry.
pub fn assert_created_one(r: &Response, key: &str, data: &[u8]) -> Value {
    assert_eq!(r.status, 201, "upload of {key}: {}", r.text());
    let v = r.json();
    let objects = v["objects"].as_array().cloned().unwrap_or_default();
    assert_eq!(objects.len(), 1, "objects in {v}");
    assert_object(&objects[0], key, data);
    objects[0].clone()
}

/// Checks one entry of a 201's `objects`: key, size and sha256 of `data`, and a content type.
pub fn assert_object(o: &Value, key: &str, data: &[u8]) {
    assert_eq!(o["key"], key, "key of {o}");
    assert_eq!(o["size"], data.len() as u64, "size of {o}");
    assert_eq!(o["sha256"], sha256_hex(data), "sha256 of {o}");
    assert!(
        o["contentType"].as_str().is_some_and(|c| c.contains('/')),
        "contentType of {o}"
    );
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deterministic pseudo-random bytes (xorshift64*): incompressible, reproducible.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        out.extend_from_slice(&s.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A temp file holding `data`, for curl to upload.
/// `curl -T`: a raw PUT of `data` to `path` on the proxy.
pub fn put(p: &Proxy, path: &str, data: &[u8]) -> Response {
    let f = temp_file(data);
    curl(&["-T", path_str(f.path()), &p.url(path)])
}

pub fn temp_file(data: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(data).expect("write temp file");
    f.flush().expect("flush temp file");
    f
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Runs curl (no proxy from the environment) and returns the final response. Fails the
/// test, never skips it, when curl is missing or cannot complete the exchange.
pub fn curl(args: &[&str]) -> Response {
    let dir = tempfile::tempdir().expect("temp dir");
    let body = dir.path().join("body");
    let head = dir.path().join("head");
    let out = Command::new("curl")
        .args(["-sS", "--noproxy", "*", "--max-time", "60", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&head)
        .args(["-w", "%{http_code} %{size_upload}"])
        .args(args)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("these tests need curl on PATH (apt-get install curl); it was not found")
        }
        Err(e) => panic!("running curl: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        stdout
    );
    let mut w = stdout.split_whitespace();
    let status: u16 = w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let uploaded: u64 = w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let head = std::fs::read_to_string(&head).unwrap_or_default();
    // Interim (100 Continue) blocks come first: keep the last one.
    let last = head
        .split("\r\n\r\n")
        .filter(|b| b.starts_with("HTTP/"))
        .last()
        .unwrap_or("");
    let headers = last
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Response {
        status,
        headers,
        body: std::fs::read(&body).unwrap_or_default(),
        uploaded,
        version: last
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

/// `openssl` for test-only key pairs; fails the test when missing.
pub fn openssl(args: &[&str]) {
    let out = match Command::new("openssl").args(args).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!(
                "these tests need the openssl CLI on PATH (apt-get install openssl); it was not found"
            )
        }
        Err(e) => panic!("running openssl: {e}"),
    };
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// reqwest is built without a rustls provider of its own (no aws-lc): a client
/// takes ring from the process default, installed here before any is built.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn client_h1() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .build()
        .expect("reqwest client")
}

/// HTTP/2 over cleartext: always the hyper path of the proxy.
pub fn client_h2() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("reqwest client")
}

/// A PUT over HTTP/2 (prior knowledge) with reqwest, from a synchronous test.
/// For refusals sent before the body is read: the proxy answers, then resets
/// the stream with NO_ERROR (RFC 9113 8.1), which Debian's curl 7.88 can
/// report as "Stream error in the HTTP/2 framing layer" when the reset
/// arrives while it is still sending.
pub fn h2_put(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Response {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let mut req = client_h2().put(url).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.expect("HTTP/2 PUT");
        Response::from_reqwest(r).await
    })
}

/// A bare TCP connection, for requests real clients would not send.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("set timeout");
        // A proxy that neither reads nor closes must not hang a test.
        stream
            .set_write_timeout(Some(DEADLINE))
            .expect("set timeout");
        let _ = stream.set_nodelay(true);
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to the proxy");
    }

    /// Whether the proxy closes (or resets) the connection within `limit`, reading and
    /// dropping whatever it sends meanwhile.
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        let mut scratch = [0u8; 4096];
        while Instant::now() < until {
            match self.stream.read(&mut scratch) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return true,
            }
        }
        false
    }

    /// Reads one response (interim 1xx ones included) within `DEADLINE`. The body is
    /// framed by Content-Length, chunked encoding, or the connection closing.
    pub fn read_response(&mut self) -> Response {
        let started = Instant::now();
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.fill(started),
                "connection closed before a response head; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end);
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line in {head:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut r = Response {
            status,
            headers,
            ..Response::default()
        };
        if (100..200).contains(&status) || status == 204 || status == 304 {
            return r;
        }
        if let Some(n) = r
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            while self.buf.len() < n {
                assert!(self.fill(started), "connection closed mid-body");
            }
            r.body = self.buf.drain(..n).collect();
        } else if r
            .header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        break i;
                    }
                    assert!(self.fill(started), "connection closed mid-chunk");
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
                while self.buf.len() < line_end + 2 + size + 2 {
                    assert!(self.fill(started), "connection closed mid-chunk");
                }
                r.body
                    .extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break;
                }
            }
        } else {
            while self.fill(started) {}
            r.body = std::mem::take(&mut self.buf);
        }
        r
    }

    /// Reads more; false on EOF or reset. Fails the test past `DEADLINE`.
    fn fill(&mut self, started: Instant) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    assert!(
                        started.elapsed() < DEADLINE,
                        "no response within {DEADLINE:?}; got so far {:?}",
                        String::from_utf8_lossy(&self.buf)
                    );
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One part of a hand-built multipart body.
pub struct Part<'a> {
    pub name: &'a str,
    pub filename: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub data: &'a [u8],
}

pub const BOUNDARY: &str = "sluice-test-boundary-7d1f";

/// A multipart/form-data body with `BOUNDARY`.
pub fn multipart_body(parts: &[Part<'_>]) -> Vec<u8> {
    let mut b = Vec::new();
    for p in parts {
        b.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        let mut cd = format!("Content-Disposition: form-data; name=\"{}\"", p.name);
        if let Some(f) = p.filename {
            cd.push_str(&format!("; filename=\"{f}\""));
        }
        b.extend_from_slice(cd.as_bytes());
        b.extend_from_slice(b"\r\n");
        if let Some(ct) = p.content_type {
            b.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        b.extend_from_slice(b"\r\n");
        b.extend_from_slice(p.data);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    b
}

/// A request head for `Raw`, with Host and the given extra header lines.
pub fn head(method: &str, path: &str, headers: &[&str]) -> Vec<u8> {
    let mut h = format!("{method} {path} HTTP/1.1\r\nHost: sluice.test\r\n");
    for line in headers {
        h.push_str(line);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h.into_bytes()
}

/// The smallest valid PNG header (signature + IHDR), enough for any sniffer.
pub fn png_bytes() -> Vec<u8> {
    let mut v = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    v.extend_from_slice(&[
        0, 0, 0, 13, b'I', b'H', b'D', b'R', 0, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0,
    ]);
    v.extend_from_slice(&[0x1f, 0x15, 0xc4, 0x89]);
    v.extend_from_slice(&random_bytes(200, 42));
    v
}

/// Can a new TCP connection reach `addr`?
pub fn connects(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}
