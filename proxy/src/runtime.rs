//! The configuration a proxy serves right now, and how it gets replaced.
//!
//! ```text
//!   embedded default | --policies DIR (polled) | last known good (--state-dir)
//!        -> manifests -> sluice_policy::compile -> ProxyConfig
//!        -> Active (routes prepared: fs roots resolved, auth keys parsed,
//!           each engine route given the client of its TLS setting)
//!        -> ArcSwap: requests load an Arc<Active> once and keep it,
//!           so a swap never changes the rules under an in-flight transfer
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use k8s_openapi::api::core::v1::Secret;
use sha2::{Digest, Sha256};
use sluice_policy::load::Ignored;
use sluice_policy::{Backend, NotAccepted, ProxyConfig, Route, S3Credentials, UploadPolicy};

use crate::auth::Authenticator;
use crate::backend::Dest;
use crate::backend::credentials::Chain;
use crate::backend::s3::{Keys, S3Target};
use crate::backend::tls::{Clients, EngineClient};
use crate::backend::upstream::Origin;
use crate::cors::Cors;
use crate::filters::Allowlists;
use crate::metrics::{Metrics, ResultLabels, VersionLabels};

/// What `sluice-proxy` serves with no `--policies`: everything under /files/ on disk, any type, 1 GiB files.
pub const DEFAULT_POLICY: &str = include_str!("default-policy.yaml");

pub struct RouteRt {
    pub route: Route,
    /// For fs backends: the directory objects live in.
    pub fs_root: Option<PathBuf>,
    /// For s3 backends: bucket and credentials, ready to sign.
    pub s3: Option<Arc<S3Target>>,
    pub auth: Option<Authenticator>,
    /// For http backends on plain http: where the fast path sends uploads
    /// (`upload::splice`, `upload::form`). None for https engines: the raw
    /// client hands sockets to splice(2), which cannot carry TLS.
    pub engine: Option<Arc<Engine>>,
    /// The engine client of the backend's TLS setting (the default one for fs).
    pub client: EngineClient,
    /// The backend's https engine URLs: downloads from them go through hyper,
    /// and /readyz reports the policy when every one fails its handshake.
    pub tls_engines: Vec<http::Uri>,
    /// The upload rules' type and extension allowlists, parsed.
    pub allow: Allowlists,
    /// The policy's CORS rules, ready to answer (None: no CORS headers at all).
    pub cors: Option<Cors>,
}

impl RouteRt {
    /// Where this route stores, for the backend.
    pub fn dest(&self) -> Dest<'_> {
        Dest {
            backend: &self.route.backend,
            fs_root: self.fs_root.as_deref(),
            s3: self.s3.as_ref(),
            client: &self.client.http,
        }
    }

    /// This route with its upload rules narrowed by a signature's conditions
    /// (a signed URL's or a form policy's): the smaller of the two size limits,
    /// and types allowed by both lists, sniffed (`verifyContent`) so that a
    /// declared type cannot pass for the signed one. Every path then enforces
    /// them with the route's own rules. Its auth is gone: it has been checked.
    pub fn narrowed(&self, max_size: Option<u64>, types: &[String]) -> RouteRt {
        let mut route = self.route.clone();
        if let Some(n) = max_size {
            route.upload.max_file_size = route.upload.max_file_size.min(n);
        }
        if !types.is_empty() {
            route.upload.verify_content = true;
        }
        RouteRt {
            route,
            fs_root: self.fs_root.clone(),
            s3: self.s3.clone(),
            auth: None,
            engine: self.engine.clone(),
            client: self.client.clone(),
            tls_engines: self.tls_engines.clone(),
            allow: self.allow.narrowed(types),
            // CORS headers come from the route the gate matched (`Visit::cors_headers`),
            // never from this per-request copy: nothing to rebuild here.
            cors: None,
        }
    }

    /// Downloads come from an https engine: the fast path (splice, raw
    /// client) leaves them to hyper.
    pub fn downloads_over_tls(&self) -> bool {
        match &self.route.backend {
            Backend::Fs { .. } => false,
            Backend::Http { download_url, .. } => download_url.starts_with("https://"),
            Backend::S3 { endpoint, .. } => endpoint.starts_with("https://"),
        }
    }

    /// Why this route's engines cannot be reached, when every https engine
    /// of it failed its last TLS handshake; asks for a new handshake with
    /// each engine not known to be fine (at most every few seconds), so the
    /// answer follows an engine that was fixed without waiting for traffic.
    pub fn engine_failure(&self) -> Option<String> {
        let mut reasons = Vec::new();
        for u in &self.tls_engines {
            match self.client.failure(u) {
                Some(r) => {
                    self.client.probe(u);
                    reasons.push(format!("{}: {r}", redact(u)));
                }
                None => {
                    if !self.client.seen(u) {
                        self.client.probe(u);
                    }
                    return None;
                }
            }
        }
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }
}

