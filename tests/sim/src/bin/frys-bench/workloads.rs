//! The benchmark's workloads: Deployments and their RollbackPolicies, and a stand-in for the
//! Deployment controller (the test API server has none) that keeps ReplicaSet revisions and
//! Deployment status as upstream would, without pods. The metrics generator follows each
//! Deployment's image: a `faulty` tag serves errors.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::generator::{FAULTY_ERRORS, Generator, HEALTHY_ERRORS};

pub const RUN_LABEL: &str = "frys-bench/run";
const DEPLOY_LABEL: &str = "frys-bench/deployment";
const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH: &str = "pod-template-hash";
const MANAGER: &str = "frys-bench";
/// Image of the healthy release; a fault is a release of `bench:v2-faulty-<n>`.
pub const GOOD_IMAGE: &str = "bench:v1";

/// Writes at once while creating objects.
const CREATE_CONCURRENCY: usize = 32;

/// What the policies say (the benchmark's knobs).
#[derive(Clone, Debug)]
pub struct PolicyShape {
    pub interval: String,
    pub rate_window: String,
    pub consecutive_failures: u32,
    pub stabilization_delay: String,
}

pub fn deployment(ns: &str, name: &str, run: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name, "namespace": ns, "labels": {RUN_LABEL: run, "app": name},
            // frys-sim, when it runs too, leaves these to the stand-in below.
            "annotations": {"sim.frys.io/ignore": "true"},
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": GOOD_IMAGE}]},
            },
        },
    }))
    .expect("a valid Deployment")
}

pub fn policy(ns: &str, name: &str, run: &str, shape: &PolicyShape) -> Value {
    json!({
        "apiVersion": "rollback.frys.io/v1alpha1",
        "kind": "RollbackPolicy",
        "metadata": {"name": name, "namespace": ns, "labels": {RUN_LABEL: run}},
        "spec": {
            "targetRef": {"name": name},
            "interval": shape.interval,
            "rateWindow": shape.rate_window,
            "consecutiveFailures": shape.consecutive_failures,
            // Faults may hit the same workload again within one run.
            "cooldown": "1s",
            "metrics": [
                {"name": "errors", "preset": "errorRate", "critical": 0.05},
                {"name": "latency", "preset": "responseTime", "critical": 5000},
            ],
            "strategies": [{"type": "VersionRollback", "versionRollback": {}}],
            "verification": {"stabilizationDelay": shape.stabilization_delay, "timeout": "2m"},
        },
    })
}

