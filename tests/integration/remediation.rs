//! Remediation end to end: a bad release is detected, rolled back, verified and recorded
//! (issue: remediation). Needs the workload simulator.

use std::time::{Duration, Instant};

use frys_rollback::api::{
    EventPhase, IncidentClass, RollbackEvent, RollbackPolicy, StrategyKind, VerificationStatus,
};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::{
    operator::deployment,
    support::{self, Operator, env, eventually, kubectl, kubectl_apply},
};

const TIMEOUT: Duration = Duration::from_secs(120);

fn image(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap()
}

#[tokio::test]
async fn a_bad_release_is_rolled_back_and_verified() {
    if !support::require_simulator("a_bad_release_is_rolled_back_and_verified") {
        return;
    }
    let client = env().client().await;
    support::install_crds(&client).await;
    let ns = support::namespace(&client, "rm-release").await;
    let _operator = Operator::start(&ns, &[]).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &deployment("web", "demo:v1"))
        .await
        .unwrap();
    let policy = r#"
apiVersion: rollback.frys.io/v1alpha1
kind: RollbackPolicy
metadata: {name: web}
spec:
  targetRef: {name: web}
  interval: 1s
  rateWindow: 5s
  consecutiveFailures: 3
  cooldown: 1m
  metrics:
    - {name: errors, preset: errorRate, warning: 0.02, critical: 0.05}
  strategies:
    - type: CircuitBreaker
      circuitBreaker: {httpRoute: web, fallbackBackend: {name: web-maintenance, port: 80}, openDuration: 30s}
    - type: TrafficShifting
      trafficShifting: {httpRoute: web, from: web-canary, to: web-stable}
    - type: EnvironmentSwitch
      environmentSwitch: {service: web, selectorKey: color, activeValue: green, standbyValue: blue, standbyRef: web-blue}
    - type: VersionRollback
    - type: EmergencyShutdown
      minSeverity: Unhealthy
  verification: {stabilizationDelay: 2s, timeout: 1m}
"#;
    let (ok, _, err) = kubectl_apply(&ns, policy);
    assert!(ok, "{err}");
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &ns);
    eventually("healthy before the release", TIMEOUT, || async {
        let p = policies.get("web").await.ok()?;
        let healthy = p
            .status?
            .conditions
            .iter()
            .any(|c| c.type_ == "Healthy" && c.status == "True");
        healthy.then_some(())
    })
    .await;

    // The bad release.
    let released = Instant::now();
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "demo:v2-faulty"}]}}}})),
        )
        .await
        .unwrap();

    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    let event = eventually("the rollback event Succeeded", TIMEOUT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let e = list.items.into_iter().next()?;
        let phase = e.status.as_ref()?.phase;
        assert_ne!(phase, EventPhase::Failed, "event failed: {:?}", e.status);
        (phase == EventPhase::Succeeded).then_some(e)
    })
    .await;
    let elapsed = released.elapsed();
    eprintln!("bad release to Succeeded: {:.1}s", elapsed.as_secs_f64());

    // The lighter rungs were skipped: a Release incident is answered by VersionRollback.
    assert_eq!(event.spec.strategy, StrategyKind::VersionRollback);
    assert!(
        event.spec.reason.starts_with("Release: errors 0.3"),
        "{}",
        event.spec.reason
    );
    assert_eq!(
        event.spec.assessment.as_ref().unwrap().class,
        Some(IncidentClass::Release)
    );
    let status = event.status.unwrap();
    assert_eq!(
        status.verification.as_ref().unwrap().overall_status,
        VerificationStatus::Passed
    );
    assert!(status.duration.is_some() && status.completed_at.is_some());
    // The action records the template it replaced (demo:v2-faulty), enough to undo.
    assert_eq!(status.actions.len(), 1, "{:?}", status.actions);
    let previous = status.actions[0].previous.as_ref().unwrap().to_string();
    assert!(previous.contains("demo:v2-faulty"), "{previous}");

    // The Deployment runs v1 again, and the simulator's metrics recover.
    assert_eq!(image(&deployments.get("web").await.unwrap()), "demo:v1");
    eventually("policy healthy again, incident closed", TIMEOUT, || async {
        let s = policies.get("web").await.ok()?.status?;
        let healthy = s
            .conditions
            .iter()
            .any(|c| c.type_ == "Healthy" && c.status == "True");
        (healthy && s.incident.is_none()).then_some(())
    })
    .await;

    let (ok, out, err) = kubectl(&["get", "rbe", "-n", &ns]);
    assert!(ok, "{err}");
    assert!(
        out.contains("VersionRollback") && out.contains("Succeeded") && out.contains("Passed"),
        "{out}"
    );
    eprintln!("{out}");

    // Undo by annotation restores the template the rollback replaced, from the record alone.
    let name = event.metadata.name.clone().unwrap();
    let (ok, _, err) = kubectl(&[
        "annotate",
        "-n",
        &ns,
        "rbe",
        &name,
        "rollback.frys.io/undo=true",
    ]);
    assert!(ok, "{err}");
    let undone = eventually("the undo recorded", TIMEOUT, || async {
        let e = events.get(&name).await.ok()?;
        let handled = !e
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("rollback.frys.io/undo"));
        let s = e.status?;
        (handled
            && s.message
                .as_deref()
                .is_some_and(|m| m.starts_with("undone")))
        .then_some(s)
    })
    .await;
    assert!(
        undone.actions.iter().all(|a| a.undone),
        "{:?}",
        undone.actions
    );
    assert_eq!(
        image(&deployments.get("web").await.unwrap()),
        "demo:v2-faulty"
    );

    // The operator changed the template with a guarded JSON Patch, once.
    if env().request_log.is_some() {
        let patches = env()
            .requests()
            .into_iter()
            .filter(|r| {
                r["namespace"] == ns.as_str()
                    && r["resource"] == "deployments"
                    && r["verb"] == "patch"
            })
            .filter(|r| {
                r["userAgent"]
                    .as_str()
                    .is_some_and(|u| u.contains("frys-rollback") || u.starts_with("kube-rs"))
            })
            .count();
        assert!(
            patches >= 1,
            "no patch of the Deployment by the operator in the request log"
        );
    }
}

