//! [`ClusterSettings`]: what the node's `[node]`/`[cluster]` config gives the cluster layer,
//! its validation, and the openraft `Config` derived from it.

use crate::contact::{NoContact, PeerContact};
use crate::error::ClusterError;
use crate::persist::{NoSink, PinSink};
use crate::state::SharedSettings;
use crate::tls::PeerTls;
use crate::types::NodeId;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Largest gRPC message either side accepts or sends: room for a real snapshot chunk and a
/// large append-entries batch.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Largest log entry the cluster writes: an admin request is at most 4 MiB (tonic's default
/// decoding limit, which the admin service keeps), a pin batch at most
/// `PinBatch::MAX_WRITES × PinBatch::MAX_WRITE_BYTES` (2.3 MiB).
pub const MAX_ENTRY_BYTES: usize = 4 * 1024 * 1024;

/// Entries in one append-entries message: at [`MAX_ENTRY_BYTES`] each it stays within half
/// of [`MAX_MESSAGE`] (openraft bounds a message by entry count only; its default, 300,
/// could make a message no peer accepts out of large batches).
pub const MAX_PAYLOAD_ENTRIES: u64 = (MAX_MESSAGE / 2 / MAX_ENTRY_BYTES) as u64;

/// How much earlier than the first possible vote an owner's lease must end: covers the
/// workers noticing the deadline (once per batch) and clock rates drifting apart.
pub const LEASE_MARGIN: Duration = Duration::from_millis(20);

/// openraft sends heartbeats on its tick, every 1.5 heartbeat intervals.
pub fn real_heartbeat(heartbeat: Duration) -> Duration {
    heartbeat * 3 / 2
}

/// The VIP leases that are safe and stable with these timings, shortest to longest:
/// - at least three real heartbeat intervals, or a single late heartbeat ends the lease
///   and ownership flaps;
/// - at most the earliest moment any voter grants a vote after the owner's last
///   acknowledged heartbeat (`election_max`, openraft's leader lease), less
///   [`LEASE_MARGIN`]: the old owner is silent before anyone can be elected.
pub fn lease_bounds(heartbeat: Duration, election_max: Duration) -> (Duration, Duration) {
    (
        real_heartbeat(heartbeat) * 3,
        election_max.saturating_sub(LEASE_MARGIN),
    )
}

/// Settings of one cluster node.
#[derive(Clone)]
pub struct ClusterSettings {
    /// This node's id, unique in the cluster.
    pub node_id: NodeId,
    /// Directory of the redb file (`raft.redb`); created if missing.
    pub data_dir: PathBuf,
    /// Address the peer service listens on.
    pub listen: SocketAddr,
    /// Address peers reach this node at (used for itself when `members` is empty).
    pub advertise: SocketAddr,
    /// Initial voters `(id, peer address)`, this node included; empty: a cluster of one.
    pub members: Vec<(NodeId, SocketAddr)>,
    /// The cluster token every peer call carries. Never logged.
    pub token: String,
    /// Leader heartbeat interval.
    pub heartbeat: Duration,
    /// Election timeout range (min, max); openraft's leader lease equals max: a voter that
    /// heard from the leader less than max ago refuses every vote.
    pub election_timeout: (Duration, Duration),
    /// The VIP lease of the daemon (`lease_ms`): how long an owner keeps forwarding after
    /// its last quorum acknowledgement. A leader handing over waits it out before another
    /// node can be elected, whatever its daemon loop is doing.
    pub vip_lease: Duration,
    /// Votes and replicates, never leads for long and never owns a VIP.
    pub witness: bool,
    /// Entries since the last snapshot that trigger a new one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind the snapshot (lets a slightly lagging follower catch
    /// up from the log instead of a snapshot).
    pub keep_logs: u64,
    /// Mutual TLS of the peer service; `None`: plaintext (the token is required either way).
    pub tls: Option<PeerTls>,
    /// Cluster-wide settings the bootstrap writes into the log with the farms (the log's
    /// value rules afterwards).
    pub shared: SharedSettings,
    /// Told of every change to the persistence table as it is applied (the datapath).
    pub pin_sink: Arc<dyn PinSink>,
    /// Told of every authenticated peer call before it is handled (the pair's segment
    /// arbiter, docs/design.md#pair-segment).
    pub peer_contact: Arc<dyn PeerContact>,
    /// This node's dsrlb version, as the peer `Version` call answers it (set by the
    /// daemon from its build; the cluster crate does not know what build it is part of).
    pub version: String,
    /// This node's datapath MAC, as the peer `Version` call answers it (empty: a witness).
    pub datapath_mac: String,
    /// What the peer listener admits (docs/design.md#listeners).
    pub peer_limits: proto::listener::Limits,
}

impl fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written by hand so the token can never reach a log line through `{:?}`.
        f.debug_struct("ClusterSettings")
            .field("node_id", &self.node_id)
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("members", &self.members)
            .field("token", &"<redacted>")
            .field("heartbeat", &self.heartbeat)
            .field("election_timeout", &self.election_timeout)
            .field("vip_lease", &self.vip_lease)
            .field("witness", &self.witness)
            .field("snapshot_every", &self.snapshot_every)
            .field("keep_logs", &self.keep_logs)
            .field("tls", &self.tls)
            .field("shared", &self.shared)
            .field("version", &self.version)
            .field("datapath_mac", &self.datapath_mac)
            .field("peer_limits", &self.peer_limits)
            .finish_non_exhaustive()
    }
}

