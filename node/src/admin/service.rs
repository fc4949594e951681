//! The `Admin` service: farms, backends, apply and export here; status, stats and membership
//! are handed to `ops`, persistence to `persist`. Every farm change is validated on this node (the config validator
//! for the farm alone, `check` for the farm among the others and the node's network) and
//! then written conditionally (see the module doc of `admin`). A change to part of a farm
//! (its settings, one backend) validates the new part with the config validator's own
//! functions and keeps the replicated rest as it is.

use super::check::{NetFacts, farm_in_context};
use super::diff::diff;
use super::wire::{pb_backend, pb_from_farm, raw_backend_from_pb, raw_from_pb};
use super::{AdminContext, cluster_status, invalid, ops, persist};
use crate::config::{self, Keys, RawFarm, RawFarms, shown, validate_farm, validate_farms};
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
                && let ip = sa.ip()
                && !net.node_addrs.contains(&ip)
            {
                net.node_addrs.push(ip);
            }
        }
        net
    }

    fn write_reply(&self, applied: cluster::Applied) -> Response<pb::WriteReply> {
        Response::new(pb::WriteReply {
            applied_index: applied.index,
            answered_by: self.id(),
        })
    }
}

/// `farm`, valid on its own, checked against the cluster's other farms and the node's
/// network.
fn in_context(
    keys: Keys,
    farm: Farm,
    state: &ClusterState,
    net: &NetFacts,
) -> Result<Farm, Status> {
    // The checks against other farms are about places (a VIP that is another farm's
    // backend, a backend that is another farm's VIP, overlapping ports). A farm that keeps
    // its VIP, protocol and ports and adds no backend address passed them when its place
    // was taken, so an edit such as a backend's state or weight is not compared with every
    // farm.
    let known = state.farms.get(&farm.name).is_some_and(|cur| {
        cur.vip == farm.vip
            && cur.protocol == farm.protocol
            && cur.ports() == farm.ports()
            && farm
                .backends
                .iter()
                .all(|b| cur.backends.iter().any(|c| c.ip == b.ip))
    });
    let others: Vec<&Farm> = if known {
        Vec::new()
    } else {
        state
            .farms
            .values()
            .filter(|f| f.name != farm.name)
            .map(|f| &**f)
            .collect()
    };
    farm_in_context(keys, &farm, &others, net).map_err(invalid)?;
    Ok(farm)
}

fn not_found(farm: &str) -> Status {
    Status::not_found(format!("farm {:?} does not exist", shown(farm)))
}

/// The longest name a farm or backend can have (docs/design.md#farm-schema).
pub(crate) const MAX_NAME: usize = 63;

/// A name no farm or backend can have, refused before any lookup, and without echoing it
/// (a 3 MiB name must not come back as a 3 MiB error header).
pub(crate) fn name_in_bounds(field: &str, name: &str) -> Result<(), Status> {
    if name.len() > MAX_NAME {
        return Err(Status::invalid_argument(format!(
            "{field}: {} bytes, names are at most {MAX_NAME}",
            name.len()
        )));
    }
    Ok(())
}

/// The farm `name` (the request's `field`), or `NOT_FOUND`.
pub(super) fn farm_of<'a>(
    state: &'a ClusterState,
    field: &str,
    name: &str,
) -> Result<&'a Farm, Status> {
    name_in_bounds(field, name)?;
    state
        .farms
        .get(name)
        .map(|f| &**f)
        .ok_or_else(|| not_found(name))
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

/// The farm an `UpdateFarm` request asks for: `farm` as a whole with `replace_backends`,
/// otherwise its settings with the backends `current` has (valid one by one already, so
/// only their fit with the new settings is judged again).
fn farm_update(
    current: &Farm,
    farm: &pb::Farm,
    replace_backends: bool,
) -> Result<Farm, config::ConfigError> {
    let mut raw = raw_from_pb(farm);
    let asked = raw.maglev_table_size;
    if !replace_backends {
        raw.backend.clear();
    }
    let mut farm = validate_farm(Keys::Api, &raw)?;
    if !replace_backends {
        farm.backends = current.backends.clone();
    }
    config::keep_maglev_size(Keys::Api, &mut farm, asked, Some(current))?;
    Ok(farm)
}