/// scheme://authority of an engine URL (no path, no query: presigned URLs carry signatures).
fn redact(u: &http::Uri) -> String {
    format!(
        "{}://{}",
        u.scheme_str().unwrap_or("https"),
        u.authority().map_or("", |a| a.as_str())
    )
}

/// An http backend's upload URL, parsed once. Put mode: objects go to
/// `{path}/{key}` on `origin`. Multipart mode: every file is a POST to `path`
/// (the URL's path and query, as given).
pub struct Engine {
    pub origin: Origin,
    pub path: String,
}

pub struct Active {
    pub config: ProxyConfig,
    pub routes: Vec<Arc<RouteRt>>,
    /// Some route reaches an https engine (else the fast path need not look).
    pub any_tls_engine: bool,
}

impl Active {
    /// Prepares every route; refuses the whole config if one route cannot run, so a
    /// bad push never half-applies. S3 routes without static keys sign with
    /// `chain`'s (its loading starts with the first of them).
    pub fn build(
        config: ProxyConfig,
        data_dir: &Path,
        clients: &Clients,
        chain: &Arc<Chain>,
    ) -> Result<Self, String> {
        let mut routes = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let mut engine = None;
            let mut tls_engines = Vec::new();
            let (fs_root, s3) = match &r.backend {
                Backend::Fs { root } => {
                    // Drop "." components: create_dir_all refuses a path ending in one.
                    let p: PathBuf = data_dir
                        .join(root)
                        .components()
                        .filter(|c| *c != std::path::Component::CurDir)
                        .collect();
                    std::fs::create_dir_all(&p)
                        .map_err(|e| format!("{}: fs root {}: {e}", r.policy, p.display()))?;
                    (Some(p), None)
                }
                Backend::Http {
                    url,
                    download_url,
                    mode,
                    spool,
                    ..
                } => {
                    if *mode == sluice_policy::HttpMode::Multipart && spool.is_none() {
                        tracing::warn!(
                            policy = %r.policy,
                            "multipart upload servers commonly keep a truncated upload (miniserve and copyparty do): \
                             without spool, a file rejected or aborted mid-stream may be left partial on the engine"
                        );
                    }
                    for (field, u) in [("url", url), ("downloadUrl", download_url)] {
                        let https = check_engine_url(u)
                            .map_err(|e| format!("{}: backend.http.{field}: {e}", r.policy))?;
                        if https && let Ok(u) = u.parse::<http::Uri>() {
                            tls_engines.push(u);
                        }
                    }
                    if let Ok(u) = url.parse::<url::Url>()
                        && u.scheme() == "http"
                        && let Ok(origin) = Origin::of(&u)
                    {
                        let path = match (mode, u.query()) {
                            (sluice_policy::HttpMode::Put, None) => {
                                Some(u.path().trim_end_matches('/').to_string())
                            }
                            // `{url}/{key}` would land in the query: hyper's path keeps that.
                            (sluice_policy::HttpMode::Put, Some(_)) => None,
                            (sluice_policy::HttpMode::Multipart, None) => {
                                Some(u.path().to_string())
                            }
                            (sluice_policy::HttpMode::Multipart, Some(q)) => {
                                Some(format!("{}?{q}", u.path()))
                            }
                        };
                        engine = path.map(|path| Arc::new(Engine { origin, path }));
                    }
                    (None, None)
                }
                Backend::S3 {
                    endpoint,
                    bucket,
                    region,
                    key_prefix,
                    path_style,
                    credentials,
                    ..
                } => {
                    let https = check_engine_url(endpoint)
                        .map_err(|e| format!("{}: backend.s3.endpoint: {e}", r.policy))?;
                    let keys = match credentials {
                        S3Credentials::Static {
                            access_key_id,
                            secret_access_key,
                        } => Keys::Static(rusty_s3::Credentials::new(
                            access_key_id.clone(),
                            secret_access_key.clone(),
                        )),
                        S3Credentials::Chain => Keys::Chain(chain.clone()),
                    };
                    let t = S3Target::new(endpoint, bucket, region, key_prefix, *path_style, keys)
                        .map_err(|e| format!("{}: {e}", r.policy))?;
                    // Virtual-host style: the engine's host carries the bucket.
                    if https && let Ok(u) = t.bucket.base_url().as_str().parse::<http::Uri>() {
                        tls_engines.push(u);
                    }
                    (None, Some(Arc::new(t)))
                }
            };
            let auth = match &r.auth {
                Some(a) => Some(Authenticator::new(a).map_err(|e| format!("{}: {e}", r.policy))?),
                None => None,
            };
            let client = clients
                .get(r.backend.tls())
                .map_err(|e| format!("{}: {e}", r.policy))?;
            // url and downloadUrl on one engine: one handshake tells for both.
            tls_engines.dedup_by(|a, b| a.authority() == b.authority());
            routes.push(Arc::new(RouteRt {
                route: r.clone(),
                fs_root,
                s3,
                auth,
                engine,
                client,
                tls_engines,
                allow: Allowlists::new(&r.upload.allowed_types, &r.upload.allowed_extensions),
                cors: r.cors.as_ref().map(Cors::new),
            }));
        }
        clients.retain(
            &config
                .routes
                .iter()
                .filter_map(|r| r.backend.tls())
                .collect(),
        );
        let any_tls_engine = routes.iter().any(|r| !r.tls_engines.is_empty());
        Ok(Self {
            config,
            routes,
            any_tls_engine,
        })
    }

    /// The policies whose every https engine failed its last TLS handshake,
    /// with why (`certificate not trusted`, `name mismatch`, `expired`...).
    pub fn engines_failing(&self) -> Vec<(String, String)> {
        self.routes
            .iter()
            .filter_map(|r| Some((r.route.policy.clone(), r.engine_failure()?)))
            .collect()
    }

    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Arc<RouteRt>> {
        self.config.route_index(host, path).map(|i| &self.routes[i])
    }

    /// Policies that cannot serve now and why, for /readyz: those whose every
    /// https engine fails TLS, and S3 routes whose credential chain has no
    /// valid keys.
    pub fn not_ready(&self) -> Vec<(String, String)> {
        let mut out = self.engines_failing();
        for r in &self.routes {
            if let Some(t) = &r.s3
                && let Keys::Chain(c) = &t.keys
                && let Some(why) = c.problem()
                && !out.iter().any(|(p, _)| *p == r.route.policy)
            {
                out.push((r.route.policy.clone(), why));
            }
        }
        out
    }
}

