//! CORS per policy (`spec.cors`), against the real binary, held to the Fetch
//! standard's CORS protocol (https://fetch.spec.whatwg.org/#http-cors-protocol):
//!
//! - preflights (`OPTIONS` + `Origin` + `Access-Control-Request-Method`) are
//!   answered by the gate before auth: 204 with the allow headers, or 403
//!   `cors_not_allowed` without them (counted, logged), never a 5xx;
//! - every actual answer to an allowed origin, success or JSON refusal, carries
//!   `Access-Control-Allow-Origin`, the exposed headers and `Vary: Origin`, on
//!   the fast path (curl over HTTP/1.1: sendfile, splice), the hyper path (h2)
//!   and the TLS listener; a disallowed origin gets none of them, and its
//!   request is handled as without CORS;
//! - a bad `cors` block is refused at load, reported as the policy's condition.
//!
//! The browser side (a real Chromium honouring these headers) is in the browser tests.

mod common;
mod engines;

use common::pki::Ca;
use common::*;
use engines::Engine;

const APP: &str = "https://app.example.com";
const EVIL: &str = "https://evil.example";
const EXPOSED: &str = "etag, content-range, accept-ranges, retry-after, allow, www-authenticate";
const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// fs policies: `/app/` (an API key, one origin with credentials, maxAge),
/// `/any/` (`*`, any header), `/plain/` (no cors).
const POLICIES: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {k1: secret-one}
---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {name: app}
spec:
  pathPrefix: /app/
  backend: {fs: {root: app}}
  upload: {maxFileSize: 64Ki, allowedTypes: ["image/png"]}
  auth: {apiKeys: {secretRef: {name: keys}}}
  cors:
    allowedOrigins: ["https://app.example.com", "http://localhost:5173"]
    exposeHeaders: [X-Request-Id]
    maxAge: 600
    allowCredentials: true
---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {name: any}
spec:
  pathPrefix: /any/
  backend: {fs: {root: any}}
  upload: {maxFileSize: 64Ki}
  cors: {allowedOrigins: ["*"], allowedMethods: [GET, PUT], allowedHeaders: ["*"]}
---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {name: plain}
spec:
  pathPrefix: /plain/
  backend: {fs: {root: plain}}
"#;

/// curl's arguments for a preflight of `method` with `headers` from `origin`.
fn preflight(p: &Proxy, path: &str, origin: &str, method: &str, headers: Option<&str>) -> Response {
    let o = format!("Origin: {origin}");
    let m = format!("Access-Control-Request-Method: {method}");
    let mut args = vec!["-X", "OPTIONS", "-H", &o, "-H", &m];
    let h;
    if let Some(v) = headers {
        h = format!("Access-Control-Request-Headers: {v}");
        args.extend(["-H", &h]);
    }
    let url = p.url(path);
    args.push(&url);
    curl(&args)
}

/// No `Access-Control-Allow-*` header at all: what makes a browser fail the
/// preflight or block the read.
fn assert_no_allow_headers(r: &Response) {
    let found: Vec<_> = r
        .headers
        .iter()
        .filter(|(k, _)| k.starts_with("access-control-"))
        .collect();
    assert!(
        found.is_empty(),
        "CORS headers on a refused answer: {found:?}"
    );
}

/// The headers of an actual answer to the allowed origin `APP` on `/app/`.
fn assert_app_headers(r: &Response, what: &str) {
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(APP),
        "{what}: {:?}",
        r.headers
    );
    assert_eq!(
        r.header("access-control-allow-credentials"),
        Some("true"),
        "{what}"
    );
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some(&*format!("{EXPOSED}, x-request-id")),
        "{what}"
    );
    assert_eq!(r.header("vary"), Some("Origin"), "{what}");
    assert_eq!(
        r.header("access-control-allow-methods"),
        None,
        "{what}: preflight-only headers on an actual answer"
    );
}

