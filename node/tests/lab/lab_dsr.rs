//! DSR is real: the node only ever sees client→VIP traffic, replies reach the client from a
//! backend's MAC, a 64 MiB download costs the node a few percent of its bytes, and a 64 MiB
//! upload arrives intact with the lab's offloads (checksum, TSO, GRO) at their defaults.

use crate::common::{SingleNode, can_run_lab};
use lab::{Capture, LabFarm, scrape};
use std::collections::BTreeSet;
use std::net::SocketAddr;

const MIB: u64 = 1 << 20;

#[test]
fn replies_bypass_the_node_and_bulk_transfers_are_intact() {
    if !can_run_lab() {
        return;
    }
    let web = LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0, 1, 2]);
    let s = SingleNode::start(3, 0, &[web]);
    let vip = s.lab.vip();
    let node = s.lab.nodes()[0].clone();
    let client = s.lab.clients()[0].clone();
    let addr = SocketAddr::from((vip, lab::BACKEND_HTTP_PORT));
    let backend_macs: BTreeSet<String> =
        s.lab.backends().iter().map(|b| b.mac.to_string()).collect();

    let at_node = Capture::start_with_limit(&node.netns, &node.ifname, 500_000).unwrap();
    let at_client = Capture::start_with_limit(&client.netns, &client.ifname, 500_000).unwrap();
    let before = scrape(&node).unwrap();

    let (received, upload_answer) = client.run(|| {
        for i in 0..30 {
            lab::http_get(addr, "/").unwrap_or_else(|e| panic!("request {i}: {e}"));
        }
        let received = lab::download(addr, 64 * MIB).expect("64 MiB download verified");
        let answer = lab::upload(addr, 64 * MIB).expect("64 MiB upload accepted");
        (received, answer)
    });

    let after = scrape(&node).unwrap();
    let node_frames = at_node.stop().unwrap();
    let client_frames = at_client.stop().unwrap();

    // The upload answer is the backend's own verification of every byte.
    assert!(
        upload_answer.starts_with(&format!("ok {}", 64 * MIB)),
        "upload: {upload_answer:?}"
    );
    assert_eq!(received, 64 * MIB);

    let forwarded = after.sum("dsrlb_bytes_total") - before.sum("dsrlb_bytes_total");
    // The download direction is what DSR saves: its bytes never cross the node. The upload's
    // 64 MiB do cross it, so only the download part of the traffic is compared: everything
    // the node forwarded beyond the upload's bytes is request and ACK traffic.
    let overhead = forwarded - (64 * MIB) as f64;
    assert!(
        overhead <= 0.05 * received as f64,
        "node forwarded {forwarded} bytes, {overhead} beyond the upload, for a {received}-byte download"
    );

    let vip_to_client_at_node = node_frames
        .iter()
        .filter(|f| f.ipv4.is_some_and(|ip| ip.src == vip))
        .count();
    assert_eq!(vip_to_client_at_node, 0, "the node saw reply traffic");
    if lab::lab_io() == "af_xdp" {
        // XDP steers client→VIP frames to the AF_XDP socket before any tap, and the socket's
        // transmits skip the taps too; a reply frame at the node would not be steered (it is
        // not to a VIP), so the capture still sees it — it saw the node's other traffic.
        assert!(
            !node_frames.is_empty(),
            "the capture at the node saw nothing at all"
        );
        assert!(forwarded > 0.0, "the node forwarded nothing");
    } else {
        assert!(
            node_frames
                .iter()
                .any(|f| f.ipv4.is_some_and(|ip| ip.dst == vip)),
            "the capture at the node saw no client→VIP traffic at all"
        );
    }

    let replies: Vec<_> = client_frames
        .iter()
        .filter(|f| !f.outgoing() && f.ipv4.is_some_and(|ip| ip.src == vip))
        .collect();
    assert!(
        replies.len() > 100,
        "only {} replies captured",
        replies.len()
    );
    let node_mac = node.mac.to_string();
    for f in &replies {
        let src = f.src_mac.to_string();
        assert!(
            backend_macs.contains(&src),
            "a VIP reply came from {src}, not a backend (node is {node_mac})"
        );
    }
    // ARP traffic between other hosts reaches the node too and is counted by its own
    // reasons; anything else dropped during clean traffic would be a datapath fault.
    let other_drops = |m: &lab::Metrics| {
        m.sum("dsrlb_drops_total")
            - m.get("dsrlb_drops_total", &[("reason", "arp_not_for_vip")])
            - m.get("dsrlb_drops_total", &[("reason", "arp_not_request")])
    };
    assert_eq!(
        other_drops(&after) - other_drops(&before),
        0.0,
        "drops during clean traffic"
    );
}
