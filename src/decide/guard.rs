//! Blast-radius guard: cluster-wide limits on automatic remediation (DESIGN.md "Blast radius").
//!
//! Pure: the caller gathers the cluster's picture (active remediations, freeze switches, which
//! policies are failing since when) and asks for a verdict per policy.
//! - Freeze (operator flag or namespace annotation) and an exhausted budget of concurrent
//!   automatic remediations hold every automatic step.
//! - Correlation holds automatic `VersionRollback`s only: when several policies turn critical
//!   together, or fail the same dependency signal, their releases are unlikely to be the cause,
//!   and rolling them all back would add churn to an outage. Other rungs may still run.

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;

use crate::{
    api::{IncidentClass, StrategyKind, annotations, duration},
    config::OperatorConfig,
};

/// Guard limits (operator configuration).
#[derive(Clone, Debug, PartialEq)]
pub struct GuardSettings {
    /// Concurrent automatic remediations allowed cluster-wide; 0 allows none.
    pub max_concurrent: u32,
    /// This many policies turning critical within `correlation_window` suggest a common cause.
    pub correlation_min_policies: usize,
    pub correlation_window: Duration,
    /// This many policies failing the same dependency signal make it the suspected cause.
    pub shared_dependency_min_policies: usize,
}

impl Default for GuardSettings {
    fn default() -> Self {
        Self {
            max_concurrent: 3,
            correlation_min_policies: 3,
            correlation_window: Duration::from_secs(120),
            shared_dependency_min_policies: 2,
        }
    }
}

impl GuardSettings {
    /// The operator's guard settings.
    pub fn from_config(config: &OperatorConfig) -> Self {
        Self {
            max_concurrent: config.max_concurrent_remediations,
            correlation_min_policies: config.correlation_min_policies,
            correlation_window: config.correlation_window,
            ..Self::default()
        }
    }
}

/// A policy whose workload is failing (status Critical or Unhealthy).
#[derive(Clone, Debug, PartialEq)]
pub struct CriticalPolicy {
    /// `namespace/name`.
    pub key: String,
    /// When it turned critical (its `failingSince`).
    pub since: Timestamp,
    /// Classes of its critical signals (or its incident).
    pub classes: Vec<IncidentClass>,
    /// Identities of its failing dependency signals (e.g. a check name or query), compared
    /// across policies.
    pub failing_dependencies: Vec<String>,
}

/// The cluster as the guard sees it.
#[derive(Clone, Debug, Default)]
pub struct ClusterView<'a> {
    /// Automatic remediations executing or verifying now.
    pub active_automatic: u32,
    /// The operator's `--freeze`.
    pub operator_freeze: bool,
    pub critical: &'a [CriticalPolicy],
}

/// Who froze automatic remediation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreezeSource {
    Operator,
    Namespace,
}

/// What several failing policies seem to share.
#[derive(Clone, Debug, PartialEq)]
pub enum CommonCause {
    /// The same dependency signal fails for these policies.
    SharedDependency {
        signal: String,
        policies: Vec<String>,
    },
    /// These policies turned critical within `window` of each other.
    Simultaneous {
        policies: Vec<String>,
        window: Duration,
        classes: Vec<IncidentClass>,
    },
}

impl CommonCause {
    pub fn policies(&self) -> &[String] {
        match self {
            Self::SharedDependency { policies, .. } | Self::Simultaneous { policies, .. } => {
                policies
            }
        }
    }

    /// The suspected cause, in words.
    pub fn sentence(&self) -> String {
        match self {
            Self::SharedDependency { signal, policies } => format!(
                "suspected common cause: dependency signal {signal:?} fails for {} policies ({})",
                policies.len(),
                policies.join(", ")
            ),
            Self::Simultaneous {
                policies,
                window,
                classes,
            } => {
                let classes: Vec<&str> = classes.iter().map(|c| c.as_str()).collect();
                format!(
                    "suspected common cause: {} policies turned critical within {} ({}; classes {}), more likely the environment than their releases",
                    policies.len(),
                    duration::format(*window),
                    policies.join(", "),
                    classes.join(", ")
                )
            }
        }
    }
}

/// One reason the guard holds automatic remediation.
#[derive(Clone, Debug, PartialEq)]
pub enum GuardHold {
    Frozen(FreezeSource),
    Budget { active: u32, budget: u32 },
    Correlated(CommonCause),
}

impl GuardHold {
    /// True when the hold stops an automatic step with `strategy`.
    pub fn blocks(&self, strategy: StrategyKind) -> bool {
        match self {
            Self::Frozen(_) | Self::Budget { .. } => true,
            Self::Correlated(_) => strategy == StrategyKind::VersionRollback,
        }
    }

