use std::time::Duration;

use jiff::Timestamp;
use proptest::prelude::*;

use super::*;
use crate::{
    api::{Direction, EffectiveMetric, MinSeverity, NoDataPolicy, RollbackPolicyStatus},
    assess::{self, AssessInput, AssessSettings, Probe, Sample, Signal, TargetState},
};

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

/// Kinds of evaluation the tests feed the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Eval {
    Healthy,
    Warning,
    NoData,
    Errors,
    Performance,
    Dependency,
    /// Errors right after a new revision.
    Release,
    /// Every signal critical.
    Unhealthy,
    /// No available replicas.
    Down,
}

const EVALS: [Eval; 9] = [
    Eval::Healthy,
    Eval::Warning,
    Eval::NoData,
    Eval::Errors,
    Eval::Performance,
    Eval::Dependency,
    Eval::Release,
    Eval::Unhealthy,
    Eval::Down,
];

fn signal(name: &str, w: f64, c: f64, class: IncidentClass, value: Option<f64>) -> Signal {
    Signal {
        metric: EffectiveMetric {
            name: name.into(),
            warning: Some(w),
            critical: Some(c),
            direction: Direction::Above,
            weight: 1.0,
            class,
            unit: None,
        },
        sample: value.map_or(Sample::NoData, Sample::Value),
    }
}

fn assessment(kind: Eval, now: Timestamp) -> Assessment {
    let (errors, latency, db) = match kind {
        Eval::Healthy | Eval::Down => (Some(0.0), Some(100.0), Some(0.0)),
        Eval::Warning => (Some(0.045), Some(100.0), Some(0.0)),
        Eval::NoData => (None, None, None),
        Eval::Errors | Eval::Release => (Some(0.2), Some(100.0), Some(0.0)),
        Eval::Performance => (Some(0.0), Some(9000.0), Some(0.0)),
        Eval::Dependency => (Some(0.0), Some(100.0), Some(5.0)),
        Eval::Unhealthy => (Some(0.2), Some(9000.0), Some(5.0)),
    };
    let signals = [
        signal("errors", 0.04, 0.05, IncidentClass::Errors, errors),
        signal(
            "latency",
            4000.0,
            5000.0,
            IncidentClass::Performance,
            latency,
        ),
        signal("database", 0.5, 1.0, IncidentClass::Dependency, db),
    ];
    let target = TargetState {
        desired_replicas: 3,
        available_replicas: if kind == Eval::Down { 0 } else { 3 },
        rolling_out: false,
        health_check: Probe::Passed,
        revision_changed_at: (kind == Eval::Release).then(|| {
            now.checked_sub(jiff::SignedDuration::from_secs(60))
                .unwrap()
        }),
    };
    assess::assess(
        &AssessInput {
            signals: &signals,
            target: &target,
            failing_since: None,
            now,
        },
        &AssessSettings {
            no_data: NoDataPolicy::Ignore,
            release_window: Duration::from_secs(1800),
        },
    )
}

fn rung(strategy: StrategyKind) -> RungRule {
    RungRule {
        strategy,
        incidents: vec![strategy.default_class()],
        min_severity: if strategy == StrategyKind::EmergencyShutdown {
            MinSeverity::Unhealthy
        } else {
            MinSeverity::Critical
        },
    }
}

fn settings() -> PolicySettings {
    PolicySettings {
        consecutive_failures: 3,
        ladder: StrategyKind::ALL.iter().copied().map(rung).collect(),
        max_attempts: 3,
        cooldown: Duration::from_secs(300),
        auto_rollback: true,
        dry_run: false,
        suspend: false,
    }
}

/// An automatic action as the simulation saw it.
struct Logged {
    at: Timestamp,
    action: Remediate,
    incident_started: Option<Timestamp>,
    reason: Reason,
}

/// Drives the engine the way the controller will: one evaluation every 30 s.
struct Sim {
    settings: PolicySettings,
    guard: GuardVerdict,
    state: PolicyState,
    now: Timestamp,
    events: u32,
    ack: Option<String>,
    /// Every automatic action.
    actions: Vec<Logged>,
    last: Option<Decision>,
}

impl Sim {
    fn new(settings: PolicySettings) -> Self {
        Self {
            settings,
            guard: GuardVerdict::clear(),
            state: PolicyState::default(),
            now: t(0),
            events: 0,
            ack: None,
            actions: vec![],
            last: None,
        }
    }

    fn record(&mut self, d: Decision) -> &Decision {
        self.state = d.state.clone();
        if let Some(action) = &d.action {
            self.actions.push(Logged {
                at: self.now,
                action: action.clone(),
                incident_started: self.state.incident.as_ref().map(|i| i.started_at),
                reason: d.explanation.reason.clone(),
            });
            if !action.dry_run {
                self.events += 1;
                self.state.attach_event(format!("ev-{}", self.events));
            }
        }
        // What the controller writes to status is what it reads back next time.
        let mut status = RollbackPolicyStatus::default();
        self.state.write_to(&mut status);
        assert_eq!(PolicyState::from_status(&status), self.state);
        self.last = Some(d);
        self.last.as_ref().unwrap()
    }

    fn eval(&mut self, kind: Eval) -> &Decision {
        self.now = self.now.checked_add(Duration::from_secs(30)).unwrap();
        let a = assessment(kind, self.now);
        let tick = Tick {
            assessment: &a,
            now: self.now,
            guard: &self.guard,
            ack: self.ack.as_deref(),
            busy: None,
        };
        let d = decide(&self.state, &tick, &self.settings);
        self.record(d)
    }

    fn evals(&mut self, kind: Eval, n: usize) -> &Decision {
        for _ in 1..n {
            self.eval(kind);
        }
        self.eval(kind)
    }

