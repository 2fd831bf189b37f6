//! Instant queries against the environment's Prometheus.

use std::time::Duration;

/// The value of an instant query returning one sample, or None when it returns nothing.
pub async fn query_scalar(base: &str, promql: &str) -> Option<f64> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let body: serde_json::Value = client
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", promql)])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let result = body.pointer("/data/result/0/value/1")?.as_str()?;
    result.parse().ok().filter(|v: &f64| v.is_finite())
}

/// A Prometheus of one test's own, scraping the same simulator targets as the shared one, for
/// tests that stop it or put something in front of it. Killed on drop.
pub struct PrivatePrometheus {
    child: tokio::process::Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl PrivatePrometheus {
    pub async fn start() -> PrivatePrometheus {
        let env = super::env();
        let bin = env
            .prometheus_bin
            .as_ref()
            .expect("FRYS_PROMETHEUS_BIN (local test environment)");
        let sd_dir = env
            .testenv_dir
            .as_ref()
            .expect("local test environment")
            .join("sd");
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n\
             - job_name: frys-sim\n  \
               fallback_scrape_protocol: PrometheusText0.0.4\n  \
               file_sd_configs: [{{files: ['{}/*.json'], refresh_interval: 1s}}]\n",
            sd_dir.display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting a private Prometheus");
        let url = format!("http://127.0.0.1:{port}");
        let ready = format!("{url}/-/ready");
        super::eventually(
            "private Prometheus ready",
            Duration::from_secs(30),
            || async {
                reqwest::get(&ready)
                    .await
                    .ok()?
                    .status()
                    .is_success()
                    .then_some(())
            },
        )
        .await;
        PrivatePrometheus {
            child,
            url,
            _dir: dir,
        }
    }

    /// Stops it (as an outage would) and waits until it is gone.
    pub async fn stop(&mut self) {
        self.child
            .kill()
            .await
            .expect("stopping the private Prometheus");
    }
}
