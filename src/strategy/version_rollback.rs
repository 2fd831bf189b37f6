//! `VersionRollback`, like `kubectl rollout undo`: find the Deployment's ReplicaSets (owned by
//! it), pick `toRevision` or the revision before the one running, and copy that ReplicaSet's pod
//! template, minus the `pod-template-hash` label, into the Deployment with a JSON Patch
//! `test` + `replace` of `/spec/template`. Like kubectl, a paused Deployment is refused and a
//! template already equal to the target is left alone; like kubectl, the change-cause annotation
//! comes back with the template (kubectl copies all of the ReplicaSet's annotations but
//! bookkeeping ones; we copy only `kubernetes.io/change-cause`, so annotations other tools
//! manage on the Deployment are not erased).
//!
//! # A bad template re-applied
//!
//! The rollback also writes two annotations on the Deployment, each a hash of a pod template
//! ([`template_hash`]: FNV-1a over canonical JSON, without `pod-template-hash`):
//! - `rollback.frys.io/rolled-back-from`: the template rolled back from (the bad release);
//! - `rollback.frys.io/rolled-back-to`: the template restored.
//!
//! Before planning, the planner hashes the running template:
//! - equal to `rolled-back-from`: a GitOps tool (or a person) re-applied the bad release. The
//!   planner returns [`Error::BadTemplateReapplied`] instead of rolling back again, so the engine
//!   escalates or alerts rather than loop against the GitOps tool. Removing the annotation
//!   allows another rollback.
//! - equal to `rolled-back-to`: this rollback is already in effect. This is what keeps a second
//!   apply idempotent after the Deployment controller renumbered the restored ReplicaSet (the
//!   bad one is then "the previous revision", and kubectl would roll forward to it).
//!
//! Annotations survive client-side and server-side apply of a manifest that does not mention
//! them. Undo restores both to their values before the rollback (absent, usually).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{
    Change, Error, Kind, Objects, Plan, Probes, Record, Reference, Request, Step, Strategy,
    Traffic, json,
};
use crate::api::{RollbackTarget, StrategyKind, VersionRollbackSpec};

/// Revision of a Deployment and of its ReplicaSets, set by the Deployment controller.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Why a revision was made; restored with the template, as kubectl does.
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// Hash of the pod template a version rollback rolled back from.
pub const ROLLED_BACK_FROM: &str = "rollback.frys.io/rolled-back-from";
/// Hash of the pod template a version rollback restored.
pub const ROLLED_BACK_TO: &str = "rollback.frys.io/rolled-back-to";
/// Label the Deployment controller adds to each ReplicaSet's template.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// What the version rollback reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub deployment: Value,
    /// The ReplicaSets owned by the Deployment.
    pub replica_sets: Vec<Value>,
}

impl Strategy for VersionRollbackSpec {
    type Observed = Observed;

    fn kind(&self) -> StrategyKind {
        StrategyKind::VersionRollback
    }

    fn references(&self) -> Vec<Reference> {
        self.to_revision
            .map(Reference::Revision)
            .into_iter()
            .collect()
    }

    fn probes(&self) -> Probes {
        Probes {
            traffic: Traffic::Unchanged,
            ..Probes::default()
        }
    }

