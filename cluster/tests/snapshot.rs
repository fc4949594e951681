//! Snapshots and log purge: after enough entries a snapshot is built and the log prefix
//! purged; a node that was away while the leader purged is caught up by snapshot and
//! restarts from it.

mod common;
use anyhow::{Context, Result, ensure};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_purge_and_catch_up_by_snapshot() -> Result<()> {
    init_tracing();
    let mut c = TestCluster::new(3, |s| {
        s.snapshot_every = 20;
        s.keep_logs = 5;
    })?;
    c.start_all().await?;
    let leader = c.wait_leader().await?;
    c.wait_all(|s| s.bootstrapped).await?;
    let li = c.index_of(leader);
    let lagging = c.other_than(leader);
    c.kill(lagging);

    for i in 0..80 {
        c.node(li).write(put(&format!("p{i}"), 1)).await?;
    }
    // The leader snapshotted and purged its log.
    let mut rx = c.node(li).raft_metrics();
    let m = tokio::time::timeout(
        WAIT,
        rx.wait_for(|m| m.snapshot.is_some() && m.purged.is_some()),
    )
    .await
    .context("leader builds a snapshot and purges within the wait")??
    .clone();
    let purged = m.purged.map(|l| l.index).unwrap_or(0);
    ensure!(purged > 10, "log purged up to {purged}");

    // The lagging node needs entries the leader no longer has: only a snapshot helps.
    c.start(lagging).await?;
    let want = c.node(li).state().borrow().clone();
    let w = want.clone();
    c.wait_state(lagging, move |s| *s == *w).await?;
    let mut rx = c.node(lagging).raft_metrics();
    tokio::time::timeout(
        WAIT,
        rx.wait_for(|m| m.snapshot.is_some_and(|s| s.index >= purged)),
    )
    .await
    .context("lagging node holds a snapshot covering the purged range")??;

    // It restarts from its own snapshot + log with the same state.
    c.kill(lagging);
    c.start(lagging).await?;
    c.wait_state(lagging, move |s| *s == *want).await?;
    Ok(())
}
