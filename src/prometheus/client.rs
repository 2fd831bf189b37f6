//! The HTTP implementation of [`MetricsSource`] on prometheus-http-query, with the operator's own
//! reqwest client: timeout, bearer or basic credentials, extra CA roots, TLS always verified, the
//! operator's egress rules ([`crate::egress`]: no redirects, no link-local or metadata address).
//!
//! A policy author chooses the URL, so nothing the server answers is repeated into errors (they
//! reach status, Events and logs) beyond its status code, content type and size; the one
//! exception is the `error` text of a well-formed Prometheus JSON error envelope (why a query
//! was rejected), cut to 1000 characters. Bodies are read up to [`MAX_BODY`].

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine as _;
use prometheus_http_query::response::{Data, PromqlResult};
use reqwest::{
    StatusCode,
    header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue},
};
use serde::Deserialize;

use super::{MetricsSource, QueryError, Sample};
use crate::{api::PrometheusSource, telemetry::Metrics};

/// Timeout of one query when the policy does not set one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer read (grouped queries over many pods stay far below it).
pub const MAX_BODY: usize = 16 << 20;

/// Basic auth user and password.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BasicCredentials {
    pub username: String,
    pub password: String,
}

/// Credentials already read from their Secrets. Debug output never shows secret values.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Credentials {
    pub bearer_token: Option<String>,
    pub basic: Option<BasicCredentials>,
    /// PEM bundle of extra trust roots.
    pub ca_pem: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "***"))
            .field("basic", &self.basic.as_ref().map(|b| (&b.username, "***")))
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .finish()
    }
}

/// Where and how to reach one Prometheus: the key under which queries are shared.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub url: String,
    pub timeout: Duration,
    pub credentials: Credentials,
}

impl Endpoint {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout: DEFAULT_TIMEOUT,
            credentials: Credentials::default(),
        }
    }

    /// A policy's endpoint: its `spec.prometheus` (URL, timeout) with the credentials resolved
    /// from it, or the operator's `--prometheus-url`.
    pub fn for_policy(
        source: Option<&PrometheusSource>,
        default_url: Option<&str>,
        credentials: Credentials,
    ) -> Result<Self, QueryError> {
        let url = source
            .map(|s| s.url.as_str())
            .or(default_url)
            .ok_or_else(|| {
                invalid(
                    "no Prometheus URL: set spec.prometheus.url or the operator's --prometheus-url",
                )
            })?;
        let timeout = match source.and_then(|s| s.timeout.as_ref()) {
            Some(t) => t.get().map_err(|e| invalid(format!("timeout: {e}")))?,
            None => DEFAULT_TIMEOUT,
        };
        Ok(Self {
            url: url.to_owned(),
            timeout,
            credentials,
        })
    }
}

/// Queries one Prometheus over HTTP. Cheap to clone (connections are pooled inside).
#[derive(Clone)]
pub struct PrometheusClient {
    client: prometheus_http_query::Client,
    url: String,
    timeout: Duration,
    metrics: Option<Metrics>,
}

impl fmt::Debug for PrometheusClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusClient")
            .field("url", &self.url)
            .finish()
    }
}

fn invalid(message: impl fmt::Display) -> QueryError {
    QueryError::InvalidConfig {
        message: message.to_string(),
    }
}

/// An `Authorization` header value that is never logged.
fn secret_header(value: String) -> Result<HeaderValue, QueryError> {
    let mut header = HeaderValue::try_from(value)
        .map_err(|_| invalid("credentials contain characters not allowed in an HTTP header"))?;
    header.set_sensitive(true);
    Ok(header)
}

