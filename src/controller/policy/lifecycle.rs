//! The policy's end: a finalizer (kube's `finalizer` helper) lets `onDelete: Restore` undo the
//! remediations still in effect before the policy goes away.

use std::sync::Arc;

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};

use super::PolicyContext;
use crate::{
    api::{OnDelete, RollbackPolicy},
    controller::Error,
    strategy,
};

/// Finalizer that lets the operator apply `onDelete` before a policy goes away.
pub const FINALIZER: &str = "rollback.frys.io/on-delete";

/// Only `onDelete: Restore` has work to do before the policy goes.
pub(super) fn needs_finalizer(policy: &RollbackPolicy) -> bool {
    policy.spec.on_delete == OnDelete::Restore
}

/// Removes this operator's finalizer if the policy carries it (it was `Restore` before, or was
/// created by an older version); returns the policy as it is now.
pub(super) async fn drop_finalizer(
    api: &Api<RollbackPolicy>,
    policy: Arc<RollbackPolicy>,
) -> Result<Arc<RollbackPolicy>, Error> {
    let Some(index) = policy.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(policy);
    };
    // `test` first: the index is only right for the list this copy holds.
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": FINALIZER},
        {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
    ]))?;
    let updated = api
        .patch(
            &policy.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await?;
    tracing::info!("onDelete is Keep: finalizer removed");
    Ok(Arc::new(updated))
}

/// The policy is being deleted: apply `onDelete`. Returning lets the finalizer go.
pub(super) async fn cleanup(
    pctx: &PolicyContext,
    policy: &RollbackPolicy,
) -> Result<Action, Error> {
    if policy.spec.on_delete == OnDelete::Restore {
        restore_all(pctx, policy).await;
    }
    Ok(Action::await_change())
}

/// `onDelete: Restore`: undoes the traffic and scale changes of the policy still in effect,
/// newest first (never a version rollback's template change).
/// A refused undo (the object changed since) is logged and left as it is: the person or tool
/// that changed it owns it now.
async fn restore_all(pctx: &PolicyContext, policy: &RollbackPolicy) {
    let ns = policy.namespace().unwrap_or_default();
    let mut own: Vec<_> = pctx
        .events_in(&ns)
        .into_iter()
        .filter(|e| e.spec.policy_ref.name == policy.name_any())
        .collect();
    own.sort_by_key(|e| std::cmp::Reverse((e.creation_timestamp(), e.name_any())));
    let cluster = strategy::Cluster::new(pctx.shared.client.clone(), &ns)
        .with_fence(pctx.shared.fence.clone());
    for event in own {
        let Some(status) = &event.status else {
            continue;
        };
        if status
            .actions
            .iter()
            .all(|a| a.undone || a.applied_at.is_none())
        {
            continue;
        }
        let name = event.name_any();
        if let Err(why) = pctx.shared.keys.check(&event) {
            let message = why.refusal("onDelete: Restore");
            tracing::error!(event = %name, %message, "not restored on policy deletion");
            crate::controller::digest::publish_refusal(&pctx.shared.recorder, &event, &message)
                .await;
            continue;
        }
        // The template a version rollback replaced is the release judged bad: deleting the
        // policy must not put it back. Traffic and scale changes are restored.
        let restorable: Vec<_> = status
            .actions
            .iter()
            .filter(|a| {
                !matches!(
                    strategy::Record::of(a),
                    Ok(strategy::Record::PodTemplate { .. })
                )
            })
            .cloned()
            .collect();
        if restorable
            .iter()
            .all(|a| a.undone || a.applied_at.is_none())
        {
            tracing::info!(event = %name, "kept on policy deletion: a rolled-back template is not re-deployed");
            continue;
        }
        match strategy::undo(&cluster, &restorable, false).await {
            Ok(_) => {
                tracing::warn!(event = %name, "restored on policy deletion (onDelete: Restore)")
            }
            Err(error) => {
                tracing::error!(event = %name, %error, "could not restore on policy deletion")
            }
        }
    }
}
