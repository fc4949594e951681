//! The client end of `dsrlb.raft.v1`: one cached tonic `Channel` per peer (HTTP/2 multiplexes
//! every stream to that peer over it), the token added to every call, and openraft's
//! `RaftNetworkFactory`/`RaftNetwork` on top, with messages bincode-encoded in `payload`.

use crate::codec;
use crate::settings::MAX_MESSAGE;
use crate::tls::PeerTls;
use crate::types::{Node, NodeId, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use proto::auth::ClientAuth;
use proto::raft::v1::RaftPayload;
use proto::raft::v1::raft_peer_client::RaftPeerClient;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// A client of one peer, token included.
pub type PeerClient = RaftPeerClient<InterceptedService<Channel, ClientAuth>>;

/// Why a peer could not be called.
#[derive(Debug, thiserror::Error)]
pub enum PeerCallError {
    /// The peer address is not a valid URI.
    #[error("peer address {addr:?}: {reason}")]
    Address {
        /// The address from the membership.
        addr: String,
        /// The parse error.
        reason: String,
    },
    /// Transport failure or an error status.
    #[error("{0}")]
    Status(#[from] tonic::Status),
    /// The reply did not decode (version mismatch between peers).
    #[error("undecodable reply: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The request did not encode.
    #[error("unencodable request: {0}")]
    Encode(#[from] bincode::error::EncodeError),
}

/// Channels to peers, shared by openraft's replication streams and our own calls.
#[derive(Clone)]
pub struct PeerNetwork {
    channels: Arc<Mutex<HashMap<NodeId, (String, Channel)>>>,
    auth: ClientAuth,
    connect_timeout: Duration,
    /// `Some`: peers are dialled over mutual TLS (`https://`).
    tls: Option<ClientTlsConfig>,
}

impl PeerNetwork {
    /// `connect_timeout` should be below the election timeout, so an unreachable peer is
    /// reported before the next election decision needs it.
    /// `tls`: dial peers over mutual TLS with this material.
    pub fn new(auth: ClientAuth, connect_timeout: Duration, tls: Option<&PeerTls>) -> Self {
        PeerNetwork {
            channels: Arc::new(Mutex::new(HashMap::new())),
            auth,
            connect_timeout,
            tls: tls.map(PeerTls::client),
        }
    }

    /// The client of `id` at `addr`; the channel is created once (lazily connected, it
    /// reconnects by itself) and replaced only if the peer's address changed.
    pub fn client(&self, id: NodeId, addr: &str) -> Result<PeerClient, PeerCallError> {
        // Control plane only; a poisoned map is still a valid map.
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match map.get(&id) {
            Some((a, ch)) if a == addr => ch.clone(),
            _ => {
                let bad = |e: tonic::transport::Error| PeerCallError::Address {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                };
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                let mut endpoint =
                    Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(bad)?;
                if let Some(tls) = &self.tls {
                    endpoint = endpoint.tls_config(tls.clone()).map_err(bad)?;
                }
                let endpoint = endpoint
                    .connect_timeout(self.connect_timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    // Pings on an idle channel too: the peer listener closes a connection
                    // that sends nothing for its idle timeout, and a vote must not wait
                    // for a reconnect.
                    .keep_alive_while_idle(true)
                    .keep_alive_timeout(Duration::from_secs(5));
                let ch = endpoint.connect_lazy();
                map.insert(id, (addr.to_string(), ch.clone()));
                ch
            }
        };
        Ok(RaftPeerClient::with_interceptor(channel, self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }
}

/// openraft's connection to one target.
pub struct PeerConn {
    target: NodeId,
    client: Result<PeerClient, String>,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConn;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerConn {
        PeerConn {
            target,
            client: self.client(target, &node.addr).map_err(|e| e.to_string()),
        }
    }
}

#[derive(Clone, Copy)]
enum Rpc {
    Vote,
    Append,
    Snapshot,
}

/// Sends one openraft message; splits failures the way openraft expects: "unreachable"
/// (back off), network error (retry), or the remote Raft's own error.
async fn call<Req, Resp, E>(
    target: NodeId,
    client: &mut Result<PeerClient, String>,
    rpc: Rpc,
    req: &Req,
    ttl: Duration,
) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
where
    Req: Serialize,
    Resp: DeserializeOwned,
    E: std::error::Error + DeserializeOwned,
{
    let client = match client {
        Ok(c) => c,
        Err(why) => {
            return Err(RPCError::Unreachable(Unreachable::new(
                &PeerCallError::Address {
                    addr: format!("node {target}"),
                    reason: why.clone(),
                },
            )));
        }
    };
    let payload = codec::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
    let mut request = tonic::Request::new(RaftPayload { payload });
    request.set_timeout(ttl);
    let reply = match rpc {
        Rpc::Vote => client.vote(request).await,
        Rpc::Append => client.append_entries(request).await,
        Rpc::Snapshot => client.install_snapshot(request).await,
    };
    let reply = match reply {
        Ok(r) => r.into_inner(),
        Err(status) if status.code() == tonic::Code::Unavailable => {
            return Err(RPCError::Unreachable(Unreachable::new(&status)));
        }
        Err(status) => return Err(RPCError::Network(NetworkError::new(&status))),
    };
    let result: Result<Resp, RaftError<NodeId, E>> =
        codec::decode(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
    result.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
}

impl RaftNetwork<TypeConfig> for PeerConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        call(
            self.target,
            &mut self.client,
            Rpc::Append,
            &rpc,
            option.hard_ttl(),
        )
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        call(
            self.target,
            &mut self.client,
            Rpc::Snapshot,
            &rpc,
            option.hard_ttl(),
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        call(
            self.target,
            &mut self.client,
            Rpc::Vote,
            &rpc,
            option.hard_ttl(),
        )
        .await
    }
}
