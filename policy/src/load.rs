//! A policies folder's YAML -> the documents it holds, decoded strictly, each
//! decode error kept to its own document; then compiled.
//!
//! ```text
//!   (file, text)*  --YAML-->  documents       a file that is not YAML: YamlSyntax, all of it out
//!     -> apiVersion/kind:  UploadPolicy | Secret | another kind (ignored; a folder may hold more)
//!     -> UploadPolicy: walked against the CRD's openAPIV3Schema, as the API server checks a
//!        `kubectl apply`: UnknownField (+ the nearest known one), InvalidField, MissingField
//!     -> serde (with the path) for what the walk leaves to it: ranges, timestamps
//!     -> compile(): value errors and conflicts, placed at their file and document
//! ```
//!
//! The field names come from `UploadPolicy::crd()` itself, never from a list kept
//! by hand, so the check cannot drift from the CRD. It runs here rather than as
//! `deny_unknown_fields` on the types: the operator decodes the same types from
//! the API server, where a newer CRD's extra fields must not break an older
//! operator. Pure: no IO, and no input makes it panic (a fuzz target drives
//! [`compile_folder`]).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use k8s_openapi::api::core::v1::Secret;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::compile::{Outcome, PolicyKey, compile, key_of};
use crate::config::ProxyConfig;
use crate::crd::UploadPolicy;

const API_VERSION: &str = "sluice.dev/v1alpha1";
const KIND: &str = "UploadPolicy";
const GROUP: &str = "sluice.dev/";

/// Why a document was not decoded. Variant names are stable: they are the
/// `reason` of a `policy not accepted` log line and of `/readyz`, beside
/// compile's own (`Invalid`, `Conflicted`, `SecretNotFound`), hence CamelCase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The file is not YAML; none of its documents is read.
    #[error("not YAML: {0}")]
    YamlSyntax(String),
    /// A field the CRD does not have.
    #[error("unknown field {path:?}{}", did_you_mean(.nearest))]
    UnknownField {
        path: String,
        nearest: Option<String>,
    },
    /// A field of the wrong type, or a value outside its enum or range.
    #[error("{path}: {message}")]
    InvalidField { path: String, message: String },
    /// A required field is absent (or null).
    #[error("{path}: required field missing")]
    MissingField { path: String },
    /// `sluice.dev` has no such apiVersion/kind.
    #[error("{path}: {value:?} is not a kind of sluice.dev{}", did_you_mean(.nearest))]
    UnknownKind {
        path: String,
        value: String,
        nearest: Option<String>,
    },
}

fn did_you_mean(nearest: &Option<String>) -> String {
    nearest
        .as_ref()
        .map(|n| format!(" (did you mean {n:?}?)"))
        .unwrap_or_default()
}

impl DecodeError {
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::YamlSyntax(_) => "YamlSyntax",
            DecodeError::UnknownField { .. } => "UnknownField",
            DecodeError::InvalidField { .. } => "InvalidField",
            DecodeError::MissingField { .. } => "MissingField",
            DecodeError::UnknownKind { .. } => "UnknownKind",
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            DecodeError::YamlSyntax(_) => None,
            DecodeError::UnknownField { path, .. }
            | DecodeError::InvalidField { path, .. }
            | DecodeError::MissingField { path }
            | DecodeError::UnknownKind { path, .. } => {
                Some(path.as_str()).filter(|p| !p.is_empty())
            }
        }
    }

    pub fn nearest(&self) -> Option<&str> {
        match self {
            DecodeError::UnknownField { nearest, .. }
            | DecodeError::UnknownKind { nearest, .. } => nearest.as_deref(),
            _ => None,
        }
    }
}

/// Where a document is: its file and its place there (1-based, counting the
/// file's non-empty documents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub file: String,
    pub document: usize,
}

/// A document (or a whole file) left out of the configuration, and why. This is
/// what the proxy logs and lists on `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotAccepted {
    pub file: String,
    /// None: the whole file (`YamlSyntax`).
    pub document: Option<usize>,
    /// `UploadPolicy` or `Secret`, when the document says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `namespace/name`, when the document names one.
    pub policy: Option<PolicyKey>,
    /// A [`DecodeError::reason`] or an [`Outcome::reason`].
    pub reason: &'static str,
    /// The offending field's path (`spec.upload.maxFileSzie`), when one is to blame.
    pub field: Option<String>,
    /// The known field closest to an unknown one (`maxFileSize`).
    pub nearest: Option<String>,
    pub message: String,
}

