//! The simulated application's Prometheus metrics: per ready pod request counters, a latency
//! histogram, cAdvisor-style container usage and kube-state-metrics-style limits.
//! Counters are floats advanced by elapsed time, so `rate()` gives exactly the configured rates.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

use crate::faults::Resolved;
use crate::simpod::SimPod;

/// Upper bounds of the latency histogram (seconds); a final `+Inf` bucket follows.
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const N_BUCKETS: usize = BUCKETS.len() + 1;

/// How observations at `latency_s` are spread over the (non-cumulative) buckets so that
/// `histogram_quantile(0.95, ...)`, which interpolates linearly inside a bucket, returns exactly
/// `latency_s` (except below 4.75 ms, where the first bucket cannot be split further).
pub fn bucket_shares(latency_s: f64) -> [f64; N_BUCKETS] {
    let mut shares = [0.0; N_BUCKETS];
    let Some(k) = BUCKETS.iter().position(|&b| latency_s <= b) else {
        shares[N_BUCKETS - 1] = 1.0;
        return shares;
    };
    let lower = if k == 0 { 0.0 } else { BUCKETS[k - 1] };
    let t = ((latency_s - lower) / (BUCKETS[k] - lower)).clamp(0.0, 1.0);
    if t >= 0.95 {
        // Put 5% or less just above the bucket.
        shares[k] = 0.95 / t;
        shares[k + 1] = 1.0 - shares[k];
    } else if k == 0 {
        shares[0] = 1.0;
    } else {
        // Put part of the observations in the bucket below.
        let below = (0.95 - t) / (1.0 - t);
        shares[k - 1] = below;
        shares[k] = 1.0 - below;
    }
    shares
}

