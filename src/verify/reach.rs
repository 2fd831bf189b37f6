//! Where a verification probe may connect. Pure: the caller reads the EndpointSlices and Pods.
//!
//! A policy author is a namespace user, and the Service a probe names is theirs. Its
//! EndpointSlices are no proof of anything: a Service without a selector takes hand-written
//! ones, with any address (another namespace's pod, the API server, a node, a metadata
//! service). So an address is probed only when the operator can tell it is a pod of the
//! policy's own namespace, from what only the cluster writes:
//!
//! - the endpoint's `targetRef` names a Pod of the policy's namespace, and
//! - that Pod's `status.podIPs` (written by the kubelet, not by namespace users) holds the
//!   address, and the Pod is not on the host network (its IP would be the node's).
//!
//! The pods of the namespace are what the policy author can reach anyway (their own pods, their
//! own port-forward), so a probe reveals nothing they could not see themselves. Pods rather than
//! only the target's: traffic rungs are verified on the backend that now serves (the standby,
//! the `to` backend, the fallback), which the same author names in the same policy.
//!
//! The operator may allow more with `--allow-probe-url` prefixes, matched against the probe's
//! URL by address and by Service name. Link-local and metadata addresses are refused whatever
//! the allow-list says.

use std::net::IpAddr;

use k8s_openapi::api::{core::v1::Pod, discovery::v1::Endpoint};

use crate::{config::url_under_prefix, egress};

/// One address to probe, as an EndpointSlice lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub address: String,
    /// `namespace/name` of the Pod the endpoint's targetRef names, when it names a Pod.
    pub pod: Option<(Option<String>, String)>,
}

