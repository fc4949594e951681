//! The per-packet decision: parse a frame, answer ARP for VIPs, choose a backend and
//! rewrite the Ethernet addresses in place. One [`Processor`] per worker thread; it does
//! no I/O and allocates nothing after [`Processor::new`].
//!
//! Order of checks for IPv4 (so each drop has one reason): parse errors, `NotVip`,
//! `NotOwner`, `UnsupportedProtocol`, `FragmentAmbiguous`, `NoFarm`, `NoBackend`.
//!
//! Choosing a backend (docs/design.md#choosing-a-backend): a packet of a known flow keeps its
//! backend (a pure TCP SYN excepted: it opens a new connection); a new flow of a persistent farm
//! follows its client's pin, or gets Maglev's pick for the client's address; any other new flow
//! gets Maglev's pick for its 5-tuple. The packets of a pinned client ask for a refresh of its
//! pin once a quarter of the TTL has passed (looked at about once a second per flow, so a long
//! stream costs one map lookup per second, not one per packet).
//!
//! Only a client that can receive packets writes a pin (docs/design.md#inv-pins-from-real-clients):
//! a TCP flow asks for its client's pin with its first packet after the SYN (the handshake's
//! ACK: the client got the backend's SYN-ACK), a UDP client with its second datagram (of the
//! same flow or another). A spoofed SYN or a one-off datagram forwards but leaves no pin and no
//! Raft write. The flow table keeps
//! the same distinction ([`crate::flow`]): flows that got this far are *established* and never
//! evicted by new SYNs.
//!
//! Fragments: every fragment of a datagram (the first included) is keyed and hashed on the
//! 3-tuple (src, dst, protocol), so all of them reach one backend. A non-first fragment has
//! no port, so a fragmented datagram is served by the unique farm on (VIP, protocol); when
//! several farms share a VIP and protocol (different port ranges), fragments of that VIP
//! and protocol are dropped as `FragmentAmbiguous`. A flow whose packets are sometimes
//! fragmented may reach two backends (3-tuple vs 5-tuple hash); Katran behaves the same.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::arp::reply_in_place;
use crate::counters::DropReason;
use crate::counters::FlowCounters;
use crate::flow::{FlowAddr, FlowKey, FlowTable};
use crate::limit::SourceLimiter;
use crate::ndp;
use crate::packet::{ARP_OP_REQUEST, ArpView, Fragment, Ipv4View, Ipv6View, Parsed, parse};
use crate::persist::{FarmPins, Pin, PinEvent, PinQueue, QUEUE_CAPACITY, client_hash};
use crate::table::{
    Backend, Farm, FarmPersist, FlowHash, ForwardingTable, FragFarm, Protocol, VipEntry,
};

/// A pin request (new or refresh) that has not shown up in the mirror is asked again after
/// this long: the batch that carried it may have been lost with a leader.
const PIN_RETRY_NS: u64 = 1_000_000_000;
/// Slots of the per-worker memory of recently requested new pins (a power of two).
const RECENT_SLOTS: usize = 4096;
/// Slots of the per-worker memory of UDP clients seen once (a power of two).
const SEEN_SLOTS: usize = 4096;

/// The flow-entry mark of the pin check: the monotonic time in units of 2^30 ns (~1.07 s),
/// wrapping every ~19 h (a wrap at worst skips one pin check for a second).
#[inline]
fn pin_epoch(now_ns: u64) -> u16 {
    (now_ns >> 30) as u16
}

/// Sizes of a worker's private state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ProcessorConfig {
    /// Flows remembered per worker (rounded up to a power of two).
    pub flow_capacity: usize,
    /// A flow unseen for this long is forgotten (its next packet goes through Maglev).
    pub flow_idle_ns: u64,
    /// How many workers share the traffic: each enforces `1 / rate_share` of a farm's new
    /// flow rates (docs/design.md#limits). The datapath sets it when it starts workers.
    pub rate_share: usize,
    /// After this node became owner, `tcp_strict` farms drop nothing for this long, so
    /// the flows the last owner forwarded get their entries here first.
    pub tcp_strict_grace_ns: u64,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            flow_capacity: 65_536,
            flow_idle_ns: 300_000_000_000,
            rate_share: 1,
            tcp_strict_grace_ns: 300_000_000_000,
        }
    }
}

