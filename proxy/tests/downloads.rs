//! Range and conditional GET/HEAD answer alike on the sendfile fast path and on the
//! hyper path (HTTP/2, and HTTP/1.1 with --no-sendfile): 206 with the right slice and
//! Content-Range, 304 for a matching If-None-Match / If-Modified-Since, If-Range
//! falling back to the whole file, 412 and 416 as JSON rejections.

mod common;

use common::*;

const LEN: usize = 1000;

async fn get(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Response {
    let mut rb = client.get(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    Response::from_reqwest(rb.send().await.expect("GET")).await
}

fn assert_partial(r: &Response, data: &[u8], start: usize, end: usize) {
    assert_eq!(r.status, 206, "{:?}", r.text());
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes {start}-{end}/{}", data.len()).as_str())
    );
    assert_eq!(
        r.header("content-length"),
        Some((end - start + 1).to_string().as_str())
    );
    assert!(r.body == data[start..=end], "bytes of range {start}-{end}");
}

/// Every range and conditional case on one path; `via` is how the access log names it.
async fn ranges_and_conditionals(
    p: &Proxy,
    client: &reqwest::Client,
    path: &str,
    data: &[u8],
    via: &str,
) {
    let url = p.url(path);
    let full = get(client, &url, &[]).await;
    assert_eq!(full.status, 200);
    assert!(full.body == data, "full body");
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        full.header("content-length"),
        Some(LEN.to_string().as_str())
    );
    let etag = full.header("etag").expect("etag").to_string();
    let modified = full
        .header("last-modified")
        .expect("last-modified")
        .to_string();

    assert_partial(
        &get(client, &url, &[("range", "bytes=0-9")]).await,
        data,
        0,
        9,
    );
    assert_partial(
        &get(client, &url, &[("range", "bytes=-5")]).await,
        data,
        LEN - 5,
        LEN - 1,
    );
    assert_partial(
        &get(client, &url, &[("range", "bytes=10-")]).await,
        data,
        10,
        LEN - 1,
    );
    // An end past the object is clamped to its last byte.
    assert_partial(
        &get(client, &url, &[("range", "bytes=990-5000")]).await,
        data,
        990,
        LEN - 1,
    );

    let r = get(client, &url, &[("range", "bytes=5000-")]).await;
    assert_reject(&r, 416, "range_not_satisfiable");
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{LEN}").as_str())
    );

    let r = get(client, &url, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304, "If-None-Match with the ETag");
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = get(client, &url, &[("if-none-match", "\"some-other-tag\"")]).await;
    assert_eq!(r.status, 200);
    assert!(r.body == data);

    let r = get(client, &url, &[("if-modified-since", &modified)]).await;
    assert_eq!(r.status, 304, "If-Modified-Since = Last-Modified");
    assert!(r.body.is_empty());
    let r = get(
        client,
        &url,
        &[("if-modified-since", "Thu, 01 Jan 1998 00:00:00 GMT")],
    )
    .await;
    assert_eq!(r.status, 200);

    // If-Range: the range only while the validator still matches, else the whole file.
    assert_partial(
        &get(client, &url, &[("range", "bytes=0-9"), ("if-range", &etag)]).await,
        data,
        0,
        9,
    );
    let r = get(
        client,
        &url,
        &[("range", "bytes=0-9"), ("if-range", "\"stale-tag\"")],
    )
    .await;
    assert_eq!(
        r.status, 200,
        "If-Range with a stale tag gives the whole file"
    );
    assert!(r.body == data);

    let r = get(client, &url, &[("if-match", "\"not-this-one\"")]).await;
    assert_reject(&r, 412, "precondition_failed");
    let r = get(client, &url, &[("if-match", &etag)]).await;
    assert_eq!(r.status, 200);

    let r = Response::from_reqwest(client.head(&url).send().await.expect("HEAD")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(LEN.to_string().as_str()));
    assert!(r.body.is_empty());

    assert_reject(
        &get(client, &p.url("/files/absent.bin"), &[]).await,
        404,
        "not_found",
    );

    // 15 requests on `path` (14 GET, 1 HEAD), every one served by the expected path.
    let want = 15;
    let reads = || -> Vec<serde_json::Value> {
        p.access_logs()
            .into_iter()
            .filter(|l| l["path"] == path && (l["method"] == "GET" || l["method"] == "HEAD"))
            .collect()
    };
    wait_until(DEADLINE, || reads().len() >= want, || p.access_text());
    let lines = reads();
    assert_eq!(lines.len(), want, "{}", p.access_text());
    for l in &lines {
        assert_eq!(l["via"], via, "{l}");
    }
}

