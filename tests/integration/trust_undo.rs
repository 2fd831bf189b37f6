//! Trust (issue 10): undo applies only what the operator recorded itself, an emergency killed
//! between its steps is undone exactly, and verification probes retry and stay within the
//! policy's namespace. Against the real API server and the workload simulator.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use frys_rollback::{
    api::{CheckStatus, EventPhase, RollbackEvent, RollbackPolicySpec, VerificationReport},
    config::{OperatorConfig, effective},
    prometheus::PrometheusClient,
    strategy::Remediation,
    verify::{VerifyDeps, VerifyInput, rules::ready_addresses, verify},
};
use k8s_openapi::api::{
    apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1::Pod,
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, ListParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{self, Operator, env, eventually, kubectl, kubectl_apply};

const TIMEOUT: Duration = Duration::from_secs(120);

fn http_route_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// What undo must give back, as JSON text (byte-for-byte comparison): the route's spec, the
/// HPA's spec and annotations, the Deployment's replicas and annotations, the Service's spec.
async fn snapshot(client: &Client, ns: &str) -> Vec<(String, String)> {
    let route = http_route_api(client, ns).get("web").await.unwrap();
    let hpa = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns)
        .get("web")
        .await
        .unwrap();
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get("web")
        .await
        .unwrap();
    let service = Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), ns)
        .get("web")
        .await
        .unwrap();
    let text = |v: Value| serde_json::to_string(&v).unwrap();
    vec![
        ("HTTPRoute spec".into(), text(route.data["spec"].clone())),
        ("HPA spec".into(), text(json!(hpa.spec))),
        (
            "HPA annotations".into(),
            text(json!(hpa.metadata.annotations)),
        ),
        (
            "Deployment replicas".into(),
            text(json!(deployment.spec.as_ref().unwrap().replicas)),
        ),
        (
            "Deployment template".into(),
            text(json!(deployment.spec.as_ref().unwrap().template)),
        ),
        (
            "Deployment annotations".into(),
            text(json!(deployment.metadata.annotations)),
        ),
        ("Service spec".into(), text(json!(service.spec))),
    ]
}

/// Deployment web (2 replicas) behind Service web, its HPA (2-5) and an HTTPRoute to it, and an
/// EmergencyShutdown policy that cuts the route.
async fn emergency_setup(prefix: &str) -> Option<(Client, String)> {
    if !support::require_simulator(prefix) {
        return None;
    }
    let client = env().client().await;
    support::install_crds(&client).await;
    support::install_route_crds(&client).await;
    let ns = support::namespace(&client, prefix).await;
    support::create_deployment(&client, &ns, "web", "demo:v1").await;
    support::create_service(&client, &ns, "web", json!({"app": "web"})).await;
    let objects = r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web, annotations: {team: shop}}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 2
  maxReplicas: 5
  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{name: gateway}]
  rules:
    - backendRefs:
        - {name: web, port: 80, weight: 90}
        - {name: web-maintenance, port: 80, weight: 10}
---
apiVersion: rollback.frys.io/v1alpha1
kind: RollbackPolicy
metadata: {name: web}
spec:
  targetRef: {name: web}
  # Manual remediations only: no automatic event interferes.
  autoRollback: false
  interval: 1s
  rateWindow: 5s
  metrics: [{name: errors, preset: errorRate}]
  strategies:
    - type: EmergencyShutdown
      emergencyShutdown: {cutTraffic: {httpRoute: web}}
  verification: {stabilizationDelay: 1s, timeout: 10s}
"#;
    let (ok, _, err) = kubectl_apply(&ns, objects);
    assert!(ok, "{err}");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    eventually("web available", TIMEOUT, || async {
        (deployments
            .get("web")
            .await
            .ok()?
            .status?
            .available_replicas
            == Some(2))
        .then_some(())
    })
    .await;
    Some((client, ns))
}

fn emergency_event(name: &str) -> String {
    format!(
        "apiVersion: rollback.frys.io/v1alpha1\nkind: RollbackEvent\nmetadata: {{name: {name}}}\nspec:\n  policyRef: {{name: web}}\n  type: Emergency\n  strategy: EmergencyShutdown\n  reason: trust test\n"
    )
}

