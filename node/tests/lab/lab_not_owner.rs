//! A node whose owner flag is off answers no ARP for the VIP and forwards nothing; turning
//! the flag on (the control) makes the same datapath serve. The datapath runs in-process
//! inside the node's namespace, so the flag can be flipped directly.

use crate::common::{can_run_lab, dsrlb};
use datapath::{
    BackendSpec, BackendState, Datapath, DatapathConfig, DropReason, FarmSpec, ForwardingTable,
    Protocol, Shared,
};
use lab::{Capture, Lab, LabSpec, inject};
use std::net::SocketAddr;
use std::time::Duration;

#[test]
fn a_non_owner_answers_no_arp_and_forwards_nothing() {
    if !can_run_lab() {
        return;
    }
    let mut lab = Lab::build(&LabSpec {
        nodes: 1,
        backends: 1,
        clients: 1,
        ..LabSpec::default()
    })
    .unwrap();
    lab.start_backends(dsrlb()).unwrap();
    let (node, backend, client) = (
        lab.nodes()[0].clone(),
        lab.backends()[0].clone(),
        lab.clients()[0].clone(),
    );
    let vip = lab.vip();
    let node_mac = node.mac;

    let shared = Shared::new(1, node_mac);
    let farm = FarmSpec {
        name: "echo".into(),
        vip: vip.into(),
        protocol: Protocol::Udp,
        ports: lab::BACKEND_UDP_PORT..=lab::BACKEND_UDP_PORT,
        backends: vec![BackendSpec {
            name: "b1".into(),
            ip: backend.ip.into(),
            mac: Some(backend.mac),
            weight: 1,
            state: BackendState::Up,
            healthy: true,
        }],
        persistence: None,
        hash: datapath::FlowHash::default(),
        limits: datapath::FarmLimits::default(),
        maglev_size: 251,
    };
    shared.publish(ForwardingTable::build(node_mac, &[farm], &shared.counters).unwrap());
    let dp = {
        let shared = shared.clone();
        let mut cfg = DatapathConfig::new(node.ifname.clone());
        cfg.workers = 1;
        cfg.io = datapath::IoMode::parse(&lab::lab_io()).expect("DSRLB_LAB_IO names an I/O mode");
        // Worker threads inherit the namespace of the thread that starts them.
        node.run(move || Datapath::start(cfg, shared))
            .expect("datapath starts")
    };

    let wire = Capture::start(lab.switch_ns(), lab.bridge()).unwrap();
    let addr = SocketAddr::from((vip, lab::BACKEND_UDP_PORT));
    let answered = client.run(|| lab::udp_request(addr, b"x", Duration::from_millis(800)).is_ok());
    // Straight to the node's MAC, skipping ARP: a non-owner must not forward it either.
    let mut frame = vec![0u8; 0];
    frame.extend_from_slice(&node.mac.0);
    frame.extend_from_slice(&client.mac.0);
    frame.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 29, 0, 1, 0, 0, 64, 17, 0, 0];
    ip.extend_from_slice(&client.ip.octets());
    ip.extend_from_slice(&vip.octets());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&40000u16.to_be_bytes());
    frame.extend_from_slice(&lab::BACKEND_UDP_PORT.to_be_bytes());
    frame.extend_from_slice(&[0, 9, 0, 0, b'y']);
    frame.resize(60, 0);
    let injected = inject(&client.netns, &client.ifname, &vec![frame; 20]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let frames = wire.stop().unwrap();

    assert!(
        !answered,
        "a UDP request through the VIP was answered with no owner"
    );
    assert_eq!(injected, 20);
    assert!(
        frames.iter().any(|f| f.is_arp_request_for(vip)),
        "the client never asked for the VIP: the check would be vacuous"
    );
    assert!(
        !frames.iter().any(|f| f.is_arp_reply_for(vip)),
        "someone answered ARP for the VIP"
    );
    let forwarded = frames
        .iter()
        .filter(|f| f.src_mac == node.mac && f.ipv4.is_some_and(|i| i.dst == vip))
        .count();
    assert_eq!(forwarded, 0, "the non-owner forwarded VIP traffic");
    assert!(shared.drops.get(DropReason::NotOwner) >= 20);

    // The control: the same datapath with the flag on serves the VIP.
    shared.set_owner(true);
    let reply = client
        .run(|| lab::udp_request(addr, b"owner", Duration::from_secs(2)))
        .expect("served once owner");
    assert_eq!(reply, "backend=b1 owner");
    dp.stop();
}
