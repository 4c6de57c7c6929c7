//! Streaming allocates per transfer, not per chunk: a counting global
//! allocator around real transfers through a proxy running in this process.
//!
//! ```text
//!   this process: #[global_allocator] Counting -> System (counts every alloc/realloc)
//!                 three sluice servers (the library's App + Source + server::serve):
//!                   A: sendfile + splice   B: --no-sendfile (hyper)   C: --no-splice (copy)
//!   other processes: curl (the client), nginx (the http engine, WebDAV)
//!   per path: warm-up 1 MiB, then 64 MiB, then 1 GiB; allocations counted
//!   from before curl starts to after it exits
//! ```
//! A path that allocated per 64 KiB chunk would make ~15,000 more allocations
//! at 1 GiB than at 64 MiB; a bounded one makes about as many. The client is
//! another process so its allocations are not counted; what the test thread
//! itself allocates to run curl is the same at every size.
//!
//! Downloads on the fast path (sendfile, splice, pooled copy), the hyper fs
//! path (`download::FileChunks`), PUTs (with or without a checksum) and
//! multipart POSTs to an http engine on the fast path (sniff window or peeks,
//! then splice) are bounded. Bodies that hyper reads (uploads to disk, remote
//! downloads through hyper's client, anything with `--no-splice`) are not:
//! hyper reads into a BytesMut and hands out slices of it, and while earlier
//! slices wait in the backend pipe its next read needs fresh memory, about one
//! allocation per 32 KiB. Those paths are held to that rate.

