//! Kubernetes duration strings (`30s`, `5m`, `1h30m`, `250ms`) as they appear in the API.
//!
//! The value stays a string on the wire so that an object written by a newer client never
//! fails to deserialize in the operator; the schema pattern makes the API server refuse
//! malformed values with a clear message, and [`Duration::get`] parses for use.

use std::{borrow::Cow, fmt, str::FromStr, time};

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

/// Parses a Kubernetes (Go) duration string.
pub fn parse(value: &str) -> Result<time::Duration, InvalidDuration> {
    let invalid = |reason: String| InvalidDuration {
        value: value.to_owned(),
        reason,
    };
    let parsed = kube::core::Duration::from_str(value).map_err(|e| invalid(e.to_string()))?;
    if parsed.is_negative() {
        return Err(invalid("must not be negative".into()));
    }
    Ok(parsed.into())
}

/// Formats a duration the way Kubernetes users write it (`45s`, `2m5s`, `1h`, `350ms`).
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
    }
}
