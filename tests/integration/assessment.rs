//! Health assessment and decisions end to end: the simulator's metrics through the real
//! Prometheus into policy status and RollbackEvents (issue: assessment and decision engine).

use std::time::Duration;

use frys_rollback::api::{IncidentClass, RollbackEvent, RollbackPolicy, StrategyKind};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, api::ListParams};
use serde_json::json;

use crate::support::{
    self, Operator, condition, env, eventually, kubectl_apply, prometheus::PrivatePrometheus,
};

const TIMEOUT: Duration = Duration::from_secs(90);

/// A policy watching the error rate every second over a 5s window, with the full ladder.
fn policy(name: &str, target: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: rollback.frys.io/v1alpha1
kind: RollbackPolicy
metadata: {{name: {name}}}
spec:
  targetRef: {{name: {target}}}
  interval: 1s
  rateWindow: 5s
  consecutiveFailures: 3
  cooldown: 1m
  metrics:
    - {{name: errors, preset: errorRate, warning: 0.02, critical: 0.05}}
  strategies:
    - type: TrafficShifting
      trafficShifting: {{httpRoute: web, from: web-canary, to: web-stable}}
    - type: VersionRollback
    - type: EmergencyShutdown
      minSeverity: Unhealthy
{extra}"#
    )
}

#[tokio::test]
async fn a_healthy_workload_stays_healthy() {
    let Some((client, ns, _operator)) = support::operator_namespace("as-healthy", &[]).await else {
        return;
    };
    support::create_deployment(&client, &ns, "web", "demo:v1").await;
    let (ok, _, err) = kubectl_apply(&ns, &policy("web", "web", ""));
    assert!(ok, "{err}");
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &ns);
    let status = eventually("a conclusive healthy assessment", TIMEOUT, || async {
        let p = policies.get("web").await.ok()?;
        let (healthy, _, _) = condition(&p, "Healthy")?;
        (healthy == "True").then_some(p.status?)
    })
    .await;
    let health = status.health.unwrap();
    // Errors under half the warning threshold: comfortably inside it, so at least 95 (see
    // assess::score).
    assert!(health.metrics["errors"] < 0.01, "{:?}", health.metrics);
    assert!(health.score >= 95.0, "score {}", health.score);
    assert_eq!(status.failure_streak, Some(0));
    assert!(status.incident.is_none());

    // It stays that way: several more evaluations, no incident, no event.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let p = policies.get("web").await.unwrap();
    assert_eq!(condition(&p, "Healthy").unwrap().0, "True");
    assert_eq!(condition(&p, "MetricsAvailable").unwrap().0, "True");
    assert_eq!(condition(&p, "Degraded").unwrap().0, "False");
    let events = Api::<RollbackEvent>::namespaced(client, &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        events.items.is_empty(),
        "unexpected events: {:?}",
        events.items
    );
}

