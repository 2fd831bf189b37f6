//! `frys-rollback report`: remediation statistics over a time window (the seed's
//! `smart-rollback.js report`).

use std::collections::BTreeMap;

use anyhow::Context as _;
use clap::Args;
use jiff::{SignedDuration, Timestamp};
use kube::{ResourceExt as _, api::ListParams};
use serde::Serialize;

use super::output::{self, Format, Scope, age, or_dash};
use crate::api::{EventPhase, RollbackEvent, VerificationStatus, duration};

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub scope: Scope,
    /// Window: RollbackEvents created within this long before now (e.g. 30m, 24h, 168h).
    #[arg(long, default_value = "24h", value_parser = parse_window)]
    pub since: std::time::Duration,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
}

fn parse_window(s: &str) -> Result<std::time::Duration, String> {
    duration::parse(s).map_err(|e| e.to_string())
}

/// Statistics of the RollbackEvents created in `[from, to]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub from: Timestamp,
    pub to: Timestamp,
    /// Events created in the window.
    pub total: usize,
    pub by_strategy: BTreeMap<String, usize>,
    pub by_type: BTreeMap<String, usize>,
    pub by_phase: BTreeMap<String, usize>,
    /// Succeeded or Failed (Skipped dry-run decisions and unfinished events are not counted).
    pub finished: usize,
    pub succeeded: usize,
    /// succeeded / finished; absent when nothing finished.
    pub success_rate: Option<f64>,
    /// Events with a verification report.
    pub verified: usize,
    pub verification_passed: usize,
    /// verificationPassed / verified; absent when nothing was verified.
    pub verification_pass_rate: Option<f64>,
    /// Over events with status.durationMs.
    pub mean_duration_ms: Option<f64>,
    /// Nearest-rank 95th percentile of status.durationMs.
    pub p95_duration_ms: Option<u64>,
    pub failed: Vec<FailedEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedEvent {
    pub namespace: String,
    pub name: String,
    pub policy: String,
    pub strategy: String,
    pub created: Option<Timestamp>,
    pub message: String,
}

pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let client = output::client().await?;
    let events = args
        .scope
        .api::<RollbackEvent>(&client)
        .list(&ListParams::default())
        .await
        .context("listing RollbackEvents")?
        .items;
    let report = aggregate(&events, Timestamp::now(), args.since);
    output::print(&report, args.output, |r| render(r, Timestamp::now()))
}

