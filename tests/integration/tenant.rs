//! Tenant isolation (issue: trust): what a policy author writes cannot make the operator reach
//! or reveal what they could not themselves. A redirecting server as `spec.prometheus.url`: the
//! redirect is not followed (no request, no credential reaches its target) and no body text
//! appears in the policy, its Events or the operator's log; a URL the operator does not allow
//! is not queried at all; a Secret without the opt-in label is not used.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use frys_rollback::api::RollbackPolicy;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Secret};
use kube::{
    Api,
    api::{PostParams, ResourceExt},
};
use serde_json::json;

use crate::support::{self, Operator, deployment, env, eventually, kubectl, kubectl_apply};

const TIMEOUT: Duration = Duration::from_secs(60);
const TOKEN: &str = "tok-3f9a-never-shown";
const TARGET_BODY: &str = "TARGET-BODY-instance-credentials";
const REDIRECT_BODY: &str = "REDIRECT-BODY-moved-here";

/// A local HTTP server that answers every request with `answer` and records the
/// `Authorization` header of each request (empty when none).
struct Recorder {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    async fn start(answer: fn(String) -> Response, target: String) -> Recorder {
        #[derive(Clone)]
        struct S {
            seen: Arc<Mutex<Vec<String>>>,
            answer: fn(String) -> Response,
            target: String,
        }
        async fn handle(State(s): State<S>, headers: HeaderMap) -> Response {
            let auth = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            s.seen.lock().unwrap().push(auth.to_owned());
            (s.answer)(s.target.clone())
        }
        let seen = Arc::new(Mutex::new(vec![]));
        let app = Router::new().fallback(handle).with_state(S {
            seen: seen.clone(),
            answer,
            target,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Recorder { url, seen }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// A policy of its own Deployment (a target has one policy).
fn policy(name: &str, url: &str, secret: &str) -> String {
    format!(
        r#"
apiVersion: rollback.frys.io/v1alpha1
kind: RollbackPolicy
metadata: {{name: {name}}}
spec:
  targetRef: {{name: {name}}}
  prometheus: {{url: '{url}', bearerTokenSecretRef: {{name: {secret}, key: token}}}}
  interval: 1s
  metrics:
    - {{name: errors, preset: errorRate, warning: 0.02, critical: 0.05}}
  strategies:
    - type: VersionRollback
"#
    )
}

async fn secret(client: &kube::Client, ns: &str, name: &str, opted_in: bool) {
    let labels = if opted_in {
        json!({"rollback.frys.io/policy-access": "true"})
    } else {
        json!({})
    };
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "stringData": {"token": TOKEN}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// (status, reason, message) of the policy's MetricsAvailable condition, once it is False.
async fn metrics_unavailable(policies: &Api<RollbackPolicy>, name: &str) -> (String, String) {
    eventually(
        &format!("{name}: MetricsAvailable=False"),
        TIMEOUT,
        || async {
            let p = policies.get(name).await.ok()?;
            let c = p
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "MetricsAvailable" && c.status == "False")?;
            Some((c.reason, c.message))
        },
    )
    .await
}

#[tokio::test]
async fn a_redirecting_prometheus_url_reveals_nothing() {
    let client = env().client().await;
    support::install_crds(&client).await;
    let ns = support::namespace(&client, "tenant").await;

    // The target stands for an instance-metadata service; the redirector is the author's server.
    let target = Recorder::start(
        |_| (StatusCode::OK, TARGET_BODY).into_response(),
        String::new(),
    )
    .await;
    let redirector = Recorder::start(
        |to| (StatusCode::FOUND, [(header::LOCATION, to)], REDIRECT_BODY).into_response(),
        format!(
            "{}/latest/meta-data/iam/security-credentials/role",
            target.url
        ),
    )
    .await;
    let operator = Operator::start(&ns, &["--allow-prometheus-url", &redirector.url]).await;
    for name in ["redirect", "elsewhere", "unlabelled"] {
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &deployment(name, "demo:v1"))
            .await
            .unwrap();
    }
    secret(&client, &ns, "prom-token", true).await;
    secret(&client, &ns, "plain-token", false).await;
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &ns);

    // Allowed, redirecting: refused at the 3xx, naming only the status code.
    let (ok, _, err) = kubectl_apply(&ns, &policy("redirect", &redirector.url, "prom-token"));
    assert!(ok, "{err}");
    let (reason, message) = metrics_unavailable(&policies, "redirect").await;
    assert_eq!(reason, "PrometheusRedirected", "{message}");
    assert!(message.contains("302"), "{message}");
    let asked = redirector.requests();
    assert!(
        !asked.is_empty() && asked.iter().all(|a| *a == format!("Bearer {TOKEN}")),
        "the allowed URL gets the policy's credential: {asked:?}"
    );

    // Not allowed: never queried, credentials never read.
    let (ok, _, err) = kubectl_apply(&ns, &policy("elsewhere", &target.url, "prom-token"));
    assert!(ok, "{err}");
    let (reason, message) = metrics_unavailable(&policies, "elsewhere").await;
    assert_eq!(reason, "PrometheusURLNotAllowed", "{message}");

    // A Secret without the opt-in label is not used.
    let (ok, _, err) = kubectl_apply(&ns, &policy("unlabelled", &redirector.url, "plain-token"));
    assert!(ok, "{err}");
    let (reason, message) = metrics_unavailable(&policies, "unlabelled").await;
    assert_eq!(reason, "SecretNotAllowed", "{message}");
    assert!(message.contains("plain-token"), "{message}");

    // A few more evaluations, then: nothing reached the redirect target, and no body text or
    // credential is anywhere a namespace user (or the log reader) can see.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        target.requests(),
        Vec::<String>::new(),
        "a request reached the redirect target or the URL that is not allowed"
    );
    assert!(
        redirector.requests().len() >= asked.len(),
        "the redirector stopped being asked"
    );
    let (ok, policies_yaml, err) = kubectl(&["get", "rbp", "-n", &ns, "-o", "yaml"]);
    assert!(ok, "{err}");
    let (ok, events_yaml, err) = kubectl(&["get", "events", "-n", &ns, "-o", "yaml"]);
    assert!(ok, "{err}");
    let log_file = operator.log.clone();
    let status = operator.stop().await;
    assert!(status.success(), "operator exit: {status}");
    let log = std::fs::read_to_string(&log_file).unwrap();
    for (place, text) in [
        ("the policies", &policies_yaml),
        ("the Events", &events_yaml),
        ("the operator's log", &log),
    ] {
        for secret_text in [TARGET_BODY, REDIRECT_BODY, TOKEN] {
            assert!(
                !text.contains(secret_text),
                "{place} show {secret_text:?}:\n{text}"
            );
        }
    }
    let redirect = policies.get("redirect").await.unwrap();
    let shown = redirect.status.as_ref().unwrap().conditions.iter();
    assert!(
        shown.clone().all(|c| !c.message.contains("meta-data")),
        "{}: the redirect's Location is shown: {:?}",
        redirect.name_any(),
        shown.map(|c| &c.message).collect::<Vec<_>>()
    );
}