#[tokio::test]
async fn a_bad_release_opens_a_release_incident_and_one_event() {
    let Some((client, ns, _operator)) = support::operator_namespace("as-release", &[]).await else {
        return;
    };
    support::create_deployment(&client, &ns, "web", "demo:v1").await;
    let (ok, _, err) = kubectl_apply(&ns, &policy("web", "web", ""));
    assert!(ok, "{err}");
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &ns);
    eventually("healthy before the release", TIMEOUT, || async {
        let p = policies.get("web").await.ok()?;
        (condition(&p, "Healthy")?.0 == "True").then_some(())
    })
    .await;

    // Release v2, which the simulator serves with a 30 % error rate.
    support::set_image(
        &Api::<Deployment>::namespaced(client.clone(), &ns),
        "web",
        "demo:v2-faulty",
    )
    .await;

    // The streak grows one failing evaluation at a time; Degraded only once it reaches 3.
    let streaks = std::sync::Mutex::new(Vec::<(u32, bool)>::new());
    let status = eventually("Degraded after 3 failing evaluations", TIMEOUT, || async {
        let p = policies.get("web").await.ok()?;
        let status = p.status.clone()?;
        let streak = status.failure_streak.unwrap_or(0);
        let degraded = condition(&p, "Degraded")?.0 == "True";
        let mut seen = streaks.lock().unwrap();
        if seen.last() != Some(&(streak, degraded)) {
            seen.push((streak, degraded));
        }
        degraded.then_some(status)
    })
    .await;
    let streaks = streaks.into_inner().unwrap();
    for (streak, degraded) in &streaks {
        assert_eq!(
            *degraded,
            *streak >= 3,
            "Degraded at streak {streak}: {streaks:?}"
        );
    }
    let incident = status.incident.expect("incident");
    assert_eq!(incident.class, IncidentClass::Release);
    assert_eq!(
        incident.tried,
        [StrategyKind::VersionRollback],
        "Release skips the lighter rung"
    );
    let health = status.health.unwrap();
    assert!(health.metrics["errors"] > 0.05, "{:?}", health.metrics);

    // Exactly one RollbackEvent, carrying the assessment and the class, owned by the policy.
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    let list = eventually("the RollbackEvent", TIMEOUT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        (!list.items.is_empty()).then_some(list)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let list_after = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        list_after.items.len(),
        1,
        "more than one event: {:?}",
        list_after.items
    );
    let event = &list.items[0];
    assert_eq!(
        Some(event.metadata.name.clone().unwrap()),
        incident.active_event
    );
    assert_eq!(event.spec.strategy, StrategyKind::VersionRollback);
    assert_eq!(event.spec.type_, frys_rollback::api::EventType::Automatic);
    let assessment = event.spec.assessment.as_ref().unwrap();
    assert_eq!(assessment.class, Some(IncidentClass::Release));
    assert!(
        assessment
            .issues
            .iter()
            .any(|i| i.metric == "errors" && i.threshold == Some(0.05)),
        "{assessment:?}"
    );
    assert_eq!(
        event.metadata.owner_references.as_ref().unwrap()[0].name,
        "web"
    );
}

#[tokio::test]
async fn prometheus_down_means_metrics_unavailable_and_no_remediation() {
    if !support::require_simulator("prometheus_down") {
        return;
    }
    let mut prometheus = PrivatePrometheus::start().await;
    let Some((client, ns, _operator)) = support::operator_namespace(
        "as-promdown",
        &["--prometheus-url", prometheus.url.as_str()],
    )
    .await
    else {
        return;
    };
    support::create_deployment(&client, &ns, "web", "demo:v1").await;
    let (ok, _, err) = kubectl_apply(&ns, &policy("web", "web", ""));
    assert!(ok, "{err}");
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &ns);
    eventually("metrics available first", TIMEOUT, || async {
        let p = policies.get("web").await.ok()?;
        (condition(&p, "Healthy")?.0 == "True").then_some(())
    })
    .await;

    prometheus.stop().await;
    // The workload breaks while nobody can see it.
    support::sim::inject(json!({"namespace": ns, "app": "web", "errorRate": 0.5})).await;
    let (_, reason, message) = eventually("MetricsAvailable=False", TIMEOUT, || async {
        let p = policies.get("web").await.ok()?;
        let c = condition(&p, "MetricsAvailable")?;
        (c.0 == "False").then_some(c)
    })
    .await;
    assert_eq!(reason, "PrometheusUnreachable", "{message}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let p = policies.get("web").await.unwrap();
    let status = p.status.unwrap();
    assert_eq!(
        status.failure_streak,
        Some(0),
        "inconclusive evaluations grew the streak"
    );
    assert!(status.incident.is_none());
    let events = Api::<RollbackEvent>::namespaced(client, &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        events.items.is_empty(),
        "remediated blind: {:?}",
        events.items
    );
    support::sim::clear(&ns, "web").await;
}

#[tokio::test]
async fn a_bad_query_makes_the_policy_not_ready() {
    let client = env().client().await;
    support::install_crds(&client).await;
    let ns = support::namespace(&client, "as-badquery").await;
    let _operator = Operator::start(&ns, &[]).await;
    support::create_deployment(&client, &ns, "web", "demo:v1").await;
    let yaml = policy("web", "web", "").replace(
        "    - {name: errors, preset: errorRate, warning: 0.02, critical: 0.05}",
        "    - {name: p99, query: 'histogram_quantile(0.99, sum by (le) (rate(x_bucket[{{ window }}]))', critical: 2}",
    );
    let (ok, _, err) = kubectl_apply(&ns, &yaml);
    assert!(ok, "{err}");
    let policies: Api<RollbackPolicy> = Api::namespaced(client, &ns);
    let (status, _, message) = eventually("Ready=False InvalidQuery", TIMEOUT, || async {
        let c = condition(&policies.get("web").await.ok()?, "Ready")?;
        (c.1 == "InvalidQuery").then_some(c)
    })
    .await;
    assert_eq!(status, "False");
    assert!(message.starts_with("metric \"p99\": "), "{message}");
    assert!(
        message.contains("unclosed left parenthesis"),
        "the parser's message: {message}"
    );
}

