//! Source-IP persistence in the processor: a new client goes where Maglev sends its address
//! and asks for a pin once; a pinned client follows its pin (even after the backend set
//! changed); dead, expired or foreign pins are ignored; refreshes are asked once a quarter
//! TTL has passed, never for a drained backend, at most once per retry interval. Only a
//! client that can receive asks for a pin: a TCP flow from its handshake's ACK on, a UDP
//! client from its second datagram; SYNs alone (a spoofed flood) ask for nothing.

mod common;

use common::*;
use datapath::{
    BackendSpec, BackendState, CounterRegistry, FarmPins, ForwardingTable, MacAddr, PersistSpec,
    PinEvent, PinRegistry, Processor, ProcessorConfig, Protocol, Verdict,
};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

const TTL: Duration = Duration::from_secs(60);
const S: u64 = 1_000_000_000;

struct World {
    reg: CounterRegistry,
    pins: Arc<FarmPins>,
}

impl World {
    fn new() -> Self {
        World {
            reg: CounterRegistry::new(1),
            pins: PinRegistry::default().farm("web"),
        }
    }

    fn table(&self, backends: Vec<BackendSpec>) -> ForwardingTable {
        let mut f = farm("web", Protocol::Tcp, 80, backends);
        f.persistence = Some(PersistSpec {
            ttl: TTL,
            pins: self.pins.clone(),
        });
        build(&[f], &self.reg)
    }

    fn id(&self, name: &str) -> u32 {
        self.reg.backend("web", name).expect("id").id
    }

    fn mac_of(&self, name: &str) -> MacAddr {
        let n: u8 = name[1..].parse().expect("bN");
        backend_mac(n)
    }
}

fn three() -> Vec<BackendSpec> {
    vec![backend("b1", 1), backend("b2", 2), backend("b3", 3)]
}

fn send(p: &mut Processor, t: &ForwardingTable, mut frame: Vec<u8>, now: u64) -> MacAddr {
    assert_eq!(p.process(t, true, &mut frame, now), Verdict::Forward);
    dst_mac(&frame)
}

/// A TCP handshake as the balancer sees it: the SYN, then the client's ACK (the first packet
/// that shows the client received the SYN-ACK, and so the one that asks for a pin).
fn connect(p: &mut Processor, t: &ForwardingTable, src: Ipv4Addr, sport: u16, now: u64) -> MacAddr {
    let at = send(p, t, tcp_syn(src, sport, 80), now);
    assert_eq!(
        send(p, t, tcp(src, sport, 80, b""), now),
        at,
        "the ACK follows the SYN"
    );
    at
}

fn events(p: &Processor) -> Vec<PinEvent> {
    std::iter::from_fn(|| p.pin_queue().pop()).collect()
}

#[test]
fn a_new_client_keeps_its_backend_before_its_pin_is_replicated() {
    let w = World::new();
    let t = w.table(three());
    let mut p = Processor::new(0, &ProcessorConfig::default());
    for c in 1..=50u32 {
        let src = client(c);
        let first = connect(&mut p, &t, src, 10_000, S);
        for port in 10_001..10_010 {
            assert_eq!(connect(&mut p, &t, src, port, S + 1), first);
        }
        let ev = events(&p);
        assert_eq!(ev.len(), 1, "one pin request per client: {ev:?}");
        assert!(ev[0].new && ev[0].client == src && ev[0].farm == w.pins.key());
        assert_eq!(w.mac_of(&name_of(&w, ev[0].backend)), first);
    }
    // Another processor (another worker, another node) picks the same for each client.
    let mut q = Processor::new(0, &ProcessorConfig::default());
    let mut spread = std::collections::HashSet::new();
    for c in 1..=50u32 {
        let a = connect(&mut p, &t, client(c), 20_000, S);
        assert_eq!(connect(&mut q, &t, client(c), 30_000, S), a);
        spread.insert(a);
    }
    assert_eq!(spread.len(), 3, "clients spread over every backend");
    // After a second the request is repeated (its batch may have been lost).
    events(&p);
    connect(&mut p, &t, client(1), 40_000, 3 * S);
    assert_eq!(events(&p).len(), 1);
}

fn name_of(w: &World, id: u32) -> String {
    (1..=3)
        .map(|i| format!("b{i}"))
        .find(|n| w.id(n) == id)
        .expect("known id")
}

#[test]
fn a_pinned_client_follows_its_pin_across_a_backend_change() {
    let w = World::new();
    let src = client(7);
    // Pin the client to the backend Maglev would not choose for it.
    let t = w.table(three());
    let mut p = Processor::new(0, &ProcessorConfig::default());
    let natural = connect(&mut p, &t, src, 1, S);
    let other = ["b1", "b2", "b3"]
        .into_iter()
        .find(|n| w.mac_of(n) != natural)
        .unwrap();
    w.pins.set(src.into(), w.id(other), S);
    events(&p);
    // A fourth backend joins: Maglev's choice may move, the pin does not.
    let mut four = three();
    four.push(backend("b4", 4));
    let t = w.table(four);
    for port in 100..110 {
        assert_eq!(connect(&mut p, &t, src, port, 2 * S), w.mac_of(other));
    }
    assert!(events(&p).is_empty(), "a fresh pin asks for nothing");
    // Drained: the pinned client still goes there, but its pin is not refreshed.
    let mut drained = three();
    for b in &mut drained {
        if b.name == other {
            b.state = BackendState::Drain;
        }
    }
    let t = w.table(drained.clone());
    assert_eq!(connect(&mut p, &t, src, 200, S + 30 * S), w.mac_of(other));
    assert!(events(&p).is_empty(), "no refresh for a drained backend");
    // Off: the pin is ignored; Maglev picks again and a new pin is asked for.
    for b in &mut drained {
        if b.name == other {
            b.state = BackendState::Off;
        }
    }
    let t = w.table(drained);
    let now = connect(&mut p, &t, src, 300, 2 * S);
    assert_ne!(now, w.mac_of(other));
    let ev = events(&p);
    assert!(ev.len() == 1 && ev[0].new, "{ev:?}");
}

