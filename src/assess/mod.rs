//! Assessment: one evaluation's samples and the target's state in, a workload verdict out.
//!
//! Pure: no I/O, no clock (`now` is an input). Every verdict says which value crossed which
//! threshold by which rule, as data and as a sentence.
//!
//! Rules (DESIGN.md "Decisions"):
//! - a metric is `Ok`, `Warning` (strictly beyond `warning`), `Critical` (strictly beyond
//!   `critical`) or `Inconclusive` (low traffic, a failed query, or no data under
//!   `noData: Ignore`; under `noData: Breach` no data is `Critical`);
//! - the workload is `Unhealthy` when the target has no available replicas (while it should
//!   have some), its health endpoint fails, or every signal is critical (two signals or more:
//!   with one signal, Critical is just Critical); else the worst metric severity, inconclusive
//!   metrics counting as nothing;
//! - when no signal can be judged (or the target is scaled to zero on purpose) the assessment
//!   is *inconclusive*: status `Warning`, which holds the failure streak and never closes an
//!   incident, and `conclusive: false`, which never lets it remediate;
//! - the score is display only (see [`score`]).

pub mod alerts;
pub mod baseline;
mod readings;
mod score;

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub use readings::signals;
pub use score::{badness, score};

use crate::api::{
    self, EffectiveMetric, HealthReport, HealthStatus, IncidentClass, Issue, MetricSeverity,
    NoDataPolicy,
};
use crate::units;

/// One query result for a signal.
#[derive(Clone, Debug, PartialEq)]
pub enum Sample {
    /// The signal's value.
    Value(f64),
    /// The query returned nothing (or NaN).
    NoData,
    /// Request rate below `minRequestRate`; only for rate-based signals.
    LowTraffic,
    /// The query failed.
    Failed(String),
}

impl Sample {
    /// A query result as a sample. `low_traffic` (see [`is_low_traffic`]) wins over any value:
    /// too few requests make a ratio meaningless. NaN (e.g. 0/0) is no data.
    pub fn from_query(result: Result<Option<f64>, String>, low_traffic: bool) -> Self {
        match result {
            Err(error) => Sample::Failed(error),
            Ok(_) if low_traffic => Sample::LowTraffic,
            Ok(Some(v)) if !v.is_nan() => Sample::Value(v),
            Ok(_) => Sample::NoData,
        }
    }
}

/// True when a rate-based signal must not be judged: the request rate is known and below the
/// policy's `minRequestRate`. Other signals are never gated.
pub fn is_low_traffic(
    rate_based: bool,
    requests_per_second: Option<f64>,
    min_request_rate: Option<f64>,
) -> bool {
    match (rate_based, requests_per_second, min_request_rate) {
        (true, Some(rate), Some(min)) => rate < min,
        _ => false,
    }
}

/// A signal and its latest sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    pub metric: EffectiveMetric,
    pub sample: Sample,
}

/// The result of the target's health endpoint probe, if one is configured.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Probe {
    #[default]
    NotChecked,
    Passed,
    Failed(String),
}

/// What the caller observed about the target workload.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetState {
    /// `spec.replicas`.
    pub desired_replicas: i32,
    /// `status.availableReplicas`.
    pub available_replicas: i32,
    /// A rollout is in progress and within its progress deadline: no available replica then is
    /// a rollout's normal state (e.g. the first pods starting), not an outage.
    pub rolling_out: bool,
    pub health_check: Probe,
    /// When the target's latest new revision appeared (its newest ReplicaSet's creation).
    pub revision_changed_at: Option<Timestamp>,
}

/// Settings of one policy that assessment needs.
#[derive(Clone, Debug, PartialEq)]
pub struct AssessSettings {
    pub no_data: NoDataPolicy,
    /// A degradation that begins within this time after a new revision is a Release incident.
    pub release_window: Duration,
}

/// Everything one assessment looks at.
#[derive(Clone, Debug)]
pub struct AssessInput<'a> {
    pub signals: &'a [Signal],
    pub target: &'a TargetState,
    /// When the current degradation began: the policy state's `failing_since`. `None` means it
    /// begins now (this would be the first failing evaluation).
    pub failing_since: Option<Timestamp>,
    pub now: Timestamp,
}

