//! `sluice-operator`: the control plane of sluice.
//!
//! ```text
//!   sluice-operator crd   -> the UploadPolicy CustomResourceDefinition as YAML,
//!                            generated from policy/ (crds/uploadpolicy.yaml is its output)
//! ```
//! The controller itself (`run`: watch, compile, push to proxy pods, status) is
//! built on the proxies' push API (`PUT /v1/config` on their admin port).

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the UploadPolicy CRD (YAML) to standard output.
    Crd,
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Crd => print!("{}", sluice_operator::crd_yaml()?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// crds/uploadpolicy.yaml is what the code generates: regenerate it with
    /// `cargo run -p sluice-operator -- crd > crds/uploadpolicy.yaml`.
    #[test]
    fn the_checked_in_crd_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/uploadpolicy.yaml");
        let on_disk = std::fs::read_to_string(path).expect("crds/uploadpolicy.yaml");
        let generated = sluice_operator::crd_yaml().expect("crd");
        assert!(
            on_disk == generated,
            "crds/uploadpolicy.yaml is stale: run `cargo run -p sluice-operator -- crd > crds/uploadpolicy.yaml`"
        );
    }

    /// The CEL rules of the CRD, evaluated client-side with kube-cel (the real API
    /// server evaluates them in the Kubernetes end-to-end tests).
    #[test]
    fn cel_rules_refuse_what_a_schema_alone_cannot() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(sluice_policy::UploadPolicy::crd()).expect("crd json");
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let check = |spec: serde_json::Value| -> Vec<String> {
            let obj = serde_json::json!({
                "apiVersion": "sluice.dev/v1alpha1", "kind": "UploadPolicy",
                "metadata": {"name": "p", "namespace": "default"},
                "spec": spec,
            });
            kube_cel::Validator::new()
                .validate(schema, &obj, None)
                .into_iter()
                .map(|e| format!("{}: {}", e.field_path, e.message))
                .collect()
        };
        let ok = serde_json::json!({
            "pathPrefix": "/files/",
            "backend": {"fs": {"root": "files"}},
            "upload": {"maxFileSize": "10Mi", "maxFiles": 3},
        });
        assert_eq!(check(ok), Vec::<String>::new());

        let refused = [
            (
                serde_json::json!({"pathPrefix": "files/", "backend": {"fs": {"root": "a"}}}),
                "start and end",
            ),
            (
                serde_json::json!({"pathPrefix": "/a/", "backend": {}}),
                "exactly one",
            ),
            (
                serde_json::json!({"pathPrefix": "/a/", "backend": {"fs": {"root": "a"}, "s3": {"endpoint": "http://s3", "bucket": "b", "credentialsSecret": {"name": "s"}}}}),
                "exactly one",
            ),
            (
                serde_json::json!({"pathPrefix": "/a/", "backend": {"fs": {"root": "a"}}, "upload": {"maxFileSize": "0"}}),
                "positive",
            ),
            (
                serde_json::json!({"pathPrefix": "/a/", "backend": {"fs": {"root": "a"}}, "upload": {"maxFileSize": "1.5Gi"}}),
                "positive",
            ),
            (
                serde_json::json!({"pathPrefix": "/a/", "backend": {"fs": {"root": "a"}}, "upload": {"maxFiles": 0}}),
                "at least 1",
            ),
            (
                serde_json::json!({"pathPrefix": "/a/", "backend": {"http": {"url": "http://e", "spool": {"memory": "1Mi", "disk": "0"}}}}),
                "positive",
            ),
        ];
        for (spec, want) in refused {
            let errors = check(spec.clone());
            assert!(
                errors.iter().any(|e| e.contains(want)),
                "{spec}: want an error with {want:?}, got {errors:?}"
            );
        }
    }
}
