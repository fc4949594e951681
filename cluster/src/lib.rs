//! The replicated control plane of dsrlb (openraft 0.9): farms, backends, health and
//! persistence as a state machine, durable log and snapshots on disk, the authenticated tonic
//! peer transport, and [`ClusterNode`], the one handle the daemon holds.
//!
//! Must not know: packets, the datapath, the config file (the daemon hands it settings).
//!
//! # Layout
//! - `state`: the replicated data and commands; applying is a pure function.
//! - `persist`: the replicated source-IP persistence table, apart from the farm state.
//! - `types`: the openraft type configuration.
//! - `storage` / `storage_sm`: log + vote, and state machine + snapshot, in one redb file;
//!   their `//!` say what is fsynced when. `store`: opening that file (modes, damage,
//!   checksums verified).
//! - the cluster-token check (server) and injection (client) are `proto::auth`'s, re-exported.
//! - `network` / `server`: the two ends of `dsrlb.raft.v1`.
//! - `node`: [`ClusterNode`]: start, bootstrap, the public calls.
//! - `forward`: leader-only requests (writes, membership) carried out by whoever leads.
//! - `shared`: what the handle, the service and the tasks of one node share.
//! - `elector`: who campaigns when the leader falls silent (pre-vote, rank), in place of
//!   openraft's election timer.
//! - `handover`: leadership transfer and the witness rule.
//! - `tls`: the optional mutual TLS of the peer service.
//! - `contact`: the hook that tells the daemon of every peer call (the pair's segment arbiter).
//! - `settings`, `error`, `codec`: settings, the error enum, the one binary encoding.
//! - `fuzzing`: the peer-message fuzz target's entry point (docs/design.md#fuzzing).

mod codec;
mod contact;
mod elector;
mod error;
mod forward;
// The fuzz targets' way in (node/fuzz); not part of the crate's API.
#[doc(hidden)]
pub mod fuzzing;
mod handover;
mod network;
mod node;
pub mod persist;
mod server;
mod settings;
mod shared;
pub mod state;
mod storage;
mod storage_sm;
mod store;
mod tls;
mod types;

pub use contact::{NoContact, PeerContact};
pub use error::ClusterError;
pub use forward::MembershipView;
pub use node::{ClusterNode, MemberInfo};
pub use openraft::ServerState;
pub use persist::{FarmPinWrites, PinBatch, PinRow, PinSink, PinStats, PinTable, PinWrite};
pub use proto::auth::{AUTH_HEADER, ClientAuth, ServerAuth, constant_time_eq};
pub use settings::{
    ClusterSettings, LEASE_MARGIN, MAX_ENTRY_BYTES, MAX_MESSAGE, lease_bounds, real_heartbeat,
};
pub use state::{
    Backend, BackendState, CheckKind, ClusterState, Command, Farm, HealthCheck, HttpCheck,
    InvalidCommand, Persistence, Protocol, Scheduler, SharedSettings, Verdict,
};
pub use storage_sm::Pins;
pub use store::STORE_FILE;
pub use tls::PeerTls;
pub use types::{Applied, Node, NodeId, RaftMetrics, TypeConfig};
