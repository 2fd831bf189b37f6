//! Verification of a remediation against the simulator: real EndpointSlices, real pods answering
//! HTTP, a real Prometheus scraping their metrics.

use std::{collections::BTreeMap, time::Duration};

use frys_rollback::{
    api::{
        CheckResult, CheckStatus, EnvironmentSwitchSpec, RollbackPolicySpec, VerificationReport,
        VerificationStatus,
    },
    config::{OperatorConfig, effective},
    prometheus::{Endpoint, PrometheusClient},
    strategy::{self, Cluster, Kind, Remediation},
    verify::{VerifyDeps, VerifyInput, expected_weights, rules::ready_addresses, verify},
};
use k8s_openapi::api::{apps::v1::Deployment, discovery::v1::EndpointSlice};
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::support::{self, deployment, env, eventually, prometheus::query_scalar};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A policy with the error-rate signal, the health endpoint, a PromQL dependency check and an
/// HTTP consistency check; verification bounded by 15s.
fn policy(target: &str) -> RollbackPolicySpec {
    yaml_serde::from_str(&format!(
        r#"
targetRef: {{name: {target}}}
interval: 1s
metrics:
  - {{name: errors, preset: errorRate}}
strategies: [{{type: VersionRollback}}]
verification:
  timeout: 15s
  consecutivePasses: 2
  healthCheck: {{service: web, port: 8080, path: /health}}
  checks:
    - name: traffic-flows
      category: Dependencies
      promql: 'sum(rate(http_requests_total{{namespace="{{{{ namespace }}}}"}}[{{{{ window }}}}]))'
    - name: consistency
      category: DataConsistency
      http: {{service: web, port: 8080, path: /consistency}}
"#
    ))
    .unwrap()
}

/// Waits until Service web has `n` ready endpoints and Prometheus has scraped the pods' traffic.
async fn wait_ready(client: &Client, ns: &str, n: usize) {
    wait_endpoints(client, ns, "web", n).await;
    let prometheus = env().prometheus_url.clone().expect("PROMETHEUS_URL");
    let rate = format!(r#"sum(rate(http_requests_total{{namespace="{ns}"}}[5s]))"#);
    eventually("request rate in Prometheus", TIMEOUT, || async {
        (query_scalar(&prometheus, &rate).await? > 0.0).then_some(())
    })
    .await;
}

async fn wait_endpoints(client: &Client, ns: &str, service: &str, n: usize) {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let label = format!("kubernetes.io/service-name={service}");
    eventually(
        &format!("ready endpoints of {service}"),
        TIMEOUT,
        || async {
            let list = slices
                .list(&ListParams::default().labels(&label))
                .await
                .ok()?;
            (ready_addresses(&list.items).len() == n).then_some(())
        },
    )
    .await;
}

/// A namespace with Deployment web (`image`, 2 replicas) behind Service web, ready and scraped.
async fn setup(prefix: &str, image: &str) -> Option<(Client, String)> {
    if !support::require_simulator(prefix) {
        return None;
    }
    let client = env().client().await;
    let ns = support::namespace(&client, prefix).await;
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment("web", image))
        .await
        .unwrap();
    support::create_service(&client, &ns, "web", json!({"app": "web"})).await;
    wait_ready(&client, &ns, 2).await;
    Some((client, ns))
}

/// Runs verification of `remediation` on target `target`, completed now.
async fn run(
    client: &Client,
    ns: &str,
    target: &str,
    spec: &RollbackPolicySpec,
    remediation: &Remediation,
    expected_weights: Option<BTreeMap<String, u64>>,
) -> VerificationReport {
    let url = env().prometheus_url.clone().expect("PROMETHEUS_URL");
    let config = OperatorConfig {
        prometheus_url: Some(url.clone()),
        ..OperatorConfig::defaults()
    };
    let effective = effective(spec, &config);
    let prometheus = PrometheusClient::new(&Endpoint::new(url)).unwrap();
    let http = reqwest::Client::new();
    let input = VerifyInput {
        namespace: ns,
        target,
        deployment: None,
        policy: spec,
        effective: &effective,
        remediation,
        completed_at: jiff::Timestamp::now(),
        expected_weights,
        pod_regex: None,
        health_check_url: None,
    };
    let deps = VerifyDeps {
        client: client.clone(),
        metrics: Some(&prometheus),
        http: &http,
        concurrency: config.verification_concurrency,
        allow_probe_urls: &[],
    };
    let report = verify(&input, &deps).await;
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    report
}

fn check<'a>(report: &'a VerificationReport, name: &str) -> &'a CheckResult {
    report
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#?}"))
}

fn statuses(report: &VerificationReport) -> Vec<(&str, CheckStatus)> {
    report
        .checks
        .iter()
        .map(|c| (c.name.as_str(), c.status))
        .collect()
}

fn rollback() -> Remediation {
    Remediation::VersionRollback(Default::default())
}

