//! Time isolation of the evaluator (issue 10, part 4): an endpoint that never answers delays only
//! its own policies; a Prometheus outage during an incident loses nothing and repeats nothing;
//! `/healthz` fails when the evaluator stops making progress.

use std::time::{Duration, Instant};

use frys_rollback::api::{RollbackEvent, RollbackPolicy};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, api::ListParams};

use crate::support::{
    self, Operator, condition, eventually, kubectl_apply, prometheus::PrivatePrometheus,
};

const TIMEOUT: Duration = Duration::from_secs(90);

/// A TCP server that accepts connections and never answers (a blackholed Prometheus).
async fn blackhole() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

fn policy(name: &str, prometheus: &str) -> String {
    format!(
        "apiVersion: rollback.frys.io/v1alpha1\nkind: RollbackPolicy\nmetadata: {{name: {name}}}\nspec:\n  targetRef: {{name: {name}}}\n{prometheus}  interval: 1s\n  rateWindow: 5s\n  metrics: [{{name: errors, preset: errorRate, warning: 0.02, critical: 0.05}}]\n  strategies: [{{type: VersionRollback}}]\n"
    )
}

/// When the operator last evaluated a policy, from its freshness metric (the status'
/// `evaluatedAt` is refreshed only when something changed, see `decide::news`).
async fn evaluated_at(
    operator: &support::Operator,
    ns: &str,
    name: &str,
) -> Option<jiff::Timestamp> {
    let metrics = operator.metrics().await;
    let series = format!(
        "frys_rollback_last_evaluation_timestamp_seconds{{policy_namespace=\"{ns}\",policy=\"{name}\"}} "
    );
    let seconds: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))?
        .trim()
        .parse()
        .ok()?;
    jiff::Timestamp::from_millisecond((seconds * 1000.0) as i64).ok()
}

/// Tenant A's `spec.prometheus.url` accepts connections and never answers (each query runs
/// into its 10 s timeout, ten intervals); tenant B's policy on the real Prometheus keeps its 1 s
/// interval meanwhile. Before per-endpoint evaluation, B waited for A's timeouts every tick.
///
/// One namespace: the tests' operator is namespace-scoped (a cluster-wide one would act on the
/// other tests' namespaces). The evaluator separates work by endpoint, never by namespace.
#[tokio::test]
async fn a_blackholed_endpoint_does_not_delay_other_policies() {
    if !support::require_simulator("a_blackholed_endpoint_does_not_delay_other_policies")
        || !support::require_prometheus("a_blackholed_endpoint_does_not_delay_other_policies")
    {
        return;
    }
    let hole = blackhole().await;
    let Some((client, ns, operator)) =
        support::operator_namespace("iso-blackhole", &["--allow-prometheus-url", &hole]).await
    else {
        return;
    };
    for name in ["tenant-a", "tenant-b"] {
        support::create_deployment(&client, &ns, name, "demo:v1").await;
    }
    let (ok, _, err) = kubectl_apply(
        &ns,
        &policy("tenant-a", &format!("  prometheus: {{url: '{hole}'}}\n")),
    );
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl_apply(&ns, &policy("tenant-b", ""));
    assert!(ok, "{err}");
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &ns);
    eventually("tenant-b evaluated", TIMEOUT, || async {
        evaluated_at(&operator, &ns, "tenant-b").await
    })
    .await;

    // Watch B for longer than one of A's timeouts: successive evaluations stay ~1 s apart.
    let mut seen: Vec<jiff::Timestamp> = vec![];
    let watching = Instant::now();
    while watching.elapsed() < Duration::from_secs(15) {
        if let Some(at) = evaluated_at(&operator, &ns, "tenant-b").await
            && seen.last() != Some(&at)
        {
            seen.push(at);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gaps: Vec<f64> = seen
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64())
        .collect();
    let widest = gaps.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "tenant-b beside a blackholed endpoint: {} evaluations in 15 s, widest gap {widest:.1} s",
        seen.len()
    );
    assert!(
        seen.len() >= 10,
        "tenant-b evaluated only {} times in 15 s: {gaps:?}",
        seen.len()
    );
    assert!(widest <= 3.0, "tenant-b waited {widest:.1} s: {gaps:?}");

    // A is told why, and B stays healthy.
    let (_, reason, message) = eventually("tenant-a MetricsAvailable=False", TIMEOUT, || async {
        let p = policies.get("tenant-a").await.ok()?;
        let c = condition(&p, "MetricsAvailable")?;
        (c.0 == "False").then_some(c)
    })
    .await;
    assert_eq!(reason, "PrometheusTimeout", "{message}");
    let b = policies.get("tenant-b").await.unwrap();
    assert_eq!(condition(&b, "MetricsAvailable").unwrap().0, "True");
}

