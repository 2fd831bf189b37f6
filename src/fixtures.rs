//! Test fixtures: builders for the objects unit tests need, and a scripted mock API server.
//!
//! The builders start from one small, valid world (namespace `shop`, a Deployment `web` running
//! `demo:v2`, its ReplicaSets of revisions 1 and 2, a policy `web` protecting it with one
//! VersionRollback rung, an event `web-1` of that policy) and change one thing at a time with
//! `with_*` methods.
//!
//! The mock API server follows kube-rs controller-rs' `fixtures.rs`: a [`kube::Client`] over a
//! `tower-test` mock service, and a [`Scenario`] that lists the calls a reconcile must make, in
//! order, each with its canned answer. A call out of order, a call too many or a call missing
//! fails the test.

use std::{collections::BTreeMap, time::Duration};

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::{
    api::apps::v1::Deployment, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::{Client, Resource, client::Body};
use serde_json::{Value, json};

use crate::{
    api::{
        Action, EventPhase, EventType, MetricSpec, Preset, RollbackEvent, RollbackEventSpec,
        RollbackEventStatus, RollbackPolicy, RollbackPolicySpec, StrategyKind,
    },
    strategy::{Plan, Record, Request as Write, template_hash},
};

/// The namespace of every fixture.
pub const NS: &str = "shop";
/// Creation times are this many seconds after the Unix epoch, plus the offset asked for.
const EPOCH: i64 = 1_700_000_000;

fn at(offset_secs: i64) -> Time {
    Time(Timestamp::from_second(EPOCH + offset_secs).expect("a valid timestamp"))
}

/// A preset metric as a policy lists it, with nothing else set.
pub fn metric(name: &str, preset: Preset) -> MetricSpec {
    MetricSpec {
        name: name.into(),
        preset: Some(preset),
        query: None,
        alert: None,
        warning: None,
        critical: None,
        direction: None,
        weight: None,
        class: None,
        baseline: None,
    }
}

/// A RollbackPolicy `name` in `shop` protecting Deployment `web`: one `errors` metric (error
/// rate preset), one VersionRollback rung, uid `uid-<name>`, no status.
pub fn policy(name: &str) -> RollbackPolicy {
    let spec: RollbackPolicySpec = serde_json::from_value(json!({
        "targetRef": {"name": "web"},
        "metrics": [{"name": "errors", "preset": "errorRate"}],
        "strategies": [{"type": "VersionRollback"}],
    }))
    .expect("a valid policy spec");
    let mut p = RollbackPolicy::new(name, spec);
    p.metadata.namespace = Some(NS.into());
    p.metadata.uid = Some(format!("uid-{name}"));
    p.metadata.creation_timestamp = Some(at(0));
    p
}

/// Modifiers of a policy fixture.
impl RollbackPolicy {
    pub fn with_target(mut self, deployment: &str) -> Self {
        self.spec.target_ref.name = deployment.into();
        self
    }

    /// Created this many seconds after the fixtures' epoch (policies of one target are ordered
    /// by age).
    pub fn with_created(mut self, offset_secs: i64) -> Self {
        self.metadata.creation_timestamp = Some(at(offset_secs));
        self
    }

    pub fn with_metric(mut self, name: &str, preset: Preset) -> Self {
        self.spec.metrics.push(metric(name, preset));
        self
    }

    pub fn with_min_request_rate(mut self, rate: f64) -> Self {
        self.spec.min_request_rate = Some(rate);
        self
    }

    pub fn with_dry_run(mut self) -> Self {
        self.spec.dry_run = true;
        self
    }

    pub fn with_suspend(mut self) -> Self {
        self.spec.suspend = true;
        self
    }

    /// The status as JSON (the API server's form).
    pub fn with_status_json(mut self, status: Value) -> Self {
        self.status = Some(serde_json::from_value(status).expect("a valid policy status"));
        self
    }
}

/// A RollbackEvent `name` in `shop` of policy `web`: Automatic, VersionRollback, no status,
/// owned by nothing yet, resourceVersion "1".
pub fn event(name: &str) -> RollbackEvent {
    let mut e = RollbackEvent::new(
        name,
        RollbackEventSpec {
            policy_ref: crate::api::PolicyRef { name: "web".into() },
            type_: EventType::Automatic,
            strategy: StrategyKind::VersionRollback,
            reason: "r".into(),
            assessment: None,
            requested_by: None,
            escalated_from: None,
            rollback_target: None,
            skip_verification: false,
            alerts: vec![],
        },
    );
    e.metadata.namespace = Some(NS.into());
    e.metadata.resource_version = Some("1".into());
    e
}

/// Modifiers of an event fixture.
impl RollbackEvent {
    pub fn with_policy(mut self, policy: &str) -> Self {
        self.spec.policy_ref.name = policy.into();
        self
    }

    pub fn with_type(mut self, type_: EventType) -> Self {
        self.spec.type_ = type_;
        self
    }

    pub fn with_strategy(mut self, strategy: StrategyKind) -> Self {
        self.spec.strategy = strategy;
        self
    }

    /// Created this many seconds after the fixtures' epoch.
    pub fn with_created(mut self, offset_secs: i64) -> Self {
        self.metadata.creation_timestamp = Some(at(offset_secs));
        self
    }

    /// Created at this RFC 3339 time.
    pub fn with_created_at(mut self, time: &str) -> Self {
        self.metadata.creation_timestamp = Some(Time(time.parse().expect("an RFC 3339 time")));
        self
    }

    /// Owned by `policy`, as the event reconciler leaves it.
    pub fn owned_by(mut self, policy: &RollbackPolicy) -> Self {
        let owner = policy
            .controller_owner_ref(&())
            .expect("the policy has a uid");
        self.metadata.owner_references = Some(vec![owner]);
        self
    }

    pub fn with_annotation(mut self, key: &str, value: &str) -> Self {
        self.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value.into());
        self
    }

    /// A status with only this phase.
    pub fn with_phase(self, phase: EventPhase) -> Self {
        self.with_status(RollbackEventStatus {
            phase,
            ..Default::default()
        })
    }

    pub fn with_status(mut self, status: RollbackEventStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// The status as JSON (the API server's form).
    pub fn with_status_json(self, status: Value) -> Self {
        self.with_status(serde_json::from_value(status).expect("a valid event status"))
    }
}

/// A pod template of the `web` workload running `image`.
pub fn template(image: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": image}]}
    })
}

