//! `sluice-operator`: the control plane of sluice.
//!
//! ```text
//!   sluice-operator crd   -> the UploadPolicy CustomResourceDefinition as YAML,
//!                            generated from policy/ (crds/uploadpolicy.yaml is its output)
//!   sluice-operator run   -> the controller: watch UploadPolicies, their Secrets and the
//!                            proxy pods; compile; write the ConfigMap; push to every proxy;
//!                            write status (leader only, via a Lease)
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use sluice_operator::controller::Settings;
use sluice_operator::lease::{Elector, LeaseConfig};
use sluice_operator::metrics::Metrics;
use sluice_operator::push::{AdminTls, DEFAULT_SERVER_NAME, Pusher};
use sluice_operator::run::{Runtime, Watch, run, serve_health};
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the UploadPolicy CRD (YAML) to standard output.
    Crd,
    /// Run the controller (uses KUBECONFIG, ~/.kube/config or the in-cluster config).
    Run(Box<RunArgs>),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The operator's own namespace: proxy pods, the config ConfigMap and the Lease live here.
    #[arg(long, env = "SLUICE_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Namespace whose UploadPolicies (and their Secrets) are served; empty: every namespace.
    #[arg(long, env = "SLUICE_WATCH_NAMESPACE", default_value = "")]
    watch_namespace: String,
    /// Label selector of the proxy pods.
    #[arg(
        long,
        env = "SLUICE_PROXY_SELECTOR",
        default_value = "app.kubernetes.io/name=sluice,app.kubernetes.io/component=proxy"
    )]
    proxy_selector: String,
    /// Port of the proxies' admin API on each pod IP.
    #[arg(long, env = "SLUICE_PROXY_ADMIN_PORT", default_value_t = 9901)]
    proxy_admin_port: u16,
    /// File holding the bearer token of the proxies' push API (the same Secret the proxies mount).
    #[arg(long, env = "SLUICE_ADMIN_TOKEN_FILE")]
    admin_token_file: PathBuf,
    /// ConfigMap (in --namespace) the compiled config is written to, key config.json.
    #[arg(long, env = "SLUICE_CONFIGMAP", default_value = "sluice-config")]
    configmap: String,
    /// Lease (in --namespace) used for leader election.
    #[arg(long, env = "SLUICE_LEASE_NAME", default_value = "sluice-operator")]
    lease_name: String,
    /// This replica's name in the Lease (the pod name in a cluster); default: hostname-pid.
    #[arg(long, env = "SLUICE_IDENTITY")]
    identity: Option<String>,
    /// How long a leader's claim lasts without renewal.
    #[arg(long, env = "SLUICE_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
    /// How often the leader renews (and followers check) the Lease.
    #[arg(long, env = "SLUICE_LEASE_RENEW", default_value = "2s", value_parser = humantime::parse_duration)]
    lease_renew: Duration,
    /// UploadPolicy status patches in flight at once.
    #[arg(long, env = "SLUICE_STATUS_CONCURRENCY", default_value_t = 8)]
    status_concurrency: usize,
    /// PEM CA bundle of the proxies' admin certificates: pushes go over HTTPS,
    /// trusting only it (the proxies run with --admin-tls-cert/--admin-tls-key).
    #[arg(long, env = "SLUICE_PROXY_CA")]
    proxy_ca: Option<PathBuf>,
    /// The name the proxies' admin certificates carry (a SAN): pods are reached
    /// by IP, and this name is what is verified.
    #[arg(long, env = "SLUICE_PROXY_SERVER_NAME", default_value = DEFAULT_SERVER_NAME)]
    proxy_server_name: String,
    /// Timeout of one push to one proxy.
    #[arg(long, env = "SLUICE_PUSH_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    push_timeout: Duration,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Crd => print!("{}", sluice_operator::crd_yaml()?),
        Command::Run(args) => {
            init_logs(args.log_format);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            if let Err(e) = rt.block_on(run_operator(*args)) {
                tracing::error!(error = format!("{e:#}"), "sluice-operator stopped");
                return Err(e);
            }
        }
    }
    Ok(())
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => b.json().flatten_event(true).init(),
        LogFormat::Text => b.init(),
    }
}

