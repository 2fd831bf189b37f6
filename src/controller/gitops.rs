//! GitOps at the edge: looks up the target's Argo CD or Flux owner, plans holding its sync for a
//! remediation, and names who re-applied a template (the pure parts are in `crate::gitops` and
//! `crate::strategy`'s sync hold).
//!
//! RBAC: reading and patching the owners needs `get` and `patch` on `applications.argoproj.io`
//! (usually in namespace `argocd`) or `kustomizations` / `helmreleases` of the Flux groups,
//! which the Helm chart grants only when asked (values `gitops.argocd.enabled`,
//! `gitops.flux.enabled`). Without them the lookups answer 403: reported, never fatal.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use kube::ResourceExt;
use serde_json::Value;

use crate::{
    api::{
        FieldManagerRef, GitopsHold, GitopsStatus, OnRemediation, RollbackEvent, RollbackPolicy,
        StrategyKind,
    },
    gitops::{self, OwnerRef, managers},
    strategy::{self, Change, Cluster, Kind, Objects, Record},
};

/// Why an owner could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("the operator may not read {owner} (403): enable the Helm value {value}")]
    Forbidden { owner: String, value: &'static str },
    #[error("{owner} was not found (or its CRD is not installed)")]
    NotFound { owner: String },
    #[error("{owner} does not manage this Deployment: {why}")]
    NotManaged { owner: String, why: String },
    #[error("reading {owner}: {error}")]
    Other { owner: String, error: String },
}

/// The owner that the Deployment names, if any.
pub(super) fn owner_of(deployment: &Value, argocd_namespace: &str) -> Option<OwnerRef> {
    let map = |p: &str| -> std::collections::BTreeMap<String, String> {
        deployment
            .pointer(p)
            .and_then(|m| serde_json::from_value(m.clone()).ok())
            .unwrap_or_default()
    };
    gitops::detect(
        &map("/metadata/labels"),
        &map("/metadata/annotations"),
        argocd_namespace,
    )
}

