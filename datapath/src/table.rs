//! The forwarding table: an immutable snapshot of farms, backends and their Maglev tables,
//! built by the control plane and swapped into the workers with `ArcSwap`.
//!
//! Workers only read it. Backends carry the stable id the [`CounterRegistry`] gave their
//! (farm, backend) name pair, and the table maps ids back to backends, so a flow recorded
//! under one snapshot finds its backend in the next one.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::counters::{BackendCounters, CounterRegistry, FarmCounters};
use crate::limit::Gcra;
use crate::maglev::{self, Maglev};
use crate::packet::{IPPROTO_TCP, IPPROTO_UDP, MacAddr};
use crate::persist::FarmPins;

/// A pin is refreshed once this fraction of its TTL has passed since it was last seen: an
/// active client's pin then lives between ¾ TTL and TTL after its last packet, and steady
/// traffic costs at most four log writes per client and TTL.
const REFRESH_DIVISOR: u64 = 4;

/// Longest `wrr` turn order: weights whose sum (after dividing by their gcd) is larger are
/// halved, rounding up, until it fits (shares then follow the weights to within 1 / this).
const MAX_ROTATION: u64 = 4096;

/// Seed of the farm key; changing it only resets rate buckets across an upgrade.
const FARM_KEY_SEED: u64 = 0x6473_726c_625f_666b; // "dsrlb_fk"

/// Transport protocol of a farm.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IPv4 protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => IPPROTO_TCP,
            Protocol::Udp => IPPROTO_UDP,
        }
    }

    /// The protocol of an IPv4 protocol number, if a farm can serve it.
    pub fn from_number(n: u8) -> Option<Protocol> {
        match n {
            IPPROTO_TCP => Some(Protocol::Tcp),
            IPPROTO_UDP => Some(Protocol::Udp),
            _ => None,
        }
    }

    fn index(self) -> usize {
        match self {
            Protocol::Tcp => 0,
            Protocol::Udp => 1,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// Administrative state of a backend.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum BackendState {
    /// Takes new and existing flows.
    Up,
    /// Keeps existing flows, takes no new ones.
    Drain,
    /// Takes nothing.
    Off,
}

/// A farm as the control plane describes it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FarmSpec {
    pub name: String,
    pub vip: Ipv4Addr,
    pub protocol: Protocol,
    pub ports: RangeInclusive<u16>,
    pub backends: Vec<BackendSpec>,
    /// Source-IP persistence; `None`: every flow is scheduled on its own.
    pub persistence: Option<PersistSpec>,
    /// What Maglev is keyed by for a new flow.
    pub hash: FlowHash,
    /// New-flow limits and `tcp_strict`.
    pub limits: FarmLimits,
}

/// A rate of new flows: `per_sec` per second, bursts of `burst` (both ≥ 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RateLimit {
    pub per_sec: u32,
    pub burst: u32,
}

/// A farm's limits on new flows (docs/design.md#limits). The default limits nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FarmLimits {
    /// New flows per source address (`new_rate_limit`).
    pub per_source: Option<RateLimit>,
    /// New flows of the whole farm (`new_rate_limit_farm`).
    pub per_farm: Option<RateLimit>,
    /// Established flows per backend in this node's flow tables beyond which a backend
    /// takes no new flow (`max_flows`); 0: no limit.
    pub max_flows: u32,
    /// Drop TCP packets other than SYNs of flows this node does not know, once the
    /// takeover grace has passed (`tcp_strict`).
    pub tcp_strict: bool,
}

/// How a farm picks a backend for a new flow (the `scheduler`): what Maglev is keyed by,
/// or a rotation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FlowHash {
    /// The 5-tuple (`maglev`): each connection on its own.
    #[default]
    FiveTuple,
    /// The client address alone (`srchash`): all of a client's connections to one backend,
    /// on every node, without pins; it moves only when the farm's backend set changes.
    Source,
    /// Each worker hands new flows to the live backends in turn (`rr`), weights aside
    /// (weight 0 still takes none). Per node and per worker, never replicated.
    RoundRobin,
    /// As `RoundRobin`, each backend's turn as often as its weight says (`wrr`), interleaved
    /// (the smooth weighted round robin of nginx).
    WeightedRoundRobin,
}

