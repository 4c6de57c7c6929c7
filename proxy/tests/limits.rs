//! Admission and pace limits, and interrupted uploads: past --max-transfers-per-client
//! a client gets 429, past --max-transfers everyone gets 503 (both with Retry-After);
//! an idle or too slow upload is cut off with 408; and an upload that is cut off or
//! abandoned mid-body leaves no object and no temp file behind.
//!
//! A transfer is held open with a bare socket that sent a head and part of a body;
//! the proxy's `sluice_transfers_in_flight` gauge says when it has been admitted.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;

/// Opens a PUT of `total` bytes, sends `sent` of them, and waits until the proxy counts it.
fn hold_put(p: &Proxy, key: &str, total: usize, sent: &[u8]) -> Raw {
    let before = p.in_flight();
    let mut raw = Raw::connect(p.addr);
    raw.send(&head(
        "PUT",
        &format!("/files/{key}"),
        &[&format!("Content-Length: {total}")],
    ));
    raw.send(sent);
    p.wait_in_flight(before + 1.0);
    raw
}

/// Limits tests need the held upload to stay open whatever the pace: no rate limit.
const NO_RATE: [&str; 2] = ["--min-upload-rate", "0"];

#[test]
fn too_many_client_transfers_is_429_with_retry_after() {
    let p = Proxy::start(
        None,
        &[NO_RATE[0], NO_RATE[1], "--max-transfers-per-client", "1"],
    );
    let existing = random_bytes(5000, 40);
    let f = temp_file(&existing);
    assert_eq!(
        curl(&["-T", path_str(f.path()), &p.url("/files/existing.bin")]).status,
        201
    );

    let data = random_bytes(4000, 41);
    let mut held = hold_put(&p, "held.bin", data.len(), &data[..1000]);

    // Same client address, second upload: refused at once.
    let r = curl(&["-T", path_str(f.path()), &p.url("/files/second.bin")]);
    assert_reject(&r, 429, "too_many_client_transfers");
    assert_eq!(r.header("retry-after"), Some("1"));
    // Downloads count too, on both paths.
    for flag in ["--http1.1", "--http2-prior-knowledge"] {
        let r = curl(&[flag, &p.url("/files/existing.bin")]);
        assert_reject(&r, 429, "too_many_client_transfers");
        assert_eq!(r.header("retry-after"), Some("1"));
    }

    // The held upload was never disturbed: it completes.
    held.send(&data[1000..]);
    assert_created_one(&held.read_response(), "held.bin", &data);
    p.wait_in_flight(0.0);
    // And the client is welcome again.
    let r = curl(&["-T", path_str(f.path()), &p.url("/files/second.bin")]);
    assert_eq!(r.status, 201);
    p.assert_files(&["existing.bin", "held.bin", "second.bin"]);
}

#[test]
fn overloaded_is_503_with_retry_after() {
    let p = Proxy::start(None, &[NO_RATE[0], NO_RATE[1], "--max-transfers", "1"]);
    let data = random_bytes(4000, 42);
    let mut held = hold_put(&p, "held.bin", data.len(), &data[..10]);

    let f = temp_file(b"small");
    let r = curl(&[
        "-F",
        &format!("f=@{};filename=other.txt", path_str(f.path())),
        &p.url("/files/"),
    ]);
    assert_reject(&r, 503, "overloaded");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        p.metric("sluice_rejections_total{rule=\"overloaded\"}"),
        1.0
    );

    held.send(&data[10..]);
    assert_created_one(&held.read_response(), "held.bin", &data);
    p.assert_files(&["held.bin"]);
}

#[test]
fn idle_upload_is_408_and_its_temp_file_removed() {
    let p = Proxy::start(None, &[NO_RATE[0], NO_RATE[1], "--idle-timeout", "1s"]);
    // PUT: the body stops after 100 of 5000 bytes.
    let mut raw = hold_put(&p, "stalled.bin", 5000, &random_bytes(100, 43));
    p.wait_temp_file();
    let msg = assert_reject(&raw.read_response(), 408, "too_slow");
    assert!(msg.contains("idle"), "{msg}");
    p.assert_files(&[]);

    // Multipart: a file part that stops mid-way.
    let mut body = multipart_body(&[Part {
        name: "f",
        filename: Some("stalled.bin"),
        content_type: None,
        data: &random_bytes(5000, 44),
    }]);
    let total = body.len();
    body.truncate(2000);
    let mut raw = Raw::connect(p.addr);
    raw.send(&head(
        "POST",
        "/files/",
        &[
            &format!("Content-Type: multipart/form-data; boundary={BOUNDARY}"),
            &format!("Content-Length: {total}"),
        ],
    ));
    raw.send(&body);
    p.wait_temp_file();
    assert_reject(&raw.read_response(), 408, "too_slow");
    p.assert_files(&[]);
    p.wait_access_where(|l| l["method"] == "POST" && l["status"] == 408 && l["rule"] == "too_slow");
}

