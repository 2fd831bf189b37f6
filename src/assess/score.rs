//! The health score: a continuous weighted figure for display and ranking, never a decision input.

use crate::api::{Direction, EffectiveMetric};

/// How bad `value` is for `metric`, in [0, 1]: continuous, and never lower for a worse value.
///
/// Piecewise linear through anchors on the bad-side axis (values flipped for `Below`):
/// - warning and critical: 0 at `warning - (critical - warning)`, 0.5 at warning, 1 at critical;
/// - critical only: 0 at `critical - |critical|` (0 for a positive `Above` threshold), 1 at critical;
/// - warning only: 0.5 at warning, with the same ramp width `|warning|` on both sides.
///
/// Values past the last anchor are 1, before the first 0. No threshold: always 0.
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
        (Some(w), Some(c)) if w < c => vec![(w - (c - w), 0.0), (w, 0.5), (c, 1.0)],
        (_, Some(c)) => vec![(c - width(c), 0.0), (c, 1.0)],
        (Some(w), None) => vec![(w - width(w), 0.0), (w, 0.5), (w + width(w), 1.0)],
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
        }
    }

    #[test]
    fn anchors_of_a_preset_like_metric() {
        let m = metric(Some(0.04), Some(0.05), Direction::Above);
        assert_eq!(badness(0.0, &m), 0.0);
        assert_eq!(badness(0.03, &m), 0.0);
        assert!((badness(0.035, &m) - 0.25).abs() < 1e-9);
        assert!((badness(0.04, &m) - 0.5).abs() < 1e-9);
        assert!((badness(0.045, &m) - 0.75).abs() < 1e-9);
        assert_eq!(badness(0.05, &m), 1.0);
        assert_eq!(badness(0.5, &m), 1.0);
    }

    #[test]
    fn critical_only_ramps_from_zero_and_below_flips() {
        let m = metric(None, Some(5000.0), Direction::Above);
        assert!((badness(2500.0, &m) - 0.5).abs() < 1e-9);
        let m = metric(Some(20.0), Some(10.0), Direction::Below);
        assert_eq!(badness(40.0, &m), 0.0);
        assert!((badness(20.0, &m) - 0.5).abs() < 1e-9);
        assert_eq!(badness(5.0, &m), 1.0);
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
    }
}
