//! GitOps: the policy's `spec.gitops` and what the operator reports about the target's Argo CD
//! or Flux owner (DESIGN.md "GitOps").

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the operator treats the GitOps tool that owns the target.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitopsSpec {
    /// What a VersionRollback or EmergencyShutdown does to the owner's automated sync:
    /// `Suspend` (default) turns it off as a recorded action that undo reverts; `Ignore`
    /// leaves it, so a self-healing sync may put the bad release back. Needs the operator's
    /// opt-in RBAC (Helm values gitops.argocd.enabled / gitops.flux.enabled); without it the
    /// remediation still runs and status says what could not be done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_remediation: Option<OnRemediation>,
}

/// What a remediation does to the owner's sync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum OnRemediation {
    /// Turn the owner's automated sync off (Argo CD) or suspend it (Flux), recorded and undone
    /// with the event.
    #[default]
    Suspend,
    /// Leave the owner alone.
    Ignore,
}

/// The GitOps tool's object that manages the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum GitopsKind {
    /// Argo CD `Application` (argoproj.io/v1alpha1).
    Application,
    /// Flux `Kustomization` (kustomize.toolkit.fluxcd.io/v1).
    Kustomization,
    /// Flux `HelmRelease` (helm.toolkit.fluxcd.io/v2).
    HelmRelease,
}

/// The target's GitOps owner as the policy's status shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitopsStatus {
    /// Application, Kustomization or HelmRelease.
    pub kind: GitopsKind,
    #[schemars(length(max = 253))]
    pub name: String,
    #[schemars(length(max = 63))]
    pub namespace: String,
    /// How it was found (the label or annotation on the target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub detected_by: Option<String>,
    /// Argo CD: whether `spec.syncPolicy.automated` is on. Absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automated_sync: Option<bool>,
    /// Flux: `spec.suspend`. Absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<bool>,
    /// The revision the owner says Git is at (Argo CD `status.sync.revision`, Flux
    /// `status.lastAppliedRevision`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub revision: Option<String>,
    /// The RollbackEvent whose recorded action holds the owner's sync, until it is undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub held_by: Option<String>,
    /// What the operator could not do or read (RBAC not granted, owner not found), or what
    /// to do next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
}

/// The field manager that last wrote a Deployment's `spec.template`, from its
/// `metadata.managedFields`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldManagerRef {
    /// The manager, e.g. argocd-controller, kustomize-controller, helm, kubectl.
    #[schemars(length(max = 128))]
    pub manager: String,
    /// Apply (server-side apply) or Update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

/// A rolled-back template that came back, as the policy's status shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reapplied {
    /// Who wrote it back (manager `unknown` when managedFields do not say).
    pub by: FieldManagerRef,
    /// The RollbackEvent that found it.
    #[schemars(length(max = 253))]
    pub event: String,
    /// What happened and what to do.
    #[schemars(length(max = 1024))]
    pub message: String,
}

/// What a remediation did, or could not do, to the target's GitOps owner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitopsHold {
    pub kind: GitopsKind,
    #[schemars(length(max = 253))]
    pub name: String,
    #[schemars(length(max = 63))]
    pub namespace: String,
    /// True when this event's recorded actions hold the owner's sync.
    pub held: bool,
    /// In words: what was done, or why not.
    #[schemars(length(max = 1024))]
    pub message: String,
}