#[tokio::test]
async fn a_healthy_deployment_passes_every_applicable_check() {
    let Some((client, ns)) = setup("vf-healthy", "demo:v1").await else {
        return;
    };
    let report = run(&client, &ns, "web", &policy("web"), &rollback(), None).await;
    use CheckStatus::*;
    assert_eq!(
        statuses(&report),
        [
            ("availability", Passed),
            ("application-health", Passed),
            ("performance", Passed),
            ("traffic-flows", Passed),
            ("consistency", Passed),
            ("traffic-distribution", Skipped),
        ]
    );
    assert_eq!(report.overall_status, VerificationStatus::Passed);
    assert!(report.recommendations.is_empty());
    let health = check(&report, "application-health");
    let probes: Vec<_> = health
        .details
        .iter()
        .filter(|(k, _)| k.starts_with("endpoint 127."))
        .collect();
    assert_eq!(probes.len(), 2, "{:?}", health.details);
    assert!(probes.iter().all(|(_, v)| v.starts_with("200 in ")));
    let performance = check(&report, "performance");
    assert_eq!(performance.details["passes"], "2 of 2 in a row");
    assert!(performance.details["signal errors"].ends_with("(Ok)"));
    // Passing checks finish well before the 15s bound.
    assert!(report.duration_ms < 10_000, "{}", report.duration_ms);
}

#[tokio::test]
async fn a_failing_health_endpoint_fails_verification() {
    let Some((client, ns)) = setup("vf-unhealthy", "demo:v1").await else {
        return;
    };
    support::sim::inject(json!({"namespace": ns, "app": "web", "healthy": false})).await;
    let report = run(&client, &ns, "web", &policy("web"), &rollback(), None).await;
    let health = check(&report, "application-health");
    assert_eq!(health.status, CheckStatus::Failed);
    assert!(
        health.details["reason"].contains("2 of 2 endpoints did not answer 2xx"),
        "{:?}",
        health.details
    );
    assert!(health.details.values().any(|v| v.starts_with("503 in ")));
    assert_eq!(report.overall_status, VerificationStatus::Failed);
    assert!(
        report
            .recommendations
            .iter()
            .any(|r| r.starts_with("application-health failed (2 of 2 endpoints")),
        "{:?}",
        report.recommendations
    );
    // Bounded by the verification timeout (15s), with a little slack for requests in flight.
    assert!(report.duration_ms < 20_000, "{}", report.duration_ms);
}

#[tokio::test]
async fn a_failing_consistency_check_is_partial() {
    let Some((client, ns)) = setup("vf-partial", "demo:v1").await else {
        return;
    };
    support::sim::inject(json!({"namespace": ns, "app": "web", "failPaths": ["/consistency"]}))
        .await;
    let report = run(&client, &ns, "web", &policy("web"), &rollback(), None).await;
    use CheckStatus::*;
    assert_eq!(
        statuses(&report),
        [
            ("availability", Passed),
            ("application-health", Passed),
            ("performance", Passed),
            ("traffic-flows", Passed),
            ("consistency", Failed),
            ("traffic-distribution", Skipped),
        ]
    );
    assert_eq!(report.overall_status, VerificationStatus::Partial);
    assert_eq!(report.recommendations.len(), 1);
    assert!(report.recommendations[0].starts_with("consistency failed"));
}

#[tokio::test]
async fn a_faulty_image_fails_performance() {
    let Some((client, ns)) = setup("vf-faulty", "demo:v2-faulty").await else {
        return;
    };
    let report = run(&client, &ns, "web", &policy("web"), &rollback(), None).await;
    let performance = check(&report, "performance");
    assert_eq!(performance.status, CheckStatus::Failed);
    assert!(
        performance.details["signal errors"].ends_with("(Critical)"),
        "{:?}",
        performance.details
    );
    assert!(
        performance.details["reason"].starts_with("0 of 2 passing evaluations"),
        "{:?}",
        performance.details
    );
    // The pods still answer their health endpoint: only the signals tell.
    assert_eq!(
        check(&report, "application-health").status,
        CheckStatus::Passed
    );
    assert_eq!(report.overall_status, VerificationStatus::Failed);
    assert!(
        report
            .recommendations
            .iter()
            .any(|r| r.starts_with("performance failed")),
        "{:?}",
        report.recommendations
    );
}