    async fn observe(&self, objects: &impl Objects, target: &str) -> Result<Observed, Error> {
        let deployment = objects.get(Kind::Deployment, target).await?;
        let selector = deployment
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
            .map(|labels| {
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            });
        let uid = json::str_at(&deployment, "/metadata/uid").unwrap_or_default();
        let owned_by = |rs: &Value| {
            rs.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|owners| owners.iter().any(|o| o["uid"] == uid))
        };
        let replica_sets = objects
            .list(Kind::ReplicaSet, selector.as_deref())
            .await?
            .into_iter()
            .filter(owned_by)
            .collect();
        Ok(Observed {
            deployment,
            replica_sets,
        })
    }

    fn plan(&self, target: &str, o: &Observed) -> Result<Plan, Error> {
        let d = &o.deployment;
        if d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) {
            return Err(Error::Paused {
                name: target.to_owned(),
            });
        }
        let current = d.pointer("/spec/template").cloned().unwrap_or(Value::Null);
        let hash = template_hash(&current);
        if json::annotation(d, ROLLED_BACK_FROM) == Some(hash.as_str()) {
            return Err(Error::BadTemplateReapplied {
                name: target.to_owned(),
                hash,
            });
        }
        if self.to_revision.is_none() && json::annotation(d, ROLLED_BACK_TO) == Some(hash.as_str())
        {
            return Ok(Plan::already_applied(
                self.kind(),
                format!("Deployment {target} runs the template a rollback restored ({hash})"),
            ));
        }

        let mut revisions: Vec<(i64, &Value)> = o
            .replica_sets
            .iter()
            .filter_map(|rs| Some((json::annotation(rs, REVISION)?.parse().ok()?, rs)))
            .collect();
        revisions.sort_by_key(|(r, _)| *r);
        let normal = normalized(&current);
        let same_as_current = |rs: &Value| normalized(&rs["spec"]["template"]) == normal;
        // The running revision is the newest ReplicaSet with the current template; none when the
        // Deployment controller has not yet made one (then all ReplicaSets are older).
        let running = revisions
            .iter()
            .rev()
            .find(|(_, rs)| same_as_current(rs))
            .map(|(r, _)| *r);

        let (to_revision, rs) = match self.to_revision {
            Some(wanted) => *revisions
                .iter()
                .find(|(r, _)| *r == wanted)
                .ok_or_else(|| Error::RevisionNotFound {
                    name: target.to_owned(),
                    revision: wanted,
                    known: known(&revisions),
                })?,
            None => *revisions
                .iter()
                .rev()
                .find(|(r, rs)| running.is_none_or(|run| *r < run) && !same_as_current(rs))
                .ok_or_else(|| Error::NoPreviousRevision {
                    name: target.to_owned(),
                    current: running
                        .map(|r| r.to_string())
                        .or_else(|| json::annotation(d, REVISION).map(str::to_owned))
                        .unwrap_or_else(|| "unknown".into()),
                })?,
        };
        if same_as_current(rs) {
            return Ok(Plan::already_applied(
                self.kind(),
                format!("Deployment {target} already runs the template of revision {to_revision}"),
            ));
        }

        let mut template = rs["spec"]["template"].clone();
        if let Some(labels) = template
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            labels.remove(POD_TEMPLATE_HASH);
        }
        let set: BTreeMap<String, Option<String>> = [
            (
                CHANGE_CAUSE,
                json::annotation(rs, CHANGE_CAUSE).map(str::to_owned),
            ),
            (ROLLED_BACK_FROM, Some(hash)),
            (ROLLED_BACK_TO, Some(template_hash(&template))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let before = set
            .keys()
            .map(|k| (k.clone(), json::annotation(d, k).map(str::to_owned)))
            .collect();
        let from = running
            .map(|r| r.to_string())
            .or_else(|| json::annotation(d, REVISION).map(str::to_owned));
        let summary = format!(
            "pod template of Deployment {target} back to revision {to_revision} ({}) from revision {}",
            images(&template),
            from.as_deref().unwrap_or("unknown")
        );
        let change = template_change(
            d,
            &current,
            template,
            &set,
            before,
            from,
            to_revision.to_string(),
            summary,
        );
        Ok(Plan::new(self.kind(), vec![Step::Change(change)]))
    }
}

/// The rollback this rung would make now, to be fixed in the event at decision time; None
/// when the rollback is already in effect.
pub fn decided_target(
    spec: &VersionRollbackSpec,
    target: &str,
    observed: &Observed,
) -> Result<Option<RollbackTarget>, Error> {
    let plan = spec.plan(target, observed)?;
    let record = plan.actions().iter().find_map(|a| Record::of(a).ok());
    Ok(match record {
        Some(Record::PodTemplate {
            revision,
            template,
            to_revision,
            ..
        }) => Some(RollbackTarget {
            from_revision: revision,
            from_template: template_hash(&template),
            to_revision,
        }),
        _ => None,
    })
}

