//! The `UploadPolicy` custom resource (group `sluice.dev`, version `v1alpha1`).
//!
//! These types are the user-facing contract: the YAML a user `kubectl apply`s
//! and the standalone proxy reads from disk. Fields are camelCase in YAML and
//! mostly optional with documented defaults, so a minimal policy is three
//! lines. Semantic checks live in `compile`, not in serde, so one bad policy
//! is reported on its own status instead of failing a whole directory load.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// CEL for a size quantity as `quantity::parse_bytes` takes it: an integer with an
/// optional binary or decimal suffix (no fractions, no exponents).
const SIZE_RULE: &str = "self.matches('^[0-9]+(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$')";
const SIZE_MESSAGE: &str = "must be a whole size such as 512, 10Mi or 1G";
/// The same, and not zero.
const POSITIVE_SIZE_RULE: &str = "self.matches('^0*[1-9][0-9]*(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$')";
const POSITIVE_SIZE_MESSAGE: &str = "must be a positive whole size such as 10Mi or 1G";

/// Who may upload and download under a path prefix, which files, how big, and where they go.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "UploadPolicy",
    namespaced,
    status = "UploadPolicyStatus",
    shortname = "upol",
    printcolumn = r#"{"name":"Hosts","type":"string","jsonPath":".spec.hosts"}"#,
    printcolumn = r#"{"name":"Prefix","type":"string","jsonPath":".spec.pathPrefix"}"#,
    printcolumn = r#"{"name":"Backend","type":"string","jsonPath":".status.backend"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct UploadPolicySpec {
    /// Host names this policy applies to (exact, or `*.example.com`). Empty: any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// URL path prefix, starting and ending with `/`. Longest matching prefix wins.
    #[x_kube(validation = Rule::new("self.startsWith('/') && self.endsWith('/')").message("pathPrefix must start and end with '/'"))]
    pub path_prefix: String,
    /// Where accepted files are stored. Exactly one kind.
    pub backend: BackendSpec,
    #[serde(default)]
    pub upload: UploadSpec,
    #[serde(default)]
    pub download: DownloadSpec,
    /// Credentials required for upload and download. Absent: anonymous access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// Cross-origin requests from web pages (the Fetch standard's CORS protocol):
    /// preflights answered before auth, and the `Access-Control-*` headers on
    /// every answer to an allowed origin. Absent: no CORS headers at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsSpec>,
}

/// Which web pages may call this policy's prefix from another origin.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorsSpec {
    /// Exact origins, `scheme://host[:port]` as browsers send them (lowercase, no
    /// path, no trailing slash, no default port), or `"*"` for any origin (not with
    /// `allowCredentials`).
    pub allowed_origins: Vec<String>,
    /// Methods a preflight may ask for. Default: GET, HEAD, PUT, POST (the methods
    /// sluice serves); OPTIONS, the preflight itself, is always answered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_methods: Vec<String>,
    /// Request headers a page may send (case-insensitive), or `"*"` for any but
    /// `Authorization`, which is always named (not with `allowCredentials`).
    /// Default: the headers sluice reads: authorization, x-api-key,
    /// content-type, range, if-match, if-none-match, if-modified-since,
    /// if-unmodified-since, if-range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_headers: Option<Vec<String>>,
    /// Response headers a page may read besides the ones sluice always exposes
    /// (etag, content-range, accept-ranges, retry-after, allow, www-authenticate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// Seconds a browser may cache a preflight's answer (browsers cap it: Chromium at 7200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u32>,
    /// Let pages send cookies and HTTP authentication (`credentials: "include"`)
    /// and read the answers. Default false.
    #[serde(default)]
    pub allow_credentials: bool,
}

/// Exactly one of `fs`, `http`, `s3`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.fs), has(self.http), has(self.s3)].filter(k, k).size() == 1").message("exactly one of backend.fs, backend.http, backend.s3"))]
pub struct BackendSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsBackendSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpBackendSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3BackendSpec>,
}

