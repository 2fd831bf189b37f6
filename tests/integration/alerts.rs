//! Alertmanager as an input (issue 13, item 4), and the delivery metrics (item 6).
//!
//! Real components: the simulator's series scraped by a private Prometheus that evaluates a
//! real alert rule and sends to a private Alertmanager (Debian's prometheus-alertmanager,
//! `FRYS_ALERTMANAGER_BIN`), which posts to the operator's receiver with the bearer token from
//! a credentials file, as `http_config.authorization.credentials_file` does in production.
//! The only difference from production: all of them run as local processes on 127.0.0.1.

use std::time::Duration;

use frys_rollback::api::{EventPhase, RollbackEvent, RollbackPolicy, StrategyKind};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::json;

use crate::support::{
    self, Operator, condition, deployment, env, eventually, kubectl_apply,
    prometheus::PrivatePrometheus, tls::make_certificates,
};

const TIMEOUT: Duration = Duration::from_secs(120);
const TOKEN: &str = "s3cret-am-token";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private Alertmanager posting every group to `url` with the bearer token. Killed on drop.
struct Alertmanager {
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
    address: String,
}

impl Alertmanager {
    async fn start(url: &str) -> Alertmanager {
        let bin = env()
            .alertmanager_bin
            .clone()
            .expect("FRYS_ALERTMANAGER_BIN (scripts/testenv.sh up)");
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, TOKEN).unwrap();
        // Short waits for a test; production keeps Alertmanager's defaults (repeat_interval
        // must stay below the operator's --alert-ttl).
        let config = format!(
            "route:\n  receiver: frys\n  group_by: [alertname, namespace]\n  \
             group_wait: 1s\n  group_interval: 2s\n  repeat_interval: 1m\n\
             receivers:\n- name: frys\n  webhook_configs:\n  - url: '{url}'\n    \
             send_resolved: true\n    max_alerts: 32\n    \
             http_config: {{authorization: {{type: Bearer, credentials_file: '{}'}}}}\n",
            token.display()
        );
        std::fs::write(dir.path().join("am.yml"), config).unwrap();
        let port = free_port();
        let child = tokio::process::Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.path().join("am.yml").display()
            ))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // No gossip: a single private instance.
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("am.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("starting Alertmanager");
        let address = format!("127.0.0.1:{port}");
        let ready = format!("http://{address}/-/ready");
        eventually("Alertmanager ready", Duration::from_secs(30), || async {
            reqwest::get(&ready)
                .await
                .ok()?
                .status()
                .is_success()
                .then_some(())
        })
        .await;
        Alertmanager {
            _child: child,
            _dir: dir,
            address,
        }
    }
}

/// The operator with its receiver on, the token Secret in the test namespace.
async fn setup(prefix: &str) -> Option<(kube::Client, String, Operator, String)> {
    if !support::require_simulator(prefix) || env().alertmanager_bin.is_none() {
        support::skip(prefix, "needs the simulator and FRYS_ALERTMANAGER_BIN");
        return None;
    }
    let client = env().client().await;
    support::install_crds(&client).await;
    let ns = support::namespace(&client, prefix).await;
    support::create_secret(&client, &ns, "am-token", json!({"token": TOKEN})).await;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let secret = format!("{ns}/am-token");
    let operator = Operator::start(
        &ns,
        &[
            "--alert-receiver-addr",
            &addr,
            "--alert-receiver-token-secret",
            &secret,
        ],
    )
    .await;
    Some((client, ns, operator, format!("http://{addr}/api/v1/alerts")))
}

const POLICY: &str = r#"
apiVersion: rollback.frys.io/v1alpha1
kind: RollbackPolicy
metadata: {name: web}
spec:
  targetRef: {name: web}
  interval: 1s
  rateWindow: 5s
  consecutiveFailures: 2
  cooldown: 1m
  metrics:
    # The remediation comes from the alert; this signal's threshold is out of reach of the
    # faulty release (error rate 0.3), so it never breaches, and serves verification.
    - {name: errors, preset: errorRate, warning: 0.95, critical: 0.99}
    - {name: pager, alert: {name: HighErrorRate, class: Errors}}
  strategies:
    - type: VersionRollback
  verification: {stabilizationDelay: 2s, timeout: 1m}