impl ClusterSettings {
    /// Settings with the contract's defaults (heartbeat 15 ms, elections 100–120 ms, VIP
    /// lease 80 ms, a snapshot every 5000 entries keeping 1000): a cluster of one at
    /// `listen`.
    pub fn new(node_id: NodeId, data_dir: PathBuf, listen: SocketAddr, token: String) -> Self {
        ClusterSettings {
            node_id,
            data_dir,
            listen,
            advertise: listen,
            members: Vec::new(),
            token,
            heartbeat: Duration::from_millis(15),
            election_timeout: (Duration::from_millis(100), Duration::from_millis(120)),
            vip_lease: Duration::from_millis(80),
            witness: false,
            snapshot_every: 5000,
            keep_logs: 1000,
            tls: None,
            shared: SharedSettings::default(),
            pin_sink: Arc::new(NoSink),
            peer_contact: Arc::new(NoContact),
            version: String::new(),
            datapath_mac: String::new(),
            peer_limits: proto::listener::Limits {
                max_connections: 64,
                per_source: 16,
                idle: Duration::from_secs(60),
            },
        }
    }

    /// Rejects settings that cannot form a working cluster.
    pub fn validate(&self) -> Result<(), ClusterError> {
        let bad = |m: String| Err(ClusterError::Settings(m));
        if self.token.is_empty() {
            return bad("the cluster token is empty".into());
        }
        if tonic::metadata::MetadataValue::try_from(format!("Bearer {}", self.token)).is_err() {
            return bad("the cluster token must be printable ASCII without newlines".into());
        }
        let (min, max) = self.election_timeout;
        if self.heartbeat.is_zero() || self.heartbeat >= min {
            return bad(format!(
                "heartbeat {:?} must be non-zero and below the minimum election timeout {min:?}",
                self.heartbeat
            ));
        }
        if min >= max {
            return bad(format!(
                "election timeout min {min:?} must be below max {max:?}"
            ));
        }
        let (shortest, longest) = lease_bounds(self.heartbeat, max);
        if self.vip_lease < shortest || self.vip_lease > longest {
            return bad(format!(
                "VIP lease {:?} must be between {shortest:?} (3 real heartbeats) and {longest:?} \
                 (the election timeout max less {LEASE_MARGIN:?})",
                self.vip_lease
            ));
        }
        if !self.members.is_empty() && !self.members.iter().any(|(id, _)| *id == self.node_id) {
            return bad(format!(
                "members do not list this node (id {})",
                self.node_id
            ));
        }
        for (i, (id, _)) in self.members.iter().enumerate() {
            if self.members[..i].iter().any(|(o, _)| o == id) {
                return bad(format!("member id {id} is listed twice"));
            }
        }
        if self.snapshot_every == 0 {
            return bad("snapshot_every must be at least 1".into());
        }
        Ok(())
    }

    /// The openraft configuration these settings imply.
    pub(crate) fn raft_config(&self) -> Result<openraft::Config, ClusterError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = openraft::Config {
            cluster_name: "dsrlb".into(),
            heartbeat_interval: ms(self.heartbeat),
            election_timeout_min: ms(self.election_timeout.0),
            election_timeout_max: ms(self.election_timeout.1),
            // Elections are called by `elector` (pre-vote, rank); openraft's own timer would
            // raise the term of a node cut off from the cluster and depose a healthy leader
            // when it returns. `trigger().elect()` is not affected by this switch.
            enable_elect: false,
            // A snapshot chunk must fit a message with room for its envelope.
            snapshot_max_chunk_size: (MAX_MESSAGE / 2) as u64,
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_logs,
            install_snapshot_timeout: ms(self.election_timeout.1).max(1000) * 4,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| ClusterError::Settings(e.to_string()))
    }

    /// The voters the lowest-id node initializes the cluster with.
    pub(crate) fn initial_members(&self) -> Vec<(NodeId, SocketAddr)> {
        if self.members.is_empty() {
            vec![(self.node_id, self.advertise)]
        } else {
            self.members.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> ClusterSettings {
        ClusterSettings::new(
            1,
            "/tmp/x".into(),
            "127.0.0.1:7100".parse().expect("addr"),
            "t".into(),
        )
    }

    #[test]
    fn defaults_validate_and_debug_hides_the_token() {
        let mut s = ok();
        s.token = "very-secret".into();
        assert!(s.validate().is_ok());
        assert!(s.raft_config().is_ok());
        assert!(!format!("{s:?}").contains("very-secret"));
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut s = ok();
        s.heartbeat = Duration::from_millis(200);
        assert!(s.validate().is_err());
        let mut s = ok();
        s.members = vec![(2, s.listen)];
        assert!(s.validate().is_err());
        let mut s = ok();
        s.token = "a\nb".into();
        assert!(s.validate().is_err());
        let mut s = ok();
        s.election_timeout = (Duration::from_millis(300), Duration::from_millis(300));
        assert!(s.validate().is_err());
    }
}
