//! The people-facing commands (`status`, `report`, `trigger`, `emergency`, `undo`) run as the
//! built binary against policies and events made here; no operator runs, so annotations stay
//! for kubectl to read.

use std::process::Command;

use serde_json::{Value, json};

use crate::support::{self, env, kubectl, kubectl_apply};

const POLICY: &str = r#"
apiVersion: rollback.frys.io/v1alpha1
kind: RollbackPolicy
metadata: {name: web}
spec:
  targetRef: {name: web}
  interval: 5s
  metrics: [{name: errors, preset: errorRate}]
  strategies: [{type: VersionRollback}]
"#;

/// Runs the binary with the environment's KUBECONFIG; returns (success, stdout, stderr).
fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_frys-rollback"))
        .args(args)
        .env("KUBECONFIG", &env().kubeconfig)
        .output()
        .expect("running frys-rollback");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn setup(prefix: &str) -> String {
    let client = env().client().await;
    support::install_crds(&client).await;
    let ns = support::namespace(&client, prefix).await;
    let (ok, _, err) = kubectl_apply(&ns, POLICY);
    assert!(ok, "{err}");
    ns
}

fn patch_status(ns: &str, resource: &str, status: Value) {
    let patch = json!({ "status": status }).to_string();
    let (ok, _, err) = kubectl(&[
        "patch",
        "-n",
        ns,
        resource,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ]);
    assert!(ok, "patching {resource}: {err}");
}

fn event(ns: &str, name: &str, strategy: &str, type_: &str, status: Value) {
    let yaml = format!(
        "apiVersion: rollback.frys.io/v1alpha1\nkind: RollbackEvent\nmetadata: {{name: {name}}}\n\
         spec: {{policyRef: {{name: web}}, type: {type_}, strategy: {strategy}, reason: test}}\n"
    );
    let (ok, _, err) = kubectl_apply(ns, &yaml);
    assert!(ok, "{err}");
    patch_status(ns, &format!("rollbackevent/{name}"), status);
}

fn annotation(ns: &str, resource: &str, key: &str) -> String {
    let path = format!(
        "jsonpath={{.metadata.annotations.{}}}",
        key.replace('.', "\\.")
    );
    let (ok, out, err) = kubectl(&["get", "-n", ns, resource, "-o", &path]);
    assert!(ok, "{err}");
    out
}

