//! The Helm chart (issue: packaging): it lints and renders, installs every object, and its RBAC
//! is exactly what the operator uses: every request the operator makes (the control plane's
//! request log) is allowed by the rendered rules, and every rule is used or justified.

use std::{collections::BTreeSet, time::Duration};

use frys_rollback::api::{EventPhase, RollbackEvent, RollbackPolicy};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, ResourceExt,
    api::{ListParams, PostParams},
};
use serde_json::{Value, json};

use crate::support::{self, Operator, deployment, env, eventually, kubectl, repo_root, tool};

const CHART: &str = "charts/frys-rollback";
const TIMEOUT: Duration = Duration::from_secs(120);

/// Rules of the chart that the test's own operator run (drive_operator) may not exercise, each
/// with the code path that needs it. Any other rule left unused fails the test.
const JUSTIFIED_UNUSED: &[(&str, &str, &str, &str)] = &[
    (
        "events.k8s.io",
        "events",
        "patch",
        "kube's Recorder patches an Event's series when the same Event repeats",
    ),
    (
        "",
        "pods",
        "get",
        "a verification probe reads the Pod an endpoint names (only with a health or HTTP check)",
    ),
    (
        "",
        "namespaces",
        "get",
        "a drill reads its namespace's drills label, and the freeze check reads a namespace the cache has not shown yet (tests/integration/drills.rs drives the first)",
    ),
    (
        "rollback.frys.io",
        "rollbackpolicies",
        "patch",
        "a trigger annotation on the policy is consumed, or an old finalizer dropped (tests/integration/triggers.rs drives it)",
    ),
    (
        "rollback.frys.io",
        "rollbackdrills",
        "get",
        "a drill's reconcile reads it fresh before acting (tests/integration/drills.rs drives it)",
    ),
    (
        "rollback.frys.io",
        "rollbackdrills",
        "patch",
        "a drill's run-now annotation is consumed (tests/integration/drills.rs drives it)",
    ),
    (
        "rollback.frys.io",
        "rollbackdrills/status",
        "patch",
        "a drill's status and report (tests/integration/drills.rs drives it)",
    ),
];

/// (success, stdout, stderr) of helm.
pub(crate) fn helm(args: &[&str]) -> (bool, String, String) {
    let out = tool("helm", args, None);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn chart_path() -> String {
    repo_root().join(CHART).to_string_lossy().into_owned()
}

/// `helm template` with `--set` values; the rendered objects.
fn render(sets: &[&str]) -> Vec<Value> {
    let chart = chart_path();
    let mut args = vec!["template", "frys-rollback", chart.as_str(), "-n", "ops"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let (ok, out, err) = helm(&args);
    assert!(ok, "helm template {sets:?}: {err}");
    parse_yaml(&out)
}

fn parse_yaml(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    yaml_serde::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_owned())
        .collect();
    k.sort();
    k
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// (apiGroup, resource[/subresource], verb, resourceNames) of every rule of these Roles.
type Grant = (String, String, String, Vec<String>);

fn grants<'a>(roles: impl IntoIterator<Item = &'a Value>) -> Vec<Grant> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let mut out = vec![];
    for role in roles {
        for rule in role["rules"].as_array().unwrap() {
            let names = strings(&rule["resourceNames"]);
            for g in strings(&rule["apiGroups"]) {
                for r in strings(&rule["resources"]) {
                    for v in strings(&rule["verbs"]) {
                        assert!(g != "*" && r != "*" && v != "*", "wildcard in rule {rule}");
                        out.push((g.clone(), r.clone(), v, names.clone()));
                    }
                }
            }
        }
    }
    out
}

/// (apiGroup, resource[/subresource], verb, name) of one logged request.
fn request_key(r: &Value) -> (String, String, String, String) {
    let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
    let sub = s("subresource");
    let resource = if sub.is_empty() {
        s("resource")
    } else {
        format!("{}/{sub}", s("resource"))
    };
    (s("apiGroup"), resource, s("verb"), s("name"))
}

fn allows(
    grants: &[Grant],
    (group, resource, verb, name): &(String, String, String, String),
) -> bool {
    grants.iter().any(|(g, r, v, names)| {
        g == group && r == resource && v == verb && (names.is_empty() || names.contains(name))
    })
}

