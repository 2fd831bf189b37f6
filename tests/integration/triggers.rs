//! Manual triggers and emergencies by annotation, on the policy and on its Deployment, and
//! undo (issue: remediation). Needs the workload simulator.

use std::time::Duration;

use frys_rollback::api::{EventPhase, EventType, RollbackEvent, StrategyKind};
use k8s_openapi::api::{apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::json;

use crate::support::{self, Operator, deployment, eventually, kubectl, kubectl_apply};

const TIMEOUT: Duration = Duration::from_secs(90);

const POLICY: &str = r#"
apiVersion: rollback.frys.io/v1alpha1
kind: RollbackPolicy
metadata: {name: web}
spec:
  targetRef: {name: web}
  interval: 1s
  rateWindow: 5s
  cooldown: 10m
  metrics: [{name: errors, preset: errorRate}]
  strategies: [{type: VersionRollback}]
  verification: {stabilizationDelay: 1s, timeout: 1m}
"#;

async fn setup(prefix: &str) -> Option<(kube::Client, String, Operator)> {
    let (client, ns, operator) = support::operator_namespace(prefix, &[]).await?;
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment("web", "demo:v1"))
        .await
        .unwrap();
    let (ok, _, err) = kubectl_apply(&ns, POLICY);
    assert!(ok, "{err}");
    Some((client, ns, operator))
}

async fn finished_events(api: &Api<RollbackEvent>, count: usize) -> Vec<RollbackEvent> {
    eventually(&format!("{count} finished event(s)"), TIMEOUT, || async {
        let items = api.list(&ListParams::default()).await.ok()?.items;
        let done = items
            .iter()
            .filter(|e| e.status.as_ref().is_some_and(|s| s.phase.is_finished()))
            .count();
        (items.len() == count && done == count).then_some(items)
    })
    .await
}

#[tokio::test]
async fn a_trigger_on_the_policy_runs_once() {
    let Some((client, ns, _operator)) = setup("tr-policy").await else {
        return;
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    // Revision 1 must exist before the template changes, or there is no earlier revision.
    support::wait_for_revision(&deployments, "web", "1").await;
    // A second revision, healthy: a person still wants to go back.
    support::set_image(&deployments, "web", "demo:v2").await;
    eventually("revision 2 rolled out", TIMEOUT, || async {
        let d = deployments.get("web").await.ok()?;
        let revision = d
            .metadata
            .annotations?
            .get("deployment.kubernetes.io/revision")
            .cloned()?;
        (revision == "2" && d.status?.available_replicas == Some(2)).then_some(())
    })
    .await;

    let annotate = || {
        kubectl(&[
            "annotate",
            "--overwrite",
            "-n",
            &ns,
            "rbp",
            "web",
            "rollback.frys.io/trigger=version_rollback",
            "rollback.frys.io/reason=perf regression",
        ])
    };
    let (ok, _, err) = annotate();
    assert!(ok, "{err}");
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    let list = finished_events(&events, 1).await;
    let event = &list[0];
    assert_eq!(
        (event.spec.type_, event.spec.strategy),
        (EventType::Manual, StrategyKind::VersionRollback)
    );
    assert_eq!(event.spec.reason, "perf regression");
    assert_eq!(
        event.status.as_ref().unwrap().phase,
        EventPhase::Succeeded,
        "{:?}",
        event.status
    );
    assert_eq!(
        support::image(&deployments.get("web").await.unwrap()),
        "demo:v1"
    );

    // The annotations were removed; a GitOps tool re-adding them within cooldown fires nothing.
    let policy = kubectl(&[
        "get",
        "-n",
        &ns,
        "rbp",
        "web",
        "-o",
        "jsonpath={.metadata.annotations}",
    ])
    .1;
    assert!(!policy.contains("rollback.frys.io/trigger"), "{policy}");
    let (ok, _, err) = annotate();
    assert!(ok, "{err}");
    eventually("the re-added trigger consumed", TIMEOUT, || async {
        let a = kubectl(&[
            "get",
            "-n",
            &ns,
            "rbp",
            "web",
            "-o",
            "jsonpath={.metadata.annotations}",
        ])
        .1;
        (!a.contains("rollback.frys.io/trigger")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1,
        "the re-added trigger fired again"
    );
}

#[tokio::test]
async fn an_emergency_on_the_deployment_scales_to_zero_pins_the_hpa_and_undoes() {
    let Some((client, ns, _operator)) = setup("tr-emergency").await else {
        return;
    };
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2, "maxReplicas": 5,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
        }
    }))
    .unwrap();
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    hpas.create(&PostParams::default(), &hpa).await.unwrap();

    support::annotate(
        &ns,
        "deployment/web",
        &["rollback.frys.io/emergency=database outage"],
    );
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    let list = finished_events(&events, 1).await;
    let event = &list[0];
    assert_eq!(
        (event.spec.type_, event.spec.strategy),
        (EventType::Emergency, StrategyKind::EmergencyShutdown)
    );
    assert_eq!(event.spec.reason, "database outage");
    let status = event.status.clone().unwrap();
    assert_eq!(status.phase, EventPhase::Succeeded, "{status:?}");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    assert_eq!(
        deployments.get("web").await.unwrap().spec.unwrap().replicas,
        Some(0)
    );
    let pinned = hpas.get("web").await.unwrap().spec.unwrap();
    assert_eq!((pinned.min_replicas, pinned.max_replicas), (Some(1), 1));
    let recorded = serde_json::to_string(&status.actions).unwrap();
    assert!(recorded.contains("HorizontalPodAutoscaler"), "{recorded}");
    let annotations = kubectl(&[
        "get",
        "-n",
        &ns,
        "deployment",
        "web",
        "-o",
        "jsonpath={.metadata.annotations}",
    ])
    .1;
    assert!(
        !annotations.contains("rollback.frys.io/emergency"),
        "{annotations}"
    );

    // Undo restores the replica count and the HPA's bounds.
    let name = event.metadata.name.clone().unwrap();
    support::annotate(&ns, &format!("rbe/{name}"), &["rollback.frys.io/undo=true"]);
    eventually("replicas and HPA restored", TIMEOUT, || async {
        let replicas = deployments.get("web").await.ok()?.spec?.replicas;
        let spec = hpas.get("web").await.ok()?.spec?;
        (replicas == Some(2) && spec.min_replicas == Some(2) && spec.max_replicas == 5)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn deleting_a_policy_with_on_delete_restore_undoes_its_remediations() {
    let Some((client, ns, _operator)) = setup("tr-ondelete").await else {
        return;
    };
    let (ok, _, err) = kubectl_apply(
        &ns,
        &POLICY.replace(
            "  cooldown: 10m\n",
            "  cooldown: 10m\n  onDelete: Restore\n",
        ),
    );
    assert!(ok, "{err}");
    support::annotate(&ns, "rbp/web", &["rollback.frys.io/emergency=drill"]);
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    finished_events(&events, 1).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    assert_eq!(
        deployments.get("web").await.unwrap().spec.unwrap().replicas,
        Some(0)
    );

    let (ok, _, err) = kubectl(&["delete", "-n", &ns, "rbp", "web", "--wait=false"]);
    assert!(ok, "{err}");
    eventually("replicas restored and the policy gone", TIMEOUT, || async {
        let replicas = deployments.get("web").await.ok()?.spec?.replicas;
        let gone = !kubectl(&["get", "-n", &ns, "rbp", "web"]).0;
        (replicas == Some(2) && gone).then_some(())
    })
    .await;
}
