//! Template rendering: any template and any variable values render or fail with a
//! `TemplateError` (no panic); the PromQL check answers whatever was rendered; and a preset
//! rendered with any namespace and target parses, with exactly those values in its matchers.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use frys_rollback::{
    api::Preset,
    prometheus::template::{Vars, check_promql, pod_regex, preset_template, render, variables},
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    template: &'a str,
    namespace: &'a str,
    target: &'a str,
    replica_sets: Vec<&'a str>,
    window_ms: u32,
    preset: u8,
}

fuzz_target!(|input: Input<'_>| {
    let pods = pod_regex(&input.replica_sets);
    let vars = Vars {
        namespace: input.namespace,
        target: input.target,
        pod_regex: pods.as_deref(),
        window: Duration::from_millis(input.window_ms.into()),
    };
    let rendered = render(input.template, &vars);
    match variables(input.template) {
        Ok(used) if used.is_empty() => assert_eq!(rendered.as_deref(), Ok(input.template)),
        Ok(_) => {}
        Err(e) => assert_eq!(rendered, Err(e)),
    }
    if let Ok(promql) = &rendered {
        let _ = check_promql(promql);
    }

    // Presets: the values stay inside their label values.
    let preset = [
        Preset::ErrorRate,
        Preset::ResponseTime,
        Preset::MemoryUsage,
        Preset::CpuUsage,
    ][usize::from(input.preset % 4)];
    let vars = Vars {
        pod_regex: Some("web-[a-z0-9]+"),
        window: Duration::from_secs(120),
        ..vars
    };
    let promql = render(&preset_template(preset, "app"), &vars).expect("presets render");
    if let Err(e) = check_promql(&promql) {
        panic!(
            "{preset:?} with {:?}/{:?} does not parse: {e}\n{promql}",
            input.namespace, input.target
        );
    }
    let expr = promql_parser::parser::parse(&promql).expect("checked");
    let mut matchers = Matchers::default();
    promql_parser::util::walk_expr(&mut matchers, &expr).expect("infallible");
    assert!(!matchers.0.is_empty());
    for m in &matchers.0 {
        let values = |label: &str| {
            m.iter()
                .filter(|(n, _)| n == label)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(values("namespace"), [input.namespace], "{promql}");
        let targets = values("app");
        assert!(
            targets == [input.target] || (targets.is_empty() && values("pod").len() == 1),
            "{promql}"
        );
        assert!(
            m.iter().all(|(n, _)| ["namespace", "app", "pod", "code", "resource"].contains(&n.as_str())),
            "{promql}"
        );
    }
});

/// The label matchers of every selector (instant and range).
#[derive(Default)]
struct Matchers(Vec<Vec<(String, String)>>);

impl Matchers {
    fn add(&mut self, vs: &promql_parser::parser::VectorSelector) {
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

impl promql_parser::util::ExprVisitor for Matchers {
    type Error = ();
    fn pre_visit(&mut self, expr: &promql_parser::parser::Expr) -> Result<bool, ()> {
        match expr {
            promql_parser::parser::Expr::VectorSelector(vs) => self.add(vs),
            promql_parser::parser::Expr::MatrixSelector(ms) => self.add(&ms.vs),
            _ => {}
        }
        Ok(true)
    }
}
