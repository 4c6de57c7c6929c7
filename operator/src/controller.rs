//! One reconcile round: what the watches show -> one ProxyConfig -> the
//! ConfigMap, the push targets and every UploadPolicy's status.
//!
//! ```text
//!   plan: World {policies, secrets, pods}   (reflector stores, see run.rs)
//!     -> compile(policies, secrets)          one config, content-hash version
//!     -> version changed?  tracker.set_desired (the pushes: run.rs)
//!     -> pods              tracker.pod_seen / pod_gone
//!     -> Writes: the ConfigMap {config.json} if not written yet;
//!                per policy, status::desired when it differs from what is there
//!   Writer::execute(Writes): server-side apply of each; an Event per changed condition
//!   record(Written): what was written, so it is not written again
//! ```
//! All policies compile into one config, so there is one round for the whole
//! world rather than one per object: a kube-runtime `Controller` (per-object
//! reconcile) does not fit, its watches and stores do (run.rs). Writes are
//! server-side apply with one field manager, so they are idempotent and a
//! field the operator stops setting is removed. A write that fails is retried
//! on the next round; one policy's failure never stops the others.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use sluice_policy::compile::key_of;
use sluice_policy::{UploadPolicy, UploadPolicyStatus};

use crate::metrics::Metrics;
use crate::push::Payload;
use crate::status::{self, ACCEPTED, Facts, PROGRAMMED};
use crate::sync::Tracker;

/// The field manager of every write (server-side apply).
pub const FIELD_MANAGER: &str = "sluice-operator";
/// The ConfigMap key proxies boot from (`--config-snapshot`).
pub const CONFIG_KEY: &str = "config.json";

#[derive(Clone, Debug)]
pub struct Settings {
    /// The operator's own namespace: proxy pods, the ConfigMap, the Lease.
    pub namespace: String,
    pub configmap: String,
    /// Port of the proxies' admin API (push, probes) on each pod IP.
    pub admin_port: u16,
    /// Status writes in flight at once.
    pub status_concurrency: usize,
}

/// What the watches show at one moment.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub policies: Vec<Arc<UploadPolicy>>,
    pub secrets: Vec<Arc<Secret>>,
    pub pods: Vec<Arc<Pod>>,
}

/// A proxy pod as the push needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyPod {
    pub name: String,
    pub admin: SocketAddr,
    pub reachable: bool,
    pub ready: bool,
}

/// Reads a pod; None while it has no IP (nothing to push to yet).
pub fn proxy_pod(pod: &Pod, admin_port: u16) -> Option<ProxyPod> {
    let name = pod.metadata.name.clone()?;
    let status = pod.status.as_ref()?;
    let ip: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let running = status.phase.as_deref() == Some("Running");
    let terminating = pod.metadata.deletion_timestamp.is_some();
    Some(ProxyPod {
        name,
        admin: SocketAddr::new(ip, admin_port),
        reachable: !terminating && (running || ready),
        ready: !terminating && ready,
    })
}

#[derive(Debug, thiserror::Error)]
#[error("{kind}: {source}")]
pub struct WriteError {
    pub kind: &'static str,
    #[source]
    pub source: kube::Error,
}

/// One status to write, with the Events that tell its transitions.
#[derive(Clone, Debug)]
pub struct StatusWrite {
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub status: UploadPolicyStatus,
    pub transitions: Vec<Condition>,
    pub reference: ObjectReference,
    /// A new generation or a changed condition: written first, always. The
    /// others only follow a new config version, and are dropped when an even
    /// newer one comes while they wait (the next round writes that one).
    pub urgent: bool,
}

/// The API writes a round calls for.
#[derive(Clone, Debug, Default)]
pub struct Writes {
    /// (version, config JSON) for the ConfigMap.
    pub configmap: Option<(String, Bytes)>,
    /// Urgent ones first.
    pub statuses: Vec<StatusWrite>,
    /// The config epoch these were planned in.
    pub epoch: u64,
}

impl Writes {
    pub fn is_empty(&self) -> bool {
        self.configmap.is_none() && self.statuses.is_empty()
    }
}

/// What came of `Writes`.
#[derive(Debug, Default)]
pub struct Written {
    pub configmap: Option<String>,
    pub statuses: Vec<(String, UploadPolicyStatus)>,
    pub errors: Vec<WriteError>,
}

/// Performs `Writes`; cheap to clone, so the run loop can write in a task of
/// its own while pushes go on (a change to one of 1000 policies rewrites 1000
/// statuses, since each carries the config version).
#[derive(Clone)]
pub struct Writer {
    client: Client,
    settings: Settings,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// Bumped by each new config version.
    epoch: Arc<AtomicU64>,
}

