use super::*;
use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

const NO_SECRETS: &[Secret] = &[];

fn policy(name: &str, age_secs: i64, yaml_spec: &str) -> UploadPolicy {
    let spec: UploadPolicySpec = serde_saphyr::from_str(yaml_spec).expect("spec yaml");
    let mut p = UploadPolicy::new(name, spec);
    p.metadata.namespace = Some("ns".into());
    p.metadata.generation = Some(3);
    p.metadata.creation_timestamp = Some(Time(
        Timestamp::from_second(1_700_000_000 + age_secs).expect("ts"),
    ));
    p
}

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s.metadata.namespace = Some("ns".into());
    s.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect(),
    );
    s
}

const FS: &str = "pathPrefix: /files/\nbackend: {fs: {root: /data}}\n";

#[test]
fn defaults_fill_in() {
    let c = compile(&[policy("a", 0, FS)], NO_SECRETS);
    assert_eq!(c.outcomes["ns/a"], Outcome::Accepted);
    let r = &c.config.routes[0];
    assert_eq!(r.policy, "ns/a");
    assert_eq!(r.generation, 3);
    assert_eq!(r.upload.max_file_size, DEFAULT_MAX_FILE_SIZE);
    assert_eq!(r.upload.max_files, DEFAULT_MAX_FILES);
    assert!(r.download_enabled);
    assert_eq!(r.upload.checksum, crate::Checksum::Sha256);
    assert_eq!(r.upload.naming, crate::Naming::Original);
}

#[test]
fn full_spec_compiles() {
    let y = r#"
hosts: [Example.COM, "*.cdn.example.com"]
pathPrefix: /img/
backend: {fs: {root: imgs}}
upload:
  maxFileSize: 10Mi
  maxFiles: 2
  allowedTypes: ["image/*", "Application/PDF"]
  allowedExtensions: [".PNG", jpg]
  verifyContent: true
  naming: uuid
  checksum: none
download: {enabled: false}
auth:
  apiKeys: {secretRef: {name: keys}}
"#;
    let c = compile(
        &[policy("a", 0, y)],
        &[secret("keys", &[("k1", "s3cret\n"), ("k2", "other")])],
    );
    assert_eq!(c.outcomes["ns/a"], Outcome::Accepted, "{:?}", c.outcomes);
    let r = &c.config.routes[0];
    assert_eq!(r.hosts, vec!["example.com", "*.cdn.example.com"]);
    assert_eq!(r.upload.max_file_size, 10 << 20);
    assert_eq!(r.upload.allowed_types, vec!["image/*", "application/pdf"]);
    assert_eq!(r.upload.allowed_extensions, vec!["png", "jpg"]);
    assert!(!r.download_enabled);
    let auth = r.auth.as_ref().unwrap();
    // Hashes, never the keys; the trailing newline of a file-made Secret is not part of the key.
    assert_eq!(auth.api_key_sha256, {
        let mut v = vec![
            hex::encode(Sha256::digest(b"s3cret")),
            hex::encode(Sha256::digest(b"other")),
        ];
        v.sort();
        v
    });
    let json = serde_json::to_string(&c.config).unwrap();
    assert!(!json.contains("s3cret"));
}

#[test]
fn missing_secret_is_reported_and_others_survive() {
    let bad =
        "pathPrefix: /a/\nbackend: {fs: {root: /d}}\nauth: {apiKeys: {secretRef: {name: nope}}}\n";
    let c = compile(&[policy("bad", 0, bad), policy("good", 1, FS)], NO_SECRETS);
    assert_eq!(c.outcomes["ns/bad"].reason(), "SecretNotFound");
    assert!(c.outcomes["ns/bad"].message().contains("ns/nope"));
    assert_eq!(c.outcomes["ns/good"], Outcome::Accepted);
    assert_eq!(c.config.routes.len(), 1);
}

