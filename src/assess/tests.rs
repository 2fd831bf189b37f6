use proptest::prelude::*;

use super::*;
use crate::api::Direction;

pub(crate) fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

pub(crate) fn metric(
    name: &str,
    warning: f64,
    critical: f64,
    class: IncidentClass,
) -> EffectiveMetric {
    EffectiveMetric {
        name: name.into(),
        warning: Some(warning),
        critical: Some(critical),
        direction: Direction::Above,
        weight: 1.0,
        class,
        unit: None,
    }
}

pub(crate) fn errors(sample: Sample) -> Signal {
    Signal {
        metric: metric("errors", 0.04, 0.05, IncidentClass::Errors),
        sample,
    }
}

pub(crate) fn latency(sample: Sample) -> Signal {
    Signal {
        metric: metric("latency", 4000.0, 5000.0, IncidentClass::Performance),
        sample,
    }
}

pub(crate) fn up() -> TargetState {
    TargetState {
        desired_replicas: 3,
        available_replicas: 3,
        rolling_out: false,
        health_check: Probe::Passed,
        revision_changed_at: None,
    }
}

pub(crate) fn settings(no_data: NoDataPolicy) -> AssessSettings {
    AssessSettings {
        no_data,
        release_window: Duration::from_secs(30 * 60),
    }
}

fn run(signals: &[Signal], target: &TargetState, no_data: NoDataPolicy) -> Assessment {
    assess(
        &AssessInput {
            signals,
            target,
            failing_since: None,
            now: t(0),
        },
        &settings(no_data),
    )
}

#[test]
fn severities_follow_thresholds_strictly() {
    let m = metric("errors", 0.04, 0.05, IncidentClass::Errors);
    let sev = |v| judge(&m, &Sample::Value(v), NoDataPolicy::Ignore).severity;
    assert_eq!(sev(0.01), MetricSeverity::Ok);
    assert_eq!(sev(0.04), MetricSeverity::Ok);
    assert_eq!(sev(0.045), MetricSeverity::Warning);
    assert_eq!(sev(0.05), MetricSeverity::Warning);
    assert_eq!(sev(0.12), MetricSeverity::Critical);
    let v = judge(&m, &Sample::Value(0.12), NoDataPolicy::Ignore);
    assert_eq!(v.threshold, Some(0.05));
    assert_eq!(v.rule, SeverityRule::BeyondCritical);
    assert_eq!(
        v.message,
        "errors = 0.12 is above the critical threshold 0.05"
    );
}

#[test]
fn below_direction() {
    let m = EffectiveMetric {
        direction: Direction::Below,
        ..metric("throughput", 20.0, 10.0, IncidentClass::Performance)
    };
    let v = judge(&m, &Sample::Value(5.0), NoDataPolicy::Ignore);
    assert_eq!(
        (v.severity, v.threshold),
        (MetricSeverity::Critical, Some(10.0))
    );
    assert_eq!(
        v.message,
        "throughput = 5 is below the critical threshold 10"
    );
    let v = judge(&m, &Sample::Value(15.0), NoDataPolicy::Ignore);
    assert_eq!(v.severity, MetricSeverity::Warning);
}

#[test]
fn no_data_low_traffic_and_failures() {
    let m = metric("errors", 0.04, 0.05, IncidentClass::Errors);
    let sev = |s: Sample, p| judge(&m, &s, p).severity;
    assert_eq!(
        sev(Sample::NoData, NoDataPolicy::Ignore),
        MetricSeverity::Inconclusive
    );
    assert_eq!(
        sev(Sample::NoData, NoDataPolicy::Breach),
        MetricSeverity::Critical
    );
    assert_eq!(
        sev(Sample::Value(f64::NAN), NoDataPolicy::Breach),
        MetricSeverity::Critical
    );
    assert_eq!(
        sev(Sample::LowTraffic, NoDataPolicy::Breach),
        MetricSeverity::Inconclusive
    );
    assert_eq!(
        sev(Sample::Failed("timeout".into()), NoDataPolicy::Breach),
        MetricSeverity::Inconclusive
    );
}

#[test]
fn samples_from_queries() {
    assert_eq!(Sample::from_query(Ok(Some(0.1)), false), Sample::Value(0.1));
    assert_eq!(Sample::from_query(Ok(Some(0.1)), true), Sample::LowTraffic);
    assert_eq!(
        Sample::from_query(Ok(Some(f64::NAN)), false),
        Sample::NoData
    );
    assert_eq!(Sample::from_query(Ok(None), false), Sample::NoData);
    assert_eq!(
        Sample::from_query(Err("boom".into()), true),
        Sample::Failed("boom".into())
    );
    assert!(is_low_traffic(true, Some(0.5), Some(1.0)));
    assert!(!is_low_traffic(false, Some(0.5), Some(1.0)));
    assert!(!is_low_traffic(true, None, Some(1.0)));
    assert!(!is_low_traffic(true, Some(2.0), Some(1.0)));
}

