//! The baseline judge: a signal's samples since the latest release against the same workload's
//! samples over a window before it. Pure: samples in, verdict out.
//!
//! Test: one-sided Mann-Whitney U (rank-sum), normal approximation with tie correction and a
//! continuity correction. Rank-based, so it needs no distribution shape (latency quantiles and
//! error ratios are skewed) and one outlier cannot carry it.
//!
//! Continuous monitoring: the judge looks again at every evaluation while the after-release
//! side grows, so a fixed-level test repeated K times would breach by chance far more often
//! than its level says. The judge spends its `alpha` evenly over the looks it can make
//! (Bonferroni: `alpha / looks`, looks = window / interval, the whole after-release horizon),
//! which bounds the chance of any false breach over one release by `alpha` whatever the
//! correlation between looks. A mixture SPRT would be tighter, but it needs a parametric model
//! of the signal; the Bonferroni bound costs a few evaluations of delay on large regressions
//! and none of the robustness of the rank test.
//!
//! A breach also needs the effect the user asked for (the after-release median at least
//! `effect` times the baseline median, on the bad side of the signal's direction): with
//! hundreds of samples a rank test finds harmless shifts significant.

use std::time::Duration;

use jiff::Timestamp;

use crate::api::{BaselineSpec, Direction, duration::InvalidDuration};

/// Samples needed on each side when the spec does not say.
pub const DEFAULT_MIN_SAMPLES: u32 = 10;
/// Ratio of medians that is a regression when the spec does not say.
pub const DEFAULT_EFFECT: f64 = 1.5;
/// False-breach chance per release when the spec does not say.
pub const DEFAULT_ALPHA: f64 = 0.01;

/// The judge's settings (from a metric's `baseline`).
#[derive(Clone, Debug, PartialEq)]
pub struct BaselineSettings {
    /// Samples needed on each side before the judge says anything.
    pub min_samples: usize,
    /// Least ratio of medians (after / before for Above, before / after for Below) that is a
    /// regression.
    pub effect: f64,
    /// Chance of a false breach over one release's whole monitoring horizon.
    pub alpha: f64,
    /// How many times the judge looks after one release (the alpha is split over them).
    pub looks: u32,
}

impl BaselineSettings {
    /// A metric's `baseline` for a policy evaluated every `interval`, and its window.
    pub fn from_spec(
        spec: &BaselineSpec,
        interval: Duration,
    ) -> Result<(Duration, Self), InvalidDuration> {
        let window = spec.window.get()?;
        let interval = interval.max(Duration::from_secs(1));
        let looks = window.as_secs_f64() / interval.as_secs_f64();
        Ok((
            window,
            Self {
                min_samples: spec.min_samples.unwrap_or(DEFAULT_MIN_SAMPLES) as usize,
                effect: spec.effect.unwrap_or(DEFAULT_EFFECT),
                alpha: spec.alpha.unwrap_or(DEFAULT_ALPHA),
                looks: looks.ceil().clamp(1.0, f64::from(u32::MAX)) as u32,
            },
        ))
    }

    /// The level each look tests at.
    pub fn alpha_per_look(&self) -> f64 {
        self.alpha / f64::from(self.looks.max(1))
    }
}

/// What the test saw.
#[derive(Clone, Debug, PartialEq)]
pub struct Evidence {
    /// The test's name, for people.
    pub test: &'static str,
    /// U of the after-release sample (large when after is worse).
    pub u: f64,
    pub z: f64,
    /// One-sided p-value (after worse than before).
    pub p_value: f64,
    /// The level this look tested at (`alpha / looks`).
    pub alpha: f64,
    /// Ratio of medians on the bad side (>1: worse).
    pub effect: f64,
    pub before_samples: usize,
    pub after_samples: usize,
    pub before_median: f64,
    pub after_median: f64,
}

impl Evidence {
    /// One line: test, statistic, p against its level, effect, samples on each side.
    pub fn sentence(&self) -> String {
        format!(
            "{}: U = {}, z = {:.2}, p = {:.2e} (level {:.2e}), median {} -> {} ({:.2}x), {} samples before and {} after",
            self.test,
            crate::units::num(self.u),
            self.z,
            self.p_value,
            self.alpha,
            crate::units::num(self.before_median),
            crate::units::num(self.after_median),
            self.effect,
            self.before_samples,
            self.after_samples
        )
    }
}

/// The judge's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum BaselineVerdict {
    /// Too few samples on one side (never a breach).
    Inconclusive { before: usize, after: usize },
    /// No significant regression of the required size.
    NoRegression(Evidence),
    /// A significant regression at least the required size: a Release breach.
    Regression(Evidence),
}

impl BaselineVerdict {
    pub fn is_regression(&self) -> bool {
        matches!(self, Self::Regression(_))
    }

