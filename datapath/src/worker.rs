//! The worker threads: one OS thread per worker (`dsrlb-w0`, …), each with its own packet
//! socket in one `PACKET_FANOUT_HASH` group, a TPACKET_V2 receive ring and batched
//! transmit.
//!
//! A batch: wait (`poll`, 100 ms, so `stop` is noticed) until the ring has frames; load the
//! table snapshot and the owner flag once; prepare and process up to [`BATCH`] frames in
//! place; send every frame to transmit with one `sendmmsg` whose iovecs point into the
//! ring slots (vnet header + frame: no copy in user space); hand the slots back. The loop
//! allocates nothing, takes no lock and logs nothing per packet.
//!
//! Transmit choice: `sendmmsg` from the RX slots rather than a TPACKET_V2 TX ring. With
//! `sendmmsg` the kernel copies each frame once into its skb and the RX slot is released
//! after the call. A TX ring trades that copy for our own copy of every frame (up to
//! 64 KiB with GSO) from the RX slot into a TX slot — the same bytes moved — and adds a
//! second ring of 64 KiB slots per worker and completion tracking before a slot is reused.
//!
//! ARP has its own socket and ring, outside the fanout group, served by worker 0 before
//! each of its batches: the fanout sockets' filters admit only IPv4 to a VIP and the ARP
//! socket's only ARP for a VIP. A flood beyond capacity fills the data rings and the kernel
//! drops there (counted as `ring_full`), but an ARP request still finds room in its own
//! ring and is answered within one batch, so the VIP never looks dead to the segment.
//!
//! Fanout: `PACKET_FANOUT_HASH` keeps a flow on one worker, so per-worker flow tables are
//! consistent. `PACKET_FANOUT_FLAG_DEFRAG` is deliberately not used: it would reassemble
//! fragments, and we forward them as they are. `PACKET_FANOUT_FLAG_IGNORE_OUTGOING` keeps
//! the node's other outgoing traffic (its kernel's own frames, the resolver's ARP) out of
//! the workers: once sockets are in a group the group's hook decides, not the sockets'
//! `PACKET_IGNORE_OUTGOING`. Our own transmissions never come back either way: with
//! `PACKET_QDISC_BYPASS` they skip the taps, and a group never sees its members' output.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::backend::{FastPathMode, IoBackend, IoMode};
use crate::bpf::{self, Admit};
use crate::clock::monotonic_ns;
use crate::counters::DropReason;
use crate::error::IoError;
use crate::flow::{SWEEP_IDLE, SWEEP_PER_BATCH};
use crate::iface::InterfaceInfo;
use crate::process::{Processor, ProcessorConfig, Verdict};
use crate::ring::{self, MAX_RING_SLOTS, RingGeometry, RxRing, join_fanout, open_worker_socket};
use crate::shared::{Shared, sorted_vips};
use crate::sys::{PacketSocket, TxBatch};
use crate::tc::FastPath;
use crate::xdp;

/// Frames handled per batch (one `sendmmsg`, one table load).
pub const BATCH: usize = 64;
/// Most workers one fanout group takes (the kernel's legacy `PACKET_FANOUT_MAX`).
pub const MAX_WORKERS: usize = 256;
/// Slots per worker when the config says nothing better (≈ 18 MiB per worker).
pub const DEFAULT_RING_SLOTS: usize = 256;
/// Slots of the ARP socket's ring (4 MiB): ARP comes a frame at a time and is served before
/// every data batch, but behind the fast path and beside AF_XDP this socket also carries
/// the IPv6 data (docs/design.md#ipv6), whose TCP windows an 8-slot ring dropped (new
/// connections through an IPv6 VIP waited out SYN retransmissions).
const ARP_RING_SLOTS: usize = 64;
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
    /// Receive ring slots per worker, each holding one frame of up to 64 KiB.
    pub ring_slots: usize,
    pub processor: ProcessorConfig,
    /// The I/O backend to run (AF_PACKET, AF_XDP, or AF_XDP where it can).
    pub io: IoMode,
    /// The kernel fast path in front of the AF_PACKET workers.
    pub fast_path: FastPathMode,
}

