//! What the control plane and the workers share: the current forwarding table, the VIP
//! ownership lease and the counters.
//!
//! Workers load the table and check the lease once per batch and never block; the control
//! plane publishes a fresh table (RCU style) and extends or ends the lease.
//!
//! Publishing also keeps the worker sockets' kernel filters (AF_PACKET) or the XDP
//! program's VIP map (AF_XDP) in step with the table's VIP set, before `publish` returns: a frame for a new VIP that arrives after that reaches a
//! worker. (When each worker re-attached its own filter on noticing a new table, a worker
//! idle in `poll` noticed only at its next wake-up, up to 100 ms later, and the kernel
//! dropped the new VIP's frames uncounted meanwhile — a node could report itself ready
//! while its filters still refused the VIP.) Only the control plane takes that lock.
//!
//! With the kernel fast path (`tc`), publishing writes the table into its maps too, and every
//! lease change is written to its deadline, under one lock so the kernel's deadline is the
//! last one set.
//!
//! Ownership is a deadline on the monotonic clock, not a flag: a node whose control plane
//! stalls (SIGSTOP, a long GC-like pause, starvation) stops answering ARP and forwarding on
//! its own when the lease it was last given runs out, before any other node can be elected.

use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use arc_swap::ArcSwap;

use crate::bpf::{self, Admit};
use crate::clock::monotonic_ns;
use crate::counters::{CounterRegistry, DropCounters, FarmStats, FlowCounters, RingFill};
use crate::packet::MacAddr;
use crate::persist::PinRegistry;
use crate::sys::PacketSocket;
use crate::table::ForwardingTable;
use crate::tc::FastPath;
use crate::xdp::VipMap;

/// State shared by the control plane and every worker of one interface.
#[derive(Debug)]
pub struct Shared {
    /// The snapshot workers forward with.
    pub table: ArcSwap<ForwardingTable>,
    /// Until when (on [`monotonic_ns`]) this node owns the VIPs: answers ARP, forwards.
    owner_until: AtomicU64,
    /// When this node last became owner (on [`monotonic_ns`]): `tcp_strict`'s grace runs
    /// from here.
    owner_since: AtomicU64,
    pub drops: DropCounters,
    /// The workers' flow tables: entries and evictions.
    pub flows: FlowCounters,
    /// The workers' receive rings: size and backlog.
    pub rings: RingFill,
    pub counters: CounterRegistry,
    /// Persistent farms' pin mirrors and the workers' pin request queues.
    pub pins: PinRegistry,
    /// Number of workers the counters have slots for.
    pub workers: usize,
    /// Workers running now: one that ended (a fatal socket error, a panic) no longer counts.
    running: AtomicUsize,
    filters: Mutex<VipFilters>,
    /// The kernel fast path, if one runs (Weak: a stopped datapath detaches it). Its lock
    /// orders lease changes and publishes as the kernel sees them; workers never take it.
    fast: Mutex<Option<Weak<FastPath>>>,
}

/// The worker sockets whose kernel filters follow the published VIP set.
#[derive(Debug, Default)]
struct VipFilters {
    /// The VIP set the registered sockets' filters admit.
    vips: Vec<IpAddr>,
    /// Weak: the workers own their sockets; a stopped datapath's sockets close. Each with
    /// the kind of frames it admits.
    sockets: Vec<(Weak<PacketSocket>, Admit)>,
    /// A VIP set whose filter the kernel refused, so the failure is logged once.
    failed: Option<Vec<IpAddr>>,
    /// The AF_XDP backend's VIP maps (the XDP program steers what they hold), with the
    /// set each holds. Weak: a stopped datapath's maps close.
    maps: Vec<(Weak<VipMap>, Vec<IpAddr>)>,
}

