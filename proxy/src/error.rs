//! Every way a request can be refused, with its status code, stable rule name
//! and message.
//!
//! The rule name (`Reject::rule`) is the contract: it is the `error` field of
//! the JSON body, the `rule` label of `sluice_rejections_total` and the
//! `rule` field of the access-log line, so dashboards and clients can key on
//! it. Changing one is a breaking change.

use http::StatusCode;
use serde::Serialize;

/// The request headers a preflight's answer depends on (RFC 9110 `Vary`),
/// whether it allows or refuses.
pub const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("no policy covers this host and path")]
    NoRoute,
    #[error("no object at this key")]
    NotFound,
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed { method: String, allow: &'static str },
    #[error("downloads are disabled by policy {0}")]
    DownloadDisabled(String),
    #[error("credentials required: send Authorization: Bearer <key or JWT> or X-Api-Key")]
    Unauthorized,
    #[error("credentials not accepted: {0}")]
    Forbidden(String),
    #[error("a request body needs Content-Length or chunked transfer encoding")]
    LengthRequired,
    #[error("request body exceeds the {limit}-byte limit of this route")]
    RequestTooLarge { limit: u64 },
    #[error("file exceeds the {limit}-byte limit of this route")]
    FileTooLarge { limit: u64 },
    #[error("more than {limit} files in one request")]
    TooManyFiles { limit: u32 },
    #[error("more than {limit} non-file form fields in one request")]
    TooManyFields { limit: u32 },
    #[error("a non-file form field exceeds {limit} bytes")]
    FieldTooLarge { limit: u64 },
    #[error("multipart framing (part headers, preamble) exceeds {limit} bytes")]
    PartHeadersTooLarge { limit: u64 },
    #[error("content type {0:?} is not allowed by this route")]
    TypeNotAllowed(String),
    #[error("file extension of {0:?} is not allowed by this route")]
    ExtensionNotAllowed(String),
    #[error(
        "declared content type {declared:?} does not match the content, which looks like {sniffed}"
    )]
    ContentMismatch {
        declared: String,
        sniffed: &'static str,
    },
    #[error("uploads must be multipart/form-data (POST) or a raw PUT; got {0:?}")]
    UnsupportedMediaType(String),
    #[error("filename {0:?} has nothing usable after sanitising")]
    InvalidFilename(String),
    #[error("object key is not valid: {0}")]
    InvalidKey(String),
    #[error("multipart request carries no file part")]
    NoFiles,
    #[error("malformed multipart body: {0}")]
    MalformedMultipart(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("request head exceeds {0} bytes")]
    HeadTooLarge(usize),
    #[error("requested range is outside the object of {len} bytes")]
    RangeNotSatisfiable { len: u64 },
    #[error("a precondition (If-Match / If-Unmodified-Since) failed")]
    PreconditionFailed,
    #[error("upload slower than {min_rate} bytes/s or idle too long; cut off")]
    TooSlow { min_rate: u64 },
    #[error("this client already has {limit} transfers in flight")]
    TooManyClientTransfers { limit: usize },
    #[error("the proxy is at its limit of {limit} concurrent transfers")]
    Overloaded { limit: usize },
    #[error("no configuration loaded yet: {0}")]
    NoConfig(String),
    #[error("the client went away mid-request: {0}")]
    ClientAborted(String),
    #[error("storage failed: {0}")]
    Storage(String),
    #[error("storage engine failed: {message}")]
    Backend {
        status: Option<u16>,
        message: String,
    },
    #[error("storage engine did not answer in time: {0}")]
    BackendTimeout(String),
    #[error("file exceeds the {limit} bytes this route can spool before sending")]
    SpoolFull { limit: u64 },
    #[error("CORS preflight refused: {0}")]
    CorsNotAllowed(String),
    #[error("signature not accepted: {0}")]
    SignatureInvalid(String),
    #[error("the signed URL or form policy has expired")]
    SignatureExpired,
    #[error("object key {0:?} is outside what the signature allows")]
    KeyNotAllowed(String),
    #[error("a file part came before the form's policy and x-sluice-signature fields")]
    FormPolicyMissing,
    #[error("file is smaller than the {min} bytes the form policy requires")]
    FileTooSmall { min: u64 },
}

