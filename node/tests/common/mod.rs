//! Shared set-up for the lab tests: a root check and a single-node lab with real `dsrlb`
//! processes (backends and node) started from this build's binary.
#![allow(dead_code)] // each test file uses a different part

use node::lab::{Lab, LabFarm, LabProcess, LabSpec};
use std::path::Path;
use std::process::Command;

pub fn dsrlb() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dsrlb"))
}

/// The lab needs root (namespaces, AF_PACKET) and `ip`; say why when we cannot run.
pub fn can_run_lab() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the lab needs root (network namespaces)");
        return false;
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => true,
        _ => {
            eprintln!("skipped: the lab needs the `ip` command (apt-get install iproute2)");
            false
        }
    }
}

/// A lab with one dsrlb node (a cluster of one, owning the VIP), `backends` backends running
/// `dsrlb lab-backend`, and one client; the node serves `farms`.
pub struct SingleNode {
    pub lab: Lab,
    pub node: LabProcess,
}

impl SingleNode {
    pub fn start(backends: usize, extra_ips: usize, farms: &[LabFarm]) -> SingleNode {
        let mut lab = Lab::build(&LabSpec {
            nodes: 1,
            backends,
            clients: 1,
            client_extra_ips: extra_ips,
            ..LabSpec::default()
        })
        .expect("lab builds");
        lab.start_backends(dsrlb()).expect("backends start");
        let node = lab
            .start_node(0, dsrlb(), farms)
            .expect("dsrlb node starts");
        SingleNode { lab, node }
    }
}
