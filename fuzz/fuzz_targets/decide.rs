//! The engine's step function: from an arbitrary state, settings and ticks, a run of
//! `decide` and `on_remediation_finished` steps (the state carried from one to the next),
//! each checked against the rules of the engine's docs (`decide::invariants`): streak bounds,
//! no action while busy or while a step is active, escalation only up the ladder, each rung
//! once, attempt limit, cooldown, guard, suspend.
#![no_main]

use std::time::Duration;

use arbitrary::{Arbitrary, Result, Unstructured};
use frys_rollback::{
    api::{HealthStatus, IncidentClass, MinSeverity, StrategyKind},
    assess::{Assessment, ClassRule, Classification, StatusRule},
    decide::{
        ActiveStep, CommonCause, FreezeSource, GuardHold, GuardVerdict, Incident, PolicySettings,
        PolicyState, RungRule, Tick, decide, invariants, on_remediation_finished,
    },
};
use jiff::Timestamp;
use libfuzzer_sys::fuzz_target;

fn pick<T: Copy>(u: &mut Unstructured<'_>, all: &[T]) -> Result<T> {
    Ok(*u.choose(all)?)
}

fn stamp(u: &mut Unstructured<'_>) -> Result<Timestamp> {
    Ok(invariants::timestamp(i64::from(u.arbitrary::<i32>()?)))
}

fn strategies(u: &mut Unstructured<'_>) -> Result<Vec<StrategyKind>> {
    let mut all = StrategyKind::ALL.to_vec();
    let mut out = vec![];
    while !all.is_empty() && u.arbitrary()? {
        out.push(all.remove(u.choose_index(all.len())?));
    }
    Ok(out)
}

fn incident(u: &mut Unstructured<'_>) -> Result<Incident> {
    Ok(Incident {
        class: pick(u, IncidentClass::ALL)?,
        started_at: stamp(u)?,
        attempts: u.int_in_range(0..=8)?,
        tried: strategies(u)?,
        active: match u.int_in_range(0..=2)? {
            0 => None,
            1 => Some(ActiveStep::Pending),
            _ => Some(ActiveStep::Event("ev-1".into())),
        },
        last_step_failed: u.arbitrary()?,
        failed: u.arbitrary()?,
        message: u.arbitrary::<Option<bool>>()?.map(|b| format!("held {b}")),
    })
}

fn state(u: &mut Unstructured<'_>) -> Result<PolicyState> {
    Ok(PolicyState {
        failure_streak: if u.arbitrary()? {
            u.int_in_range(0..=8)?
        } else {
            u.arbitrary()?
        },
        failing_since: if u.arbitrary()? {
            Some(stamp(u)?)
        } else {
            None
        },
        incident: if u.arbitrary()? {
            Some(incident(u)?)
        } else {
            None
        },
        last_automatic: if u.arbitrary()? {
            Some(stamp(u)?)
        } else {
            None
        },
        acknowledged: ack(u)?,
        last_trigger: None,
    })
}

fn ack(u: &mut Unstructured<'_>) -> Result<Option<String>> {
    Ok(match u.int_in_range(0..=3)? {
        0 | 1 => None,
        n => Some(format!("ack-{n}")),
    })
}

fn settings(u: &mut Unstructured<'_>) -> Result<PolicySettings> {
    let mut ladder = vec![];
    for strategy in strategies(u)? {
        let mut incidents = vec![];
        for class in IncidentClass::ALL {
            if u.arbitrary()? {
                incidents.push(*class);
            }
        }
        ladder.push(RungRule {
            strategy,
            incidents,
            min_severity: pick(u, MinSeverity::ALL)?,
        });
    }
    Ok(PolicySettings {
        consecutive_failures: u.int_in_range(1..=5)?,
        ladder,
        max_attempts: u.int_in_range(0..=6)?,
        cooldown: Duration::from_secs(match u.int_in_range(0..=3)? {
            0 => 0,
            1 => u.int_in_range(0..=3600)?,
            2 => u.arbitrary::<u32>()?.into(),
            _ => u64::MAX,
        }),
        auto_rollback: u.ratio(7, 8)?,
        dry_run: u.ratio(1, 4)?,
        suspend: u.ratio(1, 8)?,
    })
}

