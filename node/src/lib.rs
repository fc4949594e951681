//! The `dsrlb` node: the daemon and the glue between control plane and datapath.
//!
//! Layout:
//! - [`admin`]: the admin gRPC API (`dsrlb.admin.v1`) every node serves.
//! - [`config`]: the node config file (TOML), its defaults and validation.
//! - [`preflight`]: host checks that refuse a setup that would break DSR.
//! - [`daemon`]: `dsrlb run` — starts everything and keeps the tables current.
//! - [`segment`]: what a pair arbitrated by the L2 segment knows of its peer and segment.
//! - [`witness`]: `dsrlb witness` — a voter with no datapath, the tie-breaker of a pair.
//! - [`tables`]: replicated/config state + health + learned MACs → datapath farm specs.
//! - [`health`]: TCP health checks with rise/fall.
//! - [`persist`]: source-IP persistence glue — the pin mirror sink and the leader's batcher.
//! - [`reload`]: SIGHUP — the admin token reloaded, what needs a restart reported.
//! - [`metrics`]: the Prometheus endpoint.
//! - [`notify`]: systemd readiness (`READY=1`, `STOPPING=1`).
//! - [`flux`]: the ARP-flux watch's member MACs, named conflicts and their warnings.
//! - [`demo`]: `dsrlb demo`'s narration (its hosts come from the `lab` crate).
//!
//! Not here: the admin client (`dsrctl` crate), the network-namespace lab (`lab`), the lab
//! benchmarks (`bench`); this crate knows no packet layout (that is `datapath`'s).

pub mod admin;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod flux;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod ownership;
pub mod persist;
pub mod preflight;
pub mod reload;
pub mod segment;
pub mod signals;
pub mod tables;
pub mod vippath;
pub mod witness;