    fn finish(&mut self, succeeded: bool, latest: Eval) -> &Decision {
        self.now = self.now.checked_add(Duration::from_secs(30)).unwrap();
        let a = assessment(latest, self.now);
        let tick = Tick {
            assessment: &a,
            now: self.now,
            guard: &self.guard,
            ack: None,
            busy: None,
        };
        let d = on_remediation_finished(&self.state, succeeded, &tick, &self.settings);
        self.record(d)
    }

    fn wait(&mut self, secs: u64) {
        self.now = self.now.checked_add(Duration::from_secs(secs)).unwrap();
    }

    fn strategies(&self) -> Vec<StrategyKind> {
        self.actions.iter().map(|l| l.action.strategy).collect()
    }

    fn reason(&self) -> &Reason {
        &self.last.as_ref().unwrap().explanation.reason
    }
}

use StrategyKind::*;

#[test]
fn streak_grows_holds_and_resets() {
    let mut sim = Sim::new(settings());
    sim.eval(Eval::Errors);
    assert_eq!(sim.state.failure_streak, 1);
    let since = sim.state.failing_since;
    assert_eq!(since, Some(sim.now));
    sim.eval(Eval::Warning);
    sim.eval(Eval::NoData);
    assert_eq!(sim.state.failure_streak, 1);
    assert_eq!(sim.state.failing_since, since);
    sim.eval(Eval::Unhealthy);
    assert_eq!(sim.state.failure_streak, 2);
    assert_eq!(
        sim.reason(),
        &Reason::Streak {
            streak: 2,
            needed: 3
        }
    );
    sim.eval(Eval::Healthy);
    assert_eq!(
        (sim.state.failure_streak, sim.state.failing_since),
        (0, None)
    );
}

#[test]
fn a_noisy_sample_does_not_open_an_incident() {
    let mut sim = Sim::new(settings());
    for _ in 0..5 {
        sim.eval(Eval::Healthy);
        let d = sim.eval(Eval::Errors);
        assert_eq!(d.action, None);
        assert!(d.transitions.is_empty());
    }
    assert_eq!(sim.state.incident, None);
    assert_eq!(sim.state.failure_streak, 1);
}

#[test]
fn an_errors_incident_opens_on_the_third_failure_and_shifts_traffic() {
    let mut sim = Sim::new(settings());
    sim.evals(Eval::Errors, 2);
    assert!(sim.state.incident.is_none());
    let d = sim.eval(Eval::Errors).clone();
    assert_eq!(
        d.transitions,
        vec![Transition::IncidentOpened {
            class: IncidentClass::Errors
        }]
    );
    let action = d.action.unwrap();
    assert_eq!(action.strategy, TrafficShifting);
    assert_eq!(action.kind, EventType::Automatic);
    assert_eq!(action.class, Some(IncidentClass::Errors));
    assert!(!action.dry_run);
    assert_eq!(action.escalated_from, None);
    assert!(
        action
            .reason
            .contains("errors = 0.2 is above the critical threshold 0.05"),
        "{}",
        action.reason
    );
    assert_eq!(d.alerts.len(), 2);
    assert_eq!(d.alerts[0].code, "IncidentOpened");
    assert_eq!(d.alerts[1].level, AlertLevel::Critical);
    // The evidence names the value and the threshold.
    assert_eq!(d.explanation.evidence[0].metric, "errors");
    assert_eq!(d.explanation.evidence[0].threshold, Some(0.05));
    let incident = sim.state.incident.as_ref().unwrap();
    assert_eq!(
        (incident.attempts, incident.tried.clone()),
        (1, vec![TrafficShifting])
    );
    assert_eq!(incident.active, Some(ActiveStep::Event("ev-1".into())));
    // While the step runs, nothing else happens.
    let d = sim.eval(Eval::Errors);
    assert_eq!(d.action, None);
    assert_eq!(
        d.explanation.reason,
        Reason::StepActive {
            strategy: Some(TrafficShifting)
        }
    );
}

#[test]
fn each_class_gets_its_own_rung_first() {
    for (eval, first) in [
        (Eval::Errors, TrafficShifting),
        (Eval::Performance, CircuitBreaker),
        (Eval::Dependency, EnvironmentSwitch),
        (Eval::Release, VersionRollback),
        (Eval::Down, EmergencyShutdown),
    ] {
        let mut sim = Sim::new(settings());
        sim.evals(eval, 3);
        assert_eq!(sim.strategies(), vec![first], "{eval:?}");
    }
}

#[test]
fn a_release_incident_rolls_back_first_even_with_lighter_rungs_earlier() {
    let mut sim = Sim::new(settings());
    let d = sim.evals(Eval::Release, 3).clone();
    assert_eq!(
        d.transitions,
        vec![Transition::IncidentOpened {
            class: IncidentClass::Release
        }]
    );
    assert_eq!(sim.strategies(), vec![VersionRollback]);
    assert_eq!(
        d.explanation.reason,
        Reason::Remediate {
            strategy: VersionRollback,
            rule: PickRule::FirstForClass {
                class: IncidentClass::Release,
                min_severity: MinSeverity::Critical
            },
            dry_run: false
        }
    );
    assert!(
        d.explanation
            .message
            .starts_with("running VersionRollback, the first rung for Release incidents"),
        "{}",
        d.explanation.message
    );
}

