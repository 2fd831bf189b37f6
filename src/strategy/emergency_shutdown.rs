//! `EmergencyShutdown`: optionally cut the target's traffic on a route (weight zero), pin the
//! HPAs that scale the target, and scale it to zero through the scale subresource. Recovery is
//! manual (undo).
//!
//! # HPA pin
//!
//! An HPA (autoscaling/v2) cannot hold a Deployment at zero (minReplicas 0 needs an alpha
//! feature gate), and deleting it would lose its ownership and history and race the GitOps tool
//! that recreates it. Instead:
//! - the HPA's bounds are pinned to `minReplicas: 1, maxReplicas: 1` and it is annotated
//!   `rollback.frys.io/pinned: minReplicas=<m>,maxReplicas=<M>` (the bounds it had, readable
//!   on the object itself), with a JSON Patch guarded by a `test` of its whole `spec`;
//! - the Deployment is scaled to 0. The HPA controller does not scale a target whose replicas
//!   are 0 ("ScalingDisabled"), so the workload stays at zero; if someone scales it up by hand,
//!   the pin holds it at one replica instead of letting the HPA grow it back to full size.
//!
//! Undo scales back to the recorded replicas first, then restores the HPA's exact bounds (an
//! absent minReplicas is removed again) and its annotation, then the route weights.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{
    Change, Error, Kind, Objects, Plan, Probes, Record, Reference, Request, Rollout, Step,
    Strategy, Traffic,
    error::changed,
    json,
    route::{self, Backend},
    scale,
};
use crate::api::{EmergencyShutdownSpec, StrategyKind};

/// Marks an HPA pinned by an emergency shutdown; the value keeps the bounds it had.
pub const PINNED: &str = "rollback.frys.io/pinned";

/// What the emergency shutdown reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub deployment: Value,
    /// The HPAs whose scale target is the Deployment.
    pub hpas: Vec<Value>,
    /// The `cutTraffic` route, when set.
    pub route: Option<Value>,
}

impl Strategy for EmergencyShutdownSpec {
    type Observed = Observed;

    fn kind(&self) -> StrategyKind {
        StrategyKind::EmergencyShutdown
    }

    fn references(&self) -> Vec<Reference> {
        self.cut_traffic
            .iter()
            .filter_map(Reference::route)
            .collect()
    }

    fn probes(&self) -> Probes {
        Probes {
            serving: Err("the workload is shut down on purpose".into()),
            rollout: Rollout::TargetAtZero,
            stopped: true,
            traffic: Traffic::Unchanged,
        }
    }

    async fn observe(&self, objects: &impl Objects, target: &str) -> Result<Observed, Error> {
        let deployment = objects.get(Kind::Deployment, target).await?;
        let hpas = objects
            .list(Kind::HorizontalPodAutoscaler, None)
            .await?
            .into_iter()
            .filter(|h| scales(h, target))
            .collect();
        let route = match &self.cut_traffic {
            Some(r) => Some(route::read(objects, r).await?),
            None => None,
        };
        Ok(Observed {
            deployment,
            hpas,
            route,
        })
    }

    fn plan(&self, target: &str, o: &Observed) -> Result<Plan, Error> {
        let mut steps = vec![];
        // Traffic first, so no request reaches pods that are going away.
        if let (Some(route_ref), Some(route_obj)) = (&self.cut_traffic, &o.route) {
            let located = route::locate(route_ref, route_obj)?;
            let backend = Backend {
                name: self.backend.as_deref().unwrap_or(target),
                port: None,
            };
            located.require(backend)?;
            if let Some(new) = located.move_weight(backend, 0, None) {
                steps.push(Step::Change(located.change("traffic cut", new)));
            }
        }
        for hpa in &o.hpas {
            if let Some(pin) = pin(hpa) {
                steps.push(Step::Change(pin));
            }
        }
        let replicas = json::replicas(&o.deployment);
        if replicas > 0 {
            let summary = format!("Deployment {target} scaled from {replicas} to 0 replicas");
            steps.push(Step::Change(scale::change(&o.deployment, 0, summary)));
        }
        if steps.is_empty() {
            return Ok(Plan::already_applied(
                self.kind(),
                format!("Deployment {target} is at 0 replicas"),
            ));
        }
        Ok(Plan::new(self.kind(), steps))
    }
}

/// Whether an HPA scales Deployment `name`.
fn scales(hpa: &Value, name: &str) -> bool {
    let target = &hpa["spec"]["scaleTargetRef"];
    target["kind"] == "Deployment"
        && target["name"] == name
        && target["apiVersion"]
            .as_str()
            .is_none_or(|v| v.starts_with("apps/"))
}