impl DatapathConfig {
    /// Defaults for everything but the interface.
    pub fn new(interface: impl Into<String>) -> DatapathConfig {
        DatapathConfig {
            interface: interface.into(),
            workers: 0,
            ring_slots: DEFAULT_RING_SLOTS,
            processor: ProcessorConfig::default(),
            io: IoMode::default(),
            fast_path: FastPathMode::default(),
        }
    }
}

/// Entries of the fast path's flow map: as many flows as the workers' tables hold together.
fn fast_flow_entries(cfg: &DatapathConfig, workers: usize) -> u32 {
    u32::try_from(cfg.processor.flow_capacity.saturating_mul(workers)).unwrap_or(u32::MAX)
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

/// The running workers of one interface. Dropping it stops them, like [`Datapath::stop`].
#[derive(Debug)]
pub struct Datapath {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    ring_drops: Arc<AtomicU64>,
    backend: IoBackend,
    /// The AF_XDP program and maps; dropped after the workers stopped (detaches).
    xdp: Option<xdp::Attachment>,
    /// The kernel fast path (AF_PACKET only); detached when dropped.
    fast: Option<Arc<FastPath>>,
}

impl Datapath {
    /// Starts the I/O backend `cfg.io` names on `cfg.interface` (in the calling thread's
    /// network namespace). With [`IoMode::Auto`], AF_XDP is tried first and any refusal
    /// (no native XDP in the driver, an old kernel, a foreign XDP program) falls back to
    /// AF_PACKET, logged with the reason.
    pub fn start(cfg: DatapathConfig, shared: Arc<Shared>) -> Result<Datapath, IoError> {
        match cfg.io {
            IoMode::AfPacket => Datapath::start_af_packet(cfg, shared),
            IoMode::AfXdp => Datapath::start_af_xdp(cfg, shared),
            // docs/design.md#af-xdp: on veth an XDP program takes GSO away from the peer, and
            // TCP upload through the node fell from 0.45-0.51 of direct to 0.20 in the lab.
            IoMode::Auto if xdp::driver(&cfg.interface).as_deref() == Some("veth") => {
                tracing::info!(interface = %cfg.interface,
                    "io = auto: veth, where XDP costs the peer its GSO; using AF_PACKET \
                     (io = \"af_xdp\" forces AF_XDP)");
                Datapath::start_af_packet(cfg, shared)
            }
            IoMode::Auto => match Datapath::start_af_xdp(cfg.clone(), shared.clone()) {
                Ok(dp) => Ok(dp),
                Err(e) => {
                    tracing::info!(interface = %cfg.interface, reason = %error_chain(&e),
                        "io = auto: AF_XDP not available here, using AF_PACKET");
                    Datapath::start_af_packet(cfg, shared)
                }
            },
        }
    }

    /// The backend that is running.
    pub fn backend(&self) -> IoBackend {
        self.backend
    }

    /// Whether the kernel fast path runs in front of the workers.
    pub fn fast_path(&self) -> bool {
        self.fast.is_some()
    }

    /// AF_XDP: the steering program, one socket per receive queue, queue `q` served by
    /// worker `q % workers`.
    fn start_af_xdp(cfg: DatapathConfig, shared: Arc<Shared>) -> Result<Datapath, IoError> {
        let workers = check_workers(&cfg, &shared)?;
        let iface = InterfaceInfo::lookup(&cfg.interface)?;
        let stop = Arc::new(AtomicBool::new(false));
        let ring_drops = Arc::new(AtomicU64::new(0));
        let started = xdp::start(&iface, workers, &cfg.processor, &shared, &stop, &ring_drops)?;
        let backend = IoBackend::AfXdp {
            zerocopy: started.attachment.zerocopy,
        };
        tracing::info!(
            interface = %iface.name,
            io = backend.as_str(),
            mode = backend.mode(),
            queues = started.attachment.queues,
            partial_checksums = if started.attachment.tx_meta { "kernel" } else { "user space" },
            workers = started.threads.len(),
            "datapath started"
        );
        Ok(Datapath {
            stop,
            threads: started.threads,
            ring_drops,
            backend,
            xdp: Some(started.attachment),
            fast: None,
        })
    }

    /// Opens one socket per worker on `cfg.interface` (in the calling thread's network
    /// namespace), joins them into one fanout group and starts the workers. Every socket
    /// is fully set up before the first thread starts, so errors come back here.
    fn start_af_packet(cfg: DatapathConfig, shared: Arc<Shared>) -> Result<Datapath, IoError> {
        let workers = check_workers(&cfg, &shared)?;
        let geo = RingGeometry::for_slots(cfg.ring_slots).ok_or(IoError::RingSize {
            slots: cfg.ring_slots,
            max: MAX_RING_SLOTS,
        })?;
        let iface = InterfaceInfo::lookup(&cfg.interface)?;
        let table = shared.table.load_full();
        let vips = sorted_vips(&table);

        let fast = match cfg.fast_path {
            FastPathMode::Off => None,
            mode => match FastPath::attach(&iface, fast_flow_entries(&cfg, workers)) {
                Ok(f) => Some(Arc::new(f)),
                Err(e) if mode == FastPathMode::Auto => {
                    tracing::info!(interface = %iface.name, reason = %error_chain(&e),
                        "fast_path = auto: the kernel fast path is not available here; \
                         every frame goes through the workers");
                    None
                }
                Err(e) => return Err(e),
            },
        };
        // Behind the fast path the workers bind ETH_P_IP: delivered after tc ingress, so
        // they see only what the program passed; the ARP tap carries the VLAN-tagged IPv4
        // (docs/design.md#fast-path).
        let (protocol, data_admit, arp_admit) = if fast.is_some() {
            (libc::ETH_P_IP as u16, Admit::Ipv4Host, Admit::ArpOrTagged)
        } else {
            (libc::ETH_P_ALL as u16, Admit::Ipv4, Admit::Arp)
        };
        let filter = bpf::filter_for(data_admit, &vips);

        let mut fanout_id = None;
        let mut sockets = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (sock, ring) = open_worker_socket(&iface, geo, &filter, BATCH, protocol)?;
            fanout_id = Some(join_fanout(&sock, fanout_id)?);
            sockets.push(Port {
                sock: Arc::new(sock),
                ring,
            });
        }
        let mut arp = Some(ArpPort::open(&iface, &vips, arp_admit)?);
        // From here on `publish` keeps the filters in step with the table (a table published
        // since the one above is applied now).
        let socks: Vec<(Arc<PacketSocket>, Admit)> = sockets
            .iter()
            .map(|p| (p.sock.clone(), data_admit))
            .chain(arp.iter().map(|p| (p.0.sock.clone(), arp_admit)))
            .collect();
        shared
            .register_sockets(&socks, &vips)
            .map_err(|source| IoError::Setsockopt {
                option: "SO_ATTACH_FILTER",
                source,
            })?;
        drop(socks);

        let stop = Arc::new(AtomicBool::new(false));
        let ring_drops = Arc::new(AtomicU64::new(0));
        let mut dp = Datapath {
            stop: stop.clone(),
            threads: Vec::with_capacity(workers),
            ring_drops: ring_drops.clone(),
            backend: IoBackend::AfPacket,
            xdp: None,
            fast: fast.clone(),
        };
        if let Some(f) = &fast {
            shared.register_fast_path(f);
        }
        for (index, data) in sockets.into_iter().enumerate() {
            let processor = Processor::new(
                index,
                &ProcessorConfig {
                    rate_share: workers,
                    ..cfg.processor
                },
            );
            shared.pins.register_queue(processor.pin_queue().clone());
            let w = Worker {
                index,
                data,
                arp: arp.take(),
                shared: shared.clone(),
                processor,
                stop: stop.clone(),
                ring_drops: ring_drops.clone(),
                mtu: iface.mtu as usize,
            };
            let name = format!("dsrlb-w{index}");
            let handle = std::thread::Builder::new()
                .name(name.clone())
                .spawn({
                    let running = shared.worker_running();
                    move || {
                        let _running = running;
                        w.run()
                    }
                })
                // `dp` drops on this error path and stops the workers already started.
                .map_err(|source| IoError::Spawn {
                    thread: name,
                    source,
                })?;
            dp.threads.push(handle);
        }
        tracing::info!(
            interface = %iface.name,
            io = dp.backend.as_str(),
            fast_path = dp.fast.is_some(),
            workers,
            ring_slots = geo.frame_nr,
            vips = vips.len(),
            "datapath started"
        );
        Ok(dp)
    }

    /// Worker threads started (AF_XDP starts no more than the interface has queues).
    pub fn workers_started(&self) -> usize {
        self.threads.len()
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
        // Only now, with no worker left on its sockets: detach the XDP program.
        self.xdp = None;
    }
}

