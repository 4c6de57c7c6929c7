//! The servers of the peer benchmark: backends that live for the whole run,
//! and a fresh proxy per measurement.
//!
//! ```text
//!   backends (whole run):  nginx (engines::nginx, sendfile) serving /dl/<file>
//!                          sink (this binary, `peers sink`) taking /put/, /mp/, /mpsha/
//!   proxies (per measurement), each with the same routes:
//!     /dl/    -> nginx        /put/ /mp/ /mpsha/ -> sink
//!     sluice:  one UploadPolicy per route (backend.http put | multipart, checksum
//!              none | sha256, verifyContent, type and extension allowlists)
//!     nginx:   proxy_request_buffering off, proxy_buffering off, 64 KiB buffers
//!     haproxy: mode http, option splice-auto
//! ```
//! With `--tls` every proxy terminates TLS on its listener with the same
//! certificate (ECDSA P-256, made for the run by openssl) and TLS 1.2/1.3;
//! the clients speak HTTP/1.1 over it, the backends stay plaintext.
//! Same worker budget for all: sluice's tokio runtime has one worker thread per
//! core (2 here), nginx gets `worker_processes 2`, HAProxy `nbthread 2`. No
//! access logs anywhere (sluice `--no-access-log`, nginx `access_log off`).

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use sluice_bench::engines::{self, Engine};
use sluice_bench::measure::Procs;
use sluice_bench::sluice::{Env, Proxy, Workdir};

/// Threads or processes each proxy may run transfers on.
pub const WORKERS: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Peer {
    Sluice,
    Nginx,
    Haproxy,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Sluice => "sluice",
            Peer::Nginx => "nginx",
            Peer::Haproxy => "haproxy",
        }
    }
}

/// The certificate every proxy presents with `--tls`.
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Certificate then key in one file, as HAProxy's `crt` takes it.
    pub combined: PathBuf,
}

impl Tls {
    /// A self-signed certificate for 127.0.0.1 and localhost in `dir`.
    pub fn make(dir: &Path) -> anyhow::Result<Self> {
        let (cert, key) = (dir.join("bench-tls.crt"), dir.join("bench-tls.key"));
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=localhost", "-addext"])
            .arg("subjectAltName=IP:127.0.0.1,DNS:localhost")
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .context("running openssl (./scripts/test installs it)")?;
        ensure!(
            out.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let combined = dir.join("bench-tls.pem");
        fs::write(&combined, [fs::read(&cert)?, fs::read(&key)?].concat())?;
        Ok(Self {
            cert,
            key,
            combined,
        })
    }
}

/// The backends every proxy (and the direct client) talks to.
pub struct Backends {
    /// Serves `/dl/<data file>` with sendfile.
    pub files: Engine,
    pub sink: Child,
    pub sink_port: u16,
}

impl Backends {
    pub fn start(data_dir: &Path, sizes: &[u64]) -> anyhow::Result<Self> {
        let files = engines::nginx();
        let dl = files.root.join("dl");
        fs::create_dir_all(&dl)?;
        for &s in sizes {
            let f = sluice_bench::data::data_file(data_dir, s);
            let name = f.file_name().context("data file name")?;
            std::os::unix::fs::symlink(fs::canonicalize(&f)?, dl.join(name))?;
        }
        let sink_port = engines::free_port();
        let mut sink = Command::new(std::env::current_exe()?)
            .args(["sink", "--listen", &format!("127.0.0.1:{sink_port}")])
            .stdin(Stdio::null())
            .spawn()
            .context("starting the sink")?;
        wait_listening(sink_port, &mut sink, "sink")?;
        Ok(Self {
            files,
            sink,
            sink_port,
        })
    }

    pub fn files_url(&self) -> String {
        self.files.url()
    }

    pub fn sink_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.sink_port)
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        let _ = self.sink.kill();
        let _ = self.sink.wait();
    }
}

