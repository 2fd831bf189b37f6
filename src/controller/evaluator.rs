//! The evaluator: every tick it gathers the policies due for evaluation, plans their Prometheus
//! queries together (policies sharing a template and endpoint share one query), runs them, keeps
//! the readings, and asks the policy controller to reconcile those policies.
//!
//! Ticks are aligned to multiples of each policy's interval on the wall clock, so policies with
//! the same interval fall due together and their queries are shared.
//!
//! Time isolation: each Prometheus endpoint (URL, timeout, credentials) is evaluated by a task of
//! its own, and its policies are handed over as soon as it answers. A slow or unanswering
//! endpoint (one tenant's `spec.prometheus.url`) delays only its own policies: while its
//! evaluation runs, its policies skip their ticks; every other endpoint keeps its interval.
//!
//! Nothing waits for a reconcile: a policy's settings come from its spec, its environment
//! profile (cached: the profile file and the namespace labels) and the operator's
//! configuration, and only a policy whose status says it is not ready for its current generation
//! is skipped (the reconcile decides whether an evaluation may move the engine anyway).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, channel::mpsc};
use jiff::Timestamp;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Secret};
use kube::{
    Api, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store, store::Writer},
        watcher,
    },
};

use super::{
    Context, Shutdown,
    evaluation::{Evaluation, EvaluationError, key, ref_key},
    replica_sets::ReplicaSetIndex,
    scoped_api,
};
use crate::{
    api::{MetricSpec, RollbackPolicy, conditions},
    assess::baseline::BaselineVerdict,
    config, decide,
    prometheus::{
        self, CachedSecrets, ClientCache, CredentialsError, Endpoint, PolicyQueries, SecretLookup,
        Signal, secrets,
    },
};

/// How often the evaluator looks for due policies (the finest interval it honours).
const TICK: Duration = Duration::from_millis(250);
/// How long the verdict on a Secret the cache lacks (missing, or not labelled) is kept before
/// the API server is asked again.
const MISS_TTL: Duration = Duration::from_secs(30);
/// Bound on that one GET: a slow API server must not hold the tick.
const MISS_GET_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the per-policy maps drop the policies that went.
const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// A client unused this long is dropped (its endpoint changed or went).
const CLIENT_IDLE: Duration = Duration::from_secs(600);
/// Policies prepared at once (only cache misses wait on the API server).
const PREPARE_CONCURRENCY: usize = 32;
/// Baseline range reads in flight per endpoint.
const BASELINE_CONCURRENCY: usize = 4;
/// Steady policies handed to the reconciler and not yet reconciled, at most. kube's scheduler
/// serves requests made in the same instant last-in first-out, so handing over a whole tick at
/// once would put a detection behind every steady reconcile of that tick; with a window, it
/// waits behind at most this many.
const STEADY_WINDOW: usize = 32;
/// A steady policy handed over whose evaluation was not taken within this (its reconcile
/// stopped early) no longer holds a place in the window.
const STEADY_HOLD: Duration = Duration::from_secs(5);

/// Shared between the evaluator task and the policy reconciler.
pub struct Evaluator {
    ctx: Arc<Context>,
    policies: Store<RollbackPolicy>,
    deployments: Store<Deployment>,
    replica_sets: Arc<ReplicaSetIndex>,
    /// Secrets labelled [`secrets::POLICY_ACCESS_LABEL`], watched by [`Evaluator::run`].
    secrets: Store<Secret>,
    secrets_writer: Mutex<Option<Writer<Secret>>>,
    clients: ClientCache,
    latest: Mutex<HashMap<String, Evaluation>>,
    /// The aligned tick at which each policy was last evaluated.
    last_tick: Mutex<HashMap<String, u128>>,
    /// The baseline judges' latest verdicts per policy (see [`Evaluator::evaluate`]).
    baselines: Mutex<HashMap<String, BTreeMap<String, BaselineVerdict>>>,
    /// Endpoints whose evaluation still runs: their policies wait, nobody else does.
    in_flight: Mutex<HashSet<Endpoint>>,
    /// Secrets the cache lacks, as one GET found them: `Ok(None)` missing, `Err` not labelled.
    misses: Mutex<HashMap<(String, String), (Instant, MissVerdict)>>,
    /// When each endpoint was last queried (idle clients are dropped).
    used: Mutex<HashMap<Endpoint, Instant>>,
    pruned: Mutex<Option<Instant>>,
    /// Steady policies waiting for a place in the reconciler's window (see [`STEADY_WINDOW`]).
    steady: Mutex<SteadyFeed>,
    /// Signalled when a reconcile takes an evaluation (a place in the window may be free).
    taken: tokio::sync::Notify,
}