fn bounds(hpa: &Value) -> (Option<i32>, i32) {
    let get = |p| hpa.pointer(p).and_then(Value::as_i64).map(|v| v as i32);
    (
        get("/spec/minReplicas"),
        get("/spec/maxReplicas").unwrap_or(0),
    )
}

/// Pins an HPA to one replica, unless it already is.
fn pin(hpa: &Value) -> Option<Change> {
    let (min, max) = bounds(hpa);
    let annotation = json::annotation(hpa, PINNED).map(str::to_owned);
    if min == Some(1) && max == 1 && annotation.is_some() {
        return None;
    }
    let was = format!(
        "minReplicas={},maxReplicas={max}",
        min.map_or("unset".to_owned(), |m| m.to_string())
    );
    let name = json::name(hpa);
    let summary = format!("HorizontalPodAutoscaler {name} pinned to 1 replica (was {was})");
    let change = bounds_change(
        hpa,
        Some(1),
        1,
        Some(was),
        Record::HpaPin {
            min_replicas: min,
            max_replicas: max,
            annotation,
            applied_min: 1,
            applied_max: 1,
        },
        summary,
    );
    Some(change)
}

/// Sets an HPA's bounds and pin annotation, guarded by a `test` of its whole spec (which only
/// people and GitOps tools write; the HPA controller writes status).
fn bounds_change(
    hpa: &Value,
    min: Option<i32>,
    max: i32,
    annotation: Option<String>,
    record: Record,
    summary: String,
) -> Change {
    let mut ops = vec![json!({"op": "test", "path": "/spec", "value": hpa["spec"]})];
    match min {
        // "add" sets a member whether or not it exists.
        Some(m) => ops.push(json!({"op": "add", "path": "/spec/minReplicas", "value": m})),
        None if hpa.pointer("/spec/minReplicas").is_some() => {
            ops.push(json!({"op": "remove", "path": "/spec/minReplicas"}))
        }
        None => {}
    }
    ops.push(json!({"op": "add", "path": "/spec/maxReplicas", "value": max}));
    let annotations = BTreeMap::from([(PINNED.to_owned(), annotation)]);
    ops.extend(json::annotation_ops(hpa, &annotations));
    Change::new(
        Kind::HorizontalPodAutoscaler,
        json::name(hpa),
        Request::JsonPatch(json::patch(ops)),
        summary,
        record,
    )
}

