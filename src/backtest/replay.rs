//! The replay: history through the controller's own engine entry points, one evaluation time
//! after the other, exactly as `controller::policy::step::run` calls them: `assess::signals`, the
//! baseline judge, `assess::assess_with_baselines`, `decide::decide`. Pure.
//!
//! What history cannot tell, and how the replay answers it:
//! - whether a remediation would have helped: every decided step is run as the engine's dry
//!   run (counted as tried, changes nothing), so the ladder advances one rung per cooldown while
//!   the recorded signals stay bad, as the engine would escalate if the step had not helped;
//! - the target's replicas: assumed available (the signals are what is replayed);
//! - the blast-radius guard, acknowledgements and other events: none (one policy alone).

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;
use serde::Serialize;

use super::History;
use crate::{
    api::{
        EffectiveSettings, HealthStatus, IncidentClass, MetricSeverity, RollbackPolicySpec,
        StrategyKind,
    },
    assess::{
        self, AssessInput, Probe, Sample, TargetState,
        baseline::{self, BaselineSettings},
    },
    decide::{self, GuardVerdict, PolicyState, Tick, Transition},
};

/// One evaluation of the replay.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub at: Timestamp,
    pub status: HealthStatus,
    pub conclusive: bool,
    pub score: f64,
    pub streak: u32,
    /// Each signal's value (None: no data, low traffic or a failed query).
    pub values: BTreeMap<String, Option<f64>>,
    pub severities: BTreeMap<String, MetricSeverity>,
    /// The decision's reason code (e.g. FailureStreak, DryRunRemediation).
    pub decision: &'static str,
    /// The rung decided at this evaluation.
    pub rung: Option<StrategyKind>,
    pub message: String,
}

/// An incident that would have opened.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    pub class: IncidentClass,
    /// When the failing streak that opened it began.
    pub degraded_since: Timestamp,
    pub opened_at: Timestamp,
    /// None when still open at the end of the window.
    pub closed_at: Option<Timestamp>,
    /// Rungs decided, in order, with when.
    pub rungs: Vec<(Timestamp, StrategyKind)>,
    /// Attempts used up while still failing.
    pub failed: bool,
    /// The assessment that opened it.
    pub reason: String,
}

impl Incident {
    /// How long it lasted (until `end` when still open).
    pub fn duration(&self, end: Timestamp) -> Duration {
        let until = self.closed_at.unwrap_or(end);
        Duration::try_from(until.duration_since(self.opened_at)).unwrap_or_default()
    }
}

/// The figures of a backtest.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub evaluations: usize,
    pub incidents: usize,
    pub remediations: usize,
    pub remediations_per_day: f64,
    /// Time with a conclusive Critical or Unhealthy status.
    pub degraded_seconds: u64,
    pub longest_incident_seconds: u64,
    /// Time at which at least one signal had no data or its query failed.
    pub no_data_seconds: u64,
    /// Time at which no signal could be judged.
    pub inconclusive_seconds: u64,
}

/// A whole backtest.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backtest {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub step_seconds: u64,
    pub releases: Vec<Timestamp>,
    pub steps: Vec<Step>,
    pub incidents: Vec<Incident>,
    pub summary: Summary,
}

/// The latest release at or before `t` (`releases` sorted).
fn release_at(releases: &[Timestamp], t: Timestamp) -> Option<Timestamp> {
    releases.iter().rev().find(|r| **r <= t).copied()
}

