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
        }
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
