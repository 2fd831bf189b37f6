use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::{apps::v1::Deployment, discovery::v1::EndpointSlice};
use serde_json::json;

use super::rules::*;
use crate::{
    api::{Action, CheckCategory, CheckResult, CheckStatus, VerificationStatus},
    prometheus::Sample,
    strategy::route::{HttpRoute, VirtualService},
};

fn check(category: CheckCategory, status: CheckStatus) -> CheckResult {
    result(format!("{category:?}"), category, status, BTreeMap::new())
}

#[test]
fn overall_status_by_category() {
    use CheckCategory::*;
    use CheckStatus::*;
    let all = |pairs: &[(CheckCategory, CheckStatus)]| {
        let checks: Vec<_> = pairs.iter().map(|(c, s)| check(*c, *s)).collect();
        overall_status(&checks)
    };
    assert_eq!(all(&[]), VerificationStatus::Passed);
    assert_eq!(
        all(&[
            (Availability, Passed),
            (Health, Skipped),
            (Traffic, Skipped)
        ]),
        VerificationStatus::Passed
    );
    for essential in [Availability, Health, Performance] {
        assert_eq!(
            all(&[(essential, Failed), (Dependencies, Failed)]),
            VerificationStatus::Failed
        );
    }
    for optional in [Dependencies, DataConsistency, Traffic] {
        assert_eq!(
            all(&[(Availability, Passed), (optional, Failed)]),
            VerificationStatus::Partial
        );
    }
}

#[test]
fn one_recommendation_per_failed_check_with_its_reason() {
    let mut failed = check(CheckCategory::Health, CheckStatus::Failed);
    failed.name = "application-health".into();
    failed
        .details
        .insert(REASON.into(), "1 of 2 endpoints did not answer 2xx".into());
    let checks = vec![
        failed,
        check(CheckCategory::Availability, CheckStatus::Passed),
        skipped("traffic-distribution", CheckCategory::Traffic, "n/a"),
        check(CheckCategory::DataConsistency, CheckStatus::Failed),
    ];
    let r = recommendations(&checks);
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(
        r[0].starts_with(
            "application-health failed (1 of 2 endpoints did not answer 2xx): look at the logs"
        ),
        "{}",
        r[0]
    );
    assert!(r[1].starts_with("DataConsistency failed: "), "{}", r[1]);
    assert!(r.iter().all(|s| s.ends_with('.')));
}

#[test]
fn window_is_the_time_since_completion_at_least_five_seconds() {
    assert_eq!(performance_window(Duration::ZERO), MIN_WINDOW);
    assert_eq!(performance_window(Duration::from_millis(4200)), MIN_WINDOW);
    assert_eq!(
        performance_window(Duration::from_millis(42_100)),
        Duration::from_secs(43)
    );
    assert_eq!(
        performance_window(Duration::from_secs(90)),
        Duration::from_secs(90)
    );
}

#[test]
fn promql_check_needs_a_non_empty_non_zero_result() {
    assert!(promql_check(&[]).unwrap_err().contains("no series"));
    assert!(promql_check(&[Sample::new([("db", "a")], 1.0), Sample::new([], 0.5)]).is_ok());
    let err = promql_check(&[
        Sample::new([("db", "a")], 1.0),
        Sample::new([("db", "b")], 0.0),
    ])
    .unwrap_err();
    assert!(
        err.contains("1 of 2") && err.contains(r#"{db="b"}=0"#),
        "{err}"
    );
    assert!(promql_check(&[Sample::new([], f64::NAN)]).is_err());
    assert!(promql_check(&[Sample::new([], -1.0)]).is_ok());
}

fn deployment(generation: i64, status: serde_json::Value, replicas: i32) -> Deployment {
    crate::fixtures::deployment("web")
        .with_generation(generation)
        .with_replicas(replicas)
        .with_status(status)
        .build()
}

#[test]
fn rollout_must_be_finished_and_available() {
    let done = json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2});
    assert_eq!(
        rollout_problem(&deployment(3, done.clone(), 2), false),
        None
    );
    assert!(
        rollout_problem(&deployment(4, done, 2), false)
            .unwrap()
            .contains("not observed")
    );
    let updating = json!({"observedGeneration": 3, "updatedReplicas": 1, "availableReplicas": 2});
    assert_eq!(
        rollout_problem(&deployment(3, updating, 2), false).unwrap(),
        "1 of 2 replicas updated"
    );
    let unavailable =
        json!({"observedGeneration": 3, "updatedReplicas": 2, "availableReplicas": 1});
    assert_eq!(
        rollout_problem(&deployment(3, unavailable, 2), false).unwrap(),
        "1 of 2 replicas available"
    );
}

