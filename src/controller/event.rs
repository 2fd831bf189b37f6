//! The RollbackEvent reconciler: a phase machine per event. It adopts the event under its policy
//! (ownerReference, so events go away with their policy), applies the strategy (Pending →
//! Executing), verifies it (Verifying, the seed's six checks) and records the outcome
//! (Succeeded | Failed; Skipped under dry run). The policy reconciler decides what comes next.

use std::{sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use k8s_openapi::{
    api::apps::v1::{Deployment, ReplicaSet},
    apimachinery::pkg::apis::meta::v1::{OwnerReference, Time},
};
use kube::{
    Api, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use serde_json::json;

use super::{Context, EVENT_MANAGER, Error, Shutdown, evaluator, gitops, scoped_api};
use crate::{
    api::{
        EffectiveSettings, EventPhase, EventType, RollbackEvent, RollbackEventStatus,
        RollbackPolicy, VerificationReport, VerificationStatus, annotations, duration,
    },
    config,
    prometheus::PrometheusClient,
    strategy::{self, ApplyError, Cluster, Objects, Remediation},
    verify::{VerifyDeps, VerifyInput},
};

const NAME: &str = "event";

pub(super) fn controller(
    ctx: Arc<Context>,
    shutdown: Shutdown,
) -> (impl Stream<Item = ()>, Store<RollbackEvent>) {
    let events: Api<RollbackEvent> = scoped_api(&ctx.client, ctx.namespace.as_deref());
    let controller = Controller::new(events, watcher::Config::default());
    let store = controller.store();
    let stream = controller
        .with_config(
            kube::runtime::controller::Config::default().concurrency(concurrency(&ctx.config)),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .map(|result| {
            if let Err(error) = result {
                tracing::debug!(%error, "event controller event");
            }
        });
    (stream, store)
}

/// Events reconciled at once: at least as many as the guard lets remediate at once (up to
/// 1,024). A verification polls inside its reconcile, so with fewer slots the remediations the
/// guard admitted would wait for other events' verifications before their first patch.
fn concurrency(config: &config::OperatorConfig) -> u16 {
    match config.reconcile_concurrency {
        0 => 0,
        n => n.max(config.max_concurrent_remediations.min(1024) as u16),
    }
}

/// The ownerReference that ties an event to its policy.
pub fn owner_reference(policy: &RollbackPolicy) -> Option<OwnerReference> {
    let mut owner = policy.controller_owner_ref(&())?;
    // Deleting an event must never wait on the policy.
    owner.block_owner_deletion = Some(false);
    Some(owner)
}

#[tracing::instrument(skip_all, fields(
    event = %event.name_any(),
    namespace = event.namespace().unwrap_or_default(),
    policy = %event.spec.policy_ref.name,
    strategy = %event.spec.strategy,
))]
async fn reconcile(event: Arc<RollbackEvent>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started(NAME);
    let ns = event
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = event.name_any();
    if event.status.as_ref().is_some_and(|s| s.phase.is_finished())
        && !event.annotations().contains_key(annotations::UNDO)
        && !breaker_open(&event)
    {
        return Ok(Action::await_change());
    }
    // A phase machine must act on the latest status, not on a cache that may not have seen its
    // own last write yet (that would repeat a phase). The cached copy is the latest when it is
    // at this process's last write, or a new event nobody has written to; a copy at an earlier
    // write of ours waits for the watch to bring the later one; any other copy is read. Either
    // way every phase write is a compare-and-swap on the version acted on.
    let events: Api<RollbackEvent> = Api::namespaced(ctx.client.clone(), &ns);
    let event = match ctx.event_versions.freshness(&event) {
        Freshness::Latest => Arc::unwrap_or_clone(event),
        // The requeue is a safety net: the later write's watch event comes first.
        Freshness::Behind => return Ok(Action::requeue(Duration::from_secs(5))),
        Freshness::Unknown => match events.get_opt(&name).await? {
            Some(event) => event,
            None => {
                ctx.event_versions.forget(&ns, &name);
                return Ok(Action::await_change());
            }
        },
    };
    // Nothing below may act on, or re-sign, a record the operator did not sign.
    if let Err(why) = ctx.keys.check(&event) {
        return super::digest::refuse(&ctx, &event, &events, &why).await;
    }
    let mut status = event.status.clone().unwrap_or_default();
    let phase = event.status.as_ref().map(|s| s.phase);
    let mut writer = StatusWriter::new(&ctx, &events, &event);
    if let Some(value) = event.annotations().get(annotations::UNDO).cloned() {
        return undo(&ctx, &event, &mut writer, &mut status, &value).await;
    }
    if breaker_open(&event) {
        return half_open_when_due(&ctx, &event, &mut writer, &mut status).await;
    }
    if phase.is_some_and(EventPhase::is_finished) {
        return Ok(Action::await_change());
    }
    let policy_name = &event.spec.policy_ref.name;
    let Some(policy) = policy_of(&ctx, &ns, policy_name).await? else {
        let message = format!("RollbackPolicy {policy_name} not found in namespace {ns}");
        tracing::warn!(%message, "event refused");
        finish(&mut status, EventPhase::Failed, message);
        writer.write(&status).await?;
        return Ok(Action::await_change());
    };
    // Its ladder and timeouts as its environment profile completes them.
    let policy = ctx.profiles.completed(&policy);

    if let Some(owner) = owner_reference(&policy)
        && !event.owner_references().iter().any(|o| o.uid == owner.uid)
    {
        let mut owners = event.owner_references().to_vec();
        owners.push(owner);
        // The resourceVersion makes this a compare-and-swap: a concurrent change retries.
        let patch = json!({"metadata": {"ownerReferences": owners, "resourceVersion": event.resource_version()}});
        let adopted = events
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        writer.seen(&adopted);
    }

    if phase.is_none() {
        let drill_refused = match event.spec.type_ {
            EventType::Drill => super::drill::drills_allowed(&ctx, &ns).await.err(),
            _ => None,
        };
        if let Some(why) = drill_refused {
            tracing::warn!(%why, "drill event refused");
            finish(
                &mut status,
                EventPhase::Failed,
                format!("drill refused: {why}"),
            );
            writer.write(&status).await?;
            return Ok(Action::await_change());
        }
        // Dry run records the decision and changes nothing; an emergency stop ignores it.
        if policy.spec.dry_run && event.spec.type_ != EventType::Emergency {
            tracing::info!("event skipped (dry run)");
            finish(
                &mut status,
                EventPhase::Skipped,
                "dry run: decided, not applied (spec.dryRun is true)".into(),
            );
            writer.write(&status).await?;
            return Ok(Action::await_change());
        }
        // Straight on to execution, without a write of its own: execution records its plan
        // (compare-and-swap) before it changes anything, and in an incident storm every write
        // waits on the API budget.
        tracing::info!("event accepted");
        status.phase = EventPhase::Pending;
        status.message = Some("accepted".into());
    }
    match phase.unwrap_or(EventPhase::Pending) {
        EventPhase::Pending | EventPhase::Executing => {
            // Suspend holds every event, emergencies too (DESIGN: they bypass all but suspend).
            if policy.spec.suspend {
                status.message = Some("waiting: the policy is suspended".into());
                writer.write(&status).await?;
                return Ok(Action::requeue(Duration::from_secs(10)));
            }
            execute(&ctx, &event, &policy, &mut writer, &mut status).await?;
            ctx.keys.seal(&event, &mut status);
            writer.write(&status).await?;
            // The watch brings this write back, and with it the next phase, from the cache
            // (an immediate requeue would read the event again); the requeue is a safety net.
            Ok(Action::requeue(Duration::from_secs(5)))
        }
        EventPhase::Verifying => verify(&ctx, &event, &policy, &mut writer, &mut status).await,
        _ => Ok(Action::await_change()),
    }
}

