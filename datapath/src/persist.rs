//! Source-IP persistence as the workers see it: per farm a lock-free map client → pin, the
//! mirror of the replicated table that only the control plane writes; per worker a bounded
//! queue of the pins the worker made or wants refreshed, which the control plane's batcher
//! drains and turns into log entries.
//!
//! Workers never wait for the log: a client's first packet goes to the backend Maglev
//! picks from the client's address alone ([`client_hash`]), so its next connections go to
//! the same backend even before the pin is replicated, and any node would pick the same.
//! The pin only matters once the backend set changes, which is what replicating it is for.
//!
//! Times in a pin are on this node's monotonic clock ([`crate::clock::monotonic_ns`]),
//! shifted by [`PIN_CLOCK_OFFSET`] so that a pin seen before this process started (mirrored
//! from the log after a restart) keeps its true age; the control plane converts from the
//! log's wall-clock times when it mirrors a pin.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_queue::ArrayQueue;
use papaya::{Guard, ResizeMode};
use rustc_hash::FxBuildHasher;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seed of the client hash: part of the cross-node contract, like the flow hash's.
const CLIENT_SEED: u64 = 0x6473_726c_625f_7063; // "dsrlb_pc"

/// Added to [`crate::clock::monotonic_ns`] (which starts near zero with the process) in
/// pin times, so times up to ~146 years before the start are representable.
const PIN_CLOCK_OFFSET: u64 = 1 << 62;

/// Events one worker's queue holds before it refuses more (≈ 1.5 MiB per worker).
pub const QUEUE_CAPACITY: usize = 65_536;

/// The Maglev key of a persistent farm's new client: its address only, so every
/// connection of the client (and every node) picks the same backend.
#[inline]
pub fn client_hash(src: IpAddr) -> u64 {
    match src {
        IpAddr::V4(a) => xxh3_64_with_seed(&a.octets(), CLIENT_SEED),
        IpAddr::V6(a) => xxh3_64_with_seed(&a.octets(), CLIENT_SEED),
    }
}

/// One client's pin in the mirror (16 bytes: a million of these is the bulk of the mirror).
#[derive(Debug)]
pub struct Pin {
    /// Registry id of the backend (see [`crate::counters::CounterRegistry::backend`]).
    pub backend: u32,
    /// When a worker last asked for a refresh of this pin, in units of 2^20 ns (~1 ms) on
    /// the monotonic clock, wrapping every ~52 days (0: never): one request per retry
    /// interval, however many packets and workers see the client meanwhile.
    refresh_asked: AtomicU32,
    /// When the replicated table last saw the client: monotonic + [`PIN_CLOCK_OFFSET`].
    seen: u64,
}

/// [`Pin::refresh_asked`]'s unit.
const ASKED_SHIFT: u32 = 20;

impl Pin {
    /// Time since the replicated table last saw the client, at monotonic `now_ns`.
    #[inline]
    pub fn age_ns(&self, now_ns: u64) -> u64 {
        (now_ns + PIN_CLOCK_OFFSET).saturating_sub(self.seen)
    }

    /// Claims the right to ask for a refresh at `now_ns`: true for one caller per `retry_ns`.
    #[inline]
    pub(crate) fn claim_refresh(&self, now_ns: u64, retry_ns: u64) -> bool {
        let now = ((now_ns >> ASKED_SHIFT) as u32).max(1);
        let retry = (retry_ns >> ASKED_SHIFT) as u32;
        let last = self.refresh_asked.load(Ordering::Relaxed);
        if last != 0 && now.wrapping_sub(last) < retry {
            return false;
        }
        self.refresh_asked
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// The mirror of one farm's pins. Workers read it without locks; only the control plane
/// writes it.
pub struct FarmPins {
    key: u32,
    name: String,
    map: papaya::HashMap<u32, Pin, FxBuildHasher>,
    /// IPv6 clients apart, so an IPv4 pin's key stays 4 bytes.
    map6: papaya::HashMap<u128, Pin, FxBuildHasher>,
}

impl std::fmt::Debug for FarmPins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FarmPins")
            .field("key", &self.key)
            .field("name", &self.name)
            .field("len", &self.len())
            .finish()
    }
}

impl FarmPins {
    fn new(key: u32, name: &str) -> Self {
        FarmPins {
            key,
            name: name.to_string(),
            // One writer: it may as well finish a resize at once; readers never wait.
            map: papaya::HashMap::builder()
                .hasher(FxBuildHasher)
                .resize_mode(ResizeMode::Blocking)
                .build(),
            map6: papaya::HashMap::builder()
                .hasher(FxBuildHasher)
                .resize_mode(ResizeMode::Blocking)
                .build(),
        }
    }

    /// The key events of this farm carry.
    pub fn key(&self) -> u32 {
        self.key
    }

    /// The farm's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Pins `client` to backend id `backend`, last seen at monotonic `seen_ns`.
    pub fn set(&self, client: IpAddr, backend: u32, seen_ns: u64) {
        self.insert(client, backend, seen_ns + PIN_CLOCK_OFFSET);
    }