/// The only Prometheus stops while an incident's remediation runs, and comes back: the
/// incident is neither lost nor opened again, the rollback happens once, one RollbackEvent.
#[tokio::test]
async fn prometheus_restarted_during_an_incident() {
    if !support::require_simulator("prometheus_restarted_during_an_incident") {
        return;
    }
    let mut prometheus = PrivatePrometheus::start().await;
    let Some((client, ns, _operator)) = support::operator_namespace(
        "iso-promrestart",
        &["--prometheus-url", prometheus.url.as_str()],
    )
    .await
    else {
        return;
    };
    support::create_deployment(&client, &ns, "web", "demo:v1").await;
    let verification = "  consecutiveFailures: 3\n  verification: {stabilizationDelay: 2s, timeout: 2m, consecutivePasses: 2}\n";
    let (ok, _, err) = kubectl_apply(&ns, &policy("web", verification));
    assert!(ok, "{err}");
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &ns);
    eventually("healthy before the release", TIMEOUT, || async {
        let p = policies.get("web").await.ok()?;
        (condition(&p, "Healthy")?.0 == "True").then_some(())
    })
    .await;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    support::set_image(&deployments, "web", "demo:v2-faulty").await;
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    let event = eventually("the incident's RollbackEvent", TIMEOUT, || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await;
    let event_name = event.metadata.name.clone().unwrap();

    // Outage, mid-remediation.
    prometheus.stop().await;
    eventually("MetricsAvailable=False", TIMEOUT, || async {
        let p = policies.get("web").await.ok()?;
        (condition(&p, "MetricsAvailable")?.0 == "False").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during = policies.get("web").await.unwrap().status.unwrap();
    let incident = during
        .incident
        .as_ref()
        .expect("the incident survives the outage");
    let count = |list: kube::core::ObjectList<RollbackEvent>| list.items.len();
    assert_eq!(
        count(events.list(&ListParams::default()).await.unwrap()),
        1,
        "a second event during the outage"
    );
    let opened = incident.started_at.clone();

    prometheus.restart().await;
    let finished =
        support::finished_event("the remediation finished", TIMEOUT, &events, |_| true).await;
    assert_eq!(finished.metadata.name.as_deref(), Some(event_name.as_str()));
    let phase = finished.status.as_ref().unwrap().phase;
    assert_eq!(
        phase,
        frys_rollback::api::EventPhase::Succeeded,
        "{:?}",
        finished.status
    );
    // Evaluations resume on the restarted Prometheus.
    eventually(
        "MetricsAvailable=True after the restart",
        TIMEOUT,
        || async {
            let p = policies.get("web").await.ok()?;
            (condition(&p, "MetricsAvailable")?.0 == "True").then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Nothing applied twice: one event, one rollback (revision 1 -> 2 -> 3), the same incident.
    assert_eq!(
        count(events.list(&ListParams::default()).await.unwrap()),
        1,
        "more than one RollbackEvent"
    );
    support::wait_for_revision(&deployments, "web", "3").await;
    let web = deployments.get("web").await.unwrap();
    let image = web.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some("demo:v1"));
    let after = policies.get("web").await.unwrap().status.unwrap();
    if let Some(incident) = &after.incident {
        assert_eq!(incident.started_at, opened, "the incident was opened again");
    }
    assert_eq!(
        after.last_rollback.as_ref().map(|r| r.event.as_str()),
        Some(event_name.as_str()),
        "{after:?}"
    );
}

/// `/healthz` fails, with a reason, once the evaluator stops making progress (a failpoint
/// stalls it after its first few ticks), and not before.
#[tokio::test]
async fn healthz_fails_when_the_evaluator_stalls() {
    if !support::require_simulator("healthz_fails_when_the_evaluator_stalls") {
        return;
    }
    let client = support::env().client().await;
    support::install_crds(&client).await;
    let ns = support::namespace(&client, "iso-healthz").await;
    let operator = Operator::start_with_env(
        &ns,
        &["--interval", "1s"],
        &[("FRYS_FAILPOINT", "evaluator-stall")],
    )
    .await;
    let healthz = format!("{}/healthz", operator.http);
    let get = || async {
        let r = reqwest::get(&healthz).await.ok()?;
        Some((r.status().as_u16(), r.text().await.ok()?))
    };
    assert_eq!(get().await.map(|r| r.0), Some(200), "healthy at start");
    let started = Instant::now();
    let (_, body) = eventually("/healthz 503", TIMEOUT, || async {
        get().await.filter(|r| r.0 == 503)
    })
    .await;
    assert!(
        body.starts_with("the evaluator made no progress for"),
        "{body}"
    );
    // 5 s of ticks, then 10 s without one (the floor of 3 intervals): not earlier.
    assert!(
        started.elapsed() >= Duration::from_secs(8),
        "unhealthy after {:?}: {body}",
        started.elapsed()
    );
}
