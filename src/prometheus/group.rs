//! Turning a per-target query into one query for many targets.
//!
//! A template rendered with placeholder namespace and target is grouped when every selector
//! pins the namespace (and the target, if the template uses it) with an equality matcher, and
//! every operation keeps those labels apart: aggregations get them added to `by` (or must not
//! drop them with `without`), vector matching gets them added to `on` (or must not ignore them),
//! and only functions that work series by series are allowed. The query is then computed
//! independently for each (namespace, target) pair, so selecting all pairs at once with
//! `=~"a|b"` gives, for each pair, the value the per-target query gives. Anything else (`absent`,
//! `scalar`, `vector(0)`, `label_replace` onto those labels, ...) runs per target.

use std::collections::BTreeSet;

use promql_parser::{
    label::{Labels, MatchOp, Matcher},
    parser::{self, Expr, LabelModifier, VectorSelector, value::ValueType},
};

/// Stand-ins rendered for `{{ namespace }}` and `{{ target }}` to find where a template uses them.
pub const NAMESPACE_PLACEHOLDER: &str = "__frys_namespace__";
pub const TARGET_PLACEHOLDER: &str = "__frys_target__";

/// The labels that tell targets apart in a grouped query's result.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupLabels {
    pub namespace: String,
    /// None when the template only uses `{{ namespace }}`.
    pub target: Option<String>,
}

impl GroupLabels {
    fn all(&self) -> Vec<&str> {
        std::iter::once(self.namespace.as_str())
            .chain(self.target.as_deref())
            .collect()
    }
}

/// A template that can be evaluated once for many targets.
#[derive(Clone, Debug)]
pub struct Grouped {
    expr: Expr,
    pub labels: GroupLabels,
}

/// Series-by-series functions: each output series keeps its input series' labels.
const LABEL_PRESERVING: &[&str] = &[
    "abs",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "deg",
    "delta",
    "deriv",
    "double_exponential_smoothing",
    "exp",
    "first_over_time",
    "floor",
    "histogram_avg",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_stddev",
    "histogram_stdvar",
    "histogram_sum",
    "holt_winters",
    "idelta",
    "increase",
    "irate",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "mad_over_time",
    "max_over_time",
    "min_over_time",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_by_label",
    "sort_by_label_desc",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "timestamp",
];

/// Date functions keep labels only when given a vector (without one they read `time()`).
const DATE_FUNCTIONS: &[&str] = &[
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "hour",
    "minute",
    "month",
    "year",
];

/// Analyses a template rendered with the placeholders. Err says why it must run per target.
pub fn analyze(rendered: &str) -> Result<Grouped, &'static str> {
    let mut expr = parser::parse(rendered).map_err(|_| "does not parse")?;
    if expr.value_type() != ValueType::Vector {
        return Err("does not return an instant vector");
    }
    // Which labels the placeholders are matched on, and how often they appear as matchers.
    let (mut ns_labels, mut target_labels) = (BTreeSet::new(), BTreeSet::new());
    let (mut ns_matchers, mut target_matchers) = (0, 0);
    visit_selectors(&mut expr, &mut |vs| {
        for m in &vs.matchers.matchers {
            if is_placeholder(m, NAMESPACE_PLACEHOLDER) {
                ns_labels.insert(m.name.clone());
                ns_matchers += 1;
            } else if is_placeholder(m, TARGET_PLACEHOLDER) {
                target_labels.insert(m.name.clone());
                target_matchers += 1;
            }
        }
    });
    // Every placeholder must be a whole equality matcher value, nothing else.
    let uses = |p: &str| rendered.matches(p).count();
    if uses(NAMESPACE_PLACEHOLDER) != ns_matchers || uses(TARGET_PLACEHOLDER) != target_matchers {
        return Err("uses {{ namespace }} or {{ target }} outside an equality matcher");
    }
    if ns_labels.len() > 1 || target_labels.len() > 1 {
        return Err("matches a placeholder on different labels");
    }
    let labels = GroupLabels {
        namespace: ns_labels
            .pop_first()
            .ok_or("does not select by {{ namespace }}")?,
        target: target_labels.pop_first(),
    };
    if labels.target.as_ref() == Some(&labels.namespace) {
        return Err("{{ namespace }} and {{ target }} select the same label");
    }
    fit(&mut expr, &labels)?;
    Ok(Grouped { expr, labels })
}