/// The container's literal env values, given as the flags they stand for, parse as
/// `frys-rollback run` parses them.
fn parses_as_run(container: &Value) {
    let mut run = vec!["frys-rollback".to_owned(), "run".to_owned()];
    for e in container["env"].as_array().unwrap() {
        if let Some(v) = e["value"].as_str() {
            let flag = match e["name"].as_str().unwrap() {
                "HEALTH_CHECK_INTERVAL" => "--interval",
                "THRESHOLD_RESPONSE_TIME" => "--threshold-response-time",
                "THRESHOLD_ERROR_RATE" => "--threshold-error-rate",
                "THRESHOLD_MEMORY_USAGE" => "--threshold-memory-usage",
                "THRESHOLD_CPU_USAGE" => "--threshold-cpu-usage",
                "FRYS_WORKLOAD_LABEL" => "--workload-label",
                "FRYS_MAX_CONCURRENT_REMEDIATIONS" => "--max-concurrent-remediations",
                "FRYS_FREEZE" => "--freeze",
                "ROLLBACK_AUTO_ENABLED" => "--auto-rollback",
                "ROLLBACK_ENV" => "--environment",
                "FRYS_LOG_FORMAT" => "--log-format",
                "FRYS_METRICS_ADDR" => "--metrics-addr",
                "FRYS_LEADER_ELECTION" => "--leader-election",
                "FRYS_LEADER_ELECTION_LEASE_NAME" => "--leader-election-lease-name",
                "FRYS_LEADER_ELECTION_LEASE_DURATION" => "--leader-election-lease-duration",
                "FRYS_LEADER_ELECTION_RENEW_PERIOD" => "--leader-election-renew-period",
                "FRYS_ALLOW_PROMETHEUS_URLS" => "--allow-prometheus-url",
                "FRYS_ALLOW_PROBE_URLS" => "--allow-probe-url",
                "FRYS_UNDO_KEY_SECRET" => "--undo-key-secret",
                "FRYS_ALERT_RECEIVER_ADDR" => "--alert-receiver-addr",
                "FRYS_ALERT_RECEIVER_TOKEN_SECRET" => "--alert-receiver-token-secret",
                "FRYS_ALERT_RECEIVER_TLS_CERT" => "--alert-receiver-tls-cert",
                "FRYS_ALERT_RECEIVER_TLS_KEY" => "--alert-receiver-tls-key",
                "FRYS_ALERT_TTL" => "--alert-ttl",
                _ => continue,
            };
            run.extend([flag.to_owned(), v.to_owned()]);
        }
    }
    <frys_rollback::cli::Cli as clap::Parser>::try_parse_from(&run)
        .unwrap_or_else(|e| panic!("the chart's settings do not parse: {e}"));
}

