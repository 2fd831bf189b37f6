//! From cluster objects and Prometheus readings to the engine's inputs, and from its results to
//! status conditions and Kubernetes Events. No I/O here: the reconciler does that.

use std::sync::Arc;

use k8s_openapi::{api::apps::v1::Deployment, apimachinery::pkg::apis::meta::v1::Condition};
use kube::ResourceExt;

use super::{condition, evaluation::Evaluation};
use crate::{
    api::{
        AlertLevel, EventPhase, HealthStatus, IncidentClass, RollbackEvent, RollbackPolicy,
        conditions,
    },
    assess::{Assessment, Probe, TargetState},
    decide::{CriticalPolicy, PolicyState, Transition},
};

/// What assessment needs to know about the target. `replica_sets` are the Deployment's, newest
/// revision last.
pub fn target_state<R: ResourceExt>(
    deployment: Option<&Deployment>,
    replica_sets: &[Arc<R>],
) -> TargetState {
    TargetState {
        desired_replicas: deployment
            .and_then(|d| d.spec.as_ref()?.replicas)
            .unwrap_or(1),
        available_replicas: deployment
            .and_then(|d| d.status.as_ref()?.available_replicas)
            .unwrap_or(0),
        rolling_out: deployment.is_some_and(rolling_out),
        // The health endpoint is probed by verification; assessment relies on the signals.
        health_check: Probe::NotChecked,
        revision_changed_at: replica_sets
            .last()
            .and_then(|rs| rs.creation_timestamp())
            .map(|t| t.0),
    }
}

/// A rollout is under way and has not exceeded its progress deadline (the Deployment
/// controller then sets `Progressing=False`, reason `ProgressDeadlineExceeded`).
pub fn rolling_out(deployment: &Deployment) -> bool {
    let Some(status) = &deployment.status else {
        return true;
    };
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let progressing = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing");
    if progressing.is_some_and(|c| c.status == "False") {
        return false;
    }
    status.observed_generation < deployment.metadata.generation
        || status.updated_replicas.unwrap_or(0) < desired
        || progressing.is_some_and(|c| c.reason.as_deref() != Some("NewReplicaSetAvailable"))
}

/// `MetricsAvailable`: could the signals be read?
pub fn metrics_available(evaluation: &Evaluation) -> Condition {
    let readings = match &evaluation.readings {
        Err(e) => {
            return condition(
                conditions::METRICS_AVAILABLE,
                false,
                e.reason,
                e.message.clone(),
            );
        }
        Ok(readings) => readings,
    };
    let failures: Vec<_> = readings.values().filter_map(|r| r.as_ref().err()).collect();
    match failures.first() {
        Some(first) if failures.len() == readings.len() => condition(
            conditions::METRICS_AVAILABLE,
            false,
            first.reason(),
            format!("no signal could be read: {first}"),
        ),
        Some(first) => condition(
            conditions::METRICS_AVAILABLE,
            true,
            "PartiallyAvailable",
            format!(
                "{} of {} signals failed: {first}",
                failures.len(),
                readings.len()
            ),
        ),
        None => condition(
            conditions::METRICS_AVAILABLE,
            true,
            "QueriesSucceeded",
            format!("{} signal(s) read", readings.len()),
        ),
    }
}

/// `Healthy`, `Degraded` and `RollbackInProgress` after a decision.
pub fn health_conditions(assessment: &Assessment, state: &PolicyState) -> Vec<Condition> {
    let healthy = assessment.status == HealthStatus::Healthy && assessment.conclusive;
    let mut conditions = vec![condition(
        conditions::HEALTHY,
        healthy,
        if assessment.conclusive {
            assessment.status.as_str()
        } else {
            "Inconclusive"
        },
        assessment.message.clone(),
    )];
    conditions.push(match &state.incident {
        Some(incident) => condition(
            conditions::DEGRADED,
            true,
            if incident.failed {
                "IncidentFailed"
            } else {
                "IncidentOpen"
            },
            incident.message.clone().unwrap_or_else(|| {
                format!("{} incident since {}", incident.class, incident.started_at)
            }),
        ),
        None => condition(
            conditions::DEGRADED,
            false,
            "NoIncident",
            "no open incident",
        ),
    });
    let active = state.incident.as_ref().and_then(|i| i.active.as_ref());
    conditions.push(match active {
        Some(step) => condition(
            conditions::ROLLBACK_IN_PROGRESS,
            true,
            "RemediationActive",
            format!("{step:?}"),
        ),
        None => condition(
            conditions::ROLLBACK_IN_PROGRESS,
            false,
            "Idle",
            "no remediation in progress",
        ),
    });
    conditions
}