/// A Prometheus label name for the workload label (`app.kubernetes.io/name` → `app_kubernetes_io_name`).
pub fn label_name(key: &str) -> String {
    let mut name: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

struct Entry {
    pod: SimPod,
    fault: Resolved,
    ok: f64,
    errors: f64,
    buckets: [f64; N_BUCKETS],
    sum: f64,
    count: f64,
    /// CPU seconds per container, in container order.
    cpu: Vec<f64>,
}

/// Counters of the serving pods, keyed by pod uid.
#[derive(Default)]
pub struct Metrics {
    entries: BTreeMap<String, Entry>,
}

impl Metrics {
    /// Makes `pods` the exported set (others vanish, new ones start at zero) and advances the
    /// counters of the known ones by `dt` seconds at their resolved rates.
    pub fn update(&mut self, pods: Vec<(SimPod, Resolved)>, dt: f64) {
        let live: HashSet<&str> = pods.iter().map(|(p, _)| p.uid.as_str()).collect();
        self.entries.retain(|uid, _| live.contains(uid.as_str()));
        for (pod, fault) in pods {
            match self.entries.get_mut(&pod.uid) {
                None => {
                    let cpu = vec![0.0; pod.containers.len()];
                    self.entries.insert(
                        pod.uid.clone(),
                        Entry {
                            pod,
                            fault,
                            ok: 0.0,
                            errors: 0.0,
                            buckets: [0.0; N_BUCKETS],
                            sum: 0.0,
                            count: 0.0,
                            cpu,
                        },
                    );
                }
                Some(e) => {
                    e.pod = pod;
                    e.fault = fault;
                    e.advance(dt);
                }
            }
        }
    }

    /// Prometheus text exposition (format 0.0.4). `workload_label` is a valid label name.
    pub fn render(&self, workload_label: &str) -> String {
        let mut entries: Vec<&Entry> = self.entries.values().collect();
        entries
            .sort_by(|a, b| (&a.pod.namespace, &a.pod.name).cmp(&(&b.pod.namespace, &b.pod.name)));
        let mut out = String::new();
        let http_labels = |e: &Entry| {
            format!(
                "namespace=\"{}\",{workload_label}=\"{}\",pod=\"{}\"",
                escape(&e.pod.namespace),
                escape(&e.pod.app),
                escape(&e.pod.name)
            )
        };
        let container_labels = |e: &Entry, c: &str| {
            format!(
                "namespace=\"{}\",pod=\"{}\",container=\"{}\"",
                escape(&e.pod.namespace),
                escape(&e.pod.name),
                escape(c)
            )
        };

        out.push_str(
            "# HELP http_requests_total Simulated HTTP requests served, by status code.\n",
        );
        out.push_str("# TYPE http_requests_total counter\n");
        for e in &entries {
            let l = http_labels(e);
            let _ = writeln!(out, "http_requests_total{{{l},code=\"200\"}} {}", e.ok);
            let _ = writeln!(out, "http_requests_total{{{l},code=\"500\"}} {}", e.errors);
        }

        out.push_str("# HELP http_request_duration_seconds Simulated HTTP request latency.\n");
        out.push_str("# TYPE http_request_duration_seconds histogram\n");
        for e in &entries {
            let l = http_labels(e);
            let mut cumulative = 0.0;
            for (i, share) in e.buckets.iter().enumerate() {
                cumulative += share;
                let le = BUCKETS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
                if i == N_BUCKETS - 1 {
                    cumulative = e.count; // exactly `_count`, without float noise
                }
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_bucket{{{l},le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(out, "http_request_duration_seconds_sum{{{l}}} {}", e.sum);
            let _ = writeln!(
                out,
                "http_request_duration_seconds_count{{{l}}} {}",
                e.count
            );
        }

        out.push_str("# HELP container_memory_working_set_bytes Simulated container working set (cAdvisor style).\n");
        out.push_str("# TYPE container_memory_working_set_bytes gauge\n");
        for e in &entries {
            for c in &e.pod.containers {
                let v = (e.fault.memory_ratio * c.memory_limit_bytes).round();
                let _ = writeln!(
                    out,
                    "container_memory_working_set_bytes{{{}}} {v}",
                    container_labels(e, &c.name)
                );
            }
        }

        out.push_str("# HELP container_cpu_usage_seconds_total Simulated container CPU time (cAdvisor style).\n");
        out.push_str("# TYPE container_cpu_usage_seconds_total counter\n");
        for e in &entries {
            for (c, secs) in e.pod.containers.iter().zip(&e.cpu) {
                let _ = writeln!(
                    out,
                    "container_cpu_usage_seconds_total{{{}}} {secs}",
                    container_labels(e, &c.name)
                );
            }
        }

        out.push_str("# HELP kube_pod_container_resource_limits Container resource limits (kube-state-metrics style).\n");
        out.push_str("# TYPE kube_pod_container_resource_limits gauge\n");
        for e in &entries {
            for c in &e.pod.containers {
                let l = container_labels(e, &c.name);
                let _ = writeln!(
                    out,
                    "kube_pod_container_resource_limits{{{l},resource=\"memory\",unit=\"byte\"}} {}",
                    c.memory_limit_bytes
                );
                let _ = writeln!(
                    out,
                    "kube_pod_container_resource_limits{{{l},resource=\"cpu\",unit=\"core\"}} {}",
                    c.cpu_limit_cores
                );
            }
        }
        out
    }
}

impl Entry {
    fn advance(&mut self, dt: f64) {
        if dt <= 0.0 {
            return;
        }
        let requests = self.fault.rps * dt;
        let error_rate = self.fault.effective_error_rate();
        self.errors += requests * error_rate;
        self.ok += requests * (1.0 - error_rate);
        let latency_s = self.fault.latency_ms / 1000.0;
        for (bucket, share) in self.buckets.iter_mut().zip(bucket_shares(latency_s)) {
            *bucket += requests * share;
        }
        self.count += requests;
        self.sum += requests * latency_s;
        self.cpu.resize(self.pod.containers.len(), 0.0);
        for (secs, c) in self.cpu.iter_mut().zip(&self.pod.containers) {
            *secs += self.fault.cpu_ratio * c.cpu_limit_cores * dt;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simpod::SimContainer;

    /// Prometheus' `histogram_quantile` (linear interpolation, lower bound 0 for the first bucket).
    fn quantile(q: f64, shares: &[f64; N_BUCKETS]) -> f64 {
        let total: f64 = shares.iter().sum();
        let rank = q * total;
        let mut cumulative = 0.0;
        for (i, s) in shares.iter().enumerate() {
            if cumulative + s >= rank - 1e-12 {
                if i == N_BUCKETS - 1 {
                    return BUCKETS[BUCKETS.len() - 1];
                }
                let lower = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
                return lower + (BUCKETS[i] - lower) * (rank - cumulative) / s;
            }
            cumulative += s;
        }
        unreachable!()
    }

    #[test]
    fn p95_comes_out_at_the_latency() {
        for ms in [
            5.0, 8.0, 40.0, 48.0, 50.0, 120.0, 310.0, 900.0, 1000.0, 2000.0, 4900.0, 9999.0,
        ] {
            let shares = bucket_shares(ms / 1000.0);
            assert!(
                (shares.iter().sum::<f64>() - 1.0).abs() < 1e-9,
                "{ms}: shares sum to 1"
            );
            let p95 = quantile(0.95, &shares) * 1000.0;
            assert!((p95 - ms).abs() < 1e-6, "{ms} ms gave p95 {p95}");
        }
        // Beyond the last bucket Prometheus reports the last finite bound.
        assert_eq!(quantile(0.95, &bucket_shares(30.0)), 10.0);
    }

    #[test]
    fn label_names() {
        assert_eq!(label_name("app"), "app");
        assert_eq!(
            label_name("app.kubernetes.io/name"),
            "app_kubernetes_io_name"
        );
        assert_eq!(label_name("1x"), "_1x");
    }

    fn pod(uid: &str) -> SimPod {
        SimPod {
            namespace: "shop".into(),
            name: format!("web-abc-{uid}"),
            uid: uid.into(),
            app: "web".into(),
            deployment: Some("web".into()),
            ip: Some("127.0.1.2".parse().unwrap()),
            ready: true,
            containers: vec![SimContainer {
                name: "app".into(),
                image: "demo:v1".into(),
                ports: vec![],
                memory_limit_bytes: 1000.0,
                cpu_limit_cores: 2.0,
            }],
            annotations: Default::default(),
        }
    }

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn counters_advance_at_rates_and_vanish_with_pods() {
        let mut m = Metrics::default();
        let fault = Resolved {
            error_rate: 0.25,
            rps: 20.0,
            ..Default::default()
        };
        m.update(vec![(pod("a"), fault.clone())], 1.0); // first sight: starts at zero
        m.update(vec![(pod("a"), fault.clone())], 2.0);
        let text = m.render("app");
        let l = r#"namespace="shop",app="web",pod="web-abc-a""#;
        assert_eq!(
            value(&text, &format!("http_requests_total{{{l},code=\"200\"}}")),
            30.0
        );
        assert_eq!(
            value(&text, &format!("http_requests_total{{{l},code=\"500\"}}")),
            10.0
        );
        assert_eq!(
            value(
                &text,
                &format!("http_request_duration_seconds_count{{{l}}}")
            ),
            40.0
        );
        assert!(
            (value(
                &text,
                &format!("http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}}")
            ) - 40.0)
                .abs()
                < 1e-9
        );
        assert!(
            (value(&text, &format!("http_request_duration_seconds_sum{{{l}}}")) - 40.0 * 0.04)
                .abs()
                < 1e-9
        );
        let c = r#"namespace="shop",pod="web-abc-a",container="app""#;
        assert_eq!(
            value(&text, &format!("container_memory_working_set_bytes{{{c}}}")),
            400.0
        );
        assert!(
            (value(&text, &format!("container_cpu_usage_seconds_total{{{c}}}")) - 1.2).abs() < 1e-9
        );
        assert_eq!(
            value(
                &text,
                &format!(
                    "kube_pod_container_resource_limits{{{c},resource=\"memory\",unit=\"byte\"}}"
                )
            ),
            1000.0
        );
        assert_eq!(
            value(
                &text,
                &format!(
                    "kube_pod_container_resource_limits{{{c},resource=\"cpu\",unit=\"core\"}}"
                )
            ),
            2.0
        );
        assert!(text.contains("# TYPE http_request_duration_seconds histogram"));

        m.update(vec![(pod("b"), fault)], 1.0);
        let text = m.render("app");
        assert!(!text.contains("web-abc-a"));
        assert!(text.contains("web-abc-b"));
    }

    #[test]
    fn unhealthy_pods_fail_every_request() {
        let mut m = Metrics::default();
        let fault = Resolved {
            healthy: false,
            ..Default::default()
        };
        m.update(vec![(pod("a"), fault.clone())], 0.0);
        m.update(vec![(pod("a"), fault)], 1.0);
        let text = m.render("service");
        assert_eq!(
            value(
                &text,
                r#"http_requests_total{namespace="shop",service="web",pod="web-abc-a",code="200"}"#
            ),
            0.0
        );
        assert_eq!(
            value(
                &text,
                r#"http_requests_total{namespace="shop",service="web",pod="web-abc-a",code="500"}"#
            ),
            20.0
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
    }
}
