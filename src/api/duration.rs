//! Kubernetes duration strings (`30s`, `5m`, `1h30m`, `250ms`) as they appear in the API.
//!
//! The value stays a string on the wire so that an object written by a newer client never
//! fails to deserialize in the operator; the schema pattern makes the API server refuse
//! malformed values with a clear message, and [`Duration::get`] parses for use.

use std::{borrow::Cow, fmt, time};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Pattern the API server enforces: one or more `<number><unit>` groups, units ms, s, m, h.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// A Kubernetes duration string such as `30s`, `5m` or `1h30m`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Duration(String);

/// A duration string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {value:?}: {reason} (expected e.g. 30s, 5m, 1h30m, 250ms)")]
pub struct InvalidDuration {
    pub value: String,
    pub reason: String,
}

impl Duration {
    /// Parses the string; negative durations are refused.
    pub fn get(&self) -> Result<time::Duration, InvalidDuration> {
        parse(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Parses a Kubernetes (Go) duration string: `<number><unit>` groups (units ns, us, µs, ms, s, m,
/// h; decimals allowed), or `0`. Negative durations are refused.
///
/// Not kube's `Duration::from_str`: it panics on a sum or product beyond `Duration::MAX` and
/// on a negative group after the first (`99999999999999999999h`, `1s-1s`), and the first
/// matches the schema pattern, so a policy author could stop the operator with it.
pub fn parse(value: &str) -> Result<time::Duration, InvalidDuration> {
    let invalid = |reason: &str| InvalidDuration {
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    if value.starts_with('-') {
        return Err(invalid("must not be negative"));
    }
    let mut rest = value.strip_prefix('+').unwrap_or(value);
    if rest == "0" {
        return Ok(time::Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid("empty duration"));
    }
    let mut total = time::Duration::ZERO;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        if number.is_empty() || number == "." {
            return Err(invalid("expected a number"));
        }
        let number: f64 = number.parse().map_err(|_| invalid("invalid number"))?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let unit = match unit {
            "ns" => time::Duration::from_nanos(1),
            // U+00B5 is the micro sign, U+03BC the Greek letter mu (Go accepts both).
            "us" | "\u{b5}s" | "\u{3bc}s" => time::Duration::from_micros(1),
            "ms" => time::Duration::from_millis(1),
            "s" => time::Duration::from_secs(1),
            "m" => time::Duration::from_secs(60),
            "h" => time::Duration::from_secs(3600),
            "" => return Err(invalid("missing unit")),
            _ => return Err(invalid("unknown unit")),
        };
        let too_long = || invalid("too long");
        let group = time::Duration::try_from_secs_f64(unit.as_secs_f64() * number)
            .map_err(|_| too_long())?;
        total = total.checked_add(group).ok_or_else(too_long)?;
        rest = after;
    }
    Ok(total)
}

/// Formats a duration the way Kubernetes users write it (`45s`, `2m5s`, `1h`, `350ms`,
/// `1s500ms`), to the millisecond: [`parse`] reads it back as `d` cut to whole milliseconds.
pub fn format(d: time::Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    // Dropping them made a `1500ms` default `1s` in `status.effective`.
    let rest_ms = ms % 1000;
    if rest_ms > 0 {
        out.push_str(&format!("{rest_ms}ms"));
    }
    out
}

impl From<time::Duration> for Duration {
    fn from(d: time::Duration) -> Self {
        Self(format(d))
    }
}

impl From<&str> for Duration {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": 32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_durations() {
        assert_eq!(parse("30s").unwrap(), time::Duration::from_secs(30));
        assert_eq!(parse("1h30m").unwrap(), time::Duration::from_secs(5400));
        assert_eq!(parse("250ms").unwrap(), time::Duration::from_millis(250));
        assert!(parse("30").is_err());
        assert!(parse("-5s").is_err());
        assert!(
            parse("5 minutes")
                .unwrap_err()
                .to_string()
                .contains("5 minutes")
        );
    }

    #[test]
    fn formats_round_trip() {
        for s in ["45s", "2m5s", "1h", "350ms", "1h0m1s"] {
            let d = parse(s).unwrap();
            assert_eq!(parse(&format(d)).unwrap(), d, "{s}");
        }
        assert_eq!(format(time::Duration::from_secs(3601)), "1h1s");
        assert_eq!(format(time::Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format(time::Duration::from_millis(60_250)), "1m250ms");
    }

    /// Regression: kube's parser panicked on the first four (seen while writing the duration fuzz
    /// target); all are errors now.
    #[test]
    fn huge_or_negative_groups_are_errors_not_panics() {
        for bad in [
            "9999999999999999999999999999999h",
            "99999999999999999999h",
            "18446744073709551615s1s",
            "1s-1s",
            "1s+1s",
            "-0s",
            "",
            "+",
            ".s",
            "1..5s",
            "5",
            "5d",
            "1h 30m",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn go_forms_still_parse() {
        let ms = time::Duration::from_millis;
        for (text, want) in [
            ("0", ms(0)),
            ("+5s", ms(5000)),
            ("1.5h", ms(5_400_000)),
            (".5s", ms(500)),
            ("5.s", ms(5000)),
            ("1h0m0.5s", ms(3_600_500)),
            ("1500us", ms(1) + time::Duration::from_micros(500)),
            ("2\u{b5}s", time::Duration::from_micros(2)),
            ("7ns", time::Duration::from_nanos(7)),
        ] {
            assert_eq!(parse(text).unwrap(), want, "{text}");
        }
    }

    proptest::proptest! {
        /// format and parse agree to the millisecond, for every duration up to ~3000 years.
        #[test]
        fn format_round_trips_to_the_millisecond(secs in 0u64..100_000_000_000, nanos in 0u32..1_000_000_000) {
            let d = time::Duration::new(secs, nanos);
            let text = format(d);
            let cut = time::Duration::from_millis(u64::try_from(d.as_millis()).unwrap());
            proptest::prop_assert_eq!(parse(&text).unwrap(), cut, "{}", text);
            proptest::prop_assert!(regex::Regex::new(DURATION_PATTERN).unwrap().is_match(&text), "{}", text);
        }

        /// Whatever the text, parse answers (no panic), and never more than Duration::MAX.
        #[test]
        fn parse_never_panics(text in "[0-9.+\\-]{0,24}(ns|us|ms|s|m|h|x)?[0-9.]{0,3}[a-z]{0,2}|\\PC{0,16}") {
            let _ = parse(&text);
        }

        /// Each group adds up: `a` then `b` is `a + b` (when both fit).
        #[test]
        fn groups_add_up(a in 0u64..10_000_000, b in 0u64..1000, unit_a in 0usize..4, unit_b in 0usize..4) {
            const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)];
            let (ua, ma) = UNITS[unit_a];
            let (ub, mb) = UNITS[unit_b];
            let text = format!("{a}{ua}{b}{ub}");
            proptest::prop_assert_eq!(parse(&text).unwrap(), time::Duration::from_millis(a * ma + b * mb), "{}", text);
        }
    }
}
