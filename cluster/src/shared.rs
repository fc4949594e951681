//! [`Shared`]: what the public handle, the peer service and the background tasks of one node
//! all hold (the Raft handle, the peer channels, timing), and small helpers over metrics.

use crate::network::{PeerCallError, PeerClient, PeerNetwork};
use crate::types::{NodeId, Raft, RaftMetrics};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Timing derived from the settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub heartbeat: Duration,
    /// openraft's leader lease: a voter that heard from the leader this recently refuses
    /// every vote.
    pub election_max: Duration,
    /// The VIP lease of the node above (`lease_ms`): how long an owner keeps forwarding
    /// after its last quorum acknowledgement.
    pub vip_lease: Duration,
}

impl Timing {
    /// How long a write (or another call that needs a leader) may wait for one: several
    /// elections' worth, never below a few seconds.
    pub fn leader_deadline(&self) -> Duration {
        (self.election_max * 10).max(Duration::from_secs(5))
    }

    /// Between two campaigners' turns (see `elector`): long enough for a pre-vote and a
    /// vote round trip on a LAN, short against the lease.
    pub fn elector_step(&self) -> Duration {
        (self.election_max / 4).max(Duration::from_millis(5))
    }
}

/// The state of one node shared by its tasks.
pub(crate) struct Shared {
    pub id: NodeId,
    pub raft: Raft,
    /// A handle on the log store openraft writes, for reads openraft does not expose.
    pub log: crate::storage::LogStore,
    pub net: PeerNetwork,
    pub witness: bool,
    pub timing: Timing,
    /// When this process started its Raft core: openraft keeps no record of the last
    /// heartbeat across a restart, so lease rules count from here at first.
    pub started: std::time::Instant,
    /// Set while this leader hands over: local writes wait, so the log does not move ahead
    /// of the chosen follower (which would make this node refuse its vote request).
    pub handing_over: AtomicBool,
    /// Until when a handover under way holds this node's elector and makes it refuse
    /// pre-votes (see `handover`): set on the chosen node and on every other voter.
    pub hold_until: std::sync::Mutex<Option<std::time::Instant>>,
    /// One handover at a time (the witness guard, a shutdown and an admin call may race).
    pub handover_lock: tokio::sync::Mutex<()>,
    /// Told of every peer call before it is handled (see `contact`).
    pub peer_contact: std::sync::Arc<dyn crate::contact::PeerContact>,
    /// What the peer `Version` call answers (`ClusterSettings::version`).
    pub version: String,
    /// What the peer `Version` call answers as the datapath MAC.
    pub datapath_mac: String,
}

impl Shared {
    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow().clone()
    }

    pub fn is_handing_over(&self) -> bool {
        self.handing_over.load(Ordering::Acquire)
    }

    /// Holds this node's elector and its pre-vote grants for `span` (a handover is under
    /// way: only the chosen node may campaign).
    pub fn hold(&self, span: Duration) {
        let until = std::time::Instant::now() + span;
        let mut h = self.hold_until.lock().unwrap_or_else(|p| p.into_inner());
        *h = Some(h.map_or(until, |t| t.max(until)));
    }

    /// Ends a hold early (the chosen node has campaigned and leads, or gave up).
    pub fn release_hold(&self) {
        *self.hold_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// How much longer this node is younger than one lease (`None` once it is older).
    /// openraft keeps no record of the last heartbeat across a restart and would grant a
    /// vote at once; a live follower would not, so a young node grants none, real or pre.
    pub fn young_for(&self) -> Option<Duration> {
        self.timing
            .election_max
            .checked_sub(self.started.elapsed())
            .filter(|d| !d.is_zero())
    }

    /// Whether a handover holds this node's elector now.
    pub fn held(&self) -> bool {
        self.hold_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| std::time::Instant::now() < t)
    }

    /// Whether a handover involves this node: as the old leader, or held by one.
    pub fn in_handover(&self) -> bool {
        self.is_handing_over() || self.held()
    }

    /// A client of peer `id`, at the address the current membership gives it.
    pub fn peer(&self, id: NodeId) -> Result<PeerClient, PeerCallError> {
        let m = self.metrics();
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
            .ok_or_else(|| PeerCallError::Address {
                addr: format!("node {id}"),
                reason: "not in the membership".into(),
            })?;
        self.net.client(id, &addr)
    }
}

/// Clears the hand-over flag however the hand-over ends.
pub(crate) struct HandingOver<'a>(&'a Shared);

impl<'a> HandingOver<'a> {
    pub fn begin(shared: &'a Shared) -> Self {
        shared.handing_over.store(true, Ordering::Release);
        HandingOver(shared)
    }
}

impl Drop for HandingOver<'_> {
    fn drop(&mut self) {
        self.0.handing_over.store(false, Ordering::Release);
    }
}
