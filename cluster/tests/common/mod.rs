//! In-process cluster harness for the cluster crate's tests: nodes on 127.0.0.1 with their
//! own temporary data dirs, started, dropped ("killed") and restarted at will. Every wait is
//! bounded.
#![allow(dead_code)]

use anyhow::{Context, Result, bail};
use cluster::{
    Backend, BackendState, ClusterNode, ClusterSettings, ClusterState, Command, Farm, Persistence,
    Protocol, Scheduler,
};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

/// Default bound of every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub const TOKEN: &str = "test-cluster-token-0123456789";

pub fn init_tracing() {
    // Several tests share a process; only the first installs the subscriber.
    if tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init()
        .is_err()
    {
        // Already installed by another test in this binary.
    }
}

pub fn free_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind an ephemeral port")?;
    Ok(l.local_addr()?)
}

pub fn farm(name: &str, backends: usize) -> Farm {
    Farm {
        name: name.into(),
        vip: Ipv4Addr::new(198, 18, 0, 100).into(),
        port_first: 80,
        port_last: 80,
        protocol: Protocol::Tcp,
        scheduler: Scheduler::Maglev,
        limits: Default::default(),
        maglev_table_size: 307,
        persistence: Persistence::None,
        check: None,
        backends: (0..backends)
            .map(|i| Backend {
                name: format!("b{i}"),
                ip: Ipv4Addr::new(198, 18, 0, 10 + i as u8).into(),
                mac: None,
                weight: 1,
                state: BackendState::Up,
                priority: 0,
            })
            .collect(),
    }
}

pub struct TestCluster {
    pub dirs: Vec<TempDir>,
    pub settings: Vec<ClusterSettings>,
    pub nodes: Vec<Option<ClusterNode>>,
    pub farms: Vec<Farm>,
}

impl TestCluster {
    /// `n` nodes with ids 1..=n; `tune` adjusts each node's settings before start.
    pub fn new(n: usize, tune: impl Fn(&mut ClusterSettings)) -> Result<Self> {
        let addrs: Vec<SocketAddr> = (0..n).map(|_| free_addr()).collect::<Result<_>>()?;
        let members: Vec<(u64, SocketAddr)> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (i as u64 + 1, *a))
            .collect();
        let mut dirs = Vec::new();
        let mut settings = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let dir = tempfile::tempdir()?;
            let mut s = ClusterSettings::new(i as u64 + 1, dir.path().into(), *addr, TOKEN.into());
            s.members = members.clone();
            s.heartbeat = Duration::from_millis(50);
            s.election_timeout = (Duration::from_millis(300), Duration::from_millis(600));
            s.vip_lease = Duration::from_millis(300);
            tune(&mut s);
            dirs.push(dir);
            settings.push(s);
        }
        Ok(TestCluster {
            dirs,
            settings,
            nodes: (0..n).map(|_| None).collect(),
            farms: vec![farm("boot", 2)],
        })
    }

    pub async fn start(&mut self, i: usize) -> Result<()> {
        let node = ClusterNode::start(self.settings[i].clone(), self.farms.clone())
            .await
            .with_context(|| format!("start node {}", i + 1))?;
        self.nodes[i] = Some(node);
        Ok(())
    }

    pub async fn start_all(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.start(i).await?;
        }
        Ok(())
    }

    /// Drops node `i` without shutdown: to its peers, a crash.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i] = None;
    }

    pub fn node(&self, i: usize) -> &ClusterNode {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// Index of the node with this id.
    pub fn index_of(&self, id: u64) -> usize {
        (id - 1) as usize
    }

    /// Waits until every running node agrees on one leader that is itself running.
    pub async fn wait_leader(&self) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            let running: Vec<&ClusterNode> = self.nodes.iter().flatten().collect();
            let leaders: Vec<Option<u64>> = running.iter().map(|n| n.leader()).collect();
            if let Some(Some(l)) = leaders.first()
                && leaders.iter().all(|x| *x == Some(*l))
                && running.iter().any(|n| n.id() == *l)
            {
                let m = running
                    .iter()
                    .find(|n| n.id() == *l)
                    .map(|n| n.raft_metrics().borrow().state);
                if m == Some(cluster::ServerState::Leader) {
                    return Ok(*l);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("no agreed leader within {WAIT:?}")
    }

    /// Waits until node `i`'s applied state satisfies `f`.
    pub async fn wait_state(
        &self,
        i: usize,
        f: impl Fn(&ClusterState) -> bool,
    ) -> Result<Arc<ClusterState>> {
        let mut rx = self.node(i).state();
        let r = tokio::time::timeout(WAIT, rx.wait_for(|s| f(s))).await;
        match r {
            Ok(Ok(s)) => Ok(s.clone()),
            Ok(Err(e)) => bail!("state channel of node {} closed: {e}", i + 1),
            Err(_) => bail!(
                "node {} did not reach the expected state within {WAIT:?}: {:?}",
                i + 1,
                self.node(i).state().borrow()
            ),
        }
    }

    /// Waits until every running node's state satisfies `f`.
    pub async fn wait_all(&self, f: impl Fn(&ClusterState) -> bool) -> Result<()> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_some() {
                self.wait_state(i, &f).await?;
            }
        }
        Ok(())
    }

    /// Any running node that is not `id`.
    pub fn other_than(&self, id: u64) -> usize {
        self.nodes
            .iter()
            .position(|n| n.as_ref().is_some_and(|n| n.id() != id))
            .expect("another running node")
    }
}

pub fn put(name: &str, backends: usize) -> Command {
    Command::PutFarm(farm(name, backends))
}
