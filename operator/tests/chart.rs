//! The Helm chart (charts/sluice) against the real helm CLI and a real API
//! server (tests/kube): it lints, renders what the binaries expect, installs,
//! refuses bad values through its schema, and grants the operator exactly
//! the access it needs, checked with `kubectl auth can-i` and with requests
//! made as the operator's ServiceAccount.
//!
//! The install tests share one control plane (`Kube::shared`), each in its
//! own namespace with its own release.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::kube::{Kube, helm_command, ok, run, workspace_root};
use serde_json::Value;

fn chart() -> String {
    workspace_root()
        .join("charts/sluice")
        .to_string_lossy()
        .into_owned()
}

/// helm without a cluster (lint, template), homes in a temp dir.
fn helm_offline(args: &[&str]) -> std::process::Output {
    let home = tempfile::tempdir().expect("temp dir");
    run(helm_command(home.path(), None, args), None)
}

/// `helm template` with extra args, parsed into its documents.
fn render(extra: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec!["template", "sluice", chart.as_str(), "-n", "sluice-system"];
    args.extend_from_slice(extra);
    let out = ok("helm template", helm_offline(&args));
    serde_saphyr::from_multiple::<Value>(&out)
        .unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{out}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            let have: Vec<String> = docs
                .iter()
                .map(|d| format!("{}/{}", d["kind"], d["metadata"]["name"]))
                .collect();
            panic!("no {kind} {name} rendered; have {have:?}")
        })
}