/// Unfinished RollbackEvents of a policy other than `except` (the incident's own step).
pub fn busy_event<'a>(
    policy: &str,
    events: &'a [Arc<RollbackEvent>],
    except: Option<&str>,
) -> Option<&'a str> {
    events
        .iter()
        .filter(|e| e.spec.policy_ref.name == policy)
        .filter(|e| !e.status.as_ref().is_some_and(|s| s.phase.is_finished()))
        .map(|e| e.metadata.name.as_deref().unwrap_or_default())
        .find(|name| Some(*name) != except)
}

/// The phase of a policy's event, if it is known.
pub fn event_phase(events: &[Arc<RollbackEvent>], name: &str) -> Option<EventPhase> {
    events
        .iter()
        .find(|e| e.metadata.name.as_deref() == Some(name))
        .map(|e| e.status.as_ref().map(|s| s.phase).unwrap_or_default())
}

/// The guard's view of the cluster: unfinished automatic remediations and failing policies.
pub fn cluster_view(
    policies: &[Arc<RollbackPolicy>],
    events: &[Arc<RollbackEvent>],
) -> (u32, Vec<CriticalPolicy>) {
    let active = events
        .iter()
        .filter(|e| e.spec.type_ == crate::api::EventType::Automatic)
        .filter(|e| !e.status.as_ref().is_some_and(|s| s.phase.is_finished()))
        .count() as u32;
    let critical = policies
        .iter()
        .filter_map(|p| {
            let status = p.status.as_ref()?;
            let since = status.failing_since.as_ref()?.0;
            let issues = &status.health.as_ref()?.issues;
            let classes: Vec<IncidentClass> = issues.iter().filter_map(|i| i.class).collect();
            Some(CriticalPolicy {
                key: super::evaluation::key(p),
                since,
                failing_dependencies: issues
                    .iter()
                    .filter(|i| i.class == Some(IncidentClass::Dependency))
                    .map(|i| i.metric.clone())
                    .collect(),
                classes,
            })
        })
        .collect();
    (active, critical)
}

/// Event type and reason for an engine transition.
pub fn transition_event(transition: &Transition) -> (AlertLevel, &'static str, String) {
    match transition {
        Transition::IncidentOpened { class } => (
            AlertLevel::Critical,
            "IncidentOpened",
            format!("{class} incident opened"),
        ),
        Transition::IncidentClosed { attempts } => (
            AlertLevel::Info,
            "IncidentClosed",
            format!("healthy again; incident closed after {attempts} remediation(s)"),
        ),
        Transition::IncidentFailed { attempts } => (
            AlertLevel::Emergency,
            "IncidentFailed",
            format!(
                "incident failed after {attempts} remediation(s); automatic action holds until healthy or rollback.frys.io/ack"
            ),
        ),
        Transition::IncidentAcknowledged => (
            AlertLevel::Info,
            "IncidentAcknowledged",
            "acknowledged; automatic action resumes".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::prometheus::QueryError;

    #[test]
    fn rollout_progress() {
        let deployment = |generation: i64,
                          observed: i64,
                          updated: i32,
                          progressing: (&str, &str)| {
            crate::fixtures::deployment("web")
                .with_generation(generation)
                .with_replicas(2)
                .with_status(serde_json::json!({"observedGeneration": observed, "updatedReplicas": updated,
                           "conditions": [{"type": "Progressing", "status": progressing.0, "reason": progressing.1}]}))
                .build()
        };
        assert!(!rolling_out(&deployment(
            2,
            2,
            2,
            ("True", "NewReplicaSetAvailable")
        )));
        assert!(rolling_out(&deployment(
            3,
            2,
            2,
            ("True", "NewReplicaSetAvailable")
        )));
        assert!(rolling_out(&deployment(
            2,
            2,
            1,
            ("True", "ReplicaSetUpdated")
        )));
        assert!(!rolling_out(&deployment(
            3,
            2,
            1,
            ("False", "ProgressDeadlineExceeded")
        )));
    }

    #[test]
    fn metrics_unavailable_when_every_signal_fails() {
        let error = QueryError::Unreachable {
            url: "http://p".into(),
            message: "refused".into(),
        };
        let evaluation = Evaluation {
            at: jiff::Timestamp::now(),
            readings: Ok(BTreeMap::from([
                ("a".to_string(), Err(error.clone())),
                ("b".to_string(), Err(error)),
            ])),
        };
        let c = metrics_available(&evaluation);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "PrometheusUnreachable")
        );
        let evaluation = Evaluation {
            at: jiff::Timestamp::now(),
            readings: Ok(BTreeMap::from([("a".to_string(), Ok(Some(1.0)))])),
        };
        assert_eq!(metrics_available(&evaluation).status, "True");
    }
}
