//! Backend MAC learning with our own ARP and Neighbor Solicitations, and gratuitous ARP
//! (unsolicited Neighbor Advertisements for IPv6 VIPs) on takeover, on a thread `dsrlb-arp`
//! with its own packet socket (not in the workers' fanout group; its filter admits only
//! untagged ARP and untagged Neighbor Solicitations and Advertisements).
//!
//! Why our own ARP rather than the kernel's neighbour table: the node's kernel never sends
//! to backends (it does not route VIP traffic), so its table would hold no entry for them
//! unless we made it resolve them, and reading it would need netlink — a dependency for a
//! worse answer (the kernel's entries age on its own schedule and say nothing about when
//! a backend last answered). Asking ourselves gives exactly the freshness we need.
//!
//! Behaviour: every target is asked at once when the target set is given and then every
//! refresh interval (2 s by default). Any ARP whose sender is a target — reply, request or
//! gratuitous — refreshes that target's MAC. A MAC not heard for three intervals is
//! forgotten, so a backend that went away loses its MAC (and leaves the Maglev table)
//! within seconds. A `Mutex` guards the state: this is control plane, not the packet path.
//!
//! Gratuitous ARP claims a VIP, so with [`MacResolver::announce_only_while_owner`] a round
//! is sent only while the node's lease covers the moment of sending. This thread wakes on
//! its own schedule: after a stop (SIGSTOP, starvation) it would otherwise send the rounds
//! that fell due meanwhile, for a lease that ran out while it was frozen, before the
//! control loop could cancel them.
//!
//! Announcements are one job per VIP: a burst of rounds (takeover, or a VIP added while
//! owning), then, with [`MacResolver::set_garp_refresh`], one round every refresh period
//! until the job is cancelled (release) or withdrawn (the VIP is gone).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::arp;
use crate::bpf;
use crate::error::IoError;
use crate::flux::{FluxWatch, VipConflict};
use crate::iface::InterfaceInfo;
use crate::ndp;
use crate::packet::MacAddr;
use crate::segment_probe::{SegmentEvidence, SegmentProbe};
use crate::shared::Shared;
use crate::sys::PacketSocket;

/// How often targets are asked by default.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(2);
/// A MAC unheard for this many refresh intervals is forgotten.
const FORGET_AFTER_ROUNDS: u32 = 3;
/// Upper bound on one sleep of the thread, whatever is scheduled.
const MAX_SLEEP: Duration = Duration::from_millis(500);

/// Counters of the resolver's own traffic.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct ResolverStats {
    pub requests_sent: u64,
    pub garps_sent: u64,
    pub send_errors: u64,
    pub frames_received: u64,
}

/// VIPs announced per step (two frames each) and the step: 64,000 frames/s at most, about
/// 4 % of a gigabit segment in minimum-size frames; 10,000 VIPs take 0.3 s.
pub const GARP_BATCH: usize = 32;
pub const GARP_STEP: Duration = Duration::from_millis(1);

/// Gratuitous ARP still to send, one job per VIP. Per VIP because announcements start at
/// different times (a takeover's burst, then a VIP added while owning): a new burst for one
/// VIP must replace that VIP's rounds and leave every other VIP's rounds alone.
#[derive(Default)]
struct GarpSchedule {
    jobs: Vec<GarpJob>,
    /// After its burst a job stays and sends one round every `refresh`: a switch or client
    /// that lost the entry (aged out, flushed, rebooted) learns it again without asking,
    /// which a client that only ever sends to a cached MAC never would. `None`: off.
    refresh: Option<Duration>,
}

struct GarpJob {
    vip: IpAddr,
    /// Rounds of the burst still to send; 0 once it is over (the job then only refreshes).
    remaining: u32,
    /// Whether its first round went out: first announcements go before repeats.
    announced: bool,
    interval: Duration,
    due: Instant,
}

impl GarpSchedule {
    /// Starts a burst of `count` rounds `interval` apart for each of `vips`, the first at
    /// `now`, replacing whatever was scheduled for those VIPs.
    fn announce(&mut self, vips: &[IpAddr], count: u32, interval: Duration, now: Instant) {
        if count == 0 {
            return;
        }
        // Thousands of VIPs on a takeover: by set, not a search per VIP.
        let set: std::collections::HashSet<IpAddr> = vips.iter().copied().collect();
        self.jobs.retain(|j| !set.contains(&j.vip));
        self.jobs.extend(vips.iter().map(|&vip| GarpJob {
            vip,
            remaining: count,
            announced: false,
            interval,
            due: now,
        }));
    }

