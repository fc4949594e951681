//! The per-packet half of dsrlb: frame parsing, farm lookup, Maglev, flow tables, the
//! Ethernet rewrite, ARP, the AF_PACKET and AF_XDP I/O and the worker threads that tie
//! them together.
//!
//! Knows nothing of Raft, gRPC or tokio: the control plane hands it immutable
//! [`ForwardingTable`] snapshots and an ownership lease through [`Shared`], and reads its
//! counters there.
//!
//! # Layout
//! Dependencies point down this list (a module uses only those below it):
//! - `worker`: [`Datapath`], the worker threads: socket per worker, fanout, batches; it
//!   starts the AF_PACKET workers or the AF_XDP backend (`xdp`) as [`IoMode`] says.
//! - `tc`: the kernel fast path: a tc ingress program that forwards plain Maglev farms in
//!   the kernel, in front of the AF_PACKET workers.
//! - `xdp`: the AF_XDP backend: the XDP steering program, its maps, AF_XDP sockets and
//!   their workers (with its own `unsafe` wrappers for `bpf()`, XSK rings and rtnetlink).
//! - `backend`: [`IoMode`] (configured) and [`IoBackend`] (chosen).
//! - `resolver`: [`MacResolver`], backend MAC learning and gratuitous ARP on its own thread.
//! - `flux`: the ARP-flux watch: strangers' claims on our VIPs, and the owner's questions.
//! - `ring`: a worker's socket setup and TPACKET_V2 receive ring, frames ready to process.
//! - `iface`: interface facts (index, MAC, MTU, addresses) in the calling namespace.
//! - `shared`: [`Shared`], what the control plane and the workers share: table, lease,
//!   counters, pin mirrors, and the worker sockets' VIP filters.
//! - `process`: [`Processor`], the per-frame decision; no I/O.
//! - `table`: [`ForwardingTable`], the immutable snapshot of farms and backends.
//! - `persist`: source-IP persistence as the workers see it: the pin mirrors and queues.
//! - `limit`: the new-flow rate buckets (GCRA) and a worker's per-source table.
//! - `flow`, `maglev`, `arp`, `ndp`, `packet`, `counters`, `bpf`: the per-worker flow table,
//!   Maglev, ARP frames, IPv6 neighbour discovery, frame parsing, counters and drop reasons, the socket filters.
//! - `sys`: the AF_PACKET side's `unsafe`, thin wrappers over its system calls.
//! - `ebpf`: the `bpf()` wrappers and the eBPF assembler both programs (`tc`, `xdp`) use.
//! - `clock`, `error`: the monotonic clock everything is timed on, and [`IoError`].
//!
//! Modules are private. What other crates use is re-exported below, with the types those
//! items hand out (handles, stats, errors), so every public signature can be named.

mod arp;
mod backend;
mod bpf;
mod clock;
mod counters;
mod ebpf;
mod error;
mod flow;
mod flux;
mod iface;
mod limit;
mod maglev;
mod ndp;
mod packet;
mod persist;
mod process;
mod resolver;
mod ring;
mod segment_probe;
mod shared;
mod sys;
mod table;
mod tc;
mod worker;
mod xdp;

pub use arp::{arp_request, garp_reply, garp_request, parse_arp_reply};
pub use backend::{FastPathMode, IoBackend, IoMode};
pub use clock::{instant_ns, monotonic_ns};
pub use counters::{
    BackendCounters, BackendHandle, BackendStats, CounterRegistry, DropCounters, DropReason,
    FarmCounters, FarmStats, FlowCounters, RingFill, RingFillEntry,
};
pub use error::IoError;
pub use flow::FlowCounts;
pub use flux::{FLUX_PROBE_EVERY, MAX_CONFLICTS, VipConflict};
pub use iface::{InterfaceInfo, Ipv4Net, Ipv6Net, local_ipv4_addresses, local_ipv6_addresses};
pub use maglev::{MAX_SIZE as MAGLEV_MAX_SIZE, default_size as maglev_default_size, is_prime};
pub use ndp::{
    NaFlags, NaView, NsView, multicast_mac, neighbor_solicitation, parse_na, parse_neighbor,
    parse_ns, solicited_node, unsolicited_na,
};
pub use packet::{
    ARP_OP_REPLY, ARP_OP_REQUEST, ArpView, Fragment, Ipv4View, Ipv6View, MAX_IPV6_EXT, MacAddr,
    ParseMacError, Parsed, parse,
};
pub use persist::{FarmPins, PinEvent, PinQueue, PinRegistry, QueueStats};
pub use process::{Processor, ProcessorConfig, Verdict};
pub use resolver::{
    GARP_BATCH, GARP_STEP, MacResolver, ResolverHandle, ResolverStats, ResolverStatsReader,
};
pub use ring::MAX_RING_SLOTS;
pub use segment_probe::SegmentEvidence;
pub use shared::Shared;
pub use table::{
    BackendSpec, BackendState, FarmLimits, FarmSpec, FlowHash, ForwardingTable, PersistSpec,
    Protocol, RateLimit, SpecSource, TableError,
};
pub use tc::tc_ingress_programs;
pub use worker::{Datapath, DatapathConfig, resolve_workers};