impl PrometheusClient {
    pub fn new(endpoint: &Endpoint) -> Result<Self, QueryError> {
        let creds = &endpoint.credentials;
        let mut headers = HeaderMap::new();
        match (&creds.bearer_token, &creds.basic) {
            (Some(_), Some(_)) => {
                return Err(invalid("set either a bearer token or basic auth, not both"));
            }
            (Some(token), None) => {
                headers.insert(AUTHORIZATION, secret_header(format!("Bearer {token}"))?);
            }
            (None, Some(b)) => {
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", b.username, b.password));
                headers.insert(AUTHORIZATION, secret_header(format!("Basic {encoded}"))?);
            }
            (None, None) => {}
        }
        let shown = crate::egress::redact_userinfo(&endpoint.url);
        if let Ok(parsed) = reqwest::Url::parse(&endpoint.url) {
            crate::egress::check_url(&parsed).map_err(|e| QueryError::Refused {
                url: shown.clone(),
                message: e.to_string(),
            })?;
        }
        let mut builder = crate::egress::client_builder()
            .timeout(endpoint.timeout)
            .default_headers(headers);
        if let Some(pem) = &creds.ca_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| invalid(format!("CA bundle: {}", chain(&e))))?;
            if roots.is_empty() {
                return Err(invalid("CA bundle holds no PEM certificate"));
            }
            builder = builder.tls_certs_merge(roots);
        }
        let http = builder.build().map_err(|e| invalid(chain(&e)))?;
        let client = prometheus_http_query::Client::from(http, &endpoint.url)
            .map_err(|e| invalid(format!("URL {shown:?}: {}", chain(&e))))?;
        Ok(Self {
            client,
            url: shown,
            timeout: endpoint.timeout,
            metrics: None,
        })
    }

    /// Counts every query in the operator's `prometheus_queries{outcome}`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    async fn send(
        &self,
        promql: &str,
        at: Option<jiff::Timestamp>,
    ) -> Result<Vec<Sample>, QueryError> {
        // Prometheus stops evaluating at the same deadline the client gives up.
        let mut query = self
            .client
            .query(promql)
            .timeout(i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX));
        if let Some(at) = at {
            query = query.query("time", prometheus_time(at));
        }
        // POST: grouped queries and pod regexes can outgrow URL limits of proxies.
        let response = query.post_raw().await.map_err(|e| self.transport(&e))?;
        samples(self.answer(response).await?)
    }

    /// Reads an answer: a redirect is refused (never followed), the body is bounded by
    /// [`MAX_BODY`], and errors say what the answer was, never what it said (beyond a
    /// Prometheus error envelope's own message).
    async fn answer(&self, mut response: reqwest::Response) -> Result<PromqlResult, QueryError> {
        let status = response.status();
        if status.is_redirection() {
            return Err(QueryError::Redirect {
                url: self.url.clone(),
                status: status.as_u16(),
            });
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("no content type")
            .to_owned();
        let too_large = || QueryError::UnexpectedResult {
            message: format!("the answer ({content_type}) is larger than {MAX_BODY} bytes"),
        };
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(&e))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        decode(&self.url, self.timeout, status, &content_type, &body)
    }

    /// Classifies a failure to get an answer at all.
    fn transport(&self, error: &(dyn std::error::Error + 'static)) -> QueryError {
        let url = self.url.clone();
        let reqwest_error = std::iter::successors(Some(error), |&e| e.source())
            .find_map(|e| e.downcast_ref::<reqwest::Error>());
        if reqwest_error.is_some_and(|e| e.is_timeout()) {
            return QueryError::Timeout {
                url,
                timeout: self.timeout,
            };
        }
        if let Some(refused) = crate::egress::find_in_chain(error) {
            return QueryError::Refused {
                url,
                message: refused.to_string(),
            };
        }
        if let Some(tls) = tls_error(error) {
            return QueryError::Tls {
                url,
                message: tls.to_string(),
            };
        }
        QueryError::Unreachable {
            url,
            message: crate::egress::redact_userinfo_in_text(&chain(error)),
        }
    }
}