/// Why a metric has its severity.
#[derive(Clone, Debug, PartialEq)]
pub enum SeverityRule {
    BeyondCritical,
    BeyondWarning,
    WithinThresholds,
    /// No data, counted as critical (`noData: Breach`).
    NoDataBreach,
    /// No data, ignored (`noData: Ignore`).
    NoDataIgnored,
    LowTraffic,
    QueryFailed(String),
    /// The baseline judge found a significant regression since the latest release.
    BaselineRegression(baseline::Evidence),
}

/// One signal's verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricVerdict {
    pub name: String,
    pub class: IncidentClass,
    pub weight: f64,
    pub value: Option<f64>,
    pub severity: MetricSeverity,
    /// The threshold crossed (critical for Critical, warning for Warning).
    pub threshold: Option<f64>,
    pub rule: SeverityRule,
    /// In [0, 1] (see [`badness`]); `None` when inconclusive.
    pub badness: Option<f64>,
    pub message: String,
}

/// Judges one sample against its metric's thresholds.
pub fn judge(metric: &EffectiveMetric, sample: &Sample, no_data: NoDataPolicy) -> MetricVerdict {
    let name = &metric.name;
    let verdict = |value, severity, threshold, rule, badness, message| MetricVerdict {
        name: name.clone(),
        class: metric.class,
        weight: metric.weight,
        value,
        severity,
        threshold,
        rule,
        badness,
        message,
    };
    match sample {
        Sample::Value(v) if !v.is_nan() => {
            let show = |v: f64| units::show(v, metric.unit);
            let side = match metric.direction {
                api::Direction::Above => "above",
                api::Direction::Below => "below",
            };
            let beyond = |t: Option<f64>| t.filter(|&t| metric.direction.breaches(*v, t));
            let (severity, threshold, rule, message) = if let Some(c) = beyond(metric.critical) {
                let m = format!(
                    "{name} = {} is {side} the critical threshold {}",
                    show(*v),
                    show(c)
                );
                (
                    MetricSeverity::Critical,
                    Some(c),
                    SeverityRule::BeyondCritical,
                    m,
                )
            } else if let Some(w) = beyond(metric.warning) {
                let m = format!(
                    "{name} = {} is {side} the warning threshold {}",
                    show(*v),
                    show(w)
                );
                (
                    MetricSeverity::Warning,
                    Some(w),
                    SeverityRule::BeyondWarning,
                    m,
                )
            } else {
                let m = format!("{name} = {} is within thresholds", show(*v));
                (MetricSeverity::Ok, None, SeverityRule::WithinThresholds, m)
            };
            let bad = badness(*v, metric);
            verdict(Some(*v), severity, threshold, rule, Some(bad), message)
        }
        Sample::Value(_) | Sample::NoData => match no_data {
            NoDataPolicy::Breach => verdict(
                None,
                MetricSeverity::Critical,
                None,
                SeverityRule::NoDataBreach,
                Some(1.0),
                format!("{name} has no data, which counts as critical (noData: Breach)"),
            ),
            NoDataPolicy::Ignore => verdict(
                None,
                MetricSeverity::Inconclusive,
                None,
                SeverityRule::NoDataIgnored,
                None,
                format!("{name} has no data; ignored (noData: Ignore)"),
            ),
        },
        Sample::LowTraffic => verdict(
            None,
            MetricSeverity::Inconclusive,
            None,
            SeverityRule::LowTraffic,
            None,
            format!("{name} not judged: request rate below minRequestRate"),
        ),
        // A broken query says nothing about the workload, whatever `noData` says.
        Sample::Failed(error) => verdict(
            None,
            MetricSeverity::Inconclusive,
            None,
            SeverityRule::QueryFailed(error.clone()),
            None,
            format!("{name} query failed: {error}"),
        ),
    }
}