impl Reject {
    pub fn status(&self) -> StatusCode {
        use Reject::*;
        match self {
            NoRoute | NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Unauthorized => StatusCode::UNAUTHORIZED,
            // A refused preflight: 403 and no Access-Control-Allow-* headers,
            // which the Fetch standard suggests for "not shared"; the browser
            // fails the preflight on the missing headers whatever the status.
            Forbidden(_) | DownloadDisabled(_) | CorsNotAllowed(_) => StatusCode::FORBIDDEN,
            LengthRequired => StatusCode::LENGTH_REQUIRED,
            RequestTooLarge { .. }
            | FileTooLarge { .. }
            | TooManyFiles { .. }
            | TooManyFields { .. }
            | FieldTooLarge { .. }
            | PartHeadersTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            TypeNotAllowed(_)
            | ExtensionNotAllowed(_)
            | ContentMismatch { .. }
            | UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            InvalidFilename(_) | InvalidKey(_) | NoFiles => StatusCode::UNPROCESSABLE_ENTITY,
            MalformedMultipart(_) | BadRequest(_) | ClientAborted(_) => StatusCode::BAD_REQUEST,
            HeadTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            TooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
            TooManyClientTransfers { .. } => StatusCode::TOO_MANY_REQUESTS,
            Overloaded { .. } | NoConfig(_) => StatusCode::SERVICE_UNAVAILABLE,
            Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Backend { .. } => StatusCode::BAD_GATEWAY,
            BackendTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            SpoolFull { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            SignatureInvalid(_) | SignatureExpired | KeyNotAllowed(_) | FormPolicyMissing => {
                StatusCode::FORBIDDEN
            }
            FileTooSmall { .. } => StatusCode::BAD_REQUEST,
        }
    }

    /// Stable snake_case name: JSON `error`, metric label, log field.
    pub fn rule(&self) -> &'static str {
        use Reject::*;
        match self {
            NoRoute => "no_route",
            NotFound => "not_found",
            MethodNotAllowed { .. } => "method_not_allowed",
            DownloadDisabled(_) => "download_disabled",
            Unauthorized => "unauthorized",
            Forbidden(_) => "forbidden",
            LengthRequired => "length_required",
            RequestTooLarge { .. } => "request_too_large",
            FileTooLarge { .. } => "file_too_large",
            TooManyFiles { .. } => "too_many_files",
            TooManyFields { .. } => "too_many_fields",
            FieldTooLarge { .. } => "field_too_large",
            PartHeadersTooLarge { .. } => "part_headers_too_large",
            TypeNotAllowed(_) => "type_not_allowed",
            ExtensionNotAllowed(_) => "extension_not_allowed",
            ContentMismatch { .. } => "content_mismatch",
            UnsupportedMediaType(_) => "unsupported_media_type",
            InvalidFilename(_) => "invalid_filename",
            InvalidKey(_) => "invalid_key",
            NoFiles => "no_files",
            MalformedMultipart(_) => "malformed_multipart",
            BadRequest(_) => "bad_request",
            HeadTooLarge(_) => "head_too_large",
            RangeNotSatisfiable { .. } => "range_not_satisfiable",
            PreconditionFailed => "precondition_failed",
            TooSlow { .. } => "too_slow",
            TooManyClientTransfers { .. } => "too_many_client_transfers",
            Overloaded { .. } => "overloaded",
            NoConfig(_) => "no_config",
            ClientAborted(_) => "client_aborted",
            Storage(_) => "storage_error",
            Backend { .. } => "backend_error",
            BackendTimeout(_) => "backend_timeout",
            SpoolFull { .. } => "spool_exceeded",
            CorsNotAllowed(_) => "cors_not_allowed",
            SignatureInvalid(_) => "signature_invalid",
            SignatureExpired => "signature_expired",
            KeyNotAllowed(_) => "key_not_allowed",
            FormPolicyMissing => "form_policy_missing",
            FileTooSmall { .. } => "file_too_small",
        }
    }

    /// Extra response headers this rejection calls for.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Reject::MethodNotAllowed { allow, .. } => vec![("allow", allow.to_string())],
            Reject::Unauthorized => vec![("www-authenticate", "Bearer".into())],
            Reject::RangeNotSatisfiable { len } => {
                vec![("content-range", format!("bytes */{len}"))]
            }
            Reject::Overloaded { .. } | Reject::TooManyClientTransfers { .. } => {
                vec![("retry-after", "1".into())]
            }
            Reject::NoConfig(_) => vec![("retry-after", "5".into())],
            Reject::CorsNotAllowed(_) => vec![("vary", PREFLIGHT_VARY.into())],
            _ => vec![],
        }
    }

    /// `{"error": rule, "message": ...}`, plus `backendStatus` when a storage engine answered.
    pub fn body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            error: &'a str,
            message: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            backend_status: Option<u16>,
        }
        serde_json::to_vec(&Body {
            error: self.rule(),
            message: self.to_string(),
            backend_status: match self {
                Reject::Backend { status, .. } => *status,
                _ => None,
            },
        })
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_json_with_rule_and_message() {
        let r = Reject::FileTooLarge { limit: 10 };
        assert_eq!(r.status(), 413);
        let v: serde_json::Value = serde_json::from_slice(&r.body()).unwrap();
        assert_eq!(v["error"], "file_too_large");
        assert!(v["message"].as_str().unwrap().contains("10-byte"));
    }

    #[test]
    fn retry_after_where_retrying_helps() {
        for r in [
            Reject::Overloaded { limit: 1 },
            Reject::TooManyClientTransfers { limit: 1 },
        ] {
            assert!(r.headers().iter().any(|(k, _)| *k == "retry-after"));
        }
    }
}
