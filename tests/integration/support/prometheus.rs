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
