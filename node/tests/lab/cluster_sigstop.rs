//! SIGSTOP of the owner past the election timeout, then SIGCONT: another node takes over
//! while it is frozen, and the resumed node — whose workers wake up with a ring full of ARP
//! requests and client frames, and whose control loop still remembers being leader — answers
//! no ARP and forwards not a single frame for the VIP. Client traffic (a UDP request stream,
//! ARP probes, and frames sent straight to the old owner's MAC after it resumes) flows the
//! whole time, so the check is not vacuous.

use crate::common::{ClusterLab, can_run_lab, served, wait_for, web_and_echo};
use lab::{ArpProber, Capture, inject, scrape};
use nix::sys::signal::Signal;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longer than the maximum election timeout (300 ms by default).
const FROZEN: Duration = Duration::from_secs(1);

/// A UDP datagram to `vip:port` sent straight to `dst` (no ARP), as a client that still
/// believes `dst` owns the VIP would send it.
fn udp_frame(dst: lab::MacAddr, src: &lab::Host, vip: Ipv4Addr, port: u16, seq: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.mac.0);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 29, 0, 1, 0, 0, 64, 17];
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(&src.ip.octets());
    ip.extend_from_slice(&vip.octets());
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&(40_000 + seq % 1000).to_be_bytes());
    f.extend_from_slice(&port.to_be_bytes());
    // UDP checksum 0: none, valid for IPv4.
    f.extend_from_slice(&[0, 9, 0, 0, b'z']);
    f.resize(60, 0);
    f
}

