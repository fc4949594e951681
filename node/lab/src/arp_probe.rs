//! The ARP prober of the cluster lab tests: a thread in a client host asks for the VIP every
//! few milliseconds for a bounded time, while a [`super::Capture`] on the bridge records who
//! claims the VIP; [`analyze`] then says which MACs answered, the longest time without an
//! answer (the outage) and whether two owners ever overlapped (docs/design.md#inv-single-owner).
//!
//! Each probe carries its round number in its ARP sender IP (198.19.x.y, inside the lab's
//! benchmarking range but outside its /24), and the owner's datapath copies that address
//! into the reply's target IP. A reply therefore names the probe it answers, whatever the
//! capture thread's scheduling did to the recorded times: "two MACs answered round k" is
//! exact, not a guess from timestamps. The sender MAC stays the client's own, so no host's
//! neighbour table learns anything wrong (a foreign sender MAC would overwrite the entry
//! every backend holds for the client and break its DSR replies).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::capture::Frame;
use super::host::MacAddr;
use super::{Host, LabError, netns, packet_socket};

/// A probe every 10 ms: 100 rounds a second, fine enough to see a 2 s bound with room.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Round tags live in 198.19.0.0/16, so at most this many rounds per prober.
pub const MAX_ROUNDS: usize = 1 << 16;
const TAG_NET: [u8; 2] = [198, 19];

/// The ARP sender address that tags round `round` (taken modulo [`MAX_ROUNDS`]).
pub fn round_tag(round: usize) -> Ipv4Addr {
    let r = (round % MAX_ROUNDS) as u16;
    let [hi, lo] = r.to_be_bytes();
    Ipv4Addr::new(TAG_NET[0], TAG_NET[1], hi, lo)
}

/// The round a tag address stands for; `None` for any other address.
pub fn round_of(tag: Ipv4Addr) -> Option<usize> {
    let o = tag.octets();
    (o[..2] == TAG_NET).then(|| usize::from(u16::from_be_bytes([o[2], o[3]])))
}

/// The probe of round `round`: a broadcast ARP request for `vip` from `client_mac`, sender
/// address the round's tag.
pub fn probe_frame(client_mac: MacAddr, vip: Ipv4Addr, round: usize) -> Vec<u8> {
    datapath::arp_request(client_mac, round_tag(round), vip)
}

/// One ARP frame that claims the VIP (any ARP frame whose sender IP is the VIP: a reply to
/// a probe, a gratuitous announcement in either form, a reply to someone else).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpClaim {
    /// When the capture read it.
    pub at: Instant,
    /// The MAC it claims the VIP for (the ARP sender hardware address).
    pub mac: MacAddr,
    /// The probe round it answers, if it is a reply to one of ours.
    pub round: Option<usize>,
}

/// The VIP claims among `frames`, in capture order. A reply counts as answering round `k`
/// only if `k < rounds` (a probe with that tag was sent).
pub fn claims(frames: &[Frame], vip: Ipv4Addr, rounds: usize) -> Vec<ArpClaim> {
    frames
        .iter()
        .filter_map(|f| {
            let a = f.arp.filter(|a| a.sender_ip == vip)?;
            let round = (a.op == 2)
                .then(|| round_of(a.target_ip))
                .flatten()
                .filter(|r| *r < rounds);
            Some(ArpClaim {
                at: f.at,
                mac: a.sender_mac,
                round,
            })
        })
        .collect()
}

/// An instant with two owners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DualOwner {
    /// Several MACs claimed the VIP during one probe round (a reply to the round's probe, or
    /// an unsolicited claim read after the round's probe was sent and before the next).
    SameRound { round: usize, macs: Vec<MacAddr> },
    /// `back` claimed the VIP again after `other` had claimed it after `back`: the answer
    /// flipped back. `index` is the position of the flipping claim in time order.
    FlipBack {
        back: MacAddr,
        other: MacAddr,
        index: usize,
    },
}

impl fmt::Display for DualOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DualOwner::SameRound { round, macs } => {
                let macs: Vec<String> = macs.iter().map(ToString::to_string).collect();
                write!(f, "round {round} answered by {}", macs.join(" and "))
            }
            DualOwner::FlipBack { back, other, index } => {
                write!(f, "claim #{index}: {back} answered again after {other}")
            }
        }
    }
}

