//! The RollbackPolicy reconciler: validates the policy against the cluster, resolves its
//! effective settings and reports them in status.

use std::{sync::Arc, time::Duration};

use futures::{FutureExt, Stream, StreamExt};
use jiff::Timestamp;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, ReplicaSet},
        core::v1::Namespace,
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Event, EventType},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde_json::json;

use super::{
    Context, Error, POLICY_MANAGER, Shutdown, condition,
    evaluator::{self, Evaluation, Evaluator},
    health, scoped_api, set_condition,
};
use crate::{
    api::{
        AlertLevel, EffectiveSettings, EventPhase, LastRollback, OnDelete, PolicyRef,
        RollbackEvent, RollbackEventSpec, RollbackPolicy, RollbackPolicySpec, RollbackPolicyStatus,
        StrategyKind, annotations,
    },
    assess::{self, AssessInput},
    config,
    decide::{
        self, ActiveStep, ClusterView, GuardSettings, ManualRequest, PolicyState, Remediate, Tick,
    },
    prometheus,
};

const NAME: &str = "policy";

struct PolicyContext {
    shared: Arc<Context>,
    policies: Store<RollbackPolicy>,
    deployments: Store<Deployment>,
    replica_sets: Store<ReplicaSet>,
    events: Store<RollbackEvent>,
    evaluator: Arc<Evaluator>,
}