    /// The evidence, when the test ran.
    pub fn evidence(&self) -> Option<&Evidence> {
        match self {
            Self::Regression(e) | Self::NoRegression(e) => Some(e),
            Self::Inconclusive { .. } => None,
        }
    }
}

/// Judges a signal's values around the latest release at `now`: those in
/// `[release - window, release)` against those in `[release, now]`. None when the judge does
/// not look: no release known, or `now` more than `window` after it.
pub fn judge_series(
    points: &[(Timestamp, f64)],
    release: Option<Timestamp>,
    now: Timestamp,
    window: Duration,
    direction: Direction,
    settings: &BaselineSettings,
) -> Option<BaselineVerdict> {
    let release = release?;
    let since = now.duration_since(release);
    let window_span = jiff::SignedDuration::try_from(window).ok()?;
    if since.is_negative() || since > window_span {
        return None;
    }
    let from = release.checked_sub(window_span).ok()?;
    let before: Vec<f64> = points
        .iter()
        .filter(|(t, _)| *t >= from && *t < release)
        .map(|p| p.1)
        .collect();
    let after: Vec<f64> = points
        .iter()
        .filter(|(t, _)| *t >= release && *t <= now)
        .map(|p| p.1)
        .collect();
    Some(judge(&before, &after, direction, settings))
}

/// Judges the samples since a release (`after`) against those of the window before it
/// (`before`). Non-finite samples are dropped.
pub fn judge(
    before: &[f64],
    after: &[f64],
    direction: Direction,
    settings: &BaselineSettings,
) -> BaselineVerdict {
    // Oriented so that larger is worse.
    let orient = |v: &f64| match direction {
        Direction::Above => *v,
        Direction::Below => -*v,
    };
    let b: Vec<f64> = before
        .iter()
        .filter(|v| v.is_finite())
        .map(orient)
        .collect();
    let a: Vec<f64> = after.iter().filter(|v| v.is_finite()).map(orient).collect();
    let min = settings.min_samples.max(2);
    if b.len() < min || a.len() < min {
        return BaselineVerdict::Inconclusive {
            before: b.len(),
            after: a.len(),
        };
    }
    let (u, z, p_value) = mann_whitney_greater(&a, &b);
    let (before_median, after_median) = (median(&b), median(&a));
    let effect = ratio(after_median, before_median);
    let unorient = |v: f64| match direction {
        Direction::Above => v,
        Direction::Below => -v,
    };
    let evidence = Evidence {
        test: "Mann-Whitney U (one-sided, normal approximation, tie-corrected)",
        u,
        z,
        p_value,
        alpha: settings.alpha_per_look(),
        effect,
        before_samples: b.len(),
        after_samples: a.len(),
        before_median: unorient(before_median),
        after_median: unorient(after_median),
    };
    if p_value <= evidence.alpha && effect >= settings.effect {
        BaselineVerdict::Regression(evidence)
    } else {
        BaselineVerdict::NoRegression(evidence)
    }
}