/// Source-IP persistence of a farm: the TTL and the farm's pin mirror.
#[derive(Clone, Debug)]
pub struct PersistSpec {
    pub ttl: Duration,
    pub pins: Arc<FarmPins>,
}

impl PartialEq for PersistSpec {
    fn eq(&self, other: &Self) -> bool {
        self.ttl == other.ttl && Arc::ptr_eq(&self.pins, &other.pins)
    }
}

impl Eq for PersistSpec {}

/// A backend as the control plane describes it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BackendSpec {
    pub name: String,
    pub ip: Ipv4Addr,
    /// Resolved or pinned; `None` = not selectable.
    pub mac: Option<MacAddr>,
    /// Share of new flows; 0 = no new flows.
    pub weight: u32,
    pub state: BackendState,
    pub healthy: bool,
}

/// Why a set of specs cannot become a table. The control plane's input is at fault; a
/// retry with the same input fails the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("farms {first:?} and {second:?} overlap on {vip} {protocol} ports")]
    OverlappingFarms {
        first: String,
        second: String,
        vip: Ipv4Addr,
        protocol: Protocol,
    },
    #[error("farm name {name:?} appears twice")]
    DuplicateFarm { name: String },
    #[error("farm {farm:?} lists backend {backend:?} twice")]
    DuplicateBackend { farm: String, backend: String },
    #[error("farm {farm:?} has an empty port range {start}-{end}")]
    EmptyPortRange { farm: String, start: u16, end: u16 },
    #[error("farm {farm:?} has VIP {vip}, which cannot be a unicast destination")]
    BadVip { farm: String, vip: Ipv4Addr },
    #[error("Maglev table size {size} is not a prime between 2 and {max}")]
    MaglevSizeInvalid { size: usize, max: usize },
    #[error("farm {farm:?} has {backends} backends, more than the Maglev table size {size}")]
    MaglevTooSmall {
        farm: String,
        backends: usize,
        size: usize,
    },
    #[error("farm {farm:?} has {count} backends; at most {max} are supported")]
    TooManyBackends {
        farm: String,
        count: usize,
        max: usize,
    },
    #[error("the counter registry ran out of backend ids")]
    IdsExhausted,
}

/// A backend inside a snapshot.
#[derive(Debug)]
pub(crate) struct Backend {
    pub(crate) name: String,
    pub(crate) id: u32,
    pub(crate) farm: u32,
    /// Meaningful only when `existing_ok`.
    pub(crate) mac: MacAddr,
    /// Up or Drain, healthy, with a MAC: may keep flows it already has.
    pub(crate) existing_ok: bool,
    /// In its farm's Maglev table: takes new flows (and its pins are refreshed).
    pub(crate) new_ok: bool,
    pub(crate) counters: Arc<BackendCounters>,
}

/// A farm inside a snapshot.
#[derive(Debug)]
pub(crate) struct Farm {
    pub(crate) name: String,
    pub(crate) protocol: Protocol,
    pub(crate) ports: RangeInclusive<u16>,
    /// Index of the farm's first backend in the flat backend list.
    pub(crate) first_backend: u32,
    /// `None` when no backend is live.
    pub(crate) maglev: Option<Maglev>,
    pub(crate) counters: Arc<FarmCounters>,
    pub(crate) persist: Option<FarmPersist>,
    pub(crate) hash: FlowHash,
    /// A stable key of the farm's name, for state kept by name across tables (the
    /// per-source rate buckets).
    pub(crate) key: u32,
    /// Buckets for one worker seeing all traffic; the processor scales them to its share.
    pub(crate) source_rate: Option<Gcra>,
    pub(crate) farm_rate: Option<Gcra>,
    /// 0: no limit.
    pub(crate) max_flows: u64,
    pub(crate) tcp_strict: bool,
    /// The backends that take new flows (indices from `first_backend`), in name order.
    pub(crate) live: Box<[u16]>,
    /// `rr`/`wrr`: the turn order, as indices from `first_backend`; empty otherwise.
    pub(crate) rotation: Box<[u16]>,
}

/// A persistent farm's pins and timing, on the monotonic clock.
#[derive(Debug)]
pub(crate) struct FarmPersist {
    pub(crate) pins: Arc<FarmPins>,
    pub(crate) ttl_ns: u64,
    /// Age of a pin after which a packet of its client asks for a refresh.
    pub(crate) refresh_ns: u64,
}

