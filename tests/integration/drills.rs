//! Rollback drills (issue 14): a RollbackDrill rehearses a policy's rungs for real, verifies
//! them, undoes them and reports whether the objects came back exactly; it runs only where the
//! operator and the namespace allow drills, and never during an incident. On the workload
//! simulator: the HTTPRoute is the stand-in CRD `install_route_crds` installs (no Gateway
//! controller acts on it), the Deployments' pods are the simulator's.

use std::time::Duration;

use frys_rollback::api::{
    DrillResult, EventType, RollbackDrill, RollbackEvent, RollbackPolicy, VerificationStatus,
};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::{Value, json};

use crate::support::{self, Operator, deployment, env, eventually, kubectl, kubectl_apply};

const TIMEOUT: Duration = Duration::from_secs(150);

const POLICY: &str = "apiVersion: rollback.frys.io/v1alpha1\nkind: RollbackPolicy\nmetadata: {name: web}\nspec:\n  targetRef: {name: web}\n  interval: 1s\n  rateWindow: 5s\n  consecutiveFailures: 2\n  metrics: [{name: errors, preset: errorRate, warning: 0.02, critical: 0.05}]\n  strategies:\n    - type: TrafficShifting\n      trafficShifting: {httpRoute: web, from: web-canary, to: web-stable}\n    - type: EnvironmentSwitch\n      environmentSwitch: {service: web, selectorKey: color, activeValue: green, standbyValue: blue, standbyRef: web-blue, scaleStandby: true}\n  verification: {stabilizationDelay: 1s, timeout: 30s, consecutivePasses: 1}\n";

/// A namespace (labelled drill-safe when `drill_safe`) with an operator run with
/// --allow-drills, the blue/green pair, the canary/stable pair, the Service, the HTTPRoute and
/// the policy (`extra` appended to its spec).
async fn setup(
    prefix: &str,
    drill_safe: bool,
    extra: &str,
) -> Option<(kube::Client, String, Operator)> {
    if !support::require_simulator(prefix) {
        return None;
    }
    let client = env().client().await;
    support::install_crds(&client).await;
    support::install_route_crds(&client).await;
    let ns = support::namespace(&client, prefix).await;
    if drill_safe {
        let (ok, _, err) = kubectl(&["label", "namespace", &ns, "rollback.frys.io/drills=enabled"]);
        assert!(ok, "{err}");
    }
    let operator = Operator::start(&ns, &["--allow-drills", "true"]).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    for (name, color, replicas) in [("web", "green", 2), ("web-blue", "blue", 0)] {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web", "color": color}},
                     "template": {"metadata": {"labels": {"app": "web", "color": color}},
                                  "spec": {"containers": [{"name": "app", "image": "demo:v1", "ports": [{"containerPort": 8080}]}]}}}
        }))
        .unwrap();
        deployments
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
    }
    for name in ["web-canary", "web-stable"] {
        deployments
            .create(&PostParams::default(), &deployment(name, "demo:v1"))
            .await
            .unwrap();
        support::create_service(&client, &ns, name, json!({"app": name})).await;
    }
    support::create_service(&client, &ns, "web", json!({"app": "web", "color": "green"})).await;
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, labels: {team: shop}, annotations: {owner: sre}}\nspec:\n  rules:\n    - backendRefs: [{name: web-canary, port: 80, weight: 20}, {name: web-stable, port: 80, weight: 80}]\n";
    let (ok, _, err) = kubectl_apply(&ns, route);
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl_apply(&ns, &format!("{POLICY}{extra}"));
    assert!(ok, "{err}");
    eventually("web-stable available", TIMEOUT, || async {
        (deployments
            .get("web-stable")
            .await
            .ok()?
            .status?
            .available_replicas
            == Some(2))
        .then_some(())
    })
    .await;
    Some((client, ns, operator))
}

/// What a person would compare: the object's spec, labels and annotations as JSON.
fn observed(ns: &str, object: &str) -> String {
    let (ok, out, err) = kubectl(&["get", "-n", ns, object, "-o", "json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    serde_json::to_string(&json!({
        "spec": v["spec"],
        "labels": v["metadata"]["labels"],
        "annotations": v["metadata"]["annotations"],
    }))
    .unwrap()
}