fn assessment(u: &mut Unstructured<'_>, now: Timestamp) -> Result<Assessment> {
    Ok(Assessment {
        status: pick(u, HealthStatus::ALL)?,
        status_rule: StatusRule::WorstSignal,
        conclusive: u.ratio(4, 5)?,
        score: 50.0,
        metrics: vec![],
        class: if u.arbitrary()? {
            Some(Classification {
                class: pick(u, IncidentClass::ALL)?,
                rule: ClassRule::Default,
            })
        } else {
            None
        },
        evaluated_at: now,
        message: "assessed".into(),
    })
}

fn guard(u: &mut Unstructured<'_>) -> Result<GuardVerdict> {
    let mut holds = vec![];
    // Bounded: an exhausted input answers every ratio with true.
    for _ in 0..u.int_in_range(0..=2)? {
        holds.push(match u.int_in_range(0..=3)? {
            0 => GuardHold::Frozen(FreezeSource::Operator),
            1 => GuardHold::Frozen(FreezeSource::Namespace),
            2 => GuardHold::Budget {
                active: 3,
                budget: 3,
            },
            _ => GuardHold::Correlated(CommonCause::SharedDependency {
                signal: "db".into(),
                policies: vec!["a/b".into(), "a/c".into()],
            }),
        });
    }
    Ok(GuardVerdict { holds })
}

/// The state and settings, then steps until the input runs out.
struct Run {
    state: PolicyState,
    settings: PolicySettings,
    now: Timestamp,
    unstructured: Vec<u8>,
}

impl<'a> Arbitrary<'a> for Run {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Run {
            state: state(u)?,
            settings: settings(u)?,
            now: stamp(u)?,
            unstructured: u.bytes(u.len())?.to_vec(),
        })
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:#?}\n{:#?}\nnow {}",
            self.state, self.settings, self.now
        )
    }
}

fuzz_target!(|run: Run| {
    let Run {
        mut state,
        settings,
        mut now,
        unstructured,
    } = run;
    let mut u = Unstructured::new(&unstructured);
    for _ in 0..64 {
        let Ok((a, g, ack, busy, finished, wait)) = (|| -> Result<_> {
            Ok((
                assessment(&mut u, now)?,
                guard(&mut u)?,
                ack(&mut u)?,
                u.ratio(1, 6)?,
                // None: an evaluation; Some(ok): the active step finished.
                if u.ratio(1, 4)? {
                    Some(u.arbitrary::<bool>()?)
                } else {
                    None
                },
                u.int_in_range(0..=900u32)?,
            ))
        })() else {
            break;
        };
        let tick = Tick {
            assessment: &a,
            now,
            guard: &g,
            ack: ack.as_deref(),
            busy: busy.then_some("manual-1"),
        };
        let (d, checked) = match finished {
            None => {
                let d = decide(&state, &tick, &settings);
                let checked = invariants::check_decide(&state, &tick, &settings, &d);
                (d, checked)
            }
            Some(ok) => {
                let d = on_remediation_finished(&state, ok, &tick, &settings);
                let checked = invariants::check_finished(&state, ok, &tick, &settings, &d);
                (d, checked)
            }
        };
        if let Err(rule) = checked {
            panic!(
                "broken rule: {rule}\nbefore: {state:#?}\ntick: {tick:#?}\nsettings: {settings:#?}\ndecision: {d:#?}"
            );
        }
        state = d.state;
        // The caller names the event of a pending step before the next decision.
        state.attach_event("ev-2");
        now = now
            .checked_add(jiff::SignedDuration::from_secs(wait.into()))
            .unwrap_or(now);
    }
});
