//! Pure: which profile a policy inherits from, and its spec completed from that profile.
//!
//! Precedence, field by field: the policy's own value, then its profile's, then the operator's
//! flags (`config::effective`). Completing the spec (rather than teaching every reader about
//! profiles) keeps one truth: the reconcilers, the evaluator and the event controller read the
//! completed spec exactly as they read a spec that says everything itself.

use crate::{
    api::{EffectiveSettings, Preset, RollbackPolicySpec, Rung},
    config::{self, OperatorConfig},
};

use super::{Profile, Profiles};

/// Where a policy's profile name came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The namespace's `rollback.frys.io/profile` label.
    NamespaceLabel,
    /// The operator's `--environment` (`ROLLBACK_ENV`).
    Environment,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::NamespaceLabel => "the namespace label rollback.frys.io/profile",
            Origin::Environment => "the operator's --environment (ROLLBACK_ENV)",
        })
    }
}

/// The profile a policy inherits from.
#[derive(Clone, Debug, PartialEq)]
pub enum Selection<'a> {
    /// The operator has no profile configuration, and the namespace asks for none.
    Off,
    Found {
        name: &'a str,
        origin: Origin,
        profile: &'a Profile,
    },
}

/// Why a policy cannot be completed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("profile {name:?} (from {origin}) is not defined by the operator's profile configuration{}", known_list(.known))]
    Unknown {
        name: String,
        origin: Origin,
        known: Vec<String>,
    },
    #[error("spec.strategies is empty and {}", match .profile {
        Some(p) => format!("profile {p:?} has no strategies either"),
        None => "the operator has no environment profiles (--profiles-file) to take a ladder from".into(),
    })]
    NoLadder { profile: Option<String> },
    #[error("profile {profile:?} strategies[{index}]: {problem}")]
    Rung {
        profile: String,
        index: usize,
        problem: String,
    },
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        " (it defines none)".into()
    } else {
        format!(" (defined: {})", known.join(", "))
    }
}

impl ProfileError {
    /// The Ready condition's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ProfileError::Unknown { .. } => crate::api::conditions::UNKNOWN_PROFILE,
            ProfileError::NoLadder { .. } => crate::api::conditions::NO_LADDER,
            ProfileError::Rung { .. } => crate::api::conditions::INVALID_SPEC,
        }
    }
}

/// The profile for a policy in a namespace labelled `label` (if at all). An unknown name is an
/// error, never a silent fall-back to the operator's defaults.
pub fn select<'a>(
    profiles: Option<&'a Profiles>,
    label: Option<&'a str>,
    environment: &'a str,
) -> Result<Selection<'a>, ProfileError> {
    let (name, origin) = match label.filter(|l| !l.is_empty()) {
        Some(label) => (label, Origin::NamespaceLabel),
        None if profiles.is_none() => return Ok(Selection::Off),
        None => (environment, Origin::Environment),
    };
    match profiles.and_then(|p| p.profiles.get_key_value(name)) {
        Some((name, profile)) => Ok(Selection::Found {
            name,
            origin,
            profile,
        }),
        None => Err(ProfileError::Unknown {
            name: name.to_owned(),
            origin,
            known: profiles.map(Profiles::names).unwrap_or_default(),
        }),
    }
}

/// A policy's spec completed from its profile, and what the profile supplied.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub spec: RollbackPolicySpec,
    pub profile: Option<String>,
    /// Spec field paths the profile supplied, in a fixed order.
    pub inherited: Vec<String>,
}

