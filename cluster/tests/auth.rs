//! docs/design.md#inv-authenticated for the peer service: a call without the cluster token, or with
//! a wrong one, gets UNAUTHENTICATED and never reaches Raft; the right token is served.

mod common;
use anyhow::{Result, ensure};
use common::*;
use proto::raft::v1::raft_peer_client::RaftPeerClient;
use proto::raft::v1::{RaftPayload, TriggerElectionRequest};
use tonic::Code;

fn with_token(
    token: Option<&str>,
    mut req: tonic::Request<RaftPayload>,
) -> tonic::Request<RaftPayload> {
    if let Some(t) = token {
        let v = format!("Bearer {t}").parse().expect("ascii header");
        req.metadata_mut().insert(cluster::AUTH_HEADER, v);
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_calls_need_the_cluster_token() -> Result<()> {
    init_tracing();
    let mut c = TestCluster::new(1, |s| s.members.clear())?;
    c.start(0).await?;
    c.wait_leader().await?;
    let addr = c.node(0).local_addr();
    let mut client = RaftPeerClient::connect(format!("http://{addr}")).await?;

    // Every RPC kind, missing and wrong token: refused before decoding anything.
    for token in [None, Some("wrong-token"), Some("")] {
        let r = client
            .vote(with_token(
                token,
                tonic::Request::new(RaftPayload {
                    payload: vec![1, 2, 3],
                }),
            ))
            .await;
        ensure!(
            r.as_ref().err().map(|s| s.code()) == Some(Code::Unauthenticated),
            "vote with {token:?}: {r:?}"
        );
        let r = client
            .append_entries(with_token(
                token,
                tonic::Request::new(RaftPayload { payload: vec![] }),
            ))
            .await;
        ensure!(r.err().map(|s| s.code()) == Some(Code::Unauthenticated));
        let r = client
            .client_write(with_token(
                token,
                tonic::Request::new(RaftPayload { payload: vec![] }),
            ))
            .await;
        ensure!(r.err().map(|s| s.code()) == Some(Code::Unauthenticated));
        let r = client
            .pre_vote(with_token(
                token,
                tonic::Request::new(RaftPayload { payload: vec![] }),
            ))
            .await;
        ensure!(r.err().map(|s| s.code()) == Some(Code::Unauthenticated));
        let r = client
            .trigger_election(TriggerElectionRequest {
                from: 9,
                term: 99,
                after_lease: false,
                hold_only: false,
            })
            .await;
        ensure!(r.err().map(|s| s.code()) == Some(Code::Unauthenticated));
    }

    // The right token gets through to the service (which then judges the payload).
    let r = client
        .vote(with_token(
            Some(TOKEN),
            tonic::Request::new(RaftPayload {
                payload: vec![0xff; 3],
            }),
        ))
        .await;
    ensure!(
        r.err().map(|s| s.code()) == Some(Code::InvalidArgument),
        "authenticated garbage is a bad argument"
    );

    // The refused calls changed nothing: still the one leader at term 1.
    let m = c.node(0).raft_metrics().borrow().clone();
    ensure!(m.current_leader == Some(1) && m.current_term == 1, "{m:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_different_tokens_do_not_form_a_cluster() -> Result<()> {
    init_tracing();
    let mut c = TestCluster::new(2, |s| {
        if s.node_id == 2 {
            s.token = "another-token".into();
        }
    })?;
    c.start_all().await?;
    // Node 1 initializes but can never win node 2's vote: no leader in two nodes.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    ensure!(
        c.node(1).leader().is_none(),
        "node 2 never heard from node 1"
    );
    ensure!(!c.node(1).state().borrow().bootstrapped);
    Ok(())
}
