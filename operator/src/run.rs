//! `sluice-operator run`: watches, the leader's reconcile loop, pushes, and the
//! health/metrics listener.
//!
//! ```text
//!   watcher+reflector: UploadPolicy, Secret (watched namespaces), Pod (own namespace, selector)
//!        | any event -> notify (coalesced: a burst of events is one round)
//!        v
//!   loop (leader only): Reconciler::plan(World from the stores)
//!        -> tracker.take_due() -> one task per push -> result -> tracker.pushed -> round
//!        -> Writes (ConfigMap, statuses, Events) -> one writer task at a time -> record
//!        wakes on: watch event, push result, writes done, retry/backoff deadline,
//!                  leadership change
//!   Elector (lease.rs) -> leader: bool        SIGTERM -> stop, release the Lease
//!   --listen: /healthz (alive) /readyz (caches synced) /metrics
//! ```
//! Followers keep their caches warm so a takeover starts with a full picture.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use sluice_policy::UploadPolicy;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};

use crate::controller::{Reconciler, Settings, World, Written, stamp_now};
use crate::metrics::Metrics;
use crate::push::{PushError, Pusher};

#[derive(Clone, Debug)]
pub struct Watch {
    /// Where UploadPolicies and their Secrets are watched; None: every namespace.
    pub watch_namespace: Option<String>,
    /// Label selector of the proxy pods (in `Settings::namespace`).
    pub proxy_selector: String,
}

/// Starts a reflector for `api`; every event wakes the loop.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    notify: Arc<Notify>,
    what: &'static str,
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => notify.notify_one(),
                Err(e) => {
                    tracing::warn!(watch = what, error = %e, "watch error; retrying with backoff")
                }
            }
        }
    });
    store
}

pub struct Runtime {
    pub client: Client,
    pub settings: Settings,
    pub watch: Watch,
    pub identity: String,
    pub pusher: Pusher,
    pub metrics: Arc<Metrics>,
    /// Set once every watch has listed (for /readyz).
    pub synced: Arc<AtomicBool>,
}

