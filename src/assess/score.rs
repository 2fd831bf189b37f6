//! The health score: a continuous weighted figure for display and ranking, never a decision input.
//!
//! Each signal gets a *badness* in [0, 1] from its value and thresholds, the score is
//! `100 × (1 − weighted mean badness)`. The bands are chosen so the number reads the way the
//! severities do: a signal inside its warning threshold costs at most 10 points of its weight,
//! one between warning and critical at most 50, and only a signal past its critical threshold
//! can pull the score below 50.

use crate::api::{Direction, EffectiveMetric};

/// Badness at the warning threshold (score 90 when every signal sits exactly there).
const AT_WARNING: f64 = 0.1;
/// Badness at the critical threshold (score 50 when every signal sits exactly there).
const AT_CRITICAL: f64 = 0.5;
/// Where a metric with a critical threshold only is scored as if it had a warning one: at 80 %
/// of the way from its best value, as preset warnings default to 80 % of the critical.
const IMPLIED_WARNING: f64 = 0.8;

/// How bad `value` is for `metric`, in [0, 1]: continuous, and never lower for a worse value.
///
/// Piecewise linear on the bad-side axis (values flipped for `Below`), through
/// - 0 at the *best* value: 0 for a positive `Above` threshold (e.g. no errors, no latency),
///   twice the warning for a positive `Below` one; in general `warning − |warning|`;
/// - 0.1 at warning, 0.5 at critical, 1 one warning-to-critical distance past critical;
/// - critical only: as if the warning were at 80 % of the way from the best value to critical;
/// - warning only: 0.5 one `|warning|` past warning, and never more (there is no critical).
///
/// Values past the last anchor keep its badness, before the first 0. No threshold: always 0.
/// A warning at or beyond the critical threshold is ignored. A zero threshold ramps over 1.
pub fn badness(value: f64, metric: &EffectiveMetric) -> f64 {
    let orient = |v: f64| match metric.direction {
        Direction::Above => v,
        Direction::Below => -v,
    };
    let x = orient(value);
    let warning = metric.warning.filter(|t| t.is_finite()).map(orient);
    let critical = metric.critical.filter(|t| t.is_finite()).map(orient);
    // A ramp needs a width; a zero threshold gets width 1.
    let width = |t: f64| if t == 0.0 { 1.0 } else { t.abs() };
    let anchors: Vec<(f64, f64)> = match (warning, critical) {
        (Some(w), Some(c)) if w < c => vec![
            (w - width(w), 0.0),
            (w, AT_WARNING),
            (c, AT_CRITICAL),
            (c + (c - w), 1.0),
        ],
        (_, Some(c)) => {
            let (best, span) = (c - width(c), width(c));
            let w = best + IMPLIED_WARNING * span;
            vec![
                (best, 0.0),
                (w, AT_WARNING),
                (c, AT_CRITICAL),
                (c + (c - w), 1.0),
            ]
        }
        (Some(w), None) => vec![
            (w - width(w), 0.0),
            (w, AT_WARNING),
            (w + width(w), AT_CRITICAL),
        ],
        (None, None) => return 0.0,
    };
    interpolate(x, &anchors)
}

/// Piecewise-linear interpolation through increasing anchors, flat outside them.
fn interpolate(x: f64, anchors: &[(f64, f64)]) -> f64 {
    let (first, last) = (anchors[0], anchors[anchors.len() - 1]);
    if x.is_nan() || x <= first.0 {
        return first.1;
    }
    if x >= last.0 {
        return last.1;
    }
    for pair in anchors.windows(2) {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        if x <= x1 {
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0);
        }
    }
    last.1
}

