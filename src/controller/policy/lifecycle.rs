//! The policy's end: a finalizer (kube's `finalizer` helper) lets `onDelete: Restore` undo the
//! remediations still in effect before the policy goes away.

use kube::{ResourceExt, runtime::controller::Action};

use super::PolicyContext;
use crate::{
    api::{OnDelete, RollbackPolicy},
    controller::Error,
    strategy,
};

/// Finalizer that lets the operator apply `onDelete` before a policy goes away.
pub const FINALIZER: &str = "rollback.frys.io/on-delete";

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

/// `onDelete: Restore`: undoes every remediation of the policy still in effect, newest first.
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
        match strategy::undo(&cluster, &status.actions, false).await {
            Ok(_) => {
                tracing::warn!(event = %name, "restored on policy deletion (onDelete: Restore)")
            }
            Err(error) => {
                tracing::error!(event = %name, %error, "could not restore on policy deletion")
            }
        }
    }
}
