//! The I/O layer's error: what setting up sockets, rings, threads or reading interfaces
//! can fail with. Its own module because the worker, the ring, the resolver and the
//! interface lookup all return it, and none of them should have to reach into another
//! for it.

use std::io;

/// Errors of the I/O layer. Each names the stage that failed; the `source` carries the
/// errno. All are fatal for the operation that returns them: retrying only helps if the
/// cause (missing interface, privileges, memory) was fixed meanwhile.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("interface {name:?} not found")]
    InterfaceNotFound { name: String },
    #[error("cannot query interface {name:?}")]
    InterfaceQuery { name: String, source: io::Error },
    #[error("cannot open a packet socket for {purpose} (root or CAP_NET_RAW needed)")]
    Socket {
        purpose: &'static str,
        source: io::Error,
    },
    #[error("setsockopt {option} failed")]
    Setsockopt {
        option: &'static str,
        source: io::Error,
    },
    #[error("getsockopt {option} failed")]
    Getsockopt {
        option: &'static str,
        source: io::Error,
    },
    #[error("cannot bind a packet socket to interface {interface:?}")]
    Bind {
        interface: String,
        source: io::Error,
    },
    #[error("cannot map a {bytes}-byte packet ring")]
    Mmap { bytes: usize, source: io::Error },
    #[error("ring of {slots} slots per worker is outside 1..={max}")]
    RingSize { slots: usize, max: usize },
    #[error("{workers} workers is outside 1..={max}")]
    WorkerCount { workers: usize, max: usize },
    #[error(
        "Shared has counters for {shared} workers but {started} would start; build it with resolve_workers()"
    )]
    WorkerCountMismatch { started: usize, shared: usize },
    #[error("cannot spawn thread {thread}")]
    Spawn { thread: String, source: io::Error },
    #[error("AF_XDP setup failed at {stage}")]
    Xdp {
        stage: &'static str,
        source: io::Error,
    },
    #[error("the kernel refused the XDP program: {source}{}", if log.is_empty() { String::new() } else { format!(" (verifier: {log})") })]
    XdpLoad { source: io::Error, log: String },
    #[error(
        "interface {interface:?} already has XDP program {program:?}; dsrlb leaves another program alone"
    )]
    XdpBusy { interface: String, program: String },
    #[error("kernel fast path setup failed at {stage}")]
    FastPath {
        stage: &'static str,
        source: io::Error,
    },
    #[error("the kernel refused the fast path program: {source}{}", if log.is_empty() { String::new() } else { format!(" (verifier: {log})") })]
    FastPathLoad { source: io::Error, log: String },
}
