//! Whether a new policy status carries news. Status writes are the operator's steady-state cost
//! on the API server (one per policy per interval at any scale), so a status is written only
//! when something a person or the engine reads changed, and otherwise refreshed after
//! [`REFRESH_INTERVALS`] to 1.5x as many intervals (spread by policy, see [`refresh_after`]) so
//! `evaluatedAt` stays a bounded-age heartbeat. The exact age of every evaluation is published
//! as a metric instead (`frys_rollback_last_evaluation_timestamp_seconds`).

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    time::Duration,
};

use jiff::Timestamp;

use crate::api::{RollbackPolicyStatus, conditions};

/// An unchanged status is refreshed after at least this many intervals, and fewer than 1.5x as
/// many: one write per policy per 20-29 intervals keeps within the 0.05 budget.
pub const REFRESH_INTERVALS: u32 = 20;

/// How long an unchanged status of this policy (its namespace/name) goes unwritten: between
/// [`REFRESH_INTERVALS`] and 1.5x as many intervals, fixed per policy. Policies created together
/// (a fresh install, a bulk apply) would otherwise refresh together, a burst of one write per
/// policy every 20 intervals.
pub fn refresh_after(interval: Duration, policy: &str) -> Duration {
    let mut hasher = DefaultHasher::new();
    policy.hash(&mut hasher);
    let extra = (hasher.finish() % u64::from(REFRESH_INTERVALS / 2)) as u32;
    interval * (REFRESH_INTERVALS + extra)
}

/// How far a metric or issue value must move from the one last written to be news, relative
/// to the larger of the two. Compared with the last written status (not rounded into bins), so
/// a reading that jitters around a rounding edge is not news on every evaluation.
const NEWS_RELATIVE: f64 = 0.05;

/// How far the score must move from the one last written (points; it is shown whole).
const NEWS_SCORE_POINTS: f64 = 1.0;

/// True when `new` differs from `old` in anything but noise, or `old`'s evaluation is at
/// least `refresh_after` old at `now` (see [`refresh_after`]).
pub fn worth_writing(
    old: &RollbackPolicyStatus,
    new: &RollbackPolicyStatus,
    refresh_after: Duration,
    now: Timestamp,
) -> bool {
    if without_readings(old) != without_readings(new) || readings_moved(old, new) {
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
            age >= refresh_after
        }
        (None, Some(_)) => true,
        _ => false,
    }
}

/// What makes `new` news against `old`, for the debug log of a status write: the status
/// fields (and condition types) that differ beyond the readings, or "readings" / "refresh".
pub fn what_changed(old: &RollbackPolicyStatus, new: &RollbackPolicyStatus) -> Vec<String> {
    let (a, b) = (without_readings(old), without_readings(new));
    let fields = |s: &RollbackPolicyStatus| match serde_json::to_value(s) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => Default::default(),
    };
    let (fa, fb) = (fields(&a), fields(&b));
    let keys: std::collections::BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    let mut changed: Vec<String> = keys
        .into_iter()
        .filter(|k| *k != "conditions" && fa.get(*k) != fb.get(*k))
        .cloned()
        .collect();
    for c in &b.conditions {
        if a.conditions.iter().all(|o| o != c) {
            changed.push(format!("conditions/{}", c.type_));
        }
    }
    if changed.is_empty() {
        changed.push(
            if readings_moved(old, new) {
                "readings"
            } else {
                "refresh"
            }
            .into(),
        );
    }
    changed
}

/// The status without what changes on every evaluation: the evaluation time, the readings
/// (values and score, compared by [`readings_moved`]) and the messages that quote them.
fn without_readings(status: &RollbackPolicyStatus) -> RollbackPolicyStatus {
    let mut s = status.clone();
    if let Some(health) = s.health.as_mut() {
        health.evaluated_at = None;
        health.score = 0.0;
        for v in health.metrics.values_mut() {
            *v = 0.0;
        }
        for issue in &mut health.issues {
            issue.value = issue.value.map(|_| 0.0);
            issue.message = None;
        }
    }
    // The Healthy condition's message quotes the worst signals' values (the issues above
    // stand for them).
    for c in &mut s.conditions {
        if c.type_ == conditions::HEALTHY {
            c.message.clear();
        }
    }
    s
}

/// Whether a reading moved beyond noise. Called only when everything else is equal, so both
/// sides have the same metrics and issues in the same order.
fn readings_moved(old: &RollbackPolicyStatus, new: &RollbackPolicyStatus) -> bool {
    let (Some(old), Some(new)) = (&old.health, &new.health) else {
        return false;
    };
    let values = old
        .metrics
        .iter()
        .filter_map(|(name, v)| Some((*v, *new.metrics.get(name)?)));
    let issues = old
        .issues
        .iter()
        .zip(&new.issues)
        .filter_map(|(a, b)| Some((a.value?, b.value?)));
    (old.score - new.score).abs() >= NEWS_SCORE_POINTS
        || values.chain(issues).any(|(a, b)| moved(a, b))
}

/// Whether a fresh evaluation of a policy deserves its reconcile before the others': the
/// engine is mid-streak or mid-incident, the last written health was not Healthy, or a signal
/// (name, value; None: no data or failed) moved from the value last written. The evaluator
/// hands these over first, so a turning workload does not wait behind steady ones.
pub fn urgent<'a>(
    status: Option<&RollbackPolicyStatus>,
    readings: impl IntoIterator<Item = (&'a str, Option<f64>)>,
) -> bool {
    let Some(status) = status else {
        return true;
    };
    let Some(health) = &status.health else {
        return true;
    };
    if status.failure_streak.unwrap_or(0) > 0
        || status.incident.is_some()
        || health.status != crate::api::HealthStatus::Healthy
    {
        return true;
    }
    readings
        .into_iter()
        .any(|(name, value)| match (health.metrics.get(name), value) {
            (Some(old), Some(new)) => moved(*old, new),
            (None, None) => false,
            _ => true,
        })
}

