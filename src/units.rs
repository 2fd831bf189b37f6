//! Numbers for people: a few significant digits and a unit, for status messages, Events, alerts
//! and tables. Machine fields (`status.health.metrics`, `-o json`) keep full precision.

use crate::api::Unit;

/// Significant digits shown to people: enough to tell 0.021 from 0.02, few enough to read.
pub const DIGITS: i32 = 3;

/// `v` with [`DIGITS`] significant digits, trailing zeros dropped: `0.0009999999999999998` is
/// `0.001`, `45.6789` is `45.7`, `1234567` is `1230000`; integers below 1000 stay as they are.
pub fn num(v: f64) -> String {
    sig(v, DIGITS)
}

/// `v` with `digits` significant digits (at least 1), trailing zeros dropped.
pub fn sig(v: f64, digits: i32) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v == 0.0 {
        return "0".into();
    }
    let digits = digits.max(1);
    let magnitude = v.abs().log10().floor() as i32;
    // Round at the last significant digit; rounding can carry into a new magnitude (999.7).
    let scale = 10f64.powi(digits - 1 - magnitude);
    let rounded = (v * scale).round() / scale;
    let magnitude = rounded.abs().log10().floor() as i32;
    let decimals = (digits - 1 - magnitude).clamp(0, 17) as usize;
    let s = format!("{rounded:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    if s == "-0" { "0".into() } else { s.into() }
}

/// `v` in `unit` for people: `45 ms`, `3 %` (of a ratio 0.03), `12.5 req/s`, or the number alone.
pub fn show(v: f64, unit: Option<Unit>) -> String {
    match unit {
        Some(Unit::Milliseconds) => format!("{} ms", num(v)),
        Some(Unit::Ratio) => format!("{} %", num(v * 100.0)),
        Some(Unit::PerSecond) => format!("{} req/s", num(v)),
        None => num(v),
    }
}

/// A ratio (0-1) as a percentage: `percent(0.987)` is `98.7 %`.
pub fn percent(ratio: f64) -> String {
    show(ratio, Some(Unit::Ratio))
}

/// Milliseconds: `millis(45.04)` is `45 ms`.
pub fn millis(ms: f64) -> String {
    show(ms, Some(Unit::Milliseconds))
}

/// Requests per second: `per_second(12.345)` is `12.3 req/s`.
pub fn per_second(rate: f64) -> String {
    show(rate, Some(Unit::PerSecond))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_issues_examples() {
        assert_eq!(num(0.0009999999999999998), "0.001");
        assert_eq!(num(45.6789), "45.7");
        assert_eq!(num(0.3), "0.3");
        assert_eq!(num(0.30000000000000004), "0.3");
        assert_eq!(num(2000.0), "2000");
        assert_eq!(num(1234567.0), "1230000");
        assert_eq!(num(999.7), "1000");
        assert_eq!(num(-0.04567), "-0.0457");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(f64::NAN), "NaN");
        assert_eq!(sig(2.0 / 3.0, 1), "0.7");
    }

    #[test]
    fn units() {
        assert_eq!(percent(0.0009999999999999998), "0.1 %");
        assert_eq!(percent(0.3), "30 %");
        assert_eq!(percent(0.98765), "98.8 %");
        assert_eq!(millis(45.04), "45 ms");
        assert_eq!(millis(1234.5), "1230 ms");
        assert_eq!(per_second(12.345), "12.3 req/s");
        assert_eq!(show(0.5, None), "0.5");
    }

    proptest! {
        /// At most DIGITS significant digits, and within half a unit of the last one.
        #[test]
        fn rounding_is_close_and_short(v in -1e9..1e9f64) {
            let s = num(v);
            let back: f64 = s.parse().unwrap();
            let tolerance = v.abs() * 0.5 * 10f64.powi(1 - DIGITS) + f64::EPSILON;
            prop_assert!((back - v).abs() <= tolerance, "{v} -> {s}");
            let digits = s.trim_start_matches('-').replace('.', "");
            let significant = digits.trim_start_matches('0').trim_end_matches('0');
            prop_assert!(significant.len() <= DIGITS as usize, "{v} -> {s}");
        }
    }
}
