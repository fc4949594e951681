//! `[datapath] garp_refresh`: after the takeover burst the owner keeps announcing its VIP,
//! both forms, once per period, from its own MAC.

use crate::common::{can_run_lab, dsrlb};
use lab::{Capture, Lab, LabFarm, LabSpec, NodeOptions, scrape};
use std::time::Duration;

#[test]
fn the_owner_announces_its_vip_again_every_garp_refresh() {
    if !can_run_lab() {
        return;
    }
    let mut lab = Lab::build(&LabSpec {
        nodes: 1,
        backends: 1,
        clients: 1,
        ..LabSpec::default()
    })
    .expect("lab builds");
    lab.start_backends(dsrlb()).expect("backends start");
    let farms = [LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0])];
    let opts = NodeOptions {
        datapath_extra: "garp_refresh = \"1s\"".into(),
        ..NodeOptions::default()
    };
    let config = lab.node_config_with(0, &farms, &opts).unwrap();
    assert!(config.contains("garp_refresh"), "{config}");
    let mut procs = vec![lab.spawn_node_config(0, dsrlb(), &config).unwrap()];
    lab.wait_ready(&mut procs, &[0], &farms, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}"));
    let node = lab.nodes()[0].clone();
    let vip = lab.vip();

    // The burst (3 rounds 100 ms apart) began when the node became the owner, before it
    // was seen ready, so it is over 300 ms later; any 2.5 s after that hold at least two
    // refreshes whatever their phase.
    std::thread::sleep(Duration::from_millis(300));
    let frames_before = scrape(&node)
        .unwrap()
        .get("dsrlb_gratuitous_arp_frames_total", &[]);
    let wire = Capture::start(lab.switch_ns(), lab.bridge()).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let frames = wire.stop().unwrap();
    let frames_after = scrape(&node)
        .unwrap()
        .get("dsrlb_gratuitous_arp_frames_total", &[]);

    let ours = |f: &&lab::Frame| f.src_mac == node.mac;
    let requests: Vec<Duration> = frames
        .iter()
        .filter(ours)
        .filter(|f| {
            f.arp.is_some_and(|a| {
                a.op == 1 && a.sender_ip == vip && a.target_ip == vip && a.sender_mac == node.mac
            })
        })
        .map(|f| f.since_start)
        .collect();
    let replies: Vec<Duration> = frames
        .iter()
        .filter(ours)
        .filter(|f| {
            f.arp.is_some_and(|a| {
                a.op == 2 && a.sender_ip == vip && a.target_ip == vip && a.target_mac == node.mac
            })
        })
        .map(|f| f.since_start)
        .collect();
    let log = procs[0].log_tail(20);
    assert!(
        requests.len() >= 2 && replies.len() >= 2,
        "refresh rounds seen: {requests:?} (request form), {replies:?} (reply form)\n{log}"
    );
    // Rounds a period apart, not the burst's 100 ms: these are refreshes.
    for pair in requests.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(800),
            "rounds only {gap:?} apart: {requests:?}\n{log}"
        );
    }
    assert!(
        frames_after - frames_before >= 4.0,
        "dsrlb_gratuitous_arp_frames_total went from {frames_before} to {frames_after}"
    );
}
