//! ns per packet of `Processor::process` on one core: a warm flow (flow-table hit), a new
//! flow (miss, Maglev pick, insert) and an ARP reply (the 60-byte template copy included).

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datapath::counters::CounterRegistry;
use datapath::packet::MacAddr;
use datapath::process::{Processor, ProcessorConfig, Verdict};
use datapath::table::{BackendSpec, BackendState, FarmSpec, ForwardingTable, Protocol};

const OWN: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xaa]);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

fn table(reg: &CounterRegistry) -> ForwardingTable {
    let backends = (1..=10u8)
        .map(|i| BackendSpec {
            name: format!("b{i}"),
            ip: Ipv4Addr::new(198, 18, 1, i),
            mac: Some(MacAddr([2, 0, 0, 0, 1, i])),
            weight: 1,
            state: BackendState::Up,
            healthy: true,
        })
        .collect();
    let farm = FarmSpec {
        name: "web".into(),
        vip: VIP,
        protocol: Protocol::Tcp,
        ports: 80..=80,
        backends,
    };
    ForwardingTable::build(OWN, &[farm], reg, 65_537).expect("valid farm")
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
    let t = table(&reg);
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

    let mut p = Processor::new(0, &ProcessorConfig::default());
    let request = datapath::arp::arp_request(
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
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
