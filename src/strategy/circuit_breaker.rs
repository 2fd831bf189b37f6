//! `CircuitBreaker`: on one route rule, send the target backend's weight to the fallback backend
//! (added to the rule when absent), or drop it to zero when there is no fallback.
//!
//! The breaker stays open for `openDuration`; then the caller half-opens it ([`super::half_open`]:
//! the recorded weights come back), re-checks health, and re-opens (plan again) or escalates.

use std::time::Duration;

use serde_json::Value;

use super::{
    Cluster, Error, Plan, Step, Strategy,
    route::{self, Backend, RuleSelector},
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

    fn kind(&self) -> StrategyKind {
        StrategyKind::CircuitBreaker
    }

    async fn observe(&self, cluster: &Cluster, _target: &str) -> Result<Value, Error> {
        let (router, name) = route::router(&self.route)?;
        cluster.get(router.kind(), name).await
    }

    fn plan(&self, target: &str, route_obj: &Value) -> Result<Plan, Error> {
        let (router, route_name) = route::router(&self.route)?;
        let namespace = super::json::str_at(route_obj, "/metadata/namespace").unwrap_or_default();
        let rule = route::find_rule(router, route_obj, &RuleSelector::of(&self.route))?;
        let backend = Backend {
            name: self.backend.as_deref().unwrap_or(target),
            port: None,
        };
        if route::weight_of(router, &rule.backends, backend, namespace).is_none() {
            return Err(Error::BackendNotFound {
                kind: router.kind().to_string(),
                name: route_name.to_owned(),
                rule: rule.label(),
                backend: backend.name.to_owned(),
            });
        }
        let fallback = self.fallback_backend.as_ref();
        let Some(new) = route::move_weight(router, &rule.backends, backend, 0, fallback, namespace)
        else {
            return Ok(Plan::already_applied(
                self.kind(),
                format!("{} has no weight on rule {}", backend.name, rule.label()),
            ));
        };
        let summary = format!(
            "circuit open on {} {route_name} rule {}: {}",
            router.kind(),
            rule.label(),
            route::describe(router, &rule.backends, &new)
        );
        let change = route::change(router, route_name, &rule, new, summary);
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
