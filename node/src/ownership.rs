//! Who owns the VIPs: a pure decision from what Raft says and the clock, kept apart from the
//! I/O that acts on it (gratuitous ARP, the datapath's owner flag), so its edges are tested
//! without a cluster.
//!
//! A node owns the VIPs while it is the Raft leader **and** a quorum acknowledged it less
//! than `lease` ago. The lease ends before any voter may grant a vote after the leader's last
//! acknowledged heartbeat, so a leader cut off from its peers stops answering ARP and
//! forwarding before any other node can win an election: there is never an instant with two
//! owners (docs/design.md#vip-ownership, step by step). A witness
//! never owns a VIP. The sole voter of a cluster (a cluster of one) has no one to overlap with, so
//! it owns while it leads, without a lease: a busy single node does not drop its VIPs.
//!
//! A pair with `pair_arbiter = "segment"` has a second arbiter (docs/design.md#pair-segment):
//! while the peer is silent on the control plane, the datapath segment may grant ownership
//! without a quorum — to the node that owns already (it keeps serving when its peer dies),
//! or to a node whose ARP probes for the VIPs went unanswered N times. Of two segment owners
//! that meet, the one with the higher id yields. Quorum configurations never reach that arm.

use std::time::{Duration, Instant};

/// What the decision reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inputs {
    /// This node is the Raft leader in the current term.
    pub is_leader: bool,
    /// When a quorum last acknowledged this leader (`None`: never in this term).
    pub last_quorum_ack: Option<Instant>,
    /// How long an acknowledgement keeps ownership alive.
    pub lease: Duration,
    /// This node is a witness: it votes but never owns.
    pub witness: bool,
    /// The node is shutting down: release at once.
    pub stopping: bool,
    /// This leader is handing leadership over: release at once, before any other node can
    /// be elected (the handover waits the lease out for a loop that lags).
    pub handing_over: bool,
    /// This node is the only voter: no other node can ever be elected.
    pub sole_voter: bool,
    /// `Some`: a pair arbitrated by the L2 segment.
    pub segment: Option<SegmentInputs>,
}

/// What the segment arbiter of a pair knows (see `segment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInputs {
    /// No call from the peer and no quorum acknowledgement for (about) a lease.
    pub peer_silent: bool,
    /// This node owned at its previous judgement, made less than a lease ago (its loop did
    /// not stall): it keeps the VIPs without probing.
    pub incumbent: bool,
    /// N probe rounds for the VIPs went unanswered.
    pub clear: bool,
    /// Another MAC claimed a VIP while this node owned, and this node has the lower
    /// priority (the higher id): it yields.
    pub yields: bool,
}

impl SegmentInputs {
    /// The segment would grant ownership (whatever the quorum says).
    pub fn grants(&self) -> bool {
        self.peer_silent && !self.yields && (self.incumbent || self.clear)
    }
}

/// Which arbiter granted ownership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arbiter {
    /// The Raft leader under a fresh quorum lease.
    Quorum,
    /// The sole voter of a cluster of one.
    Sole,
    /// A pair's L2 segment, without a quorum.
    Segment,
}

impl Arbiter {
    pub fn as_str(self) -> &'static str {
        match self {
            Arbiter::Quorum => "quorum",
            Arbiter::Sole => "sole",
            Arbiter::Segment => "segment",
        }
    }
}

/// The arbiter of this node's current ownership, for readers outside the control loop (the
/// admin API, metrics): `None` while the node does not own.
#[derive(Debug, Default)]
pub struct ArbiterCell(std::sync::atomic::AtomicU8);

impl ArbiterCell {
    pub fn set(&self, by: Option<Arbiter>) {
        let v = match by {
            None => 0,
            Some(Arbiter::Quorum) => 1,
            Some(Arbiter::Sole) => 2,
            Some(Arbiter::Segment) => 3,
        };
        self.0.store(v, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self) -> Option<Arbiter> {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            1 => Some(Arbiter::Quorum),
            2 => Some(Arbiter::Sole),
            3 => Some(Arbiter::Segment),
            _ => None,
        }
    }
}

/// A grant of ownership: by whom, and until when if nothing renews it (`None`: no deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub by: Arbiter,
    pub until: Option<Instant>,
}

