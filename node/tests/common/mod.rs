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

// ---- Cluster labs (the `cluster_*` tests) -------------------------------------------------

use node::lab::{NodeOptions, scrape};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A lab running every node as one Raft cluster, plus its backends and one client.
pub struct ClusterLab {
    /// `procs[i]` runs node `i`; `None` while it is down. Declared first so the nodes are
    /// killed and reaped before the lab removes their namespaces.
    pub procs: Vec<Option<LabProcess>>,
    pub lab: Lab,
    pub farms: Vec<LabFarm>,
    pub witnesses: Vec<usize>,
}

impl ClusterLab {
    /// Builds the lab, starts the backends and the cluster, and waits until exactly one node
    /// owns the VIP with every backend up everywhere.
    pub fn start(nodes: usize, backends: usize, farms: &[LabFarm], witnesses: &[usize]) -> Self {
        let mut lab = Lab::build(&LabSpec {
            nodes,
            backends,
            clients: 1,
            ..LabSpec::default()
        })
        .expect("lab builds");
        lab.start_backends(dsrlb()).expect("backends start");
        let procs = lab
            .start_cluster(dsrlb(), farms, witnesses)
            .expect("the cluster starts with one owner");
        ClusterLab {
            procs: procs.into_iter().map(Some).collect(),
            lab,
            farms: farms.to_vec(),
            witnesses: witnesses.to_vec(),
        }
    }

    /// The one node that owns the VIP (waits up to 5 s for exactly one; panics otherwise).
    /// Says so when a scrape saw no owner or several: on a loaded machine a lease can lapse
    /// for a moment, and that is worth seeing in the output.
    pub fn sole_owner(&self) -> usize {
        let mut seen = Vec::new();
        let one = wait_for(Duration::from_secs(5), || {
            let owners = self.lab.owners();
            match owners.as_slice() {
                [one] => Some(*one),
                _ => {
                    seen.push(owners);
                    None
                }
            }
        });
        if !seen.is_empty() {
            eprintln!("sole_owner: scrapes before one owner showed {seen:?}");
        }
        one.unwrap_or_else(|| panic!("no single owner: {seen:?}\n{}", self.logs()))
    }

    /// kill -9 node `i` and reap it; the instant just before the signal.
    pub fn kill(&mut self, i: usize) -> Instant {
        let mut p = self.procs[i].take().expect("node is running");
        let at = Instant::now();
        p.kill().expect("kill -9");
        at
    }

    /// Starts node `i` again from its data dir, with `farms` in its config.
    pub fn restart_with(&mut self, i: usize, farms: &[LabFarm]) {
        assert!(self.procs[i].is_none(), "node {i} still runs");
        let opts = NodeOptions {
            witness: self.witnesses.contains(&i),
            ..NodeOptions::default()
        };
        let p = self
            .lab
            .spawn_node(i, dsrlb(), farms, &opts)
            .expect("node restarts");
        self.procs[i] = Some(p);
    }

    /// Starts node `i` again from its data dir with the original config.
    pub fn restart(&mut self, i: usize) {
        let farms = self.farms.clone();
        self.restart_with(i, &farms);
    }

    /// The node whose interface has `mac`.
    pub fn node_of_mac(&self, mac: node::lab::MacAddr) -> Option<usize> {
        self.lab.nodes().iter().position(|n| n.mac == mac)
    }

    /// Logs of every running node (tails), for failure messages.
    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .enumerate()
            .map(|(i, p)| match p {
                Some(p) => format!("--- node {i} ---\n{}", p.log_tail(15)),
                None => format!("--- node {i}: down ---"),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The nodes among `among` whose metrics say they own the VIP. Only those are scraped:
    /// a frozen (SIGSTOP) node accepts the connection and then answers nothing, and a scrape
    /// of it would block for the client's whole I/O timeout.
    pub fn owners_among(&self, among: &[usize]) -> Vec<usize> {
        among
            .iter()
            .copied()
            .filter(|&i| {
                scrape(&self.lab.nodes()[i]).is_ok_and(|m| m.get("dsrlb_vip_owner", &[]) == 1.0)
            })
            .collect()
    }

    /// Waits until exactly one node among `among` owns the VIP (nodes outside `among` are
    /// not looked at).
    pub fn wait_owner(&self, among: &[usize], limit: Duration) -> Option<usize> {
        wait_for(limit, || match self.owners_among(among).as_slice() {
            [one] => Some(*one),
            _ => None,
        })
    }

    /// Waits until one node owns the VIP and every running node reports the same term.
    pub fn wait_converged(&self, limit: Duration) -> Option<(usize, f64)> {
        wait_for(limit, || {
            let owners = self.lab.owners();
            let [owner] = owners.as_slice() else {
                return None;
            };
            let mut terms = Vec::new();
            for (i, p) in self.procs.iter().enumerate() {
                if p.is_some() {
                    terms.push(
                        scrape(&self.lab.nodes()[i])
                            .ok()?
                            .get("dsrlb_raft_term", &[]),
                    );
                }
            }
            let first = *terms.first()?;
            terms.iter().all(|t| *t == first).then_some((*owner, first))
        })
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One `GET /` through `addr` with a short connect timeout, so a loop of them measures an
/// outage finely; the name of the backend that answered.
pub fn quick_get(addr: SocketAddr) -> Result<String, node::lab::LabError> {
    let mut conn = node::lab::HttpConn::connect_from(None, addr, Duration::from_millis(200))?;
    let reply = conn.get("/", false)?;
    reply
        .backend()
        .map(str::to_owned)
        .ok_or_else(|| node::lab::LabError::Spec(format!("no backend in {:?}", reply.body)))
}

/// Whether `addr` serves a request within 3 s (several short attempts: on a loaded machine
/// one SYN can take longer than [`quick_get`]'s connect timeout).
pub fn served(addr: SocketAddr) -> Option<String> {
    wait_for(Duration::from_secs(3), || quick_get(addr).ok())
}

/// The web farm (HTTP on port 80) and the echo farm (UDP 5353) over every backend.
pub fn web_and_echo(backends: usize) -> Vec<LabFarm> {
    let all: Vec<usize> = (0..backends).collect();
    vec![
        LabFarm::new("web", "tcp", node::lab::BACKEND_HTTP_PORT, &all),
        LabFarm::new("echo", "udp", node::lab::BACKEND_UDP_PORT, &all),
    ]
}
