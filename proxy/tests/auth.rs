//! Routes with `auth` admit only accepted credentials, on uploads and on both download
//! paths: none -> 401 (+ WWW-Authenticate), wrong -> 403, right -> the transfer works.
//! API keys come from a Secret in the same YAML (X-Api-Key or Authorization: Bearer);
//! JWTs (RS256, ES256, EdDSA) are checked against a public key from a Secret, with
//! key pairs made for the test by the openssl CLI.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

const API_KEYS: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {k1: secret-one, k2: secret-two}
---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {name: private}
spec:
  pathPrefix: /private/
  backend: {fs: {root: private}}
  auth: {apiKeys: {secretRef: {name: keys}}}
---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {name: public}
spec:
  pathPrefix: /public/
  backend: {fs: {root: public}}
"#;

/// Both download paths: curl over HTTP/1.1 (sendfile) and over HTTP/2 (hyper).
const PATHS: [&str; 2] = ["--http1.1", "--http2-prior-knowledge"];

#[test]
fn api_keys_gate_uploads_and_downloads() {
    let p = Proxy::start(Some(API_KEYS), &[]);
    let data = random_bytes(50_000, 30);
    let f = temp_file(&data);
    let form = format!("file=@{};filename=doc.bin", path_str(f.path()));

    // No credentials: 401 with a challenge, for uploads and downloads alike.
    let r = curl(&["-F", &form, &p.url("/private/")]);
    assert_reject(&r, 401, "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = curl(&["-T", path_str(f.path()), &p.url("/private/put.bin")]);
    assert_reject(&r, 401, "unauthorized");
    for flag in PATHS {
        let r = curl(&[flag, &p.url("/private/doc.bin")]);
        assert_reject(&r, 401, "unauthorized");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }

    // Wrong credentials: 403.
    for h in [
        "X-Api-Key: secret-three",
        "Authorization: Bearer secret-thre",
        "Authorization: Basic c2VjcmV0LW9uZQ==",
    ] {
        assert_reject(
            &curl(&["-H", h, "-F", &form, &p.url("/private/")]),
            403,
            "forbidden",
        );
        for flag in PATHS {
            assert_reject(
                &curl(&[flag, "-H", h, &p.url("/private/doc.bin")]),
                403,
                "forbidden",
            );
        }
    }
    p.assert_files(&[]);

    // Right keys, either header, either key of the Secret.
    let r = curl(&[
        "-H",
        "X-Api-Key: secret-one",
        "-F",
        &form,
        &p.url("/private/"),
    ]);
    assert_created_one(&r, "doc.bin", &data);
    let r = curl(&[
        "-H",
        "Authorization: Bearer secret-two",
        "-T",
        path_str(f.path()),
        &p.url("/private/put.bin"),
    ]);
    assert_created_one(&r, "put.bin", &data);
    for flag in PATHS {
        for h in ["X-Api-Key: secret-two", "Authorization: Bearer secret-one"] {
            let r = curl(&[flag, "-H", h, &p.url("/private/doc.bin")]);
            assert_eq!(r.status, 200, "{flag} {h}: {}", r.text());
            assert!(r.body == data, "{flag} {h}: bytes differ");
        }
    }
    let vias: Vec<_> = p
        .access_logs()
        .into_iter()
        .filter(|l| l["path"] == "/private/doc.bin" && l["status"] == 200)
        .map(|l| l["via"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        vias.contains(&"sendfile".into()) && vias.contains(&"hyper".into()),
        "{vias:?}"
    );

    // Auth is per route: the public one needs nothing.
    assert_eq!(
        curl(&["-T", path_str(f.path()), &p.url("/public/x.bin")]).status,
        201
    );
    p.assert_files(&["private/doc.bin", "private/put.bin", "public/x.bin"]);
    assert!(p.metric("sluice_rejections_total{rule=\"unauthorized\"}") >= 4.0);
    assert!(p.metric("sluice_rejections_total{rule=\"forbidden\"}") >= 9.0);
}

struct KeyPair {
    private_pem: Vec<u8>,
    public_pem: String,
}

/// A fresh key pair from `openssl genpkey` (PKCS#8 private, SPKI public PEM).
fn keypair(dir: &std::path::Path, name: &str, genpkey: &[&str]) -> KeyPair {
    let key = dir.join(format!("{name}.key.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey);
    args.extend_from_slice(&["-out", path_str(&key)]);
    openssl(&args);
    openssl(&[
        "pkey",
        "-in",
        path_str(&key),
        "-pubout",
        "-out",
        path_str(&public),
    ]);
    KeyPair {
        private_pem: std::fs::read(&key).expect("private key"),
        public_pem: std::fs::read_to_string(&public).expect("public key"),
    }
}

fn jwt_policy(public_pem: &str) -> String {
    let indented: String = public_pem.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: jwt-key}}
stringData:
  pub.pem: |
{indented}---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {{name: jwt}}
spec:
  pathPrefix: /jwt/
  backend: {{fs: {{root: jwt}}}}
  auth:
    jwt:
      issuer: https://issuer.sluice.test
      audiences: [sluice]
      publicKeySecretRef: {{name: jwt-key, key: pub.pem}}
"#
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn token(alg: Algorithm, key: &EncodingKey, iss: &str, aud: &str, exp: u64) -> String {
    let claims =
        serde_json::json!({"iss": iss, "aud": aud, "sub": "tester", "iat": now(), "exp": exp});
    jsonwebtoken::encode(&Header::new(alg), &claims, key).expect("sign token")
}

/// Valid tokens work on uploads and both download paths; each kind of bad one is a 403.
fn jwt_round(
    alg: Algorithm,
    genpkey: &[&str],
    encoding: fn(&[u8]) -> jsonwebtoken::errors::Result<EncodingKey>,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = keypair(dir.path(), "good", genpkey);
    let other = keypair(dir.path(), "other", genpkey);
    let key = encoding(&good.private_pem).expect("encoding key");
    let other_key = encoding(&other.private_pem).expect("encoding key");
    let p = Proxy::start(Some(&jwt_policy(&good.public_pem)), &[]);
    let iss = "https://issuer.sluice.test";
    let later = now() + 600;

    let data = random_bytes(10_000, 31);
    let f = temp_file(&data);
    let bearer = |t: &str| format!("Authorization: Bearer {t}");

    let bad = [
        (
            "wrong issuer",
            token(alg, &key, "https://evil.test", "sluice", later),
        ),
        (
            "wrong audience",
            token(alg, &key, iss, "someone-else", later),
        ),
        ("expired", token(alg, &key, iss, "sluice", now() - 3600)),
        (
            "signed by another key",
            token(alg, &other_key, iss, "sluice", later),
        ),
        // The public key used as an HMAC secret: the key's type fixes the algorithm.
        (
            "HS256 with the public key",
            token(
                Algorithm::HS256,
                &EncodingKey::from_secret(good.public_pem.as_bytes()),
                iss,
                "sluice",
                later,
            ),
        ),
    ];
    for (why, t) in &bad {
        let r = curl(&[
            "-H",
            &bearer(t),
            "-T",
            path_str(f.path()),
            &p.url("/jwt/a.bin"),
        ]);
        let msg = assert_reject(&r, 403, "forbidden");
        assert!(msg.contains("token"), "{why}: {msg}");
    }
    assert_reject(
        &curl(&["-T", path_str(f.path()), &p.url("/jwt/a.bin")]),
        401,
        "unauthorized",
    );
    p.assert_files(&[]);

    let t = token(alg, &key, iss, "sluice", later);
    let r = curl(&[
        "-H",
        &bearer(&t),
        "-T",
        path_str(f.path()),
        &p.url("/jwt/a.bin"),
    ]);
    assert_created_one(&r, "a.bin", &data);
    for flag in PATHS {
        let r = curl(&[flag, "-H", &bearer(&t), &p.url("/jwt/a.bin")]);
        assert_eq!(r.status, 200, "{alg:?} {flag}: {}", r.text());
        assert!(r.body == data, "{alg:?} {flag}: bytes differ");
        for (why, t) in &bad {
            let r = curl(&[flag, "-H", &bearer(t), &p.url("/jwt/a.bin")]);
            assert_eq!(r.status, 403, "{alg:?} {flag} {why}");
        }
    }
    p.assert_files(&["jwt/a.bin"]);
}

#[test]
fn jwt_rs256() {
    jwt_round(
        Algorithm::RS256,
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        EncodingKey::from_rsa_pem,
    );
}

#[test]
fn jwt_es256() {
    jwt_round(
        Algorithm::ES256,
        &[
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ],
        EncodingKey::from_ec_pem,
    );
}

#[test]
fn jwt_eddsa() {
    jwt_round(
        Algorithm::EdDSA,
        &["-algorithm", "ed25519"],
        EncodingKey::from_ed_pem,
    );
}