    fn clear(&mut self) {
        self.jobs.clear();
    }

    /// Drops the jobs of `vips`, burst or refresh.
    fn withdraw(&mut self, vips: &[IpAddr]) {
        let set: std::collections::HashSet<IpAddr> = vips.iter().copied().collect();
        self.jobs.retain(|j| !set.contains(&j.vip));
    }

    /// Takes the rounds due at `now`, appending their VIPs to `out`; returns when the next
    /// round falls due, if any is left. A late round is sent once, not caught up: the next
    /// one is an interval (or refresh period) after this call, so a thread that slept long
    /// does not burst.
    ///
    /// Paced: at most [`GARP_BATCH`] VIPs per call, the rest [`GARP_STEP`] later, in the order
    /// they were announced, so a takeover of thousands of VIPs does not flood the segment
    /// and the first VIPs go first (docs/design.md#scale).
    fn take_due(&mut self, now: Instant, out: &mut Vec<IpAddr>) -> Option<Instant> {
        let refresh = self.refresh;
        let mut taken = 0;
        // First announcements, then repeats and refreshes: with thousands of VIPs the first
        // VIPs' second round falls due while the first round is still going, and must not
        // hold back the last VIPs' first announcement.
        for repeats in [false, true] {
            self.jobs.retain_mut(|job| {
                if job.due > now || job.announced != repeats || taken == GARP_BATCH {
                    return true;
                }
                taken += 1;
                out.push(job.vip);
                job.announced = true;
                job.remaining = job.remaining.saturating_sub(1);
                let gap = if job.remaining > 0 {
                    job.interval
                } else {
                    match refresh {
                        Some(period) => period,
                        None => return false,
                    }
                };
                job.due = now + gap;
                true
            });
        }
        // A job due and not taken (the batch was full) goes one step later.
        self.jobs
            .iter()
            .map(|j| if j.due <= now { now + GARP_STEP } else { j.due })
            .min()
    }
}

#[derive(Default)]
struct State {
    /// Sorted.
    targets: Vec<IpAddr>,
    ask_now: bool,
    learned: HashMap<IpAddr, (MacAddr, Instant)>,
    garp: GarpSchedule,
    /// When set, announcements are sent only while this lease is held.
    lease: Option<Arc<Shared>>,
    stats: ResolverStats,
    /// The pair's segment probes (docs/design.md#pair-segment).
    segment: SegmentProbe,
    /// Who else claims our VIPs (docs/design.md#arp-flux).
    flux: FluxWatch,
}

struct Inner {
    state: Mutex<State>,
    /// The solicited-node groups of the IPv6 VIPs, joined on the interface (see
    /// [`MacResolver::join_vip_groups`]), and the socket that holds the memberships.
    groups: Mutex<(
        std::collections::BTreeSet<Ipv6Addr>,
        Option<std::net::UdpSocket>,
    )>,
    ifindex: u32,
    stop: AtomicBool,
    /// Written to wake the thread early (new targets, GARP, stop).
    wake_tx: UnixDatagram,
    refresh: Duration,
}

impl Inner {
    /// The state stays consistent across a panic elsewhere (each update is a plain
    /// assignment), so a poisoned lock is taken over.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        // A full wake queue already guarantees a wake-up; nothing is lost by dropping this.
        if let Err(e) = self.wake_tx.send(&[1])
            && e.kind() != io::ErrorKind::WouldBlock
        {
            tracing::warn!(error = %e, "cannot wake the ARP thread");
        }
    }

    fn fresh(&self, heard: Instant, now: Instant) -> bool {
        now.saturating_duration_since(heard) < self.refresh * FORGET_AFTER_ROUNDS
    }
}

/// Learns backend MACs by ARP and sends gratuitous ARP. Dropping it stops the thread.
pub struct MacResolver {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

impl MacResolver {
    /// Starts on `iface` (looked up in the calling thread's namespace), asking from
    /// `own_ip` (the node's address on that segment), refreshing every `DEFAULT_REFRESH` (2 s).
    pub fn start(iface: &InterfaceInfo, own_ip: Ipv4Addr) -> Result<MacResolver, IoError> {
        Self::start_with(iface, own_ip, DEFAULT_REFRESH)
    }

