//! Remote backends against real storage engines this project did not write:
//! nginx's WebDAV module (`mode: put` uploads and downloads), miniserve
//! (`mode: multipart`) and s3s-fs (S3, SigV4 required). For each: bytes and
//! sha256 survive upload then download; a file rejected mid-stream (too large,
//! wrong sniffed type) leaves nothing on the engine; the engine killed
//! mid-upload gives the client 502 and leaves nothing; Range works; downloads
//! take the splice path, and the copy fallback gives the same bytes.

mod common;
mod engines;

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use engines::{Engine, S3_ACCESS, S3_BUCKET, S3_SECRET, files_under};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

fn dav_policies(engine: &Engine) -> String {
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {{name: dav}}
spec:
  pathPrefix: /dav/
  backend: {{http: {{url: "{u}/store", mode: put}}}}
  upload: {{maxFileSize: 4Mi}}
---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {{name: dav-raw}}
spec:
  pathPrefix: /raw/
  backend: {{http: {{url: "{u}/store", mode: put}}}}
  upload: {{maxFileSize: 4Mi, checksum: none}}
---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {{name: dav-images}}
spec:
  pathPrefix: /img/
  backend: {{http: {{url: "{u}/images", mode: put}}}}
  upload: {{allowedTypes: ["image/png"], verifyContent: true, checksum: none}}
"#,
        u = engine.url()
    )
}

fn s3_policies(engine: &Engine) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: s3-creds}}
stringData: {{accessKeyId: {S3_ACCESS}, secretAccessKey: {S3_SECRET}}}
---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {{name: s3}}
spec:
  pathPrefix: /s3/
  backend: {{s3: {{endpoint: "{u}", bucket: {S3_BUCKET}, region: us-east-1, keyPrefix: "in/", credentialsSecret: {{name: s3-creds}}}}}}
  upload: {{maxFileSize: 16Mi, allowedTypes: ["application/octet-stream", "image/png"], verifyContent: true}}
"#,
        u = engine.url()
    )
}

/// Object keys in the test bucket, through the S3 API itself (ListObjectsV2).
fn s3_keys(engine: &Engine) -> Vec<String> {
    let bucket = Bucket::new(
        engine.url().parse().expect("url"),
        UrlStyle::Path,
        S3_BUCKET,
        "us-east-1",
    )
    .expect("bucket");
    let creds = Credentials::new(S3_ACCESS, S3_SECRET);
    let url = bucket
        .list_objects_v2(Some(&creds))
        .sign(Duration::from_secs(60));
    let r = curl(&[url.as_str()]);
    assert_eq!(r.status, 200, "ListObjectsV2: {}", r.text());
    let list = rusty_s3::actions::ListObjectsV2::parse_response(&r.text()).expect("list answer");
    let mut keys: Vec<String> = list.contents.into_iter().map(|c| c.key).collect();
    keys.sort();
    keys
}

fn png_bytes(len: usize) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    v.extend(random_bytes(len.saturating_sub(v.len()), 99));
    v
}

/// GET through the fast path (curl HTTP/1.1) and through hyper (HTTP/2): same bytes,
/// and the fast one went engine socket -> pipe -> client socket.
fn downloads_match(p: &Proxy, path: &str, data: &[u8]) {
    let before = p.metric(r#"sluice_download_responses_total{path="splice"}"#);
    let fast = curl(&["--http1.1", &p.url(path)]);
    assert_eq!(fast.status, 200, "GET {path}: {}", fast.text());
    assert!(
        fast.body == data,
        "spliced bytes of {path} differ ({} vs {} bytes)",
        fast.body.len(),
        data.len()
    );
    assert_eq!(
        p.metric(r#"sluice_download_responses_total{path="splice"}"#),
        before + 1.0,
        "the download took the splice path"
    );
    let h2 = curl(&["--http2-prior-knowledge", &p.url(path)]);
    assert_eq!(h2.status, 200, "GET {path} over h2: {}", h2.text());
    assert!(h2.body == data, "copied bytes of {path} differ");

    for (range, slice) in [
        ("100-199", &data[100..200]),
        ("-10", &data[data.len() - 10..]),
    ] {
        for proto in ["--http1.1", "--http2-prior-knowledge"] {
            let r = curl(&[proto, "-r", range, &p.url(path)]);
            assert_eq!(r.status, 206, "range {range} {proto}: {}", r.text());
            assert_eq!(r.body, slice, "range {range} {proto}");
            assert!(r.header("content-range").is_some(), "{:?}", r.headers);
        }
    }
}

/// How a gated PUT frames its body: chunked goes through hyper, a
/// Content-Length through the fast path (sniff window, then splice).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    Chunked,
    Length,
}

impl Framing {
    /// The access log's `via` for an upload framed this way.
    fn via(self) -> &'static str {
        match self {
            Framing::Chunked => "hyper",
            Framing::Length => "splice",
        }
    }
}