#[tokio::test]
async fn status_and_report_show_policies_and_event_statistics() {
    let ns = setup("cli-status").await;
    patch_status(
        &ns,
        "rollbackpolicy/web",
        json!({
            "conditions": [{"type": "Ready", "status": "True", "reason": "Valid", "message": "ok",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "health": {"status": "Critical", "score": 41.5},
            "failureStreak": 4,
            "incident": {"class": "Release", "startedAt": "2026-01-01T00:00:00Z", "attempts": 2, "failed": true},
            "lastRollback": {"event": "e2", "strategy": "VersionRollback", "phase": "Failed",
                             "time": "2026-01-01T00:00:00Z"},
            "effective": {"interval": "5s", "autoRollback": true},
        }),
    );
    let passed = json!({"overallStatus": "Passed", "durationMs": 100});
    event(
        &ns,
        "e1",
        "VersionRollback",
        "Automatic",
        json!({"phase": "Succeeded", "durationMs": 1000, "verification": passed}),
    );
    event(
        &ns,
        "e2",
        "VersionRollback",
        "Manual",
        json!({"phase": "Failed", "durationMs": 4000, "message": "verification failed: errors still high",
               "verification": {"overallStatus": "Failed", "durationMs": 100}}),
    );
    event(
        &ns,
        "e3",
        "CircuitBreaker",
        "Automatic",
        json!({"phase": "Succeeded", "durationMs": 2000}),
    );
    event(
        &ns,
        "e4",
        "EmergencyShutdown",
        "Emergency",
        json!({"phase": "Executing"}),
    );

    let (ok, out, err) = cli(&["status", "-n", &ns, "-o", "json"]);
    assert!(ok, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    let row = &rows[0];
    assert_eq!(rows.as_array().unwrap().len(), 1, "{out}");
    assert_eq!(row["name"], "web");
    assert_eq!(row["target"], "web");
    assert_eq!(row["ready"], "True");
    assert_eq!(row["health"], "Critical");
    assert_eq!(row["score"], 41.5);
    assert_eq!(row["failureStreak"], 4);
    assert_eq!(
        row["incident"],
        json!({"class": "Release", "attempts": 2, "maxAttempts": 3, "failed": true})
    );
    assert_eq!(row["lastRemediation"]["strategy"], "VersionRollback");
    assert_eq!(row["lastRemediation"]["phase"], "Failed");
    assert_eq!(
        row["profile"],
        // No profile configuration: no profile name, nothing inherited (keys kept for scripts).
        json!({"name": null, "inherited": [], "interval": "5s", "autoRollback": true, "dryRun": false})
    );

    let (ok, out, err) = cli(&["status", "-n", &ns]);
    assert!(ok, "{err}");
    assert!(out.starts_with("NAMESPACE "), "{out}");
    for header in [
        "TARGET",
        "HEALTH",
        "SCORE",
        "STREAK",
        "INCIDENT",
        "LAST REMEDIATION",
        "DRY-RUN",
    ] {
        assert!(
            out.lines().next().unwrap().contains(header),
            "{header} missing:\n{out}"
        );
    }
    assert!(out.contains("Release 2/3 failed"), "{out}");

    let (ok, out, err) = cli(&["report", "-n", &ns, "--since", "1h", "-o", "json"]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["total"], 4, "{out}");
    assert_eq!(
        report["byStrategy"],
        json!({"CircuitBreaker": 1, "EmergencyShutdown": 1, "VersionRollback": 2})
    );
    assert_eq!(
        report["byType"],
        json!({"Automatic": 2, "Emergency": 1, "Manual": 1})
    );
    assert_eq!(
        (report["succeeded"].clone(), report["finished"].clone()),
        (json!(2), json!(3))
    );
    assert!(
        (report["successRate"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9,
        "{out}"
    );
    assert_eq!(report["verificationPassRate"], 0.5);
    assert_eq!(report["meanDurationMs"], 7000.0 / 3.0);
    assert_eq!(report["p95DurationMs"], 4000);
    assert_eq!(report["failed"][0]["name"], "e2");
    assert_eq!(
        report["failed"][0]["message"],
        "verification failed: errors still high"
    );

    let (ok, out, err) = cli(&["report", "-n", &ns]);
    assert!(ok, "{err}");
    assert!(
        out.contains("SUMMARY") && out.contains("success rate") && out.contains("66.7 % (2/3)"),
        "{out}"
    );
    assert!(out.contains("STRATEGY") && out.contains("MESSAGE"), "{out}");
}

#[tokio::test]
async fn trigger_emergency_and_undo_annotate() {
    let ns = setup("cli-trigger").await;

    let (ok, out, err) = cli(&[
        "trigger",
        "web",
        "version_rollback",
        "--reason",
        "perf regression",
        "-n",
        &ns,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("annotated"), "{out}");
    assert_eq!(
        annotation(&ns, "rollbackpolicy/web", "rollback.frys.io/trigger"),
        "VersionRollback"
    );
    assert_eq!(
        annotation(&ns, "rollbackpolicy/web", "rollback.frys.io/reason"),
        "perf regression"
    );

    // Refused locally, before anything is changed.
    let (ok, _, err) = cli(&["trigger", "web", "reboot", "-n", &ns]);
    assert!(!ok);
    assert!(
        err.contains("reboot") && err.contains("CircuitBreaker"),
        "{err}"
    );
    let (ok, _, err) = cli(&["trigger", "nope", "CircuitBreaker", "-n", &ns]);
    assert!(!ok);
    assert!(err.contains("RollbackPolicy nope"), "{err}");

    let (ok, _, err) = cli(&["emergency", "web", "--reason", "database outage", "-n", &ns]);
    assert!(ok, "{err}");
    assert_eq!(
        annotation(&ns, "rollbackpolicy/web", "rollback.frys.io/emergency"),
        "database outage"
    );

    event(
        &ns,
        "e1",
        "VersionRollback",
        "Manual",
        json!({"phase": "Succeeded"}),
    );
    let (ok, _, err) = cli(&["undo", "e1", "--force", "-n", &ns]);
    assert!(ok, "{err}");
    assert_eq!(
        annotation(&ns, "rollbackevent/e1", "rollback.frys.io/undo"),
        "force"
    );
}

#[tokio::test]
async fn trigger_wait_follows_the_new_event_until_it_finishes() {
    let client = env().client().await;
    support::install_crds(&client).await;
    let ns = support::namespace(&client, "cli-wait").await;
    let (ok, _, err) = kubectl(&["create", "deployment", "web", "--image=demo:v1", "-n", &ns]);
    assert!(ok, "{err}");
    // Dry run: the operator decides and records a Skipped event without touching anything.
    let (ok, _, err) = kubectl_apply(&ns, &format!("{POLICY}  dryRun: true\n"));
    assert!(ok, "{err}");
    let _operator = support::Operator::start(&ns, &[]).await;

    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        cli(&[
            "trigger",
            "web",
            "VersionRollback",
            "-n",
            &ns,
            "--wait",
            "--timeout",
            "60s",
        ])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("Skipped: dry run"), "{out}");
    assert!(err.contains("Skipped"), "progress on stderr: {err}");
}

/// Installed as `kubectl-frys` on PATH, the binary answers `kubectl frys ...` (kubectl's plugin
/// lookup), with `kubectl frys` in its usage; `explain` reads the policy's status in sentences.
#[tokio::test]
async fn kubectl_frys_plugin_status_and_explain() {
    let ns = setup("cli-plugin").await;
    patch_status(
        &ns,
        "rollbackpolicy/web",
        json!({
            "conditions": [{"type": "Ready", "status": "True", "reason": "Valid",
                            "message": "protecting Deployment web", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "health": {"status": "Healthy", "score": 99.3, "metrics": {"errors": 0.0009999999999999998}},
            "failureStreak": 0,
        }),
    );
    let bin = tempfile::tempdir().unwrap();
    let plugin = bin.path().join("kubectl-frys");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_frys-rollback"), &plugin).unwrap();
    let path = format!("{}:{}", bin.path().display(), env().path);
    let kubectl_frys = |args: &[&str]| {
        let out = Command::new("kubectl")
            .arg("frys")
            .args(args)
            .env("KUBECONFIG", &env().kubeconfig)
            .env("PATH", &path)
            .output()
            .expect("running kubectl frys");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (ok, out, err) = kubectl_frys(&["status", "-n", &ns]);
    assert!(ok, "{err}");
    let row = out.lines().nth(1).unwrap_or_default();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..6],
        [ns.as_str(), "web", "web", "True", "Healthy", "99.3"],
        "{out}"
    );

    let (ok, out, _) = kubectl_frys(&["--help"]);
    assert!(ok);
    assert!(out.contains("Usage: kubectl frys <COMMAND>"), "{out}");

    let (ok, out, err) = kubectl_frys(&["explain", "web", "-n", &ns]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("web is Ready: protecting Deployment web."),
        "{out}"
    );
    // No Deployment web exists here: the engine sees no available replica.
    assert!(
        out.contains("Last evaluation: Healthy, score 99.3."),
        "{out}"
    );
    assert!(
        out.contains("as it is now: Unhealthy: 0 of 1 replicas available"),
        "{out}"
    );
    assert!(
        out.contains("If the next evaluation reads the same:"),
        "{out}"
    );
}
