//! The forwarding table: an immutable snapshot of farms, backends and their Maglev tables,
//! built by the control plane and swapped into the workers with `ArcSwap`.
//!
//! Workers only read it. Backends carry the stable id the [`CounterRegistry`] gave their
//! (farm, backend) name pair, and the table maps ids back to backends, so a flow recorded
//! under one snapshot finds its backend in the next one.
//!
//! A change costs what it touches (docs/design.md#scale): [`ForwardingTable::rebuild`] makes
//! the next snapshot from the previous one, sharing every farm whose spec did not change
//! (`Arc`), and a changed farm keeps its Maglev table when its live backends and weights did
//! not change. Building from scratch is a rebuild from the empty table, so both give the
//! same snapshot. Finding a packet's farm is a hash of its VIP and a binary search over that
//! VIP's port ranges: O(log farms on the VIP).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
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
    /// IPv4 or IPv6; the farm's backends are of the same family.
    pub vip: IpAddr,
    pub protocol: Protocol,
    pub ports: RangeInclusive<u16>,
    pub backends: Vec<BackendSpec>,
    /// Source-IP persistence; `None`: every flow is scheduled on its own.
    pub persistence: Option<PersistSpec>,
    /// What Maglev is keyed by for a new flow.
    pub hash: FlowHash,
    /// New-flow limits and `tcp_strict`.
    pub limits: FarmLimits,
    /// Slots of the farm's Maglev table: a prime, at least the number of backends
    /// ([`maglev_default_size`] is the default a farm gets when it is created).
    pub maglev_size: usize,
}

/// What a table is built from: a spec, or a spec the caller shares and keeps between
/// rebuilds (`Arc<FarmSpec>`), which a rebuild then recognises by address.
pub trait SpecSource {
    fn spec(&self) -> &FarmSpec;
    /// The spec for the table to keep.
    fn shared(&self) -> Arc<FarmSpec>;
}

impl SpecSource for FarmSpec {
    fn spec(&self) -> &FarmSpec {
        self
    }

    fn shared(&self) -> Arc<FarmSpec> {
        Arc::new(self.clone())
    }
}

impl SpecSource for Arc<FarmSpec> {
    fn spec(&self) -> &FarmSpec {
        self
    }

    fn shared(&self) -> Arc<FarmSpec> {
        Arc::clone(self)
    }
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
    pub ip: IpAddr,
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
        vip: IpAddr,
        protocol: Protocol,
    },
    #[error("farm name {name:?} appears twice")]
    DuplicateFarm { name: String },
    #[error("farm {farm:?} lists backend {backend:?} twice")]
    DuplicateBackend { farm: String, backend: String },
    #[error("farm {farm:?} has an empty port range {start}-{end}")]
    EmptyPortRange { farm: String, start: u16, end: u16 },
    #[error("farm {farm:?} has VIP {vip}, which cannot be a unicast destination")]
    BadVip { farm: String, vip: IpAddr },
    #[error("farm {farm:?}: Maglev table size {size} is not a prime between 2 and {max}")]
    MaglevSizeInvalid {
        farm: String,
        size: usize,
        max: usize,
    },
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
    #[error(
        "farm {farm:?} has VIP {vip} but backend {backend:?} has address {ip} of the other family"
    )]
    MixedFamily {
        farm: String,
        vip: IpAddr,
        backend: String,
        ip: IpAddr,
    },
    #[error("the counter registry ran out of backend ids")]
    IdsExhausted,
}

/// A backend inside a snapshot.
#[derive(Debug)]
pub(crate) struct Backend {
    pub(crate) name: String,
    pub(crate) id: u32,
    /// Its share of new flows, as the spec gives it.
    pub(crate) weight: u32,
    /// Meaningful only when `existing_ok`.
    pub(crate) mac: MacAddr,
    /// Up or Drain, healthy, with a MAC: may keep flows it already has.
    pub(crate) existing_ok: bool,
    /// In its farm's Maglev table: takes new flows (and its pins are refreshed).
    pub(crate) new_ok: bool,
    pub(crate) counters: Arc<BackendCounters>,
}

/// A farm inside a snapshot, shared with the next snapshot while its spec stays the same.
#[derive(Debug)]
pub(crate) struct Farm {
    /// What it was built from: a rebuild reuses the farm when the new spec is the same
    /// `Arc` or an equal one.
    pub(crate) spec: Arc<FarmSpec>,
    /// Shared with the table's name index (no copy per snapshot).
    pub(crate) name: Arc<str>,
    /// In name order; Maglev slots, `live` and `rotation` index into it.
    pub(crate) backends: Box<[Backend]>,
    /// `None` when no backend is live; shared with the previous snapshot when the live
    /// backends, their weights and the size did not change.
    pub(crate) maglev: Option<Arc<Maglev>>,
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
    /// The backends that take new flows (indices into `backends`), in name order.
    pub(crate) live: Box<[u16]>,
    /// `rr`/`wrr`: the turn order, as indices into `backends`; empty otherwise.
    pub(crate) rotation: Box<[u16]>,
}