/// Creates the namespaces, then every Deployment (with its first ReplicaSet and status, through
/// the stand-in controller's code), then every policy. Returns the seconds each phase took.
pub async fn create(
    client: &Client,
    namespaces: &[String],
    workloads: &[(String, String)],
    run: &str,
    shape: &PolicyShape,
) -> anyhow::Result<(f64, f64)> {
    let nss: Api<Namespace> = Api::all(client.clone());
    for ns in namespaces {
        let n: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns, "labels": {RUN_LABEL: run}}}))?;
        nss.create(&PostParams::default(), &n).await?;
    }
    let started = std::time::Instant::now();
    futures::stream::iter(workloads.iter().map(|(ns, name)| async move {
        let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let d = api
            .create(&PostParams::default(), &deployment(ns, name, run))
            .await?;
        sync(client, &d).await
    }))
    .buffer_unordered(CREATE_CONCURRENCY)
    .try_collect::<Vec<()>>()
    .await?;
    let deployments = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    let gvk = kube::api::GroupVersionKind::gvk("rollback.frys.io", "v1alpha1", "RollbackPolicy");
    let resource = kube::api::ApiResource::from_gvk(&gvk);
    futures::stream::iter(workloads.iter().map(|(ns, name)| {
        let resource = resource.clone();
        async move {
            let api: Api<kube::api::DynamicObject> =
                Api::namespaced_with(client.clone(), ns, &resource);
            let p: kube::api::DynamicObject = serde_json::from_value(policy(ns, name, run, shape))?;
            api.create(&PostParams::default(), &p).await?;
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(CREATE_CONCURRENCY)
    .try_collect::<Vec<()>>()
    .await?;
    Ok((deployments, started.elapsed().as_secs_f64()))
}

/// A stable hash of a pod template (FNV-1a over its JSON; serde_json's maps are sorted).
fn template_hash(template: &Value) -> String {
    let mut t = template.clone();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH);
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in serde_json::to_string(&t).unwrap_or_default().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:010x}", h & 0xff_ffff_ffff)
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// What the Deployment controller would do for `d`'s current template: the ReplicaSet of that
/// template becomes the newest revision (created if new), then the Deployment's revision
/// annotation and status say the rollout is complete with one available replica.
pub async fn sync(client: &Client, d: &Deployment) -> anyhow::Result<()> {
    let ns = d.namespace().unwrap_or_default();
    let name = d.name_any();
    let template = serde_json::to_value(d.spec.as_ref().map(|s| &s.template))?;
    let hash = template_hash(&template);
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let owned = rss
        .list(&ListParams::default().labels(&format!("{DEPLOY_LABEL}={name}")))
        .await?
        .items;
    let newest = owned.iter().map(revision_of).max().unwrap_or(0);
    let current = owned.iter().find(|rs| rs.labels().get(HASH) == Some(&hash));
    let revision = match current {
        Some(rs) if revision_of(rs) == newest => newest,
        Some(rs) => {
            let patch = json!({"metadata": {"annotations": {REVISION: (newest + 1).to_string()}}});
            rss.patch(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
            newest + 1
        }
        None => {
            let mut t = template.clone();
            t["metadata"]["labels"][HASH] = json!(hash);
            let rs: ReplicaSet = serde_json::from_value(json!({
                "metadata": {
                    "name": format!("{name}-{hash}"),
                    "namespace": ns,
                    "labels": {DEPLOY_LABEL: name, "app": name, HASH: hash},
                    "annotations": {REVISION: (newest + 1).to_string()},
                    "ownerReferences": [{
                        "apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                        "uid": d.metadata.uid, "controller": true, "blockOwnerDeletion": true,
                    }],
                },
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": name, HASH: hash}},
                    "template": t,
                },
            }))?;
            rss.create(&PostParams::default(), &rs).await?;
            newest + 1
        }
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    if d.annotations().get(REVISION) != Some(&revision.to_string()) {
        let patch = json!({"metadata": {"annotations": {REVISION: revision.to_string()}}});
        deployments
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }
    let status = json!({"status": {
        "observedGeneration": d.metadata.generation,
        "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
             "message": "Deployment has minimum availability."},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "message": format!("ReplicaSet \"{name}-{hash}\" has successfully progressed.")},
        ],
    }});
    deployments
        .patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "status": status["status"],
            })),
        )
        .await?;
    Ok(())
}

/// Whether a Deployment runs a faulty image.
pub fn is_faulty(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .is_some_and(|p| {
            p.containers
                .iter()
                .any(|c| c.image.as_deref().unwrap_or("").contains("faulty"))
        })
}

/// A failed sync of the stand-in controller (retried).
#[derive(Debug)]
struct SyncError(String);

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SyncError {}

/// Runs the stand-in Deployment controller over this run's Deployments until the process ends.
pub async fn controller(client: Client, run: String, generator: Arc<Generator>) {
    let api: Api<Deployment> = Api::all(client.clone());
    let config = watcher::Config::default().labels(&format!("{RUN_LABEL}={run}"));
    let ctx = Arc::new((client, generator));
    Controller::new(api, config)
        .with_config(ControllerConfig::default().concurrency(16))
        .run(
            |d: Arc<Deployment>, ctx: Arc<(Client, Arc<Generator>)>| async move {
                let (client, generator) = ctx.as_ref();
                let share = if is_faulty(&d) {
                    FAULTY_ERRORS
                } else {
                    HEALTHY_ERRORS
                };
                let done =
                    d.status.as_ref().and_then(|s| s.observed_generation) == d.metadata.generation;
                if !done {
                    sync(client, &d)
                        .await
                        .map_err(|e| SyncError(format!("{e:#}")))?;
                }
                // The series follow the rollout's end, as the pods' metrics would.
                generator.set_error_share(&d.namespace().unwrap_or_default(), &d.name_any(), share);
                Ok::<_, SyncError>(Action::await_change())
            },
            |_d, error, _ctx| {
                tracing::warn!(%error, "bench controller");
                Action::requeue(Duration::from_millis(500))
            },
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

/// The names of `n` workloads spread round-robin over `namespaces`.
pub fn names(n: usize, namespaces: &[String]) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (namespaces[i % namespaces.len()].clone(), format!("w{i:05}")))
        .collect()
}