/// What to do with a frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    /// Rewritten in place (dst = backend MAC, src = own MAC): send it.
    Forward,
    /// Rewritten in place into an ARP reply of `len` bytes: send those bytes with no
    /// offload metadata.
    Reply { len: usize },
    /// Not sent. The caller counts the reason.
    Drop(DropReason),
}

/// A new pin this worker asked for: (farm key << 32 | client, when, backend id).
#[derive(Clone, Copy, Debug, Default)]
struct Asked {
    key: u64,
    at_ns: u64,
    backend: u32,
}

/// One worker's packet processor: its flow table, its queue of pin requests and its counter
/// slot.
#[derive(Debug)]
pub struct Processor {
    worker: usize,
    flows: FlowTable<u32>,
    /// IPv6 flows apart, so an IPv4 entry stays 32 bytes.
    flows6: FlowTable<u128>,
    pins_out: Arc<PinQueue>,
    /// Direct-mapped memory of new pins asked for, so the packets that follow a client's
    /// first one before its pin is mirrored do not each ask again.
    recent: Box<[Asked]>,
    /// Direct-mapped memory of (farm key << 32 | client) of persistent UDP farms' clients
    /// seen once: their next datagram, of any flow, asks for the pin.
    seen: Box<[u64]>,
    /// Per-source new-flow buckets of this worker.
    limiter: SourceLimiter,
    /// `ProcessorConfig::rate_share`, at least 1.
    rate_share: u64,
    tcp_strict_grace_ns: u64,
    /// When this node last became owner (set per batch), on the monotonic clock.
    owner_since_ns: u64,
}

impl Processor {
    /// Allocates everything the processor will ever use.
    pub fn new(worker: usize, cfg: &ProcessorConfig) -> Self {
        Processor {
            worker,
            flows: FlowTable::new(cfg.flow_capacity, cfg.flow_idle_ns),
            flows6: FlowTable::new(cfg.flow_capacity, cfg.flow_idle_ns),
            pins_out: Arc::new(PinQueue::new(QUEUE_CAPACITY)),
            recent: vec![Asked::default(); RECENT_SLOTS].into_boxed_slice(),
            seen: vec![u64::MAX; SEEN_SLOTS].into_boxed_slice(),
            limiter: SourceLimiter::new(),
            rate_share: cfg.rate_share.max(1) as u64,
            tcp_strict_grace_ns: cfg.tcp_strict_grace_ns,
            owner_since_ns: 0,
        }
    }

    /// Tells the processor when this node last became owner ([`crate::Shared::owner_since`]),
    /// once per batch: `tcp_strict` waits out its grace from then.
    #[inline]
    pub fn set_owner_since(&mut self, ns: u64) {
        self.owner_since_ns = ns;
    }

    /// The worker index this processor counts under.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The queue this processor puts its pin requests in (for the control plane's batcher).
    pub fn pin_queue(&self) -> &Arc<PinQueue> {
        &self.pins_out
    }

    /// Between batches: frees idle flow entries in the next `buckets` buckets (so the entry
    /// count stays honest without a pass over the whole table) and publishes the flow table's
    /// numbers to this worker's slot of `out`.
    /// `table` names the backends whose established-flow counts the freed entries leave.
    pub fn housekeep(
        &mut self,
        table: &ForwardingTable,
        now_ns: u64,
        buckets: usize,
        out: &FlowCounters,
    ) {
        let worker = self.worker;
        let gone = |id| {
            if let Some((_, b)) = table.backend_by_id(id) {
                b.counters.flow_entry(worker, false);
            }
        };
        self.flows.sweep(now_ns, buckets, gone);
        self.flows6.sweep(now_ns, buckets, gone);
        out.store(self.worker, &(self.flows.counts() + self.flows6.counts()));
    }