/// Replays `history` through the engine for a policy (`effective` as the operator resolves
/// it, see `config::effective`). `releases` are the target's new revisions.
pub fn replay(
    spec: &RollbackPolicySpec,
    effective: &EffectiveSettings,
    history: &History,
    releases: &[Timestamp],
    step: Duration,
) -> Result<Backtest, decide::SettingsError> {
    let (assess_settings, mut settings) = decide::from_policy(spec, effective)?;
    settings.dry_run = true;
    settings.suspend = false;
    let mut releases = releases.to_vec();
    releases.sort();
    let interval = step;
    // Each baseline metric's settings, and its values so far for the judge.
    let judged: Vec<_> = spec
        .metrics
        .iter()
        .filter_map(|m| {
            let (window, s) = BaselineSettings::from_spec(m.baseline.as_ref()?, interval).ok()?;
            Some((m.name.clone(), m.direction.unwrap_or_default(), window, s))
        })
        .collect();
    let mut points: BTreeMap<String, Vec<(Timestamp, f64)>> = BTreeMap::new();

    let guard = GuardVerdict::clear();
    let mut state = PolicyState::default();
    let mut steps = Vec::with_capacity(history.times.len());
    let mut incidents: Vec<Incident> = vec![];
    for (at, readings) in history.times.iter().zip(&history.readings) {
        let signals = assess::signals(spec, effective, readings);
        for s in &signals {
            if let Sample::Value(v) = s.sample {
                points
                    .entry(s.metric.name.clone())
                    .or_default()
                    .push((*at, v));
            }
        }
        let release = release_at(&releases, *at);
        let baselines: BTreeMap<String, baseline::BaselineVerdict> = judged
            .iter()
            .filter_map(|(name, direction, window, s)| {
                let p = points.get(name).map(Vec::as_slice).unwrap_or_default();
                let v = baseline::judge_series(p, release, *at, *window, *direction, s)?;
                Some((name.clone(), v))
            })
            .collect();
        let target = TargetState {
            desired_replicas: 1,
            available_replicas: 1,
            rolling_out: false,
            health_check: Probe::NotChecked,
            revision_changed_at: release,
        };
        let assessment = assess::assess_with_baselines(
            &AssessInput {
                signals: &signals,
                target: &target,
                failing_since: state.failing_since,
                now: *at,
            },
            &assess_settings,
            &baselines,
        );
        let tick = Tick {
            assessment: &assessment,
            now: *at,
            guard: &guard,
            ack: None,
            busy: None,
        };
        let decision = decide::decide(&state, &tick, &settings);
        for t in &decision.transitions {
            match t {
                Transition::IncidentOpened { class } => incidents.push(Incident {
                    class: *class,
                    degraded_since: decision.state.failing_since.unwrap_or(*at),
                    opened_at: *at,
                    closed_at: None,
                    rungs: vec![],
                    failed: false,
                    reason: assessment.message.clone(),
                }),
                Transition::IncidentClosed { .. } | Transition::IncidentAcknowledged => {
                    if let Some(i) = incidents.last_mut() {
                        i.closed_at = Some(*at);
                    }
                }
                Transition::IncidentFailed { .. } => {
                    if let Some(i) = incidents.last_mut() {
                        i.failed = true;
                    }
                }
            }
        }
        let rung = decision.action.as_ref().map(|a| a.strategy);
        if let (Some(rung), Some(i)) = (rung, incidents.last_mut()) {
            i.rungs.push((*at, rung));
        }
        state = decision.state;
        steps.push(Step {
            at: *at,
            status: assessment.status,
            conclusive: assessment.conclusive,
            score: assessment.score,
            streak: state.failure_streak,
            values: assessment
                .metrics
                .iter()
                .map(|m| (m.name.clone(), m.value))
                .collect(),
            severities: assessment
                .metrics
                .iter()
                .map(|m| (m.name.clone(), m.severity))
                .collect(),
            decision: decision.explanation.reason.code(),
            rung,
            message: decision.explanation.message,
        });
    }
    let summary = summarize(
        &steps,
        &incidents,
        &signals_without_data(spec, effective, history),
        step,
    );
    Ok(Backtest {
        from: history.times.first().copied(),
        to: history.times.last().copied(),
        step_seconds: step.as_secs(),
        releases,
        steps,
        incidents,
        summary,
    })
}

/// Per evaluation: did a signal lack data (no series, NaN, or a failed query)?
fn signals_without_data(
    spec: &RollbackPolicySpec,
    effective: &EffectiveSettings,
    history: &History,
) -> Vec<bool> {
    history
        .readings
        .iter()
        .map(|r| {
            assess::signals(spec, effective, r)
                .iter()
                .any(|s| matches!(s.sample, Sample::NoData | Sample::Failed(_)))
        })
        .collect()
}

