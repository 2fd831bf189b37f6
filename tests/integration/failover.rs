//! High availability (issue 10, item 5): two operator processes share one Lease; exactly one
//! leads and acts, and when the leader is killed in the middle of a remediation the other takes
//! the lease and finishes it, with nothing applied twice. Needs the workload simulator.

use std::time::{Duration, Instant};

use frys_rollback::api::{EventPhase, RollbackEvent};
use k8s_openapi::api::{apps::v1::Deployment, coordination::v1::Lease};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::json;

use crate::support::{self, Operator, env, eventually, kubectl, kubectl_apply};

const TIMEOUT: Duration = Duration::from_secs(120);
/// A short lease, so the test measures a failover in seconds.
const LEADER_ARGS: &[&str] = &[
    "--leader-election-lease-duration",
    "3s",
    "--leader-election-renew-period",
    "1s",
];

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("frys-rollback")
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// Writes (not reads) the operator made in `ns` on `resource[/subresource]`.
fn writes(ns: &str, resource: &str, subresource: &str) -> Vec<serde_json::Value> {
    support::operator_requests(ns)
        .into_iter()
        .filter(|r| r["resource"] == resource && r["subresource"] == subresource)
        .filter(|r| matches!(r["verb"].as_str(), Some("patch" | "update" | "create")))
        .collect()
}