    /// Decides the fate of one frame, rewriting it in place when it is to be sent.
    ///
    /// `owner` is read once per batch by the caller; `now_ns` is a monotonic clock read
    /// once per batch.
    #[inline]
    pub fn process(
        &mut self,
        table: &ForwardingTable,
        owner: bool,
        frame: &mut [u8],
        now_ns: u64,
    ) -> Verdict {
        match parse(frame) {
            Ok(Parsed::Ipv4(ip)) => {
                let d = Datagram::v4(&ip);
                self.forward(table, table.vip(ip.dst), owner, frame, &d, now_ns)
            }
            Ok(Parsed::Ipv6(ip)) => match ip.icmp_type {
                Some(ndp::NS) => solicitation(table, owner, frame, &ip),
                Some(t) if ndp::is_ndp(t) => Verdict::Drop(DropReason::NdpNotSolicitation),
                _ => {
                    let d = Datagram::v6(&ip);
                    self.forward(table, table.vip6(ip.dst), owner, frame, &d, now_ns)
                }
            },
            Ok(Parsed::Arp(a)) => arp(table, owner, frame, &a),
            Err(r) => Verdict::Drop(r),
        }
    }

    /// Forwards a datagram of either family to `vip` (`None`: not a VIP).
    #[inline]
    fn forward<A: ClientAddr>(
        &mut self,
        table: &ForwardingTable,
        vip: Option<&VipEntry>,
        owner: bool,
        frame: &mut [u8],
        ip: &Datagram<A>,
        now_ns: u64,
    ) -> Verdict {
        let Some(vip) = vip else {
            return Verdict::Drop(DropReason::NotVip);
        };
        if !owner {
            return Verdict::Drop(DropReason::NotOwner);
        }
        let Some(protocol) = Protocol::from_number(ip.protocol) else {
            return Verdict::Drop(DropReason::UnsupportedProtocol);
        };
        let (farm_idx, key) = match (ip.fragment, ip.ports) {
            (Fragment::Whole, Some((sport, dport))) => {
                let Some(f) = ForwardingTable::farm_for_port(vip, protocol, dport) else {
                    return Verdict::Drop(DropReason::NoFarm);
                };
                (
                    f,
                    FlowKey::of_ports(ip.src, ip.dst, ip.protocol, sport, dport),
                )
            }
            // The parser gives TCP/UDP ports to every whole datagram, so only fragments
            // get here.
            _ => match ForwardingTable::frag_farm(vip, protocol) {
                FragFarm::One(f) => (f, FlowKey::of_fragments(ip.src, ip.dst, ip.protocol)),
                FragFarm::Ambiguous => return Verdict::Drop(DropReason::FragmentAmbiguous),
                FragFarm::None => return Verdict::Drop(DropReason::NoFarm),
            },
        };
        let Some(farm) = table.farms.get(farm_idx as usize) else {
            return Verdict::Drop(DropReason::NoFarm);
        };
        let hash = key.hash();

        // A pure SYN opens a new connection, so it is scheduled afresh rather than matched
        // against the flow table (as Katran does): a client port reused within the flow
        // idle time must not carry a new connection to a backend that takes no new flows
        // (drained, a backup tier), and a new connection's backend stays a function of the
        // replicated state alone, the same on every node.
        let kept = if ip.tcp_syn {
            None
        } else {
            match A::flows(self).lookup(&key, hash, now_ns) {
                Some(mut hit) => {
                    let b = table
                        .backend_by_id(hit.backend)
                        .filter(|(f, b)| *f == farm_idx && b.existing_ok)
                        .map(|(_, b)| b);
                    // A flow whose backend may no longer keep it is not promoted: its entry
                    // is replaced below, and only established entries are counted.
                    let promoted = b.is_some() && hit.establish();
                    let epoch = pin_epoch(now_ns);
                    let pin_check = *hit.mark != epoch;
                    *hit.mark = epoch;
                    if let (Some(b), true) = (b, promoted) {
                        b.counters.flow_entry(self.worker, true);
                    }
                    if let (Some(b), Some(p)) = (b, &farm.persist) {
                        if promoted {
                            self.pin_established(table, farm_idx, p, ip.src, b, now_ns);
                        } else if pin_check {
                            refresh_pin(&self.pins_out, p, ip.src, b, now_ns);
                        }
                    }
                    b
                }
                None => None,
            }
        };
        let backend = match kept {
            Some(b) => b,
            None => {
                // A TCP packet other than a SYN with no entry (evicted, or the flow began on
                // another owner) belongs to a connection already under way.
                let established = protocol == Protocol::Tcp && !ip.tcp_syn;
                if established {
                    if farm.tcp_strict
                        && ip.ports.is_some()
                        && now_ns.saturating_sub(self.owner_since_ns) >= self.tcp_strict_grace_ns
                    {
                        return Verdict::Drop(DropReason::TcpStrict);
                    }
                } else if let Some(r) = self.over_rate(farm, ip.src, now_ns) {
                    return Verdict::Drop(r);
                }
                let picked = match (&farm.persist, farm.hash) {
                    (None, FlowHash::Source) => table.maglev_pick(farm, ip.src.client_hash()),
                    (None, FlowHash::RoundRobin | FlowHash::WeightedRoundRobin) if !established => {
                        table.rotation_pick(farm, self.worker)
                    }
                    (None, _) => table.maglev_pick(farm, hash),
                    (Some(p), _) => {
                        let proves = established
                            || (protocol == Protocol::Udp && self.seen_before(p, ip.src));
                        self.pinned_or_pick(table, farm, farm_idx, p, ip.src, proves, now_ns)
                    }
                };
                let Some(mut b) = picked else {
                    return Verdict::Drop(DropReason::NoBackend);
                };
                // `max_flows` turns away new flows only: a connection under way keeps its
                // backend whatever its count.
                if !established && farm.max_flows > 0 && b.counters.flows() >= farm.max_flows {
                    match table.backend_with_room(farm, hash) {
                        Some(other) => b = other,
                        None => return Verdict::Drop(DropReason::BackendFull),
                    }
                }
                let ins = A::flows(self).insert_marked(
                    key,
                    hash,
                    b.id,
                    pin_epoch(now_ns),
                    established,
                    now_ns,
                );
                if let Some((_, g)) = ins.gone.and_then(|id| table.backend_by_id(id)) {
                    g.counters.flow_entry(self.worker, false);
                }
                if ins.recorded && established {
                    b.counters.flow_entry(self.worker, true);
                }
                farm.counters.flow_new(self.worker);
                b
            }
        };
        if frame.len() < 12 {
            // Unreachable after a successful parse; kept so the slice below cannot panic.
            return Verdict::Drop(DropReason::TooShort);
        }
        frame[0..6].copy_from_slice(&backend.mac.0);
        frame[6..12].copy_from_slice(&table.own_mac().0);
        backend.counters.forwarded(self.worker, frame.len());
        Verdict::Forward
    }
}

