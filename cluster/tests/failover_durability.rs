//! Crashes and restarts: a killed leader is replaced and writes go on; a whole cluster
//! restarted from its data dirs comes back with identical state; a follower stopped during
//! a stream of writes catches up when it returns.

mod common;
use anyhow::{Result, ensure};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_is_replaced_and_writes_go_on() -> Result<()> {
    init_tracing();
    let mut c = TestCluster::new(3, |_| {})?;
    c.start_all().await?;
    let old = c.wait_leader().await?;
    c.wait_all(|s| s.bootstrapped).await?;
    c.node(c.index_of(old)).write(put("before", 1)).await?;

    c.kill(c.index_of(old));
    let new = c.wait_leader().await?;
    ensure!(new != old, "a new leader after the kill");

    // A write through any survivor commits with two of three nodes.
    let any = c.other_than(old);
    c.node(any).write(put("after", 2)).await?;
    c.wait_all(|s| s.farms.contains_key("before") && s.farms.contains_key("after"))
        .await?;

    // The old leader comes back from its data dir and learns what it missed.
    c.start(c.index_of(old)).await?;
    c.wait_state(c.index_of(old), |s| s.farms.contains_key("after"))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restart_keeps_identical_state() -> Result<()> {
    init_tracing();
    let mut c = TestCluster::new(3, |_| {})?;
    c.start_all().await?;
    c.wait_leader().await?;
    c.wait_all(|s| s.bootstrapped).await?;
    for i in 0..10 {
        c.node(i % 3).write(put(&format!("f{i}"), i % 4)).await?;
    }
    c.node(1)
        .write(cluster::Command::DeleteFarm { name: "f3".into() })
        .await?;
    c.wait_all(|s| s.farms.contains_key("f9") && !s.farms.contains_key("f3"))
        .await?;
    let before = c.node(0).state().borrow().clone();

    for i in 0..3 {
        c.kill(i);
    }
    c.start_all().await?;
    c.wait_leader().await?;
    // Every committed entry is re-applied from disk on every node.
    let want = before.clone();
    c.wait_all(move |s| *s == *want).await?;

    // And the cluster still takes writes.
    c.node(2).write(put("post-restart", 1)).await?;
    c.wait_all(|s| s.farms.contains_key("post-restart")).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_stopped_during_writes_catches_up() -> Result<()> {
    init_tracing();
    let mut c = TestCluster::new(3, |_| {})?;
    c.start_all().await?;
    let leader = c.wait_leader().await?;
    c.wait_all(|s| s.bootstrapped).await?;
    let li = c.index_of(leader);
    let fi = c.other_than(leader);

    for i in 0..40 {
        if i == 15 {
            c.kill(fi);
        }
        c.node(li).write(put(&format!("s{i}"), 1)).await?;
    }
    ensure!(c.nodes[fi].is_none());
    c.start(fi).await?;
    let want = c.node(li).state().borrow().clone();
    ensure!(want.farms.len() == 41, "40 writes plus the bootstrap farm");
    c.wait_state(fi, move |s| *s == *want).await?;
    Ok(())
}
