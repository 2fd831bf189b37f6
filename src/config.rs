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

    /// Name of this environment (seed ROLLBACK_ENV), added to alerts and logs.
    #[arg(long, env = "ROLLBACK_ENV", default_value = "production")]
    pub environment: String,

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
        prometheus_url: spec
            .prometheus
            .as_ref()
            .map(|p| p.url.clone())
            .or_else(|| config.prometheus_url.clone()),
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
            warning,
            critical,
            direction: None,
            weight: None,
            class: None,
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
    fn custom_queries_default_to_performance_weight_one() {
        let m = effective_metric(&metric(None, None, Some(2.0)), &OperatorConfig::defaults());
        assert_eq!(
            (m.class, m.weight, m.warning),
            (IncidentClass::Performance, 1.0, None)
        );
    }
}
