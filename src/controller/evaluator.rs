//! The evaluator: every tick it gathers the policies due for evaluation, plans their Prometheus
//! queries together (policies sharing a template and endpoint share one query), runs them, keeps
//! the readings, and asks the policy controller to reconcile those policies.
//!
//! Ticks are aligned to multiples of each policy's interval on the wall clock, so policies with
//! the same interval fall due together and their queries are shared.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::channel::mpsc;
use jiff::Timestamp;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Secret};
use kube::{
    Api, ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};

use super::{
    Context, ReplicaSetMeta, Shutdown,
    evaluation::{Evaluation, EvaluationError, key},
};
use crate::{
    api::{RollbackPolicy, conditions},
    assess::baseline::BaselineVerdict,
    prometheus::{self, ClientCache, Endpoint, PolicyQueries, Signal},
};

/// How often the evaluator looks for due policies (the finest interval it honours).
const TICK: Duration = Duration::from_millis(250);

/// Shared between the evaluator task and the policy reconciler.
pub struct Evaluator {
    ctx: Arc<Context>,
    policies: Store<RollbackPolicy>,
    deployments: Store<Deployment>,
    replica_sets: Store<ReplicaSetMeta>,
    clients: ClientCache,
    latest: Mutex<HashMap<String, Evaluation>>,
    /// The aligned tick at which each policy was last evaluated.
    last_tick: Mutex<HashMap<String, u128>>,
    /// The baseline judges' latest verdicts per policy (see [`Evaluator::judge_baselines`]).
    baselines: Mutex<HashMap<String, BTreeMap<String, BaselineVerdict>>>,
}

impl Evaluator {
    pub fn new(
        ctx: Arc<Context>,
        policies: Store<RollbackPolicy>,
        deployments: Store<Deployment>,
        replica_sets: Store<ReplicaSetMeta>,
    ) -> Self {
        let clients = ClientCache::new(Some(ctx.metrics.clone()));
        Self {
            ctx,
            policies,
            deployments,
            replica_sets,
            clients,
            latest: Mutex::default(),
            last_tick: Mutex::default(),
            baselines: Mutex::default(),
        }
    }

    /// The latest evaluation of a policy, once: a reconcile of a cached object whose status does
    /// not show the previous step yet must not apply the same evaluation twice.
    pub fn take(&self, policy: &RollbackPolicy) -> Option<Evaluation> {
        self.latest.lock().expect("lock").remove(&key(policy))
    }

