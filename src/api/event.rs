//! `RollbackEvent`: one remediation, its actions and its verification.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    AlertRecord, CheckCategory, FieldManagerRef, GitopsHold, HealthStatus, IncidentClass, Issue,
    StrategyKind,
};

/// One remediation of a RollbackPolicy's target: created by the operator (automatic or
/// annotation-triggered) or by a person, then executed, verified and recorded by the operator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "rollback.frys.io",
    version = "v1alpha1",
    kind = "RollbackEvent",
    plural = "rollbackevents",
    singular = "rollbackevent",
    shortname = "rbe",
    category = "frys",
    namespaced,
    status = "RollbackEventStatus",
    derive = "PartialEq",
    doc = "RollbackEvent records one remediation: what was decided and why, each Kubernetes change made with the state it replaced, and the verification report.",
    printcolumn(name = "Policy", type_ = "string", json_path = ".spec.policyRef.name"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Strategy", type_ = "string", json_path = ".spec.strategy"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".spec.reason"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Verification",
        type_ = "string",
        json_path = ".status.verification.overallStatus"
    ),
    printcolumn(name = "Duration", type_ = "string", json_path = ".status.duration"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self == oldSelf", "message": "the spec of a RollbackEvent is immutable; create a new event instead"},
    {"rule": "!has(self.skipVerification) || !self.skipVerification || self.type == 'Drill'", "message": "skipVerification is for drills only (type Drill)"}
]))]
pub struct RollbackEventSpec {
    /// The policy this remediation belongs to (same namespace).
    pub policy_ref: PolicyRef,
    /// Automatic, Manual, Emergency or Drill.
    #[serde(rename = "type")]
    pub type_: EventType,
    /// The strategy to run.
    pub strategy: StrategyKind,
    /// Why, in words.
    #[schemars(length(max = 1024))]
    pub reason: String,
    /// The assessment that caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assessment: Option<Assessment>,
    /// Who asked (best effort, informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub requested_by: Option<String>,
    /// The failed event this one escalates from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated_from: Option<String>,
    /// For a VersionRollback: the release judged bad and the revision to go back to, fixed
    /// when the remediation was decided. A different release running by execution time (a
    /// roll-forward) is not rolled back: the event is Skipped as superseded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_target: Option<RollbackTarget>,
    /// Drills only: finish once applied, without verification (the drill's `verify: false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_verification: bool,
    /// The Alertmanager alerts firing for the policy when this remediation was decided.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub alerts: Vec<AlertRecord>,
}

/// What a version rollback was decided against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackTarget {
    /// Revision of the Deployment judged bad.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub from_revision: Option<String>,
    /// Hash of the pod template judged bad (as in `rollback.frys.io/rolled-back-from`).
    #[schemars(length(max = 64))]
    pub from_template: String,
    /// Revision to roll back to.
    #[schemars(length(max = 32))]
    pub to_revision: String,
}

/// Reference to a RollbackPolicy in the same namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyRef {
    /// Name of the RollbackPolicy.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// How a remediation was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum EventType {
    /// Decided by the operator from the policy's signals.
    Automatic,
    /// Asked for by a person (annotation, CLI or kubectl create).
    Manual,
    /// Emergency stop asked for by a person; bypasses everything but suspend.
    Emergency,
    /// A rehearsal by a RollbackDrill: applied, verified and undone again. Not part of any
    /// incident: no attempts, cooldown or remediation budget.
    Drill,
}

/// The assessment behind a decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Assessment {
    pub status: HealthStatus,
    pub score: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<IncidentClass>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issues: Vec<Issue>,
}

/// Lifecycle of a remediation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum EventPhase {
    /// Accepted, not started.
    #[default]
    Pending,
    /// Applying the strategy's changes.
    Executing,
    /// Changes applied; verification running.
    Verifying,
    /// Applied and verified.
    Succeeded,
    /// Could not be applied, or verification failed.
    Failed,
    /// Not applied: the policy is in dry run.
    Skipped,
}

impl EventPhase {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Skipped)
    }
}

/// Observed state, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackEventStatus {
    #[serde(default)]
    pub phase: EventPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Duration from start to completion, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The same duration as text, e.g. 45s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Each Kubernetes change made, with the state it replaced (enough to undo it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
    /// The operator's signature of `actions` (HMAC-SHA256 under a key only the operator
    /// reads): undo applies no action whose signature does not check. Written by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub actions_digest: Option<String>,
    /// Verification report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationReport>,
    /// The event created to escalate after this one failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated_to: Option<String>,
    /// Explanation in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why the last undo was refused (an object changed since the action). `autoRestore` does
    /// not ask again; a person may annotate `rollback.frys.io/undo=force`. Cleared by an undo
    /// that succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_refused: Option<String>,
    /// What this remediation did, or could not do, to the target's GitOps owner's sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops: Option<GitopsHold>,
    /// Who re-applied the template a rollback had rolled back from (from the Deployment's
    /// managedFields), when this remediation found it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reapplied_by: Option<FieldManagerRef>,
}

/// One Kubernetes change made by a strategy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// The object's namespace, when not the event's (an Argo CD Application in `argocd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// What changed, in words.
    pub summary: String,
    /// The state replaced, enough to undo the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub previous: Option<serde_json::Value>,
    /// When it was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<Time>,
    /// True once undone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub undone: bool,
}

/// The seed's verification report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationReport {
    pub overall_status: VerificationStatus,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recommendations: Vec<String>,
}

/// Verdict of a verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum VerificationStatus {
    Passed,
    Failed,
    Partial,
}

/// One verification check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    pub name: String,
    pub category: CheckCategory,
    pub status: CheckStatus,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CheckStatus {
    Passed,
    Failed,
    Skipped,
}
