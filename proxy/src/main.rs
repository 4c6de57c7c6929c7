//! `sluice-proxy`: parse flags, build the pieces, run until SIGTERM.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use sluice_proxy::backend::credentials;
use sluice_proxy::limits::Pace;
use sluice_proxy::source::Source;
use sluice_proxy::{App, Capacity, Settings, admin, server, tls, zerocopy};
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Terminal colours in text logs.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogColor {
    /// Only when stdout is a terminal: a file or `kubectl logs` gets plain text.
    Auto,
    Always,
    Never,
}

/// Kernel TLS: whether to look for it.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Ktls {
    /// Use it where the kernel offers it (and this build can).
    Auto,
    Off,
}

/// Streaming upload/download filtering proxy. With no --policies it serves an
/// embedded default: /files/ on disk under --data-dir, any type, files up to 1 GiB, no auth.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address for client traffic.
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "SLUICE_ADMIN_LISTEN", default_value = "127.0.0.1:9901")]
    admin_listen: SocketAddr,
    /// Directory of UploadPolicy and Secret YAML (multi-document); reloaded on change.
    #[arg(long, env = "SLUICE_POLICIES")]
    policies: Option<PathBuf>,
    /// Base of relative fs backend roots (the embedded default stores here).
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./sluice-data")]
    data_dir: PathBuf,
    /// Where the last applied config is kept (last known good); unset: not kept.
    #[arg(long, env = "SLUICE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// How often --policies is checked for changes.
    #[arg(long, env = "SLUICE_RELOAD_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    reload_interval: Duration,
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    #[arg(long, env = "SLUICE_LOG_COLOR", value_enum, default_value = "auto")]
    log_color: LogColor,
    /// No access-log line per request (target "access"); metrics still count every
    /// request. For high request rates: a JSON line costs about as much CPU as a small PUT.
    #[arg(long, env = "SLUICE_NO_ACCESS_LOG")]
    no_access_log: bool,
    /// A request head must arrive whole within this.
    #[arg(long, env = "SLUICE_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    header_timeout: Duration,
    /// Longest silence on a keep-alive connection or in the middle of a transfer.
    #[arg(long, env = "SLUICE_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Uploads averaging fewer bytes per second than this (after --min-rate-grace) are cut off; 0 disables.
    #[arg(long, env = "SLUICE_MIN_UPLOAD_RATE", default_value_t = 1024)]
    min_upload_rate: u64,
    #[arg(long, env = "SLUICE_MIN_RATE_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    min_rate_grace: Duration,
    /// Concurrent uploads and downloads in all; past it: 503 with Retry-After.
    #[arg(long, env = "SLUICE_MAX_TRANSFERS", default_value_t = 1024)]
    max_transfers: usize,
    /// Concurrent transfers per client address; past it: 429 with Retry-After.
    #[arg(long, env = "SLUICE_MAX_TRANSFERS_PER_CLIENT", default_value_t = 64)]
    max_transfers_per_client: usize,
    /// After SIGTERM, how long in-flight transfers may take to finish.
    #[arg(long, env = "SLUICE_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
    /// Serve downloads through hyper only (no sendfile fast path).
    #[arg(long, env = "SLUICE_NO_SENDFILE")]
    no_sendfile: bool,
    /// Skip fsync before an object becomes visible (faster; a crash may leave it empty).
    #[arg(long, env = "SLUICE_NO_FSYNC")]
    no_fsync: bool,
    /// File holding the bearer token of the push API (PUT /v1/config on the admin port).
    /// Given without --policies, the proxy is operator-managed: it boots from its last
    /// known good config, else --config-snapshot, else nothing (503 until a push).
    #[arg(long, env = "SLUICE_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// ProxyConfig JSON the operator keeps in a ConfigMap, mounted as a file.
    #[arg(long, env = "SLUICE_CONFIG_SNAPSHOT")]
    config_snapshot: Option<PathBuf>,
    /// Relay remote downloads by copying through user-space buffers instead of splice(2).
    #[arg(long, env = "SLUICE_NO_SPLICE")]
    no_splice: bool,
    /// Pipe capacity asked for splice(2) (F_SETPIPE_SZ).
    #[arg(long, env = "SLUICE_PIPE_SIZE", default_value_t = 1 << 20)]
    pipe_size: usize,
    /// Bytes a spliced socket may queue before the proxy wakes for them
    /// (SO_RCVLOWAT), and what one peek of an upload looks at: larger means
    /// fewer wakeups, and up to about twice this in kernel receive buffer per
    /// fast upload or download.
    #[arg(long, env = "SLUICE_SPLICE_WINDOW", default_value_t = zerocopy::DEFAULT_WINDOW, value_parser = parse_window)]
    splice_window: usize,
    /// S3 multipart part size in bytes (at least 5 MiB).
    #[arg(long, env = "SLUICE_S3_PART_SIZE", default_value_t = 8 << 20)]
    s3_part_size: usize,
    /// S3 part buffers shared by all uploads: bounds S3 upload memory to this many parts.
    #[arg(long, env = "SLUICE_S3_PART_BUFFERS", default_value_t = 16)]
    s3_part_buffers: usize,
    #[arg(long, env = "SLUICE_BACKEND_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    backend_connect_timeout: Duration,
    /// Longest wait for a storage engine's answer (504 past it).
    #[arg(long, env = "SLUICE_BACKEND_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    backend_timeout: Duration,
    /// PEM certificate chain (leaf first) for --listen, which then speaks TLS only.
    /// Repeatable, paired in order with --tls-key (comma-separated in the env);
    /// chosen by SNI against its SAN names, the first is the default. Re-read when
    /// the file changes (checked every --reload-interval).
    #[arg(long, env = "SLUICE_TLS_CERT", value_delimiter = ',')]
    tls_cert: Vec<PathBuf>,
    /// PEM private key of the --tls-cert of the same position.
    #[arg(long, env = "SLUICE_TLS_KEY", value_delimiter = ',')]
    tls_key: Vec<PathBuf>,
    /// PEM CA bundle: clients must present a certificate it issued (mTLS).
    #[arg(long, env = "SLUICE_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Kernel TLS offload: reported at /metrics (sluice_tls_offload); see the README.
    #[arg(long, env = "SLUICE_KTLS", value_enum, default_value = "auto")]
    ktls: Ktls,
    /// PEM certificate chain for --admin-listen, which then speaks TLS only
    /// (the operator pushes with --proxy-ca). Re-read when it changes.
    #[arg(long, env = "SLUICE_ADMIN_TLS_CERT", requires = "admin_tls_key")]
    admin_tls_cert: Option<PathBuf>,
    #[arg(long, env = "SLUICE_ADMIN_TLS_KEY", requires = "admin_tls_cert")]
    admin_tls_key: Option<PathBuf>,
    /// Without a subcommand: run the proxy.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Print a signed URL (see the README's "Signed URLs").
    Sign(SignArgs),
    /// Print the hidden fields of a signed HTML form, as a JSON object (see "Signed forms").
    SignForm(SignFormArgs),
}

