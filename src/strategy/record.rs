//! What an [`Action`] records in `previous`: the state a change replaced, plus what the change
//! set (`applied`), so undo can tell whether the object changed since. Data only: undo
//! planning is in `undo.rs`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Error;
use crate::api::{Action, WebhookFormat};

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
    /// A webhook call. The URL is a credential and is not recorded: undo reads it from the
    /// Secret again and POSTs to the undo path on the same origin.
    Webhook {
        secret: String,
        key: String,
        format: WebhookFormat,
        timeout_ms: u64,
        retries: u32,
        /// Path (and query) of the undo URL the webhook answered with, on the origin of the
        /// Secret's URL. None: the answer named none, so the operator cannot undo the call.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        undo_path: Option<String>,
    },
    /// An Argo CD Application's `spec.syncPolicy.automated`, removed to hold its sync.
    AutomatedSync {
        /// Exactly what it was: undo puts this back.
        automated: Value,
    },
    /// A Flux object's `spec.suspend`, set to true to hold its sync.
    Suspend {
        /// Its value before (None: absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        suspend: Option<bool>,
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
}
