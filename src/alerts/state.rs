//! Pure rules of the alert receiver: which policy an alert is for, and how a notification
//! changes a policy's firing alerts (status.alerts). No client, no network.

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::payload::{Alert, AlertStatus};
use crate::api::{AlertRecord, MAX_ALERTS_PER_POLICY, StrategyKind};

/// Label naming the policy explicitly (in the alert's `namespace`).
pub const POLICY_LABEL: &str = "rollback_policy";
/// Label or annotation naming the rung a firing alert triggers.
pub const STRATEGY_KEY: &str = "rollback_strategy";

/// A policy as the router sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyRef<'a> {
    pub name: &'a str,
    /// The policy's workload label (its own, else the operator's).
    pub workload_label: &'a str,
    pub target: &'a str,
}

/// The policy (by name) of an alert in its namespace: its `rollback_policy` label, else the
/// one policy whose target the workload label names. None when nothing matches.
pub fn route<'a>(labels: &BTreeMap<String, String>, policies: &[PolicyRef<'a>]) -> Option<&'a str> {
    if let Some(name) = labels.get(POLICY_LABEL) {
        return policies.iter().find(|p| p.name == name).map(|p| p.name);
    }
    policies
        .iter()
        .find(|p| labels.get(p.workload_label).is_some_and(|t| t == p.target))
        .map(|p| p.name)
}

/// The record of a firing alert received `now`. It stays firing until resolved, or until the
/// later of its `endsAt` and `now + ttl` (an alert whose resolution never arrives must not hold
/// a workload down forever; Alertmanager re-sends firing alerts every repeat_interval, which
/// must stay below `ttl`).
pub fn record(alert: &Alert, now: Timestamp, ttl: Duration) -> AlertRecord {
    let floor = now + ttl;
    let ends = alert
        .ends_at
        .filter(|e| *e > alert.starts_at)
        .map_or(floor, |e| e.max(floor));
    let strategy = alert
        .labels
        .get(STRATEGY_KEY)
        .or(alert.annotations.get(STRATEGY_KEY))
        .and_then(|s| s.parse::<StrategyKind>().ok());
    AlertRecord {
        fingerprint: alert.fingerprint.clone(),
        name: alert.labels.get("alertname").cloned().unwrap_or_default(),
        labels: alert
            .labels
            .iter()
            .take(64)
            .map(|(k, v)| (k.clone(), v.chars().take(1024).collect()))
            .collect(),
        starts_at: Time(alert.starts_at),
        ends_at: Some(Time(ends)),
        generator_url: (!alert.generator_url.is_empty())
            .then(|| alert.generator_url.chars().take(2048).collect()),
        strategy,
    }
}

pub use crate::assess::alerts::is_active;

