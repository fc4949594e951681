//! The fast path's maps and how a [`ForwardingTable`] is written into them.
//!
//! - `farms` (hash): (VIP, port, protocol) → the farm's Maglev slots (base, size) and tag,
//!   one key per port of each fast farm.
//! - `slots` (array, mapped into user space): Maglev slots as backend registry ids (8-byte
//!   values, the stride the kernel gives array elements anyway), in two
//!   halves: a publish writes the half no farm points to, then points the farms at it, so
//!   a frame never meets a half-written table.
//! - `backends` (hash): registry id → MAC, whether it may keep flows, farm tag, id.
//! - `flows` (LRU hash): 5-tuple → registry id, for flows past their SYN.
//! - `cfg` (array of one): the lease deadline on the kernel's monotonic clock, own MAC.
//! - `stats` (per-CPU array): packets and bytes per registry id.
//!
//! Which farms are fast: no persistence, no limits (docs/design.md#limits: the workers
//! keep their buckets and counts), the `maglev` scheduler, a live Maglev table, at most
//! [`MAX_FARM_PORTS`] ports, and room left in the slot half. The others stay with user space
//! (their frames pass the program), which handles every farm the same as before.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use xxhash_rust::xxh3::xxh3_64;

use crate::ebpf::sys::{self as bpf, MappedArray};
use crate::packet::MacAddr;
use crate::table::{FlowHash, ForwardingTable};

/// Flag bit in a backend value: may keep the flows it has.
pub(crate) const BACKEND_EXISTING_OK: u8 = 1;
/// Farms with more ports than this stay in user space (one map key per port).
pub(crate) const MAX_FARM_PORTS: usize = 1024;
/// Keys of the farm map.
const MAX_FARM_KEYS: u32 = 65_536;
/// Slots per half of the slot array (8 bytes each: 16 MiB in all): 16 farms at the default
/// Maglev size (65,537), more at smaller sizes.
pub(crate) const HALF_SLOTS: usize = 1 << 20;
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
    /// Farm keys written by the last sync.
    farm_keys: HashSet<[u8; 8]>,
    /// Backend ids written by the last sync.
    backend_ids: HashSet<u32>,
    /// Which half of `slots` the farms point to now.
    half: usize,
    own_mac: MacAddr,
    /// The lease deadline last written (kernel clock), to skip needless writes.
    deadline: u64,
    possible_cpus: usize,
}

/// What a sync put on the fast path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Synced {
    /// Farms forwarded in the kernel.
    pub(crate) fast: Vec<String>,
    /// Farms left to user space, each with why.
    pub(crate) slow: Vec<(String, &'static str)>,
}

fn farm_key(vip: Ipv4Addr, port: u16, protocol: u8) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&vip.octets());
    k[4..6].copy_from_slice(&port.to_be_bytes());
    k[6] = protocol;
    k
}

/// A farm's tag: stable across tables for one farm name (flows are checked against it).
fn farm_tag(name: &str) -> u32 {
    xxh3_64(name.as_bytes()) as u32
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
            (2 * HALF_SLOTS) as u32,
            bpf::BPF_F_MMAPABLE,
            "dsrlb_fp_slots",
        )?;
        let slot_mem = MappedArray::map(&slots, 2 * HALF_SLOTS)?;
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
            farm_keys: HashSet::new(),
            backend_ids: HashSet::new(),
            half: 1,
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

    /// Writes `t` into the maps: backends first, then the free half of the slots, then the
    /// farm keys (pointing at that half), then removes what `t` no longer has. A frame in
    /// flight meets either the old farm or the new one, each with whole slots.
    pub(crate) fn sync(&mut self, t: &ForwardingTable) -> io::Result<Synced> {
        let mut out = Synced::default();
        let own = t.own_mac();
        if own != self.own_mac {
            self.own_mac = own;
            self.write_cfg()?;
        }
        let mut ids = HashSet::with_capacity(t.backends.len());
        for b in &t.backends {
            let Some(farm) = t.farms.get(b.farm as usize) else {
                continue;
            };
            let mut v = [0u8; 16];
            v[..6].copy_from_slice(&b.mac.0);
            v[6] = if b.existing_ok {
                BACKEND_EXISTING_OK
            } else {
                0
            };
            v[8..12].copy_from_slice(&farm_tag(&farm.name).to_ne_bytes());
            v[12..16].copy_from_slice(&b.id.to_ne_bytes());
            bpf::map_update(&self.backends, &b.id.to_ne_bytes(), &v)?;
            ids.insert(b.id);
        }

        let half = 1 - self.half;
        let base0 = half * HALF_SLOTS;
        let mut used = 0usize;
        // Farm index → (base, size) for the fast farms.
        let mut placed: HashMap<u32, (u32, u32)> = HashMap::new();
        for (fi, f) in t.farms.iter().enumerate() {
            let limited =
                f.source_rate.is_some() || f.farm_rate.is_some() || f.max_flows > 0 || f.tcp_strict;
            let why = if f.persist.is_some() {
                Some("persistence")
            } else if limited {
                Some("limits (evaluated by the workers)")
            } else if f.hash != FlowHash::FiveTuple {
                Some("scheduler other than maglev")
            } else if f.ports.len() > MAX_FARM_PORTS {
                Some("port range wider than the fast path's")
            } else {
                None
            };
            if let Some(why) = why {
                out.slow.push((f.name.clone(), why));
                continue;
            }
            let Some(m) = &f.maglev else {
                out.slow.push((f.name.clone(), "no live backend"));
                continue;
            };
            let slots = m.slots();
            if used + slots.len() > HALF_SLOTS {
                out.slow.push((f.name.clone(), "fast path slots full"));
                continue;
            }
            let dst = &mut self.slot_mem.values_mut()[base0 + used..base0 + used + slots.len()];
            for (d, &i) in dst.iter_mut().zip(slots) {
                *d = t
                    .backends
                    .get(f.first_backend as usize + usize::from(i))
                    .map_or(NO_BACKEND, |b| u64::from(b.id));
            }
            placed.insert(fi as u32, ((base0 + used) as u32, slots.len() as u32));
            used += slots.len();
            out.fast.push(f.name.clone());
        }

        let mut keys = HashSet::new();
        for (vip, entry) in t.vip_entries() {
            for &fi in &entry.farms {
                let Some(&(base, size)) = placed.get(&fi) else {
                    continue;
                };
                let Some(f) = t.farms.get(fi as usize) else {
                    continue;
                };
                let mut v = [0u8; 16];
                v[..4].copy_from_slice(&base.to_ne_bytes());
                v[4..8].copy_from_slice(&size.to_ne_bytes());
                v[8..12].copy_from_slice(&farm_tag(&f.name).to_ne_bytes());
                for port in f.ports.clone() {
                    let k = farm_key(vip, port, f.protocol.number());
                    bpf::map_update(&self.farms, &k, &v)?;
                    keys.insert(k);
                }
            }
        }
        for k in self.farm_keys.difference(&keys) {
            bpf::map_delete(&self.farms, k)?;
        }
        for id in self.backend_ids.difference(&ids) {
            bpf::map_delete(&self.backends, &id.to_ne_bytes())?;
        }
        self.farm_keys = keys;
        self.backend_ids = ids;
        self.half = half;
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
