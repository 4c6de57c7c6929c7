//! sluice-proxy: the data plane of sluice.
//!
//! ```text
//!   client --TCP--> server (listener; http1 heads; fast path: GET/HEAD by
//!                     |     sendfile or splice, PUT and form POST to an http engine by splice)
//!                     \--> hyper --> service
//!   both paths -> gate (route, CORS, auth, admission, record)
//!              -> upload (multipart -> filters -> backend pipe) | download (semantics -> body)
//!   admin port --> /metrics /healthz /readyz, the operator's push; source: where config comes from
//!   runtime: the current ProxyConfig, swapped atomically on reload
//! ```
//! Modules sit on floors and import only from floors below their own; the
//! table is in docs/architecture.md, and `tests/layering.rs` holds the code
//! to it. Memory per transfer is a few buffers whatever the file size:
//! uploads go through a bounded channel into the backend, downloads through
//! sendfile or one reused read buffer.
// Unsafe code only in `zerocopy`, each block with a SAFETY line.
#![deny(unsafe_code)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod backend;
pub mod body;
pub mod cors;
pub mod download;
pub mod error;
pub mod filters;
pub mod gate;
pub mod http1;
pub mod limits;
pub mod metrics;
pub mod runtime;
pub mod server;
pub mod service;
pub mod signed;
pub mod source;
pub mod tls;
pub mod upload;
#[allow(unsafe_code)]
pub mod zerocopy;

pub use app::{App, Capacity, Settings};
