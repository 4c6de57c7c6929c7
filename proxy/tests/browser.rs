//! Uploads straight from a real browser: headless Chromium, driven through WebDriver,
//! loads pages from a second origin on loopback and sends files across origins to the
//! proxy: CORS (preflight, refusals the page can read, a disallowed origin), signed
//! URLs (`fetch` PUT, `XMLHttpRequest` with upload progress, expired and tampered
//! links) and a signed HTML form submitted without JavaScript. Every test checks the
//! bytes the proxy stored by sha256, not only the status the page saw.
//!
//! ```text
//!   test ──WebDriver (thirtyfour)──> chromedriver ──> Chromium (headless, one for the file)
//!                                                      │ page: http://127.0.0.1:A (Pages, here)
//!                                                      │ fetch / XHR / <form> across origins
//!                                                      v
//!                                        sluice-proxy http://127.0.0.1:B (a Proxy per test)
//! ```
//! Origins differ by port (127.0.0.1:A vs 127.0.0.1:B); the disallowed origin is the
//! same page server reached as `localhost:A`.
//!
//! Why thirtyfour: actively released (0.38, on reqwest 0.13 like the workspace), and
//! with its default features off it adds nine small pure-Rust crates (itself
//! included) to the lock, no duplicate versions: it reuses the workspace's reqwest
//! (built without a TLS provider: `common::install_crypto` installs ring before the
//! client is built; chromedriver speaks plain HTTP on loopback anyway), with neither
//! aws-lc (its `rustls` feature) nor its driver downloader (`manager`). fantoccini,
//! the other candidate, needs mozilla's `webdriver` crate, which brings second
//! copies of http (0.2), cookie and the ICU crates. A Python selenium script would
//! add a second language and a pip install to the test command for no gain.
//!
//! One chromedriver and one Chromium session serve the whole file (Chromium's start is
//! the slow part); tests take turns on it through `TURN`, each on its own origins and
//! proxy, so a preflight cached by one never answers another. The driver runs under a
//! bash watchdog reading our pipe: when this process exits, however it exits, the pipe
//! closes and the watchdog kills chromedriver's process group, Chromium included, and
//! removes the profile. Missing binaries fail the tests: scripts/test installs Debian's
//! `chromium` and `chromium-driver`.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};
use thirtyfour::prelude::*;

/// Debian's packages `chromium` and `chromium-driver`.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// chromedriver's start, then Chromium's first start with a fresh profile, on a
/// 2-core machine shared with other test binaries.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// One script in the page (an upload and the answer) or one page load.
const PAGE_DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The browser

struct Shared {
    rt: tokio::runtime::Runtime,
    driver: WebDriver,
    /// chromedriver's output (and the watchdog's), for failure messages.
    log: Arc<Mutex<Vec<String>>>,
    /// The watchdog's stdin: never written, closed by the kernel when we exit.
    _watchdog: Mutex<ChildStdin>,
}

static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();
/// One test at a time drives the one tab.
static TURN: Mutex<()> = Mutex::new(());

/// The shared Chromium session, held for one test.
struct Browser {
    _turn: MutexGuard<'static, ()>,
    s: &'static Shared,
}

fn browser() -> Browser {
    // A test that failed while holding the turn leaves the tab usable: the next one
    // navigates away first thing.
    let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    match SHARED.get_or_init(start_browser) {
        Ok(s) => Browser { _turn: turn, s },
        Err(e) => panic!("{e}"),
    }
}

