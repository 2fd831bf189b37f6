//! `frys-rollback backtest` over a known week: history written with
//! `promtool tsdb create-blocks-from openmetrics`, served by a real Prometheus started on those
//! blocks. Two real incidents among noise (short spikes, a warning bump, a low-traffic night of
//! high error ratios); the backtest must find exactly the incidents the engine's rules imply, and
//! `--suggest` must match percentiles computed here, independently, from the written values.

use std::{path::Path, process::Command, time::Duration};

use serde_json::Value;

use super::support::{env, eventually};

const MINUTES: i64 = 7 * 1440;
/// Incident 1: error ratio 20 % for 20 minutes (day 1, 10:00).
const ERRORS_FROM: i64 = 1440 + 600;
const ERRORS_FOR: i64 = 20;
/// Incident 2: latency 900 ms for 15 minutes (day 5, 11:40), 10 minutes after a release.
const SLOW_FROM: i64 = 5 * 1440 + 700;
const SLOW_FOR: i64 = 15;
const RELEASE_BEFORE_SLOW: i64 = 10;

/// Requests in minute `k` (all codes) and of those 5xx.
fn requests(k: i64) -> (i64, i64) {
    let night = (k % 1440) < 360;
    if night {
        // 0.5 requests/s, a third failing: below minRequestRate, never judged.
        return (30, 10);
    }
    let errors = if (ERRORS_FROM..ERRORS_FROM + ERRORS_FOR).contains(&k) {
        240
    } else if [3 * 1440 + 800, 3 * 1440 + 801, 4 * 1440 + 1000].contains(&k) {
        // Short bursts: critical for at most two evaluations in a row.
        100
    } else {
        (k * 7919) % 7
    };
    (1200, errors)
}

/// The latency gauge in minute `k`.
fn latency(k: i64) -> f64 {
    if (SLOW_FROM..SLOW_FROM + SLOW_FOR).contains(&k) {
        return 900.0;
    }
    if [
        2 * 1440 + 300,
        2 * 1440 + 301,
        6 * 1440 + 200,
        6 * 1440 + 201,
    ]
    .contains(&k)
    {
        return 800.0; // spikes, two evaluations long
    }
    if (4 * 1440 + 500..4 * 1440 + 530).contains(&k) {
        return 350.0; // warning only
    }
    80.0 + ((k * 104_729) % 31) as f64
}

fn openmetrics(start: i64) -> String {
    let mut out = String::from("# TYPE web_latency_p95_ms gauge\n");
    for k in 0..MINUTES {
        out.push_str(&format!(
            "web_latency_p95_ms{{namespace=\"shop\",app=\"web\"}} {} {}\n",
            latency(k),
            start + 60 * k
        ));
    }
    out.push_str("# TYPE http_requests counter\n");
    for code in ["200", "500"] {
        // Large offsets keep rate()'s extrapolation from being cut at a counter's zero.
        let mut total = 1_000_000i64;
        for k in 0..MINUTES {
            let (all, errors) = requests(k);
            total += if code == "500" { errors } else { all - errors };
            out.push_str(&format!(
                "http_requests_total{{namespace=\"shop\",app=\"web\",code=\"{code}\"}} {total} {}\n",
                start + 60 * k
            ));
        }
    }
    out.push_str("# EOF\n");
    out
}

const POLICY: &str = r#"
apiVersion: rollback.frys.io/v1alpha1
kind: RollbackPolicy
metadata: {name: web, namespace: shop}
spec:
  targetRef: {name: web}
  interval: 1m
  rateWindow: 2m
  consecutiveFailures: 3
  minRequestRate: 1
  cooldown: 5m
  maxRollbackAttempts: 3
  metrics:
    - {name: errors, preset: errorRate, warning: 0.02, critical: 0.05}
    - name: latency
      query: 'max(web_latency_p95_ms{namespace="{{ namespace }}", app="{{ target }}"})'
      warning: 300
      critical: 500
  strategies:
    - {type: TrafficShifting, trafficShifting: {httpRoute: web, from: web-canary, to: web-stable}}
    - {type: CircuitBreaker, circuitBreaker: {httpRoute: web, fallbackBackend: {name: maint, port: 80}}}
    - {type: VersionRollback}