/// A threshold verdict with the baseline judge's: a regression is a Critical breach of class
/// `Release` (a critical threshold breach keeps its own rule, with the evidence added).
fn with_baseline(mut verdict: MetricVerdict, b: &baseline::BaselineVerdict) -> MetricVerdict {
    let baseline::BaselineVerdict::Regression(evidence) = b else {
        return verdict;
    };
    let what = format!(
        "{} regressed since the release: {}",
        verdict.name,
        evidence.sentence()
    );
    if verdict.severity == MetricSeverity::Critical {
        verdict.message = format!("{}; {what}", verdict.message);
        return verdict;
    }
    verdict.severity = MetricSeverity::Critical;
    verdict.class = IncidentClass::Release;
    verdict.threshold = None;
    verdict.rule = SeverityRule::BaselineRegression(evidence.clone());
    verdict.badness = Some(verdict.badness.unwrap_or(0.0).max(0.5));
    verdict.message = what;
    verdict
}

/// Why the workload has its status.
#[derive(Clone, Debug, PartialEq)]
pub enum StatusRule {
    /// The target should run replicas and none is available.
    NoReplicas { desired: i32 },
    /// The target's health endpoint fails.
    HealthCheckFailed(String),
    /// Every signal (two or more) is critical.
    AllSignalsCritical { count: usize },
    /// The worst conclusive signal decides (Healthy when all are Ok).
    WorstSignal,
    /// No signal could be judged.
    NothingConclusive,
    /// The target is scaled to zero on purpose: nothing to judge.
    ScaledToZero,
}

/// Why an assessment has its incident class.
#[derive(Clone, Debug, PartialEq)]
pub enum ClassRule {
    /// No available replicas, or the health endpoint fails.
    TargetUnavailable,
    /// The degradation began within `releaseWindow` after the latest new revision.
    RecentRelease {
        revision_changed_at: Timestamp,
        failing_since: Timestamp,
        release_window: Duration,
    },
    /// A critical signal of this class.
    CriticalSignal { metric: String },
    /// Nothing more specific: performance.
    Default,
}

/// The incident class of a failing assessment, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Classification {
    pub class: IncidentClass,
    pub rule: ClassRule,
}

/// One evaluation of a workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    pub status: HealthStatus,
    pub status_rule: StatusRule,
    /// False when nothing could be judged: such an assessment holds the streak and never acts.
    pub conclusive: bool,
    /// 0 (worst) to 100 (best), display only; 0 when the target is unavailable.
    pub score: f64,
    pub metrics: Vec<MetricVerdict>,
    /// Set when the status is Critical or Unhealthy.
    pub class: Option<Classification>,
    pub evaluated_at: Timestamp,
    pub message: String,
}

impl Assessment {
    /// True when the status grows the failure streak.
    pub fn is_failing(&self) -> bool {
        self.conclusive && self.status >= HealthStatus::Critical
    }

    /// The assessment's incident class, if failing.
    pub fn incident_class(&self) -> Option<IncidentClass> {
        self.class.as_ref().map(|c| c.class)
    }

    /// Signals beyond a threshold or without a verdict, and target-level problems.
    pub fn issues(&self) -> Vec<Issue> {
        let mut issues: Vec<Issue> = match &self.status_rule {
            StatusRule::NoReplicas { desired } => vec![Issue {
                metric: "availableReplicas".into(),
                value: Some(0.0),
                threshold: None,
                severity: MetricSeverity::Critical,
                class: Some(IncidentClass::Unavailable),
                message: Some(format!("0 of {desired} replicas available")),
            }],
            StatusRule::HealthCheckFailed(error) => vec![Issue {
                metric: "healthCheck".into(),
                value: None,
                threshold: None,
                severity: MetricSeverity::Critical,
                class: Some(IncidentClass::Unavailable),
                message: Some(format!("health endpoint fails: {error}")),
            }],
            _ => vec![],
        };
        issues.extend(
            self.metrics
                .iter()
                .filter(|m| m.severity != MetricSeverity::Ok)
                .map(|m| Issue {
                    metric: m.name.clone(),
                    value: m.value,
                    threshold: m.threshold,
                    severity: m.severity,
                    class: Some(m.class),
                    message: Some(m.message.clone()),
                }),
        );
        issues
    }

