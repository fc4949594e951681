//! The fast path's maps and how a [`ForwardingTable`] is written into them.
//!
//! - `farms` (hash): (VIP, port, protocol) → the farm's Maglev slots (base, size) and tag,
//!   one key per port of each fast farm.
//! - `slots` (array, mapped into user space): Maglev slots as backend registry ids (8-byte
//!   values, the stride the kernel gives array elements anyway). Each fast farm has a
//!   region of its own; a farm whose slots change gets a new region, written before its key
//!   points there, so a frame never meets a half-written table, and the old region is
//!   freed after. A farm whose Maglev table and backend ids did not change keeps its region.
//!
//! A sync writes only what differs from what it wrote last (docs/design.md#scale): one
//! backend's change costs a few map writes, whatever the number of farms.
//! - `backends` (hash): registry id → MAC, whether it may keep flows, farm tag, id.
//! - `flows` (LRU hash): 5-tuple → registry id, for flows past their SYN.
//! - `cfg` (array of one): the lease deadline on the kernel's monotonic clock, own MAC.
//! - `stats` (per-CPU array): packets and bytes per registry id.
//!
//! Which farms are fast: no persistence, no limits (docs/design.md#limits: the workers
//! keep their buckets and counts), the `maglev` scheduler, a live Maglev table, at most
//! [`MAX_FARM_PORTS`] ports, and room left in the slot half. The others stay with user space
//! (their frames pass the program), which handles every farm the same as before.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use crate::ebpf::sys::{self as bpf, MappedArray};
use crate::maglev::Maglev;
use crate::packet::MacAddr;
use crate::table::{Backend, Farm, FlowHash, ForwardingTable};

/// Flag bit in a backend value: may keep the flows it has.
pub(crate) const BACKEND_EXISTING_OK: u8 = 1;
/// Farms with more ports than this stay in user space (one map key per port).
pub(crate) const MAX_FARM_PORTS: usize = 1024;
/// Keys of the farm map.
const MAX_FARM_KEYS: u32 = 65_536;
/// Slots of the slot array (8 bytes each: 16 MiB): 31 farms at a Maglev size of 65,537,
/// 6,800 at 307 (3 backends' default); a change needs room for its new region beside the
/// old one.
pub(crate) const SLOTS: usize = 1 << 21;
/// Backends the fast path knows, and registry ids it counts.
const MAX_BACKENDS: u32 = 65_536;
/// An empty Maglev slot (no backend has that id).
const NO_BACKEND: u64 = u32::MAX as u64;

/// The map descriptors the program is assembled with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProgMaps {
    pub(crate) farms: i32,
    pub(crate) slots: i32,
    pub(crate) backends: i32,
    pub(crate) flows: i32,
    pub(crate) cfg: i32,
    pub(crate) stats: i32,
}

/// Packets and bytes the program forwarded for one backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KernelCount {
    pub(crate) packets: u64,
    pub(crate) bytes: u64,
}

/// The maps, and what user space last wrote into them.
#[derive(Debug)]
pub(crate) struct Maps {
    farms: OwnedFd,
    slots: OwnedFd,
    slot_mem: MappedArray,
    backends: OwnedFd,
    flows: OwnedFd,
    cfg: OwnedFd,
    stats: OwnedFd,
    /// What the last sync wrote for each farm of its table, by name.
    written: HashMap<Arc<str>, Written>,
    /// The id of the table the last sync wrote in full (0: none, or it failed).
    synced: u64,
    /// Farms in `written` on the fast path.
    fast_farms: usize,
    /// Farms in `written` refused for want of slots, by the slots they need.
    refused: BTreeSet<(usize, Arc<str>)>,
    free: FreeList,
    own_mac: MacAddr,
    /// The lease deadline last written (kernel clock), to skip needless writes.
    deadline: u64,
    possible_cpus: usize,
}

/// What a sync put on the fast path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Synced {
    /// Farms forwarded in the kernel.
    pub(crate) fast: usize,
    /// Farms left to user space.
    pub(crate) slow: usize,
    /// Farms written by this sync that stay with user space, each with why.
    pub(crate) newly_slow: Vec<(String, &'static str)>,
    /// Map entries and slot regions written or deleted.
    pub(crate) writes: usize,
}

/// Why a fast farm is not on the fast path when the slot array has no room for it.
const SLOTS_FULL: &str = "fast path slots full";