/// A policy's firing alerts after a notification: stale ones dropped, resolved fingerprints
/// removed, firing ones added or refreshed (deduplicated by fingerprint), at most
/// [`MAX_ALERTS_PER_POLICY`] (the oldest by `startsAt` go first). Also returns the fingerprints
/// that are new, so a rung is triggered once per alert, not once per re-send.
pub fn merge(
    current: &[AlertRecord],
    incoming: &[(AlertStatus, AlertRecord)],
    now: Timestamp,
) -> (Vec<AlertRecord>, Vec<String>) {
    let mut by_fp: BTreeMap<String, AlertRecord> = current
        .iter()
        .filter(|a| is_active(a, now))
        .map(|a| (a.fingerprint.clone(), a.clone()))
        .collect();
    let mut new = Vec::new();
    for (status, alert) in incoming {
        match status {
            AlertStatus::Resolved => {
                by_fp.remove(&alert.fingerprint);
                new.retain(|f| f != &alert.fingerprint);
            }
            AlertStatus::Firing => {
                if by_fp
                    .insert(alert.fingerprint.clone(), alert.clone())
                    .is_none()
                {
                    new.push(alert.fingerprint.clone());
                }
            }
        }
    }
    let mut alerts: Vec<AlertRecord> = by_fp.into_values().collect();
    alerts.sort_by_key(|a| std::cmp::Reverse(a.starts_at.0));
    alerts.truncate(MAX_ALERTS_PER_POLICY);
    new.retain(|f| alerts.iter().any(|a| &a.fingerprint == f));
    alerts.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    (alerts, new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(fp: &str, status: AlertStatus, labels: &[(&str, &str)]) -> Alert {
        Alert {
            status,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: BTreeMap::new(),
            starts_at: "2026-12-01T10:00:00Z".parse().unwrap(),
            ends_at: None,
            generator_url: "http://prom/graph".into(),
            fingerprint: fp.into(),
        }
    }

    fn now() -> Timestamp {
        "2026-12-01T10:01:00Z".parse().unwrap()
    }

    const TTL: Duration = Duration::from_secs(600);

    #[test]
    fn routes_by_policy_label_then_workload_label() {
        let policies = [
            PolicyRef {
                name: "web",
                workload_label: "app",
                target: "web",
            },
            PolicyRef {
                name: "api-guard",
                workload_label: "service",
                target: "api",
            },
        ];
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(route(&labels(&[("app", "web")]), &policies), Some("web"));
        assert_eq!(
            route(&labels(&[("service", "api")]), &policies),
            Some("api-guard")
        );
        assert_eq!(route(&labels(&[("app", "api")]), &policies), None);
        // The explicit label wins, and must name a policy that exists.
        assert_eq!(
            route(
                &labels(&[("app", "web"), ("rollback_policy", "api-guard")]),
                &policies
            ),
            Some("api-guard")
        );
        assert_eq!(
            route(
                &labels(&[("app", "web"), ("rollback_policy", "nope")]),
                &policies
            ),
            None
        );
    }

    #[test]
    fn firing_is_deduplicated_and_resolved_ends_it() {
        let a = record(
            &alert("aa", AlertStatus::Firing, &[("alertname", "X")]),
            now(),
            TTL,
        );
        let (alerts, new) = merge(&[], &[(AlertStatus::Firing, a.clone())], now());
        assert_eq!((alerts.len(), new), (1, vec!["aa".to_string()]));
        // A re-send refreshes, is not new.
        let (alerts, new) = merge(&alerts, &[(AlertStatus::Firing, a.clone())], now());
        assert_eq!((alerts.len(), new.len()), (1, 0));
        let (alerts, _) = merge(&alerts, &[(AlertStatus::Resolved, a)], now());
        assert!(alerts.is_empty());
    }

    #[test]
    fn stale_alerts_expire_and_state_is_bounded() {
        let a = record(&alert("aa", AlertStatus::Firing, &[]), now(), TTL);
        assert!(is_active(&a, now() + Duration::from_secs(599)));
        assert!(!is_active(&a, now() + Duration::from_secs(601)));
        let (alerts, _) = merge(&[a], &[], now() + Duration::from_secs(601));
        assert!(alerts.is_empty());
        // A later endsAt from Alertmanager extends the floor.
        let mut long = alert("bb", AlertStatus::Firing, &[]);
        long.ends_at = Some("2026-12-01T12:00:00Z".parse().unwrap());
        assert_eq!(
            record(&long, now(), TTL).ends_at.unwrap().0,
            long.ends_at.unwrap()
        );

        let many: Vec<_> = (0..40)
            .map(|i| {
                let mut a = alert(&format!("f{i:02}"), AlertStatus::Firing, &[]);
                a.starts_at += Duration::from_secs(i);
                (AlertStatus::Firing, record(&a, now(), TTL))
            })
            .collect();
        let (alerts, new) = merge(&[], &many, now());
        assert_eq!(alerts.len(), MAX_ALERTS_PER_POLICY);
        assert_eq!(new.len(), MAX_ALERTS_PER_POLICY);
        // The newest are kept.
        assert!(alerts.iter().all(|a| a.fingerprint.as_str() >= "f08"));
    }

    #[test]
    fn strategy_from_label_or_annotation() {
        let mut a = alert(
            "aa",
            AlertStatus::Firing,
            &[("rollback_strategy", "version_rollback")],
        );
        assert_eq!(
            record(&a, now(), TTL).strategy,
            Some(StrategyKind::VersionRollback)
        );
        a.labels.clear();
        a.annotations
            .insert(STRATEGY_KEY.into(), "EmergencyShutdown".into());
        assert_eq!(
            record(&a, now(), TTL).strategy,
            Some(StrategyKind::EmergencyShutdown)
        );
    }
}
