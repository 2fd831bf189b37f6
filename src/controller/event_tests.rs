//! In-process tests of the RollbackEvent phase machine: `reconcile` against a scripted mock API
//! server, one scenario per transition, with the conflict, crash-resume, undo and half-open cases.
//!
//! Each scenario lists every call the reconcile makes, in order: a test fails on a call more,
//! a call less or another order (record the actions, then apply them, then record the outcome).
//! Verification runs its checks one at a time (`verification_concurrency` 1) so its calls come
//! in a fixed order; without Prometheus and HEALTH_CHECK_URL only availability reads anything.

use std::{sync::Arc, time::Duration};

use http::Method;
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::Service,
    discovery::v1::EndpointSlice,
};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::reconcile;
use crate::{
    api::{EventPhase, EventType, RollbackEvent, RollbackPolicy, annotations},
    config::OperatorConfig,
    controller::{Context, Error},
    fixtures::{
        self, Call, Received, Reply, Scenario, deployment, endpoint_slice, event, list, path_of,
        policy, replica_set, rollback_action, service,
    },
};

/// The operator configuration of these tests: no Prometheus, no default health check, one
/// check at a time.
fn config() -> OperatorConfig {
    let mut c = OperatorConfig::defaults();
    c.prometheus_url = None;
    c.health_check_url = None;
    c.verification_concurrency = 1;
    c
}

/// The key of these tests' operator.
/// The tests' signing key, as in [`Context::for_tests`].
fn test_keys() -> crate::controller::digest::Keys {
    crate::controller::digest::Keys::new(vec![7; 32], vec![])
}

/// `e` with its recorded actions signed by the tests' operator, as it would have written them.
fn sealed(mut e: RollbackEvent) -> RollbackEvent {
    let mut status = e.status.take().unwrap_or_default();
    test_keys().seal(&e, &mut status);
    e.status = Some(status);
    e
}

/// [`reconcile_with`] under the tests' [`config`].
async fn run(event: &RollbackEvent, calls: Vec<Call>) -> (Result<Action, Error>, Vec<Received>) {
    reconcile_with(event.clone(), config(), calls).await
}

/// Runs one reconcile of `event` against `calls`; returns its result and the requests seen.
async fn reconcile_with(
    event: RollbackEvent,
    config: OperatorConfig,
    calls: Vec<Call>,
) -> (Result<Action, Error>, Vec<Received>) {
    let (result, seen) = reconcile_for(Duration::from_secs(60), event, config, calls).await;
    (result.expect("reconcile finished"), seen)
}

/// The same, but the reconcile is dropped after `limit` (None): what a crash of the operator
/// looks like to the API server.
async fn reconcile_for(
    limit: Duration,
    event: RollbackEvent,
    config: OperatorConfig,
    calls: Vec<Call>,
) -> (Option<Result<Action, Error>>, Vec<Received>) {
    reconcile_in(limit, event, config, calls, |_| {}).await
}

/// The same in a context `prepare` has set up (the caches the policy controller shares).
async fn reconcile_in(
    limit: Duration,
    event: RollbackEvent,
    config: OperatorConfig,
    calls: Vec<Call>,
    prepare: impl FnOnce(&Context),
) -> (Option<Result<Action, Error>>, Vec<Received>) {
    let (client, server) = fixtures::mock_client();
    let scenario = server.run(Scenario(calls));
    let ctx = Arc::new(Context::for_tests(client, config));
    prepare(&ctx);
    let result = tokio::time::timeout(limit, reconcile(Arc::new(event), ctx))
        .await
        .ok();
    // `ctx` and with it every client is gone: the server checks that nothing more comes.
    (result, scenario.finish().await)
}

fn event_path() -> String {
    path_of::<RollbackEvent>("web-1")
}

fn status_path() -> String {
    format!("{}/status", event_path())
}

fn get_event(e: &RollbackEvent) -> Call {
    Call::get(event_path(), json(e))
}

fn get_policy(p: &RollbackPolicy) -> Call {
    Call::get(path_of::<RollbackPolicy>("web"), json(p))
}

/// A server-side apply of the event's status by the event controller; `check` sees the status.
fn write_status(e: &RollbackEvent, check: impl FnOnce(&Value) + Send + 'static) -> Call {
    Call::patch(status_path(), Reply::StatusOf(json(e)))
        .with_query("fieldManager=frys-rollback-event")
        .expect(move |body| {
            assert_eq!(body["kind"], "RollbackEvent", "{body}");
            check(&body["status"]);
        })
}

fn json<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).expect("objects serialize")
}

/// Policy `web` and its event `web-1`, adopted and accepted.
fn pending() -> (RollbackPolicy, RollbackEvent) {
    let p = policy("web");
    let e = event("web-1").owned_by(&p).with_phase(EventPhase::Pending);
    (p, e)
}

