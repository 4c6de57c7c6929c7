//! Every upload and request rule refuses with its own status and JSON body
//! `{"error": <rule>, "message": ...}`, and a refused upload leaves nothing in the
//! data dir: no object, no `.sluice-tmp-*` temp file, not even the parts of the same
//! request that passed.

mod common;

use bytes::Bytes;
use common::*;
use futures_util::stream;

const POLICIES: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {name: small}
spec:
  pathPrefix: /small/
  backend: {fs: {root: small}}
  upload: {maxFileSize: 1Ki, maxFiles: 2}
---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {name: images}
spec:
  pathPrefix: /img/
  backend: {fs: {root: img}}
  upload: {maxFileSize: 1Mi, maxFiles: 2, allowedTypes: ["image/*"], allowedExtensions: [png, jpg], verifyContent: true, naming: original, checksum: sha256}
---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {name: open}
spec:
  pathPrefix: /files/
  backend: {fs: {root: files}}
---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {name: dropbox}
spec:
  pathPrefix: /dropbox/
  backend: {fs: {root: dropbox}}
  download: {enabled: false}
"#;

fn start() -> Proxy {
    Proxy::start(Some(POLICIES), &[])
}

fn form_file(
    field: &str,
    file: &tempfile::NamedTempFile,
    filename: &str,
    ct: Option<&str>,
) -> String {
    let mut s = format!("{field}=@{};filename={filename}", path_str(file.path()));
    if let Some(ct) = ct {
        s.push_str(&format!(";type={ct}"));
    }
    s
}

#[tokio::test]
async fn file_too_large_mid_stream_on_chunked_put() {
    let p = start();
    let data = random_bytes(8 * 1024, 1);
    let f = temp_file(&data);
    let r = curl(&[
        "-T",
        path_str(f.path()),
        "-H",
        "Transfer-Encoding: chunked",
        &p.url("/small/big.bin"),
    ]);
    let msg = assert_reject(&r, 413, "file_too_large");
    assert!(msg.contains("1024-byte"), "{msg}");
    // No Content-Length: the proxy only knew after reading past the limit.
    assert!(r.uploaded > 0, "curl sent no body bytes");
    p.assert_files(&[]);

    // The same with streamed bodies of unknown length, over HTTP/1.1 and HTTP/2. hyper's
    // client keeps writing its body after the 413 arrives: the proxy must not reset the
    // connection under it (lingering close), or the client sees a broken pipe instead.
    let data = random_bytes(1024 * 1024, 1);
    for client in [client_h1(), client_h2()] {
        let chunks: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(4096)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let r = client
            .put(p.url("/small/big.bin"))
            .body(reqwest::Body::wrap_stream(stream::iter(chunks)))
            .send()
            .await
            .expect("PUT");
        assert_reject(&Response::from_reqwest(r).await, 413, "file_too_large");
        p.assert_files(&[]);
    }
    assert_eq!(
        p.metric("sluice_rejections_total{rule=\"file_too_large\"}"),
        3.0
    );
}

#[test]
fn file_too_large_mid_stream_in_multipart_drops_the_whole_request() {
    let p = start();
    let ok = temp_file(&random_bytes(100, 2));
    let big = temp_file(&random_bytes(8 * 1024, 3));
    // curl sends a Content-Length (about 8.5 KiB), under the route's whole-request bound,
    // so only counting the part's bytes as they stream finds the violation.
    let r = curl(&[
        "-F",
        &form_file("a", &ok, "ok.bin", None),
        "-F",
        &form_file("b", &big, "big.bin", None),
        &p.url("/small/"),
    ]);
    assert_reject(&r, 413, "file_too_large");
    p.assert_files(&[]);
}

#[test]
fn early_413_from_content_length_before_the_body_is_sent() {
    let p = start();
    let data = random_bytes(2 * 1024 * 1024, 4);
    let f = temp_file(&data);

    let r = curl(&[
        "-T",
        path_str(f.path()),
        "-H",
        "Expect:",
        &p.url("/small/big.bin"),
    ]);
    assert_reject(&r, 413, "file_too_large");

    // With Expect: 100-continue the refusal comes instead of the 100: curl sends no body.
    let r = curl(&[
        "-T",
        path_str(f.path()),
        "-H",
        "Expect: 100-continue",
        &p.url("/small/big.bin"),
    ]);
    assert_reject(&r, 413, "file_too_large");
    assert_eq!(r.uploaded, 0, "curl sent body bytes despite the early 413");

    // Same on a bare socket: only the head goes out, the 413 comes back.
    let mut raw = Raw::connect(p.addr);
    raw.send(&head(
        "PUT",
        "/small/big.bin",
        &["Content-Length: 2097152", "Expect: 100-continue"],
    ));
    let r = raw.read_response();
    assert_reject(&r, 413, "file_too_large");

    // A multipart body whose Content-Length is over what the route could accept
    // (2 files of 1 KiB, 64 small fields, framing: under 5 MB).
    let huge = temp_file(&random_bytes(6 * 1024 * 1024, 5));
    let r = curl(&[
        "-F",
        &form_file("file", &huge, "big.bin", None),
        "-H",
        "Expect: 100-continue",
        &p.url("/small/"),
    ]);
    assert_reject(&r, 413, "request_too_large");
    assert_eq!(r.uploaded, 0);
    p.assert_files(&[]);
}