/// Builds a Deployment; see [`deployment`].
#[derive(Clone, Debug)]
pub struct DeploymentFixture(Value);

/// Deployment `name` in `shop` (uid `uid-<name>`, selector and labels `app: web`) at revision 2
/// running `demo:v2`, two replicas, its rollout finished (generation 1 observed, all available).
pub fn deployment(name: &str) -> DeploymentFixture {
    DeploymentFixture(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"),
                     "resourceVersion": "10", "generation": 1,
                     "annotations": {"deployment.kubernetes.io/revision": "2"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": template("demo:v2")},
        "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                   "readyReplicas": 2, "availableReplicas": 2},
    }))
}

impl DeploymentFixture {
    pub fn with_generation(mut self, generation: i64) -> Self {
        self.0["metadata"]["generation"] = json!(generation);
        self
    }

    pub fn with_replicas(mut self, replicas: i32) -> Self {
        self.0["spec"]["replicas"] = json!(replicas);
        self
    }

    /// Replaces the whole status.
    pub fn with_status(mut self, status: Value) -> Self {
        self.0["status"] = status;
        self
    }

    pub fn with_template(mut self, template: Value) -> Self {
        self.0["spec"]["template"] = template;
        self
    }

    pub fn with_annotation(mut self, key: &str, value: &str) -> Self {
        self.0["metadata"]["annotations"][key] = json!(value);
        self
    }

    /// As a version rollback to `demo:v1` left it: template of revision 1 and the two
    /// annotations that mark the rollback.
    pub fn rolled_back(self) -> Self {
        self.with_template(template("demo:v1"))
            .with_annotation(
                crate::strategy::ROLLED_BACK_FROM,
                &template_hash(&template("demo:v2")),
            )
            .with_annotation(
                crate::strategy::ROLLED_BACK_TO,
                &template_hash(&template("demo:v1")),
            )
    }

    /// The object as the API server sends it.
    pub fn json(&self) -> Value {
        self.0.clone()
    }

