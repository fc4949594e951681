//! The bridge from replicated state to datapath tables: farms and health verdicts from the
//! cluster state plus the MACs this node learned go in, [`FarmSpec`]s come out. The specs
//! depend on nothing else, so every node that holds the same state builds the same table
//! (docs/design.md#inv-same-backend) — followers included, which is what makes a
//! takeover compute nothing. They are kept between changes and remade per farm, only for
//! the farms whose inputs changed (a property test holds them to specs made from scratch).
//!
//! Priority tiers are resolved here: backends of the lowest priority that has a live backend
//! get their weight; the others are listed with weight 0, so they take no new flows but
//! flows already pinned to them keep going until the tier above them is back.

use cluster::ClusterState;
use datapath::{
    BackendSpec, BackendState, FarmLimits, FarmSpec, FlowHash, MacAddr, PersistSpec, PinRegistry,
    Protocol, RateLimit, SpecSource,
};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

/// The specs of the replicated farms, remade only for the farms whose inputs changed (the
/// farm's `Arc` in the state, its verdicts, the learned MACs of its backends), so a change
/// to one farm costs one spec (docs/design.md#scale). The specs it hands out are the same
/// `Arc`s while their inputs stay the same, which the table's rebuild recognises by
/// address. Also keeps the set of backend addresses to learn by ARP, by difference.
#[derive(Debug, Default)]
pub struct Specs {
    /// One per farm, in name order (the state's order).
    memo: Vec<Memo>,
    /// MACs learned by ARP; a pinned MAC wins over these.
    learned: HashMap<IpAddr, MacAddr>,
    /// Bumped whenever `learned` changes.
    learned_gen: u64,
    /// Backend addresses without a pinned MAC, each with how many backends have it.
    arp: BTreeMap<IpAddr, usize>,
    /// The keys of `arp` changed since [`Specs::take_arp_targets`] last gave them.
    arp_changed: bool,
}

/// A farm's spec and what it was made from; the table is built from these.
#[derive(Debug)]
pub struct Memo {
    farm: Arc<cluster::Farm>,
    /// The farm has a check (its verdicts count).
    checked: bool,
    /// Its verdicts when checked.
    health: Option<BTreeMap<String, bool>>,
    /// The `learned` generation the spec's MACs are known to match.
    learned_gen: u64,
    spec: Arc<FarmSpec>,
}

impl SpecSource for Memo {
    fn spec(&self) -> &FarmSpec {
        &self.spec
    }

    fn shared(&self) -> Arc<FarmSpec> {
        Arc::clone(&self.spec)
    }
}

impl Specs {
    /// The MACs learned by ARP that the specs use.
    pub fn learned(&self) -> &HashMap<IpAddr, MacAddr> {
        &self.learned
    }

    /// Replaces the learned MACs.
    pub fn set_learned(&mut self, learned: HashMap<IpAddr, MacAddr>) {
        if learned != self.learned {
            self.learned = learned;
            self.learned_gen += 1;
        }
    }

    /// The specs of `state`'s farms, in its order; a persistent farm gets its pin mirror
    /// from `pins` (the same map every time, so rebuilding a table loses no pin).
    pub fn update(&mut self, state: &ClusterState, pins: &PinRegistry) -> &[Memo] {
        let mut old = std::mem::take(&mut self.memo).into_iter().peekable();
        let mut memo = Vec::with_capacity(state.farms.len());
        for farm in state.farms.values() {
            // Mostly the very farm `old` has next: then no name is read (at ten thousand
            // farms, reading each farm's name costs more than the rest of a change).
            let prev = match old.next_if(|m| Arc::ptr_eq(&m.farm, farm)) {
                Some(m) => Some(m),
                None => {
                    // Both in name order: what `old` has before this farm left the state.
                    while let Some(gone) = old.next_if(|m| m.farm.name < farm.name) {
                        self.count_arp(&gone.farm, false);
                    }
                    old.next_if(|m| m.farm.name == farm.name)
                }
            };
            let same = prev.as_ref().is_some_and(|m| Arc::ptr_eq(&m.farm, farm));
            // Verdicts count only for a checked farm; an unchanged farm's memo knows.
            let checked = prev
                .as_ref()
                .filter(|_| same)
                .map_or_else(|| farm.check.is_some(), |m| m.checked);
            let health = if checked {
                state.health.get(&farm.name)
            } else {
                None
            };
            let m = match prev {
                Some(mut m) if same && m.health.as_ref() == health && self.macs_hold(&m) => {
                    m.learned_gen = self.learned_gen;
                    m
                }
                prev => {
                    if !same {
                        if let Some(p) = &prev {
                            self.count_arp(&p.farm, false);
                        }
                        self.count_arp(farm, true);
                    }
                    Memo {
                        farm: farm.clone(),
                        checked,
                        health: health.cloned(),
                        learned_gen: self.learned_gen,
                        spec: Arc::new(spec_of(farm, health, &self.learned, pins)),
                    }
                }
            };
            memo.push(m);
        }
        for gone in old {
            self.count_arp(&gone.farm, false);
        }
        self.memo = memo;
        &self.memo
    }

