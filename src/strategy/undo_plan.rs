//! Undo planning: from a recorded [`Action`] and the object as it is now, the change that
//! restores the recorded state. Pure; it needs neither the policy nor ReplicaSet history.

use serde_json::Value;

use super::{
    Change, Error, Kind, Record, emergency_shutdown, environment_switch, route, scale, sync_hold,
    version_rollback,
};
use crate::api::Action;

/// Plans undoing one action, given the object it changed as it is now. None when the object
/// already holds the previous state. Refuses with [`Error::ChangedSinceApplied`] when the object
/// no longer holds what the action set, unless `force`.
pub fn plan_undo(action: &Action, current: &Value, force: bool) -> Result<Option<Change>, Error> {
    let kind =
        Kind::from_type(&action.api_version, &action.kind).ok_or_else(|| Error::InvalidRecord {
            kind: action.kind.clone(),
            name: action.name.clone(),
            detail: format!("unknown kind {} {}", action.api_version, action.kind),
        })?;
    let mismatch = |what: &str| Error::InvalidRecord {
        kind: action.kind.clone(),
        name: action.name.clone(),
        detail: format!("a {what} record on a {kind}"),
    };
    match Record::of(action)? {
        Record::RouteBackends {
            rule_index,
            rule_name,
            backends,
            applied,
        } => {
            let router: &dyn route::Router = match kind {
                Kind::HttpRoute => &route::HttpRoute,
                Kind::VirtualService => &route::VirtualService,
                _ => return Err(mismatch("RouteBackends")),
            };
            route::plan_undo(
                router,
                current,
                rule_index,
                rule_name.as_deref(),
                &backends,
                &applied,
                force,
            )
        }
        Record::Replicas { replicas, applied } if kind == Kind::Deployment => {
            scale::plan_undo(current, replicas, applied, force)
        }
        Record::ServiceSelector { selector, applied } if kind == Kind::Service => {
            environment_switch::plan_undo_selector(current, &selector, &applied, force)
        }
        Record::PodTemplate {
            revision,
            template,
            annotations,
            applied,
            ..
        } if kind == Kind::Deployment => version_rollback::plan_undo(
            current,
            revision.as_deref(),
            &template,
            &annotations,
            &applied,
            force,
        ),
        Record::HpaPin {
            min_replicas,
            max_replicas,
            annotation,
            applied_min,
            applied_max,
        } if kind == Kind::HorizontalPodAutoscaler => emergency_shutdown::plan_undo_pin(
            current,
            min_replicas,
            max_replicas,
            annotation.as_deref(),
            (applied_min, applied_max),
            force,
        ),
        Record::AutomatedSync { automated } if kind == Kind::ArgoApplication => {
            sync_hold::plan_undo_automated(action, current, &automated, force)
        }
        Record::Suspend { suspend }
            if matches!(kind, Kind::FluxKustomization | Kind::FluxHelmRelease) =>
        {
            sync_hold::plan_undo_suspend(action, kind, current, suspend, force)
        }
        other => Err(mismatch(match other {
            Record::Replicas { .. } => "Replicas",
            Record::ServiceSelector { .. } => "ServiceSelector",
            Record::PodTemplate { .. } => "PodTemplate",
            Record::Webhook { .. } => "Webhook",
            Record::AutomatedSync { .. } => "AutomatedSync",
            Record::Suspend { .. } => "Suspend",
            _ => "HpaPin",
        })),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unreadable_records_are_refused() {
        let action = |api_version: &str, kind: &str, previous: Option<Value>| Action {
            api_version: api_version.into(),
            kind: kind.into(),
            name: "web".into(),
            namespace: None,
            summary: String::new(),
            previous,
            applied_at: None,
            undone: false,
        };
        let obj = json!({"metadata": {"name": "web"}});
        for a in [
            action("apps/v1", "Deployment", None),
            action("apps/v1", "Deployment", Some(json!({"type": "Teleport"}))),
            action(
                "v1",
                "ConfigMap",
                Some(json!({"type": "Replicas", "replicas": 1, "applied": 0})),
            ),
            action(
                "v1",
                "Service",
                Some(json!({"type": "Replicas", "replicas": 1, "applied": 0})),
            ),
        ] {
            let err = plan_undo(&a, &obj, false).unwrap_err();
            assert!(matches!(err, Error::InvalidRecord { .. }), "{err}");
        }
    }
}