#[derive(clap::Args, Debug)]
struct SignArgs {
    /// File holding one HMAC key: its bytes, without the trailing line end.
    #[arg(long)]
    secret_file: PathBuf,
    /// A method the URL allows (GET, HEAD, PUT, POST); repeat for more.
    #[arg(long = "method", required = true)]
    methods: Vec<String>,
    /// The URL to sign; with --key-prefix, the URL of the policy's prefix.
    #[arg(long)]
    url: url::Url,
    /// How long the URL stays valid (15m, 1h, 2d).
    #[arg(long)]
    expires: humantime::Duration,
    /// Largest upload, as a quantity (10Mi).
    #[arg(long)]
    max_size: Option<String>,
    /// Allowed media types (image/png, image/*), comma-separated.
    #[arg(long, value_delimiter = ',')]
    types: Vec<String>,
    /// Any key under this prefix (past the policy's path prefix), e.g. users/42/.
    #[arg(long, conflicts_with = "key")]
    key_prefix: Option<String>,
    /// Only this exact key (past the policy's path prefix).
    #[arg(long)]
    key: Option<String>,
}

#[derive(clap::Args, Debug)]
struct SignFormArgs {
    /// File holding one HMAC key: its bytes, without the trailing line end.
    #[arg(long)]
    secret_file: PathBuf,
    /// The URL of the policy's prefix (the form's action is under it).
    #[arg(long)]
    url: url::Url,
    /// How long the form stays valid (15m, 1h, 2d).
    #[arg(long)]
    expires: humantime::Duration,
    /// Keys of the stored files must start with this (past the policy's path prefix).
    #[arg(long)]
    key_prefix: Option<String>,
    /// Largest file, as a quantity (10Mi).
    #[arg(long)]
    max_size: Option<String>,
    /// Allowed media types (image/png, image/*), comma-separated.
    #[arg(long, value_delimiter = ',')]
    types: Vec<String>,
    /// Where the browser is sent (303) after the upload.
    #[arg(long)]
    redirect: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    match args.command.take() {
        Some(Command::Sign(a)) => return sign::url(a),
        Some(Command::SignForm(a)) => return sign::form(a),
        None => {}
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        command: _,
        listen,
        admin_listen,
        policies,
        data_dir,
        state_dir,
        reload_interval,
        log_format,
        log_color,
        no_access_log,
        header_timeout,
        idle_timeout,
        min_upload_rate,
        min_rate_grace,
        max_transfers,
        max_transfers_per_client,
        shutdown_grace,
        no_sendfile,
        no_fsync,
        no_splice,
        pipe_size,
        splice_window,
        s3_part_size,
        s3_part_buffers,
        backend_connect_timeout,
        backend_timeout,
        admin_token_file,
        config_snapshot,
        tls_cert,
        tls_key,
        tls_client_ca,
        ktls,
        admin_tls_cert,
        admin_tls_key,
    } = args;
    let _logs = init_logs(log_format, log_color, !no_access_log);