/// A six-field (seconds first) UTC schedule whose only slot each day is `ahead` from now.
fn slot_ahead(ahead: Duration) -> (String, Timestamp) {
    let at = Timestamp::now() + ahead;
    let at = Timestamp::from_second(at.as_second()).unwrap();
    let t = at.to_zoned(jiff::tz::TimeZone::UTC);
    (
        format!("{} {} {} * * *", t.second(), t.minute(), t.hour()),
        at,
    )
}

fn drill_yaml(name: &str, schedule: &str, strategies: &str) -> String {
    format!(
        "apiVersion: rollback.frys.io/v1alpha1\nkind: RollbackDrill\nmetadata: {{name: {name}}}\nspec:\n  policyRef: {{name: web}}\n  schedule: \"{schedule}\"\n  strategies: [{strategies}]\n"
    )
}

async fn finished_report(
    drills: &Api<RollbackDrill>,
    name: &str,
) -> frys_rollback::api::RollbackDrillStatus {
    eventually(&format!("drill {name} finished"), TIMEOUT, || async {
        let s = drills.get(name).await.ok()?.status?;
        (s.report.as_ref()?.result != DrillResult::Running).then_some(s)
    })
    .await
}

fn condition(
    status: &frys_rollback::api::RollbackDrillStatus,
    type_: &str,
) -> Option<(String, String, String)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// A drill scheduled a few seconds ahead shifts traffic and switches environments for real,
/// verifies both, undoes both, and the HTTPRoute and the Service are byte for byte what they
/// were; the report says so. Then `frys-rollback drill` runs one on request.
#[tokio::test]
async fn a_scheduled_drill_rehearses_undoes_and_restores_exactly() {
    let Some((client, ns, _operator)) = setup("drill-run", true, "").await else {
        return;
    };
    let route_before = observed(&ns, "httproute/web");
    let service_before = observed(&ns, "service/web");
    let (schedule, slot) = slot_ahead(Duration::from_secs(6));
    let (ok, _, err) = kubectl_apply(
        &ns,
        &drill_yaml("rehearsal", &schedule, "TrafficShifting, EnvironmentSwitch"),
    );
    assert!(ok, "{err}");
    let drills: Api<RollbackDrill> = Api::namespaced(client.clone(), &ns);
    let pending = eventually("the next slot is shown", TIMEOUT, || async {
        let s = drills.get("rehearsal").await.ok()?.status?;
        s.next_schedule_time.clone().map(|_| s)
    })
    .await;
    assert_eq!(pending.next_schedule_time.as_ref().unwrap().0, slot);
    assert!(pending.report.is_none(), "ran before its slot: {pending:?}");

    let status = finished_report(&drills, "rehearsal").await;
    let report = status.report.clone().unwrap();
    assert_eq!(report.result, DrillResult::Succeeded, "{report:#?}");
    assert!(
        report.started_at.0 >= slot,
        "started before the slot: {report:?}"
    );
    assert_eq!(status.last_schedule_time.as_ref().unwrap().0, slot);
    assert!(status.next_schedule_time.as_ref().unwrap().0 > slot);
    assert!(status.active.is_empty());
    assert_eq!(report.strategies.len(), 2);
    for s in &report.strategies {
        assert_eq!(s.result, Some(DrillResult::Succeeded), "{s:#?}");
        assert_eq!(s.verification, Some(VerificationStatus::Passed), "{s:#?}");
        assert!(
            s.apply_ms.is_some() && s.verify_ms.is_some() && s.undo_ms.is_some(),
            "{s:#?}"
        );
        assert_eq!(s.restored_exactly, Some(true), "{s:#?}");
        assert!(!s.objects.is_empty(), "{s:#?}");
    }
    // The user's view, byte for byte.
    assert_eq!(observed(&ns, "httproute/web"), route_before);
    assert_eq!(observed(&ns, "service/web"), service_before);

    // Two RollbackEvents of type Drill, applied for real and undone.
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    let drill_events: Vec<RollbackEvent> = events
        .list(&ListParams::default().labels("rollback.frys.io/drill=rehearsal"))
        .await
        .unwrap()
        .items;
    assert_eq!(drill_events.len(), 2, "{drill_events:#?}");
    for e in &drill_events {
        assert_eq!(e.spec.type_, EventType::Drill);
        let actions = &e.status.as_ref().unwrap().actions;
        assert!(
            !actions.is_empty() && actions.iter().all(|a| a.applied_at.is_some() && a.undone),
            "{actions:#?}"
        );
    }
    // Not an incident: nothing in the policy's incident or last remediation.
    let policy = Api::<RollbackPolicy>::namespaced(client.clone(), &ns)
        .get("web")
        .await
        .unwrap();
    let pstatus = policy.status.unwrap_or_default();
    assert!(
        pstatus.incident.is_none() && pstatus.last_rollback.is_none(),
        "{pstatus:#?}"
    );

    // The CLI runs one now and prints the report.
    let out = support::tool(
        env!("CARGO_BIN_EXE_frys-rollback"),
        &[
            "drill",
            "web",
            "--strategies",
            "traffic_shifting",
            "-n",
            &ns,
            "--timeout",
            "2m",
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(": Succeeded:"), "{stdout}");
    assert!(
        stdout.contains("TrafficShifting") && stdout.contains("exactly"),
        "{stdout}"
    );
    assert!(stderr.contains("TrafficShifting Done"), "{stderr}");
    assert_eq!(observed(&ns, "httproute/web"), route_before);
}

/// In a namespace without the drills label the drill is refused when due, with a condition
/// naming what is missing, and nothing is applied.
#[tokio::test]
async fn a_drill_outside_a_drill_safe_namespace_is_refused() {
    let Some((client, ns, _operator)) = setup("drill-refused", false, "").await else {
        return;
    };
    let route_before = observed(&ns, "httproute/web");
    let (schedule, slot) = slot_ahead(Duration::from_secs(3));
    let (ok, _, err) = kubectl_apply(&ns, &drill_yaml("unsafe", &schedule, "TrafficShifting"));
    assert!(ok, "{err}");
    let drills: Api<RollbackDrill> = Api::namespaced(client.clone(), &ns);
    let status = eventually("the slot handled", TIMEOUT, || async {
        let s = drills.get("unsafe").await.ok()?.status?;
        s.last_schedule_time.is_some().then_some(s)
    })
    .await;
    assert_eq!(status.last_schedule_time.as_ref().unwrap().0, slot);
    let (allowed, reason, message) = condition(&status, "Allowed").unwrap();
    assert_eq!(
        (allowed.as_str(), reason.as_str()),
        ("False", "NamespaceNotDrillSafe")
    );
    assert!(
        message.contains(&format!(
            "namespace {ns} is not labelled rollback.frys.io/drills=enabled"
        )),
        "{message}"
    );
    assert_eq!(condition(&status, "Waiting").unwrap().1, "NotAllowed");
    assert!(status.report.is_none(), "{status:#?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = Api::<RollbackEvent>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(events.is_empty(), "{events:#?}");
    assert_eq!(observed(&ns, "httproute/web"), route_before);
}

/// A drill due while an incident is open waits and says why, applies nothing, and runs once
/// the incident has closed. (autoRollback: false, so the incident holds without a remediation.)
#[tokio::test]
async fn a_drill_due_during_an_incident_waits_then_runs() {
    let Some((client, ns, _operator)) = setup("drill-wait", true, "  autoRollback: false\n").await
    else {
        return;
    };
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &ns);
    support::sim::inject(json!({"namespace": ns, "app": "web", "errorRate": 0.5})).await;
    eventually("an incident opened", TIMEOUT, || async {
        policies.get("web").await.ok()?.status?.incident.map(|_| ())
    })
    .await;
    let (schedule, _) = slot_ahead(Duration::from_secs(3));
    let (ok, _, err) = kubectl_apply(&ns, &drill_yaml("during", &schedule, "TrafficShifting"));
    assert!(ok, "{err}");
    let drills: Api<RollbackDrill> = Api::namespaced(client.clone(), &ns);
    let status = eventually("the drill waits", TIMEOUT, || async {
        let s = drills.get("during").await.ok()?.status?;
        (condition(&s, "Waiting")?.0 == "True").then_some(s)
    })
    .await;
    let (_, reason, message) = condition(&status, "Waiting").unwrap();
    assert_eq!(reason, "IncidentOpen");
    assert!(
        message.contains("policy web has an open") && message.contains("incident"),
        "{message}"
    );
    assert!(status.report.is_none());
    let events = Api::<RollbackEvent>::namespaced(client.clone(), &ns);
    assert!(
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Healthy again: the incident closes and the waiting drill runs.
    support::sim::clear(&ns, "web").await;
    let status = finished_report(&drills, "during").await;
    let report = status.report.unwrap();
    assert_eq!(report.result, DrillResult::Succeeded, "{report:#?}");
}
