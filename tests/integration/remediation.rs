//! Remediation end to end: a bad release is detected, rolled back, verified and recorded
//! (issue: remediation). Needs the workload simulator.

use std::time::{Duration, Instant};

use frys_rollback::api::{
    EventPhase, IncidentClass, RollbackEvent, RollbackPolicy, StrategyKind, VerificationStatus,
};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::json;

use crate::support::{
    self, Operator, condition, deployment, env, eventually, kubectl, kubectl_apply,
    webhook::Receiver,
};

const TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_bad_release_is_rolled_back_and_verified() {
    let Some((client, ns, _operator)) = support::operator_namespace("rm-release", &[]).await else {
        return;
    };
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
        (condition(&p, "Healthy")?.0 == "True").then_some(())
    })
    .await;

    // The lighter rungs name objects this namespace lacks: reported, monitoring goes on.
    let (status, reason, message) =
        condition(&policies.get("web").await.unwrap(), "Ready").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "RungReferenceMissing")
    );
    assert!(
        message.contains("EnvironmentSwitch: standby Deployment web-blue not found"),
        "{message}"
    );
    assert!(
        message.contains("TrafficShifting: HTTPRoute web not found"),
        "{message}"
    );

    // The bad release.
    let released = Instant::now();
    support::set_image(&deployments, "web", "demo:v2-faulty").await;

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
    assert_eq!(
        support::image(&deployments.get("web").await.unwrap()),
        "demo:v1"
    );
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
    support::annotate(&ns, &format!("rbe/{name}"), &["rollback.frys.io/undo=true"]);
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
        support::image(&deployments.get("web").await.unwrap()),
        "demo:v2-faulty"
    );

    // The operator changed the template twice: the rollback and its undo, nothing repeated.
    if env().request_log.is_some() {
        assert_eq!(support::operator_patches(&ns, "deployments"), 2);
    }
}

/// The operator dies right after applying a rollback, before recording it; a new one resumes
/// the event, which completes without the change being applied a second time. The crash point
/// exists only in an operator built with the `failpoints` feature (scripts/test.sh builds it).
#[tokio::test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the operator's crash points: cargo test --features failpoints"
)]
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
    // Revision 1 must exist before the template changes, or there is no earlier revision.
    support::wait_for_revision(&deployments, "web", "1").await;
    support::set_image(&deployments, "web", "demo:v2").await;
    let policy = "apiVersion: rollback.frys.io/v1alpha1\nkind: RollbackPolicy\nmetadata: {name: web}\nspec:\n  targetRef: {name: web}\n  metrics: [{name: errors, preset: errorRate}]\n  strategies: [{type: VersionRollback}]\n  verification: {stabilizationDelay: 1s, timeout: 1m}\n";
    let (ok, _, err) = kubectl_apply(&ns, policy);
    assert!(ok, "{err}");
    support::wait_for_revision(&deployments, "web", "2").await;

    let doomed =
        Operator::start_with_env(&ns, &[], &[("FRYS_FAILPOINT", "abort-after-apply")]).await;
    support::annotate(
        &ns,
        "rbp/web",
        &["rollback.frys.io/trigger=VersionRollback"],
    );
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
    let event = support::finished_event(
        "the event completes after the restart",
        TIMEOUT,
        &events,
        |_| true,
    )
    .await;
    let status = event.status.unwrap();
    assert_eq!(status.phase, EventPhase::Succeeded, "{status:?}");
    assert_eq!(
        status.actions.len(),
        1,
        "the record of the change survived: {:?}",
        status.actions
    );
    assert_eq!(
        support::image(&deployments.get("web").await.unwrap()),
        "demo:v1"
    );

    if env().request_log.is_some() {
        // The trigger was annotated on the policy, so every operator patch of the Deployment
        // is the rollback.
        assert_eq!(
            support::operator_patches(&ns, "deployments"),
            1,
            "the rollback was applied more than once"
        );
    }
}

