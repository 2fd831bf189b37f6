//! Replicas of a Deployment, changed through the scale subresource (shared by the environment
//! switch and the emergency shutdown).

use serde_json::Value;

use super::{Change, Error, Kind, Record, Request, error::changed, json};

/// Scales `deployment` (the object as read) to `replicas`, guarded by its resourceVersion.
pub fn change(deployment: &Value, replicas: i32, summary: String) -> Change {
    let previous = json::replicas(deployment);
    Change::new(
        Kind::Deployment,
        json::name(deployment),
        Request::Scale {
            replicas,
            resource_version: json::resource_version(deployment),
        },
        summary,
        Record::Replicas {
            replicas: previous,
            applied: replicas,
        },
    )
}

/// Plans scaling back to `previous`, unless replicas changed since the action set `applied`.
pub fn plan_undo(
    deployment: &Value,
    previous: i32,
    applied: i32,
    force: bool,
) -> Result<Option<Change>, Error> {
    let now = json::replicas(deployment);
    if now == previous {
        return Ok(None);
    }
    if !force && now != applied {
        return Err(changed(
            Kind::Deployment,
            deployment,
            "spec.replicas",
            applied,
            now,
        ));
    }
    let summary = format!(
        "Deployment {} scaled back from {now} to {previous} replicas",
        json::name(deployment)
    );
    Ok(Some(change(deployment, previous, summary)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(replicas: i32) -> Value {
        json!({"metadata": {"name": "web", "resourceVersion": "7"}, "spec": {"replicas": replicas}})
    }

    #[test]
    fn records_the_replicas_replaced() {
        let c = change(&deployment(3), 0, "s".into());
        assert_eq!(
            c.request,
            Request::Scale {
                replicas: 0,
                resource_version: Some("7".into())
            }
        );
        assert_eq!(
            Record::of(&c.action).unwrap(),
            Record::Replicas {
                replicas: 3,
                applied: 0
            }
        );
    }

    #[test]
    fn undo_scales_back_unless_changed() {
        assert!(plan_undo(&deployment(3), 3, 0, false).unwrap().is_none());
        let c = plan_undo(&deployment(0), 3, 0, false).unwrap().unwrap();
        assert!(matches!(c.request, Request::Scale { replicas: 3, .. }));
        let err = plan_undo(&deployment(2), 3, 0, false).unwrap_err();
        assert!(
            err.to_string()
                .contains("Deployment web: spec.replicas changed"),
            "{err}"
        );
        assert!(plan_undo(&deployment(2), 3, 0, true).unwrap().is_some());
    }
}