#[test]
fn too_many_files() {
    let p = start();
    let f = temp_file(b"tiny");
    let r = curl(&[
        "-F",
        &form_file("a", &f, "1.txt", None),
        "-F",
        &form_file("b", &f, "2.txt", None),
        "-F",
        &form_file("c", &f, "3.txt", None),
        &p.url("/small/"),
    ]);
    let msg = assert_reject(&r, 413, "too_many_files");
    assert!(msg.contains('2'), "{msg}");
    p.assert_files(&[]);
    // Two are fine.
    let r = curl(&[
        "-F",
        &form_file("a", &f, "1.txt", None),
        "-F",
        &form_file("b", &f, "2.txt", None),
        &p.url("/small/"),
    ]);
    assert_eq!(r.status, 201, "{}", r.text());
    p.assert_files(&["small/1.txt", "small/2.txt"]);
}

#[test]
fn part_headers_too_large() {
    let p = start();
    // Bigger than any one read of the proxy (hyper reads at most ~400 KiB at a time), so
    // the parser is certain to stall on the unfinished header with the budget spent.
    let huge = "x".repeat(1024 * 1024);
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\nX-Padding: {huge}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(b"data\r\n");
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    let mut raw = Raw::connect(p.addr);
    raw.send(&head(
        "POST",
        "/files/",
        &[
            &format!("Content-Type: multipart/form-data; boundary={BOUNDARY}"),
            &format!("Content-Length: {}", body.len()),
        ],
    ));
    // The proxy may answer before taking the whole body; a failed write is fine.
    let _ = std::io::Write::write_all(&mut raw.stream, &body);
    let r = raw.read_response();
    assert_reject(&r, 413, "part_headers_too_large");
    p.assert_files(&[]);
}

#[tokio::test]
async fn type_not_allowed_declared_or_sniffed() {
    let p = start();
    let png = temp_file(&png_bytes());
    // Declared type outside image/*.
    let r = curl(&[
        "-F",
        &form_file("f", &png, "a.png", Some("text/plain")),
        &p.url("/img/"),
    ]);
    let msg = assert_reject(&r, 415, "type_not_allowed");
    assert!(msg.contains("text/plain"), "{msg}");
    // A raw PUT declaring one.
    let r = client_h1()
        .put(p.url("/img/a.png"))
        .header("content-type", "application/pdf")
        .body(png_bytes())
        .send()
        .await
        .unwrap();
    assert_reject(&Response::from_reqwest(r).await, 415, "type_not_allowed");
    // Declared image/png, but the bytes are text: the sniffed type is not allowed.
    let text = temp_file(b"just some text, not an image at all\n");
    let r = curl(&[
        "-F",
        &form_file("f", &text, "b.png", Some("image/png")),
        &p.url("/img/"),
    ]);
    assert_reject(&r, 415, "type_not_allowed");
    p.assert_files(&[]);
}

#[test]
fn extension_not_allowed() {
    let p = start();
    let png = temp_file(&png_bytes());
    let r = curl(&[
        "-F",
        &form_file("f", &png, "a.gif", Some("image/png")),
        &p.url("/img/"),
    ]);
    let msg = assert_reject(&r, 415, "extension_not_allowed");
    assert!(msg.contains("a.gif"), "{msg}");
    let r = curl(&[
        "-F",
        &form_file("f", &png, "noext", Some("image/png")),
        &p.url("/img/"),
    ]);
    assert_reject(&r, 415, "extension_not_allowed");
    p.assert_files(&[]);
}

#[test]
fn content_mismatch_when_bytes_contradict_the_declared_type() {
    let p = start();
    let png = temp_file(&png_bytes());
    // The route takes a real PNG declared as one.
    let r = curl(&[
        "-F",
        &form_file("f", &png, "ok.png", Some("image/png")),
        &p.url("/img/"),
    ]);
    assert_created_one(&r, "ok.png", &png_bytes());

    // PNG magic declared image/jpeg.
    let r = curl(&[
        "-F",
        &form_file("f", &png, "photo.jpg", Some("image/jpeg")),
        &p.url("/img/"),
    ]);
    let msg = assert_reject(&r, 415, "content_mismatch");
    assert!(
        msg.contains("image/jpeg") && msg.contains("image/png"),
        "{msg}"
    );

    // A good part first, then a mismatched one: neither is kept.
    let r = curl(&[
        "-F",
        &form_file("a", &png, "first.png", Some("image/png")),
        "-F",
        &form_file("b", &png, "second.jpg", Some("image/jpeg")),
        &p.url("/img/"),
    ]);
    assert_reject(&r, 415, "content_mismatch");

    // Same rule on a raw PUT.
    let r = curl(&[
        "-T",
        path_str(png.path()),
        "-H",
        "Content-Type: image/jpeg",
        &p.url("/img/put.jpg"),
    ]);
    assert_reject(&r, 415, "content_mismatch");
    p.assert_files(&["img/ok.png"]);
}

