//! The I/O side of profiles: the profile file (re-read when it changes) and the namespaces'
//! `rollback.frys.io/profile` labels (a metadata-only watch), behind one `resolve(policy)`. The
//! same namespace cache answers whether a namespace is frozen (`rollback.frys.io/freeze`).
//!
//! Why a mounted file and not a ConfigMap watch: the file needs no RBAC at all (the kubelet
//! reads the ConfigMap, the operator reads none), and a kubelet-synced ConfigMap volume changes
//! in place within about a minute, so a cheap poll of a small file applies a change without a
//! restart. (A `subPath` mount would never change: the chart does not use one.)

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store, store::Writer},
        watcher,
    },
};

use super::{InvalidProfiles, ProfileError, Profiles, Resolved, resolve, select};
use crate::{
    api::{RollbackPolicy, labels},
    config::OperatorConfig,
};

type NamespaceMeta = PartialObjectMeta<Namespace>;

/// How often the profile file is checked for a change: reading a few KiB is nothing, and a
/// ConfigMap volume takes the kubelet up to a minute to update anyway.
const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// A profile file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Invalid {
        path: String,
        #[source]
        source: InvalidProfiles,
    },
}

/// Profiles and namespace labels, shared by the reconcilers and the evaluator.
pub struct Source {
    environment: String,
    file: Option<PathBuf>,
    /// The last good configuration (None: the operator has none) and the text it came from.
    current: RwLock<(Option<Arc<Profiles>>, String)>,
    /// Every namespace's metadata (cluster-wide), or the watched one's.
    namespaces: Option<Store<NamespaceMeta>>,
    writer: Mutex<Option<Writer<NamespaceMeta>>>,
}