mod engines;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sluice_proxy::limits::Pace;
use sluice_proxy::source::Source;
use sluice_proxy::{App, Capacity, Settings, server};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed to the system allocator unchanged; the counters
// are atomics and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(l.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is System's.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(l.size() as u64, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new as u64, Ordering::Relaxed);
        // SAFETY: `p` and `l` come from this allocator, which is System's.
        unsafe { System.realloc(p, l, new) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` and `l` come from this allocator, which is System's.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MIB: u64 = 1 << 20;
const SIZES: [u64; 3] = [MIB, 64 * MIB, 1024 * MIB];

/// An in-process sluice serving `policies` from its own tokio runtime.
struct Server {
    addr: SocketAddr,
    _stop: tokio::sync::watch::Sender<bool>,
}

fn start(
    rt: &tokio::runtime::Runtime,
    policies: &Path,
    data: &Path,
    sendfile: bool,
    splice: bool,
) -> Server {
    let settings = Settings {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        pace: Pace {
            idle: Duration::from_secs(60),
            min_rate: 0,
            grace: Duration::from_secs(10),
        },
        max_head: 16 * 1024,
        sendfile,
        splice,
        fsync: false,
        splice_window: sluice_proxy::zerocopy::DEFAULT_WINDOW,
        shutdown_grace: Duration::from_secs(1),
    };
    let app = App::new(
        settings,
        Capacity {
            max_transfers: 64,
            max_per_client: 64,
            pipe_size: 1 << 20,
            s3_part_size: 8 << 20,
            s3_part_buffers: 2,
            backend_connect_timeout: Duration::from_secs(5),
            backend_timeout: Duration::from_secs(600),
            spool_dir: data.join(".sluice-spool"),
        },
        // fs routes only: the AWS credential chain is never asked.
        Default::default(),
    );
    let source = Source {
        policies: Some(policies.to_path_buf()),
        data_dir: data.to_path_buf(),
        state_dir: None,
        snapshot: None,
        managed: false,
    };
    source.initial(&app).expect("policies load");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, rx) = tokio::sync::watch::channel(false);
    rt.spawn(server::serve(listener, app, None, rx));
    Server { addr, _stop: stop }
}

fn write_file(path: &Path, size: u64) {
    let mut f =
        std::io::BufWriter::with_capacity(MIB as usize, std::fs::File::create(path).unwrap());
    let mut x = 0x2545_F491_4F6C_DD1Du64 ^ size;
    let mut block = vec![0u8; MIB as usize];
    for _ in 0..size / MIB {
        for w in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
}

fn label(size: u64) -> String {
    format!("{}M", size / MIB)
}

/// Runs curl with `args`; returns (allocations, bytes allocated) in this process meanwhile.
fn counted(args: &[String], want: &str) -> (u64, u64) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-S",
        "-o",
        "/dev/null",
        "-H",
        "Expect:",
        "-w",
        "%{http_code}",
    ])
    .args(args);
    let (a0, b0) = (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
    let out = cmd.output().expect("curl runs (apt-get install curl)");
    let (a1, b1) = (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
    let code = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        code,
        want,
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (a1 - a0, b1 - b0)
}

/// How a path's allocations may grow with the bytes it moves.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Growth {
    /// Per transfer: 1 GiB costs about what 64 MiB does.
    Bounded,
    /// Per read of hyper's own buffer (see the module doc): capped per MiB.
    PerHyperRead,
}

/// One data path: its curl arguments at a size, and the status it answers.
struct Transfer {
    name: &'static str,
    growth: Growth,
    /// curl arguments for one size.
    args: Box<dyn Fn(u64) -> Vec<String>>,
    want: &'static str,
}

#[test]
fn streaming_allocates_per_transfer_not_per_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = SIZES
        .iter()
        .map(|&s| {
            let p = dir.path().join(format!("data-{}.bin", label(s)));
            write_file(&p, s);
            p
        })
        .collect();
    let engine = engines::nginx();
    let policies = dir.path().join("policies");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    // No checksum but on /hashed/: hashing allocates nothing, and each path is
    // counted once. sha2 is built optimised in test builds (Cargo.toml).
    let upload = "upload: {maxFileSize: 2Gi, checksum: none, verifyContent: true}";
    let hashed = "upload: {maxFileSize: 2Gi, checksum: sha256, verifyContent: true}";
    std::fs::write(
        policies.join("p.yaml"),
        format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\nmetadata: {{name: fs}}\n\
             spec: {{pathPrefix: /files/, backend: {{fs: {{root: store}}}}, {upload}}}\n---\n\
             apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\nmetadata: {{name: remote}}\n\
             spec: {{pathPrefix: /remote/, backend: {{http: {{url: \"{u}/store\", mode: put}}}}, {upload}}}\n---\n\
             apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\nmetadata: {{name: hashed}}\n\
             spec: {{pathPrefix: /hashed/, backend: {{http: {{url: \"{u}/store\", mode: put}}}}, {hashed}}}\n",
            u = engine.url()
        ),
    )
    .unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fast = start(&rt, &policies, &data, true, true);
    let hyper = start(&rt, &policies, &data, false, true);
    let copy = start(&rt, &policies, &data, true, false);
    let files_1m = files[0].clone();
    let file = move |s: u64| {
        files[SIZES.iter().position(|&x| x == s).unwrap()]
            .display()
            .to_string()
    };
    let f2 = file.clone();
    let f3 = file.clone();
    let f4 = file.clone();
    let f5 = file.clone();
    let f6 = file.clone();
    let f7 = file.clone();
    let (a, b, c) = (fast.addr, hyper.addr, copy.addr);
    let paths: Vec<Transfer> = vec![
        Transfer {
            name: "upload PUT -> fs (sniff)",
            growth: Growth::PerHyperRead,
            args: Box::new(move |s| {
                vec![
                    "-T".into(),
                    f2(s),
                    format!("http://{a}/files/put-{}.bin", label(s)),
                ]
            }),
            want: "201",
        },
        Transfer {
            name: "upload multipart POST -> fs",
            growth: Growth::PerHyperRead,
            args: Box::new(move |s| {
                vec![
                    "-F".into(),
                    format!("file=@{};type=application/octet-stream", f3(s)),
                    format!("http://{a}/files/mp/"),
                ]
            }),
            want: "201",
        },
        Transfer {
            name: "upload PUT -> http engine, splice",
            growth: Growth::Bounded,
            args: Box::new(move |s| {
                vec![
                    "-T".into(),
                    f4(s),
                    format!("http://{a}/remote/r-{}.bin", label(s)),
                ]
            }),
            want: "201",
        },
        Transfer {
            name: "upload PUT sha256 -> http engine, peek+splice",
            growth: Growth::Bounded,
            args: Box::new(move |s| {
                vec![
                    "-T".into(),
                    f7(s),
                    format!("http://{a}/hashed/k-{}.bin", label(s)),
                ]
            }),
            want: "201",
        },
        Transfer {
            name: "upload multipart POST -> http engine, splice",
            growth: Growth::Bounded,
            args: Box::new(move |s| {
                vec![
                    "-F".into(),
                    format!("file=@{};type=application/octet-stream", f6(s)),
                    format!("http://{a}/remote/mp/"),
                ]
            }),
            want: "201",
        },
        Transfer {
            name: "upload PUT -> http engine, hyper (--no-splice)",
            growth: Growth::PerHyperRead,
            args: Box::new(move |s| {
                vec![
                    "-T".into(),
                    f5(s),
                    format!("http://{c}/remote/h-{}.bin", label(s)),
                ]
            }),
            want: "201",
        },
        Transfer {
            name: "download fs, sendfile",
            growth: Growth::Bounded,
            args: Box::new(move |s| vec![format!("http://{a}/files/put-{}.bin", label(s))]),
            want: "200",
        },
        Transfer {
            name: "download fs, hyper (--no-sendfile)",
            growth: Growth::Bounded,
            args: Box::new(move |s| vec![format!("http://{b}/files/put-{}.bin", label(s))]),
            want: "200",
        },
        Transfer {
            name: "download http engine, splice",
            growth: Growth::Bounded,
            args: Box::new(move |s| vec![format!("http://{a}/remote/r-{}.bin", label(s))]),
            want: "200",
        },
        Transfer {
            name: "download http engine, copy (--no-splice)",
            growth: Growth::Bounded,
            args: Box::new(move |s| vec![format!("http://{c}/remote/r-{}.bin", label(s))]),
            want: "200",
        },
        Transfer {
            name: "download http engine, hyper client",
            growth: Growth::PerHyperRead,
            args: Box::new(move |s| vec![format!("http://{b}/remote/r-{}.bin", label(s))]),
            want: "200",
        },
    ];
    drop(file);

    let mut rows = Vec::new();
    for p in &paths {
        let counts: Vec<(u64, u64)> = SIZES
            .iter()
            .map(|&s| counted(&(p.args)(s), p.want))
            .collect();
        rows.push((p.name, p.growth, counts));
    }
    let mut report = format!(
        "{:<48} {:>14} {:>14} {:>14}   (allocations; KiB allocated)\n",
        "path", "1 MiB warm-up", "64 MiB", "1 GiB"
    );
    let mut bad = Vec::new();
    for (name, growth, c) in &rows {
        report.push_str(&format!(
            "{name:<48} {:>14} {:>14} {:>14}   ({} / {} / {} KiB)\n",
            c[0].0,
            c[1].0,
            c[2].0,
            c[0].1 / 1024,
            c[1].1 / 1024,
            c[2].1 / 1024
        ));
        let (small, big) = (c[1].0, c[2].0);
        let ok = match growth {
            // 16,384 chunks of 64 KiB in 1 GiB, 1,024 in 64 MiB: per-chunk allocation
            // would add ~15,000; bounded allocation adds noise.
            Growth::Bounded => big <= small + small / 4 + SLACK,
            Growth::PerHyperRead => big <= PER_READ_PER_MIB * 1024,
        };
        if !ok {
            bad.push((*name, *growth));
        }
    }
    println!("{report}");
    assert!(
        bad.is_empty(),
        "allocations grow past their bound on {bad:?}:\n{report}"
    );

    // Small files, many per connection: what one 4 KiB PUT costs, from the
    // difference between 10 and 110 of them (curl's own start is the same).
    let small = dir.path().join("small.bin");
    write_file(&small, 0);
    std::fs::write(&small, &std::fs::read(&files_1m).unwrap()[..4096]).unwrap();
    let many = |n: usize| {
        let mut args = Vec::new();
        for i in 0..n {
            if i > 0 {
                // `counted` gives the first URL its `-o /dev/null`.
                args.extend(["-o".to_string(), "/dev/null".to_string()]);
            }
            args.extend([
                "-T".to_string(),
                small.display().to_string(),
                format!("http://{a}/remote/small-{i}.bin"),
            ]);
        }
        counted(&args, &"201".repeat(n)).0
    };
    many(10);
    let per_put = (many(110) as f64 - many(10) as f64) / 100.0;
    println!("4 KiB PUT on a kept-alive connection, fast path: {per_put:.1} allocations each");
    assert!(
        per_put <= SMALL_PUT_ALLOCS,
        "a small PUT allocates {per_put:.1} times, more than {SMALL_PUT_ALLOCS}"
    );
    drop(engine);
}

/// What a small PUT may allocate: its path, key, type, engine target and
/// request head, the engine's answer, the JSON one and its policy's label (10
/// measured; 36 before the date, status line, lengths, metric labels and the
/// engine answer's headers stopped allocating).
const SMALL_PUT_ALLOCS: f64 = 16.0;

/// What one more GiB may cost in allocations without being per-chunk.
const SLACK: u64 = 500;
/// hyper reads a request body in 16-64 KiB reads, each into a fresh buffer
/// while earlier chunks are still queued: ~32 per MiB measured; more would be
/// a new per-chunk allocation on top.
const PER_READ_PER_MIB: u64 = 48;
