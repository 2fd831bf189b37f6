//! Decision: what to do about a policy, given what the engine remembers and the latest
//! assessment. A state machine per policy; pure (no I/O, `now` is an input).
//!
//! Rules (DESIGN.md "Decisions", and where it is silent, as documented here):
//! - **Streak**: grows on a conclusive Critical/Unhealthy assessment, holds on Warning and on
//!   inconclusive ones, resets on Healthy.
//! - **Incident**: opens when the streak reaches `consecutiveFailures`, with the assessment's
//!   class (fixed for the incident's life); closes on a Healthy assessment, once no step of it
//!   is active (so the step's outcome stays attributed to it).
//! - **First step**: the first rung in ladder order, untried, whose `incidents` holds the incident's
//!   class and whose `minSeverity` the current status meets. None → hold and alert.
//! - **Escalation**: the next step (after a failed verification, or when the incident is still
//!   failing after a successful one) is the first untried rung *after the last one tried*, in
//!   ladder order, whose `minSeverity` is met; its `incidents` classes are not required (the class's
//!   own answer did not help, so heavier rungs are next). Lighter rungs before it are not
//!   revisited. If untried rungs remain but none's severity is met, hold until it is.
//! - **Failed**: when a step is needed while failing and `maxRollbackAttempts` are used or no
//!   untried rung remains after the last one, the incident fails: an Emergency alert, and no
//!   automatic action until Healthy (which closes it) or a new `rollback.frys.io/ack` value
//!   (which closes it and resets the streak, so a fresh incident needs a fresh streak).
//! - **One step at a time**: an active step of the incident, or any other unfinished event of
//!   the policy (`busy`), means wait.
//! - **Cooldown** counts from the last automatic decision. It holds a first step and a step
//!   after a *successful* one (its effect may not show in the rate window yet); it does not
//!   hold an escalation after a *failed* verification, which already waited for its verdict.
//! - Gates, in order: `suspend` (nothing at all), failed incident, active step, busy,
//!   inconclusive assessment, rung choice, `autoRollback: false` (hold, alert what would run),
//!   cooldown, blast-radius guard. `dryRun` decides normally, marks the action dry-run, and
//!   counts it as tried (no active step, so the ladder advances one rung per cooldown).
//! - Holds alert once per distinct explanation (kept in the incident's message).

pub mod drill;
mod explain;
mod guard;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod invariants;
mod lifecycle;
mod manual;
pub mod news;
mod settings;
mod state;

#[cfg(test)]
mod tests;

use jiff::Timestamp;

pub use explain::{Explanation, PickRule, Reason, short_reason};
pub use guard::{
    ClusterView, CommonCause, CriticalPolicy, FreezeSource, GuardHold, GuardSettings, GuardVerdict,
    common_causes, verdict,
};
pub use lifecycle::{beyond_history, due_for_restore};
pub use manual::{ManualDecision, ManualRequest, acknowledgement, decide_manual, manual_request};
pub use settings::{PolicySettings, RungRule, SettingsError, from_policy};
pub use state::{ActiveStep, Incident, PolicyState, Trigger};

use crate::{
    api::{AlertLevel, EventType, HealthStatus, IncidentClass, StrategyKind, annotations},
    assess::Assessment,
};

/// The inputs of one decision besides the state and the settings.
#[derive(Clone, Debug)]
pub struct Tick<'a> {
    /// The latest assessment.
    pub assessment: &'a Assessment,
    pub now: Timestamp,
    /// The blast-radius guard's verdict for this policy.
    pub guard: &'a GuardVerdict,
    /// The current `rollback.frys.io/ack` value on the policy or its target. A value not yet
    /// consumed acknowledges (read by [`decide`] only).
    pub ack: Option<&'a str>,
    /// An unfinished RollbackEvent of this policy that is not the incident's active step
    /// (manual, or created by a person): automatic steps wait for it.
    pub busy: Option<&'a str>,
}

/// A remediation to carry out (the caller creates the RollbackEvent).
#[derive(Clone, Debug, PartialEq)]
pub struct Remediate {
    pub strategy: StrategyKind,
    pub kind: EventType,
    pub class: Option<IncidentClass>,
    /// Why, in words (the event's `reason`).
    pub reason: String,
    /// Record a Skipped event; change nothing.
    pub dry_run: bool,
    /// The rung this step escalates from (the caller links the events).
    pub escalated_from: Option<StrategyKind>,
}

/// A notification.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub level: AlertLevel,
    /// Short PascalCase code (the decision's reason code).
    pub code: &'static str,
    pub message: String,
}