/// A fault a rollback cannot fix (an app-wide fault, not the release): the rollback fails
/// verification, the engine escalates to the next rung (a second event linked to the first),
/// attempts run out, the incident fails and holds until a person acknowledges.
#[tokio::test]
async fn failed_verification_escalates_then_holds_until_ack() {
    let Some((client, ns, _operator)) = support::operator_namespace("rm-escalate", &[]).await
    else {
        return;
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let colored = |name: &str, color: &str, image: &str| -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "color": color}},
                     "template": {"metadata": {"labels": {"app": "web", "color": color}},
                                  "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 8080}]}]}}}
        }))
        .unwrap()
    };
    deployments
        .create(&PostParams::default(), &colored("web", "green", "demo:v1"))
        .await
        .unwrap();
    deployments
        .create(
            &PostParams::default(),
            &colored("web-blue", "blue", "demo:v1"),
        )
        .await
        .unwrap();
    support::create_service(&client, &ns, "web", json!({"app": "web", "color": "green"})).await;
    support::wait_for_revision(&deployments, "web", "1").await;
    support::set_image(&deployments, "web", "demo:v2").await;
    let policy = r#"
apiVersion: rollback.frys.io/v1alpha1
kind: RollbackPolicy
metadata: {name: web}
spec:
  targetRef: {name: web}
  interval: 1s
  rateWindow: 5s
  consecutiveFailures: 2
  cooldown: 10m
  maxRollbackAttempts: 2
  metrics:
    - {name: errors, preset: errorRate, warning: 0.02, critical: 0.05}
  strategies:
    - type: VersionRollback
    - type: EnvironmentSwitch
      environmentSwitch: {service: web, selectorKey: color, activeValue: green, standbyValue: blue, standbyRef: web-blue}
  verification: {stabilizationDelay: 1s, timeout: 8s, consecutivePasses: 1}
  notifications:
    - {webhook: {urlSecretRef: {name: oncall-webhook, key: url}, format: Json}, minLevel: Emergency}
"#;
    // A webhook receiver for the Emergency alert, its URL in a Secret.
    let (receiver, hook) = Receiver::start(0, axum::http::StatusCode::OK).await;
    support::create_secret(&client, &ns, "oncall-webhook", json!({"url": hook})).await;
    let (ok, _, err) = kubectl_apply(&ns, policy);
    assert!(ok, "{err}");
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &ns);
    eventually("healthy on revision 2", TIMEOUT, || async {
        let p = policies.get("web").await.ok()?;
        (condition(&p, "Healthy")?.0 == "True").then_some(())
    })
    .await;

    // Every pod of the app fails, whatever its image.
    support::sim::inject(json!({"namespace": ns, "app": "web", "errorRate": 0.5})).await;

    let status = eventually("the incident failed", TIMEOUT, || async {
        let s = policies.get("web").await.ok()?.status?;
        s.incident.as_ref().is_some_and(|i| i.failed).then_some(s)
    })
    .await;
    let incident = status.incident.unwrap();
    assert_eq!(
        incident.tried,
        [
            StrategyKind::VersionRollback,
            StrategyKind::EnvironmentSwitch
        ]
    );
    assert_eq!(incident.attempts, 2);
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(degraded.reason, "IncidentFailed", "{degraded:?}");

    // The Emergency alert of the failed incident went out through the webhook.
    let alert = eventually("the Emergency webhook", TIMEOUT, || async {
        receiver
            .bodies()
            .into_iter()
            .find(|a| a["level"] == "Emergency")
    })
    .await;
    assert_eq!(alert["reason"], "IncidentFailed", "{alert}");
    assert_eq!(alert["policy"], "web", "{alert}");
    assert!(
        receiver.bodies().iter().all(|a| a["level"] == "Emergency"),
        "minLevel Emergency let lower alerts through"
    );

    // The two events, linked: the failed rollback points at the escalation and back.
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    let list = events.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(list.len(), 2, "{list:?}");
    let rollback = list
        .iter()
        .find(|e| e.spec.strategy == StrategyKind::VersionRollback)
        .unwrap();
    let switch = list
        .iter()
        .find(|e| e.spec.strategy == StrategyKind::EnvironmentSwitch)
        .unwrap();
    let rollback_status = rollback.status.as_ref().unwrap();
    assert_eq!(
        rollback_status.phase,
        EventPhase::Failed,
        "{rollback_status:?}"
    );
    assert_eq!(
        rollback_status
            .verification
            .as_ref()
            .unwrap()
            .overall_status,
        VerificationStatus::Failed
    );
    assert_eq!(
        rollback_status.escalated_to.as_deref(),
        switch.metadata.name.as_deref()
    );
    assert_eq!(
        switch.spec.escalated_from.as_deref(),
        rollback.metadata.name.as_deref()
    );

    // Held: no third event while the incident is failed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );

    // A person acknowledges: the hold is released.
    support::annotate(&ns, "rbp/web", &["rollback.frys.io/ack=oncall-1"]);
    eventually("the ack consumed", TIMEOUT, || async {
        let s = policies.get("web").await.ok()?.status?;
        let released = s.incident.as_ref().is_none_or(|i| !i.failed);
        (s.acknowledged.as_deref() == Some("oncall-1") && released).then_some(())
    })
    .await;
    support::sim::clear(&ns, "web").await;
}