    /// Runs until shutdown, sending each evaluated policy to `reconcile`.
    pub async fn run(
        self: Arc<Self>,
        reconcile: mpsc::UnboundedSender<ObjectRef<RollbackPolicy>>,
        shutdown: Shutdown,
    ) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.clone() => return,
            }
            for policy in self.tick().await {
                if reconcile.unbounded_send(policy).is_err() {
                    return;
                }
            }
        }
    }

    /// One tick: evaluates the due policies, returns them.
    #[tracing::instrument(name = "evaluator_tick", level = "debug", skip_all)]
    async fn tick(&self) -> Vec<ObjectRef<RollbackPolicy>> {
        let now = Timestamp::now();
        let due: Vec<Arc<RollbackPolicy>> = self
            .policies
            .state()
            .into_iter()
            .filter(|p| evaluable(p) && self.take_if_due(p, now))
            .collect();
        if due.is_empty() {
            return vec![];
        }

        let mut batch = Vec::with_capacity(due.len());
        let mut results: HashMap<String, Evaluation> = HashMap::new();
        for policy in &due {
            match self.queries(policy).await {
                Ok(q) => batch.push(q),
                Err(error) => {
                    results.insert(
                        key(policy),
                        Evaluation {
                            at: now,
                            readings: Err(error),
                        },
                    );
                }
            }
        }
        let plan = prometheus::plan(&batch);
        tracing::debug!(
            policies = batch.len(),
            queries = plan.queries().len(),
            "evaluating"
        );
        let readings = prometheus::run(&plan, Some(now), |e| self.clients.get(e)).await;
        for q in &batch {
            let mut own = readings.get(&q.policy).cloned().unwrap_or_default();
            // Signals the plan could not route stay visible as no data.
            for s in &q.signals {
                own.entry(s.name.clone()).or_insert(Ok(None));
            }
            results.insert(
                q.policy.clone(),
                Evaluation {
                    at: now,
                    readings: Ok(own),
                },
            );
        }
        self.latest.lock().expect("lock").extend(results);
        let baselines = self.judge_baselines(&due, &batch, now).await;
        self.baselines.lock().expect("lock").extend(baselines);
        due.iter()
            .map(|p| ObjectRef::from_obj(p.as_ref()))
            .collect()
    }

    /// True once per aligned interval; records the tick.
    fn take_if_due(&self, policy: &RollbackPolicy, now: Timestamp) -> bool {
        let interval = policy
            .status
            .as_ref()
            .and_then(|s| s.effective.as_ref())
            .and_then(|e| e.interval.as_ref())
            .and_then(|d| d.get().ok())
            .unwrap_or(self.ctx.config.interval)
            .max(Duration::from_secs(1));
        let tick = now.as_millisecond() as u128 / interval.as_millis();
        let mut last = self.last_tick.lock().expect("lock");
        let previous = last.insert(key(policy), tick);
        previous != Some(tick)
    }

    /// What the planner needs for one policy.
    #[tracing::instrument(level = "debug", skip_all, fields(
        policy = %policy.name_any(),
        namespace = policy.namespace().unwrap_or_default(),
    ))]
    async fn queries(
        &self,
        policy: &RollbackPolicy,
    ) -> Result<PolicyQueries<String, Endpoint>, EvaluationError> {
        let ns = policy.namespace().unwrap_or_default();
        let effective = policy
            .status
            .as_ref()
            .and_then(|s| s.effective.clone())
            .unwrap_or_default();
        let workload_label = effective
            .workload_label
            .clone()
            .unwrap_or_else(|| self.ctx.config.workload_label.clone());
        let window = effective
            .rate_window
            .as_ref()
            .and_then(|d| d.get().ok())
            .unwrap_or(self.ctx.config.rate_window);
        let target = &policy.spec.target_ref.name;
        let deployment = self.deployments.get(&ObjectRef::new(target).within(&ns));
        let replica_sets: Vec<String> = match &deployment {
            Some(d) => owned_replica_sets(&self.replica_sets, d)
                .iter()
                .map(|rs| rs.name_any())
                .collect(),
            None => vec![],
        };
        Ok(PolicyQueries {
            policy: key(policy),
            endpoint: self.endpoint(policy).await?,
            namespace: ns,
            target: target.clone(),
            pod_regex: prometheus::pod_regex(&replica_sets),
            window,
            signals: Signal::for_policy(
                &policy.spec.metrics,
                &workload_label,
                policy.spec.min_request_rate.is_some(),
            ),
        })
    }

    async fn endpoint(&self, policy: &RollbackPolicy) -> Result<Endpoint, EvaluationError> {
        policy_endpoint(&self.ctx, policy).await
    }

    /// The baseline judges' verdicts of a policy's latest evaluation, once.
    pub fn take_baselines(&self, policy: &RollbackPolicy) -> BTreeMap<String, BaselineVerdict> {
        self.baselines
            .lock()
            .expect("lock")
            .remove(&key(policy))
            .unwrap_or_default()
    }

    /// Range reads and verdicts for the due policies that have baseline metrics and a release
    /// recent enough (see `prometheus::baseline`).
    async fn judge_baselines(
        &self,
        due: &[Arc<RollbackPolicy>],
        batch: &[PolicyQueries<String, Endpoint>],
        now: Timestamp,
    ) -> HashMap<String, BTreeMap<String, BaselineVerdict>> {
        let mut out = HashMap::new();
        for policy in due {
            if policy.spec.metrics.iter().all(|m| m.baseline.is_none()) {
                continue;
            }
            let Some(q) = batch.iter().find(|q| q.policy == key(policy)) else {
                continue;
            };
            let Ok(client) = self.clients.get(&q.endpoint) else {
                continue;
            };
            let ns = policy.namespace().unwrap_or_default();
            let deployment = self.deployments.get(&ObjectRef::new(&q.target).within(&ns));
            let release = deployment
                .and_then(|d| owned_replica_sets(&self.replica_sets, &d).last().cloned())
                .and_then(|rs| rs.creation_timestamp())
                .map(|t| t.0);
            let effective = policy.status.as_ref().and_then(|s| s.effective.as_ref());
            let interval = effective
                .and_then(|e| e.interval.as_ref())
                .and_then(|d| d.get().ok())
                .unwrap_or(self.ctx.config.interval);
            let workload_label = effective
                .and_then(|e| e.workload_label.clone())
                .unwrap_or_else(|| self.ctx.config.workload_label.clone());
            let vars = prometheus::Vars {
                namespace: &q.namespace,
                target: &q.target,
                pod_regex: q.pod_regex.as_deref(),
                window: q.window,
            };
            let verdicts = prometheus::baseline::judge_metrics(
                &client,
                &policy.spec.metrics,
                &workload_label,
                &vars,
                release,
                now,
                interval,
            )
            .await;
            out.insert(key(policy), verdicts);
        }
        out
    }
}