    /// As [`start`](MacResolver::start) with another refresh interval (at least 100 ms).
    pub fn start_with(
        iface: &InterfaceInfo,
        own_ip: Ipv4Addr,
        refresh: Duration,
    ) -> Result<MacResolver, IoError> {
        let refresh = refresh.max(Duration::from_millis(100));
        let sock = PacketSocket::open().map_err(|source| IoError::Socket {
            purpose: "the ARP resolver",
            source,
        })?;
        sock.attach_filter(&bpf::resolver_filter())
            .map_err(|source| IoError::Setsockopt {
                option: "SO_ATTACH_FILTER",
                source,
            })?;
        sock.set_int(libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)
            .map_err(|source| IoError::Setsockopt {
                option: "PACKET_IGNORE_OUTGOING",
                source,
            })?;
        // ETH_P_ALL: ARP and ICMPv6 on one socket; the filter keeps the rest out in the
        // kernel.
        sock.bind(iface.index, libc::ETH_P_ALL as u16)
            .map_err(|source| IoError::Bind {
                interface: iface.name.clone(),
                source,
            })?;
        let wake_err = |source| IoError::Socket {
            purpose: "the ARP thread's wake-up pair",
            source,
        };
        let (wake_tx, wake_rx) = UnixDatagram::pair().map_err(wake_err)?;
        wake_tx.set_nonblocking(true).map_err(wake_err)?;
        wake_rx.set_nonblocking(true).map_err(wake_err)?;
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            groups: Mutex::new(Default::default()),
            ifindex: iface.index,
            stop: AtomicBool::new(false),
            wake_tx,
            refresh,
        });
        let worker = ArpThread {
            inner: inner.clone(),
            sock,
            wake_rx,
            own_mac: iface.mac,
            own_ip,
            own_ip6: iface.primary_ipv6(),
            next_round: Instant::now() + refresh,
        };
        let thread = std::thread::Builder::new()
            .name("dsrlb-arp".into())
            .spawn(move || worker.run())
            .map_err(|source| IoError::Spawn {
                thread: "dsrlb-arp".into(),
                source,
            })?;
        Ok(MacResolver {
            inner,
            thread: Some(thread),
        })
    }

    /// Replaces the set of addresses to resolve and asks every one of them at once.
    /// MACs of addresses no longer in the set are forgotten.
    pub fn set_targets(&self, mut ips: Vec<IpAddr>) {
        ips.sort_unstable();
        ips.dedup();
        {
            let mut st = self.inner.lock();
            st.learned.retain(|ip, _| ips.binary_search(ip).is_ok());
            st.targets = ips;
            st.ask_now = true;
        }
        self.inner.wake();
    }

    /// Targets with a MAC heard within the last three refresh intervals, sorted by address.
    pub fn learned(&self) -> Vec<(IpAddr, MacAddr)> {
        let now = Instant::now();
        let st = self.inner.lock();
        let mut out: Vec<(IpAddr, MacAddr)> = st
            .learned
            .iter()
            .filter(|(_, (_, heard))| self.inner.fresh(*heard, now))
            .map(|(ip, (mac, _))| (*ip, *mac))
            .collect();
        out.sort_unstable();
        out
    }

    /// Announces `vips` with our MAC: `count` rounds `interval` apart, each round a
    /// gratuitous request and a gratuitous reply per IPv4 VIP, an unsolicited Neighbor
    /// Advertisement (override set) per IPv6 VIP. Returns at once; the ARP thread
    /// sends the rounds (the first immediately). Replaces the announcement in progress for
    /// these VIPs only; other VIPs keep their remaining rounds.
    pub fn send_garp(&self, vips: &[IpAddr], count: u32, interval: Duration) {
        if vips.is_empty() || count == 0 {
            return;
        }
        self.inner
            .lock()
            .garp
            .announce(vips, count, interval, Instant::now());
        self.inner.wake();
    }

    /// From now on, sends a gratuitous ARP round only while `shared`'s VIP lease covers the
    /// moment of sending; a round that falls due while it does not is skipped, not made up.
    pub fn announce_only_while_owner(&self, shared: Arc<Shared>) {
        self.inner.lock().lease = Some(shared);
    }

    /// After an announcement's burst, repeats one round per VIP every `period` until
    /// [`cancel_garp`](MacResolver::cancel_garp) or [`withdraw_garp`](MacResolver::withdraw_garp)
    /// (keepalived's `vrrp_garp_master_refresh`). `None` (the default): the burst is all.
    /// Applies to announcements in progress from their next round on.
    pub fn set_garp_refresh(&self, period: Option<Duration>) {
        self.inner.lock().garp.refresh = period.filter(|p| !p.is_zero());
        self.inner.wake();
    }

    /// Abandons announcements still to be sent, refreshes included: on step-down, a late
    /// gratuitous ARP would claim a VIP this node no longer owns.
    pub fn cancel_garp(&self) {
        self.inner.lock().garp.clear();
    }

    /// Abandons the announcements of `vips` only: a VIP no longer served must not be
    /// claimed (its traffic would come here to be dropped), the others keep theirs.
    pub fn withdraw_garp(&self, vips: &[IpAddr]) {
        if !vips.is_empty() {
            self.inner.lock().garp.withdraw(vips);
        }
    }

    /// Joins the solicited-node group of every IPv6 VIP in `vips` on the interface (and
    /// leaves those of VIPs gone), through an IPv6 socket: the kernel then sends the MLD
    /// reports a snooping switch needs to forward the groups here, and opens the NIC's
    /// multicast filter to them, so the Neighbor Solicitations for the VIPs reach the
    /// datapath's sockets. Every node joins, owner or not: a takeover then waits for no
    /// report. The kernel itself ignores those solicitations (it holds no VIP).
    pub fn join_vip_groups(&self, vips: &[Ipv6Addr]) {
        let want: std::collections::BTreeSet<Ipv6Addr> =
            vips.iter().map(|v| ndp::solicited_node(*v)).collect();
        let mut g = self.inner.groups.lock().unwrap_or_else(|e| e.into_inner());
        let (joined, sock) = &mut *g;
        if *joined == want {
            return;
        }
        if sock.is_none() {
            match std::net::UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)) {
                Ok(s) => *sock = Some(s),
                Err(e) => {
                    tracing::error!(error = %e,
                        "cannot open the IPv6 socket that joins the VIPs' solicited-node groups; \
                         Neighbor Solicitations for IPv6 VIPs may not reach this node");
                    return;
                }
            }
        }
        let Some(s) = sock.as_ref() else { return };
        let index = self.inner.ifindex;
        for gone in joined.difference(&want) {
            if let Err(e) = s.leave_multicast_v6(gone, index) {
                tracing::debug!(group = %gone, error = %e, "leaving a solicited-node group failed");
            }
        }
        let mut now = std::collections::BTreeSet::new();
        for group in &want {
            if joined.contains(group) {
                now.insert(*group);
                continue;
            }
            match s.join_multicast_v6(group, index) {
                Ok(()) => {
                    now.insert(*group);
                }
                Err(e) => tracing::error!(group = %group, error = %e,
                    "cannot join a solicited-node group; Neighbor Solicitations for its VIPs \
                     may not reach this node"),
            }
        }
        *joined = now;
    }

    /// Records ARP claims for `vips` from any other MAC from now on (see
    /// [`segment_evidence`](MacResolver::segment_evidence)); replaces the watched set.
    pub fn watch_vips(&self, vips: Vec<Ipv4Addr>) {
        self.inner.lock().segment.watch(vips);
    }

    /// Sends an ARP request for every watched VIP every `interval` (`None`: stops). Asking
    /// again with the same interval keeps the schedule.
    pub fn probe_vips(&self, interval: Option<Duration>) {
        self.inner
            .lock()
            .segment
            .set_interval(interval, Instant::now());
        self.inner.wake();
    }

    /// What probing and watching have seen so far.
    pub fn segment_evidence(&self) -> SegmentEvidence {
        self.inner.lock().segment.evidence()
    }

    /// The VIPs whose claims by strangers are tallied and which [`ask_for_vips`]
    /// asks for (docs/design.md#arp-flux); replaces the set.
    ///
    /// [`ask_for_vips`]: MacResolver::ask_for_vips
    pub fn set_flux_vips(&self, vips: Vec<Ipv4Addr>) {
        self.inner.lock().flux.set_vips(vips);
    }

    /// While `on`, asks for every VIP from our own address every
    /// [`FLUX_PROBE_EVERY`](crate::FLUX_PROBE_EVERY) (less often for thousands of VIPs: at
    /// most 200 questions a second): a host that wrongly answers for a VIP answers us.
    pub fn ask_for_vips(&self, on: bool) {
        self.inner.lock().flux.set_asking(on, Instant::now());
        self.inner.wake();
    }

    /// A handle for the parts of the resolver a task outside the control loop feeds or reads.
    pub fn handle(&self) -> ResolverHandle {
        ResolverHandle(self.inner.clone())
    }

    pub fn stats(&self) -> ResolverStats {
        self.inner.lock().stats
    }

    /// A handle that reads [`stats`](MacResolver::stats) where the resolver itself is not
    /// reachable (the metrics endpoint). It does not keep the thread running.
    pub fn stats_reader(&self) -> ResolverStatsReader {
        ResolverStatsReader(self.inner.clone())
    }

    /// Stops the thread and waits for it.
    pub fn stop(self) {
        drop(self);
    }
}

