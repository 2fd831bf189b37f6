//! `frys-rollback undo`: ask the operator to undo a finished RollbackEvent's changes.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use kube::{
    Api, ResourceExt as _,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::output;
use crate::api::{RollbackEvent, annotations};

#[derive(Debug, Args)]
pub struct UndoArgs {
    /// The RollbackEvent whose actions are undone.
    pub event: String,
    /// Undo even where the objects changed since (overwrites later changes).
    #[arg(long)]
    pub force: bool,
    /// Namespace (default: the current kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Wait until the operator has handled the request and print its answer; exit non-zero if
    /// the undo was refused.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "5m", value_parser = parse_timeout, requires = "wait")]
    pub timeout: Duration,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    crate::api::duration::parse(s).map_err(|e| e.to_string())
}

pub async fn run(args: UndoArgs) -> anyhow::Result<()> {
    let client = output::client().await?;
    let events: Api<RollbackEvent> = output::namespaced(&client, args.namespace.as_deref());
    let name = &args.event;
    let value = if args.force { "force" } else { "true" };
    let patch = Patch::Merge(json!({"metadata": {"annotations": {annotations::UNDO: value}}}));
    events
        .patch(name, &PatchParams::default(), &patch)
        .await
        .with_context(|| format!("annotating RollbackEvent {name}"))?;
    println!(
        "rollbackevent/{name} annotated: {}={value}",
        annotations::UNDO
    );
    if !args.wait {
        return Ok(());
    }
    eprintln!("waiting for the operator (an unfinished event is undone once it has finished)");
    let event = tokio::time::timeout(args.timeout, async {
        loop {
            let event = events.get(name).await.context("reading the event")?;
            if !event.annotations().contains_key(annotations::UNDO) {
                return anyhow::Ok(event);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await
    .with_context(|| format!("no answer within {:?}", args.timeout))??;
    let message = event.status.and_then(|s| s.message).unwrap_or_default();
    println!("rollbackevent/{name}: {message}");
    if message.starts_with("undo refused") || message.contains("unknown value") {
        bail!("undo of rollbackevent/{name} refused: {message}");
    }
    Ok(())
}
