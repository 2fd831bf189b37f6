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
    /// How it was started, for [`PrivatePrometheus::restart`].
    command: (std::path::PathBuf, Vec<String>),
    _dir: tempfile::TempDir,
    _rules: Option<tempfile::TempDir>,
}

impl PrivatePrometheus {
    pub async fn start() -> PrivatePrometheus {
        Self::start_with("").await
    }

    /// As [`PrivatePrometheus::start`], with `rules` (a rule file's YAML) evaluated every
    /// second and its alerts sent to the Alertmanager at `alertmanager` (host:port).
    pub async fn start_with_rules(rules: &str, alertmanager: &str) -> PrivatePrometheus {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.yml");
        std::fs::write(&path, rules).unwrap();
        let extra = format!(
            "rule_files: ['{}']\n\
             alerting:\n  alertmanagers: [{{static_configs: [{{targets: ['{alertmanager}']}}]}}]\n",
            path.display()
        );
        let mut p = Self::start_with(&extra).await;
        p._rules = Some(dir);
        p
    }

    async fn start_with(extra_config: &str) -> PrivatePrometheus {
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
               file_sd_configs: [{{files: ['{}/*.json'], refresh_interval: 1s}}]\n{extra_config}",
            sd_dir.display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args = vec![
            format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ];
        let command = (bin.clone(), args);
        let child = spawn(&command);
        let url = format!("http://127.0.0.1:{port}");
        wait_ready(&url).await;
        PrivatePrometheus {
            child,
            url,
            command,
            _dir: dir,
            _rules: None,
        }
    }

    /// Starts it again after [`PrivatePrometheus::stop`]: same address, same data.
    pub async fn restart(&mut self) {
        self.child = spawn(&self.command);
        wait_ready(&self.url).await;
    }

    /// Stops it (as an outage would) and waits until it is gone.
    pub async fn stop(&mut self) {
        self.child
            .kill()
            .await
            .expect("stopping the private Prometheus");
    }
}

fn spawn((bin, args): &(std::path::PathBuf, Vec<String>)) -> tokio::process::Child {
    tokio::process::Command::new(bin)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting a private Prometheus")
}

async fn wait_ready(url: &str) {
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
}

/// A small reverse proxy in front of Prometheus that requires one of the `accepted`
/// `Authorization` values (`Bearer <token>`, `Basic <base64>`), as an authenticating gateway
/// would, and answers 401 `Unauthorized` otherwise. Counts what it let through and refused.
pub struct AuthProxy {
    pub url: String,
    authorized: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _server: tokio::task::JoinHandle<()>,
}

impl AuthProxy {
    pub async fn start(upstream: &str, accepted: &[&str]) -> AuthProxy {
        use std::sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        };

        use axum::{
            body::Bytes,
            extract::State,
            http::{HeaderMap, Method, StatusCode, Uri},
            response::IntoResponse,
        };

        #[derive(Clone)]
        struct Proxy {
            upstream: String,
            accepted: Vec<String>,
            client: reqwest::Client,
            authorized: Arc<AtomicUsize>,
            refused: Arc<AtomicUsize>,
        }
        async fn forward(
            State(p): State<Proxy>,
            method: Method,
            uri: Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> axum::response::Response {
            let given = headers.get("authorization").and_then(|v| v.to_str().ok());
            if !given.is_some_and(|g| p.accepted.iter().any(|a| a == g)) {
                p.refused.fetch_add(1, Ordering::SeqCst);
                return (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
            }
            p.authorized.fetch_add(1, Ordering::SeqCst);
            let mut request = p
                .client
                .request(method, format!("{}{}", p.upstream, uri))
                .body(body);
            if let Some(ct) = headers.get("content-type") {
                request = request.header("content-type", ct);
            }
            match request.send().await {
                Ok(r) => {
                    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
                    let content_type = r
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("application/json")
                        .to_owned();
                    let body = r.bytes().await.unwrap_or_default();
                    (status, [("content-type", content_type)], body).into_response()
                }
                Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            }
        }

        let authorized = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let state = Proxy {
            upstream: upstream.trim_end_matches('/').to_owned(),
            accepted: accepted.iter().map(|a| a.to_string()).collect(),
            client: reqwest::Client::new(),
            authorized: authorized.clone(),
            refused: refused.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        AuthProxy {
            url,
            authorized,
            refused,
            _server: server,
        }
    }

    pub fn authorized(&self) -> usize {
        self.authorized.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn refused(&self) -> usize {
        self.refused.load(std::sync::atomic::Ordering::SeqCst)
    }
}
