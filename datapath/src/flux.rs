//! The ARP-flux watch (docs/design.md#arp-flux): who else claims our VIPs on the segment.
//!
//! A DSR backend carries the VIP on `lo`. With `arp_ignore=0` it answers ARP for the VIP
//! (Linux answers for any local address on any interface), and with `arp_announce=0` it asks
//! ARP questions with the VIP as sender address: either way some clients or the router learn
//! the backend's MAC for the VIP, and their traffic bypasses the balancer. Any ARP frame whose
//! sender address is a VIP and whose sender MAC is not a cluster member's is such a claim.
//! The ARP thread sees every ARP frame that reaches the node (broadcasts, and what is sent to
//! us); a wrong answer to a client's question goes to the client alone, so while it owns the
//! VIPs the node also asks for them itself, from its own address, now and then: a
//! misconfigured backend then answers us. Members' MACs are learned from the members (the
//! peer `Version` call), so a takeover's gratuitous ARP is never a conflict.
//!
//! This module keeps the schedule and the tally; naming the backend, logging and metrics are
//! the daemon's.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::packet::MacAddr;

/// How often a node asks for each VIP, at most.
pub const FLUX_PROBE_EVERY: Duration = Duration::from_secs(5);
/// At most this many questions a second, whatever the VIP count: every question is a
/// broadcast every host on the segment takes, so 10,000 VIPs are each asked every 50 s
/// rather than every 5 s.
pub const FLUX_MAX_RATE: u32 = 200;
/// VIPs asked per step; the steps are spread evenly over the pass.
const FLUX_BATCH: usize = 16;
/// At most this many (VIP, MAC) pairs are tallied: a flood of forged claims must not grow
/// the node's memory. Claims of pairs beyond it are counted in `overflow` only.
pub const MAX_CONFLICTS: usize = 4096;

/// One MAC claiming one VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipConflict {
    pub vip: Ipv4Addr,
    pub mac: MacAddr,
    /// Claims seen (ARP frames with this sender), since the node started.
    pub claims: u64,
    pub first: Instant,
    pub last: Instant,
}

/// The watch's state, kept under the resolver's lock.
#[derive(Debug, Default)]
pub(crate) struct FluxWatch {
    /// Sorted: the VIPs whose claims count.
    vips: Vec<Ipv4Addr>,
    /// Sorted: the cluster members' datapath MACs (ours included), whose claims are ours.
    members: Vec<MacAddr>,
    /// Every member gave its MAC: a MAC not in `members` is surely not a member's.
    complete: bool,
    conflicts: BTreeMap<(Ipv4Addr, MacAddr), VipConflict>,
    overflow: u64,
    /// `Some`: asking, the next step due then.
    next_due: Option<Instant>,
    /// Where the pass under way stands in `vips`.
    cursor: usize,
}

impl FluxWatch {
    pub fn set_vips(&mut self, mut vips: Vec<Ipv4Addr>) {
        vips.sort_unstable();
        vips.dedup();
        self.vips = vips;
        self.cursor = self.cursor.min(self.vips.len());
    }

    /// `complete`: every member gave its MAC (none is missing from `macs`).
    pub fn set_members(&mut self, mut macs: Vec<MacAddr>, complete: bool) {
        macs.sort_unstable();
        macs.dedup();
        // A member's claims were never conflicts: a MAC learned late (the member was down
        // when first asked) takes back what it was charged with meanwhile.
        self.conflicts
            .retain(|(_, mac), _| macs.binary_search(mac).is_err());
        self.members = macs;
        self.complete = complete;
    }

    /// `mac` is surely no member's (every member gave its MAC, and this is none of them).
    /// A pair's segment arbiter weighs only members' claims: a backend with `arp_ignore=0`
    /// answering a probe must not pass for the peer owning the VIPs.
    pub fn is_stranger(&self, mac: MacAddr) -> bool {
        self.complete && self.members.binary_search(&mac).is_err()
    }

    /// Starts (`true`, the first pass at once) or stops asking; starting while asking keeps
    /// the schedule.
    pub fn set_asking(&mut self, on: bool, now: Instant) {
        match (on, self.next_due) {
            (true, None) => {
                self.next_due = Some(now);
                self.cursor = 0;
            }
            (false, _) => self.next_due = None,
            (true, Some(_)) => {}
        }
    }

    /// The time between two steps: a pass over every VIP takes [`FLUX_PROBE_EVERY`], or
    /// longer where [`FLUX_MAX_RATE`] says so.
    fn gap(&self) -> Duration {
        let n = u32::try_from(self.vips.len().max(1)).unwrap_or(u32::MAX);
        let pass = FLUX_PROBE_EVERY.max(Duration::from_secs(1) * (n / FLUX_MAX_RATE));
        (pass * FLUX_BATCH as u32 / n).min(pass)
    }

    /// The VIPs to ask for now, appended to `out`; returns when the next step is due. The
    /// questions go round the VIPs at a steady pace, [`FLUX_BATCH`] at a time.
    pub fn take_due(&mut self, now: Instant, out: &mut Vec<Ipv4Addr>) -> Option<Instant> {
        let due = self.next_due?;
        if due > now {
            return Some(due);
        }
        let end = (self.cursor + FLUX_BATCH).min(self.vips.len());
        out.extend_from_slice(&self.vips[self.cursor.min(end)..end]);
        self.cursor = if end >= self.vips.len() { 0 } else { end };
        let next = now + self.gap();
        self.next_due = Some(next);
        Some(next)
    }

