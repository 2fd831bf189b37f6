//! Remediation strategies: the five rungs of the ladder (DESIGN.md "Strategies").
//!
//! Every strategy works in two halves:
//! - [`Strategy::observe`] reads the objects it needs (I/O, through [`Cluster`]);
//! - [`Strategy::plan`] computes from that plain data, without I/O, the exact changes to make:
//!   a [`Plan`] of [`Step`]s, each change paired with the [`Action`] that records the state it
//!   replaces. An empty plan means "already applied", which makes every strategy idempotent.
//!
//! [`Cluster::execute`] then performs the plan. Undo works from the recorded actions alone
//! ([`undo`], pure part [`plan_undo`]): it needs neither the policy nor ReplicaSet history, and
//! refuses ([`Error::ChangedSinceApplied`]) when an object changed since the action, unless
//! forced.
//!
//! Patch types (DESIGN.md "Patch types"):
//! - Route weights: JSON Patch replacing one rule's backend list, guarded by a `test` of that
//!   list as it was read (and of the rule's name when chosen by name). A JSON merge patch
//!   cannot change one element of a list: it would replace the whole `rules` list, erasing a
//!   concurrent edit. Server-side apply of that atomic list would take ownership of it away
//!   from the GitOps tool. The `test` makes a concurrent edit fail cleanly ([`Error::Conflict`]).
//! - Pod template: JSON Patch `test` + `replace` of `/spec/template`, as `kubectl rollout undo`.
//! - Replicas: the scale subresource, guarded by the resourceVersion read.
//! - Service selector: JSON merge patch of `spec.selector`, guarded by the resourceVersion read.
//! - HPA pin: JSON Patch guarded by a `test` of the whole `spec` (the HPA controller rewrites
//!   status all the time, so a resourceVersion guard would fail for no reason).

mod circuit_breaker;
mod cluster;
mod emergency_shutdown;
mod environment_switch;
mod error;
mod record;
mod resume;
pub mod route;
mod scale;
mod traffic_shifting;
mod version_rollback;

use std::{future::Future, time::Duration};

use kube::core::ApiResource;
use serde_json::Value;

use crate::api::{Action, EmergencyShutdownSpec, Rung, StrategyKind, VersionRollbackSpec};

pub use circuit_breaker::{DEFAULT_OPEN_DURATION, open_duration};
pub use cluster::{Applied, ApplyError, Cluster, FIELD_MANAGER, apply, half_open, undo};
pub use emergency_shutdown::PINNED;
pub use environment_switch::DEFAULT_READY_TIMEOUT;
pub use error::Error;
pub use record::{Record, plan_undo};
pub use resume::resume_actions;
pub use version_rollback::{
    CHANGE_CAUSE, REVISION, ROLLED_BACK_FROM, ROLLED_BACK_TO, template_hash,
};

/// One remediation strategy.
pub trait Strategy {
    /// The objects the planner needs, as plain data.
    type Observed;

    fn kind(&self) -> StrategyKind;

    /// Reads the current objects for remediating `target` (a Deployment in the cluster's
    /// namespace).
    fn observe(
        &self,
        cluster: &Cluster,
        target: &str,
    ) -> impl Future<Output = Result<Self::Observed, Error>> + Send;

    /// Computes the exact changes, each with its undo record. Pure; an empty plan means the
    /// strategy is already applied.
    fn plan(&self, target: &str, observed: &Self::Observed) -> Result<Plan, Error>;
}

/// A rung's strategy with its parameters, ready to plan.
#[derive(Clone, Debug, PartialEq)]
pub enum Remediation {
    CircuitBreaker(crate::api::CircuitBreakerSpec),
    TrafficShifting(crate::api::TrafficShiftingSpec),
    EnvironmentSwitch(crate::api::EnvironmentSwitchSpec),
    VersionRollback(VersionRollbackSpec),
    EmergencyShutdown(EmergencyShutdownSpec),
}

