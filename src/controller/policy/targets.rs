//! The cached policies by target: which policies of a namespace name a given Deployment. A
//! reconcile (one policy per target) and every Deployment or policy watch event ask this; a
//! scan of the whole policy cache each time made an interval cost O(policies²).

use std::{
    collections::{BTreeSet, HashMap},
    sync::Mutex,
};

use kube::{
    ResourceExt,
    runtime::{reflector::ObjectRef, watcher},
};

use crate::api::RollbackPolicy;

/// (namespace, name) of a policy or a Deployment.
type Key = (String, String);

/// Fed with the policy watch's events, in order (see [`TargetIndex::apply`]).
#[derive(Default)]
pub struct TargetIndex {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (namespace, target) → names of the policies naming it.
    by_target: HashMap<Key, BTreeSet<String>>,
    /// (namespace, policy) → its target, to move or drop it.
    target_of: HashMap<Key, String>,
    /// A re-list in progress: what it has shown so far (swapped in when it is done).
    relisting: Option<Box<Inner>>,
}

impl Inner {
    fn insert(&mut self, p: &RollbackPolicy) {
        let ns = p.namespace().unwrap_or_default();
        let key = (ns.clone(), p.name_any());
        let target = p.spec.target_ref.name.clone();
        if let Some(old) = self.target_of.insert(key.clone(), target.clone()) {
            self.remove_from(&ns, &old, &key.1);
        }
        self.by_target
            .entry((ns, target))
            .or_default()
            .insert(key.1);
    }

    fn remove(&mut self, p: &RollbackPolicy) {
        let key = (p.namespace().unwrap_or_default(), p.name_any());
        if let Some(old) = self.target_of.remove(&key) {
            self.remove_from(&key.0, &old, &key.1);
        }
    }

    fn remove_from(&mut self, ns: &str, target: &str, name: &str) {
        let key = (ns.to_owned(), target.to_owned());
        if let Some(names) = self.by_target.get_mut(&key) {
            names.remove(name);
            if names.is_empty() {
                self.by_target.remove(&key);
            }
        }
    }
}

impl TargetIndex {
    /// Applies one event of the policy watch (the same events the reflector applies).
    pub fn apply(&self, event: &watcher::Event<RollbackPolicy>) {
        let mut inner = self.inner.lock().expect("lock");
        match event {
            watcher::Event::Apply(p) => {
                inner.insert(p);
                // A change during a re-list must survive the swap.
                if let Some(next) = inner.relisting.as_mut() {
                    next.insert(p);
                }
            }
            watcher::Event::Delete(p) => {
                inner.remove(p);
                if let Some(next) = inner.relisting.as_mut() {
                    next.remove(p);
                }
            }
            watcher::Event::Init => inner.relisting = Some(Box::default()),
            watcher::Event::InitApply(p) => {
                inner.relisting.get_or_insert_with(Box::default).insert(p);
            }
            watcher::Event::InitDone => {
                if let Some(next) = inner.relisting.take() {
                    inner.by_target = next.by_target;
                    inner.target_of = next.target_of;
                }
            }
        }
    }

    /// The policies of `namespace` whose target is `target`.
    pub fn targeting(&self, namespace: &str, target: &str) -> Vec<ObjectRef<RollbackPolicy>> {
        let inner = self.inner.lock().expect("lock");
        inner
            .by_target
            .get(&(namespace.to_owned(), target.to_owned()))
            .map(|names| {
                names
                    .iter()
                    .map(|n| ObjectRef::new(n).within(namespace))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use watcher::Event;

    use super::*;
    use crate::fixtures;

    fn policy(name: &str, target: &str) -> RollbackPolicy {
        let mut p = fixtures::policy(name);
        p.spec.target_ref.name = target.into();
        p
    }

    fn names(index: &TargetIndex, target: &str) -> Vec<String> {
        let ns = fixtures::policy("x").namespace().unwrap_or_default();
        index
            .targeting(&ns, target)
            .into_iter()
            .map(|r| r.name)
            .collect()
    }

    #[test]
    fn follows_applies_moves_and_deletes() {
        let index = TargetIndex::default();
        index.apply(&Event::Apply(policy("a", "web")));
        index.apply(&Event::Apply(policy("b", "web")));
        assert_eq!(names(&index, "web"), ["a", "b"]);
        index.apply(&Event::Apply(policy("b", "api")));
        assert_eq!(names(&index, "web"), ["a"]);
        assert_eq!(names(&index, "api"), ["b"]);
        index.apply(&Event::Delete(policy("a", "web")));
        assert!(names(&index, "web").is_empty());
    }

    #[test]
    fn a_relist_replaces_what_it_no_longer_shows() {
        let index = TargetIndex::default();
        index.apply(&Event::Apply(policy("gone", "web")));
        index.apply(&Event::Init);
        index.apply(&Event::InitApply(policy("kept", "web")));
        assert_eq!(
            names(&index, "web"),
            ["gone"],
            "the old view until the list is done"
        );
        index.apply(&Event::Apply(policy("new", "web")));
        index.apply(&Event::InitDone);
        assert_eq!(names(&index, "web"), ["kept", "new"]);
    }
}