/// Steady policies waiting to be reconciled, and those handed over whose evaluation is not
/// taken yet.
#[derive(Default)]
struct SteadyFeed {
    backlog: std::collections::VecDeque<ObjectRef<RollbackPolicy>>,
    queued: HashSet<ObjectRef<RollbackPolicy>>,
    handed: HashMap<String, Instant>,
}

type MissVerdict = Result<Option<Arc<Secret>>, CredentialsError>;

/// One endpoint's share of a tick.
struct Job {
    endpoint: Endpoint,
    at: Timestamp,
    members: Vec<Member>,
}

/// A due policy, ready to be queried.
struct Member {
    policy: ObjectRef<RollbackPolicy>,
    queries: PolicyQueries<String, Endpoint>,
    baseline: Option<BaselineInput>,
}

/// What the baseline judge needs besides the queries.
struct BaselineInput {
    metrics: Vec<MetricSpec>,
    workload_label: String,
    release: Option<Timestamp>,
    interval: Duration,
}

/// A finished job.
struct Done {
    endpoint: Endpoint,
    evaluations: HashMap<String, Evaluation>,
    baselines: HashMap<String, BTreeMap<String, BaselineVerdict>>,
    policies: Vec<ObjectRef<RollbackPolicy>>,
}

impl Evaluator {
    pub fn new(
        ctx: Arc<Context>,
        policies: Store<RollbackPolicy>,
        deployments: Store<Deployment>,
        replica_sets: Arc<ReplicaSetIndex>,
    ) -> Self {
        let clients = ClientCache::new(Some(ctx.metrics.clone()));
        let (secrets, writer) = reflector::store();
        Self {
            ctx,
            policies,
            deployments,
            replica_sets,
            secrets,
            secrets_writer: Mutex::new(Some(writer)),
            clients,
            latest: Mutex::default(),
            last_tick: Mutex::default(),
            baselines: Mutex::default(),
            in_flight: Mutex::default(),
            misses: Mutex::default(),
            used: Mutex::default(),
            pruned: Mutex::default(),
            steady: Mutex::default(),
            taken: tokio::sync::Notify::new(),
        }
    }

    /// The latest evaluation of a policy, once: a reconcile of a cached object whose status does
    /// not show the previous step yet must not apply the same evaluation twice.
    pub fn take(&self, policy: &RollbackPolicy) -> Option<Evaluation> {
        let key = key(policy);
        if self
            .steady
            .lock()
            .expect("lock")
            .handed
            .remove(&key)
            .is_some()
        {
            self.taken.notify_one();
        }
        self.latest.lock().expect("lock").remove(&key)
    }

    /// The baseline judges' verdicts of a policy's latest evaluation, once.
    pub fn take_baselines(&self, policy: &RollbackPolicy) -> BTreeMap<String, BaselineVerdict> {
        self.baselines
            .lock()
            .expect("lock")
            .remove(&key(policy))
            .unwrap_or_default()
    }