impl Writer {
    pub async fn execute(&self, writes: Writes) -> Written {
        let epoch = writes.epoch;
        let mut out = Written::default();
        if let Some((version, body)) = writes.configmap {
            match self.write_configmap(&version, &body).await {
                Ok(()) => out.configmap = Some(version),
                Err(e) => out.errors.push(e),
            }
        }
        let results = futures_util::stream::iter(writes.statuses)
            .map(|w| async move {
                if !w.urgent && self.epoch.load(Ordering::Relaxed) != epoch {
                    return (w, None);
                }
                let r = self.write_status(&w).await;
                (w, Some(r))
            })
            .buffer_unordered(self.settings.status_concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        for (w, r) in results {
            match r {
                Some(Ok(())) => out.statuses.push((w.key, w.status)),
                Some(Err(e)) => out.errors.push(e),
                // Superseded: not recorded, so a later round plans it anew.
                None => {}
            }
        }
        out
    }

    async fn write_configmap(&self, version: &str, body: &[u8]) -> Result<(), WriteError> {
        let cm = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.settings.configmap,
                "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER},
                "annotations": {"sluice.dev/config-version": version},
            },
            "data": {CONFIG_KEY: String::from_utf8_lossy(body)},
        });
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        api.patch(
            &self.settings.configmap,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(cm),
        )
        .await
        .map(|_| ())
        .map_err(|source| WriteError {
            kind: "configmap",
            source,
        })
    }

    async fn write_status(&self, w: &StatusWrite) -> Result<(), WriteError> {
        let api: Api<UploadPolicy> = Api::namespaced(self.client.clone(), &w.namespace);
        let patch = serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "UploadPolicy",
            "metadata": {"name": w.name},
            "status": w.status,
        });
        api.patch_status(
            &w.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
        .map_err(|source| WriteError {
            kind: "status",
            source,
        })?;
        self.metrics.status_writes.inc();
        tracing::info!(
            policy = %w.key,
            generation = w.status.observed_generation.unwrap_or(0),
            accepted = %cond(&w.status, ACCEPTED).map_or("Unknown", |c| c.status.as_str()),
            programmed = %cond(&w.status, PROGRAMMED).map_or("Unknown", |c| c.status.as_str()),
            reason = %cond(&w.status, ACCEPTED).map_or("", |c| c.reason.as_str()),
            "status written"
        );
        for c in &w.transitions {
            let event = Event {
                type_: if c.status == "True" {
                    EventType::Normal
                } else {
                    EventType::Warning
                },
                reason: c.reason.clone(),
                note: Some(truncate(&format!(
                    "{} {}: {}",
                    c.type_, c.status, c.message
                ))),
                action: c.type_.clone(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&event, &w.reference).await {
                // An event lost is not worth failing the write for.
                self.metrics.error("event");
                tracing::warn!(policy = %w.key, error = %e, "publishing an event failed");
            }
        }
        Ok(())
    }
}

pub struct Reconciler {
    writer: Writer,
    settings: Settings,
    pub tracker: Tracker,
    metrics: Arc<Metrics>,
    /// The config to push (the last compiled).
    pub payload: Option<Payload>,
    /// The version last written to the ConfigMap.
    written_config: Option<String>,
    /// The status last written per policy (the watch may not show it yet).
    written_status: BTreeMap<String, UploadPolicyStatus>,
    /// When a failed write is retried.
    pub retry_at: Option<Instant>,
}

/// Delay before a round that had failed writes runs again by itself.
const WRITE_RETRY: Duration = Duration::from_secs(1);