fn start_browser() -> Result<Shared, String> {
    for (bin, pkg) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        if !Path::new(bin).exists() {
            return Err(format!(
                "the browser tests need {bin} (Debian package {pkg}); scripts/test installs \
                 it, or: apt-get install chromium chromium-driver"
            ));
        }
    }
    let profile = tempfile::Builder::new()
        .prefix("sluice-chromium-")
        .tempdir()
        .map_err(|e| format!("temp profile dir: {e}"))?
        .keep();
    // setsid: chromedriver leads a process group that Chromium's processes join, so
    // one kill takes them all; `read` returns when our end of the pipe closes.
    let mut child = Command::new("bash")
        .args([
            "-c",
            r#"setsid "$0" --port=0 & d=$!
               read -r _
               # Our pipes are closed now: writing to them would end this shell early.
               exec >/dev/null 2>&1
               kill -KILL -- -"$d" 2>/dev/null || kill -KILL "$d"
               wait "$d"
               # Killed processes may still be closing files in the profile: wait
               # (bounded) until the group is gone, then remove it.
               for _ in $(seq 50); do kill -0 -- -"$d" 2>/dev/null || break; sleep 0.1; done
               rm -rf -- "$1" 2>/dev/null || { sleep 1; rm -rf -- "$1"; }"#,
            CHROMEDRIVER,
        ])
        .arg(&profile)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn bash for chromedriver: {e}"))?;
    let watchdog = child.stdin.take().ok_or("watchdog stdin")?;
    let log = Arc::new(Mutex::new(Vec::new()));
    let (port_tx, port_rx) = mpsc::channel();
    for out in [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let (log, port_tx) = (log.clone(), port_tx.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                // "ChromeDriver was started successfully on port 41234."
                if let Some(p) = line
                    .split("started successfully on port ")
                    .nth(1)
                    .and_then(|rest| rest.trim_end_matches('.').trim().parse::<u16>().ok())
                {
                    let _ = port_tx.send(p);
                }
                log.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
    }
    let driver_log =
        |log: &Arc<Mutex<Vec<String>>>| log.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
    let port = port_rx.recv_timeout(START_DEADLINE).map_err(|_| {
        format!(
            "chromedriver did not say its port within {START_DEADLINE:?}; output:\n{}",
            driver_log(&log)
        )
    })?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    // reqwest (under thirtyfour) is built without a TLS provider of its own.
    install_crypto();
    let mut caps = DesiredCapabilities::chrome();
    let args = [
        "--headless=new".to_string(),
        // Chromium refuses to start as root with its sandbox on, and the tests (and CI)
        // run as root; the pages it loads are our own, on loopback.
        "--no-sandbox".to_string(),
        format!("--user-data-dir={}", profile.display()),
        // Containers often have a small /dev/shm.
        "--disable-dev-shm-usage".to_string(),
        // Loopback only, whatever proxy the environment names.
        "--no-proxy-server".to_string(),
        "--no-first-run".to_string(),
        "--window-size=1024,768".to_string(),
    ];
    let driver = rt.block_on(async {
        caps.set_binary(CHROMIUM)?;
        for a in &args {
            caps.add_arg(a)?;
        }
        let driver = WebDriver::builder(format!("http://127.0.0.1:{port}"), caps)
            .request_timeout(START_DEADLINE)
            .await?;
        driver.set_script_timeout(PAGE_DEADLINE).await?;
        driver.set_page_load_timeout(PAGE_DEADLINE).await?;
        Ok::<_, WebDriverError>(driver)
    });
    let driver = driver.map_err(|e| {
        format!(
            "no Chromium session through chromedriver on port {port}: {e}\nchromedriver output:\n{}",
            driver_log(&log)
        )
    })?;
    Ok(Shared {
        rt,
        driver,
        log,
        _watchdog: Mutex::new(watchdog),
    })
}

impl Browser {
    fn fail(&self, what: &str, e: impl std::fmt::Display) -> ! {
        let log = self.s.log.lock().unwrap_or_else(|p| p.into_inner());
        let tail = &log[log.len().saturating_sub(30)..];
        panic!(
            "{what}: {e}\n--- chromedriver output (last {} lines) ---\n{}",
            tail.len(),
            tail.join("\n")
        )
    }

    fn goto(&self, url: &str) {
        if let Err(e) = self.s.rt.block_on(self.s.driver.goto(url)) {
            self.fail(&format!("load {url}"), e)
        }
    }

    /// Runs `script` in the page with WebDriver's execute_async_script: `arguments`
    /// are `args`, then the callback whose value comes back.
    fn run(&self, script: &str, args: Vec<Value>) -> Value {
        match self
            .s
            .rt
            .block_on(self.s.driver.execute_async(script, args))
        {
            Ok(r) => r.json().clone(),
            Err(e) => self.fail("script in the page", e),
        }
    }

