//! The test node itself (tests/kube/cmd/kube-harness --node): real pods
//! under restricted Pod Security, reaching the API server as an in-cluster
//! client does, reached from the host, and a host left as it was found.
//!
//! ```text
//!   Node::start(target/kube/images)              pause + probe images
//!   namespace smoke (enforce=restricted)
//!     Deployment web: probe serve :8080  --Available-->  pod IP 198.18.16.x
//!     Service web: ClusterIP 198.19.x.x:80 -> 8080
//!     Pod client: probe check --apiserver http://POD:8080/ http://CLUSTERIP/
//!        GET https://$KUBERNETES_SERVICE_HOST/version with the mounted token + CA
//!   host -> pod IP, host -> ClusterIP, kubectl logs / exec through the kubelet
//!   node.stop() -> teardown report: nothing left
//! ```
//! Needs root and the packages scripts/test installs; fails without them.
//! The chart's own test on the node is in node/sluice_chart.rs.

mod common;
#[path = "node/sluice_chart.rs"]
mod sluice_chart;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::node::Node;

const NS: &str = "smoke";
/// Deadline of every wait on the node (pods start in about a second here).
const DEADLINE: Duration = Duration::from_secs(90);
const SHOW: &[&str] = &["pods -n smoke", "deployments -n smoke", "events -n smoke"];

/// What restricted Pod Security asks of a pod, with the image's uid.
const RESTRICTED: &str = "securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}";
const RESTRICTED_CONTAINER: &str = "securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}";

#[test]
fn node_runs_restricted_pods_that_reach_the_api_server_and_leaves_the_host_as_found() {
    let node = Node::start(&[&Node::test_images()]);
    println!(
        "node {} Ready {:?} after the kubelet started; up in {:?}",
        node.name, node.node_ready, node.up
    );
    let ready = node.get_json(&["node", &node.name]);
    assert!(
        ready["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True"),
        "node not Ready: {ready:#}"
    );

    node.apply(&format!(
        "apiVersion: v1
kind: Namespace
metadata:
  name: {NS}
  labels: {{pod-security.kubernetes.io/enforce: restricted}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      {RESTRICTED}
      containers:
      - name: web
        image: sluice.test/probe:0.1.0
        args: [serve, ':8080']
        ports: [{{containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}
        {RESTRICTED_CONTAINER}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {NS}}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"
    ));

    // Pod Security is enforced: a pod without the restricted settings is refused.
    let refused = node.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: lax, namespace: {NS}}}
spec:
  containers: [{{name: lax, image: sluice.test/probe:0.1.0, args: [serve, ':8080']}}]
"
        ),
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("violates PodSecurity \"restricted"),
        "a non-restricted pod was not refused: {stderr}"
    );

    node.wait_until("Deployment web is Available", DEADLINE, SHOW, || {
        let d = node.get_json(&["deployment", "web", "-n", NS]);
        d["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Available" && c["status"] == "True")
            .then_some(())
    });
    let pods = node.get_json(&["pods", "-n", NS, "-l", "app=web"]);
    let pod_ip = pods["items"][0]["status"]["podIP"]
        .as_str()
        .expect("web pod IP")
        .to_string();
    let web_pod = pods["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let ip: std::net::Ipv4Addr = pod_ip.parse().expect("an IPv4 pod IP");
    assert!(
        ip.octets()[..2] == [198, 18] && (16..32).contains(&ip.octets()[2]),
        "pod IP {pod_ip} outside {}",
        node.pod_cidr
    );
    let cluster_ip = node.get_json(&["service", "web", "-n", NS])["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    assert!(cluster_ip.starts_with("198.19."), "ClusterIP {cluster_ip}");

    // The host reaches the pod by its IP and through kube-proxy's ClusterIP.
    let by_ip = http_get(&format!("{pod_ip}:8080"));
    assert!(by_ip.contains(&format!("probe {web_pod}")), "{by_ip}");
    let by_service = node.wait_until("the host reaches the ClusterIP", DEADLINE, SHOW, || {
        let body = try_http_get(&format!("{cluster_ip}:80")).ok()?;
        body.contains("probe web-").then_some(body)
    });
    assert!(
        by_service.contains(&format!("probe {web_pod}")),
        "{by_service}"
    );

    // A pod with the ServiceAccount token the real admission and kubelet
    // mount reaches the API server through the `kubernetes` Service, and
    // the web pod by pod IP and ClusterIP.
    node.apply(&format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {NS}}}
spec:
  restartPolicy: Never
  {RESTRICTED}
  containers:
  - name: client
    image: sluice.test/probe:0.1.0
    args: [check, --apiserver, 'http://{pod_ip}:8080/', 'http://{cluster_ip}/']
    {RESTRICTED_CONTAINER}
"
    ));
    let phase = node.wait_until("pod client ends", DEADLINE, SHOW, || {
        let p = node.get_json(&["pod", "client", "-n", NS]);
        let phase = p["status"]["phase"].as_str()?.to_string();
        (phase == "Succeeded" || phase == "Failed").then_some(phase)
    });
    let logs = node.kubectl_ok(&["logs", "client", "-n", NS]);
    println!("client pod log:\n{logs}");
    assert_eq!(phase, "Succeeded", "client pod log:\n{logs}");
    assert!(
        logs.contains("GET https://198.19.0.1:443/version: 200")
            && logs.contains("\"gitVersion\": \"v1.33.13\""),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("GET http://{pod_ip}:8080/: 200 probe {web_pod}")),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("GET http://{cluster_ip}/: 200 probe {web_pod}")),
        "{logs}"
    );
    // Routes to the benchmarking range only: nothing leaves the machine.
    assert!(
        logs.contains("probe: route 198.18.0.0/15 via 198.18.16.1 dev eth0")
            && !logs.contains("probe: route 0.0.0.0/0"),
        "{logs}"
    );
    let mounted = node.get_json(&["pod", "client", "-n", NS]);
    assert_eq!(mounted["spec"]["serviceAccountName"], "default");

    // exec goes API server -> kubelet (198.18.0.1:10250) -> containerd.
    let exec = node.kubectl_ok(&[
        "exec",
        "-n",
        NS,
        &web_pod,
        "--",
        "/probe",
        "check",
        &format!("http://{cluster_ip}/"),
    ]);
    assert!(exec.contains(": 200 probe web-"), "{exec}");

    let report = node.stop();
    println!("{report}");
    assert!(report.clean, "{report}");
    assert_eq!(report.before, report.after, "{report}");
}

fn http_get(addr: &str) -> String {
    try_http_get(addr).unwrap_or_else(|e| panic!("GET http://{addr}/: {e}"))
}

/// A plain HTTP/1.0 GET / (the probe server closes after answering).
fn try_http_get(addr: &str) -> std::io::Result<String> {
    let addr: SocketAddr = addr.parse().expect("socket address");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// The teardown check is live: a host change the node did not make, and so
/// does not undo, is reported and fails the harness.
#[test]
fn teardown_reports_a_host_change_it_did_not_undo() {
    // In the benchmarking range on lo, like the node's own address.
    const STRAY: &str = "198.18.99.99/32";
    let node = Node::start(&[]);
    let ip = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .expect("run ip");
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    };
    ip(&["addr", "add", STRAY, "dev", "lo"]);
    let report = node.stop();
    ip(&["addr", "del", STRAY, "dev", "lo"]);
    println!("{report}");
    assert!(!report.clean, "{report}");
    assert!(report.status.contains("exit status: 1"), "{report}");
    assert!(
        report
            .leftovers
            .iter()
            .any(|l| l == "addrs + lo inet 198.18.99.99/32"),
        "{report}"
    );
}
