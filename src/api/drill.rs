//! `RollbackDrill`: a scheduled rehearsal of a policy's rungs (apply, verify, undo, compare).
//!
//! Its own kind rather than a schedule on the policy: who may schedule drills is granted
//! separately (RBAC on `rollbackdrills`), a drill's status and report do not churn the policy's
//! status (which GitOps tools and dashboards read), and one policy may have several drills.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{EventPhase, PolicyRef, StrategyKind, VerificationStatus};

/// Rehearses a RollbackPolicy's rungs on a schedule: each strategy is applied for real,
/// verified, undone, and the touched objects compared with their state before the drill.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "rollback.frys.io",
    version = "v1alpha1",
    kind = "RollbackDrill",
    plural = "rollbackdrills",
    singular = "rollbackdrill",
    shortname = "rbd",
    category = "frys",
    namespaced,
    status = "RollbackDrillStatus",
    derive = "PartialEq",
    doc = "RollbackDrill rehearses a RollbackPolicy's rungs on a cron schedule: it applies each strategy for real (RollbackEvents of type Drill), verifies it, undoes it and reports whether the objects came back exactly. Runs only where the operator allows drills (--allow-drills) and the namespace is labelled rollback.frys.io/drills=enabled.",
    printcolumn(name = "Policy", type_ = "string", json_path = ".spec.policyRef.name"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(
        name = "Allowed",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Allowed\")].status"
    ),
    printcolumn(name = "Result", type_ = "string", json_path = ".status.report.result"),
    printcolumn(name = "Last", type_ = "date", json_path = ".status.lastScheduleTime"),
    // A string, not a date: kubectl prints future dates as <invalid>.
    printcolumn(name = "Next", type_ = "string", json_path = ".status.nextScheduleTime"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.strategies.all(s, self.strategies.exists_one(t, t == s))", "message": "each strategy may be listed once"}
]))]
pub struct RollbackDrillSpec {
    /// The policy whose rungs are exercised (same namespace).
    pub policy_ref: PolicyRef,
    /// Cron schedule: five fields (minute hour day-of-month month day-of-week), or six with
    /// seconds first; `@hourly`, `@daily`, `@weekly` work too. Absent: the drill runs only when
    /// asked (annotation `rollback.frys.io/run-now`, or `frys-rollback drill`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub schedule: Option<String>,
    /// IANA time zone the schedule is read in (e.g. Europe/Stockholm). Default: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
    /// The rungs to exercise, in order; each must be a rung of the policy's ladder.
    #[schemars(length(min = 1, max = 5))]
    pub strategies: Vec<StrategyKind>,
    /// Verify each applied strategy with the policy's verification (the seed's six checks)
    /// before undoing it.
    #[serde(default = "yes")]
    pub verify: bool,
    /// Hold the schedule; a run in progress finishes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// Earlier runs kept in `status.history` (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 20))]
    pub history_limit: Option<u32>,
}

fn yes() -> bool {
    true
}

/// Observed state, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackDrillStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (spec usable: schedule, time zone, policy and its rungs), `Allowed` (the
    /// operator and the namespace allow drills), `Waiting` (a due run waits: an incident is
    /// open or a remediation runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The latest slot handled (run, or refused because drills are not allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// The next slot of the schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// The RollbackEvents of the run in progress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<PolicyRef>,
    /// The latest run (in progress while its result is `Running`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<DrillReport>,
    /// Earlier runs, newest first, at most `historyLimit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<DrillSummary>,
}

/// One run of a drill.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillReport {
    /// Names this run's RollbackEvents.
    #[schemars(length(max = 32))]
    pub id: String,
    /// `Schedule` or `RunNow`.
    pub trigger: DrillTrigger,
    pub started_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    pub result: DrillResult,
    /// Explanation in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// One entry per strategy, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strategies: Vec<StrategyReport>,
}

/// What started a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DrillTrigger {
    /// A slot of `spec.schedule`.
    Schedule,
    /// The `rollback.frys.io/run-now` annotation (`frys-rollback drill`).
    RunNow,
}

/// Outcome of a run, or of one strategy in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DrillResult {
    /// In progress.
    Running,
    /// Applied, verified (when asked), undone, and the objects restored exactly.
    Succeeded,
    /// Something did not work: the apply, the verification, the undo, or the comparison.
    Failed,
    /// Stopped before the end: an incident opened, or drills were disallowed meanwhile.
    Aborted,
}

/// Where one strategy of a run is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DrillStep {
    /// Not started.
    #[default]
    Pending,
    /// Its RollbackEvent applies (and verifies) the strategy.
    Applying,
    /// Its RollbackEvent is being undone.
    Undoing,
    /// Finished.
    Done,
}

/// One strategy of a run: the timings and verdicts the seed's drill report asks for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StrategyReport {
    pub strategy: StrategyKind,
    #[serde(default)]
    pub step: DrillStep,
    /// The RollbackEvent (type Drill) that applied it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The event's final phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_phase: Option<EventPhase>,
    /// From the event's start to its last change applied (one-second resolution: the event's
    /// timestamps are stored to the second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_ms: Option<u64>,
    /// From the last change applied to the verdict (includes the stabilization delay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_ms: Option<u64>,
    /// The verification verdict; absent when `verify` is false or nothing was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationStatus>,
    /// When the undo was asked for (the event annotated `rollback.frys.io/undo=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_requested_at: Option<Time>,
    /// From asking for the undo to seeing it done (observed every 250 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_ms: Option<u64>,
    /// The objects the strategy touches, as found before the drill.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<ObjectDigest>,
    /// True when every touched object is, after the undo, as before the drill (spec, labels,
    /// annotations and the rest, ignoring only server-managed metadata and status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_exactly: Option<bool>,
    /// The objects that differ after the undo.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<DrillResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An object as it was before a drill: its identity and a digest of its comparable content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectDigest {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// SHA-256 of the object's canonical JSON without server-managed fields.
    #[schemars(length(max = 64))]
    pub sha256: String,
}

/// An earlier run, in brief.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillSummary {
    pub id: String,
    pub started_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    pub result: DrillResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl StrategyReport {
    /// A strategy not started yet.
    pub fn pending(strategy: StrategyKind) -> Self {
        Self {
            strategy,
            step: DrillStep::Pending,
            event: None,
            event_phase: None,
            apply_ms: None,
            verify_ms: None,
            verification: None,
            undo_requested_at: None,
            undo_ms: None,
            objects: vec![],
            restored_exactly: None,
            differences: vec![],
            result: None,
            message: None,
        }
    }
}

impl DrillReport {
    /// The brief form kept in `status.history`.
    pub fn summary(&self) -> DrillSummary {
        DrillSummary {
            id: self.id.clone(),
            started_at: self.started_at.clone(),
            completed_at: self.completed_at.clone(),
            result: self.result,
            message: self.message.clone(),
        }
    }
}
