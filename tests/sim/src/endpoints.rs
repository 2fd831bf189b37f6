//! Simulated EndpointSlice controller: for every Service with a selector, the slice
//! `<service>-sim` lists the ready simulated pods it selects (once their listeners are up).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::controller::{Ctx, Error};
use crate::kubeutil::{FIELD_MANAGER, delete_ignore_missing};
use crate::objects::{is_ready, is_terminating};
use crate::shared::read;

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "frys-sim.frys.io";
const RESYNC: Duration = Duration::from_secs(60);

pub fn slice_name(service: &str) -> String {
    format!("{service}-sim")
}

pub fn controller(client: &Client) -> Controller<Service> {
    let controller = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let services = controller.store();
    controller
        .owns(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
        )
        .watches(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            move |pod: Pod| {
                let ns = pod.namespace();
                services
                    .state()
                    .iter()
                    .filter(|s| s.namespace() == ns)
                    .map(|s| ObjectRef::from_obj(s.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
}

pub async fn run(
    controller: Controller<Service>,
    ctx: Arc<Ctx>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "endpointslice controller event");
            }
        })
        .await;
}

fn key_of(s: &Service) -> String {
    format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any())
}

fn error_policy(svc: Arc<Service>, err: &Error, ctx: Arc<Ctx>) -> Action {
    let key = format!("svc:{}", key_of(&svc));
    let (attempt, delay) = ctx.backoff(key);
    warn!(service = %key_of(&svc), attempt, retry_in = ?delay, error = %err, "simulated endpointslice controller: reconcile failed");
    Action::requeue(delay)
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let action = reconcile_service(&svc, &ctx).await.map_err(Error)?;
    ctx.succeeded(&format!("svc:{}", key_of(&svc)));
    Ok(action)
}

/// The selector of a Service whose endpoints the simulator manages.
fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

pub fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

async fn reconcile_service(svc: &Service, ctx: &Ctx) -> anyhow::Result<Action> {
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_else(|| "default".into());
    let name = slice_name(&svc.name_any());
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = slices
        .get_opt(&name)
        .await
        .with_context(|| format!("reading EndpointSlice {ns}/{name}"))?;
    let ours = |s: &EndpointSlice| {
        s.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
    };

    let Some(selector) = selector(svc) else {
        if let Some(slice) = existing.filter(ours) {
            delete_ignore_missing(&slices, &slice.name_any())
                .await
                .with_context(|| format!("deleting EndpointSlice {ns}/{name}"))?;
            info!(slice = %format!("{ns}/{name}"), "service has no selector: simulated EndpointSlice deleted");
        }
        return Ok(Action::await_change());
    };

    let pods: Vec<Pod> = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing Pods in {ns}"))?
        .items
        .into_iter()
        .filter(|p| {
            selects(selector, p) && !is_terminating(p) && is_ready(p) && pod_ip(p).is_some()
        })
        .collect();
    // A ready pod joins once its simulated application listens (as a readiness probe would).
    let (listening, starting): (Vec<Pod>, Vec<Pod>) = {
        let up = read(&ctx.shared.listening);
        pods.into_iter()
            .partition(|p| p.metadata.uid.as_ref().is_some_and(|u| up.contains(u)))
    };
    let desired = desired_slice(svc, &listening);

    match existing {
        None => {
            slices
                .create(
                    &PostParams {
                        field_manager: Some(FIELD_MANAGER.into()),
                        ..Default::default()
                    },
                    &desired,
                )
                .await
                .with_context(|| format!("creating EndpointSlice {ns}/{name}"))?;
            info!(slice = %format!("{ns}/{name}"), endpoints = desired.endpoints.len(), "simulated EndpointSlice created");
        }
        Some(current) if !same_content(&current, &desired) => {
            let mut replacement = desired.clone();
            replacement.metadata.resource_version = current.metadata.resource_version.clone();
            slices
                .replace(
                    &name,
                    &PostParams {
                        field_manager: Some(FIELD_MANAGER.into()),
                        ..Default::default()
                    },
                    &replacement,
                )
                .await
                .with_context(|| format!("updating EndpointSlice {ns}/{name}"))?;
            info!(slice = %format!("{ns}/{name}"), endpoints = desired.endpoints.len(), "simulated EndpointSlice updated");
        }
        Some(_) => {}
    }
    Ok(Action::requeue(if starting.is_empty() {
        RESYNC
    } else {
        Duration::from_millis(200)
    }))
}

fn pod_ip(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.pod_ip.as_deref()
}

