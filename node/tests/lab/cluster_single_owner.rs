//! Steady state of a 3-node cluster: over 200 ARP probes from the client, and every claim
//! for the VIP on the wire comes from one MAC, the owner's (docs/design.md#inv-single-owner).

use crate::common::{ClusterLab, can_run_lab, web_and_echo};
use lab::{ArpProber, Capture};
use std::time::Duration;

#[test]
fn every_arp_reply_comes_from_the_owner_alone() {
    if !can_run_lab() {
        return;
    }
    let c = ClusterLab::start(3, 2, &web_and_echo(2), &[]);
    let vip = c.lab.vip();
    let owner = c.sole_owner();
    let owner_mac = c.lab.nodes()[owner].mac;

    let wire = Capture::start(c.lab.switch_ns(), c.lab.bridge()).unwrap();
    let prober = ArpProber::start(
        &c.lab.clients()[0],
        vip,
        Duration::from_millis(10),
        Duration::from_secs(15),
    )
    .unwrap();
    let enough = crate::common::wait_for(Duration::from_secs(15), || {
        (prober.sent() >= 250).then_some(())
    });
    let log = prober.stop().unwrap();
    // Late replies to the last probes are still on their way.
    std::thread::sleep(Duration::from_millis(100));
    let frames = wire.stop().unwrap();
    let a = log.analyze(&frames);
    eprintln!("{a}");

    assert!(
        enough.is_some(),
        "only {} probes sent in 15 s",
        log.rounds.len()
    );
    assert!(
        a.answered >= 200,
        "only {} of {} probes answered",
        a.answered,
        a.probes
    );
    assert_eq!(
        a.owners(),
        vec![owner_mac],
        "{a}; the owner is node {owner} ({owner_mac})\n{}",
        c.logs()
    );
    assert!(a.dual.is_empty(), "{a}");
    assert_eq!(
        c.wait_owner(&[0, 1, 2], Duration::from_secs(3)),
        Some(owner),
        "ownership moved during the test"
    );
}
