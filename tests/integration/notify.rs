//! Alert notifications against a local webhook receiver that records what it is sent and fails
//! the first requests as told. URLs come from a map, except in `url_from_a_real_secret`, which
//! reads a Secret of the test environment.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::http::StatusCode;
use frys_rollback::{
    api::{AlertLevel, NotificationSpec, SecretKeyRef, WebhookFormat, WebhookSink},
    notify::{Alert, Notifier, NotifyError, RetryPolicy, UrlResolver},
    prometheus::CredentialsError,
};

use crate::support::{self, env, webhook::Receiver};

/// URLs by Secret name/key.
#[derive(Clone, Default)]
struct Urls(Arc<BTreeMap<(String, String), String>>);

impl Urls {
    fn of(entries: &[(&str, &str, &str)]) -> Self {
        Self(Arc::new(
            entries
                .iter()
                .map(|(n, k, u)| ((n.to_string(), k.to_string()), u.to_string()))
                .collect(),
        ))
    }
}

impl UrlResolver for Urls {
    async fn resolve_url(
        &self,
        _namespace: &str,
        key: &SecretKeyRef,
    ) -> Result<String, CredentialsError> {
        self.0
            .get(&(key.name.clone(), key.key.clone()))
            .cloned()
            .ok_or_else(|| CredentialsError::SecretNotFound {
                secret: key.name.clone(),
            })
    }
}

fn sink(secret: &str, format: WebhookFormat, min: Option<AlertLevel>) -> NotificationSpec {
    NotificationSpec {
        webhook: WebhookSink {
            url_secret_ref: SecretKeyRef {
                name: secret.into(),
                key: "url".into(),
            },
            format,
        },
        min_level: min,
    }
}

fn alert(level: AlertLevel) -> Alert {
    Alert {
        level,
        reason: "ErrorRateCritical".into(),
        message: "error rate 12% above 5%".into(),
        policy: "web".into(),
        namespace: "shop".into(),
        environment: "staging".into(),
        time: jiff::Timestamp::now(),
    }
}

fn fast() -> Notifier {
    Notifier::new(RetryPolicy {
        attempts: 3,
        initial_backoff: Duration::from_millis(50),
        timeout: Duration::from_secs(2),
    })
}