/// What a probing session showed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArpAnalysis {
    /// Probes sent.
    pub probes: usize,
    /// Probes answered by at least one reply.
    pub answered: usize,
    /// Each MAC that claimed the VIP and how often, in order of first claim.
    pub macs: Vec<(MacAddr, usize)>,
    /// The longest time without a reply to a probe, the edges of the probing window
    /// included (from the first probe to the first reply, from the last reply to the last
    /// probe): the outage a client saw.
    pub longest_gap: Duration,
    /// Where that gap began (the first probe or a reply).
    pub gap_from: Option<Instant>,
    /// Every dual-owner instant found.
    pub dual: Vec<DualOwner>,
}

impl ArpAnalysis {
    /// The MACs that claimed the VIP.
    pub fn owners(&self) -> Vec<MacAddr> {
        self.macs.iter().map(|(m, _)| *m).collect()
    }
}

impl fmt::Display for ArpAnalysis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} probes, {} answered, longest gap {:?}, claims:",
            self.probes, self.answered, self.longest_gap
        )?;
        for (mac, n) in &self.macs {
            write!(f, " {mac}×{n}")?;
        }
        for d in &self.dual {
            write!(f, "; DUAL OWNER: {d}")?;
        }
        Ok(())
    }
}

/// Judges a session from the send time of each round (`rounds[k]` = probe `k`) and the
/// claims seen. Pure: no clock, no I/O.
pub fn analyze(rounds: &[Instant], claims: &[ArpClaim]) -> ArpAnalysis {
    let mut sorted = claims.to_vec();
    // Stable: claims read at the same instant keep their capture order.
    sorted.sort_by_key(|c| c.at);

    let mut macs: Vec<(MacAddr, usize)> = Vec::new();
    for c in &sorted {
        match macs.iter_mut().find(|(m, _)| *m == c.mac) {
            Some((_, n)) => *n += 1,
            None => macs.push((c.mac, 1)),
        }
    }

    let mut by_round: BTreeMap<usize, Vec<MacAddr>> = BTreeMap::new();
    for c in &sorted {
        // An unsolicited claim belongs to the last round sent before it was read.
        let round = c
            .round
            .or_else(|| rounds.partition_point(|sent| *sent <= c.at).checked_sub(1));
        if let Some(r) = round {
            let macs = by_round.entry(r).or_default();
            if !macs.contains(&c.mac) {
                macs.push(c.mac);
            }
        }
    }
    let answered = sorted
        .iter()
        .filter_map(|c| c.round)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let mut dual: Vec<DualOwner> = by_round
        .into_iter()
        .filter(|(_, macs)| macs.len() > 1)
        .map(|(round, macs)| DualOwner::SameRound { round, macs })
        .collect();

    // Owners in order of their turn; a MAC that had its turn and lost it must not return.
    let mut current: Option<MacAddr> = None;
    let mut replaced: Vec<MacAddr> = Vec::new();
    for (index, c) in sorted.iter().enumerate() {
        match current {
            Some(cur) if cur == c.mac => {}
            Some(cur) => {
                if replaced.contains(&c.mac) {
                    dual.push(DualOwner::FlipBack {
                        back: c.mac,
                        other: cur,
                        index,
                    });
                }
                replaced.push(cur);
                current = Some(c.mac);
            }
            None => current = Some(c.mac),
        }
    }

    let (longest_gap, gap_from) = longest_gap(rounds, &sorted);
    ArpAnalysis {
        probes: rounds.len(),
        answered,
        macs,
        longest_gap,
        gap_from,
        dual,
    }
}

/// The longest stretch of the probing window without a reply to a probe.
fn longest_gap(rounds: &[Instant], sorted: &[ArpClaim]) -> (Duration, Option<Instant>) {
    let (Some(&first), Some(&last)) = (rounds.iter().min(), rounds.iter().max()) else {
        return (Duration::ZERO, None);
    };
    let replies = sorted
        .iter()
        .filter(|c| c.round.is_some() && c.at >= first)
        .map(|c| c.at);
    let mut points: Vec<Instant> = std::iter::once(first).chain(replies).collect();
    if points.last().is_some_and(|p| *p < last) {
        points.push(last);
    }
    points
        .windows(2)
        .map(|w| (w[1].saturating_duration_since(w[0]), Some(w[0])))
        .max_by_key(|(gap, _)| *gap)
        .unwrap_or((Duration::ZERO, Some(first)))
}

/// A running prober. Stop it with [`ArpProber::stop`]; dropping it stops it too.
#[derive(Debug)]
pub struct ArpProber {
    vip: Ipv4Addr,
    stop: Arc<AtomicBool>,
    rounds: Arc<Mutex<Vec<Instant>>>,
    thread: Option<JoinHandle<Result<ProbeStats, LabError>>>,
}

/// What the prober thread reports besides the rounds.
#[derive(Clone, Copy, Debug, Default)]
struct ProbeStats {
    send_errors: u64,
}

