//! What an [`Action`] records in `previous`: the state a change replaced, plus what the change
//! set (`applied`), so undo can tell whether the object changed since. Undo planning is pure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    Change, Error, Kind, emergency_shutdown, environment_switch, json, route, scale,
    version_rollback,
};
use crate::api::Action;

/// The content of `Action.previous`, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum Record {
    /// The backends of one route rule (HTTPRoute or VirtualService).
    RouteBackends {
        rule_index: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule_name: Option<String>,
        /// The backends before.
        backends: Vec<Value>,
        applied: Vec<Value>,
    },
    /// `spec.replicas` of a Deployment, set through the scale subresource.
    Replicas { replicas: i32, applied: i32 },
    /// A Service's `spec.selector`.
    ServiceSelector {
        selector: BTreeMap<String, String>,
        applied: BTreeMap<String, String>,
    },
    /// A Deployment's pod template, replaced by a version rollback.
    PodTemplate {
        /// Revision the Deployment was at.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<String>,
        /// The full template before: undo needs no ReplicaSet.
        template: Value,
        /// Annotations the rollback set or removed, with their values before (None: absent).
        annotations: BTreeMap<String, Option<String>>,
        /// Revision rolled back to.
        to_revision: String,
        applied: Value,
    },
    /// An HPA's replica bounds, pinned during an emergency shutdown.
    HpaPin {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_replicas: Option<i32>,
        max_replicas: i32,
        /// The pin annotation's value before (None: absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        annotation: Option<String>,
        applied_min: i32,
        applied_max: i32,
    },
}

impl Record {
    /// The record of an action.
    pub fn of(action: &Action) -> Result<Self, Error> {
        let invalid = |detail: String| Error::InvalidRecord {
            kind: action.kind.clone(),
            name: action.name.clone(),
            detail,
        };
        let previous = action
            .previous
            .clone()
            .ok_or_else(|| invalid("it records no previous state".into()))?;
        serde_json::from_value(previous).map_err(|e| invalid(e.to_string()))
    }
}

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
        other => Err(mismatch(match other {
            Record::Replicas { .. } => "Replicas",
            Record::ServiceSelector { .. } => "ServiceSelector",
            Record::PodTemplate { .. } => "PodTemplate",
            _ => "HpaPin",
        })),
    }
}

/// The error undo returns when a field no longer holds what the action set.
pub(super) fn changed(
    kind: Kind,
    object: &Value,
    field: &str,
    expected: impl ToString,
    found: impl ToString,
) -> Error {
    Error::ChangedSinceApplied {
        kind: kind.to_string(),
        name: json::name(object).to_owned(),
        field: field.to_owned(),
        expected: expected.to_string(),
        found: found.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn records_are_tagged_camel_case() {
        let r = Record::HpaPin {
            min_replicas: None,
            max_replicas: 10,
            annotation: None,
            applied_min: 1,
            applied_max: 1,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"type": "HpaPin", "maxReplicas": 10, "appliedMin": 1, "appliedMax": 1})
        );
    }

    #[test]
    fn unreadable_records_are_refused() {
        let action = |api_version: &str, kind: &str, previous: Option<Value>| Action {
            api_version: api_version.into(),
            kind: kind.into(),
            name: "web".into(),
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