impl Farm {
    /// Builds `spec`'s farm; `prev`, the farm of that name in the previous snapshot, lends
    /// its Maglev table when the table's inputs did not change.
    fn build(
        shared: Arc<FarmSpec>,
        prev: Option<&Farm>,
        registry: &CounterRegistry,
    ) -> Result<Farm, TableError> {
        let spec = &*shared;
        let mut sorted: Vec<&BackendSpec> = spec.backends.iter().collect();
        sorted.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let mut backends = Vec::with_capacity(sorted.len());
        for b in sorted {
            let handle = registry
                .backend(&spec.name, &b.name)
                .ok_or(TableError::IdsExhausted)?;
            let usable = b.healthy && b.mac.is_some_and(MacAddr::is_unicast_host);
            backends.push(Backend {
                name: b.name.clone(),
                id: handle.id,
                weight: b.weight,
                mac: b.mac.unwrap_or_default(),
                existing_ok: usable && b.state != BackendState::Off,
                new_ok: usable && b.state == BackendState::Up && b.weight > 0,
                counters: handle.counters,
            });
        }
        let live: Vec<(&str, u32, u16)> = backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.new_ok)
            .map(|(i, b)| (b.name.as_str(), b.weight, i as u16))
            .collect();
        let maglev = match prev {
            Some(p)
                if p.spec.maglev_size == spec.maglev_size
                    && p.live_inputs().eq(live.iter().copied()) =>
            {
                p.maglev.clone()
            }
            _ => Maglev::build(spec.maglev_size, &live).map(Arc::new),
        };
        let live_idx: Box<[u16]> = live.iter().map(|l| l.2).collect();
        let rotation = match spec.hash {
            FlowHash::RoundRobin => live_idx.clone(),
            FlowHash::WeightedRoundRobin => smooth_wrr(&live),
            FlowHash::FiveTuple | FlowHash::Source => Box::default(),
        };
        let lim = spec.limits;
        Ok(Farm {
            name: spec.name.as_str().into(),
            backends: backends.into_boxed_slice(),
            key: xxh3_64_with_seed(spec.name.as_bytes(), FARM_KEY_SEED) as u32,
            source_rate: lim.per_source.map(|r| Gcra::new(r.per_sec, r.burst, 1)),
            farm_rate: lim.per_farm.map(|r| Gcra::new(r.per_sec, r.burst, 1)),
            max_flows: u64::from(lim.max_flows),
            tcp_strict: lim.tcp_strict,
            live: live_idx,
            rotation,
            maglev,
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
            spec: shared,
        })
    }

    /// What its Maglev table was filled from: the live backends' names, weights and
    /// indices (the slots hold indices, so a backend added or removed before a live one
    /// changes the table even when the live set does not).
    fn live_inputs(&self) -> impl Iterator<Item = (&str, u32, u16)> {
        self.live.iter().filter_map(|&i| {
            self.backends
                .get(usize::from(i))
                .map(|b| (b.name.as_str(), b.weight, i))
        })
    }
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

/// A farm's place on its VIP: sorted by (protocol, first port), they do not overlap.
#[derive(Clone, Copy, Debug)]
struct PortRange {
    protocol: u8,
    first: u16,
    last: u16,
    farm: u32,
}

#[derive(Debug)]
pub(crate) struct VipEntry {
    /// The farms on this VIP, sorted for a binary search.
    ranges: Vec<PortRange>,
    /// Per protocol (tcp, udp).
    pub(crate) frag_farm: [FragFarm; 2],
}

/// No backend: an empty slot of `ForwardingTable::by_id`.
const NO_FARM: u32 = u32::MAX;

/// An immutable forwarding snapshot.
#[derive(Debug)]
pub struct ForwardingTable {
    own_mac: MacAddr,
    pub(crate) farms: Vec<Arc<Farm>>,
    /// Where each farm and backend is; shared with the parent snapshot when no farm moved.
    layout: Arc<Layout>,
    /// What this snapshot is and what it was rebuilt from (see [`Lineage`]).
    pub(crate) lineage: Lineage,
}

/// The indexes of a snapshot: which farm serves a (VIP, protocol, port), where a farm or a
/// backend id is. They depend only on the farms' names, places (VIP, protocol, ports) and
/// backend ids, in order: a rebuild that changes none of those (a backend's state, weight,
/// verdict or MAC; a farm's limits or scheduler) shares them with its parent instead of
/// building them again.
#[derive(Debug, Default)]
struct Layout {
    /// Farm name → index in `farms`.
    by_name: FxHashMap<Arc<str>, u32>,
    /// Registry id → (farm index, backend index) ([`NO_FARM`] = not in this table).
    by_id: Vec<(u32, u16)>,
    /// IPv4 VIPs, keyed by the address as a `u32`: one multiply to hash.
    vips: FxHashMap<u32, VipEntry>,
    /// IPv6 VIPs, keyed by the address as a `u128`.
    vips6: FxHashMap<u128, VipEntry>,
    /// Every VIP in the order of its first farm: the order VIPs are announced in at a
    /// takeover (the first farms' VIPs first).
    vip_order: Vec<IpAddr>,
}

