//! Datapath counters: drops per reason, new flows per farm, packets and bytes per backend.
//!
//! Every counter is split into one cache-line padded slot per worker so that workers never
//! write to a line another worker writes to; readers sum the slots with `Relaxed` loads and
//! never stop the workers. Farm and backend counters live in a [`CounterRegistry`] keyed by
//! names, so a rebuilt forwarding table picks up the same counters (and the same stable
//! backend ids) as the table it replaces.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::flow::FlowCounts;

/// Why a frame was not forwarded. The discriminant indexes the per-worker counter block.
#[repr(usize)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DropReason {
    /// Shorter than an Ethernet header (or than the tags it announces).
    TooShort,
    /// Neither ARP, IPv4 nor IPv6 after the VLAN tags.
    UnknownEthertype,
    /// More than two VLAN tags.
    VlanTooDeep,
    /// ARP that is not Ethernet/IPv4 or is cut short.
    ArpMalformed,
    /// ARP request for an address that is not one of our VIPs.
    ArpNotForVip,
    /// ARP reply, gratuitous announcement or other opcode: not ours to answer.
    ArpNotRequest,
    /// Bad IPv4 version, IHL or total length.
    Ipv4Malformed,
    /// The frame ends before the IPv4 header or the datagram it announces.
    Ipv4Truncated,
    /// First fragment or whole datagram too short for its TCP/UDP header.
    L4Truncated,
    /// To a VIP, but no farm serves this protocol and port.
    NoFarm,
    /// IPv4 to an address that is not a VIP.
    NotVip,
    /// For a VIP while this node does not own the VIPs.
    NotOwner,
    /// The farm has no live backend.
    NoBackend,
    /// A fragment for a VIP where several farms share the VIP and protocol, so the port
    /// (absent from non-first fragments) would be needed to pick one.
    FragmentAmbiguous,
    /// To a VIP with a protocol other than TCP or UDP.
    UnsupportedProtocol,
    /// Larger than the ring slot (counted by the I/O layer).
    Truncated,
    /// Transmission failed (counted by the I/O layer).
    TxError,
    /// Larger than any legal frame and not a GSO frame (counted by the I/O layer).
    Oversize,
    /// The kernel found a worker's receive ring full (read from PACKET_STATISTICS).
    RingFull,
    /// A new flow from a source above its farm's `new_rate_limit`.
    RateLimited,
    /// A new flow above its farm's `new_rate_limit_farm`.
    FarmRateLimited,
    /// A new flow whose farm's live backends are all at `max_flows`.
    BackendFull,
    /// A TCP packet other than a SYN of a flow this node does not know, on a `tcp_strict`
    /// farm after the takeover grace.
    TcpStrict,
    /// Bad IPv6 version, a zero payload length (jumbogram), a hop-by-hop header not first,
    /// or an extension header running past the payload.
    Ipv6Malformed,
    /// The frame ends before the IPv6 header or the payload it announces.
    Ipv6Truncated,
    /// An extension-header chain longer than the parser walks (`MAX_IPV6_EXT`), or a
    /// routing header with segments left (the VIP is only a waypoint).
    Ipv6ExtChain,
    /// ICMPv6 Neighbor Solicitation that fails RFC 4861's checks (hop limit 255, checksum,
    /// length, options).
    NdpMalformed,
    /// Neighbor Solicitation for an address that is not one of our VIPs.
    NdpNotForVip,
    /// ICMPv6 other than a Neighbor Solicitation reaching a worker (advertisements, router
    /// messages, echo to a VIP): not ours to answer.
    NdpNotSolicitation,
}

