//! compile(): every UploadPolicy (+ the Secrets they name) -> one ProxyConfig.
//!
//! ```text
//!   policies, sorted oldest first (creationTimestamp, then namespace/name)
//!     -> validate spec            (Invalid: the first problem, in words)
//!     -> resolve Secrets          (SecretNotFound; API keys hashed here)
//!     -> claim (hosts, prefix)    (Conflicted: an older policy holds it)
//!     -> Route
//! ```
//!
//! A bad policy only ever affects its own outcome: the others compile as if it
//! were absent. Order by age makes conflicts stable: adding a policy can never
//! take a route away from one that already had it.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use sha2::{Digest, Sha256};

use crate::config::{
    Backend, EngineTls, JwtRule, ProxyConfig, Route, RouteAuth, RouteCors, S3Credentials, Spool,
    UploadRules,
};
use crate::crd::{BackendSpec, CorsSpec, EngineTlsSpec, UploadPolicy, UploadPolicySpec};
use crate::quantity::parse_bytes;

/// Used when a policy omits `upload.maxFileSize`.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 1 << 30;
/// Used when a policy omits `upload.maxFiles`.
pub const DEFAULT_MAX_FILES: u32 = 10;
/// Used when `cors` omits `allowedMethods`: the methods sluice serves.
pub const DEFAULT_CORS_METHODS: &[&str] = &["GET", "HEAD", "PUT", "POST"];
/// Used when `cors` omits `allowedHeaders`: the request headers sluice reads.
pub const DEFAULT_CORS_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "content-type",
    "range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
];

/// `namespace/name`.
pub type PolicyKey = String;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Invalid(String),
    /// Holds the key of the older policy that owns the route.
    Conflicted(PolicyKey),
    SecretNotFound(String),
}

impl Outcome {
    /// The `Accepted` condition's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Outcome::Accepted => "Accepted",
            Outcome::Invalid(_) => "Invalid",
            Outcome::Conflicted(_) => "Conflicted",
            Outcome::SecretNotFound(_) => "SecretNotFound",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Outcome::Accepted => "policy compiled into the proxy configuration".into(),
            Outcome::Invalid(m) => m.clone(),
            Outcome::Conflicted(by) => {
                format!("an older policy, {by}, already claims the same host and path prefix")
            }
            Outcome::SecretNotFound(m) => m.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub config: ProxyConfig,
    pub outcomes: BTreeMap<PolicyKey, Outcome>,
}

