//! Requests that only the leader can carry out — application writes and membership changes —
//! and how any node gets them done: run them locally when this node leads, otherwise send
//! them to the leader over `ClientWrite`, following leader changes until a deadline. The
//! caller never has to retry elsewhere. The wire shapes (`Forward`, `Refused`) live here only.

use crate::codec;
use crate::error::ClusterError;
use crate::shared::Shared;
use crate::state::{Command, InvalidCommand};
use crate::types::{Applied, Node, NodeId};
use openraft::error::{ChangeMembershipError, CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Membership};
use proto::raft::v1::RaftPayload;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use tokio::time::{Instant, sleep};

/// Upper bound on attempts of one forwarded request, next to its deadline.
const MAX_ATTEMPTS: u32 = 1000;

/// How long the leader waits for a new learner to catch up; below the few seconds a
/// forwarded request may take in all.
const LEARNER_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(4);

/// A request for the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Forward {
    /// Boxed: a command holds whole farms (serde encodes a box as its contents).
    Write(Box<Command>),
    AddLearner {
        id: NodeId,
        addr: String,
    },
    Promote {
        id: NodeId,
    },
    Remove {
        id: NodeId,
    },
    /// The leader's read index: once a node has applied it, its replica holds every write
    /// acknowledged before the request (a linearizable starting point for a check).
    ReadIndex,
}

/// The leader's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ForwardReply {
    Applied(Applied),
    Membership(MembershipView),
    ReadIndex(u64),
}

/// Why the leader (or the node believed to lead) did not carry a request out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Refused {
    /// Not (or no longer) the leader, or handing over: try the leader again shortly.
    NotLeader,
    Invalid(InvalidCommand),
    Membership {
        reason: String,
        retryable: bool,
    },
    Fatal(String),
}

/// The cluster membership as the leader committed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipView {
    /// Voting members.
    pub voters: BTreeSet<NodeId>,
    /// Non-voting members being replicated to.
    pub learners: BTreeSet<NodeId>,
    /// Peer address of every member.
    pub nodes: BTreeMap<NodeId, String>,
    /// Log index of the membership entry, when it came from one.
    pub log_index: Option<u64>,
}

impl MembershipView {
    pub(crate) fn from_membership(m: &Membership<NodeId, Node>, log_index: Option<u64>) -> Self {
        let voters: BTreeSet<NodeId> = m.voter_ids().collect();
        MembershipView {
            learners: m.learner_ids().filter(|id| !voters.contains(id)).collect(),
            voters,
            nodes: m.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
            log_index,
        }
    }
}

fn refused_membership<E: std::fmt::Display>(
    e: RaftError<NodeId, ClientWriteError<NodeId, Node>>,
    what: E,
) -> Refused {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Refused::NotLeader,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => Refused::Membership {
            retryable: matches!(c, ChangeMembershipError::InProgress(_)),
            reason: format!("{what}: {c}"),
        },
        RaftError::Fatal(f) => Refused::Fatal(f.to_string()),
    }
}

