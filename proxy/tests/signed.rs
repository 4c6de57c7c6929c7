//! Signed URLs and signed HTML forms (`auth.signedUrls`), against the real
//! binary: URLs made by `sluice-proxy sign` (and, for the cases the command
//! will not make, such as an expired one, by this file's own HMAC code, a
//! second implementation of the README's algorithm); forms made by
//! `sluice-proxy sign-form` and posted with `curl -F`. Stored bytes are
//! checked by sha256. Both paths: the fast path (HTTP/1.1 with a length:
//! sendfile GET, splice PUT to nginx) and hyper (chunked, HTTP/2).

mod common;
mod engines;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const OLD_KEY: &str = "key-old";
const NEW_KEY: &str = "key-new";

fn policies(engine_url: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: sig}}
stringData: {{old: {OLD_KEY}, new: "{NEW_KEY}\n"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: keys}}
stringData: {{k: api-key-one}}
---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {{name: signed}}
spec:
  pathPrefix: /s/
  backend: {{fs: {{root: s}}}}
  upload: {{maxFileSize: 1Mi}}
  auth: {{signedUrls: {{secretRef: {{name: sig}}}}}}
---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {{name: mixed}}
spec:
  pathPrefix: /m/
  backend: {{fs: {{root: m}}}}
  auth: {{apiKeys: {{secretRef: {{name: keys}}}}, signedUrls: {{secretRef: {{name: sig}}}}}}
---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {{name: dav}}
spec:
  pathPrefix: /dav/
  backend: {{http: {{url: "{engine_url}/store", mode: put}}}}
  auth: {{signedUrls: {{secretRef: {{name: sig}}}}}}
"#
    )
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A file holding `key` and a newline, as `echo key > file` makes it.
fn key_file(key: &str) -> tempfile::NamedTempFile {
    temp_file(format!("{key}\n").as_bytes())
}