    pub fn build(&self) -> Deployment {
        serde_json::from_value(self.0.clone()).expect("a valid Deployment")
    }
}

/// ReplicaSet `web-<revision>` of Deployment `web` (owned through uid `uid-web`) running `image`,
/// its template labelled with a pod-template-hash as the Deployment controller does.
pub fn replica_set(revision: i64, image: &str) -> Value {
    let mut template = template(image);
    template["metadata"]["labels"]["pod-template-hash"] = json!(format!("h{revision}"));
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": format!("web-{revision}"), "namespace": NS,
                     "annotations": {"deployment.kubernetes.io/revision": revision.to_string()},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                          "uid": "uid-web", "controller": true}]},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}}, "template": template},
    })
}

/// Service `name` in `shop` selecting the `web` pods.
pub fn service(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    })
}

/// EndpointSlice of Service `service` with one endpoint per address, each `ready`.
pub fn endpoint_slice(service: &str, addresses: &[&str], ready: bool) -> Value {
    let endpoints: Vec<Value> = addresses
        .iter()
        .map(|a| json!({"addresses": [a], "conditions": {"ready": ready}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-abc"), "namespace": NS,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
    })
}

/// The action a version rollback of `web` from `demo:v2` to `demo:v1` records, applied or not.
pub fn rollback_action(applied: bool) -> Action {
    let record = Record::PodTemplate {
        revision: Some("2".into()),
        template: template("demo:v2"),
        annotations: [
            crate::strategy::CHANGE_CAUSE,
            crate::strategy::ROLLED_BACK_FROM,
            crate::strategy::ROLLED_BACK_TO,
        ]
        .into_iter()
        .map(|k| (k.to_owned(), None))
        .collect(),
        to_revision: "1".into(),
        applied: template("demo:v1"),
    };
    Action {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: "web".into(),
        namespace: None,
        summary: "pod template of Deployment web back to revision 1 (demo:v1) from revision 2"
            .into(),
        previous: Some(serde_json::to_value(record).expect("records serialize")),
        applied_at: applied.then(|| at(0)),
        undone: false,
    }
}

/// Applies a plan's JSON patches to a local copy of `obj`, as the API server would.
pub fn apply_json_patches(plan: &Plan, obj: &Value) -> Value {
    let mut doc = obj.clone();
    for c in plan.changes() {
        let Write::JsonPatch(p) = &c.request else {
            panic!("JSON patch expected")
        };
        json_patch::patch(&mut doc, p).unwrap();
    }
    doc
}

/// A list as the API server answers it.
pub fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items})
}

// ---- the mock API server ----

/// The API path of a namespaced object of kind `K` in `shop`, or of its collection (`name` "").
pub fn path_of<K: Resource<DynamicType = ()>>(name: &str) -> String {
    let base = K::url_path(&(), Some(NS));
    if name.is_empty() {
        base
    } else {
        format!("{base}/{name}")
    }
}

/// What the mock API server answers to one call.
pub enum Reply {
    /// 200 with this body.
    Json(Value),
    /// 200 with `object`, its status replaced by the `status` of the request body (what a
    /// status patch returns).
    StatusOf(Value),
    /// A refusal: the HTTP code and reason of a `Status` object.
    Refuse(u16, &'static str),
}

/// A check of a request's body (parsed as JSON; `Null` when empty).
type BodyCheck = Box<dyn FnOnce(&Value) + Send>;

/// One expected call and its answer.
pub struct Call {
    method: Method,
    path: String,
    query: Option<String>,
    check: Option<BodyCheck>,
    reply: Reply,
}

impl Call {
    pub fn new(method: Method, path: impl Into<String>, reply: Reply) -> Self {
        Self {
            method,
            path: path.into(),
            query: None,
            check: None,
            reply,
        }
    }

    pub fn get(path: impl Into<String>, object: Value) -> Self {
        Self::new(Method::GET, path, Reply::Json(object))
    }

    pub fn patch(path: impl Into<String>, reply: Reply) -> Self {
        Self::new(Method::PATCH, path, reply)
    }

    /// The query string must contain `part` (e.g. a label selector).
    pub fn with_query(mut self, part: &str) -> Self {
        self.query = Some(part.into());
        self
    }

