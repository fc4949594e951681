//! The schedulers (docs/design.md#schedulers): what each keys Maglev by, how it spreads
//! clients by weight, and what survives a takeover — a new owner is a fresh processor with an
//! empty flow table and its own registry, seeing a flow's mid-stream packets first.

mod common;

use common::*;
use datapath::{
    BackendSpec, CounterRegistry, FarmSpec, FlowHash, MacAddr, Processor, ProcessorConfig,
    Protocol, Verdict,
};
use std::collections::{BTreeMap, HashSet};

fn web(hash: FlowHash) -> Vec<FarmSpec> {
    let backends: Vec<BackendSpec> = (1..=4)
        .map(|i| BackendSpec {
            // Weights 1, 2, 3, 4: shares 10 %, 20 %, 30 %, 40 %.
            weight: u32::from(i),
            ..backend(&format!("b{i}"), i)
        })
        .collect();
    let mut f = farm("web", Protocol::Tcp, 80, backends);
    f.hash = hash;
    vec![f]
}

fn to(p: &mut Processor, t: &datapath::ForwardingTable, mut frame: Vec<u8>) -> MacAddr {
    assert_eq!(p.process(t, true, &mut frame, 1), Verdict::Forward);
    dst_mac(&frame)
}

#[test]
fn srchash_sends_every_connection_of_a_client_to_one_backend_by_weight() {
    let t = build(&web(FlowHash::Source), &CounterRegistry::new(1));
    let mut p = Processor::new(0, &ProcessorConfig::default());
    let mut per_backend: BTreeMap<MacAddr, usize> = BTreeMap::new();
    let clients = 20_000u32;
    for c in 0..clients {
        let src = client(c);
        let first = to(&mut p, &t, tcp_syn(src, 10_000, 80));
        for port in [10_001, 20_000, 65_000] {
            assert_eq!(
                to(&mut p, &t, tcp_syn(src, port, 80)),
                first,
                "{src}:{port}"
            );
        }
        *per_backend.entry(first).or_default() += 1;
    }
    // Each backend's share of clients within 1 % of its weight share.
    for (i, n) in (1..=4u8).map(|i| (i, per_backend.get(&backend_mac(i)).copied().unwrap_or(0))) {
        let share = n as f64 / f64::from(clients);
        let want = f64::from(i) / 10.0;
        assert!(
            (share - want).abs() < 0.01,
            "b{i}: {share:.3} of clients, want {want}"
        );
    }
}

#[test]
fn maglev_spreads_one_clients_connections_and_srchash_does_not() {
    let reg = CounterRegistry::new(1);
    let maglev = build(&web(FlowHash::FiveTuple), &reg);
    let mut p = Processor::new(0, &ProcessorConfig::default());
    let src = client(7);
    let seen: HashSet<MacAddr> = (0..200u16)
        .map(|i| to(&mut p, &maglev, tcp_syn(src, 20_000 + i, 80)))
        .collect();
    assert_eq!(
        seen.len(),
        4,
        "200 connections of one client over every backend"
    );
}

#[test]
fn a_takeover_keeps_every_flow_under_both_schedulers() {
    for hash in [FlowHash::FiveTuple, FlowHash::Source] {
        let old = build(&web(hash), &CounterRegistry::new(1));
        // The new owner's registry gave out ids in another order.
        let reg = CounterRegistry::new(1);
        for i in (1..=4).rev() {
            assert!(reg.backend("web", &format!("b{i}")).is_some());
        }
        let new = build(&web(hash), &reg);
        let (mut a, mut b) = (
            Processor::new(0, &ProcessorConfig::default()),
            Processor::new(1, &ProcessorConfig::default()),
        );
        let mut rng = Rng(0xdead_beef_0000_0001 ^ hash as u64);
        for _ in 0..5_000 {
            let r = rng.next();
            let (src, sport) = (client(r as u32), (r >> 40) as u16 | 1024);
            let before = to(&mut a, &old, tcp_syn(src, sport, 80));
            // The new owner sees the flow's next segment first.
            let after = to(&mut b, &new, tcp(src, sport, 80, b"data"));
            assert_eq!(before, after, "{hash:?}: {src}:{sport} moved on takeover");
        }
    }
}

