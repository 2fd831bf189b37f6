//! CloudEvents 1.0 in structured content mode with the JSON event format: one JSON object
//! holding the context attributes and the payload as `data`, sent as
//! `application/cloudevents+json`. Pure: no I/O.
//!
//! Used for alerts (the `CloudEvents` notification format, `data` = the `Json` format's
//! document) and for the Webhook strategy's calls.

use jiff::Timestamp;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::payload::{Alert, json_payload};

/// The media type of a structured-mode JSON CloudEvent.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";
/// The CloudEvents version the events follow.
pub const SPEC_VERSION: &str = "1.0";

/// The `type` of each alert, by the alert's reason code. Reasons not listed are sent as
/// [`OTHER_ALERT`], the reason kept in `data.reason`.
pub const ALERT_TYPES: &[(&str, &str)] = &[
    ("IncidentOpened", "io.frys.rollback.incident.opened"),
    ("IncidentClosed", "io.frys.rollback.incident.closed"),
    ("IncidentFailed", "io.frys.rollback.incident.failed"),
    ("IncidentFailedHold", "io.frys.rollback.incident.failed"),
    (
        "IncidentAcknowledged",
        "io.frys.rollback.incident.acknowledged",
    ),
    ("Remediating", "io.frys.rollback.remediation.started"),
    ("ManualRemediation", "io.frys.rollback.remediation.started"),
    ("ManualTrigger", "io.frys.rollback.remediation.started"),
    ("Emergency", "io.frys.rollback.remediation.started"),
    ("DryRunRemediation", "io.frys.rollback.remediation.skipped"),
    ("StepSucceeded", "io.frys.rollback.remediation.succeeded"),
    ("StepFailed", "io.frys.rollback.remediation.failed"),
    ("StepSuperseded", "io.frys.rollback.remediation.superseded"),
    ("Frozen", "io.frys.rollback.remediation.held"),
    ("BudgetExhausted", "io.frys.rollback.remediation.held"),
    ("CorrelatedFailure", "io.frys.rollback.remediation.held"),
];
/// The `type` of any other alert (readiness changes, refused triggers, ...).
pub const OTHER_ALERT: &str = "io.frys.rollback.alert";

/// The `type` of the Webhook strategy's apply call.
pub const WEBHOOK_APPLY: &str = "io.frys.rollback.webhook.apply";
/// The `type` of the Webhook strategy's undo call.
pub const WEBHOOK_UNDO: &str = "io.frys.rollback.webhook.undo";

/// The context attributes of one event (all but `specversion` and `datacontenttype`, which
/// are fixed).
#[derive(Clone, Debug, PartialEq)]
pub struct Context {
    /// Unique per event from this source; the same on every retry of that event, so a
    /// receiver can drop duplicates.
    pub id: String,
    /// A URI-reference naming the producer (see [`policy_source`]).
    pub source: String,
    /// Reverse-DNS event type, `io.frys.rollback.*`.
    pub type_: &'static str,
    /// What the event is about within the source (e.g. `rollbackevents/web-7f3k2`).
    pub subject: Option<String>,
    pub time: Timestamp,
}

/// The structured-mode JSON event.
pub fn envelope(context: &Context, data: Value) -> Value {
    let mut event = json!({
        "specversion": SPEC_VERSION,
        "id": context.id,
        "source": context.source,
        "type": context.type_,
        "time": context.time.to_string(),
        "datacontenttype": "application/json",
        "data": data,
    });
    if let Some(subject) = &context.subject {
        event["subject"] = json!(subject);
    }
    event
}

/// The `source` of everything about a policy: the policy's API path, a URI-reference
/// (absolute path) unique per policy. Kubernetes names are DNS labels/subdomains, so the path
/// needs no escaping.
pub fn policy_source(namespace: &str, policy: &str) -> String {
    format!("/apis/rollback.frys.io/v1alpha1/namespaces/{namespace}/rollbackpolicies/{policy}")
}

