//! Verification of a remediation: the seed's six checks (DESIGN.md "Verification").
//!
//! 1. Availability: the serving Deployment finished its rollout (zero replicas after an
//!    emergency shutdown) and the serving Service has ready endpoints.
//! 2. Application health: HTTP GET of the health endpoint on each ready endpoint address;
//!    an endpoint that fails is probed again every `PROBE_RETRY` (2s) until it answers 2xx or
//!    the timeout is near. Probes reach only pods of the policy's namespace unless the
//!    operator allows more ([`reach`]).
//! 3. Performance: the policy's signals over the time since the remediation completed only,
//!    passing on `consecutivePasses` evaluations in a row, each with no signal Critical and at
//!    least one with data: Inconclusive is no pass, it is re-evaluated until the timeout and
//!    then fails with that reason. After a traffic rung (a route rung, or a switch to the
//!    standby) the target's own signals are not judged: the check is skipped.
//! 4. Dependencies and 5. data consistency: the policy's user checks (PromQL or HTTP).
//! 6. Traffic distribution: the Service selector or route weights read back as intended.
//!
//! Traffic rungs are verified on the user-facing side, not on the drained target: the switched
//! Service (EnvironmentSwitch), the backend that receives the traffic (TrafficShifting `to`,
//! CircuitBreaker `fallbackBackend`), and the route itself.
//!
//! How the RollbackEvent controller uses it: once the strategy's actions are applied, wait
//! `effective.stabilizationDelay` (the caller waits, so the wait can be persisted and survive a
//! restart), then call [`verify`] with a [`VerifyInput`] (for route rungs the expected weights
//! from [`expected_weights`] of the event's actions) and write the report to
//! `status.verification`. `verify` is bounded by `effective.verificationTimeout`: it never
//! returns later than that (plus the time to finish a request in flight).
//!
//! Every check that ran must pass for `Passed`; a failed availability, health or performance
//! check makes the verification `Failed`, failed dependency, consistency or traffic checks only
//! `Partial` (the remediation worked; something around it did not). Each failed check adds one
//! recommendation.
//!
//! The pure half (verdicts, overall status, recommendations, windows) is in [`rules`]; the
//! checks that read the cluster, Prometheus and the pods are in `checks`.

mod checks;
pub mod reach;
pub mod rules;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, time::Duration};

use futures::{StreamExt, future::BoxFuture};
use tokio::time::Instant;

use crate::{
    api::{CheckCategory, CheckStatus, EffectiveSettings, RollbackPolicySpec, VerificationReport},
    prometheus::MetricsSource,
    strategy::Remediation,
};

pub use rules::{expected_weights, overall_status, performance_window, recommendations};

/// Bound on verifying one step when neither the policy nor the operator says (same as the
/// operator's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Consecutive passing evaluations of the signals needed by default.
pub const DEFAULT_CONSECUTIVE_PASSES: u32 = 2;

/// What was done, to whom, and how it should be checked.
#[derive(Clone, Debug)]
pub struct VerifyInput<'a> {
    /// Namespace of the policy and its target.
    pub namespace: &'a str,
    /// The policy's target Deployment.
    pub target: &'a str,
    /// The target as read when verification started, or None to read it here. The checks
    /// share this one read; only a rollout still under way is read again.
    pub deployment: Option<&'a k8s_openapi::api::apps::v1::Deployment>,
    pub policy: &'a RollbackPolicySpec,
    /// `config::effective(policy, operator config)`.
    pub effective: &'a EffectiveSettings,
    /// The strategy that ran, with its parameters (it names the user-facing Service or route).
    pub remediation: &'a Remediation,
    /// When the remediation's last change was applied: performance counts from here.
    pub completed_at: jiff::Timestamp,
    /// Route weights the remediation intended (CircuitBreaker, TrafficShifting), by backend:
    /// [`expected_weights`] of the event's actions.
    pub expected_weights: Option<BTreeMap<String, u64>>,
    /// `{{ podRegex }}` of the target's ReplicaSets (memory and CPU presets).
    pub pod_regex: Option<&'a str>,
    /// The operator's HEALTH_CHECK_URL: its port and path are the default health check.
    pub health_check_url: Option<&'a str>,
}