/// The reads every reconcile of an unfinished event starts with: the event, its policy.
fn read(e: &RollbackEvent, p: &RollbackPolicy) -> Vec<Call> {
    vec![get_event(e), get_policy(p)]
}

/// The ReplicaSets of `web`: revision 1 (`demo:v1`) and revision 2 (`demo:v2`).
fn revisions() -> Vec<Value> {
    vec![replica_set(1, "demo:v1"), replica_set(2, "demo:v2")]
}

/// The reads a version rollback plans from: the Deployment (read once for the superseded
/// check, the GitOps owner's hold and the plan), then its ReplicaSets.
fn observe_rollback(deployment: Value, replica_sets: Vec<Value>) -> Vec<Call> {
    vec![
        Call::get(path_of::<Deployment>("web"), deployment),
        Call::get(path_of::<ReplicaSet>(""), list(replica_sets)).with_query("labelSelector="),
    ]
}

/// The version rollback's write of the Deployment, answered with `after`.
fn patch_deployment(after: Value) -> Call {
    Call::patch(path_of::<Deployment>("web"), Reply::Json(after))
        .with_query("fieldManager=frys-rollback")
}

/// The reads of verifying a version rollback (checks in order: availability, then the skipped
/// ones), given the EndpointSlices of the serving Service.
fn verify_rollback(d: &fixtures::DeploymentFixture, slices: Vec<Value>) -> Vec<Call> {
    vec![
        // The target (read once for all checks) and its ReplicaSets (for the pod regex).
        Call::get(path_of::<Deployment>("web"), d.json()),
        Call::get(path_of::<ReplicaSet>(""), list(revisions())),
        // The serving Service: the one selecting the target's pods.
        Call::get(path_of::<Service>(""), list(vec![service("web")])),
        // Availability: the rollout as read above, then the Service's ready endpoints.
        Call::get(path_of::<EndpointSlice>(""), list(slices))
            .with_query("labelSelector=kubernetes.io%2Fservice-name%3Dweb"),
    ]
}

/// The calls of one reconcile, in order.
fn calls(parts: impl IntoIterator<Item = Vec<Call>>) -> Vec<Call> {
    parts.into_iter().flatten().collect()
}

#[tokio::test]
async fn a_new_event_is_adopted_by_its_policy_and_accepted() {
    let p = policy("web");
    let e = event("web-1");
    let adopted = e.clone().owned_by(&p);
    let (result, _) = run(
        &e,
        vec![
            get_policy(&p),
            Call::patch(event_path(), Reply::Json(json(&adopted))).expect(|body| {
                let owners = body["metadata"]["ownerReferences"].as_array().unwrap();
                assert_eq!(owners.len(), 1, "{body}");
                assert_eq!(owners[0]["uid"], "uid-web");
                assert_eq!(owners[0]["kind"], "RollbackPolicy");
                assert_eq!(owners[0]["blockOwnerDeletion"], false);
                // Compare-and-swap on the version read.
                assert_eq!(body["metadata"]["resourceVersion"], "1");
            }),
            // Straight on to execution in the same reconcile, without a write of its own
            // (here the target is gone, which ends it).
            Call::new(
                Method::GET,
                path_of::<Deployment>("web"),
                Reply::Refuse(404, "NotFound"),
            ),
            write_status(&adopted, |status| {
                assert_eq!(status["phase"], "Failed", "{status}");
                let message = status["message"].as_str().unwrap();
                assert!(message.starts_with("VersionRollback refused"), "{message}");
            }),
        ],
    )
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(5)));
}

#[tokio::test]
async fn a_pending_event_records_its_actions_applies_them_and_moves_to_verifying() {
    let (p, e) = pending();
    let d = deployment("web");
    let (result, _) = run(
        &e,
        calls([
            read(&e, &p),
            observe_rollback(d.json(), revisions()),
            vec![
                // Pending → Executing: the planned action is recorded before it is applied.
                write_status(&e, |status| {
                    assert_eq!(status["phase"], "Executing", "{status}");
                    assert_eq!(status["message"], "applying VersionRollback");
                    let actions = status["actions"].as_array().unwrap();
                    assert_eq!(actions.len(), 1, "{status}");
                    assert_eq!(actions[0]["previous"]["type"], "PodTemplate");
                    assert!(actions[0].get("appliedAt").is_none(), "{status}");
                    assert!(status["startedAt"].is_string(), "{status}");
                }),
                patch_deployment(d.clone().rolled_back().json()).expect(|patch| {
                    assert_eq!(patch[0]["op"], "test", "{patch}");
                    assert_eq!(patch[0]["value"], fixtures::template("demo:v2"));
                    assert_eq!(patch[1]["op"], "replace");
                    assert_eq!(patch[1]["value"], fixtures::template("demo:v1"));
                }),
                // Executing → Verifying, the action stamped.
                write_status(&e, |status| {
                    assert_eq!(status["phase"], "Verifying", "{status}");
                    assert!(status["actions"][0]["appliedAt"].is_string(), "{status}");
                    let message = status["message"].as_str().unwrap();
                    assert!(message.contains("back to revision 1"), "{message}");
                }),
            ],
        ]),
    )
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(5)));
}

