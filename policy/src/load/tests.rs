use super::*;

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect()
}

/// A policy document named `name` with `spec` (YAML flow mapping body) in namespace web.
fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\nmetadata: {{name: {name}, namespace: web}}\nspec: {{{spec}}}\n"
    )
}

fn fs(prefix: &str) -> String {
    format!("pathPrefix: {prefix}, backend: {{fs: {{root: x}}}}")
}

/// The one document not accepted.
fn only_refusal(yaml: &str) -> NotAccepted {
    let f = compile_folder(&files(&[("p.yaml", yaml)]));
    assert_eq!(f.not_accepted.len(), 1, "{:#?}", f.not_accepted);
    f.not_accepted[0].clone()
}

/// The README's example policy, every field of it (jwt included) and its Secret.
const README_EXAMPLE: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {name: avatars, namespace: web}
spec:
  hosts: [uploads.example.com]
  pathPrefix: /avatars/
  backend:
    fs: {root: avatars}
  upload:
    maxFileSize: 5Mi
    maxFiles: 1
    allowedTypes: ["image/*"]
    allowedExtensions: [png, jpg, jpeg, webp]
    verifyContent: true
    naming: uuid
    checksum: sha256
  download: {enabled: true}
  auth:
    apiKeys: {secretRef: {name: avatar-keys}}
---
apiVersion: v1
kind: Secret
metadata: {name: avatar-keys, namespace: web}
stringData: {ci: "k-4b1f...", mobile: "k-99ae..."}
"#;

/// The README's backend examples, as full policies.
const README_BACKENDS: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {name: dav, namespace: web}
spec:
  pathPrefix: /dav/
  backend:
    http:
      url: http://storage.internal:8080/files
      mode: put
      headers: {Authorization: "Bearer engine-token"}
---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {name: form, namespace: web}
spec:
  pathPrefix: /form/
  backend:
    http:
      url: http://uploads.internal:8080/upload?path=/
      mode: multipart
      fieldName: file_to_upload
      downloadUrl: http://uploads.internal:8080
      spool: {memory: 1Mi, disk: 1Gi}
---
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata: {name: s3, namespace: web}
spec:
  pathPrefix: /s3/
  backend:
    s3:
      endpoint: http://minio.internal:9000
      bucket: uploads
      region: us-east-1
      keyPrefix: incoming/
      pathStyle: true
      credentialsSecret: {name: s3}
  auth:
    jwt: {issuer: https://id.example.com, audiences: [uploads], publicKeySecretRef: {name: id-key, key: key.pem}}
---
apiVersion: v1
kind: Secret
metadata: {name: s3, namespace: web}
stringData: {accessKeyId: a, secretAccessKey: b}
---
apiVersion: v1
kind: Secret
metadata: {name: id-key, namespace: web}
stringData:
  key.pem: |
    -----BEGIN PUBLIC KEY-----
    MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=
    -----END PUBLIC KEY-----
"#;

#[test]
fn every_field_of_the_readme_examples_is_accepted() {
    let f = compile_folder(&files(&[
        ("example.yaml", README_EXAMPLE),
        ("backends.yaml", README_BACKENDS),
    ]));
    assert_eq!(f.not_accepted, [], "{:#?}", f.not_accepted);
    let keys: Vec<&str> = f.accepted.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["web/avatars", "web/dav", "web/form", "web/s3"]);
    assert_eq!(f.config.routes.len(), 4);
    assert_eq!(
        f.accepted[0].1,
        Origin {
            file: "example.yaml".into(),
            document: 1
        }
    );
}

