//! The `Admin` service: farms, backends, apply and export here; status, stats and membership
//! are handed to `ops`, persistence to `persist`. Every farm change is validated on this node (the config validator
//! for the farm alone, `check` for the farm among the others and the node's network) and
//! then written conditionally (see the module doc of `admin`).

use super::check::{NetFacts, farm_in_context};
use super::diff::diff;
use super::wire::{pb_backend, pb_from_farm, raw_backend_from_pb, raw_from_pb};
use super::{AdminContext, cluster_status, invalid, ops, persist};
use crate::config::{Keys, RawFarm, RawFarms, validate_farm, validate_farms};
use cluster::{ClusterState, Command, Farm};
use proto::admin::v1 as pb;
use proto::admin::v1::admin_server::Admin;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The service; cheap to clone into tonic.
pub struct AdminService {
    pub ctx: Arc<AdminContext>,
}

type Reply<T> = Result<Response<T>, Status>;

impl AdminContext {
    /// The node's network facts plus every member's peer host, as of now.
    pub(super) fn net_now(&self) -> NetFacts {
        let mut net = self.net.clone();
        for addr in self.cluster.membership().nodes.values() {
            if let Ok(sa) = addr.parse::<SocketAddr>()
                && let std::net::IpAddr::V4(ip) = sa.ip()
                && !net.node_addrs.contains(&ip)
            {
                net.node_addrs.push(ip);
            }
        }
        net
    }

    /// `raw` checked alone and against the cluster's other farms: the replicated farm.
    fn validated(&self, keys: Keys, raw: &RawFarm, state: &ClusterState) -> Result<Farm, Status> {
        let farm = validate_farm(keys, raw).map_err(invalid)?;
        let others: Vec<&Farm> = state
            .farms
            .values()
            .filter(|f| f.name != farm.name)
            .collect();
        farm_in_context(keys, &farm, &others, &self.net_now()).map_err(invalid)?;
        Ok(farm)
    }

    fn write_reply(&self, applied: cluster::Applied) -> Response<pb::WriteReply> {
        Response::new(pb::WriteReply {
            applied_index: applied.index,
            answered_by: self.id(),
        })
    }
}

fn not_found(farm: &str) -> Status {
    Status::not_found(format!("farm {farm:?} does not exist"))
}

fn farm_of<'a>(state: &'a ClusterState, name: &str) -> Result<&'a Farm, Status> {
    state.farms.get(name).ok_or_else(|| not_found(name))
}

/// Errors about the backend at `index` of a farm are about the request's `backend`.
fn as_backend_error(status: Status, index: usize) -> Status {
    let prefix = format!("farm.backend[{index}].");
    match status.message().strip_prefix(&prefix) {
        Some(rest) if status.code() == tonic::Code::InvalidArgument => {
            Status::invalid_argument(format!("backend.{rest}"))
        }
        _ => status,
    }
}

