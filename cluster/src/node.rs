//! [`ClusterNode`]: the handle the daemon holds. Starting one opens the store, starts the Raft
//! core and the peer service, and bootstraps the cluster when no node has state yet.
//!
//! # Bootstrap
//! - A node whose store is initialized (it has a vote or log) simply rejoins.
//! - Otherwise the lowest id of `members` (or a node with no members: a cluster of one)
//!   initializes the cluster with every member as a voter. Before that it listens for one
//!   election's worth of time: a node that lost its data dir is contacted by the existing
//!   leader in that window and joins instead of starting a second history.
//! - A node added later (`add_learner`, then `promote`) starts with `members` listing the
//!   cluster and itself, under an id that is not the lowest, and waits to be contacted.
//! - The same node then commits `Bootstrap{farms}` (forwarded to whoever leads). It is
//!   applied once; a restarted bootstrapper sends it again, harmlessly ignored.

use crate::elector::elector;
use crate::error::ClusterError;
use crate::forward::{Forward, ForwardReply, MembershipView, forward};
use crate::handover::{transfer, witness_guard};
use crate::network::PeerNetwork;
use crate::server::PeerService;
use crate::settings::{ClusterSettings, MAX_MESSAGE};
use crate::shared::{Shared, Timing};
use crate::state::{ClusterState, Command, Farm};
use crate::storage::LogStore;
use crate::storage_sm::{Pins, StateMachineStore};
use crate::types::{Applied, Node, NodeId, Raft, RaftMetrics};
use openraft::ServerState;
use proto::auth::{ClientAuth, ServerAuth};
use proto::listener::{GuardedListener, ListenerStats};
use proto::raft::v1::raft_peer_server::RaftPeerServer;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tracing::Instrument;

/// What a member says of itself over the peer `Version` call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberInfo {
    /// `0.1.0 (1a2b3c4d5e6f)`.
    pub version: String,
    /// Its datapath MAC as text; empty for a witness.
    pub datapath_mac: String,
}

/// A running cluster member.
pub struct ClusterNode {
    shared: Arc<Shared>,
    peer_listener: Arc<ListenerStats>,
    state: watch::Receiver<Arc<ClusterState>>,
    pins: Pins,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl ClusterNode {
    /// Starts this node; see the module doc for bootstrap. `bootstrap_farms` are used only if
    /// this node bootstraps the cluster.
    pub async fn start(
        s: ClusterSettings,
        bootstrap_farms: Vec<Farm>,
    ) -> Result<ClusterNode, ClusterError> {
        Self::start_on(s, bootstrap_farms, None).await
    }

    /// Binds the peer listener `listen` names, without starting anything: a daemon binds
    /// every listener before Raft starts, so a port in use stops it with nothing started.
    pub async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener, ClusterError> {
        tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ClusterError::Listen {
                addr: listen,
                source,
            })
    }

    /// [`ClusterNode::start`] serving peers on `listener` (from [`ClusterNode::bind`]) when
    /// given; otherwise it binds `listen` itself, after opening the store and before Raft.
    pub async fn start_on(
        s: ClusterSettings,
        bootstrap_farms: Vec<Farm>,
        listener: Option<tokio::net::TcpListener>,
    ) -> Result<ClusterNode, ClusterError> {
        s.validate()?;
        let span = tracing::info_span!("cluster", node = s.node_id);
        Self::start_in_span(s, bootstrap_farms, listener)
            .instrument(span)
            .await
    }

