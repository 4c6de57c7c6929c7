//! The remote backends: the same measurements through real storage engines.
//!
//! ```text
//!   per engine (nginx WebDAV "put", miniserve "multipart", s3s-fs "s3"), per size, per run:
//!     fresh proxy -> curl -F through the proxy -> engine      (upload: proxy CPU, RSS)
//!     fresh proxy -> curl GET through the proxy <- engine     (download: splice path)
//!     curl GET straight from the engine                       (direct: the yardstick)
//! ```
//! The engines are the ones the end-to-end tests start (proxy/tests/engines),
//! so the bench needs what `scripts/test` installs. Each run's proxied and
//! direct downloads are a side-by-side pair: the uploaded object is fsynced
//! first (else the kernel's writeback of the fresh upload, gigabytes of dirty
//! pages, lands on whichever download comes first), and the pair's order
//! alternates from run to run. The ratio target is the median of the pairs'
//! ratios, so one noisy direct run does not set it.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, ensure};

use sluice_bench::data::{data_file, label};
use sluice_bench::engines::{self, Engine, S3_ACCESS, S3_BUCKET, S3_SECRET};
use sluice_bench::get;
use sluice_bench::measure::Sample;
use sluice_bench::sluice::{Env, Proxy, Workdir};

use crate::{Row, upload_cmd};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// backend.http mode put, in front of nginx's WebDAV module.
    Put,
    /// backend.http mode multipart, in front of miniserve (streamed, no spool).
    Multipart,
    /// backend.s3, in front of s3s-fs (SigV4).
    S3,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Put => "http put (nginx)",
            Kind::Multipart => "http multipart (miniserve)",
            Kind::S3 => "s3 (s3s-fs)",
        }
    }

    fn engine(self) -> Engine {
        match self {
            Kind::Put => engines::nginx(),
            Kind::Multipart => engines::miniserve(),
            Kind::S3 => engines::s3(),
        }
    }

    fn policy(self, e: &Engine) -> String {
        let u = e.url();
        let head = "apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\n\
                    metadata: {name: bench, namespace: default}\nspec:\n  pathPrefix: /bench/\n";
        let upload = "  upload: {maxFileSize: 8Gi, checksum: sha256}\n";
        let backend = match self {
            Kind::Put => format!("  backend: {{http: {{url: \"{u}/store\", mode: put}}}}\n"),
            Kind::Multipart => format!(
                "  backend: {{http: {{url: \"{u}/upload?path=/\", downloadUrl: \"{u}\", \
                 mode: multipart, fieldName: file_to_upload}}}}\n"
            ),
            Kind::S3 => format!(
                "  backend: {{s3: {{endpoint: \"{u}\", bucket: {S3_BUCKET}, region: us-east-1, \
                 credentialsSecret: {{name: s3}}}}}}\n"
            ),
        };
        let secret = match self {
            Kind::S3 => format!(
                "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: s3, namespace: default}}\n\
                 stringData: {{accessKeyId: {S3_ACCESS}, secretAccessKey: {S3_SECRET}}}\n"
            ),
            _ => String::new(),
        };
        format!("{head}{backend}{upload}{secret}")
    }

    /// Where the engine keeps object `name`, and the URL it serves it at.
    fn object(self, e: &Engine, name: &str) -> (PathBuf, String) {
        let u = e.url();
        match self {
            Kind::Put => (e.root.join("store").join(name), format!("{u}/store/{name}")),
            Kind::Multipart => (e.root.join(name), format!("{u}/{name}")),
            Kind::S3 => (
                e.root.join(S3_BUCKET).join(name),
                format!("{u}/{S3_BUCKET}/{name}"),
            ),
        }
    }
}

/// One engine's rows: upload and download through the proxy, direct download.
pub struct Rows {
    pub kind: Kind,
    pub upload: Vec<Row>,
    pub download: Vec<Row>,
    pub direct: Vec<Row>,
}

