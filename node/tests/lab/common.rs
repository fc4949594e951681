//! Shared set-up for the lab tests: a root check and labs with real `dsrlb` processes
//! (backends and nodes) started from this build's binary, with a panic instead of an error
//! wherever a test cannot go on.

use lab::{Lab, LabFarm, LabProcess, LabSpec};
use std::path::Path;

pub fn dsrlb() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dsrlb"))
}

/// Whether the calling test can build a lab here (root, `ip`); says `SKIPPED: <file:line>`
/// when not, or fails the test under `DSRLB_REQUIRE_LAB=1` (CI).
#[track_caller]
pub fn can_run_lab() -> bool {
    lab::can_run(&std::panic::Location::caller().to_string())
}

/// `dsrlb_backend_up` of `farm`/`backend` on the lab's first node.
pub fn backend_up(lab: &Lab, farm: &str, backend: &str) -> f64 {
    lab::scrape(&lab.nodes()[0])
        .expect("metrics")
        .get("dsrlb_backend_up", &[("farm", farm), ("backend", backend)])
}

/// Polls until `farm`/`backend` is `want` (1 up, 0 down) on the first node, failing with
/// `node`'s log after `limit`; returns how long it took.
pub fn wait_backend_up(
    lab: &Lab,
    node: &LabProcess,
    farm: &str,
    backend: &str,
    want: f64,
    limit: std::time::Duration,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    while backend_up(lab, farm, backend) != want {
        assert!(
            start.elapsed() < limit,
            "{farm}/{backend} not {want} after {limit:?}: {}",
            node.log_tail(20)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    start.elapsed()
}

/// A lab of one node host (no dsrlb started yet), `backends` backends running
/// `dsrlb lab-backend`, and one client: for tests that start the node their own way.
pub fn one_node_lab(backends: usize) -> Lab {
    let mut lab = Lab::build(&LabSpec {
        nodes: 1,
        backends,
        clients: 1,
        ..LabSpec::default()
    })
    .expect("lab builds");
    lab.start_backends(dsrlb()).expect("backends start");
    lab
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

use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use lab::wait_for;

/// [`lab::ClusterLab`] (shared with the chaos suite) with this build's `dsrlb`, one
/// client, and a panic instead of an error wherever a test cannot go on.
pub struct ClusterLab(pub lab::ClusterLab);

impl std::ops::Deref for ClusterLab {
    type Target = lab::ClusterLab;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for ClusterLab {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl ClusterLab {
    /// Builds the lab, starts the backends and the cluster, and waits until exactly one node
    /// owns the VIP with every backend up everywhere.
    pub fn start(nodes: usize, backends: usize, farms: &[LabFarm], witnesses: &[usize]) -> Self {
        Self::start_with_ips(nodes, backends, 0, farms, witnesses)
    }

    /// [`ClusterLab::start`] with `extra_ips` more source addresses on the client.
    pub fn start_with_ips(
        nodes: usize,
        backends: usize,
        extra_ips: usize,
        farms: &[LabFarm],
        witnesses: &[usize],
    ) -> Self {
        let spec = LabSpec {
            nodes,
            backends,
            clients: 1,
            client_extra_ips: extra_ips,
            ..LabSpec::default()
        };
        ClusterLab(
            lab::ClusterLab::start(&spec, dsrlb(), farms, witnesses)
                .expect("the cluster starts with one owner"),
        )
    }

    /// Two LB nodes and `dsrlb witness` (as `nobody`) in the namespace of the last of
    /// `backends` backends, the pair's third member.
    pub fn pair_with_witness(backends: usize, farms: &[LabFarm]) -> Self {
        let spec = LabSpec {
            nodes: 2,
            backends,
            clients: 1,
            ..LabSpec::default()
        };
        ClusterLab(
            lab::ClusterLab::start_pair_with_witness(&spec, dsrlb(), farms, backends - 1)
                .expect("the pair and its witness start with one owner"),
        )
    }

    /// The one node that owns the VIP (waits up to 5 s for exactly one; panics otherwise).
    pub fn sole_owner(&self) -> usize {
        self.0
            .sole_owner(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    /// kill -9 node `i` and reap it; the instant just before the signal.
    pub fn kill(&mut self, i: usize) -> Instant {
        self.0.kill(i).expect("kill -9 of a running node")
    }

    /// Starts node `i` again from its data dir, with `farms` in its config.
    pub fn restart_with(&mut self, i: usize, farms: &[LabFarm]) {
        self.0.restart_with(i, farms).expect("node restarts");
    }

    /// Starts node `i` again from its data dir with the original config.
    pub fn restart(&mut self, i: usize) {
        self.0.restart(i).expect("node restarts");
    }
}

/// One `GET /` through `addr` with a short connect timeout, so a loop of them measures an
/// outage finely; the name of the backend that answered.
pub fn quick_get(addr: SocketAddr) -> Result<String, lab::LabError> {
    let mut conn = lab::HttpConn::connect_from(None, addr, Duration::from_millis(200))?;
    // An attempt whose request was lost in an outage gives up soon, so the next attempt
    // measures the service, not TCP's retransmission backoff (seen: 4.1 s for one attempt
    // that connected just before a kill -9 on a loaded machine).
    conn.set_io_timeout(Duration::from_millis(500))?;
    let reply = conn.get("/", false)?;
    reply
        .backend()
        .map(str::to_owned)
        .ok_or_else(|| lab::LabError::Spec(format!("no backend in {:?}", reply.body)))
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
        LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &all),
        LabFarm::new("echo", "udp", lab::BACKEND_UDP_PORT, &all),
    ]
}
