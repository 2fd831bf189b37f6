//! Environment profiles: per environment (development, staging, production, or a custom name)
//! the default ladder, interval, thresholds, timeouts and `autoRollback` of the policies that
//! leave those fields out.
//!
//! The profile configuration is one YAML document, a map from profile name to [`Profile`]
//! (the chart renders it from `profiles:` in its values into a ConfigMap mounted as a file,
//! `--profiles-file`). A policy's profile is its namespace's `rollback.frys.io/profile` label,
//! else the operator's `--environment` (`ROLLBACK_ENV`).
//!
//! - `resolve`: the pure part: which profile, and the policy's spec completed from it
//!   (spec + profile + operator config → `status.effective`);
//! - `source`: the I/O part: the file (re-read when it changes) and the namespace labels.

mod resolve;
mod source;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use resolve::{Origin, ProfileError, Resolved, Selection, effective, resolve, select};
pub use source::Source;

use crate::api::{Duration, Rung};

/// One environment's defaults. Every field is optional: a policy's own value always wins, and
/// what neither sets comes from the operator's flags.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    /// The ladder for policies without `spec.strategies`, lightest first. String fields may
    /// use `{{ target }}` (the policy's target name) and `{{ namespace }}`, so one ladder fits
    /// every workload: `service: "{{ target }}"`, `standbyRef: "{{ target }}-blue"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strategies: Vec<Rung>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rollback: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_window: Option<Duration>,
    /// Critical thresholds of the presets (the seed's alertThresholds), for metrics that set
    /// no `critical`.
    #[serde(default, skip_serializing_if = "Thresholds::is_empty")]
    pub thresholds: Thresholds,
}

/// Critical thresholds of the four presets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Thresholds {
    /// p95 latency, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_time: Option<f64>,
    /// 0-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// 0-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_usage: Option<f64>,
    /// 0-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_usage: Option<f64>,
}

impl Thresholds {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The profile configuration: profiles by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profiles {
    pub profiles: BTreeMap<String, Profile>,
}

/// A profile configuration the operator refuses, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidProfiles {
    #[error("not a map of profile name to profile: {0}")]
    Parse(String),
    #[error("profile {profile:?}: {problem}")]
    Profile { profile: String, problem: String },
}

impl Profiles {
    /// Parses and checks a profile configuration (YAML or JSON). Every problem a policy would
    /// otherwise meet later (a bad duration, a rung without its parameters, an unknown
    /// placeholder) is refused here, with the profile that has it.
    pub fn parse(text: &str) -> Result<Self, InvalidProfiles> {
        let profiles: Option<BTreeMap<String, Profile>> =
            yaml_serde::from_str(text).map_err(|e| InvalidProfiles::Parse(e.to_string()))?;
        let profiles = Self {
            profiles: profiles.unwrap_or_default(),
        };
        for (name, profile) in &profiles.profiles {
            check(name, profile).map_err(|problem| InvalidProfiles::Profile {
                profile: name.clone(),
                problem,
            })?;
        }
        Ok(profiles)
    }

    /// Profile names, for messages.
    pub fn names(&self) -> Vec<String> {
        self.profiles.keys().cloned().collect()
    }
}

/// What the CRD schema would refuse in a policy, refused in a profile (it has no schema).
fn check(name: &str, profile: &Profile) -> Result<(), String> {
    // A profile is named by a label value.
    let label_value = regex::Regex::new(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
        .expect("a valid regex");
    if !label_value.is_match(name) {
        return Err("the name must be a label value (63 characters at most: letters, digits, '-', '_', '.', alphanumeric at both ends)".into());
    }
    let durations = [
        ("interval", &profile.interval),
        ("rollbackTimeout", &profile.rollback_timeout),
        ("cooldown", &profile.cooldown),
        ("releaseWindow", &profile.release_window),
    ];
    for (field, value) in durations {
        if let Some(Err(e)) = value.as_ref().map(|d| d.get()) {
            return Err(format!("{field}: {e}"));
        }
    }
    for (field, value) in [
        ("interval", &profile.interval),
        ("rollbackTimeout", &profile.rollback_timeout),
    ] {
        if value
            .as_ref()
            .and_then(|d| d.get().ok())
            .is_some_and(|d| d < std::time::Duration::from_secs(1))
        {
            return Err(format!("{field} must be at least 1s"));
        }
    }
    let t = &profile.thresholds;
    if let Some(v) = t.response_time.filter(|v| !(v.is_finite() && *v >= 0.0)) {
        return Err(format!(
            "thresholds.responseTime {v} is not a number of milliseconds"
        ));
    }
    for (field, value) in [
        ("errorRate", t.error_rate),
        ("memoryUsage", t.memory_usage),
        ("cpuUsage", t.cpu_usage),
    ] {
        if value.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
            return Err(format!(
                "thresholds.{field} must be a ratio between 0 and 1"
            ));
        }
    }
    if profile.strategies.len() > 5 {
        return Err("strategies: at most 5 rungs".into());
    }
    for (i, template) in profile.strategies.iter().enumerate() {
        if profile.strategies[..i]
            .iter()
            .any(|r| r.type_ == template.type_)
        {
            return Err(format!(
                "strategies[{i}]: {} appears twice (each strategy type at most once)",
                template.type_
            ));
        }
        // Rendered for a sample workload, the rung must be one the strategies accept.
        let rung = resolve::render_rung(template, "web", "shop")
            .map_err(|e| format!("strategies[{i}]: {e}"))?;
        crate::strategy::Remediation::from_rung(&rung)
            .map_err(|e| format!("strategies[{i}] ({}): {e}", rung.type_))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