#[tokio::test]
async fn chart_lints_and_renders() {
    let chart = chart_path();
    let (ok, out, err) = helm(&["lint", "--strict", &chart]);
    assert!(ok, "helm lint: {out}{err}");
    assert!(
        !out.contains("[WARNING]") && !out.contains("[ERROR]"),
        "helm lint: {out}"
    );

    // The chart's CRDs are the repository's crds/, byte for byte (the chart cannot read
    // outside its directory).
    for file in [
        "rollback.frys.io_rollbackpolicies.yaml",
        "rollback.frys.io_rollbackevents.yaml",
        "rollback.frys.io_rollbackdrills.yaml",
    ] {
        let source = std::fs::read_to_string(repo_root().join("crds").join(file)).unwrap();
        let copy =
            std::fs::read_to_string(repo_root().join(CHART).join("files/crds").join(file)).unwrap();
        assert_eq!(
            source, copy,
            "{CHART}/files/crds/{file} differs from crds/{file}: cp crds/*.yaml {CHART}/files/crds/"
        );
    }

    // Defaults: cluster-wide.
    let objects = render(&[]);
    assert_eq!(
        kinds(&objects),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            // The environment profiles (values: profiles).
            "ConfigMap",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]
    );
    for o in &objects {
        let labels = &o["metadata"]["labels"];
        for l in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/component",
            "app.kubernetes.io/part-of",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ] {
            assert!(labels[l].is_string(), "{} has no label {l}", o["kind"]);
        }
    }
    for crd in find(&objects, "CustomResourceDefinition") {
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{crd}"
        );
        let name = crd["metadata"]["name"].as_str().unwrap();
        let generated = frys_rollback::api::crds()
            .into_iter()
            .find(|(_, c)| c.metadata.name.as_deref() == Some(name))
            .unwrap()
            .1;
        assert_eq!(
            crd["spec"],
            serde_json::to_value(&generated.spec).unwrap(),
            "the chart's {name} is not the one the code generates"
        );
    }
    let deployment = find(&objects, "Deployment")[0];
    // High availability: two replicas, one leader by Lease, a standby started before a pod
    // stops, and one replica kept through drains.
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    let pdb = find(&objects, "PodDisruptionBudget")[0];
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    // The Lease: a Role in the release namespace (not a ClusterRole), leases only.
    let election = find(&objects, "Role")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "frys-rollback-leader-election")
        .unwrap();
    assert_eq!(election["metadata"]["namespace"], "ops");
    assert_eq!(
        grants([election]),
        [
            (
                "coordination.k8s.io".to_owned(),
                "leases".to_owned(),
                "create".to_owned(),
                vec![]
            ),
            (
                "coordination.k8s.io".to_owned(),
                "leases".to_owned(),
                "get".to_owned(),
                vec!["frys-rollback".to_owned()]
            ),
            (
                "coordination.k8s.io".to_owned(),
                "leases".to_owned(),
                "update".to_owned(),
                vec!["frys-rollback".to_owned()]
            ),
        ]
    );
    assert_eq!(
        find(&objects, "RoleBinding")[0]["metadata"]["namespace"],
        "ops"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["args"], json!(["run"]));
    let sc = &container["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert!(container["resources"]["requests"].is_object());
    let env_names: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for name in [
        "HEALTH_CHECK_INTERVAL",
        "THRESHOLD_RESPONSE_TIME",
        "THRESHOLD_ERROR_RATE",
        "THRESHOLD_MEMORY_USAGE",
        "THRESHOLD_CPU_USAGE",
        "FRYS_WORKLOAD_LABEL",
        "FRYS_MAX_CONCURRENT_REMEDIATIONS",
        "FRYS_FREEZE",
        "FRYS_LOG_FORMAT",
        "FRYS_LEADER_ELECTION",
        "FRYS_LEADER_ELECTION_LEASE_NAME",
        "POD_NAME",
        "POD_NAMESPACE",
    ] {
        assert!(env_names.contains(&name), "no {name} in {env_names:?}");
    }
    assert!(!env_names.contains(&"METRICS_URL"), "unset URL is not set");
    let pod_name = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "POD_NAME")
        .unwrap();
    assert_eq!(
        pod_name["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    let pod_namespace = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "POD_NAMESPACE")
        .unwrap();
    assert_eq!(
        pod_namespace["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );

    // Every value the chart passes parses as `frys-rollback run` would parse it.
    parses_as_run(container);

    // deploy/frys-rollback.yaml is the chart rendered with its defaults (plus the Namespace).
    let (ok, rendered, err) = helm(&["template", "frys-rollback", &chart, "-n", "frys-system"]);
    assert!(ok, "{err}");
    let plain = std::fs::read_to_string(repo_root().join("deploy/frys-rollback.yaml")).unwrap();
    let plain: Vec<Value> = parse_yaml(&plain)
        .into_iter()
        .filter(|o| o["kind"] != "Namespace")
        .collect();
    assert!(
        plain == parse_yaml(&rendered),
        "deploy/frys-rollback.yaml differs from the chart: regenerate it (see its header)"
    );

    // One namespace: a Role there, --namespace, and only that Namespace readable cluster-wide.
    let objects = render(&["watchNamespace=shop", "crds.install=false"]);
    assert_eq!(
        kinds(&objects),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]
    );
    let named = |kind: &str, name: &str| -> Value {
        find(&objects, kind)
            .into_iter()
            .find(|o| o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
            .clone()
    };
    assert_eq!(
        named("Role", "frys-rollback")["metadata"]["namespace"],
        "shop"
    );
    assert_eq!(
        named("RoleBinding", "frys-rollback")["subjects"][0]["namespace"],
        "ops"
    );
    // The Lease stays in the release namespace, whichever namespace is watched.
    assert_eq!(
        named("Role", "frys-rollback-leader-election")["metadata"]["namespace"],
        "ops"
    );
    // Only that Namespace: read (freeze annotation) and watched by name (profile label).
    assert_eq!(
        grants(find(&objects, "ClusterRole")),
        ["get", "list", "watch"].map(|verb| (
            "".to_owned(),
            "namespaces".to_owned(),
            verb.to_owned(),
            vec!["shop".to_owned()]
        ))
    );
    let args =
        &find(&objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(args, &json!(["run", "--namespace", "shop"]));

    // The optional objects.
    let objects = render(&[
        "serviceMonitor.enabled=true",
        "operator.prometheusUrl=http://prometheus.monitoring:9090",
        "operator.allowedPrometheusUrls={https://thanos.example/a,https://thanos.example/b}",
    ]);
    assert_eq!(find(&objects, "ServiceMonitor").len(), 1);
    assert_eq!(find(&objects, "PodDisruptionBudget").len(), 1);
    let env = &find(&objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"];
    let allowed = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "FRYS_ALLOW_PROMETHEUS_URLS")
        .expect("allowedPrometheusUrls sets FRYS_ALLOW_PROMETHEUS_URLS");
    assert_eq!(
        allowed["value"],
        "https://thanos.example/a,https://thanos.example/b"
    );

    // A single replica without leader election (local or minimal installs): never two
    // operators at once, so no rolling update, and no Lease permissions (the undo key's Role
    // stays).
    let objects = render(&[
        "replicaCount=1",
        "leaderElection.enabled=false",
        "podDisruptionBudget.enabled=false",
    ]);
    let deployment = find(&objects, "Deployment")[0];
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    let roles: Vec<_> = find(&objects, "Role")
        .into_iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["frys-rollback-undo-key"]);
    assert!(find(&objects, "PodDisruptionBudget").is_empty());
    let vars = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    assert!(
        vars.iter()
            .any(|e| e["name"] == "FRYS_LEADER_ELECTION" && e["value"] == "false")
    );

    // The Alertmanager receiver: its port, a Service, the token Secret readable by name only,
    // and the TLS Secret mounted where the flags point.
    let objects = render(&[
        "alertReceiver.enabled=true",
        "alertReceiver.tokenSecret=am-token",
        "alertReceiver.tlsSecret=am-tls",
    ]);
    let service = find(&objects, "Service")
        .into_iter()
        .find(|o| o["metadata"]["name"] == "frys-rollback-alerts")
        .expect("a Service for the receiver");
    assert_eq!(service["spec"]["ports"][0]["port"], 9443);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http-alerts");
    let role = find(&objects, "Role")
        .into_iter()
        .find(|o| o["metadata"]["name"] == "frys-rollback-alert-receiver")
        .expect("a Role for the token Secret");
    assert_eq!(role["metadata"]["namespace"], "ops");
    assert_eq!(
        grants([role]),
        [(
            "".to_owned(),
            "secrets".to_owned(),
            "get".to_owned(),
            vec!["am-token".to_owned()]
        )]
    );
    let container = &find(&objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0];
    let value = |name: &str| {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))["value"]
            .clone()
    };
    assert_eq!(value("FRYS_ALERT_RECEIVER_ADDR"), "0.0.0.0:9443");
    assert_eq!(
        value("FRYS_ALERT_RECEIVER_TOKEN_SECRET"),
        "ops/am-token:token"
    );
    let cert = value("FRYS_ALERT_RECEIVER_TLS_CERT");
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "alert-receiver-tls")
        .expect("the TLS Secret is mounted");
    assert!(
        cert.as_str()
            .unwrap()
            .starts_with(mount["mountPath"].as_str().unwrap())
    );
    assert_eq!(mount["readOnly"], true);
    assert!(
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "http-alerts" && p["containerPort"] == 9443)
    );
    parses_as_run(container);
    // Off by default: no Service, no Role, no listener.
    let defaults = render(&[]);
    assert!(
        !defaults
            .iter()
            .any(|o| o["metadata"]["name"] == "frys-rollback-alerts"
                || o["metadata"]["name"] == "frys-rollback-alert-receiver")
    );

    // The schema refuses what the operator would not accept, and unknown values.
    for bad in [
        "operator.logFormat=xml",
        "operator.thresholds.errorRate=2",
        "operator.interval=soon",
        "replicaCount=2,leaderElection.enabled=false",
        "leaderElection.leaseDuration=soon",
        "operator.allowedPrometheusUrls={ftp://x}",
        "watchNamespace=Not_A_Name",
        "noSuchValue=1",
        // The receiver refuses every request without a token Secret.
        "alertReceiver.enabled=true",
        "alertReceiver.port=0",
        "alertReceiver.alertTtl=forever",
    ] {
        let (ok, _, err) = helm(&["template", "x", &chart, "--set", bad]);
        assert!(!ok, "the schema accepted {bad}");
        assert!(err.contains("schema"), "{bad}: {err}");
    }
}