/// `100 × (1 − weighted mean badness)`, rounded to one decimal. Parts are `(weight, badness)`;
/// negative or non-finite weights count as 0. Nothing to weigh gives 100.
pub fn score(parts: impl IntoIterator<Item = (f64, f64)>) -> f64 {
    let (mut total, mut bad) = (0.0, 0.0);
    for (weight, badness) in parts {
        let weight = if weight.is_finite() && weight > 0.0 {
            weight
        } else {
            0.0
        };
        total += weight;
        bad += weight * badness.clamp(0.0, 1.0);
    }
    if total == 0.0 {
        return 100.0;
    }
    let raw = 100.0 * (1.0 - bad / total);
    ((raw * 10.0).round() / 10.0).clamp(0.0, 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::IncidentClass;
    use proptest::prelude::*;

    fn metric(
        warning: Option<f64>,
        critical: Option<f64>,
        direction: Direction,
    ) -> EffectiveMetric {
        EffectiveMetric {
            name: "m".into(),
            warning,
            critical,
            direction,
            weight: 1.0,
            class: IncidentClass::Errors,
            unit: None,
        }
    }

    #[test]
    fn anchors_of_a_preset_like_metric() {
        let m = metric(Some(0.04), Some(0.05), Direction::Above);
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert_eq!(badness(0.0, &m), 0.0);
        assert!(near(badness(0.02, &m), 0.05));
        assert!(near(badness(0.04, &m), 0.1));
        assert!(near(badness(0.045, &m), 0.3));
        assert!(near(badness(0.05, &m), 0.5));
        assert!(near(badness(0.055, &m), 0.75));
        assert!(near(badness(0.06, &m), 1.0));
        assert_eq!(badness(0.5, &m), 1.0);
    }

    #[test]
    fn the_demo_workload_scores_high() {
        // The case: 45 ms p95 against 500/2000 ms scored 73.5 with the old ramp.
        let latency = metric(Some(500.0), Some(2000.0), Direction::Above);
        let errors = metric(Some(0.02), Some(0.05), Direction::Above);
        let s = score([
            (1.0, badness(45.0, &latency)),
            (1.0, badness(0.001, &errors)),
        ]);
        assert_eq!(s, 99.3);
    }

    #[test]
    fn critical_only_warning_only_and_below() {
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        let m = metric(None, Some(5000.0), Direction::Above);
        assert!(near(badness(2000.0, &m), 0.05));
        assert!(near(badness(4000.0, &m), 0.1));
        assert!(near(badness(5000.0, &m), 0.5));
        assert_eq!(badness(6000.0, &m), 1.0);
        let m = metric(Some(100.0), None, Direction::Above);
        assert!(near(badness(100.0, &m), 0.1));
        assert_eq!(badness(1e9, &m), 0.5);
        // Throughput must stay above 10, warn below 20: best from 40 up.
        let m = metric(Some(20.0), Some(10.0), Direction::Below);
        assert_eq!(badness(40.0, &m), 0.0);
        assert!(near(badness(30.0, &m), 0.05));
        assert!(near(badness(20.0, &m), 0.1));
        assert!(near(badness(10.0, &m), 0.5));
        assert_eq!(badness(0.0, &m), 1.0);
        assert_eq!(badness(1.0, &metric(None, None, Direction::Above)), 0.0);
    }

    #[test]
    fn score_is_weighted() {
        assert_eq!(score([(1.0, 0.0), (1.0, 1.0)]), 50.0);
        assert_eq!(score([(3.0, 0.0), (1.0, 1.0)]), 75.0);
        assert_eq!(score([(0.0, 1.0)]), 100.0);
        assert_eq!(score([]), 100.0);
        assert_eq!(score([(2.0, 1.0)]), 0.0);
    }

    fn any_metric() -> impl Strategy<Value = EffectiveMetric> {
        (
            proptest::option::of(-1e4..1e4f64),
            proptest::option::of(-1e4..1e4f64),
            prop_oneof![Just(Direction::Above), Just(Direction::Below)],
        )
            .prop_map(|(w, c, d)| metric(w, c, d))
    }

    proptest! {
        /// Worse value, never lower badness; always within [0, 1].
        #[test]
        fn badness_is_monotonic_and_bounded(m in any_metric(), a in -2e4..2e4f64, b in -2e4..2e4f64) {
            let (better, worse) = match m.direction {
                Direction::Above => (a.min(b), a.max(b)),
                Direction::Below => (a.max(b), a.min(b)),
            };
            let (bb, bw) = (badness(better, &m), badness(worse, &m));
            prop_assert!((0.0..=1.0).contains(&bb) && (0.0..=1.0).contains(&bw));
            prop_assert!(bw >= bb, "{better} -> {bb}, {worse} -> {bw}");
        }

        /// Small steps in value give small steps in badness (no jumps at the thresholds).
        #[test]
        fn badness_is_continuous(w in 1.0..100.0f64, gap in 1.0..100.0f64, x in 0.0..300.0f64) {
            let m = metric(Some(w), Some(w + gap), Direction::Above);
            let step = 1e-6;
            prop_assert!((badness(x + step, &m) - badness(x, &m)).abs() < 1e-5);
        }

        /// Every signal at its best value (or better) scores 100.
        #[test]
        fn best_values_score_100(ms in proptest::collection::vec((any_metric(), 1.0..100.0f64, 0.1..10.0f64), 1..5)) {
            let parts = ms.iter().map(|(m, beyond, weight)| {
                let best = best_value(m);
                let v = match m.direction { Direction::Above => best - beyond, Direction::Below => best + beyond };
                (*weight, badness(v, m))
            });
            prop_assert_eq!(score(parts), 100.0);
        }

        /// Every signal at most half-way from its best value to its warning threshold: at least 95.
        #[test]
        fn comfortably_inside_warning_scores_at_least_95(
            ms in proptest::collection::vec((any_metric(), 0.0..=0.5f64, 0.1..10.0f64), 1..5),
        ) {
            let parts: Vec<_> = ms.iter().filter_map(|(m, fraction, weight)| {
                let warning = m.warning.filter(|w| m.critical.is_none_or(|c| m.direction.breaches(c, *w)))?;
                let best = best_value(m);
                Some((*weight, badness(best + fraction * (warning - best), m)))
            }).collect();
            prop_assert!(score(parts) >= 95.0);
        }

        /// A score below 50 needs a signal strictly past its critical threshold.
        #[test]
        fn below_50_only_past_a_critical(
            ms in proptest::collection::vec((any_metric(), -2e4..2e4f64, 0.1..10.0f64), 1..5),
        ) {
            let s = score(ms.iter().map(|(m, v, weight)| (*weight, badness(*v, m))));
            let past_critical = ms.iter().any(|(m, v, _)| m.critical.is_some_and(|c| m.direction.breaches(*v, c)));
            prop_assert!(s >= 50.0 || past_critical, "score {s} with no signal past critical");
        }
    }

    /// Where badness starts: `warning − |warning|` on the bad-side axis (critical when no warning
    /// counts), mapped back to the metric's own axis.
    fn best_value(m: &EffectiveMetric) -> f64 {
        let sign = match m.direction {
            Direction::Above => 1.0,
            Direction::Below => -1.0,
        };
        let usable_warning = m
            .warning
            .filter(|w| m.critical.is_none_or(|c| m.direction.breaches(c, *w)));
        let t = sign * usable_warning.or(m.critical).unwrap_or(0.0);
        let width = if t == 0.0 { 1.0 } else { t.abs() };
        sign * (t - width)
    }
}
