//! The Webhook rung end to end (issue 14): the running operator POSTs the remediation to a
//! local HTTP server (axum, in the test) whose URL is in a labelled Secret, and treats its
//! answer as the step's result. Success (recorded, verified, undone through the undo URL the
//! server named), failure (5xx: Failed, then escalation to the next rung), timeout (a slow
//! server: retries, then Failed) and an undo URL on another origin (recorded as not
//! undoable). Needs the workload simulator. The server is plain HTTP on 127.0.0.1: in
//! production the URL would be https (TLS verified by default).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use frys_rollback::api::{EventPhase, RollbackEvent, RollbackPolicy, StrategyKind};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::{Value, json};

use crate::support::{
    self, Operator, await_condition, create_secret, deployment, eventually, kubectl_apply,
};

const TIMEOUT: Duration = Duration::from_secs(90);
/// In every answer body: it must never show up in status, Events or the operator's log.
const ANSWER_MARKER: &str = "answer-body-not-to-echo";
/// In the Secret's URL (a credential): it must never show up either.
const URL_TOKEN: &str = "url-token-not-to-echo";

/// One request the server received.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    content_type: String,
    body: Value,
}

/// How the server answers `POST /apply`; `POST /undo/<n>` always answers 200.
#[derive(Clone)]
struct Hook {
    received: Arc<Mutex<Vec<Received>>>,
    status: StatusCode,
    delay: Duration,
    /// The `undoUrl` in a 2xx answer (None: no undoUrl).
    undo_url: Option<String>,
}

impl Hook {
    /// Starts the server; returns it and its base URL.
    async fn start(status: StatusCode, delay: Duration, undo_url: Option<&str>) -> (Self, String) {
        let hook = Self {
            received: Arc::default(),
            status,
            delay,
            undo_url: undo_url.map(str::to_owned),
        };
        let app = Router::new()
            .route("/apply", post(apply))
            .route("/undo/{n}", post(undo))
            .with_state(hook.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (hook, base)
    }

    fn received(&self, path: &str) -> Vec<Received> {
        let all = self.received.lock().unwrap().clone();
        all.into_iter().filter(|r| r.path == path).collect()
    }

    fn record(&self, path: String, headers: &HeaderMap, body: &Bytes) {
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = serde_json::from_slice(body).unwrap_or(Value::Null);
        self.received.lock().unwrap().push(Received {
            path,
            content_type,
            body,
        });
    }
}

async fn apply(State(h): State<Hook>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    h.record("/apply".into(), &headers, &body);
    tokio::time::sleep(h.delay).await;
    let answer = match &h.undo_url {
        Some(u) => json!({"undoUrl": u, "note": ANSWER_MARKER}),
        None => json!({"note": ANSWER_MARKER}),
    };
    (h.status, answer.to_string())
}

async fn undo(
    State(h): State<Hook>,
    Path(n): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    h.record(format!("/undo/{n}"), &headers, &body);
    (StatusCode::OK, ANSWER_MARKER.into())
}

/// A policy on `web` whose ladder is `rungs` (YAML list items, indented 4).
fn policy(rungs: &str) -> String {
    format!(
        r#"
apiVersion: rollback.frys.io/v1alpha1
kind: RollbackPolicy
metadata: {{name: web}}
spec:
  targetRef: {{name: web}}
  interval: 1s
  rateWindow: 5s
  consecutiveFailures: 3
  cooldown: 10m
  metrics: [{{name: errors, preset: errorRate, warning: 0.02, critical: 0.05}}]
  strategies:
{rungs}
  verification: {{stabilizationDelay: 1s, timeout: 1m}}
"#
    )
}

/// The webhook rung, answering the Release class too (so a bad release runs it first).
const WEBHOOK_RUNG: &str = "    - type: Webhook
      incidents: [Release, Errors]
      webhook: {urlSecretRef: {name: hook, key: url}, timeout: 1s, retries: 1}";

/// An operator on a namespace with the Deployment and the hook Secret pointing at `base`.
async fn setup(prefix: &str, base: &str) -> Option<(kube::Client, String, Operator)> {
    let (client, ns, operator) = support::operator_namespace(prefix, &[]).await?;
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment("web", "demo:v1"))
        .await
        .unwrap();
    let url = format!("{base}/apply?token={URL_TOKEN}");
    create_secret(&client, &ns, "hook", json!({"url": url})).await;
    Some((client, ns, operator))
}

/// Runs the rung by hand, as a person would.
fn trigger(ns: &str) {
    support::annotate(
        ns,
        "rbp/web",
        &[
            "rollback.frys.io/trigger=Webhook",
            "rollback.frys.io/reason=flush the CDN",
        ],
    );
}

async fn only_event(events: &Api<RollbackEvent>) -> RollbackEvent {
    support::finished_event("the webhook event finished", TIMEOUT, events, |e| {
        e.spec.strategy == StrategyKind::Webhook
    })
    .await
}

