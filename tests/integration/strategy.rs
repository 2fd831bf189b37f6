//! The strategies against the real API server, without the operator: each test applies a
//! strategy, checks the objects, applies again (no second write: resourceVersions unchanged),
//! undoes, and checks conflicts and refusals.
//!
//! These tests play the Deployment controller themselves: they create the ReplicaSets a
//! Deployment controller would have made, and report availability where a strategy waits for
//! it (their Deployments tell the workload simulator to leave them alone).

use std::time::Duration;

use frys_rollback::strategy::{
    self, Cluster, Error, Kind, Objects, REVISION, ROLLED_BACK_FROM, ROLLED_BACK_TO, Remediation,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::support::{self, env};

/// One test's namespace and clients.
struct Fixture {
    client: Client,
    ns: String,
    cluster: Cluster,
}

/// A fresh namespace, with the route CRDs installed.
async fn setup(prefix: &str) -> Fixture {
    let client = env().client().await;
    support::install_route_crds(&client).await;
    let ns = support::namespace(&client, prefix).await;
    Fixture {
        cluster: Cluster::new(client.clone(), &ns),
        client,
        ns,
    }
}

impl Fixture {
    fn api(&self, kind: Kind) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, &kind.api_resource())
    }

    async fn create(&self, kind: Kind, mut obj: Value) -> Value {
        obj["apiVersion"] = json!(kind.api_version());
        obj["kind"] = json!(kind.as_str());
        let obj: DynamicObject = serde_json::from_value(obj).unwrap();
        let created = self
            .api(kind)
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("creating {kind}: {e}"));
        serde_json::to_value(created).unwrap()
    }

    async fn get(&self, kind: Kind, name: &str) -> Value {
        self.cluster.get(kind, name).await.unwrap()
    }

    async fn rv(&self, kind: Kind, name: &str) -> String {
        self.get(kind, name).await["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Someone else's edit.
    async fn edit(&self, kind: Kind, name: &str, ops: Value) {
        let patch: json_patch::Patch = serde_json::from_value(ops).unwrap();
        self.api(kind)
            .patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .unwrap_or_else(|e| panic!("editing {kind} {name}: {e}"));
    }

    async fn done(self) {
        Api::<Namespace>::all(self.client)
            .delete(&self.ns, &DeleteParams::default())
            .await
            .unwrap();
    }
}

fn remediation(kind: &str, spec: Value) -> Remediation {
    let rung = serde_json::from_value(json!({"type": kind, kind_member(kind): spec})).unwrap();
    Remediation::from_rung(&rung).unwrap()
}

fn kind_member(kind: &str) -> String {
    let mut chars = kind.chars();
    let first = chars.next().unwrap().to_ascii_lowercase();
    std::iter::once(first).chain(chars).collect()
}

fn deployment(name: &str, replicas: i32, labels: Value, image: &str) -> Value {
    json!({
        // These tests play the Deployment controller (ReplicaSets, status) themselves: the
        // workload simulator, when running, must leave these Deployments alone.
        "metadata": {"name": name, "labels": labels, "annotations": {"sim.frys.io/ignore": "true"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image}]}
            }
        }
    })
}