/// How much worse `after` is than `before`, both oriented so that larger is worse: the ratio
/// of magnitudes on the bad side (>1 worse, <1 better); a move off zero counts as infinite.
fn ratio(after: f64, before: f64) -> f64 {
    if before > 0.0 {
        after / before
    } else if before < 0.0 {
        // Oriented Below signals: before = -x, after = -y; worse means y smaller: x / y.
        if after < 0.0 {
            before / after
        } else {
            f64::INFINITY
        }
    } else if after > 0.0 {
        f64::INFINITY
    } else {
        1.0
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// U of `a`, z and the one-sided p-value of "a tends to be larger than b".
fn mann_whitney_greater(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let (m, n) = (a.len() as f64, b.len() as f64);
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|v| (*v, true))
        .chain(b.iter().map(|v| (*v, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    // Average ranks over ties; Σ(t³ - t) for the variance correction.
    let (mut rank_sum_a, mut ties) = (0.0, 0.0);
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let t = (j - i + 1) as f64;
        let rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_a += rank * all[i..=j].iter().filter(|x| x.1).count() as f64;
        ties += t * t * t - t;
        i = j + 1;
    }
    let u = rank_sum_a - m * (m + 1.0) / 2.0;
    let total = m + n;
    let mean = m * n / 2.0;
    let variance = m * n / 12.0 * ((total + 1.0) - ties / (total * (total - 1.0)));
    if variance <= 0.0 {
        // Every value equal: nothing to tell apart.
        return (u, 0.0, 1.0);
    }
    let z = (u - mean - 0.5) / variance.sqrt();
    (u, z, upper_tail(z))
}

/// P(Z > z) for a standard normal Z.
fn upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function (Numerical Recipes' Chebyshev fit, relative error below
/// 1.2e-7 everywhere, so small p-values stay accurate).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BaselineSettings {
        BaselineSettings {
            min_samples: 5,
            effect: 1.5,
            alpha: 0.01,
            looks: 60,
        }
    }

    #[test]
    fn normal_tail_matches_known_values() {
        // Φ(-1.96) = 0.0249979, Φ(-3.719) ≈ 1.0e-4, Φ(0) = 0.5.
        assert!((upper_tail(1.96) - 0.024_997_9).abs() < 1e-6);
        assert!((upper_tail(3.719_016) / 1.0e-4 - 1.0).abs() < 1e-3);
        assert!((upper_tail(0.0) - 0.5).abs() < 1e-7);
        assert!((upper_tail(-1.0) - 0.841_344_7).abs() < 1e-6);
    }

    #[test]
    fn u_statistic_by_hand() {
        // a = [3, 4], b = [1, 2, 3]: ranks 1, 2, 3.5, 3.5, 5 → R_a = 3.5 + 5 = 8.5, U = 5.5.
        let (u, _, p) = mann_whitney_greater(&[3.0, 4.0], &[1.0, 2.0, 3.0]);
        assert_eq!(u, 5.5);
        assert!(p < 0.5);
        let (u, z, p) = mann_whitney_greater(&[1.0; 4], &[1.0; 4]);
        assert_eq!((u, z, p), (8.0, 0.0, 1.0));
    }

    #[test]
    fn below_minimum_samples_is_inconclusive_never_a_breach() {
        let v = judge(&[1.0; 4], &[100.0; 20], Direction::Above, &settings());
        assert_eq!(
            v,
            BaselineVerdict::Inconclusive {
                before: 4,
                after: 20
            }
        );
    }

    #[test]
    fn a_large_slowdown_is_a_regression_a_small_one_is_not() {
        let before: Vec<f64> = (0..40).map(|i| 60.0 + f64::from(i % 7)).collect();
        let slow: Vec<f64> = (0..10).map(|i| 240.0 + f64::from(i % 5)).collect();
        let v = judge(&before, &slow, Direction::Above, &settings());
        let e = v.evidence().unwrap();
        assert!(v.is_regression(), "{}", e.sentence());
        assert!(e.effect > 3.8 && e.before_samples == 40 && e.after_samples == 10);
        // Significant but only 1.2x: not the effect asked for.
        let bit: Vec<f64> = (0..10).map(|i| 74.0 + f64::from(i % 3)).collect();
        let v = judge(&before, &bit, Direction::Above, &settings());
        assert!(!v.is_regression());
        assert!(v.evidence().unwrap().p_value < 1e-4);
    }

    #[test]
    fn direction_below_means_smaller_is_worse() {
        let before = [0.99, 0.98, 0.99, 0.97, 0.99, 0.98, 0.99, 0.98].repeat(2);
        let after = [0.4, 0.5, 0.45, 0.42, 0.5, 0.41, 0.44, 0.43].repeat(2);
        assert!(judge(&before, &after, Direction::Below, &settings()).is_regression());
        assert!(!judge(&before, &after, Direction::Above, &settings()).is_regression());
        let v = judge(&before, &after, Direction::Below, &settings());
        let e = v.evidence().unwrap();
        assert!((e.before_median - 0.985).abs() < 1e-9, "{}", e.sentence());
    }

    #[test]
    fn series_split_at_the_release() {
        let t = |s: i64| Timestamp::from_second(1_700_000_000 + s).unwrap();
        let points: Vec<_> = (0..100)
            .map(|i| (t(i * 30), if i < 60 { 60.0 } else { 240.0 }))
            .collect();
        let w = Duration::from_secs(1800);
        let s = settings();
        let at = |i: i64| judge_series(&points, Some(t(1800)), t(i * 30), w, Direction::Above, &s);
        assert_eq!(at(59), None, "before the release");
        assert_eq!(at(121), None, "more than a window after it");
        let BaselineVerdict::Regression(e) = at(70).unwrap() else {
            panic!("{:?}", at(70))
        };
        assert_eq!((e.before_samples, e.after_samples), (60, 11));
        assert_eq!(
            judge_series(&points, None, t(70 * 30), w, Direction::Above, &s),
            None
        );
    }

    #[test]
    fn looks_and_defaults_from_the_spec() {
        let spec: BaselineSpec =
            serde_json::from_value(serde_json::json!({"window": "30m"})).unwrap();
        let (w, s) = BaselineSettings::from_spec(&spec, Duration::from_secs(30)).unwrap();
        assert_eq!(w, Duration::from_secs(1800));
        assert_eq!(
            (s.looks, s.min_samples, s.effect, s.alpha),
            (60, 10, 1.5, 0.01)
        );
    }

    #[test]
    fn moving_off_zero_is_an_infinite_effect() {
        assert_eq!(ratio(0.02, 0.0), f64::INFINITY);
        assert_eq!(ratio(0.0, 0.0), 1.0);
        assert_eq!(ratio(-0.5, -1.0), 2.0);
    }
}
