//! `CircuitBreaker`: on one route rule, send the target backend's weight to the fallback backend
//! (added to the rule when absent), or drop it to zero when there is no fallback.
//!
//! The breaker stays open for `openDuration`; then the caller half-opens it ([`super::half_open`]:
//! the recorded weights come back), re-checks health, and re-opens (plan again) or escalates.

use std::time::Duration;

use serde_json::Value;

use super::{
    Error, Objects, Plan, Probes, Reference, Restore, Rollout, Step, Strategy, Traffic,
    route::{self, Backend},
};
use crate::api::{CircuitBreakerSpec, StrategyKind};

/// How long the breaker stays open when the rung does not say.
pub const DEFAULT_OPEN_DURATION: Duration = Duration::from_secs(60);

/// The rung's `openDuration`, or the default.
pub fn open_duration(spec: &CircuitBreakerSpec) -> Result<Duration, Error> {
    spec.open_duration
        .as_ref()
        .map_or(Ok(DEFAULT_OPEN_DURATION), |d| {
            d.get().map_err(|e| Error::InvalidSpec(e.to_string()))
        })
}

impl Strategy for CircuitBreakerSpec {
    /// The route object.
    type Observed = Value;

    const RESTORE: Restore = Restore {
        half_open: Some(DEFAULT_OPEN_DURATION),
        ..Restore::TRAFFIC
    };

    fn kind(&self) -> StrategyKind {
        StrategyKind::CircuitBreaker
    }

    fn references(&self) -> Vec<Reference> {
        Reference::route(&self.route).into_iter().collect()
    }

    fn probes(&self) -> Probes {
        Probes {
            serving: match &self.fallback_backend {
                Some(b) => Ok(Some(b.name.clone())),
                None => {
                    Err("the open breaker sends the traffic nowhere (no fallbackBackend)".into())
                }
            },
            rollout: Rollout::None,
            traffic: Traffic::Route(self.route.clone()),
            ..Probes::default()
        }
    }

    fn half_open_after(&self) -> Option<Duration> {
        Some(open_duration(self).unwrap_or(DEFAULT_OPEN_DURATION))
    }

    async fn observe(&self, objects: &impl Objects, _target: &str) -> Result<Value, Error> {
        route::read(objects, &self.route).await
    }

    fn plan(&self, target: &str, route_obj: &Value) -> Result<Plan, Error> {
        let located = route::locate(&self.route, route_obj)?;
        let backend = Backend {
            name: self.backend.as_deref().unwrap_or(target),
            port: None,
        };
        located.require(backend)?;
        let Some(new) = located.move_weight(backend, 0, self.fallback_backend.as_ref()) else {
            return Ok(Plan::already_applied(
                self.kind(),
                format!(
                    "{} has no weight on rule {}",
                    backend.name,
                    located.rule.label()
                ),
            ));
        };
        let change = located.change("circuit open", new);
        Ok(Plan::new(self.kind(), vec![Step::Change(change)]))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fixtures::apply_json_patches as apply;
    use crate::strategy::{Record, plan_undo};

    fn spec(v: Value) -> CircuitBreakerSpec {
        serde_json::from_value(v).unwrap()
    }

    fn httproute() -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"rules": [
                {"name": "api", "backendRefs": [{"name": "api", "port": 80}]},
                {"name": "main", "backendRefs": [
                    {"name": "web", "port": 80, "weight": 90},
                    {"name": "web-maintenance", "port": 80, "weight": 10}
                ]}
            ]}
        })
    }

    #[test]
    fn sends_the_weight_to_an_existing_fallback_on_a_named_rule() {
        let cb = spec(json!({
            "httpRoute": "web", "ruleName": "main",
            "fallbackBackend": {"name": "web-maintenance", "port": 80}
        }));
        let plan = cb.plan("web", &httproute()).unwrap();
        let after = apply(&plan, &httproute());
        assert_eq!(
            after["spec"]["rules"][1]["backendRefs"],
            json!([
                {"name": "web", "port": 80, "weight": 0},
                {"name": "web-maintenance", "port": 80, "weight": 100}
            ])
        );
        assert_eq!(after["spec"]["rules"][0], httproute()["spec"]["rules"][0]);
        let action = &plan.actions()[0];
        assert_eq!(
            (action.kind.as_str(), action.name.as_str()),
            ("HTTPRoute", "web")
        );
        assert!(action.summary.contains("web 90→0"), "{}", action.summary);
        let Record::RouteBackends { backends, .. } = Record::of(action).unwrap() else {
            panic!()
        };
        assert_eq!(
            backends,
            httproute()["spec"]["rules"][1]["backendRefs"]
                .as_array()
                .unwrap()
                .clone()
        );

        // Idempotent: planning again on the result changes nothing.
        let again = cb.plan("web", &after).unwrap();
        assert!(again.is_noop(), "{again:?}");
        assert!(again.summary.starts_with("already applied"));

        // Half-open (undo of the record) restores the weights exactly.
        let undo = plan_undo(action, &after, false).unwrap().unwrap();
        let restored = apply(
            &Plan::new(StrategyKind::CircuitBreaker, vec![Step::Change(undo)]),
            &after,
        );
        assert_eq!(restored, httproute());
    }

    #[test]
    fn adds_a_missing_fallback_by_index_and_targets_the_backend_named_like_the_target() {
        let cb = spec(json!({
            "httpRoute": "web",
            "fallbackBackend": {"name": "sorry", "port": 8080}
        }));
        let plan = cb.plan("api", &httproute()).unwrap();
        let after = apply(&plan, &httproute());
        assert_eq!(
            after["spec"]["rules"][0]["backendRefs"],
            json!([
                {"name": "api", "port": 80, "weight": 0},
                {"name": "sorry", "port": 8080, "weight": 1}
            ])
        );
        assert!(cb.plan("api", &after).unwrap().is_noop());
    }

    #[test]
    fn without_fallback_the_weight_goes_to_zero_on_a_virtual_service() {
        let vs = json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"http": [{"route": [
                {"destination": {"host": "web.shop.svc.cluster.local", "port": {"number": 80}}}
            ]}]}
        });
        let cb = spec(json!({"virtualService": "web", "backend": "web"}));
        let plan = cb.plan("ignored", &vs).unwrap();
        let after = apply(&plan, &vs);
        assert_eq!(after["spec"]["http"][0]["route"][0]["weight"], 0);
        assert!(cb.plan("ignored", &after).unwrap().is_noop());
    }

    #[test]
    fn missing_rules_and_backends_are_named() {
        let cb = spec(json!({"httpRoute": "web", "ruleIndex": 5}));
        assert!(matches!(
            cb.plan("web", &httproute()),
            Err(Error::RuleNotFound { .. })
        ));
        let cb = spec(json!({"httpRoute": "web", "ruleName": "main", "backend": "ghost"}));
        let err = cb.plan("web", &httproute()).unwrap_err();
        assert!(matches!(err, Error::BackendNotFound { .. }), "{err}");
        assert!(
            err.to_string().contains("ghost") && err.to_string().contains("main"),
            "{err}"
        );
    }

    #[test]
    fn open_duration_defaults() {
        let cb = spec(json!({"httpRoute": "web"}));
        assert_eq!(open_duration(&cb).unwrap(), DEFAULT_OPEN_DURATION);
        let cb = spec(json!({"httpRoute": "web", "openDuration": "30s"}));
        assert_eq!(open_duration(&cb).unwrap(), Duration::from_secs(30));
    }
}
