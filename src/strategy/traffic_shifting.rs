//! `TrafficShifting`: on one route rule, move weight from `from` to `to`, leaving
//! `remainingPercent` (default 0) of the rule's total weight on `from`.

use serde_json::Value;

use super::{
    Error, Objects, Plan, Probes, Reference, Restore, Rollout, Step, Strategy, Traffic,
    route::{self, Backend},
};
use crate::api::{BackendRef, StrategyKind, TrafficShiftingSpec};

impl Strategy for TrafficShiftingSpec {
    /// The route object.
    type Observed = Value;

    const RESTORE: Restore = Restore::TRAFFIC;

    fn kind(&self) -> StrategyKind {
        StrategyKind::TrafficShifting
    }

    fn references(&self) -> Vec<Reference> {
        Reference::route(&self.route).into_iter().collect()
    }

    fn probes(&self) -> Probes {
        Probes {
            serving: Ok(Some(self.to.clone())),
            rollout: Rollout::None,
            traffic: Traffic::Route(self.route.clone()),
            ..Probes::default()
        }
    }

    async fn observe(&self, objects: &impl Objects, _target: &str) -> Result<Value, Error> {
        route::read(objects, &self.route).await
    }

    fn plan(&self, _target: &str, route_obj: &Value) -> Result<Plan, Error> {
        let located = route::locate(&self.route, route_obj)?;
        let named = |name| Backend { name, port: None };
        for name in [&self.from, &self.to] {
            located.require(named(name))?;
        }
        // Shifting keeps the total, so the share left on `from` is stable across re-plans.
        let total = route::total_weight(located.router, &located.rule.backends);
        let keep = total * u64::from(self.remaining_percent.unwrap_or(0).min(100)) / 100;
        let to = BackendRef {
            name: self.to.clone(),
            port: None,
        };
        let Some(new) = located.move_weight(named(&self.from), keep, Some(&to)) else {
            return Ok(Plan::already_applied(
                self.kind(),
                format!(
                    "{} keeps at most {keep} of {total} on rule {}",
                    self.from,
                    located.rule.label()
                ),
            ));
        };
        let change = located.change("traffic shifted", new);
        Ok(Plan::new(self.kind(), vec![Step::Change(change)]))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fixtures::apply_json_patches as apply;
    use crate::strategy::plan_undo;

    fn spec(v: Value) -> TrafficShiftingSpec {
        serde_json::from_value(v).unwrap()
    }

    fn vs() -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"http": [
                {"name": "admin", "route": [{"destination": {"host": "admin"}}]},
                {"name": "main", "route": [
                    {"destination": {"host": "web-canary"}, "weight": 40, "headers": {"x": 1}},
                    {"destination": {"host": "web-stable"}, "weight": 60}
                ]}
            ]}
        })
    }

    #[test]
    fn moves_all_weight_by_default_and_keeps_other_fields() {
        let ts = spec(json!({
            "virtualService": "web", "ruleName": "main", "from": "web-canary", "to": "web-stable"
        }));
        let plan = ts.plan("web", &vs()).unwrap();
        let after = apply(&plan, &vs());
        assert_eq!(
            after["spec"]["http"][1]["route"],
            json!([
                {"destination": {"host": "web-canary"}, "weight": 0, "headers": {"x": 1}},
                {"destination": {"host": "web-stable"}, "weight": 100}
            ])
        );
        assert!(
            plan.summary.contains("web-canary 40→0, web-stable 60→100"),
            "{}",
            plan.summary
        );
        assert!(ts.plan("web", &after).unwrap().is_noop(), "idempotent");

        let undo = plan_undo(&plan.actions()[0], &after, false)
            .unwrap()
            .unwrap();
        let restored = apply(
            &Plan::new(StrategyKind::TrafficShifting, vec![Step::Change(undo)]),
            &after,
        );
        assert_eq!(restored, vs());
    }

    #[test]
    fn leaves_the_remaining_percent_of_the_total() {
        let ts = spec(json!({
            "virtualService": "web", "ruleIndex": 1, "from": "web-canary", "to": "web-stable",
            "remainingPercent": 10
        }));
        let after = apply(&ts.plan("web", &vs()).unwrap(), &vs());
        assert_eq!(after["spec"]["http"][1]["route"][0]["weight"], 10);
        assert_eq!(after["spec"]["http"][1]["route"][1]["weight"], 90);
        assert!(ts.plan("web", &after).unwrap().is_noop());

        // `from` already below the remaining share: nothing to move.
        let ts = spec(json!({
            "virtualService": "web", "ruleIndex": 1, "from": "web-canary", "to": "web-stable",
            "remainingPercent": 50
        }));
        assert!(ts.plan("web", &vs()).unwrap().is_noop());
    }

    #[test]
    fn both_backends_must_exist_on_the_rule() {
        for (from, to) in [("ghost", "web-stable"), ("web-canary", "ghost")] {
            let ts =
                spec(json!({"virtualService": "web", "ruleName": "main", "from": from, "to": to}));
            let err = ts.plan("web", &vs()).unwrap_err();
            assert!(
                matches!(&err, Error::BackendNotFound { backend, .. } if backend == "ghost"),
                "{err}"
            );
        }
        let ts = spec(json!({"virtualService": "web", "ruleName": "nope", "from": "a", "to": "b"}));
        assert!(matches!(
            ts.plan("web", &vs()),
            Err(Error::RuleNotFound { .. })
        ));
    }
}
