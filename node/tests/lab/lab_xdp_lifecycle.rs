//! The AF_XDP backend's program lifecycle (docs/design.md#af-xdp): a bpf_link attachment is
//! gone after SIGTERM and after kill -9; a program attached the netlink way, which outlives
//! a killed process, is found and removed by the next start. Runs with `io = "af_xdp"`
//! whatever `DSRLB_LAB_IO` says.

use crate::common::{can_run_lab, dsrlb};
use lab::{Host, Lab, LabFarm, LabProcess, LabSpec, NodeOptions};
use nix::sys::signal::Signal;
use std::net::SocketAddr;
use std::time::Duration;

/// What `ip -d link show` says about the node interface's XDP program.
fn xdp_of(node: &Host) -> Option<String> {
    let out = node
        .ip(&["-d", "link", "show", "dev", &node.ifname])
        .expect("ip link show");
    out.lines()
        .find(|l| l.trim_start().starts_with("prog/xdp"))
        .map(|l| l.trim().to_owned())
}

fn start(lab: &Lab, farms: &[LabFarm], attach: &str) -> LabProcess {
    let opts = NodeOptions {
        io: "af_xdp".into(),
        ..NodeOptions::default()
    };
    let config = lab.node_config_with(0, farms, &opts).expect("config");
    let node = &lab.nodes()[0];
    let path = lab.dir().join(format!("{}-xdp.toml", node.name));
    std::fs::write(&path, config).expect("write config");
    let mut proc = node
        .spawn_with_env(
            dsrlb(),
            ["run".as_ref(), "--config".as_ref(), path.as_os_str()],
            [("RUST_LOG", "info"), ("DSRLB_XDP_ATTACH", attach)],
        )
        .expect("dsrlb starts");
    lab.wait_ready(
        std::slice::from_mut(&mut proc),
        &[0],
        farms,
        Duration::from_secs(15),
    )
    .unwrap_or_else(|e| panic!("node ready: {e}"));
    proc
}

fn served(lab: &Lab) {
    let addr = SocketAddr::from((lab.vip(), lab::BACKEND_HTTP_PORT));
    lab.clients()[0]
        .run(|| lab::http_get(addr, "/"))
        .expect("served through the VIP");
}

#[test]
fn the_xdp_program_goes_with_the_node_even_after_kill_9() {
    if !can_run_lab() {
        return;
    }
    let farms = [LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0])];
    let mut lab = Lab::build(&LabSpec {
        nodes: 1,
        backends: 1,
        clients: 1,
        ..LabSpec::default()
    })
    .expect("lab builds");
    lab.start_backends(dsrlb()).expect("backends start");
    let node = lab.nodes()[0].clone();
    assert_eq!(xdp_of(&node), None, "a fresh interface has no XDP program");

    // Netlink attachment: it survives kill -9.
    let mut p = start(&lab, &farms, "netlink");
    served(&lab);
    let attached = xdp_of(&node).expect("the node attached its program");
    assert!(attached.contains("dsrlb_xdp"), "{attached}");
    let log = p.read_log();
    let started = log
        .lines()
        .find(|l| l.contains("datapath started"))
        .expect("the datapath's start is logged");
    eprintln!("{started}");
    assert!(started.contains("af_xdp"), "{started}");
    p.signal(Signal::SIGKILL).expect("kill -9");
    p.wait_timeout(Duration::from_secs(5))
        .expect("wait")
        .expect("killed");
    let stale = xdp_of(&node).expect("a netlink attachment outlives its process");
    assert!(stale.contains("dsrlb_xdp"), "{stale}");

    // The next start (bpf_link) finds the stale program and removes it.
    let mut p = start(&lab, &farms, "link");
    assert!(
        p.read_log().contains("removed a stale dsrlb XDP program"),
        "{}",
        p.log_tail(20)
    );
    served(&lab);
    let now = xdp_of(&node).expect("the new program is attached");
    assert_ne!(now, stale, "still the stale program");
    // kill -9 of a bpf_link holder leaves nothing behind.
    p.signal(Signal::SIGKILL).expect("kill -9");
    p.wait_timeout(Duration::from_secs(5))
        .expect("wait")
        .expect("killed");
    assert_eq!(
        xdp_of(&node),
        None,
        "a bpf_link attachment outlived kill -9"
    );

    // SIGTERM detaches as well, for both ways of attaching.
    for attach in ["link", "netlink"] {
        let mut p = start(&lab, &farms, attach);
        served(&lab);
        assert!(xdp_of(&node).is_some(), "{attach}: attached");
        p.signal(Signal::SIGTERM).expect("SIGTERM");
        let status = p
            .wait_timeout(Duration::from_secs(5))
            .expect("wait")
            .expect("exits within 5 s of SIGTERM");
        assert!(status.success(), "{attach}: {}", p.log_tail(10));
        assert_eq!(xdp_of(&node), None, "{attach}: program left after SIGTERM");
    }
    drop(lab);
}