impl Layout {
    /// Refuses two farms whose port ranges overlap on one VIP and protocol. Each VIP's
    /// ranges are sorted by (protocol, first port) already, so a range overlaps an earlier
    /// one exactly when it starts at or below the furthest end reached so far on the same
    /// protocol: one pass over compact entries, no sort of the whole farm list.
    fn check_overlaps(&self, farms: &[Arc<Farm>]) -> Result<(), TableError> {
        let all = (self
            .vips
            .iter()
            .map(|(&v, e)| (IpAddr::V4(Ipv4Addr::from_bits(v)), e)))
        .chain(
            self.vips6
                .iter()
                .map(|(&v, e)| (IpAddr::V6(Ipv6Addr::from_bits(v)), e)),
        );
        for (vip, e) in all {
            let mut reach: Option<&PortRange> = None;
            for r in &e.ranges {
                match reach {
                    Some(g) if g.protocol == r.protocol && r.first <= g.last => {
                        let (a, b) = (&farms[g.farm as usize], &farms[r.farm as usize]);
                        return Err(TableError::OverlappingFarms {
                            first: a.name.to_string(),
                            second: b.name.to_string(),
                            vip,
                            protocol: b.spec.protocol,
                        });
                    }
                    Some(g) if g.protocol == r.protocol && g.last >= r.last => {}
                    _ => reach = Some(r),
                }
            }
        }
        Ok(())
    }
}

/// A snapshot's place in the chain of rebuilds: enough for a consumer that wrote the parent
/// (the fast path's maps) to write only the difference.
#[derive(Debug, Default)]
pub(crate) struct Lineage {
    /// Unique per snapshot (0: the empty table of `ForwardingTable::empty`, never a parent
    /// anyone relies on).
    pub(crate) id: u64,
    /// The snapshot this one was rebuilt from.
    pub(crate) parent: u64,
    /// Indices of the farms built anew rather than shared with the parent.
    pub(crate) fresh: Vec<u32>,
    /// Names of the parent's farms this snapshot does not have.
    pub(crate) dropped: Vec<Arc<str>>,
}