#[test]
fn workload_status_is_the_worst_conclusive_metric() {
    let a = run(
        &[errors(Sample::Value(0.045)), latency(Sample::NoData)],
        &up(),
        NoDataPolicy::Ignore,
    );
    assert_eq!((a.status, a.conclusive), (HealthStatus::Warning, true));
    let a = run(
        &[errors(Sample::Value(0.2)), latency(Sample::Value(100.0))],
        &up(),
        NoDataPolicy::Ignore,
    );
    assert_eq!(a.status, HealthStatus::Critical);
    assert_eq!(a.incident_class(), Some(IncidentClass::Errors));
    assert_eq!(a.score, 49.9);
    let a = run(
        &[errors(Sample::Value(0.0)), latency(Sample::LowTraffic)],
        &up(),
        NoDataPolicy::Ignore,
    );
    assert_eq!(
        (a.status, a.conclusive, a.score),
        (HealthStatus::Healthy, true, 100.0)
    );
    assert_eq!(a.class, None);
}

#[test]
fn nothing_conclusive_holds_and_never_fails() {
    let a = run(
        &[
            errors(Sample::NoData),
            latency(Sample::Failed("down".into())),
        ],
        &up(),
        NoDataPolicy::Ignore,
    );
    assert_eq!(a.status, HealthStatus::Warning);
    assert_eq!(a.status_rule, StatusRule::NothingConclusive);
    assert!(!a.conclusive && !a.is_failing());
    assert_eq!(a.issues().len(), 2);
}

#[test]
fn no_replicas_during_a_rollout_is_not_an_outage() {
    let starting = TargetState {
        available_replicas: 0,
        rolling_out: true,
        ..up()
    };
    let a = run(
        &[errors(Sample::Value(0.0))],
        &starting,
        NoDataPolicy::Ignore,
    );
    assert_eq!(a.status, HealthStatus::Healthy);
    assert_ne!(a.incident_class(), Some(IncidentClass::Unavailable));
}

#[test]
fn unhealthy_rules() {
    let down = TargetState {
        available_replicas: 0,
        rolling_out: false,
        ..up()
    };
    let a = run(&[errors(Sample::Value(0.0))], &down, NoDataPolicy::Ignore);
    assert_eq!(a.status, HealthStatus::Unhealthy);
    assert_eq!(a.status_rule, StatusRule::NoReplicas { desired: 3 });
    assert_eq!(a.score, 0.0);
    assert_eq!(a.incident_class(), Some(IncidentClass::Unavailable));
    assert_eq!(a.issues()[0].metric, "availableReplicas");

    let probe_fails = TargetState {
        health_check: Probe::Failed("503".into()),
        ..up()
    };
    let a = run(
        &[errors(Sample::Value(0.0))],
        &probe_fails,
        NoDataPolicy::Ignore,
    );
    assert_eq!(a.status, HealthStatus::Unhealthy);
    assert_eq!(a.incident_class(), Some(IncidentClass::Unavailable));

    let a = run(
        &[errors(Sample::Value(0.5)), latency(Sample::Value(9000.0))],
        &up(),
        NoDataPolicy::Ignore,
    );
    assert_eq!(a.status, HealthStatus::Unhealthy);
    assert_eq!(a.status_rule, StatusRule::AllSignalsCritical { count: 2 });
    // Unhealthy by signals, not by availability: the class comes from the signals.
    assert_eq!(a.incident_class(), Some(IncidentClass::Errors));

    // One signal alone is Critical, not Unhealthy.
    let a = run(&[errors(Sample::Value(0.5))], &up(), NoDataPolicy::Ignore);
    assert_eq!(a.status, HealthStatus::Critical);

    // No data everywhere under Breach: every signal critical.
    let a = run(
        &[errors(Sample::NoData), latency(Sample::NoData)],
        &up(),
        NoDataPolicy::Breach,
    );
    assert_eq!(a.status, HealthStatus::Unhealthy);
}

#[test]
fn scaled_to_zero_is_not_judged() {
    let zero = TargetState {
        desired_replicas: 0,
        available_replicas: 0,
        rolling_out: false,
        ..up()
    };
    let a = run(&[errors(Sample::NoData)], &zero, NoDataPolicy::Breach);
    assert_eq!((a.status, a.conclusive), (HealthStatus::Warning, false));
}