impl Source {
    /// Reads `--profiles-file` once (an unusable file stops the operator at start, with the
    /// reason) and prepares the namespace cache that [`Source::namespace_changes`] feeds.
    pub fn load(config: &OperatorConfig) -> Result<Self, LoadError> {
        let (profiles, text) = match &config.profiles_file {
            Some(path) => {
                let text = read(path)?;
                let profiles = parse(path, &text)?;
                (Some(Arc::new(profiles)), text)
            }
            None => (None, String::new()),
        };
        let (store, writer) = reflector::store();
        Ok(Self {
            environment: config.environment.clone(),
            file: config.profiles_file.clone(),
            current: RwLock::new((profiles, text)),
            namespaces: Some(store),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Fixed profiles and no namespace labels (unit tests).
    pub fn fixed(environment: &str, profiles: Option<Profiles>) -> Self {
        Self {
            environment: environment.into(),
            file: None,
            current: RwLock::new((profiles.map(Arc::new), String::new())),
            namespaces: None,
            writer: Mutex::new(None),
        }
    }

    /// The profile configuration in force.
    pub fn profiles(&self) -> Option<Arc<Profiles>> {
        self.current.read().expect("lock").0.clone()
    }

    /// The namespace's profile label, from the cache.
    pub fn label_of(&self, namespace: &str) -> Option<String> {
        let store = self.namespaces.as_ref()?;
        store
            .get(&ObjectRef::new(namespace))
            .and_then(|n| n.labels().get(labels::PROFILE).cloned())
    }

    /// Whether the namespace carries the freeze annotation, from the cache; None when the cache
    /// does not know it (not listed yet, created a moment ago, or no cache in unit tests).
    pub fn frozen(&self, namespace: &str) -> Option<bool> {
        let store = self.namespaces.as_ref()?;
        let n = store.get(&ObjectRef::new(namespace))?;
        Some(crate::api::annotations::is_frozen(n.annotations()))
    }

    /// True once the namespace cache has listed (a policy resolved before would miss its
    /// namespace's label).
    pub fn ready(&self) -> bool {
        use futures::FutureExt;
        self.namespaces
            .as_ref()
            .is_none_or(|s| matches!(s.wait_until_ready().now_or_never(), Some(Ok(()))))
    }

    /// Waits until [`Source::ready`].
    pub async fn wait_until_ready(&self) {
        if let Some(store) = &self.namespaces {
            let _ = store.wait_until_ready().await;
        }
    }

    /// The policy's spec completed from its profile (see `profile::resolve`).
    pub fn resolve(&self, policy: &RollbackPolicy) -> Result<Resolved, ProfileError> {
        let namespace = policy.namespace().unwrap_or_default();
        let label = self.label_of(&namespace);
        let profiles = self.profiles();
        let selection = select(profiles.as_deref(), label.as_deref(), &self.environment)?;
        resolve(&policy.spec, &namespace, &selection)
    }

    /// The policy with its spec completed, or as it is when it cannot be (its reconcile
    /// reports why in Ready; meanwhile readers see only what the policy says itself).
    pub fn completed(&self, policy: &RollbackPolicy) -> RollbackPolicy {
        let mut out = policy.clone();
        if let Ok(resolved) = self.resolve(policy) {
            out.spec = resolved.spec;
        }
        out
    }

    /// The policy's interval: its own, else its profile's (None: the operator's). Cheap, for
    /// the evaluator's every tick: no completion of the rest of the spec.
    pub fn interval(&self, policy: &RollbackPolicy) -> Option<Duration> {
        if let Some(own) = policy.spec.interval.as_ref().and_then(|d| d.get().ok()) {
            return Some(own);
        }
        let namespace = policy.namespace().unwrap_or_default();
        let label = self.label_of(&namespace);
        let profiles = self.profiles();
        match select(profiles.as_deref(), label.as_deref(), &self.environment) {
            Ok(super::Selection::Found { profile, .. }) => {
                profile.interval.as_ref().and_then(|d| d.get().ok())
            }
            _ => None,
        }
    }

    /// Yields once each time the profile file changed to a valid configuration (every
    /// policy must then be resolved again). An invalid change is logged and ignored: the last
    /// good configuration stays in force.
    pub fn reloads(self: &Arc<Self>) -> impl Stream<Item = ()> + Send + 'static {
        let source = self.clone();
        futures::stream::unfold(source, |source| async move {
            let path = source.file.clone()?;
            loop {
                tokio::time::sleep(RELOAD_EVERY).await;
                let text = match read(&path) {
                    Ok(text) => text,
                    Err(error) => {
                        tracing::warn!(%error, "profile file unreadable: keeping the last good profiles");
                        continue;
                    }
                };
                if text == source.current.read().expect("lock").1 {
                    continue;
                }
                match parse(&path, &text) {
                    Ok(profiles) => {
                        tracing::info!(profiles = ?profiles.names(), "profile file changed: profiles reloaded");
                        *source.current.write().expect("lock") = (Some(Arc::new(profiles)), text);
                        return Some(((), source));
                    }
                    Err(error) => {
                        tracing::error!(%error, "profile file changed but is invalid: keeping the last good profiles");
                        // Not re-logged until it changes again.
                        source.current.write().expect("lock").1 = text;
                    }
                }
            }
        })
    }

    /// Watches the namespaces into the cache, yielding the name of each namespace that changed
    /// (its policies must be resolved again: a profile label or a freeze). Metadata only, and
    /// without managedFields: a few hundred bytes per namespace. Cluster-wide it watches every
    /// namespace (the freeze annotation cannot be selected on, and a GET per failing
    /// evaluation cost an incident storm a third of its API budget); with `--namespace` only
    /// that namespace, by name, so RBAC can grant it by resourceNames. Call once.
    pub fn namespace_changes(
        &self,
        client: &Client,
        scope: Option<&str>,
    ) -> impl Stream<Item = String> + Send + 'static {
        let writer = self
            .writer
            .lock()
            .expect("lock")
            .take()
            .expect("namespace_changes is called once");
        let config = match scope {
            Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
            None => watcher::Config::default(),
        };
        let api: Api<NamespaceMeta> = Api::all(client.clone());
        watcher(api, config)
            .modify(|n| n.managed_fields_mut().clear())
            .default_backoff()
            .reflect(writer)
            .filter_map(|event| async move {
                match event {
                    Ok(watcher::Event::Apply(n) | watcher::Event::Delete(n)) => Some(n.name_any()),
                    // Initial listing: the policies' first reconciles read the cache anyway.
                    Ok(_) => None,
                    Err(error) => {
                        tracing::warn!(%error, "watching namespace profile labels");
                        None
                    }
                }
            })
    }
}

fn read(path: &std::path::Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn parse(path: &std::path::Path, text: &str) -> Result<Profiles, LoadError> {
    Profiles::parse(text).map_err(|source| LoadError::Invalid {
        path: path.display().to_string(),
        source,
    })
}
