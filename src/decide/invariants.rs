//! What one engine step promises (the rules in the module docs of [`decide`](super)), checked
//! after any step on any state: by the `decide` fuzz target (`fuzzing` feature) and the
//! property tests. Each check names the rule it guards.

use jiff::{SignedDuration, Timestamp};

use super::{ActiveStep, Decision, Incident, PolicySettings, PolicyState, Tick, Transition};
use crate::api::{EventType, HealthStatus, IncidentClass};

/// Checks a [`decide`](super::decide) step from `before`.
pub fn check_decide(
    before: &PolicyState,
    tick: &Tick<'_>,
    settings: &PolicySettings,
    d: &Decision,
) -> Result<(), String> {
    let a = tick.assessment;
    let after = &d.state;
    if settings.suspend {
        ensure(after == before, "suspend changes no state")?;
        ensure(d.action.is_none(), "suspend never acts")?;
        return ensure(
            d.alerts.is_empty() && d.transitions.is_empty(),
            "suspend says nothing",
        );
    }
    // A new ack value is consumed; on a failed incident it closes it and resets the streak.
    let new_ack = tick
        .ack
        .filter(|v| before.acknowledged.as_deref() != Some(*v));
    let released = new_ack.is_some() && before.incident.as_ref().is_some_and(|i| i.failed);
    ensure(
        after.acknowledged.as_deref() == new_ack.or(before.acknowledged.as_deref()),
        "the latest ack value is remembered",
    )?;
    let base_streak = if released { 0 } else { before.failure_streak };
    let streak = match (a.conclusive, a.status) {
        (true, HealthStatus::Healthy) => 0,
        (true, HealthStatus::Critical | HealthStatus::Unhealthy) => base_streak.saturating_add(1),
        _ => base_streak,
    };
    ensure(
        after.failure_streak == streak,
        "streak: +1 on conclusive failing, 0 on healthy, held otherwise",
    )?;

    let prior = if released {
        None
    } else {
        before.incident.clone()
    };
    match (&prior, &after.incident) {
        (None, Some(opened)) => {
            ensure(
                a.is_failing(),
                "an incident opens only on a failing assessment",
            )?;
            ensure(
                streak >= settings.consecutive_failures,
                "an incident opens only on a full streak",
            )?;
            let class = a.incident_class().unwrap_or(IncidentClass::Performance);
            ensure(
                opened.class == class && opened.started_at == tick.now,
                "an incident opens now, with the assessment's class",
            )?;
            ensure(
                d.transitions
                    .contains(&Transition::IncidentOpened { class }),
                "an opened incident is announced",
            )?;
        }
        (Some(open), None) => {
            ensure(
                a.conclusive && a.status == HealthStatus::Healthy,
                "an incident closes only on a healthy assessment",
            )?;
            ensure(
                open.active.is_none(),
                "an incident with an active step stays open",
            )?;
            ensure(
                d.transitions.contains(&Transition::IncidentClosed {
                    attempts: open.attempts,
                }),
                "a closed incident is announced",
            )?;
        }
        (Some(open), Some(now)) => {
            same_incident(open, now)?;
            if open.active.is_some() {
                ensure(
                    now.active == open.active,
                    "decide never ends an active step",
                )?;
            }
        }
        (None, None) => {}
    }

    match &d.action {
        Some(_) => {
            let prior = prior.unwrap_or_else(|| {
                Incident::new(
                    a.incident_class().unwrap_or(IncidentClass::Performance),
                    tick.now,
                )
            });
            check_action(&prior, before, tick, settings, d)
        }
        None => no_action(prior.as_ref(), before, d),
    }
}

/// Checks an [`on_remediation_finished`](super::on_remediation_finished) step from `before`.
pub fn check_finished(
    before: &PolicyState,
    succeeded: bool,
    tick: &Tick<'_>,
    settings: &PolicySettings,
    d: &Decision,
) -> Result<(), String> {
    let after = &d.state;
    let Some(open) = before.incident.as_ref().filter(|i| i.active.is_some()) else {
        ensure(after == before, "without an active step nothing changes")?;
        return ensure(d.action.is_none(), "without an active step nothing runs");
    };
    ensure(
        after.failure_streak == before.failure_streak
            && after.failing_since == before.failing_since
            && after.acknowledged == before.acknowledged,
        "a finished step leaves the streak and the ack alone",
    )?;
    let Some(now) = &after.incident else {
        return Err("a finished step never closes the incident".into());
    };
    same_incident(open, now)?;
    let prior = Incident {
        active: None,
        last_step_failed: !succeeded,
        ..open.clone()
    };
    if succeeded || settings.suspend {
        ensure(d.action.is_none(), "a successful step (or suspend) waits")?;
    }
    match &d.action {
        Some(_) => check_action(&prior, before, tick, settings, d),
        None => no_action(Some(&prior), before, d),
    }
}

