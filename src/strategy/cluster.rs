//! The thin I/O layer: reads objects as JSON and performs planned changes with the kube client.

use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};

use super::{
    Change, Error, Kind, Objects, Origin, Plan, Record, Remediation, Request, Step, WaitAvailable,
    json, plan_undo,
};
use crate::{api::Action, leader::Fence};

/// Field manager of the changes strategies make (visible in `managedFields`).
pub const FIELD_MANAGER: &str = "frys-rollback";

/// How often a wait re-reads the Deployment, and how often it logs progress.
const POLL: Duration = Duration::from_secs(1);
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Access to one namespace (the policy's).
#[derive(Clone)]
pub struct Cluster {
    pub(super) client: Client,
    namespace: String,
    /// Checked before every write; open unless set by [`Cluster::with_fence`].
    pub(super) fence: Fence,
    /// The event calls are made for (named in webhook bodies); see [`Cluster::with_origin`].
    origin: Origin,
}

/// A failure part way: the error, and the actions as they stand (for apply: those performed
/// before the error, to record; for undo: all, with `undone` set on those undone).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct ApplyError {
    pub actions: Vec<Action>,
    #[source]
    pub error: Error,
}

/// The result of [`apply`].
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// What was done, or why nothing needed doing.
    pub summary: String,
    /// The changes made, with the state they replaced; empty when already applied.
    pub actions: Vec<Action>,
}

/// Plans `remediation` for `target` and performs the plan.
pub async fn apply(
    cluster: &Cluster,
    remediation: &Remediation,
    target: &str,
) -> Result<Applied, ApplyError> {
    let plan = remediation
        .plan(cluster, target)
        .await
        .map_err(|error| ApplyError {
            actions: vec![],
            error,
        })?;
    let actions = cluster.execute(&plan).await?;
    Ok(Applied {
        summary: plan.summary,
        actions,
    })
}

/// Undoes the actions not yet undone, last first. Refuses (and stops) at an object that changed
/// since its action, unless `force`. Returns the actions with `undone` set.
pub async fn undo(
    cluster: &Cluster,
    actions: &[Action],
    force: bool,
) -> Result<Vec<Action>, ApplyError> {
    undo_where(cluster, actions, force, |_| true).await
}

/// Half-opens a circuit breaker: restores the route weights its actions recorded (refusing if
/// the routes changed since). The caller then re-checks health and re-opens (plans the circuit
/// breaker again, which records new actions) or escalates.
pub async fn half_open(cluster: &Cluster, actions: &[Action]) -> Result<Vec<Action>, ApplyError> {
    undo_where(cluster, actions, false, |a| {
        matches!(Record::of(a), Ok(Record::RouteBackends { .. }))
    })
    .await
}

async fn undo_where(
    cluster: &Cluster,
    actions: &[Action],
    force: bool,
    select: impl Fn(&Action) -> bool,
) -> Result<Vec<Action>, ApplyError> {
    let mut out = actions.to_vec();
    for i in (0..out.len()).rev() {
        if out[i].undone || !select(&out[i]) {
            continue;
        }
        match cluster.undo_one(&out[i], force).await {
            Ok(()) => out[i].undone = true,
            Err(error) => {
                return Err(ApplyError {
                    actions: out,
                    error,
                });
            }
        }
    }
    Ok(out)
}

impl Objects for Cluster {
    async fn get(&self, kind: Kind, name: &str) -> Result<Value, Error> {
        let obj = self
            .api(kind)
            .get(name)
            .await
            .map_err(|e| not_found(e, kind, name))?;
        Ok(serde_json::to_value(obj).expect("objects serialize"))
    }

    async fn list(&self, kind: Kind, labels: Option<&str>) -> Result<Vec<Value>, Error> {
        let mut params = ListParams::default();
        if let Some(l) = labels {
            params = params.labels(l);
        }
        let list = self.api(kind).list(&params).await?;
        Ok(list
            .items
            .into_iter()
            .map(|o| serde_json::to_value(o).expect("objects serialize"))
            .collect())
    }
}

