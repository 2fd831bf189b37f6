//! Pod template identity and Deployment revisions, as the upstream Deployment controller
//! computes them: template hashing, `EqualIgnoreHash`, and the revision annotations.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Alphabet of upstream's `rand.SafeEncodeString` (no vowels, no confusable characters).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Annotations of a Deployment that are never copied to its ReplicaSets (upstream's skip list).
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// The template as JSON with the `pod-template-hash` label removed (and an emptied label map
/// dropped), the form in which two templates are compared and hashed.
pub fn template_value_without_hash(template: &PodTemplateSpec) -> Value {
    let mut value = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Some(labels) = value
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
        if labels.is_empty()
            && let Some(meta) = value
                .pointer_mut("/metadata")
                .and_then(Value::as_object_mut)
        {
            meta.remove("labels");
        }
    }
    if let Some(meta) = value.get("metadata").and_then(Value::as_object)
        && meta.is_empty()
        && let Some(obj) = value.as_object_mut()
    {
        obj.remove("metadata");
    }
    value
}

/// Upstream's `EqualIgnoreHash`: the templates are equal once `pod-template-hash` is ignored.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    template_value_without_hash(a) == template_value_without_hash(b)
}

/// JSON with object keys sorted at every level, so equal values always print the same.
pub fn canonical_json(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let sorted: BTreeMap<&String, &Value> = map.iter().collect();
                out.push('{');
                for (i, (k, v)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(v, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(v, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Encodes a number as `len` characters of the safe alphabet.
pub fn safe_encode(mut n: u64, len: usize) -> String {
    let base = SAFE_ALPHABET.len() as u64;
    (0..len)
        .map(|_| {
            let c = SAFE_ALPHABET[(n % base) as usize] as char;
            n /= base;
            c
        })
        .collect()
}

/// A stable 10-character hash of the template (ignoring `pod-template-hash`), salted with the
/// collision count like upstream's `ComputeHash`.
pub fn template_hash(template: &PodTemplateSpec, collision_count: u32) -> String {
    let mut text = canonical_json(&template_value_without_hash(template));
    if collision_count > 0 {
        text.push_str(&format!("#{collision_count}"));
    }
    safe_encode(fnv1a64(text.as_bytes()), 10)
}

/// Random-looking suffix of `len` safe characters (pod names), from std's randomly keyed hasher.
pub fn random_suffix(len: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    safe_encode(hasher.finish(), len)
}

/// Revision number from a ReplicaSet's annotations (missing or invalid: `None`).
pub fn revision_of(annotations: Option<&BTreeMap<String, String>>) -> Option<i64> {
    annotations?.get(REVISION)?.parse().ok()
}

/// The revision annotations the current ReplicaSet must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionPlan {
    pub revision: i64,
    /// New value of `revision-history`, when it changes (rollback to an old ReplicaSet).
    pub history: Option<String>,
}

/// Upstream's `SetNewReplicaSetAnnotations`: the current ReplicaSet gets revision
/// `max(old revisions) + 1` unless it already has a higher one; when an existing revision is
/// replaced (the template went back to an old ReplicaSet), the old number moves to
/// `revision-history`.
pub fn plan_revision(
    current: Option<i64>,
    current_history: Option<&str>,
    old_revisions: &[i64],
) -> RevisionPlan {
    let next = old_revisions.iter().copied().max().unwrap_or(0) + 1;
    match current {
        Some(rev) if rev >= next => RevisionPlan {
            revision: rev,
            history: None,
        },
        Some(rev) => {
            let history = match current_history.filter(|h| !h.is_empty()) {
                Some(h) => format!("{h},{rev}"),
                None => rev.to_string(),
            };
            RevisionPlan {
                revision: next,
                history: Some(history),
            }
        }
        None => RevisionPlan {
            revision: next,
            history: None,
        },
    }
}

/// The Deployment annotations that upstream copies to its new ReplicaSet.
pub fn copied_annotations(
    deployment: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    deployment
        .into_iter()
        .flatten()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(image: &str, extra_label: Option<(&str, &str)>) -> PodTemplateSpec {
        let mut labels = json!({"app": "web"});
        if let Some((k, v)) = extra_label {
            labels[k] = json!(v);
        }
        serde_json::from_value(json!({
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "web", "image": image}]}
        }))
        .unwrap()
    }

    #[test]
    fn equality_ignores_only_the_hash_label() {
        let a = template("demo:v1", None);
        let b = template("demo:v1", Some((POD_TEMPLATE_HASH, "abc")));
        assert!(equal_ignore_hash(&a, &b));
        assert!(!equal_ignore_hash(&a, &template("demo:v2", None)));
        assert!(!equal_ignore_hash(
            &a,
            &template("demo:v1", Some(("tier", "x")))
        ));
    }

    #[test]
    fn only_hash_label_does_not_differ_from_no_labels() {
        let a: PodTemplateSpec =
            serde_json::from_value(json!({"spec": {"containers": []}})).unwrap();
        let b: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {POD_TEMPLATE_HASH: "x"}}, "spec": {"containers": []}
        }))
        .unwrap();
        assert!(equal_ignore_hash(&a, &b));
    }

    #[test]
    fn hash_is_stable_short_and_ignores_hash_label() {
        let h = template_hash(&template("demo:v1", None), 0);
        assert_eq!(h.len(), 10);
        assert!(
            h.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_eq!(h, template_hash(&template("demo:v1", None), 0));
        assert_eq!(
            h,
            template_hash(&template("demo:v1", Some((POD_TEMPLATE_HASH, "zz"))), 0)
        );
        assert_ne!(h, template_hash(&template("demo:v2", None), 0));
        assert_ne!(h, template_hash(&template("demo:v1", None), 1));
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[1,{"y":2,"x":1}],"c":"s"}}"#).unwrap();
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":"s","d":[1,{"x":1,"y":2}]},"b":1}"#
        );
    }

    #[test]
    fn revisions_follow_upstream() {
        // First ReplicaSet.
        assert_eq!(
            plan_revision(None, None, &[]),
            RevisionPlan {
                revision: 1,
                history: None
            }
        );
        // New template: max + 1.
        assert_eq!(
            plan_revision(None, None, &[1, 2]),
            RevisionPlan {
                revision: 3,
                history: None
            }
        );
        // Already current: unchanged.
        assert_eq!(
            plan_revision(Some(3), None, &[1, 2]),
            RevisionPlan {
                revision: 3,
                history: None
            }
        );
        // Rollback to revision 1 while 2 exists: 1 becomes 3, history keeps 1.
        assert_eq!(
            plan_revision(Some(1), None, &[2]),
            RevisionPlan {
                revision: 3,
                history: Some("1".into())
            }
        );
        // Second rollback of the same ReplicaSet appends to its history.
        assert_eq!(
            plan_revision(Some(3), Some("1"), &[4]),
            RevisionPlan {
                revision: 5,
                history: Some("1,3".into())
            }
        );
    }

    #[test]
    fn copies_annotations_except_skip_list() {
        let d: BTreeMap<String, String> = [
            ("kubernetes.io/change-cause", "deploy v2"),
            (REVISION, "4"),
            ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let copied = copied_annotations(Some(&d));
        assert_eq!(copied.len(), 1);
        assert_eq!(copied["kubernetes.io/change-cause"], "deploy v2");
    }

    #[test]
    fn random_suffixes_differ() {
        let a = random_suffix(5);
        assert_eq!(a.len(), 5);
        assert_ne!(a, random_suffix(5));
    }
}
