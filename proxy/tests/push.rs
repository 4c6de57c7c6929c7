//! The operator's push API on the admin port, against the real proxy binary:
//! `PUT /v1/config` and `GET /v1/config/version` with a bearer token from a file;
//! an operator-managed proxy boots from its last known good config, else the
//! ConfigMap snapshot, else nothing (503); a push swaps routes at once while an
//! upload already in flight finishes under the route it started with.

mod common;

use common::*;

const TOKEN: &str = "push-token-for-tests";

fn policy(name: &str, prefix: &str, max: &str) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  pathPrefix: {prefix}\n  backend: {{fs: {{root: {name}}}}}\n  upload: {{maxFileSize: {max}}}\n"
    )
}

/// The ProxyConfig JSON the operator would push, compiled by the same code.
fn config(policies: &[String]) -> Vec<u8> {
    let texts: Vec<(String, String)> = policies
        .iter()
        .enumerate()
        .map(|(i, y)| (format!("p{i}"), y.clone()))
        .collect();
    let cfg = sluice_proxy::runtime::compile_texts(&texts).expect("test policies compile");
    serde_json::to_vec(&cfg).expect("config json")
}

/// A directory that outlives one proxy process: token file and state dir.
struct Shared {
    dir: tempfile::TempDir,
}

impl Shared {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).expect("token file");
        Shared { dir }
    }
    fn path(&self, name: &str) -> String {
        path_str(&self.dir.path().join(name)).to_string()
    }
    fn args(&self) -> Vec<String> {
        vec![
            "--admin-token-file".into(),
            self.path("token"),
            "--state-dir".into(),
            self.path("state"),
        ]
    }
    fn start(&self, more: &[&str]) -> Proxy {
        let mut args = self.args();
        args.extend(more.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proxy::start(None, &args)
    }
}

fn push(p: &Proxy, body: &[u8], token: Option<&str>) -> Response {
    let f = temp_file(body);
    let data = format!("@{}", path_str(f.path()));
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut args = vec!["-X", "PUT", "--data-binary", &data];
    if let Some(a) = &auth {
        args.extend(["-H", a]);
    }
    let url = p.admin_url("/v1/config");
    args.push(&url);
    curl(&args)
}

fn served_version(p: &Proxy) -> serde_json::Value {
    let auth = format!("Authorization: Bearer {TOKEN}");
    let r = curl(&["-H", &auth, &p.admin_url("/v1/config/version")]);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["version"].clone()
}

fn version_of(cfg: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(cfg).expect("config json");
    v["version"].as_str().expect("version").to_string()
}

#[test]
fn a_managed_proxy_waits_for_a_push_then_serves_it() {
    let shared = Shared::new();
    let p = shared.start(&[]);
    let data = random_bytes(1000, 90);

    // Nothing to serve yet: no embedded default for a managed proxy.
    assert_reject(&put(&p, "/files/a.bin", &data), 503, "no_config");
    let ready = p.admin_get("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(served_version(&p), serde_json::Value::Null);

    let cfg = config(&[policy("alpha", "/alpha/", "10Ki")]);
    // No token, a wrong token: 401 and nothing changes.
    assert_reject(&push(&p, &cfg, None), 401, "unauthorized");
    assert_reject(&push(&p, &cfg, Some("not-the-token")), 401, "unauthorized");
    let r = curl(&[&p.admin_url("/v1/config/version")]);
    assert_reject(&r, 401, "unauthorized");
    assert_reject(&put(&p, "/alpha/a.bin", &data), 503, "no_config");

    let r = push(&p, &cfg, Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], version_of(&cfg));
    assert_eq!(served_version(&p), version_of(&cfg));
    assert_eq!(p.admin_get("/readyz").status, 200);
    // Served at once: the push answered only after the swap.
    assert_created_one(&put(&p, "/alpha/a.bin", &data), "a.bin", &data);
    assert_reject(
        &put(&p, "/alpha/big.bin", &random_bytes(20 * 1024, 91)),
        413,
        "file_too_large",
    );
    assert_reject(&put(&p, "/files/a.bin", &data), 404, "no_route");

    // A config that does not build is refused; the served one stays.
    let mut broken: serde_json::Value = serde_json::from_slice(&cfg).expect("json");
    broken["routes"][0]["pathPrefix"] = "no-slash".into();
    let r = push(&p, &serde_json::to_vec(&broken).expect("json"), Some(TOKEN));
    assert_reject(&r, 400, "invalid_config");
    // The same with its version recomputed: the routes themselves must build.
    let routes: Vec<sluice_policy::Route> =
        serde_json::from_value(broken["routes"].clone()).expect("routes");
    let resigned = sluice_policy::ProxyConfig::new(routes);
    let r = push(
        &p,
        &serde_json::to_vec(&resigned).expect("json"),
        Some(TOKEN),
    );
    assert_reject(&r, 400, "invalid_config");
    assert_reject(&push(&p, b"{not json", Some(TOKEN)), 400, "invalid_config");
    assert_eq!(served_version(&p), version_of(&cfg));
    assert_created_one(&put(&p, "/alpha/b.bin", &data), "b.bin", &data);
}

