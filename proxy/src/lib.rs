//! sluice-proxy: the data plane of sluice.
//!
//! ```text
//!   client --TCP--> server (listener; sendfile fast path for plain GET/HEAD)
//!                     \--> hyper --> service (route, auth, method)
//!                                      |-- upload:   multer -> filters -> backend pipe
//!                                      \-- download: semantics -> file body
//!   admin port --> /metrics /healthz /readyz
//!   runtime: the current ProxyConfig, swapped atomically on reload
//! ```
//! Memory per transfer is a few buffers whatever the file size: uploads go
//! through a bounded channel into the backend, downloads through sendfile or
//! one reused read buffer.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod backend;
pub mod download;
pub mod error;
pub mod filters;
pub mod limits;
pub mod metrics;
pub mod runtime;
pub mod server;
pub mod service;
pub mod source;
pub mod upload;
pub mod zerocopy;

use std::sync::Arc;
use std::time::Duration;

use limits::{Limits, Pace};
use metrics::Metrics;
use runtime::Current;

/// Knobs of the data path, from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A request head must arrive whole within this.
    pub header_timeout: Duration,
    /// Longest quiet time on a keep-alive connection or mid-transfer.
    pub idle_timeout: Duration,
    pub pace: Pace,
    pub max_head: usize,
    /// Serve plain HTTP/1.1 downloads with sendfile(2).
    pub sendfile: bool,
    /// fsync each object before it becomes visible.
    pub fsync: bool,
    pub shutdown_grace: Duration,
}

/// Everything a request handler needs, shared by all connections.
pub struct App {
    pub current: Current,
    pub metrics: Metrics,
    pub limits: Arc<Limits>,
    pub settings: Settings,
}

impl App {
    pub fn new(settings: Settings, max_transfers: usize, max_per_client: usize) -> Arc<Self> {
        let metrics = Metrics::default();
        let limits = Limits::new(
            max_transfers,
            max_per_client,
            metrics.transfers_in_flight.clone(),
        );
        Arc::new(Self {
            current: Current::default(),
            metrics,
            limits,
            settings,
        })
    }
}