fn wait_listening(port: u16, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(st) = child.try_wait()? {
            bail!("{what} exited with {st} before listening on {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what} did not listen on {port} within 20 s")
}

/// The HMAC key of sluice's signed-URL route (`/sput/`), as the bench signs with it.
pub const SIGNING_KEY: &str = "bench-signing-key-6f1c2a9e";

/// sluice's policies: the same routes as the peers' configs, and `/sput/`
/// (the `/put/` route behind signed URLs, for the cost of checking one).
pub fn sluice_policies(b: &Backends) -> String {
    let sink = b.sink_url();
    let files = b.files_url();
    let filters = "allowedTypes: [application/octet-stream], allowedExtensions: [bin], \
                   verifyContent: true";
    let policy = |name: &str, prefix: &str, backend: String, checksum: &str| {
        format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\n\
             metadata: {{name: {name}, namespace: bench}}\nspec:\n  pathPrefix: {prefix}\n\
             \x20 backend: {{http: {{{backend}}}}}\n\
             \x20 upload: {{maxFileSize: 8Gi, checksum: {checksum}, {filters}}}\n"
        )
    };
    [
        policy(
            "put",
            "/put/",
            format!("url: \"{sink}/put\", mode: put"),
            "none",
        ),
        policy(
            "mp",
            "/mp/",
            format!("url: \"{sink}/mp\", mode: multipart"),
            "none",
        ),
        policy(
            "mpsha",
            "/mpsha/",
            format!("url: \"{sink}/mpsha\", mode: multipart"),
            "sha256",
        ),
        policy(
            "dl",
            "/dl/",
            format!("url: \"{files}/dl\", mode: put"),
            "none",
        ),
        policy(
            "sput",
            "/sput/",
            format!("url: \"{sink}/put\", mode: put"),
            "none",
        ) + "  auth: {signedUrls: {secretRef: {name: bench-sign}}}\n",
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: bench-sign, namespace: bench}}\n\
             stringData: {{key: {SIGNING_KEY}}}\n"
        ),
    ]
    .join("---\n")
}

