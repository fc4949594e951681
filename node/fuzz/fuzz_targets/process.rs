//! `Processor::process` on sequences of arbitrary frames against a table of five farms
//! (source-IP persistence, srchash, rr/wrr, every limit, a VIP with no live backend), with the
//! pins it asks for fed back into the mirror as the control plane would. Never panics, and:
//! a forwarded frame differs from what came in only in its Ethernet destination (a backend's
//! MAC) and source (ours); an ARP reply comes from us; a dropped frame is left as it was;
//! a node that does not own the VIPs sends nothing.
//!
//! Input: chunks of `[flags, len_hi, len_lo, frame bytes…]`; `flags` bit 0 is ownership,
//! bits 1.. step the monotonic clock (quadratically, up to ~16 s). The processor, its flow
//! table and the pins live across inputs, as a worker's do, so a crash found after a long
//! run may need the inputs before it: rerun with the corpus (`cargo fuzz run process <dir>`).
#![no_main]

use datapath::{
    BackendSpec, BackendState, CounterRegistry, FarmLimits, FarmSpec, FlowCounters, FlowHash,
    ForwardingTable, MacAddr, Parsed, PersistSpec, PinRegistry, Processor, ProcessorConfig,
    Protocol, RateLimit, Verdict, parse,
};
use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

const OWN: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xaa]);
/// Inputs between two flushes of every pin (the mirror would otherwise grow without bound).
const PIN_FLUSH_EVERY: u64 = 4096;

struct World {
    pins: PinRegistry,
    table: ForwardingTable,
    macs: Vec<[u8; 6]>,
    processor: Processor,
    flows: FlowCounters,
    now_ns: u64,
    inputs: u64,
}

fn backend(name: &str, last: u8, state: BackendState, healthy: bool, mac: bool) -> BackendSpec {
    BackendSpec {
        name: name.into(),
        ip: Ipv4Addr::new(198, 18, 1, last).into(),
        mac: mac.then_some(MacAddr([2, 0, 0, 0, 1, last])),
        weight: u32::from(last % 3) + 1,
        state,
        healthy,
    }
}

fn farm(name: &str, vip: u8, protocol: Protocol, ports: std::ops::RangeInclusive<u16>) -> FarmSpec {
    FarmSpec {
        name: name.into(),
        vip: Ipv4Addr::new(198, 18, 0, vip).into(),
        protocol,
        ports,
        backends: Vec::new(),
        persistence: None,
        hash: FlowHash::FiveTuple,
        limits: FarmLimits::default(),
        // Small and varied: the lookups index tables of several sizes.
        maglev_size: [251, 307, 1009][usize::from(vip) % 3],
    }
}

impl World {
    fn new() -> World {
        let reg = CounterRegistry::new(1);
        let pins = PinRegistry::default();
        let up = BackendState::Up;
        let web = FarmSpec {
            backends: vec![
                backend("w1", 1, up, true, true),
                backend("w2", 2, up, true, true),
                backend("w3", 3, BackendState::Drain, true, true),
                backend("w4", 4, up, true, false),
            ],
            persistence: Some(PersistSpec {
                ttl: Duration::from_secs(60),
                pins: pins.farm("web"),
            }),
            ..farm("web", 100, Protocol::Tcp, 80..=80)
        };
        let dns = FarmSpec {
            backends: vec![
                backend("d1", 5, up, true, true),
                backend("d2", 6, up, true, true),
            ],
            persistence: Some(PersistSpec {
                ttl: Duration::from_secs(10),
                pins: pins.farm("dns"),
            }),
            hash: FlowHash::Source,
            limits: FarmLimits {
                per_source: Some(RateLimit {
                    per_sec: 5,
                    burst: 2,
                }),
                ..FarmLimits::default()
            },
            ..farm("dns", 100, Protocol::Udp, 53..=53)
        };
        let api = FarmSpec {
            backends: vec![
                backend("a1", 7, up, true, true),
                backend("a2", 8, up, false, true),
                backend("a3", 9, BackendState::Off, true, true),
                backend("a4", 10, up, true, true),
            ],
            hash: FlowHash::RoundRobin,
            limits: FarmLimits {
                per_farm: Some(RateLimit {
                    per_sec: 100,
                    burst: 5,
                }),
                max_flows: 3,
                tcp_strict: true,
                ..FarmLimits::default()
            },
            ..farm("api", 101, Protocol::Tcp, 8000..=8010)
        };
        let wrr = FarmSpec {
            backends: vec![
                backend("r1", 11, up, true, true),
                backend("r2", 12, up, true, true),
            ],
            hash: FlowHash::WeightedRoundRobin,
            ..farm("wrr", 101, Protocol::Tcp, 9000..=9001)
        };
        let dead = FarmSpec {
            backends: vec![backend("x1", 13, up, false, true)],
            ..farm("dead", 102, Protocol::Udp, 1..=65535)
        };
        let specs = [web, dns, api, wrr, dead];
        let macs = specs
            .iter()
            .flat_map(|f| f.backends.iter().filter_map(|b| b.mac.map(|m| m.0)))
            .collect();
        let table = ForwardingTable::build(OWN, &specs, &reg).expect("valid farms");
        let cfg = ProcessorConfig {
            flow_capacity: 256,
            flow_idle_ns: 5_000_000_000,
            rate_share: 1,
            tcp_strict_grace_ns: 1_000_000_000,
        };
        World {
            pins,
            table,
            macs,
            processor: Processor::new(0, &cfg),
            flows: FlowCounters::new(1),
            now_ns: 1,
            inputs: 0,
        }
    }

