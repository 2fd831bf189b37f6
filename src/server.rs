//! The operator's HTTP endpoints: `/metrics`, `/healthz`, `/readyz`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router, extract::State, http::StatusCode, http::header, response::IntoResponse, routing::get,
};

use crate::telemetry::Metrics;

/// The evaluator's heartbeat, read by `/healthz`: a wedged or dead evaluator (a deadlock, a
/// panicked task) protects nothing while the process looks alive, so the liveness probe fails
/// and the kubelet restarts it. Cheap to clone; clones share the heartbeat.
#[derive(Clone, Debug)]
pub struct Liveness {
    /// Milliseconds since the epoch of the last beat; 0 before the first (a follower, or caches
    /// still syncing: readiness, not liveness, covers those).
    last_beat_ms: Arc<AtomicI64>,
    stale_after: Duration,
}

impl Liveness {
    /// Unhealthy once `stale_after` passes without a beat.
    pub fn new(stale_after: Duration) -> Self {
        Self {
            last_beat_ms: Arc::default(),
            stale_after,
        }
    }

    /// For an operator whose default interval is `interval`: a few intervals, at least 10 s (the
    /// evaluator beats every tick, a fraction of a second, whatever the intervals).
    pub fn for_interval(interval: Duration) -> Self {
        Self::new((interval * 3).max(Duration::from_secs(10)))
    }

    /// The evaluator made progress now.
    pub fn beat(&self) {
        self.beat_at(jiff::Timestamp::now());
    }

    fn beat_at(&self, at: jiff::Timestamp) {
        self.last_beat_ms
            .store(at.as_millisecond().max(1), Ordering::SeqCst);
    }

    /// Ok, or why not.
    pub fn check(&self, now: jiff::Timestamp) -> Result<(), String> {
        let last = self.last_beat_ms.load(Ordering::SeqCst);
        if last == 0 {
            return Ok(());
        }
        let silent = Duration::from_millis(now.as_millisecond().saturating_sub(last).max(0) as u64);
        if silent > self.stale_after {
            return Err(format!(
                "the evaluator made no progress for {} (limit {})",
                crate::api::duration::format(silent),
                crate::api::duration::format(self.stale_after)
            ));
        }
        Ok(())
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Self::for_interval(Duration::from_secs(30))
    }
}

/// What the probes read: `ready` flips once the controllers' caches are synced (`/readyz`),
/// `liveness` is beaten by the evaluator (`/healthz`). Clones share both.
#[derive(Clone, Debug)]
pub struct Probes {
    pub ready: Arc<AtomicBool>,
    pub liveness: Liveness,
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    probes: Probes,
}

/// The router.
pub fn router(metrics: Metrics, probes: Probes) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, probes })
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state.probes.liveness.check(jiff::Timestamp::now()) {
        Ok(()) => (StatusCode::OK, "ok".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.probes.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn serve(liveness: Liveness) -> String {
        let probes = Probes {
            ready: Arc::default(),
            liveness,
        };
        let app = router(Metrics::default(), probes);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/healthz", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    #[tokio::test]
    async fn healthz_fails_once_the_evaluator_stops_beating() {
        let liveness = Liveness::new(Duration::from_secs(10));
        let url = serve(liveness.clone()).await;
        let get = || async {
            let r = reqwest::get(&url).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        };
        assert_eq!(get().await, (200, "ok".into()), "no beat yet: not started");
        liveness.beat();
        assert_eq!(get().await.0, 200);
        let earlier = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(25);
        liveness.beat_at(earlier);
        let (status, body) = get().await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body.starts_with("the evaluator made no progress for 25s"),
            "{body}"
        );
        assert!(body.contains("limit 10s"), "{body}");
        liveness.beat();
        assert_eq!(get().await.0, 200, "healthy again after a beat");
    }

    #[test]
    fn a_few_intervals_at_least_ten_seconds() {
        assert_eq!(
            Liveness::for_interval(Duration::from_secs(30)).stale_after,
            Duration::from_secs(90)
        );
        assert_eq!(
            Liveness::for_interval(Duration::from_secs(1)).stale_after,
            Duration::from_secs(10)
        );
    }
}
