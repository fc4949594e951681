//! Flow keys, their deterministic hash, and the per-worker flow table.
//!
//! The table is a set-associative cache: `capacity / WAYS` buckets of [`WAYS`] entries,
//! allocated once. A lookup touches one bucket (two cache lines); an insert replaces the
//! same key, else a free or idle entry, else the entry seen longest ago in that bucket —
//! an approximate LRU with O(1) work and no allocation. Entries older than the idle
//! timeout count as misses.

use std::net::Ipv4Addr;

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seed of the flow hash: part of the cross-node contract (every node must pick the same
/// Maglev slot for a flow), so it never changes.
const FLOW_SEED: u64 = 0x6473_726c_625f_666c; // "dsrlb_fl"

/// Entries per bucket.
pub const WAYS: usize = 8;

/// What identifies a flow: the 5-tuple, or the 3-tuple for fragmented datagrams.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct FlowKey {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    /// 1 for a fragmented datagram's 3-tuple (ports zero), so it never equals the
    /// 5-tuple of an unfragmented packet that happens to use port 0.
    pub fragmented: u8,
}

impl FlowKey {
    /// The 5-tuple of an unfragmented datagram.
    pub fn five_tuple(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, sport: u16, dport: u16) -> Self {
        FlowKey {
            src: src.to_bits(),
            dst: dst.to_bits(),
            sport,
            dport,
            protocol,
            fragmented: 0,
        }
    }

    /// The 3-tuple shared by all fragments of a datagram.
    pub fn three_tuple(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8) -> Self {
        FlowKey {
            src: src.to_bits(),
            dst: dst.to_bits(),
            sport: 0,
            dport: 0,
            protocol,
            fragmented: 1,
        }
    }

    /// xxh3 with a fixed seed over a fixed 16-byte big-endian layout, so the value is the
    /// same on every node and architecture. The layout is written as two 8-byte words:
    /// xxh3 reads it back as two words, and equal-sized stores and loads forward without
    /// a stall (byte-wise stores cost more than the hash itself).
    #[inline]
    pub fn hash(&self) -> u64 {
        let addrs = (u64::from(self.src) << 32) | u64::from(self.dst);
        let rest = (u64::from(self.sport) << 48)
            | (u64::from(self.dport) << 32)
            | (u64::from(self.protocol) << 24)
            | (u64::from(self.fragmented) << 16);
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&addrs.to_be_bytes());
        b[8..].copy_from_slice(&rest.to_be_bytes());
        xxh3_64_with_seed(&b, FLOW_SEED)
    }
}

/// Marks a free entry (registry ids stop below it).
const FREE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: FlowKey,
    backend: u32,
    /// The caller's own mark (the processor: when the flow's pin was last looked at). Sits
    /// in what would be padding, so an entry stays 32 bytes.
    mark: u32,
    last_seen: u64,
}

const EMPTY: Entry = Entry {
    key: FlowKey {
        src: 0,
        dst: 0,
        sport: 0,
        dport: 0,
        protocol: 0,
        fragmented: 0,
    },
    backend: FREE,
    mark: 0,
    last_seen: 0,
};

/// A bounded flow → backend-id cache for one worker.
#[derive(Debug)]
pub struct FlowTable {
    entries: Box<[Entry]>,
    bucket_mask: usize,
    idle_ns: u64,
}

impl FlowTable {
    /// Room for at least `capacity` flows (rounded up to a power of two, at least one
    /// bucket); entries unused for more than `idle_ns` are misses.
    pub fn new(capacity: usize, idle_ns: u64) -> Self {
        let buckets = capacity.div_ceil(WAYS).max(1).next_power_of_two();
        FlowTable {
            entries: vec![EMPTY; buckets * WAYS].into_boxed_slice(),
            bucket_mask: buckets - 1,
            idle_ns,
        }
    }

    /// Total entries.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    #[inline]
    fn bucket(&mut self, hash: u64) -> &mut [Entry] {
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
    fn fresh(e: &Entry, now_ns: u64, idle_ns: u64) -> bool {
        e.backend != FREE && now_ns.saturating_sub(e.last_seen) <= idle_ns
    }

    /// [`FlowTable::get_marked`] without the mark.
    #[cfg(test)]
    pub fn get(&mut self, key: &FlowKey, hash: u64, now_ns: u64) -> Option<u32> {
        self.get_marked(key, hash, now_ns).map(|(b, _)| b)
    }

    /// The backend id of a live entry for `key`, refreshing its last-seen time, with the
    /// entry's mark to read and update.
    #[inline]
    pub fn get_marked(&mut self, key: &FlowKey, hash: u64, now_ns: u64) -> Option<(u32, &mut u32)> {
        let idle = self.idle_ns;
        let e = self
            .bucket(hash)
            .iter_mut()
            .find(|e| e.key == *key && Self::fresh(e, now_ns, idle))?;
        e.last_seen = now_ns;
        Some((e.backend, &mut e.mark))
    }

    /// [`FlowTable::insert_marked`] with mark 0.
    #[cfg(test)]
    pub fn insert(&mut self, key: FlowKey, hash: u64, backend: u32, now_ns: u64) {
        self.insert_marked(key, hash, backend, 0, now_ns);
    }

    /// Records `key → backend` with `mark`, replacing the same key, else a free or idle
    /// entry, else the stale-most entry of the bucket.
    #[inline]
    pub fn insert_marked(&mut self, key: FlowKey, hash: u64, backend: u32, mark: u32, now_ns: u64) {
        let idle = self.idle_ns;
        let bucket = self.bucket(hash);
        let mut victim = 0usize;
        let mut oldest = u64::MAX;
        for (i, e) in bucket.iter().enumerate() {
            if e.backend != FREE && e.key == key {
                victim = i;
                break;
            }
            // Free and idle entries rank as older than any live one.
            let age = if Self::fresh(e, now_ns, idle) {
                e.last_seen
            } else {
                0
            };
            if age < oldest {
                oldest = age;
                victim = i;
            }
        }
        bucket[victim] = Entry {
            key,
            backend,
            mark,
            last_seen: now_ns,
        };
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
    fn an_entry_stays_32_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
    }

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
}