    fn frame(&mut self, owner: bool, frame: &mut [u8]) {
        let before = frame.to_vec();
        let verdict = self
            .processor
            .process(&self.table, owner, frame, self.now_ns);
        match verdict {
            Verdict::Forward => {
                assert!(owner, "forwarded without owning the VIPs");
                assert_eq!(frame.len(), before.len());
                assert_eq!(frame[12..], before[12..], "forwarding changed L3+ bytes");
                assert_eq!(frame[6..12], OWN.0, "forwarded with a foreign source MAC");
                let dst: [u8; 6] = frame[0..6].try_into().expect("6 bytes");
                assert!(self.macs.contains(&dst), "forwarded to {dst:02x?}");
                match parse(&before) {
                    Ok(Parsed::Ipv4(ip)) => assert!(self.table.is_vip(ip.dst)),
                    other => panic!("forwarded a frame that parses as {other:?}"),
                }
            }
            Verdict::Reply { len } => {
                assert!(owner, "answered ARP without owning the VIPs");
                assert!((42..=frame.len()).contains(&len), "reply of {len} bytes");
                assert_eq!(frame[6..12], OWN.0, "a reply with a foreign source MAC");
                assert!(matches!(parse(&before), Ok(Parsed::Arp(_))));
            }
            Verdict::Drop(_) => assert_eq!(frame, &before[..], "a dropped frame was changed"),
        }
    }

    /// The control plane's side, between batches: requested pins into the mirror, and
    /// the flow table's housekeeping.
    fn between_batches(&mut self) {
        while let Some(ev) = self.processor.pin_queue().pop() {
            if let Some(p) = self.pins.by_key(ev.farm) {
                p.set(ev.client, ev.backend, ev.seen_ns);
            }
        }
        self.inputs += 1;
        if self.inputs % PIN_FLUSH_EVERY == 0 {
            for p in self.pins.all() {
                p.clear();
            }
        }
        self.processor.set_owner_since(self.now_ns / 2);
        self.processor
            .housekeep(&self.table, self.now_ns, 16, &self.flows);
    }
}

static WORLD: OnceLock<Mutex<World>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let mut w = WORLD
        .get_or_init(|| Mutex::new(World::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let mut rest = data;
    let mut buf = Vec::new();
    while let [flags, hi, lo, tail @ ..] = rest {
        let len = (usize::from(*hi) << 8 | usize::from(*lo)).min(tail.len());
        let step = u64::from(flags >> 1);
        w.now_ns += step * step * 1_000_000;
        buf.clear();
        buf.extend_from_slice(&tail[..len]);
        w.frame(flags & 1 == 1, &mut buf);
        rest = &tail[len..];
    }
    w.between_batches();
});
