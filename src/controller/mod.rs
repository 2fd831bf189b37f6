//! The reconcilers: one kube-runtime `Controller` per kind, sharing a `Context`.
//!
//! Like kube-rs' controller-rs: reconcile functions return `Result<Action, Error>`, an
//! `error_policy` decides the retry, status is written by server-side apply under one field
//! manager per controller so the two never erase each other's fields.

mod conditions;
pub mod digest;
mod drill;
mod evaluation;
mod evaluator;
mod event;
mod gitops;
pub(crate) mod health; // pure: also used by `frys-rollback explain`
mod policy;
mod replica_sets;

use std::sync::Arc;

use futures::{FutureExt, StreamExt, future::Shared};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client, Resource,
    runtime::{
        events::{Recorder, Reporter},
        reflector::Store,
    },
};

use crate::{api::RollbackPolicy, config::OperatorConfig, telemetry::Metrics};

pub use conditions::{condition, set_condition};

/// A cached ReplicaSet: metadata only (name, owner, revision annotation, creation time, labels
/// with the template hash). Its template is read from the API server when a rollback needs it.
pub type ReplicaSetMeta = kube::core::PartialObjectMeta<k8s_openapi::api::apps::v1::ReplicaSet>;

/// Field manager of the policy controller's status writes.
pub const POLICY_MANAGER: &str = "frys-rollback-policy";
/// Field manager of the event controller's status writes.
pub const EVENT_MANAGER: &str = "frys-rollback-event";

/// Everything a reconciliation may need.
pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub metrics: Metrics,
    pub recorder: Recorder,
    /// Restricts the operator to one namespace when set.
    pub namespace: Option<String>,
    /// For verification's HTTP checks (connections pooled across events).
    pub http: reqwest::Client,
    /// Sends alerts to the policies' webhook sinks, never blocking a reconcile.
    pub notifier: crate::notify::Notifier,
    /// Leadership: checked right before each remediation step and event phase write.
    pub fence: crate::leader::Fence,
    /// Beaten by the evaluator each tick; `/healthz` fails when it stops.
    pub liveness: crate::server::Liveness,
    /// Signs and checks the events' recorded actions (undo applies only what it signed).
    pub keys: digest::Keys,
    /// Environment profiles and the namespaces' profile labels: every reader of a policy's
    /// spec reads it completed from its profile (`Source::completed`).
    pub profiles: Arc<crate::profile::Source>,
    /// The policy controller's cache, for the event controller (set once both exist).
    pub(crate) policy_cache: std::sync::OnceLock<Store<RollbackPolicy>>,
    /// The policy controller's ReplicaSet index, for verification (set once it exists).
    pub(crate) replica_set_cache: std::sync::OnceLock<Arc<replica_sets::ReplicaSetIndex>>,
    /// The resourceVersion of each active event as this process last wrote it.
    pub(crate) event_versions: event::Versions,
}

#[cfg(test)]
impl Context {
    /// A context for in-process tests: unfenced, test signing key, `config` as given.
    pub(crate) fn for_tests(client: Client, config: OperatorConfig) -> Self {
        let profiles = Arc::new(crate::profile::Source::fixed(&config.environment, None));
        Self {
            recorder: Recorder::new(client.clone(), Reporter::from("frys-rollback-test")),
            client,
            config,
            metrics: Metrics::default(),
            namespace: None,
            http: reqwest::Client::new(),
            notifier: crate::notify::Notifier::default(),
            fence: crate::leader::Fence::unfenced(),
            liveness: Default::default(),
            keys: digest::Keys::new(vec![7; 32], vec![]),
            profiles,
            policy_cache: Default::default(),
            replica_set_cache: Default::default(),
            event_versions: Default::default(),
        }
    }
}

