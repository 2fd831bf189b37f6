//! Manual triggers and emergencies (annotations, CLI), decided by the same engine.
//!
//! Rules (DESIGN.md "Decisions"):
//! - `suspend` refuses everything; the request is left unconsumed (it waits like the policy).
//! - The same request (strategy or emergency, and reason) consumed less than `cooldown` ago is
//!   recognised and not repeated, so a GitOps tool re-adding an annotation does not fire twice.
//!   This applies to emergencies too: it recognises a request, it is not a gate.
//! - A trigger bypasses cooldown, `autoRollback: false`, a failed incident and the blast-radius
//!   guard; it respects `dryRun`, and waits (unconsumed) while another step is active.
//! - A strategy outside the ladder runs only if it needs no parameters.
//! - An emergency bypasses everything but `suspend`: it runs while other steps are active and
//!   is never a dry run (a person asked to stop the workload now).
//! - Manual steps do not count in the incident's attempts or tried rungs: those are the
//!   automatic ladder's bookkeeping.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::{Alert, Explanation, PolicySettings, PolicyState, Reason, Remediate, Trigger};
use crate::{
    api::{AlertLevel, EventType, StrategyKind, annotations as keys},
    assess::Assessment,
};

/// What a person asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManualRequest {
    Trigger {
        strategy: StrategyKind,
        reason: Option<String>,
    },
    Emergency {
        reason: String,
    },
}

/// A manual request in annotations: an emergency wins over a trigger. Err for a value that
/// is not a strategy.
pub fn manual_request(
    annotations: &BTreeMap<String, String>,
) -> Option<Result<ManualRequest, String>> {
    if let Some(reason) = annotations.get(keys::EMERGENCY) {
        let reason = if reason.trim().is_empty() {
            "emergency".to_string()
        } else {
            reason.clone()
        };
        return Some(Ok(ManualRequest::Emergency { reason }));
    }
    let value = annotations.get(keys::TRIGGER)?;
    Some(
        value
            .parse::<StrategyKind>()
            .map(|strategy| ManualRequest::Trigger {
                strategy,
                reason: annotations.get(keys::REASON).cloned(),
            })
            .map_err(|e| e.to_string()),
    )
}

/// The acknowledgement annotated on the policy, or else on its Deployment.
pub fn acknowledgement<'a>(
    policy: &'a BTreeMap<String, String>,
    target: Option<&'a BTreeMap<String, String>>,
) -> Option<&'a str> {
    policy
        .get(keys::ACK)
        .or_else(|| target.and_then(|t| t.get(keys::ACK)))
        .map(String::as_str)
}

impl ManualRequest {
    pub fn kind(&self) -> EventType {
        match self {
            Self::Trigger { .. } => EventType::Manual,
            Self::Emergency { .. } => EventType::Emergency,
        }
    }

    pub fn strategy(&self) -> StrategyKind {
        match self {
            Self::Trigger { strategy, .. } => *strategy,
            Self::Emergency { .. } => StrategyKind::EmergencyShutdown,
        }
    }

    /// The request's identity, recorded when consumed.
    pub fn fingerprint(&self) -> String {
        match self {
            Self::Trigger { strategy, reason } => {
                format!(
                    "trigger={strategy} reason={}",
                    reason.as_deref().unwrap_or("")
                )
            }
            Self::Emergency { reason } => format!("emergency reason={reason}"),
        }
    }

    fn reason(&self) -> String {
        match self {
            Self::Trigger {
                reason: Some(reason),
                ..
            }
            | Self::Emergency { reason } => reason.clone(),
            Self::Trigger { strategy, .. } => format!("manual {strategy}"),
        }
    }
}

/// The result of a manual request.
#[derive(Clone, Debug, PartialEq)]
pub struct ManualDecision {
    pub state: PolicyState,
    pub action: Option<Remediate>,
    /// The request is settled (run, refused or recognised as a repeat); otherwise it waits.
    pub consumed: bool,
    pub alerts: Vec<Alert>,
    pub explanation: Explanation,
}

/// Decides a manual request. `assessment` (the latest, if any) gives the class and evidence;
/// `busy` names an unfinished RollbackEvent of the policy, if any.
pub fn decide_manual(
    state: &PolicyState,
    request: &ManualRequest,
    settings: &PolicySettings,
    assessment: Option<&Assessment>,
    busy: Option<&str>,
    now: Timestamp,
) -> ManualDecision {
    let outcome = |state: &PolicyState, consumed, reason: Reason, alerts| ManualDecision {
        state: state.clone(),
        action: None,
        consumed,
        alerts,
        explanation: Explanation::new(reason, assessment, None),
    };
    let emergency = request.kind() == EventType::Emergency;
    let strategy = request.strategy();

    if settings.suspend {
        return outcome(state, false, Reason::Suspended, vec![]);
    }
    let fingerprint = request.fingerprint();
    if let Some(last) = state
        .last_trigger
        .as_ref()
        .filter(|t| t.value == fingerprint)
    {
        let until = last
            .at
            .saturating_add(settings.cooldown)
            .unwrap_or(Timestamp::MAX);
        if now < until {
            let reason = Reason::DuplicateTrigger {
                consumed_at: last.at,
            };
            return outcome(state, true, reason, vec![]);
        }
    }
    if !settings.in_ladder(strategy) && !strategy.needs_no_parameters() {
        let reason = Reason::NotInLadder { strategy };
        let alert = Alert {
            level: AlertLevel::Warning,
            code: reason.code(),
            message: format!("manual request refused: {}", reason.sentence()),
        };
        return outcome(state, true, reason, vec![alert]);
    }
    if !emergency {
        let active = state
            .incident
            .as_ref()
            .filter(|i| i.active.is_some())
            .map(|i| i.active_strategy());
        if let Some(strategy) = active {
            return outcome(state, false, Reason::StepActive { strategy }, vec![]);
        }
        if let Some(event) = busy {
            let reason = Reason::Busy {
                event: event.to_owned(),
            };
            return outcome(state, false, reason, vec![]);
        }
    }

    let dry_run = settings.dry_run && !emergency;
    let kind = request.kind();
    let reason = Reason::ManualRun {
        strategy,
        kind,
        dry_run,
    };
    let mut next = state.clone();
    next.last_trigger = Some(Trigger {
        value: fingerprint,
        at: now,
    });
    let level = match (emergency, dry_run) {
        (true, _) => AlertLevel::Emergency,
        (false, true) => AlertLevel::Info,
        (false, false) => AlertLevel::Warning,
    };
    let alert = Alert {
        level,
        code: reason.code(),
        message: format!("{}: {}", reason.sentence(), request.reason()),
    };
    let class = assessment
        .and_then(Assessment::incident_class)
        .or(state.incident.as_ref().map(|i| i.class));
    ManualDecision {
        state: next,
        action: Some(Remediate {
            strategy,
            kind,
            class,
            reason: request.reason(),
            dry_run,
            escalated_from: None,
        }),
        consumed: true,
        alerts: vec![alert],
        explanation: Explanation::new(reason, assessment, None),
    }
}