/// An event whose rollback was applied long ago (past any stabilization delay).
fn verifying(p: &RollbackPolicy) -> RollbackEvent {
    sealed(
        event("web-1")
            .owned_by(p)
            .with_status(crate::api::RollbackEventStatus {
                phase: EventPhase::Verifying,
                actions: vec![rollback_action(true)],
                ..Default::default()
            }),
    )
}

#[tokio::test]
async fn a_verified_rollback_succeeds() {
    let p = policy("web");
    let e = verifying(&p);
    let d = deployment("web").rolled_back();
    let (result, _) = run(
        &e,
        calls([
            read(&e, &p),
            verify_rollback(&d, vec![endpoint_slice("web", &["10.0.0.1"], true)]),
            vec![write_status(&e, |status| {
                assert_eq!(status["phase"], "Succeeded", "{status}");
                assert_eq!(
                    status["verification"]["overallStatus"], "Passed",
                    "{status}"
                );
                assert_eq!(status["message"], "VersionRollback applied and verified");
                assert!(status["completedAt"].is_string(), "{status}");
            })],
        ]),
    )
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn verification_takes_the_revisions_from_the_synced_replica_set_index() {
    let p = policy("web");
    let e = verifying(&p);
    let d = deployment("web").rolled_back();
    let mut verify = verify_rollback(&d, vec![endpoint_slice("web", &["10.0.0.1"], true)]);
    // No ReplicaSet list: the index answers.
    verify.remove(1);
    let index = Arc::new(super::super::replica_sets::ReplicaSetIndex::default());
    index.apply(kube::runtime::watcher::Event::Init);
    for rs in revisions() {
        index.apply(kube::runtime::watcher::Event::InitApply(
            serde_json::from_value(rs).unwrap(),
        ));
    }
    index.apply(kube::runtime::watcher::Event::InitDone);
    let (result, _) = reconcile_in(
        Duration::from_secs(60),
        e.clone(),
        config(),
        calls([
            read(&e, &p),
            verify,
            vec![write_status(&e, |status| {
                assert_eq!(status["phase"], "Succeeded", "{status}");
            })],
        ]),
        |ctx| {
            let _ = ctx.replica_set_cache.set(index);
        },
    )
    .await;
    assert_eq!(result.unwrap().unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn a_rollback_that_does_not_verify_fails() {
    let p = policy("web");
    let e = verifying(&p);
    let d = deployment("web").rolled_back();
    // One availability read: the verification timeout leaves no time for a second one.
    let mut c = config();
    c.verification_timeout = Duration::from_secs(1);
    let (result, _) = reconcile_with(
        e.clone(),
        c,
        calls([
            read(&e, &p),
            verify_rollback(&d, vec![endpoint_slice("web", &["10.0.0.1"], false)]),
            vec![write_status(&e, |status| {
                assert_eq!(status["phase"], "Failed", "{status}");
                assert_eq!(
                    status["verification"]["overallStatus"], "Failed",
                    "{status}"
                );
                let message = status["message"].as_str().unwrap();
                assert!(
                    message.starts_with("VersionRollback applied; verification failed:"),
                    "{message}"
                );
                assert!(message.contains("no ready endpoints"), "{message}");
            })],
        ]),
    )
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn dry_run_skips_the_event_without_reading_the_target() {
    let p = policy("web").with_dry_run();
    let e = event("web-1").owned_by(&p);
    let (result, _) = run(
        &e,
        vec![
            get_policy(&p),
            write_status(&e, |status| {
                assert_eq!(status["phase"], "Skipped", "{status}");
                assert_eq!(
                    status["message"],
                    "dry run: decided, not applied (spec.dryRun is true)"
                );
                assert!(status["completedAt"].is_string(), "{status}");
            }),
        ],
    )
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn an_emergency_event_is_accepted_under_dry_run() {
    let p = policy("web").with_dry_run();
    let e = event("web-1")
        .owned_by(&p)
        .with_type(EventType::Emergency)
        .with_strategy(crate::api::StrategyKind::EmergencyShutdown);
    let (result, _) = run(
        &e,
        vec![
            get_policy(&p),
            // Straight on to execution in the same reconcile (here the target is gone, which
            // ends it).
            Call::new(
                Method::GET,
                path_of::<Deployment>("web"),
                Reply::Refuse(404, "NotFound"),
            ),
            write_status(&e, |status| {
                assert_eq!(status["phase"], "Failed", "{status}");
                let message = status["message"].as_str().unwrap();
                assert!(
                    message.starts_with("EmergencyShutdown refused"),
                    "{message}"
                );
            }),
        ],
    )
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(5)));
}

#[tokio::test]
async fn suspend_holds_a_pending_event() {
    let p = policy("web").with_suspend();
    let e = event("web-1").owned_by(&p).with_phase(EventPhase::Pending);
    let (result, _) = run(
        &e,
        vec![
            get_event(&e),
            get_policy(&p),
            write_status(&e, |status| {
                assert_eq!(status["phase"], "Pending", "{status}");
                assert_eq!(status["message"], "waiting: the policy is suspended");
                assert!(status.get("actions").is_none(), "{status}");
            }),
        ],
    )
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(10)));
}

#[tokio::test]
async fn a_strategy_that_cannot_plan_fails_the_event() {
    let (p, e) = pending();
    let d = deployment("web");
    let (result, _) = run(
        &e,
        calls([
            read(&e, &p),
            // Only the running revision: nothing to roll back to.
            observe_rollback(d.json(), vec![replica_set(2, "demo:v2")]),
            vec![write_status(&e, |status| {
                assert_eq!(status["phase"], "Failed", "{status}");
                let message = status["message"].as_str().unwrap();
                assert!(message.starts_with("VersionRollback refused:"), "{message}");
                assert!(status.get("actions").is_none(), "{status}");
            })],
        ]),
    )
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(5)));
}

