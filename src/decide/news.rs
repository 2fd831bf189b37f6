//! Whether a new policy status carries news. Status writes are the operator's steady-state cost
//! on the API server (one per policy per interval at any scale), so a status is written only
//! when something a person or the engine reads changed, and otherwise refreshed once every
//! [`REFRESH_INTERVALS`] intervals so `evaluatedAt` stays a bounded-age heartbeat. The exact
//! age of every evaluation is published as a metric instead
//! (`frys_rollback_policy_evaluated_timestamp_seconds`).

use std::time::Duration;

use jiff::Timestamp;

use crate::api::RollbackPolicyStatus;

/// An unchanged status is refreshed after this many intervals (so `evaluatedAt` lags by at
/// most this many intervals): one write per policy per 20 intervals is the 0.05 budget.
pub const REFRESH_INTERVALS: u32 = 20;

/// Significant digits a metric or issue value must move by to be news: display rounding is
/// three digits, and noise in the third digit of a latency is not worth a write.
const NEWS_DIGITS: i32 = 2;

/// True when `new` differs from `old` in anything but noise, or `old`'s evaluation is older
/// than [`REFRESH_INTERVALS`] intervals at `now`.
pub fn worth_writing(
    old: &RollbackPolicyStatus,
    new: &RollbackPolicyStatus,
    interval: Duration,
    now: Timestamp,
) -> bool {
    if normalized(old) != normalized(new) {
        return true;
    }
    let evaluated = |s: &RollbackPolicyStatus| {
        s.health
            .as_ref()
            .and_then(|h| h.evaluated_at.as_ref())
            .map(|t| t.0)
    };
    match (evaluated(old), evaluated(new)) {
        (Some(before), Some(after)) if after > before => {
            let age = now.duration_since(before).unsigned_abs();
            age >= interval * REFRESH_INTERVALS
        }
        (None, Some(_)) => true,
        _ => false,
    }
}

/// The status as a person or the engine reads it: no evaluation time, values at news
/// precision, the score as shown (whole points).
fn normalized(status: &RollbackPolicyStatus) -> RollbackPolicyStatus {
    let mut s = status.clone();
    if let Some(health) = s.health.as_mut() {
        health.evaluated_at = None;
        health.score = health.score.round();
        for v in health.metrics.values_mut() {
            *v = round_sig(*v, NEWS_DIGITS);
        }
        for issue in &mut health.issues {
            issue.value = issue.value.map(|v| round_sig(v, NEWS_DIGITS));
            // The message quotes the value at display precision: the value above stands for it.
            issue.message = None;
        }
    }
    s
}

/// `v` rounded to `digits` significant digits.
fn round_sig(v: f64, digits: i32) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f64.powi(digits - 1 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::{HealthReport, HealthStatus, IncidentClass, IncidentStatus};

    const INTERVAL: Duration = Duration::from_secs(30);

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn status(evaluated: i64, latency: f64, score: f64) -> RollbackPolicyStatus {
        RollbackPolicyStatus {
            health: Some(HealthReport {
                status: HealthStatus::Healthy,
                score,
                issues: vec![],
                metrics: [("latency".to_string(), latency)].into(),
                evaluated_at: Some(Time(at(evaluated))),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_new_evaluation_with_the_same_reading_is_not_news() {
        let old = status(0, 45.21, 99.38);
        let new = status(30, 45.34, 99.41);
        assert!(!worth_writing(&old, &new, INTERVAL, at(30)));
    }

    #[test]
    fn a_moved_metric_is_news() {
        let old = status(0, 45.0, 99.4);
        let new = status(30, 52.0, 99.4);
        assert!(worth_writing(&old, &new, INTERVAL, at(30)));
    }

    #[test]
    fn a_moved_score_is_news() {
        let old = status(0, 45.0, 99.4);
        let new = status(30, 45.0, 97.2);
        assert!(worth_writing(&old, &new, INTERVAL, at(30)));
    }

    #[test]
    fn engine_state_is_always_news() {
        let old = status(0, 45.0, 99.4);
        let mut streak = status(30, 45.0, 99.4);
        streak.failure_streak = Some(1);
        assert!(worth_writing(&old, &streak, INTERVAL, at(30)));
        let mut incident = status(30, 45.0, 99.4);
        incident.incident = Some(IncidentStatus {
            class: IncidentClass::Errors,
            started_at: Time(at(30)),
            attempts: 0,
            tried: vec![],
            active_event: None,
            last_step_failed: false,
            failed: false,
            message: None,
        });
        assert!(worth_writing(&old, &incident, INTERVAL, at(30)));
    }

    #[test]
    fn an_unchanged_status_is_refreshed_after_the_bound() {
        let old = status(0, 45.0, 99.4);
        let bound = INTERVAL.as_secs() as i64 * REFRESH_INTERVALS as i64;
        let early = status(bound - 30, 45.0, 99.4);
        assert!(!worth_writing(&old, &early, INTERVAL, at(bound - 30)));
        let due = status(bound, 45.0, 99.4);
        assert!(worth_writing(&old, &due, INTERVAL, at(bound)));
    }

    #[test]
    fn the_first_evaluation_is_news() {
        let old = RollbackPolicyStatus::default();
        assert!(worth_writing(&old, &status(0, 45.0, 99.4), INTERVAL, at(0)));
    }

    #[test]
    fn rounding_keeps_two_significant_digits() {
        assert_eq!(round_sig(45.34, 2), 45.0);
        assert_eq!(round_sig(0.001234, 2), 0.0012);
        assert_eq!(round_sig(1234.0, 2), 1200.0);
        assert_eq!(round_sig(0.0, 2), 0.0);
    }
}