    pub fn sentence(&self) -> String {
        match self {
            Self::Frozen(FreezeSource::Operator) => {
                "automatic remediation is frozen by the operator (--freeze)".into()
            }
            Self::Frozen(FreezeSource::Namespace) => format!(
                "automatic remediation is frozen in this namespace ({})",
                annotations::FREEZE
            ),
            Self::Budget { active, budget } => format!(
                "the cluster-wide budget of concurrent automatic remediations is used up ({active} active, budget {budget})"
            ),
            Self::Correlated(cause) => {
                format!("automatic version rollbacks are held: {}", cause.sentence())
            }
        }
    }
}

/// The guard's verdict for one policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GuardVerdict {
    pub holds: Vec<GuardHold>,
}

impl GuardVerdict {
    /// No hold.
    pub fn clear() -> Self {
        Self::default()
    }

    /// The first hold that stops an automatic step with `strategy`, if any.
    pub fn blocking(&self, strategy: StrategyKind) -> Option<&GuardHold> {
        self.holds.iter().find(|h| h.blocks(strategy))
    }
}

/// The guard's verdict for the policy `key`.
pub fn verdict(
    settings: &GuardSettings,
    view: &ClusterView<'_>,
    key: &str,
    namespace_frozen: bool,
) -> GuardVerdict {
    let mut holds = vec![];
    if view.operator_freeze {
        holds.push(GuardHold::Frozen(FreezeSource::Operator));
    }
    if namespace_frozen {
        holds.push(GuardHold::Frozen(FreezeSource::Namespace));
    }
    if view.active_automatic >= settings.max_concurrent {
        holds.push(GuardHold::Budget {
            active: view.active_automatic,
            budget: settings.max_concurrent,
        });
    }
    holds.extend(
        common_causes(settings, view.critical)
            .into_iter()
            .filter(|c| c.policies().iter().any(|p| p == key))
            .map(GuardHold::Correlated),
    );
    GuardVerdict { holds }
}

