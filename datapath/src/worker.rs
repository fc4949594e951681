//! The worker threads: one OS thread per worker (`dsrlb-w0`, …), each with two packet
//! sockets and their TPACKET_V2 receive rings — one for frames up to the MTU, one for
//! larger GSO/GRO frames, see [`crate::ring`] — and batched transmit, and the I/O layer's
//! error type.
//!
//! A batch: wait (`poll`, 100 ms, so `stop` is noticed) until a ring has frames; load the
//! table snapshot and the owner flag once; prepare and process up to [`BATCH`] frames in
//! place, taking from the two rings in the order the kernel filled them (the slot
//! timestamps), so a flow's small and large frames leave in the order they came; send
//! every frame to transmit with one `sendmmsg` whose iovecs point into the ring slots
//! (vnet header + frame: no copy in user space); hand the slots back. The loop allocates
//! nothing, takes no lock and logs nothing per packet.
//!
//! Waiting is `poll`, not spinning: a bounded spin (20–200 µs) after each batch was
//! measured on the lab's 2 shared vCPUs and lost throughput and latency, because the
//! spinning worker holds a CPU the client and backend need.
//!
//! Transmit choice: `sendmmsg` from the RX slots rather than a TPACKET_V2 TX ring. With
//! `sendmmsg` the kernel copies each frame once into its skb and the RX slot is released
//! after the call. A TX ring trades that copy for our own copy of every frame (up to
//! 64 KiB with GSO) from the RX slot into a TX slot — the same bytes moved — and adds a
//! second ring of 64 KiB slots per worker and completion tracking before a slot is reused.
//! (A TX ring hands the kernel its pages instead of copying them, but veth copies such
//! pages again on the way to its peer, so the lab cannot show a gain; on a NIC that maps
//! them it would save one copy per large frame — a possible later change.)
//!
//! Fanout: `PACKET_FANOUT_HASH` keeps a flow on one worker, so per-worker flow tables are
//! consistent. The small sockets form one group and the large sockets another; both are
//! joined in worker order, so a flow hashes to the same worker in both.
//! `PACKET_FANOUT_FLAG_DEFRAG` is deliberately not used: it would reassemble fragments,
//! and we forward them as they are. `PACKET_FANOUT_FLAG_IGNORE_OUTGOING` keeps
//! the node's other outgoing traffic (its kernel's own frames, the resolver's ARP) out of
//! the workers: once sockets are in a group the group's hook decides, not the sockets'
//! `PACKET_IGNORE_OUTGOING`. Our own transmissions never come back either way: with
//! `PACKET_QDISC_BYPASS` they skip the taps, and a group never sees its members' output.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::bpf::{self, Lengths};
use crate::counters::DropReason;
use crate::iface::InterfaceInfo;
use crate::process::{Processor, ProcessorConfig, Verdict};
use crate::ring::frame::prepare;
use crate::ring::{MAX_RING_SLOTS, Port, RingGeometry, join_fanout, open_worker_socket};
use crate::shared::{Shared, monotonic_ns};
use crate::sys::{TxBatch, TxFrame};
use crate::table::ForwardingTable;

mod error;
mod tx;

pub use error::IoError;

/// Frames handled per batch (one `sendmmsg`, one table load).
pub const BATCH: usize = 64;
/// Most workers one fanout group takes (the kernel's legacy `PACKET_FANOUT_MAX`).
pub const MAX_WORKERS: usize = 256;
/// Ring memory per worker when the config says nothing better, in 64 KiB slots
/// (≈ 18 MiB per worker).
pub const DEFAULT_RING_SLOTS: usize = 256;
/// Index of the small-frame port in a worker's ports.
const SMALL: usize = 0;
/// Index of the large-frame (GSO/GRO) port in a worker's ports.
const LARGE: usize = 1;
const POLL_MS: u16 = 100;
/// A send the kernel refuses with EAGAIN/ENOBUFS is retried this many times per batch
/// (each after waiting up to 1 ms for room); then the rest of the batch is counted as
/// `tx_error`. Bounded so a stuck device never stalls the worker.
const TX_RETRY_BUDGET: u32 = 16;
/// Kernel ring drops are collected once per this many batches (and on idle).
const STATS_EVERY: u32 = 1024;

