//! What "restored exactly" compares: an object's JSON without the fields the API server (or a
//! controller) manages, canonicalised and digested. Pure.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Left out of the comparison, as JSON pointers: bookkeeping the API server changes on every
/// write (`resourceVersion`, `managedFields`, `generation`), the creation timestamp, and
/// `status` (written by controllers, e.g. a Deployment's replica counts during a scale).
/// Everything else counts: spec, labels, annotations, ownerReferences, finalizers, uid (a
/// re-created object is not the same object).
pub const IGNORED: &[&str] = &[
    "/metadata/resourceVersion",
    "/metadata/managedFields",
    "/metadata/generation",
    "/metadata/creationTimestamp",
    "/status",
];

/// The comparable part of an object.
pub fn comparable(object: &Value) -> Value {
    let mut object = object.clone();
    for pointer in IGNORED {
        let (parent, key) = pointer.rsplit_once('/').expect("pointers have a parent");
        let parent = if parent.is_empty() {
            Some(&mut object)
        } else {
            object.pointer_mut(parent)
        };
        if let Some(Value::Object(map)) = parent {
            map.remove(key);
        }
    }
    object
}

/// SHA-256 (hex) of the comparable part, with object keys sorted at every level, so the order
/// the API server happens to send keys in does not matter.
pub fn digest(object: &Value) -> String {
    let canonical = canonical(&comparable(object));
    let bytes = serde_json::to_vec(&canonical).expect("JSON values serialize");
    format!("{:x}", Sha256::digest(bytes))
}

fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), canonical(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(selector: &str, rv: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "resourceVersion": rv, "generation": 3,
                         "creationTimestamp": "2026-12-01T10:00:00Z", "uid": "u1",
                         "labels": {"app": "web"}, "managedFields": [{"manager": "kubectl"}]},
            "spec": {"selector": {"app": "web", "color": selector}},
            "status": {"loadBalancer": {}}
        })
    }

    #[test]
    fn server_managed_fields_do_not_count() {
        let before = service("green", "100");
        let mut after = service("green", "107");
        after["metadata"]["generation"] = json!(5);
        after["metadata"]["managedFields"] = json!([{"manager": "frys-rollback"}]);
        after["status"] = json!({"loadBalancer": {"ingress": []}});
        assert_eq!(digest(&before), digest(&after));
        assert_eq!(
            comparable(&before)["metadata"],
            json!({"name": "web", "uid": "u1", "labels": {"app": "web"}})
        );
    }

    #[test]
    fn spec_labels_annotations_and_identity_count() {
        let before = service("green", "100");
        let mut changed = vec![service("blue", "100")];
        let mut labelled = service("green", "100");
        labelled["metadata"]["labels"]["extra"] = json!("x");
        changed.push(labelled);
        let mut annotated = service("green", "100");
        annotated["metadata"]["annotations"] = json!({"a": "b"});
        changed.push(annotated);
        let mut recreated = service("green", "100");
        recreated["metadata"]["uid"] = json!("u2");
        changed.push(recreated);
        for other in changed {
            assert_ne!(digest(&before), digest(&other), "{other}");
        }
    }

    #[test]
    fn key_order_does_not_count() {
        let a: Value =
            serde_json::from_str(r#"{"spec": {"a": 1, "b": [{"x": 1, "y": 2}]}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"spec": {"b": [{"y": 2, "x": 1}], "a": 1}}"#).unwrap();
        assert_eq!(digest(&a), digest(&b));
    }
}
