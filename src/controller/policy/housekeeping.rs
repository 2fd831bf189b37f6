//! Housekeeping of finished remediations: pruning beyond `historyLimit` and `autoRestore` of
//! traffic rungs (the pure choices are in `decide`).

use jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::PolicyContext;
use crate::{
    api::{RollbackEvent, RollbackPolicy, RollbackPolicyStatus, annotations},
    decide, strategy,
};

/// `autoRestore`: asks the event controller to undo traffic rungs once the target has been
/// healthy for long enough (the same path as a person's `rollback.frys.io/undo=true`).
pub(super) async fn auto_restore(
    pctx: &PolicyContext,
    policy: &RollbackPolicy,
    status: &RollbackPolicyStatus,
) {
    let ns = policy.namespace().unwrap_or_default();
    let own = pctx.events_in(&ns);
    let api: Api<RollbackEvent> = Api::namespaced(pctx.shared.client.clone(), &ns);
    let restorable = |kind| strategy::restore_of(kind).auto_restore;
    for name in decide::due_for_restore(policy, status, &own, restorable, Timestamp::now()) {
        // A record the operator did not sign is never undone: asking would only be refused.
        let signed = own
            .iter()
            .find(|e| e.name_any() == name)
            .is_some_and(|e| pctx.shared.keys.check(e).is_ok());
        if !signed {
            tracing::debug!(event = %name, "not restored automatically: its recorded actions are not the operator's");
            continue;
        }
        let patch = json!({"metadata": {"annotations": {annotations::UNDO: "true"}}});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {
                tracing::info!(event = %name, "healthy for restoreAfter: restoring the traffic rung")
            }
            Err(error) => tracing::warn!(event = %name, %error, "requesting an automatic restore"),
        }
    }
}

/// Deletes finished RollbackEvents beyond the policy's historyLimit. Best effort: a failure is
/// logged and retried at the next reconcile.
pub(super) async fn prune_history(pctx: &PolicyContext, policy: &RollbackPolicy) {
    let ns = policy.namespace().unwrap_or_default();
    let own = pctx.events_in(&ns);
    let api: Api<RollbackEvent> = Api::namespaced(pctx.shared.client.clone(), &ns);
    for old in decide::beyond_history(&policy.name_any(), &own, policy.spec.history_limit) {
        let name = old.name_any();
        match api.delete(&name, &Default::default()).await {
            Ok(_) => tracing::info!(event = %name, "pruned beyond historyLimit"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(error) => tracing::warn!(event = %name, %error, "pruning an old event"),
        }
    }
}