#[test]
fn secret_in_other_namespace_is_not_used() {
    let y =
        "pathPrefix: /a/\nbackend: {fs: {root: /d}}\nauth: {apiKeys: {secretRef: {name: keys}}}\n";
    let mut s = secret("keys", &[("k", "v")]);
    s.metadata.namespace = Some("elsewhere".into());
    let c = compile(&[policy("a", 0, y)], &[s]);
    assert_eq!(c.outcomes["ns/a"].reason(), "SecretNotFound");
}

#[test]
fn conflicts_older_wins_then_name() {
    let c = compile(
        &[policy("newer", 10, FS), policy("older", 0, FS)],
        NO_SECRETS,
    );
    assert_eq!(c.outcomes["ns/older"], Outcome::Accepted);
    assert_eq!(
        c.outcomes["ns/newer"],
        Outcome::Conflicted("ns/older".into())
    );
    assert_eq!(c.config.routes.len(), 1);

    // Same age: name breaks the tie.
    let c = compile(&[policy("b", 0, FS), policy("a", 0, FS)], NO_SECRETS);
    assert_eq!(c.outcomes["ns/a"], Outcome::Accepted);
    assert_eq!(c.outcomes["ns/b"].reason(), "Conflicted");
}

#[test]
fn conflicts_need_a_common_host() {
    let h1 = "hosts: [a.com, b.com]\npathPrefix: /f/\nbackend: {fs: {root: /d}}\n";
    let h2 = "hosts: [c.com]\npathPrefix: /f/\nbackend: {fs: {root: /d}}\n";
    let h3 = "hosts: [B.com]\npathPrefix: /f/\nbackend: {fs: {root: /d}}\n";
    let any = "pathPrefix: /f/\nbackend: {fs: {root: /d}}\n";
    let c = compile(
        &[
            policy("h1", 0, h1),
            policy("h2", 1, h2),
            policy("h3", 2, h3),
            policy("any", 3, any),
        ],
        NO_SECRETS,
    );
    assert_eq!(c.outcomes["ns/h1"], Outcome::Accepted);
    assert_eq!(c.outcomes["ns/h2"], Outcome::Accepted);
    assert_eq!(c.outcomes["ns/h3"], Outcome::Conflicted("ns/h1".into()));
    // Any-host and host-specific at one prefix coexist: the specific one is more precise.
    assert_eq!(c.outcomes["ns/any"], Outcome::Accepted);
}

#[test]
fn invalid_specs_are_named() {
    let cases = [
        (
            "pathPrefix: files/\nbackend: {fs: {root: /d}}\n",
            "pathPrefix",
        ),
        (
            "pathPrefix: /files\nbackend: {fs: {root: /d}}\n",
            "pathPrefix",
        ),
        (
            "pathPrefix: /a/../b/\nbackend: {fs: {root: /d}}\n",
            "pathPrefix",
        ),
        (
            "pathPrefix: /a//b/\nbackend: {fs: {root: /d}}\n",
            "pathPrefix",
        ),
        ("pathPrefix: /a/\nbackend: {}\n", "exactly one"),
        (
            "pathPrefix: /a/\nbackend: {fs: {root: /d}, http: {url: 'http://x:1'}}\n",
            "exactly one",
        ),
        ("pathPrefix: /a/\nbackend: {fs: {root: ''}}\n", "root"),
        ("pathPrefix: /a/\nbackend: {fs: {root: ../up}}\n", "no '..'"),
        (
            "pathPrefix: /a/\nbackend: {http: {url: 'ftp://x/y'}}\n",
            "url",
        ),
        (
            "pathPrefix: /a/\nbackend: {fs: {root: /d}}\nupload: {maxFileSize: 1.5Gi}\n",
            "maxFileSize",
        ),
        (
            "pathPrefix: /a/\nbackend: {fs: {root: /d}}\nupload: {maxFileSize: '0'}\n",
            "positive",
        ),
        (
            "pathPrefix: /a/\nbackend: {fs: {root: /d}}\nupload: {maxFiles: 0}\n",
            "maxFiles",
        ),
        (
            "pathPrefix: /a/\nbackend: {fs: {root: /d}}\nupload: {allowedTypes: [png]}\n",
            "allowedTypes",
        ),
        (
            "pathPrefix: /a/\nbackend: {fs: {root: /d}}\nupload: {allowedTypes: ['*/png']}\n",
            "allowedTypes",
        ),
        (
            "pathPrefix: /a/\nbackend: {fs: {root: /d}}\nupload: {allowedExtensions: ['a/b']}\n",
            "allowedExtensions",
        ),
        (
            "hosts: ['bad host']\npathPrefix: /a/\nbackend: {fs: {root: /d}}\n",
            "hosts",
        ),
        (
            "pathPrefix: /a/\nbackend: {fs: {root: /d}}\nauth: {}\n",
            "auth",
        ),
    ];
    for (i, (y, needle)) in cases.iter().enumerate() {
        let c = compile(&[policy(&format!("p{i}"), 0, y)], NO_SECRETS);
        match &c.outcomes[&format!("ns/p{i}")] {
            Outcome::Invalid(m) => assert!(m.contains(needle), "{y}: {m}"),
            other => panic!("{y}: expected Invalid, got {other:?}"),
        }
        assert!(c.config.routes.is_empty());
    }
}