/// A change worth a condition and a Kubernetes Event.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    IncidentOpened { class: IncidentClass },
    IncidentClosed { attempts: u32 },
    IncidentFailed { attempts: u32 },
    IncidentAcknowledged,
}

/// The result of a decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The state to remember (write it to status).
    pub state: PolicyState,
    pub action: Option<Remediate>,
    pub alerts: Vec<Alert>,
    pub transitions: Vec<Transition>,
    pub explanation: Explanation,
}

/// Decides after an evaluation of the policy's signals.
pub fn decide(state: &PolicyState, tick: &Tick<'_>, settings: &PolicySettings) -> Decision {
    let a = tick.assessment;
    let mut d = Draft::new(state);
    if settings.suspend {
        return d.finish(Reason::Suspended, a, None);
    }
    d.consume_ack(tick.ack, settings);

    // Streak.
    let s = &mut d.state;
    match (a.conclusive, a.status) {
        (false, _) | (true, HealthStatus::Warning) => {}
        (true, HealthStatus::Healthy) => {
            s.failure_streak = 0;
            s.failing_since = None;
        }
        (true, HealthStatus::Critical | HealthStatus::Unhealthy) => {
            s.failure_streak = s.failure_streak.saturating_add(1);
            s.failing_since.get_or_insert(tick.now);
        }
    }

    // Healthy: close the incident (once its step has finished).
    if a.conclusive && a.status == HealthStatus::Healthy {
        let reason = match &d.state.incident {
            None => Reason::Healthy,
            Some(i) if i.active.is_some() => Reason::Recovering,
            Some(i) => {
                let attempts = i.attempts;
                d.state.incident = None;
                d.transitions.push(Transition::IncidentClosed { attempts });
                let reason = Reason::IncidentClosed { attempts };
                d.alert(AlertLevel::Info, &reason, a);
                reason
            }
        };
        return d.finish(reason, a, None);
    }

    if d.state.incident.is_none() {
        if !a.is_failing() {
            let reason = if a.conclusive {
                Reason::Watching
            } else {
                Reason::Inconclusive
            };
            return d.finish(reason, a, None);
        }
        let (streak, needed) = (d.state.failure_streak, settings.consecutive_failures);
        if streak < needed {
            return d.finish(Reason::Streak { streak, needed }, a, None);
        }
        let class = a.incident_class().unwrap_or(IncidentClass::Performance);
        d.state.incident = Some(Incident::new(class, tick.now));
        d.transitions.push(Transition::IncidentOpened { class });
        let class_why = a.class.as_ref().map_or(class.to_string(), |c| c.sentence());
        d.alerts.push(Alert {
            level: AlertLevel::Critical,
            code: "IncidentOpened",
            message: format!(
                "incident opened after {streak} failing evaluations, class {class_why}. Assessment: {}",
                a.message
            ),
        });
    }

    let reason = d.next_step(tick, settings);
    d.finish(reason, a, None)
}

/// Decides after the incident's active step finished (`succeeded`: applied and verified).
/// The caller calls it for the incident's active step only. A failed step escalates at once
/// when the rules allow; a successful one waits for the target to become healthy.
pub fn on_remediation_finished(
    state: &PolicyState,
    succeeded: bool,
    tick: &Tick<'_>,
    settings: &PolicySettings,
) -> Decision {
    let a = tick.assessment;
    let mut d = Draft::new(state);
    let Some(incident) = d.state.incident.as_mut().filter(|i| i.active.is_some()) else {
        return d.finish(Reason::NoActiveStep, a, None);
    };
    let strategy = incident.active_strategy();
    incident.active = None;
    incident.last_step_failed = !succeeded;
    if succeeded {
        let reason = Reason::StepSucceeded { strategy };
        d.alert(AlertLevel::Info, &reason, a);
        return d.finish(reason, a, None);
    }
    let failed = format!(
        "{} failed",
        strategy.map_or("the step".into(), |s| s.to_string())
    );
    d.alerts.push(Alert {
        level: AlertLevel::Warning,
        code: "StepFailed",
        message: failed.clone(),
    });
    if settings.suspend {
        return d.finish(Reason::Suspended, a, Some(failed));
    }
    let reason = d.next_step(tick, settings);
    d.finish(reason, a, Some(failed))
}