    async fn start_in_span(
        s: ClusterSettings,
        bootstrap_farms: Vec<Farm>,
        listener: Option<tokio::net::TcpListener>,
    ) -> Result<ClusterNode, ClusterError> {
        let db_path = s.data_dir.join(crate::store::STORE_FILE);
        let db = crate::store::open(&s.data_dir).await?;
        let storage_err = |reason: String| ClusterError::Storage {
            path: db_path.display().to_string(),
            reason,
        };
        let log = LogStore::open(db.clone()).map_err(|e| storage_err(e.to_string()))?;
        let (sm, state, pins) = StateMachineStore::open(db, s.pin_sink.clone())
            .map_err(|e| storage_err(e.to_string()))?;

        // Bound before Raft starts, after the store opened: opening waits for a previous
        // instance in this process to close the file, and with it that instance's listener.
        let listener = match listener {
            Some(l) => l,
            None => Self::bind(s.listen).await?,
        };
        let listener = GuardedListener::new(listener, "peer", s.peer_limits);
        let peer_listener = listener.stats();
        let config = Arc::new(s.raft_config()?);
        let auth =
            ClientAuth::new(&s.token).map_err(|e| ClusterError::Settings(format!("token: {e}")))?;
        let net = PeerNetwork::new(auth, s.election_timeout.0, s.tls.as_ref());
        let log_handle = log.clone();
        let raft = Raft::new(s.node_id, config, net.clone(), log, sm)
            .await
            .map_err(|e| ClusterError::Raft {
                stage: "start",
                reason: e.to_string(),
            })?;
        let shared = Arc::new(Shared {
            id: s.node_id,
            raft,
            log: log_handle,
            net,
            witness: s.witness,
            timing: Timing {
                heartbeat: s.heartbeat,
                election_max: s.election_timeout.1,
                vip_lease: s.vip_lease,
            },
            started: std::time::Instant::now(),
            handing_over: AtomicBool::new(false),
            hold_until: std::sync::Mutex::new(None),
            handover_lock: tokio::sync::Mutex::new(()),
            peer_contact: s.peer_contact.clone(),
            version: s.version.clone(),
            datapath_mac: s.datapath_mac.clone(),
        });

        let local_addr = listener
            .local_addr()
            .map_err(|source| ClusterError::Listen {
                addr: s.listen,
                source,
            })?;
        let (stop, stop_rx) = watch::channel(false);
        let service = RaftPeerServer::new(PeerService {
            shared: shared.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
        let mut stop_srv = stop_rx.clone();
        let mut builder = Server::builder().tcp_nodelay(true);
        if let Some(tls) = &s.tls {
            builder = builder
                .tls_config(tls.server())
                .map_err(|e| ClusterError::Settings(format!("peer TLS: {e}")))?;
        }
        let server = tokio::spawn(
            builder
                .add_service(InterceptedService::new(service, ServerAuth::new(&s.token)))
                .serve_with_incoming_shutdown(listener.into_incoming(), async move {
                    // A stop signal (Ok) and the handle's drop (Err) both mean: stop serving.
                    if stop_srv.changed().await.is_err() {
                        tracing::debug!("cluster handle dropped; peer service stops");
                    }
                }),
        );

        let mut node = ClusterNode {
            shared: shared.clone(),
            peer_listener,
            state,
            pins,
            local_addr,
            stop,
            server: Some(server),
            tasks: Vec::new(),
        };
        node.tasks
            .push(tokio::spawn(elector(shared.clone(), stop_rx.clone())));
        if s.witness {
            node.tasks
                .push(tokio::spawn(witness_guard(shared.clone(), stop_rx.clone())));
        }
        let initialized = shared
            .raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Raft {
                stage: "start",
                reason: e.to_string(),
            })?;
        let lowest = s.initial_members().iter().map(|(id, _)| *id).min();
        if lowest == Some(s.node_id) {
            let span = tracing::info_span!("bootstrap", node = s.node_id);
            let task = bootstrap(
                shared,
                s.clone(),
                initialized,
                bootstrap_farms,
                node.state.clone(),
                stop_rx,
            );
            node.tasks.push(tokio::spawn(task.instrument(span)));
        }
        tracing::info!(listen = %local_addr, initialized, witness = s.witness, tls = s.tls.is_some(), "cluster node started");
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// Whether this leader is handing leadership over: it must not own the VIP meanwhile.
    pub fn is_handing_over(&self) -> bool {
        self.shared.is_handing_over()
    }

    /// Whether this node is a witness: it must never own a VIP.
    pub fn is_witness(&self) -> bool {
        self.shared.witness
    }

    /// The address the peer service listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Open and refused connections of the peer listener.
    pub fn peer_listener(&self) -> Arc<ListenerStats> {
        Arc::clone(&self.peer_listener)
    }

    /// The applied state; changes whenever a committed command changes it (on every node).
    pub fn state(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.state.clone()
    }

    /// The persistence table as this node has applied it (control plane only: lock briefly).
    pub fn pins(&self) -> Pins {
        self.pins.clone()
    }

    /// openraft's metrics: `state`, `current_leader`, `current_term`,
    /// `millis_since_quorum_ack` (leader only) — what the VIP lease is computed from.
    pub fn raft_metrics(&self) -> watch::Receiver<RaftMetrics> {
        self.shared.raft.metrics()
    }

    /// The current leader as this node knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.shared.metrics().current_leader
    }

    /// The membership as this node last applied it.
    pub fn membership(&self) -> MembershipView {
        let m = self.shared.metrics();
        let index = m.membership_config.log_id().map(|l| l.index);
        MembershipView::from_membership(m.membership_config.membership(), index)
    }

    /// What every other member says of itself (its dsrlb version and datapath MAC), asked
    /// over the peer service at once, each call bounded by `limit`: `None` for a member that
    /// did not say (down, cut off, or older than the `Version` call). This node is not asked.
    pub async fn member_info(&self, limit: Duration) -> BTreeMap<NodeId, Option<MemberInfo>> {
        let mut out = BTreeMap::new();
        let mut calls = tokio::task::JoinSet::new();
        for id in self.membership().nodes.into_keys() {
            out.insert(id, None);
            if id == self.shared.id {
                continue;
            }
            let Ok(mut client) = self.shared.peer(id) else {
                continue;
            };
            calls.spawn(async move {
                let mut req = tonic::Request::new(proto::raft::v1::VersionRequest {});
                req.set_timeout(limit);
                let asked = tokio::time::timeout(limit, client.version(req)).await;
                (
                    id,
                    asked.ok().and_then(Result::ok).map(|r| {
                        let r = r.into_inner();
                        MemberInfo {
                            version: r.version,
                            datapath_mac: r.datapath_mac,
                        }
                    }),
                )
            });
        }
        while let Some(done) = calls.join_next().await {
            if let Ok((id, info)) = done {
                out.insert(id, info);
            }
        }
        out
    }

    /// Commits `cmd` through the leader (forwarded if this node does not lead) and returns
    /// once it is applied on the leader.
    pub async fn write(&self, cmd: Command) -> Result<Applied, ClusterError> {
        match forward(&self.shared, Forward::Write(Box::new(cmd)), "write").await? {
            ForwardReply::Applied(a) => Ok(a),
            _ => Err(ClusterError::Raft {
                stage: "write",
                reason: "unexpected reply".into(),
            }),
        }
    }

    /// The leader's read index (asked of the leader from a follower): once this node has
    /// applied it, its state includes every write acknowledged anywhere before the call.
    pub async fn read_index(&self) -> Result<u64, ClusterError> {
        match forward(&self.shared, Forward::ReadIndex, "read index").await? {
            ForwardReply::ReadIndex(i) => Ok(i),
            _ => Err(ClusterError::Raft {
                stage: "read index",
                reason: "unexpected reply".into(),
            }),
        }
    }

    async fn membership_change(
        &self,
        req: Forward,
        stage: &'static str,
    ) -> Result<MembershipView, ClusterError> {
        match forward(&self.shared, req, stage).await? {
            ForwardReply::Membership(m) => Ok(m),
            _ => Err(ClusterError::Raft {
                stage,
                reason: "unexpected reply".into(),
            }),
        }
    }

    /// Adds `id` at `addr` as a learner and returns once it has caught up.
    pub async fn add_learner(
        &self,
        id: NodeId,
        addr: SocketAddr,
    ) -> Result<MembershipView, ClusterError> {
        self.membership_change(
            Forward::AddLearner {
                id,
                addr: addr.to_string(),
            },
            "add learner",
        )
        .await
    }

    /// Makes learner `id` a voter.
    pub async fn promote(&self, id: NodeId) -> Result<MembershipView, ClusterError> {
        self.membership_change(Forward::Promote { id }, "promote")
            .await
    }

    /// Removes `id` (voter or learner) from the cluster.
    pub async fn remove_member(&self, id: NodeId) -> Result<MembershipView, ClusterError> {
        self.membership_change(Forward::Remove { id }, "remove member")
            .await
    }

    /// Moves leadership to `to` (or the most up-to-date other voter) and returns the new
    /// leader. Callable on any node; see `handover` for how.
    pub async fn transfer_leadership(&self, to: Option<NodeId>) -> Result<NodeId, ClusterError> {
        transfer(&self.shared, to).await
    }

    /// Stops cleanly: a leader with another voter hands leadership over first (so peers do
    /// not wait an election timeout), then the Raft core and the peer service stop. The
    /// caller must have released the VIP already (the daemon does so first): the handover
    /// does not wait the VIP lease out.
    pub async fn shutdown(mut self) -> Result<(), ClusterError> {
        let m = self.shared.metrics();
        let others = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v != self.shared.id);
        if m.state == ServerState::Leader && others {
            match crate::handover::hand_over(&self.shared, None, true).await {
                Ok(new) => tracing::info!(
                    node = self.shared.id,
                    new_leader = new,
                    "handed over before shutdown"
                ),
                Err(e) => {
                    tracing::warn!(node = self.shared.id, error = %e, "shutting down without a handover")
                }
            }
        }
        self.stop.send_replace(true);
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let core = self.shared.raft.shutdown().await;
        let served = match self.server.take() {
            Some(h) => h.await,
            None => Ok(Ok(())),
        };
        core.map_err(|e| ClusterError::Raft {
            stage: "shutdown",
            reason: e.to_string(),
        })?;
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ClusterError::Raft {
                stage: "peer service",
                reason: e.to_string(),
            }),
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(ClusterError::Raft {
                stage: "peer service",
                reason: e.to_string(),
            }),
        }
    }
}

