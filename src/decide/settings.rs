//! The policy settings the engine decides with, resolved from a spec and its effective values.

use std::time::Duration;

use crate::{
    api::{
        EffectiveSettings, IncidentClass, MinSeverity, RollbackPolicySpec, Rung, StrategyKind,
        duration::InvalidDuration,
    },
    assess::AssessSettings,
};

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("effective setting {0} is missing")]
    Missing(&'static str),
    #[error("{field}: {source}")]
    Invalid {
        field: &'static str,
        #[source]
        source: InvalidDuration,
    },
}

/// One rung as the engine sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RungRule {
    pub strategy: StrategyKind,
    /// Incident classes this rung answers.
    pub incidents: Vec<IncidentClass>,
    /// Least workload status at which it may run automatically.
    pub min_severity: MinSeverity,
}

impl RungRule {
    /// Defaults `incidents` to the strategy's class and `minSeverity` to Critical. EmergencyShutdown
    /// never runs automatically below Unhealthy, whatever the spec says (CEL refuses such specs
    /// too; this holds even for objects stored before that rule).
    pub fn from_rung(rung: &Rung) -> Self {
        let configured = rung.min_severity.unwrap_or(MinSeverity::Critical);
        let min_severity = match rung.type_ {
            StrategyKind::EmergencyShutdown => configured.max(MinSeverity::Unhealthy),
            _ => configured,
        };
        Self {
            strategy: rung.type_,
            incidents: rung.classes(),
            min_severity,
        }
    }
}

/// What one policy allows.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicySettings {
    /// Failing evaluations in a row that open an incident.
    pub consecutive_failures: u32,
    /// The rungs, lightest first.
    pub ladder: Vec<RungRule>,
    /// Remediations per incident.
    pub max_attempts: u32,
    /// Least time between automatic remediations (escalation after a failed step excepted).
    pub cooldown: Duration,
    pub auto_rollback: bool,
    pub dry_run: bool,
    pub suspend: bool,
}

impl PolicySettings {
    /// True when `strategy` is a rung of the ladder.
    pub fn in_ladder(&self, strategy: StrategyKind) -> bool {
        self.ladder.iter().any(|r| r.strategy == strategy)
    }
}

/// Both engine settings of a policy, from its spec and `status.effective` (see
/// `config::effective`).
pub fn from_policy(
    spec: &RollbackPolicySpec,
    effective: &EffectiveSettings,
) -> Result<(AssessSettings, PolicySettings), SettingsError> {
    let duration = |field: &'static str, value: &Option<crate::api::Duration>| {
        value
            .as_ref()
            .ok_or(SettingsError::Missing(field))?
            .get()
            .map_err(|source| SettingsError::Invalid { field, source })
    };
    let assess = AssessSettings {
        no_data: spec.no_data,
        release_window: duration("releaseWindow", &effective.release_window)?,
    };
    let policy = PolicySettings {
        consecutive_failures: spec.consecutive_failures.max(1),
        ladder: spec.strategies.iter().map(RungRule::from_rung).collect(),
        max_attempts: spec.max_rollback_attempts,
        cooldown: duration("cooldown", &effective.cooldown)?,
        auto_rollback: effective
            .auto_rollback
            .ok_or(SettingsError::Missing("autoRollback"))?,
        dry_run: spec.dry_run,
        suspend: spec.suspend,
    };
    Ok((assess, policy))
}