    /// Pins `client` to backend id `backend`, last seen `ago_ns` before now (possibly
    /// before this process started).
    pub fn set_seen_ago(&self, client: IpAddr, backend: u32, ago_ns: u64) {
        let now = crate::clock::monotonic_ns() + PIN_CLOCK_OFFSET;
        self.insert(client, backend, now.saturating_sub(ago_ns));
    }

    fn insert(&self, client: IpAddr, backend: u32, seen: u64) {
        let pin = Pin {
            backend,
            refresh_asked: AtomicU32::new(0),
            seen,
        };
        match client {
            IpAddr::V4(a) => {
                self.map.pin().insert(a.to_bits(), pin);
            }
            IpAddr::V6(a) => {
                self.map6.pin().insert(a.to_bits(), pin);
            }
        }
    }

    /// Forgets `client`'s pin.
    pub fn remove(&self, client: IpAddr) {
        match client {
            IpAddr::V4(a) => {
                self.map.pin().remove(&a.to_bits());
            }
            IpAddr::V6(a) => {
                self.map6.pin().remove(&a.to_bits());
            }
        }
    }

    /// Forgets every pin.
    pub fn clear(&self) {
        self.map.pin().clear();
        self.map6.pin().clear();
    }

    /// Pins held.
    pub fn len(&self) -> usize {
        self.map.len() + self.map6.len()
    }

    /// Whether no pin is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty() && self.map6.is_empty()
    }

    /// `client`'s pin: (backend id, age at monotonic `now_ns`), for tests and tools.
    pub fn get(&self, client: IpAddr, now_ns: u64) -> Option<(u32, u64)> {
        let found = |p: &Pin| (p.backend, p.age_ns(now_ns));
        match client {
            IpAddr::V4(a) => self.map.pin().get(&a.to_bits()).map(found),
            IpAddr::V6(a) => self.map6.pin().get(&a.to_bits()).map(found),
        }
    }

    /// A guard for [`FarmPins::lookup`]: cheap, taken per packet.
    #[inline]
    pub(crate) fn guard(&self) -> impl Guard + '_ {
        self.map.guard()
    }

    /// A guard for [`FarmPins::lookup6`] (each map has its own collector).
    #[inline]
    pub(crate) fn guard6(&self) -> impl Guard + '_ {
        self.map6.guard()
    }

    #[inline]
    pub(crate) fn lookup<'g>(&self, client: u32, guard: &'g impl Guard) -> Option<&'g Pin> {
        self.map.get(&client, guard)
    }

    #[inline]
    pub(crate) fn lookup6<'g>(&self, client: u128, guard: &'g impl Guard) -> Option<&'g Pin> {
        self.map6.get(&client, guard)
    }
}

/// The farms' pin mirrors by name, kept across table rebuilds (a rebuilt table takes the
/// same map, so no pin is lost when a farm's backends change), and the worker queues.
#[derive(Debug, Default)]
pub struct PinRegistry {
    farms: Mutex<Farms>,
    queues: Mutex<Vec<Arc<PinQueue>>>,
}

#[derive(Debug, Default)]
struct Farms {
    by_key: Vec<Arc<FarmPins>>,
    by_name: HashMap<String, u32>,
}

impl PinRegistry {
    fn farms(&self) -> MutexGuard<'_, Farms> {
        self.farms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The mirror of `farm`, made empty the first time the farm is named.
    pub fn farm(&self, farm: &str) -> Arc<FarmPins> {
        let mut f = self.farms();
        if let Some(&k) = f.by_name.get(farm) {
            return f.by_key[k as usize].clone();
        }
        let key = f.by_key.len() as u32;
        let pins = Arc::new(FarmPins::new(key, farm));
        f.by_key.push(pins.clone());
        f.by_name.insert(farm.to_string(), key);
        pins
    }

    /// The mirror of the farm an event names.
    pub fn by_key(&self, key: u32) -> Option<Arc<FarmPins>> {
        self.farms().by_key.get(key as usize).cloned()
    }

    /// Every farm's mirror.
    pub fn all(&self) -> Vec<Arc<FarmPins>> {
        self.farms().by_key.clone()
    }

    /// Adds a worker's queue to those [`PinRegistry::drain`] empties.
    pub fn register_queue(&self, q: Arc<PinQueue>) {
        self.queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(q);
    }

    /// Takes up to `total` events, an equal share from every worker queue (so one busy
    /// worker cannot starve the others' requests), in each queue's order.
    pub fn drain(&self, total: usize, mut f: impl FnMut(PinEvent)) {
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let share = (total / queues.len().max(1)).max(1);
        for q in queues.iter() {
            for _ in 0..share {
                let Some(e) = q.queue.pop() else {
                    break;
                };
                f(e);
            }
        }
    }

    /// Queue counters summed over the workers.
    pub fn queue_stats(&self) -> QueueStats {
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = QueueStats::default();
        for q in queues.iter() {
            s.new_queued += q.new_queued.load(Ordering::Relaxed);
            s.refresh_queued += q.refresh_queued.load(Ordering::Relaxed);
            s.new_dropped += q.new_dropped.load(Ordering::Relaxed);
            s.refresh_dropped += q.refresh_dropped.load(Ordering::Relaxed);
        }
        s
    }
}

