//! GitOps owners (issue 13, items 1-3): with Argo CD's `Application` and Flux's
//! `Kustomization` installed as minimal stand-in CRDs (tests/fixtures/crds), a bad release is
//! rolled back, the owner's sync is held and recorded in the RollbackEvent, undo (kubectl
//! annotate) restores it exactly, and a re-apply of the bad template by a named field manager
//! is reported with that name in the policy's status and a Kubernetes Event. Needs the workload
//! simulator.
//!
//! What differs from production: no Argo CD or Flux controller runs. The tests write what those
//! controllers would (the owner's status listing the Deployment, the Deployment applied with
//! their field manager), and stand in for their sync with `kubectl apply --server-side`.

use std::time::Duration;

use frys_rollback::api::{EventPhase, RollbackEvent, RollbackPolicy};
use k8s_openapi::{
    api::apps::v1::Deployment,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams, Patch, PatchParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};

use crate::support::{self, eventually, kubectl, kubectl_apply};

const TIMEOUT: Duration = Duration::from_secs(120);

/// Installs the stand-in CRDs of Argo CD's Application and Flux's Kustomization.
async fn install_owner_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in [
        "applications.argoproj.io",
        "kustomizations.kustomize.toolkit.fluxcd.io",
    ] {
        let path = support::repo_root().join(format!("tests/fixtures/crds/{name}.yaml"));
        let (ok, _, err) = kubectl(&["apply", "--server-side", "-f", path.to_str().unwrap()]);
        assert!(ok, "{err}");
        support::established(&api, name).await;
    }
}

fn dynamic(
    client: &Client,
    ns: &str,
    group: &str,
    version: &str,
    kind: &str,
) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// The Deployment `web` of `image` as a GitOps tool applies it: server-side apply under the
/// tool's field manager, with the tool's tracking metadata.
fn apply_as(manager: &str, ns: &str, image: &str, metadata: &str) {
    let manifest = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  {metadata}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: app, image: "{image}", ports: [{{containerPort: 8080}}]}}]
"#
    );
    let (ok, _, err) = support::tool(
        "kubectl",
        &[
            "apply",
            "-n",
            ns,
            "--server-side",
            "--force-conflicts",
            &format!("--field-manager={manager}"),
            "-f",
            "-",
        ],
        Some(&manifest),
    )
    .pipe();
    assert!(ok, "{err}");
}

trait Pipe {
    fn pipe(self) -> (bool, String, String);
}

impl Pipe for std::process::Output {
    fn pipe(self) -> (bool, String, String) {
        (
            self.status.success(),
            String::from_utf8_lossy(&self.stdout).into_owned(),
            String::from_utf8_lossy(&self.stderr).into_owned(),
        )
    }
}

/// A policy with one rung, VersionRollback, and a long cooldown: after the first automatic
/// rollback, only the test's own manual trigger remediates.
const POLICY: &str = r#"
apiVersion: rollback.frys.io/v1alpha1
kind: RollbackPolicy
metadata: {name: web}
spec:
  targetRef: {name: web}
  interval: 1s
  rateWindow: 5s
  consecutiveFailures: 3
  cooldown: 30m
  metrics:
    - {name: errors, preset: errorRate, warning: 0.02, critical: 0.05}
  strategies:
    - type: VersionRollback
  verification: {stabilizationDelay: 2s, timeout: 1m}
"#;

/// How a test's owner is written and read.
struct Owner {
    api: Api<DynamicObject>,
    name: String,
    namespace: String,
    /// The tracking metadata the GitOps tool puts on the Deployment.
    metadata: String,
    /// The owner's spec field that the hold changes, as a JSON pointer.
    sync_field: &'static str,
    /// The field manager the tool applies with.
    manager: &'static str,
}

