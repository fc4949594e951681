//! The AF_XDP worker loop: the same per-batch shape as the AF_PACKET worker, over XSK
//! rings instead of a TPACKET ring.
//!
//! A batch, per socket: move completed transmits back to the fill ring; take up to
//! [`BATCH`] received descriptors; load the table and the lease once; process each frame
//! in place in the UMEM; queue the frames to send on the TX ring (same UMEM address, no
//! copy) and the others back on the fill ring; re-check the lease; publish both rings and
//! kick the kernel with one `sendto` (copy mode processes a bounded number of frames per
//! call, so a large batch may take a few). No allocation, lock or log line per packet.
//!
//! Unlike `sendmmsg`, a descriptor on the TX ring cannot be taken back: if the kick budget
//! runs out (a device refusing for 16 kicks in a row; copy mode on veth always makes
//! progress), the rest of the batch leaves at the next kick, possibly after the lease was
//! re-checked. The lease is still checked before the frames are queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::csum;
use super::xsk::{Xsk, poll_in};
use crate::clock::monotonic_ns;
use crate::counters::DropReason;
use crate::flow::{SWEEP_IDLE, SWEEP_PER_BATCH};
use crate::packet::{Parsed, parse};
use crate::process::{Processor, Verdict};
use crate::shared::Shared;
use crate::sys::TxBatch;
use crate::worker::{ArpPort, BATCH};

const POLL_MS: i32 = 100;
/// Kicks per batch before the rest of a batch waits for the next round (copy mode sends
/// 32 frames per kick; a full ring of a stuck device must not stall the worker).
const KICK_BUDGET: u32 = 16;
const STATS_EVERY: u32 = 1024;
const UDP: u8 = 17;

pub(crate) struct XdpWorker {
    pub(crate) index: usize,
    pub(crate) socks: Vec<Xsk>,
    /// The ARP socket (the program passes ARP to the kernel), on one worker only.
    pub(crate) arp: Option<ArpPort>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) processor: Processor,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) ring_drops: Arc<AtomicU64>,
    pub(crate) mtu: usize,
}

/// A frame to send: UMEM address, length, and where to complete its checksum.
#[derive(Clone, Copy, Default)]
struct Out {
    addr: u64,
    len: u32,
    csum: Option<(u16, u16)>,
}

