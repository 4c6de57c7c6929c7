//! Operating the proxy: health and readiness probes, metrics and access-log lines that
//! account for each request, policy reloads from --policies (new rules enforced, a
//! broken rewrite ignored while the last good config serves), a graceful SIGTERM
//! (in-flight upload completes, new connections refused, exit 0), and the embedded
//! default served with no --policies, and start-up flags refused with a clear error.

mod common;

use std::io::Read;

use common::*;

fn policy(prefix: &str, root: &str, max: &str) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\nmetadata: {{name: {root}}}\nspec:\n  pathPrefix: {prefix}\n  backend: {{fs: {{root: {root}}}}}\n  upload: {{maxFileSize: {max}}}\n"
    )
}

fn config_version(p: &Proxy) -> String {
    let r = p.admin_get("/readyz");
    assert_eq!(r.status, 200, "/readyz: {}", r.text());
    let v = r.json();
    assert_eq!(v["ready"], true, "{v}");
    v["configVersion"]
        .as_str()
        .expect("configVersion")
        .to_string()
}

#[test]
fn health_and_readiness() {
    let p = Proxy::start(None, &[]);
    let r = p.admin_get("/healthz");
    assert_eq!(r.status, 200);
    assert_eq!(r.text().trim(), "ok");
    let version = config_version(&p);
    assert_eq!(version.len(), 16, "{version}");
    assert_eq!(
        p.metric(&format!("sluice_config_info{{version=\"{version}\"}}")),
        1.0
    );
    assert_eq!(p.admin_get("/nope").status, 404);
}