#[test]
fn escalation_walks_the_ladder_up_to_the_attempt_limit_then_fails() {
    let mut sim = Sim::new(settings());
    sim.evals(Eval::Errors, 3);
    assert_eq!(sim.strategies(), vec![TrafficShifting]);
    // Escalation after a failed verification ignores the cooldown (only 60 s have passed).
    let d = sim.finish(false, Eval::Errors).clone();
    assert_eq!(d.action.as_ref().unwrap().strategy, EnvironmentSwitch);
    assert_eq!(
        d.action.as_ref().unwrap().escalated_from,
        Some(TrafficShifting)
    );
    assert!(
        d.explanation
            .message
            .starts_with("TrafficShifting failed; running EnvironmentSwitch, escalating"),
        "{}",
        d.explanation.message
    );
    sim.finish(false, Eval::Errors);
    assert_eq!(
        sim.strategies(),
        vec![TrafficShifting, EnvironmentSwitch, VersionRollback]
    );
    let d = sim.finish(false, Eval::Errors).clone();
    assert_eq!(d.action, None);
    assert_eq!(
        d.explanation.reason,
        Reason::IncidentFailed {
            attempts: 3,
            max: 3
        }
    );
    assert_eq!(
        d.transitions,
        vec![Transition::IncidentFailed { attempts: 3 }]
    );
    assert!(d.alerts.iter().any(|a| {
        a.level == AlertLevel::Emergency
            && a.message
                .contains("tried: TrafficShifting, EnvironmentSwitch, VersionRollback")
    }));
    assert!(sim.state.incident.as_ref().unwrap().failed);
}

#[test]
fn escalation_waits_for_the_severity_of_the_next_rung() {
    let mut s = settings();
    s.max_attempts = 5;
    s.ladder = vec![rung(VersionRollback), rung(EmergencyShutdown)];
    let mut sim = Sim::new(s);
    sim.evals(Eval::Release, 3);
    // Rollback failed; the shutdown needs Unhealthy and the status is Critical: hold, alert once.
    let d = sim.finish(false, Eval::Errors).clone();
    assert_eq!(d.action, None);
    assert_eq!(
        d.explanation.reason,
        Reason::SeverityNotMet {
            strategy: EmergencyShutdown,
            needs: MinSeverity::Unhealthy,
            status: HealthStatus::Critical
        }
    );
    assert_eq!(d.alerts.len(), 2, "{:?}", d.alerts);
    let d = sim.eval(Eval::Errors);
    assert!(d.alerts.is_empty(), "{:?}", d.alerts);
    // It becomes Unhealthy: escalate at once (the failed step waived the cooldown).
    let d = sim.eval(Eval::Down).clone();
    assert_eq!(d.action.unwrap().strategy, EmergencyShutdown);
    // Nothing after the shutdown: a failed shutdown fails the incident.
    let d = sim.finish(false, Eval::Down);
    assert_eq!(
        d.explanation.reason,
        Reason::IncidentFailed {
            attempts: 2,
            max: 5
        }
    );
}

#[test]
fn no_rung_for_the_class_holds_and_alerts_once() {
    let mut s = settings();
    s.ladder = vec![rung(CircuitBreaker), rung(TrafficShifting)];
    let mut sim = Sim::new(s);
    let d = sim.evals(Eval::Dependency, 3).clone();
    assert_eq!(d.action, None);
    assert_eq!(
        d.explanation.reason,
        Reason::NoRungForClass {
            class: IncidentClass::Dependency,
            status: HealthStatus::Critical
        }
    );
    assert!(d.alerts.iter().any(|a| a.code == "NoRungForClass"));
    assert!(sim.eval(Eval::Dependency).alerts.is_empty());
    assert_eq!(
        sim.state.incident.as_ref().unwrap().message.as_deref(),
        Some(
            "no rung of the ladder answers Dependency incidents at status Critical: act manually or add a rung"
        )
    );
}

#[test]
fn rungs_answer_the_classes_they_are_given() {
    let mut s = settings();
    s.ladder = vec![
        RungRule {
            strategy: CircuitBreaker,
            incidents: vec![IncidentClass::Performance, IncidentClass::Dependency],
            min_severity: MinSeverity::Critical,
        },
        rung(EnvironmentSwitch),
    ];
    let mut sim = Sim::new(s);
    sim.evals(Eval::Dependency, 3);
    assert_eq!(sim.strategies(), vec![CircuitBreaker]);
}

#[test]
fn a_successful_step_then_healthy_closes_the_incident() {
    let mut sim = Sim::new(settings());
    sim.evals(Eval::Errors, 3);
    // Healthy while the step is still verifying: the incident stays open for its outcome.
    assert_eq!(
        sim.eval(Eval::Healthy).explanation.reason,
        Reason::Recovering
    );
    assert!(sim.state.incident.is_some());
    let d = sim.finish(true, Eval::Healthy);
    assert_eq!(
        d.explanation.reason,
        Reason::StepSucceeded {
            strategy: Some(TrafficShifting)
        }
    );
    let d = sim.eval(Eval::Healthy).clone();
    assert_eq!(
        d.transitions,
        vec![Transition::IncidentClosed { attempts: 1 }]
    );
    assert_eq!(d.alerts[0].level, AlertLevel::Info);
    assert_eq!(sim.state.incident, None);
}

#[test]
fn still_failing_after_a_successful_step_escalates_after_cooldown() {
    let mut sim = Sim::new(settings());
    sim.evals(Eval::Errors, 3);
    sim.finish(true, Eval::Errors);
    let d = sim.eval(Eval::Errors).clone();
    assert!(matches!(d.explanation.reason, Reason::Cooldown { .. }));
    sim.wait(300);
    let d = sim.eval(Eval::Errors).clone();
    assert_eq!(d.action.unwrap().strategy, EnvironmentSwitch);
    assert!(matches!(
        d.explanation.reason,
        Reason::Remediate {
            rule: PickRule::Escalation {
                after: TrafficShifting,
                after_failed: false,
                ..
            },
            ..
        }
    ));
}

#[test]
fn cooldown_holds_the_next_incident() {
    let mut sim = Sim::new(settings());
    sim.evals(Eval::Errors, 3);
    let first = sim.now;
    sim.finish(true, Eval::Healthy);
    sim.eval(Eval::Healthy);
    assert_eq!(sim.state.incident, None);
    // A new incident 2.5 minutes after the first remediation: held until 5 minutes.
    let d = sim.evals(Eval::Performance, 3).clone();
    assert_eq!(d.action, None);
    let until = first.checked_add(Duration::from_secs(300)).unwrap();
    assert_eq!(
        d.explanation.reason,
        Reason::Cooldown { last: first, until }
    );
    assert!(d.alerts.iter().all(|a| a.code != "Cooldown"));
    while sim.now.checked_add(Duration::from_secs(30)).unwrap() < until {
        assert_eq!(sim.eval(Eval::Performance).action, None);
    }
    let d = sim.eval(Eval::Performance);
    assert_eq!(d.action.as_ref().unwrap().strategy, CircuitBreaker);
    assert_eq!(sim.actions.len(), 2);
    assert_eq!(sim.actions[1].at, until);
}

