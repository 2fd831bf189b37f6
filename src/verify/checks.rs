//! The checks: reads of the cluster, Prometheus and the pods, judged by [`rules`].

use std::{borrow::Cow, collections::BTreeMap, time::Duration};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api,
    api::{DynamicObject, ListParams},
};
use tokio::time::Instant;

use super::{Ctx, DEFAULT_CONSECUTIVE_PASSES, reach, rules};
use crate::{
    api::{CheckCategory, CheckResult, CheckSpec, CheckStatus, HttpCheck, MetricSeverity},
    assess,
    prometheus::{self, MetricsSource, PolicyQueries, Sample, Signal, Vars, template},
    strategy::{
        Rollout, Traffic,
        route::{self, RuleSelector},
    },
};

pub const AVAILABILITY: &str = "availability";
pub const HEALTH: &str = "application-health";
pub const PERFORMANCE: &str = "performance";
pub const TRAFFIC: &str = "traffic-distribution";

/// Bound on one HTTP probe of one pod.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two rounds of health probes while an endpoint has not answered 2xx yet.
pub const PROBE_RETRY: Duration = Duration::from_secs(2);
/// Pause between two reads of a rollout that is not finished yet.
const ROLLOUT_POLL: Duration = Duration::from_secs(1);

type Details = BTreeMap<String, String>;