/// Applies the strategy. Planned actions are recorded before they are applied, so a crash in
/// between leaves a record to resume from; a resumed plan that finds everything applied keeps
/// that record. Each step is bounded by the policy's rollbackTimeout.
async fn execute(
    ctx: &Context,
    event: &RollbackEvent,
    policy: &RollbackPolicy,
    writer: &mut StatusWriter<'_>,
    status: &mut RollbackEventStatus,
) -> Result<(), Error> {
    let ns = event.namespace().unwrap_or_default();
    let strategy = event.spec.strategy;
    let decided = event.spec.rollback_target.as_ref();
    let mut remediation = match Remediation::for_ladder(&policy.spec.strategies, strategy) {
        Ok(r) => r,
        Err(message) => {
            finish(status, EventPhase::Failed, message);
            return Ok(());
        }
    };
    let timeout = config::effective(&policy.spec, &ctx.config)
        .rollback_timeout
        .and_then(|d| d.get().ok())
        .unwrap_or(ctx.config.rollback_timeout);
    let resumed = status.phase == EventPhase::Executing;
    status.phase = EventPhase::Executing;
    status
        .started_at
        .get_or_insert_with(|| Time(Timestamp::now()));
    status.message = Some(format!("applying {strategy}"));

    let cluster = Cluster::new(ctx.client.clone(), &ns)
        .with_fence(ctx.fence.clone())
        .with_origin(origin(ctx, event));
    let target = &policy.spec.target_ref.name;
    let deadline = tokio::time::Instant::now() + timeout;
    let timed_out = || {
        format!(
            "{strategy} did not finish within rollbackTimeout {}",
            duration::format(timeout)
        )
    };
    // One read of the target serves the superseded check, the GitOps hold and the first plan:
    // in an incident storm every repeated GET waits on the API budget.
    let read = match decided.is_some() || gitops::wants_hold(policy, strategy) {
        true => Some(cluster.get(strategy::Kind::Deployment, target).await),
        false => None,
    };
    let deployment = read.as_ref().and_then(|r| r.as_ref().ok()).cloned();
    if let Some(decided) = decided
        && let Some(deployment) = &deployment
    {
        if let Some(why) = strategy::superseded(decided, deployment) {
            tracing::warn!(%why, "rollback superseded by a newer release");
            finish(status, EventPhase::Skipped, why);
            return Ok(());
        }
        // Still the release judged bad: go to the decided revision. Otherwise the rollback
        // is in place already (a resumed run), and the planner finds nothing to do.
        let running = deployment
            .pointer("/spec/template")
            .cloned()
            .unwrap_or_default();
        if strategy::template_hash(&running) == decided.from_template {
            remediation = remediation.pinned(decided);
        }
    }
    // A conflict (someone changed an object between our read and write: an HPA, a person, a
    // GitOps sync) wrote nothing: observe again and re-plan, until rollbackTimeout. What was
    // applied before the conflict stays recorded, as for a resumed run.
    let mut resumed = resumed;
    let mut backoff = Duration::from_millis(100);
    let known = strategy::Known::new(&cluster, strategy::Kind::Deployment, target, read);
    let plan = loop {
        let plan = match tokio::time::timeout_at(deadline, remediation.plan(&known, target)).await {
            Ok(Ok(plan)) => plan,
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot remediate");
                let mut message = format!("{strategy} refused: {error}");
                if let strategy::Error::BadTemplateReapplied { .. } = error {
                    let by = gitops::template_writer(&cluster, target).await;
                    message = format!(
                        "{message}. Re-applied by field manager {}: {}",
                        by.manager,
                        crate::gitops::managers::advice(&by.manager)
                    );
                    status.reapplied_by = Some(by);
                }
                finish(status, EventPhase::Failed, message);
                return Ok(());
            }
            Err(_) => {
                finish(status, EventPhase::Failed, timed_out());
                return Ok(());
            }
        };
        if plan.is_noop() {
            break plan;
        }
        // The owner's sync is held before the step: a self-healing sync would put the bad
        // release back while it runs. Once per event; never fatal.
        if status.gitops.is_none() {
            hold_sync(
                ctx,
                event,
                policy,
                &cluster,
                deployment.as_ref(),
                writer,
                status,
            )
            .await?;
        }
        let held: Vec<_> = status
            .actions
            .iter()
            .filter(|a| strategy::is_hold(a))
            .cloned()
            .collect();
        let own = |actions: &[crate::api::Action]| -> Vec<crate::api::Action> {
            actions
                .iter()
                .filter(|a| !strategy::is_hold(a))
                .cloned()
                .collect()
        };
        if own(&status.actions).is_empty() || !resumed {
            status.actions = [held.clone(), plan.actions()].concat();
        }
        // A resumed run keeps the record of the steps its predecessor applied.
        let recorded = if resumed {
            own(&status.actions)
        } else {
            vec![]
        };
        let planned = plan.actions();
        let record = |performed| {
            [
                held.clone(),
                strategy::resume_actions(&recorded, &planned, performed, Timestamp::now()),
            ]
            .concat()
        };
        ctx.keys.seal(event, status);
        writer.write(status).await?;
        match tokio::time::timeout_at(deadline, cluster.execute(&plan)).await {
            Ok(Ok(actions)) => {
                failpoint("abort-after-apply");
                status.actions = record(actions);
                break plan;
            }
            Ok(Err(ApplyError { actions, error }))
                if error.is_conflict() && tokio::time::Instant::now() + backoff < deadline =>
            {
                tracing::info!(%error, retry_in = ?backoff, "conflict: observing again");
                status.actions = record(actions);
                status.message = Some(format!("applying {strategy}: retrying after {error}"));
                ctx.keys.seal(event, status);
                writer.write(status).await?;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                resumed = true;
            }
            Ok(Err(ApplyError { actions, error })) => {
                tracing::error!(%error, "remediation failed");
                status.actions = record(actions);
                finish(
                    status,
                    EventPhase::Failed,
                    format!("{strategy} failed: {error}"),
                );
                return Ok(());
            }
            Err(_) => {
                finish(status, EventPhase::Failed, timed_out());
                return Ok(());
            }
        }
    };
    if plan.is_noop() && resumed {
        // Resumed after a crash between applying and recording: the changes are in place
        // (the plan finds nothing to do), so the recorded actions stand.
        for action in status.actions.iter_mut().filter(|a| a.applied_at.is_none()) {
            action.applied_at = Some(Time(Timestamp::now()));
        }
    }
    tracing::info!(summary = %plan.summary, "applied");
    status.phase = EventPhase::Verifying;
    status.message = Some(plan.summary);
    Ok(())
}

