//! The install path (issue: trust): `crds/` installed with kubectl and the chart installed with
//! helm give the API server exactly the schema the Rust types generate, and every example in
//! `deploy/examples/` applies with strict validation onto what kubectl installed.
//!
//! kubectl and Helm read YAML 1.1 (sigs.k8s.io/yaml), where an unquoted `on`, `yes` or `off` is
//! a boolean: the Rust client used elsewhere in the tests never sees that, these tools do.
//!
//! These install the real CRDs (`rollback.frys.io`), which the other tests share: a copy under
//! another group would register the same kind and short names (`rbp`, `rbe`) and capture the
//! other tests' kubectl commands. Installing the same content again changes nothing for them.
//! A key kubectl mangled still shows: the server then stores the mangled property (`"true"`)
//! besides, or instead of, the real one, and the comparison names it.

use std::path::PathBuf;

use serde_json::Value;

use crate::{
    chart::helm,
    support::{self, env, eventually, kubectl, repo_root},
};

const GROUP: &str = "rollback.frys.io";

/// The first place where `server` differs from `generated`, as a path
/// (`.properties.spec.properties.strategies.items...`) and what each side holds there.
fn first_difference(path: &str, generated: &Value, server: &Value) -> Option<String> {
    match (generated, server) {
        (Value::Object(g), Value::Object(s)) => {
            let mut keys: Vec<&String> = g.keys().chain(s.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let here = format!("{path}.{k}");
                match (g.get(k), s.get(k)) {
                    (Some(gv), Some(sv)) => first_difference(&here, gv, sv),
                    (Some(gv), None) => Some(format!(
                        "{here}: missing on the server (generated: {})",
                        short(gv)
                    )),
                    (None, Some(sv)) => Some(format!(
                        "{here}: only on the server, not generated (server: {})",
                        short(sv)
                    )),
                    (None, None) => unreachable!("key from one of the maps"),
                }
            })
        }
        (Value::Array(g), Value::Array(s)) => g
            .iter()
            .zip(s)
            .enumerate()
            .find_map(|(i, (gv, sv))| first_difference(&format!("{path}[{i}]"), gv, sv))
            .or_else(|| {
                (g.len() != s.len()).then(|| {
                    format!(
                        "{path}: {} items generated, {} on the server",
                        g.len(),
                        s.len()
                    )
                })
            }),
        // JSON numbers: the server writes 100 where serde writes 100.0.
        (Value::Number(g), Value::Number(s)) if g.as_f64() == s.as_f64() => None,
        _ if generated == server => None,
        _ => Some(format!(
            "{path}: generated {}, server {}",
            short(generated),
            short(server)
        )),
    }
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// The generated `openAPIV3Schema` of each version, by CRD plural.
fn generated_schemas() -> Vec<(String, Vec<(String, Value)>)> {
    frys_rollback::api::crds()
        .into_iter()
        .map(|(_, crd)| {
            let versions = crd
                .spec
                .versions
                .iter()
                .map(|v| {
                    let schema = v
                        .schema
                        .as_ref()
                        .and_then(|s| s.open_api_v3_schema.as_ref());
                    (v.name.clone(), serde_json::to_value(schema).unwrap())
                })
                .collect();
            (crd.spec.names.plural, versions)
        })
        .collect()
}

/// Waits until the CRDs of `group` are Established, then compares their stored schemas with
/// the generated ones; panics naming the first differing path.
async fn assert_stored_schemas(group: &str, installed_with: &str) {
    for (plural, versions) in generated_schemas() {
        let name = format!("{plural}.{group}");
        eventually(
            &format!("{name} Established"),
            std::time::Duration::from_secs(30),
            || async {
                let (ok, out, _) = kubectl(&[
                    "get",
                    "crd",
                    &name,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
                ]);
                (ok && out == "True").then_some(())
            },
        )
        .await;
        let (ok, out, err) = kubectl(&["get", "crd", &name, "-o", "json"]);
        assert!(ok, "{name}: {err}");
        let stored: Value = serde_json::from_str(&out).unwrap();
        let stored_versions = stored["spec"]["versions"].as_array().unwrap();
        assert_eq!(
            stored_versions.len(),
            versions.len(),
            "{name}: versions on the server"
        );
        for (version, generated) in versions {
            let on_server = stored_versions
                .iter()
                .find(|v| v["name"] == version.as_str())
                .unwrap_or_else(|| panic!("{name}: no version {version} on the server"));
            let server = &on_server["schema"]["openAPIV3Schema"];
            if let Some(difference) = first_difference("openAPIV3Schema", &generated, server) {
                panic!(
                    "{name} {version} installed with {installed_with}: the server's schema is not \
                     the generated one; first difference at {difference}"
                );
            }
        }
    }
}

#[test]
fn first_difference_names_the_path() {
    let generated = serde_json::json!({"properties": {"spec": {"properties": {"incidents": {"type": "array"}, "b": {"items": [1, 2]}}}}});
    assert_eq!(first_difference("s", &generated, &generated), None);
    let server = serde_json::json!({"properties": {"spec": {"properties": {"true": {"type": "array"}, "b": {"items": [1, 2]}}}}});
    assert_eq!(
        first_difference("s", &generated, &server).unwrap(),
        r#"s.properties.spec.properties.incidents: missing on the server (generated: {"type":"array"})"#
    );
    let server = serde_json::json!({"properties": {"spec": {"properties": {"incidents": {"type": "array"}, "b": {"items": [1.0, 2]}}}}});
    assert_eq!(first_difference("s", &generated, &server), None);
    let server = serde_json::json!({"properties": {"spec": {"properties": {"incidents": {"type": "array"}, "b": {"items": [1, 3]}}}}});
    assert_eq!(
        first_difference("s", &generated, &server).unwrap(),
        "s.properties.spec.properties.b.items[1]: generated 2, server 3"
    );
}

#[tokio::test]
async fn crds_installed_with_kubectl_keep_every_field() {
    let client = env().client().await;
    let ns = support::namespace(&client, "install-kubectl").await;
    let crds = repo_root().join("crds");
    let (ok, _, err) = kubectl(&["apply", "-f", &crds.to_string_lossy()]);
    assert!(ok, "kubectl apply -f crds/: {err}");
    assert_stored_schemas(GROUP, "kubectl apply -f crds/").await;

    // Every example, against what kubectl installed.
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("deploy/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 6, "one example per strategy: {files:?}");
    for file in files {
        let (ok, _, err) = kubectl(&[
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-n",
            &ns,
            "-f",
            &file.to_string_lossy(),
        ]);
        assert!(
            ok && err.is_empty(),
            "{} (kubectl apply --validate=strict): {err}",
            file.display()
        );
    }
}

#[tokio::test]
async fn crds_installed_with_helm_keep_every_field() {
    let client = env().client().await;
    let ns = support::namespace(&client, "install-helm").await;
    let chart = repo_root().join("charts/frys-rollback");
    // The CRDs exist already (the other tests install them): helm adopts them.
    let (ok, _, err) = helm(&[
        "install",
        "frys-crds",
        &chart.to_string_lossy(),
        "-n",
        &ns,
        "--set",
        "crds.install=true",
        "--take-ownership",
        "--wait=false",
    ]);
    assert!(ok, "helm install: {err}");
    assert_stored_schemas(GROUP, "helm install").await;
    // The chart keeps its CRDs on uninstall (helm.sh/resource-policy: keep).
    let (ok, _, err) = helm(&["uninstall", "frys-crds", "-n", &ns]);
    assert!(ok, "helm uninstall: {err}");
}