/// A circuit breaker on a Gateway API HTTPRoute opens (the target's weight goes to the
/// fallback backend), is verified, and half-opens after openDuration (weights restored).
#[tokio::test]
async fn a_circuit_breaker_opens_and_half_opens_on_an_httproute() {
    let Some((client, ns, _operator)) = support::operator_namespace("rm-breaker", &[]).await else {
        return;
    };
    support::install_route_crds(&client).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    for name in ["web", "web-maintenance"] {
        deployments
            .create(&PostParams::default(), &deployment(name, "demo:v1"))
            .await
            .unwrap();
        support::create_service(&client, &ns, name, json!({"app": name})).await;
    }
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{name: gateway}]
  rules:
    - backendRefs: [{name: web, port: 80, weight: 100}]
"#;
    let (ok, _, err) = kubectl_apply(&ns, route);
    assert!(ok, "{err}");
    let policy = r#"
apiVersion: rollback.frys.io/v1alpha1
kind: RollbackPolicy
metadata: {name: web}
spec:
  targetRef: {name: web}
  interval: 1s
  rateWindow: 5s
  metrics: [{name: errors, preset: errorRate}]
  strategies:
    - type: CircuitBreaker
      circuitBreaker: {httpRoute: web, fallbackBackend: {name: web-maintenance, port: 80}, openDuration: 6s}
  verification: {stabilizationDelay: 1s, timeout: 30s, consecutivePasses: 1}
"#;
    let (ok, _, err) = kubectl_apply(&ns, policy);
    assert!(ok, "{err}");
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &ns);
    eventually("policy ready", TIMEOUT, || async {
        let s = policies.get("web").await.ok()?.status?;
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .await;
    let weights = || {
        let out = kubectl(&[
            "get",
            "-n",
            &ns,
            "httproute",
            "web",
            "-o",
            "jsonpath={range .spec.rules[0].backendRefs[*]}{.name}={.weight} {end}",
        ])
        .1;
        out.trim().to_string()
    };

    support::annotate(
        &ns,
        "rbp/web",
        &[
            "rollback.frys.io/trigger=circuit_breaker",
            "rollback.frys.io/reason=drill",
        ],
    );
    // Open: the target's weight went to the fallback (polled: the window is openDuration).
    let open_weights = eventually("the breaker open on the route", TIMEOUT, || async {
        let w = weights();
        w.contains("web-maintenance=100").then_some(w)
    })
    .await;
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    let opened = eventually("the breaker verified", TIMEOUT, || async {
        let e = events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .next()?;
        let s = e.status.clone()?;
        assert_ne!(s.phase, EventPhase::Failed, "{s:?}");
        (s.phase == EventPhase::Succeeded).then_some(e)
    })
    .await;
    let half_opened = eventually("half-open: weights restored", TIMEOUT, || async {
        let e = events.get(opened.metadata.name.as_deref()?).await.ok()?;
        let message = e.status?.message?;
        message.starts_with("half-open").then_some(message)
    })
    .await;
    assert!(
        open_weights.contains("web=0") && open_weights.contains("web-maintenance=100"),
        "while open: {open_weights}"
    );
    assert_eq!(weights(), "web=100", "after half-open ({half_opened})");
}

/// Triggers a strategy by annotation and waits for its event to finish; returns it.
async fn trigger(client: &kube::Client, ns: &str, strategy: &str) -> RollbackEvent {
    support::annotate(
        ns,
        "rbp/web",
        &[&format!("rollback.frys.io/trigger={strategy}")],
    );
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), ns);
    support::finished_event(&format!("{strategy} finished"), TIMEOUT, &events, |e| {
        e.spec
            .strategy
            .as_str()
            .eq_ignore_ascii_case(&strategy.replace('_', ""))
    })
    .await
}

