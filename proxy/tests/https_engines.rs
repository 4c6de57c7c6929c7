//! HTTPS storage engines, against real servers: nginx with `ssl` as a WebDAV
//! engine, and nginx terminating TLS in front of s3s-fs (SigV4 still checked
//! by s3s-fs). The engines' certificates come from a CA made per test
//! (`common::pki`), trusted through a Secret in the policy folder.
//!
//! Uploads (PUT and multipart POST) and downloads keep their bytes; a file
//! refused mid-stream leaves nothing on the engine; a certificate that does
//! not verify is a 502 whose message says why (`certificate not trusted`,
//! `name mismatch`, `expired`, `not yet valid`), and /readyz names the
//! policy; mTLS engines take the client certificate of `clientCertSecretRef`,
//! and one refused is `client certificate refused` (or nginx's own 400,
//! quoted); `serverName` is what is verified. Transfers to https engines go
//! through hyper (no splice): access log `via: hyper`, metrics `copy`.

mod common;
mod engines;

use std::time::Duration;

use common::pki::{Ca, Leaf};
use common::*;
use engines::{Engine, S3_ACCESS, S3_BUCKET, S3_SECRET, TlsEngine, files_under};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

const WAIT: Duration = Duration::from_secs(20);

fn tls_of(leaf: &Leaf) -> TlsEngine {
    TlsEngine {
        chain_pem: leaf.chain_pem.clone(),
        key_pem: leaf.key_pem.clone(),
        client_ca_pem: None,
        require_in_handshake: false,
    }
}

/// `text` as a YAML block scalar indented by `n` spaces.
fn block(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    let mut out = String::from("|\n");
    for l in text.lines() {
        out.push_str(&pad);
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// A Secret `engine-ca` holding `ca.crt`.
fn ca_secret(ca: &Ca) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: engine-ca}}\nstringData:\n  ca.crt: {}",
        block(&ca.cert_pem, 4)
    )
}

/// A `kubernetes.io/tls` Secret named `name`.
fn tls_secret(name: &str, leaf: &Leaf) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: {}  tls.key: {}",
        block(&leaf.chain_pem, 4),
        block(&leaf.key_pem, 4)
    )
}

fn policy(name: &str, prefix: &str, backend: &str, upload: &str) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\nmetadata: {{name: {name}}}\nspec:\n  pathPrefix: {prefix}\n  backend: {backend}\n  upload: {upload}\n"
    )
}

fn docs(parts: &[String]) -> String {
    parts.join("---\n")
}

const CA_REF: &str = "caSecretRef: {name: engine-ca, key: ca.crt}";

