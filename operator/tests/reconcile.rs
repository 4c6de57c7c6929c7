//! Reconcile rounds and leader election against a mocked API server: kube-rs's
//! documented tower-test pattern (a `tower_test::mock::pair` as the client's
//! service). A mock, because these tests pin the exact request sequence; the
//! real kube-apiserver is met in the Kubernetes end-to-end tests.
//!
//! ```text
//!   Client::new(mock) -> Reconciler::reconcile(World) -> requests
//!   ApiServer task: per expected (method, path): assert, record the body,
//!                   answer (echo the body, or an error status); then nothing more
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::client::Body;
use kube::{Api, Client};
use serde_json::{Value, json};
use sluice_operator::controller::{Reconciler, Settings, World};
use sluice_operator::lease::{Elector, LeaseConfig};
use sluice_operator::metrics::Metrics;
use sluice_policy::{UploadPolicy, UploadPolicyStatus};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One expected request and the status to answer it with (2xx: the body echoed).
struct Expect {
    method: Method,
    path: String,
    status: u16,
}

fn expect(method: Method, path: &str, status: u16) -> Expect {
    Expect {
        method,
        path: path.to_string(),
        status,
    }
}

type Server = tokio::task::JoinHandle<(Vec<Value>, Handle)>;

/// Serves exactly `script`, in order; returns every request body (JSON) and
/// the handle, for the next round's script.
fn api_server(mut handle: Handle, script: Vec<Expect>) -> Server {
    tokio::spawn(async move {
        let mut bodies = Vec::new();
        for (i, e) in script.into_iter().enumerate() {
            let (req, send) = handle
                .next_request()
                .await
                .unwrap_or_else(|| panic!("request {i} ({} {}) never came", e.method, e.path));
            assert_eq!(
                (req.method(), req.uri().path()),
                (&e.method, e.path.as_str()),
                "request {i}: {}",
                req.uri()
            );
            let bytes = req.into_body().collect_bytes().await.expect("body");
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let resp = if (200..300).contains(&e.status) {
                // Echo: what server-side apply and create answer looks like enough.
                let mut echo = body.clone();
                if echo.is_object() && echo.get("metadata").is_none() {
                    echo["metadata"] = json!({"name": "x"});
                }
                // A status apply answers with the whole object.
                if echo["kind"] == "UploadPolicy" && echo.get("spec").is_none() {
                    echo["spec"] = good();
                }
                Response::builder()
                    .status(e.status)
                    .body(Body::from(serde_json::to_vec(&echo).expect("json")))
            } else {
                let reason = match e.status {
                    404 => "NotFound",
                    409 => "Conflict",
                    _ => "InternalError",
                };
                let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": "mocked failure", "reason": reason, "code": e.status});
                Response::builder()
                    .status(e.status)
                    .body(Body::from(serde_json::to_vec(&status).expect("json")))
            };
            send.send_response(resp.expect("response"));
            bodies.push(body);
        }
        (bodies, handle)
    })
}

fn mock_client() -> (Client, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(svc, "default"), handle)
}

fn settings() -> Settings {
    Settings {
        namespace: "sluice".into(),
        configmap: "sluice-config".into(),
        admin_port: 9901,
        // One at a time: the script pins the order of requests.
        status_concurrency: 1,
    }
}

fn policy(
    name: &str,
    created: i64,
    spec: Value,
    status: Option<&UploadPolicyStatus>,
) -> Arc<UploadPolicy> {
    let mut p: UploadPolicy = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "UploadPolicy",
        "metadata": {"name": name, "namespace": "default", "generation": 2,
            "uid": format!("uid-{name}"),
            "creationTimestamp": format!("2026-01-01T00:00:{created:02}Z")},
        "spec": spec,
    }))
    .expect("policy");
    p.status = status.cloned();
    Arc::new(p)
}

fn good() -> Value {
    json!({"pathPrefix": "/files/", "backend": {"fs": {"root": "files"}}})
}

fn bad() -> Value {
    json!({"pathPrefix": "files", "backend": {"fs": {"root": "x"}}})
}

fn pod(name: &str, ip: &str, ready: bool) -> Arc<Pod> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "sluice"},
            "spec": {"containers": [{"name": "proxy", "image": "sluice-proxy"}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
        .expect("pod"),
    )
}

fn stamp() -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("time"))
}

const CM: &str = "/api/v1/namespaces/sluice/configmaps/sluice-config";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

