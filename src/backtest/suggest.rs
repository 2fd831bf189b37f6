//! Threshold suggestions from history: per signal, the warning at the 95th and the critical at
//! the 99th percentile (nearest rank) of the values the engine judged, plus a margin; values the
//! minimum-traffic guard set aside (low traffic), no data and failed queries are left out, and
//! so are the degradations that became incidents under the current policy (from the start of
//! their failing streak to their close): a week's real incidents would otherwise lift the p99
//! above themselves and the suggestion would hide them. Each
//! suggestion is replayed alone and all together over the same history, so the user sees how
//! many incidents it would have opened. Pure.

use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::{History, replay};
use crate::{
    api::{Direction, EffectiveSettings, RollbackPolicySpec},
    assess::{self, Sample},
    config::{OperatorConfig, effective},
    decide::SettingsError,
};

/// Percentile of the warning suggestion.
pub const WARNING_PERCENTILE: f64 = 95.0;
/// Percentile of the critical suggestion.
pub const CRITICAL_PERCENTILE: f64 = 99.0;

/// A suggested pair of thresholds for one signal.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Suggestion {
    pub metric: String,
    /// Index of the metric in `spec.metrics` (for the patch).
    pub index: usize,
    /// Judged values it is computed from.
    pub samples: usize,
    pub p95: f64,
    pub p99: f64,
    pub warning: f64,
    pub critical: f64,
    pub current_warning: Option<f64>,
    pub current_critical: Option<f64>,
    /// Incidents over the same history with the current policy and with only this change.
    pub incidents_now: usize,
    pub incidents_suggested: usize,
}

/// The nearest-rank percentile (`p` in 0-100) of unsorted values.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank.min(v.len()) - 1])
}

/// Suggestions for every signal with judged values, and the incidents with all of them applied.
pub fn suggest(
    spec: &RollbackPolicySpec,
    config: &OperatorConfig,
    history: &History,
    releases: &[Timestamp],
    step: Duration,
    margin: f64,
) -> Result<(Vec<Suggestion>, usize), SettingsError> {
    let eff = effective(spec, config);
    let incidents = |spec: &RollbackPolicySpec| -> Result<usize, SettingsError> {
        let eff = effective(spec, config);
        Ok(replay(spec, &eff, history, releases, step)?.incidents.len())
    };
    let current = replay(spec, &eff, history, releases, step)?;
    let now = current.incidents.len();
    let end = history
        .times
        .last()
        .copied()
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let in_incident = |t: Timestamp| {
        current
            .incidents
            .iter()
            .any(|i| t >= i.degraded_since && t < i.closed_at.unwrap_or(end))
    };
    let values = judged_values(spec, &eff, history, &in_incident);
    let mut out = vec![];
    let mut all = spec.clone();
    for (index, metric) in eff.metrics.iter().enumerate() {
        let values = &values[index];
        let (Some(p95), Some(p99)) = (
            percentile(values, WARNING_PERCENTILE),
            percentile(values, CRITICAL_PERCENTILE),
        ) else {
            continue;
        };
        let (p95, p99) = match metric.direction {
            Direction::Above => (p95, p99),
            // Smaller is worse: the low tail.
            Direction::Below => (
                percentile(values, 100.0 - WARNING_PERCENTILE).unwrap_or(p95),
                percentile(values, 100.0 - CRITICAL_PERCENTILE).unwrap_or(p99),
            ),
        };
        let widen = |v: f64| match metric.direction {
            Direction::Above => v * (1.0 + margin),
            Direction::Below => v * (1.0 - margin),
        };
        let (warning, critical) = (round(widen(p95)), round(widen(p99)));
        let mut alone = spec.clone();
        alone.metrics[index].warning = Some(warning);
        alone.metrics[index].critical = Some(critical);
        all.metrics[index].warning = Some(warning);
        all.metrics[index].critical = Some(critical);
        out.push(Suggestion {
            metric: metric.name.clone(),
            index,
            samples: values.len(),
            p95,
            p99,
            warning,
            critical,
            current_warning: metric.warning,
            current_critical: metric.critical,
            incidents_now: now,
            incidents_suggested: incidents(&alone)?,
        });
    }
    let with_all = incidents(&all)?;
    Ok((out, with_all))
}

/// The values the engine would have judged, per metric of `effective.metrics`, outside the
/// times `skip` names.
fn judged_values(
    spec: &RollbackPolicySpec,
    eff: &EffectiveSettings,
    history: &History,
    skip: &dyn Fn(Timestamp) -> bool,
) -> Vec<Vec<f64>> {
    let mut values = vec![vec![]; eff.metrics.len()];
    for (at, readings) in history.times.iter().zip(&history.readings) {
        if skip(*at) {
            continue;
        }
        for (i, s) in assess::signals(spec, eff, readings).iter().enumerate() {
            if let Sample::Value(v) = s.sample {
                values[i].push(v);
            }
        }
    }
    values
}

/// Four significant digits: a threshold people read and type.
fn round(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let digits = 3 - v.abs().log10().floor() as i32;
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// The policy patch to apply the suggestions: JSON Patch operations, as YAML, for
/// `kubectl patch rollbackpolicy NAME --type=json --patch-file FILE`.
pub fn patch_yaml(suggestions: &[Suggestion]) -> String {
    let mut out = String::new();
    for s in suggestions {
        for (field, value) in [("warning", s.warning), ("critical", s.critical)] {
            out.push_str(&format!(
                "- {{op: add, path: /spec/metrics/{}/{field}, value: {value}}}\n",
                s.index
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 95.0), Some(95.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[5.0], 99.0), Some(5.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(round(123.456), 123.5);
        assert_eq!(round(0.012345), 0.01235);
    }

    #[test]
    fn patch_operations() {
        let s = Suggestion {
            metric: "latency".into(),
            index: 1,
            samples: 10,
            p95: 1.0,
            p99: 2.0,
            warning: 1.2,
            critical: 2.4,
            current_warning: None,
            current_critical: None,
            incidents_now: 0,
            incidents_suggested: 0,
        };
        let yaml = patch_yaml(&[s]);
        assert_eq!(
            yaml,
            "- {op: add, path: /spec/metrics/1/warning, value: 1.2}\n- {op: add, path: /spec/metrics/1/critical, value: 2.4}\n"
        );
        let ops: serde_json::Value = yaml_serde::from_str(&yaml).unwrap();
        assert_eq!(ops[1]["value"], 2.4);
    }
}