pub fn key_of(p: &UploadPolicy) -> PolicyKey {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or("default"),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

/// Takes the policies and Secrets as owned values or shared (`Arc`), so the
/// operator compiles straight from its watch caches without copying them.
pub fn compile<P: Borrow<UploadPolicy>, S: Borrow<Secret>>(
    policies: &[P],
    secrets: &[S],
) -> Compiled {
    let mut ordered: Vec<&UploadPolicy> = policies.iter().map(Borrow::borrow).collect();
    ordered.sort_by(|a, b| {
        let ta = a.metadata.creation_timestamp.as_ref().map(|t| &t.0);
        let tb = b.metadata.creation_timestamp.as_ref().map(|t| &t.0);
        ta.cmp(&tb).then_with(|| key_of(a).cmp(&key_of(b)))
    });

    let mut routes: Vec<Route> = Vec::new();
    let mut outcomes = BTreeMap::new();
    for p in ordered {
        let key = key_of(p);
        let outcome = match compile_one(p, secrets) {
            Err(o) => o,
            Ok(route) => match routes.iter().find(|r| claims_overlap(r, &route)) {
                Some(owner) => Outcome::Conflicted(owner.policy.clone()),
                None => {
                    routes.push(route);
                    Outcome::Accepted
                }
            },
        };
        outcomes.insert(key, outcome);
    }
    Compiled {
        config: ProxyConfig::new(routes),
        outcomes,
    }
}

/// Same prefix and at least one host in common (an empty host list is every host).
fn claims_overlap(a: &Route, b: &Route) -> bool {
    a.path_prefix == b.path_prefix
        && (a.hosts.is_empty() && b.hosts.is_empty() || a.hosts.iter().any(|h| b.hosts.contains(h)))
}

fn compile_one<S: Borrow<Secret>>(p: &UploadPolicy, secrets: &[S]) -> Result<Route, Outcome> {
    let spec = &p.spec;
    validate(spec).map_err(Outcome::Invalid)?;
    let ns = p.metadata.namespace.as_deref().unwrap_or("default");
    let secret = |name: &str| -> Result<BTreeMap<String, Vec<u8>>, Outcome> {
        secrets
            .iter()
            .map(Borrow::borrow)
            .find(|s| {
                s.metadata.name.as_deref() == Some(name)
                    && s.metadata.namespace.as_deref().unwrap_or("default") == ns
            })
            .map(secret_data)
            .ok_or_else(|| Outcome::SecretNotFound(format!("Secret {ns}/{name} not found")))
    };

    let u = &spec.upload;
    let upload = UploadRules {
        max_file_size: match &u.max_file_size {
            Some(q) => {
                parse_bytes(q).map_err(|e| Outcome::Invalid(format!("upload.maxFileSize: {e}")))?
            }
            None => DEFAULT_MAX_FILE_SIZE,
        },
        max_files: u.max_files.unwrap_or(DEFAULT_MAX_FILES),
        allowed_types: u
            .allowed_types
            .iter()
            .map(|t| t.trim().to_ascii_lowercase())
            .collect(),
        allowed_extensions: u
            .allowed_extensions
            .iter()
            .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
            .collect(),
        verify_content: u.verify_content,
        naming: u.naming,
        checksum: u.checksum,
    };

    let backend = compile_backend(&spec.backend, &secret)?;

    let auth = match &spec.auth {
        None => None,
        Some(a) => {
            let mut out = RouteAuth::default();
            if let Some(k) = &a.api_keys {
                let data = secret(&k.secret_ref.name)?;
                out.api_key_sha256 = data
                    .values()
                    .map(|v| trim_ascii(v))
                    .filter(|v| !v.is_empty())
                    .map(|v| hex::encode(Sha256::digest(v)))
                    .collect();
                out.api_key_sha256.sort();
                out.api_key_sha256.dedup();
                if out.api_key_sha256.is_empty() {
                    return Err(Outcome::Invalid(format!(
                        "auth.apiKeys: Secret {ns}/{} holds no keys",
                        k.secret_ref.name
                    )));
                }
            }
            if let Some(s) = &a.signed_urls {
                let data = secret(&s.secret_ref.name)?;
                out.signing_keys_hex = data
                    .values()
                    .map(|v| signing_key(v))
                    .filter(|v| !v.is_empty())
                    .map(hex::encode)
                    .collect();
                out.signing_keys_hex.sort();
                out.signing_keys_hex.dedup();
                if out.signing_keys_hex.is_empty() {
                    return Err(Outcome::Invalid(format!(
                        "auth.signedUrls: Secret {ns}/{} holds no keys",
                        s.secret_ref.name
                    )));
                }
            }
            if let Some(j) = &a.jwt {
                let r = &j.public_key_secret_ref;
                let data = secret(&r.name)?;
                let pem = data.get(&r.key).ok_or_else(|| {
                    Outcome::SecretNotFound(format!(
                        "Secret {ns}/{} has no key {:?}",
                        r.name, r.key
                    ))
                })?;
                let pem = String::from_utf8(pem.clone())
                    .ok()
                    .filter(|p| p.contains("-----BEGIN ") && p.contains("PUBLIC KEY-----"))
                    .ok_or_else(|| {
                        Outcome::Invalid(format!(
                            "auth.jwt: {}/{} is not a PEM public key",
                            r.name, r.key
                        ))
                    })?;
                out.jwt = Some(JwtRule {
                    issuer: j.issuer.clone(),
                    audiences: j.audiences.clone(),
                    public_key_pem: pem,
                });
            }
            Some(out)
        }
    };

    Ok(Route {
        policy: key_of(p),
        generation: p.metadata.generation.unwrap_or(0),
        hosts: spec.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        path_prefix: spec.path_prefix.clone(),
        backend,
        upload,
        download_enabled: spec.download.enabled,
        auth,
        cors: spec
            .cors
            .as_ref()
            .map(compile_cors)
            .transpose()
            .map_err(Outcome::Invalid)?,
    })
}

/// `spec.cors` with its defaults filled in and names normalised, then checked
/// (`validate_cors`). Origins are kept as written, so that one in capitals is
/// reported rather than silently matched.
pub fn compile_cors(c: &CorsSpec) -> Result<RouteCors, String> {
    fn dedup(v: impl IntoIterator<Item = String>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for x in v {
            if !out.contains(&x) {
                out.push(x);
            }
        }
        out
    }
    let methods: Vec<String> = if c.allowed_methods.is_empty() {
        DEFAULT_CORS_METHODS.iter().map(|m| m.to_string()).collect()
    } else {
        c.allowed_methods
            .iter()
            .map(|m| m.trim().to_string())
            .collect()
    };
    let headers: Vec<String> = match &c.allowed_headers {
        None => DEFAULT_CORS_HEADERS.iter().map(|h| h.to_string()).collect(),
        Some(h) => h.iter().map(|h| h.trim().to_ascii_lowercase()).collect(),
    };
    let out = RouteCors {
        allowed_origins: dedup(c.allowed_origins.iter().map(|o| o.trim().to_string())),
        allowed_methods: dedup(methods),
        allowed_headers: dedup(headers),
        expose_headers: dedup(
            c.expose_headers
                .iter()
                .map(|h| h.trim().to_ascii_lowercase()),
        ),
        max_age: c.max_age,
        allow_credentials: c.allow_credentials,
    };
    validate_cors(&out)?;
    Ok(out)
}

/// A route's CORS rules as the Fetch standard lets a browser use them; the
/// first problem, naming the field.
pub fn validate_cors(c: &RouteCors) -> Result<(), String> {
    if c.allowed_origins.is_empty() {
        return Err(
            "cors.allowedOrigins: name at least one origin (https://app.example.com) or \"*\", or leave cors out"
                .into(),
        );
    }
    for (i, o) in c.allowed_origins.iter().enumerate() {
        if o != "*" {
            validate_origin(o).map_err(|e| format!("cors.allowedOrigins[{i}]: {o:?} {e}"))?;
        }
    }
    if c.allow_credentials {
        // A browser refuses `*` in any of these on a request with credentials
        // (Fetch, "CORS protocol and credentials"): the policy could never work.
        let star = |v: &[String]| v.iter().any(|x| x == "*");
        for (field, v) in [
            ("allowedOrigins", &c.allowed_origins),
            ("allowedHeaders", &c.allowed_headers),
            ("exposeHeaders", &c.expose_headers),
        ] {
            if star(v) {
                return Err(format!(
                    "cors.{field}: \"*\" cannot be combined with cors.allowCredentials: true \
                     (browsers refuse a wildcard on requests with credentials); name them exactly"
                ));
            }
        }
    }
    for (i, m) in c.allowed_methods.iter().enumerate() {
        if !matches!(m.as_str(), "GET" | "HEAD" | "PUT" | "POST" | "OPTIONS") {
            return Err(format!(
                "cors.allowedMethods[{i}]: {m:?} is not a method sluice serves; \
                 use GET, HEAD, PUT, POST (upper case: methods are case-sensitive)"
            ));
        }
    }
    for (field, v) in [
        ("allowedHeaders", &c.allowed_headers),
        ("exposeHeaders", &c.expose_headers),
    ] {
        for (i, h) in v.iter().enumerate() {
            if h != "*" && !is_token(h) {
                return Err(format!("cors.{field}[{i}]: {h:?} is not a header name"));
            }
        }
    }
    Ok(())
}

/// An HTTP token (RFC 9110): header names and methods.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// An origin as a browser serialises it in `Origin`: `scheme://host[:port]`,
/// lowercase, no default port. Anything else never matches a request, so it
/// is refused here rather than silently ignored. The reason, without the value.
fn validate_origin(o: &str) -> Result<(), String> {
    let Some((scheme, rest)) = o.split_once("://") else {
        return Err(
            "is not an origin: write scheme://host[:port], such as https://app.example.com".into(),
        );
    };
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok {
        return Err(format!("has no valid scheme ({scheme:?})"));
    }
    if rest.is_empty() {
        return Err("has no host".into());
    }
    if rest.contains(['/', '?', '#']) {
        return Err(
            "has a path, a trailing slash, a query or a fragment: an origin is scheme://host[:port] only"
                .into(),
        );
    }
    if rest.contains('@') {
        return Err("has user information: an origin is scheme://host[:port] only".into());
    }
    if o.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "has capitals: browsers send origins in lower case ({:?}), and origins are compared exactly",
            o.to_ascii_lowercase()
        ));
    }
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) = v6
                .split_once(']')
                .ok_or_else(|| "has an IPv6 address without its closing ']'".to_string())?;
            if addr.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("has {addr:?}, which is not an IPv6 address"));
            }
            match after {
                "" => (None, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (None, Some(p)),
                    None => {
                        return Err(
                            "has something after the IPv6 address that is not a port".into()
                        );
                    }
                },
            }
        }
        None => match rest.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(rest), None),
        },
    };
    if let Some(h) = host {
        let ok = h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
        if !ok || h.len() > 253 {
            return Err(format!(
                "has {h:?}, which is not a host name or IPv4 address"
            ));
        }
    }
    if let Some(p) = port {
        let n: u16 = p
            .parse()
            .ok()
            .filter(|n| *n > 0 && !p.starts_with('0'))
            .ok_or_else(|| format!("has port {p:?}, which is not a port number (1-65535)"))?;
        if (scheme == "https" && n == 443) || (scheme == "http" && n == 80) {
            return Err(format!(
                "names the default port: browsers leave it out of Origin, so write {scheme}://{}",
                host.unwrap_or("host")
            ));
        }
    }
    Ok(())
}

