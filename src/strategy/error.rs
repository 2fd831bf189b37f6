//! What can go wrong when planning, applying or undoing a strategy.

use std::time::Duration;

use serde_json::Value;

use super::{Kind, json};

/// Errors of the strategies. Each names the object (and field) it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} {name} not found")]
    NotFound { kind: String, name: String },

    #[error(
        "Deployment {name} has no earlier revision to roll back to (current revision: {current})"
    )]
    NoPreviousRevision { name: String, current: String },

    #[error("Deployment {name} has no revision {revision} (known revisions: {known})")]
    RevisionNotFound {
        name: String,
        revision: i64,
        known: String,
    },

    #[error("{kind} {name} has no rule {rule}")]
    RuleNotFound {
        kind: String,
        name: String,
        rule: String,
    },

    #[error("{kind} {name} rule {rule} has no backend {backend}")]
    BackendNotFound {
        kind: String,
        name: String,
        rule: String,
        backend: String,
    },

    /// The object changed between reading and writing it; nothing was written. Planning again
    /// from a fresh read is safe.
    #[error("{kind} {name}: {field} changed concurrently, nothing written ({detail})")]
    Conflict {
        kind: String,
        name: String,
        field: String,
        detail: String,
    },

    /// Undo refused: the object no longer holds what the action set. `force` overrides.
    #[error(
        "{kind} {name}: {field} changed since the action (expected {expected}, found {found}); not undoing without force"
    )]
    ChangedSinceApplied {
        kind: String,
        name: String,
        field: String,
        expected: String,
        found: String,
    },

    /// The Deployment runs the template an earlier version rollback rolled back from: a GitOps
    /// tool (or a person) re-applied it. Rolling back again would loop.
    #[error(
        "Deployment {name} runs again the pod template {hash} that was rolled back before (annotation rollback.frys.io/rolled-back-from); not rolling back in a loop: fix the source of the release, or remove the annotation to allow another rollback"
    )]
    BadTemplateReapplied { name: String, hash: String },

    #[error(
        "Deployment {name} is paused: a new template would not roll out; resume it (kubectl rollout resume) first"
    )]
    Paused { name: String },

    /// The object is not in a state the strategy can act on.
    #[error("{kind} {name}: {reason}")]
    Refused {
        kind: String,
        name: String,
        reason: String,
    },

    #[error("timed out after {}s waiting for {what}", after.as_secs())]
    Timeout { what: String, after: Duration },

    /// The rung's parameters cannot be used (normally refused earlier by the CRD's rules).
    #[error("invalid strategy parameters: {0}")]
    InvalidSpec(String),

    /// A recorded action that cannot be read back (hand-edited, or from another operator).
    #[error("action on {kind} {name} cannot be undone: {detail}")]
    InvalidRecord {
        kind: String,
        name: String,
        detail: String,
    },

    /// A webhook call failed or was refused. Names the Secret and key, never the URL, and
    /// never the answer's body.
    #[error("webhook (Secret {secret:?} key {key:?}): {detail}")]
    Webhook {
        secret: String,
        key: String,
        detail: String,
    },

    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// This process lost the lease (or never held it): it must not write.
    #[error(transparent)]
    NotLeader(#[from] crate::leader::NotLeader),
}

impl Error {
    /// Nothing was written because the object changed since it was read: re-planning from a
    /// fresh read is safe.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// Short label for metrics and event reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "NotFound",
            Error::NoPreviousRevision { .. } => "NoPreviousRevision",
            Error::RevisionNotFound { .. } => "RevisionNotFound",
            Error::RuleNotFound { .. } => "RuleNotFound",
            Error::BackendNotFound { .. } => "BackendNotFound",
            Error::Conflict { .. } => "Conflict",
            Error::ChangedSinceApplied { .. } => "ChangedSinceApplied",
            Error::BadTemplateReapplied { .. } => "BadTemplateReapplied",
            Error::Paused { .. } => "Paused",
            Error::Refused { .. } => "Refused",
            Error::Timeout { .. } => "Timeout",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::InvalidRecord { .. } => "InvalidRecord",
            Error::Webhook { .. } => "Webhook",
            Error::Kube(_) => "Kube",
            Error::NotLeader(_) => "NotLeader",
        }
    }

    /// True when retrying from a fresh read may succeed (concurrent edits, API hiccups).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Conflict { .. } => true,
            Error::Kube(kube::Error::Api(status)) => status.code >= 500 || status.code == 429,
            Error::Kube(_) => true,
            _ => false,
        }
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