/// Runs `sluice-proxy <args>` and returns its stdout, trimmed.
fn run_proxy_cmd(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-proxy"))
        .args(args)
        .output()
        .expect("run sluice-proxy");
    assert!(
        out.status.success(),
        "sluice-proxy {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `sluice-proxy sign --secret-file F <args>`.
fn sign(key: &str, args: &[&str]) -> String {
    let f = key_file(key);
    let mut all = vec!["sign", "--secret-file", path_str(f.path())];
    all.extend_from_slice(args);
    run_proxy_cmd(&all)
}

/// The README's algorithm, written again here: what an application without
/// sluice's code computes. `key_line`: "", "key:K" or "prefix:P".
#[allow(clippy::too_many_arguments)]
fn signed_query(
    key: &str,
    methods: &str,
    host: &str,
    path: &str,
    expires: i64,
    key_line: &str,
    max_size: &str,
    types: &str,
) -> String {
    let canonical = format!(
        "SLUICE-HMAC-SHA256\n{methods}\n{host}\n{path}\n{expires}\n{key_line}\n{max_size}\n{types}"
    );
    let mut m = <Hmac<Sha256>>::new_from_slice(key.as_bytes()).unwrap();
    m.update(canonical.as_bytes());
    let sig = hex::encode(m.finalize().into_bytes());
    let mut q = format!("X-Sluice-Methods={methods}&X-Sluice-Expires={expires}");
    if let Some(k) = key_line.strip_prefix("key:") {
        q += &format!("&X-Sluice-Key={k}");
    }
    if let Some(k) = key_line.strip_prefix("prefix:") {
        q += &format!("&X-Sluice-Key-Prefix={k}");
    }
    if !max_size.is_empty() {
        q += &format!("&X-Sluice-Max-Size={max_size}");
    }
    if !types.is_empty() {
        q += &format!("&X-Sluice-Types={types}");
    }
    q + &format!("&X-Sluice-Signature={sig}")
}

fn host(p: &Proxy) -> String {
    p.addr.to_string()
}

fn png(len: usize) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    v.extend(random_bytes(len - v.len(), 9));
    v
}

#[test]
fn signed_put_then_get_on_both_paths() {
    let p = Proxy::start(Some(&policies("http://127.0.0.1:9")), &[]);
    let data = random_bytes(200_000, 1);
    let f = temp_file(&data);

    // The `sign` subcommand's URL, used as is by curl.
    let put_url = sign(
        NEW_KEY,
        &[
            "--method",
            "PUT",
            "--url",
            &p.url("/s/a.bin"),
            "--expires",
            "15m",
        ],
    );
    assert!(put_url.contains("X-Sluice-Signature="), "{put_url}");
    let r = curl(&["-T", path_str(f.path()), &put_url]);
    assert_created_one(&r, "a.bin", &data);
    assert_eq!(sha256_hex(&p.read_stored("s/a.bin")), sha256_hex(&data));
    // The same URL over HTTP/2 (hyper): `:authority` is the signed host.
    let r = curl(&[
        "--http2-prior-knowledge",
        "-T",
        path_str(f.path()),
        &put_url,
    ]);
    assert_created_one(&r, "a.bin", &data);
    assert_eq!(r.version, "HTTP/2");

    // A download link: GET and HEAD signed, fast path (sendfile) and HTTP/2 (hyper).
    let get_url = sign(
        OLD_KEY,
        &[
            "--method",
            "GET",
            "--method",
            "HEAD",
            "--url",
            &p.url("/s/a.bin"),
            "--expires",
            "1h",
        ],
    );
    let before = p.metric(r#"sluice_download_responses_total{path="sendfile"}"#);
    let r = curl(&["--http1.1", &get_url]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    assert_eq!(
        p.metric(r#"sluice_download_responses_total{path="sendfile"}"#),
        before + 1.0
    );
    let r = curl(&["--http2-prior-knowledge", &get_url]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.version, "HTTP/2");
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    let r = curl(&["-I", &get_url]);
    assert_eq!(r.status, 200);

    // The PUT URL does not download, the GET URL does not upload, nothing unsigned passes.
    for proto in ["--http1.1", "--http2-prior-knowledge"] {
        assert_reject(&curl(&[proto, &put_url]), 403, "signature_invalid");
        assert_reject(
            &curl(&[proto, &p.url("/s/a.bin")]),
            403,
            "signature_invalid",
        );
    }
    // (HTTP/1.1 only: over HTTP/2 curl reports the stream reset that ends an
    // upload refused before its body as an error.)
    assert_reject(
        &curl(&["-T", path_str(f.path()), &get_url]),
        403,
        "signature_invalid",
    );

    // With API keys too: either is accepted; none is 401 as before.
    let r = curl(&[
        "-H",
        "X-Api-Key: api-key-one",
        "-T",
        path_str(f.path()),
        &p.url("/m/k.bin"),
    ]);
    assert_created_one(&r, "k.bin", &data);
    let url = sign(
        OLD_KEY,
        &[
            "--method",
            "GET",
            "--url",
            &p.url("/m/k.bin"),
            "--expires",
            "1m",
        ],
    );
    let r = curl(&[&url]);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    assert_reject(&curl(&[&p.url("/m/k.bin")]), 401, "unauthorized");
}

#[test]
fn expired_tampered_and_rotated() {
    let p = Proxy::start(Some(&policies("http://127.0.0.1:9")), &[]);
    let data = random_bytes(1000, 2);
    let f = temp_file(&data);
    let h = host(&p);
    let at = |q: &str| p.url(&format!("/s/r.bin?{q}"));
    let put = |url: &str| curl(&["-T", path_str(f.path()), url]);

    // Signed here with each of the two keys: both accepted (rotation).
    for key in [OLD_KEY, NEW_KEY] {
        let q = signed_query(key, "PUT", &h, "/s/r.bin", now() + 60, "", "", "");
        assert_created_one(&put(&at(&q)), "r.bin", &data);
    }
    // A key the Secret does not hold.
    let q = signed_query("key-other", "PUT", &h, "/s/r.bin", now() + 60, "", "", "");
    assert_reject(&put(&at(&q)), 403, "signature_invalid");

    // Expired: a good signature, checked before the expiry.
    let q = signed_query(NEW_KEY, "PUT", &h, "/s/r.bin", now() - 5, "", "", "");
    assert_reject(&put(&at(&q)), 403, "signature_expired");
    let bad = q.replace("X-Sluice-Signature=", "X-Sluice-Signature=00");
    assert_reject(&put(&at(&bad)), 403, "signature_invalid");

    let good = signed_query(NEW_KEY, "PUT", &h, "/s/r.bin", now() + 60, "", "1000", "");
    assert_created_one(&put(&at(&good)), "r.bin", &data);
    // Tampered: path, method, a condition, the signature, the expiry, host; extra parameters.
    let tampered = [
        p.url(&format!("/s/other.bin?{good}")),
        at(&good.replace("Max-Size=1000", "Max-Size=2000")),
        at(&good.replace("Methods=PUT", "Methods=PUT,GET")),
        at(&{
            let i = good.rfind('=').unwrap() + 1;
            let c = if &good[i..i + 1] == "0" { "1" } else { "0" };
            format!("{}{c}{}", &good[..i], &good[i + 1..])
        }),
        at(&good.replace(
            &format!("Expires={}", now() + 60),
            &format!("Expires={}", now() + 99_999),
        )),
        at(&format!("{good}&download=1")),
        at(&format!("{good}&X-Sluice-Owner=me")),
        p.url(&format!(
            "/s/r.bin?{}",
            good.replace("X-Sluice-Signature=", "X-Sluice-Sig=")
        )),
    ];
    for url in &tampered {
        assert_reject(&put(url), 403, "signature_invalid");
    }
    assert_reject(
        &curl(&[
            "-H",
            &format!("Host: localhost:{}", p.addr.port()),
            "-T",
            path_str(f.path()),
            &at(&good),
        ]),
        403,
        "signature_invalid",
    );
    // A method not signed.
    assert_reject(&curl(&[&at(&good)]), 403, "signature_invalid");
    assert_eq!(sha256_hex(&p.read_stored("s/r.bin")), sha256_hex(&data));
    assert!(!p.files_in_data_dir().iter().any(|f| f.contains("other")));
}

#[test]
fn key_prefix_and_exact_key() {
    let p = Proxy::start(Some(&policies("http://127.0.0.1:9")), &[]);
    let data = random_bytes(3000, 3);
    let f = temp_file(&data);

    // A prefix: the URL printed points at the prefix; any key under it.
    let url = sign(
        NEW_KEY,
        &[
            "--method",
            "PUT",
            "--method",
            "GET",
            "--url",
            &p.url("/s/"),
            "--key-prefix",
            "users/42/",
            "--expires",
            "10m",
        ],
    );
    let (base, query) = url.split_once('?').unwrap();
    assert_eq!(base, p.url("/s/users/42/"));
    let r = curl(&[
        "-T",
        path_str(f.path()),
        &format!("{base}photo.bin?{query}"),
    ]);
    assert_created_one(&r, "users/42/photo.bin", &data);
    let r = curl(&[
        "--http2-prior-knowledge",
        &p.url(&format!("/s/users/42/photo.bin?{query}")),
    ]);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    for outside in ["/s/users/43/photo.bin", "/s/users/42", "/s/photo.bin"] {
        let r = curl(&[
            "-T",
            path_str(f.path()),
            &p.url(&format!("{outside}?{query}")),
        ]);
        assert_reject(&r, 403, "key_not_allowed");
    }
    // The same URL on another route (same Secret) is not valid: the route's prefix is signed.
    let r = curl(&[
        "-T",
        path_str(f.path()),
        &p.url(&format!("/m/users/42/x.bin?{query}")),
    ]);
    assert_reject(&r, 403, "signature_invalid");

    // An exact key.
    let url = sign(
        NEW_KEY,
        &[
            "--method",
            "PUT",
            "--url",
            &p.url("/s/one.bin"),
            "--key",
            "one.bin",
            "--expires",
            "10m",
        ],
    );
    assert_created_one(&curl(&["-T", path_str(f.path()), &url]), "one.bin", &data);
    let url2 = sign(
        NEW_KEY,
        &[
            "--method",
            "PUT",
            "--url",
            &p.url("/s/two.bin"),
            "--key",
            "one.bin",
            "--expires",
            "10m",
        ],
    );
    assert_reject(
        &curl(&["-T", path_str(f.path()), &url2]),
        403,
        "key_not_allowed",
    );
    assert!(
        !p.files_in_data_dir()
            .iter()
            .any(|f| f.contains("two.bin") || f.contains("43"))
    );
}

/// Max size and types on the fast path (splice to nginx, HTTP/1.1 with a
/// length) and on hyper (chunked, HTTP/2): 413 and 415, nothing stored.
#[test]
fn size_and_type_conditions_on_both_paths() {
    let engine = engines::nginx();
    let p = Proxy::start(Some(&policies(&engine.url())), &[]);
    let url_for = |key: &str| {
        sign(
            NEW_KEY,
            &[
                "--method",
                "PUT",
                "--url",
                &p.url(&format!("/dav/{key}")),
                "--expires",
                "10m",
                "--max-size",
                "4Ki",
                "--types",
                "image/png",
            ],
        )
    };

    // Within the conditions: the fast path stores it (splice).
    let ok = png(4096);
    let f = temp_file(&ok);
    let r = curl(&[
        "-H",
        "Content-Type: image/png",
        "-T",
        path_str(f.path()),
        &url_for("ok.png"),
    ]);
    assert_created_one(&r, "ok.png", &ok);
    // The fast path: "fast" when the body came with the head, else "splice".
    let via = p.wait_access("PUT", "/dav/ok.png", 201)["via"].clone();
    assert!(via == "fast" || via == "splice", "via {via}");
    assert_eq!(
        sha256_hex(&std::fs::read(engine.root.join("store/ok.png")).unwrap()),
        sha256_hex(&ok)
    );
    // And hyper (chunked).
    let r = curl(&[
        "-H",
        "Content-Type: image/png",
        "-H",
        "Transfer-Encoding: chunked",
        "-T",
        path_str(f.path()),
        &url_for("ok2.png"),
    ]);
    assert_created_one(&r, "ok2.png", &ok);

    // Too large: by its length up front (fast path declines, hyper refuses
    // before the body), mid-stream when chunked, and over HTTP/2.
    let big = png(5000);
    let f = temp_file(&big);
    for (i, extra) in [&[][..], &["-H", "Transfer-Encoding: chunked"]]
        .iter()
        .enumerate()
    {
        let key = format!("big{i}.png");
        let mut args = vec!["-H", "Content-Type: image/png"];
        args.extend_from_slice(extra);
        let url = url_for(&key);
        args.extend_from_slice(&["-T", path_str(f.path()), &url]);
        assert_reject(&curl(&args), 413, "file_too_large");
    }
    let r = h2_put(
        &url_for("big2.png"),
        &[("content-type", "image/png")],
        big.clone(),
    );
    assert_eq!(r.version, "HTTP/2.0");
    assert_reject(&r, 413, "file_too_large");

    // Wrong type: declared, and declared right but sniffed wrong; each path.
    let text = random_bytes(1000, 4)
        .iter()
        .map(|b| b'a' + b % 26)
        .collect::<Vec<_>>();
    let f = temp_file(&text);
    for (i, extra) in [&[][..], &["-H", "Transfer-Encoding: chunked"]]
        .iter()
        .enumerate()
    {
        for ct in ["text/plain", "image/png"] {
            let url = url_for(&format!("t{i}.png"));
            let h = format!("Content-Type: {ct}");
            let mut args = vec!["-H", h.as_str()];
            args.extend_from_slice(extra);
            args.extend_from_slice(&["-T", path_str(f.path()), &url]);
            let r = curl(&args);
            assert_eq!(r.status, 415, "{ct} {extra:?}: {}", r.text());
        }
    }
    for ct in ["text/plain", "image/png"] {
        let r = h2_put(&url_for("t2.png"), &[("content-type", ct)], text.clone());
        assert_eq!(r.status, 415, "{ct} over HTTP/2: {}", r.text());
    }
    let stored = engines::files_under(&engine.root);
    assert_eq!(
        stored,
        vec!["store/ok.png", "store/ok2.png"],
        "nothing refused is stored"
    );
}

/// `sign-form`'s fields as (name, value) pairs, in its order.
fn form_fields(key: &str, args: &[&str]) -> Vec<(String, String)> {
    let f = key_file(key);
    let mut all = vec!["sign-form", "--secret-file", path_str(f.path())];
    all.extend_from_slice(args);
    let v: serde_json::Value = serde_json::from_str(&run_proxy_cmd(&all)).unwrap();
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

/// curl -F of the fields, then the file (or the file first).
fn post_form(
    url: &str,
    fields: &[(String, String)],
    file: &std::path::Path,
    name: &str,
    ct: &str,
    file_first: bool,
) -> Response {
    let file_arg = format!("file=@{};filename={name};type={ct}", path_str(file));
    let mut args: Vec<String> = Vec::new();
    if file_first {
        args.extend(["-F".into(), file_arg.clone()]);
    }
    for (k, v) in fields {
        args.extend(["-F".into(), format!("{k}={v}")]);
    }
    if !file_first {
        args.extend(["-F".into(), file_arg]);
    }
    args.push(url.into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(&refs)
}

#[test]
fn signed_forms() {
    let engine = engines::nginx();
    let p = Proxy::start(Some(&policies(&engine.url())), &[]);
    let fields = form_fields(
        OLD_KEY,
        &[
            "--url",
            &p.url("/s/"),
            "--expires",
            "10m",
            "--key-prefix",
            "users/42/",
            "--max-size",
            "4Ki",
            "--types",
            "image/*",
        ],
    );
    let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["policy", "x-sluice-algorithm", "x-sluice-signature"]
    );
    let ok = png(3000);
    let f = temp_file(&ok);
    let action = p.url("/s/users/42/");

    let r = post_form(&action, &fields, f.path(), "cat.png", "image/png", false);
    assert_created_one(&r, "users/42/cat.png", &ok);
    assert_eq!(
        sha256_hex(&p.read_stored("s/users/42/cat.png")),
        sha256_hex(&ok)
    );

    // A file before the policy, as S3 refuses it.
    let r = post_form(&action, &fields, f.path(), "early.png", "image/png", true);
    assert_reject(&r, 403, "form_policy_missing");
    // No fields at all.
    let r = post_form(&action, &[], f.path(), "none.png", "image/png", false);
    assert_reject(&r, 403, "form_policy_missing");
    // Conditions: key prefix, size, type.
    let r = post_form(
        &p.url("/s/users/43/"),
        &fields,
        f.path(),
        "cat.png",
        "image/png",
        false,
    );
    assert_reject(&r, 403, "key_not_allowed");
    let big = temp_file(&png(5000));
    let r = post_form(&action, &fields, big.path(), "big.png", "image/png", false);
    assert_reject(&r, 413, "file_too_large");
    let txt = temp_file(b"just text, no image at all");
    let r = post_form(&action, &fields, txt.path(), "t.png", "image/png", false);
    assert_eq!(r.status, 415, "{}", r.text());
    let r = post_form(&action, &fields, txt.path(), "t.txt", "text/plain", false);
    assert_reject(&r, 415, "type_not_allowed");

    // Tampered: the policy changed (a wider size), the signature changed.
    let mut t = fields.clone();
    t[0].1 = {
        use base64::Engine;
        let e = base64::engine::general_purpose::STANDARD;
        let doc = String::from_utf8(e.decode(&t[0].1).unwrap()).unwrap();
        e.encode(doc.replace("4096", "999999"))
    };
    assert_reject(
        &post_form(&action, &t, f.path(), "x.png", "image/png", false),
        403,
        "signature_invalid",
    );
    let mut t = fields.clone();
    t[2].1 = t[2].1.chars().rev().collect();
    assert_reject(
        &post_form(&action, &t, f.path(), "x.png", "image/png", false),
        403,
        "signature_invalid",
    );
    // The signed form on another route sharing the Secret: its path is signed.
    let r = post_form(
        &p.url("/m/users/42/"),
        &fields,
        f.path(),
        "x.png",
        "image/png",
        false,
    );
    assert_reject(&r, 403, "signature_invalid");
    // A redirect the policy does not name.
    let mut t = fields.clone();
    t.push((
        "success_action_redirect".into(),
        "https://evil.example/".into(),
    ));
    assert_reject(
        &post_form(&action, &t, f.path(), "x.png", "image/png", false),
        403,
        "signature_invalid",
    );

    // Signed by hand (this file's HMAC): expired; a minimum size.
    let hand = |policy: String| {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&policy);
        let mut m = <Hmac<Sha256>>::new_from_slice(NEW_KEY.as_bytes()).unwrap();
        m.update(b64.as_bytes());
        let sig = hex::encode(m.finalize().into_bytes());
        vec![
            ("policy".to_string(), b64),
            ("x-sluice-signature".to_string(), sig),
        ]
    };
    let scope = format!(
        r#"{{"host": "{}"}}, ["starts-with", "$path", "/s/"]"#,
        host(&p)
    );
    let t = hand(format!(
        r#"{{"expiration": {}, "conditions": [{scope}]}}"#,
        now() - 5
    ));
    assert_reject(
        &post_form(&action, &t, f.path(), "x.png", "image/png", false),
        403,
        "signature_expired",
    );
    let t = hand(format!(
        r#"{{"expiration": {}, "conditions": [{scope}, ["content-length-range", 3001, 5000]]}}"#,
        now() + 60
    ));
    assert_reject(
        &post_form(&action, &t, f.path(), "small.png", "image/png", false),
        400,
        "file_too_small",
    );
    let r = post_form(&action, &t, big.path(), "enough.png", "image/png", false);
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(
        !p.files_in_data_dir()
            .iter()
            .any(|f| f.contains("small.png"))
    );

    // success_action_redirect: 303 to it, with the key and etag (sha256).
    let fields = form_fields(
        NEW_KEY,
        &[
            "--url",
            &p.url("/s/"),
            "--expires",
            "10m",
            "--redirect",
            "https://app.example/done?u=1",
        ],
    );
    let r = post_form(
        &p.url("/s/"),
        &fields,
        f.path(),
        "r.png",
        "image/png",
        false,
    );
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(
            format!(
                "https://app.example/done?u=1&key=r.png&etag={}",
                sha256_hex(&ok)
            )
            .as_str()
        )
    );
    assert_eq!(sha256_hex(&p.read_stored("s/r.png")), sha256_hex(&ok));

    // On a route the fast form path would take (an http engine): it hands
    // signed forms to hyper, which checks them the same.
    let fields = form_fields(
        NEW_KEY,
        &[
            "--url",
            &p.url("/dav/"),
            "--expires",
            "10m",
            "--max-size",
            "4Ki",
        ],
    );
    let r = post_form(
        &p.url("/dav/"),
        &fields,
        f.path(),
        "d.png",
        "image/png",
        false,
    );
    assert_created_one(&r, "d.png", &ok);
    assert_eq!(p.wait_access("POST", "/dav/", 201)["via"], "hyper");
    let r = post_form(
        &p.url("/dav/"),
        &fields,
        f.path(),
        "e.png",
        "image/png",
        true,
    );
    assert_reject(&r, 403, "form_policy_missing");
    let r = post_form(
        &p.url("/dav/"),
        &fields,
        big.path(),
        "big.png",
        "image/png",
        false,
    );
    assert_reject(&r, 413, "file_too_large");
    let mut on_engine = engines::files_under(&engine.root);
    on_engine.sort();
    assert_eq!(on_engine, vec!["store/d.png"]);
}
