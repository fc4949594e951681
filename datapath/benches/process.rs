//! ns per packet of `Processor::process` on one core: a warm flow (flow-table hit), a new
//! flow (miss, Maglev pick, insert) and an ARP reply (the 60-byte template copy included);
//! and on a farm with source-IP persistence holding 1 M pins: a warm flow, a new flow of a
//! pinned client, and a new client (Maglev pick and a pin request); and new connections
//! (SYNs) and a warm flow on a farm without and with every limit (docs/design.md#limits).

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datapath::{
    BackendSpec, BackendState, CounterRegistry, FarmPins, FarmSpec, ForwardingTable, MacAddr,
    PersistSpec, PinRegistry, Processor, ProcessorConfig, Protocol, Verdict,
};
use std::sync::Arc;
use std::time::Duration;

const OWN: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xaa]);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

fn table(reg: &CounterRegistry, pins: Option<Arc<FarmPins>>) -> ForwardingTable {
    table_with(reg, pins, datapath::FarmLimits::default())
}

fn table_with(
    reg: &CounterRegistry,
    pins: Option<Arc<FarmPins>>,
    limits: datapath::FarmLimits,
) -> ForwardingTable {
    let backends = (1..=10u8)
        .map(|i| BackendSpec {
            name: format!("b{i}"),
            ip: Ipv4Addr::new(198, 18, 1, i).into(),
            mac: Some(MacAddr([2, 0, 0, 0, 1, i])),
            weight: 1,
            state: BackendState::Up,
            healthy: true,
        })
        .collect();
    let farm = FarmSpec {
        name: "web".into(),
        vip: VIP.into(),
        protocol: Protocol::Tcp,
        ports: 80..=80,
        backends,
        persistence: pins.map(|pins| PersistSpec {
            ttl: Duration::from_secs(3600),
            pins,
        }),
        hash: datapath::FlowHash::default(),
        limits,
        maglev_size: 65_537,
    };
    ForwardingTable::build(OWN, &[farm], reg).expect("valid farm")
}

/// A 64-byte-payload TCP frame to VIP:80 (checksums are irrelevant to the datapath).
fn tcp_frame() -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20 + 64];
    f[0..6].copy_from_slice(&OWN.0);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(20u16 + 20 + 64).to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[198, 18, 0, 1]);
    ip[16..20].copy_from_slice(&VIP.octets());
    f[34..36].copy_from_slice(&40_000u16.to_be_bytes());
    f[36..38].copy_from_slice(&80u16.to_be_bytes());
    f[46] = 0x50;
    f
}

