//! What the datapath needs to know about network interfaces: index, MAC, state, MTU and
//! IPv4 addresses of the one it serves, and every local IPv4 address of the namespace
//! (the node's preflight check refuses a VIP that is a local address).
//!
//! Everything is read in the calling thread's network namespace (`getifaddrs` over
//! netlink, `SIOCGIFMTU`), never from `/sys`, which shows the namespace sysfs was mounted
//! in.

use std::net::Ipv4Addr;

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