fn args_of(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("container args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

#[test]
fn the_charts_crd_is_the_repositorys() {
    let root = workspace_root();
    let repo = std::fs::read_to_string(root.join("crds/uploadpolicy.yaml")).unwrap();
    let chart = std::fs::read_to_string(root.join("charts/sluice/crds/uploadpolicy.yaml")).unwrap();
    assert!(
        repo == chart,
        "charts/sluice/crds/uploadpolicy.yaml differs from crds/uploadpolicy.yaml; \
         cp crds/uploadpolicy.yaml charts/sluice/crds/"
    );
}

#[test]
fn helm_lint_passes() {
    let chart = chart();
    for extra in [
        &[][..],
        &["--set", "operator.watchNamespace=team-a"],
        &[
            "--set",
            "proxy.autoscaling.enabled=true",
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "adminToken.existingSecret=mine",
        ],
    ] {
        let mut args = vec!["lint", "--strict", chart.as_str()];
        args.extend_from_slice(extra);
        ok(&format!("helm lint {extra:?}"), helm_offline(&args));
    }
}

/// IRSA: the role ARN goes on the proxy's ServiceAccount, which still mounts no
/// API token (EKS projects its own web identity token).
#[test]
fn proxy_service_account_takes_the_irsa_role_annotation() {
    let arn = "arn:aws:iam::111122223333:role/sluice-uploads";
    let docs = render(&[
        "--set",
        &format!("proxy.serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn={arn}"),
    ]);
    let sa = find(&docs, "ServiceAccount", "sluice-proxy");
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        arn
    );
    assert_eq!(sa["automountServiceAccountToken"], false);
    let proxy = find(&docs, "Deployment", "sluice-proxy");
    assert_eq!(
        proxy["spec"]["template"]["spec"]["serviceAccountName"],
        "sluice-proxy"
    );
}

#[test]
fn helm_template_renders_what_the_binaries_take() {
    let docs = render(&[]);

    let proxy = find(&docs, "Deployment", "sluice-proxy");
    assert_eq!(proxy["spec"]["replicas"], 2);
    assert_eq!(
        args_of(proxy),
        [
            "--listen=0.0.0.0:8080",
            "--admin-listen=0.0.0.0:9901",
            "--admin-token-file=/var/run/sluice/token/token",
            "--config-snapshot=/etc/sluice/config/config.json",
            "--state-dir=/var/lib/sluice/state",
            "--data-dir=/var/lib/sluice/data",
            "--log-format=json",
            "--shutdown-grace=30s",
        ]
    );
    let labels = &proxy["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/name"], "sluice");
    assert_eq!(labels["app.kubernetes.io/instance"], "sluice");
    assert_eq!(labels["app.kubernetes.io/component"], "proxy");
    let pod = &proxy["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    // A stopping proxy first sleeps (its endpoint leaves the Services), then
    // drains within what is left of the kubelet's grace period.
    assert_eq!(container["lifecycle"]["preStop"]["sleep"]["seconds"], 5);
    assert_eq!(pod["terminationGracePeriodSeconds"], 40);
    let config = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .expect("config volume");
    assert_eq!(config["configMap"]["name"], "sluice-config");
    assert_eq!(config["configMap"]["optional"], true);
    restricted(pod);

    let operator = find(&docs, "Deployment", "sluice-operator");
    assert_eq!(operator["spec"]["replicas"], 2);
    assert_eq!(
        args_of(operator),
        [
            "run",
            "--namespace=$(POD_NAMESPACE)",
            "--proxy-selector=app.kubernetes.io/name=sluice,app.kubernetes.io/instance=sluice,app.kubernetes.io/component=proxy",
            "--proxy-admin-port=9901",
            "--admin-token-file=/var/run/sluice/token/token",
            "--configmap=sluice-config",
            "--lease-name=sluice-operator",
            "--identity=$(POD_NAME)",
            "--listen=0.0.0.0:8081",
            "--log-format=json",
        ]
    );
    restricted(&operator["spec"]["template"]["spec"]);

    find(&docs, "Service", "sluice-proxy");
    find(&docs, "PodDisruptionBudget", "sluice-proxy");
    find(&docs, "PodDisruptionBudget", "sluice-operator");
    find(&docs, "ServiceAccount", "sluice-operator");
    find(&docs, "ServiceAccount", "sluice-proxy");
    find(&docs, "Secret", "sluice-admin-token");
    find(
        &docs,
        "ClusterRole",
        "sluice-system-sluice-operator-policies",
    );
    find(&docs, "Role", "sluice-operator");
    // The operator writes the ConfigMap; the chart must not own it.
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for absent in ["ConfigMap", "HorizontalPodAutoscaler", "ServiceMonitor"] {
        assert!(!kinds.contains(&absent), "{absent} rendered by default");
    }

    // Options: a watched namespace, autoscaling, ServiceMonitors.
    let docs = render(&[
        "--set",
        "operator.watchNamespace=team-a",
        "--set",
        "proxy.autoscaling.enabled=true",
        "--set",
        "serviceMonitor.enabled=true",
    ]);
    let operator = find(&docs, "Deployment", "sluice-operator");
    assert!(args_of(operator).contains(&"--watch-namespace=team-a".to_string()));
    let role = find(&docs, "Role", "sluice-operator-policies");
    assert_eq!(role["metadata"]["namespace"], "team-a");
    assert!(!docs.iter().any(|d| d["kind"] == "ClusterRole"));
    assert!(find(&docs, "Deployment", "sluice-proxy")["spec"]["replicas"].is_null());
    find(&docs, "HorizontalPodAutoscaler", "sluice-proxy");
    find(&docs, "ServiceMonitor", "sluice-proxy");
    find(&docs, "ServiceMonitor", "sluice-operator");

    // Before Kubernetes 1.30 there is no preStop sleep action (and the image
    // has no shell), so the drain gets the whole grace period.
    let docs = render(&["--kube-version", "1.29.0"]);
    let proxy = find(&docs, "Deployment", "sluice-proxy");
    assert!(args_of(proxy).contains(&"--shutdown-grace=35s".to_string()));
    assert!(proxy["spec"]["template"]["spec"]["containers"][0]["lifecycle"].is_null());
    // A grace period the preStop sleep eats is refused with a clear message.
    let out = helm_offline(&[
        "template",
        "sluice",
        chart().as_str(),
        "--set",
        "proxy.terminationGracePeriodSeconds=10",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("must exceed proxy.preStopSleepSeconds"),
        "{stderr}"
    );
}

/// TLS on the proxies' client port (a Secret the user names) and on their
/// admin port (a CA and certificate the chart generates): the flags the
/// binaries take, the mounts, HTTPS probes, and a generated pair that chains
/// to its CA for the name the operator verifies (checked with openssl).
#[test]
fn helm_template_renders_tls() {
    let docs = render(&[
        "--set",
        "proxy.tls.secretName=web-tls",
        "--set",
        "proxy.tls.clientCaSecretName=client-cas",
        "--set",
        "adminTls.enabled=true",
        "--set",
        "serviceMonitor.enabled=true",
    ]);
    let proxy = find(&docs, "Deployment", "sluice-proxy");
    let args = args_of(proxy);
    for want in [
        "--tls-cert=/etc/sluice/tls/tls.crt",
        "--tls-key=/etc/sluice/tls/tls.key",
        "--tls-client-ca=/etc/sluice/client-ca/ca.crt",
        "--admin-tls-cert=/etc/sluice/admin-tls/tls.crt",
        "--admin-tls-key=/etc/sluice/admin-tls/tls.key",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} not in {args:?}");
    }
    let pod = &proxy["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
    }
    let volume = |pod: &Value, name: &str| -> Value {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };
    assert_eq!(volume(pod, "tls")["secret"]["secretName"], "web-tls");
    assert_eq!(
        volume(pod, "client-ca")["secret"]["secretName"],
        "client-cas"
    );
    assert_eq!(
        volume(pod, "admin-tls")["secret"]["secretName"],
        "sluice-admin-tls"
    );
    restricted(pod);
    let service = find(&docs, "Service", "sluice-proxy");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "https");

    let operator = find(&docs, "Deployment", "sluice-operator");
    assert!(args_of(operator).contains(&"--proxy-ca=/etc/sluice/admin-tls/ca.crt".to_string()));
    // The operator gets the CA only, never the proxies' key.
    let ca = volume(&operator["spec"]["template"]["spec"], "admin-ca");
    assert_eq!(
        ca["secret"]["items"],
        serde_json::json!([{"key": "ca.crt", "path": "ca.crt"}])
    );
    let monitor = find(&docs, "ServiceMonitor", "sluice-proxy");
    assert_eq!(monitor["spec"]["endpoints"][0]["scheme"], "https");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["tlsConfig"]["serverName"],
        "sluice-proxy-admin"
    );

    let secret = find(&docs, "Secret", "sluice-admin-tls");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let dir = tempfile::tempdir().unwrap();
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        let b64 = secret["data"][key].as_str().expect(key);
        let pem = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
            .expect("base64");
        std::fs::write(dir.path().join(key), pem).unwrap();
    }
    let openssl = |args: &[&str]| -> Vec<u8> {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("openssl (./scripts/test installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    openssl(&[
        "verify",
        "-CAfile",
        "ca.crt",
        "-verify_hostname",
        "sluice-proxy-admin",
        "-purpose",
        "sslserver",
        "tls.crt",
    ]);
    // The key is the certificate's: the same public key comes out of both.
    assert_eq!(
        openssl(&["x509", "-in", "tls.crt", "-noout", "-pubkey"]),
        openssl(&["pkey", "-in", "tls.key", "-pubout"])
    );

    // Off by default: plaintext, HTTP probes, no TLS Secret.
    let docs = render(&[]);
    let proxy = find(&docs, "Deployment", "sluice-proxy");
    assert!(!args_of(proxy).iter().any(|a| a.contains("tls")));
    assert!(
        !docs
            .iter()
            .any(|d| d["metadata"]["name"] == "sluice-admin-tls")
    );
}

