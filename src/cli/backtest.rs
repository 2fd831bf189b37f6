//! `frys-rollback backtest`: what a policy would have done over a stretch of history (see
//! [`crate::backtest`]): a timeline, the incidents and rungs, a summary, threshold suggestions
//! and a plot.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::{ResourceExt as _, api::ListParams};
use serde::Serialize;

use super::output::{self, Format, table};
use crate::{
    api::{RollbackPolicy, RollbackPolicySpec},
    backtest::{self, Backtest, Suggestion, suggest::patch_yaml},
    config::{OperatorConfig, effective},
    prometheus::{self, Endpoint, PolicyQueries, PrometheusClient, Signal},
};

#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// The RollbackPolicy to backtest (read from the cluster); or use -f.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub policy: Option<String>,
    /// A RollbackPolicy manifest (or a bare spec) to backtest before applying it.
    #[arg(short, long)]
    pub file: Option<std::path::PathBuf>,
    /// Namespace of the policy and its target (default: the manifest's, else the kubeconfig
    /// context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Start: RFC 3339 (2026-11-24T00:00:00Z) or a duration ago (7d, 36h).
    #[arg(long)]
    pub from: String,
    /// End: RFC 3339 or a duration ago. Default now.
    #[arg(long)]
    pub to: Option<String>,
    /// Time between evaluations. Default: the policy's interval.
    #[arg(long)]
    pub step: Option<String>,
    /// A release (new revision) time, RFC 3339; repeatable. Added to the target's ReplicaSets'
    /// creation times when the cluster is reachable.
    #[arg(long = "release")]
    pub releases: Vec<String>,
    /// Prometheus to read (default: the policy's spec.prometheus.url, else METRICS_URL).
    #[arg(long, env = "METRICS_URL")]
    pub prometheus_url: Option<String>,
    /// Also suggest thresholds from the history (p95 and p99 plus --margin).
    #[arg(long)]
    pub suggest: bool,
    /// Margin added to the suggested percentiles (0.2 = 20 %).
    #[arg(long, default_value_t = 0.2)]
    pub margin: f64,
    /// Write the plot to this SVG file.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
    /// Output format (table or json).
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
}

/// Everything the command prints with -o json.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Output<'a> {
    policy: String,
    #[serde(flatten)]
    backtest: &'a Backtest,
    #[serde(skip_serializing_if = "Option::is_none")]
    suggestions: Option<Suggestions<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Suggestions<'a> {
    metrics: &'a [Suggestion],
    incidents_with_all: usize,
    patch: String,
}

/// A time argument: RFC 3339, or a duration before `now`.
pub fn parse_time(text: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    // Go durations stop at hours; days are what people type for history.
    let days = text.strip_suffix('d').and_then(|d| d.parse::<u64>().ok());
    let ago = match days {
        Some(d) => Duration::from_secs(d * 86_400),
        None => crate::api::duration::parse(text)
            .with_context(|| format!("{text:?} is neither an RFC 3339 time nor a duration"))?,
    };
    now.checked_sub(ago)
        .with_context(|| format!("{text} before now is out of range"))
}

