//! Fault model: what each simulated pod does (error rate, latency, resources, health), resolved
//! purely from defaults, the image tag, pod template annotations and runtime faults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const ANN_ERROR_RATE: &str = "sim.frys.io/error-rate";
pub const ANN_LATENCY_MS: &str = "sim.frys.io/latency-ms";
pub const ANN_MEMORY_RATIO: &str = "sim.frys.io/memory-ratio";
pub const ANN_CPU_RATIO: &str = "sim.frys.io/cpu-ratio";
pub const ANN_RPS: &str = "sim.frys.io/rps";
pub const ANN_HEALTHY: &str = "sim.frys.io/healthy";
pub const ANN_FAIL_PATHS: &str = "sim.frys.io/fail-paths";

/// Error rate of an image whose tag contains `faulty` (e.g. `demo:v2-faulty`).
pub const FAULTY_IMAGE_ERROR_RATE: f64 = 0.30;

/// Partial fault settings: every field optional, set fields override earlier sources.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_paths: Option<Vec<String>>,
}

impl FaultSpec {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(r) = self.error_rate
            && !(0.0..=1.0).contains(&r)
        {
            return Err(format!("errorRate must be within 0..1, got {r}"));
        }
        for (name, v) in [
            ("latencyMs", self.latency_ms),
            ("memoryRatio", self.memory_ratio),
            ("cpuRatio", self.cpu_ratio),
            ("rps", self.rps),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(format!("{name} must be a finite number >= 0, got {v}"));
            }
        }
        Ok(())
    }

    /// Reads the `sim.frys.io/*` annotations; invalid values are reported and skipped.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> (FaultSpec, Vec<String>) {
        let mut errors = Vec::new();
        let mut number = |key: &str, valid: fn(f64) -> bool| {
            let raw = annotations.get(key)?;
            match raw.trim().parse::<f64>() {
                Ok(v) if valid(v) => Some(v),
                _ => {
                    errors.push(format!("ignoring {key}={raw:?}"));
                    None
                }
            }
        };
        let non_negative = |v: f64| v.is_finite() && v >= 0.0;
        let spec = FaultSpec {
            error_rate: number(ANN_ERROR_RATE, |v| (0.0..=1.0).contains(&v)),
            latency_ms: number(ANN_LATENCY_MS, non_negative),
            memory_ratio: number(ANN_MEMORY_RATIO, non_negative),
            cpu_ratio: number(ANN_CPU_RATIO, non_negative),
            rps: number(ANN_RPS, non_negative),
            healthy: annotations
                .get(ANN_HEALTHY)
                .map(|v| !v.trim().eq_ignore_ascii_case("false")),
            fail_paths: annotations.get(ANN_FAIL_PATHS).map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect()
            }),
        };
        (spec, errors)
    }
}

/// A runtime fault from the control API, for the pods of one app (optionally one image).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", from = "FaultRuleJson")]
pub struct FaultRule {
    pub namespace: String,
    pub app: String,
    /// Only pods running this image (exact match on any container); absent: every pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(flatten)]
    pub spec: FaultSpec,
}

/// The JSON body of `POST /faults`: flat, unknown fields refused (serde cannot combine
/// `flatten` with `deny_unknown_fields`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FaultRuleJson {
    namespace: String,
    app: String,
    image: Option<String>,
    error_rate: Option<f64>,
    latency_ms: Option<f64>,
    memory_ratio: Option<f64>,
    cpu_ratio: Option<f64>,
    rps: Option<f64>,
    healthy: Option<bool>,
    fail_paths: Option<Vec<String>>,
}

impl From<FaultRuleJson> for FaultRule {
    fn from(j: FaultRuleJson) -> Self {
        FaultRule {
            namespace: j.namespace,
            app: j.app,
            image: j.image.filter(|i| !i.is_empty()),
            spec: FaultSpec {
                error_rate: j.error_rate,
                latency_ms: j.latency_ms,
                memory_ratio: j.memory_ratio,
                cpu_ratio: j.cpu_ratio,
                rps: j.rps,
                healthy: j.healthy,
                fail_paths: j.fail_paths,
            },
        }
    }
}