/// A Secret's data by name, or the outcome that explains why there is none.
type SecretLookup<'a> = dyn Fn(&str) -> Result<BTreeMap<String, Vec<u8>>, Outcome> + 'a;

fn compile_backend(b: &BackendSpec, secret: &SecretLookup<'_>) -> Result<Backend, Outcome> {
    if let Some(fs) = &b.fs {
        return Ok(Backend::Fs {
            root: fs.root.clone(),
        });
    }
    if let Some(h) = &b.http {
        let spool = match &h.spool {
            None => None,
            Some(s) => Some(Spool {
                memory: parse_bytes(&s.memory)
                    .map_err(|e| Outcome::Invalid(format!("backend.http.spool.memory: {e}")))?,
                disk: parse_bytes(&s.disk)
                    .map_err(|e| Outcome::Invalid(format!("backend.http.spool.disk: {e}")))?,
            }),
        };
        return Ok(Backend::Http {
            url: h.url.trim_end_matches('/').to_string(),
            download_url: h
                .download_url
                .as_deref()
                .unwrap_or(&h.url)
                .trim_end_matches('/')
                .to_string(),
            mode: h.mode,
            field_name: h.field_name.clone().unwrap_or_else(|| "file".into()),
            headers: h
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            spool,
            tls: compile_tls(
                "backend.http",
                [Some(h.url.as_str()), h.download_url.as_deref()],
                h.tls.as_ref(),
                secret,
            )?,
        });
    }
    if let Some(s) = &b.s3 {
        let credentials = match &s.credentials_secret {
            None => S3Credentials::Chain,
            Some(r) => {
                let data = secret(&r.name)?;
                let get = |k: &str| {
                    data.get(k)
                        .and_then(|v| String::from_utf8(trim_ascii(v).to_vec()).ok())
                        .ok_or_else(|| {
                            Outcome::SecretNotFound(format!("Secret {} has no key {k:?}", r.name))
                        })
                };
                S3Credentials::Static {
                    access_key_id: get("accessKeyId")?,
                    secret_access_key: get("secretAccessKey")?,
                }
            }
        };
        return Ok(Backend::S3 {
            endpoint: s.endpoint.trim_end_matches('/').to_string(),
            bucket: s.bucket.clone(),
            region: s.region.clone().unwrap_or_else(|| "us-east-1".into()),
            key_prefix: s.key_prefix.clone().unwrap_or_default(),
            path_style: s.path_style.unwrap_or(true),
            credentials,
            tls: compile_tls(
                "backend.s3",
                [Some(s.endpoint.as_str()), None],
                s.tls.as_ref(),
                secret,
            )?,
        });
    }
    Err(Outcome::Invalid(
        "backend: exactly one of fs, http, s3 is required".into(),
    ))
}