#[tokio::test]
async fn circuit_breaker_opens_half_opens_and_undoes_on_an_httproute() {
    let env = setup("circuit-breaker").await;
    let original = json!({
        "metadata": {"name": "web"},
        "spec": {"parentRefs": [{"name": "gateway"}], "rules": [
            {"name": "admin", "backendRefs": [{"name": "admin", "port": 80}]},
            {"name": "main", "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
             "backendRefs": [{"name": "web", "port": 80}]}
        ]}
    });
    env.create(Kind::HttpRoute, original.clone()).await;
    let cb = remediation(
        "CircuitBreaker",
        json!({"httpRoute": "web", "ruleName": "main", "fallbackBackend": {"name": "sorry", "port": 8080}}),
    );

    let applied = strategy::apply(&env.cluster, &cb, "web").await.unwrap();
    assert_eq!(applied.actions.len(), 1, "{applied:?}");
    assert!(applied.actions[0].applied_at.is_some());
    let route = env.get(Kind::HttpRoute, "web").await;
    assert_eq!(
        route["spec"]["rules"][1]["backendRefs"],
        json!([{"name": "web", "port": 80, "weight": 0}, {"name": "sorry", "port": 8080, "weight": 1}])
    );
    assert_eq!(route["spec"]["rules"][0], original["spec"]["rules"][0]);

    // Applying again writes nothing.
    let rv = env.rv(Kind::HttpRoute, "web").await;
    let again = strategy::apply(&env.cluster, &cb, "web").await.unwrap();
    assert!(again.actions.is_empty(), "{again:?}");
    assert_eq!(env.rv(Kind::HttpRoute, "web").await, rv);

    // Half-open: the previous weights come back.
    let half = strategy::half_open(&env.cluster, &applied.actions)
        .await
        .unwrap();
    assert!(half[0].undone);
    assert_eq!(
        env.get(Kind::HttpRoute, "web").await["spec"],
        original["spec"]
    );

    // Re-open; someone edits the rule since: undo is refused, naming the field, unless forced.
    let reopened = strategy::apply(&env.cluster, &cb, "web").await.unwrap();
    assert_eq!(reopened.actions.len(), 1);
    env.edit(
        Kind::HttpRoute,
        "web",
        json!([{"op": "replace", "path": "/spec/rules/1/backendRefs/1/weight", "value": 5}]),
    )
    .await;
    let refused = strategy::undo(&env.cluster, &reopened.actions, false)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused.error, Error::ChangedSinceApplied { kind, name, field, .. }
            if kind == "HTTPRoute" && name == "web" && field == "spec.rules[1].backendRefs"),
        "{refused}"
    );
    assert!(!refused.actions[0].undone);
    let undone = strategy::undo(&env.cluster, &reopened.actions, true)
        .await
        .unwrap();
    assert!(undone[0].undone);
    assert_eq!(
        env.get(Kind::HttpRoute, "web").await["spec"],
        original["spec"]
    );
    env.done().await;
}

