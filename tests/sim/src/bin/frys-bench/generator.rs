//! Application metrics for every benchmark workload, served straight from memory: one
//! `/metrics/<namespace>` page per namespace, listed in the test Prometheus' file_sd directory.
//! Counters are computed from elapsed time, so `rate()` over them gives exactly the configured
//! request rate and error share, at any N and without a process per pod.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path, State};

/// Requests per second of every workload.
const RPS: f64 = 10.0;
/// Error share of a healthy workload (the errorRate preset's default critical is 0.05).
pub const HEALTHY_ERRORS: f64 = 0.001;
/// Error share of a workload running a faulty image.
pub const FAULTY_ERRORS: f64 = 0.3;

/// Error counter of one workload: `base` errors at `since` seconds, growing at `share` × RPS.
struct Errors {
    base: f64,
    since: f64,
    share: f64,
}

pub struct Generator {
    start: Instant,
    /// Workload names per namespace, in a stable order.
    names: BTreeMap<String, Vec<String>>,
    errors: HashMap<(String, String), Mutex<Errors>>,
}

impl Generator {
    pub fn new(workloads: &[(String, String)]) -> Self {
        let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut errors = HashMap::new();
        for (ns, name) in workloads {
            names.entry(ns.clone()).or_default().push(name.clone());
            errors.insert(
                (ns.clone(), name.clone()),
                Mutex::new(Errors {
                    base: 0.0,
                    since: 0.0,
                    share: HEALTHY_ERRORS,
                }),
            );
        }
        Self {
            start: Instant::now(),
            names,
            errors,
        }
    }

    /// Sets a workload's error share from now on (unknown workloads are ignored).
    pub fn set_error_share(&self, ns: &str, name: &str, share: f64) {
        let Some(e) = self.errors.get(&(ns.to_owned(), name.to_owned())) else {
            return;
        };
        let now = self.start.elapsed().as_secs_f64();
        let mut e = e.lock().expect("lock");
        if e.share == share {
            return;
        }
        e.base += RPS * e.share * (now - e.since);
        e.since = now;
        e.share = share;
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &String> {
        self.names.keys()
    }

    /// The exposition text of one namespace's workloads.
    pub fn render(&self, ns: &str) -> String {
        let Some(names) = self.names.get(ns) else {
            return String::new();
        };
        let now = self.start.elapsed().as_secs_f64();
        let mut out = String::with_capacity(names.len() * 700);
        out.push_str("# TYPE http_requests_total counter\n");
        for name in names {
            let total = RPS * now;
            let errors = {
                let e = self.errors[&(ns.to_owned(), name.clone())]
                    .lock()
                    .expect("lock");
                e.base + RPS * e.share * (now - e.since)
            };
            let l = format!("namespace=\"{ns}\",app=\"{name}\"");
            let _ = writeln!(
                out,
                "http_requests_total{{{l},code=\"200\"}} {:.3}",
                total - errors
            );
            let _ = writeln!(out, "http_requests_total{{{l},code=\"500\"}} {errors:.3}");
            // Every request answers within 50 ms: p95 reads 47.5 ms.
            for le in ["0.05", "0.1", "1", "+Inf"] {
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_bucket{{{l},le=\"{le}\"}} {total:.3}"
                );
            }
        }
        out
    }
}

/// Serves `/metrics/{namespace}` on `listener` until the process ends.
pub async fn serve(generator: Arc<Generator>, listener: tokio::net::TcpListener) {
    let app =
        axum::Router::new()
            .route(
                "/metrics/{ns}",
                axum::routing::get(
                    |State(g): State<Arc<Generator>>, Path(ns): Path<String>| async move {
                        g.render(&ns)
                    },
                ),
            )
            .with_state(generator);
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "metrics generator stopped");
    }
}

/// The file_sd document: one target per namespace page, scraped every `scrape`.
pub fn sd_document(generator: &Generator, address: &str, scrape: &str) -> serde_json::Value {
    let targets: Vec<serde_json::Value> = generator
        .namespaces()
        .map(|ns| {
            serde_json::json!({
                "targets": [address],
                "labels": {
                    "__metrics_path__": format!("/metrics/{ns}"),
                    "__scrape_interval__": scrape,
                    "__scrape_timeout__": scrape,
                    "bench_page": ns,
                },
            })
        })
        .collect();
    serde_json::Value::Array(targets)
}
