//! `EnvironmentSwitch`: blue/green. Make the standby Deployment ready (scaled to the active
//! Deployment's replica count first when `scaleStandby`), wait up to `readyTimeout` for all its
//! replicas to be available, then switch the Service selector `selectorKey` from `activeValue`
//! to `standbyValue`.

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Value, json};

use super::{
    Change, Error, Kind, Objects, Plan, Probes, Record, Reference, Request, Restore, Rollout, Step,
    Strategy, Traffic, WaitAvailable, error::changed, json, scale,
};
use crate::api::{EnvironmentSwitchSpec, StrategyKind};

/// How long to wait for the standby when the rung does not say.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(300);

/// What the environment switch reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub service: Value,
    /// The live Deployment (the policy's target).
    pub active: Value,
    pub standby: Value,
}

impl Strategy for EnvironmentSwitchSpec {
    type Observed = Observed;

    const RESTORE: Restore = Restore::TRAFFIC;

    fn kind(&self) -> StrategyKind {
        StrategyKind::EnvironmentSwitch
    }

    fn references(&self) -> Vec<Reference> {
        vec![
            Reference::object(Kind::Service, &self.service),
            Reference::Object {
                kind: Kind::Deployment,
                name: self.standby_ref.clone(),
                role: Some("standby"),
            },
        ]
    }

    fn probes(&self) -> Probes {
        Probes {
            serving: Ok(Some(self.service.clone())),
            rollout: Rollout::Other(self.standby_ref.clone()),
            traffic: Traffic::Selector {
                service: self.service.clone(),
                key: self.selector_key.clone(),
                value: self.standby_value.clone(),
            },
            ..Probes::default()
        }
    }

    async fn observe(&self, objects: &impl Objects, target: &str) -> Result<Observed, Error> {
        Ok(Observed {
            service: objects.get(Kind::Service, &self.service).await?,
            active: objects.get(Kind::Deployment, target).await?,
            standby: objects.get(Kind::Deployment, &self.standby_ref).await?,
        })
    }

    fn plan(&self, _target: &str, o: &Observed) -> Result<Plan, Error> {
        let selector = selector(&o.service);
        let field = format!("spec.selector.{}", self.selector_key);
        match selector.get(&self.selector_key) {
            Some(v) if *v == self.standby_value => {
                return Ok(Plan::already_applied(
                    self.kind(),
                    format!("Service {} selects {field}={v}", self.service),
                ));
            }
            Some(v) if *v == self.active_value => {}
            other => {
                return Err(Error::Refused {
                    kind: "Service".into(),
                    name: self.service.clone(),
                    reason: format!(
                        "{field} is {}, neither activeValue {} nor standbyValue {}",
                        other.map_or("absent".to_owned(), |v| format!("{v:?}")),
                        self.active_value,
                        self.standby_value
                    ),
                });
            }
        }

        let mut steps = vec![];
        let active = json::replicas(&o.active);
        let mut ready = json::replicas(&o.standby);
        if self.scale_standby && ready < active {
            let summary = format!(
                "standby Deployment {} scaled from {ready} to {active} replicas",
                self.standby_ref
            );
            steps.push(Step::Change(scale::change(&o.standby, active, summary)));
            ready = active;
        }
        if ready == 0 {
            return Err(Error::Refused {
                kind: "Deployment".into(),
                name: self.standby_ref.clone(),
                reason: "the standby has 0 replicas; set scaleStandby: true or scale it".into(),
            });
        }
        let timeout = match &self.ready_timeout {
            Some(d) => d.get().map_err(|e| Error::InvalidSpec(e.to_string()))?,
            None => DEFAULT_READY_TIMEOUT,
        };
        steps.push(Step::WaitAvailable(WaitAvailable {
            deployment: self.standby_ref.clone(),
            replicas: ready,
            timeout,
        }));

        let mut applied = selector.clone();
        applied.insert(self.selector_key.clone(), self.standby_value.clone());
        let summary = format!(
            "Service {} switched {field} from {} to {}",
            self.service, self.active_value, self.standby_value
        );
        steps.push(Step::Change(selector_change(
            &o.service, &selector, applied, summary,
        )));
        Ok(Plan::new(self.kind(), steps))
    }
}

fn selector(service: &Value) -> BTreeMap<String, String> {
    service
        .pointer("/spec/selector")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default()
}

/// A merge patch of `spec.selector` from `current` to `new` (keys set, or removed with null),
/// guarded by the resourceVersion read.
fn selector_change(
    service: &Value,
    current: &BTreeMap<String, String>,
    new: BTreeMap<String, String>,
    summary: String,
) -> Change {
    let mut patch = serde_json::Map::new();
    for (k, v) in &new {
        if current.get(k) != Some(v) {
            patch.insert(k.clone(), json!(v));
        }
    }
    for k in current.keys().filter(|k| !new.contains_key(*k)) {
        patch.insert(k.clone(), Value::Null);
    }
    let mut body = json!({"spec": {"selector": patch}});
    if let Some(rv) = json::resource_version(service) {
        body["metadata"] = json!({"resourceVersion": rv});
    }
    let request = Request::MergePatch(body);
    let record = Record::ServiceSelector {
        selector: current.clone(),
        applied: new,
    };
    Change::new(Kind::Service, json::name(service), request, summary, record)
}