    /// The assessment as `status.health`.
    pub fn report(&self) -> HealthReport {
        HealthReport {
            status: self.status,
            score: self.score,
            issues: self.issues(),
            metrics: self
                .metrics
                .iter()
                .filter_map(|m| Some((m.name.clone(), m.value?)))
                .collect::<BTreeMap<_, _>>(),
            evaluated_at: Some(Time(self.evaluated_at)),
        }
    }

    /// The assessment as recorded in a RollbackEvent.
    pub fn for_event(&self) -> api::Assessment {
        api::Assessment {
            status: self.status,
            score: self.score,
            class: self.incident_class(),
            issues: self.issues(),
        }
    }
}

/// Assesses one evaluation.
pub fn assess(input: &AssessInput<'_>, settings: &AssessSettings) -> Assessment {
    assess_with_baselines(input, settings, &BTreeMap::new())
}

/// Assesses one evaluation with the baseline judge's verdicts, by metric name (see
/// [`baseline`]): a regression makes its metric Critical with class `Release`, whatever its
/// thresholds say; the evidence goes into the metric's message.
pub fn assess_with_baselines(
    input: &AssessInput<'_>,
    settings: &AssessSettings,
    baselines: &BTreeMap<String, baseline::BaselineVerdict>,
) -> Assessment {
    let metrics: Vec<MetricVerdict> = input
        .signals
        .iter()
        .map(|s| {
            let verdict = judge(&s.metric, &s.sample, settings.no_data);
            match baselines.get(&s.metric.name) {
                Some(b) => with_baseline(verdict, b),
                None => verdict,
            }
        })
        .collect();
    let target = input.target;
    let worst = metrics
        .iter()
        .filter(|m| m.severity != MetricSeverity::Inconclusive)
        .map(|m| m.severity)
        .max();
    let critical = metrics
        .iter()
        .filter(|m| m.severity == MetricSeverity::Critical)
        .count();

    // Target availability first: it is known without Prometheus.
    let (status, status_rule) =
        if target.desired_replicas > 0 && target.available_replicas <= 0 && !target.rolling_out {
            let desired = target.desired_replicas;
            (HealthStatus::Unhealthy, StatusRule::NoReplicas { desired })
        } else if let Probe::Failed(error) = &target.health_check {
            (
                HealthStatus::Unhealthy,
                StatusRule::HealthCheckFailed(error.clone()),
            )
        } else if target.desired_replicas <= 0 {
            (HealthStatus::Warning, StatusRule::ScaledToZero)
        } else if metrics.len() >= 2 && critical == metrics.len() {
            let count = critical;
            (
                HealthStatus::Unhealthy,
                StatusRule::AllSignalsCritical { count },
            )
        } else {
            match worst {
                None => (HealthStatus::Warning, StatusRule::NothingConclusive),
                Some(MetricSeverity::Critical) => (HealthStatus::Critical, StatusRule::WorstSignal),
                Some(MetricSeverity::Warning) => (HealthStatus::Warning, StatusRule::WorstSignal),
                Some(_) => (HealthStatus::Healthy, StatusRule::WorstSignal),
            }
        };
    let conclusive = !matches!(
        status_rule,
        StatusRule::NothingConclusive | StatusRule::ScaledToZero
    );
    let unavailable = matches!(
        status_rule,
        StatusRule::NoReplicas { .. } | StatusRule::HealthCheckFailed(_)
    );
    let score = if unavailable {
        0.0
    } else {
        score(metrics.iter().filter_map(|m| Some((m.weight, m.badness?))))
    };
    let class = (conclusive && status >= HealthStatus::Critical).then(|| {
        let failing_since = input.failing_since.unwrap_or(input.now);
        classify(&metrics, unavailable, target, failing_since, settings)
    });
    let message = summary(status, &status_rule, &metrics, class.as_ref());
    Assessment {
        status,
        status_rule,
        conclusive,
        score,
        metrics,
        class,
        evaluated_at: input.now,
        message,
    }
}