/// Drives one owner through the whole story.
async fn the_owner_story(owner: Owner, ns: &str, client: &Client) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), ns);
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), ns);

    apply_as(owner.manager, ns, "demo:v1", &owner.metadata);
    support::wait_for_revision(&deployments, "web", "1").await;
    let (ok, _, err) = kubectl_apply(ns, POLICY);
    assert!(ok, "{err}");
    eventually(
        "the owner shown in the policy's status",
        TIMEOUT,
        || async {
            let g = policies.get("web").await.ok()?.status?.gitops?;
            (g.name == owner.name && g.message.is_none()).then_some(())
        },
    )
    .await;
    eventually("healthy before the release", TIMEOUT, || async {
        let p = policies.get("web").await.ok()?;
        (support::condition(&p, "Healthy")?.0 == "True").then_some(())
    })
    .await;
    let before = owner.api.get(&owner.name).await.unwrap();
    let sync_before = before.data.pointer(owner.sync_field).cloned();

    // The bad release, synced by the GitOps tool.
    apply_as(owner.manager, ns, "demo:v2-faulty", &owner.metadata);
    let event = support::finished_event("the rollback", TIMEOUT, &events, |_| true).await;
    let status = event.status.clone().unwrap();
    assert_eq!(status.phase, EventPhase::Succeeded, "{status:?}");
    assert_eq!(
        support::image(&deployments.get("web").await.unwrap()),
        "demo:v1"
    );

    // The hold is the first recorded action, with exactly what it replaced.
    let hold = &status.actions[0];
    assert_eq!(
        (hold.name.as_str(), hold.namespace.as_deref()),
        (owner.name.as_str(), Some(owner.namespace.as_str())),
        "{hold:?}"
    );
    assert!(status.gitops.as_ref().unwrap().held, "{:?}", status.gitops);
    let held = owner.api.get(&owner.name).await.unwrap();
    let sync_held = held.data.pointer(owner.sync_field).cloned();
    assert_ne!(sync_held, sync_before, "the sync is held");
    eprintln!("held: {} -> {:?}", hold.summary, sync_held);

    // The policy's status and `frys-rollback status` say so, and what to do.
    let name = event.metadata.name.clone().unwrap();
    let g = eventually("status.gitops.heldBy", TIMEOUT, || async {
        let g = policies.get("web").await.ok()?.status?.gitops?;
        (g.held_by.as_deref() == Some(name.as_str())).then_some(g)
    })
    .await;
    let message = g.message.unwrap();
    assert!(message.contains("held on revision 1"), "{message}");
    assert!(
        message.contains("fix the release in Git, then undo"),
        "{message}"
    );
    let out = support::tool(
        env!("CARGO_BIN_EXE_frys-rollback"),
        &["status", "-n", ns],
        None,
    )
    .pipe();
    assert!(out.0, "{}", out.2);
    assert!(out.1.contains(&format!("held by {name}")), "{}", out.1);

    // Undo, as a person does it: the owner's sync comes back exactly.
    support::annotate(ns, &format!("rbe/{name}"), &["rollback.frys.io/undo=true"]);
    eventually("the undo recorded", TIMEOUT, || async {
        let s = events.get(&name).await.ok()?.status?;
        (s.actions.iter().all(|a| a.undone)).then_some(())
    })
    .await;
    let after = owner.api.get(&owner.name).await.unwrap();
    assert_eq!(
        serde_json::to_string(&after.data["spec"]).unwrap(),
        serde_json::to_string(&before.data["spec"]).unwrap(),
        "the owner's spec is restored byte for byte"
    );
    eventually("status.gitops no longer held", TIMEOUT, || async {
        let g = policies.get("web").await.ok()?.status?.gitops?;
        g.held_by.is_none().then_some(())
    })
    .await;

    // A rollback again (manual: the cooldown holds the engine), then the GitOps tool
    // re-applies the bad template: named in status and in a Kubernetes Event.
    support::annotate(
        ns,
        "rbp/web",
        &[
            "rollback.frys.io/trigger=VersionRollback",
            "rollback.frys.io/reason=again",
        ],
    );
    let second = support::finished_event("the second rollback", TIMEOUT, &events, |e| {
        e.metadata.name.as_deref() != Some(name.as_str())
    })
    .await;
    assert_eq!(second.status.as_ref().unwrap().phase, EventPhase::Succeeded);
    apply_as(owner.manager, ns, "demo:v2-faulty", &owner.metadata);
    let reapplied = eventually("status.reapplied", TIMEOUT, || async {
        policies.get("web").await.ok()?.status?.reapplied
    })
    .await;
    assert_eq!(reapplied.by.manager, owner.manager, "{reapplied:?}");
    assert_eq!(reapplied.by.operation.as_deref(), Some("Apply"));
    assert!(
        reapplied.message.contains(owner.manager),
        "{}",
        reapplied.message
    );
    let (ok, out, err) = kubectl(&["get", "events.events.k8s.io", "-n", ns, "-o", "json"]);
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let notes: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "BadTemplateReapplied")
        .filter_map(|e| e["note"].as_str())
        .collect();
    assert!(notes.iter().any(|n| n.contains(owner.manager)), "{notes:?}");
}

#[tokio::test]
async fn argo_cd_application_sync_is_held_recorded_undone_and_a_reapply_is_named() {
    let Some((client, ns, _operator)) = support::operator_namespace("gitops-argo", &[]).await
    else {
        return;
    };
    install_owner_crds(&client).await;
    // Applications live in Argo CD's namespace (the operator's default --argocd-namespace).
    let _ = support::tool("kubectl", &["create", "namespace", "argocd"], None);
    let apps = dynamic(&client, "argocd", "argoproj.io", "v1alpha1", "Application");
    // Named after the test's namespace: tests share `argocd`.
    let app = r#"
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: NAME, namespace: argocd}
spec:
  project: default
  destination: {server: "https://kubernetes.default.svc", namespace: NS}
  syncPolicy:
    automated: {prune: true, selfHeal: true}
    syncOptions: [ServerSideApply=true]
