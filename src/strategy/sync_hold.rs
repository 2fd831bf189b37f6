//! Holding a GitOps owner's sync during a remediation, as a recorded, undoable action: an Argo
//! CD Application loses `spec.syncPolicy.automated` (recorded exactly, put back exactly by
//! undo), a Flux Kustomization or HelmRelease gets `spec.suspend: true` (its value before is
//! recorded). JSON Patches guarded by a `test` of the field as read, like the other rungs.
//! Pure planning; the owner is read and written at the edge.

use serde_json::{Value, json};

use super::{Change, Error, Kind, Record, Request, json};
use crate::{
    api::{Action, GitopsKind},
    gitops::OwnerRef,
};

/// True when the action holds a GitOps owner's sync.
pub fn is_hold(action: &Action) -> bool {
    matches!(
        Record::of(action),
        Ok(Record::AutomatedSync { .. } | Record::Suspend { .. })
    )
}

/// The change that holds `owner`'s sync, given the owner object as read; None when its sync is
/// already off (nothing to hold, nothing to undo later).
pub fn plan_hold(owner: &OwnerRef, object: &Value, why: &str) -> Option<Change> {
    let kind = Kind::of_gitops(owner.kind);
    let (ops, record, summary) = match owner.kind {
        GitopsKind::Application => {
            let automated = object.pointer("/spec/syncPolicy/automated")?;
            if automated.is_null() || automated.get("enabled") == Some(&json!(false)) {
                return None;
            }
            (
                vec![
                    json!({"op": "test", "path": "/spec/syncPolicy/automated", "value": automated}),
                    json!({"op": "remove", "path": "/spec/syncPolicy/automated"}),
                ],
                Record::AutomatedSync {
                    automated: automated.clone(),
                },
                format!("automated sync of {owner} turned off ({why})"),
            )
        }
        GitopsKind::Kustomization | GitopsKind::HelmRelease => {
            let suspend = object.pointer("/spec/suspend").and_then(Value::as_bool);
            if suspend == Some(true) {
                return None;
            }
            let mut ops = vec![];
            if let Some(s) = suspend {
                ops.push(json!({"op": "test", "path": "/spec/suspend", "value": s}));
            }
            ops.push(json!({"op": "add", "path": "/spec/suspend", "value": true}));
            (
                ops,
                Record::Suspend { suspend },
                format!("{owner} suspended ({why})"),
            )
        }
    };
    Some(change(kind, owner, json::patch(ops), summary, record))
}

fn change(
    kind: Kind,
    owner: &OwnerRef,
    patch: json_patch::Patch,
    summary: String,
    record: Record,
) -> Change {
    let mut change = Change::new(
        kind,
        &owner.name,
        Request::JsonPatch(patch),
        summary,
        record,
    );
    change.action.namespace = Some(owner.namespace.clone());
    change
}

/// The owner an action names, for undo's change.
fn owner_of(action: &Action, kind: GitopsKind) -> OwnerRef {
    OwnerRef {
        kind,
        name: action.name.clone(),
        namespace: action.namespace.clone().unwrap_or_default(),
        detected_by: "recorded action",
    }
}

/// Puts `spec.syncPolicy.automated` back exactly as recorded, unless someone set it since.
pub(super) fn plan_undo_automated(
    action: &Action,
    current: &Value,
    recorded: &Value,
    force: bool,
) -> Result<Option<Change>, Error> {
    let now = current.pointer("/spec/syncPolicy/automated");
    if now == Some(recorded) {
        return Ok(None);
    }
    if now.is_some() && !force {
        return Err(super::error::changed(
            Kind::ArgoApplication,
            current,
            "spec.syncPolicy.automated",
            "absent (turned off by the operator)",
            now.map(Value::to_string).unwrap_or_default(),
        ));
    }
    let ops = match (current.pointer("/spec/syncPolicy"), now) {
        (_, Some(now)) => vec![
            json!({"op": "test", "path": "/spec/syncPolicy/automated", "value": now}),
            json!({"op": "replace", "path": "/spec/syncPolicy/automated", "value": recorded}),
        ],
        (Some(Value::Object(_)), None) => {
            vec![json!({"op": "add", "path": "/spec/syncPolicy/automated", "value": recorded})]
        }
        _ => {
            vec![json!({"op": "add", "path": "/spec/syncPolicy", "value": {"automated": recorded}})]
        }
    };
    let owner = owner_of(action, GitopsKind::Application);
    Ok(Some(change(
        Kind::ArgoApplication,
        &owner,
        json::patch(ops),
        format!("automated sync of {owner} restored"),
        Record::AutomatedSync {
            automated: Value::Null,
        },
    )))
}