#[tokio::test]
async fn traffic_shifting_on_a_virtual_service_and_a_concurrent_edit_conflicts() {
    let env = setup("traffic-shifting").await;
    let original = json!({
        "metadata": {"name": "web"},
        "spec": {"hosts": ["web.example.com"], "http": [{"name": "main", "route": [
            {"destination": {"host": "web-canary", "port": {"number": 80}}, "weight": 40},
            {"destination": {"host": "web-stable.NS.svc.cluster.local", "port": {"number": 80}}, "weight": 60}
        ]}]}
    });
    let original: Value =
        serde_json::from_str(&original.to_string().replace("NS", &env.ns)).unwrap();
    env.create(Kind::VirtualService, original.clone()).await;
    let ts = remediation(
        "TrafficShifting",
        json!({"virtualService": "web", "ruleName": "main", "from": "web-canary", "to": "web-stable", "remainingPercent": 10}),
    );

    // Planned, then someone edits the route before the write: the guarded patch fails cleanly.
    let plan = ts.plan(&env.cluster, "web").await.unwrap();
    env.edit(
        Kind::VirtualService,
        "web",
        json!([{"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 50},
               {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 50}]),
    )
    .await;
    let conflict = env.cluster.execute(&plan).await.unwrap_err();
    assert!(
        matches!(&conflict.error, Error::Conflict { kind, field, .. }
            if kind == "VirtualService" && field.contains("/spec/http/0/route")),
        "{conflict}"
    );
    assert!(conflict.actions.is_empty());
    let route = env.get(Kind::VirtualService, "web").await;
    assert_eq!(
        route["spec"]["http"][0]["route"][0]["weight"], 50,
        "the edit stands"
    );

    // Planned again from the fresh state: applies.
    let applied = strategy::apply(&env.cluster, &ts, "web").await.unwrap();
    let route = env.get(Kind::VirtualService, "web").await;
    assert_eq!(route["spec"]["http"][0]["route"][0]["weight"], 10);
    assert_eq!(route["spec"]["http"][0]["route"][1]["weight"], 90);
    let rv = env.rv(Kind::VirtualService, "web").await;
    assert!(
        strategy::apply(&env.cluster, &ts, "web")
            .await
            .unwrap()
            .actions
            .is_empty()
    );
    assert_eq!(env.rv(Kind::VirtualService, "web").await, rv);

    strategy::undo(&env.cluster, &applied.actions, false)
        .await
        .unwrap();
    let route = env.get(Kind::VirtualService, "web").await;
    assert_eq!(route["spec"]["http"][0]["route"][0]["weight"], 50);
    assert_eq!(route["spec"]["http"][0]["route"][1]["weight"], 50);
    env.done().await;
}

/// Plays the Deployment controller for `name`: reports all its replicas available.
fn mark_available(env: &Fixture, name: &str) -> tokio::task::JoinHandle<()> {
    let api = env.api(Kind::Deployment);
    let name = name.to_owned();
    tokio::spawn(async move {
        loop {
            if let Ok(d) = api.get(&name).await {
                let d = serde_json::to_value(d).unwrap();
                let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
                if d["status"]["availableReplicas"].as_i64() != Some(replicas)
                    || d["status"]["observedGeneration"] != d["metadata"]["generation"]
                {
                    let status = json!({"status": {
                        "replicas": replicas, "readyReplicas": replicas,
                        "availableReplicas": replicas, "updatedReplicas": replicas,
                        "observedGeneration": d["metadata"]["generation"]
                    }});
                    let _ = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

#[tokio::test]
async fn environment_switch_readies_the_standby_then_switches_the_selector() {
    let env = setup("environment-switch").await;
    env.create(
        Kind::Deployment,
        deployment(
            "web-green",
            3,
            json!({"app": "web", "color": "green"}),
            "demo:v1",
        ),
    )
    .await;
    env.create(
        Kind::Deployment,
        deployment(
            "web-blue",
            0,
            json!({"app": "web", "color": "blue"}),
            "demo:v1",
        ),
    )
    .await;
    env.create(
        Kind::Service,
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web", "color": "green"}, "ports": [{"port": 80}]}}),
    )
    .await;
    let spec = json!({
        "service": "web", "selectorKey": "color", "activeValue": "green", "standbyValue": "blue",
        "standbyRef": "web-blue", "scaleStandby": true, "readyTimeout": "30s"
    });
    let es = remediation("EnvironmentSwitch", spec.clone());

    // Nobody makes the standby ready: a timeout, with the scale it did recorded for undo.
    let mut short = spec.clone();
    short["readyTimeout"] = json!("2s");
    let err = strategy::apply(
        &env.cluster,
        &remediation("EnvironmentSwitch", short),
        "web-green",
    )
    .await
    .unwrap_err();
    assert!(matches!(err.error, Error::Timeout { .. }), "{err}");
    assert_eq!(err.actions.len(), 1, "the scale of the standby");
    let service = env.get(Kind::Service, "web").await;
    assert_eq!(
        service["spec"]["selector"]["color"], "green",
        "not switched"
    );
    strategy::undo(&env.cluster, &err.actions, false)
        .await
        .unwrap();
    assert_eq!(
        env.get(Kind::Deployment, "web-blue").await["spec"]["replicas"],
        0
    );

    let controller = mark_available(&env, "web-blue");
    let applied = strategy::apply(&env.cluster, &es, "web-green")
        .await
        .unwrap();
    assert_eq!(applied.actions.len(), 2, "{applied:?}");
    assert_eq!(
        env.get(Kind::Deployment, "web-blue").await["spec"]["replicas"],
        3
    );
    let service = env.get(Kind::Service, "web").await;
    assert_eq!(
        service["spec"]["selector"],
        json!({"app": "web", "color": "blue"})
    );

    let rv = env.rv(Kind::Service, "web").await;
    let again = strategy::apply(&env.cluster, &es, "web-green")
        .await
        .unwrap();
    assert!(again.actions.is_empty(), "{again:?}");
    assert_eq!(env.rv(Kind::Service, "web").await, rv);

    strategy::undo(&env.cluster, &applied.actions, false)
        .await
        .unwrap();
    let service = env.get(Kind::Service, "web").await;
    assert_eq!(
        service["spec"]["selector"],
        json!({"app": "web", "color": "green"})
    );
    assert_eq!(
        env.get(Kind::Deployment, "web-blue").await["spec"]["replicas"],
        0
    );

    // The stand-in Deployment controller reports the undo's scale-down first: a status write
    // of its own between the plan and the execution below would be a second conflict.
    for _ in 0..50 {
        let d = env.get(Kind::Deployment, "web-blue").await;
        if d["status"]["availableReplicas"].as_i64().unwrap_or(0) == 0
            && d["status"]["observedGeneration"] == d["metadata"]["generation"]
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Someone edits the Service while the standby is made ready: the selector write conflicts.
    let plan = es.plan(&env.cluster, "web-green").await.unwrap();
    env.edit(
        Kind::Service,
        "web",
        json!([{"op": "add", "path": "/metadata/labels", "value": {"edited": "yes"}}]),
    )
    .await;
    let conflict = env.cluster.execute(&plan).await.unwrap_err();
    assert!(
        matches!(&conflict.error, Error::Conflict { kind, field, .. }
            if kind == "Service" && field == "metadata.resourceVersion"),
        "{conflict}"
    );
    assert_eq!(conflict.actions.len(), 1, "the standby was scaled before");
    assert_eq!(
        env.get(Kind::Service, "web").await["spec"]["selector"]["color"],
        "green"
    );
    controller.abort();
    env.done().await;
}

/// A Deployment `web` at `current` and the ReplicaSets of `revisions` (revision, image,
/// change-cause) it owns, as the Deployment controller would have left them.
async fn deployment_with_history(
    env: &Fixture,
    name: &str,
    current: &str,
    revisions: &[(i64, &str, Option<&str>)],
) -> Value {
    let labels = json!({"app": name});
    let mut d = deployment(name, 2, labels.clone(), current);
    let (last, _, cause) = revisions.last().unwrap();
    d["metadata"]["annotations"][REVISION] = json!(last.to_string());
    if let Some(c) = cause {
        d["metadata"]["annotations"]["kubernetes.io/change-cause"] = json!(c);
    }
    let d = env.create(Kind::Deployment, d).await;
    for (revision, image, cause) in revisions {
        env.create(
            Kind::ReplicaSet,
            replica_set(name, &d, *revision, image, *cause),
        )
        .await;
    }
    d
}

fn replica_set(
    name: &str,
    owner: &Value,
    revision: i64,
    image: &str,
    cause: Option<&str>,
) -> Value {
    let hash = format!("h{revision}");
    let labels = json!({"app": name, "pod-template-hash": hash});
    let mut annotations = json!({REVISION: revision.to_string()});
    if let Some(c) = cause {
        annotations["kubernetes.io/change-cause"] = json!(c);
    }
    json!({
        "metadata": {
            "name": format!("{name}-{hash}"), "labels": labels, "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"], "controller": true
            }]
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image}]}
            }
        }
    })
}

#[tokio::test]
async fn version_rollback_is_idempotent_and_undoes_without_replica_set_history() {
    let env = setup("version-rollback").await;
    let original = deployment_with_history(
        &env,
        "web",
        "demo:v3",
        &[
            (1, "demo:v1", Some("first release")),
            (3, "demo:v3", Some("v3")),
        ],
    )
    .await;
    // A ReplicaSet with the same labels owned by another Deployment is not history.
    let stranger =
        json!({"metadata": {"name": "web", "uid": "00000000-0000-0000-0000-000000000000"}});
    env.create(
        Kind::ReplicaSet,
        replica_set("web", &stranger, 2, "other:v2", None),
    )
    .await;
    let vr =
        Remediation::without_parameters(frys_rollback::api::StrategyKind::VersionRollback).unwrap();

    let applied = strategy::apply(&env.cluster, &vr, "web").await.unwrap();
    assert_eq!(applied.actions.len(), 1, "{applied:?}");
    assert!(
        applied.actions[0]
            .summary
            .contains("back to revision 1 (demo:v1) from revision 3"),
        "{}",
        applied.actions[0].summary
    );
    let d = env.get(Kind::Deployment, "web").await;
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"],
        json!({"app": "web"}),
        "revision 1's template without pod-template-hash"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "demo:v1"
    );
    let annotations = &d["metadata"]["annotations"];
    assert_eq!(annotations["kubernetes.io/change-cause"], "first release");
    assert!(annotations[ROLLED_BACK_FROM].is_string() && annotations[ROLLED_BACK_TO].is_string());

    // Again, before and after the Deployment controller renumbers revision 1 to 4: no write.
    let rv = env.rv(Kind::Deployment, "web").await;
    assert!(
        strategy::apply(&env.cluster, &vr, "web")
            .await
            .unwrap()
            .actions
            .is_empty()
    );
    env.edit(
        Kind::ReplicaSet,
        "web-h1",
        json!([{"op": "replace", "path": "/metadata/annotations/deployment.kubernetes.io~1revision", "value": "4"}]),
    )
    .await;
    env.edit(
        Kind::Deployment,
        "web",
        json!([{"op": "replace", "path": "/metadata/annotations/deployment.kubernetes.io~1revision", "value": "4"}]),
    )
    .await;
    let rv_renumbered = env.rv(Kind::Deployment, "web").await;
    assert_ne!(rv, rv_renumbered);
    let again = strategy::apply(&env.cluster, &vr, "web").await.unwrap();
    assert!(again.actions.is_empty(), "{again:?}");
    assert_eq!(env.rv(Kind::Deployment, "web").await, rv_renumbered);

    // The ReplicaSet history goes away; someone changes the template: undo is refused...
    for rs in ["web-h1", "web-h3"] {
        env.api(Kind::ReplicaSet)
            .delete(rs, &DeleteParams::default())
            .await
            .unwrap();
    }
    env.edit(
        Kind::Deployment,
        "web",
        json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "demo:v5"}]),
    )
    .await;
    let refused = strategy::undo(&env.cluster, &applied.actions, false)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused.error, Error::ChangedSinceApplied { field, .. } if field == "spec.template"),
        "{refused}"
    );
    // ... and forced, it restores the recorded template and annotations exactly.
    let undone = strategy::undo(&env.cluster, &applied.actions, true)
        .await
        .unwrap();
    assert!(undone[0].undone);
    let d = env.get(Kind::Deployment, "web").await;
    assert_eq!(d["spec"]["template"], original["spec"]["template"]);
    assert_eq!(
        d["metadata"]["annotations"],
        json!({REVISION: "4", "kubernetes.io/change-cause": "v3", "sim.frys.io/ignore": "true"})
    );
    env.done().await;
}

