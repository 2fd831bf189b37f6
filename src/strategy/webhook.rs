//! `Webhook`: hand the remediation to the user's own automation. The plan is one
//! [`Step::Call`]: POST the event (CloudEvents or JSON) to the URL in `urlSecretRef`. A 2xx
//! answer means applied; a JSON body `{"undoUrl": "..."}` names where undo POSTs. Pure: the
//! executor (`call.rs`) sends, this file says what and checks the answer.
//!
//! Undo URL rule: it must be on the same origin (scheme, host, port) as the Secret's URL. The
//! Secret's URL is what a namespace user with that Secret chose; an undo URL is what a server
//! answered. Accepting any allowed host would let that server (or whoever answers in its place)
//! point the operator at any in-cluster address the egress rules do not refuse. On the same
//! origin the operator reaches nothing new, and the record keeps only the path, not the host.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Call, Error, Objects, Plan, Record, Reference, Step, Strategy};
use crate::api::{Action, StrategyKind, WebhookFormat, WebhookSpec};
use crate::notify::cloudevents::{self, Context};

/// Timeout of one attempt when the rung sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts after the first when the rung sets none.
pub const DEFAULT_RETRIES: u32 = 2;
/// The type a webhook action is recorded under (it changes no Kubernetes object).
pub(super) const API_VERSION: &str = "rollback.frys.io/v1alpha1";
pub(super) const KIND: &str = "Webhook";

/// The event a call is made for: context the executor has and a planner must not need.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Origin {
    pub policy: String,
    /// The RollbackEvent's name and uid (the uid makes the CloudEvents id).
    pub event: String,
    pub event_uid: String,
    pub reason: String,
    /// The operator's environment (`ROLLBACK_ENV`).
    pub environment: String,
}

impl Strategy for WebhookSpec {
    /// Nothing: what the webhook acts on is outside the cluster.
    type Observed = ();

    fn kind(&self) -> StrategyKind {
        StrategyKind::Webhook
    }

    fn references(&self) -> Vec<Reference> {
        vec![Reference::Secret(self.url_secret_ref.clone())]
    }

    async fn observe(&self, _objects: &impl Objects, _target: &str) -> Result<(), Error> {
        Ok(())
    }

    /// Always one call: the operator cannot see whether the outside action is in place, so
    /// a resumed run calls again with the same CloudEvents id for the receiver to deduplicate.
    fn plan(&self, target: &str, _observed: &()) -> Result<Plan, Error> {
        let timeout = match &self.timeout {
            Some(d) => d.get().map_err(|e| Error::InvalidSpec(e.to_string()))?,
            None => DEFAULT_TIMEOUT,
        };
        let format = self.format.unwrap_or(WebhookFormat::CloudEvents);
        if format == WebhookFormat::Slack {
            return Err(Error::InvalidSpec(
                "webhook format must be CloudEvents or Json".into(),
            ));
        }
        let key = &self.url_secret_ref;
        let retries = self.retries.unwrap_or(DEFAULT_RETRIES);
        let record = Record::Webhook {
            secret: key.name.clone(),
            key: key.key.clone(),
            format,
            timeout_ms: timeout.as_millis() as u64,
            retries,
            undo_path: None,
        };
        let action = Action {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            name: key.name.clone(),
            namespace: None,
            summary: format!(
                "webhook (Secret {}/{}) called for {target}",
                key.name, key.key
            ),
            previous: Some(serde_json::to_value(record).expect("records serialize")),
            applied_at: None,
            undone: false,
        };
        let call = Call {
            url_secret_ref: key.clone(),
            format,
            timeout,
            retries,
            target: target.to_owned(),
            action,
        };
        Ok(Plan::new(self.kind(), vec![Step::Call(call)]))
    }
}

/// What a call asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Purpose {
    Apply,
    Undo,
}