#[test]
fn jwt_key_resolved() {
    let y = "pathPrefix: /a/\nbackend: {fs: {root: /d}}\nauth: {jwt: {issuer: me, audiences: [x], publicKeySecretRef: {name: jwk, key: pub.pem}}}\n";
    let pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n";
    let c = compile(&[policy("a", 0, y)], &[secret("jwk", &[("pub.pem", pem)])]);
    assert_eq!(c.outcomes["ns/a"], Outcome::Accepted);
    let j = c.config.routes[0]
        .auth
        .as_ref()
        .unwrap()
        .jwt
        .as_ref()
        .unwrap();
    assert_eq!(j.issuer, "me");
    assert_eq!(j.public_key_pem, pem);

    let c = compile(&[policy("a", 0, y)], &[secret("jwk", &[("other", pem)])]);
    assert_eq!(c.outcomes["ns/a"].reason(), "SecretNotFound");
    let c = compile(
        &[policy("a", 0, y)],
        &[secret("jwk", &[("pub.pem", "nope")])],
    );
    assert_eq!(c.outcomes["ns/a"].reason(), "Invalid");
}

#[test]
fn string_data_counts() {
    let y =
        "pathPrefix: /a/\nbackend: {fs: {root: /d}}\nauth: {apiKeys: {secretRef: {name: keys}}}\n";
    let mut s = secret("keys", &[]);
    s.string_data = Some([("k".to_string(), "plain".to_string())].into());
    let c = compile(&[policy("a", 0, y)], &[s]);
    assert_eq!(c.outcomes["ns/a"], Outcome::Accepted);
    let empty = secret("keys", &[("k", " \n")]);
    let c = compile(&[policy("a", 0, y)], &[empty]);
    assert_eq!(c.outcomes["ns/a"].reason(), "Invalid");
}

#[test]
fn version_changes_with_content() {
    let a = compile(&[policy("a", 0, FS)], NO_SECRETS).config.version;
    let b = compile(
        &[policy(
            "a",
            0,
            "pathPrefix: /files/\nbackend: {fs: {root: /other}}\n",
        )],
        NO_SECRETS,
    )
    .config
    .version;
    assert_ne!(a, b);
    assert_eq!(a, compile(&[policy("a", 0, FS)], NO_SECRETS).config.version);
}

