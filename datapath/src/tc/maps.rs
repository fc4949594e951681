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

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use crate::ebpf::sys::{self as bpf, MappedArray};
use crate::maglev::Maglev;
use crate::packet::MacAddr;
use crate::table::{FlowHash, ForwardingTable};

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
    /// Farm keys and their values as written by the last sync.
    farm_keys: HashMap<[u8; 8], [u8; 16]>,
    /// Backend ids and their values as written by the last sync.
    backend_ids: HashMap<u32, [u8; 16]>,
    /// The slot region of each fast farm (by farm name).
    regions: HashMap<Arc<str>, Region>,
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
    /// Farms left to user space, each with why.
    pub(crate) slow: Vec<(String, &'static str)>,
    /// Map entries and slot regions written or deleted.
    pub(crate) writes: usize,
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
struct FreeList(BTreeMap<usize, usize>);

impl FreeList {
    fn new(len: usize) -> FreeList {
        FreeList(BTreeMap::from([(0, len)]))
    }

    fn alloc(&mut self, len: usize) -> Option<usize> {
        let (&base, &have) = self.0.iter().find(|(_, l)| **l >= len)?;
        self.0.remove(&base);
        if have > len {
            self.0.insert(base + len, have - len);
        }
        Some(base)
    }

    fn free(&mut self, base: usize, len: usize) {
        let (mut base, mut len) = (base, len);
        if let Some((&b, &l)) = self.0.range(..base).next_back()
            && b + l == base
        {
            self.0.remove(&b);
            base = b;
            len += l;
        }
        if let Some(l) = self.0.remove(&(base + len)) {
            len += l;
        }
        self.0.insert(base, len);
    }
}

fn farm_key(vip: Ipv4Addr, port: u16, protocol: u8) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&vip.octets());
    k[4..6].copy_from_slice(&port.to_be_bytes());
    k[6] = protocol;
    k
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
            farm_keys: HashMap::new(),
            backend_ids: HashMap::new(),
            regions: HashMap::new(),
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
    /// either the old farm or the new one, each with whole slots. Only what changed since
    /// the last sync is written.
    pub(crate) fn sync(&mut self, t: &ForwardingTable) -> io::Result<Synced> {
        let mut out = Synced::default();
        let own = t.own_mac();
        if own != self.own_mac {
            self.own_mac = own;
            self.write_cfg()?;
        }
        let mut ids = HashMap::with_capacity(self.backend_ids.len());
        for (fi, b) in t.backends() {
            let Some(farm) = t.farms.get(fi as usize) else {
                continue;
            };
            let mut v = [0u8; 16];
            v[..6].copy_from_slice(&b.mac.0);
            v[6] = if b.existing_ok {
                BACKEND_EXISTING_OK
            } else {
                0
            };
            v[8..12].copy_from_slice(&farm.key.to_ne_bytes());
            v[12..16].copy_from_slice(&b.id.to_ne_bytes());
            if self.backend_ids.get(&b.id) != Some(&v) {
                bpf::map_update(&self.backends, &b.id.to_ne_bytes(), &v)?;
                out.writes += 1;
            }
            ids.insert(b.id, v);
        }

        // Farm index → (base, size) for the fast farms; the regions they leave behind.
        let mut placed: HashMap<u32, (u32, u32)> = HashMap::new();
        let mut regions: HashMap<Arc<str>, Region> = HashMap::with_capacity(self.regions.len());
        for (fi, f) in t.farms.iter().enumerate() {
            let limited =
                f.source_rate.is_some() || f.farm_rate.is_some() || f.max_flows > 0 || f.tcp_strict;
            let why = if f.persist.is_some() {
                Some("persistence")
            } else if limited {
                Some("limits (evaluated by the workers)")
            } else if f.hash != FlowHash::FiveTuple {
                Some("scheduler other than maglev")
            } else if f.spec.ports.len() > MAX_FARM_PORTS {
                Some("port range wider than the fast path's")
            } else {
                None
            };
            if let Some(why) = why {
                out.slow.push((f.name.to_string(), why));
                continue;
            }
            let Some(m) = &f.maglev else {
                out.slow.push((f.name.to_string(), "no live backend"));
                continue;
            };
            // Compared in place: most farms keep their region, and a sync allocates nothing
            // for them.
            let kept = self.regions.remove(&*f.name).and_then(|r| {
                let same = Arc::ptr_eq(&r.maglev, m)
                    && r.ids.iter().copied().eq(f.backends.iter().map(|b| b.id));
                same.then_some(r)
            });
            let region = match kept {
                Some(r) => r,
                None => {
                    let slots = m.slots();
                    let Some(base) = self.free.alloc(slots.len()) else {
                        out.slow.push((f.name.to_string(), "fast path slots full"));
                        continue;
                    };
                    let farm_ids: Box<[u32]> = f.backends.iter().map(|b| b.id).collect();
                    let dst = &mut self.slot_mem.values_mut()[base..base + slots.len()];
                    for (d, &i) in dst.iter_mut().zip(slots) {
                        *d = farm_ids
                            .get(usize::from(i))
                            .map_or(NO_BACKEND, |&id| u64::from(id));
                    }
                    out.writes += 1;
                    Region {
                        base,
                        maglev: m.clone(),
                        ids: farm_ids,
                    }
                }
            };
            placed.insert(fi as u32, (region.base as u32, m.slots().len() as u32));
            regions.insert(f.name.clone(), region);
            out.fast += 1;
        }
        // What is left in `self.regions` (farms that changed or left) is still pointed to
        // until the keys below are rewritten; it is freed after. If a write fails half way
        // those regions stay allocated until the maps are made again (the failure is
        // logged as an error).
        let stale = std::mem::replace(&mut self.regions, regions);

        let mut keys = HashMap::with_capacity(self.farm_keys.len());
        for (vip, entry) in t.vip_entries() {
            for fi in entry.farms() {
                let Some(&(base, size)) = placed.get(&fi) else {
                    continue;
                };
                let Some(f) = t.farms.get(fi as usize) else {
                    continue;
                };
                let mut v = [0u8; 16];
                v[..4].copy_from_slice(&base.to_ne_bytes());
                v[4..8].copy_from_slice(&size.to_ne_bytes());
                v[8..12].copy_from_slice(&f.key.to_ne_bytes());
                for port in f.spec.ports.clone() {
                    let k = farm_key(vip, port, f.spec.protocol.number());
                    if self.farm_keys.get(&k) != Some(&v) {
                        bpf::map_update(&self.farms, &k, &v)?;
                        out.writes += 1;
                    }
                    keys.insert(k, v);
                }
            }
        }
        for k in self.farm_keys.keys().filter(|k| !keys.contains_key(*k)) {
            bpf::map_delete(&self.farms, k)?;
            out.writes += 1;
        }
        for id in self.backend_ids.keys().filter(|id| !ids.contains_key(*id)) {
            bpf::map_delete(&self.backends, &id.to_ne_bytes())?;
            out.writes += 1;
        }
        self.farm_keys = keys;
        self.backend_ids = ids;
        for r in stale.into_values() {
            self.free.free(r.base, r.maglev.slots().len());
        }
        Ok(out)
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
