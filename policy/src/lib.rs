//! sluice-policy: the `UploadPolicy` custom resource and what it compiles to.
//!
//! ```text
//!   a folder's YAML --load()--> UploadPolicies + Secrets, decoded strictly against the CRD schema
//!                          \--> per-document NotAccepted (file, document, field, nearest known field)
//!   UploadPolicy (CRD, YAML) + Secrets --compile()--> ProxyConfig { version, routes }
//!                                              \--> per-policy Outcome (Accepted | Invalid | Conflicted | SecretNotFound)
//!   ProxyConfig::route(host, path) --> &Route   (longest prefix wins, specific host beats any-host)
//! ```
//!
//! Shared by the standalone proxy (policies read from disk) and the operator
//! (policies from the API server), so both compile the same way. Pure code:
//! no IO, no async; every decision is a plain function with unit tests.
#![forbid(unsafe_code)]

pub mod compile;
pub mod config;
pub mod crd;
pub mod load;
pub mod pem;
pub mod quantity;

pub use compile::{Compiled, Outcome, PolicyKey, compile};
pub use config::{
    Backend, Checksum, HttpMode, Naming, ProxyConfig, Route, RouteAuth, RouteCors, S3Credentials,
    UploadRules,
};
pub use crd::{UploadPolicy, UploadPolicySpec, UploadPolicyStatus};
pub use load::{Folder, NotAccepted, compile_folder};
