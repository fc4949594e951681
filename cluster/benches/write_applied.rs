//! Write-to-applied latency of the replicated state (issue #3, "Measure"): three in-process
//! `ClusterNode`s on 127.0.0.1, each with its own redb file on disk, and the time from
//! `write(PutFarm)` until every node's `state()` watch shows the new farm — what an admin
//! change costs before all nodes forward with it.
//!
//! Two paths: the write made on the leader, and made on a follower (forwarded to the leader,
//! as an admin request to any node would be). A plain pass of `DSRLB_BENCH_WRITES` writes per
//! path (default 500) prints p50/p90/p99/max of single writes, which criterion's per-sample
//! means do not show; criterion then measures the same operation its own way.
//!
//! `cargo bench -p cluster --bench write_applied`

use anyhow::{Context, Result, bail};
use cluster::{
    Backend, BackendState, ClusterNode, ClusterSettings, ClusterState, Command, Farm, Persistence,
    Protocol, Scheduler, ServerState,
};
use criterion::{Criterion, criterion_group, criterion_main};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::sync::watch;

/// Nodes in the benchmarked cluster.
const NODES: usize = 3;
/// The farm every write replaces; its first backend's weight carries the write's number.
const FARM: &str = "bench";
/// Bound on every wait: for a leader, for one write to be applied everywhere.
const WAIT: Duration = Duration::from_secs(10);
/// Writes per path in the percentile pass unless `DSRLB_BENCH_WRITES` says otherwise.
const DEFAULT_WRITES: usize = 500;
const TOKEN: &str = "write-applied-bench-token-0123456789";

/// A running three-node cluster and one state receiver per node.
struct Bench {
    // Declared before `_dirs` so the nodes close their databases before the dirs go.
    nodes: Vec<ClusterNode>,
    states: Vec<watch::Receiver<Arc<ClusterState>>>,
    seq: u32,
    _dirs: Vec<TempDir>,
    settings: ClusterSettings,
}

fn free_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind an ephemeral port")?;
    Ok(l.local_addr()?)
}

fn farm(weight: u32) -> Farm {
    Farm {
        name: FARM.into(),
        vip: Ipv4Addr::new(198, 18, 0, 100).into(),
        port_first: 80,
        port_last: 80,
        protocol: Protocol::Tcp,
        scheduler: Scheduler::Maglev,
        limits: Default::default(),
        maglev_table_size: 307,
        persistence: Persistence::None,
        check: None,
        backends: (0..2u8)
            .map(|i| Backend {
                name: format!("b{i}"),
                ip: Ipv4Addr::new(198, 18, 0, 21 + i).into(),
                mac: None,
                weight: if i == 0 { weight } else { 1 },
                state: BackendState::Up,
                priority: 0,
            })
            .collect(),
    }
}

impl Bench {
    /// Starts the nodes with the contract's default timing and waits until they agree on a
    /// leader and every one has applied the bootstrap.
    async fn start() -> Result<Bench> {
        let addrs: Vec<SocketAddr> = (0..NODES).map(|_| free_addr()).collect::<Result<_>>()?;
        let members: Vec<(u64, SocketAddr)> = (1..).zip(addrs.iter().copied()).collect();
        let mut dirs = Vec::new();
        let mut nodes = Vec::new();
        let mut first = None;
        for (id, addr) in &members {
            let dir = tempfile::tempdir().context("temp data dir")?;
            let mut s = ClusterSettings::new(*id, dir.path().into(), *addr, TOKEN.into());
            s.members = members.clone();
            first.get_or_insert_with(|| s.clone());
            nodes.push(
                ClusterNode::start(s, vec![farm(1)])
                    .await
                    .with_context(|| format!("start node {id}"))?,
            );
            dirs.push(dir);
        }
        let states = nodes.iter().map(ClusterNode::state).collect();
        let settings = first.context("no node")?;
        let mut b = Bench {
            nodes,
            states,
            seq: 1,
            _dirs: dirs,
            settings,
        };
        b.wait_settled().await?;
        Ok(b)
    }

