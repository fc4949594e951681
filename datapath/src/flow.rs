//! Flow keys, their deterministic hash, and the per-worker flow table.
//!
//! The table is a set-associative cache: `capacity / WAYS` buckets of [`WAYS`] entries,
//! allocated once. A lookup touches one bucket; entries older than the idle timeout count
//! as misses. An insert replaces the same key, else a free or idle entry, else evicts by
//! class, a two-segment LRU (the SLRU idea) inside the bucket:
//! - a **half-open** entry (made by a TCP SYN, or a flow's first UDP datagram) is evicted
//!   first, the one seen longest ago;
//! - an **established** entry (the flow sent more than that: the client can receive) is
//!   evicted only to make room for another established flow, never for a half-open one.
//!   A half-open flow that finds its bucket full of established flows is forwarded without
//!   an entry (counted as `full`); its next packet, established, gets one.
//!
//! So a spoofed-source SYN flood churns only half-open entries: it can never push out an
//! idle established connection, whose backend might no longer be Maglev's pick (drained).
//! All of it is O(WAYS) work with no allocation; idle entries are freed by a sweep the
//! worker runs a few buckets at a time, which keeps [`FlowCounts::entries`] honest.

use std::fmt::Debug;
#[cfg(test)]
use std::net::{Ipv4Addr, Ipv6Addr};

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seed of the flow hash: part of the cross-node contract (every node must pick the same
/// Maglev slot for a flow), so it never changes.
pub(crate) const FLOW_SEED: u64 = 0x6473_726c_625f_666c; // "dsrlb_fl"

/// Entries per bucket.
pub const WAYS: usize = 8;

/// Buckets a worker sweeps after each batch, and per idle poll interval (~100 ms): the
/// default table (8192 buckets per worker) is swept in 3.2 s when idle, and faster under load.
pub(crate) const SWEEP_PER_BATCH: usize = 2;
pub(crate) const SWEEP_IDLE: usize = 256;

/// An address as a flow key holds it: `u32` for IPv4, `u128` for IPv6, so an IPv4 entry
/// stays 32 bytes (an IPv6 one is 64).
pub trait FlowAddr: Copy + Eq + Debug + Default {
    /// The flow hash of a key of this family (see [`FlowKey::hash`]).
    fn flow_hash(key: &FlowKey<Self>) -> u64;
}

/// What identifies a flow: the 5-tuple, or the 3-tuple for fragmented datagrams.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct FlowKey<A = u32> {
    pub src: A,
    pub dst: A,
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    /// 1 for a fragmented datagram's 3-tuple (ports zero), so it never equals the
    /// 5-tuple of an unfragmented packet that happens to use port 0.
    pub fragmented: u8,
}

impl<A: FlowAddr> FlowKey<A> {
    /// The 5-tuple of an unfragmented datagram.
    #[inline]
    pub fn of_ports(src: A, dst: A, protocol: u8, sport: u16, dport: u16) -> Self {
        FlowKey {
            src,
            dst,
            sport,
            dport,
            protocol,
            fragmented: 0,
        }
    }

    /// The 3-tuple shared by all fragments of a datagram.
    #[inline]
    pub fn of_fragments(src: A, dst: A, protocol: u8) -> Self {
        FlowKey {
            src,
            dst,
            sport: 0,
            dport: 0,
            protocol,
            fragmented: 1,
        }
    }

    /// xxh3 with a fixed seed over a fixed big-endian layout (addresses, then ports,
    /// protocol and the fragment mark), so the value is the same on every node and
    /// architecture: part of the cross-node contract.
    #[inline]
    pub fn hash(&self) -> u64 {
        A::flow_hash(self)
    }

    #[inline]
    fn rest(&self) -> u64 {
        (u64::from(self.sport) << 48)
            | (u64::from(self.dport) << 32)
            | (u64::from(self.protocol) << 24)
            | (u64::from(self.fragmented) << 16)
    }
}

impl FlowAddr for u32 {
    /// 16 bytes written as two 8-byte words: xxh3 reads them back as two words, and
    /// equal-sized stores and loads forward without a stall (byte-wise stores cost more
    /// than the hash itself).
    #[inline]
    fn flow_hash(key: &FlowKey<u32>) -> u64 {
        let addrs = (u64::from(key.src) << 32) | u64::from(key.dst);
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&addrs.to_be_bytes());
        b[8..].copy_from_slice(&key.rest().to_be_bytes());
        xxh3_64_with_seed(&b, FLOW_SEED)
    }
}