/// `b` differs from `a` by more than [`NEWS_RELATIVE`] of the larger magnitude (any change to
/// or from a non-finite value counts).
fn moved(a: f64, b: f64) -> bool {
    if !(a.is_finite() && b.is_finite()) {
        return a.to_bits() != b.to_bits();
    }
    (a - b).abs() > NEWS_RELATIVE * a.abs().max(b.abs())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::{HealthReport, HealthStatus, IncidentClass, IncidentStatus};

    const INTERVAL: Duration = Duration::from_secs(30);
    const REFRESH: Duration = Duration::from_secs(30 * REFRESH_INTERVALS as u64);

    #[test]
    fn refreshes_are_spread_over_half_the_bound_and_fixed_per_policy() {
        let afters: Vec<Duration> = (0..200)
            .map(|i| refresh_after(INTERVAL, &format!("shop/web-{i}")))
            .collect();
        let (min, max) = (
            INTERVAL * REFRESH_INTERVALS,
            INTERVAL * (REFRESH_INTERVALS * 3 / 2),
        );
        assert!(afters.iter().all(|a| *a >= min && *a < max));
        let distinct: std::collections::BTreeSet<_> = afters.iter().collect();
        assert!(distinct.len() >= 8, "spread over {} values", distinct.len());
        assert_eq!(refresh_after(INTERVAL, "shop/web-1"), afters[1]);
    }

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
        assert!(!worth_writing(&old, &new, REFRESH, at(30)));
    }

    #[test]
    fn a_moved_metric_is_news() {
        let old = status(0, 45.0, 99.4);
        let new = status(30, 52.0, 99.4);
        assert!(worth_writing(&old, &new, REFRESH, at(30)));
    }

    #[test]
    fn a_moved_score_is_news() {
        let old = status(0, 45.0, 99.4);
        let new = status(30, 45.0, 97.2);
        assert!(worth_writing(&old, &new, REFRESH, at(30)));
    }

    #[test]
    fn engine_state_is_always_news() {
        let old = status(0, 45.0, 99.4);
        let mut streak = status(30, 45.0, 99.4);
        streak.failure_streak = Some(1);
        assert!(worth_writing(&old, &streak, REFRESH, at(30)));
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
        assert!(worth_writing(&old, &incident, REFRESH, at(30)));
    }

    #[test]
    fn an_unchanged_status_is_refreshed_after_the_bound() {
        let old = status(0, 45.0, 99.4);
        let bound = REFRESH.as_secs() as i64;
        let early = status(bound - 30, 45.0, 99.4);
        assert!(!worth_writing(&old, &early, REFRESH, at(bound - 30)));
        let due = status(bound, 45.0, 99.4);
        assert!(worth_writing(&old, &due, REFRESH, at(bound)));
    }

    #[test]
    fn the_first_evaluation_is_news() {
        let old = RollbackPolicyStatus::default();
        assert!(worth_writing(&old, &status(0, 45.0, 99.4), REFRESH, at(0)));
    }

    #[test]
    fn jitter_around_a_rounding_edge_is_not_news() {
        // 0.00099 and 0.00101 round apart at two digits; neither moved from what was written.
        let old = status(0, 0.00099, 99.4);
        for (t, latency, score) in [(30, 0.00101, 99.6), (60, 0.00098, 98.9), (90, 0.001, 99.5)] {
            assert!(!worth_writing(
                &old,
                &status(t, latency, score),
                REFRESH,
                at(t)
            ));
        }
    }

    #[test]
    fn a_message_quoting_a_jittering_value_is_not_news_its_condition_changing_is() {
        let with = |t: i64, status: &str, message: &str| {
            let mut s = status_at(t);
            s.conditions
                .push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                    type_: conditions::HEALTHY.into(),
                    status: status.into(),
                    reason: "Warning".into(),
                    message: message.into(),
                    last_transition_time: Time(at(0)),
                    observed_generation: None,
                });
            s
        };
        let old = with(0, "False", "Warning; latency = 812 ms is above 800 ms");
        let jitter = with(30, "False", "Warning; latency = 815 ms is above 800 ms");
        assert!(!worth_writing(&old, &jitter, REFRESH, at(30)));
        let healthy = with(30, "True", "Healthy");
        assert!(worth_writing(&old, &healthy, REFRESH, at(30)));
    }

    fn status_at(t: i64) -> RollbackPolicyStatus {
        status(t, 45.0, 99.4)
    }

    #[test]
    fn steady_healthy_policies_are_not_urgent_turning_or_failing_ones_are() {
        let steady = status(0, 45.0, 99.4);
        assert!(!urgent(Some(&steady), [("latency", Some(45.5))]));
        assert!(urgent(Some(&steady), [("latency", Some(900.0))]));
        assert!(urgent(Some(&steady), [("latency", None)]));
        let mut streak = steady.clone();
        streak.failure_streak = Some(1);
        assert!(urgent(Some(&streak), [("latency", Some(45.0))]));
        assert!(urgent(None, [("latency", Some(45.0))]));
    }

    #[test]
    fn values_move_relative_to_their_size() {
        assert!(!moved(100.0, 104.0));
        assert!(moved(100.0, 106.0));
        assert!(moved(0.0, 0.001));
        assert!(!moved(0.0, 0.0));
        assert!(moved(1.0, f64::INFINITY));
        assert!(!moved(f64::NAN, f64::NAN));
    }
}
