//! The drill report: timings from a RollbackEvent's record, each strategy's verdict, the run's
//! result, and the bounded history. Pure.

use jiff::Timestamp;

use crate::api::{
    DrillReport, DrillResult, EventPhase, RollbackDrillStatus, RollbackEventStatus, StrategyReport,
    VerificationStatus,
};

/// Runs kept in `status.history` unless `historyLimit` says otherwise.
pub const DEFAULT_HISTORY: u32 = 5;

pub fn millis(from: Timestamp, to: Timestamp) -> u64 {
    to.duration_since(from).unsigned_abs().as_millis() as u64
}

/// Time to apply (event start to its last change applied) and to verify (last change applied
/// to the event's end), as the event recorded them.
pub fn timings(status: &RollbackEventStatus) -> (Option<u64>, Option<u64>) {
    let started = status.started_at.as_ref().map(|t| t.0);
    let applied = status
        .actions
        .iter()
        .filter_map(|a| a.applied_at.as_ref())
        .map(|t| t.0)
        .max();
    let completed = status.completed_at.as_ref().map(|t| t.0);
    let apply = started.zip(applied).map(|(s, a)| millis(s, a));
    let verify = status
        .verification
        .as_ref()
        .and(applied.zip(completed))
        .map(|(a, c)| millis(a, c));
    (apply, verify)
}

/// A finished strategy's result and message, from what the report recorded.
pub fn conclude(entry: &mut StrategyReport, verify_asked: bool) {
    let mut problems = vec![];
    match entry.event_phase {
        Some(EventPhase::Succeeded) => {}
        Some(phase) => problems.push(format!("its RollbackEvent ended {phase:?}")),
        None => problems.push("it was not applied".to_string()),
    }
    if verify_asked && entry.event_phase.is_some() {
        match entry.verification {
            Some(VerificationStatus::Passed | VerificationStatus::Partial) => {}
            Some(VerificationStatus::Failed) => problems.push("verification failed".into()),
            None => problems.push("it was not verified".into()),
        }
    }
    match entry.restored_exactly {
        Some(true) => {}
        Some(false) => problems.push(format!(
            "the undo did not restore {}",
            entry.differences.join(", ")
        )),
        None => problems.push("the undo was not confirmed".into()),
    }
    if let Some(message) = &entry.message
        && !message.is_empty()
        && !problems.is_empty()
    {
        problems.push(message.clone());
    }
    if problems.is_empty() {
        entry.result = Some(DrillResult::Succeeded);
        entry.message = Some(format!(
            "{} applied{}, undone and restored exactly",
            entry.strategy,
            if verify_asked { ", verified" } else { "" }
        ));
    } else {
        entry.result = Some(DrillResult::Failed);
        entry.message = Some(problems.join("; "));
    }
}

/// The run's result once every strategy has finished, or when it stops early.
pub fn finish(report: &mut DrillReport, now: Timestamp, aborted: Option<String>) {
    report.completed_at = Some(now.into());
    if let Some(why) = aborted {
        report.result = DrillResult::Aborted;
        report.message = Some(why);
        return;
    }
    let failed: Vec<String> = report
        .strategies
        .iter()
        .filter(|s| s.result != Some(DrillResult::Succeeded))
        .map(|s| s.strategy.to_string())
        .collect();
    if failed.is_empty() {
        report.result = DrillResult::Succeeded;
        report.message = Some(format!(
            "{} strategies rehearsed: applied, verified as asked, undone, restored exactly",
            report.strategies.len()
        ));
    } else {
        report.result = DrillResult::Failed;
        report.message = Some(format!("failed: {}", failed.join(", ")));
    }
}

