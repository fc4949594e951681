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
use std::net::Ipv4Addr;

/// What the checks need to know about the host.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// The datapath interface, if it exists.
    pub interface: Option<InterfaceFacts>,
    /// Every IPv4 address on any interface of this network namespace.
    pub local_addrs: Vec<Ipv4Addr>,
    /// `net.ipv4.ip_forward`.
    pub ip_forward: bool,
}

#[derive(Debug, Clone)]
pub struct InterfaceFacts {
    pub name: String,
    pub up: bool,
    pub mac: MacAddr,
    pub ipv4: Vec<(Ipv4Addr, u8)>,
}

/// What the node runs with once the checks pass.
#[derive(Debug, Clone)]
pub struct Approved {
    pub mac: MacAddr,
    /// The interface address used as the sender of our ARP requests.
    pub own_ip: Ipv4Addr,
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
    VipIsLocal { farm: String, vip: Ipv4Addr },
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
        ip: Ipv4Addr,
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
            }),
            Err(_) => None,
        };
        let local_addrs = datapath::local_ipv4_addresses().map_err(std::io::Error::other)?;
        let forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?;
        Ok(HostFacts {
            interface: info,
            local_addrs,
            ip_forward: forward.trim() != "0",
        })
    }
}

/// Whether `ip` lies in `net`/`prefix`.
pub(crate) fn in_subnet(ip: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    u32::from(ip) & mask == u32::from(net) & mask
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
        for b in &farm.backends {
            if !iface.ipv4.iter().any(|(net, p)| in_subnet(b.ip, *net, *p)) {
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
                .any(|b| in_subnet(b.ip, *net, *p))
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
        crate::config::parse(
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
            "#,
        )
        .expect("valid config")
    }

    fn facts() -> HostFacts {
        HostFacts {
            interface: Some(InterfaceFacts {
                name: "eth0".into(),
                up: true,
                mac: MacAddr([2, 0, 0, 0, 0, 1]),
                ipv4: vec![(Ipv4Addr::new(198, 18, 0, 11), 24)],
            }),
            local_addrs: vec![Ipv4Addr::new(198, 18, 0, 11), Ipv4Addr::LOCALHOST],
            ip_forward: false,
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
                |f| f.local_addrs.push(Ipv4Addr::new(198, 18, 0, 100)),
                PreflightError::VipIsLocal {
                    farm: "web".into(),
                    vip: Ipv4Addr::new(198, 18, 0, 100),
                },
            ),
            (
                |f| f.interface.as_mut().unwrap().ipv4 = vec![(Ipv4Addr::new(198, 19, 0, 11), 24)],
                PreflightError::BackendOffSubnet {
                    farm: "web".into(),
                    backend: "b1".into(),
                    ip: Ipv4Addr::new(198, 18, 0, 21),
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
    fn subnet_matching_respects_the_prefix() {
        let net = Ipv4Addr::new(198, 18, 0, 11);
        assert!(in_subnet(Ipv4Addr::new(198, 18, 0, 200), net, 24));
        assert!(!in_subnet(Ipv4Addr::new(198, 18, 1, 200), net, 24));
        assert!(in_subnet(Ipv4Addr::new(198, 19, 1, 200), net, 15));
        assert!(in_subnet(Ipv4Addr::new(1, 2, 3, 4), net, 0));
    }
}