#[tokio::test]
async fn an_event_of_a_missing_policy_fails() {
    let e = event("web-1");
    let (result, _) = run(
        &e,
        vec![
            Call::new(
                Method::GET,
                path_of::<RollbackPolicy>("web"),
                Reply::Refuse(404, "NotFound"),
            ),
            write_status(&e, |status| {
                assert_eq!(status["phase"], "Failed", "{status}");
                assert_eq!(
                    status["message"],
                    "RollbackPolicy web not found in namespace shop"
                );
            }),
        ],
    )
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn a_finished_event_is_left_alone_without_a_call() {
    let p = policy("web");
    let e = event("web-1")
        .owned_by(&p)
        .with_phase(EventPhase::Succeeded);
    let (result, seen) = run(&e, vec![]).await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert!(seen.is_empty());
}

fn is_conflict(result: &Result<Action, Error>) -> bool {
    matches!(result, Err(Error::Kube(kube::Error::Api(s))) if s.code == 409)
}

#[tokio::test]
async fn a_conflict_on_adoption_stops_the_reconcile_before_any_phase() {
    let p = policy("web");
    let e = event("web-1");
    let (result, _) = run(
        &e,
        vec![
            get_policy(&p),
            // Someone changed the event since it was read; the error policy retries.
            Call::patch(event_path(), Reply::Refuse(409, "Conflict")),
        ],
    )
    .await;
    assert!(is_conflict(&result), "{result:?}");
}

#[tokio::test]
async fn a_conflict_on_the_executing_write_applies_nothing() {
    let (p, e) = pending();
    let d = deployment("web");
    let (result, _) = run(
        &e,
        calls([
            read(&e, &p),
            observe_rollback(d.json(), revisions()),
            // The record of the actions is refused: the Deployment must not be touched.
            vec![Call::patch(status_path(), Reply::Refuse(409, "Conflict"))],
        ]),
    )
    .await;
    assert!(is_conflict(&result), "{result:?}");
}

#[tokio::test]
async fn after_a_crash_between_apply_and_record_the_resumed_run_does_not_apply_again() {
    let (p, e) = pending();
    let before = deployment("web");

    // First run: the actions are recorded and applied, then the Verifying write fails (as a
    // crash there would: the change is made, its outcome not recorded).
    let (result, seen) = run(
        &e,
        calls([
            read(&e, &p),
            observe_rollback(before.json(), revisions()),
            vec![
                write_status(&e, |status| assert_eq!(status["phase"], "Executing")),
                patch_deployment(before.clone().rolled_back().json()),
                Call::patch(status_path(), Reply::Refuse(409, "Conflict")),
            ],
        ]),
    )
    .await;
    assert!(is_conflict(&result), "{result:?}");
    // What the API server holds now: the recorded status, the patched Deployment.
    let recorded = seen[4].body["status"].clone();
    let patch: json_patch::Patch = serde_json::from_value(seen[5].body.clone()).unwrap();
    let mut after = before.json();
    json_patch::patch(&mut after, &patch).unwrap();
    let resumed = e.clone().with_status_json(recorded.clone());

    // Second run: it plans again, finds the change in place, and only records it.
    let expected_actions = recorded["actions"].clone();
    let (result, _) = run(
        &resumed,
        calls([
            read(&resumed, &p),
            observe_rollback(after, revisions()),
            vec![write_status(&resumed, move |status| {
                assert_eq!(status["phase"], "Verifying", "{status}");
                let actions = status["actions"].as_array().unwrap();
                assert_eq!(actions.len(), 1, "{status}");
                // The action recorded before the crash stands, now stamped.
                assert_eq!(actions[0]["previous"], expected_actions[0]["previous"]);
                assert!(actions[0]["appliedAt"].is_string(), "{status}");
                let message = status["message"].as_str().unwrap();
                assert!(message.starts_with("already applied:"), "{message}");
            })],
        ]),
    )
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(5)));
}