impl NotAccepted {
    /// From a document's problems: the first is the reason and field; the message
    /// has them all, so several slips are fixed in one go.
    fn decode(
        file: &str,
        document: Option<usize>,
        doc: Option<&Value>,
        e: &DecodeError,
        more: &[DecodeError],
    ) -> Self {
        let kind = doc
            .and_then(|d| d.get("kind"))
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
            .map(str::to_string);
        let meta = doc.and_then(|d| d.get("metadata"));
        let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str);
        let namespace = meta
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        NotAccepted {
            file: file.to_string(),
            document,
            kind,
            policy: name.map(|n| format!("{namespace}/{n}")),
            reason: e.reason(),
            field: e.field().map(str::to_string),
            nearest: e.nearest().map(str::to_string),
            message: std::iter::once(e)
                .chain(more)
                .map(DecodeError::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

/// A document of another kind, left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub origin: Origin,
    pub api_version: String,
    pub kind: String,
}

/// A folder's documents, decoded.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub policies: Vec<(UploadPolicy, Origin)>,
    pub secrets: Vec<(Secret, Origin)>,
    pub not_accepted: Vec<NotAccepted>,
    pub ignored: Vec<Ignored>,
    /// Files given, and how many of them were not YAML.
    pub files: usize,
    pub unparsed_files: usize,
}

impl Loaded {
    /// Files were given and none of them is YAML: nothing to isolate, the folder
    /// as a whole does not read (a file caught mid-write looks like this).
    pub fn nothing_read(&self) -> bool {
        self.files > 0 && self.unparsed_files == self.files
    }
}

/// Decodes every document of every file; each failure is one [`NotAccepted`]
/// and leaves the rest alone.
pub fn load(files: &[(String, String)]) -> Loaded {
    let mut out = Loaded {
        files: files.len(),
        ..Loaded::default()
    };
    for (file, text) in files {
        let docs: Vec<Value> = match serde_saphyr::from_multiple(text) {
            Ok(d) => d,
            Err(e) => {
                out.unparsed_files += 1;
                // Without the source snippet: it would quote the file, Secrets included,
                // into logs and /readyz.
                let e = DecodeError::YamlSyntax(e.without_snippet().to_string());
                out.not_accepted
                    .push(NotAccepted::decode(file, None, None, &e, &[]));
                continue;
            }
        };
        for (i, doc) in docs.into_iter().enumerate() {
            let origin = Origin {
                file: file.clone(),
                document: i + 1,
            };
            let str_of = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let (api, kind) = (str_of("apiVersion"), str_of("kind"));
            let decoded = match (api.as_str(), kind.as_str()) {
                (API_VERSION, KIND) => {
                    decode_policy(doc.clone()).map(|p| out.policies.push((p, origin.clone())))
                }
                ("v1", "Secret") => decode::<Secret>(doc.clone())
                    .map(|s| out.secrets.push((s, origin.clone())))
                    .map_err(|e| vec![e]),
                _ if api.starts_with(GROUP) || kind == KIND => Err(vec![unknown_kind(&api, &kind)]),
                _ => {
                    out.ignored.push(Ignored {
                        origin: origin.clone(),
                        api_version: api,
                        kind,
                    });
                    Ok(())
                }
            };
            if let Err(problems) = decoded
                && let Some((e, more)) = problems.split_first()
            {
                let n = NotAccepted::decode(file, Some(origin.document), Some(&doc), e, more);
                out.not_accepted.push(n);
            }
        }
    }
    out
}

/// A folder compiled: what the proxy serves, and every document left out.
#[derive(Debug, Clone)]
pub struct Folder {
    pub config: ProxyConfig,
    /// Policies serving, with where they came from.
    pub accepted: Vec<(PolicyKey, Origin)>,
    /// Decode errors and second definitions of a policy in folder order, then
    /// compile's refusals in policy order.
    pub not_accepted: Vec<NotAccepted>,
    pub ignored: Vec<Ignored>,
    /// See [`Loaded::nothing_read`].
    pub nothing_read: bool,
}

/// The whole pure path from a folder's files (name, YAML text) to a
/// configuration. Never fails and never panics: whatever does not decode or
/// compile is in `not_accepted`, and the rest serves.
pub fn compile_folder(files: &[(String, String)]) -> Folder {
    let loaded = load(files);
    let nothing_read = loaded.nothing_read();
    let mut not_accepted = loaded.not_accepted;
    // Two documents may name the same policy (a file copied in the folder): the
    // first serves and the others are refused. Compiled together, a second one
    // would serve a route of its own or, on the same route, replace the first's
    // outcome with a conflict with itself.
    let mut origins: BTreeMap<PolicyKey, &Origin> = BTreeMap::new();
    let mut policies: Vec<&UploadPolicy> = Vec::new();
    for (p, o) in &loaded.policies {
        let key = key_of(p);
        match origins.get(&key) {
            None => {
                origins.insert(key, o);
                policies.push(p);
            }
            Some(first) => not_accepted.push(NotAccepted {
                file: o.file.clone(),
                document: Some(o.document),
                kind: Some(KIND.into()),
                message: format!(
                    "policy {key} is defined again here; the first definition, {} document {}, is the one used",
                    first.file, first.document
                ),
                policy: Some(key),
                reason: Outcome::Conflicted(String::new()).reason(),
                field: None,
                nearest: None,
            }),
        }
    }
    let secrets: Vec<&Secret> = loaded.secrets.iter().map(|(s, _)| s).collect();
    let compiled = compile(&policies, &secrets);
    let mut accepted = Vec::new();
    for (key, outcome) in compiled.outcomes {
        let origin = origins.get(&key).map(|o| (*o).clone()).unwrap_or(Origin {
            file: String::new(),
            document: 0,
        });
        match outcome {
            Outcome::Accepted => accepted.push((key, origin)),
            o => not_accepted.push(NotAccepted {
                file: origin.file,
                document: Some(origin.document),
                kind: Some(KIND.into()),
                policy: Some(key),
                reason: o.reason(),
                field: None,
                nearest: None,
                message: o.message(),
            }),
        }
    }
    Folder {
        config: compiled.config,
        accepted,
        not_accepted,
        ignored: loaded.ignored,
        nothing_read,
    }
}

fn unknown_kind(api: &str, kind: &str) -> DecodeError {
    if api != API_VERSION {
        DecodeError::UnknownKind {
            path: "apiVersion".into(),
            value: api.into(),
            nearest: Some(API_VERSION.into()),
        }
    } else {
        DecodeError::UnknownKind {
            path: "kind".into(),
            value: kind.into(),
            nearest: nearest(kind, [KIND]),
        }
    }
}

/// Strict: the schema walk first (it sees every problem and names the nearest
/// field), serde after it for what the schema leaves to the types.
fn decode_policy(mut doc: Value) -> Result<UploadPolicy, Vec<DecodeError>> {
    let mut problems = Vec::new();
    check(&mut doc, &SCHEMA, "", &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    decode(doc).map_err(|e| vec![e])
}

fn decode<T: serde::de::DeserializeOwned>(doc: Value) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        DecodeError::InvalidField {
            path: if path == "." { String::new() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}

/// The CRD's openAPIV3Schema, with what the API server adds to every object:
/// `apiVersion`, `kind`, and `metadata` as an ObjectMeta.
///
/// Embedded as JSON generated from the types (`tests::embedded_schema_is_the_types_own`
/// fails when it is stale and says how to regenerate it), not generated at
/// run time: schemars walking `UploadPolicy` and `ObjectMeta` touches about
/// 2 MiB of code that would then stay resident in every proxy.
static SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(SCHEMA_JSON).expect("load/schema.json is JSON (a test parses it)")
});

const SCHEMA_JSON: &str = include_str!("load/schema.json");

/// What `SCHEMA` is generated from: the CRD's schema and ObjectMeta's.
#[cfg(test)]
fn generate_schema() -> Value {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(UploadPolicy::crd()).unwrap_or_default();
    let mut root = crd
        .pointer("/spec/versions/0/schema/openAPIV3Schema")
        .cloned()
        .unwrap_or_default();
    let meta = schemars::generate::SchemaSettings::openapi3()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<ObjectMeta>();
    if let Some(props) = root.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert("apiVersion".into(), serde_json::json!({"type": "string"}));
        props.insert("kind".into(), serde_json::json!({"type": "string"}));
        props.insert("metadata".into(), meta.to_value());
    }
    root
}