fn summarize(steps: &[Step], incidents: &[Incident], no_data: &[bool], step: Duration) -> Summary {
    let secs = step.as_secs();
    let count = |f: &dyn Fn(usize, &Step) -> bool| {
        steps.iter().enumerate().filter(|(i, s)| f(*i, s)).count() as u64 * secs
    };
    let end = steps.last().map(|s| s.at).unwrap_or(Timestamp::UNIX_EPOCH);
    let span_days = (steps.len() as f64 * secs as f64 / 86_400.0).max(f64::MIN_POSITIVE);
    let remediations = incidents.iter().map(|i| i.rungs.len()).sum::<usize>();
    Summary {
        evaluations: steps.len(),
        incidents: incidents.len(),
        remediations,
        remediations_per_day: remediations as f64 / span_days,
        degraded_seconds: count(&|_, s| s.conclusive && s.status >= HealthStatus::Critical),
        longest_incident_seconds: incidents
            .iter()
            .map(|i| i.duration(end).as_secs())
            .max()
            .unwrap_or(0),
        no_data_seconds: count(&|i, _| no_data.get(i).copied().unwrap_or(false)),
        inconclusive_seconds: count(&|_, s| !s.conclusive),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{OperatorConfig, effective},
        prometheus::Reading,
    };

    fn spec() -> RollbackPolicySpec {
        yaml_serde::from_str(
            r#"
targetRef: {name: web}
consecutiveFailures: 3
cooldown: 2m
metrics:
  - {name: latency, query: 'max(p95{namespace="{{ namespace }}"})', warning: 300, critical: 500, baseline: {window: 10m, minSamples: 5}}
  - {name: errors, query: 'max(err{namespace="{{ namespace }}"})', warning: 0.02, critical: 0.05, class: Errors}
strategies:
  - {type: TrafficShifting, trafficShifting: {httpRoute: web, from: a, to: b}}
  - {type: VersionRollback}
"#,
        )
        .unwrap()
    }

    fn t(minute: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 - 1_700_000_000 % 60 + minute * 60).unwrap()
    }

    /// One evaluation a minute; `f(minute)` gives (latency, errors).
    fn history(minutes: i64, f: impl Fn(i64) -> (Option<f64>, Option<f64>)) -> History {
        let mut h = History::default();
        for m in 0..minutes {
            let (l, e) = f(m);
            h.times.push(t(m));
            h.readings.push(BTreeMap::from([
                ("latency".to_string(), Ok(l) as Reading),
                ("errors".to_string(), Ok(e)),
            ]));
        }
        h
    }

    fn run(h: &History, releases: &[Timestamp]) -> Backtest {
        let spec = spec();
        let eff = effective(&spec, &OperatorConfig::defaults());
        replay(&spec, &eff, h, releases, Duration::from_secs(60)).unwrap()
    }

    #[test]
    fn an_error_burst_opens_one_incident_and_escalates_per_cooldown() {
        // Errors critical from minute 10 to 19 (10 evaluations), otherwise fine.
        let h = history(40, |m| {
            (
                Some(80.0),
                Some(if (10..20).contains(&m) { 0.2 } else { 0.001 }),
            )
        });
        let b = run(&h, &[]);
        assert_eq!(b.incidents.len(), 1, "{:#?}", b.incidents);
        let i = &b.incidents[0];
        // Opens on the third failing evaluation; traffic shifting at once, version rollback one
        // cooldown (2m) later; closes on the first healthy evaluation.
        assert_eq!(
            (i.class, i.opened_at, i.closed_at),
            (IncidentClass::Errors, t(12), Some(t(20)))
        );
        assert_eq!(
            i.rungs,
            [
                (t(12), StrategyKind::TrafficShifting),
                (t(14), StrategyKind::VersionRollback)
            ]
        );
        assert_eq!(b.summary.degraded_seconds, 600);
        assert_eq!(b.summary.longest_incident_seconds, 480);
        assert_eq!(b.summary.remediations, 2);
    }

    #[test]
    fn short_spikes_and_warnings_open_nothing_and_gaps_count_as_no_data() {
        let h = history(30, |m| match m {
            5 | 6 => (Some(900.0), Some(0.0)),
            8 | 10 | 12 => (Some(900.0), Some(0.0)),
            15..=20 => (Some(400.0), Some(0.03)),
            22 => (None, None),
            _ => (Some(80.0), Some(0.0)),
        });
        let b = run(&h, &[]);
        assert!(b.incidents.is_empty(), "{:#?}", b.incidents);
        assert_eq!(b.summary.no_data_seconds, 60);
        assert_eq!(b.summary.inconclusive_seconds, 60);
        assert_eq!(b.summary.degraded_seconds, 5 * 60);
    }

    /// Serves the latency history to range queries, as Prometheus would.
    struct Served<'a>(&'a History);

    impl crate::prometheus::RangeSource for Served<'_> {
        async fn query_range(
            &self,
            _promql: &str,
            start: Timestamp,
            end: Timestamp,
            _step: Duration,
        ) -> Result<Vec<crate::prometheus::Series>, crate::prometheus::QueryError> {
            let points = self
                .0
                .times
                .iter()
                .zip(&self.0.readings)
                .filter(|(t, _)| **t >= start && **t <= end)
                .filter_map(|(t, r)| Some((*t, r["latency"].clone().ok()??)))
                .collect();
            Ok(vec![crate::prometheus::Series {
                labels: BTreeMap::new(),
                points,
            }])
        }
    }

    /// The controller's path for the same samples: `policy::step`'s calls in its order, the
    /// live baseline reads (`prometheus::baseline`, range queries), and the engine state
    /// round-tripped through the policy's status between evaluations, as the controller keeps it.
    #[tokio::test]
    async fn the_controller_path_decides_as_the_replay_does() {
        let h = history(60, |m| {
            let latency = if (20..35).contains(&m) {
                240.0
            } else {
                60.0 + (m % 4) as f64
            };
            let errors = if (45..52).contains(&m) { 0.3 } else { 0.0 };
            (Some(latency), Some(errors))
        });
        let releases = [t(20)];
        let replayed = run(&h, &releases);
        assert_eq!(replayed.incidents.len(), 2, "{:#?}", replayed.incidents);

        let mut spec = spec();
        spec.dry_run = true; // what the replay runs as
        let eff = effective(&spec, &OperatorConfig::defaults());
        let (assess_settings, settings) = decide::from_policy(&spec, &eff).unwrap();
        let mut status = crate::api::RollbackPolicyStatus::default();
        let vars = crate::prometheus::Vars {
            namespace: "shop",
            target: "web",
            pod_regex: None,
            window: Duration::from_secs(120),
        };
        let step = Duration::from_secs(60);
        for (i, (at, readings)) in h.times.iter().zip(&h.readings).enumerate() {
            let signals = assess::signals(&spec, &eff, readings);
            let release = release_at(&releases, *at);
            let baselines = crate::prometheus::baseline::judge_metrics(
                &Served(&h),
                &spec.metrics,
                "app",
                &vars,
                release,
                *at,
                step,
            )
            .await;
            let target = TargetState {
                desired_replicas: 1,
                available_replicas: 1,
                rolling_out: false,
                health_check: Probe::NotChecked,
                revision_changed_at: release,
            };
            let state = PolicyState::from_status(&status);
            let assessment = assess::assess_with_baselines(
                &AssessInput {
                    signals: &signals,
                    target: &target,
                    failing_since: state.failing_since,
                    now: *at,
                },
                &assess_settings,
                &baselines,
            );
            let guard = GuardVerdict::clear();
            let tick = Tick {
                assessment: &assessment,
                now: *at,
                guard: &guard,
                ack: None,
                busy: None,
            };
            let decision = decide::decide(&state, &tick, &settings);
            decision.state.write_to(&mut status);
            let r = &replayed.steps[i];
            let live = (
                assessment.status,
                decision.explanation.reason.code(),
                decision.action.map(|a| a.strategy),
                status.failure_streak.unwrap_or(0),
            );
            assert_eq!(
                live,
                (r.status, r.decision, r.rung, r.streak),
                "at minute {i}"
            );
        }
    }

    #[test]
    fn a_slowdown_within_thresholds_is_caught_by_the_baseline_judge() {
        // 60 ms for 20 minutes, a release at minute 20, then 240 ms: well below 500 ms.
        let h = history(40, |m| {
            (
                Some(if m < 20 { 60.0 + (m % 3) as f64 } else { 240.0 }),
                Some(0.0),
            )
        });
        let b = run(&h, &[t(20)]);
        assert_eq!(b.incidents.len(), 1, "{:#?}", b.incidents);
        let i = &b.incidents[0];
        // 5 samples after the release (minSamples) make the first breach, at minute 24; two more
        // make the streak of 3.
        assert_eq!((i.class, i.opened_at), (IncidentClass::Release, t(26)));
        assert_eq!(i.rungs[0].1, StrategyKind::VersionRollback);
        assert!(i.reason.contains("Mann-Whitney"), "{}", i.reason);
        // Without the release, nothing.
        assert!(run(&h, &[]).incidents.is_empty());
    }
}