/// A succeeded rollback whose undo is asked for with `value`.
fn undo_asked(p: &RollbackPolicy, value: &str) -> RollbackEvent {
    sealed(
        event("web-1")
            .owned_by(p)
            .with_annotation(annotations::UNDO, value)
            .with_status(crate::api::RollbackEventStatus {
                phase: EventPhase::Succeeded,
                actions: vec![rollback_action(true)],
                ..Default::default()
            }),
    )
}

/// The merge patch that removes the undo annotation once handled.
fn remove_undo_annotation(e: &RollbackEvent) -> Call {
    Call::patch(event_path(), Reply::Json(json(e))).expect(|body| {
        assert_eq!(
            body,
            &json!({"metadata": {"annotations": {annotations::UNDO: null}}})
        );
    })
}

#[tokio::test]
async fn undo_restores_the_recorded_template_and_clears_the_annotation() {
    let p = policy("web");
    let e = undo_asked(&p, "true");
    let d = deployment("web").rolled_back();
    let (result, _) = run(
        &e,
        vec![
            get_event(&e),
            Call::get(path_of::<Deployment>("web"), d.json()),
            Call::patch(
                path_of::<Deployment>("web"),
                Reply::Json(deployment("web").json()),
            )
            .expect(|patch| {
                assert_eq!(patch[0]["op"], "test", "{patch}");
                assert_eq!(patch[0]["value"], fixtures::template("demo:v1"));
                assert_eq!(patch[1]["op"], "replace");
                assert_eq!(patch[1]["value"], fixtures::template("demo:v2"));
            }),
            write_status(&e, |status| {
                assert_eq!(status["phase"], "Succeeded", "{status}");
                assert_eq!(status["message"], "undone: 1 action(s) restored");
                assert_eq!(status["actions"][0]["undone"], true, "{status}");
            }),
            remove_undo_annotation(&e),
        ],
    )
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn undo_refuses_a_target_changed_since_and_still_clears_the_annotation() {
    let p = policy("web");
    let e = undo_asked(&p, "true");
    // Someone deployed demo:v3 after the rollback.
    let d = deployment("web")
        .rolled_back()
        .with_template(fixtures::template("demo:v3"));
    let (result, _) = run(
        &e,
        vec![
            get_event(&e),
            Call::get(path_of::<Deployment>("web"), d.json()),
            write_status(&e, |status| {
                let message = status["message"].as_str().unwrap();
                assert!(message.starts_with("undo refused:"), "{message}");
                assert!(message.contains("undo=force"), "{message}");
                assert!(status["actions"][0].get("undone").is_none(), "{status}");
            }),
            remove_undo_annotation(&e),
        ],
    )
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn undo_waits_for_the_event_to_finish() {
    let p = policy("web");
    let mut e = undo_asked(&p, "true");
    e.status.as_mut().unwrap().phase = EventPhase::Verifying;
    let (result, _) = run(&e, vec![get_event(&e)]).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(5)));
}

/// HTTPRoute `web` whose rule `main` sends traffic to `backends`.
fn route(backends: Value) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "5"},
        "spec": {"rules": [
            {"name": "api", "backendRefs": [{"name": "api", "port": 80}]},
            {"name": "main", "backendRefs": backends},
        ]}
    })
}