/// Ready addresses of the endpoints, with the Pod each names.
pub fn candidates<'a>(endpoints: impl IntoIterator<Item = &'a Endpoint>) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = vec![];
    for e in endpoints {
        if !e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true) {
            continue;
        }
        let pod = e
            .target_ref
            .as_ref()
            .filter(|r| r.kind.as_deref() == Some("Pod"))
            .and_then(|r| Some((r.namespace.clone(), r.name.clone()?)));
        for address in &e.addresses {
            if !out.iter().any(|c| &c.address == address) {
                out.push(Candidate {
                    address: address.clone(),
                    pod: pod.clone(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.address.cmp(&b.address));
    out
}

/// The URL of a probe of `address` (an IP, or a name under an FQDN slice).
pub fn address_url(address: &str, port: u16, path: &str) -> String {
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_owned()
    };
    format!("http://{host}:{port}{path}")
}

/// The same probe named by its Service, as the allow-list may name it.
pub fn service_url(service: &str, namespace: &str, port: u16, path: &str) -> String {
    format!("http://{service}.{namespace}.svc:{port}{path}")
}

/// What a probe needs to decide on one address.
pub struct Question<'a> {
    pub namespace: &'a str,
    pub service: &'a str,
    pub port: u16,
    pub path: &'a str,
    pub candidate: &'a Candidate,
    /// The Pod the targetRef names, as read from the API server (None: not found or none).
    pub pod: Option<&'a Pod>,
    pub allow: &'a [String],
}

/// Ok when the probe may connect; otherwise why not, in words.
pub fn decide(q: &Question<'_>) -> Result<(), String> {
    let address = q.candidate.address.as_str();
    let ip = address.parse::<IpAddr>().ok();
    if let Some(ip) = ip
        && egress::refused_ip(ip)
    {
        return Err(format!(
            "{address} is a link-local or metadata address; the operator never probes it"
        ));
    }
    let urls = [
        address_url(address, q.port, q.path),
        service_url(q.service, q.namespace, q.port, q.path),
    ];
    if urls
        .iter()
        .any(|url| q.allow.iter().any(|prefix| url_under_prefix(url, prefix)))
    {
        return Ok(());
    }
    let hint = "(the operator's --allow-probe-url can allow it)";
    let Some(ip) = ip else {
        return Err(format!("{address} is not an IP address {hint}"));
    };
    let Some((pod_namespace, pod_name)) = &q.candidate.pod else {
        return Err(format!("{address} is not the address of a Pod {hint}"));
    };
    if pod_namespace.as_deref().is_some_and(|n| n != q.namespace) {
        return Err(format!(
            "{address} names Pod {}/{pod_name}, outside namespace {} {hint}",
            pod_namespace.as_deref().unwrap_or_default(),
            q.namespace
        ));
    }
    let Some(pod) = q.pod else {
        return Err(format!(
            "{address} names Pod {pod_name}, which does not exist in namespace {}",
            q.namespace
        ));
    };
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return Err(format!(
            "{address} is Pod {pod_name} on the host network: its address is the node's {hint}"
        ));
    }
    let status = pod.status.as_ref();
    let pod_ips = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .chain(status.and_then(|s| s.pod_ip.as_deref()));
    let owns = pod_ips
        .filter_map(|p| p.parse::<IpAddr>().ok())
        .any(|p| p == ip);
    if owns {
        Ok(())
    } else {
        Err(format!(
            "{address} is not an address of Pod {pod_name} (its status says otherwise) {hint}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(ip: &str, host_network: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "shop"},
            "spec": {"hostNetwork": host_network, "containers": []},
            "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
        }))
        .unwrap()
    }

    fn candidate(address: &str, pod: Option<(Option<&str>, &str)>) -> Candidate {
        Candidate {
            address: address.into(),
            pod: pod.map(|(ns, n)| (ns.map(str::to_owned), n.to_owned())),
        }
    }

    fn ask(c: &Candidate, pod: Option<&Pod>, allow: &[&str]) -> Result<(), String> {
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        decide(&Question {
            namespace: "shop",
            service: "web",
            port: 8080,
            path: "/health",
            candidate: c,
            pod,
            allow: &allow,
        })
    }

    #[test]
    fn a_pod_of_the_namespace_at_its_own_address_is_probed() {
        let p = pod("10.1.2.3", false);
        assert_eq!(
            ask(&candidate("10.1.2.3", Some((None, "web-1"))), Some(&p), &[]),
            Ok(())
        );
        assert_eq!(
            ask(
                &candidate("10.1.2.3", Some((Some("shop"), "web-1"))),
                Some(&p),
                &[]
            ),
            Ok(())
        );
    }

    #[test]
    fn hand_written_endpoints_are_refused() {
        let p = pod("10.1.2.3", false);
        // An address the pod does not have (another namespace's pod, the API server, a node).
        let err = ask(&candidate("10.9.9.9", Some((None, "web-1"))), Some(&p), &[]).unwrap_err();
        assert!(err.contains("not an address of Pod web-1"), "{err}");
        assert!(err.contains("--allow-probe-url"), "{err}");
        // No targetRef, a Pod of another namespace, a Pod that does not exist.
        let err = ask(&candidate("10.1.2.3", None), Some(&p), &[]).unwrap_err();
        assert!(err.contains("not the address of a Pod"), "{err}");
        let err = ask(
            &candidate("10.1.2.3", Some((Some("kube-system"), "web-1"))),
            Some(&p),
            &[],
        )
        .unwrap_err();
        assert!(err.contains("outside namespace shop"), "{err}");
        let err = ask(&candidate("10.1.2.3", Some((None, "web-1"))), None, &[]).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        // A name (FQDN slice) and a host-network pod.
        let err = ask(&candidate("kubernetes.default", None), None, &[]).unwrap_err();
        assert!(err.contains("not an IP address"), "{err}");
        let hn = pod("10.0.0.7", true);
        let err = ask(
            &candidate("10.0.0.7", Some((None, "web-1"))),
            Some(&hn),
            &[],
        )
        .unwrap_err();
        assert!(err.contains("host network"), "{err}");
    }

    #[test]
    fn the_allow_list_widens_it_but_never_to_link_local_or_metadata() {
        let external = candidate("192.0.2.10", None);
        assert!(ask(&external, None, &[]).is_err());
        assert_eq!(ask(&external, None, &["http://192.0.2.10:8080/"]), Ok(()));
        assert_eq!(ask(&external, None, &["http://web.shop.svc:8080"]), Ok(()));
        assert_eq!(ask(&external, None, &["*"]), Ok(()));
        // A prefix is a URL prefix, not a text prefix.
        assert!(ask(&external, None, &["http://192.0.2.1"]).is_err());
        assert!(ask(&external, None, &["http://web.shop.svc:8080/other"]).is_err());
        for refused in [
            "169.254.169.254",
            "fe80::1",
            "100.100.100.200",
            "fd00:ec2::254",
        ] {
            let err = ask(&candidate(refused, None), None, &["*"]).unwrap_err();
            assert!(err.contains("link-local or metadata"), "{refused}: {err}");
        }
        // Even at a pod's own address.
        let p = pod("169.254.1.1", false);
        assert!(
            ask(
                &candidate("169.254.1.1", Some((None, "web-1"))),
                Some(&p),
                &[]
            )
            .is_err()
        );
    }

    #[test]
    fn candidates_are_the_ready_addresses_with_their_pods() {
        let endpoints: Vec<Endpoint> = serde_json::from_value(json!([
            {"addresses": ["10.0.0.2"], "targetRef": {"kind": "Pod", "name": "b"}},
            {"addresses": ["10.0.0.1"], "targetRef": {"kind": "Pod", "name": "a", "namespace": "shop"}},
            {"addresses": ["10.0.0.3"], "conditions": {"ready": false}},
            {"addresses": ["10.0.0.4"], "targetRef": {"kind": "Node", "name": "n"}},
        ]))
        .unwrap();
        assert_eq!(
            candidates(&endpoints),
            vec![
                candidate("10.0.0.1", Some((Some("shop"), "a"))),
                candidate("10.0.0.2", Some((None, "b"))),
                candidate("10.0.0.4", None),
            ]
        );
        assert_eq!(address_url("fd00::1", 80, "/h"), "http://[fd00::1]:80/h");
    }
}