impl Remediation {
    /// The strategy of a rung. The API server's CEL rules guarantee the member is present;
    /// this still refuses a rung without it rather than guess.
    pub fn from_rung(rung: &Rung) -> Result<Self, Error> {
        let missing = |member: &str| {
            Error::InvalidSpec(format!("rung {} has no {member} member", rung.type_))
        };
        Ok(match rung.type_ {
            StrategyKind::CircuitBreaker => Self::CircuitBreaker(
                rung.circuit_breaker
                    .clone()
                    .ok_or_else(|| missing("circuitBreaker"))?,
            ),
            StrategyKind::TrafficShifting => Self::TrafficShifting(
                rung.traffic_shifting
                    .clone()
                    .ok_or_else(|| missing("trafficShifting"))?,
            ),
            StrategyKind::EnvironmentSwitch => Self::EnvironmentSwitch(
                rung.environment_switch
                    .clone()
                    .ok_or_else(|| missing("environmentSwitch"))?,
            ),
            StrategyKind::VersionRollback => {
                Self::VersionRollback(rung.version_rollback.clone().unwrap_or_default())
            }
            StrategyKind::EmergencyShutdown => {
                Self::EmergencyShutdown(rung.emergency_shutdown.clone().unwrap_or_default())
            }
        })
    }

    /// A strategy that needs no parameters (manual triggers of strategies outside the ladder).
    pub fn without_parameters(kind: StrategyKind) -> Option<Self> {
        match kind {
            StrategyKind::VersionRollback => Some(Self::VersionRollback(Default::default())),
            StrategyKind::EmergencyShutdown => Some(Self::EmergencyShutdown(Default::default())),
            _ => None,
        }
    }

    pub fn kind(&self) -> StrategyKind {
        match self {
            Self::CircuitBreaker(s) => s.kind(),
            Self::TrafficShifting(s) => s.kind(),
            Self::EnvironmentSwitch(s) => s.kind(),
            Self::VersionRollback(s) => s.kind(),
            Self::EmergencyShutdown(s) => s.kind(),
        }
    }

    /// Reads the cluster and plans the changes for `target`.
    pub async fn plan(&self, cluster: &Cluster, target: &str) -> Result<Plan, Error> {
        async fn run<S: Strategy>(s: &S, cluster: &Cluster, target: &str) -> Result<Plan, Error> {
            let observed = s.observe(cluster, target).await?;
            s.plan(target, &observed)
        }
        match self {
            Self::CircuitBreaker(s) => run(s, cluster, target).await,
            Self::TrafficShifting(s) => run(s, cluster, target).await,
            Self::EnvironmentSwitch(s) => run(s, cluster, target).await,
            Self::VersionRollback(s) => run(s, cluster, target).await,
            Self::EmergencyShutdown(s) => run(s, cluster, target).await,
        }
    }
}

/// The changes a strategy makes, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub strategy: StrategyKind,
    pub steps: Vec<Step>,
    /// What the plan does (or why nothing needs doing), in words.
    pub summary: String,
}

impl Plan {
    fn new(strategy: StrategyKind, steps: Vec<Step>) -> Self {
        let summary = steps
            .iter()
            .filter_map(|s| match s {
                Step::Change(c) => Some(c.action.summary.clone()),
                Step::WaitAvailable(_) => None,
            })
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            strategy,
            steps,
            summary,
        }
    }

    /// Nothing to do: the strategy is already in effect.
    fn already_applied(strategy: StrategyKind, why: impl Into<String>) -> Self {
        Self {
            strategy,
            steps: vec![],
            summary: format!("already applied: {}", why.into()),
        }
    }

    /// True when the plan changes nothing.
    pub fn is_noop(&self) -> bool {
        self.changes().next().is_none()
    }

    pub fn changes(&self) -> impl Iterator<Item = &Change> {
        self.steps.iter().filter_map(|s| match s {
            Step::Change(c) => Some(c),
            Step::WaitAvailable(_) => None,
        })
    }

    /// The records of the planned changes, e.g. to persist them before executing.
    pub fn actions(&self) -> Vec<Action> {
        self.changes().map(|c| c.action.clone()).collect()
    }
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Change(Change),
    /// Wait until a Deployment has this many replicas, all available.
    WaitAvailable(WaitAvailable),
}

