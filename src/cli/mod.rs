//! The `frys-rollback` command line: `run` the operator, print the `crd`s.

mod run;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

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
        }
    }
}
