//! The workload simulator closes the loop the operator needs: Deployments get revisions and
//! pods, pods serve HTTP, and the deployed template decides the metrics Prometheus sees
//! (issue: real test environment). Skipped on a real cluster.

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::Pod,
    discovery::v1::EndpointSlice,
};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::json;

use crate::support::{self, deployment, env, eventually, prometheus::query_scalar};

const TIMEOUT: Duration = Duration::from_secs(60);

fn error_ratio(ns: &str, app: &str) -> String {
    format!(
        r#"sum(rate(http_requests_total{{namespace="{ns}",app="{app}",code=~"5.."}}[5s])) / sum(rate(http_requests_total{{namespace="{ns}",app="{app}"}}[5s]))"#
    )
}

async fn revision(api: &Api<Deployment>, name: &str) -> Option<String> {
    api.get(name)
        .await
        .ok()?
        .metadata
        .annotations?
        .get("deployment.kubernetes.io/revision")
        .cloned()
}

#[tokio::test]
async fn deployments_get_revisions_pods_and_endpoints() {
    if !support::require_simulator("deployments_get_revisions_pods_and_endpoints") {
        return;
    }
    let client = env().client().await;
    let ns = support::namespace(&client, "sim-rollout").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &deployment("web", "demo:v1"))
        .await
        .unwrap();
    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    Api::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &service)
        .await
        .unwrap();

    eventually("web available at revision 1", TIMEOUT, || async {
        let d = deployments.get("web").await.ok()?;
        let available = d.status?.available_replicas? == 2;
        (available && revision(&deployments, "web").await? == "1").then_some(())
    })
    .await;

    // Ready pods with loopback IPs answer HTTP, and the Service's EndpointSlice lists them.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let ips: Vec<String> = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.status?.pod_ip)
        .collect();
    assert_eq!(ips.len(), 2, "{ips:?}");
    for ip in &ips {
        assert!(ip.starts_with("127."), "{ip}");
        let body = reqwest::get(format!("http://{ip}:8080/health"))
            .await
            .unwrap();
        assert_eq!(body.status(), 200);
    }
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let endpoints = eventually("EndpointSlice for web", TIMEOUT, || async {
        let list = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await
            .ok()?;
        let addresses: Vec<String> = list
            .items
            .into_iter()
            .flat_map(|s| s.endpoints)
            .flat_map(|e| e.addresses)
            .collect();
        (addresses.len() == 2).then_some(addresses)
    })
    .await;
    let mut sorted = ips.clone();
    sorted.sort();
    let mut endpoints = endpoints;
    endpoints.sort();
    assert_eq!(endpoints, sorted);

    // A template change is revision 2 with a new ReplicaSet; the old one is scaled to zero.
    support::set_image(&deployments, "web", "demo:v2").await;
    eventually("revision 2", TIMEOUT, || async {
        (revision(&deployments, "web").await? == "2").then_some(())
    })
    .await;
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let replicas = eventually("old ReplicaSet scaled down", TIMEOUT, || async {
        let mut list: Vec<(String, i32)> = sets
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .map(|rs| {
                let revision = rs.metadata.annotations.unwrap_or_default()["deployment.kubernetes.io/revision"].clone();
                (revision, rs.spec.unwrap().replicas.unwrap_or(0))
            })
            .collect();
        list.sort();
        (list == [("1".to_string(), 0), ("2".to_string(), 2)]).then_some(list)
    })
    .await;
    assert_eq!(replicas.len(), 2);

    // Back to the first template: like upstream, that ReplicaSet becomes revision 3.
    support::set_image(&deployments, "web", "demo:v1").await;
    eventually("rolled-back template is revision 3", TIMEOUT, || async {
        (revision(&deployments, "web").await? == "3").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_faulty_image_raises_the_error_rate_prometheus_sees() {
    if !support::require_simulator("a_faulty_image_raises_the_error_rate_prometheus_sees") {
        return;
    }
    let prometheus = env().prometheus_url.clone().expect("PROMETHEUS_URL");
    let client = env().client().await;
    let ns = support::namespace(&client, "sim-metrics").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &deployment("web", "demo:v1"))
        .await
        .unwrap();
    let query = error_ratio(&ns, "web");

    let healthy = eventually("healthy error ratio in Prometheus", TIMEOUT, || async {
        query_scalar(&prometheus, &query)
            .await
            .filter(|v| *v < 0.01)
    })
    .await;
    assert!(healthy < 0.01, "{healthy}");

    support::set_image(&deployments, "web", "demo:v2-faulty").await;
    let faulty = eventually("error ratio of the faulty image", TIMEOUT, || async {
        query_scalar(&prometheus, &query)
            .await
            .filter(|v| *v > 0.25)
    })
    .await;
    assert!(
        (0.25..=0.35).contains(&faulty),
        "faulty image error ratio {faulty}"
    );

    // Reverting the template brings it back down once the faulty pods' samples leave the window.
    support::set_image(&deployments, "web", "demo:v1").await;
    eventually(
        "error ratio back to healthy after revert",
        TIMEOUT,
        || async {
            query_scalar(&prometheus, &query)
                .await
                .filter(|v| *v < 0.01)
        },
    )
    .await;
}

#[tokio::test]
async fn runtime_faults_are_scoped_by_image() {
    if !support::require_simulator("runtime_faults_are_scoped_by_image") {
        return;
    }
    let prometheus = env().prometheus_url.clone().expect("PROMETHEUS_URL");
    let client = env().client().await;
    let ns = support::namespace(&client, "sim-faults").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &deployment("api", "demo:v1"))
        .await
        .unwrap();
    let p95 = format!(
        r#"histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{{namespace="{ns}",app="api"}}[5s]))) * 1000"#
    );
    support::sim::inject(
        json!({"namespace": ns, "app": "api", "image": "demo:v1", "latencyMs": 900}),
    )
    .await;
    let slow = eventually("p95 with the latency fault", TIMEOUT, || async {
        query_scalar(&prometheus, &p95).await.filter(|v| *v > 800.0)
    })
    .await;
    assert!((850.0..=950.0).contains(&slow), "{slow}");
    // The fault belongs to demo:v1 only: another image is fast.
    support::set_image(&deployments, "api", "demo:v2").await;
    eventually("p95 fast again on another image", TIMEOUT, || async {
        query_scalar(&prometheus, &p95).await.filter(|v| *v < 100.0)
    })
    .await;
    support::sim::clear(&ns, "api").await;
}

#[tokio::test]
async fn a_private_prometheus_sees_the_simulator_and_can_be_stopped() {
    if !support::require_simulator("a_private_prometheus_sees_the_simulator_and_can_be_stopped") {
        return;
    }
    let mut prometheus = support::prometheus::PrivatePrometheus::start().await;
    let up = eventually(
        "the private Prometheus scrapes the simulator",
        TIMEOUT,
        || async { query_scalar(&prometheus.url, r#"up{job="frys-sim"}"#).await },
    )
    .await;
    assert_eq!(up, 1.0);
    prometheus.stop().await;
    assert!(
        reqwest::get(format!("{}/-/ready", prometheus.url))
            .await
            .is_err(),
        "still answering after stop"
    );
}