impl Processor {
    /// Why a new flow of `src` to `farm` is refused now, if it is: its source above
    /// `new_rate_limit` (checked first, so a source over its own limit spends none of the
    /// farm's), else the farm above `new_rate_limit_farm`.
    #[inline]
    fn over_rate<A: ClientAddr>(&mut self, farm: &Farm, src: A, now_ns: u64) -> Option<DropReason> {
        if let Some(r) = &farm.source_rate {
            let (key, hash) = src.rate_key(farm.key);
            if !self
                .limiter
                .admit(key, hash, &r.scaled(self.rate_share), now_ns)
            {
                return Some(DropReason::RateLimited);
            }
        }
        if let Some(r) = &farm.farm_rate {
            let cell = farm.counters.rate_tat(self.worker);
            let mut tat = cell.load(Ordering::Relaxed);
            let ok = r.scaled(self.rate_share).admit(&mut tat, now_ns);
            cell.store(tat, Ordering::Relaxed);
            if !ok {
                return Some(DropReason::FarmRateLimited);
            }
        }
        None
    }

    /// The client's pin if it is alive and its backend may keep flows. When the packet
    /// `proves` its client can receive (see the module doc), asks for the pin's refresh once
    /// a quarter of the TTL has passed, unless the backend is drained (its pins run out).
    #[inline]
    fn follow_pin<'t, A: ClientAddr>(
        &mut self,
        table: &'t ForwardingTable,
        farm_idx: u32,
        p: &FarmPersist,
        src: A,
        proves: bool,
        now_ns: u64,
    ) -> Option<&'t Backend> {
        let guard = A::guard(&p.pins);
        let pin = A::pin(&p.pins, src, &guard)?;
        let age = pin.age_ns(now_ns);
        let b = table
            .backend_by_id(pin.backend)
            .filter(|(f, b)| *f == farm_idx && b.existing_ok && age < p.ttl_ns)?
            .1;
        if proves && b.new_ok && age >= p.refresh_ns && pin.claim_refresh(now_ns, PIN_RETRY_NS) {
            self.pins_out.push(PinEvent {
                farm: p.pins.key(),
                client: src.ip(),
                backend: b.id,
                seen_ns: now_ns,
                new: false,
            });
        }
        Some(b)
    }

    /// A new flow of a persistent farm: its client's pin if it is alive, else Maglev's pick
    /// for the client's address (and, if the packet `proves`, a request for that pin).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn pinned_or_pick<'t, A: ClientAddr>(
        &mut self,
        table: &'t ForwardingTable,
        farm: &'t Farm,
        farm_idx: u32,
        p: &FarmPersist,
        src: A,
        proves: bool,
        now_ns: u64,
    ) -> Option<&'t Backend> {
        if let Some(b) = self.follow_pin(table, farm_idx, p, src, proves, now_ns) {
            return Some(b);
        }
        let b = table.maglev_pick(farm, src.client_hash())?;
        if proves {
            self.ask_new_pin(p, src, b, now_ns);
        }
        Some(b)
    }

    /// A flow of a persistent farm just became established on `b`: its client has shown it
    /// can receive, so it does what its first packet could not: refresh a live pin if due,
    /// or ask for one to `b`.
    #[inline]
    fn pin_established<A: ClientAddr>(
        &mut self,
        table: &ForwardingTable,
        farm_idx: u32,
        p: &FarmPersist,
        src: A,
        b: &Backend,
        now_ns: u64,
    ) {
        if self
            .follow_pin(table, farm_idx, p, src, true, now_ns)
            .is_none()
            && b.new_ok
        {
            self.ask_new_pin(p, src, b, now_ns);
        }
    }

    /// Whether this worker saw a datagram of `src` for this farm before (its memory holds
    /// one client per slot); remembers it otherwise. A UDP client's second datagram, in the
    /// same flow or a new one (a resolver's fresh port per query), asks for its pin; a
    /// spoofed source seen once does not.
    #[inline]
    fn seen_before<A: ClientAddr>(&mut self, p: &FarmPersist, src: A) -> bool {
        let key = src.memory_key(p.pins.key());
        let slot = &mut self.seen[src.client_hash() as usize & (SEEN_SLOTS - 1)];
        if *slot == key {
            return true;
        }
        *slot = key;
        false
    }

    /// Asks for a new pin `src → b`, unless this worker asked for the same lately (the
    /// packets that follow before the pin is mirrored do not each ask again).
    #[inline]
    fn ask_new_pin<A: ClientAddr>(&mut self, p: &FarmPersist, src: A, b: &Backend, now_ns: u64) {
        let key = src.memory_key(p.pins.key());
        // Low bits: Maglev used the high ones of the same hash.
        let slot = &mut self.recent[src.client_hash() as usize & (RECENT_SLOTS - 1)];
        if slot.key != key
            || slot.backend != b.id
            || now_ns.saturating_sub(slot.at_ns) >= PIN_RETRY_NS
        {
            *slot = Asked {
                key,
                at_ns: now_ns,
                backend: b.id,
            };
            self.pins_out.push(PinEvent {
                farm: p.pins.key(),
                client: src.ip(),
                backend: b.id,
                seen_ns: now_ns,
                new: true,
            });
        }
    }
}