#[test]
fn class_precedence() {
    let dependency = Signal {
        metric: metric("database", 0.5, 1.0, IncidentClass::Dependency),
        sample: Sample::Value(2.0),
    };
    let signals = [
        errors(Sample::Value(0.2)),
        latency(Sample::Value(6000.0)),
        dependency,
        Signal {
            metric: metric("spare", 1.0, 2.0, IncidentClass::Performance),
            sample: Sample::Value(0.0),
        },
    ];
    let classify_at = |revision: Option<Timestamp>, failing_since| {
        let target = TargetState {
            revision_changed_at: revision,
            ..up()
        };
        assess(
            &AssessInput {
                signals: &signals,
                target: &target,
                failing_since,
                now: t(3600),
            },
            &settings(NoDataPolicy::Ignore),
        )
        .class
        .unwrap()
    };
    // No recent release: Dependency beats Errors beats Performance.
    let c = classify_at(None, None);
    assert_eq!(c.class, IncidentClass::Dependency);
    assert_eq!(
        c.rule,
        ClassRule::CriticalSignal {
            metric: "database".into()
        }
    );
    // Degradation began 10 minutes after a new revision: Release, whatever the signals.
    let c = classify_at(Some(t(0)), Some(t(600)));
    assert_eq!(c.class, IncidentClass::Release);
    // Began 40 minutes after (window 30m): not a release.
    let c = classify_at(Some(t(0)), Some(t(2400)));
    assert_eq!(c.class, IncidentClass::Dependency);
    // The revision came after the degradation began (a fix rolling out): not a release.
    let c = classify_at(Some(t(700)), Some(t(600)));
    assert_eq!(c.class, IncidentClass::Dependency);
    // Without failing_since the degradation begins now (t=3600), 50m after t=600.
    let c = classify_at(Some(t(600)), None);
    assert_eq!(c.class, IncidentClass::Dependency);
}

#[test]
fn report_and_event_forms() {
    let a = run(
        &[errors(Sample::Value(0.12)), latency(Sample::Value(310.0))],
        &up(),
        NoDataPolicy::Ignore,
    );
    let r = a.report();
    assert_eq!(r.status, HealthStatus::Critical);
    assert_eq!(r.metrics.get("errors"), Some(&0.12));
    assert_eq!(r.metrics.get("latency"), Some(&310.0));
    assert_eq!(r.issues.len(), 1);
    assert_eq!(r.issues[0].threshold, Some(0.05));
    assert_eq!(a.for_event().class, Some(IncidentClass::Errors));
    assert!(
        a.message
            .starts_with("Critical; errors = 0.12 is above the critical threshold 0.05"),
        "{}",
        a.message
    );
}

#[test]
fn messages_round_and_show_units() {
    let m = EffectiveMetric {
        unit: Some(crate::api::Unit::Ratio),
        ..metric("errors", 0.02, 0.05, IncidentClass::Errors)
    };
    let v = judge(
        &m,
        &Sample::Value(0.30000000000000004),
        NoDataPolicy::Ignore,
    );
    assert_eq!(
        v.message,
        "errors = 30 % is above the critical threshold 5 %"
    );
    let v = judge(
        &m,
        &Sample::Value(0.0009999999999999998),
        NoDataPolicy::Ignore,
    );
    assert_eq!(v.message, "errors = 0.1 % is within thresholds");
    // The machine field keeps the value as read.
    assert_eq!(v.value, Some(0.0009999999999999998));
    let m = EffectiveMetric {
        unit: Some(crate::api::Unit::Milliseconds),
        ..metric("latency", 500.0, 2000.0, IncidentClass::Performance)
    };
    let v = judge(&m, &Sample::Value(45.04567), NoDataPolicy::Ignore);
    assert_eq!(v.message, "latency = 45 ms is within thresholds");
}

proptest! {
    /// A worse value of any one metric never raises the workload score.
    #[test]
    fn score_is_monotonic_in_each_metric(
        values in proptest::collection::vec(0.0..0.2f64, 1..5),
        weights in proptest::collection::vec(0.0..10.0f64, 5),
        index in 0usize..5,
        worsen in 0.0..0.2f64,
    ) {
        let signals = |vals: &[f64]| -> Vec<Signal> {
            vals.iter().zip(&weights).map(|(v, w)| Signal {
                metric: EffectiveMetric { weight: *w, ..metric("m", 0.04, 0.05, IncidentClass::Errors) },
                sample: Sample::Value(*v),
            }).collect()
        };
        let i = index % values.len();
        let mut worse = values.clone();
        worse[i] += worsen;
        let before = run(&signals(&values), &up(), NoDataPolicy::Ignore).score;
        let after = run(&signals(&worse), &up(), NoDataPolicy::Ignore).score;
        prop_assert!(after <= before, "{before} -> {after}");
        prop_assert!((0.0..=100.0).contains(&after));
    }

    /// No data under Ignore never makes a workload fail.
    #[test]
    fn no_data_under_ignore_never_fails(ok in proptest::collection::vec(0.0..0.04f64, 0..3), gaps in 1usize..4) {
        let mut signals: Vec<Signal> = ok.iter().map(|v| errors(Sample::Value(*v))).collect();
        signals.extend((0..gaps).map(|_| latency(Sample::NoData)));
        let a = run(&signals, &up(), NoDataPolicy::Ignore);
        prop_assert!(!a.is_failing());
        prop_assert!(a.status <= HealthStatus::Warning);
    }
}