#[tokio::test]
async fn version_rollback_refuses_a_reapplied_bad_template_missing_history_and_stale_plans() {
    let env = setup("version-rollback-refusals").await;
    let vr = remediation("VersionRollback", json!({}));
    let bad = deployment_with_history(
        &env,
        "web",
        "demo:v2",
        &[(1, "demo:v1", None), (2, "demo:v2", None)],
    )
    .await;
    strategy::apply(&env.cluster, &vr, "web").await.unwrap();

    // GitOps re-applies the bad release: reported, not rolled back again.
    env.edit(
        Kind::Deployment,
        "web",
        json!([{"op": "replace", "path": "/spec/template", "value": bad["spec"]["template"]}]),
    )
    .await;
    let rv = env.rv(Kind::Deployment, "web").await;
    let err = strategy::apply(&env.cluster, &vr, "web").await.unwrap_err();
    assert!(
        matches!(err.error, Error::BadTemplateReapplied { .. }),
        "{err}"
    );
    assert_eq!(env.rv(Kind::Deployment, "web").await, rv);

    // No earlier revision, or an unknown one: typed refusals.
    deployment_with_history(&env, "solo", "demo:v1", &[(1, "demo:v1", None)]).await;
    let err = strategy::apply(&env.cluster, &vr, "solo")
        .await
        .unwrap_err();
    assert!(
        matches!(err.error, Error::NoPreviousRevision { .. }),
        "{err}"
    );
    let to_7 = remediation("VersionRollback", json!({"toRevision": 7}));
    let err = strategy::apply(&env.cluster, &to_7, "solo")
        .await
        .unwrap_err();
    assert!(
        matches!(err.error, Error::RevisionNotFound { revision: 7, .. }),
        "{err}"
    );
    let err = strategy::apply(&env.cluster, &vr, "ghost")
        .await
        .unwrap_err();
    assert!(
        matches!(&err.error, Error::NotFound { kind, name } if kind == "Deployment" && name == "ghost"),
        "{err}"
    );

    // A template changed between plan and write: the test operation fails the patch.
    deployment_with_history(
        &env,
        "api",
        "demo:v2",
        &[(1, "demo:v1", None), (2, "demo:v2", None)],
    )
    .await;
    let plan = vr.plan(&env.cluster, "api").await.unwrap();
    env.edit(
        Kind::Deployment,
        "api",
        json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "demo:v3"}]),
    )
    .await;
    let conflict = env.cluster.execute(&plan).await.unwrap_err();
    assert!(
        matches!(&conflict.error, Error::Conflict { field, .. } if field == "/spec/template"),
        "{conflict}"
    );
    let d = env.get(Kind::Deployment, "api").await;
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "demo:v3"
    );
    env.done().await;
}

