//! The replicated source-IP persistence table: which backend each client address of a farm
//! sticks to and when that client was last seen, and the rules that keep it consistent with
//! the farms.
//!
//! Apart from [`ClusterState`] on purpose: the table can hold millions of entries and
//! changes every few tens of milliseconds, while the farm state is small and cloned for
//! every table rebuild. The state machine owns one [`PinTable`], mutates it in place and
//! tells a [`PinSink`] (the node's datapath) about every change as it applies it.
//!
//! Time is the log's, not a node's: every write carries the leader's clock (`now_ms`) and
//! the time its client was seen (`seen_ms`), and an entry expires when a write with
//! `now_ms >= seen_ms + ttl` is applied. Every node therefore drops an entry at the same log
//! index, and a whole-cluster restart keeps what had not expired by the last write.

use crate::state::{BackendState, ClusterState, Persistence};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Width of an expiry-wheel bucket: the sweep looks at whole buckets.
const BUCKET_MS: u64 = 250;

/// Bits of a stored pin that hold `seen_ms` (2^44 ms: until the year 2527).
const SEEN_BITS: u32 = 44;
const SEEN_MASK: u64 = (1 << SEEN_BITS) - 1;
/// Backend names a farm's table can intern (the other 20 bits).
const MAX_NAMES: usize = 1 << (64 - SEEN_BITS);

/// One client's pin as stored, in 8 bytes (a million pins are a million of these): the
/// index of its backend in its farm's names, and when the client was last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Pin(u64);

impl Pin {
    fn new(backend: u32, seen_ms: u64) -> Pin {
        Pin((u64::from(backend) << SEEN_BITS) | seen_ms.min(SEEN_MASK))
    }

    fn backend(self) -> u32 {
        (self.0 >> SEEN_BITS) as u32
    }

    fn seen_ms(self) -> u64 {
        self.0 & SEEN_MASK
    }
}

/// A client address as a pin table keys it: `u32` for IPv4, `u128` for IPv6, in maps of
/// their own so an IPv4 pin's key stays 4 bytes.
trait Client: Copy + Ord + std::fmt::Debug {
    fn ip(self) -> IpAddr;
}

impl Client for u32 {
    fn ip(self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from_bits(self))
    }
}

impl Client for u128 {
    fn ip(self) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from_bits(self))
    }
}

/// One family's pins of a farm.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Clients<K: Ord> {
    /// Client address (as bits) → pin; ordered, so equal tables encode to equal bytes.
    pins: BTreeMap<K, Pin>,
    /// Expiry wheel: bucket of `seen_ms` → clients seen then. Refreshing leaves the old
    /// reference behind; the sweep checks each reference against the pin, so stale ones
    /// only cost their key until their bucket is swept. Derived: rebuilt on decode.
    #[serde(skip)]
    wheel: BTreeMap<u64, Vec<K>>,
}

impl<K: Ord> Default for Clients<K> {
    fn default() -> Self {
        Clients {
            pins: BTreeMap::new(),
            wheel: BTreeMap::new(),
        }
    }
}

impl<K: Client> Clients<K> {
    fn remember(&mut self, client: K, seen_ms: u64) {
        self.wheel
            .entry(seen_ms / BUCKET_MS)
            .or_default()
            .push(client);
    }

    /// The pin seen longest ago as (seen_ms, client) — the smallest, so every node picks the
    /// same one whatever order its wheel was filled in (a wheel rebuilt from a snapshot is
    /// ordered by address) — dropping stale references met on the way. One scan of the
    /// oldest bucket.
    fn oldest(&mut self) -> Option<(u64, K)> {
        let Clients { pins, wheel } = self;
        loop {
            let mut entry = wheel.first_entry()?;
            let bucket = *entry.key();
            let refs = entry.get_mut();
            // Drop stale references (refreshed since, or gone) while looking.
            refs.retain(|c| {
                pins.get(c)
                    .is_some_and(|p| p.seen_ms() / BUCKET_MS == bucket)
            });
            refs.sort_unstable();
            refs.dedup();
            match refs
                .iter()
                .filter_map(|c| pins.get(c).map(|p| (p.seen_ms(), *c)))
                .min()
            {
                Some(o) => return Some(o),
                None => {
                    entry.remove();
                }
            }
        }
    }