impl Reconciler {
    pub fn new(client: Client, settings: Settings, identity: &str, metrics: Arc<Metrics>) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_string(),
                instance: Some(identity.to_string()),
            },
        );
        Reconciler {
            writer: Writer {
                client,
                settings: settings.clone(),
                recorder,
                metrics: metrics.clone(),
                epoch: Arc::default(),
            },
            settings,
            tracker: Tracker::default(),
            metrics,
            payload: None,
            written_config: None,
            written_status: BTreeMap::new(),
            retry_at: None,
        }
    }

    pub fn writer(&self) -> Writer {
        self.writer.clone()
    }

    /// Forgets what was written and pushed: after losing and regaining
    /// leadership, another replica may have changed anything.
    pub fn forget(&mut self) {
        self.tracker = Tracker::default();
        self.payload = None;
        self.written_config = None;
        self.written_status.clear();
        self.retry_at = None;
    }

    /// One round, writes included (`plan`, `Writer::execute`, `record`).
    pub async fn reconcile(&mut self, world: &World, now: Instant, stamp: Time) -> Vec<WriteError> {
        let writes = self.plan(world, now, stamp, true);
        let written = self.writer.execute(writes).await;
        self.record(written, now)
    }

    /// Compiles, updates the push targets and returns the writes due. With
    /// `write` false (writes of an earlier round still under way) only the
    /// push side is updated.
    pub fn plan(&mut self, world: &World, now: Instant, stamp: Time, write: bool) -> Writes {
        self.metrics.reconciles.inc();
        let policies = &world.policies;
        let compiled = sluice_policy::compile(policies, &world.secrets);
        let version = compiled.config.version.clone();

        if self.payload.as_ref().map(|p| &p.version) != Some(&version) {
            self.writer.epoch.fetch_add(1, Ordering::Relaxed);
            self.payload = Some(Payload::new(&compiled.config));
            self.tracker.set_desired(&version, now);
            tracing::info!(
                version = %version,
                routes = compiled.config.routes.len(),
                policies = policies.len(),
                "new proxy config"
            );
        }

        // Pods: what the push and the Programmed condition see.
        let mut present = BTreeSet::new();
        for pod in world
            .pods
            .iter()
            .filter_map(|p| proxy_pod(p, self.settings.admin_port))
        {
            self.tracker
                .pod_seen(&pod.name, pod.admin, pod.reachable, pod.ready, now);
            present.insert(pod.name);
        }
        let gone: Vec<String> = self
            .tracker
            .pod_names()
            .filter(|n| !present.contains(*n))
            .map(str::to_string)
            .collect();
        for name in gone {
            self.tracker.pod_gone(&name);
        }
        let fleet = self.tracker.fleet();
        self.metrics.pods_ready.set(i64::from(fleet.ready));
        self.metrics.pods_synced.set(i64::from(fleet.synced));
        self.metrics.policies.set(policies.len() as i64);
        self.metrics.policies_accepted.set(
            compiled
                .outcomes
                .values()
                .filter(|o| matches!(o, sluice_policy::Outcome::Accepted))
                .count() as i64,
        );

        let mut writes = Writes {
            epoch: self.writer.epoch.load(Ordering::Relaxed),
            ..Writes::default()
        };
        if !write {
            return writes;
        }
        if self.written_config.as_deref() != Some(&version) {
            let body = self
                .payload
                .as_ref()
                .map(|p| p.body.clone())
                .unwrap_or_default();
            writes.configmap = Some((version.clone(), body));
        }
        // Status waits while pushes of the new version are due or in flight:
        // they end within the push timeout, and then one write says how they
        // went instead of a Pending write followed by a Programmed one.
        if self.tracker.busy(now) {
            return writes;
        }
        let alive: BTreeSet<String> = policies.iter().map(|p| key_of(p)).collect();
        self.written_status.retain(|k, _| alive.contains(k));
        for p in policies {
            let key = key_of(p);
            let (Some(outcome), Some(ns), Some(name)) = (
                compiled.outcomes.get(&key),
                p.metadata.namespace.as_deref(),
                p.metadata.name.as_deref(),
            ) else {
                continue;
            };
            // What is there: our own last write when the watch has not shown it yet.
            let current = self.written_status.get(&key).or(p.status.as_ref());
            let facts = Facts {
                generation: p.metadata.generation.unwrap_or(0),
                outcome,
                backend: p.spec.backend.kind(),
                desired_version: &version,
                fleet,
            };
            let desired = status::desired(current, &facts, stamp.clone());
            if !status::needs_write(current, &desired) {
                continue;
            }
            let transitions = transitions(current, &desired);
            let urgent = !transitions.is_empty()
                || current.and_then(|c| c.observed_generation) != desired.observed_generation;
            writes.statuses.push(StatusWrite {
                urgent,
                transitions,
                key,
                namespace: ns.to_string(),
                name: name.to_string(),
                status: desired,
                reference: p.object_ref(&()),
            });
        }
        // Stable: urgent first, then in policy order.
        writes.statuses.sort_by_key(|w| !w.urgent);
        writes
    }

    /// Takes in what `Writer::execute` did; returns its errors (logged and
    /// counted here, retried by a later round).
    pub fn record(&mut self, written: Written, now: Instant) -> Vec<WriteError> {
        if let Some(v) = written.configmap {
            self.written_config = Some(v);
        }
        for (key, status) in written.statuses {
            self.written_status.insert(key, status);
        }
        for e in &written.errors {
            self.metrics.error(e.kind);
            tracing::warn!(error = %e, "reconcile write failed; retried");
        }
        self.retry_at = (!written.errors.is_empty()).then(|| now + WRITE_RETRY);
        written.errors
    }
}

/// Conditions whose status or reason differ from before (what an Event tells).
fn transitions(
    current: Option<&UploadPolicyStatus>,
    desired: &UploadPolicyStatus,
) -> Vec<Condition> {
    desired
        .conditions
        .iter()
        .filter(|c| {
            let old = current.and_then(|s| s.conditions.iter().find(|o| o.type_ == c.type_));
            old.is_none_or(|o| o.status != c.status || o.reason != c.reason)
        })
        .cloned()
        .collect()
}

fn cond<'a>(s: &'a UploadPolicyStatus, t: &str) -> Option<&'a Condition> {
    s.conditions.iter().find(|c| c.type_ == t)
}

/// Event notes are limited to 1 KiB by the API server.
fn truncate(s: &str) -> String {
    let mut end = s.len().min(1000);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Now, to the second: what the API server keeps of a condition's time, so
/// what is written compares equal to what is read back.
pub fn stamp_now() -> Time {
    let secs = k8s_openapi::jiff::Timestamp::now().as_second();
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap_or_default())
}
