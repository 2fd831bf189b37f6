//! Alert notifications to webhooks (Slack-compatible, generic JSON or CloudEvents).
//!
//! [`Notifier::notify`] never blocks its caller: for each sink whose `minLevel` (default
//! Warning) the alert reaches, it spawns a task that reads the webhook URL from the policy's
//! Secret and posts the payload, retrying with exponential backoff on connection errors,
//! timeouts, 5xx and 429. The URL is a credential: logs name the Secret and key, never the URL.

pub mod cloudevents;
mod payload;

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tokio::task::JoinHandle;

pub use payload::{Alert, content_type, json_payload, payload, slack_payload, summary};

use crate::api::{AlertLevel, NotificationSpec, SecretKeyRef};
use crate::prometheus::secrets::{CredentialsError, check_policy_access, secret_value};

/// The level a sink receives from when it sets no `minLevel`.
pub const DEFAULT_MIN_LEVEL: AlertLevel = AlertLevel::Warning;

/// Why an alert did not reach a sink. Never contains the webhook URL.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Secret(#[from] CredentialsError),
    #[error("webhook URL in Secret {secret:?} key {key:?} is not a valid http(s) URL")]
    InvalidUrl { secret: String, key: String },
    #[error(
        "webhook URL in Secret {secret:?} key {key:?} is a link-local or metadata address; refused"
    )]
    Refused { secret: String, key: String },
    #[error("webhook answered {status}")]
    Status { status: u16 },
    #[error("webhook unreachable: {kind}")]
    Transport { kind: &'static str },
}

impl NotifyError {
    /// Worth another attempt: transport failures, 5xx and 429.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Status { status } => *status >= 500 || *status == 429,
            Self::Transport { .. } => true,
            Self::Secret(_) | Self::InvalidUrl { .. } | Self::Refused { .. } => false,
        }
    }
}

/// Where webhook URLs come from. [`kube::Client`] reads them from Secrets; tests may use a map.
pub trait UrlResolver: Clone + Send + Sync + 'static {
    /// The URL under `key` in the Secret `key.name` of `namespace`.
    fn resolve_url(
        &self,
        namespace: &str,
        key: &SecretKeyRef,
    ) -> impl Future<Output = Result<String, CredentialsError>> + Send;
}

impl UrlResolver for kube::Client {
    async fn resolve_url(
        &self,
        namespace: &str,
        key: &SecretKeyRef,
    ) -> Result<String, CredentialsError> {
        let secrets: Api<Secret> = Api::namespaced(self.clone(), namespace);
        let secret = secrets
            .get_opt(&key.name)
            .await
            .map_err(|e| CredentialsError::Api {
                secret: key.name.clone(),
                message: e.to_string(),
            })?
            .ok_or_else(|| CredentialsError::SecretNotFound {
                secret: key.name.clone(),
            })?;
        check_policy_access(&secret, &key.name)?;
        Ok(secret_value(&secret, key)?.trim().to_owned())
    }
}

/// Attempts, backoff and per-attempt timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt; doubles after each failure.
    pub initial_backoff: Duration,
    /// Timeout of one attempt.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            initial_backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Wait after failed attempt `n` (1-based): initial, 2×initial, 4×initial...
    pub fn backoff(&self, n: u32) -> Duration {
        self.initial_backoff
            .saturating_mul(2u32.saturating_pow(n.saturating_sub(1)))
    }
}

/// Counters since the notifier was made (shared by its clones).
#[derive(Debug, Default)]
pub struct DeliveryStats {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub retries: AtomicU64,
}

/// The outcome of one alert to one sink.
#[derive(Debug)]
pub struct Delivery {
    /// `secret/key` of the sink's URL (what logs name instead of the URL).
    pub sink: String,
    /// Attempts made (0 when the URL could not be read).
    pub attempts: u32,
    pub result: Result<(), NotifyError>,
}

/// Whether a sink with this `minLevel` receives an alert of `level`.
pub fn wants(spec: &NotificationSpec, level: AlertLevel) -> bool {
    spec.min_level.unwrap_or(DEFAULT_MIN_LEVEL) <= level
}