/// A bearer token from a Secret, checked by a small proxy in front of Prometheus.
#[tokio::test]
async fn bearer_token_from_a_secret_reaches_prometheus() {
    if !support::require_simulator("as-auth") {
        return;
    }
    let upstream = env().prometheus_url.clone().unwrap();
    let proxy = support::prometheus::AuthProxy::start(&upstream, &["Bearer s3cret"]).await;
    // A per-policy URL needs the operator's allow-list.
    let Some((client, ns, _operator)) =
        support::operator_namespace("as-auth", &["--allow-prometheus-url", &proxy.url]).await
    else {
        return;
    };
    support::create_deployment(&client, &ns, "web", "demo:v1").await;
    support::create_secret(&client, &ns, "prom-token", json!({"token": "s3cret\n"})).await;
    let with_auth = |name: &str, key: &str| {
        policy(
            name,
            name,
            &format!(
                "  prometheus: {{url: '{}', bearerTokenSecretRef: {{name: prom-token, key: {key}}}}}\n",
                proxy.url
            ),
        )
    };
    support::create_deployment(&client, &ns, "api", "demo:v1").await;
    let (ok, _, err) = kubectl_apply(&ns, &with_auth("web", "token"));
    assert!(ok, "{err}");
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &ns);
    eventually(
        "healthy through the authenticating proxy",
        TIMEOUT,
        || async {
            let p = policies.get("web").await.ok()?;
            (condition(&p, "Healthy")?.0 == "True").then_some(())
        },
    )
    .await;
    assert!(
        proxy.authorized() > 0,
        "no authorized request reached the proxy"
    );

    // A missing key is explained, naming the Secret and the key.
    let (ok, _, err) = kubectl_apply(&ns, &with_auth("api", "nope"));
    assert!(ok, "{err}");
    let (_, reason, message) = eventually(
        "MetricsAvailable=False for a missing key",
        TIMEOUT,
        || async {
            let c = condition(&policies.get("api").await.ok()?, "MetricsAvailable")?;
            (c.0 == "False").then_some(c)
        },
    )
    .await;
    assert_eq!(reason, "SecretKeyMissing", "{message}");
    assert!(
        message.contains("prom-token") && message.contains("nope"),
        "{message}"
    );
    assert_eq!(
        proxy.refused(),
        0,
        "the proxy refused a request: the token was not sent right"
    );
}

/// The operator's own metrics: N policies on one template cost one query per tick.
#[tokio::test]
async fn policies_sharing_a_template_share_one_query_per_tick() {
    const POLICIES: usize = 6;
    let Some((client, ns, operator)) = support::operator_namespace("as-shared", &[]).await else {
        return;
    };
    for i in 0..POLICIES {
        let name = format!("app{i}");
        support::create_deployment(&client, &ns, &name, "demo:v1").await;
        let (ok, _, err) = kubectl_apply(
            &ns,
            &policy(&name, &name, "").replace("interval: 1s", "interval: 2s"),
        );
        assert!(ok, "{err}");
    }
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &ns);
    eventually("every policy evaluated", TIMEOUT, || async {
        let list = policies.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .all(|p| condition(p, "MetricsAvailable").is_some_and(|c| c.0 == "True"))
            .then_some(())
    })
    .await;

    let queries = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("frys_rollback_prometheus_queries_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = queries(&operator.metrics().await);
    let ticks = 5;
    tokio::time::sleep(Duration::from_secs(2 * ticks)).await;
    let after = queries(&operator.metrics().await);
    let per_tick = (after - before) / ticks as f64;
    eprintln!(
        "{POLICIES} policies on one template: {} queries in {ticks} ticks ({per_tick:.2} per tick)",
        after - before
    );
    // One query per tick; the sampling edges may catch one tick more.
    assert!(
        after - before >= (ticks - 1) as f64,
        "no queries? {before} -> {after}"
    );
    assert!(
        after - before <= (ticks + 1) as f64,
        "{POLICIES} policies cost {per_tick:.2} queries per tick"
    );
}
