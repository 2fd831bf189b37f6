//! `frys-rollback drill POLICY --strategies A,B`: run a drill now. Creates a RollbackDrill
//! without a schedule, annotated `rollback.frys.io/run-now`, and follows it: progress on
//! stderr, the report on stdout; exits non-zero unless the drill Succeeded.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use kube::{
    Api, ResourceExt as _,
    api::{ObjectMeta, PostParams},
};

use super::output;
use crate::api::{
    DrillReport, DrillResult, PolicyRef, RollbackDrill, RollbackDrillSpec, StrategyKind,
    annotations,
};

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// The RollbackPolicy whose rungs are rehearsed.
    pub policy: String,
    /// The rungs to exercise, in order, comma-separated (e.g. TrafficShifting,EnvironmentSwitch;
    /// any case, snake_case too).
    #[arg(long, value_delimiter = ',', required = true)]
    pub strategies: Vec<StrategyKind>,
    /// Undo each strategy without verifying it first.
    #[arg(long)]
    pub no_verify: bool,
    /// Namespace (default: the current kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// How long to wait for the report.
    #[arg(long, default_value = "15m", value_parser = parse_timeout)]
    pub timeout: Duration,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    crate::api::duration::parse(s).map_err(|e| e.to_string())
}

pub async fn run(args: DrillArgs) -> anyhow::Result<()> {
    let client = output::client().await?;
    let drills: Api<RollbackDrill> = output::namespaced(&client, args.namespace.as_deref());
    let drill = RollbackDrill {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-drill-", args.policy)),
            annotations: Some([(annotations::RUN_NOW.to_owned(), "cli".to_owned())].into()),
            ..Default::default()
        },
        spec: RollbackDrillSpec {
            policy_ref: PolicyRef {
                name: args.policy.clone(),
            },
            schedule: None,
            time_zone: None,
            strategies: args.strategies.clone(),
            verify: !args.no_verify,
            suspend: false,
            history_limit: None,
        },
        status: None,
    };
    let created = drills
        .create(&PostParams::default(), &drill)
        .await
        .context("creating the RollbackDrill")?;
    let name = created.name_any();
    eprintln!("rollbackdrill/{name} created; waiting for the operator");
    let report = tokio::time::timeout(args.timeout, follow(&drills, &name))
        .await
        .with_context(|| format!("rollbackdrill/{name}: no report within {:?}", args.timeout))??;
    print!("{}", render(&name, &report));
    if report.result != DrillResult::Succeeded {
        bail!("drill {name} {:?}", report.result);
    }
    Ok(())
}

/// Polls the drill until its run ends, printing each change of progress once.
async fn follow(drills: &Api<RollbackDrill>, name: &str) -> anyhow::Result<DrillReport> {
    let mut said = String::new();
    loop {
        let drill = drills.get(name).await.context("reading the drill")?;
        let status = drill.status.unwrap_or_default();
        let condition = |t: &str| status.conditions.iter().find(|c| c.type_ == t).cloned();
        let consumed = !drill
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(annotations::RUN_NOW));
        if let Some(report) = &status.report {
            let progress = report
                .strategies
                .iter()
                .map(|s| format!("{} {:?}", s.strategy, s.step))
                .collect::<Vec<_>>()
                .join(", ");
            if progress != said {
                eprintln!("{progress}");
                said = progress;
            }
            if report.result != DrillResult::Running {
                return Ok(report.clone());
            }
        } else if consumed {
            // Consumed without a run: refused, or the spec is unusable.
            for type_ in ["Allowed", "Ready"] {
                if let Some(c) = condition(type_).filter(|c| c.status == "False") {
                    bail!(
                        "drill {name} not run: {type_}=False {}: {}",
                        c.reason,
                        c.message
                    );
                }
            }
        } else if let Some(c) = condition("Waiting").filter(|c| c.status == "True")
            && c.message != said
        {
            eprintln!("waiting: {}", c.message);
            said = c.message;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The report as text.
fn render(name: &str, report: &DrillReport) -> String {
    let ms = |v: Option<u64>| v.map_or("-".to_owned(), |v| format!("{v}ms"));
    let mut out = format!(
        "rollbackdrill/{name}: {:?}: {}\n",
        report.result,
        report.message.as_deref().unwrap_or_default()
    );
    out.push_str(
        "STRATEGY            APPLY     VERIFY    VERIFICATION  UNDO      RESTORED  RESULT\n",
    );
    for s in &report.strategies {
        out.push_str(&format!(
            "{:<19} {:<9} {:<9} {:<13} {:<9} {:<9} {}\n",
            s.strategy.as_str(),
            ms(s.apply_ms),
            ms(s.verify_ms),
            s.verification.map_or("-".into(), |v| format!("{v:?}")),
            ms(s.undo_ms),
            s.restored_exactly
                .map_or("-", |r| if r { "exactly" } else { "NO" }),
            s.result.map_or("-".into(), |r| format!("{r:?}")),
        ));
        if let Some(message) = &s.message {
            out.push_str(&format!("  {message}\n"));
        }
    }
    out
}