#[tokio::test]
async fn chart_installs_every_object() {
    let client = env().client().await;
    let ns = support::namespace(&client, "chart-install").await;
    let chart = chart_path();
    // CRDs are cluster-scoped and shared with the other tests (which apply them themselves):
    // installing them here would take them over; chart_lints_and_renders checks them.
    let (ok, _, err) = helm(&[
        "install",
        "frys-rollback",
        &chart,
        "-n",
        &ns,
        "--set",
        "crds.install=false",
        "--set",
        "podDisruptionBudget.enabled=true",
        "--wait=false",
    ]);
    assert!(ok, "helm install: {err}");
    let (ok, _, err) = helm(&[
        "install",
        "frys-ns",
        &chart,
        "-n",
        &ns,
        "--set",
        "crds.install=false",
        "--set",
        &format!("watchNamespace={ns}"),
        "--set",
        "alertReceiver.enabled=true",
        "--set",
        "alertReceiver.tokenSecret=am-token",
        "--wait=false",
    ]);
    assert!(ok, "helm install (one namespace, alert receiver): {err}");

    for object in [
        "serviceaccount/frys-rollback",
        "deployment/frys-rollback",
        "service/frys-rollback-metrics",
        "poddisruptionbudget/frys-rollback",
        "role/frys-rollback-leader-election",
        "rolebinding/frys-rollback-leader-election",
        "role/frys-rollback-undo-key",
        "rolebinding/frys-rollback-undo-key",
        "serviceaccount/frys-ns-frys-rollback",
        "deployment/frys-ns-frys-rollback",
        "role/frys-ns-frys-rollback",
        "rolebinding/frys-ns-frys-rollback",
        "service/frys-ns-frys-rollback-alerts",
        "role/frys-ns-frys-rollback-alert-receiver",
        "rolebinding/frys-ns-frys-rollback-alert-receiver",
    ] {
        let (ok, _, err) = kubectl(&["get", "-n", &ns, object]);
        assert!(ok, "{object} missing after helm install: {err}");
    }
    let cluster_objects = [
        format!("clusterrole/frys-rollback-{ns}"),
        format!("clusterrolebinding/frys-rollback-{ns}"),
        format!("clusterrole/frys-ns-frys-rollback-{ns}-namespace"),
        format!("clusterrolebinding/frys-ns-frys-rollback-{ns}-namespace"),
    ];
    for object in &cluster_objects {
        let (ok, _, err) = kubectl(&["get", object]);
        assert!(ok, "{object} missing after helm install: {err}");
    }

    // Upgrading with other values keeps every object.
    let (ok, _, err) = helm(&[
        "upgrade",
        "frys-rollback",
        &chart,
        "-n",
        &ns,
        "--reuse-values",
        "--set",
        "operator.freeze=true",
        "--wait=false",
    ]);
    assert!(ok, "helm upgrade: {err}");
    let (ok, out, _) = kubectl(&[
        "get",
        "-n",
        &ns,
        "deployment/frys-rollback",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"FRYS_FREEZE\")].value}",
    ]);
    assert!(ok);
    assert_eq!(out, "true");

    // The example policies are valid for the API server (strict field validation).
    support::install_crds(&client).await;
    let examples = repo_root().join("deploy/examples");
    let mut files: Vec<_> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 6, "one example per strategy: {files:?}");
    for file in files {
        let file = file.to_string_lossy().into_owned();
        let (ok, _, err) = kubectl(&[
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-n",
            &ns,
            "-f",
            &file,
        ]);
        assert!(ok && err.is_empty(), "{file}: {err}");
    }

    for release in ["frys-rollback", "frys-ns"] {
        let (ok, _, err) = helm(&["uninstall", release, "-n", &ns]);
        assert!(ok, "helm uninstall {release}: {err}");
    }
    for object in &cluster_objects {
        let (found, _, _) = kubectl(&["get", object]);
        assert!(!found, "{object} left after helm uninstall");
    }
}

