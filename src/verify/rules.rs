//! The pure half of verification: verdicts from data already read. No I/O, no clock.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::{apps::v1::Deployment, discovery::v1::EndpointSlice};
use serde_json::Value;

use crate::{
    api::{
        Action, CheckCategory, CheckResult, CheckStatus, HttpCheck, MetricSeverity,
        VerificationStatus,
    },
    prometheus::Sample,
    strategy::{
        Kind, Record,
        route::{self, Router},
    },
};

/// Shortest `{{ window }}` of the performance check. rate() needs two samples inside the
/// window; the scrape interval is unknown here, so 5s covers scrape intervals up to 2.5s and
/// longer ones simply read "no data" (inconclusive) until enough time has passed.
pub const MIN_WINDOW: Duration = Duration::from_secs(5);

/// `{{ window }}` of the performance check: the time since the remediation completed, whole
/// seconds rounded up, at least [`MIN_WINDOW`]. Only samples taken after the remediation count.
pub fn performance_window(since_completed: Duration) -> Duration {
    let secs = since_completed.as_secs() + u64::from(since_completed.subsec_nanos() > 0);
    Duration::from_secs(secs).max(MIN_WINDOW)
}

/// Overall verdict: Passed when every check that ran passed; Failed when availability, health
/// or performance failed; Partial when only dependency, consistency or traffic checks failed.
pub fn overall_status(checks: &[CheckResult]) -> VerificationStatus {
    let failed = || checks.iter().filter(|c| c.status == CheckStatus::Failed);
    if failed().next().is_none() {
        VerificationStatus::Passed
    } else if failed().any(|c| is_essential(c.category)) {
        VerificationStatus::Failed
    } else {
        VerificationStatus::Partial
    }
}

/// Categories whose failure means the remediation did not work.
fn is_essential(category: CheckCategory) -> bool {
    matches!(
        category,
        CheckCategory::Availability | CheckCategory::Health | CheckCategory::Performance
    )
}

/// Detail key holding why a check failed or was skipped, in words.
pub const REASON: &str = "reason";

/// One sentence per failed check: what to look at next.
pub fn recommendations(checks: &[CheckResult]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| c.status == CheckStatus::Failed)
        .map(recommendation)
        .collect()
}

fn recommendation(check: &CheckResult) -> String {
    let next = match check.category {
        CheckCategory::Availability => {
            "look at the rollout status and the events of the Deployment and its pods"
        }
        CheckCategory::Health => {
            "look at the logs of the pods that failed the health endpoint and at what it depends on"
        }
        CheckCategory::Performance => {
            "compare the signals before and after the remediation; the next rung may be needed"
        }
        CheckCategory::Dependencies => {
            "check the dependency named by this check; the workload may be fine while it is down"
        }
        CheckCategory::DataConsistency => {
            "check the data the remediation may have left inconsistent (migrations, caches, queues)"
        }
        CheckCategory::Traffic => {
            "look for another writer of the Service selector or route (a GitOps tool, a person)"
        }
    };
    match check.details.get(REASON) {
        Some(reason) => format!("{} failed ({reason}): {next}.", check.name),
        None => format!("{} failed: {next}.", check.name),
    }
}

/// Why a Deployment is not in the expected state, or None when it is. After an emergency
/// shutdown the expected state is zero replicas; otherwise a finished rollout with every
/// replica updated and available.
pub fn rollout_problem(deployment: &Deployment, expect_zero: bool) -> Option<String> {
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let running = status.replicas.unwrap_or(0);
    if expect_zero {
        return match (desired, running) {
            (0, 0) => None,
            (0, n) => Some(format!("scaled to zero but {n} replica(s) still run")),
            (d, _) => Some(format!("expected 0 replicas, spec.replicas is {d}")),
        };
    }
    let generation = deployment.metadata.generation.unwrap_or(0);
    let observed = status.observed_generation.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if observed < generation {
        Some(format!(
            "the rollout is not observed yet (generation {generation}, observed {observed})"
        ))
    } else if updated != desired {
        Some(format!("{updated} of {desired} replicas updated"))
    } else if available != desired {
        Some(format!("{available} of {desired} replicas available"))
    } else {
        None
    }
}

/// Ready addresses of a Service's EndpointSlices, sorted and without duplicates. An absent
/// `ready` condition means ready (EndpointSlice API).
pub fn ready_addresses(slices: &[EndpointSlice]) -> Vec<String> {
    let mut out: Vec<String> = slices
        .iter()
        .flat_map(|s| &s.endpoints)
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| e.addresses.iter().cloned())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether a PromQL user check passes: a non-empty result whose values are all non-zero. NaN
/// (e.g. 0/0) is no answer, so it fails too. Returns the reason when it fails.
pub fn promql_check(samples: &[Sample]) -> Result<(), String> {
    if samples.is_empty() {
        return Err("the query returned no series".into());
    }
    let bad: Vec<String> = samples
        .iter()
        .filter(|s| s.value == 0.0 || s.value.is_nan())
        .map(|s| format!("{}={}", series_label(s), s.value))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} series are zero or NaN: {}",
            bad.len(),
            samples.len(),
            bad.join(", ")
        ))
    }
}

