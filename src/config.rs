//! Operator-wide configuration: flags and the seed's environment variables, and the pure
//! resolution of a policy's settings against them (`status.effective`).

use std::time::Duration;

use clap::Args;

use crate::api::{
    self, Direction, EffectiveMetric, EffectiveSettings, IncidentClass, MetricSpec, Preset,
    RollbackPolicySpec, Unit, duration,
};

/// Accepts a Kubernetes duration (`30s`) or, as the seed's variables use, plain milliseconds.
pub fn parse_duration_arg(value: &str) -> Result<Duration, String> {
    if let Ok(ms) = value.trim().parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    duration::parse(value.trim()).map_err(|e| e.to_string())
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Defaults that apply to every policy unless it says otherwise, and operator behaviour.
#[derive(Clone, Debug, Args)]
pub struct OperatorConfig {
    /// Default Prometheus base URL for policies without spec.prometheus.
    #[arg(long, env = "METRICS_URL")]
    pub prometheus_url: Option<String>,

    /// A URL prefix that a policy's own spec.prometheus.url may start with (repeatable, or
    /// comma-separated in the variable); `*` allows any URL. None by default: policies use the
    /// default Prometheus (--prometheus-url) only.
    #[arg(
        long = "allow-prometheus-url",
        env = "FRYS_ALLOW_PROMETHEUS_URLS",
        value_delimiter = ','
    )]
    pub allow_prometheus_urls: Vec<String>,

    /// URL prefix a verification probe may reach although the address is not a pod of the
    /// policy's namespace behind the probed Service (repeatable, or comma-separated in the
    /// variable); `*` allows any address. Matched against `http://<address>:<port><path>` and
    /// `http://<service>.<namespace>.svc:<port><path>`. Link-local and metadata addresses stay
    /// refused whatever this says.
    #[arg(
        long = "allow-probe-url",
        env = "FRYS_ALLOW_PROBE_URLS",
        value_delimiter = ','
    )]
    pub allow_probe_urls: Vec<String>,

    /// Secret holding the key that signs the events' recorded actions (created with a random
    /// key when missing). Undo applies only actions signed with it.
    #[arg(
        long,
        env = "FRYS_UNDO_KEY_SECRET",
        default_value = "frys-rollback-undo-key"
    )]
    pub undo_key_secret: String,

    /// Namespace of that Secret. Default: the operator's own (POD_NAMESPACE, else the service
    /// account's namespace, else `default`).
    #[arg(long, env = "FRYS_UNDO_KEY_NAMESPACE")]
    pub undo_key_namespace: Option<String>,

    /// Default evaluation interval (duration or milliseconds).
    #[arg(long, env = "HEALTH_CHECK_INTERVAL", default_value = "30s", value_parser = parse_duration_arg)]
    pub interval: Duration,

    /// Default rate() window of presets.
    #[arg(long, env = "FRYS_RATE_WINDOW", default_value = "2m", value_parser = parse_duration_arg)]
    pub rate_window: Duration,

    /// Default release window: a degradation this soon after a new revision is a Release incident.
    #[arg(long, env = "FRYS_RELEASE_WINDOW", default_value = "30m", value_parser = parse_duration_arg)]
    pub release_window: Duration,

    /// Remediate automatically unless a policy sets autoRollback.
    #[arg(long, env = "ROLLBACK_AUTO_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_rollback: bool,

    /// Default bound on applying one remediation step.
    #[arg(long, env = "ROLLBACK_TIMEOUT", default_value = "5m", value_parser = parse_duration_arg)]
    pub rollback_timeout: Duration,

    /// Default minimum time between two automatic remediations of one target.
    #[arg(long, env = "FRYS_COOLDOWN", default_value = "5m", value_parser = parse_duration_arg)]
    pub cooldown: Duration,

    /// Default bound on verifying one step.
    #[arg(long, env = "FRYS_VERIFICATION_TIMEOUT", default_value = "5m", value_parser = parse_duration_arg)]
    pub verification_timeout: Duration,

    /// Default wait after a step before verification.
    #[arg(long, env = "FRYS_STABILIZATION_DELAY", default_value = "30s", value_parser = parse_duration_arg)]
    pub stabilization_delay: Duration,

    /// Default health endpoint: its port and path become the default verification health check.
    #[arg(long, env = "HEALTH_CHECK_URL")]
    pub health_check_url: Option<String>,

    /// Critical threshold of the responseTime preset, in milliseconds.
    #[arg(long, env = "THRESHOLD_RESPONSE_TIME", default_value_t = 5000.0)]
    pub threshold_response_time: f64,

    /// Critical threshold of the errorRate preset (0-1).
    #[arg(long, env = "THRESHOLD_ERROR_RATE", default_value_t = 0.05)]
    pub threshold_error_rate: f64,

    /// Critical threshold of the memoryUsage preset (0-1).
    #[arg(long, env = "THRESHOLD_MEMORY_USAGE", default_value_t = 0.9)]
    pub threshold_memory_usage: f64,

    /// Critical threshold of the cpuUsage preset (0-1).
    #[arg(long, env = "THRESHOLD_CPU_USAGE", default_value_t = 0.9)]
    pub threshold_cpu_usage: f64,

    /// Label carrying the workload name on request series.
    #[arg(long, env = "FRYS_WORKLOAD_LABEL", default_value = "app")]
    pub workload_label: String,

    /// Verification checks run at once.
    #[arg(long, env = "VERIFICATION_CONCURRENCY", default_value_t = 4)]
    pub verification_concurrency: usize,

    /// Namespace of Argo CD's control plane: where an Application named by a bare app name (in
    /// the target's tracking annotation or instance label) lives.
    #[arg(long, env = "FRYS_ARGOCD_NAMESPACE", default_value = "argocd")]
    pub argocd_namespace: String,

    /// Name of this environment (seed ROLLBACK_ENV): the profile of --profiles-file that
    /// policies inherit from unless their namespace is labelled rollback.frys.io/profile;
    /// added to alerts and logs.
    #[arg(long, env = "ROLLBACK_ENV", default_value = "production")]
    pub environment: String,

    /// YAML file of environment profiles (the chart mounts its ConfigMap there): per profile
    /// the default ladder, interval, thresholds, timeouts and autoRollback of the policies that
    /// leave them out. Re-read when it changes. Without it there are no profiles: policies
    /// name their own strategies.
    #[arg(long, env = "FRYS_PROFILES_FILE")]
    pub profiles_file: Option<std::path::PathBuf>,

    /// Cluster-wide budget of concurrent automatic remediations.
    #[arg(long, env = "FRYS_MAX_CONCURRENT_REMEDIATIONS", default_value_t = 3)]
    pub max_concurrent_remediations: u32,

    /// Policies turning critical within --correlation-window that suggest a common cause: their
    /// automatic version rollbacks are held.
    #[arg(long, env = "FRYS_CORRELATION_MIN_POLICIES", default_value_t = 3)]
    pub correlation_min_policies: usize,

    /// Window of the correlation above.
    #[arg(long, env = "FRYS_CORRELATION_WINDOW", default_value = "2m", value_parser = parse_duration_arg)]
    pub correlation_window: Duration,

    /// Freeze: no automatic remediation anywhere (manual ones still run).
    #[arg(long, env = "FRYS_FREEZE", default_value_t = false, action = clap::ArgAction::Set)]
    pub freeze: bool,

    /// Allow RollbackDrills: they apply real strategies and undo them. They run only in
    /// namespaces labelled rollback.frys.io/drills=enabled, and only with this flag.
    #[arg(long, env = "FRYS_ALLOW_DRILLS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_drills: bool,

    /// Policies reconciled at once by the policy controller (and events by the event
    /// controller, but never fewer than --max-concurrent-remediations, up to 1,024): bounds the
    /// operator's concurrent API work at start-up and in bursts. 0: no bound.
    #[arg(long, env = "FRYS_RECONCILE_CONCURRENCY", default_value_t = 16)]
    pub reconcile_concurrency: u16,

    /// Benchmarks only (BENCHMARKS.md): one Prometheus query per policy per signal, as peers
    /// do, instead of grouped queries. Hidden: it only makes the operator slower.
    #[arg(
        long,
        env = "FRYS_PER_POLICY_QUERIES",
        hide = true,
        default_value_t = false
    )]
    pub per_policy_queries: bool,
}