#[test]
fn a_misspelled_field_is_refused_with_the_nearest_known_one() {
    let n = only_refusal(&policy(
        "p",
        &format!("{}, upload: {{maxFileSzie: 1Mi}}", fs("/a/")),
    ));
    assert_eq!(
        n,
        NotAccepted {
            file: "p.yaml".into(),
            document: Some(1),
            kind: Some("UploadPolicy".into()),
            policy: Some("web/p".into()),
            reason: "UnknownField",
            field: Some("spec.upload.maxFileSzie".into()),
            nearest: Some("maxFileSize".into()),
            message: "unknown field \"spec.upload.maxFileSzie\" (did you mean \"maxFileSize\"?)"
                .into(),
        }
    );
    // Several slips: the first is the field, the message names them all.
    let n = only_refusal(&policy(
        "p",
        &format!("{}, quota: {{}}, upload: {{maxFileSzie: 1Mi}}", fs("/a/")),
    ));
    assert_eq!(n.field.as_deref(), Some("spec.quota"));
    assert_eq!(
        n.message,
        "unknown field \"spec.quota\"; unknown field \"spec.upload.maxFileSzie\" (did you mean \"maxFileSize\"?)"
    );
    // Case slips count as close too.
    let n = only_refusal(&policy("p", "pathprefix: /a/, backend: {fs: {root: x}}"));
    assert_eq!(n.field.as_deref(), Some("spec.pathprefix"));
    assert_eq!(n.nearest.as_deref(), Some("pathPrefix"));
}

#[test]
fn an_unknown_field_far_from_any_known_one_has_no_nearest() {
    let n = only_refusal(&policy(
        "p",
        &format!("{}, quota: {{origins: ['*']}}", fs("/a/")),
    ));
    assert_eq!(n.reason, "UnknownField");
    assert_eq!(n.field.as_deref(), Some("spec.quota"));
    assert_eq!(n.nearest, None);
    // Unknown at the top and in metadata too; null does not hide one.
    let top = format!("{}colour: blue\n", policy("p", &fs("/a/")));
    assert_eq!(only_refusal(&top).field.as_deref(), Some("colour"));
    let meta = policy("p", &fs("/a/")).replace("namespace: web", "namespace: web, lables: {a: b}");
    let n = only_refusal(&meta);
    assert_eq!(
        (n.field.as_deref(), n.nearest.as_deref()),
        (Some("metadata.lables"), Some("labels"))
    );
    let null = policy("p", &format!("{}, quota: null", fs("/a/")));
    assert_eq!(only_refusal(&null).field.as_deref(), Some("spec.quota"));
}

#[test]
fn a_missing_required_field_is_named() {
    let n = only_refusal(&policy(
        "p",
        "pathPrefix: /a/, backend: {s3: {endpoint: 'http://m:9000', credentialsSecret: {name: s}}}",
    ));
    assert_eq!(n.reason, "MissingField");
    assert_eq!(n.field.as_deref(), Some("spec.backend.s3.bucket"));
    assert_eq!(n.policy.as_deref(), Some("web/p"));
    assert_eq!(n.message, "spec.backend.s3.bucket: required field missing");
    // Null is absent, as the API server prunes it.
    let n = only_refusal(&policy("p", "pathPrefix: null, backend: {fs: {root: x}}"));
    assert_eq!(n.field.as_deref(), Some("spec.pathPrefix"));
    let no_spec = "apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\nmetadata: {name: p}\n";
    let n = only_refusal(no_spec);
    assert_eq!(
        (n.reason, n.field.as_deref()),
        ("MissingField", Some("spec"))
    );
    assert_eq!(n.policy.as_deref(), Some("default/p"));
}