/// Source of snapshot ids.
static NEXT_TABLE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl ForwardingTable {
    /// A table with no farms: nothing is forwarded, no ARP is answered.
    pub fn empty(own_mac: MacAddr) -> ForwardingTable {
        ForwardingTable {
            own_mac,
            farms: Vec::new(),
            layout: Arc::default(),
            lineage: Lineage::default(),
        }
    }

    /// Builds a snapshot from scratch: [`ForwardingTable::rebuild`] from the empty table.
    pub fn build<S: SpecSource>(
        own_mac: MacAddr,
        farms: &[S],
        registry: &CounterRegistry,
    ) -> Result<ForwardingTable, TableError> {
        ForwardingTable::empty(own_mac).rebuild(farms, registry)
    }

    /// The snapshot of `farms` after this one. Backends are taken in name order whatever
    /// order `farms` lists them in, so equal specs give equal tables on every node. A farm
    /// whose spec equals its spec here is shared, not rebuilt; a rebuilt farm keeps this
    /// snapshot's Maglev table when its size, live backends and weights are the same.
    pub fn rebuild<S: SpecSource>(
        &self,
        farms: &[S],
        registry: &CounterRegistry,
    ) -> Result<ForwardingTable, TableError> {
        if let Some(t) = self.rebuild_in_place(farms, registry)? {
            return Ok(t);
        }
        let mut t = ForwardingTable::empty(self.own_mac);
        t.lineage.id = NEXT_TABLE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        t.lineage.parent = self.lineage.id;
        // Farms of this snapshot found here: fewer than this snapshot had means some left.
        let mut matched = 0usize;
        let mut l = Layout::default();
        t.farms.reserve(farms.len());
        l.by_name.reserve(farms.len());
        let mut id_bound = 0usize;
        for (fi, source) in farms.iter().enumerate() {
            let spec = source.spec();
            // The farm at the same index first: the order of the specs rarely changes, and
            // this spares a hash of the name per farm. The same spec (a caller that keeps
            // its specs in `Arc`s) is recognised by address, without reading the name.
            let here = self.farms.get(fi);
            let prev = here
                .filter(|p| std::ptr::eq(&*p.spec, spec) || *p.name == *spec.name)
                .or_else(|| {
                    self.layout
                        .by_name
                        .get(spec.name.as_str())
                        .and_then(|&i| self.farms.get(i as usize))
                });
            matched += usize::from(prev.is_some());
            let fi = fi as u32;
            let farm = match prev {
                // Checked when it was built.
                Some(p) if std::ptr::eq(&*p.spec, spec) || *p.spec == *spec => p.clone(),
                _ => {
                    check_farm(spec)?;
                    t.lineage.fresh.push(fi);
                    Arc::new(Farm::build(source.shared(), prev.map(|p| &**p), registry)?)
                }
            };
            if l.by_name.insert(farm.name.clone(), fi).is_some() {
                return Err(TableError::DuplicateFarm {
                    name: spec.name.clone(),
                });
            }
            id_bound = farm
                .backends
                .iter()
                .map(|b| b.id as usize + 1)
                .fold(id_bound, usize::max);
            let new_entry = || VipEntry {
                ranges: Vec::new(),
                frag_farm: [FragFarm::None; 2],
            };
            let order = &mut l.vip_order;
            let entry = match spec.vip {
                IpAddr::V4(v) => l.vips.entry(v.to_bits()).or_insert_with(|| {
                    order.push(spec.vip);
                    new_entry()
                }),
                IpAddr::V6(v) => l.vips6.entry(v.to_bits()).or_insert_with(|| {
                    order.push(spec.vip);
                    new_entry()
                }),
            };
            entry.ranges.push(PortRange {
                protocol: spec.protocol.number(),
                first: *spec.ports.start(),
                last: *spec.ports.end(),
                farm: fi,
            });
            let slot = &mut entry.frag_farm[spec.protocol.index()];
            *slot = match *slot {
                FragFarm::None => FragFarm::One(fi),
                _ => FragFarm::Ambiguous,
            };
            t.farms.push(farm);
        }
        for e in l.vips.values_mut().chain(l.vips6.values_mut()) {
            e.ranges.sort_unstable_by_key(|r| (r.protocol, r.first));
        }
        l.check_overlaps(&t.farms)?;
        if matched < self.farms.len() {
            t.lineage.dropped = self
                .farms
                .iter()
                .filter(|f| !l.by_name.contains_key(&*f.name))
                .map(|f| f.name.clone())
                .collect();
        }
        l.by_id = vec![(NO_FARM, 0); id_bound];
        for (fi, f) in t.farms.iter().enumerate() {
            for (bi, b) in f.backends.iter().enumerate() {
                l.by_id[b.id as usize] = (fi as u32, bi as u16);
            }
        }
        t.layout = Arc::new(l);
        Ok(t)
    }

    /// The snapshot after this one when no farm moved: the same farms in the same order,
    /// each changed one keeping its name, place and backend ids. Then the layout is shared
    /// and only the changed farms are looked at beyond a pointer; `None` sends the caller
    /// to the full rebuild.
    fn rebuild_in_place<S: SpecSource>(
        &self,
        farms: &[S],
        registry: &CounterRegistry,
    ) -> Result<Option<ForwardingTable>, TableError> {
        if farms.len() != self.farms.len() || farms.is_empty() {
            return Ok(None);
        }
        let mut next = Vec::with_capacity(farms.len());
        let mut fresh = Vec::new();
        for (fi, (source, p)) in farms.iter().zip(&self.farms).enumerate() {
            let spec = source.spec();
            if std::ptr::eq(&*p.spec, spec) {
                next.push(p.clone());
                continue;
            }
            let old = &*p.spec;
            if old.name != spec.name
                || old.vip != spec.vip
                || old.protocol != spec.protocol
                || old.ports != spec.ports
            {
                return Ok(None);
            }
            if *old == *spec {
                next.push(p.clone());
                continue;
            }
            check_farm(spec)?;
            let farm = Farm::build(source.shared(), Some(p), registry)?;
            if !farm
                .backends
                .iter()
                .map(|b| b.id)
                .eq(p.backends.iter().map(|b| b.id))
            {
                return Ok(None);
            }
            fresh.push(fi as u32);
            next.push(Arc::new(farm));
        }
        Ok(Some(ForwardingTable {
            own_mac: self.own_mac,
            farms: next,
            layout: self.layout.clone(),
            lineage: Lineage {
                id: NEXT_TABLE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                parent: self.lineage.id,
                fresh,
                dropped: Vec::new(),
            },
        }))
    }

    /// The specs this snapshot was built from, in the order given.
    pub fn specs(&self) -> impl Iterator<Item = &FarmSpec> + '_ {
        self.farms.iter().map(|f| &*f.spec)
    }

    /// Farms this snapshot built anew rather than shared with the previous one.
    pub fn rebuilt_farms(&self) -> usize {
        self.lineage.fresh.len()
    }

    pub fn own_mac(&self) -> MacAddr {
        self.own_mac
    }

    /// Every VIP with at least one farm (the set to answer ARP for and announce), in the
    /// order of the farms: a VIP comes where its first farm does.
    pub fn vips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.layout.vip_order.iter().copied()
    }

    /// The IPv4 VIPs of [`ForwardingTable::vips`], in its order.
    pub fn vips4(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.vips().filter_map(|v| match v {
            IpAddr::V4(v) => Some(v),
            IpAddr::V6(_) => None,
        })
    }

    /// The IPv6 VIPs of [`ForwardingTable::vips`], in its order.
    pub fn vips6(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.vips().filter_map(|v| match v {
            IpAddr::V6(v) => Some(v),
            IpAddr::V4(_) => None,
        })
    }

    /// The farm named `name`.
    pub(crate) fn farm(&self, name: &str) -> Option<&Arc<Farm>> {
        self.farms.get(*self.layout.by_name.get(name)? as usize)
    }

    /// Whether `other` has the same VIPs in the same order (a comparison of compact keys,
    /// no set built).
    pub fn same_vips(&self, other: &ForwardingTable) -> bool {
        Arc::ptr_eq(&self.layout, &other.layout) || self.layout.vip_order == other.layout.vip_order
    }

    pub fn is_vip(&self, ip: impl Into<IpAddr>) -> bool {
        match ip.into() {
            IpAddr::V4(v) => self.layout.vips.contains_key(&v.to_bits()),
            IpAddr::V6(v) => self.layout.vips6.contains_key(&v.to_bits()),
        }
    }

    /// Number of farms.
    pub fn farm_count(&self) -> usize {
        self.farms.len()
    }

    /// Names of the backends a farm's Maglev table can choose (live ones), in name order.
    pub fn live_backends(&self, farm: &str) -> Vec<&str> {
        let Some(f) = self.farm(farm) else {
            return Vec::new();
        };
        let Some(m) = &f.maglev else {
            return Vec::new();
        };
        let mut used: Vec<u16> = m.slots().to_vec();
        used.sort_unstable();
        used.dedup();
        used.iter()
            .filter_map(|&i| f.backends.get(usize::from(i)))
            .map(|b| b.name.as_str())
            .collect()
    }

    /// Every backend with the index of its farm.
    pub(crate) fn backends(&self) -> impl Iterator<Item = (u32, &Backend)> + '_ {
        self.farms
            .iter()
            .enumerate()
            .flat_map(|(fi, f)| f.backends.iter().map(move |b| (fi as u32, b)))
    }

    pub(crate) fn vip(&self, ip: Ipv4Addr) -> Option<&VipEntry> {
        self.layout.vips.get(&ip.to_bits())
    }

    #[inline]
    pub(crate) fn vip6(&self, ip: Ipv6Addr) -> Option<&VipEntry> {
        self.layout.vips6.get(&ip.to_bits())
    }

    /// The farm on `entry` serving `protocol` and `port`: the last range starting at or
    /// below it, if it reaches that far (ranges on a VIP do not overlap).
    #[inline]
    pub(crate) fn farm_for_port(entry: &VipEntry, protocol: Protocol, port: u16) -> Option<u32> {
        let key = (protocol.number(), port);
        let n = entry
            .ranges
            .partition_point(|r| (r.protocol, r.first) <= key);
        let r = entry.ranges.get(n.checked_sub(1)?)?;
        (r.protocol == key.0 && port <= r.last).then_some(r.farm)
    }

    #[inline]
    pub(crate) fn frag_farm(entry: &VipEntry, protocol: Protocol) -> FragFarm {
        entry.frag_farm[protocol.index()]
    }

    /// The backend with registry id `id` and the index of its farm, if this table has it.
    #[inline]
    pub(crate) fn backend_by_id(&self, id: u32) -> Option<(u32, &Backend)> {
        let (fi, bi) = *self.layout.by_id.get(id as usize)?;
        let b = self.farms.get(fi as usize)?.backends.get(usize::from(bi))?;
        Some((fi, b))
    }

    /// The farm and backend names of registry id `id`, if this table has it.
    pub fn backend_names(&self, id: u32) -> Option<(&str, &str)> {
        let (fi, b) = self.backend_by_id(id)?;
        let f = self.farms.get(fi as usize)?;
        Some((&f.name, b.name.as_str()))
    }

    /// The next backend of `worker`'s `rr`/`wrr` rotation in `farm`.
    #[inline]
    pub(crate) fn rotation_pick<'f>(&self, farm: &'f Farm, worker: usize) -> Option<&'f Backend> {
        let n = farm.rotation.len() as u64;
        if n == 0 {
            return None;
        }
        let i = farm.rotation[(farm.counters.rotate(worker) % n) as usize];
        farm.backends.get(usize::from(i))
    }

    /// A live backend of `farm` below `max_flows`, trying them in name order from a place
    /// set by `hash` (so the overflow of a full backend spreads over the others rather than
    /// piling on its neighbour); `None` when every one is full.
    #[inline]
    pub(crate) fn backend_with_room<'f>(&self, farm: &'f Farm, hash: u64) -> Option<&'f Backend> {
        let n = farm.live.len();
        let start = ((u128::from(hash) * n as u128) >> 64) as usize;
        (0..n)
            .filter_map(|k| farm.live.get((start + k) % n))
            .filter_map(|&i| farm.backends.get(usize::from(i)))
            .find(|b| b.counters.flows() < farm.max_flows)
    }

    /// Maglev's choice in `farm` for a flow hash.
    #[inline]
    pub(crate) fn maglev_pick<'f>(&self, farm: &'f Farm, hash: u64) -> Option<&'f Backend> {
        let i = farm.maglev.as_ref()?.lookup(hash);
        farm.backends.get(usize::from(i))
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

