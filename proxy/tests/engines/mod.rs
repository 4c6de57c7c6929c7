//! Real storage engines for the backend tests, started as processes on
//! loopback: nginx with its WebDAV module (PUT and downloads), miniserve
//! (multipart uploads) and s3s-fs (S3 with SigV4 required).
//!
//! `scripts/test` installs them (apt-get for nginx, `cargo install --root
//! target/tools` for the two crates). A missing engine fails the test with
//! the command that installs it: these tests never skip.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn tools_bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("SLUICE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/bin"));
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run ./scripts/test (it installs the test engines into target/tools)",
        p.display()
    );
    p
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn wait_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited with {status} before listening on {port}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{what} did not listen on {port} within 20 s:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Every regular file under `dir`, relative, sorted (hidden ones included).
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap_or(&p).display().to_string());
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v.sort();
    v
}

/// Starts the engine's process: (data root, port, log file) -> child.
type Spawn = Box<dyn Fn(&Path, u16, &Path) -> Child + Send>;

pub struct Engine {
    child: Option<Child>,
    pub port: u16,
    /// Where the engine keeps what it stores.
    pub root: PathBuf,
    _dir: tempfile::TempDir,
    log: PathBuf,
    restart: Spawn,
}

impl Engine {
    fn start(name: &str, spawn: Spawn) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).expect("engine root");
        let log = dir.path().join(format!("{name}.log"));
        let port = free_port();
        let mut child = spawn(dir.path(), port, &log);
        wait_port(port, &mut child, name, &log);
        Engine {
            child: Some(child),
            port,
            root,
            _dir: dir,
            log,
            restart: spawn,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the engine gets no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal (`STOP`, `CONT`, ...) with kill(1): freezes or thaws the engine.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("engine running").id();
        let st = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .expect("kill(1)");
        assert!(st.success(), "kill -{sig} {pid}");
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        let base = self.root.parent().expect("engine dir").to_path_buf();
        let mut child = (self.restart)(&base, self.port, &self.log);
        wait_port(self.port, &mut child, "engine restart", &self.log);
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.kill();
    }
}

fn logged(cmd: &mut Command, log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("engine log");
    let err = out.try_clone().expect("engine log");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"))
}

/// nginx serving `root` with WebDAV PUT/DELETE and sendfile downloads.
pub fn nginx() -> Engine {
    let bin = which("nginx", "apt-get install nginx (./scripts/test does it)");
    Engine::start(
        "nginx",
        Box::new(move |dir: &Path, port: u16, log: &Path| {
            std::fs::create_dir_all(dir.join("body-temp")).expect("nginx temp dir");
            // As root, nginx would switch workers to `nobody`, who cannot write here.
            let user = if is_root() { "user root;" } else { "" };
            let conf = format!(
                r#"{user}
worker_processes 1;
# One process, so killing it kills the engine (a master's worker would live on).
master_process off;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body-temp;
  client_max_body_size 0;
  sendfile on;
  server {{
    listen 127.0.0.1:{port};
    root {dir}/root;
    location / {{
      dav_methods PUT DELETE MKCOL;
      create_full_put_path on;
      dav_access user:rw group:r all:r;
    }}
  }}
}}
"#,
                dir = dir.display()
            );
            let conf_path = dir.join("nginx.conf");
            std::fs::write(&conf_path, conf).expect("nginx.conf");
            logged(
                Command::new(&bin)
                    .arg("-e")
                    .arg(dir.join("error.log"))
                    .arg("-c")
                    .arg(&conf_path),
                log,
            )
        }),
    )
}

/// miniserve taking multipart uploads (`POST /upload?path=/`, field `file_to_upload`)
/// into `root`, staged in its own temp dir outside `root`, and serving files at `/{name}`.
pub fn miniserve() -> Engine {
    let bin = tools_bin("miniserve");
    Engine::start(
        "miniserve",
        Box::new(move |dir: &Path, port: u16, log: &Path| {
            let staging = dir.join("staging");
            std::fs::create_dir_all(&staging).expect("miniserve staging dir");
            logged(
                Command::new(&bin)
                    .args(["--interfaces", "127.0.0.1", "--port", &port.to_string()])
                    .arg("--upload-files")
                    .arg("--temp-directory")
                    .arg(&staging)
                    .arg(dir.join("root")),
                log,
            )
        }),
    )
}

