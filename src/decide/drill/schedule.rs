//! When a drill is due, whether it may run here, and what it waits for. Pure: data in, data
//! out (the time zone is resolved by the caller, the clock is a parameter).

use std::str::FromStr as _;

use croner::Cron;
use jiff::{Timestamp, tz::TimeZone};

use crate::api::{IncidentStatus, StrategyKind, labels};

/// A parsed `spec.schedule` in its time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    tz: TimeZone,
}

/// A schedule that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("spec.schedule {schedule:?} is not a cron expression: {message}")]
pub struct ScheduleError {
    pub schedule: String,
    pub message: String,
}

impl Schedule {
    /// Five fields, or six with seconds first, and the `@daily`-style nicknames (croner).
    pub fn parse(schedule: &str, tz: TimeZone) -> Result<Self, ScheduleError> {
        Cron::from_str(schedule)
            .map(|cron| Self { cron, tz })
            .map_err(|e| ScheduleError {
                schedule: schedule.to_owned(),
                message: e.to_string(),
            })
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_next_occurrence(&t.to_zoned(self.tz.clone()), false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The latest slot at or before `t`.
    fn latest_until(&self, t: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_previous_occurrence(&t.to_zoned(self.tz.clone()), true)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The slot to run now: the latest in (`since`, `now`]. Slots missed while a drill waited
    /// or the operator was down fold into that one (a drill never runs twice to catch up).
    pub fn due(&self, since: Timestamp, now: Timestamp) -> Option<Timestamp> {
        self.latest_until(now).filter(|slot| *slot > since)
    }
}

/// Why a condition is what it is: reason (CamelCase) and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Why {
    pub reason: &'static str,
    pub message: String,
}

impl Why {
    fn new(reason: &'static str, message: String) -> Self {
        Self { reason, message }
    }
}

/// Drills run only where the operator was told they are safe: its `--allow-drills` flag and
/// the namespace's `rollback.frys.io/drills=enabled` label. The refusal names what is missing.
pub fn allowed(operator_allows: bool, namespace: &str, label: Option<&str>) -> Result<(), Why> {
    let labelled = label == Some(labels::DRILLS_ENABLED);
    let flag = "the operator runs without --allow-drills (Helm value operator.allowDrills)";
    let mark = format!(
        "namespace {namespace} is not labelled {}={}",
        labels::DRILLS,
        labels::DRILLS_ENABLED
    );
    match (operator_allows, labelled) {
        (true, true) => Ok(()),
        (false, true) => Err(Why::new(
            "OperatorDisallowsDrills",
            format!("{flag}; nothing was applied"),
        )),
        (true, false) => Err(Why::new(
            "NamespaceNotDrillSafe",
            format!("{mark}; nothing was applied"),
        )),
        (false, false) => Err(Why::new(
            "DrillsNotAllowed",
            format!("{flag}, and {mark}; nothing was applied"),
        )),
    }
}

/// What else is happening on the policy when a drill is due.
#[derive(Clone, Debug, Default)]
pub struct PolicyActivity<'a> {
    pub policy: &'a str,
    /// `spec.suspend` of the policy: its events are held, so a drill's would hang.
    pub suspended: bool,
    /// The policy's open incident.
    pub incident: Option<&'a IncidentStatus>,
    /// Unfinished RollbackEvents of the policy that are not this drill's.
    pub unfinished_events: Vec<&'a str>,
    /// Other RollbackDrills of the policy with a run in progress.
    pub running_drills: Vec<&'a str>,
}

/// Why a due drill must wait, if it must. A drill never starts during an incident or while
/// another remediation (or drill) of the same policy runs: it waits and runs once clear.
pub fn wait_for(activity: &PolicyActivity) -> Option<Why> {
    let policy = activity.policy;
    if let Some(incident) = activity.incident {
        return Some(Why::new(
            "IncidentOpen",
            format!(
                "policy {policy} has an open {} incident (since {}): the drill runs once it closes",
                incident.class, incident.started_at.0
            ),
        ));
    }
    if let Some(event) = activity.unfinished_events.first() {
        return Some(Why::new(
            "RemediationRunning",
            format!(
                "RollbackEvent {event} of policy {policy} has not finished: the drill runs after it"
            ),
        ));
    }
    if let Some(drill) = activity.running_drills.first() {
        return Some(Why::new(
            "DrillRunning",
            format!("RollbackDrill {drill} is running on policy {policy}: the drill runs after it"),
        ));
    }
    if activity.suspended {
        return Some(Why::new(
            "PolicySuspended",
            format!("policy {policy} is suspended: the drill runs once it resumes"),
        ));
    }
    None
}

/// The strategies a drill names that the policy's ladder lacks (they cannot be exercised:
/// a rung's parameters live in the ladder).
pub fn missing_rungs(drill: &[StrategyKind], ladder: &[StrategyKind]) -> Vec<StrategyKind> {
    drill
        .iter()
        .copied()
        .filter(|s| !ladder.contains(s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::IncidentClass;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn utc(cron: &str) -> Schedule {
        Schedule::parse(cron, TimeZone::UTC).unwrap()
    }

    #[test]
    fn next_slot_of_five_and_six_field_schedules() {
        let daily = utc("0 3 * * *");
        assert_eq!(
            daily.next_after(at("2026-12-01T10:00:00Z")),
            Some(at("2026-12-02T03:00:00Z"))
        );
        // Exactly on a slot: the next one, not the same.
        assert_eq!(
            daily.next_after(at("2026-12-02T03:00:00Z")),
            Some(at("2026-12-03T03:00:00Z"))
        );
        let every_ten_seconds = utc("*/10 * * * * *");
        assert_eq!(
            every_ten_seconds.next_after(at("2026-12-01T10:00:01Z")),
            Some(at("2026-12-01T10:00:10Z"))
        );
        assert_eq!(
            utc("@hourly").next_after(at("2026-12-01T10:20:00Z")),
            Some(at("2026-12-01T11:00:00Z"))
        );
    }

    #[test]
    fn a_time_zone_moves_the_slot() {
        let tz = TimeZone::get("Europe/Stockholm").unwrap();
        let stockholm = Schedule::parse("0 3 * * *", tz).unwrap();
        // 03:00 in Stockholm in December (UTC+1) is 02:00 UTC.
        assert_eq!(
            stockholm.next_after(at("2026-12-01T10:00:00Z")),
            Some(at("2026-12-02T02:00:00Z"))
        );
    }

    #[test]
    fn bad_schedules_are_refused_with_the_pattern() {
        for bad in ["61 * * * *", "* * *", "every day", "0 3 * * * * * *"] {
            let error = Schedule::parse(bad, TimeZone::UTC).unwrap_err();
            assert_eq!(error.schedule, bad);
            assert!(error.to_string().contains(bad), "{error}");
        }
    }

    #[test]
    fn due_is_the_latest_slot_since_the_last_one_handled() {
        let s = utc("*/10 * * * * *");
        let since = at("2026-12-01T10:00:00Z");
        assert_eq!(s.due(since, at("2026-12-01T10:00:09Z")), None);
        assert_eq!(
            s.due(since, at("2026-12-01T10:00:10Z")),
            Some(at("2026-12-01T10:00:10Z"))
        );
        // Three slots missed while waiting: one run, for the latest.
        assert_eq!(
            s.due(since, at("2026-12-01T10:00:35Z")),
            Some(at("2026-12-01T10:00:30Z"))
        );
        // The handled slot is not due again.
        assert_eq!(
            s.due(at("2026-12-01T10:00:30Z"), at("2026-12-01T10:00:35Z")),
            None
        );
        // A drill created after today's slot waits for tomorrow's.
        let daily = utc("0 3 * * *");
        assert_eq!(
            daily.due(at("2026-12-01T10:00:00Z"), at("2026-12-01T10:05:00Z")),
            None
        );
    }

    #[test]
    fn drills_need_the_flag_and_the_label_and_say_which_is_missing() {
        assert_eq!(allowed(true, "shop", Some("enabled")), Ok(()));
        let no_flag = allowed(false, "shop", Some("enabled")).unwrap_err();
        assert_eq!(no_flag.reason, "OperatorDisallowsDrills");
        assert!(no_flag.message.contains("--allow-drills"), "{no_flag:?}");
        for label in [None, Some("true"), Some("disabled")] {
            let no_label = allowed(true, "shop", label).unwrap_err();
            assert_eq!(no_label.reason, "NamespaceNotDrillSafe");
            assert!(
                no_label
                    .message
                    .contains("namespace shop is not labelled rollback.frys.io/drills=enabled"),
                "{no_label:?}"
            );
        }
        let neither = allowed(false, "shop", None).unwrap_err();
        assert_eq!(neither.reason, "DrillsNotAllowed");
        assert!(
            neither.message.contains("--allow-drills") && neither.message.contains("labelled"),
            "{neither:?}"
        );
    }

    #[test]
    fn a_drill_waits_for_incidents_remediations_other_drills_and_suspend() {
        let incident = IncidentStatus {
            class: IncidentClass::Errors,
            started_at: Time(at("2026-12-01T10:00:00Z")),
            attempts: 1,
            tried: vec![],
            active_event: None,
            last_step_failed: false,
            failed: false,
            message: None,
        };
        let clear = PolicyActivity {
            policy: "web",
            ..Default::default()
        };
        assert_eq!(wait_for(&clear), None);
        let open = PolicyActivity {
            incident: Some(&incident),
            unfinished_events: vec!["web-x"],
            ..clear.clone()
        };
        let why = wait_for(&open).unwrap();
        assert_eq!(why.reason, "IncidentOpen");
        assert!(
            why.message.contains("open Errors incident"),
            "{}",
            why.message
        );
        let busy = PolicyActivity {
            unfinished_events: vec!["web-manual-1"],
            ..clear.clone()
        };
        let why = wait_for(&busy).unwrap();
        assert_eq!(why.reason, "RemediationRunning");
        assert!(why.message.contains("web-manual-1"), "{}", why.message);
        let drill = PolicyActivity {
            running_drills: vec!["nightly"],
            ..clear.clone()
        };
        assert_eq!(wait_for(&drill).unwrap().reason, "DrillRunning");
        let suspended = PolicyActivity {
            suspended: true,
            ..clear
        };
        assert_eq!(wait_for(&suspended).unwrap().reason, "PolicySuspended");
    }

    #[test]
    fn strategies_outside_the_ladder_are_named() {
        use StrategyKind::*;
        assert_eq!(
            missing_rungs(
                &[TrafficShifting, VersionRollback],
                &[TrafficShifting, EnvironmentSwitch]
            ),
            vec![VersionRollback]
        );
        assert!(missing_rungs(&[EnvironmentSwitch], &[EnvironmentSwitch]).is_empty());
    }
}
