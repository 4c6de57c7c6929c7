//! A fresh `sluice-proxy` per measurement, on its own policies folder.
//!
//! ```text
//!   Workdir: tempdir/{policies/bench.yaml, store/}
//!   Proxy::start: sluice-proxy --policies .. --data-dir store --listen 127.0.0.1:0
//!      --log-format json; the "listening" line gives the address; a thread
//!      keeps the `via` of every access-log line after it
//! ```

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use crate::measure::{self, Procs, Sample};

/// What every sluice measurement needs.
pub struct Env {
    pub bin: PathBuf,
    pub clk_tck: f64,
    pub data_dir: PathBuf,
    pub tmp_dir: PathBuf,
}

/// A policies dir and a store dir, removed when dropped.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    /// One fs policy at /bench/: multipart uploads with sha256, downloads.
    pub fn new(env: &Env) -> anyhow::Result<Self> {
        Self::with_policy(
            env,
            "apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\n\
             metadata: {name: bench, namespace: default}\n\
             spec:\n  pathPrefix: /bench/\n  backend: {fs: {root: .}}\n\
             \x20 upload: {maxFileSize: 8Gi, checksum: sha256}\n",
        )
    }

    pub fn with_policy(env: &Env, yaml: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(&env.tmp_dir)?;
        fs::create_dir(dir.path().join("policies"))?;
        fs::create_dir(dir.path().join("store"))?;
        fs::write(dir.path().join("policies/bench.yaml"), yaml)?;
        Ok(Self { dir })
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
}

/// A running proxy; killed when dropped.
pub struct Proxy {
    child: Child,
    pub pid: u32,
    pub addr: String,
    /// The admin port (metrics).
    pub admin: String,
    pub vias: Arc<Mutex<Vec<String>>>,
    procs: Procs,
}

impl Proxy {
    pub fn start(env: &Env, work: &Workdir, extra: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(&env.bin)
            .arg("--policies")
            .arg(work.dir.path().join("policies"))
            .arg("--data-dir")
            .arg(work.store())
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", env.bin.display()))?;
        let pid = child.id();
        let mut lines = BufReader::new(child.stdout.take().context("proxy stdout")?).lines();
        let (addr, admin) = loop {
            let Some(line) = lines.next() else {
                bail!("proxy exited before listening: {:?}", child.wait()?);
            };
            let v: Value = serde_json::from_str(&line?).unwrap_or(Value::Null);
            if v["message"] == "listening" {
                let field = |k: &str| -> anyhow::Result<String> {
                    Ok(v[k]
                        .as_str()
                        .with_context(|| format!("listening line has {k}"))?
                        .to_string())
                };
                break (field("addr")?, field("admin")?);
            }
        };
        let vias = Arc::new(Mutex::new(Vec::new()));
        let sink = vias.clone();
        thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if let Some(via) = v["via"].as_str() {
                    sink.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(via.into());
                }
            }
        });
        Ok(Self {
            child,
            pid,
            addr,
            admin,
            vias,
            procs: Procs::of(pid, env.clk_tck),
        })
    }

    /// `http://ADDR/bench/{path}`: the route of `Workdir::new`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/bench/{path}", self.addr)
    }

    pub fn procs(&self) -> &Procs {
        &self.procs
    }

    /// Measures `work`, which moves `bytes` through this proxy.
    pub fn measure(
        &self,
        bytes: u64,
        work: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<Sample> {
        measure::measure(&self.procs, bytes, work)
    }

    /// A counter or gauge of the proxy's /metrics, e.g.
    /// `sluice_download_responses_total{path="splice"}` (0 when absent).
    pub fn metric(&self, series: &str) -> anyhow::Result<f64> {
        let out = Command::new("curl")
            .args(["-s", "-S", "--fail"])
            .arg(format!("http://{}/metrics", self.admin))
            .output()
            .context("curl /metrics")?;
        ensure!(
            out.status.success(),
            "GET /metrics: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0))
    }

    /// The access log's `via`s so far.
    pub fn vias(&self) -> Vec<String> {
        self.vias.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