#[test]
fn failed_incident_holds_until_healthy() {
    let mut s = settings();
    s.max_attempts = 1;
    let mut sim = Sim::new(s);
    sim.evals(Eval::Errors, 3);
    sim.finish(false, Eval::Errors);
    assert!(sim.state.incident.as_ref().unwrap().failed);
    for _ in 0..20 {
        let d = sim.eval(Eval::Unhealthy);
        assert_eq!(d.action, None);
        assert_eq!(d.explanation.reason, Reason::FailedHold);
        assert!(d.alerts.is_empty());
    }
    let d = sim.eval(Eval::Healthy).clone();
    assert_eq!(
        d.transitions,
        vec![Transition::IncidentClosed { attempts: 1 }]
    );
    // A fresh incident gets fresh attempts.
    sim.wait(600);
    sim.evals(Eval::Errors, 3);
    assert_eq!(sim.strategies(), vec![TrafficShifting, TrafficShifting]);
}

#[test]
fn failed_incident_holds_until_acknowledged() {
    let mut s = settings();
    s.max_attempts = 1;
    let mut sim = Sim::new(s);
    sim.ack = Some("early".into());
    sim.evals(Eval::Errors, 3);
    // An ack seen before the failure is consumed and does not release it later.
    assert_eq!(sim.state.acknowledged.as_deref(), Some("early"));
    sim.finish(false, Eval::Errors);
    sim.wait(600);
    assert_eq!(
        sim.evals(Eval::Errors, 5).explanation.reason,
        Reason::FailedHold
    );
    sim.ack = Some("alice-1".into());
    let d = sim.eval(Eval::Errors).clone();
    assert_eq!(d.transitions, vec![Transition::IncidentAcknowledged]);
    assert!(d.alerts[0].message.contains("rollback.frys.io/ack=alice-1"));
    assert_eq!(sim.state.failure_streak, 1);
    assert_eq!(sim.state.incident, None);
    // The same ack value again changes nothing; a new incident needs a new streak.
    sim.eval(Eval::Errors);
    let d = sim.eval(Eval::Errors);
    assert_eq!(d.action.as_ref().unwrap().strategy, TrafficShifting);
}

#[test]
fn auto_rollback_off_assesses_and_alerts_only() {
    let mut s = settings();
    s.auto_rollback = false;
    let mut sim = Sim::new(s);
    let d = sim.evals(Eval::Release, 3).clone();
    assert_eq!(d.action, None);
    assert_eq!(
        d.explanation.reason,
        Reason::AutoRollbackOff {
            would_run: VersionRollback
        }
    );
    assert!(d.alerts.iter().any(|a| a.code == "AutoRollbackOff"));
    assert!(sim.evals(Eval::Release, 10).alerts.is_empty());
    assert!(sim.actions.is_empty());
}

#[test]
fn dry_run_decides_once_per_rung() {
    let mut s = settings();
    s.dry_run = true;
    let mut sim = Sim::new(s);
    let d = sim.evals(Eval::Errors, 3).clone();
    let action = d.action.unwrap();
    assert!(action.dry_run);
    assert_eq!(d.explanation.reason.code(), "DryRunRemediation");
    let incident = sim.state.incident.as_ref().unwrap();
    assert_eq!(
        (incident.tried.clone(), incident.active.clone()),
        (vec![TrafficShifting], None)
    );
    // Not repeated every tick: the next rung only after the cooldown.
    sim.evals(Eval::Errors, 9);
    assert_eq!(sim.actions.len(), 1);
    sim.eval(Eval::Errors);
    assert_eq!(sim.strategies(), vec![TrafficShifting, EnvironmentSwitch]);
}

#[test]
fn suspend_does_nothing() {
    let mut s = settings();
    s.suspend = true;
    let mut sim = Sim::new(s);
    let d = sim.evals(Eval::Down, 10).clone();
    assert_eq!(d.explanation.reason, Reason::Suspended);
    assert_eq!(sim.state, PolicyState::default());
    assert!(sim.actions.is_empty());
}

#[test]
fn guard_correlation_holds_rollbacks_and_names_the_cause() {
    let mut sim = Sim::new(settings());
    let cause = CommonCause::Simultaneous {
        policies: vec!["shop/api".into(), "shop/web".into(), "pay/gw".into()],
        window: Duration::from_secs(120),
        classes: vec![IncidentClass::Errors],
    };
    sim.guard = GuardVerdict {
        holds: vec![GuardHold::Correlated(cause)],
    };
    let d = sim.evals(Eval::Release, 3).clone();
    assert_eq!(d.action, None);
    assert_eq!(d.explanation.reason.code(), "CorrelatedFailure");
    let alert = d
        .alerts
        .iter()
        .find(|a| a.code == "CorrelatedFailure")
        .unwrap();
    assert_eq!(alert.level, AlertLevel::Critical);
    assert!(
        alert
            .message
            .contains("3 policies turned critical within 2m")
    );
    assert!(alert.message.contains("shop/api, shop/web, pay/gw"));
    // Other rungs are not held by correlation.
    let mut sim2 = Sim::new(settings());
    sim2.guard = sim.guard.clone();
    sim2.evals(Eval::Errors, 3);
    assert_eq!(sim2.strategies(), vec![TrafficShifting]);
    // Once the cluster calms down the rollback runs.
    sim.guard = GuardVerdict::clear();
    assert_eq!(
        sim.eval(Eval::Release).action.as_ref().unwrap().strategy,
        VersionRollback
    );
}

