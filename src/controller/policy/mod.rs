//! The RollbackPolicy reconciler: the wiring (watches, caches, the evaluator) and the reconcile
//! that runs each concern in turn. Each concern has its own file:
//! - `readiness`: whether the policy can protect its target (spec, queries, one policy per
//!   target, the rungs' references);
//! - `manual`: trigger and emergency annotations;
//! - `step`: one engine step on a fresh evaluation, and the RollbackEvent it creates;
//! - `housekeeping`: history pruning and `autoRestore`;
//! - `lifecycle`: the finalizer and `onDelete`;
//! - `owner`: the target's GitOps owner and re-applied templates in status;
//! - `alerts`: Kubernetes Events, webhooks and the alert metric.

pub(super) mod alerts;
mod housekeeping;
mod lifecycle;
mod manual;
mod owner;
mod readiness;
mod step;
mod targets;

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        finalizer::{self, finalizer},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde_json::json;

use super::{
    Context, Error, POLICY_MANAGER, ReplicaSetMeta, Shutdown, condition, evaluator::Evaluator,
    replica_sets::ReplicaSetIndex, scoped_api, set_condition,
};
use crate::{
    api::{AlertLevel, RollbackEvent, RollbackPolicy, RollbackPolicyStatus, conditions},
    config, decide,
};
use jiff::Timestamp;

const NAME: &str = "policy";
/// How long an evaluated policy goes without a reconcile before one is scheduled anyway (its
/// evaluator triggers stopped: the endpoint is stuck, or the evaluation is not due).
const RESYNC: Duration = Duration::from_secs(300);

/// What the policy reconciler reads besides the shared context: the caches and the evaluator.
struct PolicyContext {
    shared: Arc<Context>,
    policies: Store<RollbackPolicy>,
    deployments: Store<Deployment>,
    replica_sets: Arc<ReplicaSetIndex>,
    events: Store<RollbackEvent>,
    evaluator: Arc<Evaluator>,
    /// The cached policies by target.
    targets: Arc<targets::TargetIndex>,
    /// Per policy, the resourceVersion and status hash of this operator's last status write:
    /// a cached copy that shows neither is older than that write (or someone else wrote since).
    written: Mutex<HashMap<String, (Option<String>, u64)>>,
    /// When the policy-wide gauges and `written` were last swept (they cost O(policies)).
    last_sweep: Mutex<Option<(Instant, usize)>>,
    /// Automatic events created but perhaps not in the events cache yet, and the lock that
    /// makes counting the remediation budget and creating an event one step: without it,
    /// simultaneous incidents would all see the same room (see `step::run`).
    decisions: tokio::sync::Mutex<HashMap<String, Instant>>,
    /// The targets' GitOps owners, looked up at most once a minute per policy.
    owners: super::gitops::OwnerCache,
    /// Per policy, the rung references read from the API server and found present, and when
    /// (see `readiness::missing_references`).
    references: Mutex<HashMap<String, (String, Instant)>>,
}

impl PolicyContext {
    /// The policy as the engine must see it: the cached copy, unless it lags this operator's
    /// own last status write, then a fresh read (a step on an older status would count a
    /// streak twice or open a second incident).
    async fn fresh(&self, policy: Arc<RollbackPolicy>) -> Result<Arc<RollbackPolicy>, Error> {
        let stale = {
            let written = self.written.lock().expect("lock");
            written
                .get(&super::evaluation::key(&policy))
                .is_some_and(|(version, hash)| {
                    policy.metadata.resource_version != *version
                        && status_hash(policy.status.as_ref()) != *hash
                })
        };
        if !stale {
            return Ok(policy);
        }
        let api: Api<RollbackPolicy> = Api::namespaced(
            self.shared.client.clone(),
            &policy.namespace().unwrap_or_default(),
        );
        tracing::debug!("cache lags the last status write: reading the policy");
        Ok(Arc::new(api.get(&policy.name_any()).await?))
    }

    fn remember(&self, written: &RollbackPolicy) {
        self.written.lock().expect("lock").insert(
            super::evaluation::key(written),
            (
                written.metadata.resource_version.clone(),
                status_hash(written.status.as_ref()),
            ),
        );
    }