/// Starts `next` as the report, moving the previous finished one into the history (newest
/// first, at most `limit`).
pub fn start(status: &mut RollbackDrillStatus, next: DrillReport, limit: Option<u32>) {
    if let Some(previous) = status.report.take() {
        status.history.insert(0, previous.summary());
    }
    status
        .history
        .truncate(limit.unwrap_or(DEFAULT_HISTORY) as usize);
    status.report = Some(next);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Action, DrillTrigger, StrategyKind, VerificationReport};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn action(applied: &str) -> Action {
        Action {
            api_version: "v1".into(),
            kind: "Service".into(),
            name: "web".into(),
            namespace: None,
            summary: "s".into(),
            previous: None,
            applied_at: Some(at(applied)),
            undone: false,
        }
    }

    #[test]
    fn timings_come_from_the_event_record() {
        let status = RollbackEventStatus {
            started_at: Some(at("2026-12-01T10:00:00Z")),
            completed_at: Some(at("2026-12-01T10:00:05.500Z")),
            actions: vec![
                action("2026-12-01T10:00:01Z"),
                action("2026-12-01T10:00:02Z"),
            ],
            verification: Some(VerificationReport {
                overall_status: VerificationStatus::Passed,
                duration_ms: 1,
                checks: vec![],
                recommendations: vec![],
            }),
            ..Default::default()
        };
        assert_eq!(timings(&status), (Some(2000), Some(3500)));
        let unverified = RollbackEventStatus {
            verification: None,
            ..status
        };
        assert_eq!(timings(&unverified), (Some(2000), None));
    }

    fn done(
        phase: EventPhase,
        verification: Option<VerificationStatus>,
        restored: bool,
    ) -> StrategyReport {
        StrategyReport {
            event_phase: Some(phase),
            verification,
            restored_exactly: Some(restored),
            differences: if restored {
                vec![]
            } else {
                vec!["Service/web".into()]
            },
            ..StrategyReport::pending(StrategyKind::EnvironmentSwitch)
        }
    }

    #[test]
    fn a_strategy_succeeds_only_applied_verified_and_restored() {
        let mut ok = done(
            EventPhase::Succeeded,
            Some(VerificationStatus::Passed),
            true,
        );
        conclude(&mut ok, true);
        assert_eq!(ok.result, Some(DrillResult::Succeeded), "{ok:?}");
        let mut unverified = done(EventPhase::Succeeded, None, true);
        conclude(&mut unverified, false);
        assert_eq!(unverified.result, Some(DrillResult::Succeeded));
        let mut failed_check = done(EventPhase::Failed, Some(VerificationStatus::Failed), true);
        conclude(&mut failed_check, true);
        assert_eq!(failed_check.result, Some(DrillResult::Failed));
        assert!(
            failed_check
                .message
                .as_ref()
                .unwrap()
                .contains("verification failed")
        );
        let mut drifted = done(
            EventPhase::Succeeded,
            Some(VerificationStatus::Passed),
            false,
        );
        conclude(&mut drifted, true);
        assert_eq!(drifted.result, Some(DrillResult::Failed));
        assert!(drifted.message.as_ref().unwrap().contains("Service/web"));
    }

    fn report(id: &str) -> DrillReport {
        DrillReport {
            id: id.into(),
            trigger: DrillTrigger::Schedule,
            started_at: at("2026-12-01T10:00:00Z"),
            completed_at: None,
            result: DrillResult::Running,
            message: None,
            strategies: vec![],
        }
    }

    #[test]
    fn the_run_fails_when_any_strategy_does_and_history_is_bounded() {
        let mut r = report("a");
        let mut ok = done(
            EventPhase::Succeeded,
            Some(VerificationStatus::Passed),
            true,
        );
        conclude(&mut ok, true);
        let mut bad = done(
            EventPhase::Succeeded,
            Some(VerificationStatus::Passed),
            false,
        );
        conclude(&mut bad, true);
        r.strategies = vec![ok.clone()];
        finish(&mut r, "2026-12-01T10:01:00Z".parse().unwrap(), None);
        assert_eq!(r.result, DrillResult::Succeeded);
        r.strategies = vec![ok, bad];
        finish(&mut r, "2026-12-01T10:01:00Z".parse().unwrap(), None);
        assert_eq!(r.result, DrillResult::Failed);
        finish(
            &mut r,
            "2026-12-01T10:01:00Z".parse().unwrap(),
            Some("incident".into()),
        );
        assert_eq!(r.result, DrillResult::Aborted);

        let mut status = RollbackDrillStatus::default();
        for id in ["1", "2", "3", "4"] {
            start(&mut status, report(id), Some(2));
        }
        assert_eq!(status.report.as_ref().unwrap().id, "4");
        let kept: Vec<_> = status.history.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(kept, ["3", "2"]);
    }
}