    /// Removes the pins seen at or before `cutoff`, telling `gone` of each.
    fn expire(&mut self, cutoff: u64, mut gone: impl FnMut(K)) -> bool {
        let mut changed = false;
        let last = cutoff / BUCKET_MS;
        while let Some(entry) = self.wheel.first_entry() {
            if *entry.key() > last {
                break;
            }
            let (bucket, clients) = entry.remove_entry();
            let mut keep = Vec::new();
            for c in clients {
                match self.pins.get(&c) {
                    Some(p) if p.seen_ms() <= cutoff => {
                        self.pins.remove(&c);
                        gone(c);
                        changed = true;
                    }
                    // Still fresh and filed here (the bucket straddles the cutoff).
                    Some(p) if p.seen_ms() / BUCKET_MS == bucket => keep.push(c),
                    // Refreshed since (filed again later) or gone: a stale reference.
                    _ => {}
                }
            }
            if !keep.is_empty() {
                self.wheel.insert(bucket, keep);
                break;
            }
        }
        changed
    }

    /// Removes the pins whose backend index `drop` says, telling `gone` of each.
    fn retain_backends(&mut self, drop: impl Fn(u32) -> bool, mut gone: impl FnMut(K)) -> bool {
        let before = self.pins.len();
        self.pins.retain(|c, p| {
            let keep = !drop(p.backend());
            if !keep {
                gone(*c);
            }
            keep
        });
        self.pins.len() != before
    }

    fn rebuild_wheel(&mut self) {
        self.wheel.clear();
        let seen: Vec<(K, u64)> = self.pins.iter().map(|(c, p)| (*c, p.seen_ms())).collect();
        for (client, at) in seen {
            self.remember(client, at);
        }
    }
}

/// One farm's pins: IPv4 and IPv6 clients apart, one set of interned backend names.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FarmPins {
    /// Interned backend names: a pin stores 4 bytes instead of a string.
    names: Vec<String>,
    v4: Clients<u32>,
    v6: Clients<u128>,
}

/// What one write touches: the pin of its client, in its family's map.
enum Slot<'a> {
    V4(&'a mut Clients<u32>, u32),
    V6(&'a mut Clients<u128>, u128),
}

impl Slot<'_> {
    fn put(&mut self, pin: Pin) {
        match self {
            Slot::V4(m, c) => {
                m.pins.insert(*c, pin);
                m.remember(*c, pin.seen_ms());
            }
            Slot::V6(m, c) => {
                m.pins.insert(*c, pin);
                m.remember(*c, pin.seen_ms());
            }
        }
    }
}

impl FarmPins {
    /// The index of `backend`'s name (`None` once a farm has seen `MAX_NAMES` names).
    fn intern(&mut self, backend: &str) -> Option<u32> {
        match self.names.iter().position(|n| n == backend) {
            Some(i) => Some(i as u32),
            None if self.names.len() < MAX_NAMES => {
                self.names.push(backend.to_string());
                Some((self.names.len() - 1) as u32)
            }
            None => None,
        }
    }

    fn name(&self, pin: &Pin) -> &str {
        self.names
            .get(pin.backend() as usize)
            .map(String::as_str)
            .unwrap_or("")
    }

    fn len(&self) -> usize {
        self.v4.pins.len() + self.v6.pins.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot(&mut self, client: IpAddr) -> Slot<'_> {
        match client {
            IpAddr::V4(a) => Slot::V4(&mut self.v4, a.to_bits()),
            IpAddr::V6(a) => Slot::V6(&mut self.v6, a.to_bits()),
        }
    }

    /// Removes and returns the client seen longest ago of either family: the smallest
    /// (seen_ms, address), an IPv4 client first on a tie, so every node evicts the same.
    fn evict_oldest(&mut self) -> Option<IpAddr> {
        let a = self.v4.oldest();
        let b = self.v6.oldest();
        let v4_first = match (a, b) {
            (Some((ta, _)), Some((tb, _))) => ta <= tb,
            (a, _) => a.is_some(),
        };
        if v4_first {
            let (_, c) = a?;
            self.v4.pins.remove(&c);
            Some(c.ip())
        } else {
            let (_, c) = b?;
            self.v6.pins.remove(&c);
            Some(c.ip())
        }
    }

    /// Every (client, pin), IPv4 clients first, each family in address order.
    fn iter(&self) -> impl Iterator<Item = (IpAddr, &Pin)> + '_ {
        let v4 = self.v4.pins.iter().map(|(c, p)| (c.ip(), p));
        v4.chain(self.v6.pins.iter().map(|(c, p)| (c.ip(), p)))
    }

    fn get(&self, client: IpAddr) -> Option<&Pin> {
        match client {
            IpAddr::V4(a) => self.v4.pins.get(&a.to_bits()),
            IpAddr::V6(a) => self.v6.pins.get(&a.to_bits()),
        }
    }

    fn first_bucket(&self) -> Option<u64> {
        let a = self.v4.wheel.keys().next().copied();
        let b = self.v6.wheel.keys().next().copied();
        a.into_iter().chain(b).min()
    }

    fn rebuild_wheel(&mut self) {
        self.v4.rebuild_wheel();
        self.v6.rebuild_wheel();
    }
}