/// Whether the query planner must not group (`--per-policy-queries`). Process-wide, because
/// the planner is pure and takes no configuration; set once by `run`.
static PER_POLICY_QUERIES: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Sets [`per_policy_queries`] (from `run`, before the controllers start).
pub fn set_per_policy_queries(on: bool) {
    PER_POLICY_QUERIES.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// True when the operator runs with `--per-policy-queries` (benchmarks only).
pub fn per_policy_queries() -> bool {
    PER_POLICY_QUERIES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Warning thresholds of presets default to this share of the critical one (the seed only
/// names critical thresholds; a warning gives people notice before action is taken).
pub const PRESET_WARNING_SHARE: f64 = 0.8;

impl OperatorConfig {
    /// The configuration with every default, as `run` would have without flags or variables.
    pub fn defaults() -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: OperatorConfig,
        }
        <Wrapper as clap::Parser>::try_parse_from(["frys-rollback"])
            .expect("defaults parse")
            .config
    }

    /// Critical threshold the operator uses for a preset.
    pub fn preset_critical(&self, preset: Preset) -> f64 {
        match preset {
            Preset::ResponseTime => self.threshold_response_time,
            Preset::ErrorRate => self.threshold_error_rate,
            Preset::MemoryUsage => self.threshold_memory_usage,
            Preset::CpuUsage => self.threshold_cpu_usage,
        }
    }
}

/// A policy's `spec.prometheus.url` that the operator does not allow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "spec.prometheus.url {url:?} is not allowed by the operator (--allow-prometheus-url); remove it to use the default Prometheus"
)]
pub struct UrlNotAllowed {
    pub url: String,
}