/// `current` with `backend` added last: judged alone by the config validator, then for its
/// fit among the others.
fn with_backend(current: &Farm, backend: &pb::Backend) -> Result<Farm, config::ConfigError> {
    let mut farm = current.clone();
    let index = farm.backends.len();
    let b = config::validate_backend(Keys::Api, &farm.name, index, &raw_backend_from_pb(backend))?;
    farm.backends.push(b);
    config::check_backends(Keys::Api, &farm)?;
    Ok(farm)
}

/// `current` with the fields `req` sets on its backend at `index`, each judged by the config
/// validator's check of that field, then the backend's fit among the others.
fn backend_update(
    current: &Farm,
    index: usize,
    req: &pb::UpdateBackendRequest,
) -> Result<Farm, config::ConfigError> {
    let mut farm = current.clone();
    let b = &mut farm.backends[index];
    let k = |field: &str| Keys::Api.backend(&current.name, index, &b.name, field);
    if let Some(ip) = &req.ip {
        b.ip = config::backend_address(&k("ip"), ip)?;
    }
    if let Some(mac) = &req.mac {
        // An empty MAC unpins it: learned by ARP again.
        b.mac = match mac.as_str() {
            "" => None,
            m => Some(config::backend_mac(&k("mac"), m)?),
        };
    }
    if let Some(w) = req.weight {
        b.weight = config::backend_weight(&k("weight"), w)?;
    }
    if let Some(s) = &req.state {
        b.state = config::backend_state(&k("state"), s)?;
    }
    if let Some(p) = req.priority {
        b.priority = config::backend_priority(&k("priority"), p)?;
    }
    config::check_backends(Keys::Api, &farm)?;
    Ok(farm)
}

/// A conditional put of `farm` over `current` (`None` when there is nothing to change).
fn put_if(current: Option<&Farm>, farm: Farm) -> Option<Command> {
    (current != Some(&farm)).then(|| Command::PutFarmIf {
        expected: current.cloned(),
        farm,
    })
}

// The write requests as pure functions of the request, the replica's state and the node's
// network: the command to write (`None`: nothing to change) or why not. The handlers run them
// inside `write_checked`; the admin fuzz target (`admin::fuzzing`) runs them on their own.

/// `CreateFarm`.
pub(super) fn create_change(
    state: &ClusterState,
    net: &NetFacts,
    raw: &RawFarm,
) -> Result<Option<Command>, Status> {
    if state.farms.contains_key(&raw.name) {
        return Err(Status::already_exists(format!(
            "farm {:?} already exists",
            raw.name
        )));
    }
    let farm = validate_farm(Keys::Api, raw).map_err(invalid)?;
    Ok(put_if(None, in_context(Keys::Api, farm, state, net)?))
}

/// `UpdateFarm`.
pub(super) fn update_farm_change(
    state: &ClusterState,
    net: &NetFacts,
    farm: &pb::Farm,
    replace_backends: bool,
) -> Result<Option<Command>, Status> {
    let current = farm_of(state, "farm.name", &farm.name)?;
    let farm = farm_update(current, farm, replace_backends).map_err(invalid)?;
    Ok(put_if(
        Some(current),
        in_context(Keys::Api, farm, state, net)?,
    ))
}

/// `AddBackend` of `backend` to the farm `farm`.
pub(super) fn add_backend_change(
    state: &ClusterState,
    net: &NetFacts,
    farm: &str,
    backend: &pb::Backend,
) -> Result<Option<Command>, Status> {
    let current = farm_of(state, "farm", farm)?;
    if current.backends.iter().any(|b| b.name == backend.name) {
        return Err(Status::already_exists(format!(
            "farm {:?} already has a backend {:?}",
            farm, backend.name
        )));
    }
    let index = current.backends.len();
    let new = with_backend(current, backend)
        .map_err(invalid)
        .and_then(|f| in_context(Keys::Api, f, state, net))
        .map_err(|s| as_backend_error(s, index))?;
    Ok(put_if(Some(current), new))
}