#[test]
fn expired_and_foreign_pins_are_ignored() {
    let w = World::new();
    let t = w.table(three());
    let mut p = Processor::new(0, &ProcessorConfig::default());
    let src = client(9);
    let natural = connect(&mut p, &t, src, 1, S);
    events(&p);
    let other = ["b1", "b2", "b3"]
        .into_iter()
        .find(|n| w.mac_of(n) != natural)
        .unwrap();
    // Seen more than a TTL ago: expired here even before the log drops it.
    w.pins.set(src.into(), w.id(other), S);
    let late = S + TTL.as_nanos() as u64 + 1;
    assert_eq!(connect(&mut p, &t, src, 2, late), natural);
    assert!(events(&p)[0].new);
    // An id that is not a backend of this farm.
    w.pins.set(src.into(), 999_999, late);
    assert_eq!(connect(&mut p, &t, src, 3, late + 2 * S), natural);
}

#[test]
fn refreshes_are_asked_once_a_quarter_ttl_has_passed() {
    let w = World::new();
    let t = w.table(three());
    let mut p = Processor::new(0, &ProcessorConfig::default());
    let src = client(11);
    let at = connect(&mut p, &t, src, 1, S);
    let id = events(&p)[0].backend;
    w.pins.set(src.into(), id, S);
    // A long flow: packets every 100 ms for a third of the TTL; the control plane mirrors
    // each refresh as the log would.
    let mut refreshes = Vec::new();
    let mut now = S;
    while now < S + TTL.as_nanos() as u64 / 3 {
        assert_eq!(send(&mut p, &t, tcp(src, 1, 80, b"x"), now), at);
        for e in events(&p) {
            w.pins.set(src.into(), e.backend, e.seen_ns);
            refreshes.push(e);
        }
        now += S / 10;
    }
    assert_eq!(refreshes.len(), 1, "{refreshes:?}");
    let r = refreshes[0];
    assert!(!r.new && r.backend == id && r.client == src);
    let quarter = TTL.as_nanos() as u64 / 4;
    assert!(
        r.seen_ns >= S + quarter && r.seen_ns < S + quarter + 2 * S,
        "{r:?}"
    );
    // Mirrored: nothing more is asked until the next quarter, by new connections either.
    assert_eq!(connect(&mut p, &t, src, 2, r.seen_ns + S), at);
    assert!(events(&p).is_empty());
    // Not mirrored (the batch was lost): asked again once the retry interval has passed,
    // not on every packet.
    let due = r.seen_ns + quarter;
    connect(&mut p, &t, src, 3, due);
    connect(&mut p, &t, src, 4, due + S / 2);
    assert_eq!(events(&p).len(), 1);
    connect(&mut p, &t, src, 5, due + S + 1);
    assert_eq!(events(&p).len(), 1);
}

#[test]
fn spoofed_syns_and_one_off_datagrams_ask_for_no_pin() {
    let w = World::new();
    let t = w.table(three());
    let mut p = Processor::new(0, &ProcessorConfig::default());
    // A SYN flood from 5,000 addresses: forwarded, no pin asked.
    for c in 1..=5_000u32 {
        send(&mut p, &t, tcp_syn(client(c), 1_000, 80), S);
    }
    assert!(events(&p).is_empty(), "a SYN asks for no pin");
    // One of them completes its handshake: now it asks, for the backend its SYN went to.
    let at = connect(&mut p, &t, client(77), 2_000, S);
    let ev = events(&p);
    assert!(
        ev.len() == 1 && ev[0].new && ev[0].client == client(77),
        "{ev:?}"
    );
    assert_eq!(w.mac_of(&name_of(&w, ev[0].backend)), at);

    // UDP: a client's first datagram asks nothing, its second (here of the same flow) asks
    // for the pin; so does the second of a client that changes ports every time.
    let mut f = farm("dns", Protocol::Udp, 53, three());
    let pins = PinRegistry::default().farm("dns");
    f.persistence = Some(PersistSpec {
        ttl: TTL,
        pins: pins.clone(),
    });
    let t = build(&[f], &w.reg);
    let mut p = Processor::new(0, &ProcessorConfig::default());
    for c in 1..=1_000u32 {
        send(&mut p, &t, udp(client(c), 5_000, 53, b"q"), S);
    }
    assert!(events(&p).is_empty(), "a first datagram asks for no pin");
    let first = send(&mut p, &t, udp(client(5), 5_000, 53, b"q2"), S + 1);
    let ev = events(&p);
    assert!(
        ev.len() == 1 && ev[0].new && ev[0].farm == pins.key(),
        "{ev:?}"
    );
    let name = ["b1", "b2", "b3"]
        .into_iter()
        .find(|n| w.mac_of(n) == first)
        .expect("a backend's MAC");
    assert_eq!(
        w.reg.backend("dns", name).map(|b| b.id),
        Some(ev[0].backend)
    );
    assert_eq!(
        send(&mut p, &t, udp(client(5), 5_000, 53, b"q3"), S + 2),
        first
    );
    assert!(events(&p).is_empty(), "asked once");
}
