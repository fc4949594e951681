//! Farm limits (docs/design.md#limits) through the real processor and table: per-source and
//! per-farm new-flow rates, `max_flows` per backend with its overflow and its gauge, and
//! `tcp_strict` with the takeover grace.

mod common;

use common::*;
use datapath::{
    BackendSpec, CounterRegistry, FarmLimits, FarmSpec, FlowCounters, ForwardingTable, MacAddr,
    Processor, ProcessorConfig, Protocol, RateLimit, Verdict,
};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

const S: u64 = 1_000_000_000;

fn web(limits: FarmLimits, backends: u8) -> Vec<FarmSpec> {
    let bs: Vec<BackendSpec> = (1..=backends)
        .map(|i| backend(&format!("b{i}"), i))
        .collect();
    let mut f = farm("web", Protocol::Tcp, 80, bs);
    f.limits = limits;
    vec![f]
}

fn run(p: &mut Processor, t: &ForwardingTable, mut frame: Vec<u8>, now: u64) -> Verdict {
    p.process(t, true, &mut frame, now)
}

fn syn(src: Ipv4Addr, port: u16) -> Vec<u8> {
    tcp_syn(src, port, 80)
}

fn ack(src: Ipv4Addr, port: u16) -> Vec<u8> {
    tcp(src, port, 80, b"x")
}

fn flows(reg: &CounterRegistry) -> BTreeMap<String, u64> {
    reg.snapshot()
        .into_iter()
        .flat_map(|f| f.backends)
        .map(|b| (b.backend, b.flows))
        .collect()
}

#[test]
fn a_source_above_its_rate_is_dropped_and_another_source_is_not() {
    let limits = FarmLimits {
        per_source: Some(RateLimit {
            per_sec: 10,
            burst: 5,
        }),
        ..FarmLimits::default()
    };
    let reg = CounterRegistry::new(1);
    let t = build(&web(limits, 3), &reg);
    let mut p = Processor::new(0, &ProcessorConfig::default());
    let (hot, calm) = (client(1), client(2));
    let now = 100 * S;
    // 50 SYNs of one source within 1 s: the burst of 5 plus 10 per second pass.
    let mut passed = 0;
    let mut limited = 0;
    for i in 0..50u16 {
        match run(
            &mut p,
            &t,
            syn(hot, 10_000 + i),
            now + u64::from(i) * S / 50,
        ) {
            Verdict::Forward => passed += 1,
            Verdict::Drop(datapath::DropReason::RateLimited) => limited += 1,
            v => panic!("{v:?}"),
        }
    }
    assert!((14..=16).contains(&passed), "{passed} of 50 passed");
    assert_eq!(passed + limited, 50);
    // Another source at the same time gets its own bucket.
    for i in 0..5u16 {
        assert_eq!(
            run(&mut p, &t, syn(calm, 20_000 + i), now + S / 2),
            Verdict::Forward
        );
    }
    // A connection under way is never rate limited: its ACKs pass though its source is out.
    let last = now + 49 * S / 50;
    assert_eq!(
        run(&mut p, &t, syn(hot, 30_000), last),
        Verdict::Drop(datapath::DropReason::RateLimited)
    );
    for k in 0..20 {
        assert_eq!(
            run(&mut p, &t, ack(hot, 10_000), last + k),
            Verdict::Forward
        );
    }
}

#[test]
fn a_worker_enforces_its_share_of_the_rate_and_the_whole_burst() {
    let limits = FarmLimits {
        per_source: Some(RateLimit {
            per_sec: 10,
            burst: 4,
        }),
        ..FarmLimits::default()
    };
    let reg = CounterRegistry::new(2);
    let t = build(&web(limits, 3), &reg);
    let cfg = ProcessorConfig {
        rate_share: 2,
        ..ProcessorConfig::default()
    };
    let mut p = Processor::new(0, &cfg);
    let src = client(9);
    let now = 100 * S;
    let burst = (0..20u16)
        .filter(|i| run(&mut p, &t, syn(src, 1000 + i), now) == Verdict::Forward)
        .count();
    assert_eq!(burst, 4);
    // Then one per 200 ms (5/s), not one per 100 ms.
    assert!(run(&mut p, &t, syn(src, 2000), now + S / 10) != Verdict::Forward);
    assert_eq!(
        run(&mut p, &t, syn(src, 2001), now + S / 5),
        Verdict::Forward
    );
}

