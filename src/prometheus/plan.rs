//! Shared queries (DESIGN.md "Grouping").
//!
//! Each tick the controller hands [`plan`] the signals of every policy due. A template that only
//! pins `{{ namespace }}` / `{{ target }}` (all presets but memoryUsage and cpuUsage, which need
//! `{{ podRegex }}`) becomes one query per (endpoint, rendered template with its window): its
//! selectors match all the group's namespaces and targets with `=~"a|b"` and its aggregations keep
//! the namespace and target labels (see `group.rs`), so each target's series in the result
//! carries the value the per-target query would give. Everything else runs per target (identical
//! queries still run once). [`Plan::distribute`] hands the results back as one [`Reading`] per
//! (policy, signal); [`run`] does both with a [`MetricsSource`] per endpoint.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

use futures::StreamExt;

use super::{
    MetricsSource, QueryError, Sample,
    group::{self, GroupLabels, Grouped},
    template::{self, Var, Vars},
};
use crate::api::MetricSpec;

/// Queries sent at once to Prometheus by [`run`].
const MAX_CONCURRENT_QUERIES: usize = 8;

/// Name of the request-rate signal added for the `minRequestRate` guard. Metric names start with
/// a letter, so it cannot collide with one.
pub const REQUEST_RATE_SIGNAL: &str = "_requestRate";

/// One signal of a policy: its name and its (unrendered) template.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    pub name: String,
    pub template: String,
}

impl Signal {
    /// A policy's signals: its metrics, plus the request rate when it has a `minRequestRate`.
    pub fn for_policy(
        metrics: &[MetricSpec],
        workload_label: &str,
        request_rate: bool,
    ) -> Vec<Signal> {
        let mut signals: Vec<Signal> = metrics
            .iter()
            .filter_map(|m| {
                Some(Signal {
                    name: m.name.clone(),
                    template: template::metric_template(m, workload_label)?,
                })
            })
            .collect();
        if request_rate {
            signals.push(Signal {
                name: REQUEST_RATE_SIGNAL.into(),
                template: template::request_rate_template(workload_label),
            });
        }
        signals
    }
}

/// What the planner needs to know about one policy due this tick.
#[derive(Clone, Debug)]
pub struct PolicyQueries<P, E> {
    pub policy: P,
    /// Where to query; policies share queries only with the same endpoint (URL and credentials).
    pub endpoint: E,
    pub namespace: String,
    pub target: String,
    /// `{{ podRegex }}`; None when the target has no ReplicaSet yet (such signals read NoData).
    pub pod_regex: Option<String>,
    /// `{{ window }}`.
    pub window: Duration,
    pub signals: Vec<Signal>,
}

/// A signal's value: `Ok(None)` is "no data" (no series, or NaN such as 0/0 without traffic).
pub type Reading = Result<Option<f64>, QueryError>;

/// Readings by policy, then by signal name.
pub type Readings<P> = BTreeMap<P, BTreeMap<String, Reading>>;

/// One query to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Query<E> {
    pub endpoint: E,
    pub promql: String,
    /// Signals (of all policies) this query answers.
    pub serves: usize,
}

#[derive(Clone, Debug)]
enum Route {
    /// The whole result of query `index` is the reading.
    Single(usize),
    /// The series of query `index` whose group labels carry this namespace and target.
    Grouped {
        index: usize,
        labels: GroupLabels,
        namespace: String,
        target: String,
    },
    /// Known without asking Prometheus.
    Known(Reading),
}

/// The distinct queries of a tick and how their results map back to (policy, signal).
#[derive(Clone, Debug)]
pub struct Plan<P, E> {
    queries: Vec<Query<E>>,
    routes: Vec<(P, String, Route)>,
}

/// A group being collected: the targets it must select.
struct Group<'a> {
    index: usize,
    grouped: &'a Grouped,
    namespaces: BTreeSet<&'a str>,
    targets: BTreeSet<&'a str>,
}

