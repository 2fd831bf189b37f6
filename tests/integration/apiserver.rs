//! The test control plane behaves like a Kubernetes API server where the operator depends on
//! it (issue: real test environment). These run unchanged against a real cluster.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{
    api::{apps::v1::Deployment, coordination::v1::Lease, core::v1::ConfigMap, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::watcher,
};
use serde_json::json;

use crate::support::{self, deployment};

async fn setup(prefix: &str) -> (kube::Client, String) {
    let client = support::env().client().await;
    let ns = support::namespace(&client, prefix).await;
    (client, ns)
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn server_side_apply_detects_conflicts_and_force_takes_over() {
    let (client, ns) = setup("cp-ssa").await;
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    let cm = |value: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": value}});
    api.patch("c", &PatchParams::apply("alice"), &Patch::Apply(cm("a")))
        .await
        .unwrap();

    let err = api_error(
        api.patch("c", &PatchParams::apply("bob"), &Patch::Apply(cm("b")))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409, "{err:?}");
    assert!(err.message.contains("conflict"), "{}", err.message);

    let forced = api
        .patch(
            "c",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(cm("b")),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["k"], "b");
    let managers: Vec<String> = forced
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.contains(&"bob".to_string()), "{managers:?}");
}

#[tokio::test]
async fn built_in_list_maps_merge_by_key_under_apply() {
    // Containers merge by name: a second manager adding a container keeps the first one's.
    let (client, ns) = setup("cp-ssa-list").await;
    let api: Api<Deployment> = Api::namespaced(client, &ns);
    let d = |container: &str, image: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"selector": {"matchLabels": {"app": "d"}},
                        "template": {"metadata": {"labels": {"app": "d"}},
                                     "spec": {"containers": [{"name": container, "image": image}]}}}})
    };
    api.patch(
        "d",
        &PatchParams::apply("one"),
        &Patch::Apply(d("app", "demo:v1")),
    )
    .await
    .unwrap();
    let merged = api
        .patch(
            "d",
            &PatchParams::apply("two").force(),
            &Patch::Apply(d("sidecar", "proxy:1")),
        )
        .await
        .unwrap();
    let names: Vec<String> = merged
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["app", "sidecar"]);
}

#[tokio::test]
async fn merge_strategic_and_json_patches_apply() {
    let (client, ns) = setup("cp-patch").await;
    let api: Api<Deployment> = Api::namespaced(client, &ns);
    api.create(&PostParams::default(), &deployment("web", "demo:v1"))
        .await
        .unwrap();

    // Strategic merge: containers merge by name, so only the image changes.
    let patched = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "demo:v2"}]}}}})),
        )
        .await
        .unwrap();
    let containers = patched
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers
        .clone();
    assert_eq!(
        (containers.len(), containers[0].image.as_deref()),
        (1, Some("demo:v2"))
    );
    assert!(
        containers[0].ports.is_some(),
        "strategic merge dropped the ports"
    );

    // JSON merge patch replaces lists and merges maps.
    let patched = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "web"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.labels().get("tier").map(String::as_str),
        Some("web")
    );

    // JSON Patch with a failing test operation is refused and changes nothing.
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/replicas", "value": 7},
        {"op": "replace", "path": "/spec/replicas", "value": 1}
    ]))
    .unwrap();
    let err = api
        .patch("web", &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .unwrap_err();
    assert!(
        matches!(api_error(err).code, 422 | 409 | 500),
        "test operation should fail"
    );
    assert_eq!(
        api.get("web").await.unwrap().spec.unwrap().replicas,
        Some(2)
    );
}

#[tokio::test]
async fn status_and_scale_subresources() {
    let (client, ns) = setup("cp-sub").await;
    let api: Api<Deployment> = Api::namespaced(client, &ns);
    let created = api
        .create(&PostParams::default(), &deployment("web", "demo:v1"))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));

    // A status write does not touch the spec or the generation.
    let with_status = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"replicas": 2, "availableReplicas": 2, "observedGeneration": 1}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        with_status.status.as_ref().unwrap().available_replicas,
        Some(2)
    );
    assert_eq!(with_status.metadata.generation, Some(1));

    // The main resource ignores status changes.
    let ignored = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"availableReplicas": 0}})),
        )
        .await
        .unwrap();
    assert_eq!(ignored.status.unwrap().available_replicas, Some(2));

    // Scale reads and writes spec.replicas and bumps the generation.
    let scale = api.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(2));
    api.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 0}})),
    )
    .await
    .unwrap();
    let after = api.get("web").await.unwrap();
    assert_eq!(after.spec.unwrap().replicas, Some(0));
    assert_eq!(after.metadata.generation, Some(2));
}

#[tokio::test]
async fn stale_resource_version_is_a_conflict() {
    let (client, ns) = setup("cp-409").await;
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    let mut cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"k": "1"}})).unwrap();
    let first = api.create(&PostParams::default(), &cm).await.unwrap();
    cm.metadata.resource_version = first.metadata.resource_version.clone();
    cm.data = Some([("k".to_string(), "2".to_string())].into());
    api.replace("c", &PostParams::default(), &cm).await.unwrap();
    // Same (now stale) resourceVersion again.
    cm.data = Some([("k".to_string(), "3".to_string())].into());
    let err = api_error(
        api.replace("c", &PostParams::default(), &cm)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert_eq!(api.get("c").await.unwrap().data.unwrap()["k"], "2");
}