#[test]
fn an_upload_in_flight_finishes_under_the_route_it_started_with() {
    let shared = Shared::new();
    let p = shared.start(&["--min-upload-rate", "0"]);
    let old = config(&[policy("alpha", "/alpha/", "1Mi")]);
    assert_eq!(push(&p, &old, Some(TOKEN)).status, 200);

    let data = random_bytes(50_000, 92);
    let mut held = Raw::connect(p.addr);
    held.send(&head(
        "PUT",
        "/alpha/late.bin",
        &[&format!("Content-Length: {}", data.len())],
    ));
    held.send(&data[..10_000]);
    p.wait_in_flight(1.0);

    // The new config drops /alpha/ and adds /beta/.
    let new = config(&[policy("beta", "/beta/", "1Mi")]);
    let r = push(&p, &new, Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    let small = random_bytes(100, 93);
    assert_reject(&put(&p, "/alpha/new.bin", &small), 404, "no_route");
    assert_created_one(&put(&p, "/beta/new.bin", &small), "new.bin", &small);

    held.send(&data[10_000..]);
    let r = held.read_response();
    assert_created_one(&r, "late.bin", &data);
    let stored = std::fs::read(p.data_dir().join("alpha/late.bin")).expect("stored under alpha");
    assert_eq!(stored, data);
}

#[test]
fn a_restarted_proxy_serves_its_persisted_config_without_the_operator() {
    let shared = Shared::new();
    let cfg = config(&[policy("alpha", "/alpha/", "1Mi")]);
    let data = random_bytes(2000, 94);
    {
        let mut p = shared.start(&[]);
        assert_eq!(push(&p, &cfg, Some(TOKEN)).status, 200);
        p.sigterm();
        assert!(p.wait_exit(DEADLINE).success());
    }
    // No operator now: the persisted config is served from the start.
    let p = shared.start(&[]);
    assert_eq!(served_version(&p), version_of(&cfg));
    assert_created_one(&put(&p, "/alpha/again.bin", &data), "again.bin", &data);
    assert!(
        p.logs_text().contains("last known good"),
        "{}",
        p.logs_text()
    );
}

#[test]
fn with_no_persisted_config_the_snapshot_is_served() {
    let shared = Shared::new();
    let snap = config(&[policy("snap", "/snap/", "1Mi")]);
    let snap_path = shared.dir.path().join("snapshot.json");
    std::fs::write(&snap_path, &snap).expect("snapshot");
    let p = shared.start(&["--config-snapshot", path_str(&snap_path)]);
    assert_eq!(served_version(&p), version_of(&snap));
    let data = random_bytes(300, 95);
    assert_created_one(&put(&p, "/snap/s.bin", &data), "s.bin", &data);

    // Once a push was persisted, it wins over the (older) snapshot at the next start.
    let pushed = config(&[policy("alpha", "/alpha/", "1Mi")]);
    assert_eq!(push(&p, &pushed, Some(TOKEN)).status, 200);
    drop(p);
    let p = shared.start(&["--config-snapshot", path_str(&snap_path)]);
    assert_eq!(served_version(&p), version_of(&pushed));
}

#[test]
fn pushes_are_refused_without_a_token_file_or_with_a_policies_folder() {
    let cfg = config(&[policy("alpha", "/alpha/", "1Mi")]);
    // Standalone on the embedded default: no push API.
    let p = Proxy::start(None, &[]);
    let r = push(&p, &cfg, Some(TOKEN));
    assert_reject(&r, 403, "push_disabled");

    // A folder of policies is this proxy's source: a push would be overwritten.
    let shared = Shared::new();
    let args = shared.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = Proxy::start(Some(&policy("beta", "/beta/", "1Mi")), &args);
    let r = push(&p, &cfg, Some(TOKEN));
    assert_reject(&r, 409, "not_managed");
}

#[test]
fn an_empty_token_file_stops_the_proxy_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token = dir.path().join("token");
    std::fs::write(&token, "\n").expect("token");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-proxy"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--admin-token-file")
        .arg(&token)
        .output()
        .expect("run sluice-proxy");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is empty"), "{err}");
}

