//! Gateway API `HTTPRoute` (gateway.networking.k8s.io/v1): `spec.rules[].backendRefs[]` with
//! `name`, `port`, `weight` (absent: 1, weights are relative), rules named by `name`.

use serde_json::{Value, json};

use super::Router;
use crate::{api::BackendRef, strategy::Kind};

pub struct HttpRoute;

impl Router for HttpRoute {
    fn kind(&self) -> Kind {
        Kind::HttpRoute
    }

    fn rules_member(&self) -> &'static str {
        "rules"
    }

    fn backends_member(&self) -> &'static str {
        "backendRefs"
    }

    fn is_backend(&self, entry: &Value, name: &str, port: Option<u16>, namespace: &str) -> bool {
        let field = |k: &str| entry.get(k).and_then(Value::as_str);
        // Only core Services are backends we know by name.
        let is_service = field("group").unwrap_or("").is_empty()
            && field("kind").unwrap_or("Service") == "Service";
        is_service
            && field("name") == Some(name)
            && field("namespace").is_none_or(|ns| ns == namespace)
            && port.is_none_or(|p| entry.get("port").and_then(Value::as_u64) == Some(p.into()))
    }

    fn weight(&self, entry: &Value, _entries: usize) -> u64 {
        entry.get("weight").and_then(Value::as_u64).unwrap_or(1)
    }

    fn entry(&self, backend: &BackendRef, weight: u64) -> Value {
        let mut e = json!({"name": backend.name, "weight": weight});
        if let Some(port) = backend.port {
            e["port"] = json!(port);
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_services_by_name_and_port() {
        let e = json!({"name": "web", "port": 80});
        assert!(HttpRoute.is_backend(&e, "web", None, "shop"));
        assert!(HttpRoute.is_backend(&e, "web", Some(80), "shop"));
        assert!(!HttpRoute.is_backend(&e, "web", Some(81), "shop"));
        assert!(!HttpRoute.is_backend(&e, "api", None, "shop"));
        let other_ns = json!({"name": "web", "namespace": "other"});
        assert!(!HttpRoute.is_backend(&other_ns, "web", None, "shop"));
        let not_service = json!({"name": "web", "group": "example.io", "kind": "Bucket"});
        assert!(!HttpRoute.is_backend(&not_service, "web", None, "shop"));
    }

    #[test]
    fn absent_weight_is_one() {
        assert_eq!(HttpRoute.weight(&json!({"name": "a"}), 3), 1);
        assert_eq!(HttpRoute.weight(&json!({"name": "a", "weight": 0}), 1), 0);
        let b = BackendRef {
            name: "m".into(),
            port: Some(8080),
        };
        assert_eq!(
            HttpRoute.entry(&b, 5),
            json!({"name": "m", "port": 8080, "weight": 5})
        );
    }
}
