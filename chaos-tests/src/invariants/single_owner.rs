//! Invariant: at most one node answers ARP for the VIP or forwards its traffic at any
//! instant (docs/design.md#inv-single-owner), judged from our own capture of the bridge in the
//! switch namespace while the client probes the VIP by ARP every few milliseconds.
//!
//! Every frame that shows a MAC acting as the VIP's owner is an observation: a reply to one
//! of our tagged probes, an unsolicited claim (gratuitous ARP, or a Neighbor Advertisement
//! for the IPv6 VIP — solicited or not, an advertisement claims the address), or a frame for
//! either VIP sent by a node (forwarded to a backend). A node owns all its VIPs or none, so
//! the two families' observations are judged as one. Two owners at once show up in two ways:
//! - **same round**: two MACs answered the same probe. The probe reached both within
//!   microseconds and each answered because it believed it owned the VIP — exact, whatever
//!   the capture's timing.
//! - **interleaving**: MAC A acted as owner, then B, then A again, all within
//!   [`FLIP_WINDOW`]. Ownership cannot legitimately go A → B → A that fast: each handover
//!   past a dead or cut-off owner waits for an election timeout (150 ms at least), so one of
//!   the two acted as owner while the other did. This catches a resumed or isolated node that
//!   forwards stale frames between the real owner's frames, which no ARP probe would see.
//!
//! Capture order is the order frames crossed the bridge, so the interleaving test relies on
//! order; times only bound the window.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use lab::arp_probe::round_of;
use lab::{Frame, MacAddr};

/// Ownership cannot move A → B → A faster than two election timeouts (2 × 150 ms by
/// default); this is below that.
pub const FLIP_WINDOW: Duration = Duration::from_millis(250);

/// What a frame showed a MAC doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// Answered probe round `round`.
    Reply { round: usize },
    /// Claimed the VIP unasked (gratuitous ARP, or a reply to someone else).
    Claim,
    /// Sent a frame for the VIP on (a node forwarding it to a backend).
    Forward,
}

/// A MAC seen acting as the VIP's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    pub at: Instant,
    pub mac: MacAddr,
    pub act: Act,
}

/// The observations among `frames` (capture order kept). `node_macs` are the nodes: only
/// their frames for a VIP count as forwarding (the client sends to the VIPs too). A probe
/// reply counts for round `k` only if `k < rounds`. `vip6`: the IPv6 VIP of a dual-stack
/// lab, whose advertisements are claims.
pub fn observations(
    frames: &[Frame],
    vip: Ipv4Addr,
    vip6: Option<Ipv6Addr>,
    node_macs: &[MacAddr],
    rounds: usize,
) -> Vec<Observation> {
    frames
        .iter()
        .filter_map(|f| {
            if let Some(a) = f.arp.filter(|a| a.sender_ip == vip) {
                let round = (a.op == 2)
                    .then(|| round_of(a.target_ip))
                    .flatten()
                    .filter(|r| *r < rounds);
                let act = round.map_or(Act::Claim, |round| Act::Reply { round });
                return Some(Observation {
                    at: f.at,
                    mac: a.sender_mac,
                    act,
                });
            }
            if let (Some(v6), Some(ip)) = (vip6, f.ipv6)
                && ip.is_na_for(v6)
            {
                return Some(Observation {
                    at: f.at,
                    mac: f.src_mac,
                    act: Act::Claim,
                });
            }
            let to_vip =
                f.ipv4.is_some_and(|p| p.dst == vip) || f.ipv6.is_some_and(|p| Some(p.dst) == vip6);
            let forwards = to_vip && node_macs.contains(&f.src_mac);
            forwards.then_some(Observation {
                at: f.at,
                mac: f.src_mac,
                act: Act::Forward,
            })
        })
        .collect()
}

/// A stretch with two owners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DualOwner {
    pub from: Instant,
    pub to: Instant,
    pub macs: Vec<MacAddr>,
    pub why: String,
}

/// What the wire showed.
#[derive(Clone, Debug, Default)]
pub struct OwnerReport {
    /// Every stretch with two owners.
    pub duals: Vec<DualOwner>,
    /// How long, in all, two owners overlapped (each dual counts at least 1 ms).
    pub two_owners: Duration,
    /// The MACs that acted as owner, one entry per turn, in order.
    pub turns: Vec<MacAddr>,
    /// Observations judged.
    pub observations: usize,
}

impl OwnerReport {
    pub fn ok(&self) -> bool {
        self.duals.is_empty()
    }

    /// One line per dual owner, for a failure message.
    pub fn violations(&self) -> Vec<String> {
        self.duals
            .iter()
            .map(|d| {
                let macs: Vec<String> = d.macs.iter().map(ToString::to_string).collect();
                format!(
                    "two owners ({}) for {:?}: {}",
                    macs.join(" and "),
                    d.to.saturating_duration_since(d.from),
                    d.why
                )
            })
            .collect()
    }
}