/// Plans restoring a Service's selector, unless it changed since the action set `applied`.
pub(super) fn plan_undo_selector(
    service: &Value,
    previous: &BTreeMap<String, String>,
    applied: &BTreeMap<String, String>,
    force: bool,
) -> Result<Option<Change>, Error> {
    let now = selector(service);
    if now == *previous {
        return Ok(None);
    }
    if !force && now != *applied {
        return Err(changed(
            Kind::Service,
            service,
            "spec.selector",
            json!(applied),
            json!(now),
        ));
    }
    let summary = format!(
        "Service {} selector restored to {}",
        json::name(service),
        json!(previous)
    );
    Ok(Some(selector_change(
        service,
        &now,
        previous.clone(),
        summary,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::plan_undo;

    fn spec(scale: bool) -> EnvironmentSwitchSpec {
        serde_json::from_value(json!({
            "service": "web", "selectorKey": "color", "activeValue": "green",
            "standbyValue": "blue", "standbyRef": "web-blue", "scaleStandby": scale,
            "readyTimeout": "2m"
        }))
        .unwrap()
    }

    fn observed(color: &str, standby_replicas: i32) -> Observed {
        Observed {
            service: json!({
                "metadata": {"name": "web", "resourceVersion": "11"},
                "spec": {"selector": {"app": "web", "color": color}}
            }),
            active: json!({"metadata": {"name": "web-green"}, "spec": {"replicas": 3}}),
            standby: json!({
                "metadata": {"name": "web-blue", "resourceVersion": "5"},
                "spec": {"replicas": standby_replicas}
            }),
        }
    }

    #[test]
    fn scales_waits_then_switches() {
        let plan = spec(true).plan("web-green", &observed("green", 0)).unwrap();
        let [
            Step::Change(scale),
            Step::WaitAvailable(wait),
            Step::Change(switch),
        ] = plan.steps.as_slice()
        else {
            panic!("{plan:?}")
        };
        assert_eq!(
            (scale.kind, scale.name.as_str()),
            (Kind::Deployment, "web-blue")
        );
        assert_eq!(
            scale.request,
            Request::Scale {
                replicas: 3,
                resource_version: Some("5".into())
            }
        );
        assert_eq!(
            *wait,
            WaitAvailable {
                deployment: "web-blue".into(),
                replicas: 3,
                timeout: Duration::from_secs(120)
            }
        );
        assert_eq!(
            switch.request,
            Request::MergePatch(json!({
                "metadata": {"resourceVersion": "11"},
                "spec": {"selector": {"color": "blue"}}
            }))
        );
        assert_eq!(
            Record::of(&switch.action).unwrap(),
            Record::ServiceSelector {
                selector: [
                    ("app".into(), "web".into()),
                    ("color".into(), "green".into())
                ]
                .into(),
                applied: [
                    ("app".into(), "web".into()),
                    ("color".into(), "blue".into())
                ]
                .into(),
            }
        );
    }

    #[test]
    fn a_ready_standby_is_not_scaled_and_a_switched_service_is_left_alone() {
        let plan = spec(true).plan("web-green", &observed("green", 4)).unwrap();
        assert!(matches!(
            plan.steps[0],
            Step::WaitAvailable(WaitAvailable { replicas: 4, .. })
        ));
        assert_eq!(plan.actions().len(), 1);

        let plan = spec(true).plan("web-green", &observed("blue", 3)).unwrap();
        assert!(plan.is_noop() && plan.steps.is_empty(), "{plan:?}");
    }

    #[test]
    fn refuses_an_empty_standby_or_an_unknown_selector_value() {
        let err = spec(false)
            .plan("web-green", &observed("green", 0))
            .unwrap_err();
        assert!(matches!(err, Error::Refused { .. }) && err.to_string().contains("web-blue"));
        let err = spec(true)
            .plan("web-green", &observed("red", 1))
            .unwrap_err();
        assert!(
            err.to_string().contains("spec.selector.color is \"red\""),
            "{err}"
        );
    }

    #[test]
    fn undo_restores_selector_and_replicas() {
        let o = observed("green", 0);
        let plan = spec(true).plan("web-green", &o).unwrap();
        let actions = plan.actions();
        let switched = json!({
            "metadata": {"name": "web", "resourceVersion": "12"},
            "spec": {"selector": {"app": "web", "color": "blue"}}
        });
        let undo = plan_undo(&actions[1], &switched, false).unwrap().unwrap();
        assert_eq!(
            undo.request,
            Request::MergePatch(json!({
                "metadata": {"resourceVersion": "12"},
                "spec": {"selector": {"color": "green"}}
            }))
        );
        assert!(plan_undo(&actions[1], &o.service, false).unwrap().is_none());
        let edited = json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web2", "color": "blue"}}});
        let err = plan_undo(&actions[1], &edited, false).unwrap_err();
        assert!(
            matches!(&err, Error::ChangedSinceApplied { field, .. } if field == "spec.selector")
        );
        // Forced: keys the action did not know are removed, its keys restored.
        let forced = plan_undo(&actions[1], &edited, true).unwrap().unwrap();
        assert_eq!(
            forced.request,
            Request::MergePatch(json!({"spec": {"selector": {"app": "web", "color": "green"}}}))
        );

        let scaled = json!({"metadata": {"name": "web-blue"}, "spec": {"replicas": 3}});
        let undo = plan_undo(&actions[0], &scaled, false).unwrap().unwrap();
        assert!(matches!(undo.request, Request::Scale { replicas: 0, .. }));
    }
}
