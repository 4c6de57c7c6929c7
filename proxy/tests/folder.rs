//! The --policies folder is decoded strictly against the CRD schema, and every
//! document that does not decode is left out on its own: the proxy starts and
//! serves the good policies, the log and /readyz name the bad documents (file,
//! document, field, nearest known field), and reloads fix or break one
//! document without touching the others.

mod common;

use common::*;
use serde_json::Value;

fn policy(name: &str, prefix: &str, upload: &str) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\nmetadata: {{name: {name}}}\nspec:\n  pathPrefix: {prefix}\n  backend: {{fs: {{root: {name}}}}}\n  upload: {{{upload}}}\n"
    )
}

const GOOD: &str = "maxFileSize: 1Mi";
const TYPO: &str = "maxFileSzie: 1Ki";
const FIXED: &str = "maxFileSize: 1Ki";

/// An S3 policy without its required `bucket`.
const NO_BUCKET: &str = "apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\nmetadata: {name: s3}\nspec:\n  pathPrefix: /s3/\n  backend: {s3: {endpoint: 'http://127.0.0.1:9', credentialsSecret: {name: k}}}\n";

fn folder(docs: &[String]) -> String {
    docs.join("---\n")
}

fn readyz(p: &Proxy) -> Value {
    let r = p.admin_get("/readyz");
    assert_eq!(r.status, 200, "/readyz: {}", r.text());
    let v = r.json();
    assert_eq!(v["ready"], true, "{v}");
    v
}

/// (document, policy, reason, field, nearest) of each entry of /readyz's `notAccepted`,
/// checking each names `file`.
fn not_accepted(p: &Proxy, file: &str) -> Vec<(Value, Value, Value, Value, Value)> {
    let v = readyz(p);
    v["notAccepted"]
        .as_array()
        .unwrap_or_else(|| panic!("no notAccepted in {v}"))
        .iter()
        .filter(|n| n["file"] == file)
        .map(|n| {
            assert!(n["message"].as_str().is_some_and(|m| !m.is_empty()), "{n}");
            (
                n["document"].clone(),
                n["policy"].clone(),
                n["reason"].clone(),
                n["field"].clone(),
                n["nearest"].clone(),
            )
        })
        .collect()
}

fn entry(
    document: Option<u64>,
    policy: Option<&str>,
    reason: &str,
    field: Option<&str>,
    nearest: Option<&str>,
) -> (Value, Value, Value, Value, Value) {
    (
        document.into(),
        policy.into(),
        reason.into(),
        field.into(),
        nearest.into(),
    )
}

/// Writes `name` in the policies folder atomically (a dotfile the proxy ignores, renamed).
fn write_file(p: &Proxy, name: &str, yaml: &str) {
    let dir = p
        .policies_file()
        .parent()
        .expect("policies dir")
        .to_path_buf();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, yaml).expect("write policies file");
    std::fs::rename(&tmp, dir.join(name)).expect("rename policies file");
}

#[test]
fn bad_documents_are_left_out_named_and_fixed_one_at_a_time() {
    let start = folder(&[
        policy("good", "/good/", GOOD),
        policy("typo", "/typo/", TYPO),
        NO_BUCKET.to_string(),
    ]);
    let p = Proxy::start(Some(&start), &["--reload-interval", "100ms"]);
    let file = p.policies_file().display().to_string();
    let two_k = random_bytes(2048, 90);

    // Started: the good policy serves, the two bad ones are out and named.
    assert_created_one(&put(&p, "/good/a.bin", &two_k), "a.bin", &two_k);
    assert_reject(&put(&p, "/typo/a.bin", &two_k), 404, "no_route");
    assert_reject(&put(&p, "/s3/a.bin", &two_k), 404, "no_route");
    assert_eq!(
        not_accepted(&p, &file),
        [
            entry(
                Some(2),
                Some("default/typo"),
                "UnknownField",
                Some("spec.upload.maxFileSzie"),
                Some("maxFileSize")
            ),
            entry(
                Some(3),
                Some("default/s3"),
                "MissingField",
                Some("spec.backend.s3.bucket"),
                None
            ),
        ]
    );
    let line = p
        .log_json()
        .into_iter()
        .find(|l| l["message"] == "policy not accepted" && l["policy"] == "default/typo")
        .unwrap_or_else(|| panic!("no log line for default/typo:\n{}", p.logs_text()));
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(line["file"], file.as_str(), "{line}");
    assert_eq!(line["document"], 2, "{line}");
    assert_eq!(line["reason"], "UnknownField", "{line}");
    assert_eq!(line["field"], "spec.upload.maxFileSzie", "{line}");
    assert_eq!(line["nearest"], "maxFileSize", "{line}");

    // Reload, the typo fixed: that policy is accepted with the limit it meant (1Ki,
    // not the 1 GiB default); the s3 one is still out.
    p.write_policies(&folder(&[
        policy("good", "/good/", GOOD),
        policy("typo", "/typo/", FIXED),
        NO_BUCKET.to_string(),
    ]));
    wait_until(
        DEADLINE,
        || not_accepted(&p, &file).len() == 1,
        || format!("{}\n{}", readyz(&p), p.logs_text()),
    );
    assert_eq!(not_accepted(&p, &file)[0].3, "spec.backend.s3.bucket");
    let small = random_bytes(500, 91);
    assert_created_one(&put(&p, "/typo/small.bin", &small), "small.bin", &small);
    assert_reject(&put(&p, "/typo/big.bin", &two_k), 413, "file_too_large");

    // Break the good one (a wrong type) and add a file that is not YAML: the
    // others keep serving, and all three are named.
    p.write_policies(&folder(&[
        policy(
            "good",
            "/good/",
            "maxFileSize: 1Mi, verifyContent: sometimes",
        ),
        policy("typo", "/typo/", FIXED),
        NO_BUCKET.to_string(),
    ]));
    write_file(&p, "zz-broken.yaml", "spec: [unclosed\n");
    let broken = p
        .policies_file()
        .with_file_name("zz-broken.yaml")
        .display()
        .to_string();
    wait_until(
        DEADLINE,
        || not_accepted(&p, &file).len() == 2 && not_accepted(&p, &broken).len() == 1,
        || format!("{}\n{}", readyz(&p), p.logs_text()),
    );
    assert_eq!(
        not_accepted(&p, &file)[0],
        entry(
            Some(1),
            Some("default/good"),
            "InvalidField",
            Some("spec.upload.verifyContent"),
            None
        )
    );
    assert_eq!(
        not_accepted(&p, &broken),
        [entry(None, None, "YamlSyntax", None, None)]
    );
    assert_reject(&put(&p, "/good/b.bin", &small), 404, "no_route");
    assert_created_one(&put(&p, "/typo/again.bin", &small), "again.bin", &small);
    assert_eq!(
        p.metric("sluice_config_reloads_total{result=\"error\"}"),
        0.0
    );
}