/// Where verification reads from.
pub struct VerifyDeps<'a, S> {
    pub client: kube::Client,
    /// The policy's Prometheus; None when it has none (performance and PromQL checks skip).
    pub metrics: Option<&'a S>,
    /// For health and HTTP checks (each request gets its own short timeout).
    pub http: &'a reqwest::Client,
    /// Checks run at once (VERIFICATION_CONCURRENCY).
    pub concurrency: usize,
    /// URL prefixes probes may reach beyond the pods of the policy's namespace
    /// (`--allow-probe-url`; see [`reach`]).
    pub allow_probe_urls: &'a [String],
}

/// Runs one check within the deadline and times it. A named async fn rather than a closure, so
/// its future is provably Send for the controller.
async fn timed(
    deadline: Instant,
    index: usize,
    name: String,
    category: CheckCategory,
    job: BoxFuture<'_, crate::api::CheckResult>,
) -> (usize, crate::api::CheckResult) {
    let start = Instant::now();
    let mut result = match tokio::time::timeout_at(deadline, job).await {
        Ok(result) => result,
        Err(_) => rules::result(
            name,
            category,
            CheckStatus::Failed,
            BTreeMap::from([(
                rules::REASON.to_owned(),
                "did not finish within the verification timeout".to_owned(),
            )]),
        ),
    };
    result.duration_ms = millis(start.elapsed());
    (index, result)
}

/// Everything a check needs.
struct Ctx<'a, S> {
    input: &'a VerifyInput<'a>,
    deps: &'a VerifyDeps<'a, S>,
    deadline: Instant,
}

/// Runs the six checks and returns the report.
pub async fn verify<S: MetricsSource + Sync>(
    input: &VerifyInput<'_>,
    deps: &VerifyDeps<'_, S>,
) -> VerificationReport {
    let started = Instant::now();
    let timeout = input
        .effective
        .verification_timeout
        .as_ref()
        .and_then(|d| d.get().ok())
        .unwrap_or(DEFAULT_TIMEOUT);
    let ctx = Ctx {
        input,
        deps,
        deadline: started + timeout,
    };

    // The Service that serves users after the remediation, shared by checks 1 and 2.
    let serving = match tokio::time::timeout_at(ctx.deadline, checks::serving_service(&ctx)).await {
        Ok(s) => s,
        Err(_) => Err("finding the serving Service did not finish in time".into()),
    };

    let mut jobs: Vec<(String, CheckCategory, BoxFuture<'_, _>)> = vec![
        (
            checks::AVAILABILITY.into(),
            CheckCategory::Availability,
            Box::pin(checks::availability(&ctx, &serving)),
        ),
        (
            checks::HEALTH.into(),
            CheckCategory::Health,
            Box::pin(checks::health(&ctx, &serving)),
        ),
        (
            checks::PERFORMANCE.into(),
            CheckCategory::Performance,
            Box::pin(checks::performance(&ctx)),
        ),
    ];
    let user_checks = input.policy.verification.iter().flat_map(|v| &v.checks);
    for check in user_checks {
        jobs.push((
            check.name.clone(),
            check.category,
            Box::pin(checks::user_check(&ctx, check)),
        ));
    }
    jobs.push((
        checks::TRAFFIC.into(),
        CheckCategory::Traffic,
        Box::pin(checks::traffic(&ctx)),
    ));

    // Futures built in a loop, not a closure, so the whole verification is provably Send.
    let mut timed_jobs = Vec::with_capacity(jobs.len());
    for (i, (name, category, job)) in jobs.into_iter().enumerate() {
        timed_jobs.push(timed(ctx.deadline, i, name, category, job));
    }
    let mut results: Vec<_> = futures::stream::iter(timed_jobs)
        .buffer_unordered(deps.concurrency.max(1))
        .collect()
        .await;
    results.sort_by_key(|(i, _)| *i);
    let checks: Vec<_> = results.into_iter().map(|(_, r)| r).collect();

    VerificationReport {
        overall_status: overall_status(&checks),
        duration_ms: millis(started.elapsed()),
        recommendations: recommendations(&checks),
        checks,
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}