/// `{a="1", b="2"}` or `{}` for a sample, in reports.
pub fn series_label(sample: &Sample) -> String {
    let inner: Vec<String> = sample
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

/// The health check implied by the operator's HEALTH_CHECK_URL (its port and path) on
/// `service`. The URL's port defaults to the scheme's (80, 443), the path to `/`.
pub fn default_health_check(url: &str, service: &str) -> Option<HttpCheck> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let port = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once("]:").map(|(_, p)| p),
        None => authority.rsplit_once(':').map(|(_, p)| p),
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None if scheme == "https" => 443,
        None => 80,
    };
    let path = path.split(['?', '#']).next().unwrap_or("/");
    Some(HttpCheck {
        service: service.to_owned(),
        port,
        path: path.to_owned(),
    })
}

/// A backend entry's name in a route rule: the Service (HTTPRoute `name`) or host
/// (VirtualService `destination.host`, with `/subset` when it routes to one).
fn backend_label(entry: &Value) -> String {
    let host = entry
        .get("name")
        .or_else(|| entry.pointer("/destination/host"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    match entry.pointer("/destination/subset").and_then(Value::as_str) {
        Some(subset) => format!("{host}/{subset}"),
        None => host.to_owned(),
    }
}

/// Weight per backend of a rule as the data plane reads it (absent weights resolved).
pub fn route_weights(router: &dyn Router, backends: &[Value]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for e in backends {
        *out.entry(backend_label(e)).or_default() += router.weight(e, backends.len());
    }
    out
}

/// The route weights a remediation intended: the backends its last (not undone) route action
/// applied, as [`route_weights`] reads them. For the controller, from the event's actions.
pub fn expected_weights(actions: &[Action]) -> Option<BTreeMap<String, u64>> {
    actions.iter().rev().filter(|a| !a.undone).find_map(|a| {
        let router = route_router(a)?;
        match Record::of(a).ok()? {
            Record::RouteBackends { applied, .. } => Some(route_weights(router, &applied)),
            _ => None,
        }
    })
}

fn route_router(action: &Action) -> Option<&'static dyn Router> {
    route::router_of(Kind::from_type(&action.api_version, &action.kind)?)
}

/// Differences between the weights read back and those intended, in words (empty: as intended).
/// Backends absent on one side count as weight 0.
pub fn weight_differences(
    actual: &BTreeMap<String, u64>,
    expected: &BTreeMap<String, u64>,
) -> Vec<String> {
    let names: std::collections::BTreeSet<&String> = actual.keys().chain(expected.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let a = actual.get(name).copied().unwrap_or(0);
            let e = expected.get(name).copied().unwrap_or(0);
            (a != e).then(|| format!("{name} has weight {a}, expected {e}"))
        })
        .collect()
}

/// Whether one evaluation of the signals passes: no signal Critical, and at least one with
/// data. Inconclusive everywhere is no pass (nothing was shown to work).
pub fn evaluation_passes(severities: impl IntoIterator<Item = MetricSeverity>) -> bool {
    let mut conclusive = false;
    for s in severities {
        match s {
            MetricSeverity::Critical => return false,
            MetricSeverity::Inconclusive => {}
            _ => conclusive = true,
        }
    }
    conclusive
}

/// Counts consecutive passing evaluations; a failing one starts over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Streak {
    pub passes: u32,
    pub evaluations: u32,
}

impl Streak {
    pub fn record(&mut self, passed: bool) {
        self.evaluations += 1;
        self.passes = if passed { self.passes + 1 } else { 0 };
    }

    pub fn reached(&self, needed: u32) -> bool {
        self.passes >= needed
    }
}

/// A check result without timing (the runner measures it).
pub fn result(
    name: impl Into<String>,
    category: CheckCategory,
    status: CheckStatus,
    details: BTreeMap<String, String>,
) -> CheckResult {
    CheckResult {
        name: name.into(),
        category,
        status,
        duration_ms: 0,
        details,
    }
}

/// A skipped check with its reason.
pub fn skipped(name: impl Into<String>, category: CheckCategory, reason: &str) -> CheckResult {
    result(
        name,
        category,
        CheckStatus::Skipped,
        BTreeMap::from([(REASON.to_owned(), reason.to_owned())]),
    )
}
