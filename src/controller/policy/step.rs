//! One engine step on a fresh evaluation: readings to signals, assessment, the guard's view of
//! the cluster, the decision, and the RollbackEvent it asks for.

use jiff::Timestamp;
use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Namespace},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use super::{Note, PolicyContext};
use crate::{
    api::{
        EffectiveSettings, EventPhase, LastRollback, PolicyRef, RollbackEvent, RollbackEventSpec,
        RollbackPolicy, RollbackPolicyStatus, annotations, conditions,
    },
    assess::{self, AssessInput, Assessment},
    controller::{
        Context, Error, POLICY_MANAGER, condition, evaluation, evaluation::Evaluation, evaluator,
        health, set_condition,
    },
    decide::{self, ClusterView, GuardSettings, PolicyState, Remediate, Tick},
    strategy::{Cluster, Remediation},
};

/// One engine step on a fresh evaluation: assess, decide, create the RollbackEvent it asks for,
/// and record the outcome in `status`. Returns what to publish as Kubernetes Events.
pub(super) async fn run(
    pctx: &PolicyContext,
    policy: &RollbackPolicy,
    target: Option<&Deployment>,
    effective: &EffectiveSettings,
    evaluation: &Evaluation,
    status: &mut RollbackPolicyStatus,
) -> Result<Vec<Note>, Error> {
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
                condition(
                    conditions::READY,
                    false,
                    conditions::INVALID_SPEC,
                    e.to_string(),
                ),
            );
            return Ok(vec![]);
        }
    };

    let mut readings = evaluation.readings.clone().unwrap_or_default();
    readings.extend(assess::alerts::readings(
        &policy.spec,
        &status.alerts,
        evaluation.at,
    ));
    let signals = assess::signals(&policy.spec, effective, &readings);
    let replica_sets = target
        .map(|d| pctx.replica_sets.owned(d))
        .unwrap_or_default();
    let target_state = health::target_state(target, &replica_sets);
    let mut state = PolicyState::from_status(status);
    let assessment = assess::assess_with_baselines(
        &AssessInput {
            signals: &signals,
            target: &target_state,
            failing_since: state.failing_since,
            now: evaluation.at,
        },
        &assess_settings,
        &pctx.evaluator.take_baselines(policy),
    );

    // A step that may remediate counts the budget and creates its event under one lock, with
    // the events this process created that the cache does not show yet: the budget holds for
    // incidents that open at the same moment. A healthy step cannot act and takes no lock.
    let may_act = state.failure_streak > 0
        || state.incident.is_some()
        || assessment.status != crate::api::HealthStatus::Healthy;
    // Read before the lock: a GET per failing policy would otherwise serialize them all.
    let namespace_frozen = state.failure_streak > 0 && namespace_frozen(ctx, &ns).await;
    let mut in_flight = match may_act {
        true => Some(pctx.decisions.lock().await),
        false => None,
    };
    let own_events = pctx.events_in(&ns);
    record_delivery(ctx, &ns, &name, &replica_sets, &own_events);
    // The guard's cluster view reads every policy and event: only a step that may act needs
    // it (done for every healthy step, it made each interval cost O(policies²)).
    let (events, (mut active_automatic, critical)) = match may_act {
        true => {
            let events = pctx.events.state();
            let view = health::cluster_view(&pctx.policies.state(), &events);
            (events, view)
        }
        false => (vec![], (0, vec![])),
    };
    if let Some(created) = in_flight.as_mut() {
        created.retain(|key, at| {
            at.elapsed() < std::time::Duration::from_secs(300)
                && !events.iter().any(|e| {
                    format!("{}/{}", e.namespace().unwrap_or_default(), e.name_any()) == *key
                })
        });
        active_automatic += created.len() as u32;
    }
    let guard = decide::verdict(
        &GuardSettings::from_config(&ctx.config),
        &ClusterView {
            active_automatic,
            operator_freeze: ctx.config.freeze,
            critical: &critical,
        },
        &evaluation::key(policy),
        namespace_frozen,
    );
    let active_event = state
        .incident
        .as_ref()
        .and_then(|i| i.active_event())
        .map(str::to_owned);
    // An acknowledgement may be annotated on the policy or on its Deployment.
    let ack = decide::acknowledgement(policy.annotations(), target.map(|d| d.annotations()));
    let tick = Tick {
        assessment: &assessment,
        now: evaluation.at,
        guard: &guard,
        ack,
        busy: health::busy_event(&name, &own_events, active_event.as_deref()),
    };

    // The incident's step finished (or vanished): learn its outcome first.
    let phase = match &active_event {
        Some(event) => Some(active_phase(ctx, &ns, &own_events, event).await?),
        None => None,
    };
    let decision = match phase {
        Some(Some(EventPhase::Succeeded)) => {
            decide::on_remediation_finished(&state, true, &tick, &settings)
        }
        // Gone counts as failed: only a person deletes an event before it finishes.
        Some(Some(EventPhase::Failed) | None) => {
            decide::on_remediation_finished(&state, false, &tick, &settings)
        }
        Some(Some(EventPhase::Skipped)) => decide::on_remediation_superseded(&state, &tick),
        _ => decide::decide(&state, &tick, &settings),
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
        // The budget is reserved under the lock; the reads and the create happen after it, so
        // simultaneous incidents do not wait for each other's API round trips.
        let key = format!("{ns}/{}", event_name(policy, action, at));
        if let Some(mut created) = in_flight.take() {
            created.insert(key.clone(), std::time::Instant::now());
        }
        let event = match create_event(ctx, policy, action, Some(&assessment), status, at).await {
            Ok(event) => event,
            Err(error) => {
                pctx.decisions.lock().await.remove(&key);
                return Err(error);
            }
        };
        state.attach_event(&event);
        status.last_rollback = Some(LastRollback {
            event,
            strategy: action.strategy,
            phase: EventPhase::Pending,
            time: Time(evaluation.at),
        });
    }
    drop(in_flight);
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

    tracing::debug!(status = %assessment.status, score = assessment.score,
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

/// The phase of the incident's active event. An event the cache does not hold (yet) is read
/// from the API server: only an event that is really gone counts as failed (None).
async fn active_phase(
    ctx: &Context,
    namespace: &str,
    cached: &[std::sync::Arc<RollbackEvent>],
    name: &str,
) -> Result<Option<EventPhase>, Error> {
    if let Some(phase) = health::event_phase(cached, name) {
        return Ok(Some(phase));
    }
    let api: Api<RollbackEvent> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(api
        .get_opt(name)
        .await?
        .map(|e| e.status.map(|s| s.phase).unwrap_or_default()))
}

/// Creates the RollbackEvent for a decided remediation, named `<policy>-<strategy>-<at>`; an
/// existing one of that name is taken as this one (a retried decision). A version rollback's
/// target is decided on the Deployment read now: the cache keeps no pod template.
pub(super) async fn create_event(
    ctx: &Context,
    policy: &RollbackPolicy,
    action: &Remediate,
    assessment: Option<&Assessment>,
    status: &RollbackPolicyStatus,
    at: Timestamp,
) -> Result<String, Error> {
    let ns = policy.namespace().unwrap_or_default();
    let name = event_name(policy, action, at);
    let escalated_from = action.escalated_from.and_then(|from| {
        status
            .last_rollback
            .as_ref()
            .filter(|l| l.strategy == from)
            .map(|l| l.event.clone())
    });
    // What a version rollback acts on is fixed now, not when it runs.
    let rollback_target = match Remediation::for_ladder(&policy.spec.strategies, action.strategy) {
        Ok(remediation) if !action.dry_run => {
            let cluster = Cluster::new(ctx.client.clone(), &ns);
            let name = &policy.spec.target_ref.name;
            remediation
                .decided_target(&cluster, name)
                .await
                .unwrap_or_else(|error| {
                    // The event's execution reports it (the planner refuses the same way).
                    tracing::info!(%error, "no rollback target at decision time");
                    None
                })
        }
        _ => None,
    };
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
                    decide::short_reason(action, a)
                }
                _ => action.reason.chars().take(256).collect(),
            },
            assessment: assessment.map(|a| a.for_event()),
            requested_by: Some(match action.kind {
                crate::api::EventType::Automatic => "frys-rollback".into(),
                _ => "annotation".into(),
            }),
            escalated_from,
            rollback_target,
            skip_verification: false,
            alerts: assess::alerts::causing(&policy.spec, &status.alerts, at),
        },
    );
    event.metadata.namespace = Some(ns.clone());
    event.metadata.owner_references =
        crate::controller::event::owner_reference(policy).map(|o| vec![o]);
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
    tracing::warn!(event = %name, strategy = %action.strategy, dry_run = action.dry_run,
        reason = %action.reason, "remediation decided");
    Ok(name)
}