impl DropReason {
    /// Every reason, in discriminant order.
    pub const ALL: &'static [DropReason] = &[
        DropReason::TooShort,
        DropReason::UnknownEthertype,
        DropReason::VlanTooDeep,
        DropReason::ArpMalformed,
        DropReason::ArpNotForVip,
        DropReason::ArpNotRequest,
        DropReason::Ipv4Malformed,
        DropReason::Ipv4Truncated,
        DropReason::L4Truncated,
        DropReason::NoFarm,
        DropReason::NotVip,
        DropReason::NotOwner,
        DropReason::NoBackend,
        DropReason::FragmentAmbiguous,
        DropReason::UnsupportedProtocol,
        DropReason::Truncated,
        DropReason::TxError,
        DropReason::Oversize,
        DropReason::RingFull,
        DropReason::RateLimited,
        DropReason::FarmRateLimited,
        DropReason::BackendFull,
        DropReason::TcpStrict,
        DropReason::Ipv6Malformed,
        DropReason::Ipv6Truncated,
        DropReason::Ipv6ExtChain,
        DropReason::NdpMalformed,
        DropReason::NdpNotForVip,
        DropReason::NdpNotSolicitation,
    ];

    /// Number of reasons: the size of a worker's counter block.
    pub const COUNT: usize = Self::ALL.len();

    /// The snake_case name used as the Prometheus `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::UnknownEthertype => "unknown_ethertype",
            DropReason::VlanTooDeep => "vlan_too_deep",
            DropReason::ArpMalformed => "arp_malformed",
            DropReason::ArpNotForVip => "arp_not_for_vip",
            DropReason::ArpNotRequest => "arp_not_request",
            DropReason::Ipv4Malformed => "ipv4_malformed",
            DropReason::Ipv4Truncated => "ipv4_truncated",
            DropReason::L4Truncated => "l4_truncated",
            DropReason::NoFarm => "no_farm",
            DropReason::NotVip => "not_vip",
            DropReason::NotOwner => "not_owner",
            DropReason::NoBackend => "no_backend",
            DropReason::FragmentAmbiguous => "fragment_ambiguous",
            DropReason::UnsupportedProtocol => "unsupported_protocol",
            DropReason::Truncated => "truncated",
            DropReason::TxError => "tx_error",
            DropReason::Oversize => "oversize",
            DropReason::RingFull => "ring_full",
            DropReason::RateLimited => "rate_limited",
            DropReason::FarmRateLimited => "farm_rate_limited",
            DropReason::BackendFull => "backend_full",
            DropReason::TcpStrict => "tcp_strict",
            DropReason::Ipv6Malformed => "ipv6_malformed",
            DropReason::Ipv6Truncated => "ipv6_truncated",
            DropReason::Ipv6ExtChain => "ipv6_ext_chain",
            DropReason::NdpMalformed => "ndp_malformed",
            DropReason::NdpNotForVip => "ndp_not_for_vip",
            DropReason::NdpNotSolicitation => "ndp_not_solicitation",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value on its own cache line (128 bytes: adjacent-line prefetchers pair lines).
#[repr(align(128))]
#[derive(Default, Debug)]
struct Padded<T>(T);

/// Allocates one padded slot per worker; never zero slots, so `slot()` always has a target.
fn slots<T: Default>(workers: usize) -> Box<[Padded<T>]> {
    (0..workers.max(1)).map(|_| Padded::default()).collect()
}

/// Picks a worker's slot. An out-of-range worker index folds back instead of panicking:
/// counting into another worker's slot is still correct because every add is atomic.
#[inline]
fn slot<T>(slots: &[Padded<T>], worker: usize) -> &T {
    // The common case skips the division: it costs more than the rest of the count.
    let i = if worker < slots.len() {
        worker
    } else {
        worker % slots.len()
    };
    &slots[i].0
}

/// Drop counters: one padded block of one counter per reason per worker.
#[derive(Debug)]
pub struct DropCounters {
    workers: Box<[Padded<[AtomicU64; DropReason::COUNT]>]>,
}

impl DropCounters {
    /// Counters for `workers` workers (at least one slot).
    pub fn new(workers: usize) -> Self {
        DropCounters {
            workers: slots(workers),
        }
    }