/// The policy's Prometheus, with credentials read from its Secrets (or the operator's default).
pub async fn policy_endpoint(
    ctx: &Context,
    policy: &RollbackPolicy,
) -> Result<Endpoint, EvaluationError> {
    let source = policy.spec.prometheus.as_ref();
    let credentials = match source {
        Some(source) => {
            ctx.config
                .check_prometheus_url(&source.url)
                .map_err(|e| EvaluationError {
                    reason: e.reason(),
                    message: e.to_string(),
                })?;
            let ns = policy.namespace().unwrap_or_default();
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
            prometheus::resolve_credentials(&secrets, source)
                .await
                .map_err(|e| EvaluationError {
                    reason: e.reason(),
                    message: e.to_string(),
                })?
        }
        None => Default::default(),
    };
    Endpoint::for_policy(source, ctx.config.prometheus_url.as_deref(), credentials).map_err(|e| {
        EvaluationError {
            reason: e.reason(),
            message: e.to_string(),
        }
    })
}

/// Only valid, active policies whose status describes their current spec are evaluated.
fn evaluable(policy: &RollbackPolicy) -> bool {
    let Some(status) = &policy.status else {
        return false;
    };
    // A rung with a missing reference is reported but does not stop monitoring.
    let ready = status.conditions.iter().any(|c| {
        c.type_ == conditions::READY
            && (c.status == "True" || c.reason == conditions::REFERENCE_MISSING)
    });
    ready && !policy.spec.suspend && status.observed_generation == policy.metadata.generation
}

/// The ReplicaSets a Deployment owns, newest revision last.
pub fn owned_replica_sets(
    store: &Store<ReplicaSetMeta>,
    deployment: &Deployment,
) -> Vec<Arc<ReplicaSetMeta>> {
    let uid = deployment.metadata.uid.as_deref();
    let ns = deployment.namespace();
    let mut owned: Vec<Arc<ReplicaSetMeta>> = store
        .state()
        .into_iter()
        .filter(|rs| rs.namespace() == ns)
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| Some(o.uid.as_str()) == uid)
        })
        .collect();
    owned.sort_by_key(revision);
    owned
}

/// A ReplicaSet's `deployment.kubernetes.io/revision`.
pub fn revision<R: ResourceExt>(rs: &impl std::ops::Deref<Target = R>) -> i64 {
    rs.annotations()
        .get("deployment.kubernetes.io/revision")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}
