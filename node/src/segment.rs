//! The pair's segment arbiter (`[cluster] pair_arbiter = "segment"`,
//! docs/design.md#pair-segment): what the ownership decision needs to know about the peer
//! and the datapath segment, kept apart from the decision itself (`ownership`).
//!
//! - [`SegmentWatch`] (pure) turns the ARP thread's probe evidence into two facts: the
//!   segment is *clear* (N probe rounds went out, each had a full interval to be answered,
//!   and no other MAC claimed a VIP meanwhile) and the VIPs are *claimed* by another MAC
//!   since some instant (two owners met).
//! - [`SegmentGate`] is the cluster's [`PeerContact`] hook: it dates the last call from the
//!   peer and, when this node owns by the segment, releases the VIPs synchronously before the
//!   call is handled. The control loop judges under the same lock, so a grant can never be
//!   renewed after a peer call it has not seen: the peer never counts this node's vote or
//!   acknowledgement while this node still owns by the segment.

use cluster::PeerContact;
use datapath::{SegmentEvidence, Shared};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Counts probe rounds since the last claim (or since counting started).
#[derive(Debug)]
pub struct SegmentWatch {
    /// Unanswered rounds before the segment counts as clear.
    count: u32,
    /// `Some((rounds, at))`: counting since `at`, when the evidence showed `rounds` rounds.
    base: Option<(u64, Instant)>,
}

impl SegmentWatch {
    pub fn new(count: u32) -> Self {
        SegmentWatch { count, base: None }
    }

    /// Feeds the latest evidence. While `counting`, a claim newer than the count's start
    /// restarts it, and so does a probe of the peer when this node `defers` (it has the
    /// higher id: of two nodes probing an empty segment at once, the lower id takes the
    /// VIPs, so they never both do); when not counting, the count is forgotten.
    pub fn observe(&mut self, ev: &SegmentEvidence, counting: bool, defers: bool, now: Instant) {
        if !counting {
            self.base = None;
            return;
        }
        match self.base {
            None => self.base = Some((ev.rounds, now)),
            Some((_, since)) => {
                let claimed = ev.last_claim.is_some_and(|(at, _)| at > since);
                let peer_probing = defers && ev.last_peer_probe.is_some_and(|at| at > since);
                if claimed || peer_probing {
                    self.base = Some((ev.rounds, now));
                }
            }
        }
    }

    /// N rounds went out after counting started and each had a full probe interval to be
    /// answered (the round after the N-th went out too), with no claim heard since.
    pub fn clear(&self, ev: &SegmentEvidence) -> bool {
        self.base
            .is_some_and(|(rounds, _)| ev.rounds.saturating_sub(rounds) > u64::from(self.count))
    }
}

/// Whether another MAC claimed one of the VIPs after `since`.
pub fn claimed_since(ev: &SegmentEvidence, since: Instant) -> bool {
    ev.last_claim.is_some_and(|(at, _)| at > since)
}

/// What the gate's lock protects.
#[derive(Debug, Default)]
pub struct GateState {
    /// The last peer call.
    pub last_contact: Option<Instant>,
    /// The datapath's current deadline comes from a segment grant.
    pub segment_owner: bool,
}

/// The [`PeerContact`] hook of a segment pair; see the module doc.
#[derive(Debug)]
pub struct SegmentGate {
    state: Mutex<GateState>,
    datapath: Arc<Shared>,
    /// Segment grants ended by a peer call.
    pub released_by_peer: AtomicU64,
}

impl SegmentGate {
    pub fn new(datapath: Arc<Shared>) -> Self {
        SegmentGate {
            state: Mutex::new(GateState::default()),
            datapath,
            released_by_peer: AtomicU64::new(0),
        }
    }

    /// The state, locked: the control loop holds it from reading `last_contact` until the
    /// datapath's deadline is set.
    pub fn lock(&self) -> MutexGuard<'_, GateState> {
        // Each update is a plain assignment: a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PeerContact for SegmentGate {
    fn peer_call(&self) {
        let mut st = self.lock();
        st.last_contact = Some(Instant::now());
        if st.segment_owner {
            self.datapath.set_owner(false);
            st.segment_owner = false;
            self.released_by_peer.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datapath::MacAddr;
    use std::time::Duration;

    const PEER: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn ev(rounds: u64, claim: Option<Instant>) -> SegmentEvidence {
        SegmentEvidence {
            rounds,
            probes_sent: rounds,
            claims: u64::from(claim.is_some()),
            last_claim: claim.map(|at| (at, PEER)),
            ..SegmentEvidence::default()
        }
    }

    #[test]
    fn the_higher_id_defers_to_a_probing_peer_the_lower_id_does_not() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let probing = |rounds, at| SegmentEvidence {
            last_peer_probe: Some(at),
            peer_probes: 1,
            ..ev(rounds, None)
        };
        let (mut high, mut low) = (SegmentWatch::new(2), SegmentWatch::new(2));
        high.observe(&ev(0, None), true, true, t0);
        low.observe(&ev(0, None), true, false, t0);
        high.observe(&probing(3, t0 + 120 * ms), true, true, t0 + 130 * ms);
        low.observe(&probing(3, t0 + 120 * ms), true, false, t0 + 130 * ms);
        assert!(low.clear(&probing(3, t0 + 120 * ms)));
        assert!(!high.clear(&probing(3, t0 + 120 * ms)));
    }

    #[test]
    fn clear_after_n_rounds_each_given_an_interval() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut w = SegmentWatch::new(3);
        let old_claim = Some(t0 - 500 * ms);
        w.observe(&ev(10, old_claim), true, false, t0);
        for rounds in 10..=13 {
            assert!(!w.clear(&ev(rounds, old_claim)), "{rounds}");
        }
        assert!(w.clear(&ev(14, old_claim)));
    }

    #[test]
    fn a_claim_restarts_the_count_and_stopping_forgets_it() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut w = SegmentWatch::new(2);
        w.observe(&ev(0, None), true, false, t0);
        w.observe(&ev(2, Some(t0 + 90 * ms)), true, false, t0 + 100 * ms);
        assert!(!w.clear(&ev(3, Some(t0 + 90 * ms))));
        assert!(w.clear(&ev(5, Some(t0 + 90 * ms))));
        w.observe(&ev(5, None), false, false, t0 + 200 * ms);
        assert!(!w.clear(&ev(50, None)), "not counting");
        assert!(claimed_since(&ev(5, Some(t0 + 90 * ms)), t0));
        assert!(!claimed_since(&ev(5, Some(t0 + 90 * ms)), t0 + 90 * ms));
    }

    #[test]
    fn a_peer_call_ends_a_segment_grant_at_once() {
        let dp = Shared::new(1, MacAddr([2, 0, 0, 0, 0, 1]));
        let gate = SegmentGate::new(dp.clone());
        dp.set_owner(true);
        gate.peer_call();
        assert!(dp.is_owner(), "a quorum grant is not the gate's to end");
        gate.lock().segment_owner = true;
        gate.peer_call();
        assert!(!dp.is_owner());
        assert!(!gate.lock().segment_owner);
        assert!(gate.lock().last_contact.is_some());
        assert_eq!(gate.released_by_peer.load(Ordering::Relaxed), 1);
    }
}
