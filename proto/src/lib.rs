//! Wire contracts of dsrlb: generated tonic/prost code for the `dsrlb.raft.v1` peer RPCs
//! (`proto/dsrlb/raft/v1/raft.proto`). The admin API (`dsrlb.admin.v1`) joins it with the
//! admin issue.

/// `dsrlb.raft.v1`: vote, append-entries, install-snapshot, forwarded writes and handover.
pub mod raft {
    /// Version 1 of the peer protocol.
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("dsrlb.raft.v1");
    }
}