/// Which farm serves the fragments of a (VIP, protocol).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum FragFarm {
    None,
    One(u32),
    /// Several farms: fragments carry no port to tell them apart.
    Ambiguous,
}

#[derive(Debug)]
pub(crate) struct VipEntry {
    /// Farm indices on this VIP.
    pub(crate) farms: Vec<u32>,
    /// Per protocol (tcp, udp).
    pub(crate) frag_farm: [FragFarm; 2],
}

/// An immutable forwarding snapshot.
#[derive(Debug)]
pub struct ForwardingTable {
    own_mac: MacAddr,
    pub(crate) farms: Vec<Farm>,
    pub(crate) backends: Vec<Backend>,
    /// Registry id → index in `backends` (`u32::MAX` = not in this table).
    by_id: Vec<u32>,
    /// Keyed by the address as a `u32`: one multiply to hash.
    vips: FxHashMap<u32, VipEntry>,
}

impl ForwardingTable {
    /// A table with no farms: nothing is forwarded, no ARP is answered.
    pub fn empty(own_mac: MacAddr) -> ForwardingTable {
        ForwardingTable {
            own_mac,
            farms: Vec::new(),
            backends: Vec::new(),
            by_id: Vec::new(),
            vips: FxHashMap::default(),
        }
    }

    /// Builds a snapshot. Backends are taken in name order whatever order `farms` lists
    /// them in, so equal specs give equal tables on every node.
    pub fn build(
        own_mac: MacAddr,
        farms: &[FarmSpec],
        registry: &CounterRegistry,
        maglev_size: usize,
    ) -> Result<ForwardingTable, TableError> {
        if !maglev::is_prime(maglev_size) || maglev_size > maglev::MAX_SIZE {
            return Err(TableError::MaglevSizeInvalid {
                size: maglev_size,
                max: maglev::MAX_SIZE,
            });
        }
        validate(farms, maglev_size)?;

        let mut t = ForwardingTable::empty(own_mac);
        for (fi, spec) in farms.iter().enumerate() {
            let fi = fi as u32;
            let first_backend = t.backends.len() as u32;
            let mut sorted: Vec<&BackendSpec> = spec.backends.iter().collect();
            sorted.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            let mut live: Vec<(&str, u32, u16)> = Vec::new();
            for (bi, b) in sorted.iter().enumerate() {
                let handle = registry
                    .backend(&spec.name, &b.name)
                    .ok_or(TableError::IdsExhausted)?;
                let usable = b.healthy && b.mac.is_some_and(MacAddr::is_unicast_host);
                let existing_ok = usable && b.state != BackendState::Off;
                let new_ok = usable && b.state == BackendState::Up && b.weight > 0;
                if new_ok {
                    live.push((b.name.as_str(), b.weight, bi as u16));
                }
                t.backends.push(Backend {
                    name: b.name.clone(),
                    id: handle.id,
                    farm: fi,
                    mac: b.mac.unwrap_or_default(),
                    existing_ok,
                    new_ok,
                    counters: handle.counters,
                });
            }
            let live_idx: Box<[u16]> = live.iter().map(|l| l.2).collect();
            let rotation = match spec.hash {
                FlowHash::RoundRobin => live_idx.clone(),
                FlowHash::WeightedRoundRobin => smooth_wrr(&live),
                FlowHash::FiveTuple | FlowHash::Source => Box::default(),
            };
            let lim = spec.limits;
            t.farms.push(Farm {
                name: spec.name.clone(),
                protocol: spec.protocol,
                ports: spec.ports.clone(),
                first_backend,
                key: xxh3_64_with_seed(spec.name.as_bytes(), FARM_KEY_SEED) as u32,
                source_rate: lim.per_source.map(|r| Gcra::new(r.per_sec, r.burst, 1)),
                farm_rate: lim.per_farm.map(|r| Gcra::new(r.per_sec, r.burst, 1)),
                max_flows: u64::from(lim.max_flows),
                tcp_strict: lim.tcp_strict,
                live: live_idx,
                rotation,
                maglev: Maglev::build(maglev_size, &live),
                counters: registry.farm(&spec.name),
                persist: spec.persistence.as_ref().map(|p| {
                    let ttl_ns = u64::try_from(p.ttl.as_nanos()).unwrap_or(u64::MAX);
                    FarmPersist {
                        pins: p.pins.clone(),
                        ttl_ns,
                        refresh_ns: ttl_ns / REFRESH_DIVISOR,
                    }
                }),
                hash: spec.hash,
            });
            let entry = t
                .vips
                .entry(spec.vip.to_bits())
                .or_insert_with(|| VipEntry {
                    farms: Vec::new(),
                    frag_farm: [FragFarm::None; 2],
                });
            entry.farms.push(fi);
            let slot = &mut entry.frag_farm[spec.protocol.index()];
            *slot = match *slot {
                FragFarm::None => FragFarm::One(fi),
                _ => FragFarm::Ambiguous,
            };
        }
        let bound = t
            .backends
            .iter()
            .map(|b| b.id as usize + 1)
            .max()
            .unwrap_or(0);
        t.by_id = vec![u32::MAX; bound];
        for (i, b) in t.backends.iter().enumerate() {
            t.by_id[b.id as usize] = i as u32;
        }
        Ok(t)
    }

