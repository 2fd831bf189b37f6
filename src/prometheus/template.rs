//! Query templates: the four presets over the standard series, `{{ variable }}` rendering and
//! validation of the rendered PromQL.
//!
//! Presets are templates like any other, written so that their result keeps the `namespace` and
//! workload labels: the planner can then evaluate them once for many targets (see [`plan`](mod@super::plan)).

use std::time::Duration;

use promql_parser::parser::{self, value::ValueType};

use crate::api::{MetricSpec, Preset};

/// A template variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Var {
    Namespace,
    Target,
    PodRegex,
    Window,
}

impl Var {
    const ALL: [Var; 4] = [Var::Namespace, Var::Target, Var::PodRegex, Var::Window];

    pub fn name(self) -> &'static str {
        match self {
            Var::Namespace => "namespace",
            Var::Target => "target",
            Var::PodRegex => "podRegex",
            Var::Window => "window",
        }
    }
}

/// Values of the variables for one target.
#[derive(Clone, Debug)]
pub struct Vars<'a> {
    pub namespace: &'a str,
    pub target: &'a str,
    /// Regex matching the pods of the target's ReplicaSets (see [`pod_regex`]); None when the
    /// target has no ReplicaSet yet.
    pub pod_regex: Option<&'a str>,
    pub window: Duration,
}

impl Vars<'_> {
    fn value(&self, var: Var) -> Result<String, TemplateError> {
        Ok(match var {
            Var::Namespace => escape(self.namespace),
            Var::Target => escape(self.target),
            Var::PodRegex => escape(self.pod_regex.ok_or(TemplateError::NoValue(var.name()))?),
            Var::Window => promql_duration(self.window),
        })
    }
}

/// A value as the inside of a double-quoted PromQL string (the form presets use). The target's
/// name is only length-checked by the schema, so without this a name holding `"` would end the
/// label value and append its own PromQL to a preset's query. Kubernetes names need no escaping,
/// so queries of real targets are unchanged.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            // Prometheus ends a string at a raw newline.
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// What is wrong with a template.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "unknown template variable {{{{ {0} }}}} (known: {{{{ namespace }}}}, {{{{ target }}}}, {{{{ podRegex }}}}, {{{{ window }}}})"
    )]
    UnknownVariable(String),
    #[error("unclosed {{{{ in the template")]
    Unclosed,
    #[error("no value for {{{{ {0} }}}} yet")]
    NoValue(&'static str),
    #[error("invalid PromQL: {0}")]
    InvalidPromql(String),
    #[error("the query returns a {0}; it must return an instant vector or a scalar")]
    NotInstant(String),
    #[error("workload label {0:?} is not a usable Prometheus label name")]
    InvalidLabel(String),
}

/// Pieces of a template: literal text and variables.
enum Piece<'a> {
    Text(&'a str),
    Var(Var),
}

fn pieces(template: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push(Piece::Text(&rest[..start]));
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
        let name = after[..end].trim();
        let var = Var::ALL
            .into_iter()
            .find(|v| v.name() == name)
            .ok_or_else(|| TemplateError::UnknownVariable(name.to_owned()))?;
        out.push(Piece::Var(var));
        rest = &after[end + 2..];
    }
    out.push(Piece::Text(rest));
    Ok(out)
}

/// The variables a template uses.
pub fn variables(template: &str) -> Result<Vec<Var>, TemplateError> {
    let mut vars: Vec<Var> = pieces(template)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Var(v) => Some(v),
            Piece::Text(_) => None,
        })
        .collect();
    vars.sort();
    vars.dedup();
    Ok(vars)
}

/// Replaces `{{ variable }}` (spaces optional) with its value.
pub fn render(template: &str, vars: &Vars) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len() + 32);
    for piece in pieces(template)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Var(v) => out.push_str(&vars.value(v)?),
        }
    }
    Ok(out)
}

