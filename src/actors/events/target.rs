//! Where webhooks may go: `http(s)` URLs, and (unless
//! `webhooks.allow_private_targets`) never to loopback, private, link-local
//! or other non-public addresses, checked on the URL at creation and after
//! DNS resolution at every attempt (a name may change what it points to).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use reqwest::{
    dns::{Addrs, Name, Resolve, Resolving},
    Url,
};

/// Addresses a webhook may not reach unless private targets are allowed.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_private_v4(v4),
            None => is_private_v6(v6),
        },
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        // Carrier-grade NAT, 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // Unique local fc00::/7 and link-local fe80::/10.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
}

/// Parses a webhook URL: absolute `http` or `https` with a host. Returns
/// the reason it is refused otherwise.
pub fn parse_url(raw: &str, allow_private: bool) -> Result<Url, String> {
    let url = Url::parse(raw.trim()).map_err(|_| "must be an absolute http(s) URL".to_owned())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".into());
    }
    let Some(host) = url.host() else {
        return Err("must name a host".into());
    };
    if !allow_private {
        let private = match host {
            url::Host::Ipv4(ip) => is_private(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => is_private(IpAddr::V6(ip)),
            url::Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                name == "localhost" || name.ends_with(".localhost")
            }
        };
        if private {
            return Err(
                "is a loopback, private or link-local address (webhooks.allow_private_targets is off)".into(),
            );
        }
    }
    Ok(url)
}

/// Resolves `host` and refuses it when every address it has is private.
pub async fn resolves_publicly(host: &str, port: u16) -> Result<(), String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map(Iterator::collect)
        .unwrap_or_default();
    if !addrs.is_empty() && addrs.iter().all(|a| is_private(a.ip())) {
        return Err("resolves to a loopback, private or link-local address".into());
    }
    Ok(())
}

/// The delivery client's resolver: the system's, without private addresses
/// (a name with only private ones fails to resolve, and the attempt fails).
#[derive(Debug, Clone, Copy)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| !is_private(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{} resolves to no public address (webhooks.allow_private_targets is off)",
                    name.as_str()
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The resolver the delivery client uses under `allow_private`.
pub fn resolver(allow_private: bool) -> Option<Arc<PublicOnly>> {
    (!allow_private).then_some(Arc::new(PublicOnly))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::",
        ] {
            assert!(is_private(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked() {
        assert!(parse_url("https://example.com/hook", false).is_ok());
        assert!(parse_url("http://93.184.216.34:8080/x", false).is_ok());
        assert!(parse_url("ftp://example.com/", false).is_err());
        assert!(parse_url("example.com/hook", false).is_err());
        assert!(parse_url("http://user:pw@example.com/", false).is_err());
        for private in [
            "http://127.0.0.1:9/",
            "http://[::1]/",
            "http://localhost/",
            "http://10.0.0.8/x",
        ] {
            assert!(parse_url(private, false).is_err(), "{private}");
            assert!(parse_url(private, true).is_ok(), "{private}");
        }
    }
}
