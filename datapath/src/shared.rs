//! What the control plane and the workers share: the current forwarding table, the VIP
//! ownership lease and the counters.
//!
//! Workers load the table and check the lease once per batch and never block; the control
//! plane publishes a fresh table (RCU style) and extends or ends the lease.
//!
//! Ownership is a deadline on the monotonic clock, not a flag: a node whose control plane
//! stalls (SIGSTOP, a long GC-like pause, starvation) stops answering ARP and forwarding on
//! its own when the lease it was last given runs out, before any other node can be elected.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::counters::{CounterRegistry, DropCounters};
use crate::packet::MacAddr;
use crate::table::ForwardingTable;

/// State shared by the control plane and every worker of one interface.
#[derive(Debug)]
pub struct Shared {
    /// The snapshot workers forward with.
    pub table: ArcSwap<ForwardingTable>,
    /// Until when (on [`monotonic_ns`]) this node owns the VIPs: answers ARP, forwards.
    owner_until: AtomicU64,
    pub drops: DropCounters,
    pub counters: CounterRegistry,
    /// Number of workers the counters have slots for.
    pub workers: usize,
}

impl Shared {
    /// An empty table, not owner, counters for `workers` workers.
    pub fn new(workers: usize, own_mac: MacAddr) -> Arc<Shared> {
        Arc::new(Shared {
            table: ArcSwap::from_pointee(ForwardingTable::empty(own_mac)),
            owner_until: AtomicU64::new(0),
            drops: DropCounters::new(workers),
            counters: CounterRegistry::new(workers),
            workers,
        })
    }

    /// Replaces the table; workers see it from their next batch.
    pub fn publish(&self, t: ForwardingTable) {
        self.table.store(Arc::new(t));
    }

    /// Owns without a deadline (`true`) or not at all (`false`).
    ///
    /// Release/Acquire: a worker that sees ownership also sees the table published before.
    pub fn set_owner(&self, on: bool) {
        self.owner_until
            .store(if on { u64::MAX } else { 0 }, Ordering::Release);
    }

    /// Owns until `deadline` (a [`monotonic_ns`] value), unless changed again before.
    pub fn own_until(&self, deadline: u64) {
        self.owner_until.store(deadline, Ordering::Release);
    }

    /// Whether the lease covers `now` (a [`monotonic_ns`] value).
    #[inline]
    pub fn is_owner_at(&self, now: u64) -> bool {
        now < self.owner_until.load(Ordering::Acquire)
    }

    /// Whether the lease covers this instant.
    pub fn is_owner(&self) -> bool {
        self.is_owner_at(monotonic_ns())
    }
}

/// Nanoseconds on the process's monotonic clock (counting from first use). The clock keeps
/// running while the process is stopped, which is what makes a stale lease visible.
pub fn monotonic_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The [`monotonic_ns`] value of an `Instant` (0 for instants before the clock's base).
pub fn instant_ns(at: Instant) -> u64 {
    let now = Instant::now();
    let now_ns = monotonic_ns();
    if at >= now {
        now_ns.saturating_add(u64::try_from((at - now).as_nanos()).unwrap_or(u64::MAX))
    } else {
        now_ns.saturating_sub(u64::try_from((now - at).as_nanos()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_empty_and_not_owner() {
        let s = Shared::new(2, MacAddr([2; 6]));
        assert!(!s.is_owner());
        s.set_owner(true);
        assert!(s.is_owner());
        s.set_owner(false);
        assert!(!s.is_owner());
        assert_eq!(s.table.load().farm_count(), 0);
        s.publish(ForwardingTable::empty(MacAddr([3; 6])));
        assert_eq!(s.table.load().own_mac(), MacAddr([3; 6]));
    }

    #[test]
    fn a_lease_ends_by_itself() {
        let s = Shared::new(1, MacAddr([2; 6]));
        let now = monotonic_ns();
        s.own_until(now + 1_000_000);
        assert!(s.is_owner_at(now));
        assert!(!s.is_owner_at(now + 1_000_000));
        let later = std::time::Instant::now() + std::time::Duration::from_millis(5);
        let ns = instant_ns(later);
        assert!(ns >= now + 5_000_000, "{ns} vs {now}");
    }
}