/// A packet of a known flow of a persistent farm (looked at about once a second per flow):
/// asks for a refresh of its client's pin when the pin is to the flow's backend, that
/// backend still takes new flows (a drained backend's pins run out) and a quarter of the
/// TTL has passed. Never creates a pin: a flushed pin stays flushed until a new connection.
#[inline]
fn refresh_pin<A: ClientAddr>(out: &PinQueue, p: &FarmPersist, src: A, b: &Backend, now_ns: u64) {
    if !b.new_ok {
        return;
    }
    let guard = A::guard(&p.pins);
    let Some(pin) = A::pin(&p.pins, src, &guard) else {
        return;
    };
    if pin.backend == b.id
        && pin.age_ns(now_ns) >= p.refresh_ns
        && pin.claim_refresh(now_ns, PIN_RETRY_NS)
    {
        out.push(PinEvent {
            farm: p.pins.key(),
            client: src.ip(),
            backend: b.id,
            seen_ns: now_ns,
            new: false,
        });
    }
}

/// What the forwarding path reads of a datagram, for either family.
#[derive(Clone, Copy, Debug)]
struct Datagram<A> {
    src: A,
    dst: A,
    protocol: u8,
    fragment: Fragment,
    ports: Option<(u16, u16)>,
    tcp_syn: bool,
}