/// The restricted Pod Security Standard, pod and container level.
fn restricted(pod: &Value) {
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert_eq!(psc["runAsUser"], 65532);
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    for c in pod["containers"].as_array().unwrap() {
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{c}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{c}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{c}"
        );
        assert!(c["resources"]["requests"].is_object(), "{c}");
    }
}

/// Installs the chart as `release` into namespace `ns` (created if absent);
/// returns helm's output.
fn install(kube: &Kube, release: &str, ns: &str, extra: &[&str]) -> String {
    let chart = chart();
    kube.create_namespace(ns);
    let mut args = vec![
        "install",
        release,
        chart.as_str(),
        "-n",
        ns,
        "--timeout",
        "60s",
    ];
    args.extend_from_slice(extra);
    let out = kube.helm_ok(&args);
    // Helm waits for a CRD it created; when a concurrent install created it,
    // this one skipped it and has not waited.
    kube.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/uploadpolicies.sluice.dev",
        "--timeout=60s",
    ]);
    out
}

#[test]
fn helm_install_creates_the_objects() {
    let kube = Kube::shared();
    let ns = "sluice-system";
    // The API server's PodSecurity admission enforces the restricted standard here.
    kube.create_namespace(ns);
    kube.kubectl_ok(&[
        "label",
        "namespace",
        ns,
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    install(kube, "sluice", ns, &[]);

    for (kind, name) in [
        ("deployment", "sluice-operator"),
        ("deployment", "sluice-proxy"),
        ("service", "sluice-proxy"),
        ("poddisruptionbudget", "sluice-operator"),
        ("poddisruptionbudget", "sluice-proxy"),
        ("serviceaccount", "sluice-operator"),
        ("serviceaccount", "sluice-proxy"),
        ("role", "sluice-operator"),
        ("rolebinding", "sluice-operator"),
        ("secret", "sluice-admin-token"),
    ] {
        kube.get_json(&[kind, name, "-n", ns]);
    }
    kube.get_json(&["clusterrole", "sluice-system-sluice-operator-policies"]);

    // No kubelet or controller-manager makes Pods here: admit each pod
    // template as a Pod (server-side dry run) under the restricted standard.
    for deployment in ["sluice-operator", "sluice-proxy"] {
        let d = kube.get_json(&["deployment", deployment, "-n", ns]);
        let pod = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": format!("{deployment}-admission"), "namespace": ns,
                         "labels": d["spec"]["template"]["metadata"]["labels"]},
            "spec": d["spec"]["template"]["spec"],
        });
        ok(
            &format!("{deployment}'s pod under the restricted Pod Security Standard"),
            kube.kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &pod.to_string()),
        );
    }
    kube.get_json(&[
        "clusterrolebinding",
        "sluice-system-sluice-operator-policies",
    ]);

    // The API server accepted a policy under the installed CRD.
    kube.create_namespace("web");
    kube.apply(
        "apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\n\
         metadata: {name: avatars, namespace: web}\n\
         spec: {pathPrefix: /avatars/, backend: {fs: {root: avatars}}}\n",
    );
    kube.get_json(&["uploadpolicies", "avatars", "-n", "web"]);

    // The generated token survives an upgrade (proxies and operator keep agreeing).
    let token = || {
        kube.get_json(&["secret", "sluice-admin-token", "-n", ns])["data"]["token"]
            .as_str()
            .expect("token key")
            .to_string()
    };
    let before = token();
    assert!(before.len() >= 64, "48 random characters, base64: {before}");
    kube.helm_ok(&[
        "upgrade",
        "sluice",
        &chart(),
        "-n",
        ns,
        "--timeout",
        "60s",
        "--set",
        "proxy.replicas=3",
    ]);
    assert_eq!(token(), before, "helm upgrade replaced the admin token");
    let replicas = kube.wait_until(
        "the upgrade sets 3 proxy replicas",
        Duration::from_secs(30),
        &["deployment -n sluice-system"],
        || {
            let r = kube.get_json(&["deployment", "sluice-proxy", "-n", ns])["spec"]["replicas"]
                .as_i64();
            (r == Some(3)).then_some(r)
        },
    );
    assert_eq!(replicas, Some(3));
}

