//! The RollbackPolicy reconciler: validates the policy against the cluster, resolves its
//! effective settings and reports them in status.

use std::{sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use k8s_openapi::{api::apps::v1::Deployment, apimachinery::pkg::apis::meta::v1::Condition};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Event, EventType},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde_json::json;

use super::{Context, Error, POLICY_MANAGER, Shutdown, condition, scoped_api, set_condition};
use crate::{
    api::{RollbackPolicy, RollbackPolicySpec},
    config,
};

const NAME: &str = "policy";

struct PolicyContext {
    shared: Arc<Context>,
    policies: Store<RollbackPolicy>,
    deployments: Store<Deployment>,
}

/// Builds the controller; the stream must be polled to run it. The returned store is ready
/// once policies are listed.
pub(super) fn controller(
    ctx: Arc<Context>,
    shutdown: Shutdown,
) -> (impl Stream<Item = ()>, Store<RollbackPolicy>) {
    let ns = ctx.namespace.as_deref();
    let policies: Api<RollbackPolicy> = scoped_api(&ctx.client, ns);
    let controller = Controller::new(policies.clone(), watcher::Config::default());
    let policy_store = controller.store();

    // Deployments are cached (not fetched per reconcile) and trigger the policies that target them.
    let (deployments, writer) = reflector::store::<Deployment>();
    let by_target = policy_store.clone();
    let deployment_triggers = reflector::reflector(
        writer,
        watcher(
            scoped_api::<Deployment>(&ctx.client, ns),
            watcher::Config::default(),
        ),
    )
    .touched_objects()
    .default_backoff()
    .filter_map(|event| async move {
        event
            .inspect_err(|error| tracing::warn!(%error, "watching Deployments"))
            .ok()
    })
    .flat_map(move |d: Deployment| {
        futures::stream::iter(policies_targeting(
            &by_target,
            d.namespace().as_deref(),
            &d.name_any(),
        ))
    });

    let siblings = policy_store.clone();
    let pctx = Arc::new(PolicyContext {
        shared: ctx,
        policies: policy_store.clone(),
        deployments,
    });
    let stream = controller
        .reconcile_on(deployment_triggers)
        // A policy appearing or going away changes its siblings' one-policy-per-target verdict.
        .watches(
            policies,
            watcher::Config::default(),
            move |p: RollbackPolicy| {
                policies_targeting(&siblings, p.namespace().as_deref(), &p.spec.target_ref.name)
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, pctx)
        .map(|result| {
            if let Err(error) = result {
                tracing::debug!(%error, "policy controller event");
            }
        });
    (stream, policy_store)
}

fn policies_targeting(
    store: &Store<RollbackPolicy>,
    namespace: Option<&str>,
    target: &str,
) -> Vec<ObjectRef<RollbackPolicy>> {
    store
        .state()
        .iter()
        .filter(|p| p.namespace().as_deref() == namespace && p.spec.target_ref.name == target)
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// Whether the policy can protect its target, and why not.
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Pure verdict on a policy given what the cluster holds. `others` are the other policies in
/// the same namespace.
pub fn readiness(
    policy: &RollbackPolicy,
    target_exists: bool,
    others: &[Arc<RollbackPolicy>],
) -> Readiness {
    let spec = &policy.spec;
    let not_ready = |reason, message: String| Readiness {
        ready: false,
        reason,
        message,
    };
    if let Some(problem) = spec_problems(spec).into_iter().next() {
        return not_ready("InvalidSpec", problem);
    }
    // One policy per target: the oldest (then the first by name) keeps it.
    let key = |p: &RollbackPolicy| (p.creation_timestamp(), p.name_any());
    if let Some(owner) = others
        .iter()
        .filter(|o| o.spec.target_ref.name == spec.target_ref.name && o.uid() != policy.uid())
        .filter(|o| key(o) < key(policy))
        .min_by_key(|o| key(o))
    {
        return not_ready(
            "DuplicateTarget",
            format!(
                "RollbackPolicy {} already protects {} {}; a target has one policy",
                owner.name_any(),
                spec.target_ref.kind,
                spec.target_ref.name
            ),
        );
    }
    if !target_exists {
        return not_ready(
            "TargetNotFound",
            format!(
                "{} {} not found in namespace {}",
                spec.target_ref.kind,
                spec.target_ref.name,
                policy.namespace().unwrap_or_default()
            ),
        );
    }
    Readiness {
        ready: true,
        reason: "Valid",
        message: format!(
            "protecting {} {} with {} signal(s) and {} strategy rung(s)",
            spec.target_ref.kind,
            spec.target_ref.name,
            spec.metrics.len(),
            spec.strategies.len()
        ),
    }
}

/// Problems the API server's schema cannot catch (it validates shape, not meaning).
fn spec_problems(spec: &RollbackPolicySpec) -> Vec<String> {
    let mut problems = vec![];
    let verification = spec.verification.as_ref();
    let durations = [
        ("interval", spec.interval.as_ref()),
        ("rateWindow", spec.rate_window.as_ref()),
        ("releaseWindow", spec.release_window.as_ref()),
        ("rollbackTimeout", spec.rollback_timeout.as_ref()),
        ("cooldown", spec.cooldown.as_ref()),
        (
            "verification.timeout",
            verification.and_then(|v| v.timeout.as_ref()),
        ),
        (
            "verification.stabilizationDelay",
            verification.and_then(|v| v.stabilization_delay.as_ref()),
        ),
    ];
    for (field, value) in durations {
        if let Some(Err(e)) = value.map(|d| d.get()) {
            problems.push(format!("spec.{field}: {e}"));
        }
    }
    problems
}

async fn reconcile(policy: Arc<RollbackPolicy>, pctx: Arc<PolicyContext>) -> Result<Action, Error> {
    let ctx = &pctx.shared;
    let _timer = ctx.metrics.reconcile_started(NAME);
    let ns = policy
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = policy.name_any();
    ctx.metrics.policies.set(pctx.policies.state().len() as i64);

    let target = ObjectRef::<Deployment>::new(&policy.spec.target_ref.name).within(&ns);
    let target_exists = pctx.deployments.get(&target).is_some();
    let others: Vec<_> = pctx
        .policies
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .collect();
    let verdict = readiness(&policy, target_exists, &others);

    let old_status = policy.status.clone().unwrap_or_default();
    let mut conditions: Vec<Condition> = old_status.conditions.clone();
    let previous_ready = conditions.iter().find(|c| c.type_ == "Ready").cloned();
    set_condition(
        &mut conditions,
        condition(
            "Ready",
            verdict.ready,
            verdict.reason,
            verdict.message.clone(),
        ),
    );
    let suspended = policy.spec.suspend;
    set_condition(
        &mut conditions,
        condition(
            "Suspended",
            suspended,
            if suspended { "Suspended" } else { "Active" },
            if suspended {
                "spec.suspend is true: no evaluation and no remediation"
            } else {
                "evaluating and remediating"
            },
        ),
    );
    let effective = config::effective(&policy.spec, &ctx.config);

    let patch = json!({
        "apiVersion": RollbackPolicy::api_version(&()),
        "kind": RollbackPolicy::kind(&()),
        "status": {
            "observedGeneration": policy.metadata.generation,
            "conditions": conditions,
            "effective": effective,
        }
    });
    let api: Api<RollbackPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch_status(
        &name,
        &PatchParams::apply(POLICY_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;

    let changed = previous_ready
        .as_ref()
        .is_none_or(|c| c.reason != verdict.reason || (c.status == "True") != verdict.ready);
    if changed {
        tracing::info!(policy = %name, namespace = %ns, ready = verdict.ready, reason = verdict.reason, message = %verdict.message, "policy readiness changed");
        let event = Event {
            type_: if verdict.ready {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: verdict.reason.into(),
            note: Some(verdict.message),
            action: "Validate".into(),
            secondary: None,
        };
        // Events are best effort: a failure to record one must not fail the reconcile.
        if let Err(error) = ctx.recorder.publish(&event, &policy.object_ref(&())).await {
            tracing::warn!(%error, policy = %name, "could not publish event");
        }
    }

    let interval = effective
        .interval
        .and_then(|d| d.get().ok())
        .unwrap_or(ctx.config.interval);
    Ok(Action::requeue(interval.max(Duration::from_secs(1))))
}

fn error_policy(policy: Arc<RollbackPolicy>, error: &Error, pctx: Arc<PolicyContext>) -> Action {
    tracing::warn!(policy = %policy.name_any(), %error, "policy reconcile failed");
    pctx.shared
        .metrics
        .reconcile_failed(NAME, error.metric_label());
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MetricSpec, Preset, Rung, StrategyKind, TargetRef};
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

    fn policy(name: &str, target: &str, created_secs: i64) -> RollbackPolicy {
        let mut p = RollbackPolicy::new(
            name,
            yaml_serde::from_str::<RollbackPolicySpec>(&format!(
                "targetRef: {{name: {target}}}\nmetrics: [{{name: errors, preset: errorRate}}]\nstrategies: [{{type: VersionRollback}}]"
            ))
            .unwrap(),
        );
        p.metadata.namespace = Some("shop".into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.creation_timestamp = Some(Time(
            Timestamp::from_second(1_700_000_000 + created_secs).unwrap(),
        ));
        p
    }

    #[test]
    fn spec_defaults_parse() {
        let p = policy("web", "web", 0);
        assert_eq!(
            p.spec.target_ref,
            TargetRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "web".into()
            }
        );
        assert_eq!(p.spec.consecutive_failures, 3);
        assert_eq!(
            p.spec.metrics[0],
            MetricSpec {
                name: "errors".into(),
                preset: Some(Preset::ErrorRate),
                query: None,
                warning: None,
                critical: None,
                direction: None,
                weight: None,
                class: None
            }
        );
        assert!(matches!(
            p.spec.strategies[..],
            [Rung {
                type_: StrategyKind::VersionRollback,
                ..
            }]
        ));
    }

    #[test]
    fn missing_target_is_explained() {
        let r = readiness(&policy("web", "web", 0), false, &[]);
        assert!(!r.ready);
        assert_eq!(r.reason, "TargetNotFound");
        assert_eq!(r.message, "Deployment web not found in namespace shop");
        assert!(readiness(&policy("web", "web", 0), true, &[]).ready);
    }

    #[test]
    fn second_policy_for_a_target_is_not_ready() {
        let first = Arc::new(policy("a-first", "web", 0));
        let second = Arc::new(policy("b-second", "web", 10));
        let other = Arc::new(policy("c-other", "api", 5));
        let all = vec![first.clone(), second.clone(), other.clone()];
        assert!(readiness(&first, true, &all).ready);
        let r = readiness(&second, true, &all);
        assert_eq!(r.reason, "DuplicateTarget");
        assert!(r.message.contains("a-first"), "{}", r.message);
        assert!(readiness(&other, true, &all).ready);
    }

    #[test]
    fn same_age_ties_break_by_name() {
        let a = Arc::new(policy("a", "web", 0));
        let b = Arc::new(policy("b", "web", 0));
        let all = vec![a.clone(), b.clone()];
        assert!(readiness(&a, true, &all).ready);
        assert!(!readiness(&b, true, &all).ready);
    }

    #[test]
    fn unparseable_durations_are_reported() {
        let mut p = policy("web", "web", 0);
        p.spec.cooldown = Some("1x".into());
        let r = readiness(&p, true, &[]);
        assert_eq!(r.reason, "InvalidSpec");
        assert!(
            r.message
                .starts_with("spec.cooldown: invalid duration \"1x\""),
            "{}",
            r.message
        );
    }
}
