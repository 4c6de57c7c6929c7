//! TLS on the client listener and the admin port, against the real binary:
//! curl and reqwest over HTTP/1.1 and h2 (ALPN), uploads and downloads
//! byte-identical and recorded as `tls-copy`; SNI choosing the certificate;
//! a reload the kubelet way (a `..data` symlink swap) while a download is in
//! flight; a broken pair keeping the old one; mTLS; plain HTTP refused; the
//! kTLS offload report; clear startup errors; the operator's push over TLS;
//! an engine route (miniserve) whose download goes through the hyper client.
//!
//! Which certificate a connection was served is read by a tokio-rustls
//! client whose verifier records the leaf (and accepts it: these tests check
//! the choice; curl and reqwest check verification).

mod common;
mod engines;

use std::net::SocketAddr;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pki::{Ca, Leaf};
use common::*;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("certificate PEM")
        .to_vec()
}

/// A test directory with a CA and the proxy's certificate for localhost.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new(name: &str) -> Pki {
        Pki {
            dir: tempfile::tempdir().expect("temp dir"),
            ca: Ca::new(name),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn ca_file(&self) -> String {
        path_str(&self.ca.write(self.dir.path(), "ca")).to_string()
    }
    /// A leaf for `names`, written as `{stem}.crt` / `{stem}.key`.
    fn leaf(&self, stem: &str, names: &[&str]) -> (Leaf, String, String) {
        let leaf = self.ca.leaf(names);
        let (c, k) = leaf.write(self.dir.path(), stem);
        (leaf, path_str(&c).to_string(), path_str(&k).to_string())
    }
}

/// `--tls-cert crt --tls-key key` and more.
fn tls_args<'a>(crt: &'a str, key: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--tls-cert", crt, "--tls-key", key];
    v.extend_from_slice(more);
    v
}

/// A reqwest client trusting only `ca`, offering `alpn`, sending `localhost` to the proxy.
fn https_client(p: &Proxy, ca: &Ca, identity: Option<&Leaf>, alpn: &[&[u8]]) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(der(&ca.cert_pem)))
        .expect("CA root");
    let b = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut cfg = match identity {
        Some(leaf) => {
            let chain = CertificateDer::pem_slice_iter(leaf.chain_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("chain");
            let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
            b.with_client_auth_cert(chain, key).expect("client cert")
        }
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    reqwest::Client::builder()
        .no_proxy()
        .resolve("localhost", p.addr)
        .tls_backend_preconfigured(cfg)
        .build()
        .expect("reqwest client")
}

/// Accepts any certificate and keeps the leaf it was shown.
#[derive(Debug)]
struct Recorder {
    seen: Mutex<Option<Vec<u8>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(end_entity.to_vec());
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS connection to `addr` with SNI `sni` (none for an IP), ALPN http/1.1:
/// the stream and the leaf certificate the proxy chose.
async fn connect(addr: SocketAddr, sni: Option<&str>) -> (TlsStream<TcpStream>, Vec<u8>) {
    let rec = Arc::new(Recorder {
        seen: Mutex::new(None),
        provider: provider(),
    });
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(rec.clone())
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_string()).expect("server name"),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let s = TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let seen = rec.seen.lock().unwrap().take().expect("a certificate");
    (s, seen)
}

async fn served_cert(addr: SocketAddr, sni: Option<&str>) -> Vec<u8> {
    connect(addr, sni).await.1
}

/// Sends a GET on an HTTP/1.1 TLS stream and reads its head; returns the Content-Length.
async fn start_get(s: &mut TlsStream<TcpStream>, path: &str) -> usize {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send GET");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b).await.expect("read head");
        assert_eq!(
            n,
            1,
            "closed before the head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no content-length in {head}"))
}

/// A mounted Kubernetes TLS Secret: `tls.crt -> ..data/tls.crt`, `..data ->
/// ..<timestamp>`; `swap` writes a new timestamped dir and renames a new
/// `..data` link over the old one, as the kubelet does.
struct Secret {
    dir: PathBuf,
    n: u32,
}

