//! What the engine remembers about a policy between decisions, and its place in
//! `RollbackPolicyStatus` (so a restarted operator carries on where it stopped).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    ConsumedTrigger, IncidentClass, IncidentStatus, RollbackPolicyStatus, StrategyKind,
};

/// The engine's memory of one policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyState {
    /// Failing evaluations in a row.
    pub failure_streak: u32,
    /// When the current streak began (the degradation start).
    pub failing_since: Option<Timestamp>,
    pub incident: Option<Incident>,
    /// When the last automatic remediation was decided (cooldown anchor).
    pub last_automatic: Option<Timestamp>,
    /// The last `rollback.frys.io/ack` value consumed.
    pub acknowledged: Option<String>,
    /// The last manual request acted on.
    pub last_trigger: Option<Trigger>,
}

/// An open incident.
#[derive(Clone, Debug, PartialEq)]
pub struct Incident {
    pub class: IncidentClass,
    pub started_at: Timestamp,
    /// Remediations decided in this incident (dry-run ones included).
    pub attempts: u32,
    /// Rungs tried, in order; the active step is the last one.
    pub tried: Vec<StrategyKind>,
    pub active: Option<ActiveStep>,
    /// The last step failed verification: the next escalates without waiting for cooldown.
    pub last_step_failed: bool,
    /// Attempts used up: automatic action holds until healthy or acknowledged.
    pub failed: bool,
    /// The latest explanation; a hold alerts only when it changes.
    pub message: Option<String>,
}

impl Incident {
    pub fn new(class: IncidentClass, started_at: Timestamp) -> Self {
        Self {
            class,
            started_at,
            attempts: 0,
            tried: vec![],
            active: None,
            last_step_failed: false,
            failed: false,
            message: None,
        }
    }

    /// The rung of the active step.
    pub fn active_strategy(&self) -> Option<StrategyKind> {
        self.active.as_ref().and(self.tried.last().copied())
    }

    /// The RollbackEvent of the active step, once created.
    pub fn active_event(&self) -> Option<&str> {
        match &self.active {
            Some(ActiveStep::Event(e)) => Some(e),
            _ => None,
        }
    }
}

/// The remediation in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActiveStep {
    /// Decided; its RollbackEvent is not created yet (see [`PolicyState::attach_event`]).
    Pending,
    /// Running as this RollbackEvent.
    Event(String),
}

/// A manual request that was acted on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    pub value: String,
    pub at: Timestamp,
}

impl PolicyState {
    /// Names the RollbackEvent created for the pending step. Call it before writing the state
    /// to status: a pending step has no name there, so it would be forgotten.
    pub fn attach_event(&mut self, name: impl Into<String>) {
        if let Some(incident) = self.incident.as_mut().filter(|i| i.active.is_some()) {
            incident.active = Some(ActiveStep::Event(name.into()));
        }
    }

    /// The state recorded in a policy's status.
    pub fn from_status(status: &RollbackPolicyStatus) -> Self {
        Self {
            failure_streak: status.failure_streak.unwrap_or(0),
            failing_since: status.failing_since.as_ref().map(|t| t.0),
            incident: status.incident.as_ref().map(|i| Incident {
                class: i.class,
                started_at: i.started_at.0,
                attempts: i.attempts,
                tried: i.tried.clone(),
                active: i.active_event.clone().map(ActiveStep::Event),
                last_step_failed: i.last_step_failed,
                failed: i.failed,
                message: i.message.clone(),
            }),
            last_automatic: status.last_automatic_remediation.as_ref().map(|t| t.0),
            acknowledged: status.acknowledged.clone(),
            last_trigger: status.last_trigger.as_ref().map(|t| Trigger {
                value: t.value.clone(),
                at: t.time.0,
            }),
        }
    }

    /// Writes the state into a policy's status, leaving its other fields alone.
    pub fn write_to(&self, status: &mut RollbackPolicyStatus) {
        status.failure_streak = Some(self.failure_streak);
        status.failing_since = self.failing_since.map(Time);
        status.incident = self.incident.as_ref().map(|i| IncidentStatus {
            class: i.class,
            started_at: Time(i.started_at),
            attempts: i.attempts,
            tried: i.tried.clone(),
            active_event: match &i.active {
                Some(ActiveStep::Event(name)) => Some(name.clone()),
                Some(ActiveStep::Pending) | None => None,
            },
            last_step_failed: i.last_step_failed,
            failed: i.failed,
            message: i.message.clone(),
        });
        status.last_automatic_remediation = self.last_automatic.map(Time);
        status.acknowledged = self.acknowledged.clone();
        status.last_trigger = self.last_trigger.as_ref().map(|t| ConsumedTrigger {
            value: t.value.clone(),
            time: Time(t.at),
        });
    }
}
