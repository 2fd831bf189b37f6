//! The `frys-rollback` command line: `run` the operator, print the `crd`s, and the people-facing
//! commands (`status`, `report`, `trigger`, `emergency`, `undo`, `verify`, `backtest`) that talk to the
//! cluster in KUBECONFIG: results on stdout, progress on stderr.

mod backtest;
mod output;
mod report;
mod run;
mod status;
mod trigger;
mod undo;
mod verify;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

pub use report::{Report, aggregate};
pub use run::RunArgs;

/// frys-rollback: keeps Deployments healthy through bad releases.
#[derive(Debug, Parser)]
#[command(name = "frys-rollback", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator (controllers, /metrics, /healthz, /readyz).
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions, or write one file each into a directory (crds/).
    Crd {
        /// Directory to write `<group>_<plural>.yaml` files into, instead of printing.
        #[arg(long)]
        write: Option<std::path::PathBuf>,
    },
    /// One row per RollbackPolicy: target, readiness, health, score, failure streak, open
    /// incident, last remediation and the settings in force.
    Status(status::StatusArgs),
    /// Statistics of the RollbackEvents created in a window: counts by strategy, type and
    /// phase, success and verification pass rates, mean and p95 duration, and the failures.
    Report(report::ReportArgs),
    /// Run a manual remediation with STRATEGY (annotates the policy with rollback.frys.io/trigger).
    Trigger(trigger::TriggerArgs),
    /// Stop the workload now (annotates the policy with rollback.frys.io/emergency).
    Emergency(trigger::EmergencyArgs),
    /// Undo a finished RollbackEvent's changes (annotates it with rollback.frys.io/undo).
    Undo(undo::UndoArgs),
    /// Show the verification report of the policy's latest verified RollbackEvent: overall
    /// verdict, each check (category, status, duration, details) and the recommendations.
    Verify(verify::VerifyArgs),
    /// Replay a policy over history from Prometheus: the assessments, the incidents that would
    /// have opened and the rung chosen for each, a summary; --suggest thresholds, --plot.
    Backtest(Box<backtest::BacktestArgs>),
}

impl Cli {
    /// Runs the chosen command.
    pub async fn execute(self) -> anyhow::Result<()> {
        match self.command {
            Command::Run(args) => run::run(*args).await,
            Command::Crd { write: None } => {
                print!("{}", crate::api::crds_yaml());
                Ok(())
            }
            Command::Crd { write: Some(dir) } => {
                for (file, crd) in crate::api::crds() {
                    let path = dir.join(file);
                    std::fs::write(&path, crate::api::crd_yaml(&crd))
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                Ok(())
            }
            Command::Status(args) => status::run(args).await,
            Command::Report(args) => report::run(args).await,
            Command::Trigger(args) => trigger::trigger(args).await,
            Command::Emergency(args) => trigger::emergency(args).await,
            Command::Undo(args) => undo::run(args).await,
            Command::Verify(args) => verify::run(args).await,
            Command::Backtest(args) => backtest::run(*args).await,
        }
    }
}
