//! `frys-rollback verify`: the verification report of a policy's latest verified remediation.

use anyhow::{Context as _, bail};
use clap::Args;
use kube::{Api, ResourceExt as _, api::ListParams};

use super::output::{self, Format, or_dash};
use crate::api::{RollbackEvent, VerificationReport, duration};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The RollbackPolicy.
    pub policy: String,
    /// Namespace (default: the current kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
}

pub async fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let client = output::client().await?;
    let events: Api<RollbackEvent> = output::namespaced(&client, args.namespace.as_deref());
    let latest = events
        .list(&ListParams::default())
        .await
        .context("listing RollbackEvents")?
        .items
        .into_iter()
        .filter(|e| e.spec.policy_ref.name == args.policy)
        .filter(|e| e.status.as_ref().is_some_and(|s| s.verification.is_some()))
        .max_by_key(|e| e.metadata.creation_timestamp.clone());
    let Some(event) = latest else {
        bail!(
            "no RollbackEvent of policy {} has a verification report yet",
            args.policy
        );
    };
    if args.output == Format::Table {
        println!(
            "rollbackevent/{} ({:?} {})",
            event.name_any(),
            event.spec.type_,
            event.spec.strategy
        );
    }
    let report = event.status.and_then(|s| s.verification).expect("filtered");
    output::print(&report, args.output, render)
}

/// Overall verdict, the checks, and the recommendations.
pub fn render(report: &VerificationReport) -> String {
    let mut out = format!(
        "verification {:?} in {}\n\n",
        report.overall_status,
        duration::format(std::time::Duration::from_millis(report.duration_ms))
    );
    let rows: Vec<Vec<String>> = report
        .checks
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                format!("{:?}", c.category),
                format!("{:?}", c.status),
                duration::format(std::time::Duration::from_millis(c.duration_ms)),
                or_dash((!c.details.is_empty()).then(|| {
                    c.details
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })),
            ]
        })
        .collect();
    out += &output::table(
        &["CHECK", "CATEGORY", "STATUS", "DURATION", "DETAILS"],
        &rows,
    );
    if !report.recommendations.is_empty() {
        out += "\nRecommendations:\n";
        for r in &report.recommendations {
            out += &format!("- {r}\n");
        }
    }
    out
}