    pub fn own_mac(&self) -> MacAddr {
        self.own_mac
    }

    /// Every VIP with at least one farm (the set to answer ARP for and announce).
    pub fn vips(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.vips.keys().map(|&k| Ipv4Addr::from_bits(k))
    }

    pub fn is_vip(&self, ip: Ipv4Addr) -> bool {
        self.vips.contains_key(&ip.to_bits())
    }

    /// Number of farms.
    pub fn farm_count(&self) -> usize {
        self.farms.len()
    }

    /// Names of the backends a farm's Maglev table can choose (live ones), in name order.
    pub fn live_backends(&self, farm: &str) -> Vec<&str> {
        let Some(f) = self.farms.iter().find(|f| f.name == farm) else {
            return Vec::new();
        };
        let Some(m) = &f.maglev else {
            return Vec::new();
        };
        let mut used: Vec<u16> = m.slots().to_vec();
        used.sort_unstable();
        used.dedup();
        used.iter()
            .filter_map(|&i| self.backends.get(f.first_backend as usize + usize::from(i)))
            .map(|b| b.name.as_str())
            .collect()
    }

    #[inline]
    pub(crate) fn vip_entries(&self) -> impl Iterator<Item = (Ipv4Addr, &VipEntry)> + '_ {
        self.vips.iter().map(|(a, e)| (Ipv4Addr::from_bits(*a), e))
    }

    pub(crate) fn vip(&self, ip: Ipv4Addr) -> Option<&VipEntry> {
        self.vips.get(&ip.to_bits())
    }

    /// The farm on `entry` serving `protocol` and `port`.
    #[inline]
    pub(crate) fn farm_for_port(
        &self,
        entry: &VipEntry,
        protocol: Protocol,
        port: u16,
    ) -> Option<u32> {
        entry.farms.iter().copied().find(|&fi| {
            self.farms
                .get(fi as usize)
                .is_some_and(|f| f.protocol == protocol && f.ports.contains(&port))
        })
    }

    #[inline]
    pub(crate) fn frag_farm(entry: &VipEntry, protocol: Protocol) -> FragFarm {
        entry.frag_farm[protocol.index()]
    }

    /// The backend with registry id `id`, if this table has it.
    #[inline]
    pub(crate) fn backend_by_id(&self, id: u32) -> Option<&Backend> {
        let i = *self.by_id.get(id as usize)?;
        self.backends.get(i as usize)
    }

    /// The farm and backend names of registry id `id`, if this table has it.
    pub fn backend_names(&self, id: u32) -> Option<(&str, &str)> {
        let b = self.backend_by_id(id)?;
        let f = self.farms.get(b.farm as usize)?;
        Some((f.name.as_str(), b.name.as_str()))
    }

    /// The next backend of `worker`'s `rr`/`wrr` rotation in `farm`.
    #[inline]
    pub(crate) fn rotation_pick(&self, farm: &Farm, worker: usize) -> Option<&Backend> {
        let n = farm.rotation.len() as u64;
        if n == 0 {
            return None;
        }
        let i = farm.rotation[(farm.counters.rotate(worker) % n) as usize];
        self.backends
            .get(farm.first_backend as usize + usize::from(i))
    }

    /// A live backend of `farm` below `max_flows`, trying them in name order from a place
    /// set by `hash` (so the overflow of a full backend spreads over the others rather than
    /// piling on its neighbour); `None` when every one is full.
    #[inline]
    pub(crate) fn backend_with_room(&self, farm: &Farm, hash: u64) -> Option<&Backend> {
        let n = farm.live.len();
        let start = ((u128::from(hash) * n as u128) >> 64) as usize;
        (0..n)
            .filter_map(|k| farm.live.get((start + k) % n))
            .filter_map(|&i| {
                self.backends
                    .get(farm.first_backend as usize + usize::from(i))
            })
            .find(|b| b.counters.flows() < farm.max_flows)
    }

    /// Maglev's choice in `farm` for a flow hash.
    #[inline]
    pub(crate) fn maglev_pick(&self, farm: &Farm, hash: u64) -> Option<&Backend> {
        let i = farm.maglev.as_ref()?.lookup(hash);
        self.backends
            .get(farm.first_backend as usize + usize::from(i))
    }
}