    let settings = Settings {
        header_timeout,
        idle_timeout,
        pace: Pace {
            idle: idle_timeout,
            min_rate: min_upload_rate,
            grace: min_rate_grace,
        },
        max_head: 16 * 1024,
        sendfile: !no_sendfile,
        splice: !no_splice,
        fsync: !no_fsync,
        splice_window,
        shutdown_grace,
    };
    let app = App::new(
        settings,
        Capacity {
            max_transfers,
            max_per_client: max_transfers_per_client,
            pipe_size,
            s3_part_size,
            s3_part_buffers,
            backend_connect_timeout,
            backend_timeout,
            spool_dir: data_dir.join(".sluice-spool"),
        },
        // The AWS credential chain's variables (AWS_ACCESS_KEY_ID, AWS_ROLE_ARN, ...),
        // under the SDKs' names, read here once: they are not flags, so keys never
        // show in a process list.
        credentials::Settings::from_env(|k| std::env::var(k).ok()),
    );
    if let Some(f) = &admin_token_file {
        admin::read_token(f).map_err(anyhow::Error::msg)?;
    }
    let source = Source {
        managed: admin_token_file.is_some() || config_snapshot.is_some(),
        policies,
        data_dir,
        state_dir,
        snapshot: config_snapshot,
    };
    let digest = source
        .initial(&app)
        .map_err(anyhow::Error::msg)
        .context("loading the initial configuration")?;