/// Holds the GitOps owner's sync (see `gitops`): the hold's action is recorded before it is
/// performed, like a step's, and comes first, so undo resumes the sync last. A refusal (403,
/// owner missing) is recorded in `status.gitops` and the remediation goes on.
async fn hold_sync(
    ctx: &Context,
    event: &RollbackEvent,
    policy: &RollbackPolicy,
    cluster: &Cluster,
    deployment: Option<&serde_json::Value>,
    writer: &mut StatusWriter<'_>,
    status: &mut RollbackEventStatus,
) -> Result<(), Error> {
    if !gitops::wants_hold(policy, event.spec.strategy) {
        return Ok(());
    }
    let Some(deployment) = deployment else {
        return Ok(());
    };
    let plan = gitops::plan_hold(
        cluster,
        policy,
        &ctx.config.argocd_namespace,
        &event.name_any(),
        event.spec.strategy,
        deployment,
    )
    .await;
    // A run that died around the hold left its action recorded but not stamped.
    let recorded = status.actions.iter().position(strategy::is_hold);
    match plan {
        None => return Ok(()),
        Some(gitops::HoldPlan::Report(hold)) if recorded.is_some() => {
            // Performed before the crash: the recorded state before it stands.
            let action = &mut status.actions[recorded.unwrap_or_default()];
            action.applied_at.get_or_insert(Time(Timestamp::now()));
            status.gitops = Some(crate::api::GitopsHold {
                held: true,
                message: action.summary.clone(),
                ..hold
            });
        }
        Some(gitops::HoldPlan::Report(hold)) => {
            tracing::warn!(message = %hold.message, "GitOps sync not held");
            status.gitops = Some(hold);
        }
        Some(gitops::HoldPlan::Hold(change, mut hold)) => {
            if let Some(i) = recorded {
                status.actions.remove(i);
            }
            status.actions.insert(0, change.action.clone());
            ctx.keys.seal(event, status);
            writer.write(status).await?;
            match cluster.perform(&change).await {
                Ok(action) => {
                    tracing::warn!(summary = %action.summary, "GitOps sync held");
                    status.actions[0] = action;
                }
                Err(strategy::Error::NotLeader(e)) => return Err(e.into()),
                Err(error) => {
                    tracing::warn!(%error, "GitOps sync not held");
                    status.actions.remove(0);
                    hold.held = false;
                    hold.message = gitops::hold_failed(&hold, &error);
                }
            }
            status.gitops = Some(hold);
        }
    }
    ctx.keys.seal(event, status);
    writer.write(status).await?;
    Ok(())
}