/// The `wrr` turn order of `live` (name, weight, index): each index as often as its weight
/// (divided by the weights' gcd, bounded by [`MAX_ROTATION`]), interleaved so that no
/// backend gets a run of turns while others wait (nginx's smooth weighted round robin).
fn smooth_wrr(live: &[(&str, u32, u16)]) -> Box<[u16]> {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let mut w: Vec<u64> = live.iter().map(|l| u64::from(l.1)).collect();
    let g = w.iter().copied().fold(0, gcd).max(1);
    w.iter_mut().for_each(|x| *x /= g);
    while w.iter().sum::<u64>() > MAX_ROTATION {
        w.iter_mut().for_each(|x| *x = x.div_ceil(2));
    }
    let total: u64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, c) in current.iter_mut().enumerate() {
            *c += w[i] as i64;
        }
        for i in 1..current.len() {
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        out.push(live[best].2);
    }
    out.into_boxed_slice()
}

/// Checks what the build loop assumes: names unique, ports non-empty, no overlaps.
fn validate(farms: &[FarmSpec], maglev_size: usize) -> Result<(), TableError> {
    for (i, f) in farms.iter().enumerate() {
        if f.ports.is_empty() {
            return Err(TableError::EmptyPortRange {
                farm: f.name.clone(),
                start: *f.ports.start(),
                end: *f.ports.end(),
            });
        }
        if f.vip.is_unspecified() || f.vip.is_broadcast() || f.vip.is_multicast() {
            return Err(TableError::BadVip {
                farm: f.name.clone(),
                vip: f.vip,
            });
        }
        let n = f.backends.len();
        if n > maglev::MAX_BACKENDS {
            return Err(TableError::TooManyBackends {
                farm: f.name.clone(),
                count: n,
                max: maglev::MAX_BACKENDS,
            });
        }
        if n > maglev_size {
            return Err(TableError::MaglevTooSmall {
                farm: f.name.clone(),
                backends: n,
                size: maglev_size,
            });
        }
        let mut names: Vec<&str> = f.backends.iter().map(|b| b.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(TableError::DuplicateBackend {
                farm: f.name.clone(),
                backend: w[0].to_owned(),
            });
        }
        for g in &farms[..i] {
            if g.name == f.name {
                return Err(TableError::DuplicateFarm {
                    name: f.name.clone(),
                });
            }
            let overlap = g.ports.start() <= f.ports.end() && f.ports.start() <= g.ports.end();
            if g.vip == f.vip && g.protocol == f.protocol && overlap {
                return Err(TableError::OverlappingFarms {
                    first: g.name.clone(),
                    second: f.name.clone(),
                    vip: f.vip,
                    protocol: f.protocol,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(name: &str, mac: u8) -> BackendSpec {
        BackendSpec {
            name: name.into(),
            ip: Ipv4Addr::new(198, 18, 1, mac),
            mac: Some(MacAddr([2, 0, 0, 0, 1, mac])),
            weight: 1,
            state: BackendState::Up,
            healthy: true,
        }
    }

    fn farm(name: &str, proto: Protocol, ports: RangeInclusive<u16>) -> FarmSpec {
        FarmSpec {
            name: name.into(),
            vip: Ipv4Addr::new(198, 18, 0, 100),
            protocol: proto,
            ports,
            backends: vec![backend("a", 1), backend("b", 2)],
            persistence: None,
            hash: FlowHash::default(),
            limits: FarmLimits::default(),
        }
    }

    fn build(farms: &[FarmSpec]) -> Result<ForwardingTable, TableError> {
        ForwardingTable::build(MacAddr([2; 6]), farms, &CounterRegistry::new(1), 257)
    }

    #[test]
    fn rejects_bad_specs() {
        let tcp80 = farm("web", Protocol::Tcp, 80..=80);
        assert!(matches!(
            build(&[tcp80.clone(), farm("web2", Protocol::Tcp, 1..=80)]),
            Err(TableError::OverlappingFarms { .. })
        ));
        assert!(build(&[tcp80.clone(), farm("dns", Protocol::Udp, 80..=80)]).is_ok());
        assert!(matches!(
            build(&[tcp80.clone(), farm("web", Protocol::Udp, 53..=53)]),
            Err(TableError::DuplicateFarm { .. })
        ));
        #[allow(clippy::reversed_empty_ranges)]
        let empty = farm("e", Protocol::Tcp, 90..=80);
        assert!(matches!(
            build(&[empty]),
            Err(TableError::EmptyPortRange { .. })
        ));
        let mut dup = tcp80.clone();
        dup.backends.push(backend("a", 3));
        assert!(matches!(
            build(&[dup]),
            Err(TableError::DuplicateBackend { .. })
        ));
        let mut zero = tcp80.clone();
        zero.vip = Ipv4Addr::UNSPECIFIED;
        assert!(matches!(build(&[zero]), Err(TableError::BadVip { .. })));
        let reg = CounterRegistry::new(1);
        for size in [0, 1, 256, 65_535] {
            assert!(matches!(
                ForwardingTable::build(MacAddr::ZERO, &[], &reg, size),
                Err(TableError::MaglevSizeInvalid { .. })
            ));
        }
        let mut many = tcp80.clone();
        many.backends = (0..4).map(|i| backend(&format!("b{i}"), i)).collect();
        assert!(matches!(
            ForwardingTable::build(MacAddr::ZERO, &[many], &reg, 3),
            Err(TableError::MaglevTooSmall { .. })
        ));
    }

    #[test]
    fn lookups_and_live_set() {
        let mut web = farm("web", Protocol::Tcp, 80..=81);
        web.backends.push(BackendSpec {
            mac: None,
            ..backend("c-nomac", 3)
        });
        web.backends.push(BackendSpec {
            state: BackendState::Drain,
            ..backend("d-drain", 4)
        });
        web.backends.push(BackendSpec {
            healthy: false,
            ..backend("e-sick", 5)
        });
        web.backends.push(BackendSpec {
            weight: 0,
            ..backend("f-zero", 6)
        });
        let t = build(&[web, farm("dns", Protocol::Udp, 53..=53)]).unwrap();
        let vip = Ipv4Addr::new(198, 18, 0, 100);
        assert!(t.is_vip(vip));
        assert!(!t.is_vip(Ipv4Addr::new(198, 18, 0, 101)));
        assert_eq!(t.vips().collect::<Vec<_>>(), [vip]);
        assert_eq!(t.live_backends("web"), ["a", "b"]);
        let e = t.vip(vip).unwrap();
        assert_eq!(t.farm_for_port(e, Protocol::Tcp, 81), Some(0));
        assert_eq!(t.farm_for_port(e, Protocol::Tcp, 53), None);
        assert_eq!(t.farm_for_port(e, Protocol::Udp, 53), Some(1));
        assert_eq!(
            ForwardingTable::frag_farm(e, Protocol::Udp),
            FragFarm::One(1)
        );
        let drain = t.backends.iter().find(|b| b.name == "d-drain").unwrap();
        assert!(drain.existing_ok);
        assert!(t.backends.iter().filter(|b| !b.existing_ok).count() == 2);
        assert_eq!(t.backend_by_id(drain.id).unwrap().name, "d-drain");
        assert!(t.backend_by_id(9999).is_none());
    }
}
