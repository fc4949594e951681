//! docs/design.md#inv-authenticated on a running cluster: peer RPCs sent from the client's host to
//! a lab node's peer port with a wrong token, or none, are refused with UNAUTHENTICATED — even the
//! ones that would move leadership if they got through — the refusal is logged once per peer, and
//! the cluster carries on untouched (same owner, same term everywhere).

use crate::common::{ClusterLab, can_run_lab, web_and_echo};
use lab::{PEER_PORT, scrape};
use proto::raft::v1::raft_peer_client::RaftPeerClient;
use proto::raft::v1::{RaftPayload, TransferLeaderRequest, TriggerElectionRequest};
use std::time::Duration;
use tonic::Code;

/// Adds `authorization: Bearer <token>` when a token is given.
fn with_token<T>(token: Option<&str>, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = token {
        let value = format!("Bearer {t}").parse().expect("ASCII header value");
        req.metadata_mut().insert("authorization", value);
    }
    req
}

/// Every RPC of `dsrlb.raft.v1` with `token`; the status code of each answer (`Ok` if one
/// was accepted).
async fn call_all(target: String, token: Option<&str>) -> Vec<(&'static str, Code)> {
    let mut client = match RaftPeerClient::connect(target.clone()).await {
        Ok(c) => c,
        Err(e) => panic!("connect to {target}: {e}"),
    };
    let code = |r: Result<(), tonic::Status>| r.err().map_or(Code::Ok, |s| s.code());
    let payload = || RaftPayload {
        payload: vec![0xde, 0xad],
    };
    vec![
        (
            "vote",
            code(client.vote(with_token(token, payload())).await.map(drop)),
        ),
        (
            "append_entries",
            code(
                client
                    .append_entries(with_token(token, payload()))
                    .await
                    .map(drop),
            ),
        ),
        (
            "install_snapshot",
            code(
                client
                    .install_snapshot(with_token(token, payload()))
                    .await
                    .map(drop),
            ),
        ),
        (
            "client_write",
            code(
                client
                    .client_write(with_token(token, payload()))
                    .await
                    .map(drop),
            ),
        ),
        (
            "transfer_leader",
            code(
                client
                    .transfer_leader(with_token(token, TransferLeaderRequest { to: None }))
                    .await
                    .map(drop),
            ),
        ),
        (
            "trigger_election",
            code(
                client
                    .trigger_election(with_token(
                        token,
                        TriggerElectionRequest {
                            from: 9,
                            term: 999,
                            after_lease: false,
                            hold_only: false,
                        },
                    ))
                    .await
                    .map(drop),
            ),
        ),
    ]
}

#[test]
fn peer_calls_with_a_bad_token_are_refused_and_change_nothing() {
    if !can_run_lab() {
        return;
    }
    let c = ClusterLab::start(3, 2, &web_and_echo(2), &[]);
    let owner = c.sole_owner();
    let follower = (owner + 1) % 3;
    let all = [0, 1, 2];
    let terms = |c: &ClusterLab| -> Vec<f64> {
        all.iter()
            .map(|&i| scrape(&c.lab.nodes()[i]).map_or(-1.0, |m| m.get("dsrlb_raft_term", &[])))
            .collect()
    };
    let terms_before = terms(&c);

    // The leader (transfer_leader would move leadership) and a follower (trigger_election
    // would start an election), each with a wrong token and with none.
    let targets: Vec<String> = [owner, follower]
        .iter()
        .map(|&i| format!("http://{}:{PEER_PORT}", c.lab.nodes()[i].ip))
        .collect();
    let token = std::fs::read_to_string(c.lab.cluster_token_file().unwrap())
        .unwrap()
        .trim()
        .to_owned();
    let answers = c.lab.clients()[0].run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async {
            let mut out = Vec::new();
            for target in &targets {
                for token in [Some("not-the-cluster-token"), None, Some("")] {
                    for (rpc, code) in call_all(target.clone(), token).await {
                        out.push((target.clone(), token.map(str::to_owned), rpc, code));
                    }
                }
            }
            // The control: the right token gets past the check, and the garbage payload is
            // then refused as a bad argument — so the refusals above were the token's doing.
            let mut client = RaftPeerClient::connect(targets[1].clone())
                .await
                .expect("connect");
            let control = client
                .vote(with_token(
                    Some(&token),
                    RaftPayload {
                        payload: vec![0xde, 0xad],
                    },
                ))
                .await
                .map(drop)
                .err()
                .map(|s| s.code());
            (out, control)
        })
    });
    let (answers, control) = answers;
    assert_eq!(control, Some(Code::InvalidArgument), "the right token");
    for (target, token, rpc, code) in &answers {
        assert_eq!(
            *code,
            Code::Unauthenticated,
            "{rpc} to {target} with token {token:?}"
        );
    }
    assert_eq!(answers.len(), 2 * 3 * 6);

    // A leader change would take at least an election timeout to show; give it several.
    std::thread::sleep(Duration::from_millis(1500));
    // The owner may let its lease lapse for a moment on a loaded machine (a stalled control
    // loop releases until it trusts Raft again); what must not happen is another owner.
    let owner_after = c.wait_owner(&all, Duration::from_secs(3));
    let owner_log = c.procs[owner].as_ref().expect("runs").read_log();
    let transitions: Vec<&str> = owner_log
        .lines()
        .filter(|l| l.contains("VIP own") || l.contains("stalled"))
        .collect();
    eprintln!("owner's ownership log:\n{}", transitions.join("\n"));
    assert_eq!(owner_after, Some(owner), "ownership moved");
    assert_eq!(terms(&c), terms_before, "a term changed");
    assert!(
        terms_before.iter().all(|t| *t >= 1.0),
        "terms {terms_before:?}"
    );

    // Logged, once per peer address, on each node that was called.
    for i in [owner, follower] {
        let log = c.procs[i].as_ref().expect("runs").read_log();
        let refusals = log
            .lines()
            .filter(|l| l.contains("refused a peer call"))
            .collect::<Vec<_>>();
        assert_eq!(
            refusals.len(),
            1,
            "node {i} logged {} refusals: {refusals:?}",
            refusals.len()
        );
        let client_ip = c.lab.clients()[0].ip.to_string();
        assert!(
            refusals[0].contains(&client_ip),
            "the refusal does not name the peer {client_ip}: {}",
            refusals[0]
        );
        assert!(
            !log.contains("not-the-cluster-token"),
            "node {i} logged the presented token"
        );
    }
}
