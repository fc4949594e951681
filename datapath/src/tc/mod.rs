//! The kernel fast path in front of the AF_PACKET workers: a tc ingress program (attached
//! with a tcx bpf_link) that forwards the frames of plain Maglev farms inside the kernel —
//! Ethernet rewrite and a redirect out of the same interface, as nftlb does in its netdev
//! hook — and passes everything else on to the workers, which decide as before.
//!
//! - `prog`: the program, assembled in Rust.
//! - `maps`: its maps and how a table is written into them.
//!
//! Why tc and not XDP: on veth (containers, labs) an XDP program makes the peer drop GSO,
//! so a 64 KiB send crosses the node as ~45 frames (docs/design.md#af-xdp measured TCP
//! upload at 0.20 of direct); at tc ingress the frame is still one GSO skb, forwarded whole.
//! Why the workers still see the rest: their sockets bind `ETH_P_IP` when the fast path
//! runs, which the kernel delivers after tc ingress (an `ETH_P_ALL` tap would see every
//! frame before the program and forward it a second time).
//!
//! Ownership: the program forwards only while the lease deadline in its `cfg` map runs, on
//! the kernel's monotonic clock; a stalled control plane stops it as it stops the workers.
//! Past the deadline frames go to the workers, which drop them as `not_owner`.
//!
//! Lifecycle: the tcx link lives as long as its descriptor, so a stop, SIGTERM or kill -9
//! leaves nothing attached.

mod maps;
mod prog;

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, MutexGuard};

use crate::clock::monotonic_ns;
use crate::ebpf::sys as bpf;
use crate::error::IoError;
use crate::flow::FLOW_SEED;
use crate::iface::InterfaceInfo;
use crate::table::ForwardingTable;

pub(crate) use maps::KernelCount;
use maps::Maps;

/// A loaded and attached fast path. The control plane (publish, lease, scrape) is its only
/// user, through a mutex the workers never take.
#[derive(Debug)]
pub struct FastPath {
    maps: Mutex<Maps>,
    // Declared after the maps, dropped before them: the link detaches the program first.
    /// `None` only for a program run on test frames.
    _link: Option<OwnedFd>,
    prog: OwnedFd,
    interface: String,
}

fn tc_err(stage: &'static str) -> impl FnOnce(io::Error) -> IoError {
    move |source| IoError::FastPath { stage, source }
}

impl FastPath {
    /// Creates the maps, loads the program and attaches it at tc ingress of `iface`. The
    /// program passes every frame until the first [`FastPath::sync`] and lease.
    pub(crate) fn attach(iface: &InterfaceInfo, flow_entries: u32) -> Result<FastPath, IoError> {
        let mut fp = FastPath::load(flow_entries, &iface.name)?;
        let link = bpf::link_create(&fp.prog, iface.index, bpf::BPF_TCX_INGRESS, 0)
            .map_err(tc_err("attach at tcx ingress"))?;
        fp._link = Some(link);
        Ok(fp)
    }

    /// Maps and program, not attached.
    fn load(flow_entries: u32, interface: &str) -> Result<FastPath, IoError> {
        let maps = Maps::create(flow_entries).map_err(tc_err("create maps"))?;
        let insns = prog::fast_path_program(&maps.prog_maps(), FLOW_SEED);
        let prog =
            bpf::prog_load_tc(&insns, prog::PROG_NAME).map_err(|e| IoError::FastPathLoad {
                source: e.source,
                log: e.log,
            })?;
        Ok(FastPath {
            maps: Mutex::new(maps),
            _link: None,
            prog,
            interface: interface.to_owned(),
        })
    }

    fn maps(&self) -> MutexGuard<'_, Maps> {
        // The maps stay usable if a holder panicked: at worst one table or lease is
        // written again by the next call.
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `t` into the maps; logs which farms the kernel forwards and which stay in
    /// user space (and why) when that changes.
    pub(crate) fn sync(&self, t: &ForwardingTable) {
        let mut maps = self.maps();
        match maps.sync(t) {
            Ok(s) => {
                if s.writes > 0 {
                    tracing::debug!(interface = %self.interface, fast = s.fast, slow = s.slow,
                        newly_slow = ?s.newly_slow, writes = s.writes, "fast path table written");
                }
            }
            Err(e) => tracing::error!(interface = %self.interface, error = %e,
                "cannot write the fast path's maps; its farms may forward with the old table"),
        }
    }

    /// Owns until `deadline` on [`monotonic_ns`] (0 = not at all, `u64::MAX` = no end).
    /// Called under the lock that orders lease changes, so the kernel's deadline is the last
    /// one user space set.
    pub(crate) fn set_deadline(&self, deadline: u64) {
        let kernel = match deadline {
            0 | u64::MAX => deadline,
            d => {
                let now = monotonic_ns();
                let k = kernel_now_ns();
                if d <= now {
                    0
                } else {
                    k.saturating_add(d - now)
                }
            }
        };
        if let Err(e) = self.maps().set_deadline(kernel) {
            tracing::error!(interface = %self.interface, error = %e,
                "cannot write the fast path's lease; it forwards until its last deadline");
        }
    }

    /// What the kernel forwarded for registry id `id` (zero if nothing, or on error).
    pub(crate) fn count(&self, id: u32) -> KernelCount {
        self.maps().count(id).unwrap_or_default()
    }
}

/// How many programs are attached at tcx ingress of `interface` (in the calling thread's
/// network namespace): what an operator or a test checks to see that a stopped or killed
/// node left nothing behind.
pub fn tc_ingress_programs(interface: &str) -> Result<u32, IoError> {
    let iface = InterfaceInfo::lookup(interface)?;
    bpf::prog_count(iface.index, bpf::BPF_TCX_INGRESS).map_err(tc_err("query tcx ingress"))
}

/// `bpf_ktime_get_ns`'s clock: CLOCK_MONOTONIC.
fn kernel_now_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => (ts.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec() as u64),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests;