/// Judges `obs` (capture order); `rounds[k]` is when probe `k` was sent.
pub fn check(obs: &[Observation], rounds: &[Instant]) -> OwnerReport {
    let mut duals = Vec::new();

    let mut by_round: BTreeMap<usize, (Vec<MacAddr>, Instant)> = BTreeMap::new();
    for o in obs {
        if let Act::Reply { round } = o.act {
            let (macs, latest) = by_round.entry(round).or_insert_with(|| (Vec::new(), o.at));
            if !macs.contains(&o.mac) {
                macs.push(o.mac);
            }
            *latest = (*latest).max(o.at);
        }
    }
    for (round, (macs, latest)) in by_round {
        if macs.len() > 1 {
            let from = rounds.get(round).copied().unwrap_or(latest).min(latest);
            duals.push(DualOwner {
                from,
                to: latest,
                macs,
                why: format!("both answered probe round {round}"),
            });
        }
    }

    // Per MAC: the index and time of its latest observation.
    let mut last: Vec<(MacAddr, usize, Instant)> = Vec::new();
    for (k, o) in obs.iter().enumerate() {
        if let Some(&(_, p, tp)) = last.iter().find(|(m, _, _)| *m == o.mac) {
            let between = last
                .iter()
                .filter(|(m, i, _)| *m != o.mac && *i > p)
                .max_by_key(|(_, i, _)| *i);
            if let Some(&(other, _, _)) = between
                && o.at.saturating_duration_since(tp) < FLIP_WINDOW
            {
                duals.push(DualOwner {
                    from: tp,
                    to: o.at,
                    macs: vec![o.mac, other],
                    why: format!(
                        "{} acted as owner ({:?}) again {:?} after its previous act, with {} \
                         acting as owner in between",
                        o.mac,
                        o.act,
                        o.at.saturating_duration_since(tp),
                        other
                    ),
                });
            }
        }
        match last.iter_mut().find(|(m, _, _)| *m == o.mac) {
            Some(entry) => *entry = (o.mac, k, o.at),
            None => last.push((o.mac, k, o.at)),
        }
    }

    let mut turns: Vec<MacAddr> = Vec::new();
    for o in obs {
        if turns.last() != Some(&o.mac) {
            turns.push(o.mac);
        }
    }
    OwnerReport {
        two_owners: union_len(&duals),
        duals,
        turns,
        observations: obs.len(),
    }
}

/// The total length of the union of the duals' stretches, each at least 1 ms.
fn union_len(duals: &[DualOwner]) -> Duration {
    let mut spans: Vec<(Instant, Instant)> = duals
        .iter()
        .map(|d| (d.from, d.to.max(d.from + Duration::from_millis(1))))
        .collect();
    spans.sort();
    let mut total = Duration::ZERO;
    let mut current: Option<(Instant, Instant)> = None;
    for (a, b) in spans {
        current = match current {
            Some((ca, cb)) if a <= cb => Some((ca, cb.max(b))),
            Some((ca, cb)) => {
                total += cb - ca;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    if let Some((a, b)) = current {
        total += b - a;
    }
    total
}

/// Answered probes: when each reply was read, in capture order.
pub fn replies(obs: &[Observation]) -> Vec<(Instant, usize)> {
    obs.iter()
        .filter_map(|o| match o.act {
            Act::Reply { round } => Some((o.at, round)),
            _ => None,
        })
        .collect()
}

/// The time from `at` until the VIP answered a probe sent at or after `at`; `None` if it
/// never did.
pub fn outage_after(obs: &[Observation], rounds: &[Instant], at: Instant) -> Option<Duration> {
    replies(obs)
        .into_iter()
        .filter(|(_, r)| rounds.get(*r).is_some_and(|sent| *sent >= at))
        .map(|(t, _)| t.saturating_duration_since(at))
        .min()
}

/// The longest time in `[from, to]` without an answered probe, `from` and `to` counting as
/// answers: the outage a strike at `from` caused before the next one at `to`. An owner that
/// goes on answering for a while after the strike (a partitioned owner until its lease runs
/// out) is counted as serving, as it is.
pub fn outage_between(obs: &[Observation], from: Instant, to: Instant) -> Duration {
    let mut times: Vec<Instant> = replies(obs).into_iter().map(|(t, _)| t).collect();
    times.sort();
    crate::workload::longest_gap(from, to, &times)
}

/// The longest time in the probing window without an answered probe (edges included): the
/// outage a client saw.
pub fn longest_outage(obs: &[Observation], rounds: &[Instant]) -> Duration {
    let (Some(&first), Some(&last)) = (rounds.first(), rounds.last()) else {
        return Duration::ZERO;
    };
    let mut times: Vec<Instant> = replies(obs).into_iter().map(|(t, _)| t).collect();
    times.sort();
    crate::workload::longest_gap(
        first,
        last.max(times.last().copied().unwrap_or(last)),
        &times,
    )
}