/// Builds the controller and its evaluator; the stream must be polled to run both. The returned
/// store is ready once policies are listed.
pub(super) fn controller(
    ctx: Arc<Context>,
    events: Store<RollbackEvent>,
    shutdown: Shutdown,
) -> (impl Stream<Item = ()>, Store<RollbackPolicy>) {
    let ns = ctx.namespace.as_deref();
    let policies: Api<RollbackPolicy> = scoped_api(&ctx.client, ns);
    let controller = Controller::new(policies.clone(), watcher::Config::default());
    let policy_store = controller.store();

    // Deployments are cached (not fetched per reconcile) and trigger the policies that target them.
    let (deployments, writer) = reflector::store::<Deployment>();
    let by_target = policy_store.clone();
    let deployment_triggers = reflector::reflector(
        writer,
        watcher(
            scoped_api::<Deployment>(&ctx.client, ns),
            watcher::Config::default(),
        ),
    )
    .touched_objects()
    .default_backoff()
    .filter_map(|event| async move {
        event
            .inspect_err(|error| tracing::warn!(%error, "watching Deployments"))
            .ok()
    })
    .flat_map(move |d: Deployment| {
        futures::stream::iter(policies_targeting(
            &by_target,
            d.namespace().as_deref(),
            &d.name_any(),
        ))
    });

    // ReplicaSets give the target's revisions (release time, pod names); cached, no triggers.
    let (replica_sets, writer) = reflector::store::<ReplicaSet>();
    let replica_set_cache = reflector::reflector(
        writer,
        watcher(
            scoped_api::<ReplicaSet>(&ctx.client, ns),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .take_until(shutdown.clone())
    .for_each(|event| async move {
        if let Err(error) = event {
            tracing::warn!(%error, "watching ReplicaSets");
        }
    });

    let evaluator = Arc::new(Evaluator::new(
        ctx.clone(),
        policy_store.clone(),
        deployments.clone(),
        replica_sets.clone(),
    ));
    let (evaluated_tx, evaluated) = futures::channel::mpsc::unbounded();
    let evaluations = evaluator.clone().run(evaluated_tx, shutdown.clone());

    let siblings = policy_store.clone();
    let pctx = Arc::new(PolicyContext {
        shared: ctx.clone(),
        policies: policy_store.clone(),
        deployments,
        replica_sets,
        events,
        evaluator,
    });
    let reconciles = controller
        .reconcile_on(deployment_triggers)
        .reconcile_on(evaluated)
        // A policy appearing or going away changes its siblings' one-policy-per-target verdict.
        .watches(
            policies,
            watcher::Config::default(),
            move |p: RollbackPolicy| {
                policies_targeting(&siblings, p.namespace().as_deref(), &p.spec.target_ref.name)
            },
        )
        // An event finishing lets the policy decide what comes next.
        .watches(
            scoped_api::<RollbackEvent>(&ctx.client, ns),
            watcher::Config::default(),
            |e: RollbackEvent| {
                e.namespace()
                    .map(|ns| ObjectRef::new(&e.spec.policy_ref.name).within(&ns))
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, pctx)
        .map(|result| {
            if let Err(error) = result {
                tracing::debug!(%error, "policy controller event");
            }
        });
    let background = futures::future::join(replica_set_cache, evaluations).map(|_| ());
    let stream = futures::stream::select(reconciles, background.into_stream());
    (stream, policy_store)
}

fn policies_targeting(
    store: &Store<RollbackPolicy>,
    namespace: Option<&str>,
    target: &str,
) -> Vec<ObjectRef<RollbackPolicy>> {
    store
        .state()
        .iter()
        .filter(|p| p.namespace().as_deref() == namespace && p.spec.target_ref.name == target)
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// Whether the policy can protect its target, and why not.
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Pure verdict on a policy given what the cluster holds. `others` are the other policies in
/// the same namespace.
pub fn readiness(
    policy: &RollbackPolicy,
    target_exists: bool,
    others: &[Arc<RollbackPolicy>],
    workload_label: &str,
) -> Readiness {
    let spec = &policy.spec;
    let not_ready = |reason, message: String| Readiness {
        ready: false,
        reason,
        message,
    };
    if let Some(problem) = spec_problems(spec).into_iter().next() {
        return not_ready("InvalidSpec", problem);
    }
    // Queries are parsed now, so a typo is reported here rather than at 3 a.m.
    if let Err(invalid) = prometheus::validate_metrics(&spec.metrics, workload_label) {
        return not_ready("InvalidQuery", invalid.to_string());
    }
    // One policy per target: the oldest (then the first by name) keeps it.
    let key = |p: &RollbackPolicy| (p.creation_timestamp(), p.name_any());
    if let Some(owner) = others
        .iter()
        .filter(|o| o.spec.target_ref.name == spec.target_ref.name && o.uid() != policy.uid())
        .filter(|o| key(o) < key(policy))
        .min_by_key(|o| key(o))
    {
        return not_ready(
            "DuplicateTarget",
            format!(
                "RollbackPolicy {} already protects {} {}; a target has one policy",
                owner.name_any(),
                spec.target_ref.kind,
                spec.target_ref.name
            ),
        );
    }
    if !target_exists {
        return not_ready(
            "TargetNotFound",
            format!(
                "{} {} not found in namespace {}",
                spec.target_ref.kind,
                spec.target_ref.name,
                policy.namespace().unwrap_or_default()
            ),
        );
    }
    Readiness {
        ready: true,
        reason: "Valid",
        message: format!(
            "protecting {} {} with {} signal(s) and {} strategy rung(s)",
            spec.target_ref.kind,
            spec.target_ref.name,
            spec.metrics.len(),
            spec.strategies.len()
        ),
    }
}

/// Problems the API server's schema cannot catch (it validates shape, not meaning).
fn spec_problems(spec: &RollbackPolicySpec) -> Vec<String> {
    let mut problems = vec![];
    let verification = spec.verification.as_ref();
    let durations = [
        ("interval", spec.interval.as_ref()),
        ("rateWindow", spec.rate_window.as_ref()),
        ("releaseWindow", spec.release_window.as_ref()),
        ("rollbackTimeout", spec.rollback_timeout.as_ref()),
        ("cooldown", spec.cooldown.as_ref()),
        (
            "verification.timeout",
            verification.and_then(|v| v.timeout.as_ref()),
        ),
        (
            "verification.stabilizationDelay",
            verification.and_then(|v| v.stabilization_delay.as_ref()),
        ),
    ];
    for (field, value) in durations {
        if let Some(Err(e)) = value.map(|d| d.get()) {
            problems.push(format!("spec.{field}: {e}"));
        }
    }
    problems
}

async fn reconcile(policy: Arc<RollbackPolicy>, pctx: Arc<PolicyContext>) -> Result<Action, Error> {
    let ctx = &pctx.shared;
    let _timer = ctx.metrics.reconcile_started(NAME);
    let ns = policy
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = policy.name_any();
    ctx.metrics.record_policies(&pctx.policies.state());

    // Deletion: apply onDelete, then let the policy go.
    if policy.metadata.deletion_timestamp.is_some() {
        if policy.finalizers().iter().any(|f| f == FINALIZER) {
            if policy.spec.on_delete == OnDelete::Restore {
                restore_all(ctx, &policy, &pctx.events).await;
            }
            set_finalizer(ctx, &policy, false).await?;
        }
        return Ok(Action::await_change());
    }
    if !policy.finalizers().iter().any(|f| f == FINALIZER) {
        set_finalizer(ctx, &policy, true).await?;
    }

    let effective = config::effective(&policy.spec, &ctx.config);
    let workload_label = effective.workload_label.clone().unwrap_or_default();
    let target_ref = ObjectRef::<Deployment>::new(&policy.spec.target_ref.name).within(&ns);
    let target = pctx.deployments.get(&target_ref);
    let others: Vec<_> = pctx
        .policies
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .collect();
    let mut verdict = readiness(&policy, target.is_some(), &others, &workload_label);
    if verdict.ready {
        let missing = missing_references(ctx, &policy, &pctx, target.as_deref()).await;
        if !missing.is_empty() {
            verdict = Readiness {
                ready: false,
                reason: REFERENCE_MISSING,
                message: missing.join("; "),
            };
        }
    }

    let old_status = policy.status.clone().unwrap_or_default();
    let mut status = old_status.clone();
    let previous_ready = old_status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .cloned();
    set_condition(
        &mut status.conditions,
        condition(
            "Ready",
            verdict.ready,
            verdict.reason,
            verdict.message.clone(),
        ),
    );
    let suspended = policy.spec.suspend;
    set_condition(
        &mut status.conditions,
        condition(
            "Suspended",
            suspended,
            if suspended { "Suspended" } else { "Active" },
            if suspended {
                "spec.suspend is true: no evaluation and no remediation"
            } else {
                "evaluating and remediating"
            },
        ),
    );
    status.observed_generation = policy.metadata.generation;
    status.effective = Some(effective.clone());

    let mut notes: Vec<(AlertLevel, &'static str, String)> = vec![];
    // A missing rung reference is reported, but does not stop monitoring or the other rungs.
    let usable = verdict.ready || verdict.reason == REFERENCE_MISSING;
    if usable {
        notes.extend(manual(&pctx, &policy, target.as_deref(), &effective, &mut status).await?);
    }
    if usable && !suspended {
        // Only a new evaluation moves the engine: other triggers just refresh conditions.
        let last_evaluated = old_status
            .health
            .as_ref()
            .and_then(|h| h.evaluated_at.as_ref())
            .map(|t| t.0);
        if let Some(evaluation) = pctx.evaluator.take(&policy)
            && last_evaluated.is_none_or(|t| evaluation.at > t)
        {
            notes = step(
                &pctx,
                &policy,
                target.as_deref(),
                &effective,
                &evaluation,
                &mut status,
            )
            .await?;
        }
    }

    super::conditions::kstatus(&mut status.conditions, policy.metadata.generation);
    let patch = json!({
        "apiVersion": RollbackPolicy::api_version(&()),
        "kind": RollbackPolicy::kind(&()),
        "status": status,
    });
    let api: Api<RollbackPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch_status(
        &name,
        &PatchParams::apply(POLICY_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;

    prune_history(ctx, &policy, &pctx.events).await;
    if usable && !suspended {
        auto_restore(ctx, &policy, &status, &pctx.events).await;
    }

    let changed = previous_ready
        .as_ref()
        .is_none_or(|c| c.reason != verdict.reason || (c.status == "True") != verdict.ready);
    if changed {
        tracing::info!(policy = %name, namespace = %ns, ready = verdict.ready, reason = verdict.reason, message = %verdict.message, "policy readiness changed");
        let level = if verdict.ready {
            AlertLevel::Info
        } else {
            AlertLevel::Warning
        };
        notes.insert(0, (level, verdict.reason, verdict.message));
    }
    for (level, reason, message) in notes {
        publish(ctx, &policy, level, reason, message).await;
    }

    let interval = effective
        .interval
        .and_then(|d| d.get().ok())
        .unwrap_or(ctx.config.interval);
    Ok(Action::requeue(interval.max(Duration::from_secs(1))))
}

/// One engine step on a fresh evaluation: assess, decide, create the RollbackEvent it asks for,
/// and record the outcome in `status`. Returns what to publish as Kubernetes Events.
async fn step(
    pctx: &PolicyContext,
    policy: &RollbackPolicy,
    target: Option<&Deployment>,
    effective: &EffectiveSettings,
    evaluation: &Evaluation,
    status: &mut RollbackPolicyStatus,
) -> Result<Vec<(AlertLevel, &'static str, String)>, Error> {
    let ctx = &pctx.shared;
    let name = policy.name_any();
    let ns = policy.namespace().unwrap_or_default();
    set_condition(
        &mut status.conditions,
        health::metrics_available(evaluation),
    );
    let (assess_settings, settings) = match decide::from_policy(&policy.spec, effective) {
        Ok(s) => s,
        Err(e) => {
            set_condition(
                &mut status.conditions,
                condition("Ready", false, "InvalidSpec", e.to_string()),
            );
            return Ok(vec![]);
        }
    };

    let readings = evaluation.readings.clone().unwrap_or_default();
    let signals = health::signals(&policy.spec, effective, &readings);
    let replica_sets = target
        .map(|d| evaluator::owned_replica_sets(&pctx.replica_sets, d))
        .unwrap_or_default();
    let target_state = health::target_state(target, &replica_sets);
    let mut state = PolicyState::from_status(status);
    let assessment = assess::assess(
        &AssessInput {
            signals: &signals,
            target: &target_state,
            failing_since: state.failing_since,
            now: evaluation.at,
        },
        &assess_settings,
    );

    let events = pctx.events.state();
    let own_events: Vec<_> = events
        .iter()
        .filter(|e| e.namespace().as_deref() == Some(ns.as_str()))
        .cloned()
        .collect();
    let (active_automatic, critical) = health::cluster_view(&pctx.policies.state(), &events);
    let namespace_frozen = state.failure_streak > 0 && namespace_frozen(ctx, &ns).await;
    let guard = decide::verdict(
        &GuardSettings::from_config(&ctx.config),
        &ClusterView {
            active_automatic,
            operator_freeze: ctx.config.freeze,
            critical: &critical,
        },
        &evaluator::key(policy),
        namespace_frozen,
    );
    let active_event = state.incident.as_ref().and_then(|i| match &i.active {
        Some(ActiveStep::Event(e)) => Some(e.clone()),
        _ => None,
    });
    // An acknowledgement may be annotated on the policy or on its Deployment.
    let ack = policy
        .annotations()
        .get(annotations::ACK)
        .or_else(|| target.and_then(|d| d.annotations().get(annotations::ACK)))
        .cloned();
    let tick = Tick {
        assessment: &assessment,
        now: evaluation.at,
        guard: &guard,
        ack: ack.as_deref(),
        busy: health::busy_event(&name, &own_events, active_event.as_deref()),
    };

    // The incident's step finished (or vanished): learn its outcome first.
    let finished =
        active_event
            .as_ref()
            .and_then(|event| match health::event_phase(&own_events, event) {
                Some(EventPhase::Succeeded) => Some(true),
                Some(EventPhase::Failed) | None => Some(false),
                Some(_) => None,
            });
    let decision = match finished {
        Some(succeeded) => decide::on_remediation_finished(&state, succeeded, &tick, &settings),
        None => decide::decide(&state, &tick, &settings),
    };
    state = decision.state.clone();

    if let Some(action) = &decision.action {
        // Named after the incident and rung (each rung runs once per incident): a retry after a
        // failed status write finds the event instead of creating a second one.
        let at = state
            .incident
            .as_ref()
            .map(|i| i.started_at)
            .unwrap_or(evaluation.at);
        let event = create_event(ctx, policy, action, Some(&assessment), status, at).await?;
        state.attach_event(&event);
        status.last_rollback = Some(LastRollback {
            event,
            strategy: action.strategy,
            phase: EventPhase::Pending,
            time: Time(evaluation.at),
        });
    }
    if let Some(last) = status.last_rollback.as_mut()
        && let Some(phase) = health::event_phase(&own_events, &last.event)
    {
        last.phase = phase;
    }
    state.write_to(status);
    status.health = Some(assessment.report());
    for c in health::health_conditions(&assessment, &state) {
        set_condition(&mut status.conditions, c);
    }

    tracing::debug!(policy = %name, namespace = %ns, status = %assessment.status, score = assessment.score,
        streak = state.failure_streak, decision = decision.explanation.reason.code(), "evaluated");
    let mut notes: Vec<_> = decision
        .transitions
        .iter()
        .map(health::transition_event)
        .collect();
    notes.extend(
        decision
            .alerts
            .iter()
            .map(|a| (a.level, a.code, a.message.clone())),
    );
    Ok(notes)
}

/// Creates the RollbackEvent for a decided remediation, named `<policy>-<strategy>-<at>`; an
/// existing one of that name is taken as this one (a retried decision).
async fn create_event(
    ctx: &Context,
    policy: &RollbackPolicy,
    action: &Remediate,
    assessment: Option<&assess::Assessment>,
    status: &RollbackPolicyStatus,
    at: Timestamp,
) -> Result<String, Error> {
    let ns = policy.namespace().unwrap_or_default();
    let name = format!(
        "{}-{}-{}",
        policy.name_any(),
        action.strategy.as_str().to_lowercase(),
        at.as_second()
    );
    let escalated_from = action.escalated_from.and_then(|from| {
        status
            .last_rollback
            .as_ref()
            .filter(|l| l.strategy == from)
            .map(|l| l.event.clone())
    });
    let mut event = RollbackEvent::new(
        &name,
        RollbackEventSpec {
            policy_ref: PolicyRef {
                name: policy.name_any(),
            },
            type_: action.kind,
            strategy: action.strategy,
            reason: match assessment {
                Some(a) if action.kind == crate::api::EventType::Automatic => {
                    short_reason(action, a)
                }
                _ => action.reason.chars().take(256).collect(),
            },
            assessment: assessment.map(|a| a.for_event()),
            requested_by: Some(match action.kind {
                crate::api::EventType::Automatic => "frys-rollback".into(),
                _ => "annotation".into(),
            }),
            escalated_from,
        },
    );
    event.metadata.namespace = Some(ns.clone());
    event.metadata.owner_references = super::event::owner_reference(policy).map(|o| vec![o]);
    let api: Api<RollbackEvent> = Api::namespaced(ctx.client.clone(), &ns);
    match api.create(&PostParams::default(), &event).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::info!(event = %name, "event already exists (a retried decision)");
        }
        Err(e) => return Err(e.into()),
    }
    // The failed step points at its escalation (a field of its own, under this manager).
    if let Some(failed) = &event.spec.escalated_from {
        let link = json!({
            "apiVersion": RollbackEvent::api_version(&()),
            "kind": RollbackEvent::kind(&()),
            "status": {"escalatedTo": name},
        });
        api.patch_status(
            failed,
            &PatchParams::apply(POLICY_MANAGER),
            &Patch::Apply(link),
        )
        .await?;
    }
    tracing::warn!(policy = %policy.name_any(), namespace = %ns, event = %name, strategy = %action.strategy,
        dry_run = action.dry_run, reason = %action.reason, "remediation decided");
    Ok(name)
}

/// A manual request in annotations: an emergency wins over a trigger. Err for a value that
/// is not a strategy.
pub fn manual_request(
    annotations: &std::collections::BTreeMap<String, String>,
) -> Option<Result<ManualRequest, String>> {
    if let Some(reason) = annotations.get(annotations::EMERGENCY) {
        let reason = if reason.trim().is_empty() {
            "emergency".to_string()
        } else {
            reason.clone()
        };
        return Some(Ok(ManualRequest::Emergency { reason }));
    }
    let value = annotations.get(annotations::TRIGGER)?;
    Some(
        value
            .parse::<StrategyKind>()
            .map(|strategy| ManualRequest::Trigger {
                strategy,
                reason: annotations.get(annotations::REASON).cloned(),
            })
            .map_err(|e| e.to_string()),
    )
}

/// Handles a manual request annotated on the policy or its target Deployment: decides it with
/// the engine, creates its event, and removes the annotations once the request is settled.
async fn manual(
    pctx: &PolicyContext,
    policy: &RollbackPolicy,
    target: Option<&Deployment>,
    effective: &EffectiveSettings,
    status: &mut RollbackPolicyStatus,
) -> Result<Vec<(AlertLevel, &'static str, String)>, Error> {
    let ctx = &pctx.shared;
    let ns = policy.namespace().unwrap_or_default();
    let mut notes = vec![];
    let sources: [(&str, Option<&std::collections::BTreeMap<String, String>>); 2] = [
        ("RollbackPolicy", policy.metadata.annotations.as_ref()),
        (
            "Deployment",
            target.and_then(|d| d.metadata.annotations.as_ref()),
        ),
    ];
    for (kind, annotations) in sources {
        let Some(request) = annotations.and_then(manual_request) else {
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
                let own: Vec<_> = pctx
                    .events
                    .state()
                    .into_iter()
                    .filter(|e| e.namespace().as_deref() == Some(ns.as_str()))
                    .collect();
                let busy = health::busy_event(&policy.name_any(), &own, None);
                let now = Timestamp::now();
                let decision = decide::decide_manual(&state, &request, &settings, None, busy, now);
                let state = decision.state.clone();
                if let Some(action) = &decision.action {
                    let event = create_event(ctx, policy, action, None, status, now).await?;
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

/// A reason short enough for the REASON column: the incident class and the worst breach, e.g.
/// `Release: errors 0.3 > 0.05`. The full explanation is in the Event and the logs.
fn short_reason(action: &Remediate, assessment: &assess::Assessment) -> String {
    let issue = assessment
        .issues()
        .into_iter()
        .max_by_key(|i| i.severity == crate::api::MetricSeverity::Critical);
    let breach = issue.map(|i| match (i.value, i.threshold) {
        (Some(v), Some(t)) => format!(
            "{} {} beyond {}",
            i.metric,
            crate::units::num(v),
            crate::units::num(t)
        ),
        _ => format!("{} {}", i.metric, i.severity),
    });
    let class = action.class.map(|c| c.to_string());
    match (class, breach) {
        (Some(c), Some(b)) => format!("{c}: {b}"),
        (Some(c), None) => c,
        (None, Some(b)) => b,
        (None, None) => action.reason.chars().take(120).collect(),
    }
}

/// Traffic rungs whose changes are still in place once the target has been healthy for
/// `autoRestore.restoreAfter` (pure): the events to undo.
pub fn due_for_restore(
    policy: &RollbackPolicy,
    status: &RollbackPolicyStatus,
    events: &[Arc<RollbackEvent>],
    now: Timestamp,
) -> Vec<String> {
    let Some(after) = policy
        .spec
        .auto_restore
        .as_ref()
        .and_then(|a| a.restore_after.get().ok())
    else {
        return vec![];
    };
    let healthy_since = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Healthy" && c.status == "True")
        .map(|c| c.last_transition_time.0);
    let Some(since) = healthy_since else {
        return vec![];
    };
    // Healthy for `after` since the later of the healthy transition and the event's end.
    let long_enough = |e: &RollbackEvent| {
        let completed = e
            .status
            .as_ref()
            .and_then(|s| s.completed_at.as_ref())
            .map(|t| t.0);
        let from = completed.map_or(since, |c| c.max(since));
        now > from && now.duration_since(from).unsigned_abs() >= after
    };
    events
        .iter()
        .filter(|e| e.spec.policy_ref.name == policy.name_any())
        .filter(|e| {
            matches!(
                e.spec.strategy,
                StrategyKind::CircuitBreaker
                    | StrategyKind::TrafficShifting
                    | StrategyKind::EnvironmentSwitch
            )
        })
        .filter(|e| !e.annotations().contains_key(annotations::UNDO) && long_enough(e))
        .filter(|e| {
            e.status.as_ref().is_some_and(|s| {
                s.phase == EventPhase::Succeeded
                    && s.actions
                        .iter()
                        .any(|a| !a.undone && a.applied_at.is_some())
            })
        })
        .map(|e| e.name_any())
        .collect()
}

/// `autoRestore`: asks the event controller to undo traffic rungs once the target has been
/// healthy for long enough (the same path as a person's `rollback.frys.io/undo=true`).
async fn auto_restore(
    ctx: &Context,
    policy: &RollbackPolicy,
    status: &RollbackPolicyStatus,
    events: &Store<RollbackEvent>,
) {
    let ns = policy.namespace().unwrap_or_default();
    let own: Vec<_> = events
        .state()
        .into_iter()
        .filter(|e| e.namespace().as_deref() == Some(ns.as_str()))
        .collect();
    let api: Api<RollbackEvent> = Api::namespaced(ctx.client.clone(), &ns);
    for name in due_for_restore(policy, status, &own, Timestamp::now()) {
        let patch = json!({"metadata": {"annotations": {annotations::UNDO: "true"}}});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {
                tracing::info!(event = %name, namespace = %ns, "healthy for restoreAfter: restoring the traffic rung")
            }
            Err(error) => tracing::warn!(event = %name, %error, "requesting an automatic restore"),
        }
    }
}

/// Finished events of the policy beyond its historyLimit, oldest first (pure).
pub fn beyond_history(
    policy: &str,
    events: &[Arc<RollbackEvent>],
    limit: u32,
) -> Vec<Arc<RollbackEvent>> {
    let mut finished: Vec<_> = events
        .iter()
        .filter(|e| e.spec.policy_ref.name == policy)
        .filter(|e| e.status.as_ref().is_some_and(|s| s.phase.is_finished()))
        .cloned()
        .collect();
    finished.sort_by_key(|e| (e.creation_timestamp(), e.name_any()));
    let excess = finished.len().saturating_sub(limit as usize);
    finished.truncate(excess);
    finished
}

/// Deletes finished RollbackEvents beyond the policy's historyLimit. Best effort: a failure is
/// logged and retried at the next reconcile.
async fn prune_history(ctx: &Context, policy: &RollbackPolicy, events: &Store<RollbackEvent>) {
    let ns = policy.namespace().unwrap_or_default();
    let own: Vec<_> = events
        .state()
        .into_iter()
        .filter(|e| e.namespace().as_deref() == Some(ns.as_str()))
        .collect();
    let api: Api<RollbackEvent> = Api::namespaced(ctx.client.clone(), &ns);
    for old in beyond_history(&policy.name_any(), &own, policy.spec.history_limit) {
        let name = old.name_any();
        match api.delete(&name, &Default::default()).await {
            Ok(_) => tracing::info!(event = %name, namespace = %ns, "pruned beyond historyLimit"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(error) => tracing::warn!(event = %name, %error, "pruning an old event"),
        }
    }
}

/// Ready reason for a rung whose objects are missing; the policy is still evaluated.
pub const REFERENCE_MISSING: &str = "RungReferenceMissing";

/// The objects the ladder's rungs name that do not exist: routes, Services, the standby
/// Deployment, the revision `toRevision` asks for.
async fn missing_references(
    ctx: &Context,
    policy: &RollbackPolicy,
    pctx: &PolicyContext,
    target: Option<&Deployment>,
) -> Vec<String> {
    use crate::strategy::Kind;
    let ns = policy.namespace().unwrap_or_default();
    let mut wanted: Vec<(StrategyKind, Kind, String)> = vec![];
    let mut missing = vec![];
    let route = |r: &crate::api::RouteRef| match (&r.http_route, &r.virtual_service) {
        (Some(name), _) => Some((Kind::HttpRoute, name.clone())),
        (None, Some(name)) => Some((Kind::VirtualService, name.clone())),
        _ => None,
    };
    for rung in &policy.spec.strategies {
        let kind = rung.type_;
        if let Some(cb) = &rung.circuit_breaker {
            wanted.extend(route(&cb.route).map(|(k, n)| (kind, k, n)));
        }
        if let Some(ts) = &rung.traffic_shifting {
            wanted.extend(route(&ts.route).map(|(k, n)| (kind, k, n)));
        }
        if let Some(cut) = rung
            .emergency_shutdown
            .as_ref()
            .and_then(|e| e.cut_traffic.as_ref())
        {
            wanted.extend(route(cut).map(|(k, n)| (kind, k, n)));
        }
        if let Some(es) = &rung.environment_switch {
            wanted.push((kind, Kind::Service, es.service.clone()));
            let standby = ObjectRef::<Deployment>::new(&es.standby_ref).within(&ns);
            if pctx.deployments.get(&standby).is_none() {
                missing.push(format!(
                    "{kind}: standby Deployment {} not found",
                    es.standby_ref
                ));
            }
        }
        if let (Some(to), Some(d)) = (
            rung.version_rollback.as_ref().and_then(|v| v.to_revision),
            target,
        ) {
            let revisions: Vec<i64> = evaluator::owned_replica_sets(&pctx.replica_sets, d)
                .iter()
                .map(|rs| evaluator::revision(rs))
                .collect();
            if !revisions.contains(&to) {
                missing.push(format!(
                    "{kind}: revision {to} not in the Deployment's history {revisions:?}"
                ));
            }
        }
    }
    for (strategy, kind, name) in wanted {
        let api: Api<kube::api::DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), &ns, &kind.api_resource());
        match api.get_opt(&name).await {
            Ok(Some(_)) => {}
            Ok(None) => missing.push(format!("{strategy}: {} {name} not found", kind.as_str())),
            // An API without the kind (e.g. no Gateway API CRDs installed) answers 404 too.
            Err(kube::Error::Api(e)) if e.code == 404 => missing.push(format!(
                "{strategy}: {} {name} not found ({} not served)",
                kind.as_str(),
                kind.api_version()
            )),
            Err(error) => tracing::warn!(%error, "checking {} {name}", kind.as_str()),
        }
    }
    missing
}

/// Finalizer that lets the operator apply `onDelete` before a policy goes away.
pub const FINALIZER: &str = "rollback.frys.io/on-delete";

/// Adds or removes the finalizer (a JSON Patch guarded by the list as read).
async fn set_finalizer(ctx: &Context, policy: &RollbackPolicy, present: bool) -> Result<(), Error> {
    let mut finalizers: Vec<String> = policy.finalizers().to_vec();
    finalizers.retain(|f| f != FINALIZER);
    if present {
        finalizers.push(FINALIZER.into());
    }
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": policy.resource_version()}});
    let api: Api<RollbackPolicy> =
        Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    match api
        .patch(
            &policy.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `onDelete: Restore`: undoes every remediation of the policy still in effect, newest first.
/// A refused undo (the object changed since) is logged and left as it is: the person or tool
/// that changed it owns it now.
async fn restore_all(ctx: &Context, policy: &RollbackPolicy, events: &Store<RollbackEvent>) {
    let ns = policy.namespace().unwrap_or_default();
    let mut own: Vec<_> = events
        .state()
        .into_iter()
        .filter(|e| e.namespace().as_deref() == Some(ns.as_str()))
        .filter(|e| e.spec.policy_ref.name == policy.name_any())
        .collect();
    own.sort_by_key(|e| std::cmp::Reverse((e.creation_timestamp(), e.name_any())));
    let cluster = crate::strategy::Cluster::new(ctx.client.clone(), &ns);
    for event in own {
        let Some(status) = &event.status else {
            continue;
        };
        if status
            .actions
            .iter()
            .all(|a| a.undone || a.applied_at.is_none())
        {
            continue;
        }
        let name = event.name_any();
        match crate::strategy::undo(&cluster, &status.actions, false).await {
            Ok(_) => {
                tracing::warn!(event = %name, namespace = %ns, "restored on policy deletion (onDelete: Restore)")
            }
            Err(error) => {
                tracing::error!(event = %name, namespace = %ns, %error, "could not restore on policy deletion")
            }
        }
    }
}

/// The namespace carries the freeze annotation.
async fn namespace_frozen(ctx: &Context, ns: &str) -> bool {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    match api.get_opt(ns).await {
        Ok(Some(n)) => n
            .annotations()
            .get(annotations::FREEZE)
            .is_some_and(|v| v != "false"),
        Ok(None) => false,
        Err(error) => {
            tracing::warn!(%error, namespace = ns, "reading the namespace freeze annotation");
            false
        }
    }
}

/// Publishes a Kubernetes Event and logs at the matching level. Best effort: a failure to
/// record an Event never fails the reconcile.
async fn publish(
    ctx: &Context,
    policy: &RollbackPolicy,
    level: AlertLevel,
    reason: &str,
    message: String,
) {
    let name = policy.name_any();
    ctx.metrics
        .alerts
        .get_or_create(&crate::telemetry::metrics::AlertLabels {
            level: level.as_str(),
            reason: reason.to_owned(),
        })
        .inc();
    match level {
        AlertLevel::Info => tracing::info!(policy = %name, %reason, %message, "alert"),
        AlertLevel::Warning => tracing::warn!(policy = %name, %reason, %message, "alert"),
        AlertLevel::Critical | AlertLevel::Emergency => {
            tracing::error!(policy = %name, %reason, %message, level = %level, "alert")
        }
    }
    // Webhooks (policy.spec.notifications): sent in the background, never blocking here.
    let ns = policy.namespace().unwrap_or_default();
    drop(ctx.notifier.notify(
        &ctx.client,
        &ns,
        &policy.spec.notifications,
        crate::notify::Alert {
            level,
            reason: reason.to_owned(),
            message: message.clone(),
            policy: name.clone(),
            namespace: ns.clone(),
            environment: ctx.config.environment.clone(),
            time: Timestamp::now(),
        },
    ));
    let event = Event {
        type_: if level == AlertLevel::Info {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: reason.into(),
        note: Some(message.chars().take(1000).collect()),
        action: "Assess".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &policy.object_ref(&())).await {
        tracing::warn!(%error, policy = %name, "could not publish event");
    }
}

fn error_policy(policy: Arc<RollbackPolicy>, error: &Error, pctx: Arc<PolicyContext>) -> Action {
    tracing::warn!(policy = %policy.name_any(), %error, "policy reconcile failed");
    pctx.shared
        .metrics
        .reconcile_failed(NAME, error.metric_label());
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MetricSpec, Preset, Rung, StrategyKind, TargetRef};
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

    fn policy(name: &str, target: &str, created_secs: i64) -> RollbackPolicy {
        let mut p = RollbackPolicy::new(
            name,
            yaml_serde::from_str::<RollbackPolicySpec>(&format!(
                "targetRef: {{name: {target}}}\nmetrics: [{{name: errors, preset: errorRate}}]\nstrategies: [{{type: VersionRollback}}]"
            ))
            .unwrap(),
        );
        p.metadata.namespace = Some("shop".into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.creation_timestamp = Some(Time(
            Timestamp::from_second(1_700_000_000 + created_secs).unwrap(),
        ));
        p
    }

    #[test]
    fn spec_defaults_parse() {
        let p = policy("web", "web", 0);
        assert_eq!(
            p.spec.target_ref,
            TargetRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "web".into()
            }
        );
        assert_eq!(p.spec.consecutive_failures, 3);
        assert_eq!(
            p.spec.metrics[0],
            MetricSpec {
                name: "errors".into(),
                preset: Some(Preset::ErrorRate),
                query: None,
                warning: None,
                critical: None,
                direction: None,
                weight: None,
                class: None
            }
        );
        assert!(matches!(
            p.spec.strategies[..],
            [Rung {
                type_: StrategyKind::VersionRollback,
                ..
            }]
        ));
    }

    #[test]
    fn missing_target_is_explained() {
        let r = readiness(&policy("web", "web", 0), false, &[], "app");
        assert!(!r.ready);
        assert_eq!(r.reason, "TargetNotFound");
        assert_eq!(r.message, "Deployment web not found in namespace shop");
        assert!(readiness(&policy("web", "web", 0), true, &[], "app").ready);
    }

    #[test]
    fn second_policy_for_a_target_is_not_ready() {
        let first = Arc::new(policy("a-first", "web", 0));
        let second = Arc::new(policy("b-second", "web", 10));
        let other = Arc::new(policy("c-other", "api", 5));
        let all = vec![first.clone(), second.clone(), other.clone()];
        assert!(readiness(&first, true, &all, "app").ready);
        let r = readiness(&second, true, &all, "app");
        assert_eq!(r.reason, "DuplicateTarget");
        assert!(r.message.contains("a-first"), "{}", r.message);
        assert!(readiness(&other, true, &all, "app").ready);
    }

    #[test]
    fn same_age_ties_break_by_name() {
        let a = Arc::new(policy("a", "web", 0));
        let b = Arc::new(policy("b", "web", 0));
        let all = vec![a.clone(), b.clone()];
        assert!(readiness(&a, true, &all, "app").ready);
        assert!(!readiness(&b, true, &all, "app").ready);
    }

    #[test]
    fn history_keeps_the_newest_finished_events() {
        use crate::api::{EventPhase, RollbackEventStatus};
        let event = |name: &str, secs: i64, phase: Option<EventPhase>, policy: &str| {
            let mut e: RollbackEvent = serde_json::from_value(serde_json::json!({
                "apiVersion": "rollback.frys.io/v1alpha1", "kind": "RollbackEvent",
                "metadata": {"name": name},
                "spec": {"policyRef": {"name": policy}, "type": "Manual", "strategy": "VersionRollback", "reason": "r"}
            }))
            .unwrap();
            e.metadata.creation_timestamp =
                Some(Time(Timestamp::from_second(1_700_000_000 + secs).unwrap()));
            e.status = phase.map(|phase| RollbackEventStatus {
                phase,
                ..Default::default()
            });
            Arc::new(e)
        };
        let events = vec![
            event("e3", 3, Some(EventPhase::Failed), "web"),
            event("e1", 1, Some(EventPhase::Succeeded), "web"),
            event("e4", 4, Some(EventPhase::Executing), "web"),
            event("e2", 2, Some(EventPhase::Skipped), "web"),
            event("other", 0, Some(EventPhase::Succeeded), "api"),
        ];
        let names = |v: Vec<Arc<RollbackEvent>>| v.iter().map(|e| e.name_any()).collect::<Vec<_>>();
        assert_eq!(names(beyond_history("web", &events, 1)), ["e1", "e2"]);
        assert_eq!(
            names(beyond_history("web", &events, 3)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn unparseable_durations_are_reported() {
        let mut p = policy("web", "web", 0);
        p.spec.cooldown = Some("1x".into());
        let r = readiness(&p, true, &[], "app");
        assert_eq!(r.reason, "InvalidSpec");
        assert!(
            r.message
                .starts_with("spec.cooldown: invalid duration \"1x\""),
            "{}",
            r.message
        );
    }
}
