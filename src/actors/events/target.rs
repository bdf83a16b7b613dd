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

/// IPv4 ranges a webhook may not reach (RFC 6890 special-purpose blocks
/// that are not globally reachable unicast, plus multicast and reserved).
const REFUSED_V4: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),       // "this network"
    (Ipv4Addr::new(10, 0, 0, 0), 8),      // private
    (Ipv4Addr::new(100, 64, 0, 0), 10),   // carrier-grade NAT
    (Ipv4Addr::new(127, 0, 0, 0), 8),     // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16),  // link-local (cloud metadata)
    (Ipv4Addr::new(172, 16, 0, 0), 12),   // private
    (Ipv4Addr::new(192, 0, 0, 0), 24),    // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24),    // documentation (TEST-NET-1)
    (Ipv4Addr::new(192, 168, 0, 0), 16),  // private
    (Ipv4Addr::new(198, 18, 0, 0), 15),   // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation (TEST-NET-2)
    (Ipv4Addr::new(203, 0, 113, 0), 24),  // documentation (TEST-NET-3)
    (Ipv4Addr::new(224, 0, 0, 0), 4),     // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),     // reserved, and 255.255.255.255 broadcast
];

/// IPv6 ranges a webhook may not reach. Both IPv4-embedding /96 prefixes
/// below `::/8` are refused whole, whatever address they embed.
const REFUSED_V6: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96), // IPv4-compatible, with :: and ::1
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96), // IPv4-mapped
    (Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, 0, 0), 96), // IPv4-translated
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48), // local-use NAT64
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64), // discard-only
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7), // unique local
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), // link-local
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10), // site-local (deprecated)
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8), // multicast
];

/// Addresses a webhook may not reach unless private targets are allowed:
/// the ranges above, and NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`)
/// addresses whose embedded IPv4 address is one of them. The creation check
/// and the delivery client's resolver both decide with this.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => is_private_v6(v6),
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let bits = u32::from(ip);
    REFUSED_V4.iter().any(|&(net, len)| {
        let mask = u32::MAX << (32 - u32::from(len));
        bits & mask == u32::from(net)
    })
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    let refused = REFUSED_V6.iter().any(|&(net, len)| {
        let mask = u128::MAX << (128 - u32::from(len));
        bits & mask == u128::from(net)
    });
    refused || embedded_v4(ip).is_some_and(is_private_v4)
}

