//! The per-packet decision: parse a frame, answer ARP for VIPs, choose a backend and
//! rewrite the Ethernet addresses in place. One [`Processor`] per worker thread; it does
//! no I/O and allocates nothing after [`Processor::new`].
//!
//! Order of checks for IPv4 (so each drop has one reason): parse errors, `NotVip`,
//! `NotOwner`, `UnsupportedProtocol`, `FragmentAmbiguous`, `NoFarm`, `NoBackend`.
//!
//! Fragments: every fragment of a datagram (the first included) is keyed and hashed on the
//! 3-tuple (src, dst, protocol), so all of them reach one backend. A non-first fragment has
//! no port, so a fragmented datagram is served by the unique farm on (VIP, protocol); when
//! several farms share a VIP and protocol (different port ranges), fragments of that VIP
//! and protocol are dropped as `FragmentAmbiguous`. A flow whose packets are sometimes
//! fragmented may reach two backends (3-tuple vs 5-tuple hash); Katran behaves the same.

use std::net::Ipv4Addr;

use crate::arp::reply_in_place;
use crate::counters::DropReason;
use crate::flow::{FlowKey, FlowTable};
use crate::packet::{ARP_OP_REQUEST, ArpView, Fragment, Ipv4View, Parsed, parse};
use crate::table::{ForwardingTable, FragFarm, Protocol};

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

/// One worker's packet processor: its flow table and its counter slot.
#[derive(Debug)]
pub struct Processor {
    worker: usize,
    flows: FlowTable,
}

impl Processor {
    /// Allocates everything the processor will ever use.
    pub fn new(worker: usize, cfg: &ProcessorConfig) -> Self {
        Processor {
            worker,
            flows: FlowTable::new(cfg.flow_capacity, cfg.flow_idle_ns),
        }
    }

    /// The worker index this processor counts under.
    pub fn worker(&self) -> usize {
        self.worker
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
            self.flows
                .get(&key, hash, now_ns)
                .and_then(|id| table.backend_by_id(id))
                .filter(|b| b.farm == farm_idx && b.existing_ok)
        };
        let backend = match kept {
            Some(b) => b,
            None => {
                let Some(b) = table.maglev_pick(farm, hash) else {
                    return Verdict::Drop(DropReason::NoBackend);
                };
                self.flows.insert(key, hash, b.id, now_ns);
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
