//! `ProxyConfig`: the routing table a proxy runs on, as compiled from policies.
//!
//! It is plain data (serde JSON), so the operator can push it to proxies and a
//! proxy can persist it as its last known good. Every value is already
//! resolved: sizes are bytes, Secrets are read (API keys as SHA-256 hashes,
//! never in clear), defaults are filled in. A proxy never looks at YAML.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::crd::{Checksum, HttpMode, Naming};

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ProxyConfig {
    /// Content hash of `routes` (see [`ProxyConfig::new`]); what a proxy reports it serves.
    pub version: String,
    /// Sorted for deterministic versions and lookups: longest prefix first.
    pub routes: Vec<Route>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// `namespace/name` of the policy this route came from.
    pub policy: String,
    /// The policy's `metadata.generation` (0 when read from disk).
    pub generation: i64,
    /// Lowercase; empty matches any host.
    pub hosts: Vec<String>,
    pub path_prefix: String,
    pub backend: Backend,
    pub upload: UploadRules,
    pub download_enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RouteAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<RouteCors>,
}

/// A route's CORS rules, defaults filled in and names normalised: origins as
/// given (validated: lowercase `scheme://host[:port]` or `*`), methods
/// upper-case, header names lowercase, duplicates dropped.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteCors {
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    pub allowed_headers: Vec<String>,
    /// The policy's `exposeHeaders` only; the proxy adds the ones it always exposes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u32>,
    #[serde(default)]
    pub allow_credentials: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum Backend {
    Fs {
        root: String,
    },
    Http {
        url: String,
        /// Base of `GET {download_url}/{key}`.
        download_url: String,
        mode: HttpMode,
        field_name: String,
        headers: Vec<(String, String)>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        spool: Option<Spool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls: Option<EngineTls>,
    },
    S3 {
        endpoint: String,
        bucket: String,
        region: String,
        key_prefix: String,
        path_style: bool,
        credentials: S3Credentials,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls: Option<EngineTls>,
    },
}

/// Where an S3 route's signing keys come from. In JSON: `"credentials":
/// {"static": {"access_key_id": ..., "secret_access_key": ...}}` or
/// `"credentials": "chain"`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum S3Credentials {
    /// Long-lived keys read from the policy's `credentialsSecret`.
    Static {
        access_key_id: String,
        secret_access_key: String,
    },
    /// The proxy's own AWS credential chain (environment, web identity,
    /// container credentials, instance metadata): the policy names no Secret.
    Chain,
}

impl Backend {
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Fs { .. } => "fs",
            Backend::Http { .. } => "http",
            Backend::S3 { .. } => "s3",
        }
    }
}

impl Backend {
    /// The engine TLS settings of an http or s3 backend.
    pub fn tls(&self) -> Option<&EngineTls> {
        match self {
            Backend::Fs { .. } => None,
            Backend::Http { tls, .. } | Backend::S3 { tls, .. } => tls.as_ref(),
        }
    }
}

