//! Vocabulary shared by both kinds: strategies, incident classes, severities, alert levels.
//!
//! Enum values are PascalCase (Kubernetes API conventions, DESIGN.md "Decisions"); the seed's
//! snake_case names are accepted where people type them (annotations, CLI) via `FromStr`.

use std::{fmt, str::FromStr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Normalises `version_rollback`, `VersionRollback`, `version-rollback` to `versionrollback`.
fn fold(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Implements Display (the API spelling) and case-insensitive FromStr accepting snake_case.
macro_rules! api_enum {
    ($ty:ident { $($variant:ident),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => stringify!($variant)),+ }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let folded = fold(s);
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| fold(v.as_str()) == folded)
                    .ok_or_else(|| UnknownValue {
                        kind: stringify!($ty),
                        value: s.to_owned(),
                        expected: Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                    })
            }
        }
    };
}

/// A value that is not one of an enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?} (expected one of: {expected})")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
    pub expected: String,
}

/// A remediation strategy, lightest first.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum StrategyKind {
    /// Route the target's traffic to a fallback backend (or zero weight) for `openDuration`, then half-open.
    CircuitBreaker,
    /// Move route weights from the failing backend to the standby backend.
    TrafficShifting,
    /// Blue/green: make the standby Deployment ready, then switch the Service selector to it.
    EnvironmentSwitch,
    /// Return the Deployment's pod template to the previous (or a given) revision.
    VersionRollback,
    /// Scale the workload to zero (and optionally cut its traffic); recovery is manual.
    EmergencyShutdown,
    /// POST the remediation to a URL from a Secret; the answer is the result (2xx applied).
    Webhook,
}
api_enum!(StrategyKind {
    CircuitBreaker,
    TrafficShifting,
    EnvironmentSwitch,
    VersionRollback,
    EmergencyShutdown,
    Webhook
});

impl StrategyKind {
    /// The incident class this strategy answers by default (DESIGN.md "Decisions").
    pub fn default_class(self) -> IncidentClass {
        match self {
            Self::CircuitBreaker => IncidentClass::Performance,
            Self::TrafficShifting => IncidentClass::Errors,
            Self::EnvironmentSwitch => IncidentClass::Dependency,
            Self::VersionRollback => IncidentClass::Release,
            Self::EmergencyShutdown => IncidentClass::Unavailable,
            // What a webhook does is the user's; an external action most often answers an
            // environment-level failure. Rungs say `incidents` to choose.
            Self::Webhook => IncidentClass::Dependency,
        }
    }

    /// Strategies that can run without parameters, so a manual trigger may use them even when
    /// they are not in the policy's ladder.
    pub fn needs_no_parameters(self) -> bool {
        matches!(self, Self::VersionRollback | Self::EmergencyShutdown)
    }
}

/// What a breach means, and so which strategy answers it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum IncidentClass {
    /// Degradation began within `releaseWindow` of the target's latest revision: a code-level problem.
    Release,
    /// The system is completely unavailable.
    Unavailable,
    /// A dependency signal or check fails: an environment-level failure.
    Dependency,
    /// Error-rate signals breach: a service response anomaly.
    Errors,
    /// Latency or resource signals breach: a severe performance problem.
    Performance,
}
api_enum!(IncidentClass {
    Release,
    Unavailable,
    Dependency,
    Errors,
    Performance
});

/// Severity of one metric's latest evaluation.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum MetricSeverity {
    /// Within thresholds.
    Ok,
    /// Beyond the warning threshold.
    Warning,
    /// Beyond the critical threshold.
    Critical,
    /// No data, or too little traffic to judge.
    Inconclusive,
}
api_enum!(MetricSeverity {
    Ok,
    Warning,
    Critical,
    Inconclusive
});

/// Status of the whole workload: the worst metric severity, or `Unhealthy` when the target has
/// no available replicas, its health endpoint fails, or every signal is critical.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum HealthStatus {
    Healthy,
    Warning,
    Critical,
    Unhealthy,
}
api_enum!(HealthStatus {
    Healthy,
    Warning,
    Critical,
    Unhealthy
});

/// The least workload status at which a rung may run.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum MinSeverity {
    Warning,
    Critical,
    Unhealthy,
}
api_enum!(MinSeverity {
    Warning,
    Critical,
    Unhealthy
});

impl MinSeverity {
    pub fn is_met_by(self, status: HealthStatus) -> bool {
        let needed = match self {
            Self::Warning => HealthStatus::Warning,
            Self::Critical => HealthStatus::Critical,
            Self::Unhealthy => HealthStatus::Unhealthy,
        };
        status >= needed
    }
}

/// Alert levels, mapped to Kubernetes Event types (Info → Normal, others → Warning) and log levels.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum AlertLevel {
    Info,
    Warning,
    Critical,
    Emergency,
}
api_enum!(AlertLevel {
    Info,
    Warning,
    Critical,
    Emergency
});

/// A key in a Secret in the policy's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret (same namespace as the policy).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_seed_spellings() {
        assert_eq!(
            "version_rollback".parse::<StrategyKind>().unwrap(),
            StrategyKind::VersionRollback
        );
        assert_eq!(
            "VersionRollback".parse::<StrategyKind>().unwrap(),
            StrategyKind::VersionRollback
        );
        assert_eq!(
            "EMERGENCY_SHUTDOWN".parse::<StrategyKind>().unwrap(),
            StrategyKind::EmergencyShutdown
        );
        let err = "reboot".parse::<StrategyKind>().unwrap_err().to_string();
        assert!(
            err.contains("reboot") && err.contains("CircuitBreaker"),
            "{err}"
        );
    }

    #[test]
    fn min_severity_ordering() {
        assert!(MinSeverity::Critical.is_met_by(HealthStatus::Unhealthy));
        assert!(!MinSeverity::Unhealthy.is_met_by(HealthStatus::Critical));
        assert!(!MinSeverity::Warning.is_met_by(HealthStatus::Healthy));
    }
}
