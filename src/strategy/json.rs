//! Helpers for reading and patching objects held as JSON.

use serde_json::Value;

/// A string at a JSON pointer.
pub fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// `metadata.name`, or "" when absent.
pub fn name(v: &Value) -> &str {
    str_at(v, "/metadata/name").unwrap_or_default()
}

pub fn resource_version(v: &Value) -> Option<String> {
    str_at(v, "/metadata/resourceVersion").map(str::to_owned)
}

pub fn annotation<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// `spec.replicas`, defaulting to 1 as the API server does.
pub fn replicas(v: &Value) -> i32 {
    v.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .map_or(1, |r| r as i32)
}

/// Escapes a key for use in a JSON pointer (RFC 6901).
pub fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// A JSON Patch from its operations written as JSON.
pub fn patch(ops: Vec<Value>) -> json_patch::Patch {
    serde_json::from_value(Value::Array(ops)).expect("well-formed JSON Patch operations")
}

/// JSON Patch operations setting (`Some`) or removing (`None`) annotations, given the
/// object's current annotations. Adds the annotations map when the object has none.
pub fn annotation_ops(
    object: &Value,
    changes: &std::collections::BTreeMap<String, Option<String>>,
) -> Vec<Value> {
    let current = object
        .pointer("/metadata/annotations")
        .and_then(Value::as_object);
    let Some(current) = current else {
        let set: serde_json::Map<String, Value> = changes
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), Value::String(v.clone()?))))
            .collect();
        return if set.is_empty() {
            vec![]
        } else {
            vec![serde_json::json!({"op": "add", "path": "/metadata/annotations", "value": set})]
        };
    };
    let emptied = current.keys().all(|k| matches!(changes.get(k), Some(None)))
        && changes.values().all(Option::is_none);
    if emptied && !current.is_empty() {
        // Removing the last ones: remove the map, as it was before we added it.
        return vec![serde_json::json!({"op": "remove", "path": "/metadata/annotations"})];
    }
    changes
        .iter()
        .filter_map(|(k, v)| {
            let path = format!("/metadata/annotations/{}", escape(k));
            match (v, current.get(k).and_then(Value::as_str)) {
                (Some(new), Some(old)) if new == old => None,
                (Some(new), _) => {
                    Some(serde_json::json!({"op": "add", "path": path, "value": new}))
                }
                (None, Some(_)) => Some(serde_json::json!({"op": "remove", "path": path})),
                (None, None) => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_ops_add_the_map_when_missing() {
        use serde_json::json;
        let changes = [
            ("a/b".to_owned(), Some("1".to_owned())),
            ("gone".to_owned(), None),
        ]
        .into();
        let ops = annotation_ops(&json!({"metadata": {}}), &changes);
        assert_eq!(
            ops,
            vec![json!({"op": "add", "path": "/metadata/annotations", "value": {"a/b": "1"}})]
        );
        let ops = annotation_ops(
            &json!({"metadata": {"annotations": {"gone": "x", "a/b": "1"}}}),
            &changes,
        );
        assert_eq!(
            ops,
            vec![json!({"op": "remove", "path": "/metadata/annotations/gone"})]
        );
    }
}
