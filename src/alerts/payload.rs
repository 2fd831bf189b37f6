//! Alertmanager's webhook payload, version 4
//! (<https://prometheus.io/docs/alerting/latest/configuration/#webhook_config>).

use std::collections::BTreeMap;

use serde::Deserialize;

/// The only payload version this receiver understands.
pub const VERSION: &str = "4";

/// One webhook notification: a group of alerts.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub version: String,
    pub group_key: String,
    /// `firing` or `resolved` (the group's; each alert carries its own).
    pub status: AlertStatus,
    pub receiver: String,
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<Alert>,
}

/// One alert of a notification.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: AlertStatus,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: jiff::Timestamp,
    /// Alertmanager sends the zero time (year 1) when it has no end for the alert.
    #[serde(default)]
    pub ends_at: Option<jiff::Timestamp>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// Why a body is refused, with the HTTP status it gets.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("malformed Alertmanager webhook payload: {0}")]
    Malformed(String),
    #[error("unsupported webhook payload version {0:?} (this receiver reads version \"4\")")]
    Version(String),
    #[error("invalid alert: {0}")]
    Invalid(String),
}

/// Parses and checks a body. Field errors name the field, never echo the body.
pub fn parse(body: &[u8]) -> Result<Notification, PayloadError> {
    // Version first, so a payload of another version gets the version error, not a field one.
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| PayloadError::Malformed(format!("not JSON ({})", e.classify_name())))?;
    match value.get("version").and_then(|v| v.as_str()) {
        Some(VERSION) => {}
        Some(other) => {
            return Err(PayloadError::Version(other.chars().take(16).collect()));
        }
        None => return Err(PayloadError::Malformed("no version field".into())),
    }
    let n: Notification =
        serde_json::from_value(value).map_err(|e| PayloadError::Malformed(e.to_string()))?;
    for a in &n.alerts {
        let ok = !a.fingerprint.is_empty()
            && a.fingerprint.len() <= 64
            && a.fingerprint.chars().all(|c| c.is_ascii_alphanumeric());
        if !ok {
            return Err(PayloadError::Invalid(
                "fingerprint must be 1-64 letters or digits".into(),
            ));
        }
    }
    Ok(n)
}

trait Classify {
    fn classify_name(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const SAMPLE: &str = r#"{
      "version": "4", "groupKey": "{}:{alertname=\"HighErrorRate\"}", "truncatedAlerts": 0,
      "status": "firing", "receiver": "frys",
      "groupLabels": {"alertname": "HighErrorRate"},
      "commonLabels": {"alertname": "HighErrorRate", "namespace": "shop", "app": "web"},
      "commonAnnotations": {}, "externalURL": "http://am:9093",
      "alerts": [{
        "status": "firing",
        "labels": {"alertname": "HighErrorRate", "namespace": "shop", "app": "web"},
        "annotations": {"summary": "errors"},
        "startsAt": "2026-12-01T10:00:00.123Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prom:9090/graph?g0.expr=x", "fingerprint": "3f1a9c0d2b4e5f60"
      }]
    }"#;

    #[test]
    fn reads_version_4() {
        let n = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(n.alerts.len(), 1);
        assert_eq!(n.alerts[0].status, AlertStatus::Firing);
        assert_eq!(n.alerts[0].labels["app"], "web");
        assert!(n.alerts[0].ends_at.unwrap().as_second() < 0);
    }

    #[test]
    fn refuses_other_versions_and_garbage() {
        let v3 = SAMPLE.replace(r#""version": "4""#, r#""version": "3""#);
        assert!(matches!(parse(v3.as_bytes()), Err(PayloadError::Version(v)) if v == "3"));
        assert!(matches!(
            parse(b"{not json"),
            Err(PayloadError::Malformed(_))
        ));
        assert!(matches!(
            parse(b"{\"version\":\"4\"}"),
            Err(PayloadError::Malformed(_))
        ));
        let bad_fp = SAMPLE.replace("3f1a9c0d2b4e5f60", "../x");
        assert!(matches!(
            parse(bad_fp.as_bytes()),
            Err(PayloadError::Invalid(_))
        ));
    }
}