fn status_path(name: &str) -> String {
    format!("/apis/sluice.dev/v1alpha1/namespaces/default/uploadpolicies/{name}/status")
}

fn condition<'a>(status: &'a Value, t: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .unwrap_or_else(|| panic!("no {t} condition in {status}"))
}

async fn round(rec: &mut Reconciler, world: &World) -> Vec<String> {
    tokio::time::timeout(
        Duration::from_secs(10),
        rec.reconcile(world, Instant::now(), stamp()),
    )
    .await
    .expect("the round made a request the script did not expect (it hung)")
    .into_iter()
    .map(|e| e.to_string())
    .collect()
}

async fn served(server: Server) -> (Vec<Value>, Handle) {
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the round made fewer requests than the script expects")
        .expect("the mocked API server panicked")
}

#[tokio::test]
async fn a_first_round_writes_the_configmap_then_each_status_with_events() {
    let (client, handle) = mock_client();
    let server = api_server(
        handle,
        vec![
            expect(Method::PATCH, CM, 200),
            expect(Method::PATCH, &status_path("bad"), 200),
            expect(Method::POST, EVENTS, 201),
            expect(Method::POST, EVENTS, 201),
            expect(Method::PATCH, &status_path("good"), 200),
            expect(Method::POST, EVENTS, 201),
            expect(Method::POST, EVENTS, 201),
        ],
    );
    let mut rec = Reconciler::new(client, settings(), "op-1", Arc::new(Metrics::default()));
    let world = World {
        policies: vec![
            policy("bad", 1, bad(), None),
            policy("good", 2, good(), None),
        ],
        ..World::default()
    };
    assert_eq!(round(&mut rec, &world).await, Vec::<String>::new());
    let (bodies, _) = served(server).await;

    // The ConfigMap: server-side apply of config.json holding only the good route.
    let config: Value = serde_json::from_str(
        bodies[0]["data"]["config.json"]
            .as_str()
            .expect("config.json"),
    )
    .expect("config json");
    assert_eq!(config["routes"].as_array().map(Vec::len), Some(1));
    assert_eq!(config["routes"][0]["policy"], "default/good");
    assert_eq!(
        bodies[0]["metadata"]["annotations"]["sluice.dev/config-version"],
        config["version"]
    );

    let bad_status = &bodies[1]["status"];
    assert_eq!(condition(bad_status, "Accepted")["status"], "False");
    assert_eq!(condition(bad_status, "Accepted")["reason"], "Invalid");
    assert_eq!(bad_status["observedGeneration"], 2);
    assert_eq!(bodies[2]["reason"], "Invalid");
    assert_eq!(bodies[2]["type"], "Warning");
    assert_eq!(bodies[2]["regarding"]["name"], "bad");

    let good_status = &bodies[4]["status"];
    assert_eq!(condition(good_status, "Accepted")["status"], "True");
    assert_eq!(condition(good_status, "Programmed")["reason"], "NoProxies");
    assert_eq!(good_status["configVersion"], config["version"]);
    assert_eq!(bodies[5]["reason"], "Accepted");
}

#[tokio::test]
async fn a_restarted_operator_rewrites_the_configmap_but_no_unchanged_status() {
    // Round one, to learn what the status looks like once written.
    let (client, handle) = mock_client();
    let server = api_server(
        handle,
        vec![
            expect(Method::PATCH, CM, 200),
            expect(Method::PATCH, &status_path("good"), 200),
            expect(Method::POST, EVENTS, 201),
            expect(Method::POST, EVENTS, 201),
        ],
    );
    let mut rec = Reconciler::new(client, settings(), "op-1", Arc::new(Metrics::default()));
    let world = World {
        policies: vec![policy("good", 1, good(), None)],
        ..World::default()
    };
    round(&mut rec, &world).await;
    let (bodies, _) = served(server).await;
    let written: UploadPolicyStatus =
        serde_json::from_value(bodies[1]["status"].clone()).expect("status");

    // The same replica, the watch now showing its write: nothing at all to do.
    let world = World {
        policies: vec![policy("good", 1, good(), Some(&written))],
        ..World::default()
    };
    assert_eq!(round(&mut rec, &world).await, Vec::<String>::new());

    // A new replica (or a restart): the ConfigMap again (cheap, idempotent), no status.
    let (client, handle) = mock_client();
    let server = api_server(handle, vec![expect(Method::PATCH, CM, 200)]);
    let mut fresh = Reconciler::new(client, settings(), "op-2", Arc::new(Metrics::default()));
    round(&mut fresh, &world).await;
    served(server).await;
    assert_eq!(
        round(&mut fresh, &world).await,
        Vec::<String>::new(),
        "and then nothing"
    );
}