fn upload(p: &Proxy, key: &str, data: &[u8]) {
    let f = temp_file(data);
    let r = curl(&["-T", path_str(f.path()), &p.url(&format!("/files/{key}"))]);
    assert_created_one(&r, key, data);
}

#[tokio::test]
async fn on_the_sendfile_fast_path() {
    let p = Proxy::start(None, &[]);
    let data = random_bytes(LEN, 100);
    upload(&p, "r.bin", &data);
    // A fresh client: its connection starts with a GET, so it stays on the fast path.
    ranges_and_conditionals(&p, &client_h1(), "/files/r.bin", &data, "sendfile").await;
}

#[tokio::test]
async fn on_the_hyper_path_over_http2() {
    let p = Proxy::start(None, &[]);
    let data = random_bytes(LEN, 101);
    upload(&p, "r.bin", &data);
    ranges_and_conditionals(&p, &client_h2(), "/files/r.bin", &data, "hyper").await;
}

#[tokio::test]
async fn on_the_hyper_path_with_no_sendfile() {
    let p = Proxy::start(None, &["--no-sendfile"]);
    let data = random_bytes(LEN, 102);
    upload(&p, "r.bin", &data);
    ranges_and_conditionals(&p, &client_h1(), "/files/r.bin", &data, "hyper").await;
}

#[test]
fn curl_ranges_on_both_paths() {
    let p = Proxy::start(None, &[]);
    let data = random_bytes(LEN, 103);
    upload(&p, "c.bin", &data);
    for flag in ["--http1.1", "--http2-prior-knowledge"] {
        let r = curl(&[flag, "-r", "0-9", &p.url("/files/c.bin")]);
        assert_partial(&r, &data, 0, 9);
        let r = curl(&[flag, "-r", "-5", &p.url("/files/c.bin")]);
        assert_partial(&r, &data, LEN - 5, LEN - 1);
        let r = curl(&[flag, "-r", "5000-", &p.url("/files/c.bin")]);
        assert_reject(&r, 416, "range_not_satisfiable");
        assert_eq!(r.header("content-range"), Some("bytes */1000"));
    }
    let vias: Vec<String> = p
        .access_logs()
        .iter()
        .filter(|l| l["method"] == "GET")
        .map(|l| l["via"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        vias.contains(&"sendfile".into()) && vias.contains(&"hyper".into()),
        "{vias:?}"
    );
}

#[test]
fn empty_object_downloads_on_both_paths() {
    let p = Proxy::start(None, &[]);
    upload(&p, "empty", b"");
    for flag in ["--http1.1", "--http2-prior-knowledge"] {
        let r = curl(&[flag, &p.url("/files/empty")]);
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
        assert_eq!(r.header("content-length"), Some("0"));
        // No byte of an empty object can be asked for.
        let r = curl(&[flag, "-r", "0-0", &p.url("/files/empty")]);
        assert_reject(&r, 416, "range_not_satisfiable");
    }
}

#[test]
fn keep_alive_survives_rejections_on_the_fast_path() {
    let p = Proxy::start(None, &[]);
    let data = random_bytes(LEN, 104);
    upload(&p, "k.bin", &data);
    // One connection: a 404, a 416, a 304-able GET and a full GET in a row.
    let mut raw = Raw::connect(p.addr);
    raw.send(&head("GET", "/files/nope", &[]));
    assert_reject(&raw.read_response(), 404, "not_found");
    raw.send(&head("GET", "/files/k.bin", &["Range: bytes=9999-"]));
    assert_reject(&raw.read_response(), 416, "range_not_satisfiable");
    raw.send(&head("GET", "/files/k.bin", &["Range: bytes=1-2"]));
    let r = raw.read_response();
    assert_eq!(r.status, 206);
    assert_eq!(r.body, data[1..=2]);
    raw.send(&head("GET", "/files/k.bin", &["Connection: close"]));
    let r = raw.read_response();
    assert_eq!(r.status, 200);
    assert!(r.body == data);
    let lines: Vec<_> = p
        .access_logs()
        .into_iter()
        .filter(|l| l["method"] == "GET")
        .collect();
    assert!(
        lines.iter().all(|l| l["via"] == "sendfile"),
        "{}",
        p.access_text()
    );
}
