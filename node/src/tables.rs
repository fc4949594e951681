//! The bridge from replicated state to datapath tables: farms and health verdicts from the
//! cluster state plus the MACs this node learned go in, [`FarmSpec`]s come out. A pure
//! function, so every node that holds the same state builds the same table
//! (docs/design.md#inv-same-backend) — followers included, which is what makes a
//! takeover compute nothing.
//!
//! Priority tiers are resolved here: backends of the lowest priority that has a live backend
//! get their weight; the others are listed with weight 0, so they take no new flows but
//! flows already pinned to them keep going until the tier above them is back.

use cluster::ClusterState;
use datapath::{
    BackendSpec, BackendState, FarmLimits, FarmSpec, FlowHash, MacAddr, PersistSpec, PinRegistry,
    Protocol, RateLimit,
};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Builds the datapath view of every farm; a persistent farm gets its pin mirror from `pins`
/// (the same map every time, so rebuilding a table loses no pin).
pub fn farm_specs(
    state: &ClusterState,
    learned: &HashMap<Ipv4Addr, MacAddr>,
    pins: &PinRegistry,
) -> Vec<FarmSpec> {
    state
        .farms
        .values()
        .map(|farm| {
            let rows: Vec<(BackendSpec, u32)> = farm
                .backends
                .iter()
                .map(|b| {
                    let spec = BackendSpec {
                        name: b.name.clone(),
                        ip: b.ip,
                        mac: b.mac.map(MacAddr).or_else(|| learned.get(&b.ip).copied()),
                        weight: b.weight,
                        state: match b.state {
                            cluster::BackendState::Up => BackendState::Up,
                            cluster::BackendState::Drain => BackendState::Drain,
                            cluster::BackendState::Off => BackendState::Off,
                        },
                        healthy: state.is_healthy(&farm.name, &b.name),
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
                    cluster::Protocol::Tcp => Protocol::Tcp,
                    cluster::Protocol::Udp => Protocol::Udp,
                },
                ports: farm.ports(),
                backends,
                persistence: match farm.persistence {
                    cluster::Persistence::None => None,
                    cluster::Persistence::SrcIp { ttl } => Some(PersistSpec {
                        ttl,
                        pins: pins.farm(&farm.name),
                    }),
                },
                hash: match farm.scheduler {
                    cluster::Scheduler::Maglev => FlowHash::FiveTuple,
                    cluster::Scheduler::SrcHash => FlowHash::Source,
                    cluster::Scheduler::Rr => FlowHash::RoundRobin,
                    cluster::Scheduler::Wrr => FlowHash::WeightedRoundRobin,
                },
                limits: limits(&farm.limits),
                maglev_size: farm.maglev_table_size as usize,
            }
        })
        .collect()
}

/// A farm's replicated limits as the datapath takes them.
fn limits(l: &cluster::state::FarmLimits) -> FarmLimits {
    let rate = |r: &cluster::state::RateLimit| RateLimit {
        per_sec: r.per_sec,
        burst: r.burst,
    };
    FarmLimits {
        per_source: l.per_source.as_ref().map(rate),
        per_farm: l.per_farm.as_ref().map(rate),
        max_flows: l.max_flows,
        tcp_strict: l.tcp_strict,
    }
}

/// Can take new flows: up, healthy, reachable at L2 and weighted.
fn is_live(b: &BackendSpec) -> bool {
    b.state == BackendState::Up && b.healthy && b.mac.is_some() && b.weight > 0
}

/// The backend addresses whose MAC must be learned by ARP (not pinned).
pub fn arp_targets(state: &ClusterState) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = state
        .farms
        .values()
        .flat_map(|f| f.backends.iter())
        .filter(|b| b.mac.is_none())
        .map(|b| b.ip)
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster::{Backend, Farm};

    fn backend(name: &str, octet: u8, priority: u32) -> Backend {
        Backend {
            name: name.into(),
            ip: Ipv4Addr::new(198, 18, 0, octet),
            mac: None,
            weight: 1,
            state: cluster::BackendState::Up,
            priority,
        }
    }

    fn state(backends: Vec<Backend>) -> ClusterState {
        let mut s = ClusterState::default();
        s.farms.insert(
            "web".into(),
            Farm {
                name: "web".into(),
                vip: Ipv4Addr::new(198, 18, 0, 100),
                port_first: 80,
                port_last: 80,
                protocol: cluster::Protocol::Tcp,
                scheduler: cluster::Scheduler::Maglev,
                limits: Default::default(),
                persistence: cluster::Persistence::None,
                check: None,
                backends,
                maglev_table_size: 307,
            }
            .into(),
        );
        s
    }

    fn weights(specs: &[FarmSpec]) -> Vec<(String, u32)> {
        specs[0]
            .backends
            .iter()
            .map(|b| (b.name.clone(), b.weight))
            .collect()
    }

    #[test]
    fn the_lowest_live_tier_serves_and_the_next_takes_over() {
        let s = state(vec![backend("a", 21, 1), backend("b", 22, 2)]);
        let all: HashMap<_, _> = [
            (
                Ipv4Addr::new(198, 18, 0, 21),
                MacAddr([2, 0, 0, 0, 0, 0x21]),
            ),
            (
                Ipv4Addr::new(198, 18, 0, 22),
                MacAddr([2, 0, 0, 0, 0, 0x22]),
            ),
        ]
        .into();
        assert_eq!(
            weights(&farm_specs(&s, &all, &PinRegistry::default())),
            vec![("a".into(), 1), ("b".into(), 0)]
        );
        // Tier 1's only backend has no MAC: tier 2 serves.
        let only_b: HashMap<_, _> = all
            .iter()
            .filter(|(ip, _)| ip.octets()[3] == 22)
            .map(|(k, v)| (*k, *v))
            .collect();
        assert_eq!(
            weights(&farm_specs(&s, &only_b, &PinRegistry::default())),
            vec![("a".into(), 0), ("b".into(), 1)]
        );
    }

    #[test]
    fn pinned_macs_win_and_are_not_arp_targets() {
        let mut pinned = backend("a", 21, 1);
        pinned.mac = Some([2, 9, 9, 9, 9, 9]);
        let s = state(vec![pinned, backend("b", 22, 1)]);
        let learned: HashMap<_, _> =
            [(Ipv4Addr::new(198, 18, 0, 21), MacAddr([2, 1, 1, 1, 1, 1]))].into();
        let specs = farm_specs(&s, &learned, &PinRegistry::default());
        assert_eq!(specs[0].backends[0].mac, Some(MacAddr([2, 9, 9, 9, 9, 9])));
        assert_eq!(specs[0].backends[1].mac, None);
        assert_eq!(arp_targets(&s), vec![Ipv4Addr::new(198, 18, 0, 22)]);
    }
}
