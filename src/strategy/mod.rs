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
//!
//! Not every step is a Kubernetes write: a [`Step::Call`] is an HTTP POST to a URL from a
//! Secret (the Webhook rung), planned as data like a patch and performed by the same executor
//! (`call.rs`), its answer recorded in the step's action so undo can call back.

mod call;
mod circuit_breaker;
mod cluster;
mod emergency_shutdown;
mod environment_switch;
mod error;
mod json;
mod kind;
mod known;
mod record;
mod resume;
pub mod route;
mod scale;
mod sync_hold;
mod traffic_shifting;
mod undo_plan;
mod version_rollback;
mod webhook;

use std::{future::Future, time::Duration};

use serde_json::Value;

use crate::api::{
    Action, CircuitBreakerSpec, EmergencyShutdownSpec, EnvironmentSwitchSpec, RollbackTarget,
    RouteRef, Rung, SecretKeyRef, StrategyKind, TrafficShiftingSpec, VersionRollbackSpec,
    WebhookFormat, WebhookSpec,
};

pub use circuit_breaker::DEFAULT_OPEN_DURATION;
pub use cluster::{Applied, ApplyError, Cluster, FIELD_MANAGER, apply, half_open, undo};
pub use emergency_shutdown::PINNED;
pub use environment_switch::DEFAULT_READY_TIMEOUT;
pub use error::Error;
pub use kind::Kind;
pub use known::Known;
pub use record::Record;
pub use resume::resume_actions;
pub use sync_hold::{is_hold, plan_hold};
pub use undo_plan::plan_undo;
pub use version_rollback::{
    CHANGE_CAUSE, REVISION, ROLLED_BACK_FROM, ROLLED_BACK_TO, superseded, template_hash,
};
pub use webhook::{DEFAULT_RETRIES, DEFAULT_TIMEOUT, Origin};

/// Reads of the objects a strategy plans from: the seam between the planners and the cluster
/// ([`Cluster`] in the operator, plain data in tests).
pub trait Objects: Sync {
    /// The object as JSON; [`Error::NotFound`] when it does not exist.
    fn get(&self, kind: Kind, name: &str) -> impl Future<Output = Result<Value, Error>> + Send;
    /// The objects of a kind, optionally by label selector.
    fn list(
        &self,
        kind: Kind,
        labels: Option<&str>,
    ) -> impl Future<Output = Result<Vec<Value>, Error>> + Send;
}

/// One remediation strategy: everything the operator does differently per rung lives behind
/// this trait (in the spirit of Argo Rollouts' traffic routers), so adding a rung is its own
/// file, a [`StrategyKind`] variant and a [`Rung`] member.
pub trait Strategy {
    /// The objects the planner needs, as plain data.
    type Observed;

    /// How the rung's changes end without a person (DESIGN.md "Traffic rungs stay").
    const RESTORE: Restore = Restore::MANUAL;

    fn kind(&self) -> StrategyKind;

    /// The objects the rung names, which must exist for the policy to be `Ready`.
    fn references(&self) -> Vec<Reference> {
        vec![]
    }

    /// What verification checks after this rung (DESIGN.md "Verification").
    fn probes(&self) -> Probes {
        Probes::default()
    }

    /// When a rung that half-opens does so (its `openDuration`).
    fn half_open_after(&self) -> Option<Duration> {
        Self::RESTORE.half_open
    }

    /// Reads the current objects for remediating `target` (a Deployment in the namespace the
    /// objects come from).
    fn observe(
        &self,
        objects: &impl Objects,
        target: &str,
    ) -> impl Future<Output = Result<Self::Observed, Error>> + Send;

    /// Computes the exact changes, each with its undo record. Pure; an empty plan means the
    /// strategy is already applied.
    fn plan(&self, target: &str, observed: &Self::Observed) -> Result<Plan, Error>;
}

/// How a rung's changes end by themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restore {
    /// The policy's `autoRestore` undoes it once the target is healthy for `restoreAfter`.
    pub auto_restore: bool,
    /// It half-opens after this long by default (the rung may say otherwise).
    pub half_open: Option<Duration>,
}