#[test]
fn a_wrong_type_is_named() {
    let n = only_refusal(&policy(
        "p",
        &format!("{}, upload: {{maxFiles: many}}", fs("/a/")),
    ));
    assert_eq!(n.reason, "InvalidField");
    assert_eq!(n.field.as_deref(), Some("spec.upload.maxFiles"));
    assert_eq!(
        n.message,
        "spec.upload.maxFiles: must be of type integer, not string"
    );
    let cases = [
        ("spec: 3", "spec"),
        (
            "spec: {pathPrefix: [/a/], backend: {fs: {root: x}}}",
            "spec.pathPrefix",
        ),
        (
            "spec: {pathPrefix: /a/, hosts: [[a]], backend: {fs: {root: x}}}",
            "spec.hosts[0]",
        ),
        (
            "spec: {pathPrefix: /a/, backend: {fs: {root: x}}, upload: {maxFiles: 1.5}}",
            "spec.upload.maxFiles",
        ),
        (
            "spec: {pathPrefix: /a/, backend: {http: {url: 'http://e', headers: {a: [1]}}}}",
            "spec.backend.http.headers[a]",
        ),
        (
            "spec: {pathPrefix: /a/, backend: {fs: {root: x}}, upload: {naming: random}}",
            "spec.upload.naming",
        ),
        (
            "metadata: {name: 7}\nspec: {pathPrefix: /a/, backend: {fs: {root: x}}}",
            "metadata.name",
        ),
        // Left to serde by the walk: a range, a timestamp.
        (
            "spec: {pathPrefix: /a/, backend: {fs: {root: x}}, upload: {maxFiles: -1}}",
            "spec.upload.maxFiles",
        ),
        (
            "metadata: {name: p, creationTimestamp: yesterday}\nspec: {pathPrefix: /a/, backend: {fs: {root: x}}}",
            "metadata.creationTimestamp",
        ),
    ];
    for (body, field) in cases {
        let yaml = format!("apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\n{body}\n");
        let n = only_refusal(&yaml);
        assert_eq!(
            (n.reason, n.field.as_deref()),
            ("InvalidField", Some(field)),
            "{body}: {n:#?}"
        );
    }
    let n = only_refusal(&policy(
        "p",
        &format!("{}, upload: {{naming: UUID}}", fs("/a/")),
    ));
    assert!(n.message.contains("did you mean \"uuid\""), "{}", n.message);
}

#[test]
fn metadata_takes_any_labels_and_annotations() {
    let yaml = r#"
apiVersion: sluice.dev/v1alpha1
kind: UploadPolicy
metadata:
  name: p
  namespace: web
  labels: {app.kubernetes.io/name: uploads, team: web}
  annotations: {example.com/owner: "someone", note: "free text"}
  uid: 0b1c
  resourceVersion: "42"
  generation: 3
  creationTimestamp: "2024-05-01T10:00:00Z"
  managedFields:
  - manager: kubectl
    operation: Apply
    fieldsV1: {f:spec: {f:pathPrefix: {}}}
spec: {pathPrefix: /a/, backend: {fs: {root: x}}}
status:
  observedGeneration: 3
  conditions:
  - {type: Accepted, status: "True", reason: Accepted, message: ok, lastTransitionTime: "2024-05-01T10:00:01Z"}
"#;
    let f = compile_folder(&files(&[("p.yaml", yaml)]));
    assert_eq!(f.not_accepted, [], "{:#?}", f.not_accepted);
    assert_eq!(f.config.routes.len(), 1);
}

#[test]
fn a_yaml_syntax_error_takes_out_its_file_only() {
    let f = compile_folder(&files(&[
        ("a.yaml", &policy("a", &fs("/a/"))),
        (
            "broken.yaml",
            &format!("{}---\nspec: [unclosed\n", policy("b", &fs("/b/"))),
        ),
    ]));
    assert_eq!(f.accepted.len(), 1, "{:#?}", f.not_accepted);
    assert_eq!(f.accepted[0].0, "web/a");
    assert_eq!(f.not_accepted.len(), 1);
    let n = &f.not_accepted[0];
    assert_eq!(
        (n.file.as_str(), n.document, n.reason),
        ("broken.yaml", None, "YamlSyntax")
    );
    assert_eq!((&n.policy, &n.field), (&None, &None));
    assert!(n.message.contains("line 6"), "{}", n.message);
    // The message never quotes the file: it could be a Secret.
    let secret = "apiVersion: v1\nkind: Secret\nstringData: {key: k-4b1f, b: [\n";
    let n = only_refusal(secret);
    assert!(!n.message.contains("k-4b1f"), "{}", n.message);
    assert!(!f.nothing_read);
    // Every file broken: nothing was read at all.
    let f = compile_folder(&files(&[("x.yaml", "a: [")]));
    assert!(f.nothing_read);
    // No files is an empty folder, which reads.
    assert!(!compile_folder(&[]).nothing_read);
}