/// Sends alerts to webhooks. Cheap to clone (shares one HTTP client and the counters).
#[derive(Clone, Debug)]
pub struct Notifier {
    http: reqwest::Client,
    retry: RetryPolicy,
    stats: Arc<DeliveryStats>,
}

impl Default for Notifier {
    fn default() -> Self {
        Self::new(RetryPolicy::default())
    }
}

impl Notifier {
    pub fn new(retry: RetryPolicy) -> Self {
        let http = reqwest::Client::builder()
            .timeout(retry.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(std::sync::Arc::new(crate::egress::GuardedResolver))
            .build()
            .expect("a reqwest client with a timeout builds");
        Self {
            http,
            retry,
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> &DeliveryStats {
        &self.stats
    }

    /// Sends `alert` to every sink of `sinks` that wants its level, reading URLs from Secrets in
    /// `namespace` (the policy's). Returns at once; each sink is served by its own task, whose
    /// handle is returned (drop them to detach). Must be called inside a Tokio runtime.
    pub fn notify<R: UrlResolver>(
        &self,
        resolver: &R,
        namespace: &str,
        sinks: &[NotificationSpec],
        alert: Alert,
    ) -> Vec<JoinHandle<Delivery>> {
        let alert = Arc::new(alert);
        sinks
            .iter()
            .filter(|s| wants(s, alert.level))
            .map(|sink| {
                let this = self.clone();
                let resolver = resolver.clone();
                let namespace = namespace.to_owned();
                let sink = sink.clone();
                let alert = alert.clone();
                tokio::spawn(
                    async move { this.deliver(&resolver, &namespace, &sink, &alert).await },
                )
            })
            .collect()
    }

    /// One alert to one sink, with retries; logs and counts the outcome.
    pub async fn deliver<R: UrlResolver>(
        &self,
        resolver: &R,
        namespace: &str,
        sink: &NotificationSpec,
        alert: &Alert,
    ) -> Delivery {
        let key = &sink.webhook.url_secret_ref;
        let name = format!("{}/{}", key.name, key.key);
        let (attempts, result) = match webhook_url(resolver, namespace, key).await {
            Err(e) => (0, Err(e)),
            Ok(url) => {
                let format = sink.webhook.format;
                let body = payload(format, alert);
                let (n, result) =
                    post_with_retries(&self.http, url, &body, content_type(format), &self.retry)
                        .await;
                let retries = u64::from(n.saturating_sub(1));
                self.stats.retries.fetch_add(retries, Ordering::Relaxed);
                (n, result.map(drop))
            }
        };
        match &result {
            Ok(()) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    sink = %name, %namespace, policy = %alert.policy, reason = %alert.reason,
                    attempts, "alert notification delivered"
                );
            }
            Err(error) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    sink = %name, %namespace, policy = %alert.policy, reason = %alert.reason,
                    attempts, %error, "alert notification failed"
                );
            }
        }
        Delivery {
            sink: name,
            attempts,
            result,
        }
    }
}

/// The URL in a policy's Secret, checked: http(s) only, and not to a link-local or metadata
/// address (`crate::egress`). Errors name the Secret and key, never the URL.
pub async fn webhook_url<R: UrlResolver>(
    resolver: &R,
    namespace: &str,
    key: &SecretKeyRef,
) -> Result<reqwest::Url, NotifyError> {
    let url = resolver.resolve_url(namespace, key).await?;
    let invalid = || NotifyError::InvalidUrl {
        secret: key.name.clone(),
        key: key.key.clone(),
    };
    let url = reqwest::Url::parse(&url).map_err(|_| invalid())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid());
    }
    crate::egress::check_url(&url).map_err(|_| NotifyError::Refused {
        secret: key.name.clone(),
        key: key.key.clone(),
    })?;
    Ok(url)
}

/// The most of a 2xx answer's body that is read (enough for a small JSON document).
const MAX_ANSWER: usize = 64 * 1024;