    fn current_url(&self) -> String {
        match self.s.rt.block_on(self.s.driver.current_url()) {
            Ok(u) => u.to_string(),
            Err(e) => self.fail("current url", e),
        }
    }

    fn find(&self, css: &str) -> WebElement {
        match self.s.rt.block_on(self.s.driver.find(By::Css(css))) {
            Ok(e) => e,
            Err(e) => self.fail(&format!("find {css}"), e),
        }
    }

    /// Types `text` into the element: for a file input, the path of the file to send.
    fn send_keys(&self, css: &str, text: &str) {
        let el = self.find(css);
        if let Err(e) = self.s.rt.block_on(el.send_keys(text)) {
            self.fail(&format!("send keys to {css}"), e)
        }
    }

    fn click(&self, css: &str) {
        let el = self.find(css);
        if let Err(e) = self.s.rt.block_on(el.click()) {
            self.fail(&format!("click {css}"), e)
        }
    }

    /// The text of the document's body (a JSON answer shows as text).
    fn body_text(&self) -> String {
        let el = self.find("body");
        match self.s.rt.block_on(el.text()) {
            Ok(t) => t,
            Err(e) => self.fail("body text", e),
        }
    }

    /// Polls until the tab is on a URL starting with `prefix`.
    fn wait_url(&self, prefix: &str) -> String {
        poll(PAGE_DEADLINE, &format!("the tab on {prefix}"), || {
            let url = self.current_url();
            if url.starts_with(prefix) {
                Ok(url)
            } else {
                Err(url)
            }
        })
    }
}

/// Polls `f` every 20 ms until it gives `Ok`; past `deadline`, fails with `what` and
/// the last `Err` (the state it saw).
fn poll<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let started = std::time::Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(state) if started.elapsed() > deadline => {
                panic!("no {what} within {deadline:?}; last seen: {state}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

// ---------------------------------------------------------------------------
// The pages' origin

/// A tiny HTTP/1.1 server on 127.0.0.1: the origin of the test pages. GET of a known
/// path answers its page; every request target is recorded.
struct Pages {
    addr: SocketAddr,
    pages: Arc<Mutex<HashMap<String, Page>>>,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Clone)]
struct Page {
    body: String,
    /// Extra response headers (a CSP for the no-script form).
    headers: Vec<(String, String)>,
}

const BLANK: &str =
    "<!doctype html><meta charset=utf-8><title>sluice test page</title><p>ready</p>";

impl Pages {
    fn start() -> Pages {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the pages' origin");
        let addr = listener.local_addr().expect("pages addr");
        let pages: Arc<Mutex<HashMap<String, Page>>> = Arc::default();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (pages, seen, stop) = (pages.clone(), seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let (pages, seen) = (pages.clone(), seen.clone());
                    // A connection of its own: Chromium opens spare ones it may never use.
                    std::thread::spawn(move || serve_page(conn, &pages, &seen));
                }
            })
        };
        let p = Pages {
            addr,
            pages,
            seen,
            stop,
            thread: Some(thread),
        };
        p.add("/", BLANK, &[]);
        p
    }

    fn add(&self, path: &str, body: &str, headers: &[(&str, &str)]) {
        self.pages.lock().unwrap_or_else(|p| p.into_inner()).insert(
            path.to_string(),
            Page {
                body: body.to_string(),
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        );
    }

    /// This origin as the browser names it, e.g. `http://127.0.0.1:41000`.
    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    /// The same server under another host name: another origin.
    fn other_origin(&self) -> String {
        format!("http://localhost:{}", self.addr.port())
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes accept()
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_page(
    mut conn: TcpStream,
    pages: &Mutex<HashMap<String, Page>>,
    seen: &Mutex<Vec<String>>,
) {
    let _ = conn.set_read_timeout(Some(PAGE_DEADLINE));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(target.clone());
    let path = target.split('?').next().unwrap_or("/");
    let page = pages
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(path)
        .cloned();
    let (status, page) = match page {
        Some(p) => ("200 OK", p),
        None => (
            "404 Not Found",
            Page {
                body: "not found".into(),
                headers: vec![],
            },
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        page.body.len()
    );
    for (k, v) in &page.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&page.body);
    let _ = conn.write_all(out.as_bytes());
}

// ---------------------------------------------------------------------------
// Policies, signing, the scripts the pages run

const API_KEY: &str = "browser-test-key-5f3a9c";
/// The HMAC key of signed URLs and forms (a Secret value, and the file `sign` reads).
const SIGNING_KEY: &str = "9b1d3f5e7a2c4e6081a3c5e7f9b1d3f5e7a2c4e6081a3c5e7f9b1d3f5e7a2c4e";
/// maxFileSize of the `/web/` policy (64Ki): test c sends more.
const WEB_MAX: usize = 64 * 1024;

/// `/web/`: API keys, CORS for `origin`, files up to 64 KiB. `/signed/`: signed URLs
/// and forms, CORS for `origin`.
fn policies(origin: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: keys}}
stringData: {{k1: {API_KEY}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: signing}}
stringData: {{k1: {SIGNING_KEY}}}
---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {{name: web}}
spec:
  pathPrefix: /web/
  backend: {{fs: {{root: web}}}}
  upload: {{maxFileSize: 64Ki}}
  auth: {{apiKeys: {{secretRef: {{name: keys}}}}}}
  cors:
    allowedOrigins: ["{origin}"]
    allowedMethods: [POST, PUT]
    allowedHeaders: [X-Api-Key, Content-Type]
    maxAge: 600
---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {{name: signed}}
spec:
  pathPrefix: /signed/
  backend: {{fs: {{root: signed}}}}
  upload: {{maxFileSize: 16Mi}}
  auth: {{signedUrls: {{secretRef: {{name: signing}}}}}}
  cors:
    allowedOrigins: ["{origin}"]
    allowedMethods: [POST, PUT]
    allowedHeaders: [Content-Type]
    maxAge: 600
"#
    )
}

