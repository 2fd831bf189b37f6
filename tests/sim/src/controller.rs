//! Simulated Deployment controller and kubelet: ReplicaSets per pod template with upstream's
//! revision annotations, Pods that become Running/Ready after a delay, ReplicaSet and Deployment
//! status.
//!
//! Simplification: scaling is immediate, Recreate-like. The current ReplicaSet is set to
//! `spec.replicas` and every other one to 0 in the same pass, whatever the Deployment's strategy;
//! there is no surge, no maxUnavailable, no progress deadline, and minReadySeconds is ignored.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::kubeutil::{api_code, controlled_by, delete_ignore_missing, patch_params};
use crate::objects::{
    build_pod, build_replica_set, current_rs_annotations, is_ready, is_terminating, pending_status,
    running_status,
};
use crate::rollout::{
    READY_DELAY_ANNOTATION, RolloutCounts, deployment_status, parse_duration, ready_in,
    replica_set_status, same_deployment_status, same_replica_set_status,
};
use crate::shared::{Shared, lock};
use crate::simpod::{SimPod, deployment_of};
use crate::template::{
    DESIRED_REPLICAS, REVISION, REVISION_HISTORY, equal_ignore_hash, plan_revision, random_suffix,
    revision_of, template_hash,
};

/// Periodic resync of every Deployment.
const RESYNC: Duration = Duration::from_secs(30);

/// Reconcile failure (anyhow with context), as the error type kube-runtime needs.
#[derive(Debug)]
pub struct Error(pub anyhow::Error);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Error {}

pub struct Ctx {
    pub client: Client,
    pub shared: Arc<Shared>,
    /// Consecutive failures per object, for the retry backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Ctx {
    pub fn new(client: Client, shared: Arc<Shared>) -> Arc<Ctx> {
        Arc::new(Ctx {
            client,
            shared,
            failures: Mutex::default(),
        })
    }

    /// Exponential retry delay (250 ms doubling to 30 s) for the object's next attempt.
    pub fn backoff(&self, key: String) -> (u32, Duration) {
        let mut failures = lock(&self.failures);
        let n = failures.entry(key).or_insert(0);
        *n += 1;
        let delay = Duration::from_millis(250).saturating_mul(1 << (*n - 1).min(7));
        (*n, delay.min(Duration::from_secs(30)))
    }

    pub fn succeeded(&self, key: &str) {
        lock(&self.failures).remove(key);
    }
}

/// The Deployment controller: Deployments, the ReplicaSets they own, and their Pods.
pub fn controller(client: &Client) -> Controller<Deployment> {
    Controller::new(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        |pod: Pod| {
            let ns = pod.namespace()?;
            deployment_of(&pod).map(|d| ObjectRef::new(&d).within(&ns))
        },
    )
}

pub async fn run(
    controller: Controller<Deployment>,
    ctx: Arc<Ctx>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "deployment controller event");
            }
        })
        .await;
}

fn key_of(d: &Deployment) -> String {
    format!("{}/{}", d.namespace().unwrap_or_default(), d.name_any())
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = key_of(&d);
    let action = reconcile_deployment(&d, &ctx).await.map_err(Error)?;
    ctx.succeeded(&key);
    Ok(action)
}

fn error_policy(d: Arc<Deployment>, err: &Error, ctx: Arc<Ctx>) -> Action {
    let key = key_of(&d);
    let (attempt, delay) = ctx.backoff(key.clone());
    warn!(deployment = %key, attempt, retry_in = ?delay, error = %err, "simulated deployment controller: reconcile failed");
    Action::requeue(delay)
}

fn ready_delay(d: &Deployment, default: Duration) -> Duration {
    match d.annotations().get(READY_DELAY_ANNOTATION) {
        None => default,
        Some(raw) => parse_duration(raw).unwrap_or_else(|e| {
            warn!(deployment = %key_of(d), annotation = READY_DELAY_ANNOTATION, error = %e, "ignoring annotation");
            default
        }),
    }
}

/// The ports the simulated application of `pod` will listen on.
fn listen_ports(pod: &Pod, shared: &Shared) -> Vec<u16> {
    SimPod::from_pod(pod, &shared.config.workload_label)
        .map_or_else(|| vec![crate::simpod::DEFAULT_PORT], |p| p.listen_ports())
}