/// Plans the queries for the given policies.
pub fn plan<P: Clone, E: Clone + Ord>(policies: &[PolicyQueries<P, E>]) -> Plan<P, E> {
    // Analysis is per (template, window) text, shared by every policy using it.
    let mut analyses: HashMap<String, Option<Grouped>> = HashMap::new();
    let mut prepared = Vec::new();
    for p in policies {
        for signal in &p.signals {
            prepared.push((p, signal, prepare(p, signal, &mut analyses)));
        }
    }

    let mut queries: Vec<Query<E>> = Vec::new();
    let mut singles: BTreeMap<(E, String), usize> = BTreeMap::new();
    let mut groups: BTreeMap<(E, &str), Group> = BTreeMap::new();
    let mut routes = Vec::new();
    let add = |queries: &mut Vec<Query<E>>, endpoint: &E| {
        queries.push(Query {
            endpoint: endpoint.clone(),
            promql: String::new(),
            serves: 0,
        });
        queries.len() - 1
    };
    for (p, signal, prepared) in &prepared {
        let route = match prepared {
            Prepared::Known(reading) => Route::Known(reading.clone()),
            Prepared::Single(promql) => {
                let key = (p.endpoint.clone(), promql.clone());
                let index = *singles.entry(key).or_insert_with(|| {
                    let i = add(&mut queries, &p.endpoint);
                    queries[i].promql = promql.clone();
                    i
                });
                queries[index].serves += 1;
                Route::Single(index)
            }
            Prepared::Grouped(canonical) => {
                let grouped = analyses[canonical.as_str()]
                    .as_ref()
                    .expect("prepared as grouped");
                let group = groups
                    .entry((p.endpoint.clone(), canonical.as_str()))
                    .or_insert_with(|| Group {
                        index: add(&mut queries, &p.endpoint),
                        grouped,
                        namespaces: BTreeSet::new(),
                        targets: BTreeSet::new(),
                    });
                group.namespaces.insert(p.namespace.as_str());
                group.targets.insert(p.target.as_str());
                queries[group.index].serves += 1;
                Route::Grouped {
                    index: group.index,
                    labels: grouped.labels.clone(),
                    namespace: p.namespace.clone(),
                    target: p.target.clone(),
                }
            }
        };
        routes.push((p.policy.clone(), signal.name.clone(), route));
    }
    for group in groups.values() {
        queries[group.index].promql = group.grouped.query(&group.namespaces, &group.targets);
    }
    Plan { queries, routes }
}

enum Prepared {
    Known(Reading),
    Single(String),
    /// Key into the analyses: the template rendered with placeholders.
    Grouped(String),
}

fn prepare<P, E>(
    p: &PolicyQueries<P, E>,
    signal: &Signal,
    analyses: &mut HashMap<String, Option<Grouped>>,
) -> Prepared {
    let bad_template = |e: template::TemplateError| {
        Prepared::Known(Err(QueryError::BadQuery {
            message: format!("template: {e}"),
        }))
    };
    let vars = match template::variables(&signal.template) {
        Ok(vars) => vars,
        Err(e) => return bad_template(e),
    };
    if vars.contains(&Var::PodRegex) && p.pod_regex.is_none() {
        return Prepared::Known(Ok(None));
    }
    // `--per-policy-queries` (benchmarks only): every signal runs per target, as peers do.
    if !vars.contains(&Var::PodRegex) && !crate::config::per_policy_queries() {
        let placeholders = Vars {
            namespace: group::NAMESPACE_PLACEHOLDER,
            target: group::TARGET_PLACEHOLDER,
            pod_regex: None,
            window: p.window,
        };
        if let Ok(canonical) = template::render(&signal.template, &placeholders) {
            let analysis = analyses.entry(canonical.clone()).or_insert_with(|| {
                group::analyze(&canonical)
                    .inspect_err(|why| tracing::debug!(template = %signal.template, why, "query runs per target"))
                    .ok()
            });
            if analysis.is_some() {
                return Prepared::Grouped(canonical);
            }
        }
    }
    let vars = Vars {
        namespace: &p.namespace,
        target: &p.target,
        pod_regex: p.pod_regex.as_deref(),
        window: p.window,
    };
    match template::render(&signal.template, &vars) {
        Ok(promql) => Prepared::Single(promql),
        Err(e) => bad_template(e),
    }
}