/// Plans restoring an HPA's bounds and annotation, unless its bounds changed since the pin.
pub(super) fn plan_undo_pin(
    hpa: &Value,
    min: Option<i32>,
    max: i32,
    annotation: Option<&str>,
    (applied_min, applied_max): (i32, i32),
    force: bool,
) -> Result<Option<Change>, Error> {
    let now = bounds(hpa);
    if now == (min, max) && json::annotation(hpa, PINNED) == annotation {
        return Ok(None);
    }
    if !force && now != (Some(applied_min), applied_max) {
        return Err(changed(
            Kind::HorizontalPodAutoscaler,
            hpa,
            "spec.minReplicas/maxReplicas",
            format!("{applied_min}/{applied_max}"),
            format!(
                "{}/{}",
                now.0.map_or("unset".into(), |m| m.to_string()),
                now.1
            ),
        ));
    }
    let name = json::name(hpa);
    let summary = format!(
        "HorizontalPodAutoscaler {name} unpinned: minReplicas={}, maxReplicas={max}",
        min.map_or("unset".to_owned(), |m| m.to_string())
    );
    let record = Record::HpaPin {
        min_replicas: now.0,
        max_replicas: now.1,
        annotation: json::annotation(hpa, PINNED).map(str::to_owned),
        applied_min: min.unwrap_or(0),
        applied_max: max,
    };
    Ok(Some(bounds_change(
        hpa,
        min,
        max,
        annotation.map(str::to_owned),
        record,
        summary,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::plan_undo;

    fn hpa(min: Option<i32>, target: &str) -> Value {
        let mut spec = json!({
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "maxReplicas": 10
        });
        if let Some(m) = min {
            spec["minReplicas"] = json!(m);
        }
        json!({"metadata": {"name": format!("{target}-hpa")}, "spec": spec})
    }

    fn observed(replicas: i32, hpas: Vec<Value>, route: Option<Value>) -> Observed {
        Observed {
            deployment: json!({
                "metadata": {"name": "web", "resourceVersion": "3"},
                "spec": {"replicas": replicas}
            }),
            hpas,
            route,
        }
    }

    fn apply_json(change: &Change, obj: &Value) -> Value {
        let Request::JsonPatch(p) = &change.request else {
            panic!("JSON patch expected")
        };
        let mut doc = obj.clone();
        json_patch::patch(&mut doc, p).unwrap();
        doc
    }

    #[test]
    fn scales_to_zero_and_pins_the_hpa() {
        let h = hpa(Some(2), "web");
        let plan = EmergencyShutdownSpec::default()
            .plan("web", &observed(4, vec![h.clone()], None))
            .unwrap();
        let changes: Vec<&Change> = plan.changes().collect();
        assert_eq!(changes.len(), 2);
        let pinned = apply_json(changes[0], &h);
        assert_eq!(
            (
                pinned["spec"]["minReplicas"].clone(),
                pinned["spec"]["maxReplicas"].clone()
            ),
            (json!(1), json!(1))
        );
        assert_eq!(
            pinned["metadata"]["annotations"][PINNED],
            "minReplicas=2,maxReplicas=10"
        );
        assert_eq!(
            changes[1].request,
            Request::Scale {
                replicas: 0,
                resource_version: Some("3".into())
            }
        );
        assert_eq!(
            Record::of(&changes[1].action).unwrap(),
            Record::Replicas {
                replicas: 4,
                applied: 0
            }
        );

        // Idempotent: at zero with the HPA pinned there is nothing to do.
        let again = EmergencyShutdownSpec::default()
            .plan("web", &observed(0, vec![pinned.clone()], None))
            .unwrap();
        assert!(again.is_noop(), "{again:?}");

        // Undo restores the exact bounds and drops the annotation.
        let undo = plan_undo(&changes[0].action, &pinned, false)
            .unwrap()
            .unwrap();
        assert_eq!(apply_json(&undo, &pinned), h);
    }

    #[test]
    fn an_absent_min_replicas_is_removed_again_on_undo() {
        let h = hpa(None, "web");
        let plan = EmergencyShutdownSpec::default()
            .plan("web", &observed(2, vec![h.clone()], None))
            .unwrap();
        let pin = plan.changes().next().unwrap();
        let pinned = apply_json(pin, &h);
        let undo = plan_undo(&pin.action, &pinned, false).unwrap().unwrap();
        assert_eq!(apply_json(&undo, &pinned), h);

        // Bounds edited since the pin: refused unless forced.
        let mut edited = pinned.clone();
        edited["spec"]["maxReplicas"] = json!(3);
        let err = plan_undo(&pin.action, &edited, false).unwrap_err();
        assert!(
            err.to_string().contains("spec.minReplicas/maxReplicas"),
            "{err}"
        );
        assert!(plan_undo(&pin.action, &edited, true).unwrap().is_some());
    }

    #[test]
    fn only_hpas_of_the_target_count() {
        assert!(scales(&hpa(None, "web"), "web"));
        assert!(!scales(&hpa(None, "api"), "web"));
        let mut rs = hpa(None, "web");
        rs["spec"]["scaleTargetRef"]["kind"] = json!("ReplicaSet");
        assert!(!scales(&rs, "web"));
    }

    #[test]
    fn cuts_traffic_on_the_route_first() {
        let route = json!({
            "metadata": {"name": "edge", "namespace": "shop"},
            "spec": {"rules": [{"backendRefs": [
                {"name": "web-svc", "port": 80, "weight": 80},
                {"name": "other", "port": 80, "weight": 20}
            ]}]}
        });
        let spec: EmergencyShutdownSpec = serde_json::from_value(json!({
            "cutTraffic": {"httpRoute": "edge"}, "backend": "web-svc"
        }))
        .unwrap();
        let plan = spec
            .plan("web", &observed(1, vec![], Some(route.clone())))
            .unwrap();
        let changes: Vec<&Change> = plan.changes().collect();
        assert_eq!(changes[0].kind, Kind::HttpRoute);
        let cut = apply_json(changes[0], &route);
        assert_eq!(cut["spec"]["rules"][0]["backendRefs"][0]["weight"], 0);
        assert_eq!(cut["spec"]["rules"][0]["backendRefs"][1]["weight"], 20);

        // The backend defaults to the target's name, which this route does not have.
        let spec: EmergencyShutdownSpec =
            serde_json::from_value(json!({"cutTraffic": {"httpRoute": "edge"}})).unwrap();
        let err = spec
            .plan("web", &observed(1, vec![], Some(route)))
            .unwrap_err();
        assert!(matches!(err, Error::BackendNotFound { .. }), "{err}");
    }
}