/// The incident class of a failing assessment. Precedence, first match wins:
/// 1. `Unavailable`: the target has no available replicas or its health endpoint fails, or a
///    critical signal is classed `Unavailable`;
/// 2. `Release`: the degradation began within `releaseWindow` after the latest new revision
///    (not before it), or a critical signal is classed `Release`;
/// 3. `Dependency`: a critical signal is classed `Dependency`;
/// 4. `Errors`: a critical signal is classed `Errors`;
/// 5. `Performance`: otherwise.
///
/// Availability beats recency because a dead workload needs stopping whatever caused it; a
/// recent release beats signal classes because rolling back is the fix for a bad release
/// whichever signal shows it.
pub fn classify(
    metrics: &[MetricVerdict],
    target_unavailable: bool,
    target: &TargetState,
    failing_since: Timestamp,
    settings: &AssessSettings,
) -> Classification {
    let critical_of = |class: IncidentClass| {
        metrics
            .iter()
            .find(|m| m.severity == MetricSeverity::Critical && m.class == class)
            .map(|m| Classification {
                class,
                rule: ClassRule::CriticalSignal {
                    metric: m.name.clone(),
                },
            })
    };
    if target_unavailable {
        return Classification {
            class: IncidentClass::Unavailable,
            rule: ClassRule::TargetUnavailable,
        };
    }
    if let Some(c) = critical_of(IncidentClass::Unavailable) {
        return c;
    }
    if let Some(revision_changed_at) = target.revision_changed_at {
        let after = failing_since.duration_since(revision_changed_at);
        let within = Duration::try_from(after).is_ok_and(|d| d <= settings.release_window);
        if within {
            return Classification {
                class: IncidentClass::Release,
                rule: ClassRule::RecentRelease {
                    revision_changed_at,
                    failing_since,
                    release_window: settings.release_window,
                },
            };
        }
    }
    [
        IncidentClass::Release,
        IncidentClass::Dependency,
        IncidentClass::Errors,
        IncidentClass::Performance,
    ]
    .into_iter()
    .find_map(critical_of)
    .unwrap_or(Classification {
        class: IncidentClass::Performance,
        rule: ClassRule::Default,
    })
}

impl Classification {
    /// Why, in words.
    pub fn sentence(&self) -> String {
        let class = self.class;
        match &self.rule {
            ClassRule::TargetUnavailable => format!("{class}: the target is unavailable"),
            ClassRule::RecentRelease {
                revision_changed_at,
                failing_since,
                release_window,
            } => format!(
                "{class}: the degradation began at {failing_since}, within {} of the new revision at {revision_changed_at}",
                api::duration::format(*release_window)
            ),
            ClassRule::CriticalSignal { metric } => {
                format!("{class}: the {class}-class signal {metric} is critical")
            }
            ClassRule::Default => format!("{class}: no more specific class applies"),
        }
    }
}

fn summary(
    status: HealthStatus,
    rule: &StatusRule,
    metrics: &[MetricVerdict],
    class: Option<&Classification>,
) -> String {
    let mut out = match rule {
        StatusRule::NoReplicas { desired } => {
            format!("{status}: 0 of {desired} replicas available")
        }
        StatusRule::HealthCheckFailed(e) => format!("{status}: health endpoint fails: {e}"),
        StatusRule::AllSignalsCritical { count } => {
            format!("{status}: all {count} signals are critical")
        }
        StatusRule::NothingConclusive => format!("{status}: no signal could be judged"),
        StatusRule::ScaledToZero => format!("{status}: the target is scaled to zero"),
        StatusRule::WorstSignal => status.to_string(),
    };
    let worst: Vec<&str> = [MetricSeverity::Critical, MetricSeverity::Warning]
        .iter()
        .map(|s| {
            metrics
                .iter()
                .filter(|m| m.severity == *s)
                .map(|m| m.message.as_str())
                .collect::<Vec<_>>()
        })
        .find(|v| !v.is_empty())
        .unwrap_or_default();
    if !worst.is_empty() {
        let _ = write!(out, "; {}", worst.join("; "));
    }
    if let Some(class) = class {
        let _ = write!(out, " (class {})", class.sentence());
    }
    out
}

#[cfg(test)]
mod tests;
