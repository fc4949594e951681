//! kill -9 of the VIP owner while the client probes by ARP and keeps making requests: another
//! node answers ARP and carries the TCP requests, the outage stays under the 2 s
//! liveness bound, and at no instant did two nodes claim the VIP.

use crate::common::{ClusterLab, can_run_lab, quick_get, served, wait_for, web_and_echo};
use lab::{ArpProber, Capture};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The bound on the outage (a liveness bound, not a speed measurement).
const OUTAGE_BOUND: Duration = Duration::from_secs(2);

#[test]
fn a_killed_owner_is_replaced_within_the_bound_and_never_overlaps() {
    if !can_run_lab() {
        return;
    }
    let mut c = ClusterLab::start(3, 2, &web_and_echo(2), &[]);
    let vip = c.lab.vip();
    let client = c.lab.clients()[0].clone();
    let addr = SocketAddr::from((vip, lab::BACKEND_HTTP_PORT));
    let old = c.sole_owner();
    let old_mac = c.lab.nodes()[old].mac;
    // The client learns the VIP's MAC the ordinary way before the kill.
    assert!(
        client.run(|| served(addr)).is_some(),
        "not served before the kill"
    );

    let wire = Capture::start(c.lab.switch_ns(), c.lab.bridge()).unwrap();
    let prober = ArpProber::start(
        &client,
        vip,
        Duration::from_millis(10),
        Duration::from_secs(20),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let killed_at = c.kill(old);
    // Requests until one succeeds, each with a short connect timeout.
    let first_ok = client.run(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut attempts = 0u32;
        while Instant::now() < deadline {
            attempts += 1;
            if let Ok(backend) = quick_get(addr) {
                return Some((Instant::now(), backend, attempts));
            }
            // An unreachable neighbour fails at once; do not spin.
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    });
    let new = c.wait_owner(&[0, 1, 2], Duration::from_secs(5));
    // A few more requests through the new owner, and time for the probes to see it settled.
    let after: Vec<Option<String>> = client.run(|| (0..5).map(|_| served(addr)).collect());
    std::thread::sleep(Duration::from_millis(500));
    let log = prober.stop().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let frames = wire.stop().unwrap();
    let a = log.analyze(&frames);
    eprintln!("{a}");

    let (ok_at, backend, attempts) =
        first_ok.unwrap_or_else(|| panic!("no request succeeded within 10 s\n{}", c.logs()));
    let to_first_request = ok_at - killed_at;
    eprintln!(
        "kill -9 → first successful request: {to_first_request:?} ({attempts} attempts, by {backend})"
    );
    let new = new.unwrap_or_else(|| panic!("no new owner\n{}", c.logs()));
    assert_ne!(new, old, "the killed node cannot own the VIP");
    let new_mac = c.lab.nodes()[new].mac;
    assert!(
        ["b1", "b2"].contains(&backend.as_str()),
        "answered by {backend}"
    );
    assert!(
        after.iter().all(Option::is_some),
        "requests through the new owner failed: {after:?}"
    );

    // The wire: the old owner answered before, the new one after, nobody else, no overlap.
    assert_eq!(a.owners(), vec![old_mac, new_mac], "{a}");
    assert!(a.dual.is_empty(), "{a}");
    assert!(
        a.longest_gap < OUTAGE_BOUND,
        "ARP outage {:?} ≥ {OUTAGE_BOUND:?}: {a}",
        a.longest_gap
    );
    assert!(
        to_first_request < OUTAGE_BOUND,
        "first request {to_first_request:?} after the kill"
    );
    // TCP went through the new owner: client→VIP frames leave it towards a backend.
    let backend_macs: Vec<_> = c.lab.backends().iter().map(|b| b.mac).collect();
    let forwarded_by_new = frames
        .iter()
        .filter(|f| f.at > killed_at && f.src_mac == new_mac && backend_macs.contains(&f.dst_mac))
        .filter(|f| f.ipv4.is_some_and(|p| p.dst == vip && p.proto == 6))
        .count();
    assert!(
        forwarded_by_new > 0,
        "no TCP frame for the VIP forwarded by the new owner"
    );
    let takeovers = lab::scrape(&c.lab.nodes()[new])
        .unwrap()
        .get("dsrlb_takeovers_total", &[]);
    assert!(takeovers >= 1.0, "new owner counts {takeovers} takeovers");
    assert!(
        wait_for(Duration::from_secs(1), || (c.lab.owners() == vec![new])
            .then_some(()))
        .is_some(),
        "ownership moved again: {:?}",
        c.lab.owners()
    );
}