    let client_tls = if tls_cert.is_empty() && tls_key.is_empty() {
        None
    } else {
        let cfg = tls::Config {
            listener: "client",
            certs: tls_cert,
            keys: tls_key,
            client_ca: tls_client_ca,
            alpn: tls::ALPN_CLIENT,
            handshake_timeout: header_timeout,
        };
        Some(tls::Tls::load(cfg, &app.metrics.tls).context("--tls-cert/--tls-key")?)
    };
    let admin_tls = match (admin_tls_cert, admin_tls_key) {
        (Some(cert), Some(key)) => {
            let cfg = tls::Config {
                listener: "admin",
                certs: vec![cert],
                keys: vec![key],
                client_ca: None,
                alpn: tls::ALPN_ADMIN,
                handshake_timeout: header_timeout,
            };
            Some(
                tls::Tls::load(cfg, &app.metrics.tls)
                    .context("--admin-tls-cert/--admin-tls-key")?,
            )
        }
        _ => None,
    };
    if client_tls.is_some() || admin_tls.is_some() {
        let o = tls::detect_offload(matches!(ktls, Ktls::Auto), &app.metrics.tls);
        tracing::info!(mode = o.mode, reason = %o.why, "TLS offload");
    }

    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let admin = TcpListener::bind(admin_listen)
        .await
        .with_context(|| format!("binding admin {admin_listen}"))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        admin = %admin.local_addr()?,
        sendfile = app.settings.sendfile,
        splice = app.settings.splice,
        access_log = !no_access_log,
        splice_window = app.settings.splice_window,
        tls = client_tls.is_some(),
        mtls = client_tls.as_ref().is_some_and(|t| t.client_auth()),
        admin_tls = admin_tls.is_some(),
        "listening"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let source = Arc::new(source);
    let admin_state = Arc::new(admin::Admin {
        app: app.clone(),
        source: source.clone(),
        token_file: admin_token_file,
    });
    for t in client_tls.iter().chain(admin_tls.iter()) {
        tokio::spawn(t.clone().watch(reload_interval, stop_rx.clone()));
    }
    tokio::spawn(admin::serve(admin, admin_state, admin_tls, stop_rx.clone()));
    tokio::spawn(source.watch(app.clone(), digest, reload_interval, stop_rx.clone()));
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        let _ = stop_tx.send(true);
    });
    server::serve(listener, app, client_tls, stop_rx).await;
    tracing::info!("bye");
    Ok(())
}

