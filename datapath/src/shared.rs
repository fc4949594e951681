//! What the control plane and the workers share: the current forwarding table, the VIP
//! ownership flag and the counters.
//!
//! Workers load the table and the owner flag once per batch and never block; the control
//! plane publishes a fresh table (RCU style) and flips the flag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use crate::counters::{CounterRegistry, DropCounters};
use crate::packet::MacAddr;
use crate::table::ForwardingTable;

/// State shared by the control plane and every worker of one interface.
#[derive(Debug)]
pub struct Shared {
    /// The snapshot workers forward with.
    pub table: ArcSwap<ForwardingTable>,
    /// Whether this node owns the VIPs (answers ARP, forwards).
    pub owner: AtomicBool,
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
            owner: AtomicBool::new(false),
            drops: DropCounters::new(workers),
            counters: CounterRegistry::new(workers),
            workers,
        })
    }

    /// Replaces the table; workers see it from their next batch.
    pub fn publish(&self, t: ForwardingTable) {
        self.table.store(Arc::new(t));
    }

    /// Release/Acquire: a worker that sees `true` also sees the table published before it.
    pub fn set_owner(&self, on: bool) {
        self.owner.store(on, Ordering::Release);
    }

    pub fn is_owner(&self) -> bool {
        self.owner.load(Ordering::Acquire)
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
        assert_eq!(s.table.load().farm_count(), 0);
        s.publish(ForwardingTable::empty(MacAddr([3; 6])));
        assert_eq!(s.table.load().own_mac(), MacAddr([3; 6]));
    }
}