/// A write of one pin, as the leader's batcher proposes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinWrite {
    /// The client address.
    pub client: IpAddr,
    /// The backend the owner sent it to.
    pub backend: String,
    /// When the owner saw the client (first packet for a new pin), leader's wall clock, ms
    /// since the Unix epoch.
    pub seen_ms: u64,
    /// A new pin (may replace an old one) rather than a refresh of an existing one.
    pub new: bool,
}

/// The pin writes of one farm in one batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FarmPinWrites {
    /// Farm name.
    pub farm: String,
    /// Its writes, in the order the owner saw them.
    pub writes: Vec<PinWrite>,
}

/// One batch of the leader's persistence batcher: one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinBatch {
    /// The leader's wall clock when it proposed the batch (ms since the Unix epoch): pins
    /// seen `ttl` or longer before it expire when the batch is applied.
    pub now_ms: u64,
    /// Writes by farm (empty for a batch that only expires).
    pub farms: Vec<FarmPinWrites>,
}

impl PinBatch {
    /// Most writes one batch carries; the batcher leaves the rest queued for the next. With
    /// names of at most 63 bytes one write encodes in at most [`PinBatch::MAX_WRITE_BYTES`]
    /// (each in a farm of its own at worst), so a full batch stays within
    /// [`crate::MAX_ENTRY_BYTES`]: a test encodes the worst case. 16,384 writes per 50 ms
    /// batch carry over 300,000 new or refreshed pins per second.
    pub const MAX_WRITES: usize = 16_384;
    /// Worst-case encoded bytes of one write: client 17 (an IPv6 address and its variant
    /// tag), backend name 1 + 63, seen time 9, flag 1, and a farm of its own (name 1 + 63,
    /// count 3).
    pub const MAX_WRITE_BYTES: usize = 158;
}

/// A pin as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRow {
    /// The client address.
    pub client: IpAddr,
    /// Its backend.
    pub backend: String,
    /// When it was last seen (ms since the Unix epoch, the owner's clock).
    pub seen_ms: u64,
}

/// What applying pin writes did, counted on this node since it started (every node applies
/// the same log, so the counts agree up to where each started counting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PinStats {
    /// Pins created or moved to another backend.
    pub created: u64,
    /// Pins whose time was moved on.
    pub refreshed: u64,
    /// Pins removed because their TTL passed.
    pub expired: u64,
    /// Pins removed, the least recently seen first, to make room for a new client in a
    /// farm's table at its size bound.
    pub evicted_full: u64,
    /// Writes that no longer applied (farm gone or not persistent, backend gone, off,
    /// drained or down, refresh of a pin that no longer exists).
    pub stale: u64,
}

/// Told of every change to the table, in log order, from the state machine's task: the
/// node mirrors the table into its datapath with it. Must be quick and must not block.
pub trait PinSink: Send + Sync {
    /// The table was replaced as a whole (start, snapshot install): forget everything and
    /// take `table`.
    fn reset(&self, table: &PinTable);
    /// `client` of `farm` is now pinned to `backend`, last seen at `seen_ms`; `created` is
    /// false for a refresh of the same pin.
    fn set(&self, farm: &str, client: IpAddr, backend: &str, seen_ms: u64, created: bool);
    /// `client` of `farm` lost its pin.
    fn remove(&self, farm: &str, client: IpAddr);
    /// Every pin of `farm` is gone.
    fn clear(&self, farm: &str);
    /// A batch stamped `now_ms` (the log's clock) is being applied, before its writes.
    fn clock(&self, _now_ms: u64) {}
}

/// The replicated persistence table of every farm.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PinTable {
    farms: BTreeMap<String, FarmPins>,
    #[serde(skip)]
    stats: PinStats,
}

/// Whether `backend` of `farm` may hold pins at all: it exists, is not off and is healthy.
fn may_keep(state: &ClusterState, farm: &str, backend: &str) -> bool {
    let Some(f) = state.farms.get(farm) else {
        return false;
    };
    f.backends
        .iter()
        .any(|b| b.name == backend && b.state != BackendState::Off)
        && state.is_healthy(farm, backend)
}

