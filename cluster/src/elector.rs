//! Our election trigger, in place of openraft's election timer (which is switched off).
//!
//! # Why not openraft's timer
//! openraft 0.9 lets a follower campaign only `leader_lease + T` after it last heard from
//! the leader, with `leader_lease = election_timeout_max` and `T` one random draw in
//! `[min, max)` made once per process, and a candidate raises its term whether or not it
//! can win. Two costs follow: a failover waits `max + T` (about twice the lease), and a node
//! cut off from the cluster keeps raising its term, so when it comes back its higher term
//! deposes a healthy leader (a second outage on every partition heal).
//!
//! # What runs instead
//! Every voter checks, every few milliseconds, how long ago its vote last changed (openraft
//! refreshes that instant on every heartbeat of the leader). Once that silence exceeds the
//! lease, plus a margin, plus `rank × step`, it asks every other voter a [`PreVote`]: would
//! you grant me a vote now? A voter says yes only if it too has not heard from a leader for
//! a lease (exactly openraft's own rule for real votes), is not itself a leader with a fresh
//! quorum, has not restarted within a lease, and the candidate's log is at least as long as
//! its own. With a quorum of yeses the voter calls `trigger().elect()`; otherwise it asks
//! again after `step`. Nothing is changed by a pre-vote, so an isolated node never raises
//! its term.
//!
//! # Rank
//! Voters other than the last leader, by id, a witness after every other voter, the last
//! leader last: the first of them campaigns at once, the others only if it did not win. No
//! random delay is needed to avoid split votes, so the failover costs the lease and little
//! more.

use crate::codec;
use crate::shared::Shared;
use crate::types::NodeId;
use openraft::storage::RaftLogStorage;
use openraft::{LogId, ServerState};
use proto::raft::v1::RaftPayload;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};

/// Asked of every other voter before an election.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PreVote {
    pub candidate: NodeId,
    pub last_log_id: Option<LogId<NodeId>>,
}

/// The answer: whether a real vote request would be granted now, and why not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PreVoteReply {
    pub granted: bool,
    pub reason: String,
}

/// What one node knows of its own vote, read from openraft's state.
struct VoteView {
    /// A leader was elected with this vote (openraft refuses votes inside its lease then).
    committed: bool,
    /// Time since the vote last changed: the last heartbeat from the leader, or the node's
    /// own vote. `None`: openraft has no record (a node just started).
    since: Option<Duration>,
    /// The leader (or candidate) the vote is for.
    voted_for: Option<NodeId>,
}

/// The id of this node's last log entry, from the log store (openraft does not expose its
/// own copy); `Err`: the store could not be read.
async fn last_log_id(shared: &Shared) -> Result<Option<LogId<NodeId>>, String> {
    let mut log = shared.log.clone();
    log.get_log_state()
        .await
        .map(|s| s.last_log_id)
        .map_err(|e| e.to_string())
}

async fn vote_view(shared: &Shared) -> Option<VoteView> {
    shared
        .raft
        .with_raft_state(|st| {
            let vote = st.vote_ref();
            VoteView {
                committed: vote.is_committed(),
                since: st.vote_last_modified().map(|t| t.elapsed()),
                voted_for: vote.leader_id().voted_for(),
            }
        })
        .await
        .ok()
}

/// The receiver's side of a pre-vote: the same judgement openraft makes of a real vote
/// request (`Engine::handle_vote_req`), plus the two cases openraft does not cover.
pub(crate) async fn judge(shared: &Shared, req: &PreVote) -> PreVoteReply {
    let refuse = |reason: String| PreVoteReply {
        granted: false,
        reason,
    };
    let lease = shared.timing.election_max;
    if shared.young_for().is_some() {
        return refuse(format!(
            "started {:?} ago, less than one lease",
            shared.started.elapsed()
        ));
    }
    if shared.in_handover() {
        return refuse("a leadership handover is under way".into());
    }
    if leads_with_fresh_quorum(shared) {
        // A leader's own vote dates from its election, so openraft would grant; but a leader
        // that a quorum still follows must not be replaced by a node that lost contact.
        return refuse("this node leads with a fresh quorum".into());
    }
    let Some(v) = vote_view(shared).await else {
        return refuse("raft core stopped".into());
    };
    if v.committed
        && let Some(since) = v.since
        && since <= lease
    {
        return refuse(format!("heard from leader {:?} {since:?} ago", v.voted_for));
    }
    let mine = match last_log_id(shared).await {
        Ok(l) => l,
        Err(e) => return refuse(format!("cannot read this node's log: {e}")),
    };
    if req.last_log_id < mine {
        return refuse(format!(
            "candidate's log ends at {:?}, this node's at {mine:?}",
            req.last_log_id
        ));
    }
    PreVoteReply {
        granted: true,
        reason: String::new(),
    }
}

