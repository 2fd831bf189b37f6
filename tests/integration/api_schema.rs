//! The CRDs on a real API server: established, explained, printed, and bad input refused
//! with a clear message (issue: operator foundation).

use std::time::Duration;

use crate::support::{self, env, kubectl, kubectl_apply};

const VALID_POLICY: &str = r#"
apiVersion: rollback.frys.io/v1alpha1
kind: RollbackPolicy
metadata: {name: web}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  interval: 30s
  metrics:
    - {name: errors, preset: errorRate, warning: 0.02, critical: 0.05}
    - {name: latency, preset: responseTime, critical: 5000}
  strategies:
    - type: TrafficShifting
      trafficShifting: {httpRoute: web, from: web-canary, to: web-stable}
    - type: VersionRollback
      versionRollback: {}
    - type: EmergencyShutdown
      minSeverity: Unhealthy
      emergencyShutdown: {}
"#;

/// `VALID_POLICY` with one line replaced.
fn policy_with(from: &str, to: &str) -> String {
    assert!(
        VALID_POLICY.contains(from),
        "test bug: {from:?} not in the policy"
    );
    VALID_POLICY.replacen(from, to, 1)
}

async fn setup(prefix: &str) -> String {
    let client = env().client().await;
    support::install_crds(&client).await;
    support::namespace(&client, prefix).await
}

#[tokio::test]
async fn valid_policy_is_accepted_and_printed() {
    let ns = setup("schema-ok").await;
    let (ok, _, err) = kubectl_apply(&ns, VALID_POLICY);
    assert!(ok, "valid policy refused: {err}");

    let (ok, out, err) = kubectl(&["get", "rbp", "-n", &ns]);
    assert!(ok, "{err}");
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "TARGET", "READY", "HEALTH", "SCORE", "STREAK", "LAST", "AGE"
        ]
    );
    assert!(out.lines().nth(1).unwrap().starts_with("web "), "{out}");

    let event = r#"
apiVersion: rollback.frys.io/v1alpha1
kind: RollbackEvent
metadata: {name: web-manual}
spec:
  policyRef: {name: web}
  type: Manual
  strategy: VersionRollback
  reason: perf regression
"#;
    let (ok, _, err) = kubectl_apply(&ns, event);
    assert!(ok, "{err}");
    let (ok, out, err) = kubectl(&["get", "rbe", "-n", &ns]);
    assert!(ok, "{err}");
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "POLICY",
            "TYPE",
            "STRATEGY",
            "REASON",
            "PHASE",
            "VERIFICATION",
            "DURATION",
            "AGE"
        ]
    );
    assert!(
        out.contains("web-manual") && out.contains("VersionRollback"),
        "{out}"
    );

    // The category lists both kinds.
    let (ok, out, err) = kubectl(&["get", "frys", "-n", &ns, "-o", "name"]);
    assert!(ok, "{err}");
    assert!(out.contains("rollbackpolicy.rollback.frys.io/web"), "{out}");
    assert!(
        out.contains("rollbackevent.rollback.frys.io/web-manual"),
        "{out}"
    );
}