#[tokio::test]
async fn an_open_circuit_breaker_half_opens_once_its_open_duration_has_passed() {
    let closed = json!([{"name": "web", "port": 80, "weight": 90},
                        {"name": "web-maintenance", "port": 80, "weight": 10}]);
    let open = json!([{"name": "web", "port": 80, "weight": 0},
                      {"name": "web-maintenance", "port": 80, "weight": 100}]);
    let record = crate::strategy::Record::RouteBackends {
        rule_index: 1,
        rule_name: Some("main".into()),
        backends: serde_json::from_value(closed.clone()).unwrap(),
        applied: serde_json::from_value(open.clone()).unwrap(),
    };
    // Opened long ago: well past the default open duration (the policy sets none).
    let action = crate::api::Action {
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "HTTPRoute".into(),
        previous: Some(json(&record)),
        ..rollback_action(true)
    };
    let p = policy("web");
    let e = sealed(
        event("web-1")
            .owned_by(&p)
            .with_strategy(crate::api::StrategyKind::CircuitBreaker)
            .with_status(crate::api::RollbackEventStatus {
                phase: EventPhase::Succeeded,
                actions: vec![action],
                ..Default::default()
            }),
    );
    let route_path = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/web";
    let expected = closed.clone();
    let (result, _) = run(
        &e,
        vec![
            get_event(&e),
            get_policy(&p),
            Call::get(route_path, route(open)),
            Call::patch(route_path, Reply::Json(route(closed))).expect(move |patch| {
                let replace = patch
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|op| op["op"] == "replace")
                    .expect("a replace operation");
                assert_eq!(replace["path"], "/spec/rules/1/backendRefs", "{patch}");
                assert_eq!(replace["value"], expected);
            }),
            write_status(&e, |status| {
                assert_eq!(status["phase"], "Succeeded", "{status}");
                assert_eq!(status["actions"][0]["undone"], true, "{status}");
                let message = status["message"].as_str().unwrap();
                assert!(message.starts_with("half-open after 1m:"), "{message}");
            }),
        ],
    )
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

/// A policy whose one rung switches Service `web` from `version: blue` (Deployment `web`) to
/// `version: green` (Deployment `web-green`), scaling the standby first.
fn blue_green() -> RollbackPolicy {
    let mut p = policy("web");
    p.spec.strategies = vec![
        serde_json::from_value(json!({
            "type": "EnvironmentSwitch",
            "environmentSwitch": {"service": "web", "selectorKey": "version", "activeValue": "blue",
                                  "standbyValue": "green", "standbyRef": "web-green", "scaleStandby": true}
        }))
        .unwrap(),
    ];
    p
}

fn blue_green_service(version: &str) -> Value {
    let mut s = service("web");
    s["metadata"]["resourceVersion"] = json!("3");
    s["spec"]["selector"]["version"] = json!(version);
    s
}

/// The reads an environment switch plans from, given the standby as it is.
fn observe_switch(service: Value, standby: Value) -> Vec<Call> {
    vec![
        Call::get(path_of::<Service>("web"), service),
        Call::get(path_of::<Deployment>("web"), deployment("web").json()),
        Call::get(path_of::<Deployment>("web-green"), standby),
    ]
}

#[tokio::test(start_paused = true)]
async fn a_switch_resumed_after_a_crash_while_waiting_for_the_standby_keeps_the_scale_action() {
    let p = blue_green();
    let e = event("web-1")
        .owned_by(&p)
        .with_strategy(crate::api::StrategyKind::EnvironmentSwitch)
        .with_phase(EventPhase::Pending);
    let cold = deployment("web-green")
        .with_replicas(0)
        .with_status(json!({"observedGeneration": 1}));
    let warming = deployment("web-green").with_status(json!({"observedGeneration": 1}));
    let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                       "metadata": {"name": "web-green", "namespace": "shop"}, "spec": {"replicas": 2}});

    // First run: scales the standby, then the operator dies while waiting for it.
    let (result, seen) = reconcile_for(
        Duration::from_millis(500),
        e.clone(),
        config(),
        calls([
            read(&e, &p),
            observe_switch(blue_green_service("blue"), cold.json()),
            vec![
                write_status(&e, |status| {
                    assert_eq!(status["phase"], "Executing", "{status}");
                    assert_eq!(status["actions"].as_array().unwrap().len(), 2, "{status}");
                }),
                Call::patch(
                    format!("{}/scale", path_of::<Deployment>("web-green")),
                    Reply::Json(scale),
                ),
                // The wait's first read: not ready yet; the next read never comes.
                Call::get(path_of::<Deployment>("web-green"), warming.json()),
            ],
        ]),
    )
    .await;
    assert!(
        result.is_none(),
        "the reconcile was still waiting: {result:?}"
    );
    let recorded = seen[5].body["status"].clone();

    // Second run: the standby is scaled and ready; the plan has only the switch left.
    let resumed = e.clone().with_status_json(recorded);
    let ready = deployment("web-green");
    let (result, _) = run(
        &resumed,
        calls([
            read(&resumed, &p),
            observe_switch(blue_green_service("blue"), ready.json()),
            vec![
                write_status(&resumed, |status| {
                    assert_eq!(status["actions"].as_array().unwrap().len(), 2, "{status}");
                }),
                Call::get(path_of::<Deployment>("web-green"), ready.json()),
                Call::patch(
                    path_of::<Service>("web"),
                    Reply::Json(blue_green_service("green")),
                ),
                write_status(&resumed, |status| {
                    assert_eq!(status["phase"], "Verifying", "{status}");
                    // Both changes are in the cluster, so both must stay recorded: undo needs
                    // the scale action to scale the standby back.
                    let records: Vec<&Value> = status["actions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| &a["previous"]["type"])
                        .collect();
                    assert_eq!(records, ["Replicas", "ServiceSelector"], "{status}");
                }),
            ],
        ]),
    )
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(5)));
}