#[test]
fn unsupported_media_type_for_a_post_that_is_not_multipart() {
    let p = start();
    let r = curl(&[
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        "{\"a\":1}",
        &p.url("/files/"),
    ]);
    let msg = assert_reject(&r, 415, "unsupported_media_type");
    assert!(msg.contains("application/json"), "{msg}");
    // multipart without a boundary is not usable either.
    let r = curl(&[
        "-H",
        "Content-Type: multipart/form-data",
        "--data-binary",
        "x",
        &p.url("/files/"),
    ]);
    assert_reject(&r, 415, "unsupported_media_type");
    p.assert_files(&[]);
}

#[test]
fn invalid_filename() {
    let p = start();
    let f = temp_file(b"payload");
    for bad in ["..", "...", ".sluice-tmp-abc"] {
        let r = curl(&["-F", &form_file("f", &f, bad, None), &p.url("/files/")]);
        assert_reject(&r, 422, "invalid_filename");
    }
    p.assert_files(&[]);
}

#[test]
fn invalid_key() {
    let p = start();
    // curl would normalise "a/../b"; a bare socket sends it as is.
    let mut raw = Raw::connect(p.addr);
    raw.send(&head("PUT", "/files/a/../b", &["Content-Length: 3"]));
    raw.send(b"abc");
    assert_reject(&raw.read_response(), 422, "invalid_key");

    let f = temp_file(b"abc");
    for path in [
        "/files/a/%2e%2e/b",
        "/files/%2E%2E",
        "/files/a//b",
        "/files/.sluice-tmp-x",
    ] {
        let r = curl(&["--path-as-is", "-T", path_str(f.path()), &p.url(path)]);
        assert_reject(&r, 422, "invalid_key");
    }
    // A multipart POST into a directory that is not a valid key.
    let r = curl(&[
        "--path-as-is",
        "-F",
        &form_file("f", &f, "x.txt", None),
        &p.url("/files/a/%2e%2e/"),
    ]);
    assert_reject(&r, 422, "invalid_key");
    p.assert_files(&[]);
}

#[test]
fn no_files_when_multipart_has_only_fields() {
    let p = start();
    let r = curl(&["-F", "a=1", "-F", "b=two", &p.url("/files/")]);
    assert_reject(&r, 422, "no_files");
    p.assert_files(&[]);
}

#[test]
fn malformed_multipart() {
    let p = start();
    let r = curl(&[
        "-H",
        &format!("Content-Type: multipart/form-data; boundary={BOUNDARY}"),
        "--data-binary",
        "this is not a multipart body at all",
        &p.url("/files/"),
    ]);
    assert_reject(&r, 400, "malformed_multipart");
    p.assert_files(&[]);
}

#[test]
fn no_route_and_not_found_on_both_paths() {
    let p = start();
    for flag in ["--http1.1", "--http2-prior-knowledge"] {
        assert_reject(&curl(&[flag, &p.url("/elsewhere/x")]), 404, "no_route");
        // A prefix is matched whole: "/files" without the slash is no route.
        assert_reject(&curl(&[flag, &p.url("/files")]), 404, "no_route");
        assert_reject(
            &curl(&[flag, &p.url("/files/missing.bin")]),
            404,
            "not_found",
        );
        assert_reject(
            &curl(&[flag, &p.url("/files/a/../../etc/passwd"), "--path-as-is"]),
            404,
            "not_found",
        );
    }
    // Uploads outside any route are no_route too.
    let f = temp_file(b"x");
    assert_reject(
        &curl(&["-T", path_str(f.path()), &p.url("/elsewhere/x")]),
        404,
        "no_route",
    );
    let l = p.wait_access("GET", "/elsewhere/x", 404);
    assert_eq!(l["rule"], "no_route");
    p.assert_files(&[]);
}

#[test]
fn method_not_allowed_names_the_allowed_ones() {
    let p = start();
    for m in ["DELETE", "PATCH"] {
        let r = curl(&["-X", m, &p.url("/files/x")]);
        assert_reject(&r, 405, "method_not_allowed");
        let allow = r.header("allow").unwrap_or_default().to_string();
        for expected in ["GET", "HEAD", "POST", "PUT"] {
            assert!(allow.contains(expected), "Allow: {allow:?}");
        }
    }
}

#[test]
fn length_required_for_a_put_without_length_or_chunking() {
    let p = start();
    let mut raw = Raw::connect(p.addr);
    raw.send(&head("PUT", "/files/x.bin", &[]));
    assert_reject(&raw.read_response(), 411, "length_required");
    p.assert_files(&[]);
}

#[test]
fn download_disabled_route_takes_uploads_but_refuses_downloads() {
    let p = start();
    let f = temp_file(b"drop it here");
    assert_eq!(
        curl(&["-T", path_str(f.path()), &p.url("/dropbox/a.txt")]).status,
        201
    );
    for flag in ["--http1.1", "--http2-prior-knowledge"] {
        assert_reject(
            &curl(&[flag, &p.url("/dropbox/a.txt")]),
            403,
            "download_disabled",
        );
    }
    p.assert_files(&["dropbox/a.txt"]);
}
