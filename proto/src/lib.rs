//! Wire contracts of dsrlb: generated tonic/prost code for the `dsrlb.raft.v1` peer RPCs
//! (`proto/dsrlb/raft/v1/raft.proto`) and the `dsrlb.admin.v1` operator API
//! (`proto/dsrlb/admin/v1/admin.proto`, whose header states its conventions).

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
    /// Version 1 of the admin API.
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("dsrlb.admin.v1");
    }
}
