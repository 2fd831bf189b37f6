//! The operator's own metrics, served on `/metrics` in the OpenMetrics text format.

use std::time::{Duration, Instant};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub level: &'static str,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    pub outcome: &'static str,
}

/// All metrics; cheap to clone (each metric is an Arc inside).
#[derive(Clone)]
pub struct Metrics {
    registry: std::sync::Arc<Registry>,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    pub prometheus_queries: Family<QueryLabels, Counter>,
    pub prometheus_query_duration: Histogram,
    pub policies: Gauge,
    pub alerts: Family<AlertLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("frys_rollback");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration =
            Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
                Histogram::new([0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
            });
        let prometheus_queries = Family::<QueryLabels, Counter>::default();
        let prometheus_query_duration =
            Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        let policies = Gauge::default();
        let alerts = Family::<AlertLabels, Counter>::default();
        registry.register("reconciles", "Reconciliations run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, by error kind",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            reconcile_duration.clone(),
        );
        registry.register(
            "prometheus_queries",
            "Queries sent to Prometheus, by outcome",
            prometheus_queries.clone(),
        );
        registry.register(
            "prometheus_query_duration_seconds",
            "Time Prometheus queries took, failures included",
            prometheus_query_duration.clone(),
        );
        registry.register(
            "policies",
            "RollbackPolicies known to the operator",
            policies.clone(),
        );
        registry.register(
            "alerts",
            "Alerts raised, by level and reason",
            alerts.clone(),
        );
        Self {
            registry: std::sync::Arc::new(registry),
            reconciles,
            reconcile_errors,
            reconcile_duration,
            prometheus_queries,
            prometheus_query_duration,
            policies,
            alerts,
        }
    }
}

impl Metrics {
    /// Counts a reconciliation and times it until the returned guard is dropped.
    pub fn reconcile_started(&self, controller: &'static str) -> ReconcileTimer {
        self.reconciles
            .get_or_create(&ControllerLabels { controller })
            .inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self
                .reconcile_duration
                .get_or_create(&ControllerLabels { controller })
                .clone(),
        }
    }

    pub fn reconcile_failed(&self, controller: &'static str, error: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                controller,
                error: error.to_owned(),
            })
            .inc();
    }

    /// Counts one Prometheus query by outcome (`success` or a `QueryError::outcome`).
    pub fn prometheus_query(&self, outcome: &'static str, took: Duration) {
        self.prometheus_queries
            .get_or_create(&QueryLabels { outcome })
            .inc();
        self.prometheus_query_duration.observe(took.as_secs_f64());
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Observes the reconcile duration when dropped.
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts() {
        let m = Metrics::default();
        drop(m.reconcile_started("policy"));
        m.reconcile_failed("policy", "Kube");
        let text = m.render();
        assert!(
            text.contains("frys_rollback_reconciles_total{controller=\"policy\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "frys_rollback_reconcile_errors_total{controller=\"policy\",error=\"Kube\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "frys_rollback_reconcile_duration_seconds_count{controller=\"policy\"} 1"
            ),
            "{text}"
        );
    }
}