/// Aggregates the events created within `window` before `now`.
pub fn aggregate(events: &[RollbackEvent], now: Timestamp, window: std::time::Duration) -> Report {
    let from = SignedDuration::try_from(window)
        .ok()
        .and_then(|w| now.checked_sub(w).ok())
        .unwrap_or(Timestamp::MIN);
    let in_window: Vec<&RollbackEvent> = events
        .iter()
        .filter(|e| {
            e.metadata
                .creation_timestamp
                .as_ref()
                .is_some_and(|t| t.0 >= from && t.0 <= now)
        })
        .collect();
    let mut by_strategy = BTreeMap::new();
    let mut by_type = BTreeMap::new();
    let mut by_phase = BTreeMap::new();
    let mut durations = vec![];
    let (mut succeeded, mut failed_count, mut verified, mut passed) = (0, 0, 0, 0);
    let mut failed = vec![];
    for event in &in_window {
        let status = event.status.clone().unwrap_or_default();
        *by_strategy
            .entry(event.spec.strategy.to_string())
            .or_insert(0) += 1;
        *by_type
            .entry(format!("{:?}", event.spec.type_))
            .or_insert(0) += 1;
        let phase = event
            .status
            .as_ref()
            .map_or("New".to_string(), |s| format!("{:?}", s.phase));
        *by_phase.entry(phase).or_insert(0) += 1;
        match status.phase {
            EventPhase::Succeeded => succeeded += 1,
            EventPhase::Failed => {
                failed_count += 1;
                failed.push(FailedEvent {
                    namespace: event.namespace().unwrap_or_default(),
                    name: event.name_any(),
                    policy: event.spec.policy_ref.name.clone(),
                    strategy: event.spec.strategy.to_string(),
                    created: event.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    message: status.message.clone().unwrap_or_default(),
                });
            }
            _ => {}
        }
        if let Some(v) = &status.verification {
            verified += 1;
            if v.overall_status == VerificationStatus::Passed {
                passed += 1;
            }
        }
        durations.extend(status.duration_ms);
    }
    failed.sort_by_key(|f| std::cmp::Reverse(f.created));
    let finished = succeeded + failed_count;
    let ratio = |n: usize, d: usize| (d > 0).then(|| n as f64 / d as f64);
    durations.sort_unstable();
    Report {
        from,
        to: now,
        total: in_window.len(),
        by_strategy,
        by_type,
        by_phase,
        finished,
        succeeded,
        success_rate: ratio(succeeded, finished),
        verified,
        verification_passed: passed,
        verification_pass_rate: ratio(passed, verified),
        mean_duration_ms: (!durations.is_empty())
            .then(|| durations.iter().sum::<u64>() as f64 / durations.len() as f64),
        p95_duration_ms: percentile(&durations, 95),
        failed,
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: usize) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

fn percent(rate: Option<f64>) -> String {
    or_dash(rate.map(crate::units::percent))
}

fn millis(ms: Option<f64>) -> String {
    or_dash(ms.map(|ms| duration::format(std::time::Duration::from_millis(ms.round() as u64))))
}

/// The summary, the counts and the failed events, for people.
pub fn render(report: &Report, now: Timestamp) -> String {
    let mut out = format!(
        "RollbackEvents created from {} to {}: {}\n\n",
        report.from.strftime("%Y-%m-%d %H:%M:%SZ"),
        report.to.strftime("%Y-%m-%d %H:%M:%SZ"),
        report.total
    );
    let summary = vec![
        vec![
            "success rate".into(),
            format!(
                "{} ({}/{})",
                percent(report.success_rate),
                report.succeeded,
                report.finished
            ),
        ],
        vec![
            "verification pass rate".into(),
            format!(
                "{} ({}/{})",
                percent(report.verification_pass_rate),
                report.verification_passed,
                report.verified
            ),
        ],
        vec!["mean duration".into(), millis(report.mean_duration_ms)],
        vec![
            "p95 duration".into(),
            millis(report.p95_duration_ms.map(|d| d as f64)),
        ],
    ];
    out += &output::table(&["SUMMARY", "VALUE"], &summary);
    for (title, counts) in [
        ("STRATEGY", &report.by_strategy),
        ("TYPE", &report.by_type),
        ("PHASE", &report.by_phase),
    ] {
        let rows: Vec<Vec<String>> = counts
            .iter()
            .map(|(k, n)| vec![k.clone(), n.to_string()])
            .collect();
        out += "\n";
        out += &output::table(&[title, "COUNT"], &rows);
    }
    if !report.failed.is_empty() {
        let rows: Vec<Vec<String>> = report
            .failed
            .iter()
            .map(|f| {
                vec![
                    f.namespace.clone(),
                    f.name.clone(),
                    f.policy.clone(),
                    f.strategy.clone(),
                    or_dash(f.created.map(|t| age(t, now))),
                    f.message.clone(),
                ]
            })
            .collect();
        out += "\nFailed:\n";
        out += &output::table(
            &["NAMESPACE", "EVENT", "POLICY", "STRATEGY", "AGE", "MESSAGE"],
            &rows,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(
        name: &str,
        created: &str,
        strategy: &str,
        status: serde_json::Value,
    ) -> RollbackEvent {
        let e = crate::fixtures::event(name)
            .with_created_at(created)
            .with_strategy(serde_json::from_value(serde_json::json!(strategy)).unwrap());
        if status.is_null() {
            e
        } else {
            e.with_status_json(status)
        }
    }

    fn now() -> Timestamp {
        "2026-01-02T12:00:00Z".parse().unwrap()
    }

    fn day() -> std::time::Duration {
        std::time::Duration::from_secs(86400)
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let values: Vec<u64> = (1..=20).collect();
        assert_eq!(percentile(&values, 95), Some(19));
        assert_eq!(percentile(&[7], 95), Some(7));
        assert_eq!(percentile(&[1, 2, 3], 95), Some(3));
        assert_eq!(percentile(&[], 95), None);
    }

    #[test]
    fn aggregates_rates_durations_and_failures() {
        let passed = serde_json::json!({"overallStatus": "Passed", "durationMs": 10});
        let events = vec![
            event(
                "a",
                "2026-01-02T10:00:00Z",
                "VersionRollback",
                serde_json::json!({"phase": "Succeeded", "durationMs": 1000, "verification": passed}),
            ),
            event(
                "b",
                "2026-01-02T11:00:00Z",
                "VersionRollback",
                serde_json::json!({"phase": "Failed", "durationMs": 3000, "message": "verification failed",
                                   "verification": {"overallStatus": "Failed"}}),
            ),
            event(
                "c",
                "2026-01-02T11:30:00Z",
                "CircuitBreaker",
                serde_json::json!({"phase": "Succeeded", "durationMs": 2000}),
            ),
            event(
                "d",
                "2026-01-02T11:40:00Z",
                "CircuitBreaker",
                serde_json::json!({"phase": "Skipped"}),
            ),
            event(
                "e",
                "2026-01-02T11:50:00Z",
                "CircuitBreaker",
                serde_json::Value::Null,
            ),
            // Outside the window.
            event(
                "old",
                "2025-12-30T11:00:00Z",
                "EmergencyShutdown",
                serde_json::json!({"phase": "Failed", "durationMs": 9000}),
            ),
        ];
        let r = aggregate(&events, now(), day());
        assert_eq!(r.total, 5);
        assert_eq!(r.by_strategy["VersionRollback"], 2);
        assert_eq!(r.by_strategy["CircuitBreaker"], 3);
        assert!(!r.by_strategy.contains_key("EmergencyShutdown"));
        assert_eq!(r.by_type["Automatic"], 5);
        assert_eq!(r.by_phase["New"], 1);
        assert_eq!(r.by_phase["Skipped"], 1);
        assert_eq!((r.succeeded, r.finished), (2, 3));
        assert!((r.success_rate.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!((r.verification_passed, r.verified), (1, 2));
        assert_eq!(r.verification_pass_rate, Some(0.5));
        assert_eq!(r.mean_duration_ms, Some(2000.0));
        assert_eq!(r.p95_duration_ms, Some(3000));
        assert_eq!(r.failed.len(), 1);
        assert_eq!(r.failed[0].name, "b");
        assert_eq!(r.failed[0].message, "verification failed");

        let text = render(&r, now());
        assert!(
            text.contains("success rate             66.7 % (2/3)"),
            "{text}"
        );
        assert!(text.contains("p95 duration             3s"), "{text}");
        assert!(
            text.contains("NAMESPACE   EVENT   POLICY   STRATEGY          AGE   MESSAGE"),
            "{text}"
        );
    }

    #[test]
    fn empty_window_has_no_rates() {
        let r = aggregate(&[], now(), day());
        assert_eq!(
            (r.total, r.success_rate, r.p95_duration_ms),
            (0, None, None)
        );
        assert!(render(&r, now()).contains("success rate             - (0/0)"));
    }
}