#[tokio::test]
async fn explain_shows_descriptions() {
    setup("schema-explain").await;
    let (ok, out, err) = kubectl(&["explain", "rollbackpolicy.spec"]);
    assert!(ok, "{err}");
    assert!(out.contains("targetRef"), "{out}");
    assert!(out.contains("The protected workload"), "{out}");
    let (ok, out, err) = kubectl(&["explain", "rollbackpolicy.spec.metrics.preset"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("responseTime") && out.contains("errorRate"),
        "{out}"
    );
    let (ok, out, _) = kubectl(&["explain", "rollbackevent.status.verification"]);
    assert!(ok && out.contains("overallStatus"), "{out}");
}

/// Each case: what is wrong, the policy, and a piece of the API server's message.
#[tokio::test]
async fn invalid_policies_are_refused_with_a_clear_message() {
    let ns = setup("schema-bad").await;
    let cases = [
        (
            "ratio threshold out of range",
            policy_with("critical: 0.05}", "critical: 1.5}"),
            "thresholds of ratio presets (errorRate, memoryUsage, cpuUsage) are ratios between 0 and 1",
        ),
        (
            "unknown strategy",
            policy_with("- type: VersionRollback", "- type: Reboot"),
            "Unsupported value: \"Reboot\"",
        ),
        (
            "malformed duration",
            policy_with("interval: 30s", "interval: 5 minutes"),
            "spec.interval",
        ),
        (
            "interval below 1s",
            policy_with("interval: 30s", "interval: 500ms"),
            "must be at least 1s",
        ),
        // No "empty ladder" case: a policy without strategies inherits its environment
        // profile's ladder (tests/integration/profiles.rs), or is Ready=False NoLadder.
        (
            "rung member does not match its type",
            policy_with(
                "versionRollback: {}",
                "trafficShifting: {httpRoute: web, from: a, to: b}",
            ),
            "type TrafficShifting needs the trafficShifting member, and only it",
        ),
        (
            "webhook rung without its member",
            policy_with("- type: VersionRollback", "- type: Webhook"),
            "type Webhook needs the webhook member, and only it",
        ),
        (
            "webhook rung in Slack format",
            policy_with(
                "- type: VersionRollback\n      versionRollback: {}",
                "- type: Webhook\n      webhook: {urlSecretRef: {name: h, key: url}, format: Slack}",
            ),
            "format must be CloudEvents or Json",
        ),
        (
            "webhook timeout beyond 5m",
            policy_with(
                "- type: VersionRollback\n      versionRollback: {}",
                "- type: Webhook\n      webhook: {urlSecretRef: {name: h, key: url}, timeout: 10m}",
            ),
            "timeout must be between 100ms and 5m",
        ),
        (
            "automatic emergency shutdown below Unhealthy",
            policy_with("minSeverity: Unhealthy", "minSeverity: Critical"),
            "an EmergencyShutdown rung in an automatic ladder needs minSeverity: Unhealthy",
        ),
        (
            "metric with both preset and query",
            policy_with("preset: errorRate,", "preset: errorRate, query: up,"),
            "a metric sets exactly one of preset, query or alert",
        ),
        (
            "warning beyond critical",
            policy_with(
                "warning: 0.02, critical: 0.05",
                "warning: 0.2, critical: 0.05",
            ),
            "the warning threshold must be reached before the critical one",
        ),
        (
            "same strategy twice",
            policy_with(
                "    - type: VersionRollback\n",
                "    - type: VersionRollback\n      versionRollback: {}\n    - type: VersionRollback\n",
            ),
            "Duplicate value",
        ),
    ];
    let mut failures = vec![];
    for (what, yaml, expected) in &cases {
        let (ok, out, err) = kubectl_apply(&ns, yaml);
        if ok {
            failures.push(format!("{what}: accepted ({out})"));
        } else if !err.contains(expected) {
            failures.push(format!("{what}: message lacks {expected:?}: {err}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The valid one still goes in: the cases above failed for their own reasons.
    let (ok, _, err) = kubectl_apply(&ns, VALID_POLICY);
    assert!(ok, "{err}");
}

/// `prometheus.timeout` stays below the interval (a query outliving its interval makes the
/// policy skip evaluations) and within a sane absolute bound.
#[tokio::test]
async fn prometheus_timeout_stays_below_the_interval() {
    let ns = setup("schema-timeout").await;
    let with = |prometheus: &str, interval: &str| {
        policy_with(
            "  interval: 30s\n",
            &format!(
                "  prometheus: {{url: 'http://prometheus.example:9090'{prometheus}}}\n{interval}"
            ),
        )
    };
    let refused = [
        (
            "timeout equal to the interval",
            with(", timeout: 30s", "  interval: 30s\n"),
            "prometheus.timeout must be shorter than interval",
        ),
        (
            "timeout beyond the interval",
            with(", timeout: 1m", "  interval: 30s\n"),
            "prometheus.timeout must be shorter than interval",
        ),
        (
            "timeout beyond the absolute maximum",
            with(", timeout: 3m", "  interval: 10m\n"),
            "must be more than 0s and at most 2m",
        ),
        (
            "zero timeout",
            with(", timeout: 0s", "  interval: 30s\n"),
            "must be more than 0s and at most 2m",
        ),
    ];
    let mut failures = vec![];
    for (what, yaml, expected) in &refused {
        let (ok, out, err) = kubectl_apply(&ns, yaml);
        if ok {
            failures.push(format!("{what}: accepted ({out})"));
        } else if !err.contains(expected) || !err.contains("spec.prometheus.timeout") {
            failures.push(format!(
                "{what}: message lacks {expected:?} on spec.prometheus.timeout: {err}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for (what, yaml) in [
        (
            "below the interval",
            with(", timeout: 29s", "  interval: 30s\n"),
        ),
        ("no interval (the operator's)", with(", timeout: 2m", "")),
        ("no timeout (the default)", with("", "  interval: 1s\n")),
    ] {
        let (ok, _, err) = kubectl_apply(&ns, &yaml);
        assert!(ok, "{what}: refused: {err}");
    }
}

#[tokio::test]
async fn rollback_event_spec_is_immutable() {
    let ns = setup("schema-immutable").await;
    let event = |reason: &str| {
        format!(
            "apiVersion: rollback.frys.io/v1alpha1\nkind: RollbackEvent\nmetadata: {{name: e1}}\nspec:\n  policyRef: {{name: web}}\n  type: Manual\n  strategy: VersionRollback\n  reason: {reason}\n"
        )
    };
    let (ok, _, err) = kubectl_apply(&ns, &event("first"));
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl_apply(&ns, &event("second"));
    assert!(!ok, "a changed RollbackEvent spec was accepted");
    assert!(
        err.contains("the spec of a RollbackEvent is immutable"),
        "{err}"
    );
    // Metadata stays editable (annotations drive undo).
    support::annotate(&ns, "rbe/e1", &["rollback.frys.io/undo=true"]);
}

#[tokio::test]
async fn crd_group_is_discoverable() {
    setup("schema-discovery").await;
    let client = env().client().await;
    let discovery = support::eventually(
        "rollback.frys.io in discovery",
        Duration::from_secs(20),
        || {
            let client = client.clone();
            async move {
                let d = kube::Discovery::new(client).run().await.ok()?;
                d.has_group("rollback.frys.io").then_some(d)
            }
        },
    )
    .await;
    let group = discovery.get("rollback.frys.io").unwrap();
    let kinds: Vec<String> = group
        .recommended_resources()
        .into_iter()
        .map(|(r, _)| r.kind)
        .collect();
    assert!(kinds.contains(&"RollbackPolicy".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"RollbackEvent".to_string()), "{kinds:?}");
}