/// What a sync wrote for one farm.
#[derive(Debug)]
struct Written {
    /// The table's farm it was written from: a later table sharing this very `Arc` needs
    /// nothing written for it.
    farm: Arc<Farm>,
    /// Its backends' ids and values, sorted by id.
    backends: Box<[(u32, [u8; 16])]>,
    /// Its slots, while it is on the fast path.
    region: Option<Region>,
    /// The value of its keys (those of [`farm_keys`]) when it is on the fast path, else
    /// why it is not.
    key_value: Result<[u8; 16], &'static str>,
}

impl Written {
    fn backend(&self, id: u32) -> Option<&[u8; 16]> {
        let i = self.backends.binary_search_by_key(&id, |(i, _)| *i).ok()?;
        Some(&self.backends[i].1)
    }

    /// The value written for farm key `k`, if this farm wrote it.
    fn key_value(&self, k: &[u8; 8]) -> Option<&[u8; 16]> {
        let v = self.key_value.as_ref().ok()?;
        let spec = &self.farm.spec;
        let port = u16::from_be_bytes([k[4], k[5]]);
        (matches!(spec.vip, IpAddr::V4(v) if k[..4] == v.octets())
            && k[6] == spec.protocol.number()
            && spec.ports.contains(&port))
        .then_some(v)
    }
}

/// A fast farm's slots, and what they were written from.
#[derive(Debug)]
struct Region {
    base: usize,
    maglev: Arc<Maglev>,
    /// The registry id of each of the farm's backends, by index.
    ids: Box<[u32]>,
}

/// Free ranges of the slot array (base → length), first fit, merged when freed.
#[derive(Debug)]
struct FreeList {
    ranges: BTreeMap<usize, usize>,
}

impl FreeList {
    fn new(len: usize) -> FreeList {
        FreeList {
            ranges: BTreeMap::from([(0, len)]),
        }
    }

    fn largest(&self) -> usize {
        self.ranges.values().copied().max().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.ranges.values().sum()
    }

    fn alloc(&mut self, len: usize) -> Option<usize> {
        let (&base, &have) = self.ranges.iter().find(|(_, l)| **l >= len)?;
        self.ranges.remove(&base);
        if have > len {
            self.ranges.insert(base + len, have - len);
        }
        Some(base)
    }

    fn free(&mut self, base: usize, len: usize) {
        let (mut base, mut len) = (base, len);
        if let Some((&b, &l)) = self.ranges.range(..base).next_back()
            && b + l == base
        {
            self.ranges.remove(&b);
            base = b;
            len += l;
        }
        if let Some(l) = self.ranges.remove(&(base + len)) {
            len += l;
        }
        self.ranges.insert(base, len);
    }
}

fn farm_key(vip: Ipv4Addr, port: u16, protocol: u8) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&vip.octets());
    k[4..6].copy_from_slice(&port.to_be_bytes());
    k[6] = protocol;
    k
}

/// Slots a farm's region takes (0 without a Maglev table).
fn slots_of(f: &Farm) -> usize {
    f.maglev.as_ref().map_or(0, |m| m.slots().len())
}

/// The farm map's keys of a farm: one per port.
fn farm_keys(f: &Farm) -> impl Iterator<Item = [u8; 8]> + '_ {
    let protocol = f.spec.protocol.number();
    f.spec
        .ports
        .clone()
        .filter_map(move |port| match f.spec.vip {
            IpAddr::V4(vip) => Some(farm_key(vip, port, protocol)),
            IpAddr::V6(_) => None,
        })
}

/// A backend's value in the backend map.
fn backend_value(f: &Farm, b: &Backend) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..6].copy_from_slice(&b.mac.0);
    v[6] = if b.existing_ok {
        BACKEND_EXISTING_OK
    } else {
        0
    };
    v[8..12].copy_from_slice(&f.key.to_ne_bytes());
    v[12..16].copy_from_slice(&b.id.to_ne_bytes());
    v
}

/// The farm's Maglev table if the fast path can forward the farm, or why it stays with
/// user space.
fn fast_maglev(f: &Farm) -> Result<&Arc<Maglev>, &'static str> {
    let limited =
        f.source_rate.is_some() || f.farm_rate.is_some() || f.max_flows > 0 || f.tcp_strict;
    if f.spec.vip.is_ipv6() {
        Err("IPv6 (the program forwards IPv4)")
    } else if f.persist.is_some() {
        Err("persistence")
    } else if limited {
        Err("limits (evaluated by the workers)")
    } else if f.hash != FlowHash::FiveTuple {
        Err("scheduler other than maglev")
    } else if f.spec.ports.len() > MAX_FARM_PORTS {
        Err("port range wider than the fast path's")
    } else {
        f.maglev.as_ref().ok_or("no live backend")
    }
}

