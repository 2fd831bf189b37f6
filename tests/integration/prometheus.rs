//! Prometheus access against a real Prometheus.
//!
//! Each test starts its own Prometheus on a free port, over deterministic history backfilled
//! with `promtool tsdb create-blocks-from openmetrics`, and kills it at the end. Tests that need
//! the binary are skipped (with a message) when it is absent; set `FRYS_PROMETHEUS_BIN` to use
//! another one (`promtool` is looked up beside it).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    http::{Response, StatusCode, header},
};
use frys_rollback::{
    api::Preset,
    prometheus::{
        BasicCredentials, Credentials, Endpoint, MetricsSource, PolicyQueries, PrometheusClient,
        QueryError, Sample, Signal, Vars,
        plan::{self, REQUEST_RATE_SIGNAL},
        pod_regex,
        template::{preset_template, render, request_rate_template},
    },
    telemetry::Metrics,
};

use crate::support::{prometheus::AuthProxy, tls::make_certificates};

const DEFAULT_BIN: &str = "/root/.cache/frys-rollback/root/usr/bin/prometheus";
const STEP: i64 = 15;
const WINDOW: Duration = Duration::from_secs(120);
const MI: f64 = 1024.0 * 1024.0;

fn binaries() -> Option<(PathBuf, PathBuf)> {
    let prometheus = std::env::var_os("FRYS_PROMETHEUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BIN));
    let promtool = prometheus.with_file_name("promtool");
    if prometheus.is_file() && promtool.is_file() {
        Some((prometheus, promtool))
    } else {
        eprintln!(
            "SKIPPED: no Prometheus at {} (with promtool beside it); set FRYS_PROMETHEUS_BIN",
            prometheus.display()
        );
        None
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private Prometheus, killed on drop.
struct TestPrometheus {
    url: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for TestPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestPrometheus {
    /// Starts Prometheus over the given history. `tls` is (cert, key, CA) PEM files for HTTPS.
    async fn start(history: &str, tls: Option<(&Path, &Path, &Path)>) -> Option<Self> {
        let (prometheus, promtool) = binaries()?;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let om = dir.path().join("history.om");
        std::fs::write(&om, history).unwrap();
        let out = Command::new(&promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&om)
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, "global: {}\n").unwrap();
        let port = free_port();
        let mut cmd = Command::new(&prometheus);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        let scheme = match tls {
            Some((cert, key, _)) => {
                let web = dir.path().join("web.yml");
                std::fs::write(
                    &web,
                    format!(
                        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
                        cert.display(),
                        key.display()
                    ),
                )
                .unwrap();
                cmd.arg(format!("--web.config.file={}", web.display()));
                "https"
            }
            None => "http",
        };
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let me = Self {
            url: format!("{scheme}://127.0.0.1:{port}"),
            child,
            dir,
        };
        let mut probe = reqwest::Client::builder().timeout(Duration::from_secs(2));
        if let Some((_, _, ca)) = tls {
            let pem = std::fs::read(ca).unwrap();
            probe = probe.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap());
        }
        let probe = probe.build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = probe.get(format!("{}/-/ready", me.url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Some(me);
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus did not get ready: {}",
                std::fs::read_to_string(me.dir.path().join("prometheus.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Deterministic history: 20 minutes every 15 s, ending at `end` (the time tests query at).
struct History {
    end: i64,
    text: String,
}

impl History {
    fn new() -> Self {
        let now = jiff::Timestamp::now().as_second();
        Self {
            end: now - now.rem_euclid(STEP) - 120,
            text: String::new(),
        }
    }

    fn at(&self) -> jiff::Timestamp {
        jiff::Timestamp::from_second(self.end).unwrap()
    }

    /// One metric family; each series grows by `rate` per second (0 for a constant `start`).
    fn family(&mut self, name: &str, series: &[(String, f64, f64)]) -> &mut Self {
        let _ = writeln!(self.text, "# TYPE {name} gauge");
        let start = self.end - 20 * 60;
        for (labels, base, rate) in series {
            for t in (start..=self.end).step_by(STEP as usize) {
                let v = base + rate * (t - start) as f64;
                let _ = writeln!(self.text, "{name}{{{labels}}} {v} {t}");
            }
        }
        self
    }

    fn finish(&mut self) -> String {
        format!("{}# EOF\n", self.text)
    }
}

fn l(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect::<Vec<_>>()
        .join(",")
}

/// The workloads of the tests and what their presets must read:
/// - shop/web: two pods, 18 ok + 2 errors per second (errorRate 0.1, 20 rps), p95 750 ms;
/// - shop/api: 20 ok per second and no 5xx series at all (errorRate 0), p95 242.5 ms;
/// - pay/web: 5 ok + 5 errors per second (0.5), p95 95 ms;
/// - shop/idle: a counter that does not move (no rate: errorRate and p95 have no data);
/// - pods of shop/web's ReplicaSets web-7f9c and web-1111: the worst memory ratio is
///   400Mi/512Mi = 0.78125 and the worst CPU ratio 0.5 core/1 core. A sidecar without limits and
///   cAdvisor's pod-level series would spoil both if counted; webhook-5c4d-* (another workload
///   whose name starts alike) would too if the pod regex matched it.
fn history() -> History {
    let mut h = History::new();
    let req = |ns, app, pod, code, rate| {
        (
            l(&[
                ("namespace", ns),
                ("app", app),
                ("pod", pod),
                ("code", code),
            ]),
            100.0,
            rate,
        )
    };
    h.family(
        "http_requests_total",
        &[
            req("shop", "web", "web-7f9c-aaaaa", "200", 9.0),
            req("shop", "web", "web-7f9c-aaaaa", "500", 1.0),
            req("shop", "web", "web-7f9c-bbbbb", "200", 9.0),
            req("shop", "web", "web-7f9c-bbbbb", "500", 1.0),
            req("shop", "api", "api-1-aaaaa", "200", 20.0),
            req("pay", "web", "web-2-aaaaa", "200", 5.0),
            req("pay", "web", "web-2-aaaaa", "500", 5.0),
            req("shop", "idle", "idle-1-aaaaa", "200", 0.0),
        ],
    );
    let mut buckets = Vec::new();
    let mut bucket = |ns, app, pod, per_le: [f64; 5]| {
        for (le, rate) in ["0.1", "0.25", "0.5", "1", "+Inf"].iter().zip(per_le) {
            buckets.push((
                l(&[("namespace", ns), ("app", app), ("pod", pod), ("le", le)]),
                0.0,
                rate,
            ));
        }
    };
    bucket("shop", "web", "web-7f9c-aaaaa", [5.0, 8.0, 9.0, 10.0, 10.0]);
    bucket("shop", "web", "web-7f9c-bbbbb", [5.0, 8.0, 9.0, 10.0, 10.0]);
    bucket("shop", "api", "api-1-aaaaa", [0.0, 20.0, 20.0, 20.0, 20.0]);
    bucket("pay", "web", "web-2-aaaaa", [10.0, 10.0, 10.0, 10.0, 10.0]);
    bucket("shop", "idle", "idle-1-aaaaa", [0.0; 5]);
    h.family("http_request_duration_seconds_bucket", &buckets);
    let c = |pod, container| {
        l(&[
            ("namespace", "shop"),
            ("pod", pod),
            ("container", container),
        ])
    };
    h.family(
        "container_memory_working_set_bytes",
        &[
            (c("web-7f9c-aaaaa", "app"), 400.0 * MI, 0.0),
            (c("web-7f9c-aaaaa", "sidecar"), 300.0 * MI, 0.0),
            (c("web-7f9c-aaaaa", ""), 1024.0 * MI, 0.0),
            (c("web-7f9c-bbbbb", "app"), 256.0 * MI, 0.0),
            (c("web-1111-ccccc", "app"), 100.0 * MI, 0.0),
            (c("webhook-5c4d-ddddd", "app"), 500.0 * MI, 0.0),
        ],
    );
    h.family(
        "container_cpu_usage_seconds_total",
        &[
            (c("web-7f9c-aaaaa", "app"), 10.0, 0.5),
            (c("web-7f9c-aaaaa", "sidecar"), 10.0, 2.0),
            (c("web-7f9c-aaaaa", ""), 10.0, 2.5),
            (c("web-7f9c-bbbbb", "app"), 10.0, 0.6),
            (c("web-1111-ccccc", "app"), 10.0, 0.1),
            (c("webhook-5c4d-ddddd", "app"), 10.0, 0.99),
        ],
    );
    let limit = |pod, resource, value| {
        (
            l(&[
                ("namespace", "shop"),
                ("pod", pod),
                ("container", "app"),
                ("resource", resource),
            ]),
            value,
            0.0,
        )
    };
    h.family(
        "kube_pod_container_resource_limits",
        &[
            limit("web-7f9c-aaaaa", "memory", 512.0 * MI),
            limit("web-7f9c-aaaaa", "cpu", 1.0),
            limit("web-7f9c-bbbbb", "memory", 512.0 * MI),
            limit("web-7f9c-bbbbb", "cpu", 2.0),
            limit("web-1111-ccccc", "memory", 512.0 * MI),
            limit("web-1111-ccccc", "cpu", 1.0),
            limit("webhook-5c4d-ddddd", "memory", 512.0 * MI),
            limit("webhook-5c4d-ddddd", "cpu", 1.0),
        ],
    );
    h
}

fn web_pods() -> String {
    pod_regex(&["web-7f9c", "web-1111"]).unwrap()
}

fn client(url: &str) -> PrometheusClient {
    PrometheusClient::new(&Endpoint::new(url)).unwrap()
}

/// The value of a query that returns at most one series.
async fn value(source: &impl MetricsSource, promql: &str, at: jiff::Timestamp) -> Option<f64> {
    let samples = source
        .query(promql, Some(at))
        .await
        .unwrap_or_else(|e| panic!("{promql}: {e}"));
    assert!(samples.len() <= 1, "{promql}: {samples:?}");
    samples.first().map(|s| s.value).filter(|v| !v.is_nan())
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
        (None, None) => true,
        _ => false,
    }
}

#[track_caller]
fn assert_close(what: &str, got: Option<f64>, want: Option<f64>) {
    assert!(close(got, want), "{what}: got {got:?}, want {want:?}");
}

fn vars<'a>(ns: &'a str, target: &'a str, pods: Option<&'a str>) -> Vars<'a> {
    Vars {
        namespace: ns,
        target,
        pod_regex: pods,
        window: WINDOW,
    }
}

#[tokio::test]
async fn presets_read_known_values() {
    let mut h = history();
    let Some(prom) = TestPrometheus::start(&h.finish(), None).await else {
        return;
    };
    let c = client(&prom.url);
    let at = h.at();
    let pods = web_pods();
    let preset = |p, ns, t| render(&preset_template(p, "app"), &vars(ns, t, Some(&pods))).unwrap();
    let rate = |ns, t| render(&request_rate_template("app"), &vars(ns, t, None)).unwrap();

    let cases = [
        (
            "errorRate shop/web",
            preset(Preset::ErrorRate, "shop", "web"),
            Some(0.1),
        ),
        (
            "errorRate shop/api",
            preset(Preset::ErrorRate, "shop", "api"),
            Some(0.0),
        ),
        (
            "errorRate pay/web",
            preset(Preset::ErrorRate, "pay", "web"),
            Some(0.5),
        ),
        (
            "errorRate shop/idle",
            preset(Preset::ErrorRate, "shop", "idle"),
            None,
        ),
        (
            "responseTime shop/web",
            preset(Preset::ResponseTime, "shop", "web"),
            Some(750.0),
        ),
        (
            "responseTime shop/api",
            preset(Preset::ResponseTime, "shop", "api"),
            Some(242.5),
        ),
        (
            "responseTime pay/web",
            preset(Preset::ResponseTime, "pay", "web"),
            Some(95.0),
        ),
        (
            "responseTime shop/idle",
            preset(Preset::ResponseTime, "shop", "idle"),
            None,
        ),
        (
            "memoryUsage shop/web",
            preset(Preset::MemoryUsage, "shop", "web"),
            Some(0.78125),
        ),
        (
            "cpuUsage shop/web",
            preset(Preset::CpuUsage, "shop", "web"),
            Some(0.5),
        ),
        ("requestRate shop/web", rate("shop", "web"), Some(20.0)),
        ("requestRate shop/idle", rate("shop", "idle"), Some(0.0)),
        (
            "errorRate shop/ghost",
            preset(Preset::ErrorRate, "shop", "ghost"),
            None,
        ),
    ];
    for (what, promql, want) in cases {
        assert_close(what, value(&c, &promql, at).await, want);
    }
}

#[tokio::test]
async fn grouped_queries_equal_per_target_queries() {
    let mut h = history();
    let Some(prom) = TestPrometheus::start(&h.finish(), None).await else {
        return;
    };
    let at = h.at();
    let pods = web_pods();
    let mut signals: Vec<Signal> = [
        ("errors", Preset::ErrorRate),
        ("latency", Preset::ResponseTime),
        ("memory", Preset::MemoryUsage),
        ("cpu", Preset::CpuUsage),
    ]
    .into_iter()
    .map(|(name, p)| Signal {
        name: name.into(),
        template: preset_template(p, "app"),
    })
    .collect();
    signals.push(Signal {
        name: REQUEST_RATE_SIGNAL.into(),
        template: request_rate_template("app"),
    });
    // A user template that can be grouped (an aggregation without `by`)...
    signals.push(Signal {
        name: "ok".into(),
        template: r#"sum(rate(http_requests_total{namespace="{{namespace}}", app="{{target}}", code="200"}[{{window}}]))"#.into(),
    });
    // ...and one that cannot (`vector(0)` has no namespace or target).
    signals.push(Signal {
        name: "okOrZero".into(),
        template: r#"sum(rate(http_requests_total{namespace="{{ namespace }}", app="{{ target }}", code="200"}[{{ window }}])) or vector(0)"#.into(),
    });
    // shop/ghost has no series; pay/api neither, though both "pay" and "api" are selected.
    let targets = [
        ("shop", "web"),
        ("shop", "api"),
        ("pay", "web"),
        ("shop", "idle"),
        ("shop", "ghost"),
        ("pay", "api"),
    ];
    let endpoint = Endpoint::new(&prom.url);
    let policies: Vec<_> = targets
        .iter()
        .map(|(ns, t)| PolicyQueries {
            policy: format!("{ns}/{t}"),
            endpoint: endpoint.clone(),
            namespace: ns.to_string(),
            target: t.to_string(),
            // Every target gets shop/web's pods, so the per-pod presets have data to compare.
            pod_regex: Some(pods.clone()),
            window: WINDOW,
            signals: signals.clone(),
        })
        .collect();
    let plan = plan::plan(&policies);
    // Grouped: errors, latency, request rate and ok, one query each for the 6 targets. Per
    // target: memory and cpu (pod regex) render alike within a namespace (same pods here), so
    // 2 each; okOrZero 6. 14 queries for 42 signals.
    let grouped = plan
        .queries()
        .iter()
        .filter(|q| q.serves == targets.len())
        .count();
    assert_eq!(grouped, 4, "{:#?}", plan.queries());
    assert_eq!(plan.queries().len(), 14, "{:#?}", plan.queries());
    let metrics = Metrics::default();
    let source = PrometheusClient::new(&endpoint)
        .unwrap()
        .with_metrics(metrics.clone());
    let readings = plan::run(&plan, Some(at), |_| Ok(&source)).await;
    let sent = plan.queries().len();
    assert!(
        metrics.render().contains(&format!(
            "frys_rollback_prometheus_queries_total{{outcome=\"success\"}} {sent}"
        )),
        "{}",
        metrics.render()
    );

    // Each reading equals what the per-target query returns.
    let direct = client(&prom.url);
    let mut compared = 0;
    for p in &policies {
        for s in &signals {
            let promql = render(&s.template, &vars(&p.namespace, &p.target, Some(&pods))).unwrap();
            let want = value(&direct, &promql, at).await;
            let got = readings[&p.policy][&s.name].clone().unwrap();
            assert_close(&format!("{} {}", p.policy, s.name), got, want);
            compared += 1;
        }
    }
    assert_eq!(compared, 42);
    // And a few known values through the shared path.
    let r = |p: &str, s: &str| readings[p][s].clone().unwrap();
    assert_close("shop/web errors", r("shop/web", "errors"), Some(0.1));
    assert_close("pay/web errors", r("pay/web", "errors"), Some(0.5));
    assert_close("shop/api errors", r("shop/api", "errors"), Some(0.0));
    assert_close("shop/web latency", r("shop/web", "latency"), Some(750.0));
    assert_close("shop/web ok", r("shop/web", "ok"), Some(18.0));
    assert_close("pay/api errors", r("pay/api", "errors"), None);
    assert_close(
        "shop/ghost okOrZero",
        r("shop/ghost", "okOrZero"),
        Some(0.0),
    );
    eprintln!(
        "{} signals of {} policies answered by {sent} queries",
        compared,
        policies.len()
    );
}

#[tokio::test]
async fn unreachable_server() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let err = client(&url).query("up", None).await.unwrap_err();
    assert!(
        matches!(&err, QueryError::Unreachable { url: u, .. } if *u == url),
        "{err:?}"
    );
    assert_eq!(err.reason(), "PrometheusUnreachable");
}

#[tokio::test]
async fn slow_server_times_out() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let endpoint = Endpoint {
        timeout: Duration::from_millis(300),
        ..Endpoint::new(&url)
    };
    let started = Instant::now();
    let err = PrometheusClient::new(&endpoint)
        .unwrap()
        .query("up", None)
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    hold.abort();
}

#[tokio::test]
async fn bad_queries_carry_prometheus_message() {
    let mut h = history();
    let Some(prom) = TestPrometheus::start(&h.finish(), None).await else {
        return;
    };
    let c = client(&prom.url);
    let err = c.query("sum(rate(x[5m])", None).await.unwrap_err();
    match &err {
        QueryError::BadQuery { message } => {
            assert!(message.contains("unclosed left parenthesis"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // Valid syntax that fails at execution: many-to-many matching.
    let err = c
        .query(
            "http_requests_total / on (namespace) http_requests_total",
            Some(h.at()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, QueryError::BadQuery { message } if message.contains("many-to-many")),
        "{err:?}"
    );
    let err = c.query("up[5m]", None).await.unwrap_err();
    assert!(
        matches!(err, QueryError::UnexpectedResult { .. }),
        "{err:?}"
    );
    assert_eq!(
        c.query("1 + 1", None).await.unwrap(),
        vec![Sample {
            labels: BTreeMap::new(),
            value: 2.0
        }]
    );
}

#[tokio::test]
async fn credentials_through_an_auth_proxy() {
    let mut h = history();
    let Some(prom) = TestPrometheus::start(&h.finish(), None).await else {
        return;
    };
    let accepted = ["Bearer t0ken", "Basic ZnJ5czpzM2NyZXQ="]; // frys:s3cret
    let proxy = AuthProxy::start(&prom.url, &accepted).await;
    let errors = render(
        &preset_template(Preset::ErrorRate, "app"),
        &vars("shop", "web", None),
    )
    .unwrap();
    let with = |credentials: Credentials| {
        PrometheusClient::new(&Endpoint {
            credentials,
            ..Endpoint::new(&proxy.url)
        })
        .unwrap()
    };
    let bearer = |t: &str| Credentials {
        bearer_token: Some(t.into()),
        ..Default::default()
    };
    let basic = |user: &str, password: &str| Credentials {
        basic: Some(BasicCredentials {
            username: user.into(),
            password: password.into(),
        }),
        ..Default::default()
    };

    for (what, creds) in [
        ("no credentials", Credentials::default()),
        ("wrong token", bearer("nope")),
        ("wrong password", basic("frys", "guess")),
    ] {
        let err = with(creds).query(&errors, Some(h.at())).await.unwrap_err();
        assert!(
            // The body ("Unauthorized") is not repeated: only what the answer was.
            matches!(&err, QueryError::Auth { status: 401, message, .. } if message == "text/plain; charset=utf-8, 13 bytes"),
            "{what}: {err:?}"
        );
        assert_eq!(err.reason(), "PrometheusAuthFailed");
    }
    for (what, creds) in [
        ("bearer", bearer("t0ken")),
        ("basic", basic("frys", "s3cret")),
    ] {
        let got = value(&with(creds), &errors, h.at()).await;
        assert_close(what, got, Some(0.1));
    }
}

#[tokio::test]
async fn tls_is_verified_with_extra_roots() {
    let certs = tempfile::tempdir().unwrap();
    if !make_certificates(certs.path()) {
        eprintln!("SKIPPED: openssl could not make test certificates");
        return;
    }
    let file = |f: &str| certs.path().join(f);
    let mut h = history();
    let (cert, key, ca) = (
        file("server.crt"),
        file("server.key"),
        file("frys-test-ca.crt"),
    );
    let Some(prom) = TestPrometheus::start(&h.finish(), Some((&cert, &key, &ca))).await else {
        return;
    };
    let with_ca = |pem: Option<&str>| {
        PrometheusClient::new(&Endpoint {
            credentials: Credentials {
                ca_pem: pem.map(|f| std::fs::read_to_string(file(f)).unwrap()),
                ..Default::default()
            },
            ..Endpoint::new(&prom.url)
        })
        .unwrap()
    };
    for (what, ca) in [("no CA", None), ("another CA", Some("other-ca.crt"))] {
        let err = with_ca(ca).query("1", None).await.unwrap_err();
        assert!(
            matches!(&err, QueryError::Tls { message, .. } if message.contains("certificate")),
            "{what}: {err:?}"
        );
    }
    let got = value(&with_ca(Some("frys-test-ca.crt")), "vector(0.25)", h.at()).await;
    assert_close("with the CA", got, Some(0.25));
}

/// A local server answering every request with `status`, `headers` and `body`; counts requests.
async fn answering(
    status: StatusCode,
    headers: Vec<(header::HeaderName, String)>,
    body: Vec<u8>,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    let app = Router::new().fallback(move || {
        let headers = headers.clone();
        let body = body.clone();
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status;
            for (k, v) in headers {
                response.headers_mut().insert(k, v.parse().unwrap());
            }
            response
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, count)
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (target, target_hits) = answering(StatusCode::OK, vec![], b"TARGET-SECRET".to_vec()).await;
    for status in [
        StatusCode::MOVED_PERMANENTLY,
        StatusCode::FOUND,
        StatusCode::TEMPORARY_REDIRECT,
        StatusCode::PERMANENT_REDIRECT,
    ] {
        let (url, _) = answering(
            status,
            vec![(header::LOCATION, format!("{target}/latest/meta-data/"))],
            b"REDIRECT-BODY".to_vec(),
        )
        .await;
        let mut endpoint = Endpoint::new(&url);
        endpoint.credentials.bearer_token = Some("t0ken".into());
        let err = PrometheusClient::new(&endpoint)
            .unwrap()
            .query("up", None)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            QueryError::Redirect {
                url: url.clone(),
                status: status.as_u16()
            }
        );
        assert_eq!(err.reason(), "PrometheusRedirected");
        let text = err.to_string();
        assert!(
            !text.contains("REDIRECT-BODY") && !text.contains("meta-data"),
            "{text}"
        );
    }
    assert_eq!(
        target_hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a redirect was followed"
    );
}

#[tokio::test]
async fn answers_are_described_never_quoted() {
    let secret = b"<html>SECRET-BODY-TEXT</html>".to_vec();
    for (status, content_type) in [
        (StatusCode::OK, "text/html"),
        (StatusCode::INTERNAL_SERVER_ERROR, "text/html"),
        (StatusCode::FORBIDDEN, "text/html"),
        (StatusCode::OK, "application/json"),
        (StatusCode::BAD_GATEWAY, "application/json"),
    ] {
        let (url, _) = answering(
            status,
            vec![(header::CONTENT_TYPE, content_type.into())],
            secret.clone(),
        )
        .await;
        let err = client(&url).query("up", None).await.unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("SECRET-BODY-TEXT"), "{status}: {text}");
        assert!(
            text.contains(content_type) && text.contains(&format!("{} bytes", secret.len())),
            "{status}: {text}"
        );
    }
}

#[tokio::test]
async fn answers_beyond_the_size_cap_are_refused() {
    let big = vec![b' '; frys_rollback::prometheus::client::MAX_BODY + 1];
    let (url, _) = answering(
        StatusCode::OK,
        vec![(header::CONTENT_TYPE, "application/json".into())],
        big,
    )
    .await;
    let err = client(&url).query("up", None).await.unwrap_err();
    assert!(
        matches!(&err, QueryError::UnexpectedResult { message } if message.contains("larger than")),
        "{err:?}"
    );
}

#[tokio::test]
async fn link_local_and_metadata_addresses_are_refused() {
    for url in [
        "http://169.254.169.254",
        "http://[fe80::1]:9090",
        "http://[fd00:ec2::254]",
        "http://metadata.google.internal",
    ] {
        let err = match PrometheusClient::new(&Endpoint::new(url)) {
            Err(e) => e,
            Ok(c) => c.query("up", None).await.unwrap_err(),
        };
        assert_eq!(err.reason(), "PrometheusAddressRefused", "{url}: {err}");
    }
}