/// Asks for an undo and waits until the operator has answered it (annotation removed).
async fn undo_answered(events: &Api<RollbackEvent>, ns: &str, name: &str, value: &str) -> String {
    support::annotate(
        ns,
        &format!("rbe/{name}"),
        &[&format!("rollback.frys.io/undo={value}")],
    );
    eventually("the undo answered", TIMEOUT, || async {
        let e = events.get(name).await.ok()?;
        if e.annotations().contains_key("rollback.frys.io/undo") {
            return None;
        }
        e.status?.message
    })
    .await
}

fn forge(ns: &str, name: &str, patch: &str) {
    let (ok, _, err) = kubectl(&[
        "patch",
        "-n",
        ns,
        "rbe",
        name,
        "--subresource=status",
        "--type=json",
        "-p",
        patch,
    ]);
    assert!(ok, "forging status: {err}");
}

/// Warning Events the operator published about RollbackEvent `name` with this reason.
async fn warnings(client: &Client, ns: &str, name: &str, reason: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .filter_map(|e| e.note)
        .collect()
}

/// `status.actions` rewritten by someone with `rollbackevents/status`: the undo is refused
/// with the reason in the message and a Warning Event, and no object changes at all.
#[tokio::test]
async fn an_undo_over_forged_actions_is_refused_and_applies_nothing() {
    let Some((client, ns)) = emergency_setup("tu-forged").await else {
        return;
    };
    let _operator = Operator::start(&ns, &[]).await;
    let (ok, _, err) = kubectl_apply(&ns, &emergency_event("stop"));
    assert!(ok, "{err}");
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    let event = support::finished_event("the emergency finished", TIMEOUT, &events, |e| {
        e.name_any() == "stop"
    })
    .await;
    let status = event.status.unwrap();
    assert!(
        status
            .actions_digest
            .as_deref()
            .is_some_and(|d| d.starts_with("v1:")),
        "{status:?}"
    );
    let scale = status
        .actions
        .iter()
        .position(|a| a.kind == "Deployment")
        .expect("a scale action");
    let stopped = snapshot(&client, &ns).await;
    let hpa_version = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &ns)
        .get("web")
        .await
        .unwrap()
        .resource_version();

    // 1. The recorded replicas rewritten (undo would scale to 9).
    forge(
        &ns,
        "stop",
        &format!(
            r#"[{{"op":"replace","path":"/status/actions/{scale}/previous/replicas","value":9}}]"#
        ),
    );
    let message = undo_answered(&events, &ns, "stop", "true").await;
    assert!(message.starts_with("undo refused:"), "{message}");
    assert!(
        message.contains("does not match its actionsDigest")
            && message.contains("nothing was applied"),
        "{message}"
    );
    // 2. The digest removed, as for an event recorded before digests existed; force too.
    forge(
        &ns,
        "stop",
        r#"[{"op":"remove","path":"/status/actionsDigest"}]"#,
    );
    let message = undo_answered(&events, &ns, "stop", "force").await;
    assert!(message.contains("carries no actionsDigest"), "{message}");

    // Nothing was applied: every object as the emergency left it, byte for byte, the HPA not
    // even rewritten.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(snapshot(&client, &ns).await, stopped);
    assert_eq!(
        Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &ns)
            .get("web")
            .await
            .unwrap()
            .resource_version(),
        hpa_version
    );
    let e = events.get("stop").await.unwrap();
    assert!(
        e.status.unwrap().actions.iter().all(|a| !a.undone),
        "an action was marked undone"
    );
    let notes = eventually("the refusal Events", TIMEOUT, || async {
        let notes = warnings(&client, &ns, "stop", "UntrustedActions").await;
        (!notes.is_empty()).then_some(notes)
    })
    .await;
    assert!(
        notes.iter().any(|n| n.contains("does not match")),
        "{notes:?}"
    );
}

