//! The target's GitOps owner in the policy's status (`status.gitops`), a re-applied template
//! (`status.reapplied`), and what to tell people when either changes.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;

use super::{Note, PolicyContext};
use crate::{
    api::{AlertLevel, Reapplied, RollbackEvent, RollbackPolicy, RollbackPolicyStatus},
    controller::{CACHED_TEMPLATE_HASH, gitops},
    strategy::{self, Cluster},
};

/// Fills `status.gitops` and `status.reapplied`; returns the alerts their changes call for.
pub(super) async fn report(
    pctx: &PolicyContext,
    policy: &RollbackPolicy,
    target: Option<&Deployment>,
    old: &RollbackPolicyStatus,
    status: &mut RollbackPolicyStatus,
) -> Vec<Note> {
    let ctx = &pctx.shared;
    let ns = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let events = pctx.events_in(&ns);
    let mut notes = vec![];

    status.gitops = match target {
        Some(d) => {
            let deployment = serde_json::to_value(d).unwrap_or_default();
            let cluster = Cluster::new(ctx.client.clone(), &ns);
            pctx.owners
                .status(
                    &cluster,
                    policy,
                    &ctx.config.argocd_namespace,
                    &deployment,
                    &events,
                )
                .await
        }
        None => None,
    };
    if let Some(g) = status.gitops.as_mut() {
        let latest = latest_event(&name, &events);
        let holder = g
            .held_by
            .as_ref()
            .and_then(|h| events.iter().find(|e| e.name_any() == *h));
        if let Some(event) = holder {
            let git = g
                .revision
                .as_deref()
                .map_or("its last revision".to_owned(), |r| format!("revision {r}"));
            g.message = Some(format!(
                "Deployment {} is held on {} by RollbackEvent {}, while {} still says Git is at {git} \
                 (its sync is held): fix the release in Git, then undo the event \
                 (kubectl annotate rbe {} rollback.frys.io/undo=true) to resume the sync",
                policy.spec.target_ref.name,
                gitops::held_on(event),
                event.name_any(),
                owner_words(g),
                event.name_any(),
            ));
        } else if g.message.is_none()
            && let Some(hold) = latest
                .and_then(|e| e.status.as_ref())
                .and_then(|s| s.gitops.as_ref())
                .filter(|h| !h.held)
        {
            g.message = Some(hold.message.clone());
        }
        let old_g = old.gitops.as_ref();
        let was_held = old_g.and_then(|o| o.held_by.as_ref());
        if g.held_by.is_some() && g.held_by.as_ref() != was_held {
            notes.push((
                AlertLevel::Warning,
                "GitopsSyncHeld",
                g.message.clone().unwrap_or_default(),
            ));
        } else if g.held_by.is_none() && was_held.is_some() {
            notes.push((
                AlertLevel::Info,
                "GitopsSyncResumed",
                format!("{} syncs again", owner_words(g)),
            ));
        } else if g.held_by.is_none()
            && g.message.is_some()
            && g.message.as_ref() != old_g.and_then(|o| o.message.as_ref())
        {
            notes.push((
                AlertLevel::Warning,
                "GitopsSyncNotHeld",
                g.message.clone().unwrap_or_default(),
            ));
        }
    }

    // A template rolled back from that runs again: named while it runs.
    status.reapplied = match target.and_then(running_rolled_back_from) {
        None => None,
        Some(hash) => {
            let rolled_back = events
                .iter()
                .filter(|e| e.spec.policy_ref.name == name)
                .filter(|e| {
                    e.spec
                        .rollback_target
                        .as_ref()
                        .is_some_and(|t| t.from_template == hash)
                })
                .max_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0))
                .map(|e| e.name_any())
                .unwrap_or_else(|| "unknown".into());
            match old.reapplied.as_ref().filter(|r| r.event == rolled_back) {
                Some(known) => Some(known.clone()),
                None => {
                    let cluster = Cluster::new(ctx.client.clone(), &ns);
                    let by = gitops::template_writer(&cluster, &policy.spec.target_ref.name).await;
                    Some(Reapplied {
                        message: format!(
                            "Deployment {} runs again the release that RollbackEvent {rolled_back} rolled back \
                             from (template {hash}); field manager {} re-applied it{}: {}",
                            policy.spec.target_ref.name,
                            by.manager,
                            by.operation
                                .as_deref()
                                .map(|o| format!(" ({o})"))
                                .unwrap_or_default(),
                            crate::gitops::managers::advice(&by.manager)
                        ),
                        by,
                        event: rolled_back,
                    })
                }
            }
        }
    };
    if let Some(r) = &status.reapplied
        && old.reapplied.as_ref().map(|o| &o.event) != Some(&r.event)
    {
        notes.push((
            AlertLevel::Critical,
            "BadTemplateReapplied",
            r.message.clone(),
        ));
    }
    notes
}

/// The hash of the cached target's template when it is the one a rollback rolled back from.
fn running_rolled_back_from(d: &Deployment) -> Option<String> {
    let from = d.annotations().get(strategy::ROLLED_BACK_FROM)?;
    let hash = d.annotations().get(CACHED_TEMPLATE_HASH)?;
    (hash == from).then(|| hash.clone())
}

fn latest_event<'a>(policy: &str, events: &'a [Arc<RollbackEvent>]) -> Option<&'a RollbackEvent> {
    events
        .iter()
        .filter(|e| e.spec.policy_ref.name == policy)
        .max_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0))
        .map(|e| e.as_ref())
}

fn owner_words(g: &crate::api::GitopsStatus) -> String {
    format!("{} {}/{}", crate::gitops::tool(g.kind), g.namespace, g.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        controller::trim_deployment_for_cache,
        fixtures::{deployment, template},
    };

    fn cached(mut d: Deployment) -> Deployment {
        trim_deployment_for_cache(&mut d);
        d
    }

    #[test]
    fn the_cache_keeps_no_pod_spec_but_knows_a_rolled_back_from_template_runs_again() {
        let rolled_back = deployment("web").rolled_back();
        // Rolled back to demo:v1: not the template rolled back from.
        let d = cached(rolled_back.build());
        assert_eq!(d.spec.as_ref().unwrap().template.spec, None);
        assert_eq!(running_rolled_back_from(&d), None);
        // demo:v2 re-applied over the rollback: named.
        let again = cached(rolled_back.with_template(template("demo:v2")).build());
        assert_eq!(
            running_rolled_back_from(&again),
            Some(strategy::template_hash(&template("demo:v2")))
        );
        assert_eq!(again.spec.as_ref().unwrap().template.spec, None);
    }

    #[test]
    fn only_the_operator_sets_the_cached_template_hash() {
        // Not rolled back: no hash, and one written on the object itself is dropped.
        let hash = strategy::template_hash(&template("demo:v2"));
        let d = cached(
            deployment("web")
                .with_annotation(CACHED_TEMPLATE_HASH, &hash)
                .build(),
        );
        assert!(!d.annotations().contains_key(CACHED_TEMPLATE_HASH));
        // Rolled back, running demo:v1, with demo:v2's hash written on the object: recomputed.
        let d = cached(
            deployment("web")
                .rolled_back()
                .with_annotation(CACHED_TEMPLATE_HASH, &hash)
                .build(),
        );
        assert_eq!(running_rolled_back_from(&d), None);
    }
}
