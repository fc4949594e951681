//! The per-packet decision: parse a frame, answer ARP for VIPs, choose a backend and
//! rewrite the Ethernet addresses in place. One [`Processor`] per worker thread; it does
//! no I/O and allocates nothing after [`Processor::new`].
//!
//! Order of checks for IPv4 (so each drop has one reason): parse errors, `NotVip`,
//! `NotOwner`, `UnsupportedProtocol`, `FragmentAmbiguous`, `NoFarm`, `NoBackend`.
//!
//! Choosing a backend (docs/design.md#choosing-a-backend): a packet of a known flow keeps its
//! backend (a pure TCP SYN excepted: it opens a new connection); a new flow of a persistent farm
//! follows its client's pin, or gets Maglev's pick for the client's address and asks for a pin; any
//! other new flow gets Maglev's pick for its 5-tuple. The packets of a pinned client ask for a
//! refresh of its pin once a quarter of the TTL has passed (looked at about once a second per flow,
//! so a long stream costs one map lookup per second, not one per packet).
//!
//! Fragments: every fragment of a datagram (the first included) is keyed and hashed on the
//! 3-tuple (src, dst, protocol), so all of them reach one backend. A non-first fragment has
//! no port, so a fragmented datagram is served by the unique farm on (VIP, protocol); when
//! several farms share a VIP and protocol (different port ranges), fragments of that VIP
//! and protocol are dropped as `FragmentAmbiguous`. A flow whose packets are sometimes
//! fragmented may reach two backends (3-tuple vs 5-tuple hash); Katran behaves the same.

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::arp::reply_in_place;
use crate::counters::DropReason;
use crate::flow::{FlowKey, FlowTable};
use crate::packet::{ARP_OP_REQUEST, ArpView, Fragment, Ipv4View, Parsed, parse};
use crate::persist::{PinEvent, PinQueue, QUEUE_CAPACITY, client_hash};
use crate::table::{Backend, Farm, FarmPersist, ForwardingTable, FragFarm, Protocol};

/// A pin request (new or refresh) that has not shown up in the mirror is asked again after
/// this long: the batch that carried it may have been lost with a leader.
const PIN_RETRY_NS: u64 = 1_000_000_000;
/// Slots of the per-worker memory of recently requested new pins (a power of two).
const RECENT_SLOTS: usize = 4096;

/// The flow-entry mark of the pin check: the monotonic time in units of 2^30 ns (~1.07 s).
#[inline]
fn pin_epoch(now_ns: u64) -> u32 {
    (now_ns >> 30) as u32
}

/// Sizes of a worker's private state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ProcessorConfig {
    /// Flows remembered per worker (rounded up to a power of two).
    pub flow_capacity: usize,
    /// A flow unseen for this long is forgotten (its next packet goes through Maglev).
    pub flow_idle_ns: u64,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            flow_capacity: 65_536,
            flow_idle_ns: 300_000_000_000,
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
    flows: FlowTable,
    pins_out: Arc<PinQueue>,
    /// Direct-mapped memory of new pins asked for, so the packets that follow a client's
    /// first one before its pin is mirrored do not each ask again.
    recent: Box<[Asked]>,
}

impl Processor {
    /// Allocates everything the processor will ever use.
    pub fn new(worker: usize, cfg: &ProcessorConfig) -> Self {
        Processor {
            worker,
            flows: FlowTable::new(cfg.flow_capacity, cfg.flow_idle_ns),
            pins_out: Arc::new(PinQueue::new(QUEUE_CAPACITY)),
            recent: vec![Asked::default(); RECENT_SLOTS].into_boxed_slice(),
        }
    }