/// Checks what building one farm assumes: ports non-empty, a unicast VIP, a valid Maglev
/// size, backends unique and no more than the slots. Run for the farms a rebuild builds;
/// duplicate farm names are caught by the build loop's name index.
fn check_farm(f: &FarmSpec) -> Result<(), TableError> {
    if f.ports.is_empty() {
        return Err(TableError::EmptyPortRange {
            farm: f.name.clone(),
            start: *f.ports.start(),
            end: *f.ports.end(),
        });
    }
    let unicast = match f.vip {
        IpAddr::V4(v) => !(v.is_unspecified() || v.is_broadcast() || v.is_multicast()),
        IpAddr::V6(v) => !(v.is_unspecified() || v.is_multicast() || v.is_loopback()),
    };
    if !unicast {
        return Err(TableError::BadVip {
            farm: f.name.clone(),
            vip: f.vip,
        });
    }
    // DSR forwards the client's datagram unchanged: a backend can only take the VIP's
    // family.
    if let Some(b) = f
        .backends
        .iter()
        .find(|b| b.ip.is_ipv4() != f.vip.is_ipv4())
    {
        return Err(TableError::MixedFamily {
            farm: f.name.clone(),
            vip: f.vip,
            backend: b.name.clone(),
            ip: b.ip,
        });
    }
    if !maglev::is_prime(f.maglev_size) || f.maglev_size > maglev::MAX_SIZE {
        return Err(TableError::MaglevSizeInvalid {
            farm: f.name.clone(),
            size: f.maglev_size,
            max: maglev::MAX_SIZE,
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
    if n > f.maglev_size {
        return Err(TableError::MaglevTooSmall {
            farm: f.name.clone(),
            backends: n,
            size: f.maglev_size,
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
    Ok(())
}

/// No two farms on one VIP and protocol share a port: O(farms × log farms).
#[cfg(test)]
mod tests {
    use super::*;

    fn backend(name: &str, mac: u8) -> BackendSpec {
        BackendSpec {
            name: name.into(),
            ip: Ipv4Addr::new(198, 18, 1, mac).into(),
            mac: Some(MacAddr([2, 0, 0, 0, 1, mac])),
            weight: 1,
            state: BackendState::Up,
            healthy: true,
        }
    }

    fn farm(name: &str, proto: Protocol, ports: RangeInclusive<u16>) -> FarmSpec {
        FarmSpec {
            name: name.into(),
            vip: Ipv4Addr::new(198, 18, 0, 100).into(),
            protocol: proto,
            ports,
            backends: vec![backend("a", 1), backend("b", 2)],
            persistence: None,
            hash: FlowHash::default(),
            limits: FarmLimits::default(),
            maglev_size: 257,
        }
    }

    /// The lookup entry of `vip`, of either family.
    fn entry(t: &ForwardingTable, vip: IpAddr) -> Option<&VipEntry> {
        match vip {
            IpAddr::V4(v) => t.vip(v),
            IpAddr::V6(v) => t.vip6(v),
        }
    }

    fn build(farms: &[FarmSpec]) -> Result<ForwardingTable, TableError> {
        ForwardingTable::build(MacAddr([2; 6]), farms, &CounterRegistry::new(1))
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
        zero.vip = Ipv4Addr::UNSPECIFIED.into();
        assert!(matches!(build(&[zero]), Err(TableError::BadVip { .. })));
        for size in [0, 1, 256, 65_535, maglev::MAX_SIZE + 1] {
            let f = FarmSpec {
                maglev_size: size,
                ..tcp80.clone()
            };
            assert!(matches!(
                build(&[f]),
                Err(TableError::MaglevSizeInvalid { .. })
            ));
        }
        let mut many = tcp80.clone();
        many.backends = (0..4).map(|i| backend(&format!("b{i}"), i)).collect();
        many.maglev_size = 3;
        assert!(matches!(
            build(&[many]),
            Err(TableError::MaglevTooSmall { .. })
        ));
        // An overlap hidden behind a wide range (sorted, the overlapping pair is not adjacent).
        assert!(matches!(
            build(&[
                farm("wide", Protocol::Tcp, 1..=100),
                farm("mid", Protocol::Tcp, 10..=20),
                farm("late", Protocol::Tcp, 50..=60),
            ]),
            Err(TableError::OverlappingFarms { .. })
        ));
        assert!(
            build(&[
                farm("x", Protocol::Tcp, 1..=9),
                farm("y", Protocol::Tcp, 10..=20),
                farm("z", Protocol::Tcp, 21..=21),
            ])
            .is_ok()
        );
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
        assert_eq!(t.vips().collect::<Vec<_>>(), [IpAddr::V4(vip)]);
        assert_eq!(t.vips4().collect::<Vec<_>>(), [vip]);
        assert_eq!(t.vips6().count(), 0);
        assert_eq!(t.live_backends("web"), ["a", "b"]);
        // Many VIPs come out in the order of their first farm, not in hash order.
        let order: Vec<Ipv4Addr> = (0..500u32)
            .map(|i| Ipv4Addr::from_bits(0xc613_0000 + (i * 7919) % 65_000 + 1))
            .collect();
        let many: Vec<FarmSpec> = order
            .iter()
            .enumerate()
            .flat_map(|(i, v)| {
                [80u16, 443].map(|p| FarmSpec {
                    vip: (*v).into(),
                    ..farm(&format!("f{i}-{p}"), Protocol::Tcp, p..=p)
                })
            })
            .collect();
        let m = build(&many).unwrap();
        assert_eq!(m.vips4().collect::<Vec<_>>(), order);
        assert!(m.vips().eq(order.iter().map(|&v| IpAddr::V4(v))));
        let e = t.vip(vip).unwrap();
        assert_eq!(
            ForwardingTable::farm_for_port(e, Protocol::Tcp, 81),
            Some(0)
        );
        assert_eq!(ForwardingTable::farm_for_port(e, Protocol::Tcp, 53), None);
        assert_eq!(
            ForwardingTable::farm_for_port(e, Protocol::Udp, 53),
            Some(1)
        );
        assert_eq!(
            ForwardingTable::frag_farm(e, Protocol::Udp),
            FragFarm::One(1)
        );
        let drain = t
            .backends()
            .map(|b| b.1)
            .find(|b| b.name == "d-drain")
            .unwrap();
        assert!(drain.existing_ok);
        assert!(t.backends().filter(|b| !b.1.existing_ok).count() == 2);
        assert_eq!(t.backend_by_id(drain.id).unwrap().1.name, "d-drain");
        assert!(t.backend_by_id(9999).is_none());
    }

    mod rebuild {
        use super::*;
        use proptest::prelude::*;

        const SIZES: [usize; 4] = [251, 307, 1021, 4099];

        fn arb_backend(i: usize) -> impl Strategy<Value = BackendSpec> {
            (0u32..4, 0u8..3, any::<bool>(), 0u8..5).prop_map(move |(w, st, healthy, mac)| {
                BackendSpec {
                    name: format!("b{i}"),
                    ip: Ipv4Addr::new(198, 18, 1, i as u8).into(),
                    // One in five without a MAC (not yet learned).
                    mac: (mac > 0).then_some(MacAddr([2, 0, 0, 0, mac, i as u8])),
                    weight: w,
                    state: [BackendState::Up, BackendState::Drain, BackendState::Off]
                        [usize::from(st)],
                    healthy,
                }
            })
        }

        fn arb_farm(i: usize) -> impl Strategy<Value = FarmSpec> {
            (
                proptest::collection::vec(any::<u8>(), 1..6),
                0usize..SIZES.len(),
                0u8..4,
                any::<bool>(),
            )
                .prop_flat_map(move |(bs, size, hash, udp)| {
                    let backends: Vec<_> = (0..bs.len()).map(arb_backend).collect();
                    (backends, Just((size, hash, udp)))
                })
                .prop_map(move |(backends, (size, hash, udp))| FarmSpec {
                    name: format!("farm{i}"),
                    // Farms share VIPs: several per VIP, on ports of their own.
                    vip: Ipv4Addr::new(198, 18, 0, 100 + (i % 3) as u8).into(),
                    protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
                    ports: (1000 + 10 * i as u16)..=(1004 + 10 * i as u16),
                    backends,
                    persistence: None,
                    hash: [
                        FlowHash::FiveTuple,
                        FlowHash::Source,
                        FlowHash::RoundRobin,
                        FlowHash::WeightedRoundRobin,
                    ][usize::from(hash)],
                    limits: FarmLimits::default(),
                    maglev_size: SIZES[size],
                })
        }

        fn arb_specs() -> impl Strategy<Value = Vec<FarmSpec>> {
            (1usize..10).prop_flat_map(|n| (0..n).map(arb_farm).collect::<Vec<_>>())
        }

        /// One change an operator, a health check or the MAC resolver can make.
        fn change(specs: &mut Vec<FarmSpec>, kind: u8, a: usize, b: usize, v: u8) {
            let n = specs.len();
            let f = &mut specs[a % n];
            let nb = f.backends.len();
            let be = &mut f.backends[b % nb];
            match kind {
                0 => {
                    be.state = [BackendState::Up, BackendState::Drain, BackendState::Off]
                        [usize::from(v % 3)]
                }
                1 => be.healthy = !be.healthy,
                2 => be.weight = u32::from(v % 5),
                3 => be.mac = (!v.is_multiple_of(4)).then_some(MacAddr([2, 0, 0, 9, v, b as u8])),
                4 => {
                    let i = 50 + usize::from(v);
                    if f.backends.iter().all(|x| x.name != format!("b{i}")) {
                        f.backends.push(BackendSpec {
                            name: format!("b{i}"),
                            ip: Ipv4Addr::new(198, 18, 2, v).into(),
                            mac: Some(MacAddr([2, 0, 0, 3, v, 1])),
                            weight: 1,
                            state: BackendState::Up,
                            healthy: true,
                        });
                    }
                }
                5 if nb > 1 => {
                    f.backends.remove(b % nb);
                }
                6 => f.maglev_size = SIZES[usize::from(v) % SIZES.len()],
                7 => {
                    let p = 5000 + 10 * (a % n) as u16;
                    f.ports = p..=p + u16::from(v % 4);
                }
                8 => {
                    let i = 100 + usize::from(v);
                    specs.push(FarmSpec {
                        name: format!("new{i}"),
                        ports: (20_000 + i as u16)..=(20_000 + i as u16),
                        ..specs[a % n].clone()
                    });
                }
                9 if n > 1 => {
                    specs.remove(a % n);
                }
                _ => f.hash = FlowHash::Source,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]

            /// docs/design.md#scale: after any single change a rebuild equals a build from
            /// scratch, farm by farm, and a farm whose spec did not change is the very same
            /// farm (flows on it keep their backend, its counters carry on).
            #[test]
            fn rebuild_after_one_change_equals_a_build_from_scratch(
                specs in arb_specs(),
                kind in 0u8..11,
                a in any::<usize>(),
                b in any::<usize>(),
                v in any::<u8>(),
            ) {
                let reg = CounterRegistry::new(1);
                let own = MacAddr([2; 6]);
                let before = ForwardingTable::build(own, &specs, &reg).unwrap();
                let mut after_specs = specs.clone();
                change(&mut after_specs, kind, a, b, v);
                let next = before.rebuild(&after_specs, &reg).unwrap();
                let scratch = ForwardingTable::build(own, &after_specs, &reg).unwrap();

                prop_assert_eq!(next.farms.len(), scratch.farms.len());
                let mut changed = 0;
                for (n, s) in next.farms.iter().zip(&scratch.farms) {
                    prop_assert_eq!(format!("{n:?}"), format!("{s:?}"));
                    match specs.iter().find(|f| *f.name == *n.name) {
                        Some(old) if *old == *n.spec => {
                            let i = before.layout.by_name[&*n.name] as usize;
                            prop_assert!(Arc::ptr_eq(n, &before.farms[i]), "{} rebuilt", n.name);
                        }
                        _ => changed += 1,
                    }
                }
                prop_assert_eq!(next.rebuilt_farms(), changed);
                // The lineage names exactly the difference (what the fast path writes).
                prop_assert_eq!(next.lineage.parent, before.lineage.id);
                for &i in &next.lineage.fresh {
                    let n = &next.farms[i as usize];
                    prop_assert!(before.farm(&n.name).is_none_or(|p| !Arc::ptr_eq(p, n)));
                }
                let mut dropped: Vec<&str> = next.lineage.dropped.iter().map(|n| &**n).collect();
                dropped.sort_unstable();
                let mut gone: Vec<&str> = specs
                    .iter()
                    .filter(|f| !after_specs.iter().any(|g| g.name == f.name))
                    .map(|f| f.name.as_str())
                    .collect();
                gone.sort_unstable();
                prop_assert_eq!(dropped, gone);
                prop_assert!(changed <= 1, "one change touched {} farms", changed);
                prop_assert_eq!(&next.layout.by_id, &scratch.layout.by_id);
                let mut vips: Vec<_> = next.vips().collect();
                let mut want: Vec<_> = scratch.vips().collect();
                vips.sort_unstable();
                want.sort_unstable();
                prop_assert_eq!(&vips, &want);
                for vip in vips {
                    let (e, w) = (entry(&next, vip).unwrap(), entry(&scratch, vip).unwrap());
                    for proto in [Protocol::Tcp, Protocol::Udp] {
                        prop_assert_eq!(
                            ForwardingTable::frag_farm(e, proto),
                            ForwardingTable::frag_farm(w, proto)
                        );
                        for port in (990..1100).chain(4990..5100).chain(20_090..20_400) {
                            prop_assert_eq!(
                                ForwardingTable::farm_for_port(e, proto, port),
                                ForwardingTable::farm_for_port(w, proto, port)
                            );
                        }
                    }
                }
            }

            /// The per-VIP binary search finds what a walk over every farm finds.
            #[test]
            fn port_lookup_matches_a_linear_walk(
                specs in arb_specs(),
                port in 990u16..1100,
                udp in any::<bool>(),
            ) {
                let t = ForwardingTable::build(MacAddr([2; 6]), &specs, &CounterRegistry::new(1))
                    .unwrap();
                let proto = if udp { Protocol::Udp } else { Protocol::Tcp };
                for vip in t.vips() {
                    let walk = t.farms.iter().enumerate().find(|(_, f)| {
                        f.spec.vip == vip && f.spec.protocol == proto && f.spec.ports.contains(&port)
                    });
                    prop_assert_eq!(
                        ForwardingTable::farm_for_port(entry(&t, vip).unwrap(), proto, port),
                        walk.map(|(i, _)| i as u32)
                    );
                }
            }
        }

        #[test]
        fn a_changed_farm_keeps_its_maglev_table_when_its_live_set_did_not_change() {
            let reg = CounterRegistry::new(1);
            let mut specs = vec![farm("web", Protocol::Tcp, 80..=80)];
            let t = ForwardingTable::build(MacAddr([2; 6]), &specs, &reg).unwrap();
            // A new MAC for a backend: the farm is rebuilt, its Maglev table is not.
            specs[0].backends[0].mac = Some(MacAddr([2, 0, 0, 0, 7, 7]));
            let u = t.rebuild(&specs, &reg).unwrap();
            assert_eq!(u.rebuilt_farms(), 1);
            let (m0, m1) = (t.farms[0].maglev.as_ref(), u.farms[0].maglev.as_ref());
            assert!(Arc::ptr_eq(m0.unwrap(), m1.unwrap()));
            // A weight change refills it.
            specs[0].backends[0].weight = 3;
            let w = u.rebuild(&specs, &reg).unwrap();
            assert!(!Arc::ptr_eq(
                m1.unwrap(),
                w.farms[0].maglev.as_ref().unwrap()
            ));
        }
    }
}
