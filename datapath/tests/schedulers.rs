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
