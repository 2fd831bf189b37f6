//! What the benchmark sees of the operator's work through the API server: each policy's
//! evaluations (when `status.health.evaluatedAt` moved, and when that was seen) and incidents,
//! and each RollbackEvent's phase.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::workloads::RUN_LABEL;

#[derive(Default)]
struct Policy {
    /// (evaluatedAt, when the benchmark saw it), in order.
    evaluations: Vec<(Timestamp, Timestamp)>,
    health: Option<String>,
    incident: bool,
    incidents_started: Vec<Timestamp>,
}

struct Event {
    namespace: String,
    policy: String,
    created: Timestamp,
    succeeded_seen: Option<Timestamp>,
}

#[derive(Default)]
struct State {
    policies: HashMap<(String, String), Policy>,
    events: HashMap<(String, String), Event>,
}

#[derive(Clone, Default)]
pub struct Observed {
    state: Arc<Mutex<State>>,
    releases: Arc<AtomicUsize>,
}

fn time_at(v: &Value, pointer: &str) -> Option<Timestamp> {
    v.pointer(pointer)?.as_str()?.parse().ok()
}

fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("rollback.frys.io", "v1alpha1", kind))
}

/// Starts watching this run's policies and events.
pub fn start(client: Client, run: &str) -> Observed {
    let observed = Observed::default();
    let policies: Api<DynamicObject> = Api::all_with(client.clone(), &resource("RollbackPolicy"));
    let config = watcher::Config::default().labels(&format!("{RUN_LABEL}={run}"));
    let o = observed.clone();
    tokio::spawn(async move {
        let mut stream = watcher(policies, config)
            .default_backoff()
            .touched_objects()
            .boxed();
        while let Some(item) = stream.next().await {
            let Ok(p) = item else { continue };
            let seen = Timestamp::now();
            let status = p.data.get("status").cloned().unwrap_or(Value::Null);
            let key = (p.namespace().unwrap_or_default(), p.name_any());
            let mut state = o.state.lock().expect("lock");
            let entry = state.policies.entry(key).or_default();
            if let Some(at) = time_at(&status, "/health/evaluatedAt")
                && entry.evaluations.last().is_none_or(|(last, _)| *last != at)
            {
                entry.evaluations.push((at, seen));
            }
            entry.health = status
                .pointer("/health/status")
                .and_then(Value::as_str)
                .map(str::to_owned);
            entry.incident = status.get("incident").is_some_and(|i| !i.is_null());
            if let Some(started) = time_at(&status, "/incident/startedAt")
                && !entry.incidents_started.contains(&started)
            {
                entry.incidents_started.push(started);
            }
        }
    });
    let events: Api<DynamicObject> = Api::all_with(client, &resource("RollbackEvent"));
    let prefix = format!("fb-{run}-");
    let o = observed.clone();
    tokio::spawn(async move {
        let mut stream = watcher(events, watcher::Config::default())
            .default_backoff()
            .touched_objects()
            .boxed();
        while let Some(item) = stream.next().await {
            let Ok(e) = item else { continue };
            let ns = e.namespace().unwrap_or_default();
            if !ns.starts_with(&prefix) {
                continue;
            }
            let seen = Timestamp::now();
            let phase = e.data.pointer("/status/phase").and_then(Value::as_str);
            let policy = e
                .data
                .pointer("/spec/policyRef/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let created = e.metadata.creation_timestamp.as_ref().map_or(seen, |t| t.0);
            let mut state = o.state.lock().expect("lock");
            let entry = state
                .events
                .entry((ns.clone(), e.name_any()))
                .or_insert(Event {
                    namespace: ns,
                    policy,
                    created,
                    succeeded_seen: None,
                });
            if phase == Some("Succeeded") && entry.succeeded_seen.is_none() {
                entry.succeeded_seen = Some(seen);
            }
        }
    });
    observed
}

fn floor(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

impl Observed {
    pub fn policies(&self) -> usize {
        self.state.lock().expect("lock").policies.len()
    }

    /// A number for naming the next faulty release.
    pub fn next_release(&self) -> usize {
        self.releases.fetch_add(1, Ordering::SeqCst)
    }

    pub fn count_evaluated_since(&self, since: Timestamp) -> usize {
        let state = self.state.lock().expect("lock");
        state
            .policies
            .values()
            .filter(|p| p.evaluations.last().is_some_and(|(at, _)| *at >= since))
            .count()
    }

    /// When the last policy's first evaluation at or after `since` was seen.
    pub fn all_evaluated_since_seen_at(&self, since: Timestamp) -> Option<Timestamp> {
        let state = self.state.lock().expect("lock");
        state
            .policies
            .values()
            .map(|p| {
                p.evaluations
                    .iter()
                    .find(|(at, _)| *at >= since)
                    .map(|(_, seen)| *seen)
            })
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    }

    /// Age of every policy's latest evaluation, in seconds.
    pub fn ages(&self, now: Timestamp) -> Vec<f64> {
        let state = self.state.lock().expect("lock");
        state
            .policies
            .values()
            .filter_map(|p| p.evaluations.last())
            .map(|(at, _)| now.duration_since(*at).as_secs_f64())
            .collect()
    }

    pub fn healthy(&self, ns: &str, name: &str) -> bool {
        let state = self.state.lock().expect("lock");
        state
            .policies
            .get(&(ns.to_owned(), name.to_owned()))
            .is_some_and(|p| p.health.as_deref() == Some("Healthy") && !p.incident)
    }

    pub fn incident_started_since(
        &self,
        ns: &str,
        name: &str,
        since: Timestamp,
    ) -> Option<Timestamp> {
        let state = self.state.lock().expect("lock");
        state
            .policies
            .get(&(ns.to_owned(), name.to_owned()))?
            .incidents_started
            .iter()
            .find(|t| **t >= floor(since))
            .copied()
    }

    fn events_of<'a>(
        state: &'a State,
        ns: &'a str,
        name: &'a str,
        since: Timestamp,
    ) -> impl Iterator<Item = &'a Event> + 'a {
        state
            .events
            .values()
            .filter(move |e| e.namespace == ns && e.policy == name && e.created >= floor(since))
    }

    /// When a RollbackEvent of the policy created since `since` was seen Succeeded.
    pub fn succeeded_since(&self, ns: &str, name: &str, since: Timestamp) -> Option<Timestamp> {
        let state = self.state.lock().expect("lock");
        Self::events_of(&state, ns, name, since).find_map(|e| e.succeeded_seen)
    }

    pub fn event_created_since(&self, ns: &str, name: &str, since: Timestamp) -> bool {
        let state = self.state.lock().expect("lock");
        Self::events_of(&state, ns, name, since).next().is_some()
    }
}
