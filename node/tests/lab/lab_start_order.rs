//! Start order (docs/design.md#binaries): every file is read and every listener bound before
//! Raft and the datapath start. A node whose metrics port is taken, or whose admin token is
//! missing or readable by others, exits naming the key, with no Raft start and no gratuitous
//! ARP for the VIP on the wire (bridge capture). The control: the same node with the port
//! free starts and announces the VIP, so the capture would have seen it.

use crate::common::{can_run_lab, dsrlb};
use lab::{Capture, Lab, LabFarm, LabSpec, METRICS_PORT};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// Runs `dsrlb run` on node 0 with `config` until it exits (bounded); its exit code and log.
fn run_refused(lab: &Lab, name: &str, config: &str) -> (Option<i32>, String) {
    let path = lab.dir().join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let mut p = lab.nodes()[0]
        .spawn(
            dsrlb(),
            ["run".as_ref(), "--config".as_ref(), path.as_os_str()],
        )
        .unwrap();
    let status = p
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap_or_else(|| panic!("{name}: dsrlb did not exit: {}", p.read_log()));
    (status.code(), p.read_log())
}

/// What a node that started Raft or its datapath logs.
const STARTED: [&str; 3] = [
    "cluster node started",
    "cluster member started",
    "datapath started",
];

#[test]
fn nothing_starts_before_every_file_is_read_and_every_port_bound() {
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
    let vip = lab.vip();
    let config = lab
        .node_config(0, &[LabFarm::new("web", "tcp", 80, &[0])])
        .unwrap();
    let wire = Capture::start(lab.switch_ns(), lab.bridge()).unwrap();

    // The metrics port taken by another socket in the node's namespace.
    let occupant = node.run(|| std::net::TcpListener::bind(("127.0.0.1", METRICS_PORT)).unwrap());
    let (code, log) = run_refused(&lab, "port-in-use", &config);
    assert_eq!(code, Some(1), "port in use: {log}");
    assert!(
        log.contains("metrics.listen"),
        "port in use, key not named: {log}"
    );
    for s in STARTED {
        assert!(!log.contains(s), "port in use, yet {s:?}: {log}");
    }
    drop(occupant);

    // A missing admin token file, and one others can read.
    let token = lab.admin_token_file().unwrap();
    let missing = config.replace(
        &token.display().to_string(),
        &lab.dir().join("no-such.token").display().to_string(),
    );
    let readable = lab.dir().join("readable.token");
    std::fs::copy(&token, &readable).unwrap();
    std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = config.replace(
        &token.display().to_string(),
        &readable.display().to_string(),
    );
    for (name, text) in [("token-missing", missing), ("token-readable", open)] {
        assert_ne!(text, config, "{name}: the token path is not in the config");
        let (code, log) = run_refused(&lab, name, &text);
        assert_eq!(code, Some(2), "{name}: {log}");
        assert!(
            log.contains("admin.token_file"),
            "{name}: key not named: {log}"
        );
        for s in STARTED {
            assert!(!log.contains(s), "{name}, yet {s:?}: {log}");
        }
    }

    let announced = |frames: &[lab::Frame]| {
        frames
            .iter()
            .filter(|f| {
                f.arp
                    .is_some_and(|a| a.sender_ip == vip && a.sender_mac == node.mac)
            })
            .count()
    };
    let refused = announced(&wire.snapshot());
    assert_eq!(refused, 0, "a refused node announced the VIP");

    // The control: the same config with the port free starts and announces the VIP.
    let path = lab.dir().join("control.toml");
    std::fs::write(&path, &config).unwrap();
    let mut p = node
        .spawn(
            dsrlb(),
            ["run".as_ref(), "--config".as_ref(), path.as_os_str()],
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while announced(&wire.snapshot()) == 0 {
        assert!(
            Instant::now() < deadline,
            "the control never announced the VIP: {}",
            p.read_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    p.kill().unwrap();
    wire.stop().unwrap();
}