/// The worker count `cfg` asks for, checked against the limit and `shared`'s counters.
fn check_workers(cfg: &DatapathConfig, shared: &Shared) -> Result<usize, IoError> {
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
    Ok(workers)
}

/// `e` and its sources, for one log field.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
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

/// The ARP socket: outside the fanout group, with a small ring of its own and a filter
/// that admits only ARP for a VIP, so ARP is served even while a flood fills the data
/// rings. Both I/O backends use it (AF_XDP passes ARP to the kernel, where this socket
/// sees it), served by worker 0 before each of its batches.
pub(crate) struct ArpPort(Port);

impl ArpPort {
    /// `admit` is [`Admit::Arp`], or [`Admit::ArpOrTagged`] behind the kernel fast path
    /// (then it also carries the VLAN-tagged IPv4 only a tap sees with its tag).
    pub(crate) fn open(
        iface: &InterfaceInfo,
        vips: &[std::net::IpAddr],
        admit: Admit,
    ) -> Result<ArpPort, IoError> {
        let geo = RingGeometry::for_slots(ARP_RING_SLOTS).ok_or(IoError::RingSize {
            slots: ARP_RING_SLOTS,
            max: MAX_RING_SLOTS,
        })?;
        let (sock, ring) = open_worker_socket(
            iface,
            geo,
            &bpf::filter_for(admit, vips),
            BATCH,
            libc::ETH_P_ALL as u16,
        )?;
        Ok(ArpPort(Port {
            sock: Arc::new(sock),
            ring,
        }))
    }

