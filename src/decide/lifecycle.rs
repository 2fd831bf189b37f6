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
                s.phase == EventPhase::Succeeded
                    && s.actions
                        .iter()
                        .any(|a| !a.undone && a.applied_at.is_some())
            })
        })
        .map(|e| e.name_any())
        .collect()
}

/// Finished events of the policy beyond its historyLimit, oldest first.
pub fn beyond_history(
    policy: &str,
    events: &[Arc<RollbackEvent>],
    limit: u32,
) -> Vec<Arc<RollbackEvent>> {
    let mut finished: Vec<_> = events
        .iter()
        .filter(|e| e.spec.policy_ref.name == policy)
        .filter(|e| e.status.as_ref().is_some_and(|s| s.phase.is_finished()))
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
}