#[test]
fn guard_freeze_holds_every_automatic_step() {
    let mut sim = Sim::new(settings());
    sim.guard = GuardVerdict {
        holds: vec![GuardHold::Frozen(FreezeSource::Namespace)],
    };
    let d = sim.evals(Eval::Performance, 3).clone();
    assert_eq!(d.action, None);
    assert_eq!(d.explanation.reason.code(), "Frozen");
}

#[test]
fn other_events_of_the_policy_make_it_wait() {
    let s = settings();
    let mut state = PolicyState::default();
    for i in 1..=3 {
        let a = assessment(Eval::Errors, t(i * 30));
        let tick = Tick {
            assessment: &a,
            now: t(i * 30),
            guard: &GuardVerdict::clear(),
            ack: None,
            busy: Some("web-manual-1"),
        };
        let d = decide(&state, &tick, &s);
        assert_eq!(d.action, None);
        state = d.state;
    }
    assert_eq!(
        decide(
            &state,
            &Tick {
                assessment: &assessment(Eval::Errors, t(120)),
                now: t(120),
                guard: &GuardVerdict::clear(),
                ack: None,
                busy: Some("web-manual-1"),
            },
            &s
        )
        .explanation
        .reason,
        Reason::Busy {
            event: "web-manual-1".into()
        }
    );
}

#[test]
fn inconclusive_during_an_incident_holds() {
    let mut sim = Sim::new(settings());
    sim.evals(Eval::Errors, 3);
    sim.finish(true, Eval::Errors);
    sim.wait(600);
    let d = sim.eval(Eval::NoData);
    assert_eq!(d.action, None);
    assert_eq!(d.explanation.reason, Reason::Inconclusive);
    assert!(sim.state.incident.is_some());
}

#[test]
fn settings_come_from_the_spec_and_effective_values() {
    let spec: crate::api::RollbackPolicySpec = serde_json::from_value(serde_json::json!({
        "targetRef": {"name": "web"},
        "metrics": [{"name": "errors", "preset": "errorRate"}],
        "consecutiveFailures": 2,
        "strategies": [
            {"type": "VersionRollback"},
            {"type": "EmergencyShutdown", "minSeverity": "Critical"}
        ],
        "dryRun": true
    }))
    .unwrap();
    let effective = crate::config::effective(&spec, &crate::config::OperatorConfig::defaults());
    let (assess, policy) = from_policy(&spec, &effective).unwrap();
    assert_eq!(assess.release_window, Duration::from_secs(1800));
    assert_eq!(policy.cooldown, Duration::from_secs(300));
    assert_eq!(policy.consecutive_failures, 2);
    assert!(policy.dry_run && policy.auto_rollback && !policy.suspend);
    // EmergencyShutdown never runs automatically below Unhealthy.
    assert_eq!(policy.ladder[1].min_severity, MinSeverity::Unhealthy);
    assert_eq!(policy.ladder[0].incidents, vec![IncidentClass::Release]);

    let mut broken = effective.clone();
    broken.cooldown = Some("soon".into());
    let err = from_policy(&spec, &broken).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cooldown: invalid duration \"soon\""),
        "{err}"
    );
}

// ----- manual requests -----

fn manual(
    state: &PolicyState,
    request: &ManualRequest,
    settings: &PolicySettings,
    busy: Option<&str>,
    now: Timestamp,
) -> ManualDecision {
    decide_manual(state, request, settings, None, busy, now)
}

fn trigger(strategy: StrategyKind) -> ManualRequest {
    ManualRequest::Trigger {
        strategy,
        reason: Some("perf regression".into()),
    }
}

#[test]
fn manual_triggers_bypass_cooldown_auto_rollback_and_failure() {
    let mut s = settings();
    s.auto_rollback = false;
    let mut state = PolicyState {
        last_automatic: Some(t(0)),
        ..Default::default()
    };
    state.incident = Some(Incident {
        failed: true,
        ..Incident::new(IncidentClass::Errors, t(0))
    });
    let d = manual(&state, &trigger(VersionRollback), &s, None, t(10));
    let action = d.action.unwrap();
    assert_eq!(
        (action.strategy, action.kind, action.dry_run),
        (VersionRollback, EventType::Manual, false)
    );
    assert_eq!(action.reason, "perf regression");
    assert!(d.consumed);
    // Manual steps leave the incident's bookkeeping alone.
    assert_eq!(d.state.incident, state.incident);
}

#[test]
fn manual_triggers_outside_the_ladder_need_no_parameters() {
    let mut s = settings();
    s.ladder = vec![rung(TrafficShifting)];
    let state = PolicyState::default();
    let d = manual(&state, &trigger(CircuitBreaker), &s, None, t(0));
    assert_eq!(d.action, None);
    assert!(d.consumed);
    assert_eq!(
        d.explanation.reason,
        Reason::NotInLadder {
            strategy: CircuitBreaker
        }
    );
    assert_eq!(d.alerts[0].level, AlertLevel::Warning);
    assert!(
        manual(&state, &trigger(VersionRollback), &s, None, t(0))
            .action
            .is_some()
    );
    assert!(
        manual(&state, &trigger(TrafficShifting), &s, None, t(0))
            .action
            .is_some()
    );
}

#[test]
fn the_same_trigger_within_cooldown_fires_once() {
    let s = settings();
    let d = manual(
        &PolicyState::default(),
        &trigger(VersionRollback),
        &s,
        None,
        t(0),
    );
    assert!(d.action.is_some());
    let again = manual(&d.state, &trigger(VersionRollback), &s, None, t(60));
    assert_eq!((again.action, again.consumed), (None, true));
    assert_eq!(
        again.explanation.reason,
        Reason::DuplicateTrigger { consumed_at: t(0) }
    );
    // A different reason is a different request; the same one after cooldown runs again.
    let other = ManualRequest::Trigger {
        strategy: VersionRollback,
        reason: Some("again".into()),
    };
    assert!(manual(&d.state, &other, &s, None, t(60)).action.is_some());
    assert!(
        manual(&d.state, &trigger(VersionRollback), &s, None, t(300))
            .action
            .is_some()
    );
}