/// One write to one object, with the record of what it replaces.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub kind: Kind,
    pub name: String,
    pub request: Request,
    pub action: Action,
}

impl Change {
    fn new(kind: Kind, name: &str, request: Request, summary: String, record: Record) -> Self {
        Self {
            kind,
            name: name.to_owned(),
            request,
            action: Action {
                api_version: kind.api_version().to_owned(),
                kind: kind.as_str().to_owned(),
                name: name.to_owned(),
                summary,
                previous: Some(serde_json::to_value(record).expect("records serialize")),
                applied_at: None,
                undone: false,
            },
        }
    }
}

/// The request that performs a change.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// A JSON Patch whose `test` operations guard against concurrent changes.
    JsonPatch(json_patch::Patch),
    /// A JSON merge patch carrying `metadata.resourceVersion` as its guard.
    MergePatch(Value),
    /// Set `spec.replicas` through the scale subresource, guarded by the resourceVersion read.
    Scale {
        replicas: i32,
        resource_version: Option<String>,
    },
}

/// Wait for a Deployment to be ready.
#[derive(Clone, Debug, PartialEq)]
pub struct WaitAvailable {
    pub deployment: String,
    pub replicas: i32,
    pub timeout: Duration,
}

/// The kinds strategies read and change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Deployment,
    ReplicaSet,
    Service,
    HorizontalPodAutoscaler,
    HttpRoute,
    VirtualService,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Deployment,
        Kind::ReplicaSet,
        Kind::Service,
        Kind::HorizontalPodAutoscaler,
        Kind::HttpRoute,
        Kind::VirtualService,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Service => "Service",
            Kind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            Kind::HttpRoute => "HTTPRoute",
            Kind::VirtualService => "VirtualService",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Deployment | Kind::ReplicaSet => "apps/v1",
            Kind::Service => "v1",
            Kind::HorizontalPodAutoscaler => "autoscaling/v2",
            Kind::HttpRoute => "gateway.networking.k8s.io/v1",
            Kind::VirtualService => "networking.istio.io/v1",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Deployment => "deployments",
            Kind::ReplicaSet => "replicasets",
            Kind::Service => "services",
            Kind::HorizontalPodAutoscaler => "horizontalpodautoscalers",
            Kind::HttpRoute => "httproutes",
            Kind::VirtualService => "virtualservices",
        }
    }

    /// The kind an action names. Only the group and kind matter: an action recorded under an
    /// older version of the same group still resolves.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        let group = |v: &str| v.rsplit_once('/').map_or("", |(g, _)| g).to_owned();
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == kind && group(k.api_version()) == group(api_version))
    }

    pub fn api_resource(self) -> ApiResource {
        let (group, version) = self
            .api_version()
            .rsplit_once('/')
            .unwrap_or(("", self.api_version()));
        ApiResource {
            group: group.to_owned(),
            version: version.to_owned(),
            api_version: self.api_version().to_owned(),
            kind: self.as_str().to_owned(),
            plural: self.plural().to_owned(),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Helpers for reading and patching objects held as JSON.
mod json {
    use serde_json::Value;

    /// A string at a JSON pointer.
    pub fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
        v.pointer(pointer).and_then(Value::as_str)
    }

    /// `metadata.name`, or "" when absent.
    pub fn name(v: &Value) -> &str {
        str_at(v, "/metadata/name").unwrap_or_default()
    }

    pub fn resource_version(v: &Value) -> Option<String> {
        str_at(v, "/metadata/resourceVersion").map(str::to_owned)
    }

    pub fn annotation<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
        v.pointer("/metadata/annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
    }

    /// `spec.replicas`, defaulting to 1 as the API server does.
    pub fn replicas(v: &Value) -> i32 {
        v.pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .map_or(1, |r| r as i32)
    }

    /// Escapes a key for use in a JSON pointer (RFC 6901).
    pub fn escape(key: &str) -> String {
        key.replace('~', "~0").replace('/', "~1")
    }

    /// A JSON Patch from its operations written as JSON.
    pub fn patch(ops: Vec<Value>) -> json_patch::Patch {
        serde_json::from_value(Value::Array(ops)).expect("well-formed JSON Patch operations")
    }

    /// JSON Patch operations setting (`Some`) or removing (`None`) annotations, given the
    /// object's current annotations. Adds the annotations map when the object has none.
    pub fn annotation_ops(
        object: &Value,
        changes: &std::collections::BTreeMap<String, Option<String>>,
    ) -> Vec<Value> {
        let current = object
            .pointer("/metadata/annotations")
            .and_then(Value::as_object);
        let Some(current) = current else {
            let set: serde_json::Map<String, Value> = changes
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), Value::String(v.clone()?))))
                .collect();
            return if set.is_empty() {
                vec![]
            } else {
                vec![
                    serde_json::json!({"op": "add", "path": "/metadata/annotations", "value": set}),
                ]
            };
        };
        let emptied = current.keys().all(|k| matches!(changes.get(k), Some(None)))
            && changes.values().all(Option::is_none);
        if emptied && !current.is_empty() {
            // Removing the last ones: remove the map, as it was before we added it.
            return vec![serde_json::json!({"op": "remove", "path": "/metadata/annotations"})];
        }
        changes
            .iter()
            .filter_map(|(k, v)| {
                let path = format!("/metadata/annotations/{}", escape(k));
                match (v, current.get(k).and_then(Value::as_str)) {
                    (Some(new), Some(old)) if new == old => None,
                    (Some(new), _) => {
                        Some(serde_json::json!({"op": "add", "path": path, "value": new}))
                    }
                    (None, Some(_)) => Some(serde_json::json!({"op": "remove", "path": path})),
                    (None, None) => None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_action_types() {
        for kind in Kind::ALL {
            assert_eq!(
                Kind::from_type(kind.api_version(), kind.as_str()),
                Some(kind)
            );
        }
        // An action recorded under another version of the group still resolves.
        assert_eq!(
            Kind::from_type("networking.istio.io/v1beta1", "VirtualService"),
            Some(Kind::VirtualService)
        );
        assert_eq!(Kind::from_type("v1", "Deployment"), None);
        let ar = Kind::HttpRoute.api_resource();
        assert_eq!(
            (ar.group.as_str(), ar.version.as_str(), ar.plural.as_str()),
            ("gateway.networking.k8s.io", "v1", "httproutes")
        );
        assert_eq!(Kind::Service.api_resource().group, "");
    }

    #[test]
    fn rungs_without_their_member_are_refused() {
        let rung: Rung =
            serde_json::from_value(serde_json::json!({"type": "CircuitBreaker"})).unwrap();
        assert!(matches!(
            Remediation::from_rung(&rung),
            Err(Error::InvalidSpec(_))
        ));
        let rung: Rung =
            serde_json::from_value(serde_json::json!({"type": "VersionRollback"})).unwrap();
        assert_eq!(
            Remediation::from_rung(&rung).unwrap(),
            Remediation::VersionRollback(Default::default())
        );
        assert!(Remediation::without_parameters(StrategyKind::TrafficShifting).is_none());
    }

    #[test]
    fn annotation_ops_add_the_map_when_missing() {
        use serde_json::json;
        let changes = [
            ("a/b".to_owned(), Some("1".to_owned())),
            ("gone".to_owned(), None),
        ]
        .into();
        let ops = json::annotation_ops(&json!({"metadata": {}}), &changes);
        assert_eq!(
            ops,
            vec![json!({"op": "add", "path": "/metadata/annotations", "value": {"a/b": "1"}})]
        );
        let ops = json::annotation_ops(
            &json!({"metadata": {"annotations": {"gone": "x", "a/b": "1"}}}),
            &changes,
        );
        assert_eq!(
            ops,
            vec![json!({"op": "remove", "path": "/metadata/annotations/gone"})]
        );
    }
}
