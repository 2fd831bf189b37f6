//! The target's GitOps owner (DESIGN.md "GitOps"): which Argo CD `Application` or Flux
//! `Kustomization` / `HelmRelease` manages a Deployment, whether it really does, and what its
//! sync state is. Pure: labels and annotations in, an owner reference out; objects as JSON in,
//! verdicts out. The lookups are at the edge (`crate::controller::gitops`).
//!
//! How an owner is found, in order (the first that says something wins):
//! 1. `argocd.argoproj.io/tracking-id` annotation (Argo CD's annotation tracking):
//!    `<app>:<group>/<kind>:<namespace>/<name>`;
//! 2. Flux's labels `kustomize.toolkit.fluxcd.io/name` + `/namespace`, then
//!    `helm.toolkit.fluxcd.io/name` + `/namespace` (they name the object and its namespace);
//! 3. Argo CD's instance label `argocd.argoproj.io/instance`, then `app.kubernetes.io/instance`
//!    (Argo CD's default label tracking; Helm charts set it too, so it is tried last and a
//!    missing Application is not an error).
//!
//! An Argo CD app name `<namespace>_<name>` (apps in any namespace) names the Application's
//! namespace; a bare name lives in Argo CD's control-plane namespace (`--argocd-namespace`).
//!
//! Labels are written by whoever writes the Deployment, a namespace user among them: before the
//! operator touches an owner it checks that the owner itself lists the Deployment
//! ([`manages`]), so a label cannot make it pause another team's sync.

pub mod managers;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::GitopsKind;

pub const ARGOCD_TRACKING_ID: &str = "argocd.argoproj.io/tracking-id";
pub const ARGOCD_INSTANCE: &str = "argocd.argoproj.io/instance";
pub const APP_INSTANCE: &str = "app.kubernetes.io/instance";
pub const KUSTOMIZE_NAME: &str = "kustomize.toolkit.fluxcd.io/name";
pub const KUSTOMIZE_NAMESPACE: &str = "kustomize.toolkit.fluxcd.io/namespace";
pub const HELM_NAME: &str = "helm.toolkit.fluxcd.io/name";
pub const HELM_NAMESPACE: &str = "helm.toolkit.fluxcd.io/namespace";

/// An owner named by the target's metadata, not yet looked up.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OwnerRef {
    pub kind: GitopsKind,
    pub name: String,
    pub namespace: String,
    /// The label or annotation that named it.
    pub detected_by: &'static str,
}

impl OwnerRef {
    /// True when the name comes from `app.kubernetes.io/instance` alone, which Helm sets too:
    /// no such Application is then no news.
    pub fn tentative(&self) -> bool {
        self.detected_by == APP_INSTANCE
    }
}

impl std::fmt::Display for OwnerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", tool(self.kind), self.namespace, self.name)
    }
}

/// The owner's kind as people say it.
pub fn tool(kind: GitopsKind) -> &'static str {
    match kind {
        GitopsKind::Application => "Argo CD Application",
        GitopsKind::Kustomization => "Flux Kustomization",
        GitopsKind::HelmRelease => "Flux HelmRelease",
    }
}

/// The owner a Deployment's labels and annotations name. `argocd_namespace` is where Argo CD's
/// Applications live unless their app name says otherwise.
pub fn detect(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    argocd_namespace: &str,
) -> Option<OwnerRef> {
    let argo = |app: &str, detected_by| {
        let (namespace, name) = match app.split_once('_') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() => (ns, name),
            _ => (argocd_namespace, app),
        };
        (!name.is_empty()).then(|| OwnerRef {
            kind: GitopsKind::Application,
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            detected_by,
        })
    };
    let flux = |kind, name_key: &'static str, ns_key: &str| {
        Some(OwnerRef {
            kind,
            name: labels.get(name_key)?.clone(),
            namespace: labels.get(ns_key)?.clone(),
            detected_by: name_key,
        })
    };
    let tracked = annotations
        .get(ARGOCD_TRACKING_ID)
        .and_then(|id| id.split_once(':'))
        .and_then(|(app, _)| argo(app, ARGOCD_TRACKING_ID));
    tracked
        .or_else(|| {
            flux(
                GitopsKind::Kustomization,
                KUSTOMIZE_NAME,
                KUSTOMIZE_NAMESPACE,
            )
        })
        .or_else(|| flux(GitopsKind::HelmRelease, HELM_NAME, HELM_NAMESPACE))
        .or_else(|| argo(labels.get(ARGOCD_INSTANCE)?, ARGOCD_INSTANCE))
        .or_else(|| argo(labels.get(APP_INSTANCE)?, APP_INSTANCE))
}

