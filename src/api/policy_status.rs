//! What the operator writes in a RollbackPolicy's status: health, incident, last remediation
//! and the settings in force.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// The API's types refer to each other across its files.
use super::*;

/// Observed state, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPolicyStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, MetricsAvailable, Healthy, Degraded, RollbackInProgress, Suspended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Latest assessment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthReport>,
    /// Failing evaluations in a row (grows on Critical/Unhealthy, holds on Warning and
    /// Inconclusive, resets on Healthy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_streak: Option<u32>,
    /// When the current failure streak began: the start of the degradation, used to tell a
    /// Release incident and to correlate policies that turn critical together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Time>,
    /// The open incident, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<IncidentStatus>,
    /// When the last automatic remediation was decided; cooldown counts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_automatic_remediation: Option<Time>,
    /// The last rollback.frys.io/ack value consumed (a new value acknowledges again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<String>,
    /// The last manual trigger or emergency consumed, so the same request re-added within
    /// cooldown (e.g. by a GitOps tool) does not fire twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trigger: Option<ConsumedTrigger>,
    /// The most recent remediation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rollback: Option<LastRollback>,
    /// The settings in force after the environment profile and operator defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<EffectiveSettings>,
    /// The target's Argo CD or Flux owner, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops: Option<GitopsStatus>,
    /// A template rolled back from that came back in this incident, and who wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reapplied: Option<Reapplied>,
    /// Firing Alertmanager alerts mapped to this policy, keyed by fingerprint. Written only by
    /// the alert receiver (field manager frys-rollback-alerts), on any replica.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["fingerprint"]))]
    pub alerts: Vec<AlertRecord>,
}

/// One assessment of the workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// Healthy, Warning, Critical or Unhealthy.
    pub status: HealthStatus,
    /// Health score, 0 (worst) to 100 (best), for display and ranking only: decisions use the
    /// severities. 100 × (1 − weighted mean badness of the signals), badness in 0-1 piecewise
    /// linear in the value: 0 at the best value (0 for an Above threshold), 0.1 at the
    /// warning threshold, 0.5 at critical, 1 one warning-to-critical distance past it. So a
    /// workload with every signal inside half its warning threshold scores 95 or more, one at
    /// its warning thresholds 90, and only a signal past its critical threshold takes the score
    /// below 50. 0 when the target has no available replica.
    pub score: f64,
    /// Signals beyond a threshold, and inconclusive ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issues: Vec<Issue>,
    /// Latest value of each signal that had data.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// When the assessment was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated_at: Option<Time>,
}

/// A signal beyond a threshold, or without a verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Issue {
    /// Signal name.
    pub metric: String,
    /// Observed value, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The threshold that was crossed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Warning, Critical or Inconclusive.
    pub severity: MetricSeverity,
    /// Class of the signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<IncidentClass>,
    /// Explanation in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An open incident.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentStatus {
    /// Class of the incident.
    pub class: IncidentClass,
    /// When it opened.
    pub started_at: Time,
    /// Remediations made in this incident.
    #[serde(default)]
    pub attempts: u32,
    /// Rungs tried, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tried: Vec<StrategyKind>,
    /// The RollbackEvent in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_event: Option<String>,
    /// True when the last step failed verification: the next one escalates without waiting
    /// for cooldown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub last_step_failed: bool,
    /// True once attempts are used up: automatic action is held until the target is healthy or
    /// a person annotates rollback.frys.io/ack.
    #[serde(default)]
    pub failed: bool,
    /// Explanation in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A manual trigger or emergency request that was acted on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumedTrigger {
    /// The request (strategy or emergency, and reason) as the operator read it.
    pub value: String,
    /// When it was consumed.
    pub time: Time,
}

/// Summary of the most recent remediation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastRollback {
    /// Name of the RollbackEvent.
    pub event: String,
    pub strategy: StrategyKind,
    pub phase: super::EventPhase,
    pub time: Time,
}

/// Settings in force after the environment profile and operator defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveSettings {
    /// The environment profile the policy inherits from: its namespace's
    /// rollback.frys.io/profile label, else the operator's --environment (ROLLBACK_ENV).
    /// Absent when the operator has no profile configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The spec fields the policy leaves out that the profile supplied (strategies, interval,
    /// autoRollback, rollbackTimeout, cooldown, releaseWindow, metrics[NAME].critical).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherited: Vec<String>,
    // Omitted, not null, without a URL: the schema has no null (an operator started without
    // --prometheus-url could not write any policy's status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_url: Option<String>,
    pub interval: Option<Duration>,
    pub rate_window: Option<Duration>,
    pub workload_label: Option<String>,
    pub release_window: Option<Duration>,
    pub auto_rollback: Option<bool>,
    pub rollback_timeout: Option<Duration>,
    pub cooldown: Option<Duration>,
    pub verification_timeout: Option<Duration>,
    pub stabilization_delay: Option<Duration>,
    /// Each signal with its resolved thresholds, direction, weight and class.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<EffectiveMetric>,
}

/// A signal after defaulting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveMetric {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<f64>,
    pub direction: Direction,
    pub weight: f64,
    pub class: IncidentClass,
    /// How values read to people (from the preset; custom queries show the number alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<Unit>,
}
