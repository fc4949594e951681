//! Start-up checks that refuse to run a node whose host would break DSR: the datapath
//! interface missing or down, a VIP held by the node's own kernel (it would answer ARP and
//! reset TCP connections), IP forwarding on (the kernel would route VIP traffic a second
//! time), a backend off the interface's subnet (DSR rewrites only MACs, so backends must
//! share the L2 segment).
//!
//! Facts are gathered from the host first ([`HostFacts::gather`]) and judged by a pure
//! function ([`check`]), so every refusal is unit-tested without a network namespace.

use crate::config::Config;
use datapath::MacAddr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What the checks need to know about the host.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// The datapath interface, if it exists.
    pub interface: Option<InterfaceFacts>,
    /// Every IPv4 and IPv6 address on any interface of this network namespace.
    pub local_addrs: Vec<IpAddr>,
    /// `net.ipv4.ip_forward`.
    pub ip_forward: bool,
    /// `net.ipv6.conf.all.forwarding` (false where IPv6 is off).
    pub ipv6_forward: bool,
}

#[derive(Debug, Clone)]
pub struct InterfaceFacts {
    pub name: String,
    pub up: bool,
    pub mac: MacAddr,
    pub ipv4: Vec<(Ipv4Addr, u8)>,
    /// Link-local included.
    pub ipv6: Vec<(Ipv6Addr, u8)>,
}

/// What the node runs with once the checks pass.
#[derive(Debug, Clone)]
pub struct Approved {
    pub mac: MacAddr,
    /// The interface address used as the sender of our ARP requests.
    pub own_ip: Ipv4Addr,
}

impl InterfaceFacts {
    /// Every network of the interface, both families.
    pub(crate) fn nets(&self) -> impl Iterator<Item = (IpAddr, u8)> + '_ {
        let v4 = self.ipv4.iter().map(|(a, p)| (IpAddr::V4(*a), *p));
        v4.chain(self.ipv6.iter().map(|(a, p)| (IpAddr::V6(*a), *p)))
    }
}

/// Whether `ip` is on the link of an interface with networks `nets`: on one of them, or an
/// IPv6 link-local address (every such address is on-link, RFC 4291).
pub(crate) fn on_link(ip: IpAddr, mut nets: impl Iterator<Item = (IpAddr, u8)>) -> bool {
    matches!(ip, IpAddr::V6(v) if v.is_unicast_link_local())
        || nets.any(|(net, p)| in_subnet(ip, net, p))
}

/// Why the node refuses to start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PreflightError {
    #[error("datapath.interface {0:?} does not exist in this network namespace")]
    InterfaceMissing(String),
    #[error("datapath.interface {0:?} is down; bring it up (ip link set {0} up)")]
    InterfaceDown(String),
    #[error(
        "datapath.interface {0:?} has no IPv4 address; the node needs one on the backends' subnet to ARP for them"
    )]
    NoAddress(String),
    #[error(
        "VIP {vip} of farm {farm:?} is assigned to a local interface; with DSR the node's kernel must not own the VIP (remove it: ip addr del {vip}/32 dev <if>)"
    )]
    VipIsLocal { farm: String, vip: IpAddr },
    #[error(
        "net.ipv6.conf.all.forwarding is 1 and farm {0:?} has an IPv6 VIP: the kernel would route VIP traffic a second time; set it to 0 (sysctl -w net.ipv6.conf.all.forwarding=0)"
    )]
    Ipv6Forwarding(String),
    #[error(
        "datapath.interface {interface:?} has no IPv6 address (not even link-local) but farm {farm:?} has IPv6 backends: the node needs one to solicit their MACs (is IPv6 disabled on it?)"
    )]
    NoIpv6Address { interface: String, farm: String },
    #[error(
        "net.ipv4.ip_forward is 1: the kernel would route VIP traffic a second time; set it to 0 (sysctl -w net.ipv4.ip_forward=0)"
    )]
    IpForwarding,
    #[error(
        "backend {backend:?} of farm {farm:?} ({ip}) is not on a subnet of {interface:?}; DSR needs the backends on the same L2 segment"
    )]
    BackendOffSubnet {
        farm: String,
        backend: String,
        ip: IpAddr,
        interface: String,
    },
}