/// A duration as PromQL writes it (`2m`, `90s`, `1500ms`).
pub fn promql_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) || ms == 0 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    match s {
        s if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        s if s.is_multiple_of(60) => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Regex for the pods of the given ReplicaSets (pods are named `<replicaset>-<suffix>`), for
/// `{{ podRegex }}`. Dots are written `[.]` so the value needs no escaping inside a PromQL string.
pub fn pod_regex<S: AsRef<str>>(replica_sets: &[S]) -> Option<String> {
    if replica_sets.is_empty() {
        return None;
    }
    let mut names: Vec<String> = replica_sets
        .iter()
        .map(|n| n.as_ref().replace('.', "[.]"))
        .collect();
    names.sort();
    names.dedup();
    Some(format!("(?:{})-[a-z0-9]+", names.join("|")))
}

/// A label name Prometheus accepts that does not collide with the labels presets use.
pub fn check_workload_label(label: &str) -> Result<(), TemplateError> {
    let mut chars = label.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid || matches!(label, "namespace" | "le" | "code" | "__name__") {
        return Err(TemplateError::InvalidLabel(label.to_owned()));
    }
    Ok(())
}

// Presets over the series DESIGN.md lists. `$label` is the workload label. Request and latency
// presets aggregate `by (namespace, $label)` so one query can serve every target.

/// 5xx share. `or ... * 0` makes it 0 (not "no data") when there is traffic but no 5xx series.
const ERROR_RATE: &str = concat!(
    r#"(sum by (namespace, $label) (rate(http_requests_total{namespace="{{ namespace }}", $label="{{ target }}", code=~"5.."}[{{ window }}]))"#,
    r#" or sum by (namespace, $label) (rate(http_requests_total{namespace="{{ namespace }}", $label="{{ target }}"}[{{ window }}])) * 0)"#,
    r#" / sum by (namespace, $label) (rate(http_requests_total{namespace="{{ namespace }}", $label="{{ target }}"}[{{ window }}]))"#,
);

/// p95 latency in milliseconds.
const RESPONSE_TIME: &str = concat!(
    r#"histogram_quantile(0.95, sum by (namespace, $label, le) (rate(http_request_duration_seconds_bucket{namespace="{{ namespace }}", $label="{{ target }}"}[{{ window }}])))"#,
    " * 1000",
);

/// Requests per second, for the `minRequestRate` guard.
const REQUEST_RATE: &str = r#"sum by (namespace, $label) (rate(http_requests_total{namespace="{{ namespace }}", $label="{{ target }}"}[{{ window }}]))"#;

/// The worst pod's working set over its memory limit. `and on (...)` keeps only containers that
/// have a limit (and drops cAdvisor's pod-level series, whose container label is empty).
const MEMORY_USAGE: &str = concat!(
    r#"max(sum by (namespace, pod) (container_memory_working_set_bytes{namespace="{{ namespace }}", pod=~"{{ podRegex }}"}"#,
    r#" and on (namespace, pod, container) kube_pod_container_resource_limits{namespace="{{ namespace }}", pod=~"{{ podRegex }}", resource="memory"})"#,
    r#" / sum by (namespace, pod) (kube_pod_container_resource_limits{namespace="{{ namespace }}", pod=~"{{ podRegex }}", resource="memory"}))"#,
);

/// The worst pod's CPU usage over its CPU limit (cores / cores).
const CPU_USAGE: &str = concat!(
    r#"max(sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{namespace="{{ namespace }}", pod=~"{{ podRegex }}"}[{{ window }}])"#,
    r#" and on (namespace, pod, container) kube_pod_container_resource_limits{namespace="{{ namespace }}", pod=~"{{ podRegex }}", resource="cpu"})"#,
    r#" / sum by (namespace, pod) (kube_pod_container_resource_limits{namespace="{{ namespace }}", pod=~"{{ podRegex }}", resource="cpu"}))"#,
);

/// The template of a preset for the given workload label.
pub fn preset_template(preset: Preset, workload_label: &str) -> String {
    let template = match preset {
        Preset::ErrorRate => ERROR_RATE,
        Preset::ResponseTime => RESPONSE_TIME,
        Preset::MemoryUsage => MEMORY_USAGE,
        Preset::CpuUsage => CPU_USAGE,
    };
    template.replace("$label", workload_label)
}

/// The request-rate template behind the `minRequestRate` guard.
pub fn request_rate_template(workload_label: &str) -> String {
    REQUEST_RATE.replace("$label", workload_label)
}

/// The template a metric evaluates: its preset's or its own query.
pub fn metric_template(metric: &MetricSpec, workload_label: &str) -> Option<String> {
    match (&metric.preset, &metric.query) {
        (Some(preset), _) => Some(preset_template(*preset, workload_label)),
        (None, Some(query)) => Some(query.clone()),
        (None, None) => None,
    }
}

/// Parses PromQL and checks it returns an instant vector or a scalar.
///
/// Verdicts are remembered by text: every reconcile checks its policy's queries, and parsing
/// (which compiles each `=~` matcher's regex) was a third of the operator's steady-state CPU,
/// although thousands of policies share a handful of templates.
pub fn check_promql(promql: &str) -> Result<(), TemplateError> {
    use std::{
        collections::HashMap,
        sync::{LazyLock, Mutex},
    };
    /// Distinct texts remembered; past it the memo starts over (policies with their own
    /// queries each add one).
    const REMEMBERED: usize = 4096;
    static VERDICTS: LazyLock<Mutex<HashMap<String, Result<(), TemplateError>>>> =
        LazyLock::new(Mutex::default);
    if let Some(verdict) = VERDICTS.lock().expect("lock").get(promql) {
        return verdict.clone();
    }
    let verdict = parse_instant(promql);
    let mut verdicts = VERDICTS.lock().expect("lock");
    if verdicts.len() >= REMEMBERED {
        verdicts.clear();
    }
    verdicts.insert(promql.to_owned(), verdict.clone());
    verdict
}

fn parse_instant(promql: &str) -> Result<(), TemplateError> {
    let expr = parser::parse(promql).map_err(TemplateError::InvalidPromql)?;
    match expr.value_type() {
        ValueType::Vector | ValueType::Scalar => Ok(()),
        ValueType::Matrix => Err(TemplateError::NotInstant("range vector".into())),
        ValueType::String => Err(TemplateError::NotInstant("string".into())),
    }
}

/// A metric whose query cannot be used, with the reason, for the policy's Ready condition.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("metric {metric:?}: {error}")]
pub struct InvalidMetric {
    pub metric: String,
    pub error: TemplateError,
}

/// Renders a metric's template with placeholder values and parses the result.
pub fn validate_metric(metric: &MetricSpec, workload_label: &str) -> Result<(), InvalidMetric> {
    let invalid = |error| InvalidMetric {
        metric: metric.name.clone(),
        error,
    };
    if metric.alert.is_some() {
        // Read from status.alerts (the alert receiver), not from Prometheus.
        return Ok(());
    }
    if metric.preset.is_some() {
        check_workload_label(workload_label).map_err(invalid)?;
    }
    let template = metric_template(metric, workload_label).ok_or_else(|| {
        invalid(TemplateError::InvalidPromql(
            "no preset and no query".into(),
        ))
    })?;
    let placeholders = Vars {
        namespace: "default",
        target: "placeholder",
        pod_regex: Some("placeholder-[a-z0-9]+"),
        window: Duration::from_secs(120),
    };
    let promql = render(&template, &placeholders).map_err(invalid)?;
    check_promql(&promql).map_err(invalid)
}

/// The first invalid metric of a policy, if any.
pub fn validate_metrics(metrics: &[MetricSpec], workload_label: &str) -> Result<(), InvalidMetric> {
    metrics
        .iter()
        .try_for_each(|m| validate_metric(m, workload_label))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars<'static> {
        Vars {
            namespace: "shop",
            target: "web",
            pod_regex: Some("(?:web-5d8f)-[a-z0-9]+"),
            window: Duration::from_secs(120),
        }
    }

    fn query_metric(name: &str, query: &str) -> MetricSpec {
        MetricSpec {
            name: name.into(),
            preset: None,
            query: Some(query.into()),
            alert: None,
            warning: None,
            critical: Some(1.0),
            direction: None,
            weight: None,
            class: None,
            baseline: None,
        }
    }

    #[test]
    fn renders_variables_with_or_without_spaces() {
        let out = render(
            r#"rate(x{namespace="{{namespace}}", app="{{ target }}", pod=~"{{  podRegex }}"}[{{ window}}])"#,
            &vars(),
        )
        .unwrap();
        assert_eq!(
            out,
            r#"rate(x{namespace="shop", app="web", pod=~"(?:web-5d8f)-[a-z0-9]+"}[2m])"#
        );
    }

    #[test]
    fn unknown_variable_is_named() {
        let err = render(r#"up{job="{{ job }}"}"#, &vars()).unwrap_err();
        assert_eq!(err, TemplateError::UnknownVariable("job".into()));
        assert!(err.to_string().contains("{{ job }}"), "{err}");
        assert_eq!(
            render("up{{ namespace", &vars()).unwrap_err(),
            TemplateError::Unclosed
        );
    }

    #[test]
    fn pod_regex_needs_a_value() {
        let mut v = vars();
        v.pod_regex = None;
        assert_eq!(
            render("{{ podRegex }}", &v).unwrap_err(),
            TemplateError::NoValue("podRegex")
        );
    }

    #[test]
    fn windows_render_as_promql_durations() {
        assert_eq!(promql_duration(Duration::from_secs(120)), "2m");
        assert_eq!(promql_duration(Duration::from_secs(90)), "90s");
        assert_eq!(promql_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(promql_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn pod_regex_of_replica_sets() {
        assert_eq!(
            pod_regex(&["web-7f9c", "web-5d8f", "web-7f9c"]).unwrap(),
            "(?:web-5d8f|web-7f9c)-[a-z0-9]+"
        );
        assert_eq!(pod_regex(&["a.b-1"]).unwrap(), "(?:a[.]b-1)-[a-z0-9]+");
        assert_eq!(pod_regex::<&str>(&[]), None);
    }

    #[test]
    fn presets_are_valid_promql() {
        for preset in [
            Preset::ErrorRate,
            Preset::ResponseTime,
            Preset::MemoryUsage,
            Preset::CpuUsage,
        ] {
            let promql = render(&preset_template(preset, "app"), &vars()).unwrap();
            check_promql(&promql).unwrap_or_else(|e| panic!("{preset:?}: {e}\n{promql}"));
            assert!(!promql.contains("$label") && !promql.contains("{{"));
        }
        check_promql(&render(&request_rate_template("app"), &vars()).unwrap()).unwrap();
    }

    #[test]
    fn bad_promql_reports_the_parser_message_and_metric() {
        let err = validate_metric(
            &query_metric("checkoutP99", "sum(rate(x[{{ window }}])"),
            "app",
        )
        .unwrap_err();
        assert_eq!(err.metric, "checkoutP99");
        assert_eq!(
            err.error,
            TemplateError::InvalidPromql("unclosed left parenthesis".into())
        );
        assert_eq!(
            err.to_string(),
            "metric \"checkoutP99\": invalid PromQL: unclosed left parenthesis"
        );
        let err = validate_metric(&query_metric("m", "nosuchfn(up)"), "app").unwrap_err();
        assert!(err.to_string().contains("nosuchfn"), "{err}");
    }

    #[test]
    fn range_vectors_and_unknown_variables_are_refused() {
        let err = validate_metric(&query_metric("m", "up[5m]"), "app").unwrap_err();
        assert!(matches!(err.error, TemplateError::NotInstant(_)), "{err}");
        let err = validate_metric(&query_metric("m", r#"up{job="{{ job }}"}"#), "app").unwrap_err();
        assert_eq!(err.error, TemplateError::UnknownVariable("job".into()));
    }

    #[test]
    fn workload_label_must_be_a_label_name() {
        let mut m = query_metric("errors", "");
        m.query = None;
        m.preset = Some(Preset::ErrorRate);
        validate_metric(&m, "app_kubernetes_io_name").unwrap();
        for bad in ["app.kubernetes.io/name", "namespace", "1app", ""] {
            assert!(validate_metric(&m, bad).is_err(), "{bad}");
        }
        assert!(validate_metrics(&[m.clone(), query_metric("x", "up(")], "app").is_err());
        validate_metrics(&[m], "app").unwrap();
    }

    /// The label matchers of every selector in `promql` (instant and range).
    fn selectors(promql: &str) -> Vec<Vec<(String, String)>> {
        use promql_parser::{
            parser::{Expr, VectorSelector},
            util::{ExprVisitor, walk_expr},
        };
        struct Collect(Vec<Vec<(String, String)>>);
        impl Collect {
            fn add(&mut self, vs: &VectorSelector) {
                assert!(vs.matchers.or_matchers.is_empty(), "{vs}");
                self.0.push(
                    vs.matchers
                        .matchers
                        .iter()
                        .map(|m| (m.name.clone(), m.value.clone()))
                        .collect(),
                );
            }
        }
        impl ExprVisitor for Collect {
            type Error = ();
            fn pre_visit(&mut self, expr: &Expr) -> Result<bool, ()> {
                match expr {
                    Expr::VectorSelector(vs) => self.add(vs),
                    Expr::MatrixSelector(ms) => self.add(&ms.vs),
                    _ => {}
                }
                Ok(true)
            }
        }
        let expr = parser::parse(promql).unwrap_or_else(|e| panic!("{e}: {promql}"));
        let mut c = Collect(vec![]);
        walk_expr(&mut c, &expr).unwrap();
        c.0
    }

    /// Regression: a target name holding a quote ended the label value and added its own PromQL.
    #[test]
    fn values_cannot_leave_their_label_value() {
        let target = r#"web"} or vector(1) or up{x="\"#;
        let v = Vars { target, ..vars() };
        let promql = render(&preset_template(Preset::ErrorRate, "app"), &v).unwrap();
        for matchers in selectors(&promql) {
            assert!(
                matchers.contains(&("app".into(), target.into())),
                "{promql}"
            );
            assert!(!matchers.iter().any(|(name, _)| name == "x"), "{promql}");
        }
    }

    proptest::proptest! {
        /// Whatever the namespace and target (any text), every selector of every preset matches
        /// exactly that namespace and target: nothing is added to or cut from the query.
        #[test]
        fn rendered_label_values_are_the_values(
            namespace in "\\PC{0,12}|[a-z\"\\\\{}=~,\n ]{0,12}",
            target in "\\PC{0,12}|[a-z\"\\\\{}=~,\n ]{0,12}",
            preset in proptest::sample::select(vec![Preset::ErrorRate, Preset::ResponseTime, Preset::MemoryUsage, Preset::CpuUsage]),
        ) {
            let v = Vars { namespace: &namespace, target: &target, ..vars() };
            let promql = render(&preset_template(preset, "app"), &v).unwrap();
            check_promql(&promql).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}: {promql}")))?;
            let all = selectors(&promql);
            proptest::prop_assert!(!all.is_empty());
            for matchers in all {
                let values = |label: &str| matchers.iter().filter(|(n, _)| n == label).map(|(_, v)| v.clone()).collect::<Vec<_>>();
                proptest::prop_assert_eq!(values("namespace"), vec![namespace.clone()], "{}", promql);
                let targets = values("app");
                let pods = values("pod");
                // Each selector picks the target by its workload label or by its pods.
                proptest::prop_assert!(targets == vec![target.clone()] || (targets.is_empty() && pods.len() == 1), "{}", promql);
                let known = ["namespace", "app", "pod", "code", "resource", "__name__"];
                proptest::prop_assert!(matchers.iter().all(|(n, _)| known.contains(&n.as_str())), "{}", promql);
            }
        }

        /// Any template renders or fails with a TemplateError (no panic), and a rendered one
        /// keeps its literal text: with no variable, render is the identity.
        #[test]
        fn render_answers_any_template(template in "\\PC{0,40}|([a-z(){}\" ]{0,6}\\{\\{ ?(namespace|target|podRegex|window|job)? ?(\\}\\})?){0,4}") {
            let rendered = render(&template, &vars());
            match variables(&template) {
                Ok(vars) if vars.is_empty() => proptest::prop_assert_eq!(rendered.unwrap(), template.clone()),
                Ok(_) => proptest::prop_assert!(rendered.is_ok()),
                Err(e) => proptest::prop_assert_eq!(rendered.unwrap_err(), e),
            }
        }
    }
}