/// Whether the owner object says it manages Deployment `namespace/name`: Argo CD lists its
/// resources in `status.resources`, a Kustomization in `status.inventory.entries`
/// (`<namespace>_<name>_<group>_<kind>`). A HelmRelease keeps no inventory: it must install
/// into the Deployment's namespace (`spec.targetNamespace`, or its own). Err says why not.
pub fn manages(kind: GitopsKind, owner: &Value, namespace: &str, name: &str) -> Result<(), String> {
    let listed = match kind {
        GitopsKind::Application => owner
            .pointer("/status/resources")
            .and_then(Value::as_array)
            .is_some_and(|resources| {
                resources.iter().any(|r| {
                    r["group"] == "apps"
                        && r["kind"] == "Deployment"
                        && r["namespace"] == namespace
                        && r["name"] == name
                })
            }),
        GitopsKind::Kustomization => {
            let id = format!("{namespace}_{name}_apps_Deployment");
            owner
                .pointer("/status/inventory/entries")
                .and_then(Value::as_array)
                .is_some_and(|entries| entries.iter().any(|e| e["id"] == id.as_str()))
        }
        GitopsKind::HelmRelease => {
            let target = owner
                .pointer("/spec/targetNamespace")
                .or_else(|| owner.pointer("/metadata/namespace"))
                .and_then(Value::as_str);
            return match target {
                Some(t) if t == namespace => Ok(()),
                other => Err(format!(
                    "it installs into namespace {}, not {namespace}",
                    other.unwrap_or("unknown")
                )),
            };
        }
    };
    if listed {
        Ok(())
    } else {
        let field = match kind {
            GitopsKind::Application => "status.resources",
            _ => "status.inventory",
        };
        Err(format!(
            "its {field} does not list Deployment {namespace}/{name}"
        ))
    }
}

/// The owner's sync as it is now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncState {
    /// Argo CD: `spec.syncPolicy.automated` is set and not `enabled: false`.
    pub automated: Option<bool>,
    /// Flux: `spec.suspend`.
    pub suspended: Option<bool>,
    /// What the owner says Git is at.
    pub revision: Option<String>,
}

impl SyncState {
    /// True when the owner would reconcile the target by itself.
    pub fn syncing(&self) -> bool {
        self.automated.unwrap_or(false) || self.suspended == Some(false)
    }
}

pub fn sync_state(kind: GitopsKind, owner: &Value) -> SyncState {
    let text = |p: &str| owner.pointer(p).and_then(Value::as_str).map(str::to_owned);
    match kind {
        GitopsKind::Application => {
            let automated = owner.pointer("/spec/syncPolicy/automated");
            SyncState {
                automated: Some(automated.is_some_and(|a| {
                    !a.is_null() && a.get("enabled").and_then(Value::as_bool) != Some(false)
                })),
                suspended: None,
                revision: text("/status/sync/revision"),
            }
        }
        GitopsKind::Kustomization | GitopsKind::HelmRelease => SyncState {
            automated: None,
            suspended: Some(
                owner
                    .pointer("/spec/suspend")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            ),
            revision: text("/status/lastAppliedRevision")
                .or_else(|| text("/status/lastAttemptedRevision")),
        },
    }
}

