//! A tiny PromQL evaluator over one synthetic instant vector, for unit tests of grouping: it
//! knows enough (selectors, `rate` as identity, `sum`/`max`/`min`/`count` by/without, arithmetic
//! with on/ignoring, `and`/`or`) to evaluate the request-based presets and simple templates both
//! per target and grouped. The integration tests check the same against a real Prometheus.

use std::collections::{BTreeMap, HashMap};

use promql_parser::parser::{self, Expr, LabelModifier};

use super::Sample;

type Labels = BTreeMap<String, String>;

enum Value {
    Scalar(f64),
    Vector(Vec<Sample>),
}

/// Evaluates `promql` over `data`, whose samples are series (with `__name__`) and whose values
/// stand for their rates.
pub fn eval(promql: &str, data: &[Sample]) -> Vec<Sample> {
    let expr = parser::parse(promql).unwrap_or_else(|e| panic!("{promql}: {e}"));
    match eval_expr(&expr, data) {
        Value::Vector(v) => v,
        Value::Scalar(s) => vec![Sample {
            labels: Labels::new(),
            value: s,
        }],
    }
}

fn vector(expr: &Expr, data: &[Sample]) -> Vec<Sample> {
    match eval_expr(expr, data) {
        Value::Vector(v) => v,
        Value::Scalar(_) => panic!("expected a vector: {expr}"),
    }
}

fn without_name(mut labels: Labels) -> Labels {
    labels.remove("__name__");
    labels
}

/// The labels an aggregation or a vector match keys on.
fn key(labels: &Labels, modifier: Option<&LabelModifier>) -> Labels {
    match modifier {
        Some(LabelModifier::Include(by)) => by
            .labels
            .iter()
            .filter_map(|l| labels.get(l).map(|v| (l.clone(), v.clone())))
            .collect(),
        Some(LabelModifier::Exclude(without)) => without_name(labels.clone())
            .into_iter()
            .filter(|(l, _)| !without.labels.contains(l))
            .collect(),
        None => without_name(labels.clone()),
    }
}

fn arithmetic(op: &str, a: f64, b: f64) -> f64 {
    match op {
        "+" => a + b,
        "-" => a - b,
        "*" => a * b,
        "/" => a / b,
        other => panic!("operator {other} is not supported here"),
    }
}

fn eval_expr(expr: &Expr, data: &[Sample]) -> Value {
    match expr {
        Expr::NumberLiteral(n) => Value::Scalar(n.val),
        Expr::Paren(p) => eval_expr(&p.expr, data),
        Expr::VectorSelector(vs) => Value::Vector(
            data.iter()
                .filter(|s| {
                    let get = |l: &str| s.labels.get(l).map_or("", String::as_str);
                    vs.name.as_deref().is_none_or(|n| get("__name__") == n)
                        && vs
                            .matchers
                            .matchers
                            .iter()
                            .all(|m| m.is_match(get(&m.name)))
                })
                .cloned()
                .collect(),
        ),
        Expr::MatrixSelector(ms) => eval_expr(&Expr::VectorSelector(ms.vs.clone()), data),
        Expr::Call(c) if matches!(c.func.name, "rate" | "irate" | "increase") => Value::Vector(
            vector(&c.args.args[0], data)
                .into_iter()
                .map(|s| Sample {
                    labels: without_name(s.labels),
                    value: s.value,
                })
                .collect(),
        ),
        Expr::Aggregate(a) => {
            // Without by/without an aggregation makes one group (unlike vector matching).
            let everything = LabelModifier::Include(promql_parser::label::Labels::new(vec![]));
            let modifier = a.modifier.as_ref().unwrap_or(&everything);
            let mut groups: BTreeMap<Labels, Vec<f64>> = BTreeMap::new();
            for s in vector(&a.expr, data) {
                groups
                    .entry(key(&s.labels, Some(modifier)))
                    .or_default()
                    .push(s.value);
            }
            let fold = |v: Vec<f64>| match a.op.to_string().as_str() {
                "sum" => v.iter().sum(),
                "max" => v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                "min" => v.iter().copied().fold(f64::INFINITY, f64::min),
                "count" => v.len() as f64,
                other => panic!("aggregation {other} is not supported here"),
            };
            Value::Vector(
                groups
                    .into_iter()
                    .map(|(labels, v)| Sample {
                        labels,
                        value: fold(v),
                    })
                    .collect(),
            )
        }
        Expr::Binary(b) => {
            let op = b.op.to_string();
            let matching = b.modifier.as_ref().and_then(|m| m.matching.as_ref());
            match (eval_expr(&b.lhs, data), eval_expr(&b.rhs, data)) {
                (Value::Scalar(l), Value::Scalar(r)) => Value::Scalar(arithmetic(&op, l, r)),
                (Value::Vector(v), Value::Scalar(x)) | (Value::Scalar(x), Value::Vector(v))
                    if op == "*" || op == "+" =>
                {
                    Value::Vector(
                        v.into_iter()
                            .map(|s| Sample {
                                labels: without_name(s.labels),
                                value: arithmetic(&op, s.value, x),
                            })
                            .collect(),
                    )
                }
                (Value::Vector(l), Value::Scalar(x)) => Value::Vector(
                    l.into_iter()
                        .map(|s| Sample {
                            labels: without_name(s.labels),
                            value: arithmetic(&op, s.value, x),
                        })
                        .collect(),
                ),
                (Value::Vector(l), Value::Vector(r)) => {
                    let rhs: HashMap<Labels, &Sample> =
                        r.iter().map(|s| (key(&s.labels, matching), s)).collect();
                    let v = match op.as_str() {
                        "and" => l
                            .into_iter()
                            .filter(|s| rhs.contains_key(&key(&s.labels, matching)))
                            .collect(),
                        "or" => {
                            let left: Vec<Labels> =
                                l.iter().map(|s| key(&s.labels, matching)).collect();
                            let extra = r
                                .iter()
                                .filter(|s| !left.contains(&key(&s.labels, matching)))
                                .cloned();
                            l.into_iter().chain(extra).collect()
                        }
                        _ => l
                            .into_iter()
                            .filter_map(|s| {
                                let k = key(&s.labels, matching);
                                let other = rhs.get(&k)?;
                                // One-to-one: `on` keeps only its labels, `ignoring` drops its own.
                                let labels = match matching {
                                    Some(LabelModifier::Include(_)) => k,
                                    _ => key(&s.labels, matching),
                                };
                                Some(Sample {
                                    labels,
                                    value: arithmetic(&op, s.value, other.value),
                                })
                            })
                            .collect(),
                    };
                    Value::Vector(v)
                }
                (Value::Scalar(_), Value::Vector(_)) => panic!("scalar {op} vector: {expr}"),
            }
        }
        other => panic!("not supported here: {other}"),
    }
}