impl HostFacts {
    /// Reads the facts from this network namespace.
    pub fn gather(interface: &str) -> std::io::Result<HostFacts> {
        use datapath::InterfaceInfo;
        let info = match InterfaceInfo::lookup(interface) {
            Ok(info) => Some(InterfaceFacts {
                name: interface.to_string(),
                up: info.up,
                mac: info.mac,
                ipv4: info.ipv4.iter().map(|n| (n.addr, n.prefix_len)).collect(),
                ipv6: info.ipv6.iter().map(|n| (n.addr, n.prefix_len)).collect(),
            }),
            Err(_) => None,
        };
        let mut local_addrs: Vec<IpAddr> = datapath::local_ipv4_addresses()
            .map_err(std::io::Error::other)?
            .into_iter()
            .map(IpAddr::V4)
            .collect();
        local_addrs.extend(
            datapath::local_ipv6_addresses()
                .map_err(std::io::Error::other)?
                .into_iter()
                .map(IpAddr::V6),
        );
        let forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?;
        // Absent when the kernel has no IPv6: nothing can be routed then.
        let forward6 =
            std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding").unwrap_or_default();
        Ok(HostFacts {
            interface: info,
            local_addrs,
            ip_forward: forward.trim() != "0",
            ipv6_forward: forward6.trim() == "1",
        })
    }
}

/// Whether `ip` lies in `net`/`prefix` (never across families).
pub(crate) fn in_subnet(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            ip.to_bits() & mask == net.to_bits() & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            ip.to_bits() & mask == net.to_bits() & mask
        }
        _ => false,
    }
}