#[test]
fn preflights_are_answered_before_auth_per_the_fetch_rules() {
    let p = Proxy::start(Some(POLICIES), &[]);

    // Allowed: 204, the origin echoed, methods, the asked headers, max-age,
    // credentials, Vary; no API key needed though the policy has apiKeys.
    let r = preflight(&p, "/app/a.png", APP, "PUT", Some("content-type,x-api-key"));
    assert_eq!(r.status, 204, "{:?} {}", r.headers, r.text());
    assert!(r.body.is_empty());
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, HEAD, PUT, POST")
    );
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type, x-api-key")
    );
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("vary"), Some(PREFLIGHT_VARY));
    assert_eq!(r.header("www-authenticate"), None);
    // The second origin of the list, and a request asking for no header.
    let r = preflight(&p, "/app/", "http://localhost:5173", "POST", None);
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:5173")
    );
    assert_eq!(r.header("access-control-allow-headers"), None);
    // Header names are case-insensitive, and echoed lowercase.
    let r = preflight(
        &p,
        "/app/a.png",
        APP,
        "PUT",
        Some("X-Api-Key, Authorization"),
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("x-api-key, authorization")
    );

    // Not allowed: 403 cors_not_allowed, no allow headers, Vary still.
    let refused = [
        (EVIL, "PUT", None, "origin \"https://evil.example\""),
        // Origins compare exactly, as browsers serialise them.
        ("https://app.example.com/", "PUT", None, "origin"),
        ("https://APP.example.com", "PUT", None, "origin"),
        ("https://app.example.com:8443", "PUT", None, "origin"),
        ("http://app.example.com", "PUT", None, "origin"),
        ("null", "PUT", None, "origin \"null\""),
        (APP, "DELETE", None, "method \"DELETE\""),
        // Methods are case-sensitive.
        (APP, "put", None, "method \"put\""),
        (
            APP,
            "PUT",
            Some("x-api-key, x-evil"),
            "request header \"x-evil\"",
        ),
    ];
    for (origin, method, headers, why) in refused {
        let r = preflight(&p, "/app/a.png", origin, method, headers);
        let msg = assert_reject(&r, 403, "cors_not_allowed");
        assert!(msg.contains(why), "{origin} {method} {headers:?}: {msg}");
        assert_no_allow_headers(&r);
        assert_eq!(r.header("vary"), Some(PREFLIGHT_VARY));
    }
    let n = refused.len() as f64;
    assert_eq!(
        p.metric(r#"sluice_rejections_total{rule="cors_not_allowed"}"#),
        n
    );
    let l = p.wait_access("OPTIONS", "/app/a.png", 403);
    assert_eq!(l["rule"], "cors_not_allowed", "{l}");
    assert_eq!(l["policy"], "default/app", "{l}");
    let l = p.wait_access("OPTIONS", "/app/a.png", 204);
    assert_eq!(l["rule"], "", "{l}");

    // `*` without credentials: `*` answered, any header but Authorization,
    // which the Fetch standard never lets a wildcard cover.
    let r = preflight(&p, "/any/x", EVIL, "PUT", Some("x-anything,content-type"));
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("x-anything, content-type")
    );
    assert_eq!(r.header("access-control-allow-credentials"), None);
    assert_eq!(r.header("access-control-max-age"), None);
    let r = preflight(&p, "/any/x", EVIL, "PUT", Some("authorization"));
    assert_reject(&r, 403, "cors_not_allowed");
    let r = preflight(&p, "/any/x", EVIL, "POST", None);
    assert_reject(&r, 403, "cors_not_allowed");
    assert_no_allow_headers(&r);

    // Not a preflight (no Access-Control-Request-Method): handled as before,
    // auth first, and the answer carries the allowed origin's headers.
    let o = format!("Origin: {APP}");
    let r = curl(&["-X", "OPTIONS", "-H", &o, &p.url("/app/a.png")]);
    assert_reject(&r, 401, "unauthorized");
    assert_app_headers(&r, "OPTIONS without a request method");
    let r = curl(&["-X", "OPTIONS", "-H", &o, &p.url("/any/a.png")]);
    assert_reject(&r, 405, "method_not_allowed");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    // A policy without cors: a preflight is an OPTIONS like any other (405).
    let r = preflight(&p, "/plain/a", APP, "PUT", None);
    assert_reject(&r, 405, "method_not_allowed");
    assert_no_allow_headers(&r);
    assert_eq!(r.header("vary"), None);
    // No policy at all: 404, as before.
    let r = preflight(&p, "/nowhere/a", APP, "PUT", None);
    assert_reject(&r, 404, "no_route");
    assert_eq!(
        p.metric(r#"sluice_rejections_total{rule="cors_not_allowed"}"#),
        n + 2.0,
        "the two refused preflights of the `*` policy are counted too"
    );
}

