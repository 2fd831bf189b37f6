//! Whether a policy can protect its target, and why not: its spec, its queries, one policy per
//! target, and the objects its rungs name (from the caches where the operator has them).

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, ResourceExt, api::DynamicObject, runtime::reflector::ObjectRef};

use super::PolicyContext;
use crate::{
    api::{EffectiveSettings, RollbackPolicy, RollbackPolicySpec, conditions},
    controller::evaluator,
    prometheus,
    strategy::{Kind, Reference, Remediation},
};

/// Whether the policy can protect its target, and why not.
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Pure verdict on a policy given what the cluster holds. `others` are other policies in the
/// same namespace (at least those with the same target).
pub fn readiness(
    policy: &RollbackPolicy,
    target_exists: bool,
    others: &[Arc<RollbackPolicy>],
    workload_label: &str,
) -> Readiness {
    let spec = &policy.spec;
    let not_ready = |reason, message: String| Readiness {
        ready: false,
        reason,
        message,
    };
    if let Some(problem) = spec_problems(spec).into_iter().next() {
        return not_ready(conditions::INVALID_SPEC, problem);
    }
    // Queries are parsed now, so a typo is reported here rather than at 3 a.m.
    if let Err(invalid) = prometheus::validate_metrics(&spec.metrics, workload_label) {
        return not_ready("InvalidQuery", invalid.to_string());
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

/// The verdict on a policy: [`readiness`], then the rungs' references.
pub(super) async fn check(
    pctx: &PolicyContext,
    policy: &RollbackPolicy,
    effective: &EffectiveSettings,
    target: Option<&Deployment>,
) -> Readiness {
    let ns = policy.namespace().unwrap_or_default();
    let workload_label = effective.workload_label.clone().unwrap_or_default();
    // Only policies with the same target can contest it.
    let others: Vec<_> = pctx
        .targets
        .targeting(&ns, &policy.spec.target_ref.name)
        .iter()
        .filter_map(|r| pctx.policies.get(r))
        .collect();
    let verdict = readiness(policy, target.is_some(), &others, &workload_label);
    if !verdict.ready {
        return verdict;
    }
    let missing = missing_references(pctx, policy, target).await;
    if missing.is_empty() {
        return verdict;
    }
    Readiness {
        ready: false,
        reason: conditions::REFERENCE_MISSING,
        message: missing.join("; "),
    }
}

/// The objects the ladder's rungs name that do not exist: routes, Services, the standby
/// Deployment, the revision `toRevision` asks for, a webhook's Secret (missing, without the
/// key, or not labelled for policies' use). Deployments and revisions come from the
/// caches; other kinds are read.
async fn missing_references(
    pctx: &PolicyContext,
    policy: &RollbackPolicy,
    target: Option<&Deployment>,
) -> Vec<String> {
    let ns = policy.namespace().unwrap_or_default();
    let mut to_read = vec![];
    let mut secrets = vec![];
    let mut missing = vec![];
    for rung in &policy.spec.strategies {
        let strategy = rung.type_;
        let Ok(remediation) = Remediation::from_rung(rung) else {
            continue;
        };
        for reference in remediation.references() {
            match reference {
                Reference::Object {
                    kind: Kind::Deployment,
                    name,
                    role,
                } => {
                    let cached = ObjectRef::<Deployment>::new(&name).within(&ns);
                    if pctx.deployments.get(&cached).is_none() {
                        let role = role.map(|r| format!("{r} ")).unwrap_or_default();
                        missing.push(format!("{strategy}: {role}Deployment {name} not found"));
                    }
                }
                Reference::Object { kind, name, .. } => to_read.push((strategy, kind, name)),
                Reference::Secret(key) => secrets.push((strategy, key)),
                Reference::Revision(to) => {
                    let Some(d) = target else { continue };
                    let revisions: Vec<i64> = pctx
                        .replica_sets
                        .owned(d)
                        .iter()
                        .map(evaluator::revision)
                        .collect();
                    if !revisions.contains(&to) {
                        missing.push(format!(
                            "{strategy}: revision {to} not in the Deployment's history {revisions:?}"
                        ));
                    }
                }
            }
        }
    }
    if to_read.is_empty() && secrets.is_empty() {
        return missing;
    }
    // Objects the operator does not cache are read from the API server: once per list of
    // references while they all exist, re-read after REFERENCES_TTL (a reconcile per policy
    // per interval must not cost GETs); while one is missing, on every reconcile, so a fix is
    // seen at once. A rung whose object went meanwhile fails its plan and escalates.
    let policy_key = super::super::evaluation::key(policy);
    let asked = format!("{to_read:?}{secrets:?}");
    if pctx
        .references
        .lock()
        .expect("lock")
        .get(&policy_key)
        .is_some_and(|(checked, at)| *checked == asked && at.elapsed() < REFERENCES_TTL)
    {
        return missing;
    }
    let before = missing.len();
    // A read that failed (not a 404) proves nothing either way: not trusted for the TTL.
    let mut unread = false;
    // The value is read and dropped: what counts is that the Secret exists, opts in and has the key.
    for (strategy, key) in secrets {
        use crate::notify::UrlResolver;
        if let Err(error) = pctx.shared.client.resolve_url(&ns, &key).await {
            missing.push(format!("{strategy}: {error}"));
        }
    }
    for (strategy, kind, name) in to_read {
        let api: Api<DynamicObject> =
            Api::namespaced_with(pctx.shared.client.clone(), &ns, &kind.api_resource());
        match api.get_opt(&name).await {
            Ok(Some(_)) => {}
            Ok(None) => missing.push(format!("{strategy}: {} {name} not found", kind.as_str())),
            // An API without the kind (e.g. no Gateway API CRDs installed) answers 404 too.
            Err(kube::Error::Api(e)) if e.code == 404 => missing.push(format!(
                "{strategy}: {} {name} not found ({} not served)",
                kind.as_str(),
                kind.api_version()
            )),
            Err(error) => {
                unread = true;
                tracing::warn!(%error, "checking {} {name}", kind.as_str());
            }
        }
    }
    let mut checked = pctx.references.lock().expect("lock");
    if missing.len() == before && !unread {
        checked.insert(policy_key, (asked, std::time::Instant::now()));
    } else {
        checked.remove(&policy_key);
    }
    missing
}

/// How long references found present are trusted before they are read again.
const REFERENCES_TTL: std::time::Duration = std::time::Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MetricSpec, Preset, Rung, StrategyKind, TargetRef};

    fn policy(name: &str, target: &str, created_secs: i64) -> RollbackPolicy {
        crate::fixtures::policy(name)
            .with_target(target)
            .with_created(created_secs)
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
                alert: None,
                warning: None,
                critical: None,
                direction: None,
                weight: None,
                class: None,
                baseline: None
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
        let r = readiness(&policy("web", "web", 0), false, &[], "app");
        assert!(!r.ready);
        assert_eq!(r.reason, "TargetNotFound");
        assert_eq!(r.message, "Deployment web not found in namespace shop");
        assert!(readiness(&policy("web", "web", 0), true, &[], "app").ready);
    }

    #[test]
    fn second_policy_for_a_target_is_not_ready() {
        let first = Arc::new(policy("a-first", "web", 0));
        let second = Arc::new(policy("b-second", "web", 10));
        let other = Arc::new(policy("c-other", "api", 5));
        let all = vec![first.clone(), second.clone(), other.clone()];
        assert!(readiness(&first, true, &all, "app").ready);
        let r = readiness(&second, true, &all, "app");
        assert_eq!(r.reason, "DuplicateTarget");
        assert!(r.message.contains("a-first"), "{}", r.message);
        assert!(readiness(&other, true, &all, "app").ready);
    }

    #[test]
    fn same_age_ties_break_by_name() {
        let a = Arc::new(policy("a", "web", 0));
        let b = Arc::new(policy("b", "web", 0));
        let all = vec![a.clone(), b.clone()];
        assert!(readiness(&a, true, &all, "app").ready);
        assert!(!readiness(&b, true, &all, "app").ready);
    }

    #[test]
    fn unparseable_durations_are_reported() {
        let mut p = policy("web", "web", 0);
        p.spec.cooldown = Some("1x".into());
        let r = readiness(&p, true, &[], "app");
        assert_eq!(r.reason, "InvalidSpec");
        assert!(
            r.message
                .starts_with("spec.cooldown: invalid duration \"1x\""),
            "{}",
            r.message
        );
    }
}