#[test]
fn manual_triggers_wait_for_active_steps_but_emergencies_do_not() {
    let s = settings();
    let state = PolicyState::default();
    let d = manual(&state, &trigger(VersionRollback), &s, Some("web-1"), t(0));
    assert_eq!((d.action, d.consumed), (None, false));
    let emergency = ManualRequest::Emergency {
        reason: "database outage".into(),
    };
    let d = manual(&state, &emergency, &s, Some("web-1"), t(0));
    let action = d.action.unwrap();
    assert_eq!(
        (action.strategy, action.kind),
        (EmergencyShutdown, EventType::Emergency)
    );
    assert_eq!(d.alerts[0].level, AlertLevel::Emergency);
    assert!(d.alerts[0].message.ends_with("database outage"));
}

#[test]
fn dry_run_applies_to_triggers_not_to_emergencies() {
    let mut s = settings();
    s.dry_run = true;
    let state = PolicyState::default();
    assert!(
        manual(&state, &trigger(VersionRollback), &s, None, t(0))
            .action
            .unwrap()
            .dry_run
    );
    let emergency = ManualRequest::Emergency {
        reason: "outage".into(),
    };
    assert!(
        !manual(&state, &emergency, &s, None, t(0))
            .action
            .unwrap()
            .dry_run
    );
}

#[test]
fn suspend_refuses_manual_requests_too() {
    let mut s = settings();
    s.suspend = true;
    for request in [
        trigger(VersionRollback),
        ManualRequest::Emergency {
            reason: "outage".into(),
        },
    ] {
        let d = manual(&PolicyState::default(), &request, &s, None, t(0));
        assert_eq!((d.action, d.consumed), (None, false));
        assert_eq!(d.explanation.reason, Reason::Suspended);
    }
}

// ----- properties -----

#[derive(Clone, Debug)]
enum Step {
    Eval(Eval),
    Finish(bool),
    Wait(u64),
    Ack(u8),
}

fn any_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => proptest::sample::select(EVALS.to_vec()).prop_map(Step::Eval),
        2 => any::<bool>().prop_map(Step::Finish),
        1 => (0u64..900).prop_map(Step::Wait),
        1 => (0u8..3).prop_map(Step::Ack),
    ]
}

fn any_ladder() -> impl Strategy<Value = Vec<RungRule>> {
    let rung = (
        proptest::sample::subsequence(
            vec![
                IncidentClass::Release,
                IncidentClass::Unavailable,
                IncidentClass::Dependency,
                IncidentClass::Errors,
                IncidentClass::Performance,
            ],
            1..=5,
        ),
        proptest::sample::select(vec![
            MinSeverity::Warning,
            MinSeverity::Critical,
            MinSeverity::Unhealthy,
        ]),
    );
    (
        Just(StrategyKind::ALL.to_vec()).prop_shuffle(),
        proptest::collection::vec(rung, 5),
        1usize..=5,
    )
        .prop_map(|(order, rungs, len)| {
            order
                .into_iter()
                .zip(rungs)
                .take(len)
                .map(|(strategy, (incidents, min_severity))| RungRule {
                    strategy,
                    incidents,
                    min_severity,
                })
                .collect()
        })
}

fn any_settings() -> impl Strategy<Value = PolicySettings> {
    (1u32..=4, any_ladder(), 1u32..=5, 0u64..900, any::<bool>()).prop_map(
        |(consecutive_failures, ladder, max_attempts, cooldown, dry_run)| PolicySettings {
            consecutive_failures,
            ladder,
            max_attempts,
            cooldown: Duration::from_secs(cooldown),
            auto_rollback: true,
            dry_run,
            suspend: false,
        },
    )
}

fn run(settings: PolicySettings, steps: &[Step]) -> Sim {
    let mut sim = Sim::new(settings);
    for step in steps {
        match step {
            Step::Eval(kind) => {
                sim.eval(*kind);
            }
            Step::Finish(ok) => {
                if sim
                    .state
                    .incident
                    .as_ref()
                    .is_some_and(|i| i.active.is_some())
                {
                    sim.finish(*ok, Eval::Errors);
                }
            }
            Step::Wait(secs) => sim.wait(*secs),
            Step::Ack(n) => sim.ack = Some(format!("ack-{n}")),
        }
    }
    sim
}