/// Why a rollback decided against `decided` must not run on `deployment` now: it runs another
/// release (a roll-forward since the decision). None when it still runs the release judged
/// bad, or already the template this rollback restored (a resumed run).
pub fn superseded(decided: &RollbackTarget, deployment: &Value) -> Option<String> {
    let current = deployment
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    let hash = template_hash(&current);
    if hash == decided.from_template {
        return None;
    }
    let restored_by_us = json::annotation(deployment, ROLLED_BACK_FROM)
        == Some(decided.from_template.as_str())
        && json::annotation(deployment, ROLLED_BACK_TO) == Some(hash.as_str());
    if restored_by_us {
        return None;
    }
    Some(format!(
        "superseded: Deployment {} now runs revision {} (template {hash}), not the release judged bad \
         (revision {}, template {}); a rollback decided against that release does not roll back this one",
        json::name(deployment),
        json::annotation(deployment, REVISION).unwrap_or("unknown"),
        decided.from_revision.as_deref().unwrap_or("unknown"),
        decided.from_template,
    ))
}

/// Replaces the template (guarded by a `test` of the template read) and sets annotations.
#[allow(clippy::too_many_arguments)]
fn template_change(
    deployment: &Value,
    current: &Value,
    new: Value,
    annotations: &BTreeMap<String, Option<String>>,
    annotations_before: BTreeMap<String, Option<String>>,
    revision: Option<String>,
    to_revision: String,
    summary: String,
) -> Change {
    let mut ops = vec![
        json!({"op": "test", "path": "/spec/template", "value": current}),
        json!({"op": "replace", "path": "/spec/template", "value": new}),
    ];
    ops.extend(json::annotation_ops(deployment, annotations));
    let record = Record::PodTemplate {
        revision,
        template: current.clone(),
        annotations: annotations_before,
        to_revision,
        applied: new,
    };
    Change::new(
        Kind::Deployment,
        json::name(deployment),
        Request::JsonPatch(json::patch(ops)),
        summary,
        record,
    )
}

/// Plans restoring the template and annotations a rollback replaced, unless the template
/// changed since the rollback set it.
pub(super) fn plan_undo(
    deployment: &Value,
    revision: Option<&str>,
    previous: &Value,
    annotations: &BTreeMap<String, Option<String>>,
    applied: &Value,
    force: bool,
) -> Result<Option<Change>, Error> {
    let now = deployment
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    let restored = normalized(&now) == normalized(previous);
    if restored && json::annotation_ops(deployment, annotations).is_empty() {
        return Ok(None);
    }
    if !restored && !force && normalized(&now) != normalized(applied) {
        return Err(super::error::changed(
            Kind::Deployment,
            deployment,
            "spec.template",
            format!("template {}", template_hash(applied)),
            format!("template {}", template_hash(&now)),
        ));
    }
    let name = json::name(deployment);
    let summary = format!(
        "pod template of Deployment {name} restored to revision {} ({})",
        revision.unwrap_or("unknown"),
        images(previous)
    );
    let before = annotations
        .keys()
        .map(|k| {
            (
                k.clone(),
                json::annotation(deployment, k).map(str::to_owned),
            )
        })
        .collect();
    let current_revision = json::annotation(deployment, REVISION).map(str::to_owned);
    Ok(Some(template_change(
        deployment,
        &now,
        previous.clone(),
        annotations,
        before,
        current_revision,
        revision.unwrap_or("unknown").to_owned(),
        summary,
    )))
}

/// A short, stable identity of a pod template: FNV-1a (64 bit) of its canonical JSON (sorted
/// keys, nulls dropped), without the `pod-template-hash` label, as 16 hex digits.
pub fn template_hash(template: &Value) -> String {
    let mut text = String::new();
    canonical(&normalized(template), &mut text);
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// The template as compared: without `pod-template-hash` and without nulls (absent = null).
fn normalized(template: &Value) -> Value {
    fn drop_nulls(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), drop_nulls(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(drop_nulls).collect()),
            other => other.clone(),
        }
    }
    let mut t = drop_nulls(template);
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
    }
    t
}

/// JSON with object keys sorted, whatever the map's own order.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The container images of a template, for messages.
fn images(template: &Value) -> String {
    let images: Vec<&str> = template
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("image").and_then(Value::as_str))
        .collect();
    if images.is_empty() {
        "no images".into()
    } else {
        images.join(", ")
    }
}