impl UrlNotAllowed {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        "PrometheusURLNotAllowed"
    }
}

impl OperatorConfig {
    /// Whether a policy may query its own `spec.prometheus.url`: the operator's default URL,
    /// or one under an `--allow-prometheus-url` prefix.
    pub fn check_prometheus_url(&self, url: &str) -> Result<(), UrlNotAllowed> {
        let allowed = self.prometheus_url.as_deref() == Some(url)
            || self
                .allow_prometheus_urls
                .iter()
                .any(|prefix| url_under_prefix(url, prefix));
        if allowed {
            Ok(())
        } else {
            Err(UrlNotAllowed {
                url: crate::egress::redact_userinfo(url),
            })
        }
    }
}

/// True when `url` is `prefix` or below it. Compared parsed, not as text, so that
/// `http://prom.example` does not admit `http://prom.example.evil.com` or
/// `http://prom.example@evil.com`: same scheme, user info, host and port, and a path equal to
/// the prefix's or below it at a `/`. `*` admits every URL.
pub fn url_under_prefix(url: &str, prefix: &str) -> bool {
    if prefix.trim() == "*" {
        return true;
    }
    let (Ok(url), Ok(prefix)) = (reqwest::Url::parse(url), reqwest::Url::parse(prefix.trim()))
    else {
        return false;
    };
    let base = prefix.path().trim_end_matches('/');
    let path = url.path();
    url.scheme() == prefix.scheme()
        && url.username() == prefix.username()
        && url.password() == prefix.password()
        && url.host() == prefix.host()
        && url.port_or_known_default() == prefix.port_or_known_default()
        && (path.trim_end_matches('/') == base
            || path.strip_prefix(base).is_some_and(|r| r.starts_with('/')))
}

/// Class a preset's breach means.
pub fn preset_class(preset: Preset) -> IncidentClass {
    match preset {
        Preset::ErrorRate => IncidentClass::Errors,
        Preset::ResponseTime | Preset::MemoryUsage | Preset::CpuUsage => IncidentClass::Performance,
    }
}