impl VipFilters {
    /// Re-attaches every live socket's filter if the VIP set changed. On failure the old
    /// set is kept, so the next publish tries again.
    fn sync(&mut self, vips: Vec<IpAddr>) {
        self.sockets.retain(|(s, _)| s.strong_count() > 0);
        self.maps.retain(|(m, _)| m.strong_count() > 0);
        for (map, held) in &mut self.maps {
            if *held == vips {
                continue;
            }
            let Some(map) = map.upgrade() else { continue };
            match map.sync(held, &vips) {
                Ok(()) => *held = vips.clone(),
                Err(e) => {
                    // What the map holds now is unknown: start from nothing next time
                    // (deletes of absent keys are no errors).
                    held.clear();
                    tracing::error!(vips = vips.len(), error = %e,
                        "cannot update the XDP VIP map; frames for new VIPs are not received");
                }
            }
        }
        if vips == self.vips {
            return;
        }
        let mut refused = None;
        for admit in Admit::KINDS {
            let mut socks = self
                .sockets
                .iter()
                .filter(|(_, a)| *a == admit)
                .filter_map(|(s, _)| s.upgrade())
                .peekable();
            if socks.peek().is_none() {
                continue;
            }
            let prog = bpf::filter_for(admit, &vips);
            for sock in socks {
                if let Err(e) = sock.attach_filter(&prog) {
                    refused = Some(e);
                }
            }
        }
        match refused {
            None => {
                self.vips = vips;
                self.failed = None;
            }
            Some(e) => {
                if self.failed.as_ref() != Some(&vips) {
                    tracing::error!(vips = vips.len(), error = %e,
                        "cannot attach the VIP filter; frames for new VIPs are not received");
                    self.failed = Some(vips);
                }
            }
        }
    }
}

/// The table's VIPs, sorted: the filter's input and what tells two VIP sets apart.
pub(crate) fn sorted_vips(t: &ForwardingTable) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = t.vips().collect();
    v.sort_unstable();
    v
}

impl Shared {
    /// An empty table, not owner, counters for `workers` workers.
    pub fn new(workers: usize, own_mac: MacAddr) -> Arc<Shared> {
        Arc::new(Shared {
            table: ArcSwap::from_pointee(ForwardingTable::empty(own_mac)),
            owner_until: AtomicU64::new(0),
            owner_since: AtomicU64::new(0),
            drops: DropCounters::new(workers),
            flows: FlowCounters::new(workers),
            rings: RingFill::new(workers),
            counters: CounterRegistry::new(workers),
            pins: PinRegistry::default(),
            workers,
            running: AtomicUsize::new(0),
            filters: Mutex::new(VipFilters::default()),
            fast: Mutex::new(None),
        })
    }

    /// Workers running now (`dsrlb_datapath_workers_running`).
    pub fn workers_running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Counts the calling worker thread as running until the guard drops, which it does
    /// however the thread ends (an unwinding panic included).
    pub(crate) fn worker_running(self: &Arc<Self>) -> RunningWorker {
        self.running.fetch_add(1, Ordering::Relaxed);
        RunningWorker(Arc::clone(self))
    }

    /// Replaces the table; workers see it from their next batch. The worker sockets'
    /// filters admit the new VIP set before this returns (a control-plane call: it may
    /// allocate and make one syscall per worker when the VIP set changed).
    pub fn publish(&self, t: ForwardingTable) {
        let vips = sorted_vips(&t);
        let mut filters = self.filters();
        // Filter first: a frame for a new VIP that meets the old table is counted (`not_vip`)
        // rather than filtered out unseen.
        filters.sync(vips);
        if let Some(fast) = self.fast_path().as_ref().and_then(Weak::upgrade) {
            fast.sync(&t);
        }
        self.table.store(Arc::new(t));
    }

    fn fast_path(&self) -> MutexGuard<'_, Option<Weak<FastPath>>> {
        // An `Option<Weak>` is consistent whatever a panicking holder did.
        self.fast.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts the fast path under `publish` and the lease's care: it gets the current table
    /// and lease now, and every later one.
    pub(crate) fn register_fast_path(&self, fast: &Arc<FastPath>) {
        let mut slot = self.fast_path();
        fast.sync(&self.table.load());
        fast.set_deadline(self.owner_until.load(Ordering::Acquire));
        *slot = Some(Arc::downgrade(fast));
    }

    /// Farm and backend counters (user space and fast path together), the fast path's
    /// per-CPU totals read first.
    pub fn stats(&self) -> Vec<FarmStats> {
        if let Some(fast) = self.fast_path().as_ref().and_then(Weak::upgrade) {
            for (_, b) in self.table.load().backends() {
                let c = fast.count(b.id);
                b.counters.set_kernel(c.packets, c.bytes);
            }
        }
        self.counters.snapshot()
    }

