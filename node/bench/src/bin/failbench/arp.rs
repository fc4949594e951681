//! The ARP-level outage, measured the same way for dsrlb and for the keepalived anchor: the
//! client asks for the VIP by ARP every [`PERIOD`] (`lab::ArpProber`, each probe tagged with
//! its round) while a capture on the lab bridge records every ARP frame. The outage is the
//! time from the signal to the first reply *to one of those probes* from a MAC other than the
//! old owner's, as the bridge saw it.
//!
//! Only replies to our probes count, never gratuitous ARP: dsrlb announces in both request
//! and reply form, keepalived in request form, and counting either would compare announcement
//! styles rather than how soon a client that asks gets an answer.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lab::arp_probe::claims;
use lab::{ArpClaim, ArpProber, Capture, Lab, LabError, MacAddr, analyze};

/// A probe every 5 ms: the outage is known to within one period, a few percent of either
/// system's takeover, and 200 broadcasts a second cost the lab nothing.
pub const PERIOD: Duration = Duration::from_millis(5);
/// Probing before the signal, so the old owner is seen answering (the setup is what the
/// table says it is) before it is taken away.
pub const LEAD: Duration = Duration::from_millis(100);
/// Probing after the new owner first answered, so an old owner that answers again (two
/// owners) would still be seen.
const TAIL: Duration = Duration::from_millis(100);
/// How often the wait for the new owner looks at the capture.
const POLL: Duration = Duration::from_millis(10);
/// Recorded ARP frames per window: a window lasts at most about `limit`, and its frames are
/// 2 per probe plus gratuitous ARP, so this is never reached with the bench's 60 s cap.
const MAX_FRAMES: usize = 50_000;

/// What one window showed.
#[derive(Clone, Debug, Default)]
pub struct ArpOutage {
    /// Signal to the first reply from another MAC; `None`: none within the limit.
    pub outage: Option<Duration>,
    /// The MAC of that reply.
    pub new_mac: Option<MacAddr>,
    /// The old owner answered a probe before the signal (else the window measured nothing).
    pub old_answered: bool,
    /// Probe rounds in which two MACs answered, or an owner that came back after another
    /// (`lab::ArpAnalysis::dual`): there should be none.
    pub dual: usize,
    pub probes: usize,
}

/// The first reply to a probe from a MAC other than `old`, read at or after `t0`: its delay
/// from `t0` and its MAC.
pub fn first_takeover(
    claims: &[ArpClaim],
    t0: Instant,
    old: MacAddr,
) -> Option<(Duration, MacAddr)> {
    claims
        .iter()
        .filter(|c| c.round.is_some() && c.mac != old && c.at >= t0)
        .min_by_key(|c| c.at)
        .map(|c| (c.at - t0, c.mac))
}

/// A running window: the capture on the bridge and the prober in the first client.
pub struct ArpWatch {
    // Prober before capture: it stops first, so its last replies are still captured.
    prober: ArpProber,
    capture: Capture,
    vip: Ipv4Addr,
    limit: Duration,
}

impl ArpWatch {
    /// Starts capturing and probing, then probes for [`LEAD`] before returning, so the
    /// caller can signal the owner at once. `limit` bounds the wait after the signal.
    pub fn start(lab: &Lab, limit: Duration) -> Result<ArpWatch, LabError> {
        let capture = Capture::start_filtered(lab.switch_ns(), lab.bridge(), MAX_FRAMES, |f| {
            f.arp.is_some()
        })?;
        // The prober stops on its own after this long, whatever happens to the caller.
        let lifetime = LEAD + limit + TAIL + Duration::from_secs(1);
        let prober = ArpProber::start(&lab.clients()[0], lab.vip(), PERIOD, lifetime)?;
        std::thread::sleep(LEAD);
        Ok(ArpWatch {
            prober,
            capture,
            vip: lab.vip(),
            limit,
        })
    }

    /// Waits until another MAC than `old` answered a probe after `t0` (at most the limit,
    /// or until `stop` is set), probes [`TAIL`] longer, and judges the window.
    pub fn finish(
        self,
        t0: Instant,
        old: MacAddr,
        stop: &AtomicBool,
    ) -> Result<ArpOutage, LabError> {
        let deadline = t0 + self.limit;
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            let seen = claims(&self.capture.snapshot(), self.vip, self.prober.sent());
            if first_takeover(&seen, t0, old).is_some() {
                std::thread::sleep(TAIL);
                break;
            }
            std::thread::sleep(POLL);
        }
        let log = self.prober.stop()?;
        // A reply to the last probe is on the wire within microseconds; give the capture
        // thread time to read it.
        std::thread::sleep(POLL);
        let frames = self.capture.stop()?;
        let seen = log.claims(&frames);
        let takeover = first_takeover(&seen, t0, old);
        let analysis = analyze(&log.rounds, &seen);
        Ok(ArpOutage {
            outage: takeover.map(|(d, _)| d),
            new_mac: takeover.map(|(_, m)| m),
            old_answered: seen
                .iter()
                .any(|c| c.round.is_some() && c.mac == old && c.at < t0),
            dual: analysis.dual.len(),
            probes: log.rounds.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takeover_is_the_first_probe_reply_from_another_mac_after_the_signal() {
        let old = MacAddr([2, 0, 0, 0, 0, 0x11]);
        let new = MacAddr([2, 0, 0, 0, 0, 0x12]);
        let base = Instant::now();
        let at = |ms| base + Duration::from_millis(ms);
        let c = |ms, mac, round| ArpClaim {
            at: at(ms),
            mac,
            round,
        };
        let t0 = at(100);
        let seen = [
            c(95, old, Some(19)),
            // The old owner's last answers do not end the outage.
            c(102, old, Some(20)),
            // Gratuitous ARP from the new owner is not an answer to the client.
            c(200, new, None),
            c(231, new, Some(46)),
            c(226, new, Some(45)),
        ];
        assert_eq!(
            first_takeover(&seen, t0, old),
            Some((Duration::from_millis(126), new))
        );
        assert_eq!(first_takeover(&seen[..3], t0, old), None);
    }
}