#[test]
fn bad_values_fail_at_install() {
    let kube = Kube::shared();
    let chart = chart();
    kube.create_namespace("sluice-bad");
    for (bad, why) in [
        (&["--set", "operator.replicas=two"][..], "replicas"),
        (&["--set", "proxy.replicaCount=3"][..], "replicaCount"),
        (&["--set", "proxy.service.type=Ingress"][..], "type"),
        (&["--set", "adminToken.value=short"][..], "value"),
        (
            &["--set", "operator.watchNamespace=Not_A_Namespace"][..],
            "watchNamespace",
        ),
    ] {
        let mut args = vec!["install", "bad", chart.as_str(), "-n", "sluice-bad"];
        args.extend_from_slice(bad);
        let out = kube.helm(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("schema") && stderr.contains(why),
            "helm install {bad:?} should fail the schema naming {why}: {}\n{stderr}",
            out.status
        );
    }
    // Nothing was installed.
    assert!(
        !kube
            .helm(&["status", "bad", "-n", "sluice-bad"])
            .status
            .success()
    );
}

/// `kubectl auth can-i` as `user`: true when allowed.
fn can_i(kube: &Kube, user: &str, args: &[&str]) -> bool {
    let mut all = vec!["auth", "can-i", "--as", user];
    all.extend_from_slice(args);
    let out = kube.kubectl(&all);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match (out.status.code(), answer.as_str()) {
        (Some(0), "yes") => true,
        (Some(1), "no") => false,
        _ => panic!(
            "kubectl {}: {}\n{answer}\n{}",
            all.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn check_access(kube: &Kube, user: &str, allowed: &[&[&str]], denied: &[&[&str]]) {
    let mut wrong = Vec::new();
    for a in allowed {
        if !can_i(kube, user, a) {
            wrong.push(format!("denied but needed: {}", a.join(" ")));
        }
    }
    for d in denied {
        if can_i(kube, user, d) {
            wrong.push(format!("allowed but not needed: {}", d.join(" ")));
        }
    }
    assert!(wrong.is_empty(), "{user}:\n{}", wrong.join("\n"));
}

/// Namespace of the release whose operator watches every namespace.
const NS_ALL: &str = "rbac-all";

#[test]
fn operator_rbac_cluster_wide_is_least_privilege() {
    let kube = Kube::shared();
    let ns = NS_ALL;
    install(kube, "sluice", ns, &[]);
    let op = format!("system:serviceaccount:{ns}:sluice-operator");
    let allowed: &[&[&str]] = &[
        &["list", "uploadpolicies.sluice.dev", "--all-namespaces"],
        &["watch", "uploadpolicies.sluice.dev", "--all-namespaces"],
        &["get", "uploadpolicies.sluice.dev", "-n", "web"],
        &[
            "patch",
            "uploadpolicies.sluice.dev",
            "--subresource=status",
            "-n",
            "web",
        ],
        &[
            "update",
            "uploadpolicies.sluice.dev",
            "--subresource=status",
            "-n",
            "web",
        ],
        &["list", "secrets", "--all-namespaces"],
        &["watch", "secrets", "-n", "web"],
        &["get", "secrets", "-n", "web"],
        &["create", "events.events.k8s.io", "-n", "web"],
        &["patch", "events.events.k8s.io", "-n", "web"],
        &["create", "events", "-n", "web"],
        &["list", "pods", "-n", NS_ALL],
        &["watch", "pods", "-n", NS_ALL],
        &["get", "pods", "-n", NS_ALL],
        &["create", "configmaps", "-n", NS_ALL],
        &["get", "configmaps/sluice-config", "-n", NS_ALL],
        &["patch", "configmaps/sluice-config", "-n", NS_ALL],
        &["update", "configmaps/sluice-config", "-n", NS_ALL],
        &["create", "leases.coordination.k8s.io", "-n", NS_ALL],
        &[
            "get",
            "leases.coordination.k8s.io/sluice-operator",
            "-n",
            NS_ALL,
        ],
        &[
            "update",
            "leases.coordination.k8s.io/sluice-operator",
            "-n",
            NS_ALL,
        ],
    ];
    let denied: &[&[&str]] = &[
        &["update", "uploadpolicies.sluice.dev", "-n", "web"],
        &["delete", "uploadpolicies.sluice.dev", "-n", "web"],
        &["create", "uploadpolicies.sluice.dev", "-n", "web"],
        &["create", "secrets", "-n", "web"],
        &["update", "secrets", "-n", "web"],
        &["delete", "pods", "-n", NS_ALL],
        &["create", "pods", "-n", NS_ALL],
        &["list", "pods", "-n", "web"],
        &["delete", "configmaps/sluice-config", "-n", NS_ALL],
        &["patch", "configmaps/other", "-n", NS_ALL],
        &["get", "configmaps/other", "-n", NS_ALL],
        &["list", "configmaps", "-n", NS_ALL],
        &["update", "leases.coordination.k8s.io/other", "-n", NS_ALL],
        &[
            "delete",
            "leases.coordination.k8s.io/sluice-operator",
            "-n",
            NS_ALL,
        ],
        &["list", "nodes"],
        &["create", "customresourcedefinitions.apiextensions.k8s.io"],
    ];
    check_access(kube, &op, allowed, denied);

    // The proxies' ServiceAccount may do nothing at all.
    let proxy = format!("system:serviceaccount:{ns}:sluice-proxy");
    check_access(
        kube,
        &proxy,
        &[],
        &[
            &["get", "pods", "-n", ns],
            &["get", "secrets", "-n", ns],
            &["get", "configmaps/sluice-config", "-n", ns],
            &["list", "uploadpolicies.sluice.dev", "--all-namespaces"],
        ],
    );

    // Requests as the operator: server-side apply creates and then updates
    // its ConfigMap; another ConfigMap is refused; the Lease works the same.
    let token = kube.sa_token(ns, "sluice-operator");
    let as_op = kube.kubeconfig_for_token(&token);
    let apply_as_op = |yaml: &str| {
        kube.kubectl_as(
            &as_op,
            &[
                "apply",
                "--server-side",
                "--field-manager=sluice-operator",
                "-f",
                "-",
            ],
            Some(yaml),
        )
    };
    let cm = |name: &str, v: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             data: {{config.json: '{{\"version\": \"{v}\"}}'}}\n"
        )
    };
    ok(
        "SSA create of the config ConfigMap",
        apply_as_op(&cm("sluice-config", "1")),
    );
    ok(
        "SSA update of the config ConfigMap",
        apply_as_op(&cm("sluice-config", "2")),
    );
    let other = apply_as_op(&cm("other", "1"));
    assert!(
        !other.status.success(),
        "the operator created ConfigMap other"
    );
    let lease = format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\n\
         metadata: {{name: sluice-operator, namespace: {ns}}}\n\
         spec: {{holderIdentity: sluice-operator-0, leaseDurationSeconds: 15}}\n"
    );
    let create = kube.kubectl_as(&as_op, &["create", "-f", "-"], Some(&lease));
    ok("create the Lease", create);
    ok(
        "get the Lease",
        kube.kubectl_as(&as_op, &["get", "lease", "sluice-operator", "-n", ns], None),
    );
    let get_secret = kube.kubectl_as(
        &as_op,
        &["get", "secret", "sluice-admin-token", "-n", ns],
        None,
    );
    assert!(
        get_secret.status.success(),
        "watching every namespace, the operator reads Secrets everywhere"
    );
}