/// `--splice-window`: bytes, from 256 KiB to 64 MiB (the kernel caps the
/// low-water mark at half of `net.ipv4.tcp_rmem`'s maximum anyway).
fn parse_window(s: &str) -> Result<usize, String> {
    const MAX: usize = 64 << 20;
    let n: usize = s.trim().parse().map_err(|e| {
        format!(
            "{s:?}: want a number of bytes, {} to {MAX} ({e})",
            zerocopy::MIN_WINDOW
        )
    })?;
    if !(zerocopy::MIN_WINDOW..=MAX).contains(&n) {
        return Err(format!(
            "{n} bytes: want {} to {MAX} bytes",
            zerocopy::MIN_WINDOW
        ));
    }
    Ok(n)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Logs go to stdout from a writer thread: a request's access-log line is a
/// queue push, not a write(2) on the runtime thread, and lines queued meanwhile
/// go out in one write. Not lossy: past the queue's bound, loggers wait.
/// The returned guard flushes what is queued when dropped at exit.
fn init_logs(
    format: LogFormat,
    color: LogColor,
    access: bool,
) -> tracing_appender::non_blocking::WorkerGuard {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if !access && let Ok(off) = "access=off".parse() {
        filter = filter.add_directive(off);
    }
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        // The queue is allocated whole up front: the default 128,000 lines
        // would cost 4 MiB of resident memory before the first request.
        .buffered_lines_limit(4096)
        .lossy(false)
        .thread_name("sluice-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        ));
    let ansi = match color {
        LogColor::Auto => std::io::IsTerminal::is_terminal(&std::io::stdout()),
        LogColor::Always => true,
        LogColor::Never => false,
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().flatten_event(true).init(),
    }
    guard
}

/// The `sign` and `sign-form` subcommands: what an application's server does
/// to hand a browser a narrow, short-lived permission.
mod sign {
    use anyhow::{Context, bail};
    use sluice_proxy::signed::{Grant, KeyCond, is_type_pattern, sign_form};

    use super::{SignArgs, SignFormArgs};

    fn key(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
        let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let k = sluice_policy::compile::signing_key(&raw).to_vec();
        if k.is_empty() {
            bail!("{} holds no key", path.display());
        }
        Ok(k)
    }

    fn expires(d: humantime::Duration) -> i64 {
        sluice_proxy::gate::unix_now() + d.as_secs() as i64
    }

    fn size(q: Option<&str>) -> anyhow::Result<Option<u64>> {
        q.map(|q| {
            sluice_policy::quantity::parse_bytes(q).map_err(|e| anyhow::anyhow!("--max-size: {e}"))
        })
        .transpose()
    }

    fn types(ts: &[String]) -> anyhow::Result<Vec<String>> {
        let ts: Vec<String> = ts.iter().map(|t| t.trim().to_ascii_lowercase()).collect();
        if let Some(t) = ts.iter().find(|t| !is_type_pattern(t)) {
            bail!("--types: {t:?} is not a type such as image/png or image/*");
        }
        Ok(ts)
    }

    /// `host[:port]` as a client sends it in Host (no default port).
    fn host(u: &url::Url) -> anyhow::Result<String> {
        let h = u
            .host_str()
            .context("--url has no host")?
            .to_ascii_lowercase();
        Ok(match u.port() {
            Some(p) => format!("{h}:{p}"),
            None => h,
        })
    }

    /// Percent-encodes a key for a URL path, keeping its '/'.
    fn encode_key(k: &str) -> String {
        const SEG: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~')
            .remove(b'/');
        percent_encoding::utf8_percent_encode(k, SEG).to_string()
    }

    pub fn url(a: SignArgs) -> anyhow::Result<()> {
        let secret = key(&a.secret_file)?;
        let mut methods: Vec<String> = Vec::new();
        for m in &a.methods {
            let m = m.to_ascii_uppercase();
            if !["GET", "HEAD", "PUT", "POST"].contains(&m.as_str()) {
                bail!("--method {m}: one of GET, HEAD, PUT, POST");
            }
            if !methods.contains(&m) {
                methods.push(m);
            }
        }
        let mut u = a.url.clone();
        let host = host(&u)?;
        let (key, signed_path, path) = match (a.key_prefix, a.key) {
            (Some(p), _) => {
                // The URL of the prefix: the signed path is the policy's prefix;
                // the printed URL points at the key prefix under it.
                let enc = encode_key(&p);
                let base = u
                    .path()
                    .strip_suffix(enc.as_str())
                    .unwrap_or(u.path())
                    .to_string();
                if !base.ends_with('/') {
                    bail!("with --key-prefix, --url is the policy's prefix URL (ending in '/')");
                }
                let full = format!("{base}{enc}");
                (KeyCond::Prefix(p), base, full)
            }
            (None, Some(k)) => (
                KeyCond::Exact(k),
                u.path().to_string(),
                u.path().to_string(),
            ),
            (None, None) => (KeyCond::Any, u.path().to_string(), u.path().to_string()),
        };
        let grant = Grant {
            methods,
            expires: expires(a.expires),
            key,
            max_size: size(a.max_size.as_deref())?,
            types: types(&a.types)?,
        };
        u.set_path(&path);
        u.set_query(Some(&grant.query(&host, &signed_path, &secret)));
        u.set_fragment(None);
        println!("{u}");
        Ok(())
    }

    pub fn form(a: SignFormArgs) -> anyhow::Result<()> {
        let secret = key(&a.secret_file)?;
        let host = host(&a.url)?;
        let at = jiff::Timestamp::from_second(expires(a.expires)).context("--expires")?;
        let mut conditions = vec![
            serde_json::json!({ "host": host }),
            serde_json::json!(["starts-with", "$path", a.url.path()]),
        ];
        if let Some(p) = &a.key_prefix {
            conditions.push(serde_json::json!(["starts-with", "$key", p]));
        }
        if let Some(n) = size(a.max_size.as_deref())? {
            conditions.push(serde_json::json!(["content-length-range", 0, n]));
        }
        for t in types(&a.types)? {
            conditions.push(match t.strip_suffix('*') {
                Some(top) => serde_json::json!([
                    "starts-with",
                    "$Content-Type",
                    if top == "*/" { "" } else { top }
                ]),
                None => serde_json::json!(["eq", "$Content-Type", t]),
            });
        }
        if let Some(r) = &a.redirect {
            conditions.push(serde_json::json!({ "success_action_redirect": r }));
        }
        let policy = serde_json::json!({ "expiration": at.to_string(), "conditions": conditions });
        let (b64, sig) = sign_form(&policy.to_string(), &secret);
        let mut fields = serde_json::Map::new();
        fields.insert("policy".into(), b64.into());
        fields.insert(
            "x-sluice-algorithm".into(),
            sluice_proxy::signed::ALGORITHM.into(),
        );
        fields.insert("x-sluice-signature".into(), sig.into());
        if let Some(r) = a.redirect {
            fields.insert("success_action_redirect".into(), r.into());
        }
        println!("{}", serde_json::Value::Object(fields));
        Ok(())
    }
}
