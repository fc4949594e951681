//! Status, stats and membership calls of the admin API. Status is what this node knows
//! (replication progress is known on the leader only); stats of another node come from that
//! node's own admin service; membership changes go through the cluster layer, which
//! forwards them to the leader.

use super::{AdminContext, cluster_status};
use cluster::ServerState;
use proto::admin::v1 as pb;
use proto::admin::v1::admin_client::AdminClient;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::task::JoinSet;
use tonic::Status;

/// How long a member's peer port may take to accept a connection and count as reachable.
const REACH_TIMEOUT: Duration = Duration::from_millis(300);

/// How long a call to another node's admin service may take.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether a TCP connection to `addr` opens within [`REACH_TIMEOUT`].
async fn reachable(addr: String) -> bool {
    matches!(
        tokio::time::timeout(REACH_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// The node that owns the VIPs as this node sees it: itself while it does, otherwise the
/// leader it knows of (the leader owns while its lease is fresh), otherwise none (0).
fn vip_owner(ctx: &AdminContext, leader: u64) -> u64 {
    if ctx.datapath.is_owner() {
        ctx.id()
    } else if leader != ctx.id() {
        leader
    } else {
        0
    }
}

pub(super) async fn status(ctx: &AdminContext) -> pb::StatusReply {
    let m = ctx.cluster.raft_metrics().borrow().clone();
    let view = ctx.cluster.membership();
    let me = ctx.id();
    let leader = m.current_leader.unwrap_or(0);
    let leading = m.state == ServerState::Leader;
    let last = m.last_log_index.unwrap_or(0);
    // Members' peer ports are probed in parallel: "reachable" means reachable from the node
    // that answers (itself always is).
    let mut probes = JoinSet::new();
    for (id, addr) in &view.nodes {
        if *id != me {
            let (id, addr) = (*id, addr.clone());
            probes.spawn(async move { (id, reachable(addr).await) });
        }
    }
    let gather = async {
        let mut reach = std::collections::BTreeMap::new();
        while let Some(r) = probes.join_next().await {
            if let Ok((id, ok)) = r {
                reach.insert(id, ok);
            }
        }
        reach
    };
    // Asked at the same time as the probes, so Status takes no longer than it did.
    let (reach, mut info) = tokio::join!(gather, ctx.cluster.member_info(REACH_TIMEOUT));
    let members = view
        .nodes
        .iter()
        .map(|(id, addr)| {
            let role = if *id == leader {
                "leader"
            } else if *id == me && ctx.cluster.is_witness() {
                "witness"
            } else if view.voters.contains(id) {
                "voter"
            } else {
                "learner"
            };
            let matched = if *id == me {
                Some(last)
            } else if leading {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(id).copied().flatten())
                    .map(|l| l.index)
            } else {
                None
            };
            pb::Member {
                id: *id,
                address: addr.clone(),
                role: role.into(),
                reachable: *id == me || reach.get(id).copied().unwrap_or(false),
                last_log_index: matched.unwrap_or(0),
                // Unknown stays unknown: a 0 here once read as "caught up" while the
                // leader simply had no progress for a just-restarted member.
                lag: matched.map(|i| last.saturating_sub(i)),
                version: info
                    .remove(id)
                    .flatten()
                    .map(|i| i.version)
                    .unwrap_or_default(),
            }
        })
        .collect();
    let owner = vip_owner(ctx, leader);
    let vips: BTreeSet<_> = ctx.state().farms.values().map(|f| f.vip).collect();
    pb::StatusReply {
        answered_by: me,
        leader,
        vip_owner: owner,
        term: m.current_term,
        lease_age_ms: if leading {
            m.millis_since_quorum_ack.unwrap_or(0)
        } else {
            0
        },
        last_log_index: last,
        applied_index: m.last_applied.map_or(0, |l| l.index),
        owner_arbiter: ctx
            .arbiter
            .get()
            .map_or(String::new(), |a| a.as_str().to_string()),
        failover: if ctx.pair_segment && view.voters.len() == 2 {
            "survives 1 failure: the datapath segment arbitrates the pair".into()
        } else {
            crate::config::failover(view.voters.len()).unwrap_or_else(|why| why)
        },
        members,
        version: buildinfo::short(),
        vip_conflicts: vip_conflicts(ctx),
        vips: vips
            .into_iter()
            .map(|v| pb::VipOwner {
                vip: v.to_string(),
                owner,
            })
            .collect(),
    }
}

/// What this node's ARP-flux watch saw, named from its forwarding table.
fn vip_conflicts(ctx: &AdminContext) -> Vec<pb::VipConflict> {
    let Some(flux) = &ctx.flux else {
        return Vec::new();
    };
    let (conflicts, _) = flux.vip_conflicts();
    let table = ctx.datapath.table.load();
    crate::flux::rows(&conflicts, &table, std::time::Instant::now())
        .into_iter()
        .map(|r| pb::VipConflict {
            vip: r.vip.to_string(),
            mac: r.mac.to_string(),
            backends: r.backend_labels(),
            claims: r.claims,
            last_seen_ms_ago: u64::try_from(r.last_seen.as_millis()).unwrap_or(u64::MAX),
            advice: r.advice(),
        })
        .collect()
}

/// This node's own counters for every replicated farm.
fn local_stats(ctx: &AdminContext) -> pb::StatsReply {
    let state = ctx.state();
    let counters = ctx.datapath.stats();
    let farms = state
        .farms
        .values()
        .map(|f| {
            let c = counters.iter().find(|c| c.farm == f.name);
            pb::FarmStats {
                name: f.name.clone(),
                flows_new: c.map_or(0, |c| c.flows_new),
                backends: f
                    .backends
                    .iter()
                    .map(|b| {
                        let bc = c.and_then(|c| c.backends.iter().find(|x| x.backend == b.name));
                        pb::BackendStats {
                            name: b.name.clone(),
                            packets: bc.map_or(0, |x| x.packets),
                            bytes: bc.map_or(0, |x| x.bytes),
                            healthy: state.is_healthy(&f.name, &b.name),
                            state: b.state.as_str().into(),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    pb::StatsReply {
        node: ctx.id(),
        vip_owner: ctx.datapath.is_owner(),
        farms,
        answered_by: ctx.id(),
    }
}

pub(super) async fn stats(ctx: &AdminContext, node: u64) -> Result<pb::StatsReply, Status> {
    let me = ctx.id();
    let target = if node != 0 {
        node
    } else {
        match vip_owner(ctx, ctx.cluster.leader().unwrap_or(0)) {
            0 => return Err(Status::unavailable("no node owns the VIPs right now")),
            owner => owner,
        }
    };
    if target == me {
        return Ok(local_stats(ctx));
    }
    let remote = async {
        let mut client = remote_client(ctx, target).await?;
        client
            .stats(pb::StatsRequest { node: target })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| Status::new(s.code(), format!("node {target}: {}", s.message())))
    };
    let mut reply = tokio::time::timeout(REMOTE_TIMEOUT, remote)
        .await
        .map_err(|_| Status::unavailable(format!("node {target} did not answer in time")))??;
    reply.answered_by = me;
    Ok(reply)
}

/// A client of node `target`'s admin service, authenticated with this node's admin token.
pub(super) async fn remote_client(
    ctx: &AdminContext,
    target: u64,
) -> Result<
    AdminClient<
        tonic::service::interceptor::InterceptedService<
            tonic::transport::Channel,
            cluster::ClientAuth,
        >,
    >,
    Status,
> {
    let peer = ctx
        .cluster
        .membership()
        .nodes
        .get(&target)
        .cloned()
        .ok_or_else(|| Status::not_found(format!("node {target} is not a member")))?;
    let host: IpAddr = peer
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .map_err(|_| Status::internal(format!("node {target} has peer address {peer:?}")))?;
    let scheme = if ctx.tls.is_some() { "https" } else { "http" };
    let endpoint = format!("{scheme}://{}", SocketAddr::new(host, ctx.admin_port));
    let mut ep = tonic::transport::Endpoint::from_shared(endpoint.clone())
        .map_err(|e| Status::internal(e.to_string()))?;
    if let Some(tls) = &ctx.tls {
        ep = ep
            .tls_config(client_tls(tls, ctx.id())?)
            .map_err(|e| Status::internal(format!("admin TLS client: {e}")))?;
    }
    let channel = ep
        .connect_timeout(REMOTE_TIMEOUT)
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("node {target} at {endpoint}: {e}")))?;
    let auth = cluster::ClientAuth::new(&ctx.token.get())
        .map_err(|_| Status::internal("the admin token is not a valid header value"))?;
    Ok(AdminClient::with_interceptor(channel, auth))
}

/// The leader's last probe of each backend of `farm`, by backend name: from this node's
/// own checker when it leads, else asked of the leader (`local` stops the asking there).
/// Best effort: a leader that cannot be asked leaves the results out, not the listing.
pub(super) async fn last_checks(
    ctx: &AdminContext,
    farm: &str,
    local: bool,
) -> std::collections::HashMap<String, pb::CheckResult> {
    let me = ctx.id();
    let leader = ctx.cluster.leader();
    if leader == Some(me) || local {
        let now = std::time::SystemTime::now();
        return ctx
            .check_log
            .snapshot()
            .into_iter()
            .filter(|((f, _), _)| f == farm)
            .filter_map(|((_, b), c)| {
                let last = c.last?;
                Some((
                    b,
                    pb::CheckResult {
                        result: match last.ok {
                            Some(true) => "up",
                            Some(false) => "down",
                            None => "not run",
                        }
                        .into(),
                        latency_us: u64::try_from(last.latency.as_micros()).unwrap_or(u64::MAX),
                        reason: last.reason,
                        age_ms: now
                            .duration_since(last.at)
                            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                        checked_by: me,
                    },
                ))
            })
            .collect();
    }
    let Some(leader) = leader else {
        return Default::default();
    };
    let ask = async {
        let mut client = remote_client(ctx, leader).await?;
        client
            .list_backends(pb::ListBackendsRequest {
                farm: farm.to_string(),
                local: true,
            })
            .await
            .map(|r| r.into_inner())
    };
    match tokio::time::timeout(REMOTE_TIMEOUT, ask).await {
        Ok(Ok(reply)) => reply
            .backends
            .into_iter()
            .filter_map(|b| Some((b.name, b.last_check?)))
            .collect(),
        Ok(Err(e)) => {
            tracing::debug!(leader, error = %e, "check results of the leader not available");
            Default::default()
        }
        Err(_) => Default::default(),
    }
}

/// How this node dials another node's admin service when admin TLS is on: trusting
/// `[admin] tls_ca`, presenting its own admin certificate (used only if the other node asks
/// for one, i.e. has `tls_client_ca`). The server name is the IP dialled.
fn client_tls(
    tls: &crate::config::AdminTls,
    me: u64,
) -> Result<tonic::transport::ClientTlsConfig, Status> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let ca = tls.ca_pem.as_ref().ok_or_else(|| {
        Status::failed_precondition(format!(
            "node {me} has admin TLS but no admin.tls_ca, so it cannot verify another node's admin certificate; set admin.tls_ca or ask that node directly"
        ))
    })?;
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem)))
}

fn membership_reply(ctx: &AdminContext, view: cluster::MembershipView) -> pb::MembershipReply {
    pb::MembershipReply {
        voters: view.voters.into_iter().collect(),
        learners: view.learners.into_iter().collect(),
        answered_by: ctx.id(),
    }
}

pub(super) async fn add_member(
    ctx: &AdminContext,
    id: u64,
    address: &str,
) -> Result<pb::MembershipReply, Status> {
    ctx.writable()?;
    if id == 0 {
        return Err(Status::invalid_argument("id: must be at least 1"));
    }
    let addr: SocketAddr = address.parse().map_err(|_| {
        Status::invalid_argument(format!(
            "address: {:?} is not host:port",
            crate::config::shown(address)
        ))
    })?;
    let view = ctx.cluster.membership();
    // A learner left behind by an earlier attempt (it did not catch up in time) may be
    // added again; a voter is already what this call would make it.
    if view.voters.contains(&id) {
        return Err(Status::already_exists(format!("node {id} is a voter")));
    }
    if let Some((other, _)) = view
        .nodes
        .iter()
        .find(|(n, a)| a.as_str() == address && **n != id)
    {
        return Err(Status::already_exists(format!(
            "address: {address} is node {other}'s"
        )));
    }
    tracing::info!(id, %addr, "adding a member: learner first");
    ctx.cluster
        .add_learner(id, addr)
        .await
        .map_err(cluster_status)?;
    let view = ctx.cluster.promote(id).await.map_err(cluster_status)?;
    tracing::info!(id, "member caught up and promoted to voter");
    Ok(membership_reply(ctx, view))
}

pub(super) async fn remove_member(
    ctx: &AdminContext,
    id: u64,
) -> Result<pb::MembershipReply, Status> {
    ctx.writable()?;
    let view = ctx.cluster.membership();
    if !view.nodes.contains_key(&id) {
        return Err(Status::not_found(format!("node {id} is not a member")));
    }
    if view.voters.len() == 1 && view.voters.contains(&id) {
        return Err(Status::failed_precondition(format!(
            "node {id} is the last voter; removing it would leave no cluster"
        )));
    }
    tracing::info!(id, "removing a member");
    let view = ctx
        .cluster
        .remove_member(id)
        .await
        .map_err(cluster_status)?;
    Ok(membership_reply(ctx, view))
}

pub(super) async fn transfer_leader(
    ctx: &AdminContext,
    to: u64,
) -> Result<pb::TransferLeaderReply, Status> {
    ctx.writable()?;
    let to = (to != 0).then_some(to);
    if let Some(t) = to {
        let view = ctx.cluster.membership();
        if !view.nodes.contains_key(&t) {
            return Err(Status::failed_precondition(format!(
                "node {t} is not a member"
            )));
        }
        if !view.voters.contains(&t) {
            return Err(Status::failed_precondition(format!(
                "node {t} is a learner; only a voter can lead"
            )));
        }
    }
    let leader = ctx
        .cluster
        .transfer_leadership(to)
        .await
        .map_err(|e| match &e {
            cluster::ClusterError::Transfer { reason, .. } if reason.contains("not a voter") => {
                Status::failed_precondition(e.to_string())
            }
            _ => cluster_status(e),
        })?;
    Ok(pb::TransferLeaderReply {
        leader,
        answered_by: ctx.id(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_stats_over_tls_need_admin_tls_ca() {
        let tls = crate::config::AdminTls {
            cert_pem: b"cert".to_vec(),
            key_pem: b"key".to_vec(),
            ca_pem: None,
            client_ca_pem: None,
        };
        let e = client_tls(&tls, 2).expect_err("no CA to verify another node");
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.message().contains("admin.tls_ca"), "{}", e.message());
        let with_ca = crate::config::AdminTls {
            ca_pem: Some(b"ca".to_vec()),
            ..tls
        };
        assert!(client_tls(&with_ca, 2).is_ok());
    }
}
