//! Which addresses a webhook delivery may reach: the public internet only, unless an
//! operator exempts networks (`WEBHOOK_ALLOWED_NETWORKS`). Checked on every address a
//! name resolves to, on literal IPs, and again on every redirect target, so a
//! callback cannot reach the host's loopback, the private network or a cloud
//! metadata service.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A network in CIDR notation (`10.0.0.0/8`, `::1/128`; a bare address is a /32 or
/// /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `prefix` bits of `a` and `b` agree.
fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let (whole, rest) = (usize::from(prefix / 8), prefix % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xFFu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("`{s}` is not an address or a network (CIDR, e.g. 10.0.0.0/8)");
        let (address, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| invalid())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(invalid)?,
        };
        Ok(Cidr { network, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Why a delivery may not reach `ip` (`"loopback"`, `"private"`, …), or `None` when
/// it may: a public address, or one inside an `allowed` network.
pub fn refusal(ip: IpAddr, allowed: &[Cidr]) -> Option<&'static str> {
    if allowed.iter().any(|net| net.contains(ip)) {
        return None;
    }
    match ip {
        IpAddr::V4(v4) => v4_refusal(v4),
        IpAddr::V6(v6) => {
            // IPv4 in IPv6 clothing (mapped, compatible, NAT64, 6to4) is judged as
            // the IPv4 address it carries, exemptions included.
            if let Some(v4) = embedded_v4(v6) {
                if allowed.iter().any(|net| net.contains(IpAddr::V4(v4))) {
                    return None;
                }
                return v4_refusal(v4).or_else(|| v6_refusal(v6));
            }
            v6_refusal(v6)
        }
    }
}

fn v4_refusal(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    let in_net = |net: [u8; 4], prefix: u8| prefix_eq(&net, &o, prefix);
    if in_net([0, 0, 0, 0], 8) {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if in_net([100, 64, 0, 0], 10) {
        Some("shared (CGNAT)")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if in_net([240, 0, 0, 0], 4) {
        Some("reserved")
    } else if in_net([192, 0, 0, 0], 24) {
        Some("protocol-assignment")
    } else if ip.is_documentation() {
        Some("documentation")
    } else if in_net([198, 18, 0, 0], 15) {
        Some("benchmarking")
    } else {
        None
    }
}

fn v6_refusal(ip: Ipv6Addr) -> Option<&'static str> {
    let o = ip.octets();
    let in_net = |net: Ipv6Addr, prefix: u8| prefix_eq(&net.octets(), &o, prefix);
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if in_net(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10) {
        Some("link-local")
    } else if in_net(Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10) {
        Some("site-local")
    } else if in_net(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7) {
        Some("private (ULA)")
    } else if in_net(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32) {
        Some("documentation")
    } else if in_net(Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23) {
        // IETF protocol assignments: Teredo (whose client address is hidden),
        // benchmarking (2001:2::/48), ORCHID.
        Some("protocol-assignment")
    } else if in_net(Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64) {
        Some("discard-only")
    } else if in_net(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96) {
        Some("reserved")
    } else {
        None
    }
}

/// The IPv4 address an IPv6 one carries: mapped (`::ffff:a.b.c.d`), compatible
/// (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) or 6to4 (`2002:aabb:ccdd::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    let last = || Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    let seg = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        Some(v4)
    } else if (seg[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback())
        || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
    {
        Some(last())
    } else if seg[0] == 0x2002 {
        Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(ip: &str, allowed: &[&str]) -> bool {
        let allowed: Vec<Cidr> = allowed.iter().map(|c| c.parse().expect("cidr")).collect();
        refusal(ip.parse().expect("ip"), &allowed).is_some()
    }

    #[test]
    fn special_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.0.170",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.1",
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "2001:2::1",
            "100::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:a00:1::",
        ] {
            assert!(refused(ip, &[]), "{ip} must be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "169.255.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
        ] {
            assert!(!refused(ip, &[]), "{ip} must pass");
        }
    }

    #[test]
    fn allowed_networks_exempt_exactly_their_addresses() {
        assert!(!refused("127.0.0.1", &["127.0.0.1/32"]));
        assert!(refused("127.0.0.2", &["127.0.0.1/32"]));
        assert!(!refused("::ffff:127.0.0.1", &["127.0.0.1/32"]));
        assert!(!refused("10.1.2.3", &["10.0.0.0/8"]));
        assert!(refused("11.0.0.0", &["10.0.0.0/8"]) == refused("11.0.0.0", &[]));
        assert!(!refused("172.20.1.1", &["172.16.0.0/12"]));
        assert!(refused("172.32.1.1", &["172.16.0.0/12"]) == refused("172.32.1.1", &[]));
        assert!(!refused("fd00::5", &["fd00::/8"]));
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().map(|c| c.to_string()),
            Ok("10.0.0.0/8".to_owned())
        );
        assert_eq!(
            "::1".parse::<Cidr>().map(|c| c.to_string()),
            Ok("::1/128".to_owned())
        );
        for bad in ["10.0.0.0/33", "::/129", "example.org", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