fn bench(c: &mut Criterion) {
    let reg = CounterRegistry::new(1);
    let t = table(&reg, None);
    let mut g = c.benchmark_group("process");
    g.throughput(Throughput::Elements(1));

    let mut p = Processor::new(0, &ProcessorConfig::default());
    let mut warm = tcp_frame();
    assert_eq!(p.process(&t, true, &mut warm, 1), Verdict::Forward);
    g.bench_function("warm_flow", |b| {
        b.iter(|| black_box(p.process(&t, true, black_box(&mut warm), 2)))
    });

    let mut p = Processor::new(0, &ProcessorConfig::default());
    let mut fresh = tcp_frame();
    let mut src = 0xc612_0000u32;
    g.bench_function("new_flow", |b| {
        b.iter(|| {
            // A new source address each time: always a flow-table miss.
            src = src.wrapping_add(1);
            fresh[26..30].copy_from_slice(&src.to_be_bytes());
            black_box(p.process(&t, true, black_box(&mut fresh), 2))
        })
    });

    // New connections (SYNs, each from a new source), without and with every limit that
    // applies to them: the per-source and farm rates (generous, so every flow passes and
    // the full path is measured) and max_flows (never reached: half-open flows are not
    // counted). The clock moves 1 µs per flow: 1 M flows/s, inside both rates.
    let all_limits = datapath::FarmLimits {
        per_source: Some(datapath::RateLimit {
            per_sec: 100,
            burst: 10,
        }),
        per_farm: Some(datapath::RateLimit {
            per_sec: 10_000_000,
            burst: 1_000_000,
        }),
        max_flows: 1_000_000,
        tcp_strict: true,
    };
    for (name, limits) in [
        ("syn_new_flow", datapath::FarmLimits::default()),
        ("syn_new_flow_limits", all_limits),
    ] {
        let reg = CounterRegistry::new(1);
        let t = table_with(&reg, None, limits);
        let mut p = Processor::new(0, &ProcessorConfig::default());
        let mut syn = tcp_frame();
        syn[47] = 0x02;
        let mut src = 0xc612_0000u32;
        let mut now = 1_000_000_000u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                src = src.wrapping_add(1);
                now += 1_000;
                syn[26..30].copy_from_slice(&src.to_be_bytes());
                let v = p.process(&t, true, black_box(&mut syn), now);
                debug_assert_eq!(v, Verdict::Forward);
                black_box(v)
            })
        });
    }
    // A known flow on a tcp_strict farm (the strict check is for unknown flows only).
    let reg = CounterRegistry::new(1);
    let t = table_with(&reg, None, all_limits);
    let mut p = Processor::new(0, &ProcessorConfig::default());
    let mut warm = tcp_frame();
    assert_eq!(p.process(&t, true, &mut warm, 1), Verdict::Forward);
    g.bench_function("warm_flow_limits", |b| {
        b.iter(|| black_box(p.process(&t, true, black_box(&mut warm), 2)))
    });

    let mut p = Processor::new(0, &ProcessorConfig::default());
    let request = datapath::arp_request(
        MacAddr([2, 0, 0, 0, 0, 1]),
        Ipv4Addr::new(198, 18, 0, 1),
        VIP,
    );
    let mut buf = request.clone();
    g.bench_function("arp_reply", |b| {
        b.iter(|| {
            buf.copy_from_slice(&request);
            black_box(p.process(&t, true, black_box(&mut buf), 2))
        })
    });

    // Persistence: 1 M pinned clients 198.19.x.y / 10.x… spread over the backends.
    let registry = PinRegistry::default();
    let pins = registry.farm("web");
    let tp = table(&reg, Some(pins.clone()));
    let ids: Vec<u32> = (1..=10)
        .map(|i| reg.backend("web", &format!("b{i}")).expect("id").id)
        .collect();
    const PINNED: u32 = 1 << 20;
    let pinned_base = 0x0a00_0000u32;
    let now = 10_000_000_000u64;
    for i in 0..PINNED {
        pins.set(
            Ipv4Addr::from_bits(pinned_base + i).into(),
            ids[i as usize % ids.len()],
            now,
        );
    }

    let mut p = Processor::new(0, &ProcessorConfig::default());
    let mut warm = tcp_frame();
    warm[26..30].copy_from_slice(&(pinned_base + 7).to_be_bytes());
    assert_eq!(p.process(&tp, true, &mut warm, now), Verdict::Forward);
    g.bench_function("persist_warm_flow", |b| {
        b.iter(|| black_box(p.process(&tp, true, black_box(&mut warm), now + 1)))
    });

    let mut p = Processor::new(0, &ProcessorConfig::default());
    let mut syn = tcp_frame();
    syn[47] = 0x02; // SYN: a new connection, so the pin is looked up every time
    let mut i = 0u32;
    g.bench_function("persist_pinned_new_flow", |b| {
        b.iter(|| {
            i = (i + 7919) % PINNED;
            syn[26..30].copy_from_slice(&(pinned_base + i).to_be_bytes());
            black_box(p.process(&tp, true, black_box(&mut syn), now + 1))
        })
    });

    let mut p = Processor::new(0, &ProcessorConfig::default());
    let mut fresh = tcp_frame();
    let mut src = 0xc613_0000u32;
    g.bench_function("persist_new_client", |b| {
        b.iter(|| {
            src = src.wrapping_add(1);
            fresh[26..30].copy_from_slice(&src.to_be_bytes());
            // Keep the queue from filling (a full queue would only count a drop).
            if p.pin_queue().len() > 1024 {
                while p.pin_queue().pop().is_some() {}
            }
            black_box(p.process(&tp, true, black_box(&mut fresh), now + 1))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