impl FlowAddr for u128 {
    /// 40 bytes: source, destination, then the same 8-byte tail as IPv4's.
    #[inline]
    fn flow_hash(key: &FlowKey<u128>) -> u64 {
        let mut b = [0u8; 40];
        b[..16].copy_from_slice(&key.src.to_be_bytes());
        b[16..32].copy_from_slice(&key.dst.to_be_bytes());
        b[32..].copy_from_slice(&key.rest().to_be_bytes());
        xxh3_64_with_seed(&b, FLOW_SEED)
    }
}

impl FlowKey<u32> {
    /// The 5-tuple of an unfragmented IPv4 datagram.
    #[cfg(test)]
    pub fn five_tuple(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, sport: u16, dport: u16) -> Self {
        Self::of_ports(src.to_bits(), dst.to_bits(), protocol, sport, dport)
    }

    /// The 3-tuple shared by all fragments of an IPv4 datagram.
    #[cfg(test)]
    pub fn three_tuple(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8) -> Self {
        Self::of_fragments(src.to_bits(), dst.to_bits(), protocol)
    }
}

#[cfg(test)]
impl FlowKey<u128> {
    /// The 5-tuple of an unfragmented IPv6 datagram.
    pub fn five_tuple6(src: Ipv6Addr, dst: Ipv6Addr, protocol: u8, sport: u16, dport: u16) -> Self {
        Self::of_ports(src.to_bits(), dst.to_bits(), protocol, sport, dport)
    }
}

/// Marks a free entry (registry ids stop below it).
const FREE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Entry<A> {
    key: FlowKey<A>,
    backend: u32,
    /// The caller's own mark (the processor: when the flow's pin was last looked at). With
    /// `established` it sits in what would be padding, so an entry stays 32 bytes.
    mark: u16,
    established: bool,
    last_seen: u64,
}

impl<A: FlowAddr> Entry<A> {
    fn empty() -> Self {
        Entry {
            key: FlowKey::default(),
            backend: FREE,
            mark: 0,
            established: false,
            last_seen: 0,
        }
    }
}

/// What a worker's flow table did, for the metrics (plain numbers: the table is private to
/// its worker, which publishes them once per batch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounts {
    /// Entries in use: flows seen within the idle timeout, give or take one sweep.
    pub entries: u64,
    /// Half-open entries pushed out by another new flow.
    pub evicted_half_open: u64,
    /// Established entries pushed out by another established flow.
    pub evicted_established: u64,
    /// Half-open flows forwarded without an entry: their bucket held only established flows.
    pub full: u64,
    /// Entries the table has room for: `entries / capacity` is how full it is.
    pub capacity: u64,
}

impl std::ops::Add for FlowCounts {
    type Output = FlowCounts;

    /// A worker's two tables (IPv4, IPv6) published as one.
    fn add(self, o: FlowCounts) -> FlowCounts {
        FlowCounts {
            entries: self.entries + o.entries,
            evicted_half_open: self.evicted_half_open + o.evicted_half_open,
            evicted_established: self.evicted_established + o.evicted_established,
            full: self.full + o.full,
            capacity: self.capacity + o.capacity,
        }
    }
}

/// What [`FlowTable::insert_marked`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Inserted {
    /// False: not recorded (a half-open flow in a bucket of established ones).
    pub recorded: bool,
    /// The backend of an established entry the new one replaced (the same key, an idle
    /// entry not yet swept, or an evicted flow): one established flow fewer there.
    pub gone: Option<u32>,
}

/// A live entry found by [`FlowTable::lookup`].
#[derive(Debug)]
pub struct Hit<'a> {
    pub backend: u32,
    /// The caller's mark, to read and update.
    pub mark: &'a mut u16,
    established: &'a mut bool,
}

impl Hit<'_> {
    /// Marks the flow established; true if it was half-open until now.
    #[inline]
    pub fn establish(&mut self) -> bool {
        !std::mem::replace(self.established, true)
    }
}

/// A bounded flow → backend-id cache for one worker and one address family.
#[derive(Debug)]
pub struct FlowTable<A = u32> {
    entries: Box<[Entry<A>]>,
    bucket_mask: usize,
    idle_ns: u64,
    counts: FlowCounts,
    /// The next bucket the sweep looks at.
    sweep_at: usize,
}

