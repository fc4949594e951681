//! The checks of a farm that need more than the farm itself: the cluster's other farms and
//! the node's own network. The config validator has already judged the farm alone (names,
//! addresses, ports, weights, states); this adds what a file cannot know — VIPs that equal a
//! node's or a backend's address, backends off the data interface's subnet, ports that
//! another farm already holds on the same VIP and protocol. Pure functions of their inputs.

use crate::config::{ConfigError, Keys};
use crate::preflight::on_link;
use cluster::Farm;
use std::net::IpAddr;

/// What a node knows about the network a farm must fit.
#[derive(Debug, Clone, Default)]
pub struct NetFacts {
    /// Addresses of cluster nodes: this node's interface addresses and every member's peer
    /// host.
    pub node_addrs: Vec<IpAddr>,
    /// The data interface's networks of both families (address, prefix length); empty =
    /// unknown, and the subnet check is skipped. An IPv6 link-local backend is on-link
    /// whatever they are.
    pub subnets: Vec<(IpAddr, u8)>,
}

/// Checks `farm` (already valid on its own) against the node's network and `others`, the
/// cluster's farms without the one `farm` replaces.
pub fn farm_in_context(
    keys: Keys,
    farm: &Farm,
    others: &[&Farm],
    net: &NetFacts,
) -> Result<(), ConfigError> {
    let fk = |field: &str| keys.farm(&farm.name, field);
    if net.node_addrs.contains(&farm.vip) {
        return Err(ConfigError::invalid(
            fk("vip"),
            format!("{} is the address of a cluster node", farm.vip),
        ));
    }
    if let Some(o) = others
        .iter()
        .find(|o| o.backends.iter().any(|b| b.ip == farm.vip))
    {
        return Err(ConfigError::invalid(
            fk("vip"),
            format!("{} is a backend address of farm {:?}", farm.vip, o.name),
        ));
    }
    for (i, b) in farm.backends.iter().enumerate() {
        let bk = |field: &str| keys.backend(&farm.name, i, &b.name, field);
        if net.node_addrs.contains(&b.ip) {
            return Err(ConfigError::invalid(
                bk("ip"),
                format!("{} is the address of a cluster node", b.ip),
            ));
        }
        if let Some(o) = others.iter().find(|o| o.vip == b.ip) {
            return Err(ConfigError::invalid(
                bk("ip"),
                format!("{} is the VIP of farm {:?}", b.ip, o.name),
            ));
        }
        if !net.subnets.is_empty() && !on_link(b.ip, net.subnets.iter().copied()) {
            let nets: Vec<String> = net
                .subnets
                .iter()
                .map(|(n, p)| format!("{n}/{p}"))
                .collect();
            return Err(ConfigError::invalid(
                bk("ip"),
                format!(
                    "{} is outside the data interface's subnet ({}); DSR needs backends on the same L2 segment",
                    b.ip,
                    nets.join(", ")
                ),
            ));
        }
    }
    if let Some(o) = others.iter().find(|o| o.overlaps(farm)) {
        return Err(ConfigError::invalid(
            fk("port"),
            format!(
                "ports {}-{} overlap farm {:?} on the same VIP and protocol",
                farm.port_first, farm.port_last, o.name
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RawFarms, validate_farms};
    use std::net::Ipv4Addr;

    fn farms(text: &str) -> Vec<Farm> {
        let raw: RawFarms = toml::from_str(text).unwrap();
        validate_farms(&raw.farm).unwrap()
    }

    fn key(f: &Farm, others: &[&Farm]) -> String {
        match farm_in_context(Keys::Api, f, others, &net()) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{other:?}"),
        }
    }

    const TWO: &str = r#"
        [[farm]]
        name = "web"
        vip = "198.18.0.100"
        port = 80
        protocol = "tcp"
        [[farm.backend]]
        name = "b1"
        ip = "198.18.0.21"
        [[farm]]
        name = "dns"
        vip = "198.18.0.101"
        port = 53
        protocol = "udp"
        [[farm.backend]]
        name = "b1"
        ip = "198.18.0.22"
    "#;

    fn net() -> NetFacts {
        NetFacts {
            node_addrs: vec![Ipv4Addr::new(198, 18, 0, 2).into()],
            subnets: vec![(Ipv4Addr::new(198, 18, 0, 2).into(), 24)],
        }
    }

    #[test]
    fn each_conflict_names_its_key() {
        let all = farms(TWO);
        let (web, dns) = (&all[0], &all[1]);
        assert!(farm_in_context(Keys::Api, web, &[dns], &net()).is_ok());
        let mut f = web.clone();
        f.vip = Ipv4Addr::new(198, 18, 0, 2).into();
        assert_eq!(key(&f, &[]), "farm.vip");
        f.vip = Ipv4Addr::new(198, 18, 0, 22).into();
        assert_eq!(key(&f, &[dns]), "farm.vip");
        let mut f = web.clone();
        f.backends[0].ip = Ipv4Addr::new(198, 19, 0, 21).into();
        assert_eq!(key(&f, &[]), "farm.backend[0].ip");
        f.backends[0].ip = Ipv4Addr::new(198, 18, 0, 101).into();
        assert_eq!(key(&f, &[dns]), "farm.backend[0].ip");
        let mut f = dns.clone();
        f.vip = web.vip;
        f.protocol = web.protocol;
        (f.port_first, f.port_last) = (70, 90);
        assert_eq!(key(&f, &[web]), "farm.ports");
    }
}