/// Failing evaluations in a row as the streak rule counts them, independently of the engine.
fn model_streak_reaches(steps: &[Step], needed: u32) -> bool {
    let mut streak = 0;
    for step in steps {
        if let Step::Eval(kind) = step {
            match kind {
                Eval::Healthy => streak = 0,
                Eval::Warning | Eval::NoData => {}
                _ => streak += 1,
            }
            if streak >= needed {
                return true;
            }
        }
    }
    false
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Per incident: at most maxRollbackAttempts steps, each rung at most once, escalations in
    /// ladder order; every step is allowed by its rung's minSeverity.
    #[test]
    fn escalation_respects_the_ladder_and_the_attempt_limit(
        settings in any_settings(),
        steps in proptest::collection::vec(any_step(), 1..80),
    ) {
        let sim = run(settings.clone(), &steps);
        let mut by_incident: std::collections::BTreeMap<Timestamp, Vec<StrategyKind>> = Default::default();
        for l in &sim.actions {
            let started = l.incident_started.expect("automatic steps belong to an incident");
            by_incident.entry(started).or_default().push(l.action.strategy);
        }
        let position = |s: &StrategyKind| settings.ladder.iter().position(|r| r.strategy == *s).unwrap();
        for (_, strategies) in by_incident {
            prop_assert!(strategies.len() as u32 <= settings.max_attempts, "{strategies:?}");
            let mut seen = strategies.clone();
            seen.sort();
            seen.dedup();
            prop_assert_eq!(seen.len(), strategies.len(), "a rung ran twice: {:?}", strategies);
            for pair in strategies.windows(2) {
                prop_assert!(position(&pair[0]) < position(&pair[1]), "out of ladder order: {:?}", strategies);
            }
        }
    }

    /// An incident opens exactly when the streak model says it should (no noisy single sample
    /// opens one when consecutiveFailures > 1), and no data never grows the streak.
    #[test]
    fn incidents_open_only_on_a_full_streak(
        needed in 1u32..=4,
        steps in proptest::collection::vec(
            proptest::sample::select(vec![Eval::Healthy, Eval::Warning, Eval::NoData, Eval::Errors, Eval::Down]).prop_map(Step::Eval),
            1..40,
        ),
    ) {
        let mut s = settings();
        s.consecutive_failures = needed;
        let sim = run(s, &steps);
        let opened = sim.state.incident.is_some() || !sim.actions.is_empty();
        prop_assert_eq!(opened, model_streak_reaches(&steps, needed));
    }

    /// Isolated failing samples (each followed by a healthy one) never open an incident.
    #[test]
    fn single_noisy_samples_never_open_an_incident(
        needed in 2u32..=5,
        noise in proptest::collection::vec((proptest::sample::select(EVALS[3..].to_vec()), 0usize..4), 1..20),
    ) {
        let mut s = settings();
        s.consecutive_failures = needed;
        let mut sim = Sim::new(s);
        for (bad, healthy) in noise {
            prop_assert_eq!(&sim.eval(bad).action, &None);
            for _ in 0..=healthy {
                sim.eval(Eval::Healthy);
            }
        }
        prop_assert!(sim.state.incident.is_none() && sim.actions.is_empty());
    }

    /// Under noData: Ignore, missing data never opens an incident or acts, however long.
    #[test]
    fn no_data_never_triggers_under_ignore(
        steps in proptest::collection::vec(
            proptest::sample::select(vec![Eval::Healthy, Eval::Warning, Eval::NoData]).prop_map(Step::Eval),
            1..60,
        ),
    ) {
        let s = PolicySettings { consecutive_failures: 1, ..settings() };
        let sim = run(s, &steps);
        prop_assert!(sim.state.incident.is_none());
        prop_assert_eq!(sim.state.failure_streak, 0);
        prop_assert!(sim.actions.is_empty());
    }

    /// Two automatic steps are at least `cooldown` apart unless the later one escalates from a
    /// failed verification.
    #[test]
    fn cooldown_separates_automatic_remediations(
        settings in any_settings(),
        steps in proptest::collection::vec(any_step(), 1..80),
    ) {
        let sim = run(settings.clone(), &steps);
        for pair in sim.actions.windows(2) {
            let (earlier, later) = (&pair[0], &pair[1]);
            let after_failure = matches!(
                later.reason,
                Reason::Remediate { rule: PickRule::Escalation { after_failed: true, .. }, .. }
            );
            if !after_failure {
                let gap = Duration::try_from(later.at.duration_since(earlier.at)).unwrap();
                prop_assert!(gap >= settings.cooldown, "{gap:?} < {:?}", settings.cooldown);
            }
        }
    }

    /// Dry run never yields an action that changes anything.
    #[test]
    fn dry_run_never_acts_for_real(
        settings in any_settings(),
        steps in proptest::collection::vec(any_step(), 1..80),
        strategy in proptest::sample::select(StrategyKind::ALL.to_vec()),
    ) {
        let settings = PolicySettings { dry_run: true, ..settings };
        let sim = run(settings.clone(), &steps);
        prop_assert!(sim.actions.iter().all(|l| l.action.dry_run));
        prop_assert!(sim.state.incident.as_ref().is_none_or(|i| i.active.is_none()));
        let d = manual(&sim.state, &trigger(strategy), &settings, None, sim.now);
        prop_assert!(d.action.is_none_or(|a| a.dry_run));
    }

    /// Suspend: nothing changes, nothing is said, nothing is done.
    #[test]
    fn suspend_yields_nothing(
        settings in any_settings(),
        before in proptest::collection::vec(any_step(), 0..40),
        after in proptest::collection::vec(any_step(), 1..40),
    ) {
        let sim = run(settings.clone(), &before);
        let mut suspended = Sim::new(PolicySettings { suspend: true, ..settings.clone() });
        suspended.state = sim.state.clone();
        suspended.now = sim.now;
        for step in &after {
            if let Step::Eval(kind) = step {
                let d = suspended.eval(*kind).clone();
                prop_assert_eq!(d.action, None);
                prop_assert!(d.alerts.is_empty() && d.transitions.is_empty());
                prop_assert_eq!(&d.state, &sim.state);
            }
        }
        let d = manual(&sim.state, &trigger(VersionRollback), &suspended.settings, None, sim.now);
        prop_assert_eq!(d.action, None);
    }
}

// Single steps from arbitrary states (not only those a simulation reaches), checked against
// the rules of the module docs (`invariants`, shared with the `decide` fuzz target).

mod any_state {
    use proptest::prelude::*;

    use super::*;
    use crate::{
        api::HealthStatus,
        assess::{ClassRule, Classification, StatusRule},
        decide::invariants,
    };

    fn class() -> impl Strategy<Value = IncidentClass> {
        proptest::sample::select(IncidentClass::ALL.to_vec())
    }

    fn stamp() -> impl Strategy<Value = Timestamp> {
        (-2_000_000i64..2_000_000).prop_map(invariants::timestamp)
    }

