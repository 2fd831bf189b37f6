//! Builders for the objects the simulated controllers write: ReplicaSets, Pods, pod statuses.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::template::{
    DESIRED_REPLICAS, MAX_REPLICAS, POD_TEMPLATE_HASH, REVISION, REVISION_HISTORY, RevisionPlan,
    copied_annotations,
};

/// Annotations the current ReplicaSet of `d` must carry.
pub fn current_rs_annotations(
    d: &Deployment,
    plan: &RevisionPlan,
    desired: i32,
) -> BTreeMap<String, String> {
    let mut a = copied_annotations(d.metadata.annotations.as_ref());
    a.insert(REVISION.into(), plan.revision.to_string());
    if let Some(h) = &plan.history {
        a.insert(REVISION_HISTORY.into(), h.clone());
    }
    a.insert(DESIRED_REPLICAS.into(), desired.to_string());
    // One-step scaling: never more pods than desired.
    a.insert(MAX_REPLICAS.into(), desired.to_string());
    a
}

/// `template` with the `pod-template-hash` label set.
pub fn template_with_hash(template: &PodTemplateSpec, hash: &str) -> PodTemplateSpec {
    let mut t = template.clone();
    let meta = t.metadata.get_or_insert_with(Default::default);
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(POD_TEMPLATE_HASH.into(), hash.into());
    t
}

/// The ReplicaSet `<deployment>-<hash>` for the Deployment's current template.
pub fn build_replica_set(
    d: &Deployment,
    hash: &str,
    desired: i32,
    annotations: BTreeMap<String, String>,
) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let template = template_with_hash(&spec.template, hash);
    let mut selector: LabelSelector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(POD_TEMPLATE_HASH.into(), hash.into());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.name_any())),
            namespace: d.namespace(),
            labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
            annotations: Some(annotations),
            owner_references: d.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(desired),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// A pod of `rs` named `name`: the template's labels, annotations and spec.
pub fn build_pod(rs: &ReplicaSet, name: String) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: rs.namespace(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            owner_references: rs.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(template.spec.unwrap_or_default()),
        status: None,
    }
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn now_str() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn condition(type_: &str, status: &str, at: &str) -> Value {
    json!({"type": type_, "status": status, "lastTransitionTime": at, "lastProbeTime": null})
}

fn container_names_images(pod: &Pod) -> Vec<(String, String)> {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
        .collect()
}

/// Status of a pod waiting for its (simulated) containers to start.
pub fn pending_status(pod: &Pod) -> Value {
    let at = now_str();
    let containers: Vec<Value> = container_names_images(pod)
        .into_iter()
        .map(|(name, image)| {
            json!({
                "name": name, "image": image, "imageID": "", "ready": false, "started": false,
                "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}
            })
        })
        .collect();
    json!({
        "phase": "Pending",
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "conditions": [
            condition("PodScheduled", "True", &at),
            condition("Initialized", "True", &at),
            condition("ContainersReady", "False", &at),
            condition("Ready", "False", &at),
        ],
        "containerStatuses": containers,
    })
}

/// Status of a running, ready pod at `ip`.
pub fn running_status(pod: &Pod, ip: Ipv4Addr) -> Value {
    let at = now_str();
    let start = pod
        .creation_timestamp()
        .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| at.clone());
    let uid = pod.uid().unwrap_or_default();
    let containers: Vec<Value> = container_names_images(pod)
        .into_iter()
        .map(|(name, image)| {
            json!({
                "name": name, "image": image, "imageID": format!("sim://{image}"),
                "containerID": format!("sim://{uid}/{name}"),
                "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": at}}
            })
        })
        .collect();
    json!({
        "phase": "Running",
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": ip.to_string(),
        "podIPs": [{"ip": ip.to_string()}],
        "startTime": start,
        "conditions": [
            condition("PodScheduled", "True", &start),
            condition("Initialized", "True", &start),
            condition("ContainersReady", "True", &at),
            condition("Ready", "True", &at),
        ],
        "containerStatuses": containers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simpod::SimPod;

    fn deployment() -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "d-uid",
                         "annotations": {"kubernetes.io/change-cause": "v2", REVISION: "1"}},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}, "annotations": {"sim.frys.io/rps": "5"}},
                    "spec": {"containers": [{"name": "app", "image": "demo:v2"}]}
                }
            }
        }))
        .unwrap()
    }

    #[test]
    fn replica_set_and_pod_shapes() {
        let d = deployment();
        let plan = RevisionPlan {
            revision: 2,
            history: None,
        };
        let rs = build_replica_set(&d, "h4sh", 3, current_rs_annotations(&d, &plan, 3));
        assert_eq!(rs.name_any(), "web-h4sh");
        assert_eq!(rs.labels()[POD_TEMPLATE_HASH], "h4sh");
        assert_eq!(rs.annotations()[REVISION], "2");
        assert_eq!(rs.annotations()["kubernetes.io/change-cause"], "v2");
        assert_eq!(rs.annotations()[DESIRED_REPLICAS], "3");
        let owner = &rs.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Deployment", "d-uid", Some(true))
        );
        let spec = rs.spec.as_ref().unwrap();
        assert_eq!(
            spec.selector.match_labels.as_ref().unwrap()[POD_TEMPLATE_HASH],
            "h4sh"
        );
        assert_eq!(spec.replicas, Some(3));
        assert!(crate::template::equal_ignore_hash(
            spec.template.as_ref().unwrap(),
            &d.spec.as_ref().unwrap().template
        ));

        let mut rs = rs;
        rs.metadata.uid = Some("rs-uid".into());
        let mut pod = build_pod(&rs, "web-h4sh-abcde".into());
        assert_eq!(pod.labels()["app"], "web");
        assert_eq!(pod.labels()[POD_TEMPLATE_HASH], "h4sh");
        assert_eq!(pod.annotations()["sim.frys.io/rps"], "5");
        assert_eq!(pod.owner_references()[0].kind, "ReplicaSet");
        assert_eq!(crate::simpod::deployment_of(&pod).as_deref(), Some("web"));

        pod.metadata.uid = Some("p-uid".into());
        pod.status = serde_json::from_value(pending_status(&pod)).unwrap();
        assert!(!is_ready(&pod));
        pod.status =
            serde_json::from_value(running_status(&pod, Ipv4Addr::new(127, 0, 1, 9))).unwrap();
        assert!(is_ready(&pod));
        let view = SimPod::from_pod(&pod, "app").unwrap();
        assert!(view.serving());
        assert_eq!(view.ip, Some(Ipv4Addr::new(127, 0, 1, 9)));
    }
}