/// The operator dies right after applying a rollback, before recording it; a new one resumes
/// the event, which completes without the change being applied a second time.
#[tokio::test]
async fn a_crash_after_applying_resumes_without_repeating() {
    if !support::require_simulator("a_crash_after_applying_resumes_without_repeating") {
        return;
    }
    let client = env().client().await;
    support::install_crds(&client).await;
    let ns = support::namespace(&client, "rm-crash").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &deployment("web", "demo:v1"))
        .await
        .unwrap();
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "demo:v2"}]}}}})),
        )
        .await
        .unwrap();
    let policy = "apiVersion: rollback.frys.io/v1alpha1\nkind: RollbackPolicy\nmetadata: {name: web}\nspec:\n  targetRef: {name: web}\n  metrics: [{name: errors, preset: errorRate}]\n  strategies: [{type: VersionRollback}]\n  verification: {stabilizationDelay: 1s, timeout: 1m}\n";
    let (ok, _, err) = kubectl_apply(&ns, policy);
    assert!(ok, "{err}");
    eventually("revision 2", TIMEOUT, || async {
        let d = deployments.get("web").await.ok()?;
        (d.metadata
            .annotations?
            .get("deployment.kubernetes.io/revision")?
            == "2")
            .then_some(())
    })
    .await;

    let doomed =
        Operator::start_with_env(&ns, &[], &[("FRYS_FAILPOINT", "abort-after-apply")]).await;
    let (ok, _, err) = kubectl(&[
        "annotate",
        "-n",
        &ns,
        "rbp",
        "web",
        "rollback.frys.io/trigger=VersionRollback",
    ]);
    assert!(ok, "{err}");
    let status = doomed.exited(TIMEOUT).await;
    assert!(
        !status.success(),
        "the operator should have aborted at the failpoint"
    );
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    let stuck = events.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(stuck.len(), 1);
    assert_eq!(
        stuck[0].status.as_ref().unwrap().phase,
        EventPhase::Executing,
        "crashed mid-step"
    );

    let _operator = Operator::start(&ns, &[]).await;
    let event = eventually("the event completes after the restart", TIMEOUT, || async {
        let e = events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .next()?;
        e.status.as_ref()?.phase.is_finished().then_some(e)
    })
    .await;
    let status = event.status.unwrap();
    assert_eq!(status.phase, EventPhase::Succeeded, "{status:?}");
    assert_eq!(
        status.actions.len(),
        1,
        "the record of the change survived: {:?}",
        status.actions
    );
    assert_eq!(image(&deployments.get("web").await.unwrap()), "demo:v1");

    if env().request_log.is_some() {
        let template_patches = env()
            .requests()
            .into_iter()
            .filter(|r| {
                r["namespace"] == ns.as_str()
                    && r["resource"] == "deployments"
                    && r["subresource"] == ""
            })
            .filter(|r| {
                r["verb"] == "patch"
                    && r["userAgent"]
                        .as_str()
                        .is_some_and(|u| u.starts_with("frys-rollback/"))
            })
            .count();
        // The trigger annotation's removal is not made by the operator on the Deployment here
        // (it was on the policy), so every operator patch of the Deployment is the rollback.
        assert_eq!(
            template_patches, 1,
            "the rollback was applied more than once"
        );
    }
}