#[tokio::test]
async fn preflights_over_h2_and_actual_answers_on_the_hyper_path() {
    let p = Proxy::start(Some(POLICIES), &[]);
    let c = client_h2();
    let png = png_bytes();

    let r = Response::from_reqwest(
        c.request(reqwest::Method::OPTIONS, p.url("/app/a.png"))
            .header("origin", APP)
            .header("access-control-request-method", "PUT")
            .header("access-control-request-headers", "x-api-key")
            .send()
            .await
            .expect("preflight"),
    )
    .await;
    assert_eq!((r.status, r.version.as_str()), (204, "HTTP/2.0"));
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("access-control-allow-headers"), Some("x-api-key"));

    let put = |path: &str, origin: &str, key: Option<&str>, ct: &str, body: Vec<u8>| {
        let mut b = c
            .put(p.url(path))
            .header("origin", origin)
            .header("content-type", ct)
            .body(body);
        if let Some(k) = key {
            b = b.header("x-api-key", k);
        }
        async move { Response::from_reqwest(b.send().await.expect("PUT")).await }
    };
    // 201, and the refusals a page must be able to read.
    let r = put(
        "/app/a.png",
        APP,
        Some("secret-one"),
        "image/png",
        png.clone(),
    )
    .await;
    assert_created_one(&r, "a.png", &png);
    assert_app_headers(&r, "h2 201");
    let r = put("/app/b.png", APP, None, "image/png", png.clone()).await;
    assert_reject(&r, 401, "unauthorized");
    assert_app_headers(&r, "h2 401");
    let r = put("/app/c.png", APP, Some("wrong"), "image/png", png.clone()).await;
    assert_reject(&r, 403, "forbidden");
    assert_app_headers(&r, "h2 403");
    let r = put(
        "/app/big.png",
        APP,
        Some("secret-one"),
        "image/png",
        vec![0; 100_000],
    )
    .await;
    assert_reject(&r, 413, "file_too_large");
    assert_app_headers(&r, "h2 413");
    let r = put(
        "/app/t.txt",
        APP,
        Some("secret-one"),
        "text/plain",
        b"hi".to_vec(),
    )
    .await;
    assert_reject(&r, 415, "type_not_allowed");
    assert_app_headers(&r, "h2 415");
    // A multipart POST, then a download.
    let form = multipart_body(&[Part {
        name: "file",
        filename: Some("m.png"),
        content_type: Some("image/png"),
        data: &png,
    }]);
    let r = Response::from_reqwest(
        c.post(p.url("/app/"))
            .header("origin", APP)
            .header("x-api-key", "secret-one")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(form)
            .send()
            .await
            .expect("POST"),
    )
    .await;
    assert_created_one(&r, "m.png", &png);
    assert_app_headers(&r, "h2 POST 201");
    let r = Response::from_reqwest(
        c.get(p.url("/app/m.png"))
            .header("origin", APP)
            .header("x-api-key", "secret-one")
            .send()
            .await
            .expect("GET"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body == png);
    assert_app_headers(&r, "h2 GET 200");
    assert!(r.header("etag").is_some(), "exposed etag is sent");

    // A disallowed origin: handled as without CORS (the upload is stored),
    // no CORS headers but Vary; refusals likewise.
    let r = put(
        "/app/e.png",
        EVIL,
        Some("secret-one"),
        "image/png",
        png.clone(),
    )
    .await;
    assert_created_one(&r, "e.png", &png);
    assert_no_allow_headers(&r);
    assert_eq!(r.header("vary"), Some("Origin"));
    let r = put("/app/f.png", EVIL, None, "image/png", png.clone()).await;
    assert_reject(&r, 401, "unauthorized");
    assert_no_allow_headers(&r);
    // No Origin at all (curl, a server): Vary only, so a cache keeps them apart.
    let r = Response::from_reqwest(
        c.get(p.url("/app/m.png"))
            .header("x-api-key", "secret-one")
            .send()
            .await
            .expect("GET"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_no_allow_headers(&r);
    assert_eq!(r.header("vary"), Some("Origin"));
    // A `*` policy: the same headers for every request, and no Vary.
    for origin in [Some(EVIL), None] {
        let mut b = c.get(p.url("/any/none.bin"));
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        let r = Response::from_reqwest(b.send().await.expect("GET")).await;
        assert_reject(&r, 404, "not_found");
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        assert_eq!(r.header("access-control-expose-headers"), Some(EXPOSED));
        assert_eq!(r.header("access-control-allow-credentials"), None);
        assert_eq!(r.header("vary"), None);
    }
    // A policy without cors: nothing, as before.
    let r = put(
        "/plain/p.bin",
        APP,
        None,
        "application/octet-stream",
        b"x".to_vec(),
    )
    .await;
    assert_eq!(r.status, 201);
    assert_no_allow_headers(&r);
    assert_eq!(r.header("vary"), None);
    for l in p.access_logs() {
        assert_eq!(l["via"], "hyper", "{l}");
    }
}

/// An nginx engine (the splice paths) and an fs route (sendfile), both with cors.
fn engine_policies(engine: &Engine) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: keys}}
stringData: {{k1: secret-one}}
---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {{name: dav}}
spec:
  pathPrefix: /dav/
  backend: {{http: {{url: "{u}/store", mode: put}}}}
  upload: {{maxFileSize: 64Ki, allowedTypes: ["image/png"], verifyContent: true}}
  cors:
    allowedOrigins: ["https://app.example.com"]
    exposeHeaders: [X-Request-Id]
    allowCredentials: true