async fn run_operator(args: RunArgs) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(&args.admin_token_file).with_context(|| {
        format!(
            "reading --admin-token-file {}",
            args.admin_token_file.display()
        )
    })?;
    anyhow::ensure!(
        !token.trim().is_empty(),
        "--admin-token-file {} is empty",
        args.admin_token_file.display()
    );
    let pusher = match &args.proxy_ca {
        Some(ca) => {
            let tls = AdminTls {
                ca_pem: std::fs::read(ca)
                    .with_context(|| format!("reading --proxy-ca {}", ca.display()))?,
                server_name: args.proxy_server_name.clone(),
            };
            Pusher::with_tls(&token, args.push_timeout, &tls)
                .with_context(|| format!("--proxy-ca {}", ca.display()))?
        }
        None => Pusher::new(&token, args.push_timeout)?,
    };
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes client config (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    anyhow::ensure!(
        args.lease_renew < args.lease_duration,
        "--lease-renew must be shorter than --lease-duration"
    );

    let (shutdown_tx, shutdown) = watch::channel(false);
    let (leader_tx, leader) = watch::channel(false);
    let metrics = Arc::new(Metrics::default());
    let synced = Arc::new(AtomicBool::new(false));

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding --listen {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, identity = %identity, "sluice-operator listening");
    let health = tokio::spawn(serve_health(
        listener,
        metrics.clone(),
        synced.clone(),
        leader.clone(),
        shutdown.clone(),
    ));

    let elector = Elector::new(
        Api::<Lease>::namespaced(client.clone(), &args.namespace),
        LeaseConfig {
            name: args.lease_name.clone(),
            identity: identity.clone(),
            duration: args.lease_duration,
            renew: args.lease_renew,
        },
    );
    let elector = tokio::spawn(elector.run(leader_tx, shutdown.clone()));

    let runtime = Runtime {
        client,
        settings: Settings {
            namespace: args.namespace.clone(),
            configmap: args.configmap.clone(),
            admin_port: args.proxy_admin_port,
            status_concurrency: args.status_concurrency,
        },
        watch: Watch {
            watch_namespace: Some(args.watch_namespace.clone()).filter(|n| !n.is_empty()),
            proxy_selector: args.proxy_selector.clone(),
        },
        identity,
        pusher,
        metrics,
        synced,
    };
    let signals = async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        anyhow::Ok(())
    };
    let result = tokio::select! {
        r = run(runtime, leader, shutdown.clone()) => r,
        r = signals => r,
    };
    shutdown_tx.send_replace(true);
    // Hand the Lease over so the other replica takes over at once.
    let _ = tokio::time::timeout(Duration::from_secs(5), elector).await;
    let _ = health.await;
    tracing::info!("sluice-operator stopped");
    result
}

#[cfg(test)]
mod tests {
    /// crds/uploadpolicy.yaml is what the code generates: regenerate it with
    /// `cargo run -p sluice-operator -- crd > crds/uploadpolicy.yaml`.
    #[test]
    fn the_checked_in_crd_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/uploadpolicy.yaml");
        let on_disk = std::fs::read_to_string(path).expect("crds/uploadpolicy.yaml");
        let generated = sluice_operator::crd_yaml().expect("crd");
        assert!(
            on_disk == generated,
            "crds/uploadpolicy.yaml is stale: run `cargo run -p sluice-operator -- crd > crds/uploadpolicy.yaml`"
        );
    }

    /// The CEL rules of the CRD, evaluated client-side with kube-cel (the real API
    /// server evaluates them in the Kubernetes end-to-end tests).
    #[test]
    fn cel_rules_refuse_what_a_schema_alone_cannot() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(sluice_policy::UploadPolicy::crd()).expect("crd json");
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let check = |spec: serde_json::Value| -> Vec<String> {
            let obj = serde_json::json!({
                "apiVersion": "sluice.dev/v1alpha1", "kind": "UploadPolicy",
                "metadata": {"name": "p", "namespace": "default"},
                "spec": spec,
            });
            kube_cel::Validator::new()
                .validate(schema, &obj, None)
                .into_iter()
                .map(|e| format!("{}: {}", e.field_path, e.message))
                .collect()
        };
        let ok = serde_json::json!({
            "pathPrefix": "/files/",
            "backend": {"fs": {"root": "files"}},
            "upload": {"maxFileSize": "10Mi", "maxFiles": 3},
        });
        assert_eq!(check(ok), Vec::<String>::new());

        let refused = [
            (
                serde_json::json!({"pathPrefix": "files/", "backend": {"fs": {"root": "a"}}}),
                "start and end",
            ),
            (
                serde_json::json!({"pathPrefix": "/a/", "backend": {}}),
                "exactly one",
            ),
            (
                serde_json::json!({"pathPrefix": "/a/", "backend": {"fs": {"root": "a"}, "s3": {"endpoint": "http://s3", "bucket": "b", "credentialsSecret": {"name": "s"}}}}),
                "exactly one",
            ),
            (
                serde_json::json!({"pathPrefix": "/a/", "backend": {"fs": {"root": "a"}}, "upload": {"maxFileSize": "0"}}),
                "positive",
            ),
            (
                serde_json::json!({"pathPrefix": "/a/", "backend": {"fs": {"root": "a"}}, "upload": {"maxFileSize": "1.5Gi"}}),
                "positive",
            ),
            (
                serde_json::json!({"pathPrefix": "/a/", "backend": {"fs": {"root": "a"}}, "upload": {"maxFiles": 0}}),
                "at least 1",
            ),
            (
                serde_json::json!({"pathPrefix": "/a/", "backend": {"http": {"url": "http://e", "spool": {"memory": "1Mi", "disk": "0"}}}}),
                "positive",
            ),
        ];
        for (spec, want) in refused {
            let errors = check(spec.clone());
            assert!(
                errors.iter().any(|e| e.contains(want)),
                "{spec}: want an error with {want:?}, got {errors:?}"
            );
        }
    }
}
