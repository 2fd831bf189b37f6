//! `RollbackPolicy`: which workload to protect, which signals to watch, which strategies to use.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// The API's types refer to each other across its files.
use super::*;

/// Protects one workload: watches its health signals in Prometheus and remediates with the
/// lightest strategy of its ladder that fits, escalating when a step does not help.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "rollback.frys.io",
    version = "v1alpha1",
    kind = "RollbackPolicy",
    plural = "rollbackpolicies",
    singular = "rollbackpolicy",
    shortname = "rbp",
    category = "frys",
    namespaced,
    status = "RollbackPolicyStatus",
    derive = "PartialEq",
    doc = "RollbackPolicy protects one workload: it names the target, the health signals to watch and the ladder of remediation strategies allowed for it.",
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.targetRef.name"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Health", type_ = "string", json_path = ".status.health.status"),
    printcolumn(name = "Score", type_ = "number", json_path = ".status.health.score"),
    printcolumn(
        name = "Streak",
        type_ = "integer",
        json_path = ".status.failureStreak"
    ),
    printcolumn(
        name = "Last",
        type_ = "string",
        json_path = ".status.lastRollback.strategy",
        description = "strategy of the last remediation"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.strategies) || (has(self.autoRollback) && !self.autoRollback) || self.strategies.all(r, r.type != 'EmergencyShutdown' || (has(r.minSeverity) && r.minSeverity == 'Unhealthy'))",
        "message": "an EmergencyShutdown rung in an automatic ladder needs minSeverity: Unhealthy (or set autoRollback: false)",
        "fieldPath": ".strategies"
    },
    {
        "rule": "!has(self.prometheus) || !has(self.prometheus.timeout) || !has(self.interval) || duration(self.prometheus.timeout) < duration(self.interval)",
        "message": "prometheus.timeout must be shorter than interval: a query still running when the next evaluation is due makes this policy skip evaluations",
        "fieldPath": ".prometheus.timeout"
    }
]))]
pub struct RollbackPolicySpec {
    /// The protected workload. One policy per target: a second policy for the same target is
    /// reported with Ready=False.
    pub target_ref: TargetRef,

    /// Prometheus to query. When absent, the operator's --prometheus-url (METRICS_URL) is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSource>,

    /// How often the signals are evaluated (seed healthCheckInterval), at least 1s.
    /// Default: the operator's --interval (HEALTH_CHECK_INTERVAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "duration(self) >= duration('1s')", "message": "must be at least 1s"}]))]
    pub interval: Option<Duration>,

    /// Range used by rate() in presets ({{ window }} in templates), at least 1s. Default 2m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "duration(self) >= duration('1s')", "message": "must be at least 1s"}]))]
    pub rate_window: Option<Duration>,

    /// Label that carries the workload name on the request series. Default: the operator's
    /// --workload-label (app).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub workload_label: Option<String>,

    /// Named health signals: presets or PromQL templates with thresholds.
    #[schemars(length(min = 1, max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub metrics: Vec<MetricSpec>,

    /// Failing (Critical or Unhealthy) evaluations in a row that open an incident.
    #[serde(default = "default_consecutive_failures")]
    #[schemars(range(min = 1, max = 100))]
    pub consecutive_failures: u32,

    /// What a signal without data means: Ignore (inconclusive) or Breach (critical).
    #[serde(default)]
    pub no_data: NoDataPolicy,

    /// Requests per second below which rate-based signals (errorRate, responseTime) are
    /// inconclusive rather than judged. Default 0 (always judged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub min_request_rate: Option<f64>,

    /// A degradation that begins within this time of the target's latest revision is a Release
    /// incident (answered by VersionRollback). Default 30m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_window: Option<Duration>,

    /// The ladder of strategies, lightest first. Each strategy type appears at most once.
    /// When absent (or empty), the ladder of the policy's environment profile is used (the
    /// namespace label rollback.frys.io/profile, else the operator's --environment); see
    /// status.effective.profile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub strategies: Vec<Rung>,

    /// Remediate automatically. When false the operator assesses, records and alerts but creates
    /// no RollbackEvents. Default: the operator's --auto-rollback (ROLLBACK_AUTO_ENABLED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rollback: Option<bool>,

    /// Decide but never patch: each decision is recorded as a Skipped RollbackEvent.
    #[serde(default)]
    pub dry_run: bool,

    /// Stop evaluating and remediating (manual triggers included; emergency too).
    #[serde(default)]
    pub suspend: bool,