---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {{name: files}}
spec:
  pathPrefix: /files/
  backend: {{fs: {{root: files}}}}
  auth: {{apiKeys: {{secretRef: {{name: keys}}}}}}
  cors:
    allowedOrigins: ["https://app.example.com"]
    exposeHeaders: [X-Request-Id]
    allowCredentials: true
"#,
        u = engine.url()
    )
}

#[test]
fn actual_answers_carry_cors_headers_on_the_fast_path() {
    let mut engine = engines::nginx();
    let p = Proxy::start(Some(&engine_policies(&engine)), &[]);
    let png = png_bytes();
    let f = temp_file(&png);
    let o = format!("Origin: {APP}");
    let evil = format!("Origin: {EVIL}");

    // PUT, spliced to the engine: 201 with the headers; a disallowed origin's
    // upload is stored the same, without them.
    for (origin, key) in [(&o, "a.png"), (&evil, "e.png")] {
        let r = curl(&[
            "--http1.1",
            "-H",
            origin,
            "-H",
            "Content-Type: image/png",
            "-T",
            path_str(f.path()),
            &p.url(&format!("/dav/{key}")),
        ]);
        assert_created_one(&r, key, &png);
        let l = p.wait_access("PUT", &format!("/dav/{key}"), 201);
        assert!(l["via"] == "splice" || l["via"] == "fast", "{l}");
        if origin == &o {
            assert_app_headers(&r, "fast PUT 201");
        } else {
            assert_no_allow_headers(&r);
            assert_eq!(r.header("vary"), Some("Origin"));
        }
    }
    assert_eq!(std::fs::read(engine.root.join("store/e.png")).unwrap(), png);

    // Multipart POST on the fast form path.
    let r = curl(&[
        "--http1.1",
        "-H",
        &o,
        "-F",
        &format!("file=@{};filename=m.png;type=image/png", path_str(f.path())),
        &p.url("/dav/"),
    ]);
    assert_created_one(&r, "m.png", &png);
    assert_app_headers(&r, "fast POST 201");
    let via = p.wait_access("POST", "/dav/", 201)["via"].clone();
    assert!(via == "splice" || via == "fast", "{via}");

    // Refused mid-stream by the upload rules, on the splice path: declared
    // PNG, sniffed as text (415); the page reads why.
    let text = temp_file(&b"just some text, not an image\n".repeat(400));
    let r = curl(&[
        "--http1.1",
        "-H",
        &o,
        "-H",
        "Content-Type: image/png",
        "-T",
        path_str(text.path()),
        &p.url("/dav/fake.png"),
    ]);
    assert_reject(&r, 415, "type_not_allowed");
    assert_app_headers(&r, "fast PUT 415 mid-stream");
    let via = p.wait_access("PUT", "/dav/fake.png", 415)["via"].clone();
    assert!(via == "splice" || via == "fast", "{via}");
    // Too large for the file limit, found in the multipart body on the form path.
    let mut big = png_bytes();
    big.extend(random_bytes(100_000, 3));
    let big = temp_file(&big);
    let r = curl(&[
        "--http1.1",
        "-H",
        &o,
        "-F",
        &format!(
            "file=@{};filename=big.png;type=image/png",
            path_str(big.path())
        ),
        &p.url("/dav/"),
    ]);
    assert_reject(&r, 413, "file_too_large");
    assert_app_headers(&r, "fast POST 413 mid-stream");
    // The fast path: "splice", or "fast" when the body came with the head.
    let via = p.wait_access("POST", "/dav/", 413)["via"].clone();
    assert!(via == "splice" || via == "fast", "{via}");

    // Downloads: relayed from the engine (splice), and from disk (sendfile).
    let r = curl(&["--http1.1", "-H", &o, &p.url("/dav/a.png")]);
    assert_eq!(r.status, 200);
    assert!(r.body == png);
    assert_app_headers(&r, "fast relayed GET 200");
    let r = curl(&["--http1.1", "-H", &evil, &p.url("/dav/a.png")]);
    assert_eq!(r.status, 200);
    assert_no_allow_headers(&r);
    assert_eq!(r.header("vary"), Some("Origin"));
    let r = curl(&["--http1.1", "-H", &o, &p.url("/dav/none.png")]);
    assert_reject(&r, 404, "not_found");
    assert_app_headers(&r, "fast relayed GET 404");

    let r = curl(&[
        "--http1.1",
        "-H",
        &o,
        "-H",
        "X-Api-Key: secret-one",
        "-F",
        &format!("file=@{};filename=s.png", path_str(f.path())),
        &p.url("/files/"),
    ]);
    assert_created_one(&r, "s.png", &png);
    assert_app_headers(&r, "fs POST 201");
    let r = curl(&[
        "--http1.1",
        "-H",
        &o,
        "-H",
        "X-Api-Key: secret-one",
        "-H",
        "Range: bytes=0-9",
        &p.url("/files/s.png"),
    ]);
    assert_eq!(r.status, 206);
    assert_app_headers(&r, "sendfile 206");
    assert_eq!(p.wait_access("GET", "/files/s.png", 206)["via"], "sendfile");
    // 401 written by the fast path itself.
    let r = curl(&["--http1.1", "-H", &o, &p.url("/files/s.png")]);
    assert_reject(&r, 401, "unauthorized");
    assert_app_headers(&r, "fast GET 401");
    assert_eq!(p.wait_access("GET", "/files/s.png", 401)["via"], "sendfile");
    let r = curl(&["--http1.1", "-H", &evil, &p.url("/files/s.png")]);
    assert_reject(&r, 401, "unauthorized");
    assert_no_allow_headers(&r);

    // Exact heads: the fast path writes each header once, and keeps the
    // connection alive across a refusal and the next request.
    let mut raw = Raw::connect(p.addr);
    raw.send(&head("GET", "/files/s.png", &[&o]));
    let r = raw.read_response();
    assert_eq!(r.status, 401);
    assert_app_headers(&r, "raw 401");
    assert_eq!(
        r.headers
            .iter()
            .filter(|(k, _)| k == "access-control-allow-origin")
            .count(),
        1
    );
    raw.send(&head("GET", "/files/s.png", &[&o, "X-Api-Key: secret-one"]));
    let r = raw.read_response();
    assert_eq!(r.status, 200);
    assert!(r.body == png);
    assert_app_headers(&r, "raw 200 on the same connection");

    // The engine gone: the fast path's 502 carries them too.
    engine.kill();
    let r = curl(&["--http1.1", "-H", &o, &p.url("/dav/a.png")]);
    assert_reject(&r, 502, "backend_error");
    assert_app_headers(&r, "fast relayed GET 502");
    assert_eq!(p.wait_access("GET", "/dav/a.png", 502)["via"], "relay");
}

