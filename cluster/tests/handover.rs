//! Planned leadership changes: a transfer moves the leader to the named node (or the best
//! other voter, asked from a follower); a clean shutdown of the leader hands over; a witness
//! never stays leader, and two LB nodes plus a witness survive the loss of either LB node.

mod common;
use anyhow::{Result, bail, ensure};
use cluster::ServerState;
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_moves_the_leader_to_the_named_node() -> Result<()> {
    init_tracing();
    let mut c = TestCluster::new(3, |_| {})?;
    c.start_all().await?;
    let first = c.wait_leader().await?;
    c.wait_all(|s| s.bootstrapped).await?;

    let target = (1..=3).find(|id| *id != first).unwrap_or(1);
    let new = c
        .node(c.index_of(first))
        .transfer_leadership(Some(target))
        .await?;
    ensure!(new == target, "leader is {new}, asked for {target}");
    ensure!(c.wait_leader().await? == target);

    // Asked on a follower, with no target: the leader picks another voter.
    let follower = c.other_than(target);
    let next = c.node(follower).transfer_leadership(None).await?;
    ensure!(next != target, "leadership moved away from {target}");
    ensure!(c.wait_leader().await? == next);

    // Writes work right after a handover.
    c.node(0).write(put("after-transfer", 1)).await?;
    c.wait_all(|s| s.farms.contains_key("after-transfer"))
        .await?;

    // A clean shutdown of the leader hands over instead of leaving an election to time out.
    let li = c.index_of(next);
    let node = c.nodes[li].take().expect("leader running");
    node.shutdown().await?;
    let after = c.wait_leader().await?;
    ensure!(after != next);
    Ok(())
}

/// Samples the leader for `period`; fails if `witness` is leader at two samples more than one
/// election apart (it may lead briefly while it hands over).
async fn witness_never_stays(c: &TestCluster, witness: u64, period: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + period;
    let mut leading_since: Option<tokio::time::Instant> = None;
    while tokio::time::Instant::now() < deadline {
        let wi = c.index_of(witness);
        let leads = c.nodes[wi]
            .as_ref()
            .is_some_and(|n| n.raft_metrics().borrow().state == ServerState::Leader);
        match (leads, leading_since) {
            (true, None) => leading_since = Some(tokio::time::Instant::now()),
            (true, Some(t)) if t.elapsed() > Duration::from_secs(3) => {
                bail!("witness {witness} stayed leader")
            }
            (false, _) => leading_since = None,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_never_stays_leader() -> Result<()> {
    init_tracing();
    // Node 1 is the witness and the lowest id: it initializes, is elected, and must hand over.
    let mut c = TestCluster::new(3, |s| s.witness = s.node_id == 1)?;
    c.start_all().await?;
    ensure!(c.node(0).is_witness() && !c.node(1).is_witness());
    let deadline = tokio::time::Instant::now() + WAIT;
    let leader = loop {
        let l = c.wait_leader().await?;
        if l != 1 {
            break l;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the witness kept the leadership");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    c.wait_all(|s| s.bootstrapped).await?;
    witness_never_stays(&c, 1, Duration::from_secs(2)).await?;

    // A transfer to the witness is refused and leaves a non-witness leader.
    let r = c
        .node(c.index_of(leader))
        .transfer_leadership(Some(1))
        .await;
    ensure!(r.is_err(), "handing over to a witness must fail: {r:?}");
    let l = c.wait_leader().await?;
    ensure!(l != 1);

    // Two LB nodes + witness: kill the leading LB node, the other LB node takes over.
    c.kill(c.index_of(l));
    let survivor = c.wait_leader().await?;
    ensure!(
        survivor != 1 && survivor != l,
        "leader after the kill: {survivor}"
    );
    witness_never_stays(&c, 1, Duration::from_secs(2)).await?;
    c.node(c.index_of(survivor))
        .write(put("two-of-three", 1))
        .await?;
    c.wait_all(|s| s.farms.contains_key("two-of-three")).await?;
    Ok(())
}

/// Transfers to every other voter in turn, `rounds` times: each must land on its target.
async fn transfers_land(voters: usize, rounds: usize) -> Result<()> {
    let mut c = TestCluster::new(voters, |_| {})?;
    c.start_all().await?;
    let mut leader = c.wait_leader().await?;
    c.wait_all(|s| s.bootstrapped).await?;
    for round in 0..rounds {
        // The next voter after the leader, round-robin: every node is a target in turn.
        let target = leader % voters as u64 + 1;
        let new = c
            .node(c.index_of(leader))
            .transfer_leadership(Some(target))
            .await?;
        ensure!(
            new == target,
            "{voters} voters, round {round}: leader is {new}, asked for {target}"
        );
        ensure!(c.wait_leader().await? == target);
        leader = target;
    }
    // And the cluster still commits.
    c.node(0).write(put("after-transfers", 1)).await?;
    c.wait_all(|s| s.farms.contains_key("after-transfers"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_lands_on_3_4_and_5_voters_every_time() -> Result<()> {
    init_tracing();
    // With four or more voters the candidate and the leader are no quorum: the leader stops
    // its heartbeats and the candidate waits out the other followers' leases.
    for voters in [3, 4, 5] {
        transfers_land(voters, 5).await?;
    }
    Ok(())
}
