//! The RollbackDrill reconciler: rehearses a policy's rungs on a schedule.
//!
//! A run is a step machine kept in `status.report`, so a restarted (or new) leader resumes it:
//! for each strategy in order, the objects its plan touches are digested, a RollbackEvent of
//! type `Drill` is created and executed by the event controller (the same executor and
//! verification as remediations), then undone through the same path as
//! `rollback.frys.io/undo=true`, and the objects are compared with their digests. One strategy
//! at a time, each from the state before the drill, so each undo is judged on its own.
//!
//! The pure parts are `schedule` (when due, whether allowed, what it waits for), `snapshot`
//! (what "restored exactly" compares) and `report`.

use std::{sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use jiff::{Timestamp, tz::TimeZone};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{
        Controller,
        controller::Action,
        events::{Event, EventType as K8sEventType},
        watcher,
    },
};
use serde_json::json;

use super::{Context, Error, Shutdown, condition, scoped_api, set_condition};
use crate::{
    api::{
        AlertLevel, DrillReport, DrillResult, DrillStep, DrillTrigger, EventType, ObjectDigest,
        PolicyRef, RollbackDrill, RollbackDrillStatus, RollbackEvent, RollbackEventSpec,
        RollbackPolicy, StrategyReport, annotations, labels,
    },
    strategy::{Cluster, Kind, Objects as _, Remediation},
};

pub use crate::decide::drill::schedule::{Schedule, allowed};
use crate::decide::drill::{report, schedule, snapshot};

const NAME: &str = "drill";
/// Field manager of the drill controller's status writes.
pub const DRILL_MANAGER: &str = "frys-rollback-drill";
/// Condition types of a RollbackDrill.
pub const READY: &str = "Ready";
pub const ALLOWED: &str = "Allowed";
pub const WAITING: &str = "Waiting";
/// How often a run in progress looks at its RollbackEvent.
const POLL: Duration = Duration::from_millis(250);
/// How often an idle drill re-reads what it depends on (labels, the policy).
const IDLE: Duration = Duration::from_secs(30);