#[test]
fn operator_rbac_namespaced_is_least_privilege() {
    let kube = Kube::shared();
    let ns = "rbac-scoped";
    kube.create_namespace("team-a");
    kube.create_namespace("team-b");
    install(
        kube,
        "scoped",
        ns,
        &[
            "--set",
            "operator.watchNamespace=team-a",
            "--set",
            "proxy.autoscaling.enabled=true",
        ],
    );
    kube.get_json(&["horizontalpodautoscaler", "scoped-sluice-proxy", "-n", ns]);
    let op = format!("system:serviceaccount:{ns}:scoped-sluice-operator");
    check_access(
        kube,
        &op,
        &[
            &["list", "uploadpolicies.sluice.dev", "-n", "team-a"],
            &["watch", "uploadpolicies.sluice.dev", "-n", "team-a"],
            &[
                "patch",
                "uploadpolicies.sluice.dev",
                "--subresource=status",
                "-n",
                "team-a",
            ],
            &["list", "secrets", "-n", "team-a"],
            &["get", "secrets", "-n", "team-a"],
            &["create", "events.events.k8s.io", "-n", "team-a"],
            &["create", "events.events.k8s.io", "-n", ns],
            &["list", "pods", "-n", ns],
            &["patch", "configmaps/scoped-sluice-config", "-n", ns],
            &[
                "update",
                "leases.coordination.k8s.io/scoped-sluice-operator",
                "-n",
                ns,
            ],
        ],
        &[
            &["list", "uploadpolicies.sluice.dev", "-n", "team-b"],
            &["list", "uploadpolicies.sluice.dev", "--all-namespaces"],
            &["get", "secrets", "-n", "team-b"],
            &["list", "secrets", "--all-namespaces"],
            // Its own namespace is not a watched one: its Secrets stay closed.
            &["get", "secrets", "-n", ns],
            &["create", "events.events.k8s.io", "-n", "team-b"],
            &["list", "pods", "-n", "team-a"],
        ],
    );
    let token = kube.sa_token(ns, "scoped-sluice-operator");
    let as_op: PathBuf = kube.kubeconfig_for_token(&token);
    ok(
        "list policies in team-a as the operator",
        kube.kubectl_as(&as_op, &["get", "uploadpolicies", "-n", "team-a"], None),
    );
    let out = kube.kubectl_as(&as_op, &["get", "uploadpolicies", "-n", "team-b"], None);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("forbidden"),
        "team-b is not watched: {out:?}"
    );
}
