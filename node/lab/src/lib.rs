//! The network-namespace lab: one way to build the hosts that `dsrlb demo`, the
//! integration tests, the chaos tests and the benchmarks run on (docs/design.md#lab).
//!
//! Must not know: the daemon's internals. It imports nothing from `node`: it runs the
//! `dsrlb` binary and talks to it as a user would (config file, admin port, metrics).
//!
//! Layout:
//! - [`topology`]: [`Lab`] and [`LabSpec`] — a bridge in a "switch" namespace and one
//!   namespace per host (nodes, backends, clients) on 198.18.0.0/24, all named with a
//!   per-run prefix and removed on drop; backends set up by `deploy/backend-setup.sh`.
//! - [`host`]: [`Host`] — run a closure inside a host ([`Host::run`]), spawn a program in it
//!   ([`Host::spawn`] → [`LabProcess`]), run `ip` in it.
//! - [`backend`]: the backend server behind `dsrlb lab-backend` (HTTP + UDP echo).
//! - [`client`] and [`load`]: HTTP/UDP clients and a bounded load generator.
//! - [`capture`]: an AF_PACKET capture that summarises frames (ARP, IPv4, direction).
//! - [`arp_probe`]: probes the VIP by ARP from a client and judges who answered (outage,
//!   dual owners).
//! - [`pattern`]: the `i % 251` byte pattern every transfer is checked against.
//! - [`ctl`]: runs this build's `dsrctl` binary here or in a host, capturing its output.
//! - [`env`]: whether a lab can run here (`DSRLB_REQUIRE_LAB`), where the binaries are.
//! - [`nftlb`]: nftlb as a DSR director in an [`Role::OtherLb`] host, the benchmark's anchor.
//! - [`lbnode`] and [`cluster`]: dsrlb nodes in the lab; [`ClusterLab`] runs them as one
//!   cluster and kills, restarts and watches them (cluster tests and the chaos suite).
//!
//! Everything needs root (namespaces, AF_PACKET); nothing touches the machine's own
//! interfaces, routes or sysctls.
//!
//! ```no_run
//! use lab::{Lab, LabSpec, client};
//! let mut lab = Lab::build(&LabSpec::default())?;
//! lab.start_backends(std::path::Path::new("target/debug/dsrlb"))?;
//! let b1 = lab.backends()[0].addr(80);
//! let reply = lab.clients()[0].run(|| client::http_get(b1, "/"))?;
//! assert_eq!(reply.backend(), Some("b1"));
//! # Ok::<(), lab::LabError>(())
//! ```

pub mod arp_probe;
pub mod backend;
pub mod capture;
pub mod client;
pub mod cluster;
pub mod ctl;
pub mod env;
mod error;
pub mod host;
pub mod lbnode;
pub mod load;
mod netns;
pub mod nftlb;
mod packet_socket;
pub mod pattern;
mod process;
mod procs;
pub mod stream;
pub mod topology;
pub mod witness;

pub use arp_probe::{ArpAnalysis, ArpClaim, ArpProber, DualOwner, ProbeLog, analyze};
pub use backend::{BackendArgs, BackendServer, run_backend};
pub use capture::{Capture, Frame, Ipv6Summary, inject};
pub use client::{HttpConn, HttpReply, download, http_get, udp_request, upload};
pub use cluster::{ClusterLab, wait_for};
pub use env::{binary, can_run};
pub use error::LabError;
pub use host::{Host, MacAddr, Role};
pub use lbnode::{
    ADMIN_PORT, LabFarm, METRICS_PORT, Metrics, NodeOptions, PEER_PORT, lab_io, scrape,
};
pub use load::{LoadReport, LoadSpec, load, load_with};
pub use process::LabProcess;
pub use procs::{BACKEND_HTTP_PORT, BACKEND_READY_TIMEOUT, BACKEND_UDP_PORT};
pub use stream::Stream;
pub use topology::{DEFAULT_VIP, DEFAULT_VIP6, Lab, LabSpec};