/// Verifies the applied step once the stabilization delay has passed.
async fn verify(
    ctx: &Context,
    event: &RollbackEvent,
    policy: &RollbackPolicy,
    writer: &mut StatusWriter<'_>,
    status: &mut RollbackEventStatus,
) -> Result<Action, Error> {
    let effective = config::effective(&policy.spec, &ctx.config);
    let delay = effective
        .stabilization_delay
        .as_ref()
        .and_then(|d| d.get().ok())
        .unwrap_or(ctx.config.stabilization_delay);
    let applied_at = status
        .actions
        .iter()
        .filter_map(|a| a.applied_at.as_ref())
        .map(|t| t.0)
        .max()
        .or(status.started_at.as_ref().map(|t| t.0))
        .unwrap_or_else(Timestamp::now);
    if event.spec.skip_verification && event.spec.type_ == EventType::Drill {
        let message = format!(
            "{} applied (drill without verification)",
            event.spec.strategy
        );
        finish(status, EventPhase::Succeeded, message);
        writer.write(status).await?;
        return Ok(Action::await_change());
    }
    let waited = Timestamp::now().duration_since(applied_at).unsigned_abs();
    if waited < delay {
        return Ok(Action::requeue(delay - waited));
    }
    let report =
        run_verification(ctx, event, policy, &effective, applied_at, &status.actions).await?;
    // Partial (only dependency, consistency or traffic checks failing) is not a failed step:
    // the event succeeds and says what to look at; Failed escalates.
    let passed = report.overall_status != VerificationStatus::Failed;
    let message = if report.overall_status == VerificationStatus::Passed {
        format!("{} applied and verified", event.spec.strategy)
    } else if passed {
        format!(
            "{} applied; verification partial: {}",
            event.spec.strategy,
            report.recommendations.join(" ")
        )
    } else {
        format!(
            "{} applied; verification failed: {}",
            event.spec.strategy,
            report.recommendations.join(" ")
        )
    };
    status.verification = Some(report);
    finish(
        status,
        if passed {
            EventPhase::Succeeded
        } else {
            EventPhase::Failed
        },
        message,
    );
    writer.write(status).await?;
    Ok(Action::await_change())
}

