use proptest::prelude::*;

use super::{resolve::render_for_tests as render, *};
use crate::{
    api::{Preset, RollbackPolicySpec, StrategyKind},
    config::OperatorConfig,
};

/// The seed's three ladders, as the chart ships them (values.yaml `profiles:`).
const SHIPPED: &str = include_str!("../../charts/frys-rollback/values.yaml");

fn shipped() -> Profiles {
    let values: serde_json::Value = yaml_serde::from_str(SHIPPED).unwrap();
    Profiles::parse(&serde_json::to_string(&values["profiles"]).unwrap()).unwrap()
}

fn spec(extra: serde_json::Value) -> RollbackPolicySpec {
    let mut base = serde_json::json!({
        "targetRef": {"name": "shop-web"},
        "metrics": [{"name": "errors", "preset": "errorRate"}, {"name": "latency", "preset": "responseTime", "critical": 900}],
    });
    base.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(base).unwrap()
}

const TEST_PROFILES: &str = r#"
development:
  interval: 5s
  autoRollback: true
  thresholds: {errorRate: 0.2}
  strategies:
    - type: EnvironmentSwitch
      incidents: [Release, Dependency]
      environmentSwitch: {service: "{{ target }}", selectorKey: color, activeValue: green, standbyValue: blue, standbyRef: "{{target}}-blue"}
production:
  cooldown: 10m
  strategies:
    - type: VersionRollback
empty: {}
"#;

fn profiles() -> Profiles {
    Profiles::parse(TEST_PROFILES).unwrap()
}

#[test]
fn the_shipped_profiles_are_the_seeds_three_ladders() {
    let p = shipped();
    let ladder = |name: &str| -> Vec<StrategyKind> {
        p.profiles[name]
            .strategies
            .iter()
            .map(|r| r.type_)
            .collect()
    };
    use StrategyKind::*;
    assert_eq!(ladder("development"), [CircuitBreaker, EnvironmentSwitch]);
    assert_eq!(
        ladder("staging"),
        [CircuitBreaker, TrafficShifting, EnvironmentSwitch]
    );
    assert_eq!(
        ladder("production"),
        [
            CircuitBreaker,
            TrafficShifting,
            EnvironmentSwitch,
            VersionRollback
        ]
    );
}

