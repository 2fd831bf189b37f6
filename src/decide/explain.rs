//! Why the engine decided what it did: the rule and the evidence it looked at ([`Reason`]), as
//! data and as a sentence, and the short reason a RollbackEvent shows.

use jiff::Timestamp;

use super::{GuardHold, Remediate};
use crate::{
    api::{
        EventType, HealthStatus, IncidentClass, Issue, MetricSeverity, MinSeverity, StrategyKind,
        annotations,
    },
    assess::Assessment,
};

/// How a rung was chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum PickRule {
    /// The first untried rung answering the incident's class.
    FirstForClass {
        class: IncidentClass,
        min_severity: MinSeverity,
    },
    /// The next untried rung after the last one tried.
    Escalation {
        after: StrategyKind,
        after_failed: bool,
        min_severity: MinSeverity,
    },
}

/// Which rule decided, with the values it looked at.
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    Suspended,
    Healthy,
    Inconclusive,
    /// Warning, no incident.
    Watching,
    /// Failing, streak below `consecutiveFailures`.
    Streak {
        streak: u32,
        needed: u32,
    },
    /// Healthy again: the incident closed.
    IncidentClosed {
        attempts: u32,
    },
    /// Healthy, but a step is still active: the incident closes after it finishes.
    Recovering,
    StepActive {
        strategy: Option<StrategyKind>,
    },
    Busy {
        event: String,
    },
    /// The incident failed in this decision.
    IncidentFailed {
        attempts: u32,
        max: u32,
    },
    /// The incident failed earlier: waiting for Healthy or an ack.
    FailedHold,
    /// Not failing now, but nothing is left to try: waiting for Healthy.
    NothingLeft {
        attempts: u32,
        max: u32,
    },
    NoRungForClass {
        class: IncidentClass,
        status: HealthStatus,
    },
    SeverityNotMet {
        strategy: StrategyKind,
        needs: MinSeverity,
        status: HealthStatus,
    },
    AutoRollbackOff {
        would_run: StrategyKind,
    },
    Cooldown {
        last: Timestamp,
        until: Timestamp,
    },
    Guard {
        strategy: StrategyKind,
        hold: GuardHold,
    },
    Remediate {
        strategy: StrategyKind,
        rule: PickRule,
        dry_run: bool,
    },
    StepSucceeded {
        strategy: Option<StrategyKind>,
    },
    /// The active step was decided against a release that is no longer running.
    StepSuperseded {
        strategy: Option<StrategyKind>,
    },
    /// A remediation finished that was not this incident's active step.
    NoActiveStep,
    // Manual requests (see `decide_manual`).
    ManualRun {
        strategy: StrategyKind,
        kind: EventType,
        dry_run: bool,
    },
    DuplicateTrigger {
        consumed_at: Timestamp,
    },
    NotInLadder {
        strategy: StrategyKind,
    },
}