impl MetricsSource for PrometheusClient {
    async fn query(
        &self,
        promql: &str,
        at: Option<jiff::Timestamp>,
    ) -> Result<Vec<Sample>, QueryError> {
        let started = Instant::now();
        let result = self.send(promql, at).await;
        if let Some(metrics) = &self.metrics {
            let outcome = result
                .as_ref()
                .map_or_else(QueryError::outcome, |_| "success");
            metrics.prometheus_query(outcome, started.elapsed());
        }
        match &result {
            Ok(samples) => {
                tracing::debug!(url = %self.url, promql, series = samples.len(), "queried Prometheus")
            }
            Err(error) => {
                tracing::debug!(url = %self.url, promql, %error, "Prometheus query failed")
            }
        }
        result
    }
}

impl PrometheusClient {
    /// A range query: `promql` evaluated every `step` from `start` to `end` (whole seconds, as
    /// the backtest and the baseline judge use it). Its answer is read like an instant query's.
    pub async fn query_range(
        &self,
        promql: &str,
        start: jiff::Timestamp,
        end: jiff::Timestamp,
        step: Duration,
    ) -> Result<Vec<super::Series>, QueryError> {
        let started = Instant::now();
        let query = self
            .client
            .query_range(
                promql,
                start.as_second(),
                end.as_second(),
                step.as_secs_f64().max(1.0),
            )
            .timeout(i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX));
        let result = async {
            let response = query.post_raw().await.map_err(|e| self.transport(&e))?;
            series(self.answer(response).await?)
        }
        .await;
        if let Some(metrics) = &self.metrics {
            let outcome = result
                .as_ref()
                .map_or_else(QueryError::outcome, |_| "success");
            metrics.prometheus_query(outcome, started.elapsed());
        }
        result
    }
}

impl super::RangeSource for PrometheusClient {
    fn query_range(
        &self,
        promql: &str,
        start: jiff::Timestamp,
        end: jiff::Timestamp,
        step: Duration,
    ) -> impl std::future::Future<Output = Result<Vec<super::Series>, QueryError>> + Send {
        PrometheusClient::query_range(self, promql, start, end, step)
    }
}

/// The series of a range query's answer (a matrix; an instant vector is refused).
fn series(result: PromqlResult) -> Result<Vec<super::Series>, QueryError> {
    match result.into_inner().0 {
        Data::Matrix(m) => Ok(m
            .into_iter()
            .map(|s| {
                let (labels, samples) = s.into_inner();
                super::Series {
                    labels: labels.into_iter().collect(),
                    points: samples
                        .iter()
                        .filter_map(|p| {
                            let ms = (p.timestamp() * 1000.0).round() as i64;
                            Some((jiff::Timestamp::from_millisecond(ms).ok()?, p.value()))
                        })
                        .collect(),
                }
            })
            .collect()),
        _ => Err(QueryError::UnexpectedResult {
            message: "a range query did not return a matrix".into(),
        }),
    }
}

/// Reads a whole answer (status, content type, body) of an instant or range query: what the
/// answer was, never what it said, beyond a Prometheus error envelope's own message.
fn decode(
    url: &str,
    timeout: Duration,
    status: StatusCode,
    content_type: &str,
    body: &[u8],
) -> Result<PromqlResult, QueryError> {
    let server_error = |message: String| QueryError::Server {
        url: url.to_owned(),
        status: status.as_u16(),
        message,
    };
    let described = format!("{content_type}, {} bytes", body.len());
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(QueryError::Auth {
            url: url.to_owned(),
            status: status.as_u16(),
            message: described,
        });
    }
    if !content_type.starts_with("application/json") {
        return Err(if status.is_success() {
            QueryError::UnexpectedResult {
                message: format!("the answer is not JSON ({described})"),
            }
        } else {
            server_error(described)
        });
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope::Success { data }) => Ok(data),
        Ok(Envelope::Error { error_type, error }) => Err(match error_type.as_str() {
            "bad_data" | "execution" => QueryError::BadQuery {
                message: snippet(&error),
            },
            "timeout" | "canceled" => QueryError::Timeout {
                url: url.to_owned(),
                timeout,
            },
            _ => server_error(format!("{}: {}", snippet(&error_type), snippet(&error))),
        }),
        Err(_) if status.is_success() => Err(QueryError::UnexpectedResult {
            message: format!("the answer is not a Prometheus query result ({described})"),
        }),
        Err(_) => Err(server_error(described)),
    }
}