/// Reads a resolver's counters; see [`MacResolver::stats_reader`].
#[derive(Clone)]
pub struct ResolverStatsReader(Arc<Inner>);

impl ResolverStatsReader {
    pub fn get(&self) -> ResolverStats {
        self.0.lock().stats
    }

    /// See [`MacResolver::segment_evidence`].
    pub fn segment_evidence(&self) -> SegmentEvidence {
        self.0.lock().segment.evidence()
    }
}

/// Feeds and reads the ARP-flux watch from outside the control loop; see
/// [`MacResolver::handle`]. It does not keep the thread running.
#[derive(Clone)]
pub struct ResolverHandle(Arc<Inner>);

impl ResolverHandle {
    /// The cluster members' datapath MACs (ours included): their claims are not conflicts.
    /// `complete`: every member gave its MAC, so any other MAC is surely no member's, and its
    /// claims do not count as a pair peer's either (docs/design.md#pair-segment).
    pub fn set_members(&self, macs: Vec<MacAddr>, complete: bool) {
        self.0.lock().flux.set_members(macs, complete);
    }

    /// Every (VIP, MAC) conflict seen, and the claims not tallied because the table was full.
    pub fn vip_conflicts(&self) -> (Vec<VipConflict>, u64) {
        self.0.lock().flux.conflicts()
    }
}