/// Nothing the server answered and nothing of the Secret's URL reached the event's status,
/// the namespace's Events or the operator's log.
fn assert_nothing_echoed(ns: &str, event: &RollbackEvent, operator: &Operator) {
    let status = serde_json::to_string(&event.status).unwrap();
    let (_, events, _) = support::kubectl(&["get", "events", "-n", ns, "-o", "json"]);
    let log = std::fs::read_to_string(&operator.log).unwrap();
    for (what, text) in [("status", &status), ("Events", &events), ("log", &log)] {
        for secret in [ANSWER_MARKER, URL_TOKEN] {
            assert!(!text.contains(secret), "{what} contains {secret}");
        }
    }
}

#[tokio::test]
async fn a_webhook_rung_is_called_recorded_verified_and_undone() {
    let (hook, base) = Hook::start(StatusCode::OK, Duration::ZERO, Some("/undo/42")).await;
    let Some((client, ns, operator)) = setup("wh-success", &base).await else {
        return;
    };
    // Readiness covers the rung's Secret: without the opt-in label it is refused.
    create_secret(&client, &ns, "unlabelled", json!({"url": base.clone()})).await;
    support::kubectl(&[
        "label",
        "-n",
        &ns,
        "secret",
        "unlabelled",
        "rollback.frys.io/policy-access-",
    ]);
    let unlabelled = WEBHOOK_RUNG.replace("name: hook", "name: unlabelled");
    let (ok, _, err) = kubectl_apply(&ns, &policy(&unlabelled));
    assert!(ok, "{err}");
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &ns);
    let (reason, message) = await_condition(&policies, "web", "Ready", "False", TIMEOUT).await;
    assert_eq!(reason, "RungReferenceMissing");
    assert!(
        message.contains("Webhook: Secret \"unlabelled\" is not labelled"),
        "{message}"
    );
    let (ok, _, err) = kubectl_apply(&ns, &policy(WEBHOOK_RUNG));
    assert!(ok, "{err}");
    await_condition(&policies, "web", "Ready", "True", TIMEOUT).await;

    trigger(&ns);
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    let event = only_event(&events).await;
    let status = event.status.clone().unwrap();
    assert_eq!(status.phase, EventPhase::Succeeded, "{status:?}");
    let verification = status.verification.as_ref().unwrap();
    assert!(
        verification.checks.iter().any(
            |c| c.name == "availability" && c.status == frys_rollback::api::CheckStatus::Passed
        ),
        "{verification:?}"
    );

    // What the server received: one structured-mode CloudEvent naming the event.
    let calls = hook.received("/apply");
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].content_type, "application/cloudevents+json");
    let ce = &calls[0].body;
    let uid = event.metadata.uid.clone().unwrap();
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["type"], "io.frys.rollback.webhook.apply");
    assert_eq!(ce["id"], format!("{uid}.apply"));
    assert_eq!(
        ce["source"],
        format!("/apis/rollback.frys.io/v1alpha1/namespaces/{ns}/rollbackpolicies/web")
    );
    let name = event.metadata.name.clone().unwrap();
    assert_eq!(ce["subject"], format!("rollbackevents/{name}"));
    assert!(
        ce["time"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );
    assert_eq!(ce["datacontenttype"], "application/json");
    assert_eq!(ce["data"]["target"], "web");
    assert_eq!(ce["data"]["reason"], "flush the CDN");
    assert_eq!(ce["data"]["action"], "Apply");

    // The call is recorded as the event's action, with the undo path (not the URL).
    assert_eq!(status.actions.len(), 1, "{:?}", status.actions);
    let action = &status.actions[0];
    assert_eq!(
        (action.kind.as_str(), action.name.as_str()),
        ("Webhook", "hook")
    );
    assert!(
        action.summary.ends_with("answered 2xx, undoable"),
        "{}",
        action.summary
    );
    assert_eq!(action.previous.as_ref().unwrap()["undoPath"], "/undo/42");
    assert!(action.applied_at.is_some() && !action.undone);

    // Undo, as a person does it: the undo URL receives the POST, the action is marked undone.
    support::annotate(&ns, &format!("rbe/{name}"), &["rollback.frys.io/undo=true"]);
    let undone = eventually("the webhook action undone", TIMEOUT, || async {
        let e = events.get(&name).await.ok()?;
        let s = e.status.clone()?;
        s.actions.iter().all(|a| a.undone).then_some(e)
    })
    .await;
    let undos = hook.received("/undo/42");
    assert_eq!(undos.len(), 1, "{undos:?}");
    assert_eq!(undos[0].body["type"], "io.frys.rollback.webhook.undo");
    assert_eq!(undos[0].body["id"], format!("{uid}.undo"));
    assert_eq!(undos[0].body["data"]["action"], "Undo");
    assert_nothing_echoed(&ns, &undone, &operator);
}