/// Whether `backend` of `farm` may be given new pins or have its pins refreshed: it also
/// takes new flows (`up`). A drained backend keeps its pins until they expire.
fn may_pin(state: &ClusterState, farm: &str, backend: &str) -> bool {
    let up = state.farms.get(farm).is_some_and(|f| {
        f.backends
            .iter()
            .any(|b| b.name == backend && b.state == BackendState::Up)
    });
    up && may_keep(state, farm, backend)
}

impl PinTable {
    /// Rebuilds what is not stored (the expiry wheels) after decoding.
    pub(crate) fn restore(&mut self) {
        for f in self.farms.values_mut() {
            f.rebuild_wheel();
        }
    }

    /// Pins per farm (farms with none are left out).
    pub fn counts(&self) -> Vec<(String, usize)> {
        self.farms
            .iter()
            .filter(|(_, f)| !f.is_empty())
            .map(|(n, f)| (n.clone(), f.len()))
            .collect()
    }

    /// Every pin of every farm, for a sink's reset: (farm, client, backend, seen_ms).
    pub fn iter(&self) -> impl Iterator<Item = (&str, IpAddr, &str, u64)> + '_ {
        self.farms.iter().flat_map(|(farm, f)| {
            f.iter()
                .map(move |(c, p)| (farm.as_str(), c, f.name(p), p.seen_ms()))
        })
    }

    /// Up to `limit` pins of `farm`, IPv4 clients then IPv6 ones, each in address order
    /// (only `client`'s if given), and how many the farm has in all.
    pub fn list(&self, farm: &str, client: Option<IpAddr>, limit: usize) -> (Vec<PinRow>, usize) {
        let Some(f) = self.farms.get(farm) else {
            return (Vec::new(), 0);
        };
        let row = |(c, p): (IpAddr, &Pin)| PinRow {
            client: c,
            backend: f.name(p).to_string(),
            seen_ms: p.seen_ms(),
        };
        let rows = match client {
            Some(ip) => f.get(ip).map(|p| row((ip, p))).into_iter().collect(),
            None => f.iter().take(limit).map(row).collect(),
        };
        (rows, f.len())
    }

    /// The earliest time at which applying a batch may expire something (a lower bound;
    /// `None` with no pins). The batcher proposes an empty batch then.
    pub fn next_expiry_ms(&self, state: &ClusterState) -> Option<u64> {
        self.farms
            .iter()
            .filter_map(|(name, f)| {
                let ttl = ttl_ms(state, name)?;
                let first = f.first_bucket()?;
                Some(first * BUCKET_MS + ttl)
            })
            .min()
    }

    /// Counts since start.
    pub fn stats(&self) -> PinStats {
        self.stats
    }

    /// Applies one batch: writes first, then expiry at `now_ms`. Returns whether a pin
    /// changed.
    pub(crate) fn apply_batch(
        &mut self,
        state: &ClusterState,
        batch: &PinBatch,
        sink: &dyn PinSink,
    ) -> bool {
        sink.clock(batch.now_ms);
        let mut changed = false;
        let max = usize::try_from(state.settings.persistence_max_entries).unwrap_or(usize::MAX);
        for group in &batch.farms {
            if ttl_ms(state, &group.farm).is_none() {
                self.stats.stale += group.writes.len() as u64;
                continue;
            }
            let f = self.farms.entry(group.farm.clone()).or_default();
            for w in &group.writes {
                if !may_pin(state, &group.farm, &w.backend) {
                    self.stats.stale += 1;
                    continue;
                }
                let Some(backend) = f.intern(&w.backend) else {
                    self.stats.stale += 1;
                    continue;
                };
                let (seen_ms, created) = match f.get(w.client) {
                    Some(p) if p.backend() == backend => (p.seen_ms().max(w.seen_ms), false),
                    // A refresh of a pin that was flushed, expired or moved meanwhile must
                    // not bring it back.
                    _ if !w.new => {
                        self.stats.stale += 1;
                        continue;
                    }
                    Some(_) => (w.seen_ms, true),
                    None => {
                        // Full: the client seen longest ago makes room. Refusing instead
                        // would keep idle clients pinned until their TTL while active new
                        // ones got none; an evicted client still gets Maglev's pick for
                        // its address, and loses only its stickiness across a backend change.
                        if f.len() >= max
                            && let Some(old) = f.evict_oldest()
                        {
                            self.stats.evicted_full += 1;
                            sink.remove(&group.farm, old);
                        }
                        (w.seen_ms, true)
                    }
                };
                f.slot(w.client).put(Pin::new(backend, seen_ms));
                if created {
                    self.stats.created += 1;
                } else {
                    self.stats.refreshed += 1;
                }
                sink.set(&group.farm, w.client, &w.backend, seen_ms, created);
                changed = true;
            }
        }
        changed | self.expire(state, batch.now_ms, sink)
    }

    /// Removes every pin seen `ttl` or longer before `now_ms`.
    fn expire(&mut self, state: &ClusterState, now_ms: u64, sink: &dyn PinSink) -> bool {
        let mut changed = false;
        let stats = &mut self.stats;
        for (name, f) in self.farms.iter_mut() {
            let Some(ttl) = ttl_ms(state, name) else {
                continue;
            };
            let Some(cutoff) = now_ms.checked_sub(ttl) else {
                continue;
            };
            let mut gone = |c: IpAddr| {
                stats.expired += 1;
                sink.remove(name, c);
            };
            changed |= f.v4.expire(cutoff, |c| gone(c.ip()));
            changed |= f.v6.expire(cutoff, |c| gone(c.ip()));
        }
        changed
    }

    /// Removes the pins of `farm` (only those to `backend` if given).
    pub(crate) fn flush(&mut self, farm: &str, backend: Option<&str>, sink: &dyn PinSink) -> bool {
        let Some(f) = self.farms.get_mut(farm) else {
            return false;
        };
        match backend {
            None => {
                let had = !f.is_empty();
                self.farms.remove(farm);
                sink.clear(farm);
                had
            }
            Some(b) => {
                let Some(idx) = f.names.iter().position(|n| n == b) else {
                    return false;
                };
                let idx = idx as u32;
                let a =
                    f.v4.retain_backends(|i| i == idx, |c| sink.remove(farm, c.ip()));
                let b =
                    f.v6.retain_backends(|i| i == idx, |c| sink.remove(farm, c.ip()));
                a | b
            }
        }
    }

    /// Brings the table in line with the farms after they changed: a farm that is gone or
    /// no longer persistent loses its table; a backend that is gone, off or down loses its
    /// pins (its clients are pinned afresh on their next connection).
    pub(crate) fn reconcile(&mut self, state: &ClusterState, sink: &dyn PinSink) -> bool {
        let mut changed = false;
        let gone: Vec<String> = self
            .farms
            .keys()
            .filter(|n| ttl_ms(state, n).is_none())
            .cloned()
            .collect();
        for name in gone {
            changed |= self.flush(&name, None, sink);
        }
        for (name, f) in self.farms.iter_mut() {
            let dead: Vec<u32> = f
                .names
                .iter()
                .enumerate()
                .filter(|(_, b)| !may_keep(state, name, b))
                .map(|(i, _)| i as u32)
                .collect();
            if dead.is_empty() {
                continue;
            }
            changed |=
                f.v4.retain_backends(|i| dead.contains(&i), |c| sink.remove(name, c.ip()));
            changed |=
                f.v6.retain_backends(|i| dead.contains(&i), |c| sink.remove(name, c.ip()));
        }
        changed
    }
}