/// Errors of a reconciliation; each is retried by the controller's error policy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("serializing status: {0}")]
    Serialization(#[from] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error(transparent)]
    NotLeader(#[from] crate::leader::NotLeader),
}

impl Error {
    /// Short label for the error metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "Kube",
            Error::MissingField(_) => "MissingField",
            Error::Serialization(_) => "Serialization",
            Error::Invalid(_) => "Invalid",
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "Finalizer",
            },
            Error::NotLeader(_) => "NotLeader",
        }
    }

    /// A 409: the object changed since it was read (a compare-and-swap lost).
    pub fn is_conflict(&self) -> bool {
        match self {
            Error::Kube(kube::Error::Api(e)) => e.code == 409,
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.is_conflict(),
                _ => false,
            },
            _ => false,
        }
    }
}

/// What a cache keeps of an object: not its managedFields, nor kubectl's copy of the whole
/// object in an annotation. Nothing reads either, and they are most of an object's size.
pub fn trim_for_cache<K: kube::ResourceExt>(object: &mut K) {
    object.managed_fields_mut().clear();
    object
        .annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
}

/// Annotation of a cached Deployment (never of the object in the API server): the hash of the
/// pod template it ran when it was cached, set only when it carries the hash of a template a
/// rollback rolled back from (the one comparison the cache's readers make with its template).
pub const CACHED_TEMPLATE_HASH: &str = "rollback.frys.io/cached-template-hash";

/// What the Deployment cache keeps: [`trim_for_cache`], and not the pod template's spec. Nothing
/// reads it from the cache (a remediation reads its target from the API server), and it is most
/// of a Deployment: 27 MB of typed structs for 10,000 one-container templates (BENCHMARKS.md
/// "Memory"), far more with real ones.
pub fn trim_deployment_for_cache(d: &mut Deployment) {
    trim_for_cache(d);
    let Some(spec) = d.spec.as_mut() else {
        return;
    };
    if let Some(annotations) = d.metadata.annotations.as_mut() {
        annotations.remove(CACHED_TEMPLATE_HASH);
        if annotations.contains_key(crate::strategy::ROLLED_BACK_FROM)
            && let Ok(template) = serde_json::to_value(&spec.template)
        {
            annotations.insert(
                CACHED_TEMPLATE_HASH.into(),
                crate::strategy::template_hash(&template),
            );
        }
    }
    spec.template.spec = None;
}

/// `Api` for a kind in one namespace, or in all when the operator is cluster-wide.
pub fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A future that completes on SIGTERM or SIGINT; clones complete together.
pub type Shutdown = Shared<futures::future::BoxFuture<'static, ()>>;

pub fn shutdown_signal() -> Shutdown {
    async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        }
    }
    .boxed()
    .shared()
}

/// Runs the controllers (policies, events, drills) until `shutdown` completes. `probes.ready` is set once both have listed
/// their objects.
// Each argument is one independent piece the process sets up; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: Client,
    config: OperatorConfig,
    namespace: Option<String>,
    metrics: Metrics,
    probes: crate::server::Probes,
    shutdown: Shutdown,
    fence: crate::leader::Fence,
    keys: digest::Keys,
    profiles: Arc<crate::profile::Source>,
) {
    let reporter = Reporter {
        controller: "frys-rollback".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        config,
        metrics,
        namespace,
        http: crate::egress::client_builder()
            .build()
            .expect("an HTTP client builds"),
        notifier: crate::notify::Notifier::default(),
        fence,
        liveness: probes.liveness.clone(),
        keys,
        profiles,
        policy_cache: Default::default(),
        replica_set_cache: Default::default(),
        event_versions: Default::default(),
    });

    let (events, event_store) = event::controller(ctx.clone(), shutdown.clone());
    let drills = drill::controller(ctx.clone(), shutdown.clone());
    let (policies, policy_store) = policy::controller(ctx.clone(), event_store.clone(), shutdown);
    let _ = ctx.policy_cache.set(policy_store.clone());
    let readiness = async move {
        let (a, b) = futures::join!(
            policy_store.wait_until_ready(),
            event_store.wait_until_ready()
        );
        if a.is_ok() && b.is_ok() {
            probes
                .ready
                .store(true, std::sync::atomic::Ordering::SeqCst);
            tracing::info!("caches synced, ready");
        }
    };
    futures::join!(
        policies.for_each(|_| async {}),
        events.for_each(|_| async {}),
        drills.for_each(|_| async {}),
        readiness
    );
}
