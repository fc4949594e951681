//! docs/design.md#inv-no-alloc: the hot path allocates nothing. A counting global allocator
//! watches this thread while `Processor::process` handles 100 000 frames of every kind:
//! new flows (flow-table inserts and evictions), warm flows, fragments, ARP replies and
//! drops — on a farm with source-IP persistence, so pinned clients, new clients (pin
//! requests queued) and refresh checks run too.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use datapath::{CounterRegistry, PersistSpec, PinRegistry, Processor, ProcessorConfig, Verdict};
use std::time::Duration;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // Const-initialised, so reading it inside the allocator allocates nothing.
    static WATCHED: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if WATCHED.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees carry over; counting has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as our caller's, forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as our caller's, forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: `ptr` came from this allocator, i.e. from `System`; contract forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note();
        // SAFETY: `ptr` came from this allocator, i.e. from `System`; contract forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn process_allocates_nothing_over_100000_packets() {
    let reg = CounterRegistry::new(1);
    let pins = PinRegistry::default().farm("web");
    let mut farms = web_and_dns();
    assert_eq!(farms[0].name, "web");
    farms[0].persistence = Some(PersistSpec {
        ttl: Duration::from_millis(2),
        pins: pins.clone(),
    });
    // Every limit on, so their paths are watched too (the UDP farm rotates, `wrr`).
    farms[0].limits = datapath::FarmLimits {
        per_source: Some(datapath::RateLimit {
            per_sec: 1000,
            burst: 4,
        }),
        per_farm: Some(datapath::RateLimit {
            per_sec: 100_000,
            burst: 100,
        }),
        max_flows: 300,
        tcp_strict: true,
    };
    farms[1].hash = datapath::FlowHash::WeightedRoundRobin;
    farms[1].limits.max_flows = 50;
    let table = build(&farms, &reg);
    // Every other client is pinned (to whichever backend); the others are new clients.
    let ids: Vec<u32> = farms[0]
        .backends
        .iter()
        .map(|b| reg.backend("web", &b.name).expect("id").id)
        .collect();
    for i in (0..4096u32).step_by(2) {
        pins.set(client(i).into(), ids[i as usize % ids.len()], 0);
    }
    // A small flow table, so that the run also exercises eviction.
    let cfg = ProcessorConfig {
        flow_capacity: 1024,
        flow_idle_ns: 1_000_000,
        tcp_strict_grace_ns: 1_000_000,
        ..ProcessorConfig::default()
    };
    let mut p = Processor::new(0, &cfg);

    let mut templates: Vec<Vec<u8>> = Vec::new();
    for i in 0..4096u32 {
        templates.push(tcp(client(i), 1024 + (i % 5000) as u16, 80, &[0u8; 64]));
        if i % 4 == 0 {
            templates.push(udp(client(i), 2000, 53, b"q"));
        }
    }
    let mut frag = udp(CLIENT_IP, 1, 53, &[0u8; 32]);
    set_frag(&mut frag, false, 8);
    templates.push(frag);
    templates.push(arp_request(VIP));
    templates.push(tcp(CLIENT_IP, 1, 81, b"")); // NoFarm
    templates.push(vec![0u8; 7]); // TooShort
    let mut buf = vec![0u8; templates.iter().map(Vec::len).max().unwrap_or(0)];
    let mut verdicts = [0u64; 3];

    // A thread's first map guard registers the thread with the map's collector (once).
    let mut warm = tcp(client(0), 1, 80, b"");
    p.process(&table, true, &mut warm, 0);
    WATCHED.with(|w| w.set(true));
    for n in 0..100_000u64 {
        // Warm flows: the same 4096 flows cycle, so most packets hit the flow table.
        let t = &templates[n as usize % templates.len()];
        let frame = &mut buf[..t.len()];
        frame.copy_from_slice(t);
        let v = p.process(&table, true, frame, n * 50);
        verdicts[match v {
            Verdict::Forward => 0,
            Verdict::Reply { .. } => 1,
            Verdict::Drop(_) => 2,
        }] += 1;
    }
    WATCHED.with(|w| w.set(false));

    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        0,
        "the hot path allocated"
    );
    assert!(
        verdicts.iter().all(|&c| c > 0),
        "every verdict kind exercised: {verdicts:?}"
    );
    let queued = p.pin_queue().len();
    assert!(
        queued > 2048,
        "new clients and refreshes asked for pins: {queued}"
    );
    let new_flows: u64 = reg.snapshot().iter().map(|f| f.flows_new).sum();
    assert!(
        new_flows > 4096,
        "evictions and idle expiry forced re-placements"
    );
}