impl Datagram<u32> {
    #[inline]
    fn v4(ip: &Ipv4View) -> Self {
        Datagram {
            src: ip.src.to_bits(),
            dst: ip.dst.to_bits(),
            protocol: ip.protocol,
            fragment: ip.fragment,
            ports: ip.ports,
            tcp_syn: ip.tcp_syn,
        }
    }
}

impl Datagram<u128> {
    #[inline]
    fn v6(ip: &Ipv6View) -> Self {
        Datagram {
            src: ip.src.to_bits(),
            dst: ip.dst.to_bits(),
            protocol: ip.protocol,
            fragment: ip.fragment,
            ports: ip.ports,
            tcp_syn: ip.tcp_syn,
        }
    }
}

/// A client address as the processor keys its state by: its flow table, the pin mirror,
/// and the per-worker memories and rate buckets.
trait ClientAddr: FlowAddr {
    /// This family's flow table.
    fn flows(p: &mut Processor) -> &mut FlowTable<Self>;
    /// A guard for [`ClientAddr::pin`].
    fn guard(pins: &FarmPins) -> impl papaya::Guard + '_;
    /// The client's pin in `pins`.
    fn pin<'g>(pins: &FarmPins, client: Self, guard: &'g impl papaya::Guard) -> Option<&'g Pin>;
    fn ip(self) -> IpAddr;
    /// Maglev's key for a client ([`client_hash`]).
    fn client_hash(self) -> u64;
    /// The client with the farm key, for the direct-mapped memories (`seen`, `recent`).
    fn memory_key(self, farm_key: u32) -> u64;
    /// (key, hash) of the client's new-flow bucket in `farm_key`'s per-source limit.
    fn rate_key(self, farm_key: u32) -> (u64, u64);
}

impl ClientAddr for u32 {
    #[inline]
    fn flows(p: &mut Processor) -> &mut FlowTable<u32> {
        &mut p.flows
    }