/// What a pod does, after resolution.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resolved {
    pub error_rate: f64,
    pub latency_ms: f64,
    /// The latency was asked for (annotation or runtime fault), so HTTP answers are delayed too.
    pub latency_set: bool,
    pub memory_ratio: f64,
    pub cpu_ratio: f64,
    pub rps: f64,
    pub healthy: bool,
    pub fail_paths: Vec<String>,
    /// Which sources applied, in order.
    pub sources: Vec<String>,
}

impl Default for Resolved {
    fn default() -> Self {
        Resolved {
            error_rate: 0.001,
            latency_ms: 40.0,
            latency_set: false,
            memory_ratio: 0.40,
            cpu_ratio: 0.30,
            rps: 20.0,
            healthy: true,
            fail_paths: Vec::new(),
            sources: vec!["defaults".into()],
        }
    }
}

impl Resolved {
    fn apply(&mut self, spec: &FaultSpec, source: String) {
        if *spec == FaultSpec::default() {
            return;
        }
        let set = |dst: &mut f64, v: Option<f64>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        set(&mut self.error_rate, spec.error_rate);
        set(&mut self.latency_ms, spec.latency_ms);
        set(&mut self.memory_ratio, spec.memory_ratio);
        set(&mut self.cpu_ratio, spec.cpu_ratio);
        set(&mut self.rps, spec.rps);
        self.latency_set |= spec.latency_ms.is_some();
        if let Some(h) = spec.healthy {
            self.healthy = h;
        }
        if let Some(p) = &spec.fail_paths {
            self.fail_paths = p.clone();
        }
        self.sources.push(source);
    }

    /// Share of requests that fail: an unhealthy pod answers 503 to everything.
    pub fn effective_error_rate(&self) -> f64 {
        if self.healthy { self.error_rate } else { 1.0 }
    }

    /// HTTP status for a request path: 503 when unhealthy or the path is a failing one.
    pub fn status_for(&self, path: &str) -> u16 {
        let failing = self
            .fail_paths
            .iter()
            .any(|p| p.trim_end_matches('/') == path.trim_end_matches('/'));
        if !self.healthy || failing { 503 } else { 200 }
    }
}

/// Tag of an image reference (`registry:5000/demo:v2-faulty@sha256:..` → `v2-faulty`).
pub fn image_tag(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_segment = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last_segment.split_once(':').map(|(_, tag)| tag)
}

/// Resolves a pod's behaviour. Later sources override earlier ones: defaults, a `faulty` image
/// tag, the pod's annotations, runtime faults for the whole app, runtime faults for its image.
pub fn resolve(
    namespace: &str,
    app: &str,
    images: &[&str],
    annotations: &BTreeMap<String, String>,
    rules: &[FaultRule],
) -> Resolved {
    let mut r = Resolved::default();
    if let Some(image) = images
        .iter()
        .find(|i| image_tag(i).is_some_and(|t| t.contains("faulty")))
    {
        let spec = FaultSpec {
            error_rate: Some(FAULTY_IMAGE_ERROR_RATE),
            ..Default::default()
        };
        r.apply(&spec, format!("image:{image}"));
    }
    r.apply(
        &FaultSpec::from_annotations(annotations).0,
        "annotations".into(),
    );
    let matching = |rule: &&FaultRule| rule.namespace == namespace && rule.app == app;
    for rule in rules.iter().filter(matching).filter(|r| r.image.is_none()) {
        r.apply(&rule.spec, format!("fault:{}/{}", rule.namespace, rule.app));
    }
    for rule in rules.iter().filter(matching) {
        if let Some(image) = &rule.image
            && images.contains(&image.as_str())
        {
            r.apply(
                &rule.spec,
                format!("fault:{}/{}@{image}", rule.namespace, rule.app),
            );
        }
    }
    r
}

