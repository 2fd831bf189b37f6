//! Who wrote a Deployment's pod template, from its `metadata.managedFields` (the API server's
//! record of which field manager set which fields, and when). Pure.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use crate::api::FieldManagerRef;

/// The manager that last wrote `spec.template`, leaving out `ignore` (the operator's own
/// manager: a template that came back was not written by the rollback). Newest `time` wins;
/// entries on a subresource (status, scale) never own the template.
pub fn template_writer(managed_fields: &[Value], ignore: &str) -> Option<FieldManagerRef> {
    managed_fields
        .iter()
        .filter(|e| {
            e.get("subresource")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        })
        .filter(|e| e.pointer("/fieldsV1/f:spec/f:template").is_some())
        .filter_map(|e| {
            let manager = e.get("manager").and_then(Value::as_str)?;
            (manager != ignore).then_some(())?;
            let time = e
                .get("time")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<Timestamp>().ok());
            Some((time, manager, e))
        })
        .max_by_key(|(time, _, _)| *time)
        .map(|(time, manager, e)| FieldManagerRef {
            manager: manager.to_owned(),
            operation: e
                .get("operation")
                .and_then(Value::as_str)
                .map(str::to_owned),
            time: time.map(Time),
        })
}

/// What to do about a re-applied bad template, given who re-applied it.
pub fn advice(manager: &str) -> String {
    let m = manager.to_ascii_lowercase();
    if m.starts_with("argocd") {
        "Argo CD synced it from Git: revert or fix the release in Git, then undo the rollback event; \
         to keep Argo CD from re-applying it during an incident, let the operator turn off the \
         Application's automated sync (spec.gitops.onRemediation: Suspend, Helm value \
         gitops.argocd.enabled) or turn off self-heal"
            .into()
    } else if m.starts_with("kustomize-controller") {
        "Flux's kustomize-controller reconciled it from Git: revert or fix the release in Git; to \
         keep Flux from re-applying it during an incident, let the operator suspend the \
         Kustomization (spec.gitops.onRemediation: Suspend, Helm value gitops.flux.enabled) or run \
         flux suspend kustomization"
            .into()
    } else if m.starts_with("helm") {
        "a Helm release wrote it (helm upgrade, or Flux's helm-controller): roll the release back or \
         fix its chart values, and stop whatever upgrades it"
            .into()
    } else if m.starts_with("kubectl") {
        "someone ran kubectl (apply, edit, set image) with the bad manifest: stop the pipeline or \
         person re-applying it, then apply the good release"
            .into()
    } else {
        format!(
            "find the client that writes with field manager {manager} and stop it re-applying the bad release"
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(manager: &str, time: &str, fields: Value) -> Value {
        json!({"manager": manager, "operation": "Update", "time": time, "fieldsType": "FieldsV1", "fieldsV1": fields})
    }

    #[test]
    fn the_newest_template_writer_other_than_the_operator_is_named() {
        let template = json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {}}}}});
        let fields = vec![
            entry(
                "kubectl-client-side-apply",
                "2026-12-01T10:00:00Z",
                template.clone(),
            ),
            entry("frys-rollback", "2026-12-01T10:05:00Z", template.clone()),
            json!({"manager": "argocd-controller", "operation": "Apply", "time": "2026-12-01T10:05:00Z",
                "fieldsV1": template.clone()}),
            // The status writer is newer but owns no template.
            json!({"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
                "time": "2026-12-01T10:06:00Z", "fieldsV1": {"f:status": {}}}),
            entry(
                "kubectl-scale",
                "2026-12-01T10:07:00Z",
                json!({"f:spec": {"f:replicas": {}}}),
            ),
        ];
        let who = template_writer(&fields, "frys-rollback").unwrap();
        assert_eq!(
            (who.manager.as_str(), who.operation.as_deref()),
            ("argocd-controller", Some("Apply"))
        );
        assert!(template_writer(&fields[1..2], "frys-rollback").is_none());
        assert!(template_writer(&[], "frys-rollback").is_none());
    }

    #[test]
    fn advice_names_the_tool() {
        assert!(advice("argocd-controller").contains("Argo CD"));
        assert!(advice("kustomize-controller").contains("flux suspend"));
        assert!(advice("helm").contains("Helm release"));
        assert!(advice("kubectl-client-side-apply").contains("kubectl"));
        assert!(advice("deployer-bot").contains("deployer-bot"));
    }
}