    /// Remediations per incident (each rung at most once). When used up the incident fails, an
    /// Emergency alert goes out and automatic action stops until healthy or acknowledged.
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1, max = 5))]
    pub max_rollback_attempts: u32,

    /// Bound on applying one step. Default: the operator's --rollback-timeout (ROLLBACK_TIMEOUT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "duration(self) >= duration('1s')", "message": "must be at least 1s"}]))]
    pub rollback_timeout: Option<Duration>,

    /// Minimum time between two automatic remediations of this target. Default: the operator's
    /// --cooldown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<Duration>,

    /// RollbackEvents kept for this policy; older finished ones are deleted.
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 1, max = 1000))]
    pub history_limit: u32,

    /// What happens to active remediations when the policy is deleted.
    #[serde(default)]
    pub on_delete: OnDelete,

    /// Undo traffic rungs (circuit breaker, traffic shifting, environment switch) by themselves
    /// once the target has been healthy for restoreAfter. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_restore: Option<AutoRestore>,

    /// How a remediation is verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationSpec>,

    /// Where alerts are sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub notifications: Vec<NotificationSpec>,

    /// How a remediation treats the target's Argo CD or Flux owner (docs/gitops.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops: Option<GitopsSpec>,
}

fn default_consecutive_failures() -> u32 {
    3
}
fn default_max_attempts() -> u32 {
    3
}
fn default_history_limit() -> u32 {
    10
}

/// The protected workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// API version of the target. Only apps/v1 is supported today.
    #[serde(default = "default_target_api_version")]
    #[schemars(extend("enum" = ["apps/v1"]))]
    pub api_version: String,
    /// Kind of the target. Only Deployment is supported today.
    #[serde(default = "default_target_kind")]
    #[schemars(extend("enum" = ["Deployment"]))]
    pub kind: String,
    /// Name of the target in the policy's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

fn default_target_api_version() -> String {
    "apps/v1".into()
}
fn default_target_kind() -> String {
    "Deployment".into()
}

/// Where and how to query Prometheus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSource {
    /// Base URL of the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub url: String,
    /// Timeout of one query, more than 0s and at most 2m (Prometheus' own default query
    /// timeout), and shorter than `interval` when both are set. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "duration(self) > duration('0s') && duration(self) <= duration('2m')", "message": "must be more than 0s and at most 2m"}]))]
    pub timeout: Option<Duration>,
    /// Secret key holding a bearer token sent as `Authorization: Bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret_ref: Option<SecretKeyRef>,
    /// Basic auth credentials from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// Secret key holding a PEM CA bundle to verify the server's certificate (TLS is always
    /// verified; this adds a trust root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

/// Basic auth credentials from Secrets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    /// Secret key holding the user name.
    pub username_secret_ref: SecretKeyRef,
    /// Secret key holding the password.
    pub password_secret_ref: SecretKeyRef,
}

/// One health signal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "(has(self.preset) ? 1 : 0) + (has(self.query) ? 1 : 0) + (has(self.alert) ? 1 : 0) == 1", "message": "a metric sets exactly one of preset, query or alert"},
    {"rule": "has(self.preset) || has(self.alert) || has(self.warning) || has(self.critical)", "message": "a metric with a custom query needs a warning or critical threshold"},
    {"rule": "!has(self.alert) || !(has(self.warning) || has(self.critical) || has(self.direction) || has(self.class) || has(self.baseline))", "message": "an alert metric has no thresholds, direction, class or baseline: a firing alert is Critical, of alert.class"},
    {"rule": "!has(self.preset) || self.preset == 'responseTime' || ((!has(self.warning) || (self.warning >= 0.0 && self.warning <= 1.0)) && (!has(self.critical) || (self.critical >= 0.0 && self.critical <= 1.0)))", "message": "thresholds of ratio presets (errorRate, memoryUsage, cpuUsage) are ratios between 0 and 1"},
    {"rule": "!has(self.warning) || !has(self.critical) || ((has(self.direction) && self.direction == 'Below') ? self.warning >= self.critical : self.warning <= self.critical)", "message": "the warning threshold must be reached before the critical one (warning <= critical for Above, >= for Below)"}
]))]
pub struct MetricSpec {
    /// Name of the signal, shown in status and events.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-zA-Z][a-zA-Z0-9_-]*$")
    )]
    pub name: String,
    /// One of the seed's four signals over standard series (see the docs); sets query,
    /// direction, class and default thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// PromQL template returning one number. Variables: {{ namespace }}, {{ target }},
    /// {{ podRegex }}, {{ window }}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub query: Option<String>,
    /// An Alertmanager alert instead of a query: Critical while an alert of this name, mapped
    /// to this policy by the operator's alert receiver, is firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertSignal>,
    /// Threshold beyond which the signal is Warning. Presets default from the operator
    /// configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<f64>,
    /// Threshold beyond which the signal is Critical. Presets default from the operator
    /// configuration (THRESHOLD_* variables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<f64>,
    /// Whether larger (Above) or smaller (Below) values are worse. Default Above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Weight of the signal in the health score. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub weight: Option<f64>,
    /// What a breach of this signal means. Presets set it (errorRate: Errors; the others:
    /// Performance); custom queries default to Performance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<IncidentClass>,
    /// Compare the signal since the target's latest new revision with its own values over a
    /// window before it: a significant regression of at least `effect` is a Release breach,
    /// even within the thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineSpec>,
}

