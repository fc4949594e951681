//! What a change costs at scale (issue #20): the CPU of publishing the forwarding table after
//! one backend's state changes, for 100, 1,000 and 10,000 farms of 3 and 30 backends; and
//! the per-packet cost of a new flow and of a warm flow with 10,000 farms on one VIP (one port
//! each) and on 10,000 VIPs.
//!
//! `publish` is what the node does on every replicated change: the next snapshot from the
//! previous one and the new specs.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use datapath::{
    BackendSpec, BackendState, CounterRegistry, FarmSpec, ForwardingTable, MacAddr, Processor,
    ProcessorConfig, Protocol, Verdict,
};

const OWN: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xaa]);

/// Farm `i` of `n`: `vips` VIPs share the farms, each farm one port.
fn specs(n: usize, backends: usize, vips: usize) -> Vec<FarmSpec> {
    (0..n)
        .map(|i| {
            let v = (i % vips) as u32;
            FarmSpec {
                name: format!("farm-{i:05}"),
                vip: Ipv4Addr::from_bits(u32::from(Ipv4Addr::new(198, 18, 64, 1)) + v).into(),
                protocol: Protocol::Tcp,
                ports: {
                    let p = 1000 + (i / vips) as u16;
                    p..=p
                },
                backends: (0..backends)
                    .map(|b| BackendSpec {
                        name: format!("b{b:02}"),
                        ip: Ipv4Addr::from_bits(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + b as u32)
                            .into(),
                        mac: Some(MacAddr([2, 0, 0, 1, (b >> 8) as u8, b as u8])),
                        weight: 1,
                        state: BackendState::Up,
                        healthy: true,
                    })
                    .collect(),
                persistence: None,
                hash: datapath::FlowHash::default(),
                limits: datapath::FarmLimits::default(),
                maglev_size: datapath::maglev_default_size(backends),
            }
        })
        .collect()
}

/// The node's publish: the next table from the previous one.
fn publish(prev: &ForwardingTable, specs: &[FarmSpec], reg: &CounterRegistry) -> ForwardingTable {
    prev.rebuild(specs, reg).expect("valid specs")
}

fn change_cost(c: &mut Criterion) {
    let mut g = c.benchmark_group("one_backend_change");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(100));
    g.measurement_time(Duration::from_secs(3));
    for farms in [100usize, 1_000, 10_000] {
        for backends in [3usize, 30] {
            if farms * backends > 60_000 {
                // 10,000 × 30: the fast path's backend map holds 65,536; skipped.
                continue;
            }
            let reg = CounterRegistry::new(1);
            let mut a = specs(farms, backends, farms.div_ceil(100));
            let mut t = ForwardingTable::build(OWN, &a, &reg).expect("valid specs");
            let mut flip = false;
            g.bench_function(
                BenchmarkId::new(format!("{backends}_backends"), farms),
                |bch| {
                    bch.iter(|| {
                        // One backend of one farm in the middle goes off, then back up.
                        flip = !flip;
                        a[farms / 2].backends[0].state = if flip {
                            BackendState::Off
                        } else {
                            BackendState::Up
                        };
                        t = publish(&t, &a, &reg);
                        black_box(t.farm_count())
                    })
                },
            );
        }
    }
    g.finish();
}

fn syn(vip: Ipv4Addr, port: u16, sport: u16, syn: bool) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20];
    f[0..6].copy_from_slice(&OWN.0);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[198, 18, 0, 1]);
    ip[16..20].copy_from_slice(&vip.octets());
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&port.to_be_bytes());
    f[46] = 0x50;
    f[47] = if syn { 0x02 } else { 0x10 };
    f
}

fn per_packet(c: &mut Criterion) {
    let mut g = c.benchmark_group("per_packet_10k_farms");
    g.throughput(Throughput::Elements(1));
    for (shape, vips) in [("one_vip", 1usize), ("10k_vips", 10_000)] {
        let reg = CounterRegistry::new(1);
        let a = specs(10_000, 3, vips);
        let t = ForwardingTable::build(OWN, &a, &reg).expect("valid specs");
        // The last farm: the far end of any list a lookup might walk.
        let last = &a[a.len() - 1];
        let IpAddr::V4(vip) = last.vip else {
            unreachable!("IPv4 farms")
        };
        let port = *last.ports.start();
        let mut p = Processor::new(0, &ProcessorConfig::default());
        let mut sport = 1024u16;
        let mut frame = syn(vip, port, sport, true);
        assert_eq!(p.process(&t, true, &mut frame, 1), Verdict::Forward);
        g.bench_function(BenchmarkId::new("new_flow", shape), |b| {
            b.iter(|| {
                sport = sport.wrapping_add(1).max(1024);
                frame[34..36].copy_from_slice(&sport.to_be_bytes());
                let v = p.process(&t, true, black_box(&mut frame), 2);
                debug_assert_eq!(v, Verdict::Forward);
                black_box(v)
            })
        });
        let mut warm = syn(vip, port, 999, false);
        assert_eq!(p.process(&t, true, &mut warm, 1), Verdict::Forward);
        g.bench_function(BenchmarkId::new("warm_flow", shape), |b| {
            b.iter(|| black_box(p.process(&t, true, black_box(&mut warm), 2)))
        });
    }
    g.finish();
}

criterion_group!(benches, change_cost, per_packet);
criterion_main!(benches);