fn known(revisions: &[(i64, &Value)]) -> String {
    if revisions.is_empty() {
        return "none".into();
    }
    revisions
        .iter()
        .map(|(r, _)| r.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::apply_json_patches as apply;
    use crate::strategy::plan_undo;

    fn template(image: &str, hash: Option<&str>) -> Value {
        let mut labels = json!({"app": "web"});
        if let Some(h) = hash {
            labels[POD_TEMPLATE_HASH] = json!(h);
        }
        json!({
            "metadata": {"labels": labels, "creationTimestamp": null},
            "spec": {"containers": [{"name": "app", "image": image}]}
        })
    }

    fn rs(revision: i64, image: &str, cause: Option<&str>) -> Value {
        let mut annotations = json!({REVISION: revision.to_string()});
        if let Some(c) = cause {
            annotations[CHANGE_CAUSE] = json!(c);
        }
        json!({
            "metadata": {"name": format!("web-{revision}"), "annotations": annotations},
            "spec": {"template": template(image, Some(&format!("h{revision}")))}
        })
    }

    fn deployment(image: &str, revision: i64) -> Value {
        json!({
            "metadata": {"name": "web", "annotations": {REVISION: revision.to_string(), CHANGE_CAUSE: "v3 rollout"}},
            "spec": {"replicas": 3, "template": template(image, None)}
        })
    }

    fn history() -> Vec<Value> {
        vec![
            rs(1, "demo:v1", Some("first")),
            rs(2, "demo:v2", None),
            rs(3, "demo:v3", Some("v3 rollout")),
        ]
    }

    fn spec(to: Option<i64>) -> VersionRollbackSpec {
        VersionRollbackSpec { to_revision: to }
    }

    #[test]
    fn rolls_back_to_the_previous_revision_without_the_hash_label() {
        let o = Observed {
            deployment: deployment("demo:v3", 3),
            replica_sets: history(),
        };
        let plan = spec(None).plan("web", &o).unwrap();
        let after = apply(&plan, &o.deployment);
        assert_eq!(after["spec"]["template"], template("demo:v2", None));
        assert_eq!(after["spec"]["replicas"], 3);
        let annotations = &after["metadata"]["annotations"];
        assert!(
            annotations.get(CHANGE_CAUSE).is_none(),
            "revision 2 had no change-cause"
        );
        assert_eq!(
            annotations[REVISION], "3",
            "the controller's bookkeeping is left alone"
        );
        assert_eq!(
            annotations[ROLLED_BACK_FROM],
            template_hash(&template("demo:v3", None))
        );
        assert_eq!(
            annotations[ROLLED_BACK_TO],
            template_hash(&template("demo:v2", None))
        );
        assert!(
            plan.summary
                .contains("back to revision 2 (demo:v2) from revision 3"),
            "{}",
            plan.summary
        );

        let Record::PodTemplate {
            revision,
            template: before,
            to_revision,
            ..
        } = Record::of(&plan.actions()[0]).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (revision.as_deref(), to_revision.as_str()),
            (Some("3"), "2")
        );
        assert_eq!(
            before, o.deployment["spec"]["template"],
            "the full template is recorded"
        );
    }

    #[test]
    fn to_revision_restores_its_change_cause() {
        let o = Observed {
            deployment: deployment("demo:v3", 3),
            replica_sets: history(),
        };
        let after = apply(&spec(Some(1)).plan("web", &o).unwrap(), &o.deployment);
        assert_eq!(after["spec"]["template"], template("demo:v1", None));
        assert_eq!(after["metadata"]["annotations"][CHANGE_CAUSE], "first");

        let err = spec(Some(9)).plan("web", &o).unwrap_err();
        assert!(
            matches!(err, Error::RevisionNotFound { revision: 9, .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("known revisions: 1, 2, 3"),
            "{err}"
        );
        // Asking for the running revision changes nothing.
        assert!(spec(Some(3)).plan("web", &o).unwrap().is_noop());
    }

    #[test]
    fn no_earlier_revision_is_a_typed_error() {
        let o = Observed {
            deployment: deployment("demo:v1", 1),
            replica_sets: vec![rs(1, "demo:v1", None)],
        };
        let err = spec(None).plan("web", &o).unwrap_err();
        assert!(
            matches!(&err, Error::NoPreviousRevision { current, .. } if current == "1"),
            "{err}"
        );
        let o = Observed {
            deployment: deployment("demo:v1", 1),
            replica_sets: vec![],
        };
        assert!(matches!(
            spec(None).plan("web", &o),
            Err(Error::NoPreviousRevision { .. })
        ));
    }

    #[test]
    fn a_template_not_yet_rolled_out_rolls_back_to_the_newest_replica_set() {
        // GitOps wrote v4; the controller has not made its ReplicaSet yet.
        let o = Observed {
            deployment: deployment("demo:v4", 3),
            replica_sets: history(),
        };
        let after = apply(&spec(None).plan("web", &o).unwrap(), &o.deployment);
        assert_eq!(after["spec"]["template"], template("demo:v3", None));
    }

    #[test]
    fn idempotent_before_and_after_the_controller_renumbers() {
        let o = Observed {
            deployment: deployment("demo:v3", 3),
            replica_sets: history(),
        };
        let after = apply(&spec(None).plan("web", &o).unwrap(), &o.deployment);
        // Right after the patch.
        let again = Observed {
            deployment: after.clone(),
            replica_sets: history(),
        };
        assert!(spec(None).plan("web", &again).unwrap().is_noop());
        // After the controller moved revision 2's ReplicaSet to revision 4: revision 3 (the bad
        // one) is now "previous", and must not be rolled forward to.
        let mut renumbered = history();
        renumbered[1] = rs(4, "demo:v2", None);
        let mut d = after.clone();
        d["metadata"]["annotations"][REVISION] = json!("4");
        let again = Observed {
            deployment: d,
            replica_sets: renumbered,
        };
        let plan = spec(None).plan("web", &again).unwrap();
        assert!(plan.is_noop(), "{plan:?}");
    }

    #[test]
    fn a_reapplied_bad_template_is_reported_not_looped_on() {
        let o = Observed {
            deployment: deployment("demo:v3", 3),
            replica_sets: history(),
        };
        let mut after = apply(&spec(None).plan("web", &o).unwrap(), &o.deployment);
        // GitOps re-applies v3 (annotations it does not manage stay).
        after["spec"]["template"] = template("demo:v3", None);
        let again = Observed {
            deployment: after,
            replica_sets: history(),
        };
        let err = spec(None).plan("web", &again).unwrap_err();
        assert!(matches!(err, Error::BadTemplateReapplied { .. }), "{err}");
        assert!(err.to_string().contains(ROLLED_BACK_FROM), "{err}");
    }

    #[test]
    fn paused_deployments_are_refused() {
        let mut d = deployment("demo:v3", 3);
        d["spec"]["paused"] = json!(true);
        let o = Observed {
            deployment: d,
            replica_sets: history(),
        };
        assert!(matches!(
            spec(None).plan("web", &o),
            Err(Error::Paused { .. })
        ));
    }

    #[test]
    fn undo_restores_template_and_annotations_even_without_history() {
        let o = Observed {
            deployment: deployment("demo:v3", 3),
            replica_sets: history(),
        };
        let plan = spec(None).plan("web", &o).unwrap();
        let action = &plan.actions()[0];
        let after = apply(&plan, &o.deployment);
        let undo = plan_undo(action, &after, false).unwrap().unwrap();
        let restored = apply(
            &Plan::new(StrategyKind::VersionRollback, vec![Step::Change(undo)]),
            &after,
        );
        assert_eq!(restored, o.deployment);
        assert!(
            plan_undo(action, &restored, false).unwrap().is_none(),
            "already undone"
        );

        // Someone deployed v5 since: refused, unless forced.
        let mut changed = after.clone();
        changed["spec"]["template"] = template("demo:v5", None);
        let err = plan_undo(action, &changed, false).unwrap_err();
        assert!(
            matches!(&err, Error::ChangedSinceApplied { field, .. } if field == "spec.template"),
            "{err}"
        );
        let forced = plan_undo(action, &changed, true).unwrap().unwrap();
        let restored = apply(
            &Plan::new(StrategyKind::VersionRollback, vec![Step::Change(forced)]),
            &changed,
        );
        assert_eq!(
            restored["spec"]["template"],
            o.deployment["spec"]["template"]
        );
    }

    #[test]
    fn template_hash_ignores_key_order_nulls_and_the_hash_label() {
        let a = template("demo:v1", Some("abc"));
        let b = json!({
            "spec": {"containers": [{"image": "demo:v1", "name": "app"}]},
            "metadata": {"labels": {"app": "web"}}
        });
        assert_eq!(template_hash(&a), template_hash(&b));
        assert_ne!(template_hash(&a), template_hash(&template("demo:v2", None)));
        assert_eq!(template_hash(&a).len(), 16);
    }
}