    #[inline]
    fn guard(pins: &FarmPins) -> impl papaya::Guard + '_ {
        pins.guard()
    }

    #[inline]
    fn pin<'g>(pins: &FarmPins, client: u32, guard: &'g impl papaya::Guard) -> Option<&'g Pin> {
        pins.lookup(client, guard)
    }

    #[inline]
    fn ip(self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from_bits(self))
    }

    #[inline]
    fn client_hash(self) -> u64 {
        client_hash(IpAddr::V4(Ipv4Addr::from_bits(self)))
    }

    #[inline]
    fn memory_key(self, farm_key: u32) -> u64 {
        (u64::from(farm_key) << 32) | u64::from(self)
    }

    #[inline]
    fn rate_key(self, farm_key: u32) -> (u64, u64) {
        (
            self.memory_key(farm_key),
            self.client_hash() ^ (u64::from(farm_key) << 32),
        )
    }
}

impl ClientAddr for u128 {
    #[inline]
    fn flows(p: &mut Processor) -> &mut FlowTable<u128> {
        &mut p.flows6
    }

    #[inline]
    fn guard(pins: &FarmPins) -> impl papaya::Guard + '_ {
        pins.guard6()
    }

    #[inline]
    fn pin<'g>(pins: &FarmPins, client: u128, guard: &'g impl papaya::Guard) -> Option<&'g Pin> {
        pins.lookup6(client, guard)
    }

    #[inline]
    fn ip(self) -> IpAddr {
        IpAddr::V6(std::net::Ipv6Addr::from_bits(self))
    }

    #[inline]
    fn client_hash(self) -> u64 {
        client_hash(self.ip())
    }

    /// The memories are caches: two clients sharing a 64-bit key (odds 2^-64) would at worst
    /// make one ask for its pin a datagram early.
    #[inline]
    fn memory_key(self, farm_key: u32) -> u64 {
        self.client_hash() ^ (u64::from(farm_key) << 32)
    }

    /// An IPv6 source is limited by its /64: one host holds a whole /64 (SLAAC, privacy
    /// addresses), so a per-/128 bucket would let any host mint fresh sources without end.
    #[inline]
    fn rate_key(self, farm_key: u32) -> (u64, u64) {
        let net = self & !u128::from(u64::MAX);
        let h = net.client_hash() ^ (u64::from(farm_key) << 32);
        (h, h)
    }
}

/// A Neighbor Solicitation reached a worker: the owner answers for its IPv6 VIPs with a
/// solicited advertisement, override set (docs/design.md#ndp).
fn solicitation(table: &ForwardingTable, owner: bool, frame: &mut [u8], ip: &Ipv6View) -> Verdict {
    let Some(ns) = ndp::parse_ns(frame, ip.l3_offset) else {
        return Verdict::Drop(DropReason::NdpMalformed);
    };
    if !table.is_vip(ns.target) {
        return Verdict::Drop(DropReason::NdpNotForVip);
    }
    if !owner {
        return Verdict::Drop(DropReason::NotOwner);
    }
    match ndp::reply_na_in_place(frame, ip.l3_offset, &ns, table.own_mac()) {
        0 => Verdict::Drop(DropReason::NdpMalformed),
        len => Verdict::Reply { len },
    }
}

fn arp(table: &ForwardingTable, owner: bool, frame: &mut [u8], a: &ArpView) -> Verdict {
    // A gratuitous announcement (sender = target) claims an address; answering it would
    // contest the claim, so it is treated like a reply: not ours to answer.
    if a.oper != ARP_OP_REQUEST || a.sender_ip == a.target_ip {
        return Verdict::Drop(DropReason::ArpNotRequest);
    }
    if !table.is_vip(a.target_ip) {
        return Verdict::Drop(DropReason::ArpNotForVip);
    }
    if !owner {
        return Verdict::Drop(DropReason::NotOwner);
    }
    let vip: Ipv4Addr = a.target_ip;
    match reply_in_place(frame, a.l3_offset, table.own_mac(), vip) {
        0 => Verdict::Drop(DropReason::ArpMalformed),
        len => Verdict::Reply { len },
    }
}
