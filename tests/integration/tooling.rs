//! kubectl and helm work against the environment, and the control plane's request log records
//! who asked for what (issue: real test environment).

use crate::support::{self, env, kubectl, kubectl_apply, repo_root, tool};

#[tokio::test]
async fn kubectl_gets_and_annotates() {
    let client = env().client().await;
    let ns = support::namespace(&client, "tool-kubectl").await;
    let deployment = serde_json::to_string(&support::deployment("web", "demo:v1")).unwrap();
    let (ok, _, err) = kubectl_apply(&ns, &deployment);
    assert!(ok, "{err}");
    let (ok, out, err) = kubectl(&["get", "deployments", "-n", &ns]);
    assert!(ok, "{err}");
    assert!(out.starts_with("NAME") && out.contains("web"), "{out}");
    let (ok, _, err) = kubectl(&[
        "annotate",
        "-n",
        &ns,
        "deployment/web",
        "rollback.frys.io/reason=test",
    ]);
    assert!(ok, "{err}");
    let (ok, out, _) = kubectl(&[
        "get",
        "-n",
        &ns,
        "deployment/web",
        "-o",
        "jsonpath={.metadata.annotations.rollback\\.frys\\.io/reason}",
    ]);
    assert!(ok);
    assert_eq!(out, "test");

    if env().request_log.is_some() {
        // The annotate is a patch of the Deployment itself (not /status), made by kubectl.
        support::eventually(
            "kubectl's patch in the request log",
            std::time::Duration::from_secs(10),
            || async {
                env()
                    .requests()
                    .iter()
                    .any(|r| {
                        r["namespace"] == ns.as_str()
                            && r["verb"] == "patch"
                            && r["resource"] == "deployments"
                            && r["subresource"] == ""
                            && r["name"] == "web"
                            && r["userAgent"]
                                .as_str()
                                .is_some_and(|u| u.starts_with("kubectl/"))
                    })
                    .then_some(())
            },
        )
        .await;
    }
}

#[tokio::test]
async fn helm_installs_a_chart_with_every_kind() {
    let client = env().client().await;
    let ns = support::namespace(&client, "tool-helm").await;
    let chart = repo_root().join("tests/fixtures/charts/smoke");
    let out = tool(
        "helm",
        &[
            "install",
            "smoke",
            chart.to_str().unwrap(),
            "--namespace",
            &ns,
            "--wait=false",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "helm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for object in [
        "serviceaccount/smoke",
        "deployment/smoke",
        "service/smoke",
        "poddisruptionbudget/smoke",
    ] {
        let (ok, _, err) = kubectl(&["get", "-n", &ns, object]);
        assert!(ok, "{object} missing after helm install: {err}");
    }
    for object in [
        format!("clusterrole/smoke-{ns}"),
        format!("clusterrolebinding/smoke-{ns}"),
    ] {
        let (ok, _, err) = kubectl(&["get", &object]);
        assert!(ok, "{object} missing after helm install: {err}");
    }
    let out = tool("helm", &["list", "--namespace", &ns, "-q"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "smoke");

    if env().request_log.is_some() {
        let wanted = [
            "serviceaccounts",
            "clusterroles",
            "clusterrolebindings",
            "deployments",
            "services",
            "poddisruptionbudgets",
        ];
        // The log is written as requests finish; give the last lines a moment to land.
        support::eventually(
            "helm's creates in the request log",
            std::time::Duration::from_secs(10),
            || async {
                let creates: Vec<String> = env()
                    .requests()
                    .into_iter()
                    // Helm 4 creates by server-side apply: a patch answered 201 Created.
                    .filter(|r| {
                        r["code"] == 201
                            && r["userAgent"]
                                .as_str()
                                .is_some_and(|u| u.starts_with("Helm"))
                    })
                    .filter(|r| {
                        r["namespace"] == ns.as_str()
                            || r["name"].as_str().is_some_and(|n| n.ends_with(&ns))
                    })
                    .filter_map(|r| r["resource"].as_str().map(str::to_owned))
                    .collect();
                wanted
                    .iter()
                    .all(|w| creates.iter().any(|c| c == w))
                    .then_some(())
            },
        )
        .await;
    }
    let out = tool("helm", &["uninstall", "smoke", "--namespace", &ns], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