/// The proxy for a page served by `pages`, with the signing key in a file for `sign`.
struct Setup {
    pages: Pages,
    proxy: Proxy,
    key_file: tempfile::NamedTempFile,
}

fn setup() -> Setup {
    let pages = Pages::start();
    let proxy = Proxy::start(Some(&policies(&pages.origin())), &[]);
    let key_file = temp_file(SIGNING_KEY.as_bytes());
    Setup {
        pages,
        proxy,
        key_file,
    }
}

impl Setup {
    /// `sluice-proxy <cmd> --secret-file KEY args...`: its stdout, trimmed.
    fn sluice(&self, cmd: &str, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice-proxy"))
            .arg(cmd)
            .arg("--secret-file")
            .arg(self.key_file.path())
            .args(args)
            .output()
            .expect("run sluice-proxy");
        assert!(
            out.status.success(),
            "sluice-proxy {cmd} {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8 output")
            .trim()
            .to_string()
    }

    /// A signed URL for `method` on `path` of the proxy.
    fn sign(&self, method: &str, path: &str, expires: &str, extra: &[&str]) -> String {
        let url = self.proxy.url(path);
        let mut args = vec!["--method", method, "--url", &url, "--expires", expires];
        args.extend_from_slice(extra);
        self.sluice("sign", &args)
    }
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Page script: a multipart POST of one Blob by `fetch`; the status and the JSON
/// answer as the page reads them, or the exception.
const FETCH_MULTIPART: &str = r#"
const [url, headers, b64, filename, done] = arguments;
const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
const form = new FormData();
form.append('file', new Blob([bytes], {type: 'application/octet-stream'}), filename);
fetch(url, {method: 'POST', headers, body: form, mode: 'cors'})
  .then(async r => {
    const text = await r.text();
    let json = null;
    try { json = JSON.parse(text); } catch (e) {}
    done({status: r.status, json, text});
  })
  .catch(e => done({thrown: e.name, message: String(e.message)}));
"#;

/// Page script: a PUT of the bytes by `fetch`.
const FETCH_PUT: &str = r#"
const [url, b64, done] = arguments;
const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
fetch(url, {method: 'PUT', headers: {'Content-Type': 'application/octet-stream'}, body: bytes})
  .then(async r => {
    const text = await r.text();
    let json = null;
    try { json = JSON.parse(text); } catch (e) {}
    done({status: r.status, json, text});
  })
  .catch(e => done({thrown: e.name, message: String(e.message)}));
"#;

/// Page script: a PUT of the bytes by `XMLHttpRequest`, recording every upload
/// progress event (a listener on `upload` also makes the request preflighted).
const XHR_PUT: &str = r#"
const [url, b64, done] = arguments;
const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
const events = [];
const xhr = new XMLHttpRequest();
xhr.upload.onprogress = e => events.push({loaded: e.loaded, total: e.total, computable: e.lengthComputable});
xhr.onload = () => {
  let json = null;
  try { json = JSON.parse(xhr.responseText); } catch (e) {}
  done({status: xhr.status, json, text: xhr.responseText, events});
};
xhr.onerror = () => done({thrown: 'error', events});
xhr.open('PUT', url);
xhr.setRequestHeader('Content-Type', 'application/octet-stream');
xhr.send(new Blob([bytes]));
"#;

/// The status the page read, with the whole result on failure.
fn status(r: &Value) -> u64 {
    r["status"].as_u64().unwrap_or_else(|| {
        panic!("the page got no response: {r}");
    })
}

/// The one object of a 201 as the page read it: key and sha256 of `data`.
fn created(r: &Value, key: &str, data: &[u8]) {
    assert_eq!(status(r), 201, "page result: {r}");
    let objects = r["json"]["objects"].as_array().cloned().unwrap_or_default();
    assert_eq!(objects.len(), 1, "objects the page read: {r}");
    assert_object(&objects[0], key, data);
}

/// The bytes under `key` in the data dir are `data`, by sha256.
fn stored(p: &Proxy, key: &str, data: &[u8]) {
    assert_eq!(
        sha256_hex(&p.read_stored(key)),
        sha256_hex(data),
        "sha256 of the stored {key}"
    );
}

/// A refusal the page read: status and the JSON `error`.
fn refused(r: &Value, status_want: u64, rule: &str) {
    assert_eq!(status(r), status_want, "page result: {r}");
    assert_eq!(r["json"]["error"], rule, "error the page read: {r}");
}

// ---------------------------------------------------------------------------
// The tests

/// a. A cross-origin multipart POST with an API key header: preflight (OPTIONS in the
/// access log), 201, the JSON read by the page, the bytes stored.
#[test]
fn cross_origin_fetch_post_with_api_key() {
    let s = setup();
    let b = browser();
    b.goto(&format!("{}/", s.pages.origin()));
    let data = random_bytes(40_000, 21);
    let r = b.run(
        FETCH_MULTIPART,
        vec![
            json!(s.proxy.url("/web/")),
            json!({"X-Api-Key": API_KEY}),
            json!(b64(&data)),
            json!("browser.bin"),
        ],
    );
    created(&r, "browser.bin", &data);
    stored(&s.proxy, "web/browser.bin", &data);
    s.proxy.assert_files(&["web/browser.bin"]);
    // The browser asked first: the preflight is in the access log before the POST.
    let pre = s
        .proxy
        .wait_access_where(|l| l["method"] == "OPTIONS" && l["path"] == "/web/");
    assert_eq!(pre["status"], 204, "preflight: {pre}");
    s.proxy.wait_access("POST", "/web/", 201);
    let order: Vec<_> = s
        .proxy
        .access_logs()
        .iter()
        .map(|l| l["method"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(order, ["OPTIONS", "POST"], "{}", s.proxy.access_text());
}

/// b. A page on an origin the policy does not list: the preflight gets no allow
/// headers (403 `cors_not_allowed`), the browser never sends the POST and `fetch`
/// rejects with a TypeError; nothing is stored.
#[test]
fn disallowed_origin_is_blocked_by_the_browser() {
    let s = setup();
    let b = browser();
    b.goto(&format!("{}/", s.pages.other_origin()));
    let data = random_bytes(10_000, 22);
    let r = b.run(
        FETCH_MULTIPART,
        vec![
            json!(s.proxy.url("/web/")),
            json!({"X-Api-Key": API_KEY}),
            json!(b64(&data)),
            json!("blocked.bin"),
        ],
    );
    assert_eq!(r["thrown"], "TypeError", "page result: {r}");
    let pre = s
        .proxy
        .wait_access_where(|l| l["method"] == "OPTIONS" && l["path"] == "/web/");
    // Answered, without the allow headers, and counted; never a 5xx.
    assert_eq!(
        pre["status"], 403,
        "preflight of a disallowed origin: {pre}"
    );
    assert_eq!(pre["rule"], "cors_not_allowed", "{pre}");
    wait_until(
        DEADLINE,
        || {
            s.proxy
                .metric("sluice_rejections_total{rule=\"cors_not_allowed\"}")
                >= 1.0
        },
        || s.proxy.metrics(),
    );
    assert!(
        !s.proxy.access_logs().iter().any(|l| l["method"] == "POST"),
        "the browser sent the POST:\n{}",
        s.proxy.access_text()
    );
    s.proxy.assert_files(&[]);

    // The same request from the allowed origin (the same server under its IP) is sent
    // and stored: the refusal was about the origin.
    b.goto(&format!("{}/", s.pages.origin()));
    let r = b.run(
        FETCH_MULTIPART,
        vec![
            json!(s.proxy.url("/web/")),
            json!({"X-Api-Key": API_KEY}),
            json!(b64(&data)),
            json!("allowed.bin"),
        ],
    );
    created(&r, "allowed.bin", &data);
    stored(&s.proxy, "web/allowed.bin", &data);
    s.proxy.assert_files(&["web/allowed.bin"]);
}

/// c. A refusal the page can read: a file over the policy's maxFileSize answers 413
/// with the JSON rule, across origins.
#[test]
fn refusal_is_readable_by_the_page() {
    let s = setup();
    let b = browser();
    b.goto(&format!("{}/", s.pages.origin()));
    let data = random_bytes(WEB_MAX + 30_000, 23);
    let r = b.run(
        FETCH_MULTIPART,
        vec![
            json!(s.proxy.url("/web/")),
            json!({"X-Api-Key": API_KEY}),
            json!(b64(&data)),
            json!("big.bin"),
        ],
    );
    refused(&r, 413, "file_too_large");
    assert!(
        r["json"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message the page read: {r}"
    );
    // Nothing of it kept, not even a temp file.
    wait_until(
        DEADLINE,
        || s.proxy.files_in_data_dir().is_empty(),
        || format!("{:?}", s.proxy.files_in_data_dir()),
    );
    // And a file under the limit goes through on the same page.
    let small = random_bytes(WEB_MAX - 1000, 24);
    let r = b.run(
        FETCH_MULTIPART,
        vec![
            json!(s.proxy.url("/web/")),
            json!({"X-Api-Key": API_KEY}),
            json!(b64(&small)),
            json!("small.bin"),
        ],
    );
    created(&r, "small.bin", &small);
    stored(&s.proxy, "web/small.bin", &small);
}

/// d. Signed URLs from `sluice-proxy sign`: a `fetch` PUT, and an `XMLHttpRequest` PUT
/// whose upload progress events end at loaded == total.
#[test]
fn signed_url_fetch_put_and_xhr_progress() {
    let s = setup();
    let b = browser();
    b.goto(&format!("{}/", s.pages.origin()));

    let data = random_bytes(300_000, 25);
    let url = s.sign("PUT", "/signed/fetch.bin", "15m", &[]);
    let r = b.run(FETCH_PUT, vec![json!(url), json!(b64(&data))]);
    created(&r, "fetch.bin", &data);
    stored(&s.proxy, "signed/fetch.bin", &data);

    let big = random_bytes(3 << 20, 26);
    let url = s.sign(
        "PUT",
        "/signed/xhr.bin",
        "15m",
        &["--max-size", &(4 << 20).to_string()],
    );
    let r = b.run(XHR_PUT, vec![json!(url), json!(b64(&big))]);
    created(&r, "xhr.bin", &big);
    let events = r["events"].as_array().cloned().unwrap_or_default();
    assert!(!events.is_empty(), "no upload progress events: {r}");
    let last = &events[events.len() - 1];
    assert_eq!(
        last["loaded"],
        big.len() as u64,
        "last progress event: {last}"
    );
    assert_eq!(
        last["total"],
        big.len() as u64,
        "last progress event: {last}"
    );
    assert_eq!(last["computable"], true, "last progress event: {last}");
    let loaded: Vec<u64> = events.iter().filter_map(|e| e["loaded"].as_u64()).collect();
    assert!(
        loaded.windows(2).all(|w| w[0] <= w[1]),
        "progress went backwards: {loaded:?}"
    );
    stored(&s.proxy, "signed/xhr.bin", &big);
    s.proxy
        .assert_files(&["signed/fetch.bin", "signed/xhr.bin"]);
}

/// The expiry (unix seconds) a signed URL carries.
fn expiry_of(url: &str) -> u64 {
    let u = url::Url::parse(url).unwrap_or_else(|e| panic!("signed URL {url}: {e}"));
    u.query_pairs()
        .find(|(k, _)| k.to_ascii_lowercase().contains("expires"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no expiry in the signed URL {url}"))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// e. An expired URL and tampered ones: 403 with the rule, read by the page; nothing
/// stored.
#[test]
fn expired_and_tampered_signed_urls_are_refused() {
    let s = setup();
    let b = browser();
    b.goto(&format!("{}/", s.pages.origin()));
    let data = random_bytes(20_000, 27);

    let expired = s.sign("PUT", "/signed/late.bin", "1s", &[]);
    let until = expiry_of(&expired);
    // The clock, not a sleep: the proxy compares whole seconds.
    wait_until(
        Duration::from_secs(5),
        || now_unix() > until,
        || format!("clock at {} for expiry {until}", now_unix()),
    );
    let r = b.run(FETCH_PUT, vec![json!(expired), json!(b64(&data))]);
    refused(&r, 403, "signature_expired");

    let good = s.sign("PUT", "/signed/mine.bin", "15m", &[]);
    // Another key under the same signature.
    let other_key = good.replace("/signed/mine.bin", "/signed/yours.bin");
    let r = b.run(FETCH_PUT, vec![json!(other_key), json!(b64(&data))]);
    refused(&r, 403, "signature_invalid");
    // A later expiry than was signed.
    let until = expiry_of(&good);
    let later = good.replace(&until.to_string(), &(until + 86_400).to_string());
    assert_ne!(later, good);
    let r = b.run(FETCH_PUT, vec![json!(later), json!(b64(&data))]);
    refused(&r, 403, "signature_invalid");
    s.proxy.assert_files(&[]);

    // The untouched URL still works: the refusals were about the changes.
    let r = b.run(FETCH_PUT, vec![json!(good), json!(b64(&data))]);
    created(&r, "mine.bin", &data);
    stored(&s.proxy, "signed/mine.bin", &data);
}

/// The form page: the signed fields, in the order `sign-form` printed them, before
/// the file input; no script at all (and a CSP forbidding any).
fn form_page(action: &str, fields: &[(String, String)]) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut html = format!(
        "<!doctype html><meta charset=utf-8><title>signed form</title>\n\
         <form method=post enctype=multipart/form-data action=\"{}\">\n",
        esc(action)
    );
    for (k, v) in fields {
        html.push_str(&format!(
            "<input type=hidden name=\"{}\" value=\"{}\">\n",
            esc(k),
            esc(v)
        ));
    }
    html.push_str(
        "<input type=file name=file id=file>\n<button type=submit id=go>Upload</button>\n</form>\n",
    );
    html
}

/// `sign-form`'s JSON object as (field, value) pairs in printed order.
fn form_fields(json_text: &str) -> Vec<(String, String)> {
    // serde_json's map may be sorted: put the fields back in the printed order.
    let v: Value = serde_json::from_str(json_text)
        .unwrap_or_else(|e| panic!("sign-form printed no JSON ({e}): {json_text}"));
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("sign-form printed no object: {json_text}"));
    let mut fields: Vec<(String, String)> = obj
        .iter()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            (k.clone(), v)
        })
        .collect();
    fields.sort_by_key(|(k, _)| json_text.find(&format!("\"{k}\"")).unwrap_or(usize::MAX));
    fields
}

/// f. An HTML form with the signed policy fields and a file input, submitted by a click
/// with no script on the page: once with a success redirect back to the page's origin,
/// once answering the JSON of the upload.
#[test]
fn signed_html_form_without_javascript() {
    let s = setup();
    let b = browser();
    let dir = tempfile::tempdir().expect("temp dir");
    // `sign-form` takes the policy's prefix URL; the form posts under the key prefix.
    let prefix_url = s.proxy.url("/signed/");
    let action = s.proxy.url("/signed/forms/");
    let no_script = [("Content-Security-Policy", "script-src 'none'")];

    // With a redirect: the browser lands on the page's origin.
    let data = random_bytes(150_000, 28);
    let file = dir.path().join("form-upload.bin");
    std::fs::write(&file, &data).expect("write the form's file");
    let done = format!("{}/done", s.pages.origin());
    let fields = form_fields(&s.sluice(
        "sign-form",
        &[
            "--url",
            &prefix_url,
            "--expires",
            "15m",
            "--key-prefix",
            "forms/",
            "--max-size",
            "1048576",
            "--redirect",
            &done,
        ],
    ));
    s.pages
        .add("/form", &form_page(&action, &fields), &no_script);
    s.pages.add(
        "/done",
        "<!doctype html><title>done</title><p>uploaded</p>",
        &[],
    );
    b.goto(&format!("{}/form", s.pages.origin()));
    b.send_keys("#file", path_str(&file));
    b.click("#go");
    let landed = b.wait_url(&done);
    assert!(
        s.pages.seen().iter().any(|t| t.starts_with("/done")),
        "the redirect never reached the page's origin: {:?}",
        s.pages.seen()
    );
    // The redirect names what was stored: its key and its sha256 as the etag.
    let q: HashMap<String, String> = url::Url::parse(&landed)
        .unwrap_or_else(|e| panic!("landed on {landed}: {e}"))
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(
        q.get("key").map(String::as_str),
        Some("forms/form-upload.bin"),
        "{landed}"
    );
    assert_eq!(
        q.get("etag").map(|e| e.trim_matches('"')),
        Some(sha256_hex(&data).as_str()),
        "{landed}"
    );
    stored(&s.proxy, "signed/forms/form-upload.bin", &data);

    // Without a redirect: the proxy's JSON is the result page.
    let data2 = random_bytes(90_000, 29);
    let file2 = dir.path().join("form-json.bin");
    std::fs::write(&file2, &data2).expect("write the form's file");
    let fields = form_fields(&s.sluice(
        "sign-form",
        &[
            "--url",
            &prefix_url,
            "--expires",
            "15m",
            "--key-prefix",
            "forms/",
        ],
    ));
    s.pages
        .add("/form2", &form_page(&action, &fields), &no_script);
    b.goto(&format!("{}/form2", s.pages.origin()));
    b.send_keys("#file", path_str(&file2));
    b.click("#go");
    b.wait_url(&action);
    let text = poll(PAGE_DEADLINE, "JSON result page", || {
        let t = b.body_text();
        if t.contains("objects") { Ok(t) } else { Err(t) }
    });
    let json_start = text.find('{').unwrap_or(0);
    let v: Value = serde_json::from_str(text[json_start..].trim())
        .unwrap_or_else(|e| panic!("result page is not the JSON ({e}): {text}"));
    let objects = v["objects"].as_array().cloned().unwrap_or_default();
    assert_eq!(objects.len(), 1, "{v}");
    assert_object(&objects[0], "forms/form-json.bin", &data2);
    stored(&s.proxy, "signed/forms/form-json.bin", &data2);
    s.proxy
        .assert_files(&["signed/forms/form-json.bin", "signed/forms/form-upload.bin"]);
}