impl Grouped {
    /// The query for all these namespaces and targets at once.
    pub fn query(&self, namespaces: &BTreeSet<&str>, targets: &BTreeSet<&str>) -> String {
        let mut expr = self.expr.clone();
        let namespaces = alternation(namespaces);
        let targets = alternation(targets);
        visit_selectors(&mut expr, &mut |vs| {
            for m in &mut vs.matchers.matchers {
                if is_placeholder(m, NAMESPACE_PLACEHOLDER) {
                    *m = regex_matcher(&m.name, &namespaces);
                } else if is_placeholder(m, TARGET_PLACEHOLDER) {
                    *m = regex_matcher(&m.name, &targets);
                }
            }
        });
        expr.to_string()
    }
}

fn is_placeholder(m: &Matcher, placeholder: &str) -> bool {
    m.op == MatchOp::Equal && m.value == placeholder
}

/// Prometheus turns an alternation of at most this many literals into a set lookup; a longer
/// one is run as a regular expression against every value of the label (`maxSetMatches` in
/// its `FastRegexMatcher`), which at 10,000 targets took seconds per query here.
const MAX_SET_MATCHES: usize = 256;

/// The matcher value selecting these values. Past [`MAX_SET_MATCHES`] it selects every value
/// (`.+`): each pair's value is computed apart from the others (see the module docs), so the
/// extra pairs change nothing in the wanted ones, and the reader picks its own.
fn alternation(values: &BTreeSet<&str>) -> String {
    if values.len() > MAX_SET_MATCHES {
        return ".+".into();
    }
    values
        .iter()
        .map(|v| regex::escape(v))
        .collect::<Vec<_>>()
        .join("|")
}

fn regex_matcher(name: &str, pattern: &str) -> Matcher {
    // Prometheus anchors label regexes; the compiled regex only serves promql-parser's types.
    let re = regex::Regex::new(&format!("^(?:{pattern})$")).expect("escaped alternation");
    Matcher::new(MatchOp::Re(re), name, pattern)
}