    /// Runs until shutdown, sending each evaluated policy to `reconcile`. Watches the opted-in
    /// Secrets meanwhile (only those: a label-selected watch never brings any other Secret into
    /// memory).
    pub async fn run(
        self: Arc<Self>,
        reconcile: mpsc::UnboundedSender<ObjectRef<RollbackPolicy>>,
        shutdown: Shutdown,
    ) {
        let Some(writer) = self.secrets_writer.lock().expect("lock").take() else {
            tracing::error!("the evaluator runs once");
            return;
        };
        let api = scoped_api::<Secret>(&self.ctx.client, self.ctx.namespace.as_deref());
        let secret_cache = reflector::reflector(
            writer,
            watcher(
                api,
                watcher::Config::default().labels(secrets::POLICY_ACCESS_SELECTOR),
            )
            // kubectl apply keeps the whole Secret, values included, in an annotation.
            .modify(super::trim_for_cache),
        )
        .default_backoff()
        .for_each(|event| async move {
            if let Err(error) = event {
                tracing::warn!(%error, "watching policy-access Secrets");
            }
        });
        tokio::select! {
            () = secret_cache => {}
            () = self.clone().ticks(reconcile, shutdown) => {}
        }
    }

    async fn ticks(
        self: Arc<Self>,
        reconcile: mpsc::UnboundedSender<ObjectRef<RollbackPolicy>>,
        shutdown: Shutdown,
    ) {
        // Credentials come from the cache: not before it has listed the Secrets.
        tokio::select! {
            _ = self.secrets.wait_until_ready() => {}
            () = shutdown.clone() => return,
        }
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut running = tokio::task::JoinSet::new();
        let mut endpoints: HashMap<tokio::task::Id, Endpoint> = HashMap::new();
        let send = |refs: Vec<ObjectRef<RollbackPolicy>>| {
            refs.into_iter()
                .all(|r| reconcile.unbounded_send(r).is_ok())
        };
        #[cfg(feature = "failpoints")]
        let mut ticks_seen = 0u32;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    #[cfg(feature = "failpoints")]
                    {
                        ticks_seen += 1;
                        if ticks_seen > 20 && failpoint("evaluator-stall") {
                            shutdown.clone().await;
                            return;
                        }
                    }
                    let (jobs, failed) = self.tick(Timestamp::now()).await;
                    for job in jobs {
                        let endpoint = job.endpoint.clone();
                        let this = self.clone();
                        let handle = running.spawn(async move { this.evaluate(job).await });
                        endpoints.insert(handle.id(), endpoint);
                    }
                    self.ctx.liveness.beat();
                    if !send(failed) || !send(self.next_steady()) {
                        return;
                    }
                }
                () = self.taken.notified() => {
                    if !send(self.next_steady()) {
                        return;
                    }
                }
                Some(joined) = running.join_next_with_id(), if !running.is_empty() => {
                    match joined {
                        Ok((id, done)) => {
                            endpoints.remove(&id);
                            let (urgent, steady) = self.finish(done);
                            if !send(urgent) {
                                return;
                            }
                            self.queue_steady(steady);
                            if !send(self.next_steady()) {
                                return;
                            }
                        }
                        Err(error) => {
                            // A panicked evaluation frees its endpoint; its policies retry.
                            tracing::error!(%error, "an endpoint's evaluation failed");
                            if let Some(endpoint) = endpoints.remove(&error.id()) {
                                self.in_flight.lock().expect("lock").remove(&endpoint);
                            }
                        }
                    }
                }
                () = shutdown.clone() => return,
            }
        }
    }

    /// One tick: the due policies, prepared, split by endpoint into jobs (an endpoint still
    /// evaluating gets none: its policies wait for it to finish). Policies that cannot be
    /// queried at all are evaluated as errors now and returned for a reconcile.
    #[tracing::instrument(name = "evaluator_tick", level = "debug", skip_all)]
    async fn tick(&self, now: Timestamp) -> (Vec<Job>, Vec<ObjectRef<RollbackPolicy>>) {
        let state = self.policies.state();
        self.prune(&state);
        let due: Vec<(Arc<RollbackPolicy>, Option<u128>)> = state
            .into_iter()
            .filter(|p| evaluable(p))
            .filter_map(|p| {
                let previous = self.take_if_due(&p, now)?;
                Some((p, previous))
            })
            .collect();
        if due.is_empty() {
            return (vec![], vec![]);
        }
        let prepared: Vec<_> = futures::stream::iter(due)
            .map(|(policy, previous)| async move {
                let member = self.prepare(&policy).await;
                (policy, previous, member)
            })
            .buffer_unordered(PREPARE_CONCURRENCY)
            .collect()
            .await;

        let mut failed = vec![];
        let mut by_endpoint: BTreeMap<Endpoint, Vec<(Member, Option<u128>)>> = BTreeMap::new();
        {
            let mut latest = self.latest.lock().expect("lock");
            for (policy, previous, member) in prepared {
                match member {
                    Ok(member) => by_endpoint
                        .entry(member.queries.endpoint.clone())
                        .or_default()
                        .push((member, previous)),
                    Err(error) => {
                        latest.insert(
                            key(&policy),
                            Evaluation {
                                at: now,
                                readings: Err(error),
                            },
                        );
                        failed.push(ObjectRef::from_obj(policy.as_ref()));
                    }
                }
            }
        }

        let mut jobs = vec![];
        let mut in_flight = self.in_flight.lock().expect("lock");
        let mut used = self.used.lock().expect("lock");
        for (endpoint, members) in by_endpoint {
            if in_flight.contains(&endpoint) {
                tracing::debug!(url = %crate::egress::redact_userinfo(&endpoint.url), policies = members.len(), "endpoint still evaluating: its policies wait");
                let mut last = self.last_tick.lock().expect("lock");
                for (member, previous) in &members {
                    untake(&mut last, &member.queries.policy, *previous);
                }
                continue;
            }
            in_flight.insert(endpoint.clone());
            used.insert(endpoint.clone(), Instant::now());
            jobs.push(Job {
                endpoint,
                at: now,
                members: members.into_iter().map(|(m, _)| m).collect(),
            });
        }
        tracing::debug!(
            endpoints = jobs.len(),
            policies = jobs.iter().map(|j| j.members.len()).sum::<usize>(),
            failed = failed.len(),
            "evaluating"
        );
        (jobs, failed)
    }

    /// Queries one endpoint for its due policies: instant reads (shared), then baseline reads.
    async fn evaluate(&self, job: Job) -> Done {
        let batch: Vec<PolicyQueries<String, Endpoint>> =
            job.members.iter().map(|m| m.queries.clone()).collect();
        let plan = prometheus::plan(&batch);
        tracing::debug!(
            url = %crate::egress::redact_userinfo(&job.endpoint.url),
            policies = batch.len(),
            queries = plan.queries().len(),
            "querying"
        );
        let started = Instant::now();
        let readings = prometheus::run(&plan, Some(job.at), |e| self.clients.get(e)).await;
        tracing::debug!(
            policies = batch.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "queried"
        );
        let mut evaluations = HashMap::with_capacity(batch.len());
        for q in &batch {
            let mut own = readings.get(&q.policy).cloned().unwrap_or_default();
            // Signals the plan could not route stay visible as no data.
            for s in &q.signals {
                own.entry(s.name.clone()).or_insert(Ok(None));
            }
            evaluations.insert(
                q.policy.clone(),
                Evaluation {
                    at: job.at,
                    readings: Ok(own),
                },
            );
        }
        let client = self.clients.get(&job.endpoint).ok();
        let baselines = match &client {
            Some(client) => {
                // Futures made up front: a closure inside the stream would make this task's
                // future not provably Send.
                let reads: Vec<_> = job
                    .members
                    .iter()
                    .filter_map(|m| Some(judge(client, &m.queries, m.baseline.as_ref()?, job.at)))
                    .collect();
                futures::stream::iter(reads)
                    .buffer_unordered(BASELINE_CONCURRENCY)
                    .collect()
                    .await
            }
            None => HashMap::new(),
        };
        Done {
            endpoint: job.endpoint,
            evaluations,
            baselines,
            policies: job.members.into_iter().map(|m| m.policy).collect(),
        }
    }

    /// Keeps a finished job's results for the reconciles, frees its endpoint. Returns its
    /// policies in two parts: those turning or failing (to reconcile now), and the steady rest.
    fn finish(
        &self,
        done: Done,
    ) -> (
        Vec<ObjectRef<RollbackPolicy>>,
        Vec<ObjectRef<RollbackPolicy>>,
    ) {
        self.latest.lock().expect("lock").extend(done.evaluations);
        self.baselines.lock().expect("lock").extend(done.baselines);
        self.in_flight.lock().expect("lock").remove(&done.endpoint);
        // Turning and failing policies first: each reconcile costs about a millisecond, and a
        // detection should not wait behind thousands of steady ones.
        let latest = self.latest.lock().expect("lock");
        done.policies.into_iter().partition(|p| {
            let readings = latest
                .get(&ref_key(p))
                .and_then(|e| e.readings.as_ref().ok());
            let Some(readings) = readings else {
                return true;
            };
            let policy = self.policies.get(p);
            decide::news::urgent(
                policy.as_ref().and_then(|p| p.status.as_ref()),
                readings
                    .iter()
                    .map(|(name, r)| (name.as_str(), r.as_ref().ok().copied().flatten())),
            )
        })
    }

    /// Adds steady policies to the backlog (once each: a policy still waiting from an earlier
    /// tick keeps its place, and its reconcile takes the newest evaluation).
    fn queue_steady(&self, policies: Vec<ObjectRef<RollbackPolicy>>) {
        let mut feed = self.steady.lock().expect("lock");
        for p in policies {
            if feed.queued.insert(p.clone()) {
                feed.backlog.push_back(p);
            }
        }
    }

    /// The steady policies that fit in the reconciler's window now.
    fn next_steady(&self) -> Vec<ObjectRef<RollbackPolicy>> {
        let mut feed = self.steady.lock().expect("lock");
        if feed.backlog.is_empty() {
            return vec![];
        }
        feed.handed.retain(|_, at| at.elapsed() < STEADY_HOLD);
        let mut out = vec![];
        while feed.handed.len() < STEADY_WINDOW
            && let Some(p) = feed.backlog.pop_front()
        {
            feed.queued.remove(&p);
            feed.handed.insert(ref_key(&p), Instant::now());
            out.push(p);
        }
        out
    }

    /// Some(the previous tick) once per aligned interval, recording this one; None when not due.
    fn take_if_due(&self, policy: &RollbackPolicy, now: Timestamp) -> Option<Option<u128>> {
        let interval = interval_of(policy, &self.ctx);
        let tick = now.as_millisecond() as u128 / interval.as_millis();
        let mut last = self.last_tick.lock().expect("lock");
        let previous = last.insert(key(policy), tick);
        (previous != Some(tick)).then_some(previous)
    }

    /// What the planner and the baseline judge need for one policy. Settings come from the
    /// spec and the operator's configuration, not from a status a reconcile has yet to write.
    #[tracing::instrument(level = "debug", skip_all, fields(
        policy = %policy.name_any(),
        namespace = policy.namespace().unwrap_or_default(),
    ))]
    async fn prepare(&self, policy: &RollbackPolicy) -> Result<Member, EvaluationError> {
        let ns = policy.namespace().unwrap_or_default();
        let config = &self.ctx.config;
        let effective = config::effective(&policy.spec, config);
        let workload_label = effective
            .workload_label
            .clone()
            .unwrap_or_else(|| config.workload_label.clone());
        let window = effective
            .rate_window
            .as_ref()
            .and_then(|d| d.get().ok())
            .unwrap_or(config.rate_window);
        let target = &policy.spec.target_ref.name;
        let deployment = self.deployments.get(&ObjectRef::new(target).within(&ns));
        let replica_sets = deployment
            .as_deref()
            .map(|d| self.replica_sets.owned(d))
            .unwrap_or_default();
        let names: Vec<String> = replica_sets.iter().map(|rs| rs.name_any()).collect();
        let lookup = ExplainedCache {
            evaluator: self,
            namespace: &ns,
        };
        let endpoint = endpoint_from(&self.ctx, policy, &lookup).await?;
        let baseline = policy
            .spec
            .metrics
            .iter()
            .any(|m| m.baseline.is_some())
            .then(|| BaselineInput {
                metrics: policy.spec.metrics.clone(),
                workload_label: workload_label.clone(),
                release: replica_sets
                    .last()
                    .and_then(|rs| rs.creation_timestamp())
                    .map(|t| t.0),
                interval: interval_of(policy, &self.ctx),
            });
        Ok(Member {
            policy: ObjectRef::from_obj(policy),
            queries: PolicyQueries {
                policy: key(policy),
                endpoint,
                namespace: ns,
                target: target.clone(),
                pod_regex: prometheus::pod_regex(&names),
                window,
                signals: Signal::for_policy(
                    &policy.spec.metrics,
                    &workload_label,
                    policy.spec.min_request_rate.is_some(),
                ),
            },
            baseline,
        })
    }

    /// Drops, at most every [`PRUNE_EVERY`], what the evaluator keeps for policies that went,
    /// stale Secret verdicts and idle clients: memory stays proportional to the live policies.
    fn prune(&self, state: &[Arc<RollbackPolicy>]) {
        {
            let mut pruned = self.pruned.lock().expect("lock");
            if pruned.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
                return;
            }
            *pruned = Some(Instant::now());
        }
        let live: HashSet<String> = state.iter().map(|p| key(p)).collect();
        self.latest
            .lock()
            .expect("lock")
            .retain(|k, _| live.contains(k));
        self.last_tick
            .lock()
            .expect("lock")
            .retain(|k, _| live.contains(k));
        self.baselines
            .lock()
            .expect("lock")
            .retain(|k, _| live.contains(k));
        self.misses
            .lock()
            .expect("lock")
            .retain(|_, (at, _)| at.elapsed() < MISS_TTL);
        let mut used = self.used.lock().expect("lock");
        used.retain(|_, at| at.elapsed() < CLIENT_IDLE);
        self.clients.retain(|e| used.contains_key(e));
    }

    #[cfg(test)]
    fn tracked(&self) -> (usize, usize, usize) {
        (
            self.latest.lock().unwrap().len(),
            self.last_tick.lock().unwrap().len(),
            self.baselines.lock().unwrap().len(),
        )
    }
}

