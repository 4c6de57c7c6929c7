//! Prometheus metrics of the operator, served on `--listen` with the health
//! endpoints. Label values are bounded sets (error kinds, push results).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `configmap`, `status`, `event`, `push_unreachable`, `push_refused`, ...
    pub kind: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Counter,
    pub errors: Family<KindLabels, Counter>,
    /// Seconds from starting a push to the proxy's answer.
    pub push_seconds: Histogram,
    pub pods_ready: Gauge,
    pub pods_synced: Gauge,
    pub policies: Gauge,
    pub policies_accepted: Gauge,
    pub leader: Gauge,
    pub status_writes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sluice_operator");
        let m = Metrics {
            reconciles: Counter::default(),
            errors: Family::default(),
            push_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            pods_ready: Gauge::default(),
            pods_synced: Gauge::default(),
            policies: Gauge::default(),
            policies_accepted: Gauge::default(),
            leader: Gauge::default(),
            status_writes: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("reconciles", "Reconcile rounds run", m.reconciles.clone());
        registry.register(
            "errors",
            "Errors by kind (API writes, pushes)",
            m.errors.clone(),
        );
        registry.register(
            "push_duration_seconds",
            "Time a config push to one proxy took",
            m.push_seconds.clone(),
        );
        registry.register("pods_ready", "Ready proxy pods", m.pods_ready.clone());
        registry.register(
            "pods_synced",
            "Ready proxy pods serving the desired config",
            m.pods_synced.clone(),
        );
        registry.register(
            "policies",
            "UploadPolicy resources seen",
            m.policies.clone(),
        );
        registry.register(
            "policies_accepted",
            "UploadPolicy resources compiled into the config",
            m.policies_accepted.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            m.leader.clone(),
        );
        registry.register(
            "status_writes",
            "UploadPolicy status patches sent",
            m.status_writes.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