#[test]
fn the_farm_rate_holds_whatever_the_sources() {
    let limits = FarmLimits {
        per_farm: Some(RateLimit {
            per_sec: 100,
            burst: 10,
        }),
        ..FarmLimits::default()
    };
    let reg = CounterRegistry::new(1);
    let t = build(&web(limits, 3), &reg);
    let mut p = Processor::new(0, &ProcessorConfig::default());
    let now = 100 * S;
    let mut passed = 0;
    for c in 0..1000u32 {
        match run(
            &mut p,
            &t,
            syn(client(c), 40_000),
            now + u64::from(c) * S / 1000,
        ) {
            Verdict::Forward => passed += 1,
            Verdict::Drop(datapath::DropReason::FarmRateLimited) => {}
            v => panic!("{v:?}"),
        }
    }
    assert!(
        (108..=111).contains(&passed),
        "{passed} in 1 s at 100/s + 10"
    );
    // A rebuilt table keeps the farm's bucket (it lives with the farm's counters).
    let t2 = build(&web(limits, 3), &reg);
    assert_eq!(
        run(&mut p, &t2, syn(client(5000), 40_000), now + 999 * S / 1000),
        Verdict::Drop(datapath::DropReason::FarmRateLimited)
    );
}

#[test]
fn a_full_backend_takes_no_new_flow_and_the_others_do() {
    let limits = FarmLimits {
        max_flows: 5,
        ..FarmLimits::default()
    };
    let reg = CounterRegistry::new(1);
    let t = build(&web(limits, 3), &reg);
    let mut p = Processor::new(0, &ProcessorConfig::default());
    let now = 10 * S;
    // 15 connections (SYN then ACK) fill all three backends to 5 each.
    let mut per: BTreeMap<MacAddr, u32> = BTreeMap::new();
    for c in 0..15u32 {
        let src = client(c);
        let mut f = syn(src, 5000);
        assert_eq!(p.process(&t, true, &mut f, now), Verdict::Forward);
        *per.entry(dst_mac(&f)).or_default() += 1;
        assert_eq!(run(&mut p, &t, ack(src, 5000), now + 1), Verdict::Forward);
    }
    assert_eq!(per.values().copied().collect::<Vec<_>>(), [5, 5, 5]);
    assert_eq!(
        flows(&reg),
        BTreeMap::from([("b1".into(), 5), ("b2".into(), 5), ("b3".into(), 5)])
    );
    // Every backend full: a new connection is dropped...
    assert_eq!(
        run(&mut p, &t, syn(client(100), 5000), now + 2),
        Verdict::Drop(datapath::DropReason::BackendFull)
    );
    // ...while the established ones go on.
    assert_eq!(
        run(&mut p, &t, ack(client(3), 5000), now + 3),
        Verdict::Forward
    );
}