/// Drives an operator through its main paths: a policy with Prometheus credentials from a
/// Secret, evaluations, and (with the simulator) a bad release rolled back and verified, then
/// manual RollbackEvents (adopted by their policy) for the strategies that write other objects:
/// EnvironmentSwitch (Service, standby scale), TrafficShifting on a VirtualService and
/// EmergencyShutdown with an HPA and an HTTPRoute cut, undone by annotation; a historyLimit of 1
/// prunes the older events.
async fn drive_operator(ns: &str) {
    let client = env().client().await;
    support::install_route_crds(&client).await;
    let operator = Operator::start(ns, &[]).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    for (name, color, replicas) in [("web", "green", 2), ("web-blue", "blue", 0)] {
        let mut d = deployment(name, "demo:v1");
        let spec = d.spec.as_mut().unwrap();
        spec.replicas = Some(replicas);
        spec.template
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert("color".into(), color.into());
        deployments
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
    }
    let objects = format!(
        r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: web}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}
  minReplicas: 2
  maxReplicas: 5
  metrics: [{{type: Resource, resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 80}}}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web}}
spec:
  parentRefs: [{{name: gateway}}]
  rules: [{{backendRefs: [{{name: web, port: 80, weight: 100}}]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web}}
spec:
  hosts: [web.{ns}.svc.cluster.local]
  http:
    - route:
        - {{destination: {{host: web}}, weight: 100}}
        - {{destination: {{host: web-blue}}, weight: 0}}
"#
    );
    let (ok, _, err) = support::kubectl_apply(ns, &objects);
    assert!(ok, "{err}");
    support::create_service(&client, ns, "web", json!({"app": "web", "color": "green"})).await;
    support::create_secret(&client, ns, "prometheus", json!({"token": "not-checked"})).await;
    let prometheus = env()
        .prometheus_url
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:9".into());
    let policy = format!(
        r#"
apiVersion: rollback.frys.io/v1alpha1
kind: RollbackPolicy
metadata: {{name: web}}
spec:
  targetRef: {{name: web}}
  prometheus:
    url: {prometheus}
    bearerTokenSecretRef: {{name: prometheus, key: token}}
  interval: 1s
  rateWindow: 5s
  consecutiveFailures: 3
  historyLimit: 1
  metrics:
    - {{name: errors, preset: errorRate, warning: 0.02, critical: 0.05}}
  strategies:
    - type: TrafficShifting
      trafficShifting: {{virtualService: web, from: web, to: web-blue}}
    - type: EnvironmentSwitch
      environmentSwitch: {{service: web, selectorKey: color, activeValue: green, standbyValue: blue, standbyRef: web-blue, scaleStandby: true, readyTimeout: 1m}}
    - type: VersionRollback
    - type: EmergencyShutdown
      minSeverity: Unhealthy
      emergencyShutdown: {{cutTraffic: {{httpRoute: web}}}}
  verification: {{stabilizationDelay: 1s, timeout: 15s}}
"#
    );
    let (ok, _, err) = support::kubectl_apply(ns, &policy);
    assert!(ok, "{err}");
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), ns);
    eventually("the policy evaluated", TIMEOUT, || async {
        let s = policies.get("web").await.ok()?.status?;
        s.conditions
            .iter()
            .any(|c| c.type_ == "Healthy")
            .then_some(())
    })
    .await;

    if env().simulated() {
        support::set_image(&deployments, "web", "demo:v2-faulty").await;
        let events: Api<RollbackEvent> = Api::namespaced(client.clone(), ns);
        eventually("the automatic rollback event finished", TIMEOUT, || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            let e = list.items.into_iter().next()?;
            let phase = e.status.as_ref()?.phase;
            matches!(phase, EventPhase::Succeeded | EventPhase::Failed).then_some(())
        })
        .await;
        // Manual remediations, one at a time (the same policy runs one event at a time).
        for strategy in ["TrafficShifting", "EnvironmentSwitch", "EmergencyShutdown"] {
            let name = strategy.to_lowercase();
            let (ok, _, err) = support::kubectl_apply(
                ns,
                &format!(
                    "apiVersion: rollback.frys.io/v1alpha1\nkind: RollbackEvent\nmetadata: {{name: {name}}}\nspec:\n  policyRef: {{name: web}}\n  type: Manual\n  strategy: {strategy}\n  reason: chart RBAC test\n"
                ),
            );
            assert!(ok, "{err}");
            let status = eventually(&format!("manual {strategy} finished"), TIMEOUT, || async {
                let s = events.get(&name).await.ok()?.status?;
                matches!(s.phase, EventPhase::Succeeded | EventPhase::Failed).then_some(s)
            })
            .await;
            eprintln!(
                "manual {strategy}: {:?} {}",
                status.phase,
                status.message.unwrap_or_default()
            );
        }
        // Undo of the emergency shutdown reads back and restores what it changed.
        support::annotate(ns, "rbe/emergencyshutdown", &["rollback.frys.io/undo=true"]);
        let message = eventually("the undo consumed", TIMEOUT, || async {
            let e = events.get("emergencyshutdown").await.ok()?;
            (!e.annotations().contains_key("rollback.frys.io/undo"))
                .then(|| e.status.and_then(|s| s.message).unwrap_or_default())
        })
        .await;
        eprintln!("undo: {message}");
    } else {
        eprintln!("no simulator: the RBAC check covers evaluations only");
    }
    // Watches are logged when they end.
    let status = operator.stop().await;
    assert!(status.success(), "operator exit: {status}");
}