#[tokio::test]
async fn one_of_two_replicas_leads_and_the_other_finishes_its_remediation() {
    if !support::require_simulator(
        "one_of_two_replicas_leads_and_the_other_finishes_its_remediation",
    ) {
        return;
    }
    let client = env().client().await;
    support::install_crds(&client).await;
    let ns = support::namespace(&client, "ha-failover").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    // The standby becomes ready slowly, so the remediation is caught between its steps (the
    // standby scaled, the Service not yet switched).
    for (name, color, replicas, delay) in [("web", "green", 2, "1s"), ("web-blue", "blue", 0, "8s")]
    {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {"sim.frys.io/ready-delay": delay}},
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
    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web", "color": "green"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    Api::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &service)
        .await
        .unwrap();

    // Two replicas against one control plane: exactly one leads.
    let first = Operator::start(&ns, LEADER_ARGS).await;
    let second = Operator::start(&ns, LEADER_ARGS).await;
    let ids = [
        eventually("the first identity logged", TIMEOUT, || async {
            first.identity()
        })
        .await,
        eventually("the second identity logged", TIMEOUT, || async {
            second.identity()
        })
        .await,
    ];
    assert_ne!(ids[0], ids[1]);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let leader_id = eventually("a leader", TIMEOUT, || async {
        holder(&leases).await.filter(|h| ids.contains(h))
    })
    .await;
    // A few renew periods later it still leads, and only it ever led.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(holder(&leases).await.as_deref(), Some(leader_id.as_str()));
    let (leader, follower) = if leader_id == ids[0] {
        (first, second)
    } else {
        (second, first)
    };
    assert!(leader.logged("leader election: leading"));
    assert!(!follower.logged("leader election: leading"));
    assert!(follower.logged("leader election: standing by"));
    let follower_id = if leader_id == ids[0] {
        ids[1].clone()
    } else {
        ids[0].clone()
    };

    let policy = "apiVersion: rollback.frys.io/v1alpha1\nkind: RollbackPolicy\nmetadata: {name: web}\nspec:\n  targetRef: {name: web}\n  interval: 1s\n  rateWindow: 5s\n  metrics: [{name: errors, preset: errorRate}]\n  strategies:\n    - type: EnvironmentSwitch\n      environmentSwitch: {service: web, selectorKey: color, activeValue: green, standbyValue: blue, standbyRef: web-blue, scaleStandby: true, readyTimeout: 1m}\n  verification: {stabilizationDelay: 1s, timeout: 30s, consecutivePasses: 1}\n";
    let (ok, _, err) = kubectl_apply(&ns, policy);
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl(&[
        "annotate",
        "-n",
        &ns,
        "rbp",
        "web",
        "rollback.frys.io/trigger=EnvironmentSwitch",
    ]);
    assert!(ok, "{err}");

    // Mid-remediation: the leader scaled the standby and waits for it to become ready.
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    eventually(
        "the standby scaled, the switch pending",
        TIMEOUT,
        || async {
            let e = events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .next()?;
            let executing = e.status?.phase == EventPhase::Executing;
            let scaled = deployments.get("web-blue").await.ok()?.spec?.replicas == Some(2);
            (executing && scaled).then_some(())
        },
    )
    .await;
    let selector = || {
        kubectl(&[
            "get",
            "-n",
            &ns,
            "svc",
            "web",
            "-o",
            "jsonpath={.spec.selector.color}",
        ])
        .1
    };
    assert_eq!(selector(), "green", "caught before the switch");
    let killed_at = jiff::Timestamp::now();
    let killed = Instant::now();
    leader.kill().await;

    // Failover: the other replica takes the lease, then acts (its first write on the event).
    eventually("the follower leads", TIMEOUT, || async {
        (holder(&leases).await? == follower_id).then_some(())
    })
    .await;
    let to_lease = killed.elapsed();
    let first_write = eventually("the new leader writes the event", TIMEOUT, || async {
        writes(&ns, "rollbackevents", "status")
            .iter()
            .filter_map(|r| r["time"].as_str()?.parse::<jiff::Timestamp>().ok())
            .find(|t| *t > killed_at)
    })
    .await;
    let to_action = first_write.duration_since(killed_at);
    eprintln!(
        "failover (3s lease, 1s renew): kill to lease held by the other replica {:.1}s, to its first event write {:.1}s",
        to_lease.as_secs_f64(),
        to_action.as_secs_f64()
    );

    let event =
        support::finished_event("the remediation finished", TIMEOUT, &events, |_| true).await;
    let status = event.status.unwrap();
    assert_eq!(status.phase, EventPhase::Succeeded, "{status:?}");
    assert_eq!(selector(), "blue");
    assert_eq!(
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1,
        "one event, no escalation"
    );
    // Nothing lost: the record holds both steps, the one the killed leader applied (found in
    // place by the new leader) and the one the new leader applied, in order, so undo can
    // restore both.
    let recorded: Vec<(&str, &str, bool)> = status
        .actions
        .iter()
        .map(|a| (a.kind.as_str(), a.name.as_str(), a.applied_at.is_some()))
        .collect();
    assert_eq!(
        recorded,
        [("Deployment", "web-blue", true), ("Service", "web", true)],
        "{:?}",
        status.actions
    );
    // Nothing applied twice: one scale of the standby, one switch of the Service, across
    // both processes.
    assert_eq!(
        writes(&ns, "deployments", "scale").len(),
        1,
        "standby scaled more than once"
    );
    assert_eq!(
        writes(&ns, "services", "").len(),
        1,
        "Service switched more than once"
    );
    assert_eq!(holder(&leases).await.as_deref(), Some(follower_id.as_str()));

    // A leader stopped by SIGTERM (a rolling update, a drain) frees the lease: a standby takes
    // over at its next try, without waiting out the lease.
    let standby = Operator::start(&ns, LEADER_ARGS).await;
    let standby_id = eventually("the standby's identity", TIMEOUT, || async {
        standby.identity()
    })
    .await;
    eventually("the standby standing by", TIMEOUT, || async {
        standby.logged("leader election: standing by").then_some(())
    })
    .await;
    let stopping = Instant::now();
    let stopped_log = follower.log.clone();
    let exit = follower.stop().await;
    assert!(exit.success(), "clean exit: {exit}");
    eventually("the standby leads", TIMEOUT, || async {
        (holder(&leases).await? == standby_id).then_some(())
    })
    .await;
    let handover = stopping.elapsed();
    eprintln!(
        "handover on SIGTERM (lease released): {:.1}s",
        handover.as_secs_f64()
    );
    let log = std::fs::read_to_string(&stopped_log).unwrap();
    assert!(
        log.contains("\"message\":\"leader election: lease released\""),
        "the stopped leader did not release the lease: {}",
        stopped_log.display()
    );
}
