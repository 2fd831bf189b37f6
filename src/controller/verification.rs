//! Verification of an applied remediation.
//!
//! Today: the availability check (the seed's first of six): the target's rollout finished and
//! its replicas are available, or, after an emergency shutdown, it is scaled to zero.

use std::{collections::BTreeMap, time::Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, ResourceExt};

use super::{Context, Error};
use crate::api::{
    CheckCategory, CheckResult, CheckStatus, RollbackEvent, RollbackPolicy, StrategyKind,
    VerificationReport, VerificationStatus,
};

/// Runs the availability check and reports it.
pub async fn availability(
    ctx: &Context,
    event: &RollbackEvent,
    policy: &RollbackPolicy,
) -> Result<VerificationReport, Error> {
    let start = Instant::now();
    let ns = event.namespace().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let target = deployments.get_opt(&policy.spec.target_ref.name).await?;
    let check = availability_check(
        target.as_ref(),
        event.spec.strategy,
        start.elapsed().as_millis() as u64,
    );
    Ok(report(vec![check], start.elapsed().as_millis() as u64))
}

/// The availability check on a Deployment as read (pure).
pub fn availability_check(
    target: Option<&Deployment>,
    strategy: StrategyKind,
    duration_ms: u64,
) -> CheckResult {
    let mut details = BTreeMap::new();
    let status = match target {
        None => {
            details.insert(
                "error".into(),
                "the target Deployment does not exist".into(),
            );
            CheckStatus::Failed
        }
        Some(d) => {
            let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let st = d.status.clone().unwrap_or_default();
            let (updated, available) = (
                st.updated_replicas.unwrap_or(0),
                st.available_replicas.unwrap_or(0),
            );
            let observed = st.observed_generation >= d.metadata.generation;
            details.insert("desiredReplicas".into(), desired.to_string());
            details.insert("updatedReplicas".into(), updated.to_string());
            details.insert("availableReplicas".into(), available.to_string());
            let ok = if strategy == StrategyKind::EmergencyShutdown {
                desired == 0 && available == 0
            } else {
                observed && updated >= desired && available >= desired && desired > 0
            };
            if ok {
                CheckStatus::Passed
            } else {
                CheckStatus::Failed
            }
        }
    };
    CheckResult {
        name: "availability".into(),
        category: CheckCategory::Availability,
        status,
        duration_ms,
        details,
    }
}

/// Overall verdict: Passed when every run check passed.
fn report(checks: Vec<CheckResult>, duration_ms: u64) -> VerificationReport {
    let failed: Vec<&CheckResult> = checks
        .iter()
        .filter(|c| c.status == CheckStatus::Failed)
        .collect();
    let recommendations = failed
        .iter()
        .map(|c| {
            format!(
                "{} check failed ({:?}): look at the target's rollout and pods.",
                c.name, c.details
            )
        })
        .collect();
    VerificationReport {
        overall_status: if failed.is_empty() {
            VerificationStatus::Passed
        } else {
            VerificationStatus::Failed
        },
        duration_ms,
        checks,
        recommendations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(desired: i32, available: i32, generation: i64, observed: i64) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "generation": generation},
            "spec": {"replicas": desired, "selector": {}, "template": {}},
            "status": {"observedGeneration": observed, "updatedReplicas": available, "availableReplicas": available}
        }))
        .unwrap()
    }

    #[test]
    fn rollout_must_be_finished_and_available() {
        let check = |d: &Deployment, s| availability_check(Some(d), s, 0).status;
        assert_eq!(
            check(&deployment(2, 2, 3, 3), StrategyKind::VersionRollback),
            CheckStatus::Passed
        );
        assert_eq!(
            check(&deployment(2, 1, 3, 3), StrategyKind::VersionRollback),
            CheckStatus::Failed
        );
        assert_eq!(
            check(&deployment(2, 2, 4, 3), StrategyKind::VersionRollback),
            CheckStatus::Failed
        );
        assert_eq!(
            check(&deployment(0, 0, 4, 4), StrategyKind::EmergencyShutdown),
            CheckStatus::Passed
        );
        assert_eq!(
            availability_check(None, StrategyKind::VersionRollback, 0).status,
            CheckStatus::Failed
        );
    }
}