/// Decides after the incident's active step was skipped as superseded: it was decided against
/// a release that no longer runs (a roll-forward came first). The incident was about that
/// release, so it closes without counting the step, and the streak starts over on the new one.
pub fn on_remediation_superseded(state: &PolicyState, tick: &Tick<'_>) -> Decision {
    let a = tick.assessment;
    let mut d = Draft::new(state);
    let Some(incident) = d.state.incident.take().filter(|i| i.active.is_some()) else {
        d.state.incident = state.incident.clone();
        return d.finish(Reason::NoActiveStep, a, None);
    };
    let reason = Reason::StepSuperseded {
        strategy: incident.active_strategy(),
    };
    d.state.failure_streak = 0;
    d.state.failing_since = None;
    d.transitions.push(Transition::IncidentClosed {
        attempts: incident.attempts,
    });
    d.alert(AlertLevel::Info, &reason, a);
    d.finish(reason, a, None)
}

/// A decision being built.
struct Draft {
    state: PolicyState,
    action: Option<Remediate>,
    alerts: Vec<Alert>,
    transitions: Vec<Transition>,
}

/// The outcome of choosing a rung.
enum Pick<'a> {
    Rung(&'a RungRule, PickRule),
    /// Untried rungs remain, none's minSeverity is met; the first of them.
    SeverityNotMet(&'a RungRule),
    /// First step: no rung answers the class.
    NoneForClass,
    /// Escalation: no untried rung after the last one.
    Exhausted,
}

fn pick<'a>(ladder: &'a [RungRule], incident: &Incident, status: HealthStatus) -> Pick<'a> {
    let untried = |r: &&RungRule| !incident.tried.contains(&r.strategy);
    let candidates: Vec<&RungRule> = match incident.tried.last() {
        None => ladder
            .iter()
            .filter(untried)
            .filter(|r| r.incidents.contains(&incident.class))
            .collect(),
        // A rung since removed from the ladder: every untried rung is "after" it.
        Some(last) => {
            let after = ladder
                .iter()
                .position(|r| r.strategy == *last)
                .map_or(0, |i| i + 1);
            ladder[after..].iter().filter(untried).collect()
        }
    };
    let Some(first) = candidates.first() else {
        return match incident.tried.last() {
            None => Pick::NoneForClass,
            Some(_) => Pick::Exhausted,
        };
    };
    match candidates.iter().find(|r| r.min_severity.is_met_by(status)) {
        None => Pick::SeverityNotMet(first),
        Some(rung) => {
            let rule = match incident.tried.last() {
                None => PickRule::FirstForClass {
                    class: incident.class,
                    min_severity: rung.min_severity,
                },
                Some(after) => PickRule::Escalation {
                    after: *after,
                    after_failed: incident.last_step_failed,
                    min_severity: rung.min_severity,
                },
            };
            Pick::Rung(rung, rule)
        }
    }
}

impl Draft {
    fn new(state: &PolicyState) -> Self {
        Self {
            state: state.clone(),
            action: None,
            alerts: vec![],
            transitions: vec![],
        }
    }

    fn finish(self, reason: Reason, a: &Assessment, prefix: Option<String>) -> Decision {
        Decision {
            state: self.state,
            action: self.action,
            alerts: self.alerts,
            transitions: self.transitions,
            explanation: Explanation::new(reason, Some(a), prefix),
        }
    }

    fn alert(&mut self, level: AlertLevel, reason: &Reason, a: &Assessment) {
        self.alerts.push(Alert {
            level,
            code: reason.code(),
            message: format!("{}. Assessment: {}", reason.sentence(), a.message),
        });
    }

    /// A new ack value is consumed; on a failed incident it closes the incident and resets
    /// the streak. Consumed either way, so an early ack cannot release a later failure.
    fn consume_ack(&mut self, ack: Option<&str>, settings: &PolicySettings) {
        let Some(ack) = ack.filter(|v| self.state.acknowledged.as_deref() != Some(*v)) else {
            return;
        };
        self.state.acknowledged = Some(ack.to_owned());
        if self.state.incident.as_ref().is_some_and(|i| i.failed) {
            self.state.incident = None;
            self.state.failure_streak = 0;
            self.state.failing_since = None;
            self.transitions.push(Transition::IncidentAcknowledged);
            self.alerts.push(Alert {
                level: AlertLevel::Info,
                code: "IncidentAcknowledged",
                message: format!(
                    "failed incident acknowledged ({}={ack}): automatic action resumes; a new incident needs {} failing evaluations",
                    annotations::ACK,
                    settings.consecutive_failures
                ),
            });
        }
    }

    /// Holds the open incident: records the explanation, alerting when it is new.
    fn hold(&mut self, reason: Reason, alert: Option<AlertLevel>, a: &Assessment) -> Reason {
        let sentence = reason.sentence();
        let incident = self.state.incident.as_mut().expect("an open incident");
        let new = incident.message.as_deref() != Some(sentence.as_str());
        incident.message = Some(sentence);
        if let (true, Some(level)) = (new, alert) {
            self.alert(level, &reason, a);
        }
        reason
    }