/// An engine URL: http or https, with a host. True for https.
fn check_engine_url(url: &str) -> Result<bool, String> {
    let u: url::Url = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    match u.scheme() {
        "http" if u.host_str().is_some() => Ok(false),
        "https" if u.host_str().is_some() => Ok(true),
        _ => Err(format!(
            "{url:?} is not an http:// or https:// URL with a host"
        )),
    }
}

/// The swappable current configuration. `None` until something loads.
#[derive(Default)]
pub struct Current {
    active: ArcSwapOption<Active>,
    /// The policies folder's documents left out of the last load that was applied.
    not_accepted: ArcSwap<Vec<NotAccepted>>,
}

impl Current {
    pub fn not_accepted(&self) -> Arc<Vec<NotAccepted>> {
        self.not_accepted.load_full()
    }

    pub fn set_not_accepted(&self, list: Vec<NotAccepted>) {
        self.not_accepted.store(Arc::new(list));
    }

    pub fn load(&self) -> Option<Arc<Active>> {
        self.active.load_full()
    }

    pub fn version(&self) -> Option<String> {
        self.active
            .load()
            .as_ref()
            .map(|a| a.config.version.clone())
    }

    pub fn store(&self, active: Active, metrics: &Metrics) {
        if let Some(old) = self.active.load().as_ref() {
            metrics.config_info.remove(&VersionLabels {
                version: old.config.version.clone(),
            });
        }
        metrics
            .config_info
            .get_or_create(&VersionLabels {
                version: active.config.version.clone(),
            })
            .set(1);
        metrics
            .config_reloads
            .get_or_create(&ResultLabels {
                result: "applied".into(),
            })
            .inc();
        // A first handshake with each https engine, so /readyz knows about
        // an engine that fails before any request does.
        for r in &active.routes {
            for u in &r.tls_engines {
                r.client.probe(u);
            }
        }
        self.active.store(Some(Arc::new(active)));
    }
}

/// UploadPolicies and Secrets from YAML text: multi-document, other kinds
/// ignored, every document strict; the first one not accepted is an error.
pub fn parse_manifests(
    text: &str,
    origin: &str,
) -> Result<(Vec<UploadPolicy>, Vec<Secret>), String> {
    let loaded = sluice_policy::load::load(&[(origin.to_string(), text.to_string())]);
    if let Some(n) = loaded.not_accepted.first() {
        return Err(match n.document {
            Some(d) => format!("{}: document {d}: {}", n.file, n.message),
            None => format!("{}: {}", n.file, n.message),
        });
    }
    log_ignored(&loaded.ignored);
    Ok((
        loaded.policies.into_iter().map(|(p, _)| p).collect(),
        loaded.secrets.into_iter().map(|(s, _)| s).collect(),
    ))
}

