//! The alert and the payload shapes sinks receive (CloudEvents in `cloudevents.rs`). Pure: no
//! I/O.

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};

use crate::api::{AlertLevel, WebhookFormat};

/// One alert, as sent to webhooks.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub level: AlertLevel,
    /// PascalCase reason code (the Kubernetes Event's reason), e.g. `ErrorRateCritical`.
    pub reason: String,
    pub message: String,
    /// Name of the RollbackPolicy.
    pub policy: String,
    /// Namespace of the policy.
    pub namespace: String,
    /// The operator's environment (`ROLLBACK_ENV`).
    pub environment: String,
    pub time: Timestamp,
}

/// The body posted to a sink of this format.
pub fn payload(format: WebhookFormat, alert: &Alert) -> Value {
    match format {
        WebhookFormat::Slack => slack_payload(alert),
        WebhookFormat::Json => json_payload(alert),
        WebhookFormat::CloudEvents => super::cloudevents::alert_event(alert),
    }
}

/// The Content-Type of a body of this format.
pub fn content_type(format: WebhookFormat) -> &'static str {
    match format {
        WebhookFormat::CloudEvents => super::cloudevents::CONTENT_TYPE,
        WebhookFormat::Slack | WebhookFormat::Json => "application/json",
    }
}

/// One line: `[Critical] shop/web: ErrorRateCritical — message (production)`.
pub fn summary(alert: &Alert) -> String {
    format!(
        "[{}] {}/{}: {} — {} ({})",
        alert.level, alert.namespace, alert.policy, alert.reason, alert.message, alert.environment
    )
}

/// Slack-compatible (incoming webhooks; Mattermost and others accept it too): `text` carries
/// the whole alert, so clients that ignore `blocks` lose nothing.
pub fn slack_payload(alert: &Alert) -> Value {
    let emoji = match alert.level {
        AlertLevel::Info => ":information_source:",
        AlertLevel::Warning => ":warning:",
        AlertLevel::Critical => ":rotating_light:",
        AlertLevel::Emergency => ":sos:",
    };
    json!({
        "text": summary(alert),
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": format!(
                        "{emoji} *[{}] {}/{}*: `{}`\n{}",
                        alert.level, alert.namespace, alert.policy, alert.reason, alert.message
                    ),
                }
            },
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": format!("environment: {} · {}", alert.environment, alert.time)}
                ]
            }
        ]
    })
}

/// Generic JSON: every field of the alert (`level`, `reason`, `message`, `policy`, `namespace`,
/// `environment`, `time` in RFC 3339).
pub fn json_payload(alert: &Alert) -> Value {
    serde_json::to_value(alert).expect("an Alert serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            level: AlertLevel::Critical,
            reason: "ErrorRateCritical".into(),
            message: "error rate 12% above 5%".into(),
            policy: "web".into(),
            namespace: "shop".into(),
            environment: "production".into(),
            time: "2026-11-25T22:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn slack_text_summarises_the_alert() {
        let p = payload(WebhookFormat::Slack, &alert());
        assert_eq!(
            p["text"],
            "[Critical] shop/web: ErrorRateCritical — error rate 12% above 5% (production)"
        );
        let section = p["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(section.contains("*[Critical] shop/web*"), "{section}");
        assert!(section.contains("`ErrorRateCritical`"), "{section}");
        let context = p["blocks"][1]["elements"][0]["text"].as_str().unwrap();
        assert!(context.contains("production"), "{context}");
    }

    #[test]
    fn json_has_every_field() {
        let p = payload(WebhookFormat::Json, &alert());
        assert_eq!(
            p,
            json!({
                "level": "Critical",
                "reason": "ErrorRateCritical",
                "message": "error rate 12% above 5%",
                "policy": "web",
                "namespace": "shop",
                "environment": "production",
                "time": "2026-11-25T22:00:00Z",
            })
        );
    }
}
