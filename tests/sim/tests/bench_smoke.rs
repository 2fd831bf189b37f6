//! Smoke test of the benchmark harness (BENCHMARKS.md): a run with 20 policies and short phases
//! on the test environment must produce every figure. Not a timed test: no figure is compared
//! with a target here.

use std::path::PathBuf;
use std::process::Command;

/// The figures every run reports (null would mean the harness could not measure it).
const FIGURES: &[&str] = &[
    "create_deployments_s",
    "create_policies_s",
    "grouped.first_full_evaluation_s",
    "grouped.evaluation_lag_p50_s",
    "grouped.evaluation_lag_max_s",
    "grouped.api_requests_per_interval",
    "grouped.api_writes_per_policy_per_interval",
    "grouped.prometheus_queries_per_tick",
    "grouped.prometheus_query_requests_per_tick_seen_by_prometheus",
    "grouped.operator_cpu_pct_of_a_core",
    "grouped.operator_rss_mb",
    "grouped.peak_rss_mb_before_faults",
    "restart.first_full_evaluation_s",
    "restart.writes_in_first_2_intervals",
    "restart.kubernetes_events_created",
    "faults.detection_to_patch_ms_p50",
    "faults.detection_to_patch_ms_p99",
    "faults.readings_to_patch_ms_p50",
    "faults.readings_to_patch_ms_p99",
    "incidents_raised.remediated",
    "incidents_raised.patch_spread_s",
    "incidents_raised.verified_spread_s",
    "incidents_raised.within_one_interval",
    "incidents_raised.peak_rss_mb",
    "incidents_defaults.remediations_started",
    "incidents_defaults.hold_engaged",
    "per_policy.prometheus_queries_per_tick",
    "ratio.queries_per_tick_per_policy_over_grouped",
];

/// The operator to run: the release build when there is one, else the debug build.
fn operator() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("frys-rollback"))
        .find(|p| p.is_file())
}

fn skip(why: &str) {
    eprintln!("skipping bench_smoke: it {why}");
    if let Some(path) = std::env::var_os("FRYS_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
        {
            let _ = writeln!(f, "bench_smoke\t{why}");
        }
    }
}

#[test]
fn bench_smoke() {
    let vars = [
        "KUBECONFIG",
        "PROMETHEUS_URL",
        "FRYS_REQUEST_LOG",
        "FRYS_SIM_SD_DIR",
    ];
    if let Some(missing) = vars.iter().find(|v| std::env::var_os(v).is_none()) {
        return skip(&format!(
            "needs the test environment ({missing} is not set)"
        ));
    }
    let Some(operator) = operator() else {
        return skip("needs a built frys-rollback (cargo build --workspace)");
    };
    // The CRDs, as the chart would install them (the integration tests may not have run yet).
    let crds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../crds");
    let applied = Command::new("kubectl")
        .args(["apply", "--server-side", "--force-conflicts", "-f"])
        .arg(&crds)
        .status()
        .expect("running kubectl");
    assert!(applied.success(), "kubectl apply -f crds/ failed");
    let json = std::env::temp_dir().join(format!("frys-bench-smoke-{}.json", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_frys-bench"))
        .args([
            "--n",
            "20",
            "--namespaces",
            "1",
            "--interval",
            "5",
            "--steady-intervals",
            "1",
        ])
        .args([
            "--faults",
            "2",
            "--incidents",
            "5",
            "--consecutive-failures",
            "1",
        ])
        .arg("--operator-bin")
        .arg(&operator)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("running frys-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "frys-bench failed:\n{stdout}\n{stderr}"
    );
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report")).unwrap();
    let _ = std::fs::remove_file(&json);
    for figure in FIGURES {
        assert!(
            figures.get(*figure).is_some_and(|v| !v.is_null()),
            "no figure {figure}:\n{stdout}\n{stderr}"
        );
        assert!(
            stdout.contains(&format!("{figure}: ")),
            "{figure} not printed:\n{stdout}"
        );
    }
    // Each requested fault was measured, and the per-policy mode really asks more.
    assert_eq!(figures["incidents_raised.remediated"], "5 of 5", "{stdout}");
    // A restart on unchanged state announces nothing.
    assert_eq!(figures["restart.kubernetes_events_created"], 0, "{stdout}");
    // Printed even when the hold did not engage (then null).
    assert!(
        stdout.contains("incidents_defaults.hold_message: "),
        "{stdout}"
    );
    assert!(
        figures["per_policy.prometheus_queries_per_tick"].as_f64()
            > figures["grouped.prometheus_queries_per_tick"].as_f64(),
        "{stdout}"
    );
}
