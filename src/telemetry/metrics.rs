//! The operator's own metrics, served on `/metrics` in the OpenMetrics text format.

use std::time::{Duration, Instant};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// The namespace of the policies a delivery metric is about (`policy_namespace`: Prometheus'
/// scrape target labels take `namespace`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    pub policy_namespace: String,
}

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabels {
    /// Healthy, Warning, Critical, Unhealthy, or Unknown (not evaluated yet).
    pub status: &'static str,
}

/// Not `namespace`: Prometheus' scrape target labels take that name (the operator's own).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy_namespace: String,
    pub policy: String,
}

fn policy_labels(policy: &crate::api::RollbackPolicy) -> PolicyLabels {
    PolicyLabels {
        policy_namespace: policy.metadata.namespace.clone().unwrap_or_default(),
        policy: policy.metadata.name.clone().unwrap_or_default(),
    }
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
    pub policies_by_health: Family<HealthLabels, Gauge>,
    pub failed_incidents: Gauge,
    pub last_evaluation: Family<PolicyLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The `last_evaluation` series set, so those of policies that went can be removed.
    evaluated_series: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<PolicyLabels>>>,
    pub changes: Family<NamespaceLabels, Counter>,
    pub change_failures: Family<NamespaceLabels, Counter>,
    pub time_to_restore: Family<NamespaceLabels, Histogram>,
    delivery: std::sync::Arc<std::sync::Mutex<super::delivery::Delivery>>,
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
        let policies_by_health = Family::<HealthLabels, Gauge>::default();
        let failed_incidents = Gauge::default();
        let last_evaluation = Family::default();
        let changes = Family::<NamespaceLabels, Counter>::default();
        let change_failures = Family::<NamespaceLabels, Counter>::default();
        let time_to_restore = Family::<NamespaceLabels, Histogram>::new_with_constructor(|| {
            // 30 s to a day.
            Histogram::new([
                30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 10800.0, 86400.0,
            ])
        });
        registry.register(
            "changes",
            "Releases of protected targets (a new ReplicaSet of the target created while this replica leads), by policy namespace",
            changes.clone(),
        );
        registry.register(
            "change_failures",
            "Releases that needed a remediation (a verified VersionRollback of that release), by policy namespace; over changes_total this is the change failure rate",
            change_failures.clone(),
        );
        registry.register(
            "time_to_restore_seconds",
            "Time from a bad release to its verified remediation (VersionRollback Succeeded), by policy namespace",
            time_to_restore.clone(),
        );
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
        registry.register(
            "policies_by_health",
            "RollbackPolicies by the status of their latest assessment",
            policies_by_health.clone(),
        );
        registry.register(
            "failed_incidents",
            "Policies whose incident failed: automatic action holds until healthy or acknowledged",
            failed_incidents.clone(),
        );
        registry.register(
            "last_evaluation_timestamp_seconds",
            "When each policy's latest assessment was made (Unix time); lag is time() minus this",
            last_evaluation.clone(),
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
            policies_by_health,
            failed_incidents,
            last_evaluation,
            evaluated_series: Default::default(),
            changes,
            change_failures,
            time_to_restore,
            delivery: Default::default(),
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

    /// The policy gauges (`policies`, by health, failed incidents, last evaluation) from the
    /// policies as the operator's cache holds them; stale series of deleted policies go.
    pub fn record_policies(&self, policies: &[std::sync::Arc<crate::api::RollbackPolicy>]) {
        use crate::api::HealthStatus;
        self.policies.set(policies.len() as i64);
        self.policies_by_health.clear();
        // Every status present (0 included), so a dashboard's stack does not lose a colour.
        for status in HealthStatus::ALL
            .iter()
            .map(|s| s.as_str())
            .chain(["Unknown"])
        {
            self.policies_by_health
                .get_or_create(&HealthLabels { status })
                .set(0);
        }
        let mut failed = 0;
        for policy in policies {
            let status = policy.status.as_ref();
            let health = status.and_then(|s| s.health.as_ref());
            let label = health.map_or("Unknown", |h| h.status.as_str());
            self.policies_by_health
                .get_or_create(&HealthLabels { status: label })
                .inc();
            if status
                .and_then(|s| s.incident.as_ref())
                .is_some_and(|i| i.failed)
            {
                failed += 1;
            }
        }
        self.failed_incidents.set(failed);
        // Freshness series of policies that went, or that are suspended (not evaluated on
        // purpose: no lag to report).
        let live: std::collections::HashSet<PolicyLabels> = policies
            .iter()
            .filter(|p| !p.spec.suspend)
            .map(|p| policy_labels(p))
            .collect();
        let mut known = self.evaluated_series.lock().expect("lock");
        for labels in known.difference(&live) {
            self.last_evaluation.remove(labels);
        }
        known.retain(|l| live.contains(l));
    }

    /// A policy was evaluated at `at`: its freshness (status `evaluatedAt` is refreshed only
    /// on news, see `decide::news`, so this gauge is the exact age).
    pub fn evaluated(&self, policy: &crate::api::RollbackPolicy, at: jiff::Timestamp) {
        let seconds = at.as_millisecond() as f64 / 1000.0;
        let labels = policy_labels(policy);
        self.last_evaluation.get_or_create(&labels).set(seconds);
        self.evaluated_series.lock().expect("lock").insert(labels);
    }

    /// A ReplicaSet of a protected target in `namespace` (see `delivery`): counts a change the
    /// first time one created while leading is seen.
    pub fn release_seen(&self, namespace: &str, uid: &str, created: jiff::Timestamp) {
        let now = jiff::Timestamp::now();
        if self
            .delivery
            .lock()
            .expect("lock")
            .release(uid, created, now)
        {
            self.changes
                .get_or_create(&NamespaceLabels {
                    policy_namespace: namespace.to_owned(),
                })
                .inc();
        }
    }

    /// A succeeded VersionRollback (by event uid) of a release created at `released`: counts
    /// a change failure and its time to restore, once.
    pub fn restore_seen(
        &self,
        namespace: &str,
        event_uid: &str,
        completed: jiff::Timestamp,
        released: Option<jiff::Timestamp>,
    ) {
        let now = jiff::Timestamp::now();
        let counted = self
            .delivery
            .lock()
            .expect("lock")
            .restore(event_uid, completed, released, now);
        let labels = NamespaceLabels {
            policy_namespace: namespace.to_owned(),
        };
        if let Some(seconds) = counted {
            self.change_failures.get_or_create(&labels).inc();
            if let Some(s) = seconds {
                self.time_to_restore.get_or_create(&labels).observe(s);
            }
        }
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

    #[test]
    fn policy_gauges() {
        let policy = |name: &str, status: serde_json::Value| {
            std::sync::Arc::new(
                serde_json::from_value::<crate::api::RollbackPolicy>(serde_json::json!({
                    "apiVersion": "rollback.frys.io/v1alpha1", "kind": "RollbackPolicy",
                    "metadata": {"name": name, "namespace": "shop"},
                    "spec": {"targetRef": {"name": name}, "metrics": [{"name": "e", "preset": "errorRate"}],
                             "strategies": [{"type": "VersionRollback"}]},
                    "status": status,
                }))
                .unwrap(),
            )
        };
        let m = Metrics::default();
        let web = policy(
            "web",
            serde_json::json!({"health": {"status": "Critical", "score": 20.0, "evaluatedAt": "2026-01-01T00:00:01.5Z"},
                               "incident": {"class": "Release", "startedAt": "2026-01-01T00:00:00Z", "attempts": 1, "failed": true}}),
        );
        m.record_policies(&[web.clone(), policy("api", serde_json::json!({}))]);
        // Freshness comes from the evaluations themselves (status is refreshed only on news).
        m.evaluated(&web, "2026-01-01T00:00:01.5Z".parse().unwrap());
        let text = m.render();
        for line in [
            "frys_rollback_policies 2",
            "frys_rollback_policies_by_health{status=\"Critical\"} 1",
            "frys_rollback_policies_by_health{status=\"Unknown\"} 1",
            "frys_rollback_policies_by_health{status=\"Healthy\"} 0",
            "frys_rollback_failed_incidents 1",
            "frys_rollback_last_evaluation_timestamp_seconds{policy_namespace=\"shop\",policy=\"web\"} 1767225601.5",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        // A deleted policy's series go.
        m.record_policies(&[]);
        let text = m.render();
        assert!(!text.contains("policy=\"web\""), "{text}");
        assert!(text.contains("frys_rollback_failed_incidents 0"), "{text}");
    }
}