/// Judges the facts against the config.
pub fn check(config: &Config, facts: &HostFacts) -> Result<Approved, PreflightError> {
    let name = &config.datapath.interface;
    let iface = facts
        .interface
        .as_ref()
        .ok_or_else(|| PreflightError::InterfaceMissing(name.clone()))?;
    if !iface.up {
        return Err(PreflightError::InterfaceDown(name.clone()));
    }
    let (own_ip, _) = *iface
        .ipv4
        .first()
        .ok_or_else(|| PreflightError::NoAddress(name.clone()))?;
    if facts.ip_forward {
        return Err(PreflightError::IpForwarding);
    }
    for farm in &config.farms {
        if facts.local_addrs.contains(&farm.vip) {
            return Err(PreflightError::VipIsLocal {
                farm: farm.name.clone(),
                vip: farm.vip,
            });
        }
        if farm.vip.is_ipv6() {
            if facts.ipv6_forward {
                return Err(PreflightError::Ipv6Forwarding(farm.name.clone()));
            }
            if iface.ipv6.is_empty() && farm.backends.iter().any(|b| b.mac.is_none()) {
                return Err(PreflightError::NoIpv6Address {
                    interface: name.clone(),
                    farm: farm.name.clone(),
                });
            }
        }
        for b in &farm.backends {
            if !on_link(b.ip, iface.nets()) {
                return Err(PreflightError::BackendOffSubnet {
                    farm: farm.name.clone(),
                    backend: b.name.clone(),
                    ip: b.ip,
                    interface: name.clone(),
                });
            }
        }
    }
    // Prefer an interface address on a backend's subnet as the ARP sender, so replies come
    // back to us even when the interface has several addresses.
    let own_ip = iface
        .ipv4
        .iter()
        .find(|(net, p)| {
            config
                .farms
                .iter()
                .flat_map(|f| &f.backends)
                .any(|b| in_subnet(b.ip, IpAddr::V4(*net), *p))
        })
        .map(|(ip, _)| *ip)
        .unwrap_or(own_ip);
    Ok(Approved {
        mac: iface.mac,
        own_ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        config_with("")
    }

    /// The base config with `more` (farms) appended.
    fn config_with(more: &str) -> Config {
        crate::config::parse(&format!(
            r#"
            [node]
            id = 1
            [admin]
            token_file = "/etc/dsrlb/admin.token"
            [datapath]
            interface = "eth0"
            [[farm]]
            name = "web"
            vip = "198.18.0.100"
            port = 80
            protocol = "tcp"
            [[farm.backend]]
            name = "b1"
            ip = "198.18.0.21"
            {more}
            "#
        ))
        .expect("valid config")
    }

    const V6_FARM: &str = r#"
            [[farm]]
            name = "web6"
            vip = "2001:db8::100"
            port = 80
            protocol = "tcp"
            [[farm.backend]]
            name = "b1"
            ip = "2001:db8::21"
            [[farm.backend]]
            name = "b2"
            ip = "fe80::22"
    "#;

    fn facts() -> HostFacts {
        HostFacts {
            interface: Some(InterfaceFacts {
                name: "eth0".into(),
                up: true,
                mac: MacAddr([2, 0, 0, 0, 0, 1]),
                ipv4: vec![(Ipv4Addr::new(198, 18, 0, 11), 24)],
                ipv6: vec![
                    ("2001:db8::11".parse().unwrap(), 64),
                    ("fe80::11".parse().unwrap(), 64),
                ],
            }),
            local_addrs: vec![
                Ipv4Addr::new(198, 18, 0, 11).into(),
                Ipv4Addr::LOCALHOST.into(),
                "2001:db8::11".parse().unwrap(),
            ],
            ip_forward: false,
            ipv6_forward: false,
        }
    }

    #[test]
    fn a_sound_host_is_approved() {
        let ok = check(&config(), &facts()).expect("approved");
        assert_eq!(ok.own_ip, Ipv4Addr::new(198, 18, 0, 11));
        assert_eq!(ok.mac, MacAddr([2, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn each_broken_fact_is_refused_with_its_reason() {
        let cfg = config();
        type Breaker = fn(&mut HostFacts);
        let cases: Vec<(Breaker, PreflightError)> = vec![
            (
                |f| f.interface = None,
                PreflightError::InterfaceMissing("eth0".into()),
            ),
            (
                |f| f.interface.as_mut().unwrap().up = false,
                PreflightError::InterfaceDown("eth0".into()),
            ),
            (
                |f| f.interface.as_mut().unwrap().ipv4.clear(),
                PreflightError::NoAddress("eth0".into()),
            ),
            (|f| f.ip_forward = true, PreflightError::IpForwarding),
            (
                |f| f.local_addrs.push(Ipv4Addr::new(198, 18, 0, 100).into()),
                PreflightError::VipIsLocal {
                    farm: "web".into(),
                    vip: Ipv4Addr::new(198, 18, 0, 100).into(),
                },
            ),
            (
                |f| f.interface.as_mut().unwrap().ipv4 = vec![(Ipv4Addr::new(198, 19, 0, 11), 24)],
                PreflightError::BackendOffSubnet {
                    farm: "web".into(),
                    backend: "b1".into(),
                    ip: Ipv4Addr::new(198, 18, 0, 21).into(),
                    interface: "eth0".into(),
                },
            ),
        ];
        for (breakit, expected) in cases {
            let mut f = facts();
            breakit(&mut f);
            assert_eq!(check(&cfg, &f).unwrap_err(), expected);
        }
    }

    #[test]
    fn an_ipv6_farm_is_judged_on_the_interface_prefixes_and_ipv6_forwarding() {
        let cfg = config_with(V6_FARM);
        check(&cfg, &facts()).expect("a global backend on the prefix and a link-local one");
        type Breaker = fn(&mut HostFacts);
        let cases: Vec<(Breaker, PreflightError)> = vec![
            (
                |f| f.ipv6_forward = true,
                PreflightError::Ipv6Forwarding("web6".into()),
            ),
            (
                |f| f.interface.as_mut().unwrap().ipv6.clear(),
                PreflightError::NoIpv6Address {
                    interface: "eth0".into(),
                    farm: "web6".into(),
                },
            ),
            (
                |f| f.local_addrs.push("2001:db8::100".parse().unwrap()),
                PreflightError::VipIsLocal {
                    farm: "web6".into(),
                    vip: "2001:db8::100".parse().unwrap(),
                },
            ),
            (
                |f| {
                    f.interface.as_mut().unwrap().ipv6 = vec![("2001:db9::11".parse().unwrap(), 64)]
                },
                PreflightError::BackendOffSubnet {
                    farm: "web6".into(),
                    backend: "b1".into(),
                    ip: "2001:db8::21".parse().unwrap(),
                    interface: "eth0".into(),
                },
            ),
        ];
        for (breakit, expected) in cases {
            let mut f = facts();
            breakit(&mut f);
            assert_eq!(check(&cfg, &f).unwrap_err(), expected);
        }
        // IPv6 forwarding matters only to a node with an IPv6 VIP.
        let mut f = facts();
        f.ipv6_forward = true;
        check(&config(), &f).expect("IPv4-only farms");
    }

    #[test]
    fn subnet_matching_respects_the_prefix() {
        let net = IpAddr::from(Ipv4Addr::new(198, 18, 0, 11));
        let ip = |a, b, c, d| IpAddr::from(Ipv4Addr::new(a, b, c, d));
        assert!(in_subnet(ip(198, 18, 0, 200), net, 24));
        assert!(!in_subnet(ip(198, 18, 1, 200), net, 24));
        assert!(in_subnet(ip(198, 19, 1, 200), net, 15));
        assert!(in_subnet(ip(1, 2, 3, 4), net, 0));
        let net6: IpAddr = "2001:db8::11".parse().unwrap();
        assert!(in_subnet("2001:db8::ffff".parse().unwrap(), net6, 64));
        assert!(!in_subnet("2001:db8:0:1::1".parse().unwrap(), net6, 64));
        assert!(in_subnet("::1".parse().unwrap(), net6, 0));
        assert!(
            !in_subnet(ip(198, 18, 0, 11), net6, 0),
            "never across families"
        );
    }
}