#[test]
fn a_resumed_owner_answers_no_arp_and_forwards_nothing() {
    if !can_run_lab() {
        return;
    }
    let c = ClusterLab::start(3, 2, &web_and_echo(2), &[]);
    let vip = c.lab.vip();
    let client = c.lab.clients()[0].clone();
    let web = SocketAddr::from((vip, lab::BACKEND_HTTP_PORT));
    let echo = SocketAddr::from((vip, lab::BACKEND_UDP_PORT));
    let old = c.sole_owner();
    let old_host = c.lab.nodes()[old].clone();
    assert!(client.run(|| served(web)).is_some(), "not served at start");

    let wire = Capture::start(c.lab.switch_ns(), c.lab.bridge()).unwrap();
    let prober = ArpProber::start(
        &client,
        vip,
        Duration::from_millis(10),
        Duration::from_secs(25),
    )
    .unwrap();
    // A UDP request every ~20 ms through the VIP, for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, answered) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stream = {
        let (client, stop, sent, answered) =
            (client.clone(), stop.clone(), sent.clone(), answered.clone());
        std::thread::spawn(move || {
            client.run(|| {
                let deadline = Instant::now() + Duration::from_secs(25);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    sent.fetch_add(1, Ordering::Relaxed);
                    if lab::udp_request(echo, b"stream", Duration::from_millis(20)).is_ok() {
                        answered.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let answered_before = answered.load(Ordering::Relaxed);

    let proc = c.procs[old].as_ref().expect("owner runs");
    proc.signal(Signal::SIGSTOP).unwrap();
    let stopped_at = Instant::now();
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let new = c.wait_owner(&others, Duration::from_secs(10));
    std::thread::sleep(FROZEN.saturating_sub(stopped_at.elapsed()));
    let answered_frozen = answered.load(Ordering::Relaxed);
    proc.signal(Signal::SIGCONT).unwrap();
    let resumed_at = Instant::now();
    eprintln!("SIGCONT at {:?}", std::time::SystemTime::now());

    // The resumed node's metrics endpoint answers once its runtime runs again.
    let not_owner_at_resume = wait_for(Duration::from_secs(5), || {
        scrape(&old_host)
            .ok()
            .map(|m| m.get("dsrlb_drops_total", &[("reason", "not_owner")]))
    });
    // Frames for the VIP sent to the old owner's MAC, as a client with a stale ARP entry
    // would: the resumed node must drop every one.
    let frames_to_old: Vec<Vec<u8>> = (0..20)
        .map(|k| udp_frame(old_host.mac, &client, vip, lab::BACKEND_UDP_PORT, k))
        .collect();
    let injected = inject(&client.netns, &client.ifname, &frames_to_old).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let not_owner_after = scrape(&old_host)
        .ok()
        .map(|m| m.get("dsrlb_drops_total", &[("reason", "not_owner")]));
    let old_owner_metric = scrape(&old_host).map(|m| m.get("dsrlb_vip_owner", &[]));
    stop.store(true, Ordering::Relaxed);
    stream.join().expect("stream thread");
    let log = prober.stop().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let frames = wire.stop().unwrap();
    let a = log.analyze(&frames);
    eprintln!("{a}");
    let (sent, answered) = (
        sent.load(Ordering::Relaxed),
        answered.load(Ordering::Relaxed),
    );
    eprintln!(
        "UDP stream: {sent} sent, {answered} answered ({answered_before} before the stop, \
         {} while frozen, {} after SIGCONT); not_owner drops on the resumed node {:?} → {:?}",
        answered_frozen - answered_before,
        answered - answered_frozen,
        not_owner_at_resume,
        not_owner_after,
    );

    let old_log = c.procs[old]
        .as_ref()
        .map(|p| p.read_log())
        .unwrap_or_default();
    let transitions: Vec<&str> = old_log
        .lines()
        .filter(|l| l.contains("node::daemon"))
        .collect();
    eprintln!("the old owner's daemon log:\n{}", transitions.join("\n"));
    let new = new.unwrap_or_else(|| panic!("nobody took over from the frozen owner\n{}", c.logs()));
    let (old_mac, new_mac) = (old_host.mac, c.lab.nodes()[new].mac);
    let takeover = log
        .claims(&frames)
        .iter()
        .filter(|cl| cl.mac == new_mac)
        .map(|cl| cl.at)
        .min()
        .expect("the new owner claimed the VIP on the wire");
    assert!(
        takeover > stopped_at,
        "the new owner claimed before the stop"
    );
    // The claims around the resume, for the record (and for a failure's diagnosis).
    let near_resume = |cl: &&lab::ArpClaim| {
        cl.at >= stopped_at
            && (cl.mac == old_mac
                || cl.at.saturating_duration_since(resumed_at) < Duration::from_millis(60))
            && cl.at + Duration::from_millis(60) >= resumed_at
    };
    for cl in log.claims(&frames).iter().filter(near_resume) {
        let offset = |t: Instant| {
            if t >= resumed_at {
                format!("+{:?}", t - resumed_at)
            } else {
                format!("-{:?}", resumed_at - t)
            }
        };
        eprintln!(
            "{} claimed the VIP at resume{} answering round {:?} sent at resume{}",
            cl.mac,
            offset(cl.at),
            cl.round,
            cl.round.map(|r| offset(log.rounds[r])).unwrap_or_default(),
        );
    }

    // Not vacuous: the resumed node saw VIP traffic after the takeover — its ring held the
    // frozen second's ARP requests and datagrams, then the injected frames reached it.
    assert_eq!(injected, 20);
    let sent_to_old_after = frames
        .iter()
        .filter(|f| f.at > resumed_at && f.dst_mac == old_mac)
        .filter(|f| f.ipv4.is_some_and(|p| p.dst == vip))
        .count();
    assert!(
        sent_to_old_after >= 20,
        "{sent_to_old_after} VIP frames to the old owner's MAC"
    );
    assert!(
        frames
            .iter()
            .any(|f| f.at > resumed_at && f.is_arp_request_for(vip)),
        "no ARP request for the VIP after SIGCONT"
    );
    let (Some(at_resume), Some(after)) = (not_owner_at_resume, not_owner_after) else {
        panic!("the resumed node's metrics did not answer\n{}", c.logs());
    };
    assert!(
        after - at_resume >= 20.0,
        "the resumed node dropped {} frames as not owner, fewer than the 20 sent to it",
        after - at_resume
    );
    assert!(
        answered_before > 0,
        "the UDP stream was not served before the stop"
    );
    assert!(
        answered > answered_frozen,
        "the UDP stream was not served after SIGCONT"
    );

    // The invariant: after the takeover, nothing from the old owner for the VIP.
    let arp_after: Vec<_> = frames
        .iter()
        .filter(|f| f.at >= takeover && f.is_arp_reply_for(vip) && f.src_mac == old_mac)
        .collect();
    assert!(
        arp_after.is_empty(),
        "{} ARP replies for the VIP from the resumed node",
        arp_after.len()
    );
    let claims_after = log
        .claims(&frames)
        .into_iter()
        .filter(|cl| cl.at >= takeover && cl.mac == old_mac)
        .count();
    assert_eq!(claims_after, 0, "the resumed node claimed the VIP");
    let forwarded_after = frames
        .iter()
        .filter(|f| f.at >= takeover && f.src_mac == old_mac)
        .filter(|f| f.ipv4.is_some_and(|p| p.dst == vip))
        .count();
    assert_eq!(
        forwarded_after, 0,
        "the resumed node forwarded {forwarded_after} frames for the VIP"
    );
    assert_eq!(
        old_owner_metric.ok(),
        Some(0.0),
        "the resumed node says it owns"
    );
    assert!(a.dual.is_empty(), "{a}");
    assert_eq!(a.owners(), vec![old_mac, new_mac], "{a}");
}