fn details<const N: usize>(pairs: [(&str, String); N]) -> Details {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The Service users reach after the remediation, or why there is none.
pub async fn serving_service<S>(ctx: &Ctx<'_, S>) -> Result<String, String> {
    let input = ctx.input;
    // The rung says who serves users afterwards; else it is the target's own Service.
    if let Some(service) = input.remediation.probes().serving? {
        return Ok(service);
    }
    if let Some(hc) = input
        .policy
        .verification
        .as_ref()
        .and_then(|v| v.health_check.as_ref())
    {
        return Ok(hc.service.clone());
    }
    // A Service whose selector picks the target's pods.
    let client = ctx.deps.client.clone();
    let deployment = match input.deployment {
        Some(d) => Cow::Borrowed(d),
        None => Cow::Owned(read_deployment(ctx, input.target).await?),
    };
    let labels = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let services = Api::<Service>::namespaced(client, input.namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing Services: {e}"))?;
    services
        .items
        .iter()
        .filter(|s| {
            let selector = s.spec.as_ref().and_then(|s| s.selector.as_ref());
            selector.is_some_and(|sel| {
                !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
        })
        .filter_map(|s| s.metadata.name.clone())
        .min()
        .ok_or_else(|| format!("no Service selects the pods of {}", input.target))
}

async fn read_deployment<S>(ctx: &Ctx<'_, S>, name: &str) -> Result<Deployment, String> {
    Api::<Deployment>::namespaced(ctx.deps.client.clone(), ctx.input.namespace)
        .get(name)
        .await
        .map_err(|e| format!("reading Deployment {name}: {e}"))
}

/// The EndpointSlices of a Service.
async fn slices<S>(ctx: &Ctx<'_, S>, service: &str) -> Result<Vec<EndpointSlice>, String> {
    let slices = Api::<EndpointSlice>::namespaced(ctx.deps.client.clone(), ctx.input.namespace)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .map_err(|e| format!("listing the EndpointSlices of Service {service}: {e}"))?;
    Ok(slices.items)
}

/// Ready addresses of a Service's EndpointSlices (counted, never connected to).
async fn addresses<S>(ctx: &Ctx<'_, S>, service: &str) -> Result<Vec<String>, String> {
    Ok(rules::ready_addresses(&slices(ctx, service).await?))
}

/// Ready addresses of a Service's EndpointSlices with the Pods they name, for probes.
async fn candidates<S>(ctx: &Ctx<'_, S>, service: &str) -> Result<Vec<reach::Candidate>, String> {
    let slices = slices(ctx, service).await?;
    Ok(reach::candidates(slices.iter().flat_map(|s| &s.endpoints)))
}

/// Check 1, availability. A rollout still under way is polled until it finishes or time runs
/// out, so a rollback that is still rolling out is not failed for being slow.
pub async fn availability<S>(ctx: &Ctx<'_, S>, serving: &Result<String, String>) -> CheckResult {
    // The first look at the target uses the read verification started with.
    let mut known = ctx.input.deployment;
    loop {
        let (status, d) = availability_once(ctx, serving, known.take()).await;
        if status == CheckStatus::Passed || Instant::now() + ROLLOUT_POLL >= ctx.deadline {
            return rules::result(AVAILABILITY, CheckCategory::Availability, status, d);
        }
        tokio::time::sleep(ROLLOUT_POLL).await;
    }
}

async fn availability_once<S>(
    ctx: &Ctx<'_, S>,
    serving: &Result<String, String>,
    known: Option<&Deployment>,
) -> (CheckStatus, Details) {
    let input = ctx.input;
    let mut d = Details::new();
    let mut problems = vec![];
    // The Deployment that serves: the target, or the standby after an environment switch.
    // Route rungs move traffic away from the target, so its rollout says nothing.
    let (deployment, expect_zero) = match &input.remediation.probes().rollout {
        Rollout::Other(standby) => (Some(standby.clone()), false),
        Rollout::TargetAtZero => (Some(input.target.to_owned()), true),
        Rollout::Target => (Some(input.target.to_owned()), false),
        Rollout::None => (None, false),
    };
    if let Some(name) = deployment {
        d.insert("deployment".into(), name.clone());
        let read = match known.filter(|k| k.metadata.name.as_deref() == Some(name.as_str())) {
            Some(k) => Ok(Cow::Borrowed(k)),
            None => read_deployment(ctx, &name).await.map(Cow::Owned),
        };
        match read {
            Ok(dep) => {
                let status = dep.status.clone().unwrap_or_default();
                d.insert(
                    "replicas".into(),
                    format!(
                        "{} available of {} desired",
                        status.available_replicas.unwrap_or(0),
                        dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
                    ),
                );
                problems.extend(
                    rules::rollout_problem(&dep, expect_zero)
                        .map(|p| format!("Deployment {name}: {p}")),
                );
            }
            Err(e) => problems.push(e),
        }
    }
    match serving {
        Ok(service) => {
            d.insert("service".into(), service.clone());
            match addresses(ctx, service).await {
                Ok(a) if a.is_empty() => {
                    problems.push(format!("Service {service} has no ready endpoints"));
                }
                Ok(a) => {
                    d.insert("readyEndpoints".into(), a.len().to_string());
                }
                Err(e) => problems.push(e),
            }
        }
        Err(why) => {
            d.insert("service".into(), format!("not checked: {why}"));
        }
    }
    verdict(d, problems)
}

/// Check 2, application health: the health endpoint on every ready address of its Service.
pub async fn health<S>(ctx: &Ctx<'_, S>, serving: &Result<String, String>) -> CheckResult {
    let skip = |why: &str| rules::skipped(HEALTH, CheckCategory::Health, why);
    if ctx.input.remediation.probes().stopped {
        return skip("the workload is shut down on purpose");
    }
    let configured = ctx
        .input
        .policy
        .verification
        .as_ref()
        .and_then(|v| v.health_check.clone());
    let check = match (configured, ctx.input.health_check_url, serving) {
        (Some(c), _, _) => c,
        (None, Some(url), Ok(service)) => match rules::default_health_check(url, service) {
            Some(c) => c,
            None => return skip(&format!("HEALTH_CHECK_URL {url:?} is not a URL")),
        },
        (None, Some(_), Err(why)) => return skip(why),
        (None, None, _) => {
            return skip("no verification.healthCheck and no operator HEALTH_CHECK_URL");
        }
    };
    let (status, d) = probe(ctx, &check, true).await;
    rules::result(HEALTH, CheckCategory::Health, status, d)
}

/// GET `check.path` on each ready address of `check.service` that the operator may reach
/// ([`reach`]); passes when every one has answered 2xx. With `retry` (the health check), an
/// endpoint that fails is probed again every [`PROBE_RETRY`] until it answers 2xx or the
/// verification timeout is near, so one lost request does not fail a remediation; one that
/// answered 2xx once has passed. Without it (user checks), one round.
async fn probe<S>(ctx: &Ctx<'_, S>, check: &HttpCheck, retry: bool) -> (CheckStatus, Details) {
    let mut passed: BTreeMap<String, String> = BTreeMap::new();
    let mut rounds = 0u32;
    loop {
        rounds += 1;
        let (status, mut d) = probe_round(ctx, check, &mut passed).await;
        let out_of_time = Instant::now() + PROBE_RETRY >= ctx.deadline;
        if status == CheckStatus::Passed || !retry || out_of_time {
            if retry {
                d.insert("rounds".into(), rounds.to_string());
            }
            return (status, d);
        }
        tokio::time::sleep(PROBE_RETRY).await;
    }
}

/// One round: the endpoints read afresh, those not passed yet probed at once.
async fn probe_round<S>(
    ctx: &Ctx<'_, S>,
    check: &HttpCheck,
    passed: &mut BTreeMap<String, String>,
) -> (CheckStatus, Details) {
    let mut d = details([
        ("service", check.service.clone()),
        ("request", format!("GET :{}{}", check.port, check.path)),
    ]);
    let candidates = match candidates(ctx, &check.service).await {
        Ok(c) if c.is_empty() => {
            let reason = format!("Service {} has no ready endpoints", check.service);
            d.insert(rules::REASON.into(), reason);
            return (CheckStatus::Failed, d);
        }
        Ok(c) => c,
        Err(e) => {
            d.insert(rules::REASON.into(), e);
            return (CheckStatus::Failed, d);
        }
    };
    let pods = Api::<Pod>::namespaced(ctx.deps.client.clone(), ctx.input.namespace);
    let answers = futures::future::join_all(candidates.iter().map(|candidate| {
        let pods = pods.clone();
        let earlier = passed.get(&candidate.address).cloned();
        async move {
            if let Some(text) = earlier {
                return (true, text, false);
            }
            // Only what the cluster wrote decides where the operator connects.
            let pod = match &candidate.pod {
                Some((_, name)) => match pods.get_opt(name).await {
                    Ok(p) => p,
                    Err(e) => return (false, format!("reading its Pod {name}: {e}"), false),
                },
                None => None,
            };
            let question = reach::Question {
                namespace: ctx.input.namespace,
                service: &check.service,
                port: check.port,
                path: &check.path,
                candidate,
                pod: pod.as_ref(),
                allow: ctx.deps.allow_probe_urls,
            };
            if let Err(why) = reach::decide(&question) {
                return (false, format!("refused: {why}"), true);
            }
            let url = reach::address_url(&candidate.address, check.port, &check.path);
            let (ok, text) = get(ctx, &url).await;
            (ok, text, false)
        }
    }))
    .await;
    let mut failed = 0;
    let mut refused = 0;
    for (candidate, (ok, text, was_refused)) in candidates.iter().zip(answers) {
        if ok {
            passed.insert(candidate.address.clone(), text.clone());
        } else {
            failed += 1;
        }
        refused += usize::from(was_refused);
        d.insert(format!("endpoint {}", candidate.address), text);
    }
    if failed == 0 {
        return (CheckStatus::Passed, d);
    }
    let mut reason = format!(
        "{failed} of {} endpoints did not answer 2xx on {}",
        candidates.len(),
        check.path
    );
    if refused > 0 {
        reason.push_str(&format!(
            "; {refused} not probed: not a pod of namespace {} (see the endpoint details)",
            ctx.input.namespace
        ));
    }
    d.insert(rules::REASON.into(), reason);
    (CheckStatus::Failed, d)
}

/// One GET, bounded by [`PROBE_TIMEOUT`] and the verification deadline. The answer is told by
/// its status, content type and size only: a body is never read, so never echoed.
async fn get<S>(ctx: &Ctx<'_, S>, url: &str) -> (bool, String) {
    let left = ctx.deadline.saturating_duration_since(Instant::now());
    let limit = PROBE_TIMEOUT.min(left).max(Duration::from_millis(100));
    let start = Instant::now();
    let answer = ctx.deps.http.get(url).timeout(limit).send().await;
    let ms = start.elapsed().as_millis();
    match answer {
        Ok(r) => {
            let kind = r
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("no content type")
                .chars()
                .take(64)
                .collect::<String>();
            let size = r
                .content_length()
                .map_or("size unknown".to_owned(), |n| format!("{n} bytes"));
            (
                r.status().is_success(),
                format!("{} in {ms}ms ({kind}, {size})", r.status().as_u16()),
            )
        }
        Err(e) if e.is_timeout() => (false, format!("no answer within {limit:?}")),
        Err(e) => (false, format!("error after {ms}ms: {}", error_text(&e))),
    }
}

/// A request error in words without the URL's user info (there is none here, but a refused
/// name is better told by the egress rule than by reqwest's chain).
fn error_text(e: &reqwest::Error) -> String {
    match crate::egress::find_in_chain(e) {
        Some(refused) => refused.to_string(),
        None => crate::egress::redact_userinfo_in_text(&e.to_string()),
    }
}

/// Template variables with `{{ window }}` covering the time since the remediation completed.
fn vars<'a, S>(ctx: &'a Ctx<'_, S>) -> Vars<'a> {
    let since = jiff::Timestamp::now().duration_since(ctx.input.completed_at);
    Vars {
        namespace: ctx.input.namespace,
        target: ctx.input.target,
        pod_regex: ctx.input.pod_regex,
        window: rules::performance_window(since.try_into().unwrap_or_default()),
    }
}

/// Check 3, performance: the signals re-evaluated until `consecutivePasses` evaluations in a row
/// have no Critical signal, or time runs out.
pub async fn performance<S: MetricsSource + Sync>(ctx: &Ctx<'_, S>) -> CheckResult {
    let skip = |why: &str| rules::skipped(PERFORMANCE, CheckCategory::Performance, why);
    let input = ctx.input;
    if input.remediation.probes().stopped {
        return skip("the workload is shut down on purpose: its signals have nothing to judge");
    }
    // Traffic moved off the target (a route rung, or a switch to the standby): its own signals
    // going quiet is expected, and judging them would make Inconclusive the verdict.
    if matches!(
        input.remediation.probes().rollout,
        Rollout::None | Rollout::Other(_)
    ) {
        return skip(
            "the rung moved traffic away from the target: its own signals are not judged (availability, health and traffic checks read what serves now)",
        );
    }
    let Some(metrics) = ctx.deps.metrics else {
        return skip("no Prometheus: set spec.prometheus or the operator's --prometheus-url");
    };
    if input.policy.metrics.is_empty() {
        return skip("the policy has no signals");
    }
    let needed = input
        .policy
        .verification
        .as_ref()
        .and_then(|v| v.consecutive_passes)
        .unwrap_or(DEFAULT_CONSECUTIVE_PASSES);
    let interval = input
        .effective
        .interval
        .as_ref()
        .and_then(|d| d.get().ok())
        .unwrap_or(Duration::from_secs(30))
        .max(Duration::from_secs(1));
    let label = input.effective.workload_label.as_deref().unwrap_or("app");
    let signals = Signal::for_policy(
        &input.policy.metrics,
        label,
        input.policy.min_request_rate.is_some(),
    );
    let mut streak = rules::Streak::default();
    loop {
        let vars = vars(ctx);
        let queries = PolicyQueries {
            policy: (),
            endpoint: (),
            namespace: input.namespace.to_owned(),
            target: input.target.to_owned(),
            pod_regex: input.pod_regex.map(str::to_owned),
            window: vars.window,
            signals: signals.clone(),
        };
        let readings = prometheus::read_policy(metrics, queries).await;
        let verdicts: Vec<_> = assess::signals(input.policy, input.effective, &readings)
            .iter()
            .map(|s| assess::judge(&s.metric, &s.sample, input.policy.no_data))
            .collect();
        let critical: Vec<_> = verdicts
            .iter()
            .filter(|v| v.severity == MetricSeverity::Critical)
            .collect();
        // One where no signal had data breaks the row, as a failing one does.
        let conclusive = verdicts
            .iter()
            .any(|v| v.severity != MetricSeverity::Inconclusive);
        streak.record(rules::evaluation_passes(
            verdicts.iter().map(|v| v.severity),
        ));
        let mut d = details([
            ("window", template::promql_duration(vars.window)),
            ("passes", format!("{} of {needed} in a row", streak.passes)),
            ("evaluations", streak.evaluations.to_string()),
        ]);
        for v in &verdicts {
            let value = v.value.map_or("no data".to_owned(), crate::units::num);
            d.insert(
                format!("signal {}", v.name),
                format!("{value} ({})", v.severity),
            );
        }
        if streak.reached(needed) {
            return rules::result(
                PERFORMANCE,
                CheckCategory::Performance,
                CheckStatus::Passed,
                d,
            );
        }
        if Instant::now() + interval >= ctx.deadline {
            let last = match critical.first() {
                Some(v) => v.message.clone(),
                None if !conclusive => "the last evaluation had no data for any signal: inconclusive is not a pass (do the queries find samples since the remediation?)".to_owned(),
                None => "the last evaluation passed".to_owned(),
            };
            let reason = format!(
                "{} of {needed} passing evaluations in a row before the timeout; {last}",
                streak.passes
            );
            d.insert(rules::REASON.into(), reason);
            return rules::result(
                PERFORMANCE,
                CheckCategory::Performance,
                CheckStatus::Failed,
                d,
            );
        }
        tokio::time::sleep(interval).await;
    }
}

/// Checks 4 and 5, a user check: PromQL (non-empty, all non-zero) or HTTP (2xx on every
/// endpoint). One read each: they test the state the remediation left, not a trend.
pub async fn user_check<S: MetricsSource + Sync>(
    ctx: &Ctx<'_, S>,
    spec: &CheckSpec,
) -> CheckResult {
    let (status, d) = match (&spec.promql, &spec.http) {
        (Some(promql), _) => match ctx.deps.metrics {
            Some(metrics) => promql_check(metrics, promql, &vars(ctx)).await,
            None => {
                return rules::skipped(
                    &spec.name,
                    spec.category,
                    "no Prometheus for a PromQL check",
                );
            }
        },
        (None, Some(http)) => probe(ctx, http, false).await,
        (None, None) => {
            return rules::skipped(
                &spec.name,
                spec.category,
                "the check sets neither promql nor http",
            );
        }
    };
    rules::result(&spec.name, spec.category, status, d)
}

async fn promql_check<S: MetricsSource>(
    metrics: &S,
    template: &str,
    vars: &Vars<'_>,
) -> (CheckStatus, Details) {
    let failed = |reason: String| (CheckStatus::Failed, details([(rules::REASON, reason)]));
    let promql = match template::render(template, vars) {
        Ok(q) => q,
        Err(e) => return failed(e.to_string()),
    };
    let samples: Vec<Sample> = match metrics.query(&promql, None).await {
        Ok(s) => s,
        Err(e) => return failed(e.to_string()),
    };
    let mut d = details([("query", promql)]);
    // A few series are enough to tell what the query saw.
    for s in samples.iter().take(10) {
        d.insert(
            format!("series {}", rules::series_label(s)),
            s.value.to_string(),
        );
    }
    match rules::promql_check(&samples) {
        Ok(()) => (CheckStatus::Passed, d),
        Err(reason) => {
            d.insert(rules::REASON.into(), reason);
            (CheckStatus::Failed, d)
        }
    }
}

/// Check 6, traffic distribution: the selector or route weights as the remediation left them,
/// and somewhere for the traffic to go.
pub async fn traffic<S>(ctx: &Ctx<'_, S>) -> CheckResult {
    let (status, d) = match ctx.input.remediation.probes().traffic {
        Traffic::Selector {
            service,
            key,
            value,
        } => selector(ctx, &service, &key, &value).await,
        Traffic::Route(route) => weights(ctx, &route).await,
        Traffic::Unchanged => {
            return rules::skipped(
                TRAFFIC,
                CheckCategory::Traffic,
                "the strategy does not move traffic",
            );
        }
    };
    rules::result(TRAFFIC, CheckCategory::Traffic, status, d)
}

async fn selector<S>(
    ctx: &Ctx<'_, S>,
    service: &str,
    key: &str,
    value: &str,
) -> (CheckStatus, Details) {
    let mut d = details([
        ("service", service.to_owned()),
        ("expected", format!("{key}={value}")),
    ]);
    let mut problems = vec![];
    match Api::<Service>::namespaced(ctx.deps.client.clone(), ctx.input.namespace)
        .get(service)
        .await
    {
        Ok(svc) => {
            let actual = svc
                .spec
                .and_then(|s| s.selector)
                .unwrap_or_default()
                .get(key)
                .cloned();
            d.insert(
                "selector".into(),
                format!("{key}={}", actual.as_deref().unwrap_or("")),
            );
            if actual.as_deref() != Some(value) {
                problems.push(format!(
                    "the selector has {key}={actual:?}, expected {value:?}"
                ));
            }
        }
        Err(e) => problems.push(format!("reading Service {service}: {e}")),
    }
    match addresses(ctx, service).await {
        Ok(a) if a.is_empty() => problems.push(format!("Service {service} has no ready endpoints")),
        Ok(a) => {
            d.insert("readyEndpoints".into(), a.len().to_string());
        }
        Err(e) => problems.push(e),
    }
    verdict(d, problems)
}

async fn weights<S>(ctx: &Ctx<'_, S>, route_ref: &crate::api::RouteRef) -> (CheckStatus, Details) {
    let mut d = Details::new();
    let (router, name) = match route::router(route_ref) {
        Ok(r) => r,
        Err(e) => return verdict(d, vec![e.to_string()]),
    };
    d.insert("route".into(), format!("{} {name}", router.kind()));
    let Some(expected) = &ctx.input.expected_weights else {
        return verdict(
            d,
            vec!["no expected weights: the event records no route change".into()],
        );
    };
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.deps.client.clone(),
        ctx.input.namespace,
        &router.kind().api_resource(),
    );
    let object = match api.get(name).await {
        Ok(o) => serde_json::to_value(o).expect("objects serialize"),
        Err(e) => return verdict(d, vec![format!("reading {} {name}: {e}", router.kind())]),
    };
    let rule = match route::find_rule(router, &object, &RuleSelector::of(route_ref)) {
        Ok(r) => r,
        Err(e) => return verdict(d, vec![e.to_string()]),
    };
    let actual = rules::route_weights(router, &rule.backends);
    let show = |w: &BTreeMap<String, u64>| {
        w.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    d.insert("weights".into(), show(&actual));
    d.insert("expected".into(), show(expected));
    let mut problems = rules::weight_differences(&actual, expected);
    // Backends that receive traffic must have somewhere to send it (Services of this namespace).
    for (backend, weight) in &actual {
        let service = backend.split(['.', '/']).next().unwrap_or(backend);
        if *weight == 0 {
            continue;
        }
        match addresses(ctx, service).await {
            Ok(a) if a.is_empty() => {
                problems.push(format!("backend {service} has no ready endpoints"))
            }
            Ok(_) => {}
            Err(e) => problems.push(e),
        }
    }
    verdict(d, problems)
}

fn verdict(mut d: Details, problems: Vec<String>) -> (CheckStatus, Details) {
    if problems.is_empty() {
        (CheckStatus::Passed, d)
    } else {
        d.insert(rules::REASON.into(), problems.join("; "));
        (CheckStatus::Failed, d)
    }
}
