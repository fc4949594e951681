//! The per-packet half of dsrlb: frame parsing, farm lookup, Maglev, flow tables, the
//! Ethernet rewrite, ARP, AF_PACKET rings and the worker threads that tie them together.
//!
//! Knows nothing of Raft, gRPC or tokio: the control plane hands it immutable
//! [`table::ForwardingTable`] snapshots and an owner flag, and reads its counters.

pub mod arp;
pub mod bpf;
pub mod clock;
pub mod counters;
pub mod error;
pub mod flow;
pub mod iface;
pub mod maglev;
pub mod packet;
pub mod persist;
pub mod process;
pub mod resolver;
mod ring;
pub mod shared;
mod sys;
pub mod table;
pub mod worker;