#[test]
fn the_namespace_label_wins_over_the_environment() {
    let p = profiles();
    match select(Some(&p), Some("development"), "production").unwrap() {
        Selection::Found { name, origin, .. } => {
            assert_eq!((name, origin), ("development", Origin::NamespaceLabel))
        }
        other => panic!("{other:?}"),
    }
    match select(Some(&p), None, "production").unwrap() {
        Selection::Found { name, origin, .. } => {
            assert_eq!((name, origin), ("production", Origin::Environment))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(select(None, None, "production").unwrap(), Selection::Off);
}

#[test]
fn an_unknown_profile_is_an_error_that_names_what_exists() {
    let p = profiles();
    let e = select(Some(&p), Some("qa"), "production").unwrap_err();
    assert_eq!(e.reason(), "UnknownProfile");
    assert_eq!(
        e.to_string(),
        "profile \"qa\" (from the namespace label rollback.frys.io/profile) is not defined by the operator's profile configuration (defined: development, empty, production)"
    );
    let e = select(Some(&p), None, "staging").unwrap_err();
    assert!(e.to_string().contains("--environment"), "{e}");
    // A label with no configuration at all is unknown too, not ignored.
    let e = select(None, Some("development"), "production").unwrap_err();
    assert!(e.to_string().ends_with("(it defines none)"), "{e}");
}

#[test]
fn a_policy_without_fields_inherits_them_rendered_for_its_target() {
    let p = profiles();
    let selection = select(Some(&p), Some("development"), "production").unwrap();
    let r = resolve(&spec(serde_json::json!({})), "shop", &selection).unwrap();
    assert_eq!(r.profile.as_deref(), Some("development"));
    assert_eq!(
        r.inherited,
        [
            "interval",
            "autoRollback",
            "strategies",
            "metrics[errors].critical"
        ]
    );
    let switch = r.spec.strategies[0].environment_switch.as_ref().unwrap();
    assert_eq!(switch.service, "shop-web");
    assert_eq!(switch.standby_ref, "shop-web-blue");
    // latency has its own critical: kept, not inherited.
    assert_eq!(r.spec.metrics[1].critical, Some(900.0));
    assert_eq!(r.spec.metrics[0].critical, Some(0.2));
    let eff = effective(&r, &OperatorConfig::defaults());
    assert_eq!(eff.interval, Some("5s".into()));
    assert_eq!(eff.metrics[0].critical, Some(0.2));
    assert_eq!(eff.profile.as_deref(), Some("development"));
    // Neither the policy nor the profile: the operator's default.
    assert_eq!(eff.cooldown, Some("5m".into()));
}

#[test]
fn a_policy_that_says_everything_inherits_nothing() {
    let p = profiles();
    let selection = select(Some(&p), Some("development"), "production").unwrap();
    let own = spec(serde_json::json!({
        "interval": "1s", "autoRollback": false, "strategies": [{"type": "VersionRollback"}],
        "metrics": [{"name": "errors", "preset": "errorRate", "critical": 0.01}],
    }));
    let r = resolve(&own, "shop", &selection).unwrap();
    assert_eq!(r.spec, own);
    assert!(r.inherited.is_empty());
    assert_eq!(r.profile.as_deref(), Some("development"));
}

#[test]
fn no_ladder_anywhere_is_explained() {
    let p = profiles();
    let selection = select(Some(&p), Some("empty"), "production").unwrap();
    let e = resolve(&spec(serde_json::json!({})), "shop", &selection).unwrap_err();
    assert_eq!(e.reason(), "NoLadder");
    assert_eq!(
        e.to_string(),
        "spec.strategies is empty and profile \"empty\" has no strategies either"
    );
    let e = resolve(&spec(serde_json::json!({})), "shop", &Selection::Off).unwrap_err();
    assert!(e.to_string().contains("--profiles-file"), "{e}");
    // Profiles off and a ladder of its own: exactly as before profiles existed.
    let own = spec(serde_json::json!({"strategies": [{"type": "VersionRollback"}]}));
    let r = resolve(&own, "shop", &Selection::Off).unwrap();
    assert_eq!((r.spec, r.profile, r.inherited), (own, None, vec![]));
}

#[test]
fn placeholders_render_and_typos_are_refused() {
    assert_eq!(
        render("{{ target }}-blue", "web", "shop").unwrap(),
        "web-blue"
    );
    assert_eq!(
        render("{{namespace}}/{{target}}", "web", "shop").unwrap(),
        "shop/web"
    );
    assert_eq!(render("plain", "web", "shop").unwrap(), "plain");
    let e = render("{{ traget }}", "web", "shop").unwrap_err();
    assert!(e.contains("unknown placeholder {{ traget }}"), "{e}");
    assert!(
        render("{{ target", "web", "shop")
            .unwrap_err()
            .contains("unclosed")
    );
}

#[test]
fn invalid_profile_files_are_refused_with_the_profile_that_is_wrong() {
    let cases = [
        (
            "dev: {interval: soon}",
            "profile \"dev\": interval: invalid duration",
        ),
        ("dev: {interval: 500ms}", "interval must be at least 1s"),
        (
            "dev: {thresholds: {errorRate: 5}}",
            "thresholds.errorRate must be a ratio",
        ),
        (
            "dev: {strategies: [{type: EnvironmentSwitch}]}",
            "strategies[0] (EnvironmentSwitch): ",
        ),
        (
            "dev: {strategies: [{type: VersionRollback}, {type: VersionRollback}]}",
            "VersionRollback appears twice",
        ),
        (
            "dev: {strategies: [{type: TrafficShifting, trafficShifting: {httpRoute: '{{ route }}', from: a, to: b}}]}",
            "unknown placeholder {{ route }}",
        ),
        ("dev: {ladder: []}", "unknown field `ladder`"),
        ("'not a label!': {}", "must be a label value"),
        ("- a list", "not a map of profile name to profile"),
    ];
    for (text, expected) in cases {
        let e = Profiles::parse(text).unwrap_err().to_string();
        assert!(e.contains(expected), "{text}: {e}");
    }
    assert_eq!(Profiles::parse("").unwrap(), Profiles::default());
}

#[test]
fn the_source_resolves_by_the_operator_environment_without_labels() {
    let source = Source::fixed("production", Some(profiles()));
    let policy = crate::fixtures::policy("web");
    let mut bare = policy.clone();
    bare.spec.strategies.clear();
    let r = source.resolve(&bare).unwrap();
    assert_eq!(r.profile.as_deref(), Some("production"));
    assert_eq!(r.spec.strategies[0].type_, StrategyKind::VersionRollback);
    assert_eq!(source.completed(&bare).spec, r.spec);
    assert_eq!(source.interval(&bare), None);
    let dev = Source::fixed("development", Some(profiles()));
    assert_eq!(dev.interval(&bare), Some(std::time::Duration::from_secs(5)));
    assert!(
        Source::fixed("qa", Some(profiles()))
            .resolve(&bare)
            .is_err()
    );
    // Unresolvable: readers get the policy as it is.
    assert_eq!(Source::fixed("qa", None).completed(&policy), policy);
}

fn arb_duration() -> impl Strategy<Value = Option<crate::api::Duration>> {
    proptest::option::of((1u64..3600).prop_map(|s| format!("{s}s").as_str().into()))
}

fn arb_profile() -> impl Strategy<Value = Profile> {
    (
        arb_duration(),
        arb_duration(),
        arb_duration(),
        proptest::option::of(any::<bool>()),
        proptest::option::of(0.0f64..1.0),
        any::<bool>(),
    )
        .prop_map(
            |(interval, cooldown, rollback_timeout, auto_rollback, error_rate, ladder)| Profile {
                interval,
                cooldown,
                rollback_timeout,
                auto_rollback,
                thresholds: Thresholds {
                    error_rate,
                    ..Default::default()
                },
                strategies: if ladder {
                    vec![
                        serde_json::from_value(serde_json::json!({"type": "VersionRollback"}))
                            .unwrap(),
                    ]
                } else {
                    vec![]
                },
                ..Default::default()
            },
        )
}

fn arb_spec() -> impl Strategy<Value = RollbackPolicySpec> {
    (
        arb_duration(),
        arb_duration(),
        proptest::option::of(any::<bool>()),
        proptest::option::of(0.0f64..1.0),
        any::<bool>(),
    )
        .prop_map(|(interval, cooldown, auto_rollback, critical, ladder)| {
            let mut s = spec(serde_json::json!({}));
            s.interval = interval;
            s.cooldown = cooldown;
            s.auto_rollback = auto_rollback;
            s.metrics[0].critical = critical;
            if ladder {
                s.strategies = vec![
                    serde_json::from_value(serde_json::json!({"type": "EmergencyShutdown", "minSeverity": "Unhealthy"}))
                        .unwrap(),
                ];
            }
            s
        })
}

proptest! {
    /// The policy's own values always win; the profile fills exactly the gaps it can, and
    /// `inherited` names exactly those; resolving again changes nothing more.
    #[test]
    fn own_values_win_and_inherited_is_exact(spec in arb_spec(), profile in arb_profile()) {
        let profiles = Profiles { profiles: [("p".to_owned(), profile.clone())].into() };
        let selection = select(Some(&profiles), Some("p"), "production").unwrap();
        match resolve(&spec, "shop", &selection) {
            Err(e) => prop_assert!(spec.strategies.is_empty() && profile.strategies.is_empty(), "{e}"),
            Ok(r) => {
                let out = &r.spec;
                prop_assert_eq!(&out.interval, &spec.interval.clone().or(profile.interval.clone()));
                prop_assert_eq!(&out.cooldown, &spec.cooldown.clone().or(profile.cooldown.clone()));
                prop_assert_eq!(out.auto_rollback, spec.auto_rollback.or(profile.auto_rollback));
                prop_assert_eq!(out.metrics[0].critical, spec.metrics[0].critical.or(profile.thresholds.error_rate));
                prop_assert_eq!(out.metrics[1].critical, spec.metrics[1].critical);
                if !spec.strategies.is_empty() {
                    prop_assert_eq!(&out.strategies, &spec.strategies);
                }
                let inherits = |field: &str| r.inherited.iter().any(|f| f == field);
                prop_assert_eq!(inherits("interval"), spec.interval.is_none() && profile.interval.is_some());
                prop_assert_eq!(inherits("cooldown"), spec.cooldown.is_none() && profile.cooldown.is_some());
                prop_assert_eq!(inherits("autoRollback"), spec.auto_rollback.is_none() && profile.auto_rollback.is_some());
                prop_assert_eq!(inherits("strategies"), spec.strategies.is_empty());
                prop_assert_eq!(
                    inherits("metrics[errors].critical"),
                    spec.metrics[0].critical.is_none() && profile.thresholds.error_rate.is_some()
                );
                let again = resolve(out, "shop", &selection).unwrap();
                prop_assert_eq!(&again.spec, out);
                prop_assert!(again.inherited.is_empty());
                // What the effective settings show is what the operator's defaults give the
                // completed spec.
                let config = OperatorConfig::defaults();
                let eff = effective(&r, &config);
                prop_assert_eq!(eff.clone(), crate::api::EffectiveSettings {
                    profile: Some("p".into()),
                    inherited: r.inherited.clone(),
                    ..crate::config::effective(out, &config)
                });
                prop_assert_eq!(eff.metrics[0].critical, Some(out.metrics[0].critical.unwrap_or(config.preset_critical(Preset::ErrorRate))));
            }
        }
    }
}