/// Blue/green: the switched Service is checked (selector and endpoints), not the drained target.
#[tokio::test]
async fn an_environment_switch_is_verified_on_the_service() {
    if !support::require_simulator("vf-switch") {
        return;
    }
    let client = env().client().await;
    let ns = support::namespace(&client, "vf-switch").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    for color in ["green", "blue"] {
        let mut d = deployment(&format!("web-{color}"), "demo:v1");
        let spec = d.spec.as_mut().unwrap();
        spec.selector.match_labels = Some([("color".into(), color.into())].into());
        spec.template.metadata.as_mut().unwrap().labels =
            Some([("app".into(), "web".into()), ("color".into(), color.into())].into());
        deployments
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
    }
    // As the strategy left it: the Service selects blue.
    support::create_service(&client, &ns, "web", json!({"app": "web", "color": "blue"})).await;
    wait_ready(&client, &ns, 2).await;
    let switch = |standby: &str| {
        Remediation::EnvironmentSwitch(EnvironmentSwitchSpec {
            service: "web".into(),
            selector_key: "color".into(),
            active_value: "green".into(),
            standby_value: standby.into(),
            standby_ref: format!("web-{standby}"),
            scale_standby: false,
            ready_timeout: None,
        })
    };
    let spec = policy("web-green");
    let report = run(&client, &ns, "web-green", &spec, &switch("blue"), None).await;
    let availability = check(&report, "availability");
    assert_eq!(availability.status, CheckStatus::Passed);
    assert_eq!(availability.details["deployment"], "web-blue");
    assert_eq!(availability.details["service"], "web");
    let traffic = check(&report, "traffic-distribution");
    assert_eq!(traffic.status, CheckStatus::Passed, "{:?}", traffic.details);
    assert_eq!(traffic.details["selector"], "color=blue");
    assert_eq!(report.overall_status, VerificationStatus::Passed);

    // Had the selector been put back to green by someone else, traffic would not be as intended.
    let wrong = Remediation::EnvironmentSwitch(EnvironmentSwitchSpec {
        standby_value: "purple".into(),
        ..match switch("blue") {
            Remediation::EnvironmentSwitch(s) => s,
            _ => unreachable!(),
        }
    });
    let report = run(&client, &ns, "web-green", &spec, &wrong, None).await;
    let traffic = check(&report, "traffic-distribution");
    assert_eq!(traffic.status, CheckStatus::Failed);
    assert!(
        traffic.details["reason"].contains(r#"expected "purple""#),
        "{:?}",
        traffic.details
    );
    assert_eq!(report.overall_status, VerificationStatus::Partial);
}

/// Traffic shifting applied by the real strategy: the route reads back as the event's action
/// intended and the receiving backend has endpoints; a later edit of the weights is caught.
#[tokio::test]
async fn traffic_shifting_weights_are_read_back() {
    if !support::require_simulator("vf-shift") {
        return;
    }
    let client = env().client().await;
    support::install_route_crds(&client).await;
    let ns = support::namespace(&client, "vf-shift").await;
    for name in ["web-canary", "web-stable"] {
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &deployment(name, "demo:v1"))
            .await
            .unwrap();
        support::create_service(&client, &ns, name, json!({"app": name})).await;
        wait_endpoints(&client, &ns, name, 2).await;
    }
    let routes: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &Kind::HttpRoute.api_resource());
    let route: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web"},
        "spec": {"parentRefs": [{"name": "gateway"}], "rules": [{"backendRefs": [
            {"name": "web-canary", "port": 80, "weight": 50},
            {"name": "web-stable", "port": 80, "weight": 50}
        ]}]}
    }))
    .unwrap();
    routes.create(&PostParams::default(), &route).await.unwrap();

    let shift: Remediation = Remediation::TrafficShifting(
        serde_json::from_value(
            json!({"httpRoute": "web", "from": "web-canary", "to": "web-stable"}),
        )
        .unwrap(),
    );
    let applied = strategy::apply(&Cluster::new(client.clone(), &ns), &shift, "web-canary")
        .await
        .unwrap();
    let expected = expected_weights(&applied.actions);
    assert_eq!(
        expected,
        Some(BTreeMap::from([
            ("web-canary".into(), 0),
            ("web-stable".into(), 100)
        ]))
    );
    let mut spec = policy("web-canary");
    spec.verification
        .as_mut()
        .unwrap()
        .health_check
        .as_mut()
        .unwrap()
        .service = "web-stable".into();
    spec.verification.as_mut().unwrap().checks.clear();

    let report = run(&client, &ns, "web-canary", &spec, &shift, expected.clone()).await;
    assert_eq!(
        check(&report, "availability").details["service"],
        "web-stable"
    );
    let traffic = check(&report, "traffic-distribution");
    assert_eq!(traffic.status, CheckStatus::Passed, "{:?}", traffic.details);
    assert_eq!(traffic.details["weights"], "web-canary=0, web-stable=100");
    assert_eq!(report.overall_status, VerificationStatus::Passed);

    // Someone (a GitOps tool) puts weight back on the canary.
    routes
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 30}
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    let report = run(&client, &ns, "web-canary", &spec, &shift, expected).await;
    let traffic = check(&report, "traffic-distribution");
    assert_eq!(traffic.status, CheckStatus::Failed);
    assert_eq!(
        traffic.details["reason"],
        "web-canary has weight 30, expected 0"
    );
    assert_eq!(report.overall_status, VerificationStatus::Partial);
    assert!(report.recommendations[0].starts_with("traffic-distribution failed"));
}