impl Maps {
    pub(crate) fn create(flow_entries: u32) -> io::Result<Maps> {
        let farms = bpf::map_create(
            bpf::BPF_MAP_TYPE_HASH,
            8,
            16,
            MAX_FARM_KEYS,
            "dsrlb_fp_farms",
        )?;
        let slots = bpf::map_create_flags(
            bpf::BPF_MAP_TYPE_ARRAY,
            4,
            8,
            SLOTS as u32,
            bpf::BPF_F_MMAPABLE,
            "dsrlb_fp_slots",
        )?;
        let slot_mem = MappedArray::map(&slots, SLOTS)?;
        let backends = bpf::map_create(
            bpf::BPF_MAP_TYPE_HASH,
            4,
            16,
            MAX_BACKENDS,
            "dsrlb_fp_bknds",
        )?;
        let flows = bpf::map_create(
            bpf::BPF_MAP_TYPE_LRU_HASH,
            16,
            8,
            flow_entries.max(1024),
            "dsrlb_fp_flows",
        )?;
        let cfg = bpf::map_create(bpf::BPF_MAP_TYPE_ARRAY, 4, 16, 1, "dsrlb_fp_cfg")?;
        let stats = bpf::map_create(
            bpf::BPF_MAP_TYPE_PERCPU_ARRAY,
            4,
            16,
            MAX_BACKENDS,
            "dsrlb_fp_stats",
        )?;
        let possible_cpus = possible_cpus()?;
        Ok(Maps {
            farms,
            slots,
            slot_mem,
            backends,
            flows,
            cfg,
            stats,
            written: HashMap::new(),
            synced: 0,
            fast_farms: 0,
            refused: BTreeSet::new(),
            free: FreeList::new(SLOTS),
            own_mac: MacAddr([0; 6]),
            deadline: 0,
            possible_cpus,
        })
    }

    pub(crate) fn prog_maps(&self) -> ProgMaps {
        ProgMaps {
            farms: self.farms.as_raw_fd(),
            slots: self.slots.as_raw_fd(),
            backends: self.backends.as_raw_fd(),
            flows: self.flows.as_raw_fd(),
            cfg: self.cfg.as_raw_fd(),
            stats: self.stats.as_raw_fd(),
        }
    }

    /// Writes `t` into the maps: backends first, then the new slot regions, then the farm
    /// keys (pointing at them), then removes what `t` no longer has. A frame in flight meets
    /// either the old farm or the new one, each with whole slots.
    ///
    /// When `t` was rebuilt from the table written last, only the farms its lineage names
    /// (built anew, dropped) are looked at: a change costs what it touches, whatever the
    /// number of farms (docs/design.md#scale). Otherwise every farm is compared with what
    /// was written for it, by `Arc`.
    pub(crate) fn sync(&mut self, t: &ForwardingTable) -> io::Result<Synced> {
        let own = t.own_mac();
        if own != self.own_mac {
            self.own_mac = own;
            self.write_cfg()?;
        }
        // Farms refused for want of slots try again only as many as the free room can take
        // (thousands of them retried on every sync would make each sync cost the number
        // of farms); none while no free range is big enough.
        let retry = self.retry_candidates();
        let from_parent = self.synced != 0 && t.lineage.parent == self.synced;
        self.synced = 0;
        let mut changed: Vec<&Arc<Farm>> = Vec::new();
        let mut old: HashMap<Arc<str>, Written> = HashMap::new();
        if from_parent {
            changed.extend(
                t.lineage
                    .fresh
                    .iter()
                    .filter_map(|&i| t.farms.get(i as usize)),
            );
            if !retry.is_empty() {
                let fresh: HashSet<&str> = changed.iter().map(|f| &*f.name).collect();
                let again: Vec<&Arc<Farm>> = retry
                    .iter()
                    .filter(|n| !fresh.contains(&***n))
                    .filter_map(|n| t.farm(n))
                    .collect();
                changed.extend(again);
            }
            for name in changed.iter().map(|f| &f.name).chain(&t.lineage.dropped) {
                if let Some((name, w)) = self.take(name) {
                    old.insert(name, w);
                }
            }
        } else {
            let mut known = 0usize;
            for f in &t.farms {
                match self.written.get(&*f.name) {
                    Some(w) => {
                        known += 1;
                        if !Arc::ptr_eq(&w.farm, f)
                            || (!retry.is_empty() && retry.contains(&*f.name))
                        {
                            changed.push(f);
                        }
                    }
                    None => changed.push(f),
                }
            }
            for f in &changed {
                if let Some((name, w)) = self.take(&f.name) {
                    old.insert(name, w);
                }
            }
            if known - old.len() < self.written.len() {
                let gone: Vec<Arc<str>> = self
                    .written
                    .keys()
                    .filter(|name| t.farm(name).is_none())
                    .cloned()
                    .collect();
                for name in gone {
                    if let Some((name, w)) = self.take(&name) {
                        old.insert(name, w);
                    }
                }
            }
        }
        let mut out = Synced::default();
        match self.write_changed(&changed, &mut old, &mut out) {
            Ok(new) => {
                for w in new {
                    self.put(w);
                }
                // Farms this sync refused see the room freed here at the next sync.
                for r in old.into_values().filter_map(|w| w.region) {
                    self.free.free(r.base, r.maglev.slots().len());
                }
                self.synced = t.lineage.id;
                out.fast = self.fast_farms;
                out.slow = self.written.len() - self.fast_farms;
                Ok(out)
            }
            Err(e) => {
                // What was written last stays the reference: the next sync compares every
                // farm with it again and retries (writes are idempotent). Regions placed
                // for the failed sync stay allocated until the maps are made again.
                for w in old.into_values() {
                    self.put(w);
                }
                Err(e)
            }
        }
    }