impl Cluster {
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            fence: Fence::unfenced(),
            origin: Origin::default(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn api(&self, kind: Kind) -> Api<DynamicObject> {
        self.api_in(kind, None)
    }

    /// The kind's API in `namespace`, or in the policy's namespace.
    fn api_in(&self, kind: Kind, namespace: Option<&str>) -> Api<DynamicObject> {
        let ns = namespace.unwrap_or(&self.namespace);
        Api::namespaced_with(self.client.clone(), ns, &kind.api_resource())
    }

    /// An object in another namespace (a GitOps owner), as JSON.
    pub async fn get_in(&self, kind: Kind, namespace: &str, name: &str) -> Result<Value, Error> {
        let obj = self
            .api_in(kind, Some(namespace))
            .get(name)
            .await
            .map_err(|e| not_found(e, kind, name))?;
        Ok(serde_json::to_value(obj).expect("objects serialize"))
    }

    /// Performs a plan's steps in order. Stops at the first error, returning the actions
    /// performed until then.
    pub async fn execute(&self, plan: &Plan) -> Result<Vec<Action>, ApplyError> {
        let mut done = vec![];
        for step in &plan.steps {
            let result = match step {
                Step::Change(change) => self.perform(change).await.map(|a| done.push(a)),
                Step::WaitAvailable(wait) => self.wait_available(wait).await,
                Step::Call(call) => self.call(call, &self.origin).await.map(|a| done.push(a)),
            };
            if result.is_ok() && step.action().is_some() {
                failpoint_after_change(done.len());
            }
            if let Err(error) = result {
                return Err(ApplyError {
                    actions: done,
                    error,
                });
            }
        }
        Ok(done)
    }

    /// Performs one change; returns its action stamped with the time.
    pub async fn perform(&self, change: &Change) -> Result<Action, Error> {
        self.fence.check()?;
        // A GitOps owner may live in another namespace; its action says which.
        let api = self.api_in(change.kind, change.action.namespace.as_deref());
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let name = &change.name;
        let result = match &change.request {
            Request::JsonPatch(patch) => api
                .patch(name, &params, &Patch::<()>::Json(patch.clone()))
                .await
                .map(drop),
            Request::MergePatch(patch) => api
                .patch(name, &params, &Patch::Merge(patch))
                .await
                .map(drop),
            Request::Scale {
                replicas,
                resource_version,
            } => {
                let mut body = json!({"spec": {"replicas": replicas}});
                if let Some(rv) = resource_version {
                    body["metadata"] = json!({"resourceVersion": rv});
                }
                api.patch_scale(name, &params, &Patch::Merge(body))
                    .await
                    .map(drop)
            }
        };
        result.map_err(|e| write_error(e, change))?;
        tracing::info!(kind = %change.kind, name = %name, namespace = %self.namespace, summary = %change.action.summary, "changed");
        let mut action = change.action.clone();
        action.applied_at = Some(Time(jiff::Timestamp::now()));
        Ok(action)
    }

    async fn undo_one(&self, action: &Action, force: bool) -> Result<(), Error> {
        // A call changed nothing here to compare with: `force` has no meaning for it.
        if let Ok(Record::Webhook { .. }) = Record::of(action) {
            return self.undo_call(action, &self.origin).await;
        }
        let kind = Kind::from_type(&action.api_version, &action.kind).ok_or_else(|| {
            Error::InvalidRecord {
                kind: action.kind.clone(),
                name: action.name.clone(),
                detail: format!("unknown kind {} {}", action.api_version, action.kind),
            }
        })?;
        let current = match &action.namespace {
            Some(ns) => self.get_in(kind, ns, &action.name).await?,
            None => self.get(kind, &action.name).await?,
        };
        match plan_undo(action, &current, force)? {
            Some(change) => self.perform(&change).await.map(drop),
            None => {
                tracing::info!(%kind, name = %action.name, "already in its previous state");
                Ok(())
            }
        }
    }

    /// Waits until the Deployment has the wanted replicas, all available, logging progress.
    async fn wait_available(&self, wait: &WaitAvailable) -> Result<(), Error> {
        let start = Instant::now();
        let mut logged = start;
        loop {
            let d = self.get(Kind::Deployment, &wait.deployment).await?;
            let available = d
                .pointer("/status/availableReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            // A status from before the last spec change does not count.
            let generation = d.pointer("/metadata/generation").and_then(Value::as_i64);
            let observed = d
                .pointer("/status/observedGeneration")
                .and_then(Value::as_i64);
            let current = observed.is_none_or(|o| generation.is_none_or(|g| o >= g));
            if current
                && json::replicas(&d) >= wait.replicas
                && available >= i64::from(wait.replicas)
            {
                tracing::info!(deployment = %wait.deployment, available, elapsed_s = start.elapsed().as_secs(), "standby ready");
                return Ok(());
            }
            if start.elapsed() >= wait.timeout {
                return Err(Error::Timeout {
                    what: format!(
                        "Deployment {} to have {} available replicas ({available} available)",
                        wait.deployment, wait.replicas
                    ),
                    after: wait.timeout,
                });
            }
            if logged.elapsed() >= PROGRESS_EVERY {
                logged = Instant::now();
                tracing::info!(deployment = %wait.deployment, available, wanted = wait.replicas, elapsed_s = start.elapsed().as_secs(), timeout_s = wait.timeout.as_secs(), "waiting for the standby to become ready");
            }
            tokio::time::sleep(POLL.min(wait.timeout.saturating_sub(start.elapsed()))).await;
        }
    }
}

impl Cluster {
    /// Writes only while `fence` holds (the operator's leadership): a deposed leader stops at
    /// its next step instead of racing the new one.
    pub fn with_fence(self, fence: Fence) -> Self {
        Self { fence, ..self }
    }

    /// The event (and policy) the calls of this cluster's plans are made for, named in their
    /// bodies.
    pub fn with_origin(self, origin: Origin) -> Self {
        Self { origin, ..self }
    }
}

fn not_found(e: kube::Error, kind: Kind, name: &str) -> Error {
    match &e {
        kube::Error::Api(s) if s.code == 404 => Error::NotFound {
            kind: kind.to_string(),
            name: name.to_owned(),
        },
        _ => Error::Kube(e),
    }
}

/// Maps a refused write to a typed error: a stale resourceVersion (409) or a failed `test`
/// operation both mean the object changed since it was read. The API server answers a failed
/// JSON Patch test with a bare 422 "Invalid" without causes; a validation failure (also 422)
/// lists its causes and stays a Kubernetes error.
fn write_error(e: kube::Error, change: &Change) -> Error {
    let conflict = |field: String, detail: String| Error::Conflict {
        kind: change.kind.to_string(),
        name: change.name.clone(),
        field,
        detail,
    };
    match (&e, &change.request) {
        (kube::Error::Api(s), Request::JsonPatch(patch))
            if s.code == 422 && s.details.as_ref().is_none_or(|d| d.causes.is_empty()) =>
        {
            let tested: Vec<String> = serde_json::to_value(patch)
                .ok()
                .and_then(|ops| ops.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter(|op| op["op"] == "test")
                .filter_map(|op| op["path"].as_str().map(str::to_owned))
                .collect();
            conflict(
                tested.join(", "),
                format!("a guarding test failed; server said: {} (422)", s.message),
            )
        }
        (kube::Error::Api(s), _) if s.code == 409 => conflict(
            "metadata.resourceVersion".into(),
            format!("server said: {} (409)", s.message),
        ),
        _ => not_found(e, change.kind, &change.name),
    }
}

/// Test-only crash point between two steps of a plan: `FRYS_FAILPOINT=abort-after-change-<n>`
/// aborts the process once `n` changes are applied (as `abort-after-apply` in the event
/// controller does after all of them). Only with the `failpoints` feature.
#[cfg(feature = "failpoints")]
fn failpoint_after_change(n: usize) {
    if std::env::var("FRYS_FAILPOINT").is_ok_and(|v| v == format!("abort-after-change-{n}")) {
        tracing::error!(failpoint = %format!("abort-after-change-{n}"), "failpoint reached: aborting (test only)");
        std::process::abort();
    }
}

#[cfg(not(feature = "failpoints"))]
fn failpoint_after_change(_n: usize) {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::route::{self, HttpRoute, RuleSelector};

    fn route_change() -> Change {
        let obj = json!({"metadata": {"name": "web"}, "spec": {"rules": [{"backendRefs": [{"name": "a"}]}]}});
        let rule = route::find_rule(&HttpRoute, &obj, &RuleSelector::Index(0)).unwrap();
        route::change(
            &HttpRoute,
            "web",
            &rule,
            vec![json!({"name": "a", "weight": 0})],
            "s".into(),
        )
    }

    /// A refusal as the API server sends it.
    fn api_error(status: Value) -> kube::Error {
        kube::Error::Api(
            serde_json::from_value::<kube::core::Status>(status)
                .unwrap()
                .boxed(),
        )
    }

    #[test]
    fn a_failed_test_operation_is_a_conflict_naming_the_tested_paths() {
        // What the API server answers to a failed JSON Patch test.
        let failed_test = json!({"status": "Failure", "code": 422, "reason": "Invalid", "details": {},
            "message": "the server rejected our request due to an error in our request"});
        let err = write_error(api_error(failed_test), &route_change());
        assert!(
            matches!(&err, Error::Conflict { field, .. } if field == "/spec/rules/0/backendRefs"),
            "{err}"
        );
        let invalid = json!({"status": "Failure", "code": 422, "reason": "Invalid", "message": "invalid",
            "details": {"causes": [{"field": "spec.rules[0].backendRefs[0].weight"}]}});
        let err = write_error(api_error(invalid), &route_change());
        assert!(
            matches!(err, Error::Kube(_)),
            "validation errors stay API errors: {err}"
        );
        let missing =
            json!({"status": "Failure", "code": 404, "reason": "NotFound", "message": "gone"});
        let err = write_error(api_error(missing), &route_change());
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
    }
}
