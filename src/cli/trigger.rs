//! `frys-rollback trigger` and `emergency`: annotate a RollbackPolicy so the operator runs a
//! manual remediation or an emergency stop; `--wait` follows the event it creates.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context as _, bail};
use clap::Args;
use kube::{
    Api, ResourceExt as _,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;

use super::output;
use crate::api::{EventPhase, EventType, RollbackEvent, RollbackPolicy, StrategyKind, annotations};

#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// The RollbackPolicy.
    pub policy: String,
    /// Strategy to run: CircuitBreaker, TrafficShifting, EnvironmentSwitch, VersionRollback or
    /// EmergencyShutdown (any case; the seed's snake_case too, e.g. version_rollback).
    pub strategy: String,
    /// Why, recorded on the event.
    #[arg(long)]
    pub reason: Option<String>,
    /// Namespace (default: the current kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub wait: Wait,
}

#[derive(Debug, Args)]
pub struct EmergencyArgs {
    /// The RollbackPolicy whose workload is stopped.
    pub policy: String,
    /// Why, recorded on the event.
    #[arg(long)]
    pub reason: String,
    /// Namespace (default: the current kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub wait: Wait,
}

#[derive(Debug, Clone, Args)]
pub struct Wait {
    /// Follow the event the operator creates until it finishes (progress on stderr); exit
    /// non-zero if it Failed.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "10m", value_parser = parse_timeout, requires = "wait")]
    pub timeout: Duration,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    crate::api::duration::parse(s).map_err(|e| e.to_string())
}

pub async fn trigger(args: TriggerArgs) -> anyhow::Result<()> {
    let strategy: StrategyKind = args
        .strategy
        .parse()
        .with_context(|| format!("invalid STRATEGY {:?}", args.strategy))?;
    let annotations = json!({
        annotations::TRIGGER: strategy.as_str(),
        annotations::REASON: args.reason,
    });
    request(
        &args.policy,
        args.namespace.as_deref(),
        annotations,
        EventType::Manual,
        &format!("trigger {strategy}"),
        &args.wait,
    )
    .await
}

pub async fn emergency(args: EmergencyArgs) -> anyhow::Result<()> {
    if args.reason.trim().is_empty() {
        bail!("--reason must not be empty");
    }
    let annotations = json!({ annotations::EMERGENCY: args.reason });
    request(
        &args.policy,
        args.namespace.as_deref(),
        annotations,
        EventType::Emergency,
        "emergency",
        &args.wait,
    )
    .await
}

/// Annotates the policy, then (with --wait) follows the new event of `kind`.
async fn request(
    policy: &str,
    namespace: Option<&str>,
    annotations: serde_json::Value,
    kind: EventType,
    what: &str,
    wait: &Wait,
) -> anyhow::Result<()> {
    let client = output::client().await?;
    let policies: Api<RollbackPolicy> = output::namespaced(&client, namespace);
    let events: Api<RollbackEvent> = output::namespaced(&client, namespace);
    policies
        .get(policy)
        .await
        .with_context(|| format!("reading RollbackPolicy {policy}"))?;
    let before: BTreeSet<String> = own_events(&events, policy)
        .await?
        .iter()
        .map(|e| e.name_any())
        .collect();
    let patch = Patch::Merge(json!({"metadata": {"annotations": annotations}}));
    policies
        .patch(policy, &PatchParams::default(), &patch)
        .await
        .with_context(|| format!("annotating RollbackPolicy {policy}"))?;
    println!("rollbackpolicy/{policy} annotated: {what}");
    if !wait.wait {
        return Ok(());
    }
    let event = tokio::time::timeout(
        wait.timeout,
        follow(&policies, &events, policy, &before, kind),
    )
    .await
    .with_context(|| format!("no result within {:?}", wait.timeout))??;
    let status = event.status.clone().unwrap_or_default();
    let message = status.message.unwrap_or_default();
    println!(
        "rollbackevent/{} {:?}: {message}",
        event.name_any(),
        status.phase
    );
    if status.phase == EventPhase::Failed {
        bail!("rollbackevent/{} failed: {message}", event.name_any());
    }
    Ok(())
}

async fn own_events(
    events: &Api<RollbackEvent>,
    policy: &str,
) -> anyhow::Result<Vec<RollbackEvent>> {
    Ok(events
        .list(&ListParams::default())
        .await
        .context("listing RollbackEvents")?
        .items
        .into_iter()
        .filter(|e| e.spec.policy_ref.name == policy)
        .collect())
}

/// Polls until a new event of `kind` for the policy has finished, reporting phase changes on
/// stderr. Fails when the operator removed the request without creating an event.
async fn follow(
    policies: &Api<RollbackPolicy>,
    events: &Api<RollbackEvent>,
    policy: &str,
    before: &BTreeSet<String>,
    kind: EventType,
) -> anyhow::Result<RollbackEvent> {
    let mut last: Option<(String, Option<EventPhase>)> = None;
    let mut consumed_polls = 0;
    loop {
        let new = own_events(events, policy)
            .await?
            .into_iter()
            .filter(|e| e.spec.type_ == kind && !before.contains(&e.name_any()))
            .max_by_key(|e| e.metadata.creation_timestamp.clone());
        match new {
            Some(event) => {
                let phase = event.status.as_ref().map(|s| s.phase);
                let seen = (event.name_any(), phase);
                if last.as_ref() != Some(&seen) {
                    let message = event.status.as_ref().and_then(|s| s.message.clone());
                    eprintln!(
                        "rollbackevent/{}: {} {}",
                        seen.0,
                        phase.map_or("New".into(), |p| format!("{p:?}")),
                        message.unwrap_or_default()
                    );
                    last = Some(seen);
                }
                if phase.is_some_and(EventPhase::is_finished) {
                    return Ok(event);
                }
            }
            None => {
                let current = policies.get(policy).await.context("reading the policy")?;
                let pending = [annotations::TRIGGER, annotations::EMERGENCY]
                    .iter()
                    .any(|a| current.annotations().contains_key(*a));
                if pending {
                    if consumed_polls == 0 && last.is_none() {
                        eprintln!("waiting for the operator to take the request");
                        last = Some((String::new(), None));
                    }
                } else {
                    // The event may lag the annotation's removal by a moment.
                    consumed_polls += 1;
                    if consumed_polls > 5 {
                        bail!(
                            "the operator took the request but created no event \
                             (see `kubectl describe rollbackpolicy {policy}` for why)"
                        );
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
