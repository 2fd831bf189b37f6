//! Environment profiles (issue 14): the chart renders the profiles ConfigMap from its values;
//! the operator, given that file, completes policies that leave fields out from their
//! namespace's profile; two namespaces with different profiles answer the same bad release with
//! different rungs; an unknown profile is a clear condition; a changed file applies without a
//! restart.
//!
//! Differs from production: the file is written by the test from `helm template`'s ConfigMap
//! (no kubelet here to mount it), and each namespace has its own operator (`--namespace`, as
//! every test's), which watches its one Namespace by name as the chart's namespaced install does.

use std::time::Duration;

use frys_rollback::api::{EventPhase, RollbackEvent, RollbackPolicy, StrategyKind};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::{Value, json};

use crate::{
    chart::helm,
    support::{self, Operator, condition, env, eventually, kubectl, kubectl_apply, repo_root},
};

const TIMEOUT: Duration = Duration::from_secs(120);

/// The shipped profiles, plus what this test sets through values as a user would: a fast
/// interval, autoRollback and an error-rate threshold for development.
/// (`--set-json`: `--set` makes 0.1 a string, which the values schema refuses.)
const SETS: &[&str] = &[
    r#"profiles.development.interval="1s""#,
    "profiles.development.autoRollback=true",
    "profiles.development.thresholds.errorRate=0.1",
    r#"profiles.production.interval="1s""#,
];

/// `helm template` with `--set-json` values: the rendered objects.
fn render(sets: &[&str]) -> Vec<Value> {
    use serde::Deserialize;
    let chart = repo_root().join("charts/frys-rollback");
    let chart = chart.to_string_lossy();
    let mut args = vec!["template", "frys-rollback", &chart, "-n", "ops"];
    for s in sets {
        args.extend(["--set-json", s]);
    }
    let (ok, out, err) = helm(&args);
    assert!(ok, "helm template: {err}");
    yaml_serde::Deserializer::from_str(&out)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// The profiles file the chart's ConfigMap carries, after checking how the Deployment mounts it.
fn profiles_from_chart(sets: &[&str]) -> String {
    let objects = render(sets);
    let configmap = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "frys-rollback-profiles")
        .expect("the chart renders the profiles ConfigMap");
    let text = configmap["data"]["profiles.yaml"]
        .as_str()
        .unwrap()
        .to_owned();
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["configMap"]["name"], "frys-rollback-profiles",
        "{pod}"
    );
    let container = &pod["containers"][0];
    let mount = &container["volumeMounts"][0];
    // No subPath: a subPath mount would never see the ConfigMap change.
    assert!(mount.get("subPath").is_none(), "{mount}");
    let file = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "FRYS_PROFILES_FILE")
        .expect("FRYS_PROFILES_FILE is set")["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        file,
        format!("{}/profiles.yaml", mount["mountPath"].as_str().unwrap())
    );
    text
}