/// How a preset's values read to people.
pub fn preset_unit(preset: Preset) -> Unit {
    match preset {
        Preset::ResponseTime => Unit::Milliseconds,
        Preset::ErrorRate | Preset::MemoryUsage | Preset::CpuUsage => Unit::Ratio,
    }
}

/// One metric after operator defaults.
pub fn effective_metric(metric: &MetricSpec, config: &OperatorConfig) -> EffectiveMetric {
    // An alert metric reads the number of its firing alerts: any is Critical.
    if let Some(alert) = &metric.alert {
        return EffectiveMetric {
            name: metric.name.clone(),
            warning: None,
            critical: Some(0.0),
            direction: Direction::Above,
            weight: metric.weight.unwrap_or(1.0),
            class: alert.class,
            unit: None,
        };
    }
    let (warning, critical) = match metric.preset {
        Some(preset) => {
            let critical = metric
                .critical
                .unwrap_or_else(|| config.preset_critical(preset));
            let warning = metric.warning.unwrap_or(critical * PRESET_WARNING_SHARE);
            (Some(warning), Some(critical))
        }
        None => (metric.warning, metric.critical),
    };
    EffectiveMetric {
        name: metric.name.clone(),
        warning,
        critical,
        direction: metric.direction.unwrap_or_default(),
        weight: metric.weight.unwrap_or(1.0),
        class: metric
            .class
            .or(metric.preset.map(preset_class))
            .unwrap_or(IncidentClass::Performance),
        unit: metric.preset.map(preset_unit),
    }
}

/// The settings in force for a policy: its own values, else the operator's.
pub fn effective(spec: &RollbackPolicySpec, config: &OperatorConfig) -> EffectiveSettings {
    let pick = |own: &Option<api::Duration>, default: Duration| {
        Some(own.clone().unwrap_or_else(|| default.into()))
    };
    let verification = spec.verification.clone().unwrap_or_default();
    EffectiveSettings {
        // Set by the profile resolution (`profile::resolve`), which knows where they came from.
        profile: None,
        inherited: vec![],
        // Status is readable by everyone who can read the policy: no credentials in URLs.
        prometheus_url: spec
            .prometheus
            .as_ref()
            .map(|p| p.url.as_str())
            .or(config.prometheus_url.as_deref())
            .map(crate::egress::redact_userinfo),
        interval: pick(&spec.interval, config.interval),
        rate_window: pick(&spec.rate_window, config.rate_window),
        workload_label: Some(
            spec.workload_label
                .clone()
                .unwrap_or_else(|| config.workload_label.clone()),
        ),
        release_window: pick(&spec.release_window, config.release_window),
        auto_rollback: Some(spec.auto_rollback.unwrap_or(config.auto_rollback)),
        rollback_timeout: pick(&spec.rollback_timeout, config.rollback_timeout),
        cooldown: pick(&spec.cooldown, config.cooldown),
        verification_timeout: pick(&verification.timeout, config.verification_timeout),
        stabilization_delay: pick(
            &verification.stabilization_delay,
            config.stabilization_delay,
        ),
        metrics: spec
            .metrics
            .iter()
            .map(|m| effective_metric(m, config))
            .collect(),
    }
}

