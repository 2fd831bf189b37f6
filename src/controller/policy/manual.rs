//! Manual requests: `rollback.frys.io/trigger` and `rollback.frys.io/emergency` annotations on
//! the policy or its Deployment, decided by the engine and removed once settled.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::{api::apps::v1::Deployment, apimachinery::pkg::apis::meta::v1::Time};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::{Note, PolicyContext, step};
use crate::{
    api::{
        AlertLevel, EffectiveSettings, EventPhase, LastRollback, RollbackPolicy,
        RollbackPolicyStatus, annotations,
    },
    controller::{Context, Error, health},
    decide::{self, PolicyState},
};

/// Handles a manual request annotated on the policy or its target Deployment: decides it with
/// the engine, creates its event, and removes the annotations once the request is settled.
pub(super) async fn handle(
    pctx: &PolicyContext,
    policy: &RollbackPolicy,
    target: Option<&Deployment>,
    effective: &EffectiveSettings,
    status: &mut RollbackPolicyStatus,
) -> Result<Vec<Note>, Error> {
    let ctx = &pctx.shared;
    let ns = policy.namespace().unwrap_or_default();
    let mut notes = vec![];
    let sources: [(&str, Option<&BTreeMap<String, String>>); 2] = [
        ("RollbackPolicy", policy.metadata.annotations.as_ref()),
        (
            "Deployment",
            target.and_then(|d| d.metadata.annotations.as_ref()),
        ),
    ];
    for (kind, annotations) in sources {
        let Some(request) = annotations.and_then(decide::manual_request) else {
            continue;
        };
        let consumed = match request {
            Err(message) => {
                notes.push((
                    AlertLevel::Warning,
                    "InvalidTrigger",
                    format!("{kind} annotation {}: {message}", annotations::TRIGGER),
                ));
                true
            }
            Ok(request) => {
                let Ok((_, settings)) = decide::from_policy(&policy.spec, effective) else {
                    return Ok(notes);
                };
                let state = PolicyState::from_status(status);
                let own = pctx.events_in(&ns);
                let busy = health::busy_event(&policy.name_any(), &own, None);
                let now = Timestamp::now();
                let decision = decide::decide_manual(&state, &request, &settings, None, busy, now);
                let state = decision.state.clone();
                if let Some(action) = &decision.action {
                    let event = step::create_event(ctx, policy, action, None, status, now).await?;
                    status.last_rollback = Some(LastRollback {
                        event: event.clone(),
                        strategy: action.strategy,
                        phase: EventPhase::Pending,
                        time: Time(now),
                    });
                    notes.push((
                        AlertLevel::Warning,
                        "ManualRemediation",
                        format!(
                            "{:?} {} requested on the {kind}: event {event}",
                            action.kind, action.strategy
                        ),
                    ));
                }
                state.write_to(status);
                notes.extend(
                    decision
                        .alerts
                        .iter()
                        .map(|a| (a.level, a.code, a.message.clone())),
                );
                if decision.action.is_none() {
                    notes.push((
                        AlertLevel::Info,
                        decision.explanation.reason.code(),
                        decision.explanation.message.clone(),
                    ));
                }
                decision.consumed
            }
        };
        if consumed {
            remove_request(ctx, kind, &ns, policy, target).await?;
        }
    }
    Ok(notes)
}

/// Removes the request annotations from the object that carried them.
async fn remove_request(
    ctx: &Context,
    kind: &str,
    ns: &str,
    policy: &RollbackPolicy,
    target: Option<&Deployment>,
) -> Result<(), Error> {
    let patch = Patch::Merge(json!({"metadata": {"annotations": {
        annotations::TRIGGER: null, annotations::REASON: null, annotations::EMERGENCY: null
    }}}));
    let params = PatchParams::default();
    if kind == "Deployment" {
        if let Some(d) = target {
            Api::<Deployment>::namespaced(ctx.client.clone(), ns)
                .patch(&d.name_any(), &params, &patch)
                .await?;
        }
    } else {
        Api::<RollbackPolicy>::namespaced(ctx.client.clone(), ns)
            .patch(&policy.name_any(), &params, &patch)
            .await?;
    }
    Ok(())
}