/// `UpdateBackend`.
pub(super) fn update_backend_change(
    state: &ClusterState,
    net: &NetFacts,
    req: &pb::UpdateBackendRequest,
) -> Result<Option<Command>, Status> {
    let current = farm_of(state, "farm", &req.farm)?;
    let index = current
        .backends
        .iter()
        .position(|b| b.name == req.name)
        .ok_or_else(|| {
            Status::not_found(format!(
                "farm {:?} has no backend {:?}",
                req.farm,
                shown(&req.name)
            ))
        })?;
    let farm = backend_update(current, index, req)
        .map_err(invalid)
        .and_then(|f| in_context(Keys::Api, f, state, net))
        .map_err(|s| as_backend_error(s, index))?;
    Ok(put_if(Some(current), farm))
}

/// `DeleteBackend`.
pub(super) fn delete_backend_change(
    state: &ClusterState,
    req: &pb::DeleteBackendRequest,
) -> Result<Option<Command>, Status> {
    let current = farm_of(state, "farm", &req.farm)?;
    if !current.backends.iter().any(|b| b.name == req.name) {
        return Err(Status::not_found(format!(
            "farm {:?} has no backend {:?}",
            req.farm,
            shown(&req.name)
        )));
    }
    let mut farm = current.clone();
    farm.backends.retain(|b| b.name != req.name);
    Ok(put_if(Some(current), farm))
}

/// The farms of an `Apply` request's file, each valid and fitting beside the others and the
/// node's network, by name.
/// The farms of an `Apply` file, each with the Maglev size the file names (`None`: the
/// farm keeps the one it has, [`apply_plan`]), and by name.
pub(super) type ApplyFarms = (Vec<(Farm, Option<u32>)>, BTreeMap<String, Farm>);

pub(super) fn apply_farms(config: &str, net: &NetFacts) -> Result<ApplyFarms, Status> {
    let raw: RawFarms = toml::from_str(config)
        .map_err(|e| Status::invalid_argument(format!("config: {}", e.message().trim())))?;
    let farms = validate_farms(&raw.farm).map_err(invalid)?;
    let desired: BTreeMap<String, Farm> =
        farms.iter().map(|f| (f.name.clone(), f.clone())).collect();
    for (i, farm) in farms.iter().enumerate() {
        let others: Vec<&Farm> = desired.values().filter(|f| f.name != farm.name).collect();
        farm_in_context(Keys::File { index: i }, farm, &others, net).map_err(invalid)?;
    }
    let farms = farms
        .into_iter()
        .zip(raw.farm.iter().map(|r| r.maglev_table_size))
        .collect();
    Ok((farms, desired))
}

/// What an `Apply` of `farms` (by name in `desired`) does to `state`: the changes, the
/// farms kept because the file lacks them (unless `prune`), and the command (`None`: no
/// change, or a dry run).
pub(super) struct ApplyPlan {
    pub changes: Vec<super::diff::FarmChange>,
    pub kept: Vec<String>,
    pub command: Option<Command>,
}