/// PUT whose body stops after `first` bytes until `gate` fires, then sends `rest` bytes.
async fn gated_put(
    url: String,
    framing: Framing,
    first: usize,
    rest: usize,
    gate: tokio::sync::oneshot::Receiver<()>,
) -> Response {
    let data = random_bytes(first + rest, 5);
    let head = Bytes::copy_from_slice(&data[..first]);
    let tail = Bytes::copy_from_slice(&data[first..]);
    let body = futures_util::stream::unfold((0, Some(gate)), move |(step, gate)| {
        let (head, tail) = (head.clone(), tail.clone());
        async move {
            match step {
                0 => Some((Ok::<_, std::io::Error>(head), (1, gate))),
                1 => {
                    if let Some(g) = gate {
                        let _ = g.await;
                    }
                    Some((Ok(tail), (2, None)))
                }
                _ => None,
            }
        }
    });
    let client = {
        install_crypto();
        reqwest::Client::new()
    };
    let mut req = client
        .put(url)
        .header("content-type", "application/octet-stream");
    if framing == Framing::Length {
        req = req.header("content-length", (first + rest).to_string());
    }
    let r = req
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("the proxy answers, even when the engine is gone");
    Response::from_reqwest(r).await
}

#[test]
fn dav_put_round_trip_splice_and_range() {
    let engine = engines::nginx();
    let p = Proxy::start(Some(&dav_policies(&engine)), &[]);
    let data = random_bytes(3 << 20, 1);
    let f = temp_file(&data);
    let r = curl(&["-T", path_str(f.path()), &p.url("/dav/dir/a.bin")]);
    // The checksum (sha256, the default) is of every byte: each is peeked at
    // and hashed, then spliced.
    assert_created_one(&r, "dir/a.bin", &data);
    assert_eq!(p.wait_access("PUT", "/dav/dir/a.bin", 201)["via"], "splice");
    // Without one, past the sniff window the body goes client socket -> pipe -> engine socket.
    let raw = random_bytes(3 << 20, 11);
    let f = temp_file(&raw);
    let r = curl(&["-T", path_str(f.path()), &p.url("/raw/dir/r.bin")]);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["objects"][0]["key"], "dir/r.bin");
    assert_eq!(r.json()["objects"][0]["size"], 3 << 20);
    assert_eq!(p.wait_access("PUT", "/raw/dir/r.bin", 201)["via"], "splice");
    assert_eq!(p.metric(r#"sluice_uploads_total{path="splice"}"#), 2.0);
    assert!(
        std::fs::read(engine.root.join("store/dir/r.bin")).expect("stored on nginx") == raw,
        "spliced upload stored different bytes"
    );
    downloads_match(&p, "/raw/dir/r.bin", &raw);
    // The engine stored exactly these bytes, where the policy says.
    assert_eq!(
        std::fs::read(engine.root.join("store/dir/a.bin")).expect("stored on nginx"),
        data
    );
    downloads_match(&p, "/dav/dir/a.bin", &data);

    // Multipart from the client becomes a PUT per file on the engine.
    let small = random_bytes(50_000, 2);
    let f2 = temp_file(&small);
    let r = curl(&[
        "-F",
        &format!("file=@{};filename=m.bin", path_str(f2.path())),
        &p.url("/dav/"),
    ]);
    assert_created_one(&r, "m.bin", &small);
    assert_eq!(
        std::fs::read(engine.root.join("store/m.bin")).expect("stored"),
        small
    );
    // Its file data is spliced as well, once peeked at for the next boundary.
    assert_eq!(p.wait_access("POST", "/dav/", 201)["via"], "splice");
    assert_eq!(p.metric(r#"sluice_uploads_total{path="copy"}"#), 0.0);
    assert_eq!(p.metric(r#"sluice_uploads_total{path="splice"}"#), 3.0);

    // Small files fit in the bytes read with the head: several on one connection.
    let urls: Vec<String> = (0..3).map(|i| p.url(&format!("/raw/s{i}.txt"))).collect();
    let tiny = temp_file(b"hello, small world\n");
    let mut args = vec![];
    for u in &urls {
        args.extend(["-T", path_str(tiny.path()), u.as_str()]);
    }
    let r = curl(&args);
    assert_eq!(r.status, 201, "{}", r.text());
    for i in 0..3 {
        assert_eq!(
            std::fs::read(engine.root.join(format!("store/s{i}.txt"))).expect("stored"),
            b"hello, small world\n"
        );
        assert_eq!(
            p.wait_access("PUT", &format!("/raw/s{i}.txt"), 201)["via"],
            "fast"
        );
    }
    assert_eq!(
        p.metric("sluice_connections_open"),
        0.0,
        "curl closed its one connection"
    );

    // Missing on the engine: our 404 JSON.
    assert_reject(&curl(&[&p.url("/dav/nope.bin")]), 404, "not_found");
}

#[test]
fn dav_fallback_without_splice_gives_same_bytes() {
    let engine = engines::nginx();
    let p = Proxy::start(Some(&dav_policies(&engine)), &["--no-splice"]);
    let data = random_bytes(2 << 20, 3);
    let f = temp_file(&data);
    let r = curl(&["-T", path_str(f.path()), &p.url("/raw/b.bin")]);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(p.wait_access("PUT", "/raw/b.bin", 201)["via"], "hyper");
    assert_eq!(p.metric(r#"sluice_uploads_total{path="copy"}"#), 1.0);
    assert_eq!(p.metric(r#"sluice_uploads_total{path="splice"}"#), 0.0);
    assert_eq!(
        std::fs::read(engine.root.join("store/b.bin")).expect("stored on nginx"),
        data
    );
    let r = curl(&["--http1.1", &p.url("/raw/b.bin")]);
    assert_eq!(r.status, 200);
    assert!(r.body == data, "copied bytes differ");
    assert_eq!(
        p.metric(r#"sluice_download_responses_total{path="splice"}"#),
        0.0
    );
    assert_eq!(
        p.metric(r#"sluice_download_responses_total{path="copy"}"#),
        1.0
    );
}

#[test]
fn dav_rejections_mid_stream_leave_nothing_on_the_engine() {
    let engine = engines::nginx();
    let p = Proxy::start(Some(&dav_policies(&engine)), &[]);
    // Too large, found mid-stream: chunked, so no Content-Length gives it away early.
    let big = random_bytes(6 << 20, 4);
    let f = temp_file(&big);
    let r = curl(&[
        "-T",
        path_str(f.path()),
        "-H",
        "Transfer-Encoding: chunked",
        &p.url("/dav/big.bin"),
    ]);
    assert_reject(&r, 413, "file_too_large");
    // Declared PNG, but the bytes sniff as text, which the route does not allow.
    let f = temp_file(&b"just some text, not an image\n".repeat(400));
    let r = curl(&[
        "-T",
        path_str(f.path()),
        "-H",
        "Content-Type: image/png",
        &p.url("/img/fake.png"),
    ]);
    assert_reject(&r, 415, "type_not_allowed");
    // Checked on the fast path: the sniff window was read, the rest never spliced.
    assert_eq!(p.wait_access("PUT", "/img/fake.png", 415)["via"], "splice");
    // Declared PNG, sniffed as an allowed type that is not PNG.
    let mut gif = b"GIF89a".to_vec();
    gif.extend(random_bytes(10_000, 8));
    let f = temp_file(&gif);
    let r = curl(&[
        "-T",
        path_str(f.path()),
        "-H",
        "Content-Type: image/png",
        &p.url("/img/fake2.png"),
    ]);
    assert_reject(&r, 415, "type_not_allowed");
    p.wait_in_flight(0.0);
    assert_eq!(
        files_under(&engine.root),
        Vec::<String>::new(),
        "nothing stored on nginx"
    );
}

/// A form POST with a preamble, a field, a file shorter than the sniff window,
/// a larger one, and an epilogue.
fn form_with_everything() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let small = random_bytes(100, 21);
    let large = random_bytes(300_000, 22);
    let mut body = b"a preamble nobody reads\r\n".to_vec();
    body.extend(multipart_body(&[
        Part {
            name: "note",
            filename: None,
            content_type: None,
            data: b"hello",
        },
        Part {
            name: "f",
            filename: Some("a.bin"),
            content_type: Some("application/octet-stream"),
            data: &small,
        },
        Part {
            name: "f",
            filename: Some("b.bin"),
            content_type: Some("application/octet-stream"),
            data: &large,
        },
    ]));
    body.extend_from_slice(b"an epilogue, dropped");
    (body, small, large)
}

fn form_head(path: &str, len: usize) -> Vec<u8> {
    head(
        "POST",
        path,
        &[
            &format!("Content-Type: multipart/form-data; boundary={BOUNDARY}"),
            &format!("Content-Length: {len}"),
        ],
    )
}

/// The fast path looks at a form through peeks of whatever has arrived: a body
/// cut anywhere near its framing (a delimiter, a header block, the sniff
/// window) must give the same files. Each body goes in two writes, the second
/// after the proxy has seen the first; all on one kept-alive connection.
#[test]
fn spliced_form_cut_anywhere_stores_the_same_files() {
    let engine = engines::nginx();
    let p = Proxy::start(Some(&dav_policies(&engine)), &[]);
    let (body, small, large) = form_with_everything();
    let head = form_head("/dav/cut/", body.len());
    // Offsets around every delimiter and blank line, the start, and inside the data.
    let mut cuts: Vec<usize> = (0..4).chain([5_000, 8_191, 8_192, 150_000]).collect();
    let marks = [
        format!("\r\n--{BOUNDARY}").into_bytes(),
        b"\r\n\r\n".to_vec(),
    ];
    for m in &marks {
        for (i, w) in body.windows(m.len()).enumerate() {
            if w == &m[..] {
                cuts.extend([
                    i,
                    i + 1,
                    i + 2,
                    i + m.len() / 2,
                    i + m.len() - 1,
                    i + m.len(),
                    i + m.len() + 1,
                ]);
            }
        }
    }
    let small_at = body
        .windows(small.len())
        .position(|w| w == small)
        .expect("small");
    let large_at = body
        .windows(1000)
        .position(|w| w == &large[..1000])
        .expect("large");
    cuts.extend([small_at + 50, small_at + small.len()]);
    // In a file's data the proxy waits for a window's worth of bytes, and
    // looks at what it has after 200 ms: cuts there wait longer.
    let dl = BOUNDARY.len() + 4;
    let in_file = |c: usize| {
        (small_at..=small_at + small.len() + dl).contains(&c)
            || (large_at..=large_at + large.len() + dl).contains(&c)
    };
    cuts.retain(|c| *c < body.len());
    cuts.sort_unstable();
    cuts.dedup();

    let mut raw = Raw::connect(p.addr);
    for &cut in &cuts {
        let mut first = head.clone();
        first.extend_from_slice(&body[..cut]);
        raw.send(&first);
        std::thread::sleep(Duration::from_millis(if in_file(cut) { 300 } else { 15 }));
        raw.send(&body[cut..]);
        let r = raw.read_response();
        assert_eq!(r.status, 201, "cut at {cut}: {}", r.text());
        let objects = r.json()["objects"].as_array().cloned().unwrap_or_default();
        assert_eq!(objects.len(), 2, "cut at {cut}: {}", r.text());
        assert_object(&objects[0], "cut/a.bin", &small);
        assert_object(&objects[1], "cut/b.bin", &large);
    }
    assert_eq!(
        p.metric(r#"sluice_uploads_total{path="splice"}"#),
        cuts.len() as f64,
        "every form took the splice path"
    );
    assert!(std::fs::read(engine.root.join("store/cut/a.bin")).expect("a.bin") == small);
    assert!(std::fs::read(engine.root.join("store/cut/b.bin")).expect("b.bin") == large);
}

/// Every rejection of a form is the hyper path's, word for word, and leaves
/// nothing on the engine. hyper (`--no-splice`) is the reference.
#[test]
fn spliced_form_rejections_match_hyper_and_leave_nothing() {
    let engine = engines::nginx();
    let fast = Proxy::start(Some(&dav_policies(&engine)), &[]);
    let hyper = Proxy::start(Some(&dav_policies(&engine)), &["--no-splice"]);
    let file = |name: &'static str, ct: &'static str, data: &'static [u8]| Part {
        name: "f",
        filename: Some(name),
        content_type: Some(ct),
        data,
    };
    let ok: &'static [u8] = Box::leak(random_bytes(20_000, 31).into_boxed_slice());
    let big: &'static [u8] = Box::leak(random_bytes(5 << 20, 32).into_boxed_slice());
    let text: &'static [u8] = Box::leak(b"plain words, no image\n".repeat(500).into_boxed_slice());
    let wide: &'static str = Box::leak(format!("x-{}", "h".repeat(70_000)).into_boxed_str());
    let field: &'static [u8] = Box::leak(vec![b'v'; 70_000].into_boxed_slice());

    let mut truncated = multipart_body(&[file("t.bin", "application/octet-stream", ok)]);
    truncated.truncate(truncated.len() - 30);
    let mut head_too_large = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"f\"; filename=\"h.bin\"\r\n{wide}: 1\r\n\r\n"
    )
    .into_bytes();
    head_too_large.extend_from_slice(ok);
    head_too_large.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let many_fields: Vec<Part<'_>> = (0..65)
        .map(|_| Part {
            name: "n",
            filename: None,
            content_type: None,
            data: b"1",
        })
        .collect();
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "no boundary",
            "/dav/",
            b"no multipart here".to_vec(),
            400,
            "malformed_multipart",
        ),
        (
            "ended early",
            "/dav/",
            truncated,
            400,
            "malformed_multipart",
        ),
        (
            "no files",
            "/dav/",
            multipart_body(&[Part {
                name: "n",
                filename: None,
                content_type: None,
                data: b"1",
            }]),
            422,
            "no_files",
        ),
        (
            "too many fields",
            "/dav/",
            multipart_body(&many_fields),
            413,
            "too_many_fields",
        ),
        (
            "field too large",
            "/dav/",
            multipart_body(&[Part {
                name: "n",
                filename: None,
                content_type: None,
                data: field,
            }]),
            413,
            "field_too_large",
        ),
        (
            "header block too large",
            "/dav/",
            head_too_large,
            413,
            "part_headers_too_large",
        ),
        (
            "bad filename",
            "/dav/",
            multipart_body(&[file("..", "application/octet-stream", ok)]),
            422,
            "invalid_filename",
        ),
        (
            "declared type",
            "/img/",
            multipart_body(&[file("a.png", "text/plain", text)]),
            415,
            "type_not_allowed",
        ),
        (
            "sniffed type",
            "/img/",
            multipart_body(&[file("a.png", "image/png", text)]),
            415,
            "type_not_allowed",
        ),
        // The second file is refused past the sniff window of the first: the first is undone.
        (
            "too large after one stored",
            "/raw/",
            multipart_body(&[
                file("one.bin", "application/octet-stream", ok),
                file("two.bin", "application/octet-stream", big),
            ]),
            413,
            "file_too_large",
        ),
    ];
    for (what, path, body, status, rule) in &cases {
        let mut answers = Vec::new();
        for p in [&hyper, &fast] {
            let mut raw = Raw::connect(p.addr);
            let mut req = form_head(path, body.len());
            req.extend_from_slice(body);
            // A proxy may answer before taking the whole body: send from a thread.
            let mut w = raw.stream.try_clone().expect("clone");
            let sender = std::thread::spawn(move || {
                let _ = w.write_all(&req);
            });
            let r = raw.read_response();
            let _ = sender.join();
            answers.push((r.status, r.json()));
        }
        let (h, f) = (&answers[0], &answers[1]);
        assert_eq!(
            (h.0, h.1["error"].as_str()),
            (*status, Some(*rule)),
            "{what}: hyper's answer {}",
            h.1
        );
        assert_eq!(f, h, "{what}: the fast path answers as hyper does");
    }
    for (p, via) in [(&fast, "splice"), (&hyper, "hyper")] {
        let posts = || -> Vec<_> {
            p.access_logs()
                .into_iter()
                .filter(|l| l["method"] == "POST")
                .collect()
        };
        // Access lines are written by a logging thread, after the answer.
        wait_until(
            DEADLINE,
            || posts().len() == cases.len(),
            || format!("{:?}", posts()),
        );
        let posts = posts();
        assert!(posts.iter().all(|l| l["via"] == via), "{via}: {posts:?}");
    }
    fast.wait_in_flight(0.0);
    hyper.wait_in_flight(0.0);
    // The undo of one.bin is a DELETE sent after the answer.
    wait_until(
        DEADLINE,
        || files_under(&engine.root).is_empty(),
        || format!("stored on nginx: {:?}", files_under(&engine.root)),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dav_engine_killed_mid_upload_is_502_and_nothing_stored() {
    let mut engine = engines::nginx();
    let p = Proxy::start(Some(&dav_policies(&engine)), &[]);
    for framing in [Framing::Chunked, Framing::Length] {
        let path = format!("/raw/killed-{framing:?}.bin");
        let (go, gate) = tokio::sync::oneshot::channel();
        let put = tokio::spawn(gated_put(p.url(&path), framing, 1 << 20, 1 << 20, gate));
        p.wait_in_flight(1.0);
        engine.kill();
        let _ = go.send(());
        let r = put.await.expect("client task");
        let msg = assert_reject(&r, 502, "backend_error");
        assert!(!msg.is_empty());
        assert_eq!(p.wait_access("PUT", &path, 502)["via"], framing.via());
        engine.restart();
        assert_eq!(
            files_under(&engine.root),
            Vec::<String>::new(),
            "nothing stored on nginx ({framing:?})"
        );
    }
}

/// A client gone mid-body on the fast path, hashed or not: the engine gets a
/// truncated PUT and stores nothing; a client that answers `Expect:
/// 100-continue` gets its 100 first.
#[test]
fn raw_put_cut_by_the_client_leaves_nothing() {
    let engine = engines::nginx();
    let p = Proxy::start(Some(&dav_policies(&engine)), &[]);
    for route in ["/raw/", "/dav/"] {
        let path = format!("{route}cut.bin");
        let mut raw = Raw::connect(p.addr);
        raw.send(
            format!(
                "PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 3000000\r\nExpect: 100-continue\r\n\r\n"
            )
            .as_bytes(),
        );
        let cont = raw.read_response();
        assert_eq!(cont.status, 100, "{}", cont.text());
        raw.send(&random_bytes(1 << 20, 12));
        p.wait_in_flight(1.0);
        drop(raw);
        let line = p.wait_access("PUT", &path, 400);
        assert_eq!(line["rule"], "client_aborted", "{path}");
        assert_eq!(line["via"], "splice", "{path}");
        p.wait_in_flight(0.0);
    }
    assert_eq!(
        files_under(&engine.root),
        Vec::<String>::new(),
        "nothing stored on nginx"
    );
    assert_eq!(p.metric(r#"sluice_uploads_total{path="splice"}"#), 0.0);
}

/// With a checksum, the fast path peeks at what is queued, hashes it, then
/// splices exactly that. Whatever pieces the body comes in (inside the sniff
/// window, across it, fewer bytes than the low-water mark for longer than the
/// patience, whole windows), every byte is hashed once and stored once.
#[test]
fn hashed_put_in_pieces_hashes_every_byte_once() {
    hashed_put_in_pieces(sluice_proxy::zerocopy::DEFAULT_WINDOW);
}

/// The same at the smallest `--splice-window`: the flag sets both the
/// low-water mark and what one peek looks at.
#[test]
fn hashed_put_in_pieces_at_the_smallest_window() {
    hashed_put_in_pieces(sluice_proxy::zerocopy::MIN_WINDOW);
}

fn hashed_put_in_pieces(window: usize) {
    let engine = engines::nginx();
    // Three windows' worth of body, past the route's usual 4 MiB.
    let policies = dav_policies(&engine).replace("{maxFileSize: 4Mi}", "{maxFileSize: 64Mi}");
    let w = window.to_string();
    let p = Proxy::start(Some(&policies), &["--splice-window", &w]);
    let listening = p
        .log_json()
        .into_iter()
        .find(|l| l["message"] == "listening");
    assert_eq!(
        listening.as_ref().map(|l| l["splice_window"].clone()),
        Some(window.into()),
        "the window the proxy says it uses: {listening:?}"
    );
    let data = random_bytes(3 * window, 14);
    let plans: [Vec<usize>; 5] = [
        vec![],
        vec![100, 8191, 8193],
        vec![9000, 20_000, 100_000, 100_001, window / 2],
        vec![8192 + window, 8192 + 2 * window, 8192 + 2 * window + 1],
        vec![8192, 8192 + window - 1, 3 * window - 1],
    ];
    let mut raw = Raw::connect(p.addr);
    for (i, cuts) in plans.iter().enumerate() {
        let path = format!("/dav/pieces/{i}.bin");
        raw.send(
            format!(
                "PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                data.len()
            )
            .as_bytes(),
        );
        let mut at = 0;
        for (k, &c) in cuts.iter().enumerate() {
            raw.send(&data[at..c]);
            // Under the patience, then over it.
            std::thread::sleep(Duration::from_millis(if k % 2 == 0 { 50 } else { 250 }));
            at = c;
        }
        raw.send(&data[at..]);
        let r = raw.read_response();
        assert_created_one(&r, &format!("pieces/{i}.bin"), &data);
        assert_eq!(p.wait_access("PUT", &path, 201)["via"], "splice", "{path}");
        assert!(
            std::fs::read(engine.root.join(format!("store/pieces/{i}.bin"))).expect("stored")
                == data,
            "{path}: stored bytes differ"
        );
    }
    assert_eq!(
        p.metric(r#"sluice_uploads_total{path="splice"}"#),
        plans.len() as f64
    );
}

/// The spliced PUT waits for a low-water mark of bytes before it wakes; a
/// client that trickles below it, each pause under the idle timeout, is slow,
/// not idle, and its upload is stored. One that stops is cut after the timeout.
#[test]
fn raw_put_trickle_is_slow_not_idle() {
    let engine = engines::nginx();
    let p = Proxy::start(
        Some(&dav_policies(&engine)),
        &["--idle-timeout", "1s", "--min-upload-rate", "0"],
    );
    let data = random_bytes(8192 + 8 * 7000, 13);
    let mut raw = Raw::connect(p.addr);
    raw.send(
        format!(
            "PUT /raw/trickle.bin HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            data.len()
        )
        .as_bytes(),
    );
    raw.send(&data[..8192]);
    for piece in data[8192..].chunks(7000) {
        std::thread::sleep(Duration::from_millis(400));
        raw.send(piece);
    }
    let r = raw.read_response();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        p.wait_access("PUT", "/raw/trickle.bin", 201)["via"],
        "splice"
    );
    assert!(
        std::fs::read(engine.root.join("store/trickle.bin")).expect("stored on nginx") == data,
        "trickled bytes differ"
    );

    // Stops after the sniff window and a little more: cut, nothing stored.
    let mut raw = Raw::connect(p.addr);
    raw.send(b"PUT /raw/stopped.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n");
    raw.send(&data[..20_000]);
    let line = p.wait_access("PUT", "/raw/stopped.bin", 408);
    assert_eq!(line["rule"], "too_slow");
    assert_eq!(
        files_under(&engine.root),
        vec!["store/trickle.bin".to_string()]
    );
}

/// `--backend-timeout` is for the engine's answer once the body is sent, and
/// for the engine not reading: an upload that simply takes longer is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_longer_than_the_backend_timeout_is_stored() {
    let engine = engines::nginx();
    let p = Proxy::start(Some(&dav_policies(&engine)), &["--backend-timeout", "1s"]);
    for framing in [Framing::Chunked, Framing::Length] {
        let path = format!("/raw/slow-{framing:?}.bin");
        let (go, gate) = tokio::sync::oneshot::channel();
        let put = tokio::spawn(gated_put(p.url(&path), framing, 1 << 20, 1 << 20, gate));
        p.wait_in_flight(1.0);
        // The client pauses mid-body for twice the backend timeout (its own pace,
        // well within the idle timeout and the minimum rate's grace).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = go.send(());
        let r = put.await.expect("client task");
        assert_eq!(r.status, 201, "{framing:?}: {}", r.text());
        assert_eq!(p.wait_access("PUT", &path, 201)["via"], framing.via());
        assert_eq!(
            std::fs::metadata(engine.root.join(format!("store/slow-{framing:?}.bin")))
                .expect("stored on nginx")
                .len(),
            2 << 20
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_stops_reading_is_504_and_nothing_stored() {
    let engine = engines::nginx();
    let policies = dav_policies(&engine).replace("maxFileSize: 4Mi", "maxFileSize: 64Mi");
    let p = Proxy::start(Some(&policies), &["--backend-timeout", "1s"]);
    for framing in [Framing::Chunked, Framing::Length] {
        let path = format!("/raw/frozen-{framing:?}.bin");
        let (go, gate) = tokio::sync::oneshot::channel();
        let put = tokio::spawn(gated_put(p.url(&path), framing, 1 << 20, 48 << 20, gate));
        p.wait_in_flight(1.0);
        engine.signal("STOP");
        let _ = go.send(());
        let r = put.await.expect("client task");
        engine.signal("CONT");
        assert_reject(&r, 504, "backend_timeout");
        assert_eq!(p.wait_access("PUT", &path, 504)["via"], framing.via());
        // nginx, thawed, serves a new upload; the cut one left nothing.
        let ok = tokio::task::spawn_blocking({
            let url = p.url("/raw/after.bin");
            move || {
                let f = temp_file(&[7u8; 1000]);
                curl(&["-T", path_str(f.path()), &url])
            }
        })
        .await
        .expect("curl task");
        assert_eq!(ok.status, 201, "{}", ok.text());
        assert_eq!(
            files_under(&engine.root),
            vec!["store/after.bin".to_string()],
            "{framing:?}"
        );
    }
}

#[test]
fn s3_round_trip_multipart_and_single_put() {
    let engine = engines::s3();
    // SigV4 really is required: an unsigned request is refused by the engine itself.
    let unsigned = curl(&[&format!("{}/{S3_BUCKET}/", engine.url())]);
    assert_eq!(
        unsigned.status,
        403,
        "unsigned request: {}",
        unsigned.text()
    );

    let p = Proxy::start(Some(&s3_policies(&engine)), &["--s3-part-size", "5242880"]);
    // 12 MiB: three parts of a multipart upload.
    let data = random_bytes(12 << 20, 6);
    let f = temp_file(&data);
    assert_created_one(
        &curl(&["-T", path_str(f.path()), &p.url("/s3/big.bin")]),
        "big.bin",
        &data,
    );
    // Small: one PutObject.
    let small = png_bytes(20_000);
    let f2 = temp_file(&small);
    let r = curl(&[
        "-F",
        &format!(
            "file=@{};filename=s.png;type=image/png",
            path_str(f2.path())
        ),
        &p.url("/s3/"),
    ]);
    assert_created_one(&r, "s.png", &small);
    assert_eq!(s3_keys(&engine), vec!["in/big.bin", "in/s.png"]);
    downloads_match(&p, "/s3/big.bin", &data);
    downloads_match(&p, "/s3/s.png", &small);
}

#[test]
fn s3_rejections_mid_stream_leave_nothing() {
    let engine = engines::s3();
    let p = Proxy::start(Some(&s3_policies(&engine)), &["--s3-part-size", "5242880"]);
    // 20 MiB against a 16 MiB limit: three parts are uploaded before the limit trips,
    // so the multipart upload must be aborted.
    let big = random_bytes(20 << 20, 7);
    let f = temp_file(&big);
    let r = curl(&[
        "-T",
        path_str(f.path()),
        "-H",
        "Transfer-Encoding: chunked",
        &p.url("/s3/big.bin"),
    ]);
    assert_reject(&r, 413, "file_too_large");
    // Declared PNG, the bytes sniff as text: not an allowed type.
    let f = temp_file(&b"text pretending to be a PNG\n".repeat(500));
    let r = curl(&[
        "-T",
        path_str(f.path()),
        "-H",
        "Content-Type: image/png",
        &p.url("/s3/fake.png"),
    ]);
    assert_reject(&r, 415, "type_not_allowed");
    // Declared PNG, the bytes are random (sniffed application/octet-stream, which is
    // allowed): the declared type disagrees with the content.
    let f = temp_file(&random_bytes(30_000, 9));
    let r = curl(&[
        "-T",
        path_str(f.path()),
        "-H",
        "Content-Type: image/png",
        &p.url("/s3/fake2.png"),
    ]);
    assert_reject(&r, 415, "content_mismatch");
    p.wait_in_flight(0.0);
    assert_eq!(
        s3_keys(&engine),
        Vec::<String>::new(),
        "no object in the bucket"
    );
    wait_until(
        DEADLINE,
        || p.logs_text().contains("aborted multipart upload"),
        || format!("no AbortMultipartUpload logged:\n{}", p.logs_text()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_engine_killed_mid_upload_is_502_and_nothing_stored() {
    let mut engine = engines::s3();
    let p = Proxy::start(Some(&s3_policies(&engine)), &["--s3-part-size", "5242880"]);
    let (go, gate) = tokio::sync::oneshot::channel();
    // 6 MiB first: one part is on the engine before it dies.
    let put = tokio::spawn(gated_put(
        p.url("/s3/killed.bin"),
        Framing::Chunked,
        6 << 20,
        1 << 20,
        gate,
    ));
    p.wait_in_flight(1.0);
    wait_until(
        DEADLINE,
        || !files_under(&engine.root).is_empty(),
        || "the first part never reached the engine".into(),
    );
    engine.kill();
    let _ = go.send(());
    let r = put.await.expect("client task");
    assert_reject(&r, 502, "backend_error");
    engine.restart();
    assert_eq!(
        s3_keys(&engine),
        Vec::<String>::new(),
        "no object in the bucket"
    );
}

fn multipart_policies(engine: &Engine) -> String {
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {{name: up}}
spec:
  pathPrefix: /up/
  backend: {{http: {{url: "{u}/upload?path=/", downloadUrl: "{u}", mode: multipart, fieldName: file_to_upload}}}}
  upload: {{maxFileSize: 8Mi}}
---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {{name: up-spooled}}
spec:
  pathPrefix: /ups/
  backend:
    http:
      url: "{u}/upload?path=/"
      downloadUrl: "{u}"
      mode: multipart
      fieldName: file_to_upload
      spool: {{memory: 1Mi, disk: 16Mi}}
  upload: {{maxFileSize: 4Mi, allowedTypes: ["application/octet-stream"], verifyContent: true}}
"#,
        u = engine.url()
    )
}

#[test]
fn multipart_engine_round_trip_streamed_and_spooled() {
    let engine = engines::miniserve();
    let p = Proxy::start(Some(&multipart_policies(&engine)), &[]);
    // Streamed: the engine gets a chunked multipart/form-data POST per file.
    let data = random_bytes(3 << 20, 10);
    let f = temp_file(&data);
    let r = curl(&[
        "-F",
        &format!("file=@{};filename=streamed.bin", path_str(f.path())),
        &p.url("/up/"),
    ]);
    assert_created_one(&r, "streamed.bin", &data);
    assert_eq!(
        std::fs::read(engine.root.join("streamed.bin")).expect("stored by miniserve"),
        data
    );
    downloads_match(&p, "/up/streamed.bin", &data);
    // Spooled: sent with a Content-Length once complete (part of it spilled to disk).
    let data2 = random_bytes(3 << 20, 11);
    let f = temp_file(&data2);
    let r = curl(&["-T", path_str(f.path()), &p.url("/ups/spooled.bin")]);
    assert_created_one(&r, "spooled.bin", &data2);
    assert_eq!(
        std::fs::read(engine.root.join("spooled.bin")).expect("stored by miniserve"),
        data2
    );
    downloads_match(&p, "/ups/spooled.bin", &data2);
    // The spool files are gone once sent.
    assert!(
        p.files_in_data_dir().iter().all(|f| !f.contains("spool")),
        "spool files left: {:?}",
        p.files_in_data_dir()
    );
    // A multipart engine stores flat: sub-directories are refused, not silently flattened.
    let r = curl(&["-T", path_str(f.path()), &p.url("/up/sub/x.bin")]);
    assert_reject(&r, 422, "invalid_key");
}

#[test]
fn multipart_engine_rejections_leave_nothing_when_spooled() {
    let engine = engines::miniserve();
    let p = Proxy::start(Some(&multipart_policies(&engine)), &[]);
    let big = random_bytes(6 << 20, 12);
    let f = temp_file(&big);
    let r = curl(&[
        "-F",
        &format!("file=@{};filename=big.bin", path_str(f.path())),
        "-H",
        "Transfer-Encoding: chunked",
        &p.url("/ups/"),
    ]);
    assert_reject(&r, 413, "file_too_large");
    let f = temp_file(&b"text, not octets\n".repeat(1000));
    let r = curl(&[
        "-F",
        &format!(
            "file=@{};filename=t.bin;type=application/octet-stream",
            path_str(f.path())
        ),
        &p.url("/ups/"),
    ]);
    assert_reject(&r, 415, "type_not_allowed");
    p.wait_in_flight(0.0);
    assert_eq!(
        files_under(&engine.root),
        Vec::<String>::new(),
        "nothing stored by miniserve"
    );
    assert!(
        p.logs_text()
            .contains("multipart upload servers commonly keep a truncated upload"),
        "the unspooled multipart route is flagged at load"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_engine_killed_mid_upload_is_502_and_nothing_stored() {
    let mut engine = engines::miniserve();
    let p = Proxy::start(Some(&multipart_policies(&engine)), &[]);
    for path in ["/up/killed.bin", "/ups/killed.bin"] {
        let (go, gate) = tokio::sync::oneshot::channel();
        let put = tokio::spawn(gated_put(
            p.url(path),
            Framing::Chunked,
            1 << 20,
            1 << 20,
            gate,
        ));
        p.wait_in_flight(1.0);
        engine.kill();
        let _ = go.send(());
        let r = put.await.expect("client task");
        assert_reject(&r, 502, "backend_error");
        p.wait_in_flight(0.0);
        engine.restart();
        assert_eq!(
            files_under(&engine.root),
            Vec::<String>::new(),
            "nothing stored by miniserve ({path})"
        );
    }
}