/// The Warning Event the recorder posts about an untrusted record.
fn refusal_event(check: impl FnOnce(&Value) + Send + 'static) -> Call {
    let posted = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "web-1.refused", "namespace": "shop"},
        "eventTime": "2026-12-01T00:00:00.000000Z",
        "reportingController": "frys-rollback-test", "reportingInstance": "test",
        "action": "Undo", "reason": "UntrustedActions", "type": "Warning",
    });
    Call::new(
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/shop/events",
        Reply::Json(posted),
    )
    .expect(check)
}

/// A status merge patch of the refusal: message (and phase), never the actions or their digest.
fn refusal_status(e: &RollbackEvent, check: impl FnOnce(&Value) + Send + 'static) -> Call {
    Call::patch(status_path(), Reply::Json(json(e))).expect(move |body| {
        let status = &body["status"];
        assert!(status.get("actions").is_none(), "{body}");
        assert!(status.get("actionsDigest").is_none(), "{body}");
        assert!(body["metadata"]["resourceVersion"].is_string(), "{body}");
        check(status);
    })
}

#[tokio::test]
async fn an_undo_over_a_forged_record_is_refused_without_reading_the_target() {
    let p = policy("web");
    let mut e = undo_asked(&p, "force");
    // Someone rewrote the recorded template after the operator signed it.
    e.status.as_mut().unwrap().actions[0].previous = Some(
        json!({"type": "PodTemplate", "template": {}, "annotations": {}, "toRevision": "1", "applied": {}}),
    );
    let (result, _) = run(
        &e,
        vec![
            get_event(&e),
            refusal_status(&e, |status| {
                let message = status["message"].as_str().unwrap();
                assert!(message.starts_with("undo refused:"), "{message}");
                assert!(
                    message.contains("does not match its actionsDigest"),
                    "{message}"
                );
                assert!(
                    status.get("phase").is_none(),
                    "a finished phase stays: {status}"
                );
            }),
            refusal_event(|event| assert_eq!(event["reason"], "UntrustedActions", "{event}")),
            remove_undo_annotation(&e),
        ],
    )
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn a_resumed_event_without_a_digest_is_failed_and_nothing_is_planned() {
    let (_, e) = pending();
    // Executing with actions but no digest: recorded before digests, or the digest removed.
    let e = e.with_status(crate::api::RollbackEventStatus {
        phase: EventPhase::Executing,
        actions: vec![rollback_action(false)],
        ..Default::default()
    });
    let (result, _) = run(
        &e,
        vec![
            get_event(&e),
            refusal_status(&e, |status| {
                assert_eq!(status["phase"], "Failed", "{status}");
                let message = status["message"].as_str().unwrap();
                assert!(
                    message.starts_with("resuming this event refused:"),
                    "{message}"
                );
                assert!(message.contains("carries no actionsDigest"), "{message}");
            }),
            refusal_event(|_| {}),
        ],
    )
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

/// The target, tracked by Argo CD's Application `web` in namespace `argocd`.
fn argo_tracked(d: Value) -> Value {
    let mut d = d;
    d["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"] =
        json!("web:apps/Deployment:shop/web");
    d
}

const APPLICATION: &str = "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/web";

#[tokio::test]
async fn without_rbac_for_the_owner_the_rollback_still_runs_and_says_what_it_could_not_do() {
    let (p, e) = pending();
    let d = argo_tracked(deployment("web").json());
    let (result, _) = run(
        &e,
        calls([
            read(&e, &p),
            observe_rollback(d.clone(), revisions()),
            vec![
                Call::new(Method::GET, APPLICATION, Reply::Refuse(403, "Forbidden")),
                // The refusal is recorded, then the rollback goes on as without an owner.
                write_status(&e, |status| {
                    assert_eq!(status["gitops"]["held"], false, "{status}");
                    let message = status["gitops"]["message"].as_str().unwrap();
                    assert!(
                        message.contains("may not read Argo CD Application argocd/web (403)"),
                        "{message}"
                    );
                    assert!(message.contains("gitops.argocd.enabled"), "{message}");
                    assert!(status.get("actions").is_none(), "{status}");
                }),
                write_status(&e, |status| {
                    assert_eq!(status["phase"], "Executing", "{status}");
                    assert_eq!(status["actions"].as_array().unwrap().len(), 1, "{status}");
                }),
                patch_deployment(deployment("web").rolled_back().json()),
                write_status(&e, |status| {
                    assert_eq!(status["phase"], "Verifying", "{status}")
                }),
            ],
        ]),
    )
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(5)));
}