/// The baseline judges' verdicts for one policy.
async fn judge(
    client: &prometheus::PrometheusClient,
    q: &PolicyQueries<String, Endpoint>,
    b: &BaselineInput,
    at: Timestamp,
) -> (String, BTreeMap<String, BaselineVerdict>) {
    let vars = prometheus::Vars {
        namespace: &q.namespace,
        target: &q.target,
        pod_regex: q.pod_regex.as_deref(),
        window: q.window,
    };
    let verdicts = prometheus::baseline::judge_metrics(
        client,
        &b.metrics,
        &b.workload_label,
        &vars,
        b.release,
        at,
        b.interval,
    )
    .await;
    (q.policy.clone(), verdicts)
}

/// Puts back a policy's previous tick, so it is due again as soon as its endpoint is free.
fn untake(last: &mut HashMap<String, u128>, policy: &str, previous: Option<u128>) {
    match previous {
        Some(t) => last.insert(policy.to_owned(), t),
        None => last.remove(policy),
    };
}

/// The policy's interval as its effective settings resolve it (its own, its profile's, the
/// operator's), at least 1 s.
fn interval_of(policy: &RollbackPolicy, ctx: &Context) -> Duration {
    ctx.profiles
        .interval(policy)
        .unwrap_or(ctx.config.interval)
        .max(Duration::from_secs(1))
}