/// The baseline judge of a signal: a one-sided Mann-Whitney U test of the samples since the
/// latest release against those of `window` before it, its `alpha` spread over the looks of
/// one release (window / interval), plus an effect-size gate on the medians.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BaselineSpec {
    /// Length of the baseline before the release, and of the time after it during which the
    /// judge looks (once per interval). At least 1s.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "duration(self) >= duration('1s')", "message": "must be at least 1s"}]))]
    pub window: Duration,
    /// Samples needed on each side before the judge says anything; below it the signal's
    /// baseline is inconclusive, never a breach. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 3, max = 10000))]
    pub min_samples: Option<u32>,
    /// Least ratio of medians, since the release over before it (the bad way round for
    /// direction Below), that counts as a regression, e.g. 1.5. Default 1.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0, max = 1000.0))]
    pub effect: Option<f64>,
    /// Chance of a false breach over one release, spread over its looks. Default 0.01.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.000001, max = 0.2))]
    pub alpha: Option<f64>,
}

/// How a signal's values read to people; machine fields always keep the plain number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Unit {
    /// Milliseconds.
    Milliseconds,
    /// A share from 0 to 1, shown as a percentage.
    Ratio,
    /// Requests (or events) per second.
    PerSecond,
}

/// The seed's four standard signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Preset {
    /// p95 request latency in milliseconds, from http_request_duration_seconds_bucket.
    ResponseTime,
    /// Share of 5xx responses (0-1), from http_requests_total.
    ErrorRate,
    /// Working set over memory limit (0-1), from cAdvisor and kube-state-metrics.
    MemoryUsage,
    /// CPU usage over CPU limit (0-1), from cAdvisor and kube-state-metrics.
    CpuUsage,
}

/// Which side of a threshold is bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum Direction {
    /// Values above the threshold breach it.
    #[default]
    Above,
    /// Values below the threshold breach it.
    Below,
}

/// What a signal without data means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum NoDataPolicy {
    /// No data is inconclusive: it neither grows nor resets the failure streak.
    #[default]
    Ignore,
    /// No data counts as a critical breach.
    Breach,
}

/// What happens to active remediations when the policy is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum OnDelete {
    /// Leave the workload as it is.
    #[default]
    Keep,
    /// Undo active remediations before the policy goes away.
    Restore,
}

/// Automatic restore of traffic rungs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoRestore {
    /// Healthy time after which traffic rungs are undone.
    pub restore_after: Duration,
}

/// How a remediation is verified (the seed's six checks).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationSpec {
    /// Wait after a step before verification starts. Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stabilization_delay: Option<Duration>,
    /// Bound on verifying one step. Default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "duration(self) >= duration('1s')", "message": "must be at least 1s"}]))]
    pub timeout: Option<Duration>,
    /// Consecutive passing evaluations of the signals needed. Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 20))]
    pub consecutive_passes: Option<u32>,
    /// HTTP health endpoint checked on the Service's ready endpoints. Default from the
    /// operator's HEALTH_CHECK_URL port and path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HttpCheck>,
    /// Extra checks (dependencies, data consistency).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub checks: Vec<CheckSpec>,
}

/// An HTTP GET against the ready endpoints of a Service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpCheck {
    /// Service whose ready endpoint addresses are checked.
    #[schemars(length(min = 1, max = 253))]
    pub service: String,
    /// Container port to call.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Path, e.g. /health.
    #[serde(default = "default_health_path")]
    #[schemars(regex(pattern = r"^/"))]
    pub path: String,
}

fn default_health_path() -> String {
    "/health".into()
}

/// A user check: a PromQL expression that must return a non-empty, non-zero result, or an HTTP
/// GET that must answer 2xx.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.promql) != has(self.http)", "message": "a check sets exactly one of promql or http"}
]))]
pub struct CheckSpec {
    /// Name shown in the verification report.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Dependencies or DataConsistency.
    pub category: CheckCategory,
    /// PromQL expression (same template variables as metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub promql: Option<String>,
    /// HTTP GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
}

/// Categories of the seed's verification checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CheckCategory {
    Availability,
    Health,
    Performance,
    Dependencies,
    DataConsistency,
    Traffic,
}

/// An alert sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationSpec {
    /// Webhook sink.
    pub webhook: WebhookSink,
    /// Least alert level sent to this sink. Default Warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_level: Option<AlertLevel>,
}

/// A webhook whose URL is kept in a Secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSink {
    /// Secret key holding the webhook URL.
    pub url_secret_ref: SecretKeyRef,
    /// Payload format. Default Json.
    #[serde(default)]
    pub format: WebhookFormat,
}

/// Webhook payload format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum WebhookFormat {
    /// Slack-compatible `{"text": ...}` payload.
    Slack,
    /// Generic JSON document with all alert fields.
    #[default]
    Json,
    /// A CloudEvents 1.0 event in structured JSON mode (`application/cloudevents+json`), the
    /// JSON document as its `data`.
    CloudEvents,
}