#[tokio::test]
async fn label_selectors_filter_lists() {
    let (client, ns) = setup("cp-labels").await;
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    for (name, tier) in [("a", "web"), ("b", "db"), ("c", "web")] {
        let cm =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": {"tier": tier}}}))
                .unwrap();
        api.create(&PostParams::default(), &cm).await.unwrap();
    }
    let names = |list: kube::core::ObjectList<ConfigMap>| {
        list.items.iter().map(|c| c.name_any()).collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("tier=web"))
                .await
                .unwrap()
        ),
        ["a", "c"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("tier!=web"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("tier in (db)"))
                .await
                .unwrap()
        ),
        ["b"]
    );
}

#[tokio::test]
async fn a_watcher_sees_create_update_delete() {
    let (client, ns) = setup("cp-watch").await;
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    // Wait for the initial (empty) list to finish before changing anything.
    loop {
        if let watcher::Event::InitDone = events.try_next().await.unwrap().unwrap() {
            break;
        }
    }
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "w"}, "data": {"k": "1"}})).unwrap();
    api.create(&PostParams::default(), &cm).await.unwrap();
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    api.delete("w", &Default::default()).await.unwrap();

    let mut seen = vec![];
    tokio::time::timeout(Duration::from_secs(20), async {
        while seen.len() < 3 {
            match events.try_next().await.unwrap().unwrap() {
                watcher::Event::Apply(c) => seen.push(format!("apply k={}", c.data.unwrap()["k"])),
                watcher::Event::Delete(_) => seen.push("delete".into()),
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("watch events seen so far: {seen:?}"));
    assert_eq!(seen, ["apply k=1", "apply k=2", "delete"]);
}

#[tokio::test]
async fn leases_and_events_are_served() {
    let (client, ns) = setup("cp-lease").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "frys-rollback-leader"},
        "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15}
    }))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let got = leases.get("frys-rollback-leader").await.unwrap();
    assert_eq!(got.spec.unwrap().holder_identity.as_deref(), Some("pod-a"));

    let events: Api<Event> = Api::namespaced(client, &ns);
    let event = Event {
        metadata: kube::api::ObjectMeta {
            name: Some("e1".into()),
            ..Default::default()
        },
        event_time: Some(MicroTime(Timestamp::now())),
        reason: Some("Tested".into()),
        action: Some("Test".into()),
        note: Some("an events.k8s.io/v1 Event".into()),
        type_: Some("Normal".into()),
        reporting_controller: Some("frys-tests".into()),
        reporting_instance: Some("frys-tests".into()),
        ..Default::default()
    };
    events.create(&PostParams::default(), &event).await.unwrap();
    let listed = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].reason.as_deref(), Some("Tested"));
}

/// Stays exactly as the API server answers: an object of an unknown field type is refused by
/// the OpenAPI schema, a bad value by a CEL rule (the CRDs' own tests cover messages).
#[tokio::test]
async fn crd_openapi_and_cel_validation_reject() {
    let (client, ns) = setup("cp-crd-validate").await;
    support::install_crds(&client).await;
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client,
        &ns,
        &kube::discovery::ApiResource::erase::<frys_rollback::api::RollbackPolicy>(&()),
    );
    let policy = |consecutive: serde_json::Value, strategies: serde_json::Value| {
        serde_json::from_value::<kube::api::DynamicObject>(json!({
            "apiVersion": "rollback.frys.io/v1alpha1", "kind": "RollbackPolicy",
            "metadata": {"name": "p"},
            "spec": {"targetRef": {"name": "web"}, "metrics": [{"name": "e", "preset": "errorRate"}],
                     "consecutiveFailures": consecutive, "strategies": strategies}
        }))
        .unwrap()
    };
    // OpenAPI: wrong type and out of bounds.
    let err = api_error(
        api.create(
            &PostParams::default(),
            &policy(json!("three"), json!([{"type": "VersionRollback"}])),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("spec.consecutiveFailures"),
        "{}",
        err.message
    );
    let err = api_error(
        api.create(
            &PostParams::default(),
            &policy(json!(0), json!([{"type": "VersionRollback"}])),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        err.message.contains("should be greater than or equal to 1"),
        "{}",
        err.message
    );
    // CEL.
    let err = api_error(
        api.create(
            &PostParams::default(),
            &policy(json!(3), json!([{"type": "CircuitBreaker"}])),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message
            .contains("type CircuitBreaker needs the circuitBreaker member"),
        "{}",
        err.message
    );
    // Defaulting from the schema happened on the accepted object.
    let ok = api
        .create(
            &PostParams::default(),
            &policy(json!(3), json!([{"type": "VersionRollback"}])),
        )
        .await
        .unwrap();
    assert_eq!(ok.data["spec"]["historyLimit"], 10);
    assert_eq!(ok.data["spec"]["targetRef"]["kind"], "Deployment");
}