/// The TTL of `farm` if it exists and keeps source-IP persistence.
fn ttl_ms(state: &ClusterState, farm: &str) -> Option<u64> {
    match state.farms.get(farm)?.persistence {
        Persistence::SrcIp { ttl } => Some(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
        Persistence::None => None,
    }
}

/// A sink that ignores everything (a member that forwards nothing, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSink;

impl PinSink for NoSink {
    fn reset(&self, _: &PinTable) {}
    fn set(&self, _: &str, _: IpAddr, _: &str, _: u64, _: bool) {}
    fn remove(&self, _: &str, _: IpAddr) {}
    fn clear(&self, _: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Backend, Command, Farm, Protocol, Scheduler};
    use std::sync::Mutex;
    use std::time::Duration;

    /// The largest batch the batcher may propose, in its worst shape (every write in a
    /// farm of its own, every name 63 bytes long), encodes within the entry bound.
    #[test]
    fn a_full_batch_of_the_longest_names_fits_an_entry() {
        let name = |i: usize| format!("{i:0>63}");
        let batch = PinBatch {
            now_ms: u64::MAX,
            farms: (0..PinBatch::MAX_WRITES)
                .map(|i| FarmPinWrites {
                    farm: name(i),
                    writes: vec![PinWrite {
                        // IPv6: the longest client encoding.
                        client: Ipv6Addr::from_bits(u128::MAX - i as u128).into(),
                        backend: name(i),
                        seen_ms: u64::MAX,
                        new: true,
                    }],
                })
                .collect(),
        };
        let bytes = crate::codec::encode(&Command::Pin(batch)).unwrap().len();
        assert!(
            bytes <= PinBatch::MAX_WRITES * PinBatch::MAX_WRITE_BYTES + 16,
            "{bytes} bytes: MAX_WRITE_BYTES is too small"
        );
        assert!(bytes <= crate::MAX_ENTRY_BYTES, "{bytes} bytes");
    }

    fn farm(ttl_s: u64) -> Farm {
        Farm {
            name: "web".into(),
            vip: Ipv4Addr::new(198, 18, 0, 100).into(),
            port_first: 80,
            port_last: 80,
            protocol: Protocol::Tcp,
            scheduler: Scheduler::Maglev,
            limits: Default::default(),
            maglev_table_size: 307,
            persistence: Persistence::SrcIp {
                ttl: Duration::from_secs(ttl_s),
            },
            check: None,
            backends: ["a", "b"]
                .iter()
                .enumerate()
                .map(|(i, n)| Backend {
                    name: (*n).into(),
                    ip: Ipv4Addr::new(198, 18, 0, 10 + i as u8).into(),
                    mac: None,
                    weight: 1,
                    state: BackendState::Up,
                    priority: 0,
                })
                .collect(),
        }
    }

    fn state(ttl_s: u64) -> ClusterState {
        let mut s = ClusterState::default();
        s.apply(&Command::PutFarm(farm(ttl_s)), 1);
        s
    }

    /// Client `i`: IPv4 below 128, IPv6 from 128 on.
    fn client(i: u8) -> IpAddr {
        if i < 128 {
            Ipv4Addr::new(198, 19, 0, i).into()
        } else {
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x19, u16::from(i)).into()
        }
    }

    fn batch(now_ms: u64, writes: &[(u8, &str, u64, bool)]) -> PinBatch {
        PinBatch {
            now_ms,
            farms: vec![FarmPinWrites {
                farm: "web".into(),
                writes: writes
                    .iter()
                    .map(|&(c, b, seen_ms, new)| PinWrite {
                        client: client(c),
                        backend: b.into(),
                        seen_ms,
                        new,
                    })
                    .collect(),
            }],
        }
    }

    /// Records what the sink heard, to check it mirrors the table.
    #[derive(Default)]
    struct Mirror(Mutex<BTreeMap<(String, IpAddr), (String, u64)>>);

    impl PinSink for Mirror {
        fn reset(&self, t: &PinTable) {
            let mut m = self.0.lock().unwrap();
            m.clear();
            for (f, c, b, s) in t.iter() {
                m.insert((f.into(), c), (b.into(), s));
            }
        }
        fn set(&self, f: &str, c: IpAddr, b: &str, s: u64, _: bool) {
            self.0.lock().unwrap().insert((f.into(), c), (b.into(), s));
        }
        fn remove(&self, f: &str, c: IpAddr) {
            self.0.lock().unwrap().remove(&(f.into(), c));
        }
        fn clear(&self, f: &str) {
            self.0.lock().unwrap().retain(|(ff, _), _| ff != f);
        }
    }

    impl Mirror {
        fn same_as(&self, t: &PinTable) -> bool {
            let want: BTreeMap<_, _> = t
                .iter()
                .map(|(f, c, b, s)| ((f.to_string(), c), (b.to_string(), s)))
                .collect();
            *self.0.lock().unwrap() == want
        }
    }

    fn backends(t: &PinTable) -> Vec<(IpAddr, String)> {
        t.list("web", None, usize::MAX)
            .0
            .into_iter()
            .map(|r| (r.client, r.backend))
            .collect()
    }

    #[test]
    fn ipv6_clients_pin_refresh_expire_and_evict_beside_ipv4_ones() {
        let mut s = state(10);
        s.settings.persistence_max_entries = 3;
        let sink = Mirror::default();
        let mut t = PinTable::default();
        // 200 (IPv6) oldest, then 1 (IPv4), then 201 (IPv6).
        assert!(t.apply_batch(&s, &batch(1_000, &[(200, "a", 1_000, true)]), &sink));
        assert!(t.apply_batch(&s, &batch(2_000, &[(1, "b", 2_000, true)]), &sink));
        assert!(t.apply_batch(&s, &batch(3_000, &[(201, "a", 3_000, true)]), &sink));
        assert_eq!(
            backends(&t),
            vec![
                (client(1), "b".into()),
                (client(200), "a".into()),
                (client(201), "a".into())
            ]
        );
        assert_eq!(t.list("web", Some(client(201)), 10).0[0].backend, "a");
        // Full: the client seen longest ago goes, whatever its family.
        assert!(t.apply_batch(&s, &batch(4_000, &[(2, "b", 4_000, true)]), &sink));
        assert_eq!(t.stats().evicted_full, 1);
        assert!(t.list("web", Some(client(200)), 10).0.is_empty());
        // A refresh keeps 201 past the TTL of its first sighting; 1 expires.
        assert!(t.apply_batch(&s, &batch(9_000, &[(201, "a", 9_000, false)]), &sink));
        assert!(t.apply_batch(&s, &batch(12_500, &[]), &sink));
        assert_eq!(
            backends(&t),
            vec![(client(2), "b".into()), (client(201), "a".into())]
        );
        assert!(sink.same_as(&t));
        // A snapshot round trip rebuilds both families' wheels.
        let mut back: PinTable = crate::codec::decode(&crate::codec::encode(&t).unwrap()).unwrap();
        back.restore();
        assert_eq!(backends(&back), backends(&t));
        assert!(back.apply_batch(&s, &batch(19_500, &[]), &sink));
        assert!(
            backends(&back).is_empty(),
            "both expired: {:?}",
            backends(&back)
        );
    }

    #[test]
    fn pins_refresh_and_expire_by_the_logs_clock() {
        let s = state(10);
        let sink = Mirror::default();
        let mut t = PinTable::default();
        assert!(t.apply_batch(&s, &batch(1_000, &[(1, "a", 1_000, true)]), &sink));
        assert!(t.apply_batch(&s, &batch(2_000, &[(2, "b", 2_000, true)]), &sink));
        // A refresh moves 1 on; nothing expires before 10 s have passed.
        assert!(t.apply_batch(&s, &batch(9_000, &[(1, "a", 9_000, false)]), &sink));
        assert_eq!(
            t.next_expiry_ms(&s),
            Some(11_000),
            "the oldest bucket holds 1 at 1000"
        );
        assert!(
            !t.apply_batch(&s, &batch(11_000, &[]), &sink),
            "1's old ref is stale"
        );
        assert_eq!(backends(&t).len(), 2);
        assert!(
            t.apply_batch(&s, &batch(12_000, &[]), &sink),
            "2 expires at 12000"
        );
        assert_eq!(backends(&t), vec![(client(1), "a".into())]);
        assert!(t.apply_batch(&s, &batch(19_000, &[]), &sink));
        assert!(backends(&t).is_empty());
        assert_eq!(t.stats().expired, 2);
        assert!(sink.same_as(&t));
    }

    #[test]
    fn a_refresh_never_resurrects_or_moves_a_pin() {
        let s = state(60);
        let sink = Mirror::default();
        let mut t = PinTable::default();
        t.apply_batch(&s, &batch(1_000, &[(1, "a", 1_000, true)]), &sink);
        assert!(!t.apply_batch(&s, &batch(1_100, &[(1, "b", 1_100, false)]), &sink));
        assert!(!t.apply_batch(&s, &batch(1_100, &[(2, "b", 1_100, false)]), &sink));
        assert_eq!(backends(&t), vec![(client(1), "a".into())]);
        // A new pin moves it (the owner re-pinned the client).
        assert!(t.apply_batch(&s, &batch(1_200, &[(1, "b", 1_200, true)]), &sink));
        assert_eq!(backends(&t), vec![(client(1), "b".into())]);
        assert_eq!(t.stats().stale, 2);
        assert!(sink.same_as(&t));
    }

    #[test]
    fn off_down_and_removed_backends_lose_their_pins_drained_keep_them() {
        let mut s = state(60);
        let sink = Mirror::default();
        let mut t = PinTable::default();
        t.apply_batch(
            &s,
            &batch(1_000, &[(1, "a", 1_000, true), (2, "b", 1_000, true)]),
            &sink,
        );
        let mut f = farm(60);
        f.backends[1].state = BackendState::Drain;
        s.apply(&Command::PutFarm(f.clone()), 2);
        assert!(!t.reconcile(&s, &sink), "drained keeps its pins");
        assert!(
            !t.apply_batch(&s, &batch(2_000, &[(2, "b", 2_000, false)]), &sink),
            "a drained backend's pins are not refreshed"
        );
        assert!(
            !t.apply_batch(&s, &batch(2_000, &[(3, "b", 2_000, true)]), &sink),
            "nor given new ones"
        );
        f.backends[1].state = BackendState::Off;
        s.apply(&Command::PutFarm(f.clone()), 3);
        assert!(t.reconcile(&s, &sink));
        assert_eq!(backends(&t), vec![(client(1), "a".into())]);
        // A health check on a farm whose backends have no verdict yet: all down.
        f.check = Some(crate::state::HealthCheck::tcp(
            Duration::from_secs(1),
            Duration::from_secs(1),
            1,
            1,
        ));
        s.apply(&Command::PutFarm(f.clone()), 4);
        assert!(t.reconcile(&s, &sink));
        assert!(backends(&t).is_empty());
        assert!(sink.same_as(&t));
        // A farm that stops being persistent loses its table.
        t.apply_batch(&state(60), &batch(5_000, &[(4, "a", 5_000, true)]), &sink);
        f.persistence = Persistence::None;
        s.apply(&Command::PutFarm(f), 5);
        assert!(t.reconcile(&s, &sink));
        assert!(t.counts().is_empty());
        assert!(sink.same_as(&t));
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_seen_pin() {
        let mut s = state(60);
        s.settings.persistence_max_entries = 3;
        let sink = Mirror::default();
        let mut t = PinTable::default();
        t.apply_batch(
            &s,
            &batch(
                2_000,
                &[
                    (1, "a", 1_900, true),
                    (2, "a", 1_000, true),
                    (3, "a", 1_010, true),
                ],
            ),
            &sink,
        );
        // Client 2, seen longest ago, makes room for client 4.
        t.apply_batch(&s, &batch(2_100, &[(4, "b", 2_100, true)]), &sink);
        let clients: Vec<_> = backends(&t).into_iter().map(|(c, _)| c).collect();
        assert_eq!(clients, vec![client(1), client(3), client(4)]);
        assert_eq!(t.stats().evicted_full, 1);
        assert!(sink.same_as(&t));
        // A refresh moves a client out of the oldest place: client 3 is refreshed, so 1
        // (1,900) is now the oldest and goes next.
        t.apply_batch(&s, &batch(2_200, &[(3, "a", 2_200, false)]), &sink);
        t.apply_batch(&s, &batch(2_300, &[(5, "a", 2_300, true)]), &sink);
        let clients: Vec<_> = backends(&t).into_iter().map(|(c, _)| c).collect();
        assert_eq!(clients, vec![client(3), client(4), client(5)]);
        assert!(sink.same_as(&t));
        // A node that rebuilt its wheel from a snapshot evicts the same client.
        let mut restored: PinTable =
            crate::codec::decode(&crate::codec::encode(&t).unwrap()).unwrap();
        restored.restore();
        let other = Mirror::default();
        for tbl in [&mut t, &mut restored] {
            tbl.apply_batch(&s, &batch(2_400, &[(6, "a", 2_400, true)]), &other);
        }
        assert_eq!(backends(&t), backends(&restored));
    }

    #[test]
    fn flush_by_backend_and_whole_farm() {
        let s = state(60);
        let sink = Mirror::default();
        let mut t = PinTable::default();
        t.apply_batch(
            &s,
            &batch(1_000, &[(1, "a", 1_000, true), (2, "b", 1_000, true)]),
            &sink,
        );
        assert!(t.flush("web", Some("b"), &sink));
        assert!(!t.flush("web", Some("zz"), &sink));
        assert_eq!(backends(&t), vec![(client(1), "a".into())]);
        assert!(t.flush("web", None, &sink));
        assert!(!t.flush("web", None, &sink));
        assert!(sink.same_as(&t));
    }

    #[test]
    fn a_stored_pin_is_8_bytes_and_round_trips() {
        assert_eq!(std::mem::size_of::<Pin>(), 8);
        let p = Pin::new(1_048_575, 1_800_000_000_123);
        assert_eq!((p.backend(), p.seen_ms()), (1_048_575, 1_800_000_000_123));
    }

    #[test]
    fn decoding_rebuilds_the_wheel() {
        let s = state(10);
        let mut t = PinTable::default();
        t.apply_batch(&s, &batch(1_000, &[(1, "a", 1_000, true)]), &NoSink);
        let bytes = crate::codec::encode(&t).unwrap();
        let mut back: PinTable = crate::codec::decode(&bytes).unwrap();
        back.restore();
        assert_eq!(back.next_expiry_ms(&s), t.next_expiry_ms(&s));
        assert!(back.apply_batch(&s, &batch(11_000, &[]), &NoSink));
        assert!(back.counts().is_empty());
    }
}