    /// Checks the request body (assertions inside `check` fail the scenario).
    pub fn expect(mut self, check: impl FnOnce(&Value) + Send + 'static) -> Self {
        self.check = Some(Box::new(check));
        self
    }
}

/// A request the mock API server received: method, path with query, JSON body.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: Method,
    pub uri: String,
    pub body: Value,
}

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// The server half of a mock client: answers the calls of one scenario.
pub struct ApiServer(Handle);

/// How long the server waits for the next expected call before failing the scenario.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A client whose requests go to the returned mock server.
pub fn mock_client() -> (Client, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, NS), ApiServer(handle))
}

/// The calls a reconcile must make, in order, with their answers.
pub struct Scenario(pub Vec<Call>);

/// A running scenario; [`Running::finish`] checks it ran to its end and returns what it saw.
pub struct Running(tokio::task::JoinHandle<Vec<Received>>);

impl ApiServer {
    /// Answers `scenario` in a task. Once every call is answered it waits for the client to be
    /// dropped, and fails on any further call.
    pub fn run(self, scenario: Scenario) -> Running {
        Running(tokio::spawn(self.serve(scenario)))
    }

    async fn serve(mut self, scenario: Scenario) -> Vec<Received> {
        let mut seen = vec![];
        let total = scenario.0.len();
        for (i, call) in scenario.0.into_iter().enumerate() {
            let step = format!("call {} of {total} ({} {})", i + 1, call.method, call.path);
            let (request, respond) = tokio::time::timeout(CALL_TIMEOUT, self.0.next_request())
                .await
                .unwrap_or_else(|_| panic!("{step}: not made within {CALL_TIMEOUT:?}"))
                .unwrap_or_else(|| {
                    panic!(
                        "{step}: the client was dropped first; seen:{}",
                        lines(&seen)
                    )
                });
            let received = received(request).await;
            assert_eq!(
                (&received.method, uri_path(&received.uri)),
                (&call.method, call.path.as_str()),
                "{step}: another request came; seen before:{}",
                lines(&seen)
            );
            if let Some(part) = &call.query {
                assert!(received.uri.contains(part), "{step}: {}", received.uri);
            }
            if let Some(check) = call.check {
                check(&received.body);
            }
            respond.send_response(answer(call.reply, &received.body));
            seen.push(received);
        }
        // Every client clone dropped: the reconcile is over.
        if let Some((request, _)) = self.0.next_request().await {
            let extra = received(request).await;
            panic!(
                "a call after the scenario's {total}: {} {}",
                extra.method, extra.uri
            );
        }
        seen
    }
}

impl Running {
    /// Waits for the scenario to end (drop every client first) and returns the requests seen.
    /// Re-raises a failed assertion of the server task in the test.
    pub async fn finish(self) -> Vec<Received> {
        match tokio::time::timeout(CALL_TIMEOUT, self.0).await {
            Ok(Ok(seen)) => seen,
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(e)) => panic!("mock API server: {e}"),
            Err(_) => panic!("mock API server did not finish: is a client still alive?"),
        }
    }
}

/// The requests seen, one a line, for failure messages.
fn lines(seen: &[Received]) -> String {
    seen.iter()
        .map(|r| format!("\n  {} {}", r.method, r.uri))
        .collect()
}

fn uri_path(uri: &str) -> &str {
    uri.split_once('?').map_or(uri, |(p, _)| p)
}

async fn received(request: Request<Body>) -> Received {
    let method = request.method().clone();
    let uri = request.uri().to_string();
    let bytes = request
        .into_body()
        .collect_bytes()
        .await
        .expect("a readable body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON body")
    };
    Received { method, uri, body }
}

fn answer(reply: Reply, request: &Value) -> Response<Body> {
    let (code, body) = match reply {
        Reply::Json(v) => (StatusCode::OK, v),
        Reply::StatusOf(mut object) => {
            object["status"] = request["status"].clone();
            (StatusCode::OK, object)
        }
        Reply::Refuse(code, reason) => (
            StatusCode::from_u16(code).expect("an HTTP code"),
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": format!("refused by the test: {reason}"), "reason": reason, "code": code}),
        ),
    };
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).expect("JSON")))
        .expect("a response")
}