/// A self-signed CA and a leaf it signed: (ca pem, leaf pem, leaf key pem, another key pem).
fn tls_material() -> (String, String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["client.test".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    (
        ca_cert.pem(),
        leaf.pem(),
        leaf_key.serialize_pem(),
        KeyPair::generate().unwrap().serialize_pem(),
    )
}

const HTTPS_TLS: &str = "pathPrefix: /e/\nbackend: {http: {url: \"https://engine.test:8443/dav\", tls: {caSecretRef: {name: ca, key: ca.crt}, clientCertSecretRef: {name: client}, serverName: storage.test}}}\n";

#[test]
fn engine_tls_compiles_with_its_pems() {
    let (ca, crt, key, _) = tls_material();
    let c = compile(
        &[policy("a", 0, HTTPS_TLS)],
        &[
            secret("ca", &[("ca.crt", &ca)]),
            secret("client", &[("tls.crt", &crt), ("tls.key", &key)]),
        ],
    );
    assert_eq!(c.outcomes["ns/a"], Outcome::Accepted, "{:?}", c.outcomes);
    let tls = c.config.routes[0].backend.tls().unwrap();
    assert_eq!(tls.ca_pem.as_deref(), Some(ca.as_str()));
    assert_eq!(tls.client_cert_pem.as_deref(), Some(crt.as_str()));
    assert_eq!(tls.client_key_pem.as_deref(), Some(key.as_str()));
    assert_eq!(tls.server_name.as_deref(), Some("storage.test"));

    // s3 takes the same block.
    let y = "pathPrefix: /s/\nbackend: {s3: {endpoint: \"https://s3.test\", bucket: b, credentialsSecret: {name: k}, tls: {caSecretRef: {name: ca, key: ca.crt}}}}\n";
    let c = compile(
        &[policy("s", 0, y)],
        &[
            secret("ca", &[("ca.crt", &ca)]),
            secret("k", &[("accessKeyId", "a"), ("secretAccessKey", "b")]),
        ],
    );
    assert_eq!(c.outcomes["ns/s"], Outcome::Accepted, "{:?}", c.outcomes);
    assert!(c.config.routes[0].backend.tls().unwrap().ca_pem.is_some());
}

#[test]
fn engine_tls_refusals() {
    let (ca, crt, key, other_key) = tls_material();
    let client = secret("client", &[("tls.crt", &crt), ("tls.key", &key)]);
    let outcome = |spec: &str, secrets: &[Secret]| {
        compile(&[policy("a", 0, spec)], secrets).outcomes["ns/a"].clone()
    };

    // Missing Secrets and keys: the usual SecretNotFound.
    let o = outcome(HTTPS_TLS, std::slice::from_ref(&client));
    assert_eq!(o.reason(), "SecretNotFound", "{o:?}");
    let o = outcome(
        HTTPS_TLS,
        &[secret("ca", &[("other", &ca)]), client.clone()],
    );
    assert_eq!(o.reason(), "SecretNotFound", "{o:?}");
    assert!(o.message().contains("ca.crt"), "{o:?}");
    let o = outcome(
        HTTPS_TLS,
        &[
            secret("ca", &[("ca.crt", &ca)]),
            secret("client", &[("tls.crt", &crt)]),
        ],
    );
    assert_eq!(o.reason(), "SecretNotFound", "{o:?}");
    assert!(o.message().contains("tls.key"), "{o:?}");

    // A bundle that is not PEM, or whose body is not a certificate.
    for bad in [
        "hello",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ] {
        let o = outcome(
            HTTPS_TLS,
            &[secret("ca", &[("ca.crt", bad)]), client.clone()],
        );
        assert_eq!(o.reason(), "Invalid", "{bad}: {o:?}");
        assert!(
            o.message()
                .contains("backend.http.tls: caSecretRef ca/ca.crt"),
            "{o:?}"
        );
    }

    // A key that is not the certificate's.
    let o = outcome(
        HTTPS_TLS,
        &[
            secret("ca", &[("ca.crt", &ca)]),
            secret("client", &[("tls.crt", &crt), ("tls.key", &other_key)]),
        ],
    );
    assert_eq!(o.reason(), "Invalid", "{o:?}");
    assert!(
        o.message()
            .contains("tls.key does not match the certificate"),
        "{o:?}"
    );

    // tls on a plain http engine.
    let o = outcome(
        "pathPrefix: /e/\nbackend: {http: {url: \"http://engine.test/dav\", tls: {serverName: x.test}}}\n",
        &[],
    );
    assert_eq!(o.reason(), "Invalid", "{o:?}");
    assert!(o.message().contains("applies only to https://"), "{o:?}");
    let o = outcome(
        "pathPrefix: /e/\nbackend: {s3: {endpoint: \"http://s3.test\", bucket: b, credentialsSecret: {name: k}, tls: {serverName: x.test}}}\n",
        &[secret(
            "k",
            &[("accessKeyId", "a"), ("secretAccessKey", "b")],
        )],
    );
    assert_eq!(o.reason(), "Invalid", "{o:?}");
    assert!(o.message().contains("backend.s3.tls"), "{o:?}");

    // A server name that is neither a DNS name nor an address.
    let o = outcome(
        "pathPrefix: /e/\nbackend: {http: {url: \"https://engine.test/dav\", tls: {serverName: \"not a name\"}}}\n",
        &[],
    );
    assert_eq!(o.reason(), "Invalid", "{o:?}");
    assert!(o.message().contains("serverName"), "{o:?}");
}

#[test]
fn s3_keys_come_from_the_secret_or_the_proxys_chain() {
    let with = "pathPrefix: /a/\nbackend: {s3: {endpoint: 'http://m:9000', bucket: b, credentialsSecret: {name: k}}}\n";
    let without = "pathPrefix: /b/\nbackend: {s3: {endpoint: 'https://s3.eu-west-1.amazonaws.com', bucket: b}}\n";
    let c = compile(
        &[policy("with", 0, with), policy("without", 1, without)],
        &[secret(
            "k",
            &[("accessKeyId", "AKIA\n"), ("secretAccessKey", "sk")],
        )],
    );
    assert_eq!(c.outcomes["ns/with"], Outcome::Accepted, "{:?}", c.outcomes);
    assert_eq!(
        c.outcomes["ns/without"],
        Outcome::Accepted,
        "{:?}",
        c.outcomes
    );
    let creds = |prefix: &str| match &c.config.route(None, prefix).unwrap().backend {
        Backend::S3 { credentials, .. } => credentials.clone(),
        b => panic!("not s3: {b:?}"),
    };
    assert_eq!(
        creds("/a/"),
        S3Credentials::Static {
            access_key_id: "AKIA".into(),
            secret_access_key: "sk".into()
        }
    );
    assert_eq!(creds("/b/"), S3Credentials::Chain);
    // The push format says which, explicitly.
    let json = serde_json::to_value(&c.config).unwrap();
    let backends: Vec<_> = json["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["backend"]["s3"]["credentials"].clone())
        .collect();
    assert!(
        backends.contains(&serde_json::json!("chain")),
        "{backends:?}"
    );
    assert!(
        backends.contains(
            &serde_json::json!({"static": {"access_key_id": "AKIA", "secret_access_key": "sk"}})
        ),
        "{backends:?}"
    );
    let back: ProxyConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, c.config);

    // A named Secret that is missing is still an error, not a fall back to the chain.
    let c = compile(&[policy("with", 0, with)], NO_SECRETS);
    assert_eq!(c.outcomes["ns/with"].reason(), "SecretNotFound");
}

fn cors_outcome(cors: &str) -> Outcome {
    let c = compile(
        &[policy("a", 0, &format!("{FS}cors: {cors}\n"))],
        NO_SECRETS,
    );
    c.outcomes["ns/a"].clone()
}

#[test]
fn cors_defaults_and_normalisation() {
    let y = format!(
        "{FS}cors:\n  allowedOrigins: [\"https://app.example.com\", \"http://localhost:5173\", \"capacitor://localhost\", \"http://[::1]:8080\"]\n  allowedHeaders: [X-Api-Key, \" Content-Type \", x-api-key]\n  exposeHeaders: [X-Request-Id]\n  maxAge: 600\n"
    );
    let c = compile(&[policy("a", 0, &y)], NO_SECRETS);
    assert_eq!(c.outcomes["ns/a"], Outcome::Accepted);
    let cors = c.config.routes[0].cors.clone().expect("cors compiled");
    assert_eq!(cors.allowed_methods, ["GET", "HEAD", "PUT", "POST"]);
    assert_eq!(cors.allowed_headers, ["x-api-key", "content-type"]);
    assert_eq!(cors.expose_headers, ["x-request-id"]);
    assert_eq!(cors.max_age, Some(600));
    assert!(!cors.allow_credentials);
    assert_eq!(cors.allowed_origins.len(), 4);
    // The push format carries it, and a pushed config is checked the same way.
    let json = serde_json::to_string(&c.config).unwrap();
    assert!(json.contains("\"allowedOrigins\""), "{json}");
    let back: ProxyConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back.check(), Ok(()));
    let mut bad = back.clone();
    bad.routes[0].cors.as_mut().unwrap().allowed_origins = vec!["https://x/".into()];
    let bad = ProxyConfig::new(bad.routes);
    assert!(bad.check().unwrap_err().contains("cors.allowedOrigins[0]"));

    let d = compile(
        &[policy(
            "a",
            0,
            &format!("{FS}cors: {{allowedOrigins: [\"*\"]}}\n"),
        )],
        NO_SECRETS,
    );
    let cors = d.config.routes[0].cors.clone().unwrap();
    assert_eq!(cors.allowed_headers, DEFAULT_CORS_HEADERS);
    assert!(
        compile(&[policy("a", 0, FS)], NO_SECRETS).config.routes[0]
            .cors
            .is_none()
    );
}