/// The `type` an alert is sent as.
pub fn alert_type(reason: &str) -> &'static str {
    ALERT_TYPES
        .iter()
        .find(|(r, _)| *r == reason)
        .map_or(OTHER_ALERT, |(_, t)| t)
}

/// An alert as a CloudEvent. Its `id` is a digest of the alert (policy, reason, message and
/// time to the nanosecond): the same for every retry of this alert, different for the next.
pub fn alert_event(alert: &Alert) -> Value {
    let mut digest = Sha256::new();
    for part in [
        alert.namespace.as_str(),
        alert.policy.as_str(),
        alert.reason.as_str(),
        alert.message.as_str(),
        &alert.time.to_string(),
    ] {
        digest.update(part.as_bytes());
        digest.update([0]);
    }
    let id: String = digest
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    let context = Context {
        id,
        source: policy_source(&alert.namespace, &alert.policy),
        type_: alert_type(&alert.reason),
        subject: None,
        time: alert.time,
    };
    envelope(&context, json_payload(alert))
}

/// The CloudEvents 1.0 rules for a structured-mode JSON event, checked one by one (core
/// spec "Context Attributes" and the JSON format), plus this operator's type naming: Err
/// names the first rule broken. What the tests hold every event the operator sends to.
pub fn conforms(event: &Value) -> Result<(), String> {
    let object = event.as_object().ok_or("an event is a JSON object")?;
    let text = |name: &str| object.get(name).and_then(Value::as_str);
    if text("specversion") != Some("1.0") {
        return Err("specversion must be the string 1.0".into());
    }
    for required in ["id", "source", "type"] {
        if text(required).is_none_or(str::is_empty) {
            return Err(format!("{required} is required: a non-empty string"));
        }
    }
    if !uri_reference(text("source").unwrap()) {
        return Err("source must be a URI-reference (RFC 3986)".into());
    }
    let type_ = text("type").unwrap();
    let reverse_dns = type_.split('.').count() >= 3
        && type_.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    if !type_.starts_with("io.frys.rollback.") || !reverse_dns {
        return Err(format!(
            "type {type_} is not reverse-DNS io.frys.rollback.*"
        ));
    }
    if let Some(time) = object.get("time") {
        let time = time.as_str().ok_or("time must be a string")?;
        // RFC 3339: a date, `T`, a time and an offset (jiff parses exactly that shape).
        time.parse::<Timestamp>()
            .map_err(|e| format!("time {time} is not RFC 3339: {e}"))?;
        let offset = time.len() > 6 && {
            let tail = time.as_bytes()[time.len() - 6..].to_vec();
            matches!(tail[0], b'+' | b'-') && tail[3] == b':'
        };
        if !time.contains('T') || !(time.ends_with(['Z', 'z']) || offset) {
            return Err(format!("time {time} is not RFC 3339"));
        }
    }
    for optional in ["subject", "datacontenttype", "dataschema"] {
        if object
            .get(optional)
            .is_some_and(|v| v.as_str().is_none_or(str::is_empty))
        {
            return Err(format!("{optional}, when present, is a non-empty string"));
        }
    }
    if object.contains_key("data") && object.contains_key("data_base64") {
        return Err("data and data_base64 are exclusive".into());
    }
    // Attribute names: lower-case a-z and 0-9 only (data_base64 is the format's member).
    for name in object.keys().filter(|k| *k != "data_base64") {
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err(format!("attribute name {name} is not [a-z0-9]+"));
        }
    }
    Ok(())
}