"#;

#[tokio::test]
async fn a_real_alert_fires_a_remediation_that_records_it() {
    let Some((client, ns, operator, receiver)) = setup("al-fire").await else {
        return;
    };
    let am = Alertmanager::start(&receiver).await;
    let rules = format!(
        "groups:\n- name: frys-test\n  interval: 1s\n  rules:\n  - alert: HighErrorRate\n    \
         expr: 'sum by (namespace, app) (rate(http_requests_total{{namespace=\"{ns}\",code=~\"5..\"}}[5s])) \
         / sum by (namespace, app) (rate(http_requests_total{{namespace=\"{ns}\"}}[5s])) > 0.1'\n    \
         labels: {{severity: page}}\n    annotations: {{summary: errors above 10%}}\n"
    );
    let _prometheus = PrivatePrometheus::start_with_rules(&rules, &am.address).await;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &deployment("web", "demo:v1"))
        .await
        .unwrap();
    let (ok, _, err) = kubectl_apply(&ns, POLICY);
    assert!(ok, "{err}");
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &ns);
    eventually("healthy before the release", TIMEOUT, || async {
        let p = policies.get("web").await.ok()?;
        (condition(&p, "Healthy")?.0 == "True").then_some(())
    })
    .await;

    support::set_image(&deployments, "web", "demo:v2-faulty").await;

    // The rule fires, Alertmanager posts, the receiver records it under its own manager.
    let p = eventually("the alert recorded in status.alerts", TIMEOUT, || async {
        let p = policies.get("web").await.ok()?;
        (!p.status.as_ref()?.alerts.is_empty()).then_some(p)
    })
    .await;
    let alert = &p.status.as_ref().unwrap().alerts[0];
    assert_eq!(alert.name, "HighErrorRate");
    assert_eq!(alert.labels["app"], "web");
    assert!(
        p.metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|m| m.manager.as_deref() == Some("frys-rollback-alerts")),
        "status.alerts is owned by the receiver's field manager"
    );

    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    let event = eventually("the remediation Succeeded", TIMEOUT, || async {
        let e = events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .next()?;
        let phase = e.status.as_ref()?.phase;
        assert_ne!(phase, EventPhase::Failed, "event failed: {:?}", e.status);
        (phase == EventPhase::Succeeded).then_some(e)
    })
    .await;
    assert_eq!(event.spec.strategy, StrategyKind::VersionRollback);
    let issues = &event.spec.assessment.as_ref().unwrap().issues;
    assert!(
        issues.iter().any(|i| i.metric == "pager"),
        "the alert signal caused it: {issues:?}"
    );
    assert!(
        issues.iter().all(|i| i.metric != "errors"),
        "not the Prometheus signal: {issues:?}"
    );
    // The RollbackEvent records the alert that caused it.
    let recorded = &event.spec.alerts;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].name, "HighErrorRate");
    assert_eq!(recorded[0].labels["namespace"], ns);
    assert_eq!(recorded[0].labels["severity"], "page");
    assert!(
        recorded[0]
            .generator_url
            .as_deref()
            .is_some_and(|u| u.contains("/graph?")),
        "{:?}",
        recorded[0].generator_url
    );

    // Rolled back, the rule stops firing: the resolved notification ends the signal.
    eventually("the resolved alert removed", TIMEOUT, || async {
        let p = policies.get("web").await.ok()?;
        p.status.as_ref()?.alerts.is_empty().then_some(())
    })
    .await;

    // Delivery metrics on the operator's own /metrics.
    let text = eventually("delivery metrics", Duration::from_secs(30), || async {
        let text = operator.metrics().await;
        text.contains(&format!(
            "frys_rollback_change_failures_total{{policy_namespace=\"{ns}\"}} 1"
        ))
        .then_some(text)
    })
    .await;
    let changes = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                "frys_rollback_changes_total{{policy_namespace=\"{ns}\"}} "
            ))
        })
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("changes_total missing in\n{text}"));
    assert!(changes >= 1.0, "the faulty release is a change: {changes}");
    let restore_count = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                "frys_rollback_time_to_restore_seconds_count{{policy_namespace=\"{ns}\"}} "
            ))
        })
        .expect("time_to_restore_seconds");
    assert_eq!(restore_count, "1");
    let restore_sum: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                "frys_rollback_time_to_restore_seconds_sum{{policy_namespace=\"{ns}\"}} "
            ))
        })
        .and_then(|v| v.parse().ok())
        .expect("time_to_restore_seconds_sum");
    eprintln!("time to restore (release to verified rollback): {restore_sum:.1}s");
    assert!(
        restore_sum > 1.0 && restore_sum < TIMEOUT.as_secs_f64() * 3.0,
        "{restore_sum}"
    );
    assert!(
        text.contains("# HELP frys_rollback_change_failures Releases that needed a remediation")
    );
}

