//! The RollbackEvent reconciler: adopts each event under its policy (ownerReference, so
//! events go away with their policy) and records that it was accepted, or why not.

use std::{sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{Controller, controller::Action, reflector::Store, watcher},
};
use serde_json::json;

use super::{Context, EVENT_MANAGER, Error, Shutdown, scoped_api};
use crate::api::{EventPhase, EventType, RollbackEvent, RollbackPolicy};

const NAME: &str = "event";

pub(super) fn controller(
    ctx: Arc<Context>,
    shutdown: Shutdown,
) -> (impl Stream<Item = ()>, Store<RollbackEvent>) {
    let events: Api<RollbackEvent> = scoped_api(&ctx.client, ctx.namespace.as_deref());
    let controller = Controller::new(events, watcher::Config::default());
    let store = controller.store();
    let stream = controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .map(|result| {
            if let Err(error) = result {
                tracing::debug!(%error, "event controller event");
            }
        });
    (stream, store)
}

/// The ownerReference that ties an event to its policy.
pub fn owner_reference(policy: &RollbackPolicy) -> Option<OwnerReference> {
    let mut owner = policy.controller_owner_ref(&())?;
    // Deleting an event must never wait on the policy.
    owner.block_owner_deletion = Some(false);
    Some(owner)
}

async fn reconcile(event: Arc<RollbackEvent>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started(NAME);
    let ns = event
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = event.name_any();
    let phase = event.status.as_ref().map(|s| s.phase);
    if phase.is_some_and(EventPhase::is_finished) {
        return Ok(Action::await_change());
    }
    let events: Api<RollbackEvent> = Api::namespaced(ctx.client.clone(), &ns);
    let policies: Api<RollbackPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    let policy_name = &event.spec.policy_ref.name;

    let Some(policy) = policies.get_opt(policy_name).await? else {
        let message = format!("RollbackPolicy {policy_name} not found in namespace {ns}");
        write_status(&events, &name, EventPhase::Failed, &message).await?;
        tracing::warn!(event = %name, namespace = %ns, %message, "event refused");
        return Ok(Action::await_change());
    };

    if let Some(owner) = owner_reference(&policy)
        && !event.owner_references().iter().any(|o| o.uid == owner.uid)
    {
        let mut owners = event.owner_references().to_vec();
        owners.push(owner);
        // The resourceVersion makes this a compare-and-swap: a concurrent change retries.
        let patch = json!({"metadata": {"ownerReferences": owners, "resourceVersion": event.resource_version()}});
        events
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }

    if phase.is_none() {
        // Dry run records the decision and changes nothing; an emergency stop ignores it.
        if policy.spec.dry_run && event.spec.type_ != EventType::Emergency {
            let message = "dry run: decided, not applied (spec.dryRun is true)";
            write_status(&events, &name, EventPhase::Skipped, message).await?;
            tracing::info!(event = %name, namespace = %ns, strategy = %event.spec.strategy, "event skipped (dry run)");
        } else {
            write_status(&events, &name, EventPhase::Pending, "accepted").await?;
            tracing::info!(event = %name, namespace = %ns, strategy = %event.spec.strategy, "event accepted");
        }
    }
    Ok(Action::await_change())
}

async fn write_status(
    events: &Api<RollbackEvent>,
    name: &str,
    phase: EventPhase,
    message: &str,
) -> Result<(), Error> {
    let patch = json!({
        "apiVersion": RollbackEvent::api_version(&()),
        "kind": RollbackEvent::kind(&()),
        "status": {"phase": phase, "message": message},
    });
    events
        .patch_status(
            name,
            &PatchParams::apply(EVENT_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    Ok(())
}

fn error_policy(event: Arc<RollbackEvent>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(event = %event.name_any(), %error, "event reconcile failed");
    ctx.metrics.reconcile_failed(NAME, error.metric_label());
    Action::requeue(Duration::from_secs(5))
}