/// How to run the datapath on one interface.
#[derive(Clone, Debug)]
pub struct DatapathConfig {
    /// The interface whose L2 segment holds the VIPs and backends.
    pub interface: String,
    /// Worker threads; 0 = one per CPU (see [`resolve_workers`]).
    pub workers: usize,
    /// Receive ring memory per worker, in slots of 64 KiB: half of it holds that many
    /// slots for GSO/GRO frames, the other half about 40 times as many slots for frames
    /// up to the MTU (1..=[`MAX_RING_SLOTS`]).
    pub ring_slots: usize,
    pub processor: ProcessorConfig,
}

impl DatapathConfig {
    /// Defaults for everything but the interface.
    pub fn new(interface: impl Into<String>) -> DatapathConfig {
        DatapathConfig {
            interface: interface.into(),
            workers: 0,
            ring_slots: DEFAULT_RING_SLOTS,
            processor: ProcessorConfig::default(),
        }
    }
}

/// The number of workers [`Datapath::start`] runs for a configured `n`: `n` itself, or one
/// per CPU this process may run on when `n` is 0. Build [`Shared`] with it.
pub fn resolve_workers(n: usize) -> usize {
    if n > 0 {
        return n;
    }
    std::thread::available_parallelism()
        .map(|p| p.get())
        .unwrap_or(1)
        .min(MAX_WORKERS)
}

fn sorted_vips(t: &ForwardingTable) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = t.vips().collect();
    v.sort_unstable();
    v
}

/// The running workers of one interface. Dropping it stops them, like [`Datapath::stop`].
#[derive(Debug)]
pub struct Datapath {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    ring_drops: Arc<AtomicU64>,
}

impl Datapath {
    /// Opens two sockets per worker on `cfg.interface` (in the calling thread's network
    /// namespace), joins them into two fanout groups (small and large frames) and starts
    /// the workers. Every socket is fully set up before the first thread starts, so errors
    /// come back here.
    pub fn start(cfg: DatapathConfig, shared: Arc<Shared>) -> Result<Datapath, IoError> {
        let workers = resolve_workers(cfg.workers);
        if workers > MAX_WORKERS {
            return Err(IoError::WorkerCount {
                workers,
                max: MAX_WORKERS,
            });
        }
        if shared.workers != workers {
            return Err(IoError::WorkerCountMismatch {
                started: workers,
                shared: shared.workers,
            });
        }
        let ring_size = IoError::RingSize {
            slots: cfg.ring_slots,
            max: MAX_RING_SLOTS,
        };
        if cfg.ring_slots == 0 || cfg.ring_slots > MAX_RING_SLOTS {
            return Err(ring_size);
        }
        let iface = InterfaceInfo::lookup(&cfg.interface)?;
        let large_geo = RingGeometry::for_slots((cfg.ring_slots / 2).max(1));
        let small_geo = RingGeometry::for_mtu(iface.mtu as usize, cfg.ring_slots.div_ceil(2));
        let (Some(large_geo), Some(small_geo)) = (large_geo, small_geo) else {
            return Err(ring_size);
        };
        let split = u32::try_from(small_geo.max_frame()).unwrap_or(u32::MAX);
        let geos = [
            (small_geo, Lengths::AtMost(split)),
            (large_geo, Lengths::Over(split)),
        ];
        let table = shared.table.load_full();
        let vips = sorted_vips(&table);

        let mut fanout_ids = [None, None];
        let mut all_ports = Vec::with_capacity(workers);
        for _ in 0..workers {
            let mut open = |kind: usize| -> Result<Port, IoError> {
                let (geo, lengths) = geos[kind];
                let filter = bpf::vip_filter(&vips, lengths);
                let (sock, ring) = open_worker_socket(&iface, geo, &filter)?;
                fanout_ids[kind] = Some(join_fanout(&sock, fanout_ids[kind])?);
                Ok(Port {
                    sock,
                    ring,
                    lengths,
                })
            };
            all_ports.push([open(SMALL)?, open(LARGE)?]);
        }

        let stop = Arc::new(AtomicBool::new(false));
        let ring_drops = Arc::new(AtomicU64::new(0));
        let mut dp = Datapath {
            stop: stop.clone(),
            threads: Vec::with_capacity(workers),
            ring_drops: ring_drops.clone(),
        };
        for (index, ports) in all_ports.into_iter().enumerate() {
            let w = Worker {
                index,
                ports,
                shared: shared.clone(),
                processor: Processor::new(index, &cfg.processor),
                stop: stop.clone(),
                ring_drops: ring_drops.clone(),
                mtu: iface.mtu as usize,
                table: table.clone(),
                vips: vips.clone(),
                failed_filter: None,
            };
            let name = format!("dsrlb-w{index}");
            let handle = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || w.run())
                // `dp` drops on this error path and stops the workers already started.
                .map_err(|source| IoError::Spawn {
                    thread: name,
                    source,
                })?;
            dp.threads.push(handle);
        }
        tracing::info!(
            interface = %iface.name,
            workers,
            small_slots = small_geo.frame_nr,
            large_slots = large_geo.frame_nr,
            split_bytes = split,
            vips = vips.len(),
            "datapath started"
        );
        Ok(dp)
    }

    /// Workers still running (one that hit a fatal socket error has logged it and ended).
    pub fn workers_alive(&self) -> usize {
        self.threads.iter().filter(|t| !t.is_finished()).count()
    }

    /// Frames the kernel dropped because a worker's ring was full, since start (collected
    /// by the workers every few thousand batches and whenever they are idle).
    pub fn ring_drops(&self) -> u64 {
        self.ring_drops.load(Ordering::Relaxed)
    }

    /// Stops the workers and waits for them (at most one poll interval, ~100 ms).
    pub fn stop(self) {
        drop(self);
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let name = t.thread().name().unwrap_or("dsrlb-w?").to_owned();
            if t.join().is_err() {
                tracing::error!(thread = %name, "datapath worker panicked");
            }
        }
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.shutdown();
    }
}