/// The operator's side: its push client and per-pod bookkeeping against two real
/// proxies, as the controller drives them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_push_client_programs_two_proxies() {
    use sluice_operator::push::{Payload, PushError, Pusher};
    use sluice_operator::status::Fleet;
    use sluice_operator::sync::Tracker;
    use std::time::{Duration, Instant};

    let (sa, sb) = (Shared::new(), Shared::new());
    let mut a = sa.start(&["--min-upload-rate", "0"]);
    let b = sb.start(&[]);
    let pusher = Pusher::new(TOKEN, Duration::from_secs(5)).expect("pusher");
    let mut tracker = Tracker::default();
    let now = Instant::now();
    tracker.pod_seen("proxy-a", a.admin, true, true, now);
    tracker.pod_seen("proxy-b", b.admin, true, true, now);

    // Push one config to every due pod, as the controller does.
    async fn round(pusher: &Pusher, tracker: &mut Tracker, payload: &Payload) {
        let now = Instant::now();
        tracker.set_desired(&payload.version, now);
        for due in tracker.take_due(now) {
            let r = pusher.push(due.admin, payload).await;
            assert!(r.is_ok(), "push to {}: {r:?}", due.pod);
            tracker.pushed(&due.pod, r.map_err(|_| ()), Instant::now());
        }
    }

    let v1 = Payload::new(
        &sluice_proxy::runtime::compile_texts(&[("p".into(), policy("alpha", "/alpha/", "1Mi"))])
            .expect("compile"),
    );
    round(&pusher, &mut tracker, &v1).await;
    assert_eq!(
        tracker.fleet(),
        Fleet {
            ready: 2,
            synced: 2
        }
    );
    let data = random_bytes(5000, 96);
    for p in [&a, &b] {
        // Served as soon as the push answered.
        assert_created_one(&put(p, "/alpha/x.bin", &data), "x.bin", &data);
        assert_eq!(
            pusher.served(p.admin).await.expect("served"),
            Some(v1.version.clone())
        );
    }

    // An upload in flight on proxy a while v2 (no /alpha/) goes out.
    let big = random_bytes(40_000, 97);
    let mut held = Raw::connect(a.addr);
    held.send(&head(
        "PUT",
        "/alpha/held.bin",
        &[&format!("Content-Length: {}", big.len())],
    ));
    held.send(&big[..1000]);
    a.wait_in_flight(1.0);
    let v2 = Payload::new(
        &sluice_proxy::runtime::compile_texts(&[("p".into(), policy("beta", "/beta/", "1Mi"))])
            .expect("compile"),
    );
    round(&pusher, &mut tracker, &v2).await;
    assert_eq!(
        tracker.fleet(),
        Fleet {
            ready: 2,
            synced: 2
        }
    );
    for p in [&a, &b] {
        assert_reject(&put(p, "/alpha/y.bin", &data), 404, "no_route");
        assert_created_one(&put(p, "/beta/y.bin", &data), "y.bin", &data);
    }
    held.send(&big[1000..]);
    assert_created_one(&held.read_response(), "held.bin", &big);

    // A wrong token is refused, and says so.
    let wrong = Pusher::new("not-the-token", Duration::from_secs(5)).expect("pusher");
    assert!(matches!(
        wrong.push(b.admin, &v1).await,
        Err(PushError::Unauthorized)
    ));
    assert_eq!(
        pusher.served(b.admin).await.expect("served"),
        Some(v2.version.clone())
    );

    // The operator goes away and proxy a restarts: it serves what it had.
    a.sigterm();
    assert!(a.wait_exit(DEADLINE).success());
    drop(a);
    let a = sa.start(&[]);
    assert_eq!(
        pusher.served(a.admin).await.expect("served"),
        Some(v2.version.clone())
    );
    assert_created_one(&put(&a, "/beta/z.bin", &data), "z.bin", &data);
}
