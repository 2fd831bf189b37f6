//! The simulated applications: one HTTP listener per ready pod IP and container port, plus the
//! loop that keeps listeners and metrics in step with the pods in the cluster.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::{Notify, oneshot, watch};
use tracing::{debug, info, warn};

use crate::shared::{Shared, lock, read, write};
use crate::simpod::SimPod;

/// Longest delay an HTTP answer gets from a latency fault.
const MAX_HTTP_DELAY: Duration = Duration::from_secs(30);
/// Metrics advance at least this often.
const TICK: Duration = Duration::from_millis(250);
/// Wait before retrying a listener that failed to bind.
const BIND_RETRY: Duration = Duration::from_secs(5);

/// Keeps listeners and metrics in step with the pod cache until shutdown.
pub async fn run(
    shared: Arc<Shared>,
    pods_changed: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut servers = PodServers::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = pods_changed.notified() => {}
            _ = shutdown.changed() => break,
        }
        let now = Instant::now();
        let dt = now.duration_since(last).as_secs_f64();
        last = now;

        let all = shared.pods.state();
        let serving: Vec<SimPod> = all
            .iter()
            .filter_map(|p| SimPod::from_pod(p, &shared.config.workload_label))
            .filter(SimPod::serving)
            .collect();
        *write(&shared.serving) = serving
            .iter()
            .map(|p| (p.uid.clone(), p.clone()))
            .collect::<BTreeMap<_, _>>();
        let with_faults = serving
            .iter()
            .map(|p| (p.clone(), shared.resolve(p)))
            .collect();
        lock(&shared.metrics).update(with_faults, dt);
        servers.sync(&shared, &serving).await;

        let live: HashSet<&str> = all
            .iter()
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        lock(&shared.created).retain(|uid, at| {
            live.contains(uid.as_str()) || at.elapsed() < Duration::from_secs(60)
        });
    }
    servers.stop_all();
    write(&shared.listening).clear();
}

#[derive(Clone)]
struct PodCtx {
    shared: Arc<Shared>,
    uid: String,
}

#[derive(Default)]
struct PodServers {
    running: HashMap<(String, SocketAddr), oneshot::Sender<()>>,
    failed: HashMap<(String, SocketAddr), Instant>,
}

impl PodServers {
    async fn sync(&mut self, shared: &Arc<Shared>, serving: &[SimPod]) {
        let desired: HashSet<(String, SocketAddr)> = serving
            .iter()
            .filter_map(|p| Some((p, p.ip?)))
            .flat_map(|(p, ip)| {
                p.listen_ports()
                    .into_iter()
                    .map(move |port| (p.uid.clone(), SocketAddr::from((ip, port))))
            })
            .collect();
        let gone: Vec<_> = self
            .running
            .keys()
            .filter(|k| !desired.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(stop) = self.running.remove(&key) {
                let _ = stop.send(());
                info!(addr = %key.1, "simulated pod listener stopped");
            }
        }
        self.failed
            .retain(|k, at| desired.contains(k) && at.elapsed() < BIND_RETRY);
        let to_start: Vec<(String, SocketAddr)> = desired
            .iter()
            .filter(|k| !self.running.contains_key(*k) && !self.failed.contains_key(*k))
            .cloned()
            .collect();
        for key in &to_start {
            match tokio::net::TcpListener::bind(key.1).await {
                Ok(listener) => {
                    let (stop, stopped) = oneshot::channel::<()>();
                    let app = axum::Router::new().fallback(answer).with_state(PodCtx {
                        shared: shared.clone(),
                        uid: key.0.clone(),
                    });
                    let addr = key.1;
                    tokio::spawn(async move {
                        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                            let _ = stopped.await;
                        });
                        if let Err(e) = serve.await {
                            warn!(%addr, error = %e, "simulated pod listener failed");
                        }
                    });
                    debug!(%addr, "simulated pod listener started");
                    self.running.insert(key.clone(), stop);
                }
                Err(e) => {
                    warn!(addr = %key.1, error = %e, "cannot listen for simulated pod; retrying in 5s");
                    self.failed.insert(key.clone(), Instant::now());
                }
            }
        }
        // A pod is "listening" once every one of its ports is served.
        let mut ports_down: HashSet<&str> = HashSet::new();
        for key in &desired {
            if !self.running.contains_key(key) {
                ports_down.insert(&key.0);
            }
        }
        *write(&shared.listening) = desired
            .iter()
            .map(|k| k.0.as_str())
            .filter(|uid| !ports_down.contains(uid))
            .map(str::to_string)
            .collect();
    }

    fn stop_all(&mut self) {
        for (_, stop) in self.running.drain() {
            let _ = stop.send(());
        }
    }
}

/// Every path: 200 `{"status":"ok","pod":..,"version":<image>}`, or 503 when the pod is
/// unhealthy or the path is one of its failing paths, after the latency fault if one is set.
async fn answer(State(ctx): State<PodCtx>, uri: Uri) -> Response {
    let pod = read(&ctx.shared.serving).get(&ctx.uid).cloned();
    let Some(pod) = pod else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "terminating"})),
        )
            .into_response();
    };
    let fault = ctx.shared.resolve(&pod);
    if fault.latency_set && fault.latency_ms > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(fault.latency_ms / 1000.0).min(MAX_HTTP_DELAY))
            .await;
    }
    let path = uri.path();
    let code = fault.status_for(path);
    let status = match (code, fault.healthy) {
        (200, _) => "ok",
        (_, false) => "unhealthy",
        _ => "failing",
    };
    let body = json!({"status": status, "pod": pod.name, "version": pod.version()});
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
        Json(body),
    )
        .into_response()
}