impl<A: FlowAddr> FlowTable<A> {
    /// Room for at least `capacity` flows (rounded up to a power of two, at least one
    /// bucket); entries unused for more than `idle_ns` are misses.
    pub fn new(capacity: usize, idle_ns: u64) -> Self {
        let buckets = capacity.div_ceil(WAYS).max(1).next_power_of_two();
        FlowTable {
            entries: vec![Entry::empty(); buckets * WAYS].into_boxed_slice(),
            bucket_mask: buckets - 1,
            idle_ns,
            counts: FlowCounts {
                capacity: (buckets * WAYS) as u64,
                ..FlowCounts::default()
            },
            sweep_at: 0,
        }
    }

    /// What the table did so far.
    pub fn counts(&self) -> FlowCounts {
        self.counts
    }

    /// Total entries.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    #[inline]
    fn bucket(&mut self, hash: u64) -> &mut [Entry<A>] {
        // Low bits pick the bucket; Maglev uses the high bits of the same hash.
        let start = (hash as usize & self.bucket_mask) * WAYS;
        let end = start + WAYS;
        let len = self.entries.len();
        // Always in range (mask < buckets); the fallback only keeps the path panic-free.
        if end <= len {
            &mut self.entries[start..end]
        } else {
            &mut self.entries[len - WAYS..]
        }
    }

    #[inline]
    fn fresh(e: &Entry<A>, now_ns: u64, idle_ns: u64) -> bool {
        e.backend != FREE && now_ns.saturating_sub(e.last_seen) <= idle_ns
    }

    /// [`FlowTable::lookup`] without the mark.
    #[cfg(test)]
    pub fn get(&mut self, key: &FlowKey<A>, hash: u64, now_ns: u64) -> Option<u32> {
        self.lookup(key, hash, now_ns).map(|h| h.backend)
    }