fn log_ignored(ignored: &[Ignored]) {
    for i in ignored {
        tracing::warn!(
            origin = %i.origin.file,
            document = i.origin.document,
            api = %i.api_version,
            kind = %i.kind,
            "ignoring manifest that is not an UploadPolicy or Secret"
        );
    }
}

/// Files (path, text) of a policies directory.
pub type Manifests = Vec<(PathBuf, String)>;

/// Every `*.yaml`/`*.yml` in `dir`, sorted by name, with a digest of their contents.
pub fn read_dir(dir: &Path) -> Result<(Manifests, [u8; 32]), String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                // Skip editor swap files and Kubernetes ConfigMap's ..data internals.
                && !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    files.sort();
    let mut h = Sha256::new();
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        h.update(f.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
        out.push((f, text));
    }
    Ok((out, h.finalize().into()))
}

/// Compiles manifests and logs each policy that did not make it, with why.
pub fn compile_texts(texts: &[(String, String)]) -> Result<ProxyConfig, String> {
    compile_files(texts).map(|(config, _)| config)
}

/// Compiles a folder's files (name, YAML): each document that does not decode
/// or compile is left out, logged with where it is and why, and returned for
/// `/readyz`; the rest serves. An error only when no file is YAML at all,
/// which is treated as a folder that does not read.
pub fn compile_files(
    texts: &[(String, String)],
) -> Result<(ProxyConfig, Vec<NotAccepted>), String> {
    let folder = sluice_policy::compile_folder(texts);
    if folder.nothing_read {
        let why: Vec<String> = folder
            .not_accepted
            .iter()
            .map(|n| format!("{}: {}", n.file, n.message))
            .collect();
        return Err(why.join("; "));
    }
    log_ignored(&folder.ignored);
    for (key, o) in &folder.accepted {
        tracing::info!(policy = %key, file = %o.file, document = o.document, "policy accepted");
    }
    for n in &folder.not_accepted {
        tracing::warn!(
            policy = n.policy.as_deref(),
            reason = n.reason,
            detail = %n.message,
            file = %n.file,
            document = n.document,
            kind = n.kind.as_deref(),
            field = n.field.as_deref(),
            nearest = n.nearest.as_deref(),
            "policy not accepted"
        );
    }
    Ok((folder.config, folder.not_accepted))
}

/// Atomically writes the config to `state_dir/config.json` (temp file + rename).
pub fn persist(state_dir: &Path, config: &ProxyConfig) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let tmp = state_dir.join(".config.json.tmp");
    let json = serde_json::to_vec_pretty(config).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, state_dir.join("config.json"))
}

pub fn read_persisted(state_dir: &Path) -> Result<ProxyConfig, String> {
    let p = state_dir.join("config.json");
    let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    parse_config(&bytes).map_err(|e| format!("{}: {e}", p.display()))
}

/// A ProxyConfig as JSON: what is persisted, pushed, and kept in the snapshot.
pub fn parse_config(bytes: &[u8]) -> Result<ProxyConfig, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("not a ProxyConfig: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_compiles_to_one_fs_route() {
        let (cfg, not_accepted) =
            compile_files(&[("default".into(), DEFAULT_POLICY.into())]).unwrap();
        assert_eq!(not_accepted, []);
        assert_eq!(cfg.routes.len(), 1);
        let r = &cfg.routes[0];
        assert_eq!(r.path_prefix, "/files/");
        assert_eq!(r.upload.max_file_size, 1 << 30);
        assert!(r.upload.allowed_types.is_empty());
        assert!(r.auth.is_none());
        assert!(matches!(r.backend, Backend::Fs { .. }));
    }

    #[test]
    fn manifests_multi_document_other_kinds_ignored() {
        let y = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: k}\nstringData: {a: b}\n---\napiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\nmetadata: {name: p}\nspec: {pathPrefix: /a/, backend: {fs: {root: a}}}\n";
        let (p, s) = parse_manifests(y, "t").unwrap();
        assert_eq!((p.len(), s.len()), (1, 1));
        assert!(
            parse_manifests(
                "apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\nspec: 3\n",
                "t"
            )
            .is_err()
        );
        assert!(parse_manifests("a: [", "t").is_err());
    }
}