/// Whether this node is the leader and a quorum acknowledged it less than a lease
/// (`election_max`) ago: the one rule both pre-votes and real votes are refused by.
fn leads_with_fresh_quorum(shared: &Shared) -> bool {
    let m = shared.metrics();
    m.state == ServerState::Leader
        && m.millis_since_quorum_ack
            .is_some_and(|ms| Duration::from_millis(ms) < shared.timing.election_max)
}

/// The leader's side of a real vote request: `Some(refusal)` while this node leads with a
/// fresh quorum and no handover is under way.
///
/// openraft refuses a vote inside the leader lease only on followers (their vote is
/// refreshed by every heartbeat); a leader's own vote dates from its election, so it grants
/// a higher term at once and steps down, while its workers may still hold a lease from the
/// last acknowledgement. A candidate whose pre-vote passed at a moment the leader's quorum
/// looked stale (starvation) could then be elected while the old leader still owned:
/// seen in CI as two owners for ~120 ms after a SIGCONT. So the leader applies the pre-vote's
/// rule to the real vote too; a handover's target is let through (the old leader released
/// first and waited a lease, docs/design.md#vip-ownership step 6).
pub(crate) async fn leader_refusal(
    shared: &Shared,
    req: &openraft::raft::VoteRequest<NodeId>,
) -> Option<openraft::raft::VoteResponse<NodeId>> {
    if shared.in_handover() {
        return None;
    }
    if !leads_with_fresh_quorum(shared) {
        return None;
    }
    let vote = shared
        .raft
        .with_raft_state(|st| *st.vote_ref())
        .await
        .ok()?;
    let last = last_log_id(shared).await.ok()?;
    tracing::info!(
        node = shared.id,
        candidate = ?req.vote,
        "vote refused: this node leads with a fresh quorum"
    );
    Some(openraft::raft::VoteResponse::new(vote, last, false))
}

/// This voter's place in the campaign order (0 campaigns first); see the module doc.
pub(crate) fn rank(
    me: NodeId,
    voters: &[NodeId],
    last_leader: Option<NodeId>,
    witness: bool,
) -> u32 {
    let mut order: Vec<NodeId> = voters
        .iter()
        .copied()
        .filter(|v| Some(*v) != last_leader)
        .collect();
    order.sort_unstable();
    let pos = order.iter().position(|v| *v == me).unwrap_or(order.len());
    let n = u32::try_from(voters.len()).unwrap_or(u32::MAX);
    let pos = u32::try_from(pos).unwrap_or(u32::MAX);
    if witness { pos.saturating_add(n) } else { pos }
}

/// How long a voter waits after the leader fell silent before it asks for pre-votes: the
/// lease, a margin (a follower's lease may have started a little after ours), and its rank.
pub(crate) fn patience(lease: Duration, step: Duration, rank: u32) -> Duration {
    lease + step / 4 + step * rank
}

/// Whether the vote changed (a heartbeat, or a vote for someone) within the last `round`,
/// given how long ago it last changed; `None` (no record) has not moved.
fn moved_during(since: Option<Duration>, round: Duration) -> bool {
    since.is_some_and(|s| s < round)
}

/// Asks every other voter for a pre-vote; true once a quorum (this node included) granted.
async fn pre_vote(
    shared: &Arc<Shared>,
    voters: &[NodeId],
    last_log_id: Option<LogId<NodeId>>,
) -> bool {
    let quorum = voters.len() / 2 + 1;
    let mut granted = 1;
    if granted >= quorum {
        return true;
    }
    let req = PreVote {
        candidate: shared.id,
        last_log_id,
    };
    let Ok(payload) = codec::encode(&req) else {
        return false;
    };
    let ttl = shared.timing.election_max;
    let mut calls = JoinSet::new();
    for &v in voters.iter().filter(|v| **v != shared.id) {
        let (shared, payload) = (shared.clone(), payload.clone());
        calls.spawn(async move {
            let mut client = shared.peer(v).ok()?;
            let mut request = tonic::Request::new(RaftPayload { payload });
            request.set_timeout(ttl);
            let reply = client.pre_vote(request).await.ok()?.into_inner();
            let reply: PreVoteReply = codec::decode(&reply.payload).ok()?;
            if !reply.granted {
                tracing::debug!(voter = v, reason = %reply.reason, "pre-vote refused");
            }
            Some(reply.granted)
        });
    }
    while let Some(r) = calls.join_next().await {
        if matches!(r, Ok(Some(true))) {
            granted += 1;
            if granted >= quorum {
                // The slow or dead voters' calls are dropped with the set.
                return true;
            }
        }
    }
    false
}

