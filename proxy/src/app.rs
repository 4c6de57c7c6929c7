//! What every connection shares: the configuration being served, metrics,
//! limits, the data path's settings and the pools of engine sockets, pipes
//! and copy buffers. Built once at start by the binary, below every module
//! that handles a request.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::{self, Remotes, upstream::RawPool};
use crate::limits::{Limits, Pace};
use crate::metrics::Metrics;
use crate::runtime::Current;
use crate::zerocopy::{BufPool, COPY_CHUNK, PipePool};

/// Knobs of the data path, from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A request head must arrive whole within this.
    pub header_timeout: Duration,
    /// Longest quiet time on a keep-alive connection or mid-transfer.
    pub idle_timeout: Duration,
    pub pace: Pace,
    pub max_head: usize,
    /// Serve plain HTTP/1.1 downloads on the fast path: sendfile(2) from disk.
    pub sendfile: bool,
    /// On the fast path, move remote bodies with splice(2) (else copy through pooled buffers).
    pub splice: bool,
    /// fsync each object before it becomes visible.
    pub fsync: bool,
    /// Largest low-water mark of a spliced socket, and what an upload's peek
    /// looks at (`--splice-window`).
    pub splice_window: usize,
    pub shutdown_grace: Duration,
}

/// Everything a request handler needs, shared by all connections.
pub struct App {
    pub current: Current,
    pub metrics: Metrics,
    pub limits: Arc<Limits>,
    pub settings: Settings,
    pub remotes: Remotes,
    /// Pipes for splice(2), reused across downloads.
    pub pipes: PipePool,
    /// Idle keep-alive sockets to engines, for the fast path.
    pub raw: RawPool,
    /// Copy buffers for remote downloads that cannot be spliced.
    pub bufs: BufPool,
}

/// Sizes of the pools and limits, from the command line.
#[derive(Debug, Clone)]
pub struct Capacity {
    pub max_transfers: usize,
    pub max_per_client: usize,
    pub pipe_size: usize,
    pub s3_part_size: usize,
    pub s3_part_buffers: usize,
    pub backend_connect_timeout: Duration,
    pub backend_timeout: Duration,
    pub spool_dir: std::path::PathBuf,
}

impl App {
    pub fn new(
        settings: Settings,
        cap: Capacity,
        aws: backend::credentials::Settings,
    ) -> Arc<Self> {
        let metrics = Metrics::default();
        let limits = Limits::new(
            cap.max_transfers,
            cap.max_per_client,
            metrics.transfers_in_flight.clone(),
        );
        let engines = backend::tls::Clients::new(
            backend::tls::system_roots(),
            cap.backend_connect_timeout,
            metrics.engine_tls_failures.clone(),
        );
        let credentials = backend::credentials::Chain::new(aws, &metrics, engines.default_config());
        let remotes = Remotes {
            engines,
            parts: backend::s3::PartPool::new(cap.s3_part_size, cap.s3_part_buffers),
            credentials,
            connect_timeout: cap.backend_connect_timeout,
            timeout: cap.backend_timeout,
            spool_dir: cap.spool_dir,
        };
        Arc::new(Self {
            current: Current::default(),
            metrics,
            limits,
            settings,
            remotes,
            pipes: PipePool::new(cap.pipe_size, 256),
            raw: RawPool::default(),
            bufs: BufPool::new(COPY_CHUNK),
        })
    }
}