fn nginx_conf(dir: &Path, port: u16, b: &Backends, tls: Option<&Tls>) -> String {
    let user = if is_root() { "user root;" } else { "" };
    let listen = match tls {
        Some(t) => format!(
            "listen 127.0.0.1:{port} ssl;\n    ssl_certificate {};\n    \
             ssl_certificate_key {};\n    ssl_protocols TLSv1.2 TLSv1.3;",
            t.cert.display(),
            t.key.display()
        ),
        None => format!("listen 127.0.0.1:{port};"),
    };
    format!(
        r#"{user}
worker_processes {WORKERS};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  keepalive_requests 1000000;
  client_max_body_size 0;
  # Stream both ways; 64 KiB buffers, the size sluice's own chunks have.
  client_body_buffer_size 64k;
  proxy_request_buffering off;
  proxy_buffering off;
  proxy_buffer_size 64k;
  proxy_buffers 4 64k;
  proxy_busy_buffers_size 128k;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_read_timeout 600s;
  proxy_send_timeout 600s;
  upstream files {{ server 127.0.0.1:{files}; keepalive 64; }}
  upstream sink {{ server 127.0.0.1:{sink}; keepalive 64; }}
  server {{
    {listen}
    location /dl/ {{ proxy_pass http://files; }}
    location / {{ proxy_pass http://sink; }}
  }}
}}
"#,
        dir = dir.display(),
        files = b.files.port,
        sink = b.sink_port,
    )
}

fn haproxy_conf(port: u16, b: &Backends, tls: Option<&Tls>) -> String {
    let bind = match tls {
        Some(t) => format!(
            "bind 127.0.0.1:{port} ssl crt {} ssl-min-ver TLSv1.2",
            t.combined.display()
        ),
        None => format!("bind 127.0.0.1:{port}"),
    };
    format!(
        r#"global
  nbthread {WORKERS}
  maxconn 4096
defaults
  mode http
  option splice-auto
  option http-keep-alive
  timeout connect 5s
  timeout client 600s
  timeout server 600s
  timeout http-request 30s
frontend fe
  {bind}
  use_backend files if {{ path_beg /dl/ }}
  default_backend sink
backend files
  server files 127.0.0.1:{files}
backend sink
  server sink 127.0.0.1:{sink}
"#,
        files = b.files.port,
        sink = b.sink_port,
    )
}

/// One proxy for one measurement; stopped when dropped.
pub enum Running {
    /// The proxy drops (and is killed) before its policies folder goes.
    Sluice {
        proxy: Box<Proxy>,
        _work: Workdir,
        scheme: &'static str,
    },
    Process {
        child: Child,
        port: u16,
        scheme: &'static str,
        procs: Procs,
        _dir: tempfile::TempDir,
    },
}

impl Running {
    pub fn start(peer: Peer, env: &Env, b: &Backends, tls: Option<&Tls>) -> anyhow::Result<Self> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        if peer == Peer::Sluice {
            let work = Workdir::with_policy(env, &sluice_policies(b))?;
            // 64 concurrent uploads come from one address (the default cap is 64);
            // a 4 GiB upload's answer comes after its body, past the default 60 s
            // on a busy machine.
            // No access log, as nginx (`access_log off`) and HAProxy (no `log`) run here.
            let mut args: Vec<&str> = vec![
                "--max-transfers-per-client",
                "256",
                "--backend-timeout",
                "600s",
                "--no-access-log",
            ];
            let paths;
            if let Some(t) = tls {
                paths = [path_str(&t.cert)?, path_str(&t.key)?];
                args.extend(["--tls-cert", paths[0], "--tls-key", paths[1]]);
            }
            let proxy = Proxy::start(env, &work, &args)?;
            return Ok(Running::Sluice {
                proxy: Box::new(proxy),
                _work: work,
                scheme,
            });
        }
        let dir = tempfile::Builder::new()
            .prefix(peer.name())
            .tempdir_in(&env.tmp_dir)?;
        let port = engines::free_port();
        let (mut cmd, processes) = match peer {
            Peer::Nginx => {
                let conf = dir.path().join("nginx.conf");
                fs::write(&conf, nginx_conf(dir.path(), port, b, tls))?;
                let mut c = Command::new(which("nginx")?);
                c.arg("-e")
                    .arg(dir.path().join("error.log"))
                    .arg("-c")
                    .arg(conf);
                (c, 1 + WORKERS)
            }
            Peer::Haproxy => {
                let conf = dir.path().join("haproxy.cfg");
                fs::write(&conf, haproxy_conf(port, b, tls))?;
                let mut c = Command::new(which("haproxy")?);
                c.arg("-db").arg("-f").arg(conf);
                (c, 1)
            }
            Peer::Sluice => unreachable!("handled above"),
        };
        let log = fs::File::create(dir.path().join("stderr.log"))?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", peer.name()))?;
        let started = wait_listening(port, &mut child, peer.name()).and_then(|()| {
            // nginx forks its workers after binding: wait until they are all there.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let procs = Procs::of(child.id(), sluice_bench::clk_tck()?);
                if procs.pids.len() >= processes {
                    return Ok(procs);
                }
                ensure!(
                    Instant::now() < deadline,
                    "{} has {} processes, want {processes}",
                    peer.name(),
                    procs.pids.len()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let procs = match started {
            Ok(p) => p,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
                return Err(e.context(log));
            }
        };
        Ok(Running::Process {
            child,
            port,
            scheme,
            procs,
            _dir: dir,
        })
    }

    pub fn base_url(&self) -> String {
        match self {
            Running::Sluice {
                proxy: p, scheme, ..
            } => format!("{scheme}://{}", p.addr),
            Running::Process { port, scheme, .. } => format!("{scheme}://127.0.0.1:{port}"),
        }
    }

    pub fn procs(&self) -> &Procs {
        match self {
            Running::Sluice { proxy: p, .. } => p.procs(),
            Running::Process { procs, .. } => procs,
        }
    }

    /// How many download responses sluice sent by `path` (sendfile, splice,
    /// copy, tls-copy), from its /metrics; None for peers.
    pub fn downloads_by(&self, path: &str) -> anyhow::Result<Option<f64>> {
        match self {
            Running::Sluice { proxy: p, .. } => p
                .metric(&format!(
                    "sluice_download_responses_total{{path=\"{path}\"}}"
                ))
                .map(Some),
            Running::Process { .. } => Ok(None),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Running::Process { child, procs, .. } = self {
            // SIGTERM lets an nginx master take its workers down with it; then make sure.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
            for pid in procs.pids.iter().skip(1) {
                if Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
            }
        }
    }
}

pub fn which(name: &str) -> anyhow::Result<PathBuf> {
    for d in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(d).join(name);
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("{name} is not installed: run ./scripts/test once (it installs haproxy, wrk and nginx)")
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