#[tokio::test]
async fn the_owners_sync_is_held_first_and_a_refused_patch_is_reported_not_fatal() {
    let (p, e) = pending();
    let d = argo_tracked(deployment("web").json());
    let app = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "web", "namespace": "argocd"},
        "spec": {"syncPolicy": {"automated": {"selfHeal": true}}},
        "status": {"resources": [{"group": "apps", "kind": "Deployment", "namespace": "shop", "name": "web"}]}});
    let (result, _) = run(
        &e,
        calls([
            read(&e, &p),
            observe_rollback(d.clone(), revisions()),
            vec![
                Call::get(APPLICATION, app),
                // The hold is recorded before it is made, first of the actions.
                write_status(&e, |status| {
                    assert_eq!(status["actions"][0]["previous"]["type"], "AutomatedSync");
                    assert_eq!(status["actions"][0]["namespace"], "argocd");
                    assert_eq!(
                        status["actions"][0]["previous"]["automated"],
                        json!({"selfHeal": true})
                    );
                }),
                Call::patch(APPLICATION, Reply::Refuse(403, "Forbidden"))
                    .with_query("fieldManager=frys-rollback"),
                write_status(&e, |status| {
                    assert!(status.get("actions").is_none(), "{status}");
                    let message = status["gitops"]["message"].as_str().unwrap();
                    assert!(message.contains("may not patch"), "{message}");
                }),
                write_status(&e, |status| {
                    assert_eq!(status["phase"], "Executing", "{status}")
                }),
                patch_deployment(deployment("web").rolled_back().json()),
                write_status(&e, |status| {
                    assert_eq!(status["phase"], "Verifying", "{status}");
                    assert_eq!(status["gitops"]["held"], false, "{status}");
                }),
            ],
        ]),
    )
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(5)));
}

#[test]
fn the_cached_event_is_trusted_only_at_this_processs_last_write() {
    use super::Freshness::{Behind, Latest, Unknown};
    let versions = super::Versions::default();
    // A new event nobody has written to: the cache holds all there is.
    assert_eq!(versions.freshness(&event("web-1")), Latest);
    // One with a status this process did not write (a restart, another writer): read it.
    let (_, e) = pending();
    assert_eq!(versions.freshness(&e), Unknown);
    versions.record(&e);
    assert_eq!(versions.freshness(&e), Latest);
    let at = |version: &str| {
        let mut copy = e.clone();
        copy.metadata.resource_version = Some(version.into());
        copy
    };
    // A version nobody here wrote (someone annotated it) is read again.
    assert_eq!(versions.freshness(&at("2")), Unknown);
    // After a second write, the watch's copy of the first one is behind: no read, no action.
    versions.record(&at("3"));
    assert_eq!(versions.freshness(&e), Behind);
    assert_eq!(versions.freshness(&at("3")), Latest);
    // A finished event is forgotten: its undo or half-open reconciles read it.
    versions.record(&at("4").with_phase(EventPhase::Succeeded));
    assert_eq!(versions.freshness(&at("3")), Unknown);
}

#[tokio::test]
async fn a_cached_copy_behind_our_own_write_waits_for_the_watch() {
    let (_, e) = pending();
    let (client, server) = fixtures::mock_client();
    let scenario = server.run(Scenario(vec![]));
    let ctx = Arc::new(Context::for_tests(client, config()));
    let mut later = e.clone();
    later.metadata.resource_version = Some("9".into());
    ctx.event_versions.record(&e);
    ctx.event_versions.record(&later);
    // No request at all: the later write's watch event will trigger the next reconcile.
    let result = reconcile(Arc::new(e), ctx).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(5)));
    scenario.finish().await;
}

#[test]
fn as_many_events_run_at_once_as_the_guard_admits() {
    let mut c = config();
    c.reconcile_concurrency = 16;
    c.max_concurrent_remediations = 3;
    assert_eq!(super::concurrency(&c), 16);
    c.max_concurrent_remediations = 100;
    assert_eq!(super::concurrency(&c), 100);
    c.max_concurrent_remediations = 100_000;
    assert_eq!(super::concurrency(&c), 1024);
    c.reconcile_concurrency = 0;
    assert_eq!(super::concurrency(&c), 0, "0 stays unbounded");
}