#[test]
fn good_documents_beside_bad_ones_are_all_accepted() {
    let bad = [
        policy(
            "typo",
            &format!("{}, upload: {{maxFileSzie: 1Mi}}", fs("/typo/")),
        ),
        policy("cors", &format!("{}, quota: {{}}", fs("/cors/"))),
        policy(
            "s3",
            "pathPrefix: /s3/, backend: {s3: {endpoint: 'http://m'}}",
        ),
        policy(
            "type",
            &format!("{}, download: {{enabled: sometimes}}", fs("/type/")),
        ),
        policy(
            "value",
            &format!("{}, upload: {{maxFileSize: 12XB}}", fs("/value/")),
        ),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: k, namespace: web}\ndata: {a: [1]}\n"
            .into(),
        "apiVersion: sluice.dev/v1alpha1\nkind: UploadPolcy\nmetadata: {name: kind}\n".into(),
        "apiVersion: sluice.dev/v1\nkind: UploadPolicy\nmetadata: {name: version}\n".into(),
    ];
    let mut one = String::new();
    for (i, b) in bad.iter().enumerate() {
        one.push_str(&policy(&format!("good{i}"), &fs(&format!("/good{i}/"))));
        one.push_str("---\n");
        one.push_str(b);
        one.push_str("---\n");
    }
    one.push_str("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n");
    let f = compile_folder(&files(&[("all.yaml", &one)]));
    let good: Vec<String> = (0..bad.len()).map(|i| format!("web/good{i}")).collect();
    let accepted: Vec<String> = f.accepted.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(accepted, good);
    assert_eq!(f.config.routes.len(), bad.len());
    let got: Vec<(Option<usize>, &str, Option<&str>)> = f
        .not_accepted
        .iter()
        .map(|n| (n.document, n.reason, n.field.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (Some(2), "UnknownField", Some("spec.upload.maxFileSzie")),
            (Some(4), "UnknownField", Some("spec.quota")),
            (Some(6), "MissingField", Some("spec.backend.s3.bucket")),
            (Some(8), "InvalidField", Some("spec.download.enabled")),
            (Some(12), "InvalidField", Some("data.a")),
            (Some(14), "UnknownKind", Some("kind")),
            (Some(16), "UnknownKind", Some("apiVersion")),
            // compile's own refusal comes after the decode errors, placed at its document.
            (Some(10), "Invalid", None),
        ]
    );
    assert_eq!(f.not_accepted[4].kind.as_deref(), Some("Secret"));
    assert_eq!(f.not_accepted[5].nearest.as_deref(), Some("UploadPolicy"));
    assert_eq!(f.not_accepted[7].policy.as_deref(), Some("web/value"));
    assert!(f.not_accepted[7].message.contains("maxFileSize"));
    assert_eq!(f.ignored.len(), 1);
    assert_eq!(f.ignored[0].kind, "ConfigMap");
}