/// Every suspected common cause among the failing policies: shared dependency signals first,
/// then groups of policies that turned critical close together (overlapping windows merged).
pub fn common_causes(settings: &GuardSettings, critical: &[CriticalPolicy]) -> Vec<CommonCause> {
    let mut causes = vec![];

    let mut by_signal: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for p in critical {
        for signal in &p.failing_dependencies {
            let policies = by_signal.entry(signal).or_default();
            if !policies.contains(&p.key) {
                policies.push(p.key.clone());
            }
        }
    }
    for (signal, mut policies) in by_signal {
        if policies.len() >= settings.shared_dependency_min_policies.max(2) {
            policies.sort();
            causes.push(CommonCause::SharedDependency {
                signal: signal.to_owned(),
                policies,
            });
        }
    }

    let mut sorted: Vec<&CriticalPolicy> = critical.iter().collect();
    sorted.sort_by_key(|p| p.since);
    let within = |a: Timestamp, b: Timestamp| {
        Duration::try_from(b.duration_since(a)).is_ok_and(|d| d <= settings.correlation_window)
    };
    let min = settings.correlation_min_policies.max(2);
    // Index ranges [start, end] of windows holding enough policies, merged when they overlap.
    let mut groups: Vec<(usize, usize)> = vec![];
    for start in 0..sorted.len() {
        let end = (start..sorted.len())
            .take_while(|&j| within(sorted[start].since, sorted[j].since))
            .last()
            .unwrap_or(start);
        if end + 1 - start < min {
            continue;
        }
        match groups.last_mut() {
            Some((_, last_end)) if start <= *last_end => *last_end = end.max(*last_end),
            _ => groups.push((start, end)),
        }
    }
    for (start, end) in groups {
        let members = &sorted[start..=end];
        let mut policies: Vec<String> = members.iter().map(|p| p.key.clone()).collect();
        policies.sort();
        let mut classes: Vec<IncidentClass> =
            members.iter().flat_map(|p| p.classes.clone()).collect();
        classes.sort();
        classes.dedup();
        causes.push(CommonCause::Simultaneous {
            policies,
            window: settings.correlation_window,
            classes,
        });
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn failing(key: &str, since: i64, deps: &[&str]) -> CriticalPolicy {
        CriticalPolicy {
            key: key.into(),
            since: t(since),
            classes: vec![IncidentClass::Errors],
            failing_dependencies: deps.iter().map(|d| d.to_string()).collect(),
        }
    }

    fn view(critical: &[CriticalPolicy]) -> ClusterView<'_> {
        ClusterView {
            critical,
            ..Default::default()
        }
    }

    #[test]
    fn many_policies_critical_at_once_hold_version_rollbacks_only() {
        let critical = [
            failing("shop/web", 0, &[]),
            failing("shop/api", 30, &[]),
            failing("pay/gw", 90, &[]),
            failing("blog/web", 3600, &[]),
        ];
        let settings = GuardSettings::default();
        let v = verdict(&settings, &view(&critical), "shop/web", false);
        let hold = v.blocking(StrategyKind::VersionRollback).expect("held");
        let GuardHold::Correlated(CommonCause::Simultaneous { policies, .. }) = hold else {
            panic!("{hold:?}")
        };
        assert_eq!(policies, &["pay/gw", "shop/api", "shop/web"]);
        assert!(
            hold.sentence()
                .contains("3 policies turned critical within 2m"),
            "{}",
            hold.sentence()
        );
        // Other rungs still run.
        assert_eq!(v.blocking(StrategyKind::TrafficShifting), None);
        // The policy that failed an hour later is not part of the group.
        let v = verdict(&settings, &view(&critical), "blog/web", false);
        assert_eq!(v.blocking(StrategyKind::VersionRollback), None);
    }

    #[test]
    fn operator_defaults() {
        assert_eq!(
            GuardSettings::from_config(&OperatorConfig::defaults()),
            GuardSettings::default()
        );
    }

    #[test]
    fn two_at_once_are_not_a_pattern() {
        let critical = [failing("a/a", 0, &[]), failing("b/b", 10, &[])];
        let v = verdict(&GuardSettings::default(), &view(&critical), "a/a", false);
        assert_eq!(v, GuardVerdict::clear());
    }

    #[test]
    fn overlapping_windows_merge_into_one_cause() {
        // 0, 60, 120, 180 s: two overlapping 2m windows of three policies each: one cluster.
        let critical: Vec<_> = (0..4)
            .map(|i| failing(&format!("ns/p{i}"), i * 60, &[]))
            .collect();
        let causes = common_causes(&GuardSettings::default(), &critical);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].policies().len(), 4);
    }

    #[test]
    fn a_shared_failing_dependency_is_named() {
        let critical = [
            failing("shop/web", 0, &["postgres"]),
            failing("shop/api", 3000, &["postgres", "redis"]),
        ];
        let v = verdict(
            &GuardSettings::default(),
            &view(&critical),
            "shop/api",
            false,
        );
        let hold = v.blocking(StrategyKind::VersionRollback).expect("held");
        assert_eq!(
            hold,
            &GuardHold::Correlated(CommonCause::SharedDependency {
                signal: "postgres".into(),
                policies: vec!["shop/api".into(), "shop/web".into()],
            })
        );
        assert!(
            hold.sentence()
                .contains("\"postgres\" fails for 2 policies")
        );
    }

    proptest::proptest! {
        /// N policies (N >= 3) turning critical inside one window all have their rollbacks held;
        /// the same policies spread wider than the window do not.
        #[test]
        fn bursts_are_held_spread_failures_are_not(
            offsets in proptest::collection::vec(0i64..=120, 3..8),
            spread in 121i64..3600,
        ) {
            let settings = GuardSettings::default();
            let burst: Vec<_> = offsets.iter().enumerate()
                .map(|(i, o)| failing(&format!("ns/p{i}"), *o, &[]))
                .collect();
            for p in &burst {
                let v = verdict(&settings, &view(&burst), &p.key, false);
                proptest::prop_assert!(v.blocking(StrategyKind::VersionRollback).is_some());
            }
            let spread: Vec<_> = (0..offsets.len())
                .map(|i| failing(&format!("ns/p{i}"), i as i64 * spread, &[]))
                .collect();
            proptest::prop_assert!(common_causes(&settings, &spread).is_empty());
        }
    }

    #[test]
    fn freeze_and_budget_hold_everything() {
        let v = verdict(
            &GuardSettings::default(),
            &ClusterView {
                active_automatic: 3,
                operator_freeze: true,
                critical: &[],
            },
            "a/a",
            true,
        );
        assert_eq!(
            v.holds,
            vec![
                GuardHold::Frozen(FreezeSource::Operator),
                GuardHold::Frozen(FreezeSource::Namespace),
                GuardHold::Budget {
                    active: 3,
                    budget: 3
                },
            ]
        );
        assert!(StrategyKind::ALL.iter().all(|s| v.blocking(*s).is_some()));
        let v = verdict(
            &GuardSettings::default(),
            &ClusterView {
                active_automatic: 2,
                ..Default::default()
            },
            "a/a",
            false,
        );
        assert_eq!(v.blocking(StrategyKind::CircuitBreaker), None);
    }
}