#[tokio::test]
async fn one_failed_status_write_does_not_stop_the_others_and_is_retried() {
    let (client, handle) = mock_client();
    let server = api_server(
        handle,
        vec![
            expect(Method::PATCH, CM, 200),
            expect(Method::PATCH, &status_path("a"), 500),
            expect(Method::PATCH, &status_path("b"), 200),
            expect(Method::POST, EVENTS, 201),
            expect(Method::POST, EVENTS, 201),
        ],
    );
    let metrics = Arc::new(Metrics::default());
    let mut rec = Reconciler::new(client, settings(), "op-1", metrics.clone());
    let b = json!({"pathPrefix": "/b/", "backend": {"fs": {"root": "b"}}});
    let world = World {
        policies: vec![policy("a", 1, good(), None), policy("b", 2, b, None)],
        ..World::default()
    };
    let errors = round(&mut rec, &world).await;
    let (_, handle) = served(server).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("status"), "{errors:?}");
    assert!(rec.retry_at.is_some(), "a failed write schedules a retry");
    assert!(metrics.encode().contains("kind=\"status\""));

    // The retry writes only what failed.
    let server = api_server(
        handle,
        vec![
            expect(Method::PATCH, &status_path("a"), 200),
            expect(Method::POST, EVENTS, 201),
            expect(Method::POST, EVENTS, 201),
        ],
    );
    assert_eq!(round(&mut rec, &world).await, Vec::<String>::new());
    served(server).await;
    assert!(rec.retry_at.is_none());
}

#[tokio::test]
async fn status_waits_for_the_push_and_then_says_programmed() {
    let (client, handle) = mock_client();
    // Round one: the ConfigMap, and no status while the push is due.
    let server = api_server(handle, vec![expect(Method::PATCH, CM, 200)]);
    let mut rec = Reconciler::new(client, settings(), "op-1", Arc::new(Metrics::default()));
    let world = World {
        policies: vec![policy("good", 1, good(), None)],
        pods: vec![
            pod("proxy-a", "127.0.0.2", true),
            pod("proxy-b", "127.0.0.3", false),
        ],
        ..World::default()
    };
    round(&mut rec, &world).await;
    let (_, handle) = served(server).await;
    let now = Instant::now();
    let due = rec.tracker.take_due(now);
    // Both running pods are pushed, the one not Ready yet too (it may be
    // waiting for its first config to turn ready).
    assert_eq!(due.len(), 2);
    assert_eq!(due[0].admin.to_string(), "127.0.0.2:9901");
    let version = rec.payload.as_ref().expect("payload").version.clone();
    for d in &due {
        rec.tracker.pushed(&d.pod, Ok(version.clone()), now);
    }

    // Round two: the pushes answered; one status write, Programmed on 1 of 1 ready.
    let server = api_server(
        handle,
        vec![
            expect(Method::PATCH, &status_path("good"), 200),
            expect(Method::POST, EVENTS, 201),
            expect(Method::POST, EVENTS, 201),
        ],
    );
    round(&mut rec, &world).await;
    let (bodies, _) = served(server).await;
    let status = &bodies[0]["status"];
    assert_eq!(
        condition(status, "Programmed")["status"],
        "True",
        "{status}"
    );
    assert_eq!(status["proxies"], json!({"ready": 1, "synced": 1}));
    assert_eq!(status["configVersion"], version);
}

fn lease_config() -> LeaseConfig {
    LeaseConfig {
        name: "sluice-operator".into(),
        identity: "op-1".into(),
        duration: Duration::from_secs(15),
        renew: Duration::from_secs(2),
    }
}

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/sluice/leases/sluice-operator";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/sluice/leases";