/// An emergency (route cut, HPA pinned, scaled to zero) whose operator dies after the first
/// change; a new operator resumes it, and its undo restores route, HPA, Deployment and Service
/// exactly as they were before the emergency.
#[tokio::test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the operator's crash points: cargo test --features failpoints"
)]
async fn an_emergency_killed_between_its_steps_is_undone_exactly() {
    let Some((client, ns)) = emergency_setup("tu-killed").await else {
        return;
    };
    let before = snapshot(&client, &ns).await;
    let doomed =
        Operator::start_with_env(&ns, &[], &[("FRYS_FAILPOINT", "abort-after-change-1")]).await;
    let (ok, _, err) = kubectl_apply(&ns, &emergency_event("stop"));
    assert!(ok, "{err}");
    let exit = doomed.exited(TIMEOUT).await;
    assert!(
        !exit.success(),
        "the operator should have died at the failpoint"
    );

    // Killed between the steps: the route is cut, the HPA and the scale are not changed yet.
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    let stuck = events.get("stop").await.unwrap().status.unwrap();
    assert_eq!(stuck.phase, EventPhase::Executing, "{stuck:?}");
    let mid = snapshot(&client, &ns).await;
    assert_ne!(mid[0], before[0], "the route was not cut before the crash");
    assert_eq!(
        mid[1..],
        before[1..],
        "more than the route changed before the crash"
    );

    let _operator = Operator::start(&ns, &[]).await;
    let done = support::finished_event("the resumed emergency finished", TIMEOUT, &events, |e| {
        e.name_any() == "stop"
    })
    .await
    .status
    .unwrap();
    let kinds: Vec<&str> = done.actions.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["HTTPRoute", "HorizontalPodAutoscaler", "Deployment"],
        "every step recorded, the one done before the crash too: {:?}",
        done.actions
    );
    assert!(done.actions.iter().all(|a| a.applied_at.is_some()));
    let stopped = snapshot(&client, &ns).await;
    assert_eq!(stopped[3].1, "0", "scaled to zero");

    let message = undo_answered(&events, &ns, "stop", "true").await;
    assert!(message.starts_with("undone: 3 action(s)"), "{message}");
    assert_eq!(snapshot(&client, &ns).await, before, "not restored exactly");
}

/// Verification without Prometheus (performance skipped) of `spec` on target web.
async fn run_verify(
    client: &Client,
    ns: &str,
    spec: &RollbackPolicySpec,
    allow: &[String],
) -> VerificationReport {
    let config = OperatorConfig::defaults();
    let effective = effective(spec, &config);
    let http = frys_rollback::egress::client_builder().build().unwrap();
    let remediation = Remediation::VersionRollback(Default::default());
    let input = VerifyInput {
        namespace: ns,
        target: "web",
        deployment: None,
        policy: spec,
        effective: &effective,
        remediation: &remediation,
        completed_at: jiff::Timestamp::now(),
        expected_weights: None,
        pod_regex: None,
        health_check_url: None,
    };
    let deps = VerifyDeps::<PrometheusClient> {
        client: client.clone(),
        metrics: None,
        http: &http,
        concurrency: 4,
        allow_probe_urls: allow,
    };
    let report = verify(&input, &deps).await;
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    report
}

async fn sim_namespace(prefix: &str) -> Option<(Client, String)> {
    if !support::require_simulator(prefix) {
        return None;
    }
    let client = env().client().await;
    let ns = support::namespace(&client, prefix).await;
    support::create_deployment(&client, &ns, "web", "demo:v1").await;
    support::create_service(&client, &ns, "web", json!({"app": "web"})).await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    eventually("two ready endpoints", TIMEOUT, || async {
        let list = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await
            .ok()?;
        (ready_addresses(&list.items).len() == 2).then_some(())
    })
    .await;
    Some((client, ns))
}

/// A health endpoint that fails at first and recovers a few seconds later: the probe retries
/// and the check passes.
#[tokio::test]
async fn a_health_probe_that_fails_then_recovers_passes() {
    let Some((client, ns)) = sim_namespace("tu-retry").await else {
        return;
    };
    let spec: RollbackPolicySpec = yaml_serde::from_str(
        "targetRef: {name: web}\nmetrics: [{name: errors, preset: errorRate}]\nstrategies: [{type: VersionRollback}]\nverification:\n  timeout: 30s\n  healthCheck: {service: web, port: 8080, path: /health}\n",
    )
    .unwrap();
    support::sim::inject(json!({"namespace": ns, "app": "web", "failPaths": ["/health"]})).await;
    let recover = {
        let ns = ns.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            support::sim::clear(&ns, "web").await;
        })
    };
    let report = run_verify(&client, &ns, &spec, &[]).await;
    recover.await.unwrap();
    let health = report
        .checks
        .iter()
        .find(|c| c.name == "application-health")
        .unwrap();
    assert_eq!(health.status, CheckStatus::Passed, "{health:?}");
    let rounds: u32 = health.details["rounds"].parse().unwrap();
    assert!(
        rounds >= 2,
        "it passed at once: the fault did not hold {health:?}"
    );
    // Told by status, content type and size only.
    assert!(
        health
            .details
            .iter()
            .filter(|(k, _)| k.starts_with("endpoint "))
            .all(|(_, v)| v.starts_with("200 in ") && v.contains("bytes") && !v.contains("status")),
        "{health:?}"
    );
}