/// GET over HTTP/1.1 (which the fast path would take for a plain engine) and
/// h2: the same bytes, copied by hyper's client from the TLS engine.
fn download_matches(p: &Proxy, path: &str, data: &[u8]) {
    let before = p.metric(r#"sluice_download_responses_total{path="copy"}"#);
    for proto in ["--http1.1", "--http2-prior-knowledge"] {
        let r = curl(&[proto, &p.url(path)]);
        assert_eq!(r.status, 200, "GET {path} {proto}: {}", r.text());
        assert_eq!(
            sha256_hex(&r.body),
            sha256_hex(data),
            "bytes of {path} {proto}"
        );
    }
    let r = curl(&["--http1.1", "-r", "100-199", &p.url(path)]);
    assert_eq!(r.status, 206, "range: {}", r.text());
    assert_eq!(r.body, &data[100..200]);
    assert_eq!(
        p.metric(r#"sluice_download_responses_total{path="copy"}"#),
        before + 3.0,
        "every download from a TLS engine is copied"
    );
    assert_eq!(
        p.metric(r#"sluice_download_responses_total{path="splice"}"#),
        0.0,
        "nothing spliced from a TLS engine"
    );
    assert_eq!(p.wait_access("GET", path, 200)["via"], "hyper");
}

fn readyz(p: &Proxy) -> serde_json::Value {
    let r = p.admin_get("/readyz");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn https_dav_engine_round_trip_rejections_and_server_name() {
    let ca = Ca::new("engines test CA");
    let engine = engines::nginx_tls(tls_of(&ca.leaf(&["localhost", "127.0.0.1"])), None);
    // Reached by address, its certificate names only storage.test.
    let named = engines::nginx_tls(tls_of(&ca.leaf(&["storage.test"])), None);
    let u = engine.https_url();
    let yaml = docs(&[
        ca_secret(&ca),
        policy(
            "dav",
            "/dav/",
            &format!("{{http: {{url: \"{u}/store\", mode: put, tls: {{{CA_REF}}}}}}}"),
            "{maxFileSize: 4Mi}",
        ),
        policy(
            "img",
            "/img/",
            &format!("{{http: {{url: \"{u}/images\", mode: put, tls: {{{CA_REF}}}}}}}"),
            "{allowedTypes: [\"image/png\"], verifyContent: true}",
        ),
        policy(
            "named",
            "/named/",
            &format!(
                "{{http: {{url: \"{}/n\", tls: {{{CA_REF}, serverName: storage.test}}}}}}",
                named.https_url()
            ),
            "{}",
        ),
    ]);
    let p = Proxy::start(Some(&yaml), &[]);

    // PUT with a Content-Length (the fast path would splice it to a plain engine).
    let data = random_bytes(3 << 20, 1);
    let r = put(&p, "/dav/dir/a.bin", &data);
    assert_created_one(&r, "dir/a.bin", &data);
    assert_eq!(p.wait_access("PUT", "/dav/dir/a.bin", 201)["via"], "hyper");
    assert_eq!(
        std::fs::read(engine.root.join("store/dir/a.bin")).expect("stored by nginx"),
        data
    );
    // A multipart POST.
    let small = random_bytes(70_000, 2);
    let f = temp_file(&small);
    let r = curl(&[
        "-F",
        &format!("file=@{};filename=b.bin", path_str(f.path())),
        &p.url("/dav/"),
    ]);
    assert_created_one(&r, "b.bin", &small);
    download_matches(&p, "/dav/dir/a.bin", &data);
    download_matches(&p, "/dav/b.bin", &small);

    // Refused mid-stream: too large (chunked, so only the count finds it) and a
    // sniffed type that is not allowed. Nothing reaches the engine's disk.
    let f = temp_file(&random_bytes(6 << 20, 4));
    let r = curl(&[
        "-T",
        path_str(f.path()),
        "-H",
        "Transfer-Encoding: chunked",
        &p.url("/dav/big.bin"),
    ]);
    assert_reject(&r, 413, "file_too_large");
    let f = temp_file(&b"just some text, not an image\n".repeat(400));
    let r = curl(&[
        "-T",
        path_str(f.path()),
        "-H",
        "Content-Type: image/png",
        &p.url("/img/fake.png"),
    ]);
    assert_reject(&r, 415, "type_not_allowed");
    p.wait_in_flight(0.0);
    assert_eq!(
        files_under(&engine.root),
        vec!["store/b.bin", "store/dir/a.bin"],
        "only the accepted files on nginx"
    );

    // serverName: verified against storage.test, not the URL's 127.0.0.1.
    let r = put(&p, "/named/x.bin", b"named engine");
    assert_created_one(&r, "x.bin", b"named engine");
    assert_eq!(
        std::fs::read(named.root.join("n/x.bin")).expect("stored"),
        b"named engine"
    );
    let r = curl(&[&p.url("/named/x.bin")]);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"named engine"[..]));

    let ready = readyz(&p);
    assert_eq!(ready["notReady"], serde_json::json!([]), "{ready}");
}

/// Object keys in the bucket, asked of s3s-fs directly.
fn s3_keys(plain: &Engine) -> Vec<String> {
    let bucket = Bucket::new(
        plain.url().parse().expect("url"),
        UrlStyle::Path,
        S3_BUCKET,
        "us-east-1",
    )
    .expect("bucket");
    let url = bucket
        .list_objects_v2(Some(&Credentials::new(S3_ACCESS, S3_SECRET)))
        .sign(Duration::from_secs(60));
    let r = curl(&[url.as_str()]);
    assert_eq!(r.status, 200, "ListObjectsV2: {}", r.text());
    let list = rusty_s3::actions::ListObjectsV2::parse_response(&r.text()).expect("list");
    let mut keys: Vec<String> = list.contents.into_iter().map(|c| c.key).collect();
    keys.sort();
    keys
}

#[test]
fn https_s3_endpoint_round_trip_and_rejections() {
    let ca = Ca::new("s3 test CA");
    let s3 = engines::s3();
    let front = engines::nginx_tls(tls_of(&ca.leaf(&["127.0.0.1"])), Some(s3.port));
    // SigV4 is checked behind the TLS front too: an unsigned request is refused by s3s-fs.
    let ca_dir = tempfile::tempdir().unwrap();
    let unsigned = curl(&[
        "--cacert",
        path_str(&ca.write(ca_dir.path(), "ca")),
        &format!("{}/{S3_BUCKET}/", front.https_url()),
    ]);
    assert_eq!(unsigned.status, 403, "unsigned: {}", unsigned.text());

    let yaml = docs(&[
        ca_secret(&ca),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: s3-creds}}\nstringData: {{accessKeyId: {S3_ACCESS}, secretAccessKey: {S3_SECRET}}}\n"
        ),
        policy(
            "s3",
            "/s3/",
            &format!(
                "{{s3: {{endpoint: \"{}\", bucket: {S3_BUCKET}, region: us-east-1, keyPrefix: \"in/\", credentialsSecret: {{name: s3-creds}}, tls: {{{CA_REF}}}}}}}",
                front.https_url()
            ),
            "{maxFileSize: 16Mi, allowedTypes: [\"application/octet-stream\", \"image/png\"], verifyContent: true}",
        ),
    ]);
    let p = Proxy::start(Some(&yaml), &["--s3-part-size", "5242880"]);

    // 12 MiB: a multipart upload of three parts.
    let data = random_bytes(12 << 20, 6);
    assert_created_one(&put(&p, "/s3/big.bin", &data), "big.bin", &data);
    // A multipart POST: one PutObject.
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    png.extend(random_bytes(20_000, 99));
    let f = temp_file(&png);
    let r = curl(&[
        "-F",
        &format!("file=@{};filename=s.png;type=image/png", path_str(f.path())),
        &p.url("/s3/"),
    ]);
    assert_created_one(&r, "s.png", &png);
    assert_eq!(s3_keys(&s3), vec!["in/big.bin", "in/s.png"]);
    download_matches(&p, "/s3/big.bin", &data);
    download_matches(&p, "/s3/s.png", &png);

    // 20 MiB against 16 MiB: parts were uploaded before the limit tripped, so
    // the multipart upload is aborted; a sniffed type that is not allowed.
    let f = temp_file(&random_bytes(20 << 20, 7));
    let r = curl(&[
        "-T",
        path_str(f.path()),
        "-H",
        "Transfer-Encoding: chunked",
        &p.url("/s3/huge.bin"),
    ]);
    assert_reject(&r, 413, "file_too_large");
    let f = temp_file(&b"text pretending to be a PNG\n".repeat(500));
    let r = curl(&[
        "-T",
        path_str(f.path()),
        "-H",
        "Content-Type: image/png",
        &p.url("/s3/fake.png"),
    ]);
    assert_reject(&r, 415, "type_not_allowed");
    p.wait_in_flight(0.0);
    wait_until(
        WAIT,
        || p.logs_text().contains("aborted multipart upload"),
        || format!("no AbortMultipartUpload logged:\n{}", p.logs_text()),
    );
    assert_eq!(s3_keys(&s3), vec!["in/big.bin", "in/s.png"]);
    // Nothing left behind in s3s-fs's storage either (no part files, no objects).
    let stored: Vec<String> = files_under(&s3.root)
        .into_iter()
        .filter(|f| !f.contains("big.bin") && !f.contains("s.png"))
        .collect();
    assert!(
        stored
            .iter()
            .all(|f| !f.contains("huge") && !f.contains("fake")),
        "left in s3s-fs's storage: {stored:?}"
    );
}