/// The IPv4 address a NAT64 (`64:ff9b::/96`, the last 32 bits) or 6to4
/// (`2002::/16`, bits 16..48) address leads to.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let pair = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(pair(hi, lo)),
        [0x2002, hi, lo, ..] => Some(pair(hi, lo)),
        _ => None,
    }
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
                "is a loopback, private, link-local or reserved address (webhooks.allow_private_targets is off)"
                    .into(),
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
        return Err("resolves to a loopback, private, link-local or reserved address".into());
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

    /// (range, an address inside, its public neighbour outside if any).
    const RANGES: &[(&str, &str, Option<&str>)] = &[
        ("0.0.0.0/8", "0.1.2.3", Some("1.0.0.1")),
        ("0.0.0.0/8", "0.0.0.0", None),
        ("10.0.0.0/8", "10.255.0.1", Some("11.0.0.1")),
        ("100.64.0.0/10", "100.64.0.1", Some("100.63.255.255")),
        ("100.64.0.0/10", "100.127.255.254", Some("100.128.0.1")),
        ("127.0.0.0/8", "127.0.0.2", Some("128.0.0.1")),
        ("169.254.0.0/16", "169.254.169.254", Some("169.255.0.1")),
        ("172.16.0.0/12", "172.31.255.1", Some("172.32.0.1")),
        ("172.16.0.0/12", "172.16.0.1", Some("172.15.255.255")),
        ("192.0.0.0/24", "192.0.0.8", Some("192.0.1.1")),
        ("192.0.2.0/24", "192.0.2.10", Some("192.0.3.1")),
        ("192.168.0.0/16", "192.168.1.1", Some("192.169.0.1")),
        ("198.18.0.0/15", "198.19.255.1", Some("198.20.0.1")),
        ("198.18.0.0/15", "198.18.0.1", Some("198.17.255.255")),
        ("198.51.100.0/24", "198.51.100.7", Some("198.51.101.1")),
        ("203.0.113.0/24", "203.0.113.9", Some("203.0.114.1")),
        ("224.0.0.0/4", "224.0.0.251", Some("223.255.255.254")),
        ("224.0.0.0/4", "239.255.255.250", None),
        ("240.0.0.0/4", "240.0.0.1", None),
        ("255.255.255.255/32", "255.255.255.255", None),
        ("::/128", "::", None),
        ("::1/128", "::1", None),
        ("::/96 IPv4-compatible", "::127.0.0.1", None),
        ("::/96 IPv4-compatible, public IPv4", "::8.8.8.8", None),
        ("::ffff:0:0/96 IPv4-mapped", "::ffff:169.254.169.254", None),
        ("::ffff:0:0/96 IPv4-mapped, public IPv4", "::ffff:8.8.8.8", None),
        ("::ffff:0:0:0/96 IPv4-translated", "::ffff:0:10.0.0.1", None),
        (
            "64:ff9b::/96 NAT64 of 127/8",
            "64:ff9b::127.0.0.1",
            Some("64:ff9b::8.8.8.8"),
        ),
        (
            "64:ff9b::/96 NAT64 of 10/8",
            "64:ff9b::a00:1",
            Some("64:ff9b::b00:1"),
        ),
        ("64:ff9b::/96 NAT64 of 169.254/16", "64:ff9b::a9fe:a9fe", None),
        (
            "64:ff9b:1::/48 local-use NAT64",
            "64:ff9b:1::808:808",
            Some("64:ff9b:2::1"),
        ),
        (
            "2002::/16 6to4 of 192.168/16",
            "2002:c0a8:101::1",
            Some("2002:808:808::1"),
        ),
        ("2002::/16 6to4 of 127/8", "2002:7f00:1::", None),
        (
            "2002::/16 6to4 of 100.64/10",
            "2002:6440:1:ffff::1",
            Some("2002:6480:1::1"),
        ),
        ("100::/64", "100::1", Some("100:0:0:1::1")),
        ("2001:db8::/32", "2001:db8::1", Some("2001:db9::1")),
        ("fc00::/7", "fc00::1", Some("fbff:ffff::1")),
        ("fc00::/7", "fdff:ffff::1", None),
        ("fe80::/10", "fe80::1", Some("fe7f::1")),
        ("fe80::/10", "febf::1", None),
        ("fec0::/10", "fec0::1", None),
        ("ff00::/8", "ff02::1", Some("fe00::1")),
        ("ff00::/8", "ff0e::1", None),
    ];

    #[test]
    fn every_refused_range_is_refused_and_its_public_neighbour_is_not() {
        for &(range, inside, outside) in RANGES {
            let ip: IpAddr = inside.parse().expect("ip");
            assert!(is_private(ip), "{inside} is in {range}");
            if let Some(outside) = outside {
                let ip: IpAddr = outside.parse().expect("ip");
                assert!(!is_private(ip), "{outside} is outside {range}");
            }
        }
        for public in [
            "8.8.8.8",
            "93.184.216.34",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
        ] {
            assert!(!is_private(public.parse().expect("ip")), "{public}");
        }
    }

    #[test]
    fn url_literals_in_refused_ranges_are_refused() {
        for &(range, inside, outside) in RANGES {
            let literal = |ip: &str| {
                if ip.contains(':') {
                    format!("http://[{ip}]:8080/hook")
                } else {
                    format!("http://{ip}:8080/hook")
                }
            };
            assert!(parse_url(&literal(inside), false).is_err(), "{inside} ({range})");
            assert!(parse_url(&literal(inside), true).is_ok(), "{inside} ({range})");
            if let Some(outside) = outside {
                assert!(parse_url(&literal(outside), false).is_ok(), "{outside} ({range})");
            }
        }
        // Other spellings of 127.0.0.1 are the same address.
        for url in ["http://2130706433/", "http://0x7f.1/", "http://127.1/"] {
            assert!(parse_url(url, false).is_err(), "{url}");
        }
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_with_only_refused_addresses() {
        let name: Name = "localhost".parse().expect("name");
        assert!(PublicOnly.resolve(name).await.is_err());
        assert!(resolves_publicly("localhost", 80).await.is_err());
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
