//! The `frys-rollback` command line: `run` the operator, print the `crd`s, and the people-facing
//! commands (`status`, `explain`, `report`, `trigger`, `emergency`, `undo`, `verify`,
//! `backtest`, `drill`) that talk to the cluster in KUBECONFIG: results on stdout, progress on stderr.
//! Installed as `kubectl-frys`, the same binary is the kubectl plugin `kubectl frys ...`.

mod backtest;
mod drill;
mod explain;
mod output;
mod report;
mod run;
mod status;
mod trigger;
mod undo;
mod verify;

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

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
    /// What the engine sees now for POLICY and what it would do next, and why, in a few
    /// sentences (the operator's own assessment and decision rules on the recorded status).
    Explain(explain::ExplainArgs),
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
    /// Rehearse POLICY's rungs now: apply each of --strategies for real, verify, undo, and
    /// report whether the objects came back exactly (creates a RollbackDrill; drills must be
    /// allowed by the operator and the namespace).
    Drill(drill::DrillArgs),
}

/// The file name kubectl looks for to offer `kubectl frys` (a plugin is `kubectl-<name>`).
pub const PLUGIN_NAME: &str = "kubectl-frys";

/// How help and usage name the program: `kubectl frys` when started as the plugin.
pub fn display_name(argv0: &std::ffi::OsStr) -> &'static str {
    let file = std::path::Path::new(argv0).file_stem();
    if file.is_some_and(|f| f == PLUGIN_NAME) {
        "kubectl frys"
    } else {
        "frys-rollback"
    }
}

impl Cli {
    /// Parses the process's arguments (exits with usage on error, like `Parser::parse`).
    pub fn from_env() -> Self {
        let argv0 = std::env::args_os().next().unwrap_or_default();
        let matches = Self::command().bin_name(display_name(&argv0)).get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

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
            Command::Explain(args) => explain::run(args).await,
            Command::Report(args) => report::run(args).await,
            Command::Trigger(args) => trigger::trigger(args).await,
            Command::Emergency(args) => trigger::emergency(args).await,
            Command::Undo(args) => undo::run(args).await,
            Command::Verify(args) => verify::run(args).await,
            Command::Backtest(args) => backtest::run(*args).await,
            Command::Drill(args) => drill::run(args).await,
        }
    }
}

#[cfg(test)]
mod tests {
    /// The krew manifest installs the binary under the name the plugin detection expects.
    #[test]
    fn krew_manifest_installs_the_plugin_name() {
        let manifest = include_str!("../../deploy/krew/frys.yaml");
        assert!(
            manifest.contains(&format!("to: {}\n", super::PLUGIN_NAME)),
            "{manifest}"
        );
        assert!(
            manifest.contains(&format!("bin: {}\n", super::PLUGIN_NAME)),
            "{manifest}"
        );
        assert!(manifest.contains("from: frys-rollback\n"), "{manifest}");
    }
}