/// A conditional put of `farm` over `current` (`None` when there is nothing to change).
fn put_if(current: Option<&Farm>, farm: Farm) -> Option<Command> {
    (current != Some(&farm)).then(|| Command::PutFarmIf {
        expected: current.cloned(),
        farm,
    })
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, _r: Request<pb::StatusRequest>) -> Reply<pb::StatusReply> {
        Ok(Response::new(ops::status(&self.ctx).await))
    }

    async fn list_farms(&self, _r: Request<pb::ListFarmsRequest>) -> Reply<pb::ListFarmsReply> {
        self.ctx.sync().await?;
        let state = self.ctx.state();
        Ok(Response::new(pb::ListFarmsReply {
            answered_by: self.ctx.id(),
            farms: state
                .farms
                .values()
                .map(|f| pb_from_farm(f, &state))
                .collect(),
        }))
    }

    async fn get_farm(&self, r: Request<pb::GetFarmRequest>) -> Reply<pb::FarmReply> {
        self.ctx.sync().await?;
        let state = self.ctx.state();
        let farm = farm_of(&state, &r.get_ref().name)?;
        Ok(Response::new(pb::FarmReply {
            answered_by: self.ctx.id(),
            farm: Some(pb_from_farm(farm, &state)),
        }))
    }

    async fn create_farm(&self, r: Request<pb::CreateFarmRequest>) -> Reply<pb::WriteReply> {
        let Some(farm) = r.into_inner().farm else {
            return Err(Status::invalid_argument("farm: is required"));
        };
        let raw = raw_from_pb(&farm);
        let ctx = &self.ctx;
        let applied = ctx
            .write_checked(|state| {
                if state.farms.contains_key(&raw.name) {
                    return Err(Status::already_exists(format!(
                        "farm {:?} already exists",
                        raw.name
                    )));
                }
                Ok(put_if(None, ctx.validated(Keys::Api, &raw, state)?))
            })
            .await?;
        Ok(ctx.write_reply(applied))
    }

    async fn update_farm(&self, r: Request<pb::UpdateFarmRequest>) -> Reply<pb::WriteReply> {
        let req = r.into_inner();
        let Some(farm) = req.farm else {
            return Err(Status::invalid_argument("farm: is required"));
        };
        let ctx = &self.ctx;
        let applied = ctx
            .write_checked(|state| {
                let current = farm_of(state, &farm.name)?;
                let mut raw = raw_from_pb(&farm);
                if !req.replace_backends {
                    raw.backend = RawFarm::from(current).backend;
                }
                Ok(put_if(
                    Some(current),
                    ctx.validated(Keys::Api, &raw, state)?,
                ))
            })
            .await?;
        Ok(ctx.write_reply(applied))
    }

    async fn delete_farm(&self, r: Request<pb::DeleteFarmRequest>) -> Reply<pb::WriteReply> {
        let name = r.into_inner().name;
        self.ctx.sync().await?;
        farm_of(&self.ctx.state(), &name)?;
        let applied = self
            .ctx
            .cluster
            .write(Command::DeleteFarm { name })
            .await
            .map_err(cluster_status)?;
        self.ctx.caught_up(applied.index).await;
        Ok(self.ctx.write_reply(applied))
    }

    async fn list_backends(
        &self,
        r: Request<pb::ListBackendsRequest>,
    ) -> Reply<pb::ListBackendsReply> {
        self.ctx.sync().await?;
        let state = self.ctx.state();
        let farm = farm_of(&state, &r.get_ref().farm)?;
        Ok(Response::new(pb::ListBackendsReply {
            answered_by: self.ctx.id(),
            backends: farm
                .backends
                .iter()
                .map(|b| pb_backend(farm, b, &state))
                .collect(),
        }))
    }

    async fn add_backend(&self, r: Request<pb::AddBackendRequest>) -> Reply<pb::WriteReply> {
        let req = r.into_inner();
        let Some(backend) = req.backend else {
            return Err(Status::invalid_argument("backend: is required"));
        };
        let ctx = &self.ctx;
        let applied = ctx
            .write_checked(|state| {
                let current = farm_of(state, &req.farm)?;
                if current.backends.iter().any(|b| b.name == backend.name) {
                    return Err(Status::already_exists(format!(
                        "farm {:?} already has a backend {:?}",
                        req.farm, backend.name
                    )));
                }
                let mut raw = RawFarm::from(current);
                raw.backend.push(raw_backend_from_pb(&backend));
                let index = raw.backend.len() - 1;
                let farm = ctx
                    .validated(Keys::Api, &raw, state)
                    .map_err(|s| as_backend_error(s, index))?;
                Ok(put_if(Some(current), farm))
            })
            .await?;
        Ok(ctx.write_reply(applied))
    }

    async fn update_backend(&self, r: Request<pb::UpdateBackendRequest>) -> Reply<pb::WriteReply> {
        let req = r.into_inner();
        let ctx = &self.ctx;
        let applied = ctx
            .write_checked(|state| {
                let current = farm_of(state, &req.farm)?;
                let index = current
                    .backends
                    .iter()
                    .position(|b| b.name == req.name)
                    .ok_or_else(|| {
                        Status::not_found(format!(
                            "farm {:?} has no backend {:?}",
                            req.farm, req.name
                        ))
                    })?;
                let mut raw = RawFarm::from(current);
                let b = &mut raw.backend[index];
                if let Some(ip) = &req.ip {
                    b.ip = ip.clone();
                }
                if let Some(mac) = &req.mac {
                    // An empty MAC unpins it: learned by ARP again.
                    b.mac = (!mac.is_empty()).then(|| mac.clone());
                }
                if let Some(w) = req.weight {
                    b.weight = Some(w);
                }
                if let Some(s) = &req.state {
                    b.state = Some(s.clone());
                }
                if let Some(p) = req.priority {
                    b.priority = Some(p);
                }
                let farm = ctx
                    .validated(Keys::Api, &raw, state)
                    .map_err(|s| as_backend_error(s, index))?;
                Ok(put_if(Some(current), farm))
            })
            .await?;
        Ok(ctx.write_reply(applied))
    }

    async fn delete_backend(&self, r: Request<pb::DeleteBackendRequest>) -> Reply<pb::WriteReply> {
        let req = r.into_inner();
        let ctx = &self.ctx;
        let applied = ctx
            .write_checked(|state| {
                let current = farm_of(state, &req.farm)?;
                if !current.backends.iter().any(|b| b.name == req.name) {
                    return Err(Status::not_found(format!(
                        "farm {:?} has no backend {:?}",
                        req.farm, req.name
                    )));
                }
                let mut farm = current.clone();
                farm.backends.retain(|b| b.name != req.name);
                Ok(put_if(Some(current), farm))
            })
            .await?;
        Ok(ctx.write_reply(applied))
    }

    async fn apply(&self, r: Request<pb::ApplyRequest>) -> Reply<pb::ApplyReply> {
        let req = r.into_inner();
        let ctx = &self.ctx;
        let raw: RawFarms = toml::from_str(&req.config)
            .map_err(|e| Status::invalid_argument(format!("config: {}", e.message().trim())))?;
        let farms = validate_farms(&raw.farm).map_err(invalid)?;
        let desired: BTreeMap<String, Farm> =
            farms.iter().map(|f| (f.name.clone(), f.clone())).collect();
        let net = ctx.net_now();
        for (i, farm) in farms.iter().enumerate() {
            let others: Vec<&Farm> = desired.values().filter(|f| f.name != farm.name).collect();
            farm_in_context(Keys::File { index: i }, farm, &others, &net).map_err(invalid)?;
        }
        let mut changes = Vec::new();
        let mut build = |state: &ClusterState| {
            changes = diff(&state.farms, &desired);
            Ok(
                (!changes.is_empty() && !req.dry_run).then(|| Command::ReplaceFarms {
                    expected: state.farms.values().cloned().collect(),
                    farms: desired.values().cloned().collect(),
                }),
            )
        };
        let applied = if req.dry_run {
            // No write at all: the diff against this replica.
            build(&ctx.state())?;
            None
        } else {
            Some(ctx.write_checked(&mut build).await?)
        };
        let changes = changes
            .into_iter()
            .map(|c| pb::Change {
                action: c.action.into(),
                farm: c.farm,
                details: c.details,
            })
            .collect();
        Ok(Response::new(pb::ApplyReply {
            changes,
            applied: applied.is_some_and(|a| a.changed),
            applied_index: applied.map_or(ctx.applied_index(), |a| a.index),
            answered_by: ctx.id(),
        }))
    }

    async fn export(&self, _r: Request<pb::ExportRequest>) -> Reply<pb::ExportReply> {
        self.ctx.sync().await?;
        let state = self.ctx.state();
        let file = RawFarms {
            farm: state.farms.values().map(RawFarm::from).collect(),
        };
        let body = toml::to_string(&file)
            .map_err(|e| Status::internal(format!("cannot write TOML: {e}")))?;
        Ok(Response::new(pb::ExportReply {
            config: format!(
                "# dsrlb farms, exported from node {} (applied index {})\n{body}",
                self.ctx.id(),
                self.ctx.applied_index()
            ),
            answered_by: self.ctx.id(),
        }))
    }

    async fn list_persistence(
        &self,
        r: Request<pb::ListPersistenceRequest>,
    ) -> Reply<pb::ListPersistenceReply> {
        persist::list(&self.ctx, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn flush_persistence(
        &self,
        r: Request<pb::FlushPersistenceRequest>,
    ) -> Reply<pb::WriteReply> {
        persist::flush(&self.ctx, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn stats(&self, r: Request<pb::StatsRequest>) -> Reply<pb::StatsReply> {
        ops::stats(&self.ctx, r.into_inner().node)
            .await
            .map(Response::new)
    }

    async fn add_member(&self, r: Request<pb::AddMemberRequest>) -> Reply<pb::MembershipReply> {
        let req = r.into_inner();
        ops::add_member(&self.ctx, req.id, &req.address)
            .await
            .map(Response::new)
    }

    async fn remove_member(
        &self,
        r: Request<pb::RemoveMemberRequest>,
    ) -> Reply<pb::MembershipReply> {
        ops::remove_member(&self.ctx, r.into_inner().id)
            .await
            .map(Response::new)
    }

    async fn transfer_leader(
        &self,
        r: Request<pb::TransferLeaderRequest>,
    ) -> Reply<pb::TransferLeaderReply> {
        ops::transfer_leader(&self.ctx, r.into_inner().to)
            .await
            .map(Response::new)
    }
}