/// Lists what the Deployment's selector selects (its `matchLabels`; the owner is checked too).
fn selected_by(deployment: &Deployment) -> ListParams {
    let labels = deployment
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        });
    match labels {
        Some(l) if !l.is_empty() => ListParams::default().labels(&l),
        _ => ListParams::default(),
    }
}

/// The seed's six checks (see `crate::verify`); they poll until the verification timeout.
async fn run_verification(
    ctx: &Context,
    event: &RollbackEvent,
    policy: &RollbackPolicy,
    effective: &EffectiveSettings,
    completed_at: Timestamp,
    actions: &[crate::api::Action],
) -> Result<VerificationReport, Error> {
    let ns = event.namespace().unwrap_or_default();
    let target = &policy.spec.target_ref.name;
    let remediation = match Remediation::for_ladder(&policy.spec.strategies, event.spec.strategy) {
        Ok(r) => r,
        Err(message) => return Err(Error::Invalid(message)),
    };
    // Signals are read from the policy's Prometheus; without one those checks are skipped.
    let source = match evaluator::policy_endpoint(ctx, policy).await {
        Ok(endpoint) => {
            Some(PrometheusClient::new(&endpoint).map_err(|e| Error::Invalid(e.to_string()))?)
        }
        Err(error) => {
            tracing::warn!(reason = error.reason, message = %error.message, "verifying without Prometheus");
            None
        }
    };
    let deployment = Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
        .get_opt(target)
        .await?;
    let names = match &deployment {
        Some(d) => replica_set_names(ctx, d).await?,
        None => vec![],
    };
    let pod_regex = crate::prometheus::pod_regex(&names);
    let input = VerifyInput {
        namespace: &ns,
        target,
        deployment: deployment.as_ref(),
        policy: &policy.spec,
        effective,
        remediation: &remediation,
        completed_at,
        expected_weights: crate::verify::expected_weights(actions),
        pod_regex: pod_regex.as_deref(),
        health_check_url: ctx.config.health_check_url.as_deref(),
    };
    let deps = VerifyDeps {
        client: ctx.client.clone(),
        metrics: source.as_ref(),
        http: &ctx.http,
        concurrency: ctx.config.verification_concurrency.max(1),
        allow_probe_urls: &ctx.config.allow_probe_urls,
    };
    Ok(crate::verify::verify(&input, &deps).await)
}