/// A local HTTP server that counts requests and answers 200.
async fn counting_server() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = socket.read(&mut buf).await;
                let body = "secret internal answer";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, hits)
}

/// A Service without a selector and a hand-written EndpointSlice pointing elsewhere (here a
/// local server; in a cluster another namespace's pod or a node), once with a targetRef that
/// names a real pod of the namespace: not probed unless the operator allows the URL.
#[tokio::test]
async fn a_probe_outside_the_namespace_pods_is_refused_unless_allowed() {
    let Some((client, ns)) = sim_namespace("tu-reach").await else {
        return;
    };
    let (port, hits) = counting_server().await;
    let pod = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items[0]
        .name_any();
    let objects = format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: ext}}
spec: {{ports: [{{port: {port}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: ext-manual, labels: {{kubernetes.io/service-name: ext}}}}
addressType: IPv4
ports: [{{port: {port}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: ext-pod}}
spec: {{ports: [{{port: {port}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: ext-pod-manual, labels: {{kubernetes.io/service-name: ext-pod}}}}
addressType: IPv4
ports: [{{port: {port}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}, targetRef: {{kind: Pod, name: {pod}}}}}]
"#
    );
    let (ok, _, err) = kubectl_apply(&ns, &objects);
    assert!(ok, "{err}");
    let spec: RollbackPolicySpec = yaml_serde::from_str(&format!(
        "targetRef: {{name: web}}\nmetrics: [{{name: errors, preset: errorRate}}]\nstrategies: [{{type: VersionRollback}}]\nverification:\n  timeout: 10s\n  checks:\n    - {{name: outside, category: Dependencies, http: {{service: ext, port: {port}, path: /x}}}}\n    - {{name: forged-pod, category: Dependencies, http: {{service: ext-pod, port: {port}, path: /x}}}}\n    - {{name: own-pods, category: Dependencies, http: {{service: web, port: 8080, path: /x}}}}\n"
    ))
    .unwrap();
    let status_of = |r: &VerificationReport, name: &str| {
        let c = r.checks.iter().find(|c| c.name == name).unwrap();
        (c.status, c.details.clone())
    };

    // Not allowed: refused before connecting, with the reason; the namespace's pods are fine.
    let report = run_verify(&client, &ns, &spec, &[]).await;
    let (status, d) = status_of(&report, "outside");
    assert_eq!(status, CheckStatus::Failed, "{d:?}");
    let text = &d["endpoint 127.0.0.1"];
    assert!(
        text.starts_with("refused: 127.0.0.1 is not the address of a Pod")
            && text.contains("--allow-probe-url"),
        "{text}"
    );
    let (status, d) = status_of(&report, "forged-pod");
    assert_eq!(status, CheckStatus::Failed, "{d:?}");
    assert!(
        d["endpoint 127.0.0.1"].contains(&format!("is not an address of Pod {pod}")),
        "{d:?}"
    );
    assert_eq!(status_of(&report, "own-pods").0, CheckStatus::Passed);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the refused address was contacted"
    );

    // Allowed by address, then by Service name: probed, and only status, type and size told.
    for allow in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://ext.{ns}.svc:{port}"),
    ] {
        let before = hits.load(Ordering::SeqCst);
        let report = run_verify(&client, &ns, &spec, std::slice::from_ref(&allow)).await;
        let (status, d) = status_of(&report, "outside");
        assert_eq!(status, CheckStatus::Passed, "{allow}: {d:?}");
        assert!(
            hits.load(Ordering::SeqCst) > before,
            "{allow}: not contacted"
        );
        let text = &d["endpoint 127.0.0.1"];
        assert!(text.contains("(text/plain, 22 bytes)"), "{text}");
        let all = serde_json::to_string(&report).unwrap();
        assert!(
            !all.contains("secret internal answer"),
            "a body reached the report"
        );
    }
}
