//! The simulator's own HTTP endpoint: `/metrics` (what Prometheus scrapes), `/healthz`, and the
//! control API (`/state`, `/faults`).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;

use crate::faults::FaultRule;
use crate::shared::{Shared, lock, read, write};
use crate::simpod::SimPod;
use crate::template::REVISION;

#[derive(Clone)]
pub struct ApiState {
    pub shared: Arc<Shared>,
    pub deployments: Store<Deployment>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/state", get(sim_state))
        .route(
            "/faults",
            get(list_faults).post(set_fault).delete(delete_faults),
        )
        .with_state(state)
}

async fn metrics(State(s): State<ApiState>) -> Response {
    let body = lock(&s.shared.metrics).render(&s.shared.config.metrics_label);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn sim_state(State(s): State<ApiState>) -> Json<Value> {
    let mut deployments: Vec<Value> = s
        .deployments
        .state()
        .iter()
        .map(|d| {
            let spec = d.spec.as_ref();
            let status = d.status.as_ref();
            json!({
                "namespace": d.namespace(),
                "name": d.name_any(),
                "generation": d.metadata.generation,
                "revision": d.annotations().get(REVISION),
                "replicas": spec.and_then(|s| s.replicas).unwrap_or(1),
                "images": spec.into_iter().flat_map(|s| s.template.spec.iter().flat_map(|p| &p.containers))
                    .map(|c| c.image.clone()).collect::<Vec<_>>(),
                "observedGeneration": status.and_then(|s| s.observed_generation),
                "readyReplicas": status.and_then(|s| s.ready_replicas).unwrap_or(0),
                "availableReplicas": status.and_then(|s| s.available_replicas).unwrap_or(0),
            })
        })
        .collect();
    deployments.sort_by_key(|d| (d["namespace"].to_string(), d["name"].to_string()));

    let listening = read(&s.shared.listening).clone();
    let mut pods: Vec<Value> = s
        .shared
        .pods
        .state()
        .iter()
        .filter_map(|p| SimPod::from_pod(p, &s.shared.config.workload_label))
        .map(|p| {
            let fault = s.shared.resolve(&p);
            let listening = listening.contains(&p.uid);
            let mut v = serde_json::to_value(&p).unwrap_or_default();
            v["listening"] = json!(listening);
            v["version"] = json!(p.version());
            v["ports"] = json!(p.listen_ports());
            v["fault"] = serde_json::to_value(fault).unwrap_or_default();
            v
        })
        .collect();
    pods.sort_by_key(|p| (p["namespace"].to_string(), p["name"].to_string()));
    let faults = read(&s.shared.faults).rules().to_vec();
    Json(json!({"deployments": deployments, "pods": pods, "faults": faults}))
}

async fn list_faults(State(s): State<ApiState>) -> Json<Vec<FaultRule>> {
    Json(read(&s.shared.faults).rules().to_vec())
}

async fn set_fault(State(s): State<ApiState>, Json(rule): Json<FaultRule>) -> Response {
    if let Err(e) = rule.spec.validate() {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response();
    }
    if rule.namespace.is_empty() || rule.app.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "namespace and app are required"})),
        )
            .into_response();
    }
    info!(namespace = %rule.namespace, app = %rule.app, image = ?rule.image, spec = ?rule.spec, "simulated fault set");
    write(&s.shared.faults).upsert(rule.clone());
    Json(json!({"fault": rule})).into_response()
}

#[derive(Deserialize)]
struct FaultFilter {
    namespace: Option<String>,
    app: Option<String>,
    image: Option<String>,
}

/// Removes the faults matching every given parameter (none: all of them).
async fn delete_faults(State(s): State<ApiState>, Query(f): Query<FaultFilter>) -> Json<Value> {
    let deleted = write(&s.shared.faults).remove(
        f.namespace.as_deref(),
        f.app.as_deref(),
        f.image.as_deref(),
    );
    info!(namespace = ?f.namespace, app = ?f.app, image = ?f.image, deleted, "simulated faults removed");
    Json(json!({"deleted": deleted}))
}
