//! The bridge from control-plane state to datapath tables: farms from the config, health
//! verdicts and learned MACs go in, [`FarmSpec`]s come out. A pure function, so that every
//! node that holds the same state builds the same table (DESIGN invariant 3).
//!
//! Priority tiers are resolved here: backends of the lowest priority that has a live backend
//! get their weight; the others are listed with weight 0, so they take no new flows but
//! flows already pinned to them keep going until the tier above them is back.

use crate::config::{BackendState, FarmConfig, Protocol};
use crate::health::HealthView;
use datapath::packet::MacAddr;
use datapath::table::{BackendSpec, FarmSpec};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Builds the datapath view of every farm.
pub fn farm_specs(
    farms: &[FarmConfig],
    health: &HealthView,
    learned: &HashMap<Ipv4Addr, MacAddr>,
) -> Vec<FarmSpec> {
    farms
        .iter()
        .map(|farm| {
            let rows: Vec<(BackendSpec, u32)> = farm
                .backends
                .iter()
                .map(|b| {
                    let spec = BackendSpec {
                        name: b.name.clone(),
                        ip: b.ip,
                        mac: b.mac.or_else(|| learned.get(&b.ip).copied()),
                        weight: b.weight,
                        state: match b.state {
                            BackendState::Up => datapath::table::BackendState::Up,
                            BackendState::Drain => datapath::table::BackendState::Drain,
                            BackendState::Off => datapath::table::BackendState::Off,
                        },
                        healthy: farm.check.is_none() || health.is_up(&farm.name, &b.name),
                    };
                    (spec, b.priority)
                })
                .collect();
            let serving_tier = rows
                .iter()
                .filter(|(s, _)| is_live(s))
                .map(|(_, priority)| *priority)
                .min();
            let backends = rows
                .into_iter()
                .map(|(mut spec, priority)| {
                    if Some(priority) != serving_tier {
                        spec.weight = 0;
                    }
                    spec
                })
                .collect();
            FarmSpec {
                name: farm.name.clone(),
                vip: farm.vip,
                protocol: match farm.protocol {
                    Protocol::Tcp => datapath::table::Protocol::Tcp,
                    Protocol::Udp => datapath::table::Protocol::Udp,
                },
                ports: farm.ports.clone(),
                backends,
            }
        })
        .collect()
}

/// Can take new flows: up, healthy, reachable at L2 and weighted.
fn is_live(b: &BackendSpec) -> bool {
    matches!(b.state, datapath::table::BackendState::Up)
        && b.healthy
        && b.mac.is_some()
        && b.weight > 0
}

/// The backend addresses whose MAC must be learned by ARP (not pinned).
pub fn arp_targets(farms: &[FarmConfig]) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = farms
        .iter()
        .flat_map(|f| f.backends.iter())
        .filter(|b| b.mac.is_none())
        .map(|b| b.ip)
        .collect();
    ips.sort();
    ips.dedup();
    ips
}