#[test]
fn emergency_shutdown_expects_zero_replicas() {
    let gone = json!({"observedGeneration": 2});
    assert_eq!(rollout_problem(&deployment(2, gone, 0), true), None);
    let lingering = json!({"observedGeneration": 2, "replicas": 1});
    assert!(
        rollout_problem(&deployment(2, lingering, 0), true)
            .unwrap()
            .contains("1 replica(s) still run")
    );
    let running = json!({"observedGeneration": 2, "replicas": 2, "availableReplicas": 2});
    assert!(rollout_problem(&deployment(2, running, 2), true).is_some());
}

#[test]
fn ready_addresses_skip_not_ready_endpoints() {
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-abc"},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.0.0.2"], "conditions": {"ready": true}},
            {"addresses": ["10.0.0.3"], "conditions": {"ready": false}},
            {"addresses": ["10.0.0.1"]},
            {"addresses": ["10.0.0.2"], "conditions": {}},
        ]
    }))
    .unwrap();
    assert_eq!(ready_addresses(&[slice]), ["10.0.0.1", "10.0.0.2"]);
    assert!(ready_addresses(&[]).is_empty());
}

#[test]
fn default_health_check_takes_port_and_path_of_the_url() {
    let c = default_health_check("http://localhost:8080/healthz?x=1", "web").unwrap();
    assert_eq!(
        (c.service.as_str(), c.port, c.path.as_str()),
        ("web", 8080, "/healthz")
    );
    let c = default_health_check("https://app", "web").unwrap();
    assert_eq!((c.port, c.path.as_str()), (443, "/"));
    let c = default_health_check("http://[::1]:9000/ready", "web").unwrap();
    assert_eq!((c.port, c.path.as_str()), (9000, "/ready"));
    let c = default_health_check("http://[::1]/ready", "web").unwrap();
    assert_eq!(c.port, 80);
    assert!(default_health_check("localhost:8080", "web").is_none());
}

#[test]
fn route_weights_resolve_absent_weights() {
    let httproute = [
        json!({"name": "web"}),
        json!({"name": "web-stable", "weight": 3}),
    ];
    assert_eq!(
        route_weights(&HttpRoute, &httproute),
        BTreeMap::from([("web".into(), 1), ("web-stable".into(), 3)])
    );
    let vs = [json!({"destination": {"host": "web", "subset": "v2"}})];
    assert_eq!(
        route_weights(&VirtualService, &vs),
        BTreeMap::from([("web/v2".into(), 100)])
    );
}

#[test]
fn expected_weights_come_from_the_last_route_action() {
    let action = |applied: serde_json::Value, undone: bool| Action {
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "HTTPRoute".into(),
        name: "web".into(),
        namespace: None,
        summary: "moved".into(),
        previous: Some(
            json!({"type": "RouteBackends", "ruleIndex": 0, "backends": [], "applied": applied}),
        ),
        applied_at: None,
        undone,
    };
    let scale = Action {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: "web".into(),
        namespace: None,
        summary: "scaled".into(),
        previous: Some(json!({"type": "Replicas", "replicas": 2, "applied": 0})),
        applied_at: None,
        undone: false,
    };
    let actions = [
        action(
            json!([{"name": "web", "weight": 0}, {"name": "web-stable", "weight": 100}]),
            false,
        ),
        scale,
        action(json!([{"name": "web", "weight": 50}]), true),
    ];
    assert_eq!(
        expected_weights(&actions).unwrap(),
        BTreeMap::from([("web".into(), 0), ("web-stable".into(), 100)])
    );
    assert_eq!(expected_weights(&actions[1..2]), None);
}

#[test]
fn weight_differences_name_each_backend() {
    let actual = BTreeMap::from([("web".to_string(), 10), ("web-stable".to_string(), 90)]);
    let expected = BTreeMap::from([("web".to_string(), 0), ("web-stable".to_string(), 90)]);
    assert_eq!(
        weight_differences(&actual, &expected),
        ["web has weight 10, expected 0"]
    );
    assert!(weight_differences(&expected, &expected).is_empty());
    let missing = BTreeMap::from([("web-stable".to_string(), 90)]);
    assert!(
        weight_differences(&missing, &expected).is_empty(),
        "absent is 0"
    );
}

#[test]
fn streak_counts_consecutive_passes() {
    let mut s = Streak::default();
    for passed in [true, false, true] {
        s.record(passed);
    }
    assert!(!s.reached(2));
    s.record(true);
    assert!(s.reached(2));
    assert_eq!(s.evaluations, 4);
}

#[test]
fn inconclusive_is_no_pass() {
    use crate::api::MetricSeverity::*;
    assert!(evaluation_passes([Ok, Inconclusive]));
    assert!(evaluation_passes([Warning]));
    assert!(!evaluation_passes([Inconclusive, Inconclusive]));
    assert!(!evaluation_passes([]));
    assert!(!evaluation_passes([Ok, Critical]));
    // Two in a row needed: a no-data evaluation between two passes starts the row over.
    let mut streak = Streak::default();
    for passed in [Ok, Inconclusive, Ok].map(|s| evaluation_passes([s])) {
        streak.record(passed);
    }
    assert!(!streak.reached(2));
}
