//! The AF_XDP I/O backend: an XDP program steers ARP and VIP frames to one AF_XDP socket
//! per receive queue, and workers run the same [`Processor`](crate::process::Processor)
//! over the sockets' UMEM as the AF_PACKET workers run over their rings.
//!
//! - `prog`: the steering program (eBPF assembled in Rust) and its VIP and socket maps.
//! - `xsk`: one AF_XDP socket, its UMEM and rings.
//! - `worker`: the batch loop.
//! - `csum`: partial checksums recognised and completed without a vnet header.
//! - `netlink`: the rtnetlink calls behind them (`bpf()` is `crate::ebpf::sys`).
//!
//! Lifecycle: the program is attached with a bpf_link, whose attachment ends when its
//! descriptor closes — on a normal stop, on SIGTERM, and when the process is killed — so a
//! kill -9 leaves nothing behind. A program attached the older netlink way (a kernel
//! without XDP links, or `DSRLB_XDP_ATTACH=netlink`, the test hook that exercises this
//! path) survives its process, so every start looks for a program named
//! [`prog::PROG_NAME`] on the interface and removes it; a program of another name is
//! never touched (the start fails instead, naming it).
//!
//! Ownership: every node steers its VIPs' frames to its sockets, owner or not, and the
//! processor drops them (`not_owner`) on a node that does not hold the lease, exactly as
//! with AF_PACKET. Passing them to a non-owner's kernel instead would let a node with IP
//! forwarding on route VIP traffic; the lease, not the map, decides who forwards and
//! answers ARP, and it is checked per batch and again before sending.

mod btf;
mod csum;
mod netlink;
mod prog;
mod worker;
mod xsk;

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::thread::JoinHandle;

use crate::bpf::Admit;
use crate::ebpf::sys as bpf;
use crate::error::IoError;
use crate::iface::InterfaceInfo;
use crate::process::{Processor, ProcessorConfig};
use crate::shared::{Shared, sorted_vips};
use crate::worker::ArpPort;

pub(crate) use prog::VipMap;
pub(crate) use xsk::driver;

/// UMEM frames (and ring slots) per socket: 16 MiB of UMEM per queue.
const FRAMES: u32 = 4096;

/// How the program is attached, so it is removed the same way.
#[derive(Debug)]
enum Hook {
    /// A bpf_link: detached when the descriptor closes.
    Link(#[allow(dead_code)] OwnedFd),
    /// A netlink attachment: detached explicitly on drop.
    Netlink { ifindex: u32, mode: u32 },
}

/// The attached program, its maps and the sockets' mode; dropping it detaches the program.
#[derive(Debug)]
pub(crate) struct Attachment {
    hook: Hook,
    prog: OwnedFd,
    _xsks: prog::XskMap,
    _vips: Arc<VipMap>,
    /// Whether the sockets run zero-copy (else copy mode).
    pub(crate) zerocopy: bool,
    /// Whether the kernel completes partial checksums (TX metadata), else user space does.
    pub(crate) tx_meta: bool,
    pub(crate) queues: u32,
    pub(crate) interface: String,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if let Hook::Netlink { ifindex, mode } = self.hook {
            match netlink::detach(ifindex, &self.prog, mode) {
                Ok(()) => tracing::info!(interface = %self.interface, "XDP program detached"),
                Err(e) => {
                    tracing::error!(interface = %self.interface, error = %e, "cannot detach the XDP program; the next start removes it")
                }
            }
        }
    }
}

fn xdp_err(stage: &'static str) -> impl FnOnce(io::Error) -> IoError {
    move |source| IoError::Xdp { stage, source }
}

/// Removes a program of ours a previous run left attached the netlink way.
fn remove_stale(iface: &InterfaceInfo) -> Result<(), IoError> {
    let Some(a) = netlink::attached(iface.index).map_err(xdp_err("query XDP attachment"))? else {
        return Ok(());
    };
    let fd = bpf::prog_fd_by_id(a.prog_id).map_err(xdp_err("open attached XDP program"))?;
    let name = bpf::prog_name(&fd).map_err(xdp_err("read XDP program info"))?;
    if name != prog::PROG_NAME {
        return Err(IoError::XdpBusy {
            interface: iface.name.clone(),
            program: name,
        });
    }
    match netlink::detach(iface.index, &fd, a.mode_flag) {
        Ok(()) => {
            tracing::warn!(interface = %iface.name, prog_id = a.prog_id,
                "removed a stale dsrlb XDP program left by an earlier run");
            Ok(())
        }
        // A live bpf_link holds it: another dsrlb is serving this interface right now.
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(IoError::XdpBusy {
            interface: iface.name.clone(),
            program: format!("{name} (held by a live bpf_link: another dsrlb process)"),
        }),
        Err(e) => Err(xdp_err("detach stale XDP program")(e)),
    }
}

fn attach(iface: &InterfaceInfo, prog: &OwnedFd) -> Result<Hook, IoError> {
    let mode = bpf::XDP_FLAGS_DRV_MODE;
    let netlink_only = std::env::var("DSRLB_XDP_ATTACH").is_ok_and(|v| v == "netlink");
    if !netlink_only {
        match bpf::link_create_xdp(prog, iface.index, mode) {
            Ok(link) => return Ok(Hook::Link(link)),
            // A kernel without XDP links (before 5.9) says EINVAL: the netlink way below.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(xdp_err("attach XDP program (native mode)")(e)),
        }
    }
    netlink::attach(iface.index, prog, mode)
        .map_err(xdp_err("attach XDP program (netlink, native mode)"))?;
    Ok(Hook::Netlink {
        ifindex: iface.index,
        mode,
    })
}

