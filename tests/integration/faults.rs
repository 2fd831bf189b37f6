//! Faults injected in the middle of a remediation, each asserting that nothing is lost and
//! nothing is applied twice: the operator restarted while its step is Verifying, and the API
//! server unreachable (every connection cut) while the operator watches an incident.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use frys_rollback::api::{EventPhase, RollbackEvent, RollbackPolicy, StrategyKind};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

use crate::support::{self, Operator, condition, deployment, env, eventually, kubectl_apply};

const TIMEOUT: Duration = Duration::from_secs(120);

/// A two-rung ladder: a wrong escalation would show as an EmergencyShutdown event.
const POLICY: &str = r#"
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
    - type: VersionRollback
    - type: EmergencyShutdown
      minSeverity: Unhealthy
  verification: {stabilizationDelay: 8s, timeout: 1m}
"#;

/// A namespace with `web` on revision 1 under [`POLICY`], no operator yet.
async fn scene(
    prefix: &str,
) -> (
    String,
    Api<Deployment>,
    Api<RollbackPolicy>,
    Api<RollbackEvent>,
) {
    let client = env().client().await;
    support::install_crds(&client).await;
    let ns = support::namespace(&client, prefix).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &deployment("web", "demo:v1"))
        .await
        .unwrap();
    support::wait_for_revision(&deployments, "web", "1").await;
    let (ok, _, err) = kubectl_apply(&ns, POLICY);
    assert!(ok, "{err}");
    let policies = Api::namespaced(client.clone(), &ns);
    let events = Api::namespaced(client, &ns);
    (ns, deployments, policies, events)
}

/// Nothing lost, nothing repeated, 5 s after the first event finished: one event (the rollback,
/// Succeeded), the Deployment on the good image, the incident's fields intact, the rollback
/// patched once.
async fn one_rollback(
    ns: &str,
    deployments: &Api<Deployment>,
    policies: &Api<RollbackPolicy>,
    events: &Api<RollbackEvent>,
) {
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        phases(events).await,
        [(StrategyKind::VersionRollback, Some(EventPhase::Succeeded))],
        "one event, the rollback"
    );
    assert_eq!(
        support::image(&deployments.get("web").await.unwrap()),
        "demo:v1"
    );
    let status = policies.get("web").await.unwrap().status.unwrap();
    assert_eq!(
        status.last_rollback.as_ref().map(|l| l.strategy),
        Some(StrategyKind::VersionRollback),
        "{status:?}"
    );
    if let Some(incident) = &status.incident {
        assert_eq!(incident.attempts, 1, "{incident:?}");
        assert_eq!(incident.tried, [StrategyKind::VersionRollback]);
    }
    if env().request_log.is_some() {
        assert_eq!(
            support::operator_patches(ns, "deployments"),
            1,
            "the rollback was applied more than once"
        );
    }
}

async fn healthy(policies: &Api<RollbackPolicy>) {
    eventually("healthy before the release", TIMEOUT, || async {
        let p = policies.get("web").await.ok()?;
        (condition(&p, "Healthy")?.0 == "True").then_some(())
    })
    .await;
}

/// Every event and its phase, as the API server has them.
async fn phases(events: &Api<RollbackEvent>) -> Vec<(StrategyKind, Option<EventPhase>)> {
    let mut list = events.list(&ListParams::default()).await.unwrap().items;
    list.sort_by_key(|e| e.metadata.creation_timestamp.clone());
    list.iter()
        .map(|e| (e.spec.strategy, e.status.as_ref().map(|s| s.phase)))
        .collect()
}