/// An engine's `tls`: its Secrets read, their PEMs checked. `urls`: the
/// backend's engine URLs; `tls` needs one of them to be https.
fn compile_tls(
    field: &str,
    urls: [Option<&str>; 2],
    spec: Option<&EngineTlsSpec>,
    secret: &SecretLookup<'_>,
) -> Result<Option<EngineTls>, Outcome> {
    let Some(spec) = spec else { return Ok(None) };
    let invalid = |m: String| Outcome::Invalid(format!("{field}.tls: {m}"));
    if !urls.iter().flatten().any(|u| u.starts_with("https://")) {
        return Err(invalid(
            "applies only to https:// engines; this backend's URL is http://".into(),
        ));
    }
    let mut out = EngineTls::default();
    if let Some(r) = &spec.ca_secret_ref {
        let data = secret(&r.name)?;
        let pem = data.get(&r.key).ok_or_else(|| {
            Outcome::SecretNotFound(format!("Secret {} has no key {:?}", r.name, r.key))
        })?;
        crate::pem::ca_bundle(pem)
            .map_err(|e| invalid(format!("caSecretRef {}/{}: {e}", r.name, r.key)))?;
        out.ca_pem = Some(pem_text(pem, &invalid)?);
    }
    if let Some(r) = &spec.client_cert_secret_ref {
        let data = secret(&r.name)?;
        let get = |k: &str| {
            data.get(k).ok_or_else(|| {
                Outcome::SecretNotFound(format!(
                    "Secret {} has no key {k:?} (a kubernetes.io/tls Secret has tls.crt and tls.key)",
                    r.name
                ))
            })
        };
        let (crt, key) = (get("tls.crt")?, get("tls.key")?);
        crate::pem::client_pair(crt, key)
            .map_err(|e| invalid(format!("clientCertSecretRef {}: {e}", r.name)))?;
        out.client_cert_pem = Some(pem_text(crt, &invalid)?);
        out.client_key_pem = Some(pem_text(key, &invalid)?);
    }
    if let Some(n) = &spec.server_name {
        crate::pem::server_name(n).map_err(|e| invalid(format!("serverName: {e}")))?;
        out.server_name = Some(n.clone());
    }
    Ok(Some(out))
}

