//! What to do with finished remediations: which traffic rungs `autoRestore` undoes now, and
//! which events fall beyond `historyLimit`. Pure: events and `now` in, names out.

use std::sync::Arc;

use jiff::Timestamp;
use kube::ResourceExt;

use crate::api::{
    EventPhase, RollbackEvent, RollbackPolicy, RollbackPolicyStatus, StrategyKind, annotations,
    conditions,
};

/// Rungs (`restorable`: the kinds `autoRestore` undoes) whose changes are still in place once
/// the target has been healthy for `autoRestore.restoreAfter`: the events to undo.
pub fn due_for_restore(
    policy: &RollbackPolicy,
    status: &RollbackPolicyStatus,
    events: &[Arc<RollbackEvent>],
    restorable: impl Fn(StrategyKind) -> bool,
    now: Timestamp,
) -> Vec<String> {
    let Some(after) = policy
        .spec
        .auto_restore
        .as_ref()
        .and_then(|a| a.restore_after.get().ok())
    else {
        return vec![];
    };
    let healthy_since = status
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::HEALTHY && c.status == "True")
        .map(|c| c.last_transition_time.0);
    let Some(since) = healthy_since else {
        return vec![];
    };
    // Healthy for `after` since the later of the healthy transition and the event's end.
    let long_enough = |e: &RollbackEvent| {
        let completed = e
            .status
            .as_ref()
            .and_then(|s| s.completed_at.as_ref())
            .map(|t| t.0);
        let from = completed.map_or(since, |c| c.max(since));
        now > from && now.duration_since(from).unsigned_abs() >= after
    };
    events
        .iter()
        .filter(|e| e.spec.policy_ref.name == policy.name_any())
        .filter(|e| restorable(e.spec.strategy))
        .filter(|e| !e.annotations().contains_key(annotations::UNDO) && long_enough(e))
        .filter(|e| {
            e.status.as_ref().is_some_and(|s| {
                // A refused undo is not asked for again: the object changed since, and whoever
                // changed it owns it now (the refusal is recorded on the event).
                s.phase == EventPhase::Succeeded && s.undo_refused.is_none() && in_effect(e)
            })
        })
        .map(|e| e.name_any())
        .collect()
}

/// The event's changes are still in place (applied, not undone), and undoing them restores
/// traffic or scale. A version rollback's template is not counted: Kubernetes keeps the
/// Deployment's revisions itself (`kubectl rollout undo`), and nothing re-deploys a template
/// judged bad on its own.
pub fn in_effect(event: &RollbackEvent) -> bool {
    event.spec.strategy != StrategyKind::VersionRollback
        && event.status.as_ref().is_some_and(|s| {
            s.actions
                .iter()
                .any(|a| !a.undone && a.applied_at.is_some())
        })
}

/// Finished events of the policy beyond its historyLimit, oldest first; events whose changes
/// are in effect are kept (and not counted).
pub fn beyond_history(
    policy: &str,
    events: &[Arc<RollbackEvent>],
    limit: u32,
) -> Vec<Arc<RollbackEvent>> {
    let mut finished: Vec<_> = events
        .iter()
        .filter(|e| e.spec.policy_ref.name == policy)
        .filter(|e| e.status.as_ref().is_some_and(|s| s.phase.is_finished()))
        // Its undo records are the only way back while its changes are in place.
        .filter(|e| !in_effect(e))
        .cloned()
        .collect();
    finished.sort_by_key(|e| (e.creation_timestamp(), e.name_any()));
    let excess = finished.len().saturating_sub(limit as usize);
    finished.truncate(excess);
    finished
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_the_newest_finished_events() {
        use crate::api::{EventPhase, RollbackEventStatus};
        let event = |name: &str, secs: i64, phase: Option<EventPhase>, policy: &str| {
            let mut e = crate::fixtures::event(name)
                .with_policy(policy)
                .with_type(crate::api::EventType::Manual)
                .with_created(secs);
            e.status = phase.map(|phase| RollbackEventStatus {
                phase,
                ..Default::default()
            });
            Arc::new(e)
        };
        let events = vec![
            event("e3", 3, Some(EventPhase::Failed), "web"),
            event("e1", 1, Some(EventPhase::Succeeded), "web"),
            event("e4", 4, Some(EventPhase::Executing), "web"),
            event("e2", 2, Some(EventPhase::Skipped), "web"),
            event("other", 0, Some(EventPhase::Succeeded), "api"),
        ];
        let names = |v: Vec<Arc<RollbackEvent>>| v.iter().map(|e| e.name_any()).collect::<Vec<_>>();
        assert_eq!(names(beyond_history("web", &events, 1)), ["e1", "e2"]);
        assert_eq!(
            names(beyond_history("web", &events, 3)),
            Vec::<String>::new()
        );
    }

    fn applied(strategy: StrategyKind, undone: bool, refused: Option<&str>) -> RollbackEvent {
        use crate::api::{Action, RollbackEventStatus};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let mut e = crate::fixtures::event("e").with_policy("web");
        e.spec.strategy = strategy;
        e.status = Some(RollbackEventStatus {
            phase: EventPhase::Succeeded,
            actions: vec![Action {
                api_version: "v1".into(),
                kind: "Service".into(),
                name: "web".into(),
                namespace: None,
                summary: "s".into(),
                previous: None,
                applied_at: Some(Time(Timestamp::from_second(1).unwrap())),
                undone,
            }],
            undo_refused: refused.map(str::to_owned),
            ..Default::default()
        });
        e
    }

    #[test]
    fn pruning_keeps_events_whose_changes_are_in_effect() {
        let shift = Arc::new(applied(StrategyKind::TrafficShifting, false, None).with_created(1));
        let named = |mut e: RollbackEvent, name: &str| {
            e.metadata.name = Some(name.into());
            Arc::new(e)
        };
        let undone = named(
            applied(StrategyKind::TrafficShifting, true, None).with_created(2),
            "undone",
        );
        let rollback = named(
            applied(StrategyKind::VersionRollback, false, None).with_created(3),
            "rollback",
        );
        let pruned: Vec<String> = beyond_history("web", &[shift, undone, rollback], 0)
            .iter()
            .map(|e| e.name_any())
            .collect();
        assert_eq!(pruned, ["undone", "rollback"]);
    }

    #[test]
    fn a_refused_undo_is_not_asked_again() {
        let policy: RollbackPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "rollback.frys.io/v1alpha1", "kind": "RollbackPolicy",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"targetRef": {"name": "web"}, "metrics": [{"name": "e", "preset": "errorRate"}],
                     "strategies": [{"type": "TrafficShifting"}], "autoRestore": {"restoreAfter": "1m"}},
        }))
        .unwrap();
        let status = RollbackPolicyStatus {
            conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: conditions::HEALTHY.into(),
                status: "True".into(),
                reason: "Healthy".into(),
                message: String::new(),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    Timestamp::from_second(0).unwrap(),
                ),
                observed_generation: None,
            }],
            ..Default::default()
        };
        let now = Timestamp::from_second(3600).unwrap();
        let due =
            |e: RollbackEvent| due_for_restore(&policy, &status, &[Arc::new(e)], |_| true, now);
        assert_eq!(
            due(applied(StrategyKind::TrafficShifting, false, None)),
            ["e"]
        );
        assert!(
            due(applied(
                StrategyKind::TrafficShifting,
                false,
                Some("changed")
            ))
            .is_empty()
        );
    }
}