#[test]
fn trickling_upload_under_the_minimum_rate_is_408() {
    let p = Proxy::start(
        None,
        &["--min-upload-rate", "100000", "--min-rate-grace", "1s"],
    );
    let mut raw = hold_put(&p, "trickle.bin", 1_000_000, b"0123456789");
    p.wait_temp_file();
    // A few bytes every 50 ms (this sleep paces the trickle; it waits for nothing) until
    // the proxy answers; bounded in case it never does.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writer = raw.stream.try_clone().expect("clone socket");
    let stop2 = stop.clone();
    let trickle = std::thread::spawn(move || {
        for _ in 0..400 {
            if stop2.load(Ordering::Relaxed) || writer.write_all(b"0123456789").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let r = raw.read_response();
    stop.store(true, Ordering::Relaxed);
    let _ = trickle.join();
    let msg = assert_reject(&r, 408, "too_slow");
    assert!(msg.contains("100000 bytes/s"), "{msg}");
    p.assert_files(&[]);
}

#[test]
fn aborted_multipart_upload_leaves_nothing() {
    let p = Proxy::start(None, &[]);
    let file = random_bytes(200_000, 45);
    let mut body = multipart_body(&[Part {
        name: "f",
        filename: Some("aborted.bin"),
        content_type: Some("application/octet-stream"),
        data: &file,
    }]);
    let total = body.len();
    body.truncate(50_000);
    let mut raw = Raw::connect(p.addr);
    raw.send(&head(
        "POST",
        "/files/",
        &[
            &format!("Content-Type: multipart/form-data; boundary={BOUNDARY}"),
            &format!("Content-Length: {total}"),
        ],
    ));
    raw.send(&body);
    // The part is being written: its temp file exists (and the harness sees dotfiles).
    p.wait_temp_file();
    drop(raw);
    p.wait_in_flight(0.0);
    p.assert_files(&[]);
    p.wait_access_where(|l| {
        l["method"] == "POST" && l["status"] == 400 && l["rule"] == "client_aborted"
    });
}

#[test]
fn aborted_put_leaves_nothing() {
    let p = Proxy::start(None, &[]);
    let raw = hold_put(&p, "aborted.bin", 200_000, &random_bytes(50_000, 46));
    p.wait_temp_file();
    drop(raw);
    p.wait_in_flight(0.0);
    p.assert_files(&[]);
    // An earlier object under the same key is untouched by an aborted overwrite.
    let old = random_bytes(300, 47);
    let f = temp_file(&old);
    assert_eq!(
        curl(&["-T", path_str(f.path()), &p.url("/files/aborted.bin")]).status,
        201
    );
    let raw = hold_put(&p, "aborted.bin", 200_000, &random_bytes(50_000, 48));
    wait_until(
        DEADLINE,
        || p.files_in_data_dir().len() == 2,
        || format!("{:?}", p.files_in_data_dir()),
    );
    drop(raw);
    p.wait_in_flight(0.0);
    p.assert_files(&["aborted.bin"]);
    assert_eq!(p.read_stored("aborted.bin"), old);
}

#[test]
fn a_head_trickled_past_the_header_timeout_is_cut_off() {
    let p = Proxy::start(None, &["--header-timeout", "1s"]);
    let mut raw = Raw::connect(p.addr);
    let started = std::time::Instant::now();
    raw.send(b"GET /files/x HTTP/1.1\r\nHost: sluice.test\r\n");
    // Slowloris: a header byte every 100 ms never completes the head; sending more
    // must not buy more time. Bounded: 40 bytes, 4 s.
    let mut cut = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(100));
        if raw.stream.write_all(b"X").is_err() {
            cut = true;
            break;
        }
        if started.elapsed() > Duration::from_millis(1500) {
            cut = raw.closed_within(Duration::from_secs(2));
            break;
        }
    }
    assert!(
        cut,
        "the proxy kept a trickling head open past --header-timeout 1s"
    );
    // A complete head on a fresh connection still works.
    let mut ok = Raw::connect(p.addr);
    ok.send(&head("GET", "/files/missing.bin", &[]));
    assert_eq!(ok.read_response().status, 404);
}

#[test]
fn an_oversized_request_head_is_431_with_json() {
    let p = Proxy::start(None, &[]);
    let mut raw = Raw::connect(p.addr);
    let big = format!("X-Filler: {}", "a".repeat(20 * 1024));
    raw.send(&head("GET", "/files/x", &[&big]));
    let r = raw.read_response();
    assert_reject(&r, 431, "head_too_large");
}