    /// The socket, for the VIP filter updates and for `poll`.
    pub(crate) fn sock(&self) -> &Arc<PacketSocket> {
        &self.0.sock
    }

    pub(crate) fn ready(&self) -> bool {
        self.0.ring.ready()
    }

    /// Answers the ARP requests waiting in the ring (one batch).
    pub(crate) fn serve(
        &mut self,
        processor: &mut Processor,
        shared: &Shared,
        index: usize,
        mtu: usize,
        tx: &mut TxBatch,
    ) {
        serve_batch(&mut self.0, processor, shared, index, mtu, tx);
    }

    /// Frames the kernel dropped on this ring since the last call.
    pub(crate) fn ring_drops(&self) -> u64 {
        self.0.sock.packet_stats().map_or(0, |(_, d)| u64::from(d))
    }
}

/// A socket and its receive ring.
struct Port {
    /// Shared with [`Shared`], which re-attaches its filter when the VIP set changes.
    sock: Arc<PacketSocket>,
    ring: RxRing,
}

struct Worker {
    index: usize,
    /// The worker's socket in the fanout group (IPv4 to a VIP).
    data: Port,
    /// The ARP socket, on worker 0 only.
    arp: Option<ArpPort>,
    shared: Arc<Shared>,
    processor: Processor,
    stop: Arc<AtomicBool>,
    ring_drops: Arc<AtomicU64>,
    mtu: usize,
}