/// Puts `spec.suspend` back as recorded, unless someone resumed or changed it since.
pub(super) fn plan_undo_suspend(
    action: &Action,
    kind: Kind,
    current: &Value,
    recorded: Option<bool>,
    force: bool,
) -> Result<Option<Change>, Error> {
    let now = current.pointer("/spec/suspend").and_then(Value::as_bool);
    if now == recorded {
        return Ok(None);
    }
    if now != Some(true) && !force {
        return Err(super::error::changed(
            kind,
            current,
            "spec.suspend",
            true,
            now.map_or("absent".to_owned(), |b| b.to_string()),
        ));
    }
    let mut ops = vec![];
    if let Some(n) = now {
        ops.push(json!({"op": "test", "path": "/spec/suspend", "value": n}));
    }
    ops.push(match recorded {
        Some(v) => json!({"op": "add", "path": "/spec/suspend", "value": v}),
        None => json!({"op": "remove", "path": "/spec/suspend"}),
    });
    let owner = owner_of(
        action,
        if kind == Kind::FluxHelmRelease {
            GitopsKind::HelmRelease
        } else {
            GitopsKind::Kustomization
        },
    );
    Ok(Some(change(
        kind,
        &owner,
        json::patch(ops),
        format!("{owner} resumed"),
        Record::Suspend { suspend: None },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::StrategyKind,
        fixtures::apply_json_patches as apply,
        strategy::{Plan, Step, plan_undo},
    };

    fn owner(kind: GitopsKind) -> OwnerRef {
        OwnerRef {
            kind,
            name: "web".into(),
            namespace: "argocd".into(),
            detected_by: "test",
        }
    }

    fn run(change: Change, object: &Value) -> Value {
        apply(
            &Plan::new(StrategyKind::VersionRollback, vec![Step::Change(change)]),
            object,
        )
    }

    #[test]
    fn argo_cd_automated_sync_is_removed_and_restored_exactly() {
        let app = json!({"metadata": {"name": "web"}, "spec": {"project": "default",
            "syncPolicy": {"automated": {"prune": true, "selfHeal": true}, "syncOptions": ["ServerSideApply=true"]}}});
        let hold = plan_hold(&owner(GitopsKind::Application), &app, "rollback").unwrap();
        assert_eq!(hold.action.namespace.as_deref(), Some("argocd"));
        assert!(is_hold(&hold.action));
        let held = run(hold.clone(), &app);
        assert!(held.pointer("/spec/syncPolicy/automated").is_none());
        assert_eq!(
            held["spec"]["syncPolicy"]["syncOptions"][0],
            "ServerSideApply=true"
        );
        assert!(plan_hold(&owner(GitopsKind::Application), &held, "again").is_none());

        let undo = plan_undo(&hold.action, &held, false).unwrap().unwrap();
        assert_eq!(run(undo, &held), app);
        assert!(plan_undo(&hold.action, &app, false).unwrap().is_none());

        // Someone turned it back on differently: refused unless forced.
        let mut changed = held.clone();
        changed["spec"]["syncPolicy"]["automated"] = json!({"prune": false});
        let err = plan_undo(&hold.action, &changed, false).unwrap_err();
        assert!(matches!(err, Error::ChangedSinceApplied { .. }), "{err}");
        let forced = plan_undo(&hold.action, &changed, true).unwrap().unwrap();
        assert_eq!(run(forced, &changed), app);

        // No syncPolicy left at all (someone removed it): undo adds it back.
        let bare = json!({"metadata": {"name": "web"}, "spec": {"project": "default"}});
        let undo = plan_undo(&hold.action, &bare, false).unwrap().unwrap();
        assert_eq!(
            run(undo, &bare)["spec"]["syncPolicy"]["automated"],
            app["spec"]["syncPolicy"]["automated"]
        );
    }

    #[test]
    fn manual_sync_is_not_held() {
        let app = json!({"spec": {"syncPolicy": {"automated": {"enabled": false}}}});
        assert!(plan_hold(&owner(GitopsKind::Application), &app, "x").is_none());
        assert!(plan_hold(&owner(GitopsKind::Application), &json!({"spec": {}}), "x").is_none());
        let ks = json!({"spec": {"suspend": true}});
        assert!(plan_hold(&owner(GitopsKind::Kustomization), &ks, "x").is_none());
    }

    #[test]
    fn flux_suspend_is_set_and_its_value_before_restored() {
        for before in [json!({}), json!({"suspend": false})] {
            let ks = json!({"metadata": {"name": "web"}, "spec": before.clone()});
            let ks = {
                let mut k = ks;
                k["spec"]["interval"] = json!("5m");
                k
            };
            let hold = plan_hold(&owner(GitopsKind::Kustomization), &ks, "rollback").unwrap();
            assert_eq!(hold.kind, Kind::FluxKustomization);
            let held = run(hold.clone(), &ks);
            assert_eq!(held["spec"]["suspend"], true);
            let undo = plan_undo(&hold.action, &held, false).unwrap().unwrap();
            assert_eq!(run(undo, &held), ks, "from {before}");
            // Resumed by hand (flux resume sets false): refused without force unless it
            // already is what it was.
            let mut resumed = held.clone();
            resumed["spec"]["suspend"] = json!(false);
            let r = plan_undo(&hold.action, &resumed, false);
            if before.get("suspend").is_some() {
                assert!(r.unwrap().is_none());
            } else {
                assert!(matches!(r, Err(Error::ChangedSinceApplied { .. })));
            }
        }
    }
}