fn deployment_name(deployment: &Value) -> &str {
    deployment
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Reads the owner object and checks that it manages Deployment `namespace/target`.
pub(super) async fn look_up(
    cluster: &Cluster,
    owner: &OwnerRef,
    target: &str,
) -> Result<Value, Unavailable> {
    let kind = Kind::of_gitops(owner.kind);
    let object = cluster
        .get_in(kind, &owner.namespace, &owner.name)
        .await
        .map_err(|e| match e {
            strategy::Error::NotFound { .. } => Unavailable::NotFound {
                owner: owner.to_string(),
            },
            strategy::Error::Kube(kube::Error::Api(s)) if s.code == 403 => Unavailable::Forbidden {
                owner: owner.to_string(),
                value: gitops::rbac_value(owner.kind),
            },
            // Never the response body: only the status code and reason.
            strategy::Error::Kube(kube::Error::Api(s)) => Unavailable::Other {
                owner: owner.to_string(),
                error: format!("{} ({})", s.reason, s.code),
            },
            other => Unavailable::Other {
                owner: owner.to_string(),
                error: other.reason().to_owned(),
            },
        })?;
    gitops::manages(owner.kind, &object, cluster.namespace(), target).map_err(|why| {
        Unavailable::NotManaged {
            owner: owner.to_string(),
            why,
        }
    })?;
    Ok(object)
}

/// What a remediation should do about the owner's sync.
pub(super) enum HoldPlan {
    /// Perform this change (its action is recorded first); `hold` says what it did.
    Hold(Box<Change>, GitopsHold),
    /// Nothing to change; `GitopsHold` says why (sync already off, owner unusable).
    Report(GitopsHold),
}

/// Whether the policy asks to hold the owner's sync for `strategy`: the rungs a sync would
/// undo (a rolled-back template, replicas at zero), unless the policy says Ignore.
pub(super) fn wants_hold(policy: &RollbackPolicy, strategy: StrategyKind) -> bool {
    let wanted = policy
        .spec
        .gitops
        .as_ref()
        .and_then(|g| g.on_remediation)
        .unwrap_or_default();
    wanted == OnRemediation::Suspend
        && matches!(
            strategy,
            StrategyKind::VersionRollback | StrategyKind::EmergencyShutdown
        )
}

/// Plans holding the owner's sync for `strategy` run by event `event`. None when the policy
/// says Ignore, the strategy is not one that a sync would undo, or the target has no owner.
pub(super) async fn plan_hold(
    cluster: &Cluster,
    policy: &RollbackPolicy,
    argocd_namespace: &str,
    event: &str,
    strategy: StrategyKind,
    deployment: &Value,
) -> Option<HoldPlan> {
    if !wants_hold(policy, strategy) {
        return None;
    }
    let owner = owner_of(deployment, argocd_namespace)?;
    let report = |held: bool, message: String| GitopsHold {
        kind: owner.kind,
        name: owner.name.clone(),
        namespace: owner.namespace.clone(),
        held,
        message,
    };
    let target = deployment_name(deployment);
    match look_up(cluster, &owner, target).await {
        Err(Unavailable::NotFound { .. }) if owner.tentative() => None,
        Err(why) => Some(HoldPlan::Report(report(
            false,
            format!("sync not held: {why}"),
        ))),
        Ok(object) => {
            let why = format!("{strategy} by RollbackEvent {event}");
            Some(match strategy::plan_hold(&owner, &object, &why) {
                Some(change) => {
                    let message = format!(
                        "{}; undo RollbackEvent {event} (kubectl annotate rbe {event} rollback.frys.io/undo=true) to turn it back on",
                        change.action.summary
                    );
                    HoldPlan::Hold(Box::new(change), report(true, message))
                }
                None => HoldPlan::Report(report(
                    false,
                    format!("{owner} does not sync by itself: nothing to hold"),
                )),
            })
        }
    }
}

/// Why performing a hold failed, in words (a 403 names the Helm value that grants it).
pub(super) fn hold_failed(hold: &GitopsHold, error: &strategy::Error) -> String {
    let owner = format!(
        "{} {}/{}",
        gitops::tool(hold.kind),
        hold.namespace,
        hold.name
    );
    match error {
        strategy::Error::Kube(kube::Error::Api(s)) if s.code == 403 => format!(
            "sync not held: the operator may not patch {owner} (403): enable the Helm value {}",
            gitops::rbac_value(hold.kind)
        ),
        strategy::Error::Kube(kube::Error::Api(s)) => {
            format!("sync not held: patching {owner}: {} ({})", s.reason, s.code)
        }
        other => format!("sync not held: {other}"),
    }
}

/// Who last wrote the Deployment's pod template: a direct read, since the operator's cache
/// drops managedFields (this runs once per re-applied template).
pub(super) async fn template_writer(cluster: &Cluster, target: &str) -> FieldManagerRef {
    let unknown = FieldManagerRef {
        manager: "unknown".into(),
        operation: None,
        time: None,
    };
    match cluster.get(Kind::Deployment, target).await {
        Ok(d) => d
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .and_then(|fields| managers::template_writer(fields, strategy::FIELD_MANAGER))
            .unwrap_or(unknown),
        Err(error) => {
            tracing::warn!(%error, "reading the Deployment's managedFields");
            unknown
        }
    }
}

/// The owner's state for the policy's status, looked up at most once a minute per policy
/// (or when the owner or the event holding it changes).
#[derive(Default)]
pub(super) struct OwnerCache {
    entries: Mutex<HashMap<String, CacheEntry>>,
}

struct CacheEntry {
    at: Instant,
    key: (OwnerRef, Option<String>),
    status: GitopsStatus,
}

const REFRESH: Duration = Duration::from_secs(60);

impl OwnerCache {
    /// The policy's `status.gitops`: the owner, its sync state, which event holds it.
    pub(super) async fn status(
        &self,
        cluster: &Cluster,
        policy: &RollbackPolicy,
        argocd_namespace: &str,
        deployment: &Value,
        events: &[Arc<RollbackEvent>],
    ) -> Option<GitopsStatus> {
        let key = format!("{}/{}", cluster.namespace(), policy.name_any());
        let Some(owner) = owner_of(deployment, argocd_namespace) else {
            self.entries.lock().expect("lock").remove(&key);
            return None;
        };
        let held_by = holding_event(&policy.name_any(), events);
        let wanted = (owner.clone(), held_by.clone());
        if let Some(e) = self.entries.lock().expect("lock").get(&key)
            && e.key == wanted
            && e.at.elapsed() < REFRESH
        {
            return Some(e.status.clone());
        }
        let mut status = GitopsStatus {
            kind: owner.kind,
            name: owner.name.clone(),
            namespace: owner.namespace.clone(),
            detected_by: Some(owner.detected_by.to_owned()),
            automated_sync: None,
            suspended: None,
            revision: None,
            held_by: held_by.clone(),
            message: None,
        };
        match look_up(cluster, &owner, deployment_name(deployment)).await {
            Ok(object) => {
                let state = gitops::sync_state(owner.kind, &object);
                status.automated_sync = state.automated;
                status.suspended = state.suspended;
                status.revision = state.revision;
            }
            Err(Unavailable::NotFound { .. }) if owner.tentative() => {
                self.entries.lock().expect("lock").remove(&key);
                return None;
            }
            Err(why) => status.message = Some(why.to_string()),
        }
        self.entries.lock().expect("lock").insert(
            key,
            CacheEntry {
                at: Instant::now(),
                key: wanted,
                status: status.clone(),
            },
        );
        Some(status)
    }
}

/// The policy's newest event whose recorded hold of the owner's sync is still in place.
pub(super) fn holding_event(policy: &str, events: &[Arc<RollbackEvent>]) -> Option<String> {
    events
        .iter()
        .filter(|e| e.spec.policy_ref.name == policy)
        .filter(|e| {
            e.status.as_ref().is_some_and(|s| {
                s.actions
                    .iter()
                    .any(|a| strategy::is_hold(a) && !a.undone && a.applied_at.is_some())
            })
        })
        .max_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0))
        .map(|e| e.name_any())
}

/// "revision N (images)" that a held event left the Deployment on, for the alert.
pub(super) fn held_on(event: &RollbackEvent) -> String {
    let records = event
        .status
        .iter()
        .flat_map(|s| s.actions.iter())
        .filter_map(|a| Record::of(a).ok());
    for r in records {
        match r {
            Record::PodTemplate { to_revision, .. } => return format!("revision {to_revision}"),
            Record::Replicas { applied: 0, .. } => return "zero replicas".into(),
            _ => {}
        }
    }
    "the remediated state".into()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn owners_are_read_from_the_deployments_metadata() {
        let d = json!({"metadata": {"name": "web", "labels": {"app": "web"},
            "annotations": {"argocd.argoproj.io/tracking-id": "web:apps/Deployment:shop/web"}}});
        let owner = owner_of(&d, "argocd").unwrap();
        assert_eq!(
            (owner.name.as_str(), owner.namespace.as_str()),
            ("web", "argocd")
        );
        assert!(owner_of(&json!({"metadata": {"name": "web"}}), "argocd").is_none());
    }
}