#[test]
fn cors_origins_are_validated_naming_what_is_wrong_and_where() {
    for (origins, want) in [
        (
            r#"["https://app.example.com/"]"#,
            "allowedOrigins[0]: \"https://app.example.com/\" has a path, a trailing slash",
        ),
        (
            r#"["https://a.example", "https://app.example.com/upload"]"#,
            "allowedOrigins[1]: \"https://app.example.com/upload\" has a path",
        ),
        (
            r#"["https://App.Example.com"]"#,
            "has capitals: browsers send origins in lower case (\"https://app.example.com\")",
        ),
        (r#"["HTTPS://app.example.com"]"#, "has capitals"),
        (
            r#"["app.example.com"]"#,
            "is not an origin: write scheme://host[:port]",
        ),
        (
            r#"["https://app.example.com:443"]"#,
            "names the default port: browsers leave it out of Origin, so write https://app.example.com",
        ),
        (r#"["http://app.example.com:80"]"#, "default port"),
        (r#"["https://app.example.com:99999"]"#, "port \"99999\""),
        (r#"["https://user@app.example.com"]"#, "user information"),
        (r#"["https://"]"#, "has no host"),
        (r#"["https://bad_host.example"]"#, "not a host name"),
        (r#"["null"]"#, "is not an origin"),
        (r#"[]"#, "cors.allowedOrigins: name at least one origin"),
    ] {
        let o = cors_outcome(&format!("{{allowedOrigins: {origins}}}"));
        let Outcome::Invalid(m) = &o else {
            panic!("{origins}: {o:?}")
        };
        assert!(m.contains(want), "{origins}: {m}");
        assert!(m.starts_with("cors."), "{m}");
    }
    for ok in [
        "https://app.example.com:8443",
        "http://127.0.0.1:3000",
        "http://[::1]",
    ] {
        assert_eq!(
            cors_outcome(&format!("{{allowedOrigins: [\"{ok}\"]}}")),
            Outcome::Accepted,
            "{ok}"
        );
    }
}

#[test]
fn cors_wildcards_with_credentials_are_refused() {
    for (field, cors) in [
        (
            "cors.allowedOrigins",
            r#"{allowedOrigins: ["*"], allowCredentials: true}"#,
        ),
        (
            "cors.allowedHeaders",
            r#"{allowedOrigins: ["https://a.example"], allowedHeaders: ["*"], allowCredentials: true}"#,
        ),
        (
            "cors.exposeHeaders",
            r#"{allowedOrigins: ["https://a.example"], exposeHeaders: ["*"], allowCredentials: true}"#,
        ),
    ] {
        let o = cors_outcome(cors);
        assert_eq!(o.reason(), "Invalid", "{cors}");
        let m = o.message();
        assert!(
            m.starts_with(&format!(
                "{field}: \"*\" cannot be combined with cors.allowCredentials: true"
            )),
            "{m}"
        );
    }
    assert_eq!(
        cors_outcome(r#"{allowedOrigins: ["*"], allowedHeaders: ["*"], exposeHeaders: ["*"]}"#),
        Outcome::Accepted
    );
    assert_eq!(
        cors_outcome(r#"{allowedOrigins: ["https://a.example"], allowCredentials: true}"#),
        Outcome::Accepted
    );
}

#[test]
fn cors_methods_and_headers_are_validated() {
    let m = cors_outcome(r#"{allowedOrigins: ["*"], allowedMethods: [PUT, delete]}"#).message();
    assert!(
        m.starts_with("cors.allowedMethods[1]: \"delete\" is not a method sluice serves"),
        "{m}"
    );
    let m = cors_outcome(r#"{allowedOrigins: ["*"], allowedMethods: [put]}"#).message();
    assert!(m.contains("upper case"), "{m}");
    let m = cors_outcome(r#"{allowedOrigins: ["*"], allowedHeaders: ["x api key"]}"#).message();
    assert!(
        m.starts_with("cors.allowedHeaders[0]: \"x api key\" is not a header name"),
        "{m}"
    );
    let m = cors_outcome(r#"{allowedOrigins: ["*"], exposeHeaders: ["a:b"]}"#).message();
    assert!(m.starts_with("cors.exposeHeaders[0]"), "{m}");
    assert_eq!(
        cors_outcome(
            r#"{allowedOrigins: ["*"], allowedMethods: [PUT, OPTIONS], allowedHeaders: []}"#
        ),
        Outcome::Accepted
    );
}

#[test]
fn signed_url_keys_resolve_like_api_keys() {
    let y = "pathPrefix: /a/\nbackend: {fs: {root: /d}}\nauth: {signedUrls: {secretRef: {name: sig}}}\n";
    let c = compile(
        &[policy("a", 0, y)],
        &[secret("sig", &[("old", "k1\r\n"), ("new", " k2 ")])],
    );
    assert_eq!(c.outcomes["ns/a"], Outcome::Accepted, "{:?}", c.outcomes);
    let auth = c.config.routes[0].auth.as_ref().unwrap();
    // Every value is a key; only the line end is trimmed, spaces are key bytes.
    let mut want = vec![hex::encode(b"k1"), hex::encode(b" k2 ")];
    want.sort();
    assert_eq!(auth.signing_keys_hex, want);
    assert!(auth.api_key_sha256.is_empty());

    let missing = compile(&[policy("a", 0, y)], NO_SECRETS);
    assert_eq!(missing.outcomes["ns/a"].reason(), "SecretNotFound");
    let empty = compile(&[policy("a", 0, y)], &[secret("sig", &[("k", "\n")])]);
    assert!(empty.outcomes["ns/a"].message().contains("holds no keys"));

    // Together with API keys: both kept, either accepted by the proxy.
    let both = "pathPrefix: /a/\nbackend: {fs: {root: /d}}\nauth: {apiKeys: {secretRef: {name: keys}}, signedUrls: {secretRef: {name: sig}}}\n";
    let c = compile(
        &[policy("a", 0, both)],
        &[secret("sig", &[("k", "x")]), secret("keys", &[("k", "y")])],
    );
    let auth = c.config.routes[0].auth.as_ref().unwrap();
    assert_eq!(auth.api_key_sha256.len(), 1);
    assert_eq!(auth.signing_keys_hex, vec![hex::encode(b"x")]);
}