    /// Refused farms that may fit now, smallest first: none bigger than the largest free
    /// range, and no more than the free slots hold (a first-fit allocation that fails for
    /// one size fails for every larger one).
    fn retry_candidates(&self) -> HashSet<Arc<str>> {
        let largest = self.free.largest();
        let mut room = self.free.total();
        let mut out = HashSet::new();
        for (slots, name) in &self.refused {
            if *slots > largest || *slots > room {
                break;
            }
            room -= slots;
            out.insert(name.clone());
        }
        out
    }

    /// Takes a farm's entry out of `written`, keeping the tallies.
    fn take(&mut self, name: &str) -> Option<(Arc<str>, Written)> {
        let (name, w) = self.written.remove_entry(name)?;
        self.fast_farms -= usize::from(w.key_value.is_ok());
        if w.key_value == Err(SLOTS_FULL) {
            self.refused.remove(&(slots_of(&w.farm), name.clone()));
        }
        Some((name, w))
    }

    /// Puts a farm's entry into `written`, keeping the tallies.
    fn put(&mut self, w: Written) {
        let _replaced = self.take(&w.farm.name);
        self.fast_farms += usize::from(w.key_value.is_ok());
        if w.key_value == Err(SLOTS_FULL) {
            self.refused
                .insert((slots_of(&w.farm), w.farm.name.clone()));
        }
        self.written.insert(w.farm.name.clone(), w);
    }