impl XdpWorker {
    pub(crate) fn run(mut self) {
        let mut pollfds: Vec<libc::pollfd> = self
            .socks
            .iter()
            .map(|s| libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(s),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if let Some(a) = &self.arp {
            pollfds.push(libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(&**a.sock())),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let mut lost_seen = vec![0u64; self.socks.len()];
        let mut batches: u32 = 0;
        let mut arp_tx = TxBatch::new(BATCH);
        let slots: u32 = self.socks.iter().map(|s| s.rx_fill().1).sum();
        self.shared.rings.set_slots(self.index, u64::from(slots));
        while !self.stop.load(Ordering::Relaxed) {
            // ARP first, every time round: it must not wait behind a flood.
            if let Some(arp) = self.arp.as_mut().filter(|a| a.ready()) {
                arp.serve(
                    &mut self.processor,
                    &self.shared,
                    self.index,
                    self.mtu,
                    &mut arp_tx,
                );
            }
            // As the worker comes to its rings: what piled up while it was away.
            let backlog: u32 = self.socks.iter().map(|s| s.rx_fill().0).sum();
            self.shared
                .rings
                .set_backlog(self.index, u64::from(backlog));
            let mut busy = false;
            let mut pending = false;
            for i in 0..self.socks.len() {
                busy |= self.batch(i);
                pending |= self.socks[i].tx_outstanding() > 0;
            }
            if busy {
                self.processor.housekeep(
                    &self.shared.table.load(),
                    monotonic_ns(),
                    SWEEP_PER_BATCH,
                    &self.shared.flows,
                );
                batches = batches.wrapping_add(1);
                if batches.is_multiple_of(STATS_EVERY) {
                    self.collect_drops(&mut lost_seen);
                }
                continue;
            }
            // Frames left on a TX ring (a kick that ran out of budget) are retried soon.
            let timeout = if pending { 1 } else { POLL_MS };
            if pending {
                for i in 0..self.socks.len() {
                    self.flush(i);
                }
            }
            match poll_in(&mut pollfds, timeout) {
                Ok(0) => {
                    self.shared.rings.set_backlog(self.index, 0);
                    self.collect_drops(&mut lost_seen);
                    self.processor.housekeep(
                        &self.shared.table.load(),
                        monotonic_ns(),
                        SWEEP_IDLE,
                        &self.shared.flows,
                    );
                }
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    tracing::error!(worker = self.index, error = %e, "poll on the AF_XDP sockets failed; worker stops");
                    return;
                }
            }
        }
    }

    fn collect_drops(&mut self, seen: &mut [u64]) {
        let arp = self.arp.as_ref().map_or(0, ArpPort::ring_drops);
        if arp > 0 {
            self.ring_drops.fetch_add(arp, Ordering::Relaxed);
            self.shared.drops.add(self.index, DropReason::RingFull, arp);
        }
        for (s, seen) in self.socks.iter().zip(seen.iter_mut()) {
            if let Ok(st) = s.stats()
                && st.rx_lost > *seen
            {
                let d = st.rx_lost - *seen;
                *seen = st.rx_lost;
                self.ring_drops.fetch_add(d, Ordering::Relaxed);
                self.shared.drops.add(self.index, DropReason::RingFull, d);
            }
        }
    }

    /// One batch on socket `i`; false when it had nothing to receive.
    fn batch(&mut self, i: usize) -> bool {
        let shared = self.shared.clone();
        let s = &mut self.socks[i];
        s.recycle_completed();
        let n = s.rx_available(BATCH as u32);
        if n == 0 {
            if s.fill_needs_kick() {
                // Zero-copy drivers may want a wake-up to pick up new fill entries; a failed
                // wake-up is retried on the next idle round.
                if let Err(e) = s.kick() {
                    tracing::trace!(worker = self.index, error = %e, "AF_XDP fill wake-up failed");
                }
            }
            return false;
        }
        let table = shared.table.load();
        let now = monotonic_ns();
        let owner = shared.is_owner_at(now);
        self.processor.set_owner_since(shared.owner_since());
        let mut out = [Out::default(); BATCH];
        let mut n_out = 0;
        let tx_meta = s.tx_meta;
        for k in 0..n {
            let d = s.rx_desc(k);
            let Some(frame) = s.frame_mut(d.addr, d.len) else {
                shared.drops.count(self.index, DropReason::Truncated);
                s.fill_push(d.addr);
                continue;
            };
            if frame.len() > self.mtu + 14 + tag_room(frame) {
                shared.drops.count(self.index, DropReason::Oversize);
                s.fill_push(d.addr);
                continue;
            }
            let o = match self.processor.process(&table, owner, frame, now) {
                Verdict::Forward => {
                    let csum = match parse(frame) {
                        Ok(Parsed::Ipv4(ip)) => csum::partial_at(frame, &ip).inspect(|at| {
                            if !tx_meta {
                                let end = ip.l3_offset + ip.total_len;
                                csum::complete(frame, at.0, at.1, end, ip.protocol == UDP);
                            }
                        }),
                        _ => None,
                    };
                    Out {
                        addr: d.addr,
                        len: d.len,
                        csum: csum.filter(|_| tx_meta),
                    }
                }
                Verdict::Reply { len } => Out {
                    addr: d.addr,
                    len: len as u32,
                    csum: None,
                },
                Verdict::Drop(r) => {
                    shared.drops.count(self.index, r);
                    s.fill_push(d.addr);
                    continue;
                }
            };
            out[n_out] = o;
            n_out += 1;
        }
        s.rx_release(n);
        drop(table);
        // As in the AF_PACKET worker: a stop while the batch was collected may have
        // outlived the lease, and frames must not leave under the old verdict.
        if owner && n_out > 0 && !shared.is_owner_at(monotonic_ns()) {
            shared
                .drops
                .add(self.index, DropReason::NotOwner, n_out as u64);
            for o in &out[..n_out] {
                s.fill_push(o.addr);
            }
            n_out = 0;
        }
        for o in &out[..n_out] {
            if let Some((start, off)) = o.csum {
                s.set_tx_csum(o.addr, start, off);
            }
            s.tx_push(o.addr, o.len, o.csum.is_some());
        }
        s.tx_submit();
        s.fill_submit();
        self.flush(i);
        true
    }

    /// Kicks the kernel until socket `i`'s TX ring is taken, within a bounded budget.
    fn flush(&mut self, i: usize) {
        let s = &mut self.socks[i];
        let mut budget = KICK_BUDGET;
        while s.tx_outstanding() > 0 && budget > 0 {
            if !s.tx_needs_kick() {
                // A zero-copy driver sends on its own.
                return;
            }
            budget -= 1;
            match s.kick() {
                Ok(()) => {}
                Err(e) => match e.raw_os_error() {
                    // More than one kick's worth, or the device queue was busy: again.
                    Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR) => {
                        s.recycle_completed();
                    }
                    _ => {
                        tracing::debug!(worker = self.index, error = %e, "AF_XDP transmit kick failed");
                        self.shared.drops.count(self.index, DropReason::TxError);
                        return;
                    }
                },
            }
        }
        s.recycle_completed();
    }
}

/// Bytes of VLAN tags in `frame` (up to two), which the MTU does not count.
fn tag_room(frame: &[u8]) -> usize {
    let tagged = |off: usize| {
        matches!(
            frame.get(off..off + 2),
            Some([0x81, 0x00]) | Some([0x88, 0xa8])
        )
    };
    match (tagged(12), tagged(16)) {
        (true, true) => 8,
        (true, false) => 4,
        _ => 0,
    }
}
