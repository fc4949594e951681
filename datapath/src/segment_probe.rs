//! Probing the datapath segment for the VIPs (a pair arbitrated by the segment,
//! docs/design.md#pair-segment): while asked to, the ARP thread sends one ARP probe per VIP
//! every probe interval (RFC 5227: a request from sender address 0.0.0.0, so no cache learns
//! anything from it and the peer can tell it from a client's question), and it records every
//! ARP frame from another MAC that claims a watched VIP (a reply to anyone's request, or a
//! gratuitous announcement) and every probe of the peer. Whether the
//! segment is free, and who yields, is the daemon's pure decision; this module only keeps the
//! schedule and the evidence.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::packet::MacAddr;

/// What the probing has seen so far. Counters only grow, so a reader compares two readings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentEvidence {
    /// Probe rounds of which at least one request left the socket. A round whose every send
    /// failed (interface down) is not a round: silence after it proves nothing.
    pub rounds: u64,
    /// Requests sent, all rounds together.
    pub probes_sent: u64,
    /// ARP frames from another MAC whose sender address was a watched VIP.
    pub claims: u64,
    /// When the last of them was received, and from which MAC.
    pub last_claim: Option<(Instant, MacAddr)>,
    /// ARP probes for a watched VIP (sender address 0.0.0.0, RFC 5227) from another MAC:
    /// the peer is alive on the segment and probing too.
    pub peer_probes: u64,
    /// When the last of them was received.
    pub last_peer_probe: Option<Instant>,
}

/// The probe schedule and the evidence, kept under the resolver's lock.
#[derive(Debug, Default)]
pub(crate) struct SegmentProbe {
    /// Sorted: VIPs whose claims are recorded.
    watched: Vec<Ipv4Addr>,
    /// `Some`: probe every this long.
    interval: Option<Duration>,
    next_due: Option<Instant>,
    evidence: SegmentEvidence,
}

impl SegmentProbe {
    pub fn watch(&mut self, mut vips: Vec<Ipv4Addr>) {
        vips.sort_unstable();
        vips.dedup();
        self.watched = vips;
    }

    /// Starts (`Some`) or stops probing; starting while already probing keeps the schedule.
    pub fn set_interval(&mut self, interval: Option<Duration>, now: Instant) {
        match (self.interval, interval) {
            (Some(old), Some(new)) if old == new => {}
            (_, Some(_)) => self.next_due = Some(now),
            (_, None) => self.next_due = None,
        }
        self.interval = interval;
    }

    /// The VIPs to probe now, appended to `out`; returns when the next round is due.
    pub fn take_due(&mut self, now: Instant, out: &mut Vec<Ipv4Addr>) -> Option<Instant> {
        let (Some(interval), Some(due)) = (self.interval, self.next_due) else {
            return None;
        };
        if due <= now && !self.watched.is_empty() {
            out.extend_from_slice(&self.watched);
            // Not caught up after a stall: the next round is an interval from now.
            self.next_due = Some(now + interval);
        }
        self.next_due
    }

    /// Counts a round of which `sent` requests left the socket.
    pub fn sent(&mut self, sent: u64) {
        if sent > 0 {
            self.evidence.rounds += 1;
            self.evidence.probes_sent += sent;
        }
    }

    /// An ARP frame's sender, received at `at`: a claim when the address is a watched VIP and
    /// the MAC is not ours.
    pub fn heard(&mut self, ip: Ipv4Addr, mac: MacAddr, own_mac: MacAddr, at: Instant) {
        if mac != own_mac && self.watched.binary_search(&ip).is_ok() {
            self.evidence.claims += 1;
            self.evidence.last_claim = Some((at, mac));
        }
    }

    /// An ARP probe (request with sender address 0.0.0.0) for `target` from `mac`.
    pub fn heard_probe(&mut self, target: Ipv4Addr, mac: MacAddr, own_mac: MacAddr, at: Instant) {
        if mac != own_mac && self.watched.binary_search(&target).is_ok() {
            self.evidence.peer_probes += 1;
            self.evidence.last_peer_probe = Some(at);
        }
    }

    pub fn evidence(&self) -> SegmentEvidence {
        self.evidence
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
    const OWN: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const PEER: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    #[test]
    fn rounds_follow_the_interval_and_stop_when_asked() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut p = SegmentProbe::default();
        p.watch(vec![VIP]);
        let mut out = Vec::new();
        assert_eq!(p.take_due(t0, &mut out), None, "not probing yet");
        p.set_interval(Some(50 * ms), t0);
        assert_eq!(p.take_due(t0, &mut out), Some(t0 + 50 * ms));
        assert_eq!(out, vec![VIP]);
        out.clear();
        assert_eq!(p.take_due(t0 + 10 * ms, &mut out), Some(t0 + 50 * ms));
        assert!(out.is_empty());
        // Asking again with the same interval keeps the schedule.
        p.set_interval(Some(50 * ms), t0 + 20 * ms);
        assert_eq!(p.take_due(t0 + 20 * ms, &mut out), Some(t0 + 50 * ms));
        p.set_interval(None, t0 + 30 * ms);
        assert_eq!(p.take_due(t0 + 60 * ms, &mut out), None);
        assert!(out.is_empty());
    }

    #[test]
    fn only_rounds_that_left_and_claims_by_others_for_watched_vips_count() {
        let t0 = Instant::now();
        let mut p = SegmentProbe::default();
        p.watch(vec![VIP]);
        p.sent(0);
        assert_eq!(p.evidence().rounds, 0);
        p.sent(2);
        assert_eq!((p.evidence().rounds, p.evidence().probes_sent), (1, 2));
        p.heard(VIP, OWN, OWN, t0);
        p.heard(Ipv4Addr::new(198, 18, 0, 31), PEER, OWN, t0);
        assert_eq!(p.evidence().claims, 0);
        p.heard(VIP, PEER, OWN, t0);
        assert_eq!(p.evidence().claims, 1);
        assert_eq!(p.evidence().last_claim, Some((t0, PEER)));
        p.heard_probe(VIP, OWN, OWN, t0);
        p.heard_probe(Ipv4Addr::new(198, 18, 0, 1), PEER, OWN, t0);
        assert_eq!(p.evidence().peer_probes, 0);
        p.heard_probe(VIP, PEER, OWN, t0);
        assert_eq!(
            (p.evidence().peer_probes, p.evidence().last_peer_probe),
            (1, Some(t0))
        );
    }
}