    fn incident() -> impl Strategy<Value = Incident> {
        (
            class(),
            stamp(),
            0u32..7,
            proptest::sample::subsequence(StrategyKind::ALL.to_vec(), 0..=5).prop_shuffle(),
            prop_oneof![
                Just(None),
                Just(Some(ActiveStep::Pending)),
                Just(Some(ActiveStep::Event("ev-1".into())))
            ],
            any::<bool>(),
            any::<bool>(),
            proptest::option::of("[a-z ]{0,8}"),
        )
            .prop_map(
                |(
                    class,
                    started_at,
                    attempts,
                    tried,
                    active,
                    last_step_failed,
                    failed,
                    message,
                )| {
                    Incident {
                        class,
                        started_at,
                        attempts,
                        tried,
                        active,
                        last_step_failed,
                        failed,
                        message,
                    }
                },
            )
    }

    fn state() -> impl Strategy<Value = PolicyState> {
        (
            prop_oneof![0u32..8, Just(u32::MAX)],
            proptest::option::of(stamp()),
            proptest::option::of(incident()),
            proptest::option::of(stamp()),
            proptest::option::of(proptest::sample::select(vec![
                "ack-0".to_owned(),
                "ack-1".to_owned(),
            ])),
        )
            .prop_map(
                |(failure_streak, failing_since, incident, last_automatic, acknowledged)| {
                    PolicyState {
                        failure_streak,
                        failing_since,
                        incident,
                        last_automatic,
                        acknowledged,
                        last_trigger: None,
                    }
                },
            )
    }

    fn assessment(now: Timestamp) -> impl Strategy<Value = Assessment> {
        (
            proptest::sample::select(HealthStatus::ALL.to_vec()),
            any::<bool>(),
            proptest::option::of(class()),
        )
            .prop_map(move |(status, conclusive, class)| Assessment {
                status,
                status_rule: StatusRule::WorstSignal,
                conclusive,
                score: 50.0,
                metrics: vec![],
                class: class.map(|class| Classification {
                    class,
                    rule: ClassRule::Default,
                }),
                evaluated_at: now,
                message: "assessed".into(),
            })
    }

    fn guard() -> impl Strategy<Value = GuardVerdict> {
        proptest::collection::vec(
            prop_oneof![
                Just(GuardHold::Frozen(FreezeSource::Operator)),
                Just(GuardHold::Budget {
                    active: 2,
                    budget: 2
                }),
                Just(GuardHold::Correlated(CommonCause::SharedDependency {
                    signal: "db".into(),
                    policies: vec!["a/b".into(), "a/c".into()],
                })),
            ],
            0..2,
        )
        .prop_map(|holds| GuardVerdict { holds })
    }

    fn policy_settings() -> impl Strategy<Value = PolicySettings> {
        (
            any_settings(),
            0u8..8,
            prop_oneof![Just(0u64), 0u64..5_000_000, Just(u64::MAX)],
        )
            .prop_map(|(s, switches, cooldown)| PolicySettings {
                suspend: switches == 0,
                auto_rollback: switches != 1,
                cooldown: Duration::from_secs(cooldown),
                ..s
            })
    }

    /// Everything one step reads.
    #[derive(Debug)]
    struct Step {
        state: PolicyState,
        now: Timestamp,
        assessment: Assessment,
        guard: GuardVerdict,
        ack: Option<String>,
        busy: Option<String>,
        settings: PolicySettings,
    }

    fn step() -> impl Strategy<Value = Step> {
        (state(), stamp()).prop_flat_map(|(state, now)| {
            (
                assessment(now),
                guard(),
                proptest::option::of(proptest::sample::select(vec![
                    "ack-0".to_owned(),
                    "ack-2".to_owned(),
                ])),
                proptest::option::weighted(0.2, Just("manual-1".to_owned())),
                policy_settings(),
            )
                .prop_map(move |(assessment, guard, ack, busy, settings)| Step {
                    state: state.clone(),
                    now,
                    assessment,
                    guard,
                    ack,
                    busy,
                    settings,
                })
        })
    }

    impl Step {
        fn tick(&self) -> Tick<'_> {
            Tick {
                assessment: &self.assessment,
                now: self.now,
                guard: &self.guard,
                ack: self.ack.as_deref(),
                busy: self.busy.as_deref(),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// decide keeps every rule of the module docs, from any state.
        #[test]
        fn decide_keeps_its_rules_from_any_state(s in step()) {
            let d = decide(&s.state, &s.tick(), &s.settings);
            if let Err(rule) = invariants::check_decide(&s.state, &s.tick(), &s.settings, &d) {
                return Err(TestCaseError::fail(format!("{rule}\n{d:#?}")));
            }
        }

        /// on_remediation_finished keeps them too, succeeded or failed.
        #[test]
        fn finishing_a_step_keeps_the_rules_from_any_state(s in step(), succeeded in any::<bool>()) {
            let d = on_remediation_finished(&s.state, succeeded, &s.tick(), &s.settings);
            if let Err(rule) = invariants::check_finished(&s.state, succeeded, &s.tick(), &s.settings, &d) {
                return Err(TestCaseError::fail(format!("{rule}\n{d:#?}")));
            }
        }
    }

    /// The checker is not vacuous: it refuses an action taken while another event is unfinished.
    #[test]
    fn the_checker_catches_an_action_while_busy() {
        let s = settings();
        let now = invariants::timestamp(0);
        let a = super::assessment(Eval::Errors, now);
        let guard = GuardVerdict::clear();
        let mut tick = Tick {
            assessment: &a,
            now,
            guard: &guard,
            ack: None,
            busy: None,
        };
        let state = PolicyState {
            failure_streak: 5,
            ..Default::default()
        };
        let d = decide(&state, &tick, &s);
        assert!(d.action.is_some());
        invariants::check_decide(&state, &tick, &s, &d).unwrap();
        tick.busy = Some("manual-1");
        assert_eq!(
            invariants::check_decide(&state, &tick, &s, &d).unwrap_err(),
            "never acts while another event is unfinished"
        );
    }
}