/// Traffic shifting moves the weight from the failing backend to the standby, on a Gateway API
/// HTTPRoute and on an Istio VirtualService.
#[tokio::test]
async fn traffic_shifting_on_an_httproute_and_a_virtualservice() {
    if !support::require_simulator("traffic_shifting_on_an_httproute_and_a_virtualservice") {
        return;
    }
    let client = env().client().await;
    support::install_crds(&client).await;
    support::install_route_crds(&client).await;
    for (router, route, read) in [
        (
            "httpRoute",
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web}\nspec:\n  rules:\n    - backendRefs: [{name: web-canary, port: 80, weight: 20}, {name: web-stable, port: 80, weight: 80}]\n",
            (
                "httproute/web",
                "jsonpath={range .spec.rules[0].backendRefs[*]}{.name}={.weight} {end}",
            ),
        ),
        (
            "virtualService",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n  hosts: [web]\n  http:\n    - route:\n        - {destination: {host: web-canary}, weight: 20}\n        - {destination: {host: web-stable}, weight: 80}\n",
            (
                "virtualservice/web",
                "jsonpath={range .spec.http[0].route[*]}{.destination.host}={.weight} {end}",
            ),
        ),
    ] {
        let ns = support::namespace(&client, "rm-shift").await;
        let _operator = Operator::start(&ns, &[]).await;
        for name in ["web", "web-canary", "web-stable"] {
            Api::<Deployment>::namespaced(client.clone(), &ns)
                .create(&PostParams::default(), &deployment(name, "demo:v1"))
                .await
                .unwrap();
        }
        support::create_service(&client, &ns, "web-canary", json!({"app": "web-canary"})).await;
        support::create_service(&client, &ns, "web-stable", json!({"app": "web-stable"})).await;
        let (ok, _, err) = kubectl_apply(&ns, route);
        assert!(ok, "{router}: {err}");
        let policy = format!(
            "apiVersion: rollback.frys.io/v1alpha1\nkind: RollbackPolicy\nmetadata: {{name: web}}\nspec:\n  targetRef: {{name: web}}\n  interval: 1s\n  rateWindow: 5s\n  metrics: [{{name: errors, preset: errorRate}}]\n  strategies:\n    - type: TrafficShifting\n      trafficShifting: {{{router}: web, from: web-canary, to: web-stable}}\n  verification: {{stabilizationDelay: 1s, timeout: 30s, consecutivePasses: 1}}\n  autoRestore: {{restoreAfter: 4s}}\n"
        );
        let (ok, _, err) = kubectl_apply(&ns, &policy);
        assert!(ok, "{router}: {err}");
        // The standby is serving before traffic moves to it.
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
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
        let event = trigger(&client, &ns, "traffic_shifting").await;
        let status = event.status.unwrap();
        assert_eq!(status.phase, EventPhase::Succeeded, "{router}: {status:?}");
        let (object, jsonpath) = read;
        let weights = kubectl(&["get", "-n", &ns, object, "-o", jsonpath]).1;
        assert_eq!(weights.trim(), "web-canary=0 web-stable=100", "{router}");
        let verification = status.verification.unwrap();
        let traffic = verification
            .checks
            .iter()
            .find(|c| c.name == "traffic-distribution")
            .unwrap();
        assert_eq!(
            traffic.status,
            frys_rollback::api::CheckStatus::Passed,
            "{router}: {traffic:?}"
        );

        // autoRestore: healthy for restoreAfter after the shift, the weights come back.
        eventually(
            &format!("{router}: restored automatically"),
            TIMEOUT,
            || async {
                let w = kubectl(&["get", "-n", &ns, object, "-o", jsonpath]).1;
                (w.trim() == "web-canary=20 web-stable=80").then_some(())
            },
        )
        .await;
    }
}

