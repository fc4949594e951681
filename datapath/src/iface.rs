//! What the datapath needs to know about network interfaces: index, MAC, state, MTU and
//! IPv4 addresses of the one it serves, and every local IPv4 address of the namespace
//! (the node's preflight check refuses a VIP that is a local address).
//!
//! Everything is read in the calling thread's network namespace (`getifaddrs` over
//! netlink, `SIOCGIFMTU`), never from `/sys`, which shows the namespace sysfs was mounted
//! in.

use std::net::{Ipv4Addr, Ipv6Addr};

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;

use crate::error::IoError;
use crate::packet::MacAddr;
use crate::sys;

/// An IPv4 address with its prefix length.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

/// An IPv6 address with its prefix length.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ipv6Net {
    pub addr: Ipv6Addr,
    pub prefix_len: u8,
}

/// One interface, as seen when it was looked up.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct InterfaceInfo {
    pub name: String,
    pub index: u32,
    pub mac: MacAddr,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Up with carrier (`IFF_RUNNING`).
    pub running: bool,
    pub mtu: u32,
    pub ipv4: Vec<Ipv4Net>,
    /// Link-local included.
    pub ipv6: Vec<Ipv6Net>,
}

fn lookup_error(name: &str, source: nix::Error) -> IoError {
    IoError::InterfaceQuery {
        name: name.to_owned(),
        source: std::io::Error::from(source),
    }
}

impl InterfaceInfo {
    /// Looks `name` up in the calling thread's network namespace.
    pub fn lookup(name: &str) -> Result<InterfaceInfo, IoError> {
        let not_found = || IoError::InterfaceNotFound {
            name: name.to_owned(),
        };
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['\0', '/']) {
            return Err(not_found());
        }
        let index = match nix::net::if_::if_nametoindex(name) {
            Ok(i) => i,
            Err(nix::Error::ENODEV) => return Err(not_found()),
            Err(e) => return Err(lookup_error(name, e)),
        };
        let mut info = InterfaceInfo {
            name: name.to_owned(),
            index,
            mac: MacAddr::ZERO,
            up: false,
            running: false,
            mtu: 0,
            ipv4: Vec::new(),
            ipv6: Vec::new(),
        };
        let mut seen = false;
        for ifa in getifaddrs().map_err(|e| lookup_error(name, e))? {
            if ifa.interface_name != name {
                continue;
            }
            seen = true;
            info.up |= ifa.flags.contains(InterfaceFlags::IFF_UP);
            info.running |= ifa.flags.contains(InterfaceFlags::IFF_RUNNING);
            let Some(addr) = ifa.address else { continue };
            if let Some(link) = addr.as_link_addr() {
                if let Some(mac) = link.addr() {
                    info.mac = MacAddr(mac);
                }
            } else if let Some(sin) = addr.as_sockaddr_in() {
                let prefix_len = ifa
                    .netmask
                    .and_then(|m| {
                        m.as_sockaddr_in()
                            .map(|m| m.ip().to_bits().count_ones() as u8)
                    })
                    .unwrap_or(32);
                info.ipv4.push(Ipv4Net {
                    addr: sin.ip(),
                    prefix_len,
                });
            } else if let Some(sin6) = addr.as_sockaddr_in6() {
                let prefix_len = ifa
                    .netmask
                    .and_then(|m| {
                        m.as_sockaddr_in6()
                            .map(|m| m.ip().to_bits().count_ones() as u8)
                    })
                    .unwrap_or(128);
                info.ipv6.push(Ipv6Net {
                    addr: sin6.ip(),
                    prefix_len,
                });
            }
        }
        if !seen {
            return Err(not_found());
        }
        info.mtu = sys::interface_mtu(name).map_err(|source| IoError::InterfaceQuery {
            name: name.to_owned(),
            source,
        })?;
        Ok(info)
    }

    /// The first IPv4 address of the interface, the natural sender address for ARP.
    pub fn primary_ipv4(&self) -> Option<Ipv4Addr> {
        self.ipv4.first().map(|n| n.addr)
    }

    /// The source of our Neighbor Solicitations: a global address of the interface if it
    /// has one (backends answer it on their own prefix), else its link-local address
    /// (RFC 4861 allows either; every IPv6 interface has the latter).
    pub fn primary_ipv6(&self) -> Option<Ipv6Addr> {
        let link_local = |a: &Ipv6Addr| a.is_unicast_link_local();
        self.ipv6
            .iter()
            .map(|n| n.addr)
            .find(|a| !link_local(a) && !a.is_loopback())
            .or_else(|| self.ipv6.iter().map(|n| n.addr).find(link_local))
    }
}

/// Every IPv4 address on every interface of the calling thread's network namespace.
pub fn local_ipv4_addresses() -> Result<Vec<Ipv4Addr>, IoError> {
    let addrs = getifaddrs().map_err(|e| lookup_error("*", e))?;
    let mut out: Vec<Ipv4Addr> = addrs
        .filter_map(|ifa| ifa.address?.as_sockaddr_in().map(|s| s.ip()))
        .collect();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Every IPv6 address on every interface of the calling thread's network namespace.
pub fn local_ipv6_addresses() -> Result<Vec<Ipv6Addr>, IoError> {
    let addrs = getifaddrs().map_err(|e| lookup_error("*", e))?;
    let mut out: Vec<Ipv6Addr> = addrs
        .filter_map(|ifa| ifa.address?.as_sockaddr_in6().map(|s| s.ip()))
        .collect();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_with_its_address() {
        let lo = InterfaceInfo::lookup("lo").expect("every namespace has lo");
        assert!(lo.index > 0);
        assert!(lo.mtu > 0);
        assert_eq!(lo.mac, MacAddr::ZERO);
        if lo.up {
            assert!(
                lo.ipv4
                    .iter()
                    .any(|n| n.addr == Ipv4Addr::LOCALHOST && n.prefix_len == 8)
            );
            assert!(
                local_ipv4_addresses()
                    .unwrap()
                    .contains(&Ipv4Addr::LOCALHOST)
            );
        }
    }

    #[test]
    fn unknown_and_malformed_names_are_not_found() {
        for name in ["dsrlb-no-such0", "", "a/b", "0123456789abcdefghij"] {
            assert!(
                matches!(
                    InterfaceInfo::lookup(name),
                    Err(IoError::InterfaceNotFound { .. })
                ),
                "{name:?}"
            );
        }
    }
}
