//! `frys-rollback explain POLICY`: what the engine sees now and what it would do next, and why,
//! in a few sentences. It runs the operator's own pure engine (assess, decide) on the policy's
//! recorded status, its spec and the target Deployment: no second implementation.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::{ResourceExt as _, api::ListParams};

use super::output::{self, age};
use crate::{
    api::{RollbackEvent, RollbackPolicy},
    assess::{self, AssessInput, Sample, Signal},
    config::{self, OperatorConfig},
    controller::health,
    decide::{self, GuardVerdict, PolicyState, Tick},
    units,
};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The RollbackPolicy.
    pub policy: String,
    /// Namespace (default: the current kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
}

pub async fn run(args: ExplainArgs) -> anyhow::Result<()> {
    let client = output::client().await?;
    let ns = args.namespace.as_deref();
    let policy = output::namespaced::<RollbackPolicy>(&client, ns)
        .get(&args.policy)
        .await
        .with_context(|| format!("reading RollbackPolicy {}", args.policy))?;
    let deployments = output::namespaced::<Deployment>(&client, ns);
    let deployment = deployments
        .get_opt(&policy.spec.target_ref.name)
        .await
        .context("reading the target Deployment")?;
    let replica_sets = output::namespaced::<ReplicaSet>(&client, ns)
        .list(&ListParams::default())
        .await
        .context("listing ReplicaSets")?
        .items;
    let events = output::namespaced::<RollbackEvent>(&client, ns)
        .list(&ListParams::default())
        .await
        .context("listing RollbackEvents")?
        .items;
    let events: Vec<Arc<RollbackEvent>> = events.into_iter().map(Arc::new).collect();
    print!(
        "{}",
        explain(
            &policy,
            deployment.as_ref(),
            &replica_sets,
            &events,
            Timestamp::now()
        )
    );
    Ok(())
}

/// The explanation, one sentence a line. `replica_sets` may hold other Deployments' too.
pub fn explain(
    policy: &RollbackPolicy,
    deployment: Option<&Deployment>,
    replica_sets: &[ReplicaSet],
    events: &[Arc<RollbackEvent>],
    now: Timestamp,
) -> String {
    let name = policy.name_any();
    let status = policy.status.clone().unwrap_or_default();
    let mut out = vec![];
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == crate::api::conditions::READY);
    match ready {
        Some(c) if c.status == "True" => out.push(format!("{name} is Ready: {}.", c.message)),
        Some(c) => out.push(format!(
            "{name} is not Ready ({}): {}. Until that is fixed it does not evaluate.",
            c.reason, c.message
        )),
        None => out.push(format!(
            "{name} has no Ready condition yet: the operator has not reconciled it."
        )),
    }
    if policy.spec.suspend {
        out.push("spec.suspend is true: no evaluation and no remediation.".into());
    }
    let Some(health) = &status.health else {
        out.push("No evaluation is recorded yet.".into());
        return lines(out);
    };
    let when = health
        .evaluated_at
        .as_ref()
        .map(|t| format!(" ({} ago)", age(t.0, now)))
        .unwrap_or_default();

    // The engine's inputs, rebuilt from what the operator recorded.
    let effective = status
        .effective
        .clone()
        .unwrap_or_else(|| config::effective(&policy.spec, &OperatorConfig::defaults()));
    let (assess_settings, settings) = match decide::from_policy(&policy.spec, &effective) {
        Ok(s) => s,
        Err(e) => {
            out.push(format!("Its settings do not resolve: {e}."));
            return lines(out);
        }
    };
    let signals: Vec<Signal> = effective
        .metrics
        .iter()
        .map(|m| Signal {
            metric: m.clone(),
            sample: health
                .metrics
                .get(&m.name)
                .map_or(Sample::NoData, |v| Sample::Value(*v)),
        })
        .collect();
    let owned = owned_replica_sets(deployment, replica_sets);
    let target = health::target_state(deployment, &owned);
    let state = PolicyState::from_status(&status);
    let assessment = assess::assess(
        &AssessInput {
            signals: &signals,
            target: &target,
            failing_since: state.failing_since,
            now,
        },
        &assess_settings,
    );
    out.push(format!(
        "Last evaluation{when}: {}, score {}.",
        health.status,
        units::num(health.score)
    ));
    out.push(format!(
        "The engine reads those values with the target as it is now: {}.",
        assessment.message
    ));
    out.push(match &state.incident {
        Some(i) => format!(
            "Open {} incident since {}, {} of {} remediation attempt(s) used{}.",
            i.class,
            age(i.started_at, now) + " ago",
            i.attempts,
            settings.max_attempts,
            if i.failed {
                "; it failed, so automatic action holds until healthy or rollback.frys.io/ack"
            } else {
                ""
            }
        ),
        None => format!(
            "No open incident; failure streak {} of {}.",
            state.failure_streak, settings.consecutive_failures
        ),
    });

    // What the operator would decide on an evaluation that reads the same values now.
    let active_event = state
        .incident
        .as_ref()
        .and_then(|i| i.active_event())
        .map(str::to_owned);
    // An acknowledgement may be annotated on the policy or on its Deployment.
    let ack = decide::acknowledgement(policy.annotations(), deployment.map(|d| d.annotations()));
    let guard = GuardVerdict::clear();
    let tick = Tick {
        assessment: &assessment,
        now,
        guard: &guard,
        ack,
        busy: health::busy_event(&name, events, active_event.as_deref()),
    };
    let finished =
        active_event
            .as_ref()
            .and_then(|event| match health::event_phase(events, event) {
                Some(crate::api::EventPhase::Succeeded) => Some(true),
                Some(crate::api::EventPhase::Failed) | None => Some(false),
                Some(_) => None,
            });
    let decision = match finished {
        Some(succeeded) => decide::on_remediation_finished(&state, succeeded, &tick, &settings),
        None => decide::decide(&state, &tick, &settings),
    };
    out.push(format!(
        "If the next evaluation reads the same: {}.",
        decision.explanation.reason.sentence()
    ));
    out.push(match &decision.action {
        Some(a) if a.dry_run => format!(
            "It would record a dry-run RollbackEvent ({:?}) for {} and change nothing.",
            a.kind, a.strategy
        ),
        Some(a) => format!(
            "It would create a RollbackEvent ({:?}) running {}: {}.",
            a.kind, a.strategy, a.reason
        ),
        None => "It would change nothing.".into(),
    });
    out.push(
        "(Read from the policy's status and the cluster now; the operator's blast-radius guard \
         and freezes are not evaluated here.)"
            .into(),
    );
    lines(out)
}