/// The names of the ReplicaSets `deployment` owns: from the policy controller's index once it
/// has synced and knows them, else listed (metadata only, by the Deployment's selector: a
/// namespace-wide list of full objects for every verification was the heaviest read of an
/// incident storm).
async fn replica_set_names(ctx: &Context, deployment: &Deployment) -> Result<Vec<String>, Error> {
    let cached = ctx
        .replica_set_cache
        .get()
        .filter(|index| index.is_ready())
        .map(|index| index.owned(deployment))
        .unwrap_or_default();
    if !cached.is_empty() {
        return Ok(cached.iter().map(|rs| rs.name_any()).collect());
    }
    let ns = deployment.namespace().unwrap_or_default();
    let listed = Api::<ReplicaSet>::namespaced(ctx.client.clone(), &ns)
        .list_metadata(&selected_by(deployment))
        .await?;
    Ok(listed
        .items
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == deployment.metadata.uid.as_ref())
        })
        .map(|rs| rs.name_any())
        .collect())
}

/// `rollback.frys.io/undo=true|force` on a finished event: restores the state its actions
/// recorded, last first. Without `force` it refuses when an object changed since (a person or a
/// GitOps tool may have fixed things differently). The annotation is removed once handled.
async fn undo(
    ctx: &Context,
    event: &RollbackEvent,
    writer: &mut StatusWriter<'_>,
    status: &mut RollbackEventStatus,
    value: &str,
) -> Result<Action, Error> {
    let name = event.name_any();
    let ns = event.namespace().unwrap_or_default();
    if !status.phase.is_finished() {
        // Handled once the event has finished; the annotation stays until then.
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let message = match value {
        "true" | "force" if status.actions.iter().all(|a| a.undone) => {
            "undo: nothing to undo (no action, or all undone already)".to_string()
        }
        "true" | "force" => {
            let cluster = Cluster::new(ctx.client.clone(), &ns)
                .with_fence(ctx.fence.clone())
                .with_origin(origin(ctx, event));
            match strategy::undo(&cluster, &status.actions, value == "force").await {
                Ok(actions) => {
                    status.actions = actions;
                    status.undo_refused = None;
                    tracing::warn!("undone");
                    format!("undone: {} action(s) restored", status.actions.len())
                }
                Err(ApplyError { actions, error }) => {
                    status.actions = actions;
                    status.undo_refused = Some(error.to_string());
                    tracing::warn!(%error, "undo refused");
                    format!(
                        "undo refused: {error} (annotate rollback.frys.io/undo=force to overwrite)"
                    )
                }
            }
        }
        other => format!("undo: unknown value {other:?} (use true or force)"),
    };
    status.message = Some(message);
    ctx.keys.seal(event, status);
    writer.write(status).await?;
    let remove = json!({"metadata": {"annotations": {annotations::UNDO: null}}});
    writer
        .events
        .patch(&name, &PatchParams::default(), &Patch::Merge(remove))
        .await?;
    Ok(Action::await_change())
}

/// The event's policy from the policy controller's cache (a spec a watch event behind is no
/// staler than the one its decision was made on), read when the cache does not hold it.
async fn policy_of(ctx: &Context, ns: &str, name: &str) -> Result<Option<RollbackPolicy>, Error> {
    let cached = ctx
        .policy_cache
        .get()
        .and_then(|store| store.get(&ObjectRef::new(name).within(ns)));
    if let Some(policy) = cached {
        return Ok(Some(Arc::unwrap_or_clone(policy)));
    }
    let policies: Api<RollbackPolicy> = Api::namespaced(ctx.client.clone(), ns);
    Ok(policies.get_opt(name).await?)
}

/// The resourceVersions of each active event as this process wrote them. A cached event at the
/// last of them shows the last write, so the phase machine need not read it again; one at an
/// earlier of them is a watch event behind our own write, which the watch brings next.
#[derive(Default)]
pub struct Versions(std::sync::Mutex<std::collections::HashMap<(String, String), Written>>);

/// This process's writes of one event, newest last.
#[derive(Default)]
struct Written(std::collections::VecDeque<String>);

/// How a cached event stands against this process's writes of it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// At our last write, or a new event nobody has written to: act on it.
    Latest,
    /// At an earlier write of ours: a later one exists, and its watch event triggers another
    /// reconcile.
    Behind,
    /// Written by someone else, or not by this process (a restart): read it.
    Unknown,
}