/// The environment switch makes the standby ready first (scaled to the active replica count),
/// then flips the Service selector.
#[tokio::test]
async fn environment_switch_flips_the_selector_after_the_standby_is_ready() {
    let Some((client, ns, _operator)) = support::operator_namespace("rm-switch", &[]).await else {
        return;
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    for (name, color, replicas) in [("web", "green", 2), ("web-blue", "blue", 0)] {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {"sim.frys.io/ready-delay": "2s"}},
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
    support::create_service(&client, &ns, "web", json!({"app": "web", "color": "green"})).await;
    let policy = "apiVersion: rollback.frys.io/v1alpha1\nkind: RollbackPolicy\nmetadata: {name: web}\nspec:\n  targetRef: {name: web}\n  interval: 1s\n  rateWindow: 5s\n  metrics: [{name: errors, preset: errorRate}]\n  strategies:\n    - type: EnvironmentSwitch\n      environmentSwitch: {service: web, selectorKey: color, activeValue: green, standbyValue: blue, standbyRef: web-blue, scaleStandby: true}\n  verification: {stabilizationDelay: 1s, timeout: 30s, consecutivePasses: 1}\n";
    let (ok, _, err) = kubectl_apply(&ns, policy);
    assert!(ok, "{err}");
    support::annotate(
        &ns,
        "rbp/web",
        &["rollback.frys.io/trigger=EnvironmentSwitch"],
    );

    // Watch the switch happen: when the selector says blue, the standby is already available.
    let standby_at_switch = eventually("the selector switched", TIMEOUT, || async {
        let selector = kubectl(&[
            "get",
            "-n",
            &ns,
            "svc",
            "web",
            "-o",
            "jsonpath={.spec.selector.color}",
        ])
        .1;
        if selector != "blue" {
            return None;
        }
        deployments
            .get("web-blue")
            .await
            .ok()?
            .status?
            .available_replicas
    })
    .await;
    assert_eq!(
        standby_at_switch, 2,
        "switched before the standby was ready"
    );
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    let status = eventually("the switch verified", TIMEOUT, || async {
        let s = events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .next()?
            .status?;
        s.phase.is_finished().then_some(s)
    })
    .await;
    assert_eq!(status.phase, EventPhase::Succeeded, "{status:?}");
    let recorded = serde_json::to_string(&status.actions).unwrap();
    assert!(
        recorded.contains("green"),
        "the previous selector is recorded: {recorded}"
    );
}

/// A namespace annotated `rollback.frys.io/freeze=true` holds automatic remediation (the
/// operator reads the annotation from its namespace cache, so a freeze set a moment before an
/// incident must already count); removing it lets the held remediation run.
#[tokio::test]
async fn a_frozen_namespace_holds_automatic_remediation_until_thawed() {
    let Some((client, ns, _operator)) = support::operator_namespace("rm-freeze", &[]).await else {
        return;
    };
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
  consecutiveFailures: 2
  cooldown: 1s
  metrics:
    - {name: errors, preset: errorRate, warning: 0.02, critical: 0.05}
  strategies:
    - type: VersionRollback
  verification: {stabilizationDelay: 2s, timeout: 1m}
"#;
    let (ok, _, err) = kubectl_apply(&ns, policy);
    assert!(ok, "{err}");
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &ns);
    eventually("healthy before the release", TIMEOUT, || async {
        let p = policies.get("web").await.ok()?;
        (condition(&p, "Healthy")?.0 == "True").then_some(())
    })
    .await;

    support::annotate(
        &ns,
        &format!("namespace/{ns}"),
        &["rollback.frys.io/freeze=true"],
    );
    support::set_image(&deployments, "web", "demo:v2-faulty").await;
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    eventually("the incident held by the freeze", TIMEOUT, || async {
        let status = policies.get("web").await.ok()?.status?;
        let text = serde_json::to_string(&status).ok()?;
        text.contains("frozen in this namespace").then_some(())
    })
    .await;
    assert!(
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "no remediation while frozen"
    );

    support::annotate(
        &ns,
        &format!("namespace/{ns}"),
        &["rollback.frys.io/freeze-"],
    );
    let event = eventually("the held rollback runs once thawed", TIMEOUT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().next()
    })
    .await;
    assert_eq!(event.spec.strategy, StrategyKind::VersionRollback);
}