/// The answer parsing alone, for the fuzz targets and property tests (`fuzzing` feature).
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// The URL the errors name.
    pub const URL: &str = "http://prometheus.test:9090";

    /// An instant query's answer as [`PrometheusClient`] reads it.
    pub fn instant(
        status: StatusCode,
        content_type: &str,
        body: &[u8],
    ) -> Result<Vec<Sample>, QueryError> {
        samples(decode(URL, DEFAULT_TIMEOUT, status, content_type, body)?)
    }

    /// A range query's answer as [`PrometheusClient::query_range`] reads it.
    pub fn range(
        status: StatusCode,
        content_type: &str,
        body: &[u8],
    ) -> Result<Vec<super::super::Series>, QueryError> {
        series(decode(URL, DEFAULT_TIMEOUT, status, content_type, body)?)
    }
}

/// The API's answer envelope; `data` uses prometheus-http-query's result types.
#[derive(Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
enum Envelope {
    Success {
        data: PromqlResult,
    },
    Error {
        #[serde(rename = "errorType")]
        error_type: String,
        error: String,
    },
}

fn samples(result: PromqlResult) -> Result<Vec<Sample>, QueryError> {
    match result.into_inner().0 {
        Data::Vector(v) => Ok(v
            .into_iter()
            .map(|s| {
                let (labels, sample) = s.into_inner();
                Sample {
                    labels: labels.into_iter().collect(),
                    value: sample.value(),
                }
            })
            .collect()),
        Data::Scalar(s) => Ok(vec![Sample {
            labels: Default::default(),
            value: s.value(),
        }]),
        Data::Matrix(_) => Err(QueryError::UnexpectedResult {
            message: "the query returns a range vector; use an instant vector".into(),
        }),
    }
}

/// Seconds with milliseconds, as the API's `time` parameter takes them.
fn prometheus_time(at: jiff::Timestamp) -> String {
    let ms = at.as_millisecond();
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// The first 1000 characters of a Prometheus error text (its own errors list the series).
fn snippet(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(1000) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// An error and its causes on one line (reqwest's own message alone says little).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in std::iter::successors(Some(error), |&e| e.source()) {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// The rustls error in a chain, if the failure was the TLS handshake. rustls errors travel inside
/// (nested) `io::Error`s, whose `source()` skips the error they wrap, hence the look inside.
fn tls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    fn inside<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
        match e.downcast_ref::<rustls::Error>() {
            Some(tls) => Some(tls),
            None => inside(e.downcast_ref::<std::io::Error>()?.get_ref()?),
        }
    }
    std::iter::successors(Some(error), |&e| e.source()).find_map(inside)
}

/// Clients by endpoint, so connections are reused across ticks.
#[derive(Clone, Default)]
pub struct ClientCache {
    clients: Arc<Mutex<HashMap<Endpoint, PrometheusClient>>>,
    metrics: Option<Metrics>,
}

impl ClientCache {
    pub fn new(metrics: Option<Metrics>) -> Self {
        Self {
            clients: Default::default(),
            metrics,
        }
    }

    /// The client for an endpoint, built on first use.
    pub fn get(&self, endpoint: &Endpoint) -> Result<PrometheusClient, QueryError> {
        let mut clients = self.clients.lock().expect("client cache lock");
        if let Some(client) = clients.get(endpoint) {
            return Ok(client.clone());
        }
        let mut client = PrometheusClient::new(endpoint)?;
        if let Some(metrics) = &self.metrics {
            client = client.with_metrics(metrics.clone());
        }
        clients.insert(endpoint.clone(), client.clone());
        Ok(client)
    }

