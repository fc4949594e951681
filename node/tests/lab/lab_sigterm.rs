//! SIGTERM: the node stops answering ARP for its VIPs and exits cleanly (status 0).

use crate::common::{SingleNode, can_run_lab};
use lab::{Capture, LabFarm};
use nix::sys::signal::Signal;
use std::net::SocketAddr;
use std::time::Duration;

#[test]
fn sigterm_releases_the_vip_and_exits_cleanly() {
    if !can_run_lab() {
        return;
    }
    let web = LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0]);
    let mut s = SingleNode::start(1, 0, &[web]);
    let vip = s.lab.vip();
    let client = s.lab.clients()[0].clone();
    let addr = SocketAddr::from((vip, lab::BACKEND_HTTP_PORT));
    client
        .run(|| lab::http_get(addr, "/"))
        .expect("served before SIGTERM");

    s.node.signal(Signal::SIGTERM).unwrap();
    let status = s
        .node
        .wait_timeout(Duration::from_secs(5))
        .unwrap()
        .expect("exits within 5 s of SIGTERM");
    assert!(
        status.success(),
        "exit status {status}: {}",
        s.node.log_tail(10)
    );
    assert!(s.node.read_log().contains("releasing VIPs"));

    let wire = Capture::start(s.lab.switch_ns(), s.lab.bridge()).unwrap();
    client.flush_neighbors().unwrap();
    let after = client.run(|| lab::http_get(addr, "/"));
    let frames = wire.stop().unwrap();
    assert!(after.is_err(), "the VIP still answered after SIGTERM");
    assert!(frames.iter().any(|f| f.is_arp_request_for(vip)));
    assert!(
        !frames.iter().any(|f| f.is_arp_reply_for(vip)),
        "someone answered ARP for the VIP after the node stopped"
    );
}