/// The evaluator's Secret lookup: the watched cache first; a Secret it lacks is looked up once
/// per [`MISS_TTL`] to say whether it is missing or lacks the opt-in label. Neither verdict
/// keeps the Secret itself.
struct ExplainedCache<'a> {
    evaluator: &'a Evaluator,
    namespace: &'a str,
}

impl SecretLookup for ExplainedCache<'_> {
    async fn secret(&self, name: &str) -> MissVerdict {
        let cached = CachedSecrets {
            store: &self.evaluator.secrets,
            namespace: self.namespace,
        };
        if let Some(secret) = cached.secret(name).await? {
            return Ok(Some(secret));
        }
        let memo_key = (self.namespace.to_owned(), name.to_owned());
        if let Some((at, verdict)) = self.evaluator.misses.lock().expect("lock").get(&memo_key)
            && at.elapsed() < MISS_TTL
        {
            return verdict.clone();
        }
        let api: Api<Secret> = Api::namespaced(self.evaluator.ctx.client.clone(), self.namespace);
        let verdict = match tokio::time::timeout(MISS_GET_TIMEOUT, api.secret(name)).await {
            Err(_) => {
                return Err(CredentialsError::Api {
                    secret: name.to_owned(),
                    message: "the API server did not answer in time".into(),
                });
            }
            Ok(Err(error)) => return Err(error),
            Ok(Ok(None)) => Ok(None),
            Ok(Ok(Some(secret))) => match secrets::check_policy_access(&secret, name) {
                Err(not_allowed) => Err(not_allowed),
                // Labelled, but the watch has not delivered it yet: use it, keep nothing.
                Ok(()) => return Ok(Some(secret)),
            },
        };
        self.evaluator
            .misses
            .lock()
            .expect("lock")
            .insert(memo_key, (Instant::now(), verdict.clone()));
        verdict
    }
}