impl<P: Clone + Ord, E> Plan<P, E> {
    /// The queries to send, in the order [`Plan::distribute`] expects their results.
    pub fn queries(&self) -> &[Query<E>] {
        &self.queries
    }

    /// Readings from the results of [`Plan::queries`], in the same order.
    pub fn distribute(&self, results: &[Result<Vec<Sample>, QueryError>]) -> Readings<P> {
        assert_eq!(results.len(), self.queries.len(), "one result per query");
        let mut readings: Readings<P> = BTreeMap::new();
        // Each grouped result indexed once by its (namespace, target) label values: a lookup
        // per route instead of a scan of the whole result (10,000 routes x 10,000 series).
        let mut by_pair: HashMap<usize, HashMap<(&str, &str), Vec<&Sample>>> = HashMap::new();
        for (policy, signal, route) in &self.routes {
            let reading = match route {
                Route::Known(reading) => reading.clone(),
                Route::Single(index) => results[*index]
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|samples| single_value(samples.iter(), None)),
                Route::Grouped {
                    index,
                    labels,
                    namespace,
                    target,
                } => results[*index]
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|samples| {
                        let pairs = by_pair
                            .entry(*index)
                            .or_insert_with(|| index_by_pair(samples, labels));
                        let key = (
                            namespace.as_str(),
                            labels.target.as_ref().map_or("", |_| target.as_str()),
                        );
                        let mine = pairs.get(&key).into_iter().flatten().copied();
                        single_value(mine, Some((namespace, target)))
                    }),
            };
            readings
                .entry(policy.clone())
                .or_default()
                .insert(signal.clone(), reading);
        }
        readings
    }
}

/// A grouped result's series by their namespace and target label values (target "" when the
/// template selects by namespace only); series without those labels belong to no pair.
fn index_by_pair<'a>(
    samples: &'a [Sample],
    labels: &GroupLabels,
) -> HashMap<(&'a str, &'a str), Vec<&'a Sample>> {
    let mut pairs: HashMap<(&str, &str), Vec<&Sample>> = HashMap::new();
    for s in samples {
        let Some(namespace) = s.labels.get(&labels.namespace) else {
            continue;
        };
        let target = match &labels.target {
            Some(label) => match s.labels.get(label) {
                Some(v) => v.as_str(),
                None => continue,
            },
            None => "",
        };
        pairs
            .entry((namespace.as_str(), target))
            .or_default()
            .push(s);
    }
    pairs
}

/// The value of a result that should hold at most one series.
fn single_value<'a>(
    mut samples: impl Iterator<Item = &'a Sample>,
    target: Option<(&str, &str)>,
) -> Reading {
    let Some(first) = samples.next() else {
        return Ok(None);
    };
    let more = samples.count();
    if more > 0 {
        let whose = target.map_or(String::new(), |(ns, t)| format!(" for {ns}/{t}"));
        return Err(QueryError::UnexpectedResult {
            message: format!(
                "the query returns {} series{whose}; aggregate it to one (e.g. with sum or max)",
                more + 1
            ),
        });
    }
    Ok(Some(first.value).filter(|v| !v.is_nan()))
}