    /// Forgets clients of endpoints no longer in use (e.g. after a credential rotation).
    pub fn retain(&self, keep: impl Fn(&Endpoint) -> bool) {
        self.clients
            .lock()
            .expect("client cache lock")
            .retain(|e, _| keep(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let creds = Credentials {
            bearer_token: Some("t0ken".into()),
            basic: Some(BasicCredentials {
                username: "frys".into(),
                password: "s3cret".into(),
            }),
            ca_pem: None,
        };
        let text = format!(
            "{:?}",
            Endpoint {
                credentials: creds,
                ..Endpoint::new("http://p:9090")
            }
        );
        assert!(
            !text.contains("t0ken") && !text.contains("s3cret"),
            "{text}"
        );
        assert!(text.contains("frys"), "{text}");
    }

    #[test]
    fn refuses_inconsistent_settings() {
        let mut e = Endpoint::new("http://p:9090");
        e.credentials.bearer_token = Some("a".into());
        e.credentials.basic = Some(BasicCredentials {
            username: "u".into(),
            password: "p".into(),
        });
        assert!(matches!(
            PrometheusClient::new(&e),
            Err(QueryError::InvalidConfig { .. })
        ));
        let mut e = Endpoint::new("http://p:9090");
        e.credentials.ca_pem = Some("not a certificate".into());
        let err = PrometheusClient::new(&e).unwrap_err();
        assert!(err.to_string().contains("CA bundle"), "{err}");
        assert!(PrometheusClient::new(&Endpoint::new("not a url")).is_err());
    }

    #[test]
    fn policy_endpoint_or_operator_default() {
        let source = PrometheusSource {
            url: "https://prom.example:9090".into(),
            timeout: Some("3s".into()),
            bearer_token_secret_ref: None,
            basic_auth: None,
            ca_secret_ref: None,
        };
        let e = Endpoint::for_policy(
            Some(&source),
            Some("http://default"),
            Credentials::default(),
        )
        .unwrap();
        assert_eq!(
            (e.url.as_str(), e.timeout),
            ("https://prom.example:9090", Duration::from_secs(3))
        );
        let e = Endpoint::for_policy(None, Some("http://default"), Credentials::default()).unwrap();
        assert_eq!(
            (e.url.as_str(), e.timeout),
            ("http://default", DEFAULT_TIMEOUT)
        );
        let err = Endpoint::for_policy(None, None, Credentials::default()).unwrap_err();
        assert!(err.to_string().contains("--prometheus-url"), "{err}");
    }

    #[test]
    fn time_parameter_keeps_milliseconds() {
        let at = jiff::Timestamp::from_millisecond(1_700_000_000_250).unwrap();
        assert_eq!(prometheus_time(at), "1700000000.250");
    }

    #[test]
    fn decodes_vectors_and_scalars() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"app":"web"},"value":[1700000000.0,"0.25"]}]}}"#;
        let Envelope::Success { data } = serde_json::from_str(vector).unwrap() else {
            panic!()
        };
        assert_eq!(
            samples(data).unwrap(),
            vec![Sample::new([("app", "web")], 0.25)]
        );
        let scalar =
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.0,"NaN"]}}"#;
        let Envelope::Success { data } = serde_json::from_str(scalar).unwrap() else {
            panic!()
        };
        let s = samples(data).unwrap();
        assert!(s[0].labels.is_empty() && s[0].value.is_nan());
        let error = r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unclosed left parenthesis"}"#;
        assert!(matches!(
            serde_json::from_str::<Envelope>(error).unwrap(),
            Envelope::Error { error_type, .. } if error_type == "bad_data"
        ));
    }

    /// Marks text that must never be repeated into an error.
    const CANARY: &str = "canary-7c1f";

    /// Any JSON, with the canary in some strings and keys.
    fn any_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::Value;
        let text = prop_oneof![
            Just(CANARY.to_owned()),
            Just("NaN".to_owned()),
            Just("+Inf".to_owned()),
            "[0-9.e+-]{0,8}",
            "\\PC{0,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            text.clone().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            let key = prop_oneof![
                Just("status".to_owned()),
                Just("data".to_owned()),
                Just("resultType".to_owned()),
                Just("result".to_owned()),
                Just("metric".to_owned()),
                Just("value".to_owned()),
                Just("values".to_owned()),
                Just("error".to_owned()),
                Just("errorType".to_owned()),
                text.clone(),
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(key, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Prometheus-shaped answers with arbitrary parts.
    fn any_answer() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let kind = proptest::sample::select(vec!["vector", "matrix", "scalar", "string", "x"]);
        let status = proptest::sample::select(vec!["success", "error", "x"]);
        prop_oneof![
            any_json(),
            (status, kind, any_json()).prop_map(|(status, kind, result)| serde_json::json!({
                "status": status,
                "data": {"resultType": kind, "result": result},
            })),
            (any_json(), any_json(), "[0-9.e+-]{0,8}|NaN|\\PC{0,4}").prop_map(|(metric, t, v)| serde_json::json!({
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": metric, "value": [t, v]}]},
            })),
            (any_json(), any_json(), "[0-9.e+-]{0,8}|NaN").prop_map(|(metric, t, v)| serde_json::json!({
                "status": "success",
                "data": {"resultType": "matrix", "result": [{"metric": metric, "values": [[t, v], [t, v]]}]},
            })),
        ]
    }

    /// True when the body is a Prometheus error envelope, whose `error` text is quoted on purpose.
    fn is_error_envelope(body: &[u8]) -> bool {
        serde_json::from_slice::<serde_json::Value>(body)
            .is_ok_and(|v| v.get("status").and_then(|s| s.as_str()) == Some("error"))
    }

    proptest::proptest! {
        /// Any JSON (and any bytes), any status: the answer is read or refused, never a panic;
        /// a refusal quotes nothing of the body unless it is an error envelope, and is bounded.
        #[test]
        fn any_answer_is_read_or_refused(
            answer in any_answer(),
            garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            raw in proptest::prelude::any::<bool>(),
            status in proptest::sample::select(vec![200u16, 400, 401, 422, 500, 503]),
            json in proptest::prelude::any::<bool>(),
        ) {
            let body = if raw { garbage } else { serde_json::to_vec(&answer).unwrap() };
            let status = StatusCode::from_u16(status).unwrap();
            let content_type = if json { "application/json" } else { "text/html" };
            for result in [
                fuzzing::instant(status, content_type, &body).map(|s| s.len()),
                fuzzing::range(status, content_type, &body).map(|s| s.len()),
            ] {
                if let Err(e) = result {
                    let text = e.to_string();
                    proptest::prop_assert!(text.chars().count() < 2 * 1001 + 200, "{}", text.len());
                    if !is_error_envelope(&body) {
                        proptest::prop_assert!(!text.contains(CANARY), "{}", text);
                    }
                }
            }
        }

        /// A well-formed vector answer reads as one sample per series, labels and value kept.
        #[test]
        fn vectors_read_back(series in proptest::collection::btree_map("[a-z]{1,4}", (proptest::prelude::any::<f64>(), "[a-z]{0,4}"), 0..5)) {
            let result: Vec<_> = series.iter().map(|(name, (v, label))| serde_json::json!({
                "metric": {"series": name, "l": label},
                "value": [1_700_000_000.5, v.to_string()],
            })).collect();
            let body = serde_json::to_vec(&serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": result}})).unwrap();
            let samples = fuzzing::instant(StatusCode::OK, "application/json", &body).unwrap();
            proptest::prop_assert_eq!(samples.len(), series.len());
            for (sample, (name, (v, label))) in samples.iter().zip(&series) {
                proptest::prop_assert_eq!(sample.labels.get("series"), Some(name));
                proptest::prop_assert_eq!(sample.labels.get("l"), Some(label));
                proptest::prop_assert!(sample.value == *v || (v.is_nan() && sample.value.is_nan()));
            }
        }
    }
}