pub async fn run(args: BacktestArgs) -> anyhow::Result<()> {
    let now = Timestamp::now();
    let from = parse_time(&args.from, now)?;
    let to = match &args.to {
        Some(t) => parse_time(t, now)?,
        None => now,
    };
    if to <= from {
        bail!("--to must be after --from");
    }
    let client = output::client().await;
    let (name, namespace, spec) = match (&args.file, &args.policy) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let (name, ns, spec) = parse_manifest(&text)
                .with_context(|| format!("{} is not a RollbackPolicy", path.display()))?;
            (name, args.namespace.clone().or(ns), spec)
        }
        (None, Some(name)) => {
            let client = client.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
            let api = output::namespaced::<RollbackPolicy>(client, args.namespace.as_deref());
            let p = api
                .get(name)
                .await
                .with_context(|| format!("reading RollbackPolicy {name}"))?;
            (name.clone(), p.namespace(), p.spec)
        }
        (None, None) => bail!("name a policy or give -f"),
    };
    let namespace = namespace.unwrap_or_else(|| "default".into());
    let mut config = OperatorConfig::defaults();
    config.prometheus_url = args.prometheus_url.clone();
    let eff = effective(&spec, &config);
    let step = match &args.step {
        Some(d) => crate::api::duration::parse(d).context("--step")?,
        None => eff
            .interval
            .as_ref()
            .and_then(|d| d.get().ok())
            .unwrap_or(config.interval),
    }
    .max(Duration::from_secs(1));

    let mut releases: Vec<Timestamp> = args
        .releases
        .iter()
        .map(|r| r.parse().with_context(|| format!("--release {r}")))
        .collect::<anyhow::Result<_>>()?;
    let mut replica_sets = vec![];
    match &client {
        Ok(client) => match replica_sets_of(client, &namespace, &spec.target_ref.name).await {
            Ok(owned) => replica_sets = owned,
            Err(e) => eprintln!("release times from ReplicaSets unavailable: {e:#}"),
        },
        Err(_) => eprintln!("no cluster reachable: releases only from --release"),
    }
    releases.extend(
        replica_sets
            .iter()
            .filter_map(|rs| rs.creation_timestamp().map(|t| t.0)),
    );
    releases.sort();
    releases.dedup();

    let url = spec
        .prometheus
        .as_ref()
        .map(|p| p.url.clone())
        .or(args.prometheus_url.clone())
        .context("no Prometheus: set --prometheus-url (METRICS_URL) or spec.prometheus.url")?;
    let prometheus = PrometheusClient::new(&Endpoint {
        timeout: Duration::from_secs(60),
        ..Endpoint::new(url)
    })?;
    let workload_label = eff.workload_label.clone().unwrap_or_default();
    let names: Vec<String> = replica_sets.iter().map(|rs| rs.name_any()).collect();
    let queries = PolicyQueries {
        policy: name.clone(),
        endpoint: (),
        namespace: namespace.clone(),
        target: spec.target_ref.name.clone(),
        pod_regex: prometheus::pod_regex(&names),
        window: eff
            .rate_window
            .as_ref()
            .and_then(|d| d.get().ok())
            .unwrap_or(config.rate_window),
        signals: Signal::for_policy(
            &spec.metrics,
            &workload_label,
            spec.min_request_rate.is_some(),
        ),
    };
    eprintln!(
        "replaying {namespace}/{name} from {from} to {to} every {}",
        crate::api::duration::format(step)
    );
    let history = backtest::fetch(&prometheus, &queries, from, to, step).await;
    let result = backtest::replay(&spec, &eff, &history, &releases, step)?;
    let suggestions = if args.suggest {
        let (s, with_all) =
            backtest::suggest(&spec, &config, &history, &releases, step, args.margin)?;
        Some((s, with_all))
    } else {
        None
    };
    if let Some(path) = &args.plot {
        let title = format!("backtest {namespace}/{name}: {from} to {to}");
        let svg = backtest::plot::svg(&result, &eff.metrics, &title)?;
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    let out = Output {
        policy: format!("{namespace}/{name}"),
        backtest: &result,
        suggestions: suggestions.as_ref().map(|(s, all)| Suggestions {
            metrics: s,
            incidents_with_all: *all,
            patch: patch_yaml(s),
        }),
    };
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&out)?),
        _ => print!("{}", render(&out, &name, &namespace)),
    }
    Ok(())
}

/// A RollbackPolicy manifest, or a bare spec: (name, namespace, spec).
fn parse_manifest(text: &str) -> anyhow::Result<(String, Option<String>, RollbackPolicySpec)> {
    if let Ok(p) = yaml_serde::from_str::<RollbackPolicy>(text) {
        return Ok((p.name_any(), p.namespace(), p.spec));
    }
    let spec: RollbackPolicySpec = yaml_serde::from_str(text)?;
    Ok((spec.target_ref.name.clone(), None, spec))
}

/// The target Deployment's ReplicaSets (by owner name), oldest first.
async fn replica_sets_of(
    client: &kube::Client,
    namespace: &str,
    target: &str,
) -> anyhow::Result<Vec<ReplicaSet>> {
    let api: kube::Api<ReplicaSet> = kube::Api::namespaced(client.clone(), namespace);
    let mut owned: Vec<ReplicaSet> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| o.kind == "Deployment" && o.name == target)
        })
        .collect();
    owned.sort_by_key(|rs| rs.creation_timestamp().map(|t| t.0));
    Ok(owned)
}

fn hm(secs: u64) -> String {
    crate::api::duration::format(Duration::from_secs(secs))
}