/// POSTs `body` with `retry`'s attempts, per-attempt timeout and backoff, retrying transport
/// errors, 5xx and 429. Returns the attempts made and, on a 2xx, the start of the answer's body
/// (at most 64 KiB; for the caller to read, never to echo). `http` must follow no redirects.
pub async fn post_with_retries(
    http: &reqwest::Client,
    url: reqwest::Url,
    body: &serde_json::Value,
    content_type: &str,
    retry: &RetryPolicy,
) -> (u32, Result<Vec<u8>, NotifyError>) {
    let attempts = retry.attempts.max(1);
    let body = body.to_string();
    let mut n = 0;
    loop {
        n += 1;
        let request = http
            .post(url.clone())
            .timeout(retry.timeout)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body.clone());
        let error = match request.send().await {
            Ok(resp) if resp.status().is_success() => match read_answer(resp).await {
                Ok(answer) => return (n, Ok(answer)),
                Err(e) => NotifyError::Transport {
                    kind: transport_kind(&e),
                },
            },
            Ok(resp) => NotifyError::Status {
                status: resp.status().as_u16(),
            },
            Err(e) => NotifyError::Transport {
                kind: transport_kind(&e),
            },
        };
        if n >= attempts || !error.retryable() {
            return (n, Err(error));
        }
        let wait = retry.backoff(n);
        tracing::debug!(attempt = n, %error, ?wait, "retrying webhook POST");
        tokio::time::sleep(wait).await;
    }
}

async fn read_answer(mut resp: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut answer = vec![];
    while let Some(chunk) = resp.chunk().await? {
        answer.extend_from_slice(&chunk);
        if answer.len() >= MAX_ANSWER {
            answer.truncate(MAX_ANSWER);
            break;
        }
    }
    Ok(answer)
}

/// A description of a reqwest error without its URL (reqwest's Display includes it).
pub(crate) fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_request() {
        "request failed"
    } else if e.is_body() || e.is_decode() {
        "body error"
    } else {
        "transport error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{WebhookFormat, WebhookSink};

    fn sink(min: Option<AlertLevel>) -> NotificationSpec {
        NotificationSpec {
            webhook: WebhookSink {
                url_secret_ref: SecretKeyRef {
                    name: "hook".into(),
                    key: "url".into(),
                },
                format: WebhookFormat::Json,
            },
            min_level: min,
        }
    }

    #[test]
    fn min_level_defaults_to_warning() {
        assert!(!wants(&sink(None), AlertLevel::Info));
        assert!(wants(&sink(None), AlertLevel::Warning));
        assert!(wants(&sink(None), AlertLevel::Emergency));
        assert!(wants(&sink(Some(AlertLevel::Info)), AlertLevel::Info));
        assert!(!wants(
            &sink(Some(AlertLevel::Critical)),
            AlertLevel::Warning
        ));
        assert!(wants(
            &sink(Some(AlertLevel::Critical)),
            AlertLevel::Critical
        ));
        assert!(!wants(
            &sink(Some(AlertLevel::Emergency)),
            AlertLevel::Critical
        ));
    }

    #[test]
    fn backoff_doubles() {
        let r = RetryPolicy::default();
        assert_eq!(r.backoff(1), Duration::from_millis(500));
        assert_eq!(r.backoff(2), Duration::from_secs(1));
        assert_eq!(r.backoff(3), Duration::from_secs(2));
    }

    #[test]
    fn retries_transport_5xx_and_429_only() {
        assert!(NotifyError::Status { status: 500 }.retryable());
        assert!(NotifyError::Status { status: 503 }.retryable());
        assert!(NotifyError::Status { status: 429 }.retryable());
        assert!(!NotifyError::Status { status: 400 }.retryable());
        assert!(!NotifyError::Status { status: 404 }.retryable());
        assert!(NotifyError::Transport { kind: "timeout" }.retryable());
        assert!(
            !NotifyError::InvalidUrl {
                secret: "s".into(),
                key: "k".into()
            }
            .retryable()
        );
    }
}
