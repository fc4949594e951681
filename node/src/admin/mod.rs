//! The admin API (`dsrlb.admin.v1`) served by every node on `[admin] listen`: what an
//! operator (or `dsrctl`) does to a live cluster. This module owns the server's lifetime,
//! the context every call reads, the mapping of failures to gRPC codes and the write path.
//!
//! # Layout
//! - `wire`: API farm messages ⇄ replicated farms (in through the config's farm validator).
//! - `check`: the farm checks that need the cluster and the node (VIP vs node addresses,
//!   backend subnet, port overlap); the farm alone goes through the config validator.
//! - `diff`: farm-by-farm differences for `apply`.
//! - `service`: farms, backends, apply and export.
//! - `ops`: status, stats and membership.
//! - `persist`: listing and flushing the source-IP persistence table.
//! - `fuzzing`: the admin fuzz target's entry points (docs/design.md#fuzzing).
//!
//! # Decisions
//! - Authentication: the admin token as a bearer token, checked by the same interceptor as
//!   the peer service's cluster token (`cluster::ServerAuth`), before any handler runs.
//! - Validation happens on the node that receives the request, against its replica, before
//!   anything is forwarded; the replica first catches up with the leader's read index, so a
//!   write sees every write acknowledged before it, wherever it was made. A farm write is a `Command::PutFarmIf` carrying the farm as it
//!   was read: if another change reached the farm first, the leader applies nothing, this
//!   node waits until its replica has that change, validates again on the new state and
//!   retries (bounded). So a read-modify-write (`UpdateBackend`) never loses a concurrent
//!   change, and the state machine still refuses overlaps deterministically on its own.
//!   `Apply` is one `Command::ReplaceFarms` entry with the same rule for the whole set.
//! - Farm, backend and persistence reads (list, get, export) first bring the local replica
//!   up to the leader's read index, as writes do, so they include every write acknowledged
//!   before them, through any node (etcd's default, linearizable reads): an `export` taken from a
//!   follower and applied elsewhere must not revert a change made a moment earlier. They
//!   name the node that answered (`answered_by`). `Status` stays local, so it answers during
//!   an election too; on a follower it reports what that follower knows (replication
//!   progress only the leader has is absent there: `lag` unset); ask the leader for lag.
//! - Stats of another node (the VIP owner by default) are fetched from that node's admin
//!   service at the host of its peer address and this node's admin port, with this node's
//!   admin token: a cluster uses one admin port and one admin token. With admin TLS that
//!   call is https, trusts `[admin] tls_ca` and presents this node's admin certificate
//!   (which therefore must allow client authentication when `tls_client_ca` is set).
//! - Admin TLS is server-authenticated by default; `tls_client_ca` makes it mutual. The
//!   token is required either way: TLS protects it on the wire, it does not replace it.

mod check;
mod diff;
// The admin fuzz target's way in (node/fuzz); not part of the crate's API.
#[doc(hidden)]
pub mod fuzzing;
mod ops;
mod persist;
mod service;
mod wire;

pub use check::NetFacts;

use cluster::{Applied, ClusterError, ClusterNode, ClusterState, Command};
use datapath::Shared;
use proto::admin::v1::admin_server::AdminServer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;

/// How often a conditional write is re-read and retried after losing to a concurrent one.
const CAS_ATTEMPTS: usize = 8;

/// How long a node waits for its replica to catch up with a given log index.
const CATCH_UP: Duration = Duration::from_secs(5);

/// What the admin service of one node reads and acts on.
pub struct AdminContext {
    /// The cluster member (state, metrics, writes, membership).
    pub cluster: Arc<ClusterNode>,
    /// The datapath's shared state: counters and whether this node owns the VIPs now.
    pub datapath: Arc<Shared>,
    /// This node's network, for the farm checks.
    pub net: NetFacts,
    /// The admin token: what the listener expects, and what this node presents to other
    /// nodes' admin services; replaced by a reload (SIGHUP). Never logged.
    pub token: AdminToken,
    /// The admin port other nodes are reached at (this node's).
    pub admin_port: u16,
    /// The admin listener's TLS; also how this node calls other nodes' admin services
    /// (https, trusting `tls_ca`, presenting its admin certificate). `None`: plaintext.
    pub tls: Option<crate::config::AdminTls>,
    /// Which arbiter grants this node's VIP ownership now (`Status`, and the refusal of
    /// writes while owning by the segment without a quorum).
    pub arbiter: Arc<crate::ownership::ArbiterCell>,
    /// `pair_arbiter = "segment"` (docs/design.md#pair-segment).
    pub pair_segment: bool,
    /// The outcome of every probe this node's health checker ran (while it leads).
    pub check_log: Arc<crate::health::CheckLog>,
    /// The ARP-flux watch (docs/design.md#arp-flux); `None` on a node without a datapath.
    pub flux: Option<datapath::ResolverHandle>,
    /// The log's clock (docs/design.md#srcip-persistence): a listing's "expires in" is
    /// measured by it, as expiry itself is, so a stepped wall clock here shows neither every
    /// entry as due nor entries an hour from expiry.
    pub log_clock: Arc<crate::persist::LogClock>,
}

/// The admin token, shared by the listener's interceptor and the calls this node makes to
/// other nodes, so one [`AdminToken::set`] (a SIGHUP reload) changes both at once.
#[derive(Clone)]
pub struct AdminToken {
    auth: cluster::ServerAuth,
    value: Arc<std::sync::RwLock<String>>,
}

impl AdminToken {
    pub fn new(token: String) -> Self {
        AdminToken {
            auth: cluster::ServerAuth::for_service(&token, "an admin", "admin"),
            value: Arc::new(std::sync::RwLock::new(token)),
        }
    }