/// PEM is ASCII: anything else did not parse above either.
fn pem_text(pem: &[u8], invalid: &dyn Fn(String) -> Outcome) -> Result<String, Outcome> {
    String::from_utf8(pem.to_vec()).map_err(|_| invalid("a PEM that is not text".into()))
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    // stringData is write-only on a real API server but is what people write in files on disk.
    for (k, v) in s.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    out
}

/// Secrets made from files often end in a newline nobody means as part of the key.
fn trim_ascii(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

/// An HMAC key as a Secret value or a `--secret-file` holds it: the bytes,
/// without the trailing line ends (`\n`, `\r\n`) an editor or `echo` adds.
/// Nothing else is trimmed: a key is bytes, and spaces may be part of it.
pub fn signing_key(v: &[u8]) -> &[u8] {
    let mut end = v.len();
    while end > 0 && matches!(v[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &v[..end]
}

/// Semantic checks a schema cannot express; the first problem found, in words.
pub fn validate(spec: &UploadPolicySpec) -> Result<(), String> {
    validate_prefix(&spec.path_prefix)?;
    for h in &spec.hosts {
        validate_host(h)?;
    }
    validate_rest(spec)
}

/// A path prefix routes can be matched on: `/a/b/`.
pub fn validate_prefix(p: &str) -> Result<(), String> {
    if !p.starts_with('/') || !p.ends_with('/') {
        return Err(format!("pathPrefix {p:?} must start and end with '/'"));
    }
    if p.contains("//") || p.split('/').any(|s| s == ".." || s == ".") {
        return Err(format!(
            "pathPrefix {p:?} must not contain empty, '.' or '..' segments"
        ));
    }
    if p.bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#' || b == b'%')
    {
        return Err(format!(
            "pathPrefix {p:?} must be a plain path (no spaces, '?', '#', '%' or control characters)"
        ));
    }
    Ok(())
}

/// A host name, or `*.domain`.
pub fn validate_host(h: &str) -> Result<(), String> {
    {
        let bare = h.strip_prefix("*.").unwrap_or(h);
        let ok = !bare.is_empty()
            && bare.len() <= 253
            && bare.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            return Err(format!("hosts: {h:?} is not a host name (or *.domain)"));
        }
    }
    Ok(())
}

/// An fs root: a directory under the proxy's data dir, never above it.
pub fn validate_fs_root(root: &str) -> Result<(), String> {
    let climbs = std::path::Path::new(root)
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir));
    if root.trim().is_empty() || climbs {
        return Err(format!(
            "backend.fs.root {root:?} must be a plain directory under the data dir (not empty, no '..')"
        ));
    }
    Ok(())
}