/// `<policy>-<strategy>-<at>`: one event per incident and rung, so a retried decision finds it.
fn event_name(policy: &RollbackPolicy, action: &Remediate, at: Timestamp) -> String {
    format!(
        "{}-{}-{}",
        policy.name_any(),
        action.strategy.as_str().to_lowercase(),
        at.as_second()
    )
}

/// The namespace carries the freeze annotation: from the namespace cache, or by GET when the
/// cache does not know the namespace yet.
async fn namespace_frozen(ctx: &Context, ns: &str) -> bool {
    if let Some(frozen) = ctx.profiles.frozen(ns) {
        return frozen;
    }
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    match api.get_opt(ns).await {
        Ok(Some(n)) => annotations::is_frozen(n.annotations()),
        Ok(None) => false,
        Err(error) => {
            tracing::warn!(%error, namespace = ns, "reading the namespace freeze annotation");
            false
        }
    }
}

/// The delivery metrics (`telemetry::delivery`): the target's releases, and the verified
/// VersionRollbacks of this policy with the time from the bad release.
fn record_delivery(
    ctx: &Context,
    ns: &str,
    policy: &str,
    replica_sets: &[std::sync::Arc<crate::controller::ReplicaSetMeta>],
    events: &[std::sync::Arc<RollbackEvent>],
) {
    use crate::api::StrategyKind;
    let created = |rs: &crate::controller::ReplicaSetMeta| {
        rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
    };
    for rs in replica_sets {
        if let (Some(uid), Some(at)) = (rs.metadata.uid.as_deref(), created(rs)) {
            ctx.metrics.release_seen(ns, uid, at);
        }
    }
    for event in events.iter().filter(|e| {
        e.spec.policy_ref.name == policy && e.spec.strategy == StrategyKind::VersionRollback
    }) {
        let Some(status) = &event.status else {
            continue;
        };
        let (Some(uid), Some(completed)) = (event.metadata.uid.as_deref(), &status.completed_at)
        else {
            continue;
        };
        if status.phase != EventPhase::Succeeded {
            continue;
        }
        let released = event
            .spec
            .rollback_target
            .as_ref()
            .and_then(|t| t.from_revision.as_deref())
            .and_then(|r| {
                replica_sets
                    .iter()
                    .find(|rs| evaluator::revision(&**rs).to_string() == r)
            })
            .and_then(|rs| created(rs));
        ctx.metrics.restore_seen(ns, uid, completed.0, released);
    }
}