/// A finished probing session.
#[derive(Clone, Debug)]
pub struct ProbeLog {
    pub vip: Ipv4Addr,
    /// `rounds[k]`: when probe `k` was sent.
    pub rounds: Vec<Instant>,
    /// Sends the kernel refused (not counted as rounds).
    pub send_errors: u64,
}

impl ProbeLog {
    /// The VIP claims among `frames` (a bridge capture).
    pub fn claims(&self, frames: &[Frame]) -> Vec<ArpClaim> {
        claims(frames, self.vip, self.rounds.len())
    }

    /// [`analyze`] on this session and the claims among `frames`.
    pub fn analyze(&self, frames: &[Frame]) -> ArpAnalysis {
        analyze(&self.rounds, &self.claims(frames))
    }
}

impl ArpProber {
    /// Starts probing for `vip` from `client` every `interval`, for at most `limit` and
    /// [`MAX_ROUNDS`] rounds. Returns once the socket is open.
    pub fn start(
        client: &Host,
        vip: Ipv4Addr,
        interval: Duration,
        limit: Duration,
    ) -> Result<ArpProber, LabError> {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let (ns, ifname, mac) = (client.netns.clone(), client.ifname.clone(), client.mac);
        let (s, r) = (Arc::clone(&stop), Arc::clone(&rounds));
        let thread = std::thread::Builder::new()
            .name(format!("arp-probe-{}", client.name))
            .spawn(move || {
                let sock = match netns::enter(&ns).and_then(|()| open_sender(&ifname)) {
                    Ok(sock) => sock,
                    Err(e) => {
                        let msg = e.to_string();
                        if ready_tx.send(Err(e)).is_err() {
                            eprintln!("arp prober: {msg}");
                        }
                        return Ok(ProbeStats::default());
                    }
                };
                if ready_tx.send(Ok(())).is_err() {
                    return Ok(ProbeStats::default());
                }
                Ok(probe_loop(&sock, mac, vip, interval, limit, &s, &r))
            })
            .map_err(|e| LabError::io("spawn ARP prober thread", e))?;
        let started = ready_rx
            .recv()
            .unwrap_or_else(|_| Err(LabError::Spec("ARP prober thread died".into())));
        let prober = ArpProber {
            vip,
            stop,
            rounds,
            thread: Some(thread),
        };
        started.map(|()| prober)
    }

    /// Probes sent so far.
    pub fn sent(&self) -> usize {
        self.rounds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Stops probing and returns the session.
    pub fn stop(mut self) -> Result<ProbeLog, LabError> {
        let stats = self.finish()?;
        let rounds =
            std::mem::take(&mut *self.rounds.lock().unwrap_or_else(PoisonError::into_inner));
        Ok(ProbeLog {
            vip: self.vip,
            rounds,
            send_errors: stats.send_errors,
        })
    }

    fn finish(&mut self) -> Result<ProbeStats, LabError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            None => Ok(ProbeStats::default()),
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(LabError::Spec("ARP prober thread panicked".into())),
        }
    }
}

impl Drop for ArpProber {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            eprintln!("arp prober: {e}");
        }
    }
}

fn probe_loop(
    sock: &Socket,
    mac: MacAddr,
    vip: Ipv4Addr,
    interval: Duration,
    limit: Duration,
    stop: &AtomicBool,
    rounds: &Mutex<Vec<Instant>>,
) -> ProbeStats {
    let start = Instant::now();
    let mut stats = ProbeStats::default();
    let mut next = start;
    // Bounded by count as well as time, so a stalled clock cannot make it spin forever.
    for _ in 0..MAX_ROUNDS * 2 {
        let sent = rounds.lock().unwrap_or_else(PoisonError::into_inner).len();
        if stop.load(Ordering::Relaxed) || start.elapsed() >= limit || sent >= MAX_ROUNDS {
            break;
        }
        let frame = probe_frame(mac, vip, sent);
        let at = Instant::now();
        match sock.send(&frame) {
            Ok(_) => rounds
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(at),
            // E.g. ENOBUFS on a starved machine: the round is retried with the same tag.
            Err(_) => stats.send_errors += 1,
        }
        // A late round is not made up for with a burst: the schedule restarts from now.
        next = (next + interval).max(Instant::now());
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    stats
}

/// A packet socket bound to `ifname` that only sends (protocol 0: the kernel queues no
/// received frames on it).
fn open_sender(ifname: &str) -> Result<Socket, LabError> {
    let user = format!("ARP prober on {ifname}");
    packet_socket::bound(ifname, packet_socket::SEND_ONLY, &user).map(|(sock, _)| sock)
}

#[cfg(test)]
mod tests;
