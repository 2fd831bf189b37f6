//! The ReplicaSets of each Deployment, indexed by owner as the watch delivers them.
//!
//! A reflector `Store` can only be scanned, and finding one target's ReplicaSets by scanning
//! every ReplicaSet made each reconcile and each evaluation O(ReplicaSets in the cluster). This
//! cache keeps them by owner uid instead, so a target's revisions cost a lookup. It replaces the
//! store rather than sitting beside it, so each ReplicaSet's metadata is held once.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
};

use k8s_openapi::api::apps::v1::Deployment;
use kube::{ResourceExt, runtime::watcher::Event};
use tokio::sync::watch;

use super::ReplicaSetMeta;

/// ReplicaSet metadata by owner, newest revision last on read.
pub struct ReplicaSetIndex {
    state: RwLock<State>,
    ready: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    live: Index,
    /// A re-list in progress: served from `live` until it completes, as the reflector does.
    relisting: Option<Index>,
}

#[derive(Default)]
struct Index {
    /// Owner uid → (namespace/name → ReplicaSet); ordered, so equal revisions read the same
    /// way every time.
    by_owner: HashMap<String, BTreeMap<String, Arc<ReplicaSetMeta>>>,
    /// namespace/name → the owner uids it is filed under, to move or drop it on change.
    owners: HashMap<String, Vec<String>>,
}

impl Index {
    fn insert(&mut self, rs: ReplicaSetMeta) {
        let key = key(&rs);
        self.remove(&key);
        let uids: Vec<String> = rs
            .owner_references()
            .iter()
            .map(|o| o.uid.clone())
            .collect();
        let rs = Arc::new(rs);
        for uid in &uids {
            self.by_owner
                .entry(uid.clone())
                .or_default()
                .insert(key.clone(), rs.clone());
        }
        self.owners.insert(key, uids);
    }

    fn remove(&mut self, key: &str) {
        for uid in self.owners.remove(key).unwrap_or_default() {
            if let Some(owned) = self.by_owner.get_mut(&uid) {
                owned.remove(key);
                if owned.is_empty() {
                    self.by_owner.remove(&uid);
                }
            }
        }
    }
}

fn key(rs: &ReplicaSetMeta) -> String {
    format!("{}/{}", rs.namespace().unwrap_or_default(), rs.name_any())
}

impl Default for ReplicaSetIndex {
    fn default() -> Self {
        Self {
            state: RwLock::default(),
            ready: watch::channel(false).0,
        }
    }
}

impl ReplicaSetIndex {
    /// Applies one watch event.
    pub fn apply(&self, event: Event<ReplicaSetMeta>) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Apply(rs) => state.live.insert(rs),
            Event::Delete(rs) => state.live.remove(&key(&rs)),
            Event::Init => state.relisting = Some(Index::default()),
            Event::InitApply(rs) => state.relisting.get_or_insert_default().insert(rs),
            Event::InitDone => {
                state.live = state.relisting.take().unwrap_or_default();
                drop(state);
                self.ready.send_replace(true);
            }
        }
    }

    /// The ReplicaSets `deployment` owns, newest revision last.
    pub fn owned(&self, deployment: &Deployment) -> Vec<Arc<ReplicaSetMeta>> {
        let Some(uid) = deployment.metadata.uid.as_deref() else {
            return vec![];
        };
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let mut owned: Vec<Arc<ReplicaSetMeta>> = state
            .live
            .by_owner
            .get(uid)
            .map(|owned| owned.values().cloned().collect())
            .unwrap_or_default();
        drop(state);
        owned.sort_by_key(super::evaluator::revision);
        owned
    }

    /// Whether the first list has completed.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Resolves once the first list has completed.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.subscribe();
        // An error means the index is gone, and with it whoever waits for it.
        let _ = ready.wait_for(|ready| *ready).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rs(name: &str, owner: &str, revision: u32) -> ReplicaSetMeta {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": name, "namespace": "shop",
                "annotations": {"deployment.kubernetes.io/revision": revision.to_string()},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                    "name": "web", "uid": owner}]
            }
        }))
        .unwrap()
    }

    fn deployment(uid: &str) -> Deployment {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "shop", "uid": uid}}),
        )
        .unwrap()
    }

    fn names(index: &ReplicaSetIndex, uid: &str) -> Vec<String> {
        index
            .owned(&deployment(uid))
            .iter()
            .map(|rs| rs.name_any())
            .collect()
    }

    #[tokio::test]
    async fn lookups_follow_the_watch() {
        let index = ReplicaSetIndex::default();
        index.apply(Event::Init);
        index.apply(Event::InitApply(rs("web-2", "u1", 2)));
        index.apply(Event::InitApply(rs("web-1", "u1", 1)));
        index.apply(Event::InitApply(rs("api-1", "u2", 1)));
        // Nothing is served before the first list completes.
        assert!(names(&index, "u1").is_empty());
        index.apply(Event::InitDone);
        index.wait_until_ready().await;
        assert_eq!(names(&index, "u1"), ["web-1", "web-2"]);
        assert_eq!(names(&index, "u2"), ["api-1"]);

        // Adopted by another owner: moved, not duplicated.
        index.apply(Event::Apply(rs("web-1", "u2", 1)));
        assert_eq!(names(&index, "u1"), ["web-2"]);
        assert_eq!(names(&index, "u2"), ["api-1", "web-1"]);
        index.apply(Event::Delete(rs("web-2", "u1", 2)));
        assert!(names(&index, "u1").is_empty());

        // A re-list replaces the contents at its end, objects gone meanwhile included.
        index.apply(Event::Init);
        index.apply(Event::InitApply(rs("web-3", "u1", 3)));
        assert_eq!(names(&index, "u2"), ["api-1", "web-1"]);
        index.apply(Event::InitDone);
        assert_eq!(names(&index, "u1"), ["web-3"]);
        assert!(names(&index, "u2").is_empty());
    }
}