/// One incident across a step: its identity fixed, its history only growing.
fn same_incident(before: &Incident, after: &Incident) -> Result<(), String> {
    ensure(
        after.class == before.class && after.started_at == before.started_at,
        "an incident's class and start are fixed",
    )?;
    ensure(
        after.tried.starts_with(&before.tried) && after.attempts >= before.attempts,
        "tried rungs and attempts only grow",
    )?;
    ensure(
        !before.failed || after.failed,
        "a failed incident stays failed",
    )
}

/// No action: nothing counted as tried, the cooldown anchor kept.
fn no_action(prior: Option<&Incident>, before: &PolicyState, d: &Decision) -> Result<(), String> {
    ensure(
        d.state.last_automatic == before.last_automatic,
        "the cooldown anchor moves only with an action",
    )?;
    if let (Some(prior), Some(now)) = (prior, &d.state.incident) {
        ensure(
            now.tried == prior.tried && now.attempts == prior.attempts,
            "no attempt without an action",
        )?;
        if now.failed && !prior.failed {
            ensure(
                d.transitions.contains(&Transition::IncidentFailed {
                    attempts: now.attempts,
                }),
                "a failed incident is announced",
            )?;
        }
    }
    Ok(())
}

/// An automatic action chosen in `prior` (the incident before the step, after an ack, a
/// finished step or its opening).
fn check_action(
    prior: &Incident,
    before: &PolicyState,
    tick: &Tick<'_>,
    settings: &PolicySettings,
    d: &Decision,
) -> Result<(), String> {
    let a = tick.assessment;
    let action = d.action.as_ref().expect("an action");
    let strategy = action.strategy;
    ensure(
        tick.busy.is_none(),
        "never acts while another event is unfinished",
    )?;
    ensure(prior.active.is_none(), "one step at a time")?;
    ensure(!prior.failed, "never acts in a failed incident")?;
    ensure(settings.auto_rollback, "autoRollback: false never acts")?;
    ensure(
        a.conclusive && a.status != HealthStatus::Healthy,
        "acts only on a conclusive, unhealthy assessment",
    )?;
    ensure(
        prior.attempts < settings.max_attempts,
        "at most maxRollbackAttempts steps",
    )?;
    ensure(
        tick.guard.blocking(strategy).is_none(),
        "the blast-radius guard holds",
    )?;
    let rung = settings
        .ladder
        .iter()
        .find(|r| r.strategy == strategy)
        .ok_or("acts only with a rung of the ladder")?;
    ensure(!prior.tried.contains(&strategy), "each rung at most once")?;
    ensure(rung.min_severity.is_met_by(a.status), "minSeverity is met")?;
    let position = |s| settings.ladder.iter().position(|r| r.strategy == s);
    match prior.tried.last() {
        None => ensure(
            rung.incidents.contains(&prior.class),
            "the first step answers the incident's class",
        )?,
        Some(last) => {
            if let (Some(last), Some(this)) = (position(*last), position(strategy)) {
                ensure(this > last, "escalation only up the ladder")?;
            }
        }
    }
    ensure(
        action.escalated_from == prior.tried.last().copied(),
        "an escalation names the rung it follows",
    )?;
    if let Some(last) = before.last_automatic.filter(|_| !prior.last_step_failed) {
        let waited = tick.now.duration_since(last);
        let cooldown = SignedDuration::try_from(settings.cooldown).unwrap_or(SignedDuration::MAX);
        ensure(
            waited >= cooldown,
            "cooldown holds all but an escalation after a failed step",
        )?;
    }
    ensure(
        action.kind == EventType::Automatic && action.class == Some(prior.class),
        "an automatic step of the incident's class",
    )?;
    ensure(
        action.dry_run == settings.dry_run,
        "dryRun marks the action",
    )?;
    let Some(now) = &d.state.incident else {
        return Err("an action belongs to an open incident".into());
    };
    let mut tried = prior.tried.clone();
    tried.push(strategy);
    ensure(
        now.tried == tried && now.attempts == prior.attempts + 1,
        "an action is one more attempt of its rung",
    )?;
    let active = (!settings.dry_run).then_some(ActiveStep::Pending);
    ensure(
        now.active == active && !now.last_step_failed && !now.failed,
        "an action is the active step (none under dryRun)",
    )?;
    ensure(
        d.state.last_automatic == Some(tick.now),
        "an action anchors the cooldown now",
    )
}

fn ensure(holds: bool, rule: &str) -> Result<(), String> {
    if holds { Ok(()) } else { Err(rule.to_owned()) }
}

/// Timestamps the fuzz target and the property tests draw from: a window around 2027, wide
/// enough for any cooldown, plus the extremes.
pub fn timestamp(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000_i64.saturating_add(seconds % 10_000_000))
        .unwrap_or(Timestamp::MAX)
}
