//! Prometheus metrics of the data plane, served on the admin port.
//!
//! One `Metrics` per process, shared by reference. Labels are bounded sets:
//! policy keys come from configuration, rule names from `Reject::rule`,
//! statuses from the handful we send; nothing a client chooses becomes a label.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The standard methods; any other a client sends counts as `other`.
    pub method: &'static str,
    pub policy: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    /// `sendfile` or `splice` (zero-copy fast paths) or `copy` (through user-space buffers).
    pub path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub rejections: Family<RuleLabels, Counter>,
    pub upload_bytes: Counter,
    pub objects_stored: Counter,
    pub uploads: Family<PathLabels, Counter>,
    pub download_bytes: Family<PathLabels, Counter>,
    pub download_responses: Family<PathLabels, Counter>,
    pub transfers_in_flight: Gauge,
    pub connections_open: Gauge,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub config_info: Family<VersionLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let m = Metrics {
            requests: Family::default(),
            rejections: Family::default(),
            upload_bytes: Counter::default(),
            objects_stored: Counter::default(),
            uploads: Family::default(),
            download_bytes: Family::default(),
            download_responses: Family::default(),
            transfers_in_flight: Gauge::default(),
            connections_open: Gauge::default(),
            config_reloads: Family::default(),
            config_info: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests by method, policy and status",
            m.requests.clone(),
        );
        registry.register(
            "rejections",
            "Refused requests by rule",
            m.rejections.clone(),
        );
        registry.register(
            "upload_bytes",
            "File bytes accepted from clients",
            m.upload_bytes.clone(),
        );
        registry.register(
            "objects_stored",
            "Objects committed to a backend",
            m.objects_stored.clone(),
        );
        registry.register(
            "uploads",
            "Stored uploads by path: splice (client socket -> pipe -> engine socket past the sniff window) or copy",
            m.uploads.clone(),
        );
        registry.register(
            "download_bytes",
            "File bytes sent to clients, by path",
            m.download_bytes.clone(),
        );
        registry.register(
            "download_responses",
            "Download responses with a body, by path (sendfile, splice or copy)",
            m.download_responses.clone(),
        );
        registry.register(
            "transfers_in_flight",
            "Uploads and downloads in progress",
            m.transfers_in_flight.clone(),
        );
        registry.register(
            "connections_open",
            "Client connections open",
            m.connections_open.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration loads by result",
            m.config_reloads.clone(),
        );
        registry.register(
            "config_info",
            "The configuration version being served (value 1)",
            m.config_info.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn reject(&self, rule: &str) {
        self.rejections
            .get_or_create(&RuleLabels {
                rule: rule.to_string(),
            })
            .inc();
    }
}