/// Polls the events until the first one finished, asserting at every look that no second
/// event exists before it did; returns the first one's final phase.
async fn first_finishes_alone(events: &Api<RollbackEvent>) -> EventPhase {
    let started = Instant::now();
    loop {
        let seen = phases(events).await;
        if let Some((_, Some(phase))) = seen.first()
            && phase.is_finished()
        {
            return *phase;
        }
        assert!(
            seen.len() <= 1,
            "a second event before the first finished: {seen:?}"
        );
        assert!(
            started.elapsed() < TIMEOUT,
            "the first event never finished: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The operator is killed (SIGKILL) while its rollback is Verifying, and a new one starts.
/// The new one must see the Verifying event (caches synced before any decision, an event
/// missing from the cache read from the API server) and let it finish: no escalation to the
/// second rung, no second rollback.
#[tokio::test]
async fn a_restart_during_verifying_starts_no_second_event() {
    if !support::require_simulator("a_restart_during_verifying_starts_no_second_event") {
        return;
    }
    let (ns, deployments, policies, events) = scene("fault-verifying").await;

    let first = Operator::start(&ns, &[]).await;
    healthy(&policies).await;
    support::set_image(&deployments, "web", "demo:v2-faulty").await;
    eventually("the rollback is Verifying", TIMEOUT, || async {
        let seen = phases(&events).await;
        (seen.first()?.1 == Some(EventPhase::Verifying)).then_some(())
    })
    .await;
    first.kill().await;

    // Down for a few evaluation intervals, then a fresh process with empty caches.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _second = Operator::start(&ns, &[]).await;
    assert_eq!(first_finishes_alone(&events).await, EventPhase::Succeeded);

    // Healthy again on the restored template: nothing more happens.
    one_rollback(&ns, &deployments, &policies, &events).await;
}

/// A TCP proxy in front of the API server whose connections can all be cut at once (and new
/// ones refused) and then let through again: to the operator this is the control plane going
/// away mid-watch and coming back. The test control plane itself cannot be restarted in a
/// test: it starts with empty storage (tests/control-plane/README.md), and it serves every
/// test running in parallel.
struct Outage {
    address: String,
    up: watch::Sender<bool>,
    accepting: Arc<AtomicBool>,
}

impl Outage {
    async fn start(upstream: String) -> Outage {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (up, _) = watch::channel(true);
        let accepting = Arc::new(AtomicBool::new(true));
        let (tx, flag) = (up.clone(), accepting.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    drop(inbound); // refused while down
                    continue;
                }
                let mut down = tx.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut ri, mut wi) = inbound.into_split();
                    let (mut ro, mut wo) = outbound.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut ri, &mut wo) => {}
                        _ = tokio::io::copy(&mut ro, &mut wi) => {}
                        _ = down.wait_for(|up| !up) => {}
                    }
                });
            }
        });
        Outage {
            address,
            up,
            accepting,
        }
    }

    fn cut(&self) {
        self.accepting.store(false, Ordering::SeqCst);
        self.up.send_replace(false);
    }

    fn restore(&self) {
        self.up.send_replace(true);
        self.accepting.store(true, Ordering::SeqCst);
    }
}

/// The API server becomes unreachable right after the operator created its rollback event (its
/// watches break, its writes fail) for longer than the leader lease: the leader exits, and its
/// replacement (started as the kubelet would) carries on from what the API server holds: one
/// event, finished, the rollback applied once, the incident's fields in the policy status
/// intact.
#[tokio::test]
async fn an_api_outage_mid_incident_loses_nothing_and_repeats_nothing() {
    if !support::require_simulator("an_api_outage_mid_incident_loses_nothing_and_repeats_nothing") {
        return;
    }
    let (ns, deployments, policies, events) = scene("fault-outage").await;

    // The operator reaches the API server only through the proxy.
    let kubeconfig = std::fs::read_to_string(&env().kubeconfig).unwrap();
    let server = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("a server in the kubeconfig")
        .trim_matches('"')
        .to_owned();
    let upstream = server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    let outage = Outage::start(upstream.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let proxied = dir.path().join("kubeconfig");
    std::fs::write(&proxied, kubeconfig.replace(&upstream, &outage.address)).unwrap();
    let proxied_env = [("KUBECONFIG", proxied.to_str().unwrap())];
    let operator = Operator::start_with_env(&ns, &[], &proxied_env).await;
    healthy(&policies).await;

    support::set_image(&deployments, "web", "demo:v2-faulty").await;
    eventually("the rollback event exists", TIMEOUT, || async {
        (!phases(&events).await.is_empty()).then_some(())
    })
    .await;
    // Longer than the lease (15 s): the leader cannot renew, so it stops acting and exits
    // (fencing); as a pod it would be restarted, which the test does by hand.
    outage.cut();
    let cut = Instant::now();
    let exit = operator.exited(Duration::from_secs(40)).await;
    assert!(
        !exit.success(),
        "a leader that cannot renew its lease exits"
    );
    eprintln!(
        "API unreachable: the leader exited after {:.1}s",
        cut.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    outage.restore();
    let _restarted = Operator::start_with_env(&ns, &[], &proxied_env).await;

    assert_eq!(first_finishes_alone(&events).await, EventPhase::Succeeded);
    one_rollback(&ns, &deployments, &policies, &events).await;
}
