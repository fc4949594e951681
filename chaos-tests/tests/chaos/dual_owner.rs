//! The single-owner check must be able to fail on a real wire. No backdoor in the binary:
//! two independent one-node clusters on one bridge, each configured with the same VIP, each
//! leading itself and so owning it. The bridge capture must show two owners.

use std::net::SocketAddr;
use std::time::Duration;

use chaos_tests::env::{can_run_lab, dsrlb, say};
use chaos_tests::invariants::single_owner;
use chaos_tests::summary::Summary;
use lab::{
    ArpProber, BACKEND_HTTP_PORT, Capture, Lab, LabFarm, LabSpec, NodeOptions, scrape, wait_for,
};

#[test]
fn dual_owner_is_detected() {
    if !can_run_lab("dual_owner") {
        return;
    }
    let started = std::time::Instant::now();
    let mut lab = Lab::build(&LabSpec {
        nodes: 2,
        backends: 1,
        clients: 1,
        ..LabSpec::default()
    })
    .expect("lab builds");
    let bin = dsrlb();
    lab.start_backends(&bin).expect("backends start");
    let farms = [LabFarm::new("web", "tcp", BACKEND_HTTP_PORT, &[0])];
    // Each node's only member is itself: two clusters of one, unaware of each other.
    let _nodes: Vec<_> = (0..2)
        .map(|i| {
            lab.spawn_node_members(i, &bin, &farms, &NodeOptions::default(), &[i])
                .expect("node starts")
        })
        .collect();
    let both = wait_for(Duration::from_secs(15), || {
        lab.nodes()
            .iter()
            .all(|n| scrape(n).is_ok_and(|m| m.get("dsrlb_vip_owner", &[]) == 1.0))
            .then_some(())
    });
    assert!(both.is_some(), "the two one-node clusters do not both own");

    let vip = lab.vip();
    let wire = Capture::start_filtered(lab.switch_ns(), lab.bridge(), 100_000, move |f| {
        f.arp.is_some() || f.ipv4.is_some_and(|p| p.dst == vip)
    })
    .expect("capture");
    let client = lab.clients()[0].clone();
    let prober = ArpProber::start(
        &client,
        vip,
        Duration::from_millis(10),
        Duration::from_secs(5),
    )
    .expect("prober");
    // Some traffic too: whichever node the client resolved forwards it.
    let web = SocketAddr::from((vip, BACKEND_HTTP_PORT));
    let served = client.run(|| {
        (0..20)
            .filter(|_| chaos_tests::workload::requests::attempt(web).is_ok())
            .count()
    });
    std::thread::sleep(Duration::from_millis(500));
    let log = prober.stop().expect("prober stops");
    std::thread::sleep(Duration::from_millis(100));
    let frames = wire.stop().expect("capture stops");

    let macs: Vec<_> = lab.nodes().iter().map(|n| n.mac).collect();
    let obs = single_owner::observations(&frames, vip, None, &macs, log.rounds.len());
    let report = single_owner::check(&obs, &log.rounds);
    say(&Summary {
        scenario: "dual_owner (must fail)".into(),
        two_owners: report.two_owners,
        takeovers: report.turns.len().saturating_sub(1),
        elapsed: started.elapsed(),
        passed: !report.ok(),
        ..Summary::default()
    }
    .to_string());
    eprintln!("{} requests served; {:?}", served, report.violations());
    assert!(
        !report.ok(),
        "two owning nodes went unseen over {} probes",
        log.rounds.len()
    );
    let both_in_one_round = report
        .duals
        .iter()
        .any(|d| d.why.contains("probe round") && macs.iter().all(|m| d.macs.contains(m)));
    assert!(
        both_in_one_round,
        "no probe round answered by both nodes: {:?}",
        report.violations()
    );
}
