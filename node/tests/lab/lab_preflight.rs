//! `dsrlb run` refuses, with a message naming the fix, a host that would break DSR: IP
//! forwarding on, the VIP on a local interface, the interface down or missing.

use crate::common::{can_run_lab, dsrlb};
use lab::{Lab, LabFarm, LabSpec};
use std::time::Duration;

/// Starts dsrlb on node 0 and returns (exit success?, log) once it has exited.
fn run_once(lab: &Lab, config: &str) -> (bool, String) {
    let path = lab.dir().join("preflight.toml");
    std::fs::write(&path, config).unwrap();
    let node = &lab.nodes()[0];
    let mut p = node
        .spawn(
            dsrlb(),
            ["run".as_ref(), "--config".as_ref(), path.as_os_str()],
        )
        .unwrap();
    let status = p
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("dsrlb exits on a refused host");
    (status.success(), p.read_log())
}

#[test]
fn hosts_that_would_break_dsr_are_refused() {
    if !can_run_lab() {
        return;
    }
    let lab = Lab::build(&LabSpec {
        nodes: 1,
        backends: 1,
        clients: 0,
        ..LabSpec::default()
    })
    .unwrap();
    let node = lab.nodes()[0].clone();
    let farm = LabFarm::new("web", "tcp", 80, &[0]);
    let config = lab.node_config(0, &[farm]).unwrap();

    node.set_sysctl("net/ipv4/ip_forward", "1").unwrap();
    let (ok, log) = run_once(&lab, &config);
    assert!(!ok && log.contains("ip_forward"), "forwarding on: {log}");
    node.set_sysctl("net/ipv4/ip_forward", "0").unwrap();

    node.ip(&["addr", "add", &format!("{}/32", lab.vip()), "dev", "lo"])
        .unwrap();
    let (ok, log) = run_once(&lab, &config);
    assert!(
        !ok && log.contains("assigned to a local interface"),
        "VIP local: {log}"
    );
    node.ip(&["addr", "del", &format!("{}/32", lab.vip()), "dev", "lo"])
        .unwrap();

    node.ip(&["link", "set", "eth0", "down"]).unwrap();
    let (ok, log) = run_once(&lab, &config);
    assert!(!ok && log.contains("is down"), "interface down: {log}");
    node.ip(&["link", "set", "eth0", "up"]).unwrap();

    let missing = config.replace("interface = \"eth0\"", "interface = \"eth9\"");
    let (ok, log) = run_once(&lab, &missing);
    assert!(
        !ok && log.contains("does not exist"),
        "interface missing: {log}"
    );

    let off_subnet = config.replace("ip = \"198.18.0.21\"", "ip = \"198.19.0.21\"");
    let (ok, log) = run_once(&lab, &off_subnet);
    assert!(
        !ok && log.contains("not on a subnet"),
        "backend off subnet: {log}"
    );
}
