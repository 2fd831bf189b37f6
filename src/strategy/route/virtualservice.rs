//! Istio `VirtualService` (networking.istio.io/v1): `spec.http[].route[]` with
//! `destination: {host, port: {number}}` and `weight`, routes named by `name`. A lone
//! destination without weight gets all traffic; with several, an absent weight counts as 0.

use serde_json::{Value, json};

use super::Router;
use crate::{api::BackendRef, strategy::Kind};

pub struct VirtualService;

impl Router for VirtualService {
    fn kind(&self) -> Kind {
        Kind::VirtualService
    }

    fn rules_member(&self) -> &'static str {
        "http"
    }

    fn backends_member(&self) -> &'static str {
        "route"
    }

    fn is_backend(&self, entry: &Value, name: &str, port: Option<u16>, namespace: &str) -> bool {
        let Some(host) = entry.pointer("/destination/host").and_then(Value::as_str) else {
            return false;
        };
        // `web`, `web.shop`, `web.shop.svc`, `web.shop.svc.cluster.local` all name Service web.
        let qualified = format!("{name}.{namespace}");
        let same_service =
            host == name || host == qualified || host.starts_with(&format!("{qualified}.svc"));
        let port_number = entry
            .pointer("/destination/port/number")
            .and_then(Value::as_u64);
        same_service && port.is_none_or(|p| port_number == Some(p.into()))
    }

    fn weight(&self, entry: &Value, entries: usize) -> u64 {
        match entry.get("weight").and_then(Value::as_u64) {
            Some(w) => w,
            None if entries == 1 => 100,
            None => 0,
        }
    }

    fn entry(&self, backend: &BackendRef, weight: u64) -> Value {
        let mut destination = json!({"host": backend.name});
        if let Some(port) = backend.port {
            destination["port"] = json!({"number": port});
        }
        json!({"destination": destination, "weight": weight})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_services_short_or_qualified() {
        let entry = |host: &str| json!({"destination": {"host": host, "port": {"number": 80}}});
        for host in [
            "web",
            "web.shop",
            "web.shop.svc",
            "web.shop.svc.cluster.local",
        ] {
            assert!(
                VirtualService.is_backend(&entry(host), "web", Some(80), "shop"),
                "{host}"
            );
        }
        for host in ["web.other.svc.cluster.local", "webx", "api"] {
            assert!(
                !VirtualService.is_backend(&entry(host), "web", None, "shop"),
                "{host}"
            );
        }
        assert!(!VirtualService.is_backend(&entry("web"), "web", Some(81), "shop"));
    }

    #[test]
    fn a_lone_destination_takes_all() {
        let e = json!({"destination": {"host": "web"}});
        assert_eq!(VirtualService.weight(&e, 1), 100);
        assert_eq!(VirtualService.weight(&e, 2), 0);
        let b = BackendRef {
            name: "m".into(),
            port: Some(80),
        };
        assert_eq!(
            VirtualService.entry(&b, 100),
            json!({"destination": {"host": "m", "port": {"number": 80}}, "weight": 100})
        );
    }
}