#[tokio::test]
async fn the_tls_listener_answers_preflights_and_carries_the_headers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("cors-ca");
    let (crt, key) = ca.leaf(&["localhost"]).write(dir.path(), "proxy");
    let ca_file = ca.write(dir.path(), "ca");
    let p = Proxy::start(
        Some(POLICIES),
        &["--tls-cert", path_str(&crt), "--tls-key", path_str(&key)],
    );
    let resolve = p.resolve("localhost");
    let png = png_bytes();
    let f = temp_file(&png);
    let o = format!("Origin: {APP}");
    for (flag, version) in [("--http1.1", "HTTP/1.1"), ("--http2", "HTTP/2")] {
        let tls = ["--cacert", path_str(&ca_file), "--resolve", &resolve, flag];
        let url = |path: &str| p.https_url("localhost", path);
        let mut args = tls.to_vec();
        let u = url("/app/t.png");
        args.extend([
            "-X",
            "OPTIONS",
            "-H",
            &o,
            "-H",
            "Access-Control-Request-Method: PUT",
            "-H",
            "Access-Control-Request-Headers: x-api-key,content-type",
            &u,
        ]);
        let r = curl(&args);
        assert_eq!(
            (r.status, r.version.as_str()),
            (204, version),
            "{}",
            r.text()
        );
        assert_eq!(r.header("access-control-allow-origin"), Some(APP));
        assert_eq!(
            r.header("access-control-allow-headers"),
            Some("x-api-key, content-type")
        );

        let mut args = tls.to_vec();
        let name = format!("/app/{}.png", &flag[2..]);
        let u = url(&name);
        args.extend([
            "-H",
            &o,
            "-H",
            "X-Api-Key: secret-one",
            "-H",
            "Content-Type: image/png",
            "-T",
            path_str(f.path()),
            &u,
        ]);
        let r = curl(&args);
        assert_eq!(r.status, 201, "{}", r.text());
        assert_app_headers(&r, "TLS 201");
        assert_eq!(p.wait_access("PUT", &name, 201)["via"], "tls-copy");

        // A GET: an h2 upload refused before its body is read ends in a
        // stream reset that curl may report instead of the answer.
        let mut args = tls.to_vec();
        args.extend(["-H", &o, &u]);
        let r = curl(&args);
        assert_reject(&r, 401, "unauthorized");
        assert_app_headers(&r, "TLS 401");

        let mut args = tls.to_vec();
        let evil = format!("Origin: {EVIL}");
        args.extend(["-H", &evil, "-H", "X-Api-Key: secret-one", &u]);
        let r = curl(&args);
        assert_eq!(r.status, 200);
        assert_no_allow_headers(&r);
    }
}

