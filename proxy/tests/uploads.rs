//! Uploads store exactly the bytes sent, and downloads give them back: multipart POST
//! and raw PUT from curl and reqwest (streamed bodies too), the 201 JSON describes each
//! object (key, size, contentType, sha256 of the bytes), and every download path (the
//! sendfile fast path, hyper over HTTP/2, hyper with --no-sendfile) returns the same bytes.

mod common;

use bytes::Bytes;
use common::*;
use futures_util::stream;
use reqwest::multipart::{Form, Part as FormPart};

/// Downloads `path` over curl HTTP/1.1 (sendfile) and curl HTTP/2 (hyper) and checks the
/// bytes and which path served each.
fn curl_downloads_match(p: &Proxy, path: &str, data: &[u8]) {
    let fast = curl(&["--http1.1", &p.url(path)]);
    assert_eq!(fast.status, 200, "GET {path}: {}", fast.text());
    assert_eq!(
        sha256_hex(&fast.body),
        sha256_hex(data),
        "fast-path bytes of {path}"
    );
    assert_eq!(fast.body.len(), data.len());
    let l = p.wait_access("GET", path, 200);
    assert_eq!(l["via"], "sendfile", "{l}");
    assert_eq!(l["bytes"], data.len() as u64, "{l}");

    let h2 = curl(&["--http2-prior-knowledge", &p.url(path)]);
    assert_eq!(h2.status, 200, "GET {path} over h2: {}", h2.text());
    assert!(h2.body == data, "hyper-path bytes of {path} differ");
    p.wait_access_where(|l| l["path"] == path && l["via"] == "hyper" && l["status"] == 200);
}

#[test]
fn multipart_with_curl_round_trips_every_size() {
    let p = Proxy::start(None, &[]);
    for (i, size) in [0usize, 1, 100 * 1024].into_iter().enumerate() {
        let data = random_bytes(size, i as u64);
        let f = temp_file(&data);
        let name = format!("part-{size}.bin");
        let r = curl(&[
            "-F",
            &format!("file=@{};filename={name}", path_str(f.path())),
            &p.url("/files/"),
        ]);
        let o = assert_created_one(&r, &name, &data);
        assert_eq!(o["contentType"], "application/octet-stream");
        assert_eq!(p.read_stored(&name), data, "stored bytes of {name}");
        curl_downloads_match(&p, &format!("/files/{name}"), &data);
    }
    p.assert_files(&["part-0.bin", "part-1.bin", "part-102400.bin"]);
}

#[test]
fn put_with_curl_round_trips() {
    let p = Proxy::start(None, &[]);
    let data = random_bytes(100 * 1024, 7);
    let f = temp_file(&data);
    let r = curl(&[
        "-T",
        path_str(f.path()),
        "-H",
        "Content-Type: application/x-test",
        &p.url("/files/put/a.dat"),
    ]);
    let o = assert_created_one(&r, "put/a.dat", &data);
    assert_eq!(o["contentType"], "application/x-test");
    assert_eq!(r.uploaded, data.len() as u64);
    curl_downloads_match(&p, "/files/put/a.dat", &data);
    p.assert_files(&["put/a.dat"]);
}

#[test]
fn twenty_mib_round_trip_on_both_download_paths() {
    let p = Proxy::start(None, &[]);
    let data = random_bytes(20 * 1024 * 1024 + 123, 20);
    let f = temp_file(&data);
    let r = curl(&["-T", path_str(f.path()), &p.url("/files/big.bin")]);
    assert_created_one(&r, "big.bin", &data);
    curl_downloads_match(&p, "/files/big.bin", &data);
    assert_eq!(
        p.metric("sluice_upload_bytes_total"),
        data.len() as f64,
        "upload bytes counted"
    );
    assert_eq!(
        p.metric("sluice_download_bytes_total{path=\"sendfile\"}"),
        data.len() as f64
    );
}

