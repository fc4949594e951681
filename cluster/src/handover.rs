//! Leadership transfer, which openraft 0.9 has no call for, and the witness rule built on it.
//!
//! # How a handover works, and why each step is there
//! 1. The leader stops accepting writes (`Shared::handing_over`), so its log cannot move
//!    ahead of the chosen follower: a voter refuses a candidate whose log is behind its own.
//! 2. It waits out its own *leader lease*. In openraft 0.9 a node whose vote is committed
//!    refuses every vote request until `leader_lease` (= `election_timeout_max`) has passed
//!    since its vote last changed (`Engine::handle_vote_req`). Followers refresh that instant
//!    on every heartbeat, so they refuse the candidate; the leader's own vote changed only
//!    when it was elected, so it grants the vote once it has led for longer than the lease —
//!    immediately for a settled leader, at most `election_timeout_max` right after an
//!    election. The leader's grant plus the candidate's own vote is a quorum of three (and
//!    of two); the followers then accept the new leader's higher term from its first
//!    append-entries, with no lease check on that path.
//! 3. It waits until the chosen follower has every entry (bounded), then sends it
//!    `TriggerElection`; the follower calls `trigger().elect()`. A witness or non-voter
//!    refuses, and the next candidate (most up to date first) is tried.
//! 4. Granting the vote turns the old leader into a follower at once; the call returns when
//!    metrics show another leader. The whole handover costs about one round trip, far less
//!    than the election timeout a crash would cost.
//!
//! Two additions make this hold beyond three voters and with a live VIP:
//! - **Release first.** The node above stops owning the VIP while `handing_over` is set, but
//!   its loop may lag; unless the caller says the VIP is already released (shutdown
//!   releases before it hands over), the leader waits the VIP lease out after setting the
//!   flag. Any deadline the loop gave its workers came from an acknowledgement older than
//!   the flag, so it has passed: the old owner is silent before anyone can be elected.
//! - **Four voters or more.** The candidate's vote and the leader's are no quorum there, and
//!   every other follower refuses inside its lease, refreshed by each heartbeat. So the
//!   leader stops its heartbeats and asks the candidate to start its election once its own
//!   lease has run out (`after_lease`); the other followers' leases run out at the same time
//!   (they heard the same last heartbeat), and they grant. Before that the leader asks every
//!   other voter to hold its elector for three leases (`hold_only`); held voters, the
//!   candidate and the leader refuse pre-votes, so no other voter's elector (see `elector`)
//!   gets there first. The candidate campaigns again if a voter that heard the last
//!   heartbeat slightly later still refused.

use crate::error::ClusterError;
use crate::shared::{HandingOver, Shared};
use crate::types::NodeId;
use openraft::ServerState;
use proto::raft::v1::{TransferLeaderRequest, TriggerElectionRequest};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, timeout};

/// Transfers leadership from whoever leads to `to` (or the best candidate) and returns the
/// new leader. On a follower the request goes to the leader over `TransferLeader`.
pub(crate) async fn transfer(shared: &Shared, to: Option<NodeId>) -> Result<NodeId, ClusterError> {
    let started = Instant::now();
    let deadline = started + shared.timing.leader_deadline();
    let mut last = String::from("no leader known");
    while Instant::now() < deadline {
        let m = shared.metrics();
        match m.current_leader {
            Some(l) if Some(l) == to => return Ok(l),
            // Called through the admin API: this node may still own the VIP.
            Some(l) if l == shared.id => return hand_over(shared, to, false).await,
            Some(l) => match ask_leader(shared, l, to, deadline - Instant::now()).await {
                Ok(new) => return Ok(new),
                Err(e) => last = e,
            },
            None => {}
        }
        sleep(shared.timing.heartbeat).await;
    }
    Err(ClusterError::Transfer {
        target: to,
        reason: format!(
            "no leader carried it out in {:?}: {last}",
            started.elapsed()
        ),
    })
}

async fn ask_leader(
    shared: &Shared,
    leader: NodeId,
    to: Option<NodeId>,
    within: Duration,
) -> Result<NodeId, String> {
    let mut client = shared.peer(leader).map_err(|e| e.to_string())?;
    let mut req = tonic::Request::new(TransferLeaderRequest { to });
    req.set_timeout(within);
    match client.transfer_leader(req).await {
        Ok(r) => Ok(r.into_inner().leader),
        Err(s) => Err(format!("leader {leader}: {}: {}", s.code(), s.message())),
    }
}

