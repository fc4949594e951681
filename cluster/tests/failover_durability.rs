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

/// Encodes like the peer service's codec (bincode 2, standard config).
fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    Ok(bincode::serde::encode_to_vec(
        v,
        bincode::config::standard(),
    )?)
}

fn authed(payload: Vec<u8>) -> tonic::Request<proto::raft::v1::RaftPayload> {
    let mut req = tonic::Request::new(proto::raft::v1::RaftPayload { payload });
    let v = format!("Bearer {TOKEN}").parse().expect("ascii header");
    req.metadata_mut().insert(cluster::AUTH_HEADER, v);
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_grants_no_vote_within_a_lease_of_its_start() -> Result<()> {
    init_tracing();
    // A long lease, so the node is surely still young when the requests arrive.
    let lease = std::time::Duration::from_secs(3);
    let mut c = TestCluster::new(3, |s| s.election_timeout.1 = lease)?;
    c.start_all().await?;
    let leader = c.wait_leader().await?;
    c.wait_all(|s| s.bootstrapped).await?;
    let term = c
        .node(c.index_of(leader))
        .raft_metrics()
        .borrow()
        .current_term;
    let f = c.other_than(leader);
    c.kill(f);
    let before_start = std::time::Instant::now();
    c.start(f).await?;
    let addr = c.node(f).local_addr();
    let mut client =
        proto::raft::v1::raft_peer_client::RaftPeerClient::connect(format!("http://{addr}"))
            .await?;

    // A pre-vote (candidate 9, any log) is refused because the node is young: without that
    // rule openraft, which has no record of the last heartbeat, would say yes at once.
    let no_log: Option<openraft::LogId<u64>> = None;
    let reply = client.pre_vote(authed(encode(&(9u64, no_log))?)).await?;
    let (granted, reason): (bool, String) = bincode::serde::decode_from_slice(
        &reply.into_inner().payload,
        bincode::config::standard(),
    )?
    .0;
    ensure!(!granted, "a node restarted just now granted a pre-vote");
    ensure!(
        reason.contains("started"),
        "refused for another reason: {reason}"
    );

    // A real vote request is not answered before a lease has passed since the start.
    ensure!(
        before_start.elapsed() < lease,
        "the restart took longer than the lease; nothing left to test"
    );
    let stale = openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(0, 9), None);
    client.vote(authed(encode(&stale)?)).await?;
    ensure!(
        before_start.elapsed() >= lease,
        "answered a vote {:?} after its start, inside the lease",
        before_start.elapsed()
    );

    // None of this moved the cluster: same leader, same term.
    ensure!(c.wait_leader().await? == leader);
    let now = c
        .node(c.index_of(leader))
        .raft_metrics()
        .borrow()
        .current_term;
    ensure!(now == term, "term moved from {term} to {now}");
    Ok(())
}

/// docs/design.md#vip-ownership step 2: a leader whose quorum is fresh refuses a real vote
/// for a higher term (openraft alone would grant it and step down while the leader's
/// workers may still hold a lease), and stays leader in its term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_with_a_fresh_quorum_refuses_a_higher_vote() -> Result<()> {
    init_tracing();
    let mut c = TestCluster::new(3, |_| {})?;
    c.start_all().await?;
    let leader = c.wait_leader().await?;
    c.wait_all(|s| s.bootstrapped).await?;
    let li = c.index_of(leader);
    // Past openraft's own lease on the leader's vote (600 ms here), which dates from its
    // election: from here on openraft alone would grant.
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    let term = c.node(li).raft_metrics().borrow().current_term;
    let addr = c.node(li).local_addr();
    let mut client =
        proto::raft::v1::raft_peer_client::RaftPeerClient::connect(format!("http://{addr}"))
            .await?;
    // A candidate (a voter other than the leader) two terms ahead, with the longest log.
    let candidate = c.node(c.other_than(leader)).id();
    let long_log = Some(openraft::LogId::new(
        openraft::CommittedLeaderId::new(term + 1, candidate),
        u64::MAX / 2,
    ));
    let req =
        openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(term + 2, candidate), long_log);
    let reply = client.vote(authed(encode(&req)?)).await?;
    let resp: Result<openraft::raft::VoteResponse<u64>, openraft::error::RaftError<u64>> =
        bincode::serde::decode_from_slice(
            &reply.into_inner().payload,
            bincode::config::standard(),
        )?
        .0;
    let resp = resp.map_err(|e| anyhow::anyhow!("vote failed: {e}"))?;
    ensure!(!resp.vote_granted, "the leader granted {resp:?}");
    ensure!(c.wait_leader().await? == leader, "leadership moved");
    let now = c.node(li).raft_metrics().borrow().current_term;
    ensure!(now == term, "term moved from {term} to {now}");
    Ok(())
}