/// The policy's Prometheus, with credentials read from its Secrets by GET (or the operator's
/// default). For reads outside the evaluator's ticks (verification).
pub async fn policy_endpoint(
    ctx: &Context,
    policy: &RollbackPolicy,
) -> Result<Endpoint, EvaluationError> {
    let ns = policy.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    endpoint_from(ctx, policy, &secrets).await
}

/// The policy's Prometheus, with credentials read through `secrets` (or the operator's default).
async fn endpoint_from(
    ctx: &Context,
    policy: &RollbackPolicy,
    secrets: &impl SecretLookup,
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
            prometheus::resolve_credentials(secrets, source)
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

/// Active policies, unless their status says they are not ready for this very generation. A
/// policy not reconciled yet (or changed since) is evaluated: waiting for its reconcile would
/// leave it unwatched for as long as the reconcile queue takes after a start.
fn evaluable(policy: &RollbackPolicy) -> bool {
    if policy.spec.suspend {
        return false;
    }
    let Some(status) = &policy.status else {
        return true;
    };
    if status.observed_generation != policy.metadata.generation {
        return true;
    }
    // A rung with a missing reference is reported but does not stop monitoring.
    status
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::READY)
        .is_none_or(|c| c.status == "True" || c.reason == conditions::REFERENCE_MISSING)
}