impl Reason {
    /// PascalCase code for condition reasons and alerts.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Suspended => "Suspended",
            Self::Healthy => "Healthy",
            Self::Inconclusive => "Inconclusive",
            Self::Watching => "Watching",
            Self::Streak { .. } => "FailureStreak",
            Self::IncidentClosed { .. } => "IncidentClosed",
            Self::Recovering => "Recovering",
            Self::StepActive { .. } => "StepActive",
            Self::Busy { .. } => "Busy",
            Self::IncidentFailed { .. } => "IncidentFailed",
            Self::FailedHold => "IncidentFailedHold",
            Self::NothingLeft { .. } => "NothingLeftToTry",
            Self::NoRungForClass { .. } => "NoRungForClass",
            Self::SeverityNotMet { .. } => "SeverityNotMet",
            Self::AutoRollbackOff { .. } => "AutoRollbackOff",
            Self::Cooldown { .. } => "Cooldown",
            Self::Guard {
                hold: GuardHold::Frozen(_),
                ..
            } => "Frozen",
            Self::Guard {
                hold: GuardHold::Budget { .. },
                ..
            } => "BudgetExhausted",
            Self::Guard {
                hold: GuardHold::Correlated(_),
                ..
            } => "CorrelatedFailure",
            Self::Remediate { dry_run: true, .. } => "DryRunRemediation",
            Self::Remediate { .. } => "Remediating",
            Self::StepSucceeded { .. } => "StepSucceeded",
            Self::StepSuperseded { .. } => "StepSuperseded",
            Self::NoActiveStep => "NoActiveStep",
            Self::ManualRun {
                kind: EventType::Emergency,
                ..
            } => "Emergency",
            Self::ManualRun { .. } => "ManualTrigger",
            Self::DuplicateTrigger { .. } => "DuplicateTrigger",
            Self::NotInLadder { .. } => "NotInLadder",
        }
    }

    /// The rule, in words.
    pub fn sentence(&self) -> String {
        let or_none = |s: &Option<StrategyKind>| s.map_or("a step".into(), |s| s.to_string());
        match self {
            Self::Suspended => "the policy is suspended: nothing is evaluated or done".into(),
            Self::Healthy => "healthy".into(),
            Self::Inconclusive => "inconclusive: no signal could be judged, nothing changes".into(),
            Self::Watching => "warning: watching, the failure streak holds".into(),
            Self::Streak { streak, needed } => {
                format!("failing {streak} of {needed} evaluations in a row needed for an incident")
            }
            Self::IncidentClosed { attempts } => {
                format!("healthy again: the incident closed after {attempts} remediation(s)")
            }
            Self::Recovering => {
                "healthy: the incident closes once its active step has finished".into()
            }
            Self::StepActive { strategy } => {
                format!(
                    "waiting: {} of this incident is in progress",
                    or_none(strategy)
                )
            }
            Self::Busy { event } => format!("waiting: remediation {event} is in progress"),
            Self::IncidentFailed { attempts, max } => format!(
                "the incident failed: {attempts} of {max} attempts made and nothing left to try; automatic action stops until the target is healthy or a person annotates {}",
                annotations::ACK
            ),
            Self::FailedHold => format!(
                "the incident failed: automatic action is held until the target is healthy or a person annotates {}",
                annotations::ACK
            ),
            Self::NothingLeft { attempts, max } => format!(
                "{attempts} of {max} attempts made and nothing left to try: waiting for the target to become healthy"
            ),
            Self::NoRungForClass { class, status } => format!(
                "no rung of the ladder answers {class} incidents at status {status}: act manually or add a rung"
            ),
            Self::SeverityNotMet {
                strategy,
                needs,
                status,
            } => format!(
                "holding: the next rung, {strategy}, needs status {needs} and the status is {status}"
            ),
            Self::AutoRollbackOff { would_run } => {
                format!("autoRollback is off: {would_run} would run; assessing and alerting only")
            }
            Self::Cooldown { last, until } => format!(
                "cooldown: the last automatic remediation was at {last}; the next may start at {until}"
            ),
            Self::Guard { strategy, hold } => format!("{strategy} is held: {}", hold.sentence()),
            Self::Remediate {
                strategy,
                rule,
                dry_run,
            } => {
                let why = match rule {
                    PickRule::FirstForClass {
                        class,
                        min_severity,
                    } => format!(
                        "the first rung for {class} incidents (minSeverity {min_severity} met)"
                    ),
                    PickRule::Escalation {
                        after,
                        after_failed,
                        min_severity,
                    } => format!(
                        "escalating: the next untried rung after {after}, which {} (minSeverity {min_severity} met)",
                        if *after_failed {
                            "failed verification"
                        } else {
                            "did not keep the target healthy"
                        }
                    ),
                };
                let verb = if *dry_run {
                    "dry run: would run"
                } else {
                    "running"
                };
                format!("{verb} {strategy}, {why}")
            }
            Self::StepSucceeded { strategy } => format!(
                "{} passed verification; the incident closes when the target is healthy",
                or_none(strategy)
            ),
            Self::StepSuperseded { strategy } => format!(
                "{} was not applied: the target runs another release than the one judged bad; \
                 the incident closes and the new release is judged afresh",
                or_none(strategy)
            ),
            Self::NoActiveStep => "no active step of an incident finished: nothing to do".into(),
            Self::ManualRun {
                strategy,
                kind,
                dry_run,
            } => format!(
                "{} {} {strategy} as requested",
                if *dry_run {
                    "dry run: would run"
                } else {
                    "running"
                },
                match kind {
                    EventType::Automatic => "automatic",
                    EventType::Manual => "manual",
                    EventType::Emergency => "emergency",
                    EventType::Drill => "drill",
                }
            ),
            Self::DuplicateTrigger { consumed_at } => format!(
                "the same request was consumed at {consumed_at}, within cooldown: not repeated"
            ),
            Self::NotInLadder { strategy } => format!(
                "{strategy} is not in the ladder and needs parameters: only VersionRollback and EmergencyShutdown may run outside it"
            ),
        }
    }
}

/// A decision's explanation: the rule, the evidence it looked at, and a sentence.
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    pub reason: Reason,
    /// The assessment's issues: which value crossed which threshold.
    pub evidence: Vec<Issue>,
    pub message: String,
}

impl Explanation {
    pub(super) fn new(
        reason: Reason,
        assessment: Option<&Assessment>,
        prefix: Option<String>,
    ) -> Self {
        let mut message = prefix.map(|p| p + "; ").unwrap_or_default() + &reason.sentence();
        if let Some(a) = assessment {
            message = format!("{message}. Assessment: {}", a.message);
        }
        Self {
            evidence: assessment.map(|a| a.issues()).unwrap_or_default(),
            reason,
            message,
        }
    }
}

/// A reason short enough for the REASON column: the incident class and the worst breach, e.g.
/// `Release: errors 0.3 > 0.05`. The full explanation is in the Event and the logs.
pub fn short_reason(action: &Remediate, assessment: &Assessment) -> String {
    let issue = assessment
        .issues()
        .into_iter()
        .max_by_key(|i| i.severity == MetricSeverity::Critical);
    let breach = issue.map(|i| match (i.value, i.threshold) {
        (Some(v), Some(t)) => format!(
            "{} {} beyond {}",
            i.metric,
            crate::units::num(v),
            crate::units::num(t)
        ),
        _ => format!("{} {}", i.metric, i.severity),
    });
    let class = action.class.map(|c| c.to_string());
    match (class, breach) {
        (Some(c), Some(b)) => format!("{c}: {b}"),
        (Some(c), None) => c,
        (None, Some(b)) => b,
        (None, None) => action.reason.chars().take(120).collect(),
    }
}