#[test]
fn a_full_backends_new_flows_go_to_the_others_and_the_gauge_follows_idle_flows_out() {
    let limits = FarmLimits {
        max_flows: 3,
        ..FarmLimits::default()
    };
    let reg = CounterRegistry::new(1);
    let t = build(&web(limits, 3), &reg);
    let cfg = ProcessorConfig {
        flow_idle_ns: 5 * S,
        ..ProcessorConfig::default()
    };
    let mut p = Processor::new(0, &cfg);
    let now = 10 * S;
    // Find 3 clients Maglev sends to b1 and fill it.
    let b1 = backend_mac(1);
    let plain = build(&web(FarmLimits::default(), 3), &CounterRegistry::new(1));
    let mut q = Processor::new(0, &ProcessorConfig::default());
    let mut on_b1 = (0..).map(client).filter(move |&src| {
        let mut f = syn(src, 7000);
        q.process(&plain, true, &mut f, 1);
        dst_mac(&f) == b1
    });
    let full: Vec<Ipv4Addr> = on_b1.by_ref().take(3).collect();
    for &src in &full {
        let mut f = syn(src, 7000);
        assert_eq!(p.process(&t, true, &mut f, now), Verdict::Forward);
        assert_eq!(dst_mac(&f), b1);
        assert_eq!(run(&mut p, &t, ack(src, 7000), now), Verdict::Forward);
    }
    assert_eq!(flows(&reg)["b1"], 3);
    // Further clients Maglev would send to b1 go elsewhere.
    for src in on_b1.by_ref().take(20) {
        let mut f = syn(src, 7000);
        assert_eq!(p.process(&t, true, &mut f, now + 1), Verdict::Forward);
        assert_ne!(dst_mac(&f), b1, "{src} reached the full backend");
    }
    // Once b1's flows are idle past flow_idle and swept, it takes new flows again.
    let later = now + 6 * S;
    p.housekeep(&t, later, 1 << 20, &FlowCounters::new(1));
    assert_eq!(flows(&reg)["b1"], 0);
    let src = on_b1.next().expect("another b1 client");
    let mut f = syn(src, 7000);
    assert_eq!(p.process(&t, true, &mut f, later), Verdict::Forward);
    assert_eq!(dst_mac(&f), b1);
}

#[test]
fn tcp_strict_drops_unknown_mid_stream_packets_only_after_the_grace() {
    let limits = FarmLimits {
        tcp_strict: true,
        ..FarmLimits::default()
    };
    let reg = CounterRegistry::new(1);
    let t = build(&web(limits, 3), &reg);
    let cfg = ProcessorConfig {
        tcp_strict_grace_ns: 30 * S,
        ..ProcessorConfig::default()
    };
    // A node that became owner at 1000 s (a takeover).
    let mut p = Processor::new(0, &cfg);
    let since = 1000 * S;
    p.set_owner_since(since);
    // Within the grace: a flow the last owner served gets through and gets an entry...
    let old = client(1);
    assert_eq!(run(&mut p, &t, ack(old, 1111), since + S), Verdict::Forward);
    // ...so it goes on after the grace.
    assert_eq!(
        run(&mut p, &t, ack(old, 1111), since + 40 * S),
        Verdict::Forward
    );
    // After the grace, a mid-stream packet of a flow never seen is dropped...
    assert_eq!(
        run(&mut p, &t, ack(client(2), 2222), since + 40 * S),
        Verdict::Drop(datapath::DropReason::TcpStrict)
    );
    // ...a SYN is not, and its connection's next packets pass.
    assert_eq!(
        run(&mut p, &t, syn(client(2), 2223), since + 40 * S),
        Verdict::Forward
    );
    assert_eq!(
        run(&mut p, &t, ack(client(2), 2223), since + 40 * S),
        Verdict::Forward
    );
    // UDP is not concerned.
    let mut dns = farm("dns", Protocol::Udp, 53, vec![backend("x", 9)]);
    dns.limits.tcp_strict = true;
    let t = build(&[dns], &reg);
    assert_eq!(
        run(&mut p, &t, udp(client(3), 5353, 53, b"q"), since + 40 * S),
        Verdict::Forward
    );
    // Without tcp_strict the same packet passes.
    let t = build(&web(FarmLimits::default(), 3), &CounterRegistry::new(1));
    assert_eq!(
        run(&mut p, &t, ack(client(4), 4444), since + 40 * S),
        Verdict::Forward
    );
}