/// What a worker asks the batcher to replicate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinEvent {
    /// [`FarmPins::key`] of the farm.
    pub farm: u32,
    /// The client address.
    pub client: IpAddr,
    /// Registry id of the backend.
    pub backend: u32,
    /// When the worker saw the client (monotonic clock).
    pub seen_ns: u64,
    /// A new pin, or a refresh of the pin the worker found.
    pub new: bool,
}

/// Counters of the worker queues.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub new_queued: u64,
    pub refresh_queued: u64,
    pub new_dropped: u64,
    pub refresh_dropped: u64,
}

/// One worker's queue of pin events. Only its worker pushes (so its counters are written by
/// one thread), only the batcher pops.
#[derive(Debug)]
pub struct PinQueue {
    queue: ArrayQueue<PinEvent>,
    new_queued: AtomicU64,
    refresh_queued: AtomicU64,
    new_dropped: AtomicU64,
    refresh_dropped: AtomicU64,
}

impl PinQueue {
    /// A queue of `capacity` events (at least 2).
    pub fn new(capacity: usize) -> Self {
        PinQueue {
            queue: ArrayQueue::new(capacity.max(2)),
            new_queued: AtomicU64::new(0),
            refresh_queued: AtomicU64::new(0),
            new_dropped: AtomicU64::new(0),
            refresh_dropped: AtomicU64::new(0),
        }
    }

    /// Queues `e`. A refresh only takes the first half of the room, so when the batcher
    /// falls behind refreshes are dropped before new pins (a lost refresh costs an earlier
    /// expiry; a lost new pin costs the client's stickiness after a change).
    #[inline]
    pub(crate) fn push(&self, e: PinEvent) {
        let bump = |c: &AtomicU64| c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        if !e.new && self.queue.len() >= self.queue.capacity() / 2 {
            bump(&self.refresh_dropped);
            return;
        }
        match (self.queue.push(e), e.new) {
            (Ok(()), true) => bump(&self.new_queued),
            (Ok(()), false) => bump(&self.refresh_queued),
            (Err(_), true) => bump(&self.new_dropped),
            (Err(_), false) => bump(&self.refresh_dropped),
        }
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no event waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Takes the oldest event (the batcher's side; tests).
    pub fn pop(&self) -> Option<PinEvent> {
        self.queue.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ev(i: u8, new: bool) -> PinEvent {
        PinEvent {
            farm: 0,
            client: Ipv4Addr::new(198, 19, 0, i).into(),
            backend: 1,
            seen_ns: 1,
            new,
        }
    }

    #[test]
    fn refreshes_are_dropped_before_new_pins() {
        let q = PinQueue::new(8);
        for i in 0..4 {
            q.push(ev(i, false));
        }
        q.push(ev(9, false));
        for i in 4..8 {
            q.push(ev(i, true));
        }
        q.push(ev(10, true));
        assert_eq!(q.len(), 8);
        let r = PinRegistry::default();
        let q = Arc::new(q);
        r.register_queue(q.clone());
        assert_eq!(
            r.queue_stats(),
            QueueStats {
                new_queued: 4,
                refresh_queued: 4,
                new_dropped: 1,
                refresh_dropped: 1,
            }
        );
        let mut got = Vec::new();
        r.drain(usize::MAX, |e| match e.client {
            IpAddr::V4(c) => got.push(c.octets()[3]),
            IpAddr::V6(c) => panic!("an IPv6 client {c}"),
        });
        assert_eq!(got, [0, 1, 2, 3, 4, 5, 6, 7]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_refresh_is_claimed_once_per_interval() {
        let r = PinRegistry::default();
        let f = r.farm("web");
        assert_eq!(r.farm("web").key(), f.key(), "same farm, same mirror");
        assert_ne!(r.farm("dns").key(), f.key());
        let c4 = Ipv4Addr::new(198, 19, 0, 1);
        let c = IpAddr::V4(c4);
        f.set(c, 7, 100);
        let g = f.guard();
        let p = f.lookup(c4.to_bits(), &g).unwrap();
        const S: u64 = 1_000_000_000;
        assert!(p.claim_refresh(10 * S, S));
        assert!(!p.claim_refresh(10 * S + S / 2, S));
        assert!(p.claim_refresh(11 * S + S / 100, S));
        assert_eq!(std::mem::size_of::<Pin>(), 16);
        assert_eq!(f.get(c, 150), Some((7, 50)));
        f.set_seen_ago(c, 8, 3_600_000_000_000);
        let (b, age) = f.get(c, crate::clock::monotonic_ns()).unwrap();
        assert!(
            b == 8 && age >= 3_600_000_000_000,
            "an hour before the process started"
        );
        f.remove(c);
        assert!(f.is_empty());
    }

    #[test]
    fn the_client_hash_is_pinned() {
        // A change here moves every persistent farm's clients on mixed-version clusters.
        assert_eq!(client_hash(Ipv4Addr::new(1, 2, 3, 4).into()), PINNED);
    }

    const PINNED: u64 = 9_988_321_944_367_738_719;
}