/// Runs until `shutdown` turns true.
pub async fn run(
    rt: Runtime,
    mut leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let notify = Arc::new(Notify::new());
    let (policy_api, secret_api): (Api<UploadPolicy>, Api<Secret>) = match &rt.watch.watch_namespace
    {
        Some(ns) => (
            Api::namespaced(rt.client.clone(), ns),
            Api::namespaced(rt.client.clone(), ns),
        ),
        None => (Api::all(rt.client.clone()), Api::all(rt.client.clone())),
    };
    let policies = reflect(
        policy_api,
        watcher::Config::default(),
        notify.clone(),
        "uploadpolicies",
    );
    let secrets = reflect(
        secret_api,
        watcher::Config::default(),
        notify.clone(),
        "secrets",
    );
    let pods = reflect(
        Api::<Pod>::namespaced(rt.client.clone(), &rt.settings.namespace),
        watcher::Config::default().labels(&rt.watch.proxy_selector),
        notify.clone(),
        "pods",
    );
    tracing::info!(
        namespace = %rt.settings.namespace,
        watch_namespace = rt.watch.watch_namespace.as_deref().unwrap_or("<all>"),
        proxy_selector = %rt.watch.proxy_selector,
        "waiting for the watches to list"
    );
    tokio::select! {
        r = async { tokio::try_join!(policies.wait_until_ready(), secrets.wait_until_ready(), pods.wait_until_ready()) } => { r?; }
        _ = shutdown.wait_for(|s| *s) => return Ok(()),
    }
    rt.synced.store(true, Ordering::Relaxed);
    tracing::info!("watches listed");

    let mut rec = Reconciler::new(
        rt.client.clone(),
        rt.settings.clone(),
        &rt.identity,
        rt.metrics.clone(),
    );
    let (push_tx, mut push_rx) = mpsc::unbounded_channel::<(String, Result<String, PushError>)>();
    let mut was_leader = false;
    // API writes run in a task of their own, one batch at a time, so pushes
    // never wait behind a thousand status patches.
    let mut writing: Option<tokio::task::JoinHandle<Written>> = None;
    loop {
        let is_leader = *leader.borrow_and_update();
        rt.metrics.leader.set(i64::from(is_leader));
        if is_leader != was_leader {
            // Whatever this replica knew may be stale after a gap in leadership.
            rec.forget();
            was_leader = is_leader;
        }
        if is_leader {
            let world = World {
                policies: policies.state(),
                secrets: secrets.state(),
                pods: pods.state(),
            };
            let now = Instant::now();
            let writes = rec.plan(&world, now, stamp_now(), writing.is_none());
            if !writes.is_empty() {
                let writer = rec.writer();
                writing = Some(tokio::spawn(async move { writer.execute(writes).await }));
            }
            if let Some(payload) = rec.payload.clone() {
                for due in rec.tracker.take_due(now) {
                    let (pusher, tx, metrics, payload) = (
                        rt.pusher.clone(),
                        push_tx.clone(),
                        rt.metrics.clone(),
                        payload.clone(),
                    );
                    tokio::spawn(async move {
                        let t = Instant::now();
                        let r = pusher.push(due.admin, &payload).await;
                        metrics.push_seconds.observe(t.elapsed().as_secs_f64());
                        match &r {
                            Ok(v) => {
                                tracing::info!(pod = %due.pod, admin = %due.admin, version = %v, ms = t.elapsed().as_millis() as u64, "pushed")
                            }
                            Err(e) => {
                                metrics.error(&format!("push_{}", e.kind()));
                                tracing::warn!(pod = %due.pod, admin = %due.admin, error = %e, "push failed; retrying with backoff");
                            }
                        }
                        let _ = tx.send((due.pod, r));
                    });
                }
            }
        }
        let wake = [rec.tracker.next_wakeup(), rec.retry_at]
            .into_iter()
            .flatten()
            .min()
            .filter(|_| is_leader);
        tokio::select! {
            _ = notify.notified() => {}
            Some((pod, r)) = push_rx.recv() => {
                let now = Instant::now();
                rec.tracker.pushed(&pod, r.map_err(|_| ()), now);
                // Take every result that is already there: one round for all.
                while let Ok((pod, r)) = push_rx.try_recv() {
                    rec.tracker.pushed(&pod, r.map_err(|_| ()), now);
                }
            }
            r = async { writing.as_mut().expect("guarded").await }, if writing.is_some() => {
                writing = None;
                match r {
                    Ok(written) => { rec.record(written, Instant::now()); }
                    Err(e) => tracing::error!(error = %e, "the API write task failed"),
                }
            }
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now).into()), if wake.is_some() => {}
            r = leader.changed() => { r?; }
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    Ok(())
}

/// `/healthz`: the process runs. `/readyz`: the watches have listed.
/// `/metrics`: Prometheus text.
pub async fn serve_health(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    synced: Arc<AtomicBool>,
    leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "health listener accept failed");
                    continue;
                }
            },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (metrics, synced, leader) = (metrics.clone(), synced.clone(), leader.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let reply = |status: StatusCode, ctype: &str, body: String| {
                    Response::builder()
                        .status(status)
                        .header("content-type", ctype)
                        .body(Full::new(Bytes::from(body)))
                        .unwrap_or_default()
                };
                let resp = match req.uri().path() {
                    "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
                    "/readyz" => {
                        let ready = synced.load(Ordering::Relaxed);
                        reply(
                            if ready {
                                StatusCode::OK
                            } else {
                                StatusCode::SERVICE_UNAVAILABLE
                            },
                            "application/json",
                            serde_json::json!({"ready": ready, "leader": *leader.borrow()})
                                .to_string(),
                        )
                    }
                    "/metrics" => reply(
                        StatusCode::OK,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        metrics.encode(),
                    ),
                    _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
                };
                async move { Ok::<_, Infallible>(resp) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}
