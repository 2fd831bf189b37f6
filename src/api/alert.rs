//! Alerts from Alertmanager as inputs: the metric kind that reads them, and the record of a
//! firing alert kept in the policy's status and copied into the RollbackEvent it caused.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::*;

/// Most firing alerts kept per policy (status.alerts); more are dropped, oldest first.
pub const MAX_ALERTS_PER_POLICY: usize = 32;

/// A signal fed by Alertmanager's webhook instead of a Prometheus query: Critical while an
/// alert with this name is firing for the policy, Ok otherwise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertSignal {
    /// The alert's `alertname` label.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// What a firing alert means (Release, Unavailable, Dependency, Errors, Performance).
    pub class: IncidentClass,
}

/// A firing alert received from Alertmanager and mapped to this policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertRecord {
    /// Alertmanager's fingerprint of the alert's labels (the deduplication key).
    #[schemars(length(min = 1, max = 64))]
    pub fingerprint: String,
    /// The `alertname` label.
    #[schemars(length(max = 253))]
    pub name: String,
    /// The alert's labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub labels: BTreeMap<String, String>,
    /// When the alert began firing.
    pub starts_at: Time,
    /// When Alertmanager considers it over unless re-sent; a firing alert past it is stale and
    /// no longer counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<Time>,
    /// Link to the rule that fired it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub generator_url: Option<String>,
    /// The rung the alert asks for (its `rollback_strategy` label or annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<StrategyKind>,
}