/// Runs the handover on this node, which must be the leader. `vip_released`: the caller
/// has already stopped this node's VIP ownership (otherwise the VIP lease is waited out).
#[tracing::instrument(skip(shared), fields(node = shared.id, term = shared.metrics().current_term))]
pub(crate) async fn hand_over(
    shared: &Shared,
    to: Option<NodeId>,
    vip_released: bool,
) -> Result<NodeId, ClusterError> {
    let err = |target, reason: String| ClusterError::Transfer { target, reason };
    let _one_at_a_time = shared.handover_lock.lock().await;
    let m = shared.metrics();
    if m.state != ServerState::Leader {
        return Err(err(to, "this node is not the leader".into()));
    }
    let membership = m.membership_config.membership();
    let candidates: Vec<NodeId> = match to {
        Some(t) if t == shared.id => return Ok(t),
        Some(t) if membership.voter_ids().any(|v| v == t) => vec![t],
        Some(t) => return Err(err(Some(t), "not a voter".into())),
        None => {
            let matched = |id: &NodeId| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(id).copied().flatten())
            };
            let mut v: Vec<NodeId> = membership.voter_ids().filter(|v| *v != shared.id).collect();
            // Most up to date first: the one most likely to win at once.
            v.sort_by_key(|id| std::cmp::Reverse(matched(id)));
            v
        }
    };
    if candidates.is_empty() {
        return Err(err(None, "no other voter to hand over to".into()));
    }
    let _pause = HandingOver::begin(shared);
    if !vip_released {
        sleep(shared.timing.vip_lease).await;
    }
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    // Our vote and the candidate's: a quorum only for up to three voters.
    let after_lease = voters.len() / 2 + 1 > 2;
    wait_own_lease(shared, shared.timing.heartbeat).await?;
    let mut last = String::new();
    let mut quiet = None;
    for cand in candidates {
        if !caught_up(shared, cand).await {
            last = format!("node {cand} did not catch up");
            continue;
        }
        if after_lease {
            // Only now, with the candidate ready: the holds and the silence must outlast
            // its lease wait and its election, not a catch-up of unknown length.
            hold_others(shared, &voters, cand).await;
            quiet.get_or_insert_with(|| HeartbeatsOff::begin(shared));
        }
        match trigger(shared, cand, after_lease).await {
            Ok(()) => {}
            Err(e) => {
                last = e;
                continue;
            }
        }
        tracing::info!(target_node = cand, "asked to take over");
        match wait_leader_other_than_me(shared).await {
            Some(new) => {
                tracing::info!(new_leader = new, "leadership handed over");
                return Ok(new);
            }
            None => last = format!("node {cand} did not become leader"),
        }
        if shared.metrics().state != ServerState::Leader {
            break;
        }
    }
    // If we lost leadership on the way, a new leader still comes out of the election.
    if let Some(new) = wait_leader_other_than_me(shared).await {
        return Ok(new);
    }
    Err(err(to, last))
}

/// Stops this leader's heartbeats for as long as it lives (a handover in a cluster of four
/// or more voters); they resume however the handover ends.
struct HeartbeatsOff<'a>(&'a Shared);

impl<'a> HeartbeatsOff<'a> {
    fn begin(shared: &'a Shared) -> Self {
        shared.raft.runtime_config().heartbeat(false);
        HeartbeatsOff(shared)
    }
}

impl Drop for HeartbeatsOff<'_> {
    fn drop(&mut self) {
        self.0.raft.runtime_config().heartbeat(true);
    }
}

