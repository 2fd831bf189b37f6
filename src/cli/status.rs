//! `frys-rollback status`: one row per RollbackPolicy (the seed's `smart-rollback.js status`).

use anyhow::Context as _;
use clap::Args;
use jiff::Timestamp;
use kube::{ResourceExt as _, api::ListParams};
use serde::Serialize;

use super::output::{self, Format, Scope, age, or_dash};
use crate::api::{
    EventPhase, GitopsStatus, HealthStatus, IncidentClass, RollbackPolicy, StrategyKind,
};

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub scope: Scope,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
}

/// One policy as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRow {
    pub namespace: String,
    pub name: String,
    pub target: String,
    /// The Ready condition's status (True, False, Unknown).
    pub ready: String,
    pub health: Option<HealthStatus>,
    pub score: Option<f64>,
    pub failure_streak: u32,
    pub incident: Option<IncidentRow>,
    pub last_remediation: Option<RemediationRow>,
    /// The target's GitOps owner, as the policy's status shows it.
    pub gitops: Option<GitopsStatus>,
    pub profile: Profile,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentRow {
    pub class: IncidentClass,
    pub attempts: u32,
    pub max_attempts: u32,
    pub failed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemediationRow {
    pub event: String,
    pub strategy: StrategyKind,
    pub phase: EventPhase,
    pub time: Timestamp,
    pub age: String,
}

/// The settings in force (status.effective, falling back to the spec).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// The environment profile the policy inherits from (status.effective.profile).
    pub name: Option<String>,
    /// The spec fields that profile supplied (status.effective.inherited).
    pub inherited: Vec<String>,
    pub interval: Option<String>,
    pub auto_rollback: Option<bool>,
    pub dry_run: bool,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let client = output::client().await?;
    let policies = args
        .scope
        .api::<RollbackPolicy>(&client)
        .list(&ListParams::default())
        .await
        .context("listing RollbackPolicies")?
        .items;
    let rows = rows(&policies, Timestamp::now());
    if rows.is_empty() && args.output == Format::Table {
        eprintln!("no RollbackPolicies found");
        return Ok(());
    }
    output::print(&rows, args.output, |rows| render(rows))
}

/// The rows, sorted by namespace and name.
pub fn rows(policies: &[RollbackPolicy], now: Timestamp) -> Vec<PolicyRow> {
    let mut rows: Vec<PolicyRow> = policies.iter().map(|p| row(p, now)).collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    rows
}

fn row(policy: &RollbackPolicy, now: Timestamp) -> PolicyRow {
    let status = policy.status.clone().unwrap_or_default();
    let effective = status.effective.clone().unwrap_or_default();
    PolicyRow {
        namespace: policy.namespace().unwrap_or_default(),
        name: policy.name_any(),
        target: policy.spec.target_ref.name.clone(),
        ready: status
            .conditions
            .iter()
            .find(|c| c.type_ == crate::api::conditions::READY)
            .map_or_else(|| "Unknown".into(), |c| c.status.clone()),
        health: status.health.as_ref().map(|h| h.status),
        score: status.health.as_ref().map(|h| h.score),
        failure_streak: status.failure_streak.unwrap_or(0),
        incident: status.incident.as_ref().map(|i| IncidentRow {
            class: i.class,
            attempts: i.attempts,
            max_attempts: policy.spec.max_rollback_attempts,
            failed: i.failed,
        }),
        last_remediation: status.last_rollback.as_ref().map(|l| RemediationRow {
            event: l.event.clone(),
            strategy: l.strategy,
            phase: l.phase,
            time: l.time.0,
            age: age(l.time.0, now),
        }),
        gitops: status.gitops.clone(),
        profile: Profile {
            name: effective.profile.clone(),
            inherited: effective.inherited.clone(),
            interval: effective
                .interval
                .or_else(|| policy.spec.interval.clone())
                .map(|d| d.as_str().to_owned()),
            auto_rollback: effective.auto_rollback.or(policy.spec.auto_rollback),
            dry_run: policy.spec.dry_run,
        },
    }
}

