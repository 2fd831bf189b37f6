//! The operator under test: the release build, run as a separate process.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use jiff::Timestamp;
use tokio::io::{AsyncBufReadExt, BufReader};

pub struct Operator {
    child: tokio::process::Child,
    pub pid: u32,
    pub started: Timestamp,
    http: String,
    /// When each evaluator tick that evaluated something began (its "evaluating" log line),
    /// and when each endpoint's readings came back ("queried").
    ticks: Arc<Mutex<(Vec<Timestamp>, Vec<Timestamp>)>>,
    pub log: PathBuf,
}

/// The release binary: `--operator-bin`, else `$CARGO_TARGET_DIR/release`, else the
/// workspace's `target/release`.
pub fn binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = given.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
            PathBuf::from,
        );
        target.join("release/frys-rollback")
    });
    if !path.is_file() {
        bail!(
            "no operator binary at {} (cargo build --release --bin frys-rollback, or --operator-bin)",
            path.display()
        );
    }
    Ok(path)
}

impl Operator {
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        bin: PathBuf,
        prometheus_url: &str,
        namespace: Option<String>,
        lease_namespace: String,
        lease_name: String,
        interval: Duration,
        extra: Vec<String>,
    ) -> anyhow::Result<Operator> {
        let mut args: Vec<String> = vec![
            "run".into(),
            "--metrics-addr".into(),
            "127.0.0.1:0".into(),
            "--log-format".into(),
            "json".into(),
            "--prometheus-url".into(),
            prometheus_url.into(),
            "--interval".into(),
            format!("{}s", interval.as_secs()),
            "--leader-election-lease-name".into(),
            lease_name.clone(),
        ];
        if let Some(ns) = namespace {
            args.extend(["--namespace".into(), ns]);
        }
        args.extend(extra);
        let log = std::env::temp_dir().join(format!("{lease_name}.log"));
        let started = Timestamp::now();
        let mut child = tokio::process::Command::new(&bin)
            .args(&args)
            .env("POD_NAMESPACE", &lease_namespace)
            // The evaluator's tick lines time the detecting evaluations to the millisecond.
            .env(
                "RUST_LOG",
                std::env::var("FRYS_BENCH_RUST_LOG")
                    .unwrap_or_else(|_| "info,frys_rollback::controller::evaluator=debug".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("operator pid")?;
        let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
        let ticks = Arc::new(Mutex::new((Vec::new(), Vec::new())));
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let ticks = ticks.clone();
            let log = log.clone();
            tokio::spawn(async move {
                use std::io::Write;
                let mut file = std::fs::File::create(&log).ok();
                let mut tx = Some(tx);
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(f) = file.as_mut() {
                        let _ = writeln!(f, "{line}");
                    }
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                        continue;
                    };
                    if let Some(a) = v.get("address").and_then(|a| a.as_str())
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(a.to_owned());
                    }
                    let message = v.get("message").and_then(|m| m.as_str());
                    if let Some(kind @ ("evaluating" | "queried")) = message
                        && let Some(t) = v
                            .get("timestamp")
                            .and_then(|t| t.as_str())
                            .and_then(|t| t.parse::<Timestamp>().ok())
                    {
                        let mut ticks = ticks.lock().expect("lock");
                        match kind {
                            "evaluating" => ticks.0.push(t),
                            _ => ticks.1.push(t),
                        }
                    }
                }
            });
        }
        let address = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .with_context(|| {
                format!(
                    "the operator did not start within 30 s (log: {})",
                    log.display()
                )
            })?
            .with_context(|| format!("the operator exited (log: {})", log.display()))?;
        Ok(Operator {
            child,
            pid,
            started,
            http: format!("http://{address}"),
            ticks,
            log,
        })
    }

    /// The operator's /metrics page.
    async fn metrics_page(&self) -> Option<String> {
        reqwest::get(format!("{}/metrics", self.http))
            .await
            .ok()?
            .text()
            .await
            .ok()
    }

    /// frys_rollback_prometheus_queries_total, summed over outcomes.
    pub async fn queries_total(&self) -> Option<f64> {
        let page = self.metrics_page().await?;
        Some(crate::measure::sum_metric(
            &page,
            "frys_rollback_prometheus_queries_total",
            None,
        ))
    }

    /// `frys_rollback_last_evaluation_timestamp_seconds` of the policies in `namespaces`: the
    /// operator's own freshness figure (status.health.evaluatedAt is written only on news).
    pub async fn last_evaluations(&self, namespaces: &[String]) -> Option<Vec<f64>> {
        let page = self.metrics_page().await?;
        Some(crate::measure::metric_values(
            &page,
            "frys_rollback_last_evaluation_timestamp_seconds",
            |labels| {
                namespaces
                    .iter()
                    .any(|ns| labels.contains(&format!("policy_namespace=\"{ns}\"")))
            },
        ))
    }

    /// (RSS, peak RSS) in MB.
    pub fn memory(&self) -> Option<(f64, f64)> {
        crate::measure::memory_mb(self.pid)
    }

    /// When each evaluator tick that evaluated something began.
    pub fn tick_times(&self) -> Vec<Timestamp> {
        self.ticks.lock().expect("lock").0.clone()
    }

    /// When each endpoint's readings came back from Prometheus (its "queried" log line).
    pub fn readings_times(&self) -> Vec<Timestamp> {
        self.ticks.lock().expect("lock").1.clone()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        // Gone before the next phase's operator starts.
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(40));
        }
    }
}