enum Wait {
    /// Frames may be there (or an error was handled): look at the ring.
    Ready,
    /// A whole poll interval without frames.
    Idle,
    Fatal,
}

struct Worker {
    index: usize,
    /// `[small, large]`; transmit goes through the small one's socket.
    ports: [Port; 2],
    shared: Arc<Shared>,
    processor: Processor,
    stop: Arc<AtomicBool>,
    ring_drops: Arc<AtomicU64>,
    mtu: usize,
    /// The snapshot the filter was last built from; kept alive so pointer equality cannot
    /// be fooled by a new table at a freed table's address.
    table: Arc<ForwardingTable>,
    vips: Vec<Ipv4Addr>,
    /// VIP set whose filter the kernel refused, so the failure is logged once.
    failed_filter: Option<Vec<Ipv4Addr>>,
}

impl Worker {
    fn run(mut self) {
        let mut tx = TxBatch::new(BATCH);
        let mut batches: u32 = 0;
        while !self.stop.load(Ordering::Relaxed) {
            if !self.ports.iter().any(|p| p.ring.peek().is_some()) {
                // A filter built for the old VIP set may be what keeps the ring empty (a
                // first farm, a new VIP): look for a new table before sleeping too.
                let table = self.shared.table.load();
                if !Arc::ptr_eq(&table, &self.table) {
                    self.table_changed(Arc::clone(&table));
                }
                drop(table);
                match self.wait() {
                    Wait::Ready => {}
                    // Idle: a good moment for the statistics syscall.
                    Wait::Idle => self.collect_ring_drops(),
                    Wait::Fatal => return,
                }
                continue;
            }
            self.batch(&mut tx);
            batches = batches.wrapping_add(1);
            if batches.is_multiple_of(STATS_EVERY) {
                self.collect_ring_drops();
            }
        }
    }

    /// Waits up to one poll interval for frames on either socket.
    fn wait(&mut self) -> Wait {
        let [small, large] = &self.ports;
        let mut fds = [small, large].map(|p| PollFd::new(p.sock.as_fd(), PollFlags::POLLIN));
        match poll(&mut fds, PollTimeout::from(POLL_MS)) {
            Ok(0) => return Wait::Idle,
            Ok(_) => {}
            Err(nix::Error::EINTR) => return Wait::Ready,
            Err(e) => {
                tracing::error!(worker = self.index, error = %e, "poll on the packet sockets failed; worker stops");
                return Wait::Fatal;
            }
        }
        let failed = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .map(|r| r.contains(PollFlags::POLLERR));
        let mut any = false;
        for (port, failed) in self.ports.iter().zip(failed) {
            if !failed {
                continue;
            }
            any = true;
            // E.g. ENETDOWN while the interface is down: reading SO_ERROR clears it, and
            // the kernel re-hooks the socket when the interface comes back up.
            match port.sock.get_int(libc::SOL_SOCKET, libc::SO_ERROR) {
                Ok(err) => {
                    tracing::warn!(worker = self.index, error = %io::Error::from_raw_os_error(err), "packet socket error")
                }
                Err(e) => {
                    tracing::warn!(worker = self.index, error = %e, "cannot read packet socket error")
                }
            }
        }
        if any {
            // Do not spin on a persistent error condition.
            std::thread::sleep(std::time::Duration::from_millis(u64::from(POLL_MS)));
        }
        Wait::Ready
    }