fn rs_template(rs: &ReplicaSet) -> Option<&k8s_openapi::api::core::v1::PodTemplateSpec> {
    rs.spec.as_ref()?.template.as_ref()
}

/// Deployments with this annotation set to "true" are left alone: for tests that play the
/// Deployment controller themselves (they create the ReplicaSets and check resourceVersions).
pub const IGNORE_ANNOTATION: &str = "sim.frys.io/ignore";

async fn reconcile_deployment(d: &Deployment, ctx: &Ctx) -> anyhow::Result<Action> {
    if d.metadata.deletion_timestamp.is_some()
        || d.annotations().get(IGNORE_ANNOTATION).map(String::as_str) == Some("true")
    {
        return Ok(Action::await_change());
    }
    let ns = d.namespace().unwrap_or_else(|| "default".into());
    let name = d.name_any();
    let uid = d.uid().context("Deployment has no uid")?;
    let spec = d.spec.as_ref().context("Deployment has no spec")?;
    let desired = spec.replicas.unwrap_or(1).max(0);
    let delay = ready_delay(d, ctx.shared.config.ready_delay);
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);

    // Fresh reads: the decisions below must not rest on a lagging cache.
    let mut sets: Vec<ReplicaSet> = rs_api
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing ReplicaSets in {ns}"))?
        .items
        .into_iter()
        .filter(|rs| controlled_by(&rs.metadata, &uid))
        .collect();
    let all_pods = pod_api
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing Pods in {ns}"))?
        .items;

    // The current ReplicaSet: template equal to the Deployment's, ignoring pod-template-hash.
    let current_idx = sets
        .iter()
        .enumerate()
        .filter(|(_, rs)| rs_template(rs).is_some_and(|t| equal_ignore_hash(t, &spec.template)))
        .min_by_key(|(_, rs)| (rs.creation_timestamp().map(|t| t.0), rs.name_any()))
        .map(|(i, _)| i);
    let old_revisions: Vec<i64> = sets
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != current_idx)
        .filter_map(|(_, rs)| revision_of(rs.metadata.annotations.as_ref()))
        .collect();
    let plan = {
        let current = current_idx.map(|i| &sets[i]);
        plan_revision(
            current.and_then(|rs| revision_of(rs.metadata.annotations.as_ref())),
            current.and_then(|rs| rs.annotations().get(REVISION_HISTORY).map(String::as_str)),
            &old_revisions,
        )
    };
    let wanted_annotations = current_rs_annotations(d, &plan, desired);
    let current = match current_idx {
        Some(i) => sets.remove(i),
        None => create_replica_set(&rs_api, d, &uid, desired, &wanted_annotations).await?,
    };
    let olds = sets;
    let current = ensure_replica_set(&rs_api, current, desired, &wanted_annotations).await?;
    let current_name = current.name_any();
    let current_uid = current.uid().unwrap_or_default();

    let mut by_rs: HashMap<String, Vec<Pod>> = HashMap::new();
    for pod in all_pods.into_iter().filter(|p| !is_terminating(p)) {
        if let Some(owner) =
            crate::kubeutil::controller_of(&pod.metadata).filter(|o| o.kind == "ReplicaSet")
        {
            by_rs.entry(owner.uid.clone()).or_default().push(pod);
        }
    }

    // Old ReplicaSets: scaled to zero, their pods deleted.
    let scale_down: BTreeMap<String, String> =
        [(DESIRED_REPLICAS.to_string(), desired.to_string())].into();
    let mut remaining_olds = Vec::new();
    for old in olds {
        let old_uid = old.uid().unwrap_or_default();
        for pod in by_rs.remove(&old_uid).unwrap_or_default() {
            delete_ignore_missing(&pod_api, &pod.name_any())
                .await
                .with_context(|| {
                    format!(
                        "deleting pod {ns}/{} of old ReplicaSet {}",
                        pod.name_any(),
                        old.name_any()
                    )
                })?;
        }
        let old = ensure_replica_set(&rs_api, old, 0, &scale_down).await?;
        sync_rs_status(&rs_api, &old, 0, 0).await?;
        remaining_olds.push(old);
    }

    // Current ReplicaSet: exactly `desired` pods, keeping ready and older ones first.
    let mut pods = by_rs.remove(&current_uid).unwrap_or_default();
    pods.sort_by_key(|p| {
        (
            !is_ready(p),
            p.creation_timestamp().map(|t| t.0),
            p.name_any(),
        )
    });
    for extra in pods.split_off((desired as usize).min(pods.len())) {
        delete_ignore_missing(&pod_api, &extra.name_any())
            .await
            .with_context(|| format!("deleting surplus pod {ns}/{}", extra.name_any()))?;
    }
    while pods.len() < desired as usize {
        pods.push(create_pod(&pod_api, &current, ctx).await?);
    }

    // Simulated kubelet: pods become Running/Ready once `delay` has passed.
    let mut next_due: Option<Duration> = None;
    for pod in &mut pods {
        if is_ready(pod) {
            continue;
        }
        match ready_in(ctx.shared.pod_age(pod), delay) {
            None => {
                let existing_ip = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_deref()?.parse().ok());
                let ip = existing_ip
                    .or_else(|| ctx.shared.allocate_ip(&listen_ports(pod, &ctx.shared)))
                    .ok_or_else(|| anyhow!("no free pod IP"))?;
                let status = running_status(pod, ip);
                *pod = pod_api
                    .patch_status(
                        &pod.name_any(),
                        &patch_params(),
                        &Patch::Merge(json!({"status": status})),
                    )
                    .await
                    .with_context(|| format!("marking pod {ns}/{} ready", pod.name_any()))?;
                info!(pod = %format!("{ns}/{}", pod.name_any()), %ip, "simulated pod is running and ready");
            }
            Some(left) => {
                next_due = Some(next_due.map_or(left, |n| n.min(left)));
                if pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Pending") {
                    let status = pending_status(pod);
                    *pod = pod_api
                        .patch_status(
                            &pod.name_any(),
                            &patch_params(),
                            &Patch::Merge(json!({"status": status})),
                        )
                        .await
                        .with_context(|| format!("marking pod {ns}/{} pending", pod.name_any()))?;
                }
            }
        }
    }
    let ready = pods.iter().filter(|p| is_ready(p)).count() as i32;
    let total = pods.len() as i32;
    sync_rs_status(&rs_api, &current, total, ready).await?;

    prune_history(
        &rs_api,
        remaining_olds,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;

    // Deployment: revision annotation, then status.
    let revision = plan.revision.to_string();
    if d.annotations().get(REVISION) != Some(&revision) {
        let patch = json!({"metadata": {"annotations": {REVISION: revision}}});
        Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
            .patch(&name, &patch_params(), &Patch::Merge(patch))
            .await
            .with_context(|| format!("setting revision {revision} on Deployment {ns}/{name}"))?;
        info!(deployment = %format!("{ns}/{name}"), revision, replicaset = %current_name, "simulated deployment revision");
    }
    let counts = RolloutCounts {
        desired,
        total,
        updated: total,
        ready,
        updated_ready: ready,
    };
    let status = deployment_status(
        d.status.as_ref(),
        d.metadata.generation,
        counts,
        &current_name,
        jiff::Timestamp::now(),
    );
    if !d
        .status
        .as_ref()
        .is_some_and(|prev| same_deployment_status(prev, &status))
    {
        Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
            .patch_status(
                &name,
                &patch_params(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .with_context(|| format!("writing status of Deployment {ns}/{name}"))?;
    }

    let wait = next_due.map_or(RESYNC, |d| (d + Duration::from_millis(5)).min(RESYNC));
    Ok(Action::requeue(wait))
}

/// Creates the ReplicaSet for the Deployment's template. A name taken by another template (hash
/// collision) moves to the next collision count, as upstream does.
async fn create_replica_set(
    rs_api: &Api<ReplicaSet>,
    d: &Deployment,
    uid: &str,
    desired: i32,
    annotations: &BTreeMap<String, String>,
) -> anyhow::Result<ReplicaSet> {
    let template = &d.spec.as_ref().context("Deployment has no spec")?.template;
    for collision in 0..8 {
        let rs = build_replica_set(
            d,
            &template_hash(template, collision),
            desired,
            annotations.clone(),
        );
        let rs_name = rs.name_any();
        match rs_api
            .create(
                &PostParams {
                    field_manager: Some(crate::kubeutil::FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &rs,
            )
            .await
        {
            Ok(created) => {
                info!(replicaset = %format!("{}/{rs_name}", d.namespace().unwrap_or_default()), revision = %annotations[REVISION], "simulated controller created ReplicaSet");
                return Ok(created);
            }
            Err(e) if api_code(&e) == Some(409) => {
                let existing = rs_api
                    .get_opt(&rs_name)
                    .await
                    .with_context(|| format!("reading ReplicaSet {rs_name}"))?;
                if let Some(existing) = existing
                    && controlled_by(&existing.metadata, uid)
                    && rs_template(&existing).is_some_and(|t| equal_ignore_hash(t, template))
                {
                    return Ok(existing);
                }
            }
            Err(e) => return Err(e).with_context(|| format!("creating ReplicaSet {rs_name}")),
        }
    }
    bail!(
        "no free ReplicaSet name for Deployment {} after 8 hash collisions",
        d.name_any()
    )
}

/// Sets `spec.replicas` and the given annotations when they differ.
async fn ensure_replica_set(
    rs_api: &Api<ReplicaSet>,
    rs: ReplicaSet,
    replicas: i32,
    annotations: &BTreeMap<String, String>,
) -> anyhow::Result<ReplicaSet> {
    let changed: BTreeMap<&String, &String> = annotations
        .iter()
        .filter(|(k, v)| rs.annotations().get(*k) != Some(v))
        .collect();
    let current_replicas = rs.spec.as_ref().and_then(|s| s.replicas);
    if changed.is_empty() && current_replicas == Some(replicas) {
        return Ok(rs);
    }
    let patch = json!({"metadata": {"annotations": changed}, "spec": {"replicas": replicas}});
    rs_api
        .patch(&rs.name_any(), &patch_params(), &Patch::Merge(patch))
        .await
        .with_context(|| format!("updating ReplicaSet {}", rs.name_any()))
}

async fn sync_rs_status(
    rs_api: &Api<ReplicaSet>,
    rs: &ReplicaSet,
    pods: i32,
    ready: i32,
) -> anyhow::Result<()> {
    let status = replica_set_status(rs.status.as_ref(), rs.metadata.generation, pods, ready);
    if !rs
        .status
        .as_ref()
        .is_some_and(|prev| same_replica_set_status(prev, &status))
    {
        rs_api
            .patch_status(
                &rs.name_any(),
                &patch_params(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .with_context(|| format!("writing status of ReplicaSet {}", rs.name_any()))?;
    }
    Ok(())
}

async fn create_pod(pod_api: &Api<Pod>, rs: &ReplicaSet, ctx: &Ctx) -> anyhow::Result<Pod> {
    let pp = PostParams {
        field_manager: Some(crate::kubeutil::FIELD_MANAGER.into()),
        ..Default::default()
    };
    for _ in 0..5 {
        let name = format!("{}-{}", rs.name_any(), random_suffix(5));
        match pod_api.create(&pp, &build_pod(rs, name.clone())).await {
            Ok(pod) => {
                if let Some(uid) = pod.uid() {
                    lock(&ctx.shared.created).insert(uid, std::time::Instant::now());
                }
                debug!(pod = %name, "simulated controller created pod");
                return Ok(pod);
            }
            Err(e) if api_code(&e) == Some(409) => continue,
            Err(e) => return Err(e).with_context(|| format!("creating pod {name}")),
        }
    }
    bail!(
        "could not find a free pod name for ReplicaSet {}",
        rs.name_any()
    )
}

/// Deletes the oldest scaled-down ReplicaSets beyond `revisionHistoryLimit`.
async fn prune_history(
    rs_api: &Api<ReplicaSet>,
    mut olds: Vec<ReplicaSet>,
    limit: i32,
) -> anyhow::Result<()> {
    let limit = limit.max(0) as usize;
    if olds.len() <= limit {
        return Ok(());
    }
    olds.sort_by_key(|rs| {
        (
            revision_of(rs.metadata.annotations.as_ref()).unwrap_or(0),
            rs.creation_timestamp().map(|t| t.0),
        )
    });
    let surplus = olds.len() - limit;
    for rs in olds.into_iter().take(surplus) {
        delete_ignore_missing(rs_api, &rs.name_any())
            .await
            .with_context(|| {
                format!(
                    "deleting old ReplicaSet {} beyond revisionHistoryLimit",
                    rs.name_any()
                )
            })?;
        info!(replicaset = %rs.name_any(), "simulated controller pruned old ReplicaSet");
    }
    Ok(())
}
