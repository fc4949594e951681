//! Capacity under pressure (issue #13): a UDP flood at the VIP beyond what the node can
//! forward is dropped at the receive rings and counted there (`ring_full`), while ARP for
//! the VIP keeps being answered — it has a ring of its own — and the control plane keeps
//! serving (metrics answer, ownership holds). The flood stays inside the lab and is
//! bounded in time and count.
//!
//! It runs the workers (`fast_path = "off"`): the kernel fast path forwards this flood
//! whole (557,056 of 557,056 datagrams in the run that showed it, ARP 301/301 answered),
//! so no ring would overflow and the rings' capacity would go untested.

use crate::common::{can_run_lab, dsrlb};
use lab::backend::UDP_SINK_PORT;
use lab::{ArpProber, Capture, Lab, LabFarm, LabSpec, NodeOptions, scrape};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the flood runs; the probes and the control-plane checks run alongside.
const FLOOD: Duration = Duration::from_secs(3);
/// Sender threads, and datagrams each sends at most (a bound besides the time).
const SENDERS: usize = 2;
const MAX_PER_SENDER: u64 = 5_000_000;
const PROBE_EVERY: Duration = Duration::from_millis(10);

#[test]
fn a_flood_beyond_capacity_drops_at_the_ring_and_arp_keeps_answering() {
    if !can_run_lab() {
        return;
    }
    // c1 floods, c2 probes ARP: c2's port on the bridge sees the probes and their replies,
    // not the flood (unicast to the node), so its capture judges ARP alone.
    let mut lab = Lab::build(&LabSpec {
        nodes: 1,
        backends: 1,
        clients: 2,
        ..LabSpec::default()
    })
    .expect("lab builds");
    lab.start_backends(dsrlb()).expect("backends start");
    let farms = [LabFarm::new("sink", "udp", UDP_SINK_PORT, &[0])];
    // The smallest ring (one block, 15 slots per worker) so that any machine overflows it.
    let opts = NodeOptions {
        datapath_extra: "ring_slots = 8\nfast_path = \"off\"\n".into(),
        ..NodeOptions::default()
    };
    let mut procs = vec![lab.spawn_node(0, dsrlb(), &farms, &opts).unwrap()];
    lab.wait_ready(&mut procs, &[0], &farms, Duration::from_secs(15))
        .expect("node owns the VIP");
    let (node, c1, c2) = (
        lab.nodes()[0].clone(),
        lab.clients()[0].clone(),
        lab.clients()[1].clone(),
    );
    let vip = lab.vip();
    let before = scrape(&node).expect("metrics");

    let wire = Capture::start(&c2.netns, &c2.ifname).expect("capture on c2");
    let prober = ArpProber::start(&c2, vip, PROBE_EVERY, FLOOD + Duration::from_secs(2))
        .expect("ARP prober");

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, sent) = (stop.clone(), sent.clone());
        let dst = SocketAddr::from((vip, UDP_SINK_PORT));
        std::thread::spawn(move || {
            c1.run(move || {
                std::thread::scope(|s| {
                    for _ in 0..SENDERS {
                        s.spawn(|| flood_from(dst, &stop, &sent));
                    }
                })
            })
        })
    };
    // The control plane alongside: metrics answer and ownership holds throughout.
    let deadline = Instant::now() + FLOOD;
    let mut slowest = Duration::ZERO;
    let mut scrapes = 0;
    // The rings' fill as the metrics show it (`dsrlb_ring_backlog_frames / dsrlb_ring_slots`).
    let mut fullest: f64 = 0.0;
    while Instant::now() < deadline {
        let t = Instant::now();
        let m = scrape(&node).expect("metrics answer during the flood");
        slowest = slowest.max(t.elapsed());
        scrapes += 1;
        let slots = m.by_label("dsrlb_ring_slots", "worker");
        assert!(
            !slots.is_empty() && slots.iter().all(|(_, n)| *n > 0.0),
            "no ring slots exported: {slots:?}"
        );
        for (worker, backlog) in m.by_label("dsrlb_ring_backlog_frames", "worker") {
            let (_, n) = slots
                .iter()
                .find(|(w, _)| *w == worker)
                .expect("a backlog for a worker with slots");
            fullest = fullest.max(backlog / n);
        }
        assert_eq!(
            m.get("dsrlb_vip_owner", &[]),
            1.0,
            "the node lost ownership during the flood"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    flood.join().expect("flood thread");
    let log = prober.stop().expect("prober stops");
    let frames = wire.stop().expect("capture stops");
    let arp = log.analyze(&frames);

    // Ring drops are collected once a worker is idle for a poll interval (100 ms).
    std::thread::sleep(Duration::from_millis(400));
    let after = scrape(&node).expect("metrics after the flood");
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    let ring_full = delta("dsrlb_drops_total", &[("reason", "ring_full")]);
    let forwarded = delta(
        "dsrlb_packets_total",
        &[("farm", "sink"), ("backend", "b1")],
    );
    let sent = sent.load(Ordering::Relaxed);
    let idle_backlog = after.sum("dsrlb_ring_backlog_frames");
    eprintln!(
        "flood: sent {sent}, forwarded {forwarded}, ring_full {ring_full}; ARP: {arp}; \
         {scrapes} scrapes, slowest {slowest:?}; the fullest ring at {:.0} %, {idle_backlog} \
         frames waiting after",
        fullest * 100.0
    );
    assert!(
        fullest > 0.5,
        "the rings overflowed ({ring_full} drops) but no worker's fill gauge showed half full"
    );
    assert_eq!(
        idle_backlog, 0.0,
        "frames still waiting once the workers are idle"
    );

    assert!(
        ring_full > 0.0,
        "the flood ({sent} datagrams) never overflowed a ring: not beyond capacity"
    );
    assert!(forwarded > 0.0, "nothing was forwarded during the flood");
    assert_eq!(
        arp.owners(),
        vec![node.mac],
        "only the node answers for the VIP: {arp}"
    );
    assert!(arp.probes >= 100, "too few probes went out to judge: {arp}");
    // Every probe that reached the node is answered; allow a few lost on a starved machine
    // elsewhere (the veth backlog), never a stall.
    assert!(
        arp.answered * 100 >= arp.probes * 95,
        "ARP was crowded out by the flood: {arp}"
    );
    assert!(
        arp.longest_gap < Duration::from_millis(300),
        "ARP stalled during the flood: {arp}"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "the control plane stalled: a metrics scrape took {slowest:?}"
    );
}

/// Sends small datagrams to `dst` until `stop`, [`FLOOD`] or [`MAX_PER_SENDER`].
fn flood_from(dst: SocketAddr, stop: &AtomicBool, sent: &AtomicU64) {
    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
    sock.connect(dst).expect("connect");
    let deadline = Instant::now() + FLOOD;
    let payload = [0xa5u8; 18];
    let mut n = 0u64;
    for attempt in 0..MAX_PER_SENDER {
        // The clock only every 1024 sends: the flood should cost the sender little.
        if attempt.is_multiple_of(1024)
            && (Instant::now() >= deadline || stop.load(Ordering::Relaxed))
        {
            break;
        }
        // Back-pressure (ENOBUFS) just means the datagram was not sent.
        if sock.send(&payload).is_ok() {
            n += 1;
        }
    }
    sent.fetch_add(n, Ordering::Relaxed);
}