    /// Writes the farms of `changed` over `old` (their previous entries and those of the
    /// farms that left) in the order [`Maps::sync`] promises. Regions the new entries keep
    /// are taken out of `old`; what is left there is no longer pointed to once this returns.
    fn write_changed(
        &mut self,
        changed: &[&Arc<Farm>],
        old: &mut HashMap<Arc<str>, Written>,
        out: &mut Synced,
    ) -> io::Result<Vec<Written>> {
        let mut new: Vec<Written> = Vec::with_capacity(changed.len());
        // Backends first: a farm key never points at slots naming an unknown id.
        for f in changed {
            let prev = old.get(&*f.name);
            let mut backends: Vec<(u32, [u8; 16])> = f
                .backends
                .iter()
                .map(|b| (b.id, backend_value(f, b)))
                .collect();
            backends.sort_unstable_by_key(|(id, _)| *id);
            for (id, v) in &backends {
                if prev.and_then(|p| p.backend(*id)) != Some(v) {
                    bpf::map_update(&self.backends, &id.to_ne_bytes(), v)?;
                    out.writes += 1;
                }
            }
            new.push(Written {
                farm: Arc::clone(f),
                backends: backends.into_boxed_slice(),
                region: None,
                key_value: Err("not placed yet"),
            });
        }
        // Then the slot regions: kept while the Maglev table and backend ids are the same.
        for w in &mut new {
            let f = Arc::clone(&w.farm);
            let m = match fast_maglev(&f) {
                Ok(m) => m,
                Err(why) => {
                    w.key_value = Err(why);
                    out.newly_slow.push((f.name.to_string(), why));
                    continue;
                }
            };
            let kept = old.get_mut(&*f.name).and_then(|p| {
                let same = p.region.as_ref().is_some_and(|r| {
                    Arc::ptr_eq(&r.maglev, m)
                        && r.ids.iter().copied().eq(f.backends.iter().map(|b| b.id))
                });
                if same { p.region.take() } else { None }
            });
            let region = match kept {
                Some(r) => r,
                None => {
                    let slots = m.slots();
                    let Some(base) = self.free.alloc(slots.len()) else {
                        w.key_value = Err(SLOTS_FULL);
                        out.newly_slow.push((f.name.to_string(), SLOTS_FULL));
                        continue;
                    };
                    let ids: Box<[u32]> = f.backends.iter().map(|b| b.id).collect();
                    let dst = &mut self.slot_mem.values_mut()[base..base + slots.len()];
                    for (d, &i) in dst.iter_mut().zip(slots) {
                        *d = ids
                            .get(usize::from(i))
                            .map_or(NO_BACKEND, |&id| u64::from(id));
                    }
                    out.writes += 1;
                    Region {
                        base,
                        maglev: m.clone(),
                        ids,
                    }
                }
            };
            let mut v = [0u8; 16];
            v[..4].copy_from_slice(&(region.base as u32).to_ne_bytes());
            v[4..8].copy_from_slice(&(m.slots().len() as u32).to_ne_bytes());
            v[8..12].copy_from_slice(&f.key.to_ne_bytes());
            w.key_value = Ok(v);
            w.region = Some(region);
        }
        // Then the farm keys, pointing at whole regions.
        let mut live_keys: HashSet<[u8; 8]> = HashSet::new();
        for w in &new {
            let Ok(v) = &w.key_value else { continue };
            let prev = old.get(&*w.farm.name);
            for k in farm_keys(&w.farm) {
                if prev.and_then(|p| p.key_value(&k)) != Some(v) {
                    bpf::map_update(&self.farms, &k, v)?;
                    out.writes += 1;
                }
                live_keys.insert(k);
            }
        }
        // Last, what the old entries had and the new ones do not (a key may have moved to
        // another farm that changed in the same sync).
        let live_ids: HashSet<u32> = new
            .iter()
            .flat_map(|w| w.backends.iter().map(|(id, _)| *id))
            .collect();
        for p in old.values() {
            if p.key_value.is_ok() {
                for k in farm_keys(&p.farm).filter(|k| !live_keys.contains(k)) {
                    bpf::map_delete(&self.farms, &k)?;
                    out.writes += 1;
                }
            }
            for (id, _) in p.backends.iter().filter(|(id, _)| !live_ids.contains(id)) {
                bpf::map_delete(&self.backends, &id.to_ne_bytes())?;
                out.writes += 1;
            }
        }
        Ok(new)
    }

    /// Owns until `deadline` on the kernel's monotonic clock (`bpf_ktime_get_ns`).
    pub(crate) fn set_deadline(&mut self, deadline: u64) -> io::Result<()> {
        if deadline == self.deadline {
            return Ok(());
        }
        self.deadline = deadline;
        self.write_cfg()
    }

    fn write_cfg(&self) -> io::Result<()> {
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&self.deadline.to_ne_bytes());
        v[8..14].copy_from_slice(&self.own_mac.0);
        bpf::map_update(&self.cfg, &0u32.to_ne_bytes(), &v)
    }

    /// What the program forwarded for registry id `id`, summed over CPUs.
    pub(crate) fn count(&self, id: u32) -> io::Result<KernelCount> {
        let mut buf = vec![0u8; 16 * self.possible_cpus];
        if !bpf::map_lookup(&self.stats, &id.to_ne_bytes(), &mut buf)? {
            return Ok(KernelCount::default());
        }
        let mut c = KernelCount::default();
        for cpu in buf.chunks_exact(16) {
            let word =
                |r: std::ops::Range<usize>| u64::from_ne_bytes(cpu[r].try_into().unwrap_or([0; 8]));
            c.packets += word(0..8);
            c.bytes += word(8..16);
        }
        Ok(c)
    }
}

/// CPUs the kernel may bring up: a per-CPU map's lookup fills one value for each.
fn possible_cpus() -> io::Result<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    parse_cpu_list(s.trim()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot read /sys/devices/system/cpu/possible: {s:?}"),
        )
    })
}

/// The highest CPU of a list such as `0-3,8-11`, plus one.
fn parse_cpu_list(s: &str) -> Option<usize> {
    s.split(',')
        .filter_map(|r| r.rsplit('-').next()?.parse::<usize>().ok())
        .max()
        .map(|m| m + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(12));
        assert_eq!(parse_cpu_list(""), None);
    }
}