#[tokio::test]
async fn multipart_and_put_with_reqwest_streamed_bodies() {
    let p = Proxy::start(None, &[]);
    let h1 = client_h1();
    let h2 = client_h2();
    let data = random_bytes(300 * 1024 + 5, 3);
    let chunks = |d: &[u8]| {
        let v: Vec<Result<Bytes, std::io::Error>> = d
            .chunks(7 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        reqwest::Body::wrap_stream(stream::iter(v))
    };

    // Multipart, part of unknown length: the request is chunked, no Content-Length.
    let form = Form::new().text("note", "hello").part(
        "file",
        FormPart::stream(chunks(&data))
            .file_name("streamed.bin")
            .mime_str("application/octet-stream")
            .unwrap(),
    );
    let r = h1
        .post(p.url("/files/"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_created_one(&Response::from_reqwest(r).await, "streamed.bin", &data);

    // Multipart, streamed part of known length.
    let form = Form::new().part(
        "file",
        FormPart::stream_with_length(chunks(&data), data.len() as u64).file_name("sized.bin"),
    );
    let r = h1
        .post(p.url("/files/"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let o = assert_created_one(&Response::from_reqwest(r).await, "sized.bin", &data);
    // RFC 7578: a part without Content-Type is text/plain, and that is what is recorded.
    assert_eq!(o["contentType"], "text/plain");

    // Raw PUT, whole body and streamed (chunked), over HTTP/1.1 and HTTP/2.
    let r = h1
        .put(p.url("/files/put-whole.bin"))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_created_one(&Response::from_reqwest(r).await, "put-whole.bin", &data);
    let r = h1
        .put(p.url("/files/put-stream.bin"))
        .body(chunks(&data))
        .send()
        .await
        .unwrap();
    assert_created_one(&Response::from_reqwest(r).await, "put-stream.bin", &data);
    let r = h2
        .put(p.url("/files/put-h2.bin"))
        .body(chunks(&data))
        .send()
        .await
        .unwrap();
    assert_created_one(&Response::from_reqwest(r).await, "put-h2.bin", &data);

    // A connection hyper took (for the uploads) stays with hyper; a fresh client's plain
    // GETs take the sendfile fast path.
    let fresh = client_h1();
    for key in [
        "streamed.bin",
        "sized.bin",
        "put-whole.bin",
        "put-stream.bin",
        "put-h2.bin",
    ] {
        let path = format!("/files/{key}");
        let got = fresh.get(p.url(&path)).send().await.unwrap();
        assert_eq!(got.status(), 200);
        assert!(got.bytes().await.unwrap() == data, "h1 download of {key}");
        let got = h2.get(p.url(&path)).send().await.unwrap();
        assert_eq!(got.status(), 200);
        assert_eq!(got.version(), reqwest::Version::HTTP_2);
        assert!(got.bytes().await.unwrap() == data, "h2 download of {key}");
        p.wait_access_where(|l| l["path"] == path.as_str() && l["via"] == "sendfile");
        p.wait_access_where(|l| l["path"] == path.as_str() && l["via"] == "hyper");
    }
    p.assert_files(&[
        "put-h2.bin",
        "put-stream.bin",
        "put-whole.bin",
        "sized.bin",
        "streamed.bin",
    ]);
}

#[test]
fn several_files_in_one_post_are_all_stored() {
    let p = Proxy::start(None, &[]);
    let a = random_bytes(10_000, 1);
    let b = b"plain text, second part\n".to_vec();
    let fa = temp_file(&a);
    let fb = temp_file(&b);
    let r = curl(&[
        "-F",
        &format!(
            "one=@{};filename=a.bin;type=application/octet-stream",
            path_str(fa.path())
        ),
        "-F",
        "comment=not a file",
        "-F",
        &format!(
            "two=@{};filename=b.txt;type=text/plain",
            path_str(fb.path())
        ),
        &p.url("/files/"),
    ]);
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    let objects = v["objects"].as_array().expect("objects");
    assert_eq!(objects.len(), 2, "{v}");
    assert_object(&objects[0], "a.bin", &a);
    assert_object(&objects[1], "b.txt", &b);
    assert_eq!(objects[1]["contentType"], "text/plain");
    assert_eq!(p.read_stored("a.bin"), a);
    assert_eq!(p.read_stored("b.txt"), b);
    p.assert_files(&["a.bin", "b.txt"]);
}

#[test]
fn post_to_a_subdirectory_stores_under_it() {
    let p = Proxy::start(None, &[]);
    let data = random_bytes(4096, 9);
    let f = temp_file(&data);
    let r = curl(&[
        "-F",
        &format!("file=@{};filename=in-sub.bin", path_str(f.path())),
        &p.url("/files/sub/deeper/"),
    ]);
    assert_created_one(&r, "sub/deeper/in-sub.bin", &data);
    p.assert_files(&["sub/deeper/in-sub.bin"]);
    curl_downloads_match(&p, "/files/sub/deeper/in-sub.bin", &data);
}

#[test]
fn client_paths_in_filenames_are_reduced_to_the_last_segment() {
    let p = Proxy::start(None, &[]);
    let data = b"contents".to_vec();
    let f = temp_file(&data);
    // Browsers on Windows send full paths; "../" must not climb out of the route.
    let r = curl(&[
        "-F",
        &format!("file=@{};filename=../../etc/evil.txt", path_str(f.path())),
        &p.url("/files/"),
    ]);
    assert_created_one(&r, "evil.txt", &data);
    p.assert_files(&["evil.txt"]);
}

#[test]
fn no_sendfile_flag_serves_http1_downloads_through_hyper() {
    let p = Proxy::start(None, &["--no-sendfile"]);
    let data = random_bytes(256 * 1024 + 1, 11);
    let f = temp_file(&data);
    let r = curl(&["-T", path_str(f.path()), &p.url("/files/x.bin")]);
    assert_created_one(&r, "x.bin", &data);
    let got = curl(&["--http1.1", &p.url("/files/x.bin")]);
    assert_eq!(got.status, 200);
    assert!(got.body == data, "bytes through hyper differ");
    let l = p.wait_access("GET", "/files/x.bin", 200);
    assert_eq!(l["via"], "hyper", "{l}");
    assert_eq!(
        p.metric("sluice_download_responses_total{path=\"sendfile\"}"),
        0.0
    );
    assert_eq!(
        p.metric("sluice_download_responses_total{path=\"copy\"}"),
        1.0
    );
}