impl Restore {
    /// Stays until a person undoes it.
    pub const MANUAL: Restore = Restore {
        auto_restore: false,
        half_open: None,
    };
    /// A traffic change: stays until undone, or until `autoRestore` finds the target healthy.
    pub const TRAFFIC: Restore = Restore {
        auto_restore: true,
        half_open: None,
    };
}

/// An object a rung names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    /// An object in the policy's namespace; `role` qualifies it in messages ("standby").
    Object {
        kind: Kind,
        name: String,
        role: Option<&'static str>,
    },
    /// A revision of the target Deployment.
    Revision(i64),
    /// A key of a Secret in the policy's namespace, labelled for policies' use.
    Secret(SecretKeyRef),
}

impl Reference {
    fn object(kind: Kind, name: &str) -> Self {
        Self::Object {
            kind,
            name: name.to_owned(),
            role: None,
        }
    }

    /// The route a [`RouteRef`] names, if it names one.
    fn route(route: &RouteRef) -> Option<Self> {
        route::router(route)
            .ok()
            .map(|(router, name)| Self::object(router.kind(), name))
    }
}

/// What verification probes after a rung.
#[derive(Clone, Debug, PartialEq)]
pub struct Probes {
    /// The Service users reach afterwards: `Ok(None)` for the target's own Service, `Err` with
    /// the reason when nothing serves on purpose.
    pub serving: Result<Option<String>, String>,
    /// Whose rollout availability checks.
    pub rollout: Rollout,
    /// The workload is stopped on purpose: its health and signals have nothing to judge.
    pub stopped: bool,
    /// What the rung changed about traffic, read back by check 6.
    pub traffic: Traffic,
}

impl Default for Probes {
    fn default() -> Self {
        Self {
            serving: Ok(None),
            rollout: Rollout::Target,
            stopped: false,
            traffic: Traffic::Unchanged,
        }
    }
}

/// The Deployment whose rollout verification's availability check reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// The target, finished and available.
    Target,
    /// The target, at zero replicas.
    TargetAtZero,
    /// Another Deployment that now serves (the standby).
    Other(String),
    /// None: the rung moves traffic away from the target, so its rollout says nothing.
    None,
}

/// The traffic change a rung makes, as verification reads it back.
#[derive(Clone, Debug, PartialEq)]
pub enum Traffic {
    Unchanged,
    /// A Service selector now picks `key=value`.
    Selector {
        service: String,
        key: String,
        value: String,
    },
    /// A route rule's weights (expected from the event's recorded actions).
    Route(RouteRef),
}

/// A rung's strategy with its parameters, ready to plan. The one place that matches on the
/// strategy kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Remediation {
    CircuitBreaker(CircuitBreakerSpec),
    TrafficShifting(TrafficShiftingSpec),
    EnvironmentSwitch(EnvironmentSwitchSpec),
    VersionRollback(VersionRollbackSpec),
    EmergencyShutdown(EmergencyShutdownSpec),
    Webhook(WebhookSpec),
}