async fn join(
    handles: Vec<tokio::task::JoinHandle<frys_rollback::notify::Delivery>>,
) -> Vec<frys_rollback::notify::Delivery> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn slack_and_json_payloads_arrive() {
    let (slack, slack_url) = Receiver::start(0, StatusCode::OK).await;
    let (json, json_url) = Receiver::start(0, StatusCode::OK).await;
    let urls = Urls::of(&[("slack", "url", &slack_url), ("json", "url", &json_url)]);
    let n = fast();
    let sinks = [
        sink("slack", WebhookFormat::Slack, None),
        sink("json", WebhookFormat::Json, None),
    ];
    let done = join(n.notify(&urls, "shop", &sinks, alert(AlertLevel::Critical))).await;
    assert!(
        done.iter().all(|d| d.result.is_ok() && d.attempts == 1),
        "{done:?}"
    );

    let s = slack.bodies();
    assert_eq!(s.len(), 1);
    assert_eq!(
        s[0]["text"],
        "[Critical] shop/web: ErrorRateCritical — error rate 12% above 5% (staging)"
    );
    let j = json.bodies();
    assert_eq!(j.len(), 1);
    assert_eq!(j[0]["level"], "Critical");
    assert_eq!(j[0]["reason"], "ErrorRateCritical");
    assert_eq!(j[0]["policy"], "web");
    assert_eq!(j[0]["namespace"], "shop");
    assert_eq!(j[0]["environment"], "staging");
    assert!(j[0]["time"].as_str().is_some());
    assert_eq!(
        n.stats()
            .delivered
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[tokio::test]
async fn retries_5xx_with_backoff_then_delivers() {
    let (r, url) = Receiver::start(2, StatusCode::INTERNAL_SERVER_ERROR).await;
    let urls = Urls::of(&[("hook", "url", &url)]);
    let n = fast();
    let start = Instant::now();
    let done = join(n.notify(
        &urls,
        "shop",
        &[sink("hook", WebhookFormat::Json, None)],
        alert(AlertLevel::Warning),
    ))
    .await;
    assert_eq!(done.len(), 1);
    assert!(done[0].result.is_ok(), "{done:?}");
    assert_eq!(done[0].attempts, 3);
    assert_eq!(r.hits(), 3);
    assert_eq!(r.bodies().len(), 1);
    // 50 ms then 100 ms of backoff.
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn gives_up_after_the_last_attempt() {
    let (r, url) = Receiver::start(10, StatusCode::SERVICE_UNAVAILABLE).await;
    let urls = Urls::of(&[("hook", "url", &url)]);
    let n = fast();
    let done = join(n.notify(
        &urls,
        "shop",
        &[sink("hook", WebhookFormat::Slack, None)],
        alert(AlertLevel::Emergency),
    ))
    .await;
    assert!(
        matches!(done[0].result, Err(NotifyError::Status { status: 503 })),
        "{done:?}"
    );
    assert_eq!(done[0].attempts, 3);
    assert_eq!(r.hits(), 3);
    assert_eq!(
        n.stats().failed.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn a_400_is_not_retried() {
    let (r, url) = Receiver::start(1, StatusCode::BAD_REQUEST).await;
    let urls = Urls::of(&[("hook", "url", &url)]);
    let done = join(fast().notify(
        &urls,
        "shop",
        &[sink("hook", WebhookFormat::Json, None)],
        alert(AlertLevel::Critical),
    ))
    .await;
    assert!(
        matches!(done[0].result, Err(NotifyError::Status { status: 400 })),
        "{done:?}"
    );
    assert_eq!(done[0].attempts, 1);
    assert_eq!(r.hits(), 1);
}

#[tokio::test]
async fn a_429_is_retried() {
    let (r, url) = Receiver::start(1, StatusCode::TOO_MANY_REQUESTS).await;
    let urls = Urls::of(&[("hook", "url", &url)]);
    let done = join(fast().notify(
        &urls,
        "shop",
        &[sink("hook", WebhookFormat::Json, None)],
        alert(AlertLevel::Critical),
    ))
    .await;
    assert!(done[0].result.is_ok(), "{done:?}");
    assert_eq!(done[0].attempts, 2);
    assert_eq!(r.hits(), 2);
}

#[tokio::test]
async fn connection_refused_is_retried_and_reported_without_the_url() {
    // A port nothing listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/secret-token-path");
    let urls = Urls::of(&[("hook", "url", &url)]);
    let done = join(fast().notify(
        &urls,
        "shop",
        &[sink("hook", WebhookFormat::Json, None)],
        alert(AlertLevel::Critical),
    ))
    .await;
    let err = done[0].result.as_ref().unwrap_err();
    assert!(matches!(err, NotifyError::Transport { .. }), "{err:?}");
    assert_eq!(done[0].attempts, 3);
    assert!(!err.to_string().contains("secret-token-path"), "{err}");
    assert_eq!(done[0].sink, "hook/url");
}

#[tokio::test]
async fn min_level_filters_sinks() {
    let (all, all_url) = Receiver::start(0, StatusCode::OK).await;
    let (crit, crit_url) = Receiver::start(0, StatusCode::OK).await;
    let (default, default_url) = Receiver::start(0, StatusCode::OK).await;
    let urls = Urls::of(&[
        ("all", "url", &all_url),
        ("crit", "url", &crit_url),
        ("default", "url", &default_url),
    ]);
    let sinks = [
        sink("all", WebhookFormat::Json, Some(AlertLevel::Info)),
        sink("crit", WebhookFormat::Json, Some(AlertLevel::Critical)),
        sink("default", WebhookFormat::Json, None),
    ];
    let n = fast();
    let info = join(n.notify(&urls, "shop", &sinks, alert(AlertLevel::Info))).await;
    assert_eq!(info.len(), 1);
    let warn = join(n.notify(&urls, "shop", &sinks, alert(AlertLevel::Warning))).await;
    assert_eq!(warn.len(), 2);
    let critical = join(n.notify(&urls, "shop", &sinks, alert(AlertLevel::Critical))).await;
    assert_eq!(critical.len(), 3);
    assert_eq!(all.bodies().len(), 3);
    assert_eq!(default.bodies().len(), 2);
    assert_eq!(crit.bodies().len(), 1);
    assert_eq!(crit.bodies()[0]["level"], "Critical");
}

#[tokio::test]
async fn notify_returns_before_delivery() {
    // The receiver fails twice with backoff; notify itself must return at once.
    let (r, url) = Receiver::start(2, StatusCode::INTERNAL_SERVER_ERROR).await;
    let urls = Urls::of(&[("hook", "url", &url)]);
    let n = Notifier::new(RetryPolicy {
        attempts: 3,
        initial_backoff: Duration::from_millis(200),
        timeout: Duration::from_secs(2),
    });
    let start = Instant::now();
    let handles = n.notify(
        &urls,
        "shop",
        &[sink("hook", WebhookFormat::Json, None)],
        alert(AlertLevel::Critical),
    );
    assert!(
        start.elapsed() < Duration::from_millis(50),
        "{:?}",
        start.elapsed()
    );
    let done = join(handles).await;
    assert!(done[0].result.is_ok());
    assert_eq!(r.bodies().len(), 1);
}

#[tokio::test]
async fn missing_secret_is_reported() {
    let done = join(fast().notify(
        &Urls::default(),
        "shop",
        &[sink("nope", WebhookFormat::Json, None)],
        alert(AlertLevel::Critical),
    ))
    .await;
    assert!(
        matches!(
            done[0].result,
            Err(NotifyError::Secret(CredentialsError::SecretNotFound { .. }))
        ),
        "{done:?}"
    );
    assert_eq!(done[0].attempts, 0);
}

#[tokio::test]
async fn invalid_url_is_reported() {
    let urls = Urls::of(&[("hook", "url", "not a url")]);
    let done = join(fast().notify(
        &urls,
        "shop",
        &[sink("hook", WebhookFormat::Json, None)],
        alert(AlertLevel::Critical),
    ))
    .await;
    assert!(
        matches!(done[0].result, Err(NotifyError::InvalidUrl { .. })),
        "{done:?}"
    );
}

#[tokio::test]
async fn metadata_addresses_are_refused() {
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/hook",
        "http://metadata.google.internal/hook",
    ] {
        let urls = Urls::of(&[("hook", "url", url)]);
        let done = join(fast().notify(
            &urls,
            "shop",
            &[sink("hook", WebhookFormat::Json, None)],
            alert(AlertLevel::Critical),
        ))
        .await;
        assert!(
            matches!(done[0].result, Err(NotifyError::Refused { .. })),
            "{url}: {done:?}"
        );
        assert_eq!(done[0].attempts, 0, "{url}");
    }
}

#[tokio::test]
async fn url_from_a_real_secret() {
    let client = env().client().await;
    let ns = support::namespace(&client, "notify").await;

    let (r, url) = Receiver::start(1, StatusCode::BAD_GATEWAY).await;
    support::create_secret(
        &client,
        &ns,
        "slack-hook",
        serde_json::json!({"url": format!("{url}\n")}),
    )
    .await;

    let n = fast();
    let sinks = [
        sink("slack-hook", WebhookFormat::Slack, None),
        sink("missing", WebhookFormat::Json, None),
    ];
    let done = join(n.notify(&client, &ns, &sinks, alert(AlertLevel::Critical))).await;
    assert!(done[0].result.is_ok(), "{done:?}");
    assert_eq!(done[0].attempts, 2);
    assert!(
        matches!(
            done[1].result,
            Err(NotifyError::Secret(CredentialsError::SecretNotFound { .. }))
        ),
        "{done:?}"
    );
    assert_eq!(r.bodies().len(), 1);
    assert!(
        r.bodies()[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("[Critical] shop/web")
    );
}

/// A receiver that records every request's Content-Type and body, failing the first with 503.
async fn recording_receiver() -> (
    Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>,
    String,
) {
    use axum::{Router, body::Bytes, http::HeaderMap, routing::post};
    let seen: Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
    let record = seen.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let record = record.clone();
            async move {
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let mut seen = record.lock().unwrap();
                seen.push((content_type, serde_json::from_slice(&body).unwrap()));
                if seen.len() == 1 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::ACCEPTED
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (seen, url)
}

#[tokio::test]
async fn cloud_events_arrive_in_structured_mode_with_one_id_across_retries() {
    let (seen, url) = recording_receiver().await;
    let urls = Urls::of(&[("ce", "url", &url)]);
    let mut opened = alert(AlertLevel::Critical);
    opened.reason = "IncidentOpened".into();
    let done = join(fast().notify(
        &urls,
        "shop",
        &[sink("ce", WebhookFormat::CloudEvents, None)],
        opened.clone(),
    ))
    .await;
    assert!(done[0].result.is_ok() && done[0].attempts == 2, "{done:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one 503, one retry");
    for (content_type, event) in &seen {
        assert_eq!(content_type, "application/cloudevents+json");
        frys_rollback::notify::cloudevents::conforms(event).unwrap();
    }
    // The retry is the same event: a receiver deduplicates by id.
    assert_eq!(seen[0].1, seen[1].1);
    let event = &seen[1].1;
    assert_eq!(event["type"], "io.frys.rollback.incident.opened");
    assert_eq!(
        event["source"],
        "/apis/rollback.frys.io/v1alpha1/namespaces/shop/rollbackpolicies/web"
    );
    assert_eq!(event["data"], frys_rollback::notify::json_payload(&opened));
    // The next alert is another event.
    let next = frys_rollback::notify::cloudevents::alert_event(&alert(AlertLevel::Critical));
    assert_ne!(next["id"], event["id"]);
}