impl Worker {
    fn run(mut self) {
        let mut tx = TxBatch::new(BATCH);
        let mut batches: u32 = 0;
        self.shared
            .rings
            .set_slots(self.index, self.data.ring.slots() as u64);
        while !self.stop.load(Ordering::Relaxed) {
            // ARP first, every time round: it must not wait behind a flood.
            if let Some(arp) = self.arp.as_mut().filter(|p| p.ready()) {
                arp.serve(
                    &mut self.processor,
                    &self.shared,
                    self.index,
                    self.mtu,
                    &mut tx,
                );
            }
            if !self.data.ring.ready() {
                if self.arp.as_ref().is_some_and(ArpPort::ready) {
                    continue;
                }
                match self.wait() {
                    Wait::Ready => {}
                    // Idle: a good moment for the statistics syscall.
                    Wait::Idle => {
                        self.shared.rings.set_backlog(self.index, 0);
                        self.collect_ring_drops();
                        self.processor.housekeep(
                            &self.shared.table.load(),
                            monotonic_ns(),
                            SWEEP_IDLE,
                            &self.shared.flows,
                        );
                    }
                    Wait::Fatal => return,
                }
                continue;
            }
            // Measured as the worker comes to its ring: what piled up while it was away
            // (descheduled, busy with the last batch) is the fill that leads to drops.
            self.shared
                .rings
                .set_backlog(self.index, self.data.ring.backlog() as u64);
            serve_batch(
                &mut self.data,
                &mut self.processor,
                &self.shared,
                self.index,
                self.mtu,
                &mut tx,
            );
            self.processor.housekeep(
                &self.shared.table.load(),
                monotonic_ns(),
                SWEEP_PER_BATCH,
                &self.shared.flows,
            );
            batches = batches.wrapping_add(1);
            if batches.is_multiple_of(STATS_EVERY) {
                self.collect_ring_drops();
            }
        }
    }

    /// Waits up to one poll interval for frames on any of the worker's sockets.
    fn wait(&mut self) -> Wait {
        let socks: [Option<&Arc<PacketSocket>>; 2] =
            [Some(&self.data.sock), self.arp.as_ref().map(ArpPort::sock)];
        let mut fds: [PollFd<'_>; 2] = [
            PollFd::new(self.data.sock.as_fd(), PollFlags::POLLIN),
            PollFd::new(
                self.arp
                    .as_ref()
                    .map_or(&self.data.sock, ArpPort::sock)
                    .as_fd(),
                PollFlags::POLLIN,
            ),
        ];
        let n = if self.arp.is_some() { 2 } else { 1 };
        match poll(&mut fds[..n], PollTimeout::from(POLL_MS)) {
            Ok(0) => return Wait::Idle,
            Ok(_) => {}
            Err(nix::Error::EINTR) => return Wait::Ready,
            Err(e) => {
                tracing::error!(worker = self.index, error = %e, "poll on the packet socket failed; worker stops");
                return Wait::Fatal;
            }
        }
        let mut failed = false;
        for (fd, sock) in fds[..n].iter().zip(socks) {
            let revents = fd.revents().unwrap_or(PollFlags::empty());
            let Some(sock) = sock.filter(|_| revents.contains(PollFlags::POLLERR)) else {
                continue;
            };
            failed = true;
            // E.g. ENETDOWN while the interface is down: reading SO_ERROR clears it, and
            // the kernel re-hooks the socket when the interface comes back up.
            match sock.get_int(libc::SOL_SOCKET, libc::SO_ERROR) {
                Ok(err) => {
                    tracing::warn!(worker = self.index, error = %io::Error::from_raw_os_error(err), "packet socket error")
                }
                Err(e) => {
                    tracing::warn!(worker = self.index, error = %e, "cannot read packet socket error")
                }
            }
        }
        if failed {
            // Do not spin on a persistent error condition.
            std::thread::sleep(std::time::Duration::from_millis(u64::from(POLL_MS)));
        }
        Wait::Ready
    }

    fn collect_ring_drops(&mut self) {
        let data = self
            .data
            .sock
            .packet_stats()
            .map_or(0, |(_, d)| u64::from(d));
        let drops = data + self.arp.as_ref().map_or(0, ArpPort::ring_drops);
        if drops > 0 {
            self.ring_drops.fetch_add(drops, Ordering::Relaxed);
            self.shared
                .drops
                .add(self.index, DropReason::RingFull, drops);
        }
    }
}

