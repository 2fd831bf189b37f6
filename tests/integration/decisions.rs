//! Decisions that must hold as made: a version rollback acts on the release it was decided
//! against, `onDelete: Restore` never puts a rolled-back template back, and the policy carries
//! its finalizer only when deletion has work to do.

use std::time::Duration;

use frys_rollback::api::{EventPhase, RollbackEvent, RollbackPolicy};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::support::{
    self, condition, deployment, eventually, finished_event, kubectl, kubectl_apply,
};

const TIMEOUT: Duration = Duration::from_secs(120);

const POLICY: &str = "apiVersion: rollback.frys.io/v1alpha1\nkind: RollbackPolicy\nmetadata: {name: web}\nspec:\n  targetRef: {name: web}\n  metrics: [{name: errors, preset: errorRate}]\n  strategies: [{type: VersionRollback}]\n  verification: {stabilizationDelay: 1s, timeout: 1m}\n";

/// `web` released twice (revision 2 runs demo:v2), under [`POLICY`] with `extra` spec lines.
async fn released_twice(client: &kube::Client, ns: &str, extra: &str) -> Api<Deployment> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    deployments
        .create(&PostParams::default(), &deployment("web", "demo:v1"))
        .await
        .unwrap();
    support::wait_for_revision(&deployments, "web", "1").await;
    support::set_image(&deployments, "web", "demo:v2").await;
    support::wait_for_revision(&deployments, "web", "2").await;
    let (ok, _, err) = kubectl_apply(ns, &format!("{POLICY}{extra}"));
    assert!(ok, "{err}");
    deployments
}

fn finalizers(p: &RollbackPolicy) -> Vec<String> {
    p.metadata.finalizers.clone().unwrap_or_default()
}

#[tokio::test]
async fn the_finalizer_is_there_only_under_on_delete_restore() {
    let Some((client, ns, _operator)) = support::operator_namespace("dc-finalizer", &[]).await
    else {
        return;
    };
    released_twice(&client, &ns, "").await;
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &ns);
    eventually("reconciled", TIMEOUT, || async {
        condition(&policies.get("web").await.ok()?, "Ready").map(drop)
    })
    .await;
    assert!(
        finalizers(&policies.get("web").await.unwrap()).is_empty(),
        "onDelete: Keep has nothing to run on deletion"
    );

    let on_delete = |value: &str| Patch::Merge(json!({"spec": {"onDelete": value}}));
    let params = PatchParams::default();
    policies
        .patch("web", &params, &on_delete("Restore"))
        .await
        .unwrap();
    eventually("the finalizer under Restore", TIMEOUT, || async {
        finalizers(&policies.get("web").await.ok()?)
            .contains(&"rollback.frys.io/on-delete".to_string())
            .then_some(())
    })
    .await;
    policies
        .patch("web", &params, &on_delete("Keep"))
        .await
        .unwrap();
    eventually("no finalizer back under Keep", TIMEOUT, || async {
        finalizers(&policies.get("web").await.ok()?)
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn on_delete_restore_never_puts_a_rolled_back_template_back() {
    let Some((client, ns, _operator)) = support::operator_namespace("dc-keep-template", &[]).await
    else {
        return;
    };
    let deployments = released_twice(&client, &ns, "  onDelete: Restore\n").await;
    support::annotate(
        &ns,
        "rbp/web",
        &["rollback.frys.io/trigger=VersionRollback"],
    );
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    // Applied is what matters here (verification needs no verdict for this test).
    let event = finished_event("the rollback", TIMEOUT, &events, |_| true).await;
    let status = event.status.unwrap();
    assert!(
        status.actions.iter().any(|a| a.applied_at.is_some()),
        "{status:?}"
    );
    assert_eq!(
        support::image(&deployments.get("web").await.unwrap()),
        "demo:v1",
        "{status:?}"
    );

    let (ok, _, err) = kubectl(&["delete", "-n", &ns, "rbp", "web", "--wait=true"]);
    assert!(ok, "{err}");
    assert_eq!(
        support::image(&deployments.get("web").await.unwrap()),
        "demo:v1",
        "deleting the policy re-deployed the release it rolled back"
    );
}

/// A RollbackEvent whose `rollbackTarget` names a release the Deployment no longer runs (as
/// after a roll-forward between the decision and its execution) is skipped, not applied.
#[tokio::test]
async fn a_rollback_decided_against_another_release_is_skipped() {
    let Some((client, ns, _operator)) = support::operator_namespace("dc-superseded", &[]).await
    else {
        return;
    };
    let deployments = released_twice(&client, &ns, "").await;
    let event = json!({
        "apiVersion": "rollback.frys.io/v1alpha1", "kind": "RollbackEvent",
        "metadata": {"name": "decided-earlier"},
        "spec": {"policyRef": {"name": "web"}, "type": "Manual", "strategy": "VersionRollback",
                 "reason": "decided against an earlier release",
                 "rollbackTarget": {"fromRevision": "1", "fromTemplate": "0123456789abcdef", "toRevision": "1"}},
    });
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    events
        .create(
            &PostParams::default(),
            &serde_json::from_value(event).unwrap(),
        )
        .await
        .unwrap();
    let event = finished_event("the superseded event", TIMEOUT, &events, |_| true).await;
    let status = event.status.unwrap();
    assert_eq!(status.phase, EventPhase::Skipped, "{status:?}");
    let message = status.message.unwrap_or_default();
    assert!(message.starts_with("superseded:"), "{message}");
    assert!(status.actions.is_empty(), "{:?}", status.actions);
    assert_eq!(
        support::image(&deployments.get("web").await.unwrap()),
        "demo:v2",
        "the running release was rolled back"
    );
}