impl Secret {
    fn new(root: &Path, crt: &str, key: &str) -> Secret {
        let dir = root.join("secret");
        std::fs::create_dir_all(&dir).expect("secret dir");
        let mut s = Secret { dir, n: 0 };
        s.swap(crt, key);
        symlink("..data/tls.crt", s.dir.join("tls.crt")).expect("tls.crt link");
        symlink("..data/tls.key", s.dir.join("tls.key")).expect("tls.key link");
        s
    }
    fn swap(&mut self, crt: &str, key: &str) {
        self.n += 1;
        let old = self
            .n
            .checked_sub(1)
            .map(|n| format!("..2026_12_07_00_00_{n:02}"));
        let ts = format!("..2026_12_07_00_00_{:02}", self.n);
        let d = self.dir.join(&ts);
        std::fs::create_dir_all(&d).expect("timestamped dir");
        std::fs::write(d.join("tls.crt"), crt).expect("write crt");
        std::fs::write(d.join("tls.key"), key).expect("write key");
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        symlink(&ts, &tmp).expect("..data_tmp link");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
        if let Some(old) = old {
            let _ = std::fs::remove_dir_all(self.dir.join(old));
        }
    }
    fn crt(&self) -> String {
        path_str(&self.dir.join("tls.crt")).to_string()
    }
    fn key(&self) -> String {
        path_str(&self.dir.join("tls.key")).to_string()
    }
}

fn wait_metric(p: &Proxy, series: &str, want: f64) {
    wait_until(
        DEADLINE,
        || p.metric(series) >= want,
        || format!("{series} below {want}:\n{}", p.metrics()),
    );
}