/// Runs the trigger until `stop` fires.
pub(crate) async fn elector(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let lease = shared.timing.election_max;
    let step = shared.timing.elector_step();
    let tick = (shared.timing.heartbeat / 4).max(Duration::from_millis(2));
    let mut not_before = Instant::now();
    // The last leader this node knew to be elected (a committed vote). After a split vote
    // every candidate's vote is for itself, uncommitted: ranking by it would put each
    // candidate last in its own order, give both the same patience and make them collide
    // again, round after round.
    let mut last_leader: Option<NodeId> = None;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = sleep(tick) => {}
        }
        if Instant::now() < not_before {
            continue;
        }
        let m = shared.metrics();
        if m.state == ServerState::Leader || m.state == ServerState::Shutdown || shared.held() {
            continue;
        }
        let mut voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        voters.sort_unstable();
        if !voters.contains(&shared.id) {
            continue;
        }
        let Some(v) = vote_view(&shared).await else {
            return;
        };
        if v.committed {
            last_leader = v.voted_for;
        }
        if voters.len() > 1 {
            let wait = patience(
                lease,
                step,
                rank(shared.id, &voters, last_leader, shared.witness),
            );
            // A node that just started has no record of the last heartbeat: it waits as if
            // it had heard one at its start, like the others wait after the last one.
            let silent = v
                .since
                .unwrap_or(Duration::MAX)
                .min(shared.started.elapsed());
            if silent < wait {
                continue;
            }
            let last = match last_log_id(&shared).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(node = shared.id, error = %e, "cannot read the log; not campaigning");
                    not_before = Instant::now() + step;
                    continue;
                }
            };
            let round = Instant::now();
            if !pre_vote(&shared, &voters, last).await {
                not_before = Instant::now() + step;
                continue;
            }
            // The round can take up to a lease on a starved machine. If this node voted for
            // another candidate or heard a leader meanwhile, the yeses are stale: electing now
            // would raise the term over a leader this node just helped elect and depose it.
            let Some(after) = vote_view(&shared).await else {
                return;
            };
            if moved_during(after.since, round.elapsed()) {
                tracing::info!(
                    node = shared.id,
                    voted_for = ?after.voted_for,
                    "the vote moved during the pre-vote round; not campaigning"
                );
                continue;
            }
        }
        tracing::info!(
            node = shared.id,
            term = m.current_term,
            last_leader = ?last_leader,
            "no leader for a lease and a quorum would vote for this node: starting an election"
        );
        if let Err(e) = shared.raft.trigger().elect().await {
            tracing::debug!(node = shared.id, error = %e, "raft core stopped; elector ends");
            return;
        }
        // Give the election a lease to finish before judging again.
        not_before = Instant::now() + lease;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_leader_and_witnesses_campaign_last() {
        let voters = [1, 2, 3];
        assert_eq!(rank(2, &voters, Some(1), false), 0);
        assert_eq!(rank(3, &voters, Some(1), false), 1);
        assert_eq!(rank(1, &voters, Some(1), false), 2);
        // No leader yet: plain id order.
        assert_eq!(rank(1, &voters, None, false), 0);
        // A witness comes after every LB node, whatever its id.
        assert_eq!(rank(2, &voters, Some(3), true), 4);
        assert!(rank(2, &voters, Some(3), true) > rank(1, &voters, Some(3), false));
    }

    #[test]
    fn a_vote_changed_inside_the_pre_vote_round_cancels_the_election() {
        let round = Duration::from_millis(40);
        // Voted for another candidate 5 ms ago, while our round ran for 40 ms.
        assert!(moved_during(Some(Duration::from_millis(5)), round));
        // Last change long before the round started: the silence still holds.
        assert!(!moved_during(Some(Duration::from_millis(400)), round));
        assert!(!moved_during(None, round));
    }

    #[test]
    fn patience_grows_with_rank_and_never_undercuts_the_lease() {
        let (lease, step) = (Duration::from_millis(120), Duration::from_millis(30));
        assert!(patience(lease, step, 0) > lease);
        assert_eq!(patience(lease, step, 1) - patience(lease, step, 0), step);
    }
}