#[test]
fn bad_cors_blocks_are_refused_at_load_and_named() {
    let policy = |name: &str, cors: &str| {
        format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\nmetadata: {{name: {name}}}\nspec:\n  pathPrefix: /{name}/\n  backend: {{fs: {{root: {name}}}}}\n  cors: {cors}\n"
        )
    };
    let yaml = [
        policy("good", r#"{allowedOrigins: ["https://app.example.com"]}"#),
        policy("slash", r#"{allowedOrigins: ["https://app.example.com/"]}"#),
        policy("star", r#"{allowedOrigins: ["*"], allowCredentials: true}"#),
        policy(
            "port",
            r#"{allowedOrigins: ["https://app.example.com:443"]}"#,
        ),
    ]
    .join("---\n");
    let p = Proxy::start(Some(&yaml), &[]);
    let v = p.admin_get("/readyz").json();
    let refused: Vec<(String, String, String)> = v["notAccepted"]
        .as_array()
        .unwrap_or_else(|| panic!("no notAccepted in {v}"))
        .iter()
        .map(|n| {
            (
                n["policy"].as_str().unwrap_or_default().to_string(),
                n["reason"].as_str().unwrap_or_default().to_string(),
                n["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let find = |name: &str| {
        refused
            .iter()
            .find(|(p, _, _)| p.ends_with(&format!("/{name}")))
            .unwrap_or_else(|| panic!("{name} not in notAccepted: {v}"))
            .clone()
    };
    let (_, reason, msg) = find("slash");
    assert_eq!(reason, "Invalid");
    assert!(
        msg.contains(
            "cors.allowedOrigins[0]: \"https://app.example.com/\" has a path, a trailing slash"
        ),
        "{msg}"
    );
    let (_, reason, msg) = find("star");
    assert_eq!(reason, "Invalid");
    assert!(
        msg.contains(
            "cors.allowedOrigins: \"*\" cannot be combined with cors.allowCredentials: true"
        ),
        "{msg}"
    );
    let (_, _, msg) = find("port");
    assert!(msg.contains("default port"), "{msg}");
    assert!(!refused.iter().any(|(p, _, _)| p.ends_with("/good")), "{v}");
    // The good one serves, with its CORS.
    let r = preflight(&p, "/good/a", APP, "PUT", None);
    assert_eq!(r.status, 204);
    // The refused ones are not served at all.
    assert_reject(&preflight(&p, "/star/a", APP, "PUT", None), 404, "no_route");
}
