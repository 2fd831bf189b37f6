//! Where the operator's own HTTP requests may go: never through a redirect, never to a
//! link-local or cloud metadata address. A policy author chooses URLs (Prometheus, webhooks);
//! these rules keep the operator from reaching, for them, what only the node can reach.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

/// Host names of cloud instance-metadata services.
const METADATA_HOSTS: &[&str] = &[
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.com",
    "instance-data",
    "instance-data.ec2.internal",
];

/// Metadata addresses outside the link-local ranges: AWS IMDS over IPv6, Alibaba Cloud.
const METADATA_IPS: &[IpAddr] = &[
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
];

/// A destination the operator refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("{host} is a cloud metadata service; the operator sends no requests there")]
    MetadataHost { host: String },
    #[error("{host} is (or resolves to) {ip}, a link-local or metadata address; refused")]
    RefusedAddress { host: String, ip: IpAddr },
    #[error("{host} does not resolve to any address")]
    NoAddress { host: String },
}

/// Why `ip` is refused, if it is: link-local (169.254.0.0/16, fe80::/10, including the
/// IPv4-mapped forms) or a known metadata address.
pub fn refused_ip(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    link_local || METADATA_IPS.contains(&ip)
}

/// Checks the host of a URL before any request: metadata names and refused IP literals (a
/// literal never goes through the resolver).
pub fn check_url(url: &reqwest::Url) -> Result<(), EgressError> {
    let Some(host) = url.host_str() else {
        return Ok(());
    };
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    match literal.parse::<IpAddr>() {
        Ok(ip) if refused_ip(ip) => Err(EgressError::RefusedAddress {
            host: host.to_owned(),
            ip,
        }),
        Ok(_) => Ok(()),
        Err(_) if metadata_host(host) => Err(EgressError::MetadataHost {
            host: host.to_owned(),
        }),
        Err(_) => Ok(()),
    }
}

fn metadata_host(host: &str) -> bool {
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    METADATA_HOSTS.contains(&name.as_str())
}

/// The resolved addresses that may be used; an error when none may.
pub fn allowed_addrs(host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, EgressError> {
    let first = addrs.first().copied();
    let allowed: Vec<SocketAddr> = addrs.into_iter().filter(|a| !refused_ip(a.ip())).collect();
    match (allowed.is_empty(), first) {
        (false, _) => Ok(allowed),
        (true, Some(refused)) => Err(EgressError::RefusedAddress {
            host: host.to_owned(),
            ip: refused.ip(),
        }),
        (true, None) => Err(EgressError::NoAddress {
            host: host.to_owned(),
        }),
    }
}

/// The system resolver with refused addresses removed, so a name pointing at a metadata
/// service (or rebinding to one) is not reached either.
#[derive(Clone, Copy, Debug, Default)]
pub struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            if metadata_host(&host) {
                return Err(EgressError::MetadataHost { host }.into());
            }
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = allowed_addrs(&host, addrs)?;
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A reqwest builder with the operator's egress rules: no redirects (a 3xx is the answer),
/// the guarded resolver.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(GuardedResolver))
}

/// `url` with any `user:password@` removed, for status, Events and logs.
pub fn redact_userinfo(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// `text` (an error message) with the `user:password@` of every URL in it removed.
pub fn redact_userinfo_in_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c == ')' || c.is_whitespace())
            .unwrap_or(tail.len());
        let after_userinfo = tail[..authority_end].rfind('@').map_or(0, |at| at + 1);
        rest = &tail[after_userinfo..];
    }
    out.push_str(rest);
    out
}

/// The first [`EgressError`] in an error's chain (the resolver's refusal inside reqwest's).
pub fn find_in_chain<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a EgressError> {
    std::iter::successors(Some(error), |&e| e.source()).find_map(|e| e.downcast_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).unwrap()
    }

    #[test]
    fn refuses_link_local_and_metadata_addresses() {
        for refused in [
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.0.1:9090",
            "http://[fe80::1]:9090",
            "http://[febf::1]",
            "http://[::ffff:169.254.169.254]",
            "http://[fd00:ec2::254]",
            "http://100.100.100.200",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.google.internal./",
        ] {
            assert!(check_url(&url(refused)).is_err(), "{refused} allowed");
        }
        for allowed in [
            "http://127.0.0.1:9090",
            "http://10.0.0.5:9090",
            "http://[fec0::1]",
            "http://[fd00::254]",
            "http://prometheus.monitoring:9090",
            "https://169.255.0.1",
        ] {
            assert_eq!(check_url(&url(allowed)), Ok(()), "{allowed}");
        }
    }

    #[test]
    fn resolved_addresses_are_filtered() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            allowed_addrs("h", vec![a("169.254.169.254:80"), a("10.1.2.3:80")]).unwrap(),
            vec![a("10.1.2.3:80")]
        );
        let err = allowed_addrs("h", vec![a("169.254.169.254:80")]).unwrap_err();
        assert!(err.to_string().contains("169.254.169.254"), "{err}");
        assert!(matches!(
            allowed_addrs("h", vec![]),
            Err(EgressError::NoAddress { .. })
        ));
    }

    #[test]
    fn userinfo_is_redacted() {
        assert_eq!(
            redact_userinfo("http://frys:s3cret@prometheus:9090/prefix"),
            "http://prometheus:9090/prefix"
        );
        assert_eq!(
            redact_userinfo("http://prometheus:9090"),
            "http://prometheus:9090"
        );
        assert_eq!(redact_userinfo("not a url"), "not a url");
        assert_eq!(
            redact_userinfo_in_text(
                "error sending request for url (http://frys:s3cret@p:9090/api/v1/query): refused"
            ),
            "error sending request for url (http://p:9090/api/v1/query): refused"
        );
        assert_eq!(
            redact_userinfo_in_text("a https://p/x?u=a@b and http://u@q"),
            "a https://p/x?u=a@b and http://q"
        );
    }

    #[tokio::test]
    async fn the_resolver_refuses_metadata_names_and_allows_localhost() {
        use reqwest::dns::Resolve;
        let name = |s: &str| s.parse::<reqwest::dns::Name>().unwrap();
        let err = GuardedResolver
            .resolve(name("metadata.google.internal"))
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("metadata"), "{err}");
        let addrs: Vec<SocketAddr> = GuardedResolver
            .resolve(name("localhost"))
            .await
            .unwrap()
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