/// The body of a call: the JSON document, or that document as the `data` of a CloudEvent
/// (`io.frys.rollback.webhook.apply` / `.undo`, id `<event uid>.apply` / `.undo`, the same on
/// every attempt and every resumed run).
pub(super) fn body(
    purpose: Purpose,
    format: WebhookFormat,
    origin: &Origin,
    namespace: &str,
    target: &str,
    now: Timestamp,
) -> Value {
    let (word, type_) = match purpose {
        Purpose::Apply => ("apply", cloudevents::WEBHOOK_APPLY),
        Purpose::Undo => ("undo", cloudevents::WEBHOOK_UNDO),
    };
    let data = json!({
        "action": if purpose == Purpose::Apply { "Apply" } else { "Undo" },
        "strategy": StrategyKind::Webhook.as_str(),
        "namespace": namespace,
        "policy": origin.policy,
        "event": origin.event,
        "target": target,
        "reason": origin.reason,
        "environment": origin.environment,
        "time": now.to_string(),
    });
    if format != WebhookFormat::CloudEvents {
        return data;
    }
    let id = if origin.event_uid.is_empty() {
        // No event (a caller outside the event controller): unique per call instead.
        let digest = Sha256::digest(format!("{namespace}\0{target}\0{word}\0{now}"));
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    } else {
        format!("{}.{word}", origin.event_uid)
    };
    let source = if origin.policy.is_empty() {
        format!("/apis/apps/v1/namespaces/{namespace}/deployments/{target}")
    } else {
        cloudevents::policy_source(namespace, &origin.policy)
    };
    let context = Context {
        id,
        source,
        type_,
        subject: (!origin.event.is_empty()).then(|| format!("rollbackevents/{}", origin.event)),
        time: now,
    };
    cloudevents::envelope(&context, data)
}

/// Why an undo URL is not kept. Names no URL (the answer is not echoed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum UndoRefused {
    #[error("its undoUrl is not a URL")]
    Invalid,
    #[error("its undoUrl is not on the origin of the Secret's URL")]
    OtherOrigin,
}

/// The undo path from a 2xx answer's body: None when the body names no `undoUrl` (not JSON,
/// or no such string member). An absolute or relative URL is resolved against `base` (the
/// Secret's URL) and kept as path and query when it is on `base`'s origin.
pub(super) fn undo_path(base: &url::Url, answer: &[u8]) -> Result<Option<String>, UndoRefused> {
    let Some(undo) = serde_json::from_slice::<Value>(answer)
        .ok()
        .and_then(|v| v.get("undoUrl").and_then(Value::as_str).map(str::to_owned))
    else {
        return Ok(None);
    };
    let url = base.join(&undo).map_err(|_| UndoRefused::Invalid)?;
    if url.origin() != base.origin() || !url.origin().is_tuple() {
        return Err(UndoRefused::OtherOrigin);
    }
    let mut path = url.path().to_owned();
    if let Some(query) = url.query() {
        path = format!("{path}?{query}");
    }
    Ok(Some(path))
}