impl Drop for ClusterNode {
    /// Dropping without `shutdown` is a crash as far as peers can tell: the service and the
    /// tasks are aborted, and the Raft core stops once the last handle to it is gone.
    fn drop(&mut self) {
        // Connection tasks of the peer service may outlive the aborted server future (and
        // with them a handle to Raft), so the core is told to stop explicitly.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let raft = self.shared.raft.clone();
            let id = self.shared.id;
            rt.spawn(async move {
                if let Err(e) = raft.shutdown().await {
                    tracing::debug!(node = id, error = %e, "raft core ended with an error");
                }
            });
        }
        self.stop.send_replace(true);
        if let Some(h) = self.server.take() {
            h.abort();
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

/// Initializes the cluster if needed, then gets `Bootstrap{farms}` committed (see module doc).
async fn bootstrap(
    shared: Arc<Shared>,
    s: ClusterSettings,
    initialized: bool,
    farms: Vec<Farm>,
    state: watch::Receiver<Arc<ClusterState>>,
    mut stop: watch::Receiver<bool>,
) {
    if !initialized {
        if !s.members.is_empty() {
            // Give an existing leader one election's worth of time to contact us first.
            let mut rx = shared.raft.metrics();
            let contacted = crate::handover::wait_for(&mut rx, s.election_timeout.1 * 2, |m| {
                m.current_leader.is_some() || m.current_term > 0
            })
            .await;
            if contacted {
                tracing::info!("an existing cluster contacted this node; not initializing");
            }
        }
        let members: BTreeMap<NodeId, Node> = s
            .initial_members()
            .into_iter()
            .map(|(id, addr)| {
                (
                    id,
                    Node {
                        addr: addr.to_string(),
                    },
                )
            })
            .collect();
        match shared.raft.initialize(members).await {
            Ok(()) => tracing::info!("initialized the cluster"),
            Err(e) => tracing::info!(reason = %e, "cluster not initialized by this node"),
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
    while tokio::time::Instant::now() < deadline {
        if *stop.borrow() || state.borrow().bootstrapped {
            return;
        }
        match forward(
            &shared,
            Forward::Write(Box::new(Command::Bootstrap {
                farms: farms.clone(),
                settings: s.shared.clone(),
            })),
            "bootstrap",
        )
        .await
        {
            Ok(r) => {
                tracing::info!(
                    ?r,
                    "bootstrap farms committed (ignored if the cluster already had them)"
                );
                return;
            }
            Err(e) if e.is_retryable() => {
                tracing::info!(error = %e, "bootstrap write not yet possible; retrying")
            }
            Err(e) => {
                tracing::error!(error = %e, "bootstrap farms refused");
                return;
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(s.election_timeout.1) => {}
        }
    }
}
