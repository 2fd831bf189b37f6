//! The simulator's view of a Pod: what the per-pod servers, faults and metrics need.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

use crate::quantity::parse_quantity;
use crate::template::POD_TEMPLATE_HASH;

/// Port a container listens on when it declares none.
pub const DEFAULT_PORT: u16 = 8080;
/// Limits assumed when a container declares none.
pub const DEFAULT_MEMORY_LIMIT: f64 = 512.0 * 1024.0 * 1024.0;
pub const DEFAULT_CPU_LIMIT: f64 = 1.0;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimContainer {
    pub name: String,
    pub image: String,
    pub ports: Vec<u16>,
    pub memory_limit_bytes: f64,
    pub cpu_limit_cores: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Value of the workload label (`--workload-label`), else the Deployment name.
    pub app: String,
    pub deployment: Option<String>,
    pub ip: Option<Ipv4Addr>,
    pub ready: bool,
    pub containers: Vec<SimContainer>,
    /// The pod's `sim.frys.io/*` annotations (copied from the pod template).
    pub annotations: BTreeMap<String, String>,
}

impl SimPod {
    /// Extracts the view; `None` for pods without a name or uid, or being deleted.
    pub fn from_pod(pod: &Pod, workload_label: &str) -> Option<SimPod> {
        let meta = &pod.metadata;
        if meta.deletion_timestamp.is_some() {
            return None;
        }
        let labels = meta.labels.clone().unwrap_or_default();
        let deployment = deployment_of(pod);
        let app = labels
            .get(workload_label)
            .cloned()
            .or_else(|| deployment.clone())
            .or_else(|| meta.name.clone())?;
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let ip = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        let containers = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .map(|c| {
                let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
                let limit = |key: &str| {
                    limits
                        .and_then(|l| l.get(key))
                        .and_then(|q| parse_quantity(&q.0))
                };
                SimContainer {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    ports: c
                        .ports
                        .iter()
                        .flatten()
                        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
                        .filter_map(|p| u16::try_from(p.container_port).ok())
                        .collect(),
                    memory_limit_bytes: limit("memory").unwrap_or(DEFAULT_MEMORY_LIMIT),
                    cpu_limit_cores: limit("cpu").unwrap_or(DEFAULT_CPU_LIMIT),
                }
            })
            .collect();
        Some(SimPod {
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone()?,
            uid: meta.uid.clone()?,
            app,
            deployment,
            ip,
            ready,
            containers,
            annotations: meta
                .annotations
                .iter()
                .flatten()
                .filter(|(k, _)| k.starts_with("sim.frys.io/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// Ready with an address: it serves traffic and is exported in metrics.
    pub fn serving(&self) -> bool {
        self.ready && self.ip.is_some()
    }

    /// Ports to listen on: every declared TCP container port, else 8080.
    pub fn listen_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().copied())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        if ports.is_empty() {
            ports.push(DEFAULT_PORT);
        }
        ports
    }

    /// Image of the first container: the "version" the pod reports.
    pub fn version(&self) -> &str {
        self.containers.first().map_or("", |c| c.image.as_str())
    }

    pub fn images(&self) -> Vec<&str> {
        self.containers.iter().map(|c| c.image.as_str()).collect()
    }
}

/// Deployment owning the pod: its controlling ReplicaSet's name minus `-<pod-template-hash>`.
pub fn deployment_of(pod: &Pod) -> Option<String> {
    let rs = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == "ReplicaSet")?;
    let hash = pod.metadata.labels.as_ref()?.get(POD_TEMPLATE_HASH)?;
    rs.name
        .strip_suffix(&format!("-{hash}"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: serde_json::Value, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "web-abc-x1", "namespace": "shop", "uid": "u1",
                "labels": labels,
                "annotations": {"sim.frys.io/latency-ms": "900", "other": "x"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "r1", "controller": true}]
            },
            "spec": {"containers": [
                {"name": "app", "image": "demo:v2", "ports": [{"containerPort": 9090}, {"containerPort": 53, "protocol": "UDP"}],
                 "resources": {"limits": {"memory": "1Gi", "cpu": "500m"}}},
                {"name": "side", "image": "proxy:1"}
            ]},
            "status": {"phase": "Running", "podIP": "127.0.1.2",
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    #[test]
    fn extracts_view() {
        let p = SimPod::from_pod(
            &pod(json!({"app": "shop-web", "pod-template-hash": "abc"}), true),
            "app",
        )
        .unwrap();
        assert_eq!(p.app, "shop-web");
        assert_eq!(p.deployment.as_deref(), Some("web"));
        assert!(p.serving());
        assert_eq!(p.ip, Some(Ipv4Addr::new(127, 0, 1, 2)));
        assert_eq!(p.listen_ports(), vec![9090]);
        assert_eq!(p.version(), "demo:v2");
        assert_eq!(p.containers[0].memory_limit_bytes, 1024.0 * 1024.0 * 1024.0);
        assert_eq!(p.containers[0].cpu_limit_cores, 0.5);
        assert_eq!(p.containers[1].memory_limit_bytes, DEFAULT_MEMORY_LIMIT);
        assert_eq!(p.containers[1].cpu_limit_cores, DEFAULT_CPU_LIMIT);
        assert_eq!(p.annotations.len(), 1);
    }

    #[test]
    fn workload_falls_back_to_deployment() {
        let p = SimPod::from_pod(&pod(json!({"pod-template-hash": "abc"}), false), "app").unwrap();
        assert_eq!(p.app, "web");
        assert!(!p.serving());
    }
}