/// The Helm value that grants the operator access to the owner's kind.
pub fn rbac_value(kind: GitopsKind) -> &'static str {
    match kind {
        GitopsKind::Application => "gitops.argocd.enabled",
        GitopsKind::Kustomization | GitopsKind::HelmRelease => "gitops.flux.enabled",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn argo_cd_tracking_id_and_instance_labels_name_the_application() {
        let none = BTreeMap::new();
        let tracked = map(&[(ARGOCD_TRACKING_ID, "web:apps/Deployment:shop/web")]);
        let owner = detect(&none, &tracked, "argocd").unwrap();
        assert_eq!(
            (owner.kind, owner.name.as_str(), owner.namespace.as_str()),
            (GitopsKind::Application, "web", "argocd")
        );
        // Apps in any namespace: `<namespace>_<name>`.
        let tracked = map(&[(ARGOCD_TRACKING_ID, "team-a_web:apps/Deployment:shop/web")]);
        let owner = detect(&none, &tracked, "argocd").unwrap();
        assert_eq!(
            (owner.name.as_str(), owner.namespace.as_str()),
            ("web", "team-a")
        );

        let owner = detect(&map(&[(ARGOCD_INSTANCE, "web")]), &none, "gitops").unwrap();
        assert_eq!(
            (owner.namespace.as_str(), owner.detected_by),
            ("gitops", ARGOCD_INSTANCE)
        );
        let owner = detect(&map(&[(APP_INSTANCE, "web")]), &none, "argocd").unwrap();
        assert!(owner.tentative());
        assert!(detect(&map(&[("app", "web")]), &none, "argocd").is_none());
        assert!(detect(&none, &map(&[(ARGOCD_TRACKING_ID, "garbage")]), "argocd").is_none());
    }

    #[test]
    fn flux_labels_name_kustomization_or_helm_release_before_helms_instance_label() {
        let none = BTreeMap::new();
        let labels = map(&[
            (KUSTOMIZE_NAME, "apps"),
            (KUSTOMIZE_NAMESPACE, "flux-system"),
            (APP_INSTANCE, "web"),
        ]);
        let owner = detect(&labels, &none, "argocd").unwrap();
        assert_eq!(
            (owner.kind, owner.name.as_str(), owner.namespace.as_str()),
            (GitopsKind::Kustomization, "apps", "flux-system")
        );
        let labels = map(&[
            (HELM_NAME, "web"),
            (HELM_NAMESPACE, "shop"),
            (APP_INSTANCE, "web"),
        ]);
        assert_eq!(
            detect(&labels, &none, "argocd").unwrap().kind,
            GitopsKind::HelmRelease
        );
        // A name without its namespace label is not enough.
        assert!(detect(&map(&[(KUSTOMIZE_NAME, "apps")]), &none, "argocd").is_none());
    }

    #[test]
    fn an_owner_must_list_the_deployment_itself() {
        let app = json!({"status": {"resources": [
            {"group": "apps", "kind": "Deployment", "namespace": "shop", "name": "web"}]}});
        assert!(manages(GitopsKind::Application, &app, "shop", "web").is_ok());
        let err = manages(GitopsKind::Application, &app, "other", "web").unwrap_err();
        assert!(
            err.contains("status.resources does not list Deployment other/web"),
            "{err}"
        );
        let ks = json!({"status": {"inventory": {"entries": [{"id": "shop_web_apps_Deployment", "v": "v1"}]}}});
        assert!(manages(GitopsKind::Kustomization, &ks, "shop", "web").is_ok());
        assert!(manages(GitopsKind::Kustomization, &json!({}), "shop", "web").is_err());
        let hr =
            json!({"metadata": {"namespace": "flux-system"}, "spec": {"targetNamespace": "shop"}});
        assert!(manages(GitopsKind::HelmRelease, &hr, "shop", "web").is_ok());
        assert!(manages(GitopsKind::HelmRelease, &hr, "other", "web").is_err());
    }

    #[test]
    fn sync_state_reads_automated_and_suspend() {
        let on = json!({"spec": {"syncPolicy": {"automated": {"selfHeal": true}}},
            "status": {"sync": {"revision": "abc123"}}});
        let s = sync_state(GitopsKind::Application, &on);
        assert_eq!(
            (s.automated, s.revision.as_deref()),
            (Some(true), Some("abc123"))
        );
        assert!(s.syncing());
        let disabled = json!({"spec": {"syncPolicy": {"automated": {"enabled": false}}}});
        assert_eq!(
            sync_state(GitopsKind::Application, &disabled).automated,
            Some(false)
        );
        assert_eq!(
            sync_state(GitopsKind::Application, &json!({"spec": {}})).automated,
            Some(false)
        );
        let ks = json!({"spec": {}, "status": {"lastAppliedRevision": "main@sha1:abc"}});
        let s = sync_state(GitopsKind::Kustomization, &ks);
        assert_eq!(
            (s.suspended, s.revision.as_deref()),
            (Some(false), Some("main@sha1:abc"))
        );
        assert!(s.syncing());
        let suspended = json!({"spec": {"suspend": true}});
        assert!(!sync_state(GitopsKind::Kustomization, &suspended).syncing());
    }
}