fn validate_rest(spec: &UploadPolicySpec) -> Result<(), String> {
    let b = &spec.backend;
    let kinds = [b.fs.is_some(), b.http.is_some(), b.s3.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if kinds != 1 {
        return Err(format!(
            "backend: exactly one of fs, http, s3 is required ({kinds} given)"
        ));
    }
    if let Some(fs) = &b.fs {
        validate_fs_root(&fs.root)?;
    }
    if let Some(h) = &b.http {
        if !(h.url.starts_with("http://") || h.url.starts_with("https://")) || h.url.len() < 10 {
            return Err(format!(
                "backend.http.url {:?} must be an http:// or https:// URL",
                h.url
            ));
        }
        if let Some(d) = &h.download_url
            && !(d.starts_with("http://") || d.starts_with("https://"))
        {
            return Err(format!(
                "backend.http.downloadUrl {d:?} must be an http:// or https:// URL"
            ));
        }
        if let Some(f) = &h.field_name
            && (f.is_empty() || f.contains(['"', '\r', '\n']))
        {
            return Err(format!(
                "backend.http.fieldName {f:?} is not a usable form field name"
            ));
        }
    }
    if let Some(s) = &b.s3 {
        if !(s.endpoint.starts_with("http://") || s.endpoint.starts_with("https://")) {
            return Err(format!(
                "backend.s3.endpoint {:?} must be an http:// or https:// URL",
                s.endpoint
            ));
        }
        if s.bucket.is_empty() {
            return Err("backend.s3.bucket must not be empty".into());
        }
    }
    let u = &spec.upload;
    if let Some(q) = &u.max_file_size {
        match parse_bytes(q) {
            Ok(0) => return Err("upload.maxFileSize must be positive".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("upload.maxFileSize: {e}")),
        }
    }
    if u.max_files == Some(0) {
        return Err("upload.maxFiles must be positive".into());
    }
    for t in &u.allowed_types {
        let t = t.trim();
        let ok = match t.split_once('/') {
            Some((a, b)) => {
                let tok = |s: &str| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&c))
                };
                (a == "*" && b == "*") || (tok(a) && (b == "*" || tok(b)))
            }
            None => false,
        };
        if !ok {
            return Err(format!(
                "upload.allowedTypes: {t:?} is not a media type such as image/png, image/* or */*"
            ));
        }
    }
    for e in &u.allowed_extensions {
        let e = e.trim().trim_start_matches('.');
        if e.is_empty() || e.contains(['/', '\\', '.']) || e.bytes().any(|b| b.is_ascii_control()) {
            return Err(format!(
                "upload.allowedExtensions: {e:?} is not a file extension"
            ));
        }
    }
    if let Some(c) = &spec.cors {
        compile_cors(c)?;
    }
    if let Some(a) = &spec.auth {
        if a.api_keys.is_none() && a.jwt.is_none() && a.signed_urls.is_none() {
            return Err(
                "auth: name apiKeys, jwt or signedUrls (or leave auth out for anonymous access)"
                    .into(),
            );
        }
        if let Some(j) = &a.jwt
            && j.issuer.is_empty()
        {
            return Err("auth.jwt.issuer must not be empty".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