    /// The backend addresses whose MAC must be learned by ARP (not pinned), sorted, if
    /// they changed since they were last taken.
    pub fn take_arp_targets(&mut self) -> Option<Vec<IpAddr>> {
        std::mem::take(&mut self.arp_changed).then(|| self.arp.keys().copied().collect())
    }

    /// Whether a spec made before `learned` last changed still has the MACs it would get
    /// now.
    fn macs_hold(&self, m: &Memo) -> bool {
        m.learned_gen == self.learned_gen
            || m.farm
                .backends
                .iter()
                .zip(&m.spec.backends)
                .all(|(b, s)| b.mac.is_some() || self.learned.get(&b.ip) == s.mac.as_ref())
    }

    /// Adds (or takes away) a farm's unpinned backends to the ARP targets.
    fn count_arp(&mut self, farm: &cluster::Farm, add: bool) {
        for b in farm.backends.iter().filter(|b| b.mac.is_none()) {
            if add {
                let n = self.arp.entry(b.ip).or_insert(0);
                *n += 1;
                self.arp_changed |= *n == 1;
            } else if let Some(n) = self.arp.get_mut(&b.ip) {
                *n -= 1;
                if *n == 0 {
                    self.arp.remove(&b.ip);
                    self.arp_changed = true;
                }
            }
        }
    }
}