/// Runs a plan: each query once against its endpoint's source (built by `source`), then
/// distributes the results. `at` is the tick's evaluation time.
///
/// Endpoints run side by side, each with at most [`MAX_CONCURRENT_QUERIES`] queries in flight
/// and its results taken as they come: a slow or unanswering endpoint holds only its own
/// slots, never another endpoint's queries.
pub async fn run<P, E, S>(
    plan: &Plan<P, E>,
    at: Option<jiff::Timestamp>,
    source: impl Fn(&E) -> Result<S, QueryError>,
) -> Readings<P>
where
    P: Clone + Ord,
    E: Ord,
    S: MetricsSource,
{
    let mut by_endpoint: BTreeMap<&E, Vec<usize>> = BTreeMap::new();
    for (i, q) in plan.queries.iter().enumerate() {
        by_endpoint.entry(&q.endpoint).or_default().push(i);
    }
    let source = &source;
    let per_endpoint = by_endpoint.into_values().map(|indices| {
        futures::stream::iter(indices)
            .map(move |i| {
                let q = &plan.queries[i];
                async move {
                    let result = match source(&q.endpoint) {
                        Ok(s) => s.query(&q.promql, at).await,
                        Err(e) => Err(e),
                    };
                    (i, result)
                }
            })
            .buffer_unordered(MAX_CONCURRENT_QUERIES)
    });
    let mut results: Vec<Option<Result<Vec<Sample>, QueryError>>> = vec![None; plan.queries.len()];
    let mut done = futures::stream::iter(per_endpoint).flatten_unordered(None);
    while let Some((i, result)) = done.next().await {
        results[i] = Some(result);
    }
    let results: Vec<_> = results
        .into_iter()
        .map(|r| r.expect("every query answered"))
        .collect();
    plan.distribute(&results)
}