    /// The live entry for `key`, its last-seen time refreshed.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey<A>, hash: u64, now_ns: u64) -> Option<Hit<'_>> {
        let idle = self.idle_ns;
        let e = self
            .bucket(hash)
            .iter_mut()
            .find(|e| e.key == *key && Self::fresh(e, now_ns, idle))?;
        e.last_seen = now_ns;
        Some(Hit {
            backend: e.backend,
            mark: &mut e.mark,
            established: &mut e.established,
        })
    }

    /// [`FlowTable::insert_marked`] with mark 0, established.
    #[cfg(test)]
    pub fn insert(&mut self, key: FlowKey<A>, hash: u64, backend: u32, now_ns: u64) {
        let _ = self.insert_marked(key, hash, backend, 0, true, now_ns);
    }

    /// Records `key → backend` with `mark`: in place of the same key, else a free or idle
    /// entry, else by the eviction order of the module doc.
    #[inline]
    pub fn insert_marked(
        &mut self,
        key: FlowKey<A>,
        hash: u64,
        backend: u32,
        mark: u16,
        established: bool,
        now_ns: u64,
    ) -> Inserted {
        let idle = self.idle_ns;
        let bucket = self.bucket(hash);
        // Rank: the same key, then free or idle, then the oldest half-open, then (for an
        // established newcomer only) the oldest established.
        let mut victim = None;
        let mut best = (u8::MAX, u64::MAX);
        for (i, e) in bucket.iter().enumerate() {
            let rank = if e.backend != FREE && e.key == key {
                (0, 0)
            } else if !Self::fresh(e, now_ns, idle) {
                (1, 0)
            } else if !e.established {
                (2, e.last_seen)
            } else if established {
                (3, e.last_seen)
            } else {
                continue;
            };
            if rank < best {
                best = rank;
                victim = Some(i);
            }
        }
        let Some(i) = victim else {
            self.counts.full += 1;
            return Inserted {
                recorded: false,
                gone: None,
            };
        };
        let was_free = bucket[i].backend == FREE;
        let gone = (!was_free && bucket[i].established).then_some(bucket[i].backend);
        bucket[i] = Entry {
            key,
            backend,
            mark,
            established,
            last_seen: now_ns,
        };
        match best.0 {
            1 if was_free => self.counts.entries += 1,
            2 => self.counts.evicted_half_open += 1,
            3 => self.counts.evicted_established += 1,
            _ => {}
        }
        Inserted {
            recorded: true,
            gone,
        }
    }

    /// Frees the idle entries of the next `buckets` buckets (wrapping round the table), so
    /// the entry count does not include flows that ended long ago; `gone` hears the backend
    /// of each established entry freed.
    pub fn sweep(&mut self, now_ns: u64, buckets: usize, mut gone: impl FnMut(u32)) {
        let idle = self.idle_ns;
        let total = self.bucket_mask + 1;
        for _ in 0..buckets.min(total) {
            let start = self.sweep_at * WAYS;
            self.sweep_at = (self.sweep_at + 1) & self.bucket_mask;
            for e in self.entries[start..start + WAYS].iter_mut() {
                if e.backend != FREE && !Self::fresh(e, now_ns, idle) {
                    if e.established {
                        gone(e.backend);
                    }
                    *e = Entry::empty();
                    self.counts.entries = self.counts.entries.saturating_sub(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> FlowKey {
        FlowKey::five_tuple(
            Ipv4Addr::from_bits(0xc612_0000 + i),
            Ipv4Addr::new(198, 18, 0, 100),
            6,
            40_000,
            80,
        )
    }

    #[test]
    fn hash_is_fixed_and_tuples_differ() {
        let k = key(1);
        assert_eq!(k.hash(), key(1).hash());
        let f = FlowKey::three_tuple(
            Ipv4Addr::from_bits(k.src),
            Ipv4Addr::from_bits(k.dst),
            k.protocol,
        );
        let zero_ports = FlowKey::five_tuple(
            Ipv4Addr::from_bits(k.src),
            Ipv4Addr::from_bits(k.dst),
            6,
            0,
            0,
        );
        assert_ne!(f, zero_ports);
        assert_ne!(f.hash(), zero_ports.hash());
        // Pinned value: a change here breaks flow placement across mixed-version nodes.
        assert_eq!(
            FlowKey::five_tuple(
                Ipv4Addr::new(1, 2, 3, 4),
                Ipv4Addr::new(5, 6, 7, 8),
                6,
                1,
                2
            )
            .hash(),
            PINNED_HASH
        );
    }

    const PINNED_HASH: u64 = 3_142_335_618_210_348_306;

    #[test]
    fn an_ipv4_entry_stays_32_bytes_and_an_ipv6_one_is_a_cache_line() {
        assert_eq!(std::mem::size_of::<Entry<u32>>(), 32);
        assert_eq!(std::mem::size_of::<Entry<u128>>(), 64);
    }

    #[test]
    fn ipv6_keys_hash_to_a_pinned_value_and_differ_from_ipv4() {
        let v6 = FlowKey::five_tuple6(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::100".parse().unwrap(),
            6,
            40000,
            80,
        );
        assert_eq!(v6.hash(), PINNED_HASH6);
        let frag = FlowKey::<u128>::of_fragments(v6.src, v6.dst, 6);
        assert_ne!(frag.hash(), v6.hash());
        let mut t = FlowTable::<u128>::new(64, 100);
        t.insert(v6, v6.hash(), 3, 1);
        assert_eq!(t.get(&v6, v6.hash(), 2), Some(3));
        assert_eq!(t.get(&frag, frag.hash(), 2), None);
    }

    const PINNED_HASH6: u64 = 14_851_681_068_011_875_443;

    #[test]
    fn hit_miss_and_idle() {
        let mut t = FlowTable::new(64, 100);
        let k = key(1);
        assert_eq!(t.get(&k, k.hash(), 0), None);
        t.insert(k, k.hash(), 7, 10);
        assert_eq!(t.get(&k, k.hash(), 50), Some(7));
        assert_eq!(t.get(&k, k.hash(), 150), Some(7), "refreshed at 50");
        assert_eq!(t.get(&k, k.hash(), 251), None, "idle after 100 ns");
        t.insert(k, k.hash(), 9, 300);
        assert_eq!(t.get(&k, k.hash(), 300), Some(9));
    }

    #[test]
    fn full_bucket_evicts_the_stale_most() {
        // One bucket: every key lands in it.
        let mut t = FlowTable::new(WAYS, 1_000_000);
        assert_eq!(t.capacity(), WAYS);
        for i in 0..WAYS as u32 {
            t.insert(key(i), key(i).hash(), i, u64::from(i) + 1);
        }
        // Touch key 0 so that key 1 becomes the stale-most.
        assert_eq!(t.get(&key(0), key(0).hash(), 100), Some(0));
        t.insert(key(99), key(99).hash(), 99, 101);
        assert_eq!(t.get(&key(1), key(1).hash(), 102), None);
        for i in [0u32, 2, 3, 7, 99] {
            assert_eq!(t.get(&key(i), key(i).hash(), 103), Some(i));
        }
        // Re-inserting a present key replaces it in place, evicting nobody.
        t.insert(key(2), key(2).hash(), 42, 104);
        assert_eq!(t.get(&key(2), key(2).hash(), 105), Some(42));
        assert_eq!(t.get(&key(3), key(3).hash(), 105), Some(3));
    }

    fn half_open(t: &mut FlowTable, k: FlowKey, backend: u32, now: u64) -> bool {
        t.insert_marked(k, k.hash(), backend, 0, false, now)
            .recorded
    }

    #[test]
    fn a_syn_flood_never_evicts_an_established_flow() {
        let mut t = FlowTable::new(WAYS, 1_000_000);
        // One established flow, idle since t=1, then a flood of half-open ones.
        t.insert(key(0), key(0).hash(), 0, 1);
        for i in 1..10_000u32 {
            half_open(&mut t, key(i), i, 100 + u64::from(i));
        }
        assert_eq!(t.get(&key(0), key(0).hash(), 20_000), Some(0));
        let c = t.counts();
        assert_eq!(c.entries, WAYS as u64);
        assert_eq!(c.evicted_established, 0);
        assert_eq!(c.evicted_half_open, 10_000 - WAYS as u64);
        assert_eq!(c.full, 0);
    }

    #[test]
    fn half_open_goes_first_and_a_bucket_of_established_refuses_half_open() {
        let mut t = FlowTable::new(WAYS, 1_000_000);
        for i in 0..WAYS as u32 {
            t.insert(key(i), key(i).hash(), i, u64::from(i) + 1);
        }
        // Full of established flows: a new half-open one is not recorded.
        assert!(!half_open(&mut t, key(50), 50, 20));
        assert_eq!(t.get(&key(50), key(50).hash(), 21), None);
        assert_eq!(t.counts().full, 1);
        // An established newcomer evicts the stale-most established flow (key 0, t=1), and
        // says whose it was.
        let ins = t.insert_marked(key(51), key(51).hash(), 51, 0, true, 22);
        assert_eq!(ins.gone, Some(0));
        assert_eq!(t.get(&key(0), key(0).hash(), 23), None);
        assert_eq!(t.counts().evicted_established, 1);
        // A half-open entry, once its flow sends more, is promoted and stays.
        let mut t = FlowTable::new(WAYS, 1_000_000);
        assert!(half_open(&mut t, key(1), 1, 1));
        assert!(t.lookup(&key(1), key(1).hash(), 2).unwrap().establish());
        assert!(!t.lookup(&key(1), key(1).hash(), 3).unwrap().establish());
        for i in 2..100u32 {
            half_open(&mut t, key(i), i, 10 + u64::from(i));
        }
        assert_eq!(t.get(&key(1), key(1).hash(), 200), Some(1));
    }

    #[test]
    fn the_sweep_frees_idle_entries_and_the_count_follows() {
        let mut t = FlowTable::new(256, 100);
        for i in 0..20u32 {
            t.insert(key(i), key(i).hash(), i, 10);
        }
        assert_eq!(t.counts().entries, 20);
        // Still fresh: nothing freed.
        t.sweep(50, 32, |_| panic!("nothing is idle yet"));
        assert_eq!(t.counts().entries, 20);
        t.get(&key(3), key(3).hash(), 100);
        let mut gone = Vec::new();
        t.sweep(150, 32, |b| gone.push(b));
        gone.sort_unstable();
        assert_eq!(gone, (0..20).filter(|&i| i != 3).collect::<Vec<u32>>());
        assert_eq!(
            t.counts().entries,
            1,
            "only the flow seen at 100 is live at 150"
        );
        // Freed slots are reused without double counting.
        for i in 100..110u32 {
            t.insert(key(i), key(i).hash(), i, 160);
        }
        assert_eq!(t.counts().entries, 11);
    }
}