/// Sleeps until this node would grant a vote request: openraft refuses one until
/// `election_timeout_max` has passed since the vote last changed — for a leader its
/// election, for a follower the leader's last heartbeat (see step 2 of the module doc).
pub(crate) async fn wait_own_lease(shared: &Shared, margin: Duration) -> Result<(), ClusterError> {
    let lease = shared.timing.election_max;
    let since = shared
        .raft
        .with_raft_state(|st| st.vote_last_modified().map(|t| t.elapsed()))
        .await
        .map_err(|e| ClusterError::Raft {
            stage: "leader transfer",
            reason: e.to_string(),
        })?;
    if let Some(since) = since
        && since < lease
    {
        // Some margin: the comparison in openraft is `now <= utime + lease`.
        sleep(lease - since + margin).await;
    }
    Ok(())
}

/// Waits (bounded) until `cand` has every entry this leader has.
async fn caught_up(shared: &Shared, cand: NodeId) -> bool {
    let mut rx = shared.raft.metrics();
    let check = |m: &crate::types::RaftMetrics| {
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&cand).copied().flatten());
        matched.map(|l| l.index) == m.last_log_index
    };
    wait_for(&mut rx, shared.timing.election_max * 4, check).await
}

/// Asks every voter but this one and `cand` to hold its elector (`hold_only`), so that only
/// `cand` campaigns while heartbeats are off. Asked all at once; a voter that cannot be
/// reached cannot campaign either, so it is only logged.
async fn hold_others(shared: &Shared, voters: &[NodeId], cand: NodeId) {
    let term = shared.metrics().current_term;
    let mut calls = tokio::task::JoinSet::new();
    for &v in voters.iter().filter(|v| **v != shared.id && **v != cand) {
        let Ok(mut client) = shared.peer(v) else {
            continue;
        };
        let mut req = tonic::Request::new(TriggerElectionRequest {
            from: shared.id,
            term,
            after_lease: false,
            hold_only: true,
        });
        req.set_timeout(shared.timing.election_max / 2);
        calls.spawn(async move { (v, client.trigger_election(req).await) });
    }
    while let Some(done) = calls.join_next().await {
        if let Ok((v, Err(s))) = done {
            tracing::debug!(voter = v, error = %s.message(), "could not ask a voter to hold");
        }
    }
}

async fn trigger(shared: &Shared, cand: NodeId, after_lease: bool) -> Result<(), String> {
    let m = shared.metrics();
    let mut client = shared.peer(cand).map_err(|e| e.to_string())?;
    let mut req = tonic::Request::new(TriggerElectionRequest {
        from: shared.id,
        term: m.current_term,
        after_lease,
        hold_only: false,
    });
    req.set_timeout(shared.timing.election_max * 2);
    let reply = client
        .trigger_election(req)
        .await
        .map_err(|s| format!("node {cand}: {}: {}", s.code(), s.message()))?
        .into_inner();
    if reply.accepted {
        Ok(())
    } else {
        Err(format!("node {cand} refused: {}", reply.reason))
    }
}

async fn wait_leader_other_than_me(shared: &Shared) -> Option<NodeId> {
    let mut rx = shared.raft.metrics();
    let me = shared.id;
    let ok = wait_for(&mut rx, shared.timing.election_max * 4, |m| {
        m.current_leader.is_some_and(|l| l != me)
    })
    .await;
    if ok {
        shared.metrics().current_leader
    } else {
        None
    }
}

/// Waits until `f` holds for the metrics, at most `within`.
pub(crate) async fn wait_for<F>(
    rx: &mut watch::Receiver<crate::types::RaftMetrics>,
    within: Duration,
    f: F,
) -> bool
where
    F: Fn(&crate::types::RaftMetrics) -> bool,
{
    timeout(within, rx.wait_for(|m| f(m)))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// The witness rule: whenever this witness finds itself leading, it hands over at once.
/// Runs until `stop` fires.
pub(crate) async fn witness_guard(shared: std::sync::Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut rx = shared.raft.metrics();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            r = rx.wait_for(|m| m.state == ServerState::Leader) => {
                if r.is_err() {
                    return;
                }
            }
        }
        tracing::info!(
            node = shared.id,
            "a witness was elected leader; handing over"
        );
        // A witness never owns a VIP: nothing to release.
        if let Err(e) = hand_over(&shared, None, true).await {
            tracing::warn!(node = shared.id, error = %e, "witness could not hand over yet; retrying");
            tokio::select! {
                _ = stop.changed() => return,
                _ = sleep(shared.timing.election_max) => {}
            }
        }
    }
}