    /// Counts one drop for `worker`.
    #[inline]
    pub fn count(&self, worker: usize, r: DropReason) {
        slot(&self.workers, worker)[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` drops at once (a kernel statistic read per batch, not per frame).
    #[inline]
    pub fn add(&self, worker: usize, r: DropReason, n: u64) {
        slot(&self.workers, worker)[r as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Total over all workers.
    pub fn get(&self, r: DropReason) -> u64 {
        self.workers
            .iter()
            .map(|w| w.0[r as usize].load(Ordering::Relaxed))
            .sum()
    }

    /// Every reason with its total, in [`DropReason::ALL`] order.
    pub fn snapshot(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL.iter().map(|&r| (r, self.get(r))).collect()
    }
}

/// The flow tables' numbers ([`crate::flow::FlowCounts`]), one padded slot per worker. A
/// worker stores its own table's totals once per batch (its table is private, so plain
/// stores suffice); readers sum the slots.
#[derive(Debug)]
pub struct FlowCounters {
    workers: Box<[Padded<[AtomicU64; 5]>]>,
}

impl FlowCounters {
    /// Counters for `workers` workers (at least one slot).
    pub fn new(workers: usize) -> Self {
        FlowCounters {
            workers: slots(workers),
        }
    }

    /// Publishes `worker`'s current totals.
    #[inline]
    pub fn store(&self, worker: usize, c: &FlowCounts) {
        let s = slot(&self.workers, worker);
        for (cell, v) in s.iter().zip([
            c.entries,
            c.evicted_half_open,
            c.evicted_established,
            c.full,
            c.capacity,
        ]) {
            cell.store(v, Ordering::Relaxed);
        }
    }

    /// The sum over all workers.
    pub fn total(&self) -> FlowCounts {
        let sum = |i: usize| -> u64 {
            self.workers
                .iter()
                .map(|w| w.0[i].load(Ordering::Relaxed))
                .sum()
        };
        FlowCounts {
            entries: sum(0),
            evicted_half_open: sum(1),
            evicted_established: sum(2),
            full: sum(3),
            capacity: sum(4),
        }
    }
}

/// How full the workers' receive rings are: each worker's slot count and the frames that
/// waited in its ring when it last came to take a batch (0 when it went idle). A worker
/// writes only its own slot; readers sum.
#[derive(Debug)]
pub struct RingFill {
    workers: Box<[Padded<[AtomicU64; 2]>]>,
}

/// One worker's entry of [`RingFill`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingFillEntry {
    /// Receive slots of the worker's data ring(s).
    pub slots: u64,
    /// Frames waiting in them when the worker last came to take a batch.
    pub backlog: u64,
}

impl RingFill {
    /// Slots for `workers` workers (at least one).
    pub fn new(workers: usize) -> Self {
        RingFill {
            workers: slots(workers),
        }
    }

    /// Records `worker`'s ring size (once, when its ring is set up).
    pub fn set_slots(&self, worker: usize, n: u64) {
        slot(&self.workers, worker)[0].store(n, Ordering::Relaxed);
    }

    /// Records the frames waiting in `worker`'s ring now.
    #[inline]
    pub fn set_backlog(&self, worker: usize, n: u64) {
        slot(&self.workers, worker)[1].store(n, Ordering::Relaxed);
    }

    /// Each worker's entry, in worker order.
    pub fn per_worker(&self) -> Vec<RingFillEntry> {
        self.workers
            .iter()
            .map(|w| RingFillEntry {
                slots: w.0[0].load(Ordering::Relaxed),
                backlog: w.0[1].load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// One worker's slot of a farm: its new-flow count and the farm state that worker keeps
/// for itself (written by that worker only, so plain loads and stores suffice).
#[derive(Default, Debug)]
struct FarmSlot {
    flows_new: AtomicU64,
    /// The worker's bucket of `new_rate_limit_farm` (a GCRA arrival time, [`crate::limit`]).
    rate_tat: AtomicU64,
    /// The worker's position in the `rr`/`wrr` rotation.
    rotation: AtomicU64,
}

/// New flows of one farm, per worker, and each worker's private farm state. Kept in the
/// registry, so a rebuilt table finds the buckets and rotations where the last one left
/// them.
#[derive(Debug)]
pub struct FarmCounters {
    slots: Box<[Padded<FarmSlot>]>,
}

impl FarmCounters {
    fn new(workers: usize) -> Self {
        FarmCounters {
            slots: slots(workers),
        }
    }

    /// Counts one new flow (a flow-table miss that chose a backend).
    #[inline]
    pub fn flow_new(&self, worker: usize) {
        slot(&self.slots, worker)
            .flows_new
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Total new flows over all workers.
    pub fn flows_new(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.0.flows_new.load(Ordering::Relaxed))
            .sum()
    }

    /// `worker`'s farm rate bucket.
    #[inline]
    pub(crate) fn rate_tat(&self, worker: usize) -> &AtomicU64 {
        &slot(&self.slots, worker).rate_tat
    }

    /// `worker`'s next position in the rotation, advancing it.
    #[inline]
    pub(crate) fn rotate(&self, worker: usize) -> u64 {
        slot(&self.slots, worker)
            .rotation
            .fetch_add(1, Ordering::Relaxed)
    }
}

#[derive(Default, Debug)]
struct PacketsBytes {
    packets: AtomicU64,
    bytes: AtomicU64,
    /// Established flows of this backend in the worker's flow table.
    flows: AtomicU64,
}

/// Forwarded packets and bytes of one backend, per worker, plus what the kernel fast path
/// forwarded (its per-CPU totals as last read by the control plane).
#[derive(Debug)]
pub struct BackendCounters {
    slots: Box<[Padded<PacketsBytes>]>,
    kernel: PacketsBytes,
}

impl BackendCounters {
    fn new(workers: usize) -> Self {
        BackendCounters {
            slots: slots(workers),
            kernel: PacketsBytes::default(),
        }
    }

    /// Records the fast path's totals for this backend (they replace the last ones).
    pub(crate) fn set_kernel(&self, packets: u64, bytes: u64) {
        self.kernel.packets.store(packets, Ordering::Relaxed);
        self.kernel.bytes.store(bytes, Ordering::Relaxed);
    }

    /// Counts one forwarded frame of `bytes` bytes.
    #[inline]
    pub fn forwarded(&self, worker: usize, bytes: usize) {
        let s = slot(&self.slots, worker);
        s.packets.fetch_add(1, Ordering::Relaxed);
        s.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Total packets over all workers and the fast path.
    pub fn packets(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.0.packets.load(Ordering::Relaxed))
            .sum::<u64>()
            + self.kernel.packets.load(Ordering::Relaxed)
    }

    /// One more (`up`) or one fewer established flow of this backend in `worker`'s flow
    /// table. Every entry a worker counts in it counts out of the same slot, so the sum
    /// never goes below zero.
    #[inline]
    pub(crate) fn flow_entry(&self, worker: usize, up: bool) {
        let f = &slot(&self.slots, worker).flows;
        if up {
            f.fetch_add(1, Ordering::Relaxed);
        } else {
            f.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Established flows of this backend in all workers' flow tables (each worker's count
    /// as of its last new or ended flow).
    #[inline]
    pub fn flows(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.0.flows.load(Ordering::Relaxed))
            .fold(0u64, u64::wrapping_add)
    }

    /// Total bytes (whole frames, Ethernet header included) over all workers and the fast
    /// path.
    pub fn bytes(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.0.bytes.load(Ordering::Relaxed))
            .sum::<u64>()
            + self.kernel.bytes.load(Ordering::Relaxed)
    }

    /// What the fast path forwarded, as last read.
    pub fn kernel_packets(&self) -> u64 {
        self.kernel.packets.load(Ordering::Relaxed)
    }
}

/// A backend's counters and the id that names it in flow tables.
#[derive(Clone, Debug)]
pub struct BackendHandle {
    /// Stable for the life of the registry for one (farm name, backend name).
    pub id: u32,
    /// Shared with every table built for this backend.
    pub counters: Arc<BackendCounters>,
}

#[derive(Debug)]
struct FarmEntry {
    counters: Arc<FarmCounters>,
    backends: BTreeMap<String, BackendHandle>,
}

#[derive(Debug, Default)]
struct RegistryInner {
    farms: BTreeMap<String, FarmEntry>,
    next_id: u32,
}

/// Hands out farm and backend counters by name, so they outlive any one table.
///
/// Only the control plane touches the lock (when building a table or reading stats);
/// workers reach the counters through the `Arc`s stored in the table.
#[derive(Debug)]
pub struct CounterRegistry {
    workers: usize,
    inner: Mutex<RegistryInner>,
}

/// Counters of one farm and its backends, summed over workers.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FarmStats {
    pub farm: String,
    pub flows_new: u64,
    pub backends: Vec<BackendStats>,
}

/// Counters of one backend, summed over workers.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BackendStats {
    pub backend: String,
    pub packets: u64,
    pub bytes: u64,
    /// Established flows in the workers' flow tables now (a gauge).
    pub flows: u64,
}

impl CounterRegistry {
    /// A registry whose counters have one slot per worker.
    pub fn new(workers: usize) -> Self {
        CounterRegistry {
            workers: workers.max(1),
            inner: Mutex::new(RegistryInner::default()),
        }
    }

    /// A panic elsewhere while holding the lock leaves maps that are still consistent
    /// (every mutation is a single insert), so a poisoned lock is simply taken over.
    fn lock(&self) -> MutexGuard<'_, RegistryInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters of `farm`, created on first use.
    pub fn farm(&self, farm: &str) -> Arc<FarmCounters> {
        let workers = self.workers;
        let mut inner = self.lock();
        inner
            .farms
            .entry(farm.to_owned())
            .or_insert_with(|| FarmEntry {
                counters: Arc::new(FarmCounters::new(workers)),
                backends: BTreeMap::new(),
            })
            .counters
            .clone()
    }

    /// The counters and stable id of `backend` in `farm`, created on first use.
    /// `None` once 2^32 - 1 distinct pairs have been seen (ids are never reused).
    pub fn backend(&self, farm: &str, backend: &str) -> Option<BackendHandle> {
        let workers = self.workers;
        let mut guard = self.lock();
        let inner = &mut *guard;
        let entry = inner
            .farms
            .entry(farm.to_owned())
            .or_insert_with(|| FarmEntry {
                counters: Arc::new(FarmCounters::new(workers)),
                backends: BTreeMap::new(),
            });
        if let Some(h) = entry.backends.get(backend) {
            return Some(h.clone());
        }
        if inner.next_id == u32::MAX {
            return None;
        }
        let handle = BackendHandle {
            id: inner.next_id,
            counters: Arc::new(BackendCounters::new(workers)),
        };
        inner.next_id += 1;
        entry.backends.insert(backend.to_owned(), handle.clone());
        Some(handle)
    }

    /// Workers the counters have slots for.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// One more than the largest id handed out so far: the size of an id-indexed array.
    pub fn id_bound(&self) -> u32 {
        self.lock().next_id
    }

    /// Forgets farms and backends for which `keep(farm, backend)` is false (`backend` is
    /// `None` for the farm itself). A forgotten pair that comes back gets a fresh id and
    /// counters starting at zero.
    pub fn retain(&self, mut keep: impl FnMut(&str, Option<&str>) -> bool) {
        let mut inner = self.lock();
        inner.farms.retain(|farm, entry| {
            entry.backends.retain(|b, _| keep(farm, Some(b)));
            keep(farm, None)
        });
    }

    /// Every farm with its backends and their totals, sorted by name.
    pub fn snapshot(&self) -> Vec<FarmStats> {
        let inner = self.lock();
        inner
            .farms
            .iter()
            .map(|(farm, entry)| FarmStats {
                farm: farm.clone(),
                flows_new: entry.counters.flows_new(),
                backends: entry
                    .backends
                    .iter()
                    .map(|(name, h)| BackendStats {
                        backend: name.clone(),
                        packets: h.counters.packets(),
                        bytes: h.counters.bytes(),
                        flows: h.counters.flows(),
                    })
                    .collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_indexed_by_discriminant_and_named_uniquely() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        assert!(names.iter().all(|n| {
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        }));
    }

    #[test]
    fn drops_sum_over_workers_and_fold_bad_indexes() {
        let d = DropCounters::new(3);
        d.count(0, DropReason::NotVip);
        d.count(2, DropReason::NotVip);
        d.count(7, DropReason::NotVip);
        d.count(1, DropReason::TooShort);
        assert_eq!(d.get(DropReason::NotVip), 3);
        assert_eq!(d.get(DropReason::TooShort), 1);
        assert_eq!(d.get(DropReason::NoFarm), 0);
        let zero = DropCounters::new(0);
        zero.count(5, DropReason::Oversize);
        assert_eq!(zero.get(DropReason::Oversize), 1);
    }

    #[test]
    fn registry_keeps_ids_and_counters_by_name() {
        let r = CounterRegistry::new(2);
        let a = r.backend("web", "a").unwrap();
        let b = r.backend("web", "b").unwrap();
        let a2 = r.backend("dns", "a").unwrap();
        assert_ne!(a.id, b.id);
        assert_ne!(a.id, a2.id);
        a.counters.forwarded(0, 100);
        a.counters.forwarded(1, 50);
        r.farm("web").flow_new(1);
        let again = r.backend("web", "a").unwrap();
        assert_eq!(again.id, a.id);
        assert!(Arc::ptr_eq(&again.counters, &a.counters));
        assert_eq!(r.id_bound(), 3);

        let snap = r.snapshot();
        let web = snap.iter().find(|f| f.farm == "web").unwrap();
        assert_eq!(web.flows_new, 1);
        assert_eq!(
            web.backends[0],
            BackendStats {
                backend: "a".into(),
                packets: 2,
                bytes: 150,
                flows: 0,
            }
        );

        r.retain(|farm, _| farm == "web");
        assert!(r.snapshot().iter().all(|f| f.farm == "web"));
        let fresh = r.backend("dns", "a").unwrap();
        assert_ne!(fresh.id, a2.id);
    }
}