/// The decision with its arbiter. A segment grant lasts a lease from `now`, so a node
/// whose control loop stalls goes silent as under a quorum lease. A quorum grant on a node
/// that the segment would also keep lasts until the later of the two ends, so the hand-off
/// from quorum to segment when the peer dies leaves no gap.
pub fn decide(inputs: &Inputs, now: Instant) -> Option<Grant> {
    if inputs.witness || inputs.stopping || inputs.handing_over {
        return None;
    }
    let quorum = if should_own(inputs, now) {
        Some(Grant {
            by: if inputs.sole_voter {
                Arbiter::Sole
            } else {
                Arbiter::Quorum
            },
            until: lease_deadline(inputs),
        })
    } else {
        None
    };
    let segment = inputs
        .segment
        .filter(SegmentInputs::grants)
        .map(|_| now + inputs.lease);
    match (quorum, segment) {
        (Some(q), Some(s)) => Some(Grant {
            by: q.by,
            until: q.until.map(|u| u.max(s)),
        }),
        (Some(q), None) => Some(q),
        (None, Some(s)) => Some(Grant {
            by: Arbiter::Segment,
            until: Some(s),
        }),
        (None, None) => None,
    }
}

/// The decision: own the VIPs now?
pub fn should_own(inputs: &Inputs, now: Instant) -> bool {
    if inputs.witness || inputs.stopping || inputs.handing_over || !inputs.is_leader {
        return false;
    }
    if inputs.sole_voter {
        return true;
    }
    match inputs.last_quorum_ack {
        // `checked_duration_since` is None when the ack is (oddly) in the future: fresh.
        Some(ack) => now
            .checked_duration_since(ack)
            .is_none_or(|age| age < inputs.lease),
        None => false,
    }
}

/// Until when the current ownership holds if no new acknowledgement arrives: the end of the
/// lease; `None` for a sole voter, whose ownership has no deadline.
pub fn lease_deadline(inputs: &Inputs) -> Option<Instant> {
    if inputs.sole_voter {
        return None;
    }
    inputs.last_quorum_ack.map(|ack| ack + inputs.lease)
}

/// A change of ownership that the node acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Became owner: gratuitous ARP, then answer ARP and forward.
    Acquired,
    /// Lost ownership: stop answering ARP and forwarding at once.
    Released,
}

/// Tracks the current ownership and reports edges only, so each transition is acted on
/// and logged once.
#[derive(Debug, Default)]
pub struct Ownership {
    owner: bool,
}

impl Ownership {
    pub fn is_owner(&self) -> bool {
        self.owner
    }