#[tokio::test]
async fn refused_requests_change_nothing() {
    let Some((client, ns, _operator, receiver)) = setup("al-refuse").await else {
        return;
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &deployment("web", "demo:v1"))
        .await
        .unwrap();
    let (ok, _, err) = kubectl_apply(&ns, POLICY);
    assert!(ok, "{err}");
    let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &ns);
    eventually("healthy", TIMEOUT, || async {
        let p = policies.get("web").await.ok()?;
        (condition(&p, "Healthy")?.0 == "True").then_some(())
    })
    .await;

    let firing = json!({
        "version": "4", "groupKey": "{}:{alertname=\"HighErrorRate\"}", "status": "firing",
        "receiver": "frys", "groupLabels": {}, "commonLabels": {}, "externalURL": "http://am",
        "alerts": [{"status": "firing",
                    "labels": {"alertname": "HighErrorRate", "namespace": ns, "app": "web"},
                    "annotations": {}, "startsAt": "2026-12-01T10:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom/graph",
                    "fingerprint": "00aa11bb22cc33dd"}]
    });
    let http = reqwest::Client::new();
    let post = |auth: Option<&'static str>, body: String| {
        let mut r = http
            .post(&receiver)
            .header("content-type", "application/json")
            .body(body);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let good = "Bearer s3cret-am-token";
    let cases = [
        (None, firing.to_string(), 401, "bearer token is required"),
        (
            Some("Bearer wrong"),
            firing.to_string(),
            403,
            "wrong bearer token",
        ),
        (
            Some("Basic czNjcmV0"),
            firing.to_string(),
            401,
            "bearer token is required",
        ),
        (
            Some(good),
            "{\"version\": \"4\", \"alerts\": [".into(),
            400,
            "malformed",
        ),
        (
            Some(good),
            json!({"version": "4"}).to_string(),
            400,
            "missing field",
        ),
        (
            Some(good),
            firing
                .to_string()
                .replace("\"version\":\"4\"", "\"version\":\"3\""),
            422,
            "unsupported webhook payload version \"3\"",
        ),
        (
            Some(good),
            firing.to_string().replace("00aa11bb22cc33dd", "../../x"),
            422,
            "fingerprint",
        ),
        (Some(good), "x".repeat(2 << 20), 413, ""),
    ];
    let before = policies.get("web").await.unwrap();
    for (auth, body, status, message) in cases {
        let (got, text) = post(auth, body).await;
        assert_eq!(got, status, "{auth:?}: {text}");
        assert!(text.contains(message), "{auth:?}: {text}");
    }
    // Nothing changed: no alerts, no receiver-owned fields, no events.
    let after = policies.get("web").await.unwrap();
    assert!(after.status.as_ref().unwrap().alerts.is_empty());
    assert!(
        !after
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|m| m.manager.as_deref() == Some("frys-rollback-alerts"))
    );
    assert_eq!(before.metadata.annotations, after.metadata.annotations);
    let events: Api<RollbackEvent> = Api::namespaced(client.clone(), &ns);
    assert!(
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // The same body with the token is taken: it was refused for the reasons above only.
    let (got, text) = post(Some(good), firing.to_string()).await;
    assert_eq!(got, 200, "{text}");
    assert!(text.contains("\"matched\":1"), "{text}");
    let p = policies.get("web").await.unwrap();
    assert_eq!(p.status.unwrap().alerts[0].fingerprint, "00aa11bb22cc33dd");
    // A re-send is deduplicated; the resolved notification ends it.
    let (got, _) = post(Some(good), firing.to_string()).await;
    assert_eq!(got, 200);
    let resolved = firing
        .to_string()
        .replace("\"status\":\"firing\"", "\"status\":\"resolved\"");
    let (got, _) = post(Some(good), resolved).await;
    assert_eq!(got, 200);
    assert!(
        policies
            .get("web")
            .await
            .unwrap()
            .status
            .unwrap()
            .alerts
            .is_empty()
    );
}