/// The datapath view of one farm, given its verdicts and the learned MACs.
fn spec_of(
    farm: &cluster::Farm,
    health: Option<&BTreeMap<String, bool>>,
    learned: &HashMap<IpAddr, MacAddr>,
    pins: &PinRegistry,
) -> FarmSpec {
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
                // As `ClusterState::is_healthy`: a checked backend without a verdict is down.
                healthy: farm.check.is_none()
                    || health
                        .and_then(|h| h.get(&b.name))
                        .copied()
                        .unwrap_or(false),
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

#[cfg(test)]
mod tests {
    use super::*;
    use cluster::{Backend, Farm};
    use proptest::prelude::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn backend(name: &str, octet: u8, priority: u32) -> Backend {
        Backend {
            name: name.into(),
            ip: IpAddr::from(Ipv4Addr::new(198, 18, 0, octet)),
            mac: None,
            weight: 1,
            state: cluster::BackendState::Up,
            priority,
        }
    }

    fn farm(name: &str, port: u16, backends: Vec<Backend>) -> Farm {
        Farm {
            name: name.into(),
            vip: IpAddr::from(Ipv4Addr::new(198, 18, 0, 100)),
            port_first: port,
            port_last: port,
            protocol: cluster::Protocol::Tcp,
            scheduler: cluster::Scheduler::Maglev,
            limits: Default::default(),
            persistence: cluster::Persistence::None,
            check: None,
            backends,
            maglev_table_size: 307,
        }
    }

    fn state(backends: Vec<Backend>) -> ClusterState {
        let mut s = ClusterState::default();
        s.farms
            .insert("web".into(), farm("web", 80, backends).into());
        s
    }

    fn specs(s: &ClusterState, learned: &HashMap<IpAddr, MacAddr>) -> Vec<FarmSpec> {
        let mut specs = Specs::default();
        specs.set_learned(learned.clone());
        specs
            .update(s, &PinRegistry::default())
            .iter()
            .map(|m| m.spec().clone())
            .collect()
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
                IpAddr::from(Ipv4Addr::new(198, 18, 0, 21)),
                MacAddr([2, 0, 0, 0, 0, 0x21]),
            ),
            (
                IpAddr::from(Ipv4Addr::new(198, 18, 0, 22)),
                MacAddr([2, 0, 0, 0, 0, 0x22]),
            ),
        ]
        .into();
        assert_eq!(
            weights(&specs(&s, &all)),
            vec![("a".into(), 1), ("b".into(), 0)]
        );
        // Tier 1's only backend has no MAC: tier 2 serves.
        let only_b: HashMap<_, _> = all
            .iter()
            .filter(|(ip, _)| matches!(ip, IpAddr::V4(v) if v.octets()[3] == 22))
            .map(|(k, v)| (*k, *v))
            .collect();
        assert_eq!(
            weights(&specs(&s, &only_b)),
            vec![("a".into(), 0), ("b".into(), 1)]
        );
    }

    #[test]
    fn pinned_macs_win_and_are_not_arp_targets() {
        let mut pinned = backend("a", 21, 1);
        pinned.mac = Some([2, 9, 9, 9, 9, 9]);
        let s = state(vec![pinned, backend("b", 22, 1)]);
        let learned: HashMap<_, _> = [(
            IpAddr::from(Ipv4Addr::new(198, 18, 0, 21)),
            MacAddr([2, 1, 1, 1, 1, 1]),
        )]
        .into();
        let mut sp = Specs::default();
        sp.set_learned(learned);
        let out: Vec<FarmSpec> = sp
            .update(&s, &PinRegistry::default())
            .iter()
            .map(|m| m.spec().clone())
            .collect();
        assert_eq!(out[0].backends[0].mac, Some(MacAddr([2, 9, 9, 9, 9, 9])));
        assert_eq!(out[0].backends[1].mac, None);
        assert_eq!(
            sp.take_arp_targets(),
            Some(vec![IpAddr::from(Ipv4Addr::new(198, 18, 0, 22))])
        );
        // Unchanged: nothing new to ask for.
        sp.update(&s, &PinRegistry::default());
        assert_eq!(sp.take_arp_targets(), None);
    }

    /// One change an operator, a checker or ARP can make.
    #[derive(Debug, Clone)]
    enum Change {
        BackendState(usize, usize, u8),
        Weight(usize, usize, u32),
        PinMac(usize, usize, bool),
        Verdict(usize, usize, bool),
        Learn(u8, bool),
        Check(usize, bool),
        RemoveFarm(usize),
        AddFarm(u16, u8),
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            (any::<usize>(), any::<usize>(), 0u8..3)
                .prop_map(|(f, b, s)| Change::BackendState(f, b, s)),
            (any::<usize>(), any::<usize>(), 0u32..4).prop_map(|(f, b, w)| Change::Weight(f, b, w)),
            (any::<usize>(), any::<usize>(), any::<bool>())
                .prop_map(|(f, b, p)| Change::PinMac(f, b, p)),
            (any::<usize>(), any::<usize>(), any::<bool>())
                .prop_map(|(f, b, u)| Change::Verdict(f, b, u)),
            (0u8..12, any::<bool>()).prop_map(|(o, k)| Change::Learn(o, k)),
            (any::<usize>(), any::<bool>()).prop_map(|(f, c)| Change::Check(f, c)),
            any::<usize>().prop_map(Change::RemoveFarm),
            (1u16..2000, 1u8..5).prop_map(|(p, n)| Change::AddFarm(p, n)),
        ]
    }

    fn apply(s: &mut ClusterState, learned: &mut HashMap<IpAddr, MacAddr>, c: &Change) {
        let names: Vec<String> = s.farms.keys().cloned().collect();
        let pick = |i: usize| names.get(i % names.len().max(1)).cloned();
        match *c {
            Change::Learn(octet, known) => {
                let ip = Ipv4Addr::new(198, 18, 0, octet);
                if known {
                    learned.insert(ip.into(), MacAddr([2, 0, 0, 0, 1, octet]));
                } else {
                    learned.remove(&IpAddr::from(ip));
                }
            }
            Change::AddFarm(port, n) => {
                let name = format!("f{port}");
                let backends = (0..n).map(|i| backend(&format!("b{i}"), i, 1)).collect();
                s.farms
                    .insert(name.clone(), farm(&name, port, backends).into());
            }
            Change::RemoveFarm(f) => {
                if let Some(n) = pick(f) {
                    s.farms.remove(&n);
                    s.health.remove(&n);
                }
            }
            Change::Verdict(f, b, up) => {
                if let Some(n) = pick(f) {
                    let farm = &s.farms[&n];
                    if let Some(bk) = farm.backends.get(b % farm.backends.len().max(1)) {
                        let bk = bk.name.clone();
                        s.health.entry(n).or_default().insert(bk, up);
                    }
                }
            }
            Change::BackendState(..)
            | Change::Weight(..)
            | Change::PinMac(..)
            | Change::Check(..) => {}
        }
        if let Some(n) = match *c {
            Change::BackendState(f, ..)
            | Change::Weight(f, ..)
            | Change::PinMac(f, ..)
            | Change::Check(f, _) => pick(f),
            _ => None,
        } {
            let farm = Arc::make_mut(s.farms.get_mut(&n).expect("picked"));
            let nb = farm.backends.len().max(1);
            match *c {
                Change::BackendState(_, b, st) => {
                    if let Some(bk) = farm.backends.get_mut(b % nb) {
                        bk.state = [
                            cluster::BackendState::Up,
                            cluster::BackendState::Drain,
                            cluster::BackendState::Off,
                        ][usize::from(st)];
                    }
                }
                Change::Weight(_, b, w) => {
                    if let Some(bk) = farm.backends.get_mut(b % nb) {
                        bk.weight = w;
                    }
                }
                Change::PinMac(_, b, pin) => {
                    if let Some(bk) = farm.backends.get_mut(b % nb) {
                        let IpAddr::V4(ip) = bk.ip else {
                            unreachable!("IPv4 fixtures")
                        };
                        bk.mac = pin.then_some([2, 9, 9, 9, 9, ip.octets()[3]]);
                    }
                }
                Change::Check(_, on) => {
                    farm.check = on.then(|| {
                        cluster::HealthCheck::tcp(
                            Duration::from_secs(1),
                            Duration::from_secs(1),
                            1,
                            1,
                        )
                    });
                }
                _ => {}
            }
        }
    }

    proptest! {
        /// After any run of changes, the kept specs equal specs made from scratch, the ARP
        /// targets follow, and a farm whose inputs did not change keeps its very spec.
        #[test]
        fn incremental_specs_equal_specs_from_scratch(
            changes in proptest::collection::vec(change(), 1..40),
        ) {
            let mut s = ClusterState::default();
            let mut learned = HashMap::new();
            for p in 0..6u16 {
                apply(&mut s, &mut learned, &Change::AddFarm(100 + p, 1 + (p % 4) as u8));
            }
            let pins = PinRegistry::default();
            let mut kept = Specs::default();
            let shared = |memo: &[Memo]| memo.iter().map(Memo::shared).collect::<Vec<_>>();
            let mut prev = shared(kept.update(&s, &pins));
            let mut targets = kept.take_arp_targets().unwrap_or_default();
            for c in &changes {
                let before = s.clone();
                let learned_before = learned.clone();
                apply(&mut s, &mut learned, c);
                kept.set_learned(learned.clone());
                let now = shared(kept.update(&s, &pins));
                if let Some(t) = kept.take_arp_targets() {
                    targets = t;
                }
                let mut fresh = Specs::default();
                fresh.set_learned(learned.clone());
                let scratch = shared(fresh.update(&s, &pins));
                let a: Vec<&FarmSpec> = now.iter().map(|s| &**s).collect();
                let b: Vec<&FarmSpec> = scratch.iter().map(|s| &**s).collect();
                prop_assert_eq!(a, b, "after {:?}", c);
                prop_assert_eq!(&targets, &fresh.take_arp_targets().unwrap_or_default());
                for spec in &now {
                    let name = &spec.name;
                    let untouched = before.farms.get(name).zip(s.farms.get(name))
                        .is_some_and(|(x, y)| Arc::ptr_eq(x, y))
                        && before.health.get(name) == s.health.get(name)
                        && learned_before == learned;
                    if untouched {
                        let old = prev.iter().find(|p| p.name == *name).expect("was there");
                        prop_assert!(Arc::ptr_eq(old, spec), "{} was remade by {:?}", name, c);
                    }
                }
                prev = now;
            }
        }
    }
}