pub const S3_ACCESS: &str = "sluice-test-access";
pub const S3_SECRET: &str = "sluice-test-secret-key";
pub const S3_BUCKET: &str = "uploads";

/// s3s-fs with SigV4 required (requests without a valid signature are refused).
pub fn s3() -> Engine {
    let bin = tools_bin("s3s-fs");
    Engine::start(
        "s3s-fs",
        Box::new(move |dir: &Path, port: u16, log: &Path| {
            std::fs::create_dir_all(dir.join("root").join(S3_BUCKET)).expect("bucket dir");
            logged(
                Command::new(&bin)
                    .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--access-key", S3_ACCESS, "--secret-key", S3_SECRET])
                    .arg(dir.join("root")),
                log,
            )
        }),
    )
}

fn which(name: &str, install: &str) -> PathBuf {
    for d in [
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
        "/sbin",
        "/bin",
    ] {
        let p = Path::new(d).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed: {install}");
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// TLS for an nginx engine: its certificate chain and key (PEM), and, for
/// mTLS, the CA its clients' certificates must chain to.
#[derive(Clone)]
pub struct TlsEngine {
    pub chain_pem: String,
    pub key_pem: String,
    pub client_ca_pem: Option<String>,
    /// With `client_ca_pem`: refuse a client without a certificate in the
    /// handshake (a TLS alert, as Go and Java servers do) instead of nginx's
    /// `400 No required SSL certificate was sent`.
    pub require_in_handshake: bool,
}

impl Engine {
    pub fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

/// nginx speaking TLS (1.2 and 1.3): a WebDAV engine like `nginx()`, or with
/// `upstream` a TLS front for a plain engine on that port (as for s3s-fs: the
/// Host header kept, so SigV4 signatures still verify; bodies streamed both
/// ways, no size limit).
pub fn nginx_tls(tls: TlsEngine, upstream: Option<u16>) -> Engine {
    let bin = which("nginx", "apt-get install nginx (./scripts/test does it)");
    Engine::start(
        "nginx-tls",
        Box::new(move |dir: &Path, port: u16, log: &Path| {
            std::fs::create_dir_all(dir.join("body-temp")).expect("nginx temp dir");
            std::fs::write(dir.join("engine.crt"), &tls.chain_pem).expect("engine.crt");
            std::fs::write(dir.join("engine.key"), &tls.key_pem).expect("engine.key");
            let client_auth = match &tls.client_ca_pem {
                Some(ca) => {
                    std::fs::write(dir.join("client-ca.crt"), ca).expect("client-ca.crt");
                    format!(
                        "ssl_verify_client on;\n    ssl_client_certificate {}/client-ca.crt;\n    {}",
                        dir.display(),
                        if tls.require_in_handshake {
                            "ssl_conf_command VerifyMode Peer,Require;"
                        } else {
                            ""
                        }
                    )
                }
                None => String::new(),
            };
            let location = match upstream {
                None => "dav_methods PUT DELETE MKCOL;\n      create_full_put_path on;\n      dav_access user:rw group:r all:r;".to_string(),
                Some(up) => format!(
                    "proxy_pass http://127.0.0.1:{up};\n      proxy_http_version 1.1;\n      proxy_set_header Host $http_host;\n      proxy_set_header Connection \"\";\n      proxy_request_buffering off;\n      proxy_buffering off;"
                ),
            };
            let user = if is_root() { "user root;" } else { "" };
            let conf = format!(
                r#"{user}
worker_processes 1;
master_process off;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body-temp;
  proxy_temp_path {dir}/body-temp;
  client_max_body_size 0;
  sendfile on;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {dir}/engine.crt;
    ssl_certificate_key {dir}/engine.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    {client_auth}
    root {dir}/root;
    location / {{
      {location}
    }}
  }}
}}
"#,
                dir = dir.display()
            );
            let conf_path = dir.join("nginx.conf");
            std::fs::write(&conf_path, conf).expect("nginx.conf");
            logged(
                Command::new(&bin)
                    .arg("-e")
                    .arg(dir.join("error.log"))
                    .arg("-c")
                    .arg(&conf_path),
                log,
            )
        }),
    )
}