/// The URL undo POSTs to: the recorded path on the Secret URL's origin (checked again: the
/// Secret may have changed since).
pub(super) fn undo_url(base: &url::Url, path: &str) -> Result<url::Url, UndoRefused> {
    if !path.starts_with('/') || path.starts_with("//") {
        return Err(UndoRefused::Invalid);
    }
    let url = base.join(path).map_err(|_| UndoRefused::Invalid)?;
    if url.origin() != base.origin() {
        return Err(UndoRefused::OtherOrigin);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::cloudevents::conforms;

    fn spec(v: Value) -> WebhookSpec {
        serde_json::from_value(v).unwrap()
    }

    fn base() -> url::Url {
        "https://hooks.example:8443/frys/apply?token=t"
            .parse()
            .unwrap()
    }

    #[test]
    fn plans_one_call_recording_the_secret_not_the_url() {
        let s = spec(
            json!({"urlSecretRef": {"name": "hook", "key": "url"}, "timeout": "2s", "retries": 1}),
        );
        let plan = s.plan("web", &()).unwrap();
        assert!(!plan.is_noop());
        let [Step::Call(call)] = &plan.steps[..] else {
            panic!("{plan:?}")
        };
        assert_eq!(
            (call.timeout, call.retries, call.format),
            (Duration::from_secs(2), 1, WebhookFormat::CloudEvents)
        );
        assert_eq!(plan.actions(), vec![call.action.clone()]);
        assert_eq!(
            Record::of(&call.action).unwrap(),
            Record::Webhook {
                secret: "hook".into(),
                key: "url".into(),
                format: WebhookFormat::CloudEvents,
                timeout_ms: 2000,
                retries: 1,
                undo_path: None
            }
        );
        assert_eq!(
            s.references(),
            vec![Reference::Secret(s.url_secret_ref.clone())]
        );
        let d = spec(json!({"urlSecretRef": {"name": "hook", "key": "url"}, "format": "Json"}));
        let [Step::Call(call)] = &d.plan("web", &()).unwrap().steps[..] else {
            panic!()
        };
        assert_eq!(
            (call.timeout, call.retries, call.format),
            (DEFAULT_TIMEOUT, DEFAULT_RETRIES, WebhookFormat::Json)
        );
        let slack = spec(json!({"urlSecretRef": {"name": "h", "key": "u"}, "format": "Slack"}));
        assert!(matches!(slack.plan("web", &()), Err(Error::InvalidSpec(_))));
    }

    #[test]
    fn bodies_are_cloud_events_with_stable_ids_or_the_plain_document() {
        let origin = Origin {
            policy: "web".into(),
            event: "web-7f3k2".into(),
            event_uid: "0b7c".into(),
            reason: "ErrorRateCritical".into(),
            environment: "production".into(),
        };
        let now: Timestamp = "2026-11-25T22:00:00Z".parse().unwrap();
        let later: Timestamp = "2026-11-25T22:00:05Z".parse().unwrap();
        let ce = body(
            Purpose::Apply,
            WebhookFormat::CloudEvents,
            &origin,
            "shop",
            "web",
            now,
        );
        conforms(&ce).unwrap();
        assert_eq!(ce["type"], "io.frys.rollback.webhook.apply");
        assert_eq!(ce["id"], "0b7c.apply");
        assert_eq!(ce["subject"], "rollbackevents/web-7f3k2");
        assert_eq!(ce["data"]["target"], "web");
        assert_eq!(ce["data"]["action"], "Apply");
        let retry = body(
            Purpose::Apply,
            WebhookFormat::CloudEvents,
            &origin,
            "shop",
            "web",
            later,
        );
        assert_eq!(retry["id"], ce["id"]);
        let undo = body(
            Purpose::Undo,
            WebhookFormat::CloudEvents,
            &origin,
            "shop",
            "web",
            now,
        );
        assert_eq!(undo["type"], "io.frys.rollback.webhook.undo");
        assert_ne!(undo["id"], ce["id"]);
        let plain = body(
            Purpose::Apply,
            WebhookFormat::Json,
            &origin,
            "shop",
            "web",
            now,
        );
        assert_eq!(plain, ce["data"]);
        let anonymous = body(
            Purpose::Apply,
            WebhookFormat::CloudEvents,
            &Origin::default(),
            "shop",
            "web",
            now,
        );
        conforms(&anonymous).unwrap();
    }

    #[test]
    fn undo_urls_must_stay_on_the_secret_urls_origin() {
        let path = |answer: &str| undo_path(&base(), answer.as_bytes());
        assert_eq!(
            path(r#"{"undoUrl": "https://hooks.example:8443/frys/undo/42?token=t"}"#),
            Ok(Some("/frys/undo/42?token=t".into()))
        );
        assert_eq!(
            path(r#"{"undoUrl": "undo/42"}"#),
            Ok(Some("/frys/undo/42".into()))
        );
        assert_eq!(path(r#"{"undoUrl": "/x"}"#), Ok(Some("/x".into())));
        for other in [
            r#"{"undoUrl": "https://hooks.example/frys/undo"}"#,
            r#"{"undoUrl": "http://hooks.example:8443/frys/undo"}"#,
            r#"{"undoUrl": "https://kubernetes.default.svc/api"}"#,
            r#"{"undoUrl": "//evil.example/undo"}"#,
        ] {
            assert_eq!(path(other), Err(UndoRefused::OtherOrigin), "{other}");
        }
        assert_eq!(
            path(r#"{"undoUrl": "http://[::1"}"#),
            Err(UndoRefused::Invalid)
        );
        for none in ["", "ok", "[]", r#"{"undo": "/x"}"#, r#"{"undoUrl": 3}"#] {
            assert_eq!(path(none), Ok(None), "{none}");
        }
        assert_eq!(
            undo_url(&base(), "/frys/undo/42").unwrap().as_str(),
            "https://hooks.example:8443/frys/undo/42"
        );
        assert_eq!(
            undo_url(&base(), "//evil.example/x"),
            Err(UndoRefused::Invalid)
        );
        assert_eq!(undo_url(&base(), "x"), Err(UndoRefused::Invalid));
    }
}
