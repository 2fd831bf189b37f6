//! The workload simulator's control API (faults), found through the environment directory.

use serde_json::Value;

/// Base URL of the simulator's HTTP API.
pub fn url() -> String {
    let dir = super::env()
        .testenv_dir
        .as_ref()
        .expect("local test environment");
    let addr = std::fs::read_to_string(dir.join("sim.addr")).expect("sim.addr");
    format!("http://{}", addr.trim())
}

/// Injects a runtime fault (see tests/sim README for the fields).
pub async fn inject(fault: Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/faults", url()))
        .json(&fault)
        .send()
        .await
        .expect("simulator control API");
    assert!(r.status().is_success(), "injecting {fault}: {}", r.status());
}

/// Clears runtime faults of an app.
pub async fn clear(namespace: &str, app: &str) {
    let r = reqwest::Client::new()
        .delete(format!("{}/faults", url()))
        .query(&[("namespace", namespace), ("app", app)])
        .send()
        .await
        .expect("simulator control API");
    assert!(r.status().is_success());
}

/// The simulator's view of the cluster.
pub async fn state() -> Value {
    reqwest::get(format!("{}/state", url()))
        .await
        .expect("simulator control API")
        .json()
        .await
        .unwrap()
}