/// Loads the steering program; with the VLAN kfunc where the kernel has it (bound to the
/// device), else without (out-of-band VLAN tags are then lost, docs/design.md#af-xdp).
fn load_program(
    iface: &InterfaceInfo,
    vips: &VipMap,
    xsks: &prog::XskMap,
) -> Result<OwnedFd, IoError> {
    if let Some(id) = btf::kernel_func_id("bpf_xdp_metadata_rx_vlan_tag") {
        let insns = prog::steering_program(vips.raw_fd(), xsks.raw_fd(), Some(id));
        match bpf::prog_load_xdp(&insns, prog::PROG_NAME, Some(iface.index)) {
            Ok(fd) => return Ok(fd),
            Err(e) => tracing::info!(interface = %iface.name, error = %e,
                "XDP program with the VLAN metadata kfunc refused; loading it without (tags the device strips are not restored)"),
        }
    }
    let insns = prog::steering_program(vips.raw_fd(), xsks.raw_fd(), None);
    bpf::prog_load_xdp(&insns, prog::PROG_NAME, None).map_err(|e| IoError::XdpLoad {
        source: e.source,
        log: e.log,
    })
}

/// What [`start`] hands the datapath: the worker threads and the attachment to keep.
pub(crate) struct Started {
    pub(crate) threads: Vec<JoinHandle<()>>,
    pub(crate) attachment: Attachment,
}

/// Sets up the program, maps and sockets on `iface` and starts the workers: queue `q` is
/// served by worker `q % workers`. Every socket is set up before the program is attached
/// and the first thread starts, so errors come back here and nothing is left behind.
pub(crate) fn start(
    iface: &InterfaceInfo,
    workers: usize,
    processor: &ProcessorConfig,
    shared: &Arc<Shared>,
    stop: &Arc<AtomicBool>,
    ring_drops: &Arc<AtomicU64>,
) -> Result<Started, IoError> {
    remove_stale(iface)?;
    let queues = xsk::rx_queues(&iface.name).unwrap_or(1);
    let vips = Arc::new(VipMap::create().map_err(xdp_err("create VIP map"))?);
    let xsks = prog::XskMap::create(queues).map_err(xdp_err("create XSKMAP"))?;
    let prog = load_program(iface, &vips, &xsks)?;

    let mut per_worker: Vec<Vec<xsk::Xsk>> = (0..workers).map(|_| Vec::new()).collect();
    let mut zerocopy = true;
    let mut tx_meta = true;
    for q in 0..queues {
        let s = xsk::Xsk::open(iface.index, q, FRAMES).map_err(|e| IoError::Xdp {
            stage: e.stage,
            source: e.source,
        })?;
        xsks.set(q, &s)
            .map_err(xdp_err("insert socket in XSKMAP"))?;
        if !s.tx_meta {
            tracing::info!(interface = %iface.name, queue = q,
                "kernel takes no AF_XDP TX metadata; partial checksums are completed in user space");
        }
        zerocopy &= s.zerocopy;
        tx_meta &= s.tx_meta;
        per_worker[q as usize % workers].push(s);
    }
    shared
        .register_vip_map(&vips)
        .map_err(xdp_err("fill VIP map"))?;
    // ARP is passed by the program and answered from the ARP socket, on worker 0.
    let table_vips = sorted_vips(&shared.table.load_full());
    let mut arp = Some(ArpPort::open(iface, &table_vips, Admit::ArpIpv6)?);
    if let Some(a) = &arp {
        shared
            .register_sockets(&[(a.sock().clone(), Admit::ArpIpv6)], &table_vips)
            .map_err(|source| IoError::Setsockopt {
                option: "SO_ATTACH_FILTER",
                source,
            })?;
    }
    let hook = attach(iface, &prog)?;
    let attachment = Attachment {
        hook,
        prog,
        _xsks: xsks,
        _vips: vips,
        zerocopy,
        tx_meta,
        queues,
        interface: iface.name.clone(),
    };

    // Only workers with a queue see traffic; they share the farms' new-flow rates.
    let processor = &ProcessorConfig {
        rate_share: per_worker.iter().filter(|s| !s.is_empty()).count(),
        ..*processor
    };
    let mut threads = Vec::new();
    for (index, socks) in per_worker.into_iter().enumerate() {
        if socks.is_empty() {
            continue;
        }
        let processor = Processor::new(index, processor);
        shared.pins.register_queue(processor.pin_queue().clone());
        let w = worker::XdpWorker {
            index,
            socks,
            arp: arp.take(),
            shared: shared.clone(),
            processor,
            stop: stop.clone(),
            ring_drops: ring_drops.clone(),
            mtu: iface.mtu as usize,
        };
        let name = format!("dsrlb-w{index}");
        match std::thread::Builder::new().name(name.clone()).spawn({
            let running = shared.worker_running();
            move || {
                let _running = running;
                w.run()
            }
        }) {
            Ok(h) => threads.push(h),
            Err(source) => {
                // The threads started so far see `stop` once the caller drops them.
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                for t in threads {
                    // A worker that panicked has logged it; the spawn error is what counts.
                    if t.join().is_err() {
                        tracing::error!("datapath worker panicked");
                    }
                }
                return Err(IoError::Spawn {
                    thread: name,
                    source,
                });
            }
        }
    }
    Ok(Started {
        threads,
        attachment,
    })
}