    /// The token now in force.
    pub fn get(&self) -> String {
        self.value.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Expects and presents `token` from the next call on; returns whether it changed.
    pub fn set(&self, token: &str) -> bool {
        let mut value = self.value.write().unwrap_or_else(|p| p.into_inner());
        if *value == token {
            return false;
        }
        token.clone_into(&mut value);
        self.auth.set_token(token);
        true
    }
}

/// A running admin server.
pub struct AdminHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    local_addr: SocketAddr,
}

impl AdminHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting calls and waits for the server task (which holds the cluster handle).
    pub async fn stop(self) {
        // The receiver is gone only if the server already ended; either way it stops.
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "admin server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "admin server task failed"),
        }
    }
}

/// Serves the admin API on `listener` (bound before Raft starts: docs/design.md#binaries) with
/// `ctx` until stopped.
pub async fn serve(
    listener: proto::listener::GuardedListener,
    ctx: AdminContext,
) -> anyhow::Result<AdminHandle> {
    let local_addr = listener.local_addr()?;
    let auth = ctx.token.auth.clone();
    let tls = ctx.tls.clone();
    let service = InterceptedService::new(
        AdminServer::new(service::AdminService { ctx: Arc::new(ctx) }),
        auth,
    );
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        builder = builder
            .tls_config(server_tls(tls))
            .map_err(|e| anyhow::anyhow!("admin TLS (admin.tls_cert, admin.tls_key): {e}"))?;
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(builder.add_service(service).serve_with_incoming_shutdown(
        listener.into_incoming(),
        async move {
            // Sent or dropped: stop either way.
            let _ = stopped.await;
        },
    ));
    tracing::info!(
        listen = %local_addr,
        tls = tls.is_some(),
        client_certs = tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some()),
        "admin API listening"
    );
    Ok(AdminHandle {
        stop,
        task,
        local_addr,
    })
}

/// The listener's TLS: this node's identity; client certificates required only when
/// `tls_client_ca` is set (otherwise the admin token alone authenticates a client).
fn server_tls(tls: &crate::config::AdminTls) -> tonic::transport::ServerTlsConfig {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let cfg = ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
    match &tls.client_ca_pem {
        Some(ca) => cfg
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(false),
        None => cfg,
    }
}

/// A cluster failure as the API reports it.
fn cluster_status(e: ClusterError) -> Status {
    match &e {
        ClusterError::Invalid(_) => Status::invalid_argument(e.to_string()),
        ClusterError::NoLeader { .. } | ClusterError::Peer { .. } => {
            Status::unavailable(e.to_string())
        }
        ClusterError::Membership { retryable, .. } => {
            if *retryable {
                Status::unavailable(e.to_string())
            } else {
                Status::failed_precondition(e.to_string())
            }
        }
        ClusterError::Transfer { .. } => Status::unavailable(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

/// A validation failure: INVALID_ARGUMENT whose message starts with the field path.
fn invalid(e: crate::config::ConfigError) -> Status {
    match e {
        crate::config::ConfigError::Invalid { key, reason } => {
            Status::invalid_argument(format!("{key}: {reason}"))
        }
        other => Status::invalid_argument(other.to_string()),
    }
}

impl AdminContext {
    fn id(&self) -> u64 {
        self.cluster.id()
    }

    fn state(&self) -> Arc<ClusterState> {
        self.cluster.state().borrow().clone()
    }

    fn applied_index(&self) -> u64 {
        self.cluster
            .raft_metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index)
    }

    /// Waits until this node's replica has applied `index` (bounded).
    async fn caught_up(&self, index: u64) {
        let mut rx = self.cluster.raft_metrics();
        let reached = tokio::time::timeout(
            CATCH_UP,
            rx.wait_for(|m| m.last_applied.is_some_and(|l| l.index >= index)),
        )
        .await;
        if !matches!(reached, Ok(Ok(_))) {
            tracing::warn!(index, "replica did not reach the index in time");
        }
    }

    /// Refuses a write while this node owns by the segment: it has no quorum to commit it
    /// (docs/design.md#pair-segment).
    fn writable(&self) -> Result<(), Status> {
        if self.arbiter.get() == Some(crate::ownership::Arbiter::Segment) {
            return Err(Status::failed_precondition("no quorum: the peer is down"));
        }
        Ok(())
    }

    /// Waits until this replica has applied the leader's read index.
    async fn sync(&self) -> Result<(), Status> {
        let read_index = self.cluster.read_index().await.map_err(cluster_status)?;
        self.caught_up(read_index).await;
        Ok(())
    }

    /// The write path of every farm change: `build` looks at the current state and returns
    /// the conditional command (or `None`: nothing to change, or an error status). A
    /// conditional command that lost to a concurrent change is rebuilt on the newer state.
    async fn write_checked(
        &self,
        mut build: impl FnMut(&ClusterState) -> Result<Option<Command>, Status>,
    ) -> Result<Applied, Status> {
        // Judge on a replica that has every write acknowledged before this request (a
        // follower may lag the write a client just made through another node): without it,
        // a follower could answer NOT_FOUND for a farm created a moment ago elsewhere.
        self.writable()?;
        self.sync().await?;
        for _ in 0..CAS_ATTEMPTS {
            let state = self.state();
            let Some(cmd) = build(&state)? else {
                return Ok(Applied {
                    index: self.applied_index(),
                    changed: false,
                });
            };
            let applied = self.cluster.write(cmd).await.map_err(cluster_status)?;
            if applied.changed {
                self.caught_up(applied.index).await;
                return Ok(applied);
            }
            // Someone else's change came first (or ours was applied by an earlier attempt
            // that timed out): look again once our replica has it.
            self.caught_up(applied.index).await;
        }
        Err(Status::aborted(
            "concurrent changes to the same farm kept winning; try again",
        ))
    }
}