/// Writes remembered per event: an event is written a handful of times while it runs.
const WRITES_KEPT: usize = 8;

impl Versions {
    fn key(event: &RollbackEvent) -> (String, String) {
        (event.namespace().unwrap_or_default(), event.name_any())
    }

    pub(crate) fn freshness(&self, event: &RollbackEvent) -> Freshness {
        let versions = self.0.lock().expect("lock");
        let Some(version) = event.metadata.resource_version.as_ref() else {
            return Freshness::Unknown;
        };
        match versions.get(&Self::key(event)) {
            Some(Written(written)) if written.back() == Some(version) => Freshness::Latest,
            Some(Written(written)) if written.contains(version) => Freshness::Behind,
            Some(_) => Freshness::Unknown,
            None if event.status.is_none() => Freshness::Latest,
            None => Freshness::Unknown,
        }
    }

    /// After a write: a finished event is forgotten (its reconciles read it again).
    fn record(&self, event: &RollbackEvent) {
        let mut versions = self.0.lock().expect("lock");
        let finished = event.status.as_ref().is_some_and(|s| s.phase.is_finished());
        match (&event.metadata.resource_version, finished) {
            (Some(version), false) => {
                let Written(written) = versions.entry(Self::key(event)).or_default();
                written.push_back(version.clone());
                if written.len() > WRITES_KEPT {
                    written.pop_front();
                }
            }
            _ => {
                versions.remove(&Self::key(event));
            }
        }
    }

    fn forget(&self, ns: &str, name: &str) {
        let key = (ns.to_owned(), name.to_owned());
        self.0.lock().expect("lock").remove(&key);
    }
}

/// The event a webhook call is made for, as its body names it.
fn origin(ctx: &Context, event: &RollbackEvent) -> strategy::Origin {
    strategy::Origin {
        policy: event.spec.policy_ref.name.clone(),
        event: event.name_any(),
        event_uid: event.uid().unwrap_or_default(),
        reason: event.spec.reason.clone(),
        environment: ctx.config.environment.clone(),
    }
}

/// A succeeded rung that half-opens (a circuit breaker) whose change is still in place.
fn breaker_open(event: &RollbackEvent) -> bool {
    strategy::restore_of(event.spec.strategy)
        .half_open
        .is_some()
        && event.status.as_ref().is_some_and(|s| {
            s.phase == EventPhase::Succeeded && s.actions.iter().any(|a| !a.undone)
        })
}

/// Half-opens a circuit breaker once its `openDuration` has passed: the route's recorded
/// weights come back (refused if the route changed since), and the policy's next evaluations
/// re-check the target: still failing, the engine escalates to the next rung.
async fn half_open_when_due(
    ctx: &Context,
    event: &RollbackEvent,
    writer: &mut StatusWriter<'_>,
    status: &mut RollbackEventStatus,
) -> Result<Action, Error> {
    let ns = event.namespace().unwrap_or_default();
    let kind = event.spec.strategy;
    // The rung's openDuration, or the kind's default when the policy (or its rung) is gone.
    let open = policy_of(ctx, &ns, &event.spec.policy_ref.name)
        .await?
        .and_then(|p| {
            Remediation::for_ladder(&ctx.profiles.completed(&p).spec.strategies, kind).ok()
        })
        .and_then(|r| r.half_open_after())
        .or(strategy::restore_of(kind).half_open)
        .unwrap_or(strategy::DEFAULT_OPEN_DURATION);
    let opened_at = status
        .actions
        .iter()
        .filter_map(|a| a.applied_at.as_ref())
        .map(|t| t.0)
        .max()
        .unwrap_or_else(Timestamp::now);
    let elapsed = Timestamp::now().duration_since(opened_at).unsigned_abs();
    if elapsed < open {
        return Ok(Action::requeue(open - elapsed));
    }
    let cluster = Cluster::new(ctx.client.clone(), &ns).with_fence(ctx.fence.clone());
    let message = match strategy::half_open(&cluster, &status.actions).await {
        Ok(actions) => {
            status.actions = actions;
            tracing::info!("circuit half-open: traffic restored");
            format!(
                "half-open after {}: traffic restored to the target; the policy re-checks it",
                duration::format(open)
            )
        }
        Err(ApplyError { actions, error }) => {
            status.actions = actions;
            tracing::warn!(%error, "half-open refused");
            format!("half-open refused: {error}")
        }
    };
    status.message = Some(message);
    ctx.keys.seal(event, status);
    writer.write(status).await?;
    Ok(Action::await_change())
}

