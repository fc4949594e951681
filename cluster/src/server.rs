//! The server end of `dsrlb.raft.v1`: decodes openraft messages and hands them to the local
//! Raft, runs forwarded writes and membership changes when this node leads, and the two
//! handover calls. Authentication happens before any of this, in `proto::auth::ServerAuth`.

use crate::codec;
use crate::elector::{self, PreVote};
use crate::forward::{Forward, Refused, execute_local};
use crate::handover::{hand_over, wait_own_lease};
use crate::shared::Shared;
use openraft::ServerState;
use proto::raft::v1::raft_peer_server::RaftPeer;
use proto::raft::v1::{
    RaftPayload, TransferLeaderReply, TransferLeaderRequest, TriggerElectionReply,
    TriggerElectionRequest, VersionReply, VersionRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// The peer service of one node.
pub(crate) struct PeerService {
    pub shared: Arc<Shared>,
}

fn decode<T: DeserializeOwned>(req: Request<RaftPayload>) -> Result<T, Status> {
    codec::decode(&req.into_inner().payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable payload: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    let payload =
        codec::encode(value).map_err(|e| Status::internal(format!("unencodable reply: {e}")))?;
    Ok(Response::new(RaftPayload { payload }))
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.shared.peer_contact.peer_call();
        let req = decode(request)?;
        // A node restarted right after a kill could otherwise help elect a second leader
        // while the old one still owns the VIP (see `Shared::young_for`).
        if let Some(rest) = self.shared.young_for() {
            tokio::time::sleep(rest).await;
        }
        if let Some(refusal) = elector::leader_refusal(&self.shared, &req).await {
            let ok: Result<_, openraft::error::RaftError<crate::types::NodeId>> = Ok(refusal);
            return reply(&ok);
        }
        reply(&self.shared.raft.vote(req).await)
    }

    async fn pre_vote(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.shared.peer_contact.peer_call();
        let req: PreVote = decode(request)?;
        reply(&elector::judge(&self.shared, &req).await)
    }

    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.shared.peer_contact.peer_call();
        let req = decode(request)?;
        reply(&self.shared.raft.append_entries(req).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.shared.peer_contact.peer_call();
        let req = decode(request)?;
        reply(&self.shared.raft.install_snapshot(req).await)
    }

    async fn client_write(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.shared.peer_contact.peer_call();
        let req: Forward = decode(request)?;
        // No second hop: a node that is not the leader says so and the sender, which keeps
        // its own view of the leader, tries again. That rules out forwarding loops.
        let outcome = if self.shared.metrics().state == ServerState::Leader {
            execute_local(&self.shared, req).await
        } else {
            Err(Refused::NotLeader)
        };
        reply(&outcome)
    }

    async fn version(
        &self,
        _request: Request<VersionRequest>,
    ) -> Result<Response<VersionReply>, Status> {
        // Not a peer contact: the answer counts towards no vote or acknowledgement, and the
        // members ask it of each other (the ARP-flux watch), so through a half-cut
        // link it would end a segment grant the pair needs (docs/design.md#pair-segment).
        Ok(Response::new(VersionReply {
            version: self.shared.version.clone(),
            datapath_mac: self.shared.datapath_mac.clone(),
        }))
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderReply>, Status> {
        self.shared.peer_contact.peer_call();
        let to = request.into_inner().to;
        if self.shared.metrics().state != ServerState::Leader {
            return Err(Status::failed_precondition("not the leader"));
        }
        // The VIP may still be owned here: hand_over waits the VIP lease out.
        match hand_over(&self.shared, to, false).await {
            Ok(leader) => Ok(Response::new(TransferLeaderReply { leader })),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn trigger_election(
        &self,
        request: Request<TriggerElectionRequest>,
    ) -> Result<Response<TriggerElectionReply>, Status> {
        self.shared.peer_contact.peer_call();
        let req = request.into_inner();
        let refuse = |reason: &str| {
            Ok(Response::new(TriggerElectionReply {
                accepted: false,
                reason: reason.to_string(),
            }))
        };
        let shared = &self.shared;
        if req.hold_only {
            // The chosen node waits out a lease, then campaigns, perhaps twice more half a
            // lease apart: three leases cover it.
            shared.hold(shared.timing.election_max * 3);
            return Ok(Response::new(TriggerElectionReply {
                accepted: true,
                reason: String::new(),
            }));
        }
        if shared.witness {
            return refuse("this node is a witness and never leads");
        }
        let m = shared.metrics();
        if !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == shared.id)
        {
            return refuse("this node is not a voter");
        }
        if m.state == ServerState::Leader {
            return refuse("this node already leads");
        }
        if req.after_lease {
            // The leader stopped its heartbeats; the other voters grant once their lease
            // (counted from the last heartbeat, like ours) has run out. The hold makes this
            // node refuse pre-votes meanwhile (the other voters hold too).
            shared.hold(shared.timing.election_max * 3);
            if let Err(e) = wait_own_lease(shared, Duration::from_millis(5)).await {
                shared.release_hold();
                return refuse(&e.to_string());
            }
            if let Err(e) = shared.raft.trigger().elect().await {
                shared.release_hold();
                return refuse(&format!("raft core stopped: {e}"));
            }
            tracing::info!(
                node = shared.id,
                from = req.from,
                term = req.term,
                "starting an election on request of the leader, its lease run out"
            );
            // A voter that heard the last heartbeat a little later than we did may still
            // have refused; try again while the hold keeps the others quiet.
            tokio::spawn(retry_takeover(shared.clone()));
            return Ok(Response::new(TriggerElectionReply {
                accepted: true,
                reason: String::new(),
            }));
        }
        tracing::info!(
            node = shared.id,
            from = req.from,
            term = req.term,
            "starting an election on request of the leader"
        );
        match shared.raft.trigger().elect().await {
            Ok(()) => Ok(Response::new(TriggerElectionReply {
                accepted: true,
                reason: String::new(),
            })),
            Err(e) => refuse(&format!("raft core stopped: {e}")),
        }
    }
}

/// The chosen node of a handover campaigns again (at most twice, half a lease apart) while
/// no leader has emerged and the hold lasts; the hold ends once it leads.
async fn retry_takeover(shared: Arc<Shared>) {
    for _ in 0..2 {
        tokio::time::sleep(shared.timing.election_max / 2).await;
        let m = shared.metrics();
        if m.state == ServerState::Leader {
            break;
        }
        if m.current_leader.is_some() || !shared.held() {
            return;
        }
        if shared.raft.trigger().elect().await.is_err() {
            return;
        }
    }
    shared.release_hold();
}