/// TLS to an https engine, resolved: PEMs read from their Secrets and checked
/// (they parse; the client key matches its certificate).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct EngineTls {
    /// CA certificates trusted besides the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Client certificate chain (leaf first) and its private key, for mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_pem: Option<String>,
    /// Verified and sent as SNI instead of the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spool {
    pub memory: u64,
    pub disk: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UploadRules {
    pub max_file_size: u64,
    pub max_files: u32,
    /// Lowercase patterns: `image/png`, `image/*`, `*/*`. Empty: any.
    pub allowed_types: Vec<String>,
    /// Lowercase, no dot. Empty: any.
    pub allowed_extensions: Vec<String>,
    pub verify_content: bool,
    pub naming: Naming,
    pub checksum: Checksum,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteAuth {
    /// Hex SHA-256 of each accepted API key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_key_sha256: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtRule>,
    /// Hex of each HMAC-SHA256 key signed URLs and forms may be signed with. In
    /// clear (the proxy must sign with them), like S3 static credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signing_keys_hex: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JwtRule {
    pub issuer: String,
    pub audiences: Vec<String>,
    /// PEM public key (RSA, EC P-256 or Ed25519); public, so kept as is.
    pub public_key_pem: String,
}

impl ProxyConfig {
    /// Checks a config that did not come out of `compile` here (pushed, persisted,
    /// or read from a snapshot): the version matches the routes, and each route
    /// is one `compile` could have made. The first problem, in words.
    pub fn check(&self) -> Result<(), String> {
        let expected = Self::new(self.routes.clone()).version;
        if self.version != expected {
            return Err(format!(
                "version {:?} does not match the routes (their hash is {expected:?})",
                self.version
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for r in &self.routes {
            let at = |e: String| format!("route {} ({}): {e}", r.path_prefix, r.policy);
            crate::compile::validate_prefix(&r.path_prefix).map_err(at)?;
            for h in &r.hosts {
                crate::compile::validate_host(h).map_err(at)?;
            }
            if r.upload.max_file_size == 0 || r.upload.max_files == 0 {
                return Err(at("maxFileSize and maxFiles must be positive".into()));
            }
            if let Backend::Fs { root } = &r.backend {
                crate::compile::validate_fs_root(root).map_err(at)?;
            }
            if let Some(c) = &r.cors {
                crate::compile::validate_cors(c).map_err(at)?;
            }
            let hosts = if r.hosts.is_empty() {
                vec![String::new()]
            } else {
                r.hosts.clone()
            };
            for h in hosts {
                if !seen.insert((h.clone(), r.path_prefix.clone())) {
                    return Err(at(format!("a second route for host {h:?} and this prefix")));
                }
            }
        }
        Ok(())
    }

    /// Sorts the routes and stamps the content-hash version.
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by(|a, b| {
            b.path_prefix
                .len()
                .cmp(&a.path_prefix.len())
                .then_with(|| a.path_prefix.cmp(&b.path_prefix))
                // Host-specific routes before any-host ones at the same prefix.
                .then_with(|| a.hosts.is_empty().cmp(&b.hosts.is_empty()))
                .then_with(|| a.policy.cmp(&b.policy))
        });
        let mut h = Sha256::new();
        // serde_json of plain data cannot fail; an empty hash input would still version uniquely.
        h.update(serde_json::to_vec(&routes).unwrap_or_default());
        let version = hex::encode(&h.finalize()[..8]);
        Self { version, routes }
    }

    /// The route for a request: longest matching prefix, host-specific before any-host.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.route_index(host, path).map(|i| &self.routes[i])
    }

    /// Index into `routes` of [`ProxyConfig::route`]'s answer.
    pub fn route_index(&self, host: Option<&str>, path: &str) -> Option<usize> {
        let host = host.map(strip_port);
        self.routes
            .iter()
            .position(|r| path.starts_with(&r.path_prefix) && r.matches_host(host))
    }
}

impl Route {
    fn matches_host(&self, host: Option<&str>) -> bool {
        if self.hosts.is_empty() {
            return true;
        }
        let Some(host) = host else { return false };
        self.hosts.iter().any(|pat| host_matches(pat, host))
    }
}

/// `pat` is lowercase; `*.example.com` matches one or more labels before `.example.com`.
pub fn host_matches(pat: &str, host: &str) -> bool {
    match pat.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        }
        None => pat.eq_ignore_ascii_case(host),
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host
            .split(']')
            .next()
            .map_or(host, |h| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(policy: &str, hosts: &[&str], prefix: &str) -> Route {
        Route {
            policy: policy.into(),
            generation: 1,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            path_prefix: prefix.into(),
            backend: Backend::Fs { root: "/d".into() },
            upload: UploadRules {
                max_file_size: 1,
                max_files: 1,
                allowed_types: vec![],
                allowed_extensions: vec![],
                verify_content: false,
                naming: Naming::Original,
                checksum: Checksum::Sha256,
            },
            download_enabled: true,
            auth: None,
            cors: None,
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let c = ProxyConfig::new(vec![
            route("a", &[], "/files/"),
            route("b", &[], "/files/images/"),
            route("c", &[], "/"),
        ]);
        assert_eq!(c.route(None, "/files/images/x.png").unwrap().policy, "b");
        assert_eq!(c.route(None, "/files/x").unwrap().policy, "a");
        assert_eq!(c.route(None, "/other").unwrap().policy, "c");
        assert_eq!(c.route(None, "/files").unwrap().policy, "c");
    }

    #[test]
    fn host_specific_beats_any_host() {
        let c = ProxyConfig::new(vec![
            route("any", &[], "/f/"),
            route("ex", &["example.com"], "/f/"),
        ]);
        assert_eq!(
            c.route(Some("example.com:8080"), "/f/x").unwrap().policy,
            "ex"
        );
        assert_eq!(c.route(Some("EXAMPLE.com"), "/f/x").unwrap().policy, "ex");
        assert_eq!(c.route(Some("other.com"), "/f/x").unwrap().policy, "any");
        assert_eq!(c.route(None, "/f/x").unwrap().policy, "any");
    }

    #[test]
    fn wildcard_hosts() {
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(host_matches("*.example.com", "a.b.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "aexample.com"));
        assert!(!host_matches("*.example.com", ".example.com"));
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("h"), "h");
    }

    #[test]
    fn check_accepts_what_new_makes_and_refuses_the_rest() {
        let ok = ProxyConfig::new(vec![
            route("a", &[], "/x/"),
            route("b", &["h.example"], "/x/"),
        ]);
        assert_eq!(ok.check(), Ok(()));

        let mut stale = ok.clone();
        stale.routes.pop();
        assert!(stale.check().unwrap_err().contains("does not match"));

        let bad = |r: Route| ProxyConfig::new(vec![r]).check().unwrap_err();
        assert!(bad(route("a", &[], "x/")).contains("start and end"));
        assert!(bad(route("a", &["bad host"], "/x/")).contains("host"));
        let mut r = route("a", &[], "/x/");
        r.upload.max_file_size = 0;
        assert!(bad(r).contains("positive"));
        let mut r = route("a", &[], "/x/");
        r.backend = Backend::Fs {
            root: "../etc".into(),
        };
        assert!(bad(r).contains("plain directory"));

        let twice = ProxyConfig::new(vec![route("a", &[], "/x/"), route("b", &[], "/x/")]);
        assert!(twice.check().unwrap_err().contains("second route"));
    }

    #[test]
    fn version_is_content_hash() {
        let a = ProxyConfig::new(vec![route("a", &[], "/x/"), route("b", &[], "/y/")]);
        let b = ProxyConfig::new(vec![route("b", &[], "/y/"), route("a", &[], "/x/")]);
        assert_eq!(a.version, b.version);
        let c = ProxyConfig::new(vec![route("a", &[], "/x/")]);
        assert_ne!(a.version, c.version);
        assert_eq!(a.version.len(), 16);
    }
}
