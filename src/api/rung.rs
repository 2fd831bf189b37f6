//! One rung of a policy's ladder: its strategy, the incidents it answers, and each strategy's
//! parameters (Kubernetes union style: `type` plus the member of that name).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// The API's types refer to each other across its files.
use super::*;

/// One rung of the ladder. Kubernetes union style: `type` plus the member of that name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "(self.type == 'CircuitBreaker') == has(self.circuitBreaker)", "message": "type CircuitBreaker needs the circuitBreaker member, and only it"},
    {"rule": "(self.type == 'TrafficShifting') == has(self.trafficShifting)", "message": "type TrafficShifting needs the trafficShifting member, and only it"},
    {"rule": "(self.type == 'EnvironmentSwitch') == has(self.environmentSwitch)", "message": "type EnvironmentSwitch needs the environmentSwitch member, and only it"},
    {"rule": "self.type == 'VersionRollback' || !has(self.versionRollback)", "message": "versionRollback is set on a rung whose type is not VersionRollback"},
    {"rule": "self.type == 'EmergencyShutdown' || !has(self.emergencyShutdown)", "message": "emergencyShutdown is set on a rung whose type is not EmergencyShutdown"},
    {"rule": "(self.type == 'Webhook') == has(self.webhook)", "message": "type Webhook needs the webhook member, and only it"}
]))]
pub struct Rung {
    /// The strategy of this rung.
    #[serde(rename = "type")]
    pub type_: StrategyKind,
    /// Incident classes this rung answers. Default: the strategy's own class (CircuitBreaker:
    /// Performance, TrafficShifting: Errors, EnvironmentSwitch: Dependency, VersionRollback:
    /// Release, EmergencyShutdown: Unavailable, Webhook: Dependency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Not `on`: YAML 1.1 readers (kubectl, Helm) read an unquoted `on` key as `true`.
    #[schemars(length(min = 1, max = 5))]
    pub incidents: Option<Vec<IncidentClass>>,
    /// Least workload status at which this rung may run. Default Critical; an EmergencyShutdown
    /// rung in an automatic ladder must say Unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<MinSeverity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_shifting: Option<TrafficShiftingSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_switch: Option<EnvironmentSwitchSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_rollback: Option<VersionRollbackSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency_shutdown: Option<EmergencyShutdownSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
}

impl Rung {
    /// Incident classes this rung answers, after defaulting.
    pub fn classes(&self) -> Vec<IncidentClass> {
        self.incidents
            .clone()
            .unwrap_or_else(|| vec![self.type_.default_class()])
    }
}

/// A route rule to act on: an HTTPRoute (Gateway API) or an Istio VirtualService.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteRef {
    /// Name of a gateway.networking.k8s.io HTTPRoute in the policy's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<String>,
    /// Name of a networking.istio.io VirtualService in the policy's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_service: Option<String>,
    /// Index of the rule in the route's rules (HTTPRoute) or http routes (VirtualService). Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 63))]
    pub rule_index: Option<u32>,
    /// Name of the rule instead of its index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_name: Option<String>,
}

/// A backend (Service) and port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// Service name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
}

/// Circuit breaker: send the target's traffic to a fallback (or nowhere) for openDuration, then
/// half-open.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.httpRoute) != has(self.virtualService)", "message": "set exactly one of httpRoute or virtualService"},
    {"rule": "!has(self.openDuration) || (duration(self.openDuration) >= duration('1s') && duration(self.openDuration) <= duration('1h'))", "message": "openDuration must be between 1s and 1h"}
]))]
pub struct CircuitBreakerSpec {
    #[serde(flatten)]
    pub route: RouteRef,
    /// Backend in the rule that serves the target. Default: the backend named like the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Backend that receives the traffic while the breaker is open. When absent the target's
    /// weight is set to zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_backend: Option<BackendRef>,
    /// How long the breaker stays open before half-open (seed: 30s to 5m). Default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_duration: Option<Duration>,
}

/// Traffic shifting: move route weight from one backend to another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.httpRoute) != has(self.virtualService)", "message": "set exactly one of httpRoute or virtualService"},
    {"rule": "self.from != self.to", "message": "from and to must name different backends"}
]))]
pub struct TrafficShiftingSpec {
    #[serde(flatten)]
    pub route: RouteRef,
    /// Backend whose weight is taken away (the failing one).
    #[schemars(length(min = 1, max = 253))]
    pub from: String,
    /// Backend that receives the weight (the standby).
    #[schemars(length(min = 1, max = 253))]
    pub to: String,
    /// Percentage of the rule's total weight left on `from` afterwards. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub remaining_percent: Option<u32>,
}

/// Blue/green environment switch on a Service selector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.activeValue != self.standbyValue", "message": "activeValue and standbyValue must differ"}
]))]
pub struct EnvironmentSwitchSpec {
    /// The user-facing Service whose selector is switched.
    #[schemars(length(min = 1, max = 253))]
    pub service: String,
    /// Selector key that tells the environments apart, e.g. color.
    #[schemars(length(min = 1, max = 317))]
    pub selector_key: String,
    /// Selector value of the live environment, e.g. green.
    #[schemars(length(min = 1, max = 63))]
    pub active_value: String,
    /// Selector value of the standby environment, e.g. blue.
    #[schemars(length(min = 1, max = 63))]
    pub standby_value: String,
    /// The standby Deployment, made ready before the switch.
    #[schemars(length(min = 1, max = 253))]
    pub standby_ref: String,
    /// Scale the standby to the active replica count before switching.
    #[serde(default)]
    pub scale_standby: bool,
    /// How long to wait for the standby to become ready. Default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_timeout: Option<Duration>,
}

/// Version rollback parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionRollbackSpec {
    /// Revision to return to. Default: the previous revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub to_revision: Option<i64>,
}

/// Emergency shutdown parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmergencyShutdownSpec {
    /// Also cut the target's traffic on this route (weight zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_traffic: Option<RouteRef>,
    /// Backend in the cutTraffic rule that serves the target. Default: the backend named like
    /// the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub backend: Option<String>,
}

/// Webhook: POST the remediation (CloudEvents or JSON) to a URL read from a Secret. A 2xx
/// answer means applied; its optional JSON body `{"undoUrl": "..."}` names where undo POSTs
/// (same origin as the Secret's URL). Anything else, after the retries, means failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.format) || self.format != 'Slack'", "message": "format must be CloudEvents or Json"},
    {"rule": "!has(self.timeout) || (duration(self.timeout) >= duration('100ms') && duration(self.timeout) <= duration('5m'))", "message": "timeout must be between 100ms and 5m"}
]))]
pub struct WebhookSpec {
    /// Secret key holding the URL (the Secret must be labelled rollback.frys.io/policy-access: "true").
    pub url_secret_ref: SecretKeyRef,
    /// Body format: CloudEvents (default) or Json.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<WebhookFormat>,
    /// Timeout of one attempt. Default 10s. The whole call is also bounded by rollbackTimeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Further attempts after a timeout, a connection error, a 5xx or a 429, with exponential
    /// backoff from 500ms. Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 10))]
    pub retries: Option<u32>,
}