/// Found by the fuzz target `policy_load` (corpus file `regression-same-policy-twice`):
/// a second definition's outcome (`Invalid`, or `Conflicted` with itself on the
/// same route) replaced the first's `Accepted`, so a policy served while
/// reported as not accepted; with another prefix, one policy served two routes.
#[test]
fn a_policy_defined_twice_serves_its_first_definition() {
    for second in [fs("/a/"), fs("/b/"), fs("nope/")] {
        let f = compile_folder(&files(&[
            ("1.yaml", &policy("p", &fs("/a/"))),
            ("2.yaml", &policy("p", &second)),
        ]));
        let accepted: Vec<&str> = f.accepted.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(accepted, ["web/p"], "second at {second}");
        assert_eq!(f.config.routes.len(), 1);
        assert_eq!(f.config.routes[0].path_prefix, "/a/");
        assert_eq!(f.not_accepted.len(), 1, "{:#?}", f.not_accepted);
        let n = &f.not_accepted[0];
        assert_eq!((n.file.as_str(), n.reason), ("2.yaml", "Conflicted"));
        assert!(n.message.contains("1.yaml document 1"), "{}", n.message);
    }
}

#[test]
fn a_policy_naming_a_secret_that_does_not_decode_is_secret_not_found() {
    let yaml = format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: k, namespace: web}}\nstringData: 5\n",
        policy(
            "p",
            &format!(
                "{}, auth: {{apiKeys: {{secretRef: {{name: k}}}}}}",
                fs("/a/")
            )
        )
    );
    let f = compile_folder(&files(&[("p.yaml", &yaml)]));
    let reasons: Vec<&str> = f.not_accepted.iter().map(|n| n.reason).collect();
    assert_eq!(reasons, ["InvalidField", "SecretNotFound"]);
    assert_eq!(f.not_accepted[0].field.as_deref(), Some("stringData"));
}

#[test]
fn nearest_is_only_offered_when_close() {
    let known = ["maxFileSize", "maxFiles", "allowedTypes", "fs", "s3"];
    let n = |g: &str| nearest(g, known);
    assert_eq!(n("maxFileSzie").as_deref(), Some("maxFileSize"));
    assert_eq!(n("maxfilesize").as_deref(), Some("maxFileSize"));
    assert_eq!(n("maxFile").as_deref(), Some("maxFiles"));
    assert_eq!(n("allowedType").as_deref(), Some("allowedTypes"));
    assert_eq!(n("f").as_deref(), Some("fs"));
    assert_eq!(n("cors"), None);
    assert_eq!(n("size"), None);
    assert_eq!(n(""), None);
}

#[test]
fn any_input_is_an_outcome_never_a_panic() {
    let odd = [
        "",
        "---",
        "~",
        "[]",
        "3",
        "a: [",
        "\u{0}",
        "{",
        "kind: UploadPolicy",
        "apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\nmetadata: []\nspec: {}",
        "apiVersion: sluice.dev/v1alpha1\nkind: UploadPolicy\nspec: {backend: {fs: null, http: {url: 1}}}",
        "apiVersion: [1]\nkind: {a: b}",
        "&a [*a]",
        "a: &x [1, *x]",
    ];
    for t in odd {
        let _ = compile_folder(&files(&[("f.yaml", t)]));
    }
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let f = compile_folder(&files(&[("deep.yaml", &deep)]));
    assert!(f.nothing_read);
}

/// The embedded schema is what the types generate. Regenerate it with
/// `SLUICE_BLESS=1 cargo test -p sluice-policy embedded_schema`.
#[test]
fn embedded_schema_is_the_types_own() {
    let generated = generate_schema();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/load/schema.json");
    if std::env::var_os("SLUICE_BLESS").is_some() {
        let mut text = serde_json::to_string_pretty(&generated).unwrap();
        text.push('\n');
        std::fs::write(path, text).unwrap();
    }
    let embedded: Value = serde_json::from_str(SCHEMA_JSON).expect("schema.json parses");
    assert!(
        embedded == generated,
        "policy/src/load/schema.json is stale: run `SLUICE_BLESS=1 cargo test -p sluice-policy embedded_schema`"
    );
    assert!(
        SCHEMA
            .pointer("/properties/spec/properties/upload/properties/maxFileSize")
            .is_some()
            && SCHEMA
                .pointer("/properties/metadata/properties/labels")
                .is_some(),
        "the schema holds the fields the checks walk"
    );
}