/// Checks `v` against schema `s` at `path`, as a structural schema is applied:
/// null where the schema does not allow it counts as absent (the API server
/// prunes it), so it is removed here too.
fn check(v: &mut Value, s: &Value, path: &str, out: &mut Vec<DecodeError>) {
    if s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(v.is_string() || is_integer(v)) {
            out.push(wrong_type(path, "integer or string", v));
        }
        return;
    }
    let Some(ty) = s.get("type").and_then(Value::as_str) else {
        return; // untyped (preserve-unknown-fields): anything goes
    };
    match (ty, v) {
        ("object", Value::Object(m)) => check_object(m, s, path, out),
        ("array", Value::Array(items)) => {
            if let Some(item) = s.get("items") {
                for (i, v) in items.iter_mut().enumerate() {
                    check(v, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        ("string", Value::String(x)) => {
            if let Some(allowed) = s.get("enum").and_then(Value::as_array)
                && !allowed.iter().any(|a| a.as_str() == Some(x))
            {
                let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
                let near = nearest(x, allowed.iter().filter_map(Value::as_str));
                out.push(DecodeError::InvalidField {
                    path: path.into(),
                    message: format!(
                        "unsupported value {x:?}{}; supported values: {}",
                        did_you_mean(&near),
                        list.join(", ")
                    ),
                });
            }
        }
        ("integer", v) if is_integer(v) => {}
        ("number", Value::Number(_)) | ("boolean", Value::Bool(_)) => {}
        (_, Value::Null) if nullable(s) => {}
        (ty, v) => out.push(wrong_type(path, ty, v)),
    }
}

fn check_object(m: &mut Map<String, Value>, s: &Value, path: &str, out: &mut Vec<DecodeError>) {
    let props = s.get("properties").and_then(Value::as_object);
    let additional = s.get("additionalProperties");
    let schema_of = |k: &str| {
        props
            .and_then(|p| p.get(k))
            .or(additional.filter(|a| a.is_object()))
    };
    // Unknown fields stay, null or not, to be reported.
    m.retain(|k, v| !v.is_null() || schema_of(k).is_none_or(nullable));
    let open = additional == Some(&Value::Bool(true))
        || s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    for (k, v) in m.iter_mut() {
        let at = if path.is_empty() {
            k.clone()
        } else if props.is_some_and(|p| p.contains_key(k)) {
            format!("{path}.{k}")
        } else {
            format!("{path}[{k}]")
        };
        match schema_of(k) {
            Some(child) => check(v, child, &at, out),
            // An object declaring no fields (FieldsV1), or a free-form map: anything.
            None if props.is_none() || open => {}
            None => out.push(DecodeError::UnknownField {
                nearest: props.and_then(|p| nearest(k, p.keys().map(String::as_str))),
                path: if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                },
            }),
        }
    }
    for r in s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(r) = r.as_str()
            && !m.contains_key(r)
        {
            out.push(DecodeError::MissingField {
                path: if path.is_empty() {
                    r.into()
                } else {
                    format!("{path}.{r}")
                },
            });
        }
    }
}

fn is_integer(v: &Value) -> bool {
    v.as_i64().is_some() || v.as_u64().is_some()
}

fn nullable(s: &Value) -> bool {
    s.get("nullable") == Some(&Value::Bool(true))
}

fn wrong_type(path: &str, want: &str, v: &Value) -> DecodeError {
    let got = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    DecodeError::InvalidField {
        path: path.into(),
        message: format!("must be of type {want}, not {got}"),
    }
}

/// The known name closest to `given` (case and one transposition counting
/// little), when close enough to be a slip: at most a quarter of its letters
/// off, and never more than 3.
fn nearest<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let g = given.to_ascii_lowercase();
    known
        .into_iter()
        .map(|k| (strsim::osa_distance(&g, &k.to_ascii_lowercase()), k))
        .filter(|(d, k)| *d <= (k.len() / 4).clamp(1, 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.to_string())
}

#[cfg(test)]
mod tests;