/// Test-only crash points: `FRYS_FAILPOINT=<name>` aborts the process there, so tests can
/// show that a restarted operator resumes without repeating work. Compiled in only with the
/// `failpoints` feature (the integration tests' build), so a release binary has none.
#[cfg(feature = "failpoints")]
fn failpoint(name: &str) {
    if std::env::var("FRYS_FAILPOINT").is_ok_and(|v| v == name) {
        tracing::error!(failpoint = name, "failpoint reached: aborting (test only)");
        std::process::abort();
    }
}

/// Without the `failpoints` feature a failpoint does nothing.
#[cfg(not(feature = "failpoints"))]
fn failpoint(_name: &str) {}

/// Ends an event: phase, message, completion time and duration.
fn finish(status: &mut RollbackEventStatus, phase: EventPhase, message: String) {
    let now = Timestamp::now();
    let started = status.started_at.as_ref().map(|t| t.0).unwrap_or(now);
    let elapsed = now.duration_since(started).unsigned_abs();
    status.phase = phase;
    status.message = Some(message);
    status.started_at.get_or_insert(Time(started));
    status.completed_at = Some(Time(now));
    status.duration_ms = Some(elapsed.as_millis() as u64);
    status.duration = Some(duration::format(std::time::Duration::from_secs(
        elapsed.as_secs(),
    )));
}

/// Writes an event's status as compare-and-swap on the resourceVersion the phase machine read:
/// a phase is only ever advanced from the state it was decided on, so two writers (a deposed
/// leader, a stale cache) cannot both move it. The fence is checked before every write.
struct StatusWriter<'a> {
    events: Api<RollbackEvent>,
    name: String,
    resource_version: Option<String>,
    fence: crate::leader::Fence,
    versions: &'a Versions,
}

impl<'a> StatusWriter<'a> {
    fn new(ctx: &'a Context, events: &Api<RollbackEvent>, event: &RollbackEvent) -> Self {
        Self {
            events: events.clone(),
            name: event.name_any(),
            resource_version: event.resource_version(),
            fence: ctx.fence.clone(),
            versions: &ctx.event_versions,
        }
    }

    /// The object after a change of our own: later writes compare against it.
    fn seen(&mut self, event: &RollbackEvent) {
        self.resource_version = event.resource_version();
        self.versions.record(event);
    }

    /// The whole status (this controller owns every field of it), or a 409 when the event
    /// changed since it was read: the reconcile then starts over from a fresh read.
    async fn write(&mut self, status: &RollbackEventStatus) -> Result<(), Error> {
        self.fence.check()?;
        let patch = json!({
            "apiVersion": RollbackEvent::api_version(&()),
            "kind": RollbackEvent::kind(&()),
            "metadata": {"resourceVersion": self.resource_version},
            "status": status,
        });
        let written = self
            .events
            .patch_status(
                &self.name,
                &PatchParams::apply(EVENT_MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await?;
        self.seen(&written);
        Ok(())
    }
}

fn error_policy(event: Arc<RollbackEvent>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(NAME, error.metric_label());
    if error.is_conflict() {
        // Someone changed the event since it was read: start over from a fresh read.
        tracing::info!(event = %event.name_any(), "event changed while reconciling: re-reading");
        return Action::requeue(Duration::from_millis(200));
    }
    tracing::warn!(event = %event.name_any(), %error, "event reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
