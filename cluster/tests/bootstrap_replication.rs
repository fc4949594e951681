//! A fresh 3-node cluster: one leader, bootstrap farms and later writes on every node, a
//! write through a follower lands, the leader reports a fresh quorum ack.

mod common;
use anyhow::{Result, ensure};
use cluster::{Command, ServerState};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_bootstrap_replicate_and_forward() -> Result<()> {
    init_tracing();
    let mut c = TestCluster::new(3, |_| {})?;
    c.start_all().await?;
    let leader = c.wait_leader().await?;

    // Bootstrap farms, committed once by node 1, reach every node.
    c.wait_all(|s| s.bootstrapped && s.farms.contains_key("boot"))
        .await?;

    let li = c.index_of(leader);
    let applied = c.node(li).write(put("web", 3)).await?;
    ensure!(applied.changed, "a new farm changes the state");
    c.wait_all(|s| s.farms.get("web").is_some_and(|f| f.backends.len() == 3))
        .await?;

    // Through a follower: forwarded to the leader transparently.
    let fi = c.other_than(leader);
    let applied = c.node(fi).write(put("via-follower", 1)).await?;
    ensure!(applied.index > 0);
    c.wait_all(|s| s.farms.contains_key("via-follower")).await?;

    // A second bootstrap is ignored.
    let again = c
        .node(fi)
        .write(Command::Bootstrap {
            farms: vec![farm("late", 1)],
            settings: Default::default(),
        })
        .await?;
    ensure!(!again.changed, "bootstrap applies once");

    // Health verdicts replicate too.
    c.node(fi)
        .write(Command::SetHealth {
            farm: "web".into(),
            backend: "b1".into(),
            up: true,
        })
        .await?;
    c.wait_all(|s| s.health.get("web").and_then(|h| h.get("b1")) == Some(&true))
        .await?;

    // Exactly one leader, and it has heard from a quorum recently (the VIP lease input).
    let mut leaders = 0;
    for n in c.nodes.iter().flatten() {
        let m = n.raft_metrics().borrow().clone();
        if m.state == ServerState::Leader {
            leaders += 1;
            ensure!(
                m.millis_since_quorum_ack.is_some(),
                "leader exposes millis_since_quorum_ack"
            );
        }
    }
    ensure!(leaders == 1, "{leaders} leaders");
    let states: Vec<_> = c
        .nodes
        .iter()
        .flatten()
        .map(|n| n.state().borrow().clone())
        .collect();
    ensure!(
        states.windows(2).all(|w| w[0] == w[1]),
        "all nodes hold the same state"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_members_is_a_cluster_of_one() -> Result<()> {
    init_tracing();
    let mut c = TestCluster::new(1, |s| s.members.clear())?;
    c.start(0).await?;
    c.wait_state(0, |s| s.bootstrapped && s.farms.contains_key("boot"))
        .await?;
    let a = c.node(0).write(put("solo", 1)).await?;
    ensure!(a.changed);
    ensure!(c.node(0).leader() == Some(1));
    Ok(())
}