/// A ReplicaSet's `deployment.kubernetes.io/revision`.
pub fn revision<R: ResourceExt>(rs: &impl std::ops::Deref<Target = R>) -> i64 {
    rs.annotations()
        .get("deployment.kubernetes.io/revision")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Test-only: `FRYS_FAILPOINT=<name>` selects a failure (here: the evaluator stalls, so that
/// tests can see `/healthz` fail).
#[cfg(feature = "failpoints")]
fn failpoint(name: &str) -> bool {
    let hit = std::env::var("FRYS_FAILPOINT").is_ok_and(|v| v == name);
    if hit {
        tracing::error!(failpoint = name, "failpoint reached (test only)");
    }
    hit
}

#[cfg(test)]
mod tests {
    use kube::runtime::watcher::Event;
    use serde_json::json;

    use super::*;
    use crate::{config::OperatorConfig, fixtures};

    fn store<K>(objects: Vec<K>) -> (Store<K>, Writer<K>)
    where
        K: kube::Resource<DynamicType = ()> + Clone + 'static,
    {
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&Event::Init);
        for o in objects {
            writer.apply_watcher_event(&Event::InitApply(o));
        }
        writer.apply_watcher_event(&Event::InitDone);
        (store, writer)
    }

    fn evaluator(policies: Store<RollbackPolicy>) -> Evaluator {
        let (client, _server) = fixtures::mock_client();
        let ctx = Arc::new(Context::for_tests(client, OperatorConfig::defaults()));
        Evaluator::new(ctx, policies, store(vec![]).0, Arc::default())
    }

    fn ready(status: &str, reason: &str, observed: i64) -> serde_json::Value {
        json!({"observedGeneration": observed,
               "conditions": [{"type": "Ready", "status": status, "reason": reason, "message": "",
                               "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
    }

    #[test]
    fn evaluates_without_waiting_for_a_reconcile() {
        let at_generation = |g: i64| {
            let mut p = fixtures::policy("web");
            p.metadata.generation = Some(g);
            p
        };
        assert!(evaluable(&at_generation(1)), "no status yet");
        assert!(!evaluable(&at_generation(1).with_suspend()));
        let not_ready = at_generation(2).with_status_json(ready("False", "TargetNotFound", 2));
        assert!(!evaluable(&not_ready), "not ready for this generation");
        let changed = at_generation(3).with_status_json(ready("False", "TargetNotFound", 2));
        assert!(evaluable(&changed), "the verdict was on an older spec");
        let missing_rung =
            at_generation(2).with_status_json(ready("False", conditions::REFERENCE_MISSING, 2));
        assert!(evaluable(&missing_rung));
        assert!(evaluable(
            &at_generation(2).with_status_json(ready("True", "Valid", 2))
        ));
    }

    #[tokio::test]
    async fn due_once_per_interval_and_again_when_its_endpoint_was_busy() {
        let (policies, _w) = store(vec![fixtures::policy("web")]);
        let e = evaluator(policies);
        let p = fixtures::policy("web");
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let previous = e.take_if_due(&p, now).expect("due at first");
        assert_eq!(e.take_if_due(&p, now), None, "once per tick");
        untake(&mut e.last_tick.lock().unwrap(), &key(&p), previous);
        assert!(e.take_if_due(&p, now).is_some(), "due again after a skip");
        let next = now + jiff::SignedDuration::from_secs(30);
        assert!(
            e.take_if_due(&p, next).is_some(),
            "due at the next interval"
        );
    }

    #[tokio::test]
    async fn steady_policies_are_handed_over_a_window_at_a_time() {
        let names: Vec<String> = (0..STEADY_WINDOW + 8).map(|i| format!("p{i}")).collect();
        let (policies, _w) = store(names.iter().map(|n| fixtures::policy(n)).collect());
        let e = evaluator(policies);
        let refs: Vec<_> = names
            .iter()
            .map(|n| ObjectRef::from_obj(&fixtures::policy(n)))
            .collect();
        e.queue_steady(refs.clone());
        e.queue_steady(refs[..4].to_vec());
        let first = e.next_steady();
        assert_eq!(
            first,
            refs[..STEADY_WINDOW].to_vec(),
            "in order, one window"
        );
        assert!(e.next_steady().is_empty(), "the window is full");
        e.take(&fixtures::policy("p0"));
        e.take(&fixtures::policy("p1"));
        assert_eq!(
            e.next_steady(),
            refs[STEADY_WINDOW..STEADY_WINDOW + 2].to_vec()
        );
        // A reconcile that never takes its evaluation gives its place back after a while.
        for at in e.steady.lock().unwrap().handed.values_mut() {
            *at -= STEADY_HOLD;
        }
        assert_eq!(
            e.next_steady(),
            refs[STEADY_WINDOW + 2..].to_vec(),
            "each policy once, although queued twice"
        );
    }

    #[tokio::test]
    async fn a_deleted_policy_is_forgotten() {
        let (policies, mut writer) = store(vec![fixtures::policy("web"), fixtures::policy("api")]);
        let e = evaluator(policies.clone());
        let now = Timestamp::now();
        for name in ["web", "api"] {
            let p = fixtures::policy(name);
            e.take_if_due(&p, now);
            let evaluation = Evaluation {
                at: now,
                readings: Ok(BTreeMap::new()),
            };
            e.latest.lock().unwrap().insert(key(&p), evaluation);
            e.baselines.lock().unwrap().insert(key(&p), BTreeMap::new());
        }
        e.prune(&policies.state());
        assert_eq!(e.tracked(), (2, 2, 2));
        writer.apply_watcher_event(&Event::Delete(fixtures::policy("api")));
        *e.pruned.lock().unwrap() = None;
        e.prune(&policies.state());
        assert_eq!(e.tracked(), (1, 1, 1));
        assert!(e.take(&fixtures::policy("web")).is_some());
    }
}