    async fn wait_settled(&mut self) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let leaders: Vec<Option<u64>> = self.nodes.iter().map(ClusterNode::leader).collect();
            let agreed = leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0]);
            let booted = self.states.iter().all(|s| s.borrow().bootstrapped);
            if agreed && booted && self.leader().is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("no settled cluster (agreed leader, bootstrap applied) within {WAIT:?}")
    }

    /// Index of the node that leads right now.
    fn leader(&self) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.raft_metrics().borrow().state == ServerState::Leader)
    }

    /// The node a path writes on: the leader, or the next node after it.
    fn writer(&self, on_leader: bool) -> Result<usize> {
        let l = self.leader().context("no leader")?;
        Ok(if on_leader { l } else { (l + 1) % NODES })
    }

    /// One write on node `via`: (until applied on the leader, until applied on every node).
    async fn write(&mut self, via: usize) -> Result<(Duration, Duration)> {
        self.seq = self.seq.wrapping_add(1).max(2);
        let seq = self.seq;
        let start = Instant::now();
        self.nodes[via]
            .write(Command::PutFarm(farm(seq)))
            .await
            .with_context(|| format!("write {seq} on node {}", via + 1))?;
        let on_leader = start.elapsed();
        for (i, rx) in self.states.iter_mut().enumerate() {
            let shown = |s: &Arc<ClusterState>| {
                s.farms
                    .get(FARM)
                    .and_then(|f| f.backends.first())
                    .is_some_and(|b| b.weight == seq)
            };
            match tokio::time::timeout(WAIT, rx.wait_for(shown)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => bail!("state of node {} closed: {e}", i + 1),
                Err(_) => bail!("write {seq} not applied on node {} within {WAIT:?}", i + 1),
            }
        }
        Ok((on_leader, start.elapsed()))
    }
}

/// The `q` quantile (nearest rank) of sorted `v`, in milliseconds.
fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

fn summary(what: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "{what:<38} n={:<4} p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        v.len(),
        quantile_ms(&v, 0.50),
        quantile_ms(&v, 0.90),
        quantile_ms(&v, 0.99),
        quantile_ms(&v, 1.0),
    )
}

/// The percentile pass: `n` writes on each path, printed as p50/p90/p99/max.
async fn percentile_pass(b: &mut Bench, n: usize) -> Result<()> {
    for on_leader in [true, false] {
        let (mut leader, mut all) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let via = b.writer(on_leader)?;
            let (l, a) = b.write(via).await?;
            leader.push(l);
            all.push(a);
        }
        let path = if on_leader { "leader" } else { "follower" };
        println!(
            "{}",
            summary(&format!("write on {path} -> applied on leader"), leader)
        );
        println!(
            "{}",
            summary(&format!("write on {path} -> applied on all {NODES}"), all)
        );
    }
    Ok(())
}

fn writes_per_path() -> Result<usize> {
    // `cargo test --benches` runs this file with `--test`: a smoke run, not a measurement.
    if std::env::args().any(|a| a == "--test") {
        return Ok(5);
    }
    match std::env::var("DSRLB_BENCH_WRITES") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("DSRLB_BENCH_WRITES={v:?} is not a count")),
        Err(_) => Ok(DEFAULT_WRITES),
    }
}

fn write_applied(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("write_applied: tokio runtime: {e}"));
    let setup = rt.block_on(async {
        let mut b = Bench::start().await?;
        let s = &b.settings;
        println!(
            "write_applied: {NODES} in-process nodes on 127.0.0.1, redb files under {}; \
             heartbeat {:?}, election timeout {:?}..{:?}",
            std::env::temp_dir().display(),
            s.heartbeat,
            s.election_timeout.0,
            s.election_timeout.1
        );
        let n = writes_per_path()?;
        percentile_pass(&mut b, n).await?;
        anyhow::Ok(b)
    });
    let mut bench = setup.unwrap_or_else(|e| panic!("write_applied: {e:#}"));

    let mut group = c.benchmark_group("write_applied_all_nodes");
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(8));
    for on_leader in [true, false] {
        let name = if on_leader {
            "on_leader"
        } else {
            "on_follower"
        };
        group.bench_function(name, |bencher| {
            bencher.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let via = bench.writer(on_leader)?;
                        total += bench.write(via).await?.1;
                    }
                    anyhow::Ok(total)
                })
                .unwrap_or_else(|e| panic!("write_applied {name}: {e:#}"))
            })
        });
    }
    group.finish();
    rt.block_on(async move {
        for n in bench.nodes.drain(..) {
            if let Err(e) = n.shutdown().await {
                eprintln!("write_applied: node shutdown: {e}");
            }
        }
    });
}

criterion_group!(benches, write_applied);
criterion_main!(benches);