#[tokio::test]
async fn emergency_shutdown_pins_the_hpa_scales_to_zero_cuts_traffic_and_undoes() {
    let env = setup("emergency-shutdown").await;
    env.create(
        Kind::Deployment,
        deployment("web", 4, json!({"app": "web"}), "demo:v1"),
    )
    .await;
    let hpa = json!({
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2, "maxReplicas": 10,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
        }
    });
    let hpa = env.create(Kind::HorizontalPodAutoscaler, hpa).await;
    let route = json!({
        "metadata": {"name": "edge"},
        "spec": {"rules": [{"backendRefs": [{"name": "web", "port": 80}, {"name": "static", "port": 80}]}]}
    });
    let route = env.create(Kind::HttpRoute, route).await;
    let stop = remediation(
        "EmergencyShutdown",
        json!({"cutTraffic": {"httpRoute": "edge"}}),
    );

    let applied = strategy::apply(&env.cluster, &stop, "web").await.unwrap();
    let kinds: Vec<&str> = applied.actions.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["HTTPRoute", "HorizontalPodAutoscaler", "Deployment"]
    );
    assert_eq!(
        env.get(Kind::Deployment, "web").await["spec"]["replicas"],
        0
    );
    let pinned = env.get(Kind::HorizontalPodAutoscaler, "web").await;
    assert_eq!(
        (
            pinned["spec"]["minReplicas"].as_i64(),
            pinned["spec"]["maxReplicas"].as_i64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(
        pinned["metadata"]["annotations"]["rollback.frys.io/pinned"],
        "minReplicas=2,maxReplicas=10"
    );
    assert_eq!(
        env.get(Kind::HttpRoute, "edge").await["spec"]["rules"][0]["backendRefs"],
        json!([{"name": "web", "port": 80, "weight": 0}, {"name": "static", "port": 80, "weight": 1}])
    );

    // Again: nothing written anywhere.
    let rvs = [
        env.rv(Kind::Deployment, "web").await,
        env.rv(Kind::HorizontalPodAutoscaler, "web").await,
        env.rv(Kind::HttpRoute, "edge").await,
    ];
    let again = strategy::apply(&env.cluster, &stop, "web").await.unwrap();
    assert!(again.actions.is_empty(), "{again:?}");
    assert_eq!(
        rvs,
        [
            env.rv(Kind::Deployment, "web").await,
            env.rv(Kind::HorizontalPodAutoscaler, "web").await,
            env.rv(Kind::HttpRoute, "edge").await,
        ]
    );

    // Someone scales it up by hand: undo is refused (last action first) unless forced.
    env.api(Kind::Deployment)
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    let refused = strategy::undo(&env.cluster, &applied.actions, false)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused.error, Error::ChangedSinceApplied { kind, field, .. }
            if kind == "Deployment" && field == "spec.replicas"),
        "{refused}"
    );
    assert!(refused.actions.iter().all(|a| !a.undone));
    let undone = strategy::undo(&env.cluster, &applied.actions, true)
        .await
        .unwrap();
    assert!(undone.iter().all(|a| a.undone));
    assert_eq!(
        env.get(Kind::Deployment, "web").await["spec"]["replicas"],
        4
    );
    let restored = env.get(Kind::HorizontalPodAutoscaler, "web").await;
    assert_eq!(restored["spec"], hpa["spec"]);
    assert!(
        restored["metadata"].get("annotations").is_none(),
        "{restored}"
    );
    assert_eq!(
        env.get(Kind::HttpRoute, "edge").await["spec"],
        route["spec"]
    );

    // A scale between plan and write conflicts; what was done before is returned for undo.
    let plan = stop.plan(&env.cluster, "web").await.unwrap();
    env.api(Kind::Deployment)
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    let conflict = env.cluster.execute(&plan).await.unwrap_err();
    assert!(
        matches!(&conflict.error, Error::Conflict { kind, .. } if kind == "Deployment"),
        "{conflict}"
    );
    assert_eq!(
        conflict.actions.len(),
        2,
        "route and HPA were changed before"
    );
    strategy::undo(&env.cluster, &conflict.actions, false)
        .await
        .unwrap();
    assert_eq!(
        env.get(Kind::HorizontalPodAutoscaler, "web").await["spec"],
        hpa["spec"]
    );
    assert_eq!(
        env.get(Kind::HttpRoute, "edge").await["spec"],
        route["spec"]
    );
    assert_eq!(
        env.get(Kind::Deployment, "web").await["spec"]["replicas"],
        5
    );
    env.done().await;
}
