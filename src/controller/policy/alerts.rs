//! Telling people: each alert becomes a Kubernetes Event on the policy, a log line at its
//! level, a count in the operator's metrics, and a webhook notification.

use jiff::Timestamp;
use kube::{
    Resource, ResourceExt,
    runtime::events::{Event, EventType},
};

use crate::{
    api::{AlertLevel, RollbackPolicy},
    controller::Context,
};

/// Publishes a Kubernetes Event and logs at the matching level. Best effort: a failure to
/// record an Event never fails the reconcile.
pub(in crate::controller) async fn publish(
    ctx: &Context,
    policy: &RollbackPolicy,
    level: AlertLevel,
    reason: &str,
    message: String,
) {
    let name = policy.name_any();
    ctx.metrics
        .alerts
        .get_or_create(&crate::telemetry::metrics::AlertLabels {
            level: level.as_str(),
            reason: reason.to_owned(),
        })
        .inc();
    match level {
        AlertLevel::Info => tracing::info!(%reason, %message, "alert"),
        AlertLevel::Warning => tracing::warn!(%reason, %message, "alert"),
        AlertLevel::Critical | AlertLevel::Emergency => {
            tracing::error!(%reason, %message, level = %level, "alert")
        }
    }
    // Webhooks (policy.spec.notifications): sent in the background, never blocking here.
    let ns = policy.namespace().unwrap_or_default();
    drop(ctx.notifier.notify(
        &ctx.client,
        &ns,
        &policy.spec.notifications,
        crate::notify::Alert {
            level,
            reason: reason.to_owned(),
            message: message.clone(),
            policy: name.clone(),
            namespace: ns.clone(),
            environment: ctx.config.environment.clone(),
            time: Timestamp::now(),
        },
    ));
    let event = Event {
        type_: if level == AlertLevel::Info {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: reason.into(),
        note: Some(message.chars().take(1000).collect()),
        action: "Assess".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &policy.object_ref(&())).await {
        tracing::warn!(%error, "could not publish event");
    }
}