/// Calls `$body` with `$s` bound to the strategy inside a [`Remediation`].
macro_rules! each {
    ($remediation:expr, $s:ident => $body:expr) => {
        match $remediation {
            Remediation::CircuitBreaker($s) => $body,
            Remediation::TrafficShifting($s) => $body,
            Remediation::EnvironmentSwitch($s) => $body,
            Remediation::VersionRollback($s) => $body,
            Remediation::EmergencyShutdown($s) => $body,
            Remediation::Webhook($s) => $body,
        }
    };
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
            StrategyKind::Webhook => {
                Self::Webhook(rung.webhook.clone().ok_or_else(|| missing("webhook"))?)
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

    /// The strategy for `kind` in a ladder: its rung, or (for manual requests) a strategy that
    /// needs no parameters.
    pub fn for_ladder(ladder: &[Rung], kind: StrategyKind) -> Result<Self, String> {
        match ladder.iter().find(|r| r.type_ == kind) {
            Some(rung) => Self::from_rung(rung).map_err(|e| e.to_string()),
            None => Self::without_parameters(kind).ok_or_else(|| {
                format!("{kind} is not in the policy's ladder and needs parameters from a rung")
            }),
        }
    }

    pub fn kind(&self) -> StrategyKind {
        each!(self, s => s.kind())
    }

    /// What the remediation would change, fixed at decision time so a later release is not
    /// what it acts on (a version rollback's bad release and target revision; None otherwise).
    pub async fn decided_target(
        &self,
        objects: &impl Objects,
        target: &str,
    ) -> Result<Option<RollbackTarget>, Error> {
        match self {
            Self::VersionRollback(s) => {
                let observed = s.observe(objects, target).await?;
                version_rollback::decided_target(s, target, &observed)
            }
            _ => Ok(None),
        }
    }

    /// The remediation held to what was decided: a version rollback goes to the decided
    /// revision.
    pub fn pinned(self, decided: &RollbackTarget) -> Self {
        match self {
            Self::VersionRollback(mut s) => {
                s.to_revision = decided.to_revision.parse().ok().or(s.to_revision);
                Self::VersionRollback(s)
            }
            other => other,
        }
    }

    pub fn references(&self) -> Vec<Reference> {
        each!(self, s => s.references())
    }

    pub fn probes(&self) -> Probes {
        each!(self, s => s.probes())
    }

    pub fn half_open_after(&self) -> Option<Duration> {
        each!(self, s => s.half_open_after())
    }

    /// Reads the objects and plans the changes for `target`.
    pub async fn plan(&self, objects: &impl Objects, target: &str) -> Result<Plan, Error> {
        async fn run<S: Strategy>(
            s: &S,
            objects: &impl Objects,
            target: &str,
        ) -> Result<Plan, Error> {
            let observed = s.observe(objects, target).await?;
            s.plan(target, &observed)
        }
        each!(self, s => run(s, objects, target).await)
    }
}

/// How the rungs of a kind end by themselves. Events record only the kind, so this is what
/// the event and policy controllers ask.
pub fn restore_of(kind: StrategyKind) -> Restore {
    match kind {
        StrategyKind::CircuitBreaker => CircuitBreakerSpec::RESTORE,
        StrategyKind::TrafficShifting => TrafficShiftingSpec::RESTORE,
        StrategyKind::EnvironmentSwitch => EnvironmentSwitchSpec::RESTORE,
        StrategyKind::VersionRollback => VersionRollbackSpec::RESTORE,
        StrategyKind::EmergencyShutdown => EmergencyShutdownSpec::RESTORE,
        StrategyKind::Webhook => WebhookSpec::RESTORE,
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
            .filter_map(|s| s.action().map(|a| a.summary.clone()))
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

    /// True when the plan changes nothing (no write, no call).
    pub fn is_noop(&self) -> bool {
        self.steps.iter().all(|s| s.action().is_none())
    }

    /// The Kubernetes writes of the plan.
    pub fn changes(&self) -> impl Iterator<Item = &Change> {
        self.steps.iter().filter_map(|s| match s {
            Step::Change(c) => Some(c),
            Step::WaitAvailable(_) | Step::Call(_) => None,
        })
    }

    /// The records of the planned changes and calls, e.g. to persist them before executing.
    pub fn actions(&self) -> Vec<Action> {
        self.steps
            .iter()
            .filter_map(Step::action)
            .cloned()
            .collect()
    }
}

/// One step of a plan. Plans hold a few steps, so a change is kept inline rather than boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Change(Change),
    /// Wait until a Deployment has this many replicas, all available.
    WaitAvailable(WaitAvailable),
    /// POST to a URL held in a Secret; its answer is the step's result.
    Call(Call),
}

impl Step {
    /// The action the step records, if it records one.
    pub fn action(&self) -> Option<&Action> {
        match self {
            Step::Change(c) => Some(&c.action),
            Step::Call(c) => Some(&c.action),
            Step::WaitAvailable(_) => None,
        }
    }
}

/// An HTTP POST to the URL in a Secret. The body is made by the executor from the event it
/// runs for ([`Origin`]) and the time of sending; the URL is read when sending and is never
/// recorded (it is a credential). A 2xx answer is success; its JSON body may name an undo URL.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub url_secret_ref: SecretKeyRef,
    pub format: WebhookFormat,
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Attempts after the first (on timeouts, connection errors, 5xx and 429).
    pub retries: u32,
    /// The remediated Deployment, named in the body.
    pub target: String,
    /// The record; the executor adds what the answer says about undo.
    pub action: Action,
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
                namespace: None,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