status:
  sync: {status: Synced, revision: 5f1c0de}
  resources:
    - {group: apps, version: v1, kind: Deployment, namespace: NS, name: web}
"#
    .replace("NAME", &ns)
    .replace("NS", &ns);
    let (ok, _, err) = kubectl_apply("argocd", &app);
    assert!(ok, "{err}");
    let owner = Owner {
        api: apps,
        name: ns.clone(),
        namespace: "argocd".into(),
        metadata: format!(
            "annotations: {{argocd.argoproj.io/tracking-id: \"{ns}:apps/Deployment:{ns}/web\"}}"
        ),
        sync_field: "/spec/syncPolicy/automated",
        manager: "argocd-controller",
    };
    the_owner_story(owner, &ns, &client).await;
}

#[tokio::test]
async fn flux_kustomization_is_suspended_recorded_resumed_and_a_reapply_is_named() {
    let Some((client, ns, _operator)) = support::operator_namespace("gitops-flux", &[]).await
    else {
        return;
    };
    install_owner_crds(&client).await;
    // The Kustomization in the policy's namespace (a tenant's own, as Flux multi-tenancy has).
    let ks = dynamic(
        &client,
        &ns,
        "kustomize.toolkit.fluxcd.io",
        "v1",
        "Kustomization",
    );
    let (ok, _, err) = kubectl_apply(
        &ns,
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: apps}\nspec: {interval: 5m, path: ./apps, prune: true, sourceRef: {kind: GitRepository, name: repo}}\n",
    );
    assert!(ok, "{err}");
    // What kustomize-controller writes: the inventory of what it applied.
    let inventory = json!({"status": {"lastAppliedRevision": "main@sha1:5f1c0de",
        "inventory": {"entries": [{"id": format!("{ns}_web_apps_Deployment"), "v": "v1"}]}}});
    ks.patch_status("apps", &PatchParams::default(), &Patch::Merge(&inventory))
        .await
        .unwrap();
    let owner = Owner {
        api: ks,
        name: "apps".into(),
        namespace: ns.clone(),
        metadata: format!(
            "labels: {{kustomize.toolkit.fluxcd.io/name: apps, kustomize.toolkit.fluxcd.io/namespace: {ns}}}"
        ),
        sync_field: "/spec/suspend",
        manager: "kustomize-controller",
    };
    the_owner_story(owner, &ns, &client).await;
}

#[tokio::test]
async fn a_missing_owner_does_not_stop_the_rollback_and_status_says_what_could_not_be_done() {
    let Some((client, ns, _operator)) = support::operator_namespace("gitops-missing", &[]).await
    else {
        return;
    };
    install_owner_crds(&client).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &ns);
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    // Labelled for a Kustomization that does not exist (deleted, or a copied label). The same
    // path answers a 403 when the chart's gitops.flux RBAC is off; this test server enforces
    // no RBAC, so the 403 is shown by the unit tests of the event controller.
    let metadata = format!(
        "labels: {{kustomize.toolkit.fluxcd.io/name: gone, kustomize.toolkit.fluxcd.io/namespace: {ns}}}"
    );
    apply_as("kustomize-controller", &ns, "demo:v1", &metadata);
    support::wait_for_revision(&deployments, "web", "1").await;
    let (ok, _, err) = kubectl_apply(&ns, POLICY);
    assert!(ok, "{err}");
    eventually("healthy before the release", TIMEOUT, || async {
        let p = policies.get("web").await.ok()?;
        (support::condition(&p, "Healthy")?.0 == "True").then_some(())
    })
    .await;
    apply_as("kustomize-controller", &ns, "demo:v2-faulty", &metadata);
    let event = support::finished_event("the rollback", TIMEOUT, &events, |_| true).await;
    let status = event.status.unwrap();
    assert_eq!(status.phase, EventPhase::Succeeded, "{status:?}");
    assert_eq!(
        status.actions.len(),
        1,
        "only the rollback: {:?}",
        status.actions
    );
    let hold = status.gitops.unwrap();
    assert!(!hold.held);
    assert!(
        hold.message
            .contains(&format!("Flux Kustomization {ns}/gone was not found")),
        "{}",
        hold.message
    );
    assert_eq!(
        support::image(&deployments.get("web").await.unwrap()),
        "demo:v1"
    );
    let g = policies
        .get("web")
        .await
        .unwrap()
        .status
        .unwrap()
        .gitops
        .unwrap();
    assert!(
        g.message
            .as_deref()
            .is_some_and(|m| m.contains("was not found")),
        "{g:?}"
    );
    let listed = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
}
