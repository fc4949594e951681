//! The openraft type configuration of dsrlb and the few small types that travel with it.

use crate::state::Command;
use serde::{Deserialize, Serialize};
use std::io::Cursor;

/// A Raft node id: the `[node] id` of the config.
pub type NodeId = u64;

/// What the membership stores per node: its peer address (`advertise`) as `host:port`.
pub type Node = openraft::BasicNode;

openraft::declare_raft_types!(
    /// dsrlb's Raft: commands are [`Command`]s, responses [`Applied`], snapshots are whole
    /// serialized states in memory (a state of farms is small; a real snapshot is well under
    /// the 64 MiB message limit).
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The outcome of a committed write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The log index the command was committed at.
    pub index: u64,
    /// False when applying left the state as it was (e.g. a second `Bootstrap`, or a health
    /// verdict for a backend that no longer exists).
    pub changed: bool,
}

/// The Raft handle of dsrlb.
pub type Raft = openraft::Raft<TypeConfig>;

/// Raft metrics as published by openraft (leader, term, `millis_since_quorum_ack`, ...).
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;