pub(super) fn controller(ctx: Arc<Context>, shutdown: Shutdown) -> impl Stream<Item = ()> {
    let drills: Api<RollbackDrill> = scoped_api(&ctx.client, ctx.namespace.as_deref());
    Controller::new(drills, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .map(|result| {
            if let Err(error) = result {
                tracing::debug!(%error, "drill controller event");
            }
        })
}

#[tracing::instrument(skip_all, fields(
    drill = %drill.name_any(),
    namespace = drill.namespace().unwrap_or_default(),
    policy = %drill.spec.policy_ref.name,
))]
async fn reconcile(drill: Arc<RollbackDrill>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started(NAME);
    let ns = drill
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let drills: Api<RollbackDrill> = Api::namespaced(ctx.client.clone(), &ns);
    // A step machine acts on the latest status, not on a cache that may lag its own writes.
    let Some(drill) = drills.get_opt(&drill.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let before = drill.status.clone().unwrap_or_default();
    let mut status = before.clone();
    status.observed_generation = drill.metadata.generation;
    let mut step = Step {
        ctx: &ctx,
        drill: &drill,
        ns: &ns,
        status: &mut status,
        consume_run_now: false,
    };
    let next = step.run(Timestamp::now()).await?;
    let consume = step.consume_run_now;
    if status != before {
        ctx.fence.check()?;
        let patch = json!({
            "apiVersion": RollbackDrill::api_version(&()),
            "kind": RollbackDrill::kind(&()),
            "metadata": {"resourceVersion": drill.resource_version()},
            "status": status,
        });
        drills
            .patch_status(
                &drill.name_any(),
                &PatchParams::apply(DRILL_MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await?;
    }
    if consume {
        let remove = json!({"metadata": {"annotations": {annotations::RUN_NOW: null}}});
        drills
            .patch(
                &drill.name_any(),
                &PatchParams::default(),
                &Patch::Merge(remove),
            )
            .await?;
    }
    Ok(next)
}

/// One reconcile of one drill.
struct Step<'a> {
    ctx: &'a Context,
    drill: &'a RollbackDrill,
    ns: &'a str,
    status: &'a mut RollbackDrillStatus,
    /// Remove the run-now annotation after the status is written.
    consume_run_now: bool,
}

impl Step<'_> {
    async fn run(&mut self, now: Timestamp) -> Result<Action, Error> {
        let spec = &self.drill.spec;
        let policies: Api<RollbackPolicy> = Api::namespaced(self.ctx.client.clone(), self.ns);
        let policy = policies.get_opt(&spec.policy_ref.name).await?;
        let valid = self.validate(policy.as_ref());
        let permission = permission(self.ctx, self.ns).await;
        match &permission {
            Ok(()) => self.set(ALLOWED, true, "DrillsAllowed", "the operator allows drills (--allow-drills) and the namespace is labelled rollback.frys.io/drills=enabled".into()),
            Err(why) => self.set(ALLOWED, false, why.reason, why.message.clone()),
        }
        let running = self
            .status
            .report
            .as_ref()
            .is_some_and(|r| r.result == DrillResult::Running);
        if running {
            return match policy {
                Some(policy) => self.advance(&policy, permission.err(), now).await,
                None => {
                    self.abort(
                        now,
                        format!("RollbackPolicy {} was deleted", spec.policy_ref.name),
                    );
                    Ok(Action::requeue(Duration::ZERO))
                }
            };
        }

        let run_now = self.drill.annotations().contains_key(annotations::RUN_NOW);
        let schedule = valid.as_ref().ok().and_then(|s| s.as_ref());
        self.status.next_schedule_time = schedule.and_then(|s| s.next_after(now)).map(Into::into);
        let since = self
            .status
            .last_schedule_time
            .as_ref()
            .or(self.drill.metadata.creation_timestamp.as_ref())
            .map_or(now, |t| t.0);
        let slot = schedule
            .filter(|_| !spec.suspend)
            .and_then(|s| s.due(since, now));
        let until_next = self
            .status
            .next_schedule_time
            .as_ref()
            .map(|t| now.duration_until(t.0).unsigned_abs())
            .map_or(IDLE, |d| d.min(IDLE));
        let trigger = match (run_now, slot) {
            (true, _) => DrillTrigger::RunNow,
            (false, Some(_)) => DrillTrigger::Schedule,
            (false, None) => {
                let (reason, message) = if spec.suspend {
                    ("Suspended", "spec.suspend is set: the schedule is held")
                } else if permission.is_err() {
                    (
                        "NotAllowed",
                        "due runs are refused: see the Allowed condition",
                    )
                } else {
                    ("Idle", "no run is due")
                };
                self.set(WAITING, false, reason, message.into());
                return Ok(Action::requeue(until_next));
            }
        };
        let (Ok(_), Some(policy)) = (&valid, policy) else {
            // Not Ready: the condition says why. A run-now request is consumed, not kept.
            self.consume_run_now = run_now;
            self.set(
                WAITING,
                false,
                "NotReady",
                "the drill is not Ready: see the Ready condition".into(),
            );
            return Ok(Action::requeue(IDLE));
        };
        if let Err(why) = permission {
            self.refused(slot, run_now, &why.message).await;
            return Ok(Action::requeue(until_next));
        }
        if let Some(why) = self.wait_for(&policy).await? {
            self.set(WAITING, true, why.reason, why.message);
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        self.set(WAITING, false, "Started", "a run started".into());
        self.status.last_schedule_time = Some(slot.unwrap_or(now).into());
        self.consume_run_now = run_now;
        let id = format!("{:x}", now.as_second());
        let next = DrillReport {
            id,
            trigger,
            started_at: now.into(),
            completed_at: None,
            result: DrillResult::Running,
            message: Some(format!("rehearsing {}", names(&spec.strategies))),
            strategies: spec
                .strategies
                .iter()
                .copied()
                .map(StrategyReport::pending)
                .collect(),
        };
        report::start(self.status, next, spec.history_limit);
        tracing::info!(strategies = %names(&spec.strategies), ?trigger, "drill started");
        Ok(Action::requeue(Duration::ZERO))
    }

    /// `Ready`: the schedule, its time zone, the policy and its rungs. The schedule on success
    /// (absent when the drill runs on request only).
    fn validate(&mut self, policy: Option<&RollbackPolicy>) -> Result<Option<Schedule>, ()> {
        let spec = &self.drill.spec;
        let tz = match spec.time_zone.as_deref() {
            None => Ok(TimeZone::UTC),
            Some(name) => TimeZone::get(name)
                .map_err(|_| format!("spec.timeZone {name:?} is not a known IANA time zone")),
        };
        let result = tz.and_then(|tz| {
            spec.schedule
                .as_deref()
                .map(|s| Schedule::parse(s, tz).map_err(|e| e.to_string()))
                .transpose()
        });
        let (schedule, reason, message) = match (result, policy) {
            (Err(message), _) => (Err(()), "InvalidSpec", message),
            (Ok(_), None) => (
                Err(()),
                "PolicyNotFound",
                format!(
                    "RollbackPolicy {} not found in namespace {}",
                    spec.policy_ref.name, self.ns
                ),
            ),
            (Ok(schedule), Some(policy)) => {
                let ladder: Vec<_> = policy.spec.strategies.iter().map(|r| r.type_).collect();
                let missing = schedule::missing_rungs(&spec.strategies, &ladder);
                if !missing.is_empty() {
                    (
                        Err(()),
                        "StrategyNotInLadder",
                        format!(
                            "{} not in the ladder of RollbackPolicy {} (a drill exercises the policy's own rungs)",
                            names(&missing),
                            spec.policy_ref.name
                        ),
                    )
                } else if policy.spec.dry_run {
                    (
                        Err(()),
                        "PolicyDryRun",
                        format!(
                            "RollbackPolicy {} is in dry run: a drill would apply nothing",
                            spec.policy_ref.name
                        ),
                    )
                } else {
                    let message = match &schedule {
                        Some(_) => format!(
                            "schedule {:?} in {}",
                            spec.schedule.as_deref().unwrap_or_default(),
                            spec.time_zone.as_deref().unwrap_or("UTC")
                        ),
                        None => "no schedule: runs when annotated rollback.frys.io/run-now".into(),
                    };
                    (Ok(schedule), "Valid", message)
                }
            }
        };
        self.set(READY, schedule.is_ok(), reason, message);
        schedule
    }

    /// What a due run must wait for on its policy, if anything.
    async fn wait_for(&self, policy: &RollbackPolicy) -> Result<Option<schedule::Why>, Error> {
        let own = self.drill.name_any();
        let policy_name = policy.name_any();
        let events = Api::<RollbackEvent>::namespaced(self.ctx.client.clone(), self.ns)
            .list(&ListParams::default())
            .await?
            .items;
        let drills = Api::<RollbackDrill>::namespaced(self.ctx.client.clone(), self.ns)
            .list(&ListParams::default())
            .await?
            .items;
        let unfinished: Vec<String> = events
            .iter()
            .filter(|e| e.spec.policy_ref.name == policy_name)
            .filter(|e| !e.status.as_ref().is_some_and(|s| s.phase.is_finished()))
            .map(|e| e.name_any())
            .collect();
        let running: Vec<String> = drills
            .iter()
            .filter(|d| d.name_any() != own && d.spec.policy_ref.name == policy_name)
            .filter(|d| {
                d.status
                    .as_ref()
                    .and_then(|s| s.report.as_ref())
                    .is_some_and(|r| r.result == DrillResult::Running)
            })
            .map(|d| d.name_any())
            .collect();
        let activity = schedule::PolicyActivity {
            policy: &policy_name,
            suspended: policy.spec.suspend,
            incident: policy.status.as_ref().and_then(|s| s.incident.as_ref()),
            unfinished_events: unfinished.iter().map(String::as_str).collect(),
            running_drills: running.iter().map(String::as_str).collect(),
        };
        Ok(schedule::wait_for(&activity))
    }

    /// A due run where drills are not allowed: nothing is applied; the slot counts as handled.
    async fn refused(&mut self, slot: Option<Timestamp>, run_now: bool, message: &str) {
        if let Some(slot) = slot {
            self.status.last_schedule_time = Some(slot.into());
        }
        self.consume_run_now = run_now;
        self.set(
            WAITING,
            false,
            "NotAllowed",
            "the due run was refused: see the Allowed condition".into(),
        );
        tracing::warn!(%message, "drill refused");
        self.publish(K8sEventType::Warning, "DrillRefused", message.to_owned())
            .await;
    }

    /// One step of the run in progress.
    async fn advance(
        &mut self,
        policy: &RollbackPolicy,
        disallowed: Option<schedule::Why>,
        now: Timestamp,
    ) -> Result<Action, Error> {
        let report = self.status.report.as_ref().expect("a run is in progress");
        let Some(index) = report
            .strategies
            .iter()
            .position(|s| s.step != DrillStep::Done)
        else {
            let report = self.status.report.as_mut().expect("a run is in progress");
            report::finish(report, now, None);
            self.status.active.clear();
            let (kind, message) = (report.result, report.message.clone().unwrap_or_default());
            tracing::info!(result = ?kind, %message, "drill finished");
            let level = if kind == DrillResult::Succeeded {
                K8sEventType::Normal
            } else {
                K8sEventType::Warning
            };
            self.publish(level, "DrillFinished", message).await;
            return Ok(Action::requeue(Duration::ZERO));
        };
        let step = report.strategies[index].step;
        match step {
            DrillStep::Pending => {
                if let Some(why) = disallowed {
                    self.abort(
                        now,
                        format!(
                            "stopped before {}: {}",
                            report.strategies[index].strategy, why.message
                        ),
                    );
                    return Ok(Action::requeue(Duration::ZERO));
                }
                if let Some(why) = self.wait_for(policy).await? {
                    let strategy = report.strategies[index].strategy;
                    self.abort(now, format!("stopped before {strategy}: {}", why.message));
                    return Ok(Action::requeue(Duration::ZERO));
                }
                self.apply(policy, index).await?;
            }
            DrillStep::Applying => self.applied(index).await?,
            DrillStep::Undoing => self.undone(policy, index, now).await?,
            DrillStep::Done => {}
        }
        Ok(Action::requeue(POLL))
    }

    /// Digests the objects the strategy's plan touches, then creates its RollbackEvent.
    async fn apply(&mut self, policy: &RollbackPolicy, index: usize) -> Result<(), Error> {
        let cluster = Cluster::new(self.ctx.client.clone(), self.ns);
        let id = self.report().id.clone();
        let entry = &mut report_of(self.status).strategies[index];
        let kind = entry.strategy;
        let plan = match Remediation::for_ladder(&policy.spec.strategies, kind) {
            Ok(remediation) => remediation
                .plan(&cluster, &policy.spec.target_ref.name)
                .await
                .map_err(|e| e.to_string()),
            Err(message) => Err(message),
        };
        let plan = match plan {
            Ok(plan) if plan.is_noop() => Err(format!(
                "{kind} is already in effect ({}): nothing to rehearse",
                plan.summary
            )),
            other => other,
        };
        let plan = match plan {
            Ok(plan) => plan,
            Err(message) => {
                entry.step = DrillStep::Done;
                entry.result = Some(DrillResult::Failed);
                entry.message = Some(format!("not applied: {message}"));
                return Ok(());
            }
        };
        let mut objects: Vec<ObjectDigest> = vec![];
        for change in plan.changes() {
            if objects
                .iter()
                .any(|o| o.kind == change.kind.as_str() && o.name == change.name)
            {
                continue;
            }
            let object = cluster
                .get(change.kind, &change.name)
                .await
                .map_err(|e| Error::Invalid(e.to_string()))?;
            objects.push(ObjectDigest {
                api_version: change.kind.api_version().into(),
                kind: change.kind.as_str().into(),
                name: change.name.clone(),
                sha256: snapshot::digest(&object),
            });
        }
        entry.objects = objects;
        let name = format!("{}-{id}-{index}", self.drill.name_any());
        let mut event = RollbackEvent::new(
            &name,
            RollbackEventSpec {
                policy_ref: PolicyRef {
                    name: policy.name_any(),
                },
                type_: EventType::Drill,
                strategy: kind,
                reason: format!("drill {}: rehearsal of {kind}", self.drill.name_any()),
                assessment: None,
                requested_by: Some(format!("rollbackdrill/{}", self.drill.name_any())),
                escalated_from: None,
                rollback_target: None,
                skip_verification: !self.drill.spec.verify,
                alerts: vec![],
            },
        );
        event.metadata.namespace = Some(self.ns.to_owned());
        event.metadata.labels = Some([(labels::DRILL.to_owned(), self.drill.name_any())].into());
        event.metadata.owner_references = super::event::owner_reference(policy).map(|o| vec![o]);
        self.ctx.fence.check()?;
        let events: Api<RollbackEvent> = Api::namespaced(self.ctx.client.clone(), self.ns);
        match events.create(&PostParams::default(), &event).await {
            Ok(_) => {}
            // A retry after a lost status write: the event is there already.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(event = %name, strategy = %kind, "drill step created");
        let entry = &mut report_of(self.status).strategies[index];
        entry.event = Some(name.clone());
        entry.step = DrillStep::Applying;
        self.status.active = vec![PolicyRef { name }];
        Ok(())
    }

    /// Once the event has finished: the timings and verdict, then the undo request.
    async fn applied(&mut self, index: usize) -> Result<(), Error> {
        let events: Api<RollbackEvent> = Api::namespaced(self.ctx.client.clone(), self.ns);
        let name = self.report().strategies[index]
            .event
            .clone()
            .unwrap_or_default();
        let Some(event) = events.get_opt(&name).await? else {
            let entry = &mut report_of(self.status).strategies[index];
            entry.step = DrillStep::Done;
            entry.result = Some(DrillResult::Failed);
            entry.message = Some(format!(
                "RollbackEvent {name} was deleted before it finished"
            ));
            self.status.active.clear();
            return Ok(());
        };
        let Some(status) = event.status.as_ref().filter(|s| s.phase.is_finished()) else {
            return Ok(());
        };
        let (apply_ms, verify_ms) = report::timings(status);
        let applied = status
            .actions
            .iter()
            .any(|a| a.applied_at.is_some() && !a.undone);
        let entry = &mut report_of(self.status).strategies[index];
        entry.event_phase = Some(status.phase);
        entry.apply_ms = apply_ms;
        entry.verify_ms = verify_ms;
        entry.verification = status.verification.as_ref().map(|v| v.overall_status);
        entry.message = status.message.clone();
        if !applied {
            self.compare(index).await;
            return Ok(());
        }
        self.ctx.fence.check()?;
        let undo = json!({"metadata": {"annotations": {annotations::UNDO: "true"}}});
        events
            .patch(&name, &PatchParams::default(), &Patch::Merge(undo))
            .await?;
        let entry = &mut report_of(self.status).strategies[index];
        entry.undo_requested_at = Some(Timestamp::now().into());
        entry.step = DrillStep::Undoing;
        Ok(())
    }

    /// Once the event controller has handled the undo: its outcome and the comparison.
    async fn undone(
        &mut self,
        policy: &RollbackPolicy,
        index: usize,
        now: Timestamp,
    ) -> Result<(), Error> {
        let events: Api<RollbackEvent> = Api::namespaced(self.ctx.client.clone(), self.ns);
        let name = self.report().strategies[index]
            .event
            .clone()
            .unwrap_or_default();
        let event = events.get_opt(&name).await?;
        if event
            .as_ref()
            .is_some_and(|e| e.annotations().contains_key(annotations::UNDO))
        {
            return Ok(());
        }
        let status = event.and_then(|e| e.status).unwrap_or_default();
        let entry = &mut report_of(self.status).strategies[index];
        entry.undo_ms = entry
            .undo_requested_at
            .as_ref()
            .map(|t| report::millis(t.0, now));
        let left: Vec<String> = status
            .actions
            .iter()
            .filter(|a| a.applied_at.is_some() && !a.undone)
            .map(|a| format!("{}/{}", a.kind, a.name))
            .collect();
        if status.undo_refused.is_some() || !left.is_empty() {
            let why = status
                .undo_refused
                .clone()
                .unwrap_or_else(|| format!("{} not undone", left.join(", ")));
            let message = format!(
                "drill {}: the undo of {} (RollbackEvent {name}) failed: {why}; restore the objects by hand",
                self.drill.name_any(),
                entry.strategy
            );
            entry.message = Some(format!("undo failed: {why}"));
            super::policy::alerts::publish(
                self.ctx,
                policy,
                AlertLevel::Emergency,
                "DrillUndoFailed",
                message.clone(),
            )
            .await;
            self.publish(K8sEventType::Warning, "DrillUndoFailed", message)
                .await;
        } else {
            entry.message = None;
        }
        self.compare(index).await;
        Ok(())
    }

    /// Compares the touched objects with their digests from before the drill; ends the step.
    async fn compare(&mut self, index: usize) {
        let cluster = Cluster::new(self.ctx.client.clone(), self.ns);
        let verify = self.drill.spec.verify;
        let entry = &mut report_of(self.status).strategies[index];
        let mut differences = vec![];
        for object in &entry.objects {
            let Some(kind) = Kind::from_type(&object.api_version, &object.kind) else {
                continue;
            };
            let same = match cluster.get(kind, &object.name).await {
                Ok(now) => snapshot::digest(&now) == object.sha256,
                Err(_) => false,
            };
            if !same {
                differences.push(format!("{}/{}", object.kind, object.name));
            }
        }
        entry.restored_exactly = Some(differences.is_empty());
        entry.differences = differences;
        entry.step = DrillStep::Done;
        report::conclude(entry, verify);
        tracing::info!(strategy = %entry.strategy, result = ?entry.result, message = entry.message.as_deref().unwrap_or_default(), "drill step finished");
        self.status.active.clear();
    }

    /// Ends the run early; a step already applied has been undone (steps end Done).
    fn abort(&mut self, now: Timestamp, why: String) {
        tracing::warn!(%why, "drill aborted");
        if let Some(report) = self.status.report.as_mut() {
            report::finish(report, now, Some(why));
        }
        self.status.active.clear();
    }

    fn report(&self) -> &DrillReport {
        self.status.report.as_ref().expect("a run is in progress")
    }

    fn set(&mut self, type_: &str, value: bool, reason: &str, message: String) {
        set_condition(
            &mut self.status.conditions,
            condition(type_, value, reason, message),
        );
    }

    /// A Kubernetes Event on the drill. Best effort.
    async fn publish(&self, type_: K8sEventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Drill".into(),
            secondary: None,
        };
        if let Err(error) = self
            .ctx
            .recorder
            .publish(&event, &self.drill.object_ref(&()))
            .await
        {
            tracing::warn!(%error, "could not publish event");
        }
    }
}

/// The run in progress (a free function, so it borrows the status alone).
fn report_of(status: &mut RollbackDrillStatus) -> &mut DrillReport {
    status.report.as_mut().expect("a run is in progress")
}

fn names(strategies: &[crate::api::StrategyKind]) -> String {
    strategies
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The operator flag and the namespace label. An unreadable namespace counts as unlabelled.
async fn permission(ctx: &Context, namespace: &str) -> Result<(), schedule::Why> {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let label = match namespaces.get_opt(namespace).await {
        Ok(n) => n.and_then(|n| n.labels().get(labels::DRILLS).cloned()),
        Err(error) => {
            tracing::warn!(%error, namespace, "reading the namespace's drills label");
            None
        }
    };
    allowed(ctx.config.allow_drills, namespace, label.as_deref())
}

/// For the event controller: a RollbackEvent of type Drill runs only where drills may (one
/// created by hand, bypassing RollbackDrill, is refused the same way).
pub async fn drills_allowed(ctx: &Context, namespace: &str) -> Result<(), String> {
    permission(ctx, namespace).await.map_err(|why| why.message)
}

fn error_policy(drill: Arc<RollbackDrill>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(NAME, error.metric_label());
    if error.is_conflict() {
        return Action::requeue(Duration::from_millis(200));
    }
    tracing::warn!(drill = %drill.name_any(), %error, "drill reconcile failed");
    Action::requeue(Duration::from_secs(5))
}