impl BackendSpec {
    /// `fs`, `http` or `s3` (the first set; `none` when none is, which validation refuses).
    pub fn kind(&self) -> &'static str {
        if self.fs.is_some() {
            "fs"
        } else if self.http.is_some() {
            "http"
        } else if self.s3.is_some() {
            "s3"
        } else {
            "none"
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FsBackendSpec {
    /// Directory objects are stored under. Relative paths are resolved against the proxy's data directory.
    pub root: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpBackendSpec {
    /// Base URL of the storage engine.
    pub url: String,
    #[serde(default)]
    pub mode: HttpMode,
    /// Form field name of the file part in `multipart` mode. Default `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_name: Option<String>,
    /// Extra request headers sent to the engine.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Buffer bodies of unknown length (memory, then disk) to send a Content-Length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool: Option<SpoolSpec>,
    /// Base URL downloads are read from (`GET {downloadUrl}/{key}`). Default: `url`.
    /// Upload servers in multipart mode often take uploads at one URL and serve files at another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
    /// TLS to an `https://` engine: extra trusted CAs, a client certificate, the name verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<EngineTlsSpec>,
}

/// How an `https://` engine is verified and what the proxy presents to it. The
/// engine's certificate is always verified: against the system's roots plus
/// `caSecretRef`, for the URL's host or `serverName`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EngineTlsSpec {
    /// A PEM bundle of CA certificates trusted for this engine besides the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`): the client certificate for engines that require mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret_ref: Option<SecretRef>,
    /// The name verified in the engine's certificate and sent as SNI, instead of the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum HttpMode {
    /// `PUT {url}/{key}`
    #[default]
    Put,
    /// multipart/form-data `POST {url}`, one request per file; the engine names it by its filename.
    Multipart,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpoolSpec {
    /// Bytes kept in memory before spilling to disk (quantity, may be 0).
    #[x_kube(validation = Rule::new(SIZE_RULE).message(SIZE_MESSAGE))]
    pub memory: String,
    /// Most bytes spooled in all (quantity, positive).
    #[x_kube(validation = Rule::new(POSITIVE_SIZE_RULE).message(POSITIVE_SIZE_MESSAGE))]
    pub disk: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3BackendSpec {
    pub endpoint: String,
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// Secret with `accessKeyId` and `secretAccessKey`. Absent: the proxy's AWS
    /// credential chain (environment, IRSA web identity, EKS Pod Identity or ECS
    /// container credentials, EC2 instance metadata), refreshed before it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<SecretRef>,
    /// Path-style addressing (`{endpoint}/{bucket}/{key}`). Default true; false uses virtual-host style.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    /// TLS to an `https://` endpoint: extra trusted CAs, a client certificate, the name verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<EngineTlsSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadSpec {
    /// Largest accepted file, as a quantity (`10Mi`). Default `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(POSITIVE_SIZE_RULE).message(POSITIVE_SIZE_MESSAGE))]
    pub max_file_size: Option<String>,
    /// Most file parts in one multipart request. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("maxFiles must be at least 1"))]
    pub max_files: Option<u32>,
    /// Allowed content types, wildcards allowed (`image/*`). Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_types: Vec<String>,
    /// Allowed filename extensions, without the dot. Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_extensions: Vec<String>,
    /// Sniff the first bytes: the sniffed type must be allowed and agree with the declared one.
    #[serde(default)]
    pub verify_content: bool,
    #[serde(default)]
    pub naming: Naming,
    #[serde(default)]
    pub checksum: Checksum,
}

/// How a multipart file part's object key is chosen.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Naming {
    /// The sanitised client filename.
    #[default]
    Original,
    /// A random UUID, keeping the sanitised extension.
    Uuid,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Checksum {
    #[default]
    Sha256,
    None,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DownloadSpec {
    /// Serve GET/HEAD under the prefix. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for DownloadSpec {
    fn default() -> Self {
        Self { enabled: true }
    }
}

fn yes() -> bool {
    true
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Every value in the referenced Secret is an accepted API key (`Authorization: Bearer` or `X-Api-Key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<ApiKeysSpec>,
    /// Bearer JWTs signed with RS256, ES256 or EdDSA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSpec>,
    /// Signed URLs and signed HTML forms: every value of the referenced Secret is an
    /// HMAC-SHA256 key (a signature made with any of them is accepted, so keys rotate by
    /// adding the new one, then removing the old).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_urls: Option<SignedUrlsSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignedUrlsSpec {
    pub secret_ref: SecretRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeysSpec {
    pub secret_ref: SecretRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtSpec {
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    pub public_key_secret_ref: SecretKeyRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretRef {
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxies: Option<ProxiesStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_version: Option<String>,
    /// The backend kind (`fs`, `http`, `s3`), for `kubectl get`'s Backend column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ProxiesStatus {
    pub ready: u32,
    pub synced: u32,
}