/// Reads one policy's signals now, by the same planning and distribution as the evaluator's
/// shared queries (verification re-reads the signals this way).
pub async fn read_policy<S: MetricsSource + Sync>(
    source: &S,
    queries: PolicyQueries<(), ()>,
) -> BTreeMap<String, Reading> {
    let plan = plan(std::slice::from_ref(&queries));
    // One policy has a few queries: sent in turn (a named loop also keeps the future Send).
    let mut results = Vec::with_capacity(plan.queries.len());
    for query in &plan.queries {
        results.push(source.query(&query.promql, None).await);
    }
    plan.distribute(&results).remove(&()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::{
        api::Preset,
        prometheus::{FnSource, template::preset_template},
    };

    const WINDOW: Duration = Duration::from_secs(120);

    fn policy(
        ns: &str,
        target: &str,
        signals: &[(&str, String)],
    ) -> PolicyQueries<String, &'static str> {
        PolicyQueries {
            policy: format!("{ns}/{target}"),
            endpoint: "prom-a",
            namespace: ns.into(),
            target: target.into(),
            pod_regex: Some(format!("(?:{target}-abc)-[a-z0-9]+")),
            window: WINDOW,
            signals: signals
                .iter()
                .map(|(name, template)| Signal {
                    name: name.to_string(),
                    template: template.clone(),
                })
                .collect(),
        }
    }

    fn preset(p: Preset) -> String {
        preset_template(p, "app")
    }

    fn sample(ns: &str, app: &str, v: f64) -> Sample {
        Sample::new([("namespace", ns), ("app", app)], v)
    }

    #[test]
    fn many_policies_on_one_template_make_one_query() {
        let policies: Vec<_> = (0..50)
            .map(|i| {
                policy(
                    &format!("ns{}", i % 5),
                    &format!("app{i}"),
                    &[
                        ("errors", preset(Preset::ErrorRate)),
                        ("latency", preset(Preset::ResponseTime)),
                    ],
                )
            })
            .collect();
        let plan = plan(&policies);
        assert_eq!(plan.queries().len(), 2, "{:#?}", plan.queries());
        assert!(plan.queries().iter().all(|q| q.serves == 50));
        let q = &plan.queries()[0].promql;
        assert!(q.contains(r#"namespace=~"ns0|ns1|ns2|ns3|ns4""#), "{q}");
        assert!(q.contains("app=~\"app0|app1|app10|"), "{q}");
        promql_parser::parser::parse(q).unwrap();
    }

    #[test]
    fn grouping_respects_endpoint_and_window() {
        let errors = [("errors", preset(Preset::ErrorRate))];
        let mut b = policy("shop", "api", &errors);
        b.endpoint = "prom-b";
        let mut c = policy("shop", "cart", &errors);
        c.window = Duration::from_secs(300);
        let plan = plan(&[policy("shop", "web", &errors), b, c]);
        assert_eq!(plan.queries().len(), 3);
        assert!(plan.queries()[2].promql.contains("[5m]"));
    }

    #[test]
    fn distributes_series_to_their_targets() {
        let signals = [("errors", preset(Preset::ErrorRate))];
        let policies = [
            policy("shop", "web", &signals),
            policy("pay", "web", &signals),
            policy("shop", "idle", &signals),
            policy("shop", "gone", &signals),
        ];
        let plan = plan(&policies);
        let readings = plan.distribute(&[Ok(vec![
            sample("shop", "web", 0.1),
            sample("pay", "web", 0.5),
            sample("shop", "idle", f64::NAN),
            sample("other", "web", 0.9),
        ])]);
        let get = |p: &str| readings[p]["errors"].clone();
        assert_eq!(get("shop/web"), Ok(Some(0.1)));
        assert_eq!(get("pay/web"), Ok(Some(0.5)));
        assert_eq!(get("shop/idle"), Ok(None), "NaN is no data");
        assert_eq!(get("shop/gone"), Ok(None), "a missing series is no data");
    }

    #[test]
    fn a_failed_shared_query_fails_each_signal_it_serves() {
        let signals = [("errors", preset(Preset::ErrorRate))];
        let plan = plan(&[
            policy("shop", "web", &signals),
            policy("pay", "web", &signals),
        ]);
        let error = QueryError::Unreachable {
            url: "http://p".into(),
            message: "refused".into(),
        };
        let readings = plan.distribute(&[Err(error.clone())]);
        assert!(readings.values().all(|r| r["errors"] == Err(error.clone())));
    }

    #[test]
    fn pod_regex_and_ungroupable_templates_run_per_target() {
        let signals = [
            ("memory", preset(Preset::MemoryUsage)),
            (
                "orZero",
                r#"sum(rate(x{namespace="{{ namespace }}"}[{{ window }}])) or vector(0)"#.into(),
            ),
            ("global", "sum(up)".into()),
        ];
        let mut no_pods = policy("shop", "new", &signals);
        no_pods.pod_regex = None;
        let plan = plan(&[
            policy("shop", "web", &signals),
            policy("pay", "web", &signals),
            no_pods,
        ]);
        // memory: 2 (the third has no pods yet); orZero: 2 (shop twice renders the same); global: 1.
        assert_eq!(plan.queries().len(), 5, "{:#?}", plan.queries());
        assert!(
            plan.queries()[0]
                .promql
                .contains(r#"pod=~"(?:web-abc)-[a-z0-9]+""#)
        );
        let results: Vec<_> = plan
            .queries()
            .iter()
            .map(|_| Ok(vec![Sample::new([], 1.0)]))
            .collect();
        let readings = plan.distribute(&results);
        assert_eq!(readings["shop/new"]["memory"], Ok(None));
        assert_eq!(readings["shop/web"]["global"], Ok(Some(1.0)));
        assert_eq!(readings["shop/new"]["orZero"], Ok(Some(1.0)));
    }

    #[test]
    fn several_series_for_one_target_are_an_error() {
        let signals = [(
            "perPod",
            r#"rate(x{namespace="{{ namespace }}", app="{{ target }}"}[1m])"#.to_string(),
        )];
        let plan = plan(&[policy("shop", "web", &signals)]);
        let readings = plan.distribute(&[Ok(vec![
            sample("shop", "web", 1.0),
            sample("shop", "web", 2.0),
        ])]);
        let err = readings["shop/web"]["perPod"].clone().unwrap_err();
        assert!(err.to_string().contains("2 series for shop/web"), "{err}");
    }

    #[test]
    fn template_errors_become_readings() {
        let signals = [("bad", r#"up{job="{{ job }}"}"#.to_string())];
        let plan = plan(&[policy("shop", "web", &signals)]);
        assert!(plan.queries().is_empty());
        let readings = plan.distribute(&[]);
        let err = readings["shop/web"]["bad"].clone().unwrap_err();
        assert!(err.to_string().contains("{{ job }}"), "{err}");
    }

    #[tokio::test]
    async fn run_sends_each_query_once() {
        let sent = Mutex::new(Vec::new());
        let source = FnSource(|q: &str| {
            sent.lock().unwrap().push(q.to_owned());
            Ok(vec![sample("shop", "web", 3.0), sample("shop", "api", 4.0)])
        });
        let signals = [("rps", template::request_rate_template("app"))];
        let plan = plan(&[
            policy("shop", "web", &signals),
            policy("shop", "api", &signals),
        ]);
        let readings = run(&plan, None, |_| Ok(&source)).await;
        assert_eq!(sent.lock().unwrap().len(), 1);
        assert_eq!(readings["shop/web"]["rps"], Ok(Some(3.0)));
        assert_eq!(readings["shop/api"]["rps"], Ok(Some(4.0)));
    }

    /// Answers at once, or never (a blackholed endpoint); records what reached it.
    struct Gate<'a> {
        answers: bool,
        sent: &'a Mutex<Vec<String>>,
    }

    impl MetricsSource for Gate<'_> {
        async fn query(
            &self,
            promql: &str,
            _at: Option<jiff::Timestamp>,
        ) -> Result<Vec<Sample>, QueryError> {
            self.sent.lock().unwrap().push(promql.to_owned());
            if !self.answers {
                std::future::pending::<()>().await;
            }
            Ok(vec![Sample::new([], 1.0)])
        }
    }

    /// More unanswered queries on one endpoint than the concurrency bound, planned first: the
    /// other endpoint's queries are all sent anyway (in-order buffering held them back).
    #[tokio::test]
    async fn an_unanswering_endpoint_holds_only_its_own_queries() {
        let per_target = |i: usize| {
            (
                "global",
                format!(r#"sum(up{{job="{{{{ target }}}}", i="{i}"}}) or vector(0)"#),
            )
        };
        let mut policies = vec![];
        for (endpoint, count) in [("blackhole", MAX_CONCURRENT_QUERIES + 2), ("prom-b", 5)] {
            for i in 0..count {
                let mut p = policy(endpoint, &format!("app{i}"), &[per_target(i)]);
                p.endpoint = endpoint;
                policies.push(p);
            }
        }
        let plan = plan(&policies);
        assert_eq!(plan.queries().len(), MAX_CONCURRENT_QUERIES + 7);
        assert_eq!(plan.queries()[0].endpoint, "blackhole", "planned first");
        let (hung, answered) = (Mutex::new(vec![]), Mutex::new(vec![]));
        let running = run(&plan, None, |e: &&str| {
            Ok(Gate {
                answers: *e != "blackhole",
                sent: if *e == "blackhole" { &hung } else { &answered },
            })
        });
        let finished = tokio::time::timeout(Duration::from_millis(300), running).await;
        assert!(finished.is_err(), "the blackholed endpoint never answers");
        assert_eq!(
            answered.lock().unwrap().len(),
            5,
            "every query of prom-b was sent"
        );
        assert_eq!(
            hung.lock().unwrap().len(),
            MAX_CONCURRENT_QUERIES,
            "an endpoint has at most {MAX_CONCURRENT_QUERIES} queries in flight"
        );
    }

    /// Results come back in completion order and still land on their own policies.
    #[tokio::test]
    async fn results_out_of_order_reach_their_policies() {
        struct Delayed;
        impl MetricsSource for Delayed {
            async fn query(
                &self,
                promql: &str,
                _at: Option<jiff::Timestamp>,
            ) -> Result<Vec<Sample>, QueryError> {
                // The first planned query answers last.
                let n: f64 = promql.split('"').nth(1).unwrap().parse().unwrap();
                tokio::time::sleep(Duration::from_millis(50 - 10 * n as u64)).await;
                Ok(vec![Sample::new([], n)])
            }
        }
        let policies: Vec<_> = (0..4)
            .map(|i| {
                policy(
                    "shop",
                    &format!("app{i}"),
                    &[("v", format!(r#"up{{i="{i}"}}"#))],
                )
            })
            .collect();
        let readings = run(&plan(&policies), None, |_| Ok(Delayed)).await;
        for i in 0..4 {
            assert_eq!(readings[&format!("shop/app{i}")]["v"], Ok(Some(i as f64)));
        }
    }

    #[test]
    fn signals_of_a_policy() {
        let m = crate::fixtures::metric("errors", Preset::ErrorRate);
        let s = Signal::for_policy(std::slice::from_ref(&m), "app", true);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].name, REQUEST_RATE_SIGNAL);
        assert_eq!(Signal::for_policy(&[m], "app", false).len(), 1);
    }

    /// Grouped readings equal per-target readings, on synthetic data evaluated by a tiny PromQL
    /// evaluator (tests/prometheus.rs checks the same against a real Prometheus).
    mod same_values {
        use proptest::prelude::*;

        use super::*;
        use crate::prometheus::{template::render, tiny_promql};

        const TEMPLATES: &[(&str, &str)] = &[
            (
                "errorsPerSeries",
                r#"sum(rate(http_requests_total{namespace="{{ namespace }}", app="{{ target }}", code="500"}[{{ window }}])) / count(http_requests_total{namespace="{{namespace}}", app="{{target}}"})"#,
            ),
            (
                "busiest",
                r#"max without (pod, code) (rate(http_requests_total{namespace="{{ namespace }}", app="{{ target }}"}[{{ window }}]))"#,
            ),
        ];

        /// Series of namespaces a, b × apps x, y × pods × codes; None leaves a series out.
        fn data(rates: &[Option<u8>]) -> Vec<Sample> {
            let slots = ["a", "b"].into_iter().flat_map(|ns| {
                ["x", "y"].into_iter().flat_map(move |app| {
                    ["p1", "p2"].into_iter().flat_map(move |pod| {
                        ["200", "500"]
                            .into_iter()
                            .map(move |code| (ns, app, pod, code))
                    })
                })
            });
            slots
                .zip(rates)
                .filter_map(|((ns, app, pod, code), rate)| {
                    let labels = [
                        ("__name__", "http_requests_total"),
                        ("namespace", ns),
                        ("app", app),
                        ("pod", pod),
                        ("code", code),
                    ];
                    rate.map(|r| Sample::new(labels, f64::from(r)))
                })
                .collect()
        }

        fn close(a: &Reading, b: &Reading) -> bool {
            match (a, b) {
                (Ok(Some(a)), Ok(Some(b))) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
                (a, b) => a == b,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn grouped_equals_per_target(rates in proptest::collection::vec(proptest::option::of(0u8..50), 16)) {
                let data = data(&rates);
                let mut signals: Vec<(&str, String)> = TEMPLATES
                    .iter()
                    .map(|(n, t)| (*n, t.to_string()))
                    .collect();
                signals.push(("errors", preset(Preset::ErrorRate)));
                signals.push((REQUEST_RATE_SIGNAL, template::request_rate_template("app")));
                let targets = [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("a", "ghost")];
                let policies: Vec<_> = targets.iter().map(|(ns, t)| policy(ns, t, &signals)).collect();
                let plan = plan(&policies);
                prop_assert_eq!(plan.queries().len(), signals.len());

                let source = FnSource(|q: &str| Ok(tiny_promql::eval(q, &data)));
                let readings = futures::executor::block_on(run(&plan, None, |_| Ok(&source)));
                for p in &policies {
                    for s in &p.signals {
                        let vars = Vars { namespace: &p.namespace, target: &p.target, pod_regex: None, window: WINDOW };
                        let promql = render(&s.template, &vars).unwrap();
                        let alone = single_value(tiny_promql::eval(&promql, &data).iter(), None);
                        let shared = &readings[&p.policy][&s.name];
                        prop_assert!(close(shared, &alone), "{} {}: shared {:?}, alone {:?}", p.policy, s.name, shared, alone);
                    }
                }
            }
        }
    }
}
