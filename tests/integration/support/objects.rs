//! Test objects: builders of what the tests create (Deployments, Services, Secrets) and readers
//! of what the operator writes on them.

use frys_rollback::api::RollbackPolicy;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Secret, Service},
};
use kube::{Api, Client, api::PostParams};
use serde_json::{Value, json};

/// A Deployment of two replicas of `image`, labelled and selected by `app: <name>`, serving on
/// port 8080 (the simulator's pods answer there).
pub fn deployment(name: &str, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 8080}]}]}
            }
        }
    }))
    .unwrap()
}

/// Creates [`deployment`] `name` of `image` in `ns`.
pub async fn create_deployment(client: &Client, ns: &str, name: &str, image: &str) {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment(name, image))
        .await
        .unwrap_or_else(|e| panic!("creating Deployment {name}: {e}"));
}

/// Creates Service `name` in `ns`: port 80 to the pods' 8080, selecting `selector`.
pub async fn create_service(client: &Client, ns: &str, name: &str, selector: Value) {
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &service)
        .await
        .unwrap_or_else(|e| panic!("creating Service {name}: {e}"));
}

/// Creates Secret `name` in `ns` with `string_data` (an object of keys to strings).
pub async fn create_secret(client: &Client, ns: &str, name: &str, string_data: Value) {
    // Labelled for policies: the operator refuses Secrets that do not opt in.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"rollback.frys.io/policy-access": "true"}},
        "stringData": string_data
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_or_else(|e| panic!("creating Secret {name}: {e}"));
}

/// The image of a Deployment's first container.
pub fn image(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap()
}

/// (status, reason, message) of a policy's condition `type_`, None while it has none.
pub fn condition(p: &RollbackPolicy, type_: &str) -> Option<(String, String, String)> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until policy `name`'s condition `type_` has `status`; returns (reason, message).
pub async fn await_condition(
    policies: &Api<RollbackPolicy>,
    name: &str,
    type_: &str,
    status: &str,
    timeout: std::time::Duration,
) -> (String, String) {
    super::eventually(&format!("{name}: {type_}={status}"), timeout, || async {
        let (s, reason, message) = condition(&policies.get(name).await.ok()?, type_)?;
        (s == status).then_some((reason, message))
    })
    .await
}