    /// An ARP frame from `mac` with sender address `ip`, received at `at`.
    pub fn heard(&mut self, ip: Ipv4Addr, mac: MacAddr, at: Instant) {
        if self.vips.binary_search(&ip).is_err() || self.members.binary_search(&mac).is_ok() {
            return;
        }
        if let Some(c) = self.conflicts.get_mut(&(ip, mac)) {
            c.claims += 1;
            c.last = at;
            return;
        }
        if self.conflicts.len() >= MAX_CONFLICTS {
            self.overflow += 1;
            return;
        }
        self.conflicts.insert(
            (ip, mac),
            VipConflict {
                vip: ip,
                mac,
                claims: 1,
                first: at,
                last: at,
            },
        );
    }

    /// Every conflict seen, by VIP then MAC; and the claims not tallied (table full).
    pub fn conflicts(&self) -> (Vec<VipConflict>, u64) {
        (self.conflicts.values().copied().collect(), self.overflow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
    const OTHER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 21);
    const OWN: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x11]);
    const PEER: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x12]);
    const BACKEND: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x21]);

    fn watch() -> FluxWatch {
        let mut w = FluxWatch::default();
        w.set_vips(vec![VIP]);
        w.set_members(vec![OWN, PEER], true);
        w
    }

    #[test]
    fn only_a_stranger_claiming_a_vip_is_a_conflict() {
        let t0 = Instant::now();
        let mut w = watch();
        w.heard(VIP, OWN, t0);
        w.heard(VIP, PEER, t0);
        w.heard(OTHER_IP, BACKEND, t0);
        assert!(w.conflicts().0.is_empty());
        w.heard(VIP, BACKEND, t0);
        w.heard(VIP, BACKEND, t0 + Duration::from_secs(1));
        assert_eq!(
            w.conflicts(),
            (
                vec![VipConflict {
                    vip: VIP,
                    mac: BACKEND,
                    claims: 2,
                    first: t0,
                    last: t0 + Duration::from_secs(1),
                }],
                0
            )
        );
    }

    #[test]
    fn a_member_learned_late_is_cleared_of_its_claims() {
        let t0 = Instant::now();
        let mut w = FluxWatch::default();
        w.set_vips(vec![VIP]);
        w.set_members(vec![OWN], false);
        assert!(!w.is_stranger(PEER), "not every member answered yet");
        w.heard(VIP, PEER, t0);
        assert_eq!(w.conflicts().0.len(), 1);
        w.set_members(vec![OWN, PEER], true);
        assert!(w.conflicts().0.is_empty());
        assert!(!w.is_stranger(PEER));
        assert!(w.is_stranger(BACKEND));
    }

    #[test]
    fn the_tally_is_bounded() {
        let t0 = Instant::now();
        let mut w = FluxWatch::default();
        w.set_vips(vec![VIP]);
        for i in 0..MAX_CONFLICTS as u32 + 10 {
            let b = i.to_be_bytes();
            w.heard(VIP, MacAddr([2, 1, b[0], b[1], b[2], b[3]]), t0);
        }
        let (c, overflow) = w.conflicts();
        assert_eq!((c.len(), overflow), (MAX_CONFLICTS, 10));
    }

    #[test]
    fn asking_goes_round_every_vip_at_a_steady_pace() {
        let t0 = Instant::now();
        let mut w = FluxWatch::default();
        let vips: Vec<Ipv4Addr> = (0..150u32)
            .map(|i| Ipv4Addr::from(u32::from(VIP) + i))
            .collect();
        w.set_vips(vips.clone());
        let mut out = Vec::new();
        assert_eq!(w.take_due(t0, &mut out), None, "not asking yet");
        w.set_asking(true, t0);
        let gap = FLUX_PROBE_EVERY * FLUX_BATCH as u32 / 150;
        assert_eq!(w.take_due(t0, &mut out), Some(t0 + gap));
        assert_eq!(out.len(), FLUX_BATCH);
        assert_eq!(w.take_due(t0, &mut out), Some(t0 + gap), "not due yet");
        assert_eq!(out.len(), FLUX_BATCH);
        let mut t = t0;
        while out.len() < vips.len() {
            t += gap;
            w.take_due(t, &mut out);
        }
        assert_eq!(out, vips, "each VIP once per pass, in order");
        assert!(t - t0 <= FLUX_PROBE_EVERY, "a pass within the period");
        out.clear();
        w.take_due(t + gap, &mut out);
        assert_eq!(out, vips[..FLUX_BATCH], "the next pass starts over");
        // Asking again while asking keeps the schedule; stopping ends it.
        w.set_asking(true, t + gap);
        assert_eq!(w.take_due(t + gap, &mut out), Some(t + 2 * gap));
        w.set_asking(false, t + gap);
        assert_eq!(w.take_due(t + 10 * gap, &mut out), None);
    }

    #[test]
    fn many_vips_are_asked_no_faster_than_the_rate_cap() {
        let mut w = FluxWatch::default();
        w.set_vips(
            (0..10_000u32)
                .map(|i| Ipv4Addr::from(u32::from(VIP) + i))
                .collect(),
        );
        let per_sec = FLUX_BATCH as f64 / w.gap().as_secs_f64();
        assert!(
            (per_sec - f64::from(FLUX_MAX_RATE)).abs() < 1.0,
            "{per_sec} questions a second"
        );
        let mut one = FluxWatch::default();
        one.set_vips(vec![VIP]);
        assert_eq!(one.gap(), FLUX_PROBE_EVERY, "a single VIP every period");
    }
}
