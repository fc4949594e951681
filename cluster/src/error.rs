//! `ClusterError`: every failure the cluster layer reports to the node, naming the stage it
//! happened in and whether trying again can help.

use crate::state::InvalidCommand;
use crate::types::NodeId;

/// A failure of the cluster layer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The settings cannot work; fix the config. Not retryable.
    #[error("cluster settings: {0}")]
    Settings(String),
    /// Opening or using the on-disk store failed. Not retryable without operator action.
    #[error("storage at {path}: {reason}")]
    Storage {
        /// The database file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The store is damaged: a record fails its checksum or does not decode, or the file
    /// cannot be read as a store at all. Not retryable: the node must not start on it.
    #[error(
        "storage corrupt at {path}: {reason}. This node cannot start on it. Move the data \
         dir aside and rejoin this node empty (docs/design.md#bootstrap: `dsrctl member \
         remove ID` on the cluster, start the node with an empty data dir, then `dsrctl \
         member add ID HOST:PORT`), or restore the file from a backup"
    )]
    Corrupt {
        /// The database file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The peer listener could not be bound. Retryable once the address is free.
    #[error("peer listener on {addr}: {source}")]
    Listen {
        /// The address from `listen`.
        addr: std::net::SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
    /// The Raft core refused to start or stopped. Not retryable in this process.
    #[error("raft core ({stage}): {reason}")]
    Raft {
        /// What was being done.
        stage: &'static str,
        /// openraft's reason.
        reason: String,
    },
    /// A command was refused before it reached the log. Not retryable as is.
    #[error("invalid command: {0}")]
    Invalid(#[from] InvalidCommand),
    /// No leader answered in time (election under way, or no quorum). Retryable.
    #[error("no leader within {waited_ms} ms ({stage})")]
    NoLeader {
        /// What was being done.
        stage: &'static str,
        /// How long we waited.
        waited_ms: u64,
    },
    /// A peer could not be reached or answered with an error. Retryable.
    #[error("peer {peer} ({stage}): {reason}")]
    Peer {
        /// The peer's node id.
        peer: NodeId,
        /// What was being done.
        stage: &'static str,
        /// The transport or remote error.
        reason: String,
    },
    /// A membership change was refused (e.g. another change in progress, unknown node).
    /// Retryable when `retryable`.
    #[error("membership change: {reason}")]
    Membership {
        /// openraft's reason.
        reason: String,
        /// Whether the same call can succeed later.
        retryable: bool,
    },
    /// A leadership handover did not complete. Retryable.
    #[error("leader transfer to {target:?}: {reason}")]
    Transfer {
        /// The node that was asked to take over, if one was chosen.
        target: Option<NodeId>,
        /// What failed.
        reason: String,
    },
}

impl ClusterError {
    /// Whether the same call may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClusterError::Listen { .. }
            | ClusterError::NoLeader { .. }
            | ClusterError::Peer { .. }
            | ClusterError::Transfer { .. } => true,
            ClusterError::Membership { retryable, .. } => *retryable,
            ClusterError::Settings(_)
            | ClusterError::Storage { .. }
            | ClusterError::Corrupt { .. }
            | ClusterError::Raft { .. }
            | ClusterError::Invalid(_) => false,
        }
    }
}