/// Completes `spec` (of a policy in `namespace`) from the selected profile: each field the
/// spec leaves out and the profile sets is copied in, rung templates rendered for the target.
pub fn resolve(
    spec: &RollbackPolicySpec,
    namespace: &str,
    selection: &Selection<'_>,
) -> Result<Resolved, ProfileError> {
    let Selection::Found { name, profile, .. } = selection else {
        if spec.strategies.is_empty() {
            return Err(ProfileError::NoLadder { profile: None });
        }
        return Ok(Resolved {
            spec: spec.clone(),
            profile: None,
            inherited: vec![],
        });
    };
    let mut out = spec.clone();
    let mut inherited = vec![];
    let mut take = |field: &str, own: &mut Option<_>, theirs: &Option<_>| {
        if own.is_none() && theirs.is_some() {
            own.clone_from(theirs);
            inherited.push(field.to_owned());
        }
    };
    take("interval", &mut out.interval, &profile.interval);
    take(
        "releaseWindow",
        &mut out.release_window,
        &profile.release_window,
    );
    take(
        "rollbackTimeout",
        &mut out.rollback_timeout,
        &profile.rollback_timeout,
    );
    take("cooldown", &mut out.cooldown, &profile.cooldown);
    if out.auto_rollback.is_none() && profile.auto_rollback.is_some() {
        out.auto_rollback = profile.auto_rollback;
        inherited.push("autoRollback".into());
    }
    if out.strategies.is_empty() {
        if profile.strategies.is_empty() {
            return Err(ProfileError::NoLadder {
                profile: Some((*name).to_owned()),
            });
        }
        out.strategies = profile
            .strategies
            .iter()
            .enumerate()
            .map(|(index, rung)| {
                render_rung(rung, &spec.target_ref.name, namespace).map_err(|problem| {
                    ProfileError::Rung {
                        profile: (*name).to_owned(),
                        index,
                        problem,
                    }
                })
            })
            .collect::<Result<_, _>>()?;
        inherited.push("strategies".into());
    }
    for metric in &mut out.metrics {
        let theirs = metric.preset.and_then(|p| threshold(profile, p));
        if metric.critical.is_none()
            && let Some(critical) = theirs
        {
            metric.critical = Some(critical);
            inherited.push(format!("metrics[{}].critical", metric.name));
        }
    }
    Ok(Resolved {
        spec: out,
        profile: Some((*name).to_owned()),
        inherited,
    })
}

fn threshold(profile: &Profile, preset: Preset) -> Option<f64> {
    let t = &profile.thresholds;
    match preset {
        Preset::ResponseTime => t.response_time,
        Preset::ErrorRate => t.error_rate,
        Preset::MemoryUsage => t.memory_usage,
        Preset::CpuUsage => t.cpu_usage,
    }
}

/// `status.effective` of a resolved policy: the operator's defaults under it, and the profile.
pub fn effective(resolved: &Resolved, config: &OperatorConfig) -> EffectiveSettings {
    EffectiveSettings {
        profile: resolved.profile.clone(),
        inherited: resolved.inherited.clone(),
        ..config::effective(&resolved.spec, config)
    }
}

/// A rung template with `{{ target }}` and `{{ namespace }}` replaced in every string.
pub(super) fn render_rung(template: &Rung, target: &str, namespace: &str) -> Result<Rung, String> {
    let mut value = serde_json::to_value(template).map_err(|e| e.to_string())?;
    render_strings(&mut value, target, namespace)?;
    serde_json::from_value(value).map_err(|e| e.to_string())
}

fn render_strings(
    value: &mut serde_json::Value,
    target: &str,
    namespace: &str,
) -> Result<(), String> {
    use serde_json::Value;
    match value {
        Value::String(s) => *s = render(s, target, namespace)?,
        Value::Array(items) => {
            for item in items {
                render_strings(item, target, namespace)?;
            }
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                render_strings(item, target, namespace)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Replaces `{{ target }}` and `{{ namespace }}` (spaces optional); any other `{{ … }}` is an
/// error, so a typo is refused when the profiles load rather than becoming an object name.
fn render(text: &str, target: &str, namespace: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("{text:?}: an unclosed {{{{"))?;
        match after[..end].trim() {
            "target" => out.push_str(target),
            "namespace" => out.push_str(namespace),
            other => {
                return Err(format!(
                    "{text:?}: unknown placeholder {{{{ {other} }}}} (known: {{{{ target }}}}, {{{{ namespace }}}})"
                ));
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
pub(super) fn render_for_tests(
    text: &str,
    target: &str,
    namespace: &str,
) -> Result<String, String> {
    render(text, target, namespace)
}