#[tokio::test]
async fn a_free_lease_is_taken_and_a_leader_cut_off_from_the_api_steps_down() {
    let (client, handle) = mock_client();
    let mut elector = Elector::new(Api::<Lease>::namespaced(client, "sluice"), lease_config());
    let server = api_server(
        handle,
        vec![
            expect(Method::GET, LEASE, 404),
            expect(Method::POST, LEASES, 201),
        ],
    );
    assert!(elector.round().await.expect("round"));
    let (bodies, handle) = served(server).await;
    assert_eq!(bodies[1]["spec"]["holderIdentity"], "op-1");
    assert_eq!(bodies[1]["spec"]["leaseDurationSeconds"], 15);
    let now = Instant::now();
    assert!(elector.is_leader(now));

    // The API server fails: the round errors, leadership holds for now...
    let server = api_server(handle, vec![expect(Method::GET, LEASE, 500)]);
    assert!(elector.round().await.is_err());
    served(server).await;
    assert!(elector.is_leader(now));
    // ...and ends before another replica may take over (duration after the
    // last renewal), with a renew period to spare.
    assert!(!elector.is_leader(now + Duration::from_secs(13)));
}

async fn answer(handle: &mut Handle, body: Value) {
    let (req, send) = handle.next_request().await.expect("request");
    assert_eq!(req.uri().path(), LEASE);
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&body).expect("json")))
            .expect("response"),
    );
}

/// Taking over a stale Lease (not renewed for its duration) is `lease::decide`'s
/// unit test; waiting 15 s here would add nothing.
#[tokio::test]
async fn a_lease_held_and_renewed_by_another_replica_is_followed() {
    let (client, handle) = mock_client();
    let mut elector = Elector::new(Api::<Lease>::namespaced(client, "sluice"), lease_config());
    let held = |renew: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "sluice-operator", "namespace": "sluice", "resourceVersion": "7"},
            "spec": {"holderIdentity": "op-2", "leaseDurationSeconds": 15, "renewTime": renew}})
    };
    // A GET answered with a Lease: the mock echoes the request body, so
    // serve this one by hand.
    let mut handle = handle;
    let (r, ()) = tokio::join!(
        elector.round(),
        answer(&mut handle, held("2026-01-01T00:00:00.000000Z"))
    );
    assert!(!r.expect("round"), "held by op-2: follow");
    assert!(!elector.is_leader(Instant::now()));
    // Renewed: still followed.
    let (r, ()) = tokio::join!(
        elector.round(),
        answer(&mut handle, held("2026-01-01T00:00:02.000000Z"))
    );
    assert!(!r.expect("round"));
}

#[tokio::test]
async fn a_changed_policy_is_written_before_the_routine_version_bumps() {
    // Round one: both policies written (version v1).
    let (client, handle) = mock_client();
    let server = api_server(
        handle,
        vec![
            expect(Method::PATCH, CM, 200),
            expect(Method::PATCH, &status_path("a"), 200),
            expect(Method::POST, EVENTS, 201),
            expect(Method::POST, EVENTS, 201),
            expect(Method::PATCH, &status_path("b"), 200),
            expect(Method::POST, EVENTS, 201),
            expect(Method::POST, EVENTS, 201),
        ],
    );
    let mut rec = Reconciler::new(client, settings(), "op-1", Arc::new(Metrics::default()));
    let b_spec = |max: &str| json!({"pathPrefix": "/b/", "backend": {"fs": {"root": "b"}}, "upload": {"maxFileSize": max}});
    let world = World {
        policies: vec![
            policy("a", 1, good(), None),
            policy("b", 2, b_spec("1Mi"), None),
        ],
        ..World::default()
    };
    round(&mut rec, &world).await;
    let (bodies, handle) = served(server).await;
    let status_of = |i: usize| -> UploadPolicyStatus {
        serde_json::from_value(bodies[i]["status"].clone()).expect("status")
    };
    let (a_status, b_status) = (status_of(1), status_of(4));

    // b's spec changes (generation 3): a new config version, so a's status
    // changes too (its configVersion), but b, whose generation is new, goes first.
    let mut b = (*policy("b", 2, b_spec("2Mi"), Some(&b_status))).clone();
    b.metadata.generation = Some(3);
    let world = World {
        policies: vec![policy("a", 1, good(), Some(&a_status)), Arc::new(b)],
        ..World::default()
    };
    let server = api_server(
        handle,
        vec![
            expect(Method::PATCH, CM, 200),
            expect(Method::PATCH, &status_path("b"), 200),
            expect(Method::PATCH, &status_path("a"), 200),
        ],
    );
    assert_eq!(round(&mut rec, &world).await, Vec::<String>::new());
    let (bodies, _) = served(server).await;
    assert_eq!(bodies[1]["status"]["observedGeneration"], 3);
    assert_eq!(
        bodies[2]["status"]["configVersion"],
        bodies[1]["status"]["configVersion"]
    );
}