/// The people's view: incidents, changes of status, summary, suggestions.
fn render(out: &Output<'_>, name: &str, namespace: &str) -> String {
    let b = out.backtest;
    let mut text = String::new();
    text.push_str("TIMELINE (changes of status and decisions)\n");
    let mut rows = vec![];
    let mut last: Option<(&crate::api::HealthStatus, bool)> = None;
    for s in &b.steps {
        let changed = last != Some((&s.status, s.conclusive)) || s.rung.is_some();
        if changed {
            let values = s
                .values
                .iter()
                .map(|(k, v)| format!("{k}={}", v.map_or("-".into(), |v| format!("{v:.4}"))))
                .collect::<Vec<_>>()
                .join(" ");
            rows.push(vec![
                s.at.to_string(),
                if s.conclusive {
                    s.status.to_string()
                } else {
                    "Inconclusive".into()
                },
                s.streak.to_string(),
                s.decision.to_string(),
                s.rung.map_or("-".into(), |r| r.to_string()),
                values,
            ]);
        }
        last = Some((&s.status, s.conclusive));
    }
    text.push_str(&table(
        &["TIME", "STATUS", "STREAK", "DECISION", "RUNG", "VALUES"],
        &rows,
    ));
    text.push_str("\nINCIDENTS\n");
    let end = b.to.unwrap_or(Timestamp::UNIX_EPOCH);
    let rows: Vec<Vec<String>> = b
        .incidents
        .iter()
        .map(|i| {
            vec![
                i.opened_at.to_string(),
                i.closed_at.map_or("open".into(), |t| t.to_string()),
                hm(i.duration(end).as_secs()),
                i.class.to_string(),
                i.rungs
                    .iter()
                    .map(|(_, r)| r.to_string())
                    .collect::<Vec<_>>()
                    .join(" > "),
                if i.failed {
                    "failed".into()
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    text.push_str(&table(
        &["OPENED", "CLOSED", "DURATION", "CLASS", "RUNGS", "FAILED"],
        &rows,
    ));
    let s = &b.summary;
    text.push_str(&format!(
        "\nSUMMARY {namespace}/{name}: {} evaluations every {}s, {} incident(s), {} remediation(s) ({:.2}/day), degraded {}, longest incident {}, no data {}, nothing judged {}\n",
        s.evaluations,
        b.step_seconds,
        s.incidents,
        s.remediations,
        s.remediations_per_day,
        hm(s.degraded_seconds),
        hm(s.longest_incident_seconds),
        hm(s.no_data_seconds),
        hm(s.inconclusive_seconds),
    ));
    if let Some(sg) = &out.suggestions {
        text.push_str("\nSUGGESTED THRESHOLDS (p95 / p99 of judged values plus margin)\n");
        let rows: Vec<Vec<String>> = sg
            .metrics
            .iter()
            .map(|m| {
                vec![
                    m.metric.clone(),
                    m.samples.to_string(),
                    format!("{:.4}", m.p95),
                    format!("{:.4}", m.p99),
                    format!("{} -> {}", output::or_dash(m.current_warning), m.warning),
                    format!("{} -> {}", output::or_dash(m.current_critical), m.critical),
                    format!("{} -> {}", m.incidents_now, m.incidents_suggested),
                ]
            })
            .collect();
        text.push_str(&table(
            &[
                "METRIC",
                "SAMPLES",
                "P95",
                "P99",
                "WARNING",
                "CRITICAL",
                "INCIDENTS",
            ],
            &rows,
        ));
        text.push_str(&format!(
            "incidents with every suggestion: {}\n\n# kubectl patch rollbackpolicy {name} -n {namespace} --type=json --patch-file patch.yaml\n{}",
            sg.incidents_with_all, sg.patch
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_ago() {
        let now: Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
        assert_eq!(
            parse_time("7d", now).unwrap(),
            "2026-11-24T12:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            parse_time("2026-11-30T00:00:00Z", now).unwrap().as_second(),
            "2026-11-30T00:00:00Z"
                .parse::<Timestamp>()
                .unwrap()
                .as_second()
        );
        assert!(parse_time("yesterday", now).is_err());
    }

    #[test]
    fn manifests_or_bare_specs() {
        let (name, ns, spec) = parse_manifest(
            "apiVersion: rollback.frys.io/v1alpha1\nkind: RollbackPolicy\nmetadata: {name: web, namespace: shop}\nspec:\n  targetRef: {name: web}\n  metrics: [{name: e, preset: errorRate}]\n  strategies: [{type: VersionRollback}]\n",
        )
        .unwrap();
        assert_eq!(
            (name.as_str(), ns.as_deref(), spec.metrics.len()),
            ("web", Some("shop"), 1)
        );
        let (name, ns, _) = parse_manifest(
            "targetRef: {name: api}\nmetrics: [{name: e, preset: errorRate}]\nstrategies: [{type: VersionRollback}]\n",
        )
        .unwrap();
        assert_eq!((name.as_str(), ns), ("api", None));
    }
}
