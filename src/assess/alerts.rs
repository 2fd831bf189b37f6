//! Alert metrics: the firing Alertmanager alerts recorded in a policy's status (by the alert
//! receiver, `src/alerts`) read as signals, so they go through the same judging, streak and
//! incident classes as Prometheus readings.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::{
    api::{AlertRecord, RollbackPolicySpec},
    prometheus::Reading,
};

/// Whether a recorded alert still counts at `now`: not past its end (its endsAt, or the
/// receiver's time-to-live for alerts that are never resolved).
pub fn is_active(alert: &AlertRecord, now: Timestamp) -> bool {
    alert.ends_at.as_ref().is_none_or(|e| e.0 > now)
}

/// One reading per alert metric: how many alerts of its name are firing at `now`.
pub fn readings(
    spec: &RollbackPolicySpec,
    alerts: &[AlertRecord],
    now: Timestamp,
) -> BTreeMap<String, Reading> {
    spec.metrics
        .iter()
        .filter_map(|m| {
            let wanted = &m.alert.as_ref()?.name;
            let firing = alerts
                .iter()
                .filter(|a| &a.name == wanted && is_active(a, now))
                .count();
            Some((m.name.clone(), Ok(Some(firing as f64))))
        })
        .collect()
}

/// The alerts to record with a remediation decided at `now`: the active ones that feed an
/// alert metric or name a rung.
pub fn causing(
    spec: &RollbackPolicySpec,
    alerts: &[AlertRecord],
    now: Timestamp,
) -> Vec<AlertRecord> {
    alerts
        .iter()
        .filter(|a| is_active(a, now))
        .filter(|a| {
            a.strategy.is_some()
                || spec
                    .metrics
                    .iter()
                    .any(|m| m.alert.as_ref().is_some_and(|s| s.name == a.name))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::{
        api::{AlertSignal, IncidentClass, MetricSeverity, NoDataPolicy},
        assess,
        config::{OperatorConfig, effective},
    };

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn record(fp: &str, name: &str, ends: &str) -> AlertRecord {
        AlertRecord {
            fingerprint: fp.into(),
            name: name.into(),
            labels: BTreeMap::new(),
            starts_at: Time(at("2026-12-01T10:00:00Z")),
            ends_at: Some(Time(at(ends))),
            generator_url: None,
            strategy: None,
        }
    }

    fn spec() -> RollbackPolicySpec {
        let mut p = crate::fixtures::policy("web");
        let mut m = crate::fixtures::metric("pager", crate::api::Preset::ErrorRate);
        m.preset = None;
        m.alert = Some(AlertSignal {
            name: "HighErrorRate".into(),
            class: IncidentClass::Errors,
        });
        p.spec.metrics.push(m);
        p.spec
    }

    #[test]
    fn a_firing_alert_is_a_critical_signal_of_its_class() {
        let spec = spec();
        let now = at("2026-12-01T10:01:00Z");
        let alerts = [
            record("a1", "HighErrorRate", "2026-12-01T11:00:00Z"),
            record("a2", "Other", "2026-12-01T11:00:00Z"),
        ];
        let r = readings(&spec, &alerts, now);
        assert_eq!(r.len(), 1);
        assert_eq!(r["pager"].as_ref().unwrap(), &Some(1.0));

        let eff = effective(&spec, &OperatorConfig::defaults());
        let signals = assess::signals(&spec, &eff, &r);
        let pager = signals.iter().find(|s| s.metric.name == "pager").unwrap();
        let verdict = assess::judge(&pager.metric, &pager.sample, NoDataPolicy::Ignore);
        assert_eq!(verdict.severity, MetricSeverity::Critical);
        assert_eq!(verdict.class, IncidentClass::Errors);
        assert_eq!(
            causing(&spec, &alerts, now).len(),
            1,
            "only the alert a metric reads"
        );
    }

    #[test]
    fn resolved_or_stale_reads_ok() {
        let spec = spec();
        let stale = [record("a1", "HighErrorRate", "2026-12-01T10:00:30Z")];
        let now = at("2026-12-01T10:01:00Z");
        let r = readings(&spec, &stale, now);
        assert_eq!(r["pager"].as_ref().unwrap(), &Some(0.0));
        let eff = effective(&spec, &OperatorConfig::defaults());
        let signals = assess::signals(&spec, &eff, &r);
        let pager = signals.iter().find(|s| s.metric.name == "pager").unwrap();
        let verdict = assess::judge(&pager.metric, &pager.sample, NoDataPolicy::Ignore);
        assert_eq!(verdict.severity, MetricSeverity::Ok);
        assert!(causing(&spec, &stale, now).is_empty());
    }
}