    /// Feeds a new decision; returns the transition it causes, if any.
    pub fn update(&mut self, own: bool) -> Option<Transition> {
        if own == self.owner {
            return None;
        }
        self.owner = own;
        Some(if own {
            Transition::Acquired
        } else {
            Transition::Released
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(120);

    fn leader(ack_age_ms: u64, now: Instant) -> Inputs {
        Inputs {
            is_leader: true,
            last_quorum_ack: Some(now - Duration::from_millis(ack_age_ms)),
            lease: LEASE,
            witness: false,
            stopping: false,
            handing_over: false,
            sole_voter: false,
            segment: None,
        }
    }

    fn seg(peer_silent: bool, incumbent: bool, clear: bool, yields: bool) -> SegmentInputs {
        SegmentInputs {
            peer_silent,
            incumbent,
            clear,
            yields,
        }
    }

    #[test]
    fn without_a_segment_arbiter_decide_is_should_own() {
        let now = Instant::now() + Duration::from_secs(10);
        for age in [0, 119, 120, 5000] {
            let i = leader(age, now);
            assert_eq!(decide(&i, now).is_some(), should_own(&i, now), "{age}");
            let f = Inputs {
                is_leader: false,
                ..i
            };
            assert_eq!(decide(&f, now), None);
        }
        let g = decide(&leader(20, now), now).unwrap();
        assert_eq!(g.by, Arbiter::Quorum);
        assert_eq!(g.until, lease_deadline(&leader(20, now)));
    }

    #[test]
    fn the_segment_grants_a_silent_peers_survivor_only_when_clear_or_incumbent() {
        let now = Instant::now() + Duration::from_secs(10);
        let follower = Inputs {
            is_leader: false,
            last_quorum_ack: None,
            ..leader(0, now)
        };
        let with = |s: SegmentInputs| Inputs {
            segment: Some(s),
            ..follower
        };
        let granted = Some(Grant {
            by: Arbiter::Segment,
            until: Some(now + LEASE),
        });
        assert_eq!(decide(&with(seg(true, false, true, false)), now), granted);
        assert_eq!(decide(&with(seg(true, true, false, false)), now), granted);
        // The peer is heard, the segment is not clear, or this node yields: no grant.
        assert_eq!(decide(&with(seg(false, true, true, false)), now), None);
        assert_eq!(decide(&with(seg(true, false, false, false)), now), None);
        assert_eq!(decide(&with(seg(true, true, true, true)), now), None);
        // Witness, stopping and handing over win over the segment as over the quorum.
        for i in [
            Inputs {
                witness: true,
                ..with(seg(true, true, true, false))
            },
            Inputs {
                stopping: true,
                ..with(seg(true, true, true, false))
            },
            Inputs {
                handing_over: true,
                ..with(seg(true, true, true, false))
            },
        ] {
            assert_eq!(decide(&i, now), None, "{i:?}");
        }
    }

    #[test]
    fn an_owner_whose_quorum_ends_as_its_peer_dies_keeps_the_vips_without_a_gap() {
        let now = Instant::now() + Duration::from_secs(10);
        let i = Inputs {
            segment: Some(seg(true, true, false, false)),
            ..leader(100, now)
        };
        let g = decide(&i, now).unwrap();
        assert_eq!(g.by, Arbiter::Quorum);
        assert_eq!(g.until, Some(now + LEASE), "the later of the two ends");
        let later = now + Duration::from_millis(30);
        let g = decide(&i, later).unwrap();
        assert_eq!(g.by, Arbiter::Segment);
    }

    #[test]
    fn a_leader_owns_only_while_its_lease_is_fresh() {
        let now = Instant::now() + Duration::from_secs(10);
        assert!(should_own(&leader(0, now), now));
        assert!(should_own(&leader(119, now), now));
        assert!(!should_own(&leader(120, now), now));
        assert!(!should_own(&leader(5000, now), now));
    }

    #[test]
    fn followers_witnesses_stopping_or_handing_over_nodes_and_unacked_leaders_never_own() {
        let now = Instant::now() + Duration::from_secs(10);
        let base = leader(0, now);
        for inputs in [
            Inputs {
                is_leader: false,
                ..base
            },
            Inputs {
                witness: true,
                ..base
            },
            Inputs {
                stopping: true,
                ..base
            },
            Inputs {
                handing_over: true,
                ..base
            },
            Inputs {
                last_quorum_ack: None,
                ..base
            },
        ] {
            assert!(!should_own(&inputs, now), "{inputs:?}");
        }
    }

    #[test]
    fn a_sole_voter_leader_owns_without_a_lease() {
        let now = Instant::now() + Duration::from_secs(10);
        let sole = Inputs {
            sole_voter: true,
            last_quorum_ack: None,
            ..leader(0, now)
        };
        assert!(should_own(&sole, now));
        assert_eq!(lease_deadline(&sole), None);
        assert!(!should_own(
            &Inputs {
                is_leader: false,
                ..sole
            },
            now
        ));
        assert!(!should_own(
            &Inputs {
                witness: true,
                ..sole
            },
            now
        ));
        assert!(!should_own(
            &Inputs {
                stopping: true,
                ..sole
            },
            now
        ));
    }

    #[test]
    fn the_deadline_is_the_end_of_the_lease() {
        let now = Instant::now() + Duration::from_secs(10);
        let inputs = leader(20, now);
        assert_eq!(
            lease_deadline(&inputs),
            Some(now - Duration::from_millis(20) + LEASE)
        );
        assert!(!should_own(&inputs, lease_deadline(&inputs).unwrap()));
    }

    #[test]
    fn transitions_are_reported_once_per_edge() {
        let mut o = Ownership::default();
        assert_eq!(o.update(false), None);
        assert_eq!(o.update(true), Some(Transition::Acquired));
        assert_eq!(o.update(true), None);
        assert_eq!(o.update(false), Some(Transition::Released));
        assert_eq!(o.update(false), None);
    }
}