/// Runtime faults, one per (namespace, app, image).
#[derive(Debug, Default)]
pub struct FaultRegistry {
    rules: Vec<FaultRule>,
}

impl FaultRegistry {
    /// Sets the fault for the rule's key, replacing an earlier one.
    pub fn upsert(&mut self, rule: FaultRule) {
        let same_key = |r: &FaultRule| {
            r.namespace == rule.namespace && r.app == rule.app && r.image == rule.image
        };
        match self.rules.iter_mut().find(|r| same_key(r)) {
            Some(existing) => *existing = rule,
            None => self.rules.push(rule),
        }
    }

    /// Removes every rule matching all given filters; returns how many were removed.
    pub fn remove(
        &mut self,
        namespace: Option<&str>,
        app: Option<&str>,
        image: Option<&str>,
    ) -> usize {
        let before = self.rules.len();
        self.rules.retain(|r| {
            let hit = namespace.is_none_or(|n| r.namespace == n)
                && app.is_none_or(|a| r.app == a)
                && image.is_none_or(|i| r.image.as_deref() == Some(i));
            !hit
        });
        before - self.rules.len()
    }

    pub fn rules(&self) -> &[FaultRule] {
        &self.rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn rule(image: Option<&str>, spec: FaultSpec) -> FaultRule {
        FaultRule {
            namespace: "shop".into(),
            app: "web".into(),
            image: image.map(Into::into),
            spec,
        }
    }

    #[test]
    fn defaults_are_healthy() {
        let r = resolve("shop", "web", &["demo:v1"], &BTreeMap::new(), &[]);
        assert_eq!(r, Resolved::default());
        assert_eq!(r.status_for("/anything"), 200);
    }

    #[test]
    fn image_tags() {
        assert_eq!(image_tag("demo:v2-faulty"), Some("v2-faulty"));
        assert_eq!(image_tag("registry:5000/demo"), None);
        assert_eq!(image_tag("registry:5000/demo:v1@sha256:abc"), Some("v1"));
        assert_eq!(image_tag("faulty/demo:v1"), Some("v1"));
    }

    #[test]
    fn faulty_image_unless_annotated() {
        let r = resolve("shop", "web", &["demo:v2-faulty"], &BTreeMap::new(), &[]);
        assert_eq!(r.error_rate, 0.30);
        let r = resolve(
            "shop",
            "web",
            &["demo:v2-faulty"],
            &ann(&[(ANN_ERROR_RATE, "0.05")]),
            &[],
        );
        assert_eq!(r.error_rate, 0.05);
        // A repository called "faulty" is not a faulty tag.
        assert_eq!(
            resolve("shop", "web", &["faulty/demo:v1"], &BTreeMap::new(), &[]).error_rate,
            0.001
        );
    }

    #[test]
    fn annotations_parse_and_bad_values_are_skipped() {
        let a = ann(&[
            (ANN_LATENCY_MS, "900"),
            (ANN_MEMORY_RATIO, "0.95"),
            (ANN_CPU_RATIO, "oops"),
            (ANN_HEALTHY, "false"),
            (ANN_FAIL_PATHS, "/consistency, /deps ,"),
            (ANN_ERROR_RATE, "1.5"),
        ]);
        let (spec, errors) = FaultSpec::from_annotations(&a);
        assert_eq!(errors.len(), 2);
        assert_eq!(
            spec.fail_paths.as_deref(),
            Some(&["/consistency".to_string(), "/deps".to_string()][..])
        );
        let r = resolve("shop", "web", &["demo:v1"], &a, &[]);
        assert_eq!(
            (r.latency_ms, r.memory_ratio, r.cpu_ratio),
            (900.0, 0.95, 0.30)
        );
        assert!(r.latency_set);
        assert!(!r.healthy);
        assert_eq!(r.effective_error_rate(), 1.0);
        assert_eq!(r.status_for("/"), 503);
    }

    #[test]
    fn fail_paths_only_fail_those_paths() {
        let r = resolve(
            "shop",
            "web",
            &["demo:v1"],
            &ann(&[(ANN_FAIL_PATHS, "/consistency")]),
            &[],
        );
        assert_eq!(r.status_for("/consistency"), 503);
        assert_eq!(r.status_for("/consistency/"), 503);
        assert_eq!(r.status_for("/health"), 200);
    }

    #[test]
    fn image_scoped_runtime_fault_heals_on_rollback() {
        let rules = [rule(
            Some("demo:v2"),
            FaultSpec {
                error_rate: Some(0.3),
                ..Default::default()
            },
        )];
        assert_eq!(
            resolve("shop", "web", &["demo:v2"], &BTreeMap::new(), &rules).error_rate,
            0.3
        );
        assert_eq!(
            resolve("shop", "web", &["demo:v1"], &BTreeMap::new(), &rules).error_rate,
            0.001
        );
        assert_eq!(
            resolve("other", "web", &["demo:v2"], &BTreeMap::new(), &rules).error_rate,
            0.001
        );
    }

    #[test]
    fn app_wide_fault_survives_rollback_and_image_fault_wins() {
        let rules = [
            rule(
                Some("demo:v2"),
                FaultSpec {
                    latency_ms: Some(2000.0),
                    ..Default::default()
                },
            ),
            rule(
                None,
                FaultSpec {
                    latency_ms: Some(900.0),
                    error_rate: Some(0.2),
                    ..Default::default()
                },
            ),
        ];
        let v1 = resolve(
            "shop",
            "web",
            &["demo:v1"],
            &ann(&[(ANN_ERROR_RATE, "0.01")]),
            &rules,
        );
        assert_eq!((v1.latency_ms, v1.error_rate), (900.0, 0.2));
        let v2 = resolve("shop", "web", &["demo:v2"], &BTreeMap::new(), &rules);
        assert_eq!(v2.latency_ms, 2000.0);
        assert_eq!(
            v2.sources,
            ["defaults", "fault:shop/web", "fault:shop/web@demo:v2"]
        );
    }

    #[test]
    fn registry_upserts_and_removes_by_filter() {
        let mut reg = FaultRegistry::default();
        reg.upsert(rule(
            None,
            FaultSpec {
                rps: Some(1.0),
                ..Default::default()
            },
        ));
        reg.upsert(rule(
            None,
            FaultSpec {
                rps: Some(2.0),
                ..Default::default()
            },
        ));
        reg.upsert(rule(Some("demo:v2"), FaultSpec::default()));
        assert_eq!(reg.rules().len(), 2);
        assert_eq!(reg.rules()[0].spec.rps, Some(2.0));
        assert_eq!(reg.remove(Some("shop"), Some("web"), Some("demo:v2")), 1);
        assert_eq!(reg.remove(Some("shop"), Some("other"), None), 0);
        assert_eq!(reg.remove(Some("shop"), Some("web"), None), 1);
        assert!(reg.rules().is_empty());
    }

    #[test]
    fn rule_json_and_validation() {
        let r: FaultRule = serde_json::from_str(
            r#"{"namespace":"x","app":"web","errorRate":0.3,"latencyMs":900,"healthy":false,"failPaths":["/consistency"]}"#,
        )
        .unwrap();
        assert_eq!(r.spec.error_rate, Some(0.3));
        assert!(r.spec.validate().is_ok());
        assert!(
            FaultSpec {
                error_rate: Some(2.0),
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            FaultSpec {
                rps: Some(-1.0),
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            serde_json::from_str::<FaultRule>(r#"{"namespace":"x","app":"w","errorrate":1}"#)
                .is_err()
        );
    }
}