impl Direction {
    /// True when `value` is beyond `threshold` on the bad side.
    pub fn breaches(self, value: f64, threshold: f64) -> bool {
        match self {
            Direction::Above => value > threshold,
            Direction::Below => value < threshold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_millisecond_variables_are_accepted() {
        assert_eq!(
            parse_duration_arg("30000").unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(parse_duration_arg("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration_arg("soon").unwrap_err().contains("soon"));
    }

    /// No URL is omitted from status, never null (the CRD schema refuses null).
    #[test]
    fn effective_settings_without_a_prometheus_url_omit_it() {
        let json = serde_json::to_value(api::EffectiveSettings::default()).unwrap();
        assert!(json.get("prometheusUrl").is_none(), "{json}");
    }

    #[test]
    fn defaults_follow_the_seed() {
        let c = OperatorConfig::defaults();
        assert_eq!(c.interval, Duration::from_secs(30));
        assert_eq!(c.rollback_timeout, Duration::from_secs(300));
        assert_eq!(c.preset_critical(Preset::ErrorRate), 0.05);
        assert_eq!(c.preset_critical(Preset::ResponseTime), 5000.0);
        assert!(c.auto_rollback);
    }

    fn metric(preset: Option<Preset>, warning: Option<f64>, critical: Option<f64>) -> MetricSpec {
        MetricSpec {
            name: "m".into(),
            preset,
            query: preset.is_none().then(|| "up".into()),
            alert: None,
            warning,
            critical,
            direction: None,
            weight: None,
            class: None,
            baseline: None,
        }
    }

    #[test]
    fn preset_thresholds_default_from_operator() {
        let c = OperatorConfig::defaults();
        let m = effective_metric(&metric(Some(Preset::ErrorRate), None, None), &c);
        assert_eq!(m.critical, Some(0.05));
        assert!((m.warning.unwrap() - 0.04).abs() < 1e-12);
        assert_eq!(m.class, IncidentClass::Errors);
        let m = effective_metric(&metric(Some(Preset::ResponseTime), None, Some(800.0)), &c);
        assert_eq!(m.critical, Some(800.0));
        assert_eq!(m.class, IncidentClass::Performance);
        let m = effective_metric(&metric(Some(Preset::ErrorRate), Some(0.1), Some(0.2)), &c);
        assert_eq!((m.warning, m.critical), (Some(0.1), Some(0.2)));
    }

    #[test]
    fn policy_urls_are_refused_unless_allowed() {
        let mut c = OperatorConfig::defaults();
        c.prometheus_url = Some("http://prometheus.monitoring:9090".into());
        assert_eq!(
            c.check_prometheus_url("http://prometheus.monitoring:9090"),
            Ok(())
        );
        let err = c.check_prometheus_url("http://evil:9090").unwrap_err();
        assert_eq!(err.reason(), "PrometheusURLNotAllowed");
        assert!(err.to_string().contains("--allow-prometheus-url"), "{err}");

        c.allow_prometheus_urls = vec!["https://thanos.example/tenant-a".into()];
        for allowed in [
            "https://thanos.example/tenant-a",
            "https://thanos.example/tenant-a/",
            "https://thanos.example:443/tenant-a/prometheus",
            "https://THANOS.example/tenant-a",
        ] {
            assert_eq!(c.check_prometheus_url(allowed), Ok(()), "{allowed}");
        }
        for refused in [
            "https://thanos.example/tenant-ab",
            "https://thanos.example/tenant-b",
            "http://thanos.example/tenant-a",
            "https://thanos.example.evil.com/tenant-a",
            "https://thanos.example@evil.com/tenant-a",
            "https://user:pw@thanos.example/tenant-a",
            "https://thanos.example:8443/tenant-a",
            "not a url",
        ] {
            assert!(
                c.check_prometheus_url(refused).is_err(),
                "{refused} allowed"
            );
        }
        c.allow_prometheus_urls = vec!["*".into()];
        assert_eq!(c.check_prometheus_url("http://anything:1"), Ok(()));
    }

    #[test]
    fn credentials_of_the_default_url_stay_out_of_status() {
        let mut c = OperatorConfig::defaults();
        c.prometheus_url = Some("http://frys:s3cret@prometheus:9090".into());
        let spec: RollbackPolicySpec = serde_json::from_value(serde_json::json!({
            "targetRef": {"name": "web"},
            "metrics": [{"name": "errors", "preset": "errorRate"}],
            "strategies": [{"type": "VersionRollback"}]
        }))
        .unwrap();
        assert_eq!(
            effective(&spec, &c).prometheus_url.as_deref(),
            Some("http://prometheus:9090/")
        );
    }

    #[test]
    fn custom_queries_default_to_performance_weight_one() {
        let m = effective_metric(&metric(None, None, Some(2.0)), &OperatorConfig::defaults());
        assert_eq!(
            (m.class, m.weight, m.warning),
            (IncidentClass::Performance, 1.0, None)
        );
    }
}
