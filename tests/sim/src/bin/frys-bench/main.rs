//! frys-bench: the scale benchmark of frys-rollback (BENCHMARKS.md). A DEV TOOL, not part of
//! the operator or its image.
//!
//! On the running test environment (scripts/testenv.sh: real API server, real Prometheus) it
//! creates N Deployments and RollbackPolicies, serves metrics for all of them to Prometheus,
//! runs the release-built operator as a separate process and prints what the operator costs
//! and how fast it acts: start to first full evaluation, evaluation lag, API requests per
//! interval by verb, Prometheus queries per tick, CPU and peak RSS, detection-to-patch latency,
//! 100 simultaneous incidents (guard raised, then defaults), and grouped against per-policy
//! queries in the same run.

mod generator;
mod measure;
mod operator;
mod watch;
mod workloads;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::measure::percentile;
use crate::operator::Operator;
use crate::watch::Observed;
use crate::workloads::PolicyShape;

/// Scale benchmark of frys-rollback on the test environment (dev tool, not shipped).
#[derive(Parser, Debug, Clone)]
#[command(name = "frys-bench")]
struct Cli {
    /// Policies (and Deployments).
    #[arg(long, default_value_t = 100)]
    n: usize,
    /// Namespaces to spread them over. With 1 the operator is restricted to it (`--namespace`),
    /// so the run may share a test environment; with more it watches the whole cluster and the
    /// environment must be private to the run.
    #[arg(long, default_value_t = 1)]
    namespaces: usize,
    /// The policies' evaluation interval, in seconds.
    #[arg(long, default_value_t = 10)]
    interval: u64,
    /// Intervals of each steady-state measurement window.
    #[arg(long, default_value_t = 3)]
    steady_intervals: u64,
    /// Faults injected one after another (staggered by a quarter interval) for the
    /// detection-to-patch latency. 0 skips.
    #[arg(long, default_value_t = 20)]
    faults: usize,
    /// Simultaneous incidents (guard raised, then defaults); at most N. 0 skips.
    #[arg(long, default_value_t = 100)]
    incidents: usize,
    /// consecutiveFailures of the policies.
    #[arg(long, default_value_t = 2)]
    consecutive_failures: u32,
    /// Prometheus scrape interval of the generated series, in seconds (default: 1 up to 2,000
    /// policies, else 5).
    #[arg(long)]
    scrape_interval: Option<u64>,
    /// Skip the per-policy-queries phase (the peers' model).
    #[arg(long)]
    skip_per_policy: bool,
    /// The operator binary (default: $CARGO_TARGET_DIR or target, release/frys-rollback).
    #[arg(long)]
    operator_bin: Option<PathBuf>,
    /// Run the operator with leader election (a Lease renewed every 2 s). Off by default: one
    /// replica is measured, and under heavy load on these machines a renewal can miss its
    /// deadline, which ends the process (seen in a baseline run at N = 100).
    #[arg(long)]
    leader_election: bool,
    /// Extra arguments for every operator start (repeatable).
    #[arg(long = "operator-arg", allow_hyphen_values = true)]
    operator_args: Vec<String>,
    /// Leave the objects in place at the end.
    #[arg(long)]
    keep: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The test environment, from `scripts/testenv.sh env`.
struct Env {
    prometheus_url: String,
    request_log: PathBuf,
    sd_dir: PathBuf,
    prometheus_pid: Option<u32>,
}

impl Env {
    fn from_vars() -> anyhow::Result<Self> {
        let var = |k: &str| {
            std::env::var(k).with_context(|| {
                format!("{k} is not set: run eval \"$(scripts/testenv.sh up --no-sim)\" first")
            })
        };
        let prometheus_pid = std::env::var("FRYS_TESTENV_DIR").ok().and_then(|dir| {
            std::fs::read_to_string(PathBuf::from(dir).join("pids/prometheus"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        });
        Ok(Self {
            prometheus_url: var("PROMETHEUS_URL")?,
            request_log: var("FRYS_REQUEST_LOG")?.into(),
            sd_dir: var("FRYS_SIM_SD_DIR")?.into(),
            prometheus_pid,
        })
    }
}

/// Removes the file_sd file when the run ends, however it ends.
struct SdFile(PathBuf);

impl Drop for SdFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The report: figure name → value (printed in order, also as JSON).
#[derive(Default, serde::Serialize)]
struct Report {
    figures: BTreeMap<String, serde_json::Value>,
    #[serde(skip)]
    order: Vec<String>,
}

impl Report {
    fn put(&mut self, key: &str, value: impl serde::Serialize) {
        let value = serde_json::to_value(value).unwrap_or_default();
        let shown = match &value {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        println!("{key}: {shown}");
        if !self.figures.contains_key(key) {
            self.order.push(key.to_owned());
        }
        self.figures.insert(key.to_owned(), value);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if cli.n == 0 || cli.namespaces == 0 {
        bail!("--n and --namespaces must be positive");
    }
    let env = Env::from_vars()?;
    let client = Client::try_default().await.context("KUBECONFIG")?;
    let bin = operator::binary(cli.operator_bin.clone())?;
    let run = format!(
        "{:06x}",
        (Timestamp::now().as_millisecond() as u64 ^ u64::from(std::process::id())) & 0xff_ffff
    );
    let namespaces: Vec<String> = (0..cli.namespaces)
        .map(|k| format!("fb-{run}-{k}"))
        .collect();
    let workloads = workloads::names(cli.n, &namespaces);
    let interval = Duration::from_secs(cli.interval.max(1));
    let scrape = cli
        .scrape_interval
        .unwrap_or(if cli.n > 2000 { 5 } else { 1 });
    // rate() needs a few samples; verification reads the signals again once the bad samples
    // have left the window.
    let rate_window = (4 * scrape).max(10);
    let shape = PolicyShape {
        interval: format!("{}s", interval.as_secs()),
        rate_window: format!("{rate_window}s"),
        consecutive_failures: cli.consecutive_failures,
        stabilization_delay: format!("{}s", rate_window + 2 * scrape),
    };
    let mut report = Report::default();
    report.put("run", &run);
    report.put("policies", cli.n);
    report.put("namespaces", cli.namespaces);
    report.put("interval_s", interval.as_secs());
    report.put("scrape_interval_s", scrape);
    report.put("operator_binary", bin.display().to_string());
    report.put(
        "machine",
        format!(
            "{} cores (shared with the API server, Prometheus and anything else running)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ),
    );

    // The generator first, so Prometheus has series by the time the operator asks.
    let generator = Arc::new(generator::Generator::new(&workloads));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    tokio::spawn(generator::serve(generator.clone(), listener));
    let sd = SdFile(env.sd_dir.join(format!("bench-{run}.json")));
    let tmp = sd.0.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(&generator::sd_document(
            &generator,
            &address,
            &format!("{scrape}s"),
        ))?,
    )?;
    std::fs::rename(&tmp, &sd.0)?;

    let (deploy_s, policy_s) = workloads::create(&client, &namespaces, &workloads, &run, &shape)
        .await
        .context("creating the workloads")?;
    report.put("create_deployments_s", round(deploy_s));
    report.put("create_policies_s", round(policy_s));
    tokio::spawn(workloads::controller(
        client.clone(),
        run.clone(),
        generator.clone(),
    ));
    let observed = watch::start(client.clone(), &run);

    let prom = reqwest::Client::new();
    wait_for_series(&prom, &env.prometheus_url, &run, cli.n).await?;
    // A full rate window of samples before the first evaluation.
    tokio::time::sleep(Duration::from_secs(rate_window)).await;

    let single_ns = (cli.namespaces == 1).then(|| namespaces[0].clone());
    let lease_ns = namespaces[0].clone();
    let raised: Vec<String> = vec![
        "--max-concurrent-remediations".into(),
        "100000".into(),
        "--correlation-min-policies".into(),
        "100000".into(),
    ];
    let start = |phase: &'static str, extra: Vec<String>| {
        let mut args = cli.operator_args.clone();
        if !cli.leader_election {
            args.push("--leader-election=false".into());
        }
        args.extend(extra);
        Operator::start(
            bin.clone(),
            &env.prometheus_url,
            single_ns.clone(),
            lease_ns.clone(),
            format!("frys-bench-{run}-{phase}"),
            interval,
            args,
        )
    };

    // Phase 1: grouped queries (the default), blast-radius guard raised.
    let op = start("grouped", raised.clone()).await?;
    report.put("grouped.operator_log", op.log.display().to_string());
    let (first, status) = first_full_evaluation(
        &op,
        &observed,
        &namespaces,
        cli.n,
        interval,
        Statuses::Written,
    )
    .await;
    report.put("grouped.first_full_evaluation_s", first.map(round));
    report.put("grouped.first_full_status_s", status.map(round));
    // Start-up transients (first status writes, readiness Events) are not steady state.
    tokio::time::sleep(interval).await;
    let grouped = steady(&cli, &env, &op, &observed, &namespaces, interval).await?;
    grouped.put(&mut report, "grouped");
    report.put(
        "grouped.peak_rss_mb_before_faults",
        op.memory().map(|(_, hwm)| round(hwm)),
    );

    // A restart on unchanged state: every policy has its status already, so the new process
    // must evaluate all of them at once and write nothing (no status, no Kubernetes Event).
    drop(op);
    let offset = measure::log_offset(&env.request_log);
    let op = start("restart", raised.clone()).await?;
    let (first, _) = first_full_evaluation(
        &op,
        &observed,
        &namespaces,
        cli.n,
        interval,
        Statuses::Unchanged,
    )
    .await;
    report.put("restart.first_full_evaluation_s", first.map(round));
    tokio::time::sleep(interval * 2).await;
    let (requests, _) = measure::read_requests(&env.request_log, offset)?;
    let writes: BTreeMap<String, usize> = measure::count_by_verb(
        requests
            .iter()
            .filter(|r| r.time >= op.started && in_scope(r, &namespaces, namespaces.len() > 1))
            .filter(|r| matches!(r.verb.as_str(), "create" | "update" | "patch" | "delete")),
    );
    report.put("restart.writes_in_first_2_intervals", &writes);
    report.put(
        "restart.kubernetes_events_created",
        writes
            .iter()
            .filter(|(k, _)| k.contains("events") && !k.contains("rollbackevents"))
            .map(|(_, v)| v)
            .sum::<usize>(),
    );

    let mut used = 0usize;
    if cli.faults > 0 {
        let faults = cli.faults.min(cli.n);
        let targets: Vec<(String, String)> = workloads.iter().take(faults).cloned().collect();
        used = faults;
        let latencies = incidents(
            &client,
            &env,
            &op,
            &observed,
            &targets,
            interval / 4,
            interval,
            cli.consecutive_failures,
            &run,
        )
        .await?;
        report.put("faults.injected", faults);
        latencies.put(&mut report, "faults", interval);
    }
    if cli.incidents > 0 {
        let m = cli.incidents.min(cli.n);
        let targets = pick(&workloads, &mut used, m);
        wait_all_healthy(&observed, &targets, interval).await;
        let burst = incidents(
            &client,
            &env,
            &op,
            &observed,
            &targets,
            Duration::ZERO,
            interval,
            cli.consecutive_failures,
            &run,
        )
        .await?;
        report.put("incidents_raised.count", m);
        burst.put(&mut report, "incidents_raised", interval);
    }
    // The restarted process's, through the faults and the burst.
    report.put(
        "incidents_raised.peak_rss_mb",
        op.memory().map(|(_, hwm)| round(hwm)),
    );
    drop(op);

    // Phase 2: the same burst with the default guard: the correlation hold must engage.
    if cli.incidents > 0 {
        let m = cli.incidents.min(cli.n);
        let op = start("defaults", vec![]).await?;
        let targets = pick(&workloads, &mut used, m);
        wait_all_healthy(&observed, &targets, interval).await;
        let held = held_burst(
            &client,
            &op,
            &observed,
            &targets,
            interval,
            cli.consecutive_failures,
            &namespaces,
            &run,
        )
        .await?;
        held.put(&mut report);
        drop(op);
    }

    // Phase 3: the peers' model, one query per policy per signal, in the same run.
    if !cli.skip_per_policy {
        let op = start("per-policy", vec!["--per-policy-queries".into()]).await?;
        let (first, _) = first_full_evaluation(
            &op,
            &observed,
            &namespaces,
            cli.n,
            interval,
            Statuses::Unchanged,
        )
        .await;
        report.put("per_policy.first_full_evaluation_s", first.map(round));
        tokio::time::sleep(interval).await;
        let per = steady(&cli, &env, &op, &observed, &namespaces, interval).await?;
        per.put(&mut report, "per_policy");
        report.put(
            "per_policy.peak_rss_mb",
            op.memory().map(|(_, hwm)| round(hwm)),
        );
        if grouped.queries_per_tick > 0.0 {
            report.put(
                "ratio.queries_per_tick_per_policy_over_grouped",
                round(per.queries_per_tick / grouped.queries_per_tick),
            );
        }
        if let (Some(a), Some(b)) = (grouped.prometheus_cpu_pct, per.prometheus_cpu_pct)
            && a > 0.0
        {
            report.put("ratio.prometheus_cpu_per_policy_over_grouped", round(b / a));
        }
        if grouped.operator_cpu_pct > 0.0 {
            report.put(
                "ratio.operator_cpu_per_policy_over_grouped",
                round(per.operator_cpu_pct / grouped.operator_cpu_pct),
            );
        }
        if !cli.keep {
            cleanup(&client, &namespaces, &run).await;
        }
        drop(op);
    } else if !cli.keep {
        let op = start("cleanup", vec![]).await?;
        cleanup(&client, &namespaces, &run).await;
        drop(op);
    }
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report.figures)?)?;
    }
    println!("done");
    Ok(())
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The next `m` workloads not used yet; when the run has too few, the earliest ones again
/// (their cooldown is 1 s, and they are healthy again before they are used).
fn pick(workloads: &[(String, String)], used: &mut usize, m: usize) -> Vec<(String, String)> {
    let out = (0..m)
        .map(|i| workloads[(*used + i) % workloads.len()].clone())
        .collect();
    *used = (*used + m) % workloads.len();
    out
}

/// Waits until Prometheus has series of every workload of this run.
async fn wait_for_series(
    prom: &reqwest::Client,
    url: &str,
    run: &str,
    n: usize,
) -> anyhow::Result<()> {
    let query = format!(
        "count(count by (namespace, app) (http_requests_total{{namespace=~\"fb-{run}-.*\"}}))"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let got = prom
            .get(reqwest::Url::parse_with_params(
                &format!("{url}/api/v1/query"),
                &[("query", query.as_str())],
            )?)
            .send()
            .await
            .ok();
        let count = match got {
            Some(r) => r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| {
                    v.pointer("/data/result/0/value/1")?
                        .as_str()?
                        .parse::<usize>()
                        .ok()
                })
                .unwrap_or(0),
            None => 0,
        };
        if count >= n {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("Prometheus has series of {count} of {n} workloads after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Seconds from the operator's start until every policy was evaluated after it (the operator's
/// freshness gauge), and until every policy's status shows such an evaluation (the status
/// writes of a start are paced by the API budget, so this comes later at large N).
async fn first_full_evaluation(
    op: &Operator,
    observed: &Observed,
    namespaces: &[String],
    n: usize,
    interval: Duration,
    statuses: Statuses,
) -> (Option<f64>, Option<f64>) {
    let started = op.started;
    let since = started.as_millisecond() as f64 / 1000.0;
    // evaluatedAt has second precision.
    let floor = Timestamp::from_second(started.as_second()).expect("a valid second");
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(300)
        + interval * 10
        + Duration::from_millis(n as u64 * 40);
    let mut evaluated = None;
    loop {
        if evaluated.is_none() {
            let last = op.last_evaluations(namespaces).await.unwrap_or_default();
            if last.iter().filter(|t| **t >= since).count() >= n {
                evaluated = Some(Timestamp::now().duration_since(started).as_secs_f64());
                if statuses == Statuses::Unchanged {
                    return (evaluated, None);
                }
            }
        }
        let fresh = observed.count_evaluated_since(floor);
        if fresh >= n {
            let status = observed
                .all_evaluated_since_seen_at(floor)
                .map(|seen| seen.duration_since(started).as_secs_f64());
            return (evaluated.or(status), status);
        }
        if tokio::time::Instant::now() > deadline {
            eprintln!(
                "first full evaluation: only {fresh} of {n} policy statuses show an evaluation before the deadline"
            );
            return (evaluated, None);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether a start's first evaluations write every status (a fresh install: the first status
/// is news) or none (a restart on unchanged state: only the gauge shows them).
#[derive(PartialEq, Eq, Clone, Copy)]
enum Statuses {
    Written,
    Unchanged,
}

/// One steady-state window's figures.
struct Steady {
    window_s: f64,
    intervals: f64,
    requests_per_interval: BTreeMap<String, f64>,
    writes_per_policy_per_interval: f64,
    queries_per_tick: f64,
    prometheus_queries_per_tick: Option<f64>,
    /// Age of status.health.evaluatedAt (written on news only: up to the news bound old).
    lag_p50: Option<f64>,
    lag_max: Option<f64>,
    /// Age of each policy's last evaluation by the operator's own gauge, and the most policies
    /// missing from it in any sample.
    freshness_p50: Option<f64>,
    freshness_max: Option<f64>,
    freshness_uncovered: usize,
    operator_cpu_pct: f64,
    prometheus_cpu_pct: Option<f64>,
    rss_mb: Option<f64>,
}

impl Steady {
    fn put(&self, report: &mut Report, phase: &str) {
        report.put(&format!("{phase}.steady_window_s"), round(self.window_s));
        report.put(&format!("{phase}.evaluation_lag_p50_s"), self.freshness_p50);
        report.put(&format!("{phase}.evaluation_lag_max_s"), self.freshness_max);
        report.put(
            &format!("{phase}.policies_without_evaluation_gauge"),
            self.freshness_uncovered,
        );
        report.put(&format!("{phase}.evaluated_at_age_p50_s"), self.lag_p50);
        report.put(&format!("{phase}.evaluated_at_age_max_s"), self.lag_max);
        report.put(
            &format!("{phase}.api_requests_per_interval"),
            self.requests_per_interval
                .iter()
                .map(|(k, v)| (k.clone(), round(*v)))
                .collect::<BTreeMap<_, _>>(),
        );
        report.put(
            &format!("{phase}.api_writes_per_policy_per_interval"),
            round(self.writes_per_policy_per_interval),
        );
        report.put(
            &format!("{phase}.prometheus_queries_per_tick"),
            round(self.queries_per_tick),
        );
        report.put(
            &format!("{phase}.prometheus_query_requests_per_tick_seen_by_prometheus"),
            self.prometheus_queries_per_tick.map(round),
        );
        report.put(
            &format!("{phase}.operator_cpu_pct_of_a_core"),
            round(self.operator_cpu_pct),
        );
        report.put(
            &format!("{phase}.prometheus_cpu_pct_of_a_core"),
            self.prometheus_cpu_pct.map(round),
        );
        report.put(&format!("{phase}.operator_rss_mb"), self.rss_mb.map(round));
        let _ = self.intervals;
    }
}

/// Whether a request of the operator belongs to this run.
fn in_scope(r: &measure::Request, namespaces: &[String], cluster_wide: bool) -> bool {
    r.user_agent.starts_with("frys-rollback/")
        && (namespaces.contains(&r.namespace)
            || (r.resource == "namespaces" && namespaces.contains(&r.name))
            || (cluster_wide && r.namespace.is_empty()))
}

async fn steady(
    cli: &Cli,
    env: &Env,
    op: &Operator,
    observed: &Observed,
    namespaces: &[String],
    interval: Duration,
) -> anyhow::Result<Steady> {
    let window = interval * cli.steady_intervals.max(1) as u32;
    let prom = reqwest::Client::new();
    let prom_page = |prom: reqwest::Client, url: String| async move {
        let page = prom
            .get(format!("{url}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(measure::sum_metric(
            &page,
            "prometheus_http_requests_total",
            Some("handler=\"/api/v1/query\""),
        ))
    };
    let offset = measure::log_offset(&env.request_log);
    let t0 = Timestamp::now();
    let q0 = op.queries_total().await.unwrap_or(0.0);
    let pq0 = prom_page(prom.clone(), env.prometheus_url.clone()).await;
    let c0 = measure::cpu_seconds(op.pid);
    let pc0 = env.prometheus_pid.and_then(measure::cpu_seconds);
    let (mut ages, mut freshness, mut uncovered) = (vec![], vec![], 0usize);
    let samples = (cli.steady_intervals.max(1) * 4) as u32;
    for _ in 0..samples {
        tokio::time::sleep(window / samples).await;
        let now = Timestamp::now();
        ages.extend(observed.ages(now));
        let last = op.last_evaluations(namespaces).await.unwrap_or_default();
        uncovered = uncovered.max(observed.policies().saturating_sub(last.len()));
        let now = now.as_millisecond() as f64 / 1000.0;
        freshness.extend(last.iter().map(|t| (now - t).max(0.0)));
    }
    let t1 = Timestamp::now();
    let q1 = op.queries_total().await.unwrap_or(0.0);
    let pq1 = prom_page(prom.clone(), env.prometheus_url.clone()).await;
    let c1 = measure::cpu_seconds(op.pid);
    let pc1 = env.prometheus_pid.and_then(measure::cpu_seconds);
    let elapsed = t1.duration_since(t0).as_secs_f64();
    let intervals = elapsed / interval.as_secs_f64();
    // The last requests of the window reach the log a moment later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (requests, _) = measure::read_requests(&env.request_log, offset)?;
    let cluster_wide = namespaces.len() > 1;
    let mine: Vec<&measure::Request> = requests
        .iter()
        .filter(|r| r.time >= t0 && r.time <= t1 && in_scope(r, namespaces, cluster_wide))
        .collect();
    let counts = measure::count_by_verb(mine.iter().copied());
    let writes = mine
        .iter()
        .filter(|r| matches!(r.verb.as_str(), "create" | "update" | "patch" | "delete"))
        .count() as f64;
    let n = observed.policies().max(1) as f64;
    let pct = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / elapsed * 100.0);
    Ok(Steady {
        window_s: elapsed,
        intervals,
        requests_per_interval: counts
            .into_iter()
            .map(|(k, v)| (k, v as f64 / intervals))
            .collect(),
        writes_per_policy_per_interval: writes / intervals / n,
        queries_per_tick: (q1 - q0) / intervals,
        prometheus_queries_per_tick: match (pq0, pq1) {
            (Some(a), Some(b)) => Some((b - a) / intervals),
            _ => None,
        },
        lag_p50: percentile(&ages, 50.0).map(round),
        lag_max: percentile(&ages, 100.0).map(round),
        freshness_p50: percentile(&freshness, 50.0).map(round),
        freshness_max: percentile(&freshness, 100.0).map(round),
        freshness_uncovered: uncovered,
        operator_cpu_pct: pct(c0, c1).unwrap_or(0.0),
        prometheus_cpu_pct: pct(pc0, pc1),
        rss_mb: op.memory().map(|(rss, _)| rss),
    })
}

/// A release of a faulty image for the workload (the stand-in controller makes its ReplicaSet;
/// the generator serves errors for it).
async fn release(client: &Client, ns: &str, name: &str, image: String) -> anyhow::Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
    api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await?;
    Ok(())
}

/// Detection-to-patch latencies and the spread of a set of incidents.
struct Incidents {
    detection_to_patch_ms: Vec<f64>,
    /// From the detecting tick's readings back from Prometheus to the patch: the operator's
    /// own share (the queries of a tick take what they take at this N).
    readings_to_patch_ms: Vec<f64>,
    /// Seconds between the first and the last remediation patch, and verification.
    patch_spread_s: Option<f64>,
    verified_spread_s: Option<f64>,
    remediated: usize,
    verified: usize,
    total: usize,
    precise: bool,
}

impl Incidents {
    fn put(&self, report: &mut Report, phase: &str, interval: Duration) {
        report.put(
            &format!("{phase}.remediated"),
            format!("{} of {}", self.remediated, self.total),
        );
        report.put(
            &format!("{phase}.verified"),
            format!("{} of {}", self.verified, self.total),
        );
        report.put(
            &format!("{phase}.detection_to_patch_ms_p50"),
            percentile(&self.detection_to_patch_ms, 50.0).map(round),
        );
        report.put(
            &format!("{phase}.detection_to_patch_ms_p99"),
            percentile(&self.detection_to_patch_ms, 99.0).map(round),
        );
        report.put(
            &format!("{phase}.readings_to_patch_ms_p50"),
            percentile(&self.readings_to_patch_ms, 50.0).map(round),
        );
        report.put(
            &format!("{phase}.readings_to_patch_ms_p99"),
            percentile(&self.readings_to_patch_ms, 99.0).map(round),
        );
        report.put(
            &format!("{phase}.detection_time_source"),
            if self.precise {
                "the evaluator tick's log line (ms)"
            } else {
                "status.incident.startedAt (1 s precision)"
            },
        );
        report.put(
            &format!("{phase}.patch_spread_s"),
            self.patch_spread_s.map(round),
        );
        report.put(
            &format!("{phase}.verified_spread_s"),
            self.verified_spread_s.map(round),
        );
        report.put(
            &format!("{phase}.within_one_interval"),
            self.total > 0
                && self.verified == self.total
                && self
                    .verified_spread_s
                    .is_some_and(|s| s <= interval.as_secs_f64())
                && self
                    .patch_spread_s
                    .is_some_and(|s| s <= interval.as_secs_f64()),
        );
    }
}

/// Injects a fault in each target (`stagger` apart), waits for every remediation to be
/// verified, and measures each from the detecting evaluation to the accepted patch.
#[allow(clippy::too_many_arguments)]
async fn incidents(
    client: &Client,
    env: &Env,
    op: &Operator,
    observed: &Observed,
    targets: &[(String, String)],
    stagger: Duration,
    interval: Duration,
    streak: u32,
    run: &str,
) -> anyhow::Result<Incidents> {
    let offset = measure::log_offset(&env.request_log);
    let since = Timestamp::now();
    let seq = observed.next_release();
    if stagger.is_zero() {
        futures::stream::iter(
            targets.iter().map(|(ns, name)| {
                release(client, ns, name, format!("bench:v2-faulty-{run}-{seq}"))
            }),
        )
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    } else {
        for (ns, name) in targets {
            release(client, ns, name, format!("bench:v2-faulty-{run}-{seq}")).await?;
            tokio::time::sleep(stagger).await;
        }
    }
    // Streak evaluations, the rate window, stabilization and verification.
    let deadline = tokio::time::Instant::now()
        + interval * (streak + 4)
        + stagger * targets.len() as u32
        + Duration::from_secs(180);
    loop {
        let done = targets
            .iter()
            .filter(|(ns, name)| observed.succeeded_since(ns, name, since).is_some())
            .count();
        if done == targets.len() || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (requests, _) = measure::read_requests(&env.request_log, offset)?;
    let ticks = op.tick_times();
    let readings = op.readings_times();
    let mut out = Incidents {
        detection_to_patch_ms: vec![],
        readings_to_patch_ms: vec![],
        patch_spread_s: None,
        verified_spread_s: None,
        remediated: 0,
        verified: 0,
        total: targets.len(),
        precise: !ticks.is_empty(),
    };
    let mut patches = vec![];
    let mut verified = vec![];
    for (ns, name) in targets {
        let Some(started) = observed.incident_started_since(ns, name, since) else {
            continue;
        };
        let patch = requests.iter().find(|r| {
            r.user_agent.starts_with("frys-rollback/")
                && r.verb == "patch"
                && r.resource == "deployments"
                && r.subresource.is_empty()
                && r.namespace == *ns
                && r.name == *name
                && r.code < 300
                && r.time >= started
        });
        // The evaluation at which the streak reached consecutiveFailures: the tick that began
        // within the second startedAt names.
        let detected = ticks
            .iter()
            .find(|t| **t >= started && t.as_second() == started.as_second())
            .copied()
            .unwrap_or(started);
        if let Some(p) = patch {
            out.remediated += 1;
            patches.push(p.time);
            out.detection_to_patch_ms
                .push(p.time.duration_since(detected).as_secs_f64() * 1000.0);
            if out.precise
                && let Some(back) = readings.iter().find(|t| **t >= detected && **t <= p.time)
            {
                out.readings_to_patch_ms
                    .push(p.time.duration_since(*back).as_secs_f64() * 1000.0);
            }
        }
        if let Some(v) = observed.succeeded_since(ns, name, since) {
            out.verified += 1;
            verified.push(v);
        }
    }
    let spread_of = |v: &[Timestamp]| {
        let lo = v.iter().min()?;
        let hi = v.iter().max()?;
        Some(hi.duration_since(*lo).as_secs_f64())
    };
    out.patch_spread_s = spread_of(&patches);
    out.verified_spread_s = spread_of(&verified);
    Ok(out)
}

/// Waits (bounded) until the targets' policies are healthy with no incident, so they can fail
/// again.
async fn wait_all_healthy(observed: &Observed, targets: &[(String, String)], interval: Duration) {
    let deadline = tokio::time::Instant::now() + interval * 6 + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if targets.iter().all(|(ns, n)| observed.healthy(ns, n)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("warning: not every target was healthy again before the next burst");
}

/// What the default guard did with a burst.
struct Held {
    total: usize,
    remediations: usize,
    hold_events: usize,
    sample: Option<String>,
}

impl Held {
    fn put(&self, report: &mut Report) {
        report.put("incidents_defaults.count", self.total);
        report.put("incidents_defaults.remediations_started", self.remediations);
        report.put(
            "incidents_defaults.correlation_hold_events",
            self.hold_events,
        );
        report.put(
            "incidents_defaults.hold_engaged",
            self.hold_events > 0 && self.remediations < self.total,
        );
        report.put("incidents_defaults.hold_message", self.sample.clone());
    }
}

#[allow(clippy::too_many_arguments)]
async fn held_burst(
    client: &Client,
    _op: &Operator,
    observed: &Observed,
    targets: &[(String, String)],
    interval: Duration,
    streak: u32,
    namespaces: &[String],
    run: &str,
) -> anyhow::Result<Held> {
    let since = Timestamp::now();
    let seq = observed.next_release();
    futures::stream::iter(
        targets
            .iter()
            .map(|(ns, name)| release(client, ns, name, format!("bench:v2-faulty-{run}-{seq}"))),
    )
    .buffer_unordered(32)
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<anyhow::Result<Vec<()>>>()?;
    tokio::time::sleep(interval * (streak + 2) + Duration::from_secs(5)).await;
    let remediations = targets
        .iter()
        .filter(|(ns, name)| observed.event_created_since(ns, name, since))
        .count();
    let mut hold_events = 0;
    let mut sample = None;
    for ns in namespaces {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
        let events = api.list(&ListParams::default()).await?;
        for e in events.items {
            let reason = e.reason.clone().unwrap_or_default();
            let at = e.metadata.creation_timestamp.as_ref().map(|t| t.0);
            if reason.contains("Correlat") && at.is_none_or(|t| t.as_second() >= since.as_second())
            {
                hold_events += 1;
                if sample.is_none() {
                    sample = Some(format!(
                        "{}: {}",
                        reason,
                        e.note.clone().unwrap_or_default()
                    ));
                }
            }
        }
    }
    // Back to the good release, by hand, as a person would after reading the alert.
    futures::stream::iter(
        targets
            .iter()
            .map(|(ns, name)| release(client, ns, name, workloads::GOOD_IMAGE.to_owned())),
    )
    .buffer_unordered(32)
    .collect::<Vec<_>>()
    .await;
    Ok(Held {
        total: targets.len(),
        remediations,
        hold_events,
        sample,
    })
}

/// Deletes the run's objects (policies first, while an operator runs to remove finalizers).
async fn cleanup(client: &Client, namespaces: &[String], run: &str) {
    let gvk = kube::api::GroupVersionKind::gvk("rollback.frys.io", "v1alpha1", "RollbackPolicy");
    let resource = kube::api::ApiResource::from_gvk(&gvk);
    let selector = ListParams::default().labels(&format!("{}={run}", workloads::RUN_LABEL));
    for ns in namespaces {
        let api: Api<kube::api::DynamicObject> =
            Api::namespaced_with(client.clone(), ns, &resource);
        let _ = api.delete_collection(&Default::default(), &selector).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for ns in namespaces {
        let api: Api<kube::api::DynamicObject> =
            Api::namespaced_with(client.clone(), ns, &resource);
        while tokio::time::Instant::now() < deadline {
            match api.list(&ListParams::default().limit(1)).await {
                Ok(l) if l.items.is_empty() => break,
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
    for ns in namespaces {
        let d: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let _ = d
            .delete_collection(&Default::default(), &ListParams::default())
            .await;
        let rs: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(client.clone(), ns);
        let _ = rs
            .delete_collection(&Default::default(), &ListParams::default())
            .await;
        let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let _ = nss.delete(ns, &Default::default()).await;
    }
}