/// One batch from `port`'s ring: process each frame in place with `processor`, send what is
/// to be sent with as few `sendmmsg` calls as possible, hand the slots back. `index` is the
/// worker's counter slot.
fn serve_batch(
    port: &mut Port,
    processor: &mut Processor,
    shared: &Shared,
    index: usize,
    mtu: usize,
    tx: &mut TxBatch,
) {
    let table = shared.table.load();
    let now = monotonic_ns();
    let owner = shared.is_owner_at(now);
    processor.set_owner_since(shared.owner_since());
    let mut slots = [0usize; BATCH];
    let mut out = [(0usize, 0usize); BATCH];
    let (mut n, mut n_out) = (0, 0);
    while n < BATCH {
        let Some(slot) = port.ring.next_ready() else {
            break;
        };
        slots[n] = slot;
        n += 1;
        let base = port.ring.offset(slot);
        let Some(bytes) = port.ring.slot_mut(slot) else {
            // `next_ready` just saw the slot user-owned; only a kernel bug lands here.
            shared.drops.count(index, DropReason::Truncated);
            continue;
        };
        let f = match ring::prepare(bytes, mtu) {
            Ok(f) => f,
            Err(r) => {
                shared.drops.count(index, r);
                continue;
            }
        };
        let frame = &mut bytes[f.start..f.start + f.len];
        let (off, len) = match processor.process(&table, owner, frame, now) {
            Verdict::Forward => f.tx_span(f.len),
            Verdict::Reply { len } => {
                // An ARP reply carries no offload metadata.
                bytes[f.vnet..f.start].fill(0);
                f.tx_span(len)
            }
            Verdict::Drop(r) => {
                shared.drops.count(index, r);
                continue;
            }
        };
        out[n_out] = (base + off, len);
        n_out += 1;
    }
    drop(table);
    // A stop (SIGSTOP, starvation) while collecting the batch may have outlived the
    // lease; frames that arrived meanwhile must not leave under the old verdict.
    if owner && n_out > 0 && !shared.is_owner_at(monotonic_ns()) {
        shared.drops.add(index, DropReason::NotOwner, n_out as u64);
        n_out = 0;
    }
    transmit(port, shared, index, tx, &out[..n_out]);
    for &slot in &slots[..n] {
        port.ring.release(slot);
    }
}

/// Sends `frames` (slots of `port`'s ring) in as few `sendmmsg` calls as the kernel
/// allows. A frame the kernel refuses outright (EMSGSIZE, EINVAL…) is counted and skipped;
/// EAGAIN/ENOBUFS are retried within a bounded budget.
fn transmit(
    port: &Port,
    shared: &Shared,
    index: usize,
    tx: &mut TxBatch,
    frames: &[(usize, usize)],
) {
    let mut next = 0;
    let mut budget = TX_RETRY_BUDGET;
    while next < frames.len() {
        match tx.send(&port.sock, port.ring.map(), &frames[next..]) {
            Ok(sent) if sent > 0 => next += sent,
            Ok(_) => budget = budget.saturating_sub(1),
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN | libc::ENOBUFS) if budget > 0 => {
                    budget -= 1;
                    wait_writable(&port.sock);
                }
                Some(libc::EAGAIN | libc::ENOBUFS) => {
                    for _ in next..frames.len() {
                        shared.drops.count(index, DropReason::TxError);
                    }
                    return;
                }
                _ => {
                    shared.drops.count(index, DropReason::TxError);
                    next += 1;
                }
            },
        }
        if budget == 0 && next < frames.len() {
            // Only reachable through repeated zero-length sends: give up on the rest.
            for _ in next..frames.len() {
                shared.drops.count(index, DropReason::TxError);
            }
            return;
        }
    }
}

fn wait_writable(sock: &PacketSocket) {
    let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLOUT)];
    // Either outcome leads to another bounded attempt; an error here shows up there.
    if poll(&mut fds, PollTimeout::from(1u8)).is_err() {
        std::thread::yield_now();
    }
}