#[test]
fn metrics_count_requests_and_rejections() {
    let p = Proxy::start(None, &[]);
    assert_eq!(p.metric("sluice_rejections_total{rule=\"no_route\"}"), 0.0);
    assert_reject(&curl(&[&p.url("/nowhere")]), 404, "no_route");
    assert_reject(&curl(&[&p.url("/nowhere")]), 404, "no_route");
    assert_reject(
        &curl(&["-X", "DELETE", &p.url("/files/x")]),
        405,
        "method_not_allowed",
    );
    // A method of the client's invention is not a label of its own.
    for m in ["BREW", "WHEN"] {
        assert_reject(
            &curl(&["-X", m, &p.url("/files/x")]),
            405,
            "method_not_allowed",
        );
    }
    let data = random_bytes(777, 60);
    assert_created_one(&put(&p, "/files/m.bin", &data), "m.bin", &data);

    let m = p.metrics();
    let get = |k: &str| metric_in(&m, k).unwrap_or_else(|| panic!("{k} missing from:\n{m}"));
    assert_eq!(get("sluice_rejections_total{rule=\"no_route\"}"), 2.0);
    assert_eq!(
        get("sluice_rejections_total{rule=\"method_not_allowed\"}"),
        3.0
    );
    assert_eq!(
        get("sluice_requests_total{method=\"other\",policy=\"default/default\",status=\"405\"}"),
        2.0
    );
    assert!(!m.contains("BREW") && !m.contains("WHEN"), "{m}");
    assert_eq!(
        get("sluice_requests_total{method=\"GET\",policy=\"\",status=\"404\"}"),
        2.0
    );
    assert_eq!(
        get("sluice_requests_total{method=\"PUT\",policy=\"default/default\",status=\"201\"}"),
        1.0
    );
    assert_eq!(get("sluice_objects_stored_total"), 1.0);
    assert_eq!(get("sluice_upload_bytes_total"), 777.0);
    assert_eq!(get("sluice_transfers_in_flight"), 0.0);
    assert!(m.contains("sluice_connections_open"), "{m}");
    assert!(
        m.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
}

#[test]
fn access_log_lines_carry_the_request() {
    let p = Proxy::start(None, &[]);
    let data = random_bytes(1234, 61);
    assert_eq!(put(&p, "/files/log.bin", &data).status, 201);
    assert_eq!(curl(&["--http1.1", &p.url("/files/log.bin")]).status, 200);
    let mut raw = Raw::connect(p.addr);
    raw.send(&head("PUT", "/files/a/../b", &["Content-Length: 0"]));
    assert_reject(&raw.read_response(), 422, "invalid_key");

    let l = p.wait_access("PUT", "/files/log.bin", 201);
    assert_eq!(l["policy"], "default/default", "{l}");
    assert_eq!(l["bytes"], 1234, "{l}");
    assert_eq!(l["rule"], "", "{l}");
    assert_eq!(l["via"], "hyper", "{l}");
    assert!(
        l["peer"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:")),
        "{l}"
    );
    assert!(l["duration_ms"].is_number(), "{l}");
    assert_eq!(l["level"], "INFO", "{l}");

    let l = p.wait_access("GET", "/files/log.bin", 200);
    assert_eq!(
        (l["via"].as_str(), l["bytes"].as_u64()),
        (Some("sendfile"), Some(1234)),
        "{l}"
    );

    let l = p.wait_access("PUT", "/files/a/../b", 422);
    assert_eq!(l["rule"], "invalid_key", "{l}");
    assert_eq!(l["bytes"], 0, "{l}");
}

#[test]
fn reload_applies_changed_policies_and_ignores_a_broken_rewrite() {
    let v1_yaml = policy("/files/", "files", "1Ki");
    let p = Proxy::start(Some(&v1_yaml), &["--reload-interval", "100ms"]);
    let two_k = random_bytes(2048, 62);
    let v1 = config_version(&p);
    assert_reject(&put(&p, "/files/two.bin", &two_k), 413, "file_too_large");
    assert_reject(&put(&p, "/extra/two.bin", &two_k), 404, "no_route");

    // Raise the limit and add a second prefix.
    let v2_yaml = format!(
        "{}---\n{}",
        policy("/files/", "files", "4Ki"),
        policy("/extra/", "extra", "1Mi")
    );
    p.write_policies(&v2_yaml);
    wait_until(
        DEADLINE,
        || config_version(&p) != v1,
        || format!("config still {v1}; log:\n{}", p.logs_text()),
    );
    let v2 = config_version(&p);
    assert_created_one(&put(&p, "/files/two.bin", &two_k), "two.bin", &two_k);
    assert_created_one(&put(&p, "/extra/two.bin", &two_k), "two.bin", &two_k);
    assert_reject(
        &put(&p, "/files/eight.bin", &random_bytes(8192, 63)),
        413,
        "file_too_large",
    );
    assert_eq!(
        p.metric("sluice_config_reloads_total{result=\"applied\"}"),
        2.0
    );

    // A rewrite that does not parse: noticed, refused, and v2 keeps serving.
    p.write_policies("apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\nspec: [unclosed\n");
    wait_until(
        DEADLINE,
        || p.metric("sluice_config_reloads_total{result=\"error\"}") >= 1.0,
        || p.metrics(),
    );
    assert_eq!(config_version(&p), v2);
    // The line goes out through the logging thread and a pipe: it may come
    // after the metric moved.
    wait_until(
        DEADLINE,
        || {
            p.log_json().iter().any(|l| {
                l["level"] == "ERROR"
                    && l["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("keeping the current config"))
            })
        },
        || {
            format!(
                "no error logged for the broken policies:\n{}",
                p.logs_text()
            )
        },
    );
    let three_k = random_bytes(3072, 64);
    assert_created_one(
        &put(&p, "/files/three.bin", &three_k),
        "three.bin",
        &three_k,
    );
    assert_created_one(
        &put(&p, "/extra/three.bin", &three_k),
        "three.bin",
        &three_k,
    );
    assert_reject(
        &put(&p, "/files/eight.bin", &random_bytes(8192, 65)),
        413,
        "file_too_large",
    );

    // Fixing the file applies again; the same policies give the same version.
    p.write_policies(&v1_yaml);
    wait_until(DEADLINE, || config_version(&p) == v1, || p.logs_text());
    assert_reject(
        &put(&p, "/files/two-again.bin", &two_k),
        413,
        "file_too_large",
    );
    assert_reject(&put(&p, "/extra/x.bin", &two_k), 404, "no_route");
    p.assert_files(&[
        "extra/three.bin",
        "extra/two.bin",
        "files/three.bin",
        "files/two.bin",
    ]);
}

#[test]
fn an_invalid_policy_is_left_out_and_the_others_serve() {
    let yaml = format!(
        "{}---\n{}",
        policy("/good/", "good", "1Mi"),
        policy("/bad/", "bad", "lots")
    );
    let p = Proxy::start(Some(&yaml), &[]);
    let data = random_bytes(100, 66);
    assert_created_one(&put(&p, "/good/a.bin", &data), "a.bin", &data);
    assert_reject(&put(&p, "/bad/a.bin", &data), 404, "no_route");
    // The warning names the policy and why; its own "message" stays the event's text
    // (a field of that name would make a second "message" key in the JSON line).
    let warned = p
        .logs()
        .into_iter()
        .find(|l| l.contains("default/bad"))
        .unwrap_or_default();
    let l: serde_json::Value = serde_json::from_str(&warned).unwrap_or_default();
    assert_eq!(l["message"], "policy not accepted", "{warned}");
    assert_eq!(l["reason"], "Invalid", "{warned}");
    assert_eq!(warned.matches("\"message\":").count(), 1, "{warned}");
    assert!(warned.contains("maxFileSize"), "{warned}");
}

#[test]
fn sigterm_lets_the_in_flight_upload_finish_then_exits_zero() {
    let mut p = Proxy::start(None, &["--min-upload-rate", "0", "--shutdown-grace", "20s"]);
    let data = random_bytes(100_000, 67);
    let mut held = Raw::connect(p.addr);
    held.send(&head(
        "PUT",
        "/files/late.bin",
        &[&format!("Content-Length: {}", data.len())],
    ));
    held.send(&data[..10_000]);
    p.wait_in_flight(1.0);

    p.sigterm();
    // The listener closes: new connections are refused...
    wait_until(
        DEADLINE,
        || !connects(p.addr),
        || format!("still accepting after SIGTERM; log:\n{}", p.logs_text()),
    );
    // ...while the upload already in flight completes.
    held.send(&data[10_000..]);
    assert_created_one(&held.read_response(), "late.bin", &data);
    drop(held);

    let status = p.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert_eq!(p.read_stored("late.bin"), data);
    p.assert_files(&["late.bin"]);
    let messages: Vec<String> = p
        .log_json()
        .iter()
        .filter_map(|l| l["message"].as_str().map(str::to_string))
        .collect();
    for m in ["shutdown requested", "bye"] {
        assert!(messages.iter().any(|x| x == m), "no {m:?} in {messages:?}");
    }
}

/// A download that ends after SIGTERM, its last bytes still queued in the
/// sockets when the proxy is done with it (a slow client): the proxy exits
/// only once the client has read them all and closed. In a pod the network
/// namespace goes with the process, and queued bytes with it: the node test
/// saw a download lose its last 2.5 MB that way. On the sendfile path, kept
/// alive and with `Connection: close`, and on hyper's.
#[test]
fn sigterm_waits_until_the_client_has_read_the_end_of_a_download() {
    for (args, close) in [
        (&[][..], false),
        (&[][..], true),
        (&["--no-sendfile"][..], false),
    ] {
        let what = format!("{args:?} close={close}");
        let mut all = vec!["--shutdown-grace", "20s"];
        all.extend_from_slice(args);
        let mut p = Proxy::start(None, &all);
        let data = random_bytes(16 << 20, 71);
        let f = temp_file(&data);
        let r = curl(&["-T", path_str(f.path()), &p.url("/files/queued.bin")]);
        assert_eq!(r.status, 201);

        let mut c = Raw::connect(p.addr);
        let extra: &[&str] = if close { &["Connection: close"] } else { &[] };
        c.send(&head("GET", "/files/queued.bin", extra));
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        let mut read_some = |c: &mut Raw, got: &mut Vec<u8>| {
            let n = c.stream.read(&mut chunk).expect("read the download");
            assert!(n > 0, "{what}: the proxy closed early");
            got.extend_from_slice(&chunk[..n]);
        };
        read_some(&mut c, &mut got);
        p.sigterm();
        // Read slowly until the proxy is done writing (its access line), the
        // rest then queued in the sockets.
        let done = |p: &Proxy| {
            p.log_json()
                .iter()
                .any(|l| l["method"] == "GET" && l["path"] == "/files/queued.bin")
        };
        while !done(&p) {
            read_some(&mut c, &mut got);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(1500));
        assert!(
            p.running(),
            "{what}: exited with the end of the download unread; log:\n{}",
            p.logs_text()
        );
        let head_end = got
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head")
            + 4;
        while got.len() < head_end + data.len() {
            read_some(&mut c, &mut got);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"), "{what}");
        assert!(
            got[head_end..] == data[..],
            "{what}: the body arrives whole"
        );
        drop(c);
        let status = p.wait_exit(DEADLINE);
        assert_eq!(status.code(), Some(0), "{what}: exit status {status}");
    }
}

#[test]
fn embedded_default_serves_files_without_auth() {
    let p = Proxy::start(None, &[]);
    assert!(!config_version(&p).is_empty());
    let data = random_bytes(3000, 68);
    let f = temp_file(&data);
    let r = curl(&[
        "-F",
        &format!("file=@{};filename=d.bin", path_str(f.path())),
        &p.url("/files/"),
    ]);
    assert_created_one(&r, "d.bin", &data);
    // The default stores right under --data-dir.
    p.assert_files(&["d.bin"]);
    let r = curl(&[&p.url("/files/d.bin")]);
    assert_eq!(r.status, 200);
    assert!(r.body == data);
    assert_reject(&curl(&[&p.url("/other/d.bin")]), 404, "no_route");
    // Its file limit is 1 GiB: a bigger Content-Length is refused before any body.
    let mut raw = Raw::connect(p.addr);
    raw.send(&head(
        "PUT",
        "/files/huge.bin",
        &["Content-Length: 1073741825", "Expect: 100-continue"],
    ));
    let msg = assert_reject(&raw.read_response(), 413, "file_too_large");
    assert!(msg.contains("1073741824-byte"), "{msg}");
    let l = p.wait_access("POST", "/files/", 201);
    assert_eq!(l["policy"], "default/default", "{l}");
}

/// A splice window outside what the proxy takes is refused at start, naming
/// the flag and the range, before anything listens.
#[test]
fn splice_window_out_of_range_is_refused_at_start() {
    for bad in ["1000", "1073741824", "2M"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-proxy"))
            .args(["--splice-window", bad, "--listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .output()
            .expect("run sluice-proxy");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}: started anyway");
        assert!(
            err.contains("--splice-window") && err.contains("262144"),
            "{bad}: {err}"
        );
    }
}

/// The first text log lines of a proxy started with `--log-format text` and
/// these flags, up to the `listening` line, its stdout a pipe (as under
/// `kubectl logs` or a redirect to a file).
fn text_logs_until_listening(extra: &[&str]) -> String {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-proxy"));
    cmd.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--log-format", "text", "--data-dir"])
        .arg(dir.path())
        .args(extra)
        .env("RUST_LOG", "info")
        .env_remove("SLUICE_LOG_COLOR")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut text = String::new();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines {
        let line = line.unwrap();
        text.push_str(&line);
        text.push('\n');
        if line.contains("listening") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("listening"), "no listening line in:\n{text}");
    text
}

#[test]
fn text_logs_are_coloured_only_on_a_terminal() {
    let piped = text_logs_until_listening(&[]);
    assert!(
        !piped.contains('\u{1b}'),
        "escape codes in logs written to a pipe:\n{piped:?}"
    );
    let forced = text_logs_until_listening(&["--log-color", "always"]);
    assert!(forced.contains("\u{1b}["), "{forced:?}");
    let never = text_logs_until_listening(&["--log-color", "never"]);
    assert!(!never.contains('\u{1b}'), "{never:?}");
}