/// `wrr`: one worker's new flows follow the weights exactly over each round (1+2+3+4 = 10
/// turns), interleaved (no backend twice in a row while another waits with more credit);
/// `rr` gives every live backend one turn in each round of 4, weights aside.
#[test]
fn wrr_and_rr_take_turns_by_weight_and_evenly() {
    for (hash, want) in [
        (FlowHash::WeightedRoundRobin, [1usize, 2, 3, 4]),
        (FlowHash::RoundRobin, [1, 1, 1, 1]),
    ] {
        let t = build(&web(hash), &CounterRegistry::new(1));
        let mut p = Processor::new(0, &ProcessorConfig::default());
        let round: usize = want.iter().sum();
        let picks: Vec<MacAddr> = (0..round * 50)
            .map(|i| to(&mut p, &t, tcp_syn(client(i as u32), 10_000, 80)))
            .collect();
        for chunk in picks.chunks(round) {
            for (i, &n) in want.iter().enumerate() {
                let mac = backend_mac(i as u8 + 1);
                assert_eq!(
                    chunk.iter().filter(|&&m| m == mac).count(),
                    n,
                    "{hash:?}: b{} in {chunk:?}",
                    i + 1
                );
            }
        }
        if hash == FlowHash::WeightedRoundRobin {
            // Smooth: the heaviest backend never gets more than two turns in a row.
            let b4 = backend_mac(4);
            assert!(
                !picks.windows(3).any(|w| w.iter().all(|&m| m == b4)),
                "runs in {picks:?}"
            );
        }
        // Each worker keeps its own turn: a second worker starts the rotation afresh.
        let mut q = Processor::new(1, &ProcessorConfig::default());
        let reg = CounterRegistry::new(2);
        let t2 = build(&web(hash), &reg);
        let mut p0 = Processor::new(0, &ProcessorConfig::default());
        let first0 = to(&mut p0, &t2, tcp_syn(client(1), 1, 80));
        let first1 = to(&mut q, &t2, tcp_syn(client(2), 1, 80));
        assert_eq!(
            first0, first1,
            "{hash:?}: both workers start at the same turn"
        );
    }
}

/// A takeover with `rr`: the new owner knows nothing of the old owner's turns, so a
/// connection's mid-stream packets go by the 5-tuple's Maglev pick — for some connections
/// not the backend their SYN got. This is the reshuffle docs/design.md#schedulers warns of.
#[test]
fn an_rr_takeover_moves_some_connections_as_documented() {
    let old = build(&web(FlowHash::RoundRobin), &CounterRegistry::new(1));
    let mut p = Processor::new(0, &ProcessorConfig::default());
    let placed: Vec<(u32, MacAddr)> = (0..200u32)
        .map(|c| (c, to(&mut p, &old, tcp_syn(client(c), 30_000, 80))))
        .collect();
    let new = build(&web(FlowHash::RoundRobin), &CounterRegistry::new(1));
    let mut fresh = Processor::new(0, &ProcessorConfig::default());
    let moved = placed
        .iter()
        .filter(|(c, mac)| to(&mut fresh, &new, tcp(client(*c), 30_000, 80, b"x")) != *mac)
        .count();
    assert!(moved > 50, "only {moved} of 200 moved");
    // The new owner's packets of one connection then stay put (its flow table).
    for (c, _) in &placed[..20] {
        let a = to(&mut fresh, &new, tcp(client(*c), 30_000, 80, b"y"));
        let b = to(&mut fresh, &new, tcp(client(*c), 30_000, 80, b"z"));
        assert_eq!(a, b);
    }
}