"#;

/// A Prometheus serving only the given TSDB directory. Killed on drop.
struct Served {
    child: std::process::Child,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(prometheus: &Path, dir: &Path) -> Served {
    std::fs::write(dir.join("prometheus.yml"), "global: {}\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(prometheus)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg("--storage.tsdb.retention.time=60d")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting Prometheus");
    let url = format!("http://127.0.0.1:{port}");
    let ready = format!("{url}/-/ready");
    eventually("Prometheus ready", Duration::from_secs(30), || async {
        reqwest::get(&ready)
            .await
            .ok()?
            .status()
            .is_success()
            .then_some(())
    })
    .await;
    Served { child, url }
}

fn nearest_rank(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.max(1) - 1]
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-12)
}

#[tokio::test]
async fn a_known_week_replays_to_the_incidents_the_rules_imply() {
    let env = env();
    let prometheus = env.prometheus_bin.clone().expect("FRYS_PROMETHEUS_BIN");
    let promtool = prometheus.with_file_name("promtool");
    let dir = tempfile::tempdir().unwrap();
    // A week ending an hour ago, on whole minutes.
    let now = jiff::Timestamp::now().as_second();
    let start = now - now % 60 - 3600 - MINUTES * 60;
    let at = |k: i64| jiff::Timestamp::from_second(start + 60 * k).unwrap();
    std::fs::write(dir.path().join("week.om"), openmetrics(start)).unwrap();
    let out = Command::new(&promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(dir.path().join("week.om"))
        .arg(dir.path().join("data"))
        .output()
        .expect("running promtool");
    assert!(
        out.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let served = serve(&prometheus, dir.path()).await;

    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let plot = dir.path().join("week.svg");
    let release = at(SLOW_FROM - RELEASE_BEFORE_SLOW);
    // From the second minute: rate() needs two samples.
    let out = Command::new(env!("CARGO_BIN_EXE_frys-rollback"))
        .args(["backtest", "-f"])
        .arg(&policy)
        .args([
            "--from",
            &at(1).to_string(),
            "--to",
            &at(MINUTES - 1).to_string(),
        ])
        .args(["--release", &release.to_string(), "--suggest", "-o", "json"])
        .arg("--plot")
        .arg(&plot)
        .args(["--prometheus-url", &served.url])
        .env("KUBECONFIG", &env.kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ts = |v: &Value| v.as_str().unwrap().parse::<jiff::Timestamp>().unwrap();

    // Exactly two incidents. The error burst: open on its third failing evaluation (Errors:
    // TrafficShifting first), one rung per cooldown (5m) while it fails, the ladder exhausted
    // at the fourth step, closed at the first healthy evaluation.
    let incidents = result["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 2, "{:#}", result["incidents"]);
    let (first, second) = (&incidents[0], &incidents[1]);
    assert_eq!(first["class"], "Errors");
    assert_eq!(ts(&first["openedAt"]), at(ERRORS_FROM + 2));
    assert_eq!(ts(&first["closedAt"]), at(ERRORS_FROM + ERRORS_FOR));
    let rungs: Vec<(jiff::Timestamp, &str)> = first["rungs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (ts(&r[0]), r[1].as_str().unwrap()))
        .collect();
    assert_eq!(
        rungs,
        [
            (at(ERRORS_FROM + 2), "TrafficShifting"),
            (at(ERRORS_FROM + 7), "CircuitBreaker"),
            (at(ERRORS_FROM + 12), "VersionRollback"),
        ]
    );
    assert_eq!(first["failed"], true);
    // The slowdown began 10 minutes after a release: Release, rolled back first; nothing after
    // VersionRollback in the ladder, so it fails one cooldown later while still slow.
    assert_eq!(second["class"], "Release");
    assert_eq!(ts(&second["openedAt"]), at(SLOW_FROM + 2));
    assert_eq!(ts(&second["closedAt"]), at(SLOW_FROM + SLOW_FOR));
    assert_eq!(second["rungs"][0][1], "VersionRollback");
    assert_eq!(second["rungs"].as_array().unwrap().len(), 1);
    assert_eq!(second["failed"], true);

    let summary = &result["summary"];
    assert_eq!(summary["evaluations"], MINUTES - 1);
    assert_eq!(summary["remediations"], 4);
    // Degraded: the two incidents, the burst minutes (3) and the spike minutes (4).
    assert_eq!(
        summary["degradedSeconds"],
        60 * (ERRORS_FOR + SLOW_FOR + 3 + 4)
    );
    assert_eq!(summary["longestIncidentSeconds"], 60 * (ERRORS_FOR - 2));
    assert_eq!(summary["noDataSeconds"], 0);

    // Suggestions against percentiles computed here from the written values, outside the two
    // incidents (from their first failing minute to their close): the error ratio only where
    // traffic passes minRequestRate (1/s), the latency everywhere else.
    let normal = |k: &i64| {
        !(ERRORS_FROM..ERRORS_FROM + ERRORS_FOR).contains(k)
            && !(SLOW_FROM..SLOW_FROM + SLOW_FOR).contains(k)
    };
    let mut errors: Vec<f64> = (1..MINUTES)
        .filter(normal)
        .filter(|k| requests(*k).0 as f64 / 60.0 >= 1.0)
        .map(|k| requests(k).1 as f64 / requests(k).0 as f64)
        .collect();
    let mut latencies: Vec<f64> = (1..MINUTES).filter(normal).map(latency).collect();
    let suggestions = result["suggestions"]["metrics"].as_array().unwrap();
    for (name, values) in [("errors", &mut errors), ("latency", &mut latencies)] {
        let s = suggestions
            .iter()
            .find(|s| s["metric"] == name)
            .unwrap_or_else(|| panic!("no suggestion for {name}"));
        let n = values.len();
        let (p95, p99) = (nearest_rank(values, 95.0), nearest_rank(values, 99.0));
        assert_eq!(s["samples"], n, "{name}");
        let got = |k: &str| s[k].as_f64().unwrap();
        assert!(
            close(got("p95"), p95, 1e-9),
            "{name} p95 {} vs {p95}",
            got("p95")
        );
        assert!(
            close(got("p99"), p99, 1e-9),
            "{name} p99 {} vs {p99}",
            got("p99")
        );
        assert!(close(got("warning"), p95 * 1.2, 5e-4), "{name} warning");
        assert!(close(got("critical"), p99 * 1.2, 5e-4), "{name} critical");
    }
    // Replayed with the suggestions: the errors' (0.006) changes nothing; the latency's (about
    // 132 ms) also turns the 30-minute 350 ms bump into an incident.
    let incidents_with = |name: &str| {
        let s = suggestions.iter().find(|s| s["metric"] == name).unwrap();
        (s["incidentsNow"].as_u64(), s["incidentsSuggested"].as_u64())
    };
    assert_eq!(incidents_with("errors"), (Some(2), Some(2)));
    assert_eq!(incidents_with("latency"), (Some(2), Some(3)));
    assert_eq!(result["suggestions"]["incidentsWithAll"], 3);
    let patch = result["suggestions"]["patch"].as_str().unwrap();
    assert!(patch.contains("path: /spec/metrics/1/critical"), "{patch}");

    // The plot was written: one panel per signal, the incidents shaded, the release marked.
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("release") && svg.contains("VersionRollback"));
    if let Some(keep) = std::env::var_os("FRYS_BACKTEST_PLOT") {
        std::fs::copy(&plot, keep).unwrap();
    }
}
