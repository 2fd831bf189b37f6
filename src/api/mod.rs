//! The `rollback.frys.io/v1alpha1` API: types only, no behaviour that needs a client.

// kube's `printcolumn(..., type_ = "string", ...)` repeats keys clippy takes for duplicates.
#![allow(clippy::duplicated_attributes)]

mod alert;
mod common;
mod drill;
pub mod duration;
mod event;
mod gitops;
mod policy;
mod policy_status;
mod rung;
pub mod yaml;

pub use alert::*;
pub use common::*;
pub use drill::*;
pub use duration::Duration;
pub use event::*;
pub use gitops::*;
pub use policy::*;
pub use policy_status::*;
pub use rung::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

pub const GROUP: &str = "rollback.frys.io";

/// Annotations people use to drive the operator (on a policy or its target Deployment).
pub mod annotations {
    /// Run a manual remediation with this strategy (PascalCase or the seed's snake_case).
    pub const TRIGGER: &str = "rollback.frys.io/trigger";
    /// Reason recorded with a manual trigger or emergency.
    pub const REASON: &str = "rollback.frys.io/reason";
    /// Stop the workload now; the value is the reason.
    pub const EMERGENCY: &str = "rollback.frys.io/emergency";
    /// Acknowledge a failed incident so automatic action may resume.
    pub const ACK: &str = "rollback.frys.io/ack";
    /// On a Namespace: hold automatic remediation of its policies (`true`); manual ones still run.
    pub const FREEZE: &str = "rollback.frys.io/freeze";
    /// On a RollbackEvent: undo its actions (`true`, or `force` to overwrite later changes).
    pub const UNDO: &str = "rollback.frys.io/undo";
    /// On a RollbackDrill: run it now (any value); removed once the run starts or is refused.
    pub const RUN_NOW: &str = "rollback.frys.io/run-now";

    /// A namespace's annotations hold its automatic remediation ([`FREEZE`], any value but
    /// `false`).
    pub fn is_frozen(annotations: &std::collections::BTreeMap<String, String>) -> bool {
        annotations.get(FREEZE).is_some_and(|v| v != "false")
    }
}

/// Labels the operator reads or writes.
pub mod labels {
    /// On a Namespace: `enabled` marks it safe for drills (with the operator's --allow-drills).
    pub const DRILLS: &str = "rollback.frys.io/drills";
    /// The value of [`DRILLS`] that allows drills.
    pub const DRILLS_ENABLED: &str = "enabled";
    /// On a RollbackEvent of type Drill: the RollbackDrill that created it.
    pub const DRILL: &str = "rollback.frys.io/drill";
    /// On a Namespace: the environment profile its policies inherit from (instead of the
    /// operator's --environment).
    pub const PROFILE: &str = "rollback.frys.io/profile";
}

/// RollbackPolicy condition types (`status.conditions[].type`) and the reasons other code reads.
pub mod conditions {
    /// Config valid and every rung's references resolvable.
    pub const READY: &str = "Ready";
    /// The signals could be read.
    pub const METRICS_AVAILABLE: &str = "MetricsAvailable";
    /// The latest assessment is conclusive and Healthy.
    pub const HEALTHY: &str = "Healthy";
    /// An incident is open.
    pub const DEGRADED: &str = "Degraded";
    /// A remediation of the incident is running.
    pub const ROLLBACK_IN_PROGRESS: &str = "RollbackInProgress";
    /// `spec.suspend` is set.
    pub const SUSPENDED: &str = "Suspended";
    /// kstatus: not Ready yet, and a retry may fix it (a missing target or reference).
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus: not Ready, and only a change of the spec can fix it.
    pub const STALLED: &str = "Stalled";

    /// Ready reason for a rung whose objects are missing; the policy is still evaluated.
    pub const REFERENCE_MISSING: &str = "RungReferenceMissing";
    /// Ready reason for a spec the engine cannot use.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Ready reason for a policy whose profile (namespace label or --environment) the
    /// operator's profile configuration does not define.
    pub const UNKNOWN_PROFILE: &str = "UnknownProfile";
    /// Ready reason for a policy without strategies whose profile has no ladder either.
    pub const NO_LADDER: &str = "NoLadder";
}

/// The CRDs, each with the file name it has in `crds/`.
pub fn crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    let mut crds = vec![
        (
            "rollback.frys.io_rollbackpolicies.yaml",
            RollbackPolicy::crd(),
        ),
        ("rollback.frys.io_rollbackevents.yaml", RollbackEvent::crd()),
        ("rollback.frys.io_rollbackdrills.yaml", RollbackDrill::crd()),
    ];
    for (_, crd) in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                normalize(schema);
            }
        }
    }
    crds
}

/// Adjusts schemars' output to what the API server expects:
/// - optional fields are simply absent in this API: without `nullable`, the API server prunes
///   an explicit `null` instead of storing it, so CEL rules never see one;
/// - Kubernetes knows the integer formats `int32` and `int64` only (kubectl warns on others).
fn normalize(schema: &mut JSONSchemaProps) {
    schema.nullable = None;
    schema.format = match schema.format.take().as_deref() {
        Some("uint8" | "int8" | "uint16" | "int16" | "uint32") => Some("int32".into()),
        Some("uint64" | "uint") => Some("int64".into()),
        other => other.map(str::to_owned),
    };
    let children = schema
        .properties
        .iter_mut()
        .flat_map(|p| p.values_mut())
        .chain(schema.items.as_mut().and_then(|i| match i {
            JSONSchemaPropsOrArray::Schema(s) => Some(s.as_mut()),
            JSONSchemaPropsOrArray::Schemas(_) => None,
        }))
        .chain(schema.additional_properties.as_mut().and_then(|a| match a {
            JSONSchemaPropsOrBool::Schema(s) => Some(s.as_mut()),
            JSONSchemaPropsOrBool::Bool(_) => None,
        }));
    for child in children {
        normalize(child);
    }
}

/// The CRDs as one multi-document YAML stream (`frys-rollback crd`).
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|(_, crd)| crd_yaml(crd))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// One CRD as YAML that YAML 1.1 readers (kubectl, Helm) read as written: see [`yaml`].
pub fn crd_yaml(crd: &CustomResourceDefinition) -> String {
    yaml::to_string(&yaml_serde::to_value(crd).expect("CRDs serialize"))
}