#[tokio::test]
async fn chart_rbac_is_what_the_operator_uses() {
    if env().request_log.is_none() {
        support::skip(
            "chart_rbac_is_what_the_operator_uses",
            "needs the local control plane's request log (FRYS_REQUEST_LOG)",
        );
        return;
    }
    let client = env().client().await;
    support::install_crds(&client).await;
    let ns = support::namespace(&client, "chart-rbac").await;
    drive_operator(&ns).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Every request any operator made in this environment (this test's and the other tests'),
    // against the chart's rules.
    let requests: Vec<Value> = env()
        .requests()
        .into_iter()
        .filter(|r| {
            r["userAgent"]
                .as_str()
                .is_some_and(|u| u.starts_with("frys-rollback/"))
        })
        .collect();
    assert!(
        requests.iter().any(|r| r["namespace"] == ns.as_str()),
        "no request of this test's operator in the log"
    );
    let cluster_wide = render(&[]);
    let mut cluster_grants = grants(find(&cluster_wide, "ClusterRole"));
    // Plus the leader-election Role of the release namespace: the tests' operators keep their
    // Lease in their own namespace (POD_NAMESPACE), which stands for it.
    let election = find(&cluster_wide, "Role");
    assert_eq!(
        election.len(),
        2,
        "two Roles: the Lease's and the undo key's"
    );
    cluster_grants.extend(grants(election));
    // Plus the opt-in GitOps grants (values `gitops.*.enabled`): the GitOps tests' operators
    // read and hold Argo CD and Flux owners, which the default install may not (it reports
    // instead, tested there). Whether this test reads the log before or after them is chance.
    let gitops = render(&["gitops.argocd.enabled=true", "gitops.flux.enabled=true"]);
    let opt_in: Vec<&Value> = find(&gitops, "Role")
        .into_iter()
        .chain(find(&gitops, "ClusterRole"))
        .filter(|r| {
            r["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("-argocd") || n.ends_with("-flux"))
        })
        .collect();
    assert_eq!(opt_in.len(), 2, "an Argo CD Role and a Flux ClusterRole");
    let mut allowed = cluster_grants.clone();
    allowed.extend(grants(opt_in));
    let mut denied = BTreeSet::new();
    for r in &requests {
        let key = request_key(r);
        if !allows(&allowed, &key) {
            denied.insert((key.0, key.1, key.2));
        }
    }
    assert!(
        denied.is_empty(),
        "the chart's ClusterRole (and opt-in GitOps Roles) deny requests the operator makes (apiGroup, resource, verb): {denied:#?}"
    );

    // This test's operator ran with --namespace, as the chart's one-namespace install does.
    let one = render(&[&format!("watchNamespace={ns}"), "crds.install=false"]);
    let mut one_grants = grants(find(&one, "Role"));
    one_grants.extend(grants(find(&one, "ClusterRole")));
    for r in requests.iter().filter(|r| {
        r["namespace"] == ns.as_str() || (r["resource"] == "namespaces" && r["name"] == ns.as_str())
    }) {
        let key = request_key(r);
        assert!(
            allows(&one_grants, &key),
            "the one-namespace install denies {key:?}"
        );
    }

    // Every rule is used, or justified by a path this test does not drive.
    let used: BTreeSet<(String, String, String)> = requests
        .iter()
        .map(|r| {
            let k = request_key(r);
            (k.0, k.1, k.2)
        })
        .collect();
    let mut unjustified = vec![];
    for (g, r, v, _) in &cluster_grants {
        if used.contains(&(g.clone(), r.clone(), v.clone())) {
            continue;
        }
        match JUSTIFIED_UNUSED
            .iter()
            .find(|(jg, jr, jv, _)| (jg, jr, jv) == (&g.as_str(), &r.as_str(), &v.as_str()))
        {
            Some((.., why)) => eprintln!("unused in this run: {g}/{r} {v} ({why})"),
            None => unjustified.push(format!("{g}/{r} {v}")),
        }
    }
    assert!(
        unjustified.is_empty(),
        "the chart grants permissions the operator never used and no code path justifies: {unjustified:#?}"
    );
    // The justifications name rules that exist.
    for (g, r, v, _) in JUSTIFIED_UNUSED {
        assert!(
            cluster_grants
                .iter()
                .any(|(cg, cr, cv, _)| (cg.as_str(), cr.as_str(), cv.as_str()) == (*g, *r, *v)),
            "JUSTIFIED_UNUSED names {g}/{r} {v}, which the chart does not grant"
        );
    }
}

/// The optional Grafana dashboard and PrometheusRule: the dashboard is valid JSON with the
/// structure Grafana needs, every operator metric they name is one the operator exports, and
/// `promtool check rules` accepts the rules.
#[test]
fn chart_dashboard_and_alert_rules_validate() {
    let objects = render(&[
        "grafanaDashboard.enabled=true",
        "prometheusRule.enabled=true",
    ]);
    let configmap = find(&objects, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "frys-rollback-dashboard")
        .expect("the dashboard ConfigMap");
    assert_eq!(configmap["metadata"]["labels"]["grafana_dashboard"], "1");
    let text = configmap["data"]["frys-rollback.json"].as_str().unwrap();
    let dashboard: Value = serde_json::from_str(text).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "frys-rollback");
    let panels = dashboard["panels"].as_array().unwrap();
    let titles: Vec<&str> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for wanted in [
        "Policies by health",
        "Remediations and their outcome",
        "Evaluation lag",
        "Prometheus query time",
    ] {
        assert!(titles.contains(&wanted), "{wanted} missing: {titles:?}");
    }
    let mut ids = BTreeSet::new();
    let mut exprs: Vec<String> = vec![];
    for p in panels {
        assert!(ids.insert(p["id"].as_i64().unwrap()), "duplicate panel id");
        assert!(p["gridPos"]["w"].as_i64().unwrap() > 0, "{p}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{p}");
        exprs.extend(
            targets
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_owned()),
        );
    }

    let rule = find(&objects, "PrometheusRule");
    assert_eq!(rule.len(), 1);
    let groups = &rule[0]["spec"]["groups"];
    let alerts: Vec<&str> = groups[0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    assert_eq!(
        alerts,
        [
            "FrysRollbackOperatorDown",
            "FrysRollbackEvaluationLagging",
            "FrysRollbackRemediationFailed",
            "FrysRollbackIncidentFailed"
        ]
    );
    exprs.extend(
        groups[0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["expr"].as_str().unwrap().to_owned()),
    );

    // Every frys_rollback_* series they read is exported (names as rendered on /metrics, once
    // each family has a sample).
    let metrics = frys_rollback::telemetry::Metrics::default();
    drop(metrics.reconcile_started("policy"));
    metrics.reconcile_failed("policy", "Kube");
    metrics.prometheus_query("success", Duration::ZERO);
    metrics
        .alerts
        .get_or_create(&frys_rollback::telemetry::metrics::AlertLabels {
            level: "Warning",
            reason: "StepFailed".into(),
        })
        .inc();
    let evaluated: RollbackPolicy = serde_json::from_value(json!({
        "apiVersion": "rollback.frys.io/v1alpha1", "kind": "RollbackPolicy",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"targetRef": {"name": "web"}, "metrics": [{"name": "e", "preset": "errorRate"}],
                 "strategies": [{"type": "VersionRollback"}]},
        "status": {"health": {"status": "Healthy", "score": 100.0, "evaluatedAt": "2026-01-01T00:00:00Z"}},
    }))
    .unwrap();
    let evaluated = std::sync::Arc::new(evaluated);
    metrics.record_policies(std::slice::from_ref(&evaluated));
    metrics.evaluated(&evaluated, "2026-01-01T00:00:00Z".parse().unwrap());
    let exported = metrics.render();
    for expr in &exprs {
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("frys_rollback_"))
        {
            let family = ["_bucket", "_total"]
                .iter()
                .fold(name, |n, suffix| n.strip_suffix(suffix).unwrap_or(n));
            assert!(
                exported.contains(&format!("# TYPE {family} ")),
                "{name} (in {expr}) is not exported:\n{exported}"
            );
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yaml");
    std::fs::write(&file, serde_json::to_string(&rule[0]["spec"]).unwrap()).unwrap();
    let out = tool(
        "promtool",
        &["check", "rules", file.to_str().unwrap()],
        None,
    );
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS: 4 rules found"));
}