    fn collect_ring_drops(&mut self) {
        for port in &self.ports {
            if let Ok((_, drops)) = port.sock.packet_stats()
                && drops > 0
            {
                self.ring_drops
                    .fetch_add(u64::from(drops), Ordering::Relaxed);
                self.shared
                    .drops
                    .add(self.index, DropReason::RingFull, u64::from(drops));
            }
        }
    }

    /// The port whose next frame the kernel filled first, and that frame's slot.
    fn next_frame(&self) -> Option<(usize, usize)> {
        let [small, large] = &self.ports;
        match (small.ring.peek(), large.ring.peek()) {
            (None, None) => None,
            (Some(s), None) => Some((SMALL, s)),
            (None, Some(l)) => Some((LARGE, l)),
            // Only here are timestamps read: both rings have frames waiting.
            (Some(s), Some(l)) if large.ring.stamp(l) < small.ring.stamp(s) => Some((LARGE, l)),
            (Some(s), Some(_)) => Some((SMALL, s)),
        }
    }

    fn batch(&mut self, tx: &mut TxBatch) {
        let table = self.shared.table.load();
        if !Arc::ptr_eq(&table, &self.table) {
            self.table_changed(Arc::clone(&table));
        }
        let now = monotonic_ns();
        let owner = self.shared.is_owner_at(now);
        let mut slots = [(0usize, 0usize); BATCH];
        let mut out = [TxFrame::EMPTY; BATCH];
        let (mut n, mut n_out) = (0, 0);
        while n < BATCH {
            let Some((port, slot)) = self.next_frame() else {
                break;
            };
            let ring = &mut self.ports[port].ring;
            ring.advance();
            slots[n] = (port, slot);
            n += 1;
            let base = ring.offset(slot);
            let Some(bytes) = ring.slot_mut(slot) else {
                // `peek` just saw the slot user-owned; only a kernel bug lands here.
                self.shared.drops.count(self.index, DropReason::Truncated);
                continue;
            };
            let f = match prepare(bytes, self.mtu) {
                Ok(f) => f,
                Err(r) => {
                    self.shared.drops.count(self.index, r);
                    continue;
                }
            };
            let frame = &mut bytes[f.start..f.start + f.len];
            let (off, len) = match self.processor.process(&table, owner, frame, now) {
                Verdict::Forward => f.tx_span(f.len),
                Verdict::Reply { len } => {
                    // An ARP reply carries no offload metadata.
                    bytes[f.vnet..f.start].fill(0);
                    f.tx_span(len)
                }
                Verdict::Drop(r) => {
                    self.shared.drops.count(self.index, r);
                    continue;
                }
            };
            out[n_out] = TxFrame {
                ring: port,
                off: base + off,
                len,
            };
            n_out += 1;
        }
        drop(table);
        // A stop (SIGSTOP, starvation) while collecting the batch may have outlived the
        // lease; frames that arrived meanwhile must not leave under the old verdict.
        if owner && n_out > 0 && !self.shared.is_owner_at(monotonic_ns()) {
            self.shared
                .drops
                .add(self.index, DropReason::NotOwner, n_out as u64);
            n_out = 0;
        }
        self.transmit(tx, &out[..n_out]);
        for &(port, slot) in &slots[..n] {
            self.ports[port].ring.release(slot);
        }
    }

    /// A new snapshot: re-attach the filter if its VIP set changed. Runs once per table
    /// change, so its allocation and syscall stay off the per-packet path.
    fn table_changed(&mut self, table: Arc<ForwardingTable>) {
        let vips = sorted_vips(&table);
        self.table = table;
        if vips == self.vips {
            return;
        }
        let attached = self
            .ports
            .iter()
            .try_for_each(|p| p.sock.attach_filter(&bpf::vip_filter(&vips, p.lengths)));
        match attached {
            Ok(()) => {
                self.vips = vips;
                self.failed_filter = None;
            }
            Err(e) => {
                if self.failed_filter.as_ref() != Some(&vips) {
                    tracing::error!(worker = self.index, vips = vips.len(), error = %e,
                        "cannot attach the VIP filter; frames for new VIPs are not received");
                    self.failed_filter = Some(vips);
                }
            }
        }
    }
}
