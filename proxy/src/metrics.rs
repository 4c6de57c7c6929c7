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

/// Why a TLS connection to an engine failed: `backend::tls::Reason::what`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EngineTlsLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialLabels {
    /// `environment`, `web_identity`, `container`, `imds`, or `none` (no source configured).
    pub source: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: String,
}

/// A `path`-labelled counter family whose paths are known up front: their
/// counters are taken from the family once, at start. They are exported at
/// 0 before the first transfer (so a rate is defined from the start), and a
/// transfer bumps its counter without hashing a label set under the
/// family's lock. Any other path still counts, through the family.
#[derive(Clone, Debug)]
pub struct ByPath {
    family: Family<PathLabels, Counter>,
    known: Vec<(&'static str, Counter)>,
}

impl ByPath {
    /// A new family, registered under `name`, with a counter per path of `paths`.
    fn register(registry: &mut Registry, name: &str, help: &str, paths: &[&'static str]) -> Self {
        let family = Family::<PathLabels, Counter>::default();
        registry.register(name, help, family.clone());
        let known = paths
            .iter()
            .map(|&path| (path, family.get_or_create(&PathLabels { path }).clone()))
            .collect();
        ByPath { family, known }
    }

    fn known(&self, path: &str) -> Option<&Counter> {
        self.known.iter().find(|(p, _)| *p == path).map(|(_, c)| c)
    }

    pub fn inc(&self, path: &'static str) {
        self.inc_by(path, 1);
    }

    pub fn inc_by(&self, path: &'static str, n: u64) {
        match self.known(path) {
            Some(c) => c.inc_by(n),
            None => self.family.get_or_create(&PathLabels { path }).inc_by(n),
        };
    }

    /// A handle on `path`'s counter, for a body that counts as it goes.
    pub fn counter(&self, path: &'static str) -> Counter {
        match self.known(path) {
            Some(c) => c.clone(),
            None => self.family.get_or_create(&PathLabels { path }).clone(),
        }
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub rejections: Family<RuleLabels, Counter>,
    pub upload_bytes: Counter,
    pub objects_stored: Counter,
    pub uploads: ByPath,
    pub download_bytes: ByPath,
    pub download_responses: ByPath,
    pub transfers_in_flight: Gauge,
    pub connections_open: Gauge,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub config_info: Family<VersionLabels, Gauge>,
    pub tls: TlsMetrics,
    pub engine_tls_failures: Family<EngineTlsLabels, Counter>,
    pub s3_credentials_refresh: Family<CredentialLabels, Counter>,
    /// Unix time the chain's current S3 keys expire (0: none, or keys that do not expire).
    pub s3_credentials_expiry: Gauge,
}

const DOWNLOAD_PATHS: &[&str] = &["sendfile", "splice", "copy", "tls-copy"];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let requests = Family::default();
        registry.register(
            "requests",
            "Requests by method, policy and status",
            requests.clone(),
        );
        let rejections = Family::default();
        registry.register("rejections", "Refused requests by rule", rejections.clone());
        let upload_bytes = Counter::default();
        registry.register(
            "upload_bytes",
            "File bytes accepted from clients",
            upload_bytes.clone(),
        );
        let objects_stored = Counter::default();
        registry.register(
            "objects_stored",
            "Objects committed to a backend",
            objects_stored.clone(),
        );
        let uploads = ByPath::register(
            &mut registry,
            "uploads",
            "Stored uploads by path: splice (client socket -> pipe -> engine socket past the sniff window) or copy",
            &["splice", "copy", "tls-copy"],
        );
        let download_bytes = ByPath::register(
            &mut registry,
            "download_bytes",
            "File bytes sent to clients, by path",
            DOWNLOAD_PATHS,
        );
        let download_responses = ByPath::register(
            &mut registry,
            "download_responses",
            "Download responses with a body, by path (sendfile, splice or copy)",
            DOWNLOAD_PATHS,
        );
        let transfers_in_flight = Gauge::default();
        registry.register(
            "transfers_in_flight",
            "Uploads and downloads in progress",
            transfers_in_flight.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open",
            connections_open.clone(),
        );
        let config_reloads = Family::default();
        registry.register(
            "config_reloads",
            "Configuration loads by result",
            config_reloads.clone(),
        );
        let config_info = Family::default();
        registry.register(
            "config_info",
            "The configuration version being served (value 1)",
            config_info.clone(),
        );
        let tls = TlsMetrics::register(&mut registry);
        let engine_tls_failures = Family::default();
        registry.register(
            "engine_tls_failures",
            "TLS connections to https engines that failed, by reason (certificate not trusted, name mismatch, expired, ...)",
            engine_tls_failures.clone(),
        );
        let s3_credentials_refresh = Family::default();
        registry.register(
            "s3_credentials_refresh",
            "Loads of S3 credentials from the AWS credential chain, by source and result",
            s3_credentials_refresh.clone(),
        );
        let s3_credentials_expiry = Gauge::default();
        // A timestamp rather than "seconds left", which would be stale between loads:
        // alert on `sluice_s3_credentials_expiry_timestamp_seconds - time() < 300`.
        registry.register(
            "s3_credentials_expiry_timestamp_seconds",
            "Unix time the AWS credential chain's current S3 keys expire (0: none loaded, or keys without expiry)",
            s3_credentials_expiry.clone(),
        );
        Metrics {
            tls,
            registry,
            requests,
            rejections,
            upload_bytes,
            objects_stored,
            uploads,
            download_bytes,
            download_responses,
            transfers_in_flight,
            connections_open,
            config_reloads,
            config_info,
            engine_tls_failures,
            s3_credentials_refresh,
            s3_credentials_expiry,
        }
    }
}

// --- TLS (listener and admin port) ---

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsReasonLabels {
    /// `client` (--listen) or `admin` (--admin-listen).
    pub listener: &'static str,
    /// One of `tls::REASONS`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsReloadLabels {
    pub listener: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsCertLabels {
    pub listener: &'static str,
    /// The certificate file, as given on the command line.
    pub cert: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsOffloadLabels {
    /// `kernel` (kTLS) or `user` (rustls encrypts in the process).
    pub mode: &'static str,
}

/// The TLS series: handles cloned into each `tls::Tls`.
#[derive(Clone, Debug)]
pub struct TlsMetrics {
    pub handshake_failures: Family<TlsReasonLabels, Counter>,
    pub reloads: Family<TlsReloadLabels, Counter>,
    pub not_after: Family<TlsCertLabels, Gauge>,
    pub offload: Family<TlsOffloadLabels, Gauge>,
}

impl TlsMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = TlsMetrics {
            handshake_failures: Family::default(),
            reloads: Family::default(),
            not_after: Family::default(),
            offload: Family::default(),
        };
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed, by listener and reason",
            m.handshake_failures.clone(),
        );
        registry.register(
            "tls_reloads",
            "Certificate (and client CA) reloads by listener and result; error: the old pair stays",
            m.reloads.clone(),
        );
        registry.register(
            "tls_certificate_not_after_seconds",
            "Expiry (Unix seconds) of each loaded certificate",
            m.not_after.clone(),
        );
        registry.register(
            "tls_offload",
            "Where TLS records are encrypted: 1 for the mode in use (kernel: kTLS, user: rustls)",
            m.offload.clone(),
        );
        m
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(m: &Metrics, series: &str) -> Option<String> {
        m.encode().lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')
                .map(str::to_string)
        })
    }

    #[test]
    fn path_counters_are_exported_from_the_start_and_count_through_the_family() {
        let m = Metrics::default();
        for s in [
            "sluice_uploads_total{path=\"splice\"}",
            "sluice_uploads_total{path=\"copy\"}",
            "sluice_download_bytes_total{path=\"sendfile\"}",
            "sluice_download_responses_total{path=\"copy\"}",
        ] {
            assert_eq!(sample(&m, s).as_deref(), Some("0"), "{s}");
        }
        // Uploads never go through sendfile: no such series.
        assert_eq!(sample(&m, "sluice_uploads_total{path=\"sendfile\"}"), None);

        m.uploads.inc("splice");
        m.download_bytes.inc_by("sendfile", 4096);
        let body = m.download_bytes.counter("copy");
        body.inc_by(10);
        m.download_bytes.inc_by("copy", 5);
        m.uploads.inc("other");
        for (series, want) in [
            ("sluice_uploads_total{path=\"splice\"}", "1"),
            ("sluice_download_bytes_total{path=\"sendfile\"}", "4096"),
            ("sluice_download_bytes_total{path=\"copy\"}", "15"),
            ("sluice_uploads_total{path=\"other\"}", "1"),
        ] {
            assert_eq!(sample(&m, series).as_deref(), Some(want), "{series}");
        }
    }
}
