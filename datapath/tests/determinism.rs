//! docs/design.md#inv-same-backend: with the same replicated state, every node maps a flow to the
//! same backend. Two tables are built independently (separate registries, so different backend ids;
//! farms and backends listed in different orders) and 10 000 random flows go through a fresh
//! processor on each.

mod common;

use common::*;
use datapath::{
    BackendSpec, CounterRegistry, FarmSpec, Processor, ProcessorConfig, Protocol, Verdict,
};

fn specs() -> Vec<FarmSpec> {
    let web: Vec<BackendSpec> = (1..=9)
        .map(|i| BackendSpec {
            weight: i as u32 % 4 + 1,
            ..backend(&format!("web-{i}"), i)
        })
        .collect();
    let dns: Vec<BackendSpec> = (20..25).map(|i| backend(&format!("dns-{i}"), i)).collect();
    vec![
        farm("web", Protocol::Tcp, 80, web),
        farm("dns", Protocol::Udp, 53, dns),
    ]
}

#[test]
fn same_state_same_backend_for_10000_flows() {
    let a_specs = specs();
    let mut b_specs = specs();
    b_specs.reverse();
    for f in &mut b_specs {
        f.backends.reverse();
    }
    // Node B's registry has seen other names first, so its ids differ from node A's.
    let b_reg = CounterRegistry::new(1);
    for i in 0..17 {
        assert!(b_reg.backend("web", &format!("old-{i}")).is_some());
    }
    let a = build(&a_specs, &CounterRegistry::new(1));
    let b = build(&b_specs, &b_reg);
    let cfg = ProcessorConfig::default();
    let (mut pa, mut pb) = (Processor::new(0, &cfg), Processor::new(3, &cfg));

    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10_000 {
        let r = rng.next();
        let src = client(r as u32);
        let sport = (r >> 32) as u16 | 1024;
        let frame = if r >> 63 == 0 {
            tcp(src, sport, 80, b"")
        } else {
            udp(src, sport, 53, b"")
        };
        let (mut fa, mut fb) = (frame.clone(), frame);
        assert_eq!(pa.process(&a, true, &mut fa, 1), Verdict::Forward);
        assert_eq!(pb.process(&b, true, &mut fb, 1), Verdict::Forward);
        assert_eq!(dst_mac(&fa), dst_mac(&fb), "flow from {src}:{sport}");
        seen.insert(dst_mac(&fa));
    }
    assert_eq!(seen.len(), 14, "every backend receives flows");
}