/// The chart renders the profiles ConfigMap from `profiles:` in its values: the seed's three
/// ladders by default, values set by `--set` on top, nothing at all when `profiles` is empty.
#[test]
fn the_chart_renders_the_profiles_configmap_from_values() {
    let shipped: Value = yaml_serde::from_str(&profiles_from_chart(&[])).unwrap();
    let ladder = |p: &Value, name: &str| -> Vec<String> {
        p[name]["strategies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["type"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ladder(&shipped, "development"),
        ["CircuitBreaker", "EnvironmentSwitch"]
    );
    assert_eq!(
        ladder(&shipped, "staging"),
        ["CircuitBreaker", "TrafficShifting", "EnvironmentSwitch"]
    );
    assert_eq!(
        ladder(&shipped, "production"),
        [
            "CircuitBreaker",
            "TrafficShifting",
            "EnvironmentSwitch",
            "VersionRollback"
        ]
    );
    // Placeholders reach the file as written, for the operator to render per policy.
    assert_eq!(
        shipped["production"]["strategies"][2]["environmentSwitch"]["standbyRef"],
        "{{ target }}-blue"
    );
    // The operator accepts what the chart renders.
    frys_rollback::profile::Profiles::parse(&profiles_from_chart(SETS)).unwrap();
    let set: Value = yaml_serde::from_str(&profiles_from_chart(SETS)).unwrap();
    assert_eq!(set["development"]["interval"], "1s");

    // Without profiles: no ConfigMap, no file, no volume.
    let none = render(&["profiles=null"]);
    assert!(!none.iter().any(|o| o["kind"] == "ConfigMap"));
    let deployment = none.iter().find(|o| o["kind"] == "Deployment").unwrap();
    assert!(
        !deployment.to_string().contains("FRYS_PROFILES_FILE"),
        "{deployment}"
    );
    // The values schema refuses a profile field that does not exist.
    let chart = repo_root().join("charts/frys-rollback");
    let (ok, _, err) = helm(&[
        "template",
        "x",
        &chart.to_string_lossy(),
        "--set-json",
        r#"profiles.development.ladder="x""#,
    ]);
    assert!(!ok && err.contains("ladder"), "{err}");
}

/// A policy that names no ladder, no interval and no autoRollback: everything environmental
/// comes from its profile.
const POLICY: &str = r#"
apiVersion: rollback.frys.io/v1alpha1
kind: RollbackPolicy
metadata: {name: web}
spec:
  targetRef: {name: web}
  rateWindow: 5s
  consecutiveFailures: 3
  metrics: [{name: errors, preset: errorRate}]
  verification: {stabilizationDelay: 1s, timeout: 30s, consecutivePasses: 1}
"#;

/// A blue/green workload as the shipped profiles expect it: Service `web` selecting
/// `color: green`, Deployments `web` (green) and `web-blue` (the standby, scaled to zero).
async fn workload(client: &kube::Client, ns: &str) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    for (name, color, replicas) in [("web", "green", 2), ("web-blue", "blue", 0)] {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web", "color": color}},
                     "template": {"metadata": {"labels": {"app": "web", "color": color}},
                                  "spec": {"containers": [{"name": "app", "image": "demo:v1", "ports": [{"containerPort": 8080}]}]}}}
        }))
        .unwrap();
        deployments
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
    }
    support::create_service(client, ns, "web", json!({"app": "web", "color": "green"})).await;
}

fn label(ns: &str, value: &str) {
    let (ok, _, err) = kubectl(&[
        "label",
        "--overwrite",
        "namespace",
        ns,
        &format!("rollback.frys.io/profile={value}"),
    ]);
    assert!(ok, "{err}");
}

async fn first_event(client: &kube::Client, ns: &str) -> RollbackEvent {
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), ns);
    eventually(&format!("a remediation in {ns}"), TIMEOUT, || async {
        let e = events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .next()?;
        e.status.as_ref()?.phase.is_finished().then_some(e)
    })
    .await
}