impl std::fmt::Debug for ResolverHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ResolverHandle").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ResolverStatsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ResolverStatsReader")
            .field(&self.get())
            .finish()
    }
}

impl Drop for MacResolver {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        self.inner.wake();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the ARP resolver thread panicked");
        }
    }
}

impl std::fmt::Debug for MacResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MacResolver")
            .field("learned", &self.learned())
            .field("stats", &self.stats())
            .finish()
    }
}

#[derive(Default)]
struct Sent {
    requests: u64,
    garps: u64,
    probes: u64,
    errors: u64,
}

struct ArpThread {
    inner: Arc<Inner>,
    sock: PacketSocket,
    wake_rx: UnixDatagram,
    own_mac: MacAddr,
    own_ip: Ipv4Addr,
    /// `None`: the interface has no IPv6 address, so IPv6 targets are not asked.
    own_ip6: Option<Ipv6Addr>,
    next_round: Instant,
}

impl ArpThread {
    fn run(mut self) {
        let mut buf = vec![0u8; 2048];
        let mut to_ask: Vec<IpAddr> = Vec::new();
        let mut to_announce: Vec<IpAddr> = Vec::new();
        let mut to_probe: Vec<Ipv4Addr> = Vec::new();
        while !self.inner.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let sleep = self.plan(now, &mut to_ask, &mut to_announce, &mut to_probe);
            if !to_ask.is_empty() || !to_announce.is_empty() || !to_probe.is_empty() {
                let lease = self.inner.lock().lease.clone();
                let sent = self.send_all(&to_ask, &to_announce, &to_probe, lease.as_deref());
                let mut st = self.inner.lock();
                st.stats.requests_sent += sent.requests;
                st.stats.garps_sent += sent.garps;
                st.stats.send_errors += sent.errors;
                if !to_probe.is_empty() {
                    st.segment.sent(sent.probes);
                }
            }
            if !self.wait(sleep) {
                return;
            }
            self.receive(&mut buf);
        }
    }

    /// Decides what to send now and how long to sleep afterwards.
    fn plan(
        &mut self,
        now: Instant,
        to_ask: &mut Vec<IpAddr>,
        to_announce: &mut Vec<IpAddr>,
        to_probe: &mut Vec<Ipv4Addr>,
    ) -> Duration {
        to_ask.clear();
        to_announce.clear();
        to_probe.clear();
        let mut st = self.inner.lock();
        if st.ask_now || now >= self.next_round {
            st.ask_now = false;
            self.next_round = now + self.inner.refresh;
            to_ask.extend_from_slice(&st.targets);
            let inner = &self.inner;
            st.learned.retain(|_, (_, heard)| inner.fresh(*heard, now));
        }
        let mut next = self.next_round;
        if let Some(due) = st.garp.take_due(now, to_announce) {
            next = next.min(due);
        }
        if let Some(due) = st.segment.take_due(now, to_probe) {
            next = next.min(due);
        }
        // The flux watch's questions are asked like a backend's: from our own address.
        let mut flux = Vec::new();
        if let Some(due) = st.flux.take_due(now, &mut flux) {
            next = next.min(due);
        }
        to_ask.extend(flux.into_iter().map(IpAddr::V4));
        // Rounds due while the lease is not held are skipped, but the jobs stay: a lapse
        // the control loop never saw as a release (it got a fresh quorum ack in time) must
        // not end the refresh for the rest of this ownership. A release it did see cancels.
        if st.lease.as_ref().is_some_and(|l| !l.is_owner()) {
            to_announce.clear();
        }
        next.saturating_duration_since(now).min(MAX_SLEEP)
    }

    fn send_all(
        &self,
        to_ask: &[IpAddr],
        to_announce: &[IpAddr],
        to_probe: &[Ipv4Addr],
        lease: Option<&Shared>,
    ) -> Sent {
        let mut sent = Sent::default();
        let mut last_err = None;
        let mut send = |frame: Vec<u8>, ok: &mut u64, errors: &mut u64| match self.sock.send(&frame)
        {
            Ok(_) => *ok += 1,
            Err(e) => {
                *errors += 1;
                last_err = Some(e);
            }
        };
        for ip in to_ask {
            let frame = match (ip, self.own_ip6) {
                (IpAddr::V4(ip), _) => arp::arp_request(self.own_mac, self.own_ip, *ip),
                (IpAddr::V6(ip), Some(own)) => ndp::neighbor_solicitation(self.own_mac, own, *ip),
                // Reported by the node at start (a farm with IPv6 backends on an
                // interface without IPv6); the backend stays without a MAC.
                (IpAddr::V6(_), None) => continue,
            };
            send(frame, &mut sent.requests, &mut sent.errors);
        }
        for vip in to_probe {
            // RFC 5227 probe: whoever owns the VIP answers it; the peer recognises it.
            send(
                arp::arp_request(self.own_mac, Ipv4Addr::UNSPECIFIED, *vip),
                &mut sent.probes,
                &mut sent.errors,
            );
        }
        for vip in to_announce {
            // Checked again right before the claim: `plan` ran before the requests went out.
            if lease.is_some_and(|l| !l.is_owner()) {
                break;
            }
            match vip {
                IpAddr::V4(vip) => {
                    send(
                        arp::garp_request(self.own_mac, *vip),
                        &mut sent.garps,
                        &mut sent.errors,
                    );
                    send(
                        arp::garp_reply(self.own_mac, *vip),
                        &mut sent.garps,
                        &mut sent.errors,
                    );
                }
                IpAddr::V6(vip) => send(
                    ndp::unsolicited_na(self.own_mac, *vip),
                    &mut sent.garps,
                    &mut sent.errors,
                ),
            }
        }
        if let Some(e) = last_err {
            tracing::warn!(errors = sent.errors, error = %e, "ARP frames could not be sent");
        }
        sent
    }

    /// Sleeps until a frame, a wake-up or the timeout; `false` on a fatal poll error.
    fn wait(&mut self, timeout: Duration) -> bool {
        let ms = u16::try_from(timeout.as_millis())
            .unwrap_or(u16::MAX)
            .max(1);
        let mut fds = [
            PollFd::new(self.sock.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.wake_rx.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => {
                tracing::error!(error = %e, "poll in the ARP thread failed; resolver stops");
                return false;
            }
        }
        let mut b = [0u8; 16];
        while self.wake_rx.recv(&mut b).is_ok_and(|n| n > 0) {}
        true
    }

    /// Drains the socket, recording any ARP whose sender is a target.
    fn receive(&mut self, buf: &mut [u8]) {
        // Bounded: at most this many frames per wake-up, so the loop always comes back
        // to check `stop` and the schedule.
        for _ in 0..1024 {
            let n = match self.sock.recv(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // E.g. ENETDOWN while the interface is down; the next round retries.
                    tracing::debug!(error = %e, "ARP receive failed");
                    return;
                }
            };
            let frame = &buf[..n.min(buf.len())];
            if let Some((ip, mac)) = ndp::parse_neighbor(frame) {
                let ip = IpAddr::V6(ip);
                let mut st = self.inner.lock();
                st.stats.frames_received += 1;
                if st.targets.binary_search(&ip).is_ok() {
                    st.learned.insert(ip, (mac, Instant::now()));
                }
                continue;
            }
            if let Some((target, mac)) = arp::parse_arp_probe(frame) {
                self.inner
                    .lock()
                    .segment
                    .heard_probe(target, mac, self.own_mac, Instant::now());
                continue;
            }
            let Some((ip, mac)) = arp::parse_arp_reply(frame) else {
                continue;
            };
            let mut st = self.inner.lock();
            st.stats.frames_received += 1;
            if !st.flux.is_stranger(mac) {
                st.segment.heard(ip, mac, self.own_mac, Instant::now());
            }
            if mac != self.own_mac {
                st.flux.heard(ip, mac, Instant::now());
            }
            let ip = IpAddr::V4(ip);
            if st.targets.binary_search(&ip).is_ok() {
                st.learned.insert(ip, (mac, Instant::now()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 101));
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn garp_for_thousands_of_vips_is_paced_first_vips_first() {
        let mut s = GarpSchedule::default();
        let vips: Vec<IpAddr> = (0..1000u32)
            .map(|i| Ipv4Addr::from_bits(0xc612_4000 + i).into())
            .collect();
        let t0 = Instant::now();
        s.announce(&vips, 2, Duration::from_secs(1), t0);
        let mut out = Vec::new();
        let mut now = t0;
        let mut steps = 0;
        // The first round, step by step.
        while out.len() < vips.len() {
            let before = out.len();
            let next = s.take_due(now, &mut out).expect("more is due");
            assert!(
                out.len() - before <= GARP_BATCH,
                "step {steps} sent {}",
                out.len() - before
            );
            if out.len() < vips.len() {
                assert_eq!(
                    next,
                    now + GARP_STEP,
                    "the rest of the round one step later"
                );
            }
            now = next;
            steps += 1;
        }
        assert_eq!(out, vips, "announced in order, each once");
        assert_eq!(steps, vips.len().div_ceil(GARP_BATCH));
    }

    #[test]
    fn every_vips_first_announcement_goes_before_any_repeat() {
        let mut s = GarpSchedule::default();
        let vips: Vec<IpAddr> = (0..3000u32)
            .map(|i| Ipv4Addr::from_bits(0xc613_0000 + i).into())
            .collect();
        let t0 = Instant::now();
        // Rounds 10 ms apart: the first round of 3,000 VIPs takes ~94 steps of 1 ms.
        s.announce(&vips, 3, Duration::from_millis(10), t0);
        let mut out = Vec::new();
        let mut now = t0;
        while let Some(next) = s.take_due(now, &mut out) {
            now = next;
        }
        assert_eq!(out.len(), 3 * vips.len(), "three rounds each");
        assert_eq!(
            out[..vips.len()],
            vips[..],
            "the first round whole, in order, first"
        );
    }

    /// Drives `schedule` from `t0 + from` to `t0 + until` as the thread would (waking
    /// exactly when the next round is due) and lists each round sent: (ms after `t0`, VIP).
    fn drive(
        schedule: &mut GarpSchedule,
        t0: Instant,
        from: Duration,
        until: Duration,
    ) -> Vec<(u128, IpAddr)> {
        let mut sent = Vec::new();
        let mut out = Vec::new();
        let mut now = t0 + from;
        while now <= t0 + until {
            out.clear();
            let next = schedule.take_due(now, &mut out);
            sent.extend(out.iter().map(|v| ((now - t0).as_millis(), *v)));
            match next {
                Some(n) => now = n.max(now + MS),
                None => break,
            }
        }
        sent
    }

    /// When `vip` was announced, in ms after `t0`.
    fn rounds(sent: &[(u128, IpAddr)], vip: IpAddr) -> Vec<u128> {
        sent.iter()
            .filter(|(_, v)| *v == vip)
            .map(|(t, _)| *t)
            .collect()
    }

    #[test]
    fn a_burst_for_a_new_vip_leaves_the_other_vips_rounds_alone() {
        let t0 = Instant::now();
        let mut s = GarpSchedule::default();
        s.announce(&[A], 3, 100 * MS, t0);
        // Round 1 of A's burst, then B appears while A's rounds 2 and 3 are pending.
        let mut sent = drive(&mut s, t0, Duration::ZERO, 50 * MS);
        s.announce(&[B], 3, 100 * MS, t0 + 50 * MS);
        sent.extend(drive(&mut s, t0, 50 * MS, Duration::from_secs(10)));
        assert_eq!(rounds(&sent, A), vec![0, 100, 200]);
        assert_eq!(rounds(&sent, B), vec![50, 150, 250]);
    }

    #[test]
    fn a_new_burst_for_the_same_vip_replaces_its_rounds() {
        let t0 = Instant::now();
        let mut s = GarpSchedule::default();
        s.announce(&[A, B], 3, 100 * MS, t0);
        let mut sent = drive(&mut s, t0, Duration::ZERO, 50 * MS);
        s.announce(&[A], 2, 100 * MS, t0 + 50 * MS);
        sent.extend(drive(&mut s, t0, 50 * MS, Duration::from_secs(10)));
        assert_eq!(rounds(&sent, A), vec![0, 50, 150]);
        assert_eq!(rounds(&sent, B), vec![0, 100, 200]);
    }

    #[test]
    fn with_a_refresh_every_vip_is_announced_again_every_period_after_its_burst() {
        let t0 = Instant::now();
        let mut s = GarpSchedule {
            refresh: Some(Duration::from_secs(1)),
            ..GarpSchedule::default()
        };
        s.announce(&[A], 3, 100 * MS, t0);
        let mut sent = drive(&mut s, t0, Duration::ZERO, 1500 * MS);
        // B appears mid-refresh: its own burst, then its own refresh phase; A's is kept.
        s.announce(&[B], 2, 100 * MS, t0 + 1500 * MS);
        sent.extend(drive(&mut s, t0, 1500 * MS, 3700 * MS));
        assert_eq!(rounds(&sent, A), vec![0, 100, 200, 1200, 2200, 3200]);
        assert_eq!(rounds(&sent, B), vec![1500, 1600, 2600, 3600]);
        // Refresh goes on while nothing stops it; withdrawing A leaves B's.
        s.withdraw(&[A]);
        let later = drive(&mut s, t0, 3700 * MS, 5700 * MS);
        assert_eq!(rounds(&later, A), Vec::<u128>::new());
        assert_eq!(rounds(&later, B), vec![4600, 5600]);
        // Release ends it all.
        s.clear();
        assert_eq!(drive(&mut s, t0, 5700 * MS, 60_000 * MS), vec![]);
    }

    #[test]
    fn a_late_refresh_round_is_sent_once_not_caught_up() {
        let t0 = Instant::now();
        let mut s = GarpSchedule {
            refresh: Some(Duration::from_secs(1)),
            ..GarpSchedule::default()
        };
        s.announce(&[A], 1, 100 * MS, t0);
        let mut out = Vec::new();
        assert_eq!(s.take_due(t0, &mut out), Some(t0 + 1000 * MS));
        // The thread was stopped for 10 s: one round now, the next a period later.
        out.clear();
        let late = t0 + 10_000 * MS;
        assert_eq!(s.take_due(late, &mut out), Some(late + 1000 * MS));
        assert_eq!(out, vec![A]);
    }

    #[test]
    fn without_a_refresh_a_job_ends_with_its_burst() {
        let t0 = Instant::now();
        let mut s = GarpSchedule::default();
        s.announce(&[A], 2, 100 * MS, t0);
        let sent = drive(&mut s, t0, Duration::ZERO, 60_000 * MS);
        assert_eq!(rounds(&sent, A), vec![0, 100]);
        assert!(s.jobs.is_empty());
    }

    #[test]
    fn cancel_drops_every_vips_rounds() {
        let t0 = Instant::now();
        let mut s = GarpSchedule::default();
        s.announce(&[A], 3, 100 * MS, t0);
        s.announce(&[B], 3, 100 * MS, t0);
        assert_eq!(drive(&mut s, t0, Duration::ZERO, Duration::ZERO).len(), 2);
        s.clear();
        let mut out = Vec::new();
        assert_eq!(s.take_due(t0 + Duration::from_secs(10), &mut out), None);
        assert!(out.is_empty());
    }
}