pub const HEADERS: &[&str] = &[
    "NAMESPACE",
    "NAME",
    "TARGET",
    "READY",
    "HEALTH",
    "SCORE",
    "STREAK",
    "INCIDENT",
    "LAST REMEDIATION",
    "GITOPS",
    "INTERVAL",
    "AUTO",
    "DRY-RUN",
    "PROFILE",
];

/// The aligned table.
pub fn render(rows: &[PolicyRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.namespace.clone(),
                r.name.clone(),
                r.target.clone(),
                r.ready.clone(),
                or_dash(r.health),
                or_dash(r.score.map(crate::units::num)),
                r.failure_streak.to_string(),
                or_dash(r.incident.as_ref().map(|i| {
                    let failed = if i.failed { " failed" } else { "" };
                    format!("{} {}/{}{failed}", i.class, i.attempts, i.max_attempts)
                })),
                or_dash(
                    r.last_remediation
                        .as_ref()
                        .map(|l| format!("{} {:?} {}", l.strategy, l.phase, l.age)),
                ),
                or_dash(r.gitops.as_ref().map(gitops_cell)),
                or_dash(r.profile.interval.as_ref()),
                or_dash(r.profile.auto_rollback),
                r.profile.dry_run.to_string(),
                // The profile, and what the policy takes from it: `staging (strategies, interval)`.
                or_dash(r.profile.name.as_ref().map(|name| {
                    if r.profile.inherited.is_empty() {
                        name.clone()
                    } else {
                        format!("{name} ({})", r.profile.inherited.join(", "))
                    }
                })),
            ]
        })
        .collect();
    output::table(HEADERS, &cells)
}

/// `Application argocd/web held by web-1`, `Kustomization flux-system/apps syncing`.
fn gitops_cell(g: &GitopsStatus) -> String {
    let state = match (&g.held_by, g.automated_sync, g.suspended) {
        (Some(event), _, _) => format!("held by {event}"),
        (None, Some(true), _) | (None, _, Some(false)) => "syncing".into(),
        (None, Some(false), _) => "manual sync".into(),
        (None, _, Some(true)) => "suspended".into(),
        (None, None, None) => "unknown".into(),
    };
    format!("{:?} {}/{} {state}", g.kind, g.namespace, g.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RollbackPolicy {
        crate::fixtures::policy("web")
            .with_target("web-deploy")
            .with_status_json(serde_json::json!({
                "conditions": [{"type": "Ready", "status": "True", "reason": "Valid", "message": "",
                                "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "health": {"status": "Critical", "score": 42.4},
                "failureStreak": 3,
                "incident": {"class": "Release", "startedAt": "2026-01-01T11:50:00Z", "attempts": 1, "failed": false},
                "lastRollback": {"event": "web-1", "strategy": "VersionRollback", "phase": "Verifying",
                                 "time": "2026-01-01T11:55:00Z"},
                "effective": {"interval": "30s", "autoRollback": true, "profile": "staging",
                              "inherited": ["strategies", "interval"]},
                "gitops": {"kind": "Application", "name": "web", "namespace": "argocd",
                           "automatedSync": false, "heldBy": "web-1"},
            }))
    }

    #[test]
    fn renders_a_fixed_policy() {
        let now: Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        let mut bare = policy();
        bare.metadata.name = Some("api".into());
        bare.status = None;
        let text = render(&rows(&[policy(), bare], now));
        let expected = "\
NAMESPACE   NAME   TARGET       READY     HEALTH     SCORE   STREAK   INCIDENT      LAST REMEDIATION               GITOPS                                 INTERVAL   AUTO   DRY-RUN   PROFILE
shop        api    web-deploy   Unknown   -          -       0        -             -                              -                                      -          -      false     -
shop        web    web-deploy   True      Critical   42.4    3        Release 1/3   VersionRollback Verifying 5m   Application argocd/web held by web-1   30s        true   false     staging (strategies, interval)
";
        assert_eq!(text, expected, "\n{text}");
    }
}