fn lines(out: Vec<String>) -> String {
    out.into_iter().map(|l| l + "\n").collect()
}

/// The Deployment's ReplicaSets, oldest revision first (as the operator orders them).
fn owned_replica_sets(
    deployment: Option<&Deployment>,
    replica_sets: &[ReplicaSet],
) -> Vec<Arc<ReplicaSet>> {
    let Some(uid) = deployment.and_then(|d| d.metadata.uid.as_deref()) else {
        return vec![];
    };
    let revision = |rs: &ReplicaSet| {
        rs.annotations()
            .get("deployment.kubernetes.io/revision")
            .and_then(|r| r.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let mut owned: Vec<Arc<ReplicaSet>> = replica_sets
        .iter()
        .filter(|rs| rs.owner_references().iter().any(|o| o.uid == uid))
        .cloned()
        .map(Arc::new)
        .collect();
    owned.sort_by_key(|rs| revision(rs));
    owned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(errors: f64, streak: u32) -> RollbackPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "rollback.frys.io/v1alpha1",
            "kind": "RollbackPolicy",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "targetRef": {"name": "web"},
                "consecutiveFailures": 3,
                "metrics": [{"name": "errors", "preset": "errorRate", "warning": 0.02, "critical": 0.05}],
                "strategies": [{"type": "VersionRollback"}],
            },
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "Valid",
                                "message": "protecting Deployment web with 1 signal(s) and 1 strategy rung(s)",
                                "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "health": {"status": "Critical", "score": 12.5, "metrics": {"errors": errors},
                           "evaluatedAt": "2026-01-01T11:59:58Z"},
                "failureStreak": streak,
                "failingSince": "2026-01-01T11:59:50Z",
            }
        }))
        .unwrap()
    }

    fn deployment() -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "d1", "generation": 2},
            "spec": {"replicas": 3, "selector": {}, "template": {}},
            "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3,
                       "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}
        }))
        .unwrap()
    }

    /// Revision 2 of the Deployment, created five minutes before "now", and another's.
    fn replica_sets() -> Vec<ReplicaSet> {
        let rs = |name: &str, owner: &str, revision: &str, created: &str| {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "shop", "creationTimestamp": created,
                             "annotations": {"deployment.kubernetes.io/revision": revision},
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                                  "name": "x", "uid": owner}]}
            }))
            .unwrap()
        };
        vec![
            rs("web-2", "d1", "2", "2026-01-01T11:55:00Z"),
            rs("other-9", "d2", "9", "2026-01-01T11:59:59Z"),
            rs("web-1", "d1", "1", "2026-01-01T10:00:00Z"),
        ]
    }

    #[test]
    fn a_failing_policy_one_evaluation_before_its_incident() {
        let now: Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        let text = explain(
            &policy(0.30000000000000004, 2),
            Some(&deployment()),
            &replica_sets(),
            &[],
            now,
        );
        let expected = "\
web is Ready: protecting Deployment web with 1 signal(s) and 1 strategy rung(s).
Last evaluation (2s ago): Critical, score 12.5.
The engine reads those values with the target as it is now: Critical; errors = 30 % is above the critical threshold 5 % (class Release: the degradation began at 2026-01-01T11:59:50Z, within 30m of the new revision at 2026-01-01T11:55:00Z).
No open incident; failure streak 2 of 3.
If the next evaluation reads the same: ";
        assert!(text.starts_with(expected), "{text}");
        assert!(
            text.contains("It would create a RollbackEvent (Automatic) running VersionRollback"),
            "{text}"
        );
    }

    #[test]
    fn a_streak_below_the_threshold_changes_nothing() {
        let now: Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        let text = explain(&policy(0.3, 0), Some(&deployment()), &[], &[], now);
        assert!(
            text.contains("failing 1 of 3 evaluations in a row needed for an incident"),
            "{text}"
        );
        assert!(text.contains("It would change nothing."), "{text}");
    }

    #[test]
    fn the_plugin_name() {
        use std::ffi::OsStr;
        assert_eq!(
            crate::cli::display_name(OsStr::new("/usr/local/bin/kubectl-frys")),
            "kubectl frys"
        );
        assert_eq!(
            crate::cli::display_name(OsStr::new("kubectl-frys.exe")),
            "kubectl frys"
        );
        assert_eq!(
            crate::cli::display_name(OsStr::new("frys-rollback")),
            "frys-rollback"
        );
    }
}