#[tokio::test]
async fn a_failing_webhook_fails_its_event_and_the_incident_escalates() {
    let (hook, base) = Hook::start(StatusCode::SERVICE_UNAVAILABLE, Duration::ZERO, None).await;
    let Some((client, ns, operator)) = setup("wh-failure", &base).await else {
        return;
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    support::wait_for_revision(&deployments, "web", "1").await;
    let ladder = format!("{WEBHOOK_RUNG}\n    - type: VersionRollback");
    let (ok, _, err) = kubectl_apply(&ns, &policy(&ladder));
    assert!(ok, "{err}");
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &ns);
    await_condition(&policies, "web", "Healthy", "True", TIMEOUT).await;

    // A bad release: the Webhook rung (first in the ladder for Release) answers 503.
    support::set_image(&deployments, "web", "demo:v2-faulty").await;
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    let failed = only_event(&events).await;
    let status = failed.status.clone().unwrap();
    assert_eq!(status.phase, EventPhase::Failed, "{status:?}");
    let message = status.message.clone().unwrap();
    assert!(
        message.contains("webhook answered 503 (after 2 attempt(s))"),
        "{message}"
    );
    assert!(status.actions.is_empty(), "{:?}", status.actions);
    assert_eq!(
        hook.received("/apply").len(),
        2,
        "one attempt and one retry"
    );

    // Escalation, as after any failed rung: the next rung runs and succeeds.
    let rollback = support::finished_event("the escalated rollback", TIMEOUT, &events, |e| {
        e.spec.strategy == StrategyKind::VersionRollback
    })
    .await;
    assert_eq!(
        rollback.status.as_ref().unwrap().phase,
        EventPhase::Succeeded,
        "{:?}",
        rollback.status
    );
    let failed = events
        .get(&failed.metadata.name.clone().unwrap())
        .await
        .unwrap();
    assert_eq!(
        failed.status.as_ref().unwrap().escalated_to,
        rollback.metadata.name
    );
    assert_eq!(
        support::image(&deployments.get("web").await.unwrap()),
        "demo:v1"
    );
    assert_nothing_echoed(&ns, &failed, &operator);
}

#[tokio::test]
async fn a_slow_webhook_is_retried_then_fails_within_its_timeout() {
    // Each attempt times out after 1s; one retry after 500ms: about 2.5s in all.
    let (hook, base) = Hook::start(StatusCode::OK, Duration::from_secs(5), Some("/undo/1")).await;
    let Some((client, ns, _operator)) = setup("wh-timeout", &base).await else {
        return;
    };
    let (ok, _, err) = kubectl_apply(&ns, &policy(WEBHOOK_RUNG));
    assert!(ok, "{err}");
    let started = Instant::now();
    trigger(&ns);
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    let event = only_event(&events).await;
    let elapsed = started.elapsed();
    let status = event.status.clone().unwrap();
    assert_eq!(status.phase, EventPhase::Failed, "{status:?}");
    let message = status.message.clone().unwrap();
    assert!(
        message.contains("webhook unreachable: timeout (after 2 attempt(s))"),
        "{message}"
    );
    assert_eq!(hook.received("/apply").len(), 2);
    let took = Duration::from_millis(status.duration_ms.unwrap());
    eprintln!(
        "slow webhook: event took {took:?}, trigger to Failed {:.1}s",
        elapsed.as_secs_f64()
    );
    assert!(
        took >= Duration::from_millis(2400) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn an_undo_url_on_another_origin_is_not_followed() {
    // The server names an undo URL elsewhere (the API server's address would do as well).
    let (elsewhere, other) = Hook::start(StatusCode::OK, Duration::ZERO, None).await;
    let (hook, base) = Hook::start(
        StatusCode::OK,
        Duration::ZERO,
        Some(&format!("{other}/undo/7")),
    )
    .await;
    let Some((client, ns, operator)) = setup("wh-origin", &base).await else {
        return;
    };
    let (ok, _, err) = kubectl_apply(&ns, &policy(WEBHOOK_RUNG));
    assert!(ok, "{err}");
    trigger(&ns);
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    let event = only_event(&events).await;
    let status = event.status.clone().unwrap();
    assert_eq!(status.phase, EventPhase::Succeeded, "{status:?}");
    assert_eq!(hook.received("/apply").len(), 1);
    let action = &status.actions[0];
    assert!(
        action
            .summary
            .ends_with("not undoable: its undoUrl is not on the origin of the Secret's URL"),
        "{}",
        action.summary
    );
    assert!(action.previous.as_ref().unwrap().get("undoPath").is_none());

    let name = event.metadata.name.clone().unwrap();
    support::annotate(&ns, &format!("rbe/{name}"), &["rollback.frys.io/undo=true"]);
    let refused = eventually("undo refused as not undoable", TIMEOUT, || async {
        let s = events.get(&name).await.ok()?.status?;
        s.undo_refused.clone()
    })
    .await;
    assert!(
        refused.contains("not undoable by the operator"),
        "{refused}"
    );
    assert!(elsewhere.received("/undo/7").is_empty());
    let event = events.get(&name).await.unwrap();
    assert!(!event.status.as_ref().unwrap().actions[0].undone);
    let listed = events.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(listed.len(), 1);
    assert_nothing_echoed(&ns, &event, &operator);
}
