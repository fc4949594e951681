//! Source-IP persistence in the processor: a new client goes where Maglev sends its address
//! and asks for a pin once; a pinned client follows its pin (even after the backend set
//! changed); dead, expired or foreign pins are ignored; refreshes are asked once a quarter
//! TTL has passed, never for a drained backend, at most once per retry interval.

mod common;

use common::*;
use datapath::{
    BackendSpec, BackendState, CounterRegistry, FarmPins, ForwardingTable, MacAddr, PersistSpec,
    PinEvent, PinRegistry, Processor, ProcessorConfig, Protocol, Verdict,
};
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
        let first = send(&mut p, &t, tcp_syn(src, 10_000, 80), S);
        for port in 10_001..10_010 {
            assert_eq!(send(&mut p, &t, tcp_syn(src, port, 80), S + 1), first);
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
        let a = send(&mut p, &t, tcp_syn(client(c), 20_000, 80), S);
        assert_eq!(send(&mut q, &t, tcp_syn(client(c), 30_000, 80), S), a);
        spread.insert(a);
    }
    assert_eq!(spread.len(), 3, "clients spread over every backend");
    // After a second the request is repeated (its batch may have been lost).
    events(&p);
    send(&mut p, &t, tcp_syn(client(1), 40_000, 80), 3 * S);
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
    let natural = send(&mut p, &t, tcp_syn(src, 1, 80), S);
    let other = ["b1", "b2", "b3"]
        .into_iter()
        .find(|n| w.mac_of(n) != natural)
        .unwrap();
    w.pins.set(src, w.id(other), S);
    events(&p);
    // A fourth backend joins: Maglev's choice may move, the pin does not.
    let mut four = three();
    four.push(backend("b4", 4));
    let t = w.table(four);
    for port in 100..110 {
        assert_eq!(
            send(&mut p, &t, tcp_syn(src, port, 80), 2 * S),
            w.mac_of(other)
        );
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
    assert_eq!(
        send(&mut p, &t, tcp_syn(src, 200, 80), S + 30 * S),
        w.mac_of(other)
    );
    assert!(events(&p).is_empty(), "no refresh for a drained backend");
    // Off: the pin is ignored; Maglev picks again and a new pin is asked for.
    for b in &mut drained {
        if b.name == other {
            b.state = BackendState::Off;
        }
    }
    let t = w.table(drained);
    let now = send(&mut p, &t, tcp_syn(src, 300, 80), 2 * S);
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
    let natural = send(&mut p, &t, tcp_syn(src, 1, 80), S);
    events(&p);
    let other = ["b1", "b2", "b3"]
        .into_iter()
        .find(|n| w.mac_of(n) != natural)
        .unwrap();
    // Seen more than a TTL ago: expired here even before the log drops it.
    w.pins.set(src, w.id(other), S);
    let late = S + TTL.as_nanos() as u64 + 1;
    assert_eq!(send(&mut p, &t, tcp_syn(src, 2, 80), late), natural);
    assert!(events(&p)[0].new);
    // An id that is not a backend of this farm.
    w.pins.set(src, 999_999, late);
    assert_eq!(send(&mut p, &t, tcp_syn(src, 3, 80), late + 2 * S), natural);
}

#[test]
fn refreshes_are_asked_once_a_quarter_ttl_has_passed() {
    let w = World::new();
    let t = w.table(three());
    let mut p = Processor::new(0, &ProcessorConfig::default());
    let src = client(11);
    let at = send(&mut p, &t, tcp_syn(src, 1, 80), S);
    let id = events(&p)[0].backend;
    w.pins.set(src, id, S);
    // A long flow: packets every 100 ms for a third of the TTL; the control plane mirrors
    // each refresh as the log would.
    let mut refreshes = Vec::new();
    let mut now = S;
    while now < S + TTL.as_nanos() as u64 / 3 {
        assert_eq!(send(&mut p, &t, tcp(src, 1, 80, b"x"), now), at);
        for e in events(&p) {
            w.pins.set(src, e.backend, e.seen_ns);
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
    assert_eq!(send(&mut p, &t, tcp_syn(src, 2, 80), r.seen_ns + S), at);
    assert!(events(&p).is_empty());
    // Not mirrored (the batch was lost): asked again once the retry interval has passed,
    // not on every packet.
    let due = r.seen_ns + quarter;
    send(&mut p, &t, tcp_syn(src, 3, 80), due);
    send(&mut p, &t, tcp_syn(src, 4, 80), due + S / 2);
    assert_eq!(events(&p).len(), 1);
    send(&mut p, &t, tcp_syn(src, 5, 80), due + S + 1);
    assert_eq!(events(&p).len(), 1);
}