/// RFC 3986 URI-reference: a URI (`scheme:` then the rest) or a relative reference, made of
/// the characters the grammar allows (percent-escapes well formed).
fn uri_reference(s: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/?#%[]".contains(c);
    let escapes_ok = s
        .split('%')
        .skip(1)
        .all(|rest| rest.len() >= 2 && rest.chars().take(2).all(|c| c.is_ascii_hexdigit()));
    let scheme_ok = match s.split_once(':') {
        // A colon before any `/`, `?` or `#` ends a scheme, which must be well formed.
        Some((head, _)) if !head.contains(['/', '?', '#']) => {
            head.starts_with(|c: char| c.is_ascii_alphabetic())
                && head
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        _ => true,
    };
    s.chars().all(allowed) && escapes_ok && scheme_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AlertLevel;

    fn alert(reason: &str) -> Alert {
        Alert {
            level: AlertLevel::Critical,
            reason: reason.into(),
            message: "error rate 12% above 5%".into(),
            policy: "web".into(),
            namespace: "shop".into(),
            environment: "production".into(),
            time: "2026-11-25T22:00:00.123456789Z".parse().unwrap(),
        }
    }

    #[test]
    fn alerts_are_conforming_cloud_events_with_the_json_document_as_data() {
        let a = alert("IncidentOpened");
        let e = alert_event(&a);
        conforms(&e).unwrap();
        assert_eq!(e["type"], "io.frys.rollback.incident.opened");
        assert_eq!(
            e["source"],
            "/apis/rollback.frys.io/v1alpha1/namespaces/shop/rollbackpolicies/web"
        );
        assert_eq!(e["time"], "2026-11-25T22:00:00.123456789Z");
        assert_eq!(e["datacontenttype"], "application/json");
        assert_eq!(e["data"], json_payload(&a));
    }

    #[test]
    fn every_alert_type_conforms_and_unknown_reasons_fall_back() {
        for (reason, type_) in ALERT_TYPES {
            let e = alert_event(&alert(reason));
            assert_eq!(e["type"], *type_);
            conforms(&e).unwrap_or_else(|why| panic!("{reason}: {why}"));
        }
        assert_eq!(alert_type("ReferenceMissing"), OTHER_ALERT);
        conforms(&alert_event(&alert("ReferenceMissing"))).unwrap();
        for t in [WEBHOOK_APPLY, WEBHOOK_UNDO] {
            let c = Context {
                id: "x".into(),
                source: policy_source("a", "b"),
                type_: t,
                subject: Some("rollbackevents/e".into()),
                time: Timestamp::UNIX_EPOCH,
            };
            conforms(&envelope(&c, json!({}))).unwrap();
        }
    }

    #[test]
    fn ids_are_stable_per_alert_and_differ_between_alerts() {
        let a = alert("StepFailed");
        assert_eq!(alert_event(&a)["id"], alert_event(&a.clone())["id"]);
        let mut later = a.clone();
        later.time = "2026-11-25T22:00:00.123456790Z".parse().unwrap();
        assert_ne!(alert_event(&a)["id"], alert_event(&later)["id"]);
        assert_ne!(
            alert_event(&a)["id"],
            alert_event(&alert("StepSucceeded"))["id"]
        );
    }

    #[test]
    fn the_checker_refuses_what_the_spec_refuses() {
        let good = alert_event(&alert("IncidentOpened"));
        conforms(&good).unwrap();
        let broken = |edit: &dyn Fn(&mut Value)| {
            let mut e = good.clone();
            edit(&mut e);
            conforms(&e).unwrap_err()
        };
        broken(&|e| e["specversion"] = json!("0.3"));
        broken(&|e| e["specversion"] = json!(1.0));
        broken(&|e| e["id"] = json!(""));
        broken(&|e| drop(e.as_object_mut().unwrap().remove("source")));
        broken(&|e| e["source"] = json!("not a uri"));
        broken(&|e| e["source"] = json!("1http://x"));
        broken(&|e| e["source"] = json!("/bad%zz"));
        broken(&|e| e["type"] = json!("RollbackStarted"));
        broken(&|e| e["type"] = json!("io.frys.rollback.Incident"));
        broken(&|e| e["time"] = json!("25/11/2026 22:00"));
        broken(&|e| e["time"] = json!("2026-11-25 22:00:00"));
        broken(&|e| e["subject"] = json!(""));
        broken(&|e| e["data_base64"] = json!("e30="));
        broken(&|e| e["Level"] = json!("x"));
        assert!(uri_reference("https://hooks.example/x?y=1#z"));
        assert!(uri_reference("urn:frys:web"));
    }
}
