//! Wire contracts of dsrlb: generated tonic/prost code for the `dsrlb.raft.v1` peer RPCs
//! (`proto/dsrlb/raft/v1/raft.proto`) and the `dsrlb.admin.v1` operator API
//! (`proto/dsrlb/admin/v1/admin.proto`, whose header states its conventions), and what
//! both ends of those services must agree on beyond the messages: the bearer-token header
//! ([`auth`]), the admin API's limits, the names of protocols and backend states
//! ([`names`]), how TLS files are read ([`pem`]), and how every listener admits connections
//! ([`listener`]).
//!
//! Must not know: Raft, packets, the daemon's config file.

pub mod auth;
pub mod listener;
pub mod names;
pub mod pem;

/// `dsrlb.raft.v1`: vote, append-entries, install-snapshot, forwarded writes and handover.
pub mod raft {
    /// Version 1 of the peer protocol.
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("dsrlb.raft.v1");
    }
}

/// `dsrlb.admin.v1`: status, farms and backends, apply/export, stats and membership.
pub mod admin {
    /// `ListPersistence` entries returned when the request's `limit` is 0.
    pub const PERSISTENCE_LIST_DEFAULT: u32 = 1000;
    /// The largest `limit` a `ListPersistence` request may ask for: the node builds the reply
    /// under the table's lock, and it must stay well inside gRPC's message size.
    pub const PERSISTENCE_LIST_MAX: u32 = 100_000;

    /// Version 1 of the admin API.
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("dsrlb.admin.v1");
    }
}
