//! Membership changes as the admin API will call them, from any node: a new node joins as a
//! learner, is promoted to voter, receives the state, and a voter is removed.

mod common;
use anyhow::{Result, ensure};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_joins_is_promoted_and_a_voter_is_removed() -> Result<()> {
    init_tracing();
    let mut c = TestCluster::new(4, |_| {})?;
    // Nodes 1-3 form the cluster; node 4 lists everyone (itself included) and, not being
    // the lowest id, waits to be contacted.
    let first_three: Vec<_> = c.settings[0].members[..3].to_vec();
    for s in &mut c.settings[..3] {
        s.members = first_three.clone();
    }
    for i in 0..3 {
        c.start(i).await?;
    }
    let leader = c.wait_leader().await?;
    c.wait_all(|s| s.bootstrapped).await?;
    c.node(0).write(put("existing", 2)).await?;
    c.start(3).await?;

    // Asked through a follower: forwarded to the leader.
    let via = c.other_than(leader);
    let addr4 = c.settings[3].listen;
    let m = c.node(via).add_learner(4, addr4).await?;
    ensure!(m.learners.contains(&4) && !m.voters.contains(&4), "{m:?}");
    let m = c.node(via).promote(4).await?;
    ensure!(m.voters.contains(&4), "{m:?}");
    c.wait_state(3, |s| s.farms.contains_key("existing") && s.bootstrapped)
        .await?;

    // Remove a voter that is not the leader; the rest keep working.
    let victim = (1..=3).find(|id| *id != leader).unwrap_or(3);
    let m = c.node(c.index_of(leader)).remove_member(victim).await?;
    ensure!(
        !m.voters.contains(&victim) && !m.nodes.contains_key(&victim),
        "{m:?}"
    );
    c.kill(c.index_of(victim));
    c.node(3).write(put("after-removal", 1)).await?;
    c.wait_all(|s| s.farms.contains_key("after-removal"))
        .await?;
    let view = c.node(3).membership();
    ensure!(
        view.voters.len() == 3 && view.voters.contains(&4),
        "{view:?}"
    );
    Ok(())
}