/// Calls `f` on every selector, in matrix selectors and subqueries too.
fn visit_selectors(expr: &mut Expr, f: &mut impl FnMut(&mut VectorSelector)) {
    match expr {
        Expr::VectorSelector(vs) => f(vs),
        Expr::MatrixSelector(ms) => f(&mut ms.vs),
        Expr::Aggregate(a) => {
            if let Some(p) = &mut a.param {
                visit_selectors(p, f);
            }
            visit_selectors(&mut a.expr, f);
        }
        Expr::Binary(b) => {
            visit_selectors(&mut b.lhs, f);
            visit_selectors(&mut b.rhs, f);
        }
        Expr::Unary(u) => visit_selectors(&mut u.expr, f),
        Expr::Paren(p) => visit_selectors(&mut p.expr, f),
        Expr::Subquery(s) => visit_selectors(&mut s.expr, f),
        Expr::Call(c) => c.args.args.iter_mut().for_each(|a| visit_selectors(a, f)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn add_labels(list: &mut Labels, labels: &GroupLabels) {
    for l in labels.all() {
        if !list.labels.iter().any(|x| x == l) {
            list.labels.push(l.to_owned());
        }
    }
}

fn drops_any(list: &Labels, labels: &GroupLabels) -> bool {
    labels
        .all()
        .iter()
        .any(|l| list.labels.iter().any(|x| x == l))
}

/// Checks that `expr` keeps the group labels apart, adding them to `by` and `on` lists.
fn fit(expr: &mut Expr, g: &GroupLabels) -> Result<(), &'static str> {
    match expr {
        Expr::VectorSelector(vs) => selector(vs, g),
        Expr::MatrixSelector(ms) => selector(&ms.vs, g),
        Expr::Aggregate(a) => {
            if let Some(param) = &mut a.param {
                if let Expr::StringLiteral(s) = param.as_ref() {
                    // count_values("label", ...) writes that label.
                    if g.all().contains(&s.val.as_str()) {
                        return Err("count_values writes a group label");
                    }
                } else {
                    fit(param, g)?;
                }
            }
            match &mut a.modifier {
                None => a.modifier = Some(LabelModifier::Include(Labels::new(g.all()))),
                Some(LabelModifier::Include(by)) => add_labels(by, g),
                Some(LabelModifier::Exclude(without)) if drops_any(without, g) => {
                    return Err("aggregates a group label away");
                }
                Some(LabelModifier::Exclude(_)) => {}
            }
            fit(&mut a.expr, g)
        }
        Expr::Binary(b) => {
            fit(&mut b.lhs, g)?;
            fit(&mut b.rhs, g)?;
            let vectors =
                b.lhs.value_type() == ValueType::Vector && b.rhs.value_type() == ValueType::Vector;
            if let (true, Some(modifier)) = (vectors, &mut b.modifier) {
                if modifier.card.labels().is_some_and(|l| drops_any(l, g)) {
                    return Err("group_left/group_right copies a group label");
                }
                match &mut modifier.matching {
                    Some(LabelModifier::Include(on)) => add_labels(on, g),
                    Some(LabelModifier::Exclude(ignoring)) if drops_any(ignoring, g) => {
                        return Err("ignores a group label in vector matching");
                    }
                    _ => {}
                }
            }
            Ok(())
        }
        Expr::Unary(u) => fit(&mut u.expr, g),
        Expr::Paren(p) => fit(&mut p.expr, g),
        Expr::Subquery(s) => fit(&mut s.expr, g),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
        Expr::Call(c) => {
            let name = c.func.name;
            let args = &mut c.args.args;
            let preserving = LABEL_PRESERVING.contains(&name)
                || (DATE_FUNCTIONS.contains(&name) && !args.is_empty());
            let relabel = matches!(name, "label_replace" | "label_join");
            if relabel {
                match args.get(1).map(|a| a.as_ref()) {
                    Some(Expr::StringLiteral(dst)) if !g.all().contains(&dst.val.as_str()) => {}
                    _ => return Err("relabels a group label"),
                }
            } else if !preserving {
                return Err("uses a function that does not keep series apart");
            }
            args.iter_mut().try_for_each(|a| fit(a, g))
        }
        Expr::Extension(_) => Err("uses an extension"),
    }
}

fn selector(vs: &VectorSelector, g: &GroupLabels) -> Result<(), &'static str> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err("uses `or` inside a selector");
    }
    let pins = |label: &str, placeholder: &str| {
        vs.matchers
            .matchers
            .iter()
            .any(|m| m.name == label && is_placeholder(m, placeholder))
    };
    let target_ok = g
        .target
        .as_deref()
        .is_none_or(|t| pins(t, TARGET_PLACEHOLDER));
    if pins(&g.namespace, NAMESPACE_PLACEHOLDER) && target_ok {
        Ok(())
    } else {
        Err("has a selector that does not pin {{ namespace }} and {{ target }}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placeholders(t: &str) -> String {
        t.replace("NS", NAMESPACE_PLACEHOLDER)
            .replace("TGT", TARGET_PLACEHOLDER)
    }

    fn grouped(t: &str) -> Result<Grouped, &'static str> {
        analyze(&placeholders(t))
    }

    fn set<'a>(v: &[&'a str]) -> BTreeSet<&'a str> {
        v.iter().copied().collect()
    }

    #[test]
    fn adds_group_labels_to_aggregations() {
        let g = grouped(r#"sum(rate(x{namespace="NS", app="TGT", code=~"5.."}[2m]))"#).unwrap();
        assert_eq!(
            g.labels,
            GroupLabels {
                namespace: "namespace".into(),
                target: Some("app".into())
            }
        );
        assert_eq!(
            g.query(&set(&["shop", "pay"]), &set(&["web"])),
            r#"sum by (namespace, app) (rate(x{app=~"web",code=~"5..",namespace=~"pay|shop"}[2m]))"#
        );
    }

    #[test]
    fn selects_every_value_past_the_set_limit() {
        let g = grouped(r#"sum(rate(x{namespace="NS", app="TGT"}[2m]))"#).unwrap();
        let names: Vec<String> = (0..=MAX_SET_MATCHES).map(|i| format!("w{i}")).collect();
        let targets: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(
            g.query(&set(&["shop"]), &targets),
            r#"sum by (namespace, app) (rate(x{app=~".+",namespace=~"shop"}[2m]))"#
        );
        // At the limit, still the exact set.
        let fewer: BTreeSet<&str> = targets.iter().copied().take(MAX_SET_MATCHES).collect();
        assert!(g.query(&set(&["shop"]), &fewer).contains("w0|w1|w10"));
    }

    #[test]
    fn keeps_existing_by_lists_and_extends_on() {
        let g = grouped(
            r#"histogram_quantile(0.99, sum by (le) (rate(b{namespace="NS"}[5m]))) / on (le) group_left sum by (le) (c{namespace="NS"})"#,
        )
        .unwrap();
        assert_eq!(g.labels.target, None);
        assert_eq!(
            g.query(&set(&["shop"]), &set(&[])),
            r#"histogram_quantile(0.99, sum by (le, namespace) (rate(b{namespace=~"shop"}[5m]))) / on (le, namespace) group_left () sum by (le, namespace) (c{namespace=~"shop"})"#
        );
    }

    #[test]
    fn escapes_names_in_the_alternation() {
        let g = grouped(r#"sum(up{namespace="NS", deployment="TGT"})"#).unwrap();
        let q = g.query(&set(&["shop"]), &set(&["api.v2"]));
        assert!(q.contains(r#"deployment=~"api\\.v2""#), "{q}");
        parser::parse(&q).unwrap();
    }

    #[test]
    fn refuses_what_cannot_be_split_by_target() {
        for t in [
            r#"sum(rate(x{namespace="NS"}[5m])) or vector(0)"#,
            r#"absent(up{namespace="NS"})"#,
            r#"sum(x{namespace="NS"}) / scalar(sum(y))"#,
            r#"sum without (namespace) (x{namespace="NS"})"#,
            r#"x{namespace="NS"} / ignoring (namespace) y{namespace="NS"}"#,
            r#"label_replace(x{namespace="NS"}, "namespace", "a", "", "")"#,
            r#"sum(x{namespace="NS", app="TGT"}) / sum(y{namespace="NS"})"#,
            r#"x{namespace="NS", pod=~"TGT-.*"}"#,
            r#"x{namespace="NS", app="TGT"} + y{namespace="NS", deployment="TGT"}"#,
            r#"sum(x{app="TGT"})"#,
            r#"count_values("namespace", x{namespace="NS"})"#,
            r#"sum(x{namespace="NS"})[5m:1m]"#,
            r#"time()"#,
        ] {
            assert!(grouped(t).is_err(), "{t} should not be grouped");
        }
    }

    #[test]
    fn accepts_series_by_series_expressions() {
        for t in [
            r#"rate(x{namespace="NS", app="TGT"}[5m]) > 0.1"#,
            r#"max_over_time(sum(x{namespace="NS"})[5m:1m])"#,
            r#"-clamp_max(x{namespace="NS"}, 1) * 2"#,
            r#"x{namespace="NS"} and on () y{namespace="NS"}"#,
            r#"topk(1, x{namespace="NS"} offset 5m)"#,
            r#"label_replace(x{namespace="NS"}, "svc", "$1", "app", "(.*)")"#,
        ] {
            let g = grouped(t).unwrap_or_else(|e| panic!("{t}: {e}"));
            parser::parse(&g.query(&set(&["a", "b"]), &set(&["c"]))).unwrap();
        }
    }
}