    /// The policy-wide gauges, and `written` pruned of policies that went: O(policies), so at
    /// most once a second, or when the number of policies changed.
    fn sweep(&self) {
        {
            let mut last = self.last_sweep.lock().expect("lock");
            let count = self.policies.len();
            if last.is_some_and(|(t, n)| t.elapsed() < Duration::from_secs(1) && n == count) {
                return;
            }
            *last = Some((Instant::now(), count));
        }
        let policies = self.policies.state();
        self.shared.metrics.record_policies(&policies);
        let live: std::collections::HashSet<String> =
            policies.iter().map(|p| super::evaluation::key(p)).collect();
        self.written
            .lock()
            .expect("lock")
            .retain(|k, _| live.contains(k));
        self.references
            .lock()
            .expect("lock")
            .retain(|k, _| live.contains(k));
    }

    /// The cached RollbackEvents of a namespace.
    fn events_in(&self, namespace: &str) -> Vec<Arc<RollbackEvent>> {
        self.events
            .state()
            .into_iter()
            .filter(|e| e.namespace().as_deref() == Some(namespace))
            .collect()
    }
}

/// What to tell people about a reconcile: level, reason, message.
type Note = (AlertLevel, &'static str, String);

/// Builds the controller and its evaluator; the stream must be polled to run both. The returned
/// store is ready once policies are listed.
pub(super) fn controller(
    ctx: Arc<Context>,
    events: Store<RollbackEvent>,
    shutdown: Shutdown,
) -> (impl Stream<Item = ()>, Store<RollbackPolicy>) {
    let ns = ctx.namespace.as_deref();
    let policies: Api<RollbackPolicy> = scoped_api(&ctx.client, ns);
    // One watch of the policies feeds the cache (trimmed: at 10,000 policies managedFields
    // alone are megabytes), the index by target, and the triggers: each touched policy, and
    // the siblings targeting its Deployment (one appearing or going changes their
    // one-policy-per-target verdict).
    let (policy_store, policy_writer) = reflector::store::<RollbackPolicy>();
    let targets = Arc::new(targets::TargetIndex::default());
    let (siblings, indexed) = (policy_store.clone(), targets.clone());
    let sibling_index = targets.clone();
    let policy_triggers = watcher(policies, watcher::Config::default())
        .default_backoff()
        .modify(super::trim_for_cache)
        .reflect(policy_writer)
        .inspect(move |event| {
            if let Ok(event) = event {
                indexed.apply(event);
            }
        })
        .touched_objects()
        .flat_map(move |touched| {
            let also: Vec<_> = match &touched {
                Ok(p) => sibling_index
                    .targeting(&p.namespace().unwrap_or_default(), &p.spec.target_ref.name)
                    .into_iter()
                    .filter(|s| s.name != p.name_any())
                    .filter_map(|s| siblings.get(&s))
                    .map(|s| Ok(s.as_ref().clone()))
                    .collect(),
                Err(_) => vec![],
            };
            futures::stream::iter(std::iter::once(touched).chain(also))
        });
    let controller = Controller::for_stream(policy_triggers, policy_store.clone());

    // Deployments are cached (not fetched per reconcile) and trigger the policies that target them.
    let (deployments, writer) = reflector::store::<Deployment>();
    let by_target = targets.clone();
    let deployment_triggers = reflector::reflector(
        writer,
        watcher(
            scoped_api::<Deployment>(&ctx.client, ns),
            watcher::Config::default(),
        )
        // Trimmed before the reflector stores the object: untrimmed copies of 10,000
        // Deployments were about 40 % of the operator's heap.
        .modify(super::trim_deployment_for_cache),
    )
    .touched_objects()
    .default_backoff()
    .filter_map(|event| async move {
        event
            .inspect_err(|error| tracing::warn!(%error, "watching Deployments"))
            .ok()
    })
    .flat_map(move |d: Deployment| {
        futures::stream::iter(
            by_target.targeting(&d.namespace().unwrap_or_default(), &d.name_any()),
        )
    });

    // ReplicaSets give the target's revisions (release time, pod names): metadata is enough
    // (a rollback reads the templates from the API server when it needs them); cached, no
    // triggers.
    let replica_sets = Arc::new(ReplicaSetIndex::default());
    let _ = ctx.replica_set_cache.set(replica_sets.clone());
    let replica_set_cache = {
        let index = replica_sets.clone();
        watcher(
            scoped_api::<ReplicaSetMeta>(&ctx.client, ns),
            watcher::Config::default(),
        )
        .modify(super::trim_for_cache)
        .default_backoff()
        .take_until(shutdown.clone())
        .for_each(move |event| {
            match event {
                Ok(event) => index.apply(event),
                Err(error) => tracing::warn!(%error, "watching ReplicaSets"),
            }
            futures::future::ready(())
        })
    };

    let evaluator = Arc::new(Evaluator::new(
        ctx.clone(),
        policy_store.clone(),
        deployments.clone(),
        replica_sets.clone(),
    ));
    let (evaluated_tx, evaluated) = futures::channel::mpsc::unbounded();
    // No evaluation before every cache has listed its objects: after a restart, a decision on a
    // half-synced cache could miss a remediation that is still running.
    let synced = {
        let caches = (
            policy_store.clone(),
            deployments.clone(),
            replica_sets.clone(),
            events.clone(),
            ctx.profiles.clone(),
        );
        async move {
            let (p, d, r, e, profiles) = caches;
            let _ = futures::join!(
                p.wait_until_ready(),
                d.wait_until_ready(),
                r.wait_until_ready(),
                e.wait_until_ready(),
                profiles.wait_until_ready()
            );
            tracing::info!("caches synced: evaluating");
        }
    };
    // The caches stop being fed once the controllers shut down: the wait ends with them.
    let evaluations = {
        let evaluator = evaluator.clone();
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                () = synced => evaluator.run(evaluated_tx, shutdown).await,
                () = shutdown.clone() => {}
            }
        }
    };

    // A namespace's profile label changing, or the profile file, changes its policies' ladder
    // and defaults.
    let in_namespace = policy_store.clone();
    let label_triggers =
        ctx.profiles
            .namespace_changes(&ctx.client, ns)
            .flat_map(move |namespace: String| {
                futures::stream::iter(
                    in_namespace
                        .state()
                        .iter()
                        .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
                        .map(|p| ObjectRef::from_obj(p.as_ref()))
                        .collect::<Vec<_>>(),
                )
            });

    let pctx = Arc::new(PolicyContext {
        shared: ctx.clone(),
        policies: policy_store.clone(),
        deployments,
        replica_sets,
        events,
        evaluator,
        targets,
        written: Mutex::default(),
        last_sweep: Mutex::default(),
        decisions: Default::default(),
        owners: Default::default(),
        references: Mutex::default(),
    });
    let reconciles = controller
        .reconcile_on(deployment_triggers)
        .reconcile_on(evaluated)
        .reconcile_on(label_triggers)
        .reconcile_all_on(ctx.profiles.reloads())
        // An event finishing lets the policy decide what comes next.
        .watches(
            scoped_api::<RollbackEvent>(&ctx.client, ns),
            watcher::Config::default(),
            |e: RollbackEvent| {
                e.namespace()
                    .map(|ns| ObjectRef::new(&e.spec.policy_ref.name).within(&ns))
            },
        )
        .with_config(
            kube::runtime::controller::Config::default()
                .concurrency(ctx.config.reconcile_concurrency),
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

#[tracing::instrument(skip_all, fields(policy = %policy.name_any(), namespace = policy.namespace().unwrap_or_default()))]
async fn reconcile(policy: Arc<RollbackPolicy>, pctx: Arc<PolicyContext>) -> Result<Action, Error> {
    let ctx = &pctx.shared;
    let _timer = ctx.metrics.reconcile_started(NAME);
    let ns = policy
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    pctx.sweep();
    let api: Api<RollbackPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    // The finalizer lets `onDelete: Restore` run before the policy goes away; under `Keep`
    // there is nothing to run, so a policy carries none (and loses one it had).
    if !lifecycle::needs_finalizer(&policy) {
        let policy = lifecycle::drop_finalizer(&api, policy).await?;
        if policy.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        return apply(&pctx, policy).await;
    }
    finalizer(&api, lifecycle::FINALIZER, policy, |event| async {
        match event {
            finalizer::Event::Apply(policy) => apply(&pctx, policy).await,
            finalizer::Event::Cleanup(policy) => lifecycle::cleanup(&pctx, &policy).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Reconciles a live policy: readiness, manual requests, the engine step on a fresh evaluation,
/// status, housekeeping, then what to tell people.
async fn apply(pctx: &PolicyContext, policy: Arc<RollbackPolicy>) -> Result<Action, Error> {
    let ctx = &pctx.shared;
    // Manual requests and the engine read the events' cache: not before it has listed them.
    // Checked, not awaited: a reconcile must never outwait a shutdown.
    if !matches!(pctx.events.wait_until_ready().now_or_never(), Some(Ok(()))) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // Nor before the namespaces' profile labels are known.
    if !ctx.profiles.ready() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let fresh = pctx.fresh(policy).await?;
    // From here on the policy is read with its spec completed from its environment profile:
    // the ladder, interval, thresholds... it inherits are in it.
    let (completed, effective, unresolved) = match ctx.profiles.resolve(&fresh) {
        Ok(resolved) => {
            let effective = crate::profile::effective(&resolved, &ctx.config);
            let mut completed = (*fresh).clone();
            completed.spec = resolved.spec;
            (completed, effective, None)
        }
        Err(e) => (
            (*fresh).clone(),
            config::effective(&fresh.spec, &ctx.config),
            Some(e),
        ),
    };
    let policy = &completed;
    let ns = policy.namespace().unwrap_or_default();
    let target_ref = ObjectRef::<Deployment>::new(&policy.spec.target_ref.name).within(&ns);
    let target = pctx.deployments.get(&target_ref);
    let verdict = match unresolved {
        Some(e) => readiness::Readiness {
            ready: false,
            reason: e.reason(),
            message: e.to_string(),
        },
        None => readiness::check(pctx, policy, &effective, target.as_deref()).await,
    };

    let old_status = policy.status.clone().unwrap_or_default();
    let mut status = old_status.clone();
    let previous_ready = old_status
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::READY)
        .cloned();
    set_condition(
        &mut status.conditions,
        condition(
            conditions::READY,
            verdict.ready,
            verdict.reason,
            verdict.message.clone(),
        ),
    );
    let suspended = policy.spec.suspend;
    set_condition(
        &mut status.conditions,
        condition(
            conditions::SUSPENDED,
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

    let mut notes: Vec<Note> = vec![];
    // A missing rung reference is reported, but does not stop monitoring or the other rungs.
    let usable = verdict.ready || verdict.reason == conditions::REFERENCE_MISSING;
    if usable {
        notes.extend(
            manual::handle(pctx, policy, target.as_deref(), &effective, &mut status).await?,
        );
    }
    if usable && !suspended {
        // Only a new evaluation moves the engine: other triggers just refresh conditions.
        let last_evaluated = old_status
            .health
            .as_ref()
            .and_then(|h| h.evaluated_at.as_ref())
            .map(|t| t.0);
        if let Some(evaluation) = pctx.evaluator.take(policy)
            && last_evaluated.is_none_or(|t| evaluation.at > t)
        {
            ctx.metrics.evaluated(policy, evaluation.at);
            notes = step::run(
                pctx,
                policy,
                target.as_deref(),
                &effective,
                &evaluation,
                &mut status,
            )
            .await?;
        }
    }

    if usable {
        notes
            .extend(owner::report(pctx, policy, target.as_deref(), &old_status, &mut status).await);
    }

    super::conditions::kstatus(&mut status.conditions, policy.metadata.generation);
    let interval = effective
        .interval
        .and_then(|d| d.get().ok())
        .unwrap_or(ctx.config.interval);
    let refresh_after = decide::news::refresh_after(interval, &super::evaluation::key(policy));
    if decide::news::worth_writing(&old_status, &status, refresh_after, Timestamp::now()) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let news = decide::news::what_changed(&old_status, &status);
            tracing::debug!(?news, "writing status");
        }
        write_status(pctx, policy, &status).await?;
    }

    housekeeping::prune_history(pctx, policy).await;
    if usable && !suspended {
        housekeeping::auto_restore(pctx, policy, &status).await;
    }

    // A transition is an Event; a new policy found valid is not one (at 10,000 policies a fresh
    // install would otherwise post 10,000 Events saying nothing is wrong).
    let changed = match &previous_ready {
        Some(c) => c.reason != verdict.reason || (c.status == "True") != verdict.ready,
        None => !verdict.ready,
    };
    if changed {
        tracing::info!(ready = verdict.ready, reason = verdict.reason, message = %verdict.message, "policy readiness changed");
        let level = if verdict.ready {
            AlertLevel::Info
        } else {
            AlertLevel::Warning
        };
        notes.insert(0, (level, verdict.reason, verdict.message));
    }
    for (level, reason, message) in notes {
        alerts::publish(ctx, policy, level, reason, message).await;
    }

    // The evaluator triggers an evaluated policy every interval; a requeue at the interval too
    // would reconcile every policy twice, the second time just as the next tick's detections
    // queue behind it. It is a safety net then; other policies look again every interval.
    let requeue = if usable && !suspended {
        RESYNC.max(interval)
    } else {
        interval
    };
    Ok(Action::requeue(requeue.max(Duration::from_secs(1))))
}

/// Writes the policy's status by server-side apply under this controller's field manager, as a
/// compare-and-swap on the resourceVersion it was computed from: a forced apply from an older
/// copy would remove the incident fields that copy lacks. A conflict caused by metadata or spec
/// alone (an annotation removed, the finalizer added) leaves the computed status valid and is
/// retried; one caused by another status write returns the 409, and the next reconcile
/// recomputes from a fresh read.
async fn write_status(
    pctx: &PolicyContext,
    base: &RollbackPolicy,
    status: &RollbackPolicyStatus,
) -> Result<(), Error> {
    let api: Api<RollbackPolicy> = Api::namespaced(
        pctx.shared.client.clone(),
        &base.namespace().unwrap_or_default(),
    );
    let name = base.name_any();
    let mut version = base.metadata.resource_version.clone();
    // status.alerts belongs to the alert receiver (its own field manager): never sent here,
    // so this apply neither claims nor removes it, and its changes alone are no conflict.
    let without_alerts = |s: Option<&RollbackPolicyStatus>| {
        s.cloned().map(|mut s| {
            s.alerts.clear();
            s
        })
    };
    let status = without_alerts(Some(status)).unwrap_or_default();
    for _ in 0..3 {
        let patch = json!({
            "apiVersion": RollbackPolicy::api_version(&()),
            "kind": RollbackPolicy::kind(&()),
            "metadata": {"resourceVersion": version},
            "status": status,
        });
        match api
            .patch_status(
                &name,
                &PatchParams::apply(POLICY_MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await
        {
            Ok(written) => {
                pctx.remember(&written);
                return Ok(());
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let fresh = api.get(&name).await?;
                if without_alerts(fresh.status.as_ref()) != without_alerts(base.status.as_ref()) {
                    tracing::info!("policy status changed since it was read: recomputing");
                    return Err(Error::Kube(kube::Error::Api(e)));
                }
                version = fresh.metadata.resource_version;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Invalid(format!(
        "policy {name} kept changing while its status was written"
    )))
}

fn status_hash(status: Option<&RollbackPolicyStatus>) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&status)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

fn error_policy(policy: Arc<RollbackPolicy>, error: &Error, pctx: Arc<PolicyContext>) -> Action {
    pctx.shared
        .metrics
        .reconcile_failed(NAME, error.metric_label());
    if error.is_conflict() {
        tracing::info!(policy = %policy.name_any(), "policy changed while reconciling: re-reading");
        return Action::requeue(Duration::from_millis(200));
    }
    tracing::warn!(policy = %policy.name_any(), %error, "policy reconcile failed");
    Action::requeue(Duration::from_secs(5))
}