pub fn run(env: &Env, kind: Kind, sizes: &[u64], runs: usize, failures: &mut Vec<String>) -> Rows {
    let engine = kind.engine();
    let mut rows = Rows {
        kind,
        upload: Vec::new(),
        download: Vec::new(),
        direct: Vec::new(),
    };
    for &size in sizes {
        let (mut up, mut down, mut direct) = (
            Row::new(label(size), size),
            Row::new(label(size), size),
            Row::new(label(size), size),
        );
        for run in 1..=runs {
            eprintln!("[{} {}] run {run}/{runs}", kind.name(), label(size));
            // Odd runs download through the proxy first, even runs direct first.
            match once(env, kind, &engine, size, run % 2 == 1) {
                Ok((u, d, x)) => {
                    up.runs.push(u);
                    down.runs.push(d);
                    direct.runs.push(x);
                }
                Err(e) => {
                    failures.push(format!("{} {} run {run}: {e:#}", kind.name(), label(size)))
                }
            }
        }
        rows.upload.push(up);
        rows.download.push(down);
        rows.direct.push(direct);
    }
    rows
}

fn once(
    env: &Env,
    kind: Kind,
    engine: &Engine,
    size: u64,
    proxied_first: bool,
) -> anyhow::Result<(Sample, Sample, Sample)> {
    let work = Workdir::with_policy(env, &kind.policy(engine))?;
    let file = data_file(&env.data_dir, size);
    let name = file
        .file_name()
        .context("file name")?
        .to_string_lossy()
        .into_owned();
    let (stored, direct_url) = kind.object(engine, &name);

    let proxy = Proxy::start(env, &work, &[])?;
    let up = proxy.measure(size, || {
        let out = upload_cmd(&file, &proxy.url("")).output()?;
        let code = String::from_utf8_lossy(&out.stdout);
        ensure!(code == "201", "upload answered {code}, want 201");
        let got = fs::metadata(&stored)
            .with_context(|| format!("object on the engine: {}", stored.display()))?
            .len();
        ensure!(got == size, "engine holds {got} bytes, want {size}");
        Ok(())
    })?;
    drop(proxy);
    // The engine's copy is on disk before any download is timed.
    fs::File::open(&stored)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("fsync {}", stored.display()))?;

    // The same GET straight from the engine, beside the proxied one, with no
    // proxy running: only wall time and bytes mean anything in this sample.
    let direct_url = match kind {
        Kind::S3 => presign(engine, &name)?,
        _ => direct_url,
    };
    let direct_get = || -> anyhow::Result<Sample> {
        let t0 = std::time::Instant::now();
        get(&direct_url, size)?;
        Ok(Sample {
            bytes: size,
            wall_s: t0.elapsed().as_secs_f64(),
            ..Sample::default()
        })
    };
    let early = if proxied_first {
        None
    } else {
        Some(direct_get()?)
    };
    let proxy = Proxy::start(env, &work, &[])?;
    let down = proxy.measure(size, || get(&proxy.url(&name), size))?;
    let vias = proxy.vias();
    ensure!(
        vias.iter().all(|v| v == "splice"),
        "the download went {vias:?}, want splice"
    );
    drop(proxy);
    let direct = match early {
        Some(d) => d,
        None => direct_get()?,
    };
    fs::remove_file(&stored)?;
    Ok((up, down, direct))
}

/// A presigned (SigV4) GetObject URL, as the proxy itself makes them.
fn presign(engine: &Engine, name: &str) -> anyhow::Result<String> {
    use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
    let bucket = Bucket::new(
        engine.url().parse()?,
        UrlStyle::Path,
        S3_BUCKET,
        "us-east-1",
    )?;
    let creds = Credentials::new(S3_ACCESS, S3_SECRET);
    let url = bucket
        .get_object(Some(&creds), name)
        .sign(std::time::Duration::from_secs(600));
    Ok(url.to_string())
}