/// A 502 `backend_error` whose message holds `reason`; returns the message.
fn assert_502(r: &Response, reason: &str) -> String {
    let m = assert_reject(r, 502, "backend_error");
    assert!(m.contains(reason), "want {reason:?} in {m:?}");
    assert!(m.contains("https://127.0.0.1:"), "names the engine: {m:?}");
    m
}

#[test]
fn failed_verification_is_502_with_the_reason_and_on_readyz() {
    let ca = Ca::new("verify test CA");
    let good = engines::nginx_tls(tls_of(&ca.leaf(&["localhost", "127.0.0.1"])), None);
    let other_name = engines::nginx_tls(tls_of(&ca.leaf(&["other.test"])), None);
    let expired = engines::nginx_tls(tls_of(&ca.expired_leaf(&["127.0.0.1"])), None);
    let now = time::OffsetDateTime::now_utc();
    let future = engines::nginx_tls(
        tls_of(&ca.leaf_valid(
            &["127.0.0.1"],
            now + time::Duration::days(1),
            now + time::Duration::days(7),
        )),
        None,
    );
    let http = |url: &str, tls: &str| format!("{{http: {{url: \"{url}/d\", tls: {{{tls}}}}}}}");
    let yaml = docs(&[
        ca_secret(&ca),
        // No caSecretRef: the system's roots do not know the test CA.
        policy(
            "untrusted",
            "/untrusted/",
            &format!("{{http: {{url: \"{}/d\"}}}}", good.https_url()),
            "{}",
        ),
        policy(
            "wrongname",
            "/wrongname/",
            &http(&other_name.https_url(), CA_REF),
            "{}",
        ),
        policy(
            "servername",
            "/servername/",
            &http(
                &good.https_url(),
                &format!("{CA_REF}, serverName: storage.test"),
            ),
            "{}",
        ),
        policy(
            "expired",
            "/expired/",
            &http(&expired.https_url(), CA_REF),
            "{}",
        ),
        policy(
            "future",
            "/future/",
            &http(&future.https_url(), CA_REF),
            "{}",
        ),
        policy("fine", "/fine/", &http(&good.https_url(), CA_REF), "{}"),
    ]);
    let p = Proxy::start(Some(&yaml), &[]);

    for (prefix, reason) in [
        ("/untrusted/", "certificate not trusted"),
        ("/wrongname/", "name mismatch"),
        ("/servername/", "name mismatch"),
        ("/expired/", "expired"),
        ("/future/", "not yet valid"),
    ] {
        let path = format!("{prefix}a.bin");
        let m = assert_502(&put(&p, &path, b"some bytes"), reason);
        // Downloads go the same way.
        let g = curl(&[&p.url(&path)]);
        assert_502(&g, reason);
        eprintln!("{prefix}: {m}");
    }
    assert_created_one(&put(&p, "/fine/a.bin", b"ok"), "a.bin", b"ok");
    assert!(
        p.metric(r#"sluice_rejections_total{rule="backend_error"}"#) >= 8.0,
        "{}",
        p.metrics()
    );
    assert!(
        p.logs_text().contains("TLS to an engine failed"),
        "a log line per failed handshake"
    );
    for reason in ["certificate not trusted", "name mismatch", "expired"] {
        assert!(
            p.metric(&format!(
                r#"sluice_engine_tls_failures_total{{reason="{reason}"}}"#
            )) >= 2.0,
            "{reason}: {}",
            p.metrics()
        );
    }

    // /readyz: each failing policy with its reason, not the one that works.
    let want = [
        ("default/untrusted", "certificate not trusted"),
        ("default/wrongname", "name mismatch"),
        ("default/servername", "name mismatch"),
        ("default/expired", "expired"),
        ("default/future", "not yet valid"),
    ];
    wait_until(
        WAIT,
        || {
            let r = readyz(&p);
            let list = r["notReady"].as_array().cloned().unwrap_or_default();
            list.len() == want.len()
                && want.iter().all(|(policy, reason)| {
                    list.iter().any(|e| {
                        e["policy"] == *policy
                            && e["reason"].as_str().is_some_and(|s| s.contains(reason))
                    })
                })
        },
        || format!("readyz: {}", readyz(&p)),
    );
    assert_eq!(readyz(&p)["ready"], true);
}

#[test]
fn mtls_engine_takes_the_client_certificate() {
    let ca = Ca::new("mtls server CA");
    let clients = Ca::new("mtls client CA");
    let mut tls = tls_of(&ca.leaf(&["127.0.0.1"]));
    tls.client_ca_pem = Some(clients.cert_pem.clone());
    // nginx checks after the handshake and answers 400 to a client without one...
    let engine = engines::nginx_tls(tls.clone(), None);
    // ...this one refuses it in the handshake, with a TLS alert.
    tls.require_in_handshake = true;
    let strict = engines::nginx_tls(tls, None);
    let (u, su) = (engine.https_url(), strict.https_url());
    let yaml = docs(&[
        ca_secret(&ca),
        tls_secret("sluice-client", &clients.leaf(&["sluice.test"])),
        policy(
            "mtls",
            "/mtls/",
            &format!(
                "{{http: {{url: \"{u}/m\", tls: {{{CA_REF}, clientCertSecretRef: {{name: sluice-client}}}}}}}}"
            ),
            "{}",
        ),
        policy(
            "strict",
            "/strict/",
            &format!(
                "{{http: {{url: \"{su}/m\", tls: {{{CA_REF}, clientCertSecretRef: {{name: sluice-client}}}}}}}}"
            ),
            "{}",
        ),
        policy(
            "nocert",
            "/nocert/",
            &format!("{{http: {{url: \"{u}/m\", tls: {{{CA_REF}}}}}}}"),
            "{}",
        ),
        policy(
            "strict-nocert",
            "/strict-nocert/",
            &format!("{{http: {{url: \"{su}/m\", tls: {{{CA_REF}}}}}}}"),
            "{}",
        ),
    ]);
    let p = Proxy::start(Some(&yaml), &[]);
    let data = random_bytes(100_000, 3);
    assert_created_one(&put(&p, "/mtls/a.bin", &data), "a.bin", &data);
    download_matches(&p, "/mtls/a.bin", &data);
    assert_created_one(&put(&p, "/strict/a.bin", &data), "a.bin", &data);
    download_matches(&p, "/strict/a.bin", &data);

    // Without a certificate: nginx's own answer is quoted...
    let m = assert_reject(
        &put(&p, "/nocert/b.bin", b"no certificate"),
        502,
        "backend_error",
    );
    assert!(
        m.contains("No required SSL certificate was sent") && m.contains(&u),
        "the engine's refusal is named: {m}"
    );
    let m = assert_reject(&curl(&[&p.url("/nocert/a.bin")]), 502, "backend_error");
    assert!(m.contains("No required SSL certificate was sent"), "{m}");
    // ...and a refusal in the handshake is named for what it is. TLS 1.3
    // delivers that refusal (an alert) just after the handshake: when the
    // request is already on its way the alert is its error and the 502 names
    // it; when hyper sees the connection close first, the request fails as
    // "connection was not ready" (a race seen once in a whole-suite run). The
    // reason is then in the log line, the counter and /readyz, checked below.
    for r in [
        put(&p, "/strict-nocert/b.bin", b"no certificate"),
        curl(&[&p.url("/strict-nocert/a.bin")]),
    ] {
        let m = assert_reject(&r, 502, "backend_error");
        assert!(m.contains("https://127.0.0.1:"), "names the engine: {m:?}");
        assert!(
            (m.contains("client certificate refused") && m.contains("tls.clientCertSecretRef"))
                || m.contains("connection was not ready"),
            "{m}"
        );
    }
    wait_until(
        WAIT,
        || {
            p.logs_text()
                .contains("client certificate refused: received fatal alert: CertificateRequired")
        },
        || format!("no log line with the reason:\n{}", p.logs_text()),
    );
    assert!(
        p.metric(r#"sluice_engine_tls_failures_total{reason="client certificate refused"}"#) >= 2.0,
        "{}",
        p.metrics()
    );
    wait_until(
        WAIT,
        || {
            readyz(&p)["notReady"].as_array().is_some_and(|l| {
                l.len() == 1
                    && l[0]["policy"] == "default/strict-nocert"
                    && l[0]["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("client certificate refused"))
            })
        },
        || format!("readyz: {}", readyz(&p)),
    );
    assert_eq!(files_under(&engine.root), vec!["m/a.bin"]);
    assert_eq!(files_under(&strict.root), vec!["m/a.bin"]);
}