/// The slice for `svc` listing `pods` (already filtered to ready, selected ones).
pub fn desired_slice(svc: &Service, pods: &[Pod]) -> EndpointSlice {
    let svc_name = svc.name_any();
    let mut pods: Vec<&Pod> = pods.iter().collect();
    pods.sort_by_key(|p| p.name_any());
    let endpoints = pods
        .iter()
        .filter_map(|p| {
            Some(Endpoint {
                addresses: vec![pod_ip(p)?.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                target_ref: Some(ObjectReference {
                    kind: Some("Pod".into()),
                    name: p.metadata.name.clone(),
                    namespace: p.metadata.namespace.clone(),
                    uid: p.metadata.uid.clone(),
                    ..Default::default()
                }),
                node_name: p.spec.as_ref().and_then(|s| s.node_name.clone()),
                ..Default::default()
            })
        })
        .collect();
    let ports = svc
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .map(|sp| EndpointPort {
            name: sp.name.clone(),
            port: Some(target_port(sp.target_port.as_ref(), sp.port, &pods)),
            protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
            app_protocol: sp.app_protocol.clone(),
        })
        .collect();
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name(&svc_name)),
            namespace: svc.namespace(),
            labels: Some(
                [
                    (SERVICE_NAME_LABEL.to_string(), svc_name),
                    (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                ]
                .into(),
            ),
            owner_references: svc.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(ports),
    }
}

/// Port on the pods: a numeric targetPort, else the named container port (first pod that has
/// it), else the Service port.
fn target_port(target: Option<&IntOrString>, port: i32, pods: &[&Pod]) -> i32 {
    match target {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => s
            .parse()
            .ok()
            .or_else(|| named_port(s, pods))
            .unwrap_or(port),
        None => port,
    }
}

fn named_port(name: &str, pods: &[&Pod]) -> Option<i32> {
    pods.iter()
        .flat_map(|p| p.spec.iter().flat_map(|s| &s.containers))
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.container_port)
}

fn same_content(current: &EndpointSlice, desired: &EndpointSlice) -> bool {
    let labels_ok = desired
        .labels()
        .iter()
        .all(|(k, v)| current.labels().get(k) == Some(v));
    labels_ok
        && current.address_type == desired.address_type
        && current.endpoints == desired.endpoints
        && current.ports == desired.ports
        && current.metadata.owner_references == desired.metadata.owner_references
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(target_port: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "s-uid"},
            "spec": {"selector": {"app": "web", "color": "green"},
                     "ports": [{"name": "http", "port": 80, "targetPort": target_port}]}
        }))
        .unwrap()
    }

    fn pod(name: &str, color: &str, ip: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "uid": format!("{name}-uid"), "labels": {"app": "web", "color": color}},
            "spec": {"containers": [{"name": "app", "ports": [{"name": "web", "containerPort": 9090}]}]},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    #[test]
    fn slice_lists_pods_sorted_with_target_refs() {
        let svc = service(json!(8080));
        let pods = [
            pod("web-b", "green", "127.0.1.3"),
            pod("web-a", "green", "127.0.1.2"),
        ];
        let slice = desired_slice(&svc, &pods);
        assert_eq!(slice.name_any(), "web-sim");
        assert_eq!(slice.labels()[SERVICE_NAME_LABEL], "web");
        assert_eq!(slice.labels()[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(slice.owner_references()[0].kind, "Service");
        let addrs: Vec<&str> = slice
            .endpoints
            .iter()
            .map(|e| e.addresses[0].as_str())
            .collect();
        assert_eq!(addrs, ["127.0.1.2", "127.0.1.3"]);
        let target = slice.endpoints[0].target_ref.as_ref().unwrap();
        assert_eq!(
            (target.kind.as_deref(), target.name.as_deref()),
            (Some("Pod"), Some("web-a"))
        );
        assert_eq!(
            slice.endpoints[0].conditions.as_ref().unwrap().ready,
            Some(true)
        );
        let port = &slice.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.port, port.protocol.as_deref()),
            (Some("http"), Some(8080), Some("TCP"))
        );
        assert!(same_content(&slice, &desired_slice(&svc, &pods)));
        assert!(!same_content(&slice, &desired_slice(&svc, &pods[..1])));
    }

    #[test]
    fn target_port_forms() {
        let pods = [pod("web-a", "green", "127.0.1.2")];
        let port = |tp| desired_slice(&service(tp), &pods).ports.unwrap()[0].port;
        assert_eq!(port(json!("web")), Some(9090));
        assert_eq!(port(json!("missing")), Some(80));
        assert_eq!(port(json!(null)), Some(80));
    }

    #[test]
    fn selector_matching() {
        let svc = service(json!(8080));
        let sel = selector(&svc).unwrap();
        assert!(selects(sel, &pod("a", "green", "127.0.1.2")));
        assert!(!selects(sel, &pod("a", "blue", "127.0.1.2")));
    }
}