/// Runs curl expecting it to fail (no TLS session, a refused handshake); returns its stderr.
fn curl_fails(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
        ])
        .args(args)
        .output()
        .expect("run curl");
    assert!(!out.status.success(), "curl {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn curl_uploads_and_downloads_over_http1_and_h2() {
    let pki = Pki::new("curl-ca");
    let (_, crt, key) = pki.leaf("proxy", &["localhost", "127.0.0.1"]);
    let ca = pki.ca_file();
    let p = Proxy::start(None, &tls_args(&crt, &key, &[]));
    let listening = p
        .log_json()
        .into_iter()
        .find(|l| l["message"] == "listening");
    assert_eq!(
        listening.as_ref().map(|l| l["tls"].clone()),
        Some(true.into())
    );
    let resolve = p.resolve("localhost");
    let data = random_bytes(3 * 1024 * 1024 + 17, 1);
    let f = temp_file(&data);

    for (flag, version, name) in [
        ("--http1.1", "HTTP/1.1", "h1.bin"),
        ("--http2", "HTTP/2", "h2.bin"),
    ] {
        let r = curl(&[
            flag,
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "-F",
            &format!("file=@{};filename={name}", path_str(f.path())),
            &p.https_url("localhost", "/files/"),
        ]);
        assert_created_one(&r, name, &data);
        assert_eq!(r.version, version, "upload of {name}");
        let l = p.wait_access("POST", "/files/", 201);
        assert_eq!(l["via"], "tls-copy", "{l}");

        let path = format!("/files/{name}");
        let r = curl(&[
            flag,
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            &p.https_url("localhost", &path),
        ]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.version, version, "download of {name}");
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data), "bytes of {name}");
        let l = p.wait_access("GET", &path, 200);
        assert_eq!(l["via"], "tls-copy", "{l}");
        assert_eq!(l["bytes"], data.len() as u64, "{l}");
    }
    // A raw PUT over h2 too, by IP (the certificate lists 127.0.0.1).
    let url = format!("https://127.0.0.1:{}/files/put.bin", p.addr.port());
    let r = curl(&["--http2", "--cacert", &ca, "-T", path_str(f.path()), &url]);
    assert_created_one(&r, "put.bin", &data);
    assert_eq!(p.read_stored("put.bin"), data);

    assert!(p.metric("sluice_download_bytes_total{path=\"tls-copy\"}") >= 2.0 * data.len() as f64);
    assert_eq!(
        p.metric("sluice_download_bytes_total{path=\"sendfile\"}"),
        0.0
    );
    assert_eq!(p.metric("sluice_uploads_total{path=\"tls-copy\"}"), 3.0);
    // curl trusts nothing else: a CA it does not know fails the handshake.
    let other = Pki::new("other-ca");
    let err = curl_fails(&[
        "--cacert",
        &other.ca_file(),
        "--resolve",
        &resolve,
        &p.https_url("localhost", "/files/h1.bin"),
    ]);
    assert!(err.contains("certificate"), "{err}");
    wait_metric(
        &p,
        "sluice_tls_handshake_failures_total{listener=\"client\",reason=\"unknown_ca\"}",
        1.0,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reqwest_negotiates_http1_and_h2_by_alpn() {
    let pki = Pki::new("reqwest-ca");
    let (_, crt, key) = pki.leaf("proxy", &["localhost"]);
    let p = Proxy::start(None, &tls_args(&crt, &key, &[]));
    let data = random_bytes(1024 * 1024 + 5, 2);

    for (alpn, want, name) in [
        (
            &[b"http/1.1".as_slice()][..],
            reqwest::Version::HTTP_11,
            "r1.bin",
        ),
        (
            &[b"h2".as_slice(), b"http/1.1".as_slice()][..],
            reqwest::Version::HTTP_2,
            "r2.bin",
        ),
    ] {
        let c = https_client(&p, &pki.ca, None, alpn);
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(data.clone()).file_name(name),
        );
        let r = c
            .post(p.https_url("localhost", "/files/"))
            .multipart(form)
            .send()
            .await
            .expect("upload");
        assert_eq!(r.version(), want, "upload of {name}");
        assert_created_one(&Response::from_reqwest(r).await, name, &data);

        let r = c
            .get(p.https_url("localhost", &format!("/files/{name}")))
            .send()
            .await
            .expect("download");
        assert_eq!(r.version(), want, "download of {name}");
        let r = Response::from_reqwest(r).await;
        assert_eq!(r.status, 200);
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data), "bytes of {name}");
        p.wait_access_where(|l| l["path"] == format!("/files/{name}") && l["via"] == "tls-copy");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_chooses_the_certificate_and_the_first_is_the_default() {
    let pki = Pki::new("sni-ca");
    let (a, a_crt, a_key) = pki.leaf("a", &["a.test"]);
    let (b, b_crt, b_key) = pki.leaf("b", &["*.b.test"]);
    let p = Proxy::start(
        None,
        &tls_args(&a_crt, &a_key, &["--tls-cert", &b_crt, "--tls-key", &b_key]),
    );
    let (a, b) = (der(&a.cert_pem), der(&b.cert_pem));
    assert!(served_cert(p.addr, Some("a.test")).await == a, "a.test");
    assert!(served_cert(p.addr, Some("x.b.test")).await == b, "x.b.test");
    assert!(
        served_cert(p.addr, Some("X.B.TEST")).await == b,
        "names are case-insensitive"
    );
    // A wildcard covers one label only; no match, or no SNI at all: the first pair.
    assert!(
        served_cert(p.addr, Some("y.x.b.test")).await == a,
        "y.x.b.test"
    );
    assert!(served_cert(p.addr, Some("b.test")).await == a, "b.test");
    assert!(
        served_cert(p.addr, Some("elsewhere.test")).await == a,
        "elsewhere.test"
    );
    assert!(served_cert(p.addr, None).await == a, "no SNI");
    // The names were loaded from the SANs, and each certificate's expiry is exported.
    let loaded: Vec<_> = p
        .log_json()
        .into_iter()
        .filter(|l| l["message"] == "TLS certificate loaded")
        .collect();
    assert_eq!(loaded.len(), 2, "{loaded:?}");
    assert!(
        loaded[1]["names"]
            .as_str()
            .is_some_and(|n| n.contains("*.b.test")),
        "{loaded:?}"
    );
    let expiry = p.metric(&format!(
        "sluice_tls_certificate_not_after_seconds{{listener=\"client\",cert=\"{b_crt}\"}}"
    ));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    assert!(
        expiry > now + 6.0 * 86400.0 && expiry < now + 8.0 * 86400.0,
        "{expiry}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_mid_download_leaves_the_transfer_and_serves_new_connections_the_new_pair() {
    let pki = Pki::new("reload-ca");
    let old = pki.ca.leaf(&["localhost"]);
    let new = pki.ca.leaf(&["localhost"]);
    let mut secret = Secret::new(pki.dir.path(), &old.chain_pem, &old.key_pem);
    let (crt, key) = (secret.crt(), secret.key());
    let p = Proxy::start(None, &tls_args(&crt, &key, &["--reload-interval", "100ms"]));
    // Large enough that the socket buffers cannot hold it: the download is still
    // being sent while the test holds off reading.
    let data = random_bytes(48 * 1024 * 1024, 3);
    std::fs::write(p.data_dir().join("big.bin"), &data).expect("write big.bin");

    let (mut slow, cert) = connect(p.addr, Some("localhost")).await;
    assert!(
        cert == der(&old.cert_pem),
        "first connection: the old certificate"
    );
    let len = start_get(&mut slow, "/files/big.bin").await;
    assert_eq!(len, data.len());
    p.wait_in_flight(1.0);

    secret.swap(&new.chain_pem, &new.key_pem);
    wait_metric(
        &p,
        "sluice_tls_reloads_total{listener=\"client\",result=\"ok\"}",
        1.0,
    );
    assert!(
        served_cert(p.addr, Some("localhost")).await == der(&new.cert_pem),
        "a new connection: the new certificate"
    );
    assert_eq!(p.in_flight(), 1.0, "the download is still under way");

    let mut body = Vec::with_capacity(len);
    slow.read_to_end(&mut body).await.expect("read the rest");
    assert_eq!(body.len(), data.len());
    assert_eq!(
        sha256_hex(&body),
        sha256_hex(&data),
        "the download is byte-identical"
    );
    let l = p.wait_access("GET", "/files/big.bin", 200);
    assert_eq!(l["bytes"], data.len() as u64, "{l}");
    assert_eq!(l["via"], "tls-copy", "{l}");
    assert_eq!(
        p.metric("sluice_tls_reloads_total{listener=\"client\",result=\"error\"}"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_pair_keeps_the_old_one() {
    let pki = Pki::new("broken-ca");
    let good = pki.ca.leaf(&["localhost"]);
    let other = pki.ca.leaf(&["localhost"]);
    let mut secret = Secret::new(pki.dir.path(), &good.chain_pem, &good.key_pem);
    let (crt, key) = (secret.crt(), secret.key());
    let p = Proxy::start(None, &tls_args(&crt, &key, &["--reload-interval", "100ms"]));
    let errors = "sluice_tls_reloads_total{listener=\"client\",result=\"error\"}";
    let warned = |n: usize, why: &str| {
        let mut lines = Vec::new();
        wait_until(
            DEADLINE,
            || {
                lines = p
                    .log_json()
                    .into_iter()
                    .filter(|l| {
                        l["level"] == "WARN"
                            && l["message"]
                                .as_str()
                                .is_some_and(|m| m.contains("not reloaded"))
                    })
                    .collect();
                lines.len() >= n
            },
            || format!("warn lines: {:?}", p.logs()),
        );
        let l = &lines[n - 1];
        assert_eq!(l["cert"], crt.as_str(), "{l}");
        let e = l["error"].as_str().unwrap_or_default();
        assert!(e.contains(why), "{why}: {l}");
        assert!(!e.contains("PRIVATE KEY"), "no key material in logs: {l}");
    };

    // Garbage where the certificate was.
    secret.swap("this is not PEM\n", &good.key_pem);
    wait_metric(&p, errors, 1.0);
    warned(1, "no PEM certificate");
    assert!(served_cert(p.addr, Some("localhost")).await == der(&good.cert_pem));

    // A certificate with the key of another.
    secret.swap(&other.chain_pem, &good.key_pem);
    wait_metric(&p, errors, 2.0);
    warned(2, "does not belong");
    assert!(served_cert(p.addr, Some("localhost")).await == der(&good.cert_pem));
    // Requests are still served, on the old pair.
    let r = curl(&[
        "--cacert",
        &pki.ca_file(),
        "--resolve",
        &p.resolve("localhost"),
        &p.https_url("localhost", "/files/none"),
    ]);
    assert_reject(&r, 404, "not_found");
    // Unchanged broken files warned once, not every interval.
    assert_eq!(p.metric(errors), 2.0, "{}", p.metrics());

    // A good pair again: loaded.
    secret.swap(&other.chain_pem, &other.key_pem);
    wait_metric(
        &p,
        "sluice_tls_reloads_total{listener=\"client\",result=\"ok\"}",
        1.0,
    );
    assert!(served_cert(p.addr, Some("localhost")).await == der(&other.cert_pem));
}

#[tokio::test(flavor = "multi_thread")]
async fn mtls_refuses_a_client_without_a_certificate_from_its_ca() {
    let pki = Pki::new("server-ca");
    let (_, crt, key) = pki.leaf("proxy", &["localhost"]);
    let clients = Pki::new("client-ca");
    let client_ca = clients.ca_file();
    let p = Proxy::start(
        None,
        &tls_args(&crt, &key, &["--tls-client-ca", &client_ca]),
    );
    let data = random_bytes(4096, 4);
    std::fs::write(p.data_dir().join("m.bin"), &data).expect("write m.bin");
    let url = p.https_url("localhost", "/files/m.bin");

    // No certificate: refused in the handshake, counted by reason.
    let anonymous = https_client(&p, &pki.ca, None, &[b"h2", b"http/1.1"]);
    assert!(
        anonymous.get(&url).send().await.is_err(),
        "no client certificate"
    );
    let err = curl_fails(&[
        "--cacert",
        &pki.ca_file(),
        "--resolve",
        &p.resolve("localhost"),
        &url,
    ]);
    assert!(!err.is_empty());
    wait_metric(
        &p,
        "sluice_tls_handshake_failures_total{listener=\"client\",reason=\"no_client_certificate\"}",
        2.0,
    );

    // A certificate from another CA: refused too.
    let stranger = pki.ca.leaf(&["stranger"]);
    let c = https_client(&p, &pki.ca, Some(&stranger), &[b"h2", b"http/1.1"]);
    assert!(
        c.get(&url).send().await.is_err(),
        "a certificate from another CA"
    );
    wait_metric(
        &p,
        "sluice_tls_handshake_failures_total{listener=\"client\",reason=\"unknown_ca\"}",
        1.0,
    );

    // One the client CA issued: served, over h2 and HTTP/1.1.
    let member = clients.ca.leaf(&["member"]);
    for alpn in [&[b"h2".as_slice()][..], &[b"http/1.1".as_slice()][..]] {
        let c = https_client(&p, &pki.ca, Some(&member), alpn);
        let r = Response::from_reqwest(c.get(&url).send().await.expect("mTLS GET")).await;
        assert_eq!(r.status, 200);
        assert!(r.body == data);
    }
    let (crt_file, key_file) = member.write(clients.dir.path(), "member");
    let r = curl(&[
        "--cacert",
        &pki.ca_file(),
        "--cert",
        path_str(&crt_file),
        "--key",
        path_str(&key_file),
        "--resolve",
        &p.resolve("localhost"),
        &url,
    ]);
    assert_eq!(r.status, 200);
    assert!(r.body == data);
}

#[test]
fn plain_http_to_the_tls_port_is_refused() {
    let pki = Pki::new("plain-ca");
    let (_, crt, key) = pki.leaf("proxy", &["localhost"]);
    let p = Proxy::start(None, &tls_args(&crt, &key, &[]));
    std::fs::write(p.data_dir().join("p.bin"), b"secret bytes").expect("write");
    let r = curl(&[&p.url("/files/p.bin")]);
    assert_reject(&r, 400, "tls_required");
    assert!(!r.text().contains("secret bytes"));
    let mut raw = Raw::connect(p.addr);
    raw.send(&head("GET", "/files/p.bin", &[]));
    let r = raw.read_response();
    assert_reject(&r, 400, "tls_required");
    // Bytes that are neither TLS nor HTTP: closed without an answer.
    let mut raw = Raw::connect(p.addr);
    raw.send(b"\x00\x01\x02 not tls\r\n\r\n");
    assert!(raw.closed_within(DEADLINE));
    wait_metric(
        &p,
        "sluice_tls_handshake_failures_total{listener=\"client\",reason=\"not_tls\"}",
        3.0,
    );
    assert!(
        p.access_logs().is_empty(),
        "no request was served: {}",
        p.access_text()
    );
}

#[test]
fn a_tls_1_1_client_is_refused_and_counted() {
    let pki = Pki::new("old-ca");
    let (_, crt, key) = pki.leaf("proxy", &["localhost"]);
    let p = Proxy::start(None, &tls_args(&crt, &key, &[]));
    // A TLS 1.1 ClientHello as old clients send it: no extensions at all.
    let mut body = vec![3, 2];
    body.extend_from_slice(&[7; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0, 4, 0xc0, 0x2f, 0x00, 0x2f]); // two cipher suites
    body.extend_from_slice(&[1, 0]); // null compression
    let mut hello = vec![1, 0, 0, body.len() as u8];
    hello.extend_from_slice(&body);
    let mut record = vec![22, 3, 1, 0, hello.len() as u8];
    record.extend_from_slice(&hello);
    let mut raw = Raw::connect(p.addr);
    raw.send(&record);
    assert!(
        raw.closed_within(DEADLINE),
        "answered with an alert and closed"
    );
    wait_metric(
        &p,
        "sluice_tls_handshake_failures_total{listener=\"client\",reason=\"protocol_version\"}",
        1.0,
    );
    // TLS 1.2 and 1.3 clients are both served.
    let ca = pki.ca_file();
    for v in [
        ["--tlsv1.2", "--tls-max", "1.2"],
        ["--tlsv1.3", "--tls-max", "1.3"],
    ] {
        let mut args = v.to_vec();
        let (resolve, url) = (
            p.resolve("localhost"),
            p.https_url("localhost", "/files/none"),
        );
        args.extend(["--cacert", &ca, "--resolve", &resolve, &url]);
        assert_reject(&curl(&args), 404, "not_found");
    }
}

#[test]
fn a_silent_client_is_cut_at_the_header_timeout() {
    let pki = Pki::new("silent-ca");
    let (_, crt, key) = pki.leaf("proxy", &["localhost"]);
    let p = Proxy::start(None, &tls_args(&crt, &key, &["--header-timeout", "300ms"]));
    let mut raw = Raw::connect(p.addr);
    assert!(raw.closed_within(DEADLINE), "the handshake is bounded");
    wait_metric(
        &p,
        "sluice_tls_handshake_failures_total{listener=\"client\",reason=\"timeout\"}",
        1.0,
    );
}

#[test]
fn the_offload_report_matches_the_kernel() {
    let ulp = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp").unwrap_or_default();
    let offered = ulp.split_whitespace().any(|u| u == "tls");
    let pki = Pki::new("offload-ca");
    let (_, crt, key) = pki.leaf("proxy", &["localhost"]);
    for (ktls, want) in [
        (
            "auto",
            if offered {
                "does not hand TLS sessions to the kernel"
            } else {
                "not offered by this kernel"
            },
        ),
        ("off", "--ktls off"),
    ] {
        let p = Proxy::start(None, &tls_args(&crt, &key, &["--ktls", ktls]));
        assert_eq!(
            p.metric("sluice_tls_offload{mode=\"user\"}"),
            1.0,
            "{}",
            p.metrics()
        );
        assert_eq!(p.metric("sluice_tls_offload{mode=\"kernel\"}"), 0.0);
        let line = p
            .log_json()
            .into_iter()
            .find(|l| l["message"] == "TLS offload")
            .unwrap_or_else(|| panic!("no offload line: {}", p.logs_text()));
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["mode"], "user");
        let reason = line["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(want), "ktls {ktls}, ulp {ulp:?}: {reason}");
    }
}

/// Starts the binary expecting it to refuse its arguments; returns its output.
fn start_fails(args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-proxy"));
    cmd.arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SLUICE_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("run sluice-proxy");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "started with {args:?}: {text}");
    text
}

#[test]
fn bad_certificate_files_stop_the_start_with_a_clear_error() {
    let pki = Pki::new("start-ca");
    let (_, crt, key) = pki.leaf("a", &["localhost"]);
    let (_, crt_b, _) = pki.leaf("b", &["localhost"]);
    let missing = path_str(&pki.path("missing.crt")).to_string();
    let garbage = path_str(&pki.path("garbage.pem")).to_string();
    std::fs::write(&garbage, "not PEM at all\n").unwrap();

    let e = start_fails(&["--tls-cert", &crt, "--tls-cert", &crt_b, "--tls-key", &key]);
    assert!(e.contains("2 certificate file(s) and 1 key file(s)"), "{e}");
    let e = start_fails(&["--tls-cert", &missing, "--tls-key", &key]);
    assert!(
        e.contains("missing.crt") && e.contains("No such file"),
        "{e}"
    );
    let e = start_fails(&["--tls-cert", &garbage, "--tls-key", &key]);
    assert!(e.contains("garbage.pem holds no PEM certificate"), "{e}");
    let e = start_fails(&["--tls-cert", &crt, "--tls-key", &garbage]);
    assert!(e.contains("garbage.pem holds no PEM private key"), "{e}");
    // An expired certificate loads (mid-rotation), with a warning.
    let expired = pki.ca.expired_leaf(&["localhost"]);
    let (ec, ek) = expired.write(pki.dir.path(), "expired");
    let p = Proxy::start(None, &tls_args(path_str(&ec), path_str(&ek), &[]));
    assert!(
        p.log_json()
            .iter()
            .any(|l| l["message"] == "TLS certificate expired" && l["level"] == "WARN"),
        "{}",
        p.logs_text()
    );
    drop(p);
    let e = start_fails(&["--tls-cert", &crt_b, "--tls-key", &key]);
    assert!(e.contains("does not belong to the certificate"), "{e}");
    let e = start_fails(&[
        "--tls-cert",
        &crt,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &garbage,
    ]);
    assert!(
        e.contains("client CA") && e.contains("no PEM certificate"),
        "{e}"
    );
    assert!(!e.contains("PRIVATE KEY"), "{e}");
    // The env form: comma-separated pairs.
    let e = {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_sluice-proxy"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .env("SLUICE_TLS_CERT", format!("{crt},{crt_b}"))
            .env("SLUICE_TLS_KEY", &key)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(e.contains("2 certificate file(s) and 1 key file(s)"), "{e}");
}

#[test]
fn shutdown_lets_a_tls_download_finish() {
    let pki = Pki::new("drain-ca");
    let (_, crt, key) = pki.leaf("proxy", &["localhost"]);
    let mut p = Proxy::start(None, &tls_args(&crt, &key, &[]));
    let data = random_bytes(32 * 1024 * 1024, 5);
    std::fs::write(p.data_dir().join("d.bin"), &data).expect("write d.bin");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut s, _) = rt.block_on(connect(p.addr, Some("localhost")));
    let len = rt.block_on(start_get(&mut s, "/files/d.bin"));
    p.wait_in_flight(1.0);
    p.sigterm();
    wait_until(
        DEADLINE,
        || p.logs().iter().any(|l| l.contains("stopped accepting")),
        || p.logs_text(),
    );
    let mut body = Vec::with_capacity(len);
    rt.block_on(s.read_to_end(&mut body))
        .expect("read the rest");
    assert_eq!(sha256_hex(&body), sha256_hex(&data));
    assert!(p.wait_exit(DEADLINE).success());
}

// --- the admin port ---

const TOKEN: &str = "admin-tls-token";

fn admin_args<'a>(crt: &'a str, key: &'a str, token: &'a str) -> Vec<&'a str> {
    vec![
        "--admin-tls-cert",
        crt,
        "--admin-tls-key",
        key,
        "--admin-token-file",
        token,
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_port_takes_pushes_over_tls_only() {
    let pki = Pki::new("admin-ca");
    let (_, crt, key) = pki.leaf("admin", &["sluice-proxy-admin"]);
    let token = pki.path("token");
    std::fs::write(&token, TOKEN).unwrap();
    let p = Proxy::start(None, &admin_args(&crt, &key, path_str(&token)));
    let ca = pki.ca_file();
    let resolve = format!("sluice-proxy-admin:{}:127.0.0.1", p.admin.port());
    let admin = |path: &str| format!("https://sluice-proxy-admin:{}{path}", p.admin.port());

    // curl over https with the CA: metrics, readiness.
    let r = curl(&["--cacert", &ca, "--resolve", &resolve, &admin("/metrics")]);
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("sluice_tls_offload{mode=\"user\"} 1"),
        "{}",
        r.text()
    );
    // Plain HTTP to the admin port: refused.
    let r = curl(&[&p.admin_url("/metrics")]);
    assert_reject(&r, 400, "tls_required");

    // The operator's pusher, dialling the IP and verifying the admin name.
    let cfg = sluice_proxy::runtime::compile_texts(&[(
        "p".to_string(),
        "apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\nmetadata: {name: pushed, namespace: default}\n\
         spec:\n  pathPrefix: /pushed/\n  backend: {fs: {root: pushed}}\n  upload: {maxFileSize: 1Mi}\n"
            .to_string(),
    )])
    .expect("policy compiles");
    let payload = sluice_operator::push::Payload::new(&cfg);
    let tls = sluice_operator::push::AdminTls {
        ca_pem: pki.ca.cert_pem.clone().into_bytes(),
        server_name: "sluice-proxy-admin".into(),
    };
    let pusher = sluice_operator::push::Pusher::with_tls(TOKEN, Duration::from_secs(5), &tls)
        .expect("pusher");
    let v = pusher.push(p.admin, &payload).await.expect("push over TLS");
    assert_eq!(v, payload.version);
    assert_eq!(
        pusher.served(p.admin).await.expect("version"),
        Some(payload.version.clone())
    );

    // A pusher trusting another CA, or expecting another name, is refused.
    let other = Pki::new("not-the-admin-ca");
    let wrong_ca = sluice_operator::push::AdminTls {
        ca_pem: other.ca.cert_pem.clone().into_bytes(),
        server_name: "sluice-proxy-admin".into(),
    };
    let e = sluice_operator::push::Pusher::with_tls(TOKEN, Duration::from_secs(5), &wrong_ca)
        .unwrap()
        .push(p.admin, &payload)
        .await
        .expect_err("another CA");
    assert_eq!(e.kind(), "unreachable", "{e}");
    let wrong_name = sluice_operator::push::AdminTls {
        ca_pem: pki.ca.cert_pem.clone().into_bytes(),
        server_name: "someone-else".into(),
    };
    assert!(
        sluice_operator::push::Pusher::with_tls(TOKEN, Duration::from_secs(5), &wrong_name)
            .unwrap()
            .served(p.admin)
            .await
            .is_err()
    );
    // A plaintext pusher gets the 400, not the config.
    let plain = sluice_operator::push::Pusher::new(TOKEN, Duration::from_secs(5)).unwrap();
    assert!(plain.push(p.admin, &payload).await.is_err());
    // And curl over https with the token.
    let r = curl(&[
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        &admin("/v1/config/version"),
    ]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["version"], payload.version.as_str());
    let r = curl(&["--cacert", &ca, "--resolve", &resolve, &admin("/metrics")]);
    let failures = metric_in(
        &r.text(),
        "sluice_tls_handshake_failures_total{listener=\"admin\",reason=\"unknown_ca\"}",
    );
    assert!(failures.is_some_and(|n| n >= 1.0), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_client_ca_is_loaded_for_new_handshakes() {
    let pki = Pki::new("server-ca");
    let (_, crt, key) = pki.leaf("proxy", &["localhost"]);
    let (first, second) = (Pki::new("first-client-ca"), Pki::new("second-client-ca"));
    let ca_file = pki.path("clients.crt");
    std::fs::write(&ca_file, &first.ca.cert_pem).unwrap();
    let p = Proxy::start(
        None,
        &tls_args(
            &crt,
            &key,
            &[
                "--tls-client-ca",
                path_str(&ca_file),
                "--reload-interval",
                "100ms",
            ],
        ),
    );
    let url = p.https_url("localhost", "/files/none");
    let (a, b) = (first.ca.leaf(&["a"]), second.ca.leaf(&["b"]));
    let get = |who: &Leaf| {
        https_client(&p, &pki.ca, Some(who), &[b"http/1.1"])
            .get(url.clone())
            .send()
    };
    assert_eq!(get(&a).await.expect("first CA's client").status(), 404);
    assert!(
        get(&b).await.is_err(),
        "second CA's client, before the change"
    );

    let tmp = pki.path(".clients.tmp");
    std::fs::write(&tmp, &second.ca.cert_pem).unwrap();
    std::fs::rename(&tmp, &ca_file).unwrap();
    wait_metric(
        &p,
        "sluice_tls_reloads_total{listener=\"client\",result=\"ok\"}",
        1.0,
    );
    assert_eq!(get(&b).await.expect("second CA's client").status(), 404);
    assert!(
        get(&a).await.is_err(),
        "first CA's client, after the change"
    );

    // A broken CA file keeps the one loaded.
    std::fs::write(&tmp, "garbage").unwrap();
    std::fs::rename(&tmp, &ca_file).unwrap();
    wait_metric(
        &p,
        "sluice_tls_reloads_total{listener=\"client\",result=\"error\"}",
        1.0,
    );
    assert_eq!(get(&b).await.expect("second CA's client").status(), 404);
}

#[test]
fn an_engine_route_over_tls_uploads_and_relays_downloads() {
    let engine = engines::miniserve();
    let policy = format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\nmetadata: {{name: up}}\nspec:\n  pathPrefix: /up/\n  \
         backend: {{http: {{url: \"{u}/upload?path=/\", downloadUrl: \"{u}\", mode: multipart, fieldName: file_to_upload}}}}\n  \
         upload: {{maxFileSize: 8Mi}}\n",
        u = engine.url()
    );
    let pki = Pki::new("engine-ca");
    let (_, crt, key) = pki.leaf("proxy", &["localhost"]);
    let p = Proxy::start(Some(&policy), &tls_args(&crt, &key, &[]));
    let (ca, resolve) = (pki.ca_file(), p.resolve("localhost"));
    let data = random_bytes(3 << 20, 6);
    let f = temp_file(&data);
    let r = curl(&[
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
        "-F",
        &format!("file=@{};filename=e.bin", path_str(f.path())),
        &p.https_url("localhost", "/up/"),
    ]);
    assert_created_one(&r, "e.bin", &data);
    assert_eq!(
        std::fs::read(engine.root.join("e.bin")).expect("stored by miniserve"),
        data
    );
    for flag in ["--http1.1", "--http2"] {
        let r = curl(&[
            flag,
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            &p.https_url("localhost", "/up/e.bin"),
        ]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(sha256_hex(&r.body), sha256_hex(&data), "{flag}");
    }
    wait_until(
        DEADLINE,
        || {
            p.access_logs()
                .iter()
                .filter(|l| l["path"] == "/up/e.bin" && l["status"] == 200)
                .count()
                == 2
        },
        || p.access_text(),
    );
    assert!(
        p.access_logs()
            .iter()
            .filter(|l| l["path"] == "/up/e.bin")
            .all(|l| l["via"] == "tls-copy"),
        "{}",
        p.access_text()
    );
    assert!(p.metric("sluice_download_bytes_total{path=\"tls-copy\"}") >= 2.0 * data.len() as f64);
    assert_eq!(
        p.metric("sluice_download_bytes_total{path=\"splice\"}"),
        0.0
    );
}