/// Carries `req` out on this node, which is expected to lead.
pub(crate) async fn execute_local(shared: &Shared, req: Forward) -> Result<ForwardReply, Refused> {
    let raft = &shared.raft;
    match req {
        Forward::Write(cmd) => {
            cmd.validate().map_err(Refused::Invalid)?;
            if shared.is_handing_over() {
                return Err(Refused::NotLeader);
            }
            match raft.client_write(*cmd).await {
                Ok(r) => Ok(ForwardReply::Applied(r.data)),
                Err(e) => Err(refused_membership(e, "write")),
            }
        }
        Forward::AddLearner { id, addr } => {
            // openraft's blocking add_learner gives up waiting after a short while without
            // saying so; the wait for the learner to catch up is done here, so a promote
            // right after it does not make a voter of a node that has nothing yet.
            let r = raft
                .add_learner(id, Node { addr }, false)
                .await
                .map_err(|e| refused_membership(e, format!("add learner {id}")))?;
            let index = r.log_id.index;
            let mut rx = raft.metrics();
            let caught_up = tokio::time::timeout(
                LEARNER_CATCH_UP,
                rx.wait_for(|m| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id).cloned().flatten())
                        .is_some_and(|l| l.index >= index)
                }),
            )
            .await;
            if !matches!(caught_up, Ok(Ok(_))) {
                return Err(Refused::Membership {
                    reason: format!(
                        "node {id} was added as a learner but did not catch up within {LEARNER_CATCH_UP:?} (is it running and reachable?); it stays a learner"
                    ),
                    retryable: true,
                });
            }
            let m = r
                .membership
                .unwrap_or_else(|| shared.metrics().membership_config.membership().clone());
            Ok(ForwardReply::Membership(MembershipView::from_membership(
                &m,
                Some(index),
            )))
        }
        Forward::Promote { id } => {
            let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
            let r = raft
                .change_membership(change, false)
                .await
                .map_err(|e| refused_membership(e, format!("promote {id}")))?;
            let m = r
                .membership
                .unwrap_or_else(|| shared.metrics().membership_config.membership().clone());
            Ok(ForwardReply::Membership(MembershipView::from_membership(
                &m,
                Some(r.log_id.index),
            )))
        }
        Forward::ReadIndex => match raft.ensure_linearizable().await {
            Ok(log_id) => Ok(ForwardReply::ReadIndex(log_id.map_or(0, |l| l.index))),
            // Not leading, or no quorum right now: the sender tries again (bounded).
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))
            | Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                Err(Refused::NotLeader)
            }
            Err(RaftError::Fatal(f)) => Err(Refused::Fatal(f.to_string())),
        },
        Forward::Remove { id } => {
            let is_voter = shared
                .metrics()
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == id);
            // `retain = false`: a removed voter leaves the membership altogether instead of
            // lingering as a learner that still receives every entry.
            let change = if is_voter {
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            };
            let r = raft
                .change_membership(change, false)
                .await
                .map_err(|e| refused_membership(e, format!("remove {id}")))?;
            let m = r
                .membership
                .unwrap_or_else(|| shared.metrics().membership_config.membership().clone());
            Ok(ForwardReply::Membership(MembershipView::from_membership(
                &m,
                Some(r.log_id.index),
            )))
        }
    }
}

async fn send_to(
    shared: &Shared,
    leader: NodeId,
    req: &Forward,
    timeout: std::time::Duration,
) -> Result<Result<ForwardReply, Refused>, String> {
    let mut client = shared.peer(leader).map_err(|e| e.to_string())?;
    let payload = codec::encode(req).map_err(|e| e.to_string())?;
    let mut request = tonic::Request::new(RaftPayload { payload });
    request.set_timeout(timeout);
    let reply = client
        .client_write(request)
        .await
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
    codec::decode(&reply.into_inner().payload).map_err(|e| e.to_string())
}

/// Gets `req` done by whoever leads, following leader changes until the deadline.
/// Writes are idempotent (put, delete, set-health, bootstrap), so a request that timed out
/// after the leader committed it is harmless to send again.
#[tracing::instrument(skip(shared, req), fields(node = shared.id, term = shared.metrics().current_term))]
pub(crate) async fn forward(
    shared: &Shared,
    req: Forward,
    stage: &'static str,
) -> Result<ForwardReply, ClusterError> {
    if let Forward::Write(cmd) = &req {
        cmd.validate()?;
    }
    let started = Instant::now();
    let deadline = started + shared.timing.leader_deadline();
    let mut last_error = String::from("no leader known");
    for _ in 0..MAX_ATTEMPTS {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let leader = shared.metrics().current_leader;
        let outcome = match leader {
            None => Err("no leader known".to_string()),
            Some(l) if l == shared.id => Ok(execute_local(shared, req.clone()).await),
            Some(l) => send_to(shared, l, &req, deadline - now)
                .await
                .map_err(|e| format!("leader {l}: {e}")),
        };
        match outcome {
            Ok(Ok(reply)) => return Ok(reply),
            Ok(Err(Refused::Invalid(e))) => return Err(ClusterError::Invalid(e)),
            Ok(Err(Refused::Membership { reason, retryable })) => {
                return Err(ClusterError::Membership { reason, retryable });
            }
            Ok(Err(Refused::Fatal(reason))) => return Err(ClusterError::Raft { stage, reason }),
            Ok(Err(Refused::NotLeader)) => {
                last_error = format!("{leader:?} is not the leader (yet)")
            }
            Err(e) => last_error = e,
        }
        // Leadership is moving or the leader is unreachable: give the election a heartbeat.
        sleep(shared.timing.heartbeat).await;
    }
    tracing::warn!(stage, last_error = %last_error, "gave up waiting for a leader");
    Err(ClusterError::NoLeader {
        stage,
        waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}
