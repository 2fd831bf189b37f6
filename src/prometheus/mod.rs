//! Prometheus access: the [`MetricsSource`] trait the rest of the operator queries through, its
//! HTTP implementation ([`PrometheusClient`]), query templates and presets ([`template`]), and the
//! planner that evaluates shared templates once for many policies ([`plan`](mod@plan)).
//!
//! Only [`secrets`] touches the Kubernetes client (to read credentials); everything else is pure
//! or talks to Prometheus.
//!
//! How the policy controller uses it:
//! - on reconcile: [`validate_metrics`] (an error goes into `Ready=False`), then
//!   [`resolve_credentials`] and [`Endpoint::for_policy`];
//! - each tick, for the policies due: one [`PolicyQueries`] each (signals from
//!   [`Signal::for_policy`], `podRegex` from [`pod_regex`] of the target's ReplicaSets), then
//!   `run(&plan(&due), Some(now), |e| cache.get(e))` with a [`ClientCache`] built with the
//!   operator's metrics. The [`Readings`] hold, per policy and signal, a value, "no data"
//!   (`Ok(None)`), or a [`QueryError`] whose `reason()` suits `MetricsAvailable=False`.

pub mod baseline;
pub mod client;
mod group;
pub mod plan;
pub mod secrets;
pub mod template;
#[cfg(test)]
mod tiny_promql;

use std::{collections::BTreeMap, future::Future, time::Duration};

pub use client::{
    BasicCredentials, ClientCache, Credentials, DEFAULT_TIMEOUT, Endpoint, PrometheusClient,
};
pub use plan::{PolicyQueries, Reading, Readings, Signal, plan, read_policy, run};
pub use secrets::{CachedSecrets, CredentialsError, SecretLookup, resolve_credentials};
pub use template::{
    InvalidMetric, TemplateError, Vars, pod_regex, validate_metric, validate_metrics,
};

/// One series of an instant query result.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn new<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>, value: f64) -> Self {
        Self {
            labels: labels
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            value,
        }
    }
}

/// Something that answers instant PromQL queries: Prometheus, or a fake in tests.
pub trait MetricsSource {
    /// Evaluates `promql` at `at` (the server's now when None). A scalar result comes back as one
    /// sample without labels; a range vector or string is [`QueryError::UnexpectedResult`].
    fn query(
        &self,
        promql: &str,
        at: Option<jiff::Timestamp>,
    ) -> impl Future<Output = Result<Vec<Sample>, QueryError>> + Send;
}

impl<S: MetricsSource + Sync> MetricsSource for &S {
    fn query(
        &self,
        promql: &str,
        at: Option<jiff::Timestamp>,
    ) -> impl Future<Output = Result<Vec<Sample>, QueryError>> + Send {
        (**self).query(promql, at)
    }
}

/// One series of a range query result: its labels and its values in time order.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(jiff::Timestamp, f64)>,
}

/// Something that answers range PromQL queries (Prometheus' `query_range`), or a fake in tests.
pub trait RangeSource {
    /// Evaluates `promql` every `step` from `start` to `end`, both included.
    fn query_range(
        &self,
        promql: &str,
        start: jiff::Timestamp,
        end: jiff::Timestamp,
        step: Duration,
    ) -> impl Future<Output = Result<Vec<Series>, QueryError>> + Send;
}

/// A [`MetricsSource`] answering from a function: for tests of code that queries.
#[derive(Clone)]
pub struct FnSource<F>(pub F);

impl<F> MetricsSource for FnSource<F>
where
    F: Fn(&str) -> Result<Vec<Sample>, QueryError> + Sync,
{
    fn query(
        &self,
        promql: &str,
        _at: Option<jiff::Timestamp>,
    ) -> impl Future<Output = Result<Vec<Sample>, QueryError>> + Send {
        std::future::ready((self.0)(promql))
    }
}

/// Why a query gave no result. Cloneable: one failed shared query fails every signal it serves.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("Prometheus at {url} is unreachable: {message}")]
    Unreachable { url: String, message: String },
    #[error("Prometheus at {url} did not answer within {}", crate::api::duration::format(*.timeout))]
    Timeout { url: String, timeout: Duration },
    /// Prometheus refused the query (syntax, or an execution error such as many-to-many
    /// matching); `message` is Prometheus' own.
    #[error("Prometheus rejected the query: {message}")]
    BadQuery { message: String },
    #[error("unexpected query result: {message}")]
    UnexpectedResult { message: String },
    #[error("Prometheus at {url} refused the credentials (HTTP {status}): {message}")]
    Auth {
        url: String,
        status: u16,
        message: String,
    },
    #[error("TLS with Prometheus at {url} failed: {message}")]
    Tls { url: String, message: String },
    #[error("Prometheus at {url} failed (HTTP {status}): {message}")]
    Server {
        url: String,
        status: u16,
        message: String,
    },
    #[error("invalid Prometheus settings: {message}")]
    InvalidConfig { message: String },
    /// A 3xx: the operator never follows redirects (the target could be anything).
    #[error(
        "Prometheus at {url} answered with a redirect (HTTP {status}); redirects are not followed"
    )]
    Redirect { url: String, status: u16 },
    /// The destination is refused (link-local or metadata address, see [`crate::egress`]).
    #[error("Prometheus at {url} is refused: {message}")]
    Refused { url: String, message: String },
}

impl QueryError {
    /// A condition reason (PascalCase) for `MetricsAvailable=False`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "PrometheusUnreachable",
            Self::Timeout { .. } => "PrometheusTimeout",
            Self::BadQuery { .. } => "BadQuery",
            Self::UnexpectedResult { .. } => "UnexpectedResult",
            Self::Auth { .. } => "PrometheusAuthFailed",
            Self::Tls { .. } => "PrometheusTlsFailed",
            Self::Server { .. } => "PrometheusError",
            Self::InvalidConfig { .. } => "InvalidPrometheusConfig",
            Self::Redirect { .. } => "PrometheusRedirected",
            Self::Refused { .. } => "PrometheusAddressRefused",
        }
    }

    /// The `outcome` label of the operator's `prometheus_queries` counter.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "unreachable",
            Self::Timeout { .. } => "timeout",
            Self::BadQuery { .. } => "bad_query",
            Self::UnexpectedResult { .. } => "unexpected_result",
            Self::Auth { .. } => "auth",
            Self::Tls { .. } => "tls",
            Self::Server { .. } => "server_error",
            Self::InvalidConfig { .. } => "invalid_config",
            Self::Redirect { .. } => "redirect",
            Self::Refused { .. } => "refused",
        }
    }
}