    /// The next step of the open incident, or why there is none.
    fn next_step(&mut self, tick: &Tick<'_>, settings: &PolicySettings) -> Reason {
        let a = tick.assessment;
        let last_automatic = self.state.last_automatic;
        let incident = self.state.incident.as_ref().expect("an open incident");
        if incident.failed {
            return Reason::FailedHold;
        }
        if incident.active.is_some() {
            let strategy = incident.active_strategy();
            return Reason::StepActive { strategy };
        }
        if let Some(event) = tick.busy {
            return Reason::Busy {
                event: event.to_owned(),
            };
        }
        if !a.conclusive {
            return Reason::Inconclusive;
        }
        if a.status == HealthStatus::Healthy {
            // The next evaluation closes the incident.
            return Reason::Healthy;
        }
        let failing = a.is_failing();
        let (attempts, max) = (incident.attempts, settings.max_attempts);
        let picked = if attempts >= max {
            Pick::Exhausted
        } else {
            pick(&settings.ladder, incident, a.status)
        };
        let alert_if_failing = failing.then_some(AlertLevel::Critical);
        let (strategy, rule) = match picked {
            Pick::Exhausted if failing => return self.fail(attempts, max, a),
            Pick::Exhausted => return self.hold(Reason::NothingLeft { attempts, max }, None, a),
            Pick::NoneForClass => {
                let (class, status) = (incident.class, a.status);
                let reason = Reason::NoRungForClass { class, status };
                return self.hold(reason, alert_if_failing, a);
            }
            Pick::SeverityNotMet(rung) => {
                let reason = Reason::SeverityNotMet {
                    strategy: rung.strategy,
                    needs: rung.min_severity,
                    status: a.status,
                };
                return self.hold(reason, alert_if_failing, a);
            }
            Pick::Rung(rung, rule) => (rung.strategy, rule),
        };

        if !settings.auto_rollback {
            let reason = Reason::AutoRollbackOff {
                would_run: strategy,
            };
            return self.hold(reason, Some(AlertLevel::Critical), a);
        }
        if let Some(last) = last_automatic.filter(|_| !incident.last_step_failed) {
            let until = last
                .saturating_add(settings.cooldown)
                .unwrap_or(Timestamp::MAX);
            if tick.now < until {
                return self.hold(Reason::Cooldown { last, until }, None, a);
            }
        }
        if let Some(hold) = tick.guard.blocking(strategy) {
            let level = match hold {
                GuardHold::Correlated(_) => AlertLevel::Critical,
                GuardHold::Frozen(_) | GuardHold::Budget { .. } => AlertLevel::Warning,
            };
            let hold = hold.clone();
            return self.hold(Reason::Guard { strategy, hold }, Some(level), a);
        }

        // Act.
        let dry_run = settings.dry_run;
        let reason = Reason::Remediate {
            strategy,
            rule,
            dry_run,
        };
        let sentence = reason.sentence();
        let incident = self.state.incident.as_mut().expect("an open incident");
        let escalated_from = incident.tried.last().copied();
        incident.tried.push(strategy);
        incident.attempts += 1;
        incident.last_step_failed = false;
        incident.active = (!dry_run).then_some(ActiveStep::Pending);
        incident.message = Some(sentence.clone());
        let class = incident.class;
        self.state.last_automatic = Some(tick.now);
        self.action = Some(Remediate {
            strategy,
            kind: EventType::Automatic,
            class: Some(class),
            reason: format!("{sentence}. Assessment: {}", a.message),
            dry_run,
            escalated_from,
        });
        let level = if dry_run {
            AlertLevel::Warning
        } else {
            AlertLevel::Critical
        };
        self.alert(level, &reason, a);
        reason
    }

    fn fail(&mut self, attempts: u32, max: u32, a: &Assessment) -> Reason {
        let reason = Reason::IncidentFailed { attempts, max };
        let incident = self.state.incident.as_mut().expect("an open incident");
        incident.failed = true;
        incident.message = Some(reason.sentence());
        let tried: Vec<&str> = incident.tried.iter().map(|s| s.as_str()).collect();
        self.transitions
            .push(Transition::IncidentFailed { attempts });
        self.alerts.push(Alert {
            level: AlertLevel::Emergency,
            code: reason.code(),
            message: format!(
                "{} (tried: {}). Assessment: {}",
                reason.sentence(),
                if tried.is_empty() {
                    "nothing".into()
                } else {
                    tried.join(", ")
                },
                a.message
            ),
        });
        reason
    }
}
