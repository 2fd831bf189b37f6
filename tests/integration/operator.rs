//! The running operator against the real API server: Ready reasons, status by server-side
//! apply, Events, /metrics, clean shutdown (issue: operator foundation).

use std::time::Duration;

use crate::support::{self, Operator, condition, deployment, env, eventually, kubectl_apply};
use frys_rollback::api::{RollbackEvent, RollbackPolicy};
use k8s_openapi::api::{apps::v1::Deployment, events::v1::Event};
use kube::{
    Api,
    api::{ListParams, PostParams},
};

const TIMEOUT: Duration = Duration::from_secs(30);

fn policy_yaml(name: &str, target: &str) -> String {
    format!(
        r#"
apiVersion: rollback.frys.io/v1alpha1
kind: RollbackPolicy
metadata: {{name: {name}}}
spec:
  targetRef: {{name: {target}}}
  interval: 2s
  metrics: [{{name: errors, preset: errorRate}}]
  strategies: [{{type: VersionRollback}}]
"#
    )
}

/// (status, reason, message) of a policy's Ready condition.
async fn ready(api: &Api<RollbackPolicy>, name: &str) -> Option<(String, String, String)> {
    condition(&api.get(name).await.ok()?, "Ready")
}

#[tokio::test]
async fn ready_follows_the_target_and_one_policy_per_target() {
    let client = env().client().await;
    support::install_crds(&client).await;
    let ns = support::namespace(&client, "op-ready").await;
    let operator = Operator::start(&ns, &[]).await;
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &ns);

    let (ok, _, err) = kubectl_apply(&ns, &policy_yaml("web", "web"));
    assert!(ok, "{err}");
    let expected = format!("Deployment web not found in namespace {ns}");
    eventually("Ready=False TargetNotFound", TIMEOUT, || async {
        let r = ready(&policies, "web").await?;
        (r == ("False".into(), "TargetNotFound".into(), expected.clone())).then_some(())
    })
    .await;

    // Status carries the generation it describes and the settings in force.
    let status = policies.get("web").await.unwrap().status.unwrap();
    assert_eq!(status.observed_generation, Some(1));
    let effective = status.effective.unwrap();
    assert_eq!(effective.interval.unwrap().as_str(), "2s");
    assert_eq!(effective.cooldown.unwrap().as_str(), "5m");
    assert_eq!(effective.metrics[0].critical, Some(0.05));
    let suspended = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Suspended")
        .unwrap();
    assert_eq!(suspended.status, "False");

    // The Deployment appearing flips the policy to Ready without waiting for the interval.
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment("web", "demo:v1"))
        .await
        .unwrap();
    eventually("Ready=True once the Deployment exists", TIMEOUT, || async {
        let (status, reason, _) = ready(&policies, "web").await?;
        (status == "True" && reason == "Valid").then_some(())
    })
    .await;

    // A second policy for the same target is refused; the first keeps it.
    let (ok, _, err) = kubectl_apply(&ns, &policy_yaml("web-again", "web"));
    assert!(ok, "{err}");
    let (_, _, message) = eventually("Ready=False DuplicateTarget", TIMEOUT, || async {
        let r = ready(&policies, "web-again").await?;
        (r.1 == "DuplicateTarget").then_some(r)
    })
    .await;
    assert_eq!(
        message,
        "RollbackPolicy web already protects Deployment web; a target has one policy"
    );
    assert_eq!(ready(&policies, "web").await.unwrap().0, "True");

    // Transitions were published as Kubernetes Events on the policy.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let reasons = eventually("events for the policy", TIMEOUT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let reasons: Vec<String> = list
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web"))
            .filter_map(|e| e.reason)
            .collect();
        (reasons.contains(&"TargetNotFound".into()) && reasons.contains(&"Valid".into()))
            .then_some(reasons)
    })
    .await;
    assert!(!reasons.is_empty());

    // The operator's own metrics count the work.
    let metrics = operator.metrics().await;
    let reconciles = metrics
        .lines()
        .find(|l| l.starts_with("frys_rollback_reconciles_total{controller=\"policy\"}"))
        .unwrap_or_else(|| panic!("no policy reconcile counter in:\n{metrics}"));
    let count: f64 = reconciles.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 3.0, "{reconciles}");
    assert!(
        metrics.contains("frys_rollback_reconcile_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("frys_rollback_policies 2"), "{metrics}");
    assert!(
        metrics
            .contains("frys_rollback_alerts_total{level=\"Warning\",reason=\"TargetNotFound\"} 1"),
        "{metrics}"
    );

    // SIGTERM stops it cleanly.
    let status = operator.stop().await;
    assert!(status.success(), "operator exited with {status}");
}

#[tokio::test]
async fn events_are_adopted_by_their_policy() {
    let client = env().client().await;
    support::install_crds(&client).await;
    let ns = support::namespace(&client, "op-event").await;
    let _operator = Operator::start(&ns, &[]).await;
    let (ok, _, err) = kubectl_apply(&ns, &policy_yaml("web", "web"));
    assert!(ok, "{err}");
    let event = |name: &str, policy: &str| {
        format!(
            "apiVersion: rollback.frys.io/v1alpha1\nkind: RollbackEvent\nmetadata: {{name: {name}}}\nspec:\n  policyRef: {{name: {policy}}}\n  type: Manual\n  strategy: VersionRollback\n  reason: test\n"
        )
    };
    let (ok, _, err) = kubectl_apply(
        &ns,
        &(event("e-ok", "web") + "---\n" + &event("e-orphan", "nope")),
    );
    assert!(ok, "{err}");
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    let policy_uid = Api::<RollbackPolicy>::namespaced(client.clone(), &ns)
        .get("web")
        .await
        .unwrap()
        .metadata
        .uid;
    // Adopted, then run: the target does not exist, so it fails and says why.
    let message = eventually("event owned by its policy and failed", TIMEOUT, || async {
        let e = events.get("e-ok").await.ok()?;
        let owned = e
            .metadata
            .owner_references?
            .iter()
            .any(|o| Some(&o.uid) == policy_uid.as_ref());
        let status = e.status?;
        (owned && status.phase == frys_rollback::api::EventPhase::Failed).then_some(status.message?)
    })
    .await;
    assert_eq!(message, "VersionRollback refused: Deployment web not found");
    let message = eventually("orphan event failed", TIMEOUT, || async {
        let s = events.get("e-orphan").await.ok()?.status?;
        (s.phase == frys_rollback::api::EventPhase::Failed).then_some(s.message?)
    })
    .await;
    assert_eq!(
        message,
        format!("RollbackPolicy nope not found in namespace {ns}")
    );
}

/// kstatus: `kubectl wait --for=condition=Ready` succeeds once the policy is usable, waiting
/// policies say `Reconciling`, broken ones `Stalled`, and every condition carries the generation
/// it describes (what Helm 4's `--wait=watcher` and Flux read).
#[tokio::test]
async fn kubectl_wait_and_kstatus_conditions() {
    let client = env().client().await;
    support::install_crds(&client).await;
    let ns = support::namespace(&client, "op-kstatus").await;
    let _operator = Operator::start(&ns, &[]).await;
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &ns);
    let condition = |p: &RollbackPolicy, type_: &str| {
        let c = p
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)?;
        Some((c.status.clone(), c.reason.clone(), c.observed_generation))
    };

    // No target yet: Reconciling, not Stalled, and `kubectl wait` times out.
    let (ok, _, err) = kubectl_apply(&ns, &policy_yaml("web", "web"));
    assert!(ok, "{err}");
    eventually("Reconciling=True TargetNotFound", TIMEOUT, || async {
        let p = policies.get("web").await.ok()?;
        (condition(&p, "Reconciling")? == ("True".into(), "TargetNotFound".into(), Some(1)))
            .then_some(())
    })
    .await;
    let p = policies.get("web").await.unwrap();
    assert_eq!(condition(&p, "Stalled").unwrap().0, "False");
    let wait = |resource: &str, condition: &str, timeout: &str| {
        support::kubectl(&[
            "wait",
            "-n",
            &ns,
            &format!("--for=condition={condition}"),
            resource,
            &format!("--timeout={timeout}"),
        ])
    };
    let (ok, _, _) = wait("rbp/web", "Ready", "2s");
    assert!(!ok, "kubectl wait succeeded while the target is missing");

    // The target appears: `kubectl wait` returns, Reconciling and Stalled are False.
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment("web", "demo:v1"))
        .await
        .unwrap();
    let (ok, out, err) = wait("rbp/web", "Ready", "30s");
    assert!(ok, "kubectl wait: {out}{err}");
    assert!(out.contains("condition met"), "{out}");
    let p = policies.get("web").await.unwrap();
    let generation = p.metadata.generation;
    assert_eq!(
        condition(&p, "Reconciling").unwrap(),
        ("False".into(), "Reconciled".into(), generation)
    );
    assert_eq!(condition(&p, "Stalled").unwrap().0, "False");
    for c in &p.status.as_ref().unwrap().conditions {
        assert_eq!(c.observed_generation, generation, "{c:?}");
    }

    // A spec change bumps the generation; the conditions follow it.
    let (ok, _, err) = support::kubectl(&[
        "patch",
        "-n",
        &ns,
        "rbp/web",
        "--type=merge",
        "-p",
        r#"{"spec":{"interval":"3s"}}"#,
    ]);
    assert!(ok, "{err}");
    eventually("conditions at generation 2", TIMEOUT, || async {
        let p = policies.get("web").await.ok()?;
        (condition(&p, "Ready")?.2 == Some(2)).then_some(())
    })
    .await;

    // A query that cannot work: Stalled, which `kubectl wait` can wait for too.
    let broken = policy_yaml("broken", "web-2").replace(
        "[{name: errors, preset: errorRate}]",
        "[{name: custom, query: 'sum(rate(x[{{ window }}]) by (', critical: 1}]",
    );
    let (ok, _, err) = kubectl_apply(&ns, &broken);
    assert!(ok, "{err}");
    let (ok, out, err) = wait("rbp/broken", "Stalled", "30s");
    assert!(ok, "kubectl wait Stalled: {out}{err}");
    let p = policies.get("broken").await.unwrap();
    assert_eq!(condition(&p, "Stalled").unwrap().1, "InvalidQuery");
    assert_eq!(condition(&p, "Reconciling").unwrap().0, "False");
}