/// Helm 4's `--wait=watcher` (kstatus) reads a RollbackPolicy's conditions: an upgrade waits
/// while the policy is Reconciling (its target missing) and returns once it is Ready. (Right
/// after creation, before the operator's first status write, kstatus reads any custom resource
/// without status as Current; so the release is installed first and the wait tested on upgrade.)
#[tokio::test]
async fn helm_wait_watcher_waits_for_policy_ready() {
    let client = env().client().await;
    support::install_crds(&client).await;
    let ns = support::namespace(&client, "chart-watch").await;
    let _operator = Operator::start(&ns, &[]).await;
    let chart = tempfile::tempdir().unwrap();
    std::fs::create_dir(chart.path().join("templates")).unwrap();
    std::fs::write(
        chart.path().join("Chart.yaml"),
        "apiVersion: v2\nname: policy\nversion: 0.1.0\n",
    )
    .unwrap();
    std::fs::write(
        chart.path().join("templates/policy.yaml"),
        "apiVersion: rollback.frys.io/v1alpha1\nkind: RollbackPolicy\nmetadata: {name: web}\n\
         spec:\n  targetRef: {name: web}\n  interval: {{ .Values.interval }}\n\
         \x20 metrics: [{name: errors, preset: errorRate}]\n  strategies: [{type: VersionRollback}]\n",
    )
    .unwrap();
    let chart = chart.path().to_string_lossy().into_owned();
    let helm_in = {
        let (chart, ns) = (chart.clone(), ns.clone());
        move |verb: &str, interval: &str, wait: &str, timeout: &str| {
            helm(&[
                verb,
                "web",
                &chart,
                "-n",
                &ns,
                "--set",
                &format!("interval={interval}"),
                &format!("--wait={wait}"),
                "--timeout",
                timeout,
            ])
        }
    };
    let (ok, _, err) = helm_in("install", "2s", "false", "30s");
    assert!(ok, "helm install: {err}");
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &ns);
    let condition = |p: RollbackPolicy, type_: &str| {
        p.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.status)
    };
    eventually("Reconciling=True (no target)", TIMEOUT, || async {
        let p = policies.get("web").await.ok()?;
        (condition(p, "Reconciling")? == "True").then_some(())
    })
    .await;

    // Reconciling: the watcher does not accept the release.
    let (ok, _, err) = helm_in("upgrade", "2s", "watcher", "5s");
    assert!(!ok, "helm --wait=watcher accepted a Reconciling policy");
    assert!(
        err.contains("timed out") || err.contains("context deadline"),
        "{err}"
    );

    // It waits, and returns once the target appears and the policy is Ready.
    let upgrade = helm_in.clone();
    let waiting = std::thread::spawn(move || upgrade("upgrade", "3s", "watcher", "90s"));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !waiting.is_finished(),
        "helm returned while the target is missing"
    );
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment("web", "demo:v1"))
        .await
        .unwrap();
    let (ok, _, err) = tokio::task::spawn_blocking(move || waiting.join().unwrap())
        .await
        .unwrap();
    assert!(ok, "helm upgrade --wait=watcher: {err}");
    let p = policies.get("web").await.unwrap();
    assert_eq!(p.metadata.generation, Some(2));
    assert_eq!(condition(p, "Ready").as_deref(), Some("True"));
}
