//! The kernel fast path on a real node (docs/design.md#fast-path): attached at start, it
//! forwards a plain farm's traffic in the kernel (the workers see none of it), and it goes
//! with the node — on SIGTERM and after kill -9 the interface has no tcx program left.

use crate::common::{can_run_lab, dsrlb, one_node_lab};
use lab::{HttpConn, Lab, LabFarm, LabProcess, NodeOptions, scrape};
use nix::sys::signal::Signal;
use std::net::SocketAddr;
use std::time::Duration;

fn programs(lab: &Lab) -> u32 {
    let node = lab.nodes()[0].clone();
    node.run(|| datapath::tc_ingress_programs(&node.ifname))
        .expect("query the node interface's tcx programs")
}

fn start(lab: &Lab, farms: &[LabFarm]) -> LabProcess {
    let opts = NodeOptions {
        io: "af_packet".into(),
        datapath_extra: "fast_path = \"on\"\n".into(),
        ..NodeOptions::default()
    };
    let mut p = lab
        .spawn_node(0, dsrlb(), farms, &opts)
        .expect("dsrlb starts");
    lab.wait_ready(
        std::slice::from_mut(&mut p),
        &[0],
        farms,
        Duration::from_secs(15),
    )
    .unwrap_or_else(|e| panic!("node ready: {e}"));
    p
}

#[test]
fn the_fast_path_forwards_in_the_kernel_and_goes_with_the_node() {
    if !can_run_lab() {
        return;
    }
    let farms = [LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0, 1])];
    let lab = one_node_lab(2);
    assert_eq!(programs(&lab), 0, "a fresh interface has no tcx program");

    let mut p = start(&lab, &farms);
    assert_eq!(programs(&lab), 1, "the node attached its program");
    let addr = SocketAddr::from((lab.vip(), lab::BACKEND_HTTP_PORT));
    let served = lab.clients()[0].run(|| {
        (0..50)
            .filter(|_| {
                HttpConn::connect(addr)
                    .and_then(|mut c| c.get("/", false))
                    .is_ok()
            })
            .count()
    });
    assert_eq!(served, 50, "every request through the VIP is answered");
    let m = scrape(&lab.nodes()[0]).expect("metrics");
    let all = m.sum("dsrlb_packets_total");
    let kernel = m.get("dsrlb_fast_path_packets_total", &[]);
    assert!(
        kernel >= 150.0,
        "{kernel} frames in the kernel for 50 connections"
    );
    assert_eq!(
        kernel, all,
        "the workers forwarded none of a plain farm's frames"
    );
    assert_eq!(
        m.get(
            "dsrlb_datapath_info",
            &[("io", "af_packet"), ("mode", "ring"), ("fast_path", "tc")]
        ),
        1.0
    );

    p.signal(Signal::SIGKILL).expect("kill -9");
    p.wait_timeout(Duration::from_secs(5))
        .expect("wait")
        .expect("killed");
    assert_eq!(programs(&lab), 0, "the program outlived kill -9");

    let mut p = start(&lab, &farms);
    assert_eq!(programs(&lab), 1, "attached again after a kill -9");
    p.signal(Signal::SIGTERM).expect("SIGTERM");
    p.wait_timeout(Duration::from_secs(10))
        .expect("wait")
        .expect("exited on SIGTERM");
    assert_eq!(programs(&lab), 0, "the program outlived SIGTERM");
}