    /// The worker index this processor counts under.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The queue this processor puts its pin requests in (for the control plane's batcher).
    pub fn pin_queue(&self) -> &Arc<PinQueue> {
        &self.pins_out
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
            Ok(Parsed::Ipv4(ip)) => self.ipv4(table, owner, frame, &ip, now_ns),
            Ok(Parsed::Arp(a)) => arp(table, owner, frame, &a),
            Err(r) => Verdict::Drop(r),
        }
    }

    #[inline]
    fn ipv4(
        &mut self,
        table: &ForwardingTable,
        owner: bool,
        frame: &mut [u8],
        ip: &Ipv4View,
        now_ns: u64,
    ) -> Verdict {
        let Some(vip) = table.vip(ip.dst) else {
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
                let Some(f) = table.farm_for_port(vip, protocol, dport) else {
                    return Verdict::Drop(DropReason::NoFarm);
                };
                (
                    f,
                    FlowKey::five_tuple(ip.src, ip.dst, ip.protocol, sport, dport),
                )
            }
            // The parser gives TCP/UDP ports to every whole datagram, so only fragments
            // get here.
            _ => match ForwardingTable::frag_farm(vip, protocol) {
                FragFarm::One(f) => (f, FlowKey::three_tuple(ip.src, ip.dst, ip.protocol)),
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
            match self.flows.get_marked(&key, hash, now_ns) {
                Some((id, mark)) => {
                    let b = table
                        .backend_by_id(id)
                        .filter(|b| b.farm == farm_idx && b.existing_ok);
                    if let (Some(b), Some(p)) = (b, &farm.persist)
                        && *mark != pin_epoch(now_ns)
                    {
                        *mark = pin_epoch(now_ns);
                        refresh_pin(&self.pins_out, p, ip.src, b, now_ns);
                    }
                    b
                }
                None => None,
            }
        };
        let backend = match kept {
            Some(b) => b,
            None => {
                let picked = match &farm.persist {
                    None => table.maglev_pick(farm, hash),
                    Some(p) => self.pinned_or_pick(table, farm, farm_idx, p, ip.src, now_ns),
                };
                let Some(b) = picked else {
                    return Verdict::Drop(DropReason::NoBackend);
                };
                self.flows
                    .insert_marked(key, hash, b.id, pin_epoch(now_ns), now_ns);
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
    /// A new flow of a persistent farm: its client's pin if it is alive and its backend may
    /// keep flows, else Maglev's pick for the client's address (and a request for a pin).
    #[inline]
    fn pinned_or_pick<'t>(
        &mut self,
        table: &'t ForwardingTable,
        farm: &Farm,
        farm_idx: u32,
        p: &FarmPersist,
        src: Ipv4Addr,
        now_ns: u64,
    ) -> Option<&'t Backend> {
        {
            let guard = p.pins.guard();
            if let Some(pin) = p.pins.lookup(src.to_bits(), &guard) {
                let age = pin.age_ns(now_ns);
                let b = table
                    .backend_by_id(pin.backend)
                    .filter(|b| b.farm == farm_idx && b.existing_ok);
                if let Some(b) = b
                    && age < p.ttl_ns
                {
                    if b.new_ok && age >= p.refresh_ns && pin.claim_refresh(now_ns, PIN_RETRY_NS) {
                        self.pins_out.push(PinEvent {
                            farm: p.pins.key(),
                            client: src,
                            backend: b.id,
                            seen_ns: now_ns,
                            new: false,
                        });
                    }
                    return Some(b);
                }
            }
        }
        let ch = client_hash(src);
        let b = table.maglev_pick(farm, ch)?;
        let key = (u64::from(p.pins.key()) << 32) | u64::from(src.to_bits());
        // Low bits: Maglev used the high ones of the same hash.
        let slot = &mut self.recent[ch as usize & (RECENT_SLOTS - 1)];
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
                client: src,
                backend: b.id,
                seen_ns: now_ns,
                new: true,
            });
        }
        Some(b)
    }
}

/// A packet of a known flow of a persistent farm (looked at about once a second per flow):
/// asks for a refresh of its client's pin when the pin is to the flow's backend, that
/// backend still takes new flows (a drained backend's pins run out) and a quarter of the
/// TTL has passed. Never creates a pin: a flushed pin stays flushed until a new connection.
#[inline]
fn refresh_pin(out: &PinQueue, p: &FarmPersist, src: Ipv4Addr, b: &Backend, now_ns: u64) {
    if !b.new_ok {
        return;
    }
    let guard = p.pins.guard();
    let Some(pin) = p.pins.lookup(src.to_bits(), &guard) else {
        return;
    };
    if pin.backend == b.id
        && pin.age_ns(now_ns) >= p.refresh_ns
        && pin.claim_refresh(now_ns, PIN_RETRY_NS)
    {
        out.push(PinEvent {
            farm: p.pins.key(),
            client: src,
            backend: b.id,
            seen_ns: now_ns,
            new: false,
        });
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