#[tokio::test]
async fn two_namespaces_with_different_profiles_answer_the_same_release_differently() {
    if !support::require_simulator("profiles") {
        return;
    }
    let client = env().client().await;
    support::install_crds(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("profiles.yaml");
    std::fs::write(&file, profiles_from_chart(SETS)).unwrap();
    let file_arg = file.to_string_lossy().into_owned();
    let args = [
        "--profiles-file",
        file_arg.as_str(),
        "--environment",
        "production",
    ];

    // dev: labelled development. prod: no label, the operator's --environment.
    let dev = support::namespace(&client, "prof-dev").await;
    label(&dev, "development");
    let prod = support::namespace(&client, "prof-prod").await;
    let _dev_operator = Operator::start(&dev, &args).await;
    let _prod_operator = Operator::start(&prod, &args).await;
    for ns in [&dev, &prod] {
        workload(&client, ns).await;
        let (ok, _, err) = kubectl_apply(ns, POLICY);
        assert!(ok, "{err}");
    }

    // Each policy shows its profile and what it inherits. The rungs that name an HTTPRoute
    // (rendered for this target: `web`) find none here: reported, as for a policy's own rungs.
    for (ns, profile, inherited, missing) in [
        (
            &dev,
            "development",
            &[
                "interval",
                "autoRollback",
                "strategies",
                "metrics[errors].critical",
            ][..],
            "CircuitBreaker: HTTPRoute web not found",
        ),
        (
            &prod,
            "production",
            &["interval", "strategies"][..],
            "TrafficShifting: HTTPRoute web not found",
        ),
    ] {
        let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), ns);
        let p = eventually(
            &format!("{ns}: healthy before the release"),
            TIMEOUT,
            || async {
                let p = policies.get("web").await.ok()?;
                (condition(&p, "Healthy")?.0 == "True").then_some(p)
            },
        )
        .await;
        let effective = p.status.as_ref().unwrap().effective.clone().unwrap();
        assert_eq!(effective.profile.as_deref(), Some(profile), "{ns}");
        assert_eq!(effective.inherited, inherited, "{ns}");
        assert_eq!(effective.interval, Some("1s".into()), "{ns}");
        let (status, reason, message) = condition(&p, "Ready").unwrap();
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "RungReferenceMissing"),
            "{ns}"
        );
        assert!(message.contains(missing), "{ns}: {message}");
    }
    let dev_policy = Api::<RollbackPolicy>::namespaced(client.clone(), &dev)
        .get("web")
        .await
        .unwrap();
    let eff = dev_policy.status.unwrap().effective.unwrap();
    assert_eq!(eff.metrics[0].critical, Some(0.1));
    assert_eq!(eff.auto_rollback, Some(true));

    // `frys-rollback status` shows them too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_frys-rollback"))
        .args(["status", "-n", &dev])
        .env("KUBECONFIG", &env().kubeconfig)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .contains("development (interval, autoRollback, strategies, metrics[errors].critical)"),
        "{table}"
    );

    // The same bad release in both.
    for ns in [&dev, &prod] {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
        support::set_image(&deployments, "web", "demo:v2-faulty").await;
    }
    let dev_event = first_event(&client, &dev).await;
    let prod_event = first_event(&client, &prod).await;
    eprintln!(
        "development: {} {:?} {}; production: {} {:?} {}",
        dev_event.spec.strategy,
        dev_event.status.as_ref().map(|s| s.phase),
        dev_event.spec.reason,
        prod_event.spec.strategy,
        prod_event.status.as_ref().map(|s| s.phase),
        prod_event.spec.reason,
    );
    // development has no VersionRollback: its environment switch answers the release, and the
    // Service now selects the standby. production rolls the version back.
    assert_eq!(dev_event.spec.strategy, StrategyKind::EnvironmentSwitch);
    let services: Api<Service> = Api::namespaced(client.clone(), &dev);
    let selector = services
        .get("web")
        .await
        .unwrap()
        .spec
        .unwrap()
        .selector
        .unwrap();
    assert_eq!(selector["color"], "blue");
    assert_eq!(prod_event.spec.strategy, StrategyKind::VersionRollback);
    assert_eq!(
        prod_event.status.as_ref().unwrap().phase,
        EventPhase::Succeeded,
        "{:?}",
        prod_event.status
    );
    let prod_web = Api::<Deployment>::namespaced(client.clone(), &prod)
        .get("web")
        .await
        .unwrap();
    assert_eq!(support::image(&prod_web), "demo:v1");

    // An unknown profile: a clear condition, not silent defaults (the label watch applies it
    // without a restart).
    label(&dev, "qa");
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &dev);
    let message = eventually("UnknownProfile", Duration::from_secs(30), || async {
        let p = policies.get("web").await.ok()?;
        let (status, reason, message) = condition(&p, "Ready")?;
        (status == "False" && reason == "UnknownProfile").then_some(message)
    })
    .await;
    assert_eq!(
        message,
        "profile \"qa\" (from the namespace label rollback.frys.io/profile) is not defined by the operator's profile configuration (defined: development, production, staging)"
    );

    // The file changes (as a kubelet updates a mounted ConfigMap): applied without a restart.
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("qa:\n  interval: 2s\n  strategies: [{type: VersionRollback}]\n");
    std::fs::write(&file, text).unwrap();
    let effective = eventually(
        "the qa profile in force",
        Duration::from_secs(30),
        || async {
            let p = policies.get("web").await.ok()?;
            let effective = p.status?.effective?;
            (effective.profile.as_deref() == Some("qa")).then_some(effective)
        },
    )
    .await;
    assert_eq!(effective.interval, Some("2s".into()));
    assert_eq!(effective.inherited, ["interval", "strategies"]);
    let p = policies.get("web").await.unwrap();
    let (_, reason, message) = condition(&p, "Ready").unwrap();
    assert_ne!(reason, "UnknownProfile", "{message}");
}