/// Plans an `Apply` (see [`ApplyPlan`]).
pub(super) fn apply_plan(
    state: &ClusterState,
    net: &NetFacts,
    farms: &[(Farm, Option<u32>)],
    desired: &BTreeMap<String, Farm>,
    prune: bool,
    dry_run: bool,
) -> Result<ApplyPlan, Status> {
    let mut target = desired.clone();
    // A farm the file leaves without a Maglev size keeps the one it has on this state
    // (docs/design.md#scale).
    for (i, (farm, asked)) in farms.iter().enumerate() {
        if let Some(t) = target.get_mut(&farm.name) {
            config::keep_maglev_size(
                Keys::File { index: i },
                t,
                *asked,
                state.farms.get(&farm.name).map(|f| &**f),
            )
            .map_err(invalid)?;
        }
    }
    // Without `prune`, the cluster's farms missing from the file stay: the file's farms must
    // then fit beside them too (a VIP and port a kept farm serves).
    let mut kept = Vec::new();
    if !prune {
        for (name, f) in &state.farms {
            if !target.contains_key(name) {
                target.insert(name.clone(), Farm::clone(f));
                kept.push(name.clone());
            }
        }
        if !kept.is_empty() {
            for (i, (farm, _)) in farms.iter().enumerate() {
                let others: Vec<&Farm> = target.values().filter(|f| f.name != farm.name).collect();
                farm_in_context(Keys::File { index: i }, farm, &others, net).map_err(invalid)?;
            }
        }
    }
    let changes = diff(&state.farms, &target);
    let command = (!changes.is_empty() && !dry_run).then(|| Command::ReplaceFarms {
        expected: state.farms.values().map(|f| Farm::clone(f)).collect(),
        farms: target.values().cloned().collect(),
    });
    Ok(ApplyPlan {
        changes,
        kept,
        command,
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
        let farm = farm_of(&state, "name", &r.get_ref().name)?;
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
            .write_checked(|state| create_change(state, &ctx.net_now(), &raw))
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
                update_farm_change(state, &ctx.net_now(), &farm, req.replace_backends)
            })
            .await?;
        Ok(ctx.write_reply(applied))
    }

    async fn delete_farm(&self, r: Request<pb::DeleteFarmRequest>) -> Reply<pb::WriteReply> {
        let name = r.into_inner().name;
        self.ctx.writable()?;
        self.ctx.sync().await?;
        farm_of(&self.ctx.state(), "name", &name)?;
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
        let req = r.get_ref();
        let farm = farm_of(&state, "farm", &req.farm)?;
        let mut checks = if farm.check.is_some() {
            super::ops::last_checks(&self.ctx, &farm.name, req.local).await
        } else {
            Default::default()
        };
        Ok(Response::new(pb::ListBackendsReply {
            answered_by: self.ctx.id(),
            backends: farm
                .backends
                .iter()
                .map(|b| pb::Backend {
                    last_check: checks.remove(&b.name),
                    ..pb_backend(farm, b, &state)
                })
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
            .write_checked(|state| add_backend_change(state, &ctx.net_now(), &req.farm, &backend))
            .await?;
        Ok(ctx.write_reply(applied))
    }

    async fn update_backend(&self, r: Request<pb::UpdateBackendRequest>) -> Reply<pb::WriteReply> {
        let req = r.into_inner();
        let ctx = &self.ctx;
        let applied = ctx
            .write_checked(|state| update_backend_change(state, &ctx.net_now(), &req))
            .await?;
        Ok(ctx.write_reply(applied))
    }

    async fn delete_backend(&self, r: Request<pb::DeleteBackendRequest>) -> Reply<pb::WriteReply> {
        let req = r.into_inner();
        let ctx = &self.ctx;
        let applied = ctx
            .write_checked(|state| delete_backend_change(state, &req))
            .await?;
        Ok(ctx.write_reply(applied))
    }

    async fn apply(&self, r: Request<pb::ApplyRequest>) -> Reply<pb::ApplyReply> {
        let req = r.into_inner();
        let ctx = &self.ctx;
        let net = ctx.net_now();
        let (farms, desired) = apply_farms(&req.config, &net)?;
        let mut changes = Vec::new();
        let mut kept: Vec<String> = Vec::new();
        let mut build = |state: &ClusterState| {
            let plan = apply_plan(state, &net, &farms, &desired, req.prune, req.dry_run)?;
            changes = plan.changes;
            kept = plan.kept;
            Ok(plan.command)
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
            .chain(kept.into_iter().map(|farm| pb::Change {
                action: "keep".into(),
                farm,
                details: vec!["not in the file: kept (`--prune` would delete it)".into()],
            }))
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
            farm: state.farms.values().map(|f| RawFarm::from(&**f)).collect(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;

    fn web() -> Farm {
        let raw: RawFarms = toml::from_str(
            r#"
            [[farm]]
            name = "web"
            vip = "198.18.0.100"
            port = 80
            protocol = "tcp"
            [[farm.backend]]
            name = "b1"
            ip = "198.18.0.21"
            mac = "02:00:00:00:00:21"
            [[farm.backend]]
            name = "b2"
            ip = "198.18.0.22"
            "#,
        )
        .unwrap();
        validate_farm(Keys::Api, &raw.farm[0]).unwrap()
    }

    /// docs/design.md#scale: the Maglev size is chosen once, from the backends, when the farm
    /// is created; later writes keep it unless they name one; it must hold the backends.
    #[test]
    fn the_maglev_size_is_chosen_at_creation_and_kept_after() {
        let current = web();
        assert_eq!(current.maglev_table_size, 251, "2 backends: the floor");
        let mut bigger = pb_from_farm(&current, &ClusterState::default());
        bigger.backends = (0..5)
            .map(|i| pb::Backend {
                name: format!("n{i}"),
                ip: format!("198.18.0.{}", 40 + i),
                weight: 1,
                ..Default::default()
            })
            .collect();
        // A new farm with 5 backends would get 503; replacing the backends keeps 251.
        bigger.maglev_table_size = 0;
        assert_eq!(
            validate_farm(Keys::Api, &raw_from_pb(&bigger))
                .unwrap()
                .maglev_table_size,
            503
        );
        let f = farm_update(&current, &bigger, true).unwrap();
        assert_eq!(f.maglev_table_size, 251);
        let f = farm_update(&current, &bigger, false).unwrap();
        assert_eq!(f.maglev_table_size, 251);
        // Named, it changes (an explicit edit), if it is a prime in range.
        bigger.maglev_table_size = 1021;
        assert_eq!(
            farm_update(&current, &bigger, true)
                .unwrap()
                .maglev_table_size,
            1021
        );
        bigger.maglev_table_size = 1024;
        assert_eq!(
            key(farm_update(&current, &bigger, true)),
            "farm.maglev_table_size"
        );
        // Adding a backend keeps the size; one more than the slots is refused.
        let added = pb::Backend {
            name: "b3".into(),
            ip: "198.18.0.23".into(),
            weight: 1,
            ..Default::default()
        };
        assert_eq!(
            with_backend(&current, &added).unwrap().maglev_table_size,
            251
        );
        let mut full = current.clone();
        full.backends = (0..251)
            .map(|i| cluster::Backend {
                name: format!("f{i}"),
                ip: std::net::Ipv4Addr::from_bits(0xc613_0000 + i).into(),
                ..current.backends[0].clone()
            })
            .collect();
        assert_eq!(key(with_backend(&full, &added)), "farm.maglev_table_size");
    }

    fn key(r: Result<Farm, ConfigError>) -> String {
        match r {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_partial_update_judges_the_new_part_and_its_fit() {
        let current = web();
        let update = |edit: &dyn Fn(&mut pb::UpdateBackendRequest)| {
            let mut r = pb::UpdateBackendRequest::default();
            edit(&mut r);
            backend_update(&current, 0, &r)
        };
        let f = update(&|r| {
            r.mac = Some(String::new());
            r.state = Some("drain".into());
        })
        .unwrap();
        assert_eq!(f.backends[0].mac, None, "an empty MAC unpins");
        assert_eq!(f.backends[0].state, cluster::BackendState::Drain);
        assert_eq!(f.backends[1], current.backends[1]);
        assert_eq!(
            key(update(&|r| r.state = Some(String::new()))),
            "farm.backend[0].state"
        );
        assert_eq!(
            key(update(&|r| r.priority = Some(0))),
            "farm.backend[0].priority"
        );
        // The later backend is the one that repeats an address, as in a file.
        assert_eq!(
            key(update(&|r| r.ip = Some("198.18.0.22".into()))),
            "farm.backend[1].ip"
        );

        let mut added = pb::Backend {
            name: "b3".into(),
            ip: "198.18.0.21".into(),
            weight: 1,
            ..Default::default()
        };
        assert_eq!(key(with_backend(&current, &added)), "farm.backend[2].ip");
        added.ip = "198.18.0.23".into();
        let f = with_backend(&current, &added).unwrap();
        assert_eq!(f.backends[2].priority, 1, "priority 0 is the default tier");

        let mut settings = pb_from_farm(&current, &ClusterState::default());
        settings.backends.clear();
        settings.vip = "198.18.0.22".into();
        assert_eq!(
            key(farm_update(&current, &settings, false)),
            "farm.backend[1].ip"
        );
        settings.vip = "198.18.0.101".into();
        let f = farm_update(&current, &settings, false).unwrap();
        assert_eq!(f.backends, current.backends);
        assert!(
            farm_update(&current, &settings, true)
                .unwrap()
                .backends
                .is_empty()
        );
    }
}