    /// Frames the fast path forwarded to the current table's backends, as of the last
    /// [`Shared::stats`].
    pub fn fast_path_packets(&self) -> u64 {
        self.table
            .load()
            .backends()
            .map(|(_, b)| b.counters.kernel_packets())
            .sum()
    }

    /// Puts `sockets`, each opened with the filter of its kind ([`bpf::filter_for`]) for
    /// `opened_with`, under [`Shared::publish`]'s care; if a table with other VIPs was
    /// published since, they get its filter first. Under the same lock as `publish`, so no
    /// change slips between.
    pub(crate) fn register_sockets(
        &self,
        sockets: &[(Arc<PacketSocket>, Admit)],
        opened_with: &[IpAddr],
    ) -> io::Result<()> {
        let mut filters = self.filters();
        let vips = sorted_vips(&self.table.load());
        if vips != opened_with {
            for (sock, admit) in sockets {
                sock.attach_filter(&bpf::filter_for(*admit, &vips))?;
            }
        }
        filters.sync(vips);
        filters
            .sockets
            .extend(sockets.iter().map(|(s, a)| (Arc::downgrade(s), *a)));
        Ok(())
    }

    /// Puts an AF_XDP VIP map under [`Shared::publish`]'s care, filled with the current
    /// table's VIPs first. Under the same lock as `publish`, so no change slips between.
    pub(crate) fn register_vip_map(&self, map: &Arc<VipMap>) -> io::Result<()> {
        let mut filters = self.filters();
        let vips = sorted_vips(&self.table.load());
        map.sync(&[], &vips)?;
        filters.maps.push((Arc::downgrade(map), vips));
        Ok(())
    }

    fn filters(&self) -> MutexGuard<'_, VipFilters> {
        // The guarded data stays consistent even if a holder panicked mid-way (at worst a
        // socket keeps an older filter until the next publish).
        self.filters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Owns without a deadline (`true`) or not at all (`false`).
    ///
    /// Release/Acquire: a worker that sees ownership also sees the table published before.
    pub fn set_owner(&self, on: bool) {
        self.own_until(if on { u64::MAX } else { 0 });
    }

    /// Owns until `deadline` (a [`monotonic_ns`] value), unless changed again before.
    /// Only the control plane calls it (one writer).
    pub fn own_until(&self, deadline: u64) {
        let fast = self.fast_path();
        let now = monotonic_ns();
        if !self.is_owner_at(now) && deadline > now {
            // Before the deadline: a worker that sees itself owner must never pair that with
            // the start of an older ownership (its grace long over).
            self.owner_since.store(now, Ordering::Release);
        }
        self.owner_until.store(deadline, Ordering::Release);
        if let Some(f) = fast.as_ref().and_then(Weak::upgrade) {
            f.set_deadline(deadline);
        }
    }

    /// When this node last became owner, on [`monotonic_ns`] (0: never).
    #[inline]
    pub fn owner_since(&self) -> u64 {
        self.owner_since.load(Ordering::Acquire)
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

/// A worker thread counted in [`Shared::workers_running`] while this lives.
pub(crate) struct RunningWorker(Arc<Shared>);

impl Drop for RunningWorker {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
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
    fn owner_since_moves_only_when_ownership_begins() {
        let s = Shared::new(1, MacAddr([2; 6]));
        assert_eq!(s.owner_since(), 0);
        let before = monotonic_ns();
        s.own_until(before + 10_000_000_000);
        let since = s.owner_since();
        assert!(since >= before);
        // Extending the lease is not a new ownership.
        s.own_until(monotonic_ns() + 20_000_000_000);
        assert_eq!(s.owner_since(), since);
        s.set_owner(false);
        s.set_owner(true);
        assert!(s.owner_since() >= since);
    }

    #[test]
    fn a_lease_ends_by_itself() {
        let s = Shared::new(1, MacAddr([2; 6]));
        let now = monotonic_ns();
        s.own_until(now + 1_000_000);
        assert!(s.is_owner_at(now));
        assert!(!s.is_owner_at(now + 1_000_000));
    }
}