/// HTTPS on the receiver, as the chart's `alertReceiver.tlsSecret` sets it up: the certificate
/// from PEM files, verified by a client that trusts its CA and refused by one that does not; the
/// token is still required over TLS; plain HTTP to the port gets no HTTP answer.
#[tokio::test]
async fn the_receiver_serves_https_and_still_wants_the_token() {
    let certs = tempfile::tempdir().unwrap();
    if !make_certificates(certs.path()) {
        support::skip("al-tls", "needs openssl to make test certificates");
        return;
    }
    let client = env().client().await;
    support::install_crds(&client).await;
    let ns = support::namespace(&client, "al-tls").await;
    support::create_secret(&client, &ns, "am-token", json!({"token": TOKEN})).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let secret = format!("{ns}/am-token");
    let file = |f: &str| certs.path().join(f).to_string_lossy().into_owned();
    let (cert, key) = (file("server.crt"), file("server.key"));
    let _operator = Operator::start(
        &ns,
        &[
            "--alert-receiver-addr",
            &addr,
            "--alert-receiver-token-secret",
            &secret,
            "--alert-receiver-tls-cert",
            &cert,
            "--alert-receiver-tls-key",
            &key,
        ],
    )
    .await;
    let ca = std::fs::read(file("frys-test-ca.crt")).unwrap();
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let url = format!("https://{addr}/api/v1/alerts");
    // An alert for a workload without a policy: taken, and counted as unmatched.
    let body = json!({
        "version": "4", "groupKey": "{}:{}", "status": "firing", "receiver": "frys",
        "groupLabels": {}, "commonLabels": {}, "externalURL": "http://am",
        "alerts": [{"status": "firing", "labels": {"alertname": "X", "namespace": ns, "app": "none"},
                    "annotations": {}, "startsAt": "2026-12-01T10:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom/graph",
                    "fingerprint": "0123456789abcdef"}]
    })
    .to_string();
    let post = |c: &reqwest::Client, url: &str, token: bool| {
        let mut r = c.post(url).header("content-type", "application/json");
        if token {
            r = r.bearer_auth(TOKEN);
        }
        r.body(body.clone()).send()
    };
    let text = eventually("the receiver answers over HTTPS", TIMEOUT, || async {
        let r = post(&trusting, &url, true).await.ok()?;
        (r.status() == 200).then_some(())?;
        r.text().await.ok()
    })
    .await;
    assert!(text.contains("\"unmatched\":1"), "{text}");
    let r = post(&trusting, &url, false).await.unwrap();
    assert_eq!(r.status(), 401, "no token over TLS");

    let untrusting = reqwest::Client::new();
    let err = post(&untrusting, &url, true).await.unwrap_err();
    assert!(
        format!("{err:?}").to_lowercase().contains("certificate"),
        "a client without the CA must refuse the certificate: {err:?}"
    );
    let plain = format!("http://{addr}/api/v1/alerts");
    assert!(
        post(&untrusting, &plain, true).await.is_err(),
        "plain HTTP to the TLS port must get no HTTP answer"
    );
}
